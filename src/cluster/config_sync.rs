//! One config for the whole cluster (SPEC section 11): `POST /admin/config` stores a
//! shared config in etcd, and every node follows it.
//!
//! **Where it lives.** One key, `{prefix}/config`, holds the latest push as JSON
//! ([`PushedConfig`]: `version`, `toml`, `pushed_by`, `pushed_at_ms`). Version 1 is the
//! bootstrap — no key yet, every node running its own file — so the first push is
//! version 2 and each push adds one. In cluster mode `/health`'s `config_version` is
//! that number on every node.
//!
//! **Pushing** ([`push`]): the node that takes the push checks it against its own
//! file ([`Config::from_parts`], every error with its key path), reads the key, refuses
//! an `If-Match` that is not the version in force ([`PushError::Conflict`]), then
//! writes version + 1 as a compare-and-swap on the key's mod revision (or on its
//! absence): of two pushes based on one version, exactly one is stored. It applies the
//! push itself before it answers.
//!
//! **Following** ([`run`]): each node reads the key, then watches it from the next
//! revision, so a push is applied as soon as its commit reaches the node (one round
//! trip, no poll). A broken watch is read and started again; the key is also read again
//! every [`RECHECK`] in case a watch went silent. A version newer than the one the node
//! knows goes into [`Control::pushed`] and through the ordinary reload
//! ([`reload::reload`]): merged with the node's own file, validated whole, swapped in
//! atomically, audited `config_reloaded` with its version, timed from the push in
//! `switchyard_cluster_apply_seconds`. A node that cannot apply it
//! (a `tls_ca` file or a `${NAME}` missing there) keeps its running config, shows the
//! error in `/health`'s `last_reload_error` and audits `config_rejected`; its next local
//! reload (SIGHUP, a file change, `POST /admin/reload`) tries that version again. An
//! older or equal version is never applied over a newer one. A node started later reads
//! the key before it serves ([`first`]).
//!
//! **etcd unreachable.** A node keeps the config it last applied and tries again; a
//! push to an isolated node is refused (503 `cluster_isolated`). A deleted key changes
//! nothing: nodes keep what they run, and the next push continues from their version.

use super::state::StateError;
use super::Cluster;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::control::reload::{self, PushedConfig};
use crate::control::Control;
use crate::server::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// How often a node reads the key again besides watching it.
pub const RECHECK: Duration = Duration::from_secs(10);
/// How long a node waits before it reads or watches again after an etcd error.
const RETRY: Duration = Duration::from_millis(500);

/// Why a push was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `If-Match` is not the version in force: the cluster moved past it (or it never
    /// had it).
    #[error("the config is at version {current}, not {asked}: read it again, then push")]
    Conflict { current: u64, asked: u64 },
    /// The push is not a valid shared config for this node.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// etcd could not be reached: nothing was stored, or (when it broke during the
    /// write) it may have been; `/health` on any node tells.
    #[error("cannot reach etcd: {0}")]
    Isolated(String),
}

/// The key of the shared config.
pub fn key(prefix: &str) -> String {
    format!("{prefix}/config")
}

/// Stores `text` as the next shared config if `if_match` is the version in force, and
/// applies it on this node. Returns the new version.
pub async fn push(
    cluster: &Cluster,
    control: &Control,
    if_match: u64,
    text: String,
) -> Result<u64, PushError> {
    if cluster.is_isolated() {
        return Err(PushError::Isolated(
            "this node cannot reach etcd now".into(),
        ));
    }
    validate(control, &text).map_err(PushError::Invalid)?;
    let state = cluster.state();
    let key = key(cluster.prefix());
    let unreachable = |e: StateError| PushError::Isolated(e.to_string());
    let stored = state.get(&key).await.map_err(unreachable)?;
    // The version in force: the stored one, or this node's when it runs a later one
    // (the key was deleted).
    let running = control.table().config_version;
    let current = stored
        .as_ref()
        .map_or(1, |v| version_of(&v.value))
        .max(running);
    if if_match != current {
        return Err(PushError::Conflict {
            current,
            asked: if_match,
        });
    }
    let shared = PushedConfig {
        version: current + 1,
        toml: text,
        pushed_by: cluster.node_id().to_string(),
        pushed_at_ms: crate::util::unix_ms(),
    };
    let value = serde_json::to_vec(&shared).map_err(|e| PushError::Isolated(e.to_string()))?;
    let cas = state
        .compare_and_swap(&key, stored.map(|v| v.mod_revision), value)
        .await
        .map_err(unreachable)?;
    if !cas.won {
        let current = cas.current.map_or(1, |v| version_of(&v.value));
        return Err(PushError::Conflict {
            current,
            asked: if_match,
        });
    }
    tracing::info!(config_version = shared.version, "shared config pushed");
    // Applied here before the answer, even when the watch saw it first (then one of
    // the two applies it and the other finds it in force).
    let at = shared.pushed_at_ms;
    if record(control, shared) {
        apply(control, at);
    } else {
        // The watch took it first (and times it): this waits for it to be in force.
        let _reported = reload::reload(control, reload::CLUSTER);
    }
    Ok(current + 1)
}

/// Checks a push against this node's own file, as every node will.
fn validate(control: &Control, text: &str) -> Result<(), ConfigErrors> {
    let path = control.config_path.as_ref().ok_or_else(|| {
        ConfigErrors(vec![ConfigError::new(
            "",
            "this instance runs an embedded config; a pushed config needs a local file",
        )])
    })?;
    let local = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read the local file {}: {e}", path.display()),
        )])
    })?;
    Config::from_parts(&local, text).map(drop)
}

/// The version of a stored value; 1 (the bootstrap) for one that cannot be read, so a
/// push replaces it.
fn version_of(value: &[u8]) -> u64 {
    serde_json::from_slice::<PushedConfig>(value).map_or(1, |s| s.version)
}

/// A stored shared config seen: when it is newer than the one this node knows, it is
/// recorded and applied (through the reload, which reports a failure itself).
fn seen(control: &Control, shared: PushedConfig) {
    let at = shared.pushed_at_ms;
    if record(control, shared) {
        apply(control, at);
    }
}

/// Applies the pushed config this node follows; an apply is timed from `pushed_at_ms`
/// (the pushing node's clock) in `switchyard_cluster_apply_seconds`.
fn apply(control: &Control, pushed_at_ms: u64) {
    if reload::reload(control, reload::CLUSTER).is_ok() {
        let lag = crate::util::unix_ms().saturating_sub(pushed_at_ms);
        metrics::histogram!("switchyard_cluster_apply_seconds").record(lag as f64 / 1000.0);
    }
}

/// Makes `shared` the one this node follows unless it knows a newer or equal one;
/// returns whether it did.
fn record(control: &Control, shared: PushedConfig) -> bool {
    let version = shared.version;
    let new = Arc::new(shared);
    let before = control.pushed.rcu(|known| match known {
        Some(k) if k.version >= version => Some(k.clone()),
        _ => Some(new.clone()),
    });
    before.as_ref().is_none_or(|k| k.version < version)
}

/// A value read from the key.
fn read(control: &Control, value: &[u8]) {
    match serde_json::from_slice::<PushedConfig>(value) {
        Ok(shared) => seen(control, shared),
        Err(e) => tracing::error!(error = %e, "the shared config in etcd cannot be read; ignored"),
    }
}

/// Reads the key once, before the node serves, so that a node started after a push
/// runs it from its first request. Bounded by the etcd call timeout; etcd down only
/// leaves the node on its own file until [`run`] reaches it.
pub async fn first(cluster: &Cluster, control: &Control) {
    match cluster.state().get(&key(cluster.prefix())).await {
        Ok(Some(v)) => read(control, &v.value),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the shared config at start; running the local file until etcd answers")
        }
    }
}

/// Follows the key until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, control: Arc<Control>, mut shutdown: Shutdown) {
    let key = key(cluster.prefix());
    let state = cluster.state();
    loop {
        let watch = async {
            let (kvs, revision) = state.list(&key).await?;
            for (k, v) in kvs {
                if k == key {
                    read(&control, &v.value);
                }
            }
            state.watch(&key, revision + 1).await
        };
        let mut watch = match watch.await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow the shared config; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = shutdown.wait() => return,
                }
            }
        };
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                changes = watch.next() => match changes {
                    Ok(changes) => {
                        for change in changes.into_iter().filter(|c| c.key == key) {
                            match change.value {
                                Some(v) => read(&control, &v.value),
                                None => tracing::warn!("the shared config was deleted from etcd; the running config is kept"),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "the shared config watch ended; reading again");
                        break;
                    }
                },
                _ = &mut recheck => break,
                _ = shutdown.wait() => return,
            }
        }
    }
}
