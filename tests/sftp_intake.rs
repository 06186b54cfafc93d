//! `snodo run` with an `sftp` drop folder and outbox on the loopback OpenSSH server that
//! `ops/sshd.sh` (run by `ops/setup.sh`) starts: a flow uploaded with the OpenSSH `sftp` client
//! comes back as outcome zips on the same server, and is archived there.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Sshd {
    port: String,
    user: String,
    home: String,
    key: PathBuf,
    fingerprint: String,
}

fn sshd() -> Sshd {
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
    Sshd {
        port,
        user: read("user"),
        home: read("home"),
        key: dir.join("client_ed25519"),
        fingerprint: read("host_fingerprint"),
    }
}

impl Sshd {
    /// Runs `sftp -b -` with these commands; true when every command succeeded.
    fn batch(&self, commands: &str) -> bool {
        use std::io::Write;
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
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the OpenSSH sftp client (ops/setup.sh installs it)");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(commands.as_bytes()).expect("sftp stdin");
        }
        child.wait().expect("sftp").success()
    }

    fn get(&self, remote: &str, local: &Path) -> bool {
        self.batch(&format!("get {remote} {}\n", local.display()))
    }
}

#[test]
fn a_flow_dropped_with_the_sftp_client_gets_its_outcome_files_on_the_server() {
    let s = sshd();
    let base = format!(
        "{}/intake-{}-{}",
        s.home,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    );
    let home = Home::new();
    let remote = |path: &str| {
        format!(
            "{{ connector = \"sftp\", host = \"127.0.0.1\", port = {}, user = \"{}\", key = \"{}\", known_host = \"{}\", path = \"{base}/{path}\"",
            s.port,
            s.user,
            s.key.display(),
            s.fingerprint
        )
    };
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let from_dir = "from = { connector = \"dir\", path = \"var/c_g224/in\", schedule = \"* * * * * *\", settle = \"0s\" }";
    let out_dir = "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }";
    assert!(cfg.contains(from_dir) && cfg.contains(out_dir), "{cfg}");
    let cfg = cfg
        .replace(
            from_dir,
            &format!(
                "from = {}, schedule = \"* * * * * *\", settle = \"0s\" }}",
                remote("in")
            ),
        )
        .replace(out_dir, &format!("outcomes = {} }}", remote("out")));
    std::fs::write(home.config(), cfg).unwrap();

    let hub = Hub::start(&home);
    let rows = vec![
        Row::tari("R1", 1, 100),
        Row::tari("R2", 2, 200).set(13, "0"),
    ];
    let staged = write_zip(home.path(), "c_g224-SFTP1-1_4", csv_text(&rows).as_bytes());
    // What a well-behaved uploader does: a hidden name, renamed once complete.
    assert!(s.batch(&format!(
        "-mkdir {base}\n-mkdir {base}/in\nput {} {base}/in/.c_g224-SFTP1-1_4.zip.part\nrename {base}/in/.c_g224-SFTP1-1_4.zip.part {base}/in/c_g224-SFTP1-1_4.zip\n",
        staged.display()
    )));

    let got = home.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let scarti = got.join("scarti.zip");
    let iuv = got.join("iuv.zip");
    assert!(
        wait_for(30, || s
            .get(&format!("{base}/out/c_g224-SFTP1-1_4_SCARTI.zip"), &scarti)
            && s.get(&format!("{base}/out/c_g224-SFTP1-1_4_IUV.zip"), &iuv)),
        "outcome files appear on the server"
    );
    assert!(unzip_text(&scarti).contains("R2;"));
    assert_eq!(unzip_text(&iuv).lines().count(), 2);
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert!(
        wait_for(10, || s.get(
            &format!("{base}/in/archive/{month}/c_g224-SFTP1-1_4.zip"),
            &got.join("archived.zip")
        )),
        "the flow is archived on the server"
    );
    assert!(!s.get(
        &format!("{base}/in/c_g224-SFTP1-1_4.zip"),
        &got.join("left.zip")
    ));
    assert!(hub.terminate().success(), "clean exit on SIGTERM");
    assert_eq!(home.positions(&[]).len(), 1);
}
