//! `snodo import` end to end: MyPay 1_4 flows with good and bad rows, outcome files, duplicates,
//! and a follow-up flow that modifies and annuls.

mod common;
use common::*;
use snodo_core::Iuv;

fn scarti_rows(text: &str) -> Vec<(String, String)> {
    // (IUD, codes) of each rejected row; the header comes first.
    text.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split(';').collect();
            let n = cols.len();
            (cols[0].to_string(), cols[n - 2].to_string())
        })
        .collect()
}

#[test]
fn a_mixed_flow_then_a_duplicate_then_modify_and_annul() {
    let home = Home::new();
    let out = home.path().join("out");
    let good: Vec<Row> = (1..=6)
        .map(|i| Row::tari(&format!("IUD{i}"), i, 1000 + i as u64))
        .collect();
    let bad = [
        Row::tari("BAD1", 101, 500).set(3, "RSSMRA85T10A562X"),
        Row::tari("BAD2", 102, 500).set(13, "12,50"),
        Row::tari("BAD3", 103, 500).set(15, "NOPE"),
        Row::tari("BAD4", 104, 500).set(12, "2020-01-01"),
        Row::tari("IUD1", 105, 500),
        Row::tari("BAD6", 106, 500).set(34, "X"),
    ];
    let mut rows = good.clone();
    rows.insert(2, bad[0].clone());
    rows.insert(4, bad[1].clone());
    rows.extend(bad[2..].iter().cloned());
    let flow = write_zip(home.path(), "c_g224-FLOW1-1_4", csv_text(&rows).as_bytes());

    let o = home.import(&flow, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().last().unwrap(),
        "rows=12 accepted=6 rejected=6 flow=IMPORT_ESEGUITO"
    );

    let scarti = unzip_text(&out.join("c_g224-FLOW1-1_4_SCARTI.zip"));
    assert!(scarti.starts_with(&format!("{HEADER_1_4};cod_rifiuto;de_rifiuto\n")));
    assert_eq!(
        scarti_rows(&scarti),
        [
            ("BAD1".to_string(), "PAA_IMPORT_COD_FISC".to_string()),
            ("BAD2".into(), "PAA_IMPORT_IMPORTO".into()),
            ("BAD3".into(), "PAA_IMPORT_TIPO_DOVUTO_INESISTENTE".into()),
            ("BAD4".into(), "PAA_IMPORT_DATA_SCADENZA_PAGAMENTO".into()),
            ("IUD1".into(), "PAA_IMPORT_IUD_DUPLICATO".into()),
            ("BAD6".into(), "PAA_IMPORT_SINTASSI_CSV_AZIONE".into()),
        ]
    );
    // Rejected rows are echoed verbatim.
    assert!(scarti.contains(&format!("{};PAA_IMPORT_COD_FISC;", bad[0].line())));

    let iuv_file = unzip_text(&out.join("c_g224-FLOW1-1_4_IUV.zip"));
    let mut iuvs = Vec::new();
    for (i, line) in iuv_file.lines().skip(1).enumerate() {
        let cols: Vec<&str> = line.split(';').collect();
        assert_eq!(cols.len(), 35);
        assert_eq!(cols[0], format!("IUD{}", i + 1));
        let iuv = Iuv::parse(cols[1]).expect("a valid IUV");
        assert!(cols[1].starts_with("01"), "segregation code of c_g224");
        let notice = iuv
            .notice_number()
            .expect("aux 3 notice number with valid mod 93 check digits");
        assert_eq!(notice.as_str(), format!("3{}", cols[1]));
        iuvs.push(cols[1].to_string());
    }
    assert_eq!(iuvs.len(), 6);
    let distinct: std::collections::HashSet<_> = iuvs.iter().collect();
    assert_eq!(distinct.len(), 6, "generated IUVs are distinct");

    let positions = home.positions(&[]);
    assert_eq!(positions.len(), 6);
    let p3 = home.positions(&["--iud", "IUD3"]);
    assert_eq!(p3[0]["status"], "active");
    assert_eq!(p3[0]["amount_cents"], 1003);
    assert_eq!(p3[0]["iuv"], iuvs[2].as_str());
    assert_eq!(home.positions(&["--iuv", &iuvs[2]])[0]["iud"], "IUD3");
    assert_eq!(
        home.positions(&["--notice", &format!("3{}", iuvs[2])])[0]["iud"],
        "IUD3"
    );

    // The same file again: refused as a whole, nothing changes.
    let out2 = home.path().join("out2");
    let again = home.import(&flow, &out2);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("PAA_IMPORT_FLUSSO_DUPLICATO"),
        "{}",
        stderr(&again)
    );
    assert!(stdout(&again).contains("flow=IMPORT_ABORTITO"));
    assert_eq!(home.positions(&[]).len(), 6);
    assert!(!out2.join("c_g224-FLOW1-1_4_SCARTI.zip").exists());

    // A follow-up flow: modify IUD1 (new amount), annul IUD2, modify a missing IUD.
    let follow = vec![
        Row::tari("IUD1", 1, 9999).set(20, "").set(34, "M"),
        Row::tari("IUD2", 2, 1002).set(20, "").set(34, "A"),
        Row::tari("NOTTHERE", 7, 100).set(20, "").set(34, "M"),
    ];
    let flow2 = write_zip(
        home.path(),
        "c_g224-FLOW2-1_4",
        csv_text(&follow).as_bytes(),
    );
    let o = home.import(&flow2, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().last().unwrap(),
        "rows=3 accepted=2 rejected=1 flow=IMPORT_ESEGUITO"
    );
    let scarti2 = unzip_text(&out.join("c_g224-FLOW2-1_4_SCARTI.zip"));
    assert_eq!(
        scarti_rows(&scarti2),
        [(
            "NOTTHERE".to_string(),
            "PAA_IMPORT_DOVUTO_NON_PRESENTE".to_string()
        )]
    );

    let p1 = &home.positions(&["--iud", "IUD1"])[0];
    assert_eq!(p1["amount_cents"], 9999);
    assert_eq!(
        p1["iuv"],
        iuvs[0].as_str(),
        "a hub-generated IUV survives a modify"
    );
    assert_eq!(p1["history_count"], 2);
    assert_eq!(p1["version"], 2);
    let p2 = &home.positions(&["--iud", "IUD2"])[0];
    assert_eq!(p2["status"], "annulled");
    assert_eq!(p2["history_count"], 2);
    // The IUV file of the modify keeps the position's IUV empty in the row as sent.
    let iuv2 = unzip_text(&out.join("c_g224-FLOW2-1_4_IUV.zip"));
    assert_eq!(iuv2.lines().count(), 3);
}

#[test]
fn a_bare_csv_is_accepted_and_the_entity_must_match() {
    let home = Home::new();
    let out = home.path().join("out");
    let csv = home.path().join("c_g224-PLAIN-1_4.csv");
    std::fs::write(&csv, csv_text(&[Row::tari("A1", 1, 100)])).unwrap();
    let o = home.import(&csv, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("rows=1 accepted=1 rejected=0 flow=IMPORT_ESEGUITO\n"));

    let other = home.path().join("c_d530-OTHER-1_4.csv");
    std::fs::write(&other, csv_text(&[Row::tari("A2", 2, 100)])).unwrap();
    let o = home.import(&other, &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("PAA_IMPORT_ENTE_ERR"), "{}", stderr(&o));

    let badname = home.path().join("c_g224-NOVERSION.csv");
    std::fs::write(&badname, "x").unwrap();
    let o = home.import(&badname, &out);
    assert!(
        stderr(&o).contains("PAA_IMPORT_NOME_FILE_ERR"),
        "{}",
        stderr(&o)
    );
    assert_eq!(home.positions(&[]).len(), 1);
}

/// An operator may name a link to the flow: `snodo import` reads the file it points to (only a
/// pipeline's sources refuse links), under the name given.
#[test]
fn snodo_import_follows_a_link_the_operator_names() {
    let home = Home::new();
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let real = write_zip(
        &elsewhere,
        "c_g224-LINK1-1_4",
        csv_text(&[Row::tari("L1", 1, 100)]).as_bytes(),
    );
    let link = home.path().join("c_g224-LINK1-1_4.zip");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = home.import(&link, &home.path().join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("accepted=1 rejected=0"),
        "{}",
        stdout(&o)
    );
}
