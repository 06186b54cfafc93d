//! pagoPA's settlement flows (FdR) in every form the hub meets them: the FlussoRiversamento XML
//! (`fdr-xml`), the node's legacy SOAP calls that carry it, FdR 3's REST JSON, and the hub's own
//! report (`fdr-json`). Each decodes into, or encodes from, `snodo_core::settlement`.
//! Nothing here opens a connection or a file.

pub mod report_json;
pub mod rest;
pub mod soap;
pub mod xml;

#[cfg(test)]
mod tests;

/// Codec name of the FlussoRiversamento XML, for pipelines' `encode`.
pub const FDR_XML: &str = "fdr-xml";
/// Codec name of the hub's JSON report of a flow ([`report_json`]).
pub const FDR_JSON: &str = "fdr-json";

/// The official files the tests check against.
pub mod specs {
    /// The node's superset FlussoRiversamento XSD (esiti 0, 3, 4, 8, 9).
    pub const FLUSSO_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/fdr/pagopa-fdr-nodo-dei-pagamenti/FlussoRiversamento_1_0_4.xsd"
    );
}
