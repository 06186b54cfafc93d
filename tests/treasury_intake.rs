//! Treasury intakes (`decode = "opi"`, `to = "treasury"`): an OPI giornale di cassa dropped in
//! the entity's folder keeps its incoming movements (ENTRATA, SOSPESO ENTRATA; a STORNATO
//! removes its movement), each with the IUF or IUV of its causale; the same file again changes
//! nothing; a file of another entity or with a broken amount goes to failed/ with the record
//! and the rule, and nothing of it is applied.

mod common;
use common::*;
use std::path::Path;

fn fixture() -> String {
    std::fs::read_to_string(repo().join("adapters/tests/data/treasury/opi_1_8.xml")).unwrap()
}

fn drop_file(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn movements(home: &Home) -> Vec<serde_json::Value> {
    json_lines(&home.snodo(&[
        "treasury",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--limit",
        "1000",
    ]))
}

#[test]
fn a_giornale_di_cassa_keeps_its_incoming_movements_once_and_bad_files_are_set_aside() {
    let home = Home::new();
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(
        r#"
[[pipelines]]
name = "padova-tesoreria"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/tesoreria", schedule = "* * * * * *", settle = "0s" }
decode = "opi"
to = "treasury"
"#,
    );
    std::fs::write(home.config(), cfg).unwrap();
    let hub = Hub::start_serving(&home);
    let inbox = home.path().join("var/c_g224/tesoreria");

    // What the file holds, read by the decoder itself: the kept movements, reversals removing.
    let (_, parsed, _) =
        snodo_adapters::treasury::opi::parse_opi(fixture().as_bytes()).expect("the fixture");
    let mut expected = std::collections::BTreeMap::new();
    for m in &parsed {
        match m.operation {
            snodo_core::treasury::MovementOperation::Executed => {
                expected.insert(m.bill.clone(), m.amount.cents());
            }
            snodo_core::treasury::MovementOperation::Reversed => {
                expected.remove(&m.bill);
            }
        }
    }
    assert!(expected.len() >= 3, "{expected:?}");
    assert!(parsed.iter().any(|m| m.reference.iuf().is_some()));

    drop_file(&inbox, "GDC-1.xml", &fixture());
    assert!(
        wait_for(15, || movements(&home).len() == expected.len()),
        "{:?}",
        movements(&home)
    );
    let held: std::collections::BTreeMap<String, i64> = movements(&home)
        .iter()
        .map(|m| {
            (
                m["bill"].as_str().unwrap().to_string(),
                m["amount_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(held, expected);
    let with_iuf = movements(&home)
        .iter()
        .filter(|m| m["iuf"].is_string())
        .count();
    assert_eq!(
        with_iuf,
        parsed
            .iter()
            .filter(|m| m.reference.iuf().is_some() && expected.contains_key(&m.bill))
            .count()
    );

    // The same file again, under another name: nothing changes.
    drop_file(&inbox, "GDC-1-again.xml", &fixture());
    assert!(wait_for(15, || store_events(&home, "treasury.received")
        .len()
        == 2));
    let again = store_events(&home, "treasury.received").pop().unwrap();
    assert_eq!(again.payload["counts"]["inserted"], 0, "{}", again.payload);
    assert_eq!(again.payload["counts"]["updated"], 0, "{}", again.payload);

    // Feltre's file in Padova's folder, and a broken amount: set aside with why.
    let feltre = fixture().replace(
        "<codice_fiscale_ente>00644060287</codice_fiscale_ente>",
        "<codice_fiscale_ente>00133880252</codice_fiscale_ente>",
    );
    assert_ne!(feltre, fixture());
    drop_file(&inbox, "GDC-FELTRE.xml", &feltre);
    let broken = fixture().replacen(
        "<importo>1234.50</importo>",
        "<importo>12,34.5</importo>",
        1,
    );
    assert_ne!(broken, fixture());
    drop_file(&inbox, "GDC-BROKEN.xml", &broken);
    let failed = inbox.join("failed");
    assert!(
        wait_for(15, || failed.join("GDC-FELTRE.xml.error.txt").exists()
            && failed.join("GDC-BROKEN.xml.error.txt").exists()),
        "not set aside: {:?}",
        std::fs::read_dir(&inbox).map(|d| d.count())
    );
    let why = std::fs::read_to_string(failed.join("GDC-FELTRE.xml.error.txt")).unwrap();
    assert!(
        why.contains("00133880252") && why.contains("c_g224"),
        "{why}"
    );
    let why = std::fs::read_to_string(failed.join("GDC-BROKEN.xml.error.txt")).unwrap();
    assert!(
        why.contains("12,34.5") && why.contains("bill 1201"),
        "{why}"
    );
    assert_eq!(
        store_events(&home, "treasury.received").len(),
        2,
        "nothing applied"
    );
    assert_eq!(movements(&home).len(), expected.len());
    hub.terminate();
}

#[test]
fn an_accounting_system_books_and_reverses_movements_over_the_api() {
    let home = Home::new();
    let hub = Hub::start_serving(&home);
    let put = |id: &str, body: &str| {
        http(
            home.port,
            "PUT",
            &format!("/api/v1/entities/c_g224/treasury/{id}"),
            Some(KEY_PADOVA),
            &[],
            Some(body),
        )
    };
    let body = r#"{"amountCents": 150000, "valueDate": "2026-11-28", "causale": "/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/2026-11-27PSPUNO-00644060287 BON.SEPA", "payer": "PSP Uno Servizio pagoPA"}"#;
    let first = put("2026-1201", body);
    assert_eq!(first.status, 201, "{}", first.body);
    let v = first.json();
    assert_eq!(
        (
            v["outcome"].as_str(),
            v["iuf"].as_str(),
            v["amountCents"].as_i64()
        ),
        (
            Some("inserted"),
            Some("2026-11-27PSPUNO-00644060287"),
            Some(150_000)
        )
    );
    let again = put("2026-1201", body);
    assert_eq!(
        (again.status, again.json()["outcome"].clone()),
        (200, "unchanged".into())
    );
    let changed = put("2026-1201", &body.replace("150000", "150001"));
    assert_eq!(changed.json()["outcome"], "updated", "{}", changed.body);
    assert_eq!(movements(&home).len(), 1);
    assert_eq!(movements(&home)[0]["source"], "api");

    // Mistakes name the field.
    for (id, body, field) in [
        (
            "2026-1202",
            r#"{"amountCents": 0, "causale": "x"}"#,
            "amountCents",
        ),
        (
            "2026-1202",
            r#"{"amountCents": 1, "causale": " "}"#,
            "causale",
        ),
        (
            "2026-1202",
            r#"{"amountCents": 1, "causale": "x", "valueDate": "28/11/2026"}"#,
            "valueDate",
        ),
        (
            "26-1202",
            r#"{"amountCents": 1, "causale": "x"}"#,
            "movementId",
        ),
    ] {
        let r = put(id, body);
        assert_eq!(r.status, 422, "{id} {body}: {}", r.body);
        assert_eq!(r.json()["field"], field, "{}", r.body);
    }
    let r = put(
        "2026-1202",
        r#"{"amountCents": 1, "causale": "x", "extra": 1}"#,
    );
    assert!(r.status == 400 || r.status == 422, "{}", r.body);

    // Reversed: removed; reversing again finds nothing.
    let del = |id: &str| {
        http(
            home.port,
            "DELETE",
            &format!("/api/v1/entities/c_g224/treasury/{id}"),
            Some(KEY_PADOVA),
            &[],
            None,
        )
    };
    assert_eq!(del("2026-1201").status, 200);
    assert_eq!(del("2026-1201").status, 404);
    assert!(movements(&home).is_empty());
    hub.terminate();
}
