//! The payment notice (avviso pagoPA) as a one-page PDF: data in, bytes out, no I/O.
//!
//! Laid out after pagoPA's notice specification ("L'avviso di pagamento pagoPA", Allegato 2),
//! single payment ("rata unica"): creditor entity, debtor, subject, amount and due date, and the
//! payment slip for banks and other channels with the QR code, the notice number in groups of
//! four, the entity's fiscal code and its CBILL code where configured. Text uses the PDF
//! standard fonts (Helvetica, WinAnsiEncoding), so no font file is embedded; text is cut at the
//! specification's limits and then fitted (shrunk, wrapped, clipped) so it never leaves its box.
//! What is not covered yet (logo, instalments, the Poste section) is listed in docs/NOTICES.md.

mod layout;
mod metrics;
pub mod text;

use chrono::NaiveDate;
use qrcode::{EcLevel, QrCode, Version};
use snodo_core::{Amount, EntityFiscalCode, NoticeNumber};

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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("amount {0} cents is outside 0,01..999.999.999,99 euro")]
    Amount(i64),
    #[error("QR code: {0}")]
    Qr(String),
}

impl Notice {
    /// `PAGOPA|002|<notice>|<entity fiscal code>|<amount in cents>`.
    pub fn qr_payload(&self) -> String {
        snodo_core::qr::qr_payload(&self.notice_number, &self.creditor.fiscal_code, self.amount)
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
    Ok(layout::page(notice, &qr))
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
