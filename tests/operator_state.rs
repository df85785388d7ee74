//! Operator state against the real binary (SPEC section 9): disable, drain, pause and
//! manual failovers survive restarts (clean and `kill -9`); every admin action is an
//! `admin_action` audit event with its route and caller; drain reports `drained`; a
//! corrupt state file stops the start; `switchyard status` shows HELD and slow start.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn status(http: &Http, sy: &Switchyard) -> serde_json::Value {
    json(&http.get(&format!("{}/ha/status", sy.admin)).await.2)
}

async fn events(http: &Http, sy: &Switchyard) -> Vec<serde_json::Value> {
    let body = json(
        &http
            .get(&format!("{}/ha/events?limit=1000", sy.admin))
            .await
            .2,
    );
    body["events"].as_array().unwrap().clone()
}

/// The `admin_action` event for `route`, if any.
fn action<'a>(events: &'a [serde_json::Value], route: &str) -> Option<&'a serde_json::Value> {
    events
        .iter()
        .find(|e| e["kind"] == "admin_action" && e["route"] == route)
}

async fn post_ok(http: &Http, url: String) -> serde_json::Value {
    let (code, _, body) = http.post(&url, "").await;
    assert_eq!(code, 200, "{url}: {}", String::from_utf8_lossy(&body));
    json(&body)
}

fn status_table(sy: &Switchyard) -> String {
    let out = Command::new(BIN)
        .args(["status", "--admin", &sy.admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The `switchyard status` row of master `id`.
fn row<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no row for {id}: {table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_drain_and_pause_survive_restarts_and_are_audited() {
    let (a, b, c) = (
        Mock::start("a", &[]),
        Mock::start("b", &[]),
        Mock::start("c", &[]),
    );
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, ""), (&c, "")]));
    let http = Http::new();
    let admin = |path: &str| format!("{}{path}", sy.admin);
    post_ok(&http, admin("/ha/masters/a/disable")).await;
    post_ok(&http, admin("/ha/masters/b/drain")).await;
    post_ok(&http, admin("/ha/pause")).await;
    post_ok(&http, admin("/admin/reload")).await;
    // A refused command is audited too.
    let (code, _, _) = http.post(&admin("/ha/masters/nope/enable"), "").await;
    assert_eq!(code, 404);

    let seen = events(&http, &sy).await;
    for (route, master) in [
        ("POST /ha/masters/a/disable", Some("a")),
        ("POST /ha/masters/b/drain", Some("b")),
        ("POST /ha/pause", None),
        ("POST /admin/reload", None),
        ("POST /ha/masters/nope/enable", None),
    ] {
        let e = action(&seen, route).unwrap_or_else(|| panic!("no event for {route}: {seen:?}"));
        assert!(
            e["caller"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{e}"
        );
        assert_eq!(e["master"].as_str(), master, "{e}");
    }
    assert!(
        action(&seen, "POST /ha/masters/nope/enable").unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("404")
    );

    // A crash right after the answers, then a clean restart: the state and the
    // audit events were on disk before each answer.
    let sy = sy.kill_and_restart();
    let sy = sy.restart();
    let s = status(&http, &sy).await;
    assert_eq!(s["failover_paused"], true, "{s}");
    let admin_of = |s: &serde_json::Value, i: usize| s["masters"][i]["admin"].clone();
    assert_eq!(admin_of(&s, 0), "disabled", "{s}");
    assert_eq!(admin_of(&s, 1), "drained", "{s}");
    assert_eq!(admin_of(&s, 2), "enabled", "{s}");
    for _ in 0..3 {
        let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(
            (code.as_u16(), header(&h, "x-switchyard-master")),
            (200, "c")
        );
    }
    // The audit trail kept the actions across the crash.
    let seen = events(&http, &sy).await;
    for route in [
        "POST /ha/masters/a/disable",
        "POST /ha/pause",
        "POST /admin/reload",
    ] {
        assert!(action(&seen, route).is_some(), "{route}: {seen:?}");
    }

    let admin = |path: &str| format!("{}{path}", sy.admin);
    post_ok(&http, admin("/ha/masters/a/enable")).await;
    post_ok(&http, admin("/ha/resume")).await;
    let sy = sy.restart();
    let s = status(&http, &sy).await;
    assert_eq!(s["failover_paused"], false, "{s}");
    assert_eq!(admin_of(&s, 0), "enabled", "{s}");
    assert_eq!(admin_of(&s, 1), "drained", "{s}");
    let seen = events(&http, &sy).await;
    assert!(action(&seen, "POST /ha/resume").is_some(), "{seen:?}");
    // `switchyard events` shows who did what.
    let out = Command::new(BIN)
        .args(["events", "--admin", &sy.admin, "--limit", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("admin_action") && text.contains("POST /ha/resume from 127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_master_finishes_its_exchange_then_reports_drained() {
    let slow = Mock::start("slow", &["--latency-ms", "3000"]);
    let fast = Mock::start("fast", &[]);
    let sy = Switchyard::start(&masters_toml(&[(&slow, ""), (&fast, "")]));
    let http = Http::new();
    let admin = |path: &str| format!("{}{path}", sy.admin);
    // Only `slow` takes this one.
    post_ok(&http, admin("/ha/masters/fast/disable")).await;
    let exchange = {
        let (http, url) = (http.clone(), sy.messages());
        tokio::spawn(async move { http.post(&url, MESSAGE).await })
    };
    wait_in_flight(&http, &sy.admin, 1).await;
    post_ok(&http, admin("/ha/masters/fast/enable")).await;
    let answer = post_ok(&http, admin("/ha/masters/slow/drain")).await;
    assert_eq!(answer["admin"], "draining");
    let s = status(&http, &sy).await;
    assert_eq!(s["masters"][0]["admin"], "draining", "{s}");
    assert_eq!(s["masters"][0]["enabled"], false, "{s}");
    // No new message goes to a draining master.
    let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(
        (code.as_u16(), header(&h, "x-switchyard-master")),
        (200, "fast")
    );
    // Its exchange under way finishes.
    let (code, h, _) = exchange.await.unwrap();
    assert_eq!(
        (code.as_u16(), header(&h, "x-switchyard-master")),
        (200, "slow")
    );
    eventually(WAIT, "slow drained", || async {
        status(&http, &sy).await["masters"][0]["admin"] == "drained"
    })
    .await;
    eventually(WAIT, "a drained event", || async {
        events(&http, &sy)
            .await
            .iter()
            .any(|e| e["kind"] == "drained" && e["master"] == "slow")
    })
    .await;
    let metrics = String::from_utf8(http.get(&admin("/metrics")).await.2.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"switchyard_master_admin_state{master="slow",state="drained"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"switchyard_master_admin_state{master="slow",state="draining"} 0"#));
    assert!(row(&status_table(&sy), "slow").contains("drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_survives_a_restart_and_status_shows_held_and_slow_start() {
    let p = Mock::start("p", &[]);
    let s = Mock::start("s", &[]);
    let config = format!(
        "[health]\ninterval_ms = 100\ntimeout_ms = 300\nhealthy_threshold = 2\nunhealthy_threshold = 2\n\
         [failover]\nrecovery_wait_ms = 300\nfailback = \"auto\"\nfailback_delay_ms = 100\nslow_start_ms = 600000\n{}",
        masters_toml(&[
            (&p, &format!("health_url = \"{}/health\"\nrole = \"primary\"", p.url)),
            (&s, &format!("health_url = \"{}/health\"\nrole = \"standby\"", s.url)),
        ])
    );
    let sy = Switchyard::start(&config);
    let http = Http::new();
    post_ok(&http, format!("{}/ha/masters/p/failover", sy.admin)).await;

    let sy = sy.restart();
    let admin = |path: &str| format!("{}{path}", sy.admin);
    let held = status_of(&http, &sy, "p").await;
    assert_eq!(
        (held["held"].as_bool(), held["held_for"].as_str()),
        (Some(true), Some("s")),
        "{held}"
    );
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], true);
    let failover = json(&http.get(&admin("/ha/failover")).await.2);
    assert_eq!(failover["active"][0]["manual"], true, "{failover}");
    for _ in 0..3 {
        let (_, h, _) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(header(&h, "x-switchyard-master"), "s");
    }
    let table = status_table(&sy);
    assert!(row(&table, "p").contains("yes (s)"), "{table}");
    assert!(table.lines().nth(2).unwrap().contains("HELD"), "{table}");

    // Down and back: recovering (in a ten-minute slow start), still held.
    http.post(&format!("{}/control/down", p.url), "").await;
    eventually(WAIT, "p failed", || async {
        status_of(&http, &sy, "p").await["state"] == "failed"
    })
    .await;
    http.post(&format!("{}/control/up", p.url), "").await;
    eventually(WAIT, "p recovering", || async {
        status_of(&http, &sy, "p").await["state"] == "recovering"
    })
    .await;
    let table = status_table(&sy);
    let p_row = row(&table, "p");
    assert!(
        p_row.contains("recovering 1") && p_row.contains("yes (s)"),
        "{table}"
    );
    assert!(
        status_of(&http, &sy, "p").await["slow_start"]
            .as_f64()
            .unwrap()
            < 0.5
    );

    // A manual failback ends it, and that survives a restart as well.
    post_ok(&http, admin("/ha/masters/p/failback")).await;
    let sy = sy.restart();
    let back = status_of(&http, &sy, "p").await;
    assert_eq!(
        (back["held"].as_bool(), back["held_for"].as_str()),
        (Some(false), None),
        "{back}"
    );
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], false);
    let seen = events(&http, &sy).await;
    for route in ["POST /ha/masters/p/failover", "POST /ha/masters/p/failback"] {
        assert!(action(&seen, route).is_some(), "{route}: {seen:?}");
    }
}

#[test]
fn an_unreadable_operator_state_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!("{SERVER}\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/send\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/operator.json"),
        r#"{"masters": {"a": {"admin": "disab"#,
    )
    .unwrap();
    let mut run = Proc::spawn_in(&["run", "--config", config.to_str().unwrap()], dir.path());
    let line = run.wait_line("operator.json", WAIT);
    assert!(line.contains("remove it"), "{line}");
    assert_eq!(run.wait_exit(WAIT), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_measured_from_the_first_seconds() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let sy = Switchyard::start(&masters_toml(&[(&a, ""), (&b, "")]));
    let http = Http::new();
    post_ok(&http, format!("{}/ha/masters/b/disable", sy.admin)).await;
    for _ in 0..5 {
        http.post(&sy.messages(), MESSAGE).await;
    }
    // Well inside the 10 s window.
    eventually(Duration::from_secs(4), "a's share to show", || async {
        status_of(&http, &sy, "a").await["share"] == 1.0
    })
    .await;
}
