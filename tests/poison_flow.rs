//! A flow that kills the hub, or fails every time, is set aside after three attempts: it lands
//! in `failed/` with its reason, and the hub goes on serving.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn drop_flow(home: &Home, stem: &str) -> std::path::PathBuf {
    let inbox = home.path().join("var/c_g224/in");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let rows = [Row::tari("P1", 1, 100)];
    let staged = write_zip(home.path(), stem, csv_text(&rows).as_bytes());
    let dropped = inbox.join(format!("{stem}.zip"));
    std::fs::rename(&staged, &dropped).expect("drop");
    inbox
}

/// Runs the hub with the `import-claimed` failpoint: it aborts as soon as it has counted an
/// attempt at the flow. Returns whether it died (rather than outliving `secs`).
fn crash_once(home: &Home, secs: u64) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(["run", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .env("SNODO_FAILPOINT", "import-claimed")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start snodo run");
    let died = wait_for(secs, || matches!(child.try_wait(), Ok(Some(_))));
    let _ = child.kill();
    let _ = child.wait();
    died
}

#[test]
fn a_flow_that_crashes_the_hub_three_times_is_set_aside() {
    let home = Home::new();
    let inbox = drop_flow(&home, "c_g224-POISON1-1_4");
    for i in 1..=3 {
        assert!(crash_once(&home, 20), "attempt {i} stops the hub");
    }
    // The fourth start sets the flow aside before touching it, even with the failpoint armed.
    let mut hub = Hub::start_serving_with_env(&home, &[("SNODO_FAILPOINT", "import-claimed")]);
    let failed = inbox.join("failed/c_g224-POISON1-1_4.zip");
    let note = inbox.join("failed/c_g224-POISON1-1_4.zip.error.txt");
    assert!(wait_for(20, || note.exists()), "the flow is set aside");
    assert!(failed.exists());
    let why = std::fs::read_to_string(&note).expect("note");
    assert!(why.contains("after 3 attempts"), "{why}");
    assert!(why.contains("the hub stopped"), "{why}");
    // Still serving, and nothing of the flow was imported.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        matches!(hub.0.try_wait(), Ok(None)),
        "the hub keeps running"
    );
    let ready = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{}/readyz", home.port)])
        .output()
        .expect("curl");
    assert!(ready.status.success(), "the hub answers");
    assert!(hub.terminate().success());
    assert!(home.positions(&[]).is_empty());
}

#[test]
fn a_flow_whose_import_fails_three_times_is_set_aside() {
    let home = Home::new();
    // Where imports stage their files is a plain file: every attempt fails (an I/O error, not
    // the flow's fault), until the flow is set aside.
    std::fs::create_dir_all(home.path().join("var")).expect("var");
    std::fs::write(home.path().join("var/flows"), b"not a folder").expect("block staging");
    let hub = Hub::start_serving(&home);
    let inbox = drop_flow(&home, "c_g224-POISON2-1_4");
    let note = inbox.join("failed/c_g224-POISON2-1_4.zip.error.txt");
    assert!(wait_for(30, || note.exists()), "the flow is set aside");
    let why = std::fs::read_to_string(&note).expect("note");
    assert!(why.contains("after 3 attempts"), "{why}");
    assert!(
        why.contains("var/flows"),
        "the last error names the cause: {why}"
    );
    assert!(
        !inbox.join("c_g224-POISON2-1_4.zip").exists(),
        "not claimed again"
    );
    assert!(hub.terminate().success());
}
