//! paDemandPaymentNotice against a running hub: the car tax asked with the service data of
//! `TassaAutomobilistica_1_1_0.xsd`, a notice issued and then verified, activated and paid like
//! any other; bad service data refused with the right code; every answer valid against the XSD.

mod common;
use common::*;
use snodo_adapters::car_tax::{CarTax, VehicleType};
use snodo_adapters::pagopa::{self as soap, Request, Response};
use std::process::Command;

/// The Region of Veneto: the car tax is regional.
const VENETO: &str = "80007580279";

/// The car tax on r_veneto, priced by a table (cars and motorcycles only), and the same
/// service of another provider priced by the Region's own system at `erp`.
fn car_tax_config(erp: &str) -> String {
    format!(
        r#"
  [[entities.debt_types]]
  code = "BOLLO_AUTO"
  description = "Tassa automobilistica"
  iban = "IT23Z0622512100100000300299"
  taxonomy = "9/0301105TS/"
  anonymous_payer_allowed = true
  demand = {{ service = "00001", schema = "TassaAutomobilistica_1_1_0", causale = "Tassa automobilistica {{plate}} ({{vehicle_type}})", amount_cents_by_vehicle_type = {{ car = 21345, motorcycle = 3000 }}, due_in_days = 30 }}

  [[entities.debt_types]]
  code = "BOLLO_ERP"
  description = "Tassa automobilistica (archivio regionale)"
  iban = "IT23Z0622512100100000300299"
  taxonomy = "9/0301105TS/"
  demand = {{ service = "00001", provider = "00099", schema = "TassaAutomobilistica_1_1_0", url = "{erp}", timeout = "2s" }}
"#
    )
}

/// A home whose r_veneto offers the car tax (inserted after its last debt type).
fn home_with_car_tax(erp: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let anchor = "timeout = \"2s\" }\n";
    assert!(cfg.contains(anchor), "the demo's ZTL debt type moved");
    let cfg = cfg.replacen(anchor, &format!("{anchor}{}", car_tax_config(erp)), 1);
    std::fs::write(home.config(), cfg).unwrap();
    home
}

/// POSTs a SOAP body; returns the answer after checking it against the XSD.
fn call(home: &Home, action: &str, body: &str) -> String {
    let text = post_soap(home.port, action, body);
    assert_valid(home, &text);
    text
}

/// Validates a whole SOAP envelope with the official schemas (xmllint, from ops/setup.sh).
fn assert_valid(home: &Home, envelope: &str) {
    let file = home.path().join("answer.xml");
    std::fs::write(&file, envelope).unwrap();
    let schema = repo().join("tests/data/soap-paForNode.xsd");
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint not found: run ops/setup.sh");
    assert!(
        out.status.success(),
        "answer not valid against paForNode.xsd:\n{}\n{envelope}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn demand_body(id_pa: &str, provider: &str, data: &str) -> String {
    soap::render_request(&Request::Demand(soap::DemandRequest {
        id_pa: id_pa.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        id_servizio: "00001".into(),
        id_soggetto_servizio: provider.into(),
        dati_specifici_servizio: data.into(),
    }))
}

/// Asks the car tax; returns the parsed answer and its text.
fn demand(home: &Home, provider: &str, data: &str) -> (soap::DemandResponse, String) {
    let text = call(
        home,
        "paDemandPaymentNotice",
        &demand_body(VENETO, provider, data),
    );
    match soap::parse_response(text.as_bytes()) {
        Ok(Response::Demand(r)) => (r, text),
        other => panic!("not a paDemandPaymentNoticeResponse: {other:?}\n{text}"),
    }
}

fn get_payment_v2(notice: &str) -> String {
    soap::render_request(&Request::GetPaymentV2(soap::GetPaymentRequest {
        id_pa: VENETO.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: VENETO.into(),
            notice_number: notice.into(),
        },
        ..Default::default()
    }))
}

/// paSendRTV2 for a Veneto notice.
fn send_rt(notice: &str, receipt_id: &str, amount: &str) -> String {
    let Ok(Request::SendRtV2(mut req)) =
        soap::parse_request(send_rt_v2(notice, receipt_id, amount).as_bytes())
    else {
        panic!("send_rt_v2 is a paSendRTV2")
    };
    req.id_pa = VENETO.into();
    req.receipt.fiscal_code = VENETO.into();
    req.receipt.company_name = "Regione del Veneto".into();
    req.receipt.description = "Tassa automobilistica".into();
    let t = &mut req.receipt.transfer_list[0];
    t.fiscal_code_pa = VENETO.into();
    t.destination = soap::ReceiptDestination::Iban("IT23Z0622512100100000300299".into());
    t.transfer_category = "9/0301105TS/".into();
    soap::render_request(&Request::SendRtV2(req))
}

/// r_veneto's positions as JSON values.
fn veneto_positions(home: &Home) -> Vec<serde_json::Value> {
    let out = home.snodo(&["positions", "-c", "config.toml", "--entity", "r_veneto"]);
    assert!(out.status.success(), "positions failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The position of a notice and its status.
fn position_of(home: &Home, notice: &str) -> serde_json::Value {
    let all = veneto_positions(home);
    let mut mine: Vec<_> = all
        .into_iter()
        .filter(|p| p["notice_number"] == notice)
        .collect();
    assert_eq!(mine.len(), 1, "one position for {notice}: {mine:?}");
    mine.remove(0)
}

fn fault_description(r: &soap::DemandResponse) -> String {
    r.fault
        .as_ref()
        .and_then(|f| f.description.clone())
        .unwrap_or_default()
}

#[test]
fn the_car_tax_is_issued_on_demand_then_verified_activated_and_paid() {
    let home = home_with_car_tax("http://127.0.0.1:9/unused");
    let _hub = Hub::start_serving(&home);
    let sample = CarTax::sample();

    let (ok, text) = demand(&home, "00042", &sample.to_base64());
    assert_eq!(ok.outcome, soap::Outcome::Ok, "{text}");
    let qr = ok.qr_code.clone().expect("a qrCode");
    assert_eq!(qr.fiscal_code, VENETO);
    assert_eq!(qr.notice_number.len(), 18);
    let option = ok.payment_option.clone().expect("a paymentList");
    assert_eq!(option.amount, "213.45");
    assert_eq!(option.options, soap::AmountOption::Eq);
    assert!(option.due_date.is_some(), "due_in_days gives a due date");
    assert_eq!(
        ok.payment_description.as_deref(),
        Some("Tassa automobilistica AB123CD (car)")
    );
    assert_eq!(ok.company_name.as_deref(), Some("Regione del Veneto"));
    let notice = qr.notice_number;

    // The position is in the registry, issued to nobody in particular.
    let stored = position_of(&home, &notice);
    assert_eq!(stored["status"], "active", "{stored}");
    assert_eq!(stored["amount_cents"], 21345, "{stored}");
    assert_eq!(stored["dovuto"]["debt_type"], "BOLLO_AUTO", "{stored}");

    // The node retries a call it saw time out: the same notice, not a second one.
    let (again, _) = demand(&home, "00042", &sample.to_base64());
    assert_eq!(again.qr_code.unwrap().notice_number, notice);
    // Another vehicle: another notice, priced by its type.
    let moto = CarTax {
        vehicle_type: VehicleType::Motorcycle,
        plate: "AB12345".into(),
    };
    let (other, _) = demand(&home, "00042", &moto.to_base64());
    assert_ne!(other.qr_code.unwrap().notice_number, notice);
    assert_eq!(other.payment_option.unwrap().amount, "30.00");

    // Then the node's usual calls, as for any notice.
    let v = call(
        &home,
        "paVerifyPaymentNotice",
        &verify_body(VENETO, BROKER, STATION, &notice),
    );
    assert!(v.contains("<outcome>OK</outcome>"), "{v}");
    assert!(v.contains("<amount>213.45</amount>"), "{v}");
    let a = call(&home, "paGetPaymentV2", &get_payment_v2(&notice));
    assert!(a.contains("<outcome>OK</outcome>"), "{a}");
    assert!(a.contains("<paymentAmount>213.45</paymentAmount>"), "{a}");
    assert!(
        a.contains("<IBAN>IT23Z0622512100100000300299</IBAN>"),
        "{a}"
    );
    let rt = call(
        &home,
        "paSendRTV2",
        &send_rt(&notice, "rt-bollo-1", "213.45"),
    );
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert_eq!(position_of(&home, &notice)["status"], "paid");
    // `snodo sim --demand` rehearses the whole of it: asks, then verifies, activates and pays.
    let out = stdout(&run_sim(
        &home,
        &[
            "-c",
            "config.toml",
            "--demand",
            VENETO,
            "--demand-provider",
            "00042",
            "--plate",
            "ZZ999ZZ",
            "--vehicle-type",
            "motorcycle",
            "--no-ledger",
        ],
    ));
    let asked = out
        .lines()
        .find(|l| l.starts_with("demand service=00001 notice="))
        .unwrap_or_else(|| panic!("no demand line in:\n{out}"));
    assert!(asked.contains("amount=30.00"), "{asked}");
    assert!(out.contains("completed=1 faulted=0"), "{out}");
    let sim_notice = asked
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("notice={VENETO};")))
        .unwrap();
    assert_eq!(position_of(&home, sim_notice)["status"], "paid");

    // A refusal ends the rehearsal with exit 1 and the fault.
    let refused = home.snodo(&[
        "sim",
        "-c",
        "config.toml",
        "--demand",
        VENETO,
        "--vehicle-type",
        "trailer",
        "--no-ledger",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("paDemandPaymentNotice: PAA_SEMANTICA"),
        "{}",
        stderr(&refused)
    );

    // Asked again the same day once paid: already paid.
    let (dup, text) = demand(&home, "00042", &sample.to_base64());
    assert_eq!(
        dup.fault.map(|f| f.fault_code).as_deref(),
        Some("PAA_PAGAMENTO_DUPLICATO"),
        "{text}"
    );
}

#[test]
fn bad_service_data_and_unknown_services_get_their_codes() {
    let home = home_with_car_tax("http://127.0.0.1:9/unused");
    let _hub = Hub::start_serving(&home);
    let b64 = |xml: &str| snodo_adapters::mypay_ws::to_base64(xml.as_bytes());
    let ns = snodo_adapters::car_tax::NS;

    // A plate too short breaks the service's XSD: PAA_SINTASSI_XSD naming the element.
    let short = format!(
        r#"<tassaAuto xmlns="{ns}"><veicoloConTarga><tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB12</veicoloTarga></veicoloConTarga></tassaAuto>"#
    );
    let (ko, text) = demand(&home, "00042", &b64(&short));
    assert_eq!(ko.outcome, soap::Outcome::Ko, "{text}");
    assert_eq!(ko.fault.as_ref().unwrap().fault_code, "PAA_SINTASSI_XSD");
    let why = fault_description(&ko);
    assert!(
        why.contains("tassaAuto/veicoloConTarga/veicoloTarga") && why.contains("7 or 8"),
        "{why}"
    );
    // A vehicle type the schema does not have.
    let three = short.replace(">1<", ">3<").replace("AB12", "AB123CD");
    let (ko, _) = demand(&home, "00042", &b64(&three));
    assert_eq!(ko.fault.as_ref().unwrap().fault_code, "PAA_SINTASSI_XSD");
    assert!(fault_description(&ko).contains("tipoVeicoloTarga"));
    // Base64 of something that is no XML: outside any XSD.
    let (ko, _) = demand(&home, "00042", &b64("targa AB123CD"));
    assert_eq!(
        ko.fault.as_ref().unwrap().fault_code,
        "PAA_SINTASSI_EXTRAXSD"
    );
    // Not base64 at all breaks paForNode.xsd itself.
    let (ko, _) = demand(&home, "00042", "***");
    assert_eq!(ko.fault.as_ref().unwrap().fault_code, "PAA_SINTASSI_XSD");
    assert!(fault_description(&ko).contains("datiSpecificiServizioRequest"));

    // A trailer has no amount in the table: the request is understood but not served.
    let trailer = CarTax {
        vehicle_type: VehicleType::Trailer,
        plate: "XA123BC".into(),
    };
    let (ko, _) = demand(&home, "00042", &trailer.to_base64());
    assert_eq!(ko.fault.as_ref().unwrap().fault_code, "PAA_SEMANTICA");
    assert!(fault_description(&ko).contains("vehicle type 2"));
    // A service the Region does not offer.
    let body = demand_body(VENETO, "00042", &CarTax::sample().to_base64())
        .replace("<idServizio>00001<", "<idServizio>00777<");
    let text = call(&home, "paDemandPaymentNotice", &body);
    assert_eq!(fault_of(&text).as_deref(), Some("PAA_SEMANTICA"), "{text}");
    // Padova offers no service at all; an unknown idPA is not this broker's.
    let text = call(
        &home,
        "paDemandPaymentNotice",
        &demand_body(PADOVA, "00042", &CarTax::sample().to_base64()),
    );
    assert_eq!(fault_of(&text).as_deref(), Some("PAA_SEMANTICA"), "{text}");
    let text = call(
        &home,
        "paDemandPaymentNotice",
        &demand_body("12345678901", "00042", &CarTax::sample().to_base64()),
    );
    assert_eq!(
        fault_of(&text).as_deref(),
        Some("PAA_ID_DOMINIO_ERRATO"),
        "{text}"
    );
    // None of this made a position.
    assert!(veneto_positions(&home)
        .iter()
        .all(|p| p["dovuto"]["debt_type"] != "BOLLO_AUTO"));
}

#[test]
fn the_entity_system_prices_the_car_tax() {
    let sim_port = free_port();
    let home = home_with_car_tax(&format!("http://127.0.0.1:{sim_port}/demand/r_veneto"));
    let _stand_ins = StandIns::start(&home, sim_port, None);
    let _hub = Hub::start_serving(&home);

    // Provider 00099 is priced by the Region's system (the stand-in of `snodo sim --serve`).
    let (ok, text) = demand(&home, "00099", &CarTax::sample().to_base64());
    assert_eq!(ok.outcome, soap::Outcome::Ok, "{text}");
    assert_eq!(ok.payment_option.unwrap().amount, "187.50");
    assert_eq!(
        ok.payment_description.as_deref(),
        Some("Tassa automobilistica AB123CD")
    );
    let notice = ok.qr_code.unwrap().notice_number;
    let stored = position_of(&home, &notice);
    assert_eq!(stored["dovuto"]["debt_type"], "BOLLO_ERP", "{stored}");
    assert_eq!(
        stored["dovuto"]["payer"]["id"], "RSSMRA80A01H501U",
        "{stored}"
    );
    // Then paid like any other notice.
    let a = call(&home, "paGetPaymentV2", &get_payment_v2(&notice));
    assert!(a.contains("<paymentAmount>187.50</paymentAmount>"), "{a}");
    assert!(a.contains("RSSMRA80A01H501U"), "{a}");
    let rt = call(&home, "paSendRTV2", &send_rt(&notice, "rt-erp-1", "187.50"));
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    assert_eq!(position_of(&home, &notice)["status"], "paid");

    // Nothing due for this vehicle; the system failing.
    let owes_nothing = CarTax {
        vehicle_type: VehicleType::Car,
        plate: "NF12345".into(),
    };
    let (ko, text) = demand(&home, "00099", &owes_nothing.to_base64());
    assert_eq!(
        ko.fault.map(|f| f.fault_code).as_deref(),
        Some("PAA_PAGAMENTO_SCONOSCIUTO"),
        "{text}"
    );
    let failing = CarTax {
        vehicle_type: VehicleType::Car,
        plate: "ER12345".into(),
    };
    let (ko, text) = demand(&home, "00099", &failing.to_base64());
    assert_eq!(
        ko.fault.as_ref().map(|f| f.fault_code.as_str()),
        Some("PAA_SYSTEM_ERROR"),
        "{text}"
    );
    assert!(fault_description(&ko).contains("HTTP 500"), "{text}");
    // Provider 00042 still gets the table of BOLLO_AUTO.
    let (ok, _) = demand(&home, "00042", &CarTax::sample().to_base64());
    assert_eq!(ok.payment_option.unwrap().amount, "213.45");
}
