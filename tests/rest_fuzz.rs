//! A bounded fuzz pass over the REST API from its own OpenAPI document (schemathesis, installed by
//! ops/setup.sh): generated valid and invalid requests on every operation; none may get a 5xx,
//! and every answer must be as the document says (status, schema, content type, headers), which
//! keeps docs/openapi.json true.

mod common;

use common::*;

#[test]
fn no_generated_request_gets_a_server_error() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    std::fs::write(
        home.config(),
        format!("{cfg}\n[api]\nrate_per_second = 100000\nrate_burst = 100000\n"),
    )
    .unwrap();
    let _hub = Hub::start_serving(&home);
    let out = std::process::Command::new("bash")
        .arg(repo().join("ops/fuzz-api.sh"))
        .arg(format!("http://127.0.0.1:{}", home.port))
        .arg(KEY_PADOVA)
        .arg("15")
        .env("FUZZ_IPA", "c_g224")
        .env("FUZZ_SEED", "20261126")
        .env("FUZZ_MAX_SECONDS", "600")
        .output()
        .expect("run ops/fuzz-api.sh");
    assert!(
        out.status.success(),
        "the fuzz pass found a server error or an undocumented answer:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}
