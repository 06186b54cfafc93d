//! What the adapters' tests build again and again: the entities, broker and station, a
//! receipt context, a debtor and a payer, one receipt of each version and the requests that
//! carry them.

use crate::pagopa::{
    self, EntityType, MapEntry, Outcome, QrCode, Receipt, ReceiptDestination, ReceiptTransferV2,
    ReceiptV2, Request, SendRtRequest, SendRtV2Request, Subject, Transfer, UniqueIdentifier,
    VerifyRequest,
};
use crate::receipt_json::ReceiptContext;

pub(crate) const PADOVA: &str = "00644060287";
pub(crate) const FELTRE: &str = "00133880252";
pub(crate) const BROKER: &str = "80007580279";
pub(crate) const STATION: &str = "80007580279_01";
/// Base64 of `<marca/>`, split over two lines as XML allows.
pub(crate) const MBD: &str = "PG1h\ncmNhLz4=";

pub(crate) fn ctx() -> ReceiptContext<'static> {
    ReceiptContext {
        entity_ipa: "c_g224",
        entity_name: "Comune di Padova",
        iud: Some("TARI-2026-0001"),
        debt_type: Some("TARI"),
        received_at: "2026-11-26T10:00:01.123Z",
        issue: None,
        secondary: None,
    }
}

/// [`ctx`], the receipt received at `received_at`.
pub(crate) fn ctx_at(received_at: &str) -> ReceiptContext<'_> {
    ReceiptContext {
        received_at,
        ..ctx()
    }
}

pub(crate) fn debtor() -> Subject {
    Subject {
        unique_identifier: UniqueIdentifier {
            kind: EntityType::F,
            value: "RSSMRA85T10A562S".into(),
        },
        full_name: "Mario Rossi".into(),
        ..Subject::default()
    }
}

pub(crate) fn payer() -> Subject {
    Subject {
        unique_identifier: UniqueIdentifier {
            kind: EntityType::G,
            value: "01234567890".into(),
        },
        full_name: "Rossi & Figli S.r.l.".into(),
        street_name: Some("Via Roma".into()),
        civic_number: Some("1/A".into()),
        postal_code: Some("35100".into()),
        city: Some("Padova".into()),
        state_province_region: Some("PD".into()),
        country: Some("IT".into()),
        email: Some("info@rossi.example".into()),
    }
}

/// A paSendRT with one transfer, a full debtor address and a payer.
pub(crate) fn receipt_v1() -> Receipt {
    Receipt {
        receipt_id: "c3a7e1f0b2d94a7f8e1c".into(),
        notice_number: "301000000000012373".into(),
        fiscal_code: PADOVA.into(),
        outcome: Outcome::Ok,
        creditor_reference_id: "01000000000012373".into(),
        payment_amount: "120.50".into(),
        description: "TARI 2026".into(),
        company_name: "Comune di Padova".into(),
        debtor: Subject {
            street_name: Some("Piazza dei Signori".into()),
            civic_number: Some("12".into()),
            postal_code: Some("35139".into()),
            city: Some("Padova".into()),
            state_province_region: Some("PD".into()),
            country: Some("IT".into()),
            email: Some("mario.rossi@example.it".into()),
            ..debtor()
        },
        transfer_list: vec![Transfer {
            id_transfer: 1,
            transfer_amount: "120.50".into(),
            fiscal_code_pa: PADOVA.into(),
            iban: "IT60X0542811101000000123456".into(),
            remittance_information: "/RFB/01000000000012373/TXT/TARI".into(),
            transfer_category: "9/0101100IM/".into(),
            metadata: vec![MapEntry {
                key: "capitolo".into(),
                value: "1234".into(),
            }],
        }],
        id_psp: "BCITITMM".into(),
        psp_fiscal_code: Some("00799960158".into()),
        psp_company_name: "Intesa Sanpaolo".into(),
        id_channel: "BCITITMM_01".into(),
        channel_description: "app".into(),
        payer: Some(payer()),
        payment_method: Some("creditCard".into()),
        fee: Some("1.00".into()),
        payment_date_time: Some("2026-11-26T10:00:00".into()),
        application_date: Some("2026-11-25".into()),
        transfer_date: Some("2026-11-27".into()),
        ..Receipt::default()
    }
}

/// A paSendRTV2 with two transfers: one to an IBAN, one a revenue stamp for another entity
/// whose category is the bare taxonomy code.
pub(crate) fn receipt_v2() -> ReceiptV2 {
    ReceiptV2 {
        receipt_id: "9f1e2d3c4b5a69788796".into(),
        notice_number: "347164993070184562".into(),
        fiscal_code: PADOVA.into(),
        outcome: Outcome::Ok,
        creditor_reference_id: "47164993070184562".into(),
        payment_amount: "150.07".into(),
        description: "Certificato".into(),
        company_name: "Comune di Padova".into(),
        debtor: debtor(),
        transfer_list: vec![
            ReceiptTransferV2 {
                id_transfer: 1,
                transfer_amount: "134.07".into(),
                fiscal_code_pa: PADOVA.into(),
                company_name: None,
                destination: ReceiptDestination::Iban("IT60X0542811101000000123456".into()),
                remittance_information: "/RFB/47164993070184562/TXT/Certificato".into(),
                transfer_category: "9/0101100IM/".into(),
                metadata: Vec::new(),
            },
            ReceiptTransferV2 {
                id_transfer: 2,
                transfer_amount: "16.00".into(),
                fiscal_code_pa: FELTRE.into(),
                company_name: Some("Comune di Feltre".into()),
                destination: ReceiptDestination::MbdAttachment(MBD.into()),
                remittance_information: "Marca da bollo".into(),
                transfer_category: "0301109AP".into(),
                metadata: Vec::new(),
            },
        ],
        id_psp: "BCITITMM".into(),
        psp_company_name: "Intesa Sanpaolo".into(),
        id_channel: "BCITITMM_01".into(),
        channel_description: "app".into(),
        payment_note: Some("per la pratica 42".into()),
        primary_ci_incurred_fee: Some("0.50".into()),
        // 10:00:00.250 in Rome (CET).
        payment_date_time: Some("2026-11-26T09:00:00.250Z".into()),
        ..ReceiptV2::default()
    }
}

pub(crate) fn send_rt(receipt: Receipt) -> String {
    pagopa::render_request(&Request::SendRt(SendRtRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        receipt,
    }))
}

pub(crate) fn send_rt_v2(receipt: ReceiptV2) -> String {
    pagopa::render_request(&Request::SendRtV2(SendRtV2Request {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        receipt,
    }))
}

/// Padova's notice that [`receipt_v1`] pays.
pub(crate) fn qr_code() -> QrCode {
    QrCode {
        fiscal_code: PADOVA.into(),
        notice_number: "301000000000012373".into(),
    }
}

/// A paVerifyPaymentNotice of [`qr_code`]: a request that is no receipt.
pub(crate) fn verify_request() -> String {
    pagopa::render_request(&Request::Verify(VerifyRequest {
        id_pa: PADOVA.into(),
        id_broker_pa: BROKER.into(),
        id_station: STATION.into(),
        qr_code: qr_code(),
    }))
}

/// Validates each JSON file against the JSON Schema at `schema` with Python's `jsonschema`
/// (installed by ops/setup.sh); `None` for a valid file, else the validator's message.
pub(crate) fn schema_verdicts(schema: &str, files: &[std::path::PathBuf]) -> Vec<Option<String>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    print("NO-JSONSCHEMA")
    sys.exit(3)
schema = json.load(open(sys.argv[1], encoding="utf-8"))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    doc = json.load(open(path, encoding="utf-8"))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        print("INVALID " + " | ".join(
            "/".join(map(str, e.absolute_path)) + ": " + e.message for e in errors
        ).replace("\n", " "))
    else:
        print("VALID")
"#;
    let out = match std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(schema)
        .args(files)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("python3 not found: run ops/setup.sh")
        }
        Err(e) => panic!("cannot run python3: {e}"),
        Ok(out) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("NO-JSONSCHEMA"),
        "Python package jsonschema not installed: run ops/setup.sh"
    );
    assert!(
        out.status.success(),
        "schema check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Option<String>> = stdout
        .lines()
        .map(|l| (l != "VALID").then(|| l.to_string()))
        .collect();
    assert_eq!(verdicts.len(), files.len(), "{stdout}");
    verdicts
}
