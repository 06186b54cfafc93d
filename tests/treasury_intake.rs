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
    home.append_config(PADOVA_TREASURY_INTAKE);
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

/// The entity's notifications (`decode = "mypivot-import-pagati"`, `to = "reconciliation"`):
/// a good file is kept whole; a file with a bad amount and an unknown payer type, one of another
/// entity, and one that is not UTF-8 go to failed/ naming line, column and rule, and nothing of
/// them is kept.
#[test]
fn notifications_are_kept_whole_and_bad_files_are_set_aside_with_the_rule() {
    let home = Home::new();
    home.append_config(
        r#"
[[pipelines]]
name = "padova-pagati"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/pagati", schedule = "* * * * * *", settle = "0s" }
decode = "mypivot-import-pagati"
to = "reconciliation"
"#,
    );
    let header = "IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovutoPagato;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio\n";
    let line = |iud: &str, kind: &str, amount: &str| {
        format!("{iud};01000000000012373;{kind};RSSMRA85T10A562S;Mario Rossi;;;;;;;;2026-11-26;{amount};;TARI;PO;TARI;9/0101100IM/;\n")
    };
    let inbox = home.path().join("var/c_g224/pagati");
    std::fs::create_dir_all(&inbox).unwrap();
    let good = format!(
        "{header}{}{}",
        line("N1", "F", "10.00"),
        line("N2", "G", "5.50")
    );
    write_zip(&inbox, "c_g224-PAGATI1-1_0", good.as_bytes());
    let bad = format!(
        "{header}{}{}",
        line("N3", "F", "12,3x"),
        line("N4", "X", "1.00")
    );
    write_zip(&inbox, "c_g224-PAGATI2-1_0", bad.as_bytes());
    write_zip(&inbox, "c_d530-PAGATI3-1_0", good.as_bytes());
    let latin1: Vec<u8> = format!("{header}{}", line("N5", "F", "1.00"))
        .replace("Mario Rossi", "Nicol\u{f2}")
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    write_zip(&inbox, "c_g224-PAGATI4-1_0", &latin1);

    let hub = Hub::start_serving(&home);
    let failed = inbox.join("failed");
    let why = |name: &str| std::fs::read_to_string(failed.join(format!("{name}.zip.error.txt")));
    assert!(
        wait_for(15, || [
            "c_g224-PAGATI2-1_0",
            "c_d530-PAGATI3-1_0",
            "c_g224-PAGATI4-1_0"
        ]
        .iter()
        .all(|n| why(n).is_ok())
            && store_events(&home, "notifications.received").len() == 1),
        "not all handled: {:?}",
        std::fs::read_dir(&inbox).map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
    );
    hub.terminate();
    let bad = why("c_g224-PAGATI2-1_0").unwrap();
    assert!(
        bad.contains("line 2") && bad.contains("importoDovutoPagato") && bad.contains("12,3x"),
        "{bad}"
    );
    assert!(
        bad.contains("line 3")
            && bad.contains("tipoIdentificativoUnivoco")
            && bad.contains("F or G"),
        "{bad}"
    );
    let other = why("c_d530-PAGATI3-1_0").unwrap();
    assert!(
        other.contains("c_d530") && other.contains("c_g224"),
        "{other}"
    );
    let encoding = why("c_g224-PAGATI4-1_0").unwrap();
    assert!(encoding.contains("line 2"), "{encoding}");
    // Only the good file's two notifications are kept.
    let kept = store_events(&home, "notifications.received");
    assert_eq!(kept[0].payload["counts"]["inserted"], 2, "{kept:?}");
}
