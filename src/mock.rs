//! `switchyard mock-master`: a simulated master account for demos, tests and benchmarks
//! (SPEC section 6).
//!
//! Started with `--record-keys`, it remembers what arrived, for tests:
//! `GET /received/keys` gives the Idempotency-Key of every accepted send (counts and
//! order), and `GET /received/headers` the headers of the last accepted send, as
//! `{"headers": {"name": "value", ...}}` (a repeated header shows its last value).
//!
//! It can act as a provider that protects its accounts (SPEC section 10), for tests
//! and demos of pacing and bans: `--rate-limit R` answers 429 to a send that would
//! make more than R accepted in the last second, `--ban-after N` answers every send
//! after the first N accepted with 403 `{"error": "account banned"}` (its `/health`
//! stays up, as a provider's status page would). `GET /received` gives the count of
//! accepted sends, `max_per_second`, the most accepted in any one-second window, and
//! `banned`, the sends answered with the ban.

use crate::reply;
use crate::server::{self, Body, Shutdown};
use crate::tls::listen::Acceptor;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct MockMaster {
    pub id: String,
    pub latency: Duration,
    pub fail_rate: f64,
    down: AtomicBool,
    received: AtomicU64,
    /// Sends answered 403 "account banned".
    banned: AtomicU64,
    /// When recording: the Idempotency-Key of every accepted send, in arrival order.
    keys: Option<Mutex<Vec<String>>>,
    /// When recording: the headers of the last accepted send.
    last_headers: Option<Mutex<http::HeaderMap>>,
    /// Accepted sends of the last second, and the most there ever were.
    window: Mutex<Window>,
    /// `--rate-limit`: sends accepted per second at most.
    rate_limit: Option<u32>,
    /// `--ban-after`: sends accepted before the account is banned.
    ban_after: Option<u64>,
}

/// Accepted sends of the last second.
#[derive(Debug, Default)]
struct Window {
    times: VecDeque<Instant>,
    max: usize,
}

impl Window {
    /// Forgets sends more than one second before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&t) = self.times.front() {
            if now.duration_since(t) <= Duration::from_secs(1) {
                break;
            }
            self.times.pop_front();
        }
    }
}

/// Why the mock refuses a send that it would otherwise take.
enum Refusal {
    RateLimited,
    Banned,
}

impl MockMaster {
    pub fn new(id: impl Into<String>, latency: Duration, fail_rate: f64) -> Self {
        Self {
            id: id.into(),
            latency,
            fail_rate,
            down: AtomicBool::new(false),
            received: AtomicU64::new(0),
            banned: AtomicU64::new(0),
            keys: None,
            last_headers: None,
            window: Mutex::new(Window::default()),
            rate_limit: None,
            ban_after: None,
        }
    }

    /// Answers 429 to a send that would make more than `per_second` accepted in the
    /// last second.
    pub fn rate_limited(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// Answers 403 "account banned" to every send after the first `n` accepted.
    pub fn banned_after(mut self, n: u64) -> Self {
        self.ban_after = Some(n);
        self
    }

    /// Counts an accepted send, unless the account's limits refuse it.
    fn accept(&self) -> Result<(), Refusal> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if self.ban_after.is_some_and(|n| self.received() >= n) {
            return Err(Refusal::Banned);
        }
        let now = Instant::now();
        w.expire(now);
        if self.rate_limit.is_some_and(|r| w.times.len() >= r as usize) {
            return Err(Refusal::RateLimited);
        }
        w.times.push_back(now);
        w.max = w.max.max(w.times.len());
        self.received.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The most sends accepted in any one-second window so far.
    pub fn max_per_second(&self) -> usize {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).max
    }

    /// Remembers every accepted send's Idempotency-Key for `GET /received/keys`, and
    /// the last one's headers for `GET /received/headers`.
    pub fn recording_keys(mut self) -> Self {
        self.keys = Some(Mutex::new(Vec::new()));
        self.last_headers = Some(Mutex::new(http::HeaderMap::new()));
        self
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let down = self.down.load(Relaxed);
        let unavailable = || {
            reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "master_down",
                "this master is down",
            )
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") if down => unavailable(),
            (&Method::GET, "/health") => {
                reply::json(StatusCode::OK, &serde_json::json!({"status": "up"}))
            }
            (&Method::GET, "/received") => reply::json(
                StatusCode::OK,
                &serde_json::json!({
                    "count": self.received(),
                    "max_per_second": self.max_per_second(),
                    "banned": self.banned.load(Relaxed),
                }),
            ),
            (&Method::GET, "/received/keys") => match &self.keys {
                Some(keys) => {
                    let order = keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut counts: HashMap<&str, u32> = HashMap::new();
                    for key in &order {
                        *counts.entry(key).or_default() += 1;
                    }
                    reply::json(
                        StatusCode::OK,
                        &serde_json::json!({ "keys": counts, "order": order }),
                    )
                }
                None => reply::error(
                    StatusCode::NOT_FOUND,
                    "not_recording",
                    "start the mock with --record-keys",
                ),
            },
            (&Method::GET, "/received/headers") => match &self.last_headers {
                Some(last) => {
                    let last = last.lock().unwrap_or_else(|p| p.into_inner());
                    let headers: serde_json::Map<String, serde_json::Value> = last
                        .iter()
                        .map(|(n, v)| {
                            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                            (n.as_str().to_string(), v.into())
                        })
                        .collect();
                    reply::json(StatusCode::OK, &serde_json::json!({ "headers": headers }))
                }
                None => reply::error(
                    StatusCode::NOT_FOUND,
                    "not_recording",
                    "start the mock with --record-keys",
                ),
            },
            (&Method::POST, "/control/down") => {
                self.set_down(true);
                reply::json(StatusCode::OK, &serde_json::json!({"down": true}))
            }
            (&Method::POST, "/control/up") => {
                self.set_down(false);
                reply::json(StatusCode::OK, &serde_json::json!({"down": false}))
            }
            (&Method::POST, _) => {
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let (parts, body) = req.into_parts();
                // Read the whole body, as a real master would.
                if let Err(e) = body.collect().await {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        "body_read_failed",
                        e.to_string(),
                    );
                }
                if !self.latency.is_zero() {
                    tokio::time::sleep(self.latency).await;
                }
                if down
                    || (self.fail_rate > 0.0 && rand::thread_rng().gen::<f64>() < self.fail_rate)
                {
                    return unavailable();
                }
                match self.accept() {
                    Ok(()) => {}
                    Err(Refusal::RateLimited) => {
                        let mut resp = reply::error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            "too many messages this second",
                        );
                        resp.headers_mut().insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from_static("1"),
                        );
                        return resp;
                    }
                    Err(Refusal::Banned) => {
                        self.banned.fetch_add(1, Relaxed);
                        return reply::json(
                            StatusCode::FORBIDDEN,
                            &serde_json::json!({"error": "account banned"}),
                        );
                    }
                }
                if let (Some(keys), Some(key)) = (&self.keys, &key) {
                    keys.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(key.clone());
                }
                if let Some(last) = &self.last_headers {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = parts.headers;
                }
                reply::json(
                    StatusCode::OK,
                    &serde_json::json!({"accepted": true, "master": self.id, "idempotency_key": key}),
                )
            }
            (_, "/health" | "/received") => reply::method_not_allowed("GET"),
            _ => reply::method_not_allowed("POST"),
        }
    }
}

/// Binds `listen` and serves `mock` until `shutdown`. Returns the bound address.
pub async fn start(
    mock: Arc<MockMaster>,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    start_tls(mock, listen, None, shutdown).await
}

/// Like [`start`], speaking HTTPS with `tls` when given.
pub async fn start_tls(
    mock: Arc<MockMaster>,
    listen: SocketAddr,
    tls: Option<Acceptor>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handler = move |req| mock.clone().handle(req);
    let task = tokio::spawn(server::serve_with(
        listener,
        handler,
        server::Limits::default,
        move || tls.clone(),
        shutdown,
        Duration::from_secs(5),
    ));
    Ok((addr, task))
}
