//! Job leases: a cron job or a singleton runs on one hub at a time among those sharing a store.

use crate::db::{args, Access, Driver};
use crate::ops::EPOCH;
use crate::*;

pub trait JobStore {
    /// Takes or renews the lease of `job` for `holder` until `until` when it is free, expired at
    /// `now`, or already `holder`'s; with `tick`, only if that tick has not run yet (then it is
    /// recorded). Atomic across processes sharing the store. Returns whether it was taken.
    fn take_job(
        &self,
        job: &str,
        holder: &str,
        now: &str,
        until: &str,
        tick: Option<&str>,
    ) -> Result<bool>;
    /// Gives the lease up (its tick and cursor stay).
    fn release_job(&self, job: &str, holder: &str) -> Result<()>;
    /// Where the job got to (0 when never set).
    fn job_cursor(&self, job: &str) -> Result<i64>;
    /// Moves the cursor, only while `holder` is the lease's holder of record (nobody took it over
    /// and it was not released). Returns whether it moved.
    fn set_job_cursor(&self, job: &str, holder: &str, cursor: i64) -> Result<bool>;
}

/// One statement: a row that exists is only updated when free, expired or the holder's own, and
/// with a tick only for a newer tick.
const TAKE: &str =
    "INSERT INTO jobs (name, holder, lease_until, last_tick, cursor) VALUES ($1, $2, $4, $5, 0)
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until,
         last_tick = COALESCE(excluded.last_tick, jobs.last_tick)
     WHERE (jobs.lease_until < $3 OR jobs.holder = $2)
       AND ($5 IS NULL OR jobs.last_tick IS NULL OR jobs.last_tick < $5)";

impl<D: Driver> JobStore for D {
    fn take_job(
        &self,
        job: &str,
        holder: &str,
        now: &str,
        until: &str,
        tick: Option<&str>,
    ) -> Result<bool> {
        let args = args!(job, holder, now, until, tick);
        Ok(self.run(Access::Write, |c| c.execute(TAKE, args))? > 0)
    }

    fn release_job(&self, job: &str, holder: &str) -> Result<()> {
        let sql = "UPDATE jobs SET lease_until = $3 WHERE name = $1 AND holder = $2";
        self.run(Access::Write, |c| {
            c.execute(sql, args!(job, holder, EPOCH)).map(drop)
        })
    }

    fn job_cursor(&self, job: &str) -> Result<i64> {
        let sql = "SELECT cursor FROM jobs WHERE name = $1";
        let cursor = self.read(|c| c.one(sql, args!(job), |r| r.get::<i64>(0)))?;
        Ok(cursor.unwrap_or(0))
    }

    fn set_job_cursor(&self, job: &str, holder: &str, cursor: i64) -> Result<bool> {
        let sql =
            "UPDATE jobs SET cursor = $3 WHERE name = $1 AND holder = $2 AND lease_until > $4";
        let args = args!(job, holder, cursor, EPOCH);
        Ok(self.run(Access::Write, |c| c.execute(sql, args))? > 0)
    }
}
