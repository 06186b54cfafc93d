//! `paaSILRegistraPagamento`: a payment made outside pagoPA (MyPay's "codice 9" reporting data:
//! IUR, date, amount, the attesting institution) recorded against the entity's position with
//! that IUV. The position ends paid, as MyPay's dovuto ends `COMPLETATO` in a `PAGATO` cart, so
//! the node answers `PAA_PAGAMENTO_DUPLICATO` for its notice from then on.
//!
//! MyPay checks nothing but the entity and its password, and records even an IUV it does not
//! know (under a `DEFAULT` debt type). The hub pays only a live position of the caller's with
//! the same amount (docs/MYPAY.md, known differences), and refuses a value the WSDL's schema
//! refuses with `PAA_XML_NON_VALIDO`, as for the other operations.

use super::{codes, refuse, unavailable, Answered, Refusal};
use crate::api::{blocking, Api};
use crate::plan::EntityRuntime;
use snodo_adapters::mypay_ws::{Answer, Call, Operation};
use snodo_core::Amount;
use snodo_store::{OutsidePaid, OutsidePayment};
use std::sync::Arc;

/// Who the history names as the source of the payment.
const SOURCE: &str = "mypay:paaSILRegistraPagamento";

/// A field's text, trimmed, checked for the WSDL's length (`stText35`, `stText70`...).
fn text<'c>(
    call: &'c Call,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<&'c str>, Refusal> {
    let v = call.field(name).map(str::trim).filter(|v| !v.is_empty());
    match v {
        None if required => Err(invalid(name, "è obbligatorio")),
        Some(v) if v.chars().count() > max => {
            Err(invalid(name, format!("supera i {max} caratteri")))
        }
        v => Ok(v),
    }
}

fn invalid(name: &str, why: impl std::fmt::Display) -> Refusal {
    refuse(
        codes::XML_NON_VALIDO,
        format!("paaSILRegistraPagamento: {name} non valido"),
    )
    .described(format!("{name}: {why}"))
}

pub(super) async fn registra(api: &Arc<Api>, entity: &Arc<EntityRuntime>, call: &Call) -> Answered {
    let iuv = text(call, "identificativoUnivocoVersamento", 35, true)?.unwrap_or_default();
    let ccp = text(call, "codiceContestoPagamento", 35, false)?;
    let amount_text = text(call, "singoloImportoPagato", 15, true)?.unwrap_or_default();
    // stImporto: digits, a dot and two decimals, above zero.
    let well_formed = amount_text
        .split_once('.')
        .is_some_and(|(i, d)| !i.is_empty() && d.len() == 2);
    let amount = Amount::parse_decimal(amount_text)
        .ok()
        .filter(|a| well_formed && a.cents() > 0 && *a <= Amount::MYPAY_MAX)
        .ok_or_else(|| {
            invalid(
                "singoloImportoPagato",
                format!("[{amount_text}] non è un importo (es. 10.50)"),
            )
        })?;
    let date_text = text(call, "dataEsitoSingoloPagamento", 10, true)?.unwrap_or_default();
    let date = chrono::NaiveDate::parse_from_str(date_text, "%Y-%m-%d").map_err(|_| {
        invalid(
            "dataEsitoSingoloPagamento",
            format!("[{date_text}] non è una data AAAA-MM-GG"),
        )
    })?;
    let index = match text(call, "indiceDatiSingoloPagamento", 1, false)? {
        // stIndice: 1 to 5.
        Some(i) => Some(
            i.parse::<u8>()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| invalid("indiceDatiSingoloPagamento", format!("[{i}] non è 1-5")))?,
        ),
        None => None,
    };
    let iur = text(call, "identificativoUnivocoRiscossione", 35, true)?.unwrap_or_default();
    let kind = text(call, "tipoIstitutoAttestante", 1, true)?.unwrap_or_default();
    let code = text(call, "codiceIstitutiAttestante", 35, true)?.unwrap_or_default();
    let name = text(call, "denominazioneAttestante", 70, true)?.unwrap_or_default();
    let details = serde_json::json!({
        "identificativoUnivocoVersamento": iuv,
        "codiceContestoPagamento": ccp,
        "singoloImportoPagato": amount_text,
        "dataEsitoSingoloPagamento": date.to_string(),
        "indiceDatiSingoloPagamento": index,
        "identificativoUnivocoRiscossione": iur,
        "tipoIstitutoAttestante": kind,
        "codiceIstitutiAttestante": code,
        "denominazioneAttestante": name,
    });
    let (store, ipa, iuv_owned) = (api.store.clone(), entity.ipa_code.clone(), iuv.to_string());
    let outcome = blocking(move || {
        store.record_outside_payment(&OutsidePayment {
            entity: &ipa,
            iuv: &iuv_owned,
            amount_cents: amount.cents(),
            source: SOURCE,
            details,
        })
    })
    .await
    .map_err(unavailable)?;
    let ipa = entity.ipa_code.as_str();
    match outcome {
        OutsidePaid::Paid { iud, .. } => {
            tracing::info!(entity = %ipa, iud = %iud, iuv = %iuv, "position paid outside pagoPA (paaSILRegistraPagamento)");
        }
        // MyPay answers OK and changes nothing for a payment already recorded.
        OutsidePaid::AlreadyPaid { .. } => {}
        OutsidePaid::Unknown => {
            return Err(refuse(
                codes::IUV_NON_VALIDO,
                format!("Error nessun dovuto trovato per IUV [{iuv}] ed ente [{ipa}]"),
            ))
        }
        OutsidePaid::Annulled { .. } => {
            return Err(refuse(
                codes::PAGAMENTO_ANNULLATO,
                format!("Pagamento annullato per ente [ {ipa} ], IUV [{iuv}]"),
            ))
        }
        OutsidePaid::AmountMismatch { expected_cents } => {
            return Err(refuse(
                "PAA_IMPORTO_SINGOLO_VERSAMENTO_NON_VALIDO",
                format!(
                    "singoloImportoPagato [{amount}] diverso dall'importo del dovuto [{}] per IUV [{iuv}]",
                    Amount::from_cents(expected_cents)
                ),
            ))
        }
    }
    let mut a = Answer::new(Operation::RegistraPagamento);
    a.text("esito", "OK");
    Ok(a.finish())
}
