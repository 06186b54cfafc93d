//! Debt positions: lookups, their history, the node's activations, and the statements the
//! import rules apply them with.

use crate::db::{args, sql, Arg, Conn, Driver, Row, Sql, Write, Written};
use crate::ops::{self, Live, NewPosition, Ops};
use crate::*;

/// What one round of [`PositionStore::expire_positions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Positions read as due to expire.
    pub candidates: u32,
    /// Of those, expired now.
    pub expired: u32,
    /// The last candidate's id: where the next round starts.
    pub last: i64,
}

pub trait PositionStore {
    fn positions(&self, entity: &str, query: &PositionQuery<'_>) -> Result<Vec<Position>>;

    /// The position a notice number designates: the live one, else the latest annulled one (so
    /// the node can be told it was annulled rather than unknown). Hot path of the node's calls.
    fn position_by_notice(&self, entity: &str, notice: &NoticeNumber) -> Result<Option<Position>>;

    /// The node activated a payment of this position (paGetPayment): counted and timestamped,
    /// with a `payment.activated` event.
    fn record_activation(&self, position_id: i64, correlation: Option<&str>) -> Result<()>;

    /// A position's history, oldest first: its creation, then every change.
    fn history(&self, position_id: i64) -> Result<Vec<HistoryEntry>>;

    /// Positions of `entity` passing `filter` with id > `after_id`, ascending id, at most
    /// `limit`: cursor pagination (the caller passes the last id it saw), stable while rows are
    /// added. Annulled ones are included unless the status filter leaves them out.
    fn list_positions(
        &self,
        entity: &str,
        filter: &PositionFilter<'_>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Position>>;

    /// Marks `entity`'s active positions of `debt_type` due before `due_before` as expired, at
    /// most `limit` of those with id > `after`, each with history `E` and a `position.expired`
    /// event. The candidates are read first, outside the write: the write lock is held only to
    /// update them by id, never during the scan (the node's receipts wait for it). Run again
    /// from [`Swept::last`] until [`Swept::candidates`] is below `limit`.
    fn expire_positions(
        &self,
        entity: &str,
        debt_type: &str,
        due_before: chrono::NaiveDate,
        after: i64,
        limit: u32,
    ) -> Result<Swept>;

    /// Positions of `entity` whose expiry (history `E`) came after the expiry `after`, oldest
    /// first, at most `limit`, each with its expiry's id (the next call's `after`). A position
    /// since paid, annulled or reopened is still listed: it did expire.
    fn expired_since(&self, entity: &str, after: i64, limit: u32) -> Result<Vec<(i64, Position)>>;
}

macro_rules! columns {
    () => {
        "p.id, p.entity, p.iud, p.iuv, p.iuv_generated, p.status, p.amount_cents, p.version,
         p.flow_id, p.created_at, p.updated_at, p.data,
         1 + (SELECT COUNT(*) FROM position_history h WHERE h.position_id = p.id),
         p.activated_at, p.activations"
    };
}
/// A position's columns, rows as `p` (see [`position_from`]).
pub(crate) const COLUMNS: &str = columns!();

fn position_from(r: &dyn Row) -> Result<Position> {
    let id: i64 = r.get(0)?;
    let iuv: Option<String> = r.get(3)?;
    let iuv_generated: bool = r.get(4)?;
    let mut dovuto: Dovuto = serde_json::from_str(&r.get::<String>(11)?)
        .map_err(|e| StoreError::Corrupt(format!("position {id}: stored data is corrupt: {e}")))?;
    // The columns are authoritative: the store may have generated the IUV.
    let parsed = iuv.as_deref().and_then(|i| Iuv::parse(i).ok());
    dovuto.iuv = parsed.clone();
    dovuto.generate_iuv = iuv_generated;
    Ok(Position {
        id,
        entity: r.get(1)?,
        iud: r.get(2)?,
        notice_number: parsed
            .and_then(|i| i.notice_number())
            .map(|n| n.as_str().to_string()),
        iuv,
        iuv_generated,
        status: PositionStatus::parse(&r.get::<String>(5)?).unwrap_or(PositionStatus::Active),
        amount_cents: r.get(6)?,
        version: r.get(7)?,
        flow_id: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        history_count: r.get(12)?,
        activated_at: r.get(13)?,
        activations: r.get(14)?,
        dovuto,
        settlement: None,
    })
}

/// Each key is looked up among live rows and among annulled rows separately, so that each half
/// uses its partial index.
const BY_NOTICE_LIVE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM positions p WHERE p.entity = $1 AND p.iuv = $2 AND p.status <> 'annulled'"
);
const BY_NOTICE_ANNULLED: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM positions p WHERE p.entity = $1 AND p.iuv = $2 AND p.status = 'annulled'
     ORDER BY p.id DESC LIMIT 1"
);

pub(crate) const INSERT: &str =
    "INSERT INTO positions (entity, iud, iuv, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_by, created_at, updated_at)
     VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, 1, $10, $11, $12, $12)
     ON CONFLICT DO NOTHING";

/// [`INSERT`]'s arguments; `due` is the row's due date as text.
pub(crate) fn insert_args<'a>(p: &'a NewPosition<'a>, due: Option<&'a str>) -> [Arg<'a>; 12] {
    let d = p.row;
    [
        p.entity.into(),
        (&d.iud).into(),
        p.iuv.into(),
        p.generated.into(),
        (&d.debt_type).into(),
        d.amount.cents().into(),
        due.into(),
        (&d.payer_id).into(),
        (&d.data).into(),
        p.flow_id.into(),
        p.source.into(),
        p.ts.into(),
    ]
}

/// Locked on PostgreSQL: two processes never both act on what each read.
const LIVE: Sql = sql!(
    "SELECT id, iuv, iuv_generated, status, debt_type, amount_cents, data, activated_at
     FROM positions WHERE entity = $1 AND iud = $2 AND status <> 'annulled'" => " FOR UPDATE"
);
/// Row-locked on PostgreSQL until commit: concurrent imports of the entity draw in turn.
const COUNTER: Sql = sql!(
    "SELECT next_value FROM iuv_counters WHERE entity = $1 AND segregation_code = $2" => " FOR UPDATE"
);

impl<D: Driver> PositionStore for D {
    fn positions(&self, entity: &str, query: &PositionQuery<'_>) -> Result<Vec<Position>> {
        let base = concat!(
            "SELECT ",
            columns!(),
            " FROM positions p WHERE p.entity = $1"
        );
        let by = |column: &str| {
            format!(
                "{base} AND p.{column} = $2 AND p.status <> 'annulled'
                 UNION ALL {base} AND p.{column} = $2 AND p.status = 'annulled' ORDER BY 1"
            )
        };
        let notice_iuv: String;
        let (sql, arg) = match query {
            PositionQuery::All { limit } => {
                (format!("{base} ORDER BY p.id LIMIT $2"), Arg::from(*limit))
            }
            PositionQuery::Iud(v) => (by("iud"), Arg::from(*v)),
            PositionQuery::Iuv(v) => (by("iuv"), Arg::from(*v)),
            PositionQuery::Payer(v) => (by("payer_id"), Arg::from(*v)),
            // A notice number is its IUV behind an aux digit (and, for aux 0, an application
            // code): look the IUV up.
            PositionQuery::NoticeNumber(v) => match NoticeNumber::parse(v) {
                Ok(n) => {
                    notice_iuv = n.iuv().as_str().to_string();
                    (by("iuv"), Arg::from(notice_iuv.as_str()))
                }
                Err(_) => return Ok(Vec::new()),
            },
        };
        self.read(|c| c.all(&sql, &[Arg::from(entity), arg], position_from))
    }

    fn position_by_notice(&self, entity: &str, notice: &NoticeNumber) -> Result<Option<Position>> {
        let iuv = notice.iuv();
        let args = args!(entity, iuv.as_str());
        self.read(|c| match c.one(BY_NOTICE_LIVE, args, position_from)? {
            Some(live) => Ok(Some(live)),
            None => c.one(BY_NOTICE_ANNULLED, args, position_from),
        })
    }

    fn record_activation(&self, position_id: i64, correlation: Option<&str>) -> Result<()> {
        let write = Write::Activation(position_id, correlation.map(str::to_string));
        match self.commit_hot(write)? {
            Written::Activation => Ok(()),
            Written::Receipt(_) => Err(StoreError::Conflict("mixed-up write outcome".into())),
        }
    }

    fn history(&self, position_id: i64) -> Result<Vec<HistoryEntry>> {
        self.read(|c| {
            let created = c.one(
                "SELECT created_by, created_at FROM positions WHERE id = $1",
                args!(position_id),
                |r| {
                    let source: String = r.get(0)?;
                    Ok(HistoryEntry {
                        action: Action::Insert.as_str().to_string(),
                        flow_id: source.strip_prefix("flow:").and_then(|f| f.parse().ok()),
                        source,
                        at: r.get(1)?,
                        previous: None,
                    })
                },
            )?;
            let Some(created) = created else {
                return Ok(Vec::new());
            };
            let mut all = vec![created];
            all.extend(c.all(
                "SELECT action, source, flow_id, at, previous_data FROM position_history
                 WHERE position_id = $1 ORDER BY id",
                args!(position_id),
                |r| {
                    Ok(HistoryEntry {
                        action: r.get(0)?,
                        source: r.get(1)?,
                        flow_id: r.get(2)?,
                        at: r.get(3)?,
                        previous: r
                            .get::<Option<String>>(4)?
                            .and_then(|p| serde_json::from_str(&p).ok()),
                    })
                },
            )?);
            Ok(all)
        })
    }

    fn list_positions(
        &self,
        entity: &str,
        filter: &PositionFilter<'_>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Position>> {
        let Some((sql, params)) =
            ops::list_positions_query(COLUMNS, entity, filter, after_id, limit)
        else {
            return Ok(Vec::new());
        };
        let args: Vec<Arg<'_>> = params.iter().map(Arg::from).collect();
        self.read(|c| c.all(&sql, &args, position_from))
    }

    fn expire_positions(
        &self,
        entity: &str,
        debt_type: &str,
        due_before: chrono::NaiveDate,
        after: i64,
        limit: u32,
    ) -> Result<Swept> {
        let before = due_before.to_string();
        let candidates: Vec<i64> = self.read(|c| {
            c.all(
                "SELECT id FROM positions WHERE entity = $1 AND debt_type = $2
                 AND status = 'active' AND due_date < $3 AND id > $4 ORDER BY id LIMIT $5",
                args!(entity, debt_type, before.as_str(), after, i64::from(limit)),
                |r| r.get::<i64>(0),
            )
        })?;
        let Some(&last) = candidates.last() else {
            return Ok(Swept::default());
        };
        let ts = ops::now();
        let expired = self.tx(|c| {
            let mut expired = Vec::with_capacity(candidates.len());
            for id in &candidates {
                // Changed since it was read (paid, annulled, modified), or expired by another
                // hub sweeping at once: left as it is.
                let row = c.one(
                    "UPDATE positions SET status = 'expired', version = version + 1, updated_at = $2
                     WHERE id = $1 AND status = 'active' AND due_date < $3
                     RETURNING id, iud, iuv, amount_cents, due_date",
                    args!(*id, ts.as_str(), before.as_str()),
                    |r| {
                        Ok((
                            r.get::<i64>(0)?,
                            r.get::<String>(1)?,
                            r.get::<Option<String>>(2)?,
                            r.get::<i64>(3)?,
                            r.get::<Option<String>>(4)?,
                        ))
                    },
                )?;
                expired.extend(row);
            }
            for (id, iud, iuv, cents, due) in &expired {
                c.execute(
                    "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data)
                     VALUES ($1, 'E', 'expiry', NULL, $2, NULL)",
                    args!(*id, ts.as_str()),
                )?;
                let (subject, mut payload) = ops::activation_payload(iud, iuv.as_deref(), *cents);
                payload["debt_type"] = debt_type.into();
                payload["due_date"] = due.clone().into();
                c.new_event(
                    &NewEvent {
                        kind: "position.expired",
                        entity,
                        subject: &subject,
                        payload,
                        correlation: None,
                    },
                    &ts,
                )?;
            }
            Ok(expired.len() as u32)
        })?;
        Ok(Swept {
            candidates: candidates.len() as u32,
            expired,
            last,
        })
    }

    fn expired_since(&self, entity: &str, after: i64, limit: u32) -> Result<Vec<(i64, Position)>> {
        // The expiry's id last, so the position's columns keep their places.
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", h.id FROM position_history h JOIN positions p ON p.id = h.position_id
             WHERE h.action = 'E' AND h.id > $2 AND p.entity = $1 ORDER BY h.id LIMIT $3"
        );
        self.read(|c| {
            c.all(sql, args!(entity, after, i64::from(limit)), |r| {
                let expiry: i64 = r.get(15)?;
                Ok((expiry, position_from(r)?))
            })
        })
    }
}

/// The node activated a payment of the position: counted, with its `payment.activated` event.
pub(crate) fn activate(
    c: &mut dyn Conn,
    position: i64,
    correlation: Option<&str>,
    ts: &str,
) -> Result<()> {
    let activated = c.one(
        "UPDATE positions SET activated_at = $2, activations = activations + 1 WHERE id = $1
         RETURNING entity, iud, iuv, amount_cents",
        args!(position, ts),
        |r| {
            let iuv: Option<String> = r.get(2)?;
            Ok((r.get::<String>(0)?, r.get::<String>(1)?, iuv, r.get(3)?))
        },
    )?;
    let Some((entity, iud, iuv, cents)) = activated else {
        return Ok(());
    };
    let (subject, payload) = ops::activation_payload(&iud, iuv.as_deref(), cents);
    let e = NewEvent {
        kind: "payment.activated",
        entity: &entity,
        subject: &subject,
        payload,
        correlation,
    };
    c.new_event(&e, ts)
}

/// The position statements of the import and receipt rules.
impl Ops<'_> {
    /// The live (not annulled) position of an IUD.
    pub fn live(&mut self, entity: &str, iud: &str) -> Result<Option<Live>> {
        let sql = self.c.pick(&LIVE);
        self.c.one(sql, args!(entity, iud), |r| {
            Ok(Live {
                id: r.get(0)?,
                iuv: r.get(1)?,
                iuv_generated: r.get(2)?,
                status: r.get(3)?,
                debt_type: r.get(4)?,
                amount_cents: r.get(5)?,
                data: r.get(6)?,
                activated_at: r.get(7)?,
            })
        })
    }

    pub fn modify_position(
        &mut self,
        id: i64,
        iuv: Option<&str>,
        d: &ChunkRow,
        flow_id: i64,
        ts: &str,
    ) -> Result<()> {
        let due = d.due_date.map(|d| d.to_string());
        self.c.execute(
            "UPDATE positions SET iuv = $2, amount_cents = $3, due_date = $4, payer_id = $5,
             data = $6, version = version + 1, flow_id = $7, updated_at = $8, status = 'active'
             WHERE id = $1",
            args!(
                id,
                iuv,
                d.amount.cents(),
                due.as_deref(),
                &d.payer_id,
                &d.data,
                flow_id,
                ts
            ),
        )?;
        Ok(())
    }

    pub fn annul_position(&mut self, id: i64, flow_id: i64, ts: &str) -> Result<()> {
        self.c.execute(
            "UPDATE positions SET status = 'annulled', version = version + 1, flow_id = $2,
             updated_at = $3 WHERE id = $1",
            args!(id, flow_id, ts),
        )?;
        Ok(())
    }

    pub fn pay_position(&mut self, id: i64, ts: &str) -> Result<()> {
        self.c.execute(
            "UPDATE positions SET status = 'paid', version = version + 1, updated_at = $2 WHERE id = $1",
            args!(id, ts),
        )?;
        Ok(())
    }

    pub fn history(
        &mut self,
        position_id: i64,
        action: &str,
        source: &str,
        flow_id: Option<i64>,
        ts: &str,
        previous: Option<&str>,
    ) -> Result<()> {
        self.c.execute(
            "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data)
             VALUES ($1, $2, $3, $4, $5, $6)",
            args!(position_id, action, source, flow_id, ts, previous),
        )?;
        Ok(())
    }

    /// The entity's next IUV counter value: read at the chunk's first generated IUV and written
    /// back by [`Ops::save_counter`] in the same transaction, so a rolled-back chunk never
    /// consumes values and a committed one never hands them out again.
    pub fn next_counter(&mut self, entity: &EntityKey<'_>) -> Result<u64> {
        let (next, _) = match &mut self.counter {
            Some(c) => c,
            None => {
                let key = args!(entity.ipa_code, entity.segregation_code.as_str());
                self.c.execute(
                    "INSERT INTO iuv_counters (entity, segregation_code, next_value)
                     VALUES ($1, $2, 1) ON CONFLICT DO NOTHING",
                    key,
                )?;
                let sql = self.c.pick(&COUNTER);
                let n = self.c.one(sql, key, |r| r.get::<i64>(0))?.ok_or_else(|| {
                    StoreError::Conflict(format!("no IUV counter for {}", entity.ipa_code))
                })?;
                self.counter.insert((n, n))
            }
        };
        let n = *next;
        *next += 1;
        Ok(n as u64)
    }

    pub fn save_counter(&mut self, entity: &EntityKey<'_>) -> Result<()> {
        let Some((next, read)) = self.counter else {
            return Ok(());
        };
        if next != read {
            self.c.execute(
                "UPDATE iuv_counters SET next_value = $3 WHERE entity = $1 AND segregation_code = $2",
                args!(entity.ipa_code, entity.segregation_code.as_str(), next),
            )?;
        }
        Ok(())
    }
}
