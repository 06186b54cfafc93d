//! MyPay's export of expired positions (`ExportFlussoScadutiTaskService`, TRACCIATI.md §4): a
//! zip `<IUF>.zip` holding `<IUF>.csv`, a header line and one line per position, written the
//! way MyPay writes it so that a system reading MyPay's files reads these unchanged: `;` after
//! every value of a row but not after the header, `\n` between lines and none after the last,
//! amounts with a dot and two decimals, an empty `commissioneCaricoPa` when there is none,
//! `flgGeneraIuv` as `true`/`false`.
//!
//! MyPay writes values as they are; a value holding `;`, `"` or a line break would break the
//! line, so here such a value is quoted (`"…"`, inner `"` doubled), as MyPay's own import reads.

use chrono::NaiveDate;
use snodo_core::dovuto::{Dovuto, SubjectKind};
use std::io::{self, Write};

/// The codec's name in `encode`.
pub const MYPAY_EXPIRED: &str = "mypay-expired";

/// MyPay's header (`task.exportFlussoScaduti.export.csv.columns`).
pub const HEADER: &str = "IUD;codIuv;dataCreazione;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovuto;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio;flgGeneraIuv";

/// The prefix of the flow identifier MyPay gives these exports (`EXP_SCADUTI_<token>`).
pub const IUF_PREFIX: &str = "EXP_SCADUTI_";

/// An expired position as the export needs it.
pub struct ExpiredRow<'a> {
    pub dovuto: &'a Dovuto,
    pub iuv: &'a str,
    /// The day the position was created (Europe/Rome).
    pub created: NaiveDate,
}

/// Why a position cannot be a line of the export (MyPay refuses the same ones).
#[derive(Debug, thiserror::Error)]
pub enum ExpiredError {
    #[error("position {iud}: {what} is missing, MyPay's export requires it")]
    Missing { iud: String, what: &'static str },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes the CSV: the header on creation, then one line per [`ExpiredWriter::push`].
pub struct ExpiredWriter<W: Write> {
    out: W,
    rows: u64,
}

impl<W: Write> ExpiredWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(HEADER.as_bytes())?;
        Ok(Self { out, rows: 0 })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// One position's line. A position MyPay could not export (no IUV, no due date) is refused
    /// before anything of it is written.
    pub fn push(&mut self, row: &ExpiredRow<'_>) -> Result<(), ExpiredError> {
        let d = row.dovuto;
        let missing = |what| ExpiredError::Missing {
            iud: d.iud.clone(),
            what,
        };
        if row.iuv.is_empty() {
            return Err(missing("codIuv"));
        }
        let due = d
            .due_date
            .ok_or_else(|| missing("dataEsecuzionePagamento"))?;
        let p = &d.payer;
        let kind = match p.kind {
            Some(SubjectKind::G) => "G",
            _ => "F",
        };
        let fee = d
            .pa_fee
            .filter(|f| f.cents() != 0)
            .map(|f| f.to_string())
            .unwrap_or_default();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let values: [String; 22] = [
            d.iud.clone(),
            row.iuv.to_string(),
            row.created.to_string(),
            kind.to_string(),
            p.id.clone(),
            p.name.clone(),
            opt(&p.address),
            opt(&p.civic),
            opt(&p.postal_code),
            opt(&p.locality),
            opt(&p.province),
            opt(&p.nation),
            opt(&p.email),
            due.to_string(),
            d.amount.to_string(),
            fee,
            d.debt_type.clone(),
            d.payment_kinds.clone(),
            d.causale.clone(),
            d.dati_specifici_riscossione.clone(),
            opt(&d.bilancio),
            d.generate_iuv.to_string(),
        ];
        let mut line = String::with_capacity(256);
        line.push('\n');
        for v in &values {
            push_value(&mut line, v);
            line.push(';');
        }
        self.out.write_all(line.as_bytes())?;
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn push_value(line: &mut String, v: &str) {
    if v.contains([';', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&v.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_core::dovuto::Subject;
    use snodo_core::Amount;

    fn dovuto() -> Dovuto {
        Dovuto {
            iud: "IUD-1".into(),
            iuv: None,
            generate_iuv: true,
            payer: Subject {
                kind: Some(SubjectKind::F),
                id: "RSSMRA80A01H501U".into(),
                name: "Mario Rossi".into(),
                address: Some("Via Roma".into()),
                civic: Some("1".into()),
                postal_code: Some("35100".into()),
                locality: Some("Padova".into()),
                province: Some("PD".into()),
                nation: Some("IT".into()),
                email: None,
            },
            due_date: NaiveDate::from_ymd_opt(2026, 11, 30),
            amount: Amount::from_cents(12050),
            pa_fee: None,
            debt_type: "TARI".into(),
            payment_kinds: "ALL".into(),
            causale: "TARI 2026; rata 2".into(),
            dati_specifici_riscossione: "9/0101100IM/".into(),
            bilancio: None,
            secondary: None,
            transfers: Vec::new(),
            document_hash: None,
        }
    }

    #[test]
    fn lines_as_mypay_writes_them() {
        let d = dovuto();
        let mut w = ExpiredWriter::new(Vec::new()).unwrap();
        w.push(&ExpiredRow {
            dovuto: &d,
            iuv: "01000000000012345",
            created: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        })
        .unwrap();
        assert_eq!(w.rows(), 1);
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "IUD-1;01000000000012345;2026-10-01;F;RSSMRA80A01H501U;Mario Rossi;Via Roma;1;35100;Padova;PD;IT;;2026-11-30;120.50;;TARI;ALL;\"TARI 2026; rata 2\";9/0101100IM/;;true;"
        );
        assert_eq!(lines.len(), 2, "no line break after the last line");
        // 22 header columns, 22 values plus MyPay's trailing `;`.
        assert_eq!(HEADER.split(';').count(), 22);
    }

    #[test]
    fn a_position_mypay_could_not_export_is_refused_whole() {
        let mut d = dovuto();
        d.due_date = None;
        let mut w = ExpiredWriter::new(Vec::new()).unwrap();
        let e = w
            .push(&ExpiredRow {
                dovuto: &d,
                iuv: "01000000000012345",
                created: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
            })
            .unwrap_err();
        assert!(e.to_string().contains("IUD-1"), "{e}");
        assert!(e.to_string().contains("dataEsecuzionePagamento"), "{e}");
        assert_eq!(w.rows(), 0);
        assert_eq!(w.finish().unwrap(), HEADER.as_bytes());
    }
}
