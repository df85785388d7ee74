//! Starting and stopping a whole proxy: both listeners, the reload triggers and the
//! background tasks, wired to one shutdown signal.

use crate::admin::Admin;
use crate::alerts::Alerter;
use crate::config::Config;
use crate::control::{reload, Control};
use crate::proxy::Proxy;
use crate::queue::Queue;
use crate::server::{self, shutdown_pair, Limits, ShutdownTrigger};
use crate::util::supervise;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// A running proxy.
pub struct Running {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub control: Arc<Control>,
    pub proxy: Arc<Proxy>,
    trigger: ShutdownTrigger,
    controller: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
}

/// Binds both listeners and starts serving. `path` is the file reloads read.
pub async fn start(config: Config, hash: u64, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let metrics = crate::telemetry::install();
    let listener = server::bind(config.server.listen)
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin_listener = server::bind(config.server.admin_listen).with_context(|| {
        format!(
            "cannot listen on {} (server.admin_listen)",
            config.server.admin_listen
        )
    })?;
    let listen = listener.local_addr()?;
    let admin_listen = admin_listener.local_addr()?;
    let drain = config.server.request_timeout + Duration::from_secs(1);

    let data_dir = config.data_dir();
    let audit = crate::audit::AuditLog::open(&data_dir).with_context(|| {
        format!(
            "cannot open the audit trail in {} (the parent of queue.path)",
            data_dir.display()
        )
    })?;
    let (trigger, shutdown) = shutdown_pair();
    let (alerter, webhook) = Alerter::new(
        config.alerts.webhook_url.clone(),
        ALERT_FOLD_WINDOW,
        shutdown.clone(),
    );
    let queue_config = config.queue.clone();
    // Read before the first routing table: a master disabled, drained or failed over
    // before the restart starts that way.
    let operator = crate::control::operator::OperatorStore::open(&data_dir)?;
    let control = Arc::new(Control::new(config, hash, path, Arc::new(audit), operator));
    // Before any traffic: daily_limit counts the 24 hours before the restart too.
    crate::control::daily::restore(&control, &data_dir);
    let queue = if queue_config.enabled {
        let queue_path = queue_config.path.clone();
        let queue = tokio::task::spawn_blocking(move || Queue::open(&queue_config))
            .await?
            .with_context(|| {
                format!(
                    "cannot open the queue in {} (queue.path)",
                    queue_path.display()
                )
            })?;
        Some(Arc::new(queue))
    } else {
        None
    };
    let proxy = Arc::new(Proxy::new(control.clone(), queue.clone()));
    let alerts = Arc::new(alerter);
    let mut tasks = JoinSet::new();
    let cluster = match control.table().config.cluster.clone() {
        Some(config) => {
            let advertised = config
                .advertise_admin
                .clone()
                .unwrap_or_else(|| admin_listen.to_string());
            let q = queue.clone();
            let depth = Box::new(move || q.as_ref().map_or(0, |q| q.depth()));
            let cluster = crate::cluster::Cluster::new(
                config,
                advertised,
                control.audit.clone(),
                alerts.clone(),
                depth,
            )
            .await
            .context("cannot set up the etcd client ([cluster] etcd)")?;
            let c = control.clone();
            cluster.on_split(Box::new(move || c.reconfigure_budgets()));
            let handoff = queue
                .clone()
                .map(|q| crate::cluster::handoff::Sender::new(q, control.clone()));
            tasks.spawn(cluster.clone().run(shutdown.clone(), handoff));
            // A key accepted on any node is a duplicate on this one.
            let keys = crate::cluster::keys::SharedKeys::connect(
                &cluster.config.etcd,
                &format!("{}/keys/", cluster.prefix()),
                cluster.node_id(),
                crate::cluster::keys::DEFAULT_CLAIM_TIMEOUT,
            )
            .await
            .context("cannot set up the etcd client ([cluster] etcd)")?;
            proxy.set_shared_keys(Arc::new(keys));
            // Before serving: a node started after a push runs it from the start.
            crate::cluster::config_sync::first(&cluster, &control).await;
            tasks.spawn(crate::cluster::config_sync::run(
                cluster.clone(),
                control.clone(),
                shutdown.clone(),
            ));
            Some(cluster)
        }
        None => None,
    };
    let shared = cluster.clone().map(crate::cluster::shared::Shared::new);
    let (failover, controller) = crate::control::failover::spawn_with(
        control.clone(),
        alerts.clone(),
        shared.clone(),
        shutdown.clone(),
    );
    if let Some(shared) = &shared {
        let handle = failover.clone();
        let apply = move |doc, _revision| {
            let handle = handle.clone();
            async move {
                let command = crate::control::failover::Command::Apply(Box::new(doc));
                if let Err((_, _, why)) = handle.command(command).await {
                    tracing::error!("cannot apply the shared operator state: {why}");
                }
            }
        };
        tasks.spawn(
            shared
                .clone()
                .follow(control.operator_state(), apply, shutdown.clone()),
        );
    }
    let admin = Arc::new(Admin {
        control: control.clone(),
        failover,
        queue: queue.clone(),
        metrics,
        cluster,
        shared,
    });
    tasks.spawn(webhook);
    // Both listeners read their limits from the current config before each accept: a
    // reload changes them for the connections accepted after it.
    // Their certificates likewise: a reload with new files serves the next connections
    // with them, and the open ones keep theirs.
    let limits = |control: Arc<Control>| move || Limits::of(&control.table().config.server);
    let (c, ca) = (control.clone(), control.clone());
    let p = proxy.clone();
    tasks.spawn(server::serve_messages(
        listener,
        move |req| p.clone().handle(req),
        limits(control.clone()),
        move || c.table().config.server.tls.clone(),
        shutdown.clone(),
        drain,
    ));
    tasks.spawn(server::serve_with(
        admin_listener,
        move |req| admin.clone().handle(req),
        limits(control.clone()),
        move || ca.table().config.server.admin_tls.clone(),
        shutdown.clone(),
        drain,
    ));
    if let Some(queue) = &queue {
        let (q, c, a, s) = (
            queue.clone(),
            control.clone(),
            alerts.clone(),
            shutdown.clone(),
        );
        tasks.spawn(supervise("queue watch", move || {
            watch_queue_depth(q.clone(), c.clone(), a.clone(), s.clone())
        }));
        let (p, q, s) = (proxy.clone(), queue.clone(), shutdown.clone());
        tasks.spawn(supervise("queue delivery", move || {
            crate::proxy::delivery::run(p.clone(), q.clone(), s.clone())
        }));
    }
    tasks.spawn(crate::control::daily::run(
        control.clone(),
        alerts.clone(),
        data_dir.clone(),
        shutdown.clone(),
    ));
    let (p, s) = (proxy.clone(), shutdown.clone());
    tasks.spawn(supervise("idempotency sweep", move || {
        crate::proxy::sweep_messages(p.clone(), s.clone())
    }));
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
        controller,
        tasks,
    })
}

/// Raises the queue warning of SPEC section 5 while more than `alerts.queue_warning`
/// messages wait, and a critical `queue_write_failed` alert when writes to disk failed
/// since the last look or the queue's writer is gone (repeats are folded by the
/// alerter).
async fn watch_queue_depth(
    queue: Arc<Queue>,
    control: Arc<Control>,
    alerts: Arc<Alerter>,
    mut shutdown: crate::server::Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failed_before = queue.failed_writes();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let failed = queue.failed_writes();
        if queue.state() == crate::queue::store::State::Stopped {
            alerts.raise(
                crate::alerts::Severity::Critical,
                "queue_write_failed",
                None,
                "the queue writer has stopped: queued messages get 507 until a restart",
            );
        } else if failed > failed_before {
            failed_before = failed;
            alerts.raise(
                crate::alerts::Severity::Critical,
                "queue_write_failed",
                None,
                "the queue cannot write to disk (full or read-only?): new queued messages get 507",
            );
        }
        let limit = control.table().config.alerts.queue_warning;
        let depth = queue.depth();
        if depth > limit {
            alerts.raise(
                crate::alerts::Severity::Warning,
                "queue_backlog",
                None,
                format!(
                    "{depth} messages are waiting in the queue (alerts.queue_warning = {limit})"
                ),
            );
        }
    }
}

/// Repeats of one alert about one master inside this window are folded.
const ALERT_FOLD_WINDOW: Duration = Duration::from_secs(300);

impl Running {
    /// Stops accepting, lets in-flight exchanges finish (bounded), then returns.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        if let Err(e) = self.controller.await {
            tracing::error!(error = %e, "the failover controller failed");
        }
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "a task failed during shutdown");
            }
        }
        let control = self.control.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let dir = control.table().config.data_dir();
            crate::control::daily::save_clean(&control, &dir);
        });
        if let Err(e) = saved.await {
            tracing::error!(error = %e, "the daily counts save failed");
        }
        let audit = self.control.audit.clone();
        match tokio::task::spawn_blocking(move || audit.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot flush the audit trail"),
            Err(e) => tracing::error!(error = %e, "the audit flush failed"),
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
