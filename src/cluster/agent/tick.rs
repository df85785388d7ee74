//! One tick of the cluster agent (see [`super`]): renew the lease, read the records
//! and the leader key, step up or down, write this node's record, publish the view;
//! and the clean leave at shutdown.

use super::{Cluster, STAND_DOWN};
use crate::alerts::Severity;
use crate::audit::EventKind;
use crate::cluster::election::{self, Leadership};
use crate::cluster::member::{self, NodeRecord, NodeState, Roster, View};
use crate::cluster::state::StateError;
use crate::config::ClusterConfig;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The TTL of the etcd lease: half a second under `lease_ttl_ms`, in whole seconds,
/// since etcd looks for expired leases only every 500 ms. A node that stops renewing
/// is gone within `lease_ttl_ms` (etcd raises a TTL under its minimum, about 2 s).
fn lease_secs(config: &ClusterConfig) -> Duration {
    let ms = config.lease_ttl.as_millis() as u64;
    Duration::from_secs((ms.saturating_sub(500) / 1000).max(1))
}

/// The agent's own memory between ticks.
pub(super) struct Agent {
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
    split: crate::cluster::split::Split,
}

impl Agent {
    pub(super) fn new() -> Agent {
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
            split: crate::cluster::split::Split::default(),
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

    pub(super) async fn step(&mut self, c: &Cluster) -> Result<(), StateError> {
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
    pub(super) fn settle(&mut self, c: &Cluster, outcome: Result<(), StateError>) {
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
                // A whole lease, when the others may count this node gone: etcd
                // electing a raft leader again after a member died (one to two
                // election timeouts, 1 to 2 s at etcd's defaults) is no isolation.
                let cut_off = now.duration_since(self.last_ok) >= c.config.lease_ttl;
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

    pub(super) fn publish(&self, c: &Cluster) {
        let state = self.my_state(c);
        // A leader that has not reached etcd for half a lease decides nothing more:
        // its lease may run out before it learns so.
        let fresh = self.last_ok.elapsed() < c.config.lease_ttl / 2;
        let leading = self.won.is_some() && fresh;
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
    pub(super) async fn leave(&mut self, c: &Cluster) {
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
