//! `mypivot-export`: MyPivot's reconciliation export ("flusso riconciliazione",
//! `ESTRAZIONE_RICONCILIAZIONE`), tracciato versions 1.0 to 1.4, as its batch
//! `MyGov_ExportFlussiEnte_1_x` writes it (columns: [`TracciatoVersion::columns`]).
//!
//! Each row is one reconciled payment seen from up to four sources, one block of columns each:
//! I, the entity's notification ([`Notification`]); E, the pagoPA receipt (the columns of
//! MyPay's export, built by [`crate::mypay_export`] from the same [`ExportReceipt`]); R, the row
//! of a settlement flow ([`Report`]); T, the treasury movement ([`TreasuryMovement`]). Then its
//! class (`classificazioneCompletezza`, one of [`CLASSES`]) and when it last changed. A payment
//! with several classes has one row per class, as in MyPivot.
//!
//! The file, as Talend's `tFileOutputDelimited` writes it for MyPivot: UTF-8, `;`, every field
//! (header included) in `"`, a `"` or `\` inside escaped with `\`, records ended by `\r\n`;
//! amounts `1234.50`; dates `yyyy-MM-dd`, times `yyyy-MM-ddTHH:mm:ss`, in Rome time. Named
//! [`file_stem`]`.csv` inside [`file_stem`]`.zip` (write it with
//! [`crate::mypay_export::zip_at`] or a [`crate::mypay_import::ZipEntryWriter`]).
//!
//! MyPivot refuses an export of more than [`MAX_ROWS`] rows; the writer does not count for the
//! caller.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Europe::Rome;
use snodo_core::treasury::TreasuryMovement;

use super::import_pagati::Notification;
use crate::fdr::Report;
use crate::mypay_export::{self, ExportReceipt, MypayExportError};

/// MyPivot's `numero_max_righe_esportabili` (batch configuration): a larger export is refused.
pub const MAX_ROWS: u64 = 100_000;

/// The classes (`classificazioneCompletezza`), MyPivot's `Constants.COD_ERRORE_*`.
pub const CLASSES: [&str; 14] = [
    "IUD_RT_IUF_TES",
    "IUD_RT_IUF",
    "RT_IUF_TES",
    "RT_IUF",
    "RT_TES",
    "RT_NO_IUF",
    "RT_NO_IUD",
    "IUD_NO_RT",
    "IUV_NO_RT",
    "IUF_NO_TES",
    "IUF_TES_DIV_IMP",
    "TES_NO_IUF_OR_IUV",
    "TES_NO_MATCH",
    "DOPPI",
];

/// Payments exported twice; MyPivot offers the class only in tracciati 1.0 and 1.4
/// (`RiconciliazioneService`).
pub const DOPPI: &str = "DOPPI";

/// The classes MyPivot refuses in 1.2 for an entity without import pagati
/// (`ValidationField.validaClassificazioneCompletezzaOnVersioneTracciato`).
const IUD_CLASSES: [&str; 4] = ["IUD_RT_IUF_TES", "IUD_NO_RT", "IUD_RT_IUF", "RT_NO_IUD"];

// Column blocks, labels and order as in MyPivot's jobs (MANAGE_FLUSSI_RICONCILIAZIONE/process/
// manage/MyGov_ExportFlussiEnte_1_{0..4}_0.1.item @ 413b74a57af766539948e1fb3ced9fcf912cbf44;
// the whole headers are in specs/mypivot/export_headers.txt, checked by the tests).

/// I block: the import pagati notification.
pub const I_COLUMNS: [&str; 21] = [
    "codIudI",
    "codRpSilinviarpIdUnivocoVersamentoI",
    "codRpSoggPagIdUnivPagTipoIdUnivocoI",
    "codRpSoggPagIdUnivPagCodiceIdUnivocoI",
    "deRpSoggPagAnagraficaPagatoreI",
    "deRpSoggPagIndirizzoPagatoreI",
    "deRpSoggPagCivicoPagatoreI",
    "codRpSoggPagCapPagatoreI",
    "deRpSoggPagLocalitaPagatoreI",
    "deRpSoggPagProvinciaPagatoreI",
    "codRpSoggPagNazionePagatoreI",
    "deRpSoggPagEmailPagatoreI",
    "dtRpDatiVersDataEsecuzionePagamentoI",
    "codRpDatiVersTipoVersamentoI",
    "numRpDatiVersDatiSingVersImportoSingoloVersamentoI",
    "numRpDatiVersDatiSingVersCommissioneCaricoPaI",
    "deRpDatiVersDatiSingVersCausaleVersamentoI",
    "deRpDatiVersDatiSingVersDatiSpecificiRiscossioneI",
    "codTipoDovutoI",
    "bilancioI",
    "dtAcquisizioneI",
];

/// E block: the receipt, as MyPay exports it (`iuf` … `tipoDovuto`) plus when MyPivot loaded it.
pub const E_COLUMNS: [&str; 65] = [
    "deNomeFlussoE",
    "numRigaFlussoE",
    "codIudE",
    "codRpSilinviarpIdUnivocoVersamentoE",
    "deEVersioneOggettoE",
    "codEDomIdDominioE",
    "codEDomIdStazioneRichiedenteE",
    "codEIdMessaggioRicevutaE",
    "dtEDataOraMessaggioRicevutaE",
    "codERiferimentoMessaggioRichiestaE",
    "dtERiferimentoDataRichiestaE",
    "codEIstitAttIdUnivAttTipoIdUnivocoE",
    "codEIstitAttIdUnivAttCodiceIdUnivocoE",
    "deEIstitAttDenominazioneAttestanteE",
    "codEIstitAttCodiceUnitOperAttestanteE",
    "deEIstitAttDenomUnitOperAttestanteE",
    "deEIstitAttIndirizzoAttestanteE",
    "deEIstitAttCivicoAttestanteE",
    "codEIstitAttCapAttestanteE",
    "deEIstitAttLocalitaAttestanteE",
    "deEIstitAttProvinciaAttestanteE",
    "codEIstitAttNazioneAttestanteE",
    "codEEnteBenefIdUnivBenefTipoIdUnivocoE",
    "codEEnteBenefIdUnivBenefCodiceIdUnivocoE",
    "deEEnteBenefDenominazioneBeneficiarioE",
    "codEEnteBenefCodiceUnitOperBeneficiarioE",
    "deEEnteBenefDenomUnitOperBeneficiarioE",
    "deEEnteBenefIndirizzoBeneficiarioE",
    "deEEnteBenefCivicoBeneficiarioE",
    "codEEnteBenefCapBeneficiarioE",
    "deEEnteBenefLocalitaBeneficiarioE",
    "deEEnteBenefProvinciaBeneficiarioE",
    "codEEnteBenefNazioneBeneficiarioE",
    "codESoggVersIdUnivVersTipoIdUnivocoE",
    "codESoggVersIdUnivVersCodiceIdUnivocoE",
    "codESoggVersAnagraficaVersanteE",
    "deESoggVersIndirizzoVersanteE",
    "deESoggVersCivicoVersanteE",
    "codESoggVersCapVersanteE",
    "deESoggVersLocalitaVersanteE",
    "deESoggVersProvinciaVersanteE",
    "codESoggVersNazioneVersanteE",
    "deESoggVersEmailVersanteE",
    "codESoggPagIdUnivPagTipoIdUnivocoE",
    "codESoggPagIdUnivPagCodiceIdUnivocoE",
    "codESoggPagAnagraficaPagatoreE",
    "deESoggPagIndirizzoPagatoreE",
    "deESoggPagCivicoPagatoreE",
    "codESoggPagCapPagatoreE",
    "deESoggPagLocalitaPagatoreE",
    "deESoggPagProvinciaPagatoreE",
    "codESoggPagNazionePagatoreE",
    "deESoggPagEmailPagatoreE",
    "codEDatiPagCodiceEsitoPagamentoE",
    "numEDatiPagImportoTotalePagatoE",
    "codEDatiPagIdUnivocoVersamentoE",
    "codEDatiPagCodiceContestoPagamentoE",
    "numEDatiPagDatiSingPagSingoloImportoPagatoE",
    "deEDatiPagDatiSingPagEsitoSingoloPagamentoE",
    "dtEDatiPagDatiSingPagDataEsitoSingoloPagamentoE",
    "codEDatiPagDatiSingPagIdUnivocoRiscossE",
    "deEDatiPagDatiSingPagCausaleVersamentoE",
    "deEDatiPagDatiSingPagDatiSpecificiRiscossioneE",
    "codTipoDovutoE",
    "dtAcquisizioneE",
];

/// R block: the settlement flow (FdR) row.
pub const R_COLUMNS: [&str; 19] = [
    "versioneOggettoR",
    "codIdentificativoFlussoR",
    "dtDataOraFlussoR",
    "codIdentificativoUnivocoRegolamentoR",
    "dtDataRegolamentoR",
    "codIstMittIdUnivMittTipoIdentificativoUnivocoR",
    "codIstMittIdUnivMittCodiceIdentificativoUnivocoR",
    "deIstMittDenominazioneMittenteR",
    "codIstRicevIdUnivRicevTipoIdentificativoUnivocoR",
    "codIstRicevIdUnivRicevCodiceIdentificativoUnivocoR",
    "deIstRicevDenominazioneRiceventeR",
    "numNumeroTotalePagamentiR",
    "numImportoTotalePagamentiR",
    "codDatiSingPagamIdentificativoUnivocoVersamentoR",
    "codDatiSingPagamIdentificativoUnivocoRiscossioneR",
    "numDatiSingPagamSingoloImportoPagatoR",
    "codDatiSingPagamCodiceEsitoSingoloPagamentoR",
    "dtDatiSingPagamDataEsitoSingoloPagamentoR",
    "dtAcquisizioneR",
];

/// T block of 1.0: the treasury movement, with the bank CSV tags.
pub const T_COLUMNS_1_0: [&str; 34] = [
    "codAbiT",
    "codCabT",
    "codContoTesoreria",
    "codDivisaT",
    "dtDataContabileT",
    "dtDataValutaT",
    "numImportoTesoreria",
    "codSegnoT",
    "deCausaleT",
    "codNumeroAssegnoT",
    "codRiferimentoBancaT",
    "codRiferimentoClienteT",
    "dtDataOrdineT",
    "deDescrizioneOrdinanteT",
    "codBi2T",
    "codBe1T",
    "codIb1T",
    "codIb2T",
    "codIb4T",
    "codTidT",
    "codDteT",
    "codDtnT",
    "codEriT",
    "codIm2T",
    "codMa2T",
    "codRi3T",
    "codOr1T",
    "codSc2T",
    "codTr1T",
    "codSecT",
    "codIorT",
    "codIdUnivocoFlussoT",
    "codIdUnivocoVersamentoT",
    "dtAcquisizioneT",
];

/// T block of 1.1 and 1.2; 1.3 and 1.4 add [`T_SOSPESO_COLUMNS`].
pub const T_COLUMNS: [&str; 26] = [
    "codAbiT",
    "codCabT",
    "codContoTesoreria",
    "codDivisaT",
    "dtDataContabileT",
    "dtDataValutaT",
    "numImportoTesoreria",
    "codSegnoT",
    "deCausaleT",
    "codNumeroAssegnoT",
    "codRiferimentoBancaT",
    "codRiferimentoClienteT",
    "dtDataOrdineT",
    "deDescrizioneOrdinanteT",
    "codOr1T",
    "codIdUnivocoFlussoT",
    "codIdUnivocoVersamentoT",
    "dtAcquisizioneT",
    "deAnnoBollettaT",
    "codBollettaT",
    "codIdDominioT",
    "dtRicezioneT",
    "deAnnoDocumentoT",
    "codDocumentoT",
    "deAnnoProvvisorioT",
    "codProvvisorioT",
];

/// Added to the T block by 1.3 and 1.4.
pub const T_SOSPESO_COLUMNS: [&str; 2] =
    ["dt_effettiva_sospeso_t", "codice_gestionale_provvisorio_t"];

/// Added to the E block by 1.2 and later.
pub const E_BILANCIO_COLUMN: &str = "bilancioE";

/// Every version ends with these.
pub const TAIL_COLUMNS: [&str; 2] = ["classificazioneCompletezza", "dtDataUltimoAggiornamento"];

/// 1.4 ends with these, after [`TAIL_COLUMNS`].
pub const PA1_COLUMNS: [&str; 5] = [
    "cod_tipo_dovuto_pa1",
    "de_tipo_dovuto_pa1",
    "cod_tassonomico_dovuto_pa1",
    "cod_fiscale_pa1",
    "de_nome_pa1",
];

/// 1.0 starts each block with the id of the flow MyPivot loaded it from.
const FLOW_ID_COLUMNS: [&str; 4] = [
    "mygovManageFlussoIdI",
    "mygovManageFlussoIdE",
    "mygovManageFlussoIdR",
    "mygovManageFlussoIdT",
];

/// A tracciato version (MyPivot's `versioneTracciato`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TracciatoVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
    V1_4,
}

impl TracciatoVersion {
    pub const ALL: [TracciatoVersion; 5] =
        [Self::V1_0, Self::V1_1, Self::V1_2, Self::V1_3, Self::V1_4];

    /// `1.4`, or `1_4` as in the file names.
    pub fn parse(s: &str) -> Result<Self, MypivotExportError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s || v.name_suffix() == s)
            .ok_or_else(|| MypivotExportError::UnknownVersion(s.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
            Self::V1_3 => "1.3",
            Self::V1_4 => "1.4",
        }
    }

    /// `1_0` … `1_4`, the form in the file name.
    pub fn name_suffix(self) -> &'static str {
        match self {
            Self::V1_0 => "1_0",
            Self::V1_1 => "1_1",
            Self::V1_2 => "1_2",
            Self::V1_3 => "1_3",
            Self::V1_4 => "1_4",
        }
    }

    /// Whether the layout has the I block: always in 1.0 and 1.1; from 1.2 only for an entity
    /// that sends import pagati (MyPivot's `flg_pagati`).
    pub fn has_notifications(self, entity_sends_notifications: bool) -> bool {
        matches!(self, Self::V1_0 | Self::V1_1) || entity_sends_notifications
    }

    /// The header, in order: 145 (1.0), 133 (1.1), 113 or 134 (1.2), 115 or 136 (1.3), 120 or
    /// 141 (1.4) columns, the larger with the I block.
    pub fn columns(self, entity_sends_notifications: bool) -> Vec<&'static str> {
        let with_i = self.has_notifications(entity_sends_notifications);
        let ids = self == Self::V1_0;
        let mut c = Vec::with_capacity(145);
        let block = |c: &mut Vec<&'static str>, id: usize, cols: &[&'static str]| {
            if ids {
                c.push(FLOW_ID_COLUMNS[id]);
            }
            c.extend_from_slice(cols);
        };
        if with_i {
            block(&mut c, 0, &I_COLUMNS);
        }
        block(&mut c, 1, &E_COLUMNS);
        if !matches!(self, Self::V1_0 | Self::V1_1) {
            c.push(E_BILANCIO_COLUMN);
        }
        block(&mut c, 2, &R_COLUMNS);
        match self {
            Self::V1_0 => block(&mut c, 3, &T_COLUMNS_1_0),
            Self::V1_1 | Self::V1_2 => c.extend_from_slice(&T_COLUMNS),
            Self::V1_3 | Self::V1_4 => {
                c.extend_from_slice(&T_COLUMNS);
                c.extend_from_slice(&T_SOSPESO_COLUMNS);
            }
        }
        c.extend_from_slice(&TAIL_COLUMNS);
        if self == Self::V1_4 {
            c.extend_from_slice(&PA1_COLUMNS);
        }
        c
    }

    /// Whether MyPivot exports `class` in this version (DOPPI: 1.0 and 1.4 only; 1.2 without
    /// the I block refuses the classes that need a notification).
    pub fn check_class(
        self,
        class: &str,
        with_notifications: bool,
    ) -> Result<(), MypivotExportError> {
        if !CLASSES.contains(&class) {
            return Err(MypivotExportError::UnknownClass(class.to_owned()));
        }
        let refused = (class == DOPPI && !matches!(self, Self::V1_0 | Self::V1_4))
            || (self == Self::V1_2 && !with_notifications && IUD_CLASSES.contains(&class));
        if refused {
            return Err(MypivotExportError::ClassNotInVersion {
                class: class.to_owned(),
                version: self,
            });
        }
        Ok(())
    }
}

impl fmt::Display for TracciatoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TracciatoVersion {
    type Err = MypivotExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A version and whether it has the I block: what fixes the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExportLayout {
    pub version: TracciatoVersion,
    pub with_notifications: bool,
}

impl ExportLayout {
    pub fn new(version: TracciatoVersion, entity_sends_notifications: bool) -> ExportLayout {
        ExportLayout {
            version,
            with_notifications: version.has_notifications(entity_sends_notifications),
        }
    }

    pub fn columns(self) -> Vec<&'static str> {
        self.version.columns(self.with_notifications)
    }
}

/// Why a row cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum MypivotExportError {
    #[error("unknown tracciato version {0:?} (supported: 1.0, 1.1, 1.2, 1.3, 1.4)")]
    UnknownVersion(String),
    #[error("unknown classificazioneCompletezza {0:?} (known: {known})", known = CLASSES.join(", "))]
    UnknownClass(String),
    /// MyPivot refuses the whole export in this case; the caller may skip such rows instead.
    #[error("class {class} cannot be exported in tracciato {version}")]
    ClassNotInVersion {
        class: String,
        version: TracciatoVersion,
    },
    #[error(
        "a row needs at least one of the notification, the receipt, the flow row or the movement"
    )]
    EmptyRow,
    #[error("flow {iuf}: row {index} asked, the flow has {rows} rows")]
    NoSuchFlowRow {
        iuf: String,
        index: usize,
        rows: usize,
    },
    /// The receipt cannot be read or mapped (see [`MypayExportError`]).
    #[error(transparent)]
    Receipt(#[from] MypayExportError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}

/// When the hub acquired each source (MyPivot's `dtAcquisizione*`), when it knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acquired {
    pub notification: Option<DateTime<Utc>>,
    /// Defaults to the receipt's `received_at`.
    pub receipt: Option<DateTime<Utc>>,
    pub report: Option<DateTime<Utc>>,
    /// Also `dtRicezioneT`.
    pub movement: Option<DateTime<Utc>>,
}

/// One row of the export: a payment as each source saw it, and its class.
#[derive(Debug, Clone, Copy)]
pub struct ReconciliationRow<'a> {
    /// I block (written only in layouts that have it).
    pub notification: Option<&'a Notification>,
    /// E block: the receipt, mapped as MyPay's export maps it.
    pub receipt: Option<ExportReceipt<'a>>,
    /// The receipt's transfer (`idTransfer`) the row is about; `None`: the first paid to the
    /// entity, as MyPay's export picks it.
    pub transfer_index: Option<u8>,
    /// R block: the flow and the index of the row in `Report::payments`.
    pub report: Option<(&'a Report, usize)>,
    /// T block.
    pub movement: Option<&'a TreasuryMovement>,
    /// `classificazioneCompletezza`, one of [`CLASSES`].
    pub class: &'a str,
    /// `dtDataUltimoAggiornamento` (written as its Rome date).
    pub updated_at: DateTime<Utc>,
    pub acquired: Acquired,
    /// `de_tipo_dovuto_pa1` (1.4): the name of the receipt's debt type, when the registry has it.
    pub debt_type_name: Option<&'a str>,
}

/// Whether some block maps column `name` (every label of every layout must be).
#[cfg(test)]
pub(super) fn is_mapped(name: &str) -> bool {
    let n = super::tests::notification();
    let row = ReconciliationRow {
        notification: Some(&n),
        receipt: None,
        transfer_index: None,
        report: None,
        movement: None,
        class: "IUD_NO_RT",
        updated_at: DateTime::<Utc>::MIN_UTC,
        acquired: Acquired::default(),
        debt_type_name: None,
    };
    let cells = Cells {
        row: &row,
        receipt: None,
        receipt_acquired: None,
        report: None,
        updated_on: String::new(),
    };
    cells.cell(name).is_some()
}

/// `<codIPA>-<exportId>_ESTRAZIONE_RICONCILIAZIONE_<yyyyMMddHHmmss>-<1_x>` (MyPivot's
/// `nomeFileLoad`; `exportId` is its booking id); `at` is Rome local time.
pub fn file_stem(
    version: TracciatoVersion,
    entity_ipa: &str,
    export_id: &str,
    at: NaiveDateTime,
) -> String {
    format!(
        "{entity_ipa}-{export_id}_ESTRAZIONE_RICONCILIAZIONE_{}-{}",
        at.format("%Y%m%d%H%M%S"),
        version.name_suffix()
    )
}

/// Writes one export CSV: the header on creation, then one record per pushed row.
///
/// A row is built whole before any byte is written, so a row that cannot be exported leaves
/// the output as it was; an I/O error may leave a partial record, and the export should then
/// be dropped.
#[derive(Debug)]
pub struct ReconciliationWriter<W: Write> {
    layout: ExportLayout,
    columns: Vec<&'static str>,
    out: W,
    rows: u64,
    buf: Vec<u8>,
}

impl<W: Write> ReconciliationWriter<W> {
    /// Starts the export with its header; `entity_sends_notifications` (MyPivot's `flg_pagati`)
    /// picks the layout with the I block from 1.2 on.
    pub fn new(
        mut out: W,
        version: TracciatoVersion,
        entity_sends_notifications: bool,
    ) -> Result<Self, MypivotExportError> {
        let layout = ExportLayout::new(version, entity_sends_notifications);
        let columns = layout.columns();
        let mut buf = Vec::with_capacity(8192);
        write_record(&mut buf, columns.iter().copied());
        out.write_all(&buf)?;
        Ok(Self {
            layout,
            columns,
            out,
            rows: 0,
            buf,
        })
    }

    pub fn layout(&self) -> ExportLayout {
        self.layout
    }

    /// Data rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row.
    pub fn push(&mut self, row: &ReconciliationRow<'_>) -> Result<(), MypivotExportError> {
        let cells = Cells::of(self.layout, row)?;
        let values = cells.values(&self.columns);
        self.buf.clear();
        write_record(&mut self.buf, values.iter().map(|v| v.as_ref()));
        self.out.write_all(&self.buf)?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, MypivotExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record as Talend's CSV writer writes it for MyPivot: every field quoted, `"` and `\`
/// escaped with `\`, `\r\n`.
fn write_record<'s>(buf: &mut Vec<u8>, fields: impl IntoIterator<Item = &'s str>) {
    mypay_export::write_quoted_record(buf, fields, Some(b'\\'), b"\r\n");
}

fn rome_date(t: DateTime<Utc>) -> String {
    t.with_timezone(&Rome).format("%Y-%m-%d").to_string()
}

fn rome_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Rome)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The values of one row, by column label.
struct Cells<'a> {
    row: &'a ReconciliationRow<'a>,
    /// MyPay's 1.3 row of the receipt: [`mypay_export::BASE_COLUMNS`], the receipt columns,
    /// `bilancio`, `cod_fiscale_pa1`, `de_nome_pa1`, `cod_tassonomico_dovuto_pa1`.
    receipt: Option<Vec<String>>,
    receipt_acquired: Option<String>,
    report: Option<(&'a Report, &'a snodo_core::settlement::SettlementPayment)>,
    updated_on: String,
}

/// Positions in [`Cells::receipt`] past the 64 base columns.
const RECEIPT_BILANCIO: usize = 70;
const RECEIPT_PA1_FISCAL_CODE: usize = 71;
const RECEIPT_PA1_NAME: usize = 72;
const RECEIPT_PA1_CATEGORY: usize = 73;

impl<'a> Cells<'a> {
    fn of(
        layout: ExportLayout,
        row: &'a ReconciliationRow<'a>,
    ) -> Result<Cells<'a>, MypivotExportError> {
        layout
            .version
            .check_class(row.class, layout.with_notifications)?;
        if row.notification.is_none()
            && row.receipt.is_none()
            && row.report.is_none()
            && row.movement.is_none()
        {
            return Err(MypivotExportError::EmptyRow);
        }
        let (receipt, receipt_acquired) = match &row.receipt {
            Some(r) => {
                let cells = mypay_export::receipt_row(r, None, row.transfer_index)?;
                let acquired = match row.acquired.receipt {
                    Some(t) => Some(rome_date(t)),
                    // receipt_row checked it is RFC 3339.
                    None => mypay_export::received_at_rome(r.received_at)
                        .map(|t| t.format("%Y-%m-%d").to_string()),
                };
                (Some(cells), acquired)
            }
            None => (None, None),
        };
        let report = match row.report {
            Some((report, index)) => Some((
                report,
                report
                    .payments
                    .get(index)
                    .ok_or_else(|| MypivotExportError::NoSuchFlowRow {
                        iuf: report.flow.iuf.as_str().to_owned(),
                        index,
                        rows: report.payments.len(),
                    })?,
            )),
            None => None,
        };
        Ok(Cells {
            row,
            receipt,
            receipt_acquired,
            report,
            updated_on: rome_date(row.updated_at),
        })
    }

    /// Every value of `columns`, in order.
    fn values(&self, columns: &[&'static str]) -> Vec<Cow<'_, str>> {
        columns
            .iter()
            .map(|c| self.cell(c).unwrap_or(Cow::Borrowed("")))
            .collect()
    }

    /// The value of column `name` (empty when the row lacks the block or the hub has no value);
    /// `None` for a label no version has.
    fn cell(&self, name: &str) -> Option<Cow<'_, str>> {
        if FLOW_ID_COLUMNS.contains(&name) {
            // MyPivot's internal ids of the flows it loaded.
            return Some(Cow::Borrowed(""));
        }
        self.notification_cell(name)
            .or_else(|| self.receipt_cell(name))
            .or_else(|| self.report_cell(name))
            .or_else(|| self.movement_cell(name))
            .or_else(|| self.tail_cell(name))
    }

    fn notification_cell(&self, name: &str) -> Option<Cow<'_, str>> {
        let i = I_COLUMNS.iter().position(|c| *c == name)?;
        let Some(n) = self.row.notification else {
            return Some(Cow::Borrowed(""));
        };
        let p = &n.payer;
        let opt = |o: &'a Option<String>| Cow::Borrowed(o.as_deref().unwrap_or(""));
        Some(match i {
            0 => Cow::Borrowed(n.iud.as_str()),
            1 => Cow::Borrowed(n.iuv.as_str()),
            2 => Cow::Owned(p.kind.to_string()),
            3 => Cow::Borrowed(p.id.as_str()),
            4 => Cow::Borrowed(p.name.as_str()),
            5 => opt(&p.street),
            6 => opt(&p.civic),
            7 => opt(&p.postal_code),
            8 => opt(&p.city),
            9 => opt(&p.province),
            10 => opt(&p.country),
            11 => opt(&p.email),
            12 => Cow::Owned(n.execution_date.format("%Y-%m-%d").to_string()),
            13 => Cow::Borrowed(n.payment_type.as_str()),
            14 => Cow::Owned(n.amount.to_string()),
            15 => n
                .commission
                .map_or(Cow::Borrowed(""), |c| Cow::Owned(c.to_string())),
            16 => Cow::Borrowed(n.causale.as_str()),
            17 => Cow::Borrowed(n.dati_specifici.as_str()),
            18 => Cow::Borrowed(n.debt_type.as_str()),
            19 => opt(&n.bilancio),
            _ => self
                .row
                .acquired
                .notification
                .map_or(Cow::Borrowed(""), |t| Cow::Owned(rome_date(t))),
        })
    }

    fn receipt_cell(&self, name: &str) -> Option<Cow<'_, str>> {
        let value = |i: usize| {
            Cow::Borrowed(
                self.receipt
                    .as_ref()
                    .and_then(|r| r.get(i))
                    .map_or("", String::as_str),
            )
        };
        if let Some(i) = E_COLUMNS.iter().position(|c| *c == name) {
            // The first 64 are MyPay's export columns, in its order; then dtAcquisizioneE.
            return Some(if i < mypay_export::BASE_COLUMNS.len() {
                value(i)
            } else {
                Cow::Borrowed(self.receipt_acquired.as_deref().unwrap_or(""))
            });
        }
        Some(match name {
            E_BILANCIO_COLUMN => value(RECEIPT_BILANCIO),
            "cod_tipo_dovuto_pa1" => Cow::Borrowed(
                self.row
                    .receipt
                    .as_ref()
                    .and_then(|r| r.debt_type)
                    .unwrap_or(""),
            ),
            "de_tipo_dovuto_pa1" => Cow::Borrowed(
                self.row
                    .debt_type_name
                    .filter(|_| self.receipt.is_some())
                    .unwrap_or(""),
            ),
            "cod_tassonomico_dovuto_pa1" => value(RECEIPT_PA1_CATEGORY),
            "cod_fiscale_pa1" => value(RECEIPT_PA1_FISCAL_CODE),
            "de_nome_pa1" => value(RECEIPT_PA1_NAME),
            _ => return None,
        })
    }

    fn report_cell(&self, name: &str) -> Option<Cow<'_, str>> {
        let i = R_COLUMNS.iter().position(|c| *c == name)?;
        let Some((report, p)) = self.report else {
            return Some(Cow::Borrowed(""));
        };
        let f = &report.flow;
        let opt = |o: &'a Option<String>| Cow::Borrowed(o.as_deref().unwrap_or(""));
        Some(match i {
            // What the hub's own fdr-xml declares: the flow's version is not kept.
            0 => Cow::Borrowed("1.0"),
            1 => Cow::Borrowed(f.iuf.as_str()),
            2 => Cow::Owned(rome_time(f.flow_time)),
            3 => Cow::Borrowed(f.regulation_id.as_str()),
            4 => Cow::Owned(f.regulation_date.format("%Y-%m-%d").to_string()),
            5 => Cow::Borrowed(f.sender.kind.xml_code()),
            6 => Cow::Borrowed(f.sender.id.as_str()),
            7 => opt(&f.sender.name),
            // The receiver is always a legal person.
            8 => Cow::Borrowed("G"),
            9 => Cow::Borrowed(f.receiver.id.as_str()),
            10 => opt(&f.receiver.name),
            11 => Cow::Owned(f.declared_count.to_string()),
            12 => Cow::Owned(f.declared_amount.to_string()),
            13 => Cow::Borrowed(p.iuv.as_str()),
            14 => Cow::Borrowed(p.iur.as_str()),
            15 => Cow::Owned(p.amount.to_string()),
            16 => Cow::Owned(p.status.esito().to_string()),
            17 => Cow::Owned(p.date.format("%Y-%m-%d").to_string()),
            _ => self
                .row
                .acquired
                .report
                .map_or(Cow::Borrowed(""), |t| Cow::Owned(rome_date(t))),
        })
    }

    fn movement_cell(&self, name: &str) -> Option<Cow<'_, str>> {
        let known = T_COLUMNS_1_0.contains(&name)
            || T_COLUMNS.contains(&name)
            || T_SOSPESO_COLUMNS.contains(&name);
        if !known {
            return None;
        }
        let Some(m) = self.row.movement else {
            return Some(Cow::Borrowed(""));
        };
        let date = |d: Option<chrono::NaiveDate>| {
            d.map_or(Cow::Borrowed(""), |d| {
                Cow::Owned(d.format("%Y-%m-%d").to_string())
            })
        };
        let payer = Cow::Borrowed(m.payer.as_deref().unwrap_or(""));
        let acquired = self.row.acquired.movement;
        Some(match name {
            "dtDataContabileT" => date(m.accounting_date),
            "dtDataValutaT" => date(m.value_date),
            "numImportoTesoreria" => Cow::Owned(m.amount.to_string()),
            "deCausaleT" => Cow::Borrowed(m.causale.as_str()),
            "deDescrizioneOrdinanteT" | "codOr1T" => payer,
            "codIdUnivocoFlussoT" => Cow::Borrowed(m.reference.iuf().map_or("", |i| i.as_str())),
            "codIdUnivocoVersamentoT" => Cow::Borrowed(m.reference.iuv().unwrap_or("")),
            "dtAcquisizioneT" => acquired.map_or(Cow::Borrowed(""), |t| Cow::Owned(rome_date(t))),
            "dtRicezioneT" => acquired.map_or(Cow::Borrowed(""), |t| Cow::Owned(rome_time(t))),
            "deAnnoBollettaT" => Cow::Owned(m.year.to_string()),
            "codBollettaT" => Cow::Borrowed(m.bill.as_str()),
            // The bank's CSV fields (ABI, CAB, account, currency, sign, cheque, references,
            // order date, CBI tags), OPI's domain code, documents and provisional receipts:
            // not in the hub's movement.
            _ => Cow::Borrowed(""),
        })
    }

    fn tail_cell(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "classificazioneCompletezza" => Cow::Borrowed(self.row.class),
            "dtDataUltimoAggiornamento" => Cow::Borrowed(self.updated_on.as_str()),
            _ => return None,
        })
    }
}
