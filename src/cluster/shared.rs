//! The operator state every node shares (SPEC section 11, "Decisions" and "Admin and
//! config"): admin states, failovers in force, suspensions, the pause and the breaker,
//! in one document at `{prefix}/operator`.
//!
//! # Writes go to etcd first
//!
//! A change is made by [`Shared::update`]: read the document, change it, write it back
//! as compare-and-swap on its revision (retried from the new value when another
//! writer got there first). A leader's decision also carries the leader's fence
//! ([`Leadership::fence`]) and its term: it commits only while the writer still
//! leads, so a deposed leader's decision fails in etcd and nobody ever applies it. An
//! operator's change (an admin call on any node) is not fenced: it is no decision of
//! the leader's, and every node may take one.
//!
//! # Every node applies what etcd holds
//!
//! [`Shared::follow`] reads the document and watches it; each new revision goes to the
//! failover controller, which applies what changed since the revision it applied
//! before (so health states, which stay each node's own, are never touched by it).
//! The revisions applied are published, so an admin call can answer once its change is
//! in force here too. All nodes see the same revisions in the same order: two
//! decisions are never applied in different orders on two nodes, and since a leader's
//! write only commits while it leads, no decision of an older term can follow one of
//! a newer term.
//!
//! A node that cannot reach etcd keeps the last document it applied (its
//! `operator.json` holds it across a restart too) and changes nothing shared.

use super::agent::Cluster;
use super::election::Leadership;
use super::state::{revision_of, StateError};
use crate::control::operator::{Held, OperatorState};
use crate::routing::AdminState;
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The shared document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedDoc {
    #[serde(default)]
    pub operator: OperatorState,
    /// Opened by the leader after too many failovers; closed by `POST /ha/resume`.
    #[serde(default)]
    pub breaker_open: bool,
    /// The term of the leader whose decision wrote it; the last term seen for an
    /// operator's change.
    #[serde(default)]
    pub term: u64,
    /// Whether the last write was a leader's decision (fenced).
    #[serde(default)]
    pub decision: bool,
    /// The node that wrote it, and when (its clock, Unix ms): the start of
    /// `switchyard_cluster_apply_seconds`.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub at_ms: u64,
}

/// One change to the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    Admin {
        id: String,
        admin: String,
    },
    Pause,
    /// Resumes automatic failover and closes the breaker.
    Resume,
    OpenBreaker,
    /// `failed` is failed over to `backup`.
    Hold {
        failed: String,
        backup: String,
        manual: bool,
    },
    /// `failed` takes its place back.
    Release {
        failed: String,
    },
    Suspend {
        id: String,
        reason: String,
    },
    Reinstate {
        id: String,
    },
}

/// Why a mutation was not made: it no longer applies to the document as it is now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

impl Mutation {
    /// Applies the change to `doc`; `Ok(false)` when it is already so (nothing to write).
    pub fn apply(&self, doc: &mut SharedDoc) -> Result<bool, Refused> {
        let ops = &mut doc.operator;
        let changed = match self {
            Mutation::Admin { id, admin } => {
                let admin = match admin.as_str() {
                    "disabled" => AdminState::Disabled,
                    "draining" => AdminState::Draining,
                    _ => AdminState::Enabled,
                };
                let m = ops.master(id);
                std::mem::replace(&mut m.admin, admin) != admin
            }
            Mutation::Pause => !std::mem::replace(&mut ops.failover_paused, true),
            Mutation::Resume => {
                std::mem::take(&mut ops.failover_paused) | std::mem::take(&mut doc.breaker_open)
            }
            Mutation::OpenBreaker => !std::mem::replace(&mut doc.breaker_open, true),
            Mutation::Hold {
                failed,
                backup,
                manual,
            } => {
                if let Some(h) = ops.masters.get(failed).and_then(|m| m.held.as_ref()) {
                    return Err(Refused {
                        code: "failover_refused",
                        message: format!("{failed} is already failed over to {}", h.standby),
                    });
                }
                let taken = ops
                    .masters
                    .values()
                    .filter_map(|m| m.held.as_ref())
                    .any(|h| &h.standby == backup);
                if taken {
                    return Err(Refused {
                        code: "failover_refused",
                        message: format!("{backup} already serves in another master's place"),
                    });
                }
                ops.master(failed).held = Some(Held {
                    standby: backup.clone(),
                    manual: *manual,
                    since_unix_ms: crate::util::unix_ms(),
                });
                true
            }
            Mutation::Release { failed } => ops
                .masters
                .get_mut(failed)
                .and_then(|m| m.held.take())
                .is_some(),
            Mutation::Suspend { id, reason } => {
                let m = ops.master(id);
                if m.suspended.is_some() {
                    false
                } else {
                    m.suspended = Some(crate::control::operator::Suspension {
                        reason: reason.clone(),
                        since_unix_ms: crate::util::unix_ms(),
                    });
                    true
                }
            }
            Mutation::Reinstate { id } => {
                let lifted = ops
                    .masters
                    .get_mut(id)
                    .and_then(|m| m.suspended.take())
                    .is_some();
                if !lifted {
                    return Err(Refused {
                        code: "not_suspended",
                        message: format!("{id} is not suspended"),
                    });
                }
                true
            }
        };
        ops.masters.retain(|_, m| *m != Default::default());
        Ok(changed)
    }
}

/// Why [`Shared::update`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A fenced write found the writer no longer leads: nothing was written.
    #[error("this node no longer leads")]
    Deposed,
    #[error(transparent)]
    State(#[from] StateError),
}

/// The shared document's handle on one node.
#[derive(Debug)]
pub struct Shared {
    cluster: Arc<Cluster>,
    key: String,
    /// The revision this node applied last (0: none yet).
    applied: watch::Sender<i64>,
}

impl Shared {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Shared> {
        let key = format!("{}/operator", cluster.prefix());
        Arc::new(Shared {
            cluster,
            key,
            applied: watch::channel(0).0,
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Reads the document: `None` when nobody wrote it yet.
    pub async fn read(&self) -> Result<Option<(SharedDoc, i64)>, StateError> {
        let Some(v) = self.cluster.state().get(&self.key).await? else {
            return Ok(None);
        };
        let doc = serde_json::from_slice(&v.value)
            .map_err(|e| StateError::Etcd(format!("{} is not a shared document: {e}", self.key)))?;
        Ok(Some((doc, v.mod_revision)))
    }

    /// Makes `change` on the document as etcd holds it now, as compare-and-swap on its
    /// revision, retried from the new value when another writer got there first.
    /// `fence`: a leader's decision, which commits only while that leadership holds.
    /// Returns the revision written (or the current one when nothing changed).
    pub async fn update(
        &self,
        fence: Option<Leadership>,
        change: &Mutation,
    ) -> Result<i64, UpdateError> {
        for _ in 0..16 {
            let (mut doc, revision) = match self.read().await? {
                Some((doc, rev)) => (doc, rev),
                None => (SharedDoc::default(), 0),
            };
            if !change.apply(&mut doc)? {
                return Ok(revision);
            }
            doc.by = self.cluster.node_id().to_string();
            doc.at_ms = crate::util::unix_ms();
            doc.decision = fence.is_some();
            doc.term = fence.map_or(doc.term.max(self.cluster.term()), |l| l.term);
            match self.write(&doc, revision, fence).await? {
                Written::Won(rev) => return Ok(rev),
                Written::Moved => continue,
                Written::Deposed => return Err(UpdateError::Deposed),
            }
        }
        Err(UpdateError::State(StateError::Etcd(
            "the shared document kept changing under 16 tries".into(),
        )))
    }

    /// Writes the first document (this node's own saved state) when there is none.
    async fn create(&self, doc: &SharedDoc) -> Result<(), StateError> {
        self.write(doc, 0, None).await.map(|_| ())
    }

    async fn write(
        &self,
        doc: &SharedDoc,
        revision: i64,
        fence: Option<Leadership>,
    ) -> Result<Written, StateError> {
        let unchanged = if revision == 0 {
            Compare::create_revision(self.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision)
        };
        let mut compares = vec![unchanged];
        compares.extend(fence.map(|l| l.fence(self.cluster.prefix())));
        let value = serde_json::to_vec(doc).unwrap_or_default();
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(self.key.as_str(), value, None)])
            .or_else([TxnOp::get(
                super::election::leader_key(self.cluster.prefix()),
                None,
            )]);
        let resp = self.cluster.state().txn(txn).await?;
        if resp.succeeded() {
            return Ok(Written::Won(revision_of(resp.header())));
        }
        let Some(held) = fence else {
            return Ok(Written::Moved);
        };
        let still_leads = resp.op_responses().into_iter().any(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == held.token),
            _ => false,
        });
        Ok(if still_leads {
            Written::Moved
        } else {
            Written::Deposed
        })
    }

    /// Waits (at most `within`) until this node applied revision `revision` or a later
    /// one; returns whether it did.
    pub async fn applied(&self, revision: i64, within: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(within, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows the document until `shutdown`: each new revision is handed to `apply`
    /// (the failover controller), then published as applied. When there is none yet,
    /// this node's own saved state becomes the first.
    pub async fn follow<F, Fut>(
        self: Arc<Self>,
        local: OperatorState,
        apply: F,
        mut shutdown: crate::server::Shutdown,
    ) where
        F: Fn(SharedDoc, i64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let retry = Duration::from_millis(250);
        let mut seen = 0;
        loop {
            let round = async {
                let (doc, revision) = match self.read().await? {
                    Some(found) => found,
                    None => {
                        let first = SharedDoc {
                            operator: local.clone(),
                            by: self.cluster.node_id().to_string(),
                            at_ms: crate::util::unix_ms(),
                            ..SharedDoc::default()
                        };
                        self.create(&first).await?;
                        return Ok::<(), StateError>(());
                    }
                };
                if revision > seen {
                    apply(doc, revision).await;
                    seen = revision;
                    self.applied.send_replace(revision);
                }
                self.cluster.caught_up();
                let mut changes = self.cluster.state().watch(&self.key, revision + 1).await?;
                loop {
                    // A quiet watch is read again from scratch now and then: a stream
                    // on a connection that died silently would otherwise wait forever.
                    let Ok(batch) = tokio::time::timeout(RESYNC, changes.next()).await else {
                        return Ok(());
                    };
                    for change in batch? {
                        let Some(v) = change.value else { continue };
                        if change.key != self.key || v.mod_revision <= seen {
                            continue;
                        }
                        match serde_json::from_slice::<SharedDoc>(&v.value) {
                            Ok(doc) => {
                                apply(doc, v.mod_revision).await;
                                seen = v.mod_revision;
                                self.applied.send_replace(seen);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the shared operator document cannot be read; keeping the last one applied")
                            }
                        }
                    }
                }
            };
            tokio::select! {
                outcome = round => {
                    if let Err(e) = outcome {
                        tracing::debug!(error = %e, "following the shared operator state again");
                    }
                }
                _ = shutdown.wait() => return,
            }
            let started = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(retry.saturating_sub(started.elapsed())) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// How long a watch may stay quiet before the document is read again.
const RESYNC: Duration = Duration::from_secs(10);

enum Written {
    Won(i64),
    /// Someone else wrote first: read again.
    Moved,
    /// A fenced write whose writer no longer leads.
    Deposed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_only_what_they_name_and_refuse_what_no_longer_applies() {
        let mut doc = SharedDoc::default();
        let hold = Mutation::Hold {
            failed: "a".into(),
            backup: "s".into(),
            manual: false,
        };
        assert_eq!(hold.apply(&mut doc), Ok(true));
        assert_eq!(
            hold.apply(&mut doc).map_err(|e| e.code),
            Err("failover_refused")
        );
        let other = Mutation::Hold {
            failed: "b".into(),
            backup: "s".into(),
            manual: true,
        };
        assert!(
            other.apply(&mut doc).is_err(),
            "one standby serves one place"
        );
        assert_eq!(Mutation::Pause.apply(&mut doc), Ok(true));
        assert_eq!(Mutation::Pause.apply(&mut doc), Ok(false));
        assert_eq!(Mutation::OpenBreaker.apply(&mut doc), Ok(true));
        assert_eq!(Mutation::Resume.apply(&mut doc), Ok(true));
        assert!(!doc.breaker_open && !doc.operator.failover_paused);
        let release = Mutation::Release { failed: "a".into() };
        assert_eq!(release.apply(&mut doc), Ok(true));
        assert_eq!(release.apply(&mut doc), Ok(false));
        assert!(
            doc.operator.masters.is_empty(),
            "default entries are dropped"
        );
        let disable = Mutation::Admin {
            id: "a".into(),
            admin: "disabled".into(),
        };
        assert_eq!(disable.apply(&mut doc), Ok(true));
        assert_eq!(doc.operator.masters["a"].admin, AdminState::Disabled);
        let reinstate = Mutation::Reinstate { id: "a".into() };
        assert_eq!(
            reinstate.apply(&mut doc).map_err(|e| e.code),
            Err("not_suspended")
        );
        let suspend = Mutation::Suspend {
            id: "a".into(),
            reason: "banned".into(),
        };
        assert_eq!(suspend.apply(&mut doc), Ok(true));
        assert_eq!(suspend.apply(&mut doc), Ok(false));
        assert_eq!(reinstate.apply(&mut doc), Ok(true));
    }
}
