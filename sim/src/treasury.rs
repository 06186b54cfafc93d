//! The simulated treasurer: for every settlement flow the simulated PSPs published (the current
//! revision of each), the SCT that credits it, written as the entity's OPI giornale di cassa
//! (1.8) — one `ENTRATA` / `SOSPESO ENTRATA` movement per flow, of the flow's declared total,
//! with the official causale `/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/<IUF>`.
//!
//! Everything is a function of the published flows: writing again gives the same file (bill
//! numbers come from the IUF), so a hub reading it twice changes nothing.
//!
//! With [`TreasuryOptions::anomalies`], over each entity's flows ordered by IUF: the first flow
//! is credited 1.00 more than its total, the second with a bank-mangled causale (`LGPE -
//! RIVERSAMENTO`, its IUF's date split by a space), the last (of three or more) is never
//! credited, and one more movement names a flow nobody published.

use crate::flows::{self, FlowsError, PublishedFlow};
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The giornali's directory inside the ledger's.
pub const TREASURY_DIR: &str = "treasury";

#[derive(Debug, Clone)]
pub struct TreasuryOptions {
    pub ledger_dir: PathBuf,
    /// The giornale's reference day.
    pub date: NaiveDate,
    pub anomalies: bool,
}

/// One giornale written.
#[derive(Debug, Clone)]
pub struct Written {
    pub organization_id: String,
    pub path: PathBuf,
    pub movements: usize,
    pub cents: i64,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "giornale organization={} movements={} cents={} path={}",
            self.organization_id,
            self.movements,
            self.cents,
            self.path.display()
        )
    }
}

struct Movement {
    bill: u64,
    cents: i64,
    causale: String,
    payer: String,
}

fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 7-digit bill number from the IUF.
fn bill_of(iuf: &str) -> u64 {
    1 + stable_hash(iuf) % 9_999_998
}

/// The IUF as a bank may mangle it: a space inside its date (`2026-12-0 7…`).
fn mangled(iuf: &str) -> String {
    match (iuf.get(..9), iuf.get(9..)) {
        (Some(head), Some(tail)) if flows::parse_date(&iuf[..10.min(iuf.len())]).is_some() => {
            format!("{head} {tail}")
        }
        _ => iuf.to_string(),
    }
}

/// Writes one giornale per entity credited, under `<ledger>/treasury/<organizationId>/`.
pub fn write_giornali(opts: &TreasuryOptions) -> Result<Vec<Written>, FlowsError> {
    // The current revision of each flow, by entity, in IUF order.
    let mut current: BTreeMap<(String, String), PublishedFlow> = BTreeMap::new();
    for p in flows::load_all(&opts.ledger_dir)? {
        let key = (p.flow.receiver.organization_id.clone(), p.flow.fdr.clone());
        if current
            .get(&key)
            .is_none_or(|held| held.flow.revision < p.flow.revision)
        {
            current.insert(key, p);
        }
    }
    let mut by_org: BTreeMap<String, Vec<PublishedFlow>> = BTreeMap::new();
    for ((org, _), p) in current {
        by_org.entry(org).or_default().push(p);
    }
    let mut out = Vec::new();
    for (org, flows) in &by_org {
        let anomalies = opts.anomalies;
        let mut movements = Vec::new();
        let n = flows.len();
        for (k, p) in flows.iter().enumerate() {
            let (header, _) = p.to_model().map_err(|e| FlowsError::Invalid {
                path: opts.ledger_dir.clone(),
                reason: e.to_string(),
            })?;
            if anomalies && n >= 3 && k == n - 1 {
                continue;
            }
            let mut cents = header.declared_amount.cents();
            let mut causale = format!("/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/{}", p.flow.fdr);
            if anomalies && k == 0 {
                cents += 100;
            }
            if anomalies && k == 1 {
                causale = format!("/PUR/LGPE - RIVERSAMENTO/URI/{}", mangled(&p.flow.fdr));
            }
            movements.push(Movement {
                bill: bill_of(&p.flow.fdr),
                cents,
                causale,
                payer: format!("{} Servizio pagoPA", p.flow.sender.psp_name),
            });
        }
        if anomalies {
            let unknown = format!("{}UNKNOWNPSP-0000001", opts.date);
            movements.push(Movement {
                bill: bill_of(&unknown),
                cents: 1_234,
                causale: format!("/PUR/LGPE-RIVERSAMENTO/TXT/0/URI/{unknown}"),
                payer: "PSP Sconosciuto Servizio pagoPA".into(),
            });
        }
        let path = opts
            .ledger_dir
            .join(TREASURY_DIR)
            .join(org)
            .join(format!("GDC-{org}-{}.xml", opts.date.format("%Y%m%d")));
        let xml = giornale(org, opts.date, &movements);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| FlowsError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, xml).map_err(|source| FlowsError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| FlowsError::Io {
            path: path.clone(),
            source,
        })?;
        out.push(Written {
            organization_id: org.clone(),
            path,
            movements: movements.len(),
            cents: movements.iter().map(|m| m.cents).sum(),
        });
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An OPI 1.8 giornale di cassa (its signature a placeholder: nobody checks a simulator's).
fn giornale(org: &str, date: NaiveDate, movements: &[Movement]) -> String {
    let day = date.format("%Y-%m-%d");
    let mut x = String::with_capacity(1024 + movements.len() * 1024);
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<flusso_giornale_di_cassa>
    <testata_messaggio>
        <codice_ABI_BT>03069</codice_ABI_BT>
        <data_ora_creazione_flusso>{day}T06:00:00</data_ora_creazione_flusso>
        <codice_ente>SIM001</codice_ente>
        <descrizione_ente>ENTE SIMULATO</descrizione_ente>
        <codice_istat_ente>000000000</codice_istat_ente>
        <codice_fiscale_ente>{org}</codice_fiscale_ente>
        <codice_tramite_ente>A2A-00000001</codice_tramite_ente>
        <codice_tramite_BT>A2A-00000002</codice_tramite_BT>
        <codice_ente_BT>0000001</codice_ente_BT>
    </testata_messaggio>
    <identificativo_flusso_BT>GDC-{ymd}{org}#001#001</identificativo_flusso_BT>
    <pagina>1</pagina>
    <pagine_totali>1</pagine_totali>
    <esercizio>{year}</esercizio>
    <data_riferimento_GdC>{day}</data_riferimento_GdC>
    <informazioni_conto_evidenza>
        <conto_evidenza>0000001</conto_evidenza>
        <descrizione_conto_evidenza>CONTO PAGOPA</descrizione_conto_evidenza>
"#,
        ymd = date.format("%Y%m%d"),
        year = date.format("%Y"),
    );
    for (i, m) in movements.iter().enumerate() {
        let _ = write!(
            x,
            r#"        <movimento_conto_evidenza>
            <identificativo_flusso>{ymd}{n:07}</identificativo_flusso>
            <numero_movimento>{n:07}</numero_movimento>
            <tipo_movimento>ENTRATA</tipo_movimento>
            <tipo_documento>SOSPESO ENTRATA</tipo_documento>
            <tipo_operazione>ESEGUITO</tipo_operazione>
            <numero_documento>{n:07}</numero_documento>
            <progressivo_documento>0000000</progressivo_documento>
            <importo>{euro}.{cents:02}</importo>
            <numero_bolletta_quietanza>{bill:07}</numero_bolletta_quietanza>
            <data_movimento>{day}</data_movimento>
            <data_movimento_siope>{day}</data_movimento_siope>
            <data_valuta_ente>{day}</data_valuta_ente>
            <tipo_esecuzione>SEPA CREDIT TRANSFER</tipo_esecuzione>
            <tipo_contabilita>FRUTTIFERO</tipo_contabilita>
            <destinazione>LIBERA</destinazione>
            <assoggettamento_bollo>ESENTE BOLLO</assoggettamento_bollo>
            <assoggettamento_spese>ESENTE SPESE</assoggettamento_spese>
            <cliente>
                <anagrafica_cliente>{payer}</anagrafica_cliente>
            </cliente>
            <causale>{causale}</causale>
        </movimento_conto_evidenza>
"#,
            ymd = date.format("%Y%m%d"),
            n = i + 1,
            euro = m.cents / 100,
            cents = m.cents % 100,
            bill = m.bill,
            payer = escape(&m.payer),
            causale = escape(&m.causale),
        );
    }
    x.push_str(
        r#"    </informazioni_conto_evidenza>
    <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
        <ds:SignedInfo>
            <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
            <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
            <ds:Reference URI="">
                <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
                <ds:DigestValue>AAAA</ds:DigestValue>
            </ds:Reference>
        </ds:SignedInfo>
        <ds:SignatureValue>AAAA</ds:SignatureValue>
    </ds:Signature>
</flusso_giornale_di_cassa>
"#,
    );
    x
}

/// Where a giornale is written, for tests and docs.
pub fn giornale_dir(ledger_dir: &Path, organization_id: &str) -> PathBuf {
    ledger_dir.join(TREASURY_DIR).join(organization_id)
}
