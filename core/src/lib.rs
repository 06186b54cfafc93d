//! The pagoPA domain as pure rules: identifiers that validate on construction, money in integer
//! cents, debt positions (dovuti) and the checks MyPay applies to them.
//!
//! Nothing here does I/O or async work, so every rule can be tested with plain values. Callers
//! (adapters, store, pipelines) hand in what the rules need, such as "today" and the entity's
//! debt types.

pub mod amount;
pub mod dovuto;
pub mod ids;
pub mod payment;
pub mod qr;
pub mod reconcile;
pub mod settlement;
pub mod spontaneous;
pub mod taxonomy;
pub mod time;
pub mod treasury;

pub use amount::Amount;
pub use ids::{
    EntityFiscalCode, Iban, IdError, Iuv, NoticeNumber, PartitaIva, PersonalFiscalCode,
    RfReference, SegregationCode,
};
pub use taxonomy::{TaxonomyCode, TaxonomyTable};
