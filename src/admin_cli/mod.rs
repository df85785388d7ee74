//! The admin commands of the command line (`status`, `masters`, `dead-letters`,
//! `events`): each one an HTTP client of the admin API (SPEC section 5) that prints a
//! short, bounded answer. This module owns the request plumbing and the table layout;
//! the submodules turn one route's JSON into lines.
//!
//! May call: nothing of the proxy itself; only the admin API, over HTTP or HTTPS
//! (`--admin https://...`, trusting the system roots or `--ca FILE`).

pub mod cluster;
pub mod config;
pub mod dead_letters;
pub mod events;
pub mod masters;

use crate::config::Endpoint;
use crate::server::Body;
use crate::tls::connect::Trust;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a page of dead letters carries their bodies).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// The most characters of free text (errors, reasons) put in one table cell.
pub const MAX_CELL: usize = 60;

/// Why an admin request did not give a 2xx JSON answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin API answered with an error: `404 unknown_master: ...`.
    #[error("{status} {code}: {message}{hint}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// What to do about it, when the CLI knows (a 401: the token).
        hint: &'static str,
    },
    /// No answer, or one that is not the admin API's JSON.
    #[error("{0}")]
    Transport(String),
}

impl AdminError {
    /// The API's error code (`dead_letter_not_found`, ...), when it answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Api { code, .. } => Some(code),
            AdminError::Transport(_) => None,
        }
    }
}

/// A client of one admin API: its base URL, the bearer token, if any, and the CA
/// bundle to trust for https instead of the system roots.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    ca: Option<PathBuf>,
}

impl AdminClient {
    /// `base` is the admin listener's URL (`http://127.0.0.1:9090`); an empty token
    /// counts as none.
    pub fn new(base: &str, token: Option<&str>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()).map(str::to_string),
            ca: None,
        }
    }

    /// Trusts the PEM bundle at `ca` for an https `base` instead of the system roots.
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> AdminClient {
        self.ca = ca;
        self
    }

    /// Where requests go: the base as an endpoint, with its TLS trust for https.
    fn endpoint(&self) -> Result<Endpoint, AdminError> {
        let uri: Uri = self.base.parse().map_err(|_| {
            AdminError::Transport(format!(
                "`{}` is not a valid URL",
                cell(&self.base, MAX_CELL)
            ))
        })?;
        let trust = match &self.ca {
            Some(path) => {
                Some(Trust::bundle(path).map_err(|e| AdminError::Transport(format!("--ca: {e}")))?)
            }
            None => None,
        };
        Endpoint::with_tls(&uri, trust.as_ref())
            .map_err(|e| AdminError::Transport(format!("--admin {}: {e}", self.base)))
    }

    pub async fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.call(Method::GET, path).await
    }

    pub async fn post(&self, path: &str) -> Result<Value, AdminError> {
        self.call(Method::POST, path).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, AdminError> {
        self.call(Method::DELETE, path).await
    }

    /// Sends `method path` and returns the JSON of a 2xx answer.
    async fn call(&self, method: Method, path: &str) -> Result<Value, AdminError> {
        let (status, json) = self.send(method, path, Body::default(), &[]).await?;
        if status.is_success() {
            return Ok(json);
        }
        Err(self.api_error(status, &json))
    }

    /// Sends `method path` with `body` and `headers` and returns the answer's status
    /// and JSON, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(header::HeaderName, String)],
    ) -> Result<(StatusCode, Value), AdminError> {
        // The routes go after the base: a path, query or fragment there would change
        // which route a command reaches.
        let base_ok = url::Url::parse(&self.base).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.has_host()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if !base_ok {
            return Err(AdminError::Transport(format!(
                "--admin must be the admin listener's address (http://HOST:PORT or https://HOST:PORT), not `{}`",
                cell(&self.base, MAX_CELL)
            )));
        }
        let endpoint = self.endpoint()?;
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, endpoint.host.clone());
        if let Some(t) = &self.token {
            if http::HeaderValue::from_str(t).is_err() {
                return Err(AdminError::Transport(
                    "the admin token has characters a header cannot carry (a line break?)".into(),
                ));
            }
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(body)
            .map_err(|_| AdminError::Transport(format!("`{url}` is not a valid URL")))?;
        let unreachable = |e: &dyn std::fmt::Display| {
            AdminError::Transport(format!("cannot reach the admin API at {}: {e}", self.base))
        };
        let exchange = async {
            let mut sender = crate::pool::connect(&endpoint)
                .await
                .map_err(|e| unreachable(&causes(&e)))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(&causes(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            Ok::<_, AdminError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| {
                AdminError::Transport(format!(
                    "the admin API at {} did not answer within {} s",
                    self.base,
                    TIMEOUT.as_secs()
                ))
            })??;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            AdminError::Transport(format!(
                "the answer from {url} ({status}) is not JSON; is {} the admin listener?",
                self.base
            ))
        })?;
        Ok((status, json))
    }

    /// The error of a non-2xx answer: `404 unknown_master: ...`.
    pub fn api_error(&self, status: StatusCode, json: &Value) -> AdminError {
        let hint = match (status, &self.token) {
            (StatusCode::UNAUTHORIZED, None) => {
                " (give the admin token with --token or SWITCHYARD_ADMIN_TOKEN)"
            }
            (StatusCode::UNAUTHORIZED, Some(_)) => " (the token given was refused)",
            _ => "",
        };
        AdminError::Api {
            status: status.as_u16(),
            code: cell(json["error"]["code"].as_str().unwrap_or("error"), MAX_CELL),
            message: cell(
                json["error"]["message"].as_str().unwrap_or("no message"),
                300,
            ),
            hint,
        }
    }
}

/// The causes under a client error, innermost last (`client error (Connect): tcp
/// connect error: Connection refused (os error 111)` becomes the last two).
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// `id` as one URL path segment: every byte but `A-Za-z0-9-._~` percent-encoded, so an
/// id can never reach another route.
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` made fit for one table cell or line: control characters (newlines, escape
/// codes) become spaces, and past `max` characters it is cut with `…`.
pub fn cell(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().nth(max).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// A JSON string field as a cell: `-` when absent or null.
pub fn text_cell(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => cell(s, MAX_CELL),
        Value::Null | Value::String(_) => "-".to_string(),
        other => cell(&other.to_string(), MAX_CELL),
    }
}

/// Lays out `header` and `rows` in left-aligned columns two spaces apart.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&head).chain(rows.iter()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            all.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in all {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_one_line_and_bounded() {
        assert_eq!(cell("short", 10), "short");
        assert_eq!(cell("exactly10!", 10), "exactly10!");
        assert_eq!(cell("eleven chars", 10), "eleven ch…");
        assert_eq!(cell("a\nb\x1b[31mc", 20), "a b [31mc");
        assert_eq!(text_cell(&Value::Null), "-");
        assert_eq!(text_cell(&"".into()), "-");
        assert_eq!(text_cell(&"x".repeat(200).into()).chars().count(), MAX_CELL);
    }

    #[test]
    fn segments_cannot_leave_their_place() {
        assert_eq!(segment("linda-master_1.a"), "linda-master_1.a");
        assert_eq!(segment("../admin reload"), "..%2Fadmin%20reload");
        assert_eq!(segment("é?"), "%C3%A9%3F");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let out = table(
            &["A", "LONGER"],
            vec![
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), String::new()],
            ],
        );
        assert_eq!(out, "A          LONGER\nwide cell  x\nb\n");
    }

    #[test]
    fn api_errors_read_as_one_line() {
        let e = AdminError::Api {
            status: 404,
            code: "unknown_master".into(),
            message: "no master `x`".into(),
            hint: "",
        };
        assert_eq!(e.to_string(), "404 unknown_master: no master `x`");
        assert_eq!(e.code(), Some("unknown_master"));
    }
}
