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
use crate::pool::{dial, Io, PoolError, IDLE_TIMEOUT};
use dashmap::DashMap;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 1024;
/// Idle at least this long, a connection is checked for a close before reuse.
const CHECK_AFTER: Duration = Duration::from_secs(1);

type IdleList = Arc<Mutex<VecDeque<(Instant, Conn<Io>)>>>;

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

#[derive(Default)]
pub struct Pool {
    hosts: DashMap<String, IdleList>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("endpoints", &self.hosts.len())
            .finish()
    }
}

impl Pool {
    fn idle_list(&self, endpoint: &Endpoint) -> IdleList {
        if let Some(list) = self.hosts.get(&endpoint.key) {
            return list.clone();
        }
        self.hosts.entry(endpoint.key.clone()).or_default().clone()
    }

    /// Sends the request `build` writes to `endpoint` and reads its whole answer.
    pub async fn exchange(
        &self,
        endpoint: &Endpoint,
        build: impl Fn(&mut Vec<u8>),
    ) -> Result<Answer, SendError> {
        let idle = self.idle_list(endpoint);
        let (mut conn, reused) = match take(&idle) {
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
            release(&idle, conn);
        }
        Ok(answer)
    }
}

/// The most recently used idle connection still open, if any.
fn take(idle: &IdleList) -> Option<Conn<Io>> {
    loop {
        let (since, mut conn) = idle.lock().unwrap_or_else(|p| p.into_inner()).pop_back()?;
        let idle_for = since.elapsed();
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

fn release(idle: &IdleList, conn: Conn<Io>) {
    let now = Instant::now();
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
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
