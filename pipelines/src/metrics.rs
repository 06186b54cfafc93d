//! `/metrics` in Prometheus text format. The totals come from the store at scrape time, so every
//! hub sharing a store reports the same; the SOAP answers, API requests and verifications at
//! entity systems are this process's own.

use snodo_store::StoreMetrics;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Answers to the node's calls, by (operation, fault code; empty for OK).
pub type Answers = BTreeMap<(&'static str, String), u64>;

/// Upper bounds (seconds) of the delivery latency buckets: from "at once" to "after an outage".
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0, 86400.0,
];

/// This process's deliveries: time from receipt stored to delivered, and attempts by outcome.
#[derive(Default)]
pub struct DeliveryStats {
    pipelines: Mutex<BTreeMap<String, PipelineStats>>,
}

#[derive(Default, Clone)]
struct PipelineStats {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    count: u64,
    sum: f64,
    /// By outcome: delivered, retry, dead.
    attempts: BTreeMap<&'static str, u64>,
}

impl DeliveryStats {
    pub fn delivered(&self, pipeline: &str, latency: Duration) {
        let secs = latency.as_secs_f64();
        let mut all = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let s = all.entry(pipeline.to_string()).or_default();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        s.buckets[bucket] += 1;
        s.count += 1;
        s.sum += secs;
    }

    /// `outcome`: delivered, retry or dead.
    pub fn attempt(&self, pipeline: &str, outcome: &'static str) {
        let mut all = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        *all.entry(pipeline.to_string())
            .or_default()
            .attempts
            .entry(outcome)
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, PipelineStats> {
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// This process's entity API requests, and its real-time verifications at entity systems.
#[derive(Default)]
pub struct ApiStats {
    /// By (entity, resource, method, status).
    requests: Mutex<BTreeMap<(String, String, String, u16), u64>>,
    /// By (entity, outcome: ok, unknown, annulled, failed).
    verifications: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl ApiStats {
    pub fn request(&self, entity: &str, resource: &str, method: &str, status: u16) {
        let key = (entity.into(), resource.into(), method.into(), status);
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn verification(&self, entity: &str, outcome: &'static str) {
        *self
            .verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((entity.into(), outcome))
            .or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            out,
            "snodo_api_requests_total",
            "counter",
            "Entity API requests answered by this process, by entity, resource, method and status.",
            requests.iter().map(|((e, r, m, s), n)| {
                (
                    format!("entity=\"{e}\",resource=\"{r}\",method=\"{m}\",status=\"{s}\""),
                    *n as i64,
                )
            }),
        );
        let verifications = self
            .verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            out,
            "snodo_external_verifications_total",
            "counter",
            "Notices asked to entity systems by this process, by entity and outcome (ok, unknown, annulled, failed).",
            verifications
                .iter()
                .map(|((e, o), n)| (format!("entity=\"{e}\",outcome=\"{o}\""), *n as i64)),
        );
    }
}

/// Payment notices rendered by this process, by (entity, source: api or flow): count and
/// seconds spent. A process-wide tally: notices are rendered from the API and from import
/// pipelines alike.
#[derive(Default)]
pub struct NoticeStats {
    by: Mutex<NoticeCounts>,
}

/// (entity, source) → (notices, seconds).
type NoticeCounts = BTreeMap<(String, &'static str), (u64, f64)>;

/// Calls of MyPay's SOAP services (`/ws/pa/...`), by operation, and their faults by code.
pub struct MypayWsStats {
    calls: Mutex<BTreeMap<&'static str, u64>>,
    faults: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

pub static MYPAY_WS: MypayWsStats = MypayWsStats {
    calls: Mutex::new(BTreeMap::new()),
    faults: Mutex::new(BTreeMap::new()),
};

impl MypayWsStats {
    /// Only the WSDL's operation names and MyPay's fault codes (static strings) become labels,
    /// so no caller can grow the number of series.
    pub fn call(&self, operation: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_default() += 1;
    }

    pub fn fault(&self, operation: &'static str, code: &'static str) {
        *self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((operation, code))
            .or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        family(
            out,
            "snodo_mypay_ws_calls_total",
            "counter",
            "Calls of MyPay's SOAP services read by this process, by operation.",
            calls
                .iter()
                .map(|(op, n)| (format!("operation=\"{op}\""), *n as i64)),
        );
        let faults = self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        family(
            out,
            "snodo_mypay_ws_faults_total",
            "counter",
            "Answers of MyPay's SOAP services carrying a fault, by operation and MyPay code.",
            faults
                .iter()
                .map(|((op, code), n)| (format!("operation=\"{op}\",code=\"{code}\""), *n as i64)),
        );
    }
}

pub static NOTICES: NoticeStats = NoticeStats {
    by: Mutex::new(BTreeMap::new()),
};

impl NoticeStats {
    pub fn rendered(&self, entity: &str, source: &'static str, count: u64, took: Duration) {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let e = by.entry((entity.to_string(), source)).or_default();
        e.0 += count;
        e.1 += took.as_secs_f64();
    }

    fn render(&self, out: &mut String) {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let label = |(e, s): &(String, &str)| format!("entity=\"{e}\",source=\"{s}\"");
        family(
            out,
            "snodo_notices_rendered_total",
            "counter",
            "Payment notices (PDF) rendered by this process, by entity and source (api, flow).",
            by.iter().map(|(k, (n, _))| (label(k), *n as i64)),
        );
        let _ = writeln!(
            out,
            "# HELP snodo_notice_render_seconds_total Time spent rendering notices (a flow's: the whole zip), by entity and source.\n# TYPE snodo_notice_render_seconds_total counter"
        );
        for (k, (_, secs)) in &by {
            let _ = writeln!(
                out,
                "snodo_notice_render_seconds_total{{{}}} {secs}",
                label(k)
            );
        }
    }
}

pub fn render(
    answers: &Answers,
    stats: &DeliveryStats,
    api: &ApiStats,
    store: Option<&StoreMetrics>,
) -> String {
    let mut out = String::new();
    api.render(&mut out);
    NOTICES.render(&mut out);
    MYPAY_WS.render(&mut out);
    let stats = stats.snapshot();
    let _ = writeln!(
        out,
        "# HELP snodo_delivery_latency_seconds From receipt stored to delivered, by pipeline (this process's deliveries).\n# TYPE snodo_delivery_latency_seconds histogram"
    );
    for (p, s) in &stats {
        let mut cumulative = 0;
        for (i, n) in s.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "snodo_delivery_latency_seconds_bucket{{pipeline=\"{p}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "snodo_delivery_latency_seconds_sum{{pipeline=\"{p}\"}} {}\nsnodo_delivery_latency_seconds_count{{pipeline=\"{p}\"}} {}",
            s.sum, s.count
        );
    }
    family(
        &mut out,
        "snodo_delivery_attempts_total",
        "counter",
        "Delivery attempts by pipeline and outcome (delivered, retry, dead), this process's.",
        stats.iter().flat_map(|(p, s)| {
            s.attempts
                .iter()
                .map(move |(o, n)| (format!("pipeline=\"{p}\",outcome=\"{o}\""), *n as i64))
        }),
    );
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
        "snodo_receipts_secondary_total",
        "counter",
        "Receipts stored as a secondary beneficiary of another entity's notice (counted in snodo_receipts_stored_total too), by entity.",
        m.secondary
            .iter()
            .map(|(e, n)| (format!("entity=\"{e}\""), *n)),
    );
    family(
        &mut out,
        "snodo_receipts_held",
        "gauge",
        "Flagged receipts whose deliveries wait for an operator's release or dismissal, by entity.",
        m.held.iter().map(|(e, n)| (format!("entity=\"{e}\""), *n)),
    );
    family(
        &mut out,
        "snodo_deliveries",
        "gauge",
        "Receipt deliveries, by pipeline and status (pending, in_flight, delivered, dead).",
        m.deliveries
            .iter()
            .map(|(p, s, n)| (format!("pipeline=\"{p}\",status=\"{s}\""), *n)),
    );
    family(
        &mut out,
        "snodo_deliveries_retried",
        "gauge",
        "Receipt deliveries that needed more than one attempt, by pipeline.",
        m.retried
            .iter()
            .map(|(p, n)| (format!("pipeline=\"{p}\""), *n)),
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
    family(
        &mut out,
        "snodo_reports_total",
        "counter",
        "Settlement flows (FdR) pulled, by entity and outcome (stored, failed).",
        m.reports.iter().flat_map(|(e, ok, failed, _)| {
            [
                (format!("entity=\"{e}\",outcome=\"stored\""), *ok),
                (format!("entity=\"{e}\",outcome=\"failed\""), *failed),
            ]
        }),
    );
    family(
        &mut out,
        "snodo_report_anomalies_total",
        "counter",
        "Anomalies found in settlement flows (payments without receipt, amounts that differ, ...), by entity.",
        m.reports
            .iter()
            .map(|(e, _, _, n)| (format!("entity=\"{e}\""), *n)),
    );
    family(
        &mut out,
        "snodo_reconciliation_items",
        "gauge",
        "Payments and treasury movements labelled with each reconciliation class, by entity.",
        m.reconciliation
            .iter()
            .map(|(e, c, n)| (format!("entity=\"{e}\",class=\"{c}\""), *n)),
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
            secondary: vec![("c_d530".into(), 2)],
            deliveries: vec![("erp".into(), "dead".into(), 2)],
            retried: vec![("erp".into(), 3)],
            import_rows: vec![("c_g224".into(), 10, 2)],
            held: vec![("c_g224".into(), 1)],
            reports: vec![("c_g224".into(), 3, 1, 2)],
            reconciliation: vec![("c_g224".into(), "RT_IUF".into(), 7)],
        };
        let stats = DeliveryStats::default();
        stats.delivered("erp", Duration::from_millis(30));
        stats.delivered("erp", Duration::from_millis(700));
        stats.delivered("erp", Duration::from_secs(100_000));
        stats.attempt("erp", "retry");
        let api = ApiStats::default();
        api.request("c_g224", "positions", "POST", 201);
        api.request("c_g224", "positions", "POST", 201);
        api.verification("r_veneto", "failed");
        let text = render(&answers, &stats, &api, Some(&store));
        for line in [
            "# TYPE snodo_soap_answers_total counter",
            "snodo_soap_answers_total{operation=\"paSendRTV2\",fault=\"\"} 3",
            "snodo_soap_answers_total{operation=\"paSendRTV2\",fault=\"PAA_RECEIPT_DUPLICATA\"} 1",
            "snodo_receipts_flagged_total{entity=\"c_g224\"} 1",
            "snodo_receipts_secondary_total{entity=\"c_d530\"} 2",
            "# TYPE snodo_receipts_held gauge",
            "snodo_receipts_held{entity=\"c_g224\"} 1",
            "snodo_deliveries{pipeline=\"erp\",status=\"dead\"} 2",
            "snodo_import_rows_total{entity=\"c_g224\",outcome=\"rejected\"} 2",
            "snodo_reports_total{entity=\"c_g224\",outcome=\"failed\"} 1",
            "snodo_report_anomalies_total{entity=\"c_g224\"} 2",
            "snodo_reconciliation_items{entity=\"c_g224\",class=\"RT_IUF\"} 7",
            "snodo_deliveries_retried{pipeline=\"erp\"} 3",
            "# TYPE snodo_delivery_latency_seconds histogram",
            "snodo_delivery_latency_seconds_bucket{pipeline=\"erp\",le=\"0.025\"} 0",
            "snodo_delivery_latency_seconds_bucket{pipeline=\"erp\",le=\"0.05\"} 1",
            "snodo_delivery_latency_seconds_bucket{pipeline=\"erp\",le=\"1\"} 2",
            "snodo_delivery_latency_seconds_bucket{pipeline=\"erp\",le=\"86400\"} 2",
            "snodo_delivery_latency_seconds_bucket{pipeline=\"erp\",le=\"+Inf\"} 3",
            "snodo_delivery_latency_seconds_count{pipeline=\"erp\"} 3",
            "snodo_delivery_attempts_total{pipeline=\"erp\",outcome=\"retry\"} 1",
            "snodo_api_requests_total{entity=\"c_g224\",resource=\"positions\",method=\"POST\",status=\"201\"} 2",
            "snodo_external_verifications_total{entity=\"r_veneto\",outcome=\"failed\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in {text}"
            );
        }
        assert!(!render(&answers, &stats, &api, None).contains("snodo_deliveries"));
    }
}
