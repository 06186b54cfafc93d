//! Reloading the configuration of a running hub (docs/ADHESION.md): an entity and its intake
//! added, a pipeline removed, another changed, while the simulated node verifies notices at a
//! steady rate — not one call fails or is slow; a broken configuration is refused with the
//! words of `snodo validate` and the running one stays; SIGHUP reloads too. And an entity's
//! lifecycle: pre-production answered only on its test station, live only on the broker's,
//! suspended refused with its intakes paused until it is live again.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "reload-test-admin-token-0123456789abcdef";
const TEST_STATION: &str = "80007580279_90";

/// `snodo reload`: whether it succeeded, and the hub's answer.
fn reload(home: &Home) -> (bool, serde_json::Value) {
    let o = Command::new(BIN)
        .args(["reload", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_ADMIN_TOKEN", TOKEN)
        .env("SNODO_LOG", "warn")
        .output()
        .expect("run snodo reload");
    let answer = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    (o.status.success(), answer)
}

/// The `[[pipelines]]` block named `name`, as a byte range of `cfg`.
fn block(cfg: &str, name: &str) -> std::ops::Range<usize> {
    let at = cfg
        .find(&format!("name = \"{name}\""))
        .unwrap_or_else(|| panic!("no pipeline {name}"));
    let start = cfg[..at].rfind("[[pipelines]]").unwrap();
    let end = cfg[at..]
        .find("[[pipelines]]")
        .map_or(cfg.len(), |e| at + e);
    start..end
}

/// An 11-digit fiscal code with its check digit.
fn entity_fiscal_code(base: &str) -> String {
    let sum: u32 = base
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                d
            } else if d * 2 > 9 {
                d * 2 - 9
            } else {
                d * 2
            }
        })
        .sum();
    format!("{base}{}", (10 - sum % 10) % 10)
}

/// `<fiscal code>;<notice>` lines of Padova's positions, for `snodo sim --notices`.
fn notices_file(home: &Home) -> std::path::PathBuf {
    let lines: Vec<String> = home
        .positions(&["--limit", "1000"])
        .iter()
        .filter_map(|p| p["notice_number"].as_str().map(|n| format!("{PADOVA};{n}")))
        .collect();
    assert!(!lines.is_empty());
    let path = home.path().join("notices.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
}

fn flows_of(home: &Home, entity: &str) -> Vec<serde_json::Value> {
    json_lines(&home.snodo(&["flows", "-c", "config.toml", "--entity", entity]))
}

/// The flow files waiting in an intake's folder.
fn waiting(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".zip")
        })
        .count()
}

fn drop_flow(dir: &Path, entity: &str, iuf: &str, rows: &[Row]) {
    std::fs::create_dir_all(dir).unwrap();
    let stage = tempfile::tempdir().unwrap();
    let zip = write_zip(
        stage.path(),
        &format!("{entity}-{iuf}-1_4"),
        csv_text(rows).as_bytes(),
    );
    std::fs::rename(&zip, dir.join(zip.file_name().unwrap())).unwrap();
}

#[test]
fn a_reload_applies_a_new_configuration_while_the_node_is_answered() {
    let home = Home::new();
    let rows: Vec<Row> = (0..20)
        .map(|n| Row::tari(&format!("RL{n:02}"), 100 + n, 5_000))
        .collect();
    home.import_rows("RELOAD1", &rows);
    let notices = notices_file(&home);
    let hub = Hub::start_serving_with_env(&home, &[("SNODO_ADMIN_TOKEN", TOKEN)]);

    // The node verifies at 100 calls a second for 12 seconds, across every reload below.
    let sim = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--verify-only", "--rate", "100"])
        .args([
            "--count",
            "100000",
            "--duration",
            "12s",
            "--concurrency",
            "16",
        ])
        .args(["--timeout", "10", "--no-ledger", "--notices"])
        .arg(&notices)
        .current_dir(home.path())
        .env("SNODO_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // A new entity with its intake; Feltre's intake removed; the Region's on another schedule.
    let original = std::fs::read_to_string(home.config()).unwrap();
    let mut cfg = original.clone();
    let feltre = block(&cfg, "feltre-dovuti-in");
    cfg.replace_range(feltre, "");
    let veneto = block(&cfg, "veneto-dovuti-in");
    let changed = cfg[veneto.clone()].replace("\"* * * * * *\"", "\"*/2 * * * * *\"");
    assert_ne!(changed, cfg[veneto.clone()]);
    cfg.replace_range(veneto, &changed);
    let first = cfg.find("[[pipelines]]").unwrap();
    let code = entity_fiscal_code("0012345678");
    cfg.insert_str(
        first,
        &format!(
            r#"[[entities]]
ipa_code = "c_z999"
fiscal_code = "{code}"
name = "Comune di Prova"
segregation_code = "04"

  [[entities.debt_types]]
  code = "TARI"
  description = "Tassa sui rifiuti"
  iban = "IT95O0306911884000100012345"
  taxonomy = "9/0101100IM/"
  due_date_required = true

"#
        ),
    );
    cfg.push_str(
        r#"
[[pipelines]]
name = "prova-dovuti-in"
entity = "c_z999"
from = { connector = "dir", path = "var/c_z999/in", schedule = "* * * * * *", settle = "0s" }
decode = "mypay-import"
to = "registry"
outcomes = { connector = "dir", path = "var/c_z999/out" }
"#,
    );
    std::fs::write(home.config(), &cfg).unwrap();
    let (ok, answer) = reload(&home);
    assert!(ok, "{answer}");
    assert_eq!(answer["outcome"], "applied", "{answer}");
    let diff = &answer["diff"];
    assert_eq!(
        diff["entities"]["added"],
        serde_json::json!(["c_z999"]),
        "{answer}"
    );
    assert_eq!(
        diff["debt_types"]["added"],
        serde_json::json!(["c_z999/TARI"])
    );
    assert_eq!(
        diff["pipelines"]["added"],
        serde_json::json!(["prova-dovuti-in"])
    );
    assert_eq!(
        diff["pipelines"]["removed"],
        serde_json::json!(["feltre-dovuti-in"])
    );
    assert_eq!(
        diff["pipelines"]["changed"],
        serde_json::json!(["veneto-dovuti-in"])
    );
    assert_eq!(answer["not_started"], serde_json::json!([]));

    // The new intake imports; the removed one leaves its folder alone.
    let prova_rows: Vec<Row> = (0..3)
        .map(|n| Row::tari(&format!("PR{n}"), 200 + n, 1_000))
        .collect();
    drop_flow(
        &home.path().join("var/c_z999/in"),
        "c_z999",
        "PROVA1",
        &prova_rows,
    );
    let feltre_in = home.path().join("var/c_d530/in");
    drop_flow(&feltre_in, "c_d530", "FELTRE1", &rows[..2]);
    assert!(
        wait_for(15, || flows_of(&home, "c_z999").iter().any(|f| f["status"]
            == "IMPORT_ESEGUITO"
            || f["status"] == "done")),
        "the added pipeline did not import: {:?}",
        flows_of(&home, "c_z999")
    );
    assert!(
        flows_of(&home, "c_d530").is_empty(),
        "the removed pipeline still runs"
    );
    assert_eq!(waiting(&feltre_in), 1);

    // A broken configuration: refused with validate's words; the running one stays.
    let broken = cfg.replace("IT95O0306911884000100012345", "IT00X0306911884000100012345");
    std::fs::write(home.config(), &broken).unwrap();
    let validate = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(!validate.status.success());
    let (ok, answer) = reload(&home);
    assert!(!ok, "{answer}");
    assert_eq!(answer["outcome"], "refused", "{answer}");
    let problems: Vec<String> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let said: Vec<String> = stdout(&validate).lines().map(str::to_string).collect();
    assert!(!problems.is_empty());
    assert_eq!(problems, said, "the same problems as snodo validate");

    // SIGHUP: the original configuration again (the test entity and its intake go).
    std::fs::write(home.config(), &original).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &hub.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_for(10, || store_events(&home, "hub.reloaded").len() == 2),
        "SIGHUP did not reload"
    );
    let last = store_events(&home, "hub.reloaded").pop().unwrap();
    assert_eq!(
        last.payload["diff"]["pipelines"]["added"],
        serde_json::json!(["feltre-dovuti-in"])
    );
    assert_eq!(
        last.payload["diff"]["entities"]["removed"],
        serde_json::json!(["c_z999"])
    );
    // Secrets are never in the event: only names.
    assert!(!last.payload.to_string().contains("demo-key"));
    // Feltre's intake is back and takes the flow that waited.
    assert!(
        wait_for(15, || !flows_of(&home, "c_d530").is_empty()),
        "Feltre's intake did not come back"
    );

    let out = sim.wait_with_output().unwrap();
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    let line = report
        .lines()
        .find(|l| l.starts_with("paVerifyPaymentNotice "))
        .unwrap_or_else(|| panic!("no verify line:\n{report}"));
    eprintln!("{line}");
    let calls: u64 = field(line, "calls").unwrap().parse().unwrap();
    assert!(calls >= 800, "{line}");
    assert_eq!(
        field(line, "ok"),
        Some(calls.to_string().as_str()),
        "{line}"
    );
    assert_eq!(field(line, "err"), Some("0"), "{line}");
    let p99: f64 = field(line, "p99_ms").unwrap().parse().unwrap();
    assert!(p99 < 100.0, "p99 {p99} ms during reloads: {line}");
    hub.terminate();
}

fn verify(home: &Home, station: &str, notice: &str) -> Option<String> {
    let answer = post_soap(
        home.port,
        "paVerifyPaymentNotice",
        &verify_body(PADOVA, BROKER, station, notice),
    );
    fault_of(&answer)
}

fn set_state(home: &Home, original: &str, state: &str) {
    let cfg = original.replacen(
        "name = \"Comune di Padova\"\n",
        &format!(
            "name = \"Comune di Padova\"\nstate = \"{state}\"\ntest_stations = [\"{TEST_STATION}\"]\n"
        ),
        1,
    );
    assert_ne!(cfg, original);
    std::fs::write(home.config(), cfg).unwrap();
}

#[test]
fn an_entity_goes_from_pre_production_to_live_and_is_suspended_and_resumed() {
    let home = Home::new();
    home.import_rows("LIFE1", &[Row::tari("LIFE-1", 300, 2_500)]);
    let notice = home.positions(&["--iud", "LIFE-1"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let original = std::fs::read_to_string(home.config()).unwrap();
    set_state(&home, &original, "pre-production");
    let hub = Hub::start_serving_with_env(&home, &[("SNODO_ADMIN_TOKEN", TOKEN)]);

    // Only the admin token reloads: another secret is refused, and nothing is reloaded.
    let (code, _) = admin_call(
        home.port,
        "not-the-admin-token-0123456789abcdef",
        "POST",
        "/admin/reload",
    );
    assert_eq!(code, "401");
    assert_eq!(
        admin_call(home.port, KEY_PADOVA, "POST", "/admin/reload").0,
        "401",
        "an entity's API key is no admin token"
    );
    assert!(store_events(&home, "hub.reloaded").is_empty());

    // Pre-production: its test station only.
    assert_eq!(verify(&home, TEST_STATION, &notice), None);
    assert_eq!(
        verify(&home, STATION, &notice).as_deref(),
        Some("PAA_STAZIONE_INT_ERRATA")
    );

    // Live: the reverse.
    set_state(&home, &original, "live");
    assert!(reload(&home).0);
    assert_eq!(verify(&home, STATION, &notice), None);
    assert_eq!(
        verify(&home, TEST_STATION, &notice).as_deref(),
        Some("PAA_STAZIONE_INT_ERRATA")
    );

    // Suspended: refused as a creditor the broker does not serve; its intake waits.
    set_state(&home, &original, "suspended");
    let (ok, answer) = reload(&home);
    assert!(ok, "{answer}");
    assert_eq!(
        verify(&home, STATION, &notice).as_deref(),
        Some("PAA_ID_DOMINIO_ERRATO")
    );
    let inbox = home.path().join("var/c_g224/in");
    drop_flow(
        &inbox,
        "c_g224",
        "LIFE2",
        &[Row::tari("LIFE-2", 301, 2_500)],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(waiting(&inbox), 1, "the intake ran");
    assert!(home.positions(&["--iud", "LIFE-2"]).is_empty());

    // Live again: answered, and the waiting flow is imported.
    set_state(&home, &original, "live");
    assert!(reload(&home).0);
    assert_eq!(verify(&home, STATION, &notice), None);
    assert!(
        wait_for(15, || !home.positions(&["--iud", "LIFE-2"]).is_empty()),
        "the intake did not resume"
    );
    hub.terminate();
}
