//! `snodo reconcile --entity X`: the entity's payments and treasury movements with their
//! reconciliation classes (`snodo_core::reconcile`), computed now from what the store holds —
//! receipts, the current settlement flows, the treasury's movements. A whole pass over the
//! entity (the "rebuild"); labels kept up to date as each receipt, flow or movement arrives are
//! the next step of issue 17.
//!
//! Rules of this pass, beyond the classes' own:
//! - a payment is one transfer of a receipt crediting the entity (a receipt of another entity
//!   paying the entity as a secondary beneficiary is not read yet);
//! - settlement rows with esito 3 (revoked) are left out, as MyPivot does; rows with esito 8
//!   or 9 and no receipt count as paid by the row itself (pagoPA sends no receipt for them:
//!   MyPivot's Recupera_Codice_9, PU's implicit receipts);
//! - a flow's credit is the sum of the movements of the same entity whose causale names its
//!   IUF (an ordinary SCT plus any supplementary ones).

use super::{entity_store, Result};
use crate::plan::Plan;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use snodo_adapters::pagopa::{receipt_from_stored, to_cents, ReceiptView};
use snodo_core::reconcile::{
    classify_movement, classify_payment, Class, MovementFacts, PaymentFacts, Reported,
};
use snodo_core::Amount;
use snodo_store::Store;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// How long to wait for a report or a credit before a payment is classed as missing one.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// From the receipt: FdR are published by D+2.
    pub report: Duration,
    /// From the flow's date: the SCT reaches the treasury a few banking days later.
    pub credit: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            report: Duration::from_secs(3 * 86_400),
            credit: Duration::from_secs(5 * 86_400),
        }
    }
}

/// One payment or movement with its keys, the amounts on each side and its classes.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Orders the items and names one for a cursor: `P:<iuv>:<iur>:<index>`, `M:<year>-<bill>`.
    pub key: String,
    /// `payment` or `movement`.
    pub kind: &'static str,
    pub iuv: Option<String>,
    pub iur: Option<String>,
    pub transfer_index: Option<u8>,
    /// The receipt's transfer amount (cents), when paid.
    pub paid_cents: Option<i64>,
    /// The settlement row's amount, and its flow.
    pub reported_cents: Option<i64>,
    pub iuf: Option<String>,
    pub flow_total_cents: Option<i64>,
    /// What the treasury credited for the flow (by IUF) or for the payment (by IUV).
    pub credited_cents: Option<i64>,
    pub credited_by_iuv_cents: Option<i64>,
    /// A movement's `<year>-<bill>`.
    pub movement: Option<String>,
    pub movement_cents: Option<i64>,
    pub classes: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub entity: String,
    pub payments: u64,
    pub movements: u64,
    /// Items per class (a payment counts once in each of its classes).
    pub classes: BTreeMap<&'static str, u64>,
}

struct Row {
    amount: i64,
    esito: i64,
    flow: usize,
}

struct Flow {
    iuf: String,
    total: i64,
    date: Option<NaiveDate>,
}

/// Every payment and movement of `entity` with its classes, as of `now`.
pub fn reconcile(
    plan: &Plan,
    entity: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> Result<(Summary, Vec<Item>)> {
    let store = entity_store(plan, entity)?;
    let fiscal = plan
        .entities
        .get(entity)
        .map(|e| e.fiscal_code.as_str().to_string())
        .unwrap_or_default();
    Ok(reconcile_with(&*store, entity, &fiscal, grace, now)?)
}

/// [`reconcile`] on an open store, for the entity with this fiscal code; items in key order.
pub fn reconcile_with(
    store: &dyn Store,
    entity: &str,
    fiscal: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> snodo_store::Result<(Summary, Vec<Item>)> {
    // The current settlement flows and their rows (esito 3 left out).
    let mut flows: Vec<Flow> = Vec::new();
    let mut rows: HashMap<(String, String, u8), Row> = HashMap::new();
    let mut esiti: HashMap<(String, u8), HashSet<i64>> = HashMap::new();
    for f in store.reports(entity, false, u32::MAX)? {
        if f.status != "ok" || f.superseded_by.is_some() {
            continue;
        }
        let index = flows.len();
        flows.push(Flow {
            iuf: f.iuf.clone(),
            total: f.declared_cents.unwrap_or(f.computed_cents),
            date: f
                .flow_date
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        });
        let mut after = 0u64;
        loop {
            let page = store.report_rows(f.id, after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = u64::try_from(last.row_no).unwrap_or(u64::MAX);
            for r in page {
                if r.esito == 3 {
                    continue;
                }
                let i = u8::try_from(r.link_index).unwrap_or(1);
                esiti.entry((r.iuv.clone(), i)).or_default().insert(r.esito);
                rows.insert(
                    (r.iuv, r.iur, i),
                    Row {
                        amount: r.amount_cents,
                        esito: r.esito,
                        flow: index,
                    },
                );
            }
        }
    }

    // The treasury's credits, by IUF and by IUV.
    let movements = store.movements(entity, u32::MAX)?;
    let mut by_iuf: HashMap<&str, i64> = HashMap::new();
    let mut by_iuv: HashMap<&str, i64> = HashMap::new();
    for m in &movements {
        if let Some(iuf) = m.iuf.as_deref() {
            *by_iuf.entry(iuf).or_default() += m.amount_cents;
        }
        if let Some(iuv) = m.iuv.as_deref() {
            *by_iuv.entry(iuv).or_default() += m.amount_cents;
        }
    }
    let overdue = |since: DateTime<Utc>, grace: Duration| {
        now - since > chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX)
    };
    let flow_overdue = |f: &Flow| {
        f.date.is_some_and(|d| {
            let at = d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            at.is_some_and(|t| overdue(t, grace.credit))
        })
    };

    let mut items = Vec::new();
    let mut paid_iuvs: HashSet<String> = HashSet::new();
    let payment = |iuv: &str,
                   iur: &str,
                   index: u8,
                   paid: Option<(i64, i64)>,
                   row: Option<&Row>,
                   report_overdue: bool|
     -> Item {
        let flow = row.map(|r| &flows[r.flow]);
        let reported = row.zip(flow).map(|(r, f)| Reported {
            amount: Amount::from_cents(r.amount),
            flow_total: Amount::from_cents(f.total),
            credited: by_iuf.get(f.iuf.as_str()).map(|c| Amount::from_cents(*c)),
        });
        let credited_by_iuv = by_iuv.get(iuv).copied();
        let twice = esiti
            .get(&(iuv.to_string(), index))
            .is_some_and(|e| e.contains(&0) && e.contains(&9));
        let facts = PaymentFacts {
            notified: None,
            paid: paid.map(|(s, t)| (Amount::from_cents(s), Amount::from_cents(t))),
            reported,
            credited_by_iuv: credited_by_iuv.map(Amount::from_cents),
            reported_twice: twice,
            entity_notifies: false,
            report_overdue,
            credit_overdue: flow.is_some_and(flow_overdue),
        };
        Item {
            key: format!("P:{iuv}:{iur}:{index}"),
            kind: "payment",
            iuv: Some(iuv.to_string()),
            iur: Some(iur.to_string()),
            transfer_index: Some(index),
            paid_cents: paid.map(|(s, _)| s),
            reported_cents: row.map(|r| r.amount),
            iuf: flow.map(|f| f.iuf.clone()),
            flow_total_cents: flow.map(|f| f.total),
            credited_cents: flow.and_then(|f| by_iuf.get(f.iuf.as_str()).copied()),
            credited_by_iuv_cents: credited_by_iuv,
            movement: None,
            movement_cents: None,
            classes: classify_payment(&facts)
                .into_iter()
                .map(Class::code)
                .collect(),
        }
    };

    // Each transfer of the entity's receipts crediting it.
    let mut after = 0i64;
    loop {
        let docs = store.receipts_after(entity, after, 1_000)?;
        let Some(last) = docs.last() else { break };
        after = last.receipt.id;
        for doc in &docs {
            let Some(parsed) = doc.parsed.as_deref() else {
                continue;
            };
            let Ok(request) = receipt_from_stored(parsed.as_bytes()) else {
                continue;
            };
            let Some(view) = ReceiptView::of(&request) else {
                continue;
            };
            let received = DateTime::parse_from_rfc3339(&doc.receipt.received_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            let total = doc.receipt.amount_cents;
            let only = view.transfers.len() == 1;
            for t in &view.transfers {
                if !only && t.fiscal_code_pa != fiscal {
                    continue;
                }
                let Ok(amount) = to_cents(t.amount) else {
                    continue;
                };
                let iuv = view.creditor_reference_id;
                let key = (iuv.to_string(), view.receipt_id.to_string(), t.id_transfer);
                let row = rows.remove(&key);
                paid_iuvs.insert(iuv.to_string());
                items.push(payment(
                    iuv,
                    view.receipt_id,
                    t.id_transfer,
                    Some((amount.cents(), total)),
                    row.as_ref(),
                    overdue(received, grace.report),
                ));
            }
        }
    }
    // Rows no receipt claims: paid by the row itself when pagoPA sends no receipt (8, 9).
    let mut rest: Vec<_> = rows.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for ((iuv, iur, index), row) in rest {
        let implicit = matches!(row.esito, 8 | 9).then_some((row.amount, row.amount));
        paid_iuvs.insert(iuv.clone());
        items.push(payment(&iuv, &iur, index, implicit, Some(&row), true));
    }

    // Movements on their own.
    let iufs: HashSet<&str> = flows.iter().map(|f| f.iuf.as_str()).collect();
    for m in &movements {
        let matched = m.iuf.as_deref().is_some_and(|i| iufs.contains(i))
            || m.iuv.as_deref().is_some_and(|i| paid_iuvs.contains(i));
        let classes = classify_movement(&MovementFacts {
            has_reference: m.iuf.is_some() || m.iuv.is_some(),
            matched,
        });
        items.push(Item {
            key: format!("M:{}-{}", m.year, m.bill),
            kind: "movement",
            iuv: m.iuv.clone(),
            iur: None,
            transfer_index: None,
            paid_cents: None,
            reported_cents: None,
            iuf: m.iuf.clone(),
            flow_total_cents: None,
            credited_cents: None,
            credited_by_iuv_cents: None,
            movement: Some(format!("{}-{}", m.year, m.bill)),
            movement_cents: Some(m.amount_cents),
            classes: classes.into_iter().map(Class::code).collect(),
        });
    }

    items.sort_by(|a, b| a.key.cmp(&b.key));
    let mut classes: BTreeMap<&'static str, u64> = BTreeMap::new();
    for i in &items {
        for c in &i.classes {
            *classes.entry(c).or_default() += 1;
        }
    }
    let summary = Summary {
        entity: entity.to_string(),
        payments: items.iter().filter(|i| i.kind == "payment").count() as u64,
        movements: movements.len() as u64,
        classes,
    };
    Ok((summary, items))
}

/// The class named `code`, or why not (naming the known ones).
pub fn class(code: &str) -> std::result::Result<Class, String> {
    Class::from_code(code).ok_or_else(|| {
        let known: Vec<&str> = Class::ALL.iter().map(|c| c.code()).collect();
        format!("{code:?} is not a class (known: {})", known.join(", "))
    })
}

/// [`reconcile`] as of `at` (RFC 3339), or now.
pub fn reconcile_at(
    plan: &Plan,
    entity: &str,
    grace: Grace,
    at: Option<&str>,
) -> Result<(Summary, Vec<Item>)> {
    let now = match at {
        None => Utc::now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| super::OpsError::Pipeline {
                pipeline: "reconcile".into(),
                message: format!("--at {t:?} is not an RFC 3339 instant: {e}"),
            })?
            .with_timezone(&Utc),
    };
    reconcile(plan, entity, grace, now)
}
