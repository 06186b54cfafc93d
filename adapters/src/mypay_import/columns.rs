//! Column layout of each flow version (TRACCIATI.md §1).
//!
//! Columns 0–18 are common to every version; then, by version:
//!
//! | version | 19 | 20 | 21 | 22–33 | 34 |
//! |---|---|---|---|---|---|
//! | 1_0, 1_1 | azione | | | | |
//! | 1_2 | bilancio | azione | | | |
//! | 1_3 | bilancio | flgGeneraIuv | azione | | |
//! | 1_4 | bilancio | flgGeneraIuv | flagMultiBeneficiario | secondary entity | azione |

use std::fmt;

use snodo_core::dovuto::{FlowVersion, RawDovuto};

use crate::csv::FieldSource;

/// Most columns of any version (1_4).
const MAX_COLUMNS: usize = 35;

/// A row whose column count differs from its version's: reject it as `PAA_IMPORT_SINTASSI_CSV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnCountError {
    TooMany {
        version: FlowVersion,
        got: usize,
        expected: usize,
    },
    TooFew {
        version: FlowVersion,
        got: usize,
        expected: usize,
    },
}

impl fmt::Display for ColumnCountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, version, got, expected) = match *self {
            Self::TooMany {
                version,
                got,
                expected,
            } => ("many", version, got, expected),
            Self::TooFew {
                version,
                got,
                expected,
            } => ("few", version, got, expected),
        };
        write!(
            f,
            "Too {what} columns: got {got}, version {} has {expected}",
            version.as_str()
        )
    }
}

impl std::error::Error for ColumnCountError {}

/// Maps a row's fields onto a [`RawDovuto`] by `version`; fields the version lacks stay empty.
///
/// The row must have exactly [`FlowVersion::column_count`] fields.
pub fn map_row<'a, F: FieldSource<'a>>(
    version: FlowVersion,
    fields: F,
) -> Result<RawDovuto<'a>, ColumnCountError> {
    let got = fields.field_count();
    let expected = version.column_count();
    if got > expected {
        return Err(ColumnCountError::TooMany {
            version,
            got,
            expected,
        });
    }
    if got < expected {
        return Err(ColumnCountError::TooFew {
            version,
            got,
            expected,
        });
    }
    let f = |i| fields.field(i);
    let mut raw = RawDovuto {
        iud: f(0),
        cod_iuv: f(1),
        tipo_identificativo_univoco: f(2),
        codice_identificativo_univoco: f(3),
        anagrafica_pagatore: f(4),
        indirizzo_pagatore: f(5),
        civico_pagatore: f(6),
        cap_pagatore: f(7),
        localita_pagatore: f(8),
        provincia_pagatore: f(9),
        nazione_pagatore: f(10),
        mail_pagatore: f(11),
        data_esecuzione_pagamento: f(12),
        importo_dovuto: f(13),
        commissione_carico_pa: f(14),
        tipo_dovuto: f(15),
        tipo_versamento: f(16),
        causale_versamento: f(17),
        dati_specifici_riscossione: f(18),
        ..RawDovuto::default()
    };
    match version {
        FlowVersion::V1_0 | FlowVersion::V1_1 => {
            raw.azione = f(19);
        }
        FlowVersion::V1_2 => {
            raw.bilancio = f(19);
            raw.azione = f(20);
        }
        FlowVersion::V1_3 => {
            raw.bilancio = f(19);
            raw.flg_genera_iuv = f(20);
            raw.azione = f(21);
        }
        FlowVersion::V1_4 => {
            raw.bilancio = f(19);
            raw.flg_genera_iuv = f(20);
            raw.flag_multi_beneficiario = f(21);
            raw.codice_fiscale_ente_secondario = f(22);
            raw.denominazione_ente_secondario = f(23);
            raw.iban_accredito_ente_secondario = f(24);
            raw.indirizzo_ente_secondario = f(25);
            raw.civico_ente_secondario = f(26);
            raw.cap_ente_secondario = f(27);
            raw.localita_ente_secondario = f(28);
            raw.provincia_ente_secondario = f(29);
            raw.nazione_ente_secondario = f(30);
            raw.dati_specifici_riscossione_ente_secondario = f(31);
            raw.causale_versamento_ente_secondario = f(32);
            raw.importo_versamento_ente_secondario = f(33);
            raw.azione = f(34);
        }
    }
    Ok(raw)
}

/// A row laid out back in its version's column order: the inverse of [`map_row`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowFields<'a> {
    fields: [&'a str; MAX_COLUMNS],
    len: usize,
}

impl<'a> RowFields<'a> {
    pub fn as_slice(&self) -> &[&'a str] {
        &self.fields[..self.len]
    }
}

impl<'a> FieldSource<'a> for &RowFields<'a> {
    fn field_count(&self) -> usize {
        self.len
    }
    fn field(&self, index: usize) -> &'a str {
        self.as_slice().get(index).copied().unwrap_or("")
    }
}

/// Lays a [`RawDovuto`] out in `version`'s column order (fields the version lacks are dropped).
pub fn unmap_row<'a>(version: FlowVersion, raw: &RawDovuto<'a>) -> RowFields<'a> {
    let mut fields = [""; MAX_COLUMNS];
    let common = [
        raw.iud,
        raw.cod_iuv,
        raw.tipo_identificativo_univoco,
        raw.codice_identificativo_univoco,
        raw.anagrafica_pagatore,
        raw.indirizzo_pagatore,
        raw.civico_pagatore,
        raw.cap_pagatore,
        raw.localita_pagatore,
        raw.provincia_pagatore,
        raw.nazione_pagatore,
        raw.mail_pagatore,
        raw.data_esecuzione_pagamento,
        raw.importo_dovuto,
        raw.commissione_carico_pa,
        raw.tipo_dovuto,
        raw.tipo_versamento,
        raw.causale_versamento,
        raw.dati_specifici_riscossione,
    ];
    fields[..common.len()].copy_from_slice(&common);
    let tail: &[&'a str] = match version {
        FlowVersion::V1_0 | FlowVersion::V1_1 => &[raw.azione],
        FlowVersion::V1_2 => &[raw.bilancio, raw.azione],
        FlowVersion::V1_3 => &[raw.bilancio, raw.flg_genera_iuv, raw.azione],
        FlowVersion::V1_4 => &[
            raw.bilancio,
            raw.flg_genera_iuv,
            raw.flag_multi_beneficiario,
            raw.codice_fiscale_ente_secondario,
            raw.denominazione_ente_secondario,
            raw.iban_accredito_ente_secondario,
            raw.indirizzo_ente_secondario,
            raw.civico_ente_secondario,
            raw.cap_ente_secondario,
            raw.localita_ente_secondario,
            raw.provincia_ente_secondario,
            raw.nazione_ente_secondario,
            raw.dati_specifici_riscossione_ente_secondario,
            raw.causale_versamento_ente_secondario,
            raw.importo_versamento_ente_secondario,
            raw.azione,
        ],
    };
    let len = common.len() + tail.len();
    fields[common.len()..len].copy_from_slice(tail);
    RowFields { fields, len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::{CsvLimits, CsvLines};

    const ROW_1_0: &str = "IUD-1;;F;RSSMRA80A01H501U;Mario Rossi;Via Roma;1;35100;Padova;PD;IT;\
        mario@example.it;2025-12-31;10.50;;TARI;ALL;Tassa rifiuti 2025;9/0101100IM/;I";

    #[test]
    fn maps_1_0() {
        let fields: Vec<&str> = ROW_1_0.split(';').collect();
        let raw = map_row(FlowVersion::V1_0, &fields[..]).expect("20 columns");
        assert_eq!(
            raw,
            RawDovuto {
                iud: "IUD-1",
                cod_iuv: "",
                tipo_identificativo_univoco: "F",
                codice_identificativo_univoco: "RSSMRA80A01H501U",
                anagrafica_pagatore: "Mario Rossi",
                indirizzo_pagatore: "Via Roma",
                civico_pagatore: "1",
                cap_pagatore: "35100",
                localita_pagatore: "Padova",
                provincia_pagatore: "PD",
                nazione_pagatore: "IT",
                mail_pagatore: "mario@example.it",
                data_esecuzione_pagamento: "2025-12-31",
                importo_dovuto: "10.50",
                commissione_carico_pa: "",
                tipo_dovuto: "TARI",
                tipo_versamento: "ALL",
                causale_versamento: "Tassa rifiuti 2025",
                dati_specifici_riscossione: "9/0101100IM/",
                azione: "I",
                ..RawDovuto::default()
            }
        );
        // 1_1 has the same layout.
        assert_eq!(map_row(FlowVersion::V1_1, &fields[..]), Ok(raw));
    }

    #[test]
    fn maps_1_2_and_1_3() {
        let mut fields: Vec<&str> = ROW_1_0.split(';').collect();
        fields.insert(19, "<bilancio/>");
        let raw = map_row(FlowVersion::V1_2, &fields).expect("21 columns");
        assert_eq!(
            (raw.bilancio, raw.azione, raw.flg_genera_iuv),
            ("<bilancio/>", "I", "")
        );
        fields.insert(20, "true");
        let raw = map_row(FlowVersion::V1_3, &fields).expect("22 columns");
        assert_eq!(
            (
                raw.bilancio,
                raw.flg_genera_iuv,
                raw.azione,
                raw.flag_multi_beneficiario
            ),
            ("<bilancio/>", "true", "I", "")
        );
        assert_eq!(raw.dati_specifici_riscossione, "9/0101100IM/");
    }

    #[test]
    fn maps_a_real_1_4_row_with_a_secondary_entity() {
        let text = "IUD;codIuv;tipo;cf;anag;ind;civ;cap;loc;prov;naz;mail;data;imp;comm;tipoDovuto;\
            tipoVers;causale;dsr;bilancio;flgGeneraIuv;flagMultiBeneficiario;cfSec;denSec;ibanSec;\
            indSec;civSec;capSec;locSec;provSec;nazSec;dsrSec;causaleSec;impSec;azione\n\
            MB-0001;;G;01234567890;\"Ditta Bianchi; S.r.l.\";Via Verdi;12/A;30100;Venezia;VE;IT;\
            info@bianchi.it;2025-06-30;150.00;;COSAP;ALL;\"Canone \\\"COSAP\\\" 2025\";9/0301109AP/;;\
            true;true;80007580279;Comune di Treviso;IT60X0542811101000000123456;Piazza Borsa;1;\
            31100;Treviso;TV;IT;9/0301109AP/;Quota Treviso;50.00;I\n";
        let mut csv = CsvLines::new(text.as_bytes(), CsvLimits::default()).expect("header");
        let rec = csv.next_record().expect("ok").expect("a row");
        assert_eq!(rec.field_count(), 35);
        let raw = map_row(FlowVersion::V1_4, rec).expect("35 columns");
        assert_eq!(
            raw,
            RawDovuto {
                iud: "MB-0001",
                cod_iuv: "",
                tipo_identificativo_univoco: "G",
                codice_identificativo_univoco: "01234567890",
                anagrafica_pagatore: "Ditta Bianchi; S.r.l.",
                indirizzo_pagatore: "Via Verdi",
                civico_pagatore: "12/A",
                cap_pagatore: "30100",
                localita_pagatore: "Venezia",
                provincia_pagatore: "VE",
                nazione_pagatore: "IT",
                mail_pagatore: "info@bianchi.it",
                data_esecuzione_pagamento: "2025-06-30",
                importo_dovuto: "150.00",
                commissione_carico_pa: "",
                tipo_dovuto: "COSAP",
                tipo_versamento: "ALL",
                causale_versamento: "Canone \"COSAP\" 2025",
                dati_specifici_riscossione: "9/0301109AP/",
                bilancio: "",
                flg_genera_iuv: "true",
                flag_multi_beneficiario: "true",
                codice_fiscale_ente_secondario: "80007580279",
                denominazione_ente_secondario: "Comune di Treviso",
                iban_accredito_ente_secondario: "IT60X0542811101000000123456",
                indirizzo_ente_secondario: "Piazza Borsa",
                civico_ente_secondario: "1",
                cap_ente_secondario: "31100",
                localita_ente_secondario: "Treviso",
                provincia_ente_secondario: "TV",
                nazione_ente_secondario: "IT",
                dati_specifici_riscossione_ente_secondario: "9/0301109AP/",
                causale_versamento_ente_secondario: "Quota Treviso",
                importo_versamento_ente_secondario: "50.00",
                azione: "I",
                hash_documento: "",
            }
        );
        // And back.
        let back = unmap_row(FlowVersion::V1_4, &raw);
        let original: Vec<&str> = rec.fields().collect();
        assert_eq!(back.as_slice(), &original[..]);
    }

    #[test]
    fn wrong_column_counts() {
        let fields: Vec<&str> = ROW_1_0.split(';').collect();
        let e = map_row(FlowVersion::V1_2, &fields).expect_err("20 < 21");
        assert_eq!(
            e,
            ColumnCountError::TooFew {
                version: FlowVersion::V1_2,
                got: 20,
                expected: 21
            }
        );
        assert_eq!(e.to_string(), "Too few columns: got 20, version 1_2 has 21");
        let mut more = fields.clone();
        more.push("x");
        let e = map_row(FlowVersion::V1_0, &more).expect_err("21 > 20");
        assert_eq!(
            e.to_string(),
            "Too many columns: got 21, version 1_0 has 20"
        );
        let e = map_row(FlowVersion::V1_4, &fields).expect_err("20 < 35");
        assert_eq!(e.to_string(), "Too few columns: got 20, version 1_4 has 35");
    }

    #[test]
    fn unmap_inverts_map_for_every_version() {
        for version in FlowVersion::ALL {
            let owned: Vec<String> = (0..version.column_count())
                .map(|i| format!("c{i}"))
                .collect();
            let raw = map_row(version, &owned).expect("right count");
            let back = unmap_row(version, &raw);
            let expected: Vec<&str> = owned.iter().map(String::as_str).collect();
            assert_eq!(
                back.as_slice(),
                &expected[..],
                "version {}",
                version.as_str()
            );
            assert_eq!(raw.azione, format!("c{}", version.column_count() - 1));
        }
    }
}
