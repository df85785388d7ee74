//! Live reload: SIGHUP, a change of the file on disk, `POST /admin/reload` and, in
//! cluster mode, a shared config pushed through etcd all end in [`reload`], which
//! validates the whole config before anything changes.
//!
//! In cluster mode, once a shared config was pushed (see [`PushedConfig`] and
//! `crate::cluster::config_sync`), a node runs the node-local part of its own file with
//! that shared part ([`Config::from_parts`]): a local reload re-reads the file's
//! node-local keys, and an edit of a shared section of the file is ignored, with a
//! warning naming the sections. The config version is then the cluster's: the shared
//! config's version (1 before the first push), the same on every node; a local reload
//! keeps it.

use super::Control;
use crate::audit::{EventKind, NewEvent};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::server::Shutdown;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A shared config pushed to the cluster (SPEC section 11), as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushedConfig {
    /// 2 for the first push (1 is every node's own file), one more for each push.
    pub version: u64,
    /// The TOML text as pushed: the shared part only.
    pub toml: String,
    /// The node that took the push.
    pub pushed_by: String,
    /// When it was stored (Unix milliseconds, the pushing node's clock).
    pub pushed_at_ms: u64,
}

/// Reads, validates and applies the config file (merged with the shared config pushed
/// to the cluster, when there is one). An invalid result changes nothing: the error is
/// logged, counted and kept for `/health`. Returns the config version.
pub fn reload(control: &Control, trigger: &'static str) -> Result<u64, ConfigErrors> {
    let Some(path) = &control.config_path else {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "this instance runs an embedded config; there is no file to reload",
        )]));
    };
    let shared = control.pushed.load_full();
    let what = match &shared {
        Some(s) if trigger == CLUSTER => {
            format!(
                "shared config version {} pushed by {}",
                s.version, s.pushed_by
            )
        }
        Some(s) => format!("{trigger}, with shared config version {}", s.version),
        None => trigger.to_string(),
    };
    let result = std::fs::read(path)
        .map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })
        .and_then(|mut bytes| {
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| ConfigErrors(vec![ConfigError::new("", "the file is not UTF-8")]))?;
            let Some(shared) = &shared else {
                return Config::from_toml(&text).map(|c| {
                    let digest = c.digest(&bytes);
                    (c, digest)
                });
            };
            if trigger != CLUSTER {
                let ignored = crate::config::shared::ignored(&text, &shared.toml);
                if !ignored.is_empty() {
                    tracing::warn!(
                        sections = ?ignored,
                        config_version = shared.version,
                        "the config file's shared sections are ignored: the shared config pushed to the cluster is in force"
                    );
                }
            }
            Config::from_parts(&text, &shared.toml).map(|c| {
                bytes.push(0);
                bytes.extend_from_slice(shared.toml.as_bytes());
                let digest = c.digest(&bytes);
                (c, digest)
            })
        });
    match result {
        Ok((config, hash)) => {
            // A node of a cluster numbers its configs as the cluster does.
            let version = config.cluster.is_some().then(|| {
                shared
                    .as_ref()
                    .map_or(control.table().config_version, |s| s.version)
            });
            let (version, changed) = control.apply_config_as(config, hash, version);
            crate::telemetry::config_reload(true);
            if changed {
                control.audit.record(NewEvent::new(
                    EventKind::ConfigReloaded,
                    format!("config version {version} ({what})"),
                ));
            }
            tracing::info!(trigger, config_version = version, "config reloaded");
            Ok(version)
        }
        Err(errors) => {
            crate::telemetry::config_reload(false);
            tracing::error!(trigger, errors = %errors, "config rejected; the running config is kept");
            control.reject_config(match &shared {
                Some(_) => format!("{what}: {errors}"),
                None => errors.to_string(),
            });
            control.audit.record(NewEvent::new(
                EventKind::ConfigRejected,
                format!("{what}: {errors}"),
            ));
            Err(errors)
        }
    }
}

/// The trigger of a reload for a shared config seen in etcd.
pub const CLUSTER: &str = "cluster";

/// A key read only at start whose new value a reload did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsRestart {
    pub key: &'static str,
}

impl std::fmt::Display for NeedsRestart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed: needs a restart; the running value is kept",
            self.key
        )
    }
}

/// Puts the running values of the keys read only at start back into `new`: the
/// listeners (`server.listen`, `server.admin_listen`) are bound once, and the queue
/// (`queue.enabled`, `queue.path`, which also places the audit trail, and
/// `queue.max_messages`) is opened once, its delivery task started once; the log
/// writer (`log.format`) is set up once. Returns the keys whose value the file changed.
pub fn keep_start_only(running: &Config, new: &mut Config) -> Vec<NeedsRestart> {
    let mut kept = Vec::new();
    let mut keep = |key: &'static str, changed: bool| {
        if changed {
            kept.push(NeedsRestart { key });
        }
    };
    keep("server.listen", new.server.listen != running.server.listen);
    new.server.listen = running.server.listen;
    keep(
        "server.admin_listen",
        new.server.admin_listen != running.server.admin_listen,
    );
    new.server.admin_listen = running.server.admin_listen;
    keep("queue.enabled", new.queue.enabled != running.queue.enabled);
    new.queue.enabled = running.queue.enabled;
    keep("queue.path", new.queue.path != running.queue.path);
    new.queue.path.clone_from(&running.queue.path);
    keep(
        "queue.max_messages",
        new.queue.max_messages != running.queue.max_messages,
    );
    new.queue.max_messages = running.queue.max_messages;
    // The log writer is set up once, before the first line.
    keep("log.format", new.log != running.log);
    new.log = running.log;
    // A node joins one cluster, under one id, for its whole life.
    keep("cluster", new.cluster != running.cluster);
    new.cluster.clone_from(&running.cluster);
    kept
}

/// Reloads on SIGHUP until shutdown.
#[cfg(unix)]
pub async fn on_sighup(control: Arc<Control>, mut shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file change or the admin API");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _logged = reload(&control, "sighup");
            }
            _ = shutdown.wait() => return,
        }
    }
}

/// A watch on the config file's directory (editors that save by rename replace the
/// file, so the file itself cannot be watched). Set up before the listeners serve, so
/// no edit made after start-up is missed.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl FileWatch {
    pub fn new(path: &Path) -> notify::Result<FileWatch> {
        let file_name = path.file_name().map(|n| n.to_os_string());
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
                let kind = event.kind;
                if ours && (kind.is_modify() || kind.is_create() || kind.is_remove()) {
                    // The receiver is gone only during shutdown.
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(FileWatch {
            _watcher: watcher,
            events,
        })
    }

    /// Reloads once changes settle for `debounce`. Unchanged content is ignored by the
    /// hash comparison in [`Control::apply_config`].
    pub async fn run(mut self, control: Arc<Control>, mut shutdown: Shutdown, debounce: Duration) {
        loop {
            tokio::select! {
                got = self.events.recv() => {
                    if got.is_none() {
                        return;
                    }
                    loop {
                        match tokio::time::timeout(debounce, self.events.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    // A rename-save briefly removes the file; the create event follows.
                    if control.config_path.as_ref().is_some_and(|p| p.exists()) {
                        let _logged = reload(&control, "file_change");
                    }
                }
                _ = shutdown.wait() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            "{extra}\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_cluster_version_is_taken_as_given_and_never_goes_back() {
        let control = Control::new(
            config(""),
            1,
            None,
            Arc::new(crate::audit::AuditLog::in_memory()),
            super::super::operator::OperatorStore::in_memory(),
        );
        let retries = |n: u32| config(&format!("[routing]\nretry_attempts = {n}"));
        assert_eq!(control.apply_config_as(retries(3), 2, Some(5)), (5, true));
        // The same content at a newer version: the new number is in force.
        assert_eq!(control.apply_config_as(retries(3), 2, Some(6)), (6, true));
        // A node-local change keeps the number.
        assert_eq!(control.apply_config_as(retries(4), 3, Some(6)), (6, true));
        assert_eq!(control.table().config.routing.retry_attempts, 4);
        // An older version, late: nothing changes.
        assert_eq!(control.apply_config_as(retries(1), 4, Some(5)), (6, false));
        assert_eq!(control.table().config.routing.retry_attempts, 4);
        assert_eq!(control.table().config_version, 6);
        // Without a version (a node alone), the next number.
        assert_eq!(control.apply_config(retries(2), 5), (7, true));
    }

    #[test]
    fn start_only_keys_keep_their_running_values_and_are_named() {
        let running = config("");
        let mut new = config(
            "[server]\nlisten = \"127.0.0.1:1234\"\n[queue]\npath = \"elsewhere/queue\"\n[log]\nformat = \"json\"\n[routing]\nretry_attempts = 5",
        );
        let kept: Vec<&str> = keep_start_only(&running, &mut new)
            .iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(kept, ["server.listen", "queue.path", "log.format"]);
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.queue.path, running.queue.path);
        assert_eq!(new.log, LogFormat::Text);
        assert_eq!(new.routing.retry_attempts, 5, "the rest is applied");
        assert!(keep_start_only(&running, &mut config("")).is_empty());
    }
}
