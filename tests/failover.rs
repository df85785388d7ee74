//! The failover controller against real mock masters: a primary killed under steady
//! traffic, the standby promoted, a webhook alert, failback, the audit trail across a
//! restart; manual failover, pause and resume.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Fast health settings so the test runs in seconds.
const FAST: &str = "
[health]
interval_ms = 100
timeout_ms = 300
healthy_threshold = 2
unhealthy_threshold = 2
passive_failures = 2

[failover]
recovery_wait_ms = 600
failback = \"auto\"
failback_delay_ms = 300
slow_start_ms = 300
";

fn probed(m: &Mock, extra: &str) -> String {
    format!("health_url = \"{}/health\"\n{extra}", m.url)
}

async fn events(http: &Http, sy: &Switchyard) -> Vec<serde_json::Value> {
    let body = json(
        &http
            .get(&format!("{}/ha/events?limit=100", sy.admin))
            .await
            .2,
    );
    body["events"].as_array().unwrap().clone()
}

fn has_event(events: &[serde_json::Value], kind: &str, master: &str) -> bool {
    events
        .iter()
        .any(|e| e["kind"] == kind && e["master"] == master)
}

/// Sends messages one after another until stopped; counts the ones not answered 200.
/// Four clients sending until `stop`; join them before counting `errors`.
type Traffic = (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
);

fn steady_traffic(http: Http, url: String) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, url) = (http.clone(), url.clone());
        let (stop, sent, errors) = (stop.clone(), sent.clone(), errors.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let (status, _, body) = http.post(&url, MESSAGE).await;
                sent.fetch_add(1, Relaxed);
                if status != 200 {
                    errors.fetch_add(1, Relaxed);
                    eprintln!("client saw {status}: {}", String::from_utf8_lossy(&body));
                }
            }
        }));
    }
    (stop, sent, errors, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_and_back_without_client_errors() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let s = Mock::start("s", &[]);
    let (webhook, mut alerts) = webhook_receiver().await;
    let config = format!(
        "{FAST}\n[alerts]\nwebhook_url = \"{webhook}\"\n{}",
        masters_toml(&[
            (&a, &probed(&a, "role = \"primary\"")),
            (&b, &probed(&b, "role = \"primary\"")),
            (&s, &probed(&s, "role = \"standby\"")),
        ])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let (stop, sent, errors, clients) = steady_traffic(http.clone(), sy.messages());
    eventually(Duration::from_secs(10), "traffic flowing", || async {
        sent.load(Relaxed) > 50
    })
    .await;

    // Kill the primary `a`: its port now refuses connections.
    let a_addr = a.url.trim_start_matches("http://").to_string();
    drop(a);
    eventually(Duration::from_secs(10), "a out of rotation", || async {
        status_of(&http, &sy, "a").await["eligible"] == false
    })
    .await;
    eventually(Duration::from_secs(10), "standby promoted", || async {
        let m = status_of(&http, &sy, "s").await;
        m["promoted"] == true && m["eligible"] == true
    })
    .await;
    let failover = json(&http.get(&format!("{}/ha/failover", sy.admin)).await.2);
    assert_eq!(failover["active"][0]["failed"], "a", "{failover}");
    assert_eq!(failover["active"][0]["backup"], "s", "{failover}");
    assert_eq!(failover["failovers_total"], 1);

    // The critical alert reached the webhook.
    let critical = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let alert = alerts.recv().await.expect("receiver running");
            if alert["severity"] == "critical" && alert["master"] == "a" {
                return alert;
            }
        }
    })
    .await
    .expect("a critical alert about a");
    assert!(
        critical["kind"].is_string()
            && critical["at"].is_string()
            && critical["message"].is_string()
    );

    // Bring `a` back on the same port: slow start, then failback demotes the standby.
    let back = Mock::start_on("a", &a_addr, &[]);
    eventually(Duration::from_secs(15), "failback", || async {
        let m = status_of(&http, &sy, "s").await;
        m["promoted"] == false && m["eligible"] == false
    })
    .await;
    eventually(Duration::from_secs(10), "a healthy", || async {
        status_of(&http, &sy, "a").await["state"] == "healthy"
    })
    .await;
    // Its last error belonged to the outage, which is over.
    let back_a = status_of(&http, &sy, "a").await;
    assert!(back_a["last_error"].is_null(), "{back_a}");
    stop.store(true, Relaxed);
    for client in clients {
        client.await.expect("a client panicked");
    }
    assert_eq!(
        errors.load(Relaxed),
        0,
        "client-visible errors during the failover"
    );

    let seen = events(&http, &sy).await;
    for kind in [
        "degraded",
        "failed",
        "failover_started",
        "failover_completed",
        "recovered",
        "failback",
    ] {
        assert!(
            has_event(&seen, kind, "a"),
            "no {kind} event for a in {seen:?}"
        );
    }

    // The audit trail survives a restart.
    let sy = sy.restart();
    let after = events(&http, &sy).await;
    assert!(has_event(&after, "failover_started", "a"), "{after:?}");
    assert!(has_event(&after, "failback", "a"), "{after:?}");
    drop(back);
}

#[tokio::test]
async fn manual_failover_pause_and_resume() {
    let a = Mock::start("a", &[]);
    let s = Mock::start("s", &[]);
    let (webhook, mut alerts) = webhook_receiver().await;
    let config = format!(
        "{FAST}\n[alerts]\nwebhook_url = \"{webhook}\"\n{}",
        masters_toml(&[
            (&a, &probed(&a, "role = \"primary\"")),
            (&s, "role = \"standby\""),
        ])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let admin = |path: &str| format!("{}{path}", sy.admin);

    let (code, _, body) = http.post(&admin("/ha/masters/a/failover"), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["backup"], "s");
    // An operator's failover is no alarm: the first alert is its completion (info).
    let first = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
        .await
        .expect("an alert")
        .expect("receiver running");
    assert_eq!(
        (first["kind"].as_str(), first["severity"].as_str()),
        (Some("failover_completed"), Some("info")),
        "{first}"
    );
    let (status, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-master"), "s");
    // A second failover of the same master is refused.
    let (code, _, body) = http.post(&admin("/ha/masters/a/failover"), "").await;
    assert_eq!(code, 409);
    assert_eq!(json(&body)["error"]["code"], "failover_refused");

    let (code, _, body) = http.post(&admin("/ha/masters/a/failback"), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (_, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(header(&h, "x-switchyard-master"), "a");
    let (code, _, _) = http.post(&admin("/ha/masters/a/failback"), "").await;
    assert_eq!(code, 409);
    let (code, _, _) = http.post(&admin("/ha/masters/nope/failover"), "").await;
    assert_eq!(code, 404);

    // Paused: a failed master is not failed over.
    let (code, _, body) = http.post(&admin("/ha/pause"), "").await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["failover_paused"], true);
    let (code, _, _) = http.get(&admin("/ha/pause")).await;
    assert_eq!(code, 405);
    http.post(&format!("{}/control/down", a.url), "").await;
    eventually(Duration::from_secs(10), "a failed", || async {
        status_of(&http, &sy, "a").await["state"] == "failed"
    })
    .await;
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], false);
    let status = json(&http.get(&admin("/ha/status")).await.2);
    assert_eq!(status["failover_paused"], true);

    // Resume fails over what failed while paused.
    let (code, _, _) = http.post(&admin("/ha/resume"), "").await;
    assert_eq!(code, 200);
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], true);
    let seen = events(&http, &sy).await;
    assert!(seen.iter().any(|e| e["kind"] == "paused"));
    assert!(seen.iter().any(|e| e["kind"] == "resumed"));
    let (code, _, _) = http.get(&admin("/ha/events?limit=0")).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn the_breaker_stops_automatic_failover_until_resume() {
    let a = Mock::start("a", &[]);
    let s = Mock::start("s", &[]);
    // max_failovers = 0: the first automatic failover is already one too many.
    let config = format!(
        "{}\nmax_failovers = 0\n{}",
        FAST,
        masters_toml(&[
            (&a, &probed(&a, "role = \"primary\"")),
            (&s, &probed(&s, "role = \"standby\"")),
        ])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    http.post(&format!("{}/control/down", a.url), "").await;
    eventually(Duration::from_secs(10), "breaker open", || async {
        json(&http.get(&format!("{}/ha/failover", sy.admin)).await.2)["breaker_open"] == true
    })
    .await;
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], false);
    assert!(events(&http, &sy)
        .await
        .iter()
        .any(|e| e["kind"] == "breaker_open"));
    // No eligible master now: the message is queued (202) and waits.
    let (code, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let id = json(&body)["id"].as_str().unwrap().to_string();
    assert_eq!(header(&h, "location"), format!("/v1/messages/{id}"));
    assert_eq!(message(&http, &sy, &id).await["status"], "queued");

    // `a` comes back before the breaker is closed: nothing is left to fail over.
    http.post(&format!("{}/control/up", a.url), "").await;
    eventually(Duration::from_secs(10), "a back in rotation", || async {
        status_of(&http, &sy, "a").await["eligible"] == true
    })
    .await;
    let (code, _, body) = http.post(&format!("{}/ha/resume", sy.admin), "").await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["breaker_open"], false);
    // A manual failover still works whatever the breaker says.
    let (code, _, _) = http
        .post(&format!("{}/ha/masters/a/failover", sy.admin), "")
        .await;
    assert_eq!(code, 200);
    let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 200);
    assert_eq!(header(&h, "x-switchyard-master"), "s");
    // The queued message went out once a master was back.
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
}

/// Probe results arriving faster than the controller's tick must not starve its
/// periodic work (failback, reload follow-up): twelve masters probed every 20 ms.
#[tokio::test]
async fn failback_happens_under_a_stream_of_probe_results() {
    let a = Mock::start("a", &[]);
    let busy = Mock::start("busy", &[]);
    let s = Mock::start("s", &[]);
    let mut masters = masters_toml(&[
        (&a, &probed(&a, "role = \"primary\"")),
        (&s, &probed(&s, "role = \"standby\"")),
    ]);
    for i in 0..10 {
        masters.push_str(&format!(
            "\n[[masters]]\nid = \"p{i}\"\nsend_url = \"{}\"\n{}\n",
            busy.send_url(),
            probed(&busy, "role = \"secondary\"")
        ));
    }
    // Failback comes after slow start ends, when no machine deadline is left to wake
    // the controller: only its periodic tick can do it.
    let fast = FAST
        .replace("interval_ms = 100", "interval_ms = 20")
        .replace("failback_delay_ms = 300", "failback_delay_ms = 800");
    let config = format!("{fast}{masters}");
    let sy = Switchyard::start(&config);
    let http = Http::new();
    http.post(&format!("{}/control/down", a.url), "").await;
    eventually(Duration::from_secs(10), "standby promoted", || async {
        status_of(&http, &sy, "s").await["promoted"] == true
    })
    .await;
    http.post(&format!("{}/control/up", a.url), "").await;
    eventually(Duration::from_secs(10), "failback", || async {
        status_of(&http, &sy, "s").await["promoted"] == false
            && status_of(&http, &sy, "a").await["eligible"] == true
    })
    .await;
}
