//! Keep-alive connections to masters for [`super::Conn`], pooled per
//! [`Endpoint::key`] (scheme, `host:port` and, for https, the trusted roots).
//!
//! A message takes the most recently used idle connection (or opens one), exchanges on
//! it from its own task and puts it back when the answer allows reuse; the oldest idle
//! one is dropped once idle longer than [`IDLE_TIMEOUT`]. A connection idle for a
//! second or more is first checked for a close from the master, without a system
//! call unless the socket has something to read.
//!
//! Each connection keeps one timer for the exchanges on it, moved later for each: a
//! store (see `super::timer`), where a timer per exchange would lock the runtime's
//! timer wheel to add it and again to remove it.
//!
//! A reused connection that gives no byte of an answer (the master closed it as idle
//! while the request went out) has the request sent once more on a new connection.
//! The request may have reached the master before the close; every message carries
//! its `Idempotency-Key`, for which HTTP clients (Go's among them) replay a request
//! in this case.

use super::timer::Timer;
use super::{Answer, Conn, ExchangeError};
use crate::config::Endpoint;
use crate::pool::{dial, Idle, IdleList, Io, PoolError, IDLE_TIMEOUT};
use std::future::{poll_fn, Future};
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
    /// The deadline passed before the whole answer.
    #[error("no answer before the deadline")]
    TimedOut,
}

#[derive(Debug, Default)]
pub struct Pool {
    hosts: Idle<Held>,
}

/// A connection and its timer.
struct Held {
    conn: Conn<Io>,
    timer: Timer,
}

impl Pool {
    /// Sends the request `build` writes to `endpoint` and reads its whole answer before
    /// `deadline`; `now` is when the exchange began (a clock read the caller has made
    /// already).
    pub async fn exchange(
        &self,
        endpoint: &Endpoint,
        build: impl Fn(&mut Vec<u8>),
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, SendError> {
        let idle = self.hosts.of(endpoint);
        let (mut held, reused) = match take(&idle, now) {
            Some(held) => (held, true),
            None => (Held::dial(endpoint, deadline).await?, false),
        };
        held.timer.set(deadline);
        let answer = match held.exchange(&build).await {
            Err(SendError::Exchange(ExchangeError::NoAnswer(e))) if reused => {
                tracing::debug!(error = %e, "a reused connection gave no answer: sending on a new one");
                held = Held::dial(endpoint, deadline).await?;
                held.exchange(&build).await
            }
            other => other,
        }?;
        if held.conn.reusable() {
            // Idle from about when the exchange began: a few milliseconds early, well
            // within the second after which a connection is checked before reuse.
            idle.push(held, now);
        }
        Ok(answer)
    }
}

impl Held {
    /// A new connection, made before `deadline`.
    async fn dial(endpoint: &Endpoint, deadline: tokio::time::Instant) -> Result<Held, SendError> {
        let io = tokio::time::timeout_at(deadline, Box::pin(dial(endpoint)))
            .await
            .map_err(|_| SendError::TimedOut)??;
        Ok(Held {
            conn: Conn::new(io),
            timer: Timer::new(deadline),
        })
    }

    /// One exchange, ended by the timer.
    async fn exchange(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> Result<Answer, SendError> {
        let Held { conn, timer } = self;
        let mut work = std::pin::pin!(conn.exchange(build));
        poll_fn(|cx| {
            if let Poll::Ready(r) = work.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(SendError::from));
            }
            match timer.poll_passed(cx) {
                Poll::Ready(()) => Poll::Ready(Err(SendError::TimedOut)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// The most recently used idle connection still open at `now`, if any.
fn take(idle: &IdleList<Held>, now: Instant) -> Option<Held> {
    loop {
        let (since, mut held) = idle.pop()?;
        let idle_for = now.saturating_duration_since(since);
        if idle_for < CHECK_AFTER || (idle_for <= IDLE_TIMEOUT && !closed(&mut held.conn)) {
            return Some(held);
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
