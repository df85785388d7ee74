//! Active checks: one loop per master with a `health_url`, a `GET` every
//! `interval_ms` (±10% jitter, so masters are not probed in lockstep) bounded by
//! `timeout_ms`; any 2xx passes. Each check opens its own connection, so a probe sees
//! what a new connection would (as HAProxy's checks do). Results go to the failover
//! controller, which alone decides what they mean.

use crate::config::Endpoint;
use crate::server::Body;
use http::{header, Method, Request, Uri};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One check's result for one master.
#[derive(Debug)]
pub struct Report {
    pub master: Arc<str>,
    pub result: Result<(), String>,
}

/// Checks forever, sending every result; ends when the receiver is gone.
pub async fn run(
    master: Arc<str>,
    url: Uri,
    interval: Duration,
    timeout: Duration,
    reports: mpsc::Sender<Report>,
) {
    let passed = metrics::counter!("switchyard_health_checks_total", "master" => master.to_string(), "result" => "pass");
    let failed = metrics::counter!("switchyard_health_checks_total", "master" => master.to_string(), "result" => "fail");
    // `compile` lets no health_url without a host through.
    let endpoint = Endpoint::of(&url);
    // The first check comes soon, spread a little across masters.
    let mut wait = interval.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
    loop {
        tokio::time::sleep(wait).await;
        let result = match &endpoint {
            Some(endpoint) => check(endpoint, timeout).await,
            None => Err(format!("health_url {url} has no host")),
        };
        match &result {
            Ok(()) => passed.increment(1),
            Err(_) => failed.increment(1),
        }
        let report = Report {
            master: master.clone(),
            result,
        };
        if reports.send(report).await.is_err() {
            return;
        }
        wait = interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
    }
}

/// One `GET` of `endpoint` within `timeout`: `Ok` on 2xx, else why not.
pub async fn check(endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, get(endpoint)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn get(endpoint: &Endpoint) -> Result<(), String> {
    let mut sender = crate::pool::connect(&endpoint.authority)
        .await
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(Body::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = endpoint.path.clone();
    req.headers_mut()
        .insert(header::HOST, endpoint.host.clone());
    req.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    let resp = sender.send_request(req).await;
    let status = resp.map_err(|e| format!("request failed: {e}"))?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
