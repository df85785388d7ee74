//! Bans against real processes (SPEC section 10): mock masters started with
//! `--ban-after N` answer 403 `{"error": "account banned"}` once banned while their
//! `/health` stays up. A ban mid-run suspends the master, promotes its standby at once,
//! and no later message reaches it, across a restart too, until it is reinstated.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// `a` (primary, region X) and `b` (primary, region Y) share the traffic; `s` is the
/// standby for `a`. Probes every 100 ms, a recovery wait far longer than any test.
fn config(a: &Mock, b: &Mock, s: &Mock, health: &str, extra: &str) -> String {
    let probe = |m: &Mock| format!("health_url = \"{}/health\"\n", m.url);
    format!(
        "[health]\ninterval_ms = 100\n{health}\n\
         [failover]\nrecovery_wait_ms = 600000\nfailback = \"manual\"\nslow_start_ms = 1000\n{extra}\n{}",
        masters_toml(&[
            (a, &format!("{}region = \"X\"", probe(a))),
            (b, &format!("{}region = \"Y\"", probe(b))),
            (s, &format!("{}role = \"standby\"\nregion = \"X\"", probe(s))),
        ])
    )
}

/// (accepted, banned) sends as the mock counted them.
async fn counts(http: &Http, m: &Mock) -> (u64, u64) {
    let (_, _, body) = http.get(&format!("{}/received", m.url)).await;
    let r = json(&body);
    (r["count"].as_u64().unwrap(), r["banned"].as_u64().unwrap())
}

async fn events(http: &Http, sy: &Switchyard) -> Vec<serde_json::Value> {
    let (_, _, body) = http
        .get(&format!("{}/ha/events?limit=1000", sy.admin))
        .await;
    json(&body)["events"].as_array().unwrap().clone()
}

/// Sends `n` messages one after another; each must be delivered at once (200).
async fn send_ok(http: &Http, sy: &Switchyard, n: usize) {
    for i in 0..n {
        let (status, _, body) = http.post(&sy.messages(), &format!("{{\"n\": {i}}}")).await;
        assert_eq!(
            status,
            200,
            "message {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

fn cli(sy: &Switchyard, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--admin", &sy.admin])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_status_suspends_the_master_for_good_across_a_restart_until_reinstated() {
    let a = Mock::start("a", &["--ban-after", "3"]);
    let (b, s) = (Mock::start("b", &[]), Mock::start("s", &[]));
    let sy = Switchyard::start(&config(&a, &b, &s, "ban_statuses = [403]", ""));
    let http = Http::new();

    // Round robin over a and b: a takes three, then bans; no client sees the 403.
    send_ok(&http, &sy, 12).await;
    assert_eq!(
        counts(&http, &a).await,
        (3, 1),
        "one ban answer, nothing after"
    );
    eventually(WAIT, "a suspended, s promoted", || async {
        let (a_now, s_now) = (
            status_of(&http, &sy, "a").await,
            status_of(&http, &sy, "s").await,
        );
        a_now["state"] == "suspended" && s_now["promoted"] == true && s_now["eligible"] == true
    })
    .await;
    let a_now = status_of(&http, &sy, "a").await;
    assert!(
        a_now["suspended_reason"].as_str().unwrap().contains("403"),
        "{a_now}"
    );
    assert_eq!(a_now["eligible"], false);
    // Probes pass all along: many intervals later, still suspended, still no traffic.
    send_ok(&http, &sy, 20).await;
    assert_eq!(status_of(&http, &sy, "a").await["state"], "suspended");
    assert_eq!(counts(&http, &a).await, (3, 1));
    assert!(counts(&http, &s).await.0 > 0, "the standby took a's share");
    let seen = events(&http, &sy).await;
    assert!(
        seen.iter()
            .any(|e| e["kind"] == "suspended" && e["master"] == "a"),
        "{seen:?}"
    );

    // A restart keeps the suspension and the standby in a's place.
    let sy = sy.restart();
    assert_eq!(status_of(&http, &sy, "a").await["state"], "suspended");
    send_ok(&http, &sy, 10).await;
    assert_eq!(
        counts(&http, &a).await,
        (3, 1),
        "nothing reached a after the restart"
    );
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], true);
    let (_, _, metrics) = http.get(&format!("{}/metrics", sy.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_master_state")
                && l.contains("master=\"a\"")
                && l.contains("state=\"suspended\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    // And a `kill -9`: it was saved when it happened.
    let sy = sy.kill_and_restart();
    assert_eq!(status_of(&http, &sy, "a").await["state"], "suspended");
    let out = cli(&sy, &["status"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(
        row.contains("suspended") && row.contains("suspended: answered 403"),
        "{table}"
    );

    // Reinstated from the command line: recovering, still held until failback.
    let out = cli(&sy, &["masters", "reinstate", "a"]);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.contains("a: reinstated"), "{line}");
    let a_now = status_of(&http, &sy, "a").await;
    assert_ne!(a_now["state"], "suspended");
    assert_eq!(a_now["suspended_reason"], serde_json::Value::Null);
    // Not suspended any more: 409; an unknown master: 404.
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/a/reinstate", sy.admin), "")
        .await;
    assert_eq!(code, 409);
    assert_eq!(json(&body)["error"]["code"], "not_suspended");
    let (code, _, _) = http
        .post(&format!("{}/ha/masters/zz/reinstate", sy.admin), "")
        .await;
    assert_eq!(code, 404);
    let seen = events(&http, &sy).await;
    assert!(seen
        .iter()
        .any(|e| e["kind"] == "reinstated" && e["master"] == "a"));
    assert!(seen
        .iter()
        .any(|e| e["kind"] == "admin_action" && e["route"] == "POST /ha/masters/a/reinstate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_pattern_in_queued_delivery_is_no_attempt_and_the_message_goes_elsewhere() {
    let a = Mock::start("a", &["--ban-after", "2"]);
    let (b, s) = (Mock::start("b", &[]), Mock::start("s", &[]));
    // One attempt each: a ban counted as one would make a dead letter.
    let extra = "[queue]\nmax_attempts = 1\nbackoff_initial_ms = 50\n";
    let sy = Switchyard::start(&config(
        &a,
        &b,
        &s,
        "ban_patterns = [\"account banned\"]",
        extra,
    ));
    let http = Http::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (status, _, body) = http
            .post_with(
                &sy.messages(),
                &format!("{{\"n\": {i}}}"),
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(status, 202);
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        until_status(&http, &sy, id, "delivered", WAIT).await;
    }
    let (accepted, banned) = counts(&http, &a).await;
    assert_eq!(accepted, 2);
    assert!(banned >= 1, "a ban was met");
    eventually(WAIT, "a suspended", || async {
        status_of(&http, &sy, "a").await["state"] == "suspended"
    })
    .await;
    let before = counts(&http, &a).await;
    send_ok(&http, &sy, 10).await;
    assert_eq!(
        counts(&http, &a).await,
        before,
        "nothing reaches a suspended master"
    );
    let total: u64 = counts(&http, &b).await.0 + counts(&http, &s).await.0;
    assert_eq!(total, 20, "the other 20 went to b and s, each once");
}
