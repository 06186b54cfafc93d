//! Paying a position at the node: whether a notice can be paid, what the node is told, and how
//! the amount splits into transfers (primary entity, and the secondary one of a 1_4 row).

use crate::amount::Amount;
use crate::dovuto::Dovuto;
use crate::ids::{EntityFiscalCode, Iban, Iuv};
use chrono::NaiveDate;
use serde::Serialize;

/// Lifecycle of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionStatus {
    Active,
    Annulled,
    Paid,
    Expired,
}

impl PositionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Annulled => "annulled",
            Self::Paid => "paid",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Annulled, Self::Paid, Self::Expired]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// The faults the EC side answers the node with (`PAA_*`, paForNode.wsdl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeFault {
    SintassiXsd,
    SintassiExtraxsd,
    IdDominioErrato,
    IdIntermediarioErrato,
    StazioneIntErrata,
    PagamentoSconosciuto,
    PagamentoScaduto,
    PagamentoAnnullato,
    PagamentoDuplicato,
    PagamentoInCorso,
    ReceiptDuplicata,
    Semantica,
    SystemError,
}

impl NodeFault {
    pub const fn code(self) -> &'static str {
        match self {
            Self::SintassiXsd => "PAA_SINTASSI_XSD",
            Self::SintassiExtraxsd => "PAA_SINTASSI_EXTRAXSD",
            Self::IdDominioErrato => "PAA_ID_DOMINIO_ERRATO",
            Self::IdIntermediarioErrato => "PAA_ID_INTERMEDIARIO_ERRATO",
            Self::StazioneIntErrata => "PAA_STAZIONE_INT_ERRATA",
            Self::PagamentoSconosciuto => "PAA_PAGAMENTO_SCONOSCIUTO",
            Self::PagamentoScaduto => "PAA_PAGAMENTO_SCADUTO",
            Self::PagamentoAnnullato => "PAA_PAGAMENTO_ANNULLATO",
            Self::PagamentoDuplicato => "PAA_PAGAMENTO_DUPLICATO",
            Self::PagamentoInCorso => "PAA_PAGAMENTO_IN_CORSO",
            Self::ReceiptDuplicata => "PAA_RECEIPT_DUPLICATA",
            Self::Semantica => "PAA_SEMANTICA",
            Self::SystemError => "PAA_SYSTEM_ERROR",
        }
    }

    /// The faultString the node shows to PSP operators.
    pub fn description(self) -> &'static str {
        match self {
            Self::SintassiXsd => "Errore di sintassi XSD",
            Self::SintassiExtraxsd => "Errore di sintassi extra XSD",
            Self::IdDominioErrato => "Identificativo dominio sconosciuto",
            Self::IdIntermediarioErrato => "Identificativo intermediario errato",
            Self::StazioneIntErrata => "Stazione intermediario errata",
            Self::PagamentoSconosciuto => {
                "Pagamento in attesa risulta sconosciuto all'Ente Creditore"
            }
            Self::PagamentoScaduto => "Pagamento in attesa risulta scaduto all'Ente Creditore",
            Self::PagamentoAnnullato => "Pagamento in attesa risulta annullato all'Ente Creditore",
            Self::PagamentoDuplicato => "Pagamento in attesa risulta concluso all'Ente Creditore",
            Self::PagamentoInCorso => "Pagamento in attesa risulta in corso all'Ente Creditore",
            Self::ReceiptDuplicata => "Ricevuta duplicata",
            Self::Semantica => "Errore semantico",
            Self::SystemError => "Errore generico",
        }
    }
}

/// What a debt type does with positions past their due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatePolicy {
    /// The node may still take a payment after the due date (else `PAA_PAGAMENTO_SCADUTO`
    /// from the day after it).
    pub late_payment_allowed: bool,
    /// Days after the due date the position stays open; past them it expires. `None`: it never
    /// expires.
    pub expire_after_days: Option<u32>,
}

impl LatePolicy {
    /// Payable after the due date, never expiring: what a debt type does unless told otherwise.
    pub const OPEN: Self = Self {
        late_payment_allowed: true,
        expire_after_days: None,
    };

    /// Whether a position due on `due` has expired on `today` (Europe/Rome): the grace days
    /// after the due date are over.
    pub fn expired(self, due: Option<NaiveDate>, today: NaiveDate) -> bool {
        match (due, self.expire_after_days) {
            (Some(due), Some(days)) => due
                .checked_add_days(chrono::Days::new(u64::from(days)))
                .is_some_and(|last| last < today),
            _ => false,
        }
    }

    /// Positions due before this day have expired on `today`; `None` when nothing expires.
    pub fn expired_before(self, today: NaiveDate) -> Option<NaiveDate> {
        let days = self.expire_after_days?;
        today.checked_sub_days(chrono::Days::new(u64::from(days)))
    }
}

/// Whether the node may take a payment for a position in this state on `today`.
pub fn payability(
    status: PositionStatus,
    due_date: Option<NaiveDate>,
    today: NaiveDate,
    late: LatePolicy,
) -> Result<(), NodeFault> {
    match status {
        PositionStatus::Annulled => Err(NodeFault::PagamentoAnnullato),
        PositionStatus::Paid => Err(NodeFault::PagamentoDuplicato),
        PositionStatus::Expired => Err(NodeFault::PagamentoScaduto),
        // Expired by date even before the sweep has marked it.
        PositionStatus::Active if late.expired(due_date, today) => Err(NodeFault::PagamentoScaduto),
        PositionStatus::Active => match due_date {
            Some(due) if due < today && !late.late_payment_allowed => {
                Err(NodeFault::PagamentoScaduto)
            }
            _ => Ok(()),
        },
    }
}

/// MyPay's remittance information: `/RFB/<IUV>/<amount>/TXT/<causale>`, at most 140 characters.
pub fn remittance_information(iuv: &Iuv, amount: Amount, causale: &str) -> String {
    let mut s = format!("/RFB/{}/{}/TXT/{}", iuv.as_str(), amount, causale);
    if let Some((cut, _)) = s.char_indices().nth(140) {
        s.truncate(cut);
    }
    s
}

/// One transfer of a payment, as paGetPayment lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: u8,
    pub amount: Amount,
    pub fiscal_code: EntityFiscalCode,
    pub iban: Iban,
    pub remittance_information: String,
    /// The taxonomy code (`transferCategory`), e.g. `9/0101100IM/`.
    pub category: String,
}

/// Splits a position's amount into its transfers: the primary one to the entity's account for
/// the debt type, then the secondary entity's share of a multi-beneficiary position. The amounts
/// always add up to the position's amount.
pub fn transfers(
    dovuto: &Dovuto,
    iuv: &Iuv,
    entity: &EntityFiscalCode,
    debt_type_iban: &Iban,
    debt_type_taxonomy: &str,
) -> Result<Vec<Transfer>, NodeFault> {
    let secondary_amount = dovuto.secondary.as_ref().map_or(0, |s| s.amount.cents());
    let primary_cents = dovuto.amount.cents() - secondary_amount;
    if primary_cents <= 0 {
        return Err(NodeFault::Semantica);
    }
    let primary = Amount::from_cents(primary_cents);
    // The row's own taxonomy code when it carries one, else the debt type's.
    let category =
        crate::taxonomy::TaxonomyCode::from_dati_specifici(&dovuto.dati_specifici_riscossione)
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| debt_type_taxonomy.to_string());
    let mut list = vec![Transfer {
        id: 1,
        amount: primary,
        fiscal_code: entity.clone(),
        iban: debt_type_iban.clone(),
        remittance_information: remittance_information(iuv, primary, &dovuto.causale),
        category,
    }];
    if let Some(sec) = &dovuto.secondary {
        let causale = sec.causale.as_deref().unwrap_or(&dovuto.causale);
        list.push(Transfer {
            id: 2,
            amount: sec.amount,
            fiscal_code: sec.fiscal_code.clone(),
            iban: sec.iban.clone(),
            remittance_information: remittance_information(iuv, sec.amount, causale),
            category: crate::taxonomy::TaxonomyCode::from_dati_specifici(
                &sec.dati_specifici_riscossione,
            )
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| sec.dati_specifici_riscossione.clone()),
        });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dovuto::{SecondaryTransfer, Subject};
    use crate::SegregationCode;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn payability_by_state_and_due_date() {
        use PositionStatus::*;
        let strict = LatePolicy {
            late_payment_allowed: false,
            expire_after_days: None,
        };
        let open = LatePolicy::OPEN;
        assert_eq!(payability(Active, Some(day(30)), day(26), strict), Ok(()));
        assert_eq!(payability(Active, Some(day(25)), day(26), open), Ok(()));
        assert_eq!(
            payability(Active, Some(day(25)), day(26), strict),
            Err(NodeFault::PagamentoScaduto)
        );
        assert_eq!(payability(Active, None, day(26), strict), Ok(()));
        assert_eq!(
            payability(Paid, None, day(26), open),
            Err(NodeFault::PagamentoDuplicato)
        );
        assert_eq!(
            payability(Annulled, None, day(26), open),
            Err(NodeFault::PagamentoAnnullato)
        );
        assert_eq!(
            payability(Expired, Some(day(30)), day(26), open),
            Err(NodeFault::PagamentoScaduto)
        );
        assert_eq!(
            NodeFault::PagamentoDuplicato.code(),
            "PAA_PAGAMENTO_DUPLICATO"
        );
    }

    #[test]
    fn grace_days_then_expired() {
        use PositionStatus::*;
        let grace = LatePolicy {
            late_payment_allowed: true,
            expire_after_days: Some(3),
        };
        // Due on the 20th, three days of grace: the 23rd is the last payable day.
        assert_eq!(payability(Active, Some(day(20)), day(23), grace), Ok(()));
        assert_eq!(
            payability(Active, Some(day(20)), day(24), grace),
            Err(NodeFault::PagamentoScaduto)
        );
        assert!(!grace.expired(Some(day(20)), day(23)));
        assert!(grace.expired(Some(day(20)), day(24)));
        assert!(!grace.expired(None, day(24)));
        assert_eq!(grace.expired_before(day(24)), Some(day(21)));
        assert_eq!(LatePolicy::OPEN.expired_before(day(24)), None);
        // No late payment but a grace: refused from the day after the due date, expired later.
        let strict = LatePolicy {
            late_payment_allowed: false,
            ..grace
        };
        assert_eq!(
            payability(Active, Some(day(20)), day(21), strict),
            Err(NodeFault::PagamentoScaduto)
        );
        assert!(!strict.expired(Some(day(20)), day(21)));
        // Zero days: expired the day after the due date.
        let none = LatePolicy {
            late_payment_allowed: true,
            expire_after_days: Some(0),
        };
        assert!(none.expired(Some(day(20)), day(21)));
        assert!(!none.expired(Some(day(20)), day(20)));
    }

    #[test]
    fn remittance_is_mypay_shaped_and_cut_to_140() {
        let iuv = Iuv::generate(SegregationCode::parse("01").unwrap(), 123).unwrap();
        let r = remittance_information(&iuv, Amount::from_cents(12050), "TARI 2026");
        assert_eq!(r, format!("/RFB/{}/120.50/TXT/TARI 2026", iuv.as_str()));
        let long = remittance_information(&iuv, Amount::from_cents(1), &"è".repeat(300));
        assert_eq!(long.chars().count(), 140);
    }

    #[test]
    fn transfers_add_up_and_carry_the_secondary_entity() {
        let iuv = Iuv::generate(SegregationCode::parse("01").unwrap(), 7).unwrap();
        let padova = EntityFiscalCode::parse("00644060287").unwrap();
        let iban = Iban::parse("IT60X0542811101000000123456").unwrap();
        let mut d = Dovuto {
            iud: "X".into(),
            iuv: None,
            generate_iuv: true,
            payer: Subject::default(),
            due_date: None,
            amount: Amount::from_cents(10000),
            pa_fee: None,
            debt_type: "TARI".into(),
            payment_kinds: "ALL".into(),
            causale: "TARI".into(),
            dati_specifici_riscossione: "9/0101100IM/extra".into(),
            bilancio: None,
            secondary: None,
        };
        let one = transfers(&d, &iuv, &padova, &iban, "9/0101107TS/").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].amount.cents(), 10000);
        assert_eq!(one[0].category, "9/0101100IM/");
        d.secondary = Some(SecondaryTransfer {
            fiscal_code: EntityFiscalCode::parse("00133880252").unwrap(),
            name: "Comune di Feltre".into(),
            iban: Iban::parse("IT95O0306911884000100012345").unwrap(),
            address: None,
            civic: None,
            postal_code: None,
            locality: None,
            province: None,
            nation: None,
            dati_specifici_riscossione: "9/0101100IM/".into(),
            causale: None,
            amount: Amount::from_cents(2500),
        });
        let two = transfers(&d, &iuv, &padova, &iban, "9/0101107TS/").unwrap();
        assert_eq!(two.iter().map(|t| t.amount.cents()).sum::<i64>(), 10000);
        assert_eq!((two[0].amount.cents(), two[1].amount.cents()), (7500, 2500));
        assert_eq!(two[1].fiscal_code.as_str(), "00133880252");
        assert_eq!(two[1].id, 2);
    }
}
