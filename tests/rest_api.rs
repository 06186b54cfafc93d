//! The entity REST API end to end, against the real binary on the demo configuration: keys and
//! isolation on every route, positions with MyPay validation, idempotency, pagination, limits,
//! and the OpenAPI document.

mod common;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-for-the-rest-api-tests";

/// A demo home with an admin token and `extra` TOML appended.
fn home(extra: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        "admin_token = \"${SNODO_ADMIN_TOKEN:-}\"",
        &format!("admin_token = \"{ADMIN}\""),
    );
    std::fs::write(home.config(), format!("{cfg}\n{extra}\n")).unwrap();
    home
}

fn post(port: u16, path: &str, key: &str, body: &Value) -> HttpAnswer {
    http(port, "POST", path, Some(key), &[], Some(&body.to_string()))
}

const POSITIONS: &str = "/api/v1/entities/c_g224/positions";

/// Every route, with c_g224 in its path: no key is 401, Feltre's key 403, Padova's and the admin
/// token get past the door; denials are logged with the key's id, never the key.
#[test]
fn every_route_is_scoped_to_the_key_entity() {
    let home = home("");
    let log = home.path().join("hub.log");
    let hub = Hub::start_logging(&home, &log);
    let p = home.port;
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &api_position("ISO-1", 1000)).status,
        201
    );

    let routes: Vec<(&str, &str)> = [
        ("GET", "/entities/c_g224/positions"),
        ("POST", "/entities/c_g224/positions"),
        ("GET", "/entities/c_g224/positions/ISO-1"),
        ("GET", "/entities/c_g224/positions/ISO-1/notice.pdf"),
        ("PUT", "/entities/c_g224/positions/ISO-1"),
        ("DELETE", "/entities/c_g224/positions/ISO-1"),
        ("GET", "/entities/c_g224/receipts"),
        ("GET", "/entities/c_g224/reports"),
        ("GET", "/entities/c_g224/reports/2026-12-07PSP-1"),
        ("GET", "/entities/c_g224/reconciliation"),
        ("GET", "/entities/c_g224/reconciliation/summary"),
        ("PUT", "/entities/c_g224/treasury/2026-1201"),
        ("DELETE", "/entities/c_g224/treasury/2026-1201"),
        ("GET", "/entities/c_g224/spontaneous"),
        ("POST", "/entities/c_g224/spontaneous/MENSA"),
        ("POST", "/entities/c_g224/carts"),
        ("GET", "/entities/c_g224/carts/C1"),
    ]
    .to_vec();
    // The list above is the API's: the document must not have more routes than we test here.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
            .unwrap();
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "a route is untested for isolation"
    );

    for (method, route) in &routes {
        let path = format!("/api/v1{route}");
        let body = (*method == "POST" || *method == "PUT").then_some("{}");
        let none = http(p, method, &path, None, &[], body);
        assert_eq!(
            none.status, 401,
            "{method} {route} without a key: {}",
            none.body
        );
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        let wrong = http(p, method, &path, Some("not-a-key-of-anyone"), &[], body);
        assert_eq!(wrong.status, 401, "{method} {route} with a bad key");
        let other = http(p, method, &path, Some(KEY_FELTRE), &[], body);
        assert_eq!(
            other.status, 403,
            "{method} {route} with Feltre's key: {}",
            other.body
        );
        assert_eq!(
            other.header("content-type"),
            Some("application/problem+json")
        );
        for key in [KEY_PADOVA, ADMIN] {
            let own = http(p, method, &path, Some(key), &[], body);
            assert!(
                ![401, 403, 405].contains(&own.status),
                "{method} {route} with an allowed key: {} {}",
                own.status,
                own.body
            );
        }
    }
    // Feltre's own resources are Feltre's; Padova's key may not see them either.
    assert_eq!(
        get(p, "/api/v1/entities/c_d530/positions", KEY_FELTRE).status,
        200
    );
    assert_eq!(
        get(p, "/api/v1/entities/c_d530/positions", KEY_PADOVA).status,
        403
    );
    // The admin token on an entity the hub does not have.
    assert_eq!(
        get(p, "/api/v1/entities/c_x999/positions", ADMIN).status,
        404
    );
    // Operators see the answers in /metrics, labelled only with what the hub knows.
    let metrics = http(p, "GET", "/metrics", None, &[], None).body;
    let count = |labels: &str| -> u64 {
        let prefix = format!("snodo_api_requests_total{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(r#"entity="c_g224",resource="positions",method="DELETE",status="403""#),
        1,
        "{metrics}"
    );
    assert!(
        count(r#"entity="c_g224",resource="positions",method="GET",status="401""#) >= 2,
        "{metrics}"
    );
    assert!(
        !metrics.contains("c_x999"),
        "an unknown entity became a label: {metrics}"
    );
    drop(hub);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("c_g224#0") && log.contains("c_d530#0"),
        "requests and denials name the key id:\n{log}"
    );
    assert!(log.contains("another entity's resource"), "{log}");
    for secret in [KEY_PADOVA, KEY_FELTRE, ADMIN, "not-a-key-of-anyone"] {
        assert!(!log.contains(secret), "the log shows a key: {secret}");
    }
}

#[test]
fn positions_round_trip_with_mypay_rules() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let p = home.port;

    let created = post(p, POSITIONS, KEY_PADOVA, &api_position("RT-1", 12050));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("location"),
        Some("/api/v1/entities/c_g224/positions/RT-1")
    );
    let v = created.json();
    assert_eq!(v["amountCents"], 12050);
    assert_eq!(v["status"], "active");
    let notice = v["noticeNumber"]
        .as_str()
        .expect("notice number")
        .to_string();
    let iuv = v["iuv"].as_str().expect("iuv").to_string();
    assert_eq!(
        v["qrCode"],
        format!("PAGOPA|002|{notice}|00644060287|12050")
    );

    // Read back by IUD, IUV and notice number.
    let by_iud = get(p, &format!("{POSITIONS}/RT-1"), KEY_PADOVA);
    assert_eq!(by_iud.json(), v);
    for q in [format!("iuv={iuv}"), format!("noticeNumber={notice}")] {
        let page = get(p, &format!("{POSITIONS}?{q}"), KEY_PADOVA).json();
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{q}");
        assert_eq!(page["items"][0]["iud"], "RT-1");
    }

    // Modify: a new version; the same PUT again changes nothing.
    let mut changed = api_position("RT-1", 9900);
    changed.as_object_mut().unwrap().remove("IUD");
    let put = http(
        p,
        "PUT",
        &format!("{POSITIONS}/RT-1"),
        Some(KEY_PADOVA),
        &[],
        Some(&changed.to_string()),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.json()["amountCents"], 9900);
    assert_eq!(put.json()["version"], 2);
    let again = http(
        p,
        "PUT",
        &format!("{POSITIONS}/RT-1"),
        Some(KEY_PADOVA),
        &[],
        Some(&changed.to_string()),
    );
    assert_eq!(again.json()["version"], 2);
    // A PUT whose body names another IUD is refused, naming the field.
    let other = http(
        p,
        "PUT",
        &format!("{POSITIONS}/RT-1"),
        Some(KEY_PADOVA),
        &[],
        Some(&api_position("RT-2", 100).to_string()),
    );
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.json()["field"], "IUD");
    // PUT of an unknown position.
    let mut ghost = api_position("NOPE", 100);
    ghost.as_object_mut().unwrap().remove("IUD");
    let missing = http(
        p,
        "PUT",
        &format!("{POSITIONS}/NOPE"),
        Some(KEY_PADOVA),
        &[],
        Some(&ghost.to_string()),
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()["code"], "PAA_IMPORT_DOVUTO_NON_PRESENTE");

    // Annul: kept in history, and again is the same answer.
    let del = http(
        p,
        "DELETE",
        &format!("{POSITIONS}/RT-1"),
        Some(KEY_PADOVA),
        &[],
        None,
    );
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(del.json()["status"], "annulled");
    let del2 = http(
        p,
        "DELETE",
        &format!("{POSITIONS}/RT-1"),
        Some(KEY_PADOVA),
        &[],
        None,
    );
    assert_eq!(del2.status, 200);
    assert_eq!(del2.json()["status"], "annulled");
    let kept = home.positions(&["--iud", "RT-1"]);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["status"], "annulled");
    assert!(
        kept[0]["history_count"].as_i64().unwrap() >= 3,
        "created, modified, annulled: {kept:?}"
    );
    // The IUD is free again.
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &api_position("RT-1", 500)).status,
        201
    );
}

#[test]
fn validation_errors_name_the_field_and_the_mypay_code() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let p = home.port;

    let mut bad = api_position("BAD-1", 1000);
    bad["codiceIdentificativoUnivoco"] = json!("RSSMRA85T10A562X");
    bad["importoDovuto"] = json!("0");
    let r = post(p, POSITIONS, KEY_PADOVA, &bad);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let v = r.json();
    assert_eq!(v["code"], "PAA_IMPORT_COD_FISC");
    assert_eq!(v["field"], "codiceIdentificativoUnivoco");
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"PAA_IMPORT_IMPORTO"), "{codes:?}");

    // Unknown fields, floats, and the wrong action are refused, naming the field.
    let mut typo = api_position("BAD-2", 1000);
    typo["causale"] = json!("x");
    let r = post(p, POSITIONS, KEY_PADOVA, &typo).json();
    assert_eq!(r["status"], 400);
    assert!(r["detail"].as_str().unwrap().contains("causale"), "{r}");
    let mut float = api_position("BAD-3", 1000);
    float["importoDovuto"] = json!(10.5);
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &float).json()["field"],
        "importoDovuto"
    );
    let mut annul = api_position("BAD-4", 1000);
    annul["azione"] = json!("A");
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &annul).json()["field"],
        "azione"
    );
    // A debt type the entity does not have.
    let mut dt = api_position("BAD-5", 1000);
    dt["tipoDovuto"] = json!("COSAP");
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &dt).json()["code"],
        "PAA_IMPORT_TIPO_DOVUTO_INESISTENTE"
    );
    // Not JSON, not JSON content, not a position.
    assert_eq!(
        http(p, "POST", POSITIONS, Some(KEY_PADOVA), &[], Some("{nope")).status,
        400
    );
    assert_eq!(
        http(
            p,
            "POST",
            POSITIONS,
            Some(KEY_PADOVA),
            &[("Content-Type", "text/csv")],
            Some("a;b")
        )
        .status,
        415
    );
    assert_eq!(
        http(p, "POST", POSITIONS, Some(KEY_PADOVA), &[], Some("42")).status,
        400
    );

    // A batch: each item answered on its own, the good ones stored.
    let batch = json!([
        api_position("B-1", 100),
        bad,
        api_position("B-2", 200),
        api_position("B-1", 100)
    ]);
    let r = post(p, POSITIONS, KEY_PADOVA, &batch);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (
            v["created"].clone(),
            v["unchanged"].clone(),
            v["rejected"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(v["results"][1]["problem"]["code"], "PAA_IMPORT_COD_FISC");
    assert_eq!(
        v["results"][3]["status"], 200,
        "the same position twice is one position"
    );
    assert_eq!(
        v["results"][0]["position"]["noticeNumber"],
        v["results"][3]["position"]["noticeNumber"]
    );
    // An empty batch and a too large one.
    assert_eq!(post(p, POSITIONS, KEY_PADOVA, &json!([])).status, 422);
    let big: Vec<Value> = (0..1001)
        .map(|i| api_position(&format!("BIG-{i}"), 100))
        .collect();
    assert_eq!(post(p, POSITIONS, KEY_PADOVA, &json!(big)).status, 422);
}

#[test]
fn retried_posts_never_make_a_second_position() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let p = home.port;

    // By IUD: the same position again is the first one, 200 instead of 201.
    let first = post(p, POSITIONS, KEY_PADOVA, &api_position("ID-1", 700));
    assert_eq!(first.status, 201);
    let second = post(p, POSITIONS, KEY_PADOVA, &api_position("ID-1", 700));
    assert_eq!(second.status, 200);
    assert_eq!(first.json(), second.json());
    // The same IUD with other data is a conflict.
    let clash = post(p, POSITIONS, KEY_PADOVA, &api_position("ID-1", 701));
    assert_eq!(clash.status, 409, "{}", clash.body);
    assert_eq!(clash.json()["code"], "PAA_IMPORT_IUD_DUPLICATO");

    // Concurrently: ten identical POSTs, one position.
    let body = api_position("ID-2", 800).to_string();
    let answers: Vec<HttpAnswer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| http(p, "POST", POSITIONS, Some(KEY_PADOVA), &[], Some(&body))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = answers.iter().filter(|a| a.status == 201).count();
    let same = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(
        (created, same),
        (1, 9),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.status, &a.body))
            .collect::<Vec<_>>()
    );
    let notices: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| a.json()["noticeNumber"].to_string())
        .collect();
    assert_eq!(notices.len(), 1);

    // With an Idempotency-Key: the first answer replayed as it was, concurrently too.
    let spont = json!({"payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"},
        "amountCents": 4500, "fields": {"anno_scolastico": "2026/27", "alunno": "Luca Rossi"}})
    .to_string();
    let path = "/api/v1/entities/c_g224/spontaneous/MENSA";
    let answers: Vec<HttpAnswer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    http(
                        p,
                        "POST",
                        path,
                        Some(KEY_PADOVA),
                        &[("Idempotency-Key", "k-42")],
                        Some(&spont),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|a| a.status == 201),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.status, &a.body))
            .collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.header("idempotent-replayed").is_some())
            .count(),
        5
    );
    let later = http(
        p,
        "POST",
        path,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "k-42")],
        Some(&spont),
    );
    assert_eq!(later.body, answers[0].body);
    // A replay is the whole first answer, its Location included.
    let keyed = api_position("ID-3", 900).to_string();
    let first = http(
        p,
        "POST",
        POSITIONS,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "pos-3")],
        Some(&keyed),
    );
    let again = http(
        p,
        "POST",
        POSITIONS,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "pos-3")],
        Some(&keyed),
    );
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.header("location"),
        Some("/api/v1/entities/c_g224/positions/ID-3")
    );
    assert_eq!(again.body, first.body);
    // The same key with another body is refused; another key is another payment.
    let other = spont.replace("4500", "4600");
    let reused = http(
        p,
        "POST",
        path,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "k-42")],
        Some(&other),
    );
    assert_eq!(reused.status, 422);
    assert_eq!(reused.json()["field"], "Idempotency-Key");
    let fresh = http(
        p,
        "POST",
        path,
        Some(KEY_PADOVA),
        &[("Idempotency-Key", "k-43")],
        Some(&spont),
    );
    assert_eq!(fresh.status, 201);
    assert_ne!(
        fresh.json()["noticeNumber"],
        answers[0].json()["noticeNumber"]
    );
    let mensa = home
        .positions(&[])
        .into_iter()
        .filter(|p| p["dovuto"]["debt_type"] == "MENSA")
        .count();
    assert_eq!(mensa, 2, "one position per key");
}

#[test]
fn lists_page_with_cursors_and_filters() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let batch: Vec<Value> = (0..25)
        .map(|i| {
            let mut v = api_position(&format!("L-{i:02}"), 100 + i);
            if i % 5 == 0 {
                v["dataEsecuzionePagamento"] = json!("2098-06-15");
            }
            v
        })
        .collect();
    assert_eq!(
        post(p, POSITIONS, KEY_PADOVA, &json!(batch)).json()["created"],
        25
    );
    assert_eq!(
        http(
            p,
            "DELETE",
            &format!("{POSITIONS}/L-03"),
            Some(KEY_PADOVA),
            &[],
            None
        )
        .status,
        200
    );

    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = get(
            p,
            &format!("{POSITIONS}?limit=10&cursor={cursor}"),
            KEY_PADOVA,
        )
        .json();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["iud"].as_str().unwrap().to_string());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("L-{i:02}")).collect();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every position once across pages");

    let count = |q: &str| {
        get(p, &format!("{POSITIONS}?{q}"), KEY_PADOVA).json()["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("status=annulled"), 1);
    assert_eq!(count("status=active&limit=500"), 24);
    assert_eq!(count("dueFrom=2098-06-15&dueTo=2098-06-15"), 5);
    assert_eq!(count("debtType=MENSA"), 0);
    assert_eq!(
        get(p, &format!("{POSITIONS}?status=later"), KEY_PADOVA).status,
        400
    );
    assert_eq!(
        get(p, &format!("{POSITIONS}?limit=0"), KEY_PADOVA).status,
        400
    );
    assert_eq!(
        get(p, &format!("{POSITIONS}?colour=red"), KEY_PADOVA).status,
        400
    );
    assert_eq!(
        get(p, &format!("{POSITIONS}?cursor=abc"), KEY_PADOVA).status,
        400
    );
}

#[test]
fn spontaneous_payments_follow_the_declared_fields() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let offers = get(p, "/api/v1/entities/c_g224/spontaneous", KEY_PADOVA).json();
    let mensa = &offers["items"][0];
    assert_eq!(mensa["debtType"], "MENSA");
    assert_eq!(mensa["amount"], json!({"minCents": 500, "maxCents": 50000}));
    assert_eq!(mensa["fields"][0]["name"], "anno_scolastico");
    assert_eq!(mensa["fields"][0]["required"], true);

    let path = "/api/v1/entities/c_g224/spontaneous/MENSA";
    let ok = post(
        p,
        path,
        KEY_PADOVA,
        &json!({"payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"},
        "amountCents": 4500, "fields": {"anno_scolastico": "2026/27", "alunno": "Luca Rossi"}}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let v = ok.json();
    assert_eq!(v["causale"], "Mensa 2026/27 - Luca Rossi");
    assert!(v["qrCode"].as_str().unwrap().starts_with("PAGOPA|002|3"));
    assert!(v["noticeNumber"].is_string());

    let bad = post(
        p,
        path,
        KEY_PADOVA,
        &json!({"payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"},
        "amountCents": 10, "fields": {"anno_scolastico": "26"}}),
    );
    assert_eq!(bad.status, 422);
    let fields: Vec<String> = bad.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        fields,
        ["fields.anno_scolastico", "fields.alunno", "amountCents"]
    );
    let payer = post(
        p,
        path,
        KEY_PADOVA,
        &json!({"payer": {"type": "F", "id": "RSSMRA85T10A562X", "name": "Mario Rossi"},
        "amountCents": 4500, "fields": {"anno_scolastico": "2026/27", "alunno": "Luca"}}),
    );
    assert_eq!(payer.status, 422);
    assert_eq!(payer.json()["field"], "payer.id");
    assert_eq!(payer.json()["code"], "PAA_IMPORT_COD_FISC");
    let unknown = post(
        p,
        path,
        KEY_PADOVA,
        &json!({"payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "M", "age": 3}, "amountCents": 4500}),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["field"], "payer.age");
    assert_eq!(
        post(
            p,
            "/api/v1/entities/c_g224/spontaneous/TARI",
            KEY_PADOVA,
            &json!({})
        )
        .status,
        404
    );
}

#[test]
fn rate_and_size_limits_answer_clearly() {
    let home = home("[api]\nrate_per_second = 1\nrate_burst = 3\nmax_body_bytes = 2000");
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let big = format!("{{\"IUD\": \"{}\"}}", "x".repeat(3000));
    let r = http(p, "POST", POSITIONS, Some(KEY_PADOVA), &[], Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["type"], "https://snodo.eu/problems/body-too-large");
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(p, POSITIONS, KEY_PADOVA).status)
        .collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let limited = get(p, POSITIONS, KEY_PADOVA);
    assert_eq!(limited.status, 429);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another key has its own budget.
    assert_eq!(
        get(p, "/api/v1/entities/c_d530/positions", KEY_FELTRE).status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1100 * wait));
    assert_eq!(get(p, POSITIONS, KEY_PADOVA).status, 200);
}

/// The served document is docs/openapi.json, a valid OpenAPI 3 document.
#[test]
fn the_openapi_document_is_served_and_valid() {
    let home = home("");
    let _hub = Hub::start_serving(&home);
    let r = http(home.port, "GET", "/api/v1/openapi.json", None, &[], None);
    assert_eq!(r.status, 200);
    let file = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    assert_eq!(r.body, file);
    assert!(r.json()["openapi"].as_str().unwrap().starts_with("3."));
    let served = home.path().join("openapi.json");
    std::fs::write(&served, &r.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\nvalidate(read_from_filename(sys.argv[1])[0])\nprint('valid')"])
        .arg(&served)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "invalid OpenAPI document: {}",
        stderr(&out)
    );
    // An unknown route under the API is a problem, not a bare 404.
    let none = get(home.port, "/api/v1/nothing", KEY_PADOVA);
    assert_eq!(none.status, 404);
    assert_eq!(none.json()["type"], "https://snodo.eu/problems/no-route");
}
