//! MyPay's SOAP services for entity systems (`pa-per-ente.wsdl`, the `paaSIL*` operations, and
//! MyPivot's `mypivot-pa-per-ente.wsdl`): the calls an ERP written for MyPay makes, read from
//! the envelope, and the answers, written in the WSDL's element order.
//!
//! Every operation's payload root is qualified (`ppt:`), its children are not (the WSDL's schemas
//! have no `elementFormDefault`). The caller's entity travels in the SOAP Header
//! (`ppthead:intestazionePPT/codIpaEnte`) for some operations and in the body (`codIpaEnte`) for
//! others; [`Call::entity`] gives whichever is there. Errors are answered as MyPay answers them: a
//! normal response whose `fault` element carries the code ([`Answer::fault`]), never a crash.
//!
//! The base64 documents inside (`Versamento`, `Dovuti`, `Pagati`) are `PagInf_Dovuti_Pagati_6_2_0`
//! documents: [`versamento`] reads one position, [`dovuti`] writes the open ones.

pub mod dovuti;
pub mod versamento;

#[cfg(test)]
mod tests;

use crate::pagopa::xml::{read_envelope, Node};
use crate::pagopa::SoapError;
use crate::xml_text::XmlText;

/// Namespace of `pa-per-ente.wsdl`'s payload elements.
pub const PPT_NS: &str = "http://www.regione.veneto.it/pagamenti/ente/";
/// Namespace of its SOAP header (`intestazionePPT`).
pub const PPTHEAD_NS: &str = "http://www.regione.veneto.it/pagamenti/ente/ppthead";
/// Namespace of `mypivot-pa-per-ente.wsdl`'s payload elements.
pub const PIVOT_NS: &str = "http://www.regione.veneto.it/pagamenti/pa/";

/// The interface files the hub serves at `<path>?wsdl`, as published in MyPay4 (AGPL-3.0-or-later,
/// `specs/SOURCES.md`); the hub rewrites their addresses and the two constructs strict schema
/// processors refuse when it serves them.
pub mod specs {
    pub const WSDL: &str = include_str!("../specs/mypay/pa-per-ente.wsdl");
    pub const PIVOT_WSDL: &str = include_str!("../specs/mypay/mypivot-pa-per-ente.wsdl");
    pub const XSD: &str = include_str!("../specs/mypay/PagInf_Dovuti_Pagati_6_2_0.xsd");
    /// The XSD's file name, as the WSDL imports it.
    pub const XSD_NAME: &str = "PagInf_Dovuti_Pagati_6_2_0.xsd";
}

/// An operation of `pa-per-ente.wsdl` or `mypivot-pa-per-ente.wsdl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    InviaDovuti,
    InviaCarrelloDovuti,
    VerificaAvviso,
    ChiediPagati,
    ChiediPagatiConRicevuta,
    ImportaDovuto,
    RegistraPagamento,
    AutorizzaImportFlusso,
    ChiediStatoImportFlusso,
    PrenotaExportFlusso,
    PrenotaExportFlussoScaduti,
    PrenotaExportFlussoIncrementaleConRicevuta,
    ChiediStatoExportFlusso,
    ChiediStatoExportFlussoScaduti,
    ChiediAvvisiPendenti,
    ChiediEsitoCarrelloDovuti,
    ChiediPosizioniAperte,
    ChiediStoricoPagamenti,
    ChiediElencoFlussiSPC,
    ChiediFlussoSPC,
}

impl Operation {
    pub const ALL: [Operation; 20] = [
        Self::InviaDovuti,
        Self::InviaCarrelloDovuti,
        Self::VerificaAvviso,
        Self::ChiediPagati,
        Self::ChiediPagatiConRicevuta,
        Self::ImportaDovuto,
        Self::RegistraPagamento,
        Self::AutorizzaImportFlusso,
        Self::ChiediStatoImportFlusso,
        Self::PrenotaExportFlusso,
        Self::PrenotaExportFlussoScaduti,
        Self::PrenotaExportFlussoIncrementaleConRicevuta,
        Self::ChiediStatoExportFlusso,
        Self::ChiediStatoExportFlussoScaduti,
        Self::ChiediAvvisiPendenti,
        Self::ChiediEsitoCarrelloDovuti,
        Self::ChiediPosizioniAperte,
        Self::ChiediStoricoPagamenti,
        Self::ChiediElencoFlussiSPC,
        Self::ChiediFlussoSPC,
    ];

    /// The operation's name, which is also its request element and its `SOAPAction`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InviaDovuti => "paaSILInviaDovuti",
            Self::InviaCarrelloDovuti => "paaSILInviaCarrelloDovuti",
            Self::VerificaAvviso => "paaSILVerificaAvviso",
            Self::ChiediPagati => "paaSILChiediPagati",
            Self::ChiediPagatiConRicevuta => "paaSILChiediPagatiConRicevuta",
            Self::ImportaDovuto => "paaSILImportaDovuto",
            Self::RegistraPagamento => "paaSILRegistraPagamento",
            Self::AutorizzaImportFlusso => "paaSILAutorizzaImportFlusso",
            Self::ChiediStatoImportFlusso => "paaSILChiediStatoImportFlusso",
            Self::PrenotaExportFlusso => "paaSILPrenotaExportFlusso",
            Self::PrenotaExportFlussoScaduti => "paaSILPrenotaExportFlussoScaduti",
            Self::PrenotaExportFlussoIncrementaleConRicevuta => {
                "paaSILPrenotaExportFlussoIncrementaleConRicevuta"
            }
            Self::ChiediStatoExportFlusso => "paaSILChiediStatoExportFlusso",
            Self::ChiediStatoExportFlussoScaduti => "paaSILChiediStatoExportFlussoScaduti",
            Self::ChiediAvvisiPendenti => "paaSILChiediAvvisiPendenti",
            Self::ChiediEsitoCarrelloDovuti => "paaSILChiediEsitoCarrelloDovuti",
            Self::ChiediPosizioniAperte => "paaSILChiediPosizioniAperte",
            Self::ChiediStoricoPagamenti => "paaSILChiediStoricoPagamenti",
            Self::ChiediElencoFlussiSPC => "paaSILChiediElencoFlussiSPC",
            Self::ChiediFlussoSPC => "paaSILChiediFlussoSPC",
        }
    }

    /// The namespace of its request and answer elements.
    pub const fn namespace(self) -> &'static str {
        match self {
            Self::ChiediElencoFlussiSPC | Self::ChiediFlussoSPC => PIVOT_NS,
            _ => PPT_NS,
        }
    }

    /// The operation whose request element this is.
    pub fn from_element(ns: Option<&str>, name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.name() == name && ns == Some(op.namespace()))
    }

    /// The operation a `SOAPAction` names (quoted or not, as the WSDL gives it).
    pub fn from_soap_action(action: &str) -> Option<Self> {
        let action = action.trim().trim_matches('"');
        Self::ALL.into_iter().find(|op| op.name() == action)
    }
}

/// A request that cannot be read as one of the operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not XML, not a SOAP 1.1 envelope with one element in its Body.
    #[error("{0}")]
    Envelope(SoapError),
    /// The Body's element is none of the WSDLs' operations.
    #[error("the Body holds <{0}>, which is none of MyPay's operations")]
    UnknownOperation(String),
    /// A field the WSDL requires is missing, repeated or malformed.
    #[error("{operation}/{field}: {reason}")]
    Field {
        operation: &'static str,
        field: String,
        reason: String,
    },
}

/// One element of a cart (`listaDovuti/elementoListaDovuti`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    pub ipa_code: String,
    /// What MyPay calls the password here: a SHA-256 in hex.
    pub password: String,
    /// The base64 `Dovuti` document, as sent.
    pub dovuti: String,
}

/// A call, read: its operation, who it says it is, and its fields by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Operation,
    /// `intestazionePPT/codIpaEnte` of the SOAP Header, when there is one.
    pub header_ipa: Option<String>,
    /// The payload's simple children, in document order (local name, text).
    fields: Vec<(String, String)>,
    /// `listaDovuti` of `paaSILInviaCarrelloDovuti`.
    pub cart: Vec<CartItem>,
    /// `listaDovutiEntiSecondari/elementoListaDovutiEntiSecondari/dovutiEntiSecondari` of
    /// `paaSILImportaDovuto` and `paaSILInviaCarrelloDovuti`: base64 `DovutiEntiSecondari`
    /// documents, as sent (empty ones left out, as MyPay does).
    pub secondaries: Vec<String>,
    /// Structured fields the hub does not read: a call carrying one is refused rather than half
    /// applied.
    pub unread: Vec<String>,
}

impl Call {
    /// The text of the field `name`, if present (surrounding whitespace kept: MyPay keeps it).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The field, or the error naming it.
    pub fn required(&self, name: &str) -> Result<&str, CallError> {
        match self.field(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(CallError::Field {
                operation: self.op.name(),
                field: name.to_string(),
                reason: "is required".into(),
            }),
        }
    }

    /// The entity the caller names: the body's `codIpaEnte`, else the header's.
    pub fn entity(&self) -> Option<&str> {
        self.field("codIpaEnte")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .or(self.header_ipa.as_deref())
    }

    /// A boolean field (`true`/`false`/`1`/`0`, as `xsd:boolean`); absent is `None`.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, CallError> {
        match self.field(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(CallError::Field {
                operation: self.op.name(),
                field: name.to_string(),
                reason: format!("{other:?} is not an xsd:boolean"),
            }),
        }
    }
}

/// Reads a request. `action` is the `SOAPAction` header's operation, used only to say which
/// operation a body that cannot be read was meant for.
pub fn parse_call(body: &[u8]) -> Result<Call, CallError> {
    let (root, header) = read_envelope(body).map_err(CallError::Envelope)?;
    let Some(op) = Operation::from_element(root.ns.as_deref(), &root.name) else {
        return Err(CallError::UnknownOperation(root.name));
    };
    let header_ipa = header.and_then(header_ipa);
    let mut fields = Vec::with_capacity(root.children.len());
    let mut cart = Vec::new();
    let mut secondaries = Vec::new();
    let mut unread = Vec::new();
    for child in root.children {
        if child.name == "listaDovuti" && op == Operation::InviaCarrelloDovuti {
            for item in child.children {
                cart.push(cart_item(op, item)?);
            }
        } else if child.name == "listaDovutiEntiSecondari"
            && matches!(
                op,
                Operation::ImportaDovuto | Operation::InviaCarrelloDovuti
            )
        {
            for item in child.children {
                let doc = item
                    .children
                    .iter()
                    .find(|c| c.name == "dovutiEntiSecondari")
                    .map(|c| c.text.trim().to_string())
                    .unwrap_or_default();
                if !doc.is_empty() {
                    secondaries.push(doc);
                }
            }
        } else if child.children.is_empty() {
            if fields.iter().any(|(n, _)| n == &child.name) {
                return Err(CallError::Field {
                    operation: op.name(),
                    field: child.name,
                    reason: "is given twice".into(),
                });
            }
            fields.push((child.name, child.text));
        } else if child.name == "identificativoUnivocoPersonaFG" {
            // The one structured field of the queries: kept as `tipo` and `codice`.
            for part in child.children {
                fields.push((part.name, part.text));
            }
        } else {
            unread.push(child.name);
        }
    }
    Ok(Call {
        op,
        header_ipa,
        fields,
        cart,
        secondaries,
        unread,
    })
}

fn cart_item(op: Operation, item: Node) -> Result<CartItem, CallError> {
    let text = |name: &str| {
        item.children
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.text.trim().to_string())
            .ok_or_else(|| CallError::Field {
                operation: op.name(),
                field: format!("listaDovuti/elementoListaDovuti/{name}"),
                reason: "is required".into(),
            })
    };
    Ok(CartItem {
        ipa_code: text("codIpaEnte")?,
        password: text("password")?,
        dovuti: text("dovuti")?,
    })
}

/// `codIpaEnte` of an `intestazionePPT` header, read leniently: the header is only identity.
fn header_ipa(header: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(header);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) if e.local_name().as_ref() == b"codIpaEnte" => {
                inside = true;
            }
            quick_xml::events::Event::Text(t) if inside => {
                let text = t.xml10_content().ok()?;
                let text = text.trim();
                return (!text.is_empty()).then(|| text.to_string());
            }
            quick_xml::events::Event::End(_) if inside => return None,
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// MyPay's `faultBean`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Like `PAA_ENTE_NON_VALIDO`.
    pub code: String,
    pub string: String,
    /// The entity's IPA code (MyPay's `id`), or what identifies the caller.
    pub id: String,
    pub description: Option<String>,
}

/// An answer, written element by element in the WSDL's order by its caller.
pub struct Answer {
    op: Operation,
    w: XmlText,
}

impl Answer {
    /// Starts the `<op>Risposta` element inside a SOAP 1.1 envelope.
    pub fn new(op: Operation) -> Self {
        let mut w = XmlText::with_capacity(1024);
        w.push_str(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><ppt:"#,
        );
        w.push_str(op.name());
        w.push_str(r#"Risposta xmlns:ppt=""#);
        w.push_str(op.namespace());
        w.push_str(r#"">"#);
        Self { op, w }
    }

    /// The answer of an error: the `fault` element, then `esito` `KO` where the operation has
    /// one, as MyPay answers.
    pub fn fault(op: Operation, fault: &Fault) -> String {
        let mut a = Self::new(op);
        a.w.open("fault");
        a.w.leaf("faultCode", &fault.code);
        a.w.leaf("faultString", &fault.string);
        a.w.leaf("id", &fault.id);
        if let Some(d) = &fault.description {
            a.w.leaf("description", d);
        }
        a.w.close("fault");
        match op {
            Operation::InviaDovuti
            | Operation::InviaCarrelloDovuti
            | Operation::VerificaAvviso
            | Operation::ImportaDovuto
            | Operation::RegistraPagamento => a.text("esito", "KO"),
            // Elements the WSDL requires even in an error answer: empty, as MyPay's JAXB writes.
            Operation::AutorizzaImportFlusso => {
                for name in [
                    "uploadUrl",
                    "authorizationToken",
                    "requestToken",
                    "importPath",
                ] {
                    a.text(name, "");
                }
            }
            Operation::ChiediStatoImportFlusso => a.text("stato", ""),
            Operation::PrenotaExportFlusso | Operation::PrenotaExportFlussoScaduti => {
                a.text("requestToken", "")
            }
            Operation::PrenotaExportFlussoIncrementaleConRicevuta => {
                a.text("requestToken", "");
                a.text("dateTo", &now());
            }
            Operation::ChiediStoricoPagamenti => a.text("dateTo", &now()),
            Operation::ChiediEsitoCarrelloDovuti => {
                // The WSDL requires one cart, each text at least one character.
                a.open("listaCarrelli");
                a.open("rispostaCarrello");
                a.text("esito", "KO");
                let id: String = fault.id.chars().take(35).collect();
                a.text("codIpaEnte", if id.is_empty() { "n/a" } else { &id });
                a.text("codIdentificativoUnivocoCarrello", "n/a");
                a.close("rispostaCarrello");
                a.close("listaCarrelli");
            }
            Operation::ChiediStatoExportFlusso => {
                a.text("stato", "");
                a.text("downloadUrl", "");
            }
            Operation::ChiediStatoExportFlussoScaduti => {
                for name in ["stato", "nomeFile", "downloadUrl", "pathFile"] {
                    a.text(name, "");
                }
            }
            Operation::ChiediFlussoSPC => {
                a.text("stato", "");
                a.text("downloadUrl", "");
            }
            _ => {}
        }
        a.finish()
    }

    /// A leaf of text (escaped).
    pub fn text(&mut self, name: &str, value: &str) {
        self.w.leaf(name, value);
    }

    /// An element holding others: `open`, leaves, `close`.
    pub fn open(&mut self, name: &str) {
        self.w.open(name);
    }

    pub fn close(&mut self, name: &str) {
        self.w.close(name);
    }

    /// Ends the element and the envelope.
    pub fn finish(mut self) -> String {
        self.w.push_str("</ppt:");
        self.w.push_str(self.op.name());
        self.w
            .push_str("Risposta></soapenv:Body></soapenv:Envelope>");
        self.w.into_string()
    }
}

/// Now, as an `xsd:dateTime` in Rome time with its offset.
fn now() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// A base64 field as the text it carries, or why it does not (not base64, not UTF-8).
pub fn base64_field(value: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    // Line breaks are allowed inside xsd:base64Binary.
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("is not base64: {e}"))
}

/// Bytes as the base64 text of an answer's field.
pub fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
