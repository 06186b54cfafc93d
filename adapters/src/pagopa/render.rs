//! From the structs to SOAP text, written straight into one `String` in XSD order.
//!
//! `None` and empty `metadata` are left out; everything else is written as given (the renderer
//! does not validate: parse what you render in tests).

use std::ops::{Deref, DerefMut};

use super::model::*;
use super::{Request, Response};
use crate::xml_text::XmlText;

const ENVELOPE_START: &str = concat!(
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
    r#"xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd">"#,
    "<soapenv:Header/><soapenv:Body><paf:"
);
const ENVELOPE_END: &str = "</soapenv:Body></soapenv:Envelope>";

/// Who a SOAP 1.1 Fault blames: the caller's message, or the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapFaultCode {
    Client,
    Server,
}

/// A SOAP 1.1 Fault envelope: for a request whose operation could not even be read (`Client`),
/// or a handler that failed (`Server`); pagoPA's own faults travel inside the answers instead.
pub fn render_soap_fault(code: SoapFaultCode, reason: &str) -> String {
    let mut x = XmlText::with_capacity(256 + reason.len());
    x.push_str(r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#);
    x.push_str("<soapenv:Body><soapenv:Fault>");
    x.raw(
        "faultcode",
        match code {
            SoapFaultCode::Client => "soapenv:Client",
            SoapFaultCode::Server => "soapenv:Server",
        },
    );
    x.leaf("faultstring", reason);
    x.push_str("</soapenv:Fault></soapenv:Body></soapenv:Envelope>");
    x.into_string()
}

/// Renders the SOAP envelope of a request (for the node simulator).
pub fn render_request(req: &Request) -> String {
    let op = req.operation();
    let mut w = W::envelope(op.request_element(), 2048);
    match req {
        Request::Verify(r) => {
            w.head(&r.id_pa, &r.id_broker_pa, &r.id_station);
            w.qr_code(&r.qr_code);
        }
        Request::GetPayment(r) | Request::GetPaymentV2(r) => {
            w.head(&r.id_pa, &r.id_broker_pa, &r.id_station);
            w.qr_code(&r.qr_code);
            w.opt("amount", &r.amount);
            w.opt("paymentNote", &r.payment_note);
            if let Some(t) = r.transfer_type {
                w.leaf("transferType", t.as_str());
            }
            w.opt("dueDate", &r.due_date);
        }
        Request::SendRt(r) => {
            w.head(&r.id_pa, &r.id_broker_pa, &r.id_station);
            w.receipt(&r.receipt);
        }
        Request::SendRtV2(r) => {
            w.head(&r.id_pa, &r.id_broker_pa, &r.id_station);
            w.receipt_v2(&r.receipt);
        }
        Request::Demand(r) => {
            w.head(&r.id_pa, &r.id_broker_pa, &r.id_station);
            w.leaf("idServizio", &r.id_servizio);
            w.leaf("idSoggettoServizio", &r.id_soggetto_servizio);
            w.leaf("datiSpecificiServizioRequest", &r.dati_specifici_servizio);
        }
    }
    w.finish(op.request_element())
}

/// Renders the SOAP envelope of a response (for the hub).
pub fn render_response(resp: &Response) -> String {
    let op = resp.operation();
    let mut w = W::envelope(op.response_element(), 1024);
    match resp {
        Response::Verify(r) => {
            w.response_head(r.outcome, &r.fault);
            w.payment_list(&r.payment_option);
            w.opt("paymentDescription", &r.payment_description);
            w.opt("fiscalCodePA", &r.fiscal_code_pa);
            w.opt("companyName", &r.company_name);
            w.opt("officeName", &r.office_name);
        }
        Response::GetPayment(r) => {
            w.response_head(r.outcome, &r.fault);
            if let Some(d) = &r.data {
                w.open("data");
                w.leaf("creditorReferenceId", &d.creditor_reference_id);
                w.leaf("paymentAmount", &d.payment_amount);
                w.leaf("dueDate", &d.due_date);
                w.opt("retentionDate", &d.retention_date);
                w.opt_bool("lastPayment", d.last_payment);
                w.leaf("description", &d.description);
                w.opt("companyName", &d.company_name);
                w.opt("officeName", &d.office_name);
                w.subject("debtor", &d.debtor);
                w.open("transferList");
                for t in &d.transfer_list {
                    w.transfer(t);
                }
                w.close("transferList");
                w.metadata(&d.metadata);
                w.close("data");
            }
        }
        Response::GetPaymentV2(r) => {
            w.response_head(r.outcome, &r.fault);
            if let Some(d) = &r.data {
                w.open("data");
                w.leaf("creditorReferenceId", &d.creditor_reference_id);
                w.leaf("paymentAmount", &d.payment_amount);
                w.leaf("dueDate", &d.due_date);
                w.opt("retentionDate", &d.retention_date);
                w.opt_bool("lastPayment", d.last_payment);
                w.leaf("description", &d.description);
                w.leaf("companyName", &d.company_name);
                w.opt("officeName", &d.office_name);
                w.subject("debtor", &d.debtor);
                w.open("transferList");
                for t in &d.transfer_list {
                    w.transfer_v2(t);
                }
                w.close("transferList");
                w.metadata(&d.metadata);
                w.close("data");
            }
        }
        Response::SendRt(r) | Response::SendRtV2(r) => w.response_head(r.outcome, &r.fault),
        Response::Demand(r) => {
            w.response_head(r.outcome, &r.fault);
            if let Some(qr) = &r.qr_code {
                w.qr_code(qr);
            }
            w.payment_list(&r.payment_option);
            w.opt("paymentDescription", &r.payment_description);
            w.opt("fiscalCodePA", &r.fiscal_code_pa);
            w.opt("companyName", &r.company_name);
            w.opt("officeName", &r.office_name);
        }
    }
    w.finish(op.response_element())
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// The output being written: the envelope around an [`XmlText`].
struct W(XmlText);

impl Deref for W {
    type Target = XmlText;

    fn deref(&self) -> &XmlText {
        &self.0
    }
}

impl DerefMut for W {
    fn deref_mut(&mut self) -> &mut XmlText {
        &mut self.0
    }
}

impl W {
    fn envelope(root: &str, capacity: usize) -> W {
        let mut x = XmlText::with_capacity(capacity);
        x.push_str(ENVELOPE_START);
        x.push_str(root);
        x.push_str(">");
        W(x)
    }

    fn finish(mut self, root: &str) -> String {
        self.push_str("</paf:");
        self.push_str(root);
        self.push_str(">");
        self.push_str(ENVELOPE_END);
        self.0.into_string()
    }

    fn opt(&mut self, name: &str, text: &Option<String>) {
        if let Some(t) = text {
            self.leaf(name, t);
        }
    }

    fn opt_bool(&mut self, name: &str, b: Option<bool>) {
        if let Some(b) = b {
            self.leaf(name, bool_str(b));
        }
    }

    fn id_transfer(&mut self, id: u8) {
        self.raw("idTransfer", id);
    }

    fn head(&mut self, id_pa: &str, id_broker_pa: &str, id_station: &str) {
        self.leaf("idPA", id_pa);
        self.leaf("idBrokerPA", id_broker_pa);
        self.leaf("idStation", id_station);
    }

    fn qr_code(&mut self, qr: &QrCode) {
        self.open("qrCode");
        self.leaf("fiscalCode", &qr.fiscal_code);
        self.leaf("noticeNumber", &qr.notice_number);
        self.close("qrCode");
    }

    fn payment_list(&mut self, option: &Option<PaymentOption>) {
        let Some(o) = option else { return };
        self.open("paymentList");
        self.open("paymentOptionDescription");
        self.leaf("amount", &o.amount);
        self.leaf("options", o.options.as_str());
        self.opt("dueDate", &o.due_date);
        self.opt("detailDescription", &o.detail_description);
        self.leaf("allCCP", bool_str(o.all_ccp));
        self.close("paymentOptionDescription");
        self.close("paymentList");
    }

    fn response_head(&mut self, outcome: Outcome, fault: &Option<Fault>) {
        self.leaf("outcome", outcome.as_str());
        if let Some(f) = fault {
            self.open("fault");
            self.leaf("faultCode", &f.fault_code);
            self.leaf("faultString", &f.fault_string);
            self.leaf("id", &f.id);
            self.opt("description", &f.description);
            if let Some(serial) = f.serial {
                self.raw("serial", serial);
            }
            self.opt("originalFaultCode", &f.original_fault_code);
            self.opt("originalFaultString", &f.original_fault_string);
            self.opt("originalDescription", &f.original_description);
            self.close("fault");
        }
    }

    fn metadata(&mut self, entries: &[MapEntry]) {
        if entries.is_empty() {
            return;
        }
        self.open("metadata");
        for e in entries {
            self.open("mapEntry");
            self.leaf("key", &e.key);
            self.leaf("value", &e.value);
            self.close("mapEntry");
        }
        self.close("metadata");
    }

    fn subject(&mut self, name: &str, s: &Subject) {
        self.open(name);
        self.open("uniqueIdentifier");
        self.leaf(
            "entityUniqueIdentifierType",
            s.unique_identifier.kind.as_str(),
        );
        self.leaf("entityUniqueIdentifierValue", &s.unique_identifier.value);
        self.close("uniqueIdentifier");
        self.leaf("fullName", &s.full_name);
        self.opt("streetName", &s.street_name);
        self.opt("civicNumber", &s.civic_number);
        self.opt("postalCode", &s.postal_code);
        self.opt("city", &s.city);
        self.opt("stateProvinceRegion", &s.state_province_region);
        self.opt("country", &s.country);
        self.opt("e-mail", &s.email);
        self.close(name);
    }

    fn transfer(&mut self, t: &Transfer) {
        self.open("transfer");
        self.id_transfer(t.id_transfer);
        self.leaf("transferAmount", &t.transfer_amount);
        self.leaf("fiscalCodePA", &t.fiscal_code_pa);
        self.leaf("IBAN", &t.iban);
        self.leaf("remittanceInformation", &t.remittance_information);
        self.leaf("transferCategory", &t.transfer_category);
        self.metadata(&t.metadata);
        self.close("transfer");
    }

    fn transfer_v2(&mut self, t: &TransferV2) {
        self.open("transfer");
        self.id_transfer(t.id_transfer);
        self.leaf("transferAmount", &t.transfer_amount);
        self.leaf("fiscalCodePA", &t.fiscal_code_pa);
        self.opt("companyName", &t.company_name);
        match &t.destination {
            Destination::Iban(iban) => self.leaf("IBAN", iban),
            Destination::MarcaDaBollo(m) => {
                self.open("richiestaMarcaDaBollo");
                self.leaf("hashDocumento", &m.hash_documento);
                self.leaf("tipoBollo", &m.tipo_bollo);
                self.leaf("provinciaResidenza", &m.provincia_residenza);
                self.close("richiestaMarcaDaBollo");
            }
        }
        self.leaf("remittanceInformation", &t.remittance_information);
        self.leaf("transferCategory", &t.transfer_category);
        self.metadata(&t.metadata);
        self.close("transfer");
    }

    fn receipt_transfer_v2(&mut self, t: &ReceiptTransferV2) {
        self.open("transfer");
        self.id_transfer(t.id_transfer);
        self.leaf("transferAmount", &t.transfer_amount);
        self.leaf("fiscalCodePA", &t.fiscal_code_pa);
        self.opt("companyName", &t.company_name);
        match &t.destination {
            ReceiptDestination::Iban(iban) => self.leaf("IBAN", iban),
            ReceiptDestination::MbdAttachment(b64) => self.leaf("MBDAttachment", b64),
        }
        self.leaf("remittanceInformation", &t.remittance_information);
        self.leaf("transferCategory", &t.transfer_category);
        self.metadata(&t.metadata);
        self.close("transfer");
    }

    fn receipt(&mut self, r: &Receipt) {
        self.open("receipt");
        self.receipt_top(ReceiptTop {
            receipt_id: &r.receipt_id,
            notice_number: &r.notice_number,
            fiscal_code: &r.fiscal_code,
            outcome: r.outcome,
            creditor_reference_id: &r.creditor_reference_id,
            payment_amount: &r.payment_amount,
            description: &r.description,
            company_name: &r.company_name,
            office_name: &r.office_name,
            debtor: &r.debtor,
        });
        self.open("transferList");
        for t in &r.transfer_list {
            self.transfer(t);
        }
        self.close("transferList");
        self.receipt_psp(ReceiptPsp {
            id_psp: &r.id_psp,
            psp_fiscal_code: &r.psp_fiscal_code,
            psp_partita_iva: &r.psp_partita_iva,
            psp_company_name: &r.psp_company_name,
            id_channel: &r.id_channel,
            channel_description: &r.channel_description,
        });
        if let Some(p) = &r.payer {
            self.subject("payer", p);
        }
        self.opt("paymentMethod", &r.payment_method);
        self.opt("fee", &r.fee);
        self.opt("paymentDateTime", &r.payment_date_time);
        self.opt("applicationDate", &r.application_date);
        self.opt("transferDate", &r.transfer_date);
        self.metadata(&r.metadata);
        self.opt_bool("standIn", r.stand_in);
        self.close("receipt");
    }

    fn receipt_v2(&mut self, r: &ReceiptV2) {
        self.open("receipt");
        self.receipt_top(ReceiptTop {
            receipt_id: &r.receipt_id,
            notice_number: &r.notice_number,
            fiscal_code: &r.fiscal_code,
            outcome: r.outcome,
            creditor_reference_id: &r.creditor_reference_id,
            payment_amount: &r.payment_amount,
            description: &r.description,
            company_name: &r.company_name,
            office_name: &r.office_name,
            debtor: &r.debtor,
        });
        self.open("transferList");
        for t in &r.transfer_list {
            self.receipt_transfer_v2(t);
        }
        self.close("transferList");
        self.receipt_psp(ReceiptPsp {
            id_psp: &r.id_psp,
            psp_fiscal_code: &r.psp_fiscal_code,
            psp_partita_iva: &r.psp_partita_iva,
            psp_company_name: &r.psp_company_name,
            id_channel: &r.id_channel,
            channel_description: &r.channel_description,
        });
        if let Some(p) = &r.payer {
            self.subject("payer", p);
        }
        self.opt("paymentMethod", &r.payment_method);
        self.opt("paymentNote", &r.payment_note);
        self.opt("fee", &r.fee);
        self.opt("primaryCiIncurredFee", &r.primary_ci_incurred_fee);
        self.opt("idBundle", &r.id_bundle);
        self.opt("idCiBundle", &r.id_ci_bundle);
        self.opt("paymentDateTime", &r.payment_date_time);
        self.opt("applicationDate", &r.application_date);
        self.opt("transferDate", &r.transfer_date);
        self.metadata(&r.metadata);
        self.opt_bool("standIn", r.stand_in);
        self.close("receipt");
    }

    fn receipt_top(&mut self, r: ReceiptTop<'_>) {
        self.leaf("receiptId", r.receipt_id);
        self.leaf("noticeNumber", r.notice_number);
        self.leaf("fiscalCode", r.fiscal_code);
        self.leaf("outcome", r.outcome.as_str());
        self.leaf("creditorReferenceId", r.creditor_reference_id);
        self.leaf("paymentAmount", r.payment_amount);
        self.leaf("description", r.description);
        self.leaf("companyName", r.company_name);
        self.opt("officeName", r.office_name);
        self.subject("debtor", r.debtor);
    }

    fn receipt_psp(&mut self, r: ReceiptPsp<'_>) {
        self.leaf("idPSP", r.id_psp);
        self.opt("pspFiscalCode", r.psp_fiscal_code);
        self.opt("pspPartitaIVA", r.psp_partita_iva);
        self.leaf("PSPCompanyName", r.psp_company_name);
        self.leaf("idChannel", r.id_channel);
        self.leaf("channelDescription", r.channel_description);
    }
}

/// The head of a receipt, common to V1 and V2.
struct ReceiptTop<'a> {
    receipt_id: &'a str,
    notice_number: &'a str,
    fiscal_code: &'a str,
    outcome: Outcome,
    creditor_reference_id: &'a str,
    payment_amount: &'a str,
    description: &'a str,
    company_name: &'a str,
    office_name: &'a Option<String>,
    debtor: &'a Subject,
}

/// The PSP block of a receipt, common to V1 and V2.
struct ReceiptPsp<'a> {
    id_psp: &'a str,
    psp_fiscal_code: &'a Option<String>,
    psp_partita_iva: &'a Option<String>,
    psp_company_name: &'a str,
    id_channel: &'a str,
    channel_description: &'a str,
}
