//! What a request says about itself, checked at the edge: its region, its routing key,
//! its `Idempotency-Key` and whether it asks to be answered at once (`Prefer`).
//!
//! Every value read here is bounded before anything else sees it: empty or longer than
//! `server.max_key_bytes` is a 400 naming the input, so nothing unbounded reaches the
//! store, a log line or a metric.

use crate::config::RoutingConfig;
use crate::h1::headers::Lookup;
use http::HeaderValue;

/// What the request says about where it should go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Lower-cased region.
    pub region: Option<String>,
    /// The recipient key, for per-key ordering.
    pub key: Option<String>,
    /// The recipient sticky routing keeps on one master (only with `routing.sticky`).
    pub recipient: Option<String>,
}

/// An input a request carries that switchyard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    IdempotencyKey,
    /// The routing key, from its header.
    RoutingKey,
    /// The routing key, read from the body at `routing.key_field`.
    Recipient,
    Region,
    /// The recipient of sticky routing (`routing.recipient_header`, else
    /// `routing.recipient_field`).
    StickyRecipient,
    ContentType,
    /// A header forwarded to masters, or `x-request-id` (see [`super::trace`]).
    Header,
}

impl Input {
    /// The error code of a 400 about this input.
    pub fn code(self) -> &'static str {
        match self {
            Self::IdempotencyKey => "invalid_idempotency_key",
            Self::RoutingKey => "invalid_routing_key",
            Self::Recipient => "invalid_recipient",
            Self::Region => "invalid_region",
            Self::StickyRecipient => "invalid_recipient",
            Self::ContentType => "invalid_content_type",
            Self::Header => "invalid_header",
        }
    }

    fn name(self, cfg: &RoutingConfig) -> String {
        match self {
            Self::IdempotencyKey => "the Idempotency-Key header".into(),
            Self::RoutingKey => format!("the {} header", cfg.key_header),
            Self::Recipient => format!(
                "the recipient at routing.key_field ({})",
                cfg.key_field.as_deref().unwrap_or_default()
            ),
            Self::Region => match &cfg.region_field {
                Some(field) => format!("the region ({} header or {field})", cfg.region_header),
                None => format!("the {} header", cfg.region_header),
            },
            Self::StickyRecipient => match &cfg.recipient_field {
                Some(field) => {
                    format!("the recipient ({} header or {field})", cfg.recipient_header)
                }
                None => format!("the {} header", cfg.recipient_header),
            },
            Self::ContentType => "the Content-Type header".into(),
            Self::Header => "a forwarded header".into(),
        }
    }
}

/// Why a request is refused before it goes anywhere: each is a 400.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The body had to be read as JSON (a configured pointer) but is not JSON.
    #[error("the body is not JSON, but routing.{field} is set: {source}")]
    NotJson {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {why}")]
    Invalid {
        input: Input,
        /// The input as the client knows it.
        what: String,
        why: &'static str,
    },
}

impl HintError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson { .. } => "invalid_json",
            Self::Invalid { input, .. } => input.code(),
        }
    }
}

/// Checks one value against the bounds every key shares.
fn bounded(
    value: &str,
    input: Input,
    cfg: &RoutingConfig,
    max_bytes: usize,
) -> Result<(), HintError> {
    let why = if value.is_empty() {
        "is empty"
    } else if value.len() > max_bytes {
        "is longer than server.max_key_bytes"
    } else {
        return Ok(());
    };
    Err(HintError::Invalid {
        input,
        what: input.name(cfg),
        why,
    })
}

/// A header's value as text, trimmed; `None` when the header is absent.
fn header_text<'h>(
    headers: &'h (impl Lookup + ?Sized),
    name: &http::HeaderName,
    input: Input,
    cfg: &RoutingConfig,
    max_bytes: usize,
) -> Result<Option<&'h str>, HintError> {
    let Some(value) = headers.first(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| HintError::Invalid {
        input,
        what: input.name(cfg),
        why: "must be visible ASCII",
    })?;
    let text = text.trim();
    bounded(text, input, cfg, max_bytes)?;
    Ok(Some(text))
}

/// The longest `Content-Type` kept with a message: it is stored with a queued one.
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// The request's `Content-Type`, forwarded and stored with the message: at most
/// [`MAX_CONTENT_TYPE_BYTES`] (any real media type is far shorter).
pub fn content_type(headers: &(impl Lookup + ?Sized)) -> Result<Option<&HeaderValue>, HintError> {
    let mut all = headers.all(&http::header::CONTENT_TYPE);
    if all.any(|v| v.len() > MAX_CONTENT_TYPE_BYTES) {
        return Err(HintError::Invalid {
            input: Input::ContentType,
            what: "the Content-Type header".into(),
            why: "is longer than 1024 bytes",
        });
    }
    Ok(headers.first(&http::header::CONTENT_TYPE))
}

/// `Prefer` (RFC 7240). A constant, so that the name is made once at compile time:
/// `HeaderName::from_static` called at run time parses and looks the name up each time.
pub const PREFER: http::HeaderName = http::HeaderName::from_static("prefer");

/// Read from a client's request and sent with every message to its master.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The client's `Idempotency-Key`, checked: visible ASCII, not empty, at most
/// `max_bytes`.
pub fn idempotency_key<'h>(
    cfg: &RoutingConfig,
    headers: &'h (impl Lookup + ?Sized),
    max_bytes: usize,
) -> Result<Option<&'h HeaderValue>, HintError> {
    header_text(
        headers,
        &IDEMPOTENCY_KEY,
        Input::IdempotencyKey,
        cfg,
        max_bytes,
    )?;
    Ok(headers.first(&IDEMPOTENCY_KEY))
}

/// Headers first; the JSON pointers only when the header is absent. The body is parsed
/// at most once, and only when a pointer is needed. Every value is checked against
/// `max_bytes`.
pub fn extract(
    cfg: &RoutingConfig,
    headers: &(impl Lookup + ?Sized),
    body: &[u8],
    max_bytes: usize,
) -> Result<Hints, HintError> {
    let mut json: Option<serde_json::Value> = None;
    let mut from_body = |pointer: &Option<String>,
                         field: &'static str,
                         input: Input|
     -> Result<Option<String>, HintError> {
        let Some(pointer) = pointer else {
            return Ok(None);
        };
        if json.is_none() {
            json = Some(
                serde_json::from_slice(body)
                    .map_err(|source| HintError::NotJson { field, source })?,
            );
        }
        let value = json
            .as_ref()
            .and_then(|v| v.pointer(pointer))
            .and_then(scalar);
        if let Some(v) = &value {
            bounded(v, input, cfg, max_bytes)?;
        }
        Ok(value)
    };
    let text = |name, input| header_text(headers, name, input, cfg, max_bytes);
    let region = match text(&cfg.region_header, Input::Region)? {
        Some(r) => Some(r.to_string()),
        None => from_body(&cfg.region_field, "region_field", Input::Region)?,
    };
    let key = match text(&cfg.key_header, Input::RoutingKey)? {
        Some(k) => Some(k.to_string()),
        None => from_body(&cfg.key_field, "key_field", Input::Recipient)?,
    };
    let recipient = if !cfg.sticky {
        None
    } else {
        match text(&cfg.recipient_header, Input::StickyRecipient)? {
            Some(r) => Some(r.to_string()),
            None => from_body(
                &cfg.recipient_field,
                "recipient_field",
                Input::StickyRecipient,
            )?,
        }
    };
    Ok(Hints {
        region: region.map(|r| r.to_ascii_lowercase()),
        key,
        recipient,
    })
}

/// A string or a number read from the body as a key; anything else (an object, a list,
/// `null`, a boolean) means the body names none.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `Prefer` asks for `respond-async`, read as RFC 7240 writes it: a list of
/// preferences, each a token with an optional `= value` and `; parameters`, values
/// tokens or quoted strings (whose commas and semicolons are not separators).
pub fn prefers_async(headers: &(impl Lookup + ?Sized)) -> bool {
    headers.all(&PREFER).any(|value| {
        preferences(value.as_bytes()).any(|name| name.eq_ignore_ascii_case(b"respond-async"))
    })
}

/// The names of the preferences in one `Prefer` value.
fn preferences(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in value.iter().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b',' {
            parts.push(&value[start..i]);
            start = i + 1;
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().map(|p| {
        let end = p.iter().position(|&b| b == b';' || b == b'=');
        p[..end.unwrap_or(p.len())].trim_ascii()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::HeaderMap;

    fn routing(extra: &str) -> RoutingConfig {
        let text = format!(
            "[routing]\n{extra}\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/\"\n"
        );
        Config::from_toml(&text).unwrap().routing
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn header_wins_then_pointer() {
        let cfg = routing("region_field = \"/region\"\nkey_field = \"/to\"");
        let mut h = HeaderMap::new();
        let body = br#"{"region": "EU", "to": 971500000}"#;
        let hints = extract(&cfg, &h, body, 255).unwrap();
        assert_eq!(hints.region.as_deref(), Some("eu"));
        assert_eq!(hints.key.as_deref(), Some("971500000"));
        h.insert("x-region", "UAE".parse().unwrap());
        assert_eq!(
            extract(&cfg, &h, b"not json", 255).unwrap_err().code(),
            "invalid_json"
        );
        h.insert("x-routing-key", "k".parse().unwrap());
        let hints = extract(&cfg, &h, b"not json", 255).unwrap();
        assert_eq!(
            (hints.region.as_deref(), hints.key.as_deref()),
            (Some("uae"), Some("k"))
        );
    }

    #[test]
    fn no_pointer_means_body_is_never_parsed() {
        let hints = extract(&routing(""), &HeaderMap::new(), b"\xff binary", 255).unwrap();
        assert_eq!(hints, Hints::default());
    }

    #[test]
    fn empty_long_or_opaque_values_name_their_input() {
        let cfg = routing("region_field = \"/region\"\nkey_field = \"/to\"");
        let code = |h: HeaderMap, body: &str| {
            extract(&cfg, &h, body.as_bytes(), 8)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(
            code(headers(&[("x-routing-key", "")]), "{}"),
            Some("invalid_routing_key")
        );
        assert_eq!(
            code(headers(&[("x-routing-key", " ")]), "{}"),
            Some("invalid_routing_key")
        );
        assert_eq!(
            code(headers(&[("x-routing-key", "123456789")]), "{}"),
            Some("invalid_routing_key")
        );
        assert_eq!(
            code(headers(&[("x-routing-key", "12345678")]), "{}"),
            None,
            "at the bound"
        );
        assert_eq!(
            code(headers(&[("x-region", "")]), "{}"),
            Some("invalid_region")
        );
        assert_eq!(
            code(HeaderMap::new(), r#"{"to": ""}"#),
            Some("invalid_recipient")
        );
        assert_eq!(
            code(HeaderMap::new(), r#"{"to": "123456789"}"#),
            Some("invalid_recipient")
        );
        assert_eq!(
            code(HeaderMap::new(), r#"{"region": "123456789"}"#),
            Some("invalid_region")
        );
        assert_eq!(
            code(HeaderMap::new(), r#"{"to": null, "region": [1]}"#),
            None
        );
        let mut opaque = HeaderMap::new();
        opaque.insert(
            "x-routing-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(code(opaque, "{}"), Some("invalid_routing_key"));

        let key = |v: &str| {
            idempotency_key(&cfg, &headers(&[("idempotency-key", v)]), 8).map(|k| k.is_some())
        };
        assert!(key("").is_err());
        assert!(key("123456789").is_err());
        assert!(key("order-1").unwrap());
        assert!(idempotency_key(&cfg, &HeaderMap::new(), 8)
            .unwrap()
            .is_none());
        let e = key("").unwrap_err();
        assert_eq!(e.code(), "invalid_idempotency_key");
        assert_eq!(e.to_string(), "the Idempotency-Key header is empty");
    }

    #[test]
    fn prefer_is_read_as_rfc_7240_writes_it() {
        let asks = |values: &[&str]| {
            let pairs: Vec<(&'static str, &str)> = values.iter().map(|v| ("prefer", *v)).collect();
            prefers_async(&headers(&pairs))
        };
        assert!(asks(&["respond-async"]));
        assert!(asks(&["Respond-Async"]));
        assert!(asks(&["respond-async; x=1"]));
        assert!(asks(&["respond-async ;x=\"a,b\""]));
        assert!(asks(&["wait=10, respond-async"]));
        assert!(asks(&["return=minimal", "respond-async"]));
        assert!(asks(&["respond-async=true"]));
        assert!(!asks(&[]));
        assert!(!asks(&["wait=10"]));
        assert!(!asks(&["respond-asynchronously"]));
        assert!(
            !asks(&["foo=\"x, respond-async\""]),
            "inside a quoted value"
        );
        assert!(
            !asks(&["foo=\"a\\\", respond-async\""]),
            "an escaped quote stays quoted"
        );
        assert!(
            !asks(&["handling=lenient; respond-async"]),
            "a parameter, not a preference"
        );
    }
}
