//! Keep-alive connections to masters for [`super::Conn`], pooled per
//! [`Endpoint::key`] (scheme, `host:port` and, for https, the trusted roots).
//!
//! A message takes the most recently used idle connection (or opens one), exchanges on
//! it from its own task and puts it back when the answer allows reuse; the oldest idle
//! one is dropped once idle longer than [`IDLE_TIMEOUT`]. A connection idle for a
//! second or more is first checked for a close from the master, without a system
//! call unless the socket has something to read.
//!
//! A reused connection that gives no byte of an answer (the master closed it as idle
//! while the request went out) has the request sent once more on a new connection.
//! The request may have reached the master before the close; every message carries
//! its `Idempotency-Key`, for which HTTP clients (Go's among them) replay a request
//! in this case.

use super::{Answer, Conn, ExchangeError};
use crate::config::Endpoint;
use crate::pool::{dial, Idle, IdleList, Io, PoolError, IDLE_TIMEOUT};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Idle at least this long, a connection is checked for a close before reuse.
const CHECK_AFTER: Duration = Duration::from_secs(1);

/// Why [`Pool::exchange`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: nothing was sent.
    #[error(transparent)]
    Connect(#[from] PoolError),
    /// The request may or may not have reached the master.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

#[derive(Debug, Default)]
pub struct Pool {
    hosts: Idle<Conn<Io>>,
}

impl Pool {
    /// Sends the request `build` writes to `endpoint` and reads its whole answer; `now`
    /// is when the exchange began (a clock read the caller has made already).
    pub async fn exchange(
        &self,
        endpoint: &Endpoint,
        build: impl Fn(&mut Vec<u8>),
        now: Instant,
    ) -> Result<Answer, SendError> {
        let idle = self.hosts.of(endpoint);
        let (mut conn, reused) = match take(&idle, now) {
            Some(conn) => (conn, true),
            None => (Conn::new(Box::pin(dial(endpoint)).await?), false),
        };
        let answer = match conn.exchange(&build).await {
            Err(ExchangeError::NoAnswer(e)) if reused => {
                tracing::debug!(error = %e, "a reused connection gave no answer: sending on a new one");
                conn = Conn::new(Box::pin(dial(endpoint)).await?);
                conn.exchange(&build).await
            }
            other => other,
        }?;
        if conn.reusable() {
            // Idle from about when the exchange began: a few milliseconds early, well
            // within the second after which a connection is checked before reuse.
            idle.push(conn, now);
        }
        Ok(answer)
    }
}

/// The most recently used idle connection still open at `now`, if any.
fn take(idle: &IdleList<Conn<Io>>, now: Instant) -> Option<Conn<Io>> {
    loop {
        let (since, mut conn) = idle.pop()?;
        let idle_for = now.saturating_duration_since(since);
        if idle_for < CHECK_AFTER || (idle_for <= IDLE_TIMEOUT && !closed(&mut conn)) {
            return Some(conn);
        }
    }
}

/// Whether the master closed `conn` (or sent on it unasked): only a socket that is
/// readable is read, once, without waiting.
fn closed(conn: &mut Conn<Io>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if conn.io().tcp().poll_read_ready(&mut cx).is_pending() {
        return false;
    }
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    !matches!(
        Pin::new(conn.io_mut()).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}
