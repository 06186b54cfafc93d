//! SOAP codec of pagoPA's `paForNode` interface (SANP 3.12.0): the calls the national node makes
//! to an entity's broker, and the broker's answers.
//!
//! * The hub [`parse_request`]s what the node sends and [`render_response`]s its answer.
//! * The node simulator [`render_request`]s and [`parse_response`]s.
//!
//! Parsing checks what the XSD checks (element order, cardinality, patterns, lengths, enums), so
//! a message that parses is schema-valid and any failure is a [`SoapError`] naming the element
//! path, to be answered with [`SoapError::fault_code`] (`PAA_SINTASSI_XSD`). Payload roots are in
//! [`PAF_NS`], their descendants unqualified: the XSD has no `elementFormDefault`.
//!
//! Rendering writes straight into a `String`, escaping text; it trusts its input, so values
//! longer than the XSD allows must be cut by the caller.

mod model;
mod parse;
mod render;
mod stored;
mod types;
mod view;
pub(crate) mod xml;

#[cfg(test)]
mod tests;

use snodo_core::amount::AmountError;
use snodo_core::Amount;

pub use model::*;
pub use parse::{parse_request, parse_response, request_operation};
pub use render::{render_request, render_response, render_soap_fault, SoapFaultCode};
pub use stored::{receipt_from_stored, receipt_to_stored, stored_transfers, StoredTransfer};
pub use view::{ReceiptTransferView, ReceiptView};

/// The official interface files the hub serves at `/pagopa/paForNode?wsdl`, as published by
/// pagoPA (SANP 3.12.0; `specs/SOURCES.md`).
pub mod specs {
    pub const WSDL: &str = include_str!("../specs/pagopa/SANP3.12.0/wsdl/paForNode.wsdl");
    pub const XSD_PA_FOR_NODE: &str =
        include_str!("../specs/pagopa/SANP3.12.0/wsdl/xsd/paForNode.xsd");
    pub const XSD_COMMON: &str =
        include_str!("../specs/pagopa/SANP3.12.0/xsd-common/sac-common-types-1.0.xsd");
}

/// Namespace of the `paForNode` payload elements.
pub const PAF_NS: &str = "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd";
/// SOAP 1.1 envelope namespace, the only SOAP version the node speaks.
pub const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// Fault codes an entity's broker answers with (`fault.faultCode`); the domain's
/// [`NodeFault`](snodo_core::payment::NodeFault) is their one source.
pub mod fault_codes {
    use snodo_core::payment::NodeFault;
    pub const SINTASSI_XSD: &str = NodeFault::SintassiXsd.code();
    pub const SINTASSI_EXTRAXSD: &str = NodeFault::SintassiExtraxsd.code();
    pub const ID_DOMINIO_ERRATO: &str = NodeFault::IdDominioErrato.code();
    pub const ID_INTERMEDIARIO_ERRATO: &str = NodeFault::IdIntermediarioErrato.code();
    pub const STAZIONE_INT_ERRATA: &str = NodeFault::StazioneIntErrata.code();
    pub const PAGAMENTO_SCONOSCIUTO: &str = NodeFault::PagamentoSconosciuto.code();
    pub const PAGAMENTO_SCADUTO: &str = NodeFault::PagamentoScaduto.code();
    pub const PAGAMENTO_ANNULLATO: &str = NodeFault::PagamentoAnnullato.code();
    pub const PAGAMENTO_DUPLICATO: &str = NodeFault::PagamentoDuplicato.code();
    pub const PAGAMENTO_IN_CORSO: &str = NodeFault::PagamentoInCorso.code();
    pub const RECEIPT_DUPLICATA: &str = NodeFault::ReceiptDuplicata.code();
    pub const SEMANTICA: &str = NodeFault::Semantica.code();
    pub const SYSTEM_ERROR: &str = NodeFault::SystemError.code();
}

/// The WSDL's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    VerifyPaymentNotice,
    GetPayment,
    GetPaymentV2,
    SendRt,
    SendRtV2,
    DemandPaymentNotice,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Self::VerifyPaymentNotice,
        Self::GetPayment,
        Self::GetPaymentV2,
        Self::SendRt,
        Self::SendRtV2,
        Self::DemandPaymentNotice,
    ];

    /// The WSDL's `soapAction` (equal to the operation name).
    pub fn soap_action(self) -> &'static str {
        match self {
            Self::VerifyPaymentNotice => "paVerifyPaymentNotice",
            Self::GetPayment => "paGetPayment",
            Self::GetPaymentV2 => "paGetPaymentV2",
            Self::SendRt => "paSendRT",
            Self::SendRtV2 => "paSendRTV2",
            Self::DemandPaymentNotice => "paDemandPaymentNotice",
        }
    }

    /// Local name of the request payload element.
    pub fn request_element(self) -> &'static str {
        match self {
            Self::VerifyPaymentNotice => "paVerifyPaymentNoticeReq",
            Self::GetPayment => "paGetPaymentReq",
            Self::GetPaymentV2 => "paGetPaymentV2Request",
            Self::SendRt => "paSendRTReq",
            Self::SendRtV2 => "paSendRTV2Request",
            Self::DemandPaymentNotice => "paDemandPaymentNoticeRequest",
        }
    }

    /// Local name of the response payload element.
    pub fn response_element(self) -> &'static str {
        match self {
            Self::VerifyPaymentNotice => "paVerifyPaymentNoticeRes",
            Self::GetPayment => "paGetPaymentRes",
            Self::GetPaymentV2 => "paGetPaymentV2Response",
            Self::SendRt => "paSendRTRes",
            Self::SendRtV2 => "paSendRTV2Response",
            Self::DemandPaymentNotice => "paDemandPaymentNoticeResponse",
        }
    }

    /// From an HTTP `SOAPAction` header value, quoted or not; lets the hub pick the KO
    /// response element when the body cannot be read.
    pub fn from_soap_action(action: &str) -> Option<Operation> {
        let a = action.trim();
        let a = a
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(a);
        Self::ALL.into_iter().find(|op| op.soap_action() == a)
    }

    fn from_request_element(name: &str) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .find(|op| op.request_element() == name)
    }

    fn from_response_element(name: &str) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .find(|op| op.response_element() == name)
    }
}

/// A call from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Verify(VerifyRequest),
    GetPayment(GetPaymentRequest),
    GetPaymentV2(GetPaymentRequest),
    SendRt(SendRtRequest),
    SendRtV2(SendRtV2Request),
    Demand(DemandRequest),
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Self::Verify(_) => Operation::VerifyPaymentNotice,
            Self::GetPayment(_) => Operation::GetPayment,
            Self::GetPaymentV2(_) => Operation::GetPaymentV2,
            Self::SendRt(_) => Operation::SendRt,
            Self::SendRtV2(_) => Operation::SendRtV2,
            Self::Demand(_) => Operation::DemandPaymentNotice,
        }
    }

    /// The `SOAPAction` HTTP header value to send with this request.
    pub fn soap_action(&self) -> &'static str {
        self.operation().soap_action()
    }
}

/// The broker's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Verify(VerifyResponse),
    GetPayment(GetPaymentResponse),
    GetPaymentV2(GetPaymentV2Response),
    SendRt(SendRtResponse),
    SendRtV2(SendRtResponse),
    Demand(DemandResponse),
}

impl Response {
    pub fn operation(&self) -> Operation {
        match self {
            Self::Verify(_) => Operation::VerifyPaymentNotice,
            Self::GetPayment(_) => Operation::GetPayment,
            Self::GetPaymentV2(_) => Operation::GetPaymentV2,
            Self::SendRt(_) => Operation::SendRt,
            Self::SendRtV2(_) => Operation::SendRtV2,
            Self::Demand(_) => Operation::DemandPaymentNotice,
        }
    }

    /// A KO answer to `op` carrying only `outcome` and `fault`.
    pub fn ko(op: Operation, fault: Fault) -> Response {
        let fault = Some(fault);
        let outcome = Outcome::Ko;
        match op {
            Operation::VerifyPaymentNotice => Self::Verify(VerifyResponse {
                outcome,
                fault,
                ..VerifyResponse::default()
            }),
            Operation::GetPayment => Self::GetPayment(GetPaymentResponse {
                outcome,
                fault,
                data: None,
            }),
            Operation::GetPaymentV2 => Self::GetPaymentV2(GetPaymentV2Response {
                outcome,
                fault,
                data: None,
            }),
            Operation::SendRt => Self::SendRt(SendRtResponse { outcome, fault }),
            Operation::SendRtV2 => Self::SendRtV2(SendRtResponse { outcome, fault }),
            Operation::DemandPaymentNotice => Self::Demand(DemandResponse {
                outcome,
                fault,
                ..DemandResponse::default()
            }),
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Verify(r) => r.outcome,
            Self::GetPayment(r) => r.outcome,
            Self::GetPaymentV2(r) => r.outcome,
            Self::SendRt(r) | Self::SendRtV2(r) => r.outcome,
            Self::Demand(r) => r.outcome,
        }
    }

    pub fn fault(&self) -> Option<&Fault> {
        match self {
            Self::Verify(r) => r.fault.as_ref(),
            Self::GetPayment(r) => r.fault.as_ref(),
            Self::GetPaymentV2(r) => r.fault.as_ref(),
            Self::SendRt(r) | Self::SendRtV2(r) => r.fault.as_ref(),
            Self::Demand(r) => r.fault.as_ref(),
        }
    }
}

/// Why a message could not be read. Every variant but the last two is a schema violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// Not well-formed XML (or not UTF-8, or with a DTD).
    #[error("not well-formed XML: {0}")]
    NotXml(String),
    /// Well-formed, but not a SOAP 1.1 envelope with one element in its Body.
    #[error("not a SOAP 1.1 message: {0}")]
    NotSoap(String),
    /// The Body holds an element that is no paForNode operation.
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    /// A paForNode operation this codec does not handle (none today; kept for the next WSDL).
    #[error("operation {0} is not supported")]
    Unsupported(String),
    /// The payload breaks the XSD; `path` is like `paGetPaymentReq/qrCode/noticeNumber`.
    #[error("{path}: {reason}")]
    Invalid {
        operation: Operation,
        path: String,
        reason: String,
    },
    /// The Body holds a SOAP Fault instead of a payload (seen by the simulator).
    #[error("SOAP fault {fault_code}: {fault_string}")]
    SoapFault {
        fault_code: String,
        fault_string: String,
    },
}

impl SoapError {
    /// The `faultCode` to answer with.
    pub fn fault_code(&self) -> &'static str {
        match self {
            Self::NotXml(_)
            | Self::NotSoap(_)
            | Self::UnknownOperation(_)
            | Self::Invalid { .. } => fault_codes::SINTASSI_XSD,
            Self::Unsupported(_) | Self::SoapFault { .. } => fault_codes::SYSTEM_ERROR,
        }
    }

    /// The operation recognised before the failure, to pick the KO response element.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Invalid { operation, .. } => Some(*operation),
            _ => None,
        }
    }
}

/// Integer cents of a wire amount (`"12.50"` → 1250).
pub fn to_cents(wire: &str) -> Result<Amount, AmountError> {
    Amount::parse_decimal(wire.trim())
}

/// Wire form of an amount: two decimals, `12.50`.
pub fn from_cents(amount: Amount) -> String {
    amount.to_string()
}
