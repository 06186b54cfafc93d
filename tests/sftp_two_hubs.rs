//! Two hub processes (each with its own store, port and data_dir) polling the same `sftp` drop
//! folder on the loopback OpenSSH server of `ops/sshd.sh`: the remote rename into `processing/`
//! claims each flow once, so each is imported by exactly one hub, archived once and answered
//! with exactly one pair of outcome files.

mod common;
use common::*;
use std::collections::HashMap;

const FLOWS: usize = 10;

/// A home whose Padova intake reads `<base>/in` and answers into `<base>/out`.
fn home_on(s: &TestSshd, base: &str) -> Home {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let from_dir = "from = { connector = \"dir\", path = \"var/c_g224/in\", schedule = \"* * * * * *\", settle = \"0s\" }";
    let out_dir = "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }";
    assert!(cfg.contains(from_dir) && cfg.contains(out_dir), "{cfg}");
    let cfg = cfg
        .replace(
            from_dir,
            &format!(
                "from = {}, schedule = \"* * * * * *\", settle = \"0s\" }}",
                s.connector(&format!("{base}/in"))
            ),
        )
        .replace(
            out_dir,
            &format!("outcomes = {} }}", s.connector(&format!("{base}/out"))),
        );
    std::fs::write(home.config(), cfg).unwrap();
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    home
}

fn iufs(home: &Home) -> Vec<String> {
    let o = home.snodo(&["flows", "-c", "config.toml", "--entity", "c_g224"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["iuf"].as_str().unwrap().to_string()
        })
        .collect()
}

fn count<'a>(names: impl IntoIterator<Item = &'a String>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.as_str()).or_insert(0) += 1;
    }
    m
}

#[test]
fn two_hubs_on_one_folder_take_each_flow_once() {
    let s = test_sshd();
    let base = s.fresh("two-hubs");
    assert!(s.batch(&format!("mkdir {base}\nmkdir {base}/in\n")));
    let (a, b) = (home_on(&s, &base), home_on(&s, &base));
    assert_ne!(a.port, b.port);
    let _hub_a = Hub::start_serving(&a);
    let _hub_b = Hub::start_serving(&b);

    // Each flow: one good row and one bad one, so it has both a SCARTI and an IUV outcome.
    let stems: Vec<String> = (1..=FLOWS)
        .map(|i| format!("c_g224-TWO{i:02}-1_4"))
        .collect();
    let mut batches = vec![String::new(); 5];
    for (i, stem) in stems.iter().enumerate() {
        let n = 100 * i as u32;
        let rows = vec![
            Row::tari(&format!("T{i}A"), n + 1, 100),
            Row::tari(&format!("T{i}B"), n + 2, 200).set(13, "0"),
        ];
        let zip = write_zip(a.path(), stem, csv_text(&rows).as_bytes());
        // Spread over a few polls, so the two hubs' ticks meet more than one listing.
        batches[i % 5].push_str(&format!(
            "put {} {base}/in/.{stem}.zip.part\nrename {base}/in/.{stem}.zip.part {base}/in/{stem}.zip\n",
            zip.display()
        ));
    }
    for commands in &batches {
        assert!(s.batch(commands), "upload the flows");
        std::thread::sleep(std::time::Duration::from_millis(450));
    }

    let month = chrono::Local::now().format("%Y_%m").to_string();
    let archive = format!("{base}/in/archive/{month}");
    let out = format!("{base}/out");
    let settled = wait_for(60, || {
        s.ls(&archive).is_some_and(|v| v.len() >= FLOWS)
            && s.ls(&out).is_some_and(|v| v.len() >= 2 * FLOWS)
    });
    // A moment more, so a duplicate taken late would show.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let archived = s.ls(&archive).unwrap_or_default();
    let outcomes = s.ls(&out).unwrap_or_default();
    assert!(settled, "archive: {archived:?}\nout: {outcomes:?}");

    // Archived exactly once each: a second archiving of a name would show as `<name>.1`.
    let want: Vec<String> = stems.iter().map(|s| format!("{s}.zip")).collect();
    assert_eq!(archived, want, "each flow archived exactly once");
    assert_eq!(
        s.ls(&format!("{base}/in")).unwrap_or_default(),
        ["archive", "failed", "processing"],
        "nothing left to take"
    );
    // processing/ holds one folder per hub, each empty by now.
    let owners = s.ls(&format!("{base}/in/processing")).unwrap_or_default();
    assert!(owners.len() <= 2, "{owners:?}");
    for o in &owners {
        let left = s.ls(&format!("{base}/in/processing/{o}"));
        assert_eq!(left, Some(vec![]), "left in processing/{o}");
    }
    assert!(s
        .ls(&format!("{base}/in/failed"))
        .unwrap_or_default()
        .is_empty());

    // Exactly one SCARTI and one IUV zip per flow, and nothing else (no temporary upload).
    let mut want_out: Vec<String> = stems
        .iter()
        .flat_map(|s| [format!("{s}_IUV.zip"), format!("{s}_SCARTI.zip")])
        .collect();
    want_out.sort();
    assert_eq!(outcomes, want_out);

    // Each IUF imported by exactly one of the two hubs.
    let (in_a, in_b) = (iufs(&a), iufs(&b));
    let all: Vec<String> = in_a.iter().chain(&in_b).cloned().collect();
    let counts = count(&all);
    for i in 1..=FLOWS {
        let iuf = format!("TWO{i:02}");
        assert_eq!(
            counts.get(iuf.as_str()).copied().unwrap_or(0),
            1,
            "{iuf}: hub A {in_a:?}, hub B {in_b:?}"
        );
    }
    assert_eq!(all.len(), FLOWS, "hub A {in_a:?}, hub B {in_b:?}");
    eprintln!("hub A took {} flows, hub B {}", in_a.len(), in_b.len());
}
