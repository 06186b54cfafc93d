//! The rules that tie a settlement flow's rows to the hub's receipts, and what does not fit.
//!
//! A row is the payment of one transfer: it is linked by (entity, IUV, IUR = the receipt's
//! `receiptId`, transfer index). Whatever does not fit becomes an [`Anomaly`], never a silent
//! drop. The caller looks rows up (the store, a test's table): [`Linker`] takes rows one at a
//! time so a 100 000-row flow need not be held, and [`link_flow`] does a whole slice.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{PayStatus, SettlementFlow, SettlementPayment, TransferIndex};
use crate::amount::Amount;

/// What identifies a payment row within an entity: (IUV, IUR, transfer index). The entity is
/// the flow's receiver, the same for every row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentKey {
    pub iuv: String,
    pub iur: String,
    pub transfer_index: TransferIndex,
}

impl PaymentKey {
    pub fn of(p: &SettlementPayment) -> PaymentKey {
        PaymentKey {
            iuv: p.iuv.clone(),
            iur: p.iur.clone(),
            transfer_index: p.index_or_first(),
        }
    }
}

impl fmt::Display for PaymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IUV {}, IUR {}, transfer {}",
            self.iuv, self.iur, self.transfer_index
        )
    }
}

/// A receipt's transfer, as the hub holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptTransfer {
    pub receipt_id: String,
    pub transfer_index: TransferIndex,
    pub amount: Amount,
}

/// What the hub knows of one row's key, for the flow's entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// The hub never issued this IUV for the entity.
    IuvNotIssued,
    /// The IUV is the hub's, but no receipt transfer has this IUR and index.
    NoReceipt,
    Transfer(ReceiptTransfer),
}

/// How much an anomaly matters: `Info` rows are expected (a payment without a payment request
/// has no receipt by design) and are reported for completeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Info,
    Anomaly,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Anomaly => "anomaly",
        }
    }
}

/// What does not fit in a flow. `row` counts payment rows from 1, in flow order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Esito 0, 3 or 4 with an issued IUV but no receipt transfer.
    MissingReceipt {
        row: u64,
        key: PaymentKey,
        status: PayStatus,
    },
    /// Esito 8 or 9 (no payment request) without a receipt: expected.
    NoReceiptExpected {
        row: u64,
        key: PaymentKey,
        status: PayStatus,
    },
    AmountMismatch {
        row: u64,
        key: PaymentKey,
        flow: Amount,
        receipt_id: String,
        receipt: Amount,
    },
    Revoked {
        row: u64,
        key: PaymentKey,
        amount: Amount,
    },
    IuvNotIssued {
        row: u64,
        key: PaymentKey,
    },
    DuplicateInFlow {
        row: u64,
        key: PaymentKey,
        first_row: u64,
    },
    /// The same payment is already linked to another flow.
    AlreadyReported {
        row: u64,
        key: PaymentKey,
    },
    CountMismatch {
        declared: u64,
        computed: u64,
    },
    TotalMismatch {
        declared: Amount,
        computed: Amount,
    },
}

impl Anomaly {
    /// A stable code for machines (files, API, metrics).
    pub fn code(&self) -> &'static str {
        match self {
            Anomaly::MissingReceipt { .. } => "NO_RECEIPT",
            Anomaly::NoReceiptExpected { .. } => "NO_RECEIPT_EXPECTED",
            Anomaly::AmountMismatch { .. } => "AMOUNT_MISMATCH",
            Anomaly::Revoked { .. } => "REVOKED",
            Anomaly::IuvNotIssued { .. } => "IUV_NOT_ISSUED",
            Anomaly::DuplicateInFlow { .. } => "DUPLICATE_IN_FLOW",
            Anomaly::AlreadyReported { .. } => "ALREADY_REPORTED",
            Anomaly::CountMismatch { .. } => "TOTAL_COUNT_MISMATCH",
            Anomaly::TotalMismatch { .. } => "TOTAL_AMOUNT_MISMATCH",
        }
    }

    pub const CODES: [&'static str; 9] = [
        "NO_RECEIPT",
        "NO_RECEIPT_EXPECTED",
        "AMOUNT_MISMATCH",
        "REVOKED",
        "IUV_NOT_ISSUED",
        "DUPLICATE_IN_FLOW",
        "ALREADY_REPORTED",
        "TOTAL_COUNT_MISMATCH",
        "TOTAL_AMOUNT_MISMATCH",
    ];

    pub fn severity(&self) -> Severity {
        match self {
            Anomaly::NoReceiptExpected { .. } => Severity::Info,
            _ => Severity::Anomaly,
        }
    }

    /// The payment row it is about; `None` for the flow's totals.
    pub fn row(&self) -> Option<u64> {
        match self {
            Anomaly::MissingReceipt { row, .. }
            | Anomaly::NoReceiptExpected { row, .. }
            | Anomaly::AmountMismatch { row, .. }
            | Anomaly::Revoked { row, .. }
            | Anomaly::IuvNotIssued { row, .. }
            | Anomaly::DuplicateInFlow { row, .. }
            | Anomaly::AlreadyReported { row, .. } => Some(*row),
            Anomaly::CountMismatch { .. } | Anomaly::TotalMismatch { .. } => None,
        }
    }
}

/// The message: what happened, naming the row and its key.
impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::MissingReceipt { row, key, status } => write!(
                f,
                "row {row} ({key}): esito {} but the hub holds no receipt for it",
                status.esito()
            ),
            Anomaly::NoReceiptExpected { row, key, status } => write!(
                f,
                "row {row} ({key}): esito {} (paid without a payment request), no receipt as expected",
                status.esito()
            ),
            Anomaly::AmountMismatch {
                row,
                key,
                flow,
                receipt_id,
                receipt,
            } => write!(
                f,
                "row {row} ({key}): {flow} in the flow, {receipt} in receipt {receipt_id}'s transfer"
            ),
            Anomaly::Revoked { row, key, amount } => {
                write!(f, "row {row} ({key}): payment of {amount} revoked (esito 3)")
            }
            Anomaly::IuvNotIssued { row, key } => {
                write!(f, "row {row} ({key}): the hub never issued this IUV for the entity")
            }
            Anomaly::DuplicateInFlow {
                row,
                key,
                first_row,
            } => write!(f, "row {row} ({key}): the same payment as row {first_row}"),
            Anomaly::AlreadyReported { row, key } => write!(
                f,
                "row {row} ({key}): the payment is already linked to another flow"
            ),
            Anomaly::CountMismatch { declared, computed } => write!(
                f,
                "the flow declares {declared} payments (numeroTotalePagamenti) and holds {computed}"
            ),
            Anomaly::TotalMismatch { declared, computed } => write!(
                f,
                "the flow declares a total of {declared} (importoTotalePagamenti) and its payments add up to {computed}"
            ),
        }
    }
}

/// A row's link: the receipt transfer it settles, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLink {
    pub row: u64,
    pub linked: Option<ReceiptTransfer>,
}

/// What the rows add up to, and every anomaly in flow order (totals last).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkSummary {
    pub computed_count: u64,
    pub computed_amount: Amount,
    pub linked: u64,
    pub anomalies: Vec<Anomaly>,
}

/// Links a flow's rows one at a time. `already_linked` holds the keys the entity's other
/// flows link (leave out earlier revisions of this same flow: a revision supersedes them).
pub struct Linker<'a> {
    already_linked: &'a HashSet<PaymentKey>,
    seen: HashMap<PaymentKey, u64>,
    summary: LinkSummary,
}

impl<'a> Linker<'a> {
    pub fn new(already_linked: &'a HashSet<PaymentKey>) -> Linker<'a> {
        Linker {
            already_linked,
            seen: HashMap::new(),
            summary: LinkSummary::default(),
        }
    }

    /// Takes the next row; `lookup` is asked what the hub knows of its key, unless the row
    /// repeats one already taken.
    pub fn row(
        &mut self,
        p: &SettlementPayment,
        lookup: impl FnOnce(&PaymentKey) -> Known,
    ) -> RowLink {
        let s = &mut self.summary;
        s.computed_count += 1;
        s.computed_amount =
            Amount::from_cents(s.computed_amount.cents().saturating_add(p.amount.cents()));
        let row = s.computed_count;
        let key = PaymentKey::of(p);
        let none = RowLink { row, linked: None };

        // A repeated row is reported once, against the first; it links nothing.
        if let Some(&first_row) = self.seen.get(&key) {
            s.anomalies.push(Anomaly::DuplicateInFlow {
                row,
                key,
                first_row,
            });
            return none;
        }
        self.seen.insert(key.clone(), row);
        if self.already_linked.contains(&key) {
            s.anomalies.push(Anomaly::AlreadyReported { row, key });
            return none;
        }
        let known = lookup(&key);
        let revoked = p.status == PayStatus::Revoked;
        if revoked {
            s.anomalies.push(Anomaly::Revoked {
                row,
                key: key.clone(),
                amount: p.amount,
            });
        }
        match known {
            Known::IuvNotIssued => {
                s.anomalies.push(Anomaly::IuvNotIssued { row, key });
                none
            }
            // A revoked row is reported as revoked; a missing receipt adds nothing to that.
            Known::NoReceipt if revoked => none,
            Known::NoReceipt => {
                s.anomalies.push(if p.status.expects_receipt() {
                    Anomaly::MissingReceipt {
                        row,
                        key,
                        status: p.status,
                    }
                } else {
                    Anomaly::NoReceiptExpected {
                        row,
                        key,
                        status: p.status,
                    }
                });
                none
            }
            Known::Transfer(t) => {
                // A revoked amount may be negative by the node's rules: no comparison.
                if !revoked && t.amount != p.amount {
                    s.anomalies.push(Anomaly::AmountMismatch {
                        row,
                        key,
                        flow: p.amount,
                        receipt_id: t.receipt_id.clone(),
                        receipt: t.amount,
                    });
                }
                s.linked += 1;
                RowLink {
                    row,
                    linked: Some(t),
                }
            }
        }
    }

    /// Checks the declared totals against the rows taken.
    pub fn finish(mut self, flow: &SettlementFlow) -> LinkSummary {
        let s = &mut self.summary;
        if flow.declared_count != s.computed_count {
            s.anomalies.push(Anomaly::CountMismatch {
                declared: flow.declared_count,
                computed: s.computed_count,
            });
        }
        if flow.declared_amount != s.computed_amount {
            s.anomalies.push(Anomaly::TotalMismatch {
                declared: flow.declared_amount,
                computed: s.computed_amount,
            });
        }
        self.summary
    }
}

/// A whole flow: one [`RowLink`] per row, in order, and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReport {
    pub links: Vec<RowLink>,
    pub summary: LinkSummary,
}

pub fn link_flow(
    flow: &SettlementFlow,
    payments: &[SettlementPayment],
    mut lookup: impl FnMut(&PaymentKey) -> Known,
    already_linked: &HashSet<PaymentKey>,
) -> LinkReport {
    let mut linker = Linker::new(already_linked);
    let links = payments
        .iter()
        .map(|p| linker.row(p, &mut lookup))
        .collect();
    LinkReport {
        links,
        summary: linker.finish(flow),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;
    use crate::settlement::{FlowReceiver, FlowSender, Iuf, SenderKind};

    pub(crate) fn flow(payments: Vec<&SettlementPayment>) -> SettlementFlow {
        let total = payments.iter().map(|p| p.amount.cents()).sum();
        SettlementFlow {
            iuf: Iuf::parse("2026-03-01PSPTEST1-0001").unwrap(),
            psp_id: "PSPTEST1".into(),
            revision: 1,
            flow_time: Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap(),
            regulation_id: "SCT-0001".into(),
            regulation_date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            sender: FlowSender {
                kind: SenderKind::Bic,
                id: "PSPTITMM".into(),
                name: Some("PSP Test".into()),
                broker_id: None,
                channel_id: None,
            },
            bic_code_pouring_bank: None,
            receiver: FlowReceiver {
                id: "80000000005".into(),
                organization_id: "80000000005".into(),
                name: Some("Comune di Prova".into()),
            },
            declared_count: payments.len() as u64,
            declared_amount: Amount::from_cents(total),
            published: None,
        }
    }

    fn pay(iuv: &str, index: u8, cents: i64, status: PayStatus) -> SettlementPayment {
        SettlementPayment {
            iuv: iuv.into(),
            iur: format!("R{iuv}"),
            transfer_index: Some(TransferIndex::new(i64::from(index)).unwrap()),
            amount: Amount::from_cents(cents),
            status,
            date: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
        }
    }

    fn transfer(p: &SettlementPayment, cents: i64) -> Known {
        Known::Transfer(ReceiptTransfer {
            receipt_id: p.iur.clone(),
            transfer_index: p.index_or_first(),
            amount: Amount::from_cents(cents),
        })
    }

    /// Links `rows`, each with what the hub knows of it.
    fn run(rows: &[(SettlementPayment, Known)], flow: &SettlementFlow) -> LinkReport {
        run_with(rows, flow, &HashSet::new())
    }

    fn run_with(
        rows: &[(SettlementPayment, Known)],
        flow: &SettlementFlow,
        already: &HashSet<PaymentKey>,
    ) -> LinkReport {
        let table: HashMap<PaymentKey, Known> = rows
            .iter()
            .map(|(p, k)| (PaymentKey::of(p), k.clone()))
            .collect();
        let payments: Vec<SettlementPayment> = rows.iter().map(|(p, _)| p.clone()).collect();
        link_flow(
            flow,
            &payments,
            |k| table.get(k).cloned().unwrap_or(Known::IuvNotIssued),
            already,
        )
    }

    fn codes(r: &LinkReport) -> Vec<&'static str> {
        r.summary.anomalies.iter().map(Anomaly::code).collect()
    }

    #[test]
    fn a_clean_flow_links_every_row_with_no_anomaly() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let b = pay("000000000000102", 2, 250, PayStatus::StandIn);
        let f = flow(vec![&a, &b]);
        let r = run(
            &[
                (a.clone(), transfer(&a, 1000)),
                (b.clone(), transfer(&b, 250)),
            ],
            &f,
        );
        assert_eq!(codes(&r), Vec::<&str>::new());
        assert_eq!(r.summary.linked, 2);
        assert_eq!(r.summary.computed_count, 2);
        assert_eq!(r.summary.computed_amount, Amount::from_cents(1250));
        assert_eq!(r.links[1].row, 2);
        assert_eq!(
            r.links[1].linked.as_ref().map(|t| t.receipt_id.as_str()),
            Some("R000000000000102")
        );
    }

    #[test]
    fn executed_without_receipt_is_an_anomaly_but_8_and_9_are_informational() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let b = pay("000000000000102", 1, 500, PayStatus::NoRpt);
        let c = pay("000000000000103", 1, 500, PayStatus::StandInNoRpt);
        let d = pay("000000000000104", 1, 500, PayStatus::StandIn);
        let f = flow(vec![&a, &b, &c, &d]);
        let rows = [
            (a, Known::NoReceipt),
            (b, Known::NoReceipt),
            (c, Known::NoReceipt),
            (d, Known::NoReceipt),
        ];
        let r = run(&rows, &f);
        assert_eq!(
            codes(&r),
            [
                "NO_RECEIPT",
                "NO_RECEIPT_EXPECTED",
                "NO_RECEIPT_EXPECTED",
                "NO_RECEIPT"
            ]
        );
        let sev: Vec<_> = r.summary.anomalies.iter().map(Anomaly::severity).collect();
        assert_eq!(
            sev,
            [
                Severity::Anomaly,
                Severity::Info,
                Severity::Info,
                Severity::Anomaly
            ]
        );
        assert_eq!(r.summary.linked, 0);
        let msg = r.summary.anomalies[0].to_string();
        assert!(
            msg.starts_with("row 1 (IUV 000000000000101, IUR R000000000000101, transfer 1)"),
            "{msg}"
        );
        assert_eq!(r.summary.anomalies[3].row(), Some(4));
    }

    #[test]
    fn a_different_amount_links_and_is_reported() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let f = flow(vec![&a]);
        let r = run(&[(a.clone(), transfer(&a, 1200))], &f);
        assert_eq!(codes(&r), ["AMOUNT_MISMATCH"]);
        assert_eq!(r.summary.linked, 1);
        let msg = r.summary.anomalies[0].to_string();
        assert!(msg.contains("10.00 in the flow, 12.00 in receipt"), "{msg}");
    }

    #[test]
    fn a_revoked_payment_is_reported_and_never_compared() {
        let a = pay("000000000000101", 1, -1000, PayStatus::Revoked);
        let b = pay("000000000000102", 1, 700, PayStatus::Revoked);
        let mut f = flow(vec![&a, &b]);
        f.declared_amount = Amount::from_cents(-300);
        let r = run(
            &[(a.clone(), transfer(&a, 1000)), (b, Known::NoReceipt)],
            &f,
        );
        assert_eq!(codes(&r), ["REVOKED", "REVOKED"]);
        assert_eq!(
            r.links[0].linked.as_ref().map(|t| t.amount.cents()),
            Some(1000)
        );
        assert_eq!(r.links[1].linked, None);
    }

    #[test]
    fn declared_totals_that_do_not_add_up() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let mut f = flow(vec![&a]);
        f.declared_count = 2;
        f.declared_amount = Amount::from_cents(1001);
        let r = run(&[(a.clone(), transfer(&a, 1000))], &f);
        assert_eq!(codes(&r), ["TOTAL_COUNT_MISMATCH", "TOTAL_AMOUNT_MISMATCH"]);
        assert_eq!(r.summary.anomalies[0].row(), None);
        assert_eq!(
            r.summary.anomalies[1].to_string(),
            "the flow declares a total of 10.01 (importoTotalePagamenti) and its payments add up to 10.00"
        );
    }

    #[test]
    fn the_same_payment_twice_links_once() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let other_index = pay("000000000000101", 2, 1000, PayStatus::Executed);
        let f = flow(vec![&a, &a, &other_index]);
        let mut lookups = 0;
        let payments = vec![a.clone(), a.clone(), other_index.clone()];
        let r = link_flow(
            &f,
            &payments,
            |k| {
                lookups += 1;
                Known::Transfer(ReceiptTransfer {
                    receipt_id: k.iur.clone(),
                    transfer_index: k.transfer_index,
                    amount: Amount::from_cents(1000),
                })
            },
            &HashSet::new(),
        );
        assert_eq!(codes(&r), ["DUPLICATE_IN_FLOW"]);
        assert_eq!(lookups, 2, "a repeated row is not looked up");
        assert_eq!(r.summary.linked, 2);
        assert_eq!(r.links[1].linked, None);
        assert!(r.summary.anomalies[0]
            .to_string()
            .ends_with("the same payment as row 1"));
    }

    #[test]
    fn a_payment_already_linked_to_another_flow() {
        let a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        let b = pay("000000000000102", 1, 1000, PayStatus::Executed);
        let f = flow(vec![&a, &b]);
        let already: HashSet<_> = [PaymentKey::of(&b)].into();
        let r = run_with(
            &[
                (a.clone(), transfer(&a, 1000)),
                (b.clone(), transfer(&b, 1000)),
            ],
            &f,
            &already,
        );
        assert_eq!(codes(&r), ["ALREADY_REPORTED"]);
        assert_eq!(r.summary.anomalies[0].row(), Some(2));
        assert_eq!(r.summary.linked, 1);
    }

    #[test]
    fn an_iuv_the_hub_never_issued() {
        let a = pay("ABCDEFG1", 1, 1000, PayStatus::NoRpt);
        let f = flow(vec![&a]);
        let r = run(&[(a, Known::IuvNotIssued)], &f);
        assert_eq!(codes(&r), ["IUV_NOT_ISSUED"]);
        assert!(r.summary.anomalies[0].to_string().contains("never issued"));
    }

    #[test]
    fn a_missing_transfer_index_is_transfer_one() {
        let mut a = pay("000000000000101", 1, 1000, PayStatus::Executed);
        a.transfer_index = None;
        assert_eq!(PaymentKey::of(&a).transfer_index, TransferIndex::FIRST);
    }

    #[test]
    fn codes_are_listed_once_each() {
        let set: HashSet<_> = Anomaly::CODES.into_iter().collect();
        assert_eq!(set.len(), Anomaly::CODES.len());
    }
}
