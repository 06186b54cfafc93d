//! Keeps each entity's reconciliation labels (docs/RECONCILIATION.md) as receipts, settlement
//! flows, treasury movements and notifications arrive: the store leaves a mark for each in the
//! transaction that stores it, and [`Reconciler`] relabels the payments and movements the marks
//! touch — only those, never the whole entity. [`rebuild`] relabels a whole entity (repair, and
//! the first run on data stored before labels were kept), chunk by chunk in IUV order so its
//! memory stays flat.
//!
//! Rules of the facts, beyond the classes' own (`snodo_core::reconcile`):
//! - a payment is one transfer of a receipt crediting the entity (the only transfer, or one
//!   with the entity's fiscal code), or of another entity's receipt paying this one as a
//!   secondary beneficiary, found through the settlement row linked to it;
//! - settlement rows with esito 3 (revoked) are left out, as MyPivot does; rows with esito 8
//!   or 9 and no receipt count as paid by the row itself (MyPivot's Recupera_Codice_9);
//! - a flow's credit is the sum of the entity's movements naming its IUF;
//! - a notification (by IUD) joins the payment with its IUV; one no payment takes is an item of
//!   its own, `N:<iud>`.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use snodo_adapters::pagopa::{stored_transfers, to_cents};
use snodo_core::reconcile::{
    classify_movement, classify_payment, Class, MovementFacts, PaymentFacts, Reported,
};
use snodo_core::{Amount, NoticeNumber};
use snodo_store::{
    DirtyMark, FactRow, IuvSelect, LabelCounts, MovementSelect, NewItem, ReconTx, Store,
    StoredItem, StoredNotification,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for a report or a credit before a payment is classed as missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Item {
    /// Orders the items and names one for a cursor: `P:<iuv>:<iur>:<index>`, `N:<iud>`,
    /// `M:<year>-<bill>`.
    pub key: String,
    /// `payment`, `notification` or `movement`.
    pub kind: String,
    pub iuv: Option<String>,
    pub iur: Option<String>,
    pub transfer_index: Option<u8>,
    /// The receipt's id in the store, when paid by a receipt.
    pub receipt: Option<i64>,
    /// The entity's notification: its IUD and amount (cents).
    pub iud: Option<String>,
    pub notified_cents: Option<i64>,
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
    pub classes: Vec<String>,
}

/// Who is being labelled, and when.
#[derive(Debug, Clone)]
pub struct Labelling<'a> {
    pub entity: &'a str,
    /// The entity's fiscal code: which transfers of a multi-beneficiary receipt are its own.
    pub fiscal: &'a str,
    pub grace: Grace,
    pub now: DateTime<Utc>,
}

/// IUFs' credits read so far; `complete` when every IUF of the entity was read at once.
#[derive(Default)]
struct Credits {
    by_iuf: HashMap<String, i64>,
    complete: bool,
}

impl Credits {
    fn load(&mut self, tx: &mut ReconTx<'_>, rows: &[FactRow]) -> snodo_store::Result<()> {
        if self.complete {
            return Ok(());
        }
        let missing: BTreeSet<String> = rows
            .iter()
            .filter(|r| !self.by_iuf.contains_key(&r.iuf))
            .map(|r| r.iuf.clone())
            .collect();
        let missing: Vec<String> = missing.into_iter().collect();
        for (iuf, n) in tx.credits_by_iuf(Some(&missing))? {
            self.by_iuf.insert(iuf, n);
        }
        Ok(())
    }
}

fn overdue(now: DateTime<Utc>, since: DateTime<Utc>, grace: Duration) -> (bool, DateTime<Utc>) {
    let due = since + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    (now >= due, due)
}

fn flow_start(date: Option<&str>) -> Option<DateTime<Utc>> {
    let d = NaiveDate::parse_from_str(date?, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The items of the payments (and lone notifications) with IUVs in `sel`.
fn payment_items(
    tx: &mut ReconTx<'_>,
    who: &Labelling<'_>,
    sel: IuvSelect<'_>,
    credits: &mut Credits,
    notifies: bool,
) -> snodo_store::Result<Vec<NewItem>> {
    let rows = tx.rows(sel)?;
    credits.load(tx, &rows)?;
    let by_iuv: HashMap<String, i64> = tx.credits_by_iuv(sel)?.into_iter().collect();
    let mut notifications: HashMap<String, Vec<StoredNotification>> = HashMap::new();
    if notifies {
        for n in tx.notifications(sel)? {
            notifications.entry(n.iuv.clone()).or_default().push(n);
        }
    }
    let mut esiti: HashMap<(String, i64), HashSet<i64>> = HashMap::new();
    let mut by_key: HashMap<(String, String, i64), FactRow> = HashMap::new();
    for r in rows {
        esiti
            .entry((r.iuv.clone(), r.index))
            .or_default()
            .insert(r.esito);
        by_key.insert((r.iuv.clone(), r.iur.clone(), r.index), r);
    }

    let mut payments: Vec<Payment> = Vec::new();
    for doc in tx.receipts(sel)? {
        // Only the transfers are read of the stored request: a rebuild reads a million.
        let Some(parsed) = doc.parsed.as_deref() else {
            continue;
        };
        let Ok(transfers) = stored_transfers(parsed.as_bytes()) else {
            continue;
        };
        let Ok(notice) = NoticeNumber::parse(&doc.receipt.notice_number) else {
            continue;
        };
        let received = DateTime::parse_from_rfc3339(&doc.receipt.received_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(who.now);
        let only = transfers.len() == 1;
        for t in &transfers {
            if !only && t.fiscal_code_pa != who.fiscal {
                continue;
            }
            let Ok(amount) = to_cents(&t.transfer_amount) else {
                continue;
            };
            let index = i64::from(t.id_transfer);
            let key = (
                notice.iuv().as_str().to_string(),
                doc.receipt.receipt_id.clone(),
                index,
            );
            let row = by_key.remove(&key);
            payments.push(Payment {
                iuv: key.0,
                iur: key.1,
                index,
                paid: Some((amount.cents(), doc.receipt.amount_cents)),
                row,
                since: Some(received),
                notification: None,
                receipt: Some(doc.receipt.id),
            });
        }
    }
    // Rows no receipt of the entity claims: a transfer to the entity as a secondary beneficiary
    // of another entity's receipt (linked when the flow was stored), or paid by the row itself
    // when pagoPA sends no receipt (8, 9).
    let mut rest: Vec<_> = by_key.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for ((iuv, iur, index), row) in rest {
        let mut paid = matches!(row.esito, 8 | 9).then_some((row.amount_cents, row.amount_cents));
        let mut receipt = None;
        let mut since = None;
        if let Some(found) = secondary_transfer(tx, who, &row)? {
            (paid, receipt, since) = (Some(found.paid), Some(found.receipt), Some(found.received));
        }
        payments.push(Payment {
            iuv,
            iur,
            index,
            paid,
            row: Some(row),
            since,
            notification: None,
            receipt,
        });
    }
    // Notifications: each joins the first payment of its IUV not yet notified, paid ones first.
    let mut lone: Vec<StoredNotification> = Vec::new();
    for (iuv, list) in notifications {
        for n in list {
            let slot = payments
                .iter_mut()
                .filter(|p| p.iuv == iuv && p.notification.is_none())
                .min_by_key(|p| (p.paid.is_none(), p.iur.clone(), p.index));
            match slot {
                Some(p) => p.notification = Some(n),
                None => lone.push(n),
            }
        }
    }

    let mut items = Vec::with_capacity(payments.len() + lone.len());
    for p in payments {
        let credited = p
            .row
            .as_ref()
            .and_then(|r| credits.by_iuf.get(&r.iuf).copied());
        let credited_by_iuv = by_iuv.get(&p.iuv).copied();
        let twice = esiti
            .get(&(p.iuv.clone(), p.index))
            .is_some_and(|e| e.contains(&0) && e.contains(&9));
        let (report_overdue, report_due) = match p.since {
            Some(at) => overdue(who.now, at, who.grace.report),
            None => (true, who.now),
        };
        let flow_at = p
            .row
            .as_ref()
            .and_then(|r| flow_start(r.flow_date.as_deref()));
        let (credit_overdue, credit_due) = match flow_at {
            Some(at) => overdue(who.now, at, who.grace.credit),
            None => (p.row.is_some(), who.now),
        };
        let facts = PaymentFacts {
            notified: p
                .notification
                .as_ref()
                .map(|n| Amount::from_cents(n.amount_cents)),
            paid: p
                .paid
                .map(|(s, t)| (Amount::from_cents(s), Amount::from_cents(t))),
            reported: p.row.as_ref().map(|r| Reported {
                amount: Amount::from_cents(r.amount_cents),
                flow_total: Amount::from_cents(r.flow_total_cents),
                credited: credited.map(Amount::from_cents),
            }),
            credited_by_iuv: credited_by_iuv.map(Amount::from_cents),
            reported_twice: twice,
            entity_notifies: notifies,
            report_overdue,
            credit_overdue,
        };
        let classes = classify_payment(&facts);
        // When time alone would change the labels: the earlier grace end still ahead.
        let mut due: Option<DateTime<Utc>> = None;
        if !report_overdue
            && classify_payment(&PaymentFacts {
                report_overdue: true,
                ..facts
            }) != classes
        {
            due = Some(report_due);
        }
        if !credit_overdue
            && classify_payment(&PaymentFacts {
                credit_overdue: true,
                ..facts
            }) != classes
        {
            due = Some(due.map_or(credit_due, |d| d.min(credit_due)));
        }
        let item = Item {
            key: format!("P:{}:{}:{}", p.iuv, p.iur, p.index),
            kind: "payment".into(),
            iuv: Some(p.iuv.clone()),
            iur: Some(p.iur.clone()),
            transfer_index: u8::try_from(p.index).ok(),
            receipt: p.receipt,
            iud: p.notification.as_ref().map(|n| n.iud.clone()),
            notified_cents: p.notification.as_ref().map(|n| n.amount_cents),
            paid_cents: p.paid.map(|(s, _)| s),
            reported_cents: p.row.as_ref().map(|r| r.amount_cents),
            iuf: p.row.as_ref().map(|r| r.iuf.clone()),
            flow_total_cents: p.row.as_ref().map(|r| r.flow_total_cents),
            credited_cents: credited,
            credited_by_iuv_cents: credited_by_iuv,
            movement: None,
            movement_cents: None,
            classes: classes.iter().map(|c| c.code().to_string()).collect(),
        };
        items.push(new_item(item, "payment", &classes, due));
    }
    for n in lone {
        let facts = PaymentFacts {
            notified: Some(Amount::from_cents(n.amount_cents)),
            entity_notifies: true,
            credited_by_iuv: by_iuv.get(&n.iuv).map(|c| Amount::from_cents(*c)),
            ..PaymentFacts::default()
        };
        let classes = classify_payment(&facts);
        let item = Item {
            key: format!("N:{}", n.iud),
            kind: "notification".into(),
            iuv: Some(n.iuv.clone()),
            iur: None,
            transfer_index: None,
            receipt: None,
            iud: Some(n.iud.clone()),
            notified_cents: Some(n.amount_cents),
            paid_cents: None,
            reported_cents: None,
            iuf: None,
            flow_total_cents: None,
            credited_cents: None,
            credited_by_iuv_cents: facts.credited_by_iuv.map(|a| a.cents()),
            movement: None,
            movement_cents: None,
            classes: classes.iter().map(|c| c.code().to_string()).collect(),
        };
        items.push(new_item(item, "notification", &classes, None));
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(items)
}

/// Another entity's receipt paying this one: its transfer to this entity.
struct Secondary {
    /// (transfer amount, receipt total), cents.
    paid: (i64, i64),
    receipt: i64,
    received: DateTime<Utc>,
}

/// The transfer to the entity, as a secondary beneficiary, of the receipt `row` was linked to.
fn secondary_transfer(
    tx: &mut ReconTx<'_>,
    who: &Labelling<'_>,
    row: &FactRow,
) -> snodo_store::Result<Option<Secondary>> {
    let (Some(id), Some(transfer)) = (row.receipt, row.receipt_transfer) else {
        return Ok(None);
    };
    let Some(doc) = tx.receipt_document(id)? else {
        return Ok(None);
    };
    let Some(parsed) = doc.parsed.as_deref() else {
        return Ok(None);
    };
    let Ok(transfers) = stored_transfers(parsed.as_bytes()) else {
        return Ok(None);
    };
    let found = transfers
        .iter()
        .find(|t| i64::from(t.id_transfer) == transfer && t.fiscal_code_pa == who.fiscal);
    let Some(amount) = found.and_then(|t| to_cents(&t.transfer_amount).ok()) else {
        return Ok(None);
    };
    let received = DateTime::parse_from_rfc3339(&doc.receipt.received_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(who.now);
    Ok(Some(Secondary {
        paid: (amount.cents(), doc.receipt.amount_cents),
        receipt: doc.receipt.id,
        received,
    }))
}

struct Payment {
    iuv: String,
    iur: String,
    index: i64,
    paid: Option<(i64, i64)>,
    row: Option<FactRow>,
    since: Option<DateTime<Utc>>,
    notification: Option<StoredNotification>,
    receipt: Option<i64>,
}

fn new_item(
    item: Item,
    kind: &'static str,
    classes: &[Class],
    due: Option<DateTime<Utc>>,
) -> NewItem {
    NewItem {
        key: item.key.clone(),
        kind,
        iuv: item.iuv.clone(),
        classes: classes.iter().map(|c| c.code()).collect(),
        body: serde_json::to_string(&item).unwrap_or_default(),
        due_at: due.map(stamp),
    }
}

/// The items of these movements.
fn movement_items(movements: &[snodo_store::FactMovement]) -> Vec<NewItem> {
    movements
        .iter()
        .map(|f| {
            let m = &f.movement;
            let classes = classify_movement(&MovementFacts {
                has_reference: m.iuf.is_some() || m.iuv.is_some(),
                matched: (m.iuf.is_some() && f.flow_known) || (m.iuv.is_some() && f.iuv_known),
            });
            let item = Item {
                key: format!("M:{}", f.key),
                kind: "movement".into(),
                iuv: m.iuv.clone(),
                iur: None,
                transfer_index: None,
                receipt: None,
                iud: None,
                notified_cents: None,
                paid_cents: None,
                reported_cents: None,
                iuf: m.iuf.clone(),
                flow_total_cents: None,
                credited_cents: None,
                credited_by_iuv_cents: None,
                movement: Some(f.key.clone()),
                movement_cents: Some(m.amount_cents),
                classes: classes.iter().map(|c| c.code().to_string()).collect(),
            };
            let mut n = new_item(item, "movement", &classes, None);
            // A movement's item is found by key, not by IUV.
            n.iuv = None;
            n
        })
        .collect()
}

/// Relabels what `marks` (all of one entity) touched, in one transaction, and clears them.
pub fn relabel_marks(
    store: &dyn Store,
    who: &Labelling<'_>,
    marks: &[DirtyMark],
) -> snodo_store::Result<LabelCounts> {
    // A mark naming nothing (an entity's first notifications) relabels the whole entity.
    let (whole, marks): (Vec<&DirtyMark>, Vec<&DirtyMark>) = marks
        .iter()
        .partition(|m| m.iuv.is_none() && m.iuf.is_none() && m.movement.is_none());
    let mut out = LabelCounts::default();
    if !whole.is_empty() {
        out = rebuild_with(store, who, false)?;
        let ids: Vec<i64> = whole.iter().map(|m| m.id).collect();
        store.recon_tx(who.entity, false, &mut |tx| tx.clear_marks(&ids))?;
    }
    let notifies = store.notifies(who.entity)?;
    store.recon_tx(who.entity, false, &mut |tx| {
        let mut iuvs: BTreeSet<String> = BTreeSet::new();
        let mut movements: BTreeSet<String> = BTreeSet::new();
        for m in &marks {
            if let Some(iuv) = m.iuv.as_deref() {
                iuvs.insert(iuv.to_string());
                movements.extend(tx.movements_naming(None, Some(iuv))?);
            }
            if let Some(iuf) = m.iuf.as_deref() {
                iuvs.extend(tx.iuvs_of_iuf(iuf)?);
                movements.extend(tx.movements_naming(Some(iuf), None)?);
            }
            if let Some(key) = m.movement.as_deref() {
                movements.insert(key.to_string());
            }
        }
        let iuvs: Vec<String> = iuvs.into_iter().collect();
        let movements: Vec<String> = movements.into_iter().collect();
        let sel = IuvSelect::Set(&iuvs);
        let items = payment_items(tx, who, sel, &mut Credits::default(), notifies)?;
        let stale = tx.payment_items(sel)?;
        let a = tx.write(&items, &stale)?;
        let facts = tx.movements(MovementSelect::Keys(&movements))?;
        let stale = tx.movement_items(&movements)?;
        let b = tx.write(&movement_items(&facts), &stale)?;
        let ids: Vec<i64> = marks.iter().map(|m| m.id).collect();
        tx.clear_marks(&ids)?;
        out = add(out, add(a, b));
        Ok(())
    })?;
    Ok(out)
}

fn add(a: LabelCounts, b: LabelCounts) -> LabelCounts {
    LabelCounts {
        changed: a.changed + b.changed,
        written: a.written + b.written,
        removed: a.removed + b.removed,
    }
}

/// Payments per transaction of a rebuild.
const CHUNK: u32 = 2_000;

/// Relabels every payment and movement of the entity, chunk by chunk, without an event per
/// item (one `reconciliation.rebuilt` with the counts instead).
pub fn rebuild(store: &dyn Store, who: &Labelling<'_>) -> snodo_store::Result<LabelCounts> {
    rebuild_with(store, who, true)
}

/// [`rebuild`], with an event per changed label set unless `quiet`.
fn rebuild_with(
    store: &dyn Store,
    who: &Labelling<'_>,
    quiet: bool,
) -> snodo_store::Result<LabelCounts> {
    let notifies = store.notifies(who.entity)?;
    let mut credits = Credits::default();
    let mut total = LabelCounts::default();
    store.recon_tx(who.entity, quiet, &mut |tx| {
        credits.by_iuf = tx.credits_by_iuf(None)?.into_iter().collect();
        credits.complete = true;
        Ok(())
    })?;
    let mut after: Option<String> = None;
    loop {
        let mut next: Option<String> = None;
        store.recon_tx(who.entity, quiet, &mut |tx| {
            next = tx.iuv_bound(after.as_deref(), CHUNK)?;
            let sel = IuvSelect::Range {
                after: after.as_deref(),
                upto: next.as_deref(),
            };
            let items = payment_items(tx, who, sel, &mut credits, notifies)?;
            let stale = tx.payment_items(sel)?;
            total = add(total, tx.write(&items, &stale)?);
            Ok(())
        })?;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let mut last: Option<String> = None;
        store.recon_tx(who.entity, quiet, &mut |tx| {
            let facts = tx.movements(MovementSelect::After {
                after: after.as_deref(),
                limit: CHUNK,
            })?;
            last = facts.last().map(|f| f.key.clone());
            let full = facts.len() == CHUNK as usize;
            let upto = last.as_ref().filter(|_| full).map(|k| format!("M:{k}"));
            let from = after.as_ref().map(|k| format!("M:{k}"));
            let stale = tx.movement_items_range(from.as_deref(), upto.as_deref())?;
            total = add(total, tx.write(&movement_items(&facts), &stale)?);
            if !full {
                last = None;
            }
            Ok(())
        })?;
        match last {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    store.recon_tx(who.entity, quiet, &mut |tx| {
        tx.event(
            "reconciliation.rebuilt",
            who.entity,
            serde_json::json!({ "counts": total }),
        )
    })?;
    Ok(total)
}

/// What the reconciler needs of the running plan, read afresh each round (a reload may change
/// entities and grace periods).
pub trait EntitySource: Send + Sync {
    /// The entity's fiscal code, `None` when it is not configured.
    fn fiscal_code(&self, entity: &str) -> Option<String>;
    fn grace(&self) -> Grace;
}

impl EntitySource for crate::plan::LivePlan {
    fn fiscal_code(&self, entity: &str) -> Option<String> {
        let plan = self.get();
        let e = plan.entities.get(entity)?;
        Some(e.fiscal_code.as_str().to_string())
    }
    fn grace(&self) -> Grace {
        self.get().grace
    }
}

impl EntitySource for crate::plan::Plan {
    fn fiscal_code(&self, entity: &str) -> Option<String> {
        let e = self.entities.get(entity)?;
        Some(e.fiscal_code.as_str().to_string())
    }
    fn grace(&self) -> Grace {
        self.grace
    }
}

/// The background task: relabels from the marks as they come, and the items whose grace period
/// ended. Every hub runs one; the entity lock keeps two from writing one entity's labels at once.
pub struct Reconciler {
    store: Arc<dyn Store>,
    plan: Arc<dyn EntitySource>,
}

/// Marks read per round.
const MARKS: u32 = 1_000;

impl Reconciler {
    pub fn new(store: Arc<dyn Store>, plan: Arc<dyn EntitySource>) -> Self {
        Self { store, plan }
    }

    /// One round: the pending marks, then the items due. Returns how many marks and due items
    /// were handled (0: nothing to do).
    pub fn tick(&self, now: DateTime<Utc>) -> snodo_store::Result<usize> {
        let marks = self.store.dirty_marks(MARKS)?;
        self.relabel(&marks, now)?;
        // An item due is relabelled as a mark of its IUV (or its movement) would have it; a
        // mark of id 0 clears nothing.
        let due: Vec<DirtyMark> = self
            .store
            .recon_due(&stamp(now), MARKS)?
            .into_iter()
            .map(|(entity, key, iuv)| DirtyMark {
                id: 0,
                movement: key.strip_prefix("M:").map(str::to_string),
                entity,
                iuv,
                iuf: None,
            })
            .collect();
        self.relabel(&due, now)?;
        Ok(marks.len() + due.len())
    }

    /// Relabels what `marks` touched, one transaction per entity.
    fn relabel(&self, marks: &[DirtyMark], now: DateTime<Utc>) -> snodo_store::Result<()> {
        let mut per_entity: BTreeMap<&str, Vec<DirtyMark>> = BTreeMap::new();
        for m in marks {
            per_entity.entry(&m.entity).or_default().push(m.clone());
        }
        let grace = self.plan.grace();
        for (entity, list) in per_entity {
            let fiscal = self.plan.fiscal_code(entity).unwrap_or_default();
            let who = Labelling {
                entity,
                fiscal: &fiscal,
                grace,
                now,
            };
            relabel_marks(&*self.store, &who, &list)?;
        }
        Ok(())
    }

    /// Runs rounds until `shutdown`: straight on while there is work, every `idle` otherwise.
    pub async fn run(self, idle: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let this = Arc::new(self);
        loop {
            let me = this.clone();
            let done = tokio::task::spawn_blocking(move || me.tick(Utc::now())).await;
            let busy = match done {
                Ok(Ok(n)) => n > 0,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reconciliation: relabelling failed; retrying");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation: relabelling stopped");
                    false
                }
            };
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// A stored item as the API and the CLI show it.
pub fn item_of(stored: &StoredItem) -> serde_json::Value {
    serde_json::from_str(&stored.body).unwrap_or_else(|_| {
        serde_json::json!({ "key": stored.key, "kind": stored.kind, "classes": stored.classes })
    })
}
