//! `health.ban_statuses` and `health.ban_patterns`, checked and compiled into
//! [`BanRules`].

use super::Errors;
use crate::config::ban::BanRules;
use crate::config::bounds::{shown, MAX_BAN_PATTERNS, MAX_BAN_PATTERN_BYTES};

/// Every status must be a final answer that is no success: a 1xx never ends an
/// exchange, and a 2xx means the master took the message, so sending it elsewhere
/// after it would deliver it twice. Patterns are non-empty and bounded.
pub(super) fn rules(errs: &mut Errors, statuses: &[i64], patterns: &[String]) -> BanRules {
    let mut rules = BanRules::default();
    for (i, &s) in statuses.iter().enumerate() {
        let path = format!("health.ban_statuses[{i}]");
        match s {
            300..=599 => rules.statuses.push(s as u16),
            100..=299 => errs.push(
                &path,
                format!(
                    "{s} cannot mean a ban: a 1xx is no final answer and a 2xx means the \
                     master took the message; use a status from 300 to 599"
                ),
            ),
            _ => errs.push(
                &path,
                format!("{s} is not an HTTP status: use one from 300 to 599"),
            ),
        }
    }
    rules.statuses.sort_unstable();
    rules.statuses.dedup();
    if patterns.len() > MAX_BAN_PATTERNS {
        errs.push(
            "health.ban_patterns",
            format!(
                "has {} patterns: at most {MAX_BAN_PATTERNS}",
                patterns.len()
            ),
        );
    }
    for (i, p) in patterns.iter().enumerate().take(MAX_BAN_PATTERNS) {
        let path = format!("health.ban_patterns[{i}]");
        if p.is_empty() {
            errs.push(&path, "is empty: it would match every answer");
        } else if p.len() > MAX_BAN_PATTERN_BYTES {
            errs.push(
                &path,
                format!(
                    "`{}` is {} bytes long: at most {MAX_BAN_PATTERN_BYTES}",
                    shown(p),
                    p.len()
                ),
            );
        } else if !rules.patterns.contains(p) {
            rules.patterns.push(p.clone());
        }
    }
    rules
}
