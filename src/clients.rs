//! Client API keys (`[[clients]]`, SPEC section 9): who sent a request to `/v1/*`.
//!
//! With no client configured the API is open and every request is [`ANONYMOUS`]. With
//! one or more, a request must carry a configured key, as `Authorization: Bearer KEY`
//! or `X-Api-Key: KEY`; the client it names is a label in the requests metric and the
//! access log, and owns the messages it sends.
//!
//! A presented key is compared with every configured key in constant time: each key
//! is kept zero-padded to [`MAX_CLIENT_KEY_BYTES`] (as 64-bit words), the presented one
//! is padded the same way, and every comparison runs to its end, the match chosen
//! without a branch. What the time can tell is only whether the presented key was
//! longer than the bound (refused before any comparison).
//!
//! May call: nothing (the config builds it; the proxy asks it).

use crate::h1::headers::Lookup;
use http::HeaderName;
use std::fmt;
use std::sync::{Arc, LazyLock};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The longest key, in bytes.
pub const MAX_CLIENT_KEY_BYTES: usize = 256;
/// The most `[[clients]]` entries: each request compares its key with all of them.
pub const MAX_CLIENTS: usize = 100;
/// The longest client id.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

const WORDS: usize = MAX_CLIENT_KEY_BYTES / 8;

/// The header a client key may come in when `Authorization` is absent.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The client label of requests when no client is configured. Not a valid client id
/// for that reason (see [`valid_id`]).
pub static ANONYMOUS: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("anonymous"));

/// A key padded to the bound, and its length.
#[derive(Clone)]
struct Padded {
    words: [u64; WORDS],
    len: u32,
}

impl Padded {
    /// `None` when `key` is longer than [`MAX_CLIENT_KEY_BYTES`].
    fn new(key: &[u8]) -> Option<Padded> {
        if key.len() > MAX_CLIENT_KEY_BYTES {
            return None;
        }
        let mut bytes = [0u8; MAX_CLIENT_KEY_BYTES];
        bytes[..key.len()].copy_from_slice(key);
        let mut words = [0u64; WORDS];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(eight);
        }
        Some(Padded {
            words,
            len: key.len() as u32,
        })
    }

    fn ct_eq(&self, other: &Padded) -> subtle::Choice {
        self.words[..].ct_eq(&other.words[..]) & self.len.ct_eq(&other.len)
    }
}

/// The configured clients, compiled.
#[derive(Clone, Default)]
pub struct Clients {
    ids: Vec<Arc<str>>,
    keys: Vec<Padded>,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("Clients").field("ids", &self.ids).finish()
    }
}

/// Why a request to `/v1/*` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this API needs a client key: `Authorization: Bearer KEY` or `X-Api-Key: KEY`")]
    Missing,
    #[error("the client key is not valid")]
    Invalid,
}

impl Clients {
    /// From checked `(id, key)` pairs (see `config::compile`): ids valid and unique,
    /// keys non-empty, unique and at most [`MAX_CLIENT_KEY_BYTES`] long. A longer key
    /// could never match and is left out.
    pub fn new(entries: Vec<(String, String)>) -> Clients {
        let mut clients = Clients::default();
        for (id, key) in entries {
            if let Some(padded) = Padded::new(key.as_bytes()) {
                clients.ids.push(Arc::from(id));
                clients.keys.push(padded);
            }
        }
        clients
    }

    /// No client configured: `/v1/*` is open.
    pub fn is_open(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[Arc<str>] {
        &self.ids
    }

    /// The client whose key `key` is, compared with every key in constant time.
    pub fn identify(&self, key: &[u8]) -> Option<Arc<str>> {
        let presented = Padded::new(key)?;
        // 0: none; i + 1: the i-th client.
        let mut found = 0u32;
        for (i, k) in self.keys.iter().enumerate() {
            found.conditional_assign(&(i as u32 + 1), k.ct_eq(&presented));
        }
        let index = (found as usize).checked_sub(1)?;
        self.ids.get(index).cloned()
    }

    /// The client a request to `/v1/*` comes from: [`ANONYMOUS`] when none is
    /// configured; otherwise the owner of its key, taken from `Authorization: Bearer`
    /// (the scheme in any case) or, without that header, `X-Api-Key`. A header that is
    /// not visible ASCII, too long or in another scheme is no valid key.
    pub fn authenticate(&self, headers: &(impl Lookup + ?Sized)) -> Result<Arc<str>, AuthError> {
        if self.is_open() {
            return Ok(ANONYMOUS.clone());
        }
        let key = if let Some(auth) = headers.first(&http::header::AUTHORIZATION) {
            let text = auth.to_str().map_err(|_| AuthError::Invalid)?;
            match text.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
                _ => return Err(AuthError::Invalid),
            }
        } else if let Some(key) = headers.first(&X_API_KEY) {
            key.to_str().map_err(|_| AuthError::Invalid)?.trim()
        } else {
            return Err(AuthError::Missing);
        };
        if key.is_empty() {
            return Err(AuthError::Missing);
        }
        self.identify(key.as_bytes()).ok_or(AuthError::Invalid)
    }
}

/// A client id: `[A-Za-z0-9_.-]{1,64}`, and not the anonymous label.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && id != &**ANONYMOUS
}

/// A key a header can carry: visible ASCII, no spaces.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::HeaderValue;

    fn clients() -> Clients {
        Clients::new(vec![
            ("billing".into(), "k-billing-1".into()),
            ("crm".into(), "k-crm".into()),
            ("long".into(), "x".repeat(MAX_CLIENT_KEY_BYTES)),
        ])
    }

    #[test]
    fn identifies_each_key_and_nothing_else() {
        let c = clients();
        assert_eq!(c.identify(b"k-billing-1").as_deref(), Some("billing"));
        assert_eq!(c.identify(b"k-crm").as_deref(), Some("crm"));
        let long = "x".repeat(MAX_CLIENT_KEY_BYTES);
        assert_eq!(c.identify(long.as_bytes()).as_deref(), Some("long"));
        for wrong in [
            &b"k-billing-"[..], // a prefix
            b"k-billing-11",    // longer
            b"k-billing-2",     // one byte differs
            b"k-crm\0",         // padding is not the key
            b"",                // empty
            b"K-CRM",           // case
        ] {
            assert_eq!(c.identify(wrong), None, "{wrong:?}");
        }
        let longer = "x".repeat(MAX_CLIENT_KEY_BYTES + 1);
        assert_eq!(c.identify(longer.as_bytes()), None);
        assert_eq!(Clients::default().identify(b"k-crm"), None);
    }

    #[test]
    fn reads_both_header_forms() {
        let c = clients();
        let with = |name: &'static str, value: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_bytes(value).unwrap());
            c.authenticate(&h)
        };
        assert_eq!(with("authorization", b"Bearer k-crm").as_deref(), Ok("crm"));
        assert_eq!(with("authorization", b"bearer k-crm").as_deref(), Ok("crm"));
        assert_eq!(with("x-api-key", b"k-billing-1").as_deref(), Ok("billing"));
        assert_eq!(
            with("authorization", b"Basic k-crm"),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            with("authorization", b"Bearer nope"),
            Err(AuthError::Invalid)
        );
        assert_eq!(with("x-api-key", b"k-\xffcrm"), Err(AuthError::Invalid));
        assert_eq!(with("x-api-key", b""), Err(AuthError::Missing));
        assert_eq!(c.authenticate(&HeaderMap::new()), Err(AuthError::Missing));
        let open = Clients::default().authenticate(&HeaderMap::new());
        assert_eq!(open.as_deref(), Ok("anonymous"));
    }

    #[test]
    fn ids_follow_the_pattern() {
        for ok in ["billing", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65), "anonymous"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
