//! Batch receipt pipelines: an export fixes its receipts when it opens, so a crash while its file
//! is written redoes that same file and the next export starts after it.

use crate::db::{args, Access, Driver};
use crate::ops::now;
use crate::*;

pub trait ExportStore {
    /// The batch pipeline's export to write now: the one an interrupted run left open (same
    /// receipts), else a new one holding every pending delivery of the pipeline. `None` when
    /// there is nothing to export and `allow_empty` is false.
    fn open_export(
        &self,
        pipeline: &str,
        entity: &str,
        allow_empty: bool,
    ) -> Result<Option<Export>>;

    /// The export an interrupted run left open, if any.
    fn unfinished_export(&self, pipeline: &str) -> Result<Option<Export>>;

    /// The receipts of an export, in delivery order.
    fn export_items(&self, export: i64) -> Result<Vec<ExportItem>>;

    /// The export's file is published: it and its deliveries are done.
    fn finish_export(&self, export: i64) -> Result<()> {
        self.finish_export_without(export, &[])
    }

    /// The export's file is published without the receipts of `dead` (delivery, why: receipts
    /// that cannot be encoded): those deliveries become dead letters (leaving the export, so a
    /// replay puts them in the next file), the others are done.
    fn finish_export_without(&self, export: i64, dead: &[(i64, String)]) -> Result<()>;

    /// Writing the export failed; it stays open and is retried with the same receipts.
    fn fail_export(&self, export: i64, error: &str) -> Result<()>;
}

const OPEN: &str = "SELECT id, receipts, created_at, entity FROM exports
     WHERE pipeline = $1 AND status = 'writing' ORDER BY id LIMIT 1";

impl<D: Driver> ExportStore for D {
    fn open_export(
        &self,
        pipeline: &str,
        entity: &str,
        allow_empty: bool,
    ) -> Result<Option<Export>> {
        let export = |id, receipts, created_at, resumed| Export {
            id,
            pipeline: pipeline.into(),
            entity: entity.into(),
            receipts,
            created_at,
            resumed,
        };
        self.tx(|c| {
            // One opener per pipeline at a time across processes: the second finds the first's
            // export open and resumes it instead of taking receipts of its own.
            c.lock(&format!("snodo.export:{pipeline}"))?;
            let open = c.one(OPEN, args!(pipeline), |r| {
                Ok(export(r.get(0)?, r.get(1)?, r.get(2)?, true))
            })?;
            if open.is_some() {
                return Ok(open);
            }
            let pending = c
                .one(
                    "SELECT COUNT(*) FROM deliveries
                     WHERE pipeline = $1 AND status = 'pending' AND export_id IS NULL",
                    args!(pipeline),
                    |r| r.get::<i64>(0),
                )?
                .unwrap_or(0);
            if pending == 0 && !allow_empty {
                return Ok(None);
            }
            let ts = now();
            let id = c
                .insert(
                    "INSERT INTO exports (pipeline, entity, status, receipts, created_at)
                     VALUES ($1, $2, 'writing', $3, $4)",
                    args!(pipeline, entity, pending, &ts),
                )?
                .ok_or_else(|| StoreError::Conflict(format!("export of {pipeline} not created")))?;
            let taken = c.execute(
                "UPDATE deliveries SET export_id = $2, updated_at = $3
                 WHERE pipeline = $1 AND status = 'pending' AND export_id IS NULL",
                args!(pipeline, id, &ts),
            )? as i64;
            // PostgreSQL: receipts committed since the count are in it too.
            if taken != pending {
                c.execute(
                    "UPDATE exports SET receipts = $2 WHERE id = $1",
                    args!(id, taken),
                )?;
            }
            Ok(Some(export(id, taken, ts, false)))
        })
    }

    fn unfinished_export(&self, pipeline: &str) -> Result<Option<Export>> {
        self.read(|c| {
            c.one(OPEN, args!(pipeline), |r| {
                Ok(Export {
                    id: r.get(0)?,
                    pipeline: pipeline.into(),
                    entity: r.get(3)?,
                    receipts: r.get(1)?,
                    created_at: r.get(2)?,
                    resumed: true,
                })
            })
        })
    }

    fn export_items(&self, export: i64) -> Result<Vec<ExportItem>> {
        self.read(|c| {
            c.all(
                "SELECT id, receipt, secondary FROM deliveries WHERE export_id = $1 ORDER BY id",
                args!(export),
                |r| {
                    Ok(ExportItem {
                        delivery: r.get(0)?,
                        receipt: r.get(1)?,
                        secondary: r.get(2)?,
                    })
                },
            )
        })
    }

    fn finish_export_without(&self, export: i64, dead: &[(i64, String)]) -> Result<()> {
        self.tx(|c| {
            let ts = now();
            let mut left_out = 0_i64;
            for (delivery, error) in dead {
                let letter = c.one(
                    "UPDATE deliveries SET status = 'dead', attempts = attempts + 1,
                     last_error = $3, updated_at = $4, export_id = NULL
                     WHERE id = $1 AND export_id = $2
                     RETURNING pipeline, entity, idempotency_key, attempts",
                    args!(*delivery, export, error.as_str(), &ts),
                    |r| {
                        let row: (String, String, String, i64) =
                            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                        Ok(row)
                    },
                )?;
                let Some((pipeline, entity, key, attempts)) = letter else {
                    continue;
                };
                left_out += 1;
                let attempt = Attempt::Dead {
                    error: error.clone(),
                };
                if let Some((kind, payload)) =
                    crate::ops::attempt_event(&attempt, *delivery, &pipeline, attempts)
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
            c.execute(
                "UPDATE exports SET status = 'written', attempts = attempts + 1, written_at = $2,
                 receipts = receipts - $3 WHERE id = $1",
                args!(export, &ts, left_out),
            )?;
            c.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,
                 delivered_at = $2, updated_at = $2 WHERE export_id = $1",
                args!(export, &ts),
            )?;
            Ok(())
        })
    }

    fn fail_export(&self, export: i64, error: &str) -> Result<()> {
        self.run(Access::Write, |c| {
            c.execute(
                "UPDATE exports SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                args!(export, error),
            )
            .map(drop)
        })
    }
}
