//! The HTTP/1.1 client of the message path: one request at a time on a keep-alive
//! connection, driven by the task that sends the message.
//!
//! Why not hyper's client: it gives every connection a task of its own, and every
//! request crosses a channel to it and its answer back, with the head built as a
//! `HeaderMap` and the answer's headers copied through another. Here the request's
//! task writes the request (head and body in one buffer, one write) and reads the
//! answer on the connection itself; the head is parsed with `httparse`, and its
//! end-to-end header lines are kept as bytes ([`head::Lines`]) that the client's
//! answer is written with. Buffers stay with the connection
//! and are reused by its next request.
//!
//! An answer may begin before the request is written out (a master that refuses a
//! message without reading all of it): it is read, the rest of the request is not
//! sent, and the connection is not reused. Reuse also ends with `Connection: close`,
//! an HTTP/1.0 answer without keep-alive, a body that runs to the close, or bytes past
//! the answer.
//!
//! May call: `config` (endpoints), `pool` (dialling), `util`.

mod chunked;
pub mod head;
pub mod headers;
pub mod pool;
pub mod server;
mod timer;

use bytes::{Buf, Bytes, BytesMut};
use head::{Framing, Head};
use http::StatusCode;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest answer head.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest answer body taken from a master.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Buffers above this size are not kept for the connection's next request.
const KEEP_BUFFER: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// A master's answer, body read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// End-to-end headers only (see [`head::Head::headers`]).
    pub headers: head::Lines,
    pub body: Bytes,
}

/// Why an exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection closed or broke before any byte of an answer: on a reused
    /// connection, most often the master closing it as idle while the request went out.
    #[error("connection closed before an answer: {0}")]
    NoAnswer(String),
    /// It broke during the answer.
    #[error("connection broke during the answer: {0}")]
    Broken(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// One connection to a master.
pub struct Conn<S> {
    io: S,
    read: BytesMut,
    /// The request being sent; [`Conn::exchange`]'s `build` writes it.
    write: Vec<u8>,
    reusable: bool,
}

/// What the write ended with.
enum Sent {
    All,
    /// An answer began (or the master closed) before the request was written out.
    Early,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Conn<S> {
        Conn {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::new(),
            reusable: true,
        }
    }

    pub fn io(&self) -> &S {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Whether the last exchange left the connection fit for another request.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Sends the request `build` writes (head and body, as bytes on the wire) and reads
    /// the whole answer. A connection that ends in an error is not reusable.
    pub async fn exchange(
        &mut self,
        build: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Answer, ExchangeError> {
        self.reusable = false;
        self.write.clear();
        build(&mut self.write);
        let sent = self.send().await?;
        let (head, head_len) = self.read_head().await?;
        self.read.advance(head_len);
        let body = self.read_body(head.framing).await?;
        self.reusable = head.keep_alive && matches!(sent, Sent::All) && self.read.is_empty();
        if self.write.capacity() > KEEP_BUFFER {
            self.write = Vec::new();
        }
        if self.read.capacity() > KEEP_BUFFER {
            self.read = BytesMut::with_capacity(READ_CHUNK);
        }
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Writes the request out, reading meanwhile whenever the write has to wait, so
    /// that an early answer is seen (and a master that stopped reading cannot hold
    /// the write for ever).
    async fn send(&mut self) -> Result<Sent, ExchangeError> {
        let Conn {
            io, read, write, ..
        } = self;
        let mut written = 0;
        let mut flushed = false;
        poll_fn(|cx| loop {
            if written < write.len() {
                match Pin::new(&mut *io).poll_write(cx, &write[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(no_answer("wrote nothing"))),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(no_answer(e))),
                    Poll::Pending => {}
                }
            } else if !flushed {
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => flushed = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(no_answer(e))),
                    Poll::Pending => {}
                }
            }
            if flushed {
                return Poll::Ready(Ok(Sent::All));
            }
            // The write waits: take in whatever the master sends meanwhile.
            return match poll_fill(&mut *io, read, cx) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(Sent::Early)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(no_answer(e))),
                Poll::Pending => Poll::Pending,
            };
        })
        .await
    }

    /// Reads until a whole head is buffered, skipping interim (1xx) answers.
    async fn read_head(&mut self) -> Result<(Head, usize), ExchangeError> {
        let mut received = !self.read.is_empty();
        loop {
            if let Some((head, len)) = head::parse(&self.read)? {
                if head.status.is_informational() {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(ExchangeError::Malformed("unasked 101".to_string()));
                    }
                    self.read.advance(len);
                    continue;
                }
                return Ok((head, len));
            }
            if self.read.len() >= MAX_HEAD {
                return Err(ExchangeError::TooLarge(MAX_HEAD));
            }
            let n = self.fill().await.map_err(|e| {
                if received {
                    ExchangeError::Broken(e.to_string())
                } else {
                    no_answer(e)
                }
            })?;
            if n == 0 {
                return Err(if received {
                    ExchangeError::Broken("closed during the head".to_string())
                } else {
                    no_answer("closed")
                });
            }
            received = true;
        }
    }

    async fn read_body(&mut self, framing: Framing) -> Result<Bytes, ExchangeError> {
        let broken = |e: std::io::Error| ExchangeError::Broken(e.to_string());
        let closed = || ExchangeError::Broken("closed during the body".to_string());
        match framing {
            Framing::Length(n) => {
                if n > MAX_BODY as u64 {
                    return Err(ExchangeError::TooLarge(MAX_BODY));
                }
                let n = n as usize;
                if self.read.len() < n {
                    self.read.reserve(n - self.read.len());
                }
                while self.read.len() < n {
                    if self.fill().await.map_err(broken)? == 0 {
                        return Err(closed());
                    }
                }
                let body = Bytes::copy_from_slice(&self.read[..n]);
                self.read.advance(n);
                Ok(body)
            }
            Framing::Chunked => {
                let mut decoder = chunked::Decoder::new(MAX_BODY);
                while !decoder.feed(&mut self.read)? {
                    if self.fill().await.map_err(broken)? == 0 {
                        return Err(closed());
                    }
                }
                Ok(decoder.body.freeze())
            }
            Framing::Close => {
                while self.fill().await.map_err(broken)? > 0 {
                    if self.read.len() > MAX_BODY {
                        return Err(ExchangeError::TooLarge(MAX_BODY));
                    }
                }
                Ok(self.read.split().freeze())
            }
        }
    }

    /// One read into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| poll_fill(&mut self.io, &mut self.read, cx)).await
    }
}

/// One read into `buf`, with a chunk's room made first when little is left: the number
/// of bytes read, 0 at the end of the stream. Both the client's connections and the
/// server's read this way.
fn poll_fill<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
    std::task::ready!(Pin::new(io).poll_read(cx, &mut read))?;
    let n = read.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare room.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// Writes one header line, `name: value` and CRLF.
pub fn write_header(out: &mut Vec<u8>, name: &http::HeaderName, value: &http::HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal digits (a `Content-Length`), without the formatting
/// machinery. The digits are copied as one fixed-size block and the spare ones cut
/// off: a copy of a length known only at run time is a call to `memcpy`, which for
/// two or three bytes cost more than the digits themselves.
pub fn write_decimal(out: &mut Vec<u8>, n: usize) {
    let len = n.checked_ilog10().unwrap_or(0) as usize + 1;
    let mut digits = [0u8; 20];
    let mut rest = n;
    for d in digits[..len].iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = out.len();
    out.extend_from_slice(&digits);
    out.truncate(start + len);
}

fn no_answer(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::NoAnswer(e.to_string())
}

#[cfg(test)]
mod tests;
