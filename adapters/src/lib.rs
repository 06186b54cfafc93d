//! Format codecs: the bytes of MyPay flows and outcome files, to and from domain records.
//!
//! Adapters do no I/O of their own: callers hand in readers and writers, so the codecs can be
//! tested on in-memory bytes and reused by every pipeline. They are built to stream large
//! flows (millions of rows) without per-field allocation.

pub mod car_tax;
pub mod csv;
pub mod fdr;
pub mod flow_format;
#[doc(hidden)]
pub mod fuzzing;
pub mod mypay_esterni;
pub mod mypay_expired;
pub mod mypay_export;
pub mod mypay_import;
pub mod mypay_push;
pub mod mypay_ws;
pub mod mypivot;
pub mod notice;
pub mod pagopa;
pub mod position_json;
pub mod receipt_json;
pub mod taxonomy;
pub mod text_encoding;
pub mod treasury;
mod xml_text;

#[cfg(test)]
pub(crate) mod test_fixtures;
