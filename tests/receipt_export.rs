//! MyPay's nightly export (ESTRAZIONE_DOVUTI 1.3) from a batch receipts pipeline: every receipt
//! lands in exactly one file, even when the hub dies between publishing a file and recording it.

mod common;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FELTRE: &str = "00133880252";

/// Padova exports every second (files only when there is something), Feltre lists the receipts
/// paid to it as a secondary beneficiary.
fn home_with_exports() -> Home {
    let home = Home::new();
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(
        r#"
[[pipelines]]
name = "padova-export"
entity = "c_g224"
from = "receipts"
encode = { codec = "mypay-export", version = "1.3" }
batch = { schedule = "* * * * * *", skip_empty = true }
to = { connector = "dir", path = "var/c_g224/export" }

[[pipelines]]
name = "feltre-export"
entity = "c_d530"
from = "receipts"
encode = { codec = "mypay-export", version = "1.3" }
batch = { schedule = "* * * * * *", skip_empty = true }
to = { connector = "dir", path = "var/c_d530/export" }
"#,
    );
    std::fs::write(home.config(), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home
}

fn notices(home: &Home, n: u32) -> Vec<String> {
    let rows: Vec<Row> = (1..=n)
        .map(|i| Row::tari(&format!("X{i}"), i, 1000 + i as u64))
        .collect();
    let flow = write_zip(home.path(), "c_g224-EXP1-1_4", csv_text(&rows).as_bytes());
    let o = home.import(&flow, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    (1..=n)
        .map(|i| {
            home.positions(&["--iud", &format!("X{i}")])[0]["notice_number"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn amount(i: usize) -> String {
    let cents = 1001 + i as u64;
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn pay(home: &Home, notice: &str, receipt_id: &str, amount: &str) {
    let rt = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(notice, receipt_id, amount),
    );
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
}

/// Pays with two transfers: 1.00 of it goes to Feltre.
fn pay_shared(home: &Home, notice: &str, receipt_id: &str, amount: &str) {
    use snodo_adapters::pagopa::{parse_request, render_request, ReceiptDestination, Request};
    let Ok(Request::SendRtV2(mut req)) =
        parse_request(send_rt_v2(notice, receipt_id, amount).as_bytes())
    else {
        panic!("send_rt_v2 is a paSendRTV2")
    };
    let first = &mut req.receipt.transfer_list[0];
    let cents: u64 = amount.replace('.', "").parse().unwrap();
    first.transfer_amount = format!("{}.{:02}", (cents - 100) / 100, (cents - 100) % 100);
    let mut second = first.clone();
    second.id_transfer = 2;
    second.transfer_amount = "1.00".into();
    second.fiscal_code_pa = FELTRE.into();
    second.company_name = Some("Comune di Feltre".into());
    second.destination = ReceiptDestination::Iban("IT60X0542811101000000654321".into());
    req.receipt.transfer_list.push(second);
    let body = render_request(&Request::SendRtV2(req));
    let rt = post_soap(home.port, "paSendRTV2", &body);
    assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
}

fn zips(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "zip"));
    v.sort();
    v
}

/// The CSV rows of an export zip, fields unquoted (no field here holds `;` or `"`).
fn rows(zip: &Path) -> Vec<Vec<String>> {
    unzip_text(zip)
        .lines()
        .map(|l| {
            l.split(';')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

fn receipt_ids(zip: &Path) -> Vec<String> {
    let rows = rows(zip);
    let col = rows[0]
        .iter()
        .position(|h| h == "identificativoMessaggioRicevuta")
        .expect("the header names identificativoMessaggioRicevuta");
    rows[1..].iter().map(|r| r[col].clone()).collect()
}

#[test]
fn the_export_zip_holds_the_receipts_in_mypay_1_3_layout() {
    let home = home_with_exports();
    let n = notices(&home, 3);
    let _hub = Hub::start_serving(&home);
    pay(&home, &n[0], "EXP-R1", &amount(0));
    pay(&home, &n[1], "EXP-R2", &amount(1));
    pay_shared(&home, &n[2], "EXP-R3", &amount(2));

    let padova = home.path().join("var/c_g224/export");
    let feltre = home.path().join("var/c_d530/export");
    let all = || {
        zips(&padova)
            .iter()
            .flat_map(|z| receipt_ids(z))
            .collect::<Vec<_>>()
    };
    assert!(wait_for(20, || all().len() == 3), "got {:?}", all());
    let files = zips(&padova);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (prefix, rest) = name.split_once("_ESTRAZIONE_DOVUTI_").unwrap();
        assert!(prefix.starts_with("c_g224-"), "{name}");
        assert!(rest.ends_with("-1_3.zip"), "{name}");
        assert_eq!(rest.len(), "20261126020000-1_3.zip".len(), "{name}");
        let rows = rows(f);
        assert_eq!(rows[0].len(), 74, "1.3 has 74 columns");
        assert_eq!(rows[0][0], "iuf");
        assert_eq!(rows[0][73], "cod_tassonomico_dovuto_pa1");
        assert!(rows[1..].iter().all(|r| r.len() == 74));
        let iud = rows[0].iter().position(|h| h == "codIud").unwrap();
        let kind = rows[0].iter().position(|h| h == "tipoDovuto").unwrap();
        assert!(rows[1..]
            .iter()
            .all(|r| r[iud].starts_with('X') && r[kind] == "TARI"));
        // The IUF of the import flow that loaded each position, as MyPay writes it.
        assert!(rows[1..].iter().all(|r| r[0] == "EXP1"), "{rows:?}");
    }
    let mut got = all();
    got.sort();
    assert_eq!(got, ["EXP-R1", "EXP-R2", "EXP-R3"]);

    // Feltre gets the shared receipt as a secondary beneficiary, and nothing else.
    assert!(wait_for(20, || !zips(&feltre).is_empty()));
    let files = zips(&feltre);
    assert_eq!(files.len(), 1);
    let rows = rows(&files[0]);
    assert_eq!(rows.len(), 2, "header and the one secondary row");
    let kind = rows[0].iter().position(|h| h == "tipoDovuto").unwrap();
    let paid = rows[0]
        .iter()
        .position(|h| h == "singoloImportoPagato")
        .unwrap();
    assert_eq!(rows[1][kind], "EXPORT_ENTE_SECONDARIO");
    assert_eq!(rows[1][0], "", "a secondary row has no flow of Feltre's");
    assert_eq!(rows[1][paid], "1.00");
}

#[test]
fn a_crash_after_publishing_neither_loses_nor_repeats_receipts() {
    let home = home_with_exports();
    let n = notices(&home, 3);
    let padova = home.path().join("var/c_g224/export");

    // This hub dies right after publishing its first file, before recording it.
    let doomed = Command::new(BIN)
        .args(["run", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .env("SNODO_FAILPOINT", "export-published")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut doomed = Hub(doomed);
    let url = format!("http://127.0.0.1:{}/readyz", home.port);
    assert!(wait_for(20, || Command::new("curl")
        .args(["-sf", &url])
        .status()
        .is_ok_and(|s| s.success())));
    pay(&home, &n[0], "CR-R1", &amount(0));
    pay(&home, &n[1], "CR-R2", &amount(1));
    assert!(
        wait_for(20, || matches!(doomed.0.try_wait(), Ok(Some(_)))),
        "the failpoint stops the hub"
    );
    let first = zips(&padova);
    assert_eq!(first.len(), 1, "the file was published before the crash");
    let before = std::fs::read(&first[0]).unwrap();
    let mut in_first = receipt_ids(&first[0]);
    in_first.sort();
    assert!(!in_first.is_empty());

    // The restarted hub redoes that same export (same name, same bytes), then moves on.
    let _hub = Hub::start_serving(&home);
    pay(&home, &n[2], "CR-R3", &amount(2));
    let all = || {
        zips(&padova)
            .iter()
            .flat_map(|z| receipt_ids(z))
            .collect::<Vec<_>>()
    };
    assert!(wait_for(20, || all().len() >= 3), "got {:?}", all());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let got = all();
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), distinct.len(), "a receipt in two files: {got:?}");
    assert_eq!(
        distinct,
        ["CR-R1", "CR-R2", "CR-R3"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect()
    );
    assert_eq!(
        std::fs::read(&first[0]).unwrap(),
        before,
        "the redone file is the same file"
    );
    let o = home.snodo(&["dlq", "list", "-c", "config.toml"]);
    assert!(stdout(&o).trim().is_empty(), "{}", stdout(&o));
}
