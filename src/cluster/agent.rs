//! The cluster agent: one task per node that keeps its membership record and lease,
//! campaigns for leadership, watches the other nodes, and notices when etcd is gone.
//!
//! It works in ticks (a fifteenth of the lease TTL, 100 to 250 ms), and at once when
//! a watch sees the leader key or a node record change. Each tick renews
//! the lease when a third of the TTL has passed, reads every node record and the
//! leader key, steps up or down, and rewrites this node's record when it changed. A
//! tick that cannot reach etcd changes nothing that was applied. A leader that has not
//! reached etcd for half the TTL decides nothing more; when etcd has not answered for
//! the whole TTL (longer than etcd takes to elect a raft leader after a member died)
//! the node is `isolated` (audited, and a critical `cluster_isolated` alert) until a
//! tick succeeds again.
//!
//! On shutdown the node is `leaving`: it resigns leadership at the next tick and stands
//! for none, and goes on ticking (renewing its lease, reporting its queue depth) while
//! `super::handoff` hands its queue to the peers; then it leaves.
//!
//! The flags others read ([`Cluster::is_leader`], [`Cluster::view`]) are a snapshot
//! taken at the end of a tick: a node paused past its lease may believe it leads for
//! one more tick. Anything that needs leadership to be true when it takes effect
//! writes through [`election::Leadership::fence`].

use super::election::{self, Leadership};
mod tick;

use super::member::{self, NodeRecord, NodeState, View};
use super::state::{State, StateError};
use crate::alerts::Alerter;
use crate::audit::{AuditLog, EventKind, NewEvent};
use crate::config::ClusterConfig;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tick::Agent;

/// How long a node that resigned stays out of the running (unless no other node can
/// lead): long enough for the next one to settle in, short enough that a higher
/// priority node that resigned for maintenance takes over again by itself.
pub const STAND_DOWN: Duration = Duration::from_secs(60);

/// This node's place in the cluster. Shared as `Arc<Cluster>`.
pub struct Cluster {
    pub config: ClusterConfig,
    /// Where peers reach this node's admin API.
    pub admin: String,
    state: State,
    view: ArcSwap<View>,
    leader: AtomicBool,
    term: AtomicU64,
    isolated: AtomicBool,
    resign: AtomicBool,
    /// This node has applied the shared operator state at least once.
    caught_up: AtomicBool,
    /// This node's hold on leadership while it leads and reaches etcd.
    leadership: std::sync::Mutex<Option<Leadership>>,
    /// The masters this node finds failed (set by the failover controller).
    down: std::sync::Mutex<Vec<String>>,
    /// Per master, how many live nodes report it failed; and how many nodes are live.
    votes: ArcSwap<(std::collections::HashMap<String, usize>, usize)>,
    /// Set once shutdown began: the record says `leaving`, leadership goes.
    leaving: AtomicBool,
    queue_depth: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Called when the budget split changed, to apply it to every master.
    on_split: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    audit: Arc<AuditLog>,
    alerts: Arc<Alerter>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node_id)
            .field("leader", &self.is_leader())
            .field("term", &self.term())
            .field("isolated", &self.is_isolated())
            .finish_non_exhaustive()
    }
}

/// Why `POST /cluster/leader/resign` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResignError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<String> },
    #[error("this node cannot reach etcd")]
    Isolated,
}

impl Cluster {
    /// A node of the cluster `config` names. Connecting is lazy: a node whose etcd is
    /// down at start starts anyway, isolated, and joins when etcd answers.
    pub async fn new(
        config: ClusterConfig,
        admin: String,
        audit: Arc<AuditLog>,
        alerts: Arc<Alerter>,
        queue_depth: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Arc<Cluster>, StateError> {
        let state = State::connect(&config.etcd, call_timeout(&config)).await?;
        let view = View {
            cluster_state: member::ClusterState::Forming,
            leader: None,
            term: 0,
            node: config.node_id.clone(),
            state: NodeState::Joining,
            nodes: Vec::new(),
        };
        Ok(Arc::new(Cluster {
            config,
            admin,
            state,
            view: ArcSwap::from_pointee(view),
            leader: AtomicBool::new(false),
            term: AtomicU64::new(0),
            isolated: AtomicBool::new(false),
            resign: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            leadership: std::sync::Mutex::new(None),
            down: std::sync::Mutex::new(Vec::new()),
            votes: ArcSwap::from_pointee((Default::default(), 0)),
            leaving: AtomicBool::new(false),
            queue_depth,
            on_split: std::sync::OnceLock::new(),
            audit,
            alerts,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The etcd handle, for the other cluster-wide features.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The cluster as of the last tick.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Whether this node led, and reached etcd, at the last tick.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    pub fn term(&self) -> u64 {
        self.term.load(Relaxed)
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Relaxed)
    }

    /// Sets what applies a new budget split (see [`crate::routing::budget::split`]).
    pub fn on_split(&self, apply: Box<dyn Fn() + Send + Sync>) {
        let _already = self.on_split.set(apply);
    }

    /// Marks the shared operator state applied (see [`super::shared`]): the node may
    /// turn from `joining` to `active`.
    pub fn caught_up(&self) {
        self.caught_up.store(true, Relaxed);
    }

    /// The fence of this node's leadership, while it leads.
    pub fn leadership(&self) -> Option<Leadership> {
        *self.leadership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports the masters this node's own checks find failed; written into its
    /// record at the next tick.
    pub fn report_down(&self, mut masters: Vec<String>) {
        masters.sort_unstable();
        *self.down.lock().unwrap_or_else(|p| p.into_inner()) = masters;
    }

    /// Whether more than half of the live nodes report `master` failed.
    pub fn majority_down(&self, master: &str) -> bool {
        let votes = self.votes.load();
        let (down, live) = (votes.0.get(master).copied().unwrap_or(0), votes.1);
        live > 0 && down * 2 > live
    }

    /// Whether this node is shutting down (handing its queue on, then leaving).
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Relaxed)
    }

    /// Hands leadership on: the agent gives it up at its next tick and stays out of
    /// the running for [`STAND_DOWN`]. Waits (at most a lease TTL and a second) for
    /// the next leader and returns the view then.
    pub async fn resign(&self) -> Result<Arc<View>, ResignError> {
        if self.is_isolated() {
            return Err(ResignError::Isolated);
        }
        if !self.is_leader() {
            return Err(ResignError::NotLeader {
                leader: self.view().leader.clone(),
            });
        }
        self.resign.store(true, Relaxed);
        let deadline = Instant::now() + self.config.lease_ttl + Duration::from_secs(1);
        while Instant::now() < deadline {
            tokio::time::sleep(self.tick()).await;
            let view = self.view();
            if view.leader.as_deref().is_some_and(|l| l != self.node_id()) {
                return Ok(view);
            }
        }
        Ok(self.view())
    }

    fn tick(&self) -> Duration {
        (self.config.lease_ttl / 15).clamp(Duration::from_millis(100), Duration::from_millis(250))
    }

    /// Runs the agent until `shutdown`, then leaves: the record says `leaving` and
    /// leadership goes at once; the agent goes on renewing the lease while `handoff`
    /// hands the queue to the peers (bounded by `handoff_timeout_ms`); then the lease
    /// is given up (see [`Agent::leave`]).
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: crate::server::Shutdown,
        handoff: Option<super::handoff::Sender>,
    ) {
        let mut agent = Agent::new();
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change of the leader key or of a node record starts a tick at once: a
        // leader's lease running out is acted on in one round trip, not a tick later.
        let woken = Arc::new(tokio::sync::Notify::new());
        let watcher = tokio::spawn(self.clone().watch_changes(woken.clone()));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = woken.notified() => {}
                _ = shutdown.wait() => break,
            }
            let outcome = agent.step(&self).await;
            agent.settle(&self, outcome);
        }
        self.leaving.store(true, Relaxed);
        if let Some(sender) = handoff {
            // Peers see `leaving` (and another leader) before the first batch.
            let outcome = agent.step(&self).await;
            agent.settle(&self, outcome);
            let done = tokio::sync::Notify::new();
            let ticking = async {
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = done.notified() => break,
                    }
                    let outcome = agent.step(&self).await;
                    agent.settle(&self, outcome);
                }
            };
            let handing = async {
                sender.run(&self).await;
                done.notify_one();
            };
            tokio::join!(ticking, handing);
        }
        watcher.abort();
        agent.leave(&self).await;
    }

    /// Wakes the agent on every change of the leader key or a node record; watches
    /// again after an error (the ticks go on meanwhile).
    async fn watch_changes(self: Arc<Self>, woken: Arc<tokio::sync::Notify>) {
        loop {
            if let Err(e) = self.watch_once(&woken).await {
                tracing::debug!(error = %e, "watching the cluster again");
            }
            tokio::time::sleep(self.tick()).await;
        }
    }

    async fn watch_once(&self, woken: &tokio::sync::Notify) -> Result<(), StateError> {
        let leader_key = election::leader_key(&self.config.prefix);
        let (_, revision) = self.state.list(&leader_key).await?;
        let mut leader = self.state.watch(&leader_key, revision + 1).await?;
        let mut nodes = self.state.watch(&self.nodes_key(), revision + 1).await?;
        loop {
            tokio::select! {
                changes = leader.next() => { changes?; }
                changes = nodes.next() => { changes?; }
            }
            woken.notify_one();
        }
    }

    fn record(&self, state: NodeState, candidate: bool) -> NodeRecord {
        NodeRecord {
            id: self.config.node_id.clone(),
            admin: self.admin.clone(),
            priority: self.config.priority,
            version: env!("CARGO_PKG_VERSION").to_string(),
            state,
            queue_depth: (self.queue_depth)(),
            candidate,
            updated_ms: crate::util::unix_ms(),
            down: self.down.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn event(&self, kind: EventKind, reason: String) {
        tracing::info!(kind = kind.as_str(), "{reason}");
        self.audit.record(NewEvent::new(kind, reason));
    }

    fn nodes_key(&self) -> String {
        format!("{}/nodes/", self.config.prefix)
    }
}

/// Each call to etcd is bounded by a third of the lease TTL: a node learns it is cut
/// off well before its lease can run out.
fn call_timeout(config: &ClusterConfig) -> Duration {
    config.lease_ttl / 3
}
