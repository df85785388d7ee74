//! The HTTP/1.1 accept loop shared by the client listener, the admin listener and the
//! mock master: keep-alive connections, TCP_NODELAY, graceful shutdown with a deadline,
//! and the connection limits of SPEC section 8. The client listener's connections are
//! served by the message path's own server ([`serve_messages`], `crate::h1::server`),
//! which keeps the same timeouts in its own loop; the others by hyper's ([`serve_with`]),
//! timed as below.
//!
//! **Limits.** [`Limits`] are read from a closure before every accept, so a reload
//! changes them without a restart:
//! - `max_connections`: no connection is accepted while that many are open; the next
//!   ones wait in the kernel's listen backlog. Lowering it cuts nothing: the open
//!   connections finish, and accepting resumes once fewer than the new cap are open.
//! - `read_timeout` and `idle_timeout` are fixed for a connection when it is accepted.
//!
//! **Timeouts.** Each connection has a [`Clock`] that its socket wrapper and its
//! service move through phases, and a watchdog polled after the connection in the same
//! task (no task, lock or channel of its own):
//! - *fresh* (accepted, nothing read) and *head* (bytes of a request arrived, its head
//!   not yet complete): the request must arrive by `since + read_timeout`, where `since`
//!   is the accept for a connection's first request and the first byte for a later one.
//!   Past it, a connection that sent part of a head gets a `408` and is closed; one that
//!   sent nothing is closed without an answer (as HAProxy's `timeout http-request` does
//!   for an empty connection). hyper's own `header_read_timeout` is off: in hyper 1.x
//!   its timer starts as soon as a kept-alive connection waits for its next head (so it
//!   would cut idle connections at the read timeout), and it closes without an answer.
//! - *busy*: the handler has the request. Its body must arrive by the [`ReadDeadline`]
//!   put in the request's extensions (the handler answers `408` with
//!   `Connection: close`; see `proxy::body`); the upstream exchange is bounded by the
//!   handler (`request_timeout`), so no timer here cuts a request in progress.
//! - *idle*: the answer was handed to hyper and nothing of the next request arrived:
//!   the connection is closed at `since + idle_timeout`.
//!
//! **TLS.** When `tls()` gives an acceptor at the accept, the connection speaks HTTPS
//! (ALPN `http/1.1`) with that certificate for its whole life. The handshake must end
//! by the accept plus `read_timeout` (else the connection is closed with no answer);
//! then the phases above apply to the decrypted stream, and a late head's 408 goes out
//! through TLS.
//!
//! **Accept errors** (out of file descriptors and the like) back off from 50 ms up to
//! 1 s, and are logged at most once every [`ACCEPT_LOG_EVERY`] with a count of the ones
//! not logged.

use crate::tls::listen::{Acceptor, Stream};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

pub type Body = Full<Bytes>;

/// A shutdown signal that many tasks can wait on.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending half of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has been triggered (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _closed_means_shutdown = self.0.wait_for(|down| *down).await;
    }

    /// [`Shutdown::wait`], owning its receiver: a future to keep and poll again.
    pub async fn wait_owned(mut self) {
        self.wait().await;
    }

    /// Whether the signal may have changed since this receiver was made: one atomic
    /// load, no lock. False means shutdown was not triggered since then.
    pub fn may_have_changed(&self) -> bool {
        !matches!(self.0.has_changed(), Ok(false))
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// The bounds one listener applies to its connections (SPEC section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole request, head and body, must arrive within this.
    pub read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    /// The defaults of `[server]`.
    fn default() -> Self {
        let raw = crate::config::raw::RawServer::default();
        Limits {
            read_timeout: Duration::from_millis(raw.read_timeout_ms),
            idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
            max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX),
        }
    }
}

impl Limits {
    pub fn of(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            read_timeout: server.read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections,
        }
    }
}

/// The listen backlog of [`bind`]: where connections wait while `max_connections` are
/// open (the kernel caps it at `net.core.somaxconn`). tokio's `TcpListener::bind` uses
/// 128, which drops SYNs (a client retries after 1 s, then 3 s...) in any burst of new
/// connections above that.
pub const BACKLOG: u32 = 1024;

/// Binds a listener with [`BACKLOG`] (and `SO_REUSEADDR`, as tokio does).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The instant by which a request's body must have arrived, put in every request's
/// extensions by [`serve`]: the request's first byte (the accept, for a connection's
/// first request) plus `read_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadDeadline(pub Instant);

/// The peer address of the connection a request came on, put in its extensions by
/// [`serve`] (the admin API audits it as the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// `since + d`, or a year after `since` when that does not fit in an `Instant`.
pub(crate) fn after(since: Instant, d: Duration) -> Instant {
    since
        .checked_add(d)
        .unwrap_or_else(|| since + Duration::from_secs(365 * 24 * 3600))
}

/// Serves HTTP/1.1 on `listener` with the default [`Limits`] until `shutdown`, then
/// stops accepting and lets open exchanges finish for up to `drain`.
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: Shutdown, drain: Duration)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, handler, Limits::default, || None, shutdown, drain).await
}

/// Like [`serve`], with the limits `limits()` returns, read again before every accept,
/// and HTTPS while `tls()` (also read before every accept) gives an acceptor.
pub async fn serve_with<H, F, L, T>(
    listener: TcpListener,
    handler: H,
    limits: L,
    tls: T,
    shutdown: Shutdown,
    drain: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
    L: Fn() -> Limits + Send,
    T: Fn() -> Option<Acceptor> + Send,
{
    let graceful = GracefulShutdown::new();
    let open = accept_loop(listener, limits, tls, shutdown, |conn: Conn| {
        let Conn {
            peer,
            accepted,
            limits,
        } = conn;
        let clock = Arc::new(Clock::new(accepted));
        let service = {
            let handler = handler.clone();
            let clock = clock.clone();
            let read_timeout = limits.read_timeout;
            service_fn(move |mut req: Request<Incoming>| {
                let started = clock.begin_request();
                req.extensions_mut()
                    .insert(ReadDeadline(after(started, read_timeout)));
                req.extensions_mut().insert(PeerAddr(peer));
                // Boxed: hyper keeps the future in its dispatcher, and a handler's
                // future inline there is copied whole as it moves.
                let fut = crate::reply::unless_panic(Box::pin(handler(req)));
                let clock = clock.clone();
                async move {
                    let resp = fut.await;
                    clock.end_request(Instant::now());
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let watcher = graceful.watcher();
        move |stream| async move {
            let io = Guarded {
                stream,
                clock: clock.clone(),
                write_blocked: false,
            };
            let conn = hyper::server::conn::http1::Builder::new()
                // The watchdog below times heads; see the module doc.
                .header_read_timeout(None)
                .serve_connection(TokioIo::new(io), service);
            let conn = watcher.watch(conn);
            match watch_connection(conn, &clock, limits).await {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                None => tracing::debug!("connection closed by its timeout"),
            }
        }
    })
    .await;
    let closed = async {
        graceful.shutdown().await;
        open.all_closed().await
    };
    drain_within(closed, drain).await;
}

/// Waits for `closed` (every connection gone) for up to `drain`.
async fn drain_within(closed: impl Future<Output = ()>, drain: Duration) {
    if tokio::time::timeout(drain, closed).await.is_err() {
        tracing::warn!(?drain, "connections still open at the drain deadline");
    }
}

/// Like [`serve_with`], on the message path's own HTTP/1.1 server
/// ([`crate::h1::server`]) in place of hyper's: the client listener.
pub async fn serve_messages<H, F, L, T>(
    listener: TcpListener,
    handler: H,
    limits: L,
    tls: T,
    shutdown: Shutdown,
    drain: Duration,
) where
    H: Fn(crate::h1::server::Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = crate::h1::server::Reply> + Send + 'static,
    L: Fn() -> Limits + Send,
    T: Fn() -> Option<Acceptor> + Send,
{
    let down = shutdown.clone();
    let open = accept_loop(listener, limits, tls, shutdown, |conn: Conn| {
        let handler = handler.clone();
        let shutdown = down.clone();
        move |stream| {
            let Conn {
                accepted, limits, ..
            } = conn;
            crate::h1::server::serve(stream, accepted, limits, shutdown, handler)
        }
    })
    .await;
    drain_within(open.all_closed(), drain).await;
}

/// A connection just accepted: who, when, and the limits it is served under.
#[derive(Clone, Copy)]
struct Conn {
    peer: std::net::SocketAddr,
    accepted: Instant,
    limits: Limits,
}

/// Accepts connections until `shutdown`; returns the open connections' count. For
/// each, `serve` is called at once, and what it returns is run in the connection's own
/// task on the connection's stream, once its TLS handshake (if any) is done.
async fn accept_loop<L, T, S, R, F>(
    listener: TcpListener,
    limits: L,
    tls: T,
    mut shutdown: Shutdown,
    mut serve: S,
) -> Arc<Slots>
where
    L: Fn() -> Limits + Send,
    T: Fn() -> Option<Acceptor> + Send,
    S: FnMut(Conn) -> R,
    R: FnOnce(Stream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(Slots::default());
    let mut errors = AcceptErrors::default();
    'accept: loop {
        let mut current = limits();
        // At the cap, accept nothing: new connections wait in the listen backlog.
        while open.count.load(Relaxed) >= current.max_connections {
            tokio::select! {
                _ = open.freed.notified() => {}
                // A reload may have raised the cap.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => break 'accept,
            }
            current = limits();
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    (stream, peer)
                }
                Err(e) => {
                    let pause = errors.failed(&e, std::time::Instant::now());
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.wait() => break,
                    }
                }
            },
            _ = shutdown.wait() => break,
        };
        let slot = Slot::take(&open);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let conn = Conn {
            peer,
            accepted: Instant::now(),
            limits: current,
        };
        let run = serve(conn);
        let acceptor = tls();
        tokio::spawn(async move {
            if let Some(stream) = handshake(stream, acceptor, conn.accepted, &conn.limits).await {
                run(stream).await;
            }
            drop(slot);
        });
    }
    drop(listener);
    open
}

/// The stream a connection speaks on: TLS when an acceptor was given, its handshake
/// counted inside the first request's read timeout. `None` when it failed.
async fn handshake(
    stream: tokio::net::TcpStream,
    acceptor: Option<Acceptor>,
    accepted: Instant,
    limits: &Limits,
) -> Option<Stream> {
    let Some(acceptor) = acceptor else {
        return Some(Stream::Plain(stream));
    };
    let deadline = after(accepted, limits.read_timeout);
    let handshake = tokio_rustls::TlsAcceptor::from(acceptor.config).accept(stream);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake not done within the read timeout");
            None
        }
    }
}

/// Open connections, and a wake-up for the accept loop when one closes.
#[derive(Debug, Default)]
struct Slots {
    count: AtomicUsize,
    freed: Notify,
}

/// One open connection's place in [`Slots`], given back on drop.
struct Slot(Arc<Slots>);

impl Slots {
    /// Resolves once no connection is open.
    async fn all_closed(&self) {
        loop {
            let freed = self.freed.notified();
            if self.count.load(Relaxed) == 0 {
                return;
            }
            freed.await;
        }
    }
}

impl Slot {
    fn take(slots: &Arc<Slots>) -> Slot {
        slots.count.fetch_add(1, Relaxed);
        Slot(slots.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Relaxed);
        self.0.freed.notify_one();
    }
}

/// Accept errors are logged at most this often.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Backoff and log rate limit for failed accepts.
#[derive(Debug, Default)]
struct AcceptErrors {
    /// Failures since the last successful accept.
    streak: u32,
    last_logged: Option<std::time::Instant>,
    /// Failures not logged since the last line.
    suppressed: u64,
}

impl AcceptErrors {
    /// Records a failure at `now`; returns how long to pause before the next accept.
    fn failed(&mut self, e: &io::Error, now: std::time::Instant) -> Duration {
        self.streak = self.streak.saturating_add(1);
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY);
        if due {
            tracing::warn!(
                error = %e,
                not_logged = self.suppressed,
                "accept failed (out of file descriptors?); backing off"
            );
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.backoff()
    }

    fn backoff(&self) -> Duration {
        let doublings = self.streak.saturating_sub(1).min(5);
        (ACCEPT_BACKOFF_FIRST * (1 << doublings)).min(ACCEPT_BACKOFF_MAX)
    }

    fn accepted(&mut self) {
        if self.streak > 0 {
            tracing::info!(
                failed = self.streak,
                "accepting connections again after failed accepts"
            );
            self.streak = 0;
        }
    }
}

/// Where a connection stands, for its timeouts; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fresh = 0,
    Head = 1,
    Busy = 2,
    Idle = 3,
    /// The head's deadline passed: the socket answers 408 and fails the next read.
    Expired = 4,
}

const PHASE_SHIFT: u32 = 61;
const OFFSET_MASK: u64 = (1 << PHASE_SHIFT) - 1;

/// A connection's phase and when it began, in one atomic word (the phase in the top
/// bits, nanoseconds since the accept below). Written only from the connection's own
/// task; atomic because the socket wrapper and the service each hold it.
#[derive(Debug)]
struct Clock {
    base: Instant,
    state: AtomicU64,
}

impl Clock {
    fn new(accepted: Instant) -> Clock {
        Clock {
            base: accepted,
            state: AtomicU64::new((Phase::Fresh as u64) << PHASE_SHIFT),
        }
    }

    fn load(&self) -> (Phase, Instant) {
        let word = self.state.load(Relaxed);
        let phase = match word >> PHASE_SHIFT {
            0 => Phase::Fresh,
            1 => Phase::Head,
            2 => Phase::Busy,
            3 => Phase::Idle,
            _ => Phase::Expired,
        };
        (phase, self.base + Duration::from_nanos(word & OFFSET_MASK))
    }

    fn store(&self, phase: Phase, since: Instant) {
        let nanos = since.saturating_duration_since(self.base).as_nanos();
        let offset = u64::try_from(nanos).unwrap_or(OFFSET_MASK).min(OFFSET_MASK);
        self.state
            .store(((phase as u64) << PHASE_SHIFT) | offset, Relaxed);
    }

    /// Bytes arrived on the socket.
    fn bytes_read(&self) {
        match self.load() {
            (Phase::Fresh, accepted) => self.store(Phase::Head, accepted),
            (Phase::Idle, _) => self.store(Phase::Head, Instant::now()),
            _ => {}
        }
    }

    /// hyper parsed a head and hands the request over; returns when it began.
    fn begin_request(&self) -> Instant {
        let since = match self.load() {
            (Phase::Fresh | Phase::Head, since) => since,
            _ => Instant::now(),
        };
        self.store(Phase::Busy, since);
        since
    }

    /// The handler answered.
    fn end_request(&self, now: Instant) {
        self.store(Phase::Idle, now);
    }

    /// When the current phase runs out; `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Phase, Instant)> {
        match self.load() {
            (p @ (Phase::Fresh | Phase::Head), since) => {
                Some((p, after(since, limits.read_timeout)))
            }
            (Phase::Idle, since) => Some((Phase::Idle, after(since, limits.idle_timeout))),
            (Phase::Busy | Phase::Expired, _) => None,
        }
    }
}

/// Drives `conn` and closes it when its clock runs out. `None` when a timeout closed
/// it.
async fn watch_connection<C>(conn: C, clock: &Clock, limits: Limits) -> Option<C::Output>
where
    C: Future,
{
    let mut conn = std::pin::pin!(conn);
    let far = || after(Instant::now(), limits.read_timeout.max(limits.idle_timeout));
    let mut armed = clock.deadline(&limits).map_or_else(far, |(_, d)| d);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(armed));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        // Every phase change happens inside the poll above, so the timer is right now.
        loop {
            let due = match clock.deadline(&limits) {
                Some(due) => Some(due),
                None if clock.load().0 == Phase::Expired => return Poll::Ready(None),
                None => None,
            };
            if let Some((_, at)) = due {
                if at != armed {
                    armed = at;
                    timer.as_mut().reset(at);
                }
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match due {
                Some((Phase::Head, at)) if Instant::now() >= at => {
                    // Let the socket answer 408 on hyper's next read, which this wake
                    // brings; a connection hyper does not read from is dropped above.
                    clock.store(Phase::Expired, at);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some((_, at)) if Instant::now() >= at => return Poll::Ready(None),
                // Busy, or the deadline moved: arm again and poll the timer again.
                _ => {
                    armed = far();
                    timer.as_mut().reset(armed);
                }
            }
        }
    })
    .await
}

/// The answer to a head that did not arrive in time.
static HEAD_TIMEOUT_ANSWER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = serde_json::json!({"error": {
        "code": "request_timeout",
        "message": "the request did not arrive within server.read_timeout_ms",
    }})
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// The client socket as hyper sees it: it moves the connection's [`Clock`] when bytes
/// arrive, and answers 408 once the head's deadline passed.
struct Guarded {
    stream: Stream,
    clock: Arc<Clock>,
    /// The last write did not complete (an answer may be half written), or the 408 was
    /// written: nothing more is to be written in its place.
    write_blocked: bool,
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.clock.load().0 == Phase::Expired {
            // Best effort, once, on a socket with room: ~200 bytes into an idle
            // socket's send buffer are written whole without blocking, and the
            // connection closes right after. (A client still sending when it closes
            // may get a reset before it reads the 408: there is no lingering close.)
            if !this.write_blocked {
                let mut stream = Pin::new(&mut this.stream);
                match stream.as_mut().poll_write(cx, &HEAD_TIMEOUT_ANSWER) {
                    // Over TLS the answer is sealed in a record first: push it out.
                    Poll::Ready(Ok(_)) => {
                        let _best_effort = stream.poll_flush(cx);
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "could not write the 408 answer");
                    }
                    Poll::Pending => tracing::debug!("no room for the 408 answer"),
                }
                this.write_blocked = true;
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive within server.read_timeout_ms",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_read();
        }
        res
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.write_blocked = res.is_pending();
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_blocked = res.is_pending();
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_log_sparingly() {
        let mut errors = AcceptErrors::default();
        let e = io::Error::from_raw_os_error(24); // EMFILE
        let t0 = std::time::Instant::now();
        let pauses: Vec<_> = (0..8)
            .map(|i| errors.failed(&e, t0 + Duration::from_millis(i * 100)))
            .collect();
        assert_eq!(pauses[0], Duration::from_millis(50));
        assert_eq!(pauses[1], Duration::from_millis(100));
        assert_eq!(pauses[4], Duration::from_millis(800));
        assert_eq!(pauses[7], Duration::from_secs(1));
        // One line for the first failure; the seven after it inside the window wait.
        assert_eq!(errors.suppressed, 7);
        errors.failed(&e, t0 + ACCEPT_LOG_EVERY);
        assert_eq!(errors.suppressed, 0, "a line is due after the window");
        errors.accepted();
        assert_eq!(errors.backoff(), ACCEPT_BACKOFF_FIRST, "a success resets");
    }

    #[test]
    fn clock_moves_through_phases() {
        let t0 = Instant::now();
        let limits = Limits {
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
        };
        let clock = Clock::new(t0);
        assert_eq!(
            clock.deadline(&limits),
            Some((Phase::Fresh, t0 + Duration::from_secs(10)))
        );
        // The first request's bytes keep the accept as its start.
        clock.bytes_read();
        assert_eq!(clock.load(), (Phase::Head, t0));
        assert_eq!(clock.begin_request(), t0);
        assert_eq!(clock.deadline(&limits), None, "no timer cuts a request");
        let t1 = Instant::now();
        clock.end_request(t1);
        assert_eq!(
            clock.deadline(&limits),
            Some((Phase::Idle, t1 + Duration::from_secs(60)))
        );
        // The next request starts at its first byte.
        clock.bytes_read();
        let (phase, since) = clock.load();
        assert_eq!(phase, Phase::Head);
        assert!(since >= t1);
    }

    #[test]
    fn the_408_answer_is_well_formed() {
        let text = String::from_utf8(HEAD_TIMEOUT_ANSWER.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "request_timeout");
    }
}
