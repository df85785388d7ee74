//! The cluster agent: one task per node that keeps its membership record and lease,
//! campaigns for leadership, watches the other nodes, and notices when etcd is gone.
//!
//! It works in ticks (a fifteenth of the lease TTL, 100 to 250 ms), and at once when
//! a watch sees the leader key or a node record change. Each tick renews
//! the lease when a third of the TTL has passed, reads every node record and the
//! leader key, steps up or down, and rewrites this node's record when it changed. A
//! tick that cannot reach etcd changes nothing that was applied; when etcd has not
//! answered for half the TTL the node is `isolated` (audited, and a critical
//! `cluster_isolated` alert) until a tick succeeds again.
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
use super::member::{self, NodeRecord, NodeState, Roster, View};
use super::state::{State, StateError};
use crate::alerts::{Alerter, Severity};
use crate::audit::{AuditLog, EventKind, NewEvent};
use crate::config::ClusterConfig;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
            updated_ms: crate::routing::budget::unix_ms(),
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

/// The TTL of the etcd lease: half a second under `lease_ttl_ms`, in whole seconds,
/// since etcd looks for expired leases only every 500 ms. A node that stops renewing
/// is gone within `lease_ttl_ms` (etcd raises a TTL under its minimum, about 2 s).
fn lease_secs(config: &ClusterConfig) -> Duration {
    let ms = config.lease_ttl.as_millis() as u64;
    Duration::from_secs((ms.saturating_sub(500) / 1000).max(1))
}

/// Each call to etcd is bounded by a third of the lease TTL: a node learns it is cut
/// off well before its lease can run out.
fn call_timeout(config: &ClusterConfig) -> Duration {
    config.lease_ttl / 3
}

/// The agent's own memory between ticks.
struct Agent {
    /// The lease and the time of its last renewal; `None` until registered.
    lease: Option<(i64, Instant)>,
    joined: bool,
    won: Option<Leadership>,
    last_ok: Instant,
    isolated: bool,
    /// Since when this node has seen no leader.
    absent_since: Option<Instant>,
    stand_down_until: Option<Instant>,
    roster: Roster,
    /// The last leader and term this node saw, to audit each change once.
    seen_leader: Option<(String, u64)>,
    term: u64,
    /// The record as last written, without its time.
    written: Option<NodeRecord>,
    split: super::split::Split,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            lease: None,
            joined: false,
            won: None,
            last_ok: Instant::now(),
            isolated: false,
            absent_since: None,
            stand_down_until: None,
            roster: Roster::default(),
            seen_leader: None,
            term: 0,
            written: None,
            split: super::split::Split::default(),
        }
    }

    fn my_state(&self, c: &Cluster) -> NodeState {
        if c.is_leaving() {
            NodeState::Leaving
        } else if self.isolated {
            NodeState::Isolated
        } else if !self.joined {
            NodeState::Joining
        } else if self.won.is_some() {
            NodeState::Leader
        } else {
            NodeState::Active
        }
    }

    fn candidate(&self, now: Instant) -> bool {
        self.stand_down_until.is_none_or(|t| now >= t)
    }

    async fn step(&mut self, c: &Cluster) -> Result<(), StateError> {
        let lease = match self.lease {
            Some((lease, renewed)) if renewed.elapsed() < lease_secs(&c.config) / 3 => lease,
            Some((lease, _)) => match c.state.keep_alive(lease).await {
                Ok(_) => {
                    self.lease = Some((lease, Instant::now()));
                    lease
                }
                Err(StateError::LeaseLost(_)) => {
                    self.lost_lease(c);
                    return Err(StateError::LeaseLost(lease));
                }
                Err(e) => return Err(e),
            },
            None => {
                let lease = c
                    .state
                    .grant(lease_secs(&c.config).as_secs() as i64)
                    .await?;
                self.lease = Some((lease, Instant::now()));
                self.written = None;
                lease
            }
        };
        if !self.joined {
            // Registered as joining first; active (and a candidate) once it has
            // applied the cluster's shared state.
            self.write_record(c, lease, NodeState::Joining).await?;
            self.joined = c.caught_up.load(Relaxed);
        }
        let (kvs, _) = c.state.list(&c.nodes_key()).await?;
        let mut live: Vec<NodeRecord> = kvs
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v.value).ok())
            .filter(|r: &NodeRecord| r.id != c.config.node_id)
            .collect();
        let current = election::read(&c.state, &c.config.prefix).await?;
        let now = Instant::now();
        let me = c.record(self.my_state(c), self.candidate(now));
        live.push(me);
        self.elect(c, lease, &live, &current).await?;
        self.term = self.term.max(current.term);
        if let Some(won) = self.won {
            self.term = self.term.max(won.term);
        }
        let me = c.record(self.my_state(c), self.candidate(now));
        self.write_record(c, lease, me.state).await?;
        if let Some(mine) = live.last_mut() {
            *mine = me;
        }
        let mut votes = std::collections::HashMap::new();
        for r in &live {
            for m in &r.down {
                *votes.entry(m.clone()).or_insert(0) += 1;
            }
        }
        c.votes.store(Arc::new((votes, live.len())));
        self.split(c, &live);
        let changes = self.roster.update(&live, SystemTime::now());
        self.report(c, changes);
        let leader = match self.won {
            Some(won) => Some((c.config.node_id.clone(), won.term)),
            None => current.leader.map(|(r, _, _)| (r.id, r.term)),
        };
        if leader.is_some() && leader != self.seen_leader {
            if let Some((id, term)) = &leader {
                c.event(EventKind::LeaderChanged, format!("{id} leads, term {term}"));
            }
            self.seen_leader = leader;
        } else if leader.is_none() {
            self.seen_leader = None;
        }
        Ok(())
    }

    /// Splits every master's budget across the live nodes (see [`super::split`]).
    fn split(&mut self, c: &Cluster, live: &[NodeRecord]) {
        let n = live
            .iter()
            .filter(|r| r.state != NodeState::Leaving)
            .count();
        let (pace, daily) = self.split.observe(n as u32, Instant::now());
        if crate::routing::budget::split() != (pace, daily) {
            crate::routing::budget::set_split(pace, daily);
            tracing::info!(
                pace_nodes = pace,
                daily_nodes = daily,
                "masters' budgets split across the live nodes"
            );
            if let Some(apply) = c.on_split.get() {
                apply();
            }
        }
    }

    /// Steps up, keeps, or gives up leadership, from what this tick read.
    async fn elect(
        &mut self,
        c: &Cluster,
        lease: i64,
        live: &[NodeRecord],
        current: &election::Current,
    ) -> Result<(), StateError> {
        let prefix = &c.config.prefix;
        let me = live
            .last()
            .expect("this node's own record is always in live");
        let now = Instant::now();
        if let (Some((record, token, key_lease)), None) = (&current.leader, self.won) {
            // Ours, under this very lease: a campaign whose answer was lost on the way
            // (the write was applied, the reply never came).
            if record.id == me.id && *key_lease == lease {
                self.won = Some(Leadership {
                    term: record.term,
                    token: *token,
                });
            }
        }
        match (&current.leader, self.won) {
            (Some((_, token, _)), Some(won)) if *token == won.token => {
                self.absent_since = None;
                let asked = c.resign.swap(false, Relaxed);
                let higher = election::outranked(me, live);
                let leaving = c.is_leaving();
                if asked || higher || leaving {
                    election::resign(&c.state, prefix, won).await?;
                    self.won = None;
                    let reason = if leaving {
                        format!("{} resigned term {} as it leaves", me.id, won.term)
                    } else if asked {
                        self.stand_down_until = Some(now + STAND_DOWN);
                        format!("{} resigned term {} on request", me.id, won.term)
                    } else {
                        format!(
                            "{} resigned term {} for a node of higher priority",
                            me.id, won.term
                        )
                    };
                    c.event(EventKind::LeaderResigned, reason);
                }
                return Ok(());
            }
            (Some(_), _) => {
                self.absent_since = None;
                self.deposed(c);
                c.resign.store(false, Relaxed);
                return Ok(());
            }
            (None, _) => self.deposed(c),
        }
        let absent = now.duration_since(*self.absent_since.get_or_insert(now));
        let waited = absent >= c.config.lease_ttl;
        let best = election::best(live);
        let may = me.state == NodeState::Active && (me.candidate || (waited && best.is_none()));
        if may && (waited || best.is_some_and(|b| b.id == me.id)) {
            if let Some(won) = election::campaign(&c.state, prefix, &me.id, lease, current).await? {
                self.won = Some(won);
                self.absent_since = None;
            }
        }
        Ok(())
    }

    fn deposed(&mut self, c: &Cluster) {
        if let Some(won) = self.won.take() {
            tracing::warn!(
                term = won.term,
                "{} is no longer the leader: its lease or key is gone",
                c.config.node_id
            );
        }
    }

    fn lost_lease(&mut self, c: &Cluster) {
        self.deposed(c);
        self.lease = None;
        self.joined = false;
        self.written = None;
    }

    /// Writes this node's record under `lease` when anything but its time changed.
    async fn write_record(
        &mut self,
        c: &Cluster,
        lease: i64,
        state: NodeState,
    ) -> Result<(), StateError> {
        let record = c.record(state, self.candidate(Instant::now()));
        let same = self.written.as_ref().is_some_and(|w| {
            NodeRecord {
                updated_ms: record.updated_ms,
                ..w.clone()
            } == record
        });
        if same {
            return Ok(());
        }
        let key = format!("{}{}", c.nodes_key(), c.config.node_id);
        c.state
            .put_leased(&key, serde_json::to_vec(&record).unwrap_or_default(), lease)
            .await?;
        self.written = Some(record);
        Ok(())
    }

    /// Audits who joined, left or went away; the leader raises `stranded_messages`
    /// for a node gone with messages queued (unreachable, or left with messages its
    /// hand-off could not place).
    fn report(&self, c: &Cluster, changes: member::Changes) {
        let me = &c.config.node_id;
        for id in changes.joined.iter().chain(&changes.returned) {
            if id != me {
                c.event(EventKind::NodeJoined, format!("{id} joined"));
            }
        }
        for id in &changes.left {
            c.event(EventKind::NodeLeft, format!("{id} left"));
        }
        for (id, depth) in &changes.unreachable {
            c.event(
                EventKind::NodeUnreachable,
                format!("{id} stopped renewing its lease with {depth} messages queued"),
            );
        }
        if self.won.is_none() {
            return;
        }
        for (id, depth) in &changes.stranded {
            let how = if changes.left.contains(id) {
                "left"
            } else {
                "is gone"
            };
            c.alerts.raise(
                Severity::Critical,
                "stranded_messages",
                None,
                format!("node {id} {how} with {depth} messages queued on its disk"),
            );
        }
    }

    /// Takes in a tick's outcome: isolation, flags, metrics, the published view.
    fn settle(&mut self, c: &Cluster, outcome: Result<(), StateError>) {
        let now = Instant::now();
        match outcome {
            Ok(()) => {
                self.last_ok = now;
                if self.isolated {
                    self.isolated = false;
                    c.event(
                        EventKind::ClusterRejoined,
                        format!("{} reaches etcd again", c.config.node_id),
                    );
                }
            }
            Err(e) => {
                metrics::counter!("switchyard_cluster_etcd_errors_total").increment(1);
                tracing::debug!(error = %e, "cluster tick failed");
                // Half a lease: etcd electing a raft leader again (a member died) is no
                // isolation yet.
                let cut_off = now.duration_since(self.last_ok) >= c.config.lease_ttl / 2;
                if cut_off && !matches!(e, StateError::LeaseLost(_)) {
                    if !self.isolated {
                        self.isolated = true;
                        self.roster.forget_gone();
                        tracing::warn!(error = %e, "etcd unreachable");
                        c.event(
                            EventKind::ClusterIsolated,
                            format!(
                                "{} cannot reach etcd: serving with its last state",
                                c.config.node_id
                            ),
                        );
                    }
                    c.alerts.raise(
                        Severity::Critical,
                        "cluster_isolated",
                        None,
                        format!(
                            "node {} cannot reach etcd: it serves with its last state and decides nothing",
                            c.config.node_id
                        ),
                    );
                }
            }
        }
        self.publish(c);
    }

    fn publish(&self, c: &Cluster) {
        let state = self.my_state(c);
        let leading = self.won.is_some() && !self.isolated;
        c.leader.store(leading, Relaxed);
        *c.leadership.lock().unwrap_or_else(|p| p.into_inner()) = self.won.filter(|_| leading);
        c.term.store(self.term, Relaxed);
        c.isolated.store(self.isolated, Relaxed);
        let mut nodes = self.roster.nodes();
        if let Some(me) = nodes.iter_mut().find(|n| n.id == c.config.node_id) {
            me.state = state;
        }
        let leader = self.seen_leader.as_ref().map(|(id, _)| id.clone());
        let view = View {
            cluster_state: member::cluster_state(leader.as_deref(), &nodes, state),
            leader,
            term: self.term,
            node: c.config.node_id.clone(),
            state,
            nodes,
        };
        metrics::gauge!("switchyard_cluster_leader").set(if leading { 1.0 } else { 0.0 });
        metrics::gauge!("switchyard_cluster_term").set(self.term as f64);
        for s in NodeState::ALL {
            let n = view.nodes.iter().filter(|n| n.state == s).count();
            metrics::gauge!("switchyard_cluster_nodes", "state" => s.as_str()).set(n as f64);
        }
        c.view.store(Arc::new(view));
    }

    /// A clean leave: the record says `leaving` (under a short lease of its own, so
    /// peers see it go as a leave, not a loss), then the node's lease is revoked,
    /// which frees leadership at once.
    async fn leave(&mut self, c: &Cluster) {
        let Some((lease, _)) = self.lease else {
            return;
        };
        let bounded = async {
            let record = c.record(NodeState::Leaving, false);
            let key = format!("{}{}", c.nodes_key(), c.config.node_id);
            let short = c.state.grant(2).await?;
            c.state
                .put_leased(&key, serde_json::to_vec(&record).unwrap_or_default(), short)
                .await?;
            c.state.revoke(lease).await
        };
        match tokio::time::timeout(c.config.lease_ttl, bounded).await {
            Ok(Ok(())) => tracing::info!("{} left the cluster", c.config.node_id),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not leave the cluster cleanly: peers will see this node's lease run out")
            }
            Err(_) => tracing::warn!(
                "etcd did not answer the leave in time: peers will see this node's lease run out"
            ),
        }
    }
}
