//! `fdr-json`: a settlement flow as the hub hands it to an entity, with its payments, their
//! links to receipts and the anomalies found (format `snodo.report.v1`, described field by field
//! in `docs/FORMATS.md` and by `docs/report.schema.json`). Money is in integer cents, dates are
//! `yyyy-mm-dd` (Rome), instants RFC 3339 UTC. Every key is always present; a missing value is
//! null.

use std::io::{self, Write};

use serde::Serialize;
use snodo_core::settlement::link::RowLink;
use snodo_core::settlement::SettlementPayment;

use super::{Report, ReportAnomaly};

pub const FORMAT: &str = "snodo.report.v1";

#[derive(Serialize)]
struct Doc<'a> {
    format: &'static str,
    iuf: &'a str,
    psp_id: &'a str,
    revision: u32,
    flow_time: String,
    flow_date: String,
    published: Option<String>,
    regulation: Regulation<'a>,
    sender: Sender<'a>,
    receiver: Receiver<'a>,
    declared: Totals,
    computed: Totals,
    linked: u64,
    payments: Rows<'a>,
    anomalies: Vec<AnomalyOut<'a>>,
}

#[derive(Serialize)]
struct Regulation<'a> {
    id: &'a str,
    date: String,
    bic_code_pouring_bank: Option<&'a str>,
}

#[derive(Serialize)]
struct Sender<'a> {
    kind: &'static str,
    id: &'a str,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Receiver<'a> {
    id: &'a str,
    organization_id: &'a str,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Totals {
    count: u64,
    amount: i64,
}

/// The rows, serialised one by one from the borrowed slices.
struct Rows<'a> {
    payments: &'a [SettlementPayment],
    links: &'a [RowLink],
}

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.payments.iter().zip(self.links).map(|(p, l)| Row {
            row: l.row,
            iuv: &p.iuv,
            iur: &p.iur,
            transfer_index: p.transfer_index.map(|i| i.get()),
            amount: p.amount.cents(),
            esito: p.status.esito(),
            status: p.status.rest_name(),
            date: p.date.format("%Y-%m-%d").to_string(),
            receipt: l.linked.as_ref().map(|t| Link {
                receipt_id: &t.receipt_id,
                transfer_index: t.transfer_index.get(),
                amount: t.amount.cents(),
            }),
        }))
    }
}

#[derive(Serialize)]
struct Row<'a> {
    row: u64,
    iuv: &'a str,
    iur: &'a str,
    transfer_index: Option<u8>,
    amount: i64,
    esito: u8,
    status: &'static str,
    date: String,
    receipt: Option<Link<'a>>,
}

#[derive(Serialize)]
struct Link<'a> {
    receipt_id: &'a str,
    transfer_index: u8,
    amount: i64,
}

#[derive(Serialize)]
struct AnomalyOut<'a> {
    code: &'a str,
    severity: &'a str,
    row: Option<u64>,
    message: &'a str,
}

impl<'a> From<&'a ReportAnomaly> for AnomalyOut<'a> {
    fn from(a: &'a ReportAnomaly) -> Self {
        AnomalyOut {
            code: &a.code,
            severity: &a.severity,
            row: a.row,
            message: &a.message,
        }
    }
}

/// Writes `report` as one JSON document and a newline.
pub fn write_report<W: Write>(out: W, report: &Report) -> io::Result<()> {
    let flow = &report.flow;
    let instant =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let doc = Doc {
        format: FORMAT,
        iuf: flow.iuf.as_str(),
        psp_id: &flow.psp_id,
        revision: flow.revision,
        flow_time: instant(flow.flow_time),
        flow_date: flow.flow_date().format("%Y-%m-%d").to_string(),
        published: flow.published.map(instant),
        regulation: Regulation {
            id: &flow.regulation_id,
            date: flow.regulation_date.format("%Y-%m-%d").to_string(),
            bic_code_pouring_bank: flow.bic_code_pouring_bank.as_deref(),
        },
        sender: Sender {
            kind: flow.sender.kind.rest_name(),
            id: &flow.sender.id,
            name: flow.sender.name.as_deref(),
        },
        receiver: Receiver {
            id: &flow.receiver.id,
            organization_id: &flow.receiver.organization_id,
            name: flow.receiver.name.as_deref(),
        },
        declared: Totals {
            count: flow.declared_count,
            amount: flow.declared_amount.cents(),
        },
        computed: Totals {
            count: report.computed_count,
            amount: report.computed_amount.cents(),
        },
        linked: report.linked,
        payments: Rows {
            payments: &report.payments,
            links: &report.links,
        },
        anomalies: report.anomalies.iter().map(AnomalyOut::from).collect(),
    };
    let mut out = io::BufWriter::new(out);
    serde_json::to_writer(&mut out, &doc).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// [`write_report`] into bytes.
pub fn encode(report: &Report) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + report.payments.len() * 200);
    // Writing to a Vec cannot fail, nor can serialising these plain types.
    let _ = write_report(&mut out, report);
    out
}
