//! Settlement flows end to end with the simulator: the node pays 500 notices at a hub (some
//! of them with a transfer to Feltre, a secondary beneficiary), the PSPs publish their flows
//! (with every anomaly `--anomalies` injects) and serve them as FdR 3 REST and as the legacy
//! nodeForPa SOAP; the hub pulls them, in each mode on its own store, and links every payment
//! (Feltre's rows to Padova's receipts), reports every anomaly once and shows each paid
//! position's flow.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const PAYMENTS: u32 = 500;
/// Every 50th notice also pays 1.00 to Feltre (a secondary beneficiary).
const SHARED: u32 = PAYMENTS / 50;
const PADOVA_FC: &str = "00644060287";
const FELTRE_FC: &str = "00133880252";
/// The entities whose flows are checked: Padova's own, and Feltre's (secondary rows only).
const ENTITIES: [&str; 2] = ["c_g224", "c_d530"];

fn is_shared(n: u32) -> bool {
    n % 50 == 7
}

/// 500 TARI positions of c_g224 (every 50th with 1.00 of it to Feltre) paid by the simulated
/// node, recorded in `ledger`.
fn paid_home(ledger: &Path) -> Home {
    let rows: Vec<Row> = (0..PAYMENTS)
        .map(|n| {
            let row = Row::tari(&format!("FDR{n:03}"), 1000 + n, 1000 + u64::from(n) * 7);
            if !is_shared(n) {
                return row;
            }
            row.set(21, "true")
                .set(22, FELTRE_FC)
                .set(23, "Comune di Feltre")
                .set(24, "IT95O0306911884000100012345")
                .set(31, "9/0101100IM/")
                .set(32, "Quota TARI Comune di Feltre")
                .set(33, "1.00")
        })
        .collect();
    assert_eq!(
        (0..PAYMENTS).filter(|&n| is_shared(n)).count() as u32,
        SHARED
    );
    sim_paid_home_rows(ledger, &rows)
}

/// What the simulator published: (fdr, revision, organization) per flow line, in its order.
fn published(out: &str) -> Vec<(String, i64, String)> {
    let field = |l: &str, k: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {l}"))
            .to_string()
    };
    out.lines()
        .filter(|l| l.starts_with("flow "))
        .map(|l| {
            (
                field(l, "fdr"),
                field(l, "revision").parse().unwrap(),
                field(l, "organization"),
            )
        })
        .collect()
}

/// Pulls every entity in `table`'s mode into `home`'s store, which holds the paid receipts and
/// no flow yet, and checks what the hub holds of Padova's and Feltre's flows against what the
/// simulator published.
fn pull_and_check(
    home: &Home,
    table: &str,
    ledger: &Path,
    flows: &[(String, i64, String)],
    rest: bool,
) {
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(table);
    std::fs::write(home.config(), cfg).unwrap();
    let reports = |args: &[&str]| {
        let mut all = vec!["reports", "-c", "config.toml"];
        all.extend_from_slice(args);
        json_lines(&home.snodo(&all))
    };

    let pulled = reports(&["pull"]);
    assert_eq!(pulled.len(), 3, "every configured entity: {pulled:?}");
    for p in &pulled {
        assert!(p.get("error").is_none(), "{pulled:?}");
        assert_eq!(p["failed"], 0, "{pulled:?}");
    }

    // One current flow per (PSP, IUF); the republished one is revision 2 with its own
    // regulation id (the SOAP list names only the latest revision).
    let listed: Vec<(&str, serde_json::Value)> = ENTITIES
        .iter()
        .flat_map(|e| reports(&["--entity", e]).into_iter().map(move |f| (*e, f)))
        .collect();
    let current: Vec<&(&str, serde_json::Value)> = listed
        .iter()
        .filter(|(_, f)| f.get("superseded_by").is_none())
        .collect();
    let iufs: std::collections::BTreeSet<&str> = flows.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(current.len(), iufs.len(), "{listed:?}");
    assert!(
        current.iter().all(|(_, f)| f["status"] == "ok"),
        "{listed:?}"
    );
    let (republished, _, org) = flows
        .iter()
        .find(|f| f.1 == 2)
        .expect("--anomalies republishes a flow");
    assert_eq!(org, PADOVA_FC, "the first flow settling its own notices");
    let r2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ledger.join(format!("flows/{org}/{republished}.r2.json")))
            .unwrap(),
    )
    .unwrap();
    let regulation_r2 = r2["flow"]["regulation"].as_str().expect("regulation");
    let (_, latest) = current
        .iter()
        .find(|(_, f)| f["iuf"] == republished.as_str())
        .unwrap();
    assert_eq!(latest["regulation"], regulation_r2, "{latest}");
    if rest {
        assert_eq!(latest["revision"], 2);
        let old: Vec<_> = listed
            .iter()
            .filter(|(_, f)| f.get("superseded_by").is_some())
            .collect();
        assert_eq!(old.len(), 1, "revision 1 kept in history: {listed:?}");
        assert_eq!(
            (old[0].1["iuf"].as_str(), old[0].1["revision"].as_i64()),
            (Some(republished.as_str()), Some(1))
        );
    }

    // Every payment linked: Padova's 500 receipts once each (the repeated payment links in one
    // flow only) and Feltre's transfers of the shared ones; Padova's flows also hold the four
    // rows without a receipt and the repeated one.
    let sum = |entity: &str, k: &str| {
        current
            .iter()
            .filter(|(e, _)| *e == entity)
            .map(|(_, f)| f[k].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(sum("c_g224", "linked"), i64::from(PAYMENTS), "{listed:?}");
    assert_eq!(
        sum("c_g224", "payments"),
        i64::from(PAYMENTS) + 5,
        "{listed:?}"
    );
    assert_eq!(sum("c_d530", "linked"), i64::from(SHARED), "{listed:?}");
    assert_eq!(sum("c_d530", "payments"), i64::from(SHARED), "{listed:?}");
    assert_eq!(sum("c_d530", "anomalies"), 0, "{listed:?}");
    let feltre_flows = flows.iter().filter(|f| f.2 == FELTRE_FC).count();
    assert!((1..=3).contains(&feltre_flows), "{flows:?}");

    // Each injected case reported once over the current flows, on the row the sim wrote it in.
    let mut found = Vec::new();
    for (entity, f) in &current {
        let iuf = f["iuf"].as_str().unwrap();
        let shown = reports(&["show", "--entity", entity, iuf]);
        let d = shown
            .iter()
            .find(|d| d.get("superseded_by").is_none())
            .unwrap();
        let rows = d["rows"].as_array().unwrap();
        if *entity == "c_d530" {
            // Feltre's rows settle transfer 2 of Padova's receipts.
            assert!(
                rows.iter()
                    .all(|r| r["receipt"].is_i64() && r["receipt_transfer"] == 2),
                "{d}"
            );
        }
        for a in d["anomaly_list"].as_array().unwrap() {
            let row = a["row_no"].as_i64().map(|n| {
                let r = rows.iter().find(|r| r["row_no"] == n).unwrap();
                (
                    r["esito"].as_i64().unwrap(),
                    r["iuv"].as_str().unwrap().to_string(),
                )
            });
            found.push((
                a["code"].as_str().unwrap().to_string(),
                row.as_ref().map(|e| e.0),
                a["severity"].as_str().unwrap().to_string(),
                row.map(|e| e.1),
            ));
        }
    }
    found.sort();
    let codes: Vec<(&str, Option<i64>, &str)> = found
        .iter()
        .map(|(c, e, s, _)| (c.as_str(), *e, s.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            // The first flow's own row again, in the next Padova flow (or the other way round).
            ("ALREADY_REPORTED", Some(0), "anomaly"),
            ("AMOUNT_MISMATCH", Some(0), "anomaly"),
            // NO_RPT (esito 9) and STAND_IN_NO_RPT (esito 8) name IUVs the hub never issued.
            ("IUV_NOT_ISSUED", Some(8), "anomaly"),
            ("IUV_NOT_ISSUED", Some(9), "anomaly"),
            // A paid IUV with an IUR no receipt has: esito 0 unexpected, esito 9 expected.
            ("NO_RECEIPT", Some(0), "anomaly"),
            ("NO_RECEIPT_EXPECTED", Some(9), "info"),
            ("REVOKED", Some(3), "anomaly"),
            ("TOTAL_AMOUNT_MISMATCH", None, "anomaly"),
            ("TOTAL_COUNT_MISMATCH", None, "anomaly"),
        ],
        "{found:?}"
    );
    let iuv_of = |code: &str, esito: i64| {
        found
            .iter()
            .find(|f| f.0 == code && f.1 == Some(esito))
            .and_then(|f| f.3.clone())
            .unwrap()
    };
    assert!(iuv_of("IUV_NOT_ISSUED", 8).starts_with("98"), "{found:?}");
    assert!(iuv_of("IUV_NOT_ISSUED", 9).starts_with("99"), "{found:?}");

    // Each paid position shows the current flow of its own entity that settles it (Padova's,
    // never Feltre's, for the shared ones).
    let positions = home.positions(&["--limit", "100000"]);
    assert_eq!(positions.len(), PAYMENTS as usize);
    let paid_iuvs: std::collections::BTreeSet<&str> = positions
        .iter()
        .map(|p| p["iuv"].as_str().unwrap())
        .collect();
    assert!(paid_iuvs.contains(iuv_of("NO_RECEIPT", 0).as_str()));
    assert!(paid_iuvs.contains(iuv_of("NO_RECEIPT_EXPECTED", 9).as_str()));
    for p in &positions {
        assert_eq!(p["status"], "paid", "{p}");
        let s = &p["settlement"];
        let (entity, f) = current
            .iter()
            .find(|(_, f)| f["iuf"] == s["iuf"])
            .unwrap_or_else(|| panic!("no current flow settles {p}"));
        assert_eq!(*entity, "c_g224", "{p}");
        assert_eq!(s["regulation_id"], f["regulation"], "{p}");
    }
}

#[test]
fn the_hub_pulls_links_and_reports_what_the_simulated_psps_settle_over_rest_and_soap() {
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger");
    let home = paid_home(&ledger);
    let date = sim_ledger_date(&ledger);
    let out = stdout(&run_sim(
        &home,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--publish-flows",
            "--date",
            &date,
            "--anomalies",
        ],
    ));
    let flows = published(&out);
    assert_eq!(
        flows.iter().filter(|f| f.2 == PADOVA_FC).count(),
        4,
        "three PSPs to Padova and one republished flow:\n{out}"
    );
    let port = free_port();
    let _psps = SimPsps::serve(&home, &ledger, port);

    // A fresh store for the SOAP pull: the same receipts, no flow yet.
    let soap_home = Home::new();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(home.path().join("var"))
        .arg(soap_home.path())
        .status()
        .unwrap();
    assert!(cp.success());

    pull_and_check(
        &home,
        &format!(
            "\n[pagopa.fdr]\nmode = \"rest\"\nurl = \"http://127.0.0.1:{port}/fdr-org/service/v1\"\nsubscription_key = \"fdr-k\"\n"
        ),
        &ledger,
        &flows,
        true,
    );
    pull_and_check(
        &soap_home,
        &format!(
            "\n[pagopa.fdr]\nmode = \"soap\"\nurl = \"http://127.0.0.1:{port}/nodo-auth/node-for-pa/v1\"\npassword = \"fdr-pw\"\n"
        ),
        &ledger,
        &flows,
        false,
    );
}
