//! What the simulated PSPs put in a receipt: who they are, the receipt id, the time of payment,
//! and the receipt itself built from the hub's activation answer.

use chrono::Utc;
use chrono_tz::Europe::Rome;
use snodo_adapters::pagopa::{
    self as soap, Destination, Outcome, PaymentData, PaymentDataV2, Receipt, ReceiptDestination,
    ReceiptTransferV2, ReceiptV2,
};
use snodo_core::Amount;
use std::hash::{BuildHasher, Hasher};

/// A payment service provider and the channel it pays through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Psp {
    pub id: &'static str,
    pub name: &'static str,
    pub fiscal_code: &'static str,
    pub channel: &'static str,
    pub channel_description: &'static str,
    pub payment_method: &'static str,
}

/// The PSPs payments are spread over, round robin.
pub(crate) const PSPS: [Psp; 3] = [
    Psp {
        id: "BCITITMM",
        name: "Intesa Sanpaolo S.p.A.",
        fiscal_code: "00799960158",
        channel: "00799960158_01",
        channel_description: "app",
        payment_method: "CP",
    },
    Psp {
        id: "UNCRITMM",
        name: "UniCredit S.p.A.",
        fiscal_code: "00348170101",
        channel: "00348170101_02",
        channel_description: "home banking",
        payment_method: "BBT",
    },
    Psp {
        id: "BPPIITRRXXX",
        name: "Poste Italiane S.p.A.",
        fiscal_code: "97103880585",
        channel: "97103880585_03",
        channel_description: "sportello",
        payment_method: "PO",
    },
];

/// The fee every simulated PSP charges.
pub(crate) const FEE: &str = "1.00";

/// Receipt ids: 32 lower-case hex digits, unique per payment within a run and, through a
/// random seed, across runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceiptIds {
    seed: u64,
}

impl ReceiptIds {
    pub fn random() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        Self { seed: h.finish() }
    }

    #[cfg(test)]
    pub fn with_seed(seed: u64) -> Self {
        Self { seed }
    }

    /// The id of payment `i`; `splitmix64` is a bijection, so distinct `i` give distinct ids.
    pub fn id(&self, i: usize) -> String {
        format!(
            "{:016x}{:016x}",
            splitmix64(self.seed),
            splitmix64(self.seed.wrapping_add(i as u64))
        )
    }
}

pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// When the PSP took the money: Rome local time, as the node writes it (no zone).
#[derive(Debug, Clone)]
pub(crate) struct PaidAt {
    /// `xsd:dateTime`, `2026-11-26T10:00:00`.
    pub date_time: String,
    /// `xsd:date`, `2026-11-26`.
    pub date: String,
}

impl PaidAt {
    pub fn now() -> Self {
        let now = Utc::now().with_timezone(&Rome).naive_local();
        Self {
            date_time: now.format("%Y-%m-%dT%H:%M:%S").to_string(),
            date: now.format("%Y-%m-%d").to_string(),
        }
    }
}

/// What the receipt says beyond the activation's data.
pub(crate) struct ReceiptFacts<'a> {
    pub receipt_id: String,
    pub notice_number: &'a str,
    pub fiscal_code: &'a str,
    pub psp: &'a Psp,
    pub paid_at: &'a PaidAt,
    /// Declare one cent more than was asked (fault injection).
    pub wrong_amount: bool,
}

/// The amount one cent higher, or unchanged when it is no amount (the hub will say so).
fn one_cent_more(wire: &str) -> String {
    match soap::to_cents(wire) {
        Ok(a) => soap::from_cents(Amount::from_cents(a.cents().saturating_add(1))),
        Err(_) => wire.to_string(),
    }
}

fn payment_amount(wire: String, wrong: bool) -> String {
    if wrong {
        one_cent_more(&wire)
    } else {
        wire
    }
}

/// A `paSendRTV2` receipt for the position the hub activated with `paGetPaymentV2`.
pub(crate) fn receipt_v2(data: PaymentDataV2, f: ReceiptFacts<'_>) -> ReceiptV2 {
    let transfer_list = data
        .transfer_list
        .into_iter()
        .map(|t| ReceiptTransferV2 {
            id_transfer: t.id_transfer,
            transfer_amount: t.transfer_amount,
            fiscal_code_pa: t.fiscal_code_pa,
            company_name: t.company_name,
            destination: match t.destination {
                Destination::Iban(iban) => ReceiptDestination::Iban(iban),
                // The stamp the PSP bought: a base64 placeholder of its MBD document.
                Destination::MarcaDaBollo(_) => {
                    ReceiptDestination::MbdAttachment("PE1CRD4KPC9NQkQ+".to_string())
                }
            },
            remittance_information: t.remittance_information,
            transfer_category: t.transfer_category,
            metadata: t.metadata,
        })
        .collect();
    let payer = Some(data.debtor.clone());
    ReceiptV2 {
        receipt_id: f.receipt_id,
        notice_number: f.notice_number.to_string(),
        fiscal_code: f.fiscal_code.to_string(),
        outcome: Outcome::Ok,
        creditor_reference_id: data.creditor_reference_id,
        payment_amount: payment_amount(data.payment_amount, f.wrong_amount),
        description: data.description,
        company_name: data.company_name,
        office_name: data.office_name,
        debtor: data.debtor,
        transfer_list,
        id_psp: f.psp.id.to_string(),
        psp_fiscal_code: Some(f.psp.fiscal_code.to_string()),
        psp_partita_iva: None,
        psp_company_name: f.psp.name.to_string(),
        id_channel: f.psp.channel.to_string(),
        channel_description: f.psp.channel_description.to_string(),
        payer,
        payment_method: Some(f.psp.payment_method.to_string()),
        payment_note: None,
        fee: Some(FEE.to_string()),
        primary_ci_incurred_fee: None,
        id_bundle: None,
        id_ci_bundle: None,
        payment_date_time: Some(f.paid_at.date_time.clone()),
        application_date: Some(f.paid_at.date.clone()),
        transfer_date: Some(f.paid_at.date.clone()),
        metadata: Vec::new(),
        stand_in: None,
    }
}

/// A `paSendRT` receipt for the position the hub activated with `paGetPayment`.
pub(crate) fn receipt_v1(data: PaymentData, company: Option<&str>, f: ReceiptFacts<'_>) -> Receipt {
    let payer = Some(data.debtor.clone());
    Receipt {
        receipt_id: f.receipt_id,
        notice_number: f.notice_number.to_string(),
        fiscal_code: f.fiscal_code.to_string(),
        outcome: Outcome::Ok,
        creditor_reference_id: data.creditor_reference_id,
        payment_amount: payment_amount(data.payment_amount, f.wrong_amount),
        description: data.description,
        // V1 activations may leave the company out; the verify answer usually had it.
        company_name: data
            .company_name
            .or_else(|| company.map(str::to_string))
            .unwrap_or_else(|| f.fiscal_code.to_string()),
        office_name: data.office_name,
        debtor: data.debtor,
        transfer_list: data.transfer_list,
        id_psp: f.psp.id.to_string(),
        psp_fiscal_code: Some(f.psp.fiscal_code.to_string()),
        psp_partita_iva: None,
        psp_company_name: f.psp.name.to_string(),
        id_channel: f.psp.channel.to_string(),
        channel_description: f.psp.channel_description.to_string(),
        payer,
        payment_method: Some(f.psp.payment_method.to_string()),
        fee: Some(FEE.to_string()),
        payment_date_time: Some(f.paid_at.date_time.clone()),
        application_date: Some(f.paid_at.date.clone()),
        transfer_date: Some(f.paid_at.date.clone()),
        metadata: Vec::new(),
        stand_in: None,
    }
}

/// A well-formed aux-3 notice number no hub has issued: the segregation code of `like` (when it
/// is an aux-3 notice), a base starting with `99` (an IUV counter never gets there) and valid
/// check digits.
pub(crate) fn unknown_notice(like: &str, i: usize) -> String {
    let segregation = match like.as_bytes() {
        [b'3', a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => &like[1..3],
        _ => "01",
    };
    let first16 = format!("3{segregation}99{:011}", (i as u64) % 100_000_000_000);
    // The first 16 digits fit in a u64 (< 10^16).
    let n: u64 = first16.parse().unwrap_or_default();
    format!("{first16}{:02}", n % 93)
}
