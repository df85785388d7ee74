//! A real network partition: one switchyard node runs in its own network namespace,
//! joined to the host by two veth pairs, one that carries its etcd traffic and one
//! that carries clients and the masters. Taking the first link down cuts that node,
//! and only that node, from etcd: it must go on forwarding, report `isolated`, and
//! decide nothing, while the others elect a new leader; with the link back it rejoins
//! and leads again only through a new election. Needs root and `ip` (iproute2;
//! `tests/run.sh` installs it).

mod common;
use common::etcd::{leader_is, status, Etcd};
use common::*;
use std::process::Command;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with two veth links to the host, removed on drop.
struct Netns {
    name: String,
    /// The host end of the link that carries etcd traffic.
    etcd_link: String,
    /// Host and namespace addresses of the etcd link and of the access link.
    etcd_host: String,
    access_host: String,
    access_ns: String,
}

impl Netns {
    fn new() -> Netns {
        let tag = format!("{:x}", std::process::id() & 0xfffff);
        let octet = 20 + std::process::id() % 200;
        let name = format!("sy{tag}");
        let _stale = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            etcd_link: format!("e{tag}h"),
            etcd_host: format!("10.{octet}.1.1"),
            access_host: format!("10.{octet}.2.1"),
            access_ns: format!("10.{octet}.2.2"),
            name,
        };
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        for (kind, net) in [("e", 1), ("a", 2)] {
            let (host, inside) = (format!("{kind}{tag}h"), format!("{kind}{tag}n"));
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns.name]);
            ip(&[
                "addr",
                "add",
                &format!("10.{octet}.{net}.1/30"),
                "dev",
                &host,
            ]);
            ip(&["link", "set", &host, "up"]);
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns.name, "ip"];
                all.extend_from_slice(args);
                ip(&all);
            };
            exec(&[
                "addr",
                "add",
                &format!("10.{octet}.{net}.2/30"),
                "dev",
                &inside,
            ]);
            exec(&["link", "set", &inside, "up"]);
        }
        ns
    }

    fn etcd_link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.etcd_link,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pairs with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Starts `switchyard run` inside the namespace.
fn node_in(ns: &Netns, config: &str) -> Switchyard {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, BIN, "run", "--config"])
        .arg(&path)
        .current_dir(dir.path());
    Switchyard::attach(Proc::spawn_command(cmd), dir, path)
}

#[tokio::test]
async fn a_node_cut_from_etcd_forwards_isolated_and_rejoins_through_a_new_election() {
    let ns = Netns::new();
    let etcd = Etcd::start_also_on(&[&ns.etcd_host]);
    // The master listens where both the host and the namespace reach it.
    let mock = Mock::start_on("m", &format!("{}:0", ns.access_host), &[]);
    let masters = masters_toml(&[(&mock, "")]);
    let a = common::etcd::node(&etcd, "/t/part", "a", 200, &masters);
    let b = common::etcd::node(&etcd, "/t/part", "b", 100, &masters);
    let cut = node_in(
        &ns,
        &format!(
            "[server]\nlisten = \"{0}:0\"\nadmin_listen = \"{0}:0\"\n\
             [cluster]\nenabled = true\nnode_id = \"c\"\netcd = [\"http://{1}:{2}\"]\n\
             prefix = \"/t/part\"\npriority = 300\nlease_ttl_ms = 2000\n{masters}",
            ns.access_ns,
            ns.etcd_host,
            etcd.client_port()
        ),
    );
    let http = Http::new();
    let term = leader_is(&http, &[&a, &b, &cut], "c", WITHIN).await;

    ns.etcd_link(false);
    eventually(WITHIN, "the cut node reports isolated", || async {
        status(&http, &cut).await["state"] == "isolated"
    })
    .await;
    let next = leader_is(&http, &[&a, &b], "a", WITHIN).await;
    assert!(next > term);
    eventually(WITHIN, "the others see it unreachable", || async {
        let v = status(&http, &a).await;
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "c" && n["state"] == "unreachable")
    })
    .await;
    // Cut from etcd, not from its clients or masters: it forwards every message.
    for _ in 0..20 {
        let (code, _, _) = http.post(&cut.messages(), "{}").await;
        assert_eq!(code, 200);
    }
    // It decides nothing for the cluster meanwhile.
    let (code, _, body) = http
        .post(&format!("{}/ha/masters/m/disable", cut.admin), "")
        .await;
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    let (_, _, metrics) = http.get(&format!("{}/metrics", cut.admin)).await;
    assert!(String::from_utf8_lossy(&metrics).contains("switchyard_cluster_leader 0"));

    ns.etcd_link(true);
    let back = leader_is(&http, &[&a, &b, &cut], "c", WITHIN).await;
    assert!(back > next, "it leads again in a new term: {back} > {next}");
    let kinds: Vec<String> = events_of(&http, &cut)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kinds.contains(&"cluster_isolated".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"cluster_rejoined".to_string()), "{kinds:?}");
}
