//! Hostile and careless requests against the real binary: every key a request carries
//! is bounded at the edge, and none of them can stop a component for the requests
//! that follow.

mod common;
use common::*;
use std::time::Duration;

/// `[routing]` reading the recipient and region from the body when the headers are
/// absent, with a small `max_key_bytes` so the bound is easy to cross.
fn config(mock: &Mock) -> String {
    format!(
        "{SERVER}max_key_bytes = 64\n[routing]\nkey_field = \"/to\"\nregion_field = \"/region\"\n{}",
        masters_toml(&[(mock, "")])
    )
}

async fn code_of(
    http: &Http,
    sy: &Switchyard,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http
        .try_post_with(&sy.messages(), body, headers)
        .await
        .unwrap_or_else(|e| panic!("no answer for headers {:?}: {e}", truncated(headers)));
    let code = json(&body)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (status.as_u16(), code)
}

fn truncated(headers: &[(&str, &str)]) -> Vec<(String, usize)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.len()))
        .collect()
}

/// After each bad request, the queue still takes an async message and the proxy still
/// forwards: nothing it sent stopped a component.
async fn still_works(http: &Http, sy: &Switchyard, n: usize) {
    let key = format!("ok-{n}");
    let (status, _, body) = http
        .post_with(
            &sy.messages(),
            MESSAGE,
            &[("prefer", "respond-async"), ("idempotency-key", &key)],
        )
        .await;
    assert!(
        status == 202,
        "async after a bad request: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = http.post(&sy.messages(), r#"{"to": "+1"}"#).await;
    assert_eq!(status, 200);
}

/// A body, its headers, and the error code it must get.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test]
async fn empty_and_oversized_keys_are_refused_by_name() {
    let mock = Mock::start("m", &[]);
    let sy = Switchyard::start(&config(&mock));
    let http = Http::new();
    let big = |n: usize| "k".repeat(n);
    let at_bound = big(64);
    let (over, huge, giant) = (big(65), big(70_000), big(200_000));
    let recipient = |to: &str| format!(r#"{{"to": "{to}", "text": "hi"}}"#);
    let async_ = ("prefer", "respond-async");
    let long_type = format!("application/json; x={}", "y".repeat(1024));

    let cases: Vec<Case> = vec![
        (
            MESSAGE.into(),
            vec![("idempotency-key", "")],
            "invalid_idempotency_key",
        ),
        (
            MESSAGE.into(),
            vec![("idempotency-key", " ")],
            "invalid_idempotency_key",
        ),
        (
            MESSAGE.into(),
            vec![("idempotency-key", &over)],
            "invalid_idempotency_key",
        ),
        (
            MESSAGE.into(),
            vec![("idempotency-key", &huge)],
            "invalid_idempotency_key",
        ),
        (
            MESSAGE.into(),
            vec![("idempotency-key", &huge), async_],
            "invalid_idempotency_key",
        ),
        (
            MESSAGE.into(),
            vec![("x-routing-key", "")],
            "invalid_routing_key",
        ),
        (
            MESSAGE.into(),
            vec![("x-routing-key", &giant)],
            "invalid_routing_key",
        ),
        (
            MESSAGE.into(),
            vec![("x-routing-key", &huge), async_],
            "invalid_routing_key",
        ),
        (recipient(""), vec![], "invalid_recipient"),
        (recipient(&huge), vec![async_], "invalid_recipient"),
        (recipient(&over), vec![], "invalid_recipient"),
        (MESSAGE.into(), vec![("x-region", &over)], "invalid_region"),
        (
            r#"{"to": "+1", "region": ""}"#.into(),
            vec![],
            "invalid_region",
        ),
        (
            MESSAGE.into(),
            vec![("content-type", &long_type), async_],
            "invalid_content_type",
        ),
    ];
    for (n, (body, headers, want)) in cases.iter().enumerate() {
        let (status, code) = code_of(&http, &sy, body, headers).await;
        assert_eq!(
            (status, code.as_str()),
            (400, *want),
            "headers {:?}, body of {} bytes",
            truncated(headers),
            body.len()
        );
        still_works(&http, &sy, n).await;
    }
    // At the bound is fine, sync and queued.
    let (status, _) = code_of(
        &http,
        &sy,
        &recipient(&at_bound),
        &[("idempotency-key", &at_bound)],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = code_of(
        &http,
        &sy,
        &recipient(&at_bound),
        &[async_, ("x-routing-key", &at_bound)],
    )
    .await;
    assert_eq!(status, 202);

    // Nothing was stored for a refused message, nothing panicked, and health is whole.
    let health = json(&http.get(&format!("{}/health", sy.admin)).await.2);
    assert_eq!(
        (&health["status"], &health["queue"]),
        (&"healthy".into(), &"ok".into()),
        "{health}"
    );
    let metrics =
        String::from_utf8(http.get(&format!("{}/metrics", sy.admin)).await.2.to_vec()).unwrap();
    assert!(
        metrics.lines().any(|l| l == "switchyard_panics_total 0"),
        "no panic counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("panic"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every message that got an answer other than 400 reached the master once the queue
    // delivered it: 2 per case, 2 at the bound.
    let want = 2 * cases.len() as u64 + 2;
    eventually(
        Duration::from_secs(20),
        "every accepted message delivered",
        || async { mock.received(&http).await == want },
    )
    .await;
}

/// No recipient: no routing key, so nothing queues behind an earlier message.
const NO_KEY: &str = r#"{"text": "hi"}"#;

#[tokio::test]
async fn prefer_with_parameters_is_answered_async() {
    let mock = Mock::start("m", &[]);
    let sy = Switchyard::start(&config(&mock));
    let http = Http::new();
    for prefer in [
        "respond-async; x=1",
        "wait=5, respond-async",
        "Respond-Async",
    ] {
        let (status, h, _) = http
            .post_with(&sy.messages(), NO_KEY, &[("prefer", prefer)])
            .await;
        assert_eq!(status, 202, "Prefer: {prefer}");
        assert!(header(&h, "location").starts_with("/v1/messages/"));
    }
    for prefer in ["return=minimal", "x=\"respond-async\""] {
        let (status, _, _) = http
            .post_with(&sy.messages(), NO_KEY, &[("prefer", prefer)])
            .await;
        assert_eq!(status, 200, "Prefer: {prefer}");
    }
}

#[tokio::test]
async fn a_master_that_refuses_connections_is_named_without_os_text() {
    // A port nothing listens on: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/send", closed.local_addr().unwrap());
    drop(closed);
    let sy = Switchyard::start(&format!(
        "{SERVER}[queue]\nenabled = false\n[[masters]]\nid = \"gone\"\nsend_url = \"{url}\"\n"
    ));
    let http = Http::new();
    let (status, _, body) = http.post(&sy.messages(), NO_KEY).await;
    assert_eq!(status, 503);
    let error = json(&body)["error"].clone();
    assert_eq!(error["code"], "masters_unavailable", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("gone: could not connect"), "{message}");
    for internal in ["os error", "Os {", "tcp connect"] {
        assert!(!message.contains(internal), "{internal:?} in {message}");
    }
    // The operator still sees why, in the master's status.
    let gone = status_of(&http, &sy, "gone").await;
    assert!(
        gone["last_error"].as_str().unwrap().contains("refused"),
        "{gone}"
    );
}
