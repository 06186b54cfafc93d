//! The payment notice end to end: on demand (`GET …/positions/{iud}/notice.pdf` with the
//! entity's key: 403 for another entity's, 404 unknown, 409 annulled; and `snodo notice`), and a
//! whole flow's notices zipped beside its outcome files (`notices = true`). QR codes are read
//! back with pdftoppm + zbarimg and must be exactly the position's payload.

mod common;

use common::*;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const POSITIONS: &str = "/api/v1/entities/c_g224/positions";

#[test]
fn notice_pdf_over_the_api_and_the_cli() {
    let home = Home::new();
    // Padova prints its logo and, for TARI (a postal account), Poste's slip.
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replacen(
            "segregation_code = \"01\"\n",
            &format!(
                "segregation_code = \"01\"\nlogo = \"{}\"\nposte_authorisation = \"AUT. DB/SSIC/E 12345 DEL 01/01/2020\"\n",
                repo().join("tests/data/logo-example.png").display()
            ),
            1,
        )
        .replacen(
            "  iban = \"IT60X0542811101000000123456\"\n",
            "  iban = \"IT60X0542811101000000123456\"\n  postal_iban = \"IT24M0760112100000012345678\"\n",
            1,
        );
    std::fs::write(home.config(), cfg).unwrap();
    let hub = Hub::start_serving(&home);
    let p = home.port;
    let created = http(
        p,
        "POST",
        POSITIONS,
        Some(KEY_PADOVA),
        &[],
        Some(&api_position("AVV-1", 12_345).to_string()),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let qr = created.json()["qrCode"].as_str().unwrap().to_string();

    let pdf = get(p, &format!("{POSITIONS}/AVV-1/notice.pdf"), KEY_PADOVA);
    assert_eq!(pdf.status, 200, "{}", pdf.body);
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert!(pdf.body.starts_with("%PDF-"));
    assert_eq!(
        get(p, &format!("{POSITIONS}/AVV-1/notice.pdf"), KEY_FELTRE).status,
        403
    );
    assert_eq!(
        get(p, &format!("{POSITIONS}/NONE/notice.pdf"), KEY_PADOVA).status,
        404
    );

    // The CLI writes the same notice; its QR code decodes to the position's payload.
    let out = home.path().join("avviso.pdf");
    let o = home.snodo(&[
        "notice",
        "-c",
        "config.toml",
        "--entity",
        "c_g224",
        "--iud",
        "AVV-1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = png_of(&out, 200);
    assert_eq!(zbar(&png), qr);
    assert!(qr.ends_with("|12345"), "{qr}");
    // The Poste slip's Data Matrix (dmtxread, dmtx-utils): the notice, the postal account, the
    // amount and the entity where Poste's readers look for them.
    let o = Command::new("dmtxread")
        .args(["-N", "1", "-m", "20000"])
        .arg(&png)
        .output()
        .expect("dmtxread (dmtx-utils, installed by ops/setup.sh)");
    let dm = stdout(&o);
    assert_eq!(dm.len(), 256, "{dm:?} {}", stderr(&o));
    let notice = qr.split('|').nth(2).unwrap();
    assert_eq!(&dm[..15], "codfase=NBPA;18");
    assert_eq!(&dm[15..33], notice);
    assert_eq!(&dm[33..47], "12000012345678");
    assert_eq!(&dm[47..59], "100000012345");
    assert_eq!(&dm[59..66], "38961P1");
    assert_eq!(&dm[66..77], PADOVA);
    let o = Command::new("pdftotext")
        .arg(&out)
        .arg("-")
        .output()
        .expect("pdftotext");
    let text = stdout(&o);
    assert!(text.contains("BOLLETTINO POSTALE PA"), "{text}");
    assert!(text.contains("000012345678"), "{text}");
    // The logo is drawn (an image on the page).
    let pdf_bytes = std::fs::read(&out).unwrap();
    assert!(
        pdf_bytes
            .windows(12)
            .any(|w| w == b"/Subtype /Im" || w == b"/Subtype/Ima"),
        "no image in the notice"
    );

    // Annulled: no notice.
    let gone = http(
        p,
        "DELETE",
        &format!("{POSITIONS}/AVV-1"),
        Some(KEY_PADOVA),
        &[],
        None,
    );
    assert_eq!(gone.status, 200, "{}", gone.body);
    let refused = get(p, &format!("{POSITIONS}/AVV-1/notice.pdf"), KEY_PADOVA);
    assert_eq!(refused.status, 409, "{}", refused.body);
    drop(hub);
}

/// The page of the PDF at `pdf` as a PNG beside it, at `dpi` (pdftoppm).
fn png_of(pdf: &Path, dpi: u32) -> std::path::PathBuf {
    let stem = pdf.with_extension("");
    let o = Command::new("pdftoppm")
        .args(["-png", "-singlefile", "-r", &dpi.to_string()])
        .arg(pdf)
        .arg(&stem)
        .output()
        .expect("pdftoppm (poppler-utils, installed by ops/setup.sh)");
    assert!(o.status.success(), "{}", stderr(&o));
    stem.with_extension("png")
}

/// The QR code in the image at `png` (zbarimg).
fn zbar(png: &Path) -> String {
    let o = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("zbarimg (zbar-tools, installed by ops/setup.sh)");
    stdout(&o).trim_end().to_string()
}

/// A 10 000-row flow through a pipeline with `notices = true`: the zip beside the outcome files
/// holds one notice per accepted position, named `avviso_<IUV>.pdf` as MyPay names them, each
/// one's QR code that position's payload (checked on a sample of 50); the rejected row gets
/// none, and `/metrics` counts them.
#[test]
fn a_flow_with_notices_publishes_them_beside_its_outcome_files() {
    const ROWS: u32 = 10_000;
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config()).unwrap().replace(
        "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }",
        "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }\nnotices = true",
    );
    std::fs::write(home.config(), cfg).unwrap();
    let mut rows: Vec<Row> = (0..ROWS)
        .map(|i| Row::tari(&format!("AVV-{i}"), i, 1_000 + u64::from(i)))
        .collect();
    // One bad row: rejected, so no notice.
    rows.push(Row::tari("AVV-BAD", 1, 100).set(15, "NOPE"));
    let stem = "c_g224-AVVISI-1_4";
    let inbox = home.path().join("var/c_g224/in");
    std::fs::create_dir_all(&inbox).unwrap();
    let flow = write_zip(home.path(), stem, csv_text(&rows).as_bytes());
    std::fs::rename(&flow, inbox.join(format!("{stem}.zip"))).unwrap();

    let hub = Hub::start_serving(&home);
    let out = home.path().join("var/c_g224/out");
    let notices = out.join(format!("{stem}_AVVISI_PDF.zip"));
    let iuv_file = out.join(format!("{stem}_IUV.zip"));
    assert!(
        wait_for(600, || notices.exists() && iuv_file.exists()),
        "no notices zip in {}",
        out.display()
    );

    // IUV and amount of every accepted row, from the accepted-rows outcome file.
    let accepted: Vec<(String, String)> = unzip_text(&iuv_file)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            let cents = f[13].replace('.', "").trim_start_matches('0').to_string();
            (f[1].to_string(), cents)
        })
        .collect();
    assert_eq!(accepted.len(), ROWS as usize);

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&notices).unwrap()).unwrap();
    assert_eq!(zip.len(), ROWS as usize, "one PDF per accepted position");
    let names: std::collections::HashSet<String> = zip.file_names().map(String::from).collect();
    for (iuv, _) in &accepted {
        assert!(names.contains(&format!("avviso_{iuv}.pdf")), "{iuv}");
    }
    let dir = tempfile::tempdir().unwrap();
    for (iuv, cents) in accepted.iter().step_by(ROWS as usize / 50) {
        let mut pdf = Vec::new();
        zip.by_name(&format!("avviso_{iuv}.pdf"))
            .unwrap()
            .read_to_end(&mut pdf)
            .unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let path = dir.path().join(format!("{iuv}.pdf"));
        std::fs::write(&path, &pdf).unwrap();
        assert_eq!(
            zbar(&png_of(&path, 150)),
            format!("PAGOPA|002|3{iuv}|{PADOVA}|{cents}")
        );
    }

    let metrics = http(home.port, "GET", "/metrics", None, &[], None).body;
    assert!(
        metrics.contains(&format!(
            "snodo_notices_rendered_total{{entity=\"c_g224\",source=\"flow\"}} {ROWS}"
        )),
        "{metrics}"
    );
    drop(hub);
}
