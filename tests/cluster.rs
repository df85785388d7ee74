//! Cluster mode against real processes: a real etcd (Debian's `etcd-server`) and two,
//! three and five switchyard nodes on loopback ports. Membership, priority leadership
//! with terms, a leader killed or frozen past its lease, resignation, and etcd lost
//! under traffic.

mod common;
use common::etcd::{leader_is, node, status, Etcd};
use common::*;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);

fn mock_masters(mock: &Mock) -> String {
    masters_toml(&[(mock, "")])
}

fn states(v: &serde_json::Value) -> Vec<(String, String)> {
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How many messages a mock took, and the most in any one second.
async fn received(http: &Http, mock: &Mock) -> (u64, u64) {
    let (_, _, body) = http.get(&format!("{}/received", mock.url)).await;
    let r = json(&body);
    (
        r["count"].as_u64().unwrap(),
        r["max_per_second"].as_u64().unwrap(),
    )
}

/// Sends `n` messages to a node; returns the statuses that were not 200.
async fn send(http: &Http, node: &Switchyard, n: usize) -> Vec<u16> {
    let mut bad = Vec::new();
    for _ in 0..n {
        let (code, _, _) = http.post(&node.messages(), "{\"to\":\"x\"}").await;
        if code != 200 {
            bad.push(code.as_u16());
        }
    }
    bad
}

#[tokio::test]
async fn the_highest_priority_leads_and_a_killed_leader_is_replaced_with_a_new_term() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let masters = mock_masters(&mock);
    let low = node(&etcd, "/t/kill", "low", 100, &masters);
    let mid = node(&etcd, "/t/kill", "mid", 200, &masters);
    let top = node(&etcd, "/t/kill", "top", 300, &masters);
    let http = Http::new();
    let term = leader_is(&http, &[&low, &mid, &top], "top", WITHIN).await;
    eventually(WITHIN, "a stable cluster of three", || async {
        let v = status(&http, &low).await;
        v["cluster_state"] == "stable" && states(&v).len() == 3
    })
    .await;

    // Traffic on the survivors throughout: the leader's death costs them nothing.
    let sender = {
        let (http, url) = (http.clone(), low.messages());
        let url2 = mid.messages();
        tokio::spawn(async move {
            let mut bad = Vec::new();
            for i in 0..400 {
                let target = if i % 2 == 0 { &url } else { &url2 };
                let (code, _, _) = http.post(target, "{}").await;
                if code != 200 {
                    bad.push(code.as_u16());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            bad
        })
    };
    let mut top = top;
    top.proc.signal("KILL");
    top.proc.wait_exit(WITHIN);
    // The next priority takes over.
    let next_term = leader_is(&http, &[&low, &mid], "mid", WITHIN).await;
    assert!(
        next_term > term,
        "a new leader has a new term: {term} -> {next_term}"
    );
    assert_eq!(
        sender.await.unwrap(),
        Vec::<u16>::new(),
        "client errors on survivors"
    );

    eventually(WITHIN, "the killed node shown unreachable", || async {
        let v = status(&http, &low).await;
        states(&v).contains(&("top".into(), "unreachable".into()))
            && v["cluster_state"] == "degraded"
    })
    .await;
    let events = events_of(&http, &low).await;
    assert!(events
        .iter()
        .any(|(k, r)| k == "node_unreachable" && r.starts_with("top ")));
    assert!(events
        .iter()
        .any(|(k, r)| k == "leader_changed" && r == &format!("mid leads, term {next_term}")));
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_is_deposed_and_a_returning_higher_priority_takes_over() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let masters = mock_masters(&mock);
    let a = node(&etcd, "/t/stop", "a", 100, &masters);
    let b = node(&etcd, "/t/stop", "b", 500, &masters);
    let http = Http::new();
    let term = leader_is(&http, &[&a, &b], "b", WITHIN).await;

    b.proc.signal("STOP");
    // A frozen leader loses its lease.
    let stalled_term = leader_is(&http, &[&a], "a", WITHIN).await;
    assert!(stalled_term > term);
    b.proc.signal("CONT");

    // Back, b finds its lease gone: it leads again only through a new election, with a
    // newer term, never by carrying on with the old one.
    let back_term = leader_is(&http, &[&a, &b], "b", WITHIN).await;
    assert!(back_term > stalled_term, "{back_term} > {stalled_term}");
    let events = events_of(&http, &b).await;
    let terms: Vec<u64> = events
        .iter()
        .filter(|(k, _)| k == "leader_changed")
        .filter_map(|(_, r)| r.rsplit(' ').next()?.parse().ok())
        .collect();
    let mut sorted = terms.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(
        terms, sorted,
        "terms seen newest first only grow: {terms:?}"
    );
}

#[tokio::test]
async fn resign_hands_leadership_on_and_a_follower_names_the_leader() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let masters = mock_masters(&mock);
    let a = node(&etcd, "/t/resign", "a", 100, &masters);
    let b = node(&etcd, "/t/resign", "b", 200, &masters);
    let http = Http::new();
    let term = leader_is(&http, &[&a, &b], "b", WITHIN).await;

    let (code, headers, body) = http
        .post(&format!("{}/cluster/leader/resign", a.admin), "")
        .await;
    assert_eq!(code, 409);
    assert_eq!(json(&body)["error"]["code"], "not_leader");
    assert_eq!(
        header(&headers, "x-switchyard-leader"),
        b.admin.trim_start_matches("http://")
    );

    let (code, _, body) = http
        .post(&format!("{}/cluster/leader/resign", b.admin), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    // The higher priority stands down after resigning.
    let next = leader_is(&http, &[&a, &b], "a", WITHIN).await;
    assert!(next > term);
    let events = events_of(&http, &b).await;
    assert!(events.iter().any(|(k, _)| k == "leader_resigned"));
    assert!(events
        .iter()
        .any(|(k, r)| k == "admin_action" && r.starts_with("leader resign")));
}

#[tokio::test]
async fn with_etcd_gone_nodes_are_isolated_and_forward_everything_then_rejoin() {
    let mut etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let (webhook, mut alerts) = webhook_receiver().await;
    let masters = format!(
        "[alerts]\nwebhook_url = \"{webhook}\"\n{}",
        mock_masters(&mock)
    );
    let a = node(&etcd, "/t/iso", "a", 100, &masters);
    let b = node(&etcd, "/t/iso", "b", 200, &masters);
    let http = Http::new();
    leader_is(&http, &[&a, &b], "b", WITHIN).await;

    etcd.kill();
    for n in [&a, &b] {
        eventually(WITHIN, "isolated", || async {
            status(&http, n).await["state"] == "isolated"
        })
        .await;
    }
    for n in [&a, &b] {
        assert_eq!(send(&http, n, 50).await, Vec::<u16>::new());
    }
    let (_, _, metrics) = http.get(&format!("{}/metrics", a.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("switchyard_cluster_etcd_errors_total"));
    assert!(metrics.contains("switchyard_cluster_leader 0"));
    assert!(events_of(&http, &a)
        .await
        .iter()
        .any(|(k, _)| k == "cluster_isolated"));
    // Both nodes raise the critical alert.
    let mut raised = std::collections::BTreeSet::new();
    while raised.len() < 2 {
        let alert = tokio::time::timeout(WITHIN, alerts.recv())
            .await
            .expect("a cluster_isolated alert from each node")
            .expect("receiver running");
        if alert["kind"] == "cluster_isolated" {
            assert_eq!(alert["severity"], "critical", "{alert}");
            raised.insert(alert["message"].as_str().unwrap_or_default().to_string());
        }
    }

    etcd.restart();
    leader_is(&http, &[&a, &b], "b", WITHIN).await;
    for n in [&a, &b] {
        eventually(WITHIN, "active again", || async {
            status(&http, n).await["cluster_state"] == "stable"
        })
        .await;
    }
    assert!(events_of(&http, &a)
        .await
        .iter()
        .any(|(k, _)| k == "cluster_rejoined"));
}

#[tokio::test]
async fn five_nodes_agree_a_clean_stop_is_a_leave_and_a_late_node_joins() {
    let mut etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    let masters = mock_masters(&mock);
    etcd.kill();
    // Started while etcd is down: it serves alone, isolated, and joins later.
    let early = node(&etcd, "/t/five", "n0", 10, &masters);
    let http = Http::new();
    eventually(WITHIN, "isolated at start", || async {
        status(&http, &early).await["state"] == "isolated"
    })
    .await;
    assert_eq!(send(&http, &early, 5).await, Vec::<u16>::new());
    etcd.restart();
    let mut nodes = vec![early];
    for i in 1..5 {
        nodes.push(node(
            &etcd,
            "/t/five",
            &format!("n{i}"),
            10 * (i as u32 + 1),
            &masters,
        ));
    }
    let refs: Vec<&Switchyard> = nodes.iter().collect();
    leader_is(&http, &refs, "n4", WITHIN).await;
    // The leader is agreed; a node's metrics follow at its next tick.
    eventually(
        WITHIN,
        "four active nodes and a leader in the metrics",
        || async {
            let (_, _, metrics) = http.get(&format!("{}/metrics", nodes[0].admin)).await;
            String::from_utf8_lossy(&metrics)
                .contains("switchyard_cluster_nodes{state=\"active\"} 4")
        },
    )
    .await;

    let mut n2 = nodes.remove(2);
    n2.proc.signal("TERM");
    assert_eq!(n2.proc.wait_exit(WITHIN), Some(0));
    eventually(WITHIN, "a clean stop seen as a leave", || async {
        let v = status(&http, &nodes[0]).await;
        states(&v).len() == 4 && v["cluster_state"] == "stable"
    })
    .await;
    let events = events_of(&http, &nodes[0]).await;
    assert!(events
        .iter()
        .any(|(k, r)| k == "node_left" && r == "n2 left"));
    assert!(!events.iter().any(|(k, _)| k == "node_unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_masters_pace() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &[]);
    // 10 a second for the master: 5 for each of two nodes.
    let masters = format!(
        "[queue]\nmax_attempts = 1000\n{}",
        masters_toml(&[(&mock, "rate_per_sec = 10\nburst = 1")])
    );
    let a = node(&etcd, "/t/split", "a", 200, &masters);
    let b = node(&etcd, "/t/split", "b", 100, &masters);
    let http = Http::new();
    leader_is(&http, &[&a, &b], "a", WITHIN).await;
    for n in [&a, &b] {
        eventually(WITHIN, "two nodes live, as each node sees it", || async {
            states(&status(&http, n).await).len() == 2
        })
        .await;
    }
    // Both nodes at once, far above the pace: each message is queued (202) and
    // delivered at the node's share.
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..60 {
        let (http, url) = (http.clone(), [&a, &b][n % 2].messages());
        posts.spawn(async move { http.post(&url, "{}").await.0.as_u16() });
    }
    while let Some(code) = posts.join_next().await {
        assert!(matches!(code.unwrap(), 200 | 202));
    }
    eventually(Duration::from_secs(60), "all 60 delivered", || async {
        received(&http, &mock).await.0 == 60
    })
    .await;
    let (_, max) = received(&http, &mock).await;
    // Each node paces at 5 a second with a burst of 1 (a burst is never split below
    // one): at most 6 in any closed second each, 12 together. Without the split they
    // would send up to 22.
    assert!(max <= 12, "{max} in one second: above the nodes' shares");
}

#[tokio::test]
async fn a_three_member_etcd_losing_one_member_changes_nothing_and_losing_quorum_isolates() {
    let mut etcd = Etcd::start_members(3);
    let mock = Mock::start("m", &[]);
    let masters = mock_masters(&mock);
    let a = node(&etcd, "/t/quorum", "a", 200, &masters);
    let b = node(&etcd, "/t/quorum", "b", 100, &masters);
    let http = Http::new();
    let term = leader_is(&http, &[&a, &b], "a", WITHIN).await;

    // One member of three gone: etcd keeps its quorum (after electing a raft leader
    // again, if the member led it: writes wait meanwhile), the nodes their leader.
    etcd.kill_member(0);
    eventually(WITHIN, "an admin action goes through", || async {
        let url = format!("{}/ha/masters/m/drain", b.admin);
        http.post(&url, "").await.0 == 200
    })
    .await;
    eventually(WITHIN, "the drain applied on the leader", || async {
        let (_, _, body) = http.get(&format!("{}/ha/status", a.admin)).await;
        let admin = &json(&body)["masters"][0]["admin"];
        admin == "draining" || admin == "drained"
    })
    .await;
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/m/enable", a.admin), "")
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    eventually(WITHIN, "the enable applied on the follower", || async {
        let (_, _, body) = http.get(&format!("{}/ha/status", b.admin)).await;
        json(&body)["masters"][0]["admin"] == "enabled"
    })
    .await;
    assert_eq!(leader_is(&http, &[&a, &b], "a", WITHIN).await, term);
    for n in [&a, &b] {
        eventually(WITHIN, "stable with two etcd members of three", || async {
            status(&http, n).await["cluster_state"] == "stable"
        })
        .await;
    }

    // Two of three gone: no quorum, every node isolated, forwarding goes on.
    etcd.kill_member(1);
    for n in [&a, &b] {
        eventually(WITHIN, "isolated without a quorum", || async {
            status(&http, n).await["state"] == "isolated"
        })
        .await;
        assert_eq!(send(&http, n, 20).await, Vec::<u16>::new());
    }

    etcd.restart();
    leader_is(&http, &[&a, &b], "a", WITHIN).await;
    for n in [&a, &b] {
        eventually(WITHIN, "active again", || async {
            status(&http, n).await["cluster_state"] == "stable"
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_sent_to_two_nodes_at_once_is_delivered_once() {
    let etcd = Etcd::start();
    let mock = Mock::start("m", &["--latency-ms", "20"]);
    let masters = mock_masters(&mock);
    let a = node(&etcd, "/t/keys", "a", 200, &masters);
    let b = node(&etcd, "/t/keys", "b", 100, &masters);
    let http = Http::new();
    leader_is(&http, &[&a, &b], "a", WITHIN).await;
    let mut pairs = tokio::task::JoinSet::new();
    for k in 0..40 {
        for n in [&a, &b] {
            let (http, url) = (http.clone(), n.messages());
            pairs.spawn(async move {
                let key = format!("order-{k}");
                let (code, headers, _) = http
                    .post_with(&url, "{}", &[("idempotency-key", &key)])
                    .await;
                (
                    key,
                    code.as_u16(),
                    header(&headers, "x-switchyard-message-id").to_string(),
                )
            });
        }
    }
    let mut ids: std::collections::HashMap<String, Vec<String>> = Default::default();
    while let Some(answer) = pairs.join_next().await {
        let (key, code, id) = answer.unwrap();
        assert_eq!(code, 200, "{key}");
        ids.entry(key).or_default().push(id);
    }
    for (key, ids) in &ids {
        assert_eq!(
            ids[0], ids[1],
            "{key}: both nodes answer with the first message's id"
        );
    }
    assert_eq!(
        received(&http, &mock).await.0,
        40,
        "each key delivered once"
    );
}
