//! The store over TLS to the local PostgreSQL, which `ops/pg-tls.sh` (run by `ops/setup.sh`, and
//! again here: it is idempotent) serves with a certificate of a test CA: `verify-full` with that
//! CA works end to end, and a certificate from another CA, or one that does not name the host,
//! stops the hub with a message that says why.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn tls_dir() -> PathBuf {
    std::env::var("SNODO_PG_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/lib/postgresql/snodo-tls"))
}

/// The server's test CA, after making sure the server serves TLS.
fn server_ca() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("ops/pg-tls.sh"))
        .output()
        .expect("run ops/pg-tls.sh");
    assert!(
        out.status.success(),
        "ops/pg-tls.sh failed (run ops/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tls_dir().join("ca.pem")
}

/// A CA that signed nothing the server has.
fn other_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.pem");
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=not the database's CA", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "openssl could not make a CA (ops/setup.sh installs it)");
    ca
}

fn home_on(store: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("store = \"sqlite\"", &format!("store = \"{store}\""));
    std::fs::write(home.config(), cfg).unwrap();
    home
}

/// `snodo run` on `home`, which must stop by itself (the store cannot be opened): its stderr.
fn refused_start(home: &Home) -> String {
    let mut child = Command::new(BIN)
        .args(["run", "-c", "config.toml"])
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = wait_for(20, || matches!(child.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = child.kill();
        panic!("the hub started although it must not trust the database");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn the_hub_talks_to_postgresql_over_verified_tls() {
    let ca = server_ca();
    let db = PgDb::new("tls");
    let app = unique("snodo_tls").to_lowercase();
    let url = format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=verify-full&sslrootcert={}&application_name={app}",
        db.name,
        ca.display()
    );
    let home = home_on(&url);
    home.import_rows("TLS1", &[Row::tari("T", 1, 4200)]);
    let notice = home.positions(&["--iud", "T"])[0]["notice_number"]
        .as_str()
        .unwrap()
        .to_string();
    let hub = Hub::start_serving(&home);
    let ok = post_soap(
        home.port,
        "paSendRTV2",
        &send_rt_v2(&notice, "tls-rt-1", "42.00"),
    );
    assert!(ok.contains("<outcome>OK</outcome>"), "{ok}");
    assert_eq!(
        db.query("SELECT count(*) FROM receipts WHERE receipt_id = 'tls-rt-1'"),
        "1"
    );
    // The hub's own connections are the encrypted ones.
    let encrypted = db.query(&format!(
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_ssl s
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{app}'"
    ));
    let (tls, all) = encrypted.split_once('/').unwrap();
    assert!(
        all != "0" && tls == all,
        "TLS connections / all: {encrypted}"
    );
    drop(hub);
}

#[test]
fn a_database_certificate_the_hub_cannot_verify_stops_it_with_the_reason() {
    let ca = server_ca();
    let db = PgDb::new("tlsbad");
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());

    // Another CA: refused at the handshake, and the message says so.
    let home = home_on(&format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=verify-full&sslrootcert={}",
        db.name,
        wrong.display()
    ));
    let err = refused_start(&home);
    assert!(
        err.contains("sslmode=verify-full") && err.contains("invalid peer certificate"),
        "{err}"
    );
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The right CA but a host name the certificate does not carry: verify-full refuses,
    // verify-ca (the chain only) accepts.
    let misnamed = |mode: &str| {
        format!(
            "postgres://postgres@db.invalid:5432/{}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            db.name,
            ca.display()
        )
    };
    let home = home_on(&misnamed("verify-full"));
    let err = refused_start(&home);
    assert!(err.contains("not valid for name \"db.invalid\""), "{err}");
    let home = home_on(&misnamed("verify-ca"));
    let out = home.snodo(&["positions", "-c", "config.toml", "--entity", "c_g224"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // require: encrypted, the certificate not checked (the other CA is no obstacle).
    let home = home_on(&format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=require&sslrootcert={}",
        db.name,
        wrong.display()
    ));
    let out = home.snodo(&["positions", "-c", "config.toml", "--entity", "c_g224"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // verify-full without a CA file is a configuration error naming the option.
    let home = home_on(&format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=verify-full",
        db.name
    ));
    let err = refused_start(&home);
    assert!(err.contains("sslrootcert"), "{err}");
}
