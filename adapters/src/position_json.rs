//! `position-json`: one debt position per message (Kafka, later REST), with the MyPay flow's
//! fields and actions, and the outcome the hub answers for each.
//!
//! The fields carry the MyPay 1_4 column names (TRACCIATI.md §1) so an entity that already writes
//! import flows maps nothing new, and they go through the same [`validate`] as a CSV row: the same
//! input is rejected with the same MyPay codes whatever the transport. Values are JSON strings as
//! in the CSV (amounts like `"120.50"`: money never travels as a JSON float); the two flags may
//! also be JSON booleans. Unknown fields are rejected, so a typo never silently drops data.
//! Described by `docs/position.schema.json`.

use serde::{Deserialize, Serialize};
use snodo_core::dovuto::{
    validate, Credit, DovutoRow, EntityRules, FlowVersion, MetaEntry, RawDovuto, RejectCode,
    Rejection, StampDuty, TransferSpec,
};
use snodo_core::{Amount, EntityFiscalCode, Iban};

/// Name of this format in pipeline configuration (`decode = "position-json"`).
pub const POSITION_JSON: &str = "position-json";

/// A message that is not a valid position: the IUD when one could be read, and every rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub iud: Option<String>,
    pub rejections: Vec<Rejection>,
}

/// A flag: `true`/`false` as a JSON boolean or as the CSV's text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn as_str(&self) -> &str {
        match self {
            Self::Bool(true) => "true",
            Self::Bool(false) => "false",
            Self::Text(s) => s,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Message {
    #[serde(rename = "IUD")]
    iud: Option<String>,
    cod_iuv: Option<String>,
    tipo_identificativo_univoco: Option<String>,
    codice_identificativo_univoco: Option<String>,
    anagrafica_pagatore: Option<String>,
    indirizzo_pagatore: Option<String>,
    civico_pagatore: Option<String>,
    cap_pagatore: Option<String>,
    localita_pagatore: Option<String>,
    provincia_pagatore: Option<String>,
    nazione_pagatore: Option<String>,
    mail_pagatore: Option<String>,
    data_esecuzione_pagamento: Option<String>,
    importo_dovuto: Option<String>,
    commissione_carico_pa: Option<String>,
    tipo_dovuto: Option<String>,
    tipo_versamento: Option<String>,
    causale_versamento: Option<String>,
    dati_specifici_riscossione: Option<String>,
    bilancio: Option<String>,
    flg_genera_iuv: Option<Flag>,
    flag_multi_beneficiario: Option<Flag>,
    codice_fiscale_ente_secondario: Option<String>,
    denominazione_ente_secondario: Option<String>,
    iban_accredito_ente_secondario: Option<String>,
    indirizzo_ente_secondario: Option<String>,
    civico_ente_secondario: Option<String>,
    cap_ente_secondario: Option<String>,
    localita_ente_secondario: Option<String>,
    provincia_ente_secondario: Option<String>,
    nazione_ente_secondario: Option<String>,
    dati_specifici_riscossione_ente_secondario: Option<String>,
    causale_versamento_ente_secondario: Option<String>,
    importo_versamento_ente_secondario: Option<String>,
    azione: Option<String>,
    /// The whole transfer list (multi-beneficiary up to 5, postal accounts, stamps).
    transfers: Option<Vec<TransferMessage>>,
    /// The document a stamp-duty debt type's stamp is for (base64 SHA-256).
    hash_documento: Option<String>,
}

/// One transfer of `transfers`: the entity's own first (no `codiceFiscaleEnte`), then the
/// other beneficiaries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TransferMessage {
    codice_fiscale_ente: Option<String>,
    denominazione_ente: Option<String>,
    iban_accredito: Option<String>,
    iban_postale: Option<String>,
    marca_da_bollo: Option<StampMessage>,
    importo: Option<String>,
    causale_versamento: Option<String>,
    dati_specifici_riscossione: Option<String>,
    #[serde(default)]
    metadata: Vec<MetaMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StampMessage {
    tipo_bollo: Option<String>,
    hash_documento: String,
    provincia_residenza: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaMessage {
    key: String,
    value: String,
}

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

fn f(v: &Option<Flag>) -> &str {
    v.as_ref().map(Flag::as_str).unwrap_or("")
}

/// Decodes and validates one message. `key` is the message key: when present it must be the IUD,
/// so a partitioner keyed by IUD keeps every change of a position in order.
pub fn decode(
    payload: &[u8],
    key: Option<&[u8]>,
    rules: &EntityRules,
    today: chrono::NaiveDate,
) -> Result<DovutoRow, Invalid> {
    let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
    let mut de = serde_json::Deserializer::from_slice(payload);
    let m: Message =
        serde_path_to_error::deserialize(&mut de).map_err(|e| syntax(e, key.clone()))?;
    // One message is one value: bytes after it (a second position, garbage) are refused, not
    // dropped (found by fuzzing).
    de.end().map_err(|e| Invalid {
        iud: m.iud.clone().or(key.clone()),
        rejections: vec![Rejection::new(
            RejectCode::SintassiCsv,
            format!("not a position: {e}"),
        )],
    })?;
    if let (Some(k), Some(iud)) = (&key, &m.iud) {
        if k != iud {
            return Err(Invalid {
                iud: Some(iud.clone()),
                rejections: vec![Rejection::new(
                    RejectCode::SintassiCsv,
                    format!("the message key {k:?} is not the IUD {iud:?}"),
                )],
            });
        }
    }
    check(m, key, rules, today)
}

/// What an API call fixes about the position it carries.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The only action allowed (`azione` may be left out and is then this one).
    pub action: &'a str,
    /// The IUD the call is about (a URL path): `IUD` may be left out and must match when given.
    pub iud: Option<&'a str>,
}

/// Decodes and validates one position from an already parsed JSON value (REST bodies), with the
/// action and IUD the call fixes.
pub fn decode_value(
    value: &serde_json::Value,
    expect: Expect<'_>,
    rules: &EntityRules,
    today: chrono::NaiveDate,
) -> Result<DovutoRow, Invalid> {
    let fixed_iud = expect.iud.map(str::to_string);
    let mut m: Message =
        serde_path_to_error::deserialize(value).map_err(|e| syntax(e, fixed_iud.clone()))?;
    if let Some(iud) = expect.iud {
        match &m.iud {
            Some(given) if given != iud => {
                return Err(Invalid {
                    iud: Some(iud.to_string()),
                    rejections: vec![Rejection::new(
                        RejectCode::Iud,
                        format!("IUD {given:?} is not the IUD {iud:?} of the URL"),
                    )],
                })
            }
            _ => m.iud = Some(iud.to_string()),
        }
    }
    match m.azione.as_deref() {
        None | Some("") => m.azione = Some(expect.action.to_string()),
        Some(a) if a == expect.action => {}
        Some(a) => {
            return Err(Invalid {
                iud: m.iud.clone(),
                rejections: vec![Rejection::new(
                    RejectCode::SintassiCsvAzione,
                    format!(
                        "azione {a:?} does not fit this call, which is {:?} (leave azione out)",
                        expect.action
                    ),
                )],
            })
        }
    }
    check(m, None, rules, today)
}

/// A body that is not a position at all: the rejection names the JSON path of the problem.
fn syntax<E: std::fmt::Display>(e: serde_path_to_error::Error<E>, iud: Option<String>) -> Invalid {
    let field = e.path().to_string();
    let inner = e.into_inner();
    let rejection = if field.is_empty() || field == "." {
        Rejection::new(RejectCode::SintassiCsv, format!("not a position: {inner}"))
    } else {
        Rejection::new(RejectCode::SintassiCsv, format!("{field}: {inner}")).at(field)
    };
    Invalid {
        iud,
        rejections: vec![rejection],
    }
}

fn check(
    m: Message,
    key: Option<String>,
    rules: &EntityRules,
    today: chrono::NaiveDate,
) -> Result<DovutoRow, Invalid> {
    let raw = RawDovuto {
        iud: s(&m.iud),
        cod_iuv: s(&m.cod_iuv),
        tipo_identificativo_univoco: s(&m.tipo_identificativo_univoco),
        codice_identificativo_univoco: s(&m.codice_identificativo_univoco),
        anagrafica_pagatore: s(&m.anagrafica_pagatore),
        indirizzo_pagatore: s(&m.indirizzo_pagatore),
        civico_pagatore: s(&m.civico_pagatore),
        cap_pagatore: s(&m.cap_pagatore),
        localita_pagatore: s(&m.localita_pagatore),
        provincia_pagatore: s(&m.provincia_pagatore),
        nazione_pagatore: s(&m.nazione_pagatore),
        mail_pagatore: s(&m.mail_pagatore),
        data_esecuzione_pagamento: s(&m.data_esecuzione_pagamento),
        importo_dovuto: s(&m.importo_dovuto),
        commissione_carico_pa: s(&m.commissione_carico_pa),
        tipo_dovuto: s(&m.tipo_dovuto),
        tipo_versamento: s(&m.tipo_versamento),
        causale_versamento: s(&m.causale_versamento),
        dati_specifici_riscossione: s(&m.dati_specifici_riscossione),
        bilancio: s(&m.bilancio),
        flg_genera_iuv: f(&m.flg_genera_iuv),
        flag_multi_beneficiario: f(&m.flag_multi_beneficiario),
        codice_fiscale_ente_secondario: s(&m.codice_fiscale_ente_secondario),
        denominazione_ente_secondario: s(&m.denominazione_ente_secondario),
        iban_accredito_ente_secondario: s(&m.iban_accredito_ente_secondario),
        indirizzo_ente_secondario: s(&m.indirizzo_ente_secondario),
        civico_ente_secondario: s(&m.civico_ente_secondario),
        cap_ente_secondario: s(&m.cap_ente_secondario),
        localita_ente_secondario: s(&m.localita_ente_secondario),
        provincia_ente_secondario: s(&m.provincia_ente_secondario),
        nazione_ente_secondario: s(&m.nazione_ente_secondario),
        dati_specifici_riscossione_ente_secondario: s(&m.dati_specifici_riscossione_ente_secondario),
        causale_versamento_ente_secondario: s(&m.causale_versamento_ente_secondario),
        importo_versamento_ente_secondario: s(&m.importo_versamento_ente_secondario),
        azione: s(&m.azione),
        hash_documento: s(&m.hash_documento),
    };
    let iud = m.iud.clone().or(key);
    let (transfers, mut broken) = transfer_list(m.transfers.unwrap_or_default());
    let mut row = match validate(&raw, FlowVersion::V1_4, rules, today) {
        Ok(row) => row,
        Err(mut rejections) => {
            rejections.append(&mut broken);
            return Err(Invalid { iud, rejections });
        }
    };
    row.dovuto.transfers = transfers;
    broken.extend(
        snodo_core::payment::check_transfers(&row.dovuto)
            .into_iter()
            .map(|(field, why)| rejection(&field, why)),
    );
    if broken.is_empty() {
        Ok(row)
    } else {
        Err(Invalid {
            iud,
            rejections: broken,
        })
    }
}

/// A transfer list's refusal: MyPay's code for a secondary entity's bad field, at the JSON path.
fn rejection(field: &str, why: String) -> Rejection {
    let code = if field.ends_with("codiceFiscaleEnte") {
        RejectCode::CodFiscEnteSecondario
    } else if field.contains("iban") {
        RejectCode::IbanEnteSecondario
    } else if field.ends_with("datiSpecificiRiscossione") {
        RejectCode::DatiRiscossEnteSecondario
    } else if field.ends_with("importo") || field == "transfers" {
        RejectCode::ImportoEnteSecondario
    } else {
        RejectCode::SintassiCsv
    };
    Rejection::new(code, format!("{field}: {why}")).at(field)
}

/// The typed transfer list, and what could not be read (the rules come after).
fn transfer_list(list: Vec<TransferMessage>) -> (Vec<TransferSpec>, Vec<Rejection>) {
    let mut broken = Vec::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let at = |f: &str| format!("transfers[{i}].{f}");
        let mut bad = |f: &str, why: String| broken.push(rejection(&at(f), why));
        let fiscal_code = t.codice_fiscale_ente.as_deref().and_then(|c| {
            EntityFiscalCode::parse(c)
                .map_err(|e| bad("codiceFiscaleEnte", format!("{c:?}: {e}")))
                .ok()
        });
        let mut iban_of = |f: &str, v: &Option<String>| {
            v.as_deref().and_then(|v| {
                Iban::parse(v)
                    .map_err(|e| bad(f, format!("{v:?}: {e}")))
                    .ok()
            })
        };
        let iban = iban_of("ibanAccredito", &t.iban_accredito);
        let postal_iban = iban_of("ibanPostale", &t.iban_postale);
        let credit = match (t.marca_da_bollo, iban, postal_iban) {
            (Some(m), None, None) if t.iban_accredito.is_none() && t.iban_postale.is_none() => {
                Some(Credit::Stamp(StampDuty {
                    kind: m.tipo_bollo.unwrap_or_else(|| "01".into()),
                    document_hash: m.hash_documento,
                    province: m.provincia_residenza,
                }))
            }
            (Some(_), _, _) => {
                bad(
                    "marcaDaBollo",
                    "a stamp is instead of an account: give no ibanAccredito or ibanPostale".into(),
                );
                None
            }
            (None, None, None) => None,
            (None, iban, postal_iban) => Some(Credit::Accounts { iban, postal_iban }),
        };
        let amount = match t.importo.as_deref() {
            None => {
                bad("importo", "required".into());
                Amount::from_cents(0)
            }
            Some(v) => Amount::parse_mypay(v).unwrap_or_else(|e| {
                bad("importo", format!("{v:?}: {e}"));
                Amount::from_cents(0)
            }),
        };
        out.push(TransferSpec {
            fiscal_code,
            company_name: t.denominazione_ente,
            credit,
            amount,
            remittance: t.causale_versamento,
            category: t.dati_specifici_riscossione,
            metadata: t
                .metadata
                .into_iter()
                .map(|m| MetaEntry {
                    key: m.key,
                    value: m.value,
                })
                .collect(),
        });
    }
    (out, broken)
}

/// Where the message came from, echoed in its outcome so the sender can match them up.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// One broken rule in an outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutcomeError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// What the hub did with one message, as produced to the pipeline's `outcomes` topic (keyed by
/// IUD). Mirrors the import flow's outcome files: accepted rows carry IUV and notice number (the
/// `_IUV` file), rejected ones their MyPay codes (the `_SCARTI` file).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome<'a> {
    Accepted {
        iud: &'a str,
        action: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        iuv: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        notice_number: Option<&'a str>,
        iuv_generated: bool,
        source: Origin<'a>,
    },
    Rejected {
        #[serde(skip_serializing_if = "Option::is_none")]
        iud: Option<&'a str>,
        errors: Vec<OutcomeError<'a>>,
        source: Origin<'a>,
    },
}

impl Outcome<'_> {
    pub fn encode(&self) -> String {
        // Serialising plain strings, numbers and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_core::dovuto::{Action, DebtTypeRules};
    use snodo_core::SegregationCode;
    use std::collections::HashMap;

    fn rules() -> EntityRules {
        let mut debt_types = HashMap::new();
        debt_types.insert(
            "TARI".to_string(),
            DebtTypeRules {
                code: "TARI".into(),
                active: true,
                due_date_required: false,
                anonymous_payer_allowed: false,
                generate_iuv: true,
                stamp_duty: false,
            },
        );
        EntityRules {
            segregation_code: SegregationCode::parse("01").expect("segregation code"),
            debt_types,
            taxonomy: None,
        }
    }

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("date")
    }

    const GOOD: &str = r#"{"IUD":"K-1","tipoIdentificativoUnivoco":"F",
        "codiceIdentificativoUnivoco":"RSSMRA85T10A562S","anagraficaPagatore":"Mario Rossi",
        "importoDovuto":"120.50","tipoDovuto":"TARI","causaleVersamento":"TARI 2026",
        "datiSpecificiRiscossione":"9/0101100IM/","flgGeneraIuv":true,"azione":"I"}"#;

    #[test]
    fn a_good_message_validates_like_a_csv_row() {
        let row = decode(GOOD.as_bytes(), Some(b"K-1"), &rules(), today()).expect("valid");
        assert_eq!(row.action, Action::Insert);
        assert_eq!(row.dovuto.iud, "K-1");
        assert_eq!(row.dovuto.amount.cents(), 12050);
        assert!(row.dovuto.generate_iuv);
    }

    #[test]
    fn bytes_after_the_message_are_refused() {
        for tail in ["]", "x", "{}", GOOD] {
            let msg = format!("{GOOD}{tail}");
            let err = decode(msg.as_bytes(), None, &rules(), today()).expect_err(tail);
            assert_eq!(err.iud.as_deref(), Some("K-1"));
            assert_eq!(err.rejections.len(), 1);
            assert_eq!(err.rejections[0].code, RejectCode::SintassiCsv);
            assert!(err.rejections[0].message.contains("trailing"), "{err:?}");
        }
        let spaced = format!("{GOOD} \n\t");
        assert!(decode(spaced.as_bytes(), None, &rules(), today()).is_ok());
    }

    #[test]
    fn broken_rules_carry_the_mypay_codes() {
        let bad = GOOD
            .replace("RSSMRA85T10A562S", "RSSMRA85T10A562X")
            .replace("\"I\"}", "\"X\"}");
        let err = decode(bad.as_bytes(), None, &rules(), today()).expect_err("invalid");
        let codes: Vec<_> = err.rejections.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(
            codes,
            ["PAA_IMPORT_SINTASSI_CSV_AZIONE", "PAA_IMPORT_COD_FISC"]
        );
        assert_eq!(err.iud.as_deref(), Some("K-1"));
    }

    #[test]
    fn unknown_fields_floats_and_junk_are_rejected_naming_the_field() {
        let typo = GOOD.replace("causaleVersamento", "causale");
        let err = decode(typo.as_bytes(), Some(b"K-1"), &rules(), today()).expect_err("typo");
        assert_eq!(err.rejections[0].code, RejectCode::SintassiCsv);
        assert!(err.rejections[0].message.contains("causale"), "{err:?}");
        assert_eq!(err.iud.as_deref(), Some("K-1"));

        let float = GOOD.replace("\"120.50\"", "120.5");
        let err = decode(float.as_bytes(), None, &rules(), today()).expect_err("float");
        assert!(
            err.rejections[0].message.starts_with("importoDovuto:"),
            "{err:?}"
        );

        let err = decode(b"not json", Some(b"K-9"), &rules(), today()).expect_err("junk");
        assert!(err.rejections[0].message.starts_with("not a position"));
        assert_eq!(err.iud.as_deref(), Some("K-9"));
    }

    #[test]
    fn the_key_must_be_the_iud() {
        let err = decode(GOOD.as_bytes(), Some(b"K-2"), &rules(), today()).expect_err("key");
        assert!(err.rejections[0].message.contains("K-2"), "{err:?}");
    }

    #[test]
    fn outcomes_encode_with_their_source() {
        let source = Origin {
            topic: "t",
            partition: 1,
            offset: 7,
        };
        let ok = Outcome::Accepted {
            iud: "K-1",
            action: "I",
            iuv: Some("01000000000000012"),
            notice_number: Some("301000000000000012"),
            iuv_generated: true,
            source: source.clone(),
        };
        let v: serde_json::Value = serde_json::from_str(&ok.encode()).expect("json");
        assert_eq!(v["status"], "accepted");
        assert_eq!(v["source"]["offset"], 7);
        let bad = Outcome::Rejected {
            iud: None,
            errors: vec![OutcomeError {
                code: "PAA_IMPORT_IUD",
                message: "IUD is required",
            }],
            source,
        };
        let v: serde_json::Value = serde_json::from_str(&bad.encode()).expect("json");
        assert_eq!(v["status"], "rejected");
        assert_eq!(v["errors"][0]["code"], "PAA_IMPORT_IUD");
        assert!(v.get("iud").is_none());
    }
}
