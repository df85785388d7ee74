//! Suspension after a ban answer and reinstatement (SPEC section 10): what the
//! controller does when a master's machine enters `suspended`, and the
//! `POST /ha/masters/{id}/reinstate` command that takes it out again.

use super::{unknown, Answer, Cause, Controller, EventKind, NewEvent};
use crate::alerts::Severity;
use crate::health::machine::Transition;
use crate::health::HealthState;
use http::StatusCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

impl Controller {
    /// The machine of `id` entered `suspended`: audited, alerted, its standby promoted
    /// at once (no `recovery_wait`), unless automatic failover is off or paused. The
    /// step that called this saves the suspension when it ends.
    pub(super) fn suspended(&mut self, id: &Arc<str>, t: Transition, now: Instant) {
        let m = id.as_ref();
        if let Some(w) = self.masters.get_mut(id) {
            w.suspended_at = Some(SystemTime::now());
        }
        // Kept in step with the machine: a suspension restored at start has no
        // ban answer behind it in this process.
        if let Some(stats) = self.stats(id) {
            stats.suspend();
        }
        self.control
            .audit
            .record(NewEvent::new(EventKind::Suspended, &t.reason).master(m));
        self.alerts.raise(
            Severity::Critical,
            "master_suspended",
            Some(m),
            format!(
                "{m} is suspended: {}; it stays out of rotation until POST /ha/masters/{m}/reinstate",
                t.reason
            ),
        );
        // Out of rotation, and saved, before anything else is decided.
        self.publish(now);
        self.save();
        // In cluster mode every node takes it out too.
        self.propose(
            crate::cluster::shared::Mutation::Suspend {
                id: m.to_string(),
                reason: t.reason.clone(),
            },
            false,
        );
        if self.config.failover.enabled && !self.paused {
            let _logged = self.fail_over(id, Cause::Ban, now);
        }
        // A standby suspended in the place of a master that is back in good health:
        // that master takes its place back now rather than after `failback_delay`
        // (a manual failover still waits for the operator). One still down gets the
        // next free standby on the next tick.
        let give_back: Vec<Arc<str>> = self
            .active
            .iter()
            .filter(|(failed, a)| {
                a.backup == *id
                    && !a.manual
                    && self
                        .masters
                        .get(*failed)
                        .is_some_and(|w| w.machine.state().routable())
            })
            .map(|(failed, _)| failed.clone())
            .collect();
        for failed in give_back {
            self.fail_back(&failed, now);
        }
    }

    /// `POST /ha/masters/{id}/reinstate`: 404 for an unknown master, 409 for one that
    /// is not suspended. The master comes back through `recovering` (slow start) with
    /// its warm-up started; a standby promoted in its place gives it back by the
    /// failback rules. Saved before the answer (see `on_command`).
    pub(super) fn reinstate(&mut self, id: &str, now: Instant) -> Answer {
        let Some(key) = self.config.master(id).map(|m| m.id.clone()) else {
            return Err(unknown(id));
        };
        let Some(w) = self.masters.get_mut(&key) else {
            return Err(unknown(id));
        };
        let Some(t) = w.machine.reinstate(now) else {
            return Err((
                StatusCode::CONFLICT,
                "not_suspended",
                format!(
                    "{id} is not suspended (it is {})",
                    w.machine.state().as_str()
                ),
            ));
        };
        w.suspended_at = None;
        w.slow_recovery_warned = false;
        if let Some(stats) = self.stats(&key) {
            stats.consecutive_failures.store(0, Relaxed);
            stats.start_warmup();
            stats.reinstate();
        }
        let mut event =
            NewEvent::new(EventKind::Reinstated, "reinstated by the admin API").master(id);
        if let Some(outage) = t.outage {
            event = event.duration(outage);
        }
        self.control.audit.record(event);
        tracing::info!(
            master = id,
            "reinstated: back in rotation through slow start"
        );
        self.publish(now);
        Ok(serde_json::json!({
            "id": id,
            "state": HealthState::Recovering.as_str(),
            "held_for": self.active.get(&key).map(|a| a.backup.as_ref()),
        }))
    }
}
