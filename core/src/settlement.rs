//! A PSP's settlement flow (Flusso di Rendicontazione, FdR): which payments one bank transfer
//! (SCT) to an entity settles, and with what outcome.
//!
//! The same flow reaches the hub as FlussoRiversamento XML (the node's legacy SOAP) or as FdR 3
//! REST JSON; both decode into [`SettlementFlow`] (the header) and [`SettlementPayment`] rows,
//! kept apart so a 100 000-row flow can be handled row by row. [`link`] holds the rules that tie
//! rows to the hub's receipts.
//!
//! Identifiers that come from the PSP (IUV, IUR, the sender's and receiver's codes) are kept as
//! sent, checked only against the XSD's lengths: a flow naming a malformed IUV is still a flow,
//! and the mismatch is reported as an anomaly by the linking rules, not lost in a parse error.

pub mod link;

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::amount::Amount;
use crate::ids::{IdError, Iuv};
use crate::time::rome_date;

/// Why a value does not fit a settlement flow; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("{field} must be {min} to {max} characters, got {got}")]
    Length {
        field: &'static str,
        min: usize,
        max: usize,
        got: usize,
    },
    #[error("IUF (identificativoFlusso) character {position} is {found:?}, expected a letter, digit, '-' or '_'")]
    IufChar { position: usize, found: char },
    #[error("transfer index must be 1 to 5, got {0}")]
    TransferIndex(i64),
    #[error("payment outcome (codiceEsitoSingoloPagamento) {0:?} is not one of 0, 3, 4, 8, 9")]
    EsitoCode(String),
    #[error(
        "payment status {0:?} is not one of EXECUTED, REVOKED, STAND_IN, STAND_IN_NO_RPT, NO_RPT"
    )]
    PayStatusName(String),
    #[error("sender type {0:?} is not one of G, A, B (LEGAL_PERSON, ABI_CODE, BIC_CODE)")]
    SenderKind(String),
}

/// Checks the length of an XSD `stTextN` value (characters, not bytes).
pub fn check_text(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), SettlementError> {
    let got = value.chars().count();
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(SettlementError::Length {
            field,
            min,
            max,
            got,
        })
    }
}

/// The flow's identifier (IUF, `identificativoFlusso`, FdR 3's `fdr`): `[A-Za-z0-9-_]{1,35}`.
/// FdR 3 names flows `yyyy-mm-dd<pspId>-<suffix>`; legacy flows may not, so only the XSD's
/// pattern is enforced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iuf(String);

impl Iuf {
    pub fn parse(s: &str) -> Result<Iuf, SettlementError> {
        check_text("IUF (identificativoFlusso)", s, 1, 35)?;
        if let Some((i, c)) = s
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(SettlementError::IufChar {
                position: i + 1,
                found: c,
            });
        }
        Ok(Iuf(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PSP id in an FdR 3 style name (`yyyy-mm-dd<pspId>-<suffix>`): what lies between the
    /// date and the first `-` after it. `None` when the name has no such shape (legacy IUFs).
    /// A guess for flows that arrive without their PSP (the legacy SOAP list names none).
    pub fn psp_hint(&self) -> Option<&str> {
        let s = self.0.as_str();
        let date = s.get(..10)?;
        NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let rest = s.get(10..)?;
        let end = rest.find('-')?;
        (end > 0).then(|| &rest[..end])
    }
}

impl fmt::Display for Iuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// What kind of code identifies the sending PSP (`tipoIdentificativoUnivoco`, FdR 3 `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderKind {
    /// `G` / `LEGAL_PERSON`.
    LegalPerson,
    /// `A` / `ABI_CODE`.
    Abi,
    /// `B` / `BIC_CODE`.
    Bic,
}

impl SenderKind {
    pub fn xml_code(self) -> &'static str {
        match self {
            SenderKind::LegalPerson => "G",
            SenderKind::Abi => "A",
            SenderKind::Bic => "B",
        }
    }

    pub fn from_xml_code(s: &str) -> Result<SenderKind, SettlementError> {
        match s {
            "G" => Ok(SenderKind::LegalPerson),
            "A" => Ok(SenderKind::Abi),
            "B" => Ok(SenderKind::Bic),
            _ => Err(SettlementError::SenderKind(s.to_owned())),
        }
    }

    pub fn rest_name(self) -> &'static str {
        match self {
            SenderKind::LegalPerson => "LEGAL_PERSON",
            SenderKind::Abi => "ABI_CODE",
            SenderKind::Bic => "BIC_CODE",
        }
    }

    pub fn from_rest_name(s: &str) -> Result<SenderKind, SettlementError> {
        match s {
            "LEGAL_PERSON" => Ok(SenderKind::LegalPerson),
            "ABI_CODE" => Ok(SenderKind::Abi),
            "BIC_CODE" => Ok(SenderKind::Bic),
            _ => Err(SettlementError::SenderKind(s.to_owned())),
        }
    }
}

/// The PSP that sends the flow (`istitutoMittente`, FdR 3 `sender`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSender {
    pub kind: SenderKind,
    /// `codiceIdentificativoUnivoco` / `sender.id` (1-35 characters).
    pub id: String,
    /// `denominazioneMittente` / `pspName` (optional in the XML).
    pub name: Option<String>,
    /// FdR 3 only: `pspBrokerId`, `channelId`.
    pub broker_id: Option<String>,
    pub channel_id: Option<String>,
}

/// The entity the flow settles to (`istitutoRicevente`, FdR 3 `receiver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowReceiver {
    /// `codiceIdentificativoUnivoco` / `receiver.id` (1-35 characters, type always G).
    pub id: String,
    /// FdR 3's `organizationId` (the entity's fiscal code); the XML's receiver id otherwise.
    pub organization_id: String,
    /// `denominazioneRicevente` / `organizationName`.
    pub name: Option<String>,
}

/// The header of a settlement flow: everything but its payment rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementFlow {
    pub iuf: Iuf,
    /// The PSP's pagoPA id (FdR 3 `pspId`; for a legacy flow the caller's, or [`Iuf::psp_hint`]).
    pub psp_id: String,
    /// FdR 3 revision (1 for a legacy flow, which has none); a higher one supersedes.
    pub revision: u32,
    /// `dataOraFlusso` / `fdrDate`, as an instant.
    pub flow_time: DateTime<Utc>,
    /// `identificativoUnivocoRegolamento` / `regulation`: the SCT's reference (1-35 characters).
    pub regulation_id: String,
    /// `dataRegolamento` / `regulationDate`.
    pub regulation_date: NaiveDate,
    pub sender: FlowSender,
    /// `codiceBicBancaDiRiversamento` / `bicCodePouringBank`.
    pub bic_code_pouring_bank: Option<String>,
    pub receiver: FlowReceiver,
    /// `numeroTotalePagamenti` / `totPayments`: what the PSP declares.
    pub declared_count: u64,
    /// `importoTotalePagamenti` / `sumPayments`.
    pub declared_amount: Amount,
    /// FdR 3 `published`; `None` for a legacy flow.
    pub published: Option<DateTime<Utc>>,
}

impl SettlementFlow {
    /// The flow's calendar day in Rome.
    pub fn flow_date(&self) -> NaiveDate {
        rome_date(self.flow_time)
    }
}

/// A payment's outcome in the flow (`codiceEsitoSingoloPagamento`, FdR 3 `payStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayStatus {
    /// 0, `EXECUTED`: paid with a receipt.
    Executed,
    /// 3, `REVOKED`: the payment was revoked.
    Revoked,
    /// 4, `STAND_IN`: paid while the node was in stand-in.
    StandIn,
    /// 8, `STAND_IN_NO_RPT`: paid in stand-in without a payment request.
    StandInNoRpt,
    /// 9, `NO_RPT`: paid without a payment request (no receipt is expected).
    NoRpt,
}

impl PayStatus {
    pub const ALL: [PayStatus; 5] = [
        PayStatus::Executed,
        PayStatus::Revoked,
        PayStatus::StandIn,
        PayStatus::StandInNoRpt,
        PayStatus::NoRpt,
    ];

    /// The XML `codiceEsitoSingoloPagamento`.
    pub fn esito(self) -> u8 {
        match self {
            PayStatus::Executed => 0,
            PayStatus::Revoked => 3,
            PayStatus::StandIn => 4,
            PayStatus::StandInNoRpt => 8,
            PayStatus::NoRpt => 9,
        }
    }

    pub fn from_esito(s: &str) -> Result<PayStatus, SettlementError> {
        match s {
            "0" => Ok(PayStatus::Executed),
            "3" => Ok(PayStatus::Revoked),
            "4" => Ok(PayStatus::StandIn),
            "8" => Ok(PayStatus::StandInNoRpt),
            "9" => Ok(PayStatus::NoRpt),
            _ => Err(SettlementError::EsitoCode(s.to_owned())),
        }
    }

    /// FdR 3's `payStatus`.
    pub fn rest_name(self) -> &'static str {
        match self {
            PayStatus::Executed => "EXECUTED",
            PayStatus::Revoked => "REVOKED",
            PayStatus::StandIn => "STAND_IN",
            PayStatus::StandInNoRpt => "STAND_IN_NO_RPT",
            PayStatus::NoRpt => "NO_RPT",
        }
    }

    pub fn from_rest_name(s: &str) -> Result<PayStatus, SettlementError> {
        PayStatus::ALL
            .into_iter()
            .find(|p| p.rest_name() == s)
            .ok_or_else(|| SettlementError::PayStatusName(s.to_owned()))
    }

    /// Whether the hub should hold a receipt for such a payment: not for 8 and 9, which are paid
    /// without a payment request.
    pub fn expects_receipt(self) -> bool {
        !matches!(self, PayStatus::StandInNoRpt | PayStatus::NoRpt)
    }
}

/// The index of a transfer within a payment (`indiceDatiSingoloPagamento`, `idTransfer`): 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferIndex(u8);

impl TransferIndex {
    pub const FIRST: TransferIndex = TransferIndex(1);

    pub fn new(n: i64) -> Result<TransferIndex, SettlementError> {
        match u8::try_from(n) {
            Ok(v @ 1..=5) => Ok(TransferIndex(v)),
            _ => Err(SettlementError::TransferIndex(n)),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for TransferIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One payment row of a flow (`datiSingoliPagamenti`, FdR 3 `Payment`). Kept compact: a flow
/// can hold 100 000 of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementPayment {
    /// As sent (1-35 characters); see [`SettlementPayment::parsed_iuv`].
    pub iuv: String,
    /// The collection id (IUR, `identificativoUnivocoRiscossione`): the receipt's `receiptId`.
    pub iur: String,
    /// Optional in the XML; `None` is read as transfer 1 by the linking rules.
    pub transfer_index: Option<TransferIndex>,
    /// In cents; negative only for a revoked payment (the node's XSD documentation asks it).
    pub amount: Amount,
    pub status: PayStatus,
    /// `dataEsitoSingoloPagamento` / `payDate`.
    pub date: NaiveDate,
}

impl SettlementPayment {
    /// The IUV as the hub's type, when it has the shape of one.
    pub fn parsed_iuv(&self) -> Result<Iuv, IdError> {
        Iuv::parse(&self.iuv)
    }

    /// The transfer index the linking rules use (1 when the flow leaves it out).
    pub fn index_or_first(&self) -> TransferIndex {
        self.transfer_index.unwrap_or(TransferIndex::FIRST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iuf_follows_the_xsd_pattern() {
        assert!(Iuf::parse("2021-07-27SELBIT2B-S003014897").is_ok());
        assert!(Iuf::parse("a_b-C9").is_ok());
        assert_eq!(
            Iuf::parse("2021 07"),
            Err(SettlementError::IufChar {
                position: 5,
                found: ' '
            })
        );
        assert!(matches!(
            Iuf::parse(""),
            Err(SettlementError::Length { got: 0, .. })
        ));
        assert!(matches!(
            Iuf::parse(&"A".repeat(36)),
            Err(SettlementError::Length { got: 36, .. })
        ));
    }

    #[test]
    fn psp_hint_reads_fdr3_names_only() {
        let hint = |s: &str| Iuf::parse(s).unwrap().psp_hint().map(str::to_owned);
        assert_eq!(
            hint("2025-01-0188888888888-0000001").as_deref(),
            Some("88888888888")
        );
        assert_eq!(
            hint("2021-07-27SELBIT2B-S003014897").as_deref(),
            Some("SELBIT2B")
        );
        assert_eq!(hint("FLOW-0001"), None);
        assert_eq!(hint("2025-13-01PSP-1"), None);
        assert_eq!(hint("2025-01-01-1"), None);
    }

    #[test]
    fn pay_status_maps_esiti_and_rest_names_both_ways() {
        let table = [
            ("0", "EXECUTED", true),
            ("3", "REVOKED", true),
            ("4", "STAND_IN", true),
            ("8", "STAND_IN_NO_RPT", false),
            ("9", "NO_RPT", false),
        ];
        for (esito, rest, expects) in table {
            let s = PayStatus::from_esito(esito).unwrap();
            assert_eq!(s.esito().to_string(), esito);
            assert_eq!(s.rest_name(), rest);
            assert_eq!(PayStatus::from_rest_name(rest), Ok(s));
            assert_eq!(s.expects_receipt(), expects, "{rest}");
        }
        assert!(PayStatus::from_esito("1").is_err());
        assert!(PayStatus::from_rest_name("executed").is_err());
    }

    #[test]
    fn transfer_index_is_one_to_five() {
        assert_eq!(TransferIndex::new(5).map(TransferIndex::get), Ok(5));
        assert_eq!(
            TransferIndex::new(0),
            Err(SettlementError::TransferIndex(0))
        );
        assert_eq!(
            TransferIndex::new(6),
            Err(SettlementError::TransferIndex(6))
        );
        assert_eq!(
            TransferIndex::new(-1),
            Err(SettlementError::TransferIndex(-1))
        );
    }

    #[test]
    fn sender_kinds_map_xml_and_rest() {
        for (x, r) in [("G", "LEGAL_PERSON"), ("A", "ABI_CODE"), ("B", "BIC_CODE")] {
            let k = SenderKind::from_xml_code(x).unwrap();
            assert_eq!(k.rest_name(), r);
            assert_eq!(SenderKind::from_rest_name(r), Ok(k));
            assert_eq!(k.xml_code(), x);
        }
        assert!(SenderKind::from_xml_code("X").is_err());
    }

    #[test]
    fn flow_date_is_the_day_in_rome() {
        use chrono::TimeZone;
        let flow = crate::settlement::link::tests::flow(vec![]);
        let late = SettlementFlow {
            flow_time: Utc.with_ymd_and_hms(2026, 3, 1, 23, 30, 0).unwrap(),
            ..flow
        };
        assert_eq!(
            late.flow_date(),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
        );
    }
}
