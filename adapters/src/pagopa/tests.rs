//! Official samples, round trips, error paths, and XSD validation of everything rendered.

use std::io::ErrorKind;
use std::process::Command;

use snodo_core::Amount;

use super::*;

const SPECS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/pagopa/");
const EXAMPLES: &str = "SANP2.5.1/examples/";
const MOCKS: &str = "samples/pagopa-wisp-soap-converter/at-1e6b4d2/mocks/";
const XSD: &str = "SANP3.12.0/wsdl/xsd/paForNode.xsd";

fn spec(rel: &str) -> String {
    let path = format!("{SPECS}{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The Body's element of a rendered envelope, with the `paf` prefix declared on it, so that it
/// can be validated alone.
fn payload_of(envelope: &str) -> String {
    let start = envelope.find("<soapenv:Body>").expect("Body start") + "<soapenv:Body>".len();
    let end = envelope.rfind("</soapenv:Body>").expect("Body end");
    let payload = &envelope[start..end];
    let root_end = payload.find('>').expect("root tag");
    format!(
        "{} xmlns:paf=\"{PAF_NS}\"{}",
        &payload[..root_end],
        &payload[root_end..]
    )
}

/// Runs xmllint with the official paForNode.xsd on each payload (a Body element, standalone);
/// returns whether each validates, and xmllint's report.
fn xmllint_verdicts(payloads: &[String]) -> (Vec<bool>, String) {
    match Command::new("xmllint").arg("--version").output() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("xmllint not found: run ops/setup.sh")
        }
        Err(e) => panic!("cannot run xmllint: {e}"),
        Ok(_) => {}
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let path = dir.path().join(format!("p{i}.xml"));
        std::fs::write(&path, payload).expect("write payload");
        files.push(path);
    }
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(format!("{SPECS}{XSD}"))
        .args(&files)
        .output()
        .expect("run xmllint");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    let verdicts = files
        .iter()
        .map(|f| {
            let f = f.display().to_string();
            if report.contains(&format!("{f} validates")) {
                true
            } else if report.contains(&format!("{f} fails to validate")) {
                false
            } else {
                panic!("no xmllint verdict for {f}:\n{report}")
            }
        })
        .collect();
    (verdicts, report)
}

/// Validates the payload of each envelope against the official paForNode.xsd with xmllint.
fn assert_xsd_valid(envelopes: &[(&str, String)]) {
    let payloads: Vec<String> = envelopes.iter().map(|(_, e)| payload_of(e)).collect();
    let (verdicts, report) = xmllint_verdicts(&payloads);
    for ((name, _), ok) in envelopes.iter().zip(verdicts) {
        assert!(
            ok,
            "xmllint rejected a rendered payload ({name}):\n{report}"
        );
    }
}

fn invalid(err: &SoapError) -> (Operation, &str, &str) {
    match err {
        SoapError::Invalid {
            operation,
            path,
            reason,
        } => (*operation, path.as_str(), reason.as_str()),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn envelope(payload: &str) -> String {
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:pafn="{PAF_NS}"><soapenv:Body>{payload}</soapenv:Body></soapenv:Envelope>"#
    )
}

fn verify_payload(notice: &str) -> String {
    format!(
        "<pafn:paVerifyPaymentNoticeReq><idPA>77777777777</idPA><idBrokerPA>77777777777</idBrokerPA>\
         <idStation>77777777777_01</idStation><qrCode><fiscalCode>77777777777</fiscalCode>\
         <noticeNumber>{notice}</noticeNumber></qrCode></pafn:paVerifyPaymentNoticeReq>"
    )
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const TRICKY: &str = "Tassa <rifiuti> & \"acqua\" 'bis' – àèìòù ]]> fine";

fn qr() -> QrCode {
    QrCode {
        fiscal_code: "77777777777".into(),
        notice_number: "301000000000012373".into(),
    }
}

fn subject(full: bool) -> Subject {
    Subject {
        unique_identifier: UniqueIdentifier {
            kind: EntityType::F,
            value: "JHNDOE00A01F205N".into(),
        },
        full_name: "John O'Doe & Figli".into(),
        street_name: full.then(|| "Via <Roma>".into()),
        civic_number: full.then(|| "12/A".into()),
        postal_code: full.then(|| "89020".into()),
        city: full.then(|| "Reggio Calabria".into()),
        state_province_region: full.then(|| "RC".into()),
        country: full.then(|| "IT".into()),
        email: full.then(|| "john.doe+pa@test.it".into()),
    }
}

fn meta(n: usize) -> Vec<MapEntry> {
    (1..=n)
        .map(|i| MapEntry {
            key: format!("key{i}"),
            value: format!("value & {i}"),
        })
        .collect()
}

fn transfer(id: u8, amount: &str, fiscal_code: &str) -> Transfer {
    Transfer {
        id_transfer: id,
        transfer_amount: amount.into(),
        fiscal_code_pa: fiscal_code.into(),
        iban: "IT96R0123454321000000012345".into(),
        remittance_information: format!("/RFB/301000000000012373/{amount}/TXT/{TRICKY}"),
        transfer_category: "9/0101100IM/".into(),
        metadata: if id == 1 { meta(2) } else { Vec::new() },
    }
}

fn verify_request() -> VerifyRequest {
    VerifyRequest {
        id_pa: "77777777777".into(),
        id_broker_pa: "80000000001".into(),
        id_station: "80000000001_01".into(),
        qr_code: qr(),
    }
}

fn get_payment_request() -> GetPaymentRequest {
    GetPaymentRequest {
        id_pa: "77777777777".into(),
        id_broker_pa: "80000000001".into(),
        id_station: "80000000001_01".into(),
        qr_code: qr(),
        amount: Some("30.00".into()),
        payment_note: Some(TRICKY.into()),
        transfer_type: Some(TransferType::PagoPa),
        due_date: Some("2024-12-31".into()),
    }
}

fn receipt() -> Receipt {
    Receipt {
        receipt_id: "c110729d258c4ab1b765fe902aae41d6".into(),
        notice_number: "301000000000012373".into(),
        fiscal_code: "77777777777".into(),
        outcome: Outcome::Ok,
        creditor_reference_id: "01000000000012373".into(),
        payment_amount: "30.00".into(),
        description: TRICKY.into(),
        company_name: "Comune di Prova".into(),
        office_name: Some("Ufficio Tributi".into()),
        debtor: subject(true),
        transfer_list: vec![
            transfer(1, "20.00", "77777777777"),
            transfer(2, "10.00", "77777777778"),
        ],
        id_psp: "88888888888".into(),
        psp_fiscal_code: Some("88888888888".into()),
        psp_partita_iva: Some("88888888888".into()),
        psp_company_name: "PSP & Co".into(),
        id_channel: "88888888888_01".into(),
        channel_description: "app".into(),
        payer: Some(subject(false)),
        payment_method: Some("creditCard".into()),
        fee: Some("2.00".into()),
        payment_date_time: Some("2021-10-01T17:48:22".into()),
        application_date: Some("2021-10-01".into()),
        transfer_date: Some("2021-10-02".into()),
        metadata: meta(1),
        stand_in: Some(false),
    }
}

fn receipt_v2() -> ReceiptV2 {
    let r = receipt();
    ReceiptV2 {
        receipt_id: r.receipt_id,
        notice_number: r.notice_number,
        fiscal_code: r.fiscal_code,
        outcome: r.outcome,
        creditor_reference_id: r.creditor_reference_id,
        payment_amount: "46.00".into(),
        description: r.description,
        company_name: r.company_name,
        office_name: None,
        debtor: subject(false),
        transfer_list: vec![
            ReceiptTransferV2 {
                id_transfer: 1,
                transfer_amount: "30.00".into(),
                fiscal_code_pa: "77777777777".into(),
                company_name: Some("Comune di Prova".into()),
                destination: ReceiptDestination::Iban("IT96R0123454321000000012345".into()),
                remittance_information: "quota comune".into(),
                transfer_category: "9/0101100IM/".into(),
                metadata: meta(15),
            },
            ReceiptTransferV2 {
                id_transfer: 2,
                transfer_amount: "16.00".into(),
                fiscal_code_pa: "77777777778".into(),
                company_name: None,
                destination: ReceiptDestination::MbdAttachment(
                    "PG1hcmNhRGFCb2xsbz48L21hcmNhRGFCb2xsbz4=".into(),
                ),
                remittance_information: "marca da bollo".into(),
                transfer_category: "9/0301109AP/".into(),
                metadata: Vec::new(),
            },
        ],
        id_psp: r.id_psp,
        psp_fiscal_code: None,
        psp_partita_iva: None,
        psp_company_name: r.psp_company_name,
        id_channel: r.id_channel,
        channel_description: r.channel_description,
        payer: Some(subject(true)),
        payment_method: Some("PPAL".into()),
        payment_note: Some("nota".into()),
        fee: Some("1.50".into()),
        primary_ci_incurred_fee: Some("0.50".into()),
        id_bundle: Some("bundle-1".into()),
        id_ci_bundle: Some("ci-bundle-1".into()),
        payment_date_time: Some("2024-05-31T10:11:12.345+02:00".into()),
        application_date: Some("2024-05-31".into()),
        transfer_date: Some("2024-06-01".into()),
        metadata: Vec::new(),
        stand_in: Some(true),
    }
}

fn all_requests() -> Vec<(&'static str, Request)> {
    let mut minimal_get = get_payment_request();
    minimal_get.amount = None;
    minimal_get.payment_note = None;
    minimal_get.transfer_type = None;
    minimal_get.due_date = None;
    vec![
        ("verify", Request::Verify(verify_request())),
        ("get", Request::GetPayment(get_payment_request())),
        ("get_minimal", Request::GetPayment(minimal_get)),
        ("get_v2", Request::GetPaymentV2(get_payment_request())),
        (
            "send_rt",
            Request::SendRt(SendRtRequest {
                id_pa: "77777777777".into(),
                id_broker_pa: "80000000001".into(),
                id_station: "80000000001_01".into(),
                receipt: receipt(),
            }),
        ),
        (
            "send_rt_v2",
            Request::SendRtV2(SendRtV2Request {
                id_pa: "77777777777".into(),
                id_broker_pa: "80000000001".into(),
                id_station: "80000000001_01".into(),
                receipt: receipt_v2(),
            }),
        ),
        ("demand", Request::Demand(demand_request())),
    ]
}

fn demand_request() -> DemandRequest {
    DemandRequest {
        id_pa: "77777777777".into(),
        id_broker_pa: "80000000001".into(),
        id_station: "80000000001_01".into(),
        id_servizio: "00001".into(),
        id_soggetto_servizio: "00042".into(),
        // <tassaAuto> of the car tax's XSD, base64.
        dati_specifici_servizio: "PHRhc3NhQXV0byB4bWxucz0iaHR0cDovL1B1bnRvQWNjZXNzb1BTUC5zcGNvb3AuZ292Lml0L1Rhc3NhQXV0byI+PHZlaWNvbG9Db25UYXJnYT48dGlwb1ZlaWNvbG9UYXJnYT4xPC90aXBvVmVpY29sb1RhcmdhPjx2ZWljb2xvVGFyZ2E+QUIxMjNDRDwvdmVpY29sb1RhcmdhPjwvdmVpY29sb0NvblRhcmdhPjwvdGFzc2FBdXRvPg==".into(),
    }
}

fn full_fault() -> Fault {
    Fault {
        fault_code: fault_codes::PAGAMENTO_SCONOSCIUTO.into(),
        fault_string: "Pagamento in attesa risulta sconosciuto all'Ente Creditore".into(),
        id: "77777777777".into(),
        description: Some(format!("notice 301000000000012373: {TRICKY}")),
        serial: Some(-3),
        original_fault_code: Some("X".into()),
        original_fault_string: Some("Y".into()),
        original_description: Some("Z".into()),
    }
}

fn payment_data() -> PaymentData {
    PaymentData {
        creditor_reference_id: "01000000000012373".into(),
        payment_amount: "30.00".into(),
        due_date: "2024-12-31".into(),
        retention_date: Some("2025-01-31T23:59:59".into()),
        last_payment: Some(false),
        description: TRICKY.into(),
        company_name: Some("Comune di Prova".into()),
        office_name: Some("Ufficio Tributi".into()),
        debtor: subject(true),
        transfer_list: vec![
            transfer(1, "20.00", "77777777777"),
            transfer(2, "10.00", "77777777778"),
        ],
        metadata: meta(3),
    }
}

fn payment_data_v2() -> PaymentDataV2 {
    PaymentDataV2 {
        creditor_reference_id: "01000000000012373".into(),
        payment_amount: "46.00".into(),
        due_date: "2024-12-31".into(),
        retention_date: None,
        last_payment: None,
        description: "TARI 2024".into(),
        company_name: "Comune di Prova".into(),
        office_name: None,
        debtor: subject(false),
        transfer_list: vec![
            TransferV2 {
                id_transfer: 1,
                transfer_amount: "30.00".into(),
                fiscal_code_pa: "77777777777".into(),
                company_name: Some("Comune di Prova".into()),
                destination: Destination::Iban("IT96R0123454321000000012345".into()),
                remittance_information: "quota comune".into(),
                transfer_category: "9/0101100IM/".into(),
                metadata: meta(1),
            },
            TransferV2 {
                id_transfer: 2,
                transfer_amount: "16.00".into(),
                fiscal_code_pa: "77777777778".into(),
                company_name: Some("Provincia & Co".into()),
                destination: Destination::MarcaDaBollo(MarcaDaBollo {
                    hash_documento: "wHpFSLCGZjIvNSXxqtGbxg7275t446DRTk5ZrsdUQ6E=".into(),
                    tipo_bollo: "01".into(),
                    provincia_residenza: "MI".into(),
                }),
                remittance_information: "marca da bollo".into(),
                transfer_category: "9/0301109AP/".into(),
                metadata: Vec::new(),
            },
        ],
        metadata: Vec::new(),
    }
}

fn all_responses() -> Vec<(&'static str, Response)> {
    let mut out = vec![
        (
            "verify_ok",
            Response::Verify(VerifyResponse {
                outcome: Outcome::Ok,
                fault: None,
                payment_option: Some(PaymentOption {
                    amount: "30.00".into(),
                    options: AmountOption::Eq,
                    due_date: Some("2024-12-31".into()),
                    detail_description: Some(TRICKY.into()),
                    all_ccp: false,
                }),
                payment_description: Some("TARI 2024 <rata 1>".into()),
                fiscal_code_pa: Some("77777777777".into()),
                company_name: Some("Comune di Prova".into()),
                office_name: Some("Ufficio Tributi".into()),
            }),
        ),
        (
            "verify_ok_minimal",
            Response::Verify(VerifyResponse {
                payment_option: Some(PaymentOption {
                    amount: "0.01".into(),
                    options: AmountOption::Any,
                    ..PaymentOption::default()
                }),
                ..VerifyResponse::default()
            }),
        ),
        (
            "get_ok",
            Response::GetPayment(GetPaymentResponse {
                outcome: Outcome::Ok,
                fault: None,
                data: Some(payment_data()),
            }),
        ),
        (
            "get_v2_ok",
            Response::GetPaymentV2(GetPaymentV2Response {
                outcome: Outcome::Ok,
                fault: None,
                data: Some(payment_data_v2()),
            }),
        ),
        ("send_rt_ok", Response::SendRt(SendRtResponse::ok())),
        ("send_rt_v2_ok", Response::SendRtV2(SendRtResponse::ok())),
        (
            "demand_ok",
            Response::Demand(DemandResponse {
                outcome: Outcome::Ok,
                fault: None,
                qr_code: Some(qr()),
                payment_option: Some(PaymentOption {
                    amount: "123.45".into(),
                    options: AmountOption::Eq,
                    due_date: Some("2026-12-31".into()),
                    detail_description: Some(TRICKY.into()),
                    all_ccp: false,
                }),
                payment_description: Some("Tassa automobilistica AB123CD".into()),
                fiscal_code_pa: Some("77777777777".into()),
                company_name: Some("Regione <Veneto>".into()),
                office_name: Some("Tributi".into()),
            }),
        ),
        (
            "demand_ok_minimal",
            Response::Demand(DemandResponse {
                qr_code: Some(qr()),
                ..DemandResponse::default()
            }),
        ),
    ];
    for op in Operation::ALL {
        out.push((op.soap_action(), Response::ko(op, full_fault())));
    }
    out.push((
        "send_rt_dup",
        Response::SendRt(SendRtResponse::ko(Fault::new(
            fault_codes::RECEIPT_DUPLICATA,
            "Receipt già ricevuta",
            "80000000001",
        ))),
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Official samples
// ---------------------------------------------------------------------------------------------

#[test]
fn parses_official_get_payment_request() {
    let req = parse_request(spec(&format!("{EXAMPLES}ReqPaGetPayment.xml")).as_bytes()).unwrap();
    assert_eq!(
        req,
        Request::GetPayment(GetPaymentRequest {
            id_pa: "77777777777".into(),
            id_broker_pa: "77777777777".into(),
            id_station: "77777777777_01".into(),
            qr_code: QrCode {
                fiscal_code: "77777777777".into(),
                notice_number: "311111111112222222".into(),
            },
            amount: Some("30.00".into()),
            payment_note: None,
            transfer_type: None,
            due_date: None,
        })
    );
    assert_eq!(req.soap_action(), "paGetPayment");
}

#[test]
fn official_send_rt_sample_lacks_transfer_category() {
    let xml = spec(&format!("{EXAMPLES}ReqPaSendRT.xml"));
    let err = parse_request(xml.as_bytes()).unwrap_err();
    assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
    assert_eq!(
        err.to_string(),
        "paSendRTReq/receipt/transferList/transfer[1]/transferCategory: missing"
    );
    assert_eq!(err.operation(), Some(Operation::SendRt));

    // With the element SOURCES.md says is missing, the sample parses in full.
    let fixed = xml.replace(
        "</remittanceInformation>",
        "</remittanceInformation>\n            <transferCategory>9/0101100IM/</transferCategory>",
    );
    let Request::SendRt(req) = parse_request(fixed.as_bytes()).unwrap() else {
        panic!("not a paSendRT");
    };
    let r = &req.receipt;
    assert_eq!(req.id_station, "77777777777_01");
    assert_eq!(r.receipt_id, "c110729d258c4ab1b765fe902aae41d6");
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.payment_amount_cents().unwrap(), Amount::from_cents(3000));
    assert_eq!(r.debtor.email.as_deref(), Some("john.doe@test.it"));
    assert_eq!(r.debtor.unique_identifier.kind, EntityType::F);
    assert_eq!(r.transfer_list.len(), 2);
    assert_eq!(r.transfer_list[1].fiscal_code_pa, "77777777778");
    assert_eq!(r.transfer_list[1].transfer_category, "9/0101100IM/");
    assert_eq!(r.psp_partita_iva.as_deref(), Some("88888888888"));
    assert_eq!(
        r.payer.as_ref().map(|p| p.full_name.as_str()),
        Some("John Doe")
    );
    assert_eq!(r.fee.as_deref(), Some("2.00"));
    assert_eq!(r.payment_date_time.as_deref(), Some("2021-10-01T17:48:22"));
    assert_eq!(r.transfer_date.as_deref(), Some("2021-10-02"));
    assert_eq!(
        r.metadata,
        vec![MapEntry {
            key: "keytest".into(),
            value: "1".into()
        }]
    );
    assert_eq!(r.stand_in, None);
}

#[test]
fn official_verify_sample_has_the_wrong_namespace() {
    let xml = spec(&format!("{EXAMPLES}ReqPaVerifyPayment.xml"));
    let err = parse_request(xml.as_bytes()).unwrap_err();
    let (op, path, reason) = invalid(&err);
    assert_eq!(op, Operation::VerifyPaymentNotice);
    assert_eq!(path, "paVerifyPaymentNoticeReq");
    assert!(
        reason.contains(PAF_NS) && reason.contains("nodeForPsp.xsd"),
        "{reason}"
    );
    assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");

    let fixed = xml.replace(
        "http://pagopa-api.pagopa.gov.it/node/nodeForPsp.xsd",
        PAF_NS,
    );
    let req = parse_request(fixed.as_bytes()).unwrap();
    assert_eq!(
        req,
        Request::Verify(VerifyRequest {
            id_pa: "77777777777".into(),
            id_broker_pa: "77777777777".into(),
            id_station: "77777777777_01".into(),
            qr_code: QrCode {
                fiscal_code: "77777777777".into(),
                notice_number: "311111111112222222".into(),
            },
        })
    );
}

#[test]
fn parses_official_responses() {
    let Response::Verify(v) =
        parse_response(spec(&format!("{EXAMPLES}200PaVerifyPaymentNotice.xml")).as_bytes())
            .unwrap()
    else {
        panic!("not a verify response")
    };
    assert_eq!(v.outcome, Outcome::Ok);
    let o = v.payment_option.as_ref().unwrap();
    assert_eq!(o.amount_cents().unwrap(), Amount::from_cents(3000));
    assert_eq!(o.options, AmountOption::Eq);
    assert_eq!(o.due_date.as_deref(), Some("2021-12-31"));
    assert!(!o.all_ccp);
    assert_eq!(v.office_name.as_deref(), Some("office EC"));

    let r = parse_response(spec(&format!("{EXAMPLES}200PaSendRT.xml")).as_bytes()).unwrap();
    assert_eq!(r, Response::SendRt(SendRtResponse::ok()));

    // Invalid upstream (SOURCES.md): no transferCategory.
    let err =
        parse_response(spec(&format!("{EXAMPLES}200PaGetPayment.xml")).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "paGetPaymentRes/data/transferList/transfer[1]/transferCategory: missing"
    );
}

#[test]
fn parses_wisp_converter_mocks() {
    let parse = |rel: &str| parse_response(spec(&format!("{MOCKS}{rel}")).as_bytes()).unwrap();

    let Response::Verify(ko) = parse("paVerifyPaymentNotice/KO.xml") else {
        panic!()
    };
    assert_eq!(ko.outcome, Outcome::Ko);
    let f = ko.fault.unwrap();
    assert_eq!(f.fault_code, "FAULT_CODE");
    // xsd:string keeps its whitespace.
    assert_eq!(f.fault_string, "FAULT_STRING\n            ");
    assert_eq!(f.description.as_deref(), Some("FAULT DESCRIPTION"));

    let Response::Verify(ok) = parse("paVerifyPaymentNotice/OK.xml") else {
        panic!()
    };
    assert_eq!(ok.payment_option.unwrap().amount, "100.00");
    assert_eq!(ok.company_name.as_deref(), Some("?"));

    // Named paGetPayment but holding a V2 response (SOURCES.md).
    assert!(matches!(
        parse("paGetPayment/OK.xml"),
        Response::GetPaymentV2(_)
    ));

    let Response::GetPaymentV2(v2) = parse("paGetPaymentV2/OK-mbd.xml") else {
        panic!()
    };
    let d = v2.data.unwrap();
    assert_eq!(d.last_payment, Some(true));
    assert_eq!(d.debtor.street_name, None);
    assert_eq!(
        d.transfer_list[0].destination,
        Destination::MarcaDaBollo(MarcaDaBollo {
            hash_documento: "AAAA".into(),
            tipo_bollo: "01".into(),
            provincia_residenza: "MI".into(),
        })
    );
    assert_eq!(d.transfer_list[0].metadata.len(), 2);
    assert_eq!(
        d.transfer_list[1].destination,
        Destination::Iban("IT96R0123454321000000012345".into())
    );
    assert_eq!(d.metadata.len(), 2);

    let Response::GetPaymentV2(v2) = parse("paGetPaymentV2/OK.xml") else {
        panic!()
    };
    assert_eq!(
        v2.data.unwrap().payment_amount_cents().unwrap(),
        Amount::from_cents(1000)
    );

    assert_eq!(
        parse("paSendRT/OK.xml"),
        Response::SendRt(SendRtResponse::ok())
    );
    assert_eq!(
        parse("paSendRTV2/OK.xml"),
        Response::SendRtV2(SendRtResponse::ok())
    );

    let Response::Demand(ok) = parse("paDemandPaymentNotice/OK.xml") else {
        panic!()
    };
    assert_eq!(ok.outcome, Outcome::Ok);
    let qr = ok.qr_code.unwrap();
    assert_eq!(
        (qr.fiscal_code.as_str(), qr.notice_number.as_str()),
        ("77777777777", "124585856958659568")
    );
    let option = ok.payment_option.unwrap();
    assert_eq!(option.amount_cents().unwrap(), Amount::from_cents(5000));
    assert!(option.all_ccp);
    assert_eq!(ok.office_name.as_deref(), Some("officeName1"));
    let Response::Demand(ko) = parse("paDemandPaymentNotice/KO.xml") else {
        panic!()
    };
    assert_eq!(ko.outcome, Outcome::Ko);
    assert_eq!(ko.qr_code, None);
    assert_eq!(
        ko.fault.unwrap().description.as_deref(),
        Some("FAULT_DESCR")
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips and XSD validity
// ---------------------------------------------------------------------------------------------

#[test]
fn requests_round_trip() {
    for (name, req) in all_requests() {
        let xml = render_request(&req);
        let back = parse_request(xml.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, req, "{name}");
    }
}

#[test]
fn responses_round_trip() {
    for (name, resp) in all_responses() {
        let xml = render_response(&resp);
        let back = parse_response(xml.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, resp, "{name}");
    }
}

#[test]
fn rendered_requests_are_xsd_valid() {
    let rendered: Vec<_> = all_requests()
        .iter()
        .map(|(name, req)| (*name, render_request(req)))
        .collect();
    assert_xsd_valid(&rendered);
}

#[test]
fn rendered_responses_are_xsd_valid() {
    let rendered: Vec<_> = all_responses()
        .iter()
        .map(|(name, resp)| (*name, render_response(resp)))
        .collect();
    assert_xsd_valid(&rendered);
}

#[test]
fn xsd_helper_catches_invalid_payloads() {
    // The validation itself must be able to fail: a qualified child breaks the XSD.
    let bad = render_response(&Response::SendRt(SendRtResponse::ok()))
        .replace("<outcome>OK</outcome>", "<paf:outcome>OK</paf:outcome>");
    let panic = std::panic::catch_unwind(|| assert_xsd_valid(&[("bad", bad)])).unwrap_err();
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        message.contains("xmllint rejected") && message.contains("outcome"),
        "{message}"
    );
}

#[test]
fn renders_the_documented_envelope() {
    let xml = render_response(&Response::ko(
        Operation::VerifyPaymentNotice,
        Fault::new(
            "PAA_PAGAMENTO_SCONOSCIUTO",
            "Pagamento sconosciuto",
            "77777777777",
        ),
    ));
    assert_eq!(
        xml,
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:paf=\"http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd\"><soapenv:Header/>\
         <soapenv:Body><paf:paVerifyPaymentNoticeRes><outcome>KO</outcome><fault>\
         <faultCode>PAA_PAGAMENTO_SCONOSCIUTO</faultCode><faultString>Pagamento sconosciuto\
         </faultString><id>77777777777</id></fault></paf:paVerifyPaymentNoticeRes>\
         </soapenv:Body></soapenv:Envelope>"
    );
    let sent = render_response(&Response::SendRtV2(SendRtResponse::ok()));
    assert!(sent.contains("<paf:paSendRTV2Response><outcome>OK</outcome></paf:paSendRTV2Response>"));
}

#[test]
fn escapes_text() {
    let mut resp = VerifyResponse {
        payment_description: Some("a < b & c > d \"q\" 'a'".into()),
        ..VerifyResponse::default()
    };
    let xml = render_response(&Response::Verify(resp.clone()));
    assert!(
        xml.contains("<paymentDescription>a &lt; b &amp; c &gt; d \"q\" 'a'</paymentDescription>")
    );

    // Control characters cannot be carried by XML: dropped. CR survives as a reference.
    resp.payment_description = Some("riga 1\r\nriga\u{1} 2\ttab".into());
    let xml = render_response(&Response::Verify(resp.clone()));
    assert!(xml.contains("riga 1&#13;\nriga 2\ttab"));
    let Response::Verify(back) = parse_response(xml.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(
        back.payment_description.as_deref(),
        Some("riga 1\r\nriga 2\ttab")
    );
}

#[test]
fn soap_actions_follow_the_wsdl() {
    let actions: Vec<_> = all_requests()
        .iter()
        .map(|(_, r)| r.soap_action())
        .collect();
    assert_eq!(
        actions,
        [
            "paVerifyPaymentNotice",
            "paGetPayment",
            "paGetPayment",
            "paGetPaymentV2",
            "paSendRT",
            "paSendRTV2",
            "paDemandPaymentNotice"
        ]
    );
    assert_eq!(
        Operation::from_soap_action("\"paSendRTV2\""),
        Some(Operation::SendRtV2)
    );
    assert_eq!(
        Operation::from_soap_action("paVerifyPaymentNotice"),
        Some(Operation::VerifyPaymentNotice)
    );
    assert_eq!(
        Operation::from_soap_action("paDemandPaymentNotice"),
        Some(Operation::DemandPaymentNotice)
    );
    assert_eq!(Operation::from_soap_action("paDemandPaymentNoticeX"), None);
}

#[test]
fn amounts_convert_to_cents() {
    assert_eq!(to_cents("12.50"), Ok(Amount::from_cents(1250)));
    assert_eq!(from_cents(Amount::from_cents(1250)), "12.50");
    assert_eq!(from_cents(Amount::from_cents(5)), "0.05");
    assert_eq!(
        get_payment_request().amount_cents(),
        Some(Ok(Amount::from_cents(3000)))
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope variants
// ---------------------------------------------------------------------------------------------

#[test]
fn accepts_any_envelope_prefix_header_and_declaration() {
    let body = verify_payload("301000000000012373");
    let variants = [
        format!(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:pafn="{PAF_NS}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
        ),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi -->\n<SOAP-ENV:Envelope \
             xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">\n  <SOAP-ENV:Header>\
             <x:Security xmlns:x=\"urn:x\"><paVerifyPaymentNoticeReq/></x:Security></SOAP-ENV:Header>\n  \
             <SOAP-ENV:Body xmlns:pafn=\"{PAF_NS}\">\n    {body}\n  </SOAP-ENV:Body>\n</SOAP-ENV:Envelope>\n"
        ),
        format!("\u{feff}{}", envelope(&body)),
        // A default namespace on the root, undone for the children: still unqualified children.
        envelope(&format!(
            "<paVerifyPaymentNoticeReq xmlns=\"{PAF_NS}\"><idPA xmlns=\"\">77777777777</idPA>\
             <idBrokerPA xmlns=\"\">77777777777</idBrokerPA><idStation xmlns=\"\">77777777777_01</idStation>\
             <qrCode xmlns=\"\"><fiscalCode>77777777777</fiscalCode>\
             <noticeNumber>301000000000012373</noticeNumber></qrCode></paVerifyPaymentNoticeReq>"
        )),
    ];
    for xml in &variants {
        let req = parse_request(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let Request::Verify(v) = req else { panic!() };
        assert_eq!(v.qr_code.notice_number, "301000000000012373");
        assert_eq!(v.id_pa, "77777777777");
    }
}

#[test]
fn resolves_entities_and_cdata() {
    let body = get_payment_request();
    let xml = render_request(&Request::GetPayment(body)).replace(
        "<paymentNote>",
        "<paymentNote>a &amp; b &#x41;&#66; <![CDATA[<c> & d]]>",
    );
    let Request::GetPayment(r) = parse_request(xml.as_bytes()).unwrap() else {
        panic!()
    };
    assert!(r
        .payment_note
        .unwrap()
        .starts_with("a & b AB <c> & dTassa <rifiuti>"));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn not_xml_and_not_soap() {
    type Expect = fn(&SoapError) -> bool;
    let cases: Vec<(&str, Expect)> = vec![
        ("", |e| matches!(e, SoapError::NotXml(_))),
        ("hello", |e| matches!(e, SoapError::NotXml(_))),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body><a></b></e:Body></e:Envelope>",
            |e| matches!(e, SoapError::NotXml(_)),
        ),
        ("<!DOCTYPE x [<!ENTITY e \"x\">]><x/>", |e| {
            matches!(e, SoapError::NotXml(_))
        }),
        ("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><x/>", |e| {
            matches!(e, SoapError::NotXml(_))
        }),
        ("<x:a/>", |e| matches!(e, SoapError::NotXml(_))),
        ("<paVerifyPaymentNoticeReq/>", |e| {
            matches!(e, SoapError::NotSoap(_))
        }),
        (
            "<e:Envelope xmlns:e=\"http://www.w3.org/2003/05/soap-envelope\"><e:Body/></e:Envelope>",
            |e| matches!(e, SoapError::NotSoap(m) if m.contains("1.2")),
        ),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body/></e:Envelope>",
            |e| matches!(e, SoapError::NotSoap(m) if m.contains("empty")),
        ),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Header/></e:Envelope>",
            |e| matches!(e, SoapError::NotSoap(m) if m.contains("no Body")),
        ),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body><a/><b/></e:Body></e:Envelope>",
            |e| matches!(e, SoapError::NotSoap(m) if m.contains("more than one")),
        ),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body>x<a/></e:Body></e:Envelope>",
            |e| matches!(e, SoapError::NotSoap(_)),
        ),
        (
            "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\"><e:Body><a>\u{1}</a></e:Body></e:Envelope>",
            |e| matches!(e, SoapError::NotXml(_)),
        ),
    ];
    for (xml, expected) in cases {
        let err = parse_request(xml.as_bytes()).unwrap_err();
        assert!(expected(&err), "{xml:?} gave {err:?}");
        assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
        assert_eq!(err.operation(), None);
    }
    // Truncated and unterminated documents.
    let full = envelope(&verify_payload("301000000000012373"));
    for cut in [10, full.len() / 2, full.len() - 5] {
        let err = parse_request(&full.as_bytes()[..cut]).unwrap_err();
        assert!(matches!(err, SoapError::NotXml(_)), "cut at {cut}: {err:?}");
    }
    // Invalid UTF-8.
    let mut bad_utf8 = full
        .replace("77777777777_01", "7777777777\u{e0}")
        .into_bytes();
    if let Some(p) = bad_utf8.iter().position(|&b| b == 0xC3) {
        bad_utf8[p] = 0xFF;
    }
    assert!(matches!(
        parse_request(&bad_utf8),
        Err(SoapError::NotXml(_))
    ));
}

/// Found by fuzzing: a byte that is not UTF-8 where the reader decodes nothing (a comment, an
/// attribute, a processing instruction, the skipped Header) got through, and the hub stored the
/// receipt as an empty string.
#[test]
fn invalid_utf8_outside_text_is_not_xml() {
    let full = envelope(&verify_payload("301000000000012373"));
    assert!(parse_request(full.as_bytes()).is_ok());
    let places = [
        ("<soapenv:Body>", "<!--\u{e0}--><soapenv:Body>"),
        ("<soapenv:Body>", "<?pi \u{e0}?><soapenv:Body>"),
        (
            "<soapenv:Body>",
            "<soapenv:Header><h a=\"\u{e0}\">\u{e0}</h></soapenv:Header><soapenv:Body>",
        ),
        ("<idPA>", "<idPA a=\"\u{e0}\">"),
    ];
    for (from, to) in places {
        let good = full.replacen(from, to, 1);
        assert_ne!(good, full, "{from} not found");
        assert!(parse_request(good.as_bytes()).is_ok(), "{good}");
        // Cut the two-byte à to its lead byte: invalid UTF-8 at that place alone.
        let mut bad = good.into_bytes();
        let at = bad
            .windows(2)
            .position(|w| w == [0xC3, 0xA0])
            .expect("an à");
        bad[at + 1] = b'x';
        let err = parse_request(&bad).expect_err("invalid UTF-8 refused");
        assert!(
            matches!(&err, SoapError::NotXml(m) if m.contains("UTF-8")),
            "{err:?}"
        );
        assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
        assert!(parse_response(&bad).is_err());
    }
}

#[test]
fn bytes_that_are_not_utf8_are_refused_wherever_they_are() {
    // A receipt, otherwise valid, with one byte that is not UTF-8 where the payload reader
    // never looks: a comment, an attribute, the Header. The whole document must be UTF-8.
    let good = render_request(&Request::SendRtV2(SendRtV2Request {
        id_pa: "77777777777".into(),
        id_broker_pa: "77777777777".into(),
        id_station: "77777777777_01".into(),
        receipt: receipt_v2(),
    }));
    let body_at = good.find("<soapenv:Header/>").expect("a Header");
    let tail = &good[body_at..];
    let places = [
        ("comment", format!("<!-- caf\u{a7} -->{tail}")),
        (
            "attribute",
            tail.replacen("<soapenv:Body>", "<soapenv:Body x=\"caf\u{a7}\">", 1),
        ),
        (
            "Header",
            tail.replacen(
                "<soapenv:Header/>",
                "<soapenv:Header><h>caf\u{a7}</h></soapenv:Header>",
                1,
            ),
        ),
    ];
    for (place, tail) in places {
        let doc = format!("{}{tail}", &good[..body_at]);
        parse_request(doc.as_bytes()).unwrap_or_else(|e| panic!("{place}: valid UTF-8: {e}"));
        assert_eq!(doc.matches('\u{a7}').count(), 1, "{place}: one marker");
        // § is C2 A7 in UTF-8; as ISO-8859-1 it is the lone byte A7.
        let bytes = doc.replace('\u{a7}', "\u{1}").into_bytes();
        let at = bytes.iter().position(|&b| b == 1).expect("the marker");
        let mut bytes = bytes;
        bytes[at] = 0xA7;
        let err = parse_request(&bytes).expect_err(place);
        assert!(matches!(err, SoapError::NotXml(_)), "{place}: {err:?}");
        assert!(
            err.to_string()
                .contains(&format!("byte 0xA7 at offset {at} (line 1) is not UTF-8")),
            "{place}: {err}"
        );
        assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
        // The operation can still be told, so the node gets its own KO response.
        assert_eq!(
            request_operation(&bytes),
            Some(Operation::SendRtV2),
            "{place}"
        );
        assert_eq!(request_operation(doc.as_bytes()), None, "valid: not asked");
    }
    // A BOM counts in the offset; garbage is no operation at all.
    let err = parse_request(b"\xEF\xBB\xBF<a>\n\xFF</a>").unwrap_err();
    assert!(err.to_string().contains("offset 7 (line 2)"), "{err}");
    assert_eq!(request_operation(b"\xFFgarbage"), None);
}

#[test]
fn unknown_operations() {
    let err = parse_request(envelope("<pafn:paFooReq/>").as_bytes()).unwrap_err();
    assert_eq!(err, SoapError::UnknownOperation("paFooReq".into()));
    assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
    // A response is not a request.
    let resp = render_response(&Response::SendRt(SendRtResponse::ok()));
    assert_eq!(
        parse_request(resp.as_bytes()).unwrap_err(),
        SoapError::UnknownOperation("paSendRTRes".into())
    );
    // paDemandPaymentNotice is read like the others: an empty one breaks the XSD.
    let err =
        parse_request(envelope("<pafn:paDemandPaymentNoticeRequest/>").as_bytes()).unwrap_err();
    assert_eq!(
        invalid(&err),
        (
            Operation::DemandPaymentNotice,
            "paDemandPaymentNoticeRequest/idPA",
            "missing"
        )
    );
}

#[test]
fn demand_request_errors_name_the_element() {
    let req = Request::Demand(demand_request());
    let err = mutated_error(
        req.clone(),
        "<idServizio>00001</idServizio>",
        "<idServizio>0001</idServizio>",
    );
    let (op, path, reason) = invalid(&err);
    assert_eq!(op, Operation::DemandPaymentNotice);
    assert_eq!(path, "paDemandPaymentNoticeRequest/idServizio");
    assert!(reason.contains('5'), "{reason}");
    let err = mutated_error(
        req.clone(),
        "<idSoggettoServizio>00042</idSoggettoServizio>",
        "",
    );
    assert_eq!(
        invalid(&err).1,
        "paDemandPaymentNoticeRequest/idSoggettoServizio"
    );
    let err = mutated_error(
        req,
        "<datiSpecificiServizioRequest>PHR",
        "<datiSpecificiServizioRequest>*PHR",
    );
    let (_, path, reason) = invalid(&err);
    assert_eq!(
        path,
        "paDemandPaymentNoticeRequest/datiSpecificiServizioRequest"
    );
    assert!(reason.contains("base64"), "{reason}");
}

#[test]
fn soap_fault_in_response() {
    let xml = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
               <faultcode>s:Server</faultcode><faultstring>boom</faultstring></s:Fault></s:Body></s:Envelope>";
    assert_eq!(
        parse_response(xml.as_bytes()).unwrap_err(),
        SoapError::SoapFault {
            fault_code: "s:Server".into(),
            fault_string: "boom".into()
        }
    );
}

#[test]
fn rendered_soap_faults_read_back() {
    for (code, text) in [
        (SoapFaultCode::Client, "soapenv:Client"),
        (SoapFaultCode::Server, "soapenv:Server"),
    ] {
        let xml = render_soap_fault(code, "bad <envelope> & more");
        assert_eq!(
            parse_response(xml.as_bytes()).unwrap_err(),
            SoapError::SoapFault {
                fault_code: text.into(),
                fault_string: "bad <envelope> & more".into()
            },
            "{xml}"
        );
    }
}

fn verify_error(notice: &str) -> String {
    parse_request(envelope(&verify_payload(notice)).as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_notice_numbers() {
    assert_eq!(
        verify_error("30100000000001237"),
        "paVerifyPaymentNoticeReq/qrCode/noticeNumber: must be 18 digits, found \"30100000000001237\""
    );
    assert_eq!(
        verify_error("30100000000001237A"),
        "paVerifyPaymentNoticeReq/qrCode/noticeNumber: must be 18 digits, found \"30100000000001237A\""
    );
    // xsd:string keeps whitespace, so a padded number breaks the pattern.
    assert!(verify_error(" 301000000000012373").contains("must be 18 digits"));
    assert!(verify_error("").contains("must be 18 digits, found \"\""));
    assert!(verify_error("<b>301000000000012373</b>").contains("unexpected child element <b>"));
}

/// Parses a request rendered from `req` after replacing `from` with `to` in the text.
fn mutated_error(req: Request, from: &str, to: &str) -> SoapError {
    let xml = render_request(&req);
    assert!(xml.contains(from), "{from} not in {xml}");
    parse_request(xml.replacen(from, to, 1).as_bytes()).unwrap_err()
}

#[test]
fn structural_errors_name_the_path() {
    let verify = || Request::Verify(verify_request());
    let get = || Request::GetPayment(get_payment_request());
    let rt = || {
        let Some((_, r)) = all_requests().into_iter().find(|(n, _)| *n == "send_rt") else {
            unreachable!()
        };
        r
    };
    let rt2 = || {
        let Some((_, r)) = all_requests().into_iter().find(|(n, _)| *n == "send_rt_v2") else {
            unreachable!()
        };
        r
    };
    let cases: Vec<(SoapError, &str)> = vec![
        (
            mutated_error(verify(), "<noticeNumber>301000000000012373</noticeNumber>", ""),
            "paVerifyPaymentNoticeReq/qrCode/noticeNumber: missing",
        ),
        (
            mutated_error(verify(), "<idPA>77777777777</idPA>", ""),
            "paVerifyPaymentNoticeReq/idPA: missing (found <idBrokerPA> instead)",
        ),
        (
            mutated_error(verify(), "<idPA>77777777777</idPA>", "<idPA></idPA>"),
            "paVerifyPaymentNoticeReq/idPA: must not be empty",
        ),
        (
            mutated_error(verify(), "<idPA>77777777777</idPA>", &format!("<idPA>{}</idPA>", "1".repeat(36))),
            "paVerifyPaymentNoticeReq/idPA: must be 1 to 35 characters long, found 36",
        ),
        (
            mutated_error(
                verify(),
                "<idPA>77777777777</idPA><idBrokerPA>80000000001</idBrokerPA>",
                "<idBrokerPA>80000000001</idBrokerPA><idPA>77777777777</idPA>",
            ),
            "paVerifyPaymentNoticeReq/idBrokerPA: unexpected element, expected <idPA>",
        ),
        (
            mutated_error(verify(), "<idPA>77777777777</idPA>", "<idPA>77777777777</idPA><idPA>1</idPA>"),
            "paVerifyPaymentNoticeReq/idPA: repeated",
        ),
        (
            mutated_error(verify(), "</qrCode>", "</qrCode><extra/>"),
            "paVerifyPaymentNoticeReq/extra: unexpected element",
        ),
        (
            mutated_error(verify(), "<fiscalCode>77777777777</fiscalCode>", "<fiscalCode>7777777777</fiscalCode>"),
            "paVerifyPaymentNoticeReq/qrCode/fiscalCode: must be 11 digits, found \"7777777777\"",
        ),
        (
            mutated_error(verify(), "<qrCode>", "<qrCode>text"),
            "paVerifyPaymentNoticeReq/qrCode: unexpected text \"text\"",
        ),
        (
            mutated_error(verify(), "<idPA>77777777777</idPA>", "<paf:idPA>77777777777</paf:idPA>"),
            "paVerifyPaymentNoticeReq/idPA: must have no namespace (the XSD's elements are unqualified), found http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd",
        ),
        (
            mutated_error(get(), "<amount>30.00</amount>", "<amount>30.0</amount>"),
            "paGetPaymentReq/amount: must be an amount with two decimals like 12.50, found \"30.0\"",
        ),
        (
            mutated_error(get(), "<amount>30.00</amount>", "<amount>1000000000.00</amount>"),
            "paGetPaymentReq/amount: must be at most 999999999.99, found \"1000000000.00\"",
        ),
        (
            mutated_error(get(), "<transferType>PAGOPA</transferType>", "<transferType>BANK</transferType>"),
            "paGetPaymentReq/transferType: must be one of POSTAL, PAGOPA, found \"BANK\"",
        ),
        (
            mutated_error(get(), "<dueDate>2024-12-31</dueDate>", "<dueDate>31/12/2024</dueDate>"),
            "paGetPaymentReq/dueDate: must be a date like 2024-12-31, found \"31/12/2024\"",
        ),
        (
            mutated_error(rt(), "<transferAmount>10.00</transferAmount>", "<transferAmount>0.00</transferAmount>"),
            "paSendRTReq/receipt/transferList/transfer[2]/transferAmount: must be at least 0.01",
        ),
        (
            mutated_error(rt(), "<idTransfer>2</idTransfer>", "<idTransfer>6</idTransfer>"),
            "paSendRTReq/receipt/transferList/transfer[2]/idTransfer: must be 1 to 5, found \"6\"",
        ),
        (
            mutated_error(rt(), "<e-mail>john.doe+pa@test.it</e-mail>", "<e-mail>john.doe</e-mail>"),
            "paSendRTReq/receipt/debtor/e-mail: must be an e-mail address, found \"john.doe\"",
        ),
        (
            mutated_error(rt(), "<country>IT</country>", "<country>ITA</country>"),
            "paSendRTReq/receipt/debtor/country: must be 2 upper-case letters, found \"ITA\"",
        ),
        (
            mutated_error(rt(), "<entityUniqueIdentifierType>F</entityUniqueIdentifierType>", "<entityUniqueIdentifierType>X</entityUniqueIdentifierType>"),
            "paSendRTReq/receipt/debtor/uniqueIdentifier/entityUniqueIdentifierType: must be one of F, G, found \"X\"",
        ),
        (
            mutated_error(rt(), "<mapEntry><key>key2</key><value>value &amp; 2</value></mapEntry>", "<mapEntry><key>key2</key></mapEntry>"),
            "paSendRTReq/receipt/transferList/transfer[1]/metadata/mapEntry[2]/value: missing",
        ),
        (
            mutated_error(rt(), "<metadata><mapEntry><key>key1</key>", "<metadata></metadata><metadata><mapEntry><key>key1</key>"),
            "paSendRTReq/receipt/transferList/transfer[1]/metadata/mapEntry: missing",
        ),
        (
            mutated_error(rt(), "<paymentDateTime>2021-10-01T17:48:22</paymentDateTime>", "<paymentDateTime>2021-10-01</paymentDateTime>"),
            "paSendRTReq/receipt/paymentDateTime: must be a date and time like 2024-12-31T23:59:59, found \"2021-10-01\"",
        ),
        (
            mutated_error(rt(), "<standIn>false</standIn>", "<standIn>no</standIn>"),
            "paSendRTReq/receipt/standIn: must be true or false, found \"no\"",
        ),
        (
            mutated_error(rt(), "<transferList>", "<transferList></transferList><transferList>"),
            "paSendRTReq/receipt/transferList/transfer: missing",
        ),
        (
            mutated_error(rt2(), "<IBAN>IT96R0123454321000000012345</IBAN>", ""),
            "paSendRTV2Request/receipt/transferList/transfer[1]/IBAN: missing (or MBDAttachment), found <remittanceInformation>",
        ),
        (
            mutated_error(rt2(), "<MBDAttachment>PG1hcmNhRGFCb2xsbz48L21hcmNhRGFCb2xsbz4=</MBDAttachment>", "<MBDAttachment>not base64!</MBDAttachment>"),
            "paSendRTV2Request/receipt/transferList/transfer[2]/MBDAttachment: must be base64, found \"not base64!\"",
        ),
        (
            mutated_error(rt2(), "<IBAN>IT96R0123454321000000012345</IBAN>", "<IBAN>IT96R0123454321000000012345</IBAN><MBDAttachment>AAAA</MBDAttachment>"),
            "paSendRTV2Request/receipt/transferList/transfer[1]/MBDAttachment: unexpected element, expected <remittanceInformation>",
        ),
    ];
    for (err, expected) in cases {
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.fault_code(), "PAA_SINTASSI_XSD");
        assert!(err.operation().is_some());
    }
}

#[test]
fn list_bounds() {
    let Request::SendRt(mut rt) = all_requests().swap_remove(4).1 else {
        panic!()
    };
    rt.receipt.transfer_list = (1..=6)
        .map(|i| transfer(i.min(5), "1.00", "77777777777"))
        .collect();
    let err = parse_request(render_request(&Request::SendRt(rt.clone())).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "paSendRTReq/receipt/transferList/transfer[6]: at most 5 allowed"
    );
    rt.receipt.transfer_list.truncate(1);
    rt.receipt.metadata = meta(16);
    let err = parse_request(render_request(&Request::SendRt(rt)).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "paSendRTReq/receipt/metadata/mapEntry[16]: at most 15 allowed"
    );
}

#[test]
fn response_errors() {
    let ok = render_response(&Response::Verify(VerifyResponse::default()));
    let err = parse_response(ok.replace("<outcome>OK</outcome>", "").as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "paVerifyPaymentNoticeRes/outcome: missing");
    let err = parse_response(ok.replace(">OK<", ">ok<").as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "paVerifyPaymentNoticeRes/outcome: must be one of OK, KO, found \"ok\""
    );
    // paymentList holds exactly one option.
    let two = render_response(&all_responses()[0].1).replace(
        "</paymentOptionDescription>",
        "</paymentOptionDescription><paymentOptionDescription/>",
    );
    assert_eq!(
        parse_response(two.as_bytes()).unwrap_err().to_string(),
        "paVerifyPaymentNoticeRes/paymentList/paymentOptionDescription: repeated"
    );
    // The V2 data needs companyName.
    let v2 = render_response(&all_responses()[3].1).replacen(
        "<companyName>Comune di Prova</companyName>",
        "",
        1,
    );
    assert_eq!(
        parse_response(v2.as_bytes()).unwrap_err().to_string(),
        "paGetPaymentV2Response/data/companyName: missing (found <debtor> instead)"
    );
}

#[test]
fn rejects_deep_nesting() {
    let deep = format!(
        "<pafn:paSendRTReq>{}{}</pafn:paSendRTReq>",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    );
    let err = parse_request(envelope(&deep).as_bytes()).unwrap_err();
    assert!(matches!(err, SoapError::NotSoap(m) if m.contains("nested")));
}

/// `cargo test --release -p snodo-adapters -- --ignored verify_throughput --nocapture`
#[test]
#[ignore]
fn verify_throughput() {
    let req = render_request(&Request::Verify(verify_request()));
    let Some((_, resp)) = all_responses().into_iter().next() else {
        unreachable!()
    };
    let n = 200_000;
    let start = std::time::Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        let parsed = parse_request(req.as_bytes()).unwrap();
        assert!(matches!(parsed, Request::Verify(_)));
        bytes += render_response(&resp).len();
    }
    let per_s = f64::from(n) / start.elapsed().as_secs_f64();
    println!("verify parse+render: {per_s:.0}/s on one core ({bytes} bytes)");
}

/// The parser and xmllint agree on edge cases of the simple types.
#[test]
fn parser_agrees_with_xmllint() {
    let rt = render_request(&all_requests().swap_remove(4).1);
    let mutations: &[(&str, &str)] = &[
        ("<paymentAmount>30.00<", "<paymentAmount> 30.00\n<"),
        ("<paymentAmount>30.00<", "<paymentAmount>030.00<"),
        ("<paymentAmount>30.00<", "<paymentAmount>0.00<"),
        ("<paymentAmount>30.00<", "<paymentAmount>30.0<"),
        ("<paymentAmount>30.00<", "<paymentAmount>+30.00<"),
        ("<paymentAmount>30.00<", "<paymentAmount>999999999.99<"),
        ("<paymentAmount>30.00<", "<paymentAmount>1000000000.00<"),
        ("<transferAmount>10.00<", "<transferAmount>0.00<"),
        (
            "<noticeNumber>301000000000012373<",
            "<noticeNumber> 301000000000012373<",
        ),
        (
            "<noticeNumber>301000000000012373<",
            "<noticeNumber>３01000000000012373<",
        ),
        (
            "<applicationDate>2021-10-01<",
            "<applicationDate>2024-02-29<",
        ),
        (
            "<applicationDate>2021-10-01<",
            "<applicationDate>2023-02-29<",
        ),
        // Not with surrounding spaces: libxml2 rejects them for xsd:date, though the XSD's
        // whitespace collapse (and the parser) accepts them.
        (
            "<applicationDate>2021-10-01<",
            "<applicationDate>2021-10-01Z<",
        ),
        (
            "<applicationDate>2021-10-01<",
            "<applicationDate>2021-10-01+14:00<",
        ),
        (
            "<applicationDate>2021-10-01<",
            "<applicationDate>2021-10-01+14:01<",
        ),
        (
            "<paymentDateTime>2021-10-01T17:48:22<",
            "<paymentDateTime>2021-10-01T17:48:22.5Z<",
        ),
        (
            "<paymentDateTime>2021-10-01T17:48:22<",
            "<paymentDateTime>2021-10-01T24:00:00<",
        ),
        (
            "<paymentDateTime>2021-10-01T17:48:22<",
            "<paymentDateTime>2021-10-01T17:60:00<",
        ),
        ("<idTransfer>2<", "<idTransfer> +02 <"),
        ("<idTransfer>2<", "<idTransfer>0<"),
        ("<standIn>false<", "<standIn>0<"),
        ("<standIn>false<", "<standIn>False<"),
        ("<e-mail>john.doe+pa@test.it<", "<e-mail>a@b<"),
        ("<e-mail>john.doe+pa@test.it<", "<e-mail>a@b..c<"),
        ("<e-mail>john.doe+pa@test.it<", "<e-mail>a@b.c <"),
        ("<country>IT<", "<country>It<"),
        ("<idPA>77777777777<", "<idPA> 7 <"),
        (
            "<idPA>77777777777<",
            "<idPA>ààààààààààààààààààààààààààààààààààà<",
        ),
        (
            "<idPA>77777777777<",
            "<idPA>àààààààààààààààààààààààààààààààààààà<",
        ),
        (
            "<entityUniqueIdentifierValue>JHNDOE00A01F205N<",
            "<entityUniqueIdentifierValue>J<",
        ),
        ("<outcome>OK<", "<outcome> OK<"),
        (
            "<receiptId>c110729d258c4ab1b765fe902aae41d6<",
            "<receiptId><",
        ),
        ("<fee>2.00<", "<fee>0.00<"),
    ];
    let mut payloads = Vec::new();
    let mut parsed = Vec::new();
    for (from, to) in mutations {
        assert!(rt.contains(from), "{from}");
        let xml = rt.replacen(from, to, 1);
        payloads.push(payload_of(&xml));
        parsed.push(parse_request(xml.as_bytes()));
    }
    let (verdicts, report) = xmllint_verdicts(&payloads);
    for (((_, to), ok), parsed) in mutations.iter().zip(verdicts).zip(parsed) {
        assert_eq!(
            parsed.is_ok(),
            ok,
            "{to}: parser {parsed:?}, xmllint:\n{report}"
        );
    }
}
