//! The treasury's incoming movements (the treasurer's giornale di cassa), per entity and
//! (year, bill): what actually reached the entity's account, for reconciliation.
//!
//! A file's movements are applied in one transaction, so a file is applied whole or not at
//! all; applying it again changes nothing (each movement is compared with the one its key
//! holds), and a reversal removes its movement.

use crate::db::{args, Conn, Driver, Row};
use crate::ops::now;
use crate::*;

pub trait TreasuryStore {
    /// Applies `movements` of `entity` (from `source`, a file name or `api`) in one transaction
    /// and records a `treasury.received` event with the counts.
    fn apply_movements(
        &self,
        entity: &str,
        source: &str,
        movements: &[NewMovement<'_>],
    ) -> Result<MovementCounts>;

    /// The entity's movements, the latest received first.
    fn movements(&self, entity: &str, limit: u32) -> Result<Vec<StoredMovement>>;

    /// The entity's movement with this key, if held.
    fn movement(&self, entity: &str, year: i64, bill: &str) -> Result<Option<StoredMovement>>;
}

/// A movement as decoded; `reversed` removes the movement with its key.
#[derive(Debug, Clone)]
pub struct NewMovement<'a> {
    pub year: i64,
    pub bill: &'a str,
    pub amount_cents: i64,
    pub accounting_date: Option<&'a str>,
    pub value_date: Option<&'a str>,
    pub causale: &'a str,
    pub payer: Option<&'a str>,
    pub end_to_end_id: Option<&'a str>,
    pub iuf: Option<&'a str>,
    pub iuv: Option<&'a str>,
    pub reversed: bool,
}

/// What applying a file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MovementCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
    /// Reversals of movements the hub never held.
    pub not_found: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMovement {
    pub id: i64,
    pub entity: String,
    pub year: i64,
    pub bill: String,
    pub amount_cents: i64,
    pub accounting_date: Option<String>,
    pub value_date: Option<String>,
    pub causale: String,
    pub payer: Option<String>,
    pub end_to_end_id: Option<String>,
    pub iuf: Option<String>,
    pub iuv: Option<String>,
    pub source: String,
    pub received_at: String,
    pub updated_at: String,
}

pub(crate) const COLUMNS: &str =
    "id, entity, year, bill, amount_cents, accounting_date, value_date, causale,
    payer, end_to_end_id, iuf, iuv, source, received_at, updated_at";

pub(crate) fn movement_from(r: &dyn Row) -> Result<StoredMovement> {
    Ok(StoredMovement {
        id: r.get(0)?,
        entity: r.get(1)?,
        year: r.get(2)?,
        bill: r.get(3)?,
        amount_cents: r.get(4)?,
        accounting_date: r.get(5)?,
        value_date: r.get(6)?,
        causale: r.get(7)?,
        payer: r.get(8)?,
        end_to_end_id: r.get(9)?,
        iuf: r.get(10)?,
        iuv: r.get(11)?,
        source: r.get(12)?,
        received_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

/// Whether the stored movement says what `m` says (its source and times aside).
fn same(s: &StoredMovement, m: &NewMovement<'_>) -> bool {
    s.amount_cents == m.amount_cents
        && s.accounting_date.as_deref() == m.accounting_date
        && s.value_date.as_deref() == m.value_date
        && s.causale == m.causale
        && s.payer.as_deref() == m.payer
        && s.end_to_end_id.as_deref() == m.end_to_end_id
        && s.iuf.as_deref() == m.iuf
        && s.iuv.as_deref() == m.iuv
}

fn apply_one(
    c: &mut dyn Conn,
    entity: &str,
    source: &str,
    m: &NewMovement<'_>,
    ts: &str,
    counts: &mut MovementCounts,
) -> Result<()> {
    let sql = format!(
        "SELECT {COLUMNS} FROM treasury_movements WHERE entity = $1 AND year = $2 AND bill = $3"
    );
    let held = c.one(&sql, args!(entity, m.year, m.bill), movement_from)?;
    match (held, m.reversed) {
        (None, true) => counts.not_found += 1,
        (Some(h), true) => {
            c.execute("DELETE FROM treasury_movements WHERE id = $1", args!(h.id))?;
            touched(c, entity, &h.iuf, &h.iuv, m)?;
            counts.removed += 1;
        }
        (Some(h), false) if same(&h, m) => counts.unchanged += 1,
        (Some(h), false) => {
            c.execute(
                "UPDATE treasury_movements SET amount_cents = $2, accounting_date = $3,
                    value_date = $4, causale = $5, payer = $6, end_to_end_id = $7, iuf = $8,
                    iuv = $9, source = $10, updated_at = $11 WHERE id = $1",
                args!(
                    h.id,
                    m.amount_cents,
                    m.accounting_date,
                    m.value_date,
                    m.causale,
                    m.payer,
                    m.end_to_end_id,
                    m.iuf,
                    m.iuv,
                    source,
                    ts
                ),
            )?;
            touched(c, entity, &h.iuf, &h.iuv, m)?;
            counts.updated += 1;
        }
        (None, false) => {
            c.execute(
                "INSERT INTO treasury_movements (entity, year, bill, amount_cents, accounting_date,
                    value_date, causale, payer, end_to_end_id, iuf, iuv, source, received_at,
                    updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
                args!(
                    entity,
                    m.year,
                    m.bill,
                    m.amount_cents,
                    m.accounting_date,
                    m.value_date,
                    m.causale,
                    m.payer,
                    m.end_to_end_id,
                    m.iuf,
                    m.iuv,
                    source,
                    ts
                ),
            )?;
            touched(c, entity, &None, &None, m)?;
            counts.inserted += 1;
        }
    }
    Ok(())
}

/// Marks what a changed movement touches for the reconciler: itself, and the flows and
/// payments it named before and names now.
fn touched(
    c: &mut dyn Conn,
    entity: &str,
    old_iuf: &Option<String>,
    old_iuv: &Option<String>,
    m: &NewMovement<'_>,
) -> Result<()> {
    let key = format!("{}-{}", m.year, m.bill);
    crate::reconcile::mark(
        c,
        entity,
        &Touch {
            iuv: m.iuv,
            iuf: m.iuf,
            movement: Some(&key),
        },
    )?;
    let named = old_iuf.is_some() || old_iuv.is_some();
    if named && (old_iuf.as_deref(), old_iuv.as_deref()) != (m.iuf, m.iuv) {
        let old = Touch {
            iuv: old_iuv.as_deref(),
            iuf: old_iuf.as_deref(),
            movement: None,
        };
        crate::reconcile::mark(c, entity, &old)?;
    }
    Ok(())
}

impl<D: Driver> TreasuryStore for D {
    fn apply_movements(
        &self,
        entity: &str,
        source: &str,
        movements: &[NewMovement<'_>],
    ) -> Result<MovementCounts> {
        let ts = now();
        self.tx(|c| {
            // Two hubs applying files of one entity take turns: the key check above is then
            // what the other committed.
            c.lock(&format!("treasury:{entity}"))?;
            let mut counts = MovementCounts::default();
            for m in movements {
                apply_one(c, entity, source, m, &ts, &mut counts)?;
            }
            c.new_event(
                &NewEvent {
                    kind: "treasury.received",
                    entity,
                    subject: source,
                    payload: serde_json::json!({ "source": source, "counts": counts }),
                    correlation: None,
                },
                &ts,
            )?;
            Ok(counts)
        })
    }

    fn movement(&self, entity: &str, year: i64, bill: &str) -> Result<Option<StoredMovement>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM treasury_movements WHERE entity = $1 AND year = $2 AND bill = $3"
        );
        self.read(|c| c.one(&sql, args!(entity, year, bill), movement_from))
    }

    fn movements(&self, entity: &str, limit: u32) -> Result<Vec<StoredMovement>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM treasury_movements WHERE entity = $1 ORDER BY updated_at DESC, id DESC LIMIT $2"
        );
        self.read(|c| c.all(&sql, args!(entity, limit), movement_from))
    }
}
