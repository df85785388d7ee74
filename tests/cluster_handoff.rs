//! Queues on leave (SPEC section 11) against real processes: a real etcd, switchyard
//! nodes and a mock master that is down while messages queue. A node stopped with
//! SIGTERM hands its queue to its live peer, which delivers each message once; with no
//! peer (or none with room) the messages stay on its disk for the next start; a node
//! that disappears, or leaves, with messages queued raises `stranded_messages` at the
//! leader.

mod common;
use common::etcd::{cluster_toml, Etcd};
use common::*;
use http::Request;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

const WITHIN: Duration = Duration::from_secs(30);
const TOKEN: &str = "cluster-secret";

/// The master probed fast, so that it is out of rotation while down and back at once.
fn rest(mock: &Mock, extra: &str) -> String {
    format!(
        "[health]\ninterval_ms = 100\ntimeout_ms = 300\nhealthy_threshold = 1\nunhealthy_threshold = 1\n\
         [queue]\nmax_attempts = 1000\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n{extra}\n\
         [[masters]]\nid = \"m\"\nsend_url = \"{}\"\nhealth_url = \"{}/health\"\n",
        mock.send_url(),
        mock.url
    )
}

/// A node whose admin API takes [`TOKEN`].
fn node(etcd: &Etcd, prefix: &str, id: &str, priority: u32, rest: &str) -> Switchyard {
    Switchyard::start(&format!(
        "{SERVER}admin_token = \"{TOKEN}\"\n{}{rest}",
        cluster_toml(etcd, prefix, id, priority)
    ))
}

async fn admin(http: &Http, node: &Switchyard, path: &str) -> serde_json::Value {
    let req = Request::get(format!("{}{path}", node.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Default::default())
        .unwrap();
    let (code, _, body) = http.send(req).await;
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    json(&body)
}

async fn depth(http: &Http, node: &Switchyard) -> u64 {
    admin(http, node, "/admin/queue").await["depth"]
        .as_u64()
        .unwrap()
}

/// Waits until `node` sees every id in `ids` as a live member (and a leader).
async fn members(http: &Http, node: &Switchyard, ids: &[&str]) {
    eventually(WITHIN, "the cluster formed", || async {
        let v = admin(http, node, "/cluster/status").await;
        let live = v["nodes"].as_array().unwrap().iter().filter(|n| {
            ids.contains(&n["id"].as_str().unwrap())
                && matches!(n["state"].as_str(), Some("active" | "leader"))
        });
        v["leader"].is_string() && live.count() == ids.len()
    })
    .await;
}

async fn mock_down(http: &Http, mock: &Mock, down: bool) {
    let path = if down { "down" } else { "up" };
    let (code, _, _) = http.post(&format!("{}/control/{path}", mock.url), "").await;
    assert_eq!(code, 200);
}

/// Queues a message on `node` (async); returns its id.
async fn queue_one(http: &Http, node: &Switchyard, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("prefer", "respond-async")];
    all.extend_from_slice(headers);
    let (code, _, body) = http.post_with(&node.messages(), MESSAGE, &all).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    json(&body)["id"].as_str().unwrap().to_string()
}

/// A webhook receiver: every alert's body.
async fn webhook() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let url = raw_server(move |body| {
        let _test_may_be_done = tx.send(json(&body));
        200
    })
    .await;
    (format!("{url}/alerts"), rx)
}

/// Waits for a `stranded_messages` alert; returns its message.
async fn stranded(alerts: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> String {
    let found = tokio::time::timeout(WITHIN, async {
        loop {
            let alert = alerts.recv().await.expect("the webhook is up");
            if alert["kind"] == "stranded_messages" {
                assert_eq!(alert["severity"], "critical", "{alert}");
                return alert["message"].as_str().unwrap().to_string();
            }
        }
    });
    found.await.expect("a stranded_messages alert")
}

#[tokio::test]
async fn sigterm_hands_every_queued_message_to_the_peer_which_delivers_each_once() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &["--record-keys"]);
    let http = Http::new();
    mock_down(&http, &mock, true).await;
    let a = node(&etcd, "/t/hand", "a", 100, &rest(&mock, ""));
    let b = node(&etcd, "/t/hand", "b", 200, &rest(&mock, ""));
    members(&http, &a, &["a", "b"]).await;

    // Queued on a: plain messages, messages with a client's Idempotency-Key, and one
    // routing key's line, whose order must hold.
    let mut expected: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    let mut line = Vec::new();
    for i in 0..90 {
        let key = format!("key-{i}");
        let id = match i % 3 {
            0 => {
                let id = queue_one(&http, &a, &[]).await;
                expected.push(id.clone());
                id
            }
            1 => {
                expected.push(key.clone());
                queue_one(&http, &a, &[("idempotency-key", &key)]).await
            }
            _ => {
                let id = queue_one(&http, &a, &[("x-routing-key", "+971500000001")]).await;
                expected.push(id.clone());
                line.push(id.clone());
                id
            }
        };
        ids.push(id);
    }
    assert_eq!(depth(&http, &a).await, 90);
    assert_eq!(depth(&http, &b).await, 0);
    // The route takes b's admin token, and a batch it can read.
    let route = format!("{}/cluster/handoff", b.admin);
    let (code, _, _) = http.post(&route, "").await;
    assert_eq!(code, 401);
    let garbled = Request::post(&route)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(bytes::Bytes::from_static(b"\0\0\0\x01garbled").into())
        .unwrap();
    let (code, _, body) = http.send(garbled).await;
    assert_eq!(code, 400);
    assert_eq!(json(&body)["error"]["code"], "bad_handoff");

    let mut a = a;
    a.proc.signal("TERM");
    assert_eq!(a.proc.wait_exit(WITHIN), Some(0), "a clean exit");
    let lines = a.proc.drain_lines().join("\n");
    assert!(
        lines.contains("queued messages handed over to the peers"),
        "{lines}"
    );
    // All of it on b, under the same ids; a client's key is a duplicate there.
    assert_eq!(depth(&http, &b).await, 90);
    let (_, _, status) = http.get(&format!("{}/v1/messages/{}", b.url, ids[0])).await;
    assert_eq!(json(&status)["status"], "queued", "{}", json(&status));
    let (code, h, body) = http
        .post_with(
            &b.messages(),
            MESSAGE,
            &[("prefer", "respond-async"), ("idempotency-key", "key-1")],
        )
        .await;
    assert_eq!(code, 202);
    assert_eq!(header(&h, "x-switchyard-duplicate"), "true");
    assert_eq!(json(&body)["id"], ids[1].as_str());
    // b shows a gone as a clean leave, not a loss.
    eventually(WITHIN, "b saw a leave", || async {
        let events = admin(&http, &b, "/ha/events?limit=100").await;
        event_kinds(&events).contains(&"node_left")
    })
    .await;
    let events = admin(&http, &b, "/ha/events?limit=100").await;
    assert!(
        !event_kinds(&events).contains(&"node_unreachable"),
        "{events}"
    );

    // The master is back: each message delivered once, the line in order.
    mock_down(&http, &mock, false).await;
    eventually(WITHIN, "every message delivered", || async {
        mock.received(&http).await >= 90
    })
    .await;
    eventually(WITHIN, "b's queue empty", || async {
        depth(&http, &b).await == 0
    })
    .await;
    let received = json(&http.get(&format!("{}/received/keys", mock.url)).await.2);
    let counts: HashMap<String, u64> = serde_json::from_value(received["keys"].clone()).unwrap();
    let mut want: Vec<&String> = expected.iter().collect();
    want.sort();
    let mut got: Vec<&String> = counts.keys().collect();
    got.sort();
    assert_eq!(got, want, "exactly the queued messages arrived");
    assert!(counts.values().all(|&n| n == 1), "each once: {counts:?}");
    let order: Vec<String> = serde_json::from_value(received["order"].clone()).unwrap();
    let arrived: Vec<&String> = order.iter().filter(|k| line.contains(k)).collect();
    assert_eq!(
        arrived,
        line.iter().collect::<Vec<_>>(),
        "routing key order"
    );

    // a's disk holds none of them: started again, it has nothing queued.
    let a = a.start_again();
    assert_eq!(depth(&http, &a).await, 0);
}

#[tokio::test]
async fn with_no_live_peer_the_queue_stays_on_disk_and_the_next_start_delivers_it() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let http = Http::new();
    mock_down(&http, &mock, true).await;
    let a = node(&etcd, "/t/alone", "a", 100, &rest(&mock, ""));
    members(&http, &a, &["a"]).await;
    for _ in 0..12 {
        queue_one(&http, &a, &[]).await;
    }
    let mut a = a;
    a.proc.signal("TERM");
    assert_eq!(a.proc.wait_exit(WITHIN), Some(0));
    let lines = a.proc.drain_lines().join("\n");
    assert!(lines.contains("stay on this node's disk"), "{lines}");
    assert!(lines.contains("no live peer"), "{lines}");

    let a = a.start_again();
    assert_eq!(depth(&http, &a).await, 12);
    mock_down(&http, &mock, false).await;
    eventually(WITHIN, "delivered after the restart", || async {
        mock.received(&http).await == 12
    })
    .await;
}

#[tokio::test]
async fn a_peer_without_room_keeps_them_here_and_the_leader_reports_them_stranded() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let http = Http::new();
    mock_down(&http, &mock, true).await;
    let (url, mut alerts) = webhook().await;
    let leader_rest = rest(
        &mock,
        &format!("max_messages = 5\n[alerts]\nwebhook_url = \"{url}\""),
    );
    let b = node(&etcd, "/t/full", "b", 200, &leader_rest);
    // a gives up after 1.5 s.
    let a = Switchyard::start(&format!(
        "{SERVER}admin_token = \"{TOKEN}\"\n{}handoff_timeout_ms = 1500\n{}",
        cluster_toml(&etcd, "/t/full", "a", 100),
        rest(&mock, "")
    ));
    members(&http, &b, &["a", "b"]).await;
    for _ in 0..8 {
        queue_one(&http, &a, &[]).await;
    }
    let mut a = a;
    a.proc.signal("TERM");
    assert_eq!(a.proc.wait_exit(WITHIN), Some(0));
    let lines = a.proc.drain_lines().join("\n");
    assert!(
        lines.contains("queue_full"),
        "b refused for want of room: {lines}"
    );
    assert!(lines.contains("stay on this node's disk"), "{lines}");
    assert_eq!(
        depth(&http, &b).await,
        0,
        "a batch is taken whole or not at all"
    );
    let message = stranded(&mut alerts).await;
    assert_eq!(message, "node a left with 8 messages queued on its disk");
    let a = a.start_again();
    assert_eq!(depth(&http, &a).await, 8);
}

#[tokio::test]
async fn a_node_killed_with_messages_queued_is_reported_stranded_by_the_leader() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let http = Http::new();
    mock_down(&http, &mock, true).await;
    let (url, mut alerts) = webhook().await;
    let b = node(
        &etcd,
        "/t/kill9",
        "b",
        200,
        &rest(&mock, &format!("[alerts]\nwebhook_url = \"{url}\"")),
    );
    let a = node(&etcd, "/t/kill9", "a", 100, &rest(&mock, ""));
    members(&http, &b, &["a", "b"]).await;
    for _ in 0..7 {
        queue_one(&http, &a, &[]).await;
    }
    eventually(WITHIN, "b sees a's queue depth", || async {
        let v = admin(&http, &b, "/cluster/status").await;
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "a" && n["queue_depth"] == 7)
    })
    .await;
    let mut a = a;
    a.proc.signal("KILL");
    a.proc.wait_exit(WITHIN);
    let message = stranded(&mut alerts).await;
    assert_eq!(message, "node a is gone with 7 messages queued on its disk");
}

#[tokio::test]
async fn a_peer_that_refuses_is_left_out_and_another_takes_its_share() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let http = Http::new();
    mock_down(&http, &mock, true).await;
    let a = node(&etcd, "/t/spread", "a", 100, &rest(&mock, ""));
    // b has room for 3: its share of a round is refused whole, and goes to c.
    let b = node(
        &etcd,
        "/t/spread",
        "b",
        300,
        &rest(&mock, "max_messages = 3"),
    );
    let c = node(&etcd, "/t/spread", "c", 200, &rest(&mock, ""));
    members(&http, &a, &["a", "b", "c"]).await;
    for _ in 0..40 {
        queue_one(&http, &a, &[]).await;
    }
    let mut a = a;
    a.proc.signal("TERM");
    assert_eq!(a.proc.wait_exit(WITHIN), Some(0));
    let lines = a.proc.drain_lines().join("\n");
    assert!(lines.contains("queue_full"), "{lines}");
    assert!(
        lines.contains("queued messages handed over to the peers"),
        "{lines}"
    );
    assert_eq!(depth(&http, &b).await, 0);
    assert_eq!(depth(&http, &c).await, 40);
}
