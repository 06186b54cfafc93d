//! The `Pagati` document (type `ctPagati`) for one receipt, written in XSD order.
//!
//! Field by field it follows what MyPay4 stores from a `paSendRT` and then marshals: PSP as
//! attesting institute with type `B`, the receipt id as message id, request reference and
//! payment context code, `9/<category>/` as collection data. `ctPagati` has no payer
//! (`soggettoVersante`) and no receipt attachment: the payer and a revenue stamp's MBD stay in
//! `rt` only.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use snodo_core::taxonomy::dati_specifici_riscossione_valid;
use snodo_core::Amount;

use super::{MypayPushError, PAGATI_NS, VERSIONE_OGGETTO};
use crate::pagopa::{self, Outcome, ReceiptTransferView, ReceiptView, Request, Subject};
use crate::receipt_json::ReceiptContext;
use crate::xml_text::XmlText;

/// Written where the XSD wants a value the receipt or the context does not have.
const NOT_AVAILABLE: &str = "n/a";
/// `codiceEsitoPagamento` / `esitoSingoloPagamento` of a payment made (MyPay's
/// `CODICE_ESITO_PAGAMENTO_ESEGUITO`).
const ESITO_ESEGUITO: &str = "0";
/// `codiceEsitoPagamento` of a payment not made.
const ESITO_NON_ESEGUITO: &str = "1";
/// `stImporto`'s ceiling, in cents.
const MAX_IMPORTO: i64 = 99_999_999_999;

// Maximum lengths of the XSD's text types.
const TEXT35: usize = 35;
const TEXT70: usize = 70;
const TEXT140: usize = 140;
const TEXT16: usize = 16;
const EMAIL: usize = 256;

/// The `Pagati` XML of the receipt in `request`; `received_at` dates it when the receipt has
/// no `paymentDateTime`.
pub(super) fn render(
    ctx: &ReceiptContext<'_>,
    request: &Request,
    received_at: DateTime<Utc>,
) -> Result<String, MypayPushError> {
    render_as(ctx, request, received_at, Root::Pagati)
}

/// Which document: `Pagati`, or `PagatiConRicevuta` (the same, each payment numbered by
/// `indiceDatiSingoloPagamento`), which `paaSILChiediPagatiConRicevuta` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Pagati,
    PagatiConRicevuta,
}

impl Root {
    fn name(self) -> &'static str {
        match self {
            Self::Pagati => "Pagati",
            Self::PagatiConRicevuta => "PagatiConRicevuta",
        }
    }
}

/// [`render`] as the document `root`.
pub(crate) fn render_as(
    ctx: &ReceiptContext<'_>,
    request: &Request,
    received_at: DateTime<Utc>,
    root: Root,
) -> Result<String, MypayPushError> {
    let Some(rc) = ReceiptView::of(request) else {
        return Err(MypayPushError::NotAReceipt(request.soap_action()));
    };
    let paid = rc.outcome == Outcome::Ok;
    let total = if paid {
        importo(rc.payment_amount, || "amount".into())?
    } else {
        Amount::ZERO
    };
    let mut singoli = Vec::with_capacity(rc.transfers.len());
    // The receiving entity's own transfers, as MyPay lists its own payments of the cart (a
    // secondary beneficiary's transfer is that entity's); all of them should none be its own.
    let own = |t: &&ReceiptTransferView<'_>| t.fiscal_code_pa == rc.fiscal_code;
    let any_own = rc.transfers.iter().any(|t| own(&t));
    if paid {
        for (index, t) in rc
            .transfers
            .iter()
            .enumerate()
            .filter(|(_, t)| !any_own || own(t))
        {
            let amount = importo(t.amount, || format!("transfers[{index}].amount"))?;
            let dati = dati_specifici(t.category).ok_or_else(|| MypayPushError::Category {
                index,
                value: t.category.to_owned(),
            })?;
            singoli.push((index, t, amount, dati));
        }
    }
    // MyPay dates the receipt with paymentDateTime, or the time it stored it.
    let message_time = rc
        .payment_date_time
        .and_then(local_date_time)
        .unwrap_or_else(|| rome_local(received_at));
    let message_date = message_time.date();
    let request_date = rc
        .application_date
        .and_then(|d| d.get(..10))
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or(message_date);
    let entity_name = if fit(ctx.entity_name, TEXT70).is_empty() {
        rc.company_name
    } else {
        ctx.entity_name
    };

    let mut w = XmlText::with_capacity(2048);
    w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><"#);
    w.push_str(root.name());
    w.push_str(r#" xmlns=""#);
    w.push_str(PAGATI_NS);
    w.push_str(r#"">"#);
    w.text("versioneOggetto", VERSIONE_OGGETTO, TEXT16);
    w.open("dominio");
    w.text("identificativoDominio", rc.fiscal_code, TEXT35);
    w.close("dominio");
    w.text("identificativoMessaggioRicevuta", rc.receipt_id, TEXT35);
    w.raw(
        "dataOraMessaggioRicevuta",
        message_time.format("%Y-%m-%dT%H:%M:%S"),
    );
    w.text("riferimentoMessaggioRichiesta", rc.receipt_id, TEXT35);
    w.raw("riferimentoDataRichiesta", request_date.format("%Y-%m-%d"));

    w.open("istitutoAttestante");
    w.open("identificativoUnivocoAttestante");
    w.raw("tipoIdentificativoUnivoco", "B");
    w.text("codiceIdentificativoUnivoco", rc.id_psp, TEXT35);
    w.close("identificativoUnivocoAttestante");
    w.text("denominazioneAttestante", rc.psp_company_name, TEXT70);
    w.close("istitutoAttestante");

    w.open("enteBeneficiario");
    w.open("identificativoUnivocoBeneficiario");
    w.raw("tipoIdentificativoUnivoco", "G");
    w.text("codiceIdentificativoUnivoco", rc.fiscal_code, TEXT35);
    w.close("identificativoUnivocoBeneficiario");
    w.text("denominazioneBeneficiario", entity_name, TEXT70);
    w.close("enteBeneficiario");

    w.soggetto_pagatore(rc.debtor);

    w.open("datiPagamento");
    w.raw(
        "codiceEsitoPagamento",
        if paid {
            ESITO_ESEGUITO
        } else {
            ESITO_NON_ESEGUITO
        },
    );
    w.raw("importoTotalePagato", total);
    w.text(
        "identificativoUnivocoVersamento",
        rc.creditor_reference_id,
        TEXT35,
    );
    // The receipt id fits stText35 (it is one on the node's side too) and is what MyPay writes.
    w.text("codiceContestoPagamento", rc.receipt_id, TEXT35);
    let iud = ctx.iud.unwrap_or(NOT_AVAILABLE);
    let esito_date = message_date.format("%Y-%m-%d").to_string();
    for (index, t, amount, dati) in &singoli {
        let index = *index;
        w.open("datiSingoloPagamento");
        w.text("identificativoUnivocoDovuto", iud, TEXT35);
        w.raw("singoloImportoPagato", amount);
        w.raw("esitoSingoloPagamento", ESITO_ESEGUITO);
        w.raw("dataEsitoSingoloPagamento", &esito_date);
        w.text("identificativoUnivocoRiscossione", rc.receipt_id, TEXT35);
        w.text("causaleVersamento", t.remittance_information, TEXT140);
        w.text("datiSpecificiRiscossione", dati, TEXT140);
        // stIndice is 1 to 5: a sixth transfer (the node allows none) goes unnumbered.
        if root == Root::PagatiConRicevuta && index < 5 {
            w.raw("indiceDatiSingoloPagamento", index + 1);
        }
        w.close("datiSingoloPagamento");
    }
    w.close("datiPagamento");
    w.close(root.name());
    Ok(w.into_string())
}

/// Cents of a wire amount within `stImporto` (0.00 to 999999999.99).
fn importo(wire: &str, field: impl Fn() -> String) -> Result<Amount, MypayPushError> {
    let amount = pagopa::to_cents(wire).map_err(|source| MypayPushError::Amount {
        field: field(),
        source,
    })?;
    if amount.cents() > MAX_IMPORTO {
        return Err(MypayPushError::Amount {
            field: field(),
            source: snodo_core::amount::AmountError::TooLarge,
        });
    }
    Ok(amount)
}

/// The category as MyPay's `datiSpecificiRiscossione`: as it is when it has the `tipo/codice`
/// form (`9/0101100IM/`), else wrapped as MyPay wraps a bare code (`0101100IM` → `9/0101100IM/`).
/// `None` when the result would break the XSD's pattern.
fn dati_specifici(category: &str) -> Option<String> {
    let has_form = matches!(category.as_bytes(), [b'0' | b'1' | b'2' | b'9', b'/', ..]);
    let value = if has_form {
        category.to_owned()
    } else {
        format!("9/{category}/")
    };
    dati_specifici_riscossione_valid(&value).then_some(value)
}

/// The local time in Rome of an `xsd:dateTime` with a zone; as written when it has none (the
/// node writes Italian local time). `None` for text that is not one.
fn local_date_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let b = s.as_bytes();
    let date = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = frac.get(digits..)?;
    }
    // xsd:dateTime allows 24:00:00, the midnight that ends the day.
    let naive = if (h, m, sec) == (24, 0, 0) {
        date.succ_opt()?.and_hms_opt(0, 0, 0)?
    } else {
        date.and_hms_opt(h, m, sec)?
    };
    let offset_secs: i64 = match rest.as_bytes() {
        [] => return Some(naive),
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(s.len() - 5..s.len() - 3)?, num(s.len() - 2..s.len())?);
            let secs = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let utc = naive.checked_sub_signed(Duration::seconds(offset_secs))?;
    Some(rome_local(utc.and_utc()))
}

/// Wall-clock time in Europe/Rome.
pub(super) fn rome_local(at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&chrono_tz::Europe::Rome).naive_local()
}

/// `s` without the characters XML cannot carry, cut to at most `max` UTF-16 units (MyPay
/// validates in Java, which counts them; libxml2 counts characters, never more).
pub(crate) fn fit(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut units = 0;
    for c in s.chars().filter(|&c| xml_char(c)) {
        units += c.len_utf16();
        if units > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether XML 1.0 allows the character in text.
fn xml_char(c: char) -> bool {
    !((c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}')
}

/// MyPay's `stEMail`: `[a-zA-Z0-9_!#$%&'*+/=?`{|}~^.-]+@[a-zA-Z0-9.-]+`, at most 256.
pub(crate) fn mypay_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = |c: char| c.is_ascii_alphanumeric() || "_!#$%&'*+/=?`{|}~^.-".contains(c);
    let domain_ok = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    s.len() <= EMAIL
        && !local.is_empty()
        && !domain.is_empty()
        && local.chars().all(local_ok)
        && domain.chars().all(domain_ok)
}

/// What the `Pagati` document writes on top of [`XmlText`]: text leaves of the XSD's types,
/// [`fit`] first (so the escaping has no character to drop), and the debtor.
trait PagatiXml {
    /// A mandatory text leaf, fitted to `max`; `n/a` when nothing of it is left, since every
    /// text type of the XSD needs at least one character.
    fn text(&mut self, name: &str, value: &str, max: usize);

    /// An optional text leaf, left out when nothing of it is left.
    fn opt_text(&mut self, name: &str, value: Option<&str>, max: usize);

    /// `soggettoPagatore` from the receipt's debtor.
    fn soggetto_pagatore(&mut self, d: &Subject);
}

impl PagatiXml for XmlText {
    fn text(&mut self, name: &str, value: &str, max: usize) {
        let v = fit(value, max);
        if v.is_empty() {
            self.raw(name, NOT_AVAILABLE);
        } else {
            self.leaf(name, &v);
        }
    }

    fn opt_text(&mut self, name: &str, value: Option<&str>, max: usize) {
        let Some(v) = value.map(|v| fit(v, max)).filter(|v| !v.is_empty()) else {
            return;
        };
        self.leaf(name, &v);
    }

    fn soggetto_pagatore(&mut self, d: &Subject) {
        self.open("soggettoPagatore");
        self.open("identificativoUnivocoPagatore");
        self.raw(
            "tipoIdentificativoUnivoco",
            d.unique_identifier.kind.as_str(),
        );
        self.text(
            "codiceIdentificativoUnivoco",
            &d.unique_identifier.value,
            TEXT35,
        );
        self.close("identificativoUnivocoPagatore");
        self.text("anagraficaPagatore", &d.full_name, TEXT70);
        self.opt_text("indirizzoPagatore", d.street_name.as_deref(), TEXT70);
        self.opt_text("civicoPagatore", d.civic_number.as_deref(), TEXT16);
        self.opt_text("capPagatore", d.postal_code.as_deref(), TEXT16);
        self.opt_text("localitaPagatore", d.city.as_deref(), TEXT35);
        // stText2 is exactly two characters: MyPay keeps the first two, so do we; shorter is
        // left out.
        let province = d.state_province_region.as_deref().map(|p| fit(p, 2));
        if let Some(p) = province.filter(|p| p.chars().count() == 2) {
            self.opt_text("provinciaPagatore", Some(&p), 2);
        }
        if let Some(c) = d
            .country
            .as_deref()
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            self.raw("nazionePagatore", c);
        }
        if let Some(e) = d.email.as_deref().filter(|e| mypay_email(e)) {
            self.opt_text("e-mailPagatore", Some(e), EMAIL);
        }
        self.close("soggettoPagatore");
    }
}
