//! The receipts fan-out survives crashes: `snodo sim` pays 10 000 notices (resending, like the
//! national node, whatever got no answer), the hub is killed with SIGKILL twice while receipts
//! flow and restarted each time, and in the end every receipt the hub acknowledged reached the
//! entity system (at least once, by its idempotency key), with the hub's counters agreeing.

mod common;
use common::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PAYMENTS: usize = 10_000;
const PIPELINE: &str = "padova-receipts-push";

/// Idempotency keys seen by the receiver, with how many times each came.
type Keys = Arc<Mutex<HashMap<String, u32>>>;

/// The entity system: HTTP/1.1 with keep-alive on loopback, a thread per connection, every POST
/// answered 200 and its `Idempotency-Key` recorded.
fn receiver() -> (u16, Keys) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys: Keys = Arc::default();
    let seen = keys.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || serve_connection(stream, &seen));
        }
    });
    (port, keys)
}

fn serve_connection(stream: TcpStream, seen: &Keys) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut key = None;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "idempotency-key" => key = Some(v.to_string()),
                    "content-length" => length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(k) = key {
            *seen.lock().unwrap().entry(k).or_default() += 1;
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
            || close
        {
            return;
        }
    }
}

/// `snodo sim` in the background, killed if the test ends early.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn metrics(port: u16) -> String {
    let o = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl /metrics");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// `snodo run` with its log in `hub-<n>.log` of the home (read when something goes wrong), once
/// it serves.
fn start_hub(home: &Home, n: u32) -> Hub {
    let log = std::fs::File::create(home.path().join(format!("hub-{n}.log"))).unwrap();
    let hub = Hub(Command::new(BIN)
        .args(["run", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start snodo run"));
    let url = format!("http://127.0.0.1:{}/readyz", home.port);
    let up = wait_for(30, || {
        Command::new("curl")
            .args(["-sf", &url])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(up, "the hub did not start serving:\n{}", diagnosis(home));
    hub
}

/// What the hub logs and the simulator said last, for a failure message.
fn diagnosis(home: &Home) -> String {
    let mut out = String::new();
    let mut names: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hub-") || n.starts_with("sim."))
        .collect();
    names.sort();
    for name in names {
        let text = std::fs::read_to_string(home.path().join(&name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        out.push_str(&format!("--- {name} (last lines)\n{tail}\n"));
    }
    out.push_str(&format!(
        "--- receipts log: {} lines",
        log_lines(&home.path().join("receipts.log"))
    ));
    out
}

/// SIGKILL once `at` receipts are answered, then a restart; returns the answered count at the kill.
fn kill_and_restart(
    hub: Hub,
    home: &Home,
    log: &Path,
    at: usize,
    n: u32,
    t0: Instant,
) -> (Hub, usize) {
    let flowing = wait_for(180, || log_lines(log) >= at);
    assert!(
        flowing,
        "only {} receipts answered, waited for {at}\n{}",
        log_lines(log),
        diagnosis(home)
    );
    let mut hub = hub;
    hub.0.kill().expect("SIGKILL the hub");
    let _ = hub.0.wait();
    let answered = log_lines(log);
    eprintln!(
        "{:>6.1}s  SIGKILL with {answered} receipts answered",
        t0.elapsed().as_secs_f64()
    );
    drop(hub);
    let hub = start_hub(home, n);
    eprintln!("{:>6.1}s  hub restarted", t0.elapsed().as_secs_f64());
    (hub, answered)
}

#[test]
fn every_acknowledged_receipt_reaches_the_entity_system_across_two_kill_9() {
    let t0 = Instant::now();
    let (rport, keys) = receiver();
    let home = Home::new();
    let mut cfg = std::fs::read_to_string(home.config()).unwrap();
    cfg.push_str(&format!(
        r#"
[[pipelines]]
name = "{PIPELINE}"
entity = "c_g224"
from = "receipts"
encode = "json"
to = {{ connector = "http", url = "http://127.0.0.1:{rport}/receipts", timeout = "5s", retry = {{ max_attempts = 1000, initial = "200ms", max = "2s" }} }}
"#
    ));
    std::fs::write(home.config(), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    let rows: Vec<Row> = (1..=PAYMENTS as u32)
        .map(|i| Row::tari(&format!("F{i}"), i, 1000 + u64::from(i)))
        .collect();
    let flow = write_zip(
        home.path(),
        "c_g224-FANOUT1-1_4",
        csv_text(&rows).as_bytes(),
    );
    let o = home.import(&flow, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("accepted={PAYMENTS} rejected=0")),
        "{}",
        stdout(&o)
    );
    eprintln!(
        "{:>6.1}s  {PAYMENTS} positions imported",
        t0.elapsed().as_secs_f64()
    );

    let hub = start_hub(&home, 1);
    let log = home.path().join("receipts.log");
    let report_path = home.path().join("sim.out");
    let mut sim = Sim(Command::new(BIN)
        .args([
            "sim",
            "-c",
            "config.toml",
            "--from-config",
            "--count",
            &PAYMENTS.to_string(),
            "--concurrency",
            "8",
            "--retry-for",
            "120s",
            "--receipts-log",
        ])
        .arg(&log)
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(std::fs::File::create(&report_path).unwrap())
        .stderr(std::fs::File::create(home.path().join("sim.err")).unwrap())
        .spawn()
        .expect("start snodo sim"));

    // Two crashes while the receipts flow, each followed by a restart.
    let (hub, first) = kill_and_restart(hub, &home, &log, 2_000, 2, t0);
    let (hub, second) = kill_and_restart(hub, &home, &log, 6_000, 3, t0);
    assert!(
        first < PAYMENTS && second < PAYMENTS,
        "the kills came after the last receipt ({first}, {second}): nothing was tested"
    );

    let finished = wait_for(300, || matches!(sim.0.try_wait(), Ok(Some(_))));
    assert!(finished, "snodo sim did not finish\n{}", diagnosis(&home));
    let status = sim.0.wait().unwrap();
    let report = std::fs::read_to_string(&report_path).unwrap();
    eprintln!("{:>6.1}s  sim done:\n{report}", t0.elapsed().as_secs_f64());
    assert!(status.success(), "snodo sim failed ({status}):\n{report}");
    assert!(
        report.contains(&format!(
            "\ntotal payments={PAYMENTS} completed={PAYMENTS} faulted=0 errors=0 "
        )),
        "{report}"
    );

    // One line per receipt: OK, or PAA_RECEIPT_DUPLICATA for a resent receipt the hub had
    // stored just before it was killed (its OK was lost with it): both mean stored.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut acknowledged = HashSet::new();
    let mut duplicates = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(';').collect();
        assert_eq!(f.len(), 3, "bad receipts log line {line:?}");
        match f[2] {
            "OK" => {}
            "PAA_RECEIPT_DUPLICATA" => duplicates += 1,
            other => panic!("receipt {} answered {other}", f[0]),
        }
        assert!(
            acknowledged.insert(f[0].to_string()),
            "two lines for {}",
            f[0]
        );
    }
    assert_eq!(acknowledged.len(), PAYMENTS, "receipts acknowledged");
    eprintln!(
        "{duplicates} receipts were stored before a kill and answered as duplicates on resend"
    );

    // The outbox drains: every acknowledged receipt reaches the entity system. Deliveries that
    // a killed hub had claimed come back when their lease ends, so this may take minutes.
    let distinct = || keys.lock().unwrap().len();
    let drained = wait_for(300, || distinct() >= PAYMENTS);
    eprintln!(
        "{:>6.1}s  receiver has {} distinct keys",
        t0.elapsed().as_secs_f64(),
        distinct()
    );
    assert!(
        drained,
        "only {} of {PAYMENTS} receipts reached the entity system\n{}\n{}",
        distinct(),
        metrics(home.port),
        diagnosis(&home)
    );
    {
        let keys = keys.lock().unwrap();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !keys.contains_key(*id))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged, never delivered: {missing:?}"
        );
        assert_eq!(keys.len(), PAYMENTS, "keys the hub never acknowledged");
        let redelivered = keys.values().filter(|n| **n > 1).count();
        eprintln!("{redelivered} receipts were delivered more than once (at least once)");
    }

    // The hub's own counters agree: every receipt stored once, every delivery delivered. A
    // delivery the receiver got just before a kill, but whose outcome the hub had not recorded
    // yet, stays claimed until its lease ends and is then delivered again: this may take as
    // long as the lease.
    let stored = format!("snodo_receipts_stored_total{{entity=\"c_g224\"}} {PAYMENTS}");
    let delivered =
        format!("snodo_deliveries{{pipeline=\"{PIPELINE}\",status=\"delivered\"}} {PAYMENTS}");
    let agree = wait_for(300, || {
        let m = metrics(home.port);
        has_line(&m, &stored) && has_line(&m, &delivered)
    });
    assert!(
        agree,
        "expected {stored:?} and {delivered:?} in:\n{}",
        metrics(home.port)
    );
    eprintln!(
        "{:>6.1}s  the hub counts {PAYMENTS} receipts delivered",
        t0.elapsed().as_secs_f64()
    );
    let m = metrics(home.port);
    for status in ["pending", "in_flight", "dead"] {
        let prefix = format!("snodo_deliveries{{pipeline=\"{PIPELINE}\",status=\"{status}\"}} ");
        assert!(
            m.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .all(|n| n == "0"),
            "{status} deliveries left:\n{m}"
        );
    }
    let o = home.snodo(&["dlq", "list", "-c", "config.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "", "dead letters");
    let paid = home
        .positions(&["--limit", "20000"])
        .iter()
        .filter(|p| p["status"] == "paid")
        .count();
    assert_eq!(paid, PAYMENTS, "paid positions");
    eprintln!("{:>6.1}s  done", t0.elapsed().as_secs_f64());
    drop(hub);
}
