//! `mypay-push`: the body MyPay POSTs to an entity's system for each paid position (encode only).
//!
//! Entity systems built for MyPay receive `{"rt":"<base64>","esito":"<base64>"}`: `rt` is the
//! receipt exactly as the node sent it, `esito` a `Pagati` document of MyPay's
//! `PagInf_Dovuti_Pagati_6_2_0.xsd`. Such a system can switch to the hub without a change, so
//! this encoder fills `Pagati` the way MyPay fills it from a pagoPA receipt
//! (`SendRtOutcomeService` and `PagamentiTelematiciDovutiPagatiHelper` in MyPay4).
//!
//! The inputs are those of [`crate::receipt_json`]: the raw `paSendRT` / `paSendRTV2` request and
//! a [`ReceiptContext`]. Every text is escaped and cut to the XSD's length (counted in UTF-16
//! units, as MyPay's Java counts) on a character boundary, so the document always validates;
//! amounts go through integer cents.

pub(crate) mod pagati;

use base64::Engine as _;
use serde::Serialize;
use snodo_core::amount::AmountError;

use crate::pagopa::{self, SoapError};
use crate::receipt_json::ReceiptContext;

/// Name of this format in sink configuration.
pub const MYPAY_PUSH: &str = "mypay-push";
/// Namespace of the `Pagati` document (`targetNamespace` of the XSD).
pub const PAGATI_NS: &str = "http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/";
/// `versioneOggetto` of every document: the XSD's version, as MyPay writes it.
pub const VERSIONE_OGGETTO: &str = "6.2.0";

/// Why a receipt could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MypayPushError {
    /// The stored request is not a schema-valid paForNode request.
    #[error("the stored request cannot be read: {0}")]
    Soap(#[from] SoapError),
    /// The stored request is a paForNode request, but not a receipt.
    #[error("the stored request is {0}, not paSendRT or paSendRTV2")]
    NotAReceipt(&'static str),
    /// An amount is not an exact decimal, or exceeds MyPay's 999999999.99.
    #[error("{field}: {source}")]
    Amount {
        /// Like `transfers[2].amount`.
        field: String,
        source: AmountError,
    },
    /// A transfer category that MyPay's `datiSpecificiRiscossione` pattern refuses, as it is
    /// and as `9/<category>/`.
    #[error(
        "transfers[{index}].category {value:?} cannot be written as MyPay's \
         datiSpecificiRiscossione (0, 1, 2 or 9, then '/', then 3 to 138 non-blank characters)"
    )]
    Category {
        /// Position in the transfer list, from 0 like the `json` format's `transfers[0]`.
        index: usize,
        value: String,
    },
    /// A [`ReceiptContext`] value breaks its contract.
    #[error("receipt context: {0}")]
    Context(String),
    /// Serialisation failed (cannot happen: both values are strings).
    #[error("cannot serialise the push body: {0}")]
    Serialize(String),
}

/// The push body, keys in MyPay's order.
#[derive(Serialize)]
struct Body {
    rt: String,
    esito: String,
}

/// Encodes the receipt carried by `raw_request` (the whole `paSendRTReq` or `paSendRTV2Request`
/// SOAP message as received) as MyPay's push body.
pub fn encode(ctx: &ReceiptContext<'_>, raw_request: &str) -> Result<Vec<u8>, MypayPushError> {
    let request = pagopa::parse_request(raw_request.as_bytes())?;
    encode_parsed(ctx, raw_request, &request)
}

/// [`encode`] of a receipt already parsed: `request` is `raw_request` as the hub decoded it.
pub fn encode_parsed(
    ctx: &ReceiptContext<'_>,
    raw_request: &str,
    request: &pagopa::Request,
) -> Result<Vec<u8>, MypayPushError> {
    let received_at = chrono::DateTime::parse_from_rfc3339(ctx.received_at)
        .map_err(|_| {
            MypayPushError::Context(format!(
                "received_at must be an RFC 3339 timestamp like 2026-11-26T10:00:01.123Z, got {:?}",
                ctx.received_at
            ))
        })?
        .with_timezone(&chrono::Utc);
    let pagati = pagati::render(ctx, request, received_at)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = Body {
        rt: b64.encode(raw_request.as_bytes()),
        esito: b64.encode(pagati.as_bytes()),
    };
    serde_json::to_vec(&body).map_err(|e| MypayPushError::Serialize(e.to_string()))
}

/// The `Pagati` (or `PagatiConRicevuta`) XML of a receipt already parsed, for MyPay's SOAP
/// answers (`paaSILChiediPagati…`); `received_at` is RFC 3339.
pub fn pagati_document(
    ctx: &ReceiptContext<'_>,
    request: &pagopa::Request,
    with_receipt: bool,
) -> Result<String, MypayPushError> {
    let received_at = chrono::DateTime::parse_from_rfc3339(ctx.received_at)
        .map_err(|_| MypayPushError::Context(format!("received_at {:?}", ctx.received_at)))?
        .with_timezone(&chrono::Utc);
    let root = if with_receipt {
        pagati::Root::PagatiConRicevuta
    } else {
        pagati::Root::Pagati
    };
    pagati::render_as(ctx, request, received_at, root)
}

#[cfg(test)]
pub(crate) mod tests;
