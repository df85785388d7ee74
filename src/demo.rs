//! `switchyard demo`: three in-process mock masters (two regions, one standby) and the
//! proxy, with a built-in config and a temporary data directory.

use crate::config::Config;
use crate::mock::{self, MockMaster};
use crate::server::shutdown_pair;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Result<()> {
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
    for (id, region, role, weight) in specs {
        let m = Arc::new(MockMaster::new(id, Duration::from_millis(5), 0.0));
        let (addr, _task) = mock::start(m, "127.0.0.1:0".parse()?, mock_shutdown.clone()).await?;
        addrs.push((id, addr));
        masters.push_str(&format!(
            "\n[[masters]]\nid = \"{id}\"\nsend_url = \"http://{addr}/send\"\nhealth_url = \"http://{addr}/health\"\nrole = \"{role}\"\nweight = {weight}\nregion = \"{region}\"\n"
        ));
    }
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin_listen}\"\n\n[routing]\nstrategy = \"weighted_priority\"\n\n[queue]\npath = \"{}\"\n{masters}",
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
    crate::app::wait_for_signal().await;
    running.shutdown().await;
    mock_trigger.trigger();
    Ok(())
}
