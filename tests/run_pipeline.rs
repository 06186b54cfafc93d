//! `snodo run`: flows dropped in an entity's folder are imported and answered with outcome
//! files; broken files are set aside with the reason; SIGTERM stops the hub cleanly.

mod common;
use common::*;

#[test]
fn a_dropped_flow_gets_its_outcome_files_and_is_archived() {
    let home = Home::new();
    let hub = Hub::start(&home);
    let inbox = home.path().join("var/c_g224/in");
    assert!(
        wait_for(10, || inbox.exists()),
        "the hub creates the drop folder"
    );
    let rows = vec![
        Row::tari("R1", 1, 100),
        Row::tari("R2", 2, 200).set(13, "0"),
    ];
    // Written elsewhere, then moved in: what a well-behaved uploader does.
    let staged = write_zip(home.path(), "c_g224-RUN1-1_4", csv_text(&rows).as_bytes());
    std::fs::rename(&staged, inbox.join("c_g224-RUN1-1_4.zip")).unwrap();

    let out = home.path().join("var/c_g224/out");
    let scarti = out.join("c_g224-RUN1-1_4_SCARTI.zip");
    let iuv = out.join("c_g224-RUN1-1_4_IUV.zip");
    assert!(
        wait_for(20, || scarti.exists() && iuv.exists()),
        "outcome files appear"
    );
    assert!(unzip_text(&scarti).contains("R2;"));
    assert_eq!(unzip_text(&iuv).lines().count(), 2);
    let month = chrono::Local::now().format("%Y_%m").to_string();
    let archived = inbox
        .join("archive")
        .join(month)
        .join("c_g224-RUN1-1_4.zip");
    assert!(wait_for(10, || archived.exists()), "the flow is archived");
    assert!(!inbox.join("c_g224-RUN1-1_4.zip").exists());
    assert!(hub.terminate().success(), "clean exit on SIGTERM");
    assert_eq!(home.positions(&[]).len(), 1);
}
