//! `snodo run` with an `sftp` drop folder and outbox on the loopback OpenSSH server that
//! `ops/sshd.sh` (run by `ops/setup.sh`) starts: a flow uploaded with the OpenSSH `sftp` client
//! comes back as outcome zips on the same server, and is archived there.

mod common;
use common::*;

#[test]
fn a_flow_dropped_with_the_sftp_client_gets_its_outcome_files_on_the_server() {
    let s = test_sshd();
    let base = s.fresh("intake");
    let home = Home::new();
    let remote = |path: &str| s.connector(&format!("{base}/{path}"));
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
