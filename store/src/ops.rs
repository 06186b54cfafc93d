//! The registry's rules, written once over [`Ops`] (the statements they need, on either
//! database), so a row or a receipt comes out the same on SQLite and on PostgreSQL.

use crate::db::{Arg, Conn};
use crate::events::count;
use crate::*;
use serde::Serialize;
use snodo_core::dovuto::RejectCode;

/// A live position as the apply step needs it.
pub(crate) struct Live {
    pub id: i64,
    pub iuv: Option<String>,
    pub iuv_generated: bool,
    pub status: String,
    pub debt_type: String,
    pub amount_cents: i64,
    pub data: String,
    /// The node's last activation (paGetPayment), as stored.
    pub activated_at: Option<String>,
}

/// The position a receipt designates.
pub(crate) struct Target {
    pub id: i64,
    pub iud: String,
    pub status: String,
    pub amount_cents: i64,
    pub debt_type: Option<String>,
}

/// A receipt owned, so it can wait in a queue for its commit.
#[derive(Debug, Clone)]
pub struct OwnedReceipt {
    pub entity: String,
    pub notice_number: NoticeNumber,
    pub receipt_id: String,
    pub amount_cents: i64,
    pub psp_id: String,
    pub psp_name: String,
    pub payment_date: Option<String>,
    pub operation: String,
    pub xml: String,
    /// The request as the hub decoded it (`snodo_adapters::pagopa::receipt_to_stored`).
    pub parsed: Option<String>,
    pub deliver_to: Vec<DeliverTo>,
    pub correlation: Option<String>,
    /// A secondary beneficiary's receipt: the fiscal code of the notice's issuer.
    pub issuer: Option<String>,
}

impl From<&NewReceipt<'_>> for OwnedReceipt {
    fn from(r: &NewReceipt<'_>) -> Self {
        Self {
            entity: r.entity.into(),
            notice_number: r.notice_number.clone(),
            receipt_id: r.receipt_id.into(),
            amount_cents: r.amount_cents,
            psp_id: r.psp_id.into(),
            psp_name: r.psp_name.into(),
            payment_date: r.payment_date.map(str::to_string),
            operation: r.operation.into(),
            xml: r.xml.into(),
            parsed: None,
            deliver_to: r.deliver_to.to_vec(),
            correlation: r.correlation.map(str::to_string),
            issuer: None,
        }
    }
}

/// A position as inserted.
pub struct NewPosition<'a> {
    pub entity: &'a str,
    pub row: &'a ChunkRow,
    pub iuv: Option<&'a str>,
    pub generated: bool,
    pub flow_id: i64,
    pub source: &'a str,
    pub ts: &'a str,
}

/// The statements the rules need, inside one open transaction (see `positions.rs` and
/// `receipts.rs`), with the entity's IUV counter once drawn from: (next value, value when read).
pub(crate) struct Ops<'c> {
    pub c: &'c mut dyn Conn,
    pub counter: Option<(i64, i64)>,
}

impl<'c> Ops<'c> {
    pub fn new(c: &'c mut dyn Conn) -> Self {
        Self { c, counter: None }
    }

    fn event(&mut self, e: &RawEvent<'_>, ts: &str) -> Result<()> {
        self.c.event(e, ts)
    }
}

/// An event with its payload already serialised (the import path writes one per row).
pub struct RawEvent<'a> {
    pub kind: &'a str,
    pub entity: &'a str,
    pub subject: &'a str,
    pub payload: &'a str,
    pub correlation: Option<&'a str>,
}

impl<'a> RawEvent<'a> {
    pub fn new(e: &'a NewEvent<'a>, payload: &'a str) -> Self {
        Self {
            kind: e.kind,
            entity: e.entity,
            subject: e.subject,
            payload,
            correlation: e.correlation,
        }
    }
}

fn reject(code: RejectCode, msg: impl Into<String>) -> RowOutcome {
    RowOutcome::Rejected(Rejection::new(code, msg))
}

/// What an accepted row's event needs beyond its outcome.
struct Change {
    kind: PositionChange,
    amount_cents: i64,
    debt_type: String,
}

/// Applies a chunk's rows and records their events (one per accepted row, in row order; stored
/// as one row for the chunk, see [`write_changes`]).
pub(crate) fn apply_rows(
    ops: &mut Ops<'_>,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    rows: &[ChunkRow],
) -> Result<Vec<RowOutcome>> {
    let mut ctx = Ctx {
        entity,
        flow_id,
        ts,
        source: format!("flow:{flow_id}"),
        correlation: flow_correlation(flow_id),
        changes: Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut i = 0;
    while i < rows.len() {
        // A run of inserts goes in one batch: nothing in between can depend on its order
        // but the unique indexes, which see the rows in order anyway.
        let run = rows[i..]
            .iter()
            .take_while(|r| matches!(r.action, Action::Insert))
            .count();
        if run > 0 {
            insert_run(ops, &mut ctx, &rows[i..i + run], &mut outcomes)?;
            i += run;
            continue;
        }
        let r = &rows[i];
        let (outcome, change) = match r.action {
            Action::Modify => modify(ops, &ctx, r)?,
            _ => annul(ops, &ctx, r)?,
        };
        emit(&mut ctx, r, &outcome, change);
        outcomes.push(outcome);
        i += 1;
    }
    write_changes(ops, &ctx)?;
    Ok(outcomes)
}

/// What every row of a chunk shares.
struct Ctx<'a> {
    entity: &'a EntityKey<'a>,
    flow_id: i64,
    ts: &'a str,
    source: String,
    correlation: String,
    /// The accepted rows' events, written at the chunk's end.
    changes: Vec<Compact>,
}

/// The event of an accepted row, kept until the chunk ends (see [`write_changes`]).
fn emit(ctx: &mut Ctx<'_>, r: &ChunkRow, outcome: &RowOutcome, change: Option<Change>) {
    if let (RowOutcome::Accepted { iuv, .. }, Some(c)) = (outcome, change) {
        ctx.changes.push(Compact {
            kind: c.kind,
            iud: r.iud.clone(),
            iuv: iuv.as_ref().map(|i| i.as_str().to_string()),
            amount_cents: c.amount_cents,
            debt_type: c.debt_type,
        });
    }
}

/// The stored kind of one row holding the position events of a chunk: never published as it
/// is, [`expand`] turns it back into one `position.*` event per position when read.
pub(crate) const POSITIONS: &str = "positions.chunk";

/// One position's change inside a [`POSITIONS`] row: `[kind, iud, iuv, amount_cents,
/// debt_type]`, the kind without its `position.` prefix and no notice number (the IUV gives it).
#[derive(serde::Deserialize)]
struct Compact {
    kind: PositionChange,
    iud: String,
    iuv: Option<String>,
    amount_cents: i64,
    debt_type: String,
}

impl Compact {
    fn payload(&self, flow_id: i64) -> serde_json::Value {
        let notice = self
            .iuv
            .as_deref()
            .and_then(|i| Iuv::parse(i).ok())
            .and_then(|i| i.notice_number());
        serde_json::json!({
            "iud": self.iud,
            "iuv": self.iuv,
            "notice_number": notice.as_ref().map(|n| n.as_str()),
            "amount_cents": self.amount_cents,
            "debt_type": self.debt_type,
            "flow_id": flow_id,
        })
    }
}

/// A position event's kind; stored in a chunk's row by its short name.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum PositionChange {
    Created,
    Modified,
    Annulled,
}

impl PositionChange {
    fn kind(self) -> &'static str {
        match self {
            Self::Created => "position.created",
            Self::Modified => "position.modified",
            Self::Annulled => "position.annulled",
        }
    }

    /// The name stored in a chunk's row: the kind without its `position.` prefix.
    fn short(self) -> &'static str {
        let kind = self.kind();
        kind.strip_prefix("position.").unwrap_or(kind)
    }
}

/// Positions per [`POSITIONS`] row: a row stays under ~100 KiB, small enough for any consumer
/// and for the allocator to reuse, and a 20 000-row chunk still writes only 20 event rows.
const POSITIONS_PER_ROW: usize = 1_000;

/// The chunk's position events: one event as before for a single row, [`POSITIONS`] rows of up
/// to [`POSITIONS_PER_ROW`] for more, instead of one row per position.
fn write_changes(ops: &mut Ops<'_>, ctx: &Ctx<'_>) -> Result<()> {
    if let [one] = ctx.changes.as_slice() {
        return ops.event(
            &RawEvent {
                kind: one.kind.kind(),
                entity: ctx.entity.ipa_code,
                subject: &one.iud,
                payload: &one.payload(ctx.flow_id).to_string(),
                correlation: Some(&ctx.correlation),
            },
            ctx.ts,
        );
    }
    #[derive(Serialize)]
    struct Chunk<'a> {
        flow_id: i64,
        positions: Vec<(&'a str, &'a str, Option<&'a str>, i64, &'a str)>,
    }
    for part in ctx.changes.chunks(POSITIONS_PER_ROW) {
        let positions = part
            .iter()
            .map(|c| {
                (
                    c.kind.short(),
                    c.iud.as_str(),
                    c.iuv.as_deref(),
                    c.amount_cents,
                    c.debt_type.as_str(),
                )
            })
            .collect();
        let chunk = Chunk {
            flow_id: ctx.flow_id,
            positions,
        };
        let payload =
            serde_json::to_string(&chunk).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        ops.event(
            &RawEvent {
                kind: POSITIONS,
                entity: ctx.entity.ipa_code,
                subject: &ctx.correlation,
                payload: &payload,
                correlation: Some(&ctx.correlation),
            },
            ctx.ts,
        )?;
    }
    Ok(())
}

/// The events a stored row tells: itself, or for a [`POSITIONS`] row one `position.*` event
/// per position, numbered by `part` from 1, in row order.
pub(crate) fn expand(row: Event, out: &mut Vec<Event>) {
    if row.kind != POSITIONS {
        out.push(row);
        return;
    }
    #[derive(serde::Deserialize)]
    struct Chunk {
        flow_id: i64,
        positions: Vec<Compact>,
    }
    let Ok(chunk) = <Chunk as serde::Deserialize>::deserialize(&row.payload) else {
        // Unreadable: shown as stored rather than dropped, so nothing disappears silently.
        out.push(row);
        return;
    };
    for (k, c) in chunk.positions.into_iter().enumerate() {
        out.push(Event {
            id: row.id,
            part: k as u32 + 1,
            kind: c.kind.kind().to_string(),
            entity: row.entity.clone(),
            subject: c.iud.clone(),
            payload: c.payload(chunk.flow_id),
            at: row.at.clone(),
            correlation: row.correlation.clone(),
        });
    }
}

fn insert_run(
    ops: &mut Ops<'_>,
    ctx: &mut Ctx<'_>,
    run: &[ChunkRow],
    outcomes: &mut Vec<RowOutcome>,
) -> Result<()> {
    let mut iuvs = Vec::with_capacity(run.len());
    for r in run {
        iuvs.push(match (&r.iuv, r.generate_iuv) {
            (Some(iuv), _) => (Some(iuv.clone()), false),
            (None, true) => {
                let n = ops.next_counter(ctx.entity)?;
                let iuv = Iuv::generate(ctx.entity.segregation_code, n)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                (Some(iuv), true)
            }
            (None, false) => (None, false),
        });
    }
    let batch: Vec<NewPosition<'_>> = run
        .iter()
        .zip(&iuvs)
        .map(|(r, (iuv, generated))| NewPosition {
            entity: ctx.entity.ipa_code,
            row: r,
            iuv: iuv.as_ref().map(|i| i.as_str()),
            generated: *generated,
            flow_id: ctx.flow_id,
            source: &ctx.source,
            ts: ctx.ts,
        })
        .collect();
    let ids = ops.c.insert_positions(&batch)?;
    // Where in the run each IUD went in: a refused row is told what it met in row order,
    // not what the whole run left behind.
    let mut went_in: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (k, (r, id)) in run.iter().zip(&ids).enumerate() {
        if id.is_some() {
            went_in.insert(r.iud.as_str(), k);
        }
    }
    for (k, ((r, (iuv, generated)), id)) in run.iter().zip(iuvs).zip(ids).enumerate() {
        let Some(id) = id else {
            let iud_taken = match went_in.get(r.iud.as_str()) {
                Some(&j) => j < k,
                None => ops.live(ctx.entity.ipa_code, &r.iud)?.is_some(),
            };
            let refusal = if iud_taken {
                reject(
                    RejectCode::IudDuplicato,
                    format!("IUD {} already has a live position", r.iud),
                )
            } else {
                reject(
                    RejectCode::IuvDuplicato,
                    format!(
                        "IUV {} already belongs to a live position",
                        iuv.as_ref().map(|i| i.as_str()).unwrap_or("")
                    ),
                )
            };
            outcomes.push(refusal);
            continue;
        };
        let outcome = RowOutcome::Accepted {
            position_id: id,
            notice_number: iuv.as_ref().and_then(|i| i.notice_number()),
            iuv,
            generated,
        };
        let change = Change {
            kind: PositionChange::Created,
            amount_cents: r.amount.cents(),
            debt_type: r.debt_type.clone(),
        };
        emit(ctx, r, &outcome, Some(change));
        outcomes.push(outcome);
    }
    Ok(())
}

/// The open (active or expired) position an `M` or `A` row acts on, or the row's refusal
/// (`PAA_IMPORT_DOVUTO_NON_PRESENTE`, as MyPay: none, paid, or being paid).
fn active(
    ops: &mut Ops<'_>,
    ctx: &Ctx<'_>,
    iud: &str,
    verb: &str,
) -> Result<std::result::Result<Live, RowOutcome>> {
    let open =
        |s: &str| s == PositionStatus::Active.as_str() || s == PositionStatus::Expired.as_str();
    Ok(match ops.live(ctx.entity.ipa_code, iud)? {
        None => Err(reject(
            RejectCode::DovutoNonPresente,
            format!("no live position with IUD {iud} to be {verb}"),
        )),
        Some(cur) if !open(&cur.status) => Err(reject(
            RejectCode::DovutoNonPresente,
            format!(
                "position with IUD {iud} is {} and cannot be {verb}",
                cur.status
            ),
        )),
        Some(cur) => match in_progress_until(ctx, cur.activated_at.as_deref()) {
            Some(until) => Err(reject(
                RejectCode::DovutoInPagamento,
                format!(
                    "position with IUD {iud} is being paid (the node activated its payment at {}) and cannot be {verb} before {until} unless the payment ends",
                    cur.activated_at.as_deref().unwrap_or_default()
                ),
            )),
            None => Ok(cur),
        },
    })
}

/// When the payment the node activated at `activated_at` stops counting as in progress, if it
/// still does at the chunk's instant.
fn in_progress_until(ctx: &Ctx<'_>, activated_at: Option<&str>) -> Option<String> {
    let activated = chrono::DateTime::parse_from_rfc3339(activated_at?).ok()?;
    let now = chrono::DateTime::parse_from_rfc3339(ctx.ts).ok()?;
    let until = activated + chrono::Duration::from_std(ctx.entity.payment_in_progress).ok()?;
    (until > now).then(|| {
        until
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

fn modify(ops: &mut Ops<'_>, ctx: &Ctx<'_>, d: &ChunkRow) -> Result<(RowOutcome, Option<Change>)> {
    let (flow_id, ts, source) = (ctx.flow_id, ctx.ts, ctx.source.as_str());
    let cur = match active(ops, ctx, &d.iud, "modified")? {
        Ok(cur) => cur,
        Err(refusal) => return Ok((refusal, None)),
    };
    if cur.debt_type != d.debt_type {
        return Ok((
            reject(
                RejectCode::TipoDovutoNonModificabile,
                format!(
                    "tipoDovuto cannot change from {} to {} on modify",
                    cur.debt_type, d.debt_type
                ),
            ),
            None,
        ));
    }
    let iuv = match (&d.iuv, &cur.iuv) {
        (Some(new), Some(old)) if new.as_str() != old => {
            return Ok((
                reject(
                    RejectCode::Iuv,
                    format!("IUV cannot change on modify (position has {old}, row has {new})"),
                ),
                None,
            ))
        }
        (Some(new), _) => Some(new.clone()),
        // A hub-generated IUV is kept when the row leaves it empty; an entity-supplied one
        // cannot be blanked (MyPay's PAA_IMPORT_IUV_NO_NULLABLE).
        (None, Some(old)) if cur.iuv_generated => Some(
            Iuv::parse(old)
                .map_err(|e| StoreError::Corrupt(format!("position {}: {e}", cur.id)))?,
        ),
        (None, Some(old)) => {
            return Ok((
                reject(
                    RejectCode::IuvNoNullable,
                    format!("the position's IUV {old} cannot be blanked"),
                ),
                None,
            ))
        }
        (None, None) => None,
    };
    let notice = iuv.as_ref().and_then(|i| i.notice_number());
    ops.modify_position(cur.id, iuv.as_ref().map(|i| i.as_str()), d, flow_id, ts)?;
    ops.history(
        cur.id,
        Action::Modify.as_str(),
        source,
        Some(flow_id),
        ts,
        Some(&cur.data),
    )?;
    Ok((
        RowOutcome::Accepted {
            position_id: cur.id,
            iuv,
            notice_number: notice,
            generated: false,
        },
        Some(Change {
            kind: PositionChange::Modified,
            amount_cents: d.amount.cents(),
            debt_type: d.debt_type.clone(),
        }),
    ))
}

fn annul(ops: &mut Ops<'_>, ctx: &Ctx<'_>, d: &ChunkRow) -> Result<(RowOutcome, Option<Change>)> {
    let (flow_id, ts, source) = (ctx.flow_id, ctx.ts, ctx.source.as_str());
    let cur = match active(ops, ctx, &d.iud, "annulled")? {
        Ok(cur) => cur,
        Err(refusal) => return Ok((refusal, None)),
    };
    ops.annul_position(cur.id, flow_id, ts)?;
    ops.history(
        cur.id,
        Action::Annul.as_str(),
        source,
        Some(flow_id),
        ts,
        None,
    )?;
    let iuv = cur.iuv.as_deref().and_then(|s| Iuv::parse(s).ok());
    // The event tells what was annulled: the stored amount, not the row's.
    Ok((
        RowOutcome::Accepted {
            position_id: cur.id,
            notice_number: iuv.as_ref().and_then(|i| i.notice_number()),
            iuv,
            generated: false,
        },
        Some(Change {
            kind: PositionChange::Annulled,
            amount_cents: cur.amount_cents,
            debt_type: cur.debt_type,
        }),
    ))
}

/// One receipt inside an open transaction: stored, its position paid when it matches, its
/// deliveries and events created.
pub(crate) fn store_receipt(
    ops: &mut Ops<'_>,
    r: &OwnedReceipt,
    ts: &str,
) -> Result<ReceiptStored> {
    if let Some(issuer) = &r.issuer {
        return store_secondary(ops, r, issuer, ts);
    }
    let iuv = r.notice_number.iuv();
    // The live position, else the latest annulled one; two lookups, each on its partial index.
    let target = match ops.receipt_target(&r.entity, iuv.as_str(), false)? {
        Some(live) => Some(live),
        None => ops.receipt_target(&r.entity, iuv.as_str(), true)?,
    };
    let (position, issue) = match &target {
        None => (None, Some(ReceiptIssue::UnknownNotice)),
        Some(t) if t.status == PositionStatus::Annulled.as_str() => {
            (Some(t.id), Some(ReceiptIssue::Annulled))
        }
        Some(t) if t.status == PositionStatus::Paid.as_str() => {
            (Some(t.id), Some(ReceiptIssue::AlreadyPaid))
        }
        Some(t) if t.amount_cents != r.amount_cents => (
            Some(t.id),
            Some(ReceiptIssue::AmountMismatch {
                expected_cents: t.amount_cents,
            }),
        ),
        Some(t) => (Some(t.id), None),
    };
    let debt_type = target.as_ref().and_then(|t| t.debt_type.as_deref());
    let Some(receipt) = ops.insert_receipt(
        r,
        iuv.as_str(),
        position,
        issue.as_ref().map(|i| i.as_str()),
        ts,
    )?
    else {
        return resent(ops, r, ts);
    };
    let source = format!("receipt:{}", r.receipt_id);
    let paid = match (&target, &issue) {
        (Some(t), None) => {
            ops.pay_position(t.id, ts)?;
            ops.history(t.id, "P", &source, None, ts, None)?;
            Some(t)
        }
        _ => None,
    };
    let mut counts = vec![(count::RECEIPTS, r.entity.as_str(), 1)];
    if issue.is_some() {
        counts.push((count::FLAGGED, r.entity.as_str(), 1));
    }
    let mut held = Vec::new();
    for to in r.deliver_to.iter().filter(|d| d.accepts(debt_type)) {
        // A format that cannot say what is wrong would hand the entity a normal payment.
        if issue.is_some() && to.holds_flagged {
            ops.hold_delivery(to, receipt, &r.receipt_id, ts)?;
            held.push(to.pipeline.as_str());
        } else {
            ops.insert_delivery(to, receipt, &r.receipt_id, ts)?;
            counts.push((count::DELIVERIES, to.pipeline.as_str(), 1));
        }
    }
    // Counted only here, past the duplicate check: a receipt the node sends again counts once.
    crate::events::add_counts(ops.c, counts)?;
    let mut payload = serde_json::json!({
        "receipt": receipt,
        "receipt_id": r.receipt_id,
        "notice_number": r.notice_number.as_str(),
        "position": position,
        "amount_cents": r.amount_cents,
        "issue": issue,
    });
    if let (false, Some(map)) = (held.is_empty(), payload.as_object_mut()) {
        map.insert("held".into(), held.into());
    }
    let touch = crate::Touch {
        iuv: Some(iuv.as_str()),
        ..crate::Touch::default()
    };
    crate::reconcile::mark(ops.c, &r.entity, &touch)?;
    ops.event(
        &RawEvent {
            kind: "receipt.stored",
            entity: &r.entity,
            subject: r.notice_number.as_str(),
            payload: &payload.to_string(),
            correlation: r.correlation.as_deref(),
        },
        ts,
    )?;
    if let Some(t) = paid {
        let payload = serde_json::json!({
            "iud": t.iud,
            "iuv": iuv.as_str(),
            "notice_number": r.notice_number.as_str(),
            "receipt_id": r.receipt_id,
            "amount_cents": r.amount_cents,
        });
        ops.event(
            &RawEvent {
                kind: "position.paid",
                entity: &r.entity,
                subject: &t.iud,
                payload: &payload.to_string(),
                correlation: r.correlation.as_deref(),
            },
            ts,
        )?;
    }
    Ok(match (position, issue) {
        (Some(position), None) => ReceiptStored::Paid { receipt, position },
        (_, Some(issue)) => ReceiptStored::Flagged { receipt, issue },
        (None, None) => ReceiptStored::Flagged {
            receipt,
            issue: ReceiptIssue::UnknownNotice,
        },
    })
}

/// A secondary beneficiary's receipt of another entity's notice: the notice number is the
/// issuer's, so no position of the entity is looked up (an equal IUV of its own is another
/// debt), nothing is paid or flagged, and no reconciliation mark is left.
fn store_secondary(
    ops: &mut Ops<'_>,
    r: &OwnedReceipt,
    issuer: &str,
    ts: &str,
) -> Result<ReceiptStored> {
    let iuv = r.notice_number.iuv();
    let Some(receipt) = ops.insert_receipt(r, iuv.as_str(), None, None, ts)? else {
        return resent(ops, r, ts);
    };
    let mut counts = vec![
        (count::RECEIPTS, r.entity.as_str(), 1),
        (count::SECONDARY, r.entity.as_str(), 1),
    ];
    let mut pipelines = Vec::new();
    for to in &r.deliver_to {
        ops.insert_delivery(to, receipt, &r.receipt_id, ts)?;
        counts.push((count::DELIVERIES, to.pipeline.as_str(), 1));
        pipelines.push(to.pipeline.as_str());
    }
    crate::events::add_counts(ops.c, counts)?;
    let payload = serde_json::json!({
        "receipt": receipt,
        "receipt_id": r.receipt_id,
        "notice_number": r.notice_number.as_str(),
        "issuer": issuer,
        "amount_cents": r.amount_cents,
        "pipelines": pipelines,
    });
    ops.event(
        &RawEvent {
            kind: "receipt.secondary",
            entity: &r.entity,
            subject: r.notice_number.as_str(),
            payload: &payload.to_string(),
            correlation: r.correlation.as_deref(),
        },
        ts,
    )?;
    Ok(ReceiptStored::Secondary { receipt })
}

/// A receipt id stored before: the same content again is a duplicate; other content is kept as
/// a conflicting copy of the first (unless this very content was kept already), flagged and
/// raised as `receipt.conflict`. The first copy stays the receipt: it alone pays and delivers.
fn resent(ops: &mut Ops<'_>, r: &OwnedReceipt, ts: &str) -> Result<ReceiptStored> {
    let copies = ops.receipt_copies(&r.entity, &r.receipt_id)?;
    let Some(first) = copies.first() else {
        // Skipped by a unique index yet not there: only a conflict the store cannot explain.
        return Err(StoreError::Conflict(format!(
            "receipt {} was neither stored nor found",
            r.receipt_id
        )));
    };
    if copies.iter().any(|c| c.same_as(r)) {
        return Ok(ReceiptStored::Duplicate);
    }
    let iuv = r.notice_number.iuv();
    let receipt = ops.insert_conflict(r, iuv.as_str(), first, ts)?;
    // A stored (and flagged) row like any other, so the totals still equal the rows.
    crate::events::add_counts(
        ops.c,
        vec![
            (count::RECEIPTS, r.entity.as_str(), 1),
            (count::FLAGGED, r.entity.as_str(), 1),
        ],
    )?;
    let payload = serde_json::json!({
        "receipt": receipt,
        "original": first.id,
        "receipt_id": r.receipt_id,
        "notice_number": r.notice_number.as_str(),
        "amount_cents": r.amount_cents,
        "original_amount_cents": first.amount_cents(),
    });
    ops.event(
        &RawEvent {
            kind: "receipt.conflict",
            entity: &r.entity,
            subject: r.notice_number.as_str(),
            payload: &payload.to_string(),
            correlation: r.correlation.as_deref(),
        },
        ts,
    )?;
    Ok(ReceiptStored::Conflict {
        receipt,
        original: first.id,
    })
}

/// The `flow.imported` / `flow.aborted` event of a status change, if it is one.
pub(crate) fn flow_status_event(
    status: FlowStatus,
    flow_id: i64,
    iuf: &str,
    accepted: i64,
    rejected: i64,
    error: Option<(&str, &str)>,
) -> Option<(&'static str, serde_json::Value)> {
    let kind = match status {
        FlowStatus::Eseguito => "flow.imported",
        FlowStatus::Abortito => "flow.aborted",
        _ => return None,
    };
    let mut payload = serde_json::json!({
        "flow_id": flow_id,
        "iuf": iuf,
        "accepted": accepted,
        "rejected": rejected,
    });
    if let (Some((code, message)), Some(map)) = (error, payload.as_object_mut()) {
        map.insert("error_code".into(), code.into());
        map.insert("error_message".into(), message.into());
    }
    Some((kind, payload))
}

/// The `delivery.retried` / `delivery.dead` event of an attempt, if it is one.
pub(crate) fn attempt_event(
    attempt: &Attempt,
    delivery: i64,
    pipeline: &str,
    attempts: i64,
) -> Option<(&'static str, serde_json::Value)> {
    match attempt {
        Attempt::Delivered => None,
        Attempt::Retry { at, error } => Some((
            "delivery.retried",
            serde_json::json!({
                "delivery": delivery,
                "pipeline": pipeline,
                "attempts": attempts,
                "error": error,
                "next_attempt_at": at,
            }),
        )),
        Attempt::Dead { error } => Some((
            "delivery.dead",
            serde_json::json!({
                "delivery": delivery,
                "pipeline": pipeline,
                "attempts": attempts,
                "error": error,
            }),
        )),
    }
}

/// The `payment.activated` event's payload.
pub(crate) fn activation_payload(
    iud: &str,
    iuv: Option<&str>,
    amount_cents: i64,
) -> (String, serde_json::Value) {
    let notice = iuv
        .and_then(|i| Iuv::parse(i).ok())
        .and_then(|i| i.notice_number())
        .map(|n| n.as_str().to_string());
    let payload = serde_json::json!({
        "iud": iud,
        "iuv": iuv,
        "notice_number": notice,
        "amount_cents": amount_cents,
    });
    (notice.unwrap_or_default(), payload)
}

/// The flow's `flow.received` event.
pub(crate) fn flow_received(flow: &Flow) -> serde_json::Value {
    serde_json::json!({
        "flow_id": flow.id,
        "iuf": flow.iuf,
        "file_name": flow.file_name,
    })
}

/// When a released lease ended: before any real `now`.
pub(crate) const EPOCH: &str = "1970-01-01T00:00:00.000Z";

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `expect_rows_done` guard of a chunk: another process's chunk committed first.
pub(crate) fn check_rows_done(flow_id: i64, done: Option<i64>, expected: u64) -> Result<()> {
    match done {
        None => Err(StoreError::Conflict(format!(
            "flow {flow_id} does not exist"
        ))),
        Some(d) if d as u64 != expected => Err(StoreError::Conflict(format!(
            "flow {flow_id} has {d} rows done, not the {expected} this chunk continues from"
        ))),
        Some(_) => Ok(()),
    }
}

/// An argument of a statement built at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

impl<'a> From<&'a Param> for Arg<'a> {
    fn from(p: &'a Param) -> Self {
        match p {
            Param::Text(s) => Arg::Text(s),
            Param::Int(i) => Arg::Int(*i),
        }
    }
}

/// The `list_positions` statement over a backend's position columns (rows as `p`), with `$N`
/// placeholders, and its arguments; `None` when the filter can match nothing. Only the filters
/// given become conditions, so each combination gets the plan that suits it.
pub(crate) fn list_positions_query(
    columns: &str,
    entity: &str,
    f: &PositionFilter<'_>,
    after_id: i64,
    limit: u32,
) -> Option<(String, Vec<Param>)> {
    // Positions only show aux 3 notices ("3" + IUV), so only those can match one.
    let notice_iuv = match f.notice_number {
        None => None,
        Some(n) => match NoticeNumber::parse(n) {
            Ok(n) if n.aux_digit() == 3 => Some(n.iuv().as_str().to_string()),
            _ => return None,
        },
    };
    let iuv = match (f.iuv, notice_iuv) {
        (Some(a), Some(b)) if a != b => return None,
        (Some(a), _) => Some(a.to_string()),
        (None, b) => b,
    };
    let mut args = vec![Param::Text(entity.into()), Param::Int(after_id)];
    let from = match iuv {
        // An IUV names one live position and maybe a few annulled ones: each half is read on
        // its partial index instead of walking the entity's positions.
        Some(iuv) => {
            args.push(Param::Text(iuv));
            "(SELECT * FROM positions WHERE entity = $1 AND iuv = $3 AND status <> 'annulled'
              UNION ALL
              SELECT * FROM positions WHERE entity = $1 AND iuv = $3 AND status = 'annulled') p"
        }
        None => "positions p",
    };
    let mut sql = format!("SELECT {columns} FROM {from} WHERE p.entity = $1 AND p.id > $2");
    let due = |d: Option<chrono::NaiveDate>| d.map(|d| Param::Text(d.to_string()));
    // A NULL due date compares as unknown, so a due range leaves undated positions out.
    let conditions = [
        (
            "p.status =",
            f.status.map(|s| Param::Text(s.as_str().into())),
        ),
        ("p.debt_type =", f.debt_type.map(|d| Param::Text(d.into()))),
        ("p.due_date >=", due(f.due_from)),
        ("p.due_date <=", due(f.due_to)),
        ("p.flow_id =", f.flow_id.map(Param::Int)),
        ("p.payer_id =", f.payer_id.map(|d| Param::Text(d.into()))),
        (
            "p.created_at >=",
            f.created_from.map(|d| Param::Text(d.into())),
        ),
        (
            "p.created_at <",
            f.created_before.map(|d| Param::Text(d.into())),
        ),
    ];
    for (condition, arg) in conditions {
        if let Some(arg) = arg {
            args.push(arg);
            sql.push_str(&format!(" AND {condition} ${}", args.len()));
        }
    }
    args.push(Param::Int(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY p.id LIMIT ${}", args.len()));
    Some((sql, args))
}

/// A kept response's status as stored.
pub(crate) fn http_status(stored: i64) -> Result<u16> {
    u16::try_from(stored)
        .map_err(|_| StoreError::Corrupt(format!("kept response with status {stored}")))
}

/// A cart's notice numbers as stored: a JSON array.
pub(crate) fn cart_notices_text(notices: &[String]) -> Result<String> {
    serde_json::to_string(notices).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn cart_notices(id: &str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("cart {id}: notice numbers: {e}")))
}

/// The `cart.opened` event of a new cart.
pub(crate) fn cart_opened<'a>(cart: &'a NewCart<'a>) -> NewEvent<'a> {
    NewEvent {
        kind: "cart.opened",
        entity: cart.entity,
        subject: cart.id,
        payload: serde_json::json!({ "notices": cart.notice_numbers }),
        correlation: None,
    }
}
