//! A receipt of a foreign issuer's notice sent to one of the hub's entities as a secondary
//! beneficiary, as pagoPA sends every beneficiary its copy: `snodo sim --secondary-receipt`.

use crate::receipt::{unknown_notice, ReceiptIds};
use crate::{endpoint_url, http_client, SimError, SimOptions};
use snodo_adapters::pagopa::{self as soap, Outcome, Request, Response};

/// The issuer of the notice when none is given: a fiscal code no demo entity has.
pub const FOREIGN_ISSUER: &str = "00339370272";

/// What was sent and how the hub answered.
#[derive(Debug, Clone)]
pub struct SentSecondary {
    pub receipt_id: String,
    pub notice_number: String,
    /// `None`: OK; else the fault code.
    pub fault: Option<String>,
}

/// Sends the hub of `opts` one paSendRTV2 with `idPA` = `beneficiary` for a notice of
/// `issuer`: 100.00 paid, 80.00 to the issuer (transfer 1), 20.00 to the beneficiary.
pub async fn send(
    opts: &SimOptions,
    beneficiary: &str,
    issuer: &str,
) -> Result<SentSecondary, SimError> {
    let endpoint = endpoint_url(&opts.url)?;
    let client = http_client(opts, 1)?;
    let receipt_id = ReceiptIds::random().id(0);
    // A fresh, well-formed number of the issuer's (never one of the hub's counters).
    let seed = u64::from_str_radix(receipt_id.get(..12).unwrap_or("0"), 16).unwrap_or_default();
    let notice_number = unknown_notice("301", seed as usize);
    let transfer = |id: u8, fiscal_code: &str, amount: &str| soap::ReceiptTransferV2 {
        id_transfer: id,
        transfer_amount: amount.into(),
        fiscal_code_pa: fiscal_code.into(),
        company_name: None,
        destination: soap::ReceiptDestination::Iban("IT60X0542811101000000123456".into()),
        remittance_information: format!("/RFB/{}/TXT/simulated", &notice_number[1..]),
        transfer_category: "9/0101100IM/".into(),
        metadata: Vec::new(),
    };
    let receipt = soap::ReceiptV2 {
        receipt_id: receipt_id.clone(),
        notice_number: notice_number.clone(),
        fiscal_code: issuer.into(),
        outcome: Outcome::Ok,
        creditor_reference_id: notice_number[1..].into(),
        payment_amount: "100.00".into(),
        description: "Simulated payment of another entity's notice".into(),
        company_name: "Ente emittente".into(),
        debtor: soap::Subject {
            unique_identifier: soap::UniqueIdentifier {
                kind: soap::EntityType::F,
                value: "RSSMRA85T10A562S".into(),
            },
            full_name: "Mario Rossi".into(),
            ..Default::default()
        },
        transfer_list: vec![
            transfer(1, issuer, "80.00"),
            transfer(2, beneficiary, "20.00"),
        ],
        id_psp: "BCITITMM".into(),
        psp_company_name: "Intesa Sanpaolo".into(),
        id_channel: "BCITITMM_01".into(),
        channel_description: "app".into(),
        payment_date_time: Some(
            chrono::Utc::now()
                .with_timezone(&chrono_tz::Europe::Rome)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string(),
        ),
        ..Default::default()
    };
    let body = soap::render_request(&Request::SendRtV2(soap::SendRtV2Request {
        id_pa: beneficiary.into(),
        id_broker_pa: opts.broker_fiscal_code.clone(),
        id_station: opts.station.clone(),
        receipt,
    }));
    let unreachable = |reason: String| SimError::Unreachable {
        url: endpoint.to_string(),
        reason,
    };
    let (status, bytes) = crate::post_soap_once(&client, &endpoint, "paSendRTV2", body).await?;
    let r = match soap::parse_response(&bytes) {
        Ok(Response::SendRtV2(r)) => r,
        Ok(other) => {
            return Err(unreachable(format!(
                "answered {} instead of paSendRTV2Response",
                other.operation().response_element()
            )))
        }
        Err(e) => {
            return Err(unreachable(format!(
                "HTTP {status}, unreadable answer: {e}"
            )))
        }
    };
    Ok(SentSecondary {
        receipt_id,
        notice_number,
        fault: (r.outcome != Outcome::Ok).then(|| r.fault.unwrap_or_default().fault_code),
    })
}
