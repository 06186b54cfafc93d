//! The listeners are bounded (docs/SECURITY.md): a client that sends half a request head and
//! stalls is cut off after `http.header_timeout`, and connections beyond `http.max_connections`
//! are refused while the hub keeps answering the others.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn bounded_home(extra: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "[http]\n",
        &format!("[http]\n{extra}\n"),
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    home
}

/// Reads until the peer closes (Ok) or `limit` passes (Err).
fn read_to_close(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Ok(String::from_utf8_lossy(&got).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Ok(String::from_utf8_lossy(&got).into_owned())
        }
        Err(e) => Err(format!("still open after {limit:?}: {e}")),
    }
}

/// A kept-alive connection that has been answered once, so the hub counts it. The place of a
/// connection that just closed comes back a moment later, so a refusal is tried again.
fn hold_a_place(port: u16) -> TcpStream {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut got = [0u8; 12];
        if s.read_exact(&mut got).is_ok() && got.starts_with(b"HTTP/1.1 200") {
            // The rest of the answer is small: read it so the connection is idle again.
            std::thread::sleep(Duration::from_millis(100));
            s.set_nonblocking(true).unwrap();
            let mut rest = [0u8; 4096];
            let _ = s.read(&mut rest);
            s.set_nonblocking(false).unwrap();
            return s;
        }
        assert!(Instant::now() < until, "no place was given back within 5 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn healthz(port: u16) -> bool {
    std::process::Command::new("curl")
        .args([
            "-sf",
            "-m",
            "5",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_stalled_request_head_is_cut_off() {
    let home = bounded_home("header_timeout = \"1s\"\nidle_timeout = \"30s\"");
    let _hub = Hub::start_serving(&home);
    let mut s = TcpStream::connect(("127.0.0.1", home.port)).unwrap();
    let start = Instant::now();
    s.write_all(b"POST /pagopa/paForNode HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    let closed = read_to_close(&mut s, Duration::from_secs(10));
    let took = start.elapsed();
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // A connection that says nothing at all is closed as well.
    let mut quiet = TcpStream::connect(("127.0.0.1", home.port)).unwrap();
    assert!(read_to_close(&mut quiet, Duration::from_secs(10)).is_ok());
    // Someone sending a whole request is answered.
    assert!(healthz(home.port));
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let home = bounded_home("header_timeout = \"5s\"\nidle_timeout = \"1s\"");
    let _hub = Hub::start_serving(&home);
    let mut s = TcpStream::connect(("127.0.0.1", home.port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let answer = read_to_close(&mut s, Duration::from_secs(10)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn connections_beyond_the_cap_are_refused_and_the_others_answered() {
    let home =
        bounded_home("max_connections = 4\nheader_timeout = \"20s\"\nidle_timeout = \"20s\"");
    let _hub = Hub::start_serving(&home);
    // Three idle connections hold three of the four places.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", home.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The fourth place still serves, and a kept-alive connection then holds it.
    assert!(healthz(home.port));
    let mut fourth = hold_a_place(home.port);
    // A fifth is refused at once.
    let mut fifth = TcpStream::connect(("127.0.0.1", home.port)).unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let refused = read_to_close(&mut fifth, Duration::from_secs(5)).expect("closed");
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "{refused}"
    );
    // The held connections are still answered.
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_to_close(&mut fourth, Duration::from_secs(5)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    // Places free again: new connections are served.
    assert!(wait_for(5, || healthz(home.port)));
}
