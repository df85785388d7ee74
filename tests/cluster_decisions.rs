//! Cluster decisions and admin actions against real processes: three switchyard nodes
//! on a real etcd. Only the leader fails a master over, when a majority of nodes see it
//! down; every node applies the decision; an admin action on any node applies on all;
//! a node cut off from etcd refuses admin actions and keeps what it applied.

mod common;
use common::etcd::{leader_is, node, Etcd};
use common::*;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);

/// Fast health checks, so that a dead master fails within a second.
const HEALTH: &str = "[health]\ninterval_ms = 100\ntimeout_ms = 200\nunhealthy_threshold = 2\n\
                      [failover]\nrecovery_wait_ms = 200\nfailback_delay_ms = 500\nslow_start_ms = 500\n";

/// `p` (probed at `probe`) and its standby `s`.
fn masters(p: &Mock, probe: &str, s: &Mock) -> String {
    format!(
        "{HEALTH}\n[[masters]]\nid = \"p\"\nsend_url = \"{}\"\nhealth_url = \"{probe}\"\n\
         [[masters]]\nid = \"s\"\nrole = \"standby\"\nsend_url = \"{}\"\nhealth_url = \"{}/health\"\n",
        p.send_url(),
        s.send_url(),
        s.url
    )
}

async fn failover_of(http: &Http, node: &Switchyard) -> serde_json::Value {
    let (_, _, body) = http.get(&format!("{}/ha/failover", node.admin)).await;
    json(&body)
}

fn backup_of(v: &serde_json::Value, failed: &str) -> Option<String> {
    v["active"]
        .as_array()?
        .iter()
        .find(|a| a["failed"] == failed)
        .map(|a| a["backup"].as_str().unwrap_or_default().to_string())
}

async fn reasons(http: &Http, node: &Switchyard, kind: &str) -> Vec<String> {
    let events = events_of(http, node).await;
    events
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, r)| r)
        .collect()
}

#[tokio::test]
async fn a_master_one_node_sees_down_stays_and_one_all_see_down_fails_over_everywhere() {
    let etcd = Etcd::start();
    let mut p = Mock::start("p", &[]);
    let s = Mock::start("s", &[]);
    let healthy = format!("{}/health", p.url);
    // Node a probes a port nobody listens on: it alone sees p down.
    let nowhere = "http://127.0.0.1:9/health";
    // b and c first: a never makes a cluster of one, whose only view is its own.
    let b = node(&etcd, "/t/dec", "b", 200, &masters(&p, &healthy, &s));
    let c = node(&etcd, "/t/dec", "c", 100, &masters(&p, &healthy, &s));
    let http = Http::new();
    leader_is(&http, &[&b, &c], "b", WITHIN).await;
    let a = node(&etcd, "/t/dec", "a", 300, &masters(&p, nowhere, &s));
    let nodes = [&a, &b, &c];
    leader_is(&http, &nodes, "a", WITHIN).await;
    eventually(WITHIN, "a sees p failed", || async {
        let (_, _, body) = http.get(&format!("{}/ha/status", a.admin)).await;
        json(&body)["masters"][0]["state"] == "failed"
    })
    .await;
    // The leader itself sees p down, but one node in three is no majority: the
    // others keep p, and so does the cluster. Give the leader time to (wrongly) act.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in nodes {
        assert_eq!(backup_of(&failover_of(&http, n).await, "p"), None);
    }

    p.proc.signal("KILL");
    p.proc.wait_exit(WITHIN);
    for n in nodes {
        eventually(WITHIN, "s promoted on every node", || async {
            backup_of(&failover_of(&http, n).await, "p").as_deref() == Some("s")
        })
        .await;
    }
    let started = reasons(&http, &c, "failover_started").await;
    assert_eq!(started.len(), 1, "one failover, applied once: {started:?}");
    assert!(started[0].contains("decided by a, term"), "{started:?}");
    // Every node now sends to the standby.
    let before = s.received(&http).await;
    for n in nodes {
        let (code, headers, _) = http.post(&n.messages(), "{}").await;
        assert_eq!(code, 200);
        assert_eq!(header(&headers, "x-switchyard-master"), "s");
    }
    assert_eq!(s.received(&http).await, before + 3);

    // p comes back: the leader gives its place back on every node.
    let _p = Mock::start_on("p", p.url.trim_start_matches("http://"), &[]);
    for n in [&b, &c] {
        eventually(WITHIN, "failback everywhere", || async {
            backup_of(&failover_of(&http, n).await, "p").is_none()
        })
        .await;
    }
}

#[tokio::test]
async fn an_admin_action_on_any_node_applies_on_all_and_an_isolated_node_refuses() {
    let mut etcd = Etcd::start();
    let p = Mock::start("p", &[]);
    let s = Mock::start("s", &[]);
    let probe = format!("{}/health", p.url);
    let a = node(&etcd, "/t/adm", "a", 300, &masters(&p, &probe, &s));
    let b = node(&etcd, "/t/adm", "b", 200, &masters(&p, &probe, &s));
    let http = Http::new();
    leader_is(&http, &[&a, &b], "a", WITHIN).await;

    // On the follower: disable p. The leader stops sending to it.
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/p/disable", b.admin), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    eventually(WITHIN, "the leader applies it", || async {
        let (_, _, body) = http.get(&format!("{}/ha/status", a.admin)).await;
        json(&body)["masters"][0]["admin"] == "disabled"
    })
    .await;
    let before = p.received(&http).await;
    for _ in 0..10 {
        // The only primary is out, the standby is no primary: queued.
        let (code, _, _) = http.post(&a.messages(), "{}").await;
        assert_eq!(code, 202);
    }
    assert_eq!(p.received(&http).await, before);

    // A manual failover on the leader, a failback on the follower, pause on either.
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/p/failover", a.admin), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["backup"], "s");
    eventually(WITHIN, "the follower applies the failover", || async {
        backup_of(&failover_of(&http, &b).await, "p").as_deref() == Some("s")
    })
    .await;
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/p/failover", b.admin), "")
        .await;
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/p/failback", b.admin), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["demoted"], "s");
    eventually(WITHIN, "the leader applies the failback", || async {
        backup_of(&failover_of(&http, &a).await, "p").is_none()
    })
    .await;
    let (code, _, _) = http.post(&format!("{}/ha/pause", a.admin), "").await;
    assert_eq!(code, 200);
    eventually(WITHIN, "the follower applies the pause", || async {
        failover_of(&http, &b).await["failover_paused"] == true
    })
    .await;

    // Cut off from etcd: refused, and what was applied stays.
    etcd.kill();
    eventually(WITHIN, "isolated", || async {
        common::etcd::status(&http, &b).await["state"] == "isolated"
    })
    .await;
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/p/enable", b.admin), "")
        .await;
    assert_eq!(code, 503);
    assert_eq!(json(&body)["error"]["code"], "cluster_isolated");
    assert_eq!(failover_of(&http, &b).await["failover_paused"], true);
    let before = p.received(&http).await;
    let (code, _, _) = http.post(&b.messages(), "{}").await;
    assert_eq!(
        code, 202,
        "p stays disabled, the standby is no primary: queued"
    );
    assert_eq!(p.received(&http).await, before);

    // Back: the shared state is what it was, and changes apply again.
    etcd.restart();
    eventually(WITHIN, "enable applies once etcd is back", || async {
        let (code, _, _) = http
            .post(&format!("{}/ha/masters/p/enable", b.admin), "")
            .await;
        code == 200
    })
    .await;
    // Applied on the other node through etcd's watch, as the disable was.
    eventually(WITHIN, "the leader applies the enable", || async {
        let (_, _, body) = http.get(&format!("{}/ha/status", a.admin)).await;
        json(&body)["masters"][0]["admin"] == "enabled"
    })
    .await;
    let kept = reasons(&http, &a, "paused").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
}
