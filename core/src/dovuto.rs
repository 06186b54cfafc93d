//! Debt positions (dovuti) as MyPay defines them, and the rules every intake applies to them.
//!
//! An intake (CSV flow, REST, Kafka) fills a [`RawDovuto`] with the text it received; [`validate`]
//! turns it into a [`DovutoRow`] or into the full list of MyPay rejection codes, so every intake
//! rejects the same input with the same codes.

/// Version of a MyPay import flow (`1_0` .. `1_4`): it fixes the column layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
    V1_4,
}

impl FlowVersion {
    pub const ALL: [FlowVersion; 5] = [Self::V1_0, Self::V1_1, Self::V1_2, Self::V1_3, Self::V1_4];

    /// Parses the version as it appears in a flow name: `1_0` .. `1_4`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1_0",
            Self::V1_1 => "1_1",
            Self::V1_2 => "1_2",
            Self::V1_3 => "1_3",
            Self::V1_4 => "1_4",
        }
    }

    /// Number of columns of a row, `azione` included (TRACCIATI.md §1: 20/20/21/22/35).
    pub fn column_count(self) -> usize {
        match self {
            Self::V1_0 | Self::V1_1 => 20,
            Self::V1_2 => 21,
            Self::V1_3 => 22,
            Self::V1_4 => 35,
        }
    }

    /// Whether the version has the `bilancio` column (from 1_2).
    pub fn has_bilancio(self) -> bool {
        self >= Self::V1_2
    }

    /// Whether the version has `flgGeneraIuv` (from 1_3).
    pub fn has_generate_flag(self) -> bool {
        self >= Self::V1_3
    }

    /// Whether the version carries a secondary entity (multi-beneficiary, 1_4 only).
    pub fn has_secondary(self) -> bool {
        self == Self::V1_4
    }
}

/// One row as it arrived, each field the text between separators (empty when absent).
///
/// Fields a version does not have stay empty. Borrowed so a CSV reader can fill it without
/// copying every field of every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawDovuto<'a> {
    pub iud: &'a str,
    pub cod_iuv: &'a str,
    pub tipo_identificativo_univoco: &'a str,
    pub codice_identificativo_univoco: &'a str,
    pub anagrafica_pagatore: &'a str,
    pub indirizzo_pagatore: &'a str,
    pub civico_pagatore: &'a str,
    pub cap_pagatore: &'a str,
    pub localita_pagatore: &'a str,
    pub provincia_pagatore: &'a str,
    pub nazione_pagatore: &'a str,
    pub mail_pagatore: &'a str,
    pub data_esecuzione_pagamento: &'a str,
    pub importo_dovuto: &'a str,
    pub commissione_carico_pa: &'a str,
    pub tipo_dovuto: &'a str,
    pub tipo_versamento: &'a str,
    pub causale_versamento: &'a str,
    pub dati_specifici_riscossione: &'a str,
    pub bilancio: &'a str,
    pub flg_genera_iuv: &'a str,
    pub flag_multi_beneficiario: &'a str,
    pub codice_fiscale_ente_secondario: &'a str,
    pub denominazione_ente_secondario: &'a str,
    pub iban_accredito_ente_secondario: &'a str,
    pub indirizzo_ente_secondario: &'a str,
    pub civico_ente_secondario: &'a str,
    pub cap_ente_secondario: &'a str,
    pub localita_ente_secondario: &'a str,
    pub provincia_ente_secondario: &'a str,
    pub nazione_ente_secondario: &'a str,
    pub dati_specifici_riscossione_ente_secondario: &'a str,
    pub causale_versamento_ente_secondario: &'a str,
    pub importo_versamento_ente_secondario: &'a str,
    pub azione: &'a str,
    /// `hashDocumento` (position-json and the API only): the document a stamp-duty debt type's
    /// stamp is for.
    pub hash_documento: &'a str,
}

use crate::amount::Amount;
use crate::ids::{
    EntityFiscalCode, Iban, Iuv, IuvKind, PartitaIva, PersonalFiscalCode, SegregationCode,
};
use crate::taxonomy::{dati_specifici_riscossione_valid, TaxonomyCode, TaxonomyTable};
use chrono::NaiveDate;
use std::collections::HashMap;
use std::fmt;

/// What a row asks for: MyPay's `azione`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `I`: a new position.
    Insert,
    /// `M`: the whole row replaces the active position with the same IUD.
    Modify,
    /// `A`: annul the active position with the same IUD.
    Annul,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "I" => Some(Self::Insert),
            "M" => Some(Self::Modify),
            "A" => Some(Self::Annul),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "I",
            Self::Modify => "M",
            Self::Annul => "A",
        }
    }
}

/// MyPay's row rejection codes (TRACCIATI.md §2), each with the description MyPay's
/// operators know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    SintassiCsv,
    SintassiCsvAzione,
    Iud,
    Iuv,
    IdUnivFg,
    CodFisc,
    PIva,
    Indirizzo,
    Civico,
    Cap,
    Prov,
    Naz,
    Email,
    DataScadenzaPagamento,
    DataScadenzaPagamentoObbligatoria,
    Importo,
    CommissioniPa,
    TipoDovutoInesistente,
    TipoDovutoNonAttivoPerEnte,
    TipoDovutoNonValidoMarcaDaBollo,
    TipoDovutoNonModificabile,
    TipoVers,
    DatiRiscoss,
    Bilancio,
    CodFiscEnteSecondario,
    DenominazioneEnteSecondario,
    IbanEnteSecondario,
    DatiRiscossEnteSecondario,
    ImportoEnteSecondario,
    IudDuplicato,
    IuvDuplicato,
    IuvNoNullable,
    DovutoNonPresente,
    /// The node activated a payment of the position a moment ago: MyPay refuses a change to a
    /// dovuto being paid with `PAA_IMPORT_DOVUTO_NON_PRESENTE` ("non presente o in pagamento").
    DovutoInPagamento,
    Error,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        use RejectCode::*;
        match self {
            SintassiCsv => "PAA_IMPORT_SINTASSI_CSV",
            SintassiCsvAzione => "PAA_IMPORT_SINTASSI_CSV_AZIONE",
            Iud => "PAA_IMPORT_IUD",
            Iuv => "PAA_IMPORT_IUV",
            IdUnivFg => "PAA_IMPORT_ID_UNIV_FG",
            CodFisc => "PAA_IMPORT_COD_FISC",
            PIva => "PAA_IMPORT_P_IVA",
            Indirizzo => "PAA_IMPORT_INDIRIZZO",
            Civico => "PAA_IMPORT_CIVICO",
            Cap => "PAA_IMPORT_CAP",
            Prov => "PAA_IMPORT_PROV",
            Naz => "PAA_IMPORT_NAZ",
            Email => "PAA_IMPORT_EMAIL",
            DataScadenzaPagamento => "PAA_IMPORT_DATA_SCADENZA_PAGAMENTO",
            DataScadenzaPagamentoObbligatoria => "PAA_IMPORT_DATA_SCADENZA_PAGAMENTO_OBBLIGATORIA",
            Importo => "PAA_IMPORT_IMPORTO",
            CommissioniPa => "PAA_IMPORT_COMMISSIONI_PA",
            TipoDovutoInesistente => "PAA_IMPORT_TIPO_DOVUTO_INESISTENTE",
            TipoDovutoNonAttivoPerEnte => "PAA_IMPORT_TIPO_DOVUTO_NON_ATTIVO_PER_ENTE",
            TipoDovutoNonValidoMarcaDaBollo => "PAA_IMPORT_TIPO_DOVUTO_NON_VALIDO_MARCA_DA_BOLLO",
            TipoDovutoNonModificabile => "PAA_IMPORT_TIPO_DOVUTO_NON_MODIFICABILE",
            TipoVers => "PAA_IMPORT_TIPO_VERS",
            DatiRiscoss => "PAA_IMPORT_DATI_RISCOSS",
            Bilancio => "PAA_IMPORT_BILANCIO",
            CodFiscEnteSecondario => "PAA_IMPORT_COD_FISC_ENTE_SECONDARIO",
            DenominazioneEnteSecondario => "PAA_IMPORT_DENOMINAZIONE_ENTE_SECONDARIO",
            IbanEnteSecondario => "PAA_IMPORT_IBAN_ENTE_SECONDARIO",
            DatiRiscossEnteSecondario => "PAA_IMPORT_DATI_RISCOSS_ENTE_SECONDARIO",
            ImportoEnteSecondario => "PAA_IMPORT_IMPORTO_ENTE_SECONDARIO",
            IudDuplicato => "PAA_IMPORT_IUD_DUPLICATO",
            IuvDuplicato => "PAA_IMPORT_IUV_DUPLICATO",
            IuvNoNullable => "PAA_IMPORT_IUV_NO_NULLABLE",
            DovutoNonPresente | DovutoInPagamento => "PAA_IMPORT_DOVUTO_NON_PRESENTE",
            Error => "PAA_IMPORT_ERROR",
        }
    }
}

impl RejectCode {
    /// The field (MyPay's camelCase name, as in `position-json`) the rule is about; `None` for
    /// rules about the whole record.
    pub fn field(self) -> Option<&'static str> {
        use RejectCode::*;
        Some(match self {
            SintassiCsv | Error => return None,
            SintassiCsvAzione => "azione",
            Iud | IudDuplicato | DovutoNonPresente | DovutoInPagamento => "IUD",
            Iuv | IuvDuplicato | IuvNoNullable => "codIuv",
            IdUnivFg => "tipoIdentificativoUnivoco",
            CodFisc | PIva => "codiceIdentificativoUnivoco",
            Indirizzo => "indirizzoPagatore",
            Civico => "civicoPagatore",
            Cap => "capPagatore",
            Prov => "provinciaPagatore",
            Naz => "nazionePagatore",
            Email => "mailPagatore",
            DataScadenzaPagamento | DataScadenzaPagamentoObbligatoria => "dataEsecuzionePagamento",
            Importo => "importoDovuto",
            CommissioniPa => "commissioneCaricoPa",
            TipoDovutoInesistente
            | TipoDovutoNonAttivoPerEnte
            | TipoDovutoNonValidoMarcaDaBollo
            | TipoDovutoNonModificabile => "tipoDovuto",
            TipoVers => "tipoVersamento",
            DatiRiscoss => "datiSpecificiRiscossione",
            Bilancio => "bilancio",
            CodFiscEnteSecondario => "codiceFiscaleEnteSecondario",
            DenominazioneEnteSecondario => "denominazioneEnteSecondario",
            IbanEnteSecondario => "ibanAccreditoEnteSecondario",
            DatiRiscossEnteSecondario => "datiSpecificiRiscossioneEnteSecondario",
            ImportoEnteSecondario => "importoVersamentoEnteSecondario",
        })
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule of one row: the MyPay code and a sentence naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    /// The input field at fault when the code does not say it (e.g. a JSON path of a syntax error).
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The input field at fault, if any: the one given, else the one the code is about.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref().or(self.code.field())
    }
}

/// F (natural person) or G (legal person), MyPay's `tipoIdentificativoUnivoco`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubjectKind {
    F,
    G,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F => "F",
            Self::G => "G",
        }
    }
}

/// The payer (debtor) of a position.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SubjectKind>,
    /// Fiscal code, P.IVA, or `ANONIMO` where the debt type allows it.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub civic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The transfer to a secondary entity of a multi-beneficiary (1_4) position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecondaryTransfer {
    pub fiscal_code: EntityFiscalCode,
    pub name: String,
    pub iban: Iban,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub civic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nation: Option<String>,
    pub dati_specifici_riscossione: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causale: Option<String>,
    pub amount: Amount,
}

/// A digital revenue stamp (marca da bollo digitale) the payer buys instead of a credit to an
/// account: pagoPA's `richiestaMarcaDaBollo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StampDuty {
    /// `tipoBollo`: `01` (the only one pagoPA knows).
    pub kind: String,
    /// `hashDocumento`: base64 of the SHA-256 of the stamped document.
    pub document_hash: String,
    /// `provinciaResidenza`: the payer's province, two upper-case letters.
    pub province: String,
}

/// Where a transfer of a position's own list goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credit {
    /// A bank account, and a postal one for Poste's channels (`transferType` POSTAL); either
    /// may be absent, not both.
    Accounts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iban: Option<Iban>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postal_iban: Option<Iban>,
    },
    Stamp(StampDuty),
}

/// A metadata entry of a transfer (pagoPA's `mapEntry`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetaEntry {
    pub key: String,
    pub value: String,
}

/// One transfer of a position that carries its own transfer list (position-json, the API):
/// the entity's own first, then up to four other beneficiaries. MyPay 1_4's single secondary
/// entity is [`SecondaryTransfer`]; a position has one or the other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferSpec {
    /// The beneficiary; `None` for the entity's own transfer (the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiscal_code: Option<EntityFiscalCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// `None`: the debt type's accounts (the entity's own transfer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<Credit>,
    pub amount: Amount,
    /// `remittanceInformation`; `None`: MyPay's `/RFB/<IUV>/<amount>/TXT/<causale>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance: Option<String>,
    /// The taxonomy code (`transferCategory`); `None`: the position's, else the debt type's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<MetaEntry>,
}

/// A validated debt position, every MyPay field kept. Serialised without its empty optional
/// fields: it is stored once per position, so its size is the registry's size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dovuto {
    pub iud: String,
    /// The IUV the entity supplied; `None` when the hub must generate one (or, for `A`, none given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iuv: Option<Iuv>,
    /// Whether the row asked for a generated IUV (`flgGeneraIuv`, or an empty IUV on a debt type
    /// that generates).
    pub generate_iuv: bool,
    pub payer: Subject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pa_fee: Option<Amount>,
    pub debt_type: String,
    pub payment_kinds: String,
    pub causale: String,
    pub dati_specifici_riscossione: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bilancio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecondaryTransfer>,
    /// The whole transfer list, when the position gives one (up to 5); empty: the debt type's
    /// account, plus `secondary` when there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<TransferSpec>,
    /// `hashDocumento` of the document a stamp-duty debt type's stamp is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_hash: Option<String>,
}

/// A validated row: what to do and with which position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DovutoRow {
    pub action: Action,
    pub dovuto: Dovuto,
}

/// What the entity configured for one debt type, as far as row validation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebtTypeRules {
    pub code: String,
    pub active: bool,
    pub due_date_required: bool,
    pub anonymous_payer_allowed: bool,
    /// Generate an IUV when a row leaves it empty, even without `flgGeneraIuv`.
    pub generate_iuv: bool,
    /// A digital revenue stamp: positions need the document's hash, which import flows cannot
    /// carry (MyPay refuses the stamp in flows too).
    pub stamp_duty: bool,
}

/// What validation needs to know about the entity a row belongs to.
#[derive(Debug, Clone)]
pub struct EntityRules {
    pub segregation_code: SegregationCode,
    pub debt_types: HashMap<String, DebtTypeRules>,
    pub taxonomy: Option<std::sync::Arc<TaxonomyTable>>,
}

/// MyPay never accepts the digital revenue stamp through an import flow.
const MARCA_BOLLO: &str = "MARCA_BOLLO_DIGITALE";
const PAYMENT_KINDS: [&str; 7] = ["BBT", "BP", "AD", "CP", "PO", "OBEP", "ALL"];

/// Checks a row with MyPay's rules; on failure returns every broken rule, not just the first.
pub fn validate(
    raw: &RawDovuto<'_>,
    version: FlowVersion,
    rules: &EntityRules,
    today: NaiveDate,
) -> Result<DovutoRow, Vec<Rejection>> {
    use RejectCode as C;
    let mut errs: Vec<Rejection> = Vec::new();
    let mut err = |code: RejectCode, msg: String| errs.push(Rejection::new(code, msg));

    let action = Action::parse(raw.azione);
    if action.is_none() {
        err(
            C::SintassiCsvAzione,
            format!("azione {:?} is not one of I, M, A", raw.azione),
        );
    }

    // IUD
    if raw.iud.is_empty() {
        err(C::SintassiCsv, "IUD is required".into());
    } else if raw.iud.chars().count() > 35 {
        err(C::Iud, "IUD is longer than 35 characters".into());
    } else if raw.iud.starts_with("000") {
        err(C::Iud, "IUD must not start with 000".into());
    }

    // IUV supplied by the entity
    let iuv = if raw.cod_iuv.is_empty() {
        None
    } else {
        match check_supplied_iuv(raw.cod_iuv, rules.segregation_code) {
            Ok(iuv) => Some(iuv),
            Err(msg) => {
                err(C::Iuv, msg);
                None
            }
        }
    };

    // Debt type first: several rules depend on it.
    let debt_type = if raw.tipo_dovuto.is_empty() {
        err(C::SintassiCsv, "tipoDovuto is required".into());
        None
    } else if raw.tipo_dovuto == MARCA_BOLLO {
        err(
            C::TipoDovutoNonValidoMarcaDaBollo,
            "MARCA_BOLLO_DIGITALE cannot be imported through a flow".into(),
        );
        None
    } else {
        match rules.debt_types.get(raw.tipo_dovuto) {
            None => {
                err(
                    C::TipoDovutoInesistente,
                    format!(
                        "tipoDovuto {:?} is not configured for this entity",
                        raw.tipo_dovuto
                    ),
                );
                None
            }
            Some(dt) if !dt.active => {
                err(
                    C::TipoDovutoNonAttivoPerEnte,
                    format!(
                        "tipoDovuto {:?} is not active for this entity",
                        raw.tipo_dovuto
                    ),
                );
                None
            }
            Some(dt) => Some(dt),
        }
    };
    // A stamp is for one document: its hash must come with the position (MyPay refuses the
    // stamp in flows, which have no column for it).
    let document_hash = match debt_type {
        Some(dt) if dt.stamp_duty && action != Some(Action::Annul) => {
            let h = raw.hash_documento;
            let base64 = h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            if h.is_empty() {
                err(
                    C::TipoDovutoNonValidoMarcaDaBollo,
                    format!(
                        "tipoDovuto {:?} is a digital revenue stamp: hashDocumento (the document's base64 SHA-256) is required, which position-json and the API carry and flows cannot",
                        raw.tipo_dovuto
                    ),
                );
                None
            } else if !(4..=72).contains(&h.len()) || !base64 {
                err(
                    C::TipoDovutoNonValidoMarcaDaBollo,
                    "hashDocumento: the document's base64 SHA-256, 4 to 72 characters".into(),
                );
                None
            } else {
                if raw.provincia_pagatore.len() != 2 {
                    err(
                        C::Prov,
                        "provinciaPagatore is required: the stamp names the payer's province"
                            .into(),
                    );
                }
                Some(h.to_string())
            }
        }
        _ => None,
    };

    // Payer
    let kind = match raw.tipo_identificativo_univoco {
        "F" => Some(SubjectKind::F),
        "G" => Some(SubjectKind::G),
        "" => {
            err(
                C::SintassiCsv,
                "tipoIdentificativoUnivoco is required".into(),
            );
            None
        }
        other => {
            err(
                C::IdUnivFg,
                format!("tipoIdentificativoUnivoco {other:?} is not F or G"),
            );
            None
        }
    };
    let payer_id = raw.codice_identificativo_univoco;
    if payer_id.is_empty() {
        err(
            C::SintassiCsv,
            "codiceIdentificativoUnivoco is required".into(),
        );
    } else if payer_id == "ANONIMO" {
        if !debt_type.is_some_and(|d| d.anonymous_payer_allowed) {
            err(
                C::CodFisc,
                "ANONIMO payer is not allowed for this tipoDovuto".into(),
            );
        }
    } else {
        match kind {
            Some(SubjectKind::F) => {
                if let Err(e) = PersonalFiscalCode::parse(payer_id) {
                    err(C::CodFisc, format!("codiceIdentificativoUnivoco: {e}"));
                }
            }
            Some(SubjectKind::G) => {
                let ok = if payer_id.len() == 16 {
                    PersonalFiscalCode::parse(payer_id).map(|_| ())
                } else {
                    PartitaIva::parse(payer_id).map(|_| ())
                };
                if let Err(e) = ok {
                    err(C::PIva, format!("codiceIdentificativoUnivoco: {e}"));
                }
            }
            None => {}
        }
    }
    if raw.anagrafica_pagatore.is_empty() {
        err(C::SintassiCsv, "anagraficaPagatore is required".into());
    } else if too_long(raw.anagrafica_pagatore, 70) {
        err(
            C::SintassiCsv,
            "anagraficaPagatore is longer than 70 characters".into(),
        );
    }
    if too_long(raw.indirizzo_pagatore, 70) {
        err(
            C::Indirizzo,
            "indirizzoPagatore is longer than 70 characters".into(),
        );
    }
    if too_long(raw.civico_pagatore, 16) {
        err(
            C::Civico,
            "civicoPagatore is longer than 16 characters".into(),
        );
    }
    if too_long(raw.localita_pagatore, 35) {
        err(
            C::SintassiCsv,
            "localitaPagatore is longer than 35 characters".into(),
        );
    }
    let nation = raw.nazione_pagatore;
    let upper2 = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase());
    if !nation.is_empty() && !upper2(nation) {
        err(
            C::Naz,
            format!("nazionePagatore {nation:?} is not an ISO 3166 alpha-2 code"),
        );
    }
    // Italian postal codes and provinces are checked only when the payer is in Italy.
    let in_italy = nation == "IT";
    let cap = raw.cap_pagatore;
    let italian_cap = cap.len() == 5 && cap.bytes().all(|b| b.is_ascii_digit());
    if too_long(cap, 16) || (in_italy && !cap.is_empty() && !italian_cap) {
        err(
            C::Cap,
            format!("capPagatore {cap:?} is not a valid postal code"),
        );
    }
    let prov = raw.provincia_pagatore;
    if !prov.is_empty() && (prov.chars().count() > 2 || (in_italy && !upper2(prov))) {
        err(
            C::Prov,
            format!("provinciaPagatore {prov:?} is not a two-letter province"),
        );
    }
    let email = raw.mail_pagatore;
    if !email.is_empty() && (too_long(email, 256) || !email_plausible(email)) {
        err(
            C::Email,
            format!("mailPagatore {email:?} is not a valid e-mail address"),
        );
    }

    // Due date
    let due_date_required = matches!(version, FlowVersion::V1_0 | FlowVersion::V1_1)
        || debt_type.is_some_and(|d| d.due_date_required);
    let due_date = if raw.data_esecuzione_pagamento.is_empty() {
        if due_date_required {
            err(
                C::DataScadenzaPagamentoObbligatoria,
                "dataEsecuzionePagamento (due date) is required for this tipoDovuto".into(),
            );
        }
        None
    } else {
        match NaiveDate::parse_from_str(raw.data_esecuzione_pagamento, "%Y-%m-%d") {
            Ok(d) if raw.data_esecuzione_pagamento.len() == 10 => {
                if debt_type.is_some_and(|dt| dt.due_date_required)
                    && d < today
                    && action != Some(Action::Annul)
                {
                    err(
                        C::DataScadenzaPagamento,
                        format!("dataEsecuzionePagamento {d} is before today ({today})"),
                    );
                }
                Some(d)
            }
            _ => {
                err(
                    C::DataScadenzaPagamento,
                    format!(
                        "dataEsecuzionePagamento {:?} is not a date yyyy-MM-dd",
                        raw.data_esecuzione_pagamento
                    ),
                );
                None
            }
        }
    };

    // Amounts
    let amount = match Amount::parse_mypay(raw.importo_dovuto) {
        Ok(a) => Some(a),
        Err(e) => {
            err(
                C::Importo,
                format!("importoDovuto {:?}: {e}", raw.importo_dovuto),
            );
            None
        }
    };
    let pa_fee = if raw.commissione_carico_pa.is_empty() {
        None
    } else {
        match Amount::parse_decimal(raw.commissione_carico_pa) {
            Ok(a) => Some(a),
            Err(e) => {
                err(
                    C::CommissioniPa,
                    format!("commissioneCaricoPa {:?}: {e}", raw.commissione_carico_pa),
                );
                None
            }
        }
    };

    // Payment kinds
    let payment_kinds = if raw.tipo_versamento.is_empty() {
        "ALL".to_string()
    } else {
        let parts: Vec<&str> = raw.tipo_versamento.split('|').collect();
        let ok = parts.iter().all(|p| PAYMENT_KINDS.contains(p))
            && (!parts.contains(&"ALL") || parts.len() == 1)
            && raw.tipo_versamento.len() <= 32;
        if !ok {
            err(
                C::TipoVers,
                format!(
                    "tipoVersamento {:?} must be ALL or |-separated BBT, BP, AD, CP, PO, OBEP",
                    raw.tipo_versamento
                ),
            );
        }
        raw.tipo_versamento.to_string()
    };

    // Causale
    let causale_max = if version == FlowVersion::V1_0 {
        140
    } else {
        1024
    };
    if raw.causale_versamento.is_empty() {
        err(C::SintassiCsv, "causaleVersamento is required".into());
    } else if too_long(raw.causale_versamento, causale_max) {
        err(
            C::SintassiCsv,
            format!("causaleVersamento is longer than {causale_max} characters"),
        );
    }

    // Collection data and taxonomy
    check_dati_riscossione(
        raw.dati_specifici_riscossione,
        "datiSpecificiRiscossione",
        C::DatiRiscoss,
        rules.taxonomy.as_deref(),
        &mut err,
    );

    // Budget breakdown
    let bilancio = if raw.bilancio.is_empty() {
        None
    } else {
        if too_long(raw.bilancio, 4096) {
            err(
                C::Bilancio,
                "bilancio is longer than 4096 characters".into(),
            );
        } else if let Some(total) = amount {
            if let Err(msg) = check_bilancio(raw.bilancio, total) {
                err(C::Bilancio, msg);
            }
        }
        Some(raw.bilancio.to_string())
    };

    let generate_flag = match raw.flg_genera_iuv {
        "" => false,
        s if s.eq_ignore_ascii_case("true") => true,
        s if s.eq_ignore_ascii_case("false") => false,
        other => {
            err(
                C::SintassiCsv,
                format!("flgGeneraIuv {other:?} is not true or false"),
            );
            false
        }
    };
    if generate_flag && !raw.cod_iuv.is_empty() && action == Some(Action::Insert) {
        err(
            C::Iuv,
            "flgGeneraIuv is true but codIuv is also given".into(),
        );
    }

    // Secondary entity (1_4 multi-beneficiary)
    let multi = match raw.flag_multi_beneficiario {
        "" => false,
        s if s.eq_ignore_ascii_case("true") => true,
        s if s.eq_ignore_ascii_case("false") => false,
        other => {
            err(
                C::SintassiCsv,
                format!("flagMultiBeneficiario {other:?} is not true or false"),
            );
            false
        }
    };
    let secondary = if multi {
        secondary_transfer(raw, amount, rules.taxonomy.as_deref(), &mut err)
    } else {
        None
    };

    match (errs.is_empty(), action, amount) {
        (true, Some(action), Some(amount)) => {
            let generate_iuv = iuv.is_none()
                && (generate_flag || debt_type.is_some_and(|d| d.generate_iuv))
                && action != Action::Annul;
            Ok(DovutoRow {
                action,
                dovuto: Dovuto {
                    iud: raw.iud.to_string(),
                    iuv,
                    generate_iuv,
                    payer: Subject {
                        kind,
                        id: payer_id.to_string(),
                        name: raw.anagrafica_pagatore.to_string(),
                        address: opt(raw.indirizzo_pagatore),
                        civic: opt(raw.civico_pagatore),
                        postal_code: opt(raw.cap_pagatore),
                        locality: opt(raw.localita_pagatore),
                        province: opt(raw.provincia_pagatore),
                        nation: opt(raw.nazione_pagatore),
                        email: opt(raw.mail_pagatore),
                    },
                    due_date,
                    amount,
                    pa_fee,
                    debt_type: raw.tipo_dovuto.to_string(),
                    payment_kinds,
                    causale: raw.causale_versamento.to_string(),
                    dati_specifici_riscossione: raw.dati_specifici_riscossione.to_string(),
                    bilancio,
                    secondary,
                    transfers: Vec::new(),
                    document_hash,
                },
            })
        }
        _ => {
            if errs.is_empty() {
                errs.push(Rejection::new(C::Error, "row could not be validated"));
            }
            Err(errs)
        }
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn too_long(s: &str, max: usize) -> bool {
    // Byte length bounds char count from above: only count chars when it could matter.
    s.len() > max && s.chars().count() > max
}

fn email_plausible(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

fn check_supplied_iuv(s: &str, seg: SegregationCode) -> Result<Iuv, String> {
    let iuv = Iuv::parse(s).map_err(|e| format!("codIuv {s:?}: {e}"))?;
    match iuv.kind() {
        IuvKind::Digits15 => {
            if s.starts_with("00") {
                return Err(format!(
                    "codIuv {s:?}: a 15-digit IUV must not start with 00"
                ));
            }
        }
        IuvKind::Digits17 => {
            if !s.starts_with(seg.as_str()) {
                return Err(format!(
                    "codIuv {s:?}: a 17-digit IUV must start with the entity's segregation code {seg}"
                ));
            }
            if !iuv.check_digits_valid_for_aux3() {
                return Err(format!(
                    "codIuv {s:?}: check digits do not match (3 + first 15 digits mod 93)"
                ));
            }
        }
        IuvKind::Rf25 => {}
    }
    Ok(iuv)
}

fn check_dati_riscossione(
    s: &str,
    field: &str,
    code: RejectCode,
    taxonomy: Option<&TaxonomyTable>,
    err: &mut impl FnMut(RejectCode, String),
) {
    if s.is_empty() {
        err(code, format!("{field} is required"));
    } else if too_long(s, 140) || !dati_specifici_riscossione_valid(s) {
        err(
            code,
            format!("{field} {s:?} does not match [0129]/\\S{{3,138}}"),
        );
    } else if let (Some(table), Some(tax)) = (taxonomy, TaxonomyCode::from_dati_specifici(s)) {
        if !table.contains(&tax) {
            err(
                code,
                format!("{field}: taxonomy code {tax} is not in the pagoPA taxonomy"),
            );
        }
    } else if s.starts_with("9/") && TaxonomyCode::from_dati_specifici(s).is_none() {
        err(
            code,
            format!("{field} {s:?} is not a taxonomy code 9/<EC type><macro area><service><IM|TS|SP|SA|AP>/"),
        );
    }
}

/// Sums every `<importo>` of the `bilancio` XML and checks it equals the position's amount.
fn check_bilancio(xml: &str, total: Amount) -> Result<(), String> {
    let body = xml.trim();
    if !body.starts_with("<bilancio>") || !body.ends_with("</bilancio>") {
        return Err("bilancio is not a <bilancio>…</bilancio> document".into());
    }
    let mut sum: i64 = 0;
    let mut rest = body;
    let mut found = false;
    while let Some(start) = rest.find("<importo>") {
        let after = &rest[start + "<importo>".len()..];
        let end = after
            .find("</importo>")
            .ok_or_else(|| "bilancio has an <importo> without </importo>".to_string())?;
        let value = Amount::parse_decimal(after[..end].trim())
            .map_err(|e| format!("bilancio importo {:?}: {e}", &after[..end]))?;
        sum = sum.saturating_add(value.cents());
        found = true;
        rest = &after[end..];
    }
    if !found {
        return Err("bilancio has no <importo>".into());
    }
    if sum != total.cents() {
        return Err(format!(
            "bilancio amounts add up to {}, not importoDovuto {total}",
            Amount::from_cents(sum)
        ));
    }
    Ok(())
}

fn secondary_transfer(
    raw: &RawDovuto<'_>,
    primary_total: Option<Amount>,
    taxonomy: Option<&TaxonomyTable>,
    err: &mut impl FnMut(RejectCode, String),
) -> Option<SecondaryTransfer> {
    use RejectCode as C;
    let fiscal_code = match EntityFiscalCode::parse(raw.codice_fiscale_ente_secondario) {
        Ok(cf) => Some(cf),
        Err(e) => {
            err(
                C::CodFiscEnteSecondario,
                format!("codiceFiscaleEnteSecondario: {e}"),
            );
            None
        }
    };
    let name = raw.denominazione_ente_secondario;
    if name.is_empty() || too_long(name, 70) {
        err(
            C::DenominazioneEnteSecondario,
            "denominazioneEnteSecondario is required, at most 70 characters".into(),
        );
    }
    let iban = match Iban::parse(raw.iban_accredito_ente_secondario) {
        Ok(i) => Some(i),
        Err(e) => {
            err(
                C::IbanEnteSecondario,
                format!("ibanAccreditoEnteSecondario: {e}"),
            );
            None
        }
    };
    check_dati_riscossione(
        raw.dati_specifici_riscossione_ente_secondario,
        "datiSpecificiRiscossioneEnteSecondario",
        C::DatiRiscossEnteSecondario,
        taxonomy,
        err,
    );
    if raw
        .dati_specifici_riscossione_ente_secondario
        .starts_with(|c: char| c != '9')
    {
        err(
            C::DatiRiscossEnteSecondario,
            "datiSpecificiRiscossioneEnteSecondario must be a 9/ taxonomy code".into(),
        );
    }
    if too_long(raw.causale_versamento_ente_secondario, 1024) {
        err(
            C::SintassiCsv,
            "causaleVersamentoEnteSecondario is longer than 1024 characters".into(),
        );
    }
    let amount = match Amount::parse_mypay(raw.importo_versamento_ente_secondario) {
        Ok(a) => {
            if primary_total.is_some_and(|t| a.cents() >= t.cents()) {
                err(
                    C::ImportoEnteSecondario,
                    format!(
                        "importoVersamentoEnteSecondario {a} must be less than importoDovuto, which includes it"
                    ),
                );
            }
            Some(a)
        }
        Err(e) => {
            err(
                C::ImportoEnteSecondario,
                format!("importoVersamentoEnteSecondario: {e}"),
            );
            None
        }
    };
    Some(SecondaryTransfer {
        fiscal_code: fiscal_code?,
        name: name.to_string(),
        iban: iban?,
        address: opt(raw.indirizzo_ente_secondario),
        civic: opt(raw.civico_ente_secondario),
        postal_code: opt(raw.cap_ente_secondario),
        locality: opt(raw.localita_ente_secondario),
        province: opt(raw.provincia_ente_secondario),
        nation: opt(raw.nazione_ente_secondario),
        dati_specifici_riscossione: raw.dati_specifici_riscossione_ente_secondario.to_string(),
        causale: opt(raw.causale_versamento_ente_secondario),
        amount: amount?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EntityRules {
        let mut debt_types = HashMap::new();
        for (code, due, active, anon, gen) in [
            ("TARI", true, true, false, false),
            ("MENSA", false, true, true, true),
            ("OLD", false, false, false, false),
        ] {
            debt_types.insert(
                code.to_string(),
                DebtTypeRules {
                    code: code.into(),
                    active,
                    due_date_required: due,
                    anonymous_payer_allowed: anon,
                    generate_iuv: gen,
                    stamp_duty: false,
                },
            );
        }
        EntityRules {
            segregation_code: SegregationCode::parse("01").unwrap(),
            debt_types,
            taxonomy: None,
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn good() -> RawDovuto<'static> {
        RawDovuto {
            iud: "IUD-0001",
            tipo_identificativo_univoco: "F",
            codice_identificativo_univoco: "RSSMRA85T10A562S",
            anagrafica_pagatore: "Mario Rossi",
            nazione_pagatore: "IT",
            provincia_pagatore: "PD",
            cap_pagatore: "35100",
            mail_pagatore: "mario.rossi@example.it",
            data_esecuzione_pagamento: "2026-12-31",
            importo_dovuto: "120.50",
            tipo_dovuto: "TARI",
            causale_versamento: "TARI 2026 rata unica",
            dati_specifici_riscossione: "9/0101100IM/",
            flg_genera_iuv: "true",
            azione: "I",
            ..Default::default()
        }
    }

    fn codes(r: Result<DovutoRow, Vec<Rejection>>) -> Vec<&'static str> {
        match r {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|r| r.code.as_str()).collect(),
        }
    }

    #[test]
    fn a_good_row_validates_into_cents_and_dates() {
        let row = validate(&good(), FlowVersion::V1_3, &rules(), today()).unwrap();
        assert_eq!(row.action, Action::Insert);
        assert_eq!(row.dovuto.amount.cents(), 12050);
        assert_eq!(row.dovuto.due_date, NaiveDate::from_ymd_opt(2026, 12, 31));
        assert!(row.dovuto.generate_iuv);
        assert_eq!(row.dovuto.payment_kinds, "ALL");
    }

    #[test]
    fn every_broken_rule_is_reported_with_its_code() {
        let raw = RawDovuto {
            codice_identificativo_univoco: "RSSMRA85T10A562X",
            importo_dovuto: "0",
            tipo_versamento: "ALL|BP",
            azione: "X",
            ..good()
        };
        let got = codes(validate(&raw, FlowVersion::V1_3, &rules(), today()));
        assert_eq!(
            got,
            [
                "PAA_IMPORT_SINTASSI_CSV_AZIONE",
                "PAA_IMPORT_COD_FISC",
                "PAA_IMPORT_IMPORTO",
                "PAA_IMPORT_TIPO_VERS"
            ]
        );
    }

    #[test]
    fn debt_type_rules() {
        let r = rules();
        let unknown = RawDovuto {
            tipo_dovuto: "NOPE",
            ..good()
        };
        assert_eq!(
            codes(validate(&unknown, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_TIPO_DOVUTO_INESISTENTE"]
        );
        let inactive = RawDovuto {
            tipo_dovuto: "OLD",
            ..good()
        };
        assert_eq!(
            codes(validate(&inactive, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_TIPO_DOVUTO_NON_ATTIVO_PER_ENTE"]
        );
        let bollo = RawDovuto {
            tipo_dovuto: "MARCA_BOLLO_DIGITALE",
            ..good()
        };
        assert_eq!(
            codes(validate(&bollo, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_TIPO_DOVUTO_NON_VALIDO_MARCA_DA_BOLLO"]
        );
        let anon_ok = RawDovuto {
            tipo_dovuto: "MENSA",
            codice_identificativo_univoco: "ANONIMO",
            data_esecuzione_pagamento: "",
            ..good()
        };
        assert!(validate(&anon_ok, FlowVersion::V1_3, &r, today()).is_ok());
        let anon_no = RawDovuto {
            codice_identificativo_univoco: "ANONIMO",
            ..good()
        };
        assert_eq!(
            codes(validate(&anon_no, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_COD_FISC"]
        );
    }

    #[test]
    fn due_date_rules_follow_version_and_debt_type() {
        let r = rules();
        let missing = RawDovuto {
            data_esecuzione_pagamento: "",
            ..good()
        };
        assert_eq!(
            codes(validate(&missing, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_DATA_SCADENZA_PAGAMENTO_OBBLIGATORIA"]
        );
        let past = RawDovuto {
            data_esecuzione_pagamento: "2026-11-25",
            ..good()
        };
        assert_eq!(
            codes(validate(&past, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_DATA_SCADENZA_PAGAMENTO"]
        );
        let bad = RawDovuto {
            data_esecuzione_pagamento: "31/12/2026",
            ..good()
        };
        assert_eq!(
            codes(validate(&bad, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_DATA_SCADENZA_PAGAMENTO"]
        );
        // MENSA does not require a due date from 1_2, but 1_0/1_1 always do.
        let mensa = RawDovuto {
            tipo_dovuto: "MENSA",
            data_esecuzione_pagamento: "",
            flg_genera_iuv: "",
            ..good()
        };
        assert!(validate(&mensa, FlowVersion::V1_2, &r, today()).is_ok());
        assert_eq!(
            codes(validate(&mensa, FlowVersion::V1_1, &r, today())),
            ["PAA_IMPORT_DATA_SCADENZA_PAGAMENTO_OBBLIGATORIA"]
        );
        // An empty IUV on a debt type that generates asks for one even without the flag.
        assert!(
            validate(&mensa, FlowVersion::V1_2, &r, today())
                .unwrap()
                .dovuto
                .generate_iuv
        );
    }

    #[test]
    fn supplied_iuvs_are_checked_like_mypay() {
        let r = rules();
        // 01 + 0000000000123 + check of 3010000000000123 mod 93 = 73
        let ok = RawDovuto {
            cod_iuv: "01000000000012373",
            flg_genera_iuv: "",
            ..good()
        };
        assert_eq!(
            validate(&ok, FlowVersion::V1_3, &r, today())
                .unwrap()
                .dovuto
                .iuv
                .unwrap()
                .as_str(),
            "01000000000012373"
        );
        let wrong_check = RawDovuto {
            cod_iuv: "01000000000012374",
            flg_genera_iuv: "",
            ..good()
        };
        assert_eq!(
            codes(validate(&wrong_check, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_IUV"]
        );
        let other_seg = RawDovuto {
            cod_iuv: "02000000000012373",
            flg_genera_iuv: "",
            ..good()
        };
        assert_eq!(
            codes(validate(&other_seg, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_IUV"]
        );
        let both = RawDovuto {
            cod_iuv: "01000000000012373",
            ..good()
        };
        assert_eq!(
            codes(validate(&both, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_IUV"]
        );
    }

    #[test]
    fn secondary_entity_of_a_multi_beneficiary_row() {
        let r = rules();
        let raw = RawDovuto {
            flag_multi_beneficiario: "true",
            codice_fiscale_ente_secondario: "00133880252",
            denominazione_ente_secondario: "Comune di Feltre",
            iban_accredito_ente_secondario: "IT60X0542811101000000123456",
            dati_specifici_riscossione_ente_secondario: "9/0101100IM/",
            importo_versamento_ente_secondario: "20.50",
            ..good()
        };
        let row = validate(&raw, FlowVersion::V1_4, &r, today()).unwrap();
        let sec = row.dovuto.secondary.unwrap();
        assert_eq!(sec.amount.cents(), 2050);
        assert_eq!(sec.fiscal_code.as_str(), "00133880252");
        let too_much = RawDovuto {
            importo_versamento_ente_secondario: "120.50",
            iban_accredito_ente_secondario: "IT61X0542811101000000123456",
            ..raw
        };
        assert_eq!(
            codes(validate(&too_much, FlowVersion::V1_4, &r, today())),
            [
                "PAA_IMPORT_IBAN_ENTE_SECONDARIO",
                "PAA_IMPORT_IMPORTO_ENTE_SECONDARIO"
            ]
        );
    }

    #[test]
    fn bilancio_must_add_up() {
        let r = rules();
        let ok = RawDovuto {
            bilancio: "<bilancio><capitolo><codCapitolo>1</codCapitolo><accertamento><codAccertamento>A</codAccertamento><importo>100.50</importo></accertamento><accertamento><importo>20.00</importo></accertamento></capitolo></bilancio>",
            ..good()
        };
        assert!(validate(&ok, FlowVersion::V1_3, &r, today()).is_ok());
        let bad = RawDovuto { bilancio: "<bilancio><capitolo><accertamento><importo>100.00</importo></accertamento></capitolo></bilancio>", ..good() };
        assert_eq!(
            codes(validate(&bad, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_BILANCIO"]
        );
    }

    #[test]
    fn iud_and_payer_rules() {
        let r = rules();
        assert_eq!(
            codes(validate(
                &RawDovuto {
                    iud: "000123",
                    ..good()
                },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_IUD"]
        );
        assert_eq!(
            codes(validate(
                &RawDovuto { iud: "", ..good() },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_SINTASSI_CSV"]
        );
        assert_eq!(
            codes(validate(
                &RawDovuto {
                    tipo_identificativo_univoco: "X",
                    ..good()
                },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_ID_UNIV_FG"]
        );
        let company = RawDovuto {
            tipo_identificativo_univoco: "G",
            codice_identificativo_univoco: "00644060287",
            ..good()
        };
        assert!(validate(&company, FlowVersion::V1_3, &r, today()).is_ok());
        let bad_piva = RawDovuto {
            codice_identificativo_univoco: "00644060288",
            ..company
        };
        assert_eq!(
            codes(validate(&bad_piva, FlowVersion::V1_3, &r, today())),
            ["PAA_IMPORT_P_IVA"]
        );
        assert_eq!(
            codes(validate(
                &RawDovuto {
                    mail_pagatore: "nope",
                    ..good()
                },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_EMAIL"]
        );
        assert_eq!(
            codes(validate(
                &RawDovuto {
                    nazione_pagatore: "ITA",
                    ..good()
                },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_NAZ"]
        );
        assert_eq!(
            codes(validate(
                &RawDovuto {
                    dati_specifici_riscossione: "9/xx",
                    ..good()
                },
                FlowVersion::V1_3,
                &r,
                today()
            )),
            ["PAA_IMPORT_DATI_RISCOSS"]
        );
    }
}
