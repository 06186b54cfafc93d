//! Reading the SOAP envelope down to its payload.
//!
//! Only the Body's element becomes a tree: the Header is skipped unread, and the payload is small
//! (a receipt is a few hundred elements), so a tree is simpler than streaming into the structs
//! and lets the parser report element order errors precisely.

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{SoapError, PAF_NS, SOAP_ENV_NS};

/// Deepest payload accepted: the XSD's deepest path is 6 levels; this bounds memory and the
/// recursion of `Drop` against hostile nesting.
const MAX_DEPTH: usize = 16;

const SOAP12_NS: &[u8] = b"http://www.w3.org/2003/05/soap-envelope";

/// An element of the payload.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Local name.
    pub name: String,
    /// Namespace, when the element is qualified.
    pub ns: Option<String>,
    /// All character data directly inside, entities resolved.
    pub text: String,
    pub children: Vec<Node>,
}

/// The namespace of an element, classified without allocating for the common cases.
enum Ns {
    None,
    Soap,
    Soap12,
    Paf,
    Other(String),
}

impl Ns {
    fn of(res: ResolveResult<'_>) -> Result<Ns, SoapError> {
        match res {
            ResolveResult::Unbound => Ok(Ns::None),
            ResolveResult::Bound(ns) => {
                let ns = ns.into_inner();
                Ok(if ns == SOAP_ENV_NS.as_bytes() {
                    Ns::Soap
                } else if ns == PAF_NS.as_bytes() {
                    Ns::Paf
                } else if ns == SOAP12_NS {
                    Ns::Soap12
                } else {
                    Ns::Other(String::from_utf8_lossy(ns).into_owned())
                })
            }
            ResolveResult::Unknown(prefix) => Err(SoapError::NotXml(format!(
                "undeclared namespace prefix {:?}",
                String::from_utf8_lossy(&prefix)
            ))),
        }
    }

    fn into_string(self) -> Option<String> {
        match self {
            Ns::None => None,
            Ns::Soap => Some(SOAP_ENV_NS.to_owned()),
            Ns::Soap12 => Some(String::from_utf8_lossy(SOAP12_NS).into_owned()),
            Ns::Paf => Some(PAF_NS.to_owned()),
            Ns::Other(s) => Some(s),
        }
    }
}

/// Where the reader is in the envelope.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    BeforeEnvelope,
    /// Inside Envelope, Body not seen yet.
    Envelope,
    /// Inside Body, before its element.
    Body,
    /// Inside Body, after its element.
    BodyDone,
    /// Inside Envelope, after Body.
    AfterBody,
    AfterEnvelope,
}

fn not_xml(e: impl std::fmt::Display) -> SoapError {
    SoapError::NotXml(e.to_string())
}

fn local_name(e: &BytesStart<'_>) -> Result<String, SoapError> {
    std::str::from_utf8(e.local_name().into_inner())
        .map(str::to_owned)
        .map_err(not_xml)
}

/// XML whitespace (`S` production).
pub(crate) fn is_ws(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Rejects characters XML 1.0 forbids (control characters other than tab, LF, CR).
fn check_chars(s: &str) -> Result<(), SoapError> {
    match s.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        Some(c) => Err(SoapError::NotXml(format!(
            "character U+{:04X} is not allowed in XML",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

fn resolve_ref(r: &BytesRef<'_>, out: &mut String) -> Result<(), SoapError> {
    if let Some(c) = r.resolve_char_ref().map_err(not_xml)? {
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        check_chars(s)?;
        out.push_str(s);
        return Ok(());
    }
    let name = r.decode().map_err(not_xml)?;
    match resolve_xml_entity(&name) {
        Some(v) => {
            out.push_str(v);
            Ok(())
        }
        None => Err(SoapError::NotXml(format!("unknown entity &{name};"))),
    }
}

fn check_decl_encoding(d: &quick_xml::events::BytesDecl<'_>) -> Result<(), SoapError> {
    if let Some(enc) = d.encoding() {
        let enc = enc.map_err(not_xml)?;
        let ok = [&b"utf-8"[..], b"utf8", b"us-ascii", b"ascii"]
            .iter()
            .any(|e| enc.eq_ignore_ascii_case(e));
        if !ok {
            return Err(SoapError::NotXml(format!(
                "encoding {:?} is not supported, only UTF-8",
                String::from_utf8_lossy(&enc)
            )));
        }
    }
    Ok(())
}

/// The whole document must be UTF-8, not only what the payload reads: comments, attributes and
/// the skipped Header too, since a receipt is kept (and handed back) exactly as received.
fn check_utf8(input: &[u8], skipped: usize) -> Result<(), SoapError> {
    match std::str::from_utf8(input) {
        Ok(_) => Ok(()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = 1 + input[..at].iter().filter(|&&b| b == b'\n').count();
            Err(SoapError::NotXml(format!(
                "byte 0x{:02X} at offset {} (line {line}) is not UTF-8",
                input[at],
                at + skipped
            )))
        }
    }
}

/// Reads a SOAP 1.1 envelope and returns the single element of its Body.
pub(crate) fn read_payload(input: &[u8]) -> Result<Node, SoapError> {
    read(input, Shape::Envelope, &mut None)
}

/// Like [`read_payload`], also giving the bytes inside the SOAP Header (`None` without one), for
/// services that carry a caller's identity there (MyPay's `intestazionePPT`).
pub(crate) fn read_envelope(input: &[u8]) -> Result<(Node, Option<&[u8]>), SoapError> {
    let mut header = None;
    let payload = read(input, Shape::Envelope, &mut header)?;
    Ok((payload, header.and_then(|r| input.get(r))))
}

/// Reads a plain XML document (no envelope) into a tree, with the same bounds: no DTD, UTF-8
/// only, nesting limited. For documents carried inside a SOAP field (MyPay's base64 payloads).
pub(crate) fn read_document(input: &[u8]) -> Result<Node, SoapError> {
    read(input, Shape::Document, &mut None)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Envelope,
    Document,
}

fn read(
    input: &[u8],
    shape: Shape,
    header: &mut Option<std::ops::Range<usize>>,
) -> Result<Node, SoapError> {
    let whole = input.len();
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let bom = whole - input.len();
    check_utf8(input, bom)?;
    let mut reader = NsReader::from_reader(input);
    // A document is read as if it were the Body's element.
    let mut state = match shape {
        Shape::Envelope => State::BeforeEnvelope,
        Shape::Document => State::Body,
    };
    let mut stack: Vec<Node> = Vec::with_capacity(MAX_DEPTH);
    let mut payload: Option<Node> = None;
    // Character data outside the payload, which must be whitespace.
    let mut stray = String::new();

    loop {
        let (res, event) = reader.read_resolved_event().map_err(not_xml)?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                if stack.is_empty() {
                    state = match state {
                        State::Envelope => {
                            return Err(SoapError::NotSoap("the Envelope has no Body".into()))
                        }
                        State::Body => return Err(SoapError::NotSoap("the Body is empty".into())),
                        State::BodyDone => State::AfterBody,
                        State::AfterBody => State::AfterEnvelope,
                        State::BeforeEnvelope | State::AfterEnvelope => {
                            return Err(SoapError::NotXml("unmatched end tag".into()))
                        }
                    };
                } else {
                    close_node(&mut stack, &mut payload, &mut state);
                }
                continue;
            }
            Event::Text(t) => {
                let text = t.xml10_content().map_err(not_xml)?;
                check_chars(&text)?;
                push_text(&mut stack, &mut stray, &text, state)?;
                continue;
            }
            Event::CData(t) => {
                let text = t.decode().map_err(not_xml)?;
                check_chars(&text)?;
                push_text(&mut stack, &mut stray, &text, state)?;
                continue;
            }
            Event::GeneralRef(r) => {
                match stack.last_mut() {
                    Some(node) => resolve_ref(&r, &mut node.text)?,
                    None => {
                        resolve_ref(&r, &mut stray)?;
                        check_stray(&mut stray, state)?;
                    }
                }
                continue;
            }
            Event::Decl(d) => {
                check_decl_encoding(&d)?;
                continue;
            }
            Event::DocType(_) => {
                return Err(SoapError::NotXml(
                    "a document type declaration is not allowed in SOAP".into(),
                ))
            }
            Event::Comment(_) | Event::PI(_) => continue,
            Event::Eof => break,
        };
        let ns = Ns::of(res)?;

        if !stack.is_empty() || state == State::Body {
            if stack.len() >= MAX_DEPTH {
                return Err(SoapError::NotSoap(format!(
                    "payload nested deeper than {MAX_DEPTH} levels"
                )));
            }
            stack.push(Node {
                name: local_name(&e)?,
                ns: ns.into_string(),
                ..Node::default()
            });
            if empty {
                close_node(&mut stack, &mut payload, &mut state);
            }
            continue;
        }

        let name = local_name(&e)?;
        match state {
            State::BeforeEnvelope => {
                match ns {
                    Ns::Soap if name == "Envelope" => {}
                    Ns::Soap12 => {
                        return Err(SoapError::NotSoap(
                            "SOAP 1.2 envelope; the node speaks SOAP 1.1".into(),
                        ))
                    }
                    _ => {
                        return Err(SoapError::NotSoap(format!(
                            "root element is <{name}>, expected a SOAP 1.1 Envelope"
                        )))
                    }
                }
                if empty {
                    return Err(SoapError::NotSoap("the Envelope has no Body".into()));
                }
                state = State::Envelope;
            }
            State::Envelope => match ns {
                Ns::Soap if name == "Header" => {
                    if !empty {
                        let span = reader.read_to_end(e.name()).map_err(not_xml)?;
                        let at = |p: u64| usize::try_from(p).unwrap_or(usize::MAX);
                        *header = Some(at(span.start) + bom..at(span.end) + bom);
                    }
                }
                Ns::Soap if name == "Body" => {
                    if empty {
                        return Err(SoapError::NotSoap("the Body is empty".into()));
                    }
                    state = State::Body;
                }
                _ => {
                    return Err(SoapError::NotSoap(format!(
                        "unexpected element <{name}> in the Envelope before the Body"
                    )))
                }
            },
            State::BodyDone => {
                return Err(SoapError::NotSoap(format!(
                    "the Body holds more than one element (<{name}> after the payload)"
                )))
            }
            // SOAP 1.1 allows further elements after the Body; they carry nothing for us.
            State::AfterBody => {
                if !empty {
                    reader.read_to_end(e.name()).map_err(not_xml)?;
                }
            }
            State::AfterEnvelope => {
                return Err(SoapError::NotXml(format!(
                    "element <{name}> after the root element"
                )))
            }
            // Handled above: an element in the Body starts the payload.
            State::Body => {}
        }
    }

    match (state, payload) {
        (State::AfterEnvelope, Some(p)) => Ok(p),
        (State::BodyDone, Some(p)) if shape == Shape::Document => Ok(p),
        (State::BeforeEnvelope, _) => Err(SoapError::NotXml("no root element".into())),
        (State::Body, None) if shape == Shape::Document => {
            Err(SoapError::NotXml("no root element".into()))
        }
        _ => Err(SoapError::NotXml("unexpected end of document".into())),
    }
}

/// Character data goes to the open payload element, or must be whitespace.
fn push_text(
    stack: &mut [Node],
    stray: &mut String,
    text: &str,
    state: State,
) -> Result<(), SoapError> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        None => {
            stray.push_str(text);
            check_stray(stray, state)
        }
    }
}

fn check_stray(stray: &mut String, state: State) -> Result<(), SoapError> {
    if !is_ws(stray) {
        return Err(
            if matches!(state, State::BeforeEnvelope | State::AfterEnvelope) {
                SoapError::NotXml("text outside the root element".into())
            } else {
                SoapError::NotSoap("text directly inside the SOAP Envelope or Body".into())
            },
        );
    }
    stray.clear();
    Ok(())
}

/// Pops the finished element into its parent, or into `payload` when it is the root.
fn close_node(stack: &mut Vec<Node>, payload: &mut Option<Node>, state: &mut State) {
    if let Some(node) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => {
                *payload = Some(node);
                *state = State::BodyDone;
            }
        }
    }
}
