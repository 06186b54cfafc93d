//! The embedded store: one SQLite file in WAL mode, one writer connection.

use crate::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use snodo_core::dovuto::{Action, RejectCode};
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/sqlite_0001_init.sql"))];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path)?;
        // FULL: a commit survives power loss, not only a crash; commits are per chunk, so cheap.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA foreign_keys=ON;
             PRAGMA busy_timeout=10000;
             PRAGMA cache_size=-65536;",
        )?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let tx = conn.transaction()?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> = tx
                .query_row(
                    "SELECT version FROM schema_migrations WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, now()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

const FLOW_COLUMNS: &str = "id, entity, iuf, file_name, version, content_sha256, status, error_code, error_message, rows_done, accepted, rejected, scarti_bytes, iuv_bytes, created_at, updated_at";

fn flow_from_row(r: &Row<'_>) -> rusqlite::Result<Flow> {
    let status: String = r.get(6)?;
    Ok(Flow {
        id: r.get(0)?,
        entity: r.get(1)?,
        iuf: r.get(2)?,
        file_name: r.get(3)?,
        version: r.get(4)?,
        content_sha256: r.get(5)?,
        status: FlowStatus::parse(&status).unwrap_or(FlowStatus::Abortito),
        error_code: r.get(7)?,
        error_message: r.get(8)?,
        progress: Checkpoint {
            rows_done: r.get::<_, i64>(9)? as u64,
            accepted: r.get::<_, i64>(10)? as u64,
            rejected: r.get::<_, i64>(11)? as u64,
            scarti_bytes: r.get::<_, i64>(12)? as u64,
            iuv_bytes: r.get::<_, i64>(13)? as u64,
        },
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

/// A live position as the apply step needs it.
struct Live {
    id: i64,
    iuv: Option<String>,
    iuv_generated: bool,
    status: String,
    debt_type: String,
    data: String,
}

impl Store for SqliteStore {
    fn flows_by_iuf(&self, entity: &str, iuf: &str) -> Result<Vec<Flow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE entity = ?1 AND iuf = ?2 ORDER BY id DESC"
        ))?;
        let rows = stmt.query_map(params![entity, iuf], flow_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn flow(&self, id: i64) -> Result<Option<Flow>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = ?1"),
                [id],
                flow_from_row,
            )
            .optional()?)
    }

    fn create_flow(&self, f: &NewFlow<'_>) -> Result<Flow> {
        let conn = self.lock();
        let ts = now();
        conn.execute(
            "INSERT INTO flows (entity, iuf, file_name, version, content_sha256, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![f.entity, f.iuf, f.file_name, f.version, f.content_sha256, FlowStatus::LoadImport.as_str(), ts],
        )?;
        let id = conn.last_insert_rowid();
        conn.query_row(
            &format!("SELECT {FLOW_COLUMNS} FROM flows WHERE id = ?1"),
            [id],
            flow_from_row,
        )
        .map_err(Into::into)
    }

    fn set_flow_status(
        &self,
        id: i64,
        status: FlowStatus,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE flows SET status = ?2, error_code = ?3, error_message = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, status.as_str(), error.map(|e| e.0), error.map(|e| e.1), now()],
        )?;
        Ok(())
    }

    fn apply_chunk(
        &self,
        flow_id: i64,
        entity: &EntityKey<'_>,
        rows: &[DovutoRow],
        after: &mut ChunkCallback<'_>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let ts = now();
        let source = format!("flow:{flow_id}");
        let mut counter = Counter::load(&tx, entity)?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            let outcome = match row.action {
                Action::Insert => insert(
                    &tx,
                    entity,
                    flow_id,
                    &ts,
                    &source,
                    &row.dovuto,
                    &mut counter,
                )?,
                Action::Modify => modify(&tx, entity, flow_id, &ts, &source, &row.dovuto)?,
                Action::Annul => annul(&tx, entity, flow_id, &ts, &source, &row.dovuto)?,
            };
            outcomes.push(outcome);
        }
        counter.save(&tx, entity)?;
        let cp = after(&outcomes).map_err(StoreError::Callback)?;
        tx.execute(
            "UPDATE flows SET status = ?2, rows_done = ?3, accepted = ?4, rejected = ?5, scarti_bytes = ?6, iuv_bytes = ?7, updated_at = ?8 WHERE id = ?1",
            params![
                flow_id,
                FlowStatus::InElab.as_str(),
                cp.rows_done as i64,
                cp.accepted as i64,
                cp.rejected as i64,
                cp.scarti_bytes as i64,
                cp.iuv_bytes as i64,
                ts
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn positions(&self, entity: &str, query: &PositionQuery<'_>) -> Result<Vec<Position>> {
        let conn = self.lock();
        let base = "SELECT p.id, p.entity, p.iud, p.iuv, p.notice_number, p.iuv_generated, p.status, p.amount_cents, p.version, p.flow_id, p.created_at, p.updated_at, p.data,
                    (SELECT COUNT(*) FROM position_history h WHERE h.position_id = p.id)
                    FROM positions p WHERE p.entity = ?1";
        let (sql, arg): (String, Option<&str>) = match query {
            PositionQuery::All { .. } => (format!("{base} ORDER BY p.id LIMIT ?2"), None),
            PositionQuery::Iud(v) => (format!("{base} AND p.iud = ?2 ORDER BY p.id"), Some(v)),
            PositionQuery::Iuv(v) => (format!("{base} AND p.iuv = ?2 ORDER BY p.id"), Some(v)),
            PositionQuery::NoticeNumber(v) => (
                format!("{base} AND p.notice_number = ?2 ORDER BY p.id"),
                Some(v),
            ),
        };
        let mut stmt = conn.prepare_cached(&sql)?;
        let map = |r: &Row<'_>| -> rusqlite::Result<(Position, String)> {
            let status: String = r.get(6)?;
            let data: String = r.get(12)?;
            Ok((
                Position {
                    id: r.get(0)?,
                    entity: r.get(1)?,
                    iud: r.get(2)?,
                    iuv: r.get(3)?,
                    notice_number: r.get(4)?,
                    iuv_generated: r.get::<_, i64>(5)? != 0,
                    status: PositionStatus::parse(&status).unwrap_or(PositionStatus::Active),
                    amount_cents: r.get(7)?,
                    version: r.get(8)?,
                    flow_id: r.get(9)?,
                    created_at: r.get(10)?,
                    updated_at: r.get(11)?,
                    history_count: r.get(13)?,
                    dovuto: placeholder_dovuto(),
                },
                data,
            ))
        };
        let rows = match (query, arg) {
            (PositionQuery::All { limit }, _) => stmt
                .query_map(params![entity, *limit as i64], map)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            (_, Some(v)) => stmt
                .query_map(params![entity, v], map)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            (_, None) => Vec::new(),
        };
        rows.into_iter()
            .map(|(mut p, data)| {
                p.dovuto = serde_json::from_str(&data)
                    .map_err(|e| StoreError::Corrupt(format!("position {}: {e}", p.id)))?;
                Ok(p)
            })
            .collect()
    }

    fn history(&self, position_id: i64) -> Result<Vec<HistoryEntry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT action, source, flow_id, at, previous_data FROM position_history WHERE position_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([position_id], |r| {
            let prev: Option<String> = r.get(4)?;
            Ok(HistoryEntry {
                action: r.get(0)?,
                source: r.get(1)?,
                flow_id: r.get(2)?,
                at: r.get(3)?,
                previous: prev.and_then(|p| serde_json::from_str(&p).ok()),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// Replaced right after the row is read; avoids an Option in the public type.
fn placeholder_dovuto() -> Dovuto {
    Dovuto {
        iud: String::new(),
        iuv: None,
        generate_iuv: false,
        payer: Default::default(),
        due_date: None,
        amount: snodo_core::Amount::from_cents(0),
        pa_fee: None,
        debt_type: String::new(),
        payment_kinds: String::new(),
        causale: String::new(),
        dati_specifici_riscossione: String::new(),
        bilancio: None,
        secondary: None,
    }
}

/// The entity's IUV counter, read once per chunk and written back in the same transaction, so a
/// rolled-back chunk never consumes values and a committed one never hands them out again.
struct Counter {
    next: u64,
    dirty: bool,
}

impl Counter {
    fn load(tx: &Connection, e: &EntityKey<'_>) -> Result<Self> {
        let next: Option<i64> = tx
            .query_row(
                "SELECT next_value FROM iuv_counters WHERE entity = ?1 AND segregation_code = ?2",
                params![e.ipa_code, e.segregation_code.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Self {
            next: next.unwrap_or(1) as u64,
            dirty: false,
        })
    }

    fn take(&mut self, seg: SegregationCode) -> Result<Iuv> {
        let iuv = Iuv::generate(seg, self.next).map_err(|e| StoreError::Conflict(e.to_string()))?;
        self.next += 1;
        self.dirty = true;
        Ok(iuv)
    }

    fn save(&self, tx: &Connection, e: &EntityKey<'_>) -> Result<()> {
        if self.dirty {
            tx.execute(
                "INSERT INTO iuv_counters (entity, segregation_code, next_value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (entity, segregation_code) DO UPDATE SET next_value = excluded.next_value",
                params![e.ipa_code, e.segregation_code.as_str(), self.next as i64],
            )?;
        }
        Ok(())
    }
}

fn reject(code: RejectCode, msg: impl Into<String>) -> RowOutcome {
    RowOutcome::Rejected(Rejection::new(code, msg))
}

fn live(tx: &Connection, entity: &str, iud: &str) -> Result<Option<Live>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, iuv, iuv_generated, status, debt_type, data FROM positions WHERE entity = ?1 AND iud = ?2 AND status <> 'annulled'",
    )?;
    Ok(stmt
        .query_row(params![entity, iud], |r| {
            Ok(Live {
                id: r.get(0)?,
                iuv: r.get(1)?,
                iuv_generated: r.get::<_, i64>(2)? != 0,
                status: r.get(3)?,
                debt_type: r.get(4)?,
                data: r.get(5)?,
            })
        })
        .optional()?)
}

fn history(
    tx: &Connection,
    position_id: i64,
    action: &str,
    source: &str,
    flow_id: i64,
    ts: &str,
    previous: Option<&str>,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    stmt.execute(params![position_id, action, source, flow_id, ts, previous])?;
    Ok(())
}

fn to_json(d: &Dovuto) -> Result<String> {
    serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn insert(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    d: &Dovuto,
    counter: &mut Counter,
) -> Result<RowOutcome> {
    let (iuv, generated) = match (&d.iuv, d.generate_iuv) {
        (Some(iuv), _) => (Some(iuv.clone()), false),
        (None, true) => (Some(counter.take(entity.segregation_code)?), true),
        (None, false) => (None, false),
    };
    let notice = iuv.as_ref().and_then(|i| i.notice_number());
    let mut stored = d.clone();
    stored.iuv = iuv.clone();
    let data = to_json(&stored)?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO positions (entity, iud, iuv, notice_number, iuv_generated, status, debt_type, amount_cents, due_date, payer_id, data, version, flow_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?12)
         ON CONFLICT DO NOTHING",
    )?;
    let n = stmt.execute(params![
        entity.ipa_code,
        d.iud,
        iuv.as_ref().map(|i| i.as_str()),
        notice.as_ref().map(|n| n.as_str()),
        generated as i64,
        d.debt_type,
        d.amount.cents(),
        d.due_date.map(|d| d.to_string()),
        d.payer.id,
        data,
        flow_id,
        ts
    ])?;
    if n == 0 {
        return Ok(if live(tx, entity.ipa_code, &d.iud)?.is_some() {
            reject(
                RejectCode::IudDuplicato,
                format!("IUD {} already has a live position", d.iud),
            )
        } else {
            reject(
                RejectCode::IuvDuplicato,
                format!(
                    "IUV {} already belongs to a live position",
                    iuv.as_ref().map(|i| i.as_str()).unwrap_or("")
                ),
            )
        });
    }
    let id = tx.last_insert_rowid();
    history(tx, id, Action::Insert.as_str(), source, flow_id, ts, None)?;
    Ok(RowOutcome::Accepted {
        position_id: id,
        iuv,
        notice_number: notice,
        generated,
    })
}

fn modify(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    d: &Dovuto,
) -> Result<RowOutcome> {
    let Some(cur) = live(tx, entity.ipa_code, &d.iud)? else {
        return Ok(reject(
            RejectCode::DovutoNonPresente,
            format!("no live position with IUD {} to modify", d.iud),
        ));
    };
    if cur.status != PositionStatus::Active.as_str() {
        return Ok(reject(
            RejectCode::DovutoNonPresente,
            format!(
                "position with IUD {} is {} and cannot be modified",
                d.iud, cur.status
            ),
        ));
    }
    if cur.debt_type != d.debt_type {
        return Ok(reject(
            RejectCode::TipoDovutoNonModificabile,
            format!(
                "tipoDovuto cannot change from {} to {} on modify",
                cur.debt_type, d.debt_type
            ),
        ));
    }
    let iuv = match (&d.iuv, &cur.iuv) {
        (Some(new), Some(old)) if new.as_str() != old => {
            return Ok(reject(
                RejectCode::Iuv,
                format!("IUV cannot change on modify (position has {old}, row has {new})"),
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
            return Ok(reject(
                RejectCode::IuvNoNullable,
                format!("the position's IUV {old} cannot be blanked"),
            ))
        }
        (None, None) => None,
    };
    let notice = iuv.as_ref().and_then(|i| i.notice_number());
    let mut stored = d.clone();
    stored.iuv = iuv.clone();
    stored.generate_iuv = cur.iuv_generated;
    let data = to_json(&stored)?;
    let mut stmt = tx.prepare_cached(
        "UPDATE positions SET iuv = ?2, notice_number = ?3, amount_cents = ?4, due_date = ?5, payer_id = ?6, data = ?7,
         version = version + 1, flow_id = ?8, updated_at = ?9 WHERE id = ?1",
    )?;
    stmt.execute(params![
        cur.id,
        iuv.as_ref().map(|i| i.as_str()),
        notice.as_ref().map(|n| n.as_str()),
        d.amount.cents(),
        d.due_date.map(|d| d.to_string()),
        d.payer.id,
        data,
        flow_id,
        ts
    ])?;
    history(
        tx,
        cur.id,
        Action::Modify.as_str(),
        source,
        flow_id,
        ts,
        Some(&cur.data),
    )?;
    Ok(RowOutcome::Accepted {
        position_id: cur.id,
        iuv,
        notice_number: notice,
        generated: false,
    })
}

fn annul(
    tx: &Connection,
    entity: &EntityKey<'_>,
    flow_id: i64,
    ts: &str,
    source: &str,
    d: &Dovuto,
) -> Result<RowOutcome> {
    let Some(cur) = live(tx, entity.ipa_code, &d.iud)? else {
        return Ok(reject(
            RejectCode::DovutoNonPresente,
            format!("no live position with IUD {} to annul", d.iud),
        ));
    };
    if cur.status != PositionStatus::Active.as_str() {
        return Ok(reject(
            RejectCode::DovutoNonPresente,
            format!(
                "position with IUD {} is {} and cannot be annulled",
                d.iud, cur.status
            ),
        ));
    }
    let mut stmt = tx.prepare_cached(
        "UPDATE positions SET status = 'annulled', version = version + 1, flow_id = ?2, updated_at = ?3 WHERE id = ?1",
    )?;
    stmt.execute(params![cur.id, flow_id, ts])?;
    history(
        tx,
        cur.id,
        Action::Annul.as_str(),
        source,
        flow_id,
        ts,
        None,
    )?;
    let iuv = cur.iuv.as_deref().and_then(|s| Iuv::parse(s).ok());
    Ok(RowOutcome::Accepted {
        position_id: cur.id,
        notice_number: iuv.as_ref().and_then(|i| i.notice_number()),
        iuv,
        generated: false,
    })
}
