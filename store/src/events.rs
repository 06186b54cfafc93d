//! Domain events in order, and the store's own health and totals.

use crate::db::{args, Access, Conn, Driver};
use crate::ops::now;
use crate::*;
use std::collections::BTreeMap;

pub trait EventStore {
    /// Events after the stored row `after_id`, oldest first, from whole rows (a bulk import's
    /// row gives one event per position, all with its `id`): at most `limit` rows, and no row
    /// started once `limit` events are out.
    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>>;
    /// The newest event's id (0 when there is none): where a live follower starts.
    fn last_event_id(&self) -> Result<i64>;
    /// Records events in one commit.
    fn record_events(&self, events: &[NewEvent<'_>]) -> Result<()>;
    /// Deletes all but the newest `keep` events; returns how many went.
    fn prune_events(&self, keep: u64) -> Result<u64>;
}

pub trait StatusStore {
    fn metrics(&self) -> Result<StoreMetrics>;
    /// Answers when the store can serve queries (readiness probes).
    fn ping(&self) -> Result<()>;
}

pub(crate) const INSERT: &str =
    "INSERT INTO events (kind, entity, subject, payload, at, correlation) VALUES ($1, $2, $3, $4, $5, $6)";

/// The id of the oldest event to keep's predecessor: a walk of `keep` ids down the primary key.
pub(crate) const PRUNE_EDGE: &str = "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET $1";

/// What `metric_counts` keeps (its `kind`); the label is the entity, or the pipeline.
pub(crate) mod count {
    /// Receipts stored, and of those flagged for operators.
    pub const RECEIPTS: &str = "receipts";
    pub const FLAGGED: &str = "receipts_flagged";
    /// Of those, stored as a secondary beneficiary of another entity's notice.
    pub const SECONDARY: &str = "receipts_secondary";
    /// Deliveries created (whatever their status now).
    pub const DELIVERIES: &str = "deliveries";
    /// Import rows accepted and rejected, as the flows' checkpoints count them.
    pub const ACCEPTED: &str = "import_accepted";
    pub const REJECTED: &str = "import_rejected";
    /// Settlement flows stored (ok) and failed, and anomalies found in them, per entity.
    pub const REPORTS: &str = "reports";
    pub const REPORTS_FAILED: &str = "reports_failed";
    pub const REPORT_ANOMALIES: &str = "report_anomalies";
}

/// Adds to a running total (SQLite; PostgreSQL's adds to the connection's shard of it).
pub(crate) const ADD_COUNT: &str = "INSERT INTO metric_counts (kind, label, n) VALUES ($1, $2, $3)
     ON CONFLICT (kind, label) DO UPDATE SET n = n + excluded.n";

/// Adds to running totals inside the caller's transaction, the one writing what they count.
/// Keys are merged and sorted: transactions sharing rows on PostgreSQL lock them in one order.
pub(crate) fn add_counts(c: &mut dyn Conn, mut counts: Vec<(&str, &str, i64)>) -> Result<()> {
    counts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    counts.dedup_by(|next, kept| {
        let same = (next.0, next.1) == (kept.0, kept.1);
        if same {
            kept.2 += next.2;
        }
        same
    });
    c.add_counts(&counts)
}

/// The scrape's totals, summed over shards: a few rows per entity and pipeline, never the rows
/// they count.
pub(crate) const SCRAPE_COUNTS: &str =
    "SELECT kind, label, CAST(SUM(n) AS BIGINT) FROM metric_counts
     GROUP BY kind, label ORDER BY kind, label";

/// Per pipeline: deliveries created, pending, leased (in flight, `$1` is now), dead and retried.
/// One statement, so one snapshot: delivered is created - pending - dead. Each count is a range
/// of an index whose predicate the condition matches (`deliveries_due`, `deliveries_leased`,
/// `deliveries_retried`), so a backlog costs its own size and the delivered rows cost nothing.
pub(crate) const SCRAPE_DELIVERIES: &str = "SELECT p.label, p.total,
       (SELECT COUNT(*) FROM deliveries WHERE pipeline = p.label AND status = 'pending'),
       (SELECT COUNT(*) FROM deliveries
        WHERE pipeline = p.label AND status = 'pending' AND lease_until > $1),
       (SELECT COUNT(*) FROM deliveries WHERE pipeline = p.label AND status = 'dead'),
       (SELECT COUNT(*) FROM deliveries
        WHERE pipeline = p.label AND (attempts > 1 OR (status = 'pending' AND attempts > 0)))
     FROM (SELECT label, CAST(SUM(n) AS BIGINT) AS total FROM metric_counts
           WHERE kind = 'deliveries' GROUP BY label) p
     ORDER BY p.label";

/// Receipts held for an operator, by entity: walks the held rows alone (few, and only while
/// held), each joined to its receipt by primary key (`CROSS JOIN`: SQLite keeps that order).
pub(crate) const HELD: &str = "SELECT r.entity, COUNT(DISTINCT h.receipt)
     FROM held_deliveries h CROSS JOIN receipts r WHERE r.id = h.receipt
     GROUP BY r.entity ORDER BY r.entity";

impl<D: Driver> EventStore for D {
    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = self.read(|c| {
            c.all(
                "SELECT id, kind, entity, subject, payload, at, correlation FROM events
                 WHERE id > $1 ORDER BY id LIMIT $2",
                args!(after_id, limit),
                |r| {
                    Ok(Event {
                        id: r.get(0)?,
                        part: 0,
                        kind: r.get(1)?,
                        entity: r.get(2)?,
                        subject: r.get(3)?,
                        payload: serde_json::from_str(&r.get::<String>(4)?)
                            .unwrap_or(serde_json::Value::Null),
                        at: r.get(5)?,
                        correlation: r.get(6)?,
                    })
                },
            )
        })?;
        // A stored row of a bulk import holds a chunk's positions: whole rows only, and no more
        // rows once `limit` events are out (so the caller's cursor, a row id, stays exact).
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if out.len() >= limit as usize {
                break;
            }
            crate::ops::expand(row, &mut out);
        }
        Ok(out)
    }

    fn last_event_id(&self) -> Result<i64> {
        self.read(|c| {
            let sql = "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM events";
            Ok(c.one(sql, &[], |r| r.get::<i64>(0))?.unwrap_or(0))
        })
    }

    fn record_events(&self, events: &[NewEvent<'_>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.tx(|c| {
            let ts = now();
            for e in events {
                c.new_event(e, &ts)?;
            }
            Ok(())
        })
    }

    fn prune_events(&self, keep: u64) -> Result<u64> {
        self.run(Access::Write, |c| {
            // The newest `keep` walk the primary key backwards; the rest go as one id range.
            let Some(edge) = c.one(PRUNE_EDGE, args!(keep as i64), |r| r.get::<i64>(0))? else {
                return Ok(0);
            };
            c.execute("DELETE FROM events WHERE id <= $1", args!(edge))
        })
    }
}

impl<D: Driver> StatusStore for D {
    fn metrics(&self) -> Result<StoreMetrics> {
        self.read(|c| {
            let totals = c.all(SCRAPE_COUNTS, &[], |r| {
                Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?))
            })?;
            // (entity, first, second): receipts (stored, flagged), import rows (accepted, rejected).
            let mut receipts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            let mut secondary = Vec::new();
            let mut import_rows: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            let mut reports: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
            let mut reconciliation = Vec::new();
            for (kind, label, n) in totals {
                if let Some(class) = kind.strip_prefix("recon:") {
                    reconciliation.push((label, class.to_string(), n));
                    continue;
                }
                match kind.as_str() {
                    count::RECEIPTS => receipts.entry(label).or_default().0 = n,
                    count::FLAGGED => receipts.entry(label).or_default().1 = n,
                    count::SECONDARY => secondary.push((label, n)),
                    count::ACCEPTED => import_rows.entry(label).or_default().0 = n,
                    count::REJECTED => import_rows.entry(label).or_default().1 = n,
                    count::REPORTS => reports.entry(label).or_default().0 = n,
                    count::REPORTS_FAILED => reports.entry(label).or_default().1 = n,
                    count::REPORT_ANOMALIES => reports.entry(label).or_default().2 = n,
                    _ => {}
                }
            }
            let mut deliveries = Vec::new();
            let mut retried = Vec::new();
            let rows = c.all(SCRAPE_DELIVERIES, args!(&now()), |r| {
                let n: [i64; 5] = [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?];
                Ok((r.get::<String>(0)?, n))
            })?;
            for (pipeline, [total, pending, leased, dead, again]) in rows {
                // Sorted by status, and only the statuses some delivery has (as a GROUP BY
                // would list them).
                for (status, n) in [
                    ("dead", dead),
                    ("delivered", total - pending - dead),
                    ("in_flight", leased),
                    ("pending", pending - leased),
                ] {
                    if n != 0 {
                        deliveries.push((pipeline.clone(), status.to_string(), n));
                    }
                }
                if again > 0 {
                    retried.push((pipeline, again));
                }
            }
            Ok(StoreMetrics {
                receipts: receipts
                    .into_iter()
                    .filter(|(_, (stored, _))| *stored > 0)
                    .map(|(e, (stored, flagged))| (e, stored, flagged))
                    .collect(),
                secondary,
                deliveries,
                retried,
                import_rows: import_rows
                    .into_iter()
                    .map(|(e, (accepted, rejected))| (e, accepted, rejected))
                    .collect(),
                held: c.all(HELD, &[], |r| Ok((r.get(0)?, r.get(1)?)))?,
                reports: reports
                    .into_iter()
                    .map(|(e, (ok, failed, anomalies))| (e, ok, failed, anomalies))
                    .collect(),
                reconciliation,
            })
        })
    }

    fn ping(&self) -> Result<()> {
        self.read(|c| c.one("SELECT 1", &[], |_| Ok(())).map(drop))
    }
}
