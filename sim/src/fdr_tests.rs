//! The ledger, the published flows and the reporting services, end to end: a run records its
//! payments, publishing settles them, and the served REST and SOAP answers decode with the
//! adapters' own models (the XML against the XSD, with xmllint).

use crate::fdr::{FdrOptions, FLOW_NOT_FOUND, KEY_HEADER, NODE_FOR_PA_PATH};
use crate::flows::{self, PublishOptions, Published};
use crate::ledger::{self, Entry, Ledger, LedgerAnswer, LedgerPayment, LedgerTransfer};
use crate::tests::{start_fake_hub, BROKER, NOTICES, PADOVA, STATION};
use crate::{run, FaultKind, NoticeTarget, ServeOptions, SimOptions, StandIns};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use snodo_adapters::fdr::rest::{self, ErrorResponse, FlowList, PaymentsPage, SingleFlow};
use snodo_adapters::fdr::soap::{self, FdrSoapError, NodeCaller};
use snodo_core::settlement::PayStatus;
use std::path::Path;

const X: &str = "00644060287";
const Y: &str = "80007580279";
const A: &str = "BCITITMM";
const B: &str = "UNCRITMM";

fn targets() -> Vec<NoticeTarget> {
    NOTICES
        .iter()
        .map(|n| NoticeTarget {
            fiscal_code: PADOVA.into(),
            notice_number: n.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn a_run_records_its_payments_and_the_answers_in_the_ledger() {
    let (url, _hub) = start_fake_hub().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SimOptions::new(&url, BROKER, STATION, targets());
    opts.ledger = Some(dir.path().to_path_buf());
    let report = run(opts).await.unwrap();
    assert_eq!(report.completed(), 3, "{report}");
    let entries = ledger::read(dir.path()).unwrap();
    let payments: Vec<&LedgerPayment> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Payment(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(payments.len(), 3);
    let answers = entries
        .iter()
        .filter(|e| matches!(e, Entry::Answer(a) if a.outcome == "OK"))
        .count();
    assert_eq!(answers, 3);
    let mut psps: Vec<&str> = payments.iter().map(|p| p.psp_id.as_str()).collect();
    psps.sort_unstable();
    assert_eq!(psps, ["BCITITMM", "BPPIITRRXXX", "UNCRITMM"]);
    for p in &payments {
        assert_eq!(p.fiscal_code, PADOVA);
        assert_eq!(p.receipt_id.len(), 32);
        assert!(NOTICES.contains(&p.notice_number.as_str()));
        assert_eq!(p.iuv, p.notice_number[1..]);
        assert_eq!(p.transfers.len(), 1);
        assert_eq!(p.transfers[0].amount_cents, p.amount_cents);
        assert_eq!(p.transfers[0].index, 1);
        assert_eq!(p.date, &p.paid_at[..10]);
    }
    // Each payment's line comes before its answer's.
    let first_answer = entries
        .iter()
        .position(|e| matches!(e, Entry::Answer(_)))
        .unwrap();
    assert!(entries[..first_answer]
        .iter()
        .any(|e| matches!(e, Entry::Payment(_))));

    let date = NaiveDate::parse_from_str(&payments[0].date, "%Y-%m-%d").unwrap();
    let published = flows::publish(&PublishOptions::new(dir.path(), date)).unwrap();
    assert_eq!(published.len(), 3, "one flow per PSP: {published:?}");
    assert!(published.iter().all(|p| p.rows == 1 && p.revision == 1));
}

#[tokio::test]
async fn receipts_the_hub_refused_are_not_settled() {
    let (url, _hub) = start_fake_hub().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SimOptions::new(&url, BROKER, STATION, targets());
    opts.ledger = Some(dir.path().to_path_buf());
    opts.fault = Some(FaultKind::WrongAmount);
    run(opts).await.unwrap();
    let entries = ledger::read(dir.path()).unwrap();
    assert_eq!(entries.len(), 6, "3 payments, 3 answers");
    assert!(entries
        .iter()
        .all(|e| !matches!(e, Entry::Answer(a) if a.outcome == "OK")));
    let published = flows::publish(&PublishOptions::new(dir.path(), flows::today())).unwrap();
    assert!(published.is_empty(), "{published:?}");
}

fn payment(n: u32, org: &str, psp: &str, date: NaiveDate, transfers: &[(&str, i64)]) -> Entry {
    Entry::Payment(LedgerPayment {
        receipt_id: format!("{n:032x}"),
        notice_number: format!("3010000000000{n:05}"),
        iuv: format!("010000000000{n:05}"),
        fiscal_code: org.into(),
        company_name: format!("Ente {org}"),
        psp_id: psp.into(),
        paid_at: format!("{date}T10:{:02}:00", n % 60),
        date: date.to_string(),
        amount_cents: transfers.iter().map(|t| t.1).sum(),
        transfers: transfers
            .iter()
            .enumerate()
            .map(|(i, (fc, cents))| LedgerTransfer {
                index: i as u8 + 1,
                fiscal_code: fc.to_string(),
                amount_cents: *cents,
            })
            .collect(),
    })
}

/// Seven payments settled on `date`: five through A to X (one with a second transfer to Y),
/// two through B to X; and three that are not: refused, another day, a repeated line.
fn small_ledger(dir: &Path, date: NaiveDate) {
    let l = Ledger::open(dir).unwrap();
    for n in 1..=4 {
        l.append(&payment(n, X, A, date, &[(X, 1000 * i64::from(n))]))
            .unwrap();
    }
    l.append(&payment(5, X, A, date, &[(X, 700), (Y, 300)]))
        .unwrap();
    l.append(&payment(6, X, B, date, &[(X, 1234)])).unwrap();
    l.append(&payment(7, X, B, date, &[(X, 5)])).unwrap();
    // Refused by the hub: not settled.
    l.append(&payment(8, X, A, date, &[(X, 999)])).unwrap();
    l.append(&Entry::Answer(LedgerAnswer {
        receipt_id: format!("{:032x}", 8),
        outcome: "PAA_SEMANTICA".into(),
    }))
    .unwrap();
    // Another day.
    l.append(&payment(9, X, A, date.pred_opt().unwrap(), &[(X, 1)]))
        .unwrap();
    // The same receipt again (the duplicate-receipt fault sends it twice): once.
    l.append(&payment(6, X, B, date, &[(X, 1234)])).unwrap();
    l.append(&Entry::Answer(LedgerAnswer {
        receipt_id: format!("{:032x}", 6),
        outcome: "OK".into(),
    }))
    .unwrap();
}

fn published_at() -> DateTime<Utc> {
    Utc::now() - Duration::minutes(5)
}

fn publish(dir: &Path, date: NaiveDate, anomalies: bool, at: DateTime<Utc>) -> Vec<Published> {
    let mut o = PublishOptions::new(dir, date);
    o.anomalies = anomalies;
    o.published_at = at;
    flows::publish(&o).unwrap()
}

#[test]
fn publishing_groups_by_psp_and_entity_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    small_ledger(dir.path(), date);
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap();
    let p = publish(dir.path(), date, false, at);
    let shape: Vec<(&str, &str, &str, i64, usize, i64)> = p
        .iter()
        .map(|p| {
            (
                p.organization_id.as_str(),
                p.psp_id.as_str(),
                p.fdr.as_str(),
                p.revision,
                p.rows,
                p.declared_cents,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (X, A, "2026-03-02BCITITMM-00644060287", 1, 5, 10700),
            (X, B, "2026-03-02UNCRITMM-00644060287", 1, 2, 1239),
            (Y, A, "2026-03-02BCITITMM-80007580279", 1, 1, 300),
        ]
    );
    assert!(p.iter().all(|p| p.declared_cents == p.computed_cents));
    let first = std::fs::read(&p[0].path).unwrap();
    // The same ledger and date publish the same flows (but `published`).
    let again = publish(dir.path(), date, false, at);
    assert_eq!(again, p);
    assert_eq!(std::fs::read(&p[0].path).unwrap(), first);
    // Stored as FdR 3 JSON, with the XML beside it.
    let stored: flows::PublishedFlow = serde_json::from_slice(&first).unwrap();
    let (header, rows) = stored.to_model().unwrap();
    assert_eq!(header.regulation_date, date.succ_opt().unwrap());
    assert_eq!(rows[4].iur, format!("{:032x}", 5));
    assert_eq!(rows[4].transfer_index.map(|i| i.get()), Some(1));
    assert!(p[0].path.with_extension("xml").exists());
    let y_rows = flows::load_all(dir.path()).unwrap();
    let y = y_rows
        .iter()
        .find(|f| f.flow.receiver.organization_id == Y)
        .unwrap();
    assert_eq!(
        y.payments[0].id_transfer, 2,
        "the transfer to Y is the second"
    );
}

#[test]
fn anomalies_are_where_the_documentation_says() {
    let dir = tempfile::tempdir().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    small_ledger(dir.path(), date);
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap();
    let p = publish(dir.path(), date, true, at);
    let shape: Vec<(&str, &str, i64, usize, i64, i64)> = p
        .iter()
        .map(|p| {
            (
                p.organization_id.as_str(),
                p.psp_id.as_str(),
                p.revision,
                p.rows,
                p.declared_cents,
                p.computed_cents,
            )
        })
        .collect();
    // X/A: 5 rows (the last 1.00 more) and 4 added, 10800 + 1000 + 2000 + 500 + 700; X/B: 2
    // rows and X/A's first again; Y/A (Y a secondary beneficiary only): revoked, totals wrong.
    assert_eq!(
        shape,
        vec![
            (X, A, 1, 9, 15000, 15000),
            (X, B, 1, 3, 2239, 2239),
            (Y, A, 1, 1, 400, 300),
            (X, A, 2, 9, 15000, 15000),
        ]
    );
    assert!(p[3].published > p[2].published);
    let all = flows::load_all(dir.path()).unwrap();
    let statuses = |org: &str, rev: i64| -> Vec<String> {
        all.iter()
            .find(|f| f.flow.receiver.organization_id == org && f.flow.revision == rev)
            .unwrap()
            .payments
            .iter()
            .map(|r| r.pay_status.clone())
            .collect()
    };
    let xa = statuses(X, 2);
    assert_eq!(
        &xa[5..],
        ["NO_RPT", "STAND_IN_NO_RPT", "NO_RPT", "EXECUTED"]
    );
    assert!(xa[..5].iter().all(|s| s == "EXECUTED"));
    assert_eq!(statuses(Y, 1), ["REVOKED"]);
    let y = all
        .iter()
        .find(|f| f.flow.receiver.organization_id == Y)
        .unwrap();
    assert_eq!(
        (y.flow.tot_payments, y.flow.computed_tot_payments),
        (2, Some(1))
    );
    let xa_rows = &all
        .iter()
        .find(|f| f.flow.fdr == p[0].fdr && f.flow.revision == 2)
        .unwrap()
        .payments;
    let paid = format!("010000000000{:05}", 1);
    // The paid IUV without a receipt, expected (esito 9) and not (esito 0).
    assert_eq!(
        (
            xa_rows[7].iuv.as_str(),
            xa_rows[7].iur.as_str(),
            xa_rows[7].pay
        ),
        (paid.as_str(), format!("PAIDNORPT{paid}").as_str(), 5.0)
    );
    assert_eq!(
        (
            xa_rows[8].iuv.as_str(),
            xa_rows[8].iur.as_str(),
            xa_rows[8].pay
        ),
        (paid.as_str(), format!("NORECEIPT{paid}").as_str(), 7.0)
    );
    // The last own row (payment 5's transfer to X, 7.00) is 1.00 more.
    assert_eq!(
        (xa_rows[4].iur.clone(), xa_rows[4].pay),
        (format!("{:032x}", 5), 8.0)
    );
    // X/B repeats X/A's first row, as the receipt has it.
    let xb = all.iter().find(|f| f.flow.fdr == p[1].fdr).unwrap();
    let last = xb.payments.last().unwrap();
    assert_eq!(
        (
            last.iuv.as_str(),
            last.iur.clone(),
            last.pay,
            last.id_transfer
        ),
        (paid.as_str(), format!("{:032x}", 1), 10.0, 1)
    );
    let r1 = all
        .iter()
        .find(|f| f.flow.revision == 1 && f.flow.fdr == p[0].fdr);
    let r2 = all.iter().find(|f| f.flow.revision == 2);
    assert_ne!(
        r1.unwrap().flow.regulation,
        r2.unwrap().flow.regulation,
        "a revision is another SCT"
    );
    // The IUVs of the rows without receipt were never paid.
    let paid: Vec<String> = (1..=9).map(|n| format!("010000000000{n:05}")).collect();
    let no_rpt = &r2.unwrap().payments[5];
    assert!(!paid.contains(&no_rpt.iuv));
    assert!(no_rpt.iuv.starts_with("99") && no_rpt.iuv.len() == 17);
    // Deterministic, anomalies included: the same ledger and date give the same files.
    let files: Vec<Vec<u8>> = p.iter().map(|f| std::fs::read(&f.path).unwrap()).collect();
    assert_eq!(publish(dir.path(), date, true, at), p);
    for (f, bytes) in p.iter().zip(&files) {
        assert_eq!(
            &std::fs::read(&f.path).unwrap(),
            bytes,
            "{}",
            f.path.display()
        );
    }
}

#[test]
fn the_first_flow_is_the_first_to_settle_its_own_entity_s_notices() {
    // F sorts before X but is only X's secondary beneficiary: its flow gets no anomaly rows.
    const F: &str = "00133880252";
    let dir = tempfile::tempdir().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    l.append(&payment(1, X, A, date, &[(X, 700), (F, 300)]))
        .unwrap();
    l.append(&payment(2, X, A, date, &[(X, 1000)])).unwrap();
    l.append(&payment(3, X, B, date, &[(X, 500), (F, 100)]))
        .unwrap();
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap();
    let p = publish(dir.path(), date, true, at);
    let shape: Vec<(&str, &str, i64, usize)> = p
        .iter()
        .map(|p| {
            (
                p.organization_id.as_str(),
                p.psp_id.as_str(),
                p.revision,
                p.rows,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (F, A, 1, 1),
            (F, B, 1, 1),
            (X, A, 1, 6),
            (X, B, 1, 2),
            (X, A, 2, 6),
        ]
    );
}

#[test]
fn the_cache_parses_a_flow_file_again_only_once_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    small_ledger(dir.path(), date);
    let at = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap();
    publish(dir.path(), date, false, at);
    let cache = flows::FlowCache::default();
    let first = flows::load_all_cached(dir.path(), &cache).unwrap();
    let again = flows::load_all_cached(dir.path(), &cache).unwrap();
    assert_eq!(first.len(), 3);
    assert!(first
        .iter()
        .zip(&again)
        .all(|(a, b)| std::sync::Arc::ptr_eq(a, b)));
    let plain = flows::load_all(dir.path()).unwrap();
    assert!(plain.iter().zip(&first).all(|(a, b)| a == b.as_ref()));
    // Published again (anomalies and a revision 2 now): the new files are read.
    let later = at + Duration::hours(1);
    publish(dir.path(), date, true, later);
    let now = flows::load_all_cached(dir.path(), &cache).unwrap();
    assert_eq!(now.len(), 4);
    assert!(now.iter().all(|f| f.flow.published >= Some(later)));
}

// --- Served ---------------------------------------------------------------------------------

struct Served {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<(), crate::ServeError>>,
}

async fn serve(ledger: &Path, password: Option<&str>) -> Served {
    let payer = SimOptions::new("http://127.0.0.1:9", BROKER, STATION, Vec::new());
    let mut opts = ServeOptions::new("127.0.0.1:0", payer);
    let mut fdr = FdrOptions::new(ledger);
    fdr.key = "fdr-k3y".into();
    fdr.password = password.map(str::to_owned);
    opts.fdr = Some(fdr);
    let s = StandIns::bind(opts).await.unwrap();
    let base = format!("http://{}", s.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(s.run(async {
        let _ = stopped.await;
    }));
    Served { base, stop, done }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let res = client()
        .get(url)
        .header(KEY_HEADER, "fdr-k3y")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

fn list_url(base: &str, org: &str, query: &str) -> String {
    format!("{base}/fdr-org/service/v1/organizations/{org}/fdrs?{query}")
}

fn cursor(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn the_fdr3_api_pages_filters_and_guards_the_flows() {
    let dir = tempfile::tempdir().unwrap();
    let date = flows::today();
    small_ledger(dir.path(), date);
    let at = published_at();
    let p = publish(dir.path(), date, true, at);
    let s = serve(dir.path(), None).await;

    // The key: none, a wrong one → 401; the query parameter does as the header.
    let url = list_url(&s.base, X, "");
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = client()
        .get(&url)
        .header(KEY_HEADER, "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = client()
        .get(format!("{url}subscription-key=fdr-k3y"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    // X has three revisions: two pages of two.
    let since = cursor(at - Duration::seconds(1));
    let (st, body) = get(&list_url(
        &s.base,
        X,
        &format!("publishedGt={since}&size=2"),
    ))
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let page1: FlowList = rest::decode(&body).unwrap();
    assert_eq!(
        (
            page1.metadata.page_number,
            page1.metadata.page_size,
            page1.metadata.tot_page
        ),
        (1, 2, 2)
    );
    assert_eq!(page1.count, 3);
    assert!(page1.metadata.has_next());
    let (_, body) = get(&list_url(
        &s.base,
        X,
        &format!("publishedGt={since}&size=2&page=2"),
    ))
    .await;
    let page2: FlowList = rest::decode(&body).unwrap();
    assert!(!page2.metadata.has_next());
    let listed: Vec<(String, i64)> = page1
        .data
        .iter()
        .chain(&page2.data)
        .map(|f| (f.fdr.clone(), f.revision))
        .collect();
    assert_eq!(
        listed,
        vec![
            (p[0].fdr.clone(), 1),
            (p[1].fdr.clone(), 1),
            (p[0].fdr.clone(), 2)
        ],
        "in the order of publication"
    );
    // The cursor: after the first page only the revision 2 is new.
    let (_, body) = get(&list_url(
        &s.base,
        X,
        &format!("publishedGt={}", cursor(page1.cursor().unwrap())),
    ))
    .await;
    let after: FlowList = rest::decode(&body).unwrap();
    assert_eq!(after.data.len(), 1);
    assert_eq!(after.data[0].revision, 2);
    // Without publishedGt the default (the previous month) lists all; pspId filters.
    let (_, body) = get(&list_url(&s.base, X, "pspId=UNCRITMM")).await;
    let by_psp: FlowList = rest::decode(&body).unwrap();
    assert_eq!(by_psp.data.len(), 1);
    assert_eq!(by_psp.data[0].psp_id, B);
    let (_, body) = get(&list_url(&s.base, "99999999999", "")).await;
    assert_eq!(rest::decode::<FlowList>(&body).unwrap().count, 0);
    // A bad size is FDR's 400.
    let (st, body) = get(&list_url(&s.base, X, "size=0")).await;
    assert_eq!(st, 400);
    let e: ErrorResponse = rest::decode(&body).unwrap();
    assert_eq!(e.app_error_code.as_deref(), Some("FDR-1000"));

    // One flow, then its payments in pages of three.
    let flow_url = format!(
        "{}/fdr-org/service/v1/organizations/{X}/fdrs/{}/revisions/2/psps/{A}",
        s.base, p[0].fdr
    );
    let (st, body) = get(&flow_url).await;
    assert_eq!(st, 200);
    let single: SingleFlow = rest::decode(&body).unwrap();
    let header = single.to_flow().unwrap();
    assert_eq!(header.revision, 2);
    assert_eq!(header.declared_count, 9);
    assert_eq!(header.declared_amount.cents(), 15000);
    assert_eq!(header.receiver.organization_id, X);
    let mut rows = Vec::new();
    for page in 1..=3 {
        let (st, body) = get(&format!("{flow_url}/payments?page={page}&size=3")).await;
        assert_eq!(st, 200);
        let pg: PaymentsPage = rest::decode(&body).unwrap();
        assert_eq!(pg.metadata.tot_page, 3);
        assert_eq!(pg.metadata.has_next(), page < 3);
        rows.extend(pg.to_payments().unwrap());
    }
    assert_eq!(rows.len(), 9);
    assert_eq!(rows.iter().map(|r| r.amount.cents()).sum::<i64>(), 15000);
    assert_eq!(rows[5].status, PayStatus::NoRpt);
    assert_eq!(rows[6].status, PayStatus::StandInNoRpt);

    // The wrong total and the revoked row reach the client as such.
    let (_, body) = get(&format!(
        "{}/fdr-org/service/v1/organizations/{Y}/fdrs/{}/revisions/1/psps/{A}",
        s.base, p[2].fdr
    ))
    .await;
    let y: SingleFlow = rest::decode(&body).unwrap();
    assert_eq!(y.sum_payments, 4.0);
    assert_eq!(y.computed_sum_payments, Some(3.0));
    assert_eq!((y.tot_payments, y.computed_tot_payments), (2, Some(1)));

    // Unknown: another revision, another PSP, another entity.
    for url in [
        flow_url.replace("/revisions/2/", "/revisions/3/"),
        flow_url.replace(&format!("/psps/{A}"), &format!("/psps/{B}")),
        flow_url.replace(
            &format!("/organizations/{X}/"),
            &format!("/organizations/{Y}/"),
        ),
    ]
    .iter()
    {
        let (st, body) = get(url).await;
        assert_eq!(st, 404, "{url}");
        let e: ErrorResponse = rest::decode(&body).unwrap();
        assert_eq!(e.app_error_code.as_deref(), Some(FLOW_NOT_FOUND));
        assert_eq!(e.http_status_code, Some(404));
    }
    let (st, _) = get(&format!(
        "{}/payments",
        flow_url.replace("/revisions/2/", "/revisions/9/")
    ))
    .await;
    assert_eq!(st, 404);
    s.stop().await;
}

async fn soap_call(base: &str, action: &str, body: String) -> Vec<u8> {
    let res = client()
        .post(format!("{base}{NODE_FOR_PA_PATH}"))
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", action)
        .body(body)
        .send()
        .await
        .unwrap();
    res.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn the_legacy_soap_lists_and_serves_flows_as_xsd_valid_xml() {
    let dir = tempfile::tempdir().unwrap();
    let date = flows::today();
    small_ledger(dir.path(), date);
    let p = publish(dir.path(), date, true, published_at());
    let s = serve(dir.path(), Some("s3cret")).await;
    let caller = |entity| NodeCaller {
        broker_id: BROKER,
        station_id: STATION,
        password: "s3cret",
        entity,
        psp_id: None,
    };

    // The latest revision of each flow of X; every flow without a domain.
    let body = soap_call(
        &s.base,
        soap::LIST_OPERATION,
        soap::render_list_request(&caller(Some(X))),
    )
    .await;
    let listed = soap::parse_list_response(&body).unwrap();
    let mut names: Vec<&str> = listed.iter().map(|f| f.iuf.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, [p[0].fdr.as_str(), p[1].fdr.as_str()]);
    let all = soap::parse_list_response(
        &soap_call(
            &s.base,
            soap::LIST_OPERATION,
            soap::render_list_request(&caller(None)),
        )
        .await,
    )
    .unwrap();
    assert_eq!(all.len(), 3);

    // A flow: its XML is the revision 2, valid against the node's XSD.
    let body = soap_call(
        &s.base,
        soap::FLOW_OPERATION,
        soap::render_flow_request(&caller(Some(X)), &p[0].fdr),
    )
    .await;
    let xml = soap::parse_flow_response(&body).unwrap();
    let (header, rows) = soap::parse_flow_response_flow(&body, Some(A)).unwrap();
    assert_eq!(header.iuf.as_str(), p[0].fdr);
    assert_eq!(header.declared_count, 9);
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[5].status, PayStatus::NoRpt);
    let stored = flows::load_all(dir.path()).unwrap();
    let r2 = stored.iter().find(|f| f.flow.revision == 2).unwrap();
    assert_eq!(header.regulation_id, r2.flow.regulation);
    // The revoked row and the wrong total, too.
    let body = soap_call(
        &s.base,
        soap::FLOW_OPERATION,
        soap::render_flow_request(&caller(Some(Y)), &p[2].fdr),
    )
    .await;
    let y_xml = soap::parse_flow_response(&body).unwrap();
    let (y, y_rows) = soap::parse_flow_response_flow(&body, Some(A)).unwrap();
    assert_eq!(y.declared_amount.cents(), 400);
    assert_eq!(y.declared_count, 2);
    assert_eq!(y_rows[0].status, PayStatus::Revoked);
    xsd_valid(&[xml, y_xml]);

    // Unknown flow, wrong password: the node's faults.
    let body = soap_call(
        &s.base,
        soap::FLOW_OPERATION,
        soap::render_flow_request(&caller(Some(X)), "2026-01-01NOPE-1"),
    )
    .await;
    match soap::parse_flow_response(&body) {
        Err(FdrSoapError::Fault(f)) => assert_eq!(f.fault_code, soap::FLOW_UNKNOWN),
        other => panic!("{other:?}"),
    }
    let mut wrong = caller(Some(X));
    wrong.password = "guess";
    let body = soap_call(
        &s.base,
        soap::LIST_OPERATION,
        soap::render_list_request(&wrong),
    )
    .await;
    match soap::parse_list_response(&body) {
        Err(FdrSoapError::Fault(f)) => assert_eq!(f.fault_code, soap::AUTHENTICATION),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

/// Every document valid against the node's FlussoRiversamento XSD (xmllint).
fn xsd_valid(docs: &[Vec<u8>]) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.path().join(format!("flow{i}.xml"));
            std::fs::write(&p, d).unwrap();
            p
        })
        .collect();
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(snodo_adapters::fdr::specs::FLUSSO_XSD)
        .args(&files)
        .output()
        .expect("xmllint (ops/setup.sh installs libxml2-utils)");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    for f in &files {
        assert!(
            report.contains(&format!("{} validates", f.display())),
            "{report}"
        );
    }
}
