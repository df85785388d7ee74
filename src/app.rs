//! Starting and stopping a whole proxy: both listeners, the reload triggers and the
//! background tasks, wired to one shutdown signal.

use crate::admin::Admin;
use crate::config::Config;
use crate::control::{reload, Control};
use crate::proxy::Proxy;
use crate::server::{self, shutdown_pair, ShutdownTrigger};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A running proxy.
pub struct Running {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub control: Arc<Control>,
    pub proxy: Arc<Proxy>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
}

/// Binds both listeners and starts serving. `path` is the file reloads read.
pub async fn start(config: Config, hash: u64, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let metrics = crate::telemetry::install();
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.admin_listen)",
                config.server.admin_listen
            )
        })?;
    let listen = listener.local_addr()?;
    let admin_listen = admin_listener.local_addr()?;
    let drain = config.server.request_timeout + Duration::from_secs(1);

    let control = Arc::new(Control::new(config, hash, path));
    let proxy = Arc::new(Proxy::new(control.clone()));
    let admin = Arc::new(Admin {
        control: control.clone(),
        metrics,
    });
    let (trigger, shutdown) = shutdown_pair();
    let mut tasks = JoinSet::new();
    let p = proxy.clone();
    tasks.spawn(server::serve(
        listener,
        move |req| p.clone().handle(req),
        shutdown.clone(),
        drain,
    ));
    tasks.spawn(server::serve(
        admin_listener,
        move |req| admin.clone().handle(req),
        shutdown.clone(),
        drain,
    ));
    tasks.spawn(crate::proxy::sweep_messages(
        proxy.clone(),
        shutdown.clone(),
    ));
    if let Some(path) = &control.config_path {
        #[cfg(unix)]
        tasks.spawn(reload::on_sighup(control.clone(), shutdown.clone()));
        match reload::FileWatch::new(path) {
            Ok(watch) => {
                let debounce = Duration::from_millis(200);
                tasks.spawn(watch.run(control.clone(), shutdown.clone(), debounce));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API")
            }
        }
    }
    tracing::info!(%listen, %admin_listen, "switchyard started");
    Ok(Running {
        listen,
        admin_listen,
        control,
        proxy,
        trigger,
        tasks,
    })
}

impl Running {
    /// Stops accepting, lets in-flight exchanges finish (bounded), then returns.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "a task failed during shutdown");
            }
        }
        tracing::info!("switchyard stopped");
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _interrupted = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _interrupted = tokio::signal::ctrl_c().await;
    }
}
