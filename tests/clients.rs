//! Client keys (SPEC section 9): with `[[clients]]` configured, `/v1/*` needs a key
//! (either header form), the keys reload live, a client sees only its own messages,
//! its Idempotency-Keys are its own, and it is a label of the requests metric.

mod common;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use std::time::Duration;

const CLIENTS: &str = "
[[clients]]
id = \"billing\"
key = \"k-billing\"

[[clients]]
id = \"crm\"
key = \"k-crm\"
";

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

async fn get_as(http: &Http, url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (code, _, body) = http.send(req.body(Full::new(Bytes::new())).unwrap()).await;
    (code.as_u16(), json(&body))
}

#[tokio::test]
async fn a_key_is_required_and_a_client_sees_only_its_own_messages() {
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&format!("{CLIENTS}{}", masters_toml(&[(&a, "")])));
    let http = Http::new();

    // No key, a wrong one, one too long, another scheme: 401.
    let too_long = "x".repeat(300);
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("x-api-key", "k-billin")],
        vec![("x-api-key", too_long.as_str())],
        vec![("authorization", "Basic k-billing")],
    ] {
        let (code, h, body) = http.post_with(&sy.messages(), MESSAGE, &headers).await;
        assert_eq!(code, 401, "{headers:?}");
        assert_eq!(json(&body)["error"]["code"], "unauthorized");
        assert_eq!(header(&h, "www-authenticate"), "Bearer");
        assert!(!header(&h, "x-request-id").is_empty(), "{headers:?}");
    }
    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("x-request-id", "req-401")])
        .await;
    assert_eq!(
        (code.as_u16(), header(&h, "x-request-id")),
        (401, "req-401")
    );
    assert_eq!(
        a.received(&http).await,
        0,
        "nothing refused reached the master"
    );

    // Both header forms.
    let (name, value) = bearer("k-billing");
    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[(name, &value)])
        .await;
    assert_eq!(code, 200);
    let billing_msg = header(&h, "x-switchyard-message-id").to_string();
    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("x-api-key", "k-crm")])
        .await;
    assert_eq!(code, 200);
    let crm_msg = header(&h, "x-switchyard-message-id").to_string();

    // Status: its own client only; another's is as unknown as a made-up id.
    let url = |id: &str| format!("{}/v1/messages/{id}", sy.url);
    let (code, body) = get_as(&http, &url(&billing_msg), &[("x-api-key", "k-billing")]).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("delivered")));
    let (code, body) = get_as(&http, &url(&billing_msg), &[("x-api-key", "k-crm")]).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "message_not_found");
    let (code, _) = get_as(&http, &url(&crm_msg), &[("x-api-key", "k-crm")]).await;
    assert_eq!(code, 200);
    let (code, _) = get_as(&http, &url(&crm_msg), &[]).await;
    assert_eq!(code, 401, "the status route needs a key too");

    // One Idempotency-Key from two clients: two messages, no replay across them.
    let keyed = |key: &'static str| [("x-api-key", key), ("idempotency-key", "order-1")];
    let (_, first, _) = http
        .post_with(&sy.messages(), MESSAGE, &keyed("k-billing"))
        .await;
    let (code, other, _) = http
        .post_with(&sy.messages(), MESSAGE, &keyed("k-crm"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(header(&other, "x-switchyard-duplicate"), "");
    assert_ne!(
        header(&first, "x-switchyard-message-id"),
        header(&other, "x-switchyard-message-id")
    );
    let (_, again, _) = http
        .post_with(&sy.messages(), MESSAGE, &keyed("k-billing"))
        .await;
    assert_eq!(header(&again, "x-switchyard-duplicate"), "true");
    assert_eq!(keys_received(&http, &a).await["order-1"], 2);

    // The admin listener keeps its own rules: no client key there.
    let (code, _, _) = http.get(&format!("{}/health", sy.admin)).await;
    assert_eq!(code, 200);
    let metrics = http.get(&format!("{}/metrics", sy.admin)).await.2;
    let metrics = String::from_utf8_lossy(&metrics);
    for label in ["client=\"billing\"", "client=\"crm\""] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchyard_requests_total{") && l.contains(label)),
            "{label} missing:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn keys_rotate_on_reload_and_no_clients_means_open() {
    let a = Mock::start("a", &[]);
    let masters = masters_toml(&[(&a, "")]);
    let sy = Switchyard::start(&format!("{CLIENTS}{masters}"));
    let http = Http::new();
    let send = |key: &'static str| {
        let http = http.clone();
        let url = sy.messages();
        async move {
            let headers: &[(&str, &str)] = if key.is_empty() {
                &[]
            } else {
                &[("x-api-key", key)]
            };
            http.post_with(&url, MESSAGE, headers).await.0.as_u16()
        }
    };
    assert_eq!(send("k-crm").await, 200);

    let rotated = CLIENTS.replace("k-crm", "k-crm-2");
    sy.rewrite_config(&format!("{SERVER}{rotated}{masters}"));
    let (code, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(send("k-crm").await, 401, "the old key is gone");
    assert_eq!(send("k-crm-2").await, 200);
    assert_eq!(send("k-billing").await, 200);

    // A key given to two clients is refused, and the running keys stay.
    let twice = CLIENTS.replace("k-crm", "k-billing");
    sy.rewrite_config(&format!("{SERVER}{twice}{masters}"));
    let (code, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("clients[1].key"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(send("k-crm-2").await, 200);

    sy.rewrite_config(&format!("{SERVER}{masters}"));
    let (code, _, _) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 200);
    assert_eq!(send("").await, 200, "no clients: open");
}

#[tokio::test]
async fn a_queued_message_stays_its_clients_across_a_restart() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!("{CLIENTS}{}", masters_toml(&[(&a, "")])));
    let http = Http::new();
    let (code, h, _) = http
        .post_with(
            &sy.messages(),
            MESSAGE,
            &[("x-api-key", "k-billing"), ("prefer", "respond-async")],
        )
        .await;
    assert_eq!(code, 202);
    let id = header(&h, "x-switchyard-message-id").to_string();

    let sy = sy.restart();
    let url = format!("{}/v1/messages/{id}", sy.url);
    let (code, _) = get_as(&http, &url, &[("x-api-key", "k-crm")]).await;
    assert_eq!(code, 404, "not crm's");
    eventually(
        Duration::from_secs(10),
        "delivered, seen by billing",
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (code, body) = get_as(&http, &url, &[("x-api-key", "k-billing")]).await;
                code == 200 && body["status"] == "delivered"
            }
        },
    )
    .await;
}
