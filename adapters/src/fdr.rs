//! pagoPA's settlement flows (FdR) in every form the hub meets them: the FlussoRiversamento XML
//! (`fdr-xml`), the node's legacy SOAP calls that carry it, FdR 3's REST JSON, and the hub's own
//! report (`fdr-json`). Each decodes into, or encodes from, `snodo_core::settlement`.
//! Nothing here opens a connection or a file.

pub mod report_json;
pub mod rest;
pub mod soap;
pub mod xml;

use snodo_core::settlement::link::{Anomaly, LinkSummary, RowLink};
use snodo_core::settlement::{SettlementFlow, SettlementPayment};
use snodo_core::Amount;

#[cfg(test)]
mod tests;

/// Codec name of the FlussoRiversamento XML, for pipelines' `encode`.
pub const FDR_XML: &str = "fdr-xml";
/// Codec name of the hub's JSON report of a flow ([`report_json`]).
pub const FDR_JSON: &str = "fdr-json";

/// A settlement flow as the hub hands it to an entity: the flow, its rows each with its link
/// (row for row), what the rows add up to and the anomalies found. Built right after linking
/// ([`Report::linked`]) or again from what the store kept; `fdr-json` and `fdr-xml` encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub flow: SettlementFlow,
    pub payments: Vec<SettlementPayment>,
    /// One per payment, in the same order.
    pub links: Vec<RowLink>,
    pub computed_count: u64,
    pub computed_amount: Amount,
    pub linked: u64,
    /// Rows' anomalies in row order, then the totals'.
    pub anomalies: Vec<ReportAnomaly>,
}

/// An anomaly as reported: the linking rules' code, severity, row and message, or the same
/// read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportAnomaly {
    pub code: String,
    /// `info` or `anomaly`.
    pub severity: String,
    pub row: Option<u64>,
    pub message: String,
}

impl ReportAnomaly {
    pub fn of(a: &Anomaly) -> ReportAnomaly {
        ReportAnomaly {
            code: a.code().to_owned(),
            severity: a.severity().as_str().to_owned(),
            row: a.row(),
            message: a.to_string(),
        }
    }
}

/// Why a [`Report`] cannot be made of its parts.
#[derive(Debug, thiserror::Error)]
#[error("{payments} payments but {links} links: one link per payment row is needed")]
pub struct RowsMismatch {
    pub payments: usize,
    pub links: usize,
}

impl Report {
    /// The report of a flow just linked: `links` row for row with `payments`, `summary` as the
    /// linking rules left it.
    pub fn linked(
        flow: SettlementFlow,
        payments: Vec<SettlementPayment>,
        links: Vec<RowLink>,
        summary: &LinkSummary,
    ) -> Result<Report, RowsMismatch> {
        if payments.len() != links.len() {
            return Err(RowsMismatch {
                payments: payments.len(),
                links: links.len(),
            });
        }
        Ok(Report {
            flow,
            payments,
            links,
            computed_count: summary.computed_count,
            computed_amount: summary.computed_amount,
            linked: summary.linked,
            anomalies: summary.anomalies.iter().map(ReportAnomaly::of).collect(),
        })
    }

    /// The flow as FlussoRiversamento XML (`fdr-xml`).
    pub fn to_xml(&self) -> Vec<u8> {
        xml::render_flow(&self.flow, &self.payments)
    }
}

/// The official files the tests check against.
pub mod specs {
    /// The node's superset FlussoRiversamento XSD (esiti 0, 3, 4, 8, 9).
    pub const FLUSSO_XSD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/fdr/pagopa-fdr-nodo-dei-pagamenti/FlussoRiversamento_1_0_4.xsd"
    );
}
