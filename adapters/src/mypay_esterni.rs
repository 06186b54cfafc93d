//! MyPay's verification at an entity system (`esterni-per-pa.wsdl`, `paaSILVerificaEsterna`):
//! what an entity system built for MyPay answers when asked whether a notice of its own can be
//! paid. The hub asks it in `external` mode `mypay-soap` (docs/MYPAY.md).
//!
//! As MyPay sends it: a SOAP 1.1 call whose header `ppthead:intestazionePPT` names the
//! intermediary, its station, the entity's fiscal code (`identificativoDominio`), the IUV and the
//! payment context; the body `ppt:paaSILVerificaEsterna` names the PSP. The answer wraps an
//! `esitoSILVerificaEsterna` in an element of the same name as the response: `esito` `OK` with
//! `datiPagamentoPA` (amount, IBAN, causale), or a `fault` whose code MyPay hands to the node as
//! it is (`PAA_PAGAMENTO_SCONOSCIUTO`, `…_ANNULLATO`, `…_SCADUTO`, `…_DUPLICATO`).
//! Payload children are unqualified (the WSDL's schema has no `elementFormDefault`).

pub mod notice;

use crate::pagopa::xml::{read_envelope, Node};
use crate::pagopa::SoapError;
use crate::xml_text::XmlText;
use snodo_core::Amount;

/// Namespace of the payload elements.
pub const PPT_NS: &str = "http://www.regione.veneto.it/pagamenti/pa/";
/// Namespace of the header.
pub const PPTHEAD_NS: &str = "http://www.regione.veneto.it/pagamenti/pa/ppthead";
/// The operation, its request element and its `SOAPAction`.
pub const OPERATION: &str = "paaSILVerificaEsterna";
/// What the hub sends where the node's new model has no value (`codiceContestoPagamento`,
/// `identificativoPSP`: paVerifyPaymentNotice carries neither), as pagoPA's own "n/a".
pub const NOT_APPLICABLE: &str = "n/a";

/// The interface files, as published in MyPay4 (AGPL-3.0-or-later, `specs/SOURCES.md`).
pub mod specs {
    pub const WSDL: &str = include_str!("../specs/mypay/esterni-per-pa.wsdl");
    pub const XSD: &str = include_str!("../specs/mypay/PagInf_RP_Esito_6_2_0.xsd");
}

/// A `paaSILVerificaEsterna` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub intermediary: String,
    pub station: String,
    /// The entity's fiscal code.
    pub domain: String,
    pub iuv: String,
    pub ccp: String,
    pub psp: String,
}

/// What an entity system answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Payable(Payment),
    /// `esito` not `OK`: the fault's code (empty when there is none) and text.
    Refused {
        code: String,
        string: String,
    },
}

/// `datiPagamentoPA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub amount: Amount,
    pub iban: String,
    pub bic: Option<String>,
    pub causale: String,
    pub credentials: Option<String>,
}

/// An answer that is not one of the WSDL's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{0}")]
    Envelope(SoapError),
    #[error("the Body holds <{0}>, not paaSILVerificaEsternaRisposta")]
    Element(String),
    #[error("{0}")]
    Field(String),
}

impl Request {
    /// The SOAP envelope MyPay sends.
    pub fn envelope(&self) -> String {
        let mut w = XmlText::with_capacity(768);
        w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ppt=""#);
        w.push_str(PPT_NS);
        w.push_str(r#"" xmlns:ppthead=""#);
        w.push_str(PPTHEAD_NS);
        w.push_str(r#""><soapenv:Header><ppthead:intestazionePPT>"#);
        w.leaf("identificativoIntermediarioPA", &self.intermediary);
        w.leaf("identificativoStazioneIntermediarioPA", &self.station);
        w.leaf("identificativoDominio", &self.domain);
        w.leaf("identificativoUnivocoVersamento", &self.iuv);
        w.leaf("codiceContestoPagamento", &self.ccp);
        w.push_str(
            "</ppthead:intestazionePPT></soapenv:Header><soapenv:Body><ppt:paaSILVerificaEsterna>",
        );
        w.leaf("identificativoPSP", &self.psp);
        w.push_str("</ppt:paaSILVerificaEsterna></soapenv:Body></soapenv:Envelope>");
        w.into_string()
    }

    /// Reads a call (what an entity system's stand-in receives).
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let (root, header) = read_envelope(body).map_err(ReplyError::Envelope)?;
        if root.name != OPERATION || root.ns.as_deref() != Some(PPT_NS) {
            return Err(ReplyError::Element(root.name));
        }
        let header = header.ok_or_else(|| ReplyError::Field("no intestazionePPT header".into()))?;
        let h = |name: &str| {
            header_field(header, name)
                .ok_or_else(|| ReplyError::Field(format!("intestazionePPT/{name} is required")))
        };
        Ok(Self {
            intermediary: h("identificativoIntermediarioPA")?,
            station: h("identificativoStazioneIntermediarioPA")?,
            domain: h("identificativoDominio")?,
            iuv: h("identificativoUnivocoVersamento")?,
            ccp: h("codiceContestoPagamento")?,
            psp: child_text(&root, "identificativoPSP")
                .ok_or_else(|| ReplyError::Field("identificativoPSP is required".into()))?,
        })
    }
}

impl Reply {
    /// The answer's envelope (what an entity system sends back).
    pub fn envelope(&self) -> String {
        let mut w = XmlText::with_capacity(768);
        w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><ppt:paaSILVerificaEsternaRisposta xmlns:ppt=""#);
        w.push_str(PPT_NS);
        w.push_str(r#""><paaSILVerificaEsternaRisposta>"#);
        match self {
            Self::Payable(p) => {
                w.leaf("esito", "OK");
                w.open("datiPagamentoPA");
                w.raw("importoSingoloVersamento", p.amount);
                w.leaf("ibanAccredito", &p.iban);
                if let Some(bic) = &p.bic {
                    w.leaf("bicAccredito", bic);
                }
                if let Some(c) = &p.credentials {
                    w.leaf("credenzialiPagatore", c);
                }
                w.leaf("causaleVersamento", &p.causale);
                w.close("datiPagamentoPA");
            }
            Self::Refused { code, string } => {
                w.open("fault");
                w.leaf("faultCode", code);
                w.leaf("faultString", string);
                w.leaf("id", NOT_APPLICABLE);
                w.close("fault");
                w.leaf("esito", "KO");
            }
        }
        w.push_str("</paaSILVerificaEsternaRisposta></ppt:paaSILVerificaEsternaRisposta></soapenv:Body></soapenv:Envelope>");
        w.into_string()
    }

    /// Reads an entity system's answer, checking each value against the WSDL's types.
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let (root, _) = read_envelope(body).map_err(ReplyError::Envelope)?;
        let wrapper = "paaSILVerificaEsternaRisposta";
        if root.name != wrapper || root.ns.as_deref() != Some(PPT_NS) {
            return Err(ReplyError::Element(root.name));
        }
        let esito = root
            .children
            .iter()
            .find(|c| c.name == wrapper)
            .ok_or_else(|| ReplyError::Field(format!("{wrapper}/{wrapper} is required")))?;
        let field = |e: String| ReplyError::Field(e);
        if child_text(esito, "esito").as_deref() != Some("OK") {
            let fault = esito.children.iter().find(|c| c.name == "fault");
            let text = |name| fault.and_then(|f| child_text(f, name)).unwrap_or_default();
            return Ok(Self::Refused {
                code: text("faultCode"),
                string: text("faultString"),
            });
        }
        let dati = esito
            .children
            .iter()
            .find(|c| c.name == "datiPagamentoPA")
            .ok_or_else(|| field("esito OK without datiPagamentoPA".into()))?;
        let req = |name: &str| {
            child_text(dati, name)
                .ok_or_else(|| field(format!("datiPagamentoPA/{name} is required")))
        };
        let amount_text = req("importoSingoloVersamento")?;
        // stImporto: `\d+\.\d{2}`.
        let two_decimals = amount_text
            .split_once('.')
            .is_some_and(|(i, d)| !i.is_empty() && d.len() == 2);
        let amount = Amount::parse_decimal(&amount_text)
            .ok()
            .filter(|_| two_decimals)
            .ok_or_else(|| {
                field(format!(
                    "importoSingoloVersamento {amount_text:?} is not an stImporto"
                ))
            })?;
        let causale = req("causaleVersamento")?;
        if causale.chars().count() > 140 {
            return Err(field(
                "causaleVersamento is longer than 140 characters".into(),
            ));
        }
        Ok(Self::Payable(Payment {
            amount,
            iban: req("ibanAccredito")?,
            bic: child_text(dati, "bicAccredito"),
            causale,
            credentials: child_text(dati, "credenzialiPagatore"),
        }))
    }
}

/// A child's text, trimmed; `None` when absent or empty.
fn child_text(node: &Node, name: &str) -> Option<String> {
    node.children
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.text.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A leaf of the SOAP header, by local name (the header only identifies the call).
fn header_field(header: &[u8], name: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(header);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == name.as_bytes() => inside = true,
            Event::Text(t) if inside => {
                let text = t.xml10_content().ok()?;
                let text = text.trim();
                return (!text.is_empty()).then(|| text.to_string());
            }
            Event::End(_) if inside => return None,
            Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            intermediary: "80007580279".into(),
            station: "80007580279_01".into(),
            domain: "80007580279".into(),
            iuv: "03000000000000123".into(),
            ccp: NOT_APPLICABLE.into(),
            psp: NOT_APPLICABLE.into(),
        }
    }

    #[test]
    fn a_request_reads_back_as_sent() {
        let r = request();
        assert_eq!(Request::parse(r.envelope().as_bytes()), Ok(r));
    }

    #[test]
    fn replies_read_back_and_bad_values_are_refused() {
        let ok = Reply::Payable(Payment {
            amount: Amount::from_cents(4250),
            iban: "IT23Z0622512100100000300299".into(),
            bic: None,
            causale: "ZTL <annuale> & più".into(),
            credentials: None,
        });
        assert_eq!(Reply::parse(ok.envelope().as_bytes()), Ok(ok.clone()));
        let ko = Reply::Refused {
            code: "PAA_PAGAMENTO_SCONOSCIUTO".into(),
            string: "sconosciuto".into(),
        };
        assert_eq!(Reply::parse(ko.envelope().as_bytes()), Ok(ko));
        let bad = ok.envelope().replace("42.50", "42.5");
        assert!(matches!(
            Reply::parse(bad.as_bytes()),
            Err(ReplyError::Field(_))
        ));
        let no_data = ok.envelope().replace(
            "<ibanAccredito>IT23Z0622512100100000300299</ibanAccredito>",
            "",
        );
        assert!(Reply::parse(no_data.as_bytes()).is_err());
        assert!(matches!(
            Reply::parse(request().envelope().as_bytes()),
            Err(ReplyError::Element(_))
        ));
    }
}
