//! The control side: owns the published [`RoutingTable`] and is its only writer.
//!
//! Every change — a config reload, an admin command, a health transition or failover
//! decided by [`failover`] — goes through [`Control`], which rebuilds a whole snapshot
//! under one writer lock and swaps it in with one `ArcSwap::store`. Readers (the
//! request path) never lock. What an operator set (admin states, failovers, pause) is
//! also saved through [`operator`] so that it survives a restart.
//!
//! May call: `config`, `routing`, `health`, `telemetry`, `audit`, `alerts`.

pub mod daily;
pub mod failover;
pub mod operator;
pub mod reload;
pub mod shares;
#[cfg(test)]
mod warmup_tests;

use crate::alerts::{Alerter, Severity};
use crate::config::{Config, MasterConfig, Role};
use crate::health::HealthState;
use crate::pool::LocalFault;
use crate::routing::stats::StatsRegistry;
use crate::routing::{AdminState, MasterInput, RoutingTable};
use arc_swap::{ArcSwap, ArcSwapOption};
use operator::{OperatorState, OperatorStore};
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// Per-master state kept across rebuilds and reloads. The failover controller owns
/// `health`, `factor` and `promoted_for`; admin commands own `admin`.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterState {
    pub admin: AdminState,
    pub health: HealthState,
    /// Slow-start share while `recovering`.
    pub factor: f64,
    /// A standby promoted in the place of this failed master (its id). While set, the
    /// master is held out of rotation, recovered or not, until failback.
    pub promoted_for: Option<Arc<str>>,
}

impl Default for MasterState {
    fn default() -> Self {
        Self {
            admin: AdminState::Enabled,
            health: HealthState::Healthy,
            factor: 1.0,
            promoted_for: None,
        }
    }
}

/// A master whose live requests failed `passive_failures` times in a row, or (with
/// `banned`) whose answer met the ban rules (SPEC section 10).
#[derive(Debug)]
pub struct Ejection {
    pub master: Arc<str>,
    pub reason: String,
    pub banned: bool,
}

/// Everything the single writer owns.
#[derive(Debug)]
struct Writer {
    config: Arc<Config>,
    config_version: u64,
    config_hash: u64,
    table_version: u64,
    masters: HashMap<Arc<str>, MasterState>,
}

/// The routing table's publisher and the admin state behind it.
#[derive(Debug)]
pub struct Control {
    table: ArcSwap<RoutingTable>,
    writer: Mutex<Writer>,
    stats: StatsRegistry,
    /// The file reloads read; `None` for an embedded config (demo, tests).
    pub config_path: Option<PathBuf>,
    last_reload_error: ArcSwapOption<String>,
    /// Cluster mode: the latest shared config pushed through etcd, applied or not
    /// (see [`reload`]); `None` until one is seen.
    pub pushed: ArcSwapOption<reload::PushedConfig>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub audit: Arc<crate::audit::AuditLog>,
    ejections: mpsc::UnboundedSender<Ejection>,
    ejected: Mutex<Option<mpsc::UnboundedReceiver<Ejection>>>,
    /// Where [`Control::local_fault`] raises its alert; set by the failover controller.
    alerts: OnceLock<Arc<Alerter>>,
    /// Operator state saved across restarts. Locked after `writer` when both are held.
    operator: Mutex<OperatorStore>,
}

/// An admin command named a master the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("no master with id `{0}`")]
pub struct UnknownMaster(pub String);

/// Why an admin state change failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Unknown(#[from] UnknownMaster),
    /// The change is in force but could not be saved: it would not survive a restart.
    #[error(
        "the change is in force but could not be saved, so it will not survive a restart: {0}"
    )]
    NotSaved(#[source] std::io::Error),
}

impl Control {
    /// A control publishing `config`, with the operator state saved in `operator`
    /// (masters the config does not have are dropped from it with a warning) in force
    /// from the first table on.
    pub fn new(
        config: Config,
        config_hash: u64,
        config_path: Option<PathBuf>,
        audit: Arc<crate::audit::AuditLog>,
        mut operator: OperatorStore,
    ) -> Control {
        let stats = StatsRegistry::default();
        let stats_of = |id: &Arc<str>| stats.get_or_create(id);
        let mut saved = operator.state().clone();
        saved.retain_known(
            |id| config.master(id).is_some(),
            |id| config.master(id).is_some_and(|m| m.role == Role::Standby),
        );
        let masters = saved
            .masters
            .iter()
            .map(|(id, m)| {
                if m.suspended.is_some() {
                    // No message reaches it before the controller takes over.
                    stats_of(&id.as_str().into()).suspend();
                }
                let state = MasterState {
                    admin: m.admin,
                    health: if m.suspended.is_some() {
                        HealthState::Suspended
                    } else {
                        HealthState::Healthy
                    },
                    promoted_for: m.held.as_ref().map(|h| Arc::from(h.standby.as_str())),
                    ..MasterState::default()
                };
                (Arc::from(id.as_str()), state)
            })
            .collect();
        operator.reset(saved);
        crate::telemetry::access::set_enabled(config.access_log);
        let mut writer = Writer {
            config: Arc::new(config),
            config_version: 1,
            config_hash,
            table_version: 0,
            masters,
        };
        let table = build(&mut writer, &stats);
        let (ejections, ejected) = mpsc::unbounded_channel();
        Control {
            table: ArcSwap::from_pointee(table),
            writer: Mutex::new(writer),
            stats,
            config_path,
            last_reload_error: ArcSwapOption::empty(),
            pushed: ArcSwapOption::empty(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            audit,
            ejections,
            ejected: Mutex::new(Some(ejected)),
            alerts: OnceLock::new(),
            operator: Mutex::new(operator),
        }
    }

    /// The operator state as last saved (read by the failover controller at start).
    pub fn operator_state(&self) -> OperatorState {
        self.operator().state().clone()
    }

    /// Changes the saved operator state and writes it (see [`operator`] for what
    /// `Ok` promises). Blocks on two fsyncs when something changed.
    pub fn save_operator(&self, f: impl FnOnce(&mut OperatorState)) -> std::io::Result<()> {
        self.operator().update(f)
    }

    fn operator(&self) -> MutexGuard<'_, OperatorStore> {
        // A panic mid-update leaves the last saved state, which is still valid.
        self.operator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the failover controller that a master's live requests keep failing. Cheap
    /// and never blocks: called from the request path, once per threshold crossing.
    pub fn eject(&self, master: Arc<str>, reason: String) {
        let ejection = Ejection {
            master,
            reason,
            banned: false,
        };
        let _controller_gone_at_shutdown = self.ejections.send(ejection);
    }

    /// A master answered what the ban rules say means a blocked account: from this
    /// call on, no exchange starts with it ([`MasterStats::suspend`], checked before
    /// every send, even through a table published before the controller acts), and the
    /// failover controller suspends it. Cheap and never blocks; only the first call per
    /// suspension reaches the controller.
    ///
    /// [`MasterStats::suspend`]: crate::routing::stats::MasterStats::suspend
    pub fn ban(&self, master: &crate::routing::MasterEntry, reason: String) {
        if master.stats.suspend() {
            tracing::error!(master = master.id(), reason = %reason, "ban answer: suspending the master");
            let ejection = Ejection {
                master: master.config.id.clone(),
                reason,
                banned: true,
            };
            let _controller_gone_at_shutdown = self.ejections.send(ejection);
        }
    }

    /// The live counters of master `id` (kept across tables and reloads).
    pub fn master_stats(&self, id: &Arc<str>) -> Arc<crate::routing::stats::MasterStats> {
        self.stats.get_or_create(id)
    }

    /// Gives [`Control::local_fault`] the alerter; the first call wins.
    pub fn set_alerter(&self, alerts: Arc<Alerter>) {
        let _first_one_kept = self.alerts.set(alerts);
    }

    /// This machine ran out of `fault` during `during` `master` ("a health probe of",
    /// "an exchange with"). SPEC section 8: the master's health is left alone; a critical
    /// `local_resource_exhausted` alert is raised (the alerter folds repeats). Cheap and
    /// never blocks: called from the request path.
    pub fn local_fault(&self, fault: LocalFault, master: &str, during: &str, detail: &str) {
        let message = format!(
            "this proxy is out of {} ({detail}) during {during} {master}; \
             masters are not blamed for it",
            fault.what()
        );
        match self.alerts.get() {
            Some(alerts) => {
                alerts.raise(
                    Severity::Critical,
                    "local_resource_exhausted",
                    None,
                    message,
                );
            }
            None => tracing::error!(kind = "local_resource_exhausted", "{message}"),
        }
    }

    /// The receiving end of [`Control::eject`], for the one failover controller.
    pub fn take_ejections(&self) -> Option<mpsc::UnboundedReceiver<Ejection>> {
        self.ejected.lock().ok()?.take()
    }

    /// Lets the failover controller change the state of masters (by id; a missing
    /// entry is a master in its default state), then publishes one new table. Entries
    /// for ids the running config does not have are dropped.
    /// Nothing is published when nothing changed.
    pub fn update(&self, f: impl FnOnce(&mut HashMap<Arc<str>, MasterState>)) {
        let mut w = self.lock();
        let before = w.masters.clone();
        f(&mut w.masters);
        let config = w.config.clone();
        w.masters.retain(|id, _| config.master(id).is_some());
        let default = MasterState::default();
        let changed = config.masters.iter().any(|m| {
            before.get(&m.id).unwrap_or(&default) != w.masters.get(&m.id).unwrap_or(&default)
        });
        if changed {
            self.rebuild(&mut w);
        }
    }

    /// A copy of every master's state, in config order.
    pub fn states(&self) -> Vec<(Arc<MasterConfig>, MasterState)> {
        let w = self.lock();
        w.config
            .masters
            .iter()
            .map(|m| (m.clone(), w.masters.get(&m.id).cloned().unwrap_or_default()))
            .collect()
    }

    /// The current snapshot. Lock-free.
    #[inline]
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub fn last_reload_error(&self) -> Option<Arc<String>> {
        self.last_reload_error.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while rebuilding leaves the old table published, which is still valid.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rebuild(&self, writer: &mut Writer) {
        let table = build(writer, &self.stats);
        let old = self.table.load();
        // Warm-up (SPEC section 10): a master added by this config, or a standby
        // promoted by this table, starts its pace at 10%. Masters there at start do not.
        for m in &table.masters {
            let before = old.masters.iter().find(|o| o.config.id == m.config.id);
            // (The first table is built by `new`, never here.)
            let added = before.is_none();
            let promoted = m.promoted && !before.is_some_and(|o| o.promoted);
            if added || promoted {
                m.stats.start_warmup();
            }
        }
        self.table.store(Arc::new(table));
    }

    /// The live counters of master `id` (created if it has none yet).
    pub fn stats_of(&self, id: &Arc<str>) -> Arc<crate::routing::stats::MasterStats> {
        self.stats.get_or_create(id)
    }

    /// Sets a master's admin state, publishes a new table and saves the state (a save
    /// is tried again even when the state was already in force, so that a repeated
    /// command after a failed save reports the truth).
    pub fn set_admin(&self, id: &str, admin: AdminState) -> Result<(), AdminError> {
        let mut w = self.lock();
        if w.config.master(id).is_none() {
            return Err(UnknownMaster(id.to_string()).into());
        }
        let entry = w.masters.entry(Arc::from(id)).or_default();
        if entry.admin != admin {
            entry.admin = admin;
            tracing::info!(master = id, state = admin.as_str(), "admin state changed");
            self.rebuild(&mut w);
        }
        // Saved under the writer lock: two commands at once land in the file in the
        // order they took effect.
        let saved = self.save_operator(|s| s.master(id).admin = admin);
        drop(w);
        saved.map_err(AdminError::NotSaved)
    }

    /// Applies each master's budget again (cluster mode: the split across live nodes
    /// changed).
    pub fn reconfigure_budgets(&self) {
        for m in &self.table().masters {
            m.stats.configure(&m.config);
        }
    }

    /// Swaps in a validated config unless its content hash is the one already running.
    /// Masters whose id is unchanged keep their state and counters. Returns the config
    /// version now in force and whether this call changed it (decided under the writer
    /// lock, so of two reloads of one change at once, one reports it).
    ///
    /// Keys read only at start (see [`reload::keep_start_only`]) keep their running
    /// values; a change of one is logged and shown as `/health`'s `last_reload_error`
    /// until the file no longer asks for it.
    pub fn apply_config(&self, config: Config, hash: u64) -> (u64, bool) {
        self.apply_config_as(config, hash, None)
    }

    /// [`Control::apply_config`] at a given config version (cluster mode: the version
    /// of the shared config, the same on every node), or the next one with `None`. A
    /// version below the one in force changes nothing (a slower apply of an older push
    /// never undoes a newer one); the same version with other content (a node-local
    /// edit) is applied and keeps its number.
    pub fn apply_config_as(
        &self,
        mut config: Config,
        hash: u64,
        version: Option<u64>,
    ) -> (u64, bool) {
        let mut w = self.lock();
        if version.is_some_and(|v| v < w.config_version) {
            return (w.config_version, false);
        }
        let kept = reload::keep_start_only(&w.config, &mut config);
        for note in &kept {
            tracing::warn!(key = note.key, "{note}");
        }
        let note = (!kept.is_empty()).then(|| {
            let notes: Vec<String> = kept.iter().map(ToString::to_string).collect();
            Arc::new(notes.join("; "))
        });
        self.last_reload_error.store(note);
        if hash == w.config_hash && version.is_none_or(|v| v == w.config_version) {
            return (w.config_version, false);
        }
        crate::telemetry::access::set_enabled(config.access_log);
        w.config = Arc::new(config);
        w.config_hash = hash;
        w.config_version = version.unwrap_or(w.config_version + 1);
        let ids: Vec<Arc<str>> = w.config.masters.iter().map(|m| m.id.clone()).collect();
        w.masters.retain(|id, _| ids.contains(id));
        self.rebuild(&mut w);
        // A master that left forgets its saved state, as it forgets its running one.
        let forgot =
            self.save_operator(|s| s.masters.retain(|id, _| ids.iter().any(|k| **k == **id)));
        if let Err(e) = forgot {
            tracing::error!(error = %e, "cannot save the operator state after the reload");
        }
        (w.config_version, true)
    }

    pub fn reject_config(&self, error: String) {
        self.last_reload_error.store(Some(Arc::new(error)));
    }
}

fn build(w: &mut Writer, stats: &StatsRegistry) -> RoutingTable {
    w.table_version += 1;
    // Standby id -> the failed master it stands in for.
    let stands_in_for: HashMap<&str, &str> = w
        .masters
        .iter()
        .filter_map(|(failed, s)| Some((s.promoted_for.as_deref()?, failed.as_ref())))
        .collect();
    let inputs = w
        .config
        .masters
        .iter()
        .map(|m| {
            let c = w.masters.get(&m.id).cloned().unwrap_or_default();
            // A promoted standby takes the failed master's weight and priority.
            let promoted_for = stands_in_for
                .get(m.id.as_ref())
                .and_then(|failed| w.config.master(failed));
            let config = match promoted_for {
                Some(failed) => Arc::new(MasterConfig {
                    weight: failed.weight,
                    priority: failed.priority,
                    ..(**m).clone()
                }),
                None => m.clone(),
            };
            MasterInput {
                config,
                stats: stats.get_or_create(&m.id),
                health: c.health,
                admin: c.admin,
                promoted: promoted_for.is_some(),
                stands_for: promoted_for.map(|failed| failed.id.clone()),
                held: c.promoted_for.is_some(),
                factor: c.factor,
            }
        })
        .collect();
    RoutingTable::build(
        w.table_version,
        w.config_version,
        w.config.clone(),
        inputs,
        &mut rand::rngs::StdRng::from_entropy(),
    )
}

/// A content hash for reload de-duplication (FNV-1a; not for security).
pub fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
