//! Live reload: SIGHUP, a change of the file on disk, and `POST /admin/reload` all end
//! in [`reload`], which validates the whole file before anything changes.

use super::{content_hash, Control};
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::server::Shutdown;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reads, validates and applies the config file. An invalid file changes nothing: the
/// error is logged, counted and kept for `/health`. Returns the config version.
pub fn reload(control: &Control, trigger: &'static str) -> Result<u64, ConfigErrors> {
    let Some(path) = &control.config_path else {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "this instance runs an embedded config; there is no file to reload",
        )]));
    };
    let result = std::fs::read(path)
        .map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )])
        })
        .and_then(|bytes| {
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| ConfigErrors(vec![ConfigError::new("", "the file is not UTF-8")]))?;
            Config::from_toml(&text).map(|c| (c, content_hash(&bytes)))
        });
    match result {
        Ok((config, hash)) => {
            let version = control.apply_config(config, hash);
            crate::telemetry::config_reload(true);
            tracing::info!(trigger, config_version = version, "config reloaded");
            Ok(version)
        }
        Err(errors) => {
            crate::telemetry::config_reload(false);
            tracing::error!(trigger, errors = %errors, "config rejected; the running config is kept");
            control.reject_config(errors.to_string());
            Err(errors)
        }
    }
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

/// Watches the config file's directory (editors that save by rename replace the file)
/// and reloads once changes settle for `debounce`. Unchanged content is ignored by the
/// hash comparison in [`Control::apply_config`].
pub async fn watch_file(control: Arc<Control>, mut shutdown: Shutdown, debounce: Duration) {
    let Some(path) = control.config_path.clone() else {
        return;
    };
    let file_name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
            if ours && (event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove())
            {
                // The receiver is gone only during shutdown.
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot watch the config directory");
        return;
    }
    loop {
        tokio::select! {
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                // Debounce: wait until no event came for `debounce`.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if control.config_path.as_ref().is_some_and(|p| p.exists()) {
                    let _logged = reload(&control, "file_change");
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}
