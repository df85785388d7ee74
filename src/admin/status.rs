//! Bodies of `GET /health` and `GET /ha/status`.

use crate::config::Role;
use crate::control::failover::View;
use crate::control::Control;
use crate::reply;
use crate::server::Body;
use http::{Response, StatusCode};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    masters_total: usize,
    masters_eligible: usize,
    queue_depth: u64,
    /// `ok`, `failed` (it cannot write: unhealthy), or `off` (`queue.enabled = false`).
    queue: &'static str,
    config_version: u64,
    last_reload_error: Option<String>,
}

/// Whether the queue can write, as `/health` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueHealth {
    Ok,
    /// It cannot write: reopening after a failed write, or its writer is gone.
    Failed,
    Off,
}

impl QueueHealth {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Off => "off",
        }
    }
}

/// `GET /health`: unhealthy (503) when no master is eligible or the queue cannot write.
pub fn health(control: &Control, queue_depth: u64, queue: QueueHealth) -> Response<Body> {
    let table = control.table();
    let eligible = table.eligible_count();
    // Masters expected to carry traffic: primaries, secondaries and promoted standbys.
    let expected = table
        .masters
        .iter()
        .filter(|m| m.config.role != Role::Standby || m.promoted)
        .count();
    let unhealthy = eligible == 0 || queue == QueueHealth::Failed;
    let status = match eligible {
        _ if unhealthy => "unhealthy",
        n if n >= expected => "healthy",
        _ => "degraded",
    };
    let body = Health {
        status,
        masters_total: table.masters.len(),
        masters_eligible: eligible,
        queue_depth,
        queue: queue.as_str(),
        config_version: table.config_version,
        last_reload_error: control.last_reload_error().map(|e| e.to_string()),
    };
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    reply::json(code, &body)
}

#[derive(Debug, Serialize)]
struct HaStatus {
    strategy: &'static str,
    routing_table_version: u64,
    config_version: u64,
    failover_paused: bool,
    breaker_open: bool,
    masters: Vec<MasterStatus>,
}

#[derive(Debug, Serialize)]
struct MasterStatus {
    id: String,
    role: &'static str,
    region: String,
    weight: f64,
    priority: u32,
    state: &'static str,
    admin: &'static str,
    enabled: bool,
    eligible: bool,
    promoted: bool,
    /// Failed over: out of rotation until failback, whatever its health.
    held: bool,
    /// The standby serving in its place while `held`.
    held_for: Option<String>,
    /// The share of its weight it takes now, below 1 during a slow start (after a
    /// recovery or a failback).
    slow_start: f64,
    in_flight: u64,
    queued: u64,
    sent_total: u64,
    failed_total: u64,
    latency_ms: f64,
    /// Share of the requests of the last 10 s (or since start, when sooner).
    share: f64,
    uptime_ratio: f64,
    mean_time_to_recovery_ms: Option<u64>,
    last_error: Option<String>,
    /// Why it is suspended (SPEC section 10), while it is.
    suspended_reason: Option<String>,
    /// Its pace; 0 = no limit (SPEC section 10).
    rate_per_sec: f64,
    /// Messages it could take at once now; `None` without any limit.
    budget_available: Option<u64>,
    /// Messages sent to it over the last 24 hours (restarts included).
    sent_24h: u64,
    /// 0 = no limit.
    daily_limit: u64,
}

pub fn ha_status(control: &Control, view: &View) -> Response<Body> {
    let table = control.table();
    let masters = table
        .masters
        .iter()
        .map(|m| {
            let seen = view.masters.get(m.id()).cloned().unwrap_or_default();
            MasterStatus {
                id: m.id().to_string(),
                role: m.config.role.as_str(),
                region: m.config.region.clone(),
                weight: m.config.weight,
                priority: m.config.priority,
                state: m.health.as_str(),
                admin: m.admin_shown(),
                enabled: m.admin == crate::routing::AdminState::Enabled,
                eligible: m.eligible,
                promoted: m.promoted,
                held: m.held,
                held_for: view.backup_of(m.id()),
                slow_start: (m.effective_weight / m.config.weight).clamp(0.0, 1.0),
                in_flight: m.stats.load.in_flight.load(Relaxed),
                queued: m.stats.load.queued.load(Relaxed),
                sent_total: m.stats.sent_total.load(Relaxed),
                failed_total: m.stats.failed_total.load(Relaxed),
                latency_ms: m.stats.latency_us() as f64 / 1000.0,
                share: seen.share,
                uptime_ratio: seen.uptime_ratio,
                mean_time_to_recovery_ms: seen.mean_time_to_recovery_ms,
                last_error: m.stats.last_error().map(|e| e.to_string()),
                suspended_reason: seen.suspended_reason,
                rate_per_sec: m.config.rate_per_sec,
                budget_available: m.limited.then(|| {
                    let now = crate::routing::budget::now_ns();
                    m.stats.budget_available(now, m.config.warmup)
                }),
                sent_24h: m.stats.daily.sent_24h(crate::util::unix_ms()),
                daily_limit: m.config.daily_limit,
            }
        })
        .collect();
    reply::json(
        StatusCode::OK,
        &HaStatus {
            strategy: table.config.routing.strategy.as_str(),
            routing_table_version: table.version,
            config_version: table.config_version,
            failover_paused: view.failover_paused,
            breaker_open: view.breaker_open,
            masters,
        },
    )
}

pub fn failover(view: &View) -> Response<Body> {
    reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "active": view.active,
            "last_failover_at": view.last_failover_at,
            "failovers_total": view.failovers_total,
            "failover_paused": view.failover_paused,
            "breaker_open": view.breaker_open,
        }),
    )
}
