//! Real-time verification at the entity (Gateway mode, MyPay's paaSILVerificaEsterna, GovPay's
//! API-EC): positions of an `external` debt type live in the entity's own system, so when the node
//! verifies or activates one of their notices the hub asks that system, answers the node from
//! it, and stores the position so the receipt finds it.
//!
//! The contract (docs/API.md): `GET {url}/{noticeNumber}` answers 200 with
//! `{"amountCents", "dueDate"?, "payer": {"type", "id", "name", "email"?}, "causale", "iud"?}`,
//! 404 for an unknown notice, 410 for an annulled one. Anything else, or no answer within the
//! debt type's timeout, is the entity system's failure: the node gets `PAA_SYSTEM_ERROR` in time.
//!
//! In `mode = "mypay-soap"` the entity system is one built for MyPay (`esterni-per-pa.wsdl`): the
//! hub POSTs MyPay's `paaSILVerificaEsterna` to `url` and reads `esito` and `datiPagamentoPA`
//! (amount, IBAN, causale; no payer, so the position's payer is `ANONIMO`). Its faults map as
//! MyPay passes them to the node: `PAA_PAGAMENTO_SCONOSCIUTO` unknown, `…_ANNULLATO` annulled,
//! `…_SCADUTO` expired; anything else (`…_DUPLICATO`, no fault) is the entity system's failure.
//!
//! The answer goes through the same `validate` as a CSV row, so an entity system cannot put in
//! the registry what an import would refuse.

use crate::intake::StandingFlows;
use crate::plan::{EntityRuntime, ExternalAsk, ExternalSource, MAX_EXTERNAL_TIMEOUT};
use serde::Deserialize;
use snodo_connectors::call::{CallError, Caller};
use snodo_core::dovuto::{validate, Action, FlowVersion, RawDovuto, RejectCode};
use snodo_core::payment::PositionStatus;
use snodo_core::{Amount, NoticeNumber};
use snodo_store::{ChunkRow, PositionQuery, RowOutcome, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The standing flow external positions are stored through (`external:<ipa>`).
pub const ORIGIN: &str = "external";

/// Why there is no position to answer the node with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("unknown to the entity's system")]
    Unknown,
    #[error("annulled in the entity's system")]
    Annulled,
    #[error("expired in the entity's system")]
    Expired,
    /// The entity system failed, was late, or answered something unusable.
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    iud: Option<String>,
    amount_cents: i64,
    due_date: Option<String>,
    payer: Payer,
    causale: String,
}

#[derive(Debug, Deserialize)]
struct Payer {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    name: String,
    email: Option<String>,
}

pub struct ExternalVerifier {
    caller: Caller,
    store: Arc<dyn Store>,
    flows: Arc<StandingFlows>,
}

impl ExternalVerifier {
    pub fn new(store: Arc<dyn Store>, flows: Arc<StandingFlows>) -> Result<Self, String> {
        Ok(Self {
            caller: Caller::new().map_err(|e| e.to_string())?,
            store,
            flows,
        })
    }

    /// Whether the node's call about this notice must ask the entity's system: the entity has
    /// external debt types, and the registry holds no position for the notice, or an unpaid one
    /// of an external debt type.
    pub fn applies(entity: &EntityRuntime, stored: Option<&snodo_store::Position>) -> bool {
        match stored {
            _ if entity.external.is_empty() => false,
            None => true,
            Some(p) if p.status == PositionStatus::Paid => false,
            // An annulled external position may have been issued again by the entity.
            Some(p) => entity
                .external
                .iter()
                .any(|s| s.debt_type == p.dovuto.debt_type),
        }
    }

    /// Asks the entity's system about `notice` and brings the registry in line with the answer.
    /// Blocking: call it from a blocking thread.
    pub fn refresh(
        &self,
        entity: &EntityRuntime,
        notice: &NoticeNumber,
        stored: Option<snodo_store::Position>,
    ) -> Result<snodo_store::Position, Unverified> {
        let live = stored.filter(|p| p.status == PositionStatus::Active);
        // A stored position is asked where it came from; a new notice, every source in turn.
        let sources: Vec<&ExternalSource> = match &live {
            Some(p) => entity
                .external
                .iter()
                .filter(|s| s.debt_type == p.dovuto.debt_type)
                .collect(),
            None => entity.external.iter().collect(),
        };
        let deadline = Instant::now() + MAX_EXTERNAL_TIMEOUT;
        let mut failure = None;
        for source in sources {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failure = Some("no time left to ask the entity's system".to_string());
                break;
            }
            let timeout = source.timeout.min(left);
            let asked = match &source.mode {
                ExternalAsk::Json => self.ask(source, notice, timeout),
                ExternalAsk::MypaySoap {
                    intermediary,
                    station,
                } => self.ask_mypay(entity, source, notice, (intermediary, station), timeout),
                ExternalAsk::MypayExternalVerify { broker, station } => {
                    self.ask_mypay_notice(entity, source, notice, (broker, station), timeout)
                }
            };
            match asked {
                // The store's time is counted from here, not from the node's call.
                Ok(Some(answer)) => {
                    return snodo_store::deadline::renew(crate::node::STORE_BUDGET, || {
                        self.store_answer(entity, source, notice, answer, live)
                    })
                }
                Ok(None) => continue,
                Err(Unverified::Annulled) => {
                    if let Some(p) = &live {
                        snodo_store::deadline::renew(crate::node::STORE_BUDGET, || {
                            self.annul(entity, p)
                        });
                    }
                    return Err(Unverified::Annulled);
                }
                // Nothing is stored: a stored position's own expiry is the hub's to decide.
                Err(Unverified::Expired) => return Err(Unverified::Expired),
                Err(e) => {
                    tracing::warn!(entity = %entity.ipa_code, debt_type = %source.debt_type, notice = %notice, "entity system: {e}");
                    failure.get_or_insert(format!("{}: {e}", source.debt_type));
                }
            }
        }
        match failure {
            Some(why) => Err(Unverified::Failed(why)),
            None => Err(Unverified::Unknown),
        }
    }

    /// `Ok(None)`: this source does not know the notice.
    fn ask(
        &self,
        source: &ExternalSource,
        notice: &NoticeNumber,
        timeout: Duration,
    ) -> Result<Option<Answer>, Unverified> {
        let url = format!("{}/{}", source.url, notice.as_str());
        let call = self.caller.get_json(&url, source.token.as_deref(), timeout);
        let answer = block_on(call).and_then(|r| r).map_err(|e| match e {
            CallError::Timeout(t) => Unverified::Failed(format!("no answer within {t:?}")),
            CallError::Failed(why) => Unverified::Failed(why),
        })?;
        match answer.status {
            200 => serde_json::from_slice::<Answer>(&answer.body)
                .map(Some)
                .map_err(|e| Unverified::Failed(format!("unreadable answer: {e}"))),
            404 => Ok(None),
            410 => Err(Unverified::Annulled),
            s => Err(Unverified::Failed(format!("answered HTTP {s}"))),
        }
    }

    /// MyPay's `paaSILVerificaEsterna` (`Ok(None)`: this source does not know the notice).
    fn ask_mypay(
        &self,
        entity: &EntityRuntime,
        source: &ExternalSource,
        notice: &NoticeNumber,
        (intermediary, station): (&str, &str),
        timeout: Duration,
    ) -> Result<Option<Answer>, Unverified> {
        use snodo_adapters::mypay_esterni::{self as esterni, Reply};
        let request = esterni::Request {
            intermediary: intermediary.to_string(),
            station: station.to_string(),
            domain: entity.fiscal_code.as_str().to_string(),
            iuv: notice.iuv().as_str().to_string(),
            ccp: esterni::NOT_APPLICABLE.into(),
            psp: esterni::NOT_APPLICABLE.into(),
        };
        let body = self.post_soap(source, esterni::OPERATION, request.envelope(), timeout)?;
        let reply = Reply::parse(&body)
            .map_err(|e| Unverified::Failed(format!("unreadable answer: {e}")))?;
        let payment = match reply {
            Reply::Payable(p) => p,
            Reply::Refused { code, string } => return mypay_refusal(&code, &string),
        };
        // The transfer goes to the debt type's account: an answer naming another is refused.
        let known = entity.payments.get(&source.debt_type).is_some_and(|p| {
            let iban = payment.iban.trim();
            p.iban.as_str() == iban
                || p.iban_changes.iter().any(|(_, i)| i.as_str() == iban)
                || p.postal.as_ref().is_some_and(|a| a.iban.as_str() == iban)
        });
        if !known {
            return Err(Unverified::Failed(format!(
                "the entity's answer: ibanAccredito {} is not an account of debt type {}",
                payment.iban, source.debt_type
            )));
        }
        Ok(Some(Answer {
            iud: None,
            amount_cents: payment.amount.cents(),
            due_date: None,
            payer: Payer {
                kind: "F".into(),
                id: "ANONIMO".into(),
                name: "ANONIMO".into(),
                email: None,
            },
            causale: payment.causale,
        }))
    }

    /// MyPay4's `paExternalVerifyPaymentNotice` (`Ok(None)`: this source does not know the
    /// notice). The answer carries no account: the debt type's is credited.
    fn ask_mypay_notice(
        &self,
        entity: &EntityRuntime,
        source: &ExternalSource,
        notice: &NoticeNumber,
        (broker, station): (&str, &str),
        timeout: Duration,
    ) -> Result<Option<Answer>, Unverified> {
        use snodo_adapters::mypay_esterni::notice::{self as verify, NoticeReply, NoticeRequest};
        let fiscal_code = entity.fiscal_code.as_str().to_string();
        let request = NoticeRequest {
            id_pa: fiscal_code.clone(),
            id_broker_pa: broker.to_string(),
            id_station: station.to_string(),
            qr_fiscal_code: fiscal_code,
            notice_number: notice.as_str().to_string(),
        };
        let body = self.post_soap(source, verify::OPERATION, request.envelope(), timeout)?;
        let reply = NoticeReply::parse(&body)
            .map_err(|e| Unverified::Failed(format!("unreadable answer: {e}")))?;
        let payment = match reply {
            NoticeReply::Payable(p) => p,
            NoticeReply::Refused { code, string } => return mypay_refusal(&code, &string),
        };
        // The longer text is the causale when there is one (the receipt's remittance).
        let causale = if payment.detail.trim().is_empty() {
            payment.description
        } else {
            payment.detail
        };
        Ok(Some(Answer {
            iud: None,
            amount_cents: payment.amount.cents(),
            due_date: payment.due_date,
            payer: Payer {
                kind: "F".into(),
                id: "ANONIMO".into(),
                name: "ANONIMO".into(),
                email: None,
            },
            causale,
        }))
    }

    /// POSTs a SOAP call to an entity system built for MyPay; the body of its 200 answer.
    fn post_soap(
        &self,
        source: &ExternalSource,
        action: &str,
        envelope: String,
        timeout: Duration,
    ) -> Result<Vec<u8>, Unverified> {
        let mut headers = vec![("SOAPAction", action)];
        let bearer = source.token.as_ref().map(|t| format!("Bearer {t}"));
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let call = self.caller.post(
            &source.url,
            "text/xml; charset=utf-8",
            &headers,
            envelope.into_bytes(),
            timeout,
        );
        let answer = block_on(call).and_then(|r| r).map_err(|e| match e {
            CallError::Timeout(t) => Unverified::Failed(format!("no answer within {t:?}")),
            CallError::Failed(why) => Unverified::Failed(why),
        })?;
        if answer.status != 200 {
            return Err(Unverified::Failed(format!(
                "answered HTTP {}",
                answer.status
            )));
        }
        Ok(answer.body)
    }

    fn store_answer(
        &self,
        entity: &EntityRuntime,
        source: &ExternalSource,
        notice: &NoticeNumber,
        answer: Answer,
        live: Option<snodo_store::Position>,
    ) -> Result<snodo_store::Position, Unverified> {
        let bad = |why: String| Unverified::Failed(format!("the entity's answer: {why}"));
        if answer.amount_cents < 1 {
            return Err(bad(format!(
                "amountCents {} is not positive",
                answer.amount_cents
            )));
        }
        let taxonomy = entity
            .payments
            .get(&source.debt_type)
            .map(|p| p.taxonomy.as_str())
            .unwrap_or_default();
        let iud = match &live {
            Some(p) => p.iud.clone(),
            None => answer
                .iud
                .clone()
                .unwrap_or_else(|| notice.as_str().to_string()),
        };
        let amount = Amount::from_cents(answer.amount_cents).to_string();
        let iuv = notice.iuv();
        let raw = RawDovuto {
            iud: &iud,
            cod_iuv: iuv.as_str(),
            tipo_identificativo_univoco: &answer.payer.kind,
            codice_identificativo_univoco: &answer.payer.id,
            anagrafica_pagatore: &answer.payer.name,
            mail_pagatore: answer.payer.email.as_deref().unwrap_or_default(),
            data_esecuzione_pagamento: answer.due_date.as_deref().unwrap_or_default(),
            importo_dovuto: &amount,
            tipo_dovuto: &source.debt_type,
            causale_versamento: &answer.causale,
            dati_specifici_riscossione: taxonomy,
            azione: if live.is_some() { "M" } else { "I" },
            ..Default::default()
        };
        let row = validate(
            &raw,
            FlowVersion::V1_4,
            &entity.rules,
            snodo_core::time::today_rome(),
        )
        .map_err(|rejections| {
            let why: Vec<String> = rejections
                .iter()
                .map(|r| format!("{} {}", r.code, r.message))
                .collect();
            bad(why.join("; "))
        })?;
        if let Some(p) = &live {
            if p.dovuto == row.dovuto {
                return Ok(p.clone());
            }
        }
        debug_assert!(matches!(row.action, Action::Insert | Action::Modify));
        let chunk = ChunkRow::new(row).map_err(|e| Unverified::Failed(e.to_string()))?;
        let outcomes = self
            .flows
            .apply(entity, ORIGIN, std::slice::from_ref(&chunk))
            .map_err(|e| Unverified::Failed(format!("store: {e}")))?;
        match outcomes.first() {
            Some(RowOutcome::Accepted { .. }) => {}
            // A verify and an activation of the same notice raced: the other one stored it.
            Some(RowOutcome::Rejected(r))
                if matches!(r.code, RejectCode::IudDuplicato | RejectCode::IuvDuplicato) =>
            {
                let stored = self
                    .store
                    .position_by_notice(&entity.ipa_code, notice)
                    .map_err(|e| Unverified::Failed(format!("store: {e}")))?;
                if let Some(p) = stored.filter(|p| p.status == PositionStatus::Active) {
                    return Ok(p);
                }
                return Err(bad(format!("{} {}", r.code, r.message)));
            }
            Some(RowOutcome::Rejected(r)) => {
                return Err(bad(format!("{} {}", r.code, r.message)));
            }
            None => return Err(Unverified::Failed("store: no outcome".into())),
        }
        self.store
            .positions(&entity.ipa_code, &PositionQuery::Iud(&iud))
            .map_err(|e| Unverified::Failed(format!("store: {e}")))?
            .into_iter()
            .find(|p| p.status == PositionStatus::Active)
            .ok_or_else(|| Unverified::Failed("store: the stored position is gone".into()))
    }

    /// The entity annulled it: so does the registry (best effort; the node is told anyway).
    fn annul(&self, entity: &EntityRuntime, p: &snodo_store::Position) {
        let mut dovuto = p.dovuto.clone();
        dovuto.iud = p.iud.clone();
        let row = snodo_core::dovuto::DovutoRow {
            action: Action::Annul,
            dovuto,
        };
        let done = ChunkRow::new(row).map_err(|e| e.to_string()).and_then(|c| {
            self.flows
                .apply(entity, ORIGIN, std::slice::from_ref(&c))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = done {
            tracing::warn!(entity = %entity.ipa_code, iud = %p.iud, "cannot annul the external position: {e}");
        }
    }
}

/// Runs an outbound call from a blocking thread: on the hub's runtime when there is one.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CallError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(f)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f))
            .map_err(|e| CallError::Failed(format!("cannot run an outbound call: {e}"))),
    }
}

/// A MyPay-built system's fault, as MyPay hands it to the node: unknown (`Ok(None)`: the next
/// source is asked), annulled, expired; anything else is the system's failure.
fn mypay_refusal<T>(code: &str, string: &str) -> Result<Option<T>, Unverified> {
    match code {
        "PAA_PAGAMENTO_SCONOSCIUTO" => Ok(None),
        "PAA_PAGAMENTO_ANNULLATO" => Err(Unverified::Annulled),
        "PAA_PAGAMENTO_SCADUTO" => Err(Unverified::Expired),
        _ => Err(Unverified::Failed(format!(
            "answered fault {code:?} {string:?}"
        ))),
    }
}
