//! Reconciliation classes: MyPivot's labels for what the entity expected (its own payment
//! notifications, by IUD), what citizens paid (receipts), what PSPs declared settled (FdR rows)
//! and what reached the treasury (movements), decided from the facts gathered for one payment
//! or one movement. No I/O: the store gathers the facts, this module holds the rules.
//!
//! The predicates are those of MyPivot's view (`v_mygov_import_export_rendicontazione_
//! tesoreria_completa`, patch 0007) and its DOPPI query, with two deliberate differences: the
//! treasury is matched to a flow within the same entity only (the facts are gathered per
//! entity), and the "missing" classes ([`Class::RtNoIuf`], [`Class::IufNoTes`]) are raised only
//! once their grace period has passed — before, the item is [`Class::Pending`]. A payment may
//! carry several classes at once, as in MyPivot.

use std::fmt;

use crate::amount::Amount;

/// A reconciliation class (MyPivot's `classificazione_completezza` code), plus `PENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Notified, paid, reported and credited.
    IudRtIufTes,
    /// Notified, paid and reported.
    IudRtIuf,
    /// Paid, reported and credited cumulatively (by the flow's SCT).
    RtIufTes,
    /// Paid and reported.
    RtIuf,
    /// Paid and credited one by one (an old per-payment SCT naming the IUV).
    RtTes,
    /// Paid but not (correctly) reported, past the grace period.
    RtNoIuf,
    /// Paid but not notified by the entity.
    RtNoIud,
    /// Notified but not paid (or paid another amount).
    IudNoRt,
    /// Reported but not paid.
    IuvNoRt,
    /// Reported but not credited, past the grace period.
    IufNoTes,
    /// Reported and credited with another amount.
    IufTesDivImp,
    /// Credited, with an IUF or IUV that nothing else names.
    TesNoIufOrIuv,
    /// Credited, with neither IUF nor IUV in its causale.
    TesNoMatch,
    /// The same payment reported both as executed (0) and as paid without a request (9).
    Doppi,
    /// Not classified yet: a report or a credit may still arrive within its grace period.
    Pending,
}

impl Class {
    pub const ALL: [Class; 15] = [
        Class::IudRtIufTes,
        Class::IudRtIuf,
        Class::RtIufTes,
        Class::RtIuf,
        Class::RtTes,
        Class::RtNoIuf,
        Class::RtNoIud,
        Class::IudNoRt,
        Class::IuvNoRt,
        Class::IufNoTes,
        Class::IufTesDivImp,
        Class::TesNoIufOrIuv,
        Class::TesNoMatch,
        Class::Doppi,
        Class::Pending,
    ];

    /// MyPivot's code (`PENDING` is the hub's own).
    pub fn code(self) -> &'static str {
        match self {
            Class::IudRtIufTes => "IUD_RT_IUF_TES",
            Class::IudRtIuf => "IUD_RT_IUF",
            Class::RtIufTes => "RT_IUF_TES",
            Class::RtIuf => "RT_IUF",
            Class::RtTes => "RT_TES",
            Class::RtNoIuf => "RT_NO_IUF",
            Class::RtNoIud => "RT_NO_IUD",
            Class::IudNoRt => "IUD_NO_RT",
            Class::IuvNoRt => "IUV_NO_RT",
            Class::IufNoTes => "IUF_NO_TES",
            Class::IufTesDivImp => "IUF_TES_DIV_IMP",
            Class::TesNoIufOrIuv => "TES_NO_IUF_OR_IUV",
            Class::TesNoMatch => "TES_NO_MATCH",
            Class::Doppi => "DOPPI",
            Class::Pending => "PENDING",
        }
    }

    pub fn from_code(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.code() == s)
    }

    /// Whether the class is an anomaly (MyPivot's group A) rather than a reconciliation (R).
    pub fn is_anomaly(self) -> bool {
        !matches!(
            self,
            Class::IudRtIufTes
                | Class::IudRtIuf
                | Class::RtIufTes
                | Class::RtIuf
                | Class::RtTes
                | Class::Pending
        )
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A settlement row of the payment (esito 3 rows are left out by the caller, as MyPivot does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// The row's amount (R.sing).
    pub amount: Amount,
    /// The flow's declared total (R.tot): what its SCT should credit.
    pub flow_total: Amount,
    /// A movement naming the flow's IUF (same entity), with its amount (T_iuf / B_iuf).
    pub credited: Option<Amount>,
}

/// What is known of one payment (one transfer of a notice, for one entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaymentFacts {
    /// The entity's own notification of the payment (I), when the entity sends them.
    pub notified: Option<Amount>,
    /// The receipt's transfer amount (E.sing) and the receipt's total (E.tot).
    pub paid: Option<(Amount, Amount)>,
    /// The current settlement flow's row for it (R).
    pub reported: Option<Reported>,
    /// A movement naming the payment's IUV (an old per-payment SCT), with its amount.
    pub credited_by_iuv: Option<Amount>,
    /// The same payment is reported both with esito 0 and with esito 9.
    pub reported_twice: bool,
    /// The entity sends its notifications: only then are IUD classes raised.
    pub entity_notifies: bool,
    /// The grace period for a report has passed (the payment is old enough).
    pub report_overdue: bool,
    /// The grace period for a credit has passed (the flow is old enough).
    pub credit_overdue: bool,
}

/// The classes of one payment, in [`Class`] order; `[Pending]` when none applies yet.
pub fn classify_payment(f: &PaymentFacts) -> Vec<Class> {
    let mut out = Vec::new();
    let sing = f.paid.map(|(s, _)| s);
    let tot = f.paid.map(|(_, t)| t);
    let notified_paid = f.notified.is_some() && f.notified == sing;
    let reported_as_paid = matches!((f.reported, sing), (Some(r), Some(s)) if r.amount == s);
    let credited_as_reported = f.reported.is_some_and(|r| r.credited == Some(r.flow_total));
    let credited_by_iuv_as_paid = f.credited_by_iuv.is_some() && f.credited_by_iuv == tot;

    if notified_paid && ((reported_as_paid && credited_as_reported) || credited_by_iuv_as_paid) {
        out.push(Class::IudRtIufTes);
    }
    if notified_paid && reported_as_paid {
        out.push(Class::IudRtIuf);
    }
    if reported_as_paid && credited_as_reported {
        out.push(Class::RtIufTes);
    }
    if reported_as_paid {
        out.push(Class::RtIuf);
    }
    if f.paid.is_some() && f.reported.is_none() && credited_by_iuv_as_paid {
        out.push(Class::RtTes);
    }
    let unreported = f.paid.is_some() && f.credited_by_iuv.is_none() && !reported_as_paid;
    if unreported && f.report_overdue {
        out.push(Class::RtNoIuf);
    }
    if f.entity_notifies && f.paid.is_some() && f.notified.is_none() {
        out.push(Class::RtNoIud);
    }
    if f.entity_notifies && f.notified.is_some() && !notified_paid {
        out.push(Class::IudNoRt);
    }
    if f.reported.is_some() && f.paid.is_none() {
        out.push(Class::IuvNoRt);
    }
    let uncredited = f
        .reported
        .is_some_and(|r| r.credited.is_none() && f.credited_by_iuv.is_none());
    if uncredited && f.credit_overdue {
        out.push(Class::IufNoTes);
    }
    if let Some(r) = f.reported {
        let amounts = [r.credited, f.credited_by_iuv];
        if amounts.into_iter().flatten().any(|a| a != r.flow_total) {
            out.push(Class::IufTesDivImp);
        }
    }
    if f.reported_twice {
        out.push(Class::Doppi);
    }
    if out.is_empty() && ((unreported && !f.report_overdue) || (uncredited && !f.credit_overdue)) {
        out.push(Class::Pending);
    }
    out
}

/// What is known of one treasury movement, within its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MovementFacts {
    /// Its causale names an IUF or an IUV.
    pub has_reference: bool,
    /// A settlement flow, a receipt or a notification of the entity matches that reference.
    pub matched: bool,
}

/// The classes of a movement on its own: none when it matches something (the payments it
/// credits carry the classes).
pub fn classify_movement(f: &MovementFacts) -> Vec<Class> {
    match (f.has_reference, f.matched) {
        (false, _) => vec![Class::TesNoMatch],
        (true, false) => vec![Class::TesNoIufOrIuv],
        (true, true) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Class::*;

    fn eur(cents: i64) -> Amount {
        Amount::from_cents(cents)
    }

    /// Paid 10.00 in a flow of 100.00, notified, reported; `credited` the flow's credit.
    fn facts(credited: Option<i64>) -> PaymentFacts {
        PaymentFacts {
            notified: Some(eur(1000)),
            paid: Some((eur(1000), eur(1000))),
            reported: Some(Reported {
                amount: eur(1000),
                flow_total: eur(10_000),
                credited: credited.map(eur),
            }),
            credited_by_iuv: None,
            reported_twice: false,
            entity_notifies: true,
            report_overdue: true,
            credit_overdue: true,
        }
    }

    #[test]
    fn each_class_as_mypivot_defines_it() {
        let all_good = facts(Some(10_000));
        let no_iud = PaymentFacts {
            notified: None,
            entity_notifies: false,
            ..all_good
        };
        let table: Vec<(&str, PaymentFacts, Vec<Class>)> = vec![
            (
                "notified, paid, reported, credited",
                all_good,
                vec![IudRtIufTes, IudRtIuf, RtIufTes, RtIuf],
            ),
            (
                "an entity that sends no notifications",
                no_iud,
                vec![RtIufTes, RtIuf],
            ),
            (
                "credited with another amount",
                facts(Some(9_999)),
                vec![IudRtIuf, RtIuf, IufTesDivImp],
            ),
            (
                "not credited, past the grace period",
                facts(None),
                vec![IudRtIuf, RtIuf, IufNoTes],
            ),
            (
                "not credited, within the grace period",
                PaymentFacts {
                    credit_overdue: false,
                    ..facts(None)
                },
                vec![IudRtIuf, RtIuf],
            ),
            (
                "paid, not reported, past the grace period",
                PaymentFacts {
                    reported: None,
                    ..no_iud
                },
                vec![RtNoIuf],
            ),
            (
                "paid, not reported yet",
                PaymentFacts {
                    reported: None,
                    report_overdue: false,
                    ..no_iud
                },
                vec![Pending],
            ),
            (
                "reported with another amount",
                PaymentFacts {
                    reported: Some(Reported {
                        amount: eur(999),
                        flow_total: eur(10_000),
                        credited: Some(eur(10_000)),
                    }),
                    ..no_iud
                },
                vec![RtNoIuf],
            ),
            (
                "paid and credited one by one (old SCT naming the IUV)",
                PaymentFacts {
                    reported: None,
                    credited_by_iuv: Some(eur(1000)),
                    ..all_good
                },
                vec![IudRtIufTes, RtTes],
            ),
            (
                "paid, not notified",
                PaymentFacts {
                    notified: None,
                    ..all_good
                },
                vec![RtIufTes, RtIuf, RtNoIud],
            ),
            (
                "notified, not paid",
                PaymentFacts {
                    paid: None,
                    reported: None,
                    ..all_good
                },
                vec![IudNoRt],
            ),
            (
                "notified at another amount",
                PaymentFacts {
                    notified: Some(eur(1200)),
                    ..all_good
                },
                vec![RtIufTes, RtIuf, IudNoRt],
            ),
            (
                "reported, not paid (no receipt)",
                PaymentFacts {
                    paid: None,
                    notified: None,
                    ..all_good
                },
                vec![IuvNoRt],
            ),
            (
                "reported as 0 and as 9",
                PaymentFacts {
                    reported_twice: true,
                    ..no_iud
                },
                vec![RtIufTes, RtIuf, Doppi],
            ),
        ];
        for (what, f, expected) in table {
            assert_eq!(classify_payment(&f), expected, "{what}");
        }
    }

    #[test]
    fn a_movement_alone_is_classed_only_when_nothing_matches_it() {
        let m = |has_reference, matched| {
            classify_movement(&MovementFacts {
                has_reference,
                matched,
            })
        };
        assert_eq!(m(false, false), [TesNoMatch]);
        assert_eq!(m(true, false), [TesNoIufOrIuv]);
        assert!(m(true, true).is_empty());
    }

    #[test]
    fn codes_round_trip_and_groups_are_mypivots() {
        for c in Class::ALL {
            assert_eq!(Class::from_code(c.code()), Some(c));
        }
        assert_eq!(Class::from_code("RT_X"), None);
        let anomalies: Vec<_> = Class::ALL.into_iter().filter(|c| c.is_anomaly()).collect();
        assert_eq!(
            anomalies,
            [
                RtNoIuf,
                RtNoIud,
                IudNoRt,
                IuvNoRt,
                IufNoTes,
                IufTesDivImp,
                TesNoIufOrIuv,
                TesNoMatch,
                Doppi
            ]
        );
    }
}
