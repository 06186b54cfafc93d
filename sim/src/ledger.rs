//! What the simulated PSPs paid, remembered so they can settle it: the ledger.
//!
//! `<dir>/payments.jsonl`, append-only, one JSON object a line:
//!
//! - `{"kind":"payment", "receiptId", "noticeNumber", "iuv", "fiscalCode", "companyName",
//!   "pspId", "paidAt", "date", "amountCents", "transfers":[{"index", "fiscalCode",
//!   "amountCents"}]}`, written (one `write` on an unbuffered file) **before** the receipt is
//!   sent: a payment the hub may hold a receipt for is always in the ledger. `paidAt` is Rome's
//!   local time (`2026-11-26T10:00:00`), `date` its day, `fiscalCode` the notice's entity and
//!   each transfer's `fiscalCode` the entity it credits (a flow goes to that one).
//! - `{"kind":"answer", "receiptId", "outcome"}`: the hub's answer to that receipt, `OK` or its
//!   fault code (`PAA_RECEIPT_DUPLICATA`, `PAA_SEMANTICA`, ...), once it arrives.
//!
//! [`crate::flows`] settles the payments of a day from it.

use serde::{Deserialize, Serialize};
use snodo_adapters::pagopa::{self as soap, Request};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The ledger's file inside its directory.
pub const PAYMENTS_FILE: &str = "payments.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger {path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Entry {
    Payment(LedgerPayment),
    Answer(LedgerAnswer),
}

/// A payment a simulated PSP made, as its receipt says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPayment {
    /// The receipt id: the IUR of the flow rows.
    pub receipt_id: String,
    pub notice_number: String,
    /// `creditorReferenceId`.
    pub iuv: String,
    /// The notice's entity.
    pub fiscal_code: String,
    pub company_name: String,
    pub psp_id: String,
    /// Rome local time, `2026-11-26T10:00:00`.
    pub paid_at: String,
    /// Rome day, `2026-11-26`.
    pub date: String,
    pub amount_cents: i64,
    pub transfers: Vec<LedgerTransfer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerTransfer {
    /// `idTransfer`, 1 to 5.
    pub index: u8,
    /// The entity credited (`fiscalCodePA`).
    pub fiscal_code: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerAnswer {
    pub receipt_id: String,
    /// `OK` or the hub's fault code.
    pub outcome: String,
}

impl LedgerPayment {
    /// The payment a receipt request records; `None` for other requests, or a receipt whose
    /// amounts are not amounts (the hub will refuse it anyway).
    pub fn from_request(request: &Request) -> Option<LedgerPayment> {
        let cents = |s: &str| soap::to_cents(s).ok().map(|a| a.cents());
        macro_rules! build {
            ($r:expr) => {{
                let r = $r;
                let mut transfers = Vec::with_capacity(r.transfer_list.len());
                for t in &r.transfer_list {
                    transfers.push(LedgerTransfer {
                        index: t.id_transfer,
                        fiscal_code: t.fiscal_code_pa.clone(),
                        amount_cents: cents(&t.transfer_amount)?,
                    });
                }
                let paid_at = r.payment_date_time.clone().unwrap_or_default();
                let date = r
                    .application_date
                    .clone()
                    .unwrap_or_else(|| paid_at.chars().take(10).collect());
                Some(LedgerPayment {
                    receipt_id: r.receipt_id.clone(),
                    notice_number: r.notice_number.clone(),
                    iuv: r.creditor_reference_id.clone(),
                    fiscal_code: r.fiscal_code.clone(),
                    company_name: r.company_name.clone(),
                    psp_id: r.id_psp.clone(),
                    paid_at,
                    date,
                    amount_cents: cents(&r.payment_amount)?,
                    transfers,
                })
            }};
        }
        match request {
            Request::SendRtV2(r) => build!(&r.receipt),
            Request::SendRt(r) => build!(&r.receipt),
            _ => None,
        }
    }
}

/// The ledger open for appending.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Ledger {
    /// Opens (creating it and its directory) `<dir>/payments.jsonl` for appending.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let path = dir.join(PAYMENTS_FILE);
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Ledger {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line with one write: in the OS when it returns, whole or not at all for
    /// concurrent writers.
    pub fn append(&self, entry: &Entry) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| LedgerError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        // A poisoned lock only means another worker panicked mid-write.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line).map_err(|source| LedgerError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Every entry of `<dir>/payments.jsonl` (none when the file does not exist). A last line
/// without its newline (a write cut by a crash) is skipped.
pub fn read(dir: &Path) -> Result<Vec<Entry>, LedgerError> {
    let path = dir.join(PAYMENTS_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LedgerError::Io { path, source }),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader
            .read_line(&mut buf)
            .map_err(|source| LedgerError::Io {
                path: path.clone(),
                source,
            })?;
        if read == 0 {
            return Ok(out);
        }
        n += 1;
        if !buf.ends_with('\n') {
            return Ok(out);
        }
        if buf.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&buf).map_err(|e| LedgerError::Line {
            path: path.clone(),
            line: n,
            reason: e.to_string(),
        })?;
        out.push(entry);
    }
}
