//! The mock master as a provider that protects its accounts: `--rate-limit` answers
//! 429 above its pace, `--ban-after` bans the account, and `/received` reports the
//! most sends accepted in any one second.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn rate_limit_answers_429_above_the_pace() {
    let mock = Mock::start("paced", &["--rate-limit", "5"]);
    let http = Http::new();
    let (mut accepted, mut limited) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Far faster than 5 a second: a refusal comes within the first second or two.
    while limited == 0 {
        assert!(Instant::now() < deadline, "no 429 after {accepted} sends");
        let (status, headers, body) = http.post(&mock.send_url(), "{}").await;
        match status.as_u16() {
            200 => accepted += 1,
            429 => {
                limited += 1;
                assert_eq!(header(&headers, "retry-after"), "1");
                assert_eq!(json(&body)["error"]["code"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(accepted >= 5, "the first five always go: {accepted}");
    let (_, _, body) = http.get(&format!("{}/received", mock.url)).await;
    let received = json(&body);
    assert_eq!(received["count"], accepted);
    assert_eq!(received["max_per_second"], 5);
}

#[tokio::test]
async fn ban_after_refuses_every_later_send_but_stays_up() {
    let mock = Mock::start("banned", &["--ban-after", "3"]);
    let http = Http::new();
    for n in 0..6 {
        let (status, _, body) = http.post(&mock.send_url(), "{}").await;
        if n < 3 {
            assert_eq!(status, 200);
        } else {
            assert_eq!(status, 403);
            assert_eq!(json(&body), serde_json::json!({"error": "account banned"}));
        }
    }
    assert_eq!(mock.received(&http).await, 3);
    let (_, _, body) = http.get(&format!("{}/received", mock.url)).await;
    assert_eq!(json(&body)["banned"], 3);
    let (status, _, _) = http.get(&format!("{}/health", mock.url)).await;
    assert_eq!(status, 200, "a banned account's provider is still up");
}

#[test]
fn a_zero_rate_limit_is_refused() {
    let out = std::process::Command::new(BIN)
        .args([
            "mock-master",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate-limit"));
}
