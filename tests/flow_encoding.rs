//! Flows from older systems in Windows-1252: read as declared, answered in the same encoding;
//! the same bytes undeclared are refused naming the line and the byte.

mod common;
use common::*;

/// The row text in Windows-1252 (only the characters these tests use beyond ASCII).
fn cp1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            'à' => 0xE0,
            'è' => 0xE8,
            'ì' => 0xEC,
            'ò' => 0xF2,
            'ù' => 0xF9,
            'À' => 0xC0,
            '€' => 0x80,
            c if c.is_ascii() => c as u8,
            c => panic!("{c:?} is not in this test's table"),
        })
        .collect()
}

fn import_as(home: &Home, flow: &std::path::Path, encoding: Option<&str>) -> std::process::Output {
    let out = home.path().join("out");
    let mut args = vec![
        "import",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    if let Some(e) = encoding {
        args.extend(["--encoding", e]);
    }
    args.push(flow.to_str().expect("utf-8 path"));
    home.snodo(&args)
}

fn flow_text() -> String {
    let rows = [
        Row::tari("E1", 1, 1000)
            .set(4, "Nicolò Àèìòù")
            .set(17, "TARI € 10 più addizionale"),
        // Rejected (bad amount): its SCARTI line comes back in Windows-1252 too.
        Row::tari("E2", 2, 500).set(4, "Perù Ràè").set(13, "dieci"),
    ];
    csv_text(&rows)
}

#[test]
fn a_windows_1252_flow_keeps_its_accents_both_ways() {
    let home = Home::new();
    let text = flow_text();
    let flow = write_zip(home.path(), "c_g224-ENC1-1_4", &cp1252(&text));
    let o = import_as(&home, &flow, Some("windows-1252"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("accepted=1 rejected=1"),
        "{}",
        stdout(&o)
    );

    let p = home.positions(&["--iud", "E1"]);
    let shown = p[0].to_string();
    assert!(shown.contains("Nicolò Àèìòù"), "{shown}");
    assert!(shown.contains("TARI € 10 più addizionale"), "{shown}");

    // The outcome files are in the flow's encoding: bytes, not UTF-8.
    let read = |name: &str| {
        let path = home.path().join("out").join(name);
        let mut z = zip::ZipArchive::new(std::fs::File::open(&path).expect("zip")).expect("zip");
        let mut f = z.by_index(0).expect("entry");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).expect("read");
        bytes
    };
    let iuv = read("c_g224-ENC1-1_4_IUV.zip");
    assert!(String::from_utf8(iuv.clone()).is_err(), "not UTF-8");
    let needle = cp1252("Nicolò Àèìòù");
    assert!(iuv.windows(needle.len()).any(|w| w == needle));
    let euro = cp1252("TARI € 10 più addizionale");
    assert!(iuv.windows(euro.len()).any(|w| w == euro));
    let scarti = read("c_g224-ENC1-1_4_SCARTI.zip");
    let lines: Vec<&[u8]> = scarti.split(|&b| b == b'\n').collect();
    // The rejected row comes back byte for byte as it was sent, then the reason.
    let sent = cp1252(
        &Row::tari("E2", 2, 500)
            .set(4, "Perù Ràè")
            .set(13, "dieci")
            .line(),
    );
    assert!(
        lines[1].starts_with(&sent),
        "{:?}",
        String::from_utf8_lossy(lines[1])
    );
    assert!(String::from_utf8_lossy(lines[1]).contains("PAA_IMPORT_IMPORTO"));
}

#[test]
fn the_same_bytes_undeclared_are_refused_naming_the_line() {
    let home = Home::new();
    let flow = write_zip(home.path(), "c_g224-ENC2-1_4", &cp1252(&flow_text()));
    let o = import_as(&home, &flow, None);
    assert!(!o.status.success());
    let err = stderr(&o);
    // Line 2 is the first row, where "Nicolò" has the first byte that is not UTF-8.
    assert!(err.contains("line 2: invalid UTF-8 at byte"), "{err}");
    assert!(err.contains("encoding = \"windows-1252\""), "{err}");
    assert!(home.positions(&[]).is_empty(), "nothing imported");
}

#[test]
fn a_utf8_flow_with_a_byte_order_mark_is_read() {
    let home = Home::new();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(flow_text().as_bytes());
    let flow = write_zip(home.path(), "c_g224-ENC3-1_4", &bytes);
    let o = import_as(&home, &flow, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("accepted=1 rejected=1"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_unknown_encoding_is_a_configuration_problem() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).expect("config");
    let cfg = cfg.replacen(
        "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }",
        "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }\nencoding = \"ebcdic\"",
        1,
    );
    std::fs::write(home.config(), cfg).expect("write");
    let o = home.snodo(&["validate", "-c", "config.toml"]);
    assert!(!o.status.success());
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(err.contains(".encoding"), "{err}");
    assert!(
        err.contains("windows-1252"),
        "the known names are listed: {err}"
    );
}
