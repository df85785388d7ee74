//! What the controller keeps across a restart and reports of drains: the saved pause,
//! failovers and suspensions taken back at start and written on every change (through
//! [`Control::save_operator`](crate::control::Control::save_operator)), and the
//! `drained` audit event.

use super::Controller;
use super::{Active, EventKind, NewEvent, Watched};
use crate::control::operator::{Held, Suspension};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Controller {
    /// Takes back the saved pause and failovers (see [`crate::control::operator`]): a master
    /// failed over before the restart stays out, its standby promoted, until failback
    /// (automatic ones by `failover.failback`, manual ones by the admin API).
    pub(super) fn restore(&mut self, now: Instant) {
        let saved = self.control.operator_state();
        self.paused = saved.failover_paused;
        for (id, m) in &saved.masters {
            if let Some(s) = &m.suspended {
                self.restore_suspension(id, s, now);
            }
            let Some(held) = &m.held else { continue };
            tracing::info!(master = %id, standby = %held.standby, manual = held.manual, "failover kept from before the restart");
            self.active.insert(
                Arc::from(id.as_str()),
                Active {
                    backup: Arc::from(held.standby.as_str()),
                    since: now,
                    // A time from a hand-edited file is taken up to now, no later.
                    since_at: SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_millis(held.since_unix_ms))
                        .map_or(SystemTime::now(), |t| t.min(SystemTime::now())),
                    manual: held.manual,
                },
            );
        }
        if self.paused {
            tracing::info!("automatic failover stays paused, as before the restart");
        }
    }

    /// A master suspended before the restart stays suspended: its machine starts in
    /// `suspended` (no alert or audit event again: nothing new happened).
    fn restore_suspension(&mut self, id: &str, s: &Suspension, now: Instant) {
        tracing::warn!(master = %id, reason = %s.reason, "suspension kept from before the restart");
        let config = self.control.table().config.clone();
        let Some(m) = config.master(id) else { return };
        let w = self
            .masters
            .entry(m.id.clone())
            .or_insert_with(|| Watched::new(m, now));
        w.machine.suspend(s.reason.clone(), now);
        w.suspended_at = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(s.since_unix_ms))
            .map(|t| t.min(SystemTime::now()));
    }

    /// [`Controller::persist`] at the end of a step that was no command: the step's
    /// decisions stand either way; a failure is logged once, and tried again at every
    /// step until a save works.
    pub(super) fn save(&mut self) {
        match self.persist() {
            Ok(()) if self.save_failing => {
                self.save_failing = false;
                tracing::info!("the operator state is saved again");
            }
            Ok(()) => {}
            Err(e) if !self.save_failing => {
                self.save_failing = true;
                tracing::error!(error = %e, "cannot save the failovers in force; they will not survive a restart until a save works");
            }
            Err(_) => {}
        }
    }

    /// Saves the pause and the failovers in force, when they changed: at the end of
    /// each step, once its table, view and audit events are out (two fsyncs; failovers
    /// are rare).
    pub(super) fn persist(&self) -> std::io::Result<()> {
        let (paused, active, masters) = (self.paused, &self.active, &self.masters);
        self.control.save_operator(|s| {
            s.failover_paused = paused;
            for (id, m) in s.masters.iter_mut() {
                if !active.contains_key(id.as_str()) {
                    m.held = None;
                }
                let suspended = masters
                    .get(id.as_str())
                    .is_some_and(|w| w.machine.suspended_reason().is_some());
                if !suspended {
                    m.suspended = None;
                }
            }
            for (id, w) in masters {
                if let Some(reason) = w.machine.suspended_reason() {
                    let since = w
                        .suspended_at
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
                    s.master(id).suspended = Some(Suspension {
                        reason: reason.to_string(),
                        since_unix_ms: since.map_or(0, |d| d.as_millis() as u64),
                    });
                }
            }
            for (failed, a) in active {
                let since = a.since_at.duration_since(SystemTime::UNIX_EPOCH);
                s.master(failed).held = Some(Held {
                    standby: a.backup.to_string(),
                    manual: a.manual,
                    since_unix_ms: since.map_or(0, |d| d.as_millis() as u64),
                });
            }
        })
    }

    /// Records `drained` once for each draining master whose in-flight and queued
    /// deliveries have reached 0.
    pub(super) fn watch_drains(&mut self) {
        let table = self.control.table();
        let drained: HashSet<Arc<str>> = table
            .masters
            .iter()
            .filter(|m| m.drained())
            .map(|m| m.config.id.clone())
            .collect();
        for id in drained.difference(&self.drained) {
            tracing::info!(master = %id, "drained: no exchange or delivery under way");
            self.control.audit.record(
                NewEvent::new(
                    EventKind::Drained,
                    "draining finished: no exchange or queued delivery under way",
                )
                .master(id),
            );
        }
        self.drained = drained;
    }
}
