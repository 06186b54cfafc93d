use super::*;

fn config(dir: &Path, owner: Option<&str>) -> DirSourceConfig {
    DirSourceConfig {
        path: dir.to_path_buf(),
        schedule: None,
        settle: "0s".into(),
        after: After::Archive,
        owner: owner.map(str::to_string),
    }
}

fn source(dir: &Path) -> DirSource {
    DirSource::new(&config(dir, None)).unwrap()
}

/// A hub with its own name (in one test process all hubs share host and working directory).
fn hub(dir: &Path, owner: &str) -> DirSource {
    DirSource::new(&config(dir, Some(owner))).unwrap()
}

fn names(msgs: &[Message]) -> Vec<&str> {
    msgs.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn claims_once_archives_on_done_and_sets_aside_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"A").unwrap();
    fs::write(tmp.path().join("b.zip"), b"B").unwrap();
    fs::write(tmp.path().join(".hidden.tmp"), b"x").unwrap();
    let mut src = source(tmp.path());
    let msgs = src.poll().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a.zip", "b.zip"]
    );
    assert!(
        src.poll().unwrap().is_empty(),
        "a claimed file is not handed out twice"
    );
    let mut it = msgs.into_iter();
    it.next().unwrap().ack.done().unwrap();
    it.next().unwrap().ack.failed("bad zip").unwrap();
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert_eq!(
        fs::read(tmp.path().join("archive").join(month).join("a.zip")).unwrap(),
        b"A"
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("failed/b.zip.error.txt")).unwrap(),
        "bad zip"
    );
    assert!(tmp.path().join("failed/b.zip").exists());
    assert!(list_files(&tmp.path().join("processing"))
        .unwrap()
        .is_empty());
    assert!(list_files(&src.mine).unwrap().is_empty());
}

#[test]
fn a_restart_redelivers_what_was_claimed_but_not_acked() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"A").unwrap();
    let msgs = source(tmp.path()).poll().unwrap();
    assert!(!msgs[0].redelivered);
    drop(msgs); // crash: never acked
    let again = source(tmp.path()).poll().unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].redelivered);
    assert_eq!(again[0].name, "a.zip");
}

#[test]
fn the_default_owner_is_stable_and_claims_go_into_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"A").unwrap();
    let src = source(tmp.path());
    assert_eq!(src.mine, source(tmp.path()).mine);
    let owner = src.mine.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        owner.starts_with("hub-") && owner_error(&owner).is_none(),
        "{owner}"
    );
    let mut src = src;
    let msgs = src.poll().unwrap();
    assert_eq!(names(&msgs), ["a.zip"]);
    assert!(tmp
        .path()
        .join("processing")
        .join(&owner)
        .join("a.zip")
        .exists());
}

#[test]
fn a_second_hub_starting_does_not_take_what_the_first_one_claimed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"A").unwrap();
    let mut a = hub(tmp.path(), "hub-a");
    let got = a.poll().unwrap();
    assert_eq!(names(&got), ["a.zip"]);
    assert!(!got[0].redelivered);
    // Hub B starts while A is still importing a.zip: its recovery must leave it alone.
    let mut b = hub(tmp.path(), "hub-b");
    assert!(b.poll().unwrap().is_empty(), "B took A's claimed file");
    // B still claims new files; A does not see them again.
    fs::write(tmp.path().join("b.zip"), b"B").unwrap();
    assert_eq!(names(&b.poll().unwrap()), ["b.zip"]);
    assert!(a.poll().unwrap().is_empty());
    // A crashes without acking; its restart (same owner) takes a.zip back, and only that.
    drop((got, a));
    let again = hub(tmp.path(), "hub-a").poll().unwrap();
    assert_eq!(names(&again), ["a.zip"]);
    assert!(again[0].redelivered);
    let Body::File(path) = &again[0].body else {
        panic!("dir hands over files")
    };
    assert_eq!(path, &tmp.path().join("processing/hub-a/a.zip"));
}

#[test]
fn claims_left_by_a_version_without_owner_folders_go_to_the_first_hub_once() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("processing")).unwrap();
    fs::write(tmp.path().join("processing/old.zip"), b"O").unwrap();
    let (mut a, mut b) = (hub(tmp.path(), "hub-a"), hub(tmp.path(), "hub-b"));
    let got = a.poll().unwrap();
    assert_eq!(names(&got), ["old.zip"]);
    assert!(got[0].redelivered);
    assert!(tmp.path().join("processing/hub-a/old.zip").exists());
    assert!(b.poll().unwrap().is_empty());
    got.into_iter().next().unwrap().ack.done().unwrap();
    let month = chrono::Local::now().format("%Y_%m").to_string();
    assert!(tmp
        .path()
        .join("archive")
        .join(month)
        .join("old.zip")
        .exists());
}

#[test]
fn a_name_being_processed_by_another_hub_waits() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"1").unwrap();
    let (mut a, mut b) = (hub(tmp.path(), "hub-a"), hub(tmp.path(), "hub-b"));
    let first = a.poll().unwrap();
    fs::write(tmp.path().join("a.zip"), b"2").unwrap();
    assert!(b.poll().unwrap().is_empty(), "same name while A has it");
    first.into_iter().next().unwrap().ack.done().unwrap();
    assert_eq!(names(&b.poll().unwrap()), ["a.zip"]);
}

#[test]
fn fifty_files_polled_by_two_hubs_at_once_are_each_claimed_exactly_once() {
    // A single race is often won whole by one thread; several rounds make them overlap.
    for _ in 0..20 {
        race_two_hubs_over_fifty_files();
    }
}

fn race_two_hubs_over_fifty_files() {
    let tmp = tempfile::tempdir().unwrap();
    let all: Vec<String> = (0..50).map(|i| format!("f{i:02}.zip")).collect();
    for n in &all {
        fs::write(tmp.path().join(n), n.as_bytes()).unwrap();
    }
    let go = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = ["hub-a", "hub-b"]
        .into_iter()
        .map(|owner| {
            let (root, go) = (tmp.path().to_path_buf(), go.clone());
            std::thread::spawn(move || {
                let mut src = hub(&root, owner);
                go.wait();
                let mut got = Vec::new();
                // Poll until the top is empty, as a scheduled source would.
                while list_files(&root).unwrap().iter().any(|n| is_candidate(n)) {
                    got.extend(src.poll().unwrap().into_iter().map(|m| m.name));
                }
                got
            })
        })
        .collect();
    let mut claimed: Vec<String> = Vec::new();
    for (t, owner) in threads.into_iter().zip(["hub-a", "hub-b"]) {
        let got = t.join().unwrap();
        let mut on_disk = list_files(&tmp.path().join("processing").join(owner)).unwrap();
        let mut sorted = got.clone();
        sorted.sort();
        on_disk.sort();
        assert_eq!(sorted, on_disk, "{owner} handed over exactly what it holds");
        claimed.extend(got);
    }
    claimed.sort();
    assert_eq!(claimed, all, "every file claimed once, none twice");
}

#[test]
fn a_file_younger_than_settle_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.zip"), b"A").unwrap();
    let mut src = DirSource::new(&DirSourceConfig {
        path: tmp.path().to_path_buf(),
        schedule: None,
        settle: "1h".into(),
        after: After::Delete,
        owner: None,
    })
    .unwrap();
    assert!(src.poll().unwrap().is_empty());
    assert!(tmp.path().join("a.zip").exists());
}

#[test]
fn sink_is_idempotent_for_equal_content_and_refuses_to_clobber() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let sink = DirSink::new(&DirSinkConfig {
        path: out.clone(),
        overwrite: false,
    })
    .unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fs::write(&a, b"one").unwrap();
    fs::write(&b, b"two").unwrap();
    sink.put_file("x.zip", &a).unwrap();
    sink.put_file("x.zip", &a).unwrap();
    let err = sink.put_file("x.zip", &b).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(out.join("x.zip")).unwrap(), b"one");
    assert!(sink.put_file("../evil", &a).is_err());
}

#[test]
fn an_owner_must_be_a_plain_folder_name() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "..", ".hidden", "a/b", "a\\b", "../x", "a b"] {
        assert_eq!(config(tmp.path(), Some(bad)).check().len(), 1, "{bad:?}");
        assert!(DirSource::new(&config(tmp.path(), Some(bad))).is_err());
    }
    assert!(config(tmp.path(), Some("hub-a_1.x")).check().is_empty());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert!(parse_duration("30").is_err());
    assert!(
        parse_duration("99999999999999h").is_err(),
        "overflow is an error"
    );
    assert!(parse_duration("3d").is_err());
}

#[test]
fn a_file_larger_than_the_limit_is_set_aside_when_claimed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("big.zip"), vec![7u8; 5000]).unwrap();
    fs::write(tmp.path().join("small.zip"), b"S").unwrap();
    let mut src = source(tmp.path());
    src.limit_file_size(1000);
    let msgs = src.poll().unwrap();
    assert_eq!(names(&msgs), ["small.zip"]);
    let why = fs::read_to_string(tmp.path().join("failed/big.zip.error.txt")).unwrap();
    assert!(
        why.contains("5000 bytes, larger than the limit of 1000"),
        "{why}"
    );
    assert!(tmp.path().join("failed/big.zip").exists());
}

/// A link swapped in for a listed file between the listing and the claim is moved aside as it
/// is, never followed: the hub must not import (and answer with) a file someone points it at.
#[test]
fn a_symbolic_link_swapped_in_is_set_aside_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret.txt");
    fs::write(&secret, b"not for the hub").unwrap();
    let src = source(tmp.path());
    // What a rename of a swapped-in link leaves in this hub's claim folder.
    std::os::unix::fs::symlink(&secret, src.mine.join("x.zip")).unwrap();
    let mut out = Vec::new();
    src.hand_over("x.zip".into(), false, &mut out);
    assert!(out.is_empty(), "a link is not handed over");
    let why = fs::read_to_string(tmp.path().join("failed/x.zip.error.txt")).unwrap();
    assert!(why.contains("not a regular file"), "{why}");
    let moved = tmp.path().join("failed/x.zip");
    assert!(fs::symlink_metadata(&moved)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&secret).unwrap(), b"not for the hub");
    // A link at the top of the drop folder is never even claimed.
    std::os::unix::fs::symlink(&secret, tmp.path().join("y.zip")).unwrap();
    let mut src = source(tmp.path());
    assert!(src.poll().unwrap().is_empty());
}
