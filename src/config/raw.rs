//! Raw serde types: the TOML file exactly as written, with every default of SPEC section 2.
//!
//! Nothing here is validated beyond types; `compile` turns these into a checked
//! [`Config`](super::Config). Unknown keys are collected by the loader, not rejected by
//! serde one at a time, so `switchyard check` can report all of them.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub routing: RawRouting,
    pub health: RawHealth,
    pub failover: RawFailover,
    pub queue: RawQueue,
    pub alerts: RawAlerts,
    pub log: RawLog,
    pub cluster: RawCluster,
    pub clients: Vec<RawClient>,
    pub masters: Vec<RawMaster>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: String,
    pub admin_listen: String,
    pub admin_token: String,
    pub max_body_bytes: u64,
    pub request_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: u64,
    pub max_key_bytes: u64,
    pub tls_cert: String,
    pub tls_key: String,
    pub admin_tls_cert: String,
    pub admin_tls_key: String,
    pub max_status_records: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            admin_token: String::new(),
            max_body_bytes: 262_144,
            request_timeout_ms: 10_000,
            read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_key_bytes: 255,
            tls_cert: String::new(),
            tls_key: String::new(),
            admin_tls_cert: String::new(),
            admin_tls_key: String::new(),
            max_status_records: 500_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawRouting {
    pub strategy: String,
    pub region_header: String,
    pub key_header: String,
    pub region_field: String,
    pub key_field: String,
    pub retry_attempts: u32,
    pub forward_headers: Vec<String>,
    pub sticky: bool,
    pub recipient_header: String,
    pub recipient_field: String,
    pub sticky_max_wait_ms: u64,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            strategy: "round_robin".into(),
            region_header: "x-region".into(),
            key_header: "x-routing-key".into(),
            region_field: String::new(),
            key_field: String::new(),
            retry_attempts: 2,
            forward_headers: ["traceparent", "tracestate", "x-request-id"]
                .map(String::from)
                .into(),
            sticky: false,
            recipient_header: "x-recipient".into(),
            recipient_field: String::new(),
            sticky_max_wait_ms: 60_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawHealth {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub passive_failures: u32,
    /// Read wide so that an out-of-range number gets its key path, not a parse error.
    pub ban_statuses: Vec<i64>,
    pub ban_patterns: Vec<String>,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            timeout_ms: 1_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            passive_failures: 5,
            ban_statuses: Vec::new(),
            ban_patterns: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawFailover {
    pub enabled: bool,
    pub recovery_wait_ms: u64,
    pub failback: String,
    pub failback_delay_ms: u64,
    pub slow_start_ms: u64,
    pub max_failovers: u32,
    pub breaker_window_ms: u64,
}

impl Default for RawFailover {
    fn default() -> Self {
        Self {
            enabled: true,
            recovery_wait_ms: 30_000,
            failback: "auto".into(),
            failback_delay_ms: 60_000,
            slow_start_ms: 30_000,
            max_failovers: 5,
            breaker_window_ms: 1_800_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawQueue {
    pub enabled: bool,
    pub path: String,
    pub when_unavailable: String,
    pub max_messages: u64,
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub ttl_ms: u64,
    pub idempotency_window_ms: u64,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "data/queue".into(),
            when_unavailable: "queue".into(),
            max_messages: 10_000_000,
            max_attempts: 10,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            ttl_ms: 86_400_000,
            idempotency_window_ms: 86_400_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawAlerts {
    pub webhook_url: String,
    pub queue_warning: u64,
    pub imbalance_warning: f64,
}

impl Default for RawAlerts {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            queue_warning: 1_000,
            imbalance_warning: 0.8,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub format: String,
    pub access: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            access: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawCluster {
    pub enabled: bool,
    pub node_id: String,
    pub etcd: Vec<String>,
    pub prefix: String,
    pub priority: u64,
    pub lease_ttl_ms: u64,
    pub advertise_admin: String,
    pub handoff_timeout_ms: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: String::new(),
            etcd: vec!["http://127.0.0.1:2379".into()],
            prefix: "/switchyard/default".into(),
            priority: 100,
            lease_ttl_ms: 3_000,
            advertise_admin: String::new(),
            handoff_timeout_ms: 30_000,
        }
    }
}

/// One `[[clients]]` entry: an API key and the id it is known by.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawClient {
    pub id: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawMaster {
    pub id: Option<String>,
    pub send_url: Option<String>,
    pub health_url: String,
    pub role: String,
    pub weight: f64,
    pub priority: u32,
    pub region: String,
    pub headers: BTreeMap<String, String>,
    pub tls_ca: String,
    pub rate_per_sec: f64,
    pub burst: u64,
    pub daily_limit: u64,
    pub warmup_ms: u64,
}

impl Default for RawMaster {
    fn default() -> Self {
        Self {
            id: None,
            send_url: None,
            health_url: String::new(),
            role: "primary".into(),
            weight: 1.0,
            priority: 1,
            region: String::new(),
            headers: BTreeMap::new(),
            tls_ca: String::new(),
            rate_per_sec: 0.0,
            burst: 1,
            daily_limit: 0,
            warmup_ms: 0,
        }
    }
}
