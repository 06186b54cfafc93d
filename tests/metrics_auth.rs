//! `/metrics` is not public (docs/SECURITY.md): on `http.metrics_listen` it answers there and
//! not on the main listener; with `http.metrics_token` it asks for the token. Failed
//! authentications are bounded per peer address (`http.auth_failures_per_minute`): past the
//! bound the peer gets 429 with `Retry-After` before its credentials are looked at, so even a
//! good key is refused, while another address is still served.

mod common;

use common::*;
use std::process::Command;

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789ab";

fn home_with(http: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replacen(
        "[http]\n",
        &format!("[http]\n{http}\n"),
        1,
    );
    std::fs::write(home.config(), cfg).unwrap();
    home
}

/// One call through curl from the source address `from` (a loopback address): status and the
/// lower-cased head, the body discarded.
fn curl_from(from: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-m",
        "5",
        "--interface",
        from,
        "-D",
        "-",
        "-o",
        "/dev/null",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let o = cmd.arg(url).output().expect("curl");
    let head = stdout(&o).to_ascii_lowercase();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

fn retry_after(head: &str) -> Option<u64> {
    head.lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_on_their_own_address_and_not_on_the_main_one() {
    let mport = free_port();
    let home = home_with(&format!("metrics_listen = \"127.0.0.1:{mport}\""));
    let _hub = Hub::start_serving(&home);
    let url = format!("http://127.0.0.1:{mport}/metrics");
    let mut there = (0, String::new());
    assert!(wait_for(10, || {
        there = curl_body(&url, None);
        there.0 == 200
    }));
    assert!(there.1.contains("# TYPE"), "{}", there.1);
    let main = http(home.port, "GET", "/metrics", None, &[], None);
    assert_ne!(main.status, 200, "{}", main.body);
    assert!(!main.body.contains("# TYPE"), "{}", main.body);
    // The main listener still serves the rest.
    assert_eq!(
        http(home.port, "GET", "/healthz", None, &[], None).status,
        200
    );
}

/// Status and body of a GET through curl.
fn curl_body(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "5", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = stdout(&cmd.arg(url).output().expect("curl"));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn metrics_behind_a_token() {
    let home = home_with(&format!("metrics_token = \"{METRICS_TOKEN}\""));
    let _hub = Hub::start_serving(&home);
    let none = http(home.port, "GET", "/metrics", None, &[], None);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(!none.body.contains("# TYPE"));
    let wrong = get(
        home.port,
        "/metrics",
        "not-the-metrics-token-0123456789abcdef",
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // A prefix of the token is not the token.
    let prefix = get(home.port, "/metrics", &METRICS_TOKEN[..20]);
    assert_eq!(prefix.status, 401, "{}", prefix.body);
    let right = get(home.port, "/metrics", METRICS_TOKEN);
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(right.body.contains("# TYPE"), "{}", right.body);
}

#[test]
fn failed_api_keys_are_bounded_per_peer() {
    let home = home_with("auth_failures_per_minute = 3");
    let _hub = Hub::start_serving_with_env(&home, &[("SNODO_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let url = format!(
        "http://127.0.0.1:{}/api/v1/entities/c_g224/positions",
        home.port
    );
    // The good key is served before any failure.
    assert_eq!(curl_from("127.0.0.1", &url, Some(KEY_PADOVA)).0, 200);
    for i in 0..3 {
        let (status, head) = curl_from("127.0.0.1", &url, Some("wrong-key"));
        assert_eq!(status, 401, "failure {i}: {head}");
    }
    // The bucket is empty: a bad key and even the good one are refused before being looked at.
    let (status, head) = curl_from("127.0.0.1", &url, Some("wrong-key"));
    assert_eq!(status, 429, "{head}");
    let wait = retry_after(&head).expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    let (status, head) = curl_from("127.0.0.1", &url, Some(KEY_PADOVA));
    assert_eq!(status, 429, "{head}");
    assert!(retry_after(&head).is_some(), "{head}");
    // Another address is not affected.
    assert_eq!(curl_from("127.0.0.2", &url, Some(KEY_PADOVA)).0, 200);
    // The admin token is bounded by the same count of the same peer.
    let admin = format!("http://127.0.0.1:{}/admin/dlq", home.port);
    assert_eq!(curl_from("127.0.0.1", &admin, Some(ADMIN_TOKEN)).0, 429);
    assert_eq!(curl_from("127.0.0.2", &admin, Some(ADMIN_TOKEN)).0, 200);
}

#[test]
fn failed_admin_tokens_are_bounded_per_peer() {
    let home = home_with("auth_failures_per_minute = 2");
    let _hub = Hub::start_serving_with_env(&home, &[("SNODO_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let url = format!("http://127.0.0.1:{}/admin/dlq", home.port);
    assert_eq!(curl_from("127.0.0.2", &url, Some(ADMIN_TOKEN)).0, 200);
    for _ in 0..2 {
        assert_eq!(curl_from("127.0.0.2", &url, Some(&ADMIN_TOKEN[1..])).0, 401);
    }
    let (status, head) = curl_from("127.0.0.2", &url, Some(ADMIN_TOKEN));
    assert_eq!(status, 429, "{head}");
    assert!(retry_after(&head).is_some(), "{head}");
    assert_eq!(curl_from("127.0.0.3", &url, Some(ADMIN_TOKEN)).0, 200);
    // The bucket refills (2 a minute: one failure's worth in 30 s) — not waited for here; the
    // unit test of AuthFailures covers the arithmetic.
}
