//! Kill -9 in the middle of an import, then start it again: the end state is exactly the one an
//! uninterrupted import gives (each row applied once, no IUV handed out twice, outcome files
//! complete and identical).

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u32 = 40_000;

fn flow(dir: &std::path::Path) -> std::path::PathBuf {
    let rows: Vec<Row> = (1..=ROWS)
        .map(|i| {
            let r = Row::tari(&format!("K{i}"), i, 100 + i as u64);
            if i % 50 == 0 {
                r.set(13, "abc") // a bad amount: rejected
            } else {
                r
            }
        })
        .collect();
    write_zip(dir, "c_g224-CRASH1-1_4", csv_text(&rows).as_bytes())
}

/// The state to compare: every position's key fields, sorted, and the outcome files' text.
fn state(home: &Home, out: &std::path::Path) -> (Vec<String>, String, String) {
    let mut positions: Vec<String> = home
        .positions(&["--limit", "1000000"])
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p["iud"],
                p["iuv"],
                p["status"],
                p["amount_cents"],
                p["history_count"],
                p["version"]
            )
        })
        .collect();
    positions.sort();
    (
        positions,
        unzip_text(&out.join("c_g224-CRASH1-1_4_SCARTI.zip")),
        unzip_text(&out.join("c_g224-CRASH1-1_4_IUV.zip")),
    )
}

#[test]
fn kill_9_mid_import_then_rerun_gives_the_uninterrupted_result() {
    // Reference: one uninterrupted import.
    let reference = Home::with_chunk_rows(500);
    let ref_flow = flow(reference.path());
    let ref_out = reference.path().join("out");
    let o = reference.import(&ref_flow, &ref_out);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected_last = format!(
        "rows={ROWS} accepted={} rejected={} flow=IMPORT_ESEGUITO",
        ROWS - ROWS / 50,
        ROWS / 50
    );
    assert_eq!(stdout(&o).lines().last().unwrap(), expected_last);
    let expected = state(&reference, &ref_out);

    // The same flow, killed twice while rows are being applied.
    let home = Home::with_chunk_rows(500);
    let path = flow(home.path());
    let out = home.path().join("out");
    let staged_iuv = home.path().join("var/flows/1/iuv.csv");
    let mut kills = 0;
    for threshold in [200_000u64, 2_000_000] {
        let mut child = Command::new(BIN)
            .args(["import", "-c", "config.toml", "--entity", "c_g224", "--out"])
            .arg(&out)
            .arg(&path)
            .current_dir(home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            let len = std::fs::metadata(&staged_iuv).map(|m| m.len()).unwrap_or(0);
            if len > threshold {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "import made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
        // A kill between writing a chunk's outcome lines and committing it leaves lines the
        // store never saw; simulate that window every time.
        for f in ["iuv.csv", "scarti.csv"] {
            let p = home.path().join("var/flows/1").join(f);
            if p.exists() {
                use std::io::Write;
                let mut h = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                h.write_all(b"UNCOMMITTED;LINE\n").unwrap();
            }
        }
    }
    assert!(
        kills >= 1,
        "the import was never interrupted: make the flow larger"
    );
    assert!(
        !out.join("c_g224-CRASH1-1_4_IUV.zip").exists(),
        "no outcome before the flow is complete"
    );

    let o = home.import(&path, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().last().unwrap(), expected_last);
    let got = state(&home, &out);
    assert_eq!(got.0.len(), expected.0.len());
    assert!(
        got.0 == expected.0,
        "positions differ from the uninterrupted import"
    );
    assert!(
        got.1 == expected.1,
        "SCARTI differs from the uninterrupted import"
    );
    assert!(
        got.2 == expected.2,
        "IUV file differs from the uninterrupted import"
    );

    // And the finished flow is now a duplicate.
    let again = home.import(&path, &out);
    assert!(stderr(&again).contains("PAA_IMPORT_FLUSSO_DUPLICATO"));
}
