//! Active checks: one loop per master with a `health_url`, a `GET` every
//! `interval_ms` (±10% jitter, so masters are not probed in lockstep) bounded by
//! `timeout_ms`; any 2xx passes. Each check opens its own connection, so a probe sees
//! what a new connection would (as HAProxy's checks do). Results go to the failover
//! controller, which alone decides what they mean.

use crate::server::Body;
use http::{header, Method, Request, Uri};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
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
    // The first check comes soon, spread a little across masters.
    let mut wait = interval.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
    loop {
        tokio::time::sleep(wait).await;
        let result = check(&url, timeout).await;
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

/// One `GET url` within `timeout`: `Ok` on 2xx, else why not.
pub async fn check(url: &Uri, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, get(url)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn get(url: &Uri) -> Result<(), String> {
    let host = url.host().ok_or("health_url has no host")?;
    let addr = format!("{host}:{}", url.port_u16().unwrap_or(80));
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = url
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    let mut req = Request::new(Body::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = path;
    if let Some(authority) = url.authority() {
        if let Ok(value) = authority.as_str().parse() {
            req.headers_mut().insert(header::HOST, value);
        }
    }
    req.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    let resp = sender.send_request(req).await;
    conn.abort();
    let status = resp.map_err(|e| format!("request failed: {e}"))?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
