//! `snodo onboard`: a new entity's wiring checked end to end against the running hub —
//! positions through its folder intake, paid by the simulated node, receipts delivered by each
//! push pipeline and written by its export — passes on the demo's Padova, and fails naming the
//! step and the reason when the entity's receiver answers 500.

mod common;
use common::*;
use std::process::{Command, Output};

fn push_to(home: &Home, port: u16) {
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(&format!(
        r#"
[[pipelines]]
name = "padova-erp-push"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{port}/receipts", timeout = "2s", retry = {{ max_attempts = 20, initial = "200ms", max = "1s" }} }}
"#
    ));
    std::fs::write(home.config(), cfg).unwrap();
}

fn onboard(home: &Home, entity: &str, wait: &str) -> Output {
    Command::new(BIN)
        .args([
            "onboard",
            "-c",
            "config.toml",
            "--entity",
            entity,
            "--wait",
            wait,
        ])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .expect("run snodo onboard")
}

/// An entity system that answers every request 500.
fn failing_receiver() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!"
            );
        }
    });
    port
}

#[test]
fn onboarding_passes_every_step_on_a_wired_entity() {
    let home = Home::new();
    let (port, received) = accepting_receiver();
    push_to(&home, port);
    let hub = Hub::start_serving(&home);
    let o = onboard(&home, "c_g224", "30s");
    let out = stdout(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for step in [
        "PASS configuration:",
        "PASS hub:",
        "PASS positions: 2 positions imported by pipeline padova-dovuti-in",
        "PASS payment: 2 notices verified, activated and paid",
        "PASS delivery padova-erp-push (http): 2 receipts delivered",
        "PASS export padova-receipts-export: written now:",
        "PASS clean-up:",
    ] {
        assert!(out.contains(step), "{step} in\n{out}");
    }
    assert!(out.ends_with("onboarded: 7 steps, 0 failed\n"), "{out}");
    assert_eq!(received.lock().unwrap().len(), 2);
    // The test positions are paid; nothing of them is left active.
    let onb: Vec<_> = home
        .positions(&["--limit", "1000"])
        .into_iter()
        .filter(|p| p["iud"].as_str().unwrap_or_default().starts_with("ONB-"))
        .collect();
    assert_eq!(onb.len(), 2);
    assert!(onb.iter().all(|p| p["status"] == "paid"), "{onb:?}");

    // The demo's other entities: their intake and the payment (no receipts pipeline).
    for (entity, intake) in [
        ("c_d530", "feltre-dovuti-in"),
        ("r_veneto", "veneto-dovuti-in"),
    ] {
        let o = onboard(&home, entity, "30s");
        let out = stdout(&o);
        assert!(o.status.success(), "{entity}: {out}\n{}", stderr(&o));
        assert!(
            out.contains(&format!(
                "PASS positions: 2 positions imported by pipeline {intake}"
            )),
            "{out}"
        );
        assert!(out.ends_with("onboarded: 5 steps, 0 failed\n"), "{out}");
    }
    hub.terminate();
}

#[test]
fn onboarding_names_the_step_and_the_reason_when_a_receiver_fails() {
    let home = Home::new();
    push_to(&home, failing_receiver());
    let hub = Hub::start_serving(&home);
    let o = onboard(&home, "c_g224", "5s");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL delivery padova-erp-push"))
        .unwrap_or_else(|| panic!("no failed delivery step:\n{out}"));
    assert!(line.contains("500"), "{line}");
    assert!(out.contains("PASS payment:"), "{out}");
    assert!(out.ends_with("not ready: 7 steps, 1 failed\n"), "{out}");
    hub.terminate();
}
