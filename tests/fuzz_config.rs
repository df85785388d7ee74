//! Fuzzing the config compiler (SPEC sections 2 and 8): TOML documents built from the
//! real key names with arbitrary values — numbers at the edges, huge strings, wrong
//! types, unknown keys, `${NAME}` references — and raw arbitrary text never make it
//! panic; every error names a key path the document has (or the schema requires), or
//! none for file-level problems; an accepted config lies inside the bounds.
//!
//! The default case count suits CI (a few seconds). A longer run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz_config`.

use proptest::prelude::*;
use std::collections::BTreeSet;
use switchyard::config::bounds::*;
use switchyard::config::Config;
use toml::Value;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Float,
    Bool,
    Addr,
    Url,
    Header,
    Pointer,
    Text,
    Choice(&'static [&'static str]),
    Map,
}

const SERVER: &[(&str, Kind)] = &[
    ("listen", Kind::Addr),
    ("admin_listen", Kind::Addr),
    ("admin_token", Kind::Text),
    ("max_body_bytes", Kind::Int),
    ("request_timeout_ms", Kind::Int),
    ("read_timeout_ms", Kind::Int),
    ("idle_timeout_ms", Kind::Int),
    ("max_connections", Kind::Int),
    ("max_key_bytes", Kind::Int),
    ("max_status_records", Kind::Int),
];
const ROUTING: &[(&str, Kind)] = &[
    (
        "strategy",
        Kind::Choice(&["round_robin", "weighted_priority", "least_loaded", "region"]),
    ),
    ("region_header", Kind::Header),
    ("key_header", Kind::Header),
    ("region_field", Kind::Pointer),
    ("key_field", Kind::Pointer),
    ("retry_attempts", Kind::Int),
];
const HEALTH: &[(&str, Kind)] = &[
    ("interval_ms", Kind::Int),
    ("timeout_ms", Kind::Int),
    ("healthy_threshold", Kind::Int),
    ("unhealthy_threshold", Kind::Int),
    ("passive_failures", Kind::Int),
];
const FAILOVER: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("recovery_wait_ms", Kind::Int),
    ("failback", Kind::Choice(&["auto", "manual"])),
    ("failback_delay_ms", Kind::Int),
    ("slow_start_ms", Kind::Int),
    ("max_failovers", Kind::Int),
    ("breaker_window_ms", Kind::Int),
];
const QUEUE: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("path", Kind::Text),
    ("when_unavailable", Kind::Choice(&["queue", "reject"])),
    ("max_messages", Kind::Int),
    ("max_attempts", Kind::Int),
    ("backoff_initial_ms", Kind::Int),
    ("backoff_max_ms", Kind::Int),
    ("ttl_ms", Kind::Int),
    ("idempotency_window_ms", Kind::Int),
];
const ALERTS: &[(&str, Kind)] = &[
    ("webhook_url", Kind::Url),
    ("queue_warning", Kind::Int),
    ("imbalance_warning", Kind::Float),
];
const MASTER: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("send_url", Kind::Url),
    ("health_url", Kind::Url),
    ("role", Kind::Choice(&["primary", "secondary", "standby"])),
    ("weight", Kind::Float),
    ("priority", Kind::Int),
    ("region", Kind::Text),
    ("headers", Kind::Map),
];
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    ("server", SERVER),
    ("routing", ROUTING),
    ("health", HEALTH),
    ("failover", FAILOVER),
    ("queue", QUEUE),
    ("alerts", ALERTS),
];

fn edge_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(2),
        Just(10),
        Just(11),
        Just(255),
        Just(1000),
        Just(1001),
        Just(65_535),
        Just(65_536),
        Just(1_000_000),
        Just(MAX_DURATION_MS as i64),
        Just(MAX_DURATION_MS as i64 + 1),
        Just(u32::MAX as i64),
        Just(u32::MAX as i64 + 1),
        Just(i64::MAX),
        Just(i64::MIN),
        0i64..100_000,
        any::<i64>(),
    ]
}

fn edge_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0f64),
        Just(-0.0),
        Just(0.5),
        Just(1.0),
        Just(-1.0),
        Just(1e6),
        Just(1e6 + 0.5),
        Just(1e308),
        Just(f64::MIN_POSITIVE),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        0.0f64..2.0,
        any::<f64>(),
    ]
}

/// Strings of every sort: short arbitrary ones, huge ones, env references.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[a-z0-9_.:/-]{0,24}",
        // No runs of quotes: the test's TOML writer (toml_write 0.1) overflows on a run
        // of more than 255 in debug builds. `hand_made_documents` parses such runs.
        ("[^'\"]{1,4}", 1000usize..70_000).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
        Just("${HOME}".to_string()),
        Just("${SWITCHYARD_FUZZ_UNSET}".to_string()),
        Just("${}".to_string()),
        Just("${not-a-name}".to_string()),
        Just("${unterminated".to_string()),
        Just("a${HOME}b${SWITCHYARD_FUZZ_UNSET}c".to_string()),
    ]
}

fn typed(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Int => edge_int().prop_map(Value::Integer).boxed(),
        Kind::Float => prop_oneof![
            edge_float().prop_map(Value::Float),
            edge_int().prop_map(Value::Integer)
        ]
        .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Boolean).boxed(),
        Kind::Addr => prop_oneof![
            Just("127.0.0.1:0".to_string()),
            Just("[::1]:8080".to_string()),
            Just("0.0.0.0:65535".to_string()),
            Just("127.0.0.1:65536".to_string()),
            any_text(),
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Url => prop_oneof![
            Just(String::new()),
            Just("http://127.0.0.1:9001/send".to_string()),
            Just("http://h/send?x=1".to_string()),
            Just("https://h/send".to_string()),
            Just("http://:80/".to_string()),
            Just("http://[::1]:9/".to_string()),
            "http://[a-z0-9.:@%]{0,20}/[ -~]{0,20}",
            any_text().prop_map(|s| format!("http://h/{s}")),
            any_text(),
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Header => prop_oneof![
            Just("x-region".to_string()),
            Just(String::new()),
            "[ -~]{0,16}",
            any_text()
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Pointer => prop_oneof![Just(String::new()), "/[ -~]{0,16}", any_text()]
            .prop_map(Value::String)
            .boxed(),
        Kind::Text => any_text().prop_map(Value::String).boxed(),
        Kind::Choice(values) => prop_oneof![
            proptest::sample::select(values).prop_map(|v| v.to_string()),
            any_text()
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Map => proptest::collection::btree_map(
            prop_oneof!["[a-z-]{1,12}", "[ -~]{0,12}"],
            prop_oneof![
                any_text().prop_map(Value::String),
                edge_int().prop_map(Value::Integer)
            ],
            0..4,
        )
        .prop_map(|m| Value::Table(m.into_iter().collect()))
        .boxed(),
    }
}

/// A value of the wrong type, or of any type.
fn wrong() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        edge_int().prop_map(Value::Integer),
        edge_float().prop_map(Value::Float),
        any_text().prop_map(Value::String),
        Just(Value::Array(vec![
            Value::Integer(1),
            Value::String("x".into())
        ])),
        Just(Value::Table(toml::map::Map::new())),
        Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ]
    .boxed()
}

/// Mostly the key's own type, sometimes anything.
fn value_for(kind: Kind) -> BoxedStrategy<Value> {
    prop_oneof![4 => typed(kind), 1 => wrong()].boxed()
}

/// The largest value `key` takes (an integer key).
fn int_max(key: &str) -> u64 {
    match key {
        k if k.ends_with("_ms") => MAX_DURATION_MS,
        "max_body_bytes" => MAX_BODY_BYTES,
        "max_connections" => MAX_CONNECTIONS,
        "max_key_bytes" => MAX_KEY_BYTES,
        "max_status_records" => MAX_STATUS_RECORDS,
        "retry_attempts" => MAX_RETRY_ATTEMPTS,
        "healthy_threshold" | "unhealthy_threshold" | "passive_failures" => MAX_THRESHOLD,
        "max_failovers" => MAX_FAILOVERS,
        "max_messages" | "queue_warning" => MAX_QUEUED,
        "max_attempts" => MAX_ATTEMPTS,
        "priority" => u64::from(MAX_PRIORITY),
        other => panic!("no bound known for {other}"),
    }
}

/// A value `key` accepts, at its edges or inside (`backoff_max_ms` may still come
/// out below `backoff_initial_ms`).
fn plausible(key: &'static str, kind: Kind) -> BoxedStrategy<Value> {
    let text = |s: &[&'static str]| {
        proptest::sample::select(s.to_vec())
            .prop_map(|v| Value::String(v.into()))
            .boxed()
    };
    match kind {
        Kind::Int => {
            let max = int_max(key) as i64;
            prop_oneof![Just(1i64), Just(max), 1..=max.min(20), 1..=max]
                .prop_map(Value::Integer)
                .boxed()
        }
        Kind::Float if key == "weight" => {
            prop_oneof![Just(MAX_WEIGHT), Just(1e-9), 1e-6..=MAX_WEIGHT]
                .prop_map(Value::Float)
                .boxed()
        }
        Kind::Float => prop_oneof![Just(1.0), 0.01f64..=1.0]
            .prop_map(Value::Float)
            .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Boolean).boxed(),
        Kind::Addr => text(&["127.0.0.1:0", "[::1]:0"]),
        Kind::Url => text(&["", "http://127.0.0.1:9001/health", "http://h/x?y=1"]),
        Kind::Header => text(&["x-region", "x-routing-key", "X-Key"]),
        Kind::Pointer => text(&["", "/to", "/a/b"]),
        Kind::Text => "[A-Za-z0-9_.-]{1,12}".prop_map(Value::String).boxed(),
        Kind::Choice(values) => text(values),
        // Header names a master may be given: an `x-` prefix keeps out the hop-by-hop
        // and per-message ones the config refuses (`te`, `connection`, ...).
        Kind::Map => proptest::collection::btree_map("x-[a-z-]{1,10}", "[ -#%-~]{0,12}", 0..4)
            .prop_map(|m| Value::Table(m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
            .boxed(),
    }
}

/// `Some` with probability `p` (0 and 1 included).
fn maybe<T: std::fmt::Debug + Clone + 'static>(
    p: f64,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if p <= 0.0 {
        Just(None).boxed()
    } else if p >= 1.0 {
        s.prop_map(Some).boxed()
    } else {
        proptest::option::weighted(p, s).boxed()
    }
}

fn unknown_key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,12}", ".{0,8}"]
}

/// A table with a random subset of `keys` set, and maybe an unknown key; with
/// `valid`, only values each key accepts and no unknown key.
fn table(keys: &'static [(&'static str, Kind)], valid: bool) -> BoxedStrategy<Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = keys
        .iter()
        .map(|&(k, kind)| {
            let value = if valid {
                plausible(k, kind)
            } else {
                value_for(kind)
            };
            proptest::option::weighted(0.5, value.prop_map(move |v| (k.to_string(), v))).boxed()
        })
        .collect();
    (
        fields,
        maybe(if valid { 0.0 } else { 0.1 }, (unknown_key(), wrong())),
    )
        .prop_map(|(fields, extra)| {
            let mut t = toml::map::Map::new();
            for (k, v) in fields.into_iter().flatten().chain(extra) {
                t.insert(k, v);
            }
            Value::Table(t)
        })
        .boxed()
}

/// A whole document: some sections, 0 to 4 masters (mostly with an id and URL),
/// sometimes a section of the wrong type or an unknown one. With `valid`, every
/// value is one its key accepts, and there are 1 to 4 masters with distinct ids.
fn document(valid: bool) -> impl Strategy<Value = Value> {
    let odd = if valid { 0.0 } else { 0.1 };
    let sections: Vec<BoxedStrategy<Option<(String, Value)>>> = TABLES
        .iter()
        .map(|&(name, keys)| {
            let v = if valid {
                table(keys, true)
            } else {
                prop_oneof![9 => table(keys, false), 1 => wrong()].boxed()
            };
            proptest::option::weighted(0.6, v.prop_map(move |v| (name.to_string(), v))).boxed()
        })
        .collect();
    let master = (
        table(MASTER, valid),
        "[a-z]{1,3}",
        maybe(1.0 - odd, Just("http://127.0.0.1:9001/send")),
    )
        .prop_map(|(mut m, id, url)| {
            if let Value::Table(t) = &mut m {
                t.entry("id").or_insert(Value::String(id));
                if let Some(url) = url {
                    t.entry("send_url").or_insert(Value::String(url.into()));
                }
            }
            m
        });
    let list = proptest::collection::vec(master, if valid { 1..5 } else { 0..5 });
    let masters = if valid {
        list.prop_map(move |mut list| {
            for (i, m) in list.iter_mut().enumerate() {
                if let Value::Table(t) = m {
                    t.insert("id".into(), Value::String(format!("m{i}")));
                    t.insert(
                        "role".into(),
                        Value::String(if i == 0 { "primary" } else { "standby" }.into()),
                    );
                    t.insert(
                        "send_url".into(),
                        Value::String("http://127.0.0.1:9001/send".into()),
                    );
                }
            }
            Value::Array(list)
        })
        .boxed()
    } else {
        prop_oneof![9 => list.prop_map(Value::Array), 1 => wrong()].boxed()
    };
    (
        sections,
        maybe(1.0 - odd, masters),
        maybe(odd, (unknown_key(), wrong())),
    )
        .prop_map(|(sections, masters, extra)| {
            let mut doc = toml::map::Map::new();
            for (k, v) in sections.into_iter().flatten().chain(extra) {
                doc.insert(k, v);
            }
            if let Some(m) = masters {
                doc.insert("masters".into(), m);
            }
            Value::Table(doc)
        })
}

/// Every key path of `value`, written as the compiler writes them.
fn paths(value: &Value, at: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}[{i}]");
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        _ => {}
    }
}

/// The paths an error may name: those of the document, and every key of the schema
/// (a required key may be missing), for as many masters as the document has.
fn allowed(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    paths(doc, "", &mut out);
    for (name, keys) in TABLES {
        out.insert((*name).to_string());
        for (k, _) in *keys {
            out.insert(format!("{name}.{k}"));
        }
    }
    out.insert("masters".into());
    let n = match doc.get("masters") {
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    for i in 0..n {
        for (k, _) in MASTER {
            out.insert(format!("masters[{i}].{k}"));
        }
    }
    out
}

fn within_bounds(c: &Config) {
    let max = std::time::Duration::from_millis(MAX_DURATION_MS);
    let durations = [
        c.server.request_timeout,
        c.server.read_timeout,
        c.server.idle_timeout,
        c.health.interval,
        c.health.timeout,
        c.failover.recovery_wait,
        c.failover.failback_delay,
        c.failover.slow_start,
        c.failover.breaker_window,
        c.queue.backoff_initial,
        c.queue.backoff_max,
        c.queue.ttl,
        c.queue.idempotency_window,
    ];
    for d in durations {
        assert!(d <= max, "{d:?}");
    }
    assert!((1..=MAX_BODY_BYTES as usize).contains(&c.server.max_body_bytes));
    assert!((1..=MAX_CONNECTIONS as usize).contains(&c.server.max_connections));
    assert!((1..=MAX_KEY_BYTES as usize).contains(&c.server.max_key_bytes));
    assert!((1..=MAX_STATUS_RECORDS as usize).contains(&c.server.max_status_records));
    assert!(u64::from(c.routing.retry_attempts) <= MAX_RETRY_ATTEMPTS);
    for t in [
        c.health.healthy_threshold,
        c.health.unhealthy_threshold,
        c.health.passive_failures,
    ] {
        assert!((1..=MAX_THRESHOLD).contains(&u64::from(t)));
    }
    assert!(u64::from(c.failover.max_failovers) <= MAX_FAILOVERS);
    assert!((1..=MAX_QUEUED).contains(&c.queue.max_messages));
    assert!((1..=MAX_ATTEMPTS).contains(&u64::from(c.queue.max_attempts)));
    assert!(c.queue.backoff_initial <= c.queue.backoff_max);
    assert!(c.alerts.queue_warning <= MAX_QUEUED);
    let share = c.alerts.imbalance_warning;
    assert!(share > 0.0 && share <= 1.0, "{share}");
    assert!(!c.masters.is_empty() && c.masters.len() <= MAX_MASTERS);
    for m in &c.masters {
        assert!(m.weight.is_finite() && m.weight > 0.0 && m.weight <= MAX_WEIGHT);
        assert!((1..=MAX_PRIORITY).contains(&m.priority));
        assert!(m.region.len() <= MAX_REGION_BYTES);
        assert!(m.headers.len() <= MAX_HEADERS);
    }
}

/// Compiles `doc`: an accepted config lies inside the bounds; every error has a
/// message and a path the document has (or the schema requires), or none. Returns
/// whether it was accepted.
fn compile(doc: &Value) -> Result<bool, TestCaseError> {
    // Some generated values have no TOML form (a key TOML cannot write).
    let Ok(text) = toml::to_string(doc) else {
        return Ok(false);
    };
    match Config::from_toml(&text) {
        Ok(config) => {
            within_bounds(&config);
            Ok(true)
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty());
            let allowed = allowed(doc);
            for e in &errors.0 {
                prop_assert!(
                    e.path.is_empty() || allowed.contains(&e.path),
                    "error path {:?} ({}) not in the document:\n{}",
                    e.path,
                    e.message,
                    text
                );
                prop_assert!(!e.message.is_empty());
            }
            Ok(false)
        }
    }
}

proptest! {
    #[test]
    fn documents_from_the_real_keys(doc in document(false)) {
        compile(&doc)?;
    }

    #[test]
    fn documents_with_accepted_values(doc in document(true)) {
        let accepted = compile(&doc)?;
        // Only backoff_max_ms below backoff_initial_ms can make it fail.
        let q = doc.get("queue");
        let ms = |k: &str| q.and_then(|q| q.get(k)).and_then(Value::as_integer);
        let backoff_ok = ms("backoff_max_ms").unwrap_or(300_000) >= ms("backoff_initial_ms").unwrap_or(1_000);
        prop_assert_eq!(accepted, backoff_ok, "{}", toml::to_string(&doc).unwrap_or_default());
    }

    #[test]
    fn arbitrary_text(text in prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"'.,a-z0-9_$ \\n\\t:/#-]{0,300}",
    ]) {
        // Never panics; any error is reported.
        if let Err(errors) = Config::from_toml(&text) {
            prop_assert!(!errors.0.is_empty());
        }
    }
}

/// Inputs a generator rarely makes: deep nesting, long runs of quotes, huge keys,
/// many tables.
#[test]
fn hand_made_documents() {
    let master = "[[masters]]\nid = \"a\"\nsend_url = \"http://h/s\"\n";
    let deep =
        |open: &str, close: &str, n: usize| format!("x = {}1{}\n", open.repeat(n), close.repeat(n));
    let headers: Vec<String> = (0..10_000).map(|i| format!("h{i} = \"v\"")).collect();
    let cases = [
        deep("[", "]", 100_000),
        deep("{ a = ", " }", 100_000),
        format!("[{}b]\n", "a.".repeat(50_000)),
        format!("{master}region = '''{}'''\n", "\"".repeat(100_000)),
        format!("{master}region = \"{}\"\n", "\\\"".repeat(100_000)),
        format!("{master}region = \"{}\"\n", "\\u00e9".repeat(100_000)),
        format!("{}{master}", "[server]\n".repeat(2)),
        format!("{master}[masters.headers]\n"),
        format!("\"{}\" = 1\n{master}", "k".repeat(1_000_000)),
        master.repeat(2000),
        format!("{master}headers = {{ {} }}\n", headers.join(", ")),
        "\u{feff}[server]\n".to_string(),
        "\0".to_string(),
        String::new(),
    ];
    for text in &cases {
        // Never panics (nor overflows the stack); every error has a message.
        if let Err(errors) = Config::from_toml(text) {
            assert!(errors.0.iter().all(|e| !e.message.is_empty()));
        }
    }
}
