//! Trace context (SPEC section 9): the headers of `routing.forward_headers` reach the
//! master with a message sent at once and with a queued one delivered later (after a
//! `kill -9`), and every answer to `POST /v1/messages` carries an `x-request-id`.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE";

#[tokio::test]
async fn a_message_sent_at_once_carries_the_trace_headers() {
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();

    let sent = [
        ("traceparent", TRACEPARENT),
        ("tracestate", TRACESTATE),
        ("x-request-id", "req-1"),
        ("x-not-listed", "secret"),
    ];
    let (code, h, _) = http.post_with(&sy.messages(), MESSAGE, &sent).await;
    assert_eq!(code, 200);
    assert_eq!(
        header(&h, "x-request-id"),
        "req-1",
        "the client's, returned"
    );
    let got = headers_received(&http, &a).await;
    assert_eq!(got["traceparent"], TRACEPARENT);
    assert_eq!(got["tracestate"], TRACESTATE);
    assert_eq!(got["x-request-id"], "req-1");
    assert!(
        !got.contains_key("x-not-listed"),
        "not in the list: {got:?}"
    );

    // None sent: one is generated (the message id), returned and forwarded.
    let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 200);
    let id = header(&h, "x-switchyard-message-id");
    assert_eq!(header(&h, "x-request-id"), id);
    let got = headers_received(&http, &a).await;
    assert_eq!(got["x-request-id"], id);
    assert!(!got.contains_key("traceparent"), "{got:?}");

    // A repeat of an Idempotency-Key is answered from the first, with its own request id.
    let keyed = [("idempotency-key", "order-1"), ("x-request-id", "req-2")];
    let (_, first, _) = http.post_with(&sy.messages(), MESSAGE, &keyed).await;
    assert_eq!(header(&first, "x-request-id"), "req-2");
    let again = [("idempotency-key", "order-1"), ("x-request-id", "req-3")];
    let (code, h, _) = http.post_with(&sy.messages(), MESSAGE, &again).await;
    assert_eq!(
        (code.as_u16(), header(&h, "x-switchyard-duplicate")),
        (200, "true")
    );
    assert_eq!(header(&h, "x-request-id"), "req-3");
    // Without one, the repeat's request id is the id of the message it is about.
    let (_, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("idempotency-key", "order-1")])
        .await;
    assert_eq!(header(&h, "x-switchyard-duplicate"), "true");
    assert_eq!(
        header(&h, "x-request-id"),
        header(&first, "x-switchyard-message-id")
    );
}

#[tokio::test]
async fn a_queued_message_carries_them_when_delivered_after_a_kill_9() {
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let http = Http::new();
    // No master to take it now: it waits on disk.
    let (code, _, _) = http
        .post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    assert_eq!(code, 200);
    let sent = [
        ("prefer", "respond-async"),
        ("traceparent", TRACEPARENT),
        ("tracestate", TRACESTATE),
    ];
    let (code, h, body) = http.post_with(&sy.messages(), MESSAGE, &sent).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let id = json(&body)["id"].as_str().unwrap().to_string();
    assert_eq!(header(&h, "x-request-id"), id, "generated: the message id");
    assert_eq!(a.received(&http).await, 0, "still on disk at the kill");

    let sy = sy.kill_and_restart();
    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
    let got = headers_received(&http, &a).await;
    assert_eq!(got["idempotency-key"], id);
    assert_eq!(got["traceparent"], TRACEPARENT);
    assert_eq!(got["tracestate"], TRACESTATE);
    assert_eq!(got["x-request-id"], id);
}

#[tokio::test]
async fn only_the_configured_headers_go_and_long_values_are_refused() {
    let a = Mock::start("a", &["--record-keys"]);
    let cfg = format!(
        "[routing]\nforward_headers = [\"X-B3-TraceId\"]\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&cfg);
    let http = Http::new();
    let sent = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("traceparent", TRACEPARENT),
        ("x-request-id", "req-9"),
    ];
    let (code, h, _) = http.post_with(&sy.messages(), MESSAGE, &sent).await;
    assert_eq!(code, 200);
    assert_eq!(
        header(&h, "x-request-id"),
        "req-9",
        "returned, though not forwarded"
    );
    let got = headers_received(&http, &a).await;
    assert_eq!(got["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert!(!got.contains_key("traceparent"), "{got:?}");
    assert!(!got.contains_key("x-request-id"), "{got:?}");

    let long = "t".repeat(1025);
    for name in ["x-b3-traceid", "x-request-id"] {
        let (code, h, body) = http
            .post_with(&sy.messages(), MESSAGE, &[(name, long.as_str())])
            .await;
        assert_eq!(code, 400, "{name}");
        let body = json(&body);
        assert_eq!(body["error"]["code"], "invalid_header");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(name), "{text}");
        assert_eq!(header(&h, "x-request-id").len(), 36, "a generated UUID");
    }
    // At the bound it goes through.
    let at_bound = "t".repeat(1024);
    let sent = [("x-b3-traceid", at_bound.as_str())];
    assert_eq!(http.post_with(&sy.messages(), MESSAGE, &sent).await.0, 200);
    assert_eq!(
        a.received(&http).await,
        2,
        "nothing refused reached the master"
    );
}

#[test]
fn a_bad_header_name_is_refused_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[routing]\nforward_headers = [\"traceparent\", \"bad name\", \"Content-Length\"]\n\
         [[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for want in [
        "routing.forward_headers[1]: `bad name` is not a valid HTTP header name",
        "routing.forward_headers[2]: `content-length`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("forward_headers[0]"), "{err}");
}
