//! The listeners' side: the certificate and key of `server.tls_cert`/`tls_key` (and the
//! admin pair) loaded into an acceptor config, and [`Stream`], a client connection
//! with or without TLS. The config lives in the compiled [`crate::config::Config`], so a
//! reload with new files swaps it for the connections accepted afterwards, and a
//! reload whose files do not load is rejected (the running one stays).

use super::{digest, provider, read_pem, HTTP11};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a TLS listener serves with: a loaded certificate and key.
#[derive(Clone)]
pub struct Acceptor {
    pub config: Arc<ServerConfig>,
    /// Of the two files' contents: a reload with new files is a change.
    pub digest: String,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acceptor({})", self.digest)
    }
}

/// Which of the two files a loading error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    Cert,
    Key,
}

/// Why a certificate and key did not load: the file to blame and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub file: PemFile,
    pub message: String,
}

fn fail(file: PemFile) -> impl Fn(String) -> LoadError {
    move |message| LoadError { file, message }
}

/// Loads a certificate chain and its private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, LoadError> {
    let (on_cert, on_key) = (fail(PemFile::Cert), fail(PemFile::Key));
    let pem = read_pem(cert).map_err(&on_cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| on_cert(format!("{} is not valid PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(on_cert(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let key_pem = read_pem(key).map_err(&on_key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        on_key(format!(
            "{} holds no usable PEM private key: {e}",
            key.display()
        ))
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| on_cert(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            on_key(format!(
                "the key does not fit the certificate or is unusable: {e}"
            ))
        })?;
    config.alpn_protocols = vec![HTTP11.to_vec()];
    Ok(Acceptor {
        config: Arc::new(config),
        digest: digest(&[&pem, &key_pem]),
    })
}

/// An accepted client connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
