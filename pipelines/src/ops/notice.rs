//! The payment notice (PDF) of one position, as `GET …/positions/{iud}/notice.pdf` and
//! `snodo notice` give it.

use super::{entity_store, Result};
use crate::plan::{EntityRuntime, Plan};
use snodo_adapters::notice::{self, Creditor, Debtor, Notice};
use snodo_core::payment::PositionStatus;
use snodo_store::{Position, PositionQuery};

/// Why a position has no notice to print.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no position with IUD {0:?}")]
    Unknown(String),
    /// Paid or annulled: printing it would invite a second payment.
    #[error("position {iud:?} is {status}: no notice is printed for it")]
    Closed { iud: String, status: &'static str },
    #[error("position {0:?} has no notice number")]
    NoNumber(String),
    #[error("position {iud:?}: {source}")]
    Render {
        iud: String,
        #[source]
        source: notice::NoticeError,
    },
}

/// What the notice of `p` shows.
pub fn notice_of(p: &Position, entity: &EntityRuntime) -> std::result::Result<Notice, Refused> {
    if matches!(p.status, PositionStatus::Paid | PositionStatus::Annulled) {
        return Err(Refused::Closed {
            iud: p.iud.clone(),
            status: p.status.as_str(),
        });
    }
    let number = p
        .notice_number
        .as_deref()
        .and_then(|n| snodo_core::NoticeNumber::parse(n).ok())
        .ok_or_else(|| Refused::NoNumber(p.iud.clone()))?;
    let d = &p.dovuto;
    let payer = &d.payer;
    let place = [&payer.postal_code, &payer.locality, &payer.province]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let street = [&payer.address, &payer.civic]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let address = [street, place]
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Notice {
        creditor: Creditor {
            name: entity.name.clone(),
            fiscal_code: entity.fiscal_code.clone(),
            sector: entity.office_name.clone(),
            info: None,
            cbill: entity.cbill.clone(),
        },
        debtor: Debtor {
            fiscal_code: Some(payer.id.clone()).filter(|id| !id.eq_ignore_ascii_case("ANONIMO")),
            name: payer.name.clone(),
            address: Some(address).filter(|a| !a.is_empty()),
        },
        subject: d.causale.clone(),
        notice_number: number,
        amount: d.amount,
        due_date: d.due_date,
    })
}

/// The PDF of `p`'s notice.
pub fn pdf(p: &Position, entity: &EntityRuntime) -> std::result::Result<Vec<u8>, Refused> {
    notice::render(&notice_of(p, entity)?).map_err(|source| Refused::Render {
        iud: p.iud.clone(),
        source,
    })
}

/// The notice of the entity's position `iud` (the live one, else the latest annulled one).
pub fn render(plan: &Plan, entity: &str, iud: &str) -> Result<Vec<u8>> {
    let runtime = plan
        .entities
        .get(entity)
        .ok_or_else(|| super::OpsError::NoEntity(entity.to_string()))?;
    let store = entity_store(plan, entity)?;
    let position =
        crate::api::positions::current(store.positions(entity, &PositionQuery::Iud(iud))?)
            .ok_or_else(|| Refused::Unknown(iud.to_string()))?;
    Ok(pdf(&position, runtime)?)
}
