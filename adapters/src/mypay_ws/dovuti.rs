//! The `Dovuti` document (`ctDovuti`) of one open position, as MyPay answers
//! `paaSILChiediPosizioniAperte` and `paaSILChiediAvvisiPendenti`: the payer, the IUV and the one
//! payment, each text cut to the XSD's length so the document always validates.

use snodo_core::dovuto::{Dovuto, SubjectKind};

use crate::mypay_push::pagati::{fit, mypay_email};
use crate::mypay_push::{PAGATI_NS, VERSIONE_OGGETTO};
use crate::pagopa::xml::read_document;
use crate::xml_text::XmlText;

/// The `Dovuti` XML of `d`, whose IUV is `iuv` (the stored one, generated or given).
pub fn render(d: &Dovuto, iuv: Option<&str>) -> String {
    let mut w = XmlText::with_capacity(1024);
    w.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><Dovuti xmlns=""#);
    w.push_str(PAGATI_NS);
    w.push_str(r#"">"#);
    w.raw("versioneOggetto", VERSIONE_OGGETTO);
    w.open("soggettoPagatore");
    w.open("identificativoUnivocoPagatore");
    let kind = match d.payer.kind {
        Some(SubjectKind::G) => "G",
        _ => "F",
    };
    w.raw("tipoIdentificativoUnivoco", kind);
    text(&mut w, "codiceIdentificativoUnivoco", &d.payer.id, 35);
    w.close("identificativoUnivocoPagatore");
    text(&mut w, "anagraficaPagatore", &d.payer.name, 70);
    opt(&mut w, "indirizzoPagatore", d.payer.address.as_deref(), 70);
    opt(&mut w, "civicoPagatore", d.payer.civic.as_deref(), 16);
    opt(&mut w, "capPagatore", d.payer.postal_code.as_deref(), 16);
    opt(&mut w, "localitaPagatore", d.payer.locality.as_deref(), 35);
    if let Some(p) = d
        .payer
        .province
        .as_deref()
        .filter(|p| p.chars().count() == 2)
    {
        w.leaf("provinciaPagatore", p);
    }
    if let Some(n) = d
        .payer
        .nation
        .as_deref()
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        w.raw("nazionePagatore", n);
    }
    if let Some(e) = d.payer.email.as_deref().filter(|e| mypay_email(e)) {
        w.leaf("e-mailPagatore", e);
    }
    w.close("soggettoPagatore");
    w.open("datiVersamento");
    text(&mut w, "tipoVersamento", &d.payment_kinds, 32);
    opt(&mut w, "identificativoUnivocoVersamento", iuv, 35);
    w.open("datiSingoloVersamento");
    text(&mut w, "identificativoUnivocoDovuto", &d.iud, 35);
    w.raw("importoSingoloVersamento", d.amount);
    if let Some(fee) = d.pa_fee.filter(|f| f.cents() > 0) {
        w.raw("commissioneCaricoPA", fee);
    }
    text(&mut w, "identificativoTipoDovuto", &d.debt_type, 64);
    text(&mut w, "causaleVersamento", &d.causale, 1024);
    w.leaf("datiSpecificiRiscossione", &d.dati_specifici_riscossione);
    // Stored as the CSV carries it; written only when it is a well-formed document.
    if let Some(b) = d
        .bilancio
        .as_deref()
        .filter(|b| read_document(b.as_bytes()).is_ok())
    {
        w.push_str(b);
    }
    w.close("datiSingoloVersamento");
    w.close("datiVersamento");
    w.close("Dovuti");
    w.into_string()
}

fn text(w: &mut XmlText, name: &str, value: &str, max: usize) {
    let v = fit(value, max);
    w.leaf(name, if v.is_empty() { "n/a" } else { &v });
}

fn opt(w: &mut XmlText, name: &str, value: Option<&str>, max: usize) {
    if let Some(v) = value.map(|v| fit(v, max)).filter(|v| !v.is_empty()) {
        w.leaf(name, &v);
    }
}
