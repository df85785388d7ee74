//! The admin listener (SPEC section 5): health, metrics, HA status and master control,
//! config reload and push, and the API reference (`/openapi.json`). With `admin_token` set,
//! every route but `/health`, `/livez`, `/metrics` and `/openapi.json` needs
//! `Authorization: Bearer <token>`, compared in constant time.
//!
//! May call: `control`, `routing`, `telemetry`, `reply`.

mod cluster_admin;
mod config_push;
pub use config_push::MAX_CONFIG_BYTES;
mod status;

use crate::audit::NewEvent;
use crate::control::failover::{self, Command};
use crate::control::{reload, AdminError, Control};
use crate::queue::store::State;
use crate::reply;
use crate::routing::AdminState;
use crate::server::{Body, PeerAddr};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The OpenAPI 3.1 document of both listeners, served at `GET /openapi.json`;
/// `tests/openapi.rs` checks it against the running server.
const OPENAPI: &str = include_str!("openapi.json");

#[derive(Debug)]
pub struct Admin {
    pub control: Arc<Control>,
    pub failover: failover::Handle,
    pub queue: Option<Arc<crate::queue::Queue>>,
    pub metrics: &'static PrometheusHandle,
    /// Set in cluster mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Cluster mode: admin actions are written to the shared document, and answered
    /// once they are in force on this node.
    pub shared: Option<Arc<crate::cluster::shared::Shared>>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/health" => {
                return only(&method, "GET", || {
                    status::health(&self.control, self.queue_depth(), self.queue_health())
                })
            }
            // Liveness: the process answers. Unlike /health, it stays 200 while every
            // master is down and messages wait in the queue, which is switchyard doing
            // its job, not a reason to restart it.
            "/livez" => {
                return only(&method, "GET", || {
                    reply::json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
                })
            }
            // The API reference of both listeners, open like /health: it holds no state.
            "/openapi.json" => {
                return only(&method, "GET", || {
                    reply::text(StatusCode::OK, "application/json", OPENAPI)
                })
            }
            "/metrics" => {
                return only(&method, "GET", || {
                    let table = self.control.table();
                    reply::text(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        crate::telemetry::render(self.metrics, &table, &self.mirrored()),
                    )
                })
            }
            _ => {}
        }
        if let Some(denied) = self.authorize(&req) {
            return denied;
        }
        // A leaving peer's queued messages (cluster mode): the only route with a body.
        if path == crate::cluster::handoff::PATH {
            return self.handoff(req).await;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let caller = req.extensions().get::<PeerAddr>().map(|p| p.0.to_string());
        let action = action(&segments);
        let resp = match segments.as_slice() {
            // The only route that reads a request body.
            ["admin", "config"] => self.push_config(req).await,
            _ => self.route(&method, &segments, req.uri().query()).await,
        };
        if let Some((name, master)) = action {
            // Every call of a mutating route that reached it (not a 405) is audited,
            // refused or not.
            if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
                let status = resp.status();
                let route: String = format!("{method} {path}").chars().take(256).collect();
                let mut event =
                    NewEvent::admin_action(route, caller, format!("{name}: answered {status}"));
                if let Some(id) = master.filter(|id| self.control.table().index_of(id).is_some()) {
                    event = event.master(id);
                }
                self.control.audit.record(event);
                // On disk before the answer, like the state change itself.
                let audit = self.control.audit.clone();
                match tokio::task::spawn_blocking(move || audit.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit trail"),
                    Err(e) => tracing::error!(error = %e, "the audit flush failed"),
                }
            }
        }
        resp
    }

    async fn route(
        &self,
        method: &Method,
        segments: &[&str],
        query: Option<&str>,
    ) -> Response<Body> {
        match segments {
            ["ha", "status"] => only(method, "GET", || {
                status::ha_status(&self.control, &self.failover.view())
            }),
            ["ha", "failover"] => only(method, "GET", || status::failover(&self.failover.view())),
            ["ha", "events"] => only(method, "GET", || self.events(query)),
            ["ha", "pause"] => self.command(method, Command::Pause).await,
            ["ha", "resume"] => self.command(method, Command::Resume).await,
            ["ha", "masters", id, "failover"] => {
                self.command(method, Command::Failover(id.to_string()))
                    .await
            }
            ["ha", "masters", id, "failback"] => {
                self.command(method, Command::Failback(id.to_string()))
                    .await
            }
            ["ha", "masters", id, "reinstate"] => {
                self.command(method, Command::Reinstate(id.to_string()))
                    .await
            }
            ["ha", "masters", id, action] => {
                let admin = match *action {
                    "enable" => AdminState::Enabled,
                    "disable" => AdminState::Disabled,
                    "drain" => AdminState::Draining,
                    _ => return reply::not_found(),
                };
                match refuse(method, "POST") {
                    Some(refused) => refused,
                    None if self.shared.is_some() => self.set_admin_shared(id, admin).await,
                    None => self.set_admin(id, admin),
                }
            }
            ["cluster", "status"] => only(method, "GET", || self.cluster_status()),
            ["cluster", "leader", "resign"] => match refuse(method, "POST") {
                Some(refused) => refused,
                None => self.resign().await,
            },
            ["admin", "reload"] => only(method, "POST", || self.reload()),
            ["admin", "queue"] => only(method, "GET", || self.queue_status()),
            ["admin", "dead-letters"] => only(method, "GET", || self.dead_letters(query)),
            ["admin", "dead-letters", id, "retry"] => match refuse(method, "POST") {
                Some(refused) => refused,
                None => self.retry_dead(id).await,
            },
            ["admin", "dead-letters", id] => match refuse(method, "DELETE") {
                Some(refused) => refused,
                None => self.delete_dead(id).await,
            },
            _ => reply::not_found(),
        }
    }

    /// `POST /cluster/handoff` (see `crate::cluster::handoff`).
    async fn handoff(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(refused) = refuse(req.method(), "POST") {
            return refused;
        }
        let Some(cluster) = &self.cluster else {
            return cluster_disabled();
        };
        let server = self.control.table().config.server.clone();
        crate::cluster::handoff::receive(cluster, self.queue.as_ref(), req, &server).await
    }

    /// `GET /cluster/status`.
    fn cluster_status(&self) -> Response<Body> {
        match &self.cluster {
            Some(cluster) => reply::json(StatusCode::OK, &*cluster.view()),
            None => cluster_disabled(),
        }
    }

    /// `POST /cluster/leader/resign`: answers once the next leader is known (or a
    /// lease TTL later), with the cluster as it is then.
    async fn resign(&self) -> Response<Body> {
        use crate::cluster::agent::ResignError;
        let Some(cluster) = &self.cluster else {
            return cluster_disabled();
        };
        match cluster.resign().await {
            Ok(view) => reply::json(StatusCode::OK, &*view),
            Err(ResignError::NotLeader { leader }) => {
                let admin = leader.as_ref().and_then(|l| {
                    cluster
                        .view()
                        .nodes
                        .iter()
                        .find(|n| &n.id == l)
                        .map(|n| n.admin.clone())
                });
                let mut resp = reply::error(
                    StatusCode::CONFLICT,
                    "not_leader",
                    match (&leader, &admin) {
                        (Some(l), Some(a)) => {
                            format!("this node is not the leader: {l} is; ask it at {a}")
                        }
                        (Some(l), None) => format!("this node is not the leader: {l} is; ask it"),
                        _ => "this node is not the leader, and there is none now".into(),
                    },
                );
                if let Some(v) = admin.and_then(|a| HeaderValue::from_str(&a).ok()) {
                    resp.headers_mut().insert("x-switchyard-leader", v);
                }
                resp
            }
            Err(ResignError::Isolated) => reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_isolated",
                "this node cannot reach etcd, so it cannot hand leadership on",
            ),
        }
    }

    fn queue_depth(&self) -> u64 {
        self.queue.as_ref().map_or(0, |q| q.depth())
    }

    /// What `/metrics` mirrors besides the table. A store that cannot be read now
    /// leaves the oldest age at 0 (its failure shows in `/health` and the alerts).
    fn mirrored(&self) -> crate::telemetry::Mirrored {
        let view = self.failover.view();
        let queue = self.queue.as_ref();
        crate::telemetry::Mirrored {
            queue_depth: self.queue_depth(),
            dead_letters: queue.map_or(0, |q| q.dead_letters()),
            oldest_queued_ms: queue
                .and_then(|q| q.oldest_age_ms().ok().flatten())
                .unwrap_or(0),
            failover_paused: view.failover_paused,
            breaker_open: view.breaker_open,
        }
    }

    fn queue_health(&self) -> status::QueueHealth {
        match self.queue.as_ref().map(|q| q.state()) {
            None => status::QueueHealth::Off,
            Some(State::Open) => status::QueueHealth::Ok,
            Some(State::Reopening | State::Stopped) => status::QueueHealth::Failed,
        }
    }

    /// `None` when the request may go on.
    fn authorize(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let token = &self.control.table().config.server.admin_token;
        if token.is_empty() {
            return None;
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return None;
        }
        let mut resp = reply::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs Authorization: Bearer <admin_token>",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(resp)
    }

    async fn command(&self, method: &Method, command: Command) -> Response<Body> {
        if let Some(refused) = refuse(method, "POST") {
            return refused;
        }
        if let Some(shared) = &self.shared {
            return cluster_admin::command(shared, &self.failover, command).await;
        }
        match self.failover.command(command).await {
            Ok(body) => reply::json(StatusCode::OK, &body),
            Err((status, code, message)) => reply::error(status, code, message),
        }
    }

    /// `GET /ha/events?limit=N`: newest first.
    fn events(&self, query: Option<&str>) -> Response<Body> {
        let limit = match limit(query) {
            Ok(n) => n,
            Err(resp) => return *resp,
        };
        let events = self.control.audit.recent(limit);
        reply::json(StatusCode::OK, &serde_json::json!({ "events": events }))
    }

    /// `GET /admin/queue`. Messages are not assigned to a master until they leave the
    /// queue, so the per-master figure counts deliveries under way.
    fn queue_status(&self) -> Response<Body> {
        let Some(queue) = self.queue.as_deref() else {
            return queue_disabled();
        };
        let oldest = match queue.oldest_age_ms() {
            Ok(age) => age,
            Err(e) => return reply::queue_storage(&e),
        };
        let table = self.control.table();
        let per_master: serde_json::Map<String, serde_json::Value> = table
            .masters
            .iter()
            .map(|m| {
                let queued = m
                    .stats
                    .load
                    .queued
                    .load(std::sync::atomic::Ordering::Relaxed);
                (m.id().to_string(), queued.into())
            })
            .collect();
        reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "depth": queue.depth(),
                "oldest_age_ms": oldest,
                "per_master": per_master,
                "dead_letters": queue.dead_letters(),
                // Delivered or failed messages whose outcome is not on disk yet: still
                // counted in `depth`, held (never delivered again) until it is.
                "pending_outcomes": queue.kept_outcomes(),
            }),
        )
    }

    /// `GET /admin/dead-letters?limit=N`: oldest first.
    fn dead_letters(&self, query: Option<&str>) -> Response<Body> {
        let Some(queue) = self.queue.as_deref() else {
            return queue_disabled();
        };
        let limit = match limit(query) {
            Ok(n) => n,
            Err(resp) => return *resp,
        };
        match queue.list_dead(limit) {
            Ok(list) => {
                let list: Vec<_> = list.iter().map(|r| r.dead_letter_json()).collect();
                reply::json(
                    StatusCode::OK,
                    &serde_json::json!({"total": queue.dead_letters(), "dead_letters": list}),
                )
            }
            Err(e) => reply::queue_storage(&e),
        }
    }

    async fn retry_dead(&self, id: &str) -> Response<Body> {
        let Some(queue) = self.queue.as_ref() else {
            return queue_disabled();
        };
        let Ok(uuid) = uuid::Uuid::parse_str(id) else {
            return not_dead(id);
        };
        match queue.retry_dead(&uuid).await {
            Ok(true) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "status": "queued"}),
            ),
            Ok(false) => not_dead(id),
            Err(crate::queue::QueueError::Full(max)) => reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("the queue holds its maximum of {max} messages"),
            ),
            Err(crate::queue::QueueError::Store(e)) => reply::queue_storage(&e),
        }
    }

    async fn delete_dead(&self, id: &str) -> Response<Body> {
        let Some(queue) = self.queue.as_ref() else {
            return queue_disabled();
        };
        let Ok(uuid) = uuid::Uuid::parse_str(id) else {
            return not_dead(id);
        };
        match queue.delete_dead(&uuid).await {
            Ok(true) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "deleted": true}),
            ),
            Ok(false) => not_dead(id),
            Err(e) => reply::queue_storage(&e),
        }
    }

    /// Cluster mode: enable, disable, drain on every node.
    async fn set_admin_shared(&self, id: &str, admin: AdminState) -> Response<Body> {
        let Some(shared) = &self.shared else {
            return self.set_admin(id, admin);
        };
        if self.control.table().index_of(id).is_none() {
            return reply::error(
                StatusCode::NOT_FOUND,
                "unknown_master",
                format!("no master with id `{id}`"),
            );
        }
        let change = crate::cluster::shared::Mutation::Admin {
            id: id.to_string(),
            admin: admin.as_str().to_string(),
        };
        match cluster_admin::write(shared, &change).await {
            Ok(()) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "admin": admin.as_str(), "enabled": admin == AdminState::Enabled}),
            ),
            Err(resp) => *resp,
        }
    }

    fn set_admin(&self, id: &str, admin: AdminState) -> Response<Body> {
        match self.control.set_admin(id, admin) {
            Ok(()) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "admin": admin.as_str(), "enabled": admin == AdminState::Enabled}),
            ),
            Err(e @ AdminError::Unknown(_)) => {
                reply::error(StatusCode::NOT_FOUND, "unknown_master", e.to_string())
            }
            Err(e @ AdminError::NotSaved(_)) => {
                tracing::error!(error = %e, "cannot save the operator state");
                reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "state_not_saved",
                    e.to_string(),
                )
            }
        }
    }

    fn reload(&self) -> Response<Body> {
        match reload::reload(&self.control, "admin_api") {
            Ok(version) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"config_version": version}),
            ),
            Err(errors) => reply::invalid_config("was rejected", &errors),
        }
    }
}

/// The name of the mutating admin route `segments` is, with the master it names;
/// `None` for a read-only or unknown route.
fn action<'a>(segments: &[&'a str]) -> Option<(&'static str, Option<&'a str>)> {
    Some(match segments {
        ["ha", "pause"] => ("pause", None),
        ["ha", "resume"] => ("resume", None),
        ["ha", "masters", id, action] => {
            let name = match *action {
                "failover" => "failover",
                "failback" => "failback",
                "reinstate" => "reinstate",
                "enable" => "enable",
                "disable" => "disable",
                "drain" => "drain",
                _ => return None,
            };
            (name, Some(*id))
        }
        ["admin", "reload"] => ("reload", None),
        ["admin", "config"] => ("config push", None),
        ["cluster", "leader", "resign"] => ("leader resign", None),
        ["admin", "dead-letters", _, "retry"] => ("dead-letter retry", None),
        ["admin", "dead-letters", _] => ("dead-letter delete", None),
        _ => return None,
    })
}

fn cluster_disabled() -> Response<Body> {
    reply::error(
        StatusCode::NOT_FOUND,
        "cluster_disabled",
        "this node runs alone: cluster mode is off ([cluster] enabled = false)",
    )
}

/// The `limit` query parameter: 100 when absent, from 1 to 10,000.
fn limit(query: Option<&str>) -> Result<usize, Box<Response<Body>>> {
    let mut limit = 100;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == "limit" {
            match value.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => limit = n,
                _ => {
                    return Err(Box::new(reply::error(
                        StatusCode::BAD_REQUEST,
                        "bad_limit",
                        "limit must be a whole number from 1 to 10000",
                    )))
                }
            }
        }
    }
    Ok(limit)
}

fn not_dead(id: &str) -> Response<Body> {
    reply::error(
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
        format!("no dead letter with id `{id}`"),
    )
}

fn queue_disabled() -> Response<Body> {
    reply::error(
        StatusCode::NOT_FOUND,
        "queue_disabled",
        "the queue is off (queue.enabled = false)",
    )
}

/// The 405 answer when `method` is not `allowed` (HEAD passes for GET); `None` when
/// the request may go on.
fn refuse(method: &Method, allowed: &'static str) -> Option<Response<Body>> {
    let ok = method.as_str() == allowed || (allowed == "GET" && *method == Method::HEAD);
    (!ok).then(|| reply::method_not_allowed(allowed))
}

fn only(
    method: &Method,
    allowed: &'static str,
    f: impl FnOnce() -> Response<Body>,
) -> Response<Body> {
    refuse(method, allowed).unwrap_or_else(f)
}

#[cfg(test)]
mod tests {
    use super::action;

    #[test]
    fn every_mutating_route_is_an_action_and_no_read_is() {
        let of = |path: &str| {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            action(&segments).map(|(name, master)| (name, master.map(str::to_string)))
        };
        for (path, name, master) in [
            ("/ha/pause", "pause", None),
            ("/ha/resume", "resume", None),
            ("/ha/masters/a/disable", "disable", Some("a")),
            ("/ha/masters/a/enable", "enable", Some("a")),
            ("/ha/masters/a/drain", "drain", Some("a")),
            ("/ha/masters/a/failover", "failover", Some("a")),
            ("/ha/masters/a/failback", "failback", Some("a")),
            ("/ha/masters/a/reinstate", "reinstate", Some("a")),
            ("/admin/reload", "reload", None),
            ("/admin/config", "config push", None),
            ("/admin/dead-letters/x/retry", "dead-letter retry", None),
            ("/admin/dead-letters/x", "dead-letter delete", None),
        ] {
            assert_eq!(of(path), Some((name, master.map(String::from))), "{path}");
        }
        for path in [
            "/ha/status",
            "/ha/failover",
            "/ha/events",
            "/admin/queue",
            "/admin/dead-letters",
            "/ha/masters/a/other",
        ] {
            assert_eq!(of(path), None, "{path}");
        }
    }
}
