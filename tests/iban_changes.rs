//! An account announced ahead of time: the node gets the old IBAN until the change's day, the
//! new one from that day on (moving the change to today stands for moving the clock).

mod common;
use common::*;
use snodo_adapters::pagopa::{self as soap, Request};

const OLD: &str = "IT60X0542811101000000123456";
const NEW: &str = "IT90J0200812100000041234567";

fn with_change(home: &Home, from: chrono::NaiveDate) {
    let cfg = std::fs::read_to_string(home.config()).expect("config");
    let cfg = cfg.replacen(
        &format!("  iban = \"{OLD}\"\n"),
        &format!(
            "  iban = \"{OLD}\"\n  iban_changes = [{{ from = \"{from}\", iban = \"{NEW}\" }}]\n"
        ),
        1,
    );
    std::fs::write(home.config(), cfg).expect("write config");
}

fn activate(home: &Home, notice: &str) -> String {
    let body = soap::render_request(&Request::GetPaymentV2(soap::GetPaymentRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: PADOVA.into(),
            notice_number: notice.into(),
        },
        ..Default::default()
    }));
    let answer = post_soap(home.port, "paGetPaymentV2", &body);
    assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
    answer
}

#[test]
fn the_node_gets_the_account_valid_on_the_day_of_the_call() {
    let home = Home::new();
    let today = snodo_core::time::today_rome();
    with_change(&home, today + chrono::Days::new(1));
    home.import_rows("IBAN1", &[Row::tari("IB1", 1, 5000)]);
    let notice = home.positions(&["--iud", "IB1"])[0]["notice_number"]
        .as_str()
        .expect("notice")
        .to_string();

    let hub = Hub::start_serving(&home);
    let answer = activate(&home, &notice);
    assert!(answer.contains(&format!("<IBAN>{OLD}</IBAN>")), "{answer}");
    assert!(!answer.contains(NEW), "{answer}");
    assert!(hub.terminate().success());

    // The day comes: the same notice is now paid to the new account.
    let cfg = std::fs::read_to_string(home.config()).expect("config");
    let tomorrow = (today + chrono::Days::new(1)).to_string();
    std::fs::write(home.config(), cfg.replace(&tomorrow, &today.to_string())).expect("write");
    let hub = Hub::start_serving(&home);
    let answer = activate(&home, &notice);
    assert!(answer.contains(&format!("<IBAN>{NEW}</IBAN>")), "{answer}");
    assert!(hub.terminate().success());
}
