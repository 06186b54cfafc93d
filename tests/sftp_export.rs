//! A receipt export pipeline whose `to` is an `sftp` outbox on the loopback OpenSSH server that
//! `ops/sshd.sh` (run by `ops/setup.sh`) starts: the MyPay export zip lands there atomically —
//! a reader listing the folder never sees a visible name that is not a complete, final file.

mod common;
use common::*;
use std::collections::HashMap;

fn notices(home: &Home, n: u32) -> Vec<String> {
    let rows: Vec<Row> = (1..=n)
        .map(|i| Row::tari(&format!("S{i}"), i, 1000 + i as u64))
        .collect();
    let flow = write_zip(home.path(), "c_g224-SEXP1-1_4", csv_text(&rows).as_bytes());
    let o = home.import(&flow, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    (1..=n)
        .map(|i| {
            home.positions(&["--iud", &format!("S{i}")])[0]["notice_number"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn is_final(name: &str) -> bool {
    name.starts_with("c_g224-")
        && name.contains("_ESTRAZIONE_DOVUTI_")
        && name.ends_with("-1_3.zip")
}

#[test]
fn receipts_are_exported_to_sftp_atomically() {
    let s = test_sshd();
    let base = s.fresh("export");
    assert!(s.batch(&format!("mkdir {base}\n")));
    let home = Home::new();
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(&format!(
        r#"
[[pipelines]]
name = "padova-sftp-export"
entity = "c_g224"
from = "receipts"
encode = {{ codec = "mypay-export", version = "1.3" }}
batch = {{ schedule = "* * * * * *", skip_empty = true }}
to = {} }}
"#,
        s.connector(&format!("{base}/export"))
    ));
    std::fs::write(home.config(), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    let n = notices(&home, 2);
    let _hub = Hub::start_serving(&home);
    for (i, (notice, id)) in n.iter().zip(["SFTP-R1", "SFTP-R2"]).enumerate() {
        let amount = format!("10.{:02}", 1 + i);
        let rt = post_soap(home.port, "paSendRTV2", &send_rt_v2(notice, id, &amount));
        assert!(rt.contains("<outcome>OK</outcome>"), "{rt}");
    }

    // A reader polling the outbox: every visible name is a final one, and a final name never
    // changes size once seen (it was complete when it appeared). The sink's temporary upload is
    // a hidden `.<name>.<pid>.part`, which readers (and our own source) skip.
    let export = format!("{base}/export");
    let got = home.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let mut first_size: HashMap<String, u64> = HashMap::new();
    let mut hidden_seen = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let done = wait_for(40, || {
        let Some(listing) = s.sizes(&export) else {
            return false;
        };
        for (name, size) in &listing {
            if name.starts_with('.') {
                assert!(name.ends_with(".part"), "an unexpected hidden file {name}");
                hidden_seen.push(name.clone());
                continue;
            }
            assert!(is_final(name), "a reader saw a non-final name: {name}");
            let first = *first_size.entry(name.clone()).or_insert(*size);
            assert_eq!(first, *size, "{name} changed size after it appeared");
        }
        ids = listing
            .iter()
            .filter(|(n, _)| is_final(n))
            .flat_map(|(n, _)| {
                let local = got.join(n);
                assert!(s.get(&format!("{export}/{n}"), &local), "get {n}");
                receipt_ids(&local)
            })
            .collect();
        ids.len() >= 2
    });
    assert!(done, "both receipts exported; got {ids:?}");
    eprintln!("temporary uploads seen while polling: {hidden_seen:?}");

    // Let another tick or two pass: nothing new (skip_empty) and no temporary left over.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let names = s.ls(&export).expect("the export folder");
    // The two payments land in one file, or in two when a tick fell between them.
    assert!(
        !names.is_empty() && names.len() <= 2 && names.iter().all(|n| is_final(n)),
        "only the final zip(s), no temporary left: {names:?}"
    );
    let mut ids: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let local = got.join(format!("final-{n}"));
            assert!(s.get(&format!("{export}/{n}"), &local));
            receipt_ids(&local)
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["SFTP-R1", "SFTP-R2"]);
}

/// The values of `identificativoMessaggioRicevuta` in an export zip's CSV.
fn receipt_ids(zip: &std::path::Path) -> Vec<String> {
    let text = unzip_text(zip);
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            l.split(';')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let col = rows[0]
        .iter()
        .position(|h| h == "identificativoMessaggioRicevuta")
        .expect("the header names identificativoMessaggioRicevuta");
    rows[1..].iter().map(|r| r[col].clone()).collect()
}
