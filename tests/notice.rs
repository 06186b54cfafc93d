//! The payment notice on demand, end to end: `GET …/positions/{iud}/notice.pdf` with the
//! entity's key (403 for another entity's, 404 unknown, 409 annulled) and `snodo notice`, whose
//! PDF's QR code (read with pdftoppm + zbarimg) is exactly the position's payload.

mod common;

use common::*;
use std::process::Command;

const POSITIONS: &str = "/api/v1/entities/c_g224/positions";

#[test]
fn notice_pdf_over_the_api_and_the_cli() {
    let home = Home::new();
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
    let png = home.path().join("avviso");
    let o = Command::new("pdftoppm")
        .args(["-png", "-singlefile", "-r", "200"])
        .arg(&out)
        .arg(&png)
        .output()
        .expect("pdftoppm (poppler-utils, installed by ops/setup.sh)");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png.with_extension("png"))
        .output()
        .expect("zbarimg (zbar-tools, installed by ops/setup.sh)");
    assert_eq!(stdout(&o).trim_end(), qr);
    assert!(qr.ends_with("|12345"), "{qr}");

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
