//! OPI "giornale di cassa" XML (`opi`): the treasurer's daily journal of an entity's account,
//! versions 1.4, 1.6.1, 1.7.1 and 1.8 (root `flusso_giornale_di_cassa`, no namespace; XSDs in
//! `adapters/specs/opi/`).
//!
//! Read as a stream: [`OpiReader::new`] reads the header (up to the first
//! `informazioni_conto_evidenza`), then [`OpiReader::next_movement`] hands out one movement at a
//! time, so memory does not grow with the file. The signature (`ds:Signature`, and any other
//! element in a namespace) is skipped unread.
//!
//! Only incoming movements count for reconciliation (as MyPivot's `LoadFlussoOPI` and PU's
//! `TreasuryMapperOpi*` take them): `tipo_movimento = ENTRATA` with `tipo_documento = SOSPESO
//! ENTRATA`, and `tipo_operazione` `ESEGUITO` (booked) or `STORNATO` (reversed). Every other
//! movement is skipped and counted ([`OpiCounts`]). The movement's key is (`esercizio`,
//! `numero_bolletta_quietanza`), the bill as a number without leading zeros.
//!
//! The reader checks what it reads against the XSD (enumerations, amounts, dates, the header's
//! patterns), for every movement, kept or not; it is not a full XSD validator (element order
//! and fields it does not read are not checked). Beyond the XSD, a kept movement must have its
//! bill number (the key) and its causale. Errors name the movement (its number in the file, its
//! bill), the element's path and the rule.

use std::io::BufRead;

use chrono::NaiveDate;
use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::NsReader;
use snodo_core::treasury::{
    extract, parse_amount, parse_bill_number, parse_date, parse_year, DateFormat, DecimalMark,
    MovementOperation, TreasuryMovement,
};

const ROOT: &str = "flusso_giornale_di_cassa";
const ACCOUNT: &str = "informazioni_conto_evidenza";
const MOVEMENT: &str = "movimento_conto_evidenza";
/// Longest text of one element the reader takes (a causale is at most a few hundred characters).
const MAX_TEXT: usize = 64 * 1024;

/// Why a file is not an OPI giornale di cassa the hub can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpiError {
    #[error("not well-formed XML: {0}")]
    NotXml(String),
    /// Outside the movements; `path` is like `flusso_giornale_di_cassa/esercizio`.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// In a movement: `number` counts every `movimento_conto_evidenza` of the file from 1.
    #[error("movement {number} ({}) at {path}: {reason}", bill_text(.bill))]
    Movement {
        number: u64,
        bill: Option<String>,
        path: String,
        reason: String,
    },
}

fn bill_text(bill: &Option<String>) -> String {
    match bill {
        Some(b) => format!("bill {b}"),
        None => "no bill number".into(),
    }
}

/// Which OPI schema the file follows. The file names no version: 1.4 has
/// `data_inizio_periodo_riferimento`, 1.6.1 to 1.8 have `data_riferimento_GdC` (1.6.1, 1.7.1
/// and 1.8 have the same elements; only the values of `tipo_esecuzione`, not read here, differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpiVersion {
    V1_4,
    V1_6_1To1_8,
}

impl OpiVersion {
    pub fn name(self) -> &'static str {
        match self {
            OpiVersion::V1_4 => "1.4",
            OpiVersion::V1_6_1To1_8 => "1.6.1-1.8",
        }
    }
}

/// The file's facts, from `testata_messaggio` and the elements before the first account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpiHeader {
    pub version: OpiVersion,
    /// `codice_ABI_BT`: the treasurer bank.
    pub abi_bt: String,
    /// `codice_ente`: the entity's code at SIOPE+ (its IPA code).
    pub entity_code: String,
    /// `codice_fiscale_ente`.
    pub entity_fiscal_code: String,
    /// `identificativo_flusso_BT`, e.g. `GDC-…#001#001`.
    pub flow_id: String,
    /// `pagina` / `pagine_totali` (optional in 1.4).
    pub page: Option<u32>,
    pub total_pages: Option<u32>,
    /// `esercizio`: the year of every movement of the file.
    pub year: u16,
    /// `data_riferimento_GdC` (1.6.1 to 1.8).
    pub reference_date: Option<NaiveDate>,
    /// `data_inizio_periodo_riferimento`, `data_fine_periodo_riferimento` (1.4).
    pub period: Option<(NaiveDate, NaiveDate)>,
}

/// What the reader has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpiCounts {
    /// Every `movimento_conto_evidenza`.
    pub movements: u64,
    /// Handed out by [`OpiReader::next_movement`].
    pub kept: u64,
    /// Not `ENTRATA` with `SOSPESO ENTRATA` (payments, orders, other documents).
    pub not_incoming: u64,
    /// Incoming, but `REGOLARIZZATO` or `RIPRISTINATO`: no money moves.
    pub other_operation: u64,
}

/// One step of the walk over elements without a namespace.
enum Step {
    /// An element started; `depth` is its own (the root is 1).
    Open {
        name: String,
        depth: usize,
    },
    /// An element ended; `text` is its content when it held no elements.
    Close {
        name: String,
        depth: usize,
        text: Option<String>,
    },
    Eof,
}

struct Frame {
    name: String,
    children: bool,
}

/// The XML walk: elements in a namespace (the signature) are skipped whole; text is gathered
/// for the innermost element while it has no children.
struct Walker<R: BufRead> {
    reader: NsReader<R>,
    buf: Vec<u8>,
    stack: Vec<Frame>,
    text: String,
    /// The close of an empty element (`<a/>`), handed out after its open.
    pending: Option<Step>,
    root_seen: bool,
    root_closed: bool,
}

fn not_xml(e: impl std::fmt::Display) -> OpiError {
    OpiError::NotXml(e.to_string())
}

fn is_ws(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

impl<R: BufRead> Walker<R> {
    fn new(input: R) -> Self {
        let mut reader = NsReader::from_reader(input);
        reader.config_mut().trim_text(false);
        Walker {
            reader,
            buf: Vec::with_capacity(512),
            stack: Vec::with_capacity(8),
            text: String::new(),
            pending: None,
            root_seen: false,
            root_closed: false,
        }
    }

    fn path(&self) -> String {
        path_of(&self.stack)
    }

    /// The name of the open element at `depth` (the root is 1).
    fn name_at(&self, depth: usize) -> &str {
        depth
            .checked_sub(1)
            .and_then(|i| self.stack.get(i))
            .map_or("", |f| f.name.as_str())
    }

    fn next(&mut self) -> Result<Step, OpiError> {
        if let Some(step) = self.pending.take() {
            return Ok(step);
        }
        loop {
            self.buf.clear();
            let (ns, event) = self
                .reader
                .read_resolved_event_into(&mut self.buf)
                .map_err(not_xml)?;
            let empty = matches!(event, Event::Empty(_));
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    match ns {
                        ResolveResult::Unbound => {}
                        ResolveResult::Unknown(p) => {
                            return Err(OpiError::NotXml(format!(
                                "undeclared namespace prefix {:?}",
                                String::from_utf8_lossy(&p)
                            )))
                        }
                        ResolveResult::Bound(_) => {
                            if self.stack.is_empty() {
                                return Err(OpiError::Invalid {
                                    path: "/".into(),
                                    reason: format!("expected {ROOT} without a namespace"),
                                });
                            }
                            // The signature, or a bank's own data: skipped unread.
                            if let Some(parent) = self.stack.last_mut() {
                                parent.children = true;
                            }
                            self.text.clear();
                            if !empty {
                                let qname = e.name().as_ref().to_vec();
                                let mut skipped = Vec::new();
                                self.reader
                                    .read_to_end_into(QName(&qname), &mut skipped)
                                    .map_err(not_xml)?;
                            }
                            continue;
                        }
                    }
                    let name = std::str::from_utf8(e.local_name().into_inner())
                        .map_err(not_xml)?
                        .to_owned();
                    let open = self.open(name)?;
                    if empty {
                        self.pending = Some(self.close());
                    }
                    return Ok(open);
                }
                Event::End(_) => return Ok(self.close()),
                Event::Text(t) => {
                    let s = t.xml10_content().map_err(not_xml)?;
                    push_text(&self.stack, &mut self.text, &s)?;
                }
                Event::CData(c) => {
                    let s = std::str::from_utf8(&c).map_err(not_xml)?.to_owned();
                    push_text(&self.stack, &mut self.text, &s)?;
                }
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref().map_err(not_xml)? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.decode().map_err(not_xml)?;
                            quick_xml::escape::resolve_xml_entity(&name)
                                .ok_or_else(|| {
                                    OpiError::NotXml(format!("unknown entity &{name};"))
                                })?
                                .to_owned()
                        }
                    };
                    push_text(&self.stack, &mut self.text, &c)?;
                }
                Event::Decl(d) => {
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(not_xml)?;
                        if !(enc.eq_ignore_ascii_case(b"UTF-8")
                            || enc.eq_ignore_ascii_case(b"UTF8"))
                        {
                            return Err(OpiError::NotXml(format!(
                                "the declared encoding is {:?}; an OPI file must be UTF-8",
                                String::from_utf8_lossy(&enc)
                            )));
                        }
                    }
                }
                Event::DocType(_) => {
                    return Err(OpiError::NotXml("a DTD is not accepted".into()));
                }
                Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => {
                    if !self.stack.is_empty() {
                        return Err(OpiError::NotXml("unexpected end of document".into()));
                    }
                    if !self.root_seen {
                        return Err(OpiError::NotXml("no root element".into()));
                    }
                    return Ok(Step::Eof);
                }
            }
        }
    }

    fn open(&mut self, name: String) -> Result<Step, OpiError> {
        if self.root_closed {
            return Err(OpiError::Invalid {
                path: "/".into(),
                reason: format!("<{name}> after the root element"),
            });
        }
        if self.stack.is_empty() && name != ROOT {
            return Err(OpiError::Invalid {
                path: "/".into(),
                reason: format!("expected {ROOT}, found <{name}>"),
            });
        }
        self.root_seen = true;
        if let Some(parent) = self.stack.last_mut() {
            parent.children = true;
        }
        self.stack.push(Frame {
            name: name.clone(),
            children: false,
        });
        self.text.clear();
        Ok(Step::Open {
            name,
            depth: self.stack.len(),
        })
    }

    fn close(&mut self) -> Step {
        let depth = self.stack.len();
        let frame = self.stack.pop().unwrap_or(Frame {
            name: String::new(),
            children: true,
        });
        let text = (!frame.children).then(|| std::mem::take(&mut self.text));
        self.text.clear();
        if self.stack.is_empty() {
            self.root_closed = true;
        }
        Step::Close {
            name: frame.name,
            depth,
            text,
        }
    }
}

fn path_of(stack: &[Frame]) -> String {
    let names: Vec<&str> = stack.iter().map(|f| f.name.as_str()).collect();
    names.join("/")
}

/// Gathers text for the innermost element, while it has no children.
fn push_text(stack: &[Frame], text: &mut String, s: &str) -> Result<(), OpiError> {
    match stack.last() {
        // Text beside elements (mixed content, as in dati_a_disposizione_BT) is not read.
        Some(top) if top.children => Ok(()),
        Some(_) => {
            if let Some(c) = s
                .chars()
                .find(|&c| u32::from(c) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(OpiError::NotXml(format!(
                    "{}: character U+{:04X} is not allowed in XML",
                    path_of(stack),
                    u32::from(c)
                )));
            }
            if text.len() + s.len() > MAX_TEXT {
                return Err(OpiError::Invalid {
                    path: path_of(stack),
                    reason: format!("text longer than {MAX_TEXT} bytes"),
                });
            }
            text.push_str(s);
            Ok(())
        }
        None if is_ws(s) => Ok(()),
        None => Err(OpiError::NotXml("text outside the root element".into())),
    }
}

// ---------------------------------------------------------------------------------------------

/// Stores a leaf's text in its slot: once, and only if it is text.
fn put(slot: &mut Option<String>, text: Option<String>) -> Result<(), &'static str> {
    if slot.is_some() {
        return Err("appears twice");
    }
    match text {
        Some(t) => {
            *slot = Some(t);
            Ok(())
        }
        None => Err("expected text, found child elements"),
    }
}

#[derive(Default)]
struct HeaderFields {
    abi_bt: Option<String>,
    entity_code: Option<String>,
    entity_fiscal_code: Option<String>,
    flow_id: Option<String>,
    page: Option<String>,
    total_pages: Option<String>,
    year: Option<String>,
    reference_date: Option<String>,
    period_start: Option<String>,
    period_end: Option<String>,
}

impl HeaderFields {
    fn slot(&mut self, parent: &str, name: &str) -> Option<&mut Option<String>> {
        Some(match (parent, name) {
            ("testata_messaggio", "codice_ABI_BT") => &mut self.abi_bt,
            ("testata_messaggio", "codice_ente") => &mut self.entity_code,
            ("testata_messaggio", "codice_fiscale_ente") => &mut self.entity_fiscal_code,
            (ROOT, "identificativo_flusso_BT") => &mut self.flow_id,
            (ROOT, "pagina") => &mut self.page,
            (ROOT, "pagine_totali") => &mut self.total_pages,
            (ROOT, "esercizio") => &mut self.year,
            (ROOT, "data_riferimento_GdC") => &mut self.reference_date,
            (ROOT, "data_inizio_periodo_riferimento") => &mut self.period_start,
            (ROOT, "data_fine_periodo_riferimento") => &mut self.period_end,
            _ => return None,
        })
    }

    fn finish(self) -> Result<OpiHeader, OpiError> {
        let inv = |name: &str, reason: String| OpiError::Invalid {
            path: format!("{ROOT}/{name}"),
            reason,
        };
        let required = |v: Option<String>, name: &str| {
            v.map(|s| s.trim().to_owned())
                .ok_or_else(|| inv(name, "missing".into()))
        };
        let version = match (&self.reference_date, &self.period_start) {
            (Some(_), _) => OpiVersion::V1_6_1To1_8,
            (None, Some(_)) => OpiVersion::V1_4,
            (None, None) => {
                return Err(inv(
                    "data_riferimento_GdC",
                    "missing: OPI 1.6.1 to 1.8 have data_riferimento_GdC, OPI 1.4 \
                     data_inizio_periodo_riferimento"
                        .into(),
                ))
            }
        };
        let abi_bt = required(self.abi_bt, "testata_messaggio/codice_ABI_BT")?;
        if abi_bt.len() != 5 || !abi_bt.bytes().all(|b| b.is_ascii_digit()) {
            return Err(inv(
                "testata_messaggio/codice_ABI_BT",
                format!("{abi_bt:?} is not 5 digits"),
            ));
        }
        let entity_code = required(self.entity_code, "testata_messaggio/codice_ente")?;
        let cf = required(
            self.entity_fiscal_code,
            "testata_messaggio/codice_fiscale_ente",
        )?;
        if !(11..=16).contains(&cf.len())
            || !cf
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(inv(
                "testata_messaggio/codice_fiscale_ente",
                format!("{cf:?} is not 11 to 16 capital letters or digits"),
            ));
        }
        let flow_id = required(self.flow_id, "identificativo_flusso_BT")?;
        let flow_id_ok = match version {
            OpiVersion::V1_4 => !flow_id.is_empty(),
            OpiVersion::V1_6_1To1_8 => gdc_flow_id(&flow_id),
        };
        if !flow_id_ok {
            return Err(inv(
                "identificativo_flusso_BT",
                format!("{flow_id:?} does not match GDC-<8 digits><10 to 50 letters or digits>#<3 digits>#<3 digits>"),
            ));
        }
        let page_number = |v: Option<String>, name: &str| -> Result<Option<u32>, OpiError> {
            match v {
                None if version == OpiVersion::V1_4 => Ok(None),
                None => Err(inv(name, "missing".into())),
                Some(t) => t
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=9_999_999).contains(n))
                    .map(Some)
                    .ok_or_else(|| inv(name, format!("{t:?} is not a number from 1 to 9999999"))),
            }
        };
        let page = page_number(self.page, "pagina")?;
        let total_pages = page_number(self.total_pages, "pagine_totali")?;
        let year_text = required(self.year, "esercizio")?;
        let year =
            parse_year("esercizio", &year_text).map_err(|e| inv("esercizio", e.to_string()))?;
        let date = |v: Option<String>, name: &'static str| -> Result<Option<NaiveDate>, OpiError> {
            v.map(|t| parse_date(name, &t, DateFormat::Iso).map_err(|e| inv(name, e.to_string())))
                .transpose()
        };
        let reference_date = date(self.reference_date, "data_riferimento_GdC")?;
        let period = match version {
            OpiVersion::V1_4 => {
                let start = date(self.period_start, "data_inizio_periodo_riferimento")?;
                let end = date(self.period_end, "data_fine_periodo_riferimento")?;
                match (start, end) {
                    (Some(s), Some(e)) => Some((s, e)),
                    _ => return Err(inv("data_fine_periodo_riferimento", "missing".into())),
                }
            }
            OpiVersion::V1_6_1To1_8 => None,
        };
        Ok(OpiHeader {
            version,
            abi_bt,
            entity_code,
            entity_fiscal_code: cf,
            flow_id,
            page,
            total_pages,
            year,
            reference_date,
            period,
        })
    }
}

/// `GDC-[0-9]{8}[A-Za-z0-9]{10,50}#[0-9]{3}#[0-9]{3}`, at most 70 characters (OPI 1.6.1+).
fn gdc_flow_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("GDC-") else {
        return false;
    };
    let b = rest.as_bytes();
    let n = b.len();
    if s.len() > 70 || n < 8 + 10 + 8 {
        return false;
    }
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    let (head, tail) = b.split_at(n - 8);
    digits(&head[..8])
        && head[8..].iter().all(u8::is_ascii_alphanumeric)
        && (10..=50).contains(&(head.len() - 8))
        && tail[0] == b'#'
        && digits(&tail[1..4])
        && tail[4] == b'#'
        && digits(&tail[5..8])
}

const MOVEMENT_KINDS: [&str; 2] = ["ENTRATA", "USCITA"];
const DOCUMENT_KINDS: [&str; 8] = [
    "REVERSALE",
    "MANDATO",
    "SOSPESO ENTRATA",
    "SOSPESO USCITA",
    "ANTICIPAZIONE",
    "GIROCONTO",
    "FONDO DI CASSA",
    "DEFICIT DI CASSA",
];
const OPERATIONS: [&str; 4] = ["ESEGUITO", "STORNATO", "REGOLARIZZATO", "RIPRISTINATO"];

#[derive(Default)]
struct MovementFields {
    kind: Option<String>,
    document: Option<String>,
    operation: Option<String>,
    amount: Option<String>,
    bill: Option<String>,
    date: Option<String>,
    value_date: Option<String>,
    causale: Option<String>,
    payer: Option<String>,
    end_to_end_id: Option<String>,
}

impl MovementFields {
    /// The slot of a leaf, by its path below the movement.
    fn slot(&mut self, rel: &str) -> Option<&mut Option<String>> {
        Some(match rel {
            "tipo_movimento" => &mut self.kind,
            "tipo_documento" => &mut self.document,
            "tipo_operazione" => &mut self.operation,
            "importo" => &mut self.amount,
            "numero_bolletta_quietanza" => &mut self.bill,
            "data_movimento" => &mut self.date,
            "data_valuta_ente" => &mut self.value_date,
            "causale" => &mut self.causale,
            "cliente/anagrafica_cliente" => &mut self.payer,
            "end_to_end_id" => &mut self.end_to_end_id,
            _ => return None,
        })
    }
}

/// Reads an OPI giornale di cassa: the header on [`OpiReader::new`], then the movements.
pub struct OpiReader<R: BufRead> {
    walker: Walker<R>,
    header: OpiHeader,
    counts: OpiCounts,
    /// The current `informazioni_conto_evidenza` (from 1) and the movements read in it.
    account: u64,
    in_account: u64,
    done: bool,
}

impl<R: BufRead> OpiReader<R> {
    /// Reads up to the first account (`informazioni_conto_evidenza`) and checks the header.
    pub fn new(input: R) -> Result<OpiReader<R>, OpiError> {
        let mut walker = Walker::new(input);
        match walker.next()? {
            Step::Open { .. } => {}
            _ => return Err(OpiError::NotXml("no root element".into())),
        }
        let mut fields = HeaderFields::default();
        loop {
            match walker.next()? {
                Step::Open { name, depth: 2 } if name == ACCOUNT => break,
                Step::Close { name, depth, text } if depth == 2 || depth == 3 => {
                    let parent = walker.name_at(depth - 1).to_owned();
                    if let Some(slot) = fields.slot(&parent, &name) {
                        put(slot, text).map_err(|reason| OpiError::Invalid {
                            path: format!("{}/{name}", walker.path()),
                            reason: reason.into(),
                        })?;
                    }
                }
                Step::Close { depth: 1, .. } | Step::Eof => {
                    return Err(OpiError::Invalid {
                        path: ROOT.into(),
                        reason: format!("no {ACCOUNT}: the file holds no account"),
                    })
                }
                _ => {}
            }
        }
        let header = fields.finish()?;
        Ok(OpiReader {
            walker,
            header,
            counts: OpiCounts::default(),
            account: 1,
            in_account: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &OpiHeader {
        &self.header
    }

    pub fn counts(&self) -> OpiCounts {
        self.counts
    }

    /// The next incoming movement, `None` after the last (and the document's end, checked).
    /// After an error the reader is finished: further calls return `Ok(None)`.
    pub fn next_movement(&mut self) -> Result<Option<TreasuryMovement>, OpiError> {
        let next = self.advance();
        if next.is_err() {
            self.done = true;
        }
        next
    }

    fn advance(&mut self) -> Result<Option<TreasuryMovement>, OpiError> {
        while !self.done {
            match self.walker.next()? {
                Step::Open { name, depth: 2 } if name == ACCOUNT => {
                    self.account += 1;
                    self.in_account = 0;
                }
                Step::Open { name, depth: 3 }
                    if name == MOVEMENT && self.walker.name_at(2) == ACCOUNT =>
                {
                    if let Some(m) = self.read_movement()? {
                        self.counts.kept += 1;
                        return Ok(Some(m));
                    }
                }
                Step::Eof => self.done = true,
                _ => {}
            }
        }
        Ok(None)
    }

    /// Reads one `movimento_conto_evidenza` (its start was just read): the movement if it is
    /// an incoming one, `None` (counted) if not.
    fn read_movement(&mut self) -> Result<Option<TreasuryMovement>, OpiError> {
        self.counts.movements += 1;
        self.in_account += 1;
        let number = self.counts.movements;
        let base = format!(
            "{ROOT}/{ACCOUNT}[{}]/{MOVEMENT}[{}]",
            self.account, self.in_account
        );
        let mut f = MovementFields::default();
        let mut twice: Option<(String, &'static str)> = None;
        loop {
            match self.walker.next()? {
                Step::Close { depth: 3, .. } => break,
                Step::Close { name, depth, text } if depth == 4 || depth == 5 => {
                    let rel = if depth == 4 {
                        name
                    } else {
                        format!("{}/{name}", self.walker.name_at(4))
                    };
                    if let Some(slot) = f.slot(&rel) {
                        if let Err(reason) = put(slot, text) {
                            twice.get_or_insert((rel, reason));
                        }
                    }
                }
                Step::Eof => return Err(OpiError::NotXml("unexpected end of document".into())),
                _ => {}
            }
        }
        let bill_hint = f.bill.as_deref().map(|b| {
            parse_bill_number("numero_bolletta_quietanza", b)
                .unwrap_or_else(|_| b.trim().to_owned())
        });
        let err = |rel: &str, reason: String| OpiError::Movement {
            number,
            bill: bill_hint.clone(),
            path: format!("{base}/{rel}"),
            reason,
        };
        if let Some((rel, reason)) = twice {
            return Err(err(&rel, reason.into()));
        }
        let one_of =
            |v: &Option<String>, rel: &str, allowed: &[&str]| -> Result<String, OpiError> {
                let t = v
                    .as_deref()
                    .ok_or_else(|| err(rel, "missing".into()))?
                    .trim();
                if allowed.contains(&t) {
                    Ok(t.to_owned())
                } else {
                    Err(err(
                        rel,
                        format!("{t:?} is not one of {}", allowed.join(", ")),
                    ))
                }
            };
        let kind = one_of(&f.kind, "tipo_movimento", &MOVEMENT_KINDS)?;
        let document = one_of(&f.document, "tipo_documento", &DOCUMENT_KINDS)?;
        let operation = one_of(&f.operation, "tipo_operazione", &OPERATIONS)?;
        let amount_text = f
            .amount
            .as_deref()
            .ok_or_else(|| err("importo", "missing".into()))?;
        let amount = parse_amount("importo", amount_text, DecimalMark::Dot)
            .map_err(|e| err("importo", e.to_string()))?;
        let date_text = f
            .date
            .as_deref()
            .ok_or_else(|| err("data_movimento", "missing".into()))?;
        let date = parse_date("data_movimento", date_text, DateFormat::Iso)
            .map_err(|e| err("data_movimento", e.to_string()))?;
        if !(kind == "ENTRATA" && document == "SOSPESO ENTRATA") {
            self.counts.not_incoming += 1;
            return Ok(None);
        }
        let Some(operation) = MovementOperation::from_opi(&operation) else {
            self.counts.other_operation += 1;
            return Ok(None);
        };
        let bill_text = f.bill.as_deref().ok_or_else(|| {
            err(
                "numero_bolletta_quietanza",
                "missing: an incoming movement (SOSPESO ENTRATA) is keyed by its bill number"
                    .into(),
            )
        })?;
        let bill = parse_bill_number("numero_bolletta_quietanza", bill_text)
            .map_err(|e| err("numero_bolletta_quietanza", e.to_string()))?;
        let value_date = f
            .value_date
            .as_deref()
            .map(|t| {
                parse_date("data_valuta_ente", t, DateFormat::Iso)
                    .map_err(|e| err("data_valuta_ente", e.to_string()))
            })
            .transpose()?;
        let causale = f
            .causale
            .map(|c| c.trim().to_owned())
            .ok_or_else(|| err("causale", "missing".into()))?;
        let payer = f
            .payer
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        let end_to_end_id = f
            .end_to_end_id
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty());
        let movement = TreasuryMovement {
            year: self.header.year,
            bill,
            amount,
            accounting_date: Some(date),
            value_date: Some(value_date.unwrap_or(date)),
            reference: extract(&causale),
            causale,
            payer,
            end_to_end_id,
            operation,
        };
        movement.validate().map_err(|e| OpiError::Movement {
            number,
            bill: Some(movement.bill.clone()),
            path: base.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(movement))
    }
}

impl<R: BufRead> Iterator for OpiReader<R> {
    type Item = Result<TreasuryMovement, OpiError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_movement().transpose()
    }
}

/// A whole file at once: the header, the incoming movements and the counts.
pub fn parse_opi(input: &[u8]) -> Result<(OpiHeader, Vec<TreasuryMovement>, OpiCounts), OpiError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut reader = OpiReader::new(input)?;
    let mut movements = Vec::new();
    while let Some(m) = reader.next_movement()? {
        movements.push(m);
    }
    Ok((reader.header, movements, reader.counts))
}
