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
///
/// A plain answer is read in one pass over `body`, the base64 decoded straight from it (a
/// 100 000-row flow is some 60 MB of base64: no copy of it is made); anything else (a fault,
/// an unexpected shape) goes through the full SOAP reader, which says what it is.
pub fn parse_flow_response(body: &[u8]) -> Result<Vec<u8>, FdrSoapError> {
    if let Some(text) = flow_text(body) {
        return decode_base64(text);
    }
    let root = payload(body, "nodoChiediFlussoRendicontazioneRisposta")?;
    let text = text_of(&root, "xmlRendicontazione").ok_or_else(|| FdrSoapError::Invalid {
        path: "xmlRendicontazione".into(),
        reason: "missing".into(),
    })?;
    decode_base64(text.as_bytes())
}

/// The text of `xmlRendicontazione` in a well-formed `Envelope/Body/
/// nodoChiediFlussoRendicontazioneRisposta` with no `fault`, as it lies in `body`; `None` for
/// anything else.
pub(crate) fn flow_text(body: &[u8]) -> Option<&[u8]> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let in_ns = |r: &ResolveResult<'_>, ns: &str| matches!(r, ResolveResult::Bound(n) if n.as_ref() == ns.as_bytes());
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = quick_xml::NsReader::from_reader(body);
    let mut depth = 0usize;
    // The depth of the element whose content is passed over (the Header, the answer's other
    // fields), if any.
    let mut skip: Option<usize> = None;
    let mut in_flow = false;
    let mut text: Option<&[u8]> = None;
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if skip.is_some() {
                    continue;
                }
                let name = e.local_name();
                let name = name.as_ref();
                match depth {
                    1 if name == b"Envelope" && in_ns(&ns, SOAP_ENV_NS) => {}
                    2 if name == b"Header" && in_ns(&ns, SOAP_ENV_NS) => skip = Some(depth),
                    2 if name == b"Body" && in_ns(&ns, SOAP_ENV_NS) => {}
                    3 if name == b"nodoChiediFlussoRendicontazioneRisposta"
                        && in_ns(&ns, NODE_FOR_PA_NS) => {}
                    4 if name == b"fault" => return None,
                    4 if name == b"xmlRendicontazione"
                        && matches!(ns, ResolveResult::Unbound)
                        && text.is_none() =>
                    {
                        in_flow = true
                    }
                    4 if name != b"xmlRendicontazione" => skip = Some(depth),
                    _ => return None,
                }
            }
            Event::End(_) => {
                if skip == Some(depth) {
                    skip = None;
                }
                in_flow = false;
                depth = depth.checked_sub(1)?;
            }
            Event::Empty(e) => {
                let passed_over = skip.is_some()
                    || (depth == 3
                        && !matches!(e.local_name().as_ref(), b"fault" | b"xmlRendicontazione"))
                    || (depth == 1 && e.local_name().as_ref() == b"Header");
                if !passed_over {
                    return None;
                }
            }
            Event::Text(t) if in_flow => {
                // Base64 has nothing to escape: a reference is for the full reader.
                match t.into_inner() {
                    std::borrow::Cow::Borrowed(b) if text.is_none() && !b.contains(&b'&') => {
                        text = Some(b)
                    }
                    _ => return None,
                }
            }
            Event::Text(t) => {
                if skip.is_none() && !t.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
            }
            Event::Eof => return if depth == 0 { text } else { None },
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            _ if skip.is_some() => {}
            _ => return None,
        }
    }
}

/// Base64 with line breaks allowed: decoded as it lies when it has none, else in pieces.
fn decode_base64(text: &[u8]) -> Result<Vec<u8>, FdrSoapError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let invalid = |e: base64::DecodeError| FdrSoapError::Invalid {
        path: "xmlRendicontazione".into(),
        reason: format!("not base64: {e}"),
    };
    let text = text.trim_ascii();
    if !text.iter().any(u8::is_ascii_whitespace) {
        return engine.decode(text).map_err(invalid);
    }
    // Whole 4-character groups a piece, so only the last piece may carry padding.
    const PIECE: usize = 64 * 1024;
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut piece = Vec::with_capacity(PIECE);
    for &b in text.iter().filter(|b| !b.is_ascii_whitespace()) {
        piece.push(b);
        if piece.len() == PIECE {
            engine.decode_vec(&piece, &mut out).map_err(invalid)?;
            piece.clear();
        }
    }
    engine.decode_vec(&piece, &mut out).map_err(invalid)?;
    Ok(out)
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
