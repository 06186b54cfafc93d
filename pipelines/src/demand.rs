//! `paDemandPaymentNotice`: a citizen pays at a PSP a service of pagoPA's catalogue without a
//! notice in hand (the car tax first). The node sends the service's data; the hub finds the
//! entity's offer of that service (a debt type's `demand` keys), decodes and checks the data
//! against the service's XSD, finds the amount (a rule in config, or the entity's system), and
//! stores a position with a notice number the store generates, before answering with it. The
//! node's verify, activation and receipt then treat that notice like any other.
//!
//! The position goes through the same `validate` as a CSV row, into the standing flow
//! `demand:<ipa>`. Its IUD is derived from the request and the day (Europe/Rome), so a node that
//! retries a call it saw time out gets the same notice back, not a second one.
//!
//! The entity system's contract (docs/API.md): `POST {url}` with
//! `{"entity", "fiscalCode", "debtType", "service", "provider", "schema", "data"}` answers 200
//! with `{"amountCents", "causale", "payer": {"type", "id", "name", "email"?}, "dueDate"?}`,
//! 404 when nothing is due. Anything else, or no answer in time, is `PAA_SYSTEM_ERROR`.

use crate::external::block_on;
use crate::intake::StandingFlows;
use crate::plan::{EntityRuntime, ExternalSource};
use serde::Deserialize;
use snodo_adapters::car_tax::{self, CarTax, CarTaxError, VehicleType};
use snodo_adapters::pagopa::{
    self as soap, AmountOption, DemandRequest, DemandResponse, Outcome, PaymentOption, QrCode,
    Response,
};
use snodo_connectors::call::{CallError, Caller};
use snodo_core::dovuto::{validate, FlowVersion, RawDovuto, RejectCode};
use snodo_core::payment::{NodeFault, PositionStatus};
use snodo_core::Amount;
use snodo_store::{ChunkRow, Position, RowOutcome, Store};
use std::collections::HashMap;
use std::sync::Arc;

/// The standing flow demanded positions are stored through (`demand:<ipa>`).
pub const ORIGIN: &str = "demand";
/// What a `causale` may name.
pub const PLACEHOLDERS: [&str; 2] = ["plate", "vehicle_type"];
/// The payer of a notice priced by a rule: the request names nobody.
const ANONYMOUS: &str = "ANONIMO";

/// A service of pagoPA's catalogue an entity issues notices for, from one debt type.
pub struct DemandOffer {
    pub debt_type: String,
    /// `idServizio`.
    pub service: String,
    /// `idSoggettoServizio`; `None`: any.
    pub provider: Option<String>,
    pub schema: DemandSchema,
    pub amount: DemandAmount,
    /// With placeholders; empty when the entity's system gives it.
    pub causale: String,
    pub due_in_days: Option<u32>,
}

/// The catalogue schemas the hub reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemandSchema {
    /// `TassaAutomobilistica_1_1_0`.
    CarTax,
}

/// How the amount is found.
pub enum DemandAmount {
    Fixed(i64),
    /// A vehicle type left out is refused.
    ByVehicleType(HashMap<VehicleType, i64>),
    /// The entity's system is asked.
    External(ExternalSource),
}

/// A refusal: the fault and a sentence for the node's operators.
pub type Refusal = (NodeFault, Option<String>);

/// Checks a `causale` template: `{name}` only for [`PLACEHOLDERS`].
pub fn check_causale(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start + 1..];
        let Some(end) = tail.find('}') else {
            return Err(format!("{{ at {:?} is not closed", &rest[start..]));
        };
        let name = &tail[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{{{name}}} is not a placeholder; known: {{plate}}, {{vehicle_type}}"
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

fn render_causale(template: &str, data: &CarTax) -> String {
    template
        .replace("{plate}", &data.plate)
        .replace("{vehicle_type}", data.vehicle_type.name())
}

/// What the amount rule or the entity's system gave.
struct Priced {
    amount_cents: i64,
    causale: String,
    payer: Payer,
    due_date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    amount_cents: i64,
    causale: String,
    payer: Payer,
    due_date: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payer {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    name: String,
    email: Option<String>,
}

/// Answers `paDemandPaymentNotice` for the node.
pub struct Demands {
    caller: Caller,
    store: Arc<dyn Store>,
    flows: Arc<StandingFlows>,
}

impl Demands {
    pub fn new(store: Arc<dyn Store>, flows: Arc<StandingFlows>) -> Result<Self, String> {
        Ok(Self {
            caller: Caller::new().map_err(|e| e.to_string())?,
            store,
            flows,
        })
    }

    /// The answer for `entity`, which the caller has already checked is the broker's and
    /// answered on this station. Blocking: call it from a blocking thread.
    pub fn answer(&self, entity: &EntityRuntime, r: &DemandRequest) -> Result<Response, Refusal> {
        // An offer for this very provider first, then one for any.
        let offers = || entity.demand.iter().filter(|o| o.service == r.id_servizio);
        let offer = offers()
            .find(|o| o.provider.as_deref() == Some(r.id_soggetto_servizio.as_str()))
            .or_else(|| offers().find(|o| o.provider.is_none()))
            .ok_or_else(|| {
                (
                    NodeFault::Semantica,
                    Some(format!(
                        "idServizio {} (idSoggettoServizio {}) is not a service {} offers",
                        r.id_servizio, r.id_soggetto_servizio, entity.ipa_code
                    )),
                )
            })?;
        let data = match offer.schema {
            DemandSchema::CarTax => car_tax::decode(&r.dati_specifici_servizio)
                .map_err(|e| (fault_of(&e), Some(e.to_string())))?,
        };
        let today = snodo_core::time::today_rome();
        let priced = match &offer.amount {
            DemandAmount::Fixed(cents) => by_rule(offer, &data, *cents, today),
            DemandAmount::ByVehicleType(table) => {
                let cents = table.get(&data.vehicle_type).ok_or_else(|| {
                    (
                        NodeFault::Semantica,
                        Some(format!(
                            "{} has no amount for vehicle type {} ({})",
                            entity.ipa_code,
                            data.vehicle_type.code(),
                            data.vehicle_type.name()
                        )),
                    )
                })?;
                by_rule(offer, &data, *cents, today)
            }
            DemandAmount::External(source) => {
                let priced = self.ask(entity, offer, source, r, &data)?;
                // The store's time is counted from here, not from the node's call.
                return snodo_store::deadline::renew(crate::node::STORE_BUDGET, || {
                    self.issue(entity, offer, r, &data, priced, today)
                });
            }
        };
        self.issue(entity, offer, r, &data, priced, today)
    }

    /// The entity's system prices the request.
    fn ask(
        &self,
        entity: &EntityRuntime,
        offer: &DemandOffer,
        source: &ExternalSource,
        r: &DemandRequest,
        data: &CarTax,
    ) -> Result<Priced, Refusal> {
        let failed = |why: String| {
            tracing::warn!(entity = %entity.ipa_code, service = %offer.service, "entity system: {why}");
            (
                NodeFault::SystemError,
                Some(format!("the entity's system: {why}")),
            )
        };
        let body = serde_json::json!({
            "entity": entity.ipa_code,
            "fiscalCode": entity.fiscal_code.as_str(),
            "debtType": offer.debt_type,
            "service": r.id_servizio,
            "provider": r.id_soggetto_servizio,
            "schema": car_tax::SCHEMA,
            "data": {
                "vehicleType": data.vehicle_type.name(),
                "vehicleTypeCode": data.vehicle_type.code(),
                "plate": data.plate,
            },
        });
        let auth = source.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let timeout = source.timeout.min(crate::plan::MAX_EXTERNAL_TIMEOUT);
        let call = self.caller.post_json(
            &source.url,
            &headers,
            body.to_string().into_bytes(),
            timeout,
        );
        let answer = block_on(call).and_then(|r| r).map_err(|e| {
            failed(match e {
                CallError::Timeout(t) => format!("no answer within {t:?}"),
                CallError::Failed(why) => why,
            })
        })?;
        match answer.status {
            200 => {
                let a: Answer = serde_json::from_slice(&answer.body)
                    .map_err(|e| failed(format!("unreadable answer: {e}")))?;
                if a.amount_cents < 1 {
                    return Err(failed(format!(
                        "amountCents {} is not positive",
                        a.amount_cents
                    )));
                }
                Ok(Priced {
                    amount_cents: a.amount_cents,
                    causale: a.causale,
                    payer: a.payer,
                    due_date: a.due_date,
                })
            }
            404 => Err((
                NodeFault::PagamentoSconosciuto,
                Some(format!(
                    "the entity's system has nothing due for {} {}",
                    data.vehicle_type.name(),
                    data.plate
                )),
            )),
            s => Err(failed(format!("answered HTTP {s}"))),
        }
    }

    /// Stores the position (durable before the answer) and renders the answer.
    fn issue(
        &self,
        entity: &EntityRuntime,
        offer: &DemandOffer,
        r: &DemandRequest,
        data: &CarTax,
        priced: Priced,
        today: chrono::NaiveDate,
    ) -> Result<Response, Refusal> {
        let iud = demand_iud(entity, r, data, today);
        let position = self.store_position(entity, offer, &iud, priced, today)?;
        let d = &position.dovuto;
        let notice = position
            .notice_number
            .clone()
            .ok_or_else(|| system(format!("position {iud} was stored without a notice number")))?;
        let all_ccp = entity
            .payments
            .get(&d.debt_type)
            .is_some_and(|t| t.postal_payable(today));
        let description = cut(&d.causale, 140);
        Ok(Response::Demand(DemandResponse {
            outcome: Outcome::Ok,
            fault: None,
            qr_code: Some(QrCode {
                fiscal_code: entity.fiscal_code.as_str().to_string(),
                notice_number: notice,
            }),
            payment_option: Some(PaymentOption {
                amount: soap::from_cents(d.amount),
                options: AmountOption::Eq,
                due_date: d.due_date.map(|d| d.to_string()),
                detail_description: Some(description.clone()),
                all_ccp,
            }),
            payment_description: Some(description),
            fiscal_code_pa: Some(entity.fiscal_code.as_str().to_string()),
            company_name: Some(cut(&entity.name, 140)),
            office_name: entity.office_name.as_deref().map(|o| cut(o, 140)),
        }))
    }

    fn store_position(
        &self,
        entity: &EntityRuntime,
        offer: &DemandOffer,
        iud: &str,
        priced: Priced,
        today: chrono::NaiveDate,
    ) -> Result<Position, Refusal> {
        let taxonomy = entity
            .payments
            .get(&offer.debt_type)
            .map(|p| p.taxonomy.as_str())
            .unwrap_or_default();
        let amount = Amount::from_cents(priced.amount_cents).to_string();
        let raw = RawDovuto {
            iud,
            tipo_identificativo_univoco: &priced.payer.kind,
            codice_identificativo_univoco: &priced.payer.id,
            anagrafica_pagatore: &priced.payer.name,
            mail_pagatore: priced.payer.email.as_deref().unwrap_or_default(),
            data_esecuzione_pagamento: priced.due_date.as_deref().unwrap_or_default(),
            importo_dovuto: &amount,
            tipo_dovuto: &offer.debt_type,
            causale_versamento: &priced.causale,
            dati_specifici_riscossione: taxonomy,
            // The store generates the IUV, hence the notice number.
            flg_genera_iuv: "true",
            azione: "I",
            ..Default::default()
        };
        let row = validate(&raw, FlowVersion::V1_4, &entity.rules, today).map_err(|rs| {
            let why: Vec<String> = rs
                .iter()
                .map(|r| format!("{} {}", r.code, r.message))
                .collect();
            (
                NodeFault::Semantica,
                Some(format!("the position would be refused: {}", why.join("; "))),
            )
        })?;
        let chunk = ChunkRow::new(row).map_err(|e| system(e.to_string()))?;
        let outcomes = self
            .flows
            .apply(entity, ORIGIN, std::slice::from_ref(&chunk))
            .map_err(|e| system(format!("store: {e}")))?;
        let notice = match outcomes.into_iter().next() {
            Some(RowOutcome::Accepted {
                notice_number: Some(n),
                ..
            }) => n,
            Some(RowOutcome::Accepted { .. }) => {
                return Err(system(format!("position {iud} got no notice number")))
            }
            // The node retried a call (the same request the same day): the same notice.
            Some(RowOutcome::Rejected(r)) if r.code == RejectCode::IudDuplicato => {
                return self.earlier(entity, iud)
            }
            Some(RowOutcome::Rejected(r)) => {
                return Err((
                    NodeFault::Semantica,
                    Some(format!(
                        "the position was refused: {} {}",
                        r.code, r.message
                    )),
                ))
            }
            None => return Err(system("store: no outcome".into())),
        };
        self.store
            .position_by_notice(&entity.ipa_code, &notice)
            .map_err(|e| system(format!("store: {e}")))?
            .ok_or_else(|| system(format!("position {iud} cannot be read back")))
    }

    /// The position an earlier identical request made today.
    fn earlier(&self, entity: &EntityRuntime, iud: &str) -> Result<Position, Refusal> {
        let found = self
            .store
            .positions(&entity.ipa_code, &snodo_store::PositionQuery::Iud(iud))
            .map_err(|e| system(format!("store: {e}")))?;
        let last = found.into_iter().max_by_key(|p| p.id);
        match last {
            Some(p) if p.status == PositionStatus::Active => Ok(p),
            Some(p) if p.status == PositionStatus::Paid => Err((
                NodeFault::PagamentoDuplicato,
                Some(format!(
                    "notice {} for the same request was paid today",
                    p.notice_number.as_deref().unwrap_or_default()
                )),
            )),
            Some(p) => Err((
                NodeFault::Semantica,
                Some(format!(
                    "the notice for the same request today is {}",
                    p.status.as_str()
                )),
            )),
            None => Err(system(format!("position {iud} cannot be read back"))),
        }
    }
}

fn by_rule(offer: &DemandOffer, data: &CarTax, cents: i64, today: chrono::NaiveDate) -> Priced {
    Priced {
        amount_cents: cents,
        causale: render_causale(&offer.causale, data),
        payer: Payer {
            kind: "F".into(),
            id: ANONYMOUS.into(),
            name: format!("Veicolo {}", data.plate),
            email: None,
        },
        due_date: offer
            .due_in_days
            .and_then(|n| today.checked_add_days(chrono::Days::new(u64::from(n))))
            .map(|d| d.to_string()),
    }
}

/// `DM` + 30 hex digits of the entity, the service, the data and the day: a retry of the same
/// request finds the same position.
fn demand_iud(
    entity: &EntityRuntime,
    r: &DemandRequest,
    data: &CarTax,
    today: chrono::NaiveDate,
) -> String {
    use sha2::Digest;
    let material = format!(
        "{}|{}|{}|{}|{}|{}",
        entity.ipa_code,
        r.id_servizio,
        r.id_soggetto_servizio,
        data.vehicle_type.code(),
        data.plate.to_uppercase(),
        today
    );
    let hash = hex::encode(sha2::Sha256::digest(material.as_bytes()));
    format!("DM{}", &hash[..30])
}

fn fault_of(e: &CarTaxError) -> NodeFault {
    match e {
        CarTaxError::Invalid { .. } => NodeFault::SintassiXsd,
        CarTaxError::NotBase64(_) | CarTaxError::NotXml(_) => NodeFault::SintassiExtraxsd,
    }
}

fn system(why: String) -> Refusal {
    tracing::error!("paDemandPaymentNotice: {why}");
    (NodeFault::SystemError, None)
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causale_templates() {
        assert!(check_causale("Bollo {plate} ({vehicle_type})").is_ok());
        assert!(check_causale("no placeholders").is_ok());
        assert!(check_causale("{targa}").unwrap_err().contains("{targa}"));
        assert!(check_causale("open {plate")
            .unwrap_err()
            .contains("not closed"));
        assert!(check_causale("{").is_err());
        let data = CarTax::sample();
        assert_eq!(
            render_causale("Bollo {plate} ({vehicle_type})", &data),
            "Bollo AB123CD (car)"
        );
    }

    #[test]
    fn a_rule_sets_the_due_date_and_an_anonymous_payer() {
        let offer = DemandOffer {
            debt_type: "BOLLO".into(),
            service: "00001".into(),
            provider: None,
            schema: DemandSchema::CarTax,
            amount: DemandAmount::Fixed(100),
            causale: "Bollo {plate}".into(),
            due_in_days: Some(30),
        };
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 8).unwrap();
        let p = by_rule(&offer, &CarTax::sample(), 12345, day);
        assert_eq!(p.amount_cents, 12345);
        assert_eq!(p.causale, "Bollo AB123CD");
        assert_eq!(p.payer.id, "ANONIMO");
        assert_eq!(p.due_date.as_deref(), Some("2027-01-07"));
    }
}
