//! One real etcd member for the cluster tests (`/usr/bin/etcd`, Debian's
//! `etcd-server`; `tests/run.sh` installs it).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::cluster::keys::SharedKeys;

/// One etcd member on free loopback ports with a temporary data dir; killed on drop.
pub struct Etcd {
    pub child: Child,
    pub client_url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/etcd (apt-get install etcd-server, or tests/run.sh)");
        let etcd = Etcd {
            child,
            client_url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !healthy(client) {
            assert!(Instant::now() < deadline, "etcd not healthy within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    /// Node `node`'s shared keys.
    pub async fn keys(&self, node: &str) -> Arc<SharedKeys> {
        let endpoints = std::slice::from_ref(&self.client_url);
        let keys = SharedKeys::connect(endpoints, "/sy/keys/", node, Duration::from_secs(5))
            .await
            .expect("connect to etcd");
        Arc::new(keys)
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.client_url], None)
            .await
            .expect("connect to etcd")
    }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gauge from etcd's `/metrics` on `port`.
pub fn etcd_gauge(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

impl Etcd {
    /// Waits until etcd reports at least one watcher (a waiting duplicate is watching).
    pub async fn wait_for_watchers(&self) {
        let port: u16 = self
            .client_url
            .trim_start_matches("http://127.0.0.1:")
            .parse()
            .expect("port");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let watchers = tokio::task::spawn_blocking(move || {
                etcd_gauge(port, "etcd_debugging_mvcc_watcher_total")
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
}
