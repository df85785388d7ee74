//! Active checks: one loop per master with a `health_url`, a `GET` every
//! `interval_ms` (±10% jitter, so masters are not probed in lockstep) bounded by
//! `timeout_ms`; any 2xx passes. Each check opens its own connection, so a probe sees
//! what a new connection would (as HAProxy's checks do). Results go to the failover
//! controller, which alone decides what they mean. A check that fails for a reason
//! of this machine's own (out of file descriptors, memory, ports) is reported as
//! [`ProbeError::Local`], which says nothing about the master.

use crate::config::Endpoint;
use crate::pool::LocalFault;
use crate::server::Body;
use http::{header, Method, Request};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One check's result for one master.
#[derive(Debug)]
pub struct Report {
    pub master: Arc<str>,
    pub result: Result<(), ProbeError>,
}

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The master's fault: no connection, no answer in time, a non-2xx answer.
    #[error("{0}")]
    Failed(String),
    /// This machine's own (out of file descriptors, memory, ports): the check says
    /// nothing about the master (SPEC section 8).
    #[error("this proxy is out of {}: {}", .0.what(), .1)]
    Local(LocalFault, String),
}

/// Checks forever, sending every result; ends when the receiver is gone.
pub async fn run(
    master: Arc<str>,
    endpoint: Endpoint,
    interval: Duration,
    timeout: Duration,
    reports: mpsc::Sender<Report>,
) {
    let passed = metrics::counter!("switchyard_health_checks_total", "master" => master.to_string(), "result" => "pass");
    let failed = metrics::counter!("switchyard_health_checks_total", "master" => master.to_string(), "result" => "fail");
    let local = metrics::counter!("switchyard_health_checks_total", "master" => master.to_string(), "result" => "local_error");
    // The first check comes soon, spread a little across masters.
    let mut wait = interval.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
    loop {
        tokio::time::sleep(wait).await;
        let result = check(&endpoint, timeout).await;
        match &result {
            Ok(()) => passed.increment(1),
            Err(ProbeError::Failed(_)) => failed.increment(1),
            Err(ProbeError::Local(..)) => local.increment(1),
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
pub async fn check(endpoint: &Endpoint, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, get(endpoint)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Failed(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

async fn get(endpoint: &Endpoint) -> Result<(), ProbeError> {
    let mut sender = crate::pool::connect(endpoint)
        .await
        .map_err(|e| match e.local_fault() {
            Some(fault) => ProbeError::Local(fault, e.to_string()),
            None => ProbeError::Failed(e.to_string()),
        })?;
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
    let status = resp
        .map_err(|e| ProbeError::Failed(format!("request failed: {e}")))?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ProbeError::Failed(format!("answered {status}")))
    }
}
