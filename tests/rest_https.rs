//! Calls the hub makes while someone waits for it (pagoPA Checkout, an entity's own system) over
//! https: the server's certificate is verified against the trust store, which `SSL_CERT_FILE`
//! replaces; an untrusted server is refused, and the caller hears it in time.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A private CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (String, String, String) {
    let path = |n: &str| dir.join(n).display().to_string();
    ca(dir, "ca");
    leaf(
        dir,
        "ca",
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    );
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

/// Checkout and an entity system in one https server (Python's ssl), on `port`.
const SERVER: &str = r#"
import http.server, json, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/checkout/ec/v2/carts": return self.answer(404)
        if self.headers.get("Ocp-Apim-Subscription-Key") != "demo": return self.answer(401)
        self.answer(302, headers=[("Location", "https://127.0.0.1:%d/checkout/carts/T1" % port)])
    def do_GET(self):
        body = json.dumps({"amountCents": 700, "causale": "ZTL over https",
            "payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"}}).encode()
        self.answer(200, body, [("Content-Type", "application/json")])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn verify_veneto(port: u16, notice: &str) -> String {
    let body = format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"><soapenv:Body><paf:paVerifyPaymentNoticeReq><idPA>80007580279</idPA><idBrokerPA>{BROKER}</idBrokerPA><idStation>{STATION}</idStation><qrCode><fiscalCode>80007580279</fiscalCode><noticeNumber>{notice}</noticeNumber></qrCode></paf:paVerifyPaymentNoticeReq></soapenv:Body></soapenv:Envelope>"#
    );
    post_soap(port, "paVerifyPaymentNotice", &body)
}

#[test]
fn checkout_and_entity_systems_over_https_are_verified() {
    let tls_port = free_port();
    let home = Home::new();
    let (ca, cert, key) = certificates(home.path());
    let mut child = Command::new("python3")
        .args(["-c", SERVER, &tls_port.to_string(), &cert, &key])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let _server = Server(child);
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        "http://127.0.0.1:8090",
        &format!("https://127.0.0.1:{tls_port}"),
    );
    std::fs::write(home.config(), cfg).unwrap();

    let seg = snodo_core::SegregationCode::parse("03").unwrap();
    let notice = |n: u64| {
        snodo_core::Iuv::generate(seg, 950_000 + n)
            .unwrap()
            .notice_number()
            .unwrap()
            .as_str()
            .to_string()
    };
    let cart = |port: u16, iud: &str| {
        let p = http(
            port,
            "POST",
            "/api/v1/entities/c_g224/positions",
            Some(KEY_PADOVA),
            &[],
            Some(&api_position(iud, 700).to_string()),
        );
        assert_eq!(p.status, 201, "{}", p.body);
        let body = json!({"noticeNumbers": [p.json()["noticeNumber"]],
            "returnUrls": {"returnOkUrl": "https://a/ok", "returnCancelUrl": "https://a/ko", "returnErrorUrl": "https://a/err"}});
        http(
            port,
            "POST",
            "/api/v1/entities/c_g224/carts",
            Some(KEY_PADOVA),
            &[],
            Some(&body.to_string()),
        )
    };

    // Trusting the private CA: both calls go through.
    {
        let _hub = Hub::start_serving_with_env(&home, &[("SSL_CERT_FILE", &ca)]);
        let opened = cart(home.port, "TLS-1");
        assert_eq!(opened.status, 201, "{}", opened.body);
        assert_eq!(
            opened.json()["redirectUrl"],
            format!("https://127.0.0.1:{tls_port}/checkout/carts/T1")
        );
        let answer = verify_veneto(home.port, &notice(1));
        assert!(answer.contains("<amount>7.00</amount>"), "{answer}");
    }
    // The system's trust store does not know that CA: refused, and said so.
    let _hub =
        Hub::start_serving_with_env(&home, &[("SSL_CERT_FILE", &cert_of_nobody(home.path()))]);
    let refused = cart(home.port, "TLS-2");
    assert_eq!(refused.status, 502, "{}", refused.body);
    let detail = refused.json()["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("certificate") || detail.contains("tls") || detail.contains("connect"),
        "{detail}"
    );
    let answer = verify_veneto(home.port, &notice(2));
    assert!(answer.contains("PAA_SYSTEM_ERROR"), "{answer}");
}

/// A trust store with only an unrelated CA, so the test does not depend on the machine's.
fn cert_of_nobody(dir: &Path) -> String {
    ca(dir, "nobody");
    dir.join("nobody.pem").display().to_string()
}
