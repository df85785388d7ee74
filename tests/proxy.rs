//! The data path against real mock masters: strategies, retries, errors, idempotency.

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn masters_hit(
    http: &Http,
    sy: &Switchyard,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, h, _) = http.post_with(&sy.messages(), MESSAGE, headers).await;
        assert_eq!(status, 200);
        *seen
            .entry(header(&h, "x-switchyard-master").to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_spreads_exactly_and_forwards_unchanged() {
    let (a, b, c) = (
        Mock::start("a", &[]),
        Mock::start("b", &[]),
        Mock::start("c", &[]),
    );
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, ""), (&c, "")]));
    let http = Http::new();
    let seen = masters_hit(&http, &sy, 30, &[]).await;
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{seen:?}"
    );
    for m in [&a, &b, &c] {
        assert_eq!(m.received(&http).await, 10);
    }
    // The master's answer comes back with the ids; the message id is the idempotency key sent.
    let (status, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 200);
    let id = header(&h, "x-switchyard-message-id");
    assert_eq!(id.len(), 36, "a UUID");
    let body = json(&body);
    assert_eq!(body["accepted"], true);
    assert_eq!(body["idempotency_key"], id);
    assert_eq!(body["master"], header(&h, "x-switchyard-master"));
}

#[tokio::test]
async fn weighted_priority_follows_weights_and_spills() {
    let (a, b, s) = (
        Mock::start("a", &[]),
        Mock::start("b", &[]),
        Mock::start("s", &[]),
    );
    let cfg = format!(
        "[routing]\nstrategy = \"weighted_priority\"\n{}",
        masters_toml(&[
            (&a, "weight = 3"),
            (&b, "weight = 1"),
            (&s, "role = \"secondary\"\npriority = 2")
        ])
    );
    let sy = Switchyard::start(&cfg);
    let http = Http::new();
    let seen = masters_hit(&http, &sy, 40, &[]).await;
    assert_eq!(
        (seen["a"], seen["b"], seen.get("s")),
        (30, 10, None),
        "{seen:?}"
    );
    for id in ["a", "b"] {
        let (st, _, _) = http
            .post(&format!("{}/ha/masters/{id}/disable", sy.admin), "")
            .await;
        assert_eq!(st, 200);
    }
    let seen = masters_hit(&http, &sy, 5, &[]).await;
    assert_eq!(seen["s"], 5, "spills to priority 2: {seen:?}");
}

#[tokio::test]
async fn least_loaded_prefers_the_idle_master() {
    let slow = Mock::start("slow", &["--latency-ms", "300"]);
    let fast = Mock::start("fast", &[]);
    let cfg = format!(
        "[routing]\nstrategy = \"least_loaded\"\n{}",
        masters_toml(&[(&slow, ""), (&fast, "")])
    );
    let sy = Switchyard::start(&cfg);
    let http = Http::new();
    // Three senders at once: the slow master keeps requests in flight, so the load
    // (and, on ties, the latency) sends nearly everything to the fast one.
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (http, url) = (http.clone(), sy.messages());
        workers.push(tokio::spawn(async move {
            for _ in 0..20 {
                assert_eq!(http.post(&url, MESSAGE).await.0, 200);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (s, f) = (slow.received(&http).await, fast.received(&http).await);
    assert_eq!(s + f, 60);
    assert!(
        s <= 10,
        "slow master got {s} of 60 (round-robin would give 30)"
    );
}

#[tokio::test]
async fn region_routes_and_marks_fallback() {
    let (uae, eu) = (Mock::start("uae", &[]), Mock::start("eu", &[]));
    let cfg = format!(
        "[routing]\nstrategy = \"region\"\nregion_field = \"/region\"\n{}",
        masters_toml(&[
            (&uae, "region = \"UAE\""),
            (&eu, "region = \"EU\"\npriority = 2")
        ])
    );
    let sy = Switchyard::start(&cfg);
    let http = Http::new();
    let (_, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("x-region", "uae")])
        .await;
    assert_eq!(header(&h, "x-switchyard-master"), "uae");
    assert_eq!(header(&h, "x-switchyard-region-fallback"), "");
    let (_, h, _) = http
        .post(&sy.messages(), r#"{"region": "eu", "to": "1"}"#)
        .await;
    assert_eq!(header(&h, "x-switchyard-master"), "eu");
    // Unknown region: all masters, best priority first, marked as a fallback.
    let (st, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("x-region", "US")])
        .await;
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-switchyard-master"), "uae");
    assert_eq!(header(&h, "x-switchyard-region-fallback"), "true");
    // A configured pointer on a body that is not JSON is a bad request.
    let (st, _, body) = http.post(&sy.messages(), "not json").await;
    assert_eq!(st, 400);
    assert_eq!(json(&body)["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn killed_master_mid_run_gives_no_client_errors() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let mut victim = Mock::start("victim", &[]);
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, ""), (&victim, "")]));
    let http = Http::new();
    // Clients send until told to stop, so the kill always falls inside the run.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url) = (http.clone(), sy.messages());
        let (stop, sent) = (stop.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                codes.push(http.post(&url, MESSAGE).await.0.as_u16());
                sent.fetch_add(1, Ordering::Relaxed);
            }
            codes
        }));
    }
    let victim_http = http.clone();
    eventually(Duration::from_secs(10), "victim took traffic", || {
        let (h, v) = (victim_http.clone(), &victim);
        async move { v.received(&h).await > 10 }
    })
    .await;
    victim.proc.child.kill().unwrap();
    victim.proc.wait_exit(Duration::from_secs(5));
    let at_kill = sent.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(20),
        "200 more requests after the kill",
        || {
            let sent = sent.clone();
            async move { sent.load(Ordering::Relaxed) >= at_kill + 200 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let codes = w.await.unwrap();
        assert!(
            codes.iter().all(|&c| c == 200),
            "client saw errors: {codes:?}"
        );
    }
    let v = status_of(&http, &sy, "victim").await;
    assert!(v["failed_total"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["last_error"].as_str().unwrap().contains("connect"), "{v}");
}

#[tokio::test]
async fn error_answers_have_json_bodies() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}max_body_bytes = 100\n{}",
        masters_toml(&[(&a, "")])
    ));
    let http = Http::new();
    let (st, _, b) = http.get(&format!("{}/nope", sy.url)).await;
    assert_eq!(
        (st.as_u16(), json(&b)["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (st, h, b) = http.get(&sy.messages()).await;
    assert_eq!((st.as_u16(), header(&h, "allow")), (405, "POST"));
    assert!(json(&b)["error"]["message"].is_string());
    let (st, _, b) = http.post(&sy.messages(), &"x".repeat(101)).await;
    assert_eq!(
        (st.as_u16(), json(&b)["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let (st, _, _) = http.post(&sy.messages(), &"x".repeat(100)).await;
    assert_eq!(st, 200);
    let (st, _, b) = http.get(&format!("{}/v1/messages/unknown", sy.url)).await;
    assert_eq!(
        (st.as_u16(), json(&b)["error"]["code"].as_str()),
        (404, Some("message_not_found"))
    );
}

#[tokio::test]
async fn with_the_queue_off_no_eligible_master_is_503_with_retry_after() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "[queue]\nenabled = false\n{}",
        masters_toml(&[(&a, "")])
    ));
    let http = Http::new();
    http.post(&format!("{}/ha/masters/a/drain", sy.admin), "")
        .await;
    let (st, h, b) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(st, 503);
    assert!(!header(&h, "retry-after").is_empty());
    assert_eq!(json(&b)["error"]["code"], "no_eligible_master");
    // Every master failing retryably: tried, then 503 naming the last error.
    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    http.post(&format!("{}/control/down", a.url), "").await;
    let (st, _, b) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(st, 503);
    assert_eq!(json(&b)["error"]["code"], "masters_unavailable");
}

#[tokio::test]
async fn idempotent_repeat_is_not_sent_again() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, "")]));
    let http = Http::new();
    let key = [("idempotency-key", "order-42")];
    let (st1, h1, body1) = http.post_with(&sy.messages(), MESSAGE, &key).await;
    let (st2, h2, body2) = http.post_with(&sy.messages(), MESSAGE, &key).await;
    assert_eq!((st1.as_u16(), st2.as_u16()), (200, 200));
    assert_eq!(
        header(&h1, "x-switchyard-message-id"),
        header(&h2, "x-switchyard-message-id")
    );
    assert_eq!(header(&h2, "x-switchyard-duplicate"), "true");
    assert_eq!(header(&h1, "x-switchyard-duplicate"), "");
    assert_eq!(body1, body2);
    assert_eq!(
        json(&body1)["idempotency_key"],
        "order-42",
        "the client's key is forwarded"
    );
    assert_eq!(a.received(&http).await + b.received(&http).await, 1);
    let id = header(&h1, "x-switchyard-message-id");
    let (st, _, rec) = http.get(&format!("{}/v1/messages/{id}", sy.url)).await;
    assert_eq!(st, 200);
    let rec = json(&rec);
    assert_eq!(rec["status"], "delivered");
    assert_eq!(rec["master"], header(&h1, "x-switchyard-master"));
    assert_eq!(rec["attempts"], 1);
}

#[tokio::test]
async fn restarted_master_leaves_no_stale_connection_errors() {
    // One master only: a stale pooled connection cannot be hidden by a retry elsewhere.
    let mut a = Mock::start("a", &[]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (http, url) = (http.clone(), sy.messages());
        senders.push(tokio::spawn(
            async move { http.post(&url, MESSAGE).await.0 },
        ));
    }
    for s in senders {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Restart the master on the same port: every pooled connection is now closed.
    let listen = a.url.trim_start_matches("http://").to_string();
    a.proc.child.kill().unwrap();
    a.proc.wait_exit(Duration::from_secs(5));
    let _restarted = Mock::start_on("a", &listen, &[]);
    for _ in 0..20 {
        let (st, _, body) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn key_of_a_cancelled_request_is_freed_for_its_repeat() {
    let slow = Mock::start("slow", &["--latency-ms", "400"]);
    let sy = Switchyard::start(&masters_toml(&[(&slow, "")]));
    // A client sends with a key and hangs up before the answer.
    {
        use tokio::io::AsyncWriteExt;
        let addr = sy.url.trim_start_matches("http://").to_string();
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: x\r\nidempotency-key: gone-1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{MESSAGE}",
            MESSAGE.len()
        );
        raw.write_all(req.as_bytes()).await.unwrap();
        let http = Http::new();
        wait_in_flight(&http, &sy.admin, 1).await;
    }
    // The repeat is answered, not left waiting for an answer that will never come.
    let http = Http::new();
    let (st, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("idempotency-key", "gone-1")])
        .await;
    assert_eq!(st, 200);
    assert_eq!(header(&h, "x-switchyard-master"), "slow");
}
