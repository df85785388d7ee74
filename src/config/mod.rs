//! Configuration: the TOML file of SPEC section 2, in two stages.
//!
//! [`raw`] holds serde types with every default; [`compile`] checks them and builds the
//! typed [`Config`] the rest of the program uses, collecting *every* error with its key
//! path. Nothing outside this module sees raw values. Reloading lives in
//! `crate::control::reload`; this module only parses and validates.

pub mod ban;
pub mod bounds;
mod compile;
mod env;
pub mod raw;
pub mod shared;

pub use compile::compile;

use crate::tls::connect::{TlsTarget, Trust};
use crate::tls::listen::Acceptor;
use http::{HeaderName, HeaderValue, Uri};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One problem in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path such as `masters[1].weight`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the errors of one file, as `check` and `/admin/reload` report them.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    WeightedPriority,
    LeastLoaded,
    Region,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedPriority => "weighted_priority",
            Self::LeastLoaded => "least_loaded",
            Self::Region => "region",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::Standby => "standby",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    Auto,
    Manual,
}

/// `[log] format`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnavailable {
    Queue,
    Reject,
}

/// A validated configuration. Cheap to share: the routing table holds it in an `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub routing: RoutingConfig,
    pub health: HealthConfig,
    pub failover: FailoverConfig,
    pub queue: QueueConfig,
    pub alerts: AlertsConfig,
    pub log: LogFormat,
    /// `log.access`: one access log line per message outcome.
    pub access_log: bool,
    /// `[[clients]]`: none means `/v1/*` is open.
    pub clients: Arc<crate::clients::Clients>,
    pub masters: Vec<Arc<MasterConfig>>,
    /// `[cluster]` when `enabled`: this node is one of several (SPEC section 11).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`, read once at start: a node joins one cluster for its whole life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique in the cluster; the host name when the file leaves it empty.
    pub node_id: String,
    /// `http://host:port` endpoints of one etcd cluster.
    pub etcd: Vec<String>,
    /// Every key of this switchyard cluster lives under it (no trailing `/`).
    pub prefix: String,
    pub priority: u32,
    /// How long a node that stops renewing stays a member (etcd counts whole seconds,
    /// so it is rounded up to one).
    pub lease_ttl: Duration,
    /// How peers reach this node's admin API (`host:port`); `None`: the address the
    /// admin listener is bound to.
    pub advertise_admin: Option<String>,
    /// How long a node stopped with SIGTERM hands its queued messages to its peers at
    /// most before it exits (`crate::cluster::handoff`); zero hands nothing over.
    pub handoff_timeout: Duration,
}

#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Empty when the admin API is open.
    pub admin_token: String,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// The whole request, head and body, must arrive within this (else 408).
    pub read_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Client connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The longest `Idempotency-Key`, routing key or region accepted, in bytes.
    pub max_key_bytes: usize,
    /// `tls_cert` and `tls_key`, loaded: the client listener speaks HTTPS.
    pub tls: Option<Acceptor>,
    /// `admin_tls_cert` and `admin_tls_key`, loaded.
    pub admin_tls: Option<Acceptor>,
    /// The most status records kept in memory for messages answered at once (see
    /// `crate::proxy::status`); read at each insert, so a reload applies it.
    pub max_status_records: usize,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("admin_token", &redacted(!self.admin_token.is_empty()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("tls", &self.tls.is_some())
            .field("admin_tls", &self.admin_tls.is_some())
            .field("max_status_records", &self.max_status_records)
            .finish()
    }
}

fn redacted(set: bool) -> &'static str {
    if set {
        "<redacted>"
    } else {
        "<none>"
    }
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub strategy: StrategyKind,
    pub region_header: HeaderName,
    pub key_header: HeaderName,
    /// JSON pointer into the body, read when the region header is absent.
    pub region_field: Option<String>,
    pub key_field: Option<String>,
    pub retry_attempts: u32,
    /// Client request headers passed on to masters with the message (lower-case,
    /// no duplicates, none that switchyard sets itself).
    pub forward_headers: Vec<HeaderName>,
    /// The same recipient goes to the same master while it is eligible (SPEC
    /// section 10).
    pub sticky: bool,
    pub recipient_header: HeaderName,
    /// JSON pointer into the body, read when the recipient header is absent.
    pub recipient_field: Option<String>,
    /// How long a message waits for its recipient's master to have budget.
    pub sticky_max_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub passive_failures: u32,
    /// `ban_statuses` and `ban_patterns` (SPEC section 10).
    pub bans: ban::BanRules,
}

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub enabled: bool,
    pub recovery_wait: Duration,
    pub failback: Failback,
    pub failback_delay: Duration,
    pub slow_start: Duration,
    pub max_failovers: u32,
    pub breaker_window: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub when_unavailable: WhenUnavailable,
    pub max_messages: u64,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub ttl: Duration,
    pub idempotency_window: Duration,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub webhook_url: Option<Uri>,
    pub queue_warning: u64,
    pub imbalance_warning: f64,
}

/// Where `send_url` points, in the forms the wire needs; derived once when the config
/// is compiled, not per request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` (port 80, or 443 for https, when the URL leaves it out): what is
    /// dialled.
    pub authority: String,
    /// The connection pool's key: scheme, `authority` and, for https, the trust, so
    /// a connection is never reused for plain HTTP or under other roots.
    pub key: String,
    /// For https: the roots the certificate is checked against and the name (SNI).
    pub tls: Option<TlsTarget>,
    /// The `Host` header value, as the URL writes it.
    pub host: HeaderValue,
    /// Origin form (path and query): the HTTP/1.1 request target.
    pub path: Uri,
}

impl Endpoint {
    /// A plain `http` endpoint; `None` for a URI without a host, which `compile` never
    /// lets through.
    pub fn of(uri: &Uri) -> Option<Endpoint> {
        Self::build(uri, None)
    }

    /// An endpoint for an `http` or `https` URI; https trusts `ca`, or the system
    /// roots without it.
    pub fn with_tls(uri: &Uri, ca: Option<&Trust>) -> Result<Endpoint, String> {
        let host = uri.host().ok_or("has no host")?;
        let tls = match uri.scheme_str() {
            Some("https") => {
                let trust = match ca {
                    Some(t) => t.clone(),
                    None => Trust::system()?,
                };
                Some(TlsTarget::new(trust, host)?)
            }
            _ => None,
        };
        Self::build(uri, tls).ok_or_else(|| "has no host".into())
    }

    fn build(uri: &Uri, tls: Option<TlsTarget>) -> Option<Endpoint> {
        let host = uri.host()?;
        let authority = uri.authority()?;
        let default_port = if tls.is_some() { 443 } else { 80 };
        let dialled = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
        let key = match &tls {
            None => format!("http://{dialled}"),
            Some(t) => format!("https://{dialled}#{}", t.trust.id()),
        };
        Some(Endpoint {
            authority: dialled,
            key,
            tls,
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            path: uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())),
        })
    }
}

/// One master account. `headers` may carry secrets: its `Debug` shows names only, and
/// every value is marked sensitive.
#[derive(Clone)]
pub struct MasterConfig {
    pub id: Arc<str>,
    /// `id` as a header value, for `x-switchyard-master`.
    pub id_header: HeaderValue,
    pub send_url: Uri,
    pub send: Endpoint,
    pub health_url: Option<Uri>,
    /// `health_url` in the forms the wire needs.
    pub health: Option<Endpoint>,
    /// `tls_ca` as written; empty for the system roots.
    pub tls_ca: String,
    pub role: Role,
    pub weight: f64,
    pub priority: u32,
    /// As written, for display.
    pub region: String,
    /// Lower-cased, for matching.
    pub region_key: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sustained messages per second; 0 = no limit (SPEC section 10).
    pub rate_per_sec: f64,
    /// Messages allowed at once above the pace (at least 1).
    pub burst: u32,
    /// Messages per rolling 24 hours; 0 = no limit.
    pub daily_limit: u64,
    /// After it is added, promoted or reinstated, its pace ramps up over this.
    pub warmup: Duration,
}

impl MasterConfig {
    /// Whether it has a pace or a daily cap: only then does selection check a budget.
    pub fn limited(&self) -> bool {
        self.rate_per_sec > 0.0 || self.daily_limit > 0
    }
}

impl fmt::Debug for MasterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("MasterConfig")
            .field("id", &self.id)
            .field("send_url", &self.send_url)
            .field("health_url", &self.health_url)
            .field("tls_ca", &self.tls_ca)
            .field("role", &self.role)
            .field("weight", &self.weight)
            .field("priority", &self.priority)
            .field("region", &self.region)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .field("daily_limit", &self.daily_limit)
            .field("warmup", &self.warmup)
            .field("header_names", &names)
            .finish()
    }
}

impl Config {
    /// Parses and validates TOML text, reading `${NAME}` from the process environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        compile::parse(text, &|name| std::env::var(name).ok())
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Self::from_toml(&text)
    }

    /// Where state lives on disk: the directory holding `queue.path` (`data` for the
    /// default `data/queue`); the audit trail is written there.
    pub fn data_dir(&self) -> PathBuf {
        match self.queue.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// What tells two loads apart: the file's `text` and the contents of the
    /// certificate, key and CA files it names (new files at the same paths are a change).
    pub fn digest(&self, text: &[u8]) -> u64 {
        let mut bytes = text.to_vec();
        let listeners = [&self.server.tls, &self.server.admin_tls];
        let listeners = listeners.into_iter().flatten().map(|a| a.digest.as_str());
        let masters = self.masters.iter().flat_map(|m| {
            let send = m.send.tls.as_ref().map(|t| t.trust.id());
            let health = m.health.as_ref().and_then(|h| h.tls.as_ref());
            send.into_iter().chain(health.map(|t| t.trust.id()))
        });
        for id in listeners.chain(masters) {
            bytes.push(0);
            bytes.extend_from_slice(id.as_bytes());
        }
        crate::control::content_hash(&bytes)
    }

    pub fn master(&self, id: &str) -> Option<&Arc<MasterConfig>> {
        self.masters.iter().find(|m| &*m.id == id)
    }
}
