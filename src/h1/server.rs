//! The HTTP/1.1 server side of the client listener: one task per connection reads each
//! request's head, hands the request to the handler, and writes its answer (head and
//! body in one write) on the connection itself.
//!
//! Why not hyper's server here: it runs a dispatcher per connection that passes the
//! body through a channel and encodes the answer through generic machinery; on the
//! message path that cost about as much user time as all of switchyard's own work per
//! message (see BENCHMARKS.md). The admin listener and the mock master keep hyper.
//!
//! **Requests** (RFC 9112): heads up to [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers
//! (else 431), parsed with `httparse`. The body is framed by `Content-Length` (equal
//! repeats accepted) or `Transfer-Encoding` ending in `chunked`; any other coding is a
//! 501, and a request with both is refused (400) as a smuggling attempt. The handler
//! reads the body as it arrives ([`RequestBody`]), under its own limit and deadline; a
//! `100 Continue` goes out when it first asks for it, so a request refused before its
//! body is read never sends it. `Expect` other than `100-continue` is a 417.
//!
//! **Connections**: keep-alive unless the client says `close` (HTTP/1.1) or does not
//! say `keep-alive` (HTTP/1.0); pipelined requests are answered in order. A connection
//! is closed after the answer when the handler did not read the whole body, when the
//! answer says `Connection: close`, and once shutdown is triggered. When part of the
//! request is left unread, what the client still sends is read and dropped for up to
//! 2 s (1 MiB) before the close, so that the close does not reset the answer away.
//!
//! **Timeouts** (the same as the other listeners'; see `crate::server`): a head must
//! arrive within `read_timeout` of the accept (first request) or of its first byte, else
//! a 408 (or, with nothing received, a quiet close); an idle connection closes after
//! `idle_timeout`, and an answer the client does not take within `idle_timeout` is
//! dropped with the connection.

use super::chunked::Decoder;
use super::head::{add_length, is_named, tokens, LengthError, Lines};
use super::headers::Headers;
use crate::server::{after, Limits, Shutdown};
use crate::tls::listen::Stream;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// The longest request head: hyper's default bound, which this listener had before.
pub const MAX_HEAD: usize = 8 * 1024 + 100 * 4096;
/// Headers a request may carry.
pub const MAX_HEADERS: usize = 100;
/// The read buffer is not kept above this between requests.
const KEEP_BUFFER: usize = 64 * 1024;

/// How long, and how much, a closing connection still reads; see [`linger`].
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The connection as the driver and the request's body share it.
struct Io {
    stream: Stream,
    buf: BytesMut,
    body: BodyState,
    /// Bytes of the `100 Continue` still to write before the body is read.
    continue_left: usize,
    /// The request being served, counted from 1.
    request: u64,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Box<Decoder>),
    Done,
    /// The body could not be read; the connection is not reused.
    Failed,
}

type Shared = Arc<Mutex<Io>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Io> {
    // A panic while the lock was held leaves the connection in an unknown state, but
    // the driver closes it after that request anyway (the body is then not Done).
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl Io {
    /// Reads more into `buf`: the number of bytes read (0 at the end of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        super::poll_fill(&mut self.stream, &mut self.buf, cx)
    }

    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.continue_left > 0 {
            let from = CONTINUE.len() - self.continue_left;
            let n =
                std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &CONTINUE[from..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_left -= n;
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.continue_left > 0 {
            if let Err(e) = std::task::ready!(self.poll_continue(cx)) {
                self.body = BodyState::Failed;
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Failed => {
                    return Poll::Ready(Some(Err(io::Error::other("the body was not read whole"))))
                }
                BodyState::Length(0) => {
                    self.body = BodyState::Done;
                    return Poll::Ready(None);
                }
                BodyState::Length(left) if !self.buf.is_empty() => {
                    let n = (*left).min(self.buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.body = BodyState::Done;
                    }
                    return Poll::Ready(Some(Ok(self.buf.split_to(n).freeze())));
                }
                BodyState::Chunked(decoder) if !self.buf.is_empty() => {
                    match decoder.feed(&mut self.buf) {
                        Ok(done) => {
                            let data = decoder.body.split().freeze();
                            if done {
                                self.body = BodyState::Done;
                            }
                            if !data.is_empty() {
                                return Poll::Ready(Some(Ok(data)));
                            }
                            if done {
                                return Poll::Ready(None);
                            }
                        }
                        Err(e) => {
                            self.body = BodyState::Failed;
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                e.to_string(),
                            ))));
                        }
                    }
                }
                _ => {}
            }
            // Nothing buffered for the body: read more.
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed before the body ended",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// A handler's answer: its response, and what it adds for the listener to write.
#[derive(Debug)]
pub struct Reply {
    /// Boxed: a reply is moved up through the handler's futures (and a `Response` is
    /// 136 bytes, each move a call to `memcpy`), where a box is one allocation.
    pub response: Box<Response<crate::server::Body>>,
    pub added: Added,
}

/// Written after a response's own headers: headers set per message (a list, without a
/// `HeaderMap`'s allocations and hashing), then a master's header lines less those the
/// response or the list names (the handler's `x-request-id` and others replace the
/// master's).
#[derive(Debug, Default)]
pub struct Added {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub lines: Lines,
    /// When the answer was ready, if the handler read the clock then: the listener's
    /// time for the answer (its `date`, its write's deadline, the idle deadline after
    /// it), so that it reads no clock of its own.
    pub at: Option<Instant>,
}

impl From<Response<crate::server::Body>> for Reply {
    fn from(response: Response<crate::server::Body>) -> Reply {
        Reply {
            response: Box::new(response),
            added: Added::default(),
        }
    }
}

/// A request's body, read from the connection as the handler asks for it.
pub struct RequestBody {
    shared: Shared,
    /// Its request's number on the connection.
    request: u64,
    /// Its last frame has been taken (known without the connection's lock).
    ended: bool,
    /// When its first byte came (the accept, for a connection's first request), if
    /// the listener had to read the clock; else its head came whole in one read.
    started: Option<Instant>,
    read_timeout: std::time::Duration,
}

impl RequestBody {
    /// When the whole request must be in: `server.read_timeout` from its first byte
    /// (from the accept, for a connection's first request). For a head that came
    /// whole in one read, the clock is read when this is called: the handler asks
    /// only when it must wait for the body, so a request that came whole reads no
    /// clock for its deadline.
    pub fn deadline(&self) -> impl Fn() -> Instant + use<> {
        let (started, read_timeout) = (self.started, self.read_timeout);
        move || after(started.unwrap_or_else(Instant::now), read_timeout)
    }

    /// The connection, while this body's request is the one being served (a body kept
    /// past its request reads nothing of the next one's).
    fn io(&self) -> Option<MutexGuard<'_, Io>> {
        let io = lock(&self.shared);
        (io.request == self.request).then_some(io)
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(mut io) = self.io() else {
            return Poll::Ready(None);
        };
        let frame = io.poll_body(cx);
        let ended = matches!(io.body, BodyState::Done);
        drop(io);
        self.ended = ended;
        frame.map(|d| d.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
            || self
                .io()
                .is_none_or(|io| matches!(io.body, BodyState::Done | BodyState::Length(0)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.io().as_deref().map(|io| &io.body) {
            Some(BodyState::Length(n)) => SizeHint::with_exact(*n),
            None | Some(BodyState::Done) => SizeHint::with_exact(0),
            Some(_) => SizeHint::default(),
        }
    }
}

/// A request as the handler gets it.
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Headers,
    pub body: RequestBody,
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Headers,
    body: BodyState,
    keep_alive: bool,
    expect_continue: bool,
}

/// Why a head was refused: the status and the error body's code and message.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(StatusCode, &'static str, String);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

/// Header names and where their values lie in the head: kept for the connection, so
/// that a request's parse allocates no list of its own.
type Names = Vec<(HeaderName, std::ops::Range<usize>)>;

/// Parses a request head at the start of `buf` and takes it out: `Ok(None)` when it is
/// not complete yet. The target and header values are slices of the head's bytes,
/// taken from the connection's buffer, rather than copies of their own.
fn parse(buf: &mut BytesMut, names: &mut Names) -> Result<Option<Head>, Refusal> {
    names.clear();
    let Some((fields, len)) = scan(buf, names)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(len).freeze();
    let target = &bytes[fields.target.clone()];
    let uri = if target == crate::proxy::SEND_PATH.as_bytes() {
        // Parsed once: a clone of it is a few words (a URI's parse is ~250
        // instructions, a tenth of the head's).
        static SEND: std::sync::LazyLock<Uri> =
            std::sync::LazyLock::new(|| Uri::from_static(crate::proxy::SEND_PATH));
        SEND.clone()
    } else {
        Uri::from_maybe_shared(bytes.slice(fields.target))
            .map_err(|_| bad("the request target is not valid"))?
    };
    let mut headers = Headers::with_capacity(names.len());
    for (name, value) in names.drain(..) {
        let value = HeaderValue::from_maybe_shared(bytes.slice(value))
            .map_err(|_| bad("a header value is not valid"))?;
        headers.push(name, value);
    }
    Ok(Some(Head {
        method: fields.method,
        uri,
        version: fields.version,
        headers,
        body: fields.body,
        keep_alive: fields.keep_alive,
        expect_continue: fields.expect_continue,
    }))
}

/// A head as [`scan`] reads it, before its target and values are taken.
struct Fields {
    method: Method,
    target: std::ops::Range<usize>,
    version: Version,
    body: BodyState,
    keep_alive: bool,
    expect_continue: bool,
}

/// Reads the head at the start of `buf`, its header names into `names` with where
/// their values lie; `Ok(None)` while incomplete, else the head and its length.
fn scan(buf: &[u8], names: &mut Names) -> Result<Option<(Fields, usize)>, Refusal> {
    // Left uninitialised, as in `super::head::parse`.
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(too_large_head()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large_head()),
        Err(e) => return Err(bad(format!("the request is not valid HTTP/1.1 ({e})"))),
    };
    if len > MAX_HEAD {
        return Err(too_large_head());
    }
    // Where a part of the head lies in it.
    let at = |part: &[u8]| match (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize) {
        Some(start) if start + part.len() <= len => start..start + part.len(),
        // An empty part that is not a slice of `buf`.
        _ => 0..0,
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("the method is not valid"))?;
    let target = at(req.path.unwrap_or_default().as_bytes());
    let http11 = req.version == Some(1);
    let version = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };

    let mut close = false;
    let mut keep_alive_token = false;
    let mut chunked: Option<bool> = None;
    let mut length: Option<u64> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = match known_name(h.name.as_bytes()) {
            Some(name) => name,
            None => HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| bad("a header name is not valid"))?,
        };
        if name == header::CONNECTION {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            if !http11 {
                return Err(bad("HTTP/1.0 has no Transfer-Encoding"));
            }
            for token in tokens(h.value) {
                if chunked == Some(true) {
                    // chunked must be the last coding, and only once.
                    return Err(bad("chunked is not the last transfer coding"));
                }
                chunked = Some(token.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name == header::CONTENT_LENGTH {
            add_length(&mut length, h.value).map_err(|e| {
                bad(match e {
                    LengthError::Invalid => "Content-Length is not valid",
                    LengthError::Differs => "Content-Length values differ",
                })
            })?;
        } else if name == header::EXPECT {
            if http11 && h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Refusal(
                    StatusCode::EXPECTATION_FAILED,
                    "expectation_failed",
                    "the only expectation supported is 100-continue".to_string(),
                ));
            }
        }
        names.push((name, at(h.value)));
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "a request may not carry both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(true), None) => BodyState::Chunked(Box::new(Decoder::new(usize::MAX))),
        (Some(false), None) => {
            return Err(Refusal(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported_transfer_coding",
                "only the chunked transfer coding is supported".to_string(),
            ))
        }
        (None, Some(0) | None) => BodyState::Done,
        (None, Some(n)) => BodyState::Length(n),
    };
    let keep_alive = !close && (http11 || keep_alive_token);
    let expect_continue = expect_continue && !matches!(body, BodyState::Done);
    let fields = Fields {
        method,
        target,
        version,
        body,
        keep_alive,
        expect_continue,
    };
    Ok(Some((fields, len)))
}

/// The names clients send most and the proxy reads, told apart without
/// `HeaderName::from_bytes`, which maps each byte through a table, matches the result
/// against some ninety standard names and copies any other name into an allocation of
/// its own (`x-request-id`, `idempotency-key`): about 150 instructions a name.
fn known_name(name: &[u8]) -> Option<HeaderName> {
    use super::head::is_named as is;
    Some(match name.len() {
        4 if is(name, "host") => header::HOST,
        6 if is(name, "accept") => header::ACCEPT,
        6 if is(name, "expect") => header::EXPECT,
        6 if is(name, "prefer") => crate::proxy::hints::PREFER,
        9 if is(name, "x-api-key") => crate::clients::X_API_KEY,
        10 if is(name, "connection") => header::CONNECTION,
        10 if is(name, "user-agent") => header::USER_AGENT,
        12 if is(name, "content-type") => header::CONTENT_TYPE,
        12 if is(name, "x-request-id") => crate::proxy::trace::X_REQUEST_ID,
        13 if is(name, "authorization") => header::AUTHORIZATION,
        14 if is(name, "content-length") => header::CONTENT_LENGTH,
        15 if is(name, "idempotency-key") => crate::proxy::hints::IDEMPOTENCY_KEY,
        17 if is(name, "transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return None,
    })
}

fn too_large_head() -> Refusal {
    Refusal(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!("the request head is larger than {MAX_HEAD} bytes or {MAX_HEADERS} headers"),
    )
}

/// Serves one connection until the client closes it, a timeout, or shutdown.
pub async fn serve<H, F>(
    stream: Stream,
    accepted: Instant,
    limits: Limits,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(Request) -> F,
    F: Future<Output = Reply> + Send + 'static,
{
    let shared: Shared = Arc::new(Mutex::new(Io {
        stream,
        buf: BytesMut::with_capacity(super::READ_CHUNK),
        body: BodyState::Done,
        continue_left: 0,
        request: 0,
    }));
    let mut out = Vec::with_capacity(1024);
    let mut names = Names::new();
    // One timer and one shutdown watch for the connection's life: moving the timer
    // later costs a store (see `super::timer`), where a new one per request would lock
    // the timer wheel twice.
    let mut quiet = super::timer::Timer::new(after(accepted, limits.read_timeout));
    let mut down = std::pin::pin!(shutdown.clone().wait_owned());
    let mut down_armed = false;
    let mut first = true;
    // Bytes of a next request are buffered already (pipelined).
    let mut buffered = false;
    loop {
        // 1. The first byte of a request.
        if !buffered {
            // The timer and the shutdown watch keep this task's waker once it is
            // registered: polled again only when they may have fired (an atomic load
            // each), not re-registered at every request (the watch's under a lock).
            let arrived = poll_fn(|cx| {
                if let Poll::Ready(r) = lock(&shared).poll_fill(cx) {
                    return Poll::Ready(matches!(r, Ok(n) if n > 0));
                }
                // Quiet too long, or shutting down: nothing to answer.
                if quiet.poll_passed_by_owner(cx).is_ready() {
                    return Poll::Ready(false);
                }
                if !down_armed || shutdown.may_have_changed() {
                    if down.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    down_armed = true;
                }
                Poll::Pending
            })
            .await;
            if !arrived {
                return;
            }
        }
        // Read from the clock only if the head does not come whole at once.
        let mut started = first.then_some(accepted);

        // 2. The whole head; the body's state is set as it is taken (one lock).
        // The request's number, set with the head (not paired with it: a head is moved
        // whole at each pairing).
        let mut request = 0;
        let head = loop {
            let parsed = {
                let mut io = lock(&shared);
                let mut parsed = parse(&mut io.buf, &mut names);
                if let Ok(Some(head)) = &mut parsed {
                    io.body = std::mem::replace(&mut head.body, BodyState::Done);
                    io.continue_left = if head.expect_continue {
                        CONTINUE.len()
                    } else {
                        0
                    };
                    io.request += 1;
                    request = io.request;
                }
                parsed
            };
            match parsed {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(Refusal(status, code, message)) => {
                    if refuse(&shared, &mut out, status, code, message, &limits).await {
                        // The rest of what it sent is not read.
                        linger(&shared).await;
                    }
                    return;
                }
            }
            let read = poll_fn(|cx| lock(&shared).poll_fill(cx));
            let deadline = after(
                *started.get_or_insert_with(Instant::now),
                limits.read_timeout,
            );
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_late) => {
                    let message = "the request did not arrive within server.read_timeout_ms";
                    let timeout = StatusCode::REQUEST_TIMEOUT;
                    refuse(
                        &shared,
                        &mut out,
                        timeout,
                        "request_timeout",
                        message,
                        &limits,
                    )
                    .await;
                    return;
                }
            }
        };

        // 3. The handler, with the body read from the connection as it asks.
        let is_head = head.method == Method::HEAD;
        // The deadline travels in the body, not in extensions (a map and a box per
        // request).
        let body = RequestBody {
            shared: shared.clone(),
            request,
            ended: false,
            started,
            read_timeout: limits.read_timeout,
        };
        let req = Request {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
            body,
        };
        let reply: Reply = crate::reply::unless_panic(crate::util::boxed(|| handler(req))).await;

        // 4. The answer; keep the connection only when the body was read whole.
        // One lock for the body's state, the answer's write (whole at once, most
        // often) and the look for a pipelined request.
        let asks_close = reply
            .response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let now = reply.added.at.unwrap_or_else(Instant::now);
        let (begun, body_done) = {
            let mut io = lock(&shared);
            io.continue_left = 0;
            let body_done = matches!(io.body, BodyState::Done);
            let close = !head.keep_alive || !body_done || shutdown.is_triggered() || asks_close;
            let connection = if close {
                Connection::Close
            } else if head.version == Version::HTTP_10 {
                Connection::KeepAlive
            } else {
                Connection::Unsaid
            };
            let begun = io.start_answer(&mut out, reply, is_head, connection, now);
            buffered = !io.buf.is_empty();
            if !buffered && io.buf.capacity() > KEEP_BUFFER {
                io.buf = BytesMut::with_capacity(super::READ_CHUNK);
            }
            (begun, body_done)
        };
        let close = begun.close;
        if finish(&shared, &out, begun, &limits).await.is_err() {
            return;
        }
        if close {
            if !body_done {
                linger(&shared).await;
            }
            return;
        }
        first = false;
        quiet.set(after(now, limits.idle_timeout));
        if out.capacity() > KEEP_BUFFER {
            out = Vec::with_capacity(1024);
        }
    }
}

/// Answers a request that is not served with an error, closing the connection; false
/// when the answer could not be written.
async fn refuse(
    shared: &Shared,
    out: &mut Vec<u8>,
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    limits: &Limits,
) -> bool {
    let reply = crate::reply::error(status, code, message).into();
    let begun = lock(shared).start_answer(out, reply, false, Connection::Close, Instant::now());
    finish(shared, out, begun, limits).await.is_ok()
}

/// What an answer's `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// HTTP/1.1 keeps the connection without saying so.
    Unsaid,
    /// An HTTP/1.0 client that asked for keep-alive is told it holds.
    KeepAlive,
    Close,
}

/// An answer encoded and begun by [`Io::start_answer`].
struct Begun {
    /// The first try: most answers go out whole at once, without a timer.
    first: Poll<io::Result<()>>,
    written: usize,
    close: bool,
    now: Instant,
}

impl Io {
    /// Writes `out` from `written` on, then flushes.
    fn poll_send(
        &mut self,
        out: &[u8],
        written: &mut usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while *written < out.len() {
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &out[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero)));
            }
            *written += n;
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Encodes `reply` into `out` (head and body in one buffer) and writes what goes
    /// out at once, without waiting; [`finish`] writes the rest.
    fn start_answer(
        &mut self,
        out: &mut Vec<u8>,
        reply: Reply,
        is_head: bool,
        connection: Connection,
        now: Instant,
    ) -> Begun {
        out.clear();
        encode(out, reply, is_head, connection, now);
        let mut written = 0;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = self.poll_send(out, &mut written, &mut cx);
        let close = connection == Connection::Close;
        Begun {
            first,
            written,
            close,
            now,
        }
    }
}

/// Writes what is left of a [`Begun`] answer within `idle_timeout` of its start;
/// then, when it closes the connection, tells the client nothing more comes (over
/// TLS, a close_notify), without waiting.
async fn finish(shared: &Shared, out: &[u8], begun: Begun, limits: &Limits) -> io::Result<()> {
    let Begun {
        first,
        mut written,
        close,
        now,
    } = begun;
    match first {
        Poll::Ready(r) => r?,
        Poll::Pending => {
            let write = poll_fn(|cx| lock(shared).poll_send(out, &mut written, cx));
            match tokio::time::timeout_at(after(now, limits.idle_timeout), write).await {
                Ok(r) => r?,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }
    if close {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut lock(shared).stream).poll_shutdown(&mut cx);
    }
    Ok(())
}

/// After an answer that left part of the request unread (and said `close`): reads
/// and drops what the client still sends, until it closes, for up to [`LINGER`] and
/// [`LINGER_BYTES`]. Closing a socket with unread bytes sends a reset, which can
/// destroy the answer before the client has read it.
async fn linger(shared: &Shared) {
    let deadline = after(Instant::now(), LINGER);
    let mut dropped = 0;
    loop {
        let read = poll_fn(|cx| {
            let mut io = lock(shared);
            io.buf.clear();
            io.poll_fill(cx)
        });
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(n)) if n > 0 && dropped + n <= LINGER_BYTES => dropped += n,
            _ => return,
        }
    }
}

/// Encodes an answer: status line, the handler's headers (less framing ones), those it
/// added and a master's header lines but those the handler's headers name, `date`
/// unless one was given, `content-length`, `connection: close` when closing, then the
/// body.
fn encode(out: &mut Vec<u8>, reply: Reply, is_head: bool, connection: Connection, now: Instant) {
    let Reply {
        mut response,
        added,
    } = reply;
    let body = full_bytes(response.body_mut());
    let status = response.status();
    let headers = response.headers();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        has_date |= name == header::DATE;
        super::write_header(out, name, value);
    }
    for (name, value) in &added.headers {
        has_date |= name == header::DATE;
        super::write_header(out, name, value);
    }
    for (name, line) in added.lines.lines() {
        // In any case, as the master spelled them; the handler's own (`x-request-id`,
        // ...) win.
        let named = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        if headers.keys().any(named) || added.headers.iter().any(|(n, _)| named(n)) {
            continue;
        }
        has_date |= is_named(name, "date");
        out.extend_from_slice(line);
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::write(out, now);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless {
        out.extend_from_slice(b"content-length: ");
        super::write_decimal(out, body.len());
        out.extend_from_slice(b"\r\n");
    }
    match connection {
        Connection::Unsaid => {}
        Connection::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Connection::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless && !is_head {
        out.extend_from_slice(&body);
    }
}

/// The bytes of a whole body: a `Full` body is one frame, ready at once (taken
/// without collecting, which would allocate a list per answer).
fn full_bytes(body: &mut crate::server::Body) -> Bytes {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The `date` header's value, formatted once a second per thread. The wall clock is
/// read only when the second the text holds has passed, judged by `now` (the
/// monotonic time the server read already).
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use tokio::time::Instant;

    thread_local! {
        /// Until when the text holds, and the text.
        static CACHED: RefCell<(Option<Instant>, [u8; 29])> = const { RefCell::new((None, [0; 29])) };
    }

    pub fn write(out: &mut Vec<u8>, now: Instant) {
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0.is_none_or(|until| now >= until) {
                let wall = SystemTime::now();
                let text = httpdate::fmt_http_date(wall);
                if text.len() != 29 {
                    out.extend_from_slice(text.as_bytes());
                    return;
                }
                let into_second = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
                let left = Duration::from_secs(1)
                    - Duration::from_nanos(into_second.subsec_nanos().into());
                c.1.copy_from_slice(text.as_bytes());
                c.0 = Some(now + left);
            }
            out.extend_from_slice(&c.1);
        });
    }
}

#[cfg(test)]
mod tests;
