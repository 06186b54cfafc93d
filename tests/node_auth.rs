//! The node's endpoint over TLS with mutual authentication (docs/SECURITY.md): a private CA made
//! with `openssl` here stands for pagoPA's. The node's certificate is answered; no certificate,
//! one from another CA or one with another subject is refused (at the handshake, or 401/403
//! before the body is parsed), and a refused receipt changes nothing. The allow-list answers
//! 403 before the body is read, and a hub listening beyond loopback without `node_auth` does
//! not start. The served certificate is replaced without a restart.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n";
const CLIENT_EXT: &str =
    "subjectAltName=DNS:nodo.pagopa.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

/// The CAs and certificates: `ca` (the hub's server certificate and pagoPA's), `other`.
fn certificates(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other");
    leaf(dir, "ca", "server", "/CN=127.0.0.1", SERVER_EXT);
    leaf(
        dir,
        "ca",
        "node",
        "/C=IT/O=PagoPA/CN=nodo.pagopa.test",
        CLIENT_EXT,
    );
    leaf(
        dir,
        "ca",
        "stranger",
        "/C=IT/O=Someone/CN=someone.test",
        CLIENT_EXT,
    );
    leaf(
        dir,
        "other",
        "forged",
        "/C=IT/O=PagoPA/CN=nodo.pagopa.test",
        CLIENT_EXT,
    );
}

/// Adds `http` keys, `pagopa` keys and trailing tables to the home's config.
fn configure(home: &Home, http: &str, pagopa: &str, tail: &str) {
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replacen("[http]\n", &format!("[http]\n{http}\n"), 1)
        .replacen("[pagopa]\n", &format!("[pagopa]\n{pagopa}\n"), 1);
    std::fs::write(home.config(), format!("{cfg}\n{tail}\n")).unwrap();
}

fn tls_home() -> Home {
    let home = Home::new();
    certificates(home.path());
    configure(
        &home,
        "",
        r#"node_auth = { mode = "mtls", ca_file = "ca.pem", subject = "CN=nodo.pagopa.test, O=PagoPA" }"#,
        "[http.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"",
    );
    home
}

/// curl over https with the test CA; `client` is a certificate name or "" for none.
/// Answers (HTTP status, body); status 0 when the TLS handshake failed.
fn curl(
    home: &Home,
    client: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> (u16, String) {
    let url = format!("https://127.0.0.1:{}{path}", home.port);
    let mut args: Vec<String> = vec![
        "-s".into(),
        "-m".into(),
        "10".into(),
        "--cacert".into(),
        "ca.pem".into(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if !client.is_empty() {
        args.extend([
            "--cert".into(),
            format!("{client}.pem"),
            "--key".into(),
            format!("{client}.key"),
        ]);
    }
    for h in headers {
        args.extend(["-H".into(), h.to_string()]);
    }
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: text/xml".into(),
            "--data-binary".into(),
            b.into(),
        ]);
    }
    args.push(url);
    let o = Command::new("curl")
        .args(&args)
        .current_dir(home.path())
        .output()
        .expect("curl");
    let out = stdout(&o);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn start_tls(home: &Home) -> Hub {
    let hub = Hub::start(home);
    assert!(
        wait_for(20, || curl(home, "", "GET", "/readyz", None, &[]).0 == 200),
        "the hub did not serve https"
    );
    hub
}

fn verify_body(notice: &str) -> String {
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"><soapenv:Body><paf:paVerifyPaymentNoticeReq><idPA>{PADOVA}</idPA><idBrokerPA>{BROKER}</idBrokerPA><idStation>{STATION}</idStation><qrCode><fiscalCode>{PADOVA}</fiscalCode><noticeNumber>{notice}</noticeNumber></qrCode></paf:paVerifyPaymentNoticeReq></soapenv:Body></soapenv:Envelope>"#
    )
}

fn metric(home: &Home, line: &str) -> u64 {
    let (_, text) = curl(home, "", "GET", "/metrics", None, &[]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{line} ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_node_is_answered_by_its_certificate_and_others_are_refused() {
    let home = tls_home();
    home.import_rows("TLS1", &[Row::tari("TLS", 1, 12050)]);
    let notice = home.positions(&["--iud", "TLS"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let _hub = start_tls(&home);
    let soap = |client: &str, body: &str| {
        curl(&home, client, "POST", "/pagopa/paForNode", Some(body), &[])
    };
    // `snodo tail` follows the events from now: started before the refusals.
    let mut tail = Command::new(BIN)
        .args([
            "tail",
            "-c",
            "config.toml",
            "--kind",
            "soap.refused",
            "--count",
            "1",
        ])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("snodo tail");
    std::thread::sleep(Duration::from_secs(1));

    let (code, body) = soap("node", &verify_body(&notice));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<outcome>OK</outcome>"), "{body}");

    let (code, body) = soap("", &verify_body(&notice));
    assert_eq!(code, 401, "without a certificate: {body}");
    let (code, body) = soap("forged", &verify_body(&notice));
    assert_eq!(
        code, 0,
        "another CA's certificate passed the handshake: {body}"
    );
    let (code, body) = soap("stranger", &verify_body(&notice));
    assert_eq!(code, 403, "another subject: {body}");

    // A refused receipt changes nothing: the position stays active, no receipt is stored.
    let (code, _) = soap("stranger", &send_rt_v2(&notice, "RCPT-REFUSED", "120.50"));
    assert_eq!(code, 403);
    let (code, _) = soap("", &send_rt_v2(&notice, "RCPT-REFUSED", "120.50"));
    assert_eq!(code, 401);
    assert_eq!(home.positions(&["--iud", "TLS"])[0]["status"], "active");
    assert_eq!(metric(&home, "snodo_receipts_stored_total"), 0);
    let deliveries: u64 = {
        let (_, text) = curl(&home, "", "GET", "/metrics", None, &[]);
        text.lines()
            .filter(|l| l.starts_with("snodo_deliveries{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(deliveries, 0, "a refused receipt made a delivery");
    assert_eq!(
        metric(
            &home,
            r#"snodo_soap_refused_total{reason="no_certificate"}"#
        ),
        2
    );
    assert_eq!(
        metric(&home, r#"snodo_soap_refused_total{reason="subject"}"#),
        2
    );
    let tail_ok = wait_for(10, || matches!(tail.try_wait(), Ok(Some(_))));
    if !tail_ok {
        let _ = tail.kill();
    }
    let mut seen = String::new();
    use std::io::Read as _;
    tail.stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    assert!(
        seen.contains("soap.refused") && seen.contains("127.0.0.1"),
        "no soap.refused event with the peer: {seen:?}"
    );

    // The node's own receipt goes through.
    let (code, body) = soap("node", &send_rt_v2(&notice, "RCPT-OK", "120.50"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<outcome>OK</outcome>"), "{body}");
    assert_eq!(home.positions(&["--iud", "TLS"])[0]["status"], "paid");
}

#[test]
fn the_certificate_is_replaced_without_a_restart() {
    let home = tls_home();
    let _hub = start_tls(&home);
    let subject = || {
        let o = Command::new("sh")
            .args(["-c", &format!("openssl s_client -connect 127.0.0.1:{} -CAfile ca.pem </dev/null 2>/dev/null | openssl x509 -noout -subject", home.port)])
            .current_dir(home.path())
            .output()
            .unwrap();
        stdout(&o)
    };
    assert!(subject().contains("CN = 127.0.0.1"), "{}", subject());
    leaf(
        home.path(),
        "ca",
        "rotated",
        "/O=Rotated/CN=127.0.0.1",
        SERVER_EXT,
    );
    std::fs::copy(
        home.path().join("rotated.key"),
        home.path().join("server.key"),
    )
    .unwrap();
    std::fs::copy(
        home.path().join("rotated.pem"),
        home.path().join("server.pem"),
    )
    .unwrap();
    assert!(
        wait_for(10, || subject().contains("Rotated")),
        "still {}",
        subject()
    );
    assert_eq!(curl(&home, "", "GET", "/healthz", None, &[]).0, 200);
}

#[test]
fn outside_the_allow_list_is_refused_before_the_body() {
    let home = Home::new();
    configure(
        &home,
        "",
        r#"node_auth = { mode = "allowlist", allow = ["192.0.2.0/24"] }"#,
        "",
    );
    let _hub = Hub::start_serving(&home);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", home.port)).unwrap();
    // A head announcing a body that never comes: the answer cannot wait for it.
    s.write_all(b"POST /pagopa/paForNode HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 100000\r\n\r\n<soapenv:Envelope")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("answered before the body");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The other routes are not the node's: still served.
    assert!(Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{}/healthz", home.port)])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_proxy_vouches_for_the_node_in_a_header() {
    let home = Home::new();
    configure(
        &home,
        "",
        r#"node_auth = { mode = "proxy", allow = ["127.0.0.1/32"], subject_header = "X-Client-Subject", subject = "CN=nodo.pagopa.test" }"#,
        "",
    );
    let _hub = Hub::start_serving(&home);
    let post = |header: Option<&str>| {
        let mut args = vec![
            "-s".to_string(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "-H".into(),
            "Content-Type: text/xml".into(),
            "--data-binary".into(),
            verify_body("301000000000000000"),
        ];
        if let Some(h) = header {
            args.extend(["-H".into(), format!("X-Client-Subject: {h}")]);
        }
        args.push(format!("http://127.0.0.1:{}/pagopa/paForNode", home.port));
        stdout(&Command::new("curl").args(&args).output().unwrap())
    };
    assert_eq!(post(None), "401");
    assert_eq!(post(Some("CN=someone.test,O=Someone")), "403");
    assert_eq!(post(Some("CN=nodo.pagopa.test,O=PagoPA,C=IT")), "200");
}

#[test]
fn beyond_loopback_node_auth_is_required() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", home.port),
        &format!("listen = \"0.0.0.0:{}\"", home.port),
    );
    std::fs::write(home.config(), &cfg).unwrap();
    let v = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(!v.status.success());
    let said = format!("{}{}", stdout(&v), stderr(&v));
    assert!(said.contains("pagopa.node_auth"), "{said}");
    let run = home.snodo(&["run", "-c", "config.toml"]);
    assert!(!run.status.success());
    let said = format!("{}{}", stdout(&run), stderr(&run));
    assert!(said.contains("pagopa.node_auth"), "{said}");
    // Saying "none" explicitly is accepted.
    configure(&home, "", "node_auth = \"none\"", "");
    let v = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
}

#[test]
fn a_short_admin_token_is_refused() {
    let home = Home::new();
    configure(&home, "", "", "");
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        "admin_token = \"${SNODO_ADMIN_TOKEN:-}\"",
        "admin_token = \"short-token\"",
    );
    std::fs::write(home.config(), cfg).unwrap();
    let v = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(!v.status.success());
    assert!(format!("{}{}", stdout(&v), stderr(&v)).contains("http.admin_token"));
}

/// `snodo sim` calls the hub as the node does: over https with the private CA and the node's
/// client certificate (the TLS benchmark, ops/bench/soap_tls.sh, drives it this way); another
/// subject's certificate gets no answer.
#[test]
fn the_sim_calls_over_tls_with_the_nodes_certificate() {
    let home = tls_home();
    home.import_rows("SIMTLS", &[Row::tari("SIMTLS", 1, 4200)]);
    let notice = home.positions(&["--iud", "SIMTLS"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        home.path().join("notices.txt"),
        format!("{PADOVA};{notice}\n"),
    )
    .unwrap();
    let _hub = start_tls(&home);
    let sim = |client: &str| {
        let o = Command::new(BIN)
            .args([
                "sim",
                "-c",
                "config.toml",
                "--notices",
                "notices.txt",
                "--verify-only",
                "--ca-file",
                "ca.pem",
                "--client-cert",
                &format!("{client}.pem"),
                "--client-key",
                &format!("{client}.key"),
            ])
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .output()
            .expect("snodo sim");
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    // The URL defaults to https:// because the configuration has [http.tls].
    let report = sim("node");
    assert!(
        report.contains("paVerifyPaymentNotice calls=1 ok=1 ko=0 err=0"),
        "{report}"
    );
    assert!(report.contains("https://127.0.0.1:"), "{report}");
    let report = sim("stranger");
    assert!(
        report.contains("paVerifyPaymentNotice calls=1 ok=0 ko=0 err=1"),
        "{report}"
    );
}

/// `snodo reload` reaches a hub serving https whose certificate chains to a private CA when it
/// is told that CA, and says why not when it is not.
#[test]
fn reload_over_tls_trusts_the_private_ca() {
    let home = tls_home();
    let token = "tls-reload-admin-token-0123456789abcdef";
    let child = Command::new(BIN)
        .args(["run", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .env("SNODO_ADMIN_TOKEN", token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("snodo run");
    let hub = Hub(child);
    assert!(
        wait_for(20, || curl(&home, "", "GET", "/readyz", None, &[]).0 == 200),
        "the hub did not serve https"
    );
    let reload = |extra: &[&str]| {
        Command::new(BIN)
            .args(["reload", "-c", "config.toml"])
            .args(extra)
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .env("SNODO_ADMIN_TOKEN", token)
            .output()
            .expect("snodo reload")
    };
    let trusted = reload(&["--ca-file", "ca.pem"]);
    assert!(
        trusted.status.success(),
        "{}{}",
        stdout(&trusted),
        stderr(&trusted)
    );
    assert!(
        stdout(&trusted).contains("\"outcome\":\"applied\""),
        "{}",
        stdout(&trusted)
    );
    let untrusted = reload(&[]);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("cannot reach the hub at https://"),
        "{}",
        stderr(&untrusted)
    );
    hub.terminate();
}

/// The web console's session cookie is `Secure` when the hub speaks TLS (docs/CONSOLE.md).
#[test]
fn the_console_cookie_is_secure_under_tls() {
    let home = tls_home();
    let _hub = start_tls(&home);
    let o = Command::new("curl")
        .args([
            "-si",
            "-m",
            "10",
            "--cacert",
            "ca.pem",
            "-d",
            &format!("token={KEY_PADOVA}"),
            &format!("https://127.0.0.1:{}/console/login", home.port),
        ])
        .current_dir(home.path())
        .output()
        .expect("curl");
    let head = stdout(&o);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
}
