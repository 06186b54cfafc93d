//! FdR 3's REST JSON for organizations (`adapters/specs/pagopa/SANP3.12.0/openapi/
//! fdr_organization.json`, and `adapters/specs/fdr/pagopa-fdr/openapi-org.json`, which adds
//! `payStatus = REVOKED`): the list of published flows, one flow's header, its payments pages,
//! and the error body. Decoded into the core model, and encoded back (the simulator serves them).
//!
//! Amounts travel as JSON numbers in euro; they are read through their shortest decimal text,
//! so `0.1` is 10 cents exactly and `0.001` is refused, never rounded.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use snodo_core::settlement::{
    FlowReceiver, FlowSender, Iuf, PayStatus, SenderKind, SettlementFlow, SettlementPayment,
    TransferIndex,
};
use snodo_core::time::rome_date;
use snodo_core::Amount;

/// Why an FdR 3 document does not fit the model; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum FdrRestError {
    #[error("not an FdR 3 document: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl ToString) -> FdrRestError {
    FdrRestError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Decodes one of the bodies below, naming the JSON path of a failure.
pub fn decode<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, FdrRestError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| FdrRestError::Json(e.to_string()))
}

/// `metadata` of a paged answer. Pages count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageMetadata {
    pub page_size: i64,
    pub page_number: i64,
    pub tot_page: i64,
}

impl PageMetadata {
    /// Whether a later page exists (GovPay's loop: while `pageNumber < totPage`).
    pub fn has_next(&self) -> bool {
        self.page_number < self.tot_page
    }
}

/// `GET /organizations/{organizationId}/fdrs?publishedGt=&page=&size=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowList {
    pub metadata: PageMetadata,
    pub count: i64,
    pub data: Vec<FlowByPsp>,
}

/// One published flow in the list; `published` is the cursor for the next `publishedGt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowByPsp {
    pub fdr: String,
    pub psp_id: String,
    pub revision: i64,
    pub published: DateTime<Utc>,
    pub flow_date: DateTime<Utc>,
}

impl FlowList {
    /// The largest `published` of the page: where the next pull starts (`publishedGt`).
    pub fn cursor(&self) -> Option<DateTime<Utc>> {
        self.data.iter().map(|f| f.published).max()
    }
}

/// `GET …/fdrs/{fdr}/revisions/{revision}/psps/{pspId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SingleFlow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<DateTime<Utc>>,
    pub fdr: String,
    pub fdr_date: DateTime<Utc>,
    pub regulation: String,
    /// A date by the OpenAPI; PagoPA's own mocks send a date-time, so both are read.
    pub regulation_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bic_code_pouring_bank: Option<String>,
    pub sender: Sender,
    pub receiver: Receiver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_tot_payments: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_sum_payments: Option<f64>,
    pub tot_payments: i64,
    pub sum_payments: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub psp_id: String,
    pub psp_name: String,
    pub psp_broker_id: String,
    pub channel_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receiver {
    pub id: String,
    pub organization_id: String,
    pub organization_name: String,
}

/// `GET …/psps/{pspId}/payments?page=&size=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentsPage {
    pub metadata: PageMetadata,
    pub count: i64,
    pub data: Vec<Payment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// The row's position in the flow, from 1.
    pub index: i64,
    pub iuv: String,
    pub iur: String,
    pub id_transfer: i64,
    pub pay: f64,
    pub pay_status: String,
    pub pay_date: DateTime<Utc>,
}

/// FdR 3's error body; `app_error_code` is `FDR-nnnn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    #[serde(default)]
    pub error_id: Option<String>,
    #[serde(default)]
    pub http_status_code: Option<i64>,
    #[serde(default)]
    pub http_status_description: Option<String>,
    #[serde(default)]
    pub app_error_code: Option<String>,
    #[serde(default)]
    pub errors: Vec<ErrorMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Euro as a JSON number into cents, exactly: through the number's shortest decimal text.
/// `signed` lets a revoked payment be negative.
pub fn euro_to_cents(field: &str, v: f64, signed: bool) -> Result<Amount, FdrRestError> {
    if !v.is_finite() {
        return Err(invalid(field, "not a finite number"));
    }
    let text = v.to_string();
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) if signed => (true, d),
        Some(_) => return Err(invalid(field, format!("{text} is negative"))),
        None => (false, text.as_str()),
    };
    let a = Amount::parse_decimal(digits).map_err(|e| invalid(field, format!("{text}: {e}")))?;
    Ok(if neg {
        Amount::from_cents(-a.cents())
    } else {
        a
    })
}

/// Cents as euro for a JSON number (`1001` → `10.01`, the nearest double, printed as such).
pub fn cents_to_euro(a: Amount) -> f64 {
    a.cents() as f64 / 100.0
}

fn text35(field: &str, v: &str) -> Result<(), FdrRestError> {
    snodo_core::settlement::check_text("the value", v, 1, 35).map_err(|e| invalid(field, e))
}

impl SingleFlow {
    /// The header in the core model. Totals are the declared ones (`totPayments`,
    /// `sumPayments`); the linking rules compute their own.
    pub fn to_flow(&self) -> Result<SettlementFlow, FdrRestError> {
        let iuf = Iuf::parse(&self.fdr).map_err(|e| invalid("fdr", e))?;
        let revision = u32::try_from(self.revision)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| {
                invalid(
                    "revision",
                    format!("{} is not a revision from 1", self.revision),
                )
            })?;
        let regulation_date = parse_day(&self.regulation_date).ok_or_else(|| {
            invalid(
                "regulationDate",
                format!("{:?} is not a date", self.regulation_date),
            )
        })?;
        text35("regulation", &self.regulation)?;
        text35("sender.id", &self.sender.id)?;
        text35("sender.pspId", &self.sender.psp_id)?;
        text35("receiver.id", &self.receiver.id)?;
        text35("receiver.organizationId", &self.receiver.organization_id)?;
        let declared_count = u64::try_from(self.tot_payments)
            .map_err(|_| invalid("totPayments", format!("{} is negative", self.tot_payments)))?;
        Ok(SettlementFlow {
            iuf,
            psp_id: self.sender.psp_id.clone(),
            revision,
            flow_time: self.fdr_date,
            regulation_id: self.regulation.clone(),
            regulation_date,
            sender: FlowSender {
                kind: SenderKind::from_rest_name(&self.sender.kind)
                    .map_err(|e| invalid("sender.type", e))?,
                id: self.sender.id.clone(),
                name: Some(self.sender.psp_name.clone()),
                broker_id: Some(self.sender.psp_broker_id.clone()),
                channel_id: Some(self.sender.channel_id.clone()),
            },
            bic_code_pouring_bank: self.bic_code_pouring_bank.clone(),
            receiver: FlowReceiver {
                id: self.receiver.id.clone(),
                organization_id: self.receiver.organization_id.clone(),
                name: Some(self.receiver.organization_name.clone()),
            },
            declared_count,
            declared_amount: euro_to_cents("sumPayments", self.sum_payments, true)?,
            published: self.published,
        })
    }

    /// The header as FdR 3 publishes it. `computed` is what the rows add up to (count,
    /// amount), when known.
    pub fn from_flow(flow: &SettlementFlow, computed: Option<(u64, Amount)>) -> SingleFlow {
        SingleFlow {
            status: Some("PUBLISHED".into()),
            revision: i64::from(flow.revision),
            created: flow.published,
            updated: flow.published,
            fdr: flow.iuf.as_str().to_owned(),
            fdr_date: flow.flow_time,
            regulation: flow.regulation_id.clone(),
            regulation_date: flow.regulation_date.format("%Y-%m-%d").to_string(),
            bic_code_pouring_bank: flow.bic_code_pouring_bank.clone(),
            sender: Sender {
                kind: flow.sender.kind.rest_name().into(),
                id: flow.sender.id.clone(),
                psp_id: flow.psp_id.clone(),
                psp_name: flow.sender.name.clone().unwrap_or_default(),
                psp_broker_id: flow.sender.broker_id.clone().unwrap_or_default(),
                channel_id: flow.sender.channel_id.clone().unwrap_or_default(),
            },
            receiver: Receiver {
                id: flow.receiver.id.clone(),
                organization_id: flow.receiver.organization_id.clone(),
                organization_name: flow.receiver.name.clone().unwrap_or_default(),
            },
            published: flow.published,
            computed_tot_payments: computed.map(|(n, _)| n as i64),
            computed_sum_payments: computed.map(|(_, a)| cents_to_euro(a)),
            tot_payments: flow.declared_count as i64,
            sum_payments: cents_to_euro(flow.declared_amount),
        }
    }
}

impl FlowByPsp {
    pub fn from_flow(flow: &SettlementFlow, published: DateTime<Utc>) -> FlowByPsp {
        FlowByPsp {
            fdr: flow.iuf.as_str().to_owned(),
            psp_id: flow.psp_id.clone(),
            revision: i64::from(flow.revision),
            published,
            flow_date: flow.flow_time,
        }
    }
}

impl Payment {
    /// The row in the core model; `data[i]` names it in errors.
    pub fn to_payment(&self, i: usize) -> Result<SettlementPayment, FdrRestError> {
        let f = |name: &str| format!("data[{i}].{name}");
        text35(&f("iuv"), &self.iuv)?;
        text35(&f("iur"), &self.iur)?;
        let status =
            PayStatus::from_rest_name(&self.pay_status).map_err(|e| invalid(f("payStatus"), e))?;
        let transfer_index =
            TransferIndex::new(self.id_transfer).map_err(|e| invalid(f("idTransfer"), e))?;
        let amount = euro_to_cents(&f("pay"), self.pay, status == PayStatus::Revoked)?;
        if amount.cents() == 0 {
            return Err(invalid(f("pay"), "must be greater than 0"));
        }
        Ok(SettlementPayment {
            iuv: self.iuv.clone(),
            iur: self.iur.clone(),
            transfer_index: Some(transfer_index),
            amount,
            status,
            date: rome_date(self.pay_date),
        })
    }

    /// The row as FdR 3 serves it; `index` is its position from 1. The day is written at
    /// midnight UTC, which is the same day in Rome.
    pub fn from_payment(index: i64, p: &SettlementPayment) -> Payment {
        Payment {
            index,
            iuv: p.iuv.clone(),
            iur: p.iur.clone(),
            id_transfer: i64::from(p.index_or_first().get()),
            pay: cents_to_euro(p.amount),
            pay_status: p.status.rest_name().into(),
            pay_date: p
                .date
                .and_hms_opt(0, 0, 0)
                .map(|d| d.and_utc())
                .unwrap_or_default(),
        }
    }
}

impl PaymentsPage {
    pub fn to_payments(&self) -> Result<Vec<SettlementPayment>, FdrRestError> {
        self.data
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_payment(i))
            .collect()
    }

    /// Page `page` (from 1) of `size` rows out of `all`.
    pub fn page_of(all: &[SettlementPayment], page: i64, size: i64) -> PaymentsPage {
        let size = size.max(1);
        let total = all.len() as i64;
        let tot_page = ((total + size - 1) / size).max(1);
        let start = ((page.max(1) - 1) * size).min(total) as usize;
        let end = (start + size as usize).min(all.len());
        let data: Vec<Payment> = all[start..end]
            .iter()
            .enumerate()
            .map(|(i, p)| Payment::from_payment((start + i + 1) as i64, p))
            .collect();
        PaymentsPage {
            metadata: PageMetadata {
                page_size: size,
                page_number: page.max(1),
                tot_page,
            },
            // The OpenAPI says "in this page"; PagoPA's own mocks give the flow's total.
            count: total,
            data,
        }
    }
}

/// A date (`2023-04-03`) or a date-time (the day in Rome).
fn parse_day(s: &str) -> Option<NaiveDate> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| rome_date(dt.with_timezone(&Utc)))
}
