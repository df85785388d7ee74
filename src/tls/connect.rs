//! The outbound side: who a connection to an https master trusts ([`Trust`]: the
//! system roots, or the master's `tls_ca` bundle) and the handshake itself.
//! Certificates are always verified and the URL's host is both the SNI and the name
//! checked; a failed handshake is a failed connection (nothing is sent, never a plain
//! fallback).

use super::{digest, provider, read_pem, HTTP11};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A set of trusted roots, ready to connect with.
#[derive(Clone)]
pub struct Trust {
    config: Arc<ClientConfig>,
    /// `system`, or `ca:` and the start of the bundle's SHA-256: part of the connection
    /// pool's key, so a connection is never reused under another trust.
    id: Arc<str>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl Trust {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The operating system's roots (read once per process, by `rustls-native-certs`).
    pub fn system() -> Result<Trust, String> {
        static SYSTEM: OnceLock<Result<Trust, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system root certificates");
                }
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no system root certificates were found: set tls_ca to a PEM bundle".into(),
                    );
                }
                Ok(Trust {
                    config: client_config(roots)?,
                    id: "system".into(),
                })
            })
            .clone()
    }

    /// The certificates of the PEM bundle at `path` (at least one).
    pub fn bundle(path: &Path) -> Result<Trust, String> {
        let pem = read_pem(path)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(Trust {
            config: client_config(roots)?,
            id: format!("ca:{}", digest(&[&pem])).into(),
        })
    }
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// TLS to one host: the trust and the name sent as SNI and checked on the certificate.
#[derive(Clone)]
pub struct TlsTarget {
    pub trust: Trust,
    pub name: ServerName<'static>,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsTarget({}, {:?})", self.name.to_str(), self.trust)
    }
}

impl TlsTarget {
    /// `host` as a URL writes it (an IPv6 address in brackets).
    pub fn new(trust: Trust, host: &str) -> Result<TlsTarget, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))?;
        Ok(TlsTarget { trust, name })
    }

    /// The handshake on a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.trust.config.clone())
            .connect(self.name.clone(), tcp)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use http::Uri;

    fn ca_file(dir: &Path, name: &str) -> std::path::PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    #[test]
    fn pool_keys_tell_scheme_and_trust_apart() {
        let dir = tempfile::tempdir().unwrap();
        let a = Trust::bundle(&ca_file(dir.path(), "a.pem")).unwrap();
        let a_again = Trust::bundle(&dir.path().join("a.pem")).unwrap();
        let b = Trust::bundle(&ca_file(dir.path(), "b.pem")).unwrap();
        let https: Uri = "https://127.0.0.1/send".parse().unwrap();
        let key = |t: &Trust| Endpoint::with_tls(&https, Some(t)).unwrap().key;
        let plain: Uri = "http://127.0.0.1:443/send".parse().unwrap();
        let plain = Endpoint::of(&plain).unwrap();
        let tls = Endpoint::with_tls(&https, Some(&a)).unwrap();
        assert_eq!(tls.authority, "127.0.0.1:443", "https defaults to 443");
        assert_eq!(plain.authority, tls.authority);
        assert_ne!(plain.key, tls.key, "plain and TLS never share connections");
        assert_ne!(key(&a), key(&b), "nor do two CAs");
        assert_eq!(key(&a), key(&a_again), "the same bundle is the same trust");
        assert_eq!(tls.tls.unwrap().name.to_str(), "127.0.0.1");
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key_only = dir.path().join("key.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_only, key.serialize_pem()).unwrap();
        let e = Trust::bundle(&key_only).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = Trust::bundle(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
