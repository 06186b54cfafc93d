//! Settlement flows handed to the entity: the simulated PSPs publish flows for 40 payments
//! (with `--anomalies`: a republished revision, a revoked row, a wrong total...), the hub pulls
//! them, and its reports pipelines deliver each flow revision once through the outbox — as
//! FlussoRiversamento XML files to a folder (valid against the node's XSD) and as `fdr-json`
//! to the entity's HTTP endpoint — while the API serves the same documents by IUF.

mod common;
use common::*;
use std::path::Path;

const PAYMENTS: u32 = 40;

fn xsd() -> std::path::PathBuf {
    repo().join("adapters/specs/fdr/pagopa-fdr-nodo-dei-pagamenti/FlussoRiversamento_1_0_4.xsd")
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn reports_pipelines_deliver_each_flow_revision_once_and_the_api_serves_the_same_documents() {
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger");
    let home = sim_paid_home(&ledger, PAYMENTS);
    let date = sim_ledger_date(&ledger);
    run_sim(
        &home,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--publish-flows",
            "--date",
            &date,
            "--anomalies",
        ],
    );
    let port = free_port();
    let _psps = SimPsps::serve(&home, &ledger, port);
    let (receiver, received) = accepting_receiver();
    let out = scratch.path().join("fdr-out");
    std::fs::create_dir_all(&out).unwrap();

    home.append_config(&sim_fdr_table(port));
    home.append_config(&format!(
        r#"
[[pipelines]]
name = "padova-fdr-files"
entity = "c_g224"
from = "reports"
encode = "fdr-xml"
to = {{ connector = "dir", path = "{out}" }}

[[pipelines]]
name = "padova-fdr-push"
entity = "c_g224"
from = "reports"
encode = "fdr-json"
to = {{ connector = "http", url = "http://127.0.0.1:{receiver}/fdr" }}
"#,
        out = out.display()
    ));

    let pulled = json_lines(&home.snodo(&["reports", "-c", "config.toml", "pull"]));
    let stored: i64 = pulled.iter().map(|s| s["stored"].as_i64().unwrap()).sum();
    assert!(stored >= 2, "{pulled:?}");
    let listed = json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    assert_eq!(listed.len() as i64, stored, "{listed:?}");

    let hub = Hub::start_serving(&home);
    let all_there = wait_for(30, || {
        files(&out).len() == listed.len() && received.lock().unwrap().len() == listed.len()
    });
    assert!(
        all_there,
        "one delivery per flow revision on each pipeline: {:?} files, {} pushed, {} flows",
        files(&out),
        received.lock().unwrap().len(),
        listed.len()
    );

    // Each revision once, named by IUF, PSP and revision; every file valid against the XSD.
    let mut expected: Vec<String> = listed
        .iter()
        .map(|f| {
            format!(
                "{}.{}.r{}.xml",
                f["iuf"].as_str().unwrap(),
                f["psp"].as_str().unwrap(),
                f["revision"]
            )
        })
        .collect();
    expected.sort();
    assert_eq!(files(&out), expected);
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(xsd())
        .args(expected.iter().map(|f| out.join(f)))
        .output()
        .expect("xmllint (ops/setup.sh installs libxml2-utils)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    // The pushed reports: keyed for the receiver's dedupe, and exactly what the API serves.
    let pushed = received.lock().unwrap().clone();
    let mut keys: Vec<&str> = pushed.iter().map(|(_, k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), listed.len(), "{keys:?}");
    let api = home.port;
    let mut linked = 0;
    let mut mismatches = 0;
    for f in &listed {
        let (iuf, psp, rev) = (
            f["iuf"].as_str().unwrap(),
            f["psp"].as_str().unwrap(),
            f["revision"].as_i64().unwrap(),
        );
        let key = format!("{psp}/{iuf}/{rev}");
        let (path, _, body) = pushed
            .iter()
            .find(|(_, k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} not pushed: {keys:?}"));
        assert_eq!(path, "/fdr");
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (
                doc["format"].as_str(),
                doc["iuf"].as_str(),
                doc["revision"].as_i64()
            ),
            (Some("snodo.report.v1"), Some(iuf), Some(rev))
        );
        // A row whose amount differs from its receipt's transfer shows both amounts.
        for a in doc["anomalies"].as_array().unwrap() {
            if a["code"] == "AMOUNT_MISMATCH" {
                let row = &doc["payments"][a["row"].as_u64().unwrap() as usize - 1];
                assert!(row["receipt"].is_object(), "{row}");
                assert_ne!(row["receipt"]["amount"], row["amount"], "{row}");
                mismatches += 1;
            }
        }
        assert_eq!(
            doc["payments"].as_array().unwrap().len() as i64,
            f["payments"].as_i64().unwrap()
        );
        assert_eq!(
            doc["anomalies"].as_array().unwrap().len() as i64,
            f["anomalies"].as_i64().unwrap()
        );
        let one = get(
            api,
            &format!("/api/v1/entities/c_g224/reports/{iuf}?pspId={psp}&revision={rev}"),
            KEY_PADOVA,
        );
        assert_eq!(one.status, 200, "{}", one.body);
        assert_eq!(one.header("content-type"), Some("application/json"));
        assert_eq!(
            &one.body, body,
            "the API and the pipeline give the same report"
        );
        let as_xml = http(
            api,
            "GET",
            &format!("/api/v1/entities/c_g224/reports/{iuf}?pspId={psp}&revision={rev}"),
            Some(KEY_PADOVA),
            &[("Accept", "application/xml")],
            None,
        );
        assert_eq!(as_xml.status, 200, "{}", as_xml.body);
        assert_eq!(as_xml.header("content-type"), Some("application/xml"));
        let file = std::fs::read_to_string(out.join(format!("{iuf}.{psp}.r{rev}.xml"))).unwrap();
        assert_eq!(as_xml.body, file);
        if f.get("superseded_by").is_none() {
            linked += doc["linked"].as_i64().unwrap();
        }
    }
    assert_eq!(linked, i64::from(PAYMENTS), "every payment linked once");
    assert!(
        mismatches >= 1,
        "sim --anomalies puts an amount off its receipt's"
    );

    // Each paid position says where its money was settled: the current flow naming it.
    let current_iufs: Vec<&str> = listed
        .iter()
        .filter(|f| f.get("superseded_by").is_none())
        .map(|f| f["iuf"].as_str().unwrap())
        .collect();
    let one = get(api, "/api/v1/entities/c_g224/positions/FDR000", KEY_PADOVA).json();
    assert_eq!(one["status"], "paid", "{one}");
    assert!(
        current_iufs.contains(&one["settlement"]["iuf"].as_str().unwrap_or_default()),
        "{one}"
    );
    let page = get(
        api,
        "/api/v1/entities/c_g224/positions?limit=500",
        KEY_PADOVA,
    )
    .json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len() as u32, PAYMENTS);
    assert!(
        items
            .iter()
            .all(|p| p["settlement"]["regulationId"].is_string()),
        "{page}"
    );

    // Without pspId and revision: the current revision.
    let republished = listed
        .iter()
        .find(|f| f["revision"] == 2)
        .expect("--anomalies republishes a flow");
    let iuf = republished["iuf"].as_str().unwrap();
    let current = get(
        api,
        &format!("/api/v1/entities/c_g224/reports/{iuf}"),
        KEY_PADOVA,
    );
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.json()["revision"], 2);
    let first = get(
        api,
        &format!("/api/v1/entities/c_g224/reports/{iuf}?revision=1"),
        KEY_PADOVA,
    );
    assert_eq!(first.json()["revision"], 1);

    // Another entity's key, an unknown IUF or PSP, a bad query: refused, and say why.
    let other = get(
        api,
        &format!("/api/v1/entities/c_g224/reports/{iuf}"),
        KEY_FELTRE,
    );
    assert_eq!(other.status, 403, "{}", other.body);
    for (path, status) in [
        ("/api/v1/entities/c_g224/reports/NOPE-1".to_string(), 404),
        (
            format!("/api/v1/entities/c_g224/reports/{iuf}?pspId=NOPSP"),
            404,
        ),
        (
            format!("/api/v1/entities/c_g224/reports/{iuf}?revision=x"),
            400,
        ),
        (format!("/api/v1/entities/c_g224/reports/{iuf}?page=2"), 400),
    ] {
        let r = get(api, &path, KEY_PADOVA);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(
            r.json()["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            r.body
        );
    }

    // Pulling again stores nothing new, so nothing is delivered twice.
    let again = json_lines(&home.snodo(&["reports", "-c", "config.toml", "pull"]));
    assert!(again.iter().all(|s| s["stored"] == 0), "{again:?}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(files(&out).len(), listed.len());
    assert_eq!(received.lock().unwrap().len(), listed.len());
    hub.terminate();
}
