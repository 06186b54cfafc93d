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
    let rows: Vec<Row> = (0..30)
        .map(|n| Row::tari(&format!("FDR{n:03}"), 1000 + n, 1000 + u64::from(n) * 7))
        .collect();
    pulled_rows(anomalies, &rows)
}

fn pulled_rows(anomalies: bool, rows: &[Row]) -> Pulled {
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger");
    let home = sim_paid_home_rows(&ledger, rows);
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
    let flows = current_flows(&home);
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
    let book = |id: &str, cents: i64, causale: &str| book_movement(&home, id, cents, causale);
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
    // The API says what the CLI says (the CLI first: it relabels what the hub has not yet).
    let cli_summary = &reconcile(&home, &[])[0];
    let api_summary = get(
        home.port,
        "/api/v1/entities/c_g224/reconciliation/summary",
        KEY_PADOVA,
    )
    .json();
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
    home.append_config(PADOVA_TREASURY_INTAKE);
    let flows: Vec<serde_json::Value> =
        json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    assert_eq!(flows.len(), 3, "one flow per simulated PSP: {flows:?}");

    let (out, giornale) = publish_treasury(&home, &ledger, &date);
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

/// Rows of a MyPivot export CSV (every field quoted, `\` escapes, CRLF) by column name.
/// Padova's accounting books a movement over the API (`PUT …/treasury/{id}`): 201.
fn book_movement(home: &Home, id: &str, cents: i64, causale: &str) {
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
}

/// Padova's settlement flows as `snodo reports` lists them, without superseded revisions.
fn current_flows(home: &Home) -> Vec<serde_json::Value> {
    json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]))
        .into_iter()
        .filter(|f| f.get("superseded_by").is_none())
        .collect()
}

/// The simulated treasurer credits the day's flows (and one unknown movement): its output, and
/// the giornale di cassa it wrote for Padova.
fn publish_treasury(
    home: &Home,
    ledger: &std::path::Path,
    date: &str,
) -> (String, std::path::PathBuf) {
    let out = stdout(&run_sim(
        home,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--publish-treasury",
            "--date",
            date,
            "--anomalies",
        ],
    ));
    let giornale = std::fs::read_dir(ledger.join("treasury").join(PADOVA))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (out, giornale)
}

fn export_rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let split = |line: &str| -> Vec<String> {
        let inner = line.strip_prefix('"').and_then(|l| l.strip_suffix('"'));
        inner
            .unwrap_or(line)
            .split("\";\"")
            .map(|f| f.replace("\\\"", "\"").replace("\\\\", "\\"))
            .collect()
    };
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header = split(lines.next().expect("a header"));
    lines
        .map(|l| {
            let cells = split(l);
            assert_eq!(cells.len(), header.len(), "{l}");
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

fn cents(text: &str) -> i64 {
    let v: f64 = text
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an amount"));
    (v * 100.0).round() as i64
}

/// One generated day in which every MyPivot class appears: the simulated node pays, the PSPs
/// publish flows with every anomaly, the treasurer credits them (one wrong amount, one mangled
/// causale, one never), the entity sends its notifications (one of another amount, one of a
/// notice never paid), the accounting office books an old per-payment credit and a transfer of
/// no pagoPA payment; two late payments are never reported. The hub labels each item as the
/// definitions say, and the scheduled 1.4 export carries them, column by column.
#[test]
fn every_class_appears_and_the_export_carries_it() {
    let Pulled {
        home,
        ledger,
        date,
        _psps,
        _scratch,
    } = pulled(true);
    // Three more notices: two paid after the flows were published, one never paid.
    home.import_rows(
        "EXTRA",
        &[
            Row::tari("LATE1", 900, 4_200),
            Row::tari("LATE2", 901, 4_300),
            Row::tari("UNPAID", 902, 4_400),
        ],
    );
    let position = |iud: &str| home.positions(&["--iud", iud])[0].clone();
    let (late1, late2, unpaid) = (position("LATE1"), position("LATE2"), position("UNPAID"));
    let notices = _scratch.path().join("late.txt");
    std::fs::write(
        &notices,
        format!(
            "{PADOVA};{}\n{PADOVA};{}\n",
            late1["notice_number"].as_str().unwrap(),
            late2["notice_number"].as_str().unwrap()
        ),
    )
    .unwrap();
    let hub = Hub::start_serving(&home);
    let late_ledger = _scratch.path().join("late-ledger");
    let paid = stdout(&run_sim(
        &home,
        &[
            "-c",
            "config.toml",
            "--notices",
            notices.to_str().unwrap(),
            "--ledger",
            late_ledger.to_str().unwrap(),
        ],
    ));
    assert!(paid.contains("completed=2 faulted=0"), "{paid}");
    hub.terminate();

    home.append_config(PADOVA_TREASURY_INTAKE);
    home.append_config(
        r#"
[[pipelines]]
name = "padova-pagati"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/pagati", schedule = "* * * * * *", settle = "0s" }
decode = "mypivot-import-pagati"
to = "reconciliation"

[[pipelines]]
name = "padova-riconciliazione"
entity = "c_g224"
from = "reconciliation"
encode = { codec = "mypivot-export", version = "1.4" }
batch = { schedule = "* * * * * *", skip_empty = true }
to = { connector = "dir", path = "var/c_g224/riconciliazione" }
"#,
    );
    let (_, giornale) = publish_treasury(&home, &ledger, &date);
    let inbox = home.path().join("var/c_g224/tesoreria");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(&giornale, inbox.join(giornale.file_name().unwrap())).unwrap();

    // The entity's notifications: the first ten paid notices as paid, one with another amount,
    // and the notice never paid. The others (and the late ones) are paid but not notified.
    let paid_positions: Vec<serde_json::Value> = home
        .positions(&["--limit", "1000"])
        .into_iter()
        .filter(|p| p["iud"].as_str().is_some_and(|i| i.starts_with("FDR")))
        .collect();
    let line = |iud: &str, iuv: &str, cents: i64| {
        format!(
            "{iud};{iuv};F;RSSMRA85T10A562S;Mario Rossi;;;;;;;;{date};{}.{:02};;TARI;PO;TARI;9/0101100IM/;\n",
            cents / 100,
            cents % 100
        )
    };
    let mut csv = String::from("IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovutoPagato;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio\n");
    for (n, p) in paid_positions.iter().take(10).enumerate() {
        let amount = p["amount_cents"].as_i64().unwrap();
        let amount = if n == 9 { amount + 50 } else { amount };
        csv.push_str(&line(
            p["iud"].as_str().unwrap(),
            p["iuv"].as_str().unwrap(),
            amount,
        ));
    }
    csv.push_str(&line(
        "UNPAID",
        unpaid["iuv"].as_str().unwrap(),
        unpaid["amount_cents"].as_i64().unwrap(),
    ));
    let pagati = home.path().join("var/c_g224/pagati");
    std::fs::create_dir_all(&pagati).unwrap();
    write_zip(&pagati, "c_g224-PAGATI1-1_0", csv.as_bytes());

    let hub = Hub::start_serving(&home);
    let applied = wait_for(20, || {
        json_lines(&home.snodo(&["treasury", "-c", "config.toml", "--entity", "c_g224"])).len() == 3
            && std::fs::read_dir(&pagati).is_ok_and(|d| {
                d.filter_map(|e| e.ok())
                    .all(|e| e.file_name() == "processed" || e.path().is_dir())
            })
    });
    assert!(
        applied,
        "the giornale and the notifications were not applied"
    );
    let book = |id: &str, cents: i64, causale: &str| book_movement(&home, id, cents, causale);
    // An old per-payment credit of the first late payment, and a transfer of no pagoPA payment.
    let late1_cents = late1["amount_cents"].as_i64().unwrap();
    book(
        "2026-801",
        late1_cents,
        &format!(
            "/RFB/{}/{}.{:02}/TXT/TARI",
            late1["iuv"].as_str().unwrap(),
            late1_cents / 100,
            late1_cents % 100
        ),
    );
    book("2026-802", 12_345, "BONIFICO DA PRIVATO");

    // Ten days on, every grace period is over.
    let later =
        chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap() + chrono::Duration::days(10);
    let at = format!("{later}T12:00:00Z");
    let summary = &reconcile(&home, &["--at", &at])[0];
    let classes = &summary["classes"];
    // MyPivot's 14 classes.
    for class in snodo_adapters::mypivot::export::CLASSES {
        assert!(
            classes[class].as_i64().unwrap_or(0) >= 1,
            "{class} missing: {summary}"
        );
    }
    assert!(classes.get("PENDING").is_none(), "{summary}");
    // A rebuild from scratch labels every item as the marks did, one by one.
    let rebuilt = json_lines(&home.snodo(&[
        "reconcile",
        "-c",
        "config.toml",
        "rebuild",
        "--entity",
        "c_g224",
        "--at",
        &at,
    ]));
    assert_eq!(&rebuilt[0], summary);

    let of = |class: &str| reconcile(&home, &["--class", class]);
    let key_of = |p: &serde_json::Value| p["iuv"].as_str().unwrap().to_string();
    // The per-payment credit: paid, no flow, credited by IUV with the receipt's total.
    let rt_tes = of("RT_TES");
    assert_eq!(rt_tes.len(), 1, "{rt_tes:?}");
    assert_eq!(rt_tes[0]["iuv"], key_of(&late1).as_str());
    assert_eq!(rt_tes[0]["credited_by_iuv_cents"], late1_cents);
    // The other late payment waits for a flow that never comes.
    let rt_no_iuf: Vec<String> = of("RT_NO_IUF").iter().map(key_of).collect();
    assert!(rt_no_iuf.contains(&key_of(&late2)), "{rt_no_iuf:?}");
    // Notified as paid: IUD_RT_IUF for each; the other amount and the unpaid notice are not.
    let first_nine: Vec<&str> = paid_positions[..9]
        .iter()
        .map(|p| p["iud"].as_str().unwrap())
        .collect();
    let notified: Vec<serde_json::Value> = of("IUD_RT_IUF");
    assert!(!notified.is_empty());
    for i in &notified {
        assert_eq!(i["notified_cents"], i["paid_cents"], "{i}");
        assert!(first_nine.contains(&i["iud"].as_str().unwrap()), "{i}");
    }
    let iud_no_rt = of("IUD_NO_RT");
    let iuds: Vec<&str> = iud_no_rt.iter().filter_map(|i| i["iud"].as_str()).collect();
    assert!(iuds.contains(&"UNPAID"), "{iud_no_rt:?}");
    assert!(
        iuds.contains(&paid_positions[9]["iud"].as_str().unwrap()),
        "{iud_no_rt:?}"
    );
    let not_notified = of("RT_NO_IUD");
    assert!(
        not_notified.iter().all(|i| i["iud"].is_null()),
        "{not_notified:?}"
    );
    let not_notified: Vec<String> = not_notified.iter().map(key_of).collect();
    assert!(not_notified.contains(&key_of(&late2)), "{not_notified:?}");
    // The same payment reported as executed and as paid without request.
    let doppi = of("DOPPI");
    assert!(
        doppi.iter().all(|i| i["reported_cents"].is_i64()),
        "{doppi:?}"
    );
    let no_match = of("TES_NO_MATCH");
    assert_eq!(no_match.len(), 1);
    assert_eq!(no_match[0]["movement"], "2026-802");

    // The export: one row per class of each item relabelled, every block where it applies.
    let out = home.path().join("var/c_g224/riconciliazione");
    let mut rows = Vec::new();
    let exported = wait_for(20, || {
        // In the order the files were written.
        let mut files: Vec<_> = std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".zip"))
                    .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        rows = files
            .iter()
            .flat_map(|(_, path)| export_rows(&unzip_text(path)))
            .collect();
        rows.iter()
            .any(|r| r["classificazioneCompletezza"] == "IUF_NO_TES")
    });
    assert!(
        exported,
        "no export with the relabelled items: {} rows",
        rows.len()
    );
    hub.terminate();
    // Files written once the entity sends notifications have their block (141 columns);
    // those before, 120.
    for r in &rows {
        let notified = r["classificazioneCompletezza"].starts_with("IUD_")
            || r["classificazioneCompletezza"] == "RT_NO_IUD";
        assert!(
            r.len() == 141 || (!notified && r.len() == 120),
            "{}",
            r.len()
        );
    }
    // MyPivot's 14 classes.
    for class in snodo_adapters::mypivot::export::CLASSES {
        let items = of(class);
        let mut checked = 0;
        for item in items.iter().take(3) {
            // The newest file's row: an item relabelled again is in a later file.
            let row = rows
                .iter()
                .rev()
                .filter(|r| r["classificazioneCompletezza"] == class)
                .find(|r| match item["kind"].as_str().unwrap() {
                    "movement" => {
                        cents(&r["numImportoTesoreria"]) == item["movement_cents"].as_i64().unwrap()
                            && !r["deCausaleT"].is_empty()
                            && r["codEDatiPagIdUnivocoVersamentoE"].is_empty()
                            && r["codIdentificativoFlussoR"].is_empty()
                    }
                    "notification" => r.get("codIudI").map(String::as_str) == item["iud"].as_str(),
                    // A payment: its IUR on the receipt's side or the flow's, else its IUV.
                    _ => match item["iur"].as_str() {
                        Some(iur) => {
                            r["codEDatiPagDatiSingPagIdUnivocoRiscossE"] == iur
                                || r["codDatiSingPagamIdentificativoUnivocoRiscossioneR"] == iur
                        }
                        None => {
                            r.get("codRpSilinviarpIdUnivocoVersamentoI")
                                .map(String::as_str)
                                == item["iuv"].as_str()
                        }
                    },
                })
                .unwrap_or_else(|| panic!("{class}: no export row for {item}"));
            if let Some(paid) = item["paid_cents"]
                .as_i64()
                .filter(|_| item["receipt"].is_i64())
            {
                assert_eq!(
                    cents(&row["numEDatiPagDatiSingPagSingoloImportoPagatoE"]),
                    paid,
                    "{class} {item}"
                );
            }
            if let Some(reported) = item["reported_cents"].as_i64() {
                assert_eq!(
                    row["codIdentificativoFlussoR"],
                    item["iuf"].as_str().unwrap()
                );
                assert_eq!(
                    cents(&row["numDatiSingPagamSingoloImportoPagatoR"]),
                    reported,
                    "{class} {item}"
                );
            } else {
                assert_eq!(row["codIdentificativoFlussoR"], "", "{class} {item}");
            }
            match item["iud"].as_str() {
                Some(iud) => assert_eq!(row["codIudI"], iud, "{class} {item}"),
                None => assert!(
                    row.get("codIudI").is_none_or(|i| i.is_empty()),
                    "{class} {item}"
                ),
            }
            if class == "RT_TES" {
                assert_eq!(cents(&row["numImportoTesoreria"]), late1_cents);
            }
            checked += 1;
        }
        assert!(checked > 0, "{class}");
    }
}

/// A notice of Padova that also pays Feltre (a secondary beneficiary): Feltre's flow row is
/// Padova's receipt's transfer to Feltre, so Feltre's payment is paid and reported, not a
/// report of a payment never made.
#[test]
fn a_secondary_beneficiary_s_payment_is_paid_by_the_notice_entity_s_receipt() {
    let rows: Vec<Row> = (0..6)
        .map(|n| {
            let row = Row::tari(&format!("SEC{n:03}"), 1000 + n, 1000 + u64::from(n) * 7);
            if n % 2 == 1 {
                return row;
            }
            row.set(21, "true")
                .set(22, "00133880252")
                .set(23, "Comune di Feltre")
                .set(24, "IT95O0306911884000100012345")
                .set(31, "9/0101100IM/")
                .set(32, "Quota TARI Comune di Feltre")
                .set(33, "1.00")
        })
        .collect();
    let Pulled {
        home,
        _psps,
        _scratch,
        ..
    } = pulled_rows(false, &rows);
    let feltre = |extra: &[&str]| {
        let mut args = vec!["reconcile", "-c", "config.toml", "--entity", "c_d530"];
        args.extend_from_slice(extra);
        json_lines(&home.snodo(&args))
    };
    let summary = &feltre(&[])[0];
    assert_eq!(summary["payments"], 3, "{summary}");
    assert_eq!(summary["classes"]["RT_IUF"], 3, "{summary}");
    assert!(summary["classes"].get("IUV_NO_RT").is_none(), "{summary}");
    for item in feltre(&["--class", "RT_IUF"]) {
        assert_eq!(item["paid_cents"], 100, "{item}");
        assert_eq!(item["reported_cents"], 100, "{item}");
        assert!(item["receipt"].is_i64(), "{item}");
    }
    // Padova's own payments are its transfers, not the whole receipts.
    let padova = &reconcile(&home, &[])[0];
    assert_eq!(padova["payments"], 6, "{padova}");
    assert_eq!(padova["classes"]["RT_IUF"], 6, "{padova}");
}

/// Labels follow as things arrive, without a scan: a movement crediting one flow relabels that
/// flow's payments and the movement — each a `reconciliation.changed` event — and no other item;
/// the running hub does it on its own within a few seconds, and `/metrics` counts per class.
#[test]
fn a_new_movement_relabels_only_what_it_credits() {
    let Pulled {
        home,
        _psps,
        _scratch,
        ..
    } = pulled(false);
    let flows = current_flows(&home);
    let flow = &flows[0];
    let payments = flow["payments"].as_i64().unwrap();
    let labelled = &reconcile(&home, &[])[0];
    assert_eq!(labelled["classes"]["RT_IUF"], 30, "{labelled}");

    let db = home.path().join("var/snodo.db");
    let changed = || {
        use snodo_store::EventStore;
        let store = snodo_store::SqliteStore::open(&db).unwrap();
        let events = store.events_after(0, 100_000).unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == "reconciliation.changed")
            .map(|e| e.subject)
            .collect::<Vec<String>>()
    };
    let before = changed().len();
    let hub = Hub::start_serving(&home);
    let body = serde_json::json!({
        "amountCents": flow["declared"]["amount_cents"],
        "causale": format!("/PUR/LGPE-RIVERSAMENTO/URI/{}", flow["iuf"].as_str().unwrap()),
    })
    .to_string();
    let r = http(
        home.port,
        "PUT",
        "/api/v1/entities/c_g224/treasury/2026-77",
        Some(KEY_PADOVA),
        &[],
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let relabelled = wait_for(10, || {
        let s = get(
            home.port,
            "/api/v1/entities/c_g224/reconciliation/summary",
            KEY_PADOVA,
        )
        .json();
        s["classes"]["RT_IUF_TES"].as_i64() == Some(payments)
    });
    assert!(
        relabelled,
        "the hub did not relabel the credited flow's payments"
    );
    let metrics = http(home.port, "GET", "/metrics", None, &[], None).body;
    assert!(
        metrics.contains(&format!(
            "snodo_reconciliation_items{{entity=\"c_g224\",class=\"RT_IUF_TES\"}} {payments}"
        )),
        "{metrics}"
    );
    let events = changed();
    hub.terminate();
    let new: Vec<&String> = events[before..].iter().collect();
    // The credited flow's payments (RT_IUF_TES added) and the movement (a new item), only.
    assert_eq!(new.len() as i64, payments + 1, "{new:?}");
    assert!(new.iter().any(|k| *k == "M:2026-77"), "{new:?}");
    let credited = reconcile(&home, &["--class", "RT_IUF_TES"]);
    for k in new.iter().filter(|k| k.starts_with("P:")) {
        assert!(credited.iter().any(|i| &i["key"] == *k), "{k}");
    }

    // The treasurer reverses the credit (STORNATO): the movement goes, and the labels follow.
    let hub = Hub::start_serving(&home);
    let r = http(
        home.port,
        "DELETE",
        "/api/v1/entities/c_g224/treasury/2026-77",
        Some(KEY_PADOVA),
        &[],
        None,
    );
    assert!(
        r.status == 204 || r.status == 200,
        "{} {}",
        r.status,
        r.body
    );
    let back = wait_for(10, || {
        let s = get(
            home.port,
            "/api/v1/entities/c_g224/reconciliation/summary",
            KEY_PADOVA,
        )
        .json();
        s["classes"].get("RT_IUF_TES").is_none() && s["movements"] == 0
    });
    hub.terminate();
    assert!(back, "the reversal was not followed");
}
