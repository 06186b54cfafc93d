//! Calls read from envelopes as ERPs send them, `Versamento` read like a row, `Dovuti` written
//! valid against MyPay's XSD.

use std::collections::HashMap;

use snodo_core::dovuto::{validate, DebtTypeRules, EntityRules, FlowVersion, RejectCode};
use snodo_core::SegregationCode;

use super::*;

fn envelope(header: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ppt="{PPT_NS}" xmlns:ppthead="{PPTHEAD_NS}"><soapenv:Header>{header}</soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

const VERSAMENTO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Versamento xmlns="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/">
  <versioneOggetto>6.2.0</versioneOggetto>
  <soggettoPagatore>
    <identificativoUnivocoPagatore>
      <tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco>
      <codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco>
    </identificativoUnivocoPagatore>
    <anagraficaPagatore>Mario Rossi &amp; figli</anagraficaPagatore>
    <e-mailPagatore>mario@example.it</e-mailPagatore>
  </soggettoPagatore>
  <datiVersamento>
    <dataEsecuzionePagamento>2026-12-31</dataEsecuzionePagamento>
    <tipoVersamento>ALL</tipoVersamento>
    <identificativoUnivocoDovuto>WS-1</identificativoUnivocoDovuto>
    <importoSingoloVersamento>120.50</importoSingoloVersamento>
    <identificativoTipoDovuto>TARI</identificativoTipoDovuto>
    <causaleVersamento>TARI 2026</causaleVersamento>
    <datiSpecificiRiscossione>9/0101100IM/</datiSpecificiRiscossione>
    <bilancio><capitolo><codCapitolo>C1</codCapitolo><accertamento><importo>120.50</importo></accertamento></capitolo></bilancio>
  </datiVersamento>
  <azione>I</azione>
</Versamento>"#;

fn rules() -> EntityRules {
    let mut debt_types = HashMap::new();
    debt_types.insert(
        "TARI".to_string(),
        DebtTypeRules {
            code: "TARI".into(),
            active: true,
            due_date_required: false,
            anonymous_payer_allowed: false,
            generate_iuv: true,
            stamp_duty: false,
        },
    );
    EntityRules {
        segregation_code: SegregationCode::parse("01").expect("segregation code"),
        debt_types,
        taxonomy: None,
    }
}

#[test]
fn a_call_gives_its_operation_fields_and_header_entity() {
    let body = format!(
        "<ppt:paaSILImportaDovuto><password>secret123</password><dovuto>{}</dovuto><flagGeneraIuv>true</flagGeneraIuv></ppt:paaSILImportaDovuto>",
        to_base64(VERSAMENTO.as_bytes())
    );
    let xml = envelope(
        "<ppthead:intestazionePPT><codIpaEnte>c_g224</codIpaEnte></ppthead:intestazionePPT>",
        &body,
    );
    let call = parse_call(xml.as_bytes()).expect("call");
    assert_eq!(call.op, Operation::ImportaDovuto);
    assert_eq!(call.entity(), Some("c_g224"));
    assert_eq!(call.field("password"), Some("secret123"));
    assert_eq!(call.flag("flagGeneraIuv"), Ok(Some(true)));
    let doc = base64_field(call.required("dovuto").expect("dovuto")).expect("base64");
    assert_eq!(doc, VERSAMENTO.as_bytes());
}

#[test]
fn the_body_entity_wins_and_cart_items_are_read() {
    let xml = envelope(
        "",
        "<ppt:paaSILInviaCarrelloDovuti><password>secret123</password><listaDovuti><elementoListaDovuti><codIpaEnte>c_a</codIpaEnte><password>ab</password><dovuti>eA==</dovuti></elementoListaDovuti><elementoListaDovuti><codIpaEnte>c_b</codIpaEnte><password>cd</password><dovuti>eQ==</dovuti></elementoListaDovuti></listaDovuti></ppt:paaSILInviaCarrelloDovuti>",
    );
    let call = parse_call(xml.as_bytes()).expect("call");
    assert_eq!(call.header_ipa, None);
    assert_eq!(call.cart.len(), 2);
    assert_eq!(call.cart[1].ipa_code, "c_b");
    let q = envelope(
        "<ppthead:intestazionePPT><codIpaEnte>c_head</codIpaEnte></ppthead:intestazionePPT>",
        "<ppt:paaSILChiediPagati><codIpaEnte>c_body</codIpaEnte><idSession>x</idSession></ppt:paaSILChiediPagati>",
    );
    assert_eq!(
        parse_call(q.as_bytes()).expect("call").entity(),
        Some("c_body")
    );
}

#[test]
fn what_is_not_an_operation_is_named() {
    let xml = envelope("", "<ppt:paaSILNonEsiste/>");
    assert_eq!(
        parse_call(xml.as_bytes()),
        Err(CallError::UnknownOperation("paaSILNonEsiste".into()))
    );
    // The right name in the wrong namespace is not the operation either.
    let xml = envelope(
        "",
        "<x:paaSILChiediPagati xmlns:x=\"urn:other\"><idSession>1</idSession></x:paaSILChiediPagati>",
    );
    assert!(matches!(
        parse_call(xml.as_bytes()),
        Err(CallError::UnknownOperation(_))
    ));
    assert!(matches!(
        parse_call(b"not xml"),
        Err(CallError::Envelope(_))
    ));
    assert!(base64_field("%%%").is_err());
    assert_eq!(
        Operation::from_soap_action("\"paaSILChiediFlussoSPC\""),
        Some(Operation::ChiediFlussoSPC)
    );
}

#[test]
fn a_versamento_is_a_row_under_the_same_rules() {
    let v = versamento::decode(VERSAMENTO.as_bytes()).expect("versamento");
    assert_eq!(v.iud, "WS-1");
    assert_eq!(v.anagrafica_pagatore, "Mario Rossi & figli");
    assert!(v
        .bilancio
        .starts_with("<bilancio><capitolo><codCapitolo>C1"));
    let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 8).expect("date");
    let row = validate(&v.raw(true), FlowVersion::V1_4, &rules(), today).expect("valid");
    assert_eq!(row.dovuto.amount.cents(), 12050);
    assert_eq!(
        row.dovuto.due_date.map(|d| d.to_string()).as_deref(),
        Some("2026-12-31")
    );

    let unknown = VERSAMENTO.replace(">TARI<", ">IMU<");
    let v = versamento::decode(unknown.as_bytes()).expect("structure is fine");
    let errs = validate(&v.raw(true), FlowVersion::V1_4, &rules(), today).expect_err("unknown");
    assert!(errs
        .iter()
        .any(|e| e.code == RejectCode::TipoDovutoInesistente));
}

#[test]
fn a_broken_versamento_names_the_element() {
    let missing = VERSAMENTO.replace("<causaleVersamento>TARI 2026</causaleVersamento>", "");
    let e = versamento::decode(missing.as_bytes()).expect_err("missing");
    assert_eq!(e.path, "Versamento/datiVersamento/datiSpecificiRiscossione");
    let extra = VERSAMENTO.replace("<azione>I</azione>", "<azione>I</azione><azione>M</azione>");
    let e = versamento::decode(extra.as_bytes()).expect_err("repeated");
    assert_eq!(e.path, "Versamento/azione");
    let wrong_ns = VERSAMENTO.replace("Pagamenti/Ente/", "Pagamenti/Other/");
    assert!(versamento::decode(wrong_ns.as_bytes()).is_err());
    let dtd = format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", &VERSAMENTO[38..]);
    assert!(versamento::decode(dtd.as_bytes()).is_err());
    assert!(versamento::decode(b"<Versamento").is_err());
}

#[test]
fn open_positions_are_written_as_valid_dovuti() {
    let v = versamento::decode(VERSAMENTO.as_bytes()).expect("versamento");
    let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 8).expect("date");
    let row = validate(&v.raw(true), FlowVersion::V1_4, &rules(), today).expect("valid");
    let mut long = row.dovuto.clone();
    long.payer.name = "N".repeat(200);
    long.causale = "<&>".repeat(500);
    long.payer.province = Some("P".into());
    let docs = [
        dovuti::render(&row.dovuto, Some("01000000000012345")),
        dovuti::render(&long, None),
    ];
    assert!(docs[0].contains("<identificativoUnivocoVersamento>01000000000012345<"));
    assert!(docs[0].contains("<bilancio><capitolo>"));
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    crate::mypay_push::tests::assert_valid(&refs);
}

#[test]
fn a_fault_answer_carries_the_bean_and_ko() {
    let xml = Answer::fault(
        Operation::ImportaDovuto,
        &Fault {
            code: "PAA_ENTE_NON_VALIDO".into(),
            string: "codice <ente> non valido".into(),
            id: "c_x".into(),
            description: None,
        },
    );
    assert!(xml.contains("<ppt:paaSILImportaDovutoRisposta xmlns:ppt=\"http://www.regione.veneto.it/pagamenti/ente/\"><fault><faultCode>PAA_ENTE_NON_VALIDO</faultCode><faultString>codice &lt;ente&gt; non valido</faultString><id>c_x</id></fault><esito>KO</esito></ppt:paaSILImportaDovutoRisposta>"), "{xml}");
}
