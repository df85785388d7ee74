//! Budgets per master (SPEC section 10), against the real binary and mock masters:
//! a burst far above the masters' pace is all accepted and delivered, never above any
//! master's pace; with the queue off, the answer is 429 with an honest `Retry-After`.

mod common;

use common::*;
use std::time::Duration;

/// The most a mock master saw in any one-second window, and how many it accepted.
async fn received(http: &Http, mock: &Mock) -> (u64, u64) {
    let (_, _, body) = http.get(&format!("{}/received", mock.url)).await;
    let r = json(&body);
    (
        r["count"].as_u64().unwrap(),
        r["max_per_second"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nine_hundred_at_once_to_three_masters_at_three_a_second() {
    // The mocks do not refuse anything: what they saw is what switchyard sent.
    let mocks: Vec<Mock> = ["a", "b", "c"]
        .iter()
        .map(|id| Mock::start(id, &[]))
        .collect();
    let budget = "rate_per_sec = 3\nburst = 1";
    let masters: Vec<(&Mock, &str)> = mocks.iter().map(|m| (m, budget)).collect();
    let sy = Switchyard::start(&format!(
        "[queue]\nmax_attempts = 1000\n{}",
        masters_toml(&masters)
    ));
    let http = Http::new();
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..900 {
        let (http, url) = (http.clone(), sy.messages());
        posts.spawn(async move {
            let body = format!("{{\"n\": {n}}}");
            http.post(&url, &body).await.0.as_u16()
        });
    }
    let (mut delivered_now, mut queued) = (0, 0);
    while let Some(status) = posts.join_next().await {
        match status.unwrap() {
            200 => delivered_now += 1,
            202 => queued += 1,
            other => panic!("a message was refused with {other}"),
        }
    }
    assert_eq!(delivered_now + queued, 900);
    assert!(queued > 0, "900 at once cannot all go at 9 a second");
    // 900 / 9 a second = 100 s to drain, with room for a loaded machine.
    eventually(Duration::from_secs(300), "all 900 delivered", || async {
        let mut total = 0;
        for m in &mocks {
            total += received(&http, m).await.0;
        }
        total >= 900
    })
    .await;
    let mut total = 0;
    for m in &mocks {
        let (count, max) = received(&http, m).await;
        total += count;
        assert!(count > 0, "{} took no share", m.id);
        // rate_per_sec + burst in any one-second window (SPEC section 10).
        assert!(max <= 4, "{} got {max} in one second", m.id);
    }
    assert_eq!(total, 900, "each message exactly once");
}

#[tokio::test]
async fn with_the_queue_off_over_budget_is_429_with_retry_after() {
    let mock = Mock::start("slow", &[]);
    let sy = Switchyard::start(&format!(
        "[queue]\nenabled = false\n{}",
        masters_toml(&[(&mock, "rate_per_sec = 0.5\nburst = 1")])
    ));
    let http = Http::new();
    let (status, _, _) = http.post(&sy.messages(), "{}").await;
    assert_eq!(status, 200, "the first goes at once");
    let (status, headers, body) = http.post(&sy.messages(), "{}").await;
    assert_eq!(status, 429);
    assert_eq!(json(&body)["error"]["code"], "over_budget");
    // One message every 2 s: the next may go in at most 2 s, and at least 1 (rounded up).
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        received(&http, &mock).await.0,
        1,
        "the refused one was not sent"
    );
}

#[tokio::test]
async fn a_sync_client_over_budget_is_queued_and_delivered_later() {
    let mock = Mock::start("slow", &[]);
    let sy = Switchyard::start(&format!(
        "[queue]\nwhen_unavailable = \"reject\"\n{}",
        masters_toml(&[(&mock, "rate_per_sec = 2\nburst = 1")])
    ));
    let http = Http::new();
    let (status, _, _) = http.post(&sy.messages(), "{}").await;
    assert_eq!(status, 200);
    let (status, headers, body) = http.post(&sy.messages(), "{}").await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let id = header(&headers, "x-switchyard-message-id").to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
    let status = message(&http, &sy, &id).await;
    assert_eq!(
        status["attempts"], 1,
        "waiting for budget is no attempt: {status}"
    );
    assert_eq!(received(&http, &mock).await.0, 2);
}

#[tokio::test]
async fn the_daily_count_survives_a_restart_and_warns_at_90_percent() {
    let mock = Mock::start("capped", &[]);
    let sy = Switchyard::start(&format!(
        "[queue]\nenabled = false\n{}",
        masters_toml(&[(&mock, "daily_limit = 3")])
    ));
    let http = Http::new();
    for _ in 0..2 {
        assert_eq!(http.post(&sy.messages(), "{}").await.0, 200);
    }
    let sy = sy.restart();
    let status = status_of(&http, &sy, "capped").await;
    assert_eq!(
        (status["sent_24h"].as_u64(), status["daily_limit"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(status["rate_per_sec"], 0.0);
    assert_eq!(
        http.post(&sy.messages(), "{}").await.0,
        200,
        "the third of three"
    );
    sy.proc
        .wait_line("daily_budget_90", Duration::from_secs(20));
    let (status, headers, _) = http.post(&sy.messages(), "{}").await;
    assert_eq!(status, 429, "the cap counts the sends before the restart");
    // The first counted minute leaves the window in about 24 hours.
    let retry: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!(retry > 23 * 3600, "Retry-After {retry}");
    assert_eq!(status_of(&http, &sy, "capped").await["budget_available"], 0);
    assert_eq!(received(&http, &mock).await.0, 3);
    let (_, _, metrics) = http.get(&format!("{}/metrics", sy.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("switchyard_master_sent_24h{master=\"capped\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_master_budget_exhausted_total{master=\"capped\"} 1"));
}

#[tokio::test]
async fn a_recipient_stays_on_one_master_and_waits_for_its_budget() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&format!(
        "[routing]\nsticky = true\nrecipient_field = \"/to\"\n{}",
        masters_toml(&[
            (&a, "rate_per_sec = 1\nburst = 1"),
            (&b, "rate_per_sec = 1\nburst = 1")
        ])
    ));
    let http = Http::new();
    // Two messages to one recipient at once: the second waits for the same master.
    let (status, first, _) = http
        .post(&sy.messages(), r#"{"to": "+971500000001"}"#)
        .await;
    assert_eq!(status, 200);
    let owner = header(&first, "x-switchyard-master").to_string();
    let (status, headers, _) = http
        .post_with(&sy.messages(), "{}", &[("x-recipient", "+971500000001")])
        .await;
    assert_eq!(status, 202, "its master has no budget now: it waits");
    let id = header(&headers, "x-switchyard-message-id").to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(message(&http, &sy, &id).await["master"], owner.as_str());
    // Recipients spread over both masters, each on one.
    let mut seen = std::collections::HashMap::new();
    let mut n = 2;
    while seen
        .values()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 2
    {
        assert!(n < 60, "every recipient on one master: {seen:?}");
        let to = format!("+97150000{n:04}");
        let (status, headers, _) = http
            .post_with(&sy.messages(), "{}", &[("x-recipient", &to)])
            .await;
        let id = header(&headers, "x-switchyard-message-id").to_string();
        if status == 202 {
            until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
        }
        let master = message(&http, &sy, &id).await["master"]
            .as_str()
            .unwrap()
            .to_string();
        seen.insert(to, master);
        n += 1;
    }
}
