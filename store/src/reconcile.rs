//! Reconciliation labels kept as things arrive (docs/RECONCILIATION.md).
//!
//! Whatever stores a receipt, a settlement flow, a treasury movement or a notification also
//! leaves a mark ([`mark`]) in its own transaction. The reconciler reads the marks, and in one
//! transaction per entity (holding the entity's lock, so two hubs never write labels from stale
//! reads) gathers the facts of the payments and movements they touch, writes the labels that
//! changed with a `reconciliation.changed` event each, keeps the per-class counts, and deletes
//! the marks. The rules live in `snodo_core::reconcile`; this module only reads and writes.

use crate::db::{args, Arg, Conn, Driver, Row};
use crate::ops::now;
use crate::treasury::COLUMNS;
use crate::*;

/// What a stored thing touched: a payment's IUV, a flow's IUF, a movement's `<year>-<bill>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touch<'a> {
    pub iuv: Option<&'a str>,
    pub iuf: Option<&'a str>,
    pub movement: Option<&'a str>,
}

/// Leaves a mark for the reconciler, in the caller's transaction.
pub(crate) fn mark(c: &mut dyn Conn, entity: &str, t: &Touch<'_>) -> Result<()> {
    c.execute(
        "INSERT INTO recon_dirty (entity, iuv, iuf, movement) VALUES ($1, $2, $3, $4)",
        args!(entity, t.iuv, t.iuf, t.movement),
    )
    .map(drop)
}

/// A mark left by a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyMark {
    pub id: i64,
    pub entity: String,
    pub iuv: Option<String>,
    pub iuf: Option<String>,
    pub movement: Option<String>,
}

/// Which payments a read covers: IUVs in `(after, upto]` (a rebuild's chunk; `None` is open),
/// or these IUVs.
#[derive(Debug, Clone, Copy)]
pub enum IuvSelect<'a> {
    Range {
        after: Option<&'a str>,
        upto: Option<&'a str>,
    },
    Set(&'a [String]),
}

/// A settlement row of a current flow (ok, not superseded), esito 3 left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactRow {
    pub iuv: String,
    pub iur: String,
    pub index: i64,
    pub amount_cents: i64,
    pub esito: i64,
    pub flow_id: i64,
    pub iuf: String,
    /// The flow's declared total, or the sum of its rows when it declares none.
    pub flow_total_cents: i64,
    pub flow_date: Option<String>,
    /// The receipt the row was linked to when the flow was stored (any entity's: a secondary
    /// beneficiary's row links to the notice entity's receipt), and that receipt's transfer.
    pub receipt: Option<i64>,
    pub receipt_transfer: Option<i64>,
}

/// A notification of the entity (MyPivot's "import pagati"), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredNotification {
    pub iud: String,
    pub iuv: String,
    pub amount_cents: i64,
    /// The record as decoded, JSON.
    pub body: String,
    pub source: String,
    pub received_at: String,
}

/// A notification to store; a later one with the same IUD replaces it.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub iud: &'a str,
    pub iuv: &'a str,
    pub amount_cents: i64,
    pub body: &'a str,
}

/// A movement with what decides its own classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactMovement {
    /// `<year>-<bill>`.
    pub key: String,
    pub movement: StoredMovement,
    /// A current flow of the entity has its IUF.
    pub flow_known: bool,
    /// A receipt, settlement row or notification of the entity has its IUV.
    pub iuv_known: bool,
}

/// An item's labels as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredItem {
    pub key: String,
    pub kind: String,
    pub iuv: Option<String>,
    pub classes: Vec<String>,
    /// The item as JSON.
    pub body: String,
    pub due_at: Option<String>,
    pub updated_at: String,
    /// The relabelling that wrote it (grows per entity).
    pub seq: i64,
}

/// An item's labels as just computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub key: String,
    pub kind: &'static str,
    pub iuv: Option<String>,
    pub classes: Vec<&'static str>,
    pub body: String,
    pub due_at: Option<String>,
}

/// What a relabel wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LabelCounts {
    /// Items whose label set changed (one `reconciliation.changed` event each, unless quiet).
    pub changed: u64,
    /// Items written (new or changed in any way).
    pub written: u64,
    pub removed: u64,
}

/// One transaction on one entity's reconciliation, its lock held.
pub struct ReconTx<'c> {
    c: &'c mut dyn Conn,
    entity: &'c str,
    ts: String,
    /// This transaction's `seq`, taken at its first write.
    seq: Option<i64>,
    /// A rebuild writes no event per item (one `reconciliation.rebuilt` at the end instead).
    pub quiet: bool,
}

fn item_from(r: &dyn Row) -> Result<StoredItem> {
    let classes: String = r.get(3)?;
    Ok(StoredItem {
        key: r.get(0)?,
        kind: r.get(1)?,
        iuv: r.get(2)?,
        classes: split(&classes),
        body: r.get(4)?,
        due_at: r.get(5)?,
        updated_at: r.get(6)?,
        seq: r.get(7)?,
    })
}

fn split(classes: &str) -> Vec<String> {
    classes
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

const ITEM_COLUMNS: &str = "key, kind, iuv, classes, body, due_at, updated_at, seq";

/// `col` within the selection, from `$first` on; the values to bind after it.
fn range_condition(col: &str, after: Option<&str>, upto: Option<&str>, first: usize) -> String {
    let mut out = String::from("1 = 1");
    let mut n = first;
    if after.is_some() {
        out.push_str(&format!(" AND {col} > ${n}"));
        n += 1;
    }
    if upto.is_some() {
        out.push_str(&format!(" AND {col} <= ${n}"));
    }
    out
}

impl<'c> ReconTx<'c> {
    pub fn entity(&self) -> &str {
        self.entity
    }

    /// Runs `sql` (whose `$2` is an IUV, or `$2`/`$3` the range's bounds) once per IUV or once
    /// for the range; `$1` is the entity.
    fn select<T>(
        &mut self,
        sql_eq: &str,
        sql_range: impl Fn(&str) -> String,
        col: &str,
        sel: IuvSelect<'_>,
        f: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let entity = self.entity;
        match sel {
            IuvSelect::Set(iuvs) => {
                let mut out = Vec::new();
                for iuv in iuvs {
                    out.extend(self.c.all(sql_eq, args!(entity, iuv.as_str()), &f)?);
                }
                Ok(out)
            }
            IuvSelect::Range { after, upto } => {
                let sql = sql_range(&range_condition(col, after, upto, 2));
                let mut a: Vec<Arg<'_>> = vec![Arg::Text(entity)];
                a.extend(after.map(Arg::Text));
                a.extend(upto.map(Arg::Text));
                self.c.all(&sql, &a, &f)
            }
        }
    }

    /// The entity's receipts with these IUVs (conflicting copies and secondary beneficiaries'
    /// receipts of other entities' notices left out), by IUV then id.
    pub fn receipts(&mut self, sel: IuvSelect<'_>) -> Result<Vec<ReceiptDocument>> {
        let eq = crate::receipts::parsed_documents_where(
            // `+ 0`: sorting a notice's few receipts beats walking the entity's by id.
            "WHERE r.entity = $1 AND r.iuv = $2 AND r.conflict_of IS NULL AND r.issuer IS NULL ORDER BY r.id + 0",
        );
        self.select(
            &eq,
            |cond| {
                crate::receipts::parsed_documents_where(&format!(
                    "WHERE r.entity = $1 AND {} AND r.conflict_of IS NULL AND r.issuer IS NULL ORDER BY r.iuv, r.id",
                    cond
                ))
            },
            "r.iuv",
            sel,
            crate::receipts::document_from,
        )
    }

    /// The receipt with this store id (any entity's).
    pub fn receipt_document(&mut self, id: i64) -> Result<Option<ReceiptDocument>> {
        let sql = crate::receipts::parsed_documents_where("WHERE r.id = $1");
        self.c.one(&sql, args!(id), crate::receipts::document_from)
    }

    /// The current settlement rows with these IUVs (esito 3 left out), with their flows.
    pub fn rows(&mut self, sel: IuvSelect<'_>) -> Result<Vec<FactRow>> {
        let base = |cond: &str| {
            format!(
                "SELECT p.iuv, p.iur, p.link_index, p.amount_cents, p.esito, f.id, f.iuf,
                    COALESCE(f.declared_cents, f.computed_cents), f.flow_date, p.receipt,
                    p.receipt_transfer
                 FROM report_payments p JOIN report_flows f ON f.id = p.flow
                 WHERE p.entity = $1 AND {cond} AND p.esito <> 3 AND f.status = 'ok'
                   AND f.superseded_by IS NULL ORDER BY p.iuv, f.id, p.row_no"
            )
        };
        let eq = base("p.iuv = $2");
        self.select(&eq, base, "p.iuv", sel, |r| {
            Ok(FactRow {
                iuv: r.get(0)?,
                iur: r.get(1)?,
                index: r.get(2)?,
                amount_cents: r.get(3)?,
                esito: r.get(4)?,
                flow_id: r.get(5)?,
                iuf: r.get(6)?,
                flow_total_cents: r.get(7)?,
                flow_date: r.get(8)?,
                receipt: r.get(9)?,
                receipt_transfer: r.get(10)?,
            })
        })
    }

    /// The sum credited per IUV by movements naming it.
    pub fn credits_by_iuv(&mut self, sel: IuvSelect<'_>) -> Result<Vec<(String, i64)>> {
        let base = |cond: &str| {
            format!(
                "SELECT iuv, CAST(SUM(amount_cents) AS BIGINT) FROM treasury_movements
                 WHERE entity = $1 AND iuv IS NOT NULL AND {cond} GROUP BY iuv ORDER BY iuv"
            )
        };
        let eq = base("iuv = $2");
        self.select(&eq, base, "iuv", sel, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// The sum credited per IUF by movements naming it: these IUFs, or all of them.
    pub fn credits_by_iuf(&mut self, iufs: Option<&[String]>) -> Result<Vec<(String, i64)>> {
        let entity = self.entity;
        let all = "SELECT iuf, CAST(SUM(amount_cents) AS BIGINT) FROM treasury_movements
                   WHERE entity = $1 AND iuf IS NOT NULL GROUP BY iuf";
        let one = "SELECT iuf, CAST(SUM(amount_cents) AS BIGINT) FROM treasury_movements
                   WHERE entity = $1 AND iuf = $2 GROUP BY iuf";
        let pair = |r: &dyn Row| Ok((r.get(0)?, r.get(1)?));
        match iufs {
            None => self.c.all(all, args!(entity), pair),
            Some(list) => {
                let mut out = Vec::new();
                for iuf in list {
                    out.extend(self.c.all(one, args!(entity, iuf.as_str()), pair)?);
                }
                Ok(out)
            }
        }
    }

    /// The entity's notifications with these IUVs.
    pub fn notifications(&mut self, sel: IuvSelect<'_>) -> Result<Vec<StoredNotification>> {
        let base = |cond: &str| {
            format!(
                "SELECT iud, iuv, amount_cents, body, source, received_at FROM recon_notifications
                 WHERE entity = $1 AND {cond} ORDER BY iuv, iud"
            )
        };
        let eq = base("iuv = $2");
        self.select(&eq, base, "iuv", sel, notification_from)
    }

    /// The stored payment and notification items with these IUVs. (`key || ''` keeps SQLite on
    /// the IUV index: ordering by the primary key would walk all the entity's items.)
    pub fn payment_items(&mut self, sel: IuvSelect<'_>) -> Result<Vec<StoredItem>> {
        let base = |cond: &str| {
            format!(
                "SELECT {ITEM_COLUMNS} FROM recon_items
                 WHERE entity = $1 AND {cond} AND kind <> 'movement' ORDER BY key || ''"
            )
        };
        let eq = base("iuv = $2");
        self.select(&eq, base, "iuv", sel, item_from)
    }

    /// Movements by key (`<year>-<bill>`), or the next `limit` after `after` in key order.
    pub fn movements(&mut self, sel: MovementSelect<'_>) -> Result<Vec<FactMovement>> {
        let entity = self.entity;
        let facts = "EXISTS (SELECT 1 FROM report_flows f WHERE f.entity = m.entity
                        AND f.iuf = m.iuf AND f.status = 'ok' AND f.superseded_by IS NULL),
                     (EXISTS (SELECT 1 FROM receipts r WHERE r.entity = m.entity AND r.iuv = m.iuv
                              AND r.issuer IS NULL)
                      OR EXISTS (SELECT 1 FROM report_payments p JOIN report_flows f
                         ON f.id = p.flow WHERE p.entity = m.entity AND p.iuv = m.iuv
                         AND p.esito <> 3 AND f.status = 'ok' AND f.superseded_by IS NULL)
                      OR EXISTS (SELECT 1 FROM recon_notifications n WHERE n.entity = m.entity
                         AND n.iuv = m.iuv))";
        let from = |r: &dyn Row| {
            let movement = crate::treasury::movement_from(r)?;
            Ok(FactMovement {
                key: format!("{}-{}", movement.year, movement.bill),
                movement,
                flow_known: r.flag(15)?,
                iuv_known: r.flag(16)?,
            })
        };
        match sel {
            MovementSelect::Keys(keys) => {
                let sql = format!(
                    "SELECT {COLUMNS}, {facts} FROM treasury_movements m
                     WHERE m.entity = $1 AND m.year = $2 AND m.bill = $3"
                );
                let mut out = Vec::new();
                for key in keys {
                    let Some((year, bill)) = split_movement_key(key) else {
                        continue;
                    };
                    out.extend(self.c.all(&sql, args!(entity, year, bill), from)?);
                }
                Ok(out)
            }
            MovementSelect::After { after, limit } => {
                let (year, bill) = after.and_then(split_movement_key).unwrap_or((i64::MIN, ""));
                let sql = format!(
                    "SELECT {COLUMNS}, {facts} FROM treasury_movements m
                     WHERE m.entity = $1 AND (m.year > $2 OR (m.year = $2 AND m.bill > $3))
                     ORDER BY m.year, m.bill LIMIT $4"
                );
                self.c
                    .all(&sql, args!(entity, year, bill, i64::from(limit)), from)
            }
        }
    }

    /// The stored movement items: these keys, or those in `(after, upto]` of the key order.
    pub fn movement_items(&mut self, keys: &[String]) -> Result<Vec<StoredItem>> {
        let entity = self.entity;
        let sql = format!("SELECT {ITEM_COLUMNS} FROM recon_items WHERE entity = $1 AND key = $2");
        let mut out = Vec::new();
        for key in keys {
            let k = format!("M:{key}");
            out.extend(self.c.all(&sql, args!(entity, k.as_str()), item_from)?);
        }
        Ok(out)
    }

    /// The stored movement items in `(after, upto]` of key order (`M:<year>-<bill>`), or past
    /// `after` when `upto` is `None`.
    pub fn movement_items_range(
        &mut self,
        after: Option<&str>,
        upto: Option<&str>,
    ) -> Result<Vec<StoredItem>> {
        let cond = range_condition("key", after, upto, 2);
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM recon_items WHERE entity = $1 AND kind = 'movement'
             AND {cond} ORDER BY key"
        );
        let mut a: Vec<Arg<'_>> = vec![Arg::Text(self.entity)];
        a.extend(after.map(Arg::Text));
        a.extend(upto.map(Arg::Text));
        self.c.all(&sql, &a, item_from)
    }

    /// IUVs of the rows of every flow (any PSP, revision or status) with this IUF.
    pub fn iuvs_of_iuf(&mut self, iuf: &str) -> Result<Vec<String>> {
        self.c.all(
            "SELECT DISTINCT p.iuv FROM report_payments p JOIN report_flows f ON f.id = p.flow
             WHERE f.entity = $1 AND f.iuf = $2",
            args!(self.entity, iuf),
            |r| r.get(0),
        )
    }

    /// Keys (`<year>-<bill>`) of the movements naming this IUF, or this IUV.
    pub fn movements_naming(
        &mut self,
        iuf: Option<&str>,
        iuv: Option<&str>,
    ) -> Result<Vec<String>> {
        let key = |r: &dyn Row| Ok(format!("{}-{}", r.get::<i64>(0)?, r.get::<String>(1)?));
        let mut out = Vec::new();
        for (col, value) in [("iuf", iuf), ("iuv", iuv)] {
            let Some(value) = value else { continue };
            let sql = format!(
                "SELECT year, bill FROM treasury_movements WHERE entity = $1 AND {col} = $2"
            );
            out.extend(self.c.all(&sql, args!(self.entity, value), key)?);
        }
        Ok(out)
    }

    /// The `n`-th distinct IUV of the entity's receipts after `after` (a rebuild chunk's upper
    /// bound), or `None` when fewer remain. Chunks are contiguous ranges, so settlement rows and
    /// notifications of other IUVs fall in one of them (the last is open-ended).
    pub fn iuv_bound(&mut self, after: Option<&str>, n: u32) -> Result<Option<String>> {
        let entity = self.entity;
        let offset = i64::from(n.max(1)) - 1;
        let (cond, a): (&str, Vec<Arg<'_>>) = match after {
            Some(a) => (
                "AND iuv > $2",
                vec![Arg::Text(entity), Arg::Text(a), Arg::Int(offset)],
            ),
            None => ("", vec![Arg::Text(entity), Arg::Int(offset)]),
        };
        let at = a.len();
        // One statement on the index, so it stops at the bound: a sorted subquery of every IUV
        // left made a rebuild's chunks quadratic (the 1 000 000-receipt benchmark).
        let sql = format!(
            "SELECT DISTINCT iuv FROM receipts WHERE entity = $1 {cond}
             ORDER BY iuv LIMIT 1 OFFSET ${at}"
        );
        self.c.one(&sql, &a, |r| r.get(0))
    }

    /// Writes `items` where their stored form differs, removes the stored items in `stale`
    /// not among them, keeps the per-class rows and counts, records a `reconciliation.changed`
    /// event for each label set that changed (unless quiet).
    pub fn write(&mut self, items: &[NewItem], stale: &[StoredItem]) -> Result<LabelCounts> {
        let mut counts = LabelCounts::default();
        let mut deltas: Vec<(String, i64)> = Vec::new();
        let entity = self.entity;
        let old: std::collections::HashMap<&str, &StoredItem> =
            stale.iter().map(|s| (s.key.as_str(), s)).collect();
        let mut kept: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for item in items {
            kept.insert(item.key.as_str());
            let before = old.get(item.key.as_str());
            let classes = item.classes.join(",");
            let same_labels = before.is_some_and(|b| {
                b.classes
                    .iter()
                    .map(String::as_str)
                    .eq(item.classes.iter().copied())
            });
            if before.is_some_and(|b| {
                same_labels && b.body == item.body && b.due_at == item.due_at && b.iuv == item.iuv
            }) {
                continue;
            }
            let seq = self.seq()?;
            self.c.execute(
                "INSERT INTO recon_items
                   (entity, key, kind, iuv, classes, body, due_at, seq, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8)
                 ON CONFLICT (entity, key) DO UPDATE SET kind = excluded.kind, iuv = excluded.iuv,
                   classes = excluded.classes, body = excluded.body, due_at = excluded.due_at,
                   seq = excluded.seq, updated_at = excluded.updated_at",
                args!(
                    entity,
                    item.key.as_str(),
                    item.kind,
                    item.iuv.as_deref(),
                    classes.as_str(),
                    item.body.as_str(),
                    item.due_at.as_deref(),
                    self.ts.as_str(),
                    seq
                ),
            )?;
            counts.written += 1;
            if before.is_none() {
                deltas.push((format!("{KIND_COUNT}{}", item.kind), 1));
            }
            if same_labels {
                continue;
            }
            let was: Vec<&str> = before
                .map(|b| b.classes.iter().map(String::as_str).collect())
                .unwrap_or_default();
            self.relabel(&item.key, &was, &item.classes, &mut deltas)?;
            counts.changed += 1;
        }
        for s in stale.iter().filter(|s| !kept.contains(s.key.as_str())) {
            self.c.execute(
                "DELETE FROM recon_items WHERE entity = $1 AND key = $2",
                args!(entity, s.key.as_str()),
            )?;
            deltas.push((format!("{KIND_COUNT}{}", s.kind), -1));
            let was: Vec<&str> = s.classes.iter().map(String::as_str).collect();
            self.relabel(&s.key, &was, &[], &mut deltas)?;
            counts.removed += 1;
            counts.changed += 1;
        }
        let counts_rows: Vec<(&str, &str, i64)> = deltas
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(kind, n)| (kind.as_str(), entity, *n))
            .collect();
        crate::events::add_counts(self.c, counts_rows)?;
        Ok(counts)
    }

    /// The entity's next `seq`: under its lock, later transactions always get a larger one.
    fn seq(&mut self) -> Result<i64> {
        if let Some(s) = self.seq {
            return Ok(s);
        }
        self.c.execute(
            "INSERT INTO recon_seqs (entity, seq) VALUES ($1, 1)
             ON CONFLICT (entity) DO UPDATE SET seq = recon_seqs.seq + 1",
            args!(self.entity),
        )?;
        let seq = self
            .c
            .one(
                "SELECT seq FROM recon_seqs WHERE entity = $1",
                args!(self.entity),
                |r| r.get::<i64>(0),
            )?
            .unwrap_or(1);
        self.seq = Some(seq);
        Ok(seq)
    }

    fn relabel(
        &mut self,
        key: &str,
        was: &[&str],
        now: &[&'static str],
        deltas: &mut Vec<(String, i64)>,
    ) -> Result<()> {
        let entity = self.entity;
        for c in was.iter().filter(|c| !now.contains(c)) {
            self.c.execute(
                "DELETE FROM recon_labels WHERE entity = $1 AND class = $2 AND key = $3",
                args!(entity, *c, key),
            )?;
            deltas.push((count_kind(c), -1));
        }
        for c in now.iter().filter(|c| !was.contains(c)) {
            self.c.execute(
                "INSERT INTO recon_labels (entity, class, key) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                args!(entity, *c, key),
            )?;
            deltas.push((count_kind(c), 1));
        }
        if !self.quiet {
            self.c.new_event(
                &NewEvent {
                    kind: "reconciliation.changed",
                    entity,
                    subject: key,
                    payload: serde_json::json!({ "key": key, "from": was, "to": now }),
                    correlation: None,
                },
                &self.ts,
            )?;
        }
        Ok(())
    }

    /// Deletes the marks the caller has relabelled.
    pub fn clear_marks(&mut self, ids: &[i64]) -> Result<()> {
        for id in ids {
            self.c
                .execute("DELETE FROM recon_dirty WHERE id = $1", args!(*id))?;
        }
        Ok(())
    }

    /// Records one event in this transaction.
    pub fn event(&mut self, kind: &str, subject: &str, payload: serde_json::Value) -> Result<()> {
        let entity = self.entity;
        self.c.new_event(
            &NewEvent {
                kind,
                entity,
                subject,
                payload,
                correlation: None,
            },
            &self.ts,
        )
    }
}

/// Which movements a read covers.
#[derive(Debug, Clone, Copy)]
pub enum MovementSelect<'a> {
    Keys(&'a [String]),
    After { after: Option<&'a str>, limit: u32 },
}

/// `metric_counts` kind of a class's running count (the gauge, the summary).
fn count_kind(class: &str) -> String {
    format!("recon:{class}")
}

/// `metric_counts` kind prefix of the running count of items of a kind (the summary).
const KIND_COUNT: &str = "recon-kind:";

fn split_movement_key(key: &str) -> Option<(i64, &str)> {
    let (year, bill) = key.split_once('-')?;
    Some((year.parse().ok()?, bill))
}

fn notification_from(r: &dyn Row) -> Result<StoredNotification> {
    Ok(StoredNotification {
        iud: r.get(0)?,
        iuv: r.get(1)?,
        amount_cents: r.get(2)?,
        body: r.get(3)?,
        source: r.get(4)?,
        received_at: r.get(5)?,
    })
}

/// Counts of one entity's items per class (a payment counts once in each of its classes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconSummary {
    pub payments: u64,
    pub movements: u64,
    pub classes: std::collections::BTreeMap<String, u64>,
}

pub trait ReconcileStore {
    /// The oldest marks, at most `limit`.
    fn dirty_marks(&self, limit: u32) -> Result<Vec<DirtyMark>>;

    /// Runs `f` in one transaction holding `entity`'s reconciliation lock.
    fn recon_tx(
        &self,
        entity: &str,
        quiet: bool,
        f: &mut dyn FnMut(&mut ReconTx<'_>) -> Result<()>,
    ) -> Result<()>;

    /// Items whose labels may change with time alone by `now` (RFC 3339): (entity, key, iuv).
    fn recon_due(&self, now: &str, limit: u32) -> Result<Vec<(String, String, Option<String>)>>;

    /// The entity's items after `after` in key order, of `class` when given, at most `limit`.
    fn recon_items(
        &self,
        entity: &str,
        class: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<StoredItem>>;

    /// The entity's items past `after` — a (seq, key) position; key `""` starts at that seq —
    /// and by `upto_seq`, in (seq, key) order, at most `limit`: an export's next page.
    fn recon_changed(
        &self,
        entity: &str,
        after: (i64, &str),
        upto_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredItem>>;

    /// The entity's newest `seq` (0 when nothing is labelled).
    fn recon_seq(&self, entity: &str) -> Result<i64>;

    /// Counts per class of the entity's items, and its payments and movements.
    fn recon_summary(&self, entity: &str) -> Result<ReconSummary>;

    /// Stores the entity's notifications from `source` in one transaction (a later one with the
    /// same IUD replaces it) and marks their IUVs; returns (inserted, replaced, unchanged).
    fn apply_notifications(
        &self,
        entity: &str,
        source: &str,
        list: &[NewNotification<'_>],
    ) -> Result<(u64, u64, u64)>;

    /// Whether the entity has sent any notification (the IUD classes apply only then).
    fn notifies(&self, entity: &str) -> Result<bool>;

    /// The entity's notification with this IUD.
    fn notification(&self, entity: &str, iud: &str) -> Result<Option<StoredNotification>>;

    /// The entity's movements naming this IUF, then those naming this IUV, each in key order.
    fn movements_naming(
        &self,
        entity: &str,
        iuf: Option<&str>,
        iuv: Option<&str>,
    ) -> Result<Vec<StoredMovement>>;
}

impl<D: Driver> ReconcileStore for D {
    fn dirty_marks(&self, limit: u32) -> Result<Vec<DirtyMark>> {
        self.read(|c| {
            c.all(
                "SELECT id, entity, iuv, iuf, movement FROM recon_dirty ORDER BY id LIMIT $1",
                args!(i64::from(limit)),
                |r| {
                    Ok(DirtyMark {
                        id: r.get(0)?,
                        entity: r.get(1)?,
                        iuv: r.get(2)?,
                        iuf: r.get(3)?,
                        movement: r.get(4)?,
                    })
                },
            )
        })
    }

    fn recon_tx(
        &self,
        entity: &str,
        quiet: bool,
        f: &mut dyn FnMut(&mut ReconTx<'_>) -> Result<()>,
    ) -> Result<()> {
        let ts = now();
        self.tx(|c| {
            c.lock(&format!("reconcile:{entity}"))?;
            let mut t = ReconTx {
                c,
                entity,
                ts,
                seq: None,
                quiet,
            };
            f(&mut t)
        })
    }

    fn recon_due(&self, now: &str, limit: u32) -> Result<Vec<(String, String, Option<String>)>> {
        self.read(|c| {
            c.all(
                "SELECT entity, key, iuv FROM recon_items WHERE due_at IS NOT NULL AND due_at <= $1
                 ORDER BY due_at LIMIT $2",
                args!(now, i64::from(limit)),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
    }

    fn recon_items(
        &self,
        entity: &str,
        class: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<StoredItem>> {
        let limit = i64::from(limit);
        self.read(|c| match class {
            None => c.all(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM recon_items WHERE entity = $1 AND key > $2
                     ORDER BY key LIMIT $3"
                ),
                args!(entity, after, limit),
                item_from,
            ),
            Some(class) => c.all(
                "SELECT i.key, i.kind, i.iuv, i.classes, i.body, i.due_at, i.updated_at, i.seq
                 FROM recon_labels l JOIN recon_items i ON i.entity = l.entity AND i.key = l.key
                 WHERE l.entity = $1 AND l.class = $2 AND l.key > $3 ORDER BY l.key LIMIT $4",
                args!(entity, class, after, limit),
                item_from,
            ),
        })
    }

    fn recon_changed(
        &self,
        entity: &str,
        after: (i64, &str),
        upto_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredItem>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM recon_items WHERE entity = $1
               AND (seq > $2 OR (seq = $2 AND key > $3)) AND seq <= $4
             ORDER BY seq, key LIMIT $5"
        );
        self.read(|c| {
            c.all(
                &sql,
                args!(entity, after.0, after.1, upto_seq, i64::from(limit)),
                item_from,
            )
        })
    }

    fn recon_seq(&self, entity: &str) -> Result<i64> {
        self.read(|c| {
            Ok(c.one(
                "SELECT seq FROM recon_seqs WHERE entity = $1",
                args!(entity),
                |r| r.get::<i64>(0),
            )?
            .unwrap_or(0))
        })
    }

    fn recon_summary(&self, entity: &str) -> Result<ReconSummary> {
        // The running counts the relabelling keeps: a few rows, whatever the entity's size.
        self.read(|c| {
            let mut s = ReconSummary::default();
            for (kind, n) in c.all(
                "SELECT kind, CAST(SUM(n) AS BIGINT) FROM metric_counts
                 WHERE label = $1 AND kind LIKE 'recon%' GROUP BY kind",
                args!(entity),
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
            )? {
                let n = u64::try_from(n).unwrap_or(0);
                if n == 0 {
                    continue;
                }
                if let Some(class) = kind.strip_prefix("recon:") {
                    s.classes.insert(class.to_string(), n);
                } else if kind == format!("{KIND_COUNT}movement") {
                    s.movements += n;
                } else if kind.starts_with(KIND_COUNT) {
                    s.payments += n;
                }
            }
            Ok(s)
        })
    }

    fn apply_notifications(
        &self,
        entity: &str,
        source: &str,
        list: &[NewNotification<'_>],
    ) -> Result<(u64, u64, u64)> {
        let ts = now();
        self.tx(|c| {
            c.lock(&format!("notifications:{entity}"))?;
            let first = c
                .one(
                    "SELECT 1 FROM recon_notifications WHERE entity = $1 LIMIT 1",
                    args!(entity),
                    |r| r.get::<i64>(0),
                )?
                .is_none();
            // An entity's first notifications bring the IUD classes to all its payments: a mark
            // naming nothing relabels the whole entity.
            if first && !list.is_empty() {
                mark(c, entity, &Touch::default())?;
            }
            let (mut inserted, mut replaced, mut unchanged) = (0, 0, 0);
            for n in list {
                let held = c.one(
                    "SELECT iuv, amount_cents, body FROM recon_notifications
                     WHERE entity = $1 AND iud = $2",
                    args!(entity, n.iud),
                    |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<String>(2)?)),
                )?;
                if let Some((iuv, amount, body)) = &held {
                    if iuv == n.iuv && *amount == n.amount_cents && body == n.body {
                        unchanged += 1;
                        continue;
                    }
                    mark(c, entity, &Touch { iuv: Some(iuv), ..Touch::default() })?;
                    replaced += 1;
                } else {
                    inserted += 1;
                }
                c.execute(
                    "INSERT INTO recon_notifications
                       (entity, iud, iuv, amount_cents, body, source, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (entity, iud) DO UPDATE SET iuv = excluded.iuv,
                       amount_cents = excluded.amount_cents, body = excluded.body,
                       source = excluded.source, received_at = excluded.received_at",
                    args!(entity, n.iud, n.iuv, n.amount_cents, n.body, source, ts.as_str()),
                )?;
                mark(c, entity, &Touch { iuv: Some(n.iuv), ..Touch::default() })?;
            }
            c.new_event(
                &NewEvent {
                    kind: "notifications.received",
                    entity,
                    subject: source,
                    payload: serde_json::json!({
                        "source": source,
                        "counts": { "inserted": inserted, "replaced": replaced, "unchanged": unchanged },
                    }),
                    correlation: None,
                },
                &ts,
            )?;
            Ok((inserted, replaced, unchanged))
        })
    }

    fn notification(&self, entity: &str, iud: &str) -> Result<Option<StoredNotification>> {
        self.read(|c| {
            c.one(
                "SELECT iud, iuv, amount_cents, body, source, received_at FROM recon_notifications
                 WHERE entity = $1 AND iud = $2",
                args!(entity, iud),
                notification_from,
            )
        })
    }

    fn movements_naming(
        &self,
        entity: &str,
        iuf: Option<&str>,
        iuv: Option<&str>,
    ) -> Result<Vec<StoredMovement>> {
        self.read(|c| {
            let mut out = Vec::new();
            for (col, value) in [("iuf", iuf), ("iuv", iuv)] {
                let Some(value) = value else { continue };
                let sql = format!(
                    "SELECT {COLUMNS} FROM treasury_movements WHERE entity = $1 AND {col} = $2
                     ORDER BY year, bill"
                );
                out.extend(c.all(&sql, args!(entity, value), crate::treasury::movement_from)?);
            }
            Ok(out)
        })
    }

    fn notifies(&self, entity: &str) -> Result<bool> {
        self.read(|c| {
            Ok(c.one(
                "SELECT 1 FROM recon_notifications WHERE entity = $1 LIMIT 1",
                args!(entity),
                |r| r.get::<i64>(0),
            )?
            .is_some())
        })
    }
}
