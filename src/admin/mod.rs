//! The admin listener (SPEC section 5): health, metrics, HA status and master control,
//! config reload. With `admin_token` set, every route but `/health` and `/metrics`
//! needs `Authorization: Bearer <token>`, compared in constant time.
//!
//! May call: `control`, `routing`, `telemetry`, `reply`.

mod status;

use crate::control::failover::{self, Command};
use crate::control::{reload, Control};
use crate::reply;
use crate::routing::AdminState;
use crate::server::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use subtle::ConstantTimeEq;

#[derive(Debug)]
pub struct Admin {
    pub control: Arc<Control>,
    pub failover: failover::Handle,
    pub queue: Option<Arc<crate::queue::Queue>>,
    pub metrics: &'static PrometheusHandle,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/health" => {
                return only(&method, Method::GET, || {
                    status::health(&self.control, self.queue_depth())
                })
            }
            "/metrics" => {
                return only(&method, Method::GET, || {
                    let table = self.control.table();
                    reply::text(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        crate::telemetry::render(self.metrics, &table, self.queue_depth()),
                    )
                })
            }
            _ => {}
        }
        if let Some(denied) = self.authorize(&req) {
            return denied;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["ha", "status"] => only(&method, Method::GET, || {
                status::ha_status(&self.control, &self.failover.view())
            }),
            ["ha", "failover"] => only(&method, Method::GET, || {
                status::failover(&self.failover.view())
            }),
            ["ha", "events"] => only(&method, Method::GET, || self.events(req.uri().query())),
            ["ha", "pause"] => self.command(&method, Command::Pause).await,
            ["ha", "resume"] => self.command(&method, Command::Resume).await,
            ["ha", "masters", id, "failover"] => {
                self.command(&method, Command::Failover(id.to_string()))
                    .await
            }
            ["ha", "masters", id, "failback"] => {
                self.command(&method, Command::Failback(id.to_string()))
                    .await
            }
            ["ha", "masters", id, action] => {
                let admin = match *action {
                    "enable" => AdminState::Enabled,
                    "disable" => AdminState::Disabled,
                    "drain" => AdminState::Draining,
                    _ => return reply::not_found(),
                };
                only(&method, Method::POST, || self.set_admin(id, admin))
            }
            ["admin", "reload"] => only(&method, Method::POST, || self.reload()),
            _ => reply::not_found(),
        }
    }

    fn queue_depth(&self) -> u64 {
        self.queue.as_ref().map_or(0, |q| q.depth())
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
        if *method != Method::POST {
            return reply::method_not_allowed("POST");
        }
        match self.failover.command(command).await {
            Ok(body) => reply::json(StatusCode::OK, &body),
            Err((status, code, message)) => reply::error(status, code, message),
        }
    }

    /// `GET /ha/events?limit=N`: newest first; `limit` defaults to 100, at most 10,000.
    fn events(&self, query: Option<&str>) -> Response<Body> {
        let mut limit = 100;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key == "limit" {
                match value.parse::<usize>() {
                    Ok(n) if (1..=10_000).contains(&n) => limit = n,
                    _ => {
                        return reply::error(
                            StatusCode::BAD_REQUEST,
                            "bad_limit",
                            "limit must be a whole number from 1 to 10000",
                        )
                    }
                }
            }
        }
        let events = self.control.audit.recent(limit);
        reply::json(StatusCode::OK, &serde_json::json!({ "events": events }))
    }

    fn set_admin(&self, id: &str, admin: AdminState) -> Response<Body> {
        match self.control.set_admin(id, admin) {
            Ok(()) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "admin": admin.as_str(), "enabled": admin == AdminState::Enabled}),
            ),
            Err(e) => reply::error(StatusCode::NOT_FOUND, "unknown_master", e.to_string()),
        }
    }

    fn reload(&self) -> Response<Body> {
        match reload::reload(&self.control, "admin_api") {
            Ok(version) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"config_version": version}),
            ),
            Err(errors) => {
                let list: Vec<_> = errors
                    .0
                    .iter()
                    .map(|e| serde_json::json!({"path": e.path, "message": e.message}))
                    .collect();
                reply::json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": {
                        "code": "invalid_config",
                        "message": format!("the config was rejected; the running config is kept: {errors}"),
                        "errors": list,
                    }}),
                )
            }
        }
    }
}

fn only(method: &Method, allowed: Method, f: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
        f()
    } else if allowed == Method::GET {
        reply::method_not_allowed("GET")
    } else {
        reply::method_not_allowed("POST")
    }
}
