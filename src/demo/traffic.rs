//! The traffic of `switchyard demo --chaos`: a steady trickle of messages, and every
//! minute a burst of queued ones, so that a ban and a paced drain happen on screen.

use crate::config::Endpoint;
use crate::mock::MockMaster;
use crate::pool::ConnPool;
use crate::server::Body;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Messages a second sent one by one, each waiting for its answer.
pub const TRICKLE_PER_SEC: u64 = 4;
/// Queued messages (`Prefer: respond-async`) sent at once, every [`BURST_EVERY`].
pub const BURST: u64 = 150;
pub const BURST_EVERY: Duration = Duration::from_secs(60);

/// Sends forever; a message that fails is only counted (the demo shows the proxy).
pub async fn run(listen: SocketAddr) {
    let pool = Arc::new(ConnPool::default());
    let Some(endpoint) = format!("http://{listen}/v1/messages")
        .parse()
        .ok()
        .and_then(|uri| Endpoint::of(&uri))
    else {
        return;
    };
    let endpoint = Arc::new(endpoint);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / TRICKLE_PER_SEC));
    let mut n: u64 = 0;
    // The first burst comes 20 s in, then every minute.
    let mut next_burst = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tick.tick().await;
        n += 1;
        send(&pool, &endpoint, n, false).await;
        if tokio::time::Instant::now() >= next_burst {
            next_burst += BURST_EVERY;
            println!("  traffic: {BURST} queued messages at once (Prefer: respond-async)");
            for _ in 0..BURST {
                n += 1;
                let (pool, endpoint) = (pool.clone(), endpoint.clone());
                tokio::spawn(async move { send(&pool, &endpoint, n, true).await });
            }
        }
    }
}

async fn send(pool: &ConnPool, endpoint: &Endpoint, n: u64, queued: bool) {
    let body = format!(
        "{{\"to\": \"+9715000{:05}\", \"text\": \"message {n}\"}}",
        n % 100_000
    );
    let build = || {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(endpoint.path.clone())
            .header(http::header::HOST, endpoint.host.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        if queued {
            req = req.header("prefer", "respond-async");
        }
        req.body(Body::new(Bytes::from(body.clone())))
            .expect("a valid request")
    };
    if let Ok((conn, resp)) = pool.send(endpoint, build).await {
        if resp.into_body().collect().await.is_ok() {
            conn.release();
        }
    }
}

/// Prints, every two seconds while something is queued, the queue's depth and what
/// each master took in the last two seconds.
pub async fn watch(queue_depth: impl Fn() -> u64, masters: Vec<(&'static str, Arc<MockMaster>)>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last: Vec<u64> = masters.iter().map(|(_, m)| m.received()).collect();
    loop {
        tick.tick().await;
        let now: Vec<u64> = masters.iter().map(|(_, m)| m.received()).collect();
        let depth = queue_depth();
        if depth > 0 {
            let taken: Vec<String> = masters
                .iter()
                .zip(now.iter().zip(&last))
                .map(|((id, _), (n, l))| format!("{id} {}", n - l))
                .collect();
            println!(
                "  queue: {depth} waiting; sent in the last 2 s: {}",
                taken.join(", ")
            );
        }
        last = now;
    }
}
