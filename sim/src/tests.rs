//! The simulator against a fake hub: a bare HTTP/1.1 server answering with the adapter's codec,
//! strict about what it is sent (every request must parse, i.e. be schema-valid).

use super::*;
use snodo_adapters::pagopa::{
    fault_codes, AmountOption, Destination, EntityType, Fault, GetPaymentResponse,
    GetPaymentV2Response, PaymentData, PaymentDataV2, PaymentOption, SendRtResponse, Subject,
    Transfer, TransferV2, UniqueIdentifier, VerifyResponse,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const BROKER: &str = "80007580279";
pub(crate) const STATION: &str = "80007580279_01";
pub(crate) const PADOVA: &str = "00644060287";
pub(crate) const NOTICES: [&str; 3] = [
    "300715700000000032",
    "322201151398574181",
    "347164993070184562",
];

pub(crate) struct FakeHub {
    /// Notice → amount in cents.
    positions: HashMap<String, i64>,
    pub(crate) paid: Mutex<HashSet<String>>,
    receipts: Mutex<HashSet<String>>,
    chaos: Chaos,
}

/// What goes wrong with the next POSTs, in this order: the first `drop_requests` are read and
/// the connection closed without an answer; the next `answer_503` get a plain-text 503; of
/// the receipts after that, the first `drop_receipt_answers` are stored and then the connection
/// is closed (the hub crashed between its commit and its answer).
#[derive(Default)]
struct Chaos {
    drop_requests: AtomicUsize,
    answer_503: AtomicUsize,
    drop_receipt_answers: AtomicUsize,
    /// Every POST that reached the server.
    posts: AtomicUsize,
}

/// Takes one from a chaos budget; false when it is spent.
fn take(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn ko(op: Operation, code: &str) -> Response {
    Response::ko(op, Fault::new(code, "refused", PADOVA))
}

fn debtor() -> Subject {
    Subject {
        unique_identifier: UniqueIdentifier {
            kind: EntityType::F,
            value: "RSSMRA85T10A562S".into(),
        },
        full_name: "Mario Rossi".into(),
        city: Some("Padova".into()),
        ..Subject::default()
    }
}

impl FakeHub {
    fn new() -> Self {
        Self {
            positions: NOTICES
                .iter()
                .enumerate()
                .map(|(k, n)| (n.to_string(), 1000 + k as i64 * 250))
                .collect(),
            paid: Mutex::default(),
            receipts: Mutex::default(),
            chaos: Chaos::default(),
        }
    }

    /// Who is calling, and whether the notice is payable: the checks of every call.
    fn payable(&self, station: &str, notice: &str) -> Result<i64, &'static str> {
        if station != STATION {
            return Err(fault_codes::STAZIONE_INT_ERRATA);
        }
        let cents = *self
            .positions
            .get(notice)
            .ok_or(fault_codes::PAGAMENTO_SCONOSCIUTO)?;
        if self.paid.lock().unwrap().contains(notice) {
            return Err(fault_codes::PAGAMENTO_DUPLICATO);
        }
        Ok(cents)
    }

    fn receipt(
        &self,
        op: Operation,
        station: &str,
        id: &str,
        notice: &str,
        amount: &str,
    ) -> Response {
        if station != STATION {
            return ko(op, fault_codes::STAZIONE_INT_ERRATA);
        }
        if !self.receipts.lock().unwrap().insert(id.to_string()) {
            return ko(op, fault_codes::RECEIPT_DUPLICATA);
        }
        let Some(&cents) = self.positions.get(notice) else {
            return ko(op, fault_codes::PAGAMENTO_SCONOSCIUTO);
        };
        if soap::to_cents(amount).map(|a| a.cents()) != Ok(cents) {
            return ko(op, fault_codes::SEMANTICA);
        }
        if !self.paid.lock().unwrap().insert(notice.to_string()) {
            return ko(op, fault_codes::PAGAMENTO_DUPLICATO);
        }
        let ok = SendRtResponse::ok();
        match op {
            Operation::SendRt => Response::SendRt(ok),
            _ => Response::SendRtV2(ok),
        }
    }

    fn answer(&self, body: &[u8]) -> String {
        let request = match soap::parse_request(body) {
            Ok(r) => r,
            Err(e) => {
                let op = e.operation().unwrap_or(Operation::VerifyPaymentNotice);
                return soap::render_response(&ko(op, fault_codes::SINTASSI_XSD));
            }
        };
        let op = request.operation();
        let response = match &request {
            Request::Verify(r) => match self.payable(&r.id_station, &r.qr_code.notice_number) {
                Ok(cents) => Response::Verify(VerifyResponse {
                    outcome: Outcome::Ok,
                    fault: None,
                    payment_option: Some(PaymentOption {
                        amount: soap::from_cents(snodo_core::Amount::from_cents(cents)),
                        options: AmountOption::Eq,
                        due_date: Some("2099-12-31".into()),
                        detail_description: Some("TARI 2027".into()),
                        all_ccp: false,
                    }),
                    payment_description: Some("TARI 2027".into()),
                    fiscal_code_pa: Some(PADOVA.into()),
                    company_name: Some("Comune di Padova".into()),
                    office_name: None,
                }),
                Err(code) => ko(op, code),
            },
            Request::GetPayment(r) | Request::GetPaymentV2(r) => {
                let notice = &r.qr_code.notice_number;
                match self.payable(&r.id_station, notice) {
                    Err(code) => ko(op, code),
                    Ok(cents) => {
                        let amount = soap::from_cents(snodo_core::Amount::from_cents(cents));
                        if let Request::GetPayment(_) = request {
                            Response::GetPayment(GetPaymentResponse {
                                outcome: Outcome::Ok,
                                fault: None,
                                data: Some(PaymentData {
                                    creditor_reference_id: notice[1..].to_string(),
                                    payment_amount: amount.clone(),
                                    due_date: "2099-12-31".into(),
                                    retention_date: None,
                                    last_payment: None,
                                    description: "TARI 2027".into(),
                                    company_name: None,
                                    office_name: None,
                                    debtor: debtor(),
                                    transfer_list: vec![Transfer {
                                        id_transfer: 1,
                                        transfer_amount: amount,
                                        fiscal_code_pa: PADOVA.into(),
                                        iban: "IT60X0542811101000000123456".into(),
                                        remittance_information: "/RFB/x/TXT/TARI".into(),
                                        transfer_category: "9/0101100IM/".into(),
                                        metadata: Vec::new(),
                                    }],
                                    metadata: Vec::new(),
                                }),
                            })
                        } else {
                            Response::GetPaymentV2(GetPaymentV2Response {
                                outcome: Outcome::Ok,
                                fault: None,
                                data: Some(PaymentDataV2 {
                                    creditor_reference_id: notice[1..].to_string(),
                                    payment_amount: amount.clone(),
                                    due_date: "2099-12-31".into(),
                                    retention_date: None,
                                    last_payment: None,
                                    description: "TARI 2027".into(),
                                    company_name: "Comune di Padova".into(),
                                    office_name: None,
                                    debtor: debtor(),
                                    transfer_list: vec![TransferV2 {
                                        id_transfer: 1,
                                        transfer_amount: amount,
                                        fiscal_code_pa: PADOVA.into(),
                                        company_name: Some("Comune di Padova".into()),
                                        destination: Destination::Iban(
                                            "IT60X0542811101000000123456".into(),
                                        ),
                                        remittance_information: "/RFB/x/TXT/TARI".into(),
                                        transfer_category: "9/0101100IM/".into(),
                                        metadata: Vec::new(),
                                    }],
                                    metadata: Vec::new(),
                                }),
                            })
                        }
                    }
                }
            }
            Request::SendRt(r) => self.receipt(
                op,
                &r.id_station,
                &r.receipt.receipt_id,
                &r.receipt.notice_number,
                &r.receipt.payment_amount,
            ),
            Request::SendRtV2(r) => self.receipt(
                op,
                &r.id_station,
                &r.receipt.receipt_id,
                &r.receipt.notice_number,
                &r.receipt.payment_amount,
            ),
            Request::Demand(_) => ko(op, fault_codes::SEMANTICA),
        };
        soap::render_response(&response)
    }
}

/// Serves the fake hub on a loopback port; returns its base URL.
pub(crate) async fn start_fake_hub() -> (String, Arc<FakeHub>) {
    start_fake_hub_with(FakeHub::new(), 0).await
}

/// Serves `hub` on a loopback port (0: any free one).
async fn start_fake_hub_with(hub: FakeHub, port: u16) -> (String, Arc<FakeHub>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hub = Arc::new(hub);
    let h = Arc::clone(&hub);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(connection(sock, Arc::clone(&h)));
        }
    });
    (url, hub)
}

async fn connection(mut sock: tokio::net::TcpStream, hub: Arc<FakeHub>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let (status, answer) = if head.starts_with("POST ") {
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("\r\nsoapaction: pa"), "{head}");
            let chaos = &hub.chaos;
            chaos.posts.fetch_add(1, Ordering::SeqCst);
            if take(&chaos.drop_requests) {
                return;
            }
            if take(&chaos.answer_503) {
                ("503 Service Unavailable", "busy".to_string())
            } else {
                let answer = hub.answer(&body);
                if lower.contains("\r\nsoapaction: pasendrt") && take(&chaos.drop_receipt_answers) {
                    return;
                }
                ("200 OK", answer)
            }
        } else {
            ("404 Not Found", String::new())
        };
        let out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if sock.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn targets() -> Vec<NoticeTarget> {
    NOTICES
        .iter()
        .map(|n| NoticeTarget {
            fiscal_code: PADOVA.into(),
            notice_number: n.to_string(),
        })
        .collect()
}

fn options(url: &str) -> SimOptions {
    SimOptions::new(url, BROKER, STATION, targets())
}

#[tokio::test]
async fn pays_every_notice_and_logs_each_receipt() {
    let (url, hub) = start_fake_hub().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r.log");
    let mut opts = options(&url);
    opts.concurrency = 3;
    opts.receipts_log = Some(log.clone());
    let report = run(opts).await.unwrap();
    assert_eq!(report.ok(Operation::VerifyPaymentNotice), 3, "{report}");
    assert_eq!(report.ok(Operation::GetPaymentV2), 3, "{report}");
    assert_eq!(report.ok(Operation::SendRtV2), 3, "{report}");
    assert_eq!(
        (report.total_faults(), report.total_errors()),
        (0, 0),
        "{report}"
    );
    assert_eq!(report.completed(), 3);
    assert_eq!(hub.paid.lock().unwrap().len(), 3);
    let text = report.to_string();
    assert!(
        text.contains("\npaSendRTV2 calls=3 ok=3 ko=0 err=0 p50_ms="),
        "{text}"
    );
    assert!(
        text.contains("\ntotal payments=3 completed=3 faulted=0 errors=0 "),
        "{text}"
    );

    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = lines.lines().collect();
    assert_eq!(lines.len(), 3);
    let mut ids = HashSet::new();
    for l in &lines {
        let f: Vec<_> = l.split(';').collect();
        assert_eq!(f.len(), 3, "{l}");
        assert_eq!(f[0].len(), 32);
        assert!(f[0].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(NOTICES.contains(&f[1]));
        assert_eq!(f[2], "OK");
        ids.insert(f[0].to_string());
    }
    assert_eq!(ids.len(), 3, "receipt ids are unique");
}

#[tokio::test]
async fn v1_cycles_over_paid_notices_and_reports_the_faults() {
    let (url, _hub) = start_fake_hub().await;
    let mut opts = options(&url);
    opts.v1 = true;
    opts.count = 7;
    opts.concurrency = 1;
    let report = run(opts).await.unwrap();
    assert_eq!(report.ok(Operation::SendRt), 3, "{report}");
    assert_eq!(report.ok(Operation::GetPayment), 3, "{report}");
    assert_eq!(
        report.faults(Operation::VerifyPaymentNotice, "PAA_PAGAMENTO_DUPLICATO"),
        4,
        "{report}"
    );
    assert_eq!(
        (report.payments(), report.completed(), report.faulted()),
        (7, 3, 4)
    );
    assert!(report.op(Operation::GetPaymentV2).is_none());
    assert!(report.to_string().contains("flow=v1"));
}

#[tokio::test]
async fn injected_faults_come_back_with_their_codes() {
    for fault in FaultKind::ALL {
        let (url, _hub) = start_fake_hub().await;
        let mut opts = options(&url);
        opts.fault = Some(fault);
        let report = run(opts).await.unwrap();
        let at = fault.injected_at(false);
        if fault == FaultKind::DuplicateReceipt {
            assert_eq!(report.ok(Operation::SendRtV2), 3, "{report}");
            assert_eq!(report.op(at).unwrap().calls, 6, "{report}");
        }
        assert_eq!(
            report.faults(at, fault.expected_fault()),
            3,
            "{fault}: {report}"
        );
        assert_eq!(report.injection(), Some((fault, 3, 3)), "{report}");
        assert_eq!(report.total_errors(), 0, "{report}");
        assert!(
            report.to_string().contains(&format!(
                "injection fault={fault} expected={} at={} injected=3 seen=3",
                fault.expected_fault(),
                at.soap_action()
            )),
            "{report}"
        );
    }
}

#[tokio::test]
async fn verify_only_touches_nothing() {
    let (url, hub) = start_fake_hub().await;
    let mut opts = options(&url);
    opts.verify_only = true;
    opts.count = 50;
    opts.concurrency = 4;
    let report = run(opts).await.unwrap();
    assert_eq!(report.ok(Operation::VerifyPaymentNotice), 50, "{report}");
    assert_eq!(report.operations().len(), 1);
    assert_eq!(report.completed(), 50);
    assert!(hub.paid.lock().unwrap().is_empty());
}

#[tokio::test]
async fn receipts_only_reports_the_receipts_of_activated_payments() {
    let (url, hub) = start_fake_hub().await;
    let mut opts = options(&url);
    opts.receipts_only = true;
    opts.count = NOTICES.len();
    opts.concurrency = 2;
    let report = run(opts).await.unwrap();
    assert_eq!(
        report
            .operations()
            .iter()
            .map(|o| o.operation)
            .collect::<Vec<_>>(),
        [Operation::SendRtV2],
        "only the receipts are reported: {report}"
    );
    assert_eq!(
        report.ok(Operation::SendRtV2),
        NOTICES.len() as u64,
        "{report}"
    );
    assert_eq!(report.completed(), NOTICES.len() as u64);
    assert_eq!(
        hub.paid.lock().unwrap().len(),
        NOTICES.len(),
        "every notice paid"
    );
    assert!(
        report.to_string().contains("flow=v2-receipts-only"),
        "{report}"
    );
}

#[tokio::test]
async fn nothing_listening_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = run(options(&format!("http://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(matches!(err, SimError::Unreachable { .. }), "{err}");
}

#[test]
fn notices_files_are_checked_line_by_line() {
    let ok = parse_notices(
        "# header\n00644060287;300715700000000032\n\n 00644060287 ; 322201151398574181 \n",
    )
    .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1].notice_number, "322201151398574181");
    let err = parse_notices("00644060287;300715700000000032\n00644060287;300715700000000033\n")
        .unwrap_err();
    assert!(matches!(err, SimError::Notices { line: 2, .. }), "{err}");
    assert!(matches!(
        parse_notices("00644060287 300715700000000032"),
        Err(SimError::Notices { line: 1, .. })
    ));
}

#[test]
fn unknown_notices_are_well_formed_and_distinct() {
    let a = receipt::unknown_notice("301000000000012373", 0);
    let b = receipt::unknown_notice("301000000000012373", 1);
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert_eq!(n.len(), 18);
        assert!(n.starts_with("30199"));
        snodo_core::NoticeNumber::parse(n).unwrap();
    }
    assert!(receipt::unknown_notice("012345", 7).starts_with("30199"));
    assert!(receipt::unknown_notice("347164993070184562", 7).starts_with("34799"));
}

#[test]
fn receipt_ids_are_32_hex_and_distinct() {
    let ids = ReceiptIds::with_seed(42);
    let all: HashSet<_> = (0..1000).map(|i| ids.id(i)).collect();
    assert_eq!(all.len(), 1000);
    assert!(all.iter().all(|s| s.len() == 32));
}

#[test]
fn endpoints() {
    assert_eq!(
        endpoint_url("http://127.0.0.1:8080").unwrap().as_str(),
        "http://127.0.0.1:8080/pagopa/paForNode"
    );
    assert_eq!(
        endpoint_url("http://h:1/x/pagopa/paForNode/")
            .unwrap()
            .as_str(),
        "http://h:1/x/pagopa/paForNode"
    );
    // https is supported since the node's mutual TLS (--client-cert); other schemes are not.
    assert_eq!(
        endpoint_url("https://h:8443").unwrap().as_str(),
        "https://h:8443/pagopa/paForNode"
    );
    assert!(endpoint_url("ftp://h").is_err());
    assert!(endpoint_url("not a url").is_err());
}

#[test]
fn fault_names_round_trip() {
    for k in FaultKind::ALL {
        assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
    }
    assert!("bogus".parse::<FaultKind>().is_err());
}

fn receipt_log(path: &std::path::Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<_> = l.split(';').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[tokio::test]
async fn resends_the_same_request_until_the_hub_answers() {
    let hub = FakeHub::new();
    hub.chaos.drop_requests.store(4, Ordering::SeqCst);
    hub.chaos.answer_503.store(3, Ordering::SeqCst);
    hub.chaos.drop_receipt_answers.store(2, Ordering::SeqCst);
    let (url, hub) = start_fake_hub_with(hub, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r.log");
    let mut opts = options(&url);
    opts.concurrency = 3;
    opts.receipts_log = Some(log.clone());
    opts.retry_for = Some(Duration::from_secs(20));
    let report = run(opts).await.unwrap();

    // Every payment went through; 9 calls had no answer and were each resent once.
    assert_eq!(
        (report.completed(), report.faulted(), report.errored()),
        (3, 0, 0),
        "{report}"
    );
    assert_eq!(report.resent(), 9, "{report}");
    assert_eq!(report.total_errors(), 9, "{report}");
    assert_eq!(report.gave_up(), 0, "{report}");
    let calls: u64 = report.operations().iter().map(|o| o.calls).sum();
    assert_eq!(calls, 9 + 9, "{report}");
    assert_eq!(hub.chaos.posts.load(Ordering::SeqCst), 18, "{report}");
    assert_eq!(hub.paid.lock().unwrap().len(), 3);
    assert_eq!(
        hub.receipts.lock().unwrap().len(),
        3,
        "the same receipt ids resent"
    );

    // Two receipts were stored but their answers lost: the resends meet them as duplicates,
    // which completes the payment. One line per receipt, with its final answer.
    assert_eq!(report.stored_before_resend(), 2, "{report}");
    assert_eq!(
        report.faults(Operation::SendRtV2, "PAA_RECEIPT_DUPLICATA"),
        2,
        "{report}"
    );
    let lines = receipt_log(&log);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ids: HashSet<_> = lines.iter().map(|l| l.0.clone()).collect();
    assert_eq!(&ids, &*hub.receipts.lock().unwrap());
    let mut outcomes: Vec<_> = lines.iter().map(|l| l.2.as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        ["OK", "PAA_RECEIPT_DUPLICATA", "PAA_RECEIPT_DUPLICATA"]
    );

    let text = report.to_string();
    assert!(
        text.contains("\nretry for_s=20 resent=9 gave_up=0 stored_before_resend=2\n"),
        "{text}"
    );
    assert!(
        text.contains("\ntotal payments=3 completed=3 faulted=0 errors=0 "),
        "{text}"
    );
    let resent_on_lines: u64 = text
        .lines()
        .filter_map(|l| {
            l.rsplit_once(" retries=")
                .map(|(_, n)| n.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(resent_on_lines, 9, "{text}");
}

#[tokio::test]
async fn without_a_retry_window_a_lost_answer_is_an_error() {
    let hub = FakeHub::new();
    hub.chaos.drop_receipt_answers.store(1, Ordering::SeqCst);
    let (url, hub) = start_fake_hub_with(hub, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r.log");
    let mut opts = options(&url);
    opts.count = 1;
    opts.receipts_log = Some(log.clone());
    let report = run(opts).await.unwrap();
    assert_eq!((report.completed(), report.errored()), (0, 1), "{report}");
    assert_eq!(report.resent(), 0);
    assert_eq!(hub.receipts.lock().unwrap().len(), 1, "stored, answer lost");
    assert!(receipt_log(&log).is_empty(), "no answer, no line");
    assert!(!report.to_string().contains("\nretry "), "{report}");
}

#[tokio::test]
async fn gives_up_when_the_retry_window_closes() {
    let hub = FakeHub::new();
    hub.chaos.answer_503.store(usize::MAX, Ordering::SeqCst);
    let (url, _hub) = start_fake_hub_with(hub, 0).await;
    let mut opts = options(&url);
    opts.count = 1;
    opts.retry_for = Some(Duration::from_millis(400));
    let started = Instant::now();
    let report = run(opts).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!((report.errored(), report.gave_up()), (1, 1), "{report}");
    // 50 + 100 + 200 ms of backoff, then the rest of the window.
    let verify = report.op(Operation::VerifyPaymentNotice).unwrap();
    assert!(verify.resent >= 3, "{report}");
    assert_eq!(verify.calls, verify.resent + 1, "{report}");
    assert_eq!(
        verify.errors.get("http_status").copied(),
        Some(verify.calls),
        "{report}"
    );
    assert_eq!(report.op(Operation::GetPaymentV2).unwrap().calls, 0);
}

#[tokio::test]
async fn waits_for_a_hub_that_is_not_up_yet() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        start_fake_hub_with(FakeHub::new(), port).await
    });
    let mut opts = options(&url);
    opts.retry_for = Some(Duration::from_secs(20));
    let report = run(opts).await.unwrap();
    assert_eq!(report.completed(), 3, "{report}");
}

#[tokio::test]
async fn duration_stops_starting_payments() {
    let (url, _hub) = start_fake_hub().await;
    let mut opts = options(&url);
    opts.verify_only = true;
    opts.count = 1000;
    opts.concurrency = 2;
    opts.rate = Some(10.0);
    opts.duration = Some(Duration::from_millis(350));
    let report = run(opts).await.unwrap();
    // Payments are due at 0, 100, 200 and 300 ms; the one due at 400 ms is past the end.
    assert_eq!(report.payments(), 4, "{report}");
    assert!(report.wall() < Duration::from_secs(2), "{report}");
}
