//! Counting calls while the run goes (one [`Stats`] per worker, merged at the end) and the
//! [`Report`] printed after it.

use crate::FaultKind;
use snodo_adapters::pagopa::Operation;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

fn op_index(op: Operation) -> usize {
    match op {
        Operation::VerifyPaymentNotice => 0,
        Operation::GetPayment => 1,
        Operation::GetPaymentV2 => 2,
        Operation::SendRt => 3,
        Operation::SendRtV2 => 4,
        Operation::DemandPaymentNotice => 5,
    }
}

/// The calls of one operation, as one worker saw them.
#[derive(Debug, Default)]
pub(crate) struct OpStats {
    calls: u64,
    ok: u64,
    faults: BTreeMap<String, u64>,
    errors: BTreeMap<&'static str, u64>,
    /// Microseconds of every answered call.
    latencies_us: Vec<u32>,
    /// Calls that were a resend of one without an answer (counted in `calls` too).
    resent: u64,
}

impl OpStats {
    pub fn answered(&mut self, elapsed: Duration) {
        self.calls += 1;
        self.latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn ok(&mut self) {
        self.ok += 1;
    }

    pub fn fault(&mut self, code: &str) {
        match self.faults.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.faults.insert(code.to_string(), 1);
            }
        }
    }

    /// A call that got no usable answer (counted as a call, without latency).
    pub fn error(&mut self, kind: &'static str) {
        self.calls += 1;
        *self.errors.entry(kind).or_default() += 1;
    }

    /// An answered call (already counted) whose answer was unusable.
    pub fn error_answered(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// The next call is a resend of one that got no answer.
    pub fn resent(&mut self) {
        self.resent += 1;
    }

    /// An OK answer (already counted) that lacked what an OK must carry.
    pub fn ok_without_data(&mut self) {
        self.ok = self.ok.saturating_sub(1);
        self.error_answered("no_payment_data");
    }

    fn merge(&mut self, other: OpStats) {
        self.calls += other.calls;
        self.ok += other.ok;
        for (k, v) in other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
        self.resent += other.resent;
    }
}

/// Everything one worker counted.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    ops: [OpStats; 6],
    pub payments: u64,
    pub completed: u64,
    pub faulted: u64,
    pub errored: u64,
    pub injected: u64,
    pub injected_seen: u64,
    /// The first transport error, to say why a run went wrong.
    pub first_error: Option<String>,
    /// Calls still without an answer when the time for resends was up.
    pub gave_up: u64,
    /// Resent receipts answered `PAA_RECEIPT_DUPLICATA`: an earlier attempt was stored.
    pub stored_before_resend: u64,
}

impl Stats {
    pub fn op(&mut self, op: Operation) -> &mut OpStats {
        &mut self.ops[op_index(op)]
    }

    pub fn merge(&mut self, other: Stats) {
        for (mine, theirs) in self.ops.iter_mut().zip(other.ops) {
            mine.merge(theirs);
        }
        self.payments += other.payments;
        self.completed += other.completed;
        self.faulted += other.faulted;
        self.errored += other.errored;
        self.injected += other.injected;
        self.injected_seen += other.injected_seen;
        self.gave_up += other.gave_up;
        self.stored_before_resend += other.stored_before_resend;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Latency percentiles of the answered calls of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Nearest-rank percentiles; `None` without samples.
    fn of(mut samples_us: Vec<u32>) -> Option<Latency> {
        if samples_us.is_empty() {
            return None;
        }
        samples_us.sort_unstable();
        let n = samples_us.len();
        let at = |p: usize| {
            let rank = (p * n).div_ceil(100).clamp(1, n);
            Duration::from_micros(u64::from(samples_us[rank - 1]))
        };
        Some(Latency {
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max: Duration::from_micros(u64::from(samples_us[n - 1])),
        })
    }
}

/// The calls of one operation over the whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpReport {
    pub operation: Operation,
    /// Every call sent, whatever came of it.
    pub calls: u64,
    /// Answered with outcome OK.
    pub ok: u64,
    /// Answered KO, by `faultCode` (a SOAP Fault counts as `SOAP:<faultcode>`, or as its
    /// `PAA_*` fault string when it carries one).
    pub faults: BTreeMap<String, u64>,
    /// No usable answer, by kind: `connect`, `timeout`, `body`, `request`, `http_status`,
    /// `invalid_answer`, `wrong_operation`, `no_payment_data`.
    pub errors: BTreeMap<String, u64>,
    /// Over the answered calls (OK or KO).
    pub latency: Option<Latency>,
    /// Calls that resent a call without an answer (with a retry window); included in `calls`.
    pub resent: u64,
}

impl OpReport {
    /// Calls answered KO.
    pub fn ko(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Calls without a usable answer.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Calls answered KO with this fault code.
    pub fn fault(&self, code: &str) -> u64 {
        self.faults.get(code).copied().unwrap_or(0)
    }
}

/// What a run did, printed by `snodo sim`.
#[derive(Debug, Clone)]
pub struct Report {
    pub(crate) endpoint: String,
    pub(crate) concurrency: usize,
    pub(crate) v1: bool,
    pub(crate) verify_only: bool,
    pub(crate) receipts_only: bool,
    pub(crate) fault: Option<FaultKind>,
    pub(crate) ops: Vec<OpReport>,
    pub(crate) payments: u64,
    pub(crate) completed: u64,
    pub(crate) faulted: u64,
    pub(crate) errored: u64,
    pub(crate) injected: u64,
    pub(crate) injected_seen: u64,
    pub(crate) wall: Duration,
    pub(crate) first_error: Option<String>,
    pub(crate) retry_for: Option<Duration>,
    pub(crate) gave_up: u64,
    pub(crate) stored_before_resend: u64,
}

pub(crate) struct RunShape {
    pub endpoint: String,
    pub concurrency: usize,
    pub v1: bool,
    pub verify_only: bool,
    pub receipts_only: bool,
    pub fault: Option<FaultKind>,
    pub retry_for: Option<Duration>,
}

impl Report {
    pub(crate) fn new(shape: RunShape, mut stats: Stats, wall: Duration) -> Report {
        let ops = crate::flow(shape.v1, shape.verify_only, shape.receipts_only)
            .iter()
            .map(|&op| {
                let s = std::mem::take(stats.op(op));
                OpReport {
                    operation: op,
                    calls: s.calls,
                    ok: s.ok,
                    faults: s.faults,
                    errors: s
                        .errors
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    latency: Latency::of(s.latencies_us),
                    resent: s.resent,
                }
            })
            .collect();
        Report {
            endpoint: shape.endpoint,
            concurrency: shape.concurrency,
            v1: shape.v1,
            verify_only: shape.verify_only,
            receipts_only: shape.receipts_only,
            fault: shape.fault,
            ops,
            payments: stats.payments,
            completed: stats.completed,
            faulted: stats.faulted,
            errored: stats.errored,
            injected: stats.injected,
            injected_seen: stats.injected_seen,
            wall,
            first_error: stats.first_error,
            retry_for: shape.retry_for,
            gave_up: stats.gave_up,
            stored_before_resend: stats.stored_before_resend,
        }
    }

    /// The operations of the run's flow, in call order.
    pub fn operations(&self) -> &[OpReport] {
        &self.ops
    }

    pub fn op(&self, op: Operation) -> Option<&OpReport> {
        self.ops.iter().find(|o| o.operation == op)
    }

    /// Calls of `op` answered OK.
    pub fn ok(&self, op: Operation) -> u64 {
        self.op(op).map_or(0, |o| o.ok)
    }

    /// Calls of `op` answered KO with `code`.
    pub fn faults(&self, op: Operation, code: &str) -> u64 {
        self.op(op).map_or(0, |o| o.fault(code))
    }

    /// Calls answered KO, all operations together.
    pub fn total_faults(&self) -> u64 {
        self.ops.iter().map(OpReport::ko).sum()
    }

    /// Calls without a usable answer, all operations together.
    pub fn total_errors(&self) -> u64 {
        self.ops.iter().map(OpReport::errors).sum()
    }

    /// Payments attempted.
    pub fn payments(&self) -> u64 {
        self.payments
    }

    /// Payments whose every step was answered OK (paid, or verified with `verify_only`).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Payments stopped by a KO answer.
    pub fn faulted(&self) -> u64 {
        self.faulted
    }

    /// Payments stopped by a call without a usable answer.
    pub fn errored(&self) -> u64 {
        self.errored
    }

    /// With a fault injection: how many calls carried it, and how many of them were answered
    /// with the fault the hub owes ([`FaultKind::expected_fault`]).
    pub fn injection(&self) -> Option<(FaultKind, u64, u64)> {
        self.fault.map(|f| (f, self.injected, self.injected_seen))
    }

    pub fn wall(&self) -> Duration {
        self.wall
    }

    pub fn payments_per_sec(&self) -> f64 {
        per_sec(self.payments, self.wall)
    }

    /// The first transport error met, if any.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Resends of calls without an answer, all operations together.
    pub fn resent(&self) -> u64 {
        self.ops.iter().map(|o| o.resent).sum()
    }

    /// Calls still without an answer when the time for resends ran out.
    pub fn gave_up(&self) -> u64 {
        self.gave_up
    }

    /// Resent receipts answered `PAA_RECEIPT_DUPLICATA`: stored by an attempt whose answer was
    /// lost, counted as completed payments.
    pub fn stored_before_resend(&self) -> u64 {
        self.stored_before_resend
    }
}

fn per_sec(n: u64, wall: Duration) -> f64 {
    let s = wall.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

struct Ms(Option<Duration>);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.3}", d.as_secs_f64() * 1000.0),
            None => f.write_str("-"),
        }
    }
}

/// One `key=value` line per fact, stable for scripts:
///
/// ```text
/// sim endpoint=http://127.0.0.1:8080/pagopa/paForNode payments=30 concurrency=8 flow=v2 fault=none
/// paVerifyPaymentNotice calls=30 ok=30 ko=0 err=0 p50_ms=0.412 p90_ms=0.801 p99_ms=1.203 max_ms=1.310
/// paGetPaymentV2 calls=30 ok=30 ko=0 err=0 p50_ms=...
/// paSendRTV2 calls=32 ok=30 ko=0 err=2 p50_ms=... max_ms=... retries=2
/// paSendRTV2 fault=PAA_RECEIPT_DUPLICATA count=30
/// paSendRTV2 error=connect count=2
/// injection fault=duplicate-receipt expected=PAA_RECEIPT_DUPLICATA at=paSendRTV2 injected=30 seen=30
/// retry for_s=60 resent=2 gave_up=0 stored_before_resend=0
/// total payments=30 completed=30 faulted=0 errors=0 wall_ms=153.210 payments_per_s=195.8 calls_per_s=587.4
/// ```
///
/// `retries=` ends every operation line (0 without a retry window); the `retry` line is there
/// only with one.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flow = match (self.verify_only, self.v1) {
            (true, _) => "verify-only",
            (false, true) if self.receipts_only => "v1-receipts-only",
            (false, false) if self.receipts_only => "v2-receipts-only",
            (false, true) => "v1",
            (false, false) => "v2",
        };
        writeln!(
            f,
            "sim endpoint={} payments={} concurrency={} flow={flow} fault={}",
            self.endpoint,
            self.payments,
            self.concurrency,
            self.fault.map_or("none", FaultKind::name),
        )?;
        for o in &self.ops {
            let l = o.latency;
            writeln!(
                f,
                "{} calls={} ok={} ko={} err={} p50_ms={} p90_ms={} p99_ms={} max_ms={} retries={}",
                o.operation.soap_action(),
                o.calls,
                o.ok,
                o.ko(),
                o.errors(),
                Ms(l.map(|l| l.p50)),
                Ms(l.map(|l| l.p90)),
                Ms(l.map(|l| l.p99)),
                Ms(l.map(|l| l.max)),
                o.resent,
            )?;
            for (code, n) in &o.faults {
                writeln!(f, "{} fault={code} count={n}", o.operation.soap_action())?;
            }
            for (kind, n) in &o.errors {
                writeln!(f, "{} error={kind} count={n}", o.operation.soap_action())?;
            }
        }
        if let Some(k) = self.fault {
            writeln!(
                f,
                "injection fault={} expected={} at={} injected={} seen={}",
                k.name(),
                k.expected_fault(),
                k.injected_at(self.v1).soap_action(),
                self.injected,
                self.injected_seen,
            )?;
        }
        if let Some(window) = self.retry_for {
            writeln!(
                f,
                "retry for_s={} resent={} gave_up={} stored_before_resend={}",
                window.as_secs_f64(),
                self.resent(),
                self.gave_up,
                self.stored_before_resend,
            )?;
        }
        let calls: u64 = self.ops.iter().map(|o| o.calls).sum();
        writeln!(
            f,
            "total payments={} completed={} faulted={} errors={} wall_ms={} payments_per_s={:.1} calls_per_s={:.1}",
            self.payments,
            self.completed,
            self.faulted,
            self.errored,
            Ms(Some(self.wall)),
            self.payments_per_sec(),
            per_sec(calls, self.wall),
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first_error {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).collect()).unwrap();
        assert_eq!(l.p50, Duration::from_micros(50));
        assert_eq!(l.p90, Duration::from_micros(90));
        assert_eq!(l.p99, Duration::from_micros(99));
        assert_eq!(l.max, Duration::from_micros(100));
        let one = Latency::of(vec![7]).unwrap();
        assert_eq!(
            (one.p50, one.p99, one.max),
            (
                Duration::from_micros(7),
                Duration::from_micros(7),
                Duration::from_micros(7)
            )
        );
        assert_eq!(Latency::of(Vec::new()), None);
    }

    #[test]
    fn worker_stats_merge() {
        let mut a = Stats::default();
        a.op(Operation::SendRtV2).answered(Duration::from_millis(1));
        a.op(Operation::SendRtV2).fault("PAA_RECEIPT_DUPLICATA");
        let mut b = Stats::default();
        b.op(Operation::SendRtV2).answered(Duration::from_millis(2));
        b.op(Operation::SendRtV2).fault("PAA_RECEIPT_DUPLICATA");
        b.op(Operation::SendRtV2).error("connect");
        b.first_error = Some("refused".into());
        a.merge(b);
        let shape = RunShape {
            endpoint: "http://x/pagopa/paForNode".into(),
            concurrency: 2,
            v1: false,
            verify_only: false,
            receipts_only: false,
            fault: None,
            retry_for: None,
        };
        let r = Report::new(shape, a, Duration::from_secs(1));
        let rt = r.op(Operation::SendRtV2).unwrap();
        assert_eq!((rt.calls, rt.ok, rt.ko(), rt.errors()), (3, 0, 2, 1));
        assert_eq!(r.faults(Operation::SendRtV2, "PAA_RECEIPT_DUPLICATA"), 2);
        assert_eq!(r.first_error(), Some("refused"));
        let text = r.to_string();
        assert!(
            text.contains("paSendRTV2 calls=3 ok=0 ko=2 err=1 p50_ms=1.000 p90_ms=2.000"),
            "{text}"
        );
        assert!(
            text.contains("paSendRTV2 fault=PAA_RECEIPT_DUPLICATA count=2\n"),
            "{text}"
        );
        assert!(
            text.contains("paSendRTV2 error=connect count=1\n"),
            "{text}"
        );
        assert!(
            text.contains("paVerifyPaymentNotice calls=0 ok=0 ko=0 err=0 p50_ms=- "),
            "{text}"
        );
        assert!(text.contains(" max_ms=2.000 retries=0\n"), "{text}");
        assert!(
            !text.contains("\nretry "),
            "no retry line without a window: {text}"
        );
    }
}
