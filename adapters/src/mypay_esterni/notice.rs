//! MyPay4's verification of a notice at an entity system in pagoPA's new model
//! (`paExternalVerifyPaymentNotice` of `esterni-per-pa.wsdl`): what MyPay4's
//! `paVerifyPaymentNotice` asks an entity with `de_url_esterni_attiva` before answering the node.
//! The request repeats the node's (`idPA`, `idBrokerPA`, `idStation`, `qrCodeFiscalCode`,
//! `noticeNumber`); the answer is the verify's own fields (`amount`, `paymentDescription`,
//! `dueDate`…) or a `fault` MyPay hands to the node as it is. No header; children unqualified.

use super::{child_text, ReplyError, PPT_NS};
use crate::pagopa::xml::read_envelope;
use crate::xml_text::XmlText;
use snodo_core::Amount;

/// The operation: its request element (`…Req`) and `SOAPAction`.
pub const OPERATION: &str = "paExternalVerifyPaymentNotice";

/// A `paExternalVerifyPaymentNoticeReq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRequest {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    pub qr_fiscal_code: String,
    pub notice_number: String,
}

/// What the entity system answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeReply {
    Payable(NoticePayment),
    /// A `fault`: its code and text.
    Refused {
        code: String,
        string: String,
    },
}

/// The payable notice, as the verify tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticePayment {
    pub amount: Amount,
    /// `paymentDescription` (up to 35 characters, `stText35`).
    pub description: String,
    /// `detailDescription` (up to 140).
    pub detail: String,
    pub due_date: Option<String>,
    pub fiscal_code_pa: String,
    pub company_name: String,
    pub office_name: String,
}

impl NoticeRequest {
    pub fn envelope(&self) -> String {
        let mut w = XmlText::with_capacity(512);
        w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ppt=""#);
        w.push_str(PPT_NS);
        w.push_str(r#""><soapenv:Body><ppt:paExternalVerifyPaymentNoticeReq>"#);
        w.leaf("idPA", &self.id_pa);
        w.leaf("idBrokerPA", &self.id_broker_pa);
        w.leaf("idStation", &self.id_station);
        w.leaf("qrCodeFiscalCode", &self.qr_fiscal_code);
        w.leaf("noticeNumber", &self.notice_number);
        w.push_str("</ppt:paExternalVerifyPaymentNoticeReq></soapenv:Body></soapenv:Envelope>");
        w.into_string()
    }

    /// Reads a call (what an entity system's stand-in receives).
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let (root, _) = read_envelope(body).map_err(ReplyError::Envelope)?;
        if root.name != "paExternalVerifyPaymentNoticeReq" || root.ns.as_deref() != Some(PPT_NS) {
            return Err(ReplyError::Element(root.name));
        }
        let req = |name: &str| {
            child_text(&root, name).ok_or_else(|| ReplyError::Field(format!("{name} is required")))
        };
        Ok(Self {
            id_pa: req("idPA")?,
            id_broker_pa: req("idBrokerPA")?,
            id_station: req("idStation")?,
            qr_fiscal_code: req("qrCodeFiscalCode")?,
            notice_number: req("noticeNumber")?,
        })
    }
}

impl NoticeReply {
    pub fn envelope(&self) -> String {
        let mut w = XmlText::with_capacity(768);
        w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><ppt:paExternalVerifyPaymentNoticeRes xmlns:ppt=""#);
        w.push_str(PPT_NS);
        w.push_str(r#"">"#);
        match self {
            Self::Payable(p) => {
                w.leaf("paymentDescription", &p.description);
                w.leaf("fiscalCodePA", &p.fiscal_code_pa);
                w.leaf("companyName", &p.company_name);
                w.leaf("officeName", &p.office_name);
                w.raw("amount", p.amount);
                if let Some(d) = &p.due_date {
                    w.leaf("dueDate", d);
                }
                w.leaf("detailDescription", &p.detail);
                w.leaf("allCCP", "false");
            }
            Self::Refused { code, string } => {
                w.open("fault");
                w.leaf("faultCode", code);
                w.leaf("faultString", string);
                w.leaf("id", super::NOT_APPLICABLE);
                w.close("fault");
            }
        }
        w.push_str("</ppt:paExternalVerifyPaymentNoticeRes></soapenv:Body></soapenv:Envelope>");
        w.into_string()
    }

    /// Reads an entity system's answer, checking each value against the WSDL's types.
    pub fn parse(body: &[u8]) -> Result<Self, ReplyError> {
        let (root, _) = read_envelope(body).map_err(ReplyError::Envelope)?;
        if root.name != "paExternalVerifyPaymentNoticeRes" || root.ns.as_deref() != Some(PPT_NS) {
            return Err(ReplyError::Element(root.name));
        }
        let field = ReplyError::Field;
        if let Some(fault) = root.children.iter().find(|c| c.name == "fault") {
            let text = |name| child_text(fault, name).unwrap_or_default();
            return Ok(Self::Refused {
                code: text("faultCode"),
                string: text("faultString"),
            });
        }
        let req = |name: &str| {
            child_text(&root, name).ok_or_else(|| field(format!("{name} is required")))
        };
        let amount_text = req("amount")?;
        // stImporto: `\d+\.\d{2}`.
        let two_decimals = amount_text
            .split_once('.')
            .is_some_and(|(i, d)| !i.is_empty() && d.len() == 2);
        let amount = Amount::parse_decimal(&amount_text)
            .ok()
            .filter(|_| two_decimals)
            .ok_or_else(|| field(format!("amount {amount_text:?} is not an stImporto")))?;
        let due_date = child_text(&root, "dueDate");
        if let Some(d) = &due_date {
            if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                return Err(field(format!("dueDate {d:?} is not an stISODate")));
            }
        }
        let description = req("paymentDescription")?;
        let detail = child_text(&root, "detailDescription").unwrap_or_default();
        for (name, value, max) in [
            ("paymentDescription", &description, 35),
            ("detailDescription", &detail, 140),
        ] {
            if value.chars().count() > max {
                return Err(field(format!("{name} is longer than {max} characters")));
            }
        }
        Ok(Self::Payable(NoticePayment {
            amount,
            description,
            detail,
            due_date,
            fiscal_code_pa: child_text(&root, "fiscalCodePA").unwrap_or_default(),
            company_name: child_text(&root, "companyName").unwrap_or_default(),
            office_name: child_text(&root, "officeName").unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_replies_read_back_and_bad_values_are_refused() {
        let r = NoticeRequest {
            id_pa: "80007580279".into(),
            id_broker_pa: "80007580279".into(),
            id_station: "80007580279_01".into(),
            qr_fiscal_code: "80007580279".into(),
            notice_number: "303000000000000123".into(),
        };
        assert_eq!(NoticeRequest::parse(r.envelope().as_bytes()), Ok(r.clone()));
        let ok = NoticeReply::Payable(NoticePayment {
            amount: Amount::from_cents(4250),
            description: "ZTL annuale".into(),
            detail: "ZTL <annuale> & più".into(),
            due_date: Some("2027-01-31".into()),
            fiscal_code_pa: "80007580279".into(),
            company_name: "Regione".into(),
            office_name: "Mobilità".into(),
        });
        assert_eq!(NoticeReply::parse(ok.envelope().as_bytes()), Ok(ok.clone()));
        let ko = NoticeReply::Refused {
            code: "PAA_PAGAMENTO_SCADUTO".into(),
            string: "scaduto".into(),
        };
        assert_eq!(NoticeReply::parse(ko.envelope().as_bytes()), Ok(ko));
        for bad in [
            ok.envelope().replace("42.50", "42.5"),
            ok.envelope().replace("2027-01-31", "31/01/2027"),
            ok.envelope()
                .replace("<paymentDescription>ZTL annuale</paymentDescription>", ""),
        ] {
            assert!(
                matches!(
                    NoticeReply::parse(bad.as_bytes()),
                    Err(ReplyError::Field(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            NoticeReply::parse(r.envelope().as_bytes()),
            Err(ReplyError::Element(_))
        ));
    }
}
