//! Metrics (SPEC section 7), logging setup and the [`access`] log.
//!
//! Hot-path metrics are pre-registered handles kept in each master's stats, so a
//! request does no registry lookup. Gauges that mirror live state (in-flight, health,
//! table version) are set from the current snapshot when `/metrics` is scraped.
//! Labels are bounded: master ids come from the config, the rest from fixed sets.

pub mod access;
mod histogram;

use crate::health::HealthState;
use crate::routing::{RoutingTable, ADMIN_SHOWN};
use metrics::{describe_counter, describe_gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// How one exchange with a master ended; the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The master answered 2xx.
    Success,
    /// The master answered a final non-2xx status; it is passed to the client.
    Rejected,
    /// 429, 502, 503 or 504: tried elsewhere.
    RetryableStatus,
    Timeout,
    ConnectError,
    /// The connection broke before a response.
    IoError,
    /// This machine ran out of file descriptors, memory or ports: nothing was sent,
    /// and the master is not blamed.
    LocalError,
    /// The answer met the ban rules: the master is suspended, the message tried
    /// elsewhere.
    Banned,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Rejected,
        Outcome::RetryableStatus,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::IoError,
        Outcome::LocalError,
        Outcome::Banned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::RetryableStatus => "retryable_status",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::IoError => "io_error",
            Self::LocalError => "local_error",
            Self::Banned => "banned",
        }
    }
}

/// Pre-registered metric handles of one master. The `client` label of the requests
/// counter is bounded by the configured client ids (and `anonymous`): those of a
/// client are registered at its first request through this master.
#[derive(Debug)]
pub struct MasterMetrics {
    id: String,
    anonymous: [Counter; Outcome::ALL.len()],
    by_client: dashmap::DashMap<std::sync::Arc<str>, [Counter; Outcome::ALL.len()]>,
    pub duration: histogram::Histogram,
    /// Selections that passed this master over because its pace or daily cap had no
    /// budget left.
    pub budget_exhausted: Counter,
}

impl MasterMetrics {
    pub fn new(id: &str) -> Self {
        Self {
            budget_exhausted: metrics::counter!(
                "switchyard_master_budget_exhausted_total",
                "master" => id.to_string()
            ),
            id: id.to_string(),
            anonymous: Self::counters(id, &crate::clients::ANONYMOUS),
            by_client: dashmap::DashMap::new(),
            duration: histogram::Histogram::default(),
        }
    }

    fn counters(id: &str, client: &str) -> [Counter; Outcome::ALL.len()] {
        Outcome::ALL.map(|o| {
            metrics::counter!(
                "switchyard_requests_total",
                "master" => id.to_string(),
                "outcome" => o.as_str(),
                "client" => client.to_string()
            )
        })
    }

    /// Counts one exchange for `client` (empty: a message queued before clients were
    /// recorded, counted as anonymous).
    pub fn request(&self, outcome: Outcome, client: &std::sync::Arc<str>) {
        let i = outcome as usize;
        if client.is_empty() || **client == **crate::clients::ANONYMOUS {
            self.anonymous[i].increment(1);
            return;
        }
        if let Some(counters) = self.by_client.get(client) {
            counters[i].increment(1);
            return;
        }
        let counters = Self::counters(&self.id, client);
        counters[i].increment(1);
        self.by_client.insert(client.clone(), counters);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and describes every metric.
/// Later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Commit-to-applied times of cluster decisions, from a millisecond to seconds.
        let apply_buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("switchyard_cluster_apply_seconds".into()),
            &apply_buckets,
        ) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        "switchyard_sticky_moves_total",
        "Messages with a recipient sent to another master than the recipient's own \
         (its master failed the message, or had no budget within sticky_max_wait_ms)."
    );
    describe_counter!(
        "switchyard_master_budget_exhausted_total",
        "Times a master was passed over because its pace (rate_per_sec, burst) or its \
         daily_limit left it no budget at that moment."
    );
    describe_gauge!(
        "switchyard_master_sent_24h",
        "Messages sent to the master over the last 24 hours, as its daily_limit counts them."
    );
    describe_counter!(
        "switchyard_requests_total",
        "Exchanges with masters by outcome and by the client that sent the message."
    );
    describe_counter!(
        "switchyard_status_records_evicted_total",
        "Status records of messages answered at once dropped before their hour because \
         server.max_status_records was reached."
    );
    describe_gauge!(
        "switchyard_master_up",
        "1 when the master takes traffic now. A standby waiting to be promoted reads 0 \
         while healthy: alert on switchyard_master_state instead."
    );
    describe_gauge!(
        "switchyard_master_admin_state",
        "1 for the master's admin state (enabled, disabled, draining, or drained: \
         draining with nothing under way)."
    );
    describe_gauge!(
        "switchyard_queue_dead_letters",
        "Dead letters kept, waiting for an operator."
    );
    describe_gauge!(
        "switchyard_queue_oldest_age_seconds",
        "Age of the oldest queued message; 0 when the queue is empty."
    );
    describe_gauge!(
        "switchyard_failover_paused",
        "1 while automatic failover is paused (POST /ha/pause)."
    );
    describe_gauge!(
        "switchyard_breaker_open",
        "1 while the failover circuit breaker is open."
    );
    describe_gauge!(
        "switchyard_master_state",
        "1 for the master's current health state."
    );
    describe_gauge!(
        "switchyard_master_inflight",
        "Exchanges in progress with the master."
    );
    describe_gauge!(
        "switchyard_queue_depth",
        "Messages waiting in the persistent queue."
    );
    describe_counter!(
        "switchyard_queue_enqueued_total",
        "Messages written to the queue."
    );
    describe_counter!(
        "switchyard_queue_delivered_total",
        "Queued messages delivered."
    );
    describe_counter!(
        "switchyard_queue_dead_total",
        "Queued messages turned dead letters."
    );
    describe_counter!(
        "switchyard_failovers_total",
        "Failovers away from the master."
    );
    describe_counter!(
        "switchyard_health_checks_total",
        "Active health checks by result."
    );
    describe_counter!(
        "switchyard_config_reloads_total",
        "Config reload attempts by result."
    );
    describe_gauge!(
        "switchyard_routing_table_version",
        "Version of the routing table in use."
    );
    describe_counter!("switchyard_alerts_total", "Alerts raised by severity.");
    describe_gauge!(
        "switchyard_cluster_leader",
        "Cluster mode: 1 while this node leads, else 0."
    );
    describe_gauge!(
        "switchyard_cluster_term",
        "Cluster mode: the latest leadership term this node has seen."
    );
    describe_gauge!(
        "switchyard_cluster_nodes",
        "Cluster mode: nodes by state, as this node sees them."
    );
    metrics::describe_histogram!(
        "switchyard_cluster_apply_seconds",
        metrics::Unit::Seconds,
        "Cluster mode: from a shared change's commit to its application on this node."
    );
    describe_counter!(
        "switchyard_cluster_etcd_errors_total",
        "Cluster mode: calls to etcd that failed."
    );
    describe_counter!(
        "switchyard_panics_total",
        "Panics caught in any thread or task; each was logged."
    );
    for name in [
        "switchyard_panics_total",
        "switchyard_queue_enqueued_total",
        "switchyard_queue_delivered_total",
        "switchyard_queue_dead_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for severity in ["critical", "warning", "info"] {
        metrics::counter!("switchyard_alerts_total", "severity" => severity).absolute(0);
    }
    for result in ["success", "error"] {
        metrics::counter!("switchyard_config_reloads_total", "result" => result).absolute(0);
    }
}

pub fn config_reload(ok: bool) {
    let result = if ok { "success" } else { "error" };
    metrics::counter!("switchyard_config_reloads_total", "result" => result).increment(1);
}

/// Live figures `/metrics` mirrors besides the routing table, read when it is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mirrored {
    pub queue_depth: u64,
    pub dead_letters: u64,
    pub oldest_queued_ms: u64,
    pub failover_paused: bool,
    pub breaker_open: bool,
}

/// Renders the Prometheus text, first setting the gauges that mirror `table` and `now`.
pub fn render(handle: &PrometheusHandle, table: &RoutingTable, now: &Mirrored) -> String {
    for m in &table.masters {
        let id = m.id().to_string();
        metrics::gauge!("switchyard_master_up", "master" => id.clone())
            .set(f64::from(u8::from(m.eligible)));
        // Every exchange under way: forwarded, and queued messages being delivered.
        metrics::gauge!("switchyard_master_inflight", "master" => id.clone())
            .set(m.stats.load.total() as f64);
        for state in HealthState::ALL {
            metrics::gauge!("switchyard_master_state", "master" => id.clone(), "state" => state.as_str())
                .set(f64::from(u8::from(m.health == state)));
        }
        let admin = m.admin_shown();
        for shown in ADMIN_SHOWN {
            metrics::gauge!("switchyard_master_admin_state", "master" => id.clone(), "state" => shown)
                .set(f64::from(u8::from(admin == shown)));
        }
        metrics::counter!("switchyard_failovers_total", "master" => id.clone()).increment(0);
        let sent = m.stats.daily.sent_24h(crate::util::unix_ms());
        metrics::gauge!("switchyard_master_sent_24h", "master" => id.clone()).set(sent as f64);
        m.stats.metrics.budget_exhausted.increment(0);
    }
    metrics::gauge!("switchyard_queue_depth").set(now.queue_depth as f64);
    metrics::gauge!("switchyard_queue_dead_letters").set(now.dead_letters as f64);
    metrics::gauge!("switchyard_queue_oldest_age_seconds")
        .set(now.oldest_queued_ms as f64 / 1000.0);
    metrics::gauge!("switchyard_failover_paused").set(f64::from(u8::from(now.failover_paused)));
    metrics::gauge!("switchyard_breaker_open").set(f64::from(u8::from(now.breaker_open)));
    metrics::gauge!("switchyard_routing_table_version").set(table.version as f64);
    handle.run_upkeep();
    let mut out = handle.render();
    const NAME: &str = "switchyard_request_duration_seconds";
    out.push_str(&format!(
        "# HELP {NAME} Duration of one exchange with a master.\n# TYPE {NAME} histogram\n"
    ));
    for m in &table.masters {
        let labels = format!("master=\"{}\"", m.id());
        m.stats.metrics.duration.render(&mut out, NAME, &labels);
    }
    out
}

/// Counts a message sent away from its recipient's own master.
pub fn sticky_move() {
    metrics::counter!("switchyard_sticky_moves_total").increment(1);
}

/// Logs every panic, wherever it happens, at error with its thread and place, and
/// counts it in `switchyard_panics_total`. What the panic ends (a request, a batch) is
/// for the code that catches it to answer for; the hook only makes it visible.
pub fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            metrics::counter!("switchyard_panics_total").increment(1);
            let thread = std::thread::current();
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                place,
                "panic: {what}"
            );
        }));
    });
}

/// Targets of the queue's storage engine: it logs every table it writes at info and
/// its recovery at debug, so it stays at warnings unless `RUST_LOG` names it.
const STORAGE_TARGETS: [&str; 2] = ["fjall", "lsm_tree"];

/// Logs to stderr, as `format` says. `RUST_LOG` sets the levels (default `info`); the
/// storage engine stays at `warn` unless `RUST_LOG` names it. Text is coloured only
/// when stderr is a terminal and `NO_COLOR` is unset or empty.
pub fn init_logging(format: crate::config::LogFormat) {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(None)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ignored_when_already_set = match format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.with_ansi(colour_allowed()).try_init(),
    };
}

/// `RUST_LOG` (or `info`), with the storage engine at `warn` unless it names it.
fn log_filter(rust_log: Option<&str>) -> String {
    let mut filter = match rust_log.map(str::trim) {
        Some(levels) if !levels.is_empty() => levels.to_string(),
        _ => "info".to_string(),
    };
    for target in STORAGE_TARGETS {
        if !filter.contains(target) {
            filter.push_str(&format!(",{target}=warn"));
        }
    }
    filter
}

fn colour_allowed() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_storage_engine_stays_at_warn_unless_named() {
        assert_eq!(log_filter(None), "info,fjall=warn,lsm_tree=warn");
        assert_eq!(log_filter(Some(" ")), "info,fjall=warn,lsm_tree=warn");
        assert_eq!(log_filter(Some("debug")), "debug,fjall=warn,lsm_tree=warn");
        assert_eq!(
            log_filter(Some("debug,fjall=trace")),
            "debug,fjall=trace,lsm_tree=warn"
        );
    }
}
