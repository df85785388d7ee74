//! Every message traceable (SPEC section 9): `GET /v1/messages/{id}` answers for a
//! message answered at once too, and each message outcome writes an access log line
//! (target `switchyard::access`) with its fields; `log.access = false` silences it,
//! live.

mod common;
use common::*;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(10);

/// The access log lines of message `id` until one has `status`, as JSON fields.
fn access_lines(sy: &Switchyard, id: &str, status: &str) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    loop {
        let line = sy.proc.wait_line(id, WITHIN);
        let Some(json_text) = line.strip_prefix("[stderr] ") else {
            continue;
        };
        let entry: serde_json::Value = serde_json::from_str(json_text)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if entry["target"] == "switchyard::access" {
            assert_eq!(entry["level"], "INFO", "{line}");
            found.push(entry["fields"].clone());
            if entry["fields"]["status"] == status {
                return found;
            }
        }
    }
}

/// The access log line of message `id` with `status`.
fn access_line(sy: &Switchyard, id: &str, status: &str) -> serde_json::Value {
    access_lines(sy, id, status).pop().expect("found")
}

#[tokio::test]
async fn a_message_answered_at_once_has_a_status_and_an_access_line() {
    let a = Mock::start("a", &[]);
    let refusing = raw_server(|_| 422).await;
    let config = format!(
        "[log]\nformat = \"json\"\n{}\n[[masters]]\nid = \"r\"\nsend_url = \"{refusing}/send\"\n",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let admin = |path: &'static str| {
        let (http, url) = (http.clone(), format!("{}{path}", sy.admin));
        async move { http.post(&url, "").await.0.as_u16() }
    };
    assert_eq!(admin("/ha/masters/r/disable").await, 200);

    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("x-request-id", "req-7")])
        .await;
    assert_eq!(code, 200);
    let id = header(&h, "x-switchyard-message-id").to_string();
    let status = message(&http, &sy, &id).await;
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["master"], "a");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["http_status"], 200);
    assert!(status["last_error"].is_null(), "{status}");
    assert!(status["created_at"].is_string() && status["updated_at"].is_string());

    let line = access_line(&sy, &id, "delivered");
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["client"], "anonymous");
    assert_eq!(line["master"], "a");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["request_id"], "req-7");
    assert_eq!(line["http_status"], 200);
    assert!(line["duration_ms"].is_u64(), "{line}");

    // A master's refusal is its answer: delivered, with the status it gave.
    assert_eq!(admin("/ha/masters/r/enable").await, 200);
    assert_eq!(admin("/ha/masters/a/disable").await, 200);
    let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 422);
    let refused = header(&h, "x-switchyard-message-id").to_string();
    let status = message(&http, &sy, &refused).await;
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["master"], "r");
    assert_eq!(status["http_status"], 422);
    assert!(
        status["last_error"].as_str().unwrap_or("").contains("422"),
        "{status}"
    );
    let line = access_line(&sy, &refused, "delivered");
    assert_eq!(line["http_status"], 422);
    assert_eq!(line["request_id"], refused.as_str(), "none sent: the id");
}

#[tokio::test]
async fn a_queued_message_logs_its_202_and_its_delivery() {
    let a = Mock::start("a", &[]);
    let config = format!("[log]\nformat = \"json\"\n{}", masters_toml(&[(&a, "")]));
    let sy = Switchyard::start(&config);
    let http = Http::new();
    let (code, h, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("prefer", "respond-async")])
        .await;
    assert_eq!(code, 202);
    let id = header(&h, "x-switchyard-message-id").to_string();
    // Two lines, the 202's and the delivery's (which may be written first).
    let mut lines = access_lines(&sy, &id, "delivered");
    if lines.len() == 1 {
        lines.extend(access_lines(&sy, &id, "queued"));
    }
    let queued = lines
        .iter()
        .find(|l| l["status"] == "queued")
        .expect("queued");
    assert_eq!(queued["http_status"], 202);
    assert_eq!(queued["master"], "");
    let delivered = lines.iter().find(|l| l["status"] == "delivered").unwrap();
    assert_eq!(delivered["master"], "a");
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["request_id"], id.as_str());
    until_status(&http, &sy, &id, "delivered", WITHIN).await;
}

#[tokio::test]
async fn log_access_false_silences_it_live() {
    let a = Mock::start("a", &[]);
    let masters = masters_toml(&[(&a, "")]);
    let sy = Switchyard::start(&format!("[log]\naccess = false\n{masters}"));
    let http = Http::new();
    let (_, h, _) = http.post(&sy.messages(), MESSAGE).await;
    let quiet = header(&h, "x-switchyard-message-id").to_string();
    assert_eq!(message(&http, &sy, &quiet).await["status"], "delivered");

    sy.rewrite_config(&format!("{SERVER}[log]\naccess = true\n{masters}"));
    let (code, _, _) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 200);
    let (_, h, _) = http.post(&sy.messages(), MESSAGE).await;
    let logged = header(&h, "x-switchyard-message-id").to_string();
    // Lines come in order: the second message's line is there, the first's never was.
    let lines = sy.proc.lines_until(&logged, WITHIN);
    assert!(
        lines.iter().any(|l| l.contains("switchyard::access")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains(&quiet)), "{lines:?}");
}
