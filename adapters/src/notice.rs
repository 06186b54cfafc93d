//! The payment notice (avviso pagoPA) as a one-page PDF: data in, bytes out, no I/O.
//!
//! Laid out after pagoPA's notice specification ("L'avviso di pagamento pagoPA", Allegato 2),
//! single payment ("rata unica"): creditor entity, debtor, subject, amount and due date, and the
//! payment slip for banks and other channels with the QR code, the notice number in groups of
//! four, the entity's fiscal code and its CBILL code where configured. Text uses the PDF
//! standard fonts (Helvetica, WinAnsiEncoding), so no font file is embedded; text is cut at the
//! specification's limits and then fitted (shrunk, wrapped, clipped) so it never leaves its box.
//! For a debt type with a postal current account the Poste slip ("Bollettino Postale PA") with
//! its Data Matrix follows the bank slip; the entity's logo, when given, heads the page. What is
//! not covered yet (instalments, bilingual notices) is listed in docs/NOTICES.md.

mod layout;
mod logo;
mod metrics;
mod poste;
pub mod text;

pub use logo::{Logo, LOGO_MAX_BYTES, LOGO_MAX_SIDE};
pub use poste::{POSTE_DATAMATRIX_LEN, POSTE_MAX_AMOUNT_CENTS};

use chrono::NaiveDate;
use qrcode::{EcLevel, QrCode, Version};
use snodo_core::{Amount, EntityFiscalCode, NoticeNumber};
use std::sync::Arc;

/// Largest amount the notice can print (`999.999.999,99`).
pub const MAX_AMOUNT_CENTS: i64 = 99_999_999_999;

/// QR code symbol: version 4 (33 × 33 modules), error correction M, as Allegato 2 fixes it.
pub const QR_VERSION: i16 = 4;
pub const QR_MODULES: usize = 33;

/// The creditor entity as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creditor {
    pub name: String,
    pub fiscal_code: EntityFiscalCode,
    /// Organisational unit (`ENTE.SETTORE`).
    pub sector: Option<String>,
    /// Contact information (`ENTE.INFO`).
    pub info: Option<String>,
    /// Interbank code (SIA) to pay through CBILL home banking.
    pub cbill: Option<String>,
    /// Printed in the header beside the entity's name; shared by all its notices.
    pub logo: Option<Arc<Logo>>,
}

/// Who the notice is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debtor {
    /// Fiscal code or VAT number; `None` when unknown (e.g. `ANONIMO`).
    pub fiscal_code: Option<String>,
    pub name: String,
    /// Street, number, postal code, town, province on one line.
    pub address: Option<String>,
}

/// One single-payment notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub creditor: Creditor,
    pub debtor: Debtor,
    /// `AVVISO.OGGETTO`: the position's causale.
    pub subject: String,
    pub notice_number: NoticeNumber,
    pub amount: Amount,
    /// `None` prints the "senza scadenza" wording.
    pub due_date: Option<NaiveDate>,
    /// Adds the Poste slip with its Data Matrix below the bank slip.
    pub poste: Option<Poste>,
}

/// The Poste slip's data, for a debt type with a postal current account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poste {
    /// The postal current account number, 12 digits (the last 12 of the postal IBAN).
    pub account: String,
    /// Its holder ("intestatario"), printed cut at 50.
    pub holder: String,
    /// Poste's authorisation to print the slip ("AUT. ..."), printed as given (cut to fit).
    pub authorisation: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("amount {0} cents is outside 0,01..999.999.999,99 euro")]
    Amount(i64),
    #[error("QR code: {0}")]
    Qr(String),
    #[error("postal account {0:?} is not 1 to 12 digits")]
    PosteAccount(String),
    #[error("amount {0} cents is over the Poste slip's 99.999.999,99 euro")]
    PosteAmount(i64),
    #[error("Data Matrix: {0}")]
    DataMatrix(String),
    #[error("logo: {0}")]
    Logo(String),
}

impl Notice {
    /// `PAGOPA|002|<notice>|<entity fiscal code>|<amount in cents>`.
    pub fn qr_payload(&self) -> String {
        snodo_core::qr::qr_payload(&self.notice_number, &self.creditor.fiscal_code, self.amount)
    }

    /// The Poste slip's Data Matrix payload, `POSTE_DATAMATRIX_LEN` characters: `None` without
    /// `poste`, or when its account or the amount cannot be written (`render` says which).
    pub fn poste_datamatrix(&self) -> Option<String> {
        poste::payload(self)
    }
}

/// The QR code's dark modules, row by row (`QR_MODULES` × `QR_MODULES`), without quiet zone.
pub fn qr_modules(payload: &str) -> Result<Vec<bool>, NoticeError> {
    let code = QrCode::with_version(payload.as_bytes(), Version::Normal(QR_VERSION), EcLevel::M)
        .map_err(|e| NoticeError::Qr(e.to_string()))?;
    Ok(code
        .to_colors()
        .into_iter()
        .map(|c| c == qrcode::Color::Dark)
        .collect())
}

/// The notice as the bytes of a one-page A4 PDF.
pub fn render(notice: &Notice) -> Result<Vec<u8>, NoticeError> {
    let cents = notice.amount.cents();
    if !(1..=MAX_AMOUNT_CENTS).contains(&cents) {
        return Err(NoticeError::Amount(cents));
    }
    let qr = qr_modules(&notice.qr_payload())?;
    let dm = match &notice.poste {
        None => None,
        Some(p) => {
            if !poste::valid_account(&p.account) {
                return Err(NoticeError::PosteAccount(p.account.clone()));
            }
            if cents > POSTE_MAX_AMOUNT_CENTS {
                return Err(NoticeError::PosteAmount(cents));
            }
            let payload = notice
                .poste_datamatrix()
                .ok_or_else(|| NoticeError::DataMatrix("no payload".into()))?;
            Some(poste::matrix(&payload)?)
        }
    };
    Ok(layout::page(notice, &qr, dm.as_ref()))
}

/// Where each drawn item sits on the page: its name and its box `[x0, y0, x1, y1]` in points
/// from the bottom left. A text's box is the room it was given (width, lines, size), not what
/// it took, so the ink of a text that overflowed would show outside every box.
#[doc(hidden)]
pub fn text_boxes(notice: &Notice) -> Vec<(&'static str, [f32; 4])> {
    layout::boxes(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Notice {
        Notice {
            creditor: Creditor {
                name: "Comune di Città Àlta".into(),
                fiscal_code: EntityFiscalCode::parse("00644060287").unwrap(),
                sector: Some("Servizi scolastici".into()),
                info: Some("tributi@comune.example.it".into()),
                cbill: Some("AB12C".into()),
                logo: None,
            },
            debtor: Debtor {
                fiscal_code: Some("RSSMRA80A01H501U".into()),
                name: "Niccolò Perù".into(),
                address: Some("Via Roma 1, 30100 Venezia VE".into()),
            },
            subject: "Retta mensa: è già più caro".into(),
            notice_number: NoticeNumber::parse("301000000000012373").unwrap(),
            amount: Amount::from_cents(102_099),
            due_date: NaiveDate::from_ymd_opt(2026, 12, 31),
            poste: None,
        }
    }

    pub(crate) fn with_poste() -> Notice {
        Notice {
            poste: Some(Poste {
                account: "1234567".into(),
                holder: "Comune di Città Àlta - Servizio Tesoreria".into(),
                authorisation: "AUT. N. DB/SSIC/E 12345 DEL 01/01/2020".into(),
            }),
            ..sample()
        }
    }

    #[test]
    fn qr_payload_is_the_specification_string() {
        assert_eq!(
            sample().qr_payload(),
            "PAGOPA|002|301000000000012373|00644060287|102099"
        );
    }

    #[test]
    fn qr_is_version_4() {
        let m = qr_modules(&sample().qr_payload()).unwrap();
        assert_eq!(m.len(), QR_MODULES * QR_MODULES);
        // Finder pattern: the top-left 7 modules of the first row are dark.
        assert!(m[..7].iter().all(|&d| d));
        // The largest payload (11-digit amount) still fits version 4-M.
        let mut n = sample();
        n.amount = Amount::from_cents(MAX_AMOUNT_CENTS);
        assert!(qr_modules(&n.qr_payload()).is_ok());
    }

    #[test]
    fn renders_a_pdf_with_the_texts() {
        let pdf = render(&sample()).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let has = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"3010 0000 0000 0123 73"));
        assert!(has(b"1.020,99"));
        // Accented texts are checked on the rendered page (adapters/tests/notice_tools.rs).
        assert!(has(b"/Helvetica-Bold"));
        assert!(has(b"/WinAnsiEncoding"));
    }

    #[test]
    fn out_of_range_amounts_are_refused() {
        let mut n = sample();
        n.amount = Amount::from_cents(0);
        assert_eq!(render(&n), Err(NoticeError::Amount(0)));
        n.amount = Amount::from_cents(MAX_AMOUNT_CENTS + 1);
        assert!(render(&n).is_err());
    }

    #[test]
    fn limits_match_the_print_service_schema() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/specs/pagopa/SANP3.12.0/openapi/print-payment-notice-service.json"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let max = |schema: &str, field: &str| {
            doc["components"]["schemas"][schema]["properties"][field]["maxLength"]
                .as_u64()
                .unwrap() as usize
        };
        assert_eq!(max("Notice", "subject"), text::SUBJECT_MAX);
        assert_eq!(max("Notice", "code"), 18);
        assert_eq!(max("Debtor", "fullName"), text::DEBTOR_NAME_MAX);
        assert_eq!(max("Debtor", "address"), text::DEBTOR_ADDRESS_MAX);
        assert_eq!(max("Debtor", "taxCode"), text::FISCAL_CODE_MAX);
    }

    #[test]
    fn poste_account_and_amount_are_checked() {
        let mut n = with_poste();
        assert!(render(&n).is_ok());
        n.poste.as_mut().unwrap().account = "12-345".into();
        assert_eq!(render(&n), Err(NoticeError::PosteAccount("12-345".into())));
        let mut n = with_poste();
        n.amount = Amount::from_cents(POSTE_MAX_AMOUNT_CENTS + 1);
        assert_eq!(
            render(&n),
            Err(NoticeError::PosteAmount(POSTE_MAX_AMOUNT_CENTS + 1))
        );
        // Without the Poste slip the larger amount still prints.
        n.poste = None;
        assert!(render(&n).is_ok());
    }

    #[test]
    fn the_poste_slip_is_on_the_page() {
        let pdf = render(&with_poste()).unwrap();
        let has = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"BOLLETTINO POSTALE PA"));
        assert!(has(b"000001234567"));
        assert!(has(b"AUT. N. DB/SSIC/E 12345 DEL 01/01/2020"));
        assert!(!render(&sample())
            .unwrap()
            .windows(9)
            .any(|w| w == b"BOLLETTIN"));
    }

    /// A small PNG made here: `color` rows of `w` × `h` pixels, `depth` bits.
    pub(crate) fn png_bytes(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        if color == png::ColorType::Indexed {
            e.set_palette(vec![255, 0, 0, 0, 0, 255]);
            e.set_trns(vec![255, 0]);
        }
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    #[test]
    fn logos_of_every_png_kind_are_taken() {
        use png::{BitDepth as D, ColorType as C};
        let rgba: Vec<u8> = (0..4 * 3)
            .flat_map(|i| [i as u8 * 20, 0, 255, 128])
            .collect();
        let l = Logo::from_png(&png_bytes(4, 3, C::Rgba, D::Eight, &rgba)).unwrap();
        assert_eq!((l.width(), l.height()), (4, 3));
        assert!(l.alpha.is_some());
        let rgb = vec![10u8; 4 * 3 * 3];
        let l = Logo::from_png(&png_bytes(4, 3, C::Rgb, D::Eight, &rgb)).unwrap();
        assert!(l.alpha.is_none());
        let gray16 = vec![200u8; 4 * 3 * 2];
        let l = Logo::from_png(&png_bytes(4, 3, C::Grayscale, D::Sixteen, &gray16)).unwrap();
        assert!(l.alpha.is_none());
        let ga = vec![7u8; 4 * 3 * 2];
        assert!(
            Logo::from_png(&png_bytes(4, 3, C::GrayscaleAlpha, D::Eight, &ga))
                .unwrap()
                .alpha
                .is_some()
        );
        // Palette with 1-bit indices and a transparent entry: 8 pixels a byte.
        let pal = Logo::from_png(&png_bytes(8, 2, C::Indexed, D::One, &[0b1010_1010, 0])).unwrap();
        assert_eq!((pal.width(), pal.height()), (8, 2));
        assert!(pal.alpha.is_some());
        // The same pixels make equal logos; others do not.
        let a = Logo::from_png(&png_bytes(4, 3, C::Rgb, D::Eight, &rgb)).unwrap();
        assert_eq!(a, l_rgb(&rgb));
        assert_ne!(a, l_rgb(&[11u8; 36]));
        assert!(format!("{a:?}").contains("width: 4"));
    }

    fn l_rgb(rgb: &[u8]) -> Logo {
        Logo::from_png(&png_bytes(
            4,
            3,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            rgb,
        ))
        .unwrap()
    }

    #[test]
    fn garbage_and_oversized_logos_are_refused() {
        let msg = |r: Result<Logo, NoticeError>| match r {
            Err(NoticeError::Logo(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(Logo::from_png(b"GIF89a...")).contains("not a PNG"));
        assert!(msg(Logo::from_png(b"")).contains("not a PNG"));
        let mut cut = png_bytes(4, 3, png::ColorType::Rgb, png::BitDepth::Eight, &[1u8; 36]);
        cut.truncate(cut.len() - 20);
        assert!(msg(Logo::from_png(&cut)).contains("PNG"));
        let wide = png_bytes(
            4097,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &[0u8; 513],
        );
        assert!(msg(Logo::from_png(&wide)).contains("4096"));
        let mut big = png_bytes(1, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[0; 3]);
        big.resize(LOGO_MAX_BYTES + 1, 0);
        assert!(msg(Logo::from_png(&big)).contains("1 MiB"));
    }

    #[test]
    fn a_logo_is_embedded_as_an_image() {
        let mut n = with_poste();
        let rgba: Vec<u8> = (0..16 * 8).flat_map(|_| [200u8, 0, 0, 200]).collect();
        let logo = Logo::from_png(&png_bytes(
            16,
            8,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &rgba,
        ))
        .unwrap();
        n.creditor.logo = Some(Arc::new(logo));
        let pdf = render(&n).unwrap();
        let has = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"/Subtype /Image"));
        assert!(has(b"/SMask"));
        assert!(has(b"/Im1 Do"));
        // The logo keeps its aspect ratio in its box.
        let b = text_boxes(&n);
        let [x0, y0, x1, y1] = b.iter().find(|(k, _)| *k == "logo").unwrap().1;
        assert!(((x1 - x0) / (y1 - y0) - 2.0).abs() < 1e-3);
        assert!(x1 - x0 <= layout::LOGO_BOX.0 + 1e-3 && y1 - y0 <= layout::LOGO_BOX.1 + 1e-3);
    }

    #[test]
    fn long_texts_are_cut_at_the_limits() {
        let mut n = sample();
        n.subject = "x".repeat(200);
        n.debtor.name = "Y".repeat(200);
        let pdf = render(&n).unwrap();
        let has = |needle: &[u8]| pdf.windows(needle.len()).any(|w| w == needle);
        assert!(!has("x".repeat(text::SUBJECT_MAX + 1).as_bytes()));
        assert!(!has("Y".repeat(text::DEBTOR_NAME_MAX + 1).as_bytes()));
    }
}
