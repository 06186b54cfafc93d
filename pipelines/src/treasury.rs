//! A treasury intake's work on one file (`decode = "opi"` or `"treasury-csv"`, `to =
//! "treasury"`; or the entity's notifications, `decode = "mypivot-import-pagati"`, `to =
//! "reconciliation"`): decoded whole, checked to be the entity's, applied in one transaction. A
//! file that cannot be read, or is another entity's, is refused with the record and the rule,
//! and nothing of it is applied.

use crate::codecs::{DecodeTreasury, TreasuryFile};
use crate::plan::EntityRuntime;
use snodo_adapters::text_encoding::Encoding;
use snodo_store::{MovementCounts, NewMovement, NewNotification, Store, StoreError};
use std::path::Path;

/// What a file applied.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub movements: usize,
    pub skipped: u64,
    pub counts: MovementCounts,
}

/// Decodes, checks and applies the file; `Ok(Err(why))` when it is refused.
pub fn apply_file(
    store: &dyn Store,
    entity: &EntityRuntime,
    decode: DecodeTreasury,
    encoding: Option<Encoding>,
    name: &str,
    path: &Path,
) -> Result<Result<Applied, String>, StoreError> {
    let file = match decode(path, encoding) {
        Ok(f) => f,
        Err(why) => return Ok(Err(why)),
    };
    if let Err(why) = whose(&file, entity) {
        return Ok(Err(why));
    }
    if !file.notifications.is_empty() {
        return apply_notifications(store, entity, name, &file);
    }
    let dates: Vec<(Option<String>, Option<String>)> = file
        .movements
        .iter()
        .map(|m| {
            (
                m.accounting_date.map(|d| d.to_string()),
                m.value_date.map(|d| d.to_string()),
            )
        })
        .collect();
    let rows: Vec<NewMovement<'_>> = file
        .movements
        .iter()
        .zip(&dates)
        .map(|(m, (accounting, value))| NewMovement {
            year: i64::from(m.year),
            bill: &m.bill,
            amount_cents: m.amount.cents(),
            accounting_date: accounting.as_deref(),
            value_date: value.as_deref(),
            causale: &m.causale,
            payer: m.payer.as_deref(),
            end_to_end_id: m.end_to_end_id.as_deref(),
            iuf: m.reference.iuf().map(|i| i.as_str()),
            iuv: m.reference.iuv(),
            reversed: m.operation == snodo_core::treasury::MovementOperation::Reversed,
        })
        .collect();
    let counts = store.apply_movements(&entity.ipa_code, name, &rows)?;
    Ok(Ok(Applied {
        movements: rows.len(),
        skipped: file.skipped,
        counts,
    }))
}

/// The entity's notifications (MyPivot's import pagati), stored whole; counted as movements are
/// (replaced ones as updated).
fn apply_notifications(
    store: &dyn Store,
    entity: &EntityRuntime,
    name: &str,
    file: &TreasuryFile,
) -> Result<Result<Applied, String>, StoreError> {
    let bodies: Vec<String> = file
        .notifications
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let rows: Vec<NewNotification<'_>> = file
        .notifications
        .iter()
        .zip(&bodies)
        .map(|(n, body)| NewNotification {
            iud: &n.iud,
            iuv: n.iuv.as_str(),
            amount_cents: n.amount.cents(),
            body,
        })
        .collect();
    let (inserted, updated, unchanged) =
        store.apply_notifications(&entity.ipa_code, name, &rows)?;
    Ok(Ok(Applied {
        movements: rows.len(),
        skipped: 0,
        counts: MovementCounts {
            inserted,
            updated,
            unchanged,
            ..MovementCounts::default()
        },
    }))
}

/// A file naming another entity (its fiscal code or, in its name, its IPA code), or an account
/// that is none of the entity's, is not the entity's.
fn whose(file: &TreasuryFile, entity: &EntityRuntime) -> Result<(), String> {
    if let Some(ipa) = &file.ipa_code {
        if ipa != &entity.ipa_code {
            return Err(format!(
                "the file is entity {ipa}'s (its name's codIPA), not {}'s",
                entity.ipa_code
            ));
        }
    }
    if let Some(fc) = &file.fiscal_code {
        if fc != entity.fiscal_code.as_str() {
            return Err(format!(
                "the file is entity {fc}'s (codice_fiscale_ente), not {}'s ({})",
                entity.ipa_code,
                entity.fiscal_code.as_str()
            ));
        }
    }
    if let Some(iban) = &file.iban {
        let ours = entity.payments.values().any(|p| {
            p.iban.as_str() == iban || p.iban_changes.iter().any(|(_, i)| i.as_str() == iban)
        });
        if !ours {
            return Err(format!(
                "the statement is of account {iban}, which is no account of entity {} (its debt types' iban and iban_changes)",
                entity.ipa_code
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padova() -> std::sync::Arc<EntityRuntime> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let demo = include_str!("../../config/demo.toml").replace(
            "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
            "/nonexistent/tassonomia.csv",
        );
        std::fs::write(&path, demo).unwrap();
        let plan = crate::plan::load(Some(&path)).unwrap();
        plan.entities["c_g224"].clone()
    }

    #[test]
    fn a_file_is_the_entity_s_only_by_its_fiscal_code_or_one_of_its_accounts() {
        let e = padova();
        let file = |fiscal_code: Option<&str>, iban: Option<&str>| TreasuryFile {
            fiscal_code: fiscal_code.map(str::to_string),
            iban: iban.map(str::to_string),
            ..TreasuryFile::default()
        };
        assert_eq!(whose(&file(Some("00644060287"), None), &e), Ok(()));
        assert_eq!(
            whose(&file(None, Some("IT60X0542811101000000123456")), &e),
            Ok(())
        );
        let other = whose(&file(Some("00133880252"), None), &e).unwrap_err();
        assert!(
            other.contains("00133880252") && other.contains("c_g224"),
            "{other}"
        );
        // Feltre's account in Padova's intake.
        let account = whose(&file(None, Some("IT95O0306911884000100012345")), &e).unwrap_err();
        assert!(
            account.contains("IT95O0306911884000100012345") && account.contains("no account"),
            "{account}"
        );
    }
}
