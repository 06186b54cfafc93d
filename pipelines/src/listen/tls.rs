//! TLS on the listeners: the certificate is re-read when its files change (checked at most once
//! a second, on a handshake), so a rotated certificate is served without a restart; the node's
//! client certificate is verified against pagoPA's CA bundle when `node_auth` is `mtls`.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and its key into a key rustls can serve.
pub fn load_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("{} with {}: {e}", cert_file.display(), key_file.display()))
}

/// Reads a PEM bundle of CA certificates.
pub fn load_roots(ca_file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", ca_file.display()));
    }
    Ok(roots)
}

type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    };
    [one(cert), one(key)]
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// The served certificate, swapped when its files change.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReloadingCert({})", self.cert_file.display())
    }
}

/// How often the files are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl ReloadingCert {
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let st = stamp(cert_file, key_file);
        let key = Arc::new(load_key(cert_file, key_file)?);
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            loaded: Mutex::new(Loaded {
                key,
                stamp: st,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= CHECK_EVERY {
            l.checked = Instant::now();
            let now = stamp(&self.cert_file, &self.key_file);
            if now != l.stamp {
                // A half-written pair fails to load: keep serving the old one and look again.
                match load_key(&self.cert_file, &self.key_file) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert_file.display(), "tls: certificate reloaded");
                        l.key = Arc::new(k);
                        l.stamp = now;
                    }
                    Err(e) => tracing::warn!("tls: keeping the previous certificate: {e}"),
                }
            }
        }
        l.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The listeners' TLS: TLS 1.2 and 1.3, HTTP/1.1, a client certificate asked for (and verified
/// against `client_ca` when given) but not required at the handshake: routes other than the
/// node's do not need one, and the node's route refuses a call without it.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(ReloadingCert::new(cert_file, key_file)?));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
