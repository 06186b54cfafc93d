//! The decoder against the official XSD: what xmllint accepts it reads, what xmllint refuses it
//! refuses, naming the element and the rule.

use super::*;
use std::process::Command;

const XSD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/specs/pagopa/SANP3.12.0/catalogo-servizi/TassaAutomobilistica_1_1_0.xsd"
);

/// Whether xmllint finds `xml` valid against the car tax's XSD.
fn xmllint_valid(xml: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tassa.xml");
    std::fs::write(&path, xml).expect("write");
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", XSD])
        .arg(&path)
        .output()
        .expect("xmllint not found: run ops/setup.sh");
    out.status.success()
}

fn doc(vehicle: &str) -> String {
    format!(r#"<tassaAuto xmlns="{NS}"><veicoloConTarga>{vehicle}</veicoloConTarga></tassaAuto>"#)
}

fn invalid_at(xml: &str) -> (String, String) {
    match decode_xml(xml.as_bytes()) {
        Err(CarTaxError::Invalid { path, rule }) => (path, rule),
        other => panic!("expected an XSD error for {xml}, got {other:?}"),
    }
}

#[test]
fn the_sample_is_valid_and_round_trips() {
    let sample = CarTax::sample();
    assert!(xmllint_valid(&sample.to_xml()), "{}", sample.to_xml());
    assert_eq!(decode(&sample.to_base64()).unwrap(), sample);
    // Line breaks inside base64Binary are allowed.
    let wrapped: String = sample
        .to_base64()
        .as_bytes()
        .chunks(20)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(decode(&wrapped).unwrap(), sample);
    for v in VehicleType::ALL {
        let t = CarTax {
            vehicle_type: v,
            plate: "XY98765Z".into(),
        };
        assert!(xmllint_valid(&t.to_xml()));
        assert_eq!(decode_xml(t.to_xml().as_bytes()).unwrap(), t);
    }
}

#[test]
fn a_prefixed_document_reads_the_same() {
    let xml = format!(
        r#"<?xml version="1.0"?><ta:tassaAuto xmlns:ta="{NS}"><ta:veicoloConTarga><ta:tipoVeicoloTarga>4</ta:tipoVeicoloTarga><ta:veicoloTarga>AA12345</ta:veicoloTarga></ta:veicoloConTarga></ta:tassaAuto>"#
    );
    assert!(xmllint_valid(&xml));
    assert_eq!(
        decode_xml(xml.as_bytes()).unwrap(),
        CarTax {
            vehicle_type: VehicleType::Motorcycle,
            plate: "AA12345".into()
        }
    );
}

#[test]
fn schema_violations_name_the_element_and_the_rule() {
    let cases: &[(String, &str, &str)] = &[
        (
            doc("<tipoVeicoloTarga>3</tipoVeicoloTarga><veicoloTarga>AB123CD</veicoloTarga>"),
            "tassaAuto/veicoloConTarga/tipoVeicoloTarga",
            "must be 1 (car), 2 (trailer) or 4 (motorcycle)",
        ),
        (
            doc("<tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB12CD</veicoloTarga>"),
            "tassaAuto/veicoloConTarga/veicoloTarga",
            "must be 7 or 8 characters (stTarga), found 6",
        ),
        (
            doc("<tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB123CDEF</veicoloTarga>"),
            "tassaAuto/veicoloConTarga/veicoloTarga",
            "found 9",
        ),
        (
            doc("<tipoVeicoloTarga>1</tipoVeicoloTarga>"),
            "tassaAuto/veicoloConTarga/veicoloTarga",
            "required, missing",
        ),
        (
            doc("<veicoloTarga>AB123CD</veicoloTarga><tipoVeicoloTarga>1</tipoVeicoloTarga>"),
            "tassaAuto/veicoloConTarga/tipoVeicoloTarga",
            "found <veicoloTarga> instead",
        ),
        (
            doc("<tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB123CD</veicoloTarga><colore>blu</colore>"),
            "tassaAuto/veicoloConTarga/colore",
            "not allowed here",
        ),
        (
            format!(r#"<tassaAuto xmlns="{NS}"/>"#),
            "tassaAuto/veicoloConTarga",
            "required, missing",
        ),
        (
            format!(
                r#"<tassaAuto xmlns="{NS}"><veicoloConTarga><tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB123CD</veicoloTarga></veicoloConTarga><veicoloConTarga/></tassaAuto>"#
            ),
            "tassaAuto/veicoloConTarga",
            "at most once",
        ),
        (
            "<tassaAuto><veicoloConTarga><tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga>AB123CD</veicoloTarga></veicoloConTarga></tassaAuto>".to_string(),
            "tassaAuto",
            "must be in namespace",
        ),
        (
            format!(r#"<tassaMoto xmlns="{NS}"/>"#),
            "tassaAuto",
            "expected <tassaAuto>, found <tassaMoto>",
        ),
        (
            doc("<tipoVeicoloTarga>1</tipoVeicoloTarga><veicoloTarga><x/></veicoloTarga>"),
            "tassaAuto/veicoloConTarga/veicoloTarga",
            "must hold text only",
        ),
    ];
    for (xml, path, rule) in cases {
        let (p, r) = invalid_at(xml);
        assert_eq!(&p, path, "{xml}");
        assert!(r.contains(rule), "{xml}: {r}");
        // The same document breaks the official XSD.
        assert!(!xmllint_valid(xml), "xmllint accepts {xml}");
        let e = decode_xml(xml.as_bytes()).unwrap_err();
        assert_eq!(e.fault_code(), "PAA_SINTASSI_XSD");
        assert!(e.to_string().contains("TassaAutomobilistica_1_1_0.xsd"));
    }
}

#[test]
fn bytes_that_are_no_document() {
    let e = decode("not base64!").unwrap_err();
    assert!(matches!(e, CarTaxError::NotBase64(_)), "{e:?}");
    assert_eq!(e.fault_code(), "PAA_SINTASSI_EXTRAXSD");
    let e = decode(&crate::mypay_ws::to_base64(b"targa AB123CD")).unwrap_err();
    assert!(matches!(e, CarTaxError::NotXml(_)), "{e:?}");
    assert_eq!(e.fault_code(), "PAA_SINTASSI_EXTRAXSD");
    let e = decode(&crate::mypay_ws::to_base64(b"<!DOCTYPE x []><x/>")).unwrap_err();
    assert!(matches!(e, CarTaxError::NotXml(_)), "{e:?}");
}
