//! `[health] ban_statuses` and `ban_patterns` (SPEC section 10): the answers that mean
//! a master's sender account is blocked. The request path and queued delivery ask
//! [`BanRules::check`] about every answer a master gives.

use super::bounds::BAN_SCAN_BYTES;
use http::StatusCode;

/// The compiled ban rules; empty rules match nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanRules {
    /// Statuses from 300 to 599, sorted, without repeats.
    pub statuses: Vec<u16>,
    /// Non-empty byte strings, matched case-sensitively.
    pub patterns: Vec<String>,
}

impl BanRules {
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.patterns.is_empty()
    }

    /// Why an answer of `status` with `body` means the account is blocked, or `None`.
    ///
    /// A 2xx answer is never a ban: the master took the message, and sending it again
    /// elsewhere would deliver it twice. Only the first [`BAN_SCAN_BYTES`] of a body
    /// are searched, so a large error page costs a bounded scan.
    pub fn check(&self, status: StatusCode, body: &[u8]) -> Option<String> {
        if self.is_empty() || status.is_success() {
            return None;
        }
        if self.statuses.binary_search(&status.as_u16()).is_ok() {
            return Some(format!("answered {status}, a ban status"));
        }
        let head = &body[..body.len().min(BAN_SCAN_BYTES)];
        self.patterns
            .iter()
            .find(|p| memchr::memmem::find(head, p.as_bytes()).is_some())
            .map(|p| format!("answered {status} with `{p}` in the body, a ban pattern"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> BanRules {
        BanRules {
            statuses: vec![403, 451],
            patterns: vec!["account banned".into()],
        }
    }

    #[test]
    fn a_ban_status_or_pattern_matches_and_nothing_else() {
        let r = rules();
        assert!(r.check(StatusCode::FORBIDDEN, b"").unwrap().contains("403"));
        let why = r
            .check(StatusCode::BAD_REQUEST, b"{\"error\": \"account banned\"}")
            .unwrap();
        assert!(why.contains("account banned"), "{why}");
        assert_eq!(r.check(StatusCode::BAD_REQUEST, b"bad field"), None);
        assert_eq!(r.check(StatusCode::BAD_REQUEST, b"Account Banned"), None);
        // Taken: never a ban, whatever the body says.
        assert_eq!(r.check(StatusCode::OK, b"account banned"), None);
        assert_eq!(BanRules::default().check(StatusCode::FORBIDDEN, b""), None);
    }

    #[test]
    fn only_the_head_of_a_body_is_searched() {
        let r = rules();
        let mut body = vec![b' '; BAN_SCAN_BYTES];
        body.extend_from_slice(b"account banned");
        assert_eq!(r.check(StatusCode::BAD_REQUEST, &body), None);
        body.drain(..20);
        assert!(r.check(StatusCode::BAD_REQUEST, &body).is_some());
    }
}
