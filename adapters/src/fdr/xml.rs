//! FlussoRiversamento XML (`fdr-xml`): read row by row, written row by row.
//!
//! The reader follows the node's superset XSD (`adapters/specs/fdr/pagopa-fdr-nodo-dei-pagamenti/
//! FlussoRiversamento_1_0_4.xsd`): children in XSD order, lengths, patterns and enumerations, so
//! a bad document is refused with the path of the element at fault. One deliberate leniency,
//! which the XSD's own documentation asks for: a revoked payment (esito 3) may carry a negative
//! amount. The header is read first; rows then come one at a time from [`FlowReader`], so a
//! 100 000-row flow never has to be held as a tree.

use std::io::{self, BufRead, Write};

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use snodo_core::settlement::{
    check_text, FlowReceiver, FlowSender, Iuf, PayStatus, SenderKind, SettlementFlow,
    SettlementPayment, TransferIndex,
};
use snodo_core::Amount;

use crate::xml_text::XmlText;

/// The namespace of FlussoRiversamento (all versions).
pub const NS: &str = "http://www.digitpa.gov.it/schemas/2011/Pagamenti/";
const ROOT: &str = "FlussoRiversamento";
const ROW: &str = "datiSingoliPagamenti";

/// Why a document is not a FlussoRiversamento the hub can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdrXmlError {
    #[error("not well-formed XML: {0}")]
    NotXml(String),
    /// `path` is like `FlussoRiversamento/datiSingoliPagamenti[3]/singoloImportoPagato`.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// XML 1.0 allows no control characters but tab, line feed and carriage return, not even as
/// `&#1;`: such a value could not be written back (found by fuzzing).
fn xml_chars(text: &str, element: &str) -> Result<(), FdrXmlError> {
    match text
        .chars()
        .find(|c| c.is_control() && u32::from(*c) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some(c) => Err(FdrXmlError::NotXml(format!(
            "{element}: character U+{:04X} is not allowed in XML",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

fn not_xml(e: impl std::fmt::Display) -> FdrXmlError {
    FdrXmlError::NotXml(e.to_string())
}

/// One step of the flat walk: a container opens or closes, or a leaf with its text.
#[derive(Debug)]
enum Ev {
    Open(String),
    Leaf(String, String),
    Close,
    Eof,
}

/// Reads a FlussoRiversamento document: the header on [`FlowReader::new`], then the rows.
pub struct FlowReader<R: BufRead> {
    reader: NsReader<R>,
    buf: Vec<u8>,
    /// A container start seen while looking for a leaf's text, to hand out next.
    pending: Option<Ev>,
    started: Option<String>,
    peeked: Option<Ev>,
    header: SettlementFlow,
    rows: u64,
    done: bool,
}

impl<R: BufRead> FlowReader<R> {
    /// Reads up to the first payment row. `psp_id` is the PSP the caller asked about, when it
    /// knows it (the XML does not carry it); otherwise [`Iuf::psp_hint`] or the sender's code.
    pub fn new(input: R, psp_id: Option<&str>) -> Result<FlowReader<R>, FdrXmlError> {
        let mut reader = NsReader::from_reader(input);
        reader.config_mut().trim_text(false);
        let mut me = FlowReader {
            reader,
            buf: Vec::with_capacity(256),
            pending: None,
            started: None,
            peeked: None,
            header: placeholder(),
            rows: 0,
            done: false,
        };
        me.header = me.read_header(psp_id)?;
        Ok(me)
    }

    pub fn header(&self) -> &SettlementFlow {
        &self.header
    }

    pub fn into_header(self) -> SettlementFlow {
        self.header
    }

    /// The next payment row, `None` after the last (and the document's end, checked).
    pub fn next_payment(&mut self) -> Result<Option<SettlementPayment>, FdrXmlError> {
        if self.done {
            return Ok(None);
        }
        let rows = self.rows;
        let (is_row, is_close, what) = match self.peek()? {
            Ev::Open(n) if n == ROW => (true, false, String::new()),
            Ev::Close => (false, true, String::new()),
            other => (false, false, describe(other)),
        };
        if !is_row {
            if is_close && rows > 0 {
                self.next()?;
                return match self.next()? {
                    Ev::Eof => {
                        self.done = true;
                        Ok(None)
                    }
                    _ => Err(self.invalid_root("content after the root element")),
                };
            }
            let what = if is_close { "the end".to_owned() } else { what };
            return Err(if rows == 0 {
                self.invalid_root(format!("expected {ROW}, found {what}"))
            } else {
                self.invalid_root(format!("expected {ROW} or the end, found {what}"))
            });
        }
        self.next()?;
        self.rows += 1;
        let row = self.rows;
        let p = |name: &str| format!("{ROOT}/{ROW}[{row}]/{name}");
        let iuv = self.leaf(&p("identificativoUnivocoVersamento"))?;
        text35(&iuv, &p("identificativoUnivocoVersamento"))?;
        let iur = self.leaf(&p("identificativoUnivocoRiscossione"))?;
        text35(&iur, &p("identificativoUnivocoRiscossione"))?;
        let transfer_index = match self.optional_leaf("indiceDatiSingoloPagamento")? {
            None => None,
            Some(t) => Some(
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| {
                        inv(
                            &p("indiceDatiSingoloPagamento"),
                            format!("{t:?} is not an integer 1 to 5"),
                        )
                    })
                    .and_then(|n| {
                        TransferIndex::new(n)
                            .map_err(|e| inv(&p("indiceDatiSingoloPagamento"), e.to_string()))
                    })?,
            ),
        };
        let amount_text = self.leaf(&p("singoloImportoPagato"))?;
        let esito = self.leaf(&p("codiceEsitoSingoloPagamento"))?;
        let status = PayStatus::from_esito(esito.trim())
            .map_err(|e| inv(&p("codiceEsitoSingoloPagamento"), e.to_string()))?;
        let amount = xsd_amount(
            &amount_text,
            if status == PayStatus::Revoked {
                AmountRule::Signed
            } else {
                AmountRule::Positive
            },
        )
        .map_err(|r| inv(&p("singoloImportoPagato"), r))?;
        let date_text = self.leaf(&p("dataEsitoSingoloPagamento"))?;
        let date = xsd_date(&date_text).map_err(|r| inv(&p("dataEsitoSingoloPagamento"), r))?;
        match self.next()? {
            Ev::Close => {}
            other => {
                return Err(inv(
                    &format!("{ROOT}/{ROW}[{row}]"),
                    format!("expected its end, found {}", describe(&other)),
                ))
            }
        }
        Ok(Some(SettlementPayment {
            iuv,
            iur,
            transfer_index,
            amount,
            status,
            date,
        }))
    }

    fn invalid_root(&self, reason: impl Into<String>) -> FdrXmlError {
        inv(ROOT, reason)
    }

    fn read_header(&mut self, psp_id: Option<&str>) -> Result<SettlementFlow, FdrXmlError> {
        match self.next()? {
            Ev::Open(n) if n == ROOT => {}
            Ev::Eof => return Err(FdrXmlError::NotXml("no root element".into())),
            other => {
                return Err(inv(
                    "/",
                    format!("expected {ROOT} in {NS}, found {}", describe(&other)),
                ))
            }
        }
        let p = |name: &str| format!("{ROOT}/{name}");
        let version = self.leaf(&p("versioneOggetto"))?;
        if version != "1.0" && version != "1.1" {
            return Err(inv(
                &p("versioneOggetto"),
                format!("{version:?} is not 1.0 or 1.1"),
            ));
        }
        let iuf_text = self.leaf(&p("identificativoFlusso"))?;
        let iuf =
            Iuf::parse(&iuf_text).map_err(|e| inv(&p("identificativoFlusso"), e.to_string()))?;
        let time_text = self.leaf(&p("dataOraFlusso"))?;
        let flow_time = xsd_date_time(&time_text).map_err(|r| inv(&p("dataOraFlusso"), r))?;
        let regulation_id = self.leaf(&p("identificativoUnivocoRegolamento"))?;
        text35(&regulation_id, &p("identificativoUnivocoRegolamento"))?;
        let reg_date = self.leaf(&p("dataRegolamento"))?;
        let regulation_date = xsd_date(&reg_date).map_err(|r| inv(&p("dataRegolamento"), r))?;

        self.open(&p("istitutoMittente"))?;
        let q = |name: &str| format!("{ROOT}/istitutoMittente/{name}");
        self.open(&q("identificativoUnivocoMittente"))?;
        let r =
            |name: &str| format!("{ROOT}/istitutoMittente/identificativoUnivocoMittente/{name}");
        let kind_text = self.leaf(&r("tipoIdentificativoUnivoco"))?;
        let kind = SenderKind::from_xml_code(&kind_text)
            .map_err(|e| inv(&r("tipoIdentificativoUnivoco"), e.to_string()))?;
        let sender_id = self.leaf(&r("codiceIdentificativoUnivoco"))?;
        text35(&sender_id, &r("codiceIdentificativoUnivoco"))?;
        self.close(&q("identificativoUnivocoMittente"))?;
        let sender_name = self.optional_leaf("denominazioneMittente")?;
        if let Some(n) = &sender_name {
            check_text("denominazioneMittente", n, 3, 70)
                .map_err(|e| inv(&q("denominazioneMittente"), e.to_string()))?;
        }
        self.close(&p("istitutoMittente"))?;

        let bic = self.optional_leaf("codiceBicBancaDiRiversamento")?;
        if let Some(b) = &bic {
            text35(b, &p("codiceBicBancaDiRiversamento"))?;
        }

        self.open(&p("istitutoRicevente"))?;
        let q = |name: &str| format!("{ROOT}/istitutoRicevente/{name}");
        self.open(&q("identificativoUnivocoRicevente"))?;
        let r =
            |name: &str| format!("{ROOT}/istitutoRicevente/identificativoUnivocoRicevente/{name}");
        let kind_text = self.leaf(&r("tipoIdentificativoUnivoco"))?;
        if kind_text != "G" {
            return Err(inv(
                &r("tipoIdentificativoUnivoco"),
                format!("{kind_text:?} is not G (the receiver is always a legal person)"),
            ));
        }
        let receiver_id = self.leaf(&r("codiceIdentificativoUnivoco"))?;
        text35(&receiver_id, &r("codiceIdentificativoUnivoco"))?;
        self.close(&q("identificativoUnivocoRicevente"))?;
        let receiver_name = self.optional_leaf("denominazioneRicevente")?;
        if let Some(n) = &receiver_name {
            check_text("denominazioneRicevente", n, 1, 140)
                .map_err(|e| inv(&q("denominazioneRicevente"), e.to_string()))?;
        }
        self.close(&p("istitutoRicevente"))?;

        let count_text = self.leaf(&p("numeroTotalePagamenti"))?;
        let declared_count =
            xsd_count(&count_text).map_err(|r| inv(&p("numeroTotalePagamenti"), r))?;
        let total_text = self.leaf(&p("importoTotalePagamenti"))?;
        let declared_amount = xsd_amount(&total_text, AmountRule::Total)
            .map_err(|r| inv(&p("importoTotalePagamenti"), r))?;

        let psp_id = psp_id
            .map(str::to_owned)
            .or_else(|| iuf.psp_hint().map(str::to_owned))
            .unwrap_or_else(|| sender_id.clone());
        Ok(SettlementFlow {
            iuf,
            psp_id,
            revision: 1,
            flow_time,
            regulation_id,
            regulation_date,
            sender: FlowSender {
                kind,
                id: sender_id,
                name: sender_name,
                broker_id: None,
                channel_id: None,
            },
            bic_code_pouring_bank: bic,
            receiver: FlowReceiver {
                organization_id: receiver_id.clone(),
                id: receiver_id,
                name: receiver_name,
            },
            declared_count,
            declared_amount,
            published: None,
        })
    }

    // --- the flat walk -----------------------------------------------------------------------

    fn peek(&mut self) -> Result<&Ev, FdrXmlError> {
        if self.peeked.is_none() {
            let ev = self.read_ev()?;
            self.peeked = Some(ev);
        }
        Ok(self.peeked.get_or_insert(Ev::Eof))
    }

    fn next(&mut self) -> Result<Ev, FdrXmlError> {
        match self.peeked.take() {
            Some(ev) => Ok(ev),
            None => self.read_ev(),
        }
    }

    fn open(&mut self, path: &str) -> Result<(), FdrXmlError> {
        let name = last(path);
        match self.next()? {
            Ev::Open(n) if n == name => Ok(()),
            other => Err(inv(path, format!("missing; found {}", describe(&other)))),
        }
    }

    fn close(&mut self, path: &str) -> Result<(), FdrXmlError> {
        match self.next()? {
            Ev::Close => Ok(()),
            other => Err(inv(
                path,
                format!("expected its end, found {}", describe(&other)),
            )),
        }
    }

    fn leaf(&mut self, path: &str) -> Result<String, FdrXmlError> {
        let name = last(path);
        match self.next()? {
            Ev::Leaf(n, text) if n == name => Ok(text),
            Ev::Open(n) if n == name => Err(inv(path, "expected text, found child elements")),
            other => Err(inv(path, format!("missing; found {}", describe(&other)))),
        }
    }

    fn optional_leaf(&mut self, name: &str) -> Result<Option<String>, FdrXmlError> {
        match self.peek()? {
            Ev::Leaf(n, _) if n == name => match self.next()? {
                Ev::Leaf(_, text) => Ok(Some(text)),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// The next step: an element holding only text is a leaf; one holding elements opens.
    fn read_ev(&mut self) -> Result<Ev, FdrXmlError> {
        if let Some(ev) = self.pending.take() {
            return Ok(ev);
        }
        // An element whose start was read but not yet classified (leaf or container).
        let mut open: Option<String> = self.started.take();
        let mut text = String::new();
        loop {
            self.buf.clear();
            let (ns, event) = self
                .reader
                .read_resolved_event_into(&mut self.buf)
                .map_err(not_xml)?;
            match event {
                Event::Start(e) => {
                    let name = element_name(ns, e.local_name().into_inner())?;
                    if !is_ws(&text) {
                        return Err(inv(&name, "text beside elements"));
                    }
                    if let Some(parent) = open.take() {
                        self.started = Some(name);
                        return Ok(Ev::Open(parent));
                    }
                    open = Some(name);
                    text.clear();
                }
                Event::Empty(e) => {
                    let name = element_name(ns, e.local_name().into_inner())?;
                    if !is_ws(&text) {
                        return Err(inv(&name, "text beside elements"));
                    }
                    if let Some(parent) = open.take() {
                        self.pending = Some(Ev::Leaf(name, String::new()));
                        return Ok(Ev::Open(parent));
                    }
                    return Ok(Ev::Leaf(name, String::new()));
                }
                Event::End(e) => {
                    return match open.take() {
                        Some(name) => {
                            xml_chars(&text, &name)?;
                            Ok(Ev::Leaf(name, text))
                        }
                        None if is_ws(&text) => Ok(Ev::Close),
                        None => Err(inv(
                            &String::from_utf8_lossy(e.local_name().into_inner()),
                            "text beside elements",
                        )),
                    };
                }
                Event::Text(t) => {
                    let s = t.xml10_content().map_err(not_xml)?;
                    text.push_str(&s);
                }
                Event::CData(c) => {
                    text.push_str(std::str::from_utf8(&c).map_err(not_xml)?);
                }
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().map_err(not_xml)? {
                        text.push(c);
                    } else {
                        let name = r.decode().map_err(not_xml)?;
                        match quick_xml::escape::resolve_xml_entity(&name) {
                            Some(v) => text.push_str(v),
                            None => {
                                return Err(FdrXmlError::NotXml(format!("unknown entity &{name};")))
                            }
                        }
                    }
                }
                Event::DocType(_) => {
                    return Err(FdrXmlError::NotXml("a DTD is not accepted".into()))
                }
                Event::Eof => {
                    if open.is_some() {
                        return Err(FdrXmlError::NotXml("unexpected end of document".into()));
                    }
                    return Ok(Ev::Eof);
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
    }
}

impl<R: BufRead> Iterator for FlowReader<R> {
    type Item = Result<SettlementPayment, FdrXmlError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_payment() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A whole document at once: the header and every row.
pub fn parse_flow(
    input: &[u8],
    psp_id: Option<&str>,
) -> Result<(SettlementFlow, Vec<SettlementPayment>), FdrXmlError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut reader = FlowReader::new(input, psp_id)?;
    let mut rows = Vec::new();
    while let Some(p) = reader.next_payment()? {
        rows.push(p);
    }
    Ok((reader.into_header(), rows))
}

fn placeholder() -> SettlementFlow {
    SettlementFlow {
        iuf: Iuf::parse("x").unwrap_or_else(|_| unreachable!()),
        psp_id: String::new(),
        revision: 1,
        flow_time: DateTime::<Utc>::MIN_UTC,
        regulation_id: String::new(),
        regulation_date: NaiveDate::MIN,
        sender: FlowSender {
            kind: SenderKind::LegalPerson,
            id: String::new(),
            name: None,
            broker_id: None,
            channel_id: None,
        },
        bic_code_pouring_bank: None,
        receiver: FlowReceiver {
            id: String::new(),
            organization_id: String::new(),
            name: None,
        },
        declared_count: 0,
        declared_amount: Amount::ZERO,
        published: None,
    }
}

fn element_name(ns: ResolveResult<'_>, local: &[u8]) -> Result<String, FdrXmlError> {
    let name = std::str::from_utf8(local).map_err(not_xml)?.to_owned();
    match ns {
        ResolveResult::Bound(n) if n.into_inner() == NS.as_bytes() => Ok(name),
        ResolveResult::Bound(n) => Err(inv(
            &name,
            format!(
                "in namespace {:?}, expected {NS}",
                String::from_utf8_lossy(n.into_inner())
            ),
        )),
        ResolveResult::Unbound => Err(inv(&name, format!("has no namespace, expected {NS}"))),
        ResolveResult::Unknown(p) => Err(FdrXmlError::NotXml(format!(
            "undeclared namespace prefix {:?}",
            String::from_utf8_lossy(&p)
        ))),
    }
}

fn describe(ev: &Ev) -> String {
    match ev {
        Ev::Open(n) | Ev::Leaf(n, _) => format!("<{n}>"),
        Ev::Close => "the end of the parent".into(),
        Ev::Eof => "the end of the document".into(),
    }
}

fn last(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn inv(path: &str, reason: impl Into<String>) -> FdrXmlError {
    FdrXmlError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn is_ws(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn text35(v: &str, path: &str) -> Result<(), FdrXmlError> {
    check_text("the value", v, 1, 35).map_err(|e| inv(path, e.to_string()))
}

#[derive(Clone, Copy)]
enum AmountRule {
    /// `stImporto`: 0.01 to 999999999.99.
    Positive,
    /// `stImporto`, or its negative (a revoked payment).
    Signed,
    /// `stImportoTotalePagamenti`: up to 999999999.99.
    Total,
}

const MAX_CENTS: i64 = 99_999_999_999;

/// `\d+\.\d{2}` within the type's range, into cents.
fn xsd_amount(text: &str, rule: AmountRule) -> Result<Amount, String> {
    let (negative, digits) = match (rule, text.strip_prefix('-')) {
        (AmountRule::Signed, Some(rest)) => (true, rest),
        _ => (false, text),
    };
    let shape_ok = digits.split_once('.').is_some_and(|(i, d)| {
        !i.is_empty()
            && d.len() == 2
            && i.bytes().all(|b| b.is_ascii_digit())
            && d.bytes().all(|b| b.is_ascii_digit())
    });
    if !shape_ok {
        return Err(format!(
            "{text:?} is not an amount with two decimals (like 12.50)"
        ));
    }
    let a = Amount::parse_decimal(digits).map_err(|e| format!("{text:?}: {e}"))?;
    if a.cents() > MAX_CENTS {
        return Err(format!("{text} is above 999999999.99"));
    }
    if matches!(rule, AmountRule::Positive | AmountRule::Signed) && a.cents() == 0 {
        return Err("amount must be at least 0.01".into());
    }
    Ok(if negative {
        Amount::from_cents(-a.cents())
    } else {
        a
    })
}

/// `stNumeroTotalePagamenti`: an integer from 1, at most 15 digits.
fn xsd_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 15 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a whole number of payments"));
    }
    match t.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} must be at least 1")),
    }
}

fn xsd_date(text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    // xsd:date may carry a zone (`2021-07-27Z`, `2021-07-27+02:00`); the day is what counts.
    let day = t.get(..10).unwrap_or(t);
    let rest = t.get(10..).unwrap_or("");
    let zone_ok = rest.is_empty()
        || rest == "Z"
        || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')));
    match NaiveDate::parse_from_str(day, "%Y-%m-%d") {
        Ok(d) if zone_ok => Ok(d),
        _ => Err(format!("{text:?} is not a date (yyyy-mm-dd)")),
    }
}

/// `xsd:dateTime`: with a zone it is that instant; without one (as the node writes it) it is
/// Rome's local time.
fn xsd_date_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|_| format!("{text:?} is not a date-time (yyyy-mm-ddThh:mm:ss)"))?;
    Ok(match Rome.from_local_datetime(&naive) {
        LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => dt.with_timezone(&Utc),
        // A time skipped by the spring change: read it as standard time.
        LocalResult::None => Utc.from_utc_datetime(&(naive - chrono::Duration::hours(1))),
    })
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Writes `flow` with `payments` as a FlussoRiversamento 1.0 document, row by row. Optional
/// names that do not fit the XSD's lengths are left out rather than cut.
pub fn write_flow<'a, W: Write>(
    out: &mut W,
    flow: &SettlementFlow,
    payments: impl IntoIterator<Item = &'a SettlementPayment>,
) -> io::Result<()> {
    let mut x = XmlText::with_capacity(2048);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!("<{ROOT} xmlns=\"{NS}\">"));
    x.raw("versioneOggetto", "1.0");
    x.leaf("identificativoFlusso", flow.iuf.as_str());
    x.raw(
        "dataOraFlusso",
        flow.flow_time
            .with_timezone(&Rome)
            .format("%Y-%m-%dT%H:%M:%S"),
    );
    x.leaf("identificativoUnivocoRegolamento", &flow.regulation_id);
    x.raw("dataRegolamento", flow.regulation_date.format("%Y-%m-%d"));
    x.open("istitutoMittente");
    x.open("identificativoUnivocoMittente");
    x.raw("tipoIdentificativoUnivoco", flow.sender.kind.xml_code());
    x.leaf("codiceIdentificativoUnivoco", &flow.sender.id);
    x.close("identificativoUnivocoMittente");
    if let Some(n) = flow.sender.name.as_deref().filter(|n| fits(n, 3, 70)) {
        x.leaf("denominazioneMittente", n);
    }
    x.close("istitutoMittente");
    if let Some(b) = flow
        .bic_code_pouring_bank
        .as_deref()
        .filter(|b| fits(b, 1, 35))
    {
        x.leaf("codiceBicBancaDiRiversamento", b);
    }
    x.open("istitutoRicevente");
    x.open("identificativoUnivocoRicevente");
    x.raw("tipoIdentificativoUnivoco", "G");
    x.leaf("codiceIdentificativoUnivoco", &flow.receiver.id);
    x.close("identificativoUnivocoRicevente");
    if let Some(n) = flow.receiver.name.as_deref().filter(|n| fits(n, 1, 140)) {
        x.leaf("denominazioneRicevente", n);
    }
    x.close("istitutoRicevente");
    x.raw("numeroTotalePagamenti", flow.declared_count);
    x.raw("importoTotalePagamenti", flow.declared_amount);
    out.write_all(x.into_string().as_bytes())?;

    for p in payments {
        let mut x = XmlText::with_capacity(400);
        x.open(ROW);
        x.leaf("identificativoUnivocoVersamento", &p.iuv);
        x.leaf("identificativoUnivocoRiscossione", &p.iur);
        if let Some(i) = p.transfer_index {
            x.raw("indiceDatiSingoloPagamento", i);
        }
        x.raw("singoloImportoPagato", p.amount);
        x.raw("codiceEsitoSingoloPagamento", p.status.esito());
        x.raw("dataEsitoSingoloPagamento", p.date.format("%Y-%m-%d"));
        x.close(ROW);
        out.write_all(x.into_string().as_bytes())?;
    }
    out.write_all(format!("</{ROOT}>\n").as_bytes())
}

/// [`write_flow`] into bytes.
pub fn render_flow(flow: &SettlementFlow, payments: &[SettlementPayment]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + payments.len() * 330);
    // Writing to a Vec cannot fail.
    let _ = write_flow(&mut out, flow, payments);
    out
}

fn fits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.chars().count())
}
