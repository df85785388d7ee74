//! `switchyard demo`: three in-process mock masters (two regions, one standby) and the
//! proxy, with a built-in config and a temporary data directory. Health checks and
//! failover timings are short so that a failover plays out in seconds; the audit trail
//! is printed as it grows. `--chaos` takes the primary down and back, in a loop, and
//! sends traffic ([`traffic`]): a steady trickle, and every minute a burst of queued
//! messages; `omar-master` is an account its provider bans after a while.

pub mod cluster;
mod traffic;

use crate::config::Config;
use crate::mock::{self, MockMaster};
use crate::server::shutdown_pair;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The demo's `[health]` and `[failover]`: a failover within seconds; the provider's
/// ban answer (the mock's) is recognised.
pub(crate) const TIMINGS: &str = "[health]\ninterval_ms = 500\ntimeout_ms = 400\nunhealthy_threshold = 2\nhealthy_threshold = 2\nban_patterns = [\"account banned\"]\n\n[failover]\nrecovery_wait_ms = 3000\nfailback_delay_ms = 3000\nslow_start_ms = 3000\n";

/// With `--chaos`, every master's pace: the minute's burst of queued messages drains
/// at it, never faster.
const PACE: &str = "rate_per_sec = 5\nburst = 5\n";

/// With `--chaos`, the account `omar-master`'s provider bans it after this many sends.
const BAN_AFTER: u64 = 120;

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr, chaos: bool) -> anyhow::Result<()> {
    let data = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()?;
    let (mock_trigger, mock_shutdown) = shutdown_pair();
    let specs = [
        ("linda-master", "UAE", "primary", 2),
        ("omar-master", "EU", "primary", 1),
        ("noor-master", "UAE", "standby", 1),
    ];
    let mut masters = String::new();
    let mut addrs = Vec::new();
    // The first one, which --chaos takes down and brings back.
    let mut primary = None;
    let mut mocks = Vec::new();
    for (id, region, role, weight) in specs {
        let mut m = MockMaster::new(id, Duration::from_millis(5), 0.0);
        if chaos && id == "omar-master" {
            m = m.banned_after(BAN_AFTER);
        }
        let m = Arc::new(m);
        primary.get_or_insert_with(|| m.clone());
        mocks.push((id, m.clone()));
        let (addr, _task) = mock::start(m, "127.0.0.1:0".parse()?, mock_shutdown.clone()).await?;
        addrs.push((id, addr));
        masters.push_str(&format!(
            "\n[[masters]]\nid = \"{id}\"\nsend_url = \"http://{addr}/send\"\nhealth_url = \"http://{addr}/health\"\nrole = \"{role}\"\nweight = {weight}\nregion = \"{region}\"\n"
        ));
        if chaos {
            masters.push_str(PACE);
        }
    }
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin_listen}\"\n\n[routing]\nstrategy = \"weighted_priority\"\n\n{TIMINGS}\n[queue]\npath = \"{}\"\n{masters}",
        data.path().join("queue").display()
    );
    let config = Config::from_toml(&text).map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
    let running =
        crate::app::start(config, crate::control::content_hash(text.as_bytes()), None).await?;
    let (l, a) = (running.listen, running.admin_listen);
    println!("switchyard demo is running (Ctrl-C stops it)\n");
    for (id, addr) in &addrs {
        println!("  mock master {id:<13} http://{addr}");
    }
    println!(
        "\n  send a message:\n    curl -i -X POST http://{l}/v1/messages -H 'content-type: application/json' -d '{{\"to\": \"+971500000001\", \"text\": \"hello\"}}'\n"
    );
    println!(
        "  HA status:  curl http://{a}/ha/status    (or: switchyard status --admin http://{a})"
    );
    println!("  health:     curl http://{a}/health");
    println!("  metrics:    curl http://{a}/metrics");
    println!("  data dir:   {}", data.path().display());
    if chaos {
        println!(
            "\n  chaos: {} goes down every 40 s and comes back 15 s later;\n         {} messages a second are sent, and every {} s a burst of {} queued ones,
         which drain at each master's pace (5 a second, 5 at once);\n         omar-master's provider bans it after {BAN_AFTER} messages (reinstate it with\n         `switchyard masters reinstate omar-master --admin http://{a}`)",
            specs[0].0,
            traffic::TRICKLE_PER_SEC,
            traffic::BURST_EVERY.as_secs(),
            traffic::BURST,
        );
        tokio::spawn(traffic::run(l));
        let queue = running.proxy.queue.clone();
        tokio::spawn(traffic::watch(
            move || queue.as_ref().map_or(0, |q| q.depth()),
            mocks,
        ));
    }
    println!("\nevents:");
    let audit = running.control.audit.clone();
    let primary = primary.expect("the demo has masters");
    let show = async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let started = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            // Newest first from the trail: printed oldest first.
            let seen = last;
            for e in audit.recent(100).into_iter().rev().filter(|e| e.id > seen) {
                last = e.id;
                let who = match (&e.master, &e.backup) {
                    (Some(m), Some(b)) => format!("{m} -> {b}"),
                    (Some(m), None) => m.clone(),
                    _ => String::new(),
                };
                println!(
                    "  {}  {:<18} {:<28} {}",
                    e.at,
                    e.kind.as_str(),
                    who,
                    e.reason
                );
            }
            if chaos {
                let t = started.elapsed().as_secs() % 40;
                let down = (10..25).contains(&t);
                if down != primary.is_down() {
                    primary.set_down(down);
                    println!(
                        "  chaos: {} is {}",
                        specs[0].0,
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
    running.shutdown().await;
    mock_trigger.trigger();
    Ok(())
}
