//! Two proxies in one process, sharing idempotency keys through a real etcd, in front
//! of one mock master: each key sent to both nodes at once is delivered once, and the
//! other node answers with the first message's id and answer; with etcd stopped, keyed
//! sends still go through on each node's own idempotency.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use switchyard::audit::AuditLog;
use switchyard::config::Config;
use switchyard::control::operator::OperatorStore;
use switchyard::control::Control;
use switchyard::mock::MockMaster;
use switchyard::proxy::Proxy;
use switchyard::server::{self, Shutdown};

use common::etcd::Etcd;

type Http = Client<HttpConnector, Full<Bytes>>;

/// One node: a proxy with its shared keys on `etcd` (none without), serving on a free
/// port; with a queue in `queue` when given.
async fn node(
    etcd: Option<&Etcd>,
    id: &str,
    master: SocketAddr,
    shutdown: Shutdown,
    queue: Option<&std::path::Path>,
) -> String {
    let queue_toml = match queue {
        Some(path) => format!("enabled = true\npath = {:?}\n", path.display().to_string()),
        None => "enabled = false\n".to_string(),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [queue]\n{queue_toml}\
         [[masters]]\nid = \"m1\"\nsend_url = \"http://{master}/send\"\n"
    );
    let config = Config::from_toml(&text).expect("valid config");
    let queue = match config.queue.enabled {
        true => Some(Arc::new(
            switchyard::queue::Queue::open(&config.queue).expect("queue"),
        )),
        false => None,
    };
    let control = Arc::new(Control::new(
        config,
        0,
        None,
        Arc::new(AuditLog::in_memory()),
        OperatorStore::in_memory(),
    ));
    let proxy = Arc::new(Proxy::new(control, queue));
    if let Some(etcd) = etcd {
        assert!(proxy.set_shared_keys(etcd.keys(id).await));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/messages",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(server::serve_messages(
        listener,
        move |req| proxy.clone().handle(req),
        server::Limits::default,
        || None,
        shutdown,
        Duration::from_secs(1),
    ));
    url
}

async fn send(http: &Http, url: &str, key: &str) -> (StatusCode, HeaderMap, Bytes) {
    send_with(http, url, key, false).await
}

async fn send_with(
    http: &Http,
    url: &str,
    key: &str,
    respond_async: bool,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::post(url);
    if respond_async {
        req = req.header("prefer", "respond-async");
    }
    let req = req
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(b"{\"to\":\"x\"}")))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(60), http.request(req))
        .await
        .expect("answered")
        .expect("exchange");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

struct Cluster {
    etcd: Etcd,
    mock: Arc<MockMaster>,
    nodes: [String; 2],
    http: Http,
    _trigger: server::ShutdownTrigger,
}

async fn cluster() -> Cluster {
    // Slow enough that both copies of a key are in flight together.
    cluster_with(Duration::from_millis(100), [true, true]).await
}

async fn cluster_with(latency: Duration, shared: [bool; 2]) -> Cluster {
    let etcd = Etcd::start();
    let (trigger, shutdown) = server::shutdown_pair();
    let mock = Arc::new(MockMaster::new("m1", latency, 0.0));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (addr, _) = switchyard::mock::start(mock.clone(), any, shutdown.clone())
        .await
        .expect("mock master");
    let nodes = [
        node(
            shared[0].then_some(&etcd),
            "a",
            addr,
            shutdown.clone(),
            None,
        )
        .await,
        node(
            shared[1].then_some(&etcd),
            "b",
            addr,
            shutdown.clone(),
            None,
        )
        .await,
    ];
    Cluster {
        etcd,
        mock,
        nodes,
        http: Client::builder(TokioExecutor::new()).build_http(),
        _trigger: trigger,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_to_two_nodes_at_once_is_delivered_once_and_both_get_its_answer() {
    let c = cluster().await;
    const KEYS: u64 = 30;
    let mut pairs = Vec::new();
    for i in 0..KEYS {
        let key = format!("order-{i}");
        let sends = c.nodes.clone().map(|url| {
            let (http, key) = (c.http.clone(), key.clone());
            tokio::spawn(async move { send(&http, &url, &key).await })
        });
        pairs.push(sends);
    }
    for [a, b] in pairs {
        let (a, b) = (a.await.expect("task"), b.await.expect("task"));
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
        let duplicate = |h: &HeaderMap| header(h, "x-switchyard-duplicate") == "true";
        assert!(
            duplicate(&a.1) != duplicate(&b.1),
            "exactly one of the two is the duplicate: {:?} / {:?}",
            a.1,
            b.1
        );
        let id = |h: &HeaderMap| header(h, "x-switchyard-message-id").to_string();
        assert_eq!(id(&a.1), id(&b.1), "the duplicate names the first message");
        assert_eq!(a.2, b.2, "the duplicate gets the master's answer");
    }
    assert_eq!(c.mock.received(), KEYS, "each key delivered once");
    // Later repeats, on either node, are duplicates too.
    for url in &c.nodes {
        let (status, headers, _) = send(&c.http, url, "order-0").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "x-switchyard-duplicate"), "true");
    }
    assert_eq!(c.mock.received(), KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stopped_keyed_sends_go_through_on_each_nodes_own_keys() {
    let c = cluster().await;
    let Cluster {
        etcd,
        mock,
        nodes,
        http,
        ..
    } = c;
    drop(etcd);
    for url in &nodes {
        let (status, headers, _) = send(&http, url, "k").await;
        assert_eq!(status, StatusCode::OK, "etcd down must not fail a send");
        assert_eq!(header(&headers, "x-switchyard-duplicate"), "");
        let (status, headers, _) = send(&http, url, "k").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&headers, "x-switchyard-duplicate"),
            "true",
            "still a duplicate on the same node"
        );
    }
    // Each node knew the key only locally.
    assert_eq!(mock.received(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_on_one_node_is_a_duplicate_on_the_other() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_trigger, shutdown) = server::shutdown_pair();
    let mock = Arc::new(MockMaster::new("m1", Duration::ZERO, 0.0));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (addr, _) = switchyard::mock::start(mock.clone(), any, shutdown.clone())
        .await
        .expect("mock master");
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let queue = dir.path().join(id).join("queue");
        nodes.push(node(Some(&etcd), id, addr, shutdown.clone(), Some(&queue)).await);
    }
    let http = Client::builder(TokioExecutor::new()).build_http();
    let (status, first, body) = send_with(&http, &nodes[0], "q", true).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
    let id = header(&first, "x-switchyard-message-id").to_string();
    // The other node answers with the queued message's id and 202 once its answer is
    // recorded: until then it waits for it.
    let (status, headers, again) = send_with(&http, &nodes[1], "q", true).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(header(&headers, "x-switchyard-duplicate"), "true");
    assert_eq!(header(&headers, "x-switchyard-message-id"), id);
    assert_eq!(again, body);
    assert_eq!(
        mock.received(),
        0,
        "queued, not delivered (no delivery runs here)"
    );
}

/// Not a check: prints what claiming a key in etcd adds to a keyed send, against a
/// peer node without shared keys in the same run. Run with `cargo test --release
/// --test cluster_idempotency -- --ignored --nocapture added_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn added_latency_of_a_keyed_send() {
    let c = cluster_with(Duration::ZERO, [true, false]).await;
    const N: usize = 2000;
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..N {
        for (n, url) in c.nodes.iter().enumerate() {
            let t = std::time::Instant::now();
            let (status, _, _) = send(&c.http, url, &format!("n{n}-{i}")).await;
            times[n].push(t.elapsed());
            assert_eq!(status, StatusCode::OK);
        }
    }
    let mut medians = Vec::new();
    for (what, mut t) in ["shared keys (etcd)", "node-local keys only"]
        .into_iter()
        .zip(times)
    {
        t.sort();
        let at = |q: f64| t[((t.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "{what:>21}: median {} us, p90 {} us, p99 {} us ({N} keyed sends)",
            at(0.5),
            at(0.9),
            at(0.99)
        );
        medians.push(at(0.5));
    }
    println!(
        "added by the etcd claim: {} us median ({:.2}x)",
        medians[0] as i128 - medians[1] as i128,
        medians[0] as f64 / medians[1] as f64
    );
}

/// Not a quick check: 10,000 keys, each sent to both nodes at once, 64 pairs in
/// flight; every key must be delivered once. Prints the time taken. Run with
/// `cargo test --release --test cluster_idempotency -- --ignored --nocapture ten_thousand`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ten_thousand_keys_each_sent_to_two_nodes_at_once() {
    let c = cluster_with(Duration::ZERO, [true, true]).await;
    const KEYS: usize = 10_000;
    let started = std::time::Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut pairs = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let (http, nodes) = (c.http.clone(), c.nodes.clone());
        pairs.spawn(async move {
            let key = format!("bulk-{i}");
            let (a, b) = tokio::join!(send(&http, &nodes[0], &key), send(&http, &nodes[1], &key));
            drop(permit);
            let duplicate = |h: &HeaderMap| header(h, "x-switchyard-duplicate") == "true";
            assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
            assert!(
                duplicate(&a.1) != duplicate(&b.1),
                "key {key}: one duplicate"
            );
            u8::from(duplicate(&b.1))
        });
    }
    let mut answered_by_b_as_duplicate = 0usize;
    while let Some(r) = pairs.join_next().await {
        answered_by_b_as_duplicate += usize::from(r.expect("pair"));
    }
    let took = started.elapsed();
    assert_eq!(c.mock.received(), KEYS as u64, "each key delivered once");
    println!(
        "{KEYS} keys x 2 nodes: delivered {} (duplicates delivered {}), node b answered {} \
         as the duplicate, in {:.1} s",
        c.mock.received(),
        c.mock.received() - KEYS as u64,
        answered_by_b_as_duplicate,
        took.as_secs_f64()
    );
}
