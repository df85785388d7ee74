//! An answer's head: status line and headers parsed with `httparse`, and what they say
//! about the body's framing and the connection's reuse (RFC 9112 sections 6.3 and 9).

use super::ExchangeError;
use bytes::Bytes;
use http::StatusCode;

/// Headers an answer may carry; more is a malformed answer.
const MAX_HEADERS: usize = 100;

/// How the body after the head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 for 204 and 304).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length: the body ends when the master closes the connection.
    Close,
}

/// A parsed head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// End-to-end headers only: hop-by-hop ones, those `Connection` names and
    /// `Content-Length` are left out (the body is passed on whole).
    pub headers: Lines,
    pub framing: Framing,
    /// The master keeps the connection open after this answer.
    pub keep_alive: bool,
}

/// An answer's end-to-end header lines as they go on to the client, each
/// `name: value\r\n` with the name spelled as the master sent it (as nginx and
/// HAProxy pass names on; HTTP/1.1 names are case-insensitive): written out once,
/// without a `HeaderMap` built and copied per answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines(Bytes);

impl Lines {
    /// Each line whole (ending in CRLF), with its name. A line's only LF is its end
    /// and its first colon ends its name (httparse allows neither in a name, nor an LF
    /// in a value), so each is found with one `memchr`.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let end = memchr::memchr(b'\n', rest)? + 1;
            let (line, tail) = rest.split_at(end);
            rest = tail;
            let colon = memchr::memchr(b':', line).unwrap_or(0);
            Some((&line[..colon], line))
        })
    }

    /// Each header's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines()
            .map(|(name, line)| (name, &line[name.len() + 2..line.len() - 2]))
    }

    /// The first value of `name`, in any case.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The same headers as a map (tests compare them with hyper's).
    #[cfg(test)]
    pub fn to_map(&self) -> http::HeaderMap {
        self.iter()
            .filter_map(|(n, v)| {
                Some((
                    http::HeaderName::from_bytes(n).ok()?,
                    http::HeaderValue::from_bytes(v).ok()?,
                ))
            })
            .collect()
    }
}

/// Parses a head at the start of `buf`: `Ok(None)` when it is not complete yet, else
/// the head and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, ExchangeError> {
    // Nothing yet: not worth httparse's setup.
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised: httparse writes the ones it returns (zeroing 100 would be
    // 3.2 KB of stores per answer).
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ExchangeError::Malformed(format!("bad head: {e}"))),
    };
    let code = resp.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| ExchangeError::Malformed(format!("bad status {code}")))?;
    let http11 = resp.version == Some(1);

    let mut close = false;
    let mut keep_alive_token = false;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut listed: Vec<&[u8]> = Vec::new();
    // Each header's role, told once for both passes.
    let mut roles = [Role::EndToEnd; MAX_HEADERS];
    for (h, role_of) in resp.headers.iter().zip(&mut roles) {
        *role_of = role(h.name.as_bytes());
        match role_of {
            Role::Connection => {
                for token in tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else {
                        listed.push(token);
                    }
                }
            }
            Role::TransferEncoding => {
                // The last coding decides; any other than chunked runs to the close.
                let last = tokens(h.value).last().unwrap_or_default();
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            Role::ContentLength => {
                add_length(&mut length, h.value).map_err(|e| {
                    ExchangeError::Malformed(match e {
                        LengthError::Invalid => "bad content-length".to_string(),
                        LengthError::Differs => "content-length values differ".to_string(),
                    })
                })?;
            }
            Role::HopByHop | Role::EndToEnd => {}
        }
    }

    let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Length(0),
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) => Framing::Close,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Close,
    };
    // A length beside a transfer coding may be a smuggling attempt: use the coding,
    // then drop the connection.
    let ambiguous = chunked.is_some() && length.is_some();
    let keep_alive = framing != Framing::Close
        && !ambiguous
        && if http11 {
            !close
        } else {
            keep_alive_token && !close
        };

    // Those `Connection` names are hop-by-hop too.
    if !listed.is_empty() {
        for (h, role) in resp.headers.iter().zip(&mut roles) {
            if listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h.name.as_bytes()))
            {
                *role = Role::HopByHop;
            }
        }
    }
    // httparse checked names (tokens) and values (no control bytes but tab): they are
    // valid as `HeaderName` and `HeaderValue` are, so they are copied as they are. The
    // buffer is sized exactly: a `Bytes` made from a `Vec` with spare room allocates
    // again for its reference count.
    let kept = || {
        resp.headers
            .iter()
            .zip(roles)
            .filter(|(_, role)| *role == Role::EndToEnd)
            .map(|(h, _)| h)
    };
    let size = kept().map(|h| h.name.len() + h.value.len() + 4).sum();
    let mut lines = Vec::with_capacity(size);
    for h in kept() {
        lines.extend_from_slice(h.name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(h.value);
        lines.extend_from_slice(b"\r\n");
    }
    let headers = Lines(Bytes::from(lines));
    Ok(Some((
        Head {
            status,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// What an answer's header is to the parse: read for the framing and reuse, or
/// passed on (only `EndToEnd` ones are, less those `Connection` lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Connection,
    TransferEncoding,
    ContentLength,
    /// The other hop-by-hop headers of [`crate::util::HOP_BY_HOP`].
    HopByHop,
    EndToEnd,
}

/// A header's role by its name, told by its length first: most names are compared
/// with one candidate at most.
fn role(name: &[u8]) -> Role {
    let is = |candidate: &str| is_named(name, candidate);
    match name.len() {
        10 if is("connection") => Role::Connection,
        17 if is("transfer-encoding") => Role::TransferEncoding,
        14 if is("content-length") => Role::ContentLength,
        10 if is("keep-alive") => Role::HopByHop,
        16 if is("proxy-connection") => Role::HopByHop,
        2 if is("te") => Role::HopByHop,
        7 if is("trailer") || is("upgrade") => Role::HopByHop,
        _ => Role::EndToEnd,
    }
}

/// Whether `name`, a header name as httparse accepts one (a token), is `lower` in any
/// case; `lower` holds only lower-case letters, digits and `-`.
///
/// Compared eight bytes at a time, each byte of `name` OR-ed with 0x20: that turns a
/// token's capital letters into small ones and leaves its small letters, digits and
/// `-` as they are, and no other token byte becomes one of those (only control bytes
/// would, which a token never holds). `eq_ignore_ascii_case` folds both sides a byte
/// at a time, about five instructions per byte, on every header of every head.
#[inline]
pub(super) fn is_named(name: &[u8], lower: &str) -> bool {
    let lower = lower.as_bytes();
    debug_assert!(lower
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'));
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b);
    }
    const FOLD: u64 = u64::from_ne_bytes([0x20; 8]);
    let word = |s: &[u8], at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    // Whole words, the last one overlapping the one before where the length is not
    // a multiple of eight.
    let mut at = 0;
    while at + 8 < n {
        if word(name, at) | FOLD != word(lower, at) {
            return false;
        }
        at += 8;
    }
    word(name, n - 8) | FOLD == word(lower, n - 8)
}

/// The comma-separated tokens of a header value, trimmed, empty ones left out.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Why a `Content-Length` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LengthError {
    Invalid,
    /// It, or an earlier one, gives another length: the framing is ambiguous.
    Differs,
}

/// Takes one `Content-Length` header (a list of equal values is one length) into
/// `length`, the length of the ones before it (RFC 9110 section 8.6).
pub(super) fn add_length(length: &mut Option<u64>, value: &[u8]) -> Result<(), LengthError> {
    // The usual one: a single length, digits only.
    if let (None, Some(n)) = (*length, parse_length(value)) {
        *length = Some(n);
        return Ok(());
    }
    for value in value.split(|b| *b == b',') {
        let n = parse_length(value.trim_ascii()).ok_or(LengthError::Invalid)?;
        if length.is_some_and(|l| l != n) {
            return Err(LengthError::Differs);
        }
        *length = Some(n);
    }
    Ok(())
}

/// Digits only (no sign, no blanks), at most 19 of them so it fits a u64.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
        // Both: the coding wins and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
    }

    #[test]
    fn reuse_follows_the_version_and_connection() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            head("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn only_end_to_end_headers_are_kept() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Content-Length: 2\r\nContent-Type: application/json\r\nX-Id: a\r\nX-Id: b\r\n\r\n",
        );
        let kept: Vec<_> = h.headers.iter().collect();
        let kept: &[(&[u8], &[u8])] = &kept;
        assert_eq!(
            kept,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"X-Id", b"a"),
                (b"X-Id", b"b")
            ]
        );
        assert_eq!(h.headers.get("x-id"), Some(&b"a"[..]));
        assert_eq!(
            h.headers.get("content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(h.headers.to_map().get_all("x-id").iter().count(), 2);
    }

    #[test]
    fn lengths_are_digits_and_repeats_must_agree() {
        let add = |values: &[&str]| {
            let mut length = None;
            for v in values {
                add_length(&mut length, v.as_bytes())?;
            }
            Ok(length)
        };
        assert_eq!(add(&["0"]), Ok(Some(0)));
        assert_eq!(add(&["007"]), Ok(Some(7)));
        assert_eq!(
            add(&["9999999999999999999"]),
            Ok(Some(9_999_999_999_999_999_999))
        );
        assert_eq!(add(&["5, 5"]), Ok(Some(5)));
        assert_eq!(add(&["5", "5"]), Ok(Some(5)));
        assert_eq!(add(&["5", "6"]), Err(LengthError::Differs));
        assert_eq!(add(&["5,6"]), Err(LengthError::Differs));
        for bad in [
            "",
            "+5",
            "-1",
            "5 5",
            "0x10",
            "5,",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(add(&[bad]), Err(LengthError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn every_hop_by_hop_name_is_told_apart_in_any_case() {
        for name in crate::util::HOP_BY_HOP.iter().chain(&["content-length"]) {
            for spelled in [name.to_string(), name.to_ascii_uppercase()] {
                assert_ne!(role(spelled.as_bytes()), Role::EndToEnd, "{spelled}");
            }
        }
        for name in [
            "content-type",
            "x-connection",
            "tE2",
            "date",
            "",
            "upgrades",
        ] {
            assert_eq!(role(name.as_bytes()), Role::EndToEnd, "{name}");
        }
    }

    #[test]
    fn a_folded_compare_is_a_case_blind_one_on_tokens() {
        // Each token byte in each place of candidates one to twenty bytes long.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let candidate = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        for len in 1..=20 {
            let lower: String = "content-length-xyz09".chars().cycle().take(len).collect();
            for at in 0..len {
                for b in (0..=255u8).filter(|b| token(*b)) {
                    let mut name = lower.clone().into_bytes();
                    name[at] = b;
                    assert_eq!(
                        is_named(&name, &lower),
                        name.eq_ignore_ascii_case(lower.as_bytes()),
                        "{:?} against {lower}",
                        String::from_utf8_lossy(&name)
                    );
                }
            }
            assert!(is_named(lower.to_ascii_uppercase().as_bytes(), &lower));
            assert!(!is_named(&lower.as_bytes()[1..], &lower));
            assert!(lower.bytes().all(candidate));
        }
    }

    #[test]
    fn bad_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }
}
