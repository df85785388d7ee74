//! One exchange with one master over a pooled keep-alive connection, classified the way
//! SPEC section 4 defines retryable failures.

use super::hints::IDEMPOTENCY_KEY;
use crate::config::MasterConfig;
use crate::h1::pool::{Pool, SendError};
use crate::h1::write_header;
use crate::pool::{LocalFault, PoolError};
use crate::util::error_chain;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use std::time::Duration;

pub use crate::h1::Answer;

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

/// Sends `msg` to `master` and reads the whole answer within `timeout` of `started`.
pub async fn exchange(
    pool: &Pool,
    master: &MasterConfig,
    msg: &Outgoing,
    timeout: Duration,
    started: std::time::Instant,
) -> Result<Answer, UpstreamError> {
    let send = &master.send;
    let build = |out: &mut Vec<u8>| write_request(out, master, msg);
    let deadline = crate::server::after(started.into(), timeout);
    let answer = pool
        .exchange(send, build, started, deadline)
        .await
        .map_err(|e| match e {
            SendError::TimedOut => UpstreamError::Timeout(timeout),
            SendError::Connect(e @ PoolError::Tls(..)) => UpstreamError::Tls(error_chain(&e)),
            SendError::Connect(e) => match e.local_fault() {
                Some(fault) => UpstreamError::Local(fault, error_chain(&e)),
                None => UpstreamError::Connect(error_chain(&e)),
            },
            SendError::Exchange(e) => UpstreamError::Io(e.to_string()),
        })?;
    if retryable_status(answer.status) {
        return Err(UpstreamError::Status(answer));
    }
    Ok(answer)
}

/// The request to `master` as it goes on the wire. Each header once: a master's own
/// `headers` win over `Host`, the forwarded ones and `Content-Type`; the framing and
/// `Idempotency-Key` are switchyard's (the config keeps them out of `headers`).
fn write_request(out: &mut Vec<u8>, master: &MasterConfig, msg: &Outgoing) {
    let own = |name: &HeaderName| master.headers.iter().any(|(n, _)| n == name);
    let send = &master.send;
    let path = send.path.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !own(&header::HOST) {
        write_header(out, &header::HOST, &send.host);
    }
    for (name, value) in &msg.forward {
        if !own(name) {
            write_header(out, name, value);
        }
    }
    if let Some(ct) = msg
        .content_type
        .as_ref()
        .filter(|_| !own(&header::CONTENT_TYPE))
    {
        write_header(out, &header::CONTENT_TYPE, ct);
    }
    // The config refuses framing, hop-by-hop and idempotency-key names here.
    for (name, value) in &master.headers {
        write_header(out, name, value);
    }
    write_header(out, &IDEMPOTENCY_KEY, &msg.idempotency_key);
    // Its digits straight into the buffer (a `HeaderValue` would be two allocations).
    out.extend_from_slice(b"content-length: ");
    crate::h1::write_decimal(out, msg.body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&msg.body);
}
