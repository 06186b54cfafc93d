//! `/metrics` in Prometheus text format. The totals come from the store at scrape time, so every
//! hub sharing a store reports the same; the SOAP answers are this process's own.

use snodo_store::StoreMetrics;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Answers to the node's calls, by (operation, fault code; empty for OK).
pub type Answers = BTreeMap<(&'static str, String), u64>;

pub fn render(answers: &Answers, store: Option<&StoreMetrics>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "snodo_soap_answers_total",
        "counter",
        "Answers to the node's calls, by operation and fault code (empty: OK).",
        answers
            .iter()
            .map(|((op, fault), n)| (format!("operation=\"{op}\",fault=\"{fault}\""), *n as i64)),
    );
    let Some(m) = store else { return out };
    family(
        &mut out,
        "snodo_receipts_stored_total",
        "counter",
        "Receipts stored, by entity.",
        m.receipts
            .iter()
            .map(|(e, n, _)| (format!("entity=\"{e}\""), *n)),
    );
    family(
        &mut out,
        "snodo_receipts_flagged_total",
        "counter",
        "Receipts stored and flagged for operators, by entity.",
        m.receipts
            .iter()
            .map(|(e, _, n)| (format!("entity=\"{e}\""), *n)),
    );
    family(
        &mut out,
        "snodo_deliveries",
        "gauge",
        "Receipt deliveries, by pipeline and status (pending, delivered, dead).",
        m.deliveries
            .iter()
            .map(|(p, s, n)| (format!("pipeline=\"{p}\",status=\"{s}\""), *n)),
    );
    family(
        &mut out,
        "snodo_import_rows_total",
        "counter",
        "Rows of import flows, by entity and outcome.",
        m.import_rows.iter().flat_map(|(e, accepted, rejected)| {
            [
                (format!("entity=\"{e}\",outcome=\"accepted\""), *accepted),
                (format!("entity=\"{e}\",outcome=\"rejected\""), *rejected),
            ]
        }),
    );
    out
}

fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, i64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples() {
        let mut answers = Answers::new();
        answers.insert(("paSendRTV2", String::new()), 3);
        answers.insert(("paSendRTV2", "PAA_RECEIPT_DUPLICATA".into()), 1);
        let store = StoreMetrics {
            receipts: vec![("c_g224".into(), 4, 1)],
            deliveries: vec![("erp".into(), "dead".into(), 2)],
            import_rows: vec![("c_g224".into(), 10, 2)],
        };
        let text = render(&answers, Some(&store));
        for line in [
            "# TYPE snodo_soap_answers_total counter",
            "snodo_soap_answers_total{operation=\"paSendRTV2\",fault=\"\"} 3",
            "snodo_soap_answers_total{operation=\"paSendRTV2\",fault=\"PAA_RECEIPT_DUPLICATA\"} 1",
            "snodo_receipts_flagged_total{entity=\"c_g224\"} 1",
            "snodo_deliveries{pipeline=\"erp\",status=\"dead\"} 2",
            "snodo_import_rows_total{entity=\"c_g224\",outcome=\"rejected\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in {text}"
            );
        }
        assert!(!render(&answers, None).contains("snodo_deliveries"));
    }
}
