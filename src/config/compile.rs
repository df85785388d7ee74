//! Stage two: raw values to a checked [`Config`], collecting every error with its path.

use super::bounds::*;
use super::raw::{RawClient, RawConfig, RawMaster};
use super::*;
use serde::Deserialize;
use std::collections::HashSet;

mod ban;
mod cluster;
mod tls;

/// Parses TOML text into a [`Config`]: syntax, `${NAME}` interpolation, unknown keys,
/// types, then every semantic check. All errors found are returned together.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    from_value(syntax(text, "")?, lookup)
}

/// TOML text to a tree, or its syntax error with the line (`what` names the text in
/// the message when there are two, as for a pushed config: `"pushed config: "`).
pub fn syntax(text: &str, what: &str) -> Result<toml::Value, ConfigErrors> {
    toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("invalid TOML: {}", e.message().trim()),
        )
        .with_span(text, e.span())
        .prefixed(what)])
    })
}

/// A parsed TOML tree to a [`Config`]: `${NAME}` interpolation, unknown keys, types,
/// then every semantic check, all errors together.
pub fn from_value(
    mut value: toml::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    env::interpolate(&mut value, "", lookup, &mut errors);

    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let raw = {
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        RawConfig::deserialize(serde_ignored::Deserializer::new(de, &mut on_unknown))
    };
    for path in unknown {
        errors.push(ConfigError::new(path, "unknown key"));
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            errors.push(ConfigError::new(path, e.to_string()));
            return Err(ConfigErrors(errors));
        }
    };
    match compile(raw) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

impl ConfigError {
    fn with_span(mut self, text: &str, span: Option<std::ops::Range<usize>>) -> Self {
        if let Some(span) = span {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            self.message = format!("line {line}: {}", self.message);
        }
        self
    }

    fn prefixed(mut self, what: &str) -> Self {
        if !what.is_empty() {
            self.message = format!("{what}{}", self.message);
        }
        self
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Checks raw values and builds a [`Config`], or returns every problem found.
pub fn compile(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();

    let listen = errs.addr("server.listen", &raw.server.listen);
    let admin_listen = errs.addr("server.admin_listen", &raw.server.admin_listen);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        if a == b && a.port() != 0 {
            errs.push("server.admin_listen", "must differ from server.listen");
        }
    }
    let sv = &raw.server;
    errs.within(
        "server.max_body_bytes",
        sv.max_body_bytes,
        1,
        MAX_BODY_BYTES,
    );
    errs.duration("server.request_timeout_ms", sv.request_timeout_ms, 1);
    errs.duration("server.read_timeout_ms", sv.read_timeout_ms, 1);
    errs.duration("server.idle_timeout_ms", sv.idle_timeout_ms, 1);
    errs.within(
        "server.max_connections",
        sv.max_connections,
        1,
        MAX_CONNECTIONS,
    );
    errs.within("server.max_key_bytes", sv.max_key_bytes, 1, MAX_KEY_BYTES);
    errs.length("server.admin_token", &sv.admin_token, MAX_TOKEN_BYTES);
    errs.within(
        "server.max_status_records",
        sv.max_status_records,
        1,
        MAX_STATUS_RECORDS,
    );
    let tls = tls::listener(&mut errs, "server.", &sv.tls_cert, &sv.tls_key);
    let admin_tls = tls::listener(
        &mut errs,
        "server.admin_",
        &sv.admin_tls_cert,
        &sv.admin_tls_key,
    );

    let strategy = match raw.routing.strategy.as_str() {
        "round_robin" => Some(StrategyKind::RoundRobin),
        "weighted_priority" => Some(StrategyKind::WeightedPriority),
        "least_loaded" => Some(StrategyKind::LeastLoaded),
        "region" => Some(StrategyKind::Region),
        other => errs.fail(
            "routing.strategy",
            format!(
                "unknown strategy `{}`: expected round_robin, weighted_priority, least_loaded or region",
                shown(other)
            ),
        ),
    };
    let region_header = errs.header_name("routing.region_header", &raw.routing.region_header);
    let key_header = errs.header_name("routing.key_header", &raw.routing.key_header);
    let region_field = errs.pointer("routing.region_field", &raw.routing.region_field);
    let key_field = errs.pointer("routing.key_field", &raw.routing.key_field);
    let recipient_header =
        errs.header_name("routing.recipient_header", &raw.routing.recipient_header);
    let recipient_field = errs.pointer("routing.recipient_field", &raw.routing.recipient_field);
    errs.duration(
        "routing.sticky_max_wait_ms",
        raw.routing.sticky_max_wait_ms,
        0,
    );
    errs.within(
        "routing.retry_attempts",
        raw.routing.retry_attempts.into(),
        0,
        MAX_RETRY_ATTEMPTS,
    );
    let forward_headers = forward_headers(&raw.routing.forward_headers, &mut errs);

    let h = &raw.health;
    errs.duration("health.interval_ms", h.interval_ms, 1);
    errs.duration("health.timeout_ms", h.timeout_ms, 1);
    errs.within(
        "health.healthy_threshold",
        h.healthy_threshold.into(),
        1,
        MAX_THRESHOLD,
    );
    errs.within(
        "health.unhealthy_threshold",
        h.unhealthy_threshold.into(),
        1,
        MAX_THRESHOLD,
    );
    errs.within(
        "health.passive_failures",
        h.passive_failures.into(),
        1,
        MAX_THRESHOLD,
    );
    let bans = ban::rules(&mut errs, &h.ban_statuses, &h.ban_patterns);

    let f = &raw.failover;
    let failback = match f.failback.as_str() {
        "auto" => Some(Failback::Auto),
        "manual" => Some(Failback::Manual),
        other => errs.fail(
            "failover.failback",
            format!("unknown value `{}`: expected auto or manual", shown(other)),
        ),
    };
    errs.duration("failover.recovery_wait_ms", f.recovery_wait_ms, 0);
    errs.duration("failover.failback_delay_ms", f.failback_delay_ms, 0);
    errs.duration("failover.slow_start_ms", f.slow_start_ms, 0);
    errs.within(
        "failover.max_failovers",
        f.max_failovers.into(),
        0,
        MAX_FAILOVERS,
    );
    errs.duration("failover.breaker_window_ms", f.breaker_window_ms, 1);

    let q = &raw.queue;
    let when_unavailable = match q.when_unavailable.as_str() {
        "queue" => Some(WhenUnavailable::Queue),
        "reject" => Some(WhenUnavailable::Reject),
        other => errs.fail(
            "queue.when_unavailable",
            format!("unknown value `{}`: expected queue or reject", shown(other)),
        ),
    };
    if q.path.trim().is_empty() {
        errs.push("queue.path", "must not be empty");
    } else if q.path.contains('\0') {
        errs.push("queue.path", "must not contain a NUL character");
    } else {
        errs.length("queue.path", &q.path, MAX_PATH_BYTES);
    }
    errs.within("queue.max_messages", q.max_messages, 1, MAX_QUEUED);
    errs.within("queue.max_attempts", q.max_attempts.into(), 1, MAX_ATTEMPTS);
    errs.duration("queue.backoff_initial_ms", q.backoff_initial_ms, 1);
    errs.duration("queue.backoff_max_ms", q.backoff_max_ms, 1);
    errs.duration("queue.ttl_ms", q.ttl_ms, 1);
    errs.duration("queue.idempotency_window_ms", q.idempotency_window_ms, 1);
    if q.backoff_max_ms < q.backoff_initial_ms {
        errs.push(
            "queue.backoff_max_ms",
            "must be at least queue.backoff_initial_ms",
        );
    }

    let a = &raw.alerts;
    let webhook_url = if a.webhook_url.is_empty() {
        None
    } else {
        errs.http_url("alerts.webhook_url", &a.webhook_url)
    };
    if let Some(u) = &webhook_url {
        tls::endpoint(&mut errs, "alerts.webhook_url", u, None);
    }
    errs.within("alerts.queue_warning", a.queue_warning, 0, MAX_QUEUED);
    if !(a.imbalance_warning > 0.0 && a.imbalance_warning <= 1.0) {
        errs.push(
            "alerts.imbalance_warning",
            "must be a share greater than 0 and at most 1",
        );
    }

    let log = match raw.log.format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => errs.fail(
            "log.format",
            format!("unknown format `{}`: expected text or json", shown(other)),
        ),
    };

    let clients = compile_clients(&raw.clients, &mut errs);
    let cluster = cluster::compile(&raw.cluster, &mut errs);
    let masters = compile_masters(&raw.masters, &mut errs);

    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    // Every Option below is Some: a None always pushed an error above.
    let (Some(recipient_header), Some(recipient_field)) = (recipient_header, recipient_field)
    else {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "internal: missing value",
        )]));
    };
    let (Some(listen), Some(admin_listen), Some(strategy), Some(region_header), Some(key_header)) =
        (listen, admin_listen, strategy, region_header, key_header)
    else {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "internal: missing value",
        )]));
    };
    let (
        Some(region_field),
        Some(key_field),
        Some(failback),
        Some(when_unavailable),
        Some(log),
        Some(tls),
        Some(admin_tls),
    ) = (
        region_field,
        key_field,
        failback,
        when_unavailable,
        log,
        tls,
        admin_tls,
    )
    else {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "internal: missing value",
        )]));
    };
    Ok(Config {
        server: ServerConfig {
            listen,
            admin_listen,
            admin_token: raw.server.admin_token,
            max_body_bytes: raw.server.max_body_bytes as usize,
            request_timeout: ms(raw.server.request_timeout_ms),
            read_timeout: ms(raw.server.read_timeout_ms),
            idle_timeout: ms(raw.server.idle_timeout_ms),
            max_connections: raw.server.max_connections as usize,
            max_key_bytes: raw.server.max_key_bytes as usize,
            tls,
            admin_tls,
            max_status_records: raw.server.max_status_records as usize,
        },
        routing: RoutingConfig {
            strategy,
            region_header,
            key_header,
            region_field,
            key_field,
            retry_attempts: raw.routing.retry_attempts,
            forward_headers,
            sticky: raw.routing.sticky,
            recipient_header,
            recipient_field,
            sticky_max_wait: ms(raw.routing.sticky_max_wait_ms),
        },
        health: HealthConfig {
            interval: ms(h.interval_ms),
            timeout: ms(h.timeout_ms),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            passive_failures: h.passive_failures,
            bans,
        },
        failover: FailoverConfig {
            enabled: f.enabled,
            recovery_wait: ms(f.recovery_wait_ms),
            failback,
            failback_delay: ms(f.failback_delay_ms),
            slow_start: ms(f.slow_start_ms),
            max_failovers: f.max_failovers,
            breaker_window: ms(f.breaker_window_ms),
        },
        queue: QueueConfig {
            enabled: q.enabled,
            path: PathBuf::from(&q.path),
            when_unavailable,
            max_messages: q.max_messages,
            max_attempts: q.max_attempts,
            backoff_initial: ms(q.backoff_initial_ms),
            backoff_max: ms(q.backoff_max_ms),
            ttl: ms(q.ttl_ms),
            idempotency_window: ms(q.idempotency_window_ms),
        },
        alerts: AlertsConfig {
            webhook_url,
            queue_warning: a.queue_warning,
            imbalance_warning: a.imbalance_warning,
        },
        log,
        access_log: raw.log.access,
        clients: Arc::new(clients),
        masters,
        cluster,
    })
}

/// `[[clients]]`: ids match the pattern and are unique; keys are set, fit a header,
/// are bounded and unique (one key naming two clients could not tell them apart).
fn compile_clients(raw: &[RawClient], errs: &mut Errors) -> crate::clients::Clients {
    use crate::clients::{valid_id, valid_key, MAX_CLIENTS, MAX_CLIENT_KEY_BYTES};
    if raw.len() > MAX_CLIENTS {
        errs.push(
            "clients",
            format!("at most {MAX_CLIENTS} [[clients]] entries are allowed"),
        );
    }
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let path = |key: &str| format!("clients[{i}].{key}");
        let id = match c.id.as_deref() {
            None => errs.fail(&path("id"), "is required"),
            Some(id) if !valid_id(id) => errs.fail(
                &path("id"),
                format!(
                    "`{}` is not a client id: 1 to 64 of A-Z a-z 0-9 _ . - (and not `anonymous`)",
                    shown(id)
                ),
            ),
            Some(id) if !ids.insert(id) => {
                errs.fail(&path("id"), format!("duplicate client id `{id}`"))
            }
            Some(id) => Some(id),
        };
        // Never quoted: it is a secret.
        let key = match c.key.as_deref() {
            None | Some("") => errs.fail(&path("key"), "is required and may not be empty"),
            Some(k) if k.len() > MAX_CLIENT_KEY_BYTES => errs.fail(
                &path("key"),
                format!("is {} bytes long: at most {MAX_CLIENT_KEY_BYTES}", k.len()),
            ),
            Some(k) if !valid_key(k) => errs.fail(
                &path("key"),
                "must be visible ASCII without spaces, to fit a header",
            ),
            Some(k) if !keys.insert(k) => errs.fail(
                &path("key"),
                "is the key of another client: each client needs its own",
            ),
            Some(k) => Some(k),
        };
        if let (Some(id), Some(key)) = (id, key) {
            out.push((id.to_string(), key.to_string()));
        }
    }
    crate::clients::Clients::new(out)
}

fn compile_masters(raw: &[RawMaster], errs: &mut Errors) -> Vec<Arc<MasterConfig>> {
    if raw.is_empty() {
        errs.push("masters", "at least one [[masters]] entry is required");
    } else if raw.len() > MAX_MASTERS {
        errs.push(
            "masters",
            format!("at most {MAX_MASTERS} [[masters]] entries are allowed"),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let at = |key: &str| format!("masters[{i}].{key}");
        let id = match &m.id {
            None => errs.fail(&at("id"), "is required"),
            Some(id) if !valid_id(id) => errs.fail(
                &at("id"),
                format!(
                    "`{}` is not a valid id: use 1 to 64 of A-Z a-z 0-9 _ . -",
                    shown(id)
                ),
            ),
            Some(id) if !seen.insert(id.clone()) => {
                errs.fail(&at("id"), format!("duplicate master id `{id}`"))
            }
            Some(id) => Some(id.clone()),
        };
        let send_url = match &m.send_url {
            None => errs.fail(&at("send_url"), "is required"),
            Some(u) => errs.http_url(&at("send_url"), u),
        };
        let health_url = if m.health_url.is_empty() {
            Some(None)
        } else {
            errs.http_url(&at("health_url"), &m.health_url).map(Some)
        };
        let role = match m.role.as_str() {
            "primary" => Some(Role::Primary),
            "secondary" => Some(Role::Secondary),
            "standby" => Some(Role::Standby),
            other => errs.fail(
                &at("role"),
                format!(
                    "unknown role `{}`: expected primary, secondary or standby",
                    shown(other)
                ),
            ),
        };
        if !(m.weight.is_finite() && m.weight > 0.0 && m.weight <= MAX_WEIGHT) {
            errs.push(
                &at("weight"),
                format!("must be a positive number up to {MAX_WEIGHT}"),
            );
        }
        if !(1..=MAX_PRIORITY).contains(&m.priority) {
            errs.push(
                &at("priority"),
                format!("must be between 1 and {MAX_PRIORITY} (1 is the most preferred)"),
            );
        }
        errs.length(&at("region"), &m.region, MAX_REGION_BYTES);
        if !(m.rate_per_sec.is_finite()
            && m.rate_per_sec >= 0.0
            && m.rate_per_sec <= MAX_RATE_PER_SEC)
        {
            errs.push(
                &at("rate_per_sec"),
                format!("must be a number from 0 (no limit) up to {MAX_RATE_PER_SEC}"),
            );
        }
        errs.within(&at("burst"), m.burst, 1, MAX_BURST);
        errs.within(&at("daily_limit"), m.daily_limit, 0, MAX_DAILY_LIMIT);
        errs.duration(&at("warmup_ms"), m.warmup_ms, 0);
        if m.headers.len() > MAX_HEADERS {
            errs.push(
                &at("headers"),
                format!("at most {MAX_HEADERS} headers are allowed"),
            );
        }
        let mut headers = Vec::with_capacity(m.headers.len().min(MAX_HEADERS));
        for (name, value) in &m.headers {
            let path = format!("masters[{i}].headers.{name}");
            let Some(name) = errs.header_name(&path, name) else {
                continue;
            };
            if OWN_TO_MASTERS.contains(&name.as_str())
                || crate::util::HOP_BY_HOP.contains(&name.as_str())
            {
                errs.push(
                    &path,
                    format!("`{name}` is hop-by-hop or set by switchyard for each message: it cannot be configured"),
                );
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((name, v));
                }
                Err(_) => errs.push(&path, "is not a valid header value"),
            }
        }
        let trust = tls::trust(errs, &at("tls_ca"), &m.tls_ca);
        let https = |u: &Option<Uri>| u.as_ref().is_some_and(|u| u.scheme_str() == Some("https"));
        if !m.tls_ca.is_empty() && !https(&send_url) && !health_url.as_ref().is_some_and(https) {
            errs.push(
                &at("tls_ca"),
                "is set but neither send_url nor health_url is https",
            );
        }
        let ca = trust.as_ref().and_then(Option::as_ref);
        let send = match (&send_url, &trust) {
            (Some(u), Some(_)) => tls::endpoint(errs, &at("send_url"), u, ca),
            _ => None,
        };
        let health = match (&health_url, &trust) {
            (Some(Some(u)), Some(_)) => tls::endpoint(errs, &at("health_url"), u, ca).map(Some),
            (Some(None), _) => Some(None),
            _ => None,
        };
        // A valid id is visible ASCII, so it is always a valid header value.
        let id_header = id.as_deref().and_then(|id| HeaderValue::from_str(id).ok());
        if let (
            Some(id),
            Some(id_header),
            Some(send_url),
            Some(send),
            Some(health_url),
            Some(health),
            Some(role),
        ) = (id, id_header, send_url, send, health_url, health, role)
        {
            out.push(Arc::new(MasterConfig {
                id: id.into(),
                id_header,
                send_url,
                send,
                health_url,
                health,
                tls_ca: m.tls_ca.clone(),
                role,
                weight: m.weight,
                priority: m.priority,
                region: m.region.clone(),
                region_key: m.region.to_ascii_lowercase(),
                headers,
                rate_per_sec: m.rate_per_sec,
                burst: m.burst.clamp(1, MAX_BURST) as u32,
                daily_limit: m.daily_limit,
                warmup: Duration::from_millis(m.warmup_ms),
            }));
        }
    }
    if !raw.is_empty() && raw.iter().all(|m| m.role == "standby") {
        errs.push(
            "masters",
            "at least one master must be primary or secondary (standbys only take over)",
        );
    }
    out
}

/// Headers of a request to a master that switchyard writes for each message, so a
/// master's `headers` may not name them (nor any hop-by-hop one): the body's framing,
/// and the message's own idempotency key.
const OWN_TO_MASTERS: [&str; 3] = ["content-length", "expect", "idempotency-key"];

/// Headers a client may not have forwarded besides the hop-by-hop ones
/// ([`crate::util::HOP_BY_HOP`]): those switchyard writes itself on the way to a
/// master, and a client's own credentials.
const NOT_FORWARDED: [&str; 8] = [
    "expect",
    "host",
    "content-length",
    "content-type",
    "idempotency-key",
    "authorization",
    "proxy-authorization",
    "x-api-key",
];

/// `routing.forward_headers`: valid names, none hop-by-hop, of [`NOT_FORWARDED`] or
/// `x-switchyard-*`, no repeats, at most [`MAX_FORWARD_HEADERS`].
fn forward_headers(raw: &[String], errs: &mut Errors) -> Vec<HeaderName> {
    if raw.len() > MAX_FORWARD_HEADERS {
        errs.push(
            "routing.forward_headers",
            format!("at most {MAX_FORWARD_HEADERS} names are allowed"),
        );
    }
    let mut out: Vec<HeaderName> = Vec::with_capacity(raw.len().min(MAX_FORWARD_HEADERS));
    for (i, name) in raw.iter().enumerate() {
        let path = format!("routing.forward_headers[{i}]");
        let Some(name) = errs.header_name(&path, name) else {
            continue;
        };
        let n = name.as_str();
        if crate::util::HOP_BY_HOP.contains(&n)
            || NOT_FORWARDED.contains(&n)
            || n.starts_with("x-switchyard-")
        {
            errs.push(
                &path,
                format!("`{name}` is hop-by-hop, a credential or set by switchyard itself: it cannot be forwarded"),
            );
        } else if out.contains(&name) {
            errs.push(&path, format!("`{name}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}

pub(super) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Collects errors; the helpers return `None` after recording a failure.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    fn fail<T>(&mut self, path: &str, message: impl Into<String>) -> Option<T> {
        self.push(path, message);
        None
    }

    /// `v` must lie in `min..=max`.
    fn within(&mut self, path: &str, v: u64, min: u64, max: u64) {
        if v < min || v > max {
            self.push(
                path,
                format!("{v} is out of range: must be between {min} and {max}"),
            );
        }
    }

    /// A `*_ms` key: at least `min`, at most 7 days.
    fn duration(&mut self, path: &str, v: u64, min: u64) {
        if v < min {
            self.push(path, format!("must be at least {min}"));
        } else if v > MAX_DURATION_MS {
            self.push(
                path,
                format!("{v} is out of range: at most {MAX_DURATION_MS} (7 days)"),
            );
        }
    }

    fn length(&mut self, path: &str, v: &str, max: usize) {
        if v.len() > max {
            self.push(path, format!("is {} bytes long: at most {max}", v.len()));
        }
    }

    fn addr(&mut self, path: &str, v: &str) -> Option<SocketAddr> {
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => self.fail(
                path,
                format!("`{}` is not a socket address like 127.0.0.1:8080", shown(v)),
            ),
        }
    }

    fn header_name(&mut self, path: &str, v: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(v.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => self.fail(
                path,
                format!("`{}` is not a valid HTTP header name", shown(v)),
            ),
        }
    }

    /// `Some(None)` for an empty value, `Some(Some(p))` for a JSON pointer.
    fn pointer(&mut self, path: &str, v: &str) -> Option<Option<String>> {
        if v.is_empty() {
            Some(None)
        } else if v.starts_with('/') {
            Some(Some(v.to_string()))
        } else {
            self.fail(
                path,
                format!(
                    "`{}` is not a JSON pointer: it must start with `/`, as in \"/to\"",
                    shown(v)
                ),
            )
        }
    }

    fn http_url(&mut self, path: &str, v: &str) -> Option<Uri> {
        if v.len() > MAX_URL_BYTES {
            return self.fail(
                path,
                format!("is {} bytes long: at most {MAX_URL_BYTES}", v.len()),
            );
        }
        let parsed = match url::Url::parse(v) {
            Ok(u) => u,
            Err(e) => return self.fail(path, format!("`{}` is not a valid URL: {e}", shown(v))),
        };
        match parsed.scheme() {
            "http" | "https" => {}
            other => {
                return self.fail(
                    path,
                    format!("scheme `{other}` is not supported: use http or https"),
                )
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return self.fail(path, format!("`{}` has no host", shown(v)));
        }
        match parsed.as_str().parse::<Uri>() {
            Ok(u) => Some(u),
            Err(e) => self.fail(path, format!("`{}` is not a valid URI: {e}", shown(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, &|name| {
            (name == "LINDA_TOKEN").then(|| "tok".to_string())
        })
    }

    fn paths(text: &str) -> Vec<String> {
        parse_with(text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    const MINIMAL: &str = r#"
[[masters]]
id = "a"
send_url = "http://127.0.0.1:9001/send"
"#;

    #[test]
    fn minimal_file_gets_every_default() {
        let c = parse_with(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.server.max_body_bytes, 262_144);
        assert_eq!(c.server.request_timeout, Duration::from_secs(10));
        assert_eq!(c.routing.strategy, StrategyKind::RoundRobin);
        assert_eq!(c.routing.retry_attempts, 2);
        assert_eq!(c.routing.region_header.as_str(), "x-region");
        assert_eq!(
            c.routing.forward_headers,
            ["traceparent", "tracestate", "x-request-id"]
        );
        assert_eq!(c.health.unhealthy_threshold, 3);
        assert_eq!(c.failover.failback, Failback::Auto);
        assert_eq!(c.queue.when_unavailable, WhenUnavailable::Queue);
        assert_eq!(c.queue.max_attempts, 10);
        assert_eq!(c.alerts.imbalance_warning, 0.8);
        let m = &c.masters[0];
        assert_eq!((m.role, m.weight, m.priority), (Role::Primary, 1.0, 1));
    }

    #[test]
    fn collects_every_error_with_its_path() {
        let text = r#"
[server]
listen = "nowhere"
max_body_bytes = 0
[routing]
strategy = "random"
region_field = "region"
[queue]
when_unavailable = "drop"
[[masters]]
id = "a"
send_url = "ftp://x/send"
weight = 0
[[masters]]
id = "a"
send_url = "not a url"
role = "boss"
priority = 0
bogus = 1
"#;
        let p = paths(text);
        for want in [
            "server.listen",
            "server.max_body_bytes",
            "routing.strategy",
            "routing.region_field",
            "queue.when_unavailable",
            "masters[0].send_url",
            "masters[0].weight",
            "masters[1].id",
            "masters[1].send_url",
            "masters[1].role",
            "masters[1].priority",
            "masters[1].bogus",
        ] {
            assert!(p.iter().any(|x| x == want), "missing {want} in {p:?}");
        }
    }

    #[test]
    fn unknown_keys_and_missing_masters() {
        let p = paths("[server]\nlisten_addr = \"x\"\n[nope]\n");
        assert!(p.contains(&"server.listen_addr".to_string()), "{p:?}");
        assert!(p.contains(&"nope".to_string()), "{p:?}");
        assert!(p.contains(&"masters".to_string()), "{p:?}");
    }

    #[test]
    fn clients_need_valid_unique_ids_and_keys() {
        let ok = parse_with(&format!(
            "[[clients]]\nid = \"billing\"\nkey = \"${{LINDA_TOKEN}}\"\n[[clients]]\nid = \"crm.eu-1\"\nkey = \"k2\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(ok.clients.identify(b"tok").as_deref(), Some("billing"));
        assert_eq!(ok.clients.identify(b"k2").as_deref(), Some("crm.eu-1"));
        assert!(parse_with(MINIMAL).unwrap().clients.is_open());
        assert!(format!("{:?}", ok.clients).contains("billing"));
        assert!(!format!("{ok:?}").contains("k2"), "keys never in Debug");

        let long = "k".repeat(257);
        let text = format!(
            r#"
[[clients]]
id = "a b"
key = "k1"
[[clients]]
key = "k2"
[[clients]]
id = "x"
key = ""
[[clients]]
id = "x"
key = "k1"
[[clients]]
id = "y"
key = "{long}"
[[clients]]
id = "anonymous"
key = "has space"
[[clients]]
id = "z"
key = "${{NOT_SET}}"
{MINIMAL}"#
        );
        assert_eq!(
            paths(&text),
            vec![
                "clients[6].key",
                "clients[0].id",
                "clients[1].id",
                "clients[2].key",
                "clients[3].id",
                "clients[3].key",
                "clients[4].key",
                "clients[5].id",
                "clients[5].key",
            ]
        );
        let e = parse_with(&text).unwrap_err().to_string();
        assert!(!e.contains(&long), "a key is never quoted: {e}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(parse_with(MINIMAL).unwrap().log, LogFormat::Text);
        let json = parse_with(&format!("[log]\nformat = \"json\"\n{MINIMAL}")).unwrap();
        assert_eq!(json.log, LogFormat::Json);
        assert_eq!(
            paths(&format!("[log]\nformat = \"xml\"\n{MINIMAL}")),
            vec!["log.format"]
        );
    }

    #[test]
    fn forward_headers_are_checked_one_by_one() {
        let with = |list: &str| format!("[routing]\nforward_headers = [{list}]\n{MINIMAL}");
        let c = parse_with(&with("\"X-B3-TraceId\", \"baggage\"")).unwrap();
        assert_eq!(c.routing.forward_headers, ["x-b3-traceid", "baggage"]);
        assert!(parse_with(&with(""))
            .unwrap()
            .routing
            .forward_headers
            .is_empty());
        let list = "\"traceparent\", \"bad name\", \"Host\", \"content-length\", \
                    \"idempotency-key\", \"transfer-encoding\", \"connection\", \
                    \"authorization\", \"x-switchyard-master\", \"TRACEPARENT\"";
        let p = paths(&with(list));
        let want: Vec<String> = (1..10)
            .map(|i| format!("routing.forward_headers[{i}]"))
            .collect();
        assert_eq!(p, want);
        let many: Vec<String> = (0..=MAX_FORWARD_HEADERS)
            .map(|i| format!("\"x-h{i}\""))
            .collect();
        assert_eq!(paths(&with(&many.join(", "))), ["routing.forward_headers"]);
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = parse_with("[server]\nmax_body_bytes = \"big\"\n").unwrap_err();
        assert_eq!(e.0[0].path, "server.max_body_bytes", "{e}");
    }

    #[test]
    fn env_interpolation() {
        let text =
            format!("{MINIMAL}headers = {{ authorization = \"Bearer ${{LINDA_TOKEN}}\" }}\n");
        let c = parse_with(&text).unwrap();
        assert_eq!(c.masters[0].headers[0].1.to_str().unwrap(), "Bearer tok");
        assert!(format!("{:?}", c.masters[0]).contains("authorization"));
        assert!(!format!("{:?}", c.masters[0]).contains("tok\""));

        for name in [
            "content-length",
            "Transfer-Encoding",
            "connection",
            "idempotency-key",
        ] {
            let text = format!("{MINIMAL}headers = {{ {name} = \"x\" }}\n");
            let e = parse_with(&text).unwrap_err();
            assert_eq!(e.0[0].path, format!("masters[0].headers.{name}"), "{e}");
            assert!(e.0[0].message.contains("cannot be configured"), "{e}");
        }

        let text = format!("{MINIMAL}region = \"${{MISSING_VAR}}\"\n");
        let e = parse_with(&text).unwrap_err();
        assert_eq!(e.0[0].path, "masters[0].region");
        assert!(e.0[0].message.contains("MISSING_VAR"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse_with("[server\n").unwrap_err();
        assert!(e.0[0].message.contains("line 1"), "{e}");
    }

    #[test]
    fn endpoint_is_derived_with_the_default_port() {
        let text = MINIMAL.replace(
            "http://127.0.0.1:9001/send",
            "http://sms.example/v2/send?x=1",
        );
        let m = &parse_with(&text).unwrap().masters[0];
        assert_eq!(m.send.authority, "sms.example:80");
        assert_eq!(m.send.host, "sms.example");
        assert_eq!(m.send.path, "/v2/send?x=1");
        let m = &parse_with(MINIMAL).unwrap().masters[0];
        assert_eq!(
            (m.send.authority.as_str(), m.send.host.to_str().unwrap()),
            ("127.0.0.1:9001", "127.0.0.1:9001")
        );
        assert_eq!(m.id_header, "a");
    }

    #[test]
    fn decimal_weights_and_only_standbys() {
        let c = parse_with(&format!("{MINIMAL}weight = 0.5\n")).unwrap();
        assert_eq!(c.masters[0].weight, 0.5);
        let p = paths(&format!("{MINIMAL}role = \"standby\"\n"));
        assert_eq!(p, vec!["masters".to_string()]);
    }
}
