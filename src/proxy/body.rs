//! Reading a client's request body under `server.max_body_bytes` and the request's read
//! deadline (SPEC section 8), at the cost of its bytes.
//!
//! hyper hands a body over in frames, each a slice of its read buffer; keeping the
//! frames (as `Limited::collect` does) keeps each one's buffer alive, about a buffer
//! per packet when a client trickles its body. [`read`] copies every frame into one
//! buffer as it arrives and drops it, so a slow body holds its bytes and no more: at
//! most twice what arrived, or [`RESERVE_MAX`] reserved up front from Content-Length.
//! A body that comes in one frame (the usual case) is returned as it is, uncopied.

use crate::reply;
use crate::server::{Body, ReadDeadline};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::time::Instant;

/// The most reserved up front from a declared Content-Length: a hostile client that
/// declares a large body and trickles it costs what it sent, not what it declared.
pub const RESERVE_MAX: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit")]
    TooLarge,
    #[error("the body did not arrive before the read deadline")]
    TimedOut,
    /// The client went away or sent a malformed body.
    #[error("could not read the body: {0}")]
    Read(#[source] BoxError),
}

impl BodyError {
    /// The answer for a body that could not be read (413 is answered by the caller,
    /// which knows the limit's name).
    pub fn into_response(self) -> Response<Body> {
        match self {
            BodyError::TooLarge => reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than the limit",
            ),
            BodyError::TimedOut => {
                let mut resp = reply::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive within server.read_timeout_ms",
                );
                // What is left of the body is never read: the connection cannot be reused.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
            BodyError::Read(e) => {
                tracing::debug!(error = %e, "could not read a request body");
                reply::error(
                    StatusCode::BAD_REQUEST,
                    "body_read_failed",
                    "could not read the request body",
                )
            }
        }
    }
}

/// The read deadline [`crate::server`] put in the request, else `read_timeout` from now.
pub fn deadline(extensions: &http::Extensions, read_timeout: Duration) -> Instant {
    match extensions.get::<ReadDeadline>() {
        Some(d) => d.0,
        None => crate::server::after(Instant::now(), read_timeout),
    }
}

/// Reads `body` whole, before `deadline()`. `declared` is its Content-Length, if any:
/// above `limit` it is refused before anything is read, and up to [`RESERVE_MAX`] of
/// it is reserved. A body that is in already is taken without a timer, and the
/// deadline is asked for (perhaps a clock read) only when the body must be waited on.
pub async fn read<B>(
    mut body: B,
    declared: Option<u64>,
    limit: usize,
    deadline: impl Fn() -> Instant,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    // Allocated when a body comes in more than one frame.
    let mut buf: Option<Vec<u8>> = None;
    let mut until: Option<Instant> = None;
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                let until = *until.get_or_insert_with(&deadline);
                match tokio::time::timeout_at(until, body.frame()).await {
                    Err(_elapsed) => return Err(BodyError::TimedOut),
                    Ok(next) => next,
                }
            }
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => return Err(BodyError::Read(e.into())),
            Some(Ok(frame)) => frame,
        };
        // Trailers carry nothing switchyard forwards.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = buf.as_ref().map_or(0, Vec::len);
        if held + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        match &mut buf {
            Some(buf) => buf.extend_from_slice(&data),
            None if body.is_end_stream() => return Ok(data),
            None if data.is_empty() => {}
            None => {
                let reserve = declared
                    .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
                    .min(limit)
                    .min(RESERVE_MAX)
                    .max(data.len());
                let mut first = Vec::with_capacity(reserve);
                first.extend_from_slice(&data);
                buf = Some(first);
            }
        }
    }
    Ok(buf.map(Bytes::from).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    /// A body fed frame by frame through a channel.
    struct Chan(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Chan {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel_body() -> (mpsc::Sender<Bytes>, Chan) {
        let (tx, rx) = mpsc::channel(16);
        (tx, Chan(rx))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn one_frame_is_returned_uncopied() {
        let data = Bytes::from_static(b"hello");
        let body = http_body_util::Full::new(data.clone());
        let got = read(body, Some(5), 100, far).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(got.as_ptr(), data.as_ptr(), "the frame itself, not a copy");
    }

    #[tokio::test]
    async fn frames_are_copied_into_one_buffer() {
        let (tx, body) = channel_body();
        for byte in b"abcdef" {
            tx.send(Bytes::copy_from_slice(&[*byte])).await.unwrap();
        }
        drop(tx);
        let got = read(body, None, 100, far).await.unwrap();
        assert_eq!(&got[..], b"abcdef");
    }

    #[tokio::test]
    async fn over_the_limit_is_too_large() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        assert!(matches!(
            read(body, Some(10), 9, far).await,
            Err(BodyError::TooLarge)
        ));
        // Without a Content-Length, counted as the frames come.
        let (tx, body) = channel_body();
        for _ in 0..4 {
            tx.send(Bytes::from_static(b"abc")).await.unwrap();
        }
        drop(tx);
        assert!(matches!(
            read(body, None, 10, far).await,
            Err(BodyError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_body_that_keeps_trickling_times_out_at_the_deadline() {
        let (tx, body) = channel_body();
        let deadline = Instant::now() + Duration::from_millis(300);
        // A byte every 20 ms: the deadline covers the whole body, not the gaps.
        let feeder = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"a")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let got = read(body, Some(4096), 8192, || deadline).await;
        assert!(matches!(got, Err(BodyError::TimedOut)), "{got:?}");
        assert!(Instant::now() >= deadline);
        feeder.abort();
    }

    #[test]
    fn a_timeout_answers_408_and_closes() {
        let resp = BodyError::TimedOut.into_response();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }
}
