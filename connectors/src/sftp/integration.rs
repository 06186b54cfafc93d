//! Against the real OpenSSH server that `ops/sshd.sh` (run by `ops/setup.sh`) starts on
//! 127.0.0.1. Without it these tests fail, saying so: they never skip.
use super::*;

struct Sshd {
    port: u16,
    user: String,
    home: String,
    key: PathBuf,
    fingerprint: String,
    host_pub: String,
}

fn sshd() -> Sshd {
    let dir = PathBuf::from(
        std::env::var("SNODO_TEST_SSHD_DIR").unwrap_or_else(|_| "/var/tmp/snodo-sshd".into()),
    );
    let read = |f: &str| -> String {
        match fs::read_to_string(dir.join(f)) {
            Ok(s) => s.trim().to_string(),
            Err(e) => panic!(
                "the test sshd is not set up ({}: {e}): run ops/setup.sh (or ops/sshd.sh) first",
                dir.join(f).display()
            ),
        }
    };
    let port: u16 = std::env::var("SNODO_TEST_SSHD_PORT")
        .ok()
        .unwrap_or_else(|| read("port"))
        .parse()
        .expect("a port number");
    if let Err(e) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) {
        panic!(
            "the test sshd is not running on 127.0.0.1:{port} ({e}): run ops/setup.sh (or ops/sshd.sh) first"
        );
    }
    Sshd {
        port,
        user: read("user"),
        home: read("home"),
        key: dir.join("client_ed25519"),
        fingerprint: read("host_fingerprint"),
        host_pub: read("host_ed25519_key.pub"),
    }
}

impl Sshd {
    /// A fresh remote folder for one test.
    fn folder(&self, test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("{}/{test}-{}-{nanos}", self.home, std::process::id())
    }

    fn source(&self, path: &str, settle: &str, staging: &Path) -> SftpSourceConfig {
        SftpSourceConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            key: Some(self.key.clone()),
            passphrase_env: None,
            password_env: None,
            known_host: Some(self.fingerprint.clone()),
            known_hosts: None,
            path: path.into(),
            schedule: None,
            settle: settle.into(),
            after: After::Archive,
            timeout: "10s".into(),
            staging: Some(staging.to_path_buf()),
            marker: None,
        }
    }

    fn sink(&self, path: &str, overwrite: bool) -> SftpSinkConfig {
        SftpSinkConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            key: Some(self.key.clone()),
            passphrase_env: None,
            password_env: None,
            known_host: Some(self.fingerprint.clone()),
            known_hosts: None,
            path: path.into(),
            overwrite,
            timeout: "10s".into(),
        }
    }

    /// A session of its own to arrange and inspect the remote side.
    fn client(&self) -> Conn {
        Conn::new(self.sink("/", false).remote()).unwrap()
    }
}

fn put(c: &mut Conn, path: &str, bytes: &[u8], append: bool) {
    let p = PathBuf::from(path);
    c.run(|sftp| {
        if let Some(parent) = p.parent() {
            mkdirs(sftp, parent)?;
        }
        let flags = if append {
            OpenFlags::WRITE | OpenFlags::APPEND
        } else {
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
        };
        let mut f = sftp
            .open_mode(&p, flags, 0o644, OpenType::File)
            .map_err(ssh_at(&p))?;
        if append {
            // OpenSSH ignores APPEND on SFTP v3: write at the end explicitly.
            let len = f.stat().map_err(ssh_at(&p))?.size.unwrap_or(0);
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len)).map_err(io_at(&p))?;
        }
        f.write_all(bytes).map_err(io_at(&p))?;
        f.close().map_err(ssh_at(&p))
    })
    .unwrap();
}

fn read(c: &mut Conn, path: &str) -> Option<Vec<u8>> {
    let p = PathBuf::from(path);
    c.run(|sftp| {
        let mut f = match sftp.open(&p) {
            Ok(f) => f,
            Err(e) if is_no_such_file(&e) => return Ok(None),
            Err(e) => return Err(ssh_at(&p)(e)),
        };
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(io_at(&p))?;
        Ok(Some(v))
    })
    .unwrap()
}

fn names(c: &mut Conn, dir: &str) -> Vec<String> {
    let p = PathBuf::from(dir);
    let mut v: Vec<String> = c
        .run(|sftp| sftp.readdir(&p).map_err(ssh_at(&p)))
        .unwrap()
        .into_iter()
        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    v.sort();
    v
}

/// The source's own folder under `processing/`.
fn mine(src: &SftpSource) -> String {
    src.shared.processing(None).display().to_string()
}

fn body(m: &Message) -> Vec<u8> {
    match &m.body {
        Body::File(p) => fs::read(p).unwrap(),
        Body::Bytes(b) => b.clone(),
    }
}

#[test]
fn source_round_trip_claims_once_archives_on_done_and_redelivers_after_a_crash() {
    let s = sshd();
    let dir = s.folder("round-trip");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
    put(&mut c, &format!("{dir}/.b.zip.part"), b"half", false);
    put(&mut c, &format!("{dir}/c.tmp"), b"tmp", false);

    let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a.zip"]
    );
    assert!(!msgs[0].redelivered);
    assert_eq!(body(&msgs[0]), b"AAAA");
    assert_eq!(names(&mut c, &mine(&src)), ["a.zip"]);
    assert!(
        src.poll().unwrap().is_empty(),
        "a claimed file is not handed out twice"
    );
    let local = match &msgs[0].body {
        Body::File(p) => p.clone(),
        Body::Bytes(_) => unreachable!(),
    };
    for m in msgs {
        m.ack.done().unwrap();
    }
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        read(&mut c, &format!("{dir}/archive/{month}/a.zip")).as_deref(),
        Some(&b"AAAA"[..])
    );
    assert!(names(&mut c, &mine(&src)).is_empty());
    assert!(!local.exists(), "the staged download is removed once acked");
    // The partial and temporary uploads were never touched.
    assert!(read(&mut c, &format!("{dir}/.b.zip.part")).is_some());
    assert!(read(&mut c, &format!("{dir}/c.tmp")).is_some());

    // Claimed, then the hub dies before the ack: the next start hands it over again.
    put(&mut c, &format!("{dir}/d.zip"), b"DD", false);
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    drop(msgs);
    drop(src);
    let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
    let again = src.poll().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].name, "d.zip");
    assert!(again[0].redelivered);
    assert_eq!(body(&again[0]), b"DD");
    // Archiving the same name twice keeps both.
    put(&mut c, &format!("{dir}/a.zip"), b"A2", false);
    let more = src.poll().unwrap();
    for m in again.into_iter().chain(more) {
        m.ack.done().unwrap();
    }
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["a.zip", "a.zip.1", "d.zip"]
    );
}

#[test]
fn a_file_larger_than_the_limit_is_set_aside_without_being_downloaded() {
    let s = sshd();
    let dir = s.folder("too-large");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/big.zip"), &[7u8; 5000], false);
    put(&mut c, &format!("{dir}/small.zip"), b"SMALL", false);
    let mut folder = SftpDropFolder::new(&s.source(&dir, "0s", staging.path())).unwrap();
    folder.limit_file_size(1000);
    let mut src = Supervised::wrap("too-large", Box::new(folder));
    let msgs = src.poll().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["small.zip"]
    );
    assert_eq!(
        names(&mut c, &format!("{dir}/failed")),
        ["big.zip", "big.zip.error.txt"]
    );
    let why = read(&mut c, &format!("{dir}/failed/big.zip.error.txt")).unwrap();
    let why = String::from_utf8_lossy(&why);
    assert!(why.contains("5000 bytes"), "{why}");
    assert!(why.contains("limit of 1000 bytes"), "{why}");
    // Nothing of it reached the local staging folder.
    let local: Vec<_> = std::fs::read_dir(staging.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("big"))
        .collect();
    assert!(local.is_empty(), "{local:?}");
    for m in msgs {
        m.ack.done().unwrap();
    }
}

#[test]
fn a_second_hub_starting_does_not_take_what_the_first_one_claimed() {
    let s = sshd();
    let dir = s.folder("two-hubs");
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c = s.client();
    put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
    let mut a = SftpSource::new(&s.source(&dir, "0s", sa.path())).unwrap();
    let got = a.poll().unwrap();
    assert_eq!(got.len(), 1);
    // Hub B starts while A is still importing a.zip: its recovery must leave it alone.
    let mut b = SftpSource::new(&s.source(&dir, "0s", sb.path())).unwrap();
    assert_ne!(mine(&a), mine(&b));
    assert!(b.poll().unwrap().is_empty(), "B took A's claimed file");
    put(&mut c, &format!("{dir}/b.zip"), b"BB", false);
    let got_b = b.poll().unwrap();
    assert_eq!(got_b.len(), 1);
    assert!(a.poll().unwrap().is_empty());
    for m in got.into_iter().chain(got_b) {
        m.ack.done().unwrap();
    }
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["a.zip", "b.zip"]
    );
    // A restarted A (same staging) takes back only its own unfinished claims.
    put(&mut c, &format!("{dir}/c.zip"), b"C", false);
    assert_eq!(a.poll().unwrap().len(), 1);
    drop(a);
    let mut b2 = SftpSource::new(&s.source(&dir, "0s", sb.path())).unwrap();
    assert!(b2.poll().unwrap().is_empty());
    let mut a2 = SftpSource::new(&s.source(&dir, "0s", sa.path())).unwrap();
    let again = a2.poll().unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].redelivered);
    assert_eq!(again[0].name, "c.zip");
}

fn chmod(c: &mut Conn, path: &str, mode: u32) {
    let p = PathBuf::from(path);
    c.run(|sftp| {
        mkdirs(sftp, &p)?;
        let st = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode),
            atime: None,
            mtime: None,
        };
        sftp.setstat(&p, st).map_err(ssh_at(&p))
    })
    .unwrap();
}

#[test]
fn an_archive_folder_without_write_permission_keeps_the_file_claimed_until_fixed() {
    let s = sshd();
    let dir = s.folder("perm");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/p.zip"), b"PPPP", false);
    // archive/ exists but the server's user cannot create archive/YYYY_MM in it.
    chmod(&mut c, &format!("{dir}/archive"), 0o555);
    let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    let err = msgs
        .into_iter()
        .next()
        .unwrap()
        .ack
        .done()
        .unwrap_err()
        .to_string();
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert!(
        err.contains(&format!("{dir}/archive/{month}")),
        "names the folder: {err}"
    );
    assert!(err.to_lowercase().contains("permission"), "says why: {err}");
    // Claimed, not lost, and not handed over again as a new file.
    assert_eq!(names(&mut c, &mine(&src)), ["p.zip"]);
    assert!(src.poll().unwrap().is_empty(), "still denied: nothing new");
    assert_eq!(names(&mut c, &mine(&src)), ["p.zip"]);
    assert_eq!(
        names(&mut c, &dir),
        ["archive", "failed", "processing"],
        "not put back nor failed"
    );

    // The operator fixes the permission: the next poll finishes the archiving.
    chmod(&mut c, &format!("{dir}/archive"), 0o755);
    assert!(src.poll().unwrap().is_empty());
    assert!(names(&mut c, &mine(&src)).is_empty());
    assert_eq!(
        read(&mut c, &format!("{dir}/archive/{month}/p.zip")).as_deref(),
        Some(&b"PPPP"[..])
    );
}

#[test]
fn a_growing_file_is_not_taken_before_it_settles() {
    let s = sshd();
    let dir = s.folder("growing");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/g.zip"), b"first part;", false);
    let mut src = SftpSource::new(&s.source(&dir, "1s", staging.path())).unwrap();
    assert!(src.poll().unwrap().is_empty(), "first sight: not settled");
    std::thread::sleep(Duration::from_millis(700));
    put(&mut c, &format!("{dir}/g.zip"), b"second part;", true);
    assert!(
        src.poll().unwrap().is_empty(),
        "grew since the last poll: not settled"
    );
    std::thread::sleep(Duration::from_millis(700));
    put(&mut c, &format!("{dir}/g.zip"), b"last part", true);
    assert!(
        src.poll().unwrap().is_empty(),
        "1.4 s after first sight but grew 0 s ago: not settled"
    );
    assert_eq!(names(&mut c, &mine(&src)), Vec::<String>::new());
    std::thread::sleep(Duration::from_millis(1200));
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(body(&msgs[0]), b"first part;second part;last part");
}

#[test]
fn a_failed_ack_moves_the_file_to_failed_with_the_reason_beside_it() {
    let s = sshd();
    let dir = s.folder("failed");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/b.zip"), b"not a zip", false);
    let mut src = SftpSource::new(&s.source(&dir, "0s", staging.path())).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    for m in msgs {
        m.ack
            .failed("PAA_IMPORT_FORMATO_ZIP: not a zip file\n")
            .unwrap();
    }
    assert_eq!(
        names(&mut c, &format!("{dir}/failed")),
        ["b.zip", "b.zip.error.txt"]
    );
    assert_eq!(
        read(&mut c, &format!("{dir}/failed/b.zip")).as_deref(),
        Some(&b"not a zip"[..])
    );
    assert_eq!(
        read(&mut c, &format!("{dir}/failed/b.zip.error.txt")).as_deref(),
        Some(&b"PAA_IMPORT_FORMATO_ZIP: not a zip file\n"[..])
    );
    assert!(names(&mut c, &mine(&src)).is_empty());
}

#[test]
fn sink_publishes_atomically_is_idempotent_and_refuses_to_clobber() {
    let s = sshd();
    let dir = s.folder("sink");
    let local = tempfile::tempdir().unwrap();
    let (a, b) = (local.path().join("a"), local.path().join("b"));
    fs::write(&a, vec![7u8; 3 * CHUNK + 11]).unwrap();
    fs::write(&b, b"two").unwrap();
    let sink = SftpSink::new(&s.sink(&format!("{dir}/out"), false)).unwrap();
    sink.put_file("x_SCARTI.zip", &a).unwrap();
    sink.put_file("x_SCARTI.zip", &a).unwrap();
    let err = sink.put_file("x_SCARTI.zip", &b).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    let mut c = s.client();
    assert_eq!(
        read(&mut c, &format!("{dir}/out/x_SCARTI.zip")),
        Some(vec![7u8; 3 * CHUNK + 11])
    );
    assert_eq!(
        names(&mut c, &format!("{dir}/out")),
        ["x_SCARTI.zip"],
        "no temporary upload is left behind"
    );
    assert!(sink.put_file("../evil", &a).is_err());
    assert!(sink.put_file(".hidden", &a).is_err());

    let replacing = SftpSink::new(&s.sink(&format!("{dir}/out"), true)).unwrap();
    replacing.put_file("x_SCARTI.zip", &b).unwrap();
    assert_eq!(
        read(&mut c, &format!("{dir}/out/x_SCARTI.zip")).as_deref(),
        Some(&b"two"[..])
    );
}

fn with_marker(mut cfg: SftpSourceConfig, marker: &str) -> SftpSourceConfig {
    cfg.marker = Some(marker.into());
    cfg
}

fn staged(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_done_marker_gates_the_file_and_travels_with_it() {
    let s = sshd();
    let dir = s.folder("marker-done");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    put(&mut c, &format!("{dir}/a.zip"), b"AAAA", false);
    put(&mut c, &format!("{dir}/b.zip"), b"BBBB", false);
    put(&mut c, &format!("{dir}/b.zip.done"), b"", false);
    put(&mut c, &format!("{dir}/orphan.zip.done"), b"", false);
    put(&mut c, &format!("{dir}/x.md5"), b"", false);
    // A settle of an hour: the marker alone says the file is complete.
    let cfg = with_marker(s.source(&dir, "1h", staging.path()), "done");
    let mut src = SftpSource::new(&cfg).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["b.zip"],
        "only the marked file, and no marker as a flow"
    );
    assert_eq!(body(&msgs[0]), b"BBBB");
    assert_eq!(names(&mut c, &mine(&src)), ["b.zip", "b.zip.done"]);
    assert!(src.poll().unwrap().is_empty(), "a.zip has no marker yet");
    for m in msgs {
        m.ack.done().unwrap();
    }
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["b.zip", "b.zip.done"]
    );
    assert!(names(&mut c, &mine(&src)).is_empty());

    // The marker comes: taken; refused by the pipeline, it fails along with its marker.
    put(&mut c, &format!("{dir}/a.zip.done"), b"", false);
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].name, "a.zip");
    for m in msgs {
        m.ack.failed("refused\n").unwrap();
    }
    assert_eq!(
        names(&mut c, &format!("{dir}/failed")),
        ["a.zip", "a.zip.done", "a.zip.error.txt"]
    );
    assert_eq!(
        names(&mut c, &dir),
        [
            "archive",
            "failed",
            "orphan.zip.done",
            "processing",
            "x.md5"
        ],
        "markers without their file stay where they are"
    );

    // after = "delete" deletes the marker too.
    let mut cfg = cfg;
    cfg.after = After::Delete;
    let mut src = SftpSource::new(&cfg).unwrap();
    put(&mut c, &format!("{dir}/d.zip"), b"D", false);
    put(&mut c, &format!("{dir}/d.zip.done"), b"", false);
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    for m in msgs {
        m.ack.done().unwrap();
    }
    assert!(names(&mut c, &mine(&src)).is_empty());
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["b.zip", "b.zip.done"]
    );
}

#[test]
fn an_md5_marker_is_checked_against_the_downloaded_content() {
    let s = sshd();
    let dir = s.folder("marker-md5");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    let good = vec![42u8; 2 * CHUNK + 5];
    let good_md5 = format!("{:x}", md5::compute(&good));
    put(&mut c, &format!("{dir}/good.zip"), &good, false);
    // As md5sum writes it, in capitals for once.
    let marker = format!("{}  good.zip\n", good_md5.to_uppercase());
    put(
        &mut c,
        &format!("{dir}/good.zip.md5"),
        marker.as_bytes(),
        false,
    );
    put(&mut c, &format!("{dir}/bad.zip"), b"tampered", false);
    let bad_md5 = format!("{:x}", md5::compute(b"original"));
    put(
        &mut c,
        &format!("{dir}/bad.zip.md5"),
        bad_md5.as_bytes(),
        false,
    );
    put(&mut c, &format!("{dir}/junk.zip"), b"J", false);
    put(
        &mut c,
        &format!("{dir}/junk.zip.md5"),
        b"not a hash\n",
        false,
    );
    put(&mut c, &format!("{dir}/later.zip"), b"L", false);

    let cfg = with_marker(s.source(&dir, "1h", staging.path()), "md5");
    let mut src = SftpSource::new(&cfg).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["good.zip"]
    );
    assert_eq!(body(&msgs[0]), good);
    assert_eq!(
        staged(staging.path()),
        ["good.zip"],
        "nothing of the failed downloads is left in staging"
    );
    assert_eq!(
        names(&mut c, &format!("{dir}/failed")),
        [
            "bad.zip",
            "bad.zip.error.txt",
            "bad.zip.md5",
            "junk.zip",
            "junk.zip.error.txt",
            "junk.zip.md5"
        ]
    );
    let why = String::from_utf8(read(&mut c, &format!("{dir}/failed/bad.zip.error.txt")).unwrap())
        .unwrap();
    let actual = format!("{:x}", md5::compute(b"tampered"));
    assert!(why.contains("MD5 mismatch"), "{why}");
    assert!(
        why.contains(&bad_md5) && why.contains(&actual),
        "expected and actual: {why}"
    );
    let why = String::from_utf8(read(&mut c, &format!("{dir}/failed/junk.zip.error.txt")).unwrap())
        .unwrap();
    assert!(why.contains("holds no MD5"), "{why}");
    assert_eq!(names(&mut c, &mine(&src)), ["good.zip", "good.zip.md5"]);
    for m in msgs {
        m.ack.done().unwrap();
    }
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["good.zip", "good.zip.md5"]
    );
    assert!(src.poll().unwrap().is_empty(), "later.zip has no marker");

    // Claimed, then the hub stopped before the marker followed: the next start finds it
    // in the drop folder and still checks the content.
    put(
        &mut c,
        &format!("{dir}/later.zip.md5"),
        format!("{:x}", md5::compute(b"L")).as_bytes(),
        false,
    );
    let from = PathBuf::from(format!("{dir}/later.zip"));
    let to = src.shared.processing(Some("later.zip"));
    c.run(|sftp| sftp.rename(&from, &to, None).map_err(ssh_at(&to)))
        .unwrap();
    drop(src);
    let mut src = SftpSource::new(&cfg).unwrap();
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].redelivered);
    assert_eq!(body(&msgs[0]), b"L");
    assert_eq!(names(&mut c, &mine(&src)), ["later.zip", "later.zip.md5"]);
}

/// Uploads `len` pseudo-random bytes (a fixed seed) to `path`, generated as they are sent:
/// never held whole in memory. Returns their SHA-256, hex.
fn put_generated(c: &mut Conn, path: &str, len: u64, seed: u64) -> String {
    let p = PathBuf::from(path);
    c.run(|sftp| {
        if let Some(parent) = p.parent() {
            mkdirs(sftp, parent)?;
        }
        let mut f = sftp
            .open_mode(
                &p,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
            .map_err(ssh_at(&p))?;
        let mut sha = Sha256::new();
        let mut x = seed | 1;
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            for word in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            let n = usize::try_from(left.min(CHUNK as u64)).unwrap();
            f.write_all(&buf[..n]).map_err(io_at(&p))?;
            sha.update(&buf[..n]);
            left -= n as u64;
        }
        f.close().map_err(ssh_at(&p))?;
        Ok(hex(&sha.finalize()))
    })
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a local file, streamed.
fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    hex(&sha.finalize())
}

/// A second sshd of this test's own, on a free port, with the shared one's config, host key
/// and authorized keys (so the same home and pins): stopping it disturbs no other test.
struct PrivateSshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateSshd {
    fn start() -> Self {
        let state = PathBuf::from(
            std::env::var("SNODO_TEST_SSHD_DIR").unwrap_or_else(|_| "/var/tmp/snodo-sshd".into()),
        );
        let shared = fs::read_to_string(state.join("sshd_config"))
            .expect("the test sshd's config (run ops/sshd.sh)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("sshd.pid");
        let cfg: String = shared
            .lines()
            .map(|l| {
                if l.starts_with("Port ") {
                    format!("Port {port}")
                } else if l.starts_with("PidFile ") {
                    format!("PidFile {}", pid.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(dir.path().join("sshd_config"), cfg + "\n").unwrap();
        let mut me = Self {
            dir,
            port,
            child: None,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .arg("-E")
            .arg(self.dir.path().join("sshd.log"))
            .spawn()
            .expect("start /usr/sbin/sshd");
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the private sshd did not start: {}",
                fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the listener and every session process it forked, as a crash or power cut would.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut tree = vec![child.id()];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            for e in fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                // pid (comm) state ppid ...: comm may hold spaces, so read after the ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(parent) && !tree.contains(&pid) {
                    tree.push(pid);
                }
            }
            i += 1;
        }
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(tree.iter().map(|p| p.to_string()))
            .status();
        let _ = child.wait();
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn the_server_stopped_mid_transfer_and_restarted_delivers_the_file_whole_once() {
    let s = sshd();
    let dir = s.folder("server-dies");
    let staging = tempfile::tempdir().unwrap();
    let mut c = s.client();
    let len = 48 << 20;
    let want = put_generated(&mut c, &format!("{dir}/big.zip"), len, 0x5eed);
    let mut server = PrivateSshd::start();
    let mut cfg = s.source(&dir, "0s", staging.path());
    cfg.port = server.port;
    cfg.timeout = "5s".into();
    let src = SftpSource::new(&cfg).unwrap();
    let owner_dir = mine(&src);

    let polling = std::thread::spawn(move || {
        let mut src = src;
        let got = src.poll();
        (src, got)
    });
    // Stop the server once the download is under way.
    let part = staging.path().join(".big.zip.part");
    let started = Instant::now();
    while fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < (1 << 20) {
        assert!(
            started.elapsed() < Duration::from_secs(30) && !polling.is_finished(),
            "the download never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    let (mut src, got) = polling.join().unwrap();
    let err = match got {
        Ok(msgs) => panic!(
            "the transfer finished before the server was stopped ({} messages): make the file bigger",
            msgs.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("big.zip"), "names the file: {err}");
    assert!(
        staged(staging.path()).is_empty(),
        "nothing partial is left in staging, let alone under the final name"
    );
    // Claimed, whole and not lost on the server.
    assert_eq!(names(&mut c, &owner_dir), ["big.zip"]);
    assert!(src.poll().is_err(), "the server is still down");
    assert!(staged(staging.path()).is_empty());

    server.spawn();
    let msgs = src.poll().unwrap();
    assert_eq!(msgs.len(), 1, "delivered once the server is back");
    assert_eq!(msgs[0].name, "big.zip");
    let local = match &msgs[0].body {
        Body::File(p) => p.clone(),
        Body::Bytes(_) => unreachable!(),
    };
    assert_eq!(fs::metadata(&local).unwrap().len(), len);
    assert_eq!(sha256_file(&local), want, "whole and unchanged");
    assert!(src.poll().unwrap().is_empty(), "not handed over twice");
    for m in msgs {
        m.ack.done().unwrap();
    }
    assert!(src.poll().unwrap().is_empty());
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        names(&mut c, &format!("{dir}/archive/{month}")),
        ["big.zip"]
    );
    assert!(names(&mut c, &owner_dir).is_empty());
    assert!(staged(staging.path()).is_empty());
    // 48 MB per run would pile up in the test user's home.
    let archived = PathBuf::from(format!("{dir}/archive/{month}/big.zip"));
    c.run(|sftp| sftp.unlink(&archived).map_err(ssh_at(&archived)))
        .unwrap();
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

const BIG_ENV: &str = "SNODO_TEST_SFTP_BIG";

#[test]
fn a_500_mb_flow_streams_down_with_bounded_memory() {
    let s = sshd();
    if let Ok(spec) = std::env::var(BIG_ENV) {
        // The child process: download and measure, alone in its process.
        let mut it = spec.splitn(3, '|');
        let (dir, want, len) = (
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
            it.next().unwrap().parse::<u64>().unwrap(),
        );
        let staging = tempfile::tempdir().unwrap();
        let mut cfg = s.source(&dir, "0s", staging.path());
        cfg.after = After::Delete;
        let before = peak_rss();
        let mut src = SftpSource::new(&cfg).unwrap();
        let msgs = src.poll().unwrap();
        let grew = peak_rss().saturating_sub(before);
        assert_eq!(msgs.len(), 1);
        let local = match &msgs[0].body {
            Body::File(p) => p.clone(),
            Body::Bytes(_) => unreachable!(),
        };
        assert_eq!(fs::metadata(&local).unwrap().len(), len);
        assert_eq!(sha256_file(&local), want);
        for m in msgs {
            m.ack.done().unwrap();
        }
        eprintln!(
            "peak RSS grew by {} KiB downloading {len} bytes",
            grew / 1024
        );
        assert!(
            grew < 64 << 20,
            "peak RSS grew by {} MiB for a {} MiB flow",
            grew >> 20,
            len >> 20
        );
        return;
    }
    let dir = s.folder("big");
    let mut c = s.client();
    let len: u64 = 500 << 20;
    let want = put_generated(&mut c, &format!("{dir}/big.zip"), len, 0xb16);
    // Measured in a process of its own: the other tests of this binary run in threads of
    // this one and would count towards its peak.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sftp::integration::a_500_mb_flow_streams_down_with_bounded_memory",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BIG_ENV, format!("{dir}|{want}|{len}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child ran the download: {text}"
    );
    assert!(text.contains("peak RSS grew by"), "{text}");
    if let Some(line) = text.lines().find(|l| l.contains("peak RSS grew by")) {
        eprintln!("{line}");
    }
    assert!(names(&mut c, &dir).iter().all(|n| n != "big.zip"));
}

#[test]
fn a_wrong_host_key_is_refused_showing_both_fingerprints() {
    let s = sshd();
    let dir = s.folder("hostkey");
    let staging = tempfile::tempdir().unwrap();
    let wrong = fingerprint(b"not the server's key");
    let mut cfg = s.source(&dir, "0s", staging.path());
    cfg.known_host = Some(wrong.clone());
    let err = SftpSource::new(&cfg)
        .unwrap()
        .poll()
        .unwrap_err()
        .to_string();
    assert!(err.contains("mismatch"), "{err}");
    assert!(err.contains(&wrong), "the pinned fingerprint: {err}");
    assert!(
        err.contains(&s.fingerprint),
        "the server's fingerprint: {err}"
    );

    let mut sink = s.sink(&dir, false);
    sink.known_host = Some(wrong.clone());
    let f = staging.path().join("f");
    fs::write(&f, b"x").unwrap();
    let err = SftpSink::new(&sink)
        .unwrap()
        .put_file("f", &f)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&wrong) && err.contains(&s.fingerprint),
        "{err}"
    );

    // The same through a known_hosts file: a wrong key refused, the right one accepted.
    let other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let kh = staging.path().join("known_hosts");
    fs::write(
        &kh,
        format!("[127.0.0.1]:{} ssh-ed25519 {other_key}\n", s.port),
    )
    .unwrap();
    cfg.known_host = None;
    cfg.known_hosts = Some(kh.clone());
    let err = SftpSource::new(&cfg)
        .unwrap()
        .poll()
        .unwrap_err()
        .to_string();
    let other_fp = fingerprint(
        &base64::engine::general_purpose::STANDARD
            .decode(other_key)
            .unwrap(),
    );
    assert!(err.contains("mismatch"), "{err}");
    assert!(
        err.contains(&other_fp) && err.contains(&s.fingerprint),
        "{err}"
    );

    let mut parts = s.host_pub.split_whitespace();
    let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
    fs::write(&kh, format!("[127.0.0.1]:{} {kind} {key}\n", s.port)).unwrap();
    assert!(SftpSource::new(&cfg).unwrap().poll().unwrap().is_empty());
}

#[test]
fn a_dead_server_is_a_clear_error_not_a_hang() {
    // Nothing listens on port 1 of the loopback: refused at once.
    let s = sshd();
    let staging = tempfile::tempdir().unwrap();
    let mut cfg = s.source("/in", "0s", staging.path());
    cfg.port = 1;
    cfg.timeout = "2s".into();
    let started = Instant::now();
    let err = SftpSource::new(&cfg)
        .unwrap()
        .poll()
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
