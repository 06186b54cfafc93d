//! Just enough DER to read a verified client certificate's subject and DNS names (rustls has
//! already checked the chain; this only names who it is).

/// A certificate's subject attributes (`CN`, `O`, ...) and its DNS subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub subject: Vec<(String, String)>,
    pub dns: Vec<String>,
}

/// One TLV: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x05] => "SERIALNUMBER".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "EMAILADDRESS".into(),
        other => format!("OID.{}", hex::encode(other)),
    }
}

fn string_value(tag: u8, v: &[u8]) -> String {
    if tag == 0x1e {
        // BMPString: UTF-16BE.
        let units: Vec<u16> = v
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(v).into_owned()
}

fn parse_name(mut rdns: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let (tag, mut set, rest) = tlv(rdns)?;
        if tag != 0x31 {
            return None;
        }
        while !set.is_empty() {
            let (_, atv, more) = tlv(set)?;
            let (_, oid, value) = tlv(atv)?;
            let (vtag, v, _) = tlv(value)?;
            out.push((attribute_name(oid), string_value(vtag, v)));
            set = more;
        }
        rdns = rest;
    }
    Some(out)
}

fn parse_san(mut ext: &[u8], dns: &mut Vec<String>) -> Option<()> {
    while !ext.is_empty() {
        let (_, one, rest) = tlv(ext)?;
        let (_, oid, fields) = tlv(one)?;
        if oid == [0x55, 0x1d, 0x11] {
            let (mut tag, mut val, more) = tlv(fields)?;
            // `critical` comes first when present.
            if tag == 0x01 {
                (tag, val, _) = tlv(more)?;
            }
            if tag == 0x04 {
                let (_, mut names, _) = tlv(val)?;
                while !names.is_empty() {
                    let (t, v, r) = tlv(names)?;
                    if t == 0x82 {
                        dns.push(String::from_utf8_lossy(v).to_ascii_lowercase());
                    }
                    names = r;
                }
            }
        }
        ext = rest;
    }
    Some(())
}

impl Names {
    /// The names in a DER certificate; `None` if it does not read as one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut r = tbs;
        if r.first() == Some(&0xa0) {
            r = tlv(r)?.2;
        }
        // serial, signature algorithm, issuer, validity
        for _ in 0..4 {
            r = tlv(r)?.2;
        }
        let (_, subject, rest) = tlv(r)?;
        let subject = parse_name(subject)?;
        let mut r = tlv(rest)?.2; // subject public key info
        let mut dns = Vec::new();
        while !r.is_empty() {
            let (tag, content, rest) = tlv(r)?;
            if tag == 0xa3 {
                let (_, exts, _) = tlv(content)?;
                parse_san(exts, &mut dns)?;
            }
            r = rest;
        }
        Some(Self { subject, dns })
    }

    /// The subject as `CN=...,O=...` (for logs and events).
    pub fn subject_text(&self) -> String {
        self.subject
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Reads a distinguished name as written by operators or proxies: `CN=a, O=b` (RFC 4514, `\,`
/// escapes) or OpenSSL's `/C=IT/O=b/CN=a`. Keys upper-cased, values trimmed.
pub fn parse_dn(text: &str) -> Option<Vec<(String, String)>> {
    let text = text.trim();
    let parts: Vec<String> = if let Some(rest) = text.strip_prefix('/') {
        rest.split('/').map(str::to_string).collect()
    } else {
        let mut parts = vec![String::new()];
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let (Some(next), Some(last)) = (chars.next(), parts.last_mut()) {
                        last.push(next);
                    }
                }
                ',' | ';' => parts.push(String::new()),
                c => {
                    if let Some(last) = parts.last_mut() {
                        last.push(c);
                    }
                }
            }
        }
        parts
    };
    let mut out = Vec::new();
    for p in parts.iter().filter(|p| !p.trim().is_empty()) {
        let (k, v) = p.split_once('=')?;
        out.push((k.trim().to_ascii_uppercase(), v.trim().to_string()));
    }
    (!out.is_empty()).then_some(out)
}

/// Every attribute of `pin` is in `subject` (order and extra attributes do not matter).
pub fn pin_matches(pin: &[(String, String)], subject: &[(String, String)]) -> bool {
    pin.iter().all(|p| subject.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_dn_spellings() {
        let a = parse_dn("CN=nodo.pagopa.it, O=PagoPA S.p.A., C=IT").unwrap();
        let b = parse_dn("/C=IT/O=PagoPA S.p.A./CN=nodo.pagopa.it").unwrap();
        assert!(pin_matches(&a, &b) && pin_matches(&b, &a));
        let esc = parse_dn(r"CN=x,O=Acme\, Inc").unwrap();
        assert_eq!(esc[1], ("O".into(), "Acme, Inc".into()));
        assert!(!pin_matches(&parse_dn("CN=other").unwrap(), &a));
        assert!(parse_dn("nonsense").is_none());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(Names::parse(&[0x30, 0x03, 0x02, 0x01]).is_none());
        assert!(Names::parse(&[]).is_none());
    }
}
