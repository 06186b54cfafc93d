//! The rendered notice read back with real tools: poppler's `pdftoppm` and `pdftotext`, zbar's
//! `zbarimg` for the QR code and libdmtx's `dmtxread` for the Poste Data Matrix (Debian
//! poppler-utils, zbar-tools and dmtx-utils, installed by ops/setup.sh).

use chrono::NaiveDate;
use snodo_adapters::notice::{
    render, text_boxes, Creditor, Debtor, Logo, Notice, Poste, POSTE_DATAMATRIX_LEN,
};
use snodo_core::{Amount, EntityFiscalCode, NoticeNumber};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn notice(number: &str, cents: i64) -> Notice {
    Notice {
        creditor: Creditor {
            name: "Comune di Sant'Antonio à Mare".into(),
            fiscal_code: EntityFiscalCode::parse("00644060287").unwrap(),
            sector: Some("Ufficio Entrate".into()),
            info: None,
            cbill: Some("A1B2C".into()),
            logo: None,
        },
        debtor: Debtor {
            fiscal_code: Some("RSSMRA80A01H501U".into()),
            name: "Niccolò Perù Gioè Lì".into(),
            address: Some("Via Ca' Foscari 12, 30123 Venezia VE".into()),
        },
        subject: "Retta mensa scolastica: è più di 5 € al giorno, però ò".into(),
        notice_number: NoticeNumber::parse(number).unwrap(),
        amount: Amount::from_cents(cents),
        due_date: NaiveDate::from_ymd_opt(2026, 12, 31),
        poste: None,
    }
}

/// A 3:1 logo: a dark blue band with a transparent hole, written with the `png` crate.
fn logo() -> Arc<Logo> {
    let (w, h) = (90u32, 30u32);
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let hole = (40..50).contains(&x) && (10..20).contains(&y);
            data.extend_from_slice(&[20, 40, 120, if hole { 0 } else { 255 }]);
        }
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgba);
    e.set_depth(png::BitDepth::Eight);
    let mut wr = e.write_header().unwrap();
    wr.write_image_data(&data).unwrap();
    wr.finish().unwrap();
    Arc::new(Logo::from_png(&out).unwrap())
}

fn poste_notice() -> Notice {
    let mut n = notice("301000000000012373", 102_099);
    n.creditor.logo = Some(logo());
    n.poste = Some(Poste {
        account: "1234567".into(),
        holder: "Comune di Sant'Antonio à Mare - Servizio Tesoreria".into(),
        authorisation: "AUT. N. DB/SSIC/E 12345 DEL 01/01/2020".into(),
    });
    n
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (ops/setup.sh installs poppler-utils and zbar-tools)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The page as a PNG at `dpi`, next to the PDF.
fn png(pdf: &Path, dpi: u32) -> std::path::PathBuf {
    let stem = pdf.with_extension("");
    run(Command::new("pdftoppm")
        .args(["-png", "-singlefile", "-r", &dpi.to_string()])
        .arg(pdf)
        .arg(&stem));
    stem.with_extension("png")
}

#[test]
fn qr_code_decodes_to_exactly_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    for (number, cents) in [("301000000000012373", 102_099), ("112345678901234567", 5)] {
        let n = notice(number, cents);
        let pdf = dir.path().join(format!("{number}.pdf"));
        std::fs::write(&pdf, render(&n).unwrap()).unwrap();
        let image = png(&pdf, 200);
        let decoded = run(Command::new("zbarimg").args(["--raw", "-q"]).arg(&image));
        assert_eq!(decoded.trim_end_matches('\n'), n.qr_payload());
        assert_eq!(
            decoded.trim_end(),
            format!("PAGOPA|002|{number}|00644060287|{cents}")
        );
    }
}

#[test]
fn text_layer_has_the_grouped_number_amount_and_accented_names() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("n.pdf");
    std::fs::write(
        &pdf,
        render(&notice("301000000000012373", 102_099)).unwrap(),
    )
    .unwrap();
    let text = run(Command::new("pdftotext").arg(&pdf).arg("-"));
    for needle in [
        "3010 0000 0000 0123 73",
        "1.020,99",
        "Comune di Sant'Antonio à Mare",
        "Niccolò Perù Gioè Lì",
        "è più di 5 € al giorno, però ò",
        "RSSMRA80A01H501U",
        "00644060287",
        "A1B2C",
        "31/12/2026",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn long_texts_are_cut_at_the_limits_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("long.pdf");
    let mut n = notice("301000000000012373", 1);
    // Words of 3 letters: the subject is cut at 90 characters, "w01 … w22 w2", so w22 is the
    // last whole word and w23 must not appear.
    n.subject = (1..=100)
        .map(|i| format!("w{i:02}"))
        .collect::<Vec<_>>()
        .join(" ");
    n.debtor.name = (1..=40)
        .map(|i| format!("n{i:02}"))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&pdf, render(&n).unwrap()).unwrap();
    let text = run(Command::new("pdftotext").arg(&pdf).arg("-"));
    assert!(text.contains("w22"), "{text}");
    assert!(!text.contains("w23"), "{text}");
    // The debtor's name is cut at 70 characters, "n01 … n17 n1".
    assert!(text.contains("n17"), "{text}");
    assert!(!text.contains("n18"), "{text}");
}

/// `[x0, y0, x1, y1]` of the item `name` (points from the bottom left).
fn find(boxes: &[(&'static str, [f32; 4])], name: &str) -> [f32; 4] {
    boxes
        .iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no {name} in {boxes:?}"))
        .1
}

#[test]
fn poste_slip_data_matrix_and_qr_both_decode() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("poste.pdf");
    let n = poste_notice();
    std::fs::write(&pdf, render(&n).unwrap()).unwrap();
    if let Some(out) = std::env::var_os("NOTICE_PNG") {
        // `NOTICE_PNG=$PWD/docs/notice-sample cargo test …` refreshes the picture in
        // docs/NOTICES.md.
        run(Command::new("pdftoppm")
            .args(["-png", "-singlefile", "-r", "60"])
            .arg(&pdf)
            .arg(out));
    }
    let image = png(&pdf, 300);
    // Both codes are on one page: zbarimg reads the QR code, dmtxread the Data Matrix.
    let qr = run(Command::new("zbarimg").args(["--raw", "-q"]).arg(&image));
    assert_eq!(qr.trim_end_matches('\n'), n.qr_payload());
    let dm = run(Command::new("dmtxread")
        .args(["-N", "1", "-m", "20000"])
        .arg(&image));
    let expected = n.poste_datamatrix().unwrap();
    assert_eq!(dm, expected);
    assert_eq!(dm.len(), POSTE_DATAMATRIX_LEN);
    assert_eq!(&dm[..13], "codfase=NBPA;");
    assert_eq!(&dm[13..15], "18");
    assert_eq!(&dm[15..33], "301000000000012373");
    assert_eq!(&dm[33..47], "12000001234567");
    assert_eq!(&dm[47..49], "10");
    assert_eq!(&dm[49..59], "0000102099");
    assert_eq!(&dm[59..66], "38961P1");
    assert_eq!(&dm[66..77], "00644060287");
    assert_eq!(&dm[77..93], "RSSMRA80A01H501U");
    assert_eq!(dm[93..133].trim_end(), "NICCOLO PERU GIOE LI");
    assert_eq!(
        dm[133..243].trim_end(),
        "RETTA MENSA SCOLASTICA: E PIU DI 5   AL GIORNO, PERO O"
    );
    assert_eq!(&dm[243..], format!("{}A", " ".repeat(12)));

    let text = run(Command::new("pdftotext").arg(&pdf).arg("-"));
    for needle in [
        "BOLLETTINO POSTALE PA",
        "000001234567",
        "Comune di Sant'Antonio à Mare - Servizio Tesoreria",
        "AUT. N. DB/SSIC/E 12345 DEL 01/01/2020",
        "896",
        "P1",
        "BANCHE E ALTRI CANALI",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    // The grouped notice number is on both slips.
    assert_eq!(text.matches("3010 0000 0000 0123 73").count(), 2, "{text}");
}

/// The page in gray at `dpi` (PGM): width, height, one byte a pixel from the top left.
fn gray(pdf: &Path, dpi: u32) -> (usize, usize, Vec<u8>) {
    let stem = pdf.with_extension("");
    run(Command::new("pdftoppm")
        .args(["-gray", "-singlefile", "-r", &dpi.to_string()])
        .arg(pdf)
        .arg(&stem));
    let bytes = std::fs::read(stem.with_extension("pgm")).unwrap();
    let _ = std::fs::remove_file(stem.with_extension("pgm"));
    // "P5\n<w> <h>\n255\n" then the pixels.
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).unwrap().to_string());
    }
    assert_eq!(fields[0], "P5");
    assert_eq!(fields[3], "255");
    let (w, h) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = bytes[at + 1..].to_vec();
    assert_eq!(pixels.len(), w * h);
    (w, h, pixels)
}

/// Dark pixels outside every box (grown by `slack` points), as points `(x, y)`.
fn ink_outside(
    (w, h, px): &(usize, usize, Vec<u8>),
    dpi: f32,
    boxes: &[(&'static str, [f32; 4])],
    slack: f32,
) -> Vec<(f32, f32)> {
    let pt = 72.0 / dpi;
    let mut out = Vec::new();
    for row in 0..*h {
        for col in 0..*w {
            if px[row * w + col] > 160 {
                continue;
            }
            // The pixel's centre in points from the bottom left.
            let (x, y) = ((col as f32 + 0.5) * pt, 841.89 - (row as f32 + 0.5) * pt);
            let inside = boxes.iter().any(|(_, [x0, y0, x1, y1])| {
                x >= x0 - slack && x <= x1 + slack && y >= y0 - slack && y <= y1 + slack
            });
            if !inside {
                out.push((x, y));
            }
        }
    }
    out
}

/// Every long text stays in the room it was given: rasterised, no dark pixel lies outside the
/// boxes the layout reports, and the boxes do not overlap (a unit test), so a text running out
/// of its box would darken a gap, a margin or the white around a code.
#[test]
fn no_ink_outside_the_boxes_with_very_long_texts() {
    let dir = tempfile::tempdir().unwrap();
    let dpi = 150.0;
    for with_poste in [false, true] {
        let mut n = if with_poste {
            poste_notice()
        } else {
            notice("301000000000012373", 102_099)
        };
        n.subject = "Pagamento tassa rifiuti Àlta Ùltima ".repeat(9)[..300].to_string();
        n.debtor.name = "Maria Giuseppina ".repeat(12)[..200].to_string();
        n.creditor.name = "Comune di Sant'Antonio à Mare ".repeat(7)[..200].to_string();
        n.debtor.address = Some("Via Giù per la Fondamenta ".repeat(12)[..300].to_string());
        if let Some(p) = &mut n.poste {
            p.holder = "Tesoreria Comunale Àlta ".repeat(9)[..200].to_string();
            p.authorisation =
                "AUT. N. DB/SSIC/E 12345 DEL 01/01/2020 ".repeat(8)[..300].to_string();
        }
        let pdf = dir.path().join(format!("long-{with_poste}.pdf"));
        std::fs::write(&pdf, render(&n).unwrap()).unwrap();
        let page = gray(&pdf, dpi as u32);
        let boxes = text_boxes(&n);
        // One pixel of anti-aliasing around each box.
        let slack = 72.0 / dpi;
        let stray = ink_outside(&page, dpi, &boxes, slack);
        assert!(
            stray.is_empty(),
            "poste {with_poste}: {} dark pixels outside the boxes, e.g. {:?}",
            stray.len(),
            &stray[..stray.len().min(10)]
        );
        // The check sees the texts: without their boxes their ink is outside.
        for name in ["subject", "entity_name", "debtor_name", "debtor_address"]
            .into_iter()
            .chain(
                with_poste
                    .then_some(["poste_holder", "poste_authorisation"])
                    .into_iter()
                    .flatten(),
            )
        {
            let fewer: Vec<_> = boxes.iter().filter(|(k, _)| *k != name).cloned().collect();
            assert!(
                !ink_outside(&page, dpi, &fewer, slack).is_empty(),
                "{name}: no ink of its own"
            );
        }
    }
}

#[test]
fn a_logo_prints_inside_its_box() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("logo.pdf");
    let n = poste_notice();
    let bytes = render(&n).unwrap();
    assert!(bytes.windows(15).any(|w| w == b"/Subtype /Image"));
    std::fs::write(&pdf, &bytes).unwrap();
    let dpi = 100.0;
    let (w, _, px) = gray(&pdf, dpi as u32);
    let [x0, y0, x1, y1] = find(&text_boxes(&n), "logo");
    // 3:1 into 30 × 15 mm: 30 × 10 mm.
    assert!((x1 - x0 - 30.0 * 72.0 / 25.4).abs() < 0.01);
    assert!((y1 - y0 - 10.0 * 72.0 / 25.4).abs() < 0.01);
    let at = |x: f32, y: f32| {
        let (col, row) = (
            (x * dpi / 72.0) as usize,
            ((841.89 - y) * dpi / 72.0) as usize,
        );
        px[row * w + col]
    };
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    // Dark blue a quarter in; white through the transparent hole in the middle.
    assert!(at(x0 + (x1 - x0) / 4.0, cy) < 100);
    assert!(at(cx, cy) > 240, "{}", at(cx, cy));
}
