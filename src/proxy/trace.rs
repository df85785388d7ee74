//! Trace context: the client headers named in `routing.forward_headers` that go on to
//! the master with the message (at once, or stored with it when it is queued), and the
//! `x-request-id` every answer to `POST /v1/messages` carries (SPEC section 9).
//!
//! Like the routing hints, every value is bounded here before anything else sees it:
//! visible ASCII, at most [`MAX_FORWARD_VALUE_BYTES`] (a header's lines joined), else a
//! 400 `invalid_header` naming the header, so nothing unbounded reaches the store.

use super::hints::{HintError, Input};
use crate::config::bounds::MAX_FORWARD_VALUE_BYTES;
use crate::h1::headers::Lookup;
use http::header::HeaderName;
use http::HeaderValue;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Forwarded headers, lower-case name and value, in `routing.forward_headers` order.
pub type Forwarded = Vec<(HeaderName, HeaderValue)>;

fn invalid(name: &HeaderName, why: &'static str) -> HintError {
    HintError::Invalid {
        input: Input::Header,
        what: format!("the {name} header"),
        why,
    }
}

/// The value of `name`, its lines joined with `", "` as RFC 9110 allows for list
/// headers (`tracestate` may come in several); `None` when absent.
fn joined(
    headers: &(impl Lookup + ?Sized),
    name: &HeaderName,
) -> Result<Option<HeaderValue>, HintError> {
    let mut lines = headers.all(name);
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let mut value: Option<Vec<u8>> = None;
    for line in lines {
        let v = value.get_or_insert_with(|| first.as_bytes().to_vec());
        v.extend_from_slice(b", ");
        v.extend_from_slice(line.as_bytes());
        if v.len() > MAX_FORWARD_VALUE_BYTES {
            break;
        }
    }
    let value = match value {
        None => first.clone(),
        Some(v) => HeaderValue::from_bytes(&v).map_err(|_| invalid(name, "is not valid"))?,
    };
    check(name, &value)?;
    Ok(Some(value))
}

fn check(name: &HeaderName, value: &HeaderValue) -> Result<(), HintError> {
    if value.len() > MAX_FORWARD_VALUE_BYTES {
        return Err(invalid(name, "is longer than 1024 bytes"));
    }
    if value.to_str().is_err() {
        return Err(invalid(name, "must be visible ASCII"));
    }
    Ok(())
}

/// The client's `x-request-id`, checked: one line, not empty, visible ASCII, at most
/// [`MAX_FORWARD_VALUE_BYTES`]. Checked whether or not it is forwarded, since it is
/// returned on the answer.
pub fn request_id(headers: &(impl Lookup + ?Sized)) -> Result<Option<HeaderValue>, HintError> {
    let name = X_REQUEST_ID;
    let mut lines = headers.all(&name);
    let Some(value) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err(invalid(&X_REQUEST_ID, "is sent more than once"));
    }
    if value.is_empty() {
        return Err(invalid(&X_REQUEST_ID, "is empty"));
    }
    check(&X_REQUEST_ID, value)?;
    Ok(Some(value.clone()))
}

/// The client's headers named in `names` (`routing.forward_headers`), checked.
pub fn forwarded(
    names: &[HeaderName],
    headers: &(impl Lookup + ?Sized),
) -> Result<Forwarded, HintError> {
    // Room for each: with `x-request-id` in the list (the default) one is always
    // pushed, the client's or the message id the send adds, and a list grown from
    // nothing takes Vec's slower growth path to its first allocation.
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(value) = joined(headers, name)? {
            out.push((name.clone(), value));
        }
    }
    Ok(out)
}

/// Forwarded headers as the queue stores them. Checked values are visible ASCII.
pub fn to_text(forwarded: &Forwarded) -> Vec<(String, String)> {
    forwarded
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Stored forwarded headers as they go out at delivery: those `names` (the list now)
/// still holds. A stored pair that is no longer a valid header (a record damaged on
/// disk) is left out and logged.
pub fn from_text(names: &[HeaderName], stored: &[(String, String)]) -> Forwarded {
    let mut out = Vec::with_capacity(stored.len());
    for (name, value) in stored {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(HeaderValue::from_str(value).ok());
        match parsed {
            Some((n, v)) if names.contains(&n) => out.push((n, v)),
            Some(_) => {}
            None => {
                tracing::warn!(header = %name, "a stored forwarded header is not valid: left out")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(list: &[&'static str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    #[test]
    fn only_listed_headers_are_taken_and_lines_are_joined() {
        let h = headers(&[
            ("traceparent", "00-abc-def-01"),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
            ("x-other", "no"),
        ]);
        let got = forwarded(&names(&["tracestate", "traceparent", "baggage"]), &h).unwrap();
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [("tracestate", "a=1, b=2"), ("traceparent", "00-abc-def-01")]
        );
    }

    #[test]
    fn values_are_bounded() {
        let list = names(&["tracestate"]);
        let at_bound = "a".repeat(MAX_FORWARD_VALUE_BYTES);
        assert!(forwarded(&list, &headers(&[("tracestate", &at_bound)])).is_ok());
        let over = "a".repeat(MAX_FORWARD_VALUE_BYTES + 1);
        let e = forwarded(&list, &headers(&[("tracestate", &over)])).unwrap_err();
        assert_eq!(e.code(), "invalid_header");
        assert_eq!(
            e.to_string(),
            "the tracestate header is longer than 1024 bytes"
        );
        // Lines short each, too long joined.
        let half = "a".repeat(MAX_FORWARD_VALUE_BYTES / 2);
        let h = headers(&[("tracestate", &half), ("tracestate", &half)]);
        assert!(forwarded(&list, &h).is_err());
        let mut opaque = HeaderMap::new();
        opaque.insert(
            "tracestate",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(forwarded(&list, &opaque).is_err());
    }

    #[test]
    fn request_id_is_one_short_visible_value() {
        assert_eq!(request_id(&HeaderMap::new()).unwrap(), None);
        let ok = request_id(&headers(&[("x-request-id", "r-1")])).unwrap();
        assert_eq!(ok.unwrap(), "r-1");
        for bad in [
            headers(&[("x-request-id", "")]),
            headers(&[("x-request-id", "a"), ("x-request-id", "b")]),
            headers(&[("x-request-id", &"r".repeat(MAX_FORWARD_VALUE_BYTES + 1))]),
        ] {
            assert_eq!(request_id(&bad).unwrap_err().code(), "invalid_header");
        }
    }

    #[test]
    fn stored_headers_go_out_while_still_listed() {
        let stored = vec![
            ("traceparent".to_string(), "00-abc-def-01".to_string()),
            ("tracestate".to_string(), "a=1".to_string()),
            ("bad name".to_string(), "x".to_string()),
        ];
        let out = from_text(&names(&["traceparent"]), &stored);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "traceparent");
        let round = to_text(&from_text(&names(&["traceparent", "tracestate"]), &stored));
        assert_eq!(round, stored[..2]);
    }
}
