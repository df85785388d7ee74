//! The bounds of every config value (SPEC section 8), checked by `compile`.
//!
//! Each keeps arithmetic on the value (deadlines, backoffs,
//! buffer sizes) far from overflow, and is far above any setting that makes sense.

/// Every `*_ms` key: at most 7 days.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// `server.max_body_bytes`: a body is held in memory whole, so 64 MiB.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_CONNECTIONS: u64 = 1_000_000;
/// `server.max_key_bytes`: the store indexes keys (with a suffix) in keys of at most
/// 64 KiB, so a quarter of that.
pub const MAX_KEY_BYTES: u64 = 16_384;
pub const MAX_TOKEN_BYTES: usize = 4096;
/// `server.max_status_records`: 32 bytes each in memory, so about 3.2 GB.
pub const MAX_STATUS_RECORDS: u64 = 100_000_000;
pub const MAX_RETRY_ATTEMPTS: u64 = 10;
/// `health.healthy_threshold`, `unhealthy_threshold` and `passive_failures`.
pub const MAX_THRESHOLD: u64 = 1000;
pub const MAX_FAILOVERS: u64 = 1000;
/// `queue.max_messages` and `alerts.queue_warning`.
pub const MAX_QUEUED: u64 = 1_000_000_000;
pub const MAX_ATTEMPTS: u64 = 1000;
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_MASTERS: usize = 1000;
pub const MAX_WEIGHT: f64 = 1_000_000.0;
pub const MAX_PRIORITY: u32 = 1_000_000;
/// `masters[].rate_per_sec`: a million messages a second is far above any account.
pub const MAX_RATE_PER_SEC: f64 = 1_000_000.0;
/// `masters[].burst`.
pub const MAX_BURST: u64 = 1_000_000;
/// `masters[].daily_limit`.
pub const MAX_DAILY_LIMIT: u64 = 1_000_000_000_000;
pub const MAX_REGION_BYTES: usize = 255;
pub const MAX_HEADERS: usize = 64;
pub const MAX_URL_BYTES: usize = 2048;
/// `routing.forward_headers`: names in the list.
pub const MAX_FORWARD_HEADERS: usize = 32;
/// The longest value of a forwarded header (all its lines joined) or of a client's
/// `x-request-id`: they are stored with a queued message. A `traceparent` is 55 bytes,
/// and W3C asks `tracestate` to fit in 512.
pub const MAX_FORWARD_VALUE_BYTES: usize = 1024;

/// `health.ban_patterns`: how many, and the longest one.
pub const MAX_BAN_PATTERNS: usize = 32;
pub const MAX_BAN_PATTERN_BYTES: usize = 256;
/// How much of a master's answer body is searched for a ban pattern.
pub const BAN_SCAN_BYTES: usize = 64 * 1024;

/// A value as an error message quotes it: at most 64 characters.
pub(super) fn shown(v: &str) -> String {
    const MAX: usize = 64;
    match v.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &v[..end]),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{compile::parse, Config, ConfigError, ConfigErrors};

    const MASTER: &str = "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9001/send\"\n";

    fn check(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, &|_| None)
    }

    /// The errors of `table` (a TOML table header and keys) plus one valid master.
    fn errors(table: &str) -> Vec<ConfigError> {
        check(&format!("{table}\n{MASTER}")).map_or_else(|e| e.0, |_| Vec::new())
    }

    fn accepted(table: &str) -> Config {
        check(&format!("{table}\n{MASTER}"))
            .unwrap_or_else(|e| panic!("{table:?} was rejected: {e}"))
    }

    const DURATIONS: [(&str, &str, u64); 13] = [
        ("server", "request_timeout_ms", 1),
        ("server", "read_timeout_ms", 1),
        ("server", "idle_timeout_ms", 1),
        ("health", "interval_ms", 1),
        ("health", "timeout_ms", 1),
        ("failover", "recovery_wait_ms", 0),
        ("failover", "failback_delay_ms", 0),
        ("failover", "slow_start_ms", 0),
        ("failover", "breaker_window_ms", 1),
        ("queue", "backoff_initial_ms", 1),
        ("queue", "backoff_max_ms", 1),
        ("queue", "ttl_ms", 1),
        ("queue", "idempotency_window_ms", 1),
    ];

    #[test]
    fn every_duration_is_at_most_seven_days() {
        for (table, key, min) in DURATIONS {
            let path = format!("{table}.{key}");
            // backoff_initial_ms may not pass backoff_max_ms: raise both together.
            let both = |v: u64| {
                if table == "queue" && key.starts_with("backoff") {
                    format!("[queue]\nbackoff_initial_ms = {v}\nbackoff_max_ms = {v}\n")
                } else {
                    format!("[{table}]\n{key} = {v}\n")
                }
            };
            accepted(&both(MAX_DURATION_MS));
            if min > 0 {
                accepted(&both(min));
            }
            for bad in [MAX_DURATION_MS + 1, i64::MAX as u64] {
                let e = errors(&both(bad));
                assert!(
                    e.iter()
                        .any(|e| e.path == path && e.message.contains("7 days")),
                    "{path} = {bad}: {e:?}"
                );
            }
            if min == 1 {
                let e = errors(&both(0));
                assert!(e.iter().any(|e| e.path == path), "{path} = 0: {e:?}");
            }
        }
        // A zero wait, delay or slow start is allowed: it means none.
        let c = accepted("[failover]\nrecovery_wait_ms = 0\nslow_start_ms = 0\n");
        assert!(c.failover.recovery_wait.is_zero() && c.failover.slow_start.is_zero());
    }

    #[test]
    fn counts_and_sizes_have_bounds() {
        let cases: [(&str, &str, u64, u64); 11] = [
            ("server", "max_body_bytes", 1, MAX_BODY_BYTES),
            ("server", "max_connections", 1, MAX_CONNECTIONS),
            ("server", "max_key_bytes", 1, MAX_KEY_BYTES),
            ("routing", "retry_attempts", 0, MAX_RETRY_ATTEMPTS),
            ("health", "healthy_threshold", 1, MAX_THRESHOLD),
            ("health", "unhealthy_threshold", 1, MAX_THRESHOLD),
            ("health", "passive_failures", 1, MAX_THRESHOLD),
            ("failover", "max_failovers", 0, MAX_FAILOVERS),
            ("queue", "max_messages", 1, MAX_QUEUED),
            ("queue", "max_attempts", 1, MAX_ATTEMPTS),
            ("alerts", "queue_warning", 0, MAX_QUEUED),
        ];
        for (table, key, min, max) in cases {
            let path = format!("{table}.{key}");
            accepted(&format!("[{table}]\n{key} = {min}\n"));
            accepted(&format!("[{table}]\n{key} = {max}\n"));
            let mut bad = vec![max + 1];
            if min > 0 {
                bad.push(min - 1);
            }
            for v in bad {
                let e = errors(&format!("[{table}]\n{key} = {v}\n"));
                assert!(
                    e.iter()
                        .any(|e| e.path == path && e.message.contains("range")),
                    "{path} = {v}: {e:?}"
                );
            }
        }
        // Found: retry_attempts = 1,000,000 was accepted.
        let e = errors("[routing]\nretry_attempts = 1000000\n");
        assert_eq!(e[0].path, "routing.retry_attempts");
        assert!(e[0].message.contains("between 0 and 10"), "{e:?}");
        // Too large for the type: the key is still named.
        let e = errors("[routing]\nretry_attempts = 9999999999999\n");
        assert_eq!(e[0].path, "routing.retry_attempts", "{e:?}");
    }

    #[test]
    fn budgets_are_bounded() {
        let master = |kv: &str| format!("{MASTER}{kv}\n");
        let c = check(&master(
            "rate_per_sec = 2.5\nburst = 3\ndaily_limit = 100\nwarmup_ms = 10",
        ))
        .unwrap();
        let m = &c.masters[0];
        assert_eq!((m.rate_per_sec, m.burst, m.daily_limit), (2.5, 3, 100));
        assert!(m.limited());
        let c = check(MASTER).unwrap();
        assert!(!c.masters[0].limited(), "no limit by default");
        assert_eq!(c.masters[0].burst, 1);
        for (kv, path) in [
            ("rate_per_sec = -1", "masters[0].rate_per_sec"),
            ("rate_per_sec = nan", "masters[0].rate_per_sec"),
            ("rate_per_sec = 1000001", "masters[0].rate_per_sec"),
            ("burst = 0", "masters[0].burst"),
            ("burst = 1000001", "masters[0].burst"),
            ("daily_limit = 1000000000001", "masters[0].daily_limit"),
            ("warmup_ms = 604800001", "masters[0].warmup_ms"),
        ] {
            let e = check(&master(kv)).map_or_else(|e| e.0, |_| Vec::new());
            assert_eq!(e.len(), 1, "{kv}: {e:?}");
            assert_eq!(e[0].path, path, "{kv}");
        }
    }

    #[test]
    fn weights_are_finite_positive_and_bounded() {
        let master =
            |w: &str| format!("[[masters]]\nid = \"a\"\nsend_url = \"http://h/s\"\nweight = {w}\n");
        for good in ["0.001", "1", "1000000", "1e6"] {
            assert!(check(&master(good)).is_ok(), "weight {good}");
        }
        for bad in ["0", "-1", "1e308", "1000000.5", "inf", "nan", "-inf"] {
            let e = check(&master(bad)).unwrap_err().0;
            assert_eq!(e.len(), 1, "weight {bad}: {e:?}");
            assert_eq!(e[0].path, "masters[0].weight", "weight {bad}");
            assert!(e[0].message.contains("1000000"), "{e:?}");
        }
        let e = check(&master("1").replace("weight = 1", "priority = 0"))
            .unwrap_err()
            .0;
        assert_eq!(e[0].path, "masters[0].priority");
    }

    #[test]
    fn strings_and_lists_have_bounds() {
        let long = "r".repeat(MAX_REGION_BYTES + 1);
        let e = check(&format!("{MASTER}region = \"{long}\"\n"))
            .unwrap_err()
            .0;
        assert_eq!(e[0].path, "masters[0].region");

        let url = format!("http://h/{}", "p".repeat(MAX_URL_BYTES));
        let e = check(&MASTER.replace("http://127.0.0.1:9001/send", &url))
            .unwrap_err()
            .0;
        assert_eq!(e[0].path, "masters[0].send_url");
        assert!(e[0].message.len() < 100, "the value is not echoed: {e:?}");

        let headers: Vec<String> = (0..=MAX_HEADERS)
            .map(|i| format!("x-h{i} = \"v\""))
            .collect();
        let text = format!("{MASTER}headers = {{ {} }}\n", headers.join(", "));
        let e = check(&text).unwrap_err().0;
        assert_eq!(e[0].path, "masters[0].headers");

        let many: String = (0..=MAX_MASTERS)
            .map(|i| MASTER.replace("\"a\"", &format!("\"m{i}\"")))
            .collect();
        let e = check(&many).unwrap_err().0;
        assert_eq!(e[0].path, "masters");

        let e = errors(&format!(
            "[server]\nadmin_token = \"{}\"\n",
            "t".repeat(5000)
        ));
        assert_eq!(e[0].path, "server.admin_token");

        // An unknown strategy is quoted, cut short.
        let e = errors(&format!(
            "[routing]\nstrategy = \"{}\"\n",
            "s".repeat(10_000)
        ));
        assert_eq!(e[0].path, "routing.strategy");
        assert!(e[0].message.len() < 200, "{}", e[0].message.len());
    }

    #[test]
    fn every_bound_error_is_reported_at_once() {
        let text = "[server]\nrequest_timeout_ms = 9223372036854775807\nmax_key_bytes = 0\n\
                    [routing]\nretry_attempts = 11\n[queue]\nttl_ms = 604800001\n";
        let paths: Vec<String> = errors(text).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "server.request_timeout_ms",
                "server.max_key_bytes",
                "routing.retry_attempts",
                "queue.ttl_ms"
            ]
        );
    }

    #[test]
    fn ban_statuses_and_patterns_are_bounded_with_their_key_paths() {
        let c = accepted(
            "[health]\nban_statuses = [451, 403, 403]\nban_patterns = [\"account banned\"]\n",
        );
        assert_eq!(c.health.bans.statuses, [403, 451]);
        assert_eq!(c.health.bans.patterns, ["account banned"]);
        assert!(accepted("").health.bans.is_empty());
        for (bad, says) in [
            ("200", "took the message"),
            ("101", "1xx"),
            ("600", "not an HTTP status"),
            ("-1", "not an HTTP status"),
        ] {
            let e = errors(&format!("[health]\nban_statuses = [403, {bad}]\n"));
            assert!(
                e.iter()
                    .any(|e| e.path == "health.ban_statuses[1]" && e.message.contains(says)),
                "{bad}: {e:?}"
            );
        }
        let e = errors("[health]\nban_patterns = [\"ok\", \"\"]\n");
        assert!(
            e.iter()
                .any(|e| e.path == "health.ban_patterns[1]" && e.message.contains("empty")),
            "{e:?}"
        );
        let long = "x".repeat(MAX_BAN_PATTERN_BYTES + 1);
        let e = errors(&format!("[health]\nban_patterns = [\"{long}\"]\n"));
        assert!(
            e.iter()
                .any(|e| e.path == "health.ban_patterns[0]" && e.message.contains("at most 256")),
            "{e:?}"
        );
        accepted(&format!("[health]\nban_patterns = [\"{}\"]\n", &long[1..]));
        let many: Vec<String> = (0..=MAX_BAN_PATTERNS)
            .map(|i| format!("\"p{i}\""))
            .collect();
        let e = errors(&format!("[health]\nban_patterns = [{}]\n", many.join(", ")));
        assert!(
            e.iter()
                .any(|e| e.path == "health.ban_patterns" && e.message.contains("at most 32")),
            "{e:?}"
        );
    }
}
