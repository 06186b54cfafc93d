//! What every store must do, written once over `&dyn Store` and run on SQLite (a temp file) and
//! on PostgreSQL (a fresh database per test on `SNODO_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). PostgreSQL being unreachable fails the PG
//! tests: a store suite that silently skips its second backend proves nothing about it.

use snodo_core::dovuto::{Action, Dovuto, DovutoRow, RejectCode, Subject, SubjectKind};
use snodo_core::{Amount, Iuv, NoticeNumber, SegregationCode};
use snodo_store::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A store under test, and how to open a second handle on the same data (another process).
struct Backend {
    store: Option<Box<dyn Store>>,
    setting: String,
    dir: tempfile::TempDir,
    /// PostgreSQL: (admin URL, database) to drop at the end.
    pg: Option<(String, String)>,
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let setting = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = open(&setting, dir.path()).unwrap();
        Self {
            store: Some(store),
            setting,
            dir,
            pg: None,
        }
    }

    fn pg() -> Self {
        let (setting, admin_url, db) = pg_database();
        let dir = tempfile::tempdir().unwrap();
        let store = open(&setting, dir.path()).unwrap();
        Self {
            store: Some(store),
            setting,
            dir,
            pg: Some((admin_url, db)),
        }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_deref().unwrap()
    }

    /// Rows of `sql` read straight from the database, not through the store, each as
    /// (text, text, integer, integer).
    fn raw(&self, sql: &str) -> Vec<(String, String, i64, i64)> {
        if self.pg.is_some() {
            let mut c = postgres::Client::connect(&self.setting, postgres::NoTls).unwrap();
            let rows = c.query(sql, &[]).unwrap();
            return rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
        }
        let c = rusqlite::Connection::open(self.dir.path().join("t.db")).unwrap();
        let mut st = c.prepare(sql).unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// Runs statements straight on the database.
    fn raw_batch(&self, sql: &str) {
        if self.pg.is_some() {
            let mut c = postgres::Client::connect(&self.setting, postgres::NoTls).unwrap();
            c.batch_execute(sql).unwrap();
        } else {
            let c = rusqlite::Connection::open(self.dir.path().join("t.db")).unwrap();
            c.execute_batch(sql).unwrap();
        }
    }

    /// Another handle on the same data, as a second hub would have.
    fn another(&self) -> Box<dyn Store> {
        open(&self.setting, self.dir.path()).unwrap()
    }
}

/// A fresh, empty database: (its URL, the admin URL, its name).
fn pg_database() -> (String, String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let admin_url = std::env::var("SNODO_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL for the store suite is unreachable at {admin_url}: {e}\n\
                 start it, or point SNODO_TEST_PG at a server where this user may CREATE DATABASE"
        )
    });
    let db = format!(
        "snodo_t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    // One statement each: CREATE DATABASE cannot run inside a (multi-statement) transaction.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap_or_else(|e| panic!("cannot create the test database {db}: {e}"));
    (with_database(&admin_url, &db), admin_url, db)
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.store.take();
        if let Some((admin_url, db)) = &self.pg {
            if let Ok(mut admin) = postgres::Client::connect(admin_url, postgres::NoTls) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        }
    }
}

/// The URL with its database replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Backend::sqlite()) } )*
        }
        mod pg {
            $( #[test] fn $name() { super::$name(&super::Backend::pg()) } )*
        }
    };
}

suite!(
    positions_expire_once_and_a_payment_in_progress_holds_changes,
    generated_iuvs_follow_the_counter_and_a_failed_chunk_consumes_nothing,
    duplicates_modify_annul_and_history,
    a_supplied_iuv_cannot_be_used_twice,
    receipts_pay_once_and_every_anomaly_is_kept,
    an_annulled_notice_is_found_as_annulled,
    deliveries_follow_the_debt_type_filter,
    concurrent_receipts_each_get_their_own_outcome,
    an_export_keeps_its_receipts_until_written_and_the_next_starts_after_it,
    the_outbox_claims_leases_retries_and_replays,
    every_change_writes_its_event,
    prune_keeps_the_newest_events,
    a_chunk_commits_only_from_the_expected_row_and_carries_its_outbox,
    a_stream_flow_is_created_once,
    job_leases_ticks_and_cursors,
    two_hubs_never_claim_the_same_delivery,
    two_hubs_take_one_tick_once,
    two_hubs_open_one_export,
    list_positions_filters,
    list_positions_pages_without_gaps_or_duplicates,
    receipts_after_pages_the_entitys_own_receipts,
    receipt_for_notice_prefers_the_one_that_paid,
    a_saved_response_is_the_first_writers,
    two_hubs_saving_one_key_keep_one_response,
    a_cart_is_opened_once,
    metric_counts_agree_with_counting_every_row,
    a_receipt_id_resent_with_other_content_is_a_flagged_copy,
    flagged_receipts_are_held_until_released_or_dismissed,
    a_worker_past_its_lease_cannot_overwrite_the_outcome,
    an_export_leaves_out_what_cannot_be_encoded,
    settlement_flows_link_resume_supersede_and_fail,
    reports_after_lists_finished_flows_and_stops_before_a_loading_one,
    a_finished_flow_is_delivered_once_per_reports_pipeline_unless_superseded,
    treasury_movements_apply_once_and_a_reversal_removes_its_movement,
    reconciliation_marks_labels_counts_and_the_export_cursor,
    a_secondary_beneficiary_s_row_finds_the_notice_entity_s_receipt,
    settlement_rows_and_lookups_go_in_batches,
    a_payment_outside_pagopa_pays_an_active_position_once,
    a_secondary_receipt_pays_nothing_and_reaches_only_its_deliveries,
);

const E: &str = "c_g224";

fn key() -> EntityKey<'static> {
    EntityKey {
        ipa_code: E,
        segregation_code: SegregationCode::parse("01").unwrap(),
        payment_in_progress: std::time::Duration::from_secs(1800),
    }
}

fn row_of(action: Action, iud: &str, cents: i64, generate: bool, debt_type: &str) -> ChunkRow {
    row_due(action, iud, cents, generate, debt_type, None)
}

fn row_due(
    action: Action,
    iud: &str,
    cents: i64,
    generate: bool,
    debt_type: &str,
    due: Option<&str>,
) -> ChunkRow {
    ChunkRow::new(DovutoRow {
        action,
        dovuto: Dovuto {
            iud: iud.into(),
            iuv: None,
            generate_iuv: generate,
            payer: Subject {
                kind: Some(SubjectKind::F),
                id: "RSSMRA85T10A562S".into(),
                name: "Mario Rossi".into(),
                ..Default::default()
            },
            due_date: due.map(|d| d.parse().unwrap()),
            amount: Amount::from_cents(cents),
            pa_fee: None,
            debt_type: debt_type.into(),
            payment_kinds: "ALL".into(),
            causale: "TARI".into(),
            dati_specifici_riscossione: "9/0101100IM/".into(),
            bilancio: None,
            secondary: None,
            transfers: Vec::new(),
            document_hash: None,
        },
    })
    .unwrap()
}

fn row(action: Action, iud: &str, cents: i64, generate: bool) -> ChunkRow {
    row_of(action, iud, cents, generate, "TARI")
}

fn new_flow(iuf: &str) -> NewFlow<'_> {
    NewFlow {
        entity: E,
        iuf,
        file_name: "f.zip",
        version: "1_4",
        content_sha256: "x",
    }
}

fn flow(s: &dyn Store, iuf: &str) -> i64 {
    s.create_flow(&new_flow(iuf)).unwrap().id
}

fn apply(s: &dyn Store, flow_id: i64, rows: &[ChunkRow]) -> Vec<RowOutcome> {
    let mut got = Vec::new();
    s.apply_chunk(flow_id, &key(), rows, None, &mut |o| {
        got = o.to_vec();
        Ok(Checkpoint {
            rows_done: o.len() as u64,
            ..Default::default()
        }
        .into())
    })
    .unwrap();
    got
}

fn iuv_of(o: &RowOutcome) -> String {
    match o {
        RowOutcome::Accepted { iuv: Some(i), .. } => i.as_str().to_string(),
        other => panic!("not accepted with an IUV: {other:?}"),
    }
}

fn notice_of(o: &RowOutcome) -> NoticeNumber {
    NoticeNumber::from_iuv17(&Iuv::parse(&iuv_of(o)).unwrap()).unwrap()
}

fn code_of(o: &RowOutcome) -> RejectCode {
    match o {
        RowOutcome::Rejected(r) => r.code,
        other => panic!("not rejected: {other:?}"),
    }
}

/// `erp` takes every receipt, `export` only TARI, `mensa` only MENSA.
fn pipelines() -> &'static [DeliverTo] {
    static P: std::sync::OnceLock<Vec<DeliverTo>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        vec![
            DeliverTo::all("erp", E),
            DeliverTo {
                debt_types: vec!["TARI".into()],
                ..DeliverTo::all("export", E)
            },
            DeliverTo {
                debt_types: vec!["MENSA".into()],
                ..DeliverTo::all("mensa", E)
            },
        ]
    })
}

fn receipt<'a>(notice: &'a NoticeNumber, id: &'a str, cents: i64) -> NewReceipt<'a> {
    NewReceipt {
        entity: E,
        notice_number: notice,
        receipt_id: id,
        amount_cents: cents,
        psp_id: "BCITITMM",
        psp_name: "Intesa Sanpaolo",
        payment_date: Some("2026-11-26"),
        operation: "paSendRTV2",
        xml: "<receipt/>",
        deliver_to: pipelines(),
        correlation: None,
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Events of `kind`, oldest first.
fn events_of(s: &dyn Store, kind: &str) -> Vec<Event> {
    s.events_after(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

fn generated_iuvs_follow_the_counter_and_a_failed_chunk_consumes_nothing(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 100, true),
        ],
    );
    assert_eq!(
        iuv_of(&out[0]),
        Iuv::generate(key().segregation_code, 1).unwrap().as_str()
    );
    assert_eq!(
        iuv_of(&out[1]),
        Iuv::generate(key().segregation_code, 2).unwrap().as_str()
    );

    // The callback fails (outcome files could not be written): nothing of the chunk stays.
    let err = s.apply_chunk(
        f,
        &key(),
        &[row(Action::Insert, "C", 100, true)],
        None,
        &mut |_| Err("disk full".into()),
    );
    assert!(matches!(err, Err(StoreError::Callback(m)) if m == "disk full"));
    assert!(s.positions(E, &PositionQuery::Iud("C")).unwrap().is_empty());
    assert_eq!(s.flow(f).unwrap().unwrap().progress.rows_done, 2);

    // The counter value the failed chunk drew was never committed, so it is handed out now.
    let out = apply(s, f, &[row(Action::Insert, "C", 100, true)]);
    assert_eq!(
        iuv_of(&out[0]),
        Iuv::generate(key().segregation_code, 3).unwrap().as_str()
    );
    let p = &s.positions(E, &PositionQuery::Iud("C")).unwrap()[0];
    assert_eq!(
        p.notice_number.as_deref(),
        Some(format!("3{}", iuv_of(&out[0])).as_str())
    );
    assert_eq!(
        p.dovuto.iuv.as_ref().map(|i| i.as_str().to_string()),
        Some(iuv_of(&out[0]))
    );
    assert!(p.iuv_generated);
    let by_notice = s
        .positions(
            E,
            &PositionQuery::NoticeNumber(p.notice_number.as_deref().unwrap()),
        )
        .unwrap();
    assert_eq!(by_notice[0].iud, "C");
    let by_iuv = s
        .positions(E, &PositionQuery::Iuv(p.iuv.as_deref().unwrap()))
        .unwrap();
    assert_eq!(by_iuv[0].id, p.id);
    let by_payer = s
        .positions(E, &PositionQuery::Payer(&p.dovuto.payer.id))
        .unwrap();
    assert!(by_payer.iter().any(|x| x.id == p.id), "found by its debtor");
    assert!(by_payer
        .iter()
        .all(|x| x.dovuto.payer.id == p.dovuto.payer.id));
    assert!(s
        .positions(E, &PositionQuery::Payer("NOBODY00A00A000A"))
        .unwrap()
        .is_empty());
    assert_eq!(
        s.positions(E, &PositionQuery::All { limit: 2 })
            .unwrap()
            .iter()
            .map(|p| p.iud.as_str())
            .collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert!(s
        .positions(E, &PositionQuery::NoticeNumber("not a notice"))
        .unwrap()
        .is_empty());
    assert_eq!(s.flows_by_iuf(E, "F1").unwrap()[0].id, f);
    assert_eq!(s.recent_flows(E, 10).unwrap().len(), 1);
}

fn duplicates_modify_annul_and_history(b: &Backend) {
    let s = b.store();
    let f1 = flow(s, "F1");
    apply(s, f1, &[row(Action::Insert, "A", 100, true)]);
    let f2 = flow(s, "F2");
    let out = apply(
        s,
        f2,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Modify, "A", 250, false),
            row(Action::Modify, "NOPE", 1, false),
            row(Action::Annul, "A", 250, false),
            row(Action::Modify, "A", 300, false),
            row(Action::Insert, "A", 400, false),
            row_of(Action::Modify, "A", 500, false, "MENSA"),
        ],
    );
    assert_eq!(code_of(&out[0]), RejectCode::IudDuplicato);
    assert!(matches!(out[1], RowOutcome::Accepted { .. }));
    assert_eq!(code_of(&out[2]), RejectCode::DovutoNonPresente);
    assert!(matches!(out[3], RowOutcome::Accepted { .. }));
    assert_eq!(
        code_of(&out[4]),
        RejectCode::DovutoNonPresente,
        "an annulled position cannot be modified"
    );
    assert!(
        matches!(out[5], RowOutcome::Accepted { .. }),
        "an annulled IUD is free again"
    );
    assert_eq!(code_of(&out[6]), RejectCode::TipoDovutoNonModificabile);

    let all = s.positions(E, &PositionQuery::Iud("A")).unwrap();
    assert_eq!(all.len(), 2);
    let old = &all[0];
    assert_eq!(old.status, PositionStatus::Annulled);
    assert_eq!(old.amount_cents, 250);
    assert_eq!(old.version, 3);
    let h = s.history(old.id).unwrap();
    assert_eq!(
        h.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["I", "M", "A"]
    );
    assert_eq!(h[0].flow_id, Some(f1));
    assert_eq!(h[0].source, format!("flow:{f1}"));
    assert_eq!(h[1].flow_id, Some(f2));
    assert_eq!(
        h[1].previous.as_ref().unwrap()["amount"],
        100,
        "the modify kept the replaced data"
    );
    assert_eq!(old.history_count, 3);
    assert_eq!(all[1].status, PositionStatus::Active);
    assert_eq!(all[1].amount_cents, 400);
    assert!(s.history(999_999).unwrap().is_empty());
}

fn positions_expire_once_and_a_payment_in_progress_holds_changes(b: &Backend) {
    let s = b.store();
    let f = flow(s, "EXP");
    let out = apply(
        s,
        f,
        &[
            row_due(Action::Insert, "OLD", 100, true, "TARI", Some("2026-01-10")),
            row_due(
                Action::Insert,
                "EDGE",
                100,
                true,
                "TARI",
                Some("2026-01-20"),
            ),
            row_due(
                Action::Insert,
                "MENSA",
                100,
                true,
                "MENSA",
                Some("2026-01-01"),
            ),
            row_due(Action::Insert, "NODATE", 100, true, "TARI", None),
            row_due(
                Action::Insert,
                "PAID",
                100,
                true,
                "TARI",
                Some("2026-01-01"),
            ),
        ],
    );
    let paid = notice_of(&out[4]);
    s.store_receipt(&receipt(&paid, "R-PAID", 100)).unwrap();
    let due_before = "2026-01-20".parse().unwrap();
    // Rounds of one: from the last id read, until fewer candidates than asked.
    let first = s.expire_positions(E, "TARI", due_before, 0, 1).unwrap();
    assert_eq!((first.candidates, first.expired), (1, 1));
    let next = s
        .expire_positions(E, "TARI", due_before, first.last, 1)
        .unwrap();
    assert_eq!((next.candidates, next.expired), (0, 0));
    let again = s.expire_positions(E, "TARI", due_before, 0, 10).unwrap();
    assert_eq!(again.expired, 0, "once");
    let status = |iud: &str| s.positions(E, &PositionQuery::Iud(iud)).unwrap()[0].status;
    assert_eq!(status("OLD"), PositionStatus::Expired);
    assert_eq!(
        status("EDGE"),
        PositionStatus::Active,
        "due on the day: not before it"
    );
    assert_eq!(status("MENSA"), PositionStatus::Active, "another debt type");
    assert_eq!(status("NODATE"), PositionStatus::Active);
    assert_eq!(status("PAID"), PositionStatus::Paid);
    let events = events_of(s, "position.expired");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["iud"], "OLD");
    assert_eq!(events[0].payload["due_date"], "2026-01-10");
    let old = &s.positions(E, &PositionQuery::Iud("OLD")).unwrap()[0];
    assert_eq!(
        s.history(old.id).unwrap().last().map(|h| h.action.clone()),
        Some("E".to_string())
    );
    let listed = s.expired_since(E, 0, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.iud, "OLD");
    assert!(s.expired_since(E, listed[0].0, 10).unwrap().is_empty());
    assert!(s.expired_since("c_d530", 0, 10).unwrap().is_empty());

    // An expired position may be modified (it opens again) or annulled.
    let f2 = flow(s, "EXP2");
    let out = apply(
        s,
        f2,
        &[row_due(
            Action::Modify,
            "OLD",
            150,
            false,
            "TARI",
            Some("2099-01-01"),
        )],
    );
    assert!(matches!(out[0], RowOutcome::Accepted { .. }), "{out:?}");
    assert_eq!(status("OLD"), PositionStatus::Active);

    // Activated a moment ago: modify and annul are refused, with MyPay's code and the reason.
    let edge = &s.positions(E, &PositionQuery::Iud("EDGE")).unwrap()[0];
    s.record_activation(edge.id, None).unwrap();
    let f3 = flow(s, "EXP3");
    let out = apply(
        s,
        f3,
        &[
            row_due(
                Action::Modify,
                "EDGE",
                150,
                false,
                "TARI",
                Some("2099-01-01"),
            ),
            row_due(
                Action::Annul,
                "EDGE",
                100,
                false,
                "TARI",
                Some("2026-01-20"),
            ),
        ],
    );
    for o in &out {
        assert_eq!(code_of(o), RejectCode::DovutoInPagamento);
        let RowOutcome::Rejected(r) = o else {
            unreachable!()
        };
        assert!(r.message.contains("being paid"), "{}", r.message);
    }
    assert_eq!(
        RejectCode::DovutoInPagamento.as_str(),
        "PAA_IMPORT_DOVUTO_NON_PRESENTE"
    );
    assert_eq!(edge.amount_cents, 100);
    // With no hold configured the same rows apply.
    let mut got = Vec::new();
    let f4 = flow(s, "EXP4");
    let no_hold = EntityKey {
        payment_in_progress: std::time::Duration::ZERO,
        ..key()
    };
    s.apply_chunk(
        f4,
        &no_hold,
        &[row_due(
            Action::Annul,
            "EDGE",
            100,
            false,
            "TARI",
            Some("2026-01-20"),
        )],
        None,
        &mut |o| {
            got = o.to_vec();
            Ok(Checkpoint {
                rows_done: o.len() as u64,
                ..Default::default()
            }
            .into())
        },
    )
    .unwrap();
    assert!(matches!(got[0], RowOutcome::Accepted { .. }), "{got:?}");
    assert_eq!(
        s.positions(E, &PositionQuery::Iud("EDGE")).unwrap()[0].status,
        PositionStatus::Annulled
    );
}

fn a_supplied_iuv_cannot_be_used_twice(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let mut a = row(Action::Insert, "A", 100, false);
    let iuv = Iuv::generate(key().segregation_code, 77).unwrap();
    a.iuv = Some(iuv.clone());
    let mut c = a.clone();
    c.iud = "B".into();
    let out = apply(s, f, &[a, c]);
    assert_eq!(iuv_of(&out[0]), iuv.as_str());
    assert_eq!(code_of(&out[1]), RejectCode::IuvDuplicato);
    let p = &s.positions(E, &PositionQuery::Iud("A")).unwrap()[0];
    assert!(!p.iuv_generated);

    // Within one run of inserts the rows still meet the indexes in order.
    let with_iuv = |iud: &str, n: u64| {
        let mut r = row(Action::Insert, iud, 100, false);
        r.iuv = Some(Iuv::generate(key().segregation_code, n).unwrap());
        r
    };
    let out = apply(
        s,
        f,
        &[
            with_iuv("C", 77),
            with_iuv("C", 78),
            with_iuv("D", 78),
            row(Action::Insert, "C", 100, true),
            row(Action::Insert, "E", 100, false),
            row(Action::Insert, "E", 300, false),
            with_iuv("F", 79),
        ],
    );
    assert_eq!(code_of(&out[0]), RejectCode::IuvDuplicato);
    assert_eq!(
        iuv_of(&out[1]),
        Iuv::generate(key().segregation_code, 78).unwrap().as_str()
    );
    assert_eq!(code_of(&out[2]), RejectCode::IuvDuplicato);
    assert_eq!(code_of(&out[3]), RejectCode::IudDuplicato);
    assert_eq!(code_of(&out[5]), RejectCode::IudDuplicato);
    for (i, iud) in [(1, "C"), (4, "E"), (6, "F")] {
        let RowOutcome::Accepted { position_id, .. } = out[i] else {
            panic!("row {i}: {:?}", out[i]);
        };
        let p = &s.positions(E, &PositionQuery::Iud(iud)).unwrap()[0];
        assert_eq!(p.id, position_id, "{iud}");
    }
    let e = &s.positions(E, &PositionQuery::Iud("E")).unwrap()[0];
    assert_eq!((e.amount_cents, e.iuv.as_deref()), (100, None));
    assert_eq!(events_of(s, "position.created").len(), 4);
}

fn receipts_pay_once_and_every_anomaly_is_kept(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 1250, true),
            row(Action::Insert, "B", 500, true),
        ],
    );
    let na = notice_of(&out[0]);
    let nb = notice_of(&out[1]);

    let p = s.position_by_notice(E, &na).unwrap().unwrap();
    assert_eq!(p.iud, "A");
    s.record_activation(p.id, None).unwrap();
    s.record_activation(p.id, None).unwrap();
    let p = s.position_by_notice(E, &na).unwrap().unwrap();
    assert_eq!(p.activations, 2);
    assert!(p.activated_at.is_some());

    let paid = s.store_receipt(&receipt(&na, "R1", 1250)).unwrap();
    assert!(matches!(paid, ReceiptStored::Paid { position, .. } if position == p.id));
    assert_eq!(
        s.store_receipt(&receipt(&na, "R1", 1250)).unwrap(),
        ReceiptStored::Duplicate
    );
    let p = s.position_by_notice(E, &na).unwrap().unwrap();
    assert_eq!(p.status, PositionStatus::Paid);
    assert_eq!(
        s.history(p.id).unwrap().last().unwrap().source,
        "receipt:R1"
    );

    let twice = s.store_receipt(&receipt(&na, "R2", 1250)).unwrap();
    assert!(matches!(
        twice,
        ReceiptStored::Flagged {
            issue: ReceiptIssue::AlreadyPaid,
            ..
        }
    ));
    let wrong = s.store_receipt(&receipt(&nb, "R3", 499)).unwrap();
    assert!(matches!(
        wrong,
        ReceiptStored::Flagged {
            issue: ReceiptIssue::AmountMismatch {
                expected_cents: 500
            },
            ..
        }
    ));
    assert_eq!(
        s.position_by_notice(E, &nb).unwrap().unwrap().status,
        PositionStatus::Active
    );
    let unknown = NoticeNumber::parse("301000000000012373").unwrap();
    let lost = s.store_receipt(&receipt(&unknown, "R4", 100)).unwrap();
    assert!(matches!(
        lost,
        ReceiptStored::Flagged {
            issue: ReceiptIssue::UnknownNotice,
            ..
        }
    ));
    assert!(s.position_by_notice(E, &unknown).unwrap().is_none());

    let stored = events_of(s, "receipt.stored");
    assert_eq!(
        stored.len(),
        4,
        "one event per stored receipt, none for the duplicate"
    );
    assert_eq!(stored[0].payload["receipt_id"], "R1");
    assert_eq!(stored[1].payload["issue"]["issue"], "already_paid");
    assert_eq!(events_of(s, "position.paid").len(), 1, "R1 only paid");
    assert_eq!(s.events_after(stored[1].id, 100).unwrap().len(), 2);

    let flagged = s.receipts(E, true, 10).unwrap();
    assert_eq!(
        flagged
            .iter()
            .map(|r| r.receipt_id.as_str())
            .collect::<Vec<_>>(),
        ["R4", "R3", "R2"]
    );
    assert_eq!(flagged[1].issue.as_deref(), Some("amount_mismatch"));
    let every = s.receipts(E, false, 10).unwrap();
    assert_eq!(every.len(), 4);
    assert_eq!(every[3].position_id, Some(p.id));
    assert_eq!(every[3].issue, None);
}

fn a_payment_outside_pagopa_pays_an_active_position_once(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 1250, true),
            row(Action::Insert, "B", 500, true),
        ],
    );
    let (ia, ib) = (iuv_of(&out[0]), iuv_of(&out[1]));
    apply(s, f, &[row(Action::Annul, "B", 500, false)]);
    fn outside(iuv: &str, cents: i64) -> OutsidePayment<'_> {
        OutsidePayment {
            entity: E,
            iuv,
            amount_cents: cents,
            source: "mypay:paaSILRegistraPagamento",
            details: serde_json::json!({"identificativoUnivocoRiscossione": "IUR-1"}),
        }
    }
    // Refusals write nothing.
    assert_eq!(
        s.record_outside_payment(&outside(&ia, 1249)).unwrap(),
        OutsidePaid::AmountMismatch {
            expected_cents: 1250
        }
    );
    assert!(matches!(
        s.record_outside_payment(&outside(&ib, 500)).unwrap(),
        OutsidePaid::Annulled { .. }
    ));
    assert_eq!(
        s.record_outside_payment(&outside("01000000000099999", 500))
            .unwrap(),
        OutsidePaid::Unknown
    );
    assert!(events_of(s, "position.paid").is_empty());
    let na = notice_of(&out[0]);
    let before = s.position_by_notice(E, &na).unwrap().unwrap();
    assert_eq!(before.status, PositionStatus::Active);

    let paid = s.record_outside_payment(&outside(&ia, 1250)).unwrap();
    assert_eq!(
        paid,
        OutsidePaid::Paid {
            position: before.id,
            iud: "A".into()
        }
    );
    let after = s.position_by_notice(E, &na).unwrap().unwrap();
    assert_eq!(after.status, PositionStatus::Paid);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(
        s.history(after.id).unwrap().last().unwrap().source,
        "mypay:paaSILRegistraPagamento"
    );
    let kept = s
        .ws_request(E, &outside_payment_token(after.id))
        .unwrap()
        .unwrap();
    assert_eq!(kept.kind, "payment");
    assert!(kept.params.contains("IUR-1"), "{}", kept.params);
    let events = events_of(s, "position.paid");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject, "A");
    assert_eq!(
        events[0].payload["outside_pagopa"]["identificativoUnivocoRiscossione"],
        "IUR-1"
    );
    // Again, or a receipt after it: nothing more is paid.
    assert!(matches!(
        s.record_outside_payment(&outside(&ia, 1250)).unwrap(),
        OutsidePaid::AlreadyPaid { .. }
    ));
    let late = s.store_receipt(&receipt(&na, "R1", 1250)).unwrap();
    assert!(matches!(
        late,
        ReceiptStored::Flagged {
            issue: ReceiptIssue::AlreadyPaid,
            ..
        }
    ));
    assert_eq!(events_of(s, "position.paid").len(), 1);
}

fn an_annulled_notice_is_found_as_annulled(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(s, f, &[row(Action::Insert, "A", 100, true)]);
    let n = notice_of(&out[0]);
    apply(s, f, &[row(Action::Annul, "A", 100, false)]);
    let p = s.position_by_notice(E, &n).unwrap().unwrap();
    assert_eq!(p.status, PositionStatus::Annulled);
    let late = s.store_receipt(&receipt(&n, "R9", 100)).unwrap();
    assert!(matches!(
        late,
        ReceiptStored::Flagged {
            issue: ReceiptIssue::Annulled,
            ..
        }
    ));
}

fn deliveries_follow_the_debt_type_filter(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(s, f, &[row(Action::Insert, "A", 100, true)]);
    let n = notice_of(&out[0]);
    s.store_receipt(&receipt(&n, "R1", 100)).unwrap();
    let unknown = NoticeNumber::parse("301000000000012373").unwrap();
    s.store_receipt(&receipt(&unknown, "R2", 100)).unwrap();
    let pending = |p: &str| {
        s.deliveries(DeliveryStatus::Pending, None, Some(p), 10)
            .unwrap()
            .into_iter()
            .map(|d| d.idempotency_key)
            .collect::<Vec<_>>()
    };
    assert_eq!(pending("erp"), ["R2", "R1"], "unfiltered: every receipt");
    assert_eq!(
        pending("export"),
        ["R1"],
        "TARI only; an unknown notice has no type"
    );
    assert!(pending("mensa").is_empty());
    assert_eq!(
        s.deliveries(DeliveryStatus::Pending, Some(E), None, 10)
            .unwrap()
            .len(),
        3
    );
}

fn concurrent_receipts_each_get_their_own_outcome(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let rows: Vec<ChunkRow> = (0..32)
        .map(|i| row(Action::Insert, &format!("I{i}"), 100 + i, true))
        .collect();
    let out = apply(s, f, &rows);
    let notices: Vec<NoticeNumber> = out.iter().map(notice_of).collect();
    std::thread::scope(|scope| {
        let threads: Vec<_> = notices
            .iter()
            .enumerate()
            .map(|(i, n)| {
                scope.spawn(move || {
                    // Every other receipt has the wrong amount: flagged, but its neighbours pay.
                    let cents = if i % 2 == 0 { 100 + i as i64 } else { 1 };
                    let id = format!("R{i}");
                    let first = s.store_receipt(&receipt(n, &id, cents)).unwrap();
                    let again = s.store_receipt(&receipt(n, &id, cents)).unwrap();
                    (i, first, again)
                })
            })
            .collect();
        for t in threads {
            let (i, first, again) = t.join().unwrap();
            if i % 2 == 0 {
                assert!(
                    matches!(first, ReceiptStored::Paid { .. }),
                    "R{i}: {first:?}"
                );
            } else {
                assert!(
                    matches!(
                        first,
                        ReceiptStored::Flagged {
                            issue: ReceiptIssue::AmountMismatch { .. },
                            ..
                        }
                    ),
                    "R{i}: {first:?}"
                );
            }
            assert_eq!(again, ReceiptStored::Duplicate, "R{i}");
        }
    });
    // The same receipt racing itself on two hubs: stored once, the other is a duplicate.
    let other = b.another();
    let n = &notices[1];
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| s.store_receipt(&receipt(n, "RACE", 101)).unwrap());
        let y = scope.spawn(|| other.store_receipt(&receipt(n, "RACE", 101)).unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(
        [&x, &y]
            .iter()
            .filter(|r| ***r == ReceiptStored::Duplicate)
            .count(),
        1,
        "{x:?} {y:?}"
    );
    assert_eq!(events_of(s, "receipt.stored").len(), 33);
    assert_eq!(events_of(s, "position.paid").len(), 17);
    let m = s.metrics().unwrap();
    assert_eq!(m.receipts, vec![(E.to_string(), 33, 16)]);
}

fn an_export_keeps_its_receipts_until_written_and_the_next_starts_after_it(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 200, true),
            row(Action::Insert, "C", 300, true),
        ],
    );
    let n: Vec<NoticeNumber> = out.iter().map(notice_of).collect();
    assert!(s.open_export("export", E, false).unwrap().is_none());
    let empty = s.open_export("export", E, true).unwrap().unwrap();
    assert_eq!(empty.receipts, 0);
    s.finish_export(empty.id).unwrap();

    s.store_receipt(&receipt(&n[0], "R1", 100)).unwrap();
    s.store_receipt(&receipt(&n[1], "R2", 200)).unwrap();
    let first = s.open_export("export", E, false).unwrap().unwrap();
    assert_eq!((first.receipts, first.resumed), (2, false));
    assert_eq!(s.unfinished_export("export").unwrap().unwrap().id, first.id);
    // A receipt arriving while the file is written belongs to the next file.
    s.store_receipt(&receipt(&n[2], "R3", 300)).unwrap();
    s.fail_export(first.id, "disk full").unwrap();
    // The crash: the open export is found again, with the same receipts and name.
    let again = s.open_export("export", E, false).unwrap().unwrap();
    assert_eq!(again.id, first.id);
    assert!(again.resumed);
    assert_eq!(again.created_at, first.created_at);
    let items = s.export_items(again.id).unwrap();
    assert_eq!(items.len(), 2);
    assert!(!items[0].secondary);
    s.finish_export(again.id).unwrap();
    let delivered = s
        .deliveries(DeliveryStatus::Delivered, None, Some("export"), 10)
        .unwrap();
    assert_eq!(delivered.len(), 2);

    let next = s.open_export("export", E, false).unwrap().unwrap();
    assert_ne!(next.id, first.id);
    let items = s.export_items(next.id).unwrap();
    assert_eq!(items.len(), 1);
    let doc = s.receipt_document(items[0].receipt).unwrap().unwrap();
    assert_eq!(doc.receipt.receipt_id, "R3");
    s.finish_export(next.id).unwrap();
    assert!(s.open_export("export", E, false).unwrap().is_none());
    assert!(s.unfinished_export("export").unwrap().is_none());
}

fn the_outbox_claims_leases_retries_and_replays(b: &Backend) {
    let s = b.store();
    s.ping().unwrap();
    let f = flow(s, "F1");
    let out = apply(s, f, &[row(Action::Insert, "A", 1250, true)]);
    let n = notice_of(&out[0]);
    s.store_receipt(&receipt(&n, "R1", 1250)).unwrap();
    assert_eq!(
        s.store_receipt(&receipt(&n, "R1", 1250)).unwrap(),
        ReceiptStored::Duplicate
    );

    let claimed = s
        .claim_deliveries(
            "erp",
            "9999-01-01T00:00:00.000Z",
            "9999-01-01T00:01:00.000Z",
            10,
        )
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "one delivery per pipeline, none for the duplicate"
    );
    let d = &claimed[0];
    assert_eq!((d.idempotency_key.as_str(), d.entity.as_str()), ("R1", E));
    assert!(
        s.claim_deliveries(
            "erp",
            "9999-01-01T00:00:30.000Z",
            "9999-01-01T00:02:00.000Z",
            10
        )
        .unwrap()
        .is_empty(),
        "leased"
    );
    // The worker died: the lease runs out and another claims it.
    let again = s
        .claim_deliveries(
            "erp",
            "9999-01-01T00:01:30.000Z",
            "9999-01-01T00:03:00.000Z",
            10,
        )
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].lease_until.as_deref(),
        Some("9999-01-01T00:03:00.000Z")
    );

    // The first worker outlived its lease: what it says is discarded, the second's counts.
    assert!(!s
        .record_attempt(
            d,
            &Attempt::Dead {
                error: "late".into()
            }
        )
        .unwrap());
    assert!(s
        .record_attempt(
            &again[0],
            &Attempt::Retry {
                at: "9999-02-01T00:00:00.000Z".into(),
                error: "HTTP 500".into(),
            },
        )
        .unwrap());
    assert!(
        s.claim_deliveries(
            "erp",
            "9999-01-15T00:00:00.000Z",
            "9999-01-15T00:01:00.000Z",
            10
        )
        .unwrap()
        .is_empty(),
        "not due yet"
    );
    let due = s
        .claim_deliveries(
            "erp",
            "9999-02-01T00:00:00.000Z",
            "9999-02-01T00:01:00.000Z",
            10,
        )
        .unwrap();
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].last_error.as_deref(), Some("HTTP 500"));

    s.record_attempt(
        &due[0],
        &Attempt::Dead {
            error: "HTTP 400: bad".into(),
        },
    )
    .unwrap();
    let dead = s
        .deliveries(DeliveryStatus::Dead, Some(E), None, 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert!(s
        .deliveries(DeliveryStatus::Dead, Some("c_d530"), None, 10)
        .unwrap()
        .is_empty());
    let m = s.metrics().unwrap();
    assert!(m.deliveries.contains(&("erp".into(), "dead".into(), 1)));
    assert!(m.retried.contains(&("erp".into(), 1)));
    assert_eq!(m.import_rows, vec![(E.to_string(), 0, 0)]);
    assert_eq!(s.replay(&[], Some(E)).unwrap(), 1);
    let back = s.delivery(d.id).unwrap().unwrap();
    assert_eq!((back.status, back.attempts), (DeliveryStatus::Pending, 0));
    let again = s
        .claim_deliveries(
            "erp",
            "9999-03-01T00:00:00.000Z",
            "9999-03-01T00:01:00.000Z",
            10,
        )
        .unwrap();
    s.record_attempt(&again[0], &Attempt::Delivered).unwrap();
    let done = s.delivery(d.id).unwrap().unwrap();
    assert_eq!(done.status, DeliveryStatus::Delivered);
    assert!(done.delivered_at.is_some());
    assert_eq!(s.replay(&[d.id], None).unwrap(), 0, "only dead letters");
    assert!(s.delivery(999_999).unwrap().is_none());

    let doc = s.receipt_document(d.receipt.unwrap()).unwrap().unwrap();
    assert_eq!(doc.iud.as_deref(), Some("A"));
    assert_eq!(doc.debt_type.as_deref(), Some("TARI"));
    assert_eq!(doc.xml, "<receipt/>");
    assert_eq!(doc.receipt.receipt_id, "R1");
}

fn every_change_writes_its_event(b: &Backend) {
    let s = b.store();
    let f = s.create_flow(&new_flow("F1")).unwrap();
    let corr = format!("flow-{}", f.id);
    let e = s.events_after(0, 10).unwrap();
    assert_eq!(kinds(&e), ["flow.received"]);
    assert_eq!((e[0].entity.as_str(), e[0].subject.as_str()), (E, "F1"));
    assert_eq!(e[0].correlation.as_deref(), Some(corr.as_str()));
    assert_eq!(e[0].payload["flow_id"], f.id);
    assert_eq!(e[0].payload["file_name"], "f.zip");
    assert!(e[0].at.ends_with('Z') && e[0].at.len() == 24, "{}", e[0].at);
    let mark = e[0].id;

    let out = apply(
        s,
        f.id,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 200, true),
            row(Action::Insert, "A", 100, true),
            row(Action::Modify, "A", 150, false),
            row(Action::Annul, "B", 999, false),
        ],
    );
    let e = s.events_after(mark, 10).unwrap();
    assert_eq!(
        kinds(&e),
        [
            "position.created",
            "position.created",
            "position.modified",
            "position.annulled"
        ],
        "one per accepted row, none for the rejected duplicate"
    );
    // Stored as one row for the chunk: one id, told apart by part, never cut by the limit.
    assert!(e.iter().all(|x| x.id == e[0].id), "one stored row");
    assert_eq!(e.iter().map(|x| x.part).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(s.events_after(mark, 1).unwrap().len(), 4, "whole rows only");
    let stored: i64 = s.last_event_id().unwrap();
    assert_eq!(stored, e[0].id, "nothing else stored for the chunk");
    assert!(e
        .iter()
        .all(|e| e.correlation.as_deref() == Some(corr.as_str()) && e.entity == E));
    assert_eq!(e[0].subject, "A");
    assert_eq!(e[0].payload["iuv"], iuv_of(&out[0]));
    assert_eq!(e[0].payload["notice_number"], notice_of(&out[0]).as_str());
    assert_eq!(e[0].payload["amount_cents"], 100);
    assert_eq!(e[0].payload["debt_type"], "TARI");
    assert_eq!(e[0].payload["flow_id"], f.id);
    assert_eq!(e[2].payload["amount_cents"], 150);
    assert_eq!(
        (e[3].subject.as_str(), &e[3].payload["amount_cents"]),
        ("B", &serde_json::json!(200)),
        "the annulment tells the stored amount"
    );
    let mark = e[3].id;

    s.set_flow_status(f.id, FlowStatus::Eseguito, None).unwrap();
    s.set_flow_status(f.id, FlowStatus::Eseguito, None).unwrap();
    let g = flow(s, "F2");
    s.set_flow_status(g, FlowStatus::Abortito, Some(("PAA_X", "broken")))
        .unwrap();
    let e = s.events_after(mark, 10).unwrap();
    assert_eq!(
        kinds(&e),
        ["flow.imported", "flow.received", "flow.aborted"],
        "a status that does not change writes nothing"
    );
    assert_eq!(e[0].subject, "F1");
    assert_eq!(e[0].payload["flow_id"], f.id);
    assert!(e[0].payload.get("error_code").is_none());
    assert_eq!(e[2].payload["error_code"], "PAA_X");
    assert_eq!(e[2].payload["error_message"], "broken");
    assert_eq!(e[2].correlation, Some(format!("flow-{g}")));
    let mark = e[2].id;

    let na = notice_of(&out[0]);
    let p = s.position_by_notice(E, &na).unwrap().unwrap();
    s.record_activation(p.id, Some("req-1")).unwrap();
    s.store_receipt(&NewReceipt {
        correlation: Some("req-2"),
        ..receipt(&na, "R1", 150)
    })
    .unwrap();
    let e = s.events_after(mark, 10).unwrap();
    assert_eq!(
        kinds(&e),
        ["payment.activated", "receipt.stored", "position.paid"]
    );
    assert_eq!(e[0].subject, na.as_str());
    assert_eq!(e[0].correlation.as_deref(), Some("req-1"));
    assert_eq!(e[0].payload["iud"], "A");
    assert_eq!(e[0].payload["amount_cents"], 150);
    assert_eq!(e[0].payload["notice_number"], na.as_str());
    assert_eq!(e[1].correlation.as_deref(), Some("req-2"));
    assert_eq!(e[2].subject, "A");
    assert_eq!(e[2].correlation.as_deref(), Some("req-2"));
    assert_eq!(e[2].payload["receipt_id"], "R1");
    assert_eq!(e[2].payload["iuv"], iuv_of(&out[0]));
    let mark = e[2].id;

    let d = s
        .claim_deliveries(
            "erp",
            "9999-01-01T00:00:00.000Z",
            "9999-01-01T00:01:00.000Z",
            10,
        )
        .unwrap();
    s.record_attempts(&[(
        d[0].claim(),
        Attempt::Retry {
            at: "9999-01-02T00:00:00.000Z".into(),
            error: "HTTP 503".into(),
        },
    )])
    .unwrap();
    let claim = |at: &str, until: &str| s.claim_deliveries("erp", at, until, 10).unwrap();
    let due = claim("9999-01-02T00:00:00.000Z", "9999-01-02T00:01:00.000Z");
    s.record_attempt(
        &due[0],
        &Attempt::Dead {
            error: "HTTP 400".into(),
        },
    )
    .unwrap();
    s.replay(&[d[0].id], None).unwrap();
    let replayed = claim("9999-01-03T00:00:00.000Z", "9999-01-03T00:01:00.000Z");
    s.record_attempt(&replayed[0], &Attempt::Delivered).unwrap();
    let e = s.events_after(mark, 10).unwrap();
    assert_eq!(
        kinds(&e),
        ["delivery.retried", "delivery.dead"],
        "nothing for a delivery"
    );
    assert_eq!((e[0].entity.as_str(), e[0].subject.as_str()), (E, "R1"));
    assert_eq!(e[0].payload["delivery"], d[0].id);
    assert_eq!(e[0].payload["pipeline"], "erp");
    assert_eq!(e[0].payload["attempts"], 1);
    assert_eq!(e[0].payload["error"], "HTTP 503");
    assert_eq!(e[0].payload["next_attempt_at"], "9999-01-02T00:00:00.000Z");
    assert_eq!(e[1].payload["attempts"], 2);
    assert!(e[1].payload.get("next_attempt_at").is_none());
    let mark = e[1].id;

    s.record_events(&[
        NewEvent {
            kind: "sftp.published",
            entity: E,
            subject: "x.zip",
            payload: serde_json::json!({"bytes": 10}),
            correlation: Some("c"),
        },
        NewEvent {
            kind: "sftp.acked",
            entity: E,
            subject: "x.zip",
            payload: serde_json::json!(null),
            correlation: None,
        },
    ])
    .unwrap();
    s.record_events(&[]).unwrap();
    let e = s.events_after(mark, 10).unwrap();
    assert_eq!(kinds(&e), ["sftp.published", "sftp.acked"]);
    assert_eq!(e[0].payload["bytes"], 10);
    assert_eq!(e[0].correlation.as_deref(), Some("c"));
    assert_eq!(e[1].correlation, None);
}

fn prune_keeps_the_newest_events(b: &Backend) {
    let s = b.store();
    assert_eq!(s.prune_events(10).unwrap(), 0, "nothing to prune");
    let events: Vec<NewEvent> = (0..25)
        .map(|_| NewEvent {
            kind: "tick",
            entity: E,
            subject: "s",
            payload: serde_json::json!({}),
            correlation: None,
        })
        .collect();
    s.record_events(&events).unwrap();
    let all = s.events_after(0, 100).unwrap();
    assert_eq!(s.prune_events(100).unwrap(), 0);
    assert_eq!(s.prune_events(10).unwrap(), 15);
    let left = s.events_after(0, 100).unwrap();
    assert_eq!(
        left.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[15..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(s.prune_events(10).unwrap(), 0);
    assert_eq!(s.prune_events(0).unwrap(), 10);
    assert!(s.events_after(0, 100).unwrap().is_empty());
    // Ids go on after a prune: a reader's position stays meaningful.
    s.record_events(&events[..1]).unwrap();
    assert!(s.events_after(0, 1).unwrap()[0].id > all[24].id);
}

fn a_chunk_commits_only_from_the_expected_row_and_carries_its_outbox(b: &Backend) {
    let s = b.store();
    let f = s.stream_flow(&new_flow("partition-0")).unwrap().id;
    let chunk = |rows: &[ChunkRow], expect: Option<u64>, done: u64, replies: &[&str]| {
        let outbox: Vec<OutboxMessage> = replies
            .iter()
            .map(|r| OutboxMessage {
                key: format!("k-{r}"),
                payload: r.to_string(),
            })
            .collect();
        s.apply_chunk(f, &key(), rows, expect, &mut |_| {
            Ok(ChunkCommit {
                checkpoint: Checkpoint {
                    rows_done: done,
                    accepted: done,
                    ..Default::default()
                },
                outbox: outbox.clone(),
            })
        })
    };
    chunk(&[row(Action::Insert, "A", 100, true)], Some(0), 1, &["a"]).unwrap();
    // A second process replays the same offset: refused whole, nothing applied.
    let err = chunk(&[row(Action::Insert, "B", 100, true)], Some(0), 1, &["b"]);
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert!(s.positions(E, &PositionQuery::Iud("B")).unwrap().is_empty());
    // An empty chunk still moves the offset and commits its replies.
    chunk(&[], Some(1), 2, &["c", "d"]).unwrap();
    chunk(&[row(Action::Insert, "B", 100, true)], Some(2), 3, &[]).unwrap();
    // Unchecked chunks (file imports) go as before.
    chunk(&[], None, 3, &["e"]).unwrap();
    let flow = s.flow(f).unwrap().unwrap();
    assert_eq!(flow.progress.rows_done, 3);
    assert_eq!(flow.status, FlowStatus::InElab);
    let gen2 = Iuv::generate(key().segregation_code, 2).unwrap();
    assert_eq!(
        s.positions(E, &PositionQuery::Iud("B")).unwrap()[0]
            .iuv
            .as_deref(),
        Some(gen2.as_str()),
        "the refused chunk drew no IUV"
    );
    let missing = s.apply_chunk(999_999, &key(), &[], Some(0), &mut |_| {
        Ok(Checkpoint::default().into())
    });
    assert!(matches!(missing, Err(StoreError::Conflict(_))));

    let out = s.flow_outbox(f, 10).unwrap();
    assert_eq!(
        out.iter()
            .map(|(_, m)| m.payload.as_str())
            .collect::<Vec<_>>(),
        ["a", "c", "d", "e"]
    );
    assert_eq!(out[0].1.key, "k-a");
    assert_eq!(s.flow_outbox(f, 2).unwrap().len(), 2);
    let other = s.stream_flow(&new_flow("partition-1")).unwrap().id;
    assert!(s.flow_outbox(other, 10).unwrap().is_empty());
    s.clear_flow_outbox(&[out[0].0, out[2].0]).unwrap();
    s.clear_flow_outbox(&[]).unwrap();
    assert_eq!(
        s.flow_outbox(f, 10)
            .unwrap()
            .iter()
            .map(|(_, m)| m.payload.as_str())
            .collect::<Vec<_>>(),
        ["c", "e"]
    );
}

fn a_stream_flow_is_created_once(b: &Backend) {
    let s = b.store();
    let first = s.stream_flow(&new_flow("orders-0")).unwrap();
    assert_eq!(first.status, FlowStatus::InElab);
    assert_eq!(first.progress, Checkpoint::default());
    assert!(
        s.events_after(0, 10).unwrap().is_empty(),
        "a standing flow is not a received file"
    );
    let again = s.stream_flow(&new_flow("orders-0")).unwrap();
    assert_eq!(again.id, first.id);
    // A file import with the same IUF is a flow of its own.
    let file = flow(s, "orders-0");
    assert_ne!(file, first.id);
    assert_eq!(s.stream_flow(&new_flow("orders-0")).unwrap().id, first.id);

    // Two hubs starting together on a new partition agree on one flow.
    let other = b.another();
    for p in 0..8 {
        let iuf = format!("race-{p}");
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| s.stream_flow(&new_flow(&iuf)).unwrap().id);
            let y = scope.spawn(|| other.stream_flow(&new_flow(&iuf)).unwrap().id);
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(x, y);
    }
}

fn job_leases_ticks_and_cursors(b: &Backend) {
    let s = b.store();
    let t = |m: u32| format!("2026-05-01T10:{m:02}:00.000Z");
    assert_eq!(s.job_cursor("export").unwrap(), 0);
    assert!(s.take_job("export", "hub-a", &t(0), &t(5), None).unwrap());
    assert!(
        !s.take_job("export", "hub-b", &t(1), &t(6), None).unwrap(),
        "held by hub-a"
    );
    assert!(
        s.take_job("export", "hub-a", &t(2), &t(7), None).unwrap(),
        "renewed by its holder"
    );
    assert!(!s.take_job("export", "hub-b", &t(6), &t(11), None).unwrap());
    assert!(
        s.take_job("export", "hub-b", &t(8), &t(13), None).unwrap(),
        "expired: taken over"
    );
    assert!(s.set_job_cursor("export", "hub-b", 42).unwrap());
    assert!(
        !s.set_job_cursor("export", "hub-a", 7).unwrap(),
        "not the holder"
    );
    assert_eq!(s.job_cursor("export").unwrap(), 42);
    s.release_job("export", "hub-a").unwrap();
    assert!(
        !s.take_job("export", "hub-c", &t(9), &t(14), None).unwrap(),
        "a non-holder cannot release it"
    );
    s.release_job("export", "hub-b").unwrap();
    assert!(
        !s.set_job_cursor("export", "hub-b", 43).unwrap(),
        "released"
    );
    assert!(
        s.take_job("export", "hub-c", &t(9), &t(14), None).unwrap(),
        "released: free"
    );
    assert_eq!(s.job_cursor("export").unwrap(), 42, "the cursor stays");
    s.release_job("export", "hub-c").unwrap();

    // Ticks: each cron tick runs once, whoever holds the lease.
    let tick = |m: u32| format!("2026-05-01T11:{m:02}:00.000Z");
    assert!(s
        .take_job("cron", "hub-a", &t(0), &t(1), Some(&tick(0)))
        .unwrap());
    s.release_job("cron", "hub-a").unwrap();
    assert!(
        !s.take_job("cron", "hub-b", &t(2), &t(3), Some(&tick(0)))
            .unwrap(),
        "this tick ran"
    );
    assert!(
        !s.take_job("cron", "hub-a", &t(2), &t(3), Some(&tick(0)))
            .unwrap(),
        "not even its holder runs it twice"
    );
    assert!(s
        .take_job("cron", "hub-b", &t(2), &t(3), Some(&tick(5)))
        .unwrap());
    assert!(
        !s.take_job("cron", "hub-a", &t(2), &t(3), Some(&tick(10)))
            .unwrap(),
        "a newer tick still waits for the lease"
    );
    assert!(
        !s.take_job("cron", "hub-b", &t(2), &t(3), Some(&tick(4)))
            .unwrap(),
        "an older tick never runs"
    );
    assert!(
        s.take_job("cron", "hub-b", &t(2), &t(4), None).unwrap(),
        "a renewal without a tick keeps the tick"
    );
    assert!(!s
        .take_job("cron", "hub-b", &t(2), &t(4), Some(&tick(5)))
        .unwrap());
}

fn two_hubs_never_claim_the_same_delivery(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let rows: Vec<ChunkRow> = (0..120)
        .map(|i| row(Action::Insert, &format!("I{i}"), 100, true))
        .collect();
    let out = apply(s, f, &rows);
    let only_erp = [DeliverTo::all("erp", E)];
    for (i, o) in out.iter().enumerate() {
        let n = notice_of(o);
        let id = format!("R{i}");
        s.store_receipt(&NewReceipt {
            deliver_to: &only_erp,
            ..receipt(&n, &id, 100)
        })
        .unwrap();
    }
    let other = b.another();
    let stores: [&dyn Store; 2] = [s, &*other];
    let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let st = stores[w % 2];
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let got = st
                            .claim_deliveries(
                                "erp",
                                "9999-01-01T00:00:00.000Z",
                                "9999-01-01T00:01:00.000Z",
                                7,
                            )
                            .unwrap();
                        if got.is_empty() {
                            break;
                        }
                        mine.extend(got.iter().map(|d| d.id));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = claimed.concat();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "a delivery was claimed twice");
    assert_eq!(total, 120, "every delivery was claimed");
}

fn two_hubs_take_one_tick_once(b: &Backend) {
    let s = b.store();
    let other = b.another();
    let stores: [&dyn Store; 2] = [s, &*other];
    for round in 0..5u32 {
        let tick = format!("2026-05-01T12:{round:02}:00.000Z");
        let now = format!("2026-05-01T12:{round:02}:01.000Z");
        let until = "2026-05-01T11:00:00.000Z"; // already past: leases never block the next round
        let wins: usize = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|i| {
                    let st = stores[i % 2];
                    let (tick, now) = (&tick, &now);
                    scope.spawn(move || {
                        st.take_job("nightly", &format!("hub-{i}"), now, until, Some(tick))
                            .unwrap() as usize
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(wins, 1, "round {round}");
    }
}

fn two_hubs_open_one_export(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &(0..20)
            .map(|i| row(Action::Insert, &format!("I{i}"), 100, true))
            .collect::<Vec<_>>(),
    );
    for (i, o) in out.iter().enumerate() {
        let n = notice_of(o);
        s.store_receipt(&receipt(&n, &format!("R{i}"), 100))
            .unwrap();
    }
    let other = b.another();
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| s.open_export("export", E, false).unwrap().unwrap());
        let y = scope.spawn(|| other.open_export("export", E, false).unwrap().unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(x.id, y.id, "one export, resumed by the second");
    assert_ne!(x.resumed, y.resumed);
    assert_eq!((x.receipts, y.receipts), (20, 20));
    assert_eq!(s.export_items(x.id).unwrap().len(), 20);
}

/// Another entity of the store, with a flow to import into.
const OTHER: &str = "c_other";

fn apply_other(s: &dyn Store, rows: &[ChunkRow]) -> Vec<RowOutcome> {
    let f = s
        .create_flow(&NewFlow {
            entity: OTHER,
            ..new_flow("OTHER")
        })
        .unwrap()
        .id;
    let key = EntityKey {
        ipa_code: OTHER,
        segregation_code: SegregationCode::parse("01").unwrap(),
        payment_in_progress: std::time::Duration::from_secs(1800),
    };
    let mut got = Vec::new();
    s.apply_chunk(f, &key, rows, None, &mut |o| {
        got = o.to_vec();
        Ok(Checkpoint::default().into())
    })
    .unwrap();
    got
}

fn iuds(positions: &[Position]) -> Vec<&str> {
    positions.iter().map(|p| p.iud.as_str()).collect()
}

fn list_positions_filters(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row_due(Action::Insert, "A", 100, true, "TARI", Some("2026-01-10")),
            row_due(Action::Insert, "B", 200, true, "TARI", Some("2026-01-20")),
            row_due(Action::Insert, "C", 300, true, "MENSA", Some("2026-01-31")),
            row_due(Action::Insert, "D", 400, true, "MENSA", None),
            row_due(Action::Insert, "X", 500, true, "TARI", Some("2026-01-15")),
        ],
    );
    apply(s, f, &[row(Action::Annul, "X", 500, false)]);
    let nb = notice_of(&out[1]);
    s.store_receipt(&receipt(&nb, "R1", 200)).unwrap();
    let a = s.positions(E, &PositionQuery::Iud("A")).unwrap().remove(0);
    s.record_activation(a.id, None).unwrap();
    // The other entity's positions are never listed, even with the same IUD and IUV.
    apply_other(
        s,
        &[row_due(
            Action::Insert,
            "A",
            100,
            true,
            "TARI",
            Some("2026-01-10"),
        )],
    );

    let list = |f: PositionFilter<'_>| s.list_positions(E, &f, 0, 100).unwrap();
    let all = list(PositionFilter::default());
    assert_eq!(iuds(&all), ["A", "B", "C", "D", "X"]);
    // Built as `positions` builds them: history, activations and data alike.
    for p in &all {
        let one = s
            .positions(E, &PositionQuery::Iud(&p.iud))
            .unwrap()
            .remove(0);
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::to_value(&one).unwrap()
        );
    }
    assert_eq!((all[0].activations, all[0].history_count), (1, 1));
    assert_eq!(all[1].status, PositionStatus::Paid);
    assert_eq!(all[4].history_count, 2);

    let status = |st| {
        iuds(&list(PositionFilter {
            status: Some(st),
            ..Default::default()
        }))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    assert_eq!(status(PositionStatus::Active), ["A", "C", "D"]);
    assert_eq!(status(PositionStatus::Paid), ["B"]);
    assert_eq!(status(PositionStatus::Annulled), ["X"]);
    assert!(status(PositionStatus::Expired).is_empty());

    let mensa = list(PositionFilter {
        debt_type: Some("MENSA"),
        ..Default::default()
    });
    assert_eq!(iuds(&mensa), ["C", "D"]);
    let active_tari = list(PositionFilter {
        status: Some(PositionStatus::Active),
        debt_type: Some("TARI"),
        ..Default::default()
    });
    assert_eq!(iuds(&active_tari), ["A"]);

    let day = |d: &str| Some(d.parse::<chrono::NaiveDate>().unwrap());
    let from = list(PositionFilter {
        due_from: day("2026-01-15"),
        ..Default::default()
    });
    assert_eq!(iuds(&from), ["B", "C", "X"], "inclusive; undated left out");
    let to = list(PositionFilter {
        due_to: day("2026-01-20"),
        ..Default::default()
    });
    assert_eq!(iuds(&to), ["A", "B", "X"], "inclusive; undated left out");
    let one_day = list(PositionFilter {
        due_from: day("2026-01-20"),
        due_to: day("2026-01-20"),
        ..Default::default()
    });
    assert_eq!(iuds(&one_day), ["B"]);
    let range = list(PositionFilter {
        due_from: day("2026-01-11"),
        due_to: day("2026-01-30"),
        ..Default::default()
    });
    assert_eq!(iuds(&range), ["B", "X"]);

    let iuv_a = iuv_of(&out[0]);
    let iuv_x = iuv_of(&out[4]);
    let by_iuv = |iuv: &str| {
        list(PositionFilter {
            iuv: Some(iuv),
            ..Default::default()
        })
    };
    assert_eq!(iuds(&by_iuv(&iuv_a)), ["A"]);
    assert_eq!(iuds(&by_iuv(&iuv_x)), ["X"], "an annulled one too");
    assert!(by_iuv("01000000000000999").is_empty());
    let by_notice = |n: &str| {
        list(PositionFilter {
            notice_number: Some(n),
            ..Default::default()
        })
    };
    assert_eq!(iuds(&by_notice(nb.as_str())), ["B"]);
    assert_eq!(
        by_notice(nb.as_str())[0].notice_number.as_deref(),
        Some(nb.as_str())
    );
    assert!(by_notice("not a notice").is_empty());
    // Aux 1 carries the same 17 digits, but positions only show aux 3 notices.
    assert!(NoticeNumber::parse(&format!("1{}", &nb.as_str()[1..])).is_ok());
    assert!(by_notice(&format!("1{}", &nb.as_str()[1..])).is_empty());
    let both = |iuv: &str, n: &str| {
        list(PositionFilter {
            iuv: Some(iuv),
            notice_number: Some(n),
            ..Default::default()
        })
    };
    assert!(both(&iuv_a, nb.as_str()).is_empty(), "they disagree");
    assert_eq!(iuds(&both(&iuv_of(&out[1]), nb.as_str())), ["B"]);
    let paid_b = list(PositionFilter {
        iuv: Some(&iuv_of(&out[1])),
        status: Some(PositionStatus::Active),
        ..Default::default()
    });
    assert!(paid_b.is_empty(), "B is paid");

    // The cursor and the limit apply to filtered lists as well.
    let after_a = s
        .list_positions(E, &PositionFilter::default(), all[0].id, 2)
        .unwrap();
    assert_eq!(iuds(&after_a), ["B", "C"]);
    assert!(s
        .list_positions(E, &PositionFilter::default(), all[4].id, 10)
        .unwrap()
        .is_empty());

    // A flow's positions: those it created or changed last (as the notices of a flow read them).
    let f2 = flow(s, "F2");
    apply(
        s,
        f2,
        &[row_due(Action::Insert, "E", 600, true, "TARI", None)],
    );
    let of_flow = |id: i64, status: Option<PositionStatus>| {
        list(PositionFilter {
            flow_id: Some(id),
            status,
            ..Default::default()
        })
    };
    assert_eq!(iuds(&of_flow(f, None)), ["A", "B", "C", "D", "X"]);
    assert_eq!(
        iuds(&of_flow(f, Some(PositionStatus::Active))),
        ["A", "C", "D"]
    );
    assert_eq!(iuds(&of_flow(f2, None)), ["E"]);
    assert!(of_flow(f2 + 1000, None).is_empty());
    assert!(s
        .list_positions(
            E,
            &PositionFilter {
                iuv: Some(&iuv_a),
                ..Default::default()
            },
            all[0].id,
            10
        )
        .unwrap()
        .is_empty());
    assert_eq!(
        iuds(
            &s.list_positions(OTHER, &PositionFilter::default(), 0, 10)
                .unwrap()
        ),
        ["A"]
    );
    assert!(s
        .list_positions("nobody", &PositionFilter::default(), 0, 10)
        .unwrap()
        .is_empty());
}

fn list_positions_pages_without_gaps_or_duplicates(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    // The entity's positions interleaved with another entity's: pages never cross over.
    for i in 0..25 {
        let debt_type = if i % 3 == 0 { "MENSA" } else { "TARI" };
        apply(
            s,
            f,
            &[row_of(
                Action::Insert,
                &format!("P{i:02}"),
                100,
                true,
                debt_type,
            )],
        );
        apply_other(s, &[row(Action::Insert, &format!("O{i:02}"), 100, true)]);
    }
    let walk = |filter: &PositionFilter<'_>, page: u32| {
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, 0);
        loop {
            let got = s.list_positions(E, filter, after, page).unwrap();
            assert!(got.len() <= page as usize);
            let Some(last) = got.last() else { break };
            assert!(last.id > after, "the cursor moves on");
            after = last.id;
            pages += 1;
            seen.extend(got.iter().map(|p| (p.id, p.iud.clone())));
        }
        (seen, pages)
    };
    let (seen, pages) = walk(&PositionFilter::default(), 7);
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..25).map(|i| format!("P{i:02}")).collect();
    assert_eq!(
        seen.iter().map(|(_, iud)| iud.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "ascending ids");

    let mensa = PositionFilter {
        debt_type: Some("MENSA"),
        ..Default::default()
    };
    let (seen, pages) = walk(&mensa, 3);
    let expected: Vec<String> = (0..25)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("P{i:02}"))
        .collect();
    assert_eq!(
        seen.iter().map(|(_, iud)| iud.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(pages, 3);
    let (seen, _) = walk(&mensa, 1);
    assert_eq!(seen.len(), 9);
}

fn receipts_after_pages_the_entitys_own_receipts(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let mine = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row_of(Action::Insert, "B", 200, true, "MENSA"),
            row(Action::Insert, "C", 300, true),
        ],
    );
    let theirs = apply_other(s, &[row(Action::Insert, "Z", 100, true)]);
    let unknown = NoticeNumber::parse("301000000000012373").unwrap();
    let (na, nb, nc, nz) = (
        notice_of(&mine[0]),
        notice_of(&mine[1]),
        notice_of(&mine[2]),
        notice_of(&theirs[0]),
    );
    s.store_receipt(&NewReceipt {
        xml: "<a/>",
        ..receipt(&na, "R1", 100)
    })
    .unwrap();
    s.store_receipt(&NewReceipt {
        entity: OTHER,
        deliver_to: &[],
        ..receipt(&nz, "R1", 100)
    })
    .unwrap();
    s.store_receipt(&receipt(&nb, "R2", 200)).unwrap();
    s.store_receipt(&receipt(&unknown, "R3", 1)).unwrap();
    s.store_receipt(&NewReceipt {
        entity: OTHER,
        deliver_to: &[],
        ..receipt(&unknown, "R4", 1)
    })
    .unwrap();
    s.store_receipt(&receipt(&nc, "R5", 300)).unwrap();

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.receipts_after(E, after, 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        assert!(last.receipt.id > after, "the cursor moves on");
        after = last.receipt.id;
        seen.extend(page);
    }
    assert_eq!(
        seen.iter()
            .map(|d| d.receipt.receipt_id.as_str())
            .collect::<Vec<_>>(),
        ["R1", "R2", "R3", "R5"]
    );
    assert!(seen.iter().all(|d| d.receipt.entity == E));
    assert!(seen.windows(2).all(|w| w[0].receipt.id < w[1].receipt.id));
    // What a format needs, as `receipt_document` gives it.
    assert_eq!(seen[0].xml, "<a/>");
    assert_eq!(
        (seen[1].iud.as_deref(), seen[1].debt_type.as_deref()),
        (Some("B"), Some("MENSA"))
    );
    assert_eq!(
        (seen[2].iud.as_deref(), seen[2].receipt.issue.as_deref()),
        (None, Some("unknown_notice"))
    );
    let doc = s.receipt_document(seen[3].receipt.id).unwrap().unwrap();
    assert_eq!(
        (
            doc.xml.as_str(),
            doc.iud.as_deref(),
            doc.receipt.receipt_id.as_str()
        ),
        (seen[3].xml.as_str(), seen[3].iud.as_deref(), "R5")
    );
    assert!(s
        .receipts_after(E, seen[3].receipt.id, 10)
        .unwrap()
        .is_empty());
    let theirs: Vec<String> = s
        .receipts_after(OTHER, 0, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.receipt.receipt_id)
        .collect();
    assert_eq!(theirs, ["R1", "R4"]);
}

fn receipt_for_notice_prefers_the_one_that_paid(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 200, true),
        ],
    );
    let (na, nb) = (notice_of(&out[0]), notice_of(&out[1]));
    assert!(s.receipt_for_notice(E, na.as_str()).unwrap().is_none());
    s.store_receipt(&receipt(&na, "R1", 99)).unwrap();
    let got = |n: &NoticeNumber| {
        s.receipt_for_notice(E, n.as_str())
            .unwrap()
            .map(|r| r.receipt_id)
    };
    assert_eq!(got(&na).as_deref(), Some("R1"), "flagged, but the only one");
    s.store_receipt(&receipt(&na, "R2", 100)).unwrap();
    s.store_receipt(&receipt(&na, "R3", 100)).unwrap(); // paid twice: flagged
    assert_eq!(got(&na).as_deref(), Some("R2"), "the one that paid");
    let r2 = s.receipt_for_notice(E, na.as_str()).unwrap().unwrap();
    assert_eq!((r2.issue, r2.amount_cents), (None, 100));

    s.store_receipt(&receipt(&nb, "R4", 1)).unwrap();
    s.store_receipt(&receipt(&nb, "R5", 2)).unwrap();
    assert_eq!(got(&nb).as_deref(), Some("R5"), "the latest of the flagged");
    assert!(s.receipt_for_notice(OTHER, na.as_str()).unwrap().is_none());
    assert!(s
        .receipt_for_notice(E, "301000000000012373")
        .unwrap()
        .is_none());
}

fn saved(sha: &str, status: u16, body: &str) -> SavedResponse {
    SavedResponse {
        request_sha256: sha.into(),
        status,
        body: body.into(),
    }
}

fn a_saved_response_is_the_first_writers(b: &Backend) {
    let s = b.store();
    assert_eq!(s.saved_response("c_g224:positions", "k1").unwrap(), None);
    let first = saved("aaa", 201, r#"{"iud":"A"}"#);
    assert_eq!(
        s.save_response("c_g224:positions", "k1", &first).unwrap(),
        first
    );
    let second = saved("bbb", 422, "{}");
    assert_eq!(
        s.save_response("c_g224:positions", "k1", &second).unwrap(),
        first,
        "the first writer's response stays"
    );
    assert_eq!(
        s.saved_response("c_g224:positions", "k1").unwrap(),
        Some(first.clone())
    );
    // Keys are per scope.
    assert_eq!(s.saved_response("c_other:positions", "k1").unwrap(), None);
    assert_eq!(
        s.save_response("c_other:positions", "k1", &second).unwrap(),
        second
    );

    // Pruning forgets what was kept before the given time, only that.
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mid = at(chrono::Utc::now());
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.save_response("c_g224:positions", "k2", &second).unwrap();
    assert_eq!(
        s.prune_saved_responses("2000-01-01T00:00:00.000Z").unwrap(),
        0
    );
    assert_eq!(s.prune_saved_responses(&mid).unwrap(), 2);
    assert_eq!(s.saved_response("c_g224:positions", "k1").unwrap(), None);
    assert_eq!(s.saved_response("c_other:positions", "k1").unwrap(), None);
    assert_eq!(
        s.saved_response("c_g224:positions", "k2").unwrap(),
        Some(second.clone())
    );
    // A forgotten key can be kept again.
    assert_eq!(
        s.save_response("c_g224:positions", "k1", &second).unwrap(),
        second
    );
    let later = at(chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(s.prune_saved_responses(&later).unwrap(), 2);
    assert_eq!(s.saved_response("c_g224:positions", "k2").unwrap(), None);
}

fn two_hubs_saving_one_key_keep_one_response(b: &Backend) {
    let s = b.store();
    let other = b.another();
    for round in 0..16 {
        let key = format!("k{round}");
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| s.save_response("sc", &key, &saved("x", 201, "x")).unwrap());
            let y = scope.spawn(|| {
                other
                    .save_response("sc", &key, &saved("y", 200, "y"))
                    .unwrap()
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(x, y, "round {round}: both get the first writer's");
        assert_eq!(s.saved_response("sc", &key).unwrap(), Some(x.clone()));
        assert_eq!(other.saved_response("sc", &key).unwrap(), Some(x));
    }
}

fn a_cart_is_opened_once(b: &Backend) {
    let s = b.store();
    let notices = vec![
        "301000000000012373".to_string(),
        "301000000000012470".to_string(),
    ];
    let urls = r#"{"returnOkUrl":"https://ok","returnCancelUrl":"https://ko","returnErrorUrl":"https://err"}"#;
    let new = NewCart {
        id: "cart-1",
        entity: E,
        notice_numbers: &notices,
        redirect_url: "https://checkout/c/1",
        return_urls: urls,
    };
    assert_eq!(s.cart(E, "cart-1").unwrap(), None);
    let cart = s.create_cart(&new).unwrap();
    assert_eq!(
        (
            cart.id.as_str(),
            cart.entity.as_str(),
            cart.redirect_url.as_str()
        ),
        ("cart-1", E, "https://checkout/c/1")
    );
    assert_eq!(cart.notice_numbers, notices, "in the caller's order");
    assert_eq!(cart.return_urls, urls);
    assert!(!cart.created_at.is_empty());
    // Again, even with other data: the cart as first recorded, and no second event.
    let again = s
        .create_cart(&NewCart {
            notice_numbers: &notices[..1],
            redirect_url: "https://checkout/c/2",
            ..new.clone()
        })
        .unwrap();
    assert_eq!(again, cart);
    assert_eq!(s.cart(E, "cart-1").unwrap(), Some(cart.clone()));
    assert_eq!(s.cart(OTHER, "cart-1").unwrap(), None);
    assert_eq!(s.cart(E, "cart-2").unwrap(), None);
    // Another entity's cart with the same id is its own.
    let theirs = s
        .create_cart(&NewCart {
            entity: OTHER,
            notice_numbers: &notices[1..],
            ..new.clone()
        })
        .unwrap();
    assert_eq!(
        (theirs.entity.as_str(), theirs.notice_numbers.len()),
        (OTHER, 1)
    );
    assert_eq!(s.cart(E, "cart-1").unwrap(), Some(cart));

    // Two hubs opening the same cart at once record it once.
    let other = b.another();
    for round in 0..8 {
        let id = format!("race-{round}");
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| {
                s.create_cart(&NewCart {
                    id: &id,
                    ..new.clone()
                })
                .unwrap()
            });
            let y = scope.spawn(|| {
                other
                    .create_cart(&NewCart {
                        id: &id,
                        redirect_url: "https://checkout/other",
                        ..new.clone()
                    })
                    .unwrap()
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(x, y, "round {round}");
    }

    let opened = events_of(s, "cart.opened");
    assert_eq!(opened.len(), 2 + 8, "one event per cart recorded");
    assert_eq!(
        (opened[0].entity.as_str(), opened[0].subject.as_str()),
        (E, "cart-1")
    );
    assert_eq!(opened[0].payload, serde_json::json!({ "notices": notices }));
    assert_eq!(opened[0].correlation, None);
    assert_eq!(
        (
            opened[1].entity.as_str(),
            opened[1].payload["notices"].clone()
        ),
        (OTHER, serde_json::json!(["301000000000012470"]))
    );
}

/// Hubs starting together migrate one at a time; a `PgStore` may be opened and dropped in async
/// code (the driver's own runtime must not be created or dropped on a runtime thread).
#[test]
fn pg_hubs_migrate_at_once_and_a_store_lives_in_async_code() {
    let (setting, admin_url, db) = pg_database();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend {
        store: None,
        setting: setting.clone(),
        dir,
        pg: Some((admin_url, db)),
    };
    let stores: Vec<Box<dyn Store>> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| open(&setting, b.dir.path())))
            .collect();
        opening
            .into_iter()
            .map(|o| o.join().unwrap().unwrap())
            .collect()
    });
    stores[0].ping().unwrap();
    drop(stores);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let url = setting.clone();
    rt.block_on(async move {
        let s: std::sync::Arc<dyn Store> = open(&url, std::path::Path::new(".")).unwrap().into();
        let t = s.clone();
        tokio::task::spawn_blocking(move || t.ping())
            .await
            .unwrap()
            .unwrap();
        drop(s);
    });
    assert!(matches!(
        open("mysql://x", b.dir.path()),
        Err(StoreError::Open(m)) if m.contains("postgres://")
    ));
}

/// The scrape's numbers counted the slow way, over every row (as `/metrics` did before it kept
/// running totals): what the totals must always equal.
fn counted(b: &Backend) -> StoreMetrics {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let three = |rows: Vec<(String, String, i64, i64)>| {
        rows.into_iter()
            .map(|(a, _, n, m)| (a, n, m))
            .collect::<Vec<_>>()
    };
    StoreMetrics {
        receipts: three(b.raw(
            "SELECT entity, CAST('' AS TEXT), COUNT(*), COUNT(issue) FROM receipts
             GROUP BY entity ORDER BY entity",
        )),
        deliveries: b
            .raw(&format!(
                "SELECT pipeline,
                        CASE WHEN status = 'pending' AND lease_until > '{now}' THEN 'in_flight'
                             ELSE status END AS s,
                        COUNT(*), CAST(0 AS BIGINT) FROM deliveries
                 GROUP BY pipeline, s ORDER BY pipeline, s"
            ))
            .into_iter()
            .map(|(p, s, n, _)| (p, s, n))
            .collect(),
        retried: b
            .raw(
                "SELECT pipeline, CAST('' AS TEXT), COUNT(*), CAST(0 AS BIGINT) FROM deliveries
                 WHERE attempts > 1 OR (status = 'pending' AND attempts > 0)
                 GROUP BY pipeline ORDER BY pipeline",
            )
            .into_iter()
            .map(|(p, _, n, _)| (p, n))
            .collect(),
        import_rows: three(b.raw(
            "SELECT entity, CAST('' AS TEXT), CAST(SUM(accepted) AS BIGINT),
                    CAST(SUM(rejected) AS BIGINT)
             FROM flows GROUP BY entity ORDER BY entity",
        )),
        secondary: b
            .raw(
                "SELECT entity, CAST('' AS TEXT), COUNT(*), CAST(0 AS BIGINT) FROM receipts
                 WHERE issuer IS NOT NULL GROUP BY entity ORDER BY entity",
            )
            .into_iter()
            .map(|(e, _, n, _)| (e, n))
            .collect(),
        held: Vec::new(),
        reports: Vec::new(),
        reconciliation: Vec::new(),
    }
}

/// The running totals behind `/metrics` equal a count of every row after each kind of write,
/// from two hubs, and after the migration counts them from rows already stored.
fn metric_counts_agree_with_counting_every_row(b: &Backend) {
    let s = b.store();
    let agree = |want: &StoreMetrics| {
        let got = s.metrics().unwrap();
        assert_eq!(&got, want);
        assert_eq!(got, counted(b));
    };
    agree(&StoreMetrics::default());

    // Import rows: each checkpoint carries the flow's totals so far; a refused chunk counts
    // nothing. An entity whose flows took no row yet is listed at zero.
    let f = flow(s, "F1");
    let chunk = |f: i64, rows: &[ChunkRow], expect: Option<u64>, before: Checkpoint| {
        s.apply_chunk(f, &key(), rows, expect, &mut |o| {
            let accepted = o
                .iter()
                .filter(|o| matches!(o, RowOutcome::Accepted { .. }))
                .count() as u64;
            Ok(Checkpoint {
                rows_done: before.rows_done + o.len() as u64,
                accepted: before.accepted + accepted,
                rejected: before.rejected + o.len() as u64 - accepted,
                ..Default::default()
            }
            .into())
        })
    };
    let rows = [
        row(Action::Insert, "A", 1250, true),
        row(Action::Insert, "B", 100, true),
        row(Action::Insert, "A", 1250, true),
    ];
    chunk(f, &rows, Some(0), Checkpoint::default()).unwrap();
    let done = s.flow(f).unwrap().unwrap().progress;
    assert_eq!((done.accepted, done.rejected), (2, 1));
    let err = chunk(f, &[row(Action::Insert, "C", 1, true)], Some(0), done);
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    chunk(f, &[row(Action::Insert, "C", 700, true)], Some(3), done).unwrap();
    let stream = s.stream_flow(&new_flow("partition-0")).unwrap().id;
    chunk(
        stream,
        &[row(Action::Modify, "nobody", 1, false)],
        None,
        Checkpoint::default(),
    )
    .unwrap();
    s.create_flow(&NewFlow {
        entity: "c_d530",
        ..new_flow("F9")
    })
    .unwrap();
    let mut want = StoreMetrics {
        import_rows: vec![("c_d530".to_string(), 0, 0), (E.to_string(), 3, 2)],
        ..Default::default()
    };
    agree(&want);

    // Receipts: one pays, one has the wrong amount, one names no position; a receipt sent again
    // (on this hub or another) counts once. erp takes each, export the TARI ones.
    let notice = |iud: &str| {
        let p = &s.positions(E, &PositionQuery::Iud(iud)).unwrap()[0];
        NoticeNumber::parse(p.notice_number.as_deref().unwrap()).unwrap()
    };
    let (a, bb, c) = (notice("A"), notice("B"), notice("C"));
    let unknown = NoticeNumber::parse("301000000000012373").unwrap();
    let other = b.another();
    s.store_receipt(&receipt(&a, "R-A", 1250)).unwrap();
    s.store_receipt(&receipt(&bb, "R-B", 1)).unwrap();
    other.store_receipt(&receipt(&unknown, "R-X", 1)).unwrap();
    other.store_receipt(&receipt(&c, "R-C", 700)).unwrap();
    for (n, id, cents) in [(&a, "R-A", 1250), (&unknown, "R-X", 1)] {
        assert_eq!(
            s.store_receipt(&receipt(n, id, cents)).unwrap(),
            ReceiptStored::Duplicate
        );
        assert_eq!(
            other.store_receipt(&receipt(n, id, cents)).unwrap(),
            ReceiptStored::Duplicate
        );
    }
    want.receipts = vec![(E.to_string(), 4, 2)];
    want.deliveries = vec![
        ("erp".to_string(), "pending".to_string(), 4),
        ("export".to_string(), "pending".to_string(), 3),
    ];
    agree(&want);

    // Deliveries change state: leased (in flight), delivered, retried, dead, replayed.
    let far = |m: u32| format!("9999-{m:02}-01T00:00:00.000Z");
    let claimed = s.claim_deliveries("erp", &far(1), &far(2), 10).unwrap();
    assert_eq!(claimed.len(), 4);
    want.deliveries[0] = ("erp".into(), "in_flight".into(), 4);
    agree(&want);
    let retry = Attempt::Retry {
        at: far(3),
        error: "HTTP 500".into(),
    };
    s.record_attempts(&[
        (claimed[0].claim(), Attempt::Delivered),
        (claimed[1].claim(), retry.clone()),
        (
            claimed[2].claim(),
            Attempt::Dead {
                error: "HTTP 400".into(),
            },
        ),
    ])
    .unwrap();
    want.deliveries.splice(
        0..1,
        [
            ("erp".into(), "dead".into(), 1),
            ("erp".into(), "delivered".into(), 1),
            ("erp".into(), "in_flight".into(), 1),
            ("erp".into(), "pending".into(), 1),
        ],
    );
    want.retried = vec![("erp".into(), 1)];
    agree(&want);
    let again = other.claim_deliveries("erp", &far(4), &far(5), 10).unwrap();
    assert_eq!(
        again.len(),
        2,
        "the retried one and the one whose lease ran out"
    );
    other
        .record_attempts(&[
            (again[0].claim(), Attempt::Delivered),
            (again[1].claim(), Attempt::Delivered),
        ])
        .unwrap();
    assert_eq!(s.replay(&[claimed[2].id], None).unwrap(), 1);
    want.deliveries.splice(
        0..4,
        [
            ("erp".into(), "delivered".into(), 3),
            ("erp".into(), "pending".into(), 1),
        ],
    );
    agree(&want);

    // An upgraded database: the totals are counted once from the rows already stored.
    let before = s.metrics().unwrap();
    let migration = if b.pg.is_some() { 4 } else { 8 };
    b.raw_batch(&format!(
        "DROP TABLE metric_counts; DROP INDEX deliveries_leased; DROP INDEX deliveries_retried;
         DELETE FROM schema_migrations WHERE version = {migration};"
    ));
    let upgraded = b.another();
    assert_eq!(upgraded.metrics().unwrap(), before);
    assert_eq!(before, counted(b));
    // And they go on from there.
    let p = upgraded
        .claim_deliveries("export", &far(6), &far(7), 1)
        .unwrap();
    upgraded.record_attempt(&p[0], &retry).unwrap();
    upgraded.store_receipt(&receipt(&a, "R-A2", 1250)).unwrap();
    let m = upgraded.metrics().unwrap();
    assert_eq!(m, counted(b));
    assert_eq!(m.receipts, vec![(E.to_string(), 5, 3)]);
    assert_eq!(m.retried, vec![("erp".into(), 1), ("export".into(), 1)]);
    assert_eq!(m.import_rows, want.import_rows);
}

/// `erp` (json) delivers flagged receipts, `push` (mypay-push) and `export` (TARI only) hold them.
fn holding_pipelines() -> &'static [DeliverTo] {
    static P: std::sync::OnceLock<Vec<DeliverTo>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        vec![
            DeliverTo::all("erp", E),
            DeliverTo {
                holds_flagged: true,
                ..DeliverTo::all("push", E)
            },
            DeliverTo {
                debt_types: vec!["TARI".into()],
                holds_flagged: true,
                ..DeliverTo::all("export", E)
            },
        ]
    })
}

fn pending_of(s: &dyn Store, pipeline: &str) -> Vec<String> {
    s.deliveries(DeliveryStatus::Pending, None, Some(pipeline), 100)
        .unwrap()
        .into_iter()
        .map(|d| d.idempotency_key)
        .collect()
}

fn a_receipt_id_resent_with_other_content_is_a_flagged_copy(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 1250, true),
            row(Action::Insert, "B", 700, true),
        ],
    );
    let (na, nb) = (notice_of(&out[0]), notice_of(&out[1]));
    let first = s.store_receipt(&receipt(&na, "R1", 1250)).unwrap();
    let ReceiptStored::Paid {
        receipt: original, ..
    } = first
    else {
        panic!("{first:?}")
    };
    // The same receipt id with another amount and another body.
    let other = NewReceipt {
        xml: "<receipt amount='99.00'/>",
        ..receipt(&na, "R1", 9900)
    };
    let copy = s.store_receipt(&other).unwrap();
    let ReceiptStored::Conflict {
        receipt: copy_id,
        original: of,
    } = copy
    else {
        panic!("{copy:?}")
    };
    assert_eq!(of, original);
    // Either content again is a plain duplicate: nothing more is kept.
    assert_eq!(s.store_receipt(&other).unwrap(), ReceiptStored::Duplicate);
    assert_eq!(
        s.store_receipt(&receipt(&na, "R1", 1250)).unwrap(),
        ReceiptStored::Duplicate
    );
    // The first stays the receipt: paid once, one delivery per pipeline, none for the copy.
    assert_eq!(events_of(s, "position.paid").len(), 1);
    assert_eq!(events_of(s, "receipt.stored").len(), 1);
    assert_eq!(pending_of(s, "erp"), ["R1"]);
    let conflicts = events_of(s, "receipt.conflict");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].subject, na.as_str());
    assert_eq!(conflicts[0].payload["receipt"], copy_id);
    assert_eq!(conflicts[0].payload["original"], original);
    assert_eq!(conflicts[0].payload["amount_cents"], 9900);
    assert_eq!(conflicts[0].payload["original_amount_cents"], 1250);

    let flagged = s.receipts(E, true, 10).unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].id, copy_id);
    assert_eq!(flagged[0].issue.as_deref(), Some(CONFLICT_ISSUE));
    assert_eq!(flagged[0].conflict_of, Some(original));
    assert_eq!(flagged[0].amount_cents, 9900);
    assert!(flagged[0].held.is_empty(), "a copy is delivered nowhere");
    // Pollers and carts see the first copy only.
    let pulled = s.receipts_after(E, 0, 10).unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].receipt.id, original);
    let cart = s.receipt_for_notice(E, na.as_str()).unwrap().unwrap();
    assert_eq!(cart.id, original);

    // A copy holds nothing to release, but operators can clear it.
    assert!(matches!(
        s.review_receipt(copy_id, Review::Released).unwrap(),
        Reviewed::NotHeld { review: None, .. }
    ));
    assert!(matches!(
        s.review_receipt(copy_id, Review::Dismissed).unwrap(),
        Reviewed::Done { ref pipelines, .. } if pipelines.is_empty()
    ));
    assert_eq!(
        s.receipts(E, true, 10).unwrap()[0].review.as_deref(),
        Some("dismissed")
    );
    assert_eq!(
        s.review_receipt(999_999, Review::Released).unwrap(),
        Reviewed::NoReceipt
    );

    // Two hubs at once, one receipt id, two contents: one receipt, one flagged copy.
    let another = b.another();
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| s.store_receipt(&receipt(&nb, "RACE", 700)).unwrap());
        let y = scope.spawn(|| {
            another
                .store_receipt(&NewReceipt {
                    xml: "<other/>",
                    ..receipt(&nb, "RACE", 700)
                })
                .unwrap()
        });
        (x.join().unwrap(), y.join().unwrap())
    });
    let copies = [&x, &y]
        .iter()
        .filter(|r| matches!(r, ReceiptStored::Conflict { .. }))
        .count();
    let paid = [&x, &y]
        .iter()
        .filter(|r| matches!(r, ReceiptStored::Paid { .. }))
        .count();
    assert_eq!((paid, copies), (1, 1), "{x:?} {y:?}");
}

fn flagged_receipts_are_held_until_released_or_dismissed(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 200, true),
            row(Action::Insert, "C", 300, true),
        ],
    );
    let n: Vec<NoticeNumber> = out.iter().map(notice_of).collect();
    apply(s, f, &[row(Action::Annul, "A", 100, false)]);
    let held = |n: &NoticeNumber, id: &'static str, cents| {
        let stored = s
            .store_receipt(&NewReceipt {
                deliver_to: holding_pipelines(),
                ..receipt(n, id, cents)
            })
            .unwrap();
        match stored {
            ReceiptStored::Flagged { receipt, .. } | ReceiptStored::Paid { receipt, .. } => receipt,
            other => panic!("{other:?}"),
        }
    };
    let annulled = held(&n[0], "R-ANN", 100);
    let wrong = held(&n[1], "R-AMT", 1);
    let fine = held(&n[2], "R-OK", 300);

    // json gets every receipt, flag and all; MyPay's formats only the one that paid.
    assert_eq!(pending_of(s, "erp"), ["R-OK", "R-AMT", "R-ANN"]);
    assert_eq!(pending_of(s, "push"), ["R-OK"]);
    assert_eq!(pending_of(s, "export"), ["R-OK"]);
    let stored = events_of(s, "receipt.stored");
    assert_eq!(
        stored[0].payload["held"],
        serde_json::json!(["push", "export"])
    );
    assert_eq!(
        stored[2].payload.get("held"),
        None,
        "only when something is held"
    );
    let export = s.open_export("export", E, false).unwrap().unwrap();
    assert_eq!(export.receipts, 1, "the held receipts are in no file");
    s.finish_export(export.id).unwrap();
    assert!(s.open_export("export", E, false).unwrap().is_none());

    // Operators see them, and /metrics counts them.
    let listed = s.held_receipts(E, 10).unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [wrong, annulled]
    );
    assert_eq!(listed[1].held, ["export", "push"]);
    assert_eq!(listed[1].issue.as_deref(), Some("annulled"));
    let flagged = s.receipts(E, true, 10).unwrap();
    assert_eq!(flagged.len(), 2);
    assert_eq!(flagged[0].held, ["export", "push"]);
    assert_eq!(s.metrics().unwrap().held, vec![(E.to_string(), 2)]);

    // Released: exactly one delivery per pipeline that held it, in the next file.
    let released = s.review_receipt(annulled, Review::Released).unwrap();
    assert_eq!(
        released,
        Reviewed::Done {
            receipt: annulled,
            receipt_id: "R-ANN".into(),
            review: Review::Released,
            pipelines: vec!["export".into(), "push".into()],
        }
    );
    assert_eq!(pending_of(s, "push"), ["R-ANN", "R-OK"]);
    let next = s.open_export("export", E, false).unwrap().unwrap();
    let items = s.export_items(next.id).unwrap();
    assert_eq!(
        items.iter().map(|i| i.receipt).collect::<Vec<_>>(),
        [annulled]
    );
    s.finish_export(next.id).unwrap();
    assert_eq!(
        s.review_receipt(annulled, Review::Released).unwrap(),
        Reviewed::NotHeld {
            issue: Some("annulled".into()),
            review: Some("released".into()),
        },
        "released once"
    );
    assert_eq!(
        pending_of(s, "push"),
        ["R-ANN", "R-OK"],
        "still one delivery"
    );

    // Dismissed: never delivered to those formats.
    assert!(matches!(
        s.review_receipt(wrong, Review::Dismissed).unwrap(),
        Reviewed::Done {
            review: Review::Dismissed,
            ..
        }
    ));
    assert!(matches!(
        s.review_receipt(wrong, Review::Released).unwrap(),
        Reviewed::NotHeld { .. }
    ));
    assert_eq!(pending_of(s, "push"), ["R-ANN", "R-OK"]);
    assert!(s.open_export("export", E, false).unwrap().is_none());
    assert!(s.held_receipts(E, 10).unwrap().is_empty());
    assert!(s.metrics().unwrap().held.is_empty());
    assert!(matches!(
        s.review_receipt(fine, Review::Dismissed).unwrap(),
        Reviewed::NotHeld { issue: None, .. }
    ));
    let reviews: Vec<(String, serde_json::Value)> = s
        .events_after(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("receipt.") && e.kind != "receipt.stored")
        .map(|e| (e.kind, e.payload["receipt"].clone()))
        .collect();
    assert_eq!(
        reviews,
        [
            ("receipt.released".to_string(), serde_json::json!(annulled)),
            ("receipt.dismissed".to_string(), serde_json::json!(wrong)),
        ]
    );
}

fn a_worker_past_its_lease_cannot_overwrite_the_outcome(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(s, f, &[row(Action::Insert, "A", 100, true)]);
    let n = notice_of(&out[0]);
    let only_erp = [DeliverTo::all("erp", E)];
    s.store_receipt(&NewReceipt {
        deliver_to: &only_erp,
        ..receipt(&n, "R1", 100)
    })
    .unwrap();
    let other = b.another();
    let t = |m: u32| format!("9999-01-01T00:{m:02}:00.000Z");
    // The first worker claims, then pauses past its lease; the second claims and delivers.
    let first = s.claim_deliveries("erp", &t(0), &t(1), 10).unwrap();
    let second = other.claim_deliveries("erp", &t(2), &t(3), 10).unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_eq!(first[0].id, second[0].id);
    assert!(other
        .record_attempt(&second[0], &Attempt::Delivered)
        .unwrap());
    // The first wakes up and reports a failure: discarded, whatever it says.
    let late = Attempt::Dead {
        error: "timed out".into(),
    };
    assert_eq!(
        s.record_attempts(&[(first[0].claim(), late.clone())])
            .unwrap(),
        [first[0].id]
    );
    let d = s.delivery(first[0].id).unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(d.attempts, 1, "delivered once");
    assert!(d.last_error.is_none());
    assert!(events_of(s, "delivery.dead").is_empty());
    assert!(s
        .claim_deliveries("erp", &t(30), &t(31), 10)
        .unwrap()
        .is_empty());

    // The other order: the late worker reports before the one holding the lease.
    let f2 = flow(s, "F2");
    let out = apply(s, f2, &[row(Action::Insert, "B", 100, true)]);
    let nb = notice_of(&out[0]);
    s.store_receipt(&NewReceipt {
        deliver_to: &only_erp,
        ..receipt(&nb, "R2", 100)
    })
    .unwrap();
    let first = s.claim_deliveries("erp", &t(40), &t(41), 10).unwrap();
    let second = other.claim_deliveries("erp", &t(42), &t(43), 10).unwrap();
    assert!(!s.record_attempt(&first[0], &late).unwrap());
    assert!(other
        .record_attempt(&second[0], &Attempt::Delivered)
        .unwrap());
    let d = s.delivery(second[0].id).unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
    // A delivery never claimed has no lease to record under.
    let unclaimed = Delivery {
        lease_until: None,
        ..d
    };
    assert!(!s.record_attempt(&unclaimed, &Attempt::Delivered).unwrap());
}

fn an_export_leaves_out_what_cannot_be_encoded(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 100, true),
            row(Action::Insert, "B", 200, true),
        ],
    );
    s.store_receipt(&receipt(&notice_of(&out[0]), "R1", 100))
        .unwrap();
    s.store_receipt(&receipt(&notice_of(&out[1]), "R2", 200))
        .unwrap();
    let export = s.open_export("export", E, false).unwrap().unwrap();
    let items = s.export_items(export.id).unwrap();
    assert_eq!(items.len(), 2);
    let bad = items[1].delivery;
    s.finish_export_without(export.id, &[(bad, "cannot be read".into())])
        .unwrap();
    let d = s.delivery(bad).unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert_eq!(d.last_error.as_deref(), Some("cannot be read"));
    let good = s.delivery(items[0].delivery).unwrap().unwrap();
    assert_eq!(good.status, DeliveryStatus::Delivered);
    let dead = events_of(s, "delivery.dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload["delivery"], bad);
    assert_eq!(dead[0].payload["error"], "cannot be read");
    // Nothing else waits; a replay puts it in the next file.
    assert!(s.open_export("export", E, false).unwrap().is_none());
    assert_eq!(s.replay(&[bad], None).unwrap(), 1);
    let next = s.open_export("export", E, false).unwrap().unwrap();
    assert_eq!(
        s.export_items(next.id)
            .unwrap()
            .iter()
            .map(|i| i.delivery)
            .collect::<Vec<_>>(),
        [bad]
    );
}

fn report_key<'a>(psp: &'a str, iuf: &'a str, revision: i64) -> NewReport<'a> {
    NewReport {
        entity: E,
        psp_id: psp,
        iuf,
        revision,
        source: "rest",
        flow_time: Some("2026-11-27T10:00:00Z"),
        flow_date: Some("2026-11-27"),
        regulation_id: Some("SCT-1"),
        regulation_date: Some("2026-11-28"),
        header: Some("{}"),
        declared_count: Some(3),
        declared_cents: Some(1750),
        published: None,
    }
}

fn report_row<'a>(
    n: u64,
    iuv: &'a str,
    iur: &'a str,
    cents: i64,
    receipt: Option<i64>,
) -> ReportRow<'a> {
    ReportRow {
        row_no: n,
        iuv,
        iur,
        transfer_index: None,
        link_index: 1,
        amount_cents: cents,
        esito: 0,
        pay_date: "2026-11-26",
        receipt,
        receipt_transfer: receipt.map(|_| 1),
    }
}

fn movement<'a>(bill: &'a str, cents: i64, iuf: Option<&'a str>) -> NewMovement<'a> {
    NewMovement {
        year: 2026,
        bill,
        amount_cents: cents,
        accounting_date: Some("2026-11-28"),
        value_date: Some("2026-11-28"),
        causale: "/PUR/LGPE-RIVERSAMENTO/URI/2026-11-27PSP1-1",
        payer: Some("PSP Uno Servizio pagoPA"),
        end_to_end_id: None,
        iuf,
        iuv: None,
        reversed: false,
    }
}

/// A treasury file applies whole; the same file again changes nothing; a changed movement is
/// updated; a reversal removes its movement (or is counted as not found); entities are apart.
fn treasury_movements_apply_once_and_a_reversal_removes_its_movement(b: &Backend) {
    let s = b.store();
    let file = [
        movement("101", 150_000, Some("2026-11-27PSP1-1")),
        movement("102", 2_500, None),
    ];
    let first = s.apply_movements(E, "GDC-1.xml", &file).unwrap();
    assert_eq!((first.inserted, first.unchanged), (2, 0));
    let again = s.apply_movements(E, "GDC-1.xml", &file).unwrap();
    assert_eq!((again.inserted, again.unchanged), (0, 2));
    let changed = s
        .apply_movements(
            E,
            "GDC-2.xml",
            &[
                movement("102", 2_600, None),
                NewMovement {
                    reversed: true,
                    ..movement("101", 150_000, None)
                },
                NewMovement {
                    reversed: true,
                    ..movement("999", 1, None)
                },
            ],
        )
        .unwrap();
    assert_eq!(
        (changed.updated, changed.removed, changed.not_found),
        (1, 1, 1)
    );
    let held = s.movements(E, 10).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].bill.as_str(),
            held[0].amount_cents,
            held[0].source.as_str()
        ),
        ("102", 2_600, "GDC-2.xml")
    );
    // Another entity's movement with the same key is its own.
    s.apply_movements("other", "GDC-9.xml", &[movement("102", 1, None)])
        .unwrap();
    assert_eq!(s.movements(E, 10).unwrap()[0].amount_cents, 2_600);
    assert_eq!(events_of(s, "treasury.received").len(), 4);
}

/// A flow that finishes current gets one delivery per reports pipeline, in the same transaction
/// (finishing again adds none); a revision that arrives already superseded gets none; the
/// outbox hands report deliveries out like receipts'.
fn a_finished_flow_is_delivered_once_per_reports_pipeline_unless_superseded(b: &Backend) {
    let s = b.store();
    let totals = ReportTotals::default();
    let newer = s
        .begin_report(&report_key("PSP1", "2026-11-27PSP1-9", 2))
        .unwrap();
    assert!(s
        .finish_report(newer.id, &totals, &[], &["rep-json", "rep-xml"])
        .unwrap());
    assert!(!s
        .finish_report(newer.id, &totals, &[], &["rep-json", "rep-xml"])
        .unwrap());
    // Revision 1 arrives late: it is history, not handed on.
    let older = s
        .begin_report(&report_key("PSP1", "2026-11-27PSP1-9", 1))
        .unwrap();
    assert!(s
        .finish_report(older.id, &totals, &[], &["rep-json", "rep-xml"])
        .unwrap());
    assert_eq!(
        s.report(older.id).unwrap().unwrap().superseded_by,
        Some(newer.id)
    );
    let claimed = s
        .claim_deliveries(
            "rep-json",
            "2999-01-01T00:00:00.000Z",
            "2999-01-01T00:01:00.000Z",
            10,
        )
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let d = &claimed[0];
    assert_eq!(
        (d.report, d.receipt, d.entity.as_str()),
        (Some(newer.id), None, E)
    );
    assert_eq!(d.idempotency_key, "PSP1/2026-11-27PSP1-9/2");
    assert!(s.record_attempt(d, &Attempt::Delivered).unwrap());
    assert_eq!(
        s.deliveries(DeliveryStatus::Pending, Some(E), Some("rep-xml"), 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.report(i64::MAX).unwrap().map(|f| f.id), None);
}

/// A settlement flow's rows commit chunk by chunk from its checkpoint only, link to receipts,
/// keep their anomalies (with events and metric totals), a later revision supersedes the earlier
/// one, a paid position finds its flow, and a failed flow keeps its reason.
fn settlement_flows_link_resume_supersede_and_fail(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 1250, true),
            row(Action::Insert, "B", 500, true),
        ],
    );
    let (na, nb) = (notice_of(&out[0]), notice_of(&out[1]));
    let (iuv_a, iuv_b) = (iuv_of(&out[0]), iuv_of(&out[1]));
    let ReceiptStored::Paid { receipt: rid, .. } =
        s.store_receipt(&receipt(&na, "R1", 1250)).unwrap()
    else {
        panic!("receipt not stored as paid");
    };

    let lookups = |iuf: &str| {
        s.report_lookup(
            E,
            "PSP1",
            iuf,
            &[
                LookupKey {
                    iuv: &iuv_a,
                    iur: "R1",
                    link_index: 1,
                },
                LookupKey {
                    iuv: &iuv_b,
                    iur: "R9",
                    link_index: 1,
                },
                LookupKey {
                    iuv: "00000000000000099",
                    iur: "R8",
                    link_index: 1,
                },
                LookupKey {
                    iuv: &iuv_a,
                    iur: "R2",
                    link_index: 1,
                },
            ],
        )
        .unwrap()
    };
    let facts = lookups("2026-11-27PSP1-1");
    assert_eq!(
        facts[0],
        RowFacts {
            // Not asked once the receipt is found.
            issued: false,
            receipt: Some(LinkReceipt {
                id: rid,
                amount_cents: 1250,
                parsed: None
            }),
            others: Vec::new(),
            elsewhere: false
        }
    );
    assert_eq!((facts[1].issued, facts[1].receipt.is_none()), (true, true));
    assert_eq!((facts[2].issued, facts[2].receipt.is_none()), (false, true));
    // The receipt id alone is not enough: the IUV must match too.
    assert!(facts[3].receipt.is_none());

    let k1 = report_key("PSP1", "2026-11-27PSP1-1", 1);
    let r1 = s.begin_report(&k1).unwrap();
    assert_eq!((r1.status.as_str(), r1.rows_done), ("loading", 0));
    assert_eq!(s.begin_report(&k1).unwrap().id, r1.id, "one flow per key");
    let a2 = NewAnomaly {
        row_no: Some(2),
        code: "NO_RECEIPT",
        severity: "anomaly",
        message: "row 2",
    };
    s.add_report_rows(
        r1.id,
        0,
        &[
            report_row(1, &iuv_a, "R1", 1250, Some(rid)),
            report_row(2, &iuv_b, "R9", 500, None),
        ],
        std::slice::from_ref(&a2),
    )
    .unwrap();
    // A chunk that does not continue from the checkpoint (a replay after a crash) is refused
    // and adds nothing.
    assert!(matches!(
        s.add_report_rows(
            r1.id,
            0,
            &[report_row(1, &iuv_a, "R1", 1250, Some(rid))],
            std::slice::from_ref(&a2)
        ),
        Err(StoreError::Conflict(_))
    ));
    s.add_report_rows(
        r1.id,
        2,
        &[report_row(3, "00000000000000099", "R8", 1, None)],
        &[],
    )
    .unwrap();
    let total = NewAnomaly {
        row_no: None,
        code: "TOTAL_AMOUNT_MISMATCH",
        severity: "anomaly",
        message: "sum",
    };
    let totals = ReportTotals {
        computed_count: 3,
        computed_cents: 1751,
        linked: 1,
    };
    assert!(s
        .finish_report(r1.id, &totals, std::slice::from_ref(&total), &[])
        .unwrap());
    assert!(
        !s.finish_report(r1.id, &totals, &[total], &[]).unwrap(),
        "finished once"
    );
    assert!(matches!(
        s.add_report_rows(r1.id, 3, &[report_row(4, "X", "Y", 1, None)], &[]),
        Err(StoreError::Conflict(_))
    ));

    let listed = s.reports(E, false, 10).unwrap();
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!(
        (
            l.status.as_str(),
            l.rows_done,
            l.linked,
            l.anomalies,
            l.computed_cents
        ),
        ("ok", 3, 1, 2, 1751)
    );
    let rows = s.report_rows(r1.id, 0, 10).unwrap();
    assert_eq!(rows.iter().map(|r| r.row_no).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(rows[0].receipt, Some(rid));
    assert_eq!(s.report_rows(r1.id, 2, 10).unwrap().len(), 1);
    let an = s.report_anomalies(r1.id).unwrap();
    assert_eq!(
        an.iter()
            .map(|a| (a.row_no, a.code.as_str()))
            .collect::<Vec<_>>(),
        [(Some(2), "NO_RECEIPT"), (None, "TOTAL_AMOUNT_MISMATCH")]
    );
    assert_eq!(events_of(s, "report.received").len(), 1);
    assert_eq!(events_of(s, "report.anomaly").len(), 2);

    // Another flow sees the payment linked; a revision of the same flow does not.
    assert!(lookups("2026-11-27PSP2-1")[0].elsewhere);
    assert!(!lookups("2026-11-27PSP1-1")[0].elsewhere);

    let settled = s.settlements(E, &[na.as_str(), nb.as_str()]).unwrap();
    assert_eq!(
        settled[0].as_ref().map(|x| (x.iuf.as_str(), x.revision)),
        Some(("2026-11-27PSP1-1", 1))
    );
    assert_eq!(
        settled[0].as_ref().and_then(|x| x.regulation_id.as_deref()),
        Some("SCT-1")
    );
    assert_eq!(settled[1], None);

    // Revision 2 supersedes revision 1, which stays in history.
    let r2 = s
        .begin_report(&report_key("PSP1", "2026-11-27PSP1-1", 2))
        .unwrap();
    s.add_report_rows(
        r2.id,
        0,
        &[report_row(1, &iuv_a, "R1", 1250, Some(rid))],
        &[],
    )
    .unwrap();
    assert!(s
        .finish_report(
            r2.id,
            &ReportTotals {
                computed_count: 1,
                computed_cents: 1250,
                linked: 1
            },
            &[],
            &[]
        )
        .unwrap());
    let both = s.reports_by_iuf(E, "2026-11-27PSP1-1").unwrap();
    assert_eq!(both.len(), 2);
    let old = both.iter().find(|f| f.revision == 1).unwrap();
    assert_eq!(old.superseded_by, Some(r2.id));
    assert_eq!(
        both.iter().find(|f| f.revision == 2).unwrap().superseded_by,
        None
    );
    let settled = s.settlements(E, &[na.as_str()]).unwrap();
    assert_eq!(settled[0].as_ref().map(|x| x.revision), Some(2));

    // A bad document: recorded failed with why; an ok flow is never turned failed.
    let bad = s
        .fail_report(&report_key("PSP3", "2026-11-27PSP3-1", 1), "not JSON")
        .unwrap();
    assert_eq!(
        (bad.status.as_str(), bad.reason.as_deref()),
        ("failed", Some("not JSON"))
    );
    let kept = s
        .fail_report(&report_key("PSP1", "2026-11-27PSP1-1", 2), "late")
        .unwrap();
    assert_eq!(kept.status, "ok");
    assert_eq!(events_of(s, "report.failed").len(), 1);
    let with_anomalies = s.reports(E, true, 10).unwrap();
    assert_eq!(
        with_anomalies
            .iter()
            .map(|f| f.iuf.as_str())
            .collect::<Vec<_>>(),
        ["2026-11-27PSP3-1", "2026-11-27PSP1-1"]
    );

    assert_eq!(s.report_cursor(E).unwrap(), None);
    s.set_report_cursor(E, "2026-11-27T10:00:00Z").unwrap();
    s.set_report_cursor(E, "2026-11-27T11:00:00Z").unwrap();
    assert_eq!(
        s.report_cursor(E).unwrap().as_deref(),
        Some("2026-11-27T11:00:00Z")
    );

    let m = s.metrics().unwrap();
    assert_eq!(m.reports, vec![(E.to_string(), 2, 1, 2)]);
}

fn reports_after_lists_finished_flows_and_stops_before_a_loading_one(b: &Backend) {
    let s = b.store();
    let totals = ReportTotals {
        computed_count: 0,
        computed_cents: 0,
        linked: 0,
    };
    let a = s.begin_report(&report_key("PSP1", "AFTER-A", 1)).unwrap();
    assert!(s.finish_report(a.id, &totals, &[], &[]).unwrap());
    let loading = s.begin_report(&report_key("PSP1", "AFTER-B", 1)).unwrap();
    let c = s.begin_report(&report_key("PSP1", "AFTER-C", 1)).unwrap();
    assert!(s.finish_report(c.id, &totals, &[], &[]).unwrap());
    s.fail_report(&report_key("PSP1", "AFTER-X", 1), "bad")
        .unwrap();
    let iufs = |after: i64, limit: u32| -> Vec<String> {
        s.reports_after(E, after, limit)
            .unwrap()
            .into_iter()
            .map(|f| f.iuf)
            .collect()
    };
    assert_eq!(iufs(0, 10), ["AFTER-A"], "C waits behind the loading B");
    assert!(s.reports_after("other", 0, 10).unwrap().is_empty());
    assert!(s.finish_report(loading.id, &totals, &[], &[]).unwrap());
    assert_eq!(iufs(a.id, 1), ["AFTER-B"]);
    assert_eq!(
        iufs(loading.id, 10),
        ["AFTER-C"],
        "the failed X is left out"
    );
    assert_eq!(iufs(0, 10), ["AFTER-A", "AFTER-B", "AFTER-C"]);
}

/// Feltre's flow reports a transfer of a Padova receipt (Feltre is its secondary beneficiary):
/// the lookup for Feltre hands back Padova's receipt with the row's IUR and IUV, and only then;
/// Padova's position keeps showing Padova's own flow.
fn a_secondary_beneficiary_s_row_finds_the_notice_entity_s_receipt(b: &Backend) {
    const FELTRE: &str = "c_d530";
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(
        s,
        f,
        &[
            row(Action::Insert, "A", 1250, true),
            row(Action::Insert, "B", 500, true),
        ],
    );
    let (na, nb) = (notice_of(&out[0]), notice_of(&out[1]));
    let (iuv_a, iuv_b) = (iuv_of(&out[0]), iuv_of(&out[1]));
    let ReceiptStored::Paid { receipt: ra, .. } = s
        .store_parsed_receipt(&receipt(&na, "RS1", 1250), Some("{\"V2\":{}}".into()))
        .unwrap()
    else {
        panic!("receipt A not stored as paid");
    };
    let ReceiptStored::Paid { receipt: rb, .. } =
        s.store_receipt(&receipt(&nb, "RS2", 500)).unwrap()
    else {
        panic!("receipt B not stored as paid");
    };
    let key = |iuv, iur| LookupKey {
        iuv,
        iur,
        link_index: 2,
    };
    let facts = s
        .report_lookup(
            FELTRE,
            "PSP1",
            "2026-11-27PSP1-00133880252",
            &[
                key(&iuv_a, "RS1"),
                key(&iuv_b, "RS2"),
                // The receipt id with another IUV, and an IUV with another receipt id.
                key(&iuv_b, "RS1"),
                key(&iuv_a, "RS9"),
            ],
        )
        .unwrap();
    let others = |i: usize| {
        facts[i]
            .others
            .iter()
            .map(|o| {
                (
                    o.id,
                    o.entity.as_str(),
                    o.parsed.as_deref(),
                    o.xml.as_deref(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        others(0),
        [(ra, E, Some("{\"V2\":{}}"), None)],
        "the parsed request, not the XML"
    );
    assert_eq!(
        others(1),
        [(rb, E, None, Some("<receipt/>"))],
        "the XML when not parsed"
    );
    assert!(others(2).is_empty() && others(3).is_empty(), "{facts:?}");
    assert!(facts.iter().all(|f| !f.issued && f.receipt.is_none()));
    // The notice's entity finds its own receipt and asks no further.
    let own = s
        .report_lookup(E, "PSP1", "2026-11-27PSP1-1", &[key(&iuv_a, "RS1")])
        .unwrap();
    assert_eq!(own[0].receipt.as_ref().map(|r| r.id), Some(ra));
    assert!(own[0].others.is_empty());

    // Feltre's flow links the transfer; Padova's position does not show Feltre's flow.
    let mut feltre = report_key("PSP1", "2026-11-27PSP1-00133880252", 1);
    feltre.entity = FELTRE;
    let r = s.begin_report(&feltre).unwrap();
    let mut linked = report_row(1, &iuv_a, "RS1", 250, Some(ra));
    linked.link_index = 2;
    linked.receipt_transfer = Some(2);
    s.add_report_rows(r.id, 0, &[linked], &[]).unwrap();
    let totals = ReportTotals {
        computed_count: 1,
        computed_cents: 250,
        linked: 1,
    };
    assert!(s.finish_report(r.id, &totals, &[], &[]).unwrap());
    assert_eq!(s.settlements(E, &[na.as_str()]).unwrap(), [None]);
    // A second Feltre flow with the same payment sees it linked elsewhere.
    let again = s
        .report_lookup(
            FELTRE,
            "PSP2",
            "2026-11-27PSP2-00133880252",
            &[key(&iuv_a, "RS1")],
        )
        .unwrap();
    assert!(again[0].elsewhere);
}

/// More rows and keys than one statement takes: every row is stored as given and every key
/// answered for itself, whatever batch (full, padded, one by one) it fell in.
fn settlement_rows_and_lookups_go_in_batches(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let rows: Vec<ChunkRow> = (0..70)
        .map(|i| row(Action::Insert, &format!("B{i}"), 100 + i, true))
        .collect();
    let out = apply(s, f, &rows);
    let iuvs: Vec<String> = out.iter().map(iuv_of).collect();
    let mut paid = Vec::new();
    for (i, o) in out.iter().enumerate().step_by(3) {
        let notice = notice_of(o);
        let id = format!("RB{i}");
        let ReceiptStored::Paid { receipt, .. } = s
            .store_receipt(&receipt(&notice, &id, 100 + i as i64))
            .unwrap()
        else {
            panic!("receipt {id} not stored as paid");
        };
        paid.push((i, receipt));
    }
    // 301 keys: the 70 IUVs with their receipt id (one in three has it), then IUVs never issued.
    let iurs: Vec<String> = (0..301).map(|i| format!("RB{i}")).collect();
    let never: Vec<String> = (0..301).map(|i| format!("99{i:015}")).collect();
    let keys: Vec<LookupKey<'_>> = (0..301)
        .map(|i| LookupKey {
            iuv: iuvs.get(i).unwrap_or(&never[i]),
            iur: &iurs[i],
            link_index: 1,
        })
        .collect();
    let facts = s.report_lookup(E, "PSP1", "IUF-B", &keys).unwrap();
    assert_eq!(facts.len(), 301);
    for (i, f) in facts.iter().enumerate() {
        let receipt = paid.iter().find(|(n, _)| *n == i).map(|(_, id)| *id);
        assert_eq!(f.receipt.as_ref().map(|r| r.id), receipt, "key {i}");
        assert_eq!(
            f.receipt.as_ref().map(|r| r.amount_cents),
            receipt.map(|_| 100 + i as i64),
            "key {i}"
        );
        assert_eq!(f.issued, receipt.is_none() && i < 70, "key {i}");
        assert!(!f.elsewhere && f.others.is_empty(), "key {i}");
    }

    // 257 rows in one chunk: two statements of 100 rows and 57 one by one.
    let r = s.begin_report(&report_key("PSP1", "IUF-B", 1)).unwrap();
    let dates: Vec<String> = (0..257)
        .map(|i| format!("2026-11-{:02}", 1 + i % 28))
        .collect();
    let stored: Vec<ReportRow<'_>> = (0..257)
        .map(|i| ReportRow {
            row_no: i as u64 + 1,
            iuv: keys[i].iuv,
            iur: keys[i].iur,
            transfer_index: (i % 2 == 0).then_some(1 + i as i64 % 5),
            link_index: 1 + i as i64 % 5,
            amount_cents: i as i64 * 7 - 100,
            esito: [0, 3, 4, 8, 9][i % 5],
            pay_date: &dates[i],
            receipt: facts[i].receipt.as_ref().map(|r| r.id),
            receipt_transfer: facts[i].receipt.as_ref().map(|_| 1),
        })
        .collect();
    s.add_report_rows(r.id, 0, &stored, &[]).unwrap();
    let back = s.report_rows(r.id, 0, 1000).unwrap();
    assert_eq!(back.len(), 257);
    for (w, g) in stored.iter().zip(&back) {
        assert_eq!(
            (
                g.row_no as u64,
                g.iuv.as_str(),
                g.iur.as_str(),
                g.transfer_index,
                g.link_index,
                g.amount_cents,
                g.esito,
                g.pay_date.as_str(),
                g.receipt,
                g.receipt_transfer
            ),
            (
                w.row_no,
                w.iuv,
                w.iur,
                w.transfer_index,
                w.link_index,
                w.amount_cents,
                w.esito,
                w.pay_date,
                w.receipt,
                w.receipt_transfer
            )
        );
    }
    assert_eq!(s.reports_by_iuf(E, "IUF-B").unwrap()[0].rows_done, 257);
}

fn new_item(key: &str, iuv: &str, classes: &[&'static str]) -> NewItem {
    NewItem {
        key: key.into(),
        kind: "payment",
        iuv: Some(iuv.into()),
        classes: classes.to_vec(),
        body: format!("{{\"key\":\"{key}\"}}"),
        due_at: None,
    }
}

/// Writes leave marks; a relabelling writes only what changed, with one event per changed label
/// set, keeps per-class counts and rows, and numbers its writes so an export can follow them
/// (numbers never go back, even after the newest item is removed). Notifications replace by IUD.
fn reconciliation_marks_labels_counts_and_the_export_cursor(b: &Backend) {
    let s = b.store();
    s.apply_movements(
        E,
        "GDC-1.xml",
        &[movement("101", 150_000, Some("2026-11-27PSP1-1"))],
    )
    .unwrap();
    let marks = s.dirty_marks(100).unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].iuf.as_deref(), Some("2026-11-27PSP1-1"));
    assert_eq!(marks[0].movement.as_deref(), Some("2026-101"));

    let write = |items: Vec<NewItem>, stale_keys: &[&str]| {
        let mut counts = None;
        s.recon_tx(E, false, &mut |tx| {
            let iuvs: Vec<String> = stale_keys.iter().map(|k| k.to_string()).collect();
            let stale = tx.payment_items(IuvSelect::Set(&iuvs))?;
            counts = Some(tx.write(&items, &stale)?);
            Ok(())
        })
        .unwrap();
        counts.unwrap()
    };
    let a = write(
        vec![
            new_item("P:A:r1:1", "A", &["RT_IUF", "RT_IUF_TES"]),
            new_item("P:B:r2:1", "B", &["PENDING"]),
        ],
        &["A", "B"],
    );
    assert_eq!((a.written, a.changed, a.removed), (2, 2, 0));
    let first = s.recon_seq(E).unwrap();
    // The same labels again: nothing written, no event.
    let again = write(
        vec![
            new_item("P:A:r1:1", "A", &["RT_IUF", "RT_IUF_TES"]),
            new_item("P:B:r2:1", "B", &["PENDING"]),
        ],
        &["A", "B"],
    );
    assert_eq!((again.written, again.changed), (0, 0));
    assert_eq!(events_of(s, "reconciliation.changed").len(), 2);
    // B is removed (its payment went), A keeps its labels.
    let gone = write(vec![], &["B"]);
    assert_eq!((gone.removed, gone.changed), (1, 1));
    let summary = s.recon_summary(E).unwrap();
    assert_eq!(summary.payments, 1);
    assert_eq!(summary.classes.get("RT_IUF"), Some(&1));
    assert_eq!(summary.classes.get("PENDING"), None);
    let counted: Vec<_> = s
        .metrics()
        .unwrap()
        .reconciliation
        .into_iter()
        .filter(|(_, _, n)| *n != 0)
        .collect();
    assert_eq!(
        counted,
        vec![
            (E.to_string(), "RT_IUF".to_string(), 1),
            (E.to_string(), "RT_IUF_TES".to_string(), 1)
        ]
    );
    let listed = s.recon_items(E, Some("RT_IUF_TES"), "", 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].classes, vec!["RT_IUF", "RT_IUF_TES"]);
    // Numbers grow with each transaction that writes, and an export's page follows them.
    let c = write(vec![new_item("P:C:r3:1", "C", &["RT_NO_IUF"])], &["C"]);
    assert_eq!(c.written, 1);
    let newest = s.recon_seq(E).unwrap();
    assert!(newest > first, "{newest} > {first}");
    let page = s.recon_changed(E, (first + 1, ""), newest, 10).unwrap();
    assert_eq!(
        page.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        vec!["P:C:r3:1"]
    );
    write(vec![], &["C"]);
    write(vec![new_item("P:D:r4:1", "D", &["RT_IUF"])], &["D"]);
    assert_eq!(
        s.recon_seq(E).unwrap(),
        newest + 1,
        "after the newest item went"
    );

    // Notifications: inserted, unchanged, replaced; each change marks its IUV.
    let n = |iud: &'static str, cents: i64| NewNotification {
        iud,
        iuv: "A",
        amount_cents: cents,
        body: "{}",
    };
    assert!(!s.notifies(E).unwrap());
    assert_eq!(
        s.apply_notifications(E, "P1.csv", &[n("I1", 100)]).unwrap(),
        (1, 0, 0)
    );
    assert_eq!(
        s.apply_notifications(E, "P2.csv", &[n("I1", 100), n("I2", 5)])
            .unwrap(),
        (1, 0, 1)
    );
    assert_eq!(
        s.apply_notifications(E, "P3.csv", &[n("I1", 200)]).unwrap(),
        (0, 1, 0)
    );
    assert!(s.notifies(E).unwrap());
    let marked = s.dirty_marks(100).unwrap();
    assert!(
        marked
            .iter()
            .filter(|m| m.iuv.as_deref() == Some("A"))
            .count()
            >= 3
    );
}

/// A receipt the node sends the entity as a secondary beneficiary of another entity's notice:
/// stored, delivered to what it was given, counted; never a payment of the entity's position
/// with the same notice number, never in the entity's pull, and idempotent by receipt id.
fn a_secondary_receipt_pays_nothing_and_reaches_only_its_deliveries(b: &Backend) {
    let s = b.store();
    let f = flow(s, "F1");
    let out = apply(s, f, &[row(Action::Insert, "A", 1250, true)]);
    // The issuer's notice number happens to be one of the entity's own.
    let n = notice_of(&out[0]);
    let to = [DeliverTo {
        secondary: true,
        ..DeliverTo::all("erp", E)
    }];
    let secondary = NewReceipt {
        deliver_to: &to,
        ..receipt(&n, "RS1", 1250)
    };
    let stored = s
        .store_secondary_receipt(&secondary, "80007580279", None)
        .unwrap();
    let ReceiptStored::Secondary { receipt: id } = stored else {
        panic!("not stored as secondary: {stored:?}");
    };
    let p = s.position_by_notice(E, &n).unwrap().unwrap();
    assert_eq!(
        p.status,
        PositionStatus::Active,
        "the entity's position is not paid"
    );
    assert!(s.receipt_for_notice(E, n.as_str()).unwrap().is_none());
    assert!(
        s.receipts_after(E, 0, 10).unwrap().is_empty(),
        "not in the pull"
    );
    let listed = s.receipts(E, false, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id,
            listed[0].issuer.as_deref(),
            listed[0].issue.as_deref()
        ),
        (id, Some("80007580279"), None)
    );
    assert!(s.receipts(E, true, 10).unwrap().is_empty(), "not flagged");
    assert_eq!(pending_of(s, "erp"), ["RS1"]);
    assert!(pending_of(s, "export").is_empty());
    let delivery = &s
        .deliveries(DeliveryStatus::Pending, None, Some("erp"), 10)
        .unwrap()[0];
    let doc = s
        .receipt_document(delivery.receipt.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (doc.iud, doc.receipt.issuer.as_deref()),
        (None, Some("80007580279"))
    );
    let events = events_of(s, "receipt.secondary");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["issuer"], "80007580279");
    assert_eq!(events[0].payload["pipelines"], serde_json::json!(["erp"]));
    assert!(events_of(s, "receipt.stored").is_empty());
    assert!(events_of(s, "position.paid").is_empty());
    // The entity's settlement flow reports its transfer of that payment: linking finds the
    // secondary copy among the other entities' receipts, never as a receipt of its own.
    let iuv = n.iuv();
    let facts = s
        .report_lookup(
            E,
            "PSP1",
            "2026-11-27PSP1-1",
            &[LookupKey {
                iuv: iuv.as_str(),
                iur: "RS1",
                link_index: 2,
            }],
        )
        .unwrap();
    assert!(facts[0].receipt.is_none());
    assert_eq!(
        facts[0]
            .others
            .iter()
            .map(|o| (o.id, o.entity.as_str()))
            .collect::<Vec<_>>(),
        [(id, E)]
    );
    let m = s.metrics().unwrap();
    assert_eq!(m.receipts, vec![(E.to_string(), 1, 0)]);
    assert_eq!(m.secondary, vec![(E.to_string(), 1)]);

    assert_eq!(
        s.store_secondary_receipt(&secondary, "80007580279", None)
            .unwrap(),
        ReceiptStored::Duplicate
    );
    assert_eq!(pending_of(s, "erp"), ["RS1"], "delivered once");
    assert_eq!(s.metrics().unwrap().secondary, vec![(E.to_string(), 1)]);

    // The entity's own receipt of its notice still pays it.
    let paid = s.store_receipt(&receipt(&n, "R1", 1250)).unwrap();
    assert!(matches!(paid, ReceiptStored::Paid { position, .. } if position == p.id));
    assert_eq!(
        s.receipt_for_notice(E, n.as_str())
            .unwrap()
            .unwrap()
            .receipt_id,
        "R1"
    );
    assert_eq!(s.receipts_after(E, 0, 10).unwrap().len(), 1);
    assert_eq!(counted(b), {
        let mut m = s.metrics().unwrap();
        m.held.clear();
        m
    });
}
