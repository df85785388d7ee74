//! Alerts of the failover controller (SPEC section 5): each one is logged, counted in
//! `switchyard_alerts_total{severity}` and POSTed as JSON
//! `{"severity", "kind", "master", "message", "at"}` to the configured webhook by a
//! background task.
//!
//! Raising never blocks the caller (the data path or the controller): it logs, counts
//! and hands the alert to a bounded queue without waiting; when the queue is full the
//! alert is still logged but its webhook delivery is dropped. Repeats of one
//! `(kind, master)` inside the fold window are folded: counted and logged at debug, not
//! sent; the next one sent after the window says how many were folded.
//!
//! The webhook task sends one alert at a time over a kept-alive HTTP/1.1 connection
//! (from a [`ConnPool`] of its own),
//! each attempt bounded by 5 s, up to 3 attempts (waiting 200 ms, then 400 ms, between
//! them); a 2xx answer is a success. It stops on shutdown, after at most the attempt in
//! progress; alerts still queued then are not sent.

use crate::config::Endpoint;
use crate::pool::ConnPool;
use crate::server::{Body, Shutdown};
use crate::util::error_chain;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Alerts waiting for the webhook task; beyond this, deliveries are dropped.
const QUEUE_CAPACITY: usize = 256;
/// Connect, send and read the answer within this, per attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per alert; the waits between them are 200 ms, then 400 ms.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Past this many `(kind, master)` entries, expired ones are pruned before adding one.
const MAX_FOLD_KEYS: usize = 1024;
/// The webhook's answer body is read (so the connection can be kept) up to this size.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One alert, as logged and as POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    pub severity: Severity,
    pub kind: String,
    pub master: Option<String>,
    pub message: String,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
}

/// The webhook in the forms the wire needs.
struct Target {
    uri: Uri,
    endpoint: Endpoint,
}

/// When one `(kind, master)` was last sent, and how many repeats were folded since.
struct Fold {
    sent: Instant,
    folded: u64,
}

type FoldKey = (String, Option<String>);

/// Raises alerts; shared as `Arc<Alerter>`.
pub struct Alerter {
    tx: mpsc::Sender<Alert>,
    target: Arc<ArcSwapOption<Target>>,
    fold_window: Duration,
    folds: Mutex<HashMap<FoldKey, Fold>>,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let webhook = self.target.load().as_ref().map(|t| t.uri.to_string());
        f.debug_struct("Alerter")
            .field("webhook", &webhook)
            .field("fold_window", &self.fold_window)
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// Returns the alerter and the webhook task's future; the caller spawns the future on tokio.
    /// `fold_window`: repeats of one (kind, master) inside it are folded (not sent again).
    pub fn new(
        webhook: Option<Uri>,
        fold_window: Duration,
        shutdown: Shutdown,
    ) -> (Alerter, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let target = Arc::new(ArcSwapOption::new(target_of(webhook)));
        let alerter = Alerter {
            tx,
            target: target.clone(),
            fold_window,
            folds: Mutex::new(HashMap::new()),
        };
        let delivery = Delivery {
            rx,
            target,
            shutdown,
            pool: ConnPool::default(),
            pool_for: String::new(),
        };
        (alerter, delivery.run())
    }

    /// Replaces the webhook (config reload). None = log only.
    pub fn set_webhook(&self, webhook: Option<Uri>) {
        self.target.store(target_of(webhook));
    }

    /// Logs (tracing: error for critical, warn for warning, info for info), counts
    /// `switchyard_alerts_total{severity}`, and queues the POST unless the same
    /// (kind, master) was sent inside the fold window; a folded repeat is counted and
    /// logged at debug, and the next alert of that (kind, master) sent after the window
    /// says "(N repeats folded)" at the end of its message.
    ///
    /// Never blocks and never awaits: when the queue (256 alerts) is full, the alert is
    /// logged but its delivery is dropped with a warning.
    ///
    /// Returns true when the alert was queued for the webhook (or logged only because
    /// there is no webhook), false when folded or dropped.
    pub fn raise(
        &self,
        severity: Severity,
        kind: &str,
        master: Option<&str>,
        message: impl Into<String>,
    ) -> bool {
        metrics::counter!("switchyard_alerts_total", "severity" => severity.as_str()).increment(1);
        let mut message = message.into();
        let now = Instant::now();
        let key: FoldKey = (kind.to_owned(), master.map(str::to_owned));

        // The lock covers only the decision and reserving a queue slot (neither waits),
        // so that two callers raising the same alert at once send it once; the alert is
        // built, logged and handed over after it is released.
        let mut folds = self.folds.lock().unwrap_or_else(|p| p.into_inner());
        let earlier_folds = match folds.get_mut(&key) {
            Some(fold) if now.duration_since(fold.sent) < self.fold_window => {
                fold.folded += 1;
                let folded = fold.folded;
                drop(folds);
                tracing::debug!(
                    severity = severity.as_str(),
                    kind,
                    master = master.unwrap_or("-"),
                    folded,
                    "alert repeated inside the fold window: {message}"
                );
                return false;
            }
            Some(fold) => fold.folded,
            None => 0,
        };
        // None: no webhook, log only.
        let slot = self.target.load().is_some().then(|| self.tx.try_reserve());
        let sent = !matches!(slot, Some(Err(_)));
        // A dropped alert leaves its entry as it was: the next one is not folded and
        // still reports the repeats folded before.
        if sent {
            if folds.len() >= MAX_FOLD_KEYS && !folds.contains_key(&key) {
                prune(&mut folds, now, self.fold_window);
            }
            folds.insert(
                key,
                Fold {
                    sent: now,
                    folded: 0,
                },
            );
        }
        drop(folds);

        if earlier_folds > 0 {
            message = format!("{message} ({earlier_folds} repeats folded)");
        }
        let alert = Alert {
            severity,
            kind: kind.to_owned(),
            master: master.map(str::to_owned),
            message,
            at: crate::util::rfc3339(SystemTime::now()),
        };
        log(&alert);
        match slot {
            None => {}
            Some(Ok(permit)) => permit.send(alert),
            Some(Err(mpsc::error::TrySendError::Full(()))) => tracing::warn!(
                kind,
                master = master.unwrap_or("-"),
                capacity = QUEUE_CAPACITY,
                "alert queue full: webhook delivery dropped"
            ),
            Some(Err(mpsc::error::TrySendError::Closed(()))) => {
                tracing::debug!(kind, "alert webhook task stopped: delivery dropped");
            }
        }
        sent
    }
}

/// Drops the entries whose window is over (their folded counts are forgotten); if all
/// are still inside it, drops the oldest, so the map never grows past [`MAX_FOLD_KEYS`].
fn prune(folds: &mut HashMap<FoldKey, Fold>, now: Instant, window: Duration) {
    folds.retain(|_, fold| now.duration_since(fold.sent) < window);
    if folds.len() >= MAX_FOLD_KEYS {
        let oldest = folds
            .iter()
            .min_by_key(|(_, fold)| fold.sent)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            folds.remove(&key);
        }
    }
}

fn target_of(webhook: Option<Uri>) -> Option<Arc<Target>> {
    let uri = webhook?;
    // https trusts the system roots.
    let endpoint = match Endpoint::with_tls(&uri, None) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            tracing::warn!(webhook = %uri, error = %e, "alert webhook unusable: alerts are logged only");
            return None;
        }
    };
    Some(Arc::new(Target { uri, endpoint }))
}

fn log(alert: &Alert) {
    let kind = alert.kind.as_str();
    let master = alert.master.as_deref().unwrap_or("-");
    let message = alert.message.as_str();
    match alert.severity {
        Severity::Critical => tracing::error!(kind, master, "alert: {message}"),
        Severity::Warning => tracing::warn!(kind, master, "alert: {message}"),
        Severity::Info => tracing::info!(kind, master, "alert: {message}"),
    }
}

/// The webhook task's state.
struct Delivery {
    rx: mpsc::Receiver<Alert>,
    target: Arc<ArcSwapOption<Target>>,
    shutdown: Shutdown,
    /// The webhook's kept-alive connection.
    pool: ConnPool,
    /// The `host:port` the pool's connection goes to.
    pool_for: String,
}

impl Delivery {
    async fn run(mut self) {
        loop {
            let alert = tokio::select! {
                biased;
                _ = self.shutdown.wait() => break,
                alert = self.rx.recv() => match alert {
                    Some(alert) => alert,
                    None => break,
                },
            };
            if !self.deliver(&alert).await {
                break;
            }
        }
        tracing::debug!(undelivered = self.rx.len(), "alert webhook task stopped");
    }

    /// Sends one alert, with retries. False when shutdown came during a backoff.
    async fn deliver(&mut self, alert: &Alert) -> bool {
        let body = match serde_json::to_vec(alert) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::warn!(kind = %alert.kind, error = %e, "alert could not be encoded");
                return true;
            }
        };
        let mut reason = String::new();
        for attempt in 1..=ATTEMPTS {
            // Read on every attempt, so that a reload fixing the webhook takes effect.
            let Some(target) = self.target.load_full() else {
                tracing::debug!(kind = %alert.kind, "alert webhook removed: not sent");
                return true;
            };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(&target, &body)).await {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => reason = e,
                Err(_) => reason = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            }
            if attempt < ATTEMPTS {
                let backoff = FIRST_BACKOFF * 2u32.pow(attempt - 1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.shutdown.wait() => return false,
                }
            }
        }
        tracing::warn!(
            kind = %alert.kind,
            master = alert.master.as_deref().unwrap_or("-"),
            attempts = ATTEMPTS,
            reason = %reason,
            "alert webhook delivery failed"
        );
        true
    }

    /// One POST of `body`; Ok on a 2xx answer.
    async fn attempt(&mut self, target: &Target, body: &Bytes) -> Result<(), String> {
        let endpoint = &target.endpoint;
        let build = || {
            let mut req = Request::new(Body::new(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = endpoint.path.clone();
            let headers = req.headers_mut();
            headers.insert(header::HOST, endpoint.host.clone());
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            req
        };
        if self.pool_for != endpoint.key {
            // The webhook moved (a reload): close the old one's connection.
            self.pool = ConnPool::default();
            self.pool_for.clone_from(&endpoint.key);
        }
        let (conn, resp) = self
            .pool
            .send(endpoint, build)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let read = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if read.is_ok() {
            conn.release();
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{self, shutdown_pair, ShutdownTrigger};
    use http::{Response, StatusCode};
    use hyper::body::Incoming;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// One request the receiver got.
    #[derive(Debug)]
    struct Received {
        method: Method,
        path: String,
        host: Option<String>,
        content_type: Option<String>,
        json: serde_json::Value,
        status: StatusCode,
    }

    /// A webhook receiver on 127.0.0.1 that answers 500 to its first `failures`
    /// requests and 200 afterwards, and records every request.
    struct Receiver {
        addr: SocketAddr,
        requests: mpsc::UnboundedReceiver<Received>,
        _stop: ShutdownTrigger,
    }

    impl Receiver {
        async fn start(failures: usize) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, requests) = mpsc::unbounded_channel();
            let seen = Arc::new(AtomicUsize::new(0));
            let handler = move |req: Request<Incoming>| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    let header = |name| {
                        req.headers()
                            .get(name)
                            .and_then(|v: &HeaderValue| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let host = header(header::HOST);
                    let content_type = header(header::CONTENT_TYPE);
                    let method = req.method().clone();
                    let path = req.uri().path().to_string();
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                    let status = if seen.fetch_add(1, Ordering::SeqCst) < failures {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let _ = tx.send(Received {
                        method,
                        path,
                        host,
                        content_type,
                        json,
                        status,
                    });
                    let mut resp = Response::new(Body::new(Bytes::from_static(b"{}")));
                    *resp.status_mut() = status;
                    resp
                }
            };
            let (stop, shutdown) = shutdown_pair();
            tokio::spawn(server::serve(
                listener,
                handler,
                shutdown,
                Duration::from_secs(1),
            ));
            Receiver {
                addr,
                requests,
                _stop: stop,
            }
        }

        fn url(&self) -> Uri {
            format!("http://{}/hooks/alerts", self.addr)
                .parse()
                .unwrap()
        }

        async fn next(&mut self) -> Received {
            tokio::time::timeout(DEADLINE, self.requests.recv())
                .await
                .expect("no webhook request before the deadline")
                .expect("receiver stopped")
        }

        /// The next request whose alert has this kind, skipping others.
        async fn next_of_kind(&mut self, kind: &str) -> Received {
            loop {
                let got = self.next().await;
                if got.json["kind"] == kind {
                    return got;
                }
            }
        }
    }

    /// An alerter whose webhook task runs until the returned trigger is dropped.
    fn alerter(webhook: Option<Uri>, window: Duration) -> (Arc<Alerter>, ShutdownTrigger) {
        let (trigger, shutdown) = shutdown_pair();
        let (alerter, task) = Alerter::new(webhook, window, shutdown);
        tokio::spawn(task);
        (Arc::new(alerter), trigger)
    }

    #[tokio::test]
    async fn alert_reaches_the_webhook_with_all_fields() {
        let mut receiver = Receiver::start(0).await;
        let (alerter, _stop) = alerter(Some(receiver.url()), Duration::from_secs(60));

        assert!(alerter.raise(
            Severity::Critical,
            "master_down",
            Some("linda-master"),
            "linda-master stopped answering"
        ));

        let got = receiver.next().await;
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/hooks/alerts");
        assert_eq!(got.host, Some(receiver.addr.to_string()));
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        let fields = got.json.as_object().expect("a JSON object");
        assert_eq!(fields.len(), 5, "{fields:?}");
        assert_eq!(got.json["severity"], "critical");
        assert_eq!(got.json["kind"], "master_down");
        assert_eq!(got.json["master"], "linda-master");
        assert_eq!(got.json["message"], "linda-master stopped answering");
        let at = got.json["at"].as_str().expect("`at` is a string");
        assert_eq!(at.len(), "2026-11-24T19:54:09.123Z".len(), "{at}");
        assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");

        // No master: `master` is null.
        assert!(alerter.raise(Severity::Info, "failback", None, "back on the primaries"));
        let got = receiver.next().await;
        assert_eq!(got.json["severity"], "info");
        assert_eq!(got.json["master"], serde_json::Value::Null);
        assert_eq!(Severity::Warning.as_str(), "warning");
    }

    #[tokio::test]
    async fn repeats_inside_the_window_are_folded() {
        let mut receiver = Receiver::start(0).await;
        let (alerter, _stop) = alerter(Some(receiver.url()), Duration::from_secs(60));

        let raised: Vec<bool> = (0..5)
            .map(|_| alerter.raise(Severity::Critical, "master_down", Some("a"), "a is down"))
            .collect();
        assert_eq!(raised, [true, false, false, false, false]);
        // Another master, or no master, is another alert.
        assert!(alerter.raise(Severity::Critical, "master_down", Some("b"), "b is down"));
        assert!(alerter.raise(Severity::Critical, "master_down", None, "down"));
        assert!(alerter.raise(Severity::Info, "sentinel", None, "last one"));

        // Deliveries are in order: the folded repeats would show up before the sentinel.
        let mut got = Vec::new();
        for _ in 0..4 {
            let r = receiver.next().await;
            got.push(serde_json::json!([r.json["kind"], r.json["master"]]));
        }
        assert_eq!(
            got,
            [
                serde_json::json!(["master_down", "a"]),
                serde_json::json!(["master_down", "b"]),
                serde_json::json!(["master_down", null]),
                serde_json::json!(["sentinel", null]),
            ]
        );
    }

    #[tokio::test]
    async fn the_first_alert_after_the_window_reports_the_folded_repeats() {
        let mut receiver = Receiver::start(0).await;
        let window = Duration::from_millis(200);
        let (alerter, _stop) = alerter(Some(receiver.url()), window);

        assert!(alerter.raise(Severity::Warning, "imbalance", Some("a"), "a takes 90%"));
        for _ in 0..4 {
            assert!(!alerter.raise(Severity::Warning, "imbalance", Some("a"), "a takes 90%"));
        }
        assert_eq!(receiver.next().await.json["message"], "a takes 90%");

        // Wait for the window to close.
        let key: FoldKey = ("imbalance".to_string(), Some("a".to_string()));
        tokio::time::timeout(DEADLINE, async {
            loop {
                let open = {
                    let folds = alerter.folds.lock().unwrap();
                    folds[&key].sent.elapsed() < window
                };
                if !open {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();

        assert!(alerter.raise(Severity::Warning, "imbalance", Some("a"), "a takes 91%"));
        assert_eq!(
            receiver.next().await.json["message"],
            "a takes 91% (4 repeats folded)"
        );
    }

    #[tokio::test]
    async fn a_failing_webhook_gets_the_alert_on_the_third_attempt() {
        let mut receiver = Receiver::start(2).await;
        let (alerter, _stop) = alerter(Some(receiver.url()), Duration::from_secs(60));

        assert!(alerter.raise(Severity::Critical, "no_eligible_master", None, "none left"));
        let attempts = [
            receiver.next().await,
            receiver.next().await,
            receiver.next().await,
        ];
        let statuses: Vec<u16> = attempts.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(statuses, [500, 500, 200]);
        for r in &attempts {
            assert_eq!(r.json, attempts[0].json);
            assert_eq!(r.json["kind"], "no_eligible_master");
        }

        // Delivered: the next request is the next alert, not a fourth attempt.
        assert!(alerter.raise(Severity::Info, "failover_completed", None, "done"));
        let next = receiver.next().await;
        assert_eq!(next.json["kind"], "failover_completed");
        assert_eq!(next.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unreachable_webhook_neither_blocks_nor_stops_the_task() {
        let dead = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let dead_url: Uri = format!("http://{dead}/alerts").parse().unwrap();
        let (alerter, _stop) = alerter(Some(dead_url), Duration::from_secs(60));

        // `raise` is synchronous; it queues and returns.
        assert!(alerter.raise(Severity::Critical, "master_down", Some("a"), "first"));
        assert!(alerter.raise(Severity::Critical, "master_down", Some("b"), "first"));

        let mut receiver = Receiver::start(0).await;
        alerter.set_webhook(Some(receiver.url()));
        assert!(alerter.raise(Severity::Info, "master_recovered", Some("a"), "second"));
        let got = receiver.next_of_kind("master_recovered").await;
        assert_eq!(got.json["message"], "second");
    }

    #[tokio::test]
    async fn without_a_webhook_alerts_are_logged_only() {
        let (alerter, _stop) = alerter(None, Duration::from_secs(60));
        assert!(alerter.raise(Severity::Critical, "master_down", Some("a"), "log only"));
        assert_eq!(alerter.tx.capacity(), QUEUE_CAPACITY, "nothing was queued");
        // Folding applies to the log too.
        assert!(!alerter.raise(Severity::Critical, "master_down", Some("a"), "log only"));

        // Once a webhook is set, the first request is the alert raised after it.
        let mut receiver = Receiver::start(0).await;
        alerter.set_webhook(Some(receiver.url()));
        assert!(alerter.raise(Severity::Info, "master_recovered", Some("a"), "sent"));
        assert_eq!(receiver.next().await.json["kind"], "master_recovered");

        alerter.set_webhook(None);
        assert!(alerter.raise(Severity::Info, "failback", None, "log only again"));
        assert_eq!(alerter.tx.capacity(), QUEUE_CAPACITY, "nothing was queued");
    }

    #[tokio::test]
    async fn the_task_stops_on_shutdown() {
        let receiver = Receiver::start(0).await;
        let (trigger, shutdown) = shutdown_pair();
        let (alerter, task) = Alerter::new(Some(receiver.url()), Duration::ZERO, shutdown);
        let task = tokio::spawn(task);
        trigger.trigger();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the task did not stop")
            .unwrap();
        // Still logged and counted; nothing left to deliver it.
        assert!(!alerter.raise(Severity::Info, "failback", None, "after shutdown"));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_delivery_without_blocking() {
        let (_trigger, shutdown) = shutdown_pair();
        // The task is never run, so nothing drains the queue.
        let (alerter, _task) = Alerter::new(
            Some(Uri::from_static("http://127.0.0.1:9/alerts")),
            Duration::from_secs(60),
            shutdown,
        );
        for i in 0..QUEUE_CAPACITY {
            assert!(alerter.raise(Severity::Warning, &format!("kind-{i}"), None, "x"));
        }
        assert!(!alerter.raise(Severity::Warning, "overflow", None, "x"));
        // A dropped alert is not remembered as sent, so its repeat is not folded away.
        assert!(!alerter
            .folds
            .lock()
            .unwrap()
            .contains_key(&("overflow".to_string(), None)));
    }

    #[tokio::test]
    async fn fold_bookkeeping_stays_bounded() {
        let (alerter, _stop) = alerter(None, Duration::from_secs(60));
        for i in 0..3 * MAX_FOLD_KEYS {
            assert!(alerter.raise(Severity::Warning, &format!("kind-{i}"), None, "x"));
        }
        assert!(alerter.folds.lock().unwrap().len() <= MAX_FOLD_KEYS);
        // The most recent ones are still folded.
        let last = format!("kind-{}", 3 * MAX_FOLD_KEYS - 1);
        assert!(!alerter.raise(Severity::Warning, &last, None, "x"));
    }
}
