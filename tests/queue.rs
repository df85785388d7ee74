//! The persistent queue with real processes: async messages, a `kill -9` in the middle
//! of a flood, a backlog across a restart, dead letters.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ASYNC: [(&str, &str); 1] = [("prefer", "respond-async")];

#[tokio::test]
async fn an_async_message_is_answered_202_then_delivered() {
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    let (code, h, body) = http.post_with(&sy.messages(), MESSAGE, &ASYNC).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let body = json(&body);
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(header(&h, "x-switchyard-message-id"), id);
    assert_eq!(header(&h, "location"), format!("/v1/messages/{id}"));
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    let m = message(&http, &sy, &id).await;
    assert_eq!(m["master"], "a");
    assert_eq!(m["attempts"], 1);
    // The message id went out as the Idempotency-Key.
    assert_eq!(keys_received(&http, &a).await.get(&id), Some(&1));
    let (code, _, _) = http
        .get(&format!(
            "{}/v1/messages/0190aaaa-0000-7000-8000-000000000000",
            sy.url
        ))
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn when_unavailable_reject_answers_503_but_spent_retries_still_queue() {
    let a = Mock::start("a", &["--record-keys"]);
    let config = format!(
        "[queue]\nwhen_unavailable = \"reject\"\nbackoff_initial_ms = 50\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    http.post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    let (code, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 503);
    assert!(!header(&h, "retry-after").is_empty());
    assert_eq!(json(&body)["error"]["code"], "no_eligible_master");

    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    http.post(&format!("{}/control/down", a.url), "").await;
    let (code, _, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 202, "retries used up: queued");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    http.post(&format!("{}/control/up", a.url), "").await;
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
}

#[tokio::test]
async fn dead_letters_after_max_attempts_can_be_listed_retried_and_deleted() {
    let a = Mock::start("a", &["--record-keys"]);
    let config = format!(
        "[health]\npassive_failures = 1000\n[queue]\nmax_attempts = 3\nbackoff_initial_ms = 20\nbackoff_max_ms = 40\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    http.post(&format!("{}/control/down", a.url), "").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, _, body) = http.post_with(&sy.messages(), MESSAGE, &ASYNC).await;
        assert_eq!(code, 202);
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        until_status(&http, &sy, id, "dead", Duration::from_secs(20)).await;
    }
    let m = message(&http, &sy, &ids[0]).await;
    assert_eq!(m["attempts"], 3);
    assert!(m["last_error"].as_str().unwrap().contains("503"), "{m}");
    // Each dead letter is logged at warn with its reason.
    let line = sy
        .proc
        .wait_line("a message became a dead letter", Duration::from_secs(5));
    assert!(line.contains("WARN") && line.contains("503"), "{line}");
    // And it has its access log line, with the attempts it took.
    let access = sy.proc.wait_line("status=\"dead\"", Duration::from_secs(5));
    assert!(
        access.contains("switchyard::access") && access.contains("attempts=3"),
        "{access}"
    );
    let admin = |path: &str| format!("{}{path}", sy.admin);
    let queue = json(&http.get(&admin("/admin/queue")).await.2);
    assert_eq!(
        (queue["depth"].as_u64(), queue["dead_letters"].as_u64()),
        (Some(0), Some(2))
    );
    let list = json(&http.get(&admin("/admin/dead-letters?limit=10")).await.2);
    assert_eq!(list["total"], 2);
    assert_eq!(list["dead_letters"][0]["id"], ids[0].as_str());
    assert_eq!(list["dead_letters"][0]["body"], MESSAGE);

    // Retried once the master is back: delivered. Deleted: gone.
    http.post(&format!("{}/control/up", a.url), "").await;
    let (code, _, body) = http
        .post(&admin(&format!("/admin/dead-letters/{}/retry", ids[0])), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    until_status(&http, &sy, &ids[0], "delivered", Duration::from_secs(20)).await;
    let del = http::Request::delete(admin(&format!("/admin/dead-letters/{}", ids[1])))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(http.send(del).await.0, 200);
    let (code, _, body) = http
        .post(&admin(&format!("/admin/dead-letters/{}/retry", ids[1])), "")
        .await;
    assert_eq!(code, 404);
    assert_eq!(json(&body)["error"]["code"], "dead_letter_not_found");
    let queue = json(&http.get(&admin("/admin/queue")).await.2);
    assert_eq!(queue["dead_letters"], 0);
    assert_eq!(http.get(&admin("/admin/dead-letters?limit=0")).await.0, 400);
}

#[tokio::test]
async fn a_backlog_survives_a_restart_and_drains() {
    let a = Mock::start("a", &["--record-keys"]);
    let config = format!(
        "[alerts]\nqueue_warning = 10\n[queue]\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\nmax_attempts = 1000\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    http.post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (code, _, body) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(code, 202);
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    let health = json(&http.get(&format!("{}/health", sy.admin)).await.2);
    assert_eq!(health["queue_depth"], 50);
    // Above alerts.queue_warning: a warning is raised.
    eventually(Duration::from_secs(10), "queue warning", || async {
        let text = http.get(&format!("{}/metrics", sy.admin)).await.2;
        String::from_utf8_lossy(&text).lines().any(|l| {
            l.starts_with("switchyard_alerts_total{severity=\"warning\"}") && !l.ends_with(" 0")
        })
    })
    .await;
    // The admin state is kept across a restart: `a` stays disabled until enabled.
    let sy = sy.restart();
    assert_eq!(status_of(&http, &sy, "a").await["admin"], "disabled");
    assert_eq!(keys_received(&http, &a).await.len(), 0);
    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    eventually(Duration::from_secs(20), "backlog delivered", || async {
        keys_received(&http, &a).await.len() == ids.len()
    })
    .await;
    let got = keys_received(&http, &a).await;
    for id in &ids {
        assert!(got.contains_key(id), "{id} not delivered");
        until_status(&http, &sy, id, "delivered", Duration::from_secs(10)).await;
    }
}

/// Floods async messages from several clients, `kill -9`s switchyard in the middle,
/// restarts it, and checks that every message answered 202 reached the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_flood_loses_no_accepted_message() {
    let a = Mock::start("a", &["--record-keys", "--latency-ms", "2"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = sy.messages();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, url, accepted) = (Http::new(), url.clone(), accepted.clone());
        clients.push(tokio::spawn(async move {
            loop {
                // A request cut by the kill is simply not accepted.
                let Ok((code, _, body)) = client.try_post_with(&url, MESSAGE, &ASYNC).await else {
                    return;
                };
                if code == 202 {
                    let id = json(&body)["id"].as_str().unwrap().to_string();
                    accepted.lock().unwrap().push(id);
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "a flood under way", || async {
        accepted.lock().unwrap().len() >= 1500
    })
    .await;
    let sy = sy.kill_and_restart();
    for c in clients {
        let _ = c.await;
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    eventually(
        Duration::from_secs(60),
        "every accepted message delivered",
        || async {
            let got = keys_received(&http, &a).await;
            accepted.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let got = keys_received(&http, &a).await;
    let twice = accepted.iter().filter(|id| got[*id] > 1).count();
    eprintln!(
        "accepted {} messages before kill -9: 0 lost, {twice} delivered twice",
        accepted.len()
    );
    // A message stored just before the kill, whose 202 the kill cut off, is also
    // delivered, perhaps after the accepted ones: the queue empties, nothing stays.
    eventually(Duration::from_secs(30), "the queue emptied", || async {
        let health = json(&http.get(&format!("{}/health", sy.admin)).await.2);
        health["queue_depth"] == 0
    })
    .await;
}

/// Per-key order across an outage: messages of one key queue while no master is
/// eligible; new ones of that key keep queueing behind them while the backlog drains,
/// even though a master is up again; the master receives them in acceptance order.
#[tokio::test]
async fn one_key_is_delivered_in_order_across_an_outage() {
    let a = Mock::start("a", &["--record-keys"]);
    let config = format!(
        "[queue]\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\nmax_attempts = 1000\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let send = |n: usize, key: &'static str| {
        let (http, url) = (http.clone(), sy.messages());
        async move {
            let idem = format!("{key}-{n}");
            let headers = [("x-routing-key", key), ("idempotency-key", idem.as_str())];
            http.post_with(&url, MESSAGE, &headers).await.0
        }
    };
    http.post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    for n in 1..=5 {
        assert_eq!(send(n, "alice").await, 202);
        assert_eq!(send(n, "bob").await, 202);
    }
    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    // Sent while alice's backlog may still be waiting: each either queues behind it
    // (202) or, once the backlog is gone, goes straight through (200).
    for n in 6..=10 {
        let code = send(n, "alice").await;
        assert!(code == 202 || code == 200, "{code}");
    }
    eventually(Duration::from_secs(20), "all delivered", || async {
        keys_received(&http, &a).await.len() == 15
    })
    .await;
    let body = json(&http.get(&format!("{}/received/keys", a.url)).await.2);
    let order: Vec<String> = body["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for key in ["alice", "bob"] {
        let seen: Vec<&String> = order.iter().filter(|k| k.starts_with(key)).collect();
        let expected: Vec<String> = (1..=if key == "alice" { 10 } else { 5 })
            .map(|n| format!("{key}-{n}"))
            .collect();
        assert_eq!(
            seen,
            expected.iter().collect::<Vec<_>>(),
            "{key}: {order:?}"
        );
    }
}

#[tokio::test]
async fn idempotency_keys_outlive_a_kill_9() {
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    let sent = [("idempotency-key", "order-1")];
    let (code, h, first_body) = http.post_with(&sy.messages(), MESSAGE, &sent).await;
    assert_eq!(code, 200);
    let sent_id = header(&h, "x-switchyard-message-id").to_string();
    let queued = [("idempotency-key", "order-2"), ASYNC[0]];
    let (code, h, _) = http.post_with(&sy.messages(), MESSAGE, &queued).await;
    assert_eq!(code, 202);
    let queued_id = header(&h, "x-switchyard-message-id").to_string();
    until_status(&http, &sy, &queued_id, "delivered", Duration::from_secs(10)).await;

    // Both answers were given after their keys were on disk.
    let sy = sy.kill_and_restart();
    let (code, h, body) = http.post_with(&sy.messages(), MESSAGE, &sent).await;
    assert_eq!(code, 200, "the first answer again");
    assert_eq!(body, first_body);
    assert_eq!(header(&h, "x-switchyard-message-id"), sent_id);
    assert_eq!(header(&h, "x-switchyard-master"), "a");
    assert_eq!(header(&h, "x-switchyard-duplicate"), "true");
    let (code, h, body) = http.post_with(&sy.messages(), MESSAGE, &queued).await;
    assert_eq!(code, 202, "a queued message's repeat gets its 202");
    assert_eq!(header(&h, "x-switchyard-message-id"), queued_id);
    assert_eq!(header(&h, "location"), format!("/v1/messages/{queued_id}"));
    assert_eq!(header(&h, "x-switchyard-duplicate"), "true");
    assert_eq!(
        json(&body)["status"],
        "delivered",
        "with where it stands now"
    );
    let keys = keys_received(&http, &a).await;
    assert_eq!(
        (keys.get("order-1"), keys.get("order-2")),
        (Some(&1), Some(&1)),
        "neither was sent again"
    );
    let m = message(&http, &sy, &sent_id).await;
    assert_eq!(
        (&m["status"], &m["master"]),
        (&"delivered".into(), &"a".into())
    );
    // A new key is sent as usual.
    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("idempotency-key", "order-3")])
        .await;
    assert_eq!(code, 200);
    assert_eq!(header(&h, "x-switchyard-duplicate"), "");
}

#[tokio::test]
async fn queued_delivery_counts_a_refusal_as_a_live_answer() {
    // 503, 422, 503: two failures, but not in a row, so with passive_failures = 2 the
    // master stays in and the fourth attempt delivers the message.
    let answers = [503, 422, 503, 200];
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let url = raw_server(move |_| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        answers.get(n).copied().unwrap_or(200)
    })
    .await;
    let config = format!(
        "[health]\npassive_failures = 2\n[queue]\nmax_attempts = 10\nbackoff_initial_ms = 20\nbackoff_max_ms = 40\n[[masters]]\nid = \"s\"\nsend_url = \"{url}/send\"\n"
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let (code, _, body) = http.post_with(&sy.messages(), MESSAGE, &ASYNC).await;
    assert_eq!(code, 202);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    assert_eq!(message(&http, &sy, &id).await["attempts"], 4);
    let status = json(&http.get(&format!("{}/ha/status", sy.admin)).await.2);
    assert_eq!(status["masters"][0]["failed_total"], 2, "{status}");
    // Never taken out: an ejection would have marked it degraded.
    let events = json(
        &http
            .get(&format!("{}/ha/events?limit=100", sy.admin))
            .await
            .2,
    );
    let kinds = event_kinds(&events);
    assert!(!kinds.contains(&"degraded"), "{kinds:?}");
}

#[tokio::test]
async fn a_delivery_under_way_counts_as_queued_for_its_master() {
    let a = Mock::start("a", &["--latency-ms", "1500"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    let (code, _, body) = http.post_with(&sy.messages(), MESSAGE, &ASYNC).await;
    assert_eq!(code, 202);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let admin = |path: &str| format!("{}{path}", sy.admin);
    eventually(
        Duration::from_secs(10),
        "the delivery under way",
        || async { json(&http.get(&admin("/admin/queue")).await.2)["per_master"]["a"] == 1 },
    )
    .await;
    let status = json(&http.get(&admin("/ha/status")).await.2);
    let master = &status["masters"][0];
    assert_eq!(
        (master["queued"].as_u64(), master["in_flight"].as_u64()),
        (Some(1), Some(0)),
        "{master}"
    );
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    let queue = json(&http.get(&admin("/admin/queue")).await.2);
    assert_eq!(queue["per_master"]["a"], 0, "{queue}");
}
