//! MyPay's web services for entity systems (`pa-per-ente.wsdl`, docs/MYPAY.md): an ERP written
//! for MyPay (a zeep client built from the served WSDL) works a day through SOAP only; every
//! answer and every document it carries validates against MyPay's schemas (xmllint); bad input
//! gets MyPay's codes and changes nothing; one entity's password never reaches another's data.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const WS: &str = "/ws/pa/PagamentiTelematiciDovutiPagati";
const PW_PADOVA: &str = "padova-ws-24";
const PW_FELTRE: &str = "feltre-ws-30";
const PPT: &str = "http://www.regione.veneto.it/pagamenti/ente/";

/// A SOAP call to the MyPay services; returns (HTTP status, body).
fn ws_call(port: u16, action: &str, body: &str) -> (u16, String) {
    let r = http(
        port,
        "POST",
        WS,
        None,
        &[
            ("Content-Type", "text/xml; charset=utf-8"),
            ("SOAPAction", action),
        ],
        Some(body),
    );
    (r.status, r.body)
}

fn envelope(ipa: Option<&str>, payload: &str) -> String {
    let header = ipa
        .map(|i| format!("<soapenv:Header><ppthead:intestazionePPT><codIpaEnte>{i}</codIpaEnte></ppthead:intestazionePPT></soapenv:Header>"))
        .unwrap_or_default();
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ppt="{PPT}" xmlns:ppthead="http://www.regione.veneto.it/pagamenti/ente/ppthead" xmlns:pivot="http://www.regione.veneto.it/pagamenti/pa/">{header}<soapenv:Body>{payload}</soapenv:Body></soapenv:Envelope>"#
    )
}

/// Schema files that validate the answers: the WSDL's two embedded schemas, as served, with
/// MyPay's XSD beside them; and a wrapper for the SOAP envelope.
fn answer_schemas(port: u16, dir: &Path) -> std::path::PathBuf {
    let wsdl = http(port, "GET", &format!("{WS}?wsdl"), None, &[], None);
    assert_eq!(wsdl.status, 200);
    let xsd = http(
        port,
        "GET",
        &format!("{WS}?xsd=PagInf_Dovuti_Pagati_6_2_0.xsd"),
        None,
        &[],
        None,
    );
    assert_eq!(xsd.status, 200);
    std::fs::write(dir.join("PagInf.xsd"), &xsd.body).unwrap();
    let decls = r#"<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:ppt="http://www.regione.veneto.it/pagamenti/ente/" xmlns:ppthead="http://www.regione.veneto.it/pagamenti/ente/ppthead" xmlns:pay_i="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/" "#;
    let schemas: Vec<&str> = wsdl
        .body
        .split("<xsd:schema ")
        .skip(1)
        .map(|s| s.split("</xsd:schema>").next().unwrap())
        .collect();
    assert_eq!(schemas.len(), 2, "the WSDL embeds two schemas");
    std::fs::write(
        dir.join("ppthead.xsd"),
        format!("{decls}{}</xsd:schema>", schemas[0]),
    )
    .unwrap();
    let xsd_url = format!(
        "schemaLocation=\"http://127.0.0.1:{port}{WS}?xsd=PagInf_Dovuti_Pagati_6_2_0.xsd\""
    );
    assert!(
        schemas[1].contains(&xsd_url),
        "the import points at the hub"
    );
    let ppt = schemas[1]
        .replace(&xsd_url, "schemaLocation=\"PagInf.xsd\"")
        .replace(
            "namespace=\"http://www.regione.veneto.it/pagamenti/ente/ppthead\"/>",
            "namespace=\"http://www.regione.veneto.it/pagamenti/ente/ppthead\" schemaLocation=\"ppthead.xsd\"/>",
        );
    std::fs::write(dir.join("ppt.xsd"), format!("{decls}{ppt}</xsd:schema>")).unwrap();
    // MyPivot's schema (its prefix `ppt` is bound to its own namespace).
    let pivot = http(port, "GET", &format!("{WS}?pivot-wsdl"), None, &[], None).body;
    let pivot_schema = pivot
        .split("<xsd:schema ")
        .nth(1)
        .and_then(|s| s.split("</xsd:schema>").next())
        .expect("MyPivot's WSDL embeds a schema");
    std::fs::write(
        dir.join("pivot.xsd"),
        format!(
            r#"<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:ppt="http://www.regione.veneto.it/pagamenti/pa/" {pivot_schema}</xsd:schema>"#
        ),
    )
    .unwrap();
    let envelope = repo().join("adapters/specs/pagopa/SANP3.12.0/xsd-common/envelope.xsd");
    let wrapper = dir.join("answers.xsd");
    std::fs::write(
        &wrapper,
        format!(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:snodo:test:mypay-ws">
  <xs:import namespace="http://schemas.xmlsoap.org/soap/envelope/" schemaLocation="{}"/>
  <xs:import namespace="http://www.regione.veneto.it/pagamenti/ente/" schemaLocation="ppt.xsd"/>
  <xs:import namespace="http://www.regione.veneto.it/pagamenti/pa/" schemaLocation="pivot.xsd"/>
</xs:schema>"#,
            envelope.display()
        ),
    )
    .unwrap();
    wrapper
}

fn xmllint(schema: &Path, files: &[std::path::PathBuf]) {
    if files.is_empty() {
        return;
    }
    let out = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(schema)
        .args(files)
        .output()
        .expect("xmllint not found: run ops/setup.sh");
    assert!(
        out.status.success(),
        "not valid against {}:\n{}",
        schema.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn positions_count(home: &Home) -> usize {
    home.positions(&["--limit", "100000"]).len()
}

#[test]
fn an_erp_day_through_mypay_soap_only() {
    let sim_port = free_port();
    let home = home_with_stand_ins(sim_port);
    let _sim = StandIns::start(&home, sim_port, None);
    let _hub = Hub::start_serving(&home);
    let out = home.path().join("answers");
    std::fs::create_dir_all(&out).unwrap();
    let wsdl = format!("http://127.0.0.1:{}{WS}?wsdl", home.port);
    // The ERP's import flow: three positions, the second with a fiscal code MyPay refuses.
    let rows = vec![
        Row::tari("WSFLOW-1", 1, 1000),
        Row::tari("WSFLOW-2", 2, 2000).set(3, "NOTAFISCALCODE"),
        Row::tari("WSFLOW-3", 3, 3000),
    ];
    let flow = write_zip(home.path(), "c_g224-WSFLOW-1_4", csv_text(&rows).as_bytes());
    let run = Command::new("python3")
        .arg(repo().join("tests/data/mypay_ws_client.py"))
        .arg(&wsdl)
        .arg(&out)
        .args([PW_PADOVA, PW_FELTRE])
        .arg(&flow)
        .output()
        .expect("python3 (run ops/setup.sh)");
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "the zeep client failed: {}\n{text}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |op: &str| -> Vec<&Value> { lines.iter().filter(|l| l["op"] == op).collect() };
    let one = |op: &str| -> &Value {
        find(op)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {op}: {text}"))
    };

    let importa = one("importa");
    assert_eq!(importa["esito"], "OK", "{text}");
    let iuv = importa["iuv"].as_str().expect("generated IUV");
    assert!(iuv.starts_with("01") && iuv.len() == 17, "{iuv}");

    let bad: Vec<(String, String)> = find("importa-bad")
        .iter()
        .map(|l| {
            assert_eq!(l["esito"], "KO", "{l}");
            (
                l["tag"].as_str().unwrap().to_string(),
                l["fault"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let code = |tag: &str| bad.iter().find(|(t, _)| t == tag).unwrap().1.clone();
    assert_eq!(code("xsd"), "PAA_XML_NON_VALIDO");
    assert_eq!(code("tipo"), "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO");
    assert_eq!(code("cf"), "PAA_CODICE_FISCALE_NON_VALIDO");
    assert_eq!(code("azione"), "PAA_AZIONE_NON_VALIDO");
    assert_eq!(code("password"), "PAA_ENTE_NON_VALIDO");
    let iuds: Vec<String> = home
        .positions(&["--limit", "1000"])
        .iter()
        .map(|p| p["iud"].as_str().unwrap().to_string())
        .collect();
    assert!(!iuds.iter().any(|i| i.starts_with("ERP-BAD")), "{iuds:?}");

    let verifica = one("verifica");
    assert_eq!(verifica["esito"], "OK");
    assert_eq!(verifica["redirect"], 1);
    let checkout = format!("http://127.0.0.1:{sim_port}/checkout/carts/");
    assert!(
        verifica["url"].as_str().unwrap().starts_with(&checkout),
        "{verifica}"
    );
    assert_eq!(one("stampa")["esito"], "OK");
    assert!(one("stampa")["zip"].as_u64().unwrap() > 1000);

    assert_eq!(one("aperte")["count"], 1, "{text}");
    assert_eq!(one("aperte")["iuv_in"], true);
    assert_eq!(one("pendenti")["iuv_in"], true, "{text}");
    assert_eq!(one("pagati-prima")["fault"], "PAA_PAGAMENTO_NON_INIZIATO");

    let carrello = one("carrello");
    assert_eq!(carrello["esito"], "OK", "{text}");
    assert!(carrello["url"].as_str().unwrap().starts_with(&checkout));
    assert_eq!(one("checkout")["status"], 303, "{text}");
    assert_eq!(one("checkout")["location"], "http://erp.example/esito");
    let esito = one("esito-carrello");
    assert_eq!(esito["esito"], "PAGATO", "{text}");
    assert_eq!(esito["pagati"], true);
    assert_eq!(esito["rt"], true);
    assert_eq!(one("pagati")["iud"], true, "{text}");
    assert_eq!(one("pagati-ricevuta")["iud"], true, "{text}");
    assert_eq!(one("pagati-ricevuta")["rt"], true, "{text}");
    assert_eq!(one("storico")["count"], 2, "{text}");
    assert_eq!(one("altro-ente")["fault"], "PAA_ENTE_NON_VALIDO");
    assert_eq!(one("altro-ente")["pagati"], false);
    // Feltre asking with its own credentials finds nothing of Padova's.
    assert_eq!(one("altro-ente-suo")["fault"], "PAA_IUD_NON_VALIDO");

    // The import flow, through MyPay's upload and state calls.
    let autorizza = one("autorizza");
    assert_eq!(
        autorizza["upload"],
        format!("http://127.0.0.1:{}{WS}/upload", home.port)
    );
    assert_eq!(one("upload")["status"], 200);
    assert_eq!(
        one("upload")["answer"][0]["fileName"],
        "c_g224-WSFLOW-1_4.zip",
        "{text}"
    );
    assert!(one("upload-again")["answer"][0]["descrizione"]
        .as_str()
        .unwrap()
        .contains("già utilizzato"));
    assert_eq!(one("upload-forged")["answer"][0]["codice"], "400", "{text}");
    let stato = one("stato-import");
    assert_eq!(stato["stato"], "IMPORT_ESEGUITO", "{text}");
    assert_eq!(
        stato["files"]["scarti"],
        serde_json::json!([200, "PK"]),
        "{text}"
    );
    assert_eq!(
        stato["files"]["iuv"],
        serde_json::json!([200, "PK"]),
        "{text}"
    );
    assert_eq!(
        one("stato-import-ignoto")["fault"],
        "PAA_REQUEST_TOKEN_NON_VALIDO"
    );
    let scarti = unzip_text(&out.join("flow-scarti.zip"));
    assert!(
        scarti.contains("WSFLOW-2") && !scarti.contains("WSFLOW-1;"),
        "{scarti}"
    );
    let iuv = unzip_text(&out.join("flow-iuv.zip"));
    assert!(
        iuv.contains("WSFLOW-1") && iuv.contains("WSFLOW-3"),
        "{iuv}"
    );
    std::fs::remove_file(out.join("flow-scarti.zip")).unwrap();
    std::fs::remove_file(out.join("flow-iuv.zip")).unwrap();
    let _ = std::fs::remove_file(out.join("flow-avvisi.zip"));

    // Exports booked, written and downloaded: the canteen payments of the cart, in MyPay's
    // ESTRAZIONE_DOVUTI.
    assert_eq!(one("prenota")["fault"], Value::Null, "{text}");
    assert_eq!(one("prenota-ricevuta")["fault"], Value::Null, "{text}");
    assert_eq!(
        one("prenota-tipo")["fault"],
        "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO"
    );
    for l in find("stato-export") {
        let tag = l["tag"].as_str().unwrap();
        if tag == "tari" {
            // Only TARI asked for: today's receipts are all MENSA.
            assert_eq!(
                l["stato"], "EXPORT_ESEGUITO_NESSUN_DOVUTO_TROVATO",
                "{text}"
            );
            continue;
        }
        assert_eq!(l["stato"], "EXPORT_ESEGUITO", "{text}");
        assert_eq!(l["status"], 200, "{text}");
        let path = out.join(format!("export-{tag}.zip"));
        let csv = unzip_text(&path);
        assert!(csv.contains("ERP-C1") && csv.contains("ERP-C2"), "{csv}");
        // MyPay's RT columns only where `ricevuta` asked for them (even in 1.0), the receipt
        // as the node sent it in `rt`.
        let header: Vec<&str> = csv.lines().next().unwrap().split(';').collect();
        let rt = header.iter().position(|c| *c == "\"rt\"");
        assert_eq!(rt.is_some(), tag == "ricevuta", "{tag}: {header:?}");
        if let Some(i) = rt {
            assert_eq!(header.len(), 70, "{header:?}");
            for line in csv.lines().skip(1) {
                // Counted from the end: the causale before it may hold a `;`.
                let cell = line.rsplit(';').nth(header.len() - 1 - i).unwrap();
                let cell = cell.trim_matches('"');
                use base64::Engine as _;
                let xml = base64::engine::general_purpose::STANDARD
                    .decode(cell)
                    .unwrap();
                assert!(String::from_utf8_lossy(&xml).contains("paSendRT"), "{line}");
            }
        }
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(find("stato-export").len(), 4);

    // Every answer is valid against the WSDL's schema; every document against MyPay's XSD.
    let schemas = home.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let wrapper = answer_schemas(home.port, &schemas);
    let mut answers = Vec::new();
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".doc.xml") {
            documents.push(path);
        } else {
            answers.push(path);
        }
    }
    assert!(answers.len() >= 21, "one answer per call: {answers:?}");
    assert!(documents.len() >= 5, "{documents:?}");
    xmllint(&wrapper, &answers);
    xmllint(&schemas.join("PagInf.xsd"), &documents);
}

/// The payload of each operation, with `{ipa}` and `{pw}` to fill.
fn every_operation() -> Vec<(&'static str, bool, String)> {
    let v = "PFZlcnNhbWVudG8vPg=="; // "<Versamento/>"
    let ops: Vec<(&str, bool, &str)> = vec![
        ("paaSILInviaDovuti", true, "<password>{pw}</password><dovuti>{v}</dovuti>"),
        ("paaSILInviaCarrelloDovuti", true, "<password>{pw}</password><listaDovuti><elementoListaDovuti><codIpaEnte>{ipa}</codIpaEnte><password>00</password><dovuti>{v}</dovuti></elementoListaDovuti></listaDovuti>"),
        ("paaSILVerificaAvviso", true, "<password>{pw}</password><identificativoUnivocoVersamento>01000000000000001</identificativoUnivocoVersamento>"),
        ("paaSILChiediPagati", false, "<codIpaEnte>{ipa}</codIpaEnte><password>{pw}</password><idSession>x</idSession>"),
        ("paaSILChiediPagatiConRicevuta", false, "<codIpaEnte>{ipa}</codIpaEnte><password>{pw}</password><identificativoUnivocoDovuto>x</identificativoUnivocoDovuto>"),
        ("paaSILImportaDovuto", true, "<password>{pw}</password><dovuto>{v}</dovuto>"),
        ("paaSILRegistraPagamento", false, "<codIpaEnte>{ipa}</codIpaEnte><password>{pw}</password><identificativoUnivocoVersamento>x</identificativoUnivocoVersamento><singoloImportoPagato>1.00</singoloImportoPagato><dataEsitoSingoloPagamento>2026-12-01</dataEsitoSingoloPagamento><identificativoUnivocoRiscossione>x</identificativoUnivocoRiscossione><tipoIstitutoAttestante>B</tipoIstitutoAttestante><codiceIstitutiAttestante>x</codiceIstitutiAttestante><denominazioneAttestante>x</denominazioneAttestante>"),
        ("paaSILAutorizzaImportFlusso", true, "<password>{pw}</password>"),
        ("paaSILChiediStatoImportFlusso", true, "<requestToken>x</requestToken><password>{pw}</password>"),
        ("paaSILPrenotaExportFlusso", true, "<password>{pw}</password><dateFrom>2026-12-01</dateFrom><dateTo>2026-12-02</dateTo>"),
        ("paaSILPrenotaExportFlussoScaduti", true, "<password>{pw}</password><dataScadenza>2026-12-01</dataScadenza><tipiDovuto>TARI</tipiDovuto>"),
        ("paaSILPrenotaExportFlussoIncrementaleConRicevuta", true, "<password>{pw}</password><dateFrom>2026-12-01T00:00:00</dateFrom><ricevuta>true</ricevuta><incrementale>true</incrementale>"),
        ("paaSILChiediStatoExportFlusso", true, "<password>{pw}</password><requestToken>x</requestToken>"),
        ("paaSILChiediStatoExportFlussoScaduti", true, "<password>{pw}</password><requestToken>x</requestToken>"),
        ("paaSILChiediAvvisiPendenti", false, "<password>{pw}</password><codIpaEnte>{ipa}</codIpaEnte><dateFrom>2026-01-01</dateFrom><dateTo>2026-12-31</dateTo>"),
        ("paaSILChiediEsitoCarrelloDovuti", false, "<codIpaEnte>{ipa}</codIpaEnte><password>{pw}</password><idSessionCarrello>x</idSessionCarrello>"),
        ("paaSILChiediPosizioniAperte", false, "<password>{pw}</password><codIpaEnte>{ipa}</codIpaEnte><identificativoUnivocoPersonaFG><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPersonaFG>"),
        ("pivot:paaSILChiediElencoFlussiSPC", false, "<password>{pw}</password><codIpaEnte>{ipa}</codIpaEnte><identificativoPsp>P</identificativoPsp><tipoFlusso>R</tipoFlusso><dateFrom>2026-01-01</dateFrom><dateTo>2026-12-31</dateTo>"),
        ("pivot:paaSILChiediFlussoSPC", false, "<password>{pw}</password><codIpaEnte>{ipa}</codIpaEnte><identificativoPsp>P</identificativoPsp><tipoFlusso>R</tipoFlusso><identificativoFlusso>x</identificativoFlusso><dataOraFlusso>2026-01-01T00:00:00</dataOraFlusso>"),
        ("paaSILChiediStoricoPagamenti", false, "<password>{pw}</password><codIpaEnte>{ipa}</codIpaEnte><identificativoUnivocoPersonaFG><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPersonaFG><dataFrom>2026-01-01T00:00:00</dataFrom>"),
    ];
    ops.into_iter()
        .map(|(op, header, body)| (op, header, body.replace("{v}", v)))
        .collect()
}

/// `op` is `name` (MyPay's namespace, prefix `ppt`) or `pivot:name` (MyPivot's).
fn payload(op: &str, body: &str, ipa: &str, pw: &str) -> String {
    let qualified = if op.contains(':') {
        op.to_string()
    } else {
        format!("ppt:{op}")
    };
    format!(
        "<{qualified}>{}</{qualified}>",
        body.replace("{ipa}", ipa).replace("{pw}", pw)
    )
}

#[test]
fn another_entitys_password_is_refused_on_every_operation() {
    let home = Home::new();
    let _hub = Hub::start_serving(&home);
    let schemas = home.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let wrapper = answer_schemas(home.port, &schemas);
    let mut files = Vec::new();
    for (op, header, body) in every_operation() {
        // Feltre's password, naming Padova (in the header or the body, as the WSDL puts it).
        let ipa = if header { Some("c_g224") } else { None };
        let env = envelope(ipa, &payload(op, &body, "c_g224", PW_FELTRE));
        let action = op.trim_start_matches("pivot:");
        let (status, answer) = ws_call(home.port, action, &env);
        assert_eq!(status, 200, "{op}: {answer}");
        assert_eq!(
            fault_of(&answer).as_deref(),
            Some("PAA_ENTE_NON_VALIDO"),
            "{op}: {answer}"
        );
        assert!(
            answer.contains("Password non valida per ente [c_g224]"),
            "{op}: {answer}"
        );
        let file = schemas.join(format!("{action}.xml"));
        std::fs::write(&file, &answer).unwrap();
        files.push(file);
    }
    // Every refusal is itself a valid answer of its operation.
    xmllint(&wrapper, &files);
    // No password at all, or an entity with none configured: refused the same way.
    let (_, answer) = ws_call(
        home.port,
        "paaSILChiediPagati",
        &envelope(
            None,
            "<ppt:paaSILChiediPagati><codIpaEnte>c_g224</codIpaEnte><idSession>x</idSession></ppt:paaSILChiediPagati>",
        ),
    );
    assert_eq!(fault_of(&answer).as_deref(), Some("PAA_ENTE_NON_VALIDO"));
    let (_, answer) = ws_call(
        home.port,
        "paaSILChiediPagati",
        &envelope(
            None,
            "<ppt:paaSILChiediPagati><codIpaEnte>c_nope</codIpaEnte><password>whatever1</password><idSession>x</idSession></ppt:paaSILChiediPagati>",
        ),
    );
    assert!(
        answer.contains("codice IPA Ente [c_nope] non valido"),
        "{answer}"
    );
}

#[test]
fn bad_requests_get_mypay_faults_and_change_nothing() {
    let home = Home::new();
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let before = positions_count(&home);
    let importa = |dovuto: &str| {
        envelope(
            Some("c_g224"),
            &format!("<ppt:paaSILImportaDovuto><password>{PW_PADOVA}</password><dovuto>{dovuto}</dovuto><flagGeneraIuv>true</flagGeneraIuv></ppt:paaSILImportaDovuto>"),
        )
    };
    // Not base64; base64 of what is not a Versamento.
    for dovuto in ["%%%not-base64%%%", "bm90IHhtbA=="] {
        let (status, answer) = ws_call(p, "paaSILImportaDovuto", &importa(dovuto));
        assert_eq!(status, 200);
        assert_eq!(
            fault_of(&answer).as_deref(),
            Some("PAA_XML_NON_VALIDO"),
            "{answer}"
        );
        assert!(answer.contains("<esito>KO</esito>"), "{answer}");
    }
    // A body that is no operation: a SOAP Fault naming MyPay's "not implemented".
    let (status, answer) = ws_call(p, "x", &envelope(None, "<ppt:paaSILNonEsiste/>"));
    assert_eq!(status, 500);
    assert!(answer.contains("<soapenv:Fault>"), "{answer}");
    assert!(answer.contains("PAA_SERVIZIO_NON_IMPLEMENTATO"), "{answer}");
    // Not XML at all, the SOAPAction naming an operation: that operation's KO.
    let (status, answer) = ws_call(p, "paaSILImportaDovuto", "{\"not\": \"xml\"}");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fault_of(&answer).as_deref(), Some("PAA_XML_NON_VALIDO"));
    // A valid position; with one secondary beneficiary it carries the secondary transfer, as a
    // 1_4 row's *EnteSecondario columns.
    let versamento = r#"<Versamento xmlns="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/"><versioneOggetto>6.2.0</versioneOggetto><soggettoPagatore><identificativoUnivocoPagatore><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPagatore><anagraficaPagatore>Mario Rossi</anagraficaPagatore></soggettoPagatore><datiVersamento><dataEsecuzionePagamento>2099-12-31</dataEsecuzionePagamento><identificativoUnivocoDovuto>SEC-1</identificativoUnivocoDovuto><importoSingoloVersamento>10.00</importoSingoloVersamento><identificativoTipoDovuto>TARI</identificativoTipoDovuto><causaleVersamento>TARI</causaleVersamento><datiSpecificiRiscossione>9/0101100IM/</datiSpecificiRiscossione></datiVersamento><azione>I</azione></Versamento>"#;
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secondary = |iban: &str| {
        b64(&format!(
            r#"<DovutiEntiSecondari xmlns="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/"><versioneOggetto>6.2.0</versioneOggetto><datiVersamentoEntiSecondari><codiceFiscaleBeneficiario>00133880252</codiceFiscaleBeneficiario><denominazioneBeneficiario>Comune di Feltre</denominazioneBeneficiario><ibanAccreditoBeneficiario>{iban}</ibanAccreditoBeneficiario><causaleVersamento>Quota Feltre</causaleVersamento><datiSpecificiRiscossione>9/0101100IM/</datiSpecificiRiscossione><importoSingoloVersamento>3.00</importoSingoloVersamento></datiVersamentoEntiSecondari></DovutiEntiSecondari>"#
        ))
    };
    const IBAN_FELTRE: &str = "IT60X0542811101000000123456";
    let with_secondaries = |iud: &str, docs: &[String]| {
        let list: String = docs
            .iter()
            .map(|d| format!("<elementoListaDovutiEntiSecondari><dovutiEntiSecondari>{d}</dovutiEntiSecondari></elementoListaDovutiEntiSecondari>"))
            .collect();
        envelope(
            Some("c_g224"),
            &format!("<ppt:paaSILImportaDovuto><password>{PW_PADOVA}</password><dovuto>{}</dovuto><flagGeneraIuv>true</flagGeneraIuv><listaDovutiEntiSecondari>{list}</listaDovutiEntiSecondari></ppt:paaSILImportaDovuto>", b64(&versamento.replace("SEC-1", iud))),
        )
    };
    // Refused, whole: two secondary entities, one the XSD refuses, one the row rules refuse.
    for (docs, code) in [
        (
            vec![secondary(IBAN_FELTRE), secondary(IBAN_FELTRE)],
            "PAA_LIMITAZIONE_ENTI_SECONDARI_ERROR",
        ),
        (vec!["eA==".to_string()], "PAA_XML_NON_VALIDO"),
        (
            vec![secondary("IT00NOTANIBAN")],
            "PAA_ENTE_SECONDARIO_NON_VALIDO",
        ),
    ] {
        let (_, answer) = ws_call(p, "paaSILImportaDovuto", &with_secondaries("SEC-0", &docs));
        assert_eq!(fault_of(&answer).as_deref(), Some(code), "{answer}");
    }
    assert_eq!(
        positions_count(&home),
        before,
        "a refused call writes nothing"
    );
    let (_, answer) = ws_call(
        p,
        "paaSILImportaDovuto",
        &with_secondaries("SEC-1", &[secondary(IBAN_FELTRE)]),
    );
    assert!(answer.contains("<esito>OK</esito>"), "{answer}");
    let stored = home.positions(&["--iud", "SEC-1"]);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let second = &stored[0]["dovuto"]["secondary"];
    assert_eq!(second["fiscal_code"], "00133880252", "{stored:?}");
    assert_eq!(second["iban"], IBAN_FELTRE, "{stored:?}");
    assert_eq!(second["amount"], 300, "{stored:?}");
    // A cart with a secondary entity: one payment, as MyPay; one secondary.
    let dovuti = |iuds: &[&str]| {
        let singles: String = iuds.iter().map(|iud| format!("<datiSingoloVersamento><identificativoUnivocoDovuto>{iud}</identificativoUnivocoDovuto><importoSingoloVersamento>10.00</importoSingoloVersamento><identificativoTipoDovuto>MENSA</identificativoTipoDovuto><causaleVersamento>Mensa</causaleVersamento><datiSpecificiRiscossione>9/0107101TS/</datiSpecificiRiscossione></datiSingoloVersamento>")).collect();
        b64(&format!(
            r#"<Dovuti xmlns="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/"><versioneOggetto>6.2.0</versioneOggetto><soggettoPagatore><identificativoUnivocoPagatore><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPagatore><anagraficaPagatore>Mario Rossi</anagraficaPagatore></soggettoPagatore><datiVersamento><tipoVersamento>ALL</tipoVersamento>{singles}</datiVersamento></Dovuti>"#
        ))
    };
    let cart = |iuds: &[&str], docs: &[String]| {
        let list: String = docs
            .iter()
            .map(|d| format!("<elementoListaDovutiEntiSecondari><dovutiEntiSecondari>{d}</dovutiEntiSecondari></elementoListaDovutiEntiSecondari>"))
            .collect();
        let answer = ws_call(
            p,
            "paaSILInviaCarrelloDovuti",
            &envelope(
                Some("c_g224"),
                &format!("<ppt:paaSILInviaCarrelloDovuti><password>{PW_PADOVA}</password><listaDovuti><elementoListaDovuti><codIpaEnte>c_g224</codIpaEnte><password>00</password><dovuti>{}</dovuti></elementoListaDovuti></listaDovuti><listaDovutiEntiSecondari>{list}</listaDovutiEntiSecondari></ppt:paaSILInviaCarrelloDovuti>", dovuti(iuds)),
            ),
        )
        .1;
        fault_of(&answer)
    };
    let before_carts = positions_count(&home);
    assert_eq!(
        cart(&["SEC-C1", "SEC-C2"], &[secondary(IBAN_FELTRE)]).as_deref(),
        Some("PAA_LIMITE_MASSIMO_DOVUTI_MULTIBENEFICIARI")
    );
    assert_eq!(
        cart(
            &["SEC-C1"],
            &[secondary(IBAN_FELTRE), secondary(IBAN_FELTRE)]
        )
        .as_deref(),
        Some("PAA_LIMITE_MASSIMO_DOVUTI_ENTI_SECONDARI")
    );
    assert_eq!(positions_count(&home), before_carts);
    // Accepted (no Checkout runs here, so the call ends in PAA_SYSTEM_ERROR after the position
    // is written, see docs/MYPAY.md): the position carries the secondary transfer.
    cart(&["SEC-C1"], &[secondary(IBAN_FELTRE)]);
    let stored = home.positions(&["--iud", "SEC-C1"]);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        stored[0]["dovuto"]["secondary"]["fiscal_code"],
        "00133880252"
    );
    // Without a secondary, the same position goes in: nothing else refused it.
    let (_, answer) = ws_call(
        p,
        "paaSILImportaDovuto",
        &importa(&b64(&versamento.replace("SEC-1", "SEC-2"))),
    );
    assert!(answer.contains("<esito>OK</esito>"), "{answer}");
    assert_eq!(positions_count(&home), before + 3);
    // The SOAP answers are counted by operation and by fault code.
    let metrics = http(p, "GET", "/metrics", None, &[], None).body;
    assert!(
        metrics.contains("snodo_mypay_ws_faults_total{operation=\"paaSILImportaDovuto\",code=\"PAA_XML_NON_VALIDO\"} 4"),
        "{metrics}"
    );
    // The WSDL names this hub; MyPay's own address for it answers too.
    let wsdl = http(p, "GET", &format!("{WS}.wsdl"), None, &[], None);
    assert!(wsdl.body.contains(&format!(
        "<soap:address location=\"http://127.0.0.1:{p}{WS}\"/>"
    )));
    let (status, _) = {
        let r = http(
            p,
            "POST",
            "/ws/pa/",
            None,
            &[
                ("Content-Type", "text/xml"),
                ("SOAPAction", "paaSILImportaDovuto"),
            ],
            Some(&importa("bm90IHhtbA==")),
        );
        (r.status, r.body)
    };
    assert_eq!(status, 200);
}

#[test]
fn mypivot_lists_the_settlement_flows_and_links_each_one() {
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger");
    let home = sim_paid_home(&ledger, 6);
    let date = sim_ledger_date(&ledger);
    run_sim(
        &home,
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "--publish-flows",
            "--date",
            &date,
        ],
    );
    let port = free_port();
    let _psps = SimPsps::serve(&home, &ledger, port);
    home.append_config(&sim_fdr_table(port));
    let pulled = json_lines(&home.snodo(&["reports", "-c", "config.toml", "pull"]));
    assert!(
        pulled.iter().any(|s| s["stored"].as_i64().unwrap() > 0),
        "{pulled:?}"
    );
    let listed = json_lines(&home.snodo(&["reports", "-c", "config.toml", "--entity", "c_g224"]));
    let flow = &listed[0];
    let (iuf, psp) = (flow["iuf"].as_str().unwrap(), flow["psp"].as_str().unwrap());
    let _hub = Hub::start_serving(&home);
    let today = chrono_today();
    let elenco = |pw: &str, psp: &str| {
        ws_call(
            home.port,
            "paaSILChiediElencoFlussiSPC",
            &envelope(None, &payload("pivot:paaSILChiediElencoFlussiSPC", &format!("<password>{{pw}}</password><codIpaEnte>{{ipa}}</codIpaEnte><identificativoPsp>{psp}</identificativoPsp><tipoFlusso>R</tipoFlusso><dateFrom>{today}</dateFrom><dateTo>{today}</dateTo>"), "c_g224", pw)),
        )
        .1
    };
    let answer = elenco(PW_PADOVA, psp);
    assert!(
        answer.contains(&format!(
            "<identificativoFlusso>{iuf}</identificativoFlusso>"
        )),
        "{answer}"
    );
    assert!(elenco(PW_PADOVA, "NOPSP").contains("<totRestituiti>0</totRestituiti>"));
    assert_eq!(
        fault_of(&elenco(PW_FELTRE, psp)).as_deref(),
        Some("PAA_ENTE_NON_VALIDO")
    );

    let flusso = |iuf: &str| {
        ws_call(
            home.port,
            "paaSILChiediFlussoSPC",
            &envelope(None, &payload("pivot:paaSILChiediFlussoSPC", &format!("<password>{{pw}}</password><codIpaEnte>{{ipa}}</codIpaEnte><identificativoPsp>{psp}</identificativoPsp><tipoFlusso>R</tipoFlusso><identificativoFlusso>{iuf}</identificativoFlusso><dataOraFlusso>2026-01-01T00:00:00</dataOraFlusso>"), "c_g224", PW_PADOVA)),
        )
        .1
    };
    let answer = flusso(iuf);
    assert!(answer.contains("<stato>OK</stato>"), "{answer}");
    let url = answer
        .split("<downloadUrl>")
        .nth(1)
        .and_then(|s| s.split("</downloadUrl>").next())
        .unwrap()
        .replace("&amp;", "&");
    let path = &url[format!("http://127.0.0.1:{}", home.port).len()..];
    let got = http(home.port, "GET", path, None, &[], None);
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.body.contains(&format!(
            "<identificativoFlusso>{iuf}</identificativoFlusso>"
        )),
        "{}",
        got.body
    );
    // A link changed by one character, or naming another flow, is refused.
    let forged = path.replace("token=", "token=0");
    assert_eq!(http(home.port, "GET", &forged, None, &[], None).status, 403);
    assert!(flusso("NOPE").contains("<stato>KO</stato>"));
    // Both answers are valid against MyPivot's schema.
    let schemas = home.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let wrapper = answer_schemas(home.port, &schemas);
    let files: Vec<_> = [elenco(PW_PADOVA, psp), answer]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let f = schemas.join(format!("pivot-{i}.xml"));
            std::fs::write(&f, a).unwrap();
            f
        })
        .collect();
    xmllint(&wrapper, &files);
}

/// Today in Rome, as `YYYY-MM-DD` (the hub lists flows by the day it received them).
fn chrono_today() -> String {
    let out = Command::new("date")
        .env("TZ", "Europe/Rome")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn failed_passwords_are_bounded_and_faults_leave_events() {
    let home = Home::new();
    let cfg = std::fs::read_to_string(home.config())
        .unwrap()
        .replace("[http]\n", "[http]\nauth_failures_per_minute = 3\n");
    std::fs::write(home.config(), cfg).unwrap();
    let _hub = Hub::start_serving(&home);
    let ask = |pw: &str| {
        ws_call(
            home.port,
            "paaSILChiediPagati",
            &envelope(
                None,
                &format!("<ppt:paaSILChiediPagati><codIpaEnte>c_g224</codIpaEnte><password>{pw}</password><idSession>nope</idSession></ppt:paaSILChiediPagati>"),
            ),
        )
    };
    // Three wrong passwords, then the address is turned away before any password is looked at,
    // even the right one, with the operation's own fault and HTTP 429.
    for _ in 0..3 {
        let (status, answer) = ask("wrong-pass-9");
        assert_eq!(status, 200);
        assert_eq!(fault_of(&answer).as_deref(), Some("PAA_ENTE_NON_VALIDO"));
    }
    for pw in ["wrong-pass-9", PW_PADOVA] {
        let (status, answer) = ask(pw);
        assert_eq!(status, 429, "{answer}");
        assert_eq!(fault_of(&answer).as_deref(), Some("PAA_SYSTEM_ERROR"));
    }
    // The refused passwords are events of the entity named; the turned-away calls are not.
    let faults = wait_for(10, || store_events(&home, "soap.fault").len() >= 3);
    assert!(faults);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let events = store_events(&home, "soap.fault");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.entity == "c_g224"
        && e.payload["service"] == "mypay"
        && e.payload["fault"] == "PAA_ENTE_NON_VALIDO"));
}

#[test]
fn the_regions_password_reads_a_payers_positions_across_entities() {
    let home = Home::new();
    home.append_config("\n[api]\nmypay_admin_entity = \"r_veneto\"\n");
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    // The same payer owes Padova and Feltre.
    for (entity, key, iud) in [
        ("c_g224", KEY_PADOVA, "ADM-PD"),
        ("c_d530", KEY_FELTRE, "ADM-FE"),
    ] {
        let r = http(
            p,
            "POST",
            &format!("/api/v1/entities/{entity}/positions"),
            Some(key),
            &[],
            Some(&api_position(iud, 4200).to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let aperte = |filter: Option<&str>, pw: &str| {
        let ipa = filter
            .map(|f| format!("<codIpaEnte>{f}</codIpaEnte>"))
            .unwrap_or_default();
        ws_call(
            p,
            "paaSILChiediPosizioniAperte",
            &envelope(
                None,
                &format!("<ppt:paaSILChiediPosizioniAperte><password>{pw}</password>{ipa}<identificativoUnivocoPersonaFG><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>rssmra85t10a562s</codiceIdentificativoUnivoco></identificativoUnivocoPersonaFG></ppt:paaSILChiediPosizioniAperte>"),
            ),
        )
        .1
    };
    let entities = |answer: &str| -> Vec<String> {
        answer
            .split("<codIpaEnte>")
            .skip(1)
            .map(|s| s.split('<').next().unwrap().to_string())
            .collect()
    };
    const PW_VENETO: &str = "veneto-ws-03";
    // The Region: every entity's, or one entity's when it names one.
    let mut all = entities(&aperte(None, PW_VENETO));
    all.sort();
    assert_eq!(all, ["c_d530", "c_g224"]);
    assert_eq!(entities(&aperte(Some("c_d530"), PW_VENETO)), ["c_d530"]);
    // An entity: its own, and only with its own password and code.
    assert_eq!(entities(&aperte(Some("c_g224"), PW_PADOVA)), ["c_g224"]);
    let answer = aperte(None, PW_PADOVA);
    assert_eq!(
        fault_of(&answer).as_deref(),
        Some("PAA_ENTE_NON_VALIDO"),
        "{answer}"
    );
    let answer = aperte(Some("c_d530"), PW_PADOVA);
    assert_eq!(
        fault_of(&answer).as_deref(),
        Some("PAA_ENTE_NON_VALIDO"),
        "{answer}"
    );
}

#[test]
fn a_cart_sent_again_after_checkout_was_down_is_the_same_payments() {
    let sim_port = free_port();
    let home = home_with_stand_ins(sim_port);
    let _hub = Hub::start_serving(&home);
    let dovuti = r#"<Dovuti xmlns="http://www.regione.veneto.it/schemas/2012/Pagamenti/Ente/"><versioneOggetto>6.2.0</versioneOggetto><soggettoPagatore><identificativoUnivocoPagatore><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPagatore><anagraficaPagatore>Mario Rossi</anagraficaPagatore></soggettoPagatore><datiVersamento><tipoVersamento>ALL</tipoVersamento><datiSingoloVersamento><identificativoUnivocoDovuto>RETRY-1</identificativoUnivocoDovuto><importoSingoloVersamento>25.00</importoSingoloVersamento><identificativoTipoDovuto>MENSA</identificativoTipoDovuto><causaleVersamento>Mensa</causaleVersamento><datiSpecificiRiscossione>9/0107101TS/</datiSpecificiRiscossione></datiSingoloVersamento></datiVersamento></Dovuti>"#;
    use base64::Engine as _;
    let call = |doc: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(doc);
        ws_call(
            home.port,
            "paaSILInviaDovuti",
            &envelope(
                Some("c_g224"),
                &format!("<ppt:paaSILInviaDovuti><password>{PW_PADOVA}</password><dovuti>{encoded}</dovuti></ppt:paaSILInviaDovuti>"),
            ),
        )
        .1
    };
    // Checkout cannot be reached: the call fails, the payment's position is kept.
    let answer = call(dovuti);
    assert_eq!(
        fault_of(&answer).as_deref(),
        Some("PAA_SYSTEM_ERROR"),
        "{answer}"
    );
    // Checkout is back: the same payment again opens the cart on that position, no duplicate.
    let _sim = StandIns::start(&home, sim_port, None);
    let answer = call(dovuti);
    assert!(answer.contains("<esito>OK</esito>"), "{answer}");
    assert!(
        answer.contains(&format!("http://127.0.0.1:{sim_port}/checkout/carts/")),
        "{answer}"
    );
    let retry = home.positions(&["--iud", "RETRY-1"]);
    assert_eq!(retry.len(), 1, "{retry:?}");
    // Another payment under the same IUD is still MyPay's duplicate.
    let answer = call(&dovuti.replace("25.00", "26.00"));
    assert_eq!(
        fault_of(&answer).as_deref(),
        Some("PAA_IUD_DUPLICATO"),
        "{answer}"
    );
}

/// A `paaSILRegistraPagamento` body for `ipa` with `pw`; `{iuv}`, `{amount}`, `{date}` filled.
fn registra(ipa: &str, pw: &str, iuv: &str, amount: &str, date: &str) -> String {
    envelope(
        None,
        &format!("<ppt:paaSILRegistraPagamento><codIpaEnte>{ipa}</codIpaEnte><password>{pw}</password><identificativoUnivocoVersamento>{iuv}</identificativoUnivocoVersamento><codiceContestoPagamento>n/a</codiceContestoPagamento><singoloImportoPagato>{amount}</singoloImportoPagato><dataEsitoSingoloPagamento>{date}</dataEsitoSingoloPagamento><indiceDatiSingoloPagamento>1</indiceDatiSingoloPagamento><identificativoUnivocoRiscossione>CASSA-2026-77</identificativoUnivocoRiscossione><tipoIstitutoAttestante>B</tipoIstitutoAttestante><codiceIstitutiAttestante>ABI03069</codiceIstitutiAttestante><denominazioneAttestante>Tesoreria comunale</denominazioneAttestante></ppt:paaSILRegistraPagamento>"),
    )
}

#[test]
fn a_payment_made_outside_pagopa_closes_the_position_at_the_node() {
    let home = Home::new();
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let made = http(
        p,
        "POST",
        "/api/v1/entities/c_g224/positions",
        Some(KEY_PADOVA),
        &[],
        Some(&api_position("CASSA-1", 4200).to_string()),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.json();
    let iuv = made["iuv"].as_str().unwrap().to_string();
    let notice = made["noticeNumber"].as_str().unwrap().to_string();
    let view = || get(p, "/api/v1/entities/c_g224/positions/CASSA-1", KEY_PADOVA).json();
    let version = view()["version"].clone();
    let verify = || {
        post_soap(
            p,
            "paVerifyPaymentNotice",
            &verify_body(PADOVA, BROKER, STATION, &notice),
        )
    };
    assert_eq!(fault_of(&verify()), None, "payable before");

    // Refused, each with MyPay's code, none writing anything.
    let refused = [
        (
            registra("c_g224", PW_FELTRE, &iuv, "42.00", "2026-03-02"),
            "PAA_ENTE_NON_VALIDO",
        ),
        (
            registra("c_d530", PW_FELTRE, &iuv, "42.00", "2026-03-02"),
            "PAA_IUV_NON_VALIDO",
        ),
        (
            registra(
                "c_g224",
                PW_PADOVA,
                "01999999999999999",
                "42.00",
                "2026-03-02",
            ),
            "PAA_IUV_NON_VALIDO",
        ),
        (
            registra("c_g224", PW_PADOVA, &iuv, "42", "2026-03-02"),
            "PAA_XML_NON_VALIDO",
        ),
        (
            registra("c_g224", PW_PADOVA, &iuv, "-42.00", "2026-03-02"),
            "PAA_XML_NON_VALIDO",
        ),
        (
            registra("c_g224", PW_PADOVA, &iuv, "42.00", "02/03/2026"),
            "PAA_XML_NON_VALIDO",
        ),
        (
            registra("c_g224", PW_PADOVA, &iuv, "41.99", "2026-03-02"),
            "PAA_IMPORTO_SINGOLO_VERSAMENTO_NON_VALIDO",
        ),
        (
            registra("c_g224", PW_PADOVA, &iuv, "42.00", "2026-03-02")
                .replace("<tipoIstitutoAttestante>B<", "<tipoIstitutoAttestante>BB<"),
            "PAA_XML_NON_VALIDO",
        ),
    ];
    let schemas = home.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let wrapper = answer_schemas(p, &schemas);
    let mut files = Vec::new();
    for (i, (body, code)) in refused.iter().enumerate() {
        let (status, answer) = ws_call(p, "paaSILRegistraPagamento", body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(fault_of(&answer).as_deref(), Some(*code), "{i}: {answer}");
        assert!(answer.contains("<esito>KO</esito>"), "{answer}");
        let f = schemas.join(format!("refused-{i}.xml"));
        std::fs::write(&f, &answer).unwrap();
        files.push(f);
    }
    assert_eq!(view()["status"], "active");
    assert_eq!(view()["version"], version);
    assert_eq!(fault_of(&verify()), None, "still payable");
    assert!(store_events(&home, "position.paid").is_empty());

    // Recorded: paid in the registry, durable before the answer, an event, not payable.
    let (status, answer) = ws_call(
        p,
        "paaSILRegistraPagamento",
        &registra("c_g224", PW_PADOVA, &iuv, "42.00", "2026-03-02"),
    );
    assert_eq!(status, 200);
    assert!(answer.contains("<esito>OK</esito>"), "{answer}");
    assert_eq!(fault_of(&answer), None, "{answer}");
    let f = schemas.join("ok.xml");
    std::fs::write(&f, &answer).unwrap();
    files.push(f);
    xmllint(&wrapper, &files);
    assert_eq!(view()["status"], "paid");
    assert_eq!(
        fault_of(&verify()).as_deref(),
        Some("PAA_PAGAMENTO_DUPLICATO")
    );
    let paid = store_events(&home, "position.paid");
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].subject, "CASSA-1");
    assert_eq!(
        paid[0].payload["outside_pagopa"]["identificativoUnivocoRiscossione"],
        "CASSA-2026-77"
    );
    // MyPay's own views: no longer open for the payer, not payable through MyPay either.
    let (_, aperte) = ws_call(
        p,
        "paaSILChiediPosizioniAperte",
        &envelope(
            None,
            &format!("<ppt:paaSILChiediPosizioniAperte><password>{PW_PADOVA}</password><codIpaEnte>c_g224</codIpaEnte><identificativoUnivocoPersonaFG><tipoIdentificativoUnivoco>F</tipoIdentificativoUnivoco><codiceIdentificativoUnivoco>RSSMRA85T10A562S</codiceIdentificativoUnivoco></identificativoUnivocoPersonaFG></ppt:paaSILChiediPosizioniAperte>"),
        ),
    );
    assert!(!aperte.contains("<dovuti>"), "{aperte}");
    let (_, verifica) = ws_call(
        p,
        "paaSILVerificaAvviso",
        &envelope(
            Some("c_g224"),
            &format!("<ppt:paaSILVerificaAvviso><password>{PW_PADOVA}</password><identificativoUnivocoVersamento>{iuv}</identificativoUnivocoVersamento></ppt:paaSILVerificaAvviso>"),
        ),
    );
    assert_eq!(fault_of(&verifica).as_deref(), Some("PAA_IUV_NON_VALIDO"));
    // The same report again: OK, as MyPay, and nothing written twice.
    let (_, again) = ws_call(
        p,
        "paaSILRegistraPagamento",
        &registra("c_g224", PW_PADOVA, &iuv, "42.00", "2026-03-02"),
    );
    assert!(again.contains("<esito>OK</esito>"), "{again}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(store_events(&home, "position.paid").len(), 1);
}

/// The schema of `esterni-per-pa.wsdl`'s messages, in `dir`: its two embedded schemas, the XSDs
/// they import (with the `\/` fix of MyPay's Java), and a wrapper with the SOAP envelope.
fn esterni_schemas(dir: &Path) -> std::path::PathBuf {
    let specs = repo().join("adapters/specs/mypay");
    let wsdl = std::fs::read_to_string(specs.join("esterni-per-pa.wsdl")).unwrap();
    for xsd in [
        "PagInf_RP_Esito_6_2_0.xsd",
        "PagInf_Dovuti_Pagati_6_2_0.xsd",
    ] {
        let text = std::fs::read_to_string(specs.join(xsd)).unwrap();
        std::fs::write(dir.join(xsd), text.replace(r"\/", "/")).unwrap();
    }
    let schemas: Vec<&str> = wsdl
        .split("<xsd:schema ")
        .skip(1)
        .map(|s| s.split("</xsd:schema>").next().unwrap())
        .collect();
    assert_eq!(schemas.len(), 2, "the WSDL embeds two schemas");
    let decls = r#"<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:ppt="http://www.regione.veneto.it/pagamenti/pa/" xmlns:ppthead="http://www.regione.veneto.it/pagamenti/pa/ppthead" xmlns:pay_i="http://www.regione.veneto.it/schemas/2012/Pagamenti/" "#;
    for (name, body) in [
        ("esterni-head.xsd", schemas[0]),
        ("esterni-ppt.xsd", schemas[1]),
    ] {
        std::fs::write(dir.join(name), format!("{decls}{body}</xsd:schema>")).unwrap();
    }
    let envelope = repo().join("adapters/specs/pagopa/SANP3.12.0/xsd-common/envelope.xsd");
    let wrapper = dir.join("esterni.xsd");
    std::fs::write(
        &wrapper,
        format!(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:snodo:test:esterni">
  <xs:import namespace="http://schemas.xmlsoap.org/soap/envelope/" schemaLocation="{}"/>
  <xs:import namespace="http://www.regione.veneto.it/pagamenti/pa/ppthead" schemaLocation="esterni-head.xsd"/>
  <xs:import namespace="http://www.regione.veneto.it/pagamenti/pa/" schemaLocation="esterni-ppt.xsd"/>
</xs:schema>"#,
            envelope.display()
        ),
    )
    .unwrap();
    wrapper
}

/// Region notice numbers (segregation code 03), distinct per `n`.
fn veneto_notice(n: u64) -> String {
    let seg = snodo_core::SegregationCode::parse("03").unwrap();
    snodo_core::Iuv::generate(seg, 700_000 + n)
        .unwrap()
        .notice_number()
        .unwrap()
        .as_str()
        .to_string()
}

#[test]
fn an_entity_system_built_for_mypay_answers_the_node_in_real_time() {
    entity_system_built_for_mypay("mypay-soap");
}

/// MyPay4's new-model call (`paExternalVerifyPaymentNotice`), which MyPay4's own
/// paVerifyPaymentNotice makes: the same system's answers, by notice number, without an IBAN.
#[test]
fn an_entity_system_built_for_mypay4s_new_model_answers_the_node_too() {
    entity_system_built_for_mypay("mypay-external-verify");
}

fn entity_system_built_for_mypay(mode: &str) {
    const VENETO: &str = "80007580279";
    let old_call = mode == "mypay-soap";
    let sim_port = free_port();
    let home = home_with_stand_ins(sim_port);
    // The Region's ZTL permits live in a system built for MyPay's esterni-per-pa.wsdl.
    let cfg = std::fs::read_to_string(home.config()).unwrap();
    let json_mode = format!(
        "external = {{ url = \"${{SNODO_DEMO_EXTERNAL_URL:-http://127.0.0.1:{sim_port}/external/r_veneto}}\", timeout = \"2s\" }}"
    );
    assert!(cfg.contains(&json_mode), "the demo's ZTL changed");
    let cfg = cfg.replace(
        &json_mode,
        &format!("anonymous_payer_allowed = true\n  external = {{ url = \"http://127.0.0.1:{sim_port}/external-soap/r_veneto\", timeout = \"2s\", mode = \"{mode}\" }}"),
    );
    std::fs::write(home.config(), cfg).unwrap();
    let [ok, unknown, annulled, failing, late, other_iban, expired] =
        [1, 2, 3, 4, 5, 6, 7].map(veneto_notice);
    let position =
        |cents: u64| serde_json::json!({"amountCents": cents, "causale": "Permesso ZTL 2027"});
    let mut answers = serde_json::Map::new();
    let mut payable = position(2500);
    payable["dueDate"] = serde_json::json!("2099-11-30");
    answers.insert(ok.clone(), payable);
    answers.insert(annulled.clone(), serde_json::json!({"status": 410}));
    answers.insert(failing.clone(), serde_json::json!({"status": 500}));
    let mut slow = position(100);
    slow["delayMs"] = serde_json::json!(6000);
    answers.insert(late.clone(), slow);
    let mut elsewhere = position(700);
    elsewhere["iban"] = serde_json::json!("IT60X0542811101000000123456");
    answers.insert(other_iban.clone(), elsewhere);
    answers.insert(
        expired.clone(),
        serde_json::json!({"faultCode": "PAA_PAGAMENTO_SCADUTO"}),
    );
    let file = home.path().join("external.json");
    std::fs::write(&file, Value::Object(answers).to_string()).unwrap();
    let record = home.path().join("asked");
    std::fs::create_dir_all(&record).unwrap();
    let sim = Command::new(BIN)
        .args(["sim", "-c", "config.toml", "--serve"])
        .arg(format!("127.0.0.1:{sim_port}"))
        .arg("--external-file")
        .arg(&file)
        .arg("--external-record")
        .arg(&record)
        .current_dir(home.path())
        .env("SNODO_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sim = Kill(sim);
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(sim.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("stand-ins on"), "{line}");
    }
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let verify = |notice: &str| {
        let started = std::time::Instant::now();
        let answer = post_soap(
            p,
            "paVerifyPaymentNotice",
            &verify_body(VENETO, BROKER, STATION, notice),
        );
        (answer, started.elapsed())
    };

    let (answer, _) = verify(&ok);
    assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
    assert!(answer.contains("<amount>25.00</amount>"), "{answer}");
    // Only the new-model answer carries a due date.
    assert_eq!(
        answer.contains("<dueDate>2099-11-30</dueDate>"),
        !old_call,
        "{answer}"
    );
    use snodo_adapters::pagopa::{self as soap, Request};
    let get_payment = soap::render_request(&Request::GetPaymentV2(soap::GetPaymentRequest {
        id_pa: VENETO.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: soap::QrCode {
            fiscal_code: VENETO.into(),
            notice_number: ok.clone(),
        },
        ..Default::default()
    }));
    let activated = post_soap(p, "paGetPaymentV2", &get_payment);
    assert!(activated.contains("<outcome>OK</outcome>"), "{activated}");
    assert!(
        activated.contains("<paymentAmount>25.00</paymentAmount>"),
        "{activated}"
    );
    assert!(
        activated.contains("IT23Z0622512100100000300299"),
        "{activated}"
    );
    let lookup = |notice: &str| -> Vec<Value> {
        let out = home.snodo(&[
            "positions",
            "-c",
            "config.toml",
            "--entity",
            "r_veneto",
            "--notice",
            notice,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let stored = lookup(&ok);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["amount_cents"], 2500);
    assert_eq!(stored[0]["dovuto"]["debt_type"], "ZTL");

    assert_eq!(
        fault_of(&verify(&unknown).0).as_deref(),
        Some("PAA_PAGAMENTO_SCONOSCIUTO")
    );
    assert_eq!(
        fault_of(&verify(&annulled).0).as_deref(),
        Some("PAA_PAGAMENTO_ANNULLATO")
    );
    assert_eq!(
        fault_of(&verify(&expired).0).as_deref(),
        Some("PAA_PAGAMENTO_SCADUTO"),
        "MyPay hands the entity system's expiry to the node"
    );
    assert!(lookup(&expired).is_empty(), "nothing stored from {expired}");
    // The new-model answer names no account: the debt type's is credited whatever the entry says.
    let broken: Vec<&String> = if old_call {
        vec![&failing, &other_iban]
    } else {
        let (answer, _) = verify(&other_iban);
        assert!(answer.contains("<outcome>OK</outcome>"), "{answer}");
        vec![&failing]
    };
    for broken in broken {
        let (answer, _) = verify(broken);
        assert_eq!(
            fault_of(&answer).as_deref(),
            Some("PAA_SYSTEM_ERROR"),
            "{broken}: {answer}"
        );
        assert!(lookup(broken).is_empty(), "nothing stored from {broken}");
    }
    let (answer, took) = verify(&late);
    assert_eq!(fault_of(&answer).as_deref(), Some("PAA_SYSTEM_ERROR"));
    assert!(
        took < std::time::Duration::from_millis(3500),
        "a late entity system held the node for {took:?}"
    );

    // Every call the hub made is MyPay's paaSILVerificaEsterna, valid against the WSDL's schema,
    // naming the hub as intermediary and the Region as the domain.
    let mut sent: Vec<_> = std::fs::read_dir(&record)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sent.sort();
    assert!(sent.len() >= 8, "{sent:?}");
    let schemas = home.path().join("esterni-schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    xmllint(&esterni_schemas(&schemas), &sent);
    let first = std::fs::read_to_string(&sent[0]).unwrap();
    let iuv = &ok[1..];
    let parts = if old_call {
        [
            format!("<identificativoIntermediarioPA>{BROKER}</identificativoIntermediarioPA>"),
            format!("<identificativoDominio>{VENETO}</identificativoDominio>"),
            format!("<identificativoUnivocoVersamento>{iuv}</identificativoUnivocoVersamento>"),
        ]
    } else {
        [
            format!("<idBrokerPA>{BROKER}</idBrokerPA>"),
            format!("<qrCodeFiscalCode>{VENETO}</qrCodeFiscalCode>"),
            format!("<noticeNumber>{ok}</noticeNumber>"),
        ]
    };
    for part in parts {
        assert!(first.contains(&part), "{part} not in {first}");
    }
}

/// The text of the first `<name>` element of an answer.
fn element(answer: &str, name: &str) -> String {
    answer
        .split(&format!("<{name}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{name}>")).next())
        .unwrap_or_default()
        .replace("&amp;", "&")
}

#[test]
fn positions_due_on_a_day_are_exported_on_request_as_mypay_does() {
    let home = Home::new();
    let _hub = Hub::start_serving(&home);
    let p = home.port;
    let dir = home.path().join("scaduti");
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = answer_schemas(p, &dir);
    let mut answers = Vec::new();
    let mut call = |op: &str, body: &str| {
        let (status, answer) = ws_call(
            p,
            op,
            &envelope(Some("c_g224"), &payload(op, body, "c_g224", PW_PADOVA)),
        );
        assert_eq!(status, 200, "{answer}");
        let f = dir.join(format!("answer-{}.xml", answers.len()));
        std::fs::write(&f, &answer).unwrap();
        answers.push(f);
        answer
    };
    for (iud, due) in [
        ("DUE-1", "2099-01-31"),
        ("DUE-2", "2099-01-31"),
        ("LATER", "2099-02-28"),
    ] {
        let mut body = api_position(iud, 4200);
        body["dataEsecuzionePagamento"] = Value::String(due.into());
        let made = http(
            p,
            "POST",
            "/api/v1/entities/c_g224/positions",
            Some(KEY_PADOVA),
            &[],
            Some(&body.to_string()),
        );
        assert_eq!(made.status, 201, "{}", made.body);
    }
    let gone = http(
        p,
        "DELETE",
        "/api/v1/entities/c_g224/positions/DUE-2",
        Some(KEY_PADOVA),
        &[],
        None,
    );
    assert!(gone.status < 300, "{}", gone.body);

    // MyPay's refusals of a booking.
    let book = |day: &str, types: &str| {
        format!("<password>{{pw}}</password><dataScadenza>{day}</dataScadenza><tipiDovuto>{types}</tipiDovuto>")
    };
    for (body, code) in [
        (
            book("2099-01-31", ""),
            "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_INSERITO",
        ),
        (
            book("2099-01-31", "TARI;NOPE"),
            "PAA_IDENTIFICATIVO_TIPO_DOVUTO_NON_VALIDO",
        ),
    ] {
        let a = call("paaSILPrenotaExportFlussoScaduti", &body);
        assert_eq!(fault_of(&a).as_deref(), Some(code), "{a}");
    }
    let a = call(
        "paaSILChiediStatoExportFlussoScaduti",
        "<password>{pw}</password><requestToken>nope</requestToken>",
    );
    assert_eq!(
        fault_of(&a).as_deref(),
        Some("PAA_REQUEST_TOKEN_NON_VALIDO"),
        "{a}"
    );

    // Booked, written in the background, then downloaded by its signed link.
    let a = call(
        "paaSILPrenotaExportFlussoScaduti",
        &book("2099-01-31", "TARI ; MENSA"),
    );
    let token = element(&a, "requestToken");
    assert!(!token.is_empty(), "{a}");
    let stato = |call: &mut dyn FnMut(&str, &str) -> String, token: &str| {
        call(
            "paaSILChiediStatoExportFlussoScaduti",
            &format!("<password>{{pw}}</password><requestToken>{token}</requestToken>"),
        )
    };
    let mut done = String::new();
    assert!(
        wait_for(20, || {
            done = stato(&mut call, &token);
            element(&done, "stato") == "EXPORT_ESEGUITO"
        }),
        "{done}"
    );
    let name = element(&done, "nomeFile");
    assert_eq!(name, format!("EXP_SCADUTI_{token}.zip"));
    assert_eq!(
        element(&done, "pathFile"),
        format!("/EXPORT_DOVUTI_SCADUTI/2099-01/{name}")
    );
    let url = element(&done, "downloadUrl");
    let zip = dir.join(&name);
    let got = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&zip)
        .arg(&url)
        .status()
        .unwrap();
    assert!(got.success(), "download {url}");
    let text = unzip_text(&zip);
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], snodo_adapters::mypay_expired::HEADER);
    assert_eq!(
        lines.len(),
        2,
        "only the open position due that day: {text}"
    );
    assert!(lines[1].starts_with("DUE-1;"), "{text}");
    assert!(lines[1].contains(";2099-01-31;42.00;;TARI;"), "{text}");
    // A forged link opens nothing.
    let forged = url.replace("token=", "token=0");
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(&forged)
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&status.stdout), "200");

    // A day nothing is due: MyPay's "nothing found".
    let a = call(
        "paaSILPrenotaExportFlussoScaduti",
        &book("2099-03-01", "TARI"),
    );
    let empty = element(&a, "requestToken");
    let mut state = String::new();
    assert!(
        wait_for(20, || {
            state = stato(&mut call, &empty);
            element(&state, "stato") == "EXPORT_ESEGUITO_NESSUN_DOVUTO_TROVATO"
        }),
        "{state}"
    );
    assert_eq!(element(&state, "nomeFile"), "");
    xmllint(&wrapper, &answers);
}
