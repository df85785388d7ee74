//! The controller in cluster mode (SPEC section 11): what it decides, what it only
//! proposes, and how it applies the shared document every node follows
//! ([`crate::cluster::shared`]).
//!
//! - Health stays each node's own: probes and live failures move this node's machines,
//!   and a failing master leaves this node's rotation at once, as on a single node.
//! - Each node reports the masters it finds failed (its cluster record). Failover,
//!   failback and the breaker are the leader's alone: it fails a master over when a
//!   majority of live nodes report it failed, gives the place back when its own checks
//!   see the master healthy for `failback_delay` and no majority reports it, and opens
//!   the breaker. Each decision is a fenced write of the shared document and takes
//!   effect, on every node the leader included, when that write comes back through the
//!   watch. One failover per master at a time: the document holds at most one standby
//!   per place, and a proposal is not repeated while it is under way.
//! - A ban answer suspends the master on the node that met it at once, and that node
//!   writes the suspension into the document for the others.
//! - Admin commands are planned here (checked against this node's view) and written
//!   by the admin API; they too take effect when they come back.

use super::{Cause, Command, Controller, EventKind, NewEvent};
use crate::alerts::Severity;
use crate::cluster::shared::{Mutation, Shared, SharedDoc};
use crate::config::Role;
use crate::control::operator::MasterOperator;
use crate::health::HealthState;
use http::StatusCode;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A proposal not seen back within this is made again if still due.
const PROPOSAL_PATIENCE: Duration = Duration::from_secs(2);

pub(super) struct Link {
    pub shared: Arc<Shared>,
    /// The document applied last (at first: this node's saved state).
    applied: SharedDoc,
    /// Proposals under way, by what they change.
    pending: HashMap<String, Instant>,
    /// The masters last reported failed.
    reported: Vec<String>,
    /// Failed-over masters no majority reports failed any more, since when.
    up_since: HashMap<Arc<str>, Instant>,
}

impl Link {
    pub fn new(shared: Arc<Shared>, saved: crate::control::operator::OperatorState) -> Link {
        Link {
            shared,
            applied: SharedDoc {
                operator: saved,
                ..SharedDoc::default()
            },
            pending: HashMap::new(),
            reported: Vec::new(),
            up_since: HashMap::new(),
        }
    }
}

impl Controller {
    /// Whether this node may decide for the cluster now: it leads and reaches etcd.
    pub(super) fn leads(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.shared.cluster().is_leader())
    }

    /// Writes `change` to the shared document in the background: fenced by this
    /// node's leadership when `decision`. Not repeated while one is under way.
    pub(super) fn propose(&mut self, change: Mutation, decision: bool) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let key = serde_json::to_string(&change).unwrap_or_default();
        let now = Instant::now();
        if link
            .pending
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < PROPOSAL_PATIENCE)
        {
            return;
        }
        let fence = if decision {
            match link.shared.cluster().leadership() {
                Some(l) => Some(l),
                None => return,
            }
        } else {
            None
        };
        link.pending.insert(key, now);
        let shared = link.shared.clone();
        tokio::spawn(async move {
            match shared.update(fence, &change).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, ?change, "a cluster change was not written"),
            }
        });
    }

    /// Each tick in cluster mode: report this node's failed masters, and, on the
    /// leader, fail over the masters a majority reports.
    pub(super) fn cluster_tick(&mut self, now: Instant) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut down: Vec<String> = self
            .masters
            .iter()
            .filter(|(_, w)| w.machine.state() == HealthState::Failed)
            .map(|(id, _)| id.to_string())
            .collect();
        down.sort_unstable();
        if down != link.reported {
            link.shared.cluster().report_down(down.clone());
            link.reported = down;
        }
        let cluster = link.shared.cluster().clone();
        if !self.leads() || !self.config.failover.enabled || self.paused {
            return;
        }
        let due: Vec<Arc<str>> = self
            .config
            .masters
            .iter()
            .filter(|m| m.role != Role::Standby && !self.active.contains_key(&m.id))
            .filter(|m| cluster.majority_down(&m.id))
            .map(|m| m.id.clone())
            .collect();
        for id in due {
            let _logged = self.fail_over(&id, Cause::Health, now);
        }
        self.cluster_failback(&cluster, now);
    }

    /// The leader gives a master its place back (`failback = "auto"`) once no majority
    /// has reported it failed for `failback_delay`: the cluster's view, as for the
    /// failover, not the leader's own checks alone. A standby that a majority reports
    /// failed gives the place up at once.
    fn cluster_failback(&mut self, cluster: &crate::cluster::Cluster, now: Instant) {
        let auto = self.config.failover.failback == crate::config::Failback::Auto;
        let delay = self.config.failover.failback_delay;
        let held: Vec<(Arc<str>, Arc<str>, bool)> = self
            .active
            .iter()
            .map(|(id, a)| (id.clone(), a.backup.clone(), a.manual))
            .collect();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.up_since
            .retain(|id, _| held.iter().any(|(h, _, _)| h == id));
        let mut due = Vec::new();
        for (id, backup, manual) in held {
            // A standby that a majority reports failed leaves the place: the next
            // tick puts another standby there, if one is free.
            if cluster.majority_down(&backup) {
                due.push(id);
                continue;
            }
            let suspended = self
                .masters
                .get(&id)
                .is_some_and(|w| w.machine.state() == HealthState::Suspended);
            if manual || cluster.majority_down(&id) || suspended {
                link.up_since.remove(&id);
                continue;
            }
            let since = *link.up_since.entry(id.clone()).or_insert(now);
            if auto && now.duration_since(since) >= delay {
                due.push(id);
            }
        }
        for id in due {
            self.fail_back(&id, now);
        }
    }

    /// A leader's automatic failover, proposed rather than made (see the module doc).
    /// `Err` says why there is nothing to propose.
    pub(super) fn may_decide(&self, failed: &str, cause: Cause) -> Result<(), String> {
        if !self.leads() {
            return Err("only the cluster's leader fails masters over".into());
        }
        if cause == Cause::Health
            && !self
                .link
                .as_ref()
                .is_some_and(|l| l.shared.cluster().majority_down(failed))
        {
            return Err(format!(
                "{failed} is not reported failed by a majority of nodes"
            ));
        }
        Ok(())
    }

    /// `POST /ha/...` in cluster mode: checks the command against this node's view and
    /// returns the change to write (as JSON), or the error to answer.
    pub(super) fn plan(&mut self, command: Command) -> super::Answer {
        let change = match command {
            Command::Pause => Mutation::Pause,
            Command::Resume => Mutation::Resume,
            Command::Failover(id) => {
                let Some(m) = self.config.master(&id).cloned() else {
                    return Err(super::unknown(&id));
                };
                let refuse = |why: String| (StatusCode::CONFLICT, "failover_refused", why);
                if m.role == Role::Standby {
                    return Err(refuse(format!(
                        "{id} is a standby; only primaries and secondaries fail over"
                    )));
                }
                if let Some(a) = self.active.get(&m.id) {
                    return Err(refuse(format!(
                        "{id} is already failed over to {}",
                        a.backup
                    )));
                }
                let Some(backup) = self.best_standby(&m) else {
                    return Err(refuse(format!(
                        "no standby is available for {id}; the remaining masters take its traffic"
                    )));
                };
                Mutation::Hold {
                    failed: id,
                    backup: backup.to_string(),
                    manual: true,
                }
            }
            Command::Failback(id) => Mutation::Release {
                failed: self.failback_target(&id)?.to_string(),
            },
            Command::Reinstate(id) => {
                if self.config.master(&id).is_none() {
                    return Err(super::unknown(&id));
                }
                Mutation::Reinstate { id }
            }
            Command::Plan(_) | Command::Apply(..) => {
                return Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "not an admin command".into(),
                ))
            }
        };
        serde_json::to_value(change)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
    }

    /// Applies what changed between the document applied before and `doc`.
    pub(super) fn apply_shared(&mut self, doc: SharedDoc, now: Instant) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let me = link.shared.cluster().node_id().to_string();
        let prev = std::mem::replace(&mut link.applied, doc.clone());
        link.pending.clear();
        if doc.at_ms > 0 {
            let lag = crate::util::unix_ms().saturating_sub(doc.at_ms);
            metrics::histogram!("switchyard_cluster_apply_seconds").record(lag as f64 / 1000.0);
        }
        let notify = doc.by == me;
        let origin = if doc.decision {
            format!("decided by {}, term {}", doc.by, doc.term)
        } else {
            format!("from {}", doc.by)
        };
        let ids: BTreeSet<String> = prev
            .operator
            .masters
            .keys()
            .chain(doc.operator.masters.keys())
            .cloned()
            .collect();
        let default = MasterOperator::default();
        for id in &ids {
            let p = prev.operator.masters.get(id).unwrap_or(&default);
            let n = doc.operator.masters.get(id).unwrap_or(&default);
            let Some(key) = self.config.master(id).map(|m| m.id.clone()) else {
                continue;
            };
            if p.admin != n.admin {
                if let Err(e) = self.control.set_admin(id, n.admin) {
                    tracing::error!(error = %e, master = %id, "cannot apply the cluster's admin state");
                }
            }
            match (&p.suspended, &n.suspended) {
                (None, Some(s)) => self.suspend_from_cluster(&key, &s.reason, now),
                (Some(_), None) => {
                    let suspended = self
                        .masters
                        .get(&key)
                        .is_some_and(|w| w.machine.state() == HealthState::Suspended);
                    if suspended {
                        let _answer = self.reinstate(id, now);
                    }
                }
                _ => {}
            }
            if p.held != n.held {
                let current = self.active.get(&key).map(|a| a.backup.clone());
                match &n.held {
                    Some(h) if current.as_deref() != Some(h.standby.as_str()) => {
                        self.active.remove(&key);
                        let cause = if h.manual {
                            Cause::Manual
                        } else if n.suspended.is_some() {
                            Cause::Ban
                        } else {
                            Cause::Health
                        };
                        self.promote(
                            &key,
                            Arc::from(h.standby.as_str()),
                            cause,
                            now,
                            notify,
                            &origin,
                        );
                    }
                    Some(_) => {}
                    None => {
                        if current.is_some() {
                            self.demote(&key, now, notify, &origin);
                        }
                    }
                }
            }
        }
        if doc.operator.failover_paused != self.paused {
            self.paused = doc.operator.failover_paused;
            let (kind, what) = if self.paused {
                (EventKind::Paused, "paused")
            } else {
                (EventKind::Resumed, "resumed")
            };
            self.control
                .audit
                .record(NewEvent::new(kind, format!("{what} ({origin})")));
        }
        if doc.breaker_open != self.breaker_open {
            self.breaker_open = doc.breaker_open;
            if self.breaker_open {
                self.breaker_opened(notify);
            } else {
                self.recent_failovers.clear();
                self.control.audit.record(NewEvent::new(
                    EventKind::BreakerClosed,
                    format!("closed ({origin})"),
                ));
            }
        }
        self.publish(now);
        self.save();
    }

    /// A suspension another node wrote: out of rotation here too, at once.
    fn suspend_from_cluster(&mut self, id: &Arc<str>, reason: &str, now: Instant) {
        let Some(w) = self.masters.get_mut(id) else {
            return;
        };
        if w.machine.state() == HealthState::Suspended {
            return;
        }
        let _t = w.machine.suspend(reason.to_string(), now);
        w.suspended_at = Some(SystemTime::now());
        if let Some(stats) = self.stats(id) {
            stats.suspend();
        }
        self.control.audit.record(
            NewEvent::new(
                EventKind::Suspended,
                format!("{reason} (seen by another node)"),
            )
            .master(id),
        );
        self.publish(now);
    }

    /// The breaker opened (by this leader's decision or another's), as on one node.
    pub(super) fn breaker_opened(&mut self, notify: bool) {
        let why = format!(
            "more than {} failovers within {} ms; automatic failover stops until POST /ha/resume",
            self.config.failover.max_failovers,
            self.config.failover.breaker_window.as_millis()
        );
        self.control
            .audit
            .record(NewEvent::new(EventKind::BreakerOpen, &why));
        if notify {
            self.alerts
                .raise(Severity::Critical, "breaker_open", None, why);
        }
    }
}
