//! One exchange with one master over a pooled keep-alive connection, classified the way
//! SPEC section 4 defines retryable failures.

use crate::config::MasterConfig;
use crate::pool::{ConnPool, LocalFault, PoolError, SendError};
use crate::server::Body;
use crate::util::error_chain;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;

/// A master's answer, body read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why an exchange did not produce a final answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed (an untrusted or wrong certificate, most often):
    /// nothing was sent. rustls's text (`.0`) goes to the log and `last_error`.
    #[error("connection failed: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection broke before a response: {0}")]
    Io(String),
    /// 429, 502, 503 or 504.
    #[error("master answered {}", .0.status)]
    Status(Answer),
    /// This machine ran out of a resource before anything was sent: the master is not
    /// to blame (SPEC section 8). The OS's text (`.1`) goes to the log and the alert,
    /// not to a client.
    #[error("this proxy is out of {}", .0.what())]
    Local(LocalFault, String),
    /// The answer met `health.ban_statuses` or `ban_patterns` (SPEC section 10): the
    /// master's account is blocked. Never passed to the client; the message is tried
    /// on another master.
    #[error("the master's account is blocked: it {0}")]
    Banned(String),
    /// The master was suspended after an earlier ban answer, after this message's
    /// routing table was published: nothing was sent.
    #[error("the master is suspended")]
    Suspended,
}

impl UpstreamError {
    /// The failure in words fit for a client's error body or a message's record: the
    /// OS's and libraries' text stays in the `Display` (logs, the master's
    /// `last_error` in `/ha/status`).
    pub fn reason(&self) -> String {
        match self {
            Self::Connect(_) => "could not connect".into(),
            Self::Tls(_) => "TLS handshake failed".into(),
            Self::Io(_) => "the connection broke before a response".into(),
            Self::Timeout(_)
            | Self::Status(_)
            | Self::Local(..)
            | Self::Banned(_)
            | Self::Suspended => self.to_string(),
        }
    }

    pub fn outcome(&self) -> crate::telemetry::Outcome {
        use crate::telemetry::Outcome;
        match self {
            Self::Connect(_) | Self::Tls(_) => Outcome::ConnectError,
            Self::Timeout(_) => Outcome::Timeout,
            Self::Io(_) => Outcome::IoError,
            Self::Status(_) => Outcome::RetryableStatus,
            Self::Local(..) => Outcome::LocalError,
            Self::Banned(_) | Self::Suspended => Outcome::Banned,
        }
    }

    /// A ban answer, or a master suspended before the exchange began: the message is
    /// tried elsewhere, and it counts as no delivery attempt (the account's state, not
    /// the message, was refused).
    pub fn is_ban(&self) -> bool {
        matches!(self, Self::Banned(_) | Self::Suspended)
    }
}

/// Why `result`, an answer (final or retryable), meets the ban rules; the caller
/// makes it an [`UpstreamError::Banned`].
pub fn ban_reason(
    bans: &crate::config::ban::BanRules,
    result: &Result<Answer, UpstreamError>,
) -> Option<String> {
    match result {
        Ok(a) | Err(UpstreamError::Status(a)) => bans.check(a.status, &a.body),
        Err(_) => None,
    }
}

pub fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The message as it goes to every master.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
    pub idempotency_key: HeaderValue,
    /// The client headers of `routing.forward_headers`; a master's own `headers`
    /// win over them.
    pub forward: super::trace::Forwarded,
}

/// Sends `msg` to `master` and reads the whole answer within `timeout`.
pub async fn exchange(
    pool: &ConnPool,
    master: &MasterConfig,
    msg: &Outgoing,
    timeout: Duration,
) -> Result<Answer, UpstreamError> {
    let send = &master.send;
    let build = || {
        let mut req = Request::new(Body::new(msg.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = send.path.clone();
        let headers = req.headers_mut();
        headers.insert(header::HOST, send.host.clone());
        // The config keeps out every name set below but the master's own.
        for (name, value) in &msg.forward {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(ct) = &msg.content_type {
            headers.insert(header::CONTENT_TYPE, ct.clone());
        }
        for (name, value) in &master.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert("idempotency-key", msg.idempotency_key.clone());
        req
    };

    let exchange = async {
        let (conn, resp) = pool.send(send, build).await.map_err(|e| match e {
            SendError::Connect(e @ PoolError::Tls(..)) => UpstreamError::Tls(error_chain(&e)),
            SendError::Connect(e) => match e.local_fault() {
                Some(fault) => UpstreamError::Local(fault, error_chain(&e)),
                None => UpstreamError::Connect(error_chain(&e)),
            },
            SendError::Request(e) => UpstreamError::Io(error_chain(&e)),
        })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| UpstreamError::Io(error_chain(&e)))?
            .to_bytes();
        conn.release();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    if retryable_status(answer.status) {
        return Err(UpstreamError::Status(answer));
    }
    Ok(answer)
}
