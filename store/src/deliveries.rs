//! The receipt outbox: deliveries claimed under a lease, attempts recorded, dead letters
//! replayed.

use crate::db::{args, sql, Access, Driver, Row, Sql};
use crate::ops::{self, now};
use crate::*;

pub trait OutboxStore {
    /// Claims up to `limit` deliveries of `pipeline` that are due at `now` and not leased, leasing
    /// them until `lease_until` (a crashed worker's claims come back when the lease ends).
    fn claim_deliveries(
        &self,
        pipeline: &str,
        now: &str,
        lease_until: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>>;

    /// Records the attempt of a claimed delivery and releases the lease; `false` when the claim
    /// was stale (see [`Self::record_attempts`]).
    fn record_attempt(&self, delivery: &Delivery, attempt: &Attempt) -> Result<bool> {
        Ok(self
            .record_attempts(&[(delivery.claim(), attempt.clone())])?
            .is_empty())
    }

    /// Records several attempts in one commit, with a `delivery.retried` or `delivery.dead` event
    /// for each that was not delivered. Each is recorded only under the lease of its claim: a
    /// worker that outlived its lease (the delivery claimed again since, or its outcome already
    /// recorded) changes nothing. Returns the deliveries whose outcome was discarded so.
    fn record_attempts(&self, attempts: &[(Claim, Attempt)]) -> Result<Vec<i64>>;

    fn delivery(&self, id: i64) -> Result<Option<Delivery>>;

    /// Deliveries in `status`, newest first, optionally of one entity and/or pipeline.
    fn deliveries(
        &self,
        status: DeliveryStatus,
        entity: Option<&str>,
        pipeline: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;

    /// Puts dead letters back in the outbox, due now, attempts counted from zero again: `ids`,
    /// or every dead letter (of `entity` when given) when `ids` is empty. Returns how many.
    fn replay(&self, ids: &[i64], entity: Option<&str>) -> Result<usize>;
}

macro_rules! columns {
    () => {
        "id, pipeline, entity, receipt, idempotency_key, status, attempts, next_attempt_at,
         last_error, created_at, updated_at, delivered_at, lease_until, report"
    };
}

fn delivery_from(r: &dyn Row) -> Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        entity: r.get(2)?,
        receipt: r.get(3)?,
        idempotency_key: r.get(4)?,
        status: DeliveryStatus::parse(&r.get::<String>(5)?).unwrap_or(DeliveryStatus::Pending),
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        delivered_at: r.get(11)?,
        lease_until: r.get(12)?,
        report: r.get(13)?,
    })
}

/// Due deliveries in due order, walked on `deliveries_due` (ordering by anything else would sort
/// the whole backlog on every claim), picked and leased in one statement. PostgreSQL skips rows
/// another claimer holds, so concurrent claimers take disjoint rows instead of queueing; a row
/// leased meanwhile fails the re-checked lease condition.
pub(crate) const CLAIM: Sql = sql!(
    "UPDATE deliveries SET lease_until = $3
     WHERE id IN (SELECT id FROM deliveries
                  WHERE pipeline = $1 AND status = 'pending' AND next_attempt_at <= $2
                    AND (lease_until IS NULL OR lease_until < $2) AND export_id IS NULL
                  ORDER BY next_attempt_at, id LIMIT $4" => " FOR UPDATE SKIP LOCKED",
    ") RETURNING ",
    columns!()
);

const REPLAY: Sql = Sql {
    sqlite: "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2,
             lease_until = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'",
    pg: "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2,
         lease_until = NULL, updated_at = $2 WHERE id = ANY($1) AND status = 'dead'",
};

impl<D: Driver> OutboxStore for D {
    fn claim_deliveries(
        &self,
        pipeline: &str,
        now: &str,
        lease_until: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let args = args!(pipeline, now, lease_until, limit);
        let mut claimed = self.run(Access::Lease, |c| {
            let sql = c.pick(&CLAIM);
            c.all(sql, args, delivery_from)
        })?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    fn record_attempts(&self, attempts: &[(Claim, Attempt)]) -> Result<Vec<i64>> {
        self.tx(|c| {
            let ts = now();
            let mut stale = Vec::new();
            for (claim, attempt) in attempts {
                let delivery = &claim.delivery;
                let (status, next, error, delivered) = match attempt {
                    Attempt::Delivered => (DeliveryStatus::Delivered, None, None, Some(&ts)),
                    Attempt::Retry { at, error } => {
                        (DeliveryStatus::Pending, Some(at), Some(error), None)
                    }
                    Attempt::Dead { error } => (DeliveryStatus::Dead, None, Some(error), None),
                };
                let updated = c.one(
                    "UPDATE deliveries SET status = $2, attempts = attempts + 1, lease_until = NULL,
                     next_attempt_at = COALESCE($3, next_attempt_at), last_error = COALESCE($4, last_error),
                     delivered_at = $5, updated_at = $6
                     WHERE id = $1 AND status = 'pending' AND lease_until = $7
                     RETURNING pipeline, entity, idempotency_key, attempts",
                    args!(
                        *delivery,
                        status.as_str(),
                        next,
                        error,
                        delivered,
                        &ts,
                        claim.lease_until.as_str()
                    ),
                    |r| {
                        let row: (String, String, String, i64) =
                            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                        Ok(row)
                    },
                )?;
                let Some((pipeline, entity, key, attempts)) = updated else {
                    stale.push(*delivery);
                    continue;
                };
                if let Some((kind, payload)) =
                    ops::attempt_event(attempt, *delivery, &pipeline, attempts)
                {
                    let e = NewEvent {
                        kind,
                        entity: &entity,
                        subject: &key,
                        payload,
                        correlation: None,
                    };
                    c.new_event(&e, &ts)?;
                }
            }
            Ok(stale)
        })
    }

    fn delivery(&self, id: i64) -> Result<Option<Delivery>> {
        let sql = concat!("SELECT ", columns!(), " FROM deliveries WHERE id = $1");
        self.read(|c| c.one(sql, args!(id), delivery_from))
    }

    fn deliveries(
        &self,
        status: DeliveryStatus,
        entity: Option<&str>,
        pipeline: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM deliveries WHERE status = $1 AND (CAST($2 AS TEXT) IS NULL OR entity = $2)
              AND (CAST($3 AS TEXT) IS NULL OR pipeline = $3) ORDER BY id DESC LIMIT $4"
        );
        let args = args!(status.as_str(), entity, pipeline, limit);
        self.read(|c| c.all(sql, args, delivery_from))
    }

    fn replay(&self, ids: &[i64], entity: Option<&str>) -> Result<usize> {
        let ts = now();
        let n = self.tx(|c| {
            if !ids.is_empty() {
                return c.each_id(&REPLAY, ids, Some(&ts));
            }
            c.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2,
                 lease_until = NULL, updated_at = $2
                 WHERE status = 'dead' AND (CAST($1 AS TEXT) IS NULL OR entity = $1)",
                args!(entity, &ts),
            )
        })?;
        Ok(n as usize)
    }
}
