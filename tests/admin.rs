//! The admin listener: auth, master control, status, the metrics contract.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn token_guards_admin_routes_and_secrets_stay_hidden() {
    let a = Mock::start("a", &[]);
    let cfg = format!(
        "{SERVER}admin_token = \"t0ken\"\n{}",
        masters_toml(&[(
            &a,
            "headers = { authorization = \"Bearer sup3r-secret\", x-account = \"acct-1\" }"
        )])
    );
    let sy = Switchyard::start(&cfg);
    let http = Http::new();
    // /health and /metrics stay open.
    assert_eq!(http.get(&format!("{}/health", sy.admin)).await.0, 200);
    assert_eq!(http.get(&format!("{}/metrics", sy.admin)).await.0, 200);
    for (method, path) in [
        ("GET", "/ha/status"),
        ("POST", "/ha/masters/a/disable"),
        ("POST", "/admin/reload"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some("t0ken")] {
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("{}{path}", sy.admin));
            if let Some(v) = auth {
                req = req.header("authorization", v);
            }
            let (st, h, body) = http.send(req.body(Default::default()).unwrap()).await;
            assert_eq!(st, 401, "{method} {path} with {auth:?}");
            assert_eq!(header(&h, "www-authenticate"), "Bearer");
            assert_eq!(json(&body)["error"]["code"], "unauthorized");
        }
    }
    let req = http::Request::get(format!("{}/ha/status", sy.admin))
        .header("authorization", "Bearer t0ken");
    let (st, _, body) = http.send(req.body(Default::default()).unwrap()).await;
    assert_eq!(st, 200);
    // The master's headers reach it, but never the status, the metrics or the logs.
    let (st, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(st, 200);
    let status = String::from_utf8(body.to_vec()).unwrap();
    let metrics =
        String::from_utf8(http.get(&format!("{}/metrics", sy.admin)).await.2.to_vec()).unwrap();
    let logs = sy.proc.drain_lines().join("\n");
    for text in [&status, &metrics, &logs] {
        assert!(
            !text.contains("sup3r-secret") && !text.contains("t0ken"),
            "secret leaked: {text}"
        );
    }
}

#[tokio::test]
async fn disable_enable_drain_and_unknown_master() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, "")]));
    let http = Http::new();
    let status = || async { json(&http.get(&format!("{}/ha/status", sy.admin)).await.2) };
    let (st, _, body) = http
        .post(&format!("{}/ha/masters/a/drain", sy.admin), "")
        .await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["admin"], "draining");
    let s = status().await;
    assert_eq!(
        (
            s["masters"][0]["admin"].as_str(),
            s["masters"][0]["eligible"].as_bool()
        ),
        // Nothing was under way: drained at once.
        (Some("drained"), Some(false))
    );
    let h = json(&http.get(&format!("{}/health", sy.admin)).await.2);
    assert_eq!(
        (h["status"].as_str(), h["masters_eligible"].as_u64()),
        (Some("degraded"), Some(1))
    );
    for _ in 0..4 {
        let (_, hd, _) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(header(&hd, "x-switchyard-master"), "b");
    }
    http.post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    assert_eq!(status().await["masters"][0]["eligible"], true);
    let (st, _, body) = http
        .post(&format!("{}/ha/masters/nope/disable", sy.admin), "")
        .await;
    assert_eq!(
        (st.as_u16(), json(&body)["error"]["code"].as_str()),
        (404, Some("unknown_master"))
    );
    let (st, _, _) = http
        .get(&format!("{}/ha/masters/a/disable", sy.admin))
        .await;
    assert_eq!(st, 405);
    let s = status().await;
    for key in [
        "strategy",
        "routing_table_version",
        "failover_paused",
        "breaker_open",
    ] {
        assert!(!s[key].is_null(), "{key} missing");
    }
    for key in [
        "id",
        "role",
        "region",
        "weight",
        "priority",
        "state",
        "enabled",
        "promoted",
        "in_flight",
        "queued",
        "sent_total",
        "failed_total",
        "latency_ms",
        "share",
        "uptime_ratio",
        "last_error",
    ] {
        assert!(
            s["masters"][0].get(key).is_some(),
            "masters[].{key} missing"
        );
    }
    // `switchyard status` prints the same as a table.
    let out = Command::new(BIN)
        .args(["status", "--admin", &sy.admin])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("MASTER") && table.lines().any(|l| l.starts_with("b ")),
        "{table}"
    );
}

#[tokio::test]
async fn metrics_contract_passes_promtool() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, "")]));
    let http = Http::new();
    for _ in 0..4 {
        http.post(&sy.messages(), MESSAGE).await;
    }
    let (st, h, body) = http.get(&format!("{}/metrics", sy.admin)).await;
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    for name in [
        "switchyard_requests_total{master=\"a\",outcome=\"success\",client=\"anonymous\"} 2",
        "switchyard_request_duration_seconds_bucket{master=\"a\"",
        "switchyard_master_up{master=\"b\"} 1",
        "switchyard_master_state{master=\"a\",state=\"healthy\"} 1",
        "switchyard_master_inflight{master=\"a\"} 0",
        "switchyard_queue_depth 0",
        "switchyard_queue_enqueued_total 0",
        "switchyard_queue_delivered_total 0",
        "switchyard_queue_dead_total 0",
        "switchyard_failovers_total{master=\"a\"} 0",
        "switchyard_config_reloads_total{result=\"error\"} 0",
        "switchyard_routing_table_version 1",
        "switchyard_alerts_total{severity=\"critical\"} 0",
        "switchyard_master_admin_state{master=\"a\",state=\"enabled\"} 1",
        "switchyard_master_admin_state{master=\"a\",state=\"draining\"} 0",
        "switchyard_queue_dead_letters 0",
        "switchyard_queue_oldest_age_seconds 0",
        "switchyard_failover_paused 0",
        "switchyard_breaker_open 0",
        "switchyard_panics_total 0",
        "# HELP switchyard_requests_total ",
    ] {
        assert!(text.contains(name), "missing {name:?} in:\n{text}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`; .ci/run installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn livez_and_operator_gauges_while_no_master_is_eligible() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}admin_token = \"t\"\n{}",
        masters_toml(&[(&a, "")])
    ));
    let http = Http::new();
    let admin = |path: &str| format!("{}{path}", sy.admin);
    let disable = http::Request::post(admin("/ha/masters/a/disable"))
        .header("authorization", "Bearer t")
        .body(Default::default())
        .unwrap();
    assert_eq!(http.send(disable).await.0, 200);
    // No master eligible: not ready, yet alive (and open without the token).
    assert_eq!(http.get(&admin("/health")).await.0, 503);
    let (status, _, body) = http.get(&admin("/livez")).await;
    assert_eq!(
        (status.as_u16(), json(&body)["status"].as_str()),
        (200, Some("alive"))
    );
    let (status, _, _) = http.post(&admin("/livez"), "").await;
    assert_eq!(status, 405);

    // The operator's state and the waiting message show in the metrics.
    let pause = http::Request::post(admin("/ha/pause"))
        .header("authorization", "Bearer t")
        .body(Default::default())
        .unwrap();
    assert_eq!(http.send(pause).await.0, 200);
    let (status, _, _) = http
        .post_with(&sy.messages(), MESSAGE, &[("prefer", "respond-async")])
        .await;
    assert_eq!(status, 202);
    let sample = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    eventually(
        Duration::from_secs(5),
        "the queued message ages",
        || async {
            let text = String::from_utf8(http.get(&admin("/metrics")).await.2.to_vec()).unwrap();
            assert_eq!(
                sample(
                    &text,
                    "switchyard_master_admin_state{master=\"a\",state=\"disabled\"}"
                ),
                1.0
            );
            assert_eq!(sample(&text, "switchyard_failover_paused"), 1.0);
            assert_eq!(sample(&text, "switchyard_queue_depth"), 1.0);
            sample(&text, "switchyard_queue_oldest_age_seconds") > 0.0
        },
    )
    .await;
}
