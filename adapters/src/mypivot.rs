//! MyPivot's file formats (Regione del Veneto's reconciliation product), so an entity that used
//! MyPivot keeps its files:
//!
//! * `mypivot-import-pagati` ([`MYPIVOT_IMPORT_PAGATI`], [`import_pagati`]): the entity's own
//!   notifications of payments, keyed by IUD (MyPivot's flow type I), decoded into
//!   [`Notification`]s;
//! * `mypivot-export` ([`MYPIVOT_EXPORT`], [`export`]): MyPivot's reconciliation export
//!   ("flusso riconciliazione", tracciato 1.0 to 1.4), one row per reconciled payment with its
//!   I, E, R and T blocks and its class, written by a [`ReconciliationWriter`].
//!
//! Both are read off MyPivot's public Talend jobs (RegioneDelVeneto/mypivot @
//! `413b74a57af766539948e1fb3ced9fcf912cbf44`): `MANAGE_FLUSSI_IMPORT/process/manage/
//! MyGov_ImportFlussiEnte_0.1.item` for the import, `MANAGE_FLUSSI_RICONCILIAZIONE/process/manage/
//! MyGov_ExportFlussiEnte_1_{0..4}_0.1.item` for the export (paths under
//! `mypivot.sources/mypivot4-batch/`). The column mapping is in `docs/FORMATS.md`.
//!
//! Nothing here opens a file: callers hand in readers and writers.

pub mod export;
pub mod import_pagati;

#[cfg(test)]
mod tests;

pub use export::{
    file_stem, Acquired, ExportLayout, MypivotExportError, ReconciliationRow, ReconciliationWriter,
    TracciatoVersion, CLASSES,
};
pub use import_pagati::{
    check_file_name, decode_csv, decode_zip, ImportPagatiError, Notification, NotificationPayer,
    RowError,
};

/// Codec name of MyPivot's import pagati (the entity's notifications of payments).
pub const MYPIVOT_IMPORT_PAGATI: &str = "mypivot-import-pagati";
/// Codec name of MyPivot's reconciliation export.
pub const MYPIVOT_EXPORT: &str = "mypivot-export";
