//! A position's life around its payment, against a running hub: expiry after the debt type's
//! grace days (the node's `PAA_PAGAMENTO_SCADUTO`, the `expired` status and its event, MyPay's
//! export of expired positions), the payment in progress that holds back changes from every
//! intake, and the due date `paGetPayment` answers. Every node answer is checked against the XSD.

mod common;
use common::*;
use snodo_adapters::pagopa::{self as soap, Request};

fn verify(home: &Home, notice: &str) -> String {
    node_call(
        home,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, STATION, notice),
    )
}

fn activate(home: &Home, notice: &str, due_date: Option<&str>) -> String {
    let body = soap::render_request(&Request::GetPaymentV2(soap::GetPaymentRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: PADOVA.into(),
            notice_number: notice.into(),
        },
        amount: Some("9.00".into()),
        due_date: due_date.map(str::to_string),
        ..Default::default()
    }));
    node_call(home, "paGetPaymentV2", &body)
}

fn notice(home: &Home, iud: &str) -> String {
    home.positions(&["--iud", iud])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string()
}

fn status(home: &Home, iud: &str) -> String {
    home.positions(&["--iud", iud])[0]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn days_ago(n: u64) -> String {
    (snodo_core::time::today_rome() - chrono::Days::new(n)).to_string()
}

/// A MENSA row (no due date required, so a past one is taken) due on `due`.
fn mensa(iud: &str, n: u32, due: &str) -> Row {
    Row::tari(iud, n, 900)
        .set(15, "MENSA")
        .set(18, "9/0107101TS/")
        .set(12, due)
}

#[test]
fn positions_expire_after_the_grace_days_and_are_exported() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "taxonomy = \"9/0107101TS/\"\n  generate_iuv = true",
        "taxonomy = \"9/0107101TS/\"\n  generate_iuv = true\n  expire_after_days = 5",
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    let export = home.path().join("scaduti");
    home.append_config(&format!(
        r#"
[[pipelines]]
name = "padova-scaduti"
entity = "c_g224"
from = "expired"
encode = "mypay-expired"
debt_types = ["MENSA"]
batch = {{ schedule = "* * * * * *", skip_empty = true }}
to = {{ connector = "dir", path = "{}" }}
"#,
        export.display()
    ));
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home.import_rows(
        "EXP1",
        &[
            // Due six days ago, five days of grace: expired since yesterday.
            mensa("OLD", 1, &days_ago(6)),
            // Due five days ago: today is its last day of grace.
            mensa("GRACE", 2, &days_ago(5)),
            mensa("UNDATED", 3, ""),
            mensa("REOPEN", 4, &days_ago(30)),
        ],
    );
    let hub = Hub::start_serving(&home);

    // The node refuses what is past its grace, whether or not the sweep has run.
    let old = notice(&home, "OLD");
    let ko = verify(&home, &old);
    assert_eq!(
        fault_of(&ko).as_deref(),
        Some("PAA_PAGAMENTO_SCADUTO"),
        "{ko}"
    );
    let ok = verify(&home, &notice(&home, "GRACE"));
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
    let ok = verify(&home, &notice(&home, "UNDATED"));
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");

    // The sweep marks them, once, with an event each.
    assert!(wait_for(20, || status(&home, "OLD") == "expired"));
    assert_eq!(status(&home, "REOPEN"), "expired");
    assert_eq!(status(&home, "GRACE"), "active");
    assert_eq!(status(&home, "UNDATED"), "active");
    let events = store_events(&home, "position.expired");
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(events.len(), 2, "{subjects:?}");
    assert!(subjects.contains(&old.as_str()), "{subjects:?}");

    // A modify with a new due date opens it again; the node takes it.
    let reopened = mensa("REOPEN", 4, "2099-01-31").set(20, "").set(34, "M");
    let flow = write_zip(
        home.path(),
        "c_g224-EXP2-1_4",
        csv_text(&[reopened]).as_bytes(),
    );
    let o = home.import(&flow, &home.path().join("out"));
    assert!(
        stdout(&o).contains("accepted=1 rejected=0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(status(&home, "REOPEN"), "active");
    let ok = verify(&home, &notice(&home, "REOPEN"));
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");

    // MyPay's export of expired positions: OLD (REOPEN too if a tick came before it opened
    // again), never what is still in its grace or has no due date.
    let exported = || -> Vec<String> {
        let mut lines = Vec::new();
        for f in std::fs::read_dir(&export).into_iter().flatten().flatten() {
            let path = f.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                name.starts_with("EXP_SCADUTI_c_g224_") && name.ends_with(".zip"),
                "{name}"
            );
            let text = unzip_text(&path);
            let mut l = text.split('\n');
            assert_eq!(
                l.next(),
                Some(snodo_adapters::mypay_expired::HEADER),
                "MyPay's header"
            );
            lines.extend(l.map(str::to_string));
        }
        lines
    };
    assert!(
        wait_for(20, || exported().iter().any(|l| l.starts_with("OLD;"))),
        "no expired export of OLD in {}",
        export.display()
    );
    let lines = exported();
    let line = lines.iter().find(|l| l.starts_with("OLD;")).unwrap();
    let cols: Vec<&str> = line.split(';').collect();
    assert_eq!(cols[1], &old[1..], "codIuv");
    assert_eq!(cols[13], days_ago(6), "dataEsecuzionePagamento");
    assert_eq!(cols[14], "9.00");
    assert_eq!(cols[16], "MENSA");
    assert_eq!(cols[21], "true", "flgGeneraIuv");
    assert_eq!(cols.len(), 23, "22 values, each followed by ';'");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("GRACE;") || l.starts_with("UNDATED;")),
        "{lines:?}"
    );
    // Nothing is exported twice: later ticks find nothing new.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let lines = exported();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("OLD;")).count(),
        1,
        "{lines:?}"
    );
    assert!(
        lines.iter().filter(|l| l.starts_with("REOPEN;")).count() <= 1,
        "{lines:?}"
    );
    drop(hub);
}

#[test]
fn a_payment_in_progress_holds_back_changes_from_every_intake() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "[pagopa]\n",
        "[pagopa]\npayment_in_progress = \"4s\"\n",
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    home.import_rows(
        "HOLD1",
        &[Row::tari("HELD", 1, 900), mensa("UNDATED", 2, "")],
    );
    let hub = Hub::start_serving(&home);
    let held = notice(&home, "HELD");

    // The node activates it; the request's own amount does not change the position's.
    let a = activate(&home, &held, None);
    assert!(a.contains("<outcome>OK</outcome>"), "{a}");
    assert!(a.contains("<paymentAmount>9.00</paymentAmount>"), "{a}");

    // A flow annulling it meanwhile: refused with MyPay's code for a dovuto being paid.
    let out = home.path().join("out");
    let annul = || {
        let rows = [Row::tari("HELD", 1, 900).set(20, "").set(34, "A")];
        let name = format!("c_g224-{}-1_4", unique("ANN"));
        let flow = write_zip(home.path(), &name, csv_text(&rows).as_bytes());
        (home.import(&flow, &out), name)
    };
    let (o, name) = annul();
    assert!(
        stdout(&o).contains("accepted=0 rejected=1"),
        "{}",
        stdout(&o)
    );
    let refused = unzip_text(&out.join(format!("{name}_SCARTI.zip")));
    assert!(
        refused.contains("PAA_IMPORT_DOVUTO_NON_PRESENTE") && refused.contains("being paid"),
        "{refused}"
    );
    // The API's modify: 409, saying why.
    let mut body = api_position("HELD", 1200);
    body["codIuv"] = serde_json::Value::String(held[1..].to_string());
    let r = http(
        home.port,
        "PUT",
        "/api/v1/entities/c_g224/positions/HELD",
        Some(KEY_PADOVA),
        &[],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let problem = r.json();
    assert_eq!(
        problem["type"],
        "https://snodo.eu/problems/payment-in-progress"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("being paid"),
        "{problem}"
    );
    assert_eq!(status(&home, "HELD"), "active");

    // Once the activation has lapsed, the same annulment goes through.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (o, _) = annul();
    assert!(
        stdout(&o).contains("accepted=1 rejected=0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(status(&home, "HELD"), "annulled");

    // paGetPayment's due date: a position without one answers the request's.
    let undated = notice(&home, "UNDATED");
    let a = activate(&home, &undated, Some("2027-03-31"));
    assert!(a.contains("<dueDate>2027-03-31</dueDate>"), "{a}");
    let a = activate(&home, &undated, None);
    assert!(a.contains("<dueDate>2099-12-31</dueDate>"), "{a}");
    drop(hub);
}
