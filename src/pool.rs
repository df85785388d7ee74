//! Outbound keep-alive HTTP/1.1 connections, plain or TLS, pooled per
//! [`Endpoint::key`] (scheme, `host:port` and, for https, the trusted roots): to masters
//! (the proxy and queued delivery) and to the alert webhook. Health probes open their
//! own connections with [`connect`].
//!
//! A request takes an idle connection (or opens one), sends on it from the request's
//! own task and puts it back once the answer is read. Idle connections are checked for
//! closure before reuse; a request that a reused connection dropped before sending is
//! sent once more on a new connection ([`ConnPool::send`]). Taking is last-in first-out, so the connections
//! left unused by a burst sink to the bottom; each release drops the oldest one when it
//! has been idle longer than [`IDLE_TIMEOUT`].

use crate::config::Endpoint;
use crate::server::Body;
use dashmap::DashMap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections of one endpoint, most recently used at the back, with the time
/// each was put back. Both clients keep theirs in one: hyper's ([`ConnPool`]) and the
/// message path's ([`crate::h1::pool::Pool`]).
pub struct IdleList<C>(Mutex<VecDeque<(Instant, C)>>);

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList(Mutex::new(VecDeque::new()))
    }
}

impl<C> IdleList<C> {
    /// The most recently put back, and when it was.
    pub fn pop(&self) -> Option<(Instant, C)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_back()
    }

    /// Puts `conn` back, idle from `now`: first drops the oldest one when it has been
    /// idle longer than [`IDLE_TIMEOUT`]; keeps at most [`MAX_IDLE`].
    pub fn push(&self, conn: C, now: Instant) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle
            .front()
            .is_some_and(|(since, _)| now.duration_since(*since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((now, conn));
        }
    }
}

/// The idle lists of every endpoint, by [`Endpoint::key`]. Looked up once per
/// exchange: the keys are this process's own configuration, so a fast hash (Fx, a few
/// instructions per word) serves where SipHash's resistance to chosen keys is not
/// needed.
pub struct Idle<C>(DashMap<String, Arc<IdleList<C>>, rustc_hash::FxBuildHasher>);

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle(DashMap::with_hasher(rustc_hash::FxBuildHasher))
    }
}

impl<C> std::fmt::Debug for Idle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("endpoints", &self.0.len())
            .finish()
    }
}

impl<C> Idle<C> {
    /// `endpoint`'s list, made on first use.
    pub fn of(&self, endpoint: &Endpoint) -> Arc<IdleList<C>> {
        if let Some(list) = self.0.get(&endpoint.key) {
            return list.clone();
        }
        self.0.entry(endpoint.key.clone()).or_default().clone()
    }
}

/// No connection could be made; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("tcp connect to {0} failed: {1}")]
    Connect(String, std::io::Error),
    #[error("tcp connect to {0} timed out")]
    ConnectTimeout(String),
    /// The certificate was not trusted, did not name the host, or the handshake broke:
    /// nothing was sent.
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("http handshake with {0} failed: {1}")]
    Handshake(String, hyper::Error),
}

impl PoolError {
    /// The resource of this machine that ran out, when that is why no connection
    /// could be made (the peer is then not to blame).
    pub fn local_fault(&self) -> Option<LocalFault> {
        match self {
            Self::Connect(_, e) => LocalFault::of(e),
            Self::ConnectTimeout(_) | Self::Tls(..) | Self::Handshake(..) => None,
        }
    }
}

/// A resource of this machine that ran out: a socket could not be made or bound
/// whatever the peer. SPEC section 8: never counted against a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFault {
    /// EMFILE (this process) or ENFILE (the whole system).
    FileDescriptors,
    /// ENOMEM, or ENOBUFS (no socket buffer space).
    Memory,
    /// EADDRNOTAVAIL: no ephemeral port left to connect from.
    Ports,
}

/// Linux errno values (the same on every Linux architecture the project builds for).
#[cfg(target_os = "linux")]
mod errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENOBUFS: i32 = 105;
}

/// The BSD values (macOS, FreeBSD).
#[cfg(not(target_os = "linux"))]
mod errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EADDRNOTAVAIL: i32 = 49;
    pub const ENOBUFS: i32 = 55;
}

impl LocalFault {
    /// Classifies the error of a `socket`/`connect` call.
    pub fn of(e: &std::io::Error) -> Option<LocalFault> {
        match e.raw_os_error() {
            Some(errno::EMFILE | errno::ENFILE) => Some(Self::FileDescriptors),
            Some(errno::ENOMEM | errno::ENOBUFS) => Some(Self::Memory),
            Some(errno::EADDRNOTAVAIL) => Some(Self::Ports),
            Some(_) => None,
            None => match e.kind() {
                std::io::ErrorKind::OutOfMemory => Some(Self::Memory),
                std::io::ErrorKind::AddrNotAvailable => Some(Self::Ports),
                _ => None,
            },
        }
    }

    /// What ran out, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Self::FileDescriptors => "file descriptors",
            Self::Memory => "memory or socket buffers",
            Self::Ports => "local ports",
        }
    }
}

/// Why [`ConnPool::send`] got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: nothing was sent.
    #[error(transparent)]
    Connect(#[from] PoolError),
    /// The exchange broke; the request may or may not have reached the peer.
    #[error("request failed")]
    Request(#[from] hyper::Error),
}

#[derive(Debug, Default)]
pub struct ConnPool {
    hosts: Idle<SendRequest<Body>>,
}

/// A connection taken from the pool; [`Pooled::release`] puts it back.
pub struct Pooled {
    sender: SendRequest<Body>,
    idle: Arc<IdleList<SendRequest<Body>>>,
    reused: bool,
}

impl ConnPool {
    /// An open connection to `endpoint`: an idle one if any is usable, else a new one.
    async fn checkout(&self, endpoint: &Endpoint) -> Result<Pooled, PoolError> {
        let idle = self.hosts.of(endpoint);
        while let Some((_, mut sender)) = idle.pop() {
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Ok(Pooled {
                    sender,
                    idle,
                    reused: true,
                });
            }
        }
        self.checkout_new(endpoint).await
    }

    /// Sends the request `build` makes on a pooled connection to `endpoint`. A reused
    /// connection the peer had closed drops the request unsent: it is built and sent
    /// once more on a new connection. The connection comes back with the response;
    /// [`Pooled::release`] it once the body is read.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        build: impl Fn() -> Request<Body>,
    ) -> Result<(Pooled, Response<Incoming>), SendError> {
        let mut conn = self.checkout(endpoint).await?;
        let resp = match conn.sender.send_request(build()).await {
            Err(e) if conn.reused && e.is_canceled() => {
                conn = self.checkout_new(endpoint).await?;
                conn.sender.send_request(build()).await
            }
            other => other,
        }?;
        Ok((conn, resp))
    }

    /// A new connection to `endpoint`.
    async fn checkout_new(&self, endpoint: &Endpoint) -> Result<Pooled, PoolError> {
        let idle = self.hosts.of(endpoint);
        let sender = connect(endpoint).await?;
        Ok(Pooled {
            sender,
            idle,
            reused: false,
        })
    }
}

impl Pooled {
    /// Returns the connection for reuse, once its answer has been read in full.
    pub fn release(self) {
        if !self.sender.is_closed() {
            self.idle.push(self.sender, Instant::now());
        }
    }
}

/// An outbound connection: plain TCP, or TLS over it.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl tokio::io::AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A new connection to `endpoint`, `TCP_NODELAY` set, its TLS handshake done for
/// https, all within [`CONNECT_TIMEOUT`].
pub async fn dial(endpoint: &Endpoint) -> Result<Io, PoolError> {
    let authority = &endpoint.authority;
    let dial = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| PoolError::Connect(authority.clone(), e))?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        match &endpoint.tls {
            None => Ok(Io::Plain(stream)),
            Some(tls) => tls
                .handshake(stream)
                .await
                .map(|s| Io::Tls(Box::new(s)))
                .map_err(|e| PoolError::Tls(authority.clone(), e)),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, dial)
        .await
        .map_err(|_| PoolError::ConnectTimeout(authority.clone()))?
}

/// A new HTTP/1.1 connection to `endpoint` ([`dial`]), its hyper connection task
/// spawned.
pub async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Body>, PoolError> {
    let io = dial(endpoint).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| PoolError::Handshake(endpoint.authority.clone(), e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "outbound connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn local_faults_are_told_from_the_peers() {
        let os = Error::from_raw_os_error;
        assert_eq!(
            LocalFault::of(&os(errno::EMFILE)),
            Some(LocalFault::FileDescriptors)
        );
        assert_eq!(
            LocalFault::of(&os(errno::ENFILE)),
            Some(LocalFault::FileDescriptors)
        );
        assert_eq!(LocalFault::of(&os(errno::ENOMEM)), Some(LocalFault::Memory));
        assert_eq!(
            LocalFault::of(&os(errno::ENOBUFS)),
            Some(LocalFault::Memory)
        );
        assert_eq!(
            LocalFault::of(&os(errno::EADDRNOTAVAIL)),
            Some(LocalFault::Ports)
        );
        assert_eq!(
            LocalFault::of(&Error::from(ErrorKind::OutOfMemory)),
            Some(LocalFault::Memory)
        );
        // The peer's doing: refused, reset, unreachable, timed out.
        for e in [
            Error::from(ErrorKind::ConnectionRefused),
            Error::from(ErrorKind::ConnectionReset),
            Error::from(ErrorKind::TimedOut),
            os(111),
            os(113),
        ] {
            assert_eq!(LocalFault::of(&e), None, "{e}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_a_local_fault() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        let Err(e) = connect(&Endpoint::of(&uri).unwrap()).await else {
            panic!("connected to a closed port");
        };
        assert_eq!(e.local_fault(), None, "{e}");
    }
}
