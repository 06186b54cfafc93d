//! The car tax's service data: the `tassaAuto` document of pagoPA's service catalogue
//! (`specs/pagopa/SANP3.12.0/catalogo-servizi/TassaAutomobilistica_1_1_0.xsd`), which the node
//! sends base64 in `paDemandPaymentNotice`'s `datiSpecificiServizioRequest`.
//!
//! [`decode`] checks what that XSD checks (namespace, element order and cardinality, the
//! vehicle type's enumeration, the plate's length); each failure names the element path and
//! the rule broken. [`CarTax::to_base64`] writes the document the other way (the simulator).

use crate::pagopa::fault_codes;
use crate::pagopa::xml::{is_ws, read_document, Node};
use crate::xml_text::XmlText;

/// The catalogue schema this module follows, as a debt type's configuration names it.
pub const SCHEMA: &str = "TassaAutomobilistica_1_1_0";
/// Target namespace of the schema (`elementFormDefault="qualified"`: every element is in it).
pub const NS: &str = "http://PuntoAccessoPSP.spcoop.gov.it/TassaAuto";

/// `stTipoVeicoloTarga`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VehicleType {
    /// `1`: autoveicoli.
    Car,
    /// `2`: rimorchi.
    Trailer,
    /// `4`: motoveicoli.
    Motorcycle,
}

impl VehicleType {
    pub const ALL: [VehicleType; 3] = [Self::Car, Self::Trailer, Self::Motorcycle];

    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Self::Car => "1",
            Self::Trailer => "2",
            Self::Motorcycle => "4",
        }
    }

    /// The name configuration and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Car => "car",
            Self::Trailer => "trailer",
            Self::Motorcycle => "motorcycle",
        }
    }

    pub fn from_code(code: &str) -> Option<VehicleType> {
        Self::ALL.into_iter().find(|v| v.code() == code)
    }
}

/// A decoded `tassaAuto`: the one choice the schema has, a vehicle with a plate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CarTax {
    pub vehicle_type: VehicleType,
    /// `veicoloTarga`, 7 or 8 characters, as sent.
    pub plate: String,
}

/// Why `datiSpecificiServizioRequest` is not a car tax document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarTaxError {
    #[error("datiSpecificiServizioRequest is not base64: {0}")]
    NotBase64(String),
    #[error("datiSpecificiServizioRequest is not a well-formed XML document: {0}")]
    NotXml(String),
    /// The document breaks the schema; `path` is like `tassaAuto/veicoloConTarga/veicoloTarga`.
    #[error("{path}: {rule} ({SCHEMA}.xsd)")]
    Invalid { path: String, rule: String },
}

impl CarTaxError {
    /// The `faultCode` to answer with: a document that breaks the service's XSD is an XSD
    /// error; bytes that are no XML document at all are outside any XSD.
    pub fn fault_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => fault_codes::SINTASSI_XSD,
            Self::NotBase64(_) | Self::NotXml(_) => fault_codes::SINTASSI_EXTRAXSD,
        }
    }
}

impl CarTax {
    /// Data for rehearsals and tests: a car with a well-formed plate. The XSD carries no
    /// sample of its own.
    pub fn sample() -> CarTax {
        CarTax {
            vehicle_type: VehicleType::Car,
            plate: "AB123CD".into(),
        }
    }

    /// The `tassaAuto` document.
    pub fn to_xml(&self) -> String {
        let mut x = XmlText::with_capacity(256);
        x.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        x.push_str(&format!(r#"<tassaAuto xmlns="{NS}">"#));
        x.open("veicoloConTarga");
        x.raw("tipoVeicoloTarga", self.vehicle_type.code());
        x.leaf("veicoloTarga", &self.plate);
        x.close("veicoloConTarga");
        x.close("tassaAuto");
        x.into_string()
    }

    /// The document as `datiSpecificiServizioRequest` carries it.
    pub fn to_base64(&self) -> String {
        crate::mypay_ws::to_base64(self.to_xml().as_bytes())
    }
}

/// Reads `datiSpecificiServizioRequest` (base64, whitespace allowed as in `xsd:base64Binary`).
pub fn decode(base64: &str) -> Result<CarTax, CarTaxError> {
    let bytes = crate::mypay_ws::base64_field(base64).map_err(CarTaxError::NotBase64)?;
    decode_xml(&bytes)
}

/// Reads the `tassaAuto` document itself.
pub fn decode_xml(xml: &[u8]) -> Result<CarTax, CarTaxError> {
    let root = read_document(xml).map_err(|e| CarTaxError::NotXml(e.to_string()))?;
    let path = "tassaAuto";
    element(&root, path, "tassaAuto")?;
    let [vehicle] = children(&root, path, &["veicoloConTarga"])?;
    let path = "tassaAuto/veicoloConTarga";
    let [kind, plate] = children(vehicle, path, &["tipoVeicoloTarga", "veicoloTarga"])?;
    let kind_path = "tassaAuto/veicoloConTarga/tipoVeicoloTarga";
    let code = text(kind, kind_path)?;
    let vehicle_type = VehicleType::from_code(code).ok_or_else(|| {
        invalid(
            kind_path,
            format!("must be 1 (car), 2 (trailer) or 4 (motorcycle), found {code:?}"),
        )
    })?;
    let plate_path = "tassaAuto/veicoloConTarga/veicoloTarga";
    let plate = text(plate, plate_path)?;
    // xsd:string keeps its whitespace, so the length counts it too.
    let n = plate.chars().count();
    if !(7..=8).contains(&n) {
        return Err(invalid(
            plate_path,
            format!("must be 7 or 8 characters (stTarga), found {n}: {plate:?}"),
        ));
    }
    Ok(CarTax {
        vehicle_type,
        plate: plate.to_string(),
    })
}

fn invalid(path: &str, rule: impl Into<String>) -> CarTaxError {
    CarTaxError::Invalid {
        path: path.to_string(),
        rule: rule.into(),
    }
}

/// `node` must be `name` in the schema's namespace.
fn element(node: &Node, path: &str, name: &str) -> Result<(), CarTaxError> {
    if node.name != name {
        return Err(invalid(
            path,
            format!("expected <{name}>, found <{}>", node.name),
        ));
    }
    match node.ns.as_deref() {
        Some(NS) => Ok(()),
        other => Err(invalid(
            path,
            format!(
                "must be in namespace {NS}, found {}",
                other.unwrap_or("no namespace")
            ),
        )),
    }
}

/// The children of a complex element: exactly `names`, in this order, and no text.
fn children<'a, const N: usize>(
    node: &'a Node,
    path: &str,
    names: &[&str; N],
) -> Result<[&'a Node; N], CarTaxError> {
    if !is_ws(&node.text) {
        return Err(invalid(
            path,
            format!("unexpected text {:?}", node.text.trim()),
        ));
    }
    let mut found = Vec::with_capacity(N);
    for (i, name) in names.iter().enumerate() {
        let at = format!("{path}/{name}");
        match node.children.get(i) {
            None => return Err(invalid(&at, "required, missing")),
            Some(c) if c.name != *name => {
                return Err(invalid(
                    &at,
                    format!("required here, found <{}> instead", c.name),
                ))
            }
            Some(c) => {
                element(c, &at, name)?;
                found.push(c);
            }
        }
    }
    if let Some(extra) = node.children.get(N) {
        let repeated = names.contains(&extra.name.as_str());
        return Err(invalid(
            &format!("{path}/{}", extra.name),
            if repeated {
                "at most once".to_string()
            } else {
                "not allowed here".to_string()
            },
        ));
    }
    found
        .try_into()
        .map_err(|_| invalid(path, "unexpected children"))
}

/// The content of a simple-type element.
fn text<'a>(node: &'a Node, path: &str) -> Result<&'a str, CarTaxError> {
    match node.children.first() {
        Some(c) => Err(invalid(
            path,
            format!("must hold text only, found <{}>", c.name),
        )),
        None => Ok(&node.text),
    }
}

#[cfg(test)]
mod tests;
