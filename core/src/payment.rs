//! Paying a position at the node: whether a notice can be paid, what the node is told, and how
//! the amount splits into transfers (primary entity, and the secondary one of a 1_4 row).

use crate::amount::Amount;
use crate::dovuto::{Credit, Dovuto, MetaEntry, StampDuty};
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
    /// The beneficiary's name when it is not the entity (`None`: the entity's own).
    pub company_name: Option<String>,
    pub destination: Destination,
    pub remittance_information: String,
    /// The taxonomy code (`transferCategory`), e.g. `9/0101100IM/`.
    pub category: String,
    pub metadata: Vec<MetaEntry>,
}

/// Where a transfer's money goes: an account, or a digital revenue stamp the PSP sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Iban(Iban),
    Stamp(StampDuty),
}

impl Destination {
    pub fn iban(&self) -> Option<&Iban> {
        match self {
            Self::Iban(i) => Some(i),
            Self::Stamp(_) => None,
        }
    }
}

/// What the entity's own transfer takes from its debt type.
#[derive(Debug, Clone, Copy)]
pub struct Own<'a> {
    /// The account for this channel and day (the postal one for a Poste channel, when there is).
    pub account: &'a Iban,
    pub taxonomy: &'a str,
    /// `Some(tipoBollo)` for a stamp-duty debt type: the whole payment is a stamp.
    pub stamp: Option<&'a str>,
}

/// Splits a position's amount into its transfers: its own list when it has one, else the
/// entity's transfer to the debt type's account, then the secondary entity's share of a
/// multi-beneficiary (1_4) position. The amounts always add up to the position's amount.
/// `postal`: a Poste channel asks (`transferType` POSTAL), so postal accounts come first.
pub fn transfers(
    dovuto: &Dovuto,
    iuv: &Iuv,
    entity: &EntityFiscalCode,
    own: Own<'_>,
    postal: bool,
) -> Result<Vec<Transfer>, NodeFault> {
    // The row's own taxonomy code when it carries one, else the debt type's.
    let category =
        crate::taxonomy::TaxonomyCode::from_dati_specifici(&dovuto.dati_specifici_riscossione)
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| own.taxonomy.to_string());
    let own_destination = match own.stamp {
        Some(kind) => Destination::Stamp(StampDuty {
            kind: kind.to_string(),
            document_hash: dovuto.document_hash.clone().ok_or(NodeFault::Semantica)?,
            province: dovuto.payer.province.clone().ok_or(NodeFault::Semantica)?,
        }),
        None => Destination::Iban(own.account.clone()),
    };
    if !dovuto.transfers.is_empty() {
        let total: i64 = dovuto.transfers.iter().map(|t| t.amount.cents()).sum();
        if total != dovuto.amount.cents() || dovuto.transfers.len() > MAX_TRANSFERS {
            return Err(NodeFault::Semantica);
        }
        return dovuto
            .transfers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let destination = match (&t.credit, i) {
                    (None, 0) => own_destination.clone(),
                    (None, _) => return Err(NodeFault::Semantica),
                    (Some(Credit::Stamp(s)), _) => Destination::Stamp(s.clone()),
                    (Some(Credit::Accounts { iban, postal_iban }), _) => {
                        let pick = if postal {
                            postal_iban.as_ref().or(iban.as_ref())
                        } else {
                            iban.as_ref().or(postal_iban.as_ref())
                        };
                        Destination::Iban(pick.ok_or(NodeFault::Semantica)?.clone())
                    }
                };
                let fiscal_code = match (&t.fiscal_code, i) {
                    (None, 0) => entity.clone(),
                    (Some(f), _) => f.clone(),
                    (None, _) => return Err(NodeFault::Semantica),
                };
                Ok(Transfer {
                    id: i as u8 + 1,
                    amount: t.amount,
                    company_name: (i > 0).then(|| t.company_name.clone()).flatten(),
                    fiscal_code,
                    destination,
                    remittance_information: t
                        .remittance
                        .clone()
                        .unwrap_or_else(|| remittance_information(iuv, t.amount, &dovuto.causale)),
                    category: t.category.clone().unwrap_or_else(|| category.clone()),
                    metadata: t.metadata.clone(),
                })
            })
            .collect();
    }
    let secondary_amount = dovuto.secondary.as_ref().map_or(0, |s| s.amount.cents());
    let primary_cents = dovuto.amount.cents() - secondary_amount;
    if primary_cents <= 0 {
        return Err(NodeFault::Semantica);
    }
    let primary = Amount::from_cents(primary_cents);
    let mut list = vec![Transfer {
        id: 1,
        amount: primary,
        fiscal_code: entity.clone(),
        company_name: None,
        destination: own_destination,
        remittance_information: remittance_information(iuv, primary, &dovuto.causale),
        category,
        metadata: Vec::new(),
    }];
    if let Some(sec) = &dovuto.secondary {
        let causale = sec.causale.as_deref().unwrap_or(&dovuto.causale);
        list.push(Transfer {
            id: 2,
            amount: sec.amount,
            fiscal_code: sec.fiscal_code.clone(),
            company_name: Some(sec.name.clone()),
            destination: Destination::Iban(sec.iban.clone()),
            remittance_information: remittance_information(iuv, sec.amount, causale),
            category: crate::taxonomy::TaxonomyCode::from_dati_specifici(
                &sec.dati_specifici_riscossione,
            )
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| sec.dati_specifici_riscossione.clone()),
            metadata: Vec::new(),
        });
    }
    Ok(list)
}

/// At most this many transfers to a payment (`ctTransferListPA[V2]`).
pub const MAX_TRANSFERS: usize = 5;
/// At most this many metadata entries to a transfer (`ctMetadata`).
pub const MAX_METADATA: usize = 10;

/// Whether Poste's channels can take the payment (`allCCP`): every transfer can be credited to
/// a postal account. `own_postal`: the debt type has one (or its account is one).
pub fn all_postal(dovuto: &Dovuto, own_postal: bool, stamp: bool) -> bool {
    if stamp {
        return false;
    }
    if dovuto.transfers.is_empty() {
        return own_postal && dovuto.secondary.as_ref().is_none_or(|s| s.iban.is_postal());
    }
    dovuto.transfers.iter().all(|t| match &t.credit {
        None => own_postal,
        Some(Credit::Stamp(_)) => false,
        Some(Credit::Accounts { iban, postal_iban }) => {
            postal_iban.is_some() || iban.as_ref().is_some_and(Iban::is_postal)
        }
    })
}

/// The rules a position's own transfer list must follow, checked when it comes in (the node
/// checks the sum again): each broken rule with the field it is about
/// (`transfers[N].<field>`).
pub fn check_transfers(d: &Dovuto) -> Vec<(String, String)> {
    let mut broken = Vec::new();
    let mut p = |field: String, why: String| broken.push((field, why));
    let list = &d.transfers;
    if list.is_empty() {
        return broken;
    }
    if list.len() > MAX_TRANSFERS {
        p(
            "transfers".into(),
            format!("{} transfers: at most {MAX_TRANSFERS}", list.len()),
        );
    }
    if d.secondary.is_some() {
        p(
            "transfers".into(),
            "a position has either transfers or MyPay's secondary entity columns, not both".into(),
        );
    }
    let total: i64 = list.iter().map(|t| t.amount.cents()).sum();
    if total != d.amount.cents() {
        p(
            "transfers".into(),
            format!(
                "the transfers add up to {}, not to importoDovuto {}",
                Amount::from_cents(total),
                d.amount
            ),
        );
    }
    for (i, t) in list.iter().enumerate() {
        let at = |f: &str| format!("transfers[{i}].{f}");
        if t.amount.cents() <= 0 {
            p(at("importo"), format!("{} is not above zero", t.amount));
        }
        match (i, &t.fiscal_code) {
            (0, Some(_)) => p(
                at("codiceFiscaleEnte"),
                "the first transfer is the entity's own: leave codiceFiscaleEnte out".into(),
            ),
            (1.., None) => p(
                at("codiceFiscaleEnte"),
                "required: the beneficiary of this transfer".into(),
            ),
            _ => {}
        }
        match &t.credit {
            None if i > 0 => p(
                at("ibanAccredito"),
                "required: ibanAccredito, ibanPostale or marcaDaBollo".into(),
            ),
            Some(Credit::Accounts {
                iban: None,
                postal_iban: None,
            }) => p(
                at("ibanAccredito"),
                "required: ibanAccredito, ibanPostale or marcaDaBollo".into(),
            ),
            Some(Credit::Accounts {
                postal_iban: Some(pi),
                ..
            }) if !pi.is_postal() => p(
                at("ibanPostale"),
                format!(
                    "{} is not a Poste Italiane account (ABI 07601)",
                    pi.as_str()
                ),
            ),
            Some(Credit::Stamp(s)) => {
                for (f, why) in stamp_problems(s) {
                    p(at(&format!("marcaDaBollo.{f}")), why);
                }
            }
            _ => {}
        }
        if let Some(r) = &t.remittance {
            if r.is_empty() || r.chars().count() > 140 {
                p(at("causaleVersamento"), "1 to 140 characters".into());
            }
        }
        if let Some(c) = &t.category {
            if crate::taxonomy::TaxonomyCode::parse(c).is_err() {
                p(
                    at("datiSpecificiRiscossione"),
                    format!("{c:?} is not a taxonomy code 9/<code>/"),
                );
            }
        }
        if t.metadata.len() > MAX_METADATA {
            p(at("metadata"), format!("at most {MAX_METADATA} entries"));
        }
        for (k, m) in t.metadata.iter().enumerate() {
            for (f, v) in [("key", &m.key), ("value", &m.value)] {
                if v.is_empty() || v.chars().count() > 140 {
                    p(
                        at(&format!("metadata[{k}].{f}")),
                        "1 to 140 characters".into(),
                    );
                }
            }
        }
    }
    broken
}

/// What pagoPA's `ctMarcaDaBollo` refuses of a stamp: (field, why).
pub fn stamp_problems(s: &StampDuty) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if s.kind != "01" {
        out.push(("tipoBollo", format!("{:?}: only 01 exists", s.kind)));
    }
    let h = &s.document_hash;
    let base64 = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !(4..=72).contains(&h.len()) || !base64 {
        out.push((
            "hashDocumento",
            "the base64 SHA-256 of the document, 4 to 72 characters".into(),
        ));
    }
    if s.province.len() != 2 || !s.province.bytes().all(|b| b.is_ascii_uppercase()) {
        out.push((
            "provinciaResidenza",
            format!("{:?} is not a province (two capital letters)", s.province),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dovuto::{SecondaryTransfer, Subject, TransferSpec};
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
            transfers: Vec::new(),
            document_hash: None,
        };
        let one = transfers(
            &d,
            &iuv,
            &padova,
            Own {
                account: &iban,
                taxonomy: "9/0101107TS/",
                stamp: None,
            },
            false,
        )
        .unwrap();
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
        let two = transfers(
            &d,
            &iuv,
            &padova,
            Own {
                account: &iban,
                taxonomy: "9/0101107TS/",
                stamp: None,
            },
            false,
        )
        .unwrap();
        assert_eq!(two.iter().map(|t| t.amount.cents()).sum::<i64>(), 10000);
        assert_eq!((two[0].amount.cents(), two[1].amount.cents()), (7500, 2500));
        assert_eq!(two[1].fiscal_code.as_str(), "00133880252");
        assert_eq!(two[1].id, 2);
    }

    fn listed(amounts: &[i64]) -> Dovuto {
        let feltre = EntityFiscalCode::parse("00133880252").unwrap();
        let postal = Iban::parse("IT24M0760112100000012345678").unwrap();
        Dovuto {
            iud: "X".into(),
            iuv: None,
            generate_iuv: true,
            payer: Subject {
                province: Some("PD".into()),
                ..Subject::default()
            },
            due_date: None,
            amount: Amount::from_cents(amounts.iter().sum()),
            pa_fee: None,
            debt_type: "CERT".into(),
            payment_kinds: "ALL".into(),
            causale: "Certificato".into(),
            dati_specifici_riscossione: "9/0101100IM/".into(),
            bilancio: None,
            secondary: None,
            transfers: amounts
                .iter()
                .enumerate()
                .map(|(i, &c)| TransferSpec {
                    fiscal_code: (i > 0).then(|| feltre.clone()),
                    company_name: (i > 0).then(|| format!("Ente {i}")),
                    credit: match i {
                        0 => None,
                        1 => Some(Credit::Accounts {
                            iban: Some(Iban::parse("IT95O0306911884000100012345").unwrap()),
                            postal_iban: Some(postal.clone()),
                        }),
                        2 => Some(Credit::Stamp(StampDuty {
                            kind: "01".into(),
                            document_hash: "cXVlc3RvIMOoIHVuIGhhc2g=".into(),
                            province: "PD".into(),
                        })),
                        _ => Some(Credit::Accounts {
                            iban: None,
                            postal_iban: Some(postal.clone()),
                        }),
                    },
                    amount: Amount::from_cents(c),
                    remittance: None,
                    category: (i == 3).then(|| "9/0101107TS/".to_string()),
                    metadata: vec![MetaEntry {
                        key: "capitolo".into(),
                        value: format!("{i}"),
                    }],
                })
                .collect(),
            document_hash: None,
        }
    }

    #[test]
    fn a_positions_own_list_renders_each_transfer_and_postal_channels_get_postal_accounts() {
        let iuv = Iuv::generate(SegregationCode::parse("01").unwrap(), 9).unwrap();
        let padova = EntityFiscalCode::parse("00644060287").unwrap();
        let own_iban = Iban::parse("IT60X0542811101000000123456").unwrap();
        let own = Own {
            account: &own_iban,
            taxonomy: "9/0101107TS/",
            stamp: None,
        };
        let d = listed(&[5000, 2000, 1600, 400]);
        assert!(check_transfers(&d).is_empty(), "{:?}", check_transfers(&d));
        let list = transfers(&d, &iuv, &padova, own, false).unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(list[0].fiscal_code, padova);
        assert_eq!(list[0].destination, Destination::Iban(own_iban.clone()));
        assert_eq!(list[0].category, "9/0101100IM/", "the position's taxonomy");
        assert_eq!(list[1].fiscal_code.as_str(), "00133880252");
        assert_eq!(list[1].company_name.as_deref(), Some("Ente 1"));
        assert_eq!(
            list[1].destination.iban().unwrap().as_str(),
            "IT95O0306911884000100012345"
        );
        assert!(matches!(list[2].destination, Destination::Stamp(_)));
        assert_eq!(list[3].category, "9/0101107TS/");
        assert_eq!(list[3].metadata[0].value, "3");
        assert!(list[1].remittance_information.starts_with("/RFB/"));
        // A Poste channel: the postal account where a transfer has one.
        let poste = transfers(&d, &iuv, &padova, own, true).unwrap();
        assert!(poste[1].destination.iban().unwrap().is_postal());
        assert!(
            !all_postal(&d, true, false),
            "a stamp cannot go to a postal account"
        );
        let no_stamp = listed(&[5000, 2000]);
        assert!(all_postal(&no_stamp, true, false));
        assert!(!all_postal(&no_stamp, false, false));

        // Broken lists say what and where.
        let mut bad = listed(&[5000, 2000, 1600, 400, 100, 100]);
        bad.amount = Amount::from_cents(1);
        bad.transfers[1].fiscal_code = None;
        bad.transfers[2].credit = Some(Credit::Stamp(StampDuty {
            kind: "02".into(),
            document_hash: "x".into(),
            province: "pd".into(),
        }));
        bad.transfers[3].metadata = vec![
            MetaEntry {
                key: String::new(),
                value: "v".into(),
            };
            11
        ];
        let broken = check_transfers(&bad);
        let fields: Vec<&str> = broken.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "transfers",
            "transfers[1].codiceFiscaleEnte",
            "transfers[2].marcaDaBollo.tipoBollo",
            "transfers[2].marcaDaBollo.hashDocumento",
            "transfers[2].marcaDaBollo.provinciaResidenza",
            "transfers[3].metadata",
            "transfers[3].metadata[0].key",
        ] {
            assert!(fields.contains(&f), "{f} not in {fields:?}");
        }
        assert_eq!(
            transfers(&bad, &iuv, &padova, own, false),
            Err(NodeFault::Semantica)
        );
    }

    #[test]
    fn a_stamp_duty_debt_type_sells_a_stamp_for_the_positions_document() {
        let iuv = Iuv::generate(SegregationCode::parse("01").unwrap(), 10).unwrap();
        let padova = EntityFiscalCode::parse("00644060287").unwrap();
        let own_iban = Iban::parse("IT60X0542811101000000123456").unwrap();
        let own = Own {
            account: &own_iban,
            taxonomy: "9/0101107TS/",
            stamp: Some("01"),
        };
        let mut d = listed(&[1600]);
        d.transfers.clear();
        assert_eq!(
            transfers(&d, &iuv, &padova, own, false),
            Err(NodeFault::Semantica),
            "no hash"
        );
        d.document_hash = Some("cXVlc3RvIMOoIHVuIGhhc2g=".into());
        let list = transfers(&d, &iuv, &padova, own, false).unwrap();
        assert_eq!(
            list[0].destination,
            Destination::Stamp(StampDuty {
                kind: "01".into(),
                document_hash: "cXVlc3RvIMOoIHVuIGhhc2g=".into(),
                province: "PD".into(),
            })
        );
        assert!(!all_postal(&d, true, true));
    }
}
