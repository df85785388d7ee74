//! A real etcd for the cluster tests: Debian's `etcd-server` (`/usr/bin/etcd`;
//! `tests/run.sh` installs it), one or three members on free loopback ports with
//! temporary data dirs, killed on drop. Members can be stopped and started again on the
//! same ports and data, or frozen with SIGSTOP.

use super::{Http, Switchyard, SERVER};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::cluster::keys::SharedKeys;
use switchyard::cluster::State;

pub struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    child: Option<Child>,
}

pub struct Etcd {
    members: Vec<Member>,
    /// More addresses the (single) member's client port listens on.
    extra_ips: Vec<String>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Etcd {
    /// One member.
    pub fn start() -> Etcd {
        Self::start_members(1)
    }

    /// One member whose client port also listens on `ips` (e.g. the host end of a
    /// veth pair, for a node in another network namespace).
    pub fn start_also_on(ips: &[&str]) -> Etcd {
        Self::start_with(1, ips)
    }

    /// `n` members forming one etcd cluster.
    pub fn start_members(n: usize) -> Etcd {
        Self::start_with(n, &[])
    }

    fn start_with(n: usize, ips: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            extra_ips: ips.iter().map(|ip| ip.to_string()).collect(),
            initial_cluster,
            _dir: dir,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", m.client);
        let peer_url = format!("http://127.0.0.1:{}", m.peer);
        let mut listen = vec![client_url.clone()];
        listen.extend(
            self.extra_ips
                .iter()
                .map(|ip| format!("http://{ip}:{}", m.client)),
        );
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &listen.join(",")])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/etcd (apt-get install etcd-server, or tests/run.sh)");
        self.members[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(self.members[i].client) {
            assert!(Instant::now() < deadline, "etcd not healthy within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URL of every member, as `[cluster] etcd` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// The client URL of the first member.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.members[0].client)
    }

    /// The process id of the first member.
    pub fn pid(&self) -> u32 {
        self.members[0].child.as_ref().expect("running").id()
    }

    /// A state handle on every member, with a 5 s call timeout.
    pub async fn state(&self) -> State {
        State::connect(&self.urls(), Duration::from_secs(5))
            .await
            .expect("connect to etcd")
    }

    /// Node `node`'s shared idempotency keys.
    pub async fn keys(&self, node: &str) -> Arc<SharedKeys> {
        let keys = SharedKeys::connect(&self.urls(), "/sy/keys/", node, Duration::from_secs(5))
            .await
            .expect("connect to etcd");
        Arc::new(keys)
    }

    /// A raw etcd client, to look at what the product wrote.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.urls(), None)
            .await
            .expect("connect to etcd")
    }

    /// Waits until etcd reports at least one watcher (a waiting duplicate is watching).
    pub async fn wait_for_watchers(&self) {
        let port = self.client_port();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let watchers = tokio::task::spawn_blocking(move || {
                gauge(port, "etcd_debugging_mvcc_watcher_total")
            })
            .await
            .expect("task");
            if watchers.is_some_and(|n| n >= 1.0) {
                return;
            }
            assert!(Instant::now() < deadline, "no watcher within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client port of the first member.
    pub fn client_port(&self) -> u16 {
        self.members[0].client
    }

    /// The TOML array of [`Etcd::urls`].
    pub fn toml_urls(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Kills every member (`kill -9`).
    pub fn kill(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every stopped member again, on its ports and data, and waits until
    /// each is healthy.
    pub fn restart(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_healthy(i);
        }
    }
}

/// A gauge from etcd's `/metrics` on `port`.
fn gauge(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut body = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut body).is_ok()
        && body.replace(' ', "").contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `[cluster]` table of a test node: a short lease so that tests of expiry run in
/// seconds, and the given prefix so that tests sharing an etcd do not meet.
pub fn cluster_toml(etcd: &Etcd, prefix: &str, id: &str, priority: u32) -> String {
    format!(
        "[cluster]\nenabled = true\nnode_id = \"{id}\"\netcd = {}\nprefix = \"{prefix}\"\n\
         priority = {priority}\nlease_ttl_ms = 2000\n",
        etcd.toml_urls()
    )
}

/// Starts a node: `[server]` on port 0, the cluster table, then `rest` (masters, ...).
pub fn node(etcd: &Etcd, prefix: &str, id: &str, priority: u32, rest: &str) -> Switchyard {
    Switchyard::start(&format!(
        "{SERVER}{}{rest}",
        cluster_toml(etcd, prefix, id, priority)
    ))
}

/// `GET /cluster/status` of a node.
pub async fn status(http: &Http, node: &Switchyard) -> serde_json::Value {
    let (code, _, body) = http.get(&format!("{}/cluster/status", node.admin)).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    super::json(&body)
}

/// Waits until every node in `nodes` agrees that `expected` leads, in one term;
/// returns that term.
pub async fn leader_is(
    http: &Http,
    nodes: &[&Switchyard],
    expected: &str,
    within: Duration,
) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            let v = status(http, n).await;
            seen.push((v["leader"].as_str().map(String::from), v["term"].as_u64()));
        }
        if let Some((Some(leader), Some(term))) = seen.first().cloned() {
            if leader == expected
                && seen
                    .iter()
                    .all(|s| s == &(Some(leader.clone()), Some(term)))
            {
                return term;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not agree that {expected} leads within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
