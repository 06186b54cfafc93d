//! Shared harness for the end-to-end tests: a scratch hub home with its own config, flow files
//! built row by row, and the real `snodo` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_snodo");

pub const HEADER_1_4: &str = "IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovuto;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio;flgGeneraIuv;flagMultiBeneficiario;codiceFiscaleEnteSecondario;denominazioneEnteSecondario;ibanAccreditoEnteSecondario;indirizzoEnteSecondario;civicoEnteSecondario;capEnteSecondario;localitaEnteSecondario;provinciaEnteSecondario;nazioneEnteSecondario;datiSpecificiRiscossioneEnteSecondario;causaleVersamentoEnteSecondario;importoVersamentoEnteSecondario;azione";

/// A hub home in a temp dir: `config.toml` (the demo's entities, data under `var/`, fast polls).
pub struct Home {
    pub dir: tempfile::TempDir,
    /// The port of `http.listen`, free when the home was made.
    pub port: u16,
}

impl Home {
    pub fn new() -> Self {
        Self::with_chunk_rows(20_000)
    }

    pub fn with_chunk_rows(chunk: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let demo = std::fs::read_to_string(repo().join("config/demo.toml")).expect("demo config");
        let cfg = demo
            .replace(
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                "data_dir = \"var\"",
                &format!("data_dir = \"var\"\nimport_chunk_rows = {chunk}"),
            )
            .replace(
                "schedule = \"*/5 * * * * *\"",
                "schedule = \"* * * * * *\", settle = \"0s\"",
            )
            .replace(
                "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
                &repo()
                    .join("adapters/specs/mypay/tassonomia.csv")
                    .display()
                    .to_string(),
            );
        std::fs::write(dir.path().join("config.toml"), cfg).expect("write config");
        Self { dir, port }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    /// Appends `text` (tables) to the configuration.
    pub fn append_config(&self, text: &str) {
        let mut cfg = std::fs::read_to_string(self.config()).expect("config");
        cfg.push_str(text);
        std::fs::write(self.config(), cfg).expect("write config");
    }

    /// Runs `snodo <args>` with this home as working directory.
    pub fn snodo(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.path())
            .env("SNODO_LOG", "warn")
            .output()
            .expect("run snodo")
    }

    pub fn import(&self, flow: &Path, out: &Path) -> Output {
        self.snodo(&[
            "import",
            "-c",
            "config.toml",
            "--entity",
            "c_g224",
            "--out",
            out.to_str().unwrap(),
            flow.to_str().unwrap(),
        ])
    }

    /// Imports `rows` as c_g224's flow `iuf` with `snodo import`; every row must be accepted.
    pub fn import_rows(&self, iuf: &str, rows: &[Row]) {
        let flow = write_zip(
            self.path(),
            &format!("c_g224-{iuf}-1_4"),
            csv_text(rows).as_bytes(),
        );
        let o = self.import(&flow, &self.path().join("out"));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("accepted={} rejected=0", rows.len())),
            "{}",
            stdout(&o)
        );
    }

    /// Positions of c_g224 as JSON values.
    pub fn positions(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["positions", "-c", "config.toml", "--entity", "c_g224"];
        args.extend_from_slice(extra);
        let out = self.snodo(&args);
        assert!(
            out.status.success(),
            "positions failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid personal fiscal code made from a number (distinct numbers give distinct codes).
pub fn fiscal_code(n: u32) -> String {
    let letters = b"BCDFGHLMNPRSTVZ";
    let l = |k: u32| letters[(k % letters.len() as u32) as usize] as char;
    let months = b"ABCDEHLMPRST";
    let first15 = format!(
        "{}{}{}{}{}{}{:02}{}{:02}A562",
        l(n),
        l(n / 15),
        l(n / 225),
        l(n / 3375),
        l(n / 50625),
        l(n / 759375),
        50 + n % 50,
        months[(n % 12) as usize] as char,
        1 + n % 28,
    );
    let c = snodo_core::PersonalFiscalCode::check_char(&first15).expect("check char");
    format!("{first15}{c}")
}

/// One 1_4 row with every field in place; tweak with `set`.
#[derive(Clone)]
pub struct Row(pub Vec<String>);

impl Row {
    /// A valid TARI insert for c_g224 asking for a generated IUV.
    pub fn tari(iud: &str, n: u32, cents: u64) -> Self {
        let mut f = vec![String::new(); 35];
        f[0] = iud.into();
        f[2] = "F".into();
        f[3] = fiscal_code(n);
        f[4] = format!("Cittadino {n}");
        f[5] = "Via Roma".into();
        f[6] = "1".into();
        f[7] = "35100".into();
        f[8] = "Padova".into();
        f[9] = "PD".into();
        f[10] = "IT".into();
        f[11] = format!("c{n}@example.it");
        f[12] = "2027-06-30".into();
        f[13] = format!("{}.{:02}", cents / 100, cents % 100);
        f[15] = "TARI".into();
        f[17] = format!("TARI 2027 utenza {n}");
        f[18] = "9/0101100IM/".into();
        f[20] = "true".into();
        f[21] = "false".into();
        f[34] = "I".into();
        Row(f)
    }

    pub fn set(mut self, col: usize, v: &str) -> Self {
        self.0[col] = v.into();
        self
    }

    pub fn line(&self) -> String {
        self.0.join(";")
    }

    /// The same row as a `position-json` message: the 1_4 column names, empty fields left out.
    pub fn json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = HEADER_1_4
            .split(';')
            .zip(&self.0)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The Kafka-protocol broker the tests use (`ops/kafka.sh` starts it).
pub fn kafka_brokers() -> String {
    std::env::var("SNODO_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test run uses (topics, groups, databases).
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{tag}_{}_{nanos:x}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh PostgreSQL database for one test, dropped when this is dropped; `url` selects it.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag).to_lowercase();
        let ok = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot create database {name}: is PostgreSQL running on 127.0.0.1:5432 (ops/setup.sh)?");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        Self { name, url }
    }

    /// One value from a query, as text.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &self.name,
                "-tAc",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .status();
    }
}

pub fn csv_text(rows: &[Row]) -> String {
    let mut s = String::from(HEADER_1_4);
    s.push('\n');
    for r in rows {
        s.push_str(&r.line());
        s.push('\n');
    }
    s
}

/// Writes `<dir>/<stem>.zip` holding `<stem>.csv` with `content`.
pub fn write_zip(dir: &Path, stem: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(format!("{stem}.zip"));
    let f = std::fs::File::create(&path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    z.start_file(
        format!("{stem}.csv"),
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
    path
}

/// The text of the single CSV inside an outcome zip.
pub fn unzip_text(path: &Path) -> String {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_eq!(z.len(), 1, "an outcome zip holds one file");
    let mut f = z.by_index(0).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    s
}

/// Waits up to `secs` for `cond`.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cond()
}

/// `snodo run` on a home, killed when dropped.
pub struct Hub(pub Child);

impl Hub {
    pub fn start(home: &Home) -> Self {
        let child = Command::new(BIN)
            .args(["run", "-c", "config.toml"])
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snodo run");
        Hub(child)
    }

    /// Starts the hub with its log (`SNODO_LOG=info`) in `log`, and waits until it serves.
    pub fn start_logging(home: &Home, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(BIN)
            .args(["run", "-c", "config.toml"])
            .current_dir(home.path())
            .env("SNODO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start snodo run");
        Self::serving(Hub(child), home)
    }

    /// Starts the hub with extra environment variables, and waits until it serves.
    pub fn start_serving_with_env(home: &Home, env: &[(&str, &str)]) -> Self {
        let child = Command::new(BIN)
            .args(["run", "-c", "config.toml"])
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snodo run");
        Self::serving(Hub(child), home)
    }

    /// Starts the hub and waits until its HTTP server answers.
    pub fn start_serving(home: &Home) -> Self {
        Self::serving(Self::start(home), home)
    }

    fn serving(hub: Self, home: &Home) -> Self {
        let url = format!("http://127.0.0.1:{}/readyz", home.port);
        let up = wait_for(20, || {
            Command::new("curl")
                .args(["-sf", &url])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        assert!(up, "the hub did not start serving on port {}", home.port);
        hub
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let ok = wait_for(20, || matches!(self.0.try_wait(), Ok(Some(_))));
        assert!(ok, "snodo run did not stop after SIGTERM");
        self.0.wait().unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// POSTs a SOAP body to the hub on loopback and returns the answer's body (HTTP/1.1, one
/// connection per call: enough for tests, with no client library).
pub fn post_soap(port: u16, action: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the hub");
    write!(
        stream,
        "POST /pagopa/paForNode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: {action}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) => {
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "unexpected answer: {head}"
            );
            body.to_string()
        }
        None => panic!("not an HTTP answer: {answer}"),
    }
}

/// POSTs a node call to the hub and returns the answer after checking it against the official
/// XSD (xmllint, from ops/setup.sh).
pub fn node_call(home: &Home, action: &str, body: &str) -> String {
    let text = post_soap(home.port, action, body);
    assert_node_answer(home, &text);
    text
}

/// Validates a whole SOAP envelope against paForNode.xsd and the envelope's schema.
pub fn assert_node_answer(home: &Home, envelope: &str) {
    let file = home.path().join(format!(
        "answer-{}-{:?}.xml",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&file, envelope).expect("write the answer");
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(repo().join("tests/data/soap-paForNode.xsd"))
        .arg(&file)
        .output()
        .expect("xmllint not found: run ops/setup.sh");
    assert!(
        out.status.success(),
        "answer not valid against paForNode.xsd:\n{}\n{envelope}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const BROKER: &str = "80007580279";
pub const STATION: &str = "80007580279_01";
pub const PADOVA: &str = "00644060287";

/// A paSendRTV2 request as the node would send it for a Padova notice.
pub fn send_rt_v2(notice: &str, receipt_id: &str, amount: &str) -> String {
    let receipt = snodo_adapters::pagopa::ReceiptV2 {
        receipt_id: receipt_id.into(),
        notice_number: notice.into(),
        fiscal_code: PADOVA.into(),
        outcome: snodo_adapters::pagopa::Outcome::Ok,
        creditor_reference_id: notice[1..].into(),
        payment_amount: amount.into(),
        description: "TARI".into(),
        company_name: "Comune di Padova".into(),
        debtor: snodo_adapters::pagopa::Subject {
            unique_identifier: snodo_adapters::pagopa::UniqueIdentifier {
                kind: snodo_adapters::pagopa::EntityType::F,
                value: "RSSMRA85T10A562S".into(),
            },
            full_name: "Mario Rossi".into(),
            ..Default::default()
        },
        transfer_list: vec![snodo_adapters::pagopa::ReceiptTransferV2 {
            id_transfer: 1,
            transfer_amount: amount.into(),
            fiscal_code_pa: PADOVA.into(),
            company_name: None,
            destination: snodo_adapters::pagopa::ReceiptDestination::Iban(
                "IT60X0542811101000000123456".into(),
            ),
            remittance_information: "/RFB/x/TXT/TARI".into(),
            transfer_category: "9/0101100IM/".into(),
            metadata: Vec::new(),
        }],
        id_psp: "BCITITMM".into(),
        psp_company_name: "Intesa Sanpaolo".into(),
        id_channel: "BCITITMM_01".into(),
        channel_description: "app".into(),
        payment_date_time: Some("2026-11-26T10:00:00".into()),
        ..Default::default()
    };
    snodo_adapters::pagopa::render_request(&snodo_adapters::pagopa::Request::SendRtV2(
        snodo_adapters::pagopa::SendRtV2Request {
            id_pa: PADOVA.into(),
            id_broker_pa: BROKER.into(),
            id_station: STATION.into(),
            receipt,
        },
    ))
}

/// The loopback OpenSSH server `ops/sshd.sh` (run by `ops/setup.sh`) starts for the sftp tests.
/// Missing, it fails the test saying so: sftp tests never skip.
pub struct TestSshd {
    pub port: String,
    pub user: String,
    pub home: String,
    pub key: PathBuf,
    pub fingerprint: String,
}

pub fn test_sshd() -> TestSshd {
    let dir = PathBuf::from(
        std::env::var("SNODO_TEST_SSHD_DIR").unwrap_or_else(|_| "/var/tmp/snodo-sshd".into()),
    );
    let read = |f: &str| match std::fs::read_to_string(dir.join(f)) {
        Ok(s) => s.trim().to_string(),
        Err(e) => panic!(
            "the test sshd is not set up ({}: {e}): run ops/setup.sh (or ops/sshd.sh) first",
            dir.join(f).display()
        ),
    };
    let port = std::env::var("SNODO_TEST_SSHD_PORT").unwrap_or_else(|_| read("port"));
    if let Err(e) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
        panic!("the test sshd is not running on 127.0.0.1:{port} ({e}): run ops/setup.sh (or ops/sshd.sh) first");
    }
    TestSshd {
        port,
        user: read("user"),
        home: read("home"),
        key: dir.join("client_ed25519"),
        fingerprint: read("host_fingerprint"),
    }
}

impl TestSshd {
    /// A fresh remote folder name (not created) under the test user's home.
    pub fn fresh(&self, tag: &str) -> String {
        format!(
            "{}/{tag}-{}-{}",
            self.home,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        )
    }

    /// `{ connector = "sftp", host, port, user, key, known_host, path = "<path>"` — close it
    /// with ` }` (after adding keys).
    pub fn connector(&self, path: &str) -> String {
        format!(
            "{{ connector = \"sftp\", host = \"127.0.0.1\", port = {}, user = \"{}\", key = \"{}\", known_host = \"{}\", path = \"{path}\"",
            self.port,
            self.user,
            self.key.display(),
            self.fingerprint
        )
    }

    fn sftp(&self, commands: &str) -> Output {
        let mut child = Command::new("sftp")
            .args(["-q", "-b", "-", "-P", &self.port, "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the OpenSSH sftp client (ops/setup.sh installs it)");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(commands.as_bytes()).expect("sftp stdin");
        }
        child.wait_with_output().expect("sftp")
    }

    /// Runs `sftp -b -` with these commands; true when every command succeeded.
    pub fn batch(&self, commands: &str) -> bool {
        self.sftp(commands).status.success()
    }

    pub fn get(&self, remote: &str, local: &Path) -> bool {
        self.batch(&format!("get {remote} {}\n", local.display()))
    }

    /// The names in a remote folder, hidden ones included (not `.`/`..`), sorted; None when
    /// the folder cannot be listed (missing).
    pub fn ls(&self, dir: &str) -> Option<Vec<String>> {
        let o = self.sftp(&format!("ls -1a {dir}\n"));
        if !o.status.success() {
            return None;
        }
        let mut names: Vec<String> = stdout(&o)
            .lines()
            .filter(|l| !l.starts_with("sftp>"))
            .filter_map(|l| l.trim().rsplit('/').next().map(str::to_string))
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .collect();
        names.sort();
        Some(names)
    }

    /// `ls -l`-style sizes of the regular files in a remote folder (hidden ones included).
    pub fn sizes(&self, dir: &str) -> Option<Vec<(String, u64)>> {
        let o = self.sftp(&format!("ls -la {dir}\n"));
        if !o.status.success() {
            return None;
        }
        let mut v: Vec<(String, u64)> = stdout(&o)
            .lines()
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let size = f.get(4)?.parse().ok()?;
                let name = f.last()?.rsplit('/').next()?.to_string();
                Some((name, size))
            })
            .collect();
        v.sort();
        Some(v)
    }
}

/// An HTTP answer: status, headers (lower-case names) and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 exchange on loopback (a connection per call, no client library): `key` goes in
/// as a bearer token, a body as JSON.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `GET path` with a bearer key.
pub fn get(port: u16, path: &str, key: &str) -> HttpAnswer {
    http(port, "GET", path, Some(key), &[], None)
}

/// The demo's API keys.
pub const KEY_PADOVA: &str = "demo-key-c_g224-padova";
pub const KEY_FELTRE: &str = "demo-key-c_d530-feltre";

/// A Padova position in the API's (MyPay 1_4) JSON fields.
pub fn api_position(iud: &str, cents: u64) -> serde_json::Value {
    serde_json::json!({
        "IUD": iud,
        "tipoIdentificativoUnivoco": "F",
        "codiceIdentificativoUnivoco": "RSSMRA85T10A562S",
        "anagraficaPagatore": "Mario Rossi",
        "importoDovuto": format!("{}.{:02}", cents / 100, cents % 100),
        "tipoDovuto": "TARI",
        "dataEsecuzionePagamento": "2099-01-31",
        "causaleVersamento": format!("TARI {iud}"),
        "datiSpecificiRiscossione": "9/0101100IM/",
        "flgGeneraIuv": true,
    })
}

// ---------------------------------------------------------------------------------------------
// Certificates made with openssl, for the TLS tests
// ---------------------------------------------------------------------------------------------

/// Runs `openssl` in `dir`, failing the test with its error output.
pub fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// A private CA for tests: `name.pem` and `name.key` in `dir`, subject `/CN=<name>`.
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// `name.pem` / `name.key` signed by `ca`, with `subj` and the extensions `ext`.
pub fn leaf(dir: &Path, ca: &str, name: &str, subj: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subj,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// [`post_soap`] of a body that need not be UTF-8.
pub fn post_soap_bytes(port: u16, action: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the hub");
    let head = format!(
        "POST /pagopa/paForNode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: {action}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) => {
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "unexpected answer: {head}"
            );
            body.to_string()
        }
        None => panic!("not an HTTP answer: {answer}"),
    }
}

/// What an entity system received, per request: (path, `Idempotency-Key`, body).
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// An entity system on loopback that accepts every receipt pushed to it (200), keeping each
/// request's path, idempotency key (the receipt id) and body.
pub fn accepting_receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Received = Default::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or_default().to_string();
            let (mut len, mut key) = (0, String::new());
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("idempotency-key") {
                        key = v.trim().to_string();
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push((path, key, String::from_utf8_lossy(&body).into_owned()));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, seen)
}

/// The events of `kind` a hub home's SQLite store holds, oldest first.
pub fn store_events(home: &Home, kind: &str) -> Vec<snodo_store::Event> {
    use snodo_store::EventStore;
    let store = snodo_store::SqliteStore::open(&home.path().join("var/snodo.db")).expect("store");
    store
        .events_after(0, 100_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// (HTTP status, body) of a call to the hub's `/admin` routes with `token`.
pub fn admin_call(port: u16, token: &str, method: &str, path: &str) -> (String, String) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (code.to_string(), body.to_string())
}

/// `snodo sim ARGS` in `home`, which must succeed.
pub fn run_sim(home: &Home, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("sim")
        .args(args)
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .output()
        .expect("run snodo sim");
    assert!(
        out.status.success(),
        "snodo sim {args:?} failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `snodo sim --serve` (the node's FdR 3 REST and legacy SOAP over a ledger's published flows),
/// killed when dropped.
pub struct SimPsps(Child);

impl SimPsps {
    pub fn serve(home: &Home, ledger: &Path, port: u16) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(BIN)
            .args(["sim", "--ledger"])
            .arg(ledger)
            .args([
                "--serve",
                &format!("127.0.0.1:{port}"),
                "--fdr-key",
                "fdr-k",
                "--fdr-password",
                "fdr-pw",
            ])
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snodo sim --serve");
        let out = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(out);
        let mut said = String::new();
        while !said.contains("sim: reporting") {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            said.push_str(&line);
        }
        assert!(
            said.contains("sim: reporting"),
            "sim did not serve flows: {said:?}"
        );
        // Keep the pipe drained so the simulator never blocks writing to it.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        SimPsps(child)
    }
}

impl Drop for SimPsps {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command's stdout as JSON values, one a line; the command must have succeeded.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `count` TARI positions of c_g224 (IUDs `FDR000`…) paid by the simulated node, recorded in
/// `ledger`.
pub fn sim_paid_home(ledger: &Path, count: u32) -> Home {
    let rows: Vec<Row> = (0..count)
        .map(|n| Row::tari(&format!("FDR{n:03}"), 1000 + n, 1000 + u64::from(n) * 7))
        .collect();
    sim_paid_home_rows(ledger, &rows)
}

/// The `[pagopa.fdr]` table pointing at `snodo sim --serve` on `port` over FdR 3 REST, pulled
/// only when asked (`snodo reports pull`): its schedule comes once a year.
pub fn sim_fdr_table(port: u16) -> String {
    format!(
        "\n[pagopa.fdr]\nmode = \"rest\"\nurl = \"http://127.0.0.1:{port}/fdr-org/service/v1\"\nsubscription_key = \"fdr-k\"\nschedule = \"0 0 3 1 1 *\"\n"
    )
}

/// `rows` (positions of c_g224) imported and paid by the simulated node, recorded in `ledger`.
pub fn sim_paid_home_rows(ledger: &Path, rows: &[Row]) -> Home {
    let home = Home::new();
    let count = rows.len();
    home.import_rows("FDRSIM", rows);
    let hub = Hub::start_serving(&home);
    let n = count.to_string();
    let r = stdout(&run_sim(
        &home,
        &[
            "-c",
            "config.toml",
            "--from-config",
            "--count",
            &n,
            "--concurrency",
            "8",
            "--ledger",
            ledger.to_str().unwrap(),
        ],
    ));
    assert!(
        r.contains(&format!(
            "total payments={count} completed={count} faulted=0 errors=0"
        )),
        "{r}"
    );
    hub.terminate();
    home
}

/// The Rome date of a ledger's payments (publishing that date, not "today", keeps a run that
/// crosses midnight whole).
pub fn sim_ledger_date(ledger: &Path) -> String {
    let text = std::fs::read_to_string(ledger.join("payments.jsonl")).expect("ledger");
    let dates: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "payment")
        .map(|v| v["date"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dates.len(), 1, "payments on one day: {dates:?}");
    dates.into_iter().next().unwrap()
}

/// A paVerifyPaymentNotice envelope.
pub fn verify_body(id_pa: &str, broker: &str, station: &str, notice: &str) -> String {
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd">
  <soapenv:Header/>
  <soapenv:Body>
    <paf:paVerifyPaymentNoticeReq>
      <idPA>{id_pa}</idPA><idBrokerPA>{broker}</idBrokerPA><idStation>{station}</idStation>
      <qrCode><fiscalCode>{id_pa}</fiscalCode><noticeNumber>{notice}</noticeNumber></qrCode>
    </paf:paVerifyPaymentNoticeReq>
  </soapenv:Body>
</soapenv:Envelope>"#
    )
}

/// The `faultCode` of a SOAP answer, if it has one.
pub fn fault_of(answer: &str) -> Option<String> {
    let start = answer.find("<faultCode>")? + "<faultCode>".len();
    let end = answer[start..].find("</faultCode>")? + start;
    Some(answer[start..end].to_string())
}

/// An intake of Padova's giornale di cassa (OPI) from `var/c_g224/tesoreria`, polled every
/// second: append it with [`Home::append_config`].
pub const PADOVA_TREASURY_INTAKE: &str = r#"
[[pipelines]]
name = "padova-tesoreria"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/tesoreria", schedule = "* * * * * *", settle = "0s" }
decode = "opi"
to = "treasury"
"#;

/// `snodo sim --serve` (Checkout stand-in, and the entity system's stand-in when `external` names
/// its positions file) on `port`, killed when dropped.
pub struct StandIns {
    child: Child,
    pub port: u16,
}

impl StandIns {
    pub fn start(home: &Home, port: u16, external: Option<&Path>) -> Self {
        use std::io::{BufRead, BufReader};
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "-c", "config.toml", "--serve"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--checkout-key", "demo"]);
        if let Some(f) = external {
            cmd.arg("--external-file").arg(f);
        }
        let mut child = cmd
            .current_dir(home.path())
            .env("SNODO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snodo sim --serve");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read");
        assert!(line.contains("stand-ins on"), "sim did not start: {line:?}");
        Self { child, port }
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A demo home whose Checkout and entity system are the stand-ins on `sim_port`.
pub fn home_with_stand_ins(sim_port: u16) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        "http://127.0.0.1:8090",
        &format!("http://127.0.0.1:{sim_port}"),
    );
    std::fs::write(home.config(), cfg).unwrap();
    home
}
