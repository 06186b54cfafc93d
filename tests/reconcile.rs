//! Reconciliation classes end to end: the simulated node pays notices, the PSPs publish their
//! settlement flows, the hub pulls them, the accounting system books treasury movements — one
//! flow credited exactly, one with another amount, one movement naming an unknown flow and one
//! naming nothing — and `snodo reconcile` labels every payment and movement as MyPivot would.

mod common;
use common::*;

fn reconcile(home: &Home, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["reconcile", "-c", "config.toml", "--entity", "c_g224"];
    args.extend_from_slice(extra);
    json_lines(&home.snodo(&args))
}

/// 30 notices paid by the simulated node, their flows published (with `--anomalies` or not),
/// served, and pulled by the hub.
struct Pulled {
    home: Home,
    ledger: std::path::PathBuf,
    date: String,
    _psps: SimPsps,
    _scratch: tempfile::TempDir,
}

fn pulled(anomalies: bool) -> Pulled {
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger");
    let home = sim_paid_home(&ledger, 30);
    let date = sim_ledger_date(&ledger);
    let mut publish = vec![
        "--ledger",
        ledger.to_str().unwrap(),
        "--publish-flows",
        "--date",
        &date,
    ];
    if anomalies {
        publish.push("--anomalies");
    }
    run_sim(&home, &publish);
    let port = free_port();
    let psps = SimPsps::serve(&home, &ledger, port);
    home.append_config(&sim_fdr_table(port));
    json_lines(&home.snodo(&["reports", "-c", "config.toml", "pull"]));
    Pulled {
        home,
        ledger,
        date,
        _psps: psps,
        _scratch: scratch,
    }
}

#[test]
fn payments_and_movements_get_mypivots_classes() {
    // Every field bound: the simulator and the ledger live as long as the test.
    let Pulled {
        home,
        date,
        _psps,
        _scratch,
        ..
    } = pulled(false);
    let flows: Vec<serde_json::Value> =
        json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]))
            .into_iter()
            .filter(|f| f.get("superseded_by").is_none())
            .collect();
    assert!(flows.len() >= 2, "{flows:?}");
    let (exact, other) = (&flows[0], &flows[1]);
    let total = |f: &serde_json::Value| f["declared"]["amount_cents"].as_i64().unwrap();

    // Before any credit, within the grace period, the payments wait.
    let before = reconcile(&home, &[]);
    assert_eq!(before[0]["payments"], 30, "{before:?}");
    assert_eq!(before[0]["classes"]["RT_IUF"], 30, "{before:?}");
    assert!(
        before[0]["classes"].get("IUF_NO_TES").is_none(),
        "{before:?}"
    );

    let hub = Hub::start_serving(&home);
    let book = |id: &str, cents: i64, causale: &str| {
        let body = serde_json::json!({ "amountCents": cents, "causale": causale }).to_string();
        let r = http(
            home.port,
            "PUT",
            &format!("/api/v1/entities/c_g224/treasury/{id}"),
            Some(KEY_PADOVA),
            &[],
            Some(&body),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    };
    let uri = |f: &serde_json::Value| {
        format!(
            "/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/{}",
            f["iuf"].as_str().unwrap()
        )
    };
    book("2026-1", total(exact), &uri(exact));
    book("2026-2", total(other) + 100, &uri(other));
    book(
        "2026-3",
        5_000,
        "/PUR/LGPE-RIVERSAMENTO/URI/2026-01-01UNKNOWN-1",
    );
    book("2026-4", 7_000, "BONIFICO DA PRIVATO");
    // Feltre's treasury credits an SCT naming one of Padova's flows: it is not Padova's credit.
    let stray = flows.get(2).unwrap_or(other);
    let body =
        serde_json::json!({ "amountCents": total(stray), "causale": uri(stray) }).to_string();
    let r = http(
        home.port,
        "PUT",
        "/api/v1/entities/c_d530/treasury/2026-9",
        Some(KEY_FELTRE),
        &[],
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // The API says what the CLI says.
    let api_summary = get(
        home.port,
        "/api/v1/entities/c_g224/reconciliation/summary",
        KEY_PADOVA,
    )
    .json();
    let cli_summary = &reconcile(&home, &[])[0];
    assert_eq!(
        api_summary["classes"], cli_summary["classes"],
        "{api_summary}"
    );
    let mut seen = Vec::new();
    let mut since = String::new();
    loop {
        let page = get(
            home.port,
            &format!("/api/v1/entities/c_g224/reconciliation?class=RT_IUF&limit=7&since={since}"),
            KEY_PADOVA,
        )
        .json();
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        since = page["nextCursor"].as_str().unwrap().to_string();
        seen.extend(items);
    }
    assert_eq!(
        seen.len() as i64,
        cli_summary["classes"]["RT_IUF"].as_i64().unwrap()
    );
    let bad = get(
        home.port,
        "/api/v1/entities/c_g224/reconciliation?class=NOPE",
        KEY_PADOVA,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    hub.terminate();

    let count = |f: &serde_json::Value| f["payments"].as_i64().unwrap();
    // Ten days on, the flow nobody credited is missing its credit.
    let later =
        chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap() + chrono::Duration::days(10);
    let at = format!("{later}T12:00:00Z");
    let summary = &reconcile(&home, &["--at", &at])[0];
    let classes = &summary["classes"];
    assert_eq!(classes["RT_IUF_TES"], count(exact), "{summary}");
    assert_eq!(classes["IUF_TES_DIV_IMP"], count(other), "{summary}");
    let rest: i64 = flows[2..].iter().map(count).sum();
    assert_eq!(
        classes
            .get("IUF_NO_TES")
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
        rest,
        "{summary}"
    );
    assert_eq!(classes["TES_NO_IUF_OR_IUV"], 1, "{summary}");
    assert_eq!(classes["TES_NO_MATCH"], 1, "{summary}");
    assert_eq!(summary["movements"], 4);

    // One class's items, with their keys and both sides' amounts.
    let credited = reconcile(&home, &["--class", "RT_IUF_TES"]);
    assert_eq!(credited.len() as i64, count(exact));
    for i in &credited {
        assert_eq!(i["iuf"], exact["iuf"], "{i}");
        assert_eq!(i["paid_cents"], i["reported_cents"], "{i}");
        assert_eq!(i["credited_cents"], total(exact), "{i}");
    }
    let unknown = reconcile(&home, &["--class", "TES_NO_IUF_OR_IUV"]);
    assert_eq!(unknown[0]["movement"], "2026-3");
    let feltre = json_lines(&home.snodo(&["reconcile", "-c", "config.toml", "--entity", "c_d530"]));
    assert_eq!(feltre[0]["classes"]["TES_NO_IUF_OR_IUV"], 1, "{feltre:?}");
    let bad = home.snodo(&[
        "reconcile",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--class",
        "RT",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("RT_IUF_TES"), "{}", stderr(&bad));
}

#[test]
fn the_simulated_treasurer_credits_the_flows_and_the_hub_reads_its_giornale() {
    let Pulled {
        home,
        ledger,
        date,
        _psps,
        _scratch,
    } = pulled(false);
    let ledger_arg = ledger.to_str().unwrap();
    home.append_config(
        r#"
[[pipelines]]
name = "padova-tesoreria"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/tesoreria", schedule = "* * * * * *", settle = "0s" }
decode = "opi"
to = "treasury"
"#,
    );
    let flows: Vec<serde_json::Value> =
        json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    assert_eq!(flows.len(), 3, "one flow per simulated PSP: {flows:?}");

    let out = stdout(&run_sim(
        &home,
        &[
            "--ledger",
            ledger_arg,
            "--publish-treasury",
            "--date",
            &date,
            "--anomalies",
        ],
    ));
    let giornale = std::fs::read_dir(ledger.join("treasury").join(PADOVA))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        out.contains("movements=3"),
        "two flows and an unknown movement: {out}"
    );
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(
            repo()
                .join("adapters/specs/opi/p4pa-payhub-activities/OPI_GIORNALE_DI_CASSA_V_1_8.xsd"),
        )
        .arg(&giornale)
        .output()
        .expect("xmllint");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    let inbox = home.path().join("var/c_g224/tesoreria");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(&giornale, inbox.join(giornale.file_name().unwrap())).unwrap();
    let hub = Hub::start_serving(&home);
    let applied = wait_for(15, || {
        json_lines(&home.snodo(&["treasury", "-c", "config.toml", "--entity", "c_g224"])).len() == 3
    });
    hub.terminate();
    assert!(applied, "the giornale was not applied");

    // Flows in IUF order: the first credited 1.00 too much, the second through a mangled
    // causale (still found), the third never credited.
    let mut by_iuf = flows.clone();
    by_iuf.sort_by(|a, b| a["iuf"].as_str().cmp(&b["iuf"].as_str()));
    let count = |f: &serde_json::Value| f["payments"].as_i64().unwrap();
    let later =
        chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap() + chrono::Duration::days(10);
    let summary = &reconcile(&home, &["--at", &format!("{later}T12:00:00Z")])[0];
    let classes = &summary["classes"];
    assert_eq!(classes["IUF_TES_DIV_IMP"], count(&by_iuf[0]), "{summary}");
    assert_eq!(classes["RT_IUF_TES"], count(&by_iuf[1]), "{summary}");
    assert_eq!(classes["IUF_NO_TES"], count(&by_iuf[2]), "{summary}");
    assert_eq!(classes["TES_NO_IUF_OR_IUV"], 1, "{summary}");
    assert!(classes.get("TES_NO_MATCH").is_none(), "{summary}");
}

#[test]
fn a_reported_payment_the_hub_never_received_is_iuv_no_rt() {
    let Pulled {
        home,
        _psps,
        _scratch,
        ..
    } = pulled(true);

    // The flows' NO_RECEIPT row (esito 0, an IUR the hub never received) is reported but not
    // paid; rows paid without a payment request (esito 8, 9) count as their own receipt.
    let items = reconcile(&home, &["--class", "IUV_NO_RT"]);
    assert!(!items.is_empty());
    for i in &items {
        assert_eq!(i["paid_cents"], serde_json::Value::Null, "{i}");
        assert!(i["reported_cents"].is_i64(), "{i}");
    }
    let shown = json_lines(&home.snodo(&[
        "reports",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--anomalies",
    ]));
    let no_receipt: usize = shown
        .iter()
        .filter(|f| f.get("superseded_by").is_none())
        .map(|f| {
            let iuf = f["iuf"].as_str().unwrap();
            let d = json_lines(&home.snodo(&[
                "reports",
                "-c",
                "config.toml",
                "show",
                "--entity",
                "c_g224",
                iuf,
            ]));
            let current = d.iter().find(|x| x.get("superseded_by").is_none()).unwrap();
            current["anomaly_list"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["code"] == "NO_RECEIPT")
                .count()
        })
        .sum();
    assert_eq!(items.len(), no_receipt, "{items:?}");
    let summary = &reconcile(&home, &[])[0];
    assert!(summary["payments"].as_i64().unwrap() >= 30, "{summary}");
}
