//! The settlement flows pull end to end: `snodo reports pull` against a small pagoPA stand-in
//! serving FdR 3 REST (a two-page list, flows with paged payments, built on the official header
//! sample) and the node's legacy SOAP (the official list and flow answers), then the flows,
//! links, anomalies, events and positions as the hub reports them.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const SPECS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/adapters/specs");

/// What the stand-in saw of a request.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    key: Option<String>,
    action: Option<String>,
    body: String,
}

type Route = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on loopback; `routes` answers each request.
fn stand_in(routes: Box<Route>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut len, mut key, mut action) = (0usize, None, None);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                let value = value.trim().to_string();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => len = value.parse().unwrap_or(0),
                    "ocp-apim-subscription-key" => key = Some(value),
                    "soapaction" => action = Some(value),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let req = Seen {
                target,
                key,
                action,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let (status, answer) = routes(&req);
            log.lock().unwrap().push(req);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, seen)
}

/// Three TARI positions of c_g224, and receipts R1 (10.00), R3 (30.00) for the first and third
/// through the node's call; returns the IUVs.
fn paid_positions(home: &Home) -> Vec<String> {
    home.import_rows(
        "REP1",
        &[
            Row::tari("P1", 1, 1000),
            Row::tari("P2", 2, 2000),
            Row::tari("P3", 3, 3000),
        ],
    );
    let positions = home.positions(&[]);
    let notice = |i: usize| positions[i]["notice_number"].as_str().unwrap().to_string();
    let hub = Hub::start_serving(home);
    for (i, rid, amount) in [(0, "R1", "10.00"), (2, "R3", "30.00")] {
        let answer = post_soap(
            home.port,
            "paSendRTV2",
            &send_rt_v2(&notice(i), rid, amount),
        );
        assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
    }
    hub.terminate();
    positions
        .iter()
        .map(|p| p["iuv"].as_str().unwrap().to_string())
        .collect()
}

fn add_fdr(home: &Home, table: &str) {
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(table);
    std::fs::write(home.config(), cfg).unwrap();
}

fn lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", stderr(o));
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events(home: &Home, kind: &str) -> Vec<serde_json::Value> {
    use snodo_store::prelude::*;
    let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
    store
        .events_after(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.payload)
        .collect()
}

/// A flow header: the official FdR 3 sample, for Padova, with this key and totals.
fn header(fdr: &str, psp: &str, revision: i64, count: i64, sum: f64) -> String {
    let sample = std::fs::read_to_string(format!(
        "{SPECS}/fdr/pagopa-fdr-nodo-dei-pagamenti/samples/internalGetWithRevision_OK.json"
    ))
    .unwrap();
    let mut h: serde_json::Value = serde_json::from_str(&sample).unwrap();
    h["fdr"] = fdr.into();
    h["revision"] = revision.into();
    h["sender"]["pspId"] = psp.into();
    h["receiver"]["organizationId"] = PADOVA.into();
    h["totPayments"] = count.into();
    h["sumPayments"] = sum.into();
    h.to_string()
}

/// Page `page` (size 2) of these payments (iuv, iur, euro).
fn payments(rows: &[(&str, &str, f64)], page: usize) -> String {
    let tot_page = rows.len().div_ceil(2).max(1);
    let data: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .skip((page - 1) * 2)
        .take(2)
        .map(|(i, (iuv, iur, pay))| {
            serde_json::json!({"iuv": iuv, "iur": iur, "index": i + 1, "idTransfer": 1,
                "pay": pay, "payStatus": "EXECUTED", "payDate": "2026-11-26T10:00:00Z"})
        })
        .collect();
    serde_json::json!({"metadata": {"pageSize": 2, "pageNumber": page, "totPage": tot_page},
        "count": rows.len(), "data": data})
    .to_string()
}

fn query_value<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn rest_pull_links_reports_anomalies_once_and_goes_on_past_a_bad_flow() {
    let home = Home::new();
    let iuvs = paid_positions(&home);
    let (i1, i2, i3) = (iuvs[0].clone(), iuvs[1].clone(), iuvs[2].clone());

    // A: R1 linked, P2 paid without a receipt at the hub, R1 again (a duplicate row).
    // B: its payments are not JSON. C: R3 for 29.99 (the receipt says 30.00), and R1 again
    // (already settled by A).
    let a_rows = vec![
        (i1.clone(), "R1".to_string(), 10.0),
        (i2.clone(), "RX".to_string(), 20.0),
        (i1.clone(), "R1".to_string(), 10.0),
    ];
    let c_rows = vec![
        (i3.clone(), "R3".to_string(), 29.99),
        (i1.clone(), "R1".to_string(), 10.0),
    ];
    let published = |n: u32| format!("2026-11-27T1{n}:00:00Z");
    let routes: Box<Route> = Box::new(move |r: &Seen| {
        let path = r.target.split('?').next().unwrap_or("");
        let page: usize = query_value(&r.target, "page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let base = format!("/organizations/{PADOVA}/fdrs");
        let as_refs = |rows: Vec<(String, String, f64)>, page: usize| {
            let refs: Vec<(&str, &str, f64)> = rows
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
                .collect();
            payments(&refs, page)
        };
        if path.ends_with("/fdrs") && path != base {
            return (200, serde_json::json!({"metadata": {"pageSize": 1000, "pageNumber": 1, "totPage": 1}, "count": 0, "data": []}).to_string());
        }
        if path == base {
            // After the first pull the hub asks only for what was published since.
            if query_value(&r.target, "publishedGt").is_some() {
                return (200, serde_json::json!({"metadata": {"pageSize": 1000, "pageNumber": 1, "totPage": 1}, "count": 0, "data": []}).to_string());
            }
            let item = |fdr: &str, psp: &str, n: u32| {
                serde_json::json!({"fdr": fdr, "pspId": psp, "revision": 1,
                    "published": published(n), "flowDate": "2026-11-27T09:00:00Z"})
            };
            let data = if page == 1 {
                vec![item("2026-11-27PSPA-1", "PSPA", 1)]
            } else {
                vec![
                    item("2026-11-27PSPB-1", "PSPB", 2),
                    item("2026-11-27PSPC-1", "PSPC", 3),
                ]
            };
            return (200, serde_json::json!({"metadata": {"pageSize": 1000, "pageNumber": page, "totPage": 2}, "count": 3, "data": data}).to_string());
        }
        let flow = |fdr: &str, psp: &str| format!("{base}/{fdr}/revisions/1/psps/{psp}");
        match path {
            p if p == flow("2026-11-27PSPA-1", "PSPA") => {
                (200, header("2026-11-27PSPA-1", "PSPA", 1, 3, 40.0))
            }
            p if p == flow("2026-11-27PSPB-1", "PSPB") => {
                (200, header("2026-11-27PSPB-1", "PSPB", 1, 1, 1.0))
            }
            p if p == flow("2026-11-27PSPC-1", "PSPC") => {
                (200, header("2026-11-27PSPC-1", "PSPC", 1, 2, 39.99))
            }
            p if p == flow("2026-11-27PSPA-1", "PSPA") + "/payments" => {
                (200, as_refs(a_rows.clone(), page))
            }
            p if p == flow("2026-11-27PSPB-1", "PSPB") + "/payments" => {
                (200, "<html>oops</html>".into())
            }
            p if p == flow("2026-11-27PSPC-1", "PSPC") + "/payments" => {
                (200, as_refs(c_rows.clone(), page))
            }
            _ => (
                404,
                r#"{"appErrorCode":"FDR-0701","errors":[{"message":"not found"}]}"#.into(),
            ),
        }
    });
    let (port, seen) = stand_in(routes);
    add_fdr(
        &home,
        &format!(
            "\n[pagopa.fdr]\nmode = \"rest\"\nurl = \"http://127.0.0.1:{port}/\"\nsubscription_key = \"${{FDR_TEST_KEY:-k-123}}\"\npage_size = 2\n"
        ),
    );

    let pulled =
        lines(&home.snodo(&["reports", "-c", "config.toml", "pull", "--entity", "c_g224"]));
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0]["stored"], 2, "{pulled:?}");
    assert_eq!(pulled[0]["failed"], 1, "{pulled:?}");
    assert_eq!(pulled[0]["rows"], 5, "{pulled:?}");
    assert!(pulled[0].get("error").is_none(), "{pulled:?}");
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().all(|s| s.key.as_deref() == Some("k-123")),
            "every call carries the key"
        );
        // The list and A's payments were paged to the end.
        assert!(seen.iter().any(|s| s.target.contains("/fdrs?page=2")));
        assert!(seen
            .iter()
            .any(|s| s.target.contains("PSPA/payments?page=2")));
    }

    let flows = lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    let by_iuf = |iuf: &str| flows.iter().find(|f| f["iuf"] == iuf).unwrap().clone();
    let a = by_iuf("2026-11-27PSPA-1");
    assert_eq!(
        (
            a["status"].as_str(),
            a["payments"].as_i64(),
            a["linked"].as_i64()
        ),
        (Some("ok"), Some(3), Some(1))
    );
    assert_eq!(a["anomalies"], 2);
    assert_eq!(a["declared"]["amount_cents"], 4000);
    assert_eq!(a["computed"]["amount_cents"], 4000);
    let b = by_iuf("2026-11-27PSPB-1");
    assert_eq!(b["status"], "failed");
    assert!(
        b["reason"].as_str().unwrap().contains("payments page 1"),
        "{b}"
    );
    let c = by_iuf("2026-11-27PSPC-1");
    assert_eq!(
        (
            c["status"].as_str(),
            c["linked"].as_i64(),
            c["anomalies"].as_i64()
        ),
        (Some("ok"), Some(1), Some(2))
    );

    let anomalies: Vec<String> = events(&home, "report.anomaly")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["iuf"].as_str().unwrap(),
                e["code"].as_str().unwrap()
            )
        })
        .collect();
    let mut sorted = anomalies.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "2026-11-27PSPA-1 DUPLICATE_IN_FLOW",
            "2026-11-27PSPA-1 NO_RECEIPT",
            "2026-11-27PSPC-1 ALREADY_REPORTED",
            "2026-11-27PSPC-1 AMOUNT_MISMATCH",
        ]
    );
    assert_eq!(events(&home, "report.received").len(), 2);
    assert_eq!(events(&home, "report.failed").len(), 1);

    let shown = lines(&home.snodo(&[
        "reports",
        "-c",
        "config.toml",
        "show",
        "--entity",
        "c_g224",
        "2026-11-27PSPA-1",
    ]));
    assert_eq!(shown[0]["rows"].as_array().unwrap().len(), 3);
    assert!(shown[0]["rows"][0]["receipt"].is_i64());
    assert!(shown[0]["rows"][1]["receipt"].is_null());

    // Paid positions show their settlement flow; the unpaid one none.
    let positions = home.positions(&[]);
    assert_eq!(positions[0]["settlement"]["iuf"], "2026-11-27PSPA-1");
    assert_eq!(
        positions[0]["settlement"]["regulation_id"],
        "SEPA - Bonifico xzy"
    );
    assert!(positions[1].get("settlement").is_none());
    assert_eq!(positions[2]["settlement"]["iuf"], "2026-11-27PSPC-1");

    // Again: the cursor asks only for newer flows, and nothing is added.
    let calls = seen.lock().unwrap().len();
    let again = lines(&home.snodo(&["reports", "-c", "config.toml", "pull"]));
    let padova = again.iter().find(|s| s["entity"] == "c_g224").unwrap();
    assert_eq!(
        (padova["stored"].as_i64(), padova["failed"].as_i64()),
        (Some(0), Some(0))
    );
    let list_call = seen.lock().unwrap()[calls..]
        .iter()
        .find(|s| {
            s.target
                .starts_with(&format!("/organizations/{PADOVA}/fdrs?"))
        })
        .cloned()
        .unwrap();
    assert_eq!(
        query_value(&list_call.target, "publishedGt"),
        Some("2026-11-27T13%3A00%3A00Z"),
        "the newest published of the first pull, URL-encoded"
    );
    assert_eq!(events(&home, "report.anomaly").len(), 4);
    assert_eq!(
        lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"])).len(),
        3
    );
}

#[test]
fn soap_pull_reads_the_node_s_flows_and_records_a_flow_for_another_entity_as_failed() {
    use snodo_adapters::fdr::{soap, xml};
    use snodo_core::settlement::*;
    let home = Home::new();
    let iuvs = paid_positions(&home);

    let official = std::fs::read_to_string(format!(
        "{SPECS}/pagopa/samples/pagopa-wisp-soap-converter/at-44442c0/mocks/nodoChiediFlussoRendicontazione/OK.xml"
    ))
    .unwrap();
    let ours = "2026-11-27BCITITMM-0001";
    let flow = SettlementFlow {
        iuf: Iuf::parse(ours).unwrap(),
        psp_id: "BCITITMM".into(),
        revision: 1,
        flow_time: chrono::DateTime::parse_from_rfc3339("2026-11-27T09:00:00Z")
            .unwrap()
            .into(),
        regulation_id: "SCT-77".into(),
        regulation_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(),
        sender: FlowSender {
            kind: SenderKind::Bic,
            id: "BCITITMM".into(),
            name: Some("Intesa Sanpaolo".into()),
            broker_id: None,
            channel_id: None,
        },
        bic_code_pouring_bank: None,
        receiver: FlowReceiver {
            id: PADOVA.into(),
            organization_id: PADOVA.into(),
            name: None,
        },
        declared_count: 2,
        declared_amount: snodo_core::Amount::from_cents(4000),
        published: None,
    };
    let rows = vec![
        SettlementPayment {
            iuv: iuvs[0].clone(),
            iur: "R1".into(),
            transfer_index: Some(TransferIndex::FIRST),
            amount: snodo_core::Amount::from_cents(1000),
            status: PayStatus::Executed,
            date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
        },
        SettlementPayment {
            iuv: iuvs[2].clone(),
            iur: "R3".into(),
            transfer_index: None,
            amount: snodo_core::Amount::from_cents(3000),
            status: PayStatus::Executed,
            date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
        },
    ];
    let our_answer = soap::render_flow_response(&xml::render_flow(&flow, &rows));
    let list = std::fs::read_to_string(format!(
        "{SPECS}/pagopa/samples/pagopa-wisp-soap-converter/at-44442c0/mocks/nodoChiediElencoFlussiRendicontazione/OK.xml"
    ))
    .unwrap()
    .replacen(
        "<idRendicontazione>",
        &format!("<idRendicontazione><identificativoFlusso>{ours}</identificativoFlusso><dataOraFlusso>2026-11-27T10:00:00</dataOraFlusso></idRendicontazione><idRendicontazione>"),
        1,
    );
    let routes: Box<Route> = Box::new(move |r: &Seen| {
        if r.body.contains(soap::LIST_OPERATION) {
            (200, list.clone())
        } else if r.body.contains(ours) {
            (200, our_answer.clone())
        } else {
            (200, official.clone())
        }
    });
    let (port, seen) = stand_in(routes);
    add_fdr(
        &home,
        &format!("\n[pagopa.fdr]\nmode = \"soap\"\nurl = \"http://127.0.0.1:{port}/nodo\"\npassword = \"pw-1\"\n"),
    );

    let pulled =
        lines(&home.snodo(&["reports", "-c", "config.toml", "pull", "--entity", "c_g224"]));
    assert_eq!(
        (pulled[0]["stored"].as_i64(), pulled[0]["failed"].as_i64()),
        (Some(1), Some(1)),
        "{pulled:?}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].action.as_deref(), Some(soap::LIST_OPERATION));
        assert!(seen[0].body.contains("<password>pw-1</password>"));
        assert!(seen[0].body.contains(&format!(
            "<identificativoDominio>{PADOVA}</identificativoDominio>"
        )));
        // The official list names its flow twice: asked once.
        assert_eq!(
            seen.iter()
                .filter(|s| s.body.contains("2023-04-01nodo-doc-dev-16818090899"))
                .count(),
            1
        );
    }
    let flows = lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    let ok = flows.iter().find(|f| f["iuf"] == ours).unwrap();
    assert_eq!(
        (
            ok["status"].as_str(),
            ok["linked"].as_i64(),
            ok["anomalies"].as_i64()
        ),
        (Some("ok"), Some(2), Some(0))
    );
    assert_eq!(ok["psp"], "BCITITMM");
    let other = flows
        .iter()
        .find(|f| f["iuf"] == "2023-04-01nodo-doc-dev-16818090899")
        .unwrap();
    assert_eq!(other["status"], "failed");
    assert!(
        other["reason"].as_str().unwrap().contains("99999999999"),
        "{other}"
    );
    let positions = home.positions(&[]);
    assert_eq!(positions[0]["settlement"]["iuf"], ours);
    assert_eq!(positions[0]["settlement"]["flow_date"], "2026-11-27");

    // Held flows are not asked again.
    let calls = seen.lock().unwrap().len();
    let again = lines(&home.snodo(&["reports", "-c", "config.toml", "pull", "--entity", "c_g224"]));
    assert_eq!(
        (again[0]["stored"].as_i64(), again[0]["skipped"].as_i64()),
        (Some(0), Some(2))
    );
    assert_eq!(seen.lock().unwrap().len(), calls + 1, "only the list");
}

/// A crash (the `report-chunk` failpoint aborts the process right after a chunk of rows
/// commits) in the middle of a 50 000-payment flow: the next pull resumes it, and the store
/// holds one flow of 50 000 rows, each once; the cursor moved only after the flow was whole.
#[test]
fn a_pull_killed_mid_flow_resumes_without_losing_or_repeating_rows() {
    const N: usize = 50_000;
    let home = Home::new();
    let fdr = "2026-11-27PSPK-1";
    let rows: Vec<(String, String, f64)> = (0..N)
        .map(|i| (format!("{:017}", 500_000 + i), format!("K{i}"), 1.0))
        .collect();
    let routes: Box<Route> = Box::new(move |r: &Seen| {
        let path = r.target.split('?').next().unwrap_or("");
        let page: usize = query_value(&r.target, "page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let size: usize = query_value(&r.target, "size")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1000);
        let base = format!("/organizations/{PADOVA}/fdrs");
        let empty = serde_json::json!({"metadata": {"pageSize": 1000, "pageNumber": 1, "totPage": 1}, "count": 0, "data": []}).to_string();
        if path.ends_with("/fdrs") {
            if path != base || query_value(&r.target, "publishedGt").is_some() {
                return (200, empty);
            }
            let data = [
                serde_json::json!({"fdr": fdr, "pspId": "PSPK", "revision": 1,
                "published": "2026-11-27T10:00:00Z", "flowDate": "2026-11-27T09:00:00Z"}),
            ];
            return (200, serde_json::json!({"metadata": {"pageSize": 1000, "pageNumber": 1, "totPage": 1}, "count": 1, "data": data}).to_string());
        }
        let flow = format!("{base}/{fdr}/revisions/1/psps/PSPK");
        if path == flow {
            return (200, header(fdr, "PSPK", 1, N as i64, N as f64));
        }
        if path == format!("{flow}/payments") {
            let data: Vec<serde_json::Value> = rows
                .iter()
                .enumerate()
                .skip((page - 1) * size)
                .take(size)
                .map(|(i, (iuv, iur, pay))| {
                    serde_json::json!({"iuv": iuv, "iur": iur, "index": i + 1, "idTransfer": 1,
                        "pay": pay, "payStatus": "NO_RPT", "payDate": "2026-11-26T10:00:00Z"})
                })
                .collect();
            let tot_page = N.div_ceil(size);
            return (200, serde_json::json!({"metadata": {"pageSize": size, "pageNumber": page, "totPage": tot_page}, "count": N, "data": data}).to_string());
        }
        (404, String::new())
    });
    let (port, seen) = stand_in(routes);
    add_fdr(
        &home,
        &format!("\n[pagopa.fdr]\nmode = \"rest\"\nurl = \"http://127.0.0.1:{port}\"\nsubscription_key = \"k\"\n"),
    );

    let crashed = std::process::Command::new(BIN)
        .args(["reports", "-c", "config.toml", "pull", "--entity", "c_g224"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .env("SNODO_FAILPOINT", "report-chunk")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint did not fire");
    assert!(
        stderr(&crashed).contains("failpoint report-chunk"),
        "{}",
        stderr(&crashed)
    );
    {
        use snodo_store::prelude::*;
        let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
        let partial = store.reports_by_iuf("c_g224", fdr).unwrap();
        assert_eq!(partial.len(), 1);
        assert_eq!(partial[0].status, "loading");
        assert!(partial[0].rows_done > 0 && (partial[0].rows_done as usize) < N);
        assert_eq!(
            store.report_cursor("c_g224").unwrap(),
            None,
            "the cursor waits for the flow"
        );
    }

    let pulled =
        lines(&home.snodo(&["reports", "-c", "config.toml", "pull", "--entity", "c_g224"]));
    assert_eq!(pulled[0]["stored"], 1, "{pulled:?}");
    // The second pull listed from the start again (no cursor yet).
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s
            .target
            .starts_with(&format!("/organizations/{PADOVA}/fdrs?")))
        .all(|s| query_value(&s.target, "publishedGt").is_none()));

    use snodo_store::prelude::*;
    let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
    let flows = store.reports_by_iuf("c_g224", fdr).unwrap();
    assert_eq!(flows.len(), 1, "one flow");
    let f = &flows[0];
    assert_eq!(
        (f.status.as_str(), f.rows_done, f.computed_count),
        ("ok", N as i64, N as i64)
    );
    let mut rows_seen = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page = store.report_rows(f.id, after, 10_000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.row_no as u64;
        for r in &page {
            assert!(
                rows_seen.insert(r.iur.clone()),
                "row {} stored twice",
                r.iur
            );
        }
    }
    assert_eq!(rows_seen.len(), N, "every row once");
    // Each row's anomaly (an IUV the hub never issued) is recorded once.
    let anomalies = store.report_anomalies(f.id).unwrap();
    assert_eq!(anomalies.len(), N);
    let distinct: std::collections::HashSet<_> = anomalies.iter().map(|a| a.row_no).collect();
    assert_eq!(distinct.len(), N);
    assert_eq!(
        store.report_cursor("c_g224").unwrap().as_deref(),
        Some("2026-11-27T10:00:00Z")
    );
}
