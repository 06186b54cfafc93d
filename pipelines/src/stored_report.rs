//! A stored settlement flow made again into the [`Report`] the formats encode (`fdr-json`,
//! `fdr-xml`): its header from the FdR 3 JSON kept on arrival, its rows and links from the
//! store, its anomalies as they were recorded. What the API shows and what a reports pipeline
//! delivers is therefore what the pull stored, never a second linking.

use snodo_adapters::fdr::rest::{self, SingleFlow};
use snodo_adapters::fdr::{Report, ReportAnomaly};
use snodo_core::settlement::link::{ReceiptTransfer, RowLink};
use snodo_core::settlement::{PayStatus, SettlementFlow, SettlementPayment, TransferIndex};
use snodo_core::Amount;
use snodo_store::{LinkReceipt, ReportFlow, Store, StoredReportRow};

/// Rows read per query.
const PAGE: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("store: {0}")]
    Store(#[from] snodo_store::StoreError),
    #[error("settlement flow {id} is {status}: only a stored (ok) flow has a report")]
    NotOk { id: i64, status: String },
    /// What the store holds does not read back: a defect or a hand-edited store.
    #[error("settlement flow {id}: {why}")]
    Corrupt { id: i64, why: String },
}

/// The report of a stored flow (status `ok`).
pub fn rebuild(store: &dyn Store, stored: &ReportFlow) -> Result<Report, RebuildError> {
    let corrupt = |why: String| RebuildError::Corrupt { id: stored.id, why };
    if stored.status != "ok" {
        return Err(RebuildError::NotOk {
            id: stored.id,
            status: stored.status.clone(),
        });
    }
    let header = stored
        .header
        .as_deref()
        .ok_or_else(|| corrupt("no header kept".into()))?;
    let mut flow = rest::decode::<SingleFlow>(header.as_bytes())
        .and_then(|h| h.to_flow())
        .map_err(|e| corrupt(format!("header: {e}")))?;
    // The key the flow is stored under is the truth (a legacy flow's PSP was named by the pull).
    flow.psp_id = stored.psp_id.clone();
    flow.revision = u32::try_from(stored.revision)
        .map_err(|_| corrupt(format!("revision {}", stored.revision)))?;
    blank_is_none(&mut flow);

    let anomalies: Vec<ReportAnomaly> = store
        .report_anomalies(stored.id)?
        .into_iter()
        .map(|a| ReportAnomaly {
            row: a.row_no.and_then(|n| u64::try_from(n).ok()),
            code: a.code,
            severity: a.severity,
            message: a.message,
        })
        .collect();
    let mismatched: std::collections::HashSet<u64> = anomalies
        .iter()
        .filter(|a| a.code == "AMOUNT_MISMATCH")
        .filter_map(|a| a.row)
        .collect();

    let rows_hint = usize::try_from(stored.rows_done).unwrap_or(0);
    let mut payments = Vec::with_capacity(rows_hint);
    let mut links = Vec::with_capacity(rows_hint);
    let mut after = 0u64;
    loop {
        let page = store.report_rows(stored.id, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = u64::try_from(last.row_no).map_err(|_| corrupt("row number".into()))?;
        for r in &page {
            let (p, l) = row(store, r, &mismatched).map_err(corrupt)?;
            payments.push(p);
            links.push(l);
        }
    }
    Ok(Report {
        flow,
        payments,
        links,
        computed_count: u64::try_from(stored.computed_count).unwrap_or(0),
        computed_amount: Amount::from_cents(stored.computed_cents),
        linked: u64::try_from(stored.linked).unwrap_or(0),
        anomalies,
    })
}

/// FdR 3's JSON has no null names; an empty one is an absent one.
fn blank_is_none(flow: &mut SettlementFlow) {
    for name in [
        &mut flow.sender.name,
        &mut flow.sender.broker_id,
        &mut flow.sender.channel_id,
        &mut flow.receiver.name,
    ] {
        if name.as_deref() == Some("") {
            *name = None;
        }
    }
}

fn row(
    store: &dyn Store,
    r: &StoredReportRow,
    mismatched: &std::collections::HashSet<u64>,
) -> Result<(SettlementPayment, RowLink), String> {
    let at = |what: &str| format!("row {}: {what}", r.row_no);
    let row_no = u64::try_from(r.row_no).map_err(|_| at("row number"))?;
    let index = |i: i64| TransferIndex::new(i).map_err(|e| at(&e.to_string()));
    let payment = SettlementPayment {
        iuv: r.iuv.clone(),
        iur: r.iur.clone(),
        transfer_index: r.transfer_index.map(index).transpose()?,
        amount: Amount::from_cents(r.amount_cents),
        status: PayStatus::from_esito(&r.esito.to_string()).map_err(|e| at(&e.to_string()))?,
        date: chrono::NaiveDate::parse_from_str(&r.pay_date, "%Y-%m-%d")
            .map_err(|_| at(&format!("pay date {:?}", r.pay_date)))?,
    };
    let linked = match r.receipt {
        None => None,
        Some(receipt) => {
            let transfer_index = index(r.receipt_transfer.unwrap_or(r.link_index))?;
            // Linked at the flow's amount unless the pull found them different.
            let amount = if mismatched.contains(&row_no) {
                receipt_amount(store, receipt, transfer_index)?
            } else {
                payment.amount
            };
            Some(ReceiptTransfer {
                receipt_id: r.iur.clone(),
                transfer_index,
                amount,
            })
        }
    };
    Ok((
        payment,
        RowLink {
            row: row_no,
            linked,
        },
    ))
}

/// The amount of the linked receipt's transfer, read from the receipt itself.
fn receipt_amount(store: &dyn Store, receipt: i64, index: TransferIndex) -> Result<Amount, String> {
    let doc = store
        .receipt_document(receipt)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("linked receipt {receipt} is not in the store"))?;
    let link = LinkReceipt {
        id: receipt,
        amount_cents: doc.receipt.amount_cents,
        parsed: doc.parsed,
    };
    crate::reports::transfer_amount(&link, index)
        .ok_or_else(|| format!("receipt {receipt} has no transfer {index}"))
}
