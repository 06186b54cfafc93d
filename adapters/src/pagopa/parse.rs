//! From the payload tree to the structs, checking the XSD on the way.
//!
//! Each complex type is read as a sequence: children are taken in XSD order, so a missing,
//! repeated, misplaced or unknown element is reported with its path. The path is built only
//! when an error is, from a chain of borrowed [`Path`] links.

use std::fmt::Write as _;

use super::model::*;
use super::types::{self, Check};
use super::xml::{is_ws, read_payload, Node};
use super::{Operation, Request, Response, SoapError, PAF_NS, SOAP_ENV_NS};

type R<T> = Result<T, SoapError>;

/// Parses a SOAP request from the node into a [`Request`].
pub fn parse_request(body: &[u8]) -> Result<Request, SoapError> {
    let root = read_payload(body)?;
    let Some(op) = Operation::from_request_element(&root.name) else {
        return Err(SoapError::UnknownOperation(root.name.clone()));
    };
    let path = Path::root(&root.name, op);
    let el = El::root(&root, &path)?;
    Ok(match op {
        Operation::VerifyPaymentNotice => Request::Verify(verify_req(el)?),
        Operation::GetPayment => Request::GetPayment(get_payment_req(el)?),
        Operation::GetPaymentV2 => Request::GetPaymentV2(get_payment_req(el)?),
        Operation::SendRt => Request::SendRt(send_rt_req(el)?),
        Operation::SendRtV2 => Request::SendRtV2(send_rt_v2_req(el)?),
        Operation::DemandPaymentNotice => Request::Demand(demand_req(el)?),
    })
}

/// The operation of a request that [`parse_request`] refused for bytes that are not UTF-8, read
/// with those bytes replaced: so such a request is answered with its own KO response
/// (`PAA_SINTASSI_XSD`) rather than a bare SOAP fault. `None` for anything else it refused.
pub fn request_operation(body: &[u8]) -> Option<Operation> {
    if std::str::from_utf8(body).is_ok() {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let root = read_payload(text.as_bytes()).ok()?;
    if root.ns.as_deref() != Some(PAF_NS) {
        return None;
    }
    Operation::from_request_element(&root.name)
}

/// Parses a SOAP response of the broker into a [`Response`] (for the node simulator).
pub fn parse_response(body: &[u8]) -> Result<Response, SoapError> {
    let root = read_payload(body)?;
    if root.name == "Fault" && root.ns.as_deref() == Some(SOAP_ENV_NS) {
        return Err(soap_fault(&root));
    }
    let Some(op) = Operation::from_response_element(&root.name) else {
        return Err(SoapError::UnknownOperation(root.name.clone()));
    };
    let path = Path::root(&root.name, op);
    let el = El::root(&root, &path)?;
    Ok(match op {
        Operation::VerifyPaymentNotice => Response::Verify(verify_res(el)?),
        Operation::GetPayment => Response::GetPayment(get_payment_res(el)?),
        Operation::GetPaymentV2 => Response::GetPaymentV2(get_payment_v2_res(el)?),
        Operation::SendRt => Response::SendRt(send_rt_res(el)?),
        Operation::SendRtV2 => Response::SendRtV2(send_rt_res(el)?),
        Operation::DemandPaymentNotice => Response::Demand(demand_res(el)?),
    })
}

/// A SOAP 1.1 Fault: `faultcode` and `faultstring`, read leniently since it is only reported.
fn soap_fault(root: &Node) -> SoapError {
    let child = |name: &str| {
        root.children
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.text.trim().to_owned())
            .unwrap_or_default()
    };
    SoapError::SoapFault {
        fault_code: child("faultcode"),
        fault_string: child("faultstring"),
    }
}

// ---------------------------------------------------------------------------------------------
// Walking the tree
// ---------------------------------------------------------------------------------------------

/// One step of an element path; `index` is 1-based for repeated elements, 0 otherwise.
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'a str,
    index: usize,
    op: Operation,
}

impl<'a> Path<'a> {
    fn root(name: &'a str, op: Operation) -> Self {
        Path {
            parent: None,
            name,
            index: 0,
            op,
        }
    }

    fn child(&'a self, name: &'a str, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            name,
            index,
            op: self.op,
        }
    }

    fn write(&self, out: &mut String) {
        if let Some(p) = self.parent {
            p.write(out);
            out.push('/');
        }
        out.push_str(self.name);
        if self.index > 0 {
            let _ = write!(out, "[{}]", self.index);
        }
    }

    fn err(&self, reason: impl Into<String>) -> SoapError {
        let mut path = String::with_capacity(64);
        self.write(&mut path);
        SoapError::Invalid {
            operation: self.op,
            path,
            reason: reason.into(),
        }
    }
}

/// An element and where it is.
#[derive(Clone, Copy)]
struct El<'a> {
    node: &'a Node,
    path: &'a Path<'a>,
}

impl<'a> El<'a> {
    /// The payload root: it must be in the paForNode namespace.
    fn root(node: &'a Node, path: &'a Path<'a>) -> R<El<'a>> {
        match node.ns.as_deref() {
            Some(PAF_NS) => Ok(El { node, path }),
            other => Err(path.err(format!(
                "must be in namespace {PAF_NS}, found {}",
                other.map_or_else(|| "no namespace".to_owned(), |ns| ns.to_owned())
            ))),
        }
    }

    /// Content of a simple-type element.
    fn text(self) -> R<&'a str> {
        match self.node.children.first() {
            Some(c) => Err(self
                .path
                .err(format!("unexpected child element <{}>", c.name))),
            None => Ok(&self.node.text),
        }
    }

    /// Children of a complex-type element, which must hold no text.
    fn seq(self) -> R<Seq<'a>> {
        if !is_ws(&self.node.text) {
            return Err(self.path.err(format!(
                "unexpected text {}",
                types::quote(self.node.text.trim())
            )));
        }
        Ok(Seq {
            node: self.node,
            path: self.path,
            pos: 0,
        })
    }

    fn check<T>(self, f: impl FnOnce(&'a str) -> Check<T>) -> R<T> {
        let s = self.text()?;
        f(s).map_err(|reason| self.path.err(reason))
    }
}

/// The children of an element, consumed in XSD order.
struct Seq<'a> {
    node: &'a Node,
    path: &'a Path<'a>,
    pos: usize,
}

impl<'a> Seq<'a> {
    fn peek(&self) -> Option<&'a Node> {
        self.node.children.get(self.pos)
    }

    /// Takes the next child if it is `name`; it must be unqualified.
    fn take(&mut self, name: &str) -> R<Option<&'a Node>> {
        match self.peek() {
            Some(n) if n.name == name => {
                if let Some(ns) = &n.ns {
                    return Err(self.path.child(name, 0).err(format!(
                        "must have no namespace (the XSD's elements are unqualified), found {ns}"
                    )));
                }
                self.pos += 1;
                Ok(Some(n))
            }
            _ => Ok(None),
        }
    }

    fn req<T>(&mut self, name: &'static str, f: impl FnOnce(El<'_>) -> R<T>) -> R<T> {
        match self.take(name)? {
            Some(node) => f(El {
                node,
                path: &self.path.child(name, 0),
            }),
            None => Err(self.missing(name)),
        }
    }

    fn opt<T>(&mut self, name: &'static str, f: impl FnOnce(El<'_>) -> R<T>) -> R<Option<T>> {
        match self.take(name)? {
            Some(node) => f(El {
                node,
                path: &self.path.child(name, 0),
            })
            .map(Some),
            None => Ok(None),
        }
    }

    /// `min` to `max` occurrences of `name`, paths indexed from 1.
    fn many<T>(
        &mut self,
        name: &'static str,
        min: usize,
        max: usize,
        mut f: impl FnMut(El<'_>) -> R<T>,
    ) -> R<Vec<T>> {
        let mut out = Vec::new();
        while let Some(node) = self.take(name)? {
            let path = self.path.child(name, out.len() + 1);
            if out.len() == max {
                return Err(path.err(format!("at most {max} allowed")));
            }
            out.push(f(El { node, path: &path })?);
        }
        if out.len() < min {
            return Err(self.missing(name));
        }
        Ok(out)
    }

    /// The error for `name` not being next.
    fn missing(&self, name: &str) -> SoapError {
        let children = &self.node.children;
        let Some(cur) = self.peek() else {
            return self.path.child(name, 0).err("missing");
        };
        if self.pos > 0 && children[self.pos - 1].name == cur.name {
            return self.path.child(&cur.name, 0).err("repeated");
        }
        if children[self.pos..].iter().any(|c| c.name == name) {
            return self
                .path
                .child(&cur.name, 0)
                .err(format!("unexpected element, expected <{name}>"));
        }
        self.path
            .child(name, 0)
            .err(format!("missing (found <{}> instead)", cur.name))
    }

    /// No children may be left.
    fn end(self) -> R<()> {
        let Some(cur) = self.peek() else {
            return Ok(());
        };
        let repeated = self.pos > 0 && self.node.children[self.pos - 1].name == cur.name;
        let p = self.path.child(&cur.name, 0);
        Err(if repeated {
            p.err("repeated")
        } else if self.node.children[..self.pos]
            .iter()
            .any(|c| c.name == cur.name)
        {
            p.err("repeated or out of order")
        } else {
            p.err("unexpected element")
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Simple types
// ---------------------------------------------------------------------------------------------

fn text_of(el: El<'_>, min: usize, max: usize) -> R<String> {
    el.check(|s| types::length(s, min, max).map(|()| s.to_owned()))
}

fn t16(el: El<'_>) -> R<String> {
    text_of(el, 1, 16)
}
fn t20(el: El<'_>) -> R<String> {
    text_of(el, 1, 20)
}
fn t35(el: El<'_>) -> R<String> {
    text_of(el, 1, 35)
}
fn t70(el: El<'_>) -> R<String> {
    text_of(el, 1, 70)
}
fn t140(el: El<'_>) -> R<String> {
    text_of(el, 1, 140)
}
fn t210(el: El<'_>) -> R<String> {
    text_of(el, 1, 210)
}
/// `stIBAN`: only a length.
fn iban(el: El<'_>) -> R<String> {
    text_of(el, 1, 35)
}
/// `xsd:string`: anything.
fn string(el: El<'_>) -> R<String> {
    el.text().map(str::to_owned)
}
fn fiscal_code_pa(el: El<'_>) -> R<String> {
    el.check(|s| types::digits(s, 11).map(|()| s.to_owned()))
}
fn notice_number(el: El<'_>) -> R<String> {
    el.check(|s| types::digits(s, 18).map(|()| s.to_owned()))
}
/// `stAmount`.
fn amount(el: El<'_>) -> R<String> {
    el.check(|s| types::amount(s, false).map(str::to_owned))
}
/// `stAmountNotZero`.
fn amount_nz(el: El<'_>) -> R<String> {
    el.check(|s| types::amount(s, true).map(str::to_owned))
}
fn date(el: El<'_>) -> R<String> {
    el.check(|s| types::date(s).map(str::to_owned))
}
fn date_time(el: El<'_>) -> R<String> {
    el.check(|s| types::date_time(s).map(str::to_owned))
}
fn boolean(el: El<'_>) -> R<bool> {
    el.check(types::boolean)
}
fn int(el: El<'_>) -> R<i32> {
    el.check(types::int)
}
fn id_transfer(el: El<'_>) -> R<u8> {
    el.check(types::id_transfer)
}
fn upper2(el: El<'_>) -> R<String> {
    el.check(|s| types::upper2(s).map(|()| s.to_owned()))
}
fn email(el: El<'_>) -> R<String> {
    el.check(|s| types::email(s).map(|()| s.to_owned()))
}

fn enumeration<T: Copy>(el: El<'_>, values: &[(&str, T)]) -> R<T> {
    el.check(|s| {
        values
            .iter()
            .find(|(v, _)| *v == s)
            .map(|&(_, t)| t)
            .ok_or_else(|| {
                let allowed: Vec<&str> = values.iter().map(|(v, _)| *v).collect();
                format!(
                    "must be one of {}, found {}",
                    allowed.join(", "),
                    types::quote(s)
                )
            })
    })
}

fn outcome(el: El<'_>) -> R<Outcome> {
    enumeration(el, &[("OK", Outcome::Ok), ("KO", Outcome::Ko)])
}

fn amount_option(el: El<'_>) -> R<AmountOption> {
    enumeration(
        el,
        &[
            ("EQ", AmountOption::Eq),
            ("LS", AmountOption::Ls),
            ("GT", AmountOption::Gt),
            ("ANY", AmountOption::Any),
        ],
    )
}

fn transfer_type(el: El<'_>) -> R<TransferType> {
    enumeration(
        el,
        &[
            ("POSTAL", TransferType::Postal),
            ("PAGOPA", TransferType::PagoPa),
        ],
    )
}

fn entity_type(el: El<'_>) -> R<EntityType> {
    enumeration(el, &[("F", EntityType::F), ("G", EntityType::G)])
}

// ---------------------------------------------------------------------------------------------
// Complex types shared by requests and responses
// ---------------------------------------------------------------------------------------------

fn qr_code(el: El<'_>) -> R<QrCode> {
    let mut s = el.seq()?;
    let v = QrCode {
        fiscal_code: s.req("fiscalCode", fiscal_code_pa)?,
        notice_number: s.req("noticeNumber", notice_number)?,
    };
    s.end()?;
    Ok(v)
}

fn map_entry(el: El<'_>) -> R<MapEntry> {
    let mut s = el.seq()?;
    let v = MapEntry {
        key: s.req("key", t140)?,
        value: s.req("value", t140)?,
    };
    s.end()?;
    Ok(v)
}

/// `ctMetadata`; an absent element is an empty list.
fn metadata(s: &mut Seq<'_>) -> R<Vec<MapEntry>> {
    let v = s.opt("metadata", |el| {
        let mut s = el.seq()?;
        let v = s.many("mapEntry", 1, 15, map_entry)?;
        s.end()?;
        Ok(v)
    })?;
    Ok(v.unwrap_or_default())
}

fn subject(el: El<'_>) -> R<Subject> {
    let mut s = el.seq()?;
    let v = Subject {
        unique_identifier: s.req("uniqueIdentifier", |el| {
            let mut s = el.seq()?;
            let v = UniqueIdentifier {
                kind: s.req("entityUniqueIdentifierType", entity_type)?,
                value: s.req("entityUniqueIdentifierValue", |el| text_of(el, 2, 16))?,
            };
            s.end()?;
            Ok(v)
        })?,
        full_name: s.req("fullName", t70)?,
        street_name: s.opt("streetName", t70)?,
        civic_number: s.opt("civicNumber", t16)?,
        postal_code: s.opt("postalCode", t16)?,
        city: s.opt("city", t35)?,
        state_province_region: s.opt("stateProvinceRegion", t35)?,
        country: s.opt("country", upper2)?,
        email: s.opt("e-mail", email)?,
    };
    s.end()?;
    Ok(v)
}

fn fault(el: El<'_>) -> R<Fault> {
    let mut s = el.seq()?;
    let v = Fault {
        fault_code: s.req("faultCode", string)?,
        fault_string: s.req("faultString", string)?,
        id: s.req("id", string)?,
        description: s.opt("description", string)?,
        serial: s.opt("serial", int)?,
        original_fault_code: s.opt("originalFaultCode", string)?,
        original_fault_string: s.opt("originalFaultString", string)?,
        original_description: s.opt("originalDescription", string)?,
    };
    s.end()?;
    Ok(v)
}

/// A `transferList` of 1 to 5 `transfer`.
fn transfer_list<T>(el: El<'_>, f: impl FnMut(El<'_>) -> R<T>) -> R<Vec<T>> {
    let mut s = el.seq()?;
    let v = s.many("transfer", 1, 5, f)?;
    s.end()?;
    Ok(v)
}

fn transfer(el: El<'_>) -> R<Transfer> {
    let mut s = el.seq()?;
    let v = Transfer {
        id_transfer: s.req("idTransfer", id_transfer)?,
        transfer_amount: s.req("transferAmount", amount_nz)?,
        fiscal_code_pa: s.req("fiscalCodePA", fiscal_code_pa)?,
        iban: s.req("IBAN", iban)?,
        remittance_information: s.req("remittanceInformation", t140)?,
        transfer_category: s.req("transferCategory", t140)?,
        metadata: metadata(&mut s)?,
    };
    s.end()?;
    Ok(v)
}

fn marca_da_bollo(el: El<'_>) -> R<MarcaDaBollo> {
    let mut s = el.seq()?;
    let v = MarcaDaBollo {
        hash_documento: s.req("hashDocumento", |el| {
            el.check(|t| types::base64(t, Some((4, 72))).map(str::to_owned))
        })?,
        tipo_bollo: s.req("tipoBollo", |el| {
            enumeration(el, &[("01", "01")]).map(str::to_owned)
        })?,
        provincia_residenza: s.req("provinciaResidenza", upper2)?,
    };
    s.end()?;
    Ok(v)
}

/// The error for an `a | b` choice with neither present.
fn choice_missing(s: &Seq<'_>, a: &'static str, b: &str) -> SoapError {
    let found = s
        .peek()
        .map(|n| format!(", found <{}>", n.name))
        .unwrap_or_default();
    s.path.child(a, 0).err(format!("missing (or {b}){found}"))
}

fn transfer_v2(el: El<'_>) -> R<TransferV2> {
    let mut s = el.seq()?;
    let id_transfer = s.req("idTransfer", id_transfer)?;
    let transfer_amount = s.req("transferAmount", amount_nz)?;
    let fiscal_code_pa = s.req("fiscalCodePA", fiscal_code_pa)?;
    let company_name = s.opt("companyName", t140)?;
    let destination = if let Some(v) = s.opt("IBAN", iban)? {
        Destination::Iban(v)
    } else if let Some(v) = s.opt("richiestaMarcaDaBollo", marca_da_bollo)? {
        Destination::MarcaDaBollo(v)
    } else {
        return Err(choice_missing(&s, "IBAN", "richiestaMarcaDaBollo"));
    };
    let v = TransferV2 {
        id_transfer,
        transfer_amount,
        fiscal_code_pa,
        company_name,
        destination,
        remittance_information: s.req("remittanceInformation", t140)?,
        transfer_category: s.req("transferCategory", t140)?,
        metadata: metadata(&mut s)?,
    };
    s.end()?;
    Ok(v)
}

fn receipt_transfer_v2(el: El<'_>) -> R<ReceiptTransferV2> {
    let mut s = el.seq()?;
    let id_transfer = s.req("idTransfer", id_transfer)?;
    let transfer_amount = s.req("transferAmount", amount_nz)?;
    let fiscal_code_pa = s.req("fiscalCodePA", fiscal_code_pa)?;
    let company_name = s.opt("companyName", t140)?;
    let destination = if let Some(v) = s.opt("IBAN", iban)? {
        ReceiptDestination::Iban(v)
    } else if let Some(v) = s.opt("MBDAttachment", |el| {
        el.check(|t| types::base64(t, None).map(str::to_owned))
    })? {
        ReceiptDestination::MbdAttachment(v)
    } else {
        return Err(choice_missing(&s, "IBAN", "MBDAttachment"));
    };
    let v = ReceiptTransferV2 {
        id_transfer,
        transfer_amount,
        fiscal_code_pa,
        company_name,
        destination,
        remittance_information: s.req("remittanceInformation", t140)?,
        transfer_category: s.req("transferCategory", t140)?,
        metadata: metadata(&mut s)?,
    };
    s.end()?;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `idPA`, `idBrokerPA`, `idStation`: the head of every request.
fn head(s: &mut Seq<'_>) -> R<(String, String, String)> {
    Ok((
        s.req("idPA", t35)?,
        s.req("idBrokerPA", t35)?,
        s.req("idStation", t35)?,
    ))
}

fn verify_req(el: El<'_>) -> R<VerifyRequest> {
    let mut s = el.seq()?;
    let (id_pa, id_broker_pa, id_station) = head(&mut s)?;
    let v = VerifyRequest {
        id_pa,
        id_broker_pa,
        id_station,
        qr_code: s.req("qrCode", qr_code)?,
    };
    s.end()?;
    Ok(v)
}

fn get_payment_req(el: El<'_>) -> R<GetPaymentRequest> {
    let mut s = el.seq()?;
    let (id_pa, id_broker_pa, id_station) = head(&mut s)?;
    let v = GetPaymentRequest {
        id_pa,
        id_broker_pa,
        id_station,
        qr_code: s.req("qrCode", qr_code)?,
        amount: s.opt("amount", amount)?,
        payment_note: s.opt("paymentNote", t210)?,
        transfer_type: s.opt("transferType", transfer_type)?,
        due_date: s.opt("dueDate", date)?,
    };
    s.end()?;
    Ok(v)
}

fn receipt(el: El<'_>) -> R<Receipt> {
    let mut s = el.seq()?;
    let v = Receipt {
        receipt_id: s.req("receiptId", string)?,
        notice_number: s.req("noticeNumber", notice_number)?,
        fiscal_code: s.req("fiscalCode", fiscal_code_pa)?,
        outcome: s.req("outcome", outcome)?,
        creditor_reference_id: s.req("creditorReferenceId", t35)?,
        payment_amount: s.req("paymentAmount", amount)?,
        description: s.req("description", t140)?,
        company_name: s.req("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
        debtor: s.req("debtor", subject)?,
        transfer_list: s.req("transferList", |el| transfer_list(el, transfer))?,
        id_psp: s.req("idPSP", t35)?,
        psp_fiscal_code: s.opt("pspFiscalCode", t70)?,
        psp_partita_iva: s.opt("pspPartitaIVA", t20)?,
        psp_company_name: s.req("PSPCompanyName", t70)?,
        id_channel: s.req("idChannel", t35)?,
        channel_description: s.req("channelDescription", t35)?,
        payer: s.opt("payer", subject)?,
        payment_method: s.opt("paymentMethod", t35)?,
        fee: s.opt("fee", amount)?,
        payment_date_time: s.opt("paymentDateTime", date_time)?,
        application_date: s.opt("applicationDate", date)?,
        transfer_date: s.opt("transferDate", date)?,
        metadata: metadata(&mut s)?,
        stand_in: s.opt("standIn", boolean)?,
    };
    s.end()?;
    Ok(v)
}

fn receipt_v2(el: El<'_>) -> R<ReceiptV2> {
    let mut s = el.seq()?;
    let v = ReceiptV2 {
        receipt_id: s.req("receiptId", string)?,
        notice_number: s.req("noticeNumber", notice_number)?,
        fiscal_code: s.req("fiscalCode", fiscal_code_pa)?,
        outcome: s.req("outcome", outcome)?,
        creditor_reference_id: s.req("creditorReferenceId", t35)?,
        payment_amount: s.req("paymentAmount", amount)?,
        description: s.req("description", t140)?,
        company_name: s.req("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
        debtor: s.req("debtor", subject)?,
        transfer_list: s.req("transferList", |el| transfer_list(el, receipt_transfer_v2))?,
        id_psp: s.req("idPSP", t35)?,
        psp_fiscal_code: s.opt("pspFiscalCode", t70)?,
        psp_partita_iva: s.opt("pspPartitaIVA", t20)?,
        psp_company_name: s.req("PSPCompanyName", t70)?,
        id_channel: s.req("idChannel", t35)?,
        channel_description: s.req("channelDescription", t35)?,
        payer: s.opt("payer", subject)?,
        payment_method: s.opt("paymentMethod", t35)?,
        payment_note: s.opt("paymentNote", t210)?,
        fee: s.opt("fee", amount)?,
        primary_ci_incurred_fee: s.opt("primaryCiIncurredFee", amount)?,
        id_bundle: s.opt("idBundle", t70)?,
        id_ci_bundle: s.opt("idCiBundle", t70)?,
        payment_date_time: s.opt("paymentDateTime", date_time)?,
        application_date: s.opt("applicationDate", date)?,
        transfer_date: s.opt("transferDate", date)?,
        metadata: metadata(&mut s)?,
        stand_in: s.opt("standIn", boolean)?,
    };
    s.end()?;
    Ok(v)
}

fn demand_req(el: El<'_>) -> R<DemandRequest> {
    let mut s = el.seq()?;
    let (id_pa, id_broker_pa, id_station) = head(&mut s)?;
    let v = DemandRequest {
        id_pa,
        id_broker_pa,
        id_station,
        id_servizio: s.req("idServizio", |el| text_of(el, 5, 5))?,
        id_soggetto_servizio: s.req("idSoggettoServizio", |el| text_of(el, 5, 5))?,
        dati_specifici_servizio: s.req("datiSpecificiServizioRequest", |el| {
            el.check(|t| types::base64(t, None).map(str::to_owned))
        })?,
    };
    s.end()?;
    Ok(v)
}

fn send_rt_req(el: El<'_>) -> R<SendRtRequest> {
    let mut s = el.seq()?;
    let (id_pa, id_broker_pa, id_station) = head(&mut s)?;
    let v = SendRtRequest {
        id_pa,
        id_broker_pa,
        id_station,
        receipt: s.req("receipt", receipt)?,
    };
    s.end()?;
    Ok(v)
}

fn send_rt_v2_req(el: El<'_>) -> R<SendRtV2Request> {
    let mut s = el.seq()?;
    let (id_pa, id_broker_pa, id_station) = head(&mut s)?;
    let v = SendRtV2Request {
        id_pa,
        id_broker_pa,
        id_station,
        receipt: s.req("receipt", receipt_v2)?,
    };
    s.end()?;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `ctResponse`: `outcome` and `fault`, the head of every response.
fn response_head(s: &mut Seq<'_>) -> R<(Outcome, Option<Fault>)> {
    Ok((s.req("outcome", outcome)?, s.opt("fault", fault)?))
}

fn payment_option(el: El<'_>) -> R<PaymentOption> {
    let mut s = el.seq()?;
    let v = PaymentOption {
        amount: s.req("amount", amount_nz)?,
        options: s.req("options", amount_option)?,
        due_date: s.opt("dueDate", date)?,
        detail_description: s.opt("detailDescription", t140)?,
        all_ccp: s.req("allCCP", boolean)?,
    };
    s.end()?;
    Ok(v)
}

fn verify_res(el: El<'_>) -> R<VerifyResponse> {
    let mut s = el.seq()?;
    let (outcome, fault) = response_head(&mut s)?;
    let v = VerifyResponse {
        outcome,
        fault,
        payment_option: s.opt("paymentList", payment_list)?,
        payment_description: s.opt("paymentDescription", t140)?,
        fiscal_code_pa: s.opt("fiscalCodePA", fiscal_code_pa)?,
        company_name: s.opt("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
    };
    s.end()?;
    Ok(v)
}

/// `paymentList`: exactly one `paymentOptionDescription` (verify and demand alike).
fn payment_list(el: El<'_>) -> R<PaymentOption> {
    let mut s = el.seq()?;
    let v = s.req("paymentOptionDescription", payment_option)?;
    s.end()?;
    Ok(v)
}

fn demand_res(el: El<'_>) -> R<DemandResponse> {
    let mut s = el.seq()?;
    let (outcome, fault) = response_head(&mut s)?;
    let v = DemandResponse {
        outcome,
        fault,
        qr_code: s.opt("qrCode", qr_code)?,
        payment_option: s.opt("paymentList", payment_list)?,
        payment_description: s.opt("paymentDescription", t140)?,
        fiscal_code_pa: s.opt("fiscalCodePA", fiscal_code_pa)?,
        company_name: s.opt("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
    };
    s.end()?;
    Ok(v)
}

fn payment_data(el: El<'_>) -> R<PaymentData> {
    let mut s = el.seq()?;
    let v = PaymentData {
        creditor_reference_id: s.req("creditorReferenceId", t35)?,
        payment_amount: s.req("paymentAmount", amount_nz)?,
        due_date: s.req("dueDate", date)?,
        retention_date: s.opt("retentionDate", date_time)?,
        last_payment: s.opt("lastPayment", boolean)?,
        description: s.req("description", t140)?,
        company_name: s.opt("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
        debtor: s.req("debtor", subject)?,
        transfer_list: s.req("transferList", |el| transfer_list(el, transfer))?,
        metadata: metadata(&mut s)?,
    };
    s.end()?;
    Ok(v)
}

fn payment_data_v2(el: El<'_>) -> R<PaymentDataV2> {
    let mut s = el.seq()?;
    let v = PaymentDataV2 {
        creditor_reference_id: s.req("creditorReferenceId", t35)?,
        payment_amount: s.req("paymentAmount", amount_nz)?,
        due_date: s.req("dueDate", date)?,
        retention_date: s.opt("retentionDate", date_time)?,
        last_payment: s.opt("lastPayment", boolean)?,
        description: s.req("description", t140)?,
        company_name: s.req("companyName", t140)?,
        office_name: s.opt("officeName", t140)?,
        debtor: s.req("debtor", subject)?,
        transfer_list: s.req("transferList", |el| transfer_list(el, transfer_v2))?,
        metadata: metadata(&mut s)?,
    };
    s.end()?;
    Ok(v)
}

fn get_payment_res(el: El<'_>) -> R<GetPaymentResponse> {
    let mut s = el.seq()?;
    let (outcome, fault) = response_head(&mut s)?;
    let data = s.opt("data", payment_data)?;
    s.end()?;
    Ok(GetPaymentResponse {
        outcome,
        fault,
        data,
    })
}

fn get_payment_v2_res(el: El<'_>) -> R<GetPaymentV2Response> {
    let mut s = el.seq()?;
    let (outcome, fault) = response_head(&mut s)?;
    let data = s.opt("data", payment_data_v2)?;
    s.end()?;
    Ok(GetPaymentV2Response {
        outcome,
        fault,
        data,
    })
}

fn send_rt_res(el: El<'_>) -> R<SendRtResponse> {
    let mut s = el.seq()?;
    let (outcome, fault) = response_head(&mut s)?;
    s.end()?;
    Ok(SendRtResponse { outcome, fault })
}
