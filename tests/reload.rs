//! Live reload: file change, SIGHUP and the admin API; invalid files change nothing.

mod common;
use common::*;
use std::time::Duration;

async fn health(http: &Http, sy: &Switchyard) -> serde_json::Value {
    json(&http.get(&format!("{}/health", sy.admin)).await.2)
}

async fn wait_version(http: &Http, sy: &Switchyard, version: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("config_version {version}"),
        || async { health(http, sy).await["config_version"] == version },
    )
    .await;
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_keeps_counters() {
    let (a, b, c) = (
        Mock::start("a", &[]),
        Mock::start("b", &[]),
        Mock::start("c", &[]),
    );
    let sy = Switchyard::start(&format!("{SERVER}{}", masters_toml(&[(&a, ""), (&b, "")])));
    let http = Http::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url, stop) = (http.clone(), sy.messages(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (st, _, body) = http.post(&url, MESSAGE).await;
                if st == 200 {
                    ok += 1
                } else {
                    failed.push((st, body))
                }
            }
            (ok, failed)
        }));
    }
    let versions = [
        masters_toml(&[(&a, ""), (&b, ""), (&c, "")]),
        format!(
            "[routing]\nstrategy = \"weighted_priority\"\n{}",
            masters_toml(&[(&a, "weight = 3"), (&c, "")])
        ),
        format!(
            "[routing]\nstrategy = \"least_loaded\"\n{}",
            masters_toml(&[(&b, ""), (&c, "")])
        ),
        masters_toml(&[(&a, ""), (&b, ""), (&c, "")]),
    ];
    for (i, masters) in versions.iter().enumerate() {
        sy.rewrite_config(&format!("{SERVER}{masters}"));
        wait_version(&http, &sy, i as u64 + 2).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ok = 0;
    for w in workers {
        let (n, failed) = w.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during reload: {failed:?}"
        );
        ok += n;
    }
    assert!(ok > 0);
    // `a` was in, out and back in: its counters survived.
    let status = json(&http.get(&format!("{}/ha/status", sy.admin)).await.2);
    let sent: u64 = status["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sent_total"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, u64::from(ok));
    let metrics =
        String::from_utf8(http.get(&format!("{}/metrics", sy.admin)).await.2.to_vec()).unwrap();
    assert!(
        metrics.contains("switchyard_config_reloads_total{result=\"success\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_reload_keeps_routing() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let good = sy.config_text();
    let http = Http::new();

    // Through the admin API: 400 with every error, old config kept.
    std::fs::write(
        &sy.config_path,
        format!("{good}\n[routing]\nstrategy = \"random\"\n"),
    )
    .unwrap();
    let (st, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(st, 400);
    let body = json(&body);
    assert_eq!(body["error"]["code"], "invalid_config");
    assert_eq!(body["error"]["errors"][0]["path"], "routing.strategy");
    let h = health(&http, &sy).await;
    assert_eq!(h["config_version"], 1);
    assert!(
        h["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("routing.strategy"),
        "{h}"
    );
    assert_eq!(http.post(&sy.messages(), MESSAGE).await.0, 200);

    // SIGHUP with a broken file: still routing; the error counter moves.
    std::fs::write(&sy.config_path, "this is [not toml").unwrap();
    sy.proc.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "rejected reload is counted",
        || async {
            let m = String::from_utf8(http.get(&format!("{}/metrics", sy.admin)).await.2.to_vec())
                .unwrap();
            m.lines().any(|l| {
                l.starts_with("switchyard_config_reloads_total{result=\"error\"}")
                    && !l.ends_with(" 0")
                    && !l.ends_with(" 1")
            })
        },
    )
    .await;
    assert_eq!(http.post(&sy.messages(), MESSAGE).await.0, 200);

    // A valid file again: accepted, the error clears, the version moves.
    std::fs::write(
        &sy.config_path,
        format!("{good}\n[routing]\nretry_attempts = 1\n"),
    )
    .unwrap();
    let (st, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["config_version"], 2);
    let h = health(&http, &sy).await;
    assert_eq!(h["last_reload_error"], serde_json::Value::Null);
}

#[tokio::test]
async fn sighup_reloads_and_keeps_admin_state() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, "")]));
    let http = Http::new();
    http.post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    // Write in place (no rename), then signal.
    let text = sy.config_text().replace(
        "[[masters]]\nid = \"b\"",
        "[[masters]]\nid = \"b\"\nweight = 2",
    );
    std::fs::write(&sy.config_path, text).unwrap();
    sy.proc.signal("HUP");
    wait_version(&http, &sy, 2).await;
    let status = json(&http.get(&format!("{}/ha/status", sy.admin)).await.2);
    assert_eq!(status["masters"][0]["enabled"], false, "{status}");
    assert_eq!(status["masters"][1]["weight"], 2.0);
    let (_, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(header(&h, "x-switchyard-master"), "b");
}

#[tokio::test]
async fn start_only_keys_keep_their_running_values() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&masters_toml(&[(&a, "")]));
    let good = sy.config_text();
    let http = Http::new();

    // The queue cannot move, nor the listeners: those keys keep their running values,
    // the rest (the weight) is applied, and the reload says what needs a restart.
    let changed =
        good.replace(
            "listen = \"127.0.0.1:0\"\nadmin_listen",
            "listen = \"127.0.0.1:1\"\nadmin_listen",
        )
        .replace(
            "[[masters]]",
            "[queue]\npath = \"elsewhere/queue\"\n\n[[masters]]",
        ) + "weight = 3\n";
    assert_ne!(changed, good);
    std::fs::write(&sy.config_path, &changed).unwrap();
    let (st, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["config_version"], 2);
    let h = health(&http, &sy).await;
    let note = h["last_reload_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for key in ["queue.path", "server.listen"] {
        assert!(
            note.contains(&format!("{key} changed: needs a restart")),
            "{key} not in {h}"
        );
    }
    assert!(!note.contains("admin_listen"), "{note}");
    sy.proc.wait_line(
        "queue.path changed: needs a restart",
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&http, &sy, "a").await["weight"], 3.0);

    // Still served where it was, and the queue still works where it was.
    let (st, _, body) = http
        .post_with(&sy.messages(), MESSAGE, &[("prefer", "respond-async")])
        .await;
    assert_eq!(st, 202);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    assert!(sy.dir.path().join("data/queue").exists());
    assert!(!sy.dir.path().join("elsewhere").exists());

    // The same file again: still said (the value is still not applied).
    let (st, _, _) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(st, 200);
    let h = health(&http, &sy).await;
    assert!(
        h["last_reload_error"]
            .as_str()
            .unwrap_or_default()
            .contains("queue.path"),
        "{h}"
    );

    // Back to the running values: nothing to say any more.
    std::fs::write(&sy.config_path, &good).unwrap();
    let (st, _, _) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(st, 200);
    let h = health(&http, &sy).await;
    assert_eq!(h["last_reload_error"], serde_json::Value::Null, "{h}");
    assert_eq!(status_of(&http, &sy, "a").await["weight"], 1.0);
}
