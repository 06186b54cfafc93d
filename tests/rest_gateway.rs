//! Gateway mode end to end: a cart opened through the API at the sim's Checkout stand-in, paid
//! there (verify, activation and receipt against the hub), its receipts pulled back; and
//! real-time verification at an entity system that answers, late, 404, 410 and 500.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const POSITIONS: &str = "/api/v1/entities/c_g224/positions";

#[test]
fn a_cart_is_opened_paid_at_checkout_and_its_receipts_pulled() {
    let sim_port = free_port();
    let home = home_with_stand_ins(sim_port);
    let external = home.path().join("external.json");
    std::fs::write(&external, "{}").unwrap();
    let sim = StandIns::start(&home, sim_port, Some(&external));
    let _hub = Hub::start_serving(&home);
    let p = home.port;

    let mut notices = Vec::new();
    for (iud, cents) in [("CART-1", 1500), ("CART-2", 2750)] {
        let r = http(
            p,
            "POST",
            POSITIONS,
            Some(KEY_PADOVA),
            &[],
            Some(&api_position(iud, cents).to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        notices.push(r.json()["noticeNumber"].as_str().unwrap().to_string());
    }
    let cart = json!({
        "noticeNumbers": notices,
        "returnUrls": {
            "returnOkUrl": "http://portal.example/ok",
            "returnCancelUrl": "http://portal.example/cancel",
            "returnErrorUrl": "http://portal.example/error"
        },
        "emailNotice": "mario.rossi@example.it"
    })
    .to_string();
    let carts = "/api/v1/entities/c_g224/carts";
    let opened = http(
        p,
        "POST",
        carts,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "cart-1")],
        Some(&cart),
    );
    assert_eq!(opened.status, 201, "{}", opened.body);
    let v = opened.json();
    let redirect = v["redirectUrl"].as_str().unwrap().to_string();
    let prefix = format!("http://127.0.0.1:{}/checkout/carts/", sim.port);
    assert!(redirect.starts_with(&prefix), "{redirect}");
    assert_eq!(v["state"], "open");
    assert_eq!(v["notices"][1]["amountCents"], 2750);
    let id = v["id"].as_str().unwrap().to_string();
    // A retry is the same cart, not a second one at Checkout.
    let again = http(
        p,
        "POST",
        carts,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "cart-1")],
        Some(&cart),
    );
    assert_eq!(again.json()["redirectUrl"], v["redirectUrl"]);

    // The citizen pays on the Checkout page.
    let page_path = &redirect[format!("http://127.0.0.1:{}", sim.port).len()..];
    let paid = http(
        sim.port,
        "POST",
        &format!("{page_path}/pay"),
        None,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(""),
    );
    assert_eq!(paid.status, 303, "{}", paid.body);
    assert_eq!(paid.header("location"), Some("http://portal.example/ok"));

    let state = get(p, &format!("{carts}/{id}"), KEY_PADOVA).json();
    assert_eq!(state["state"], "paid", "{state}");
    assert!(state["notices"][0]["receiptId"].is_string(), "{state}");

    // Receipts pulled in store order, then nothing new with the same cursor.
    let page = get(p, "/api/v1/entities/c_g224/receipts", KEY_PADOVA).json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    let pulled: Vec<String> = items.iter().map(|r| r.to_string()).collect();
    for n in &notices {
        assert!(
            pulled.iter().any(|r| r.contains(n.as_str())),
            "receipt of {n} missing: {page}"
        );
    }
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    let next = get(
        p,
        &format!("/api/v1/entities/c_g224/receipts?since={cursor}"),
        KEY_PADOVA,
    )
    .json();
    assert_eq!(next["items"].as_array().unwrap().len(), 0);
    assert_eq!(next["nextCursor"], cursor.as_str());
    // Feltre sees none of them.
    let feltre = get(p, "/api/v1/entities/c_d530/receipts", KEY_FELTRE).json();
    assert_eq!(feltre["items"].as_array().unwrap().len(), 0);

    // Notices that cannot go in a cart: paid, unknown, too many.
    let paid_again = cart.replace("cart-1", "x");
    let r = http(p, "POST", carts, Some(KEY_PADOVA), &[], Some(&paid_again));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["field"], "noticeNumbers[0]");
    let six = json!({"noticeNumbers": vec![notices[0].clone(); 6], "returnUrls": {"returnOkUrl": "http://a/", "returnCancelUrl": "http://a/", "returnErrorUrl": "http://a/"}});
    assert_eq!(
        http(
            p,
            "POST",
            carts,
            Some(KEY_PADOVA),
            &[],
            Some(&six.to_string())
        )
        .json()["field"],
        "noticeNumbers"
    );

    // Checkout down: a clear 502, nothing kept.
    let fresh = http(
        p,
        "POST",
        POSITIONS,
        Some(KEY_PADOVA),
        &[],
        Some(&api_position("CART-3", 900).to_string()),
    )
    .json();
    drop(sim);
    let lonely = json!({"noticeNumbers": [fresh["noticeNumber"]], "returnUrls": {"returnOkUrl": "http://a/", "returnCancelUrl": "http://a/", "returnErrorUrl": "http://a/"}, "idCart": "down-1"});
    let r = http(
        p,
        "POST",
        carts,
        Some(KEY_PADOVA),
        &[],
        Some(&lonely.to_string()),
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(get(p, &format!("{carts}/down-1"), KEY_PADOVA).status, 404);
}

const VENETO: &str = "80007580279";

fn verify(port: u16, notice: &str) -> (String, Duration) {
    let body = format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"><soapenv:Body><paf:paVerifyPaymentNoticeReq><idPA>{VENETO}</idPA><idBrokerPA>{BROKER}</idBrokerPA><idStation>{STATION}</idStation><qrCode><fiscalCode>{VENETO}</fiscalCode><noticeNumber>{notice}</noticeNumber></qrCode></paf:paVerifyPaymentNoticeReq></soapenv:Body></soapenv:Envelope>"#
    );
    let started = Instant::now();
    let answer = post_soap(port, "paVerifyPaymentNotice", &body);
    (answer, started.elapsed())
}

fn fault(answer: &str) -> Option<String> {
    let start = answer.find("<faultCode>")? + "<faultCode>".len();
    let end = answer[start..].find("</faultCode>")? + start;
    Some(answer[start..end].to_string())
}

/// Region notice numbers (segregation code 03), distinct per `n`.
fn veneto_notice(n: u64) -> String {
    let seg = snodo_core::SegregationCode::parse("03").unwrap();
    snodo_core::Iuv::generate(seg, 900_000 + n)
        .unwrap()
        .notice_number()
        .unwrap()
        .as_str()
        .to_string()
}

#[test]
fn the_entity_system_is_asked_in_real_time() {
    let sim_port = free_port();
    let home = home_with_stand_ins(sim_port);
    let [ok, unknown, annulled, failing, late, changing, broken, junk] =
        [1, 2, 3, 4, 5, 6, 7, 8].map(veneto_notice);
    let position = |cents: u64| {
        json!({"amountCents": cents, "dueDate": "2099-12-31", "causale": "Permesso ZTL 2027",
               "payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"}})
    };
    let mut answers = serde_json::Map::new();
    answers.insert(ok.clone(), position(2500));
    answers.insert(annulled.clone(), json!({"status": 410}));
    answers.insert(failing.clone(), json!({"status": 500}));
    let mut slow = position(100);
    slow["delayMs"] = json!(6000);
    answers.insert(late.clone(), slow);
    answers.insert(changing.clone(), position(1000));
    // Data an import would refuse (a fiscal code with a wrong check character), and not a position.
    let mut bad_payer = position(900);
    bad_payer["payer"]["id"] = json!("RSSMRA85T10A562X");
    answers.insert(broken.clone(), bad_payer);
    answers.insert(junk.clone(), json!({"amountCents": "many"}));
    let file = home.path().join("external.json");
    std::fs::write(&file, Value::Object(answers.clone()).to_string()).unwrap();
    let _sim = StandIns::start(&home, sim_port, Some(&file));
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    // What `snodo positions` prints for a Region notice (nothing: not stored).
    let lookup = |notice: &str| {
        home.snodo(&[
            "positions",
            "-c",
            "config.toml",
            "--entity",
            "r_veneto",
            "--notice",
            notice,
        ])
    };

    let (answer, _) = verify(p, &ok);
    assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
    assert!(answer.contains("<amount>25.00</amount>"), "{answer}");
    assert_eq!(
        fault(&verify(p, &unknown).0).as_deref(),
        Some("PAA_PAGAMENTO_SCONOSCIUTO")
    );
    assert_eq!(
        fault(&verify(p, &annulled).0).as_deref(),
        Some("PAA_PAGAMENTO_ANNULLATO")
    );
    assert_eq!(
        fault(&verify(p, &failing).0).as_deref(),
        Some("PAA_SYSTEM_ERROR")
    );
    let (answer, took) = verify(p, &late);
    assert_eq!(fault(&answer).as_deref(), Some("PAA_SYSTEM_ERROR"));
    assert!(
        took < Duration::from_millis(3500),
        "a late entity system held the node for {took:?}"
    );
    for bad in [&broken, &junk] {
        let (answer, _) = verify(p, bad);
        assert_eq!(
            fault(&answer).as_deref(),
            Some("PAA_SYSTEM_ERROR"),
            "{answer}"
        );
        let stored = lookup(bad);
        assert_eq!(
            stdout(&stored).trim(),
            "",
            "nothing stored from a bad answer"
        );
    }
    let (answer, _) = verify(p, &broken);
    assert!(
        answer.contains("PAA_IMPORT_COD_FISC"),
        "the node's operators are told why: {answer}"
    );
    let metrics = http(p, "GET", "/metrics", None, &[], None).body;
    for line in [
        "snodo_external_verifications_total{entity=\"r_veneto\",outcome=\"failed\"} 5",
        "snodo_external_verifications_total{entity=\"r_veneto\",outcome=\"unknown\"} 1",
        "snodo_external_verifications_total{entity=\"r_veneto\",outcome=\"annulled\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in {metrics}"
        );
    }

    // The position is stored, and follows the entity's system when it changes.
    let stored = lookup(&ok);
    let v: Value =
        serde_json::from_str(stdout(&stored).lines().next().expect("stored position")).unwrap();
    assert_eq!(v["amount_cents"], 2500);
    assert_eq!(v["dovuto"]["debt_type"], "ZTL");
    assert!(verify(p, &changing).0.contains("<amount>10.00</amount>"));
    answers.insert(changing.clone(), position(1200));
    std::fs::write(&file, Value::Object(answers.clone()).to_string()).unwrap();
    assert!(verify(p, &changing).0.contains("<amount>12.00</amount>"));

    // Paid through the sim (verify, activation, receipt): the receipt finds the position.
    std::fs::write(home.path().join("notices.txt"), format!("{VENETO};{ok}\n")).unwrap();
    let paid = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--notices", "notices.txt"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .unwrap();
    assert!(paid.status.success(), "{}{}", stdout(&paid), stderr(&paid));
    let stored = lookup(&ok);
    let v: Value = serde_json::from_str(stdout(&stored).lines().next().unwrap()).unwrap();
    assert_eq!(v["status"], "paid", "{v}");
    // Once paid, the entity system is not asked again: the node hears it is paid.
    answers.remove(&ok);
    std::fs::write(&file, Value::Object(answers).to_string()).unwrap();
    assert_eq!(
        fault(&verify(p, &ok).0).as_deref(),
        Some("PAA_PAGAMENTO_DUPLICATO")
    );
}
