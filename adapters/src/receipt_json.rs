//! `json`: the canonical receipt an entity's systems get back for every payment (encode only).
//!
//! The input is the raw `paSendRT` / `paSendRTV2` SOAP request exactly as the node sent it and
//! the registry stored it, plus what the registry knows beyond the XML ([`ReceiptContext`]). The
//! output is one compact UTF-8 JSON object with stable snake_case keys, documented in
//! `docs/FORMATS.md` and described by `docs/receipt.schema.json` (JSON Schema draft 2020-12).
//!
//! Amounts are integer cents (parsed exactly from the wire decimals, never through floats) next
//! to their two-decimal string. Every key is always present: what the receipt lacks is `null`.
//! The whole request travels along as `xml_base64`, so nothing the node sent is lost.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Serialize;
use snodo_core::amount::AmountError;

use crate::pagopa::{self, MapEntry, Operation, ReceiptDestination, Request, SoapError, Subject};

/// Name of this format in sink configuration.
pub const JSON: &str = "json";
/// Value of the document's `format` key; a new version gets a new value.
pub const FORMAT_ID: &str = "snodo.receipt.v1";

/// What the registry knows about the receipt beyond the XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptContext<'a> {
    /// The entity's IPA code (`codIPA`, e.g. `c_g224`); must not be empty.
    pub entity_ipa: &'a str,
    /// The entity's name as configured in the hub.
    pub entity_name: &'a str,
    /// The entity's own id of the paid debt position (MyPay `IUD`), when the position is known.
    pub iud: Option<&'a str>,
    /// The debt type (`tipo dovuto`) of the paid position, when known.
    pub debt_type: Option<&'a str>,
    /// When the hub stored the receipt: RFC 3339 in UTC, `2026-11-26T10:00:01.123Z`.
    pub received_at: &'a str,
    /// Why operators flagged the receipt, if they did.
    pub issue: Option<&'a str>,
    /// The entity receives the receipt as a secondary beneficiary of another entity's notice
    /// (the receipt's `fiscalCode` is the issuer's): the entity's own fiscal code.
    pub secondary: Option<&'a str>,
}

/// Why a receipt could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptJsonError {
    /// The stored request is not a schema-valid paForNode request.
    #[error("the stored request cannot be read: {0}")]
    Soap(#[from] SoapError),
    /// The stored request is a paForNode request, but not a receipt.
    #[error("the stored request is {0}, not paSendRT or paSendRTV2")]
    NotAReceipt(&'static str),
    /// An amount of the receipt is not an exact decimal (cannot happen on a schema-valid receipt).
    #[error("{field}: {source}")]
    Amount {
        /// Like `transfers[2].amount`.
        field: String,
        source: AmountError,
    },
    /// A [`ReceiptContext`] value breaks its contract.
    #[error("receipt context: {0}")]
    Context(String),
    /// Serialisation failed (cannot happen: every value is a string, an integer or null).
    #[error("cannot serialise the receipt: {0}")]
    Serialize(String),
}

/// The fields `ctReceipt` and `ctReceiptV2` share, which are different types with like names.
macro_rules! document {
    ($ctx:expr, $rc:expr, $op:expr, $transfers:expr, $payment_note:expr, $primary_fee:expr, $xml:expr) => {{
        let ctx = $ctx;
        let rc = $rc;
        Document {
            format: FORMAT_ID,
            idempotency_key: &rc.receipt_id,
            entity: EntityDoc {
                ipa_code: ctx.entity_ipa,
                fiscal_code: ctx.secondary.unwrap_or(&rc.fiscal_code),
                name: ctx.entity_name,
                role: if ctx.secondary.is_some() {
                    "secondary"
                } else {
                    "issuer"
                },
                issuer_fiscal_code: &rc.fiscal_code,
            },
            notice_number: &rc.notice_number,
            iuv: &rc.creditor_reference_id,
            iud: ctx.iud,
            debt_type: ctx.debt_type,
            receipt_id: &rc.receipt_id,
            outcome: rc.outcome.as_str(),
            amount: money(&rc.payment_amount, || "amount".into())?,
            fee: rc
                .fee
                .as_deref()
                .map(|f| money(f, || "fee".into()))
                .transpose()?,
            primary_ci_incurred_fee: $primary_fee,
            description: &rc.description,
            payment_note: $payment_note,
            payment_date_time: rc.payment_date_time.as_deref(),
            application_date: rc.application_date.as_deref(),
            transfer_date: rc.transfer_date.as_deref(),
            psp: PspDoc {
                id: &rc.id_psp,
                name: &rc.psp_company_name,
                fiscal_code: rc.psp_fiscal_code.as_deref(),
                partita_iva: rc.psp_partita_iva.as_deref(),
                channel_id: &rc.id_channel,
                channel_description: &rc.channel_description,
                payment_method: rc.payment_method.as_deref(),
            },
            debtor: party(&rc.debtor),
            payer: rc.payer.as_ref().map(party),
            transfers: $transfers,
            metadata: entries(&rc.metadata),
            received_at: ctx.received_at,
            issue: ctx.issue,
            operation: $op.soap_action(),
            xml_base64: $xml,
        }
    }};
}

/// Encodes the receipt carried by `raw_request` (the whole `paSendRTReq` or `paSendRTV2Request`
/// SOAP message as received) as one canonical JSON document.
pub fn encode(ctx: &ReceiptContext<'_>, raw_request: &str) -> Result<Vec<u8>, ReceiptJsonError> {
    let request = pagopa::parse_request(raw_request.as_bytes())?;
    encode_parsed(ctx, raw_request, &request)
}

/// [`encode`] of a receipt already parsed: `request` is `raw_request` as the hub decoded it.
pub fn encode_parsed(
    ctx: &ReceiptContext<'_>,
    raw_request: &str,
    request: &Request,
) -> Result<Vec<u8>, ReceiptJsonError> {
    if ctx.entity_ipa.is_empty() {
        return Err(ReceiptJsonError::Context("entity_ipa is empty".into()));
    }
    if !is_utc_timestamp(ctx.received_at) {
        return Err(ReceiptJsonError::Context(format!(
            "received_at must be an RFC 3339 UTC timestamp like 2026-11-26T10:00:01.123Z, got {:?}",
            ctx.received_at
        )));
    }
    let xml_base64 = base64::engine::general_purpose::STANDARD.encode(raw_request.as_bytes());
    let doc = match request {
        Request::SendRt(r) => {
            let rc = &r.receipt;
            let transfers = rc
                .transfer_list
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok(TransferDoc {
                        id: t.id_transfer,
                        fiscal_code_pa: &t.fiscal_code_pa,
                        company_name: None,
                        iban: Some(t.iban.as_str()),
                        mbd_attachment: None,
                        amount: money(&t.transfer_amount, || format!("transfers[{i}].amount"))?,
                        remittance_information: &t.remittance_information,
                        category: &t.transfer_category,
                        metadata: entries(&t.metadata),
                    })
                })
                .collect::<Result<Vec<_>, ReceiptJsonError>>()?;
            document!(
                ctx,
                rc,
                Operation::SendRt,
                transfers,
                None,
                None,
                xml_base64
            )
        }
        Request::SendRtV2(r) => {
            let rc = &r.receipt;
            let transfers = rc
                .transfer_list
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let (iban, mbd_attachment) = match &t.destination {
                        ReceiptDestination::Iban(v) => (Some(v.as_str()), None),
                        ReceiptDestination::MbdAttachment(v) => (None, Some(compact_base64(v))),
                    };
                    Ok(TransferDoc {
                        id: t.id_transfer,
                        fiscal_code_pa: &t.fiscal_code_pa,
                        company_name: t.company_name.as_deref(),
                        iban,
                        mbd_attachment,
                        amount: money(&t.transfer_amount, || format!("transfers[{i}].amount"))?,
                        remittance_information: &t.remittance_information,
                        category: &t.transfer_category,
                        metadata: entries(&t.metadata),
                    })
                })
                .collect::<Result<Vec<_>, ReceiptJsonError>>()?;
            let primary_fee = rc
                .primary_ci_incurred_fee
                .as_deref()
                .map(|f| money(f, || "primary_ci_incurred_fee".into()))
                .transpose()?;
            document!(
                ctx,
                rc,
                Operation::SendRtV2,
                transfers,
                rc.payment_note.as_deref(),
                primary_fee,
                xml_base64
            )
        }
        other => return Err(ReceiptJsonError::NotAReceipt(other.soap_action())),
    };
    serde_json::to_vec(&doc).map_err(|e| ReceiptJsonError::Serialize(e.to_string()))
}

/// The document, keys in output order.
#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    idempotency_key: &'a str,
    entity: EntityDoc<'a>,
    notice_number: &'a str,
    iuv: &'a str,
    iud: Option<&'a str>,
    debt_type: Option<&'a str>,
    receipt_id: &'a str,
    outcome: &'static str,
    amount: Money,
    fee: Option<Money>,
    primary_ci_incurred_fee: Option<Money>,
    description: &'a str,
    payment_note: Option<&'a str>,
    payment_date_time: Option<&'a str>,
    application_date: Option<&'a str>,
    transfer_date: Option<&'a str>,
    psp: PspDoc<'a>,
    debtor: PartyDoc<'a>,
    payer: Option<PartyDoc<'a>>,
    transfers: Vec<TransferDoc<'a>>,
    metadata: Vec<EntryDoc<'a>>,
    received_at: &'a str,
    issue: Option<&'a str>,
    operation: &'static str,
    xml_base64: String,
}

#[derive(Serialize)]
struct EntityDoc<'a> {
    ipa_code: &'a str,
    fiscal_code: &'a str,
    name: &'a str,
    /// `issuer` (the notice is the entity's) or `secondary` (a transfer of another entity's).
    role: &'static str,
    issuer_fiscal_code: &'a str,
}

#[derive(Serialize)]
struct Money {
    cents: i64,
    decimal: String,
}

#[derive(Serialize)]
struct PspDoc<'a> {
    id: &'a str,
    name: &'a str,
    fiscal_code: Option<&'a str>,
    partita_iva: Option<&'a str>,
    channel_id: &'a str,
    channel_description: &'a str,
    payment_method: Option<&'a str>,
}

#[derive(Serialize)]
struct PartyDoc<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    street: Option<&'a str>,
    civic: Option<&'a str>,
    postal_code: Option<&'a str>,
    city: Option<&'a str>,
    province: Option<&'a str>,
    country: Option<&'a str>,
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct TransferDoc<'a> {
    id: u8,
    fiscal_code_pa: &'a str,
    company_name: Option<&'a str>,
    iban: Option<&'a str>,
    /// Base64 without the line breaks XML allows inside it.
    mbd_attachment: Option<Cow<'a, str>>,
    amount: Money,
    remittance_information: &'a str,
    category: &'a str,
    metadata: Vec<EntryDoc<'a>>,
}

#[derive(Serialize)]
struct EntryDoc<'a> {
    key: &'a str,
    value: &'a str,
}

/// Cents and two-decimal string of a wire amount; `field` names it in the error.
fn money(wire: &str, field: impl FnOnce() -> String) -> Result<Money, ReceiptJsonError> {
    let amount = pagopa::to_cents(wire).map_err(|source| ReceiptJsonError::Amount {
        field: field(),
        source,
    })?;
    Ok(Money {
        cents: amount.cents(),
        decimal: pagopa::from_cents(amount),
    })
}

fn party(s: &Subject) -> PartyDoc<'_> {
    PartyDoc {
        kind: s.unique_identifier.kind.as_str(),
        id: &s.unique_identifier.value,
        name: &s.full_name,
        street: s.street_name.as_deref(),
        civic: s.civic_number.as_deref(),
        postal_code: s.postal_code.as_deref(),
        city: s.city.as_deref(),
        province: s.state_province_region.as_deref(),
        country: s.country.as_deref(),
        email: s.email.as_deref(),
    }
}

fn entries(list: &[MapEntry]) -> Vec<EntryDoc<'_>> {
    list.iter()
        .map(|e| EntryDoc {
            key: &e.key,
            value: &e.value,
        })
        .collect()
}

/// `xsd:base64Binary` text without its whitespace (which XML allows, and base64 decoders
/// often do not); borrowed when there is none.
fn compact_base64(s: &str) -> Cow<'_, str> {
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    if s.contains(ws) {
        Cow::Owned(s.chars().filter(|&c| !ws(c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// `YYYY-MM-DDThh:mm:ss[.fraction]Z`, a real instant: the schema's `received_at` pattern.
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|d| d.iter().all(|c| c.is_ascii_digit()))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let head = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    let tail = match b.get(19..) {
        Some([b'Z']) => true,
        Some([b'.', rest @ .., b'Z']) => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    head && tail && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{json, Value};

    use super::*;
    use crate::pagopa::{GetPaymentRequest, Receipt};
    use crate::test_fixtures::{
        self, ctx, ctx_at, debtor, qr_code, receipt_v1, receipt_v2, send_rt, BROKER, FELTRE,
        PADOVA, STATION,
    };

    const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/receipt.schema.json");

    /// The shared paSendRT with a bare debtor, a causale to escape, the PSP's VAT number and
    /// metadata.
    fn send_rt_v1() -> String {
        send_rt(Receipt {
            description: "TARI 2026 <rata 1>".into(),
            debtor: debtor(),
            psp_partita_iva: Some("10810700152".into()),
            application_date: Some("2026-11-26".into()),
            metadata: vec![MapEntry {
                key: "canale".into(),
                value: "web".into(),
            }],
            ..receipt_v1()
        })
    }

    /// The shared paSendRTV2, its revenue stamp's category in the `9/…/` form and the payment
    /// time with an offset.
    fn send_rt_v2() -> String {
        let mut receipt = receipt_v2();
        receipt.transfer_list[1].transfer_category = "9/0301109AP/".into();
        receipt.payment_date_time = Some("2026-11-26T10:00:00.250+01:00".into());
        test_fixtures::send_rt_v2(receipt)
    }

    fn encode_to_value(ctx: &ReceiptContext<'_>, raw: &str) -> Value {
        let bytes = encode(ctx, raw).expect("encode");
        assert!(!bytes.contains(&b'\n'), "compact output");
        serde_json::from_slice(&bytes).expect("output is JSON")
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("valid base64")
    }

    #[test]
    fn v1_receipt() {
        let raw = send_rt_v1();
        let v = encode_to_value(&ctx(), &raw);
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 26);
        assert_eq!(v["format"], "snodo.receipt.v1");
        assert_eq!(v["idempotency_key"], "c3a7e1f0b2d94a7f8e1c");
        assert_eq!(v["receipt_id"], "c3a7e1f0b2d94a7f8e1c");
        assert_eq!(
            v["entity"],
            json!({"ipa_code": "c_g224", "fiscal_code": PADOVA, "name": "Comune di Padova",
                   "role": "issuer", "issuer_fiscal_code": PADOVA})
        );
        // A secondary beneficiary's copy names the receiving entity and the issuer apart.
        let feltre = encode_to_value(
            &ReceiptContext {
                entity_ipa: "c_d530",
                entity_name: "Comune di Feltre",
                iud: None,
                debt_type: None,
                secondary: Some("00133880252"),
                ..ctx()
            },
            &send_rt_v1(),
        );
        assert_eq!(
            feltre["entity"],
            json!({"ipa_code": "c_d530", "fiscal_code": "00133880252", "name": "Comune di Feltre",
                   "role": "secondary", "issuer_fiscal_code": PADOVA})
        );
        assert_eq!(v["notice_number"], "301000000000012373");
        assert_eq!(v["iuv"], "01000000000012373");
        assert_eq!(v["iud"], "TARI-2026-0001");
        assert_eq!(v["debt_type"], "TARI");
        assert_eq!(v["outcome"], "OK");
        assert_eq!(v["amount"], json!({"cents": 12050, "decimal": "120.50"}));
        assert_eq!(v["fee"], json!({"cents": 100, "decimal": "1.00"}));
        assert_eq!(v["primary_ci_incurred_fee"], Value::Null);
        assert_eq!(v["description"], "TARI 2026 <rata 1>");
        assert_eq!(v["payment_note"], Value::Null);
        assert_eq!(v["payment_date_time"], "2026-11-26T10:00:00");
        assert_eq!(v["application_date"], "2026-11-26");
        assert_eq!(v["transfer_date"], "2026-11-27");
        assert_eq!(
            v["psp"],
            json!({"id": "BCITITMM", "name": "Intesa Sanpaolo", "fiscal_code": "00799960158",
                   "partita_iva": "10810700152", "channel_id": "BCITITMM_01",
                   "channel_description": "app", "payment_method": "creditCard"})
        );
        assert_eq!(
            v["debtor"],
            json!({"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi", "street": null,
                   "civic": null, "postal_code": null, "city": null, "province": null,
                   "country": null, "email": null})
        );
        assert_eq!(
            v["payer"],
            json!({"type": "G", "id": "01234567890", "name": "Rossi & Figli S.r.l.",
                   "street": "Via Roma", "civic": "1/A", "postal_code": "35100", "city": "Padova",
                   "province": "PD", "country": "IT", "email": "info@rossi.example"})
        );
        assert_eq!(
            v["transfers"],
            json!([{"id": 1, "fiscal_code_pa": PADOVA, "company_name": null,
                    "iban": "IT60X0542811101000000123456", "mbd_attachment": null,
                    "amount": {"cents": 12050, "decimal": "120.50"},
                    "remittance_information": "/RFB/01000000000012373/TXT/TARI",
                    "category": "9/0101100IM/",
                    "metadata": [{"key": "capitolo", "value": "1234"}]}])
        );
        assert_eq!(v["metadata"], json!([{"key": "canale", "value": "web"}]));
        assert_eq!(v["received_at"], "2026-11-26T10:00:01.123Z");
        assert_eq!(v["issue"], Value::Null);
        assert_eq!(v["operation"], "paSendRT");
        let xml = v["xml_base64"].as_str().expect("xml_base64");
        assert_eq!(b64(xml), raw.as_bytes());
    }

    #[test]
    fn v2_receipt_with_two_transfers() {
        let raw = send_rt_v2();
        let c = ReceiptContext {
            iud: None,
            debt_type: None,
            issue: Some("amount mismatch: expected 150.00"),
            ..ctx()
        };
        let v = encode_to_value(&c, &raw);
        assert_eq!(v["operation"], "paSendRTV2");
        assert_eq!(v["idempotency_key"], "9f1e2d3c4b5a69788796");
        assert_eq!(v["notice_number"], "347164993070184562");
        assert_eq!(v["iuv"], "47164993070184562");
        assert_eq!(v["iud"], Value::Null);
        assert_eq!(v["debt_type"], Value::Null);
        assert_eq!(v["issue"], "amount mismatch: expected 150.00");
        assert_eq!(v["amount"], json!({"cents": 15007, "decimal": "150.07"}));
        assert_eq!(v["fee"], Value::Null);
        assert_eq!(
            v["primary_ci_incurred_fee"],
            json!({"cents": 50, "decimal": "0.50"})
        );
        assert_eq!(v["payment_note"], "per la pratica 42");
        assert_eq!(v["payment_date_time"], "2026-11-26T10:00:00.250+01:00");
        assert_eq!(v["application_date"], Value::Null);
        assert_eq!(v["payer"], Value::Null);
        assert_eq!(v["metadata"], json!([]));
        assert_eq!(v["psp"]["fiscal_code"], Value::Null);
        assert_eq!(v["psp"]["payment_method"], Value::Null);
        let transfers = v["transfers"].as_array().expect("transfers");
        assert_eq!(transfers.len(), 2);
        assert_eq!(transfers[0]["id"], 1);
        assert_eq!(transfers[0]["iban"], "IT60X0542811101000000123456");
        assert_eq!(transfers[0]["mbd_attachment"], Value::Null);
        assert_eq!(
            transfers[0]["amount"],
            json!({"cents": 13407, "decimal": "134.07"})
        );
        assert_eq!(transfers[1]["id"], 2);
        assert_eq!(transfers[1]["fiscal_code_pa"], FELTRE);
        assert_eq!(transfers[1]["company_name"], "Comune di Feltre");
        assert_eq!(transfers[1]["iban"], Value::Null);
        assert_eq!(transfers[1]["mbd_attachment"], "PG1hcmNhLz4=");
        assert_eq!(
            b64(transfers[1]["mbd_attachment"].as_str().expect("mbd")),
            b"<marca/>"
        );
        assert_eq!(
            transfers[1]["amount"],
            json!({"cents": 1600, "decimal": "16.00"})
        );
        assert_eq!(transfers[1]["category"], "9/0301109AP/");
        let cents: i64 = transfers
            .iter()
            .map(|t| t["amount"]["cents"].as_i64().expect("cents"))
            .sum();
        assert_eq!(cents, 15007);
        assert_eq!(b64(v["xml_base64"].as_str().expect("xml")), raw.as_bytes());
    }

    #[test]
    fn xml_base64_is_the_request_as_received() {
        // Whatever the node's formatting (here: extra whitespace, CRLF), the bytes travel as they came.
        let raw = send_rt_v1().replace("><", ">\r\n  <");
        let v = encode_to_value(&ctx(), &raw);
        assert_eq!(b64(v["xml_base64"].as_str().expect("xml")), raw.as_bytes());
        assert_eq!(v["amount"]["cents"], 12050);
    }

    #[test]
    fn output_is_stable() {
        let raw = send_rt_v2();
        assert_eq!(encode(&ctx(), &raw), encode(&ctx(), &raw));
        let text = String::from_utf8(encode(&ctx(), &raw).expect("encode")).expect("UTF-8");
        assert!(
            text.starts_with(r#"{"format":"snodo.receipt.v1","idempotency_key":"9f1e2d3c4b5a69788796","entity":{"ipa_code":"c_g224","#),
            "{text}"
        );
        assert!(
            text.contains(r#","operation":"paSendRTV2","xml_base64":""#) && text.ends_with("\"}"),
            "{text}"
        );
    }

    #[test]
    fn a_request_that_is_no_receipt_is_refused() {
        let raw = pagopa::render_request(&Request::GetPayment(GetPaymentRequest {
            id_pa: PADOVA.into(),
            id_broker_pa: BROKER.into(),
            id_station: STATION.into(),
            qr_code: qr_code(),
            ..GetPaymentRequest::default()
        }));
        assert_eq!(
            encode(&ctx(), &raw),
            Err(ReceiptJsonError::NotAReceipt("paGetPayment"))
        );
        assert!(matches!(
            encode(&ctx(), "not xml at all <"),
            Err(ReceiptJsonError::Soap(_))
        ));
        let broken = send_rt_v1().replace("301000000000012373", "30100000000001237X");
        assert!(matches!(
            encode(&ctx(), &broken),
            Err(ReceiptJsonError::Soap(SoapError::Invalid { .. }))
        ));
    }

    #[test]
    fn a_bad_context_is_refused() {
        let raw = send_rt_v1();
        for received_at in [
            "",
            "2026-11-26",
            "2026-11-26T10:00:01",
            "2026-11-26T10:00:01+01:00",
            "2026-11-26 10:00:01Z",
            "2026-11-26T10:00:01.Z",
            "2026-02-30T10:00:01Z",
            "2026-11-26T10:00:01Zjunk",
        ] {
            let c = ctx_at(received_at);
            assert!(
                matches!(encode(&c, &raw), Err(ReceiptJsonError::Context(_))),
                "{received_at:?}"
            );
        }
        for received_at in ["2026-11-26T10:00:01Z", "2026-11-26T10:00:01.123456789Z"] {
            let c = ctx_at(received_at);
            assert!(encode(&c, &raw).is_ok(), "{received_at:?}");
        }
        let c = ReceiptContext {
            entity_ipa: "",
            ..ctx()
        };
        assert!(matches!(
            encode(&c, &raw),
            Err(ReceiptJsonError::Context(_))
        ));
    }

    fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(v).expect("json")).expect("write");
        path
    }

    #[test]
    fn outputs_match_the_published_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = encode_to_value(&ctx(), &send_rt_v1());
        let v2 = encode_to_value(
            &ReceiptContext {
                iud: None,
                debt_type: None,
                issue: Some("flagged"),
                // The schema allows a secondary beneficiary's role too.
                secondary: Some("00133880252"),
                ..ctx()
            },
            &send_rt_v2(),
        );
        // The schema must also refuse what the encoder never writes.
        let mut extra_key = v1.clone();
        extra_key["surprise"] = json!(1);
        let mut bad_notice = v1.clone();
        bad_notice["notice_number"] = json!("30100000000001237");
        let mut float_cents = v1.clone();
        float_cents["amount"]["cents"] = json!(120.5);
        let mut bad_decimal = v2.clone();
        bad_decimal["transfers"][1]["amount"]["decimal"] = json!("16.0");
        let mut missing_key = v2.clone();
        missing_key.as_object_mut().expect("object").remove("payer");
        let mut both_destinations = v2.clone();
        both_destinations["transfers"][1]["iban"] = json!("IT60X0542811101000000123456");
        let cases = [
            ("v1", v1, None),
            ("v2", v2, None),
            ("extra_key", extra_key, Some("'surprise' was unexpected")),
            (
                "bad_notice",
                bad_notice,
                Some("notice_number: '30100000000001237' does not match"),
            ),
            (
                "float_cents",
                float_cents,
                Some("amount/cents: 120.5 is not of type 'integer'"),
            ),
            (
                "bad_decimal",
                bad_decimal,
                Some("transfers/1/amount/decimal: '16.0' does not match"),
            ),
            (
                "missing_key",
                missing_key,
                Some("'payer' is a required property"),
            ),
            (
                "both_destinations",
                both_destinations,
                Some("transfers/1: "),
            ),
        ];
        let files: Vec<PathBuf> = cases
            .iter()
            .map(|(name, v, _)| write(dir.path(), &format!("{name}.json"), v))
            .collect();
        let verdicts = crate::test_fixtures::schema_verdicts(SCHEMA, &files);
        for ((name, _, expected), verdict) in cases.iter().zip(&verdicts) {
            match (expected, verdict) {
                (None, None) => {}
                (None, Some(why)) => panic!("{name} breaks the schema: {why}"),
                (Some(_), None) => panic!("{name} passed the schema"),
                (Some(want), Some(why)) => assert!(why.contains(want), "{name}: {why}"),
            }
        }
    }
}
