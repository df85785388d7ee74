//! `switchyard demo --cluster`: one etcd (started here, on loopback, in a temporary
//! directory, when an `etcd` binary is installed), three switchyard nodes (this
//! binary, `run` as child processes) with priorities 300, 200 and 100, and the demo's
//! mock masters in this process. The screen follows the cluster: leader, term and
//! every node's state, and the failovers in force. With `--chaos`, the leader is
//! killed (`kill -9`) every 40 s and started again 15 s later, and the primary master
//! goes down for 15 s every minute, so that elections and the leader's failover and
//! failback decisions play out on screen.

use crate::mock::{self, MockMaster};
use crate::server::shutdown_pair;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODES: [(&str, u32); 3] = [("node-a", 300), ("node-b", 200), ("node-c", 100)];

/// Where etcd is on PATH, if installed.
fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node: its config file, addresses and process.
struct Node {
    id: &'static str,
    config: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    proc: Option<Kid>,
}

impl Node {
    fn start(&mut self, bin: &Path, dir: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(dir.join(format!("{}.log", self.id)))?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.proc = Some(Kid(child));
        Ok(())
    }

    fn stop(&mut self, signal: &str) {
        if let Some(kid) = &self.proc {
            let _ = Command::new("kill")
                .args([signal, &kid.0.id().to_string()])
                .status();
        }
        if signal == "-KILL" || signal == "-TERM" {
            if let Some(mut kid) = self.proc.take() {
                let _ = kid.0.wait();
            }
        }
    }
}

/// `GET path` on `addr`; the body, if it answered.
async fn get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        serde_json::from_slice(&buf[at + 4..]).ok()
    };
    tokio::time::timeout(Duration::from_secs(1), io)
        .await
        .ok()
        .flatten()
}

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr, chaos: bool) -> anyhow::Result<()> {
    let Some(etcd) = etcd_binary() else {
        anyhow::bail!(
            "`switchyard demo --cluster` needs etcd, which is not installed here.\n\
             On Debian or Ubuntu: sudo apt-get install etcd-server\n\
             Elsewhere: put an etcd v3 binary (https://etcd.io) on PATH.\n\
             The single-node demo needs nothing: switchyard demo"
        );
    };
    let dir = tempfile::Builder::new()
        .prefix("switchyard-cluster-demo-")
        .tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _etcd = Kid(Command::new(&etcd)
        .args(["--name", "demo", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &etcd_url])
        .args(["--advertise-client-urls", &etcd_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("demo={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?);

    let (mock_trigger, mock_shutdown) = shutdown_pair();
    let mut masters = String::new();
    let mut primary = None;
    for (id, role) in [("linda-master", "primary"), ("noor-master", "standby")] {
        let m = Arc::new(MockMaster::new(id, Duration::from_millis(5), 0.0));
        primary.get_or_insert_with(|| m.clone());
        let (addr, _task) = mock::start(m, "127.0.0.1:0".parse()?, mock_shutdown.clone()).await?;
        masters.push_str(&format!(
            "\n[[masters]]\nid = \"{id}\"\nsend_url = \"http://{addr}/send\"\nhealth_url = \"http://{addr}/health\"\nrole = \"{role}\"\n"
        ));
    }
    let bin = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for (i, (id, priority)) in NODES.iter().enumerate() {
        let shift = |a: SocketAddr| SocketAddr::new(a.ip(), a.port().wrapping_add(i as u16 + 1));
        let (l, a) = (shift(listen), shift(admin_listen));
        let config = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{l}\"\nadmin_listen = \"{a}\"\n\n{}\n[queue]\npath = \"{}\"\n\n\
                 [cluster]\nenabled = true\nnode_id = \"{id}\"\netcd = [\"{etcd_url}\"]\n\
                 prefix = \"/switchyard/demo\"\npriority = {priority}\nlease_ttl_ms = 3000\n{masters}",
                super::TIMINGS,
                dir.path().join(id).join("queue").display()
            ),
        )?;
        nodes.push(Node {
            id,
            config,
            listen: l,
            admin: a,
            proc: None,
        });
    }
    for n in &mut nodes {
        n.start(&bin, dir.path())?;
    }

    println!("switchyard cluster demo is running (Ctrl-C stops it)\n");
    println!("  etcd        {etcd_url}");
    for n in &nodes {
        println!(
            "  {}      client http://{}  admin http://{}",
            n.id, n.listen, n.admin
        );
    }
    let first = &nodes[0];
    println!(
        "\n  cluster:    switchyard cluster status --admin http://{}\n  send:       curl -i -X POST http://{}/v1/messages -d '{{\"to\": \"+971500000001\"}}'\n  hand over:  switchyard cluster resign --admin http://<the leader's admin>\n  logs:       {}",
        first.admin,
        first.listen,
        dir.path().display()
    );
    if chaos {
        println!(
            "\n  chaos: every 40 s the leader is killed (kill -9) and started again 15 s later;\n         linda-master goes down for 15 s every 60 s: the leader fails it over"
        );
    }
    println!("\ncluster:");

    let show = async {
        let mut last = String::new();
        let started = Instant::now();
        let mut killed: Option<(usize, Instant)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let mut line = Vec::new();
            let mut leader = None;
            for (i, n) in nodes.iter().enumerate() {
                match get(n.admin, "/cluster/status").await {
                    Some(v) => {
                        let state = v["state"].as_str().unwrap_or("?").to_string();
                        if state == "leader" {
                            leader = Some((i, v["term"].as_u64().unwrap_or(0)));
                        }
                        line.push(format!("{} {state}", n.id));
                    }
                    None => line.push(format!("{} down", n.id)),
                }
            }
            let failover = get(nodes[1].admin, "/ha/failover").await;
            let held = failover
                .and_then(|f| f["active"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "{} -> {}",
                        a["failed"].as_str().unwrap_or("?"),
                        a["backup"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let now = format!(
                "{} | term {} | failovers: {}",
                line.join(", "),
                leader.map_or("-".into(), |(_, t)| t.to_string()),
                if held.is_empty() { "none".into() } else { held }
            );
            if now != last {
                println!(
                    "  {}  {now}",
                    crate::util::rfc3339(std::time::SystemTime::now())
                );
                last = now;
            }
            if !chaos {
                continue;
            }
            let t = started.elapsed().as_secs();
            match killed {
                None if t % 40 == 20 => {
                    if let Some((i, _)) = leader {
                        println!("  chaos: kill -9 {} (the leader)", nodes[i].id);
                        nodes[i].stop("-KILL");
                        killed = Some((i, Instant::now()));
                    }
                }
                Some((i, at)) if at.elapsed() >= Duration::from_secs(15) => {
                    println!("  chaos: {} starts again", nodes[i].id);
                    let _ = nodes[i].start(&bin, dir.path());
                    killed = None;
                }
                _ => {}
            }
            if let Some(p) = &primary {
                let down = (30..45).contains(&(t % 60));
                if down != p.is_down() {
                    p.set_down(down);
                    println!(
                        "  chaos: linda-master is {}",
                        if down { "DOWN" } else { "back UP" }
                    );
                }
            }
        }
    };
    tokio::select! {
        _ = crate::app::wait_for_signal() => {}
        _ = show => {}
    }
    for n in &mut nodes {
        n.stop("-TERM");
    }
    mock_trigger.trigger();
    Ok(())
}
