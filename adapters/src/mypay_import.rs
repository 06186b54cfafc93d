//! MyPay's import flow of dovuti (TRACCIATI.md §1–2): the flow name, the zip around the CSV, the
//! column layout of each version, and the outcome files (`_SCARTI`, `_IUV`) written back.
//!
//! The importer drives it through [`MyPayImport`], its [`crate::flow_format::FlowFormat`]. By
//! hand, a typical import:
//!
//! 1. [`FlowName::parse`] the uploaded file name;
//! 2. [`FlowZip::open`] the zip and read [`FlowZip::csv`] (or wrap a bare `.csv` in
//!    [`SizeLimited`]) with a [`crate::csv::CsvLines`];
//! 3. for each record, reject [`crate::csv::Record::error`], then [`map_row`] by version and
//!    validate the [`snodo_core::dovuto::RawDovuto`];
//! 4. write rejected rows with [`ScartiWriter`], accepted ones with [`IuvWriter`], each into a
//!    [`ZipEntryWriter`] named after [`scarti_name`] / [`iuv_name`].

mod archive;
mod columns;
mod format;
mod name;
mod outcome;

pub use crate::flow_format::RenderedRow;
pub use archive::{open_flow_csv, FlowZip, SizeLimited, DEFAULT_MAX_ENTRIES};
pub use columns::{map_row, unmap_row, ColumnCountError, RowFields};
pub use format::MyPayImport;
pub use name::FlowName;
pub use outcome::{
    iuv_line, iuv_name, render_accepted, scarti_line, scarti_name, zip_single_file,
    zip_single_file_at, IuvWriter, ScartiWriter, ZipEntryWriter,
};

/// Registry key of this codec.
pub const MYPAY_IMPORT: &str = "mypay-import";

/// MyPay's import error codes used by this codec and its callers.
pub mod codes {
    /// Bad flow file name.
    pub const NOME_FILE_ERR: &str = "PAA_IMPORT_NOME_FILE_ERR";
    /// Unknown flow version.
    pub const FILE_VERSIONE_ERR: &str = "PAA_IMPORT_FILE_VERSIONE_ERR";
    /// The zip lacks `<name>.csv`.
    pub const NO_CSV: &str = "PAA_IMPORT_NO_CSV";
    /// Generic processing error (also: unreadable zip, unsupported entry, size limit).
    pub const ERROR: &str = "PAA_IMPORT_ERROR";
    /// Row syntax error (lengths, presence, column count).
    pub const SINTASSI_CSV: &str = "PAA_IMPORT_SINTASSI_CSV";
    /// The flow names another entity than the one uploading it.
    pub const ENTE_ERR: &str = "PAA_IMPORT_ENTE_ERR";
    /// A flow with this IUF was imported before.
    pub const FLUSSO_DUPLICATO: &str = "PAA_IMPORT_FLUSSO_DUPLICATO";
    /// Another file with this IUF is being imported.
    pub const FLUSSO_IN_CARICAMENTO: &str = "PAA_IMPORT_FLUSSO_IN_CARICAMENTO";
}

/// A flow-level failure: the whole flow is refused with [`FlowError::code`].
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The file name is not `<codIPA>-<IUF>-<version>.zip|.csv`.
    #[error("invalid flow file name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    /// The version part of the name is not a supported version.
    #[error("invalid flow file name {name:?}: unknown version {version:?} (supported: 1_0, 1_1, 1_2, 1_3, 1_4)")]
    BadVersion { name: String, version: String },
    /// The zip has no usable `<stem>.csv` at its root.
    #[error("the zip does not contain {expected:?} at its root{detail}")]
    NoCsv { expected: String, detail: String },
    /// The file is not a readable zip archive.
    #[error("the flow is not a readable zip archive: {0}")]
    NotAZip(String),
    /// The CSV entry is encrypted or compressed with a method other than deflate or stored.
    #[error("zip entry {entry:?} cannot be read: {reason}")]
    UnsupportedEntry { entry: String, reason: String },
    /// The zip holds more entries than allowed.
    #[error("the zip holds {entries} entries, more than the limit of {limit}")]
    TooManyEntries { entries: u64, limit: u64 },
    /// The CSV entry declares more uncompressed bytes than allowed.
    #[error("zip entry {entry:?} declares {declared} bytes uncompressed, more than the limit of {limit} bytes")]
    TooLarge {
        entry: String,
        declared: u64,
        limit: u64,
    },
}

impl FlowError {
    /// MyPay's file-level code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadName { .. } => codes::NOME_FILE_ERR,
            Self::BadVersion { .. } => codes::FILE_VERSIONE_ERR,
            Self::NoCsv { .. } => codes::NO_CSV,
            Self::NotAZip(_)
            | Self::UnsupportedEntry { .. }
            | Self::TooLarge { .. }
            | Self::TooManyEntries { .. } => codes::ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::{CsvLimits, CsvLines};
    use std::io::{Cursor, Read, Write};
    use std::time::Instant;

    fn flow_1_4(rows: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows * 330);
        out.extend_from_slice(
            b"IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;\
              indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;\
              nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovuto;commissioneCaricoPa;\
              tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio;\
              flgGeneraIuv;flagMultiBeneficiario;codiceFiscaleEnteSecondario;denominazioneEnteSecondario;\
              ibanAccreditoEnteSecondario;indirizzoEnteSecondario;civicoEnteSecondario;capEnteSecondario;\
              localitaEnteSecondario;provinciaEnteSecondario;nazioneEnteSecondario;\
              datiSpecificiRiscossioneEnteSecondario;causaleVersamentoEnteSecondario;\
              importoVersamentoEnteSecondario;azione\n",
        );
        for i in 0..rows {
            let _ = writeln!(
                out,
                "IUD{i:012};;F;RSSMRA80A01H501U;Mario Rossi {i};Via Roma;{};35100;Padova;PD;IT;\
                 mario.rossi{i}@example.it;2026-12-31;{}.50;;TARI;ALL;Tassa rifiuti 2026 rata {};\
                 9/0101100IM/;;false;false;;;;;;;;;;;;;I",
                i % 200,
                10 + i % 900,
                i % 4
            );
        }
        out
    }

    /// Parser + column mapping throughput; run with
    /// `cargo test --release -p snodo-adapters -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "benchmark"]
    fn throughput() {
        const ROWS: usize = 1_000_000;
        let flow = flow_1_4(ROWS);
        let run = |reader: &mut dyn Read| {
            let start = Instant::now();
            let mut csv = CsvLines::new(reader, CsvLimits::default()).expect("header");
            let mut n = 0usize;
            let mut bytes = 0usize;
            while let Some(rec) = csv.next_record().expect("ok") {
                let raw = map_row(snodo_core::dovuto::FlowVersion::V1_4, rec).expect("35");
                bytes += raw.iud.len() + raw.azione.len();
                n += 1;
            }
            assert_eq!(n, ROWS);
            assert!(bytes > 0);
            let secs = start.elapsed().as_secs_f64();
            (ROWS as f64 / secs, secs)
        };
        let (rate, secs) = run(&mut &flow[..]);
        println!(
            "in memory: {:.1} MB, {secs:.3} s, {:.2} M rows/s",
            flow.len() as f64 / 1e6,
            rate / 1e6
        );
        let zip = zip_single_file_at(
            Cursor::new(Vec::new()),
            "e-F-1_4.csv",
            &flow[..],
            chrono::NaiveDateTime::default(),
        )
        .expect("zip")
        .into_inner();
        let mut fz = FlowZip::open(Cursor::new(zip), "e-F-1_4", u64::MAX).expect("open");
        let mut reader = fz.csv().expect("csv");
        let (zrate, zsecs) = run(&mut reader);
        println!("from zip: {zsecs:.3} s, {:.2} M rows/s", zrate / 1e6);
        if !cfg!(debug_assertions) {
            assert!(rate > 2_000_000.0, "{rate} rows/s");
        }
    }
}
