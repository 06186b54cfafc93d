//! The node's legacy reporting calls (`nodeForPa.wsdl`, namespace `http://ws.pagamenti.telematici.gov/`):
//! `nodoChiediElencoFlussiRendicontazione` (the list of flows) and
//! `nodoChiediFlussoRendicontazione` (one flow, its FlussoRiversamento base64 in
//! `xmlRendicontazione`). Requests are built, answers and faults read. Deprecated by pagoPA from
//! 30 June 2026 in favour of FdR 3 REST ([`super::rest`]).

use base64::Engine as _;
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use snodo_core::settlement::{SettlementFlow, SettlementPayment};

use super::xml::{parse_flow, FdrXmlError};
use crate::pagopa::xml::{read_payload, Node};
use crate::pagopa::{SoapError, SOAP_ENV_NS};
use crate::xml_text::XmlText;

/// The namespace of `nodeForPa.xsd` (the `ppt:` prefix on the wire).
pub const NODE_FOR_PA_NS: &str = "http://ws.pagamenti.telematici.gov/";
pub const LIST_OPERATION: &str = "nodoChiediElencoFlussiRendicontazione";
pub const FLOW_OPERATION: &str = "nodoChiediFlussoRendicontazione";

/// Why an answer of the node gives no list or flow.
#[derive(Debug, thiserror::Error)]
pub enum FdrSoapError {
    #[error(transparent)]
    Soap(#[from] SoapError),
    /// The node answered with its `fault` (e.g. `PPT_ID_FLUSSO_SCONOSCIUTO`).
    #[error("node fault {}: {}", .0.fault_code, .0.fault_string)]
    Fault(Box<NodeFault>),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// The flow inside `xmlRendicontazione` is not a FlussoRiversamento.
    #[error("xmlRendicontazione: {0}")]
    Flow(#[from] FdrXmlError),
}

/// The node's `ctFaultBean`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFault {
    pub fault_code: String,
    pub fault_string: String,
    pub id: String,
    pub description: Option<String>,
    pub serial: Option<String>,
    pub original_fault_code: Option<String>,
    pub original_fault_string: Option<String>,
    pub original_description: Option<String>,
}

/// The caller's credentials and filters, shared by both requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCaller<'a> {
    pub broker_id: &'a str,
    pub station_id: &'a str,
    pub password: &'a str,
    /// `identificativoDominio`: the entity; without it the node lists every domain of the broker.
    pub entity: Option<&'a str>,
    pub psp_id: Option<&'a str>,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFlow {
    pub iuf: String,
    pub flow_time: DateTime<Utc>,
}

fn envelope_start(x: &mut XmlText, op: &str) {
    x.push_str(&format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:ppt=\"{NODE_FOR_PA_NS}\"><soapenv:Header/><soapenv:Body><ppt:{op}>"
    ));
}

fn caller_fields(x: &mut XmlText, c: &NodeCaller<'_>) {
    x.leaf("identificativoIntermediarioPA", c.broker_id);
    x.leaf("identificativoStazioneIntermediarioPA", c.station_id);
    x.leaf("password", c.password);
    if let Some(e) = c.entity {
        x.leaf("identificativoDominio", e);
    }
    if let Some(p) = c.psp_id {
        x.leaf("identificativoPSP", p);
    }
}

/// The `nodoChiediElencoFlussiRendicontazione` request envelope.
pub fn render_list_request(c: &NodeCaller<'_>) -> String {
    let mut x = XmlText::with_capacity(512);
    envelope_start(&mut x, LIST_OPERATION);
    caller_fields(&mut x, c);
    x.push_str(&format!(
        "</ppt:{LIST_OPERATION}></soapenv:Body></soapenv:Envelope>"
    ));
    x.into_string()
}

/// The `nodoChiediFlussoRendicontazione` request envelope for flow `iuf`.
pub fn render_flow_request(c: &NodeCaller<'_>, iuf: &str) -> String {
    let mut x = XmlText::with_capacity(512);
    envelope_start(&mut x, FLOW_OPERATION);
    caller_fields(&mut x, c);
    x.leaf("identificativoFlusso", iuf);
    x.push_str(&format!(
        "</ppt:{FLOW_OPERATION}></soapenv:Body></soapenv:Envelope>"
    ));
    x.into_string()
}

/// Reads the answer's payload, checks its name, and turns a `fault` into [`FdrSoapError::Fault`].
fn payload(body: &[u8], expected: &str) -> Result<Node, FdrSoapError> {
    let root = read_payload(body)?;
    if root.name == "Fault" && root.ns.as_deref() == Some(SOAP_ENV_NS) {
        let child = |n: &str| text_of(&root, n).unwrap_or_default();
        return Err(FdrSoapError::Soap(SoapError::SoapFault {
            fault_code: child("faultcode"),
            fault_string: child("faultstring"),
        }));
    }
    if root.name != expected || root.ns.as_deref() != Some(NODE_FOR_PA_NS) {
        return Err(FdrSoapError::Invalid {
            path: root.name.clone(),
            reason: format!("expected {expected} in {NODE_FOR_PA_NS}"),
        });
    }
    if let Some(f) = root.children.iter().find(|c| c.name == "fault") {
        let opt = |n: &str| text_of(f, n);
        return Err(FdrSoapError::Fault(Box::new(NodeFault {
            fault_code: opt("faultCode").unwrap_or_default(),
            fault_string: opt("faultString").unwrap_or_default(),
            id: opt("id").unwrap_or_default(),
            description: opt("description"),
            serial: opt("serial"),
            original_fault_code: opt("originalFaultCode"),
            original_fault_string: opt("originalFaultString"),
            original_description: opt("originalDescription"),
        })));
    }
    Ok(root)
}

fn text_of(n: &Node, name: &str) -> Option<String> {
    n.children
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.text.trim().to_owned())
}

/// The flows the node lists. An empty `elencoFlussiRendicontazione` (or none) is no flows.
pub fn parse_list_response(body: &[u8]) -> Result<Vec<ListedFlow>, FdrSoapError> {
    let root = payload(body, "nodoChiediElencoFlussiRendicontazioneRisposta")?;
    let Some(list) = root
        .children
        .iter()
        .find(|c| c.name == "elencoFlussiRendicontazione")
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, entry) in list
        .children
        .iter()
        .filter(|c| c.name == "idRendicontazione")
        .enumerate()
    {
        let path = |n: &str| {
            format!(
                "elencoFlussiRendicontazione/idRendicontazione[{}]/{n}",
                i + 1
            )
        };
        let iuf = text_of(entry, "identificativoFlusso").ok_or_else(|| FdrSoapError::Invalid {
            path: path("identificativoFlusso"),
            reason: "missing".into(),
        })?;
        let time_text = text_of(entry, "dataOraFlusso").ok_or_else(|| FdrSoapError::Invalid {
            path: path("dataOraFlusso"),
            reason: "missing".into(),
        })?;
        let flow_time = date_time(&time_text).ok_or_else(|| FdrSoapError::Invalid {
            path: path("dataOraFlusso"),
            reason: format!("{time_text:?} is not a date-time"),
        })?;
        out.push(ListedFlow { iuf, flow_time });
    }
    Ok(out)
}

/// The FlussoRiversamento bytes inside `xmlRendicontazione` (base64; line breaks allowed).
pub fn parse_flow_response(body: &[u8]) -> Result<Vec<u8>, FdrSoapError> {
    let root = payload(body, "nodoChiediFlussoRendicontazioneRisposta")?;
    let text = text_of(&root, "xmlRendicontazione").ok_or_else(|| FdrSoapError::Invalid {
        path: "xmlRendicontazione".into(),
        reason: "missing".into(),
    })?;
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| FdrSoapError::Invalid {
            path: "xmlRendicontazione".into(),
            reason: format!("not base64: {e}"),
        })
}

/// [`parse_flow_response`], then the flow itself.
pub fn parse_flow_response_flow(
    body: &[u8],
    psp_id: Option<&str>,
) -> Result<(SettlementFlow, Vec<SettlementPayment>), FdrSoapError> {
    let xml = parse_flow_response(body)?;
    Ok(parse_flow(&xml, psp_id)?)
}

/// The node's answer to the flow request carrying `flow_xml` (for the simulator).
pub fn render_flow_response(flow_xml: &[u8]) -> String {
    let mut x = XmlText::with_capacity(flow_xml.len() * 4 / 3 + 512);
    x.push_str(&format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:ppt=\"{NODE_FOR_PA_NS}\"><soapenv:Body><ppt:nodoChiediFlussoRendicontazioneRisposta>"
    ));
    x.raw(
        "xmlRendicontazione",
        base64::engine::general_purpose::STANDARD.encode(flow_xml),
    );
    x.push_str("</ppt:nodoChiediFlussoRendicontazioneRisposta></soapenv:Body></soapenv:Envelope>");
    x.into_string()
}

/// `xsd:dateTime`, read as Rome's local time when it has no zone (as the node writes it).
fn date_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    match Rome.from_local_datetime(&naive) {
        LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => Some(dt.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The node's side (for the simulator): requests read, answers and faults written.
// ---------------------------------------------------------------------------------------------

/// The fault code for a flow the node does not know (FDR1's `NodoChiediFlussoRendicontazioneActor`).
pub const FLOW_UNKNOWN: &str = "PPT_ID_FLUSSO_SCONOSCIUTO";
/// The fault code for a wrong station password.
pub const AUTHENTICATION: &str = "PPT_AUTENTICAZIONE";

/// A reporting request as the node receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    /// [`LIST_OPERATION`] or [`FLOW_OPERATION`].
    pub operation: &'static str,
    pub broker_id: String,
    pub station_id: String,
    pub password: String,
    pub entity: Option<String>,
    pub psp_id: Option<String>,
    /// `identificativoFlusso`, with [`FLOW_OPERATION`] only.
    pub iuf: Option<String>,
}

/// Reads a `nodoChiediElencoFlussiRendicontazione` or `nodoChiediFlussoRendicontazione`
/// request; the required fields must be there.
pub fn parse_request(body: &[u8]) -> Result<NodeRequest, FdrSoapError> {
    let root = read_payload(body)?;
    let operation = match root.name.as_str() {
        LIST_OPERATION => LIST_OPERATION,
        FLOW_OPERATION => FLOW_OPERATION,
        other => {
            return Err(FdrSoapError::Invalid {
                path: other.to_owned(),
                reason: format!("expected {LIST_OPERATION} or {FLOW_OPERATION}"),
            })
        }
    };
    if root.ns.as_deref() != Some(NODE_FOR_PA_NS) {
        return Err(FdrSoapError::Invalid {
            path: root.name.clone(),
            reason: format!("expected namespace {NODE_FOR_PA_NS}"),
        });
    }
    let required = |n: &str| {
        text_of(&root, n).ok_or_else(|| FdrSoapError::Invalid {
            path: format!("{operation}/{n}"),
            reason: "missing".into(),
        })
    };
    Ok(NodeRequest {
        operation,
        broker_id: required("identificativoIntermediarioPA")?,
        station_id: required("identificativoStazioneIntermediarioPA")?,
        password: required("password")?,
        entity: text_of(&root, "identificativoDominio"),
        psp_id: text_of(&root, "identificativoPSP"),
        iuf: if operation == FLOW_OPERATION {
            Some(required("identificativoFlusso")?)
        } else {
            None
        },
    })
}

fn answer_start(x: &mut XmlText, op: &str) {
    x.push_str(&format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV_NS}\" xmlns:ppt=\"{NODE_FOR_PA_NS}\"><soapenv:Body><ppt:{op}Risposta>"
    ));
}

fn answer_end(x: &mut XmlText, op: &str) {
    x.push_str(&format!(
        "</ppt:{op}Risposta></soapenv:Body></soapenv:Envelope>"
    ));
}

/// The node's answer to the list request (for the simulator). `dataOraFlusso` is written in
/// Rome's local time without a zone, as the node writes it.
pub fn render_list_response(flows: &[ListedFlow]) -> String {
    let mut x = XmlText::with_capacity(256 + flows.len() * 128);
    answer_start(&mut x, LIST_OPERATION);
    x.open("elencoFlussiRendicontazione");
    x.raw("totRestituiti", flows.len());
    for f in flows {
        x.open("idRendicontazione");
        x.leaf("identificativoFlusso", &f.iuf);
        x.raw(
            "dataOraFlusso",
            f.flow_time.with_timezone(&Rome).format("%Y-%m-%dT%H:%M:%S"),
        );
        x.close("idRendicontazione");
    }
    x.close("elencoFlussiRendicontazione");
    answer_end(&mut x, LIST_OPERATION);
    x.into_string()
}

/// The node's answer to `operation` carrying only its `fault` (for the simulator).
pub fn render_fault_response(operation: &str, fault: &NodeFault) -> String {
    let mut x = XmlText::with_capacity(512);
    answer_start(&mut x, operation);
    x.open("fault");
    x.leaf("faultCode", &fault.fault_code);
    x.leaf("faultString", &fault.fault_string);
    x.leaf("id", &fault.id);
    let optional = [
        ("description", &fault.description),
        ("serial", &fault.serial),
        ("originalFaultCode", &fault.original_fault_code),
        ("originalFaultString", &fault.original_fault_string),
        ("originalDescription", &fault.original_description),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            x.leaf(name, v);
        }
    }
    x.close("fault");
    answer_end(&mut x, operation);
    x.into_string()
}
