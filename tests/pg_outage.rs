//! The database goes silent under a running hub: a TCP proxy between the hub and PostgreSQL
//! stops forwarding (connections accepted, nothing answered, as a network black hole or a hung
//! server looks). The node must hear `PAA_SYSTEM_ERROR` within 5 s, `/readyz` must say 503, and
//! once the database is back the hub stores receipts again without a restart.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proxy to 127.0.0.1:5432 that can black-hole: while `forward` is off it accepts and holds
/// connections without a word and stops forwarding on the ones it had; when forwarding resumes,
/// the connections of the outage are cut (as after a real one) and new ones go through.
struct Proxy {
    port: u16,
    forward: Arc<AtomicBool>,
    /// Bumped at each outage: connections from before it are cut when it ends.
    epoch: Arc<AtomicU64>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forward = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (f, e, h) = (forward.clone(), epoch.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !f.load(Ordering::SeqCst) {
                    h.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect("127.0.0.1:5432") else {
                    continue;
                };
                let born = e.load(Ordering::SeqCst);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (f, e) = (f.clone(), e.clone());
                    std::thread::spawn(move || pump(from, to, &f, &e, born));
                }
            }
        });
        Self {
            port,
            forward,
            epoch,
            held,
        }
    }

    fn black_hole(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.forward.store(false, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.forward.store(true, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` while forwarding; holds still during an outage; ends the connection
/// when an outage it lived through is over.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    forward: &AtomicBool,
    epoch: &AtomicU64,
    born: u64,
) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if epoch.load(Ordering::SeqCst) != born {
            if forward.load(Ordering::SeqCst) {
                break;
            }
            // Silent: read nothing, send nothing.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if epoch.load(Ordering::SeqCst) != born {
                    continue; // swallowed by the outage
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// POSTs a SOAP body with a 15 s limit; the answer's body and how long it took.
fn soap(port: u16, action: &str, body: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST /pagopa/paForNode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: {action}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("the hub answers within 15 s");
    (answer, started.elapsed())
}

fn verify_body(notice: &str) -> String {
    snodo_adapters::pagopa::render_request(&snodo_adapters::pagopa::Request::Verify(
        snodo_adapters::pagopa::VerifyRequest {
            id_pa: PADOVA.into(),
            id_broker_pa: BROKER.into(),
            id_station: STATION.into(),
            qr_code: snodo_adapters::pagopa::QrCode {
                fiscal_code: PADOVA.into(),
                notice_number: notice.into(),
            },
        },
    ))
}

fn readyz(port: u16) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10"])
        .arg(format!("http://127.0.0.1:{port}/readyz"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_silent_database_is_a_system_error_in_time_and_the_hub_recovers() {
    let db = PgDb::new("outage");
    let proxy = Proxy::start();
    let home = Home::new();
    // The defaults for every limit: what a hub gets without tuning.
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("store = \"sqlite\"", &format!("store = \"{url}\""));
    std::fs::write(home.config(), cfg).unwrap();
    home.import_rows("OUT1", &[Row::tari("A", 1, 1500), Row::tari("B", 2, 2500)]);
    let notice = |iud: &str| {
        home.positions(&["--iud", iud])[0]["notice_number"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (notice("A"), notice("B"));
    let hub = Hub::start_serving(&home);

    let (ok, _) = soap(home.port, "paVerifyPaymentNotice", &verify_body(&a));
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");

    proxy.black_hole();
    // The pooled connections go silent first, then new ones cannot start: both are faults in
    // time, whichever the call meets.
    for (action, body) in [
        ("paVerifyPaymentNotice", verify_body(&a)),
        ("paSendRTV2", send_rt_v2(&a, "outage-rt-1", "15.00")),
        ("paVerifyPaymentNotice", verify_body(&b)),
    ] {
        let (answer, took) = soap(home.port, action, &body);
        assert!(
            answer.contains("<faultCode>PAA_SYSTEM_ERROR</faultCode>"),
            "{action} during the outage: {answer}"
        );
        assert!(took < Duration::from_secs(5), "{action} took {took:?}");
    }
    assert_eq!(readyz(home.port), "503");
    assert_eq!(db.query("SELECT count(*) FROM receipts"), "0");

    proxy.restore();
    let mut last = String::new();
    let stored = wait_for(30, || {
        last = soap(
            home.port,
            "paSendRTV2",
            &send_rt_v2(&b, "outage-rt-2", "25.00"),
        )
        .0;
        last.contains("<outcome>OK</outcome>")
    });
    assert!(
        stored,
        "no receipt stored after the database came back: {last}"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM receipts WHERE receipt_id = 'outage-rt-2'"),
        "1"
    );
    assert!(wait_for(10, || readyz(home.port) == "200"));
    drop(hub);
}
