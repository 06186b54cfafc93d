//! Who may call `/pagopa/paForNode` (`[pagopa] node_auth`): the national node by its client
//! certificate (mutual TLS), through a TLS-terminating proxy that vouches for it in a header, or
//! from allowed addresses. A refused call is answered 401/403 before its body is read, counted
//! in `/metrics` and recorded as a `soap.refused` event; nothing else is stored.

use super::x509::{parse_dn, pin_matches};
use super::Peer;
use crate::config::NodeAuthConfig;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use ipnet::IpNet;
use snodo_store::{NewEvent, Store};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Mtls,
    Proxy,
    Allowlist,
    None,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mtls" => Some(Self::Mtls),
            "proxy" => Some(Self::Proxy),
            "allowlist" => Some(Self::Allowlist),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Why a call was refused: the `reason` label of `snodo_soap_refused_total`.
pub const REASONS: &[&str] = &[
    "address",
    "no_certificate",
    "subject",
    "san",
    "no_subject_header",
];

/// Reads `1.2.3.0/24` or a bare address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR"))
}

/// The configured checks, ready to run on every call.
pub struct NodeGate {
    pub mode: Mode,
    allow: Vec<IpNet>,
    subject: Option<Vec<(String, String)>>,
    san: Option<String>,
    header: Option<HeaderName>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    store: Arc<dyn Store>,
    /// Refusal events recorded in the current second (a flood is counted, not all stored).
    events: (AtomicU64, AtomicU64),
}

/// Refusal events stored per second at most.
const EVENTS_PER_SECOND: u64 = 20;

impl NodeGate {
    /// The gate of a checked configuration (`listen::check` found no problem).
    pub fn new(cfg: &NodeAuthConfig, store: Arc<dyn Store>) -> Result<Self, String> {
        let mode = Mode::parse(&cfg.mode)
            .ok_or_else(|| format!("pagopa.node_auth.mode: unknown {:?}", cfg.mode))?;
        let allow = cfg
            .allow
            .iter()
            .map(|a| parse_cidr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let subject = match &cfg.subject {
            Some(s) => Some(parse_dn(s).ok_or_else(|| format!("subject {s:?} is not a DN"))?),
            None => None,
        };
        let header = match &cfg.subject_header {
            Some(h) => Some(HeaderName::try_from(h.as_str()).map_err(|e| format!("{h:?}: {e}"))?),
            None => None,
        };
        Ok(Self {
            mode,
            allow,
            subject,
            san: cfg.san.as_ref().map(|s| s.to_ascii_lowercase()),
            header,
            refused: Mutex::new(REASONS.iter().map(|r| (*r, 0)).collect()),
            store,
            events: (AtomicU64::new(0), AtomicU64::new(0)),
        })
    }

    /// Lets the call in, or says why not (status and reason).
    pub fn check(
        &self,
        peer: Option<&Peer>,
        headers: &HeaderMap,
    ) -> Result<(), (StatusCode, &'static str)> {
        let forbidden = StatusCode::FORBIDDEN;
        if !self.allow.is_empty() {
            let inside = peer.is_some_and(|p| {
                let ip = p.addr.ip().to_canonical();
                self.allow.iter().any(|n| n.contains(&ip))
            });
            if !inside {
                return Err((forbidden, "address"));
            }
        }
        match self.mode {
            Mode::Mtls => {
                let Some(cert) = peer.and_then(|p| p.cert.as_deref()) else {
                    return Err((StatusCode::UNAUTHORIZED, "no_certificate"));
                };
                if let Some(pin) = &self.subject {
                    if !pin_matches(pin, &cert.subject) {
                        return Err((forbidden, "subject"));
                    }
                }
                if let Some(san) = &self.san {
                    if !cert.dns.iter().any(|d| d == san) {
                        return Err((forbidden, "san"));
                    }
                }
            }
            Mode::Proxy => {
                let given = self
                    .header
                    .as_ref()
                    .and_then(|h| headers.get(h))
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.trim().is_empty() && *v != "(null)");
                let Some(given) = given else {
                    return Err((StatusCode::UNAUTHORIZED, "no_subject_header"));
                };
                if let Some(pin) = &self.subject {
                    if !parse_dn(given).is_some_and(|s| pin_matches(pin, &s)) {
                        return Err((forbidden, "subject"));
                    }
                }
            }
            Mode::Allowlist | Mode::None => {}
        }
        Ok(())
    }

    /// Counts a refusal and records its event (at most `EVENTS_PER_SECOND`).
    pub fn refused(&self, peer: Option<&Peer>, reason: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
        let addr = peer.map(|p| p.addr.to_string()).unwrap_or_default();
        let subject = peer
            .and_then(|p| p.cert.as_deref())
            .map(|c| c.subject_text())
            .unwrap_or_default();
        tracing::warn!(peer = %addr, reason, subject = %subject, "soap: call refused");
        let now = chrono::Utc::now().timestamp() as u64;
        if self.events.0.swap(now, Ordering::Relaxed) != now {
            self.events.1.store(0, Ordering::Relaxed);
        }
        if self.events.1.fetch_add(1, Ordering::Relaxed) >= EVENTS_PER_SECOND {
            return;
        }
        let store = self.store.clone();
        let corr = crate::events::correlation_id();
        tokio::task::spawn_blocking(move || {
            let event = NewEvent {
                kind: "soap.refused",
                entity: "",
                subject: &addr,
                payload: serde_json::json!({ "peer": addr, "reason": reason, "certificate_subject": subject }),
                correlation: Some(&corr),
            };
            if let Err(e) = store.record_events(&[event]) {
                tracing::warn!("cannot record the refusal event: {e}");
            }
        });
    }

    /// `snodo_soap_refused_total{reason}` lines.
    pub fn metrics(&self) -> String {
        let mut out = String::from(
            "# HELP snodo_soap_refused_total Calls to the node's endpoint refused before parsing.\n# TYPE snodo_soap_refused_total counter\n",
        );
        for (reason, n) in self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "snodo_soap_refused_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        out
    }
}
