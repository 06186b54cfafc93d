//! The importer driven by a second flow format, written here in a few lines: what
//! `FlowFormat` promises is all the importer needs.

use super::*;
use snodo_adapters::csv::Record;
use snodo_adapters::flow_format::OutcomeName;
use snodo_core::dovuto::{FlowVersion, RawDovuto};
use std::sync::Arc;

/// `<ipa>.<flow>.txt`: `iud,amount,fiscal code` lines under a header, comma-separated.
struct Lines;

impl FlowFormat for Lines {
    fn parse_name(&self, file_name: &str) -> Result<FlowFile, Refusal> {
        let Some(stem) = file_name.strip_suffix(".txt") else {
            return Err(Refusal::new("T_NAME", "expected <ipa>.<flow>.txt"));
        };
        let Some((entity, flow_id)) = stem.split_once('.') else {
            return Err(Refusal::new("T_NAME", "expected <ipa>.<flow>.txt"));
        };
        Ok(FlowFile {
            entity: entity.to_string(),
            flow_id: flow_id.to_string(),
            rules: FlowVersion::V1_4,
            version: "lines-1".to_string(),
            stem: stem.to_string(),
            packed: false,
        })
    }

    fn code(&self, problem: FlowProblem) -> &'static str {
        match problem {
            FlowProblem::WrongEntity => "T_ENTITY",
            FlowProblem::Duplicate => "T_DUPLICATE",
            FlowProblem::InProgress => "T_BUSY",
            FlowProblem::Unreadable => "T_UNREADABLE",
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect {
            separator: b',',
            escape: b'\\',
            header: true,
        }
    }

    fn open_records(
        &self,
        file: File,
        _flow: &FlowFile,
        limits: FlowLimits,
        read: &mut dyn FnMut(&mut dyn Read, u64),
    ) -> Result<(), Refusal> {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        read(&mut file.take(limits.max_bytes), len);
        Ok(())
    }

    fn decode<'r>(&self, _flow: &FlowFile, record: &Record<'r>) -> Result<RawDovuto<'r>, String> {
        if record.field_count() != 3 {
            return Err(format!("{} fields, expected 3", record.field_count()));
        }
        Ok(RawDovuto {
            iud: record.field(0),
            importo_dovuto: record.field(1),
            codice_identificativo_univoco: record.field(2),
            tipo_identificativo_univoco: "F",
            anagrafica_pagatore: "Mario Rossi",
            tipo_dovuto: "MENSA",
            causale_versamento: "Mensa",
            dati_specifici_riscossione: "9/0107101TS/",
            flg_genera_iuv: "true",
            azione: "I",
            ..Default::default()
        })
    }

    fn render_accepted(&self, _flow: &FlowFile, record: &Record<'_>) -> RenderedRow {
        let iud = record.field(0);
        RenderedRow {
            line: format!("{iud},\n").into_bytes(),
            iuv_at: iud.len() + 1..iud.len() + 1,
        }
    }

    fn outcome_names(&self, flow: &FlowFile) -> [OutcomeName; 2] {
        ["rejected", "accepted"].map(|kind| OutcomeName {
            file: format!("{}.{kind}.zip", flow.stem),
            entry: format!("{}.{kind}.txt", flow.stem),
        })
    }

    fn notices_name(&self, flow: &FlowFile) -> String {
        format!("{}.notices.zip", flow.stem)
    }

    fn notice_entry(&self, iuv: &str) -> String {
        format!("{iuv}.pdf")
    }

    fn rejected_header(&self, header: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{header},why\n").as_bytes());
    }

    fn accepted_header(&self, _header: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"iud,iuv\n");
    }

    fn rejected_line(&self, raw: &str, why: &[Rejection], out: &mut Vec<u8>) {
        let codes: Vec<&str> = why.iter().map(|r| r.code.as_str()).collect();
        out.extend_from_slice(format!("{raw},{}\n", codes.join("+")).as_bytes());
    }

    fn accepted_line(&self, row: &RenderedRow, generated_iuv: Option<&str>, out: &mut Vec<u8>) {
        out.extend_from_slice(&row.line[..row.iuv_at.start]);
        out.extend_from_slice(generated_iuv.unwrap_or_default().as_bytes());
        out.extend_from_slice(&row.line[row.iuv_at.end..]);
    }
}

fn unzip(path: &Path, entry: &str) -> String {
    let mut zip = zip::ZipArchive::new(File::open(path).expect("zip")).expect("zip");
    let mut text = String::new();
    zip.by_name(entry)
        .expect("entry")
        .read_to_string(&mut text)
        .expect("read");
    text
}

#[test]
fn another_format_is_imported_through_its_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = crate::plan::load(None).expect("demo plan");
    let entity = plan.entities.get("c_g224").expect("c_g224").clone();
    let store: Arc<dyn Store> =
        Arc::new(snodo_store::SqliteStore::open(&dir.path().join("s.db")).expect("store"));
    let stop = AtomicBool::new(false);
    let importer = Importer {
        store: store.as_ref(),
        format: &Lines,
        encoding: Encoding::Utf8,
        entity: &entity,
        staging: dir.path().join("staging"),
        limits: ImportLimits {
            max_flow_bytes: 1 << 20,
            max_flow_entries: 10,
            // Several chunks, so the checkpoint and outcome lines cross commits.
            chunk_rows: 2,
            csv: CsvLimits::default(),
        },
        stop: &stop,
        progress: &|_| {},
        notice_threads: 0,
    };
    let flow = dir.path().join("c_g224.F7.txt");
    fs::write(
        &flow,
        "iud,amount,cf\nA1,10.00,RSSMRA85T10A562S\nA2,ten,RSSMRA85T10A562S\nA3,1.00\nA1,5.00,RSSMRA85T10A562S\n",
    )
    .expect("write");

    let outcome = importer
        .import("c_g224.F7.txt", &flow, false)
        .expect("import");
    let ImportOutcome::Done { flow: f, files, .. } = outcome else {
        panic!("not imported: {outcome:?}");
    };
    assert_eq!((f.progress.accepted, f.progress.rejected), (1, 3));
    assert_eq!(f.version, "lines-1");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["c_g224.F7.rejected.zip", "c_g224.F7.accepted.zip"]);

    let accepted = unzip(&files[1].path, "c_g224.F7.accepted.txt");
    let lines: Vec<&str> = accepted.lines().collect();
    assert_eq!(lines[0], "iud,iuv");
    let iuv = lines[1].strip_prefix("A1,").expect("A1 accepted");
    assert_eq!(iuv.len(), 17, "a generated IUV: {accepted}");
    assert_eq!(lines.len(), 2, "{accepted}");

    let rejected = unzip(&files[0].path, "c_g224.F7.rejected.txt");
    assert_eq!(
        rejected.lines().collect::<Vec<_>>(),
        [
            "iud,amount,cf,why",
            "A2,ten,RSSMRA85T10A562S,PAA_IMPORT_IMPORTO",
            "A3,1.00,PAA_IMPORT_SINTASSI_CSV",
            "A1,5.00,RSSMRA85T10A562S,PAA_IMPORT_IUD_DUPLICATO",
        ],
        "{rejected}"
    );

    // The format's own codes for what the importer detects.
    let again = importer
        .import("c_g224.F7.txt", &flow, false)
        .expect("import");
    assert!(
        matches!(&again, ImportOutcome::Aborted { code, .. } if code == "T_DUPLICATE"),
        "{again:?}"
    );
    let other = dir.path().join("c_b111.F8.txt");
    fs::write(&other, "iud,amount,cf\n").expect("write");
    let wrong = importer
        .import("c_b111.F8.txt", &other, false)
        .expect("import");
    assert!(
        matches!(&wrong, ImportOutcome::Aborted { code, .. } if code == "T_ENTITY"),
        "{wrong:?}"
    );
}
