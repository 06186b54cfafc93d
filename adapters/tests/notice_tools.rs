//! The rendered notice read back with real tools: poppler's `pdftoppm` and `pdftotext`, and
//! zbar's `zbarimg` for the QR code (Debian poppler-utils and zbar-tools, installed by
//! ops/setup.sh).

use chrono::NaiveDate;
use snodo_adapters::notice::{render, Creditor, Debtor, Notice};
use snodo_core::{Amount, EntityFiscalCode, NoticeNumber};
use std::path::Path;
use std::process::Command;

fn notice(number: &str, cents: i64) -> Notice {
    Notice {
        creditor: Creditor {
            name: "Comune di Sant'Antonio à Mare".into(),
            fiscal_code: EntityFiscalCode::parse("00644060287").unwrap(),
            sector: Some("Ufficio Entrate".into()),
            info: None,
            cbill: Some("A1B2C".into()),
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
    }
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
    if let Some(out) = std::env::var_os("NOTICE_PNG") {
        // `NOTICE_PNG=docs/notice-sample cargo test …` refreshes the picture in docs/NOTICES.md.
        run(Command::new("pdftoppm")
            .args(["-png", "-singlefile", "-r", "60"])
            .arg(&pdf)
            .arg(out));
    }
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
