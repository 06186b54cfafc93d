//! The EC side of the national node's calls ("modello unico"): checks who is calling, looks the
//! notice up in the registry, and answers verify, activation and receipt calls.
//!
//! Every answer is a paForNode response, OK or KO with a `PAA_*` fault; a receipt is committed
//! to the store before its OK is rendered.

use crate::config::EntityState;
use crate::plan::{EntityRuntime, LivePlan};
use snodo_adapters::pagopa::{
    self as soap, AmountOption, Destination, EntityType, Fault, GetPaymentRequest,
    GetPaymentResponse, GetPaymentV2Response, Operation, Outcome, PaymentData, PaymentDataV2,
    PaymentOption, Request, Response, SendRtResponse, SoapFaultCode, Subject, Transfer, TransferV2,
    UniqueIdentifier, VerifyRequest, VerifyResponse,
};
use snodo_core::dovuto::{self, SubjectKind};
use snodo_core::payment::{self, NodeFault};
use snodo_core::NoticeNumber;
use snodo_store::{NewEvent, NewReceipt, Position, ReceiptIssue, ReceiptStored, Store};
use std::sync::Arc;

/// Due date told to the node for positions that have none where the XSD requires one
/// (`paGetPayment[V2]`'s paymentData; the verify's paymentOption leaves it out).
const NO_DUE_DATE: &str = "2099-12-31";

/// The store's share of a node call: past it the node hears `PAA_SYSTEM_ERROR` instead of
/// waiting on a database that does not answer (the node itself gives up after a few seconds).
pub const STORE_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);
/// Threads kept for the node's calls (and `/readyz`), apart from the shared blocking pool: as many
/// as the pool they replace had, so receipts and activations still share commits in large groups.
const NODE_THREADS: usize = 16;

/// The store's share of a `/readyz` probe.
const READY_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

pub struct NodeService {
    /// Read once per call: a reload applies from the next call on.
    plan: Arc<LivePlan>,
    store: Arc<dyn Store>,
    /// Asks entity systems about notices of `external` debt types.
    external: Option<crate::external::ExternalVerifier>,
    /// Issues notices for `paDemandPaymentNotice`.
    demand: Option<crate::demand::Demands>,
    /// This process's API requests and verifications, for `/metrics`.
    api_stats: Arc<crate::metrics::ApiStats>,
    /// Answers given, by operation and fault code ("" for OK), for `/metrics`.
    answers: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String), u64>>,
    /// The node's own threads; `None` (they could not start): the shared blocking pool.
    reserved: Option<crate::reserved::Reserved>,
}

/// A refusal: the fault and, when useful, a sentence for the node's operators.
type Refusal = (NodeFault, Option<String>);

impl NodeService {
    pub fn new(
        plan: Arc<LivePlan>,
        store: Arc<dyn Store>,
        flows: Arc<crate::intake::StandingFlows>,
        api_stats: Arc<crate::metrics::ApiStats>,
    ) -> Self {
        let demand = crate::demand::Demands::new(store.clone(), flows.clone())
            .map_err(|e| tracing::error!("paDemandPaymentNotice is off: {e}"))
            .ok();
        let external = match crate::external::ExternalVerifier::new(store.clone(), flows) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!("external verification is off: {e}");
                None
            }
        };
        let reserved = crate::reserved::Reserved::new("node", NODE_THREADS)
            .map_err(|e| {
                tracing::error!("the node's threads could not start, sharing the pool: {e}")
            })
            .ok();
        Self {
            plan,
            store,
            external,
            demand,
            api_stats,
            answers: Default::default(),
            reserved,
        }
    }

    /// Runs `f` (blocking: store calls) on the threads kept for the node, so it never waits
    /// for a thread behind imports or API calls.
    pub async fn reserved<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&NodeService) -> T + Send + 'static,
    ) -> Result<T, String> {
        let this = self.clone();
        match &self.reserved {
            Some(pool) => pool
                .run("node", move || f(&this))
                .await
                .map_err(|e| e.to_string()),
            None => tokio::task::spawn_blocking(move || f(&this))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Prometheus text for the node's calls, this process's deliveries and what the store counts.
    pub fn metrics(&self, deliveries: &crate::metrics::DeliveryStats) -> String {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let store = self
            .store
            .metrics()
            .map_err(|e| tracing::warn!("metrics: store unavailable: {e}"))
            .ok();
        crate::metrics::render(&answers, deliveries, &self.api_stats, store.as_ref())
    }

    /// This process's answers to the node's calls so far, by (operation, fault code; empty for
    /// OK), as `/metrics` counts them.
    pub fn answers(&self) -> crate::metrics::Answers {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the store answers (for `/readyz`).
    pub fn store_ready(&self) -> bool {
        use snodo_store::deadline;
        deadline::priority(|| deadline::within(READY_BUDGET, || self.store.ping().is_ok()))
    }

    /// Answers one SOAP request body with a SOAP response body. `corr` ties the call's log lines
    /// and the events it causes together.
    /// Answers one call; `action` is the operation the HTTP `SOAPAction` header names, used
    /// only when the body itself does not tell.
    pub fn handle(&self, body: &[u8], action: Option<Operation>, corr: &str) -> String {
        use snodo_store::deadline;
        deadline::priority(|| {
            deadline::within(STORE_BUDGET, || self.handle_in_time(body, action, corr))
        })
    }

    fn handle_in_time(&self, body: &[u8], action: Option<Operation>, corr: &str) -> String {
        let _span = tracing::info_span!("soap", corr = %corr).entered();
        let mut about = (String::new(), String::new());
        let response = match soap::parse_request(body) {
            Ok(request) => {
                about = (
                    request_id_pa(&request).to_string(),
                    request_notice(&request),
                );
                // The parser refuses bytes that are not UTF-8; a receipt is never stored
                // without the request exactly as received, even if that ever changed.
                match std::str::from_utf8(body) {
                    Ok(raw) => self.answer(&request, raw, corr),
                    Err(e) => Response::ko(
                        request.operation(),
                        self.fault(NodeFault::SintassiXsd, None, Some(e.to_string())),
                    ),
                }
            }
            // A request refused for its bytes alone still gets its own KO response.
            Err(e) => match e.operation().or_else(|| soap::request_operation(body)) {
                Some(op) => {
                    tracing::warn!(operation = op.soap_action(), "invalid request: {e}");
                    Response::ko(
                        op,
                        self.fault(NodeFault::SintassiXsd, None, Some(e.to_string())),
                    )
                }
                // Not XML, or not SOAP, but the SOAPAction names an operation: its typed KO,
                // as pagoPA's SANP asks for a request outside the schema.
                None => match action {
                    Some(op) => {
                        tracing::warn!(operation = op.soap_action(), "unreadable request: {e}");
                        Response::ko(
                            op,
                            self.fault(NodeFault::SintassiExtraxsd, None, Some(e.to_string())),
                        )
                    }
                    // Not even the operation is known: nothing typed to answer with.
                    None => {
                        tracing::warn!("unreadable SOAP request: {e}");
                        return client_fault(&e.to_string());
                    }
                },
            },
        };
        let op = response.operation().soap_action();
        let fault = response
            .fault()
            .map(|f| f.fault_code.clone())
            .unwrap_or_default();
        if !fault.is_empty() {
            tracing::info!(operation = op, fault = %fault, "answered KO");
            let plan = self.plan.get();
            let entity = plan
                .entity_by_fiscal_code(&about.0)
                .map(|e| e.ipa_code.as_str())
                .unwrap_or_default();
            let description = response
                .fault()
                .and_then(|f| f.description.clone())
                .unwrap_or_default();
            let event = NewEvent {
                kind: "soap.fault",
                entity,
                subject: &about.1,
                payload: serde_json::json!({
                    "operation": op,
                    "fault": fault,
                    "description": description,
                    "id_pa": &about.0,
                }),
                correlation: Some(corr),
            };
            if let Err(e) = self.store.record_events(&[event]) {
                tracing::warn!("cannot record the fault event: {e}");
            }
        }
        *self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, fault))
            .or_default() += 1;
        soap::render_response(&response)
    }

    /// `raw` is the request as received: a receipt is stored exactly as the node sent it.
    fn answer(&self, request: &Request, raw: &str, corr: &str) -> Response {
        let op = request.operation();
        let result = match request {
            Request::Verify(r) => self.verify(r),
            Request::GetPayment(r) => self.get_payment(r, corr).and_then(|(pos, entity)| {
                // ctTransferPA (V1) has no richiestaMarcaDaBollo.
                if pos
                    .transfers
                    .iter()
                    .any(|t| matches!(t.destination, payment::Destination::Stamp(_)))
                {
                    return Err((
                        NodeFault::Semantica,
                        Some(
                            "the payment holds a digital revenue stamp: paGetPaymentV2 only".into(),
                        ),
                    ));
                }
                Ok(Response::GetPayment(GetPaymentResponse {
                    outcome: Outcome::Ok,
                    fault: None,
                    data: Some(payment_data(&pos, &entity)),
                }))
            }),
            Request::GetPaymentV2(r) => self.get_payment(r, corr).map(|(pos, entity)| {
                Response::GetPaymentV2(GetPaymentV2Response {
                    outcome: Outcome::Ok,
                    fault: None,
                    data: Some(payment_data_v2(&pos, &entity)),
                })
            }),
            Request::SendRt(r) => self
                .send_rt(receipt_fields!(r), op, (raw, request), corr)
                .map(|_| Response::SendRt(SendRtResponse::ok())),
            Request::SendRtV2(r) => self
                .send_rt(receipt_fields!(r), op, (raw, request), corr)
                .map(|_| Response::SendRtV2(SendRtResponse::ok())),
            Request::Demand(r) => self
                .caller(&r.id_pa, &r.id_broker_pa, &r.id_station)
                .and_then(|entity| match &self.demand {
                    Some(d) => d.answer(&entity, r),
                    None => Err((NodeFault::SystemError, None)),
                }),
        };
        result.unwrap_or_else(|(fault, description)| {
            let id = request_id_pa(request);
            Response::ko(op, self.fault(fault, Some(id), description))
        })
    }

    /// The fault bean: raised by the entity when known, else by the broker.
    fn fault(&self, fault: NodeFault, id_pa: Option<&str>, description: Option<String>) -> Fault {
        let plan = self.plan.get();
        let id = match id_pa {
            Some(id) if plan.entity_by_fiscal_code(id).is_some() => id.to_string(),
            _ => plan.config.pagopa.broker_fiscal_code.clone(),
        };
        let f = Fault::new(fault.code(), fault.description(), id);
        match description {
            Some(d) => f.with_description(cut(&d, 1024)),
            None => f,
        }
    }

    /// Broker, station and entity checks every call starts with.
    fn caller(
        &self,
        id_pa: &str,
        id_broker: &str,
        id_station: &str,
    ) -> Result<Arc<EntityRuntime>, Refusal> {
        let plan = self.plan.get();
        let cfg = &plan.config.pagopa;
        if id_broker != cfg.broker_fiscal_code {
            return Err((
                NodeFault::IdIntermediarioErrato,
                Some(format!("idBrokerPA {id_broker} is not this broker")),
            ));
        }
        let live_station = cfg.stations.iter().any(|s| s == id_station);
        let test_station = || {
            plan.entities
                .values()
                .any(|e| e.test_stations.iter().any(|s| s == id_station))
        };
        if !live_station && !test_station() {
            return Err((
                NodeFault::StazioneIntErrata,
                Some(format!(
                    "idStation {id_station} is not a station of this broker"
                )),
            ));
        }
        let entity = plan.entity_by_fiscal_code(id_pa).cloned().ok_or_else(|| {
            (
                NodeFault::IdDominioErrato,
                Some(format!("idPA {id_pa} is not an entity of this broker")),
            )
        })?;
        match entity.state {
            // SANP has no fault of its own for a creditor that is not enabled: the creditor
            // is, for the node, not one of this broker's now.
            EntityState::Suspended => Err((
                NodeFault::IdDominioErrato,
                Some(format!("idPA {id_pa} is suspended on this broker")),
            )),
            EntityState::PreProduction if !entity.test_stations.iter().any(|s| s == id_station) => {
                Err((
                    NodeFault::StazioneIntErrata,
                    Some(format!(
                        "idPA {id_pa} is in pre-production: it is answered only on its test stations"
                    )),
                ))
            }
            EntityState::Live if !live_station => Err((
                NodeFault::StazioneIntErrata,
                Some(format!(
                    "idStation {id_station} is a pre-production station; idPA {id_pa} is live"
                )),
            )),
            _ => Ok(entity),
        }
    }

    /// The position a verify or an activation is about, if the node may take its payment.
    fn payable(
        &self,
        entity: &EntityRuntime,
        qr_fiscal_code: &str,
        notice: &str,
    ) -> Result<Position, Refusal> {
        if qr_fiscal_code != entity.fiscal_code.as_str() {
            return Err((
                NodeFault::IdDominioErrato,
                Some(format!("qrCode fiscalCode {qr_fiscal_code} is not idPA")),
            ));
        }
        let notice = NoticeNumber::parse(notice).map_err(|e| {
            (
                NodeFault::PagamentoSconosciuto,
                Some(format!("noticeNumber {notice}: {e}")),
            )
        })?;
        let stored = self
            .store
            .position_by_notice(&entity.ipa_code, &notice)
            .map_err(system_error)?;
        let position = match &self.external {
            Some(ext) if crate::external::ExternalVerifier::applies(entity, stored.as_ref()) => {
                use crate::external::Unverified;
                let asked = ext.refresh(entity, &notice, stored);
                let outcome = match &asked {
                    Ok(_) => "ok",
                    Err(Unverified::Unknown) => "unknown",
                    Err(Unverified::Annulled) => "annulled",
                    Err(Unverified::Expired) => "expired",
                    Err(Unverified::Failed(_)) => "failed",
                };
                self.api_stats.verification(&entity.ipa_code, outcome);
                asked.map_err(|e| match e {
                    Unverified::Unknown => (NodeFault::PagamentoSconosciuto, None),
                    Unverified::Annulled => (NodeFault::PagamentoAnnullato, None),
                    Unverified::Expired => (NodeFault::PagamentoScaduto, None),
                    Unverified::Failed(why) => (
                        NodeFault::SystemError,
                        Some(format!("the entity's system: {why}")),
                    ),
                })?
            }
            _ => stored.ok_or((NodeFault::PagamentoSconosciuto, None))?,
        };
        let late = entity
            .payments
            .get(&position.dovuto.debt_type)
            .map_or(payment::LatePolicy::OPEN, |p| p.late);
        payment::payability(
            position.status,
            position.dovuto.due_date,
            snodo_core::time::today_rome(),
            late,
        )
        .map_err(|f| (f, None))?;
        Ok(position)
    }

    fn verify(&self, r: &VerifyRequest) -> Result<Response, Refusal> {
        let entity = self.caller(&r.id_pa, &r.id_broker_pa, &r.id_station)?;
        let p = self.payable(&entity, &r.qr_code.fiscal_code, &r.qr_code.notice_number)?;
        let d = &p.dovuto;
        // allCCP: every transfer can be credited to a postal account, so Poste's channels may
        // take the payment (asking paGetPayment with transferType POSTAL).
        let debt_type = entity.payments.get(&d.debt_type);
        let all_ccp = payment::all_postal(
            d,
            debt_type.is_some_and(|t| t.postal_payable(snodo_core::time::today_rome())),
            debt_type.is_some_and(|t| t.stamp.is_some()),
        );
        Ok(Response::Verify(VerifyResponse {
            outcome: Outcome::Ok,
            fault: None,
            payment_option: Some(PaymentOption {
                amount: soap::from_cents(d.amount),
                options: AmountOption::Eq,
                // Optional here: a position without a due date says none.
                due_date: d.due_date.map(|d| d.to_string()),
                detail_description: Some(cut(&d.causale, 140)),
                all_ccp,
            }),
            payment_description: Some(cut(&d.causale, 140)),
            fiscal_code_pa: Some(entity.fiscal_code.as_str().to_string()),
            company_name: Some(cut(&entity.name, 140)),
            office_name: entity.office_name.as_deref().map(|o| cut(o, 140)),
        }))
    }

    fn get_payment(
        &self,
        r: &GetPaymentRequest,
        corr: &str,
    ) -> Result<(Activation, Arc<EntityRuntime>), Refusal> {
        let entity = self.caller(&r.id_pa, &r.id_broker_pa, &r.id_station)?;
        let position = self.payable(&entity, &r.qr_code.fiscal_code, &r.qr_code.notice_number)?;
        let debt_type = entity
            .payments
            .get(&position.dovuto.debt_type)
            .ok_or_else(|| {
                (
                    NodeFault::Semantica,
                    Some(format!(
                        "debt type {} is no longer configured",
                        position.dovuto.debt_type
                    )),
                )
            })?;
        let iuv = position
            .dovuto
            .iuv
            .clone()
            .ok_or((NodeFault::PagamentoSconosciuto, None))?;
        let postal = r.transfer_type == Some(soap::TransferType::Postal);
        let transfers = payment::transfers(
            &position.dovuto,
            &iuv,
            &entity.fiscal_code,
            payment::Own {
                // The account valid today (an entity may announce a new one ahead of time),
                // the postal one when a Poste channel asks for it and the debt type has one.
                account: debt_type.account_for(r.transfer_type, snodo_core::time::today_rome()),
                taxonomy: &debt_type.taxonomy,
                stamp: debt_type.stamp.as_deref(),
            },
            postal,
        )
        .map_err(|f| {
            (
                f,
                Some(
                    "the transfers do not add up to the amount, or a stamp lacks its document"
                        .to_string(),
                ),
            )
        })?;
        // The position is authoritative: an amount the PSP read elsewhere (an old notice, a
        // verify before a change) is answered with the position's, which the receipt must match.
        if let Some(Ok(asked)) = r.amount_cents() {
            if asked.cents() != 0 && asked != position.dovuto.amount {
                tracing::info!(
                    entity = %entity.ipa_code,
                    notice = %r.qr_code.notice_number,
                    asked = %asked,
                    answered = %position.dovuto.amount,
                    "activation asked another amount; answered with the position's"
                );
            }
        }
        let due_date = answered_due_date(&position.dovuto, r.due_date.as_deref());
        // The node retries activations: each one is answered again and counted.
        self.store
            .record_activation(position.id, Some(corr))
            .map_err(system_error)?;
        Ok((
            Activation {
                position,
                transfers,
                iuv: iuv.as_str().to_string(),
                due_date,
            },
            entity,
        ))
    }

    fn send_rt(
        &self,
        r: ReceiptFields<'_>,
        op: Operation,
        (raw, request): (&str, &Request),
        corr: &str,
    ) -> Result<(), Refusal> {
        let entity = self.caller(r.id_pa, r.id_broker, r.id_station)?;
        // pagoPA sends every beneficiary the receipt: idPA may be a transfer's beneficiary of
        // another entity's notice (its fiscalCode), whose receipt pays nothing of idPA's.
        let secondary = r.fiscal_code != entity.fiscal_code.as_str();
        if secondary && !r.beneficiaries.contains(&entity.fiscal_code.as_str()) {
            return Err((
                NodeFault::IdDominioErrato,
                Some(format!(
                    "receipt fiscalCode {} is not idPA, and idPA is the fiscalCodePA of no transfer",
                    r.fiscal_code
                )),
            ));
        }
        if r.outcome != Outcome::Ok {
            return Err((
                NodeFault::Semantica,
                Some("only receipts of completed payments (outcome OK) are accepted".into()),
            ));
        }
        let notice = NoticeNumber::parse(r.notice_number).map_err(|e| {
            (
                NodeFault::PagamentoSconosciuto,
                Some(format!("noticeNumber {}: {e}", r.notice_number)),
            )
        })?;
        let amount = soap::to_cents(r.amount).map_err(|e| {
            (
                NodeFault::SintassiExtraxsd,
                Some(format!("paymentAmount {}: {e}", r.amount)),
            )
        })?;
        let plan = self.plan.get();
        let deliver_to = if secondary {
            plan.secondary_deliver_to(&entity.ipa_code, r.fiscal_code)
        } else {
            plan.deliver_to(&entity.ipa_code, &r.beneficiaries)
        };
        let receipt = NewReceipt {
            entity: &entity.ipa_code,
            notice_number: &notice,
            receipt_id: r.receipt_id,
            amount_cents: amount.cents(),
            psp_id: r.psp_id,
            psp_name: r.psp_name,
            payment_date: r.payment_date,
            operation: op.soap_action(),
            // The receipt as the node sent it: the evidence every entity system gets back.
            xml: raw,
            deliver_to: &deliver_to,
            correlation: Some(corr),
        };
        // Decoded once, here: deliveries and exports encode from this.
        let parsed = soap::receipt_to_stored(request);
        let stored = if secondary {
            self.store
                .store_secondary_receipt(&receipt, r.fiscal_code, parsed)
        } else {
            self.store.store_parsed_receipt(&receipt, parsed)
        }
        .map_err(system_error)?;
        match stored {
            ReceiptStored::Paid { .. } | ReceiptStored::Secondary { .. } => Ok(()),
            ReceiptStored::Duplicate => Err((NodeFault::ReceiptDuplicata, None)),
            // The first receipt stays; the other content is kept for operators.
            ReceiptStored::Conflict { receipt, original } => {
                tracing::warn!(entity = %entity.ipa_code, notice = %notice, receipt_id = r.receipt_id, stored_as = receipt, original, "receipt id resent with other content: kept as a conflicting copy for operators");
                Err((
                    NodeFault::ReceiptDuplicata,
                    Some(format!("receipt {} was received before with other content; this copy is stored for operators", r.receipt_id)),
                ))
            }
            ReceiptStored::Flagged { receipt, issue } => {
                tracing::warn!(entity = %entity.ipa_code, notice = %notice, receipt_id = r.receipt_id, stored_as = receipt, issue = issue.as_str(), "receipt stored and flagged for operators");
                Err(match issue {
                    ReceiptIssue::UnknownNotice => (NodeFault::PagamentoSconosciuto, Some("receipt stored for operators".into())),
                    ReceiptIssue::AmountMismatch { expected_cents } => (
                        NodeFault::Semantica,
                        Some(format!("paymentAmount {} differs from the position's {}; receipt stored for operators", amount, snodo_core::Amount::from_cents(expected_cents))),
                    ),
                    ReceiptIssue::AlreadyPaid => (NodeFault::PagamentoDuplicato, Some("the position was paid by another receipt; receipt stored for operators".into())),
                    ReceiptIssue::Annulled => (NodeFault::PagamentoAnnullato, Some("receipt stored for operators".into())),
                })
            }
        }
    }
}

/// The receipt fields the registry needs, whichever receipt version carried them.
struct ReceiptFields<'a> {
    id_pa: &'a str,
    id_broker: &'a str,
    id_station: &'a str,
    notice_number: &'a str,
    fiscal_code: &'a str,
    receipt_id: &'a str,
    outcome: Outcome,
    amount: &'a str,
    psp_id: &'a str,
    psp_name: &'a str,
    payment_date: Option<&'a str>,
    /// `fiscalCodePA` of each transfer: secondary beneficiaries may list the receipt too.
    beneficiaries: Vec<&'a str>,
}

/// `paSendRTReq` and `paSendRTV2Request` name these fields alike but are different types.
macro_rules! receipt_fields {
    ($r:expr) => {
        ReceiptFields {
            id_pa: &$r.id_pa,
            id_broker: &$r.id_broker_pa,
            id_station: &$r.id_station,
            notice_number: &$r.receipt.notice_number,
            fiscal_code: &$r.receipt.fiscal_code,
            receipt_id: &$r.receipt.receipt_id,
            outcome: $r.receipt.outcome,
            amount: &$r.receipt.payment_amount,
            psp_id: &$r.receipt.id_psp,
            psp_name: &$r.receipt.psp_company_name,
            payment_date: $r.receipt.payment_date_time.as_deref(),
            beneficiaries: $r
                .receipt
                .transfer_list
                .iter()
                .map(|t| t.fiscal_code_pa.as_str())
                .collect(),
        }
    };
}
use receipt_fields;

/// A position being paid and its transfers.
struct Activation {
    position: Position,
    transfers: Vec<payment::Transfer>,
    iuv: String,
    /// `paymentData`'s required dueDate (see [`answered_due_date`]).
    due_date: String,
}

fn request_id_pa(r: &Request) -> &str {
    match r {
        Request::Verify(r) => &r.id_pa,
        Request::GetPayment(r) | Request::GetPaymentV2(r) => &r.id_pa,
        Request::SendRt(r) => &r.id_pa,
        Request::SendRtV2(r) => &r.id_pa,
        Request::Demand(r) => &r.id_pa,
    }
}

/// The notice number a request is about (the subject of its events).
fn request_notice(r: &Request) -> String {
    match r {
        Request::Verify(r) => r.qr_code.notice_number.clone(),
        Request::GetPayment(r) | Request::GetPaymentV2(r) => r.qr_code.notice_number.clone(),
        Request::SendRt(r) => r.receipt.notice_number.clone(),
        Request::SendRtV2(r) => r.receipt.notice_number.clone(),
        // No notice yet: the service asked for.
        Request::Demand(r) => r.id_servizio.clone(),
    }
}

fn system_error(e: snodo_store::StoreError) -> Refusal {
    tracing::error!("store failure answering the node: {e}");
    (NodeFault::SystemError, None)
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

/// The due date `paGetPayment[V2]` answers, where the XSD requires one: the position's; for a
/// position without one, the date the node's request carries (the notice's, as the PSP read
/// it); else [`NO_DUE_DATE`].
fn answered_due_date(d: &dovuto::Dovuto, asked: Option<&str>) -> String {
    match (d.due_date, asked) {
        (Some(due), _) => due.to_string(),
        (None, Some(asked)) if chrono::NaiveDate::parse_from_str(asked, "%Y-%m-%d").is_ok() => {
            asked.to_string()
        }
        _ => NO_DUE_DATE.to_string(),
    }
}

fn debtor(d: &dovuto::Dovuto) -> Subject {
    let p = &d.payer;
    Subject {
        unique_identifier: UniqueIdentifier {
            kind: match p.kind {
                Some(SubjectKind::G) => EntityType::G,
                _ => EntityType::F,
            },
            value: cut(&p.id, 16),
        },
        full_name: cut(&p.name, 70),
        street_name: p.address.as_deref().map(|s| cut(s, 70)),
        civic_number: p.civic.as_deref().map(|s| cut(s, 16)),
        postal_code: p.postal_code.as_deref().map(|s| cut(s, 16)),
        city: p.locality.as_deref().map(|s| cut(s, 35)),
        state_province_region: p.province.as_deref().map(|s| cut(s, 35)),
        country: p.nation.clone().filter(|n| n.len() == 2),
        email: p.email.clone(),
    }
}

fn payment_data(a: &Activation, entity: &EntityRuntime) -> PaymentData {
    let d = &a.position.dovuto;
    PaymentData {
        creditor_reference_id: a.iuv.clone(),
        payment_amount: soap::from_cents(d.amount),
        due_date: a.due_date.clone(),
        retention_date: None,
        last_payment: None,
        description: cut(&d.causale, 140),
        company_name: Some(cut(&entity.name, 140)),
        office_name: entity.office_name.as_deref().map(|o| cut(o, 140)),
        debtor: debtor(d),
        transfer_list: a
            .transfers
            .iter()
            .map(|t| Transfer {
                id_transfer: t.id,
                transfer_amount: soap::from_cents(t.amount),
                fiscal_code_pa: t.fiscal_code.as_str().to_string(),
                // A stamp never gets here (the V1 answer refuses it first).
                iban: t
                    .destination
                    .iban()
                    .map(|i| i.as_str().to_string())
                    .unwrap_or_default(),
                remittance_information: cut(&t.remittance_information, 140),
                transfer_category: t.category.clone(),
                metadata: map_entries(&t.metadata),
            })
            .collect(),
        metadata: Vec::new(),
    }
}

fn map_entries(m: &[snodo_core::dovuto::MetaEntry]) -> Vec<soap::MapEntry> {
    m.iter()
        .map(|e| soap::MapEntry {
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect()
}

fn payment_data_v2(a: &Activation, entity: &EntityRuntime) -> PaymentDataV2 {
    let d = &a.position.dovuto;
    PaymentDataV2 {
        creditor_reference_id: a.iuv.clone(),
        payment_amount: soap::from_cents(d.amount),
        due_date: a.due_date.clone(),
        retention_date: None,
        last_payment: None,
        description: cut(&d.causale, 140),
        company_name: cut(&entity.name, 140),
        office_name: entity.office_name.as_deref().map(|o| cut(o, 140)),
        debtor: debtor(d),
        transfer_list: a
            .transfers
            .iter()
            .map(|t| TransferV2 {
                id_transfer: t.id,
                transfer_amount: soap::from_cents(t.amount),
                fiscal_code_pa: t.fiscal_code.as_str().to_string(),
                company_name: Some(cut(t.company_name.as_deref().unwrap_or(&entity.name), 140)),
                destination: match &t.destination {
                    payment::Destination::Iban(i) => Destination::Iban(i.as_str().to_string()),
                    payment::Destination::Stamp(s) => {
                        Destination::MarcaDaBollo(soap::MarcaDaBollo {
                            hash_documento: s.document_hash.clone(),
                            tipo_bollo: s.kind.clone(),
                            provincia_residenza: s.province.clone(),
                        })
                    }
                },
                remittance_information: cut(&t.remittance_information, 140),
                transfer_category: t.category.clone(),
                metadata: map_entries(&t.metadata),
            })
            .collect(),
        metadata: Vec::new(),
    }
}

/// A SOAP 1.1 Fault for a request whose operation could not even be read.
fn client_fault(reason: &str) -> String {
    soap::render_soap_fault(SoapFaultCode::Client, reason)
}

/// Answer when the handler itself failed (a bug): a SOAP Server fault.
pub fn system_fault() -> String {
    soap::render_soap_fault(SoapFaultCode::Server, "PAA_SYSTEM_ERROR")
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeService")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dovuto(due: Option<&str>) -> dovuto::Dovuto {
        dovuto::Dovuto {
            iud: "X".into(),
            iuv: None,
            generate_iuv: false,
            payer: Default::default(),
            due_date: due.map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
            amount: snodo_core::Amount::from_cents(100),
            pa_fee: None,
            debt_type: "T".into(),
            payment_kinds: "ALL".into(),
            causale: "c".into(),
            dati_specifici_riscossione: "9/0101100IM/".into(),
            bilancio: None,
            secondary: None,
            transfers: Vec::new(),
            document_hash: None,
        }
    }

    #[test]
    fn the_due_date_answered_prefers_the_position_then_the_request() {
        let dated = dovuto(Some("2026-12-31"));
        assert_eq!(answered_due_date(&dated, Some("2027-01-15")), "2026-12-31");
        assert_eq!(answered_due_date(&dated, None), "2026-12-31");
        let undated = dovuto(None);
        assert_eq!(
            answered_due_date(&undated, Some("2027-01-15")),
            "2027-01-15"
        );
        assert_eq!(answered_due_date(&undated, Some("15/01/2027")), NO_DUE_DATE);
        assert_eq!(answered_due_date(&undated, None), NO_DUE_DATE);
    }
}
