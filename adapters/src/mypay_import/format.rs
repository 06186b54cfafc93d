//! MyPay's import flow as a [`FlowFormat`]: what the importer asks of it.

use super::{codes, columns::map_row, iuv_line, render_accepted, scarti_line};
use super::{FlowName, FlowZip, SizeLimited};
use crate::csv::{Dialect, Record};
use crate::flow_format::{
    FlowFile, FlowFormat, FlowLimits, FlowProblem, OutcomeName, Refusal, RenderedRow,
};
use snodo_core::dovuto::{RawDovuto, Rejection};
use std::fs::File;
use std::io::{BufReader, Read};

/// MyPay's flows: `<codIPA>-<IUF>-<version>.zip|.csv`, outcome files `_SCARTI` and `_IUV`.
pub struct MyPayImport;

impl FlowFormat for MyPayImport {
    fn parse_name(&self, file_name: &str) -> Result<FlowFile, Refusal> {
        let n = FlowName::parse(file_name).map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(FlowFile {
            entity: n.ipa_code,
            flow_id: n.iuf,
            rules: n.version,
            version: n.version.as_str().to_string(),
            stem: n.stem,
            packed: n.is_zip,
        })
    }

    fn code(&self, problem: FlowProblem) -> &'static str {
        match problem {
            FlowProblem::WrongEntity => codes::ENTE_ERR,
            FlowProblem::Duplicate => codes::FLUSSO_DUPLICATO,
            FlowProblem::InProgress => codes::FLUSSO_IN_CARICAMENTO,
            FlowProblem::Unreadable => codes::ERROR,
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::MYPAY
    }

    fn open_records(
        &self,
        file: File,
        flow: &FlowFile,
        limits: FlowLimits,
        read: &mut dyn FnMut(&mut dyn Read, u64),
    ) -> Result<(), Refusal> {
        if !flow.packed {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            read(&mut SizeLimited::new(file, limits.max_bytes), len);
            return Ok(());
        }
        let refuse = |e: super::FlowError| Refusal::new(e.code(), e.to_string());
        let zip = BufReader::new(file);
        let mut zip = FlowZip::open_with(zip, &flow.stem, limits.max_bytes, limits.max_entries)
            .map_err(refuse)?;
        let len = zip.declared_size();
        let mut csv = zip.csv().map_err(refuse)?;
        read(&mut csv, len);
        Ok(())
    }

    fn decode<'r>(&self, flow: &FlowFile, record: &Record<'r>) -> Result<RawDovuto<'r>, String> {
        map_row(flow.rules, record).map_err(|e| e.to_string())
    }

    fn render_accepted(&self, flow: &FlowFile, record: &Record<'_>) -> RenderedRow {
        render_accepted(flow.rules, record)
    }

    fn outcome_names(&self, flow: &FlowFile) -> [OutcomeName; 2] {
        [super::scarti_name(&flow.stem), super::iuv_name(&flow.stem)].map(|n| OutcomeName {
            file: format!("{n}.zip"),
            entry: format!("{n}.csv"),
        })
    }

    /// `<stem>_AVVISI_PDF.zip` with `avviso_<IUV>.pdf` entries, as MyPay writes them.
    fn notices_name(&self, flow: &FlowFile) -> String {
        format!("{}_AVVISI_PDF.zip", flow.stem)
    }

    fn notice_entry(&self, iuv: &str) -> String {
        format!("avviso_{iuv}.pdf")
    }

    fn rejected_header(&self, header: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(b";cod_rifiuto;de_rifiuto\n");
    }

    fn accepted_header(&self, header: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(header.as_bytes());
        out.push(b'\n');
    }

    fn rejected_line(&self, raw: &str, why: &[Rejection], out: &mut Vec<u8>) {
        let codes: Vec<&str> = why.iter().map(|r| r.code.as_str()).collect();
        let descriptions: Vec<&str> = why.iter().map(|r| r.message.as_str()).collect();
        scarti_line(raw, &codes, &descriptions, out);
    }

    fn accepted_line(&self, row: &RenderedRow, generated_iuv: Option<&str>, out: &mut Vec<u8>) {
        iuv_line(row, generated_iuv, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::{CsvLimits, CsvLines};
    use snodo_core::dovuto::{FlowVersion, RejectCode};

    #[test]
    fn names_and_codes_follow_mypay() {
        let f = MyPayImport.parse_name("c_g224-F1-1_4.zip").expect("name");
        assert_eq!(
            (f.entity.as_str(), f.flow_id.as_str(), f.rules, f.packed),
            ("c_g224", "F1", FlowVersion::V1_4, true)
        );
        assert_eq!(f.version, "1_4");
        let [scarti, iuv] = MyPayImport.outcome_names(&f);
        assert_eq!(scarti.file, "c_g224-F1-1_4_SCARTI.zip");
        assert_eq!(iuv.entry, "c_g224-F1-1_4_IUV.csv");
        let bad = MyPayImport.parse_name("c_g224-F1-9_9.csv").unwrap_err();
        assert_eq!(bad.code, "PAA_IMPORT_FILE_VERSIONE_ERR");
        assert_eq!(
            MyPayImport.code(FlowProblem::Duplicate),
            "PAA_IMPORT_FLUSSO_DUPLICATO"
        );
    }

    /// The lines the importer writes through the format are the bytes MyPay's writers give.
    #[test]
    fn outcome_lines_match_the_writers() {
        let text = "IUD;codIuv;x\nA1;;\"a;b\"\n";
        let mut lines = CsvLines::new(text.as_bytes(), CsvLimits::default()).expect("header");
        let rec = lines.next_record().expect("read").expect("one");
        let row = render_accepted(FlowVersion::V1_0, rec);
        let mut via_format = Vec::new();
        MyPayImport.accepted_header("IUD;codIuv;x", &mut via_format);
        MyPayImport.accepted_line(&row, Some("01234567890123456"), &mut via_format);
        let mut writer = super::super::IuvWriter::new(Vec::new(), "IUD;codIuv;x").expect("w");
        writer
            .accept_rendered(&row, Some("01234567890123456"))
            .expect("w");
        assert_eq!(via_format, writer.finish().expect("w"));

        let why = [
            Rejection::new(RejectCode::SintassiCsv, "bad; very"),
            Rejection::new(RejectCode::IudDuplicato, "again"),
        ];
        let mut via_format = Vec::new();
        MyPayImport.rejected_line("A1;;x", &why, &mut via_format);
        assert_eq!(
            String::from_utf8(via_format).expect("utf-8"),
            "A1;;x;PAA_IMPORT_SINTASSI_CSV|PAA_IMPORT_IUD_DUPLICATO;bad, very|again\n"
        );
    }
}
