//! Domain events in order, and the store's own health and totals.

use crate::db::{args, Access, Driver, Row};
use crate::ops::now;
use crate::*;

pub trait EventStore {
    /// Events after `after_id`, oldest first.
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

/// Receipts held for an operator, by entity: walks the held rows alone (few, and only while
/// held), each joined to its receipt by primary key (`CROSS JOIN`: SQLite keeps that order).
pub(crate) const HELD: &str = "SELECT r.entity, COUNT(DISTINCT h.receipt)
     FROM held_deliveries h CROSS JOIN receipts r WHERE r.id = h.receipt
     GROUP BY r.entity ORDER BY r.entity";

impl<D: Driver> EventStore for D {
    fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| {
            c.all(
                "SELECT id, kind, entity, subject, payload, at, correlation FROM events
                 WHERE id > $1 ORDER BY id LIMIT $2",
                args!(after_id, limit),
                |r| {
                    Ok(Event {
                        id: r.get(0)?,
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
        })
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
            let three = |r: &dyn Row| -> Result<(String, i64, i64)> {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            };
            Ok(StoreMetrics {
                receipts: c.all(
                    "SELECT entity, COUNT(*), COUNT(issue) FROM receipts GROUP BY entity ORDER BY entity",
                    &[],
                    three,
                )?,
                deliveries: c.all(
                    "SELECT pipeline,
                            CASE WHEN status = 'pending' AND lease_until > $1 THEN 'in_flight' ELSE status END AS s,
                            COUNT(*) FROM deliveries GROUP BY pipeline, s ORDER BY pipeline, s",
                    args!(&now()),
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?,
                retried: c.all(
                    "SELECT pipeline, COUNT(*) FROM deliveries
                     WHERE attempts > 1 OR (status = 'pending' AND attempts > 0)
                     GROUP BY pipeline ORDER BY pipeline",
                    &[],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?,
                import_rows: c.all(
                    "SELECT entity, CAST(SUM(accepted) AS BIGINT), CAST(SUM(rejected) AS BIGINT)
                     FROM flows GROUP BY entity ORDER BY entity",
                    &[],
                    three,
                )?,
                held: c.all(HELD, &[], |r| Ok((r.get(0)?, r.get(1)?)))?,
            })
        })
    }

    fn ping(&self) -> Result<()> {
        self.read(|c| c.one("SELECT 1", &[], |_| Ok(())).map(drop))
    }
}
