//! Routing hints read from a request: its region and its routing key.

use crate::config::RoutingConfig;
use http::HeaderMap;

/// What the request says about where it should go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Lower-cased region.
    pub region: Option<String>,
    /// The recipient key, for per-key ordering.
    pub key: Option<String>,
}

/// The body had to be read as JSON (a configured pointer) but is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("the body is not JSON, but routing.{field} is set: {source}")]
pub struct NotJson {
    pub field: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Headers first; the JSON pointers only when the header is absent. The body is parsed
/// at most once, and only when a pointer is needed.
pub fn extract(cfg: &RoutingConfig, headers: &HeaderMap, body: &[u8]) -> Result<Hints, NotJson> {
    let mut json: Option<serde_json::Value> = None;
    let mut from_body = |pointer: &Option<String>,
                         field: &'static str|
     -> Result<Option<String>, NotJson> {
        let Some(pointer) = pointer else {
            return Ok(None);
        };
        if json.is_none() {
            json = Some(serde_json::from_slice(body).map_err(|source| NotJson { field, source })?);
        }
        Ok(json
            .as_ref()
            .and_then(|v| v.pointer(pointer))
            .and_then(scalar))
    };
    let header = |name: &http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let region = match header(&cfg.region_header) {
        Some(r) => Some(r),
        None => from_body(&cfg.region_field, "region_field")?,
    };
    let key = match header(&cfg.key_header) {
        Some(k) => Some(k),
        None => from_body(&cfg.key_field, "key_field")?,
    };
    Ok(Hints {
        region: region.map(|r| r.to_ascii_lowercase()),
        key,
    })
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routing(extra: &str) -> RoutingConfig {
        let text = format!(
            "[routing]\n{extra}\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/\"\n"
        );
        Config::from_toml(&text).unwrap().routing
    }

    #[test]
    fn header_wins_then_pointer() {
        let cfg = routing("region_field = \"/region\"\nkey_field = \"/to\"");
        let mut h = HeaderMap::new();
        let body = br#"{"region": "EU", "to": 971500000}"#;
        let hints = extract(&cfg, &h, body).unwrap();
        assert_eq!(hints.region.as_deref(), Some("eu"));
        assert_eq!(hints.key.as_deref(), Some("971500000"));
        h.insert("x-region", "UAE".parse().unwrap());
        assert_eq!(
            extract(&cfg, &h, b"not json").unwrap_err().field,
            "key_field"
        );
        h.insert("x-routing-key", "k".parse().unwrap());
        let hints = extract(&cfg, &h, b"not json").unwrap();
        assert_eq!(
            (hints.region.as_deref(), hints.key.as_deref()),
            (Some("uae"), Some("k"))
        );
    }

    #[test]
    fn no_pointer_means_body_is_never_parsed() {
        let hints = extract(&routing(""), &HeaderMap::new(), b"\xff binary").unwrap();
        assert_eq!(hints, Hints::default());
    }
}
