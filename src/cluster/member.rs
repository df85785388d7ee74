//! Membership: what each node publishes about itself, and the cluster as one node sees
//! it (`GET /cluster/status`).
//!
//! Each node keeps one record at `{prefix}/nodes/{id}` under its own lease, so the
//! record disappears when the node stops renewing for `lease_ttl_ms`. A node remembers
//! the peers whose record disappeared without a clean leave and shows them as
//! `unreachable`, with the queue depth they last reported.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// A node's state, as SPEC section 11 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Registered, not yet caught up with the cluster's shared state.
    Joining,
    Active,
    Leader,
    /// Cannot reach etcd: serves with the state it last applied, decides nothing.
    Isolated,
    /// Shutting down: handing its queue on.
    Leaving,
    /// Its lease ran out without a clean leave (only ever shown for peers).
    Unreachable,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        NodeState::Joining,
        NodeState::Active,
        NodeState::Leader,
        NodeState::Isolated,
        NodeState::Leaving,
        NodeState::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Active => "active",
            Self::Leader => "leader",
            Self::Isolated => "isolated",
            Self::Leaving => "leaving",
            Self::Unreachable => "unreachable",
        }
    }
}

/// The cluster as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// No leader yet.
    Forming,
    /// A leader, and every node active.
    Stable,
    /// A leader, but some node is joining, leaving or unreachable; or this node is
    /// isolated and cannot tell.
    Degraded,
}

/// The record a node keeps in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Where peers reach its admin API.
    pub admin: String,
    pub priority: u32,
    /// The switchyard version it runs.
    pub version: String,
    pub state: NodeState,
    pub queue_depth: u64,
    /// Whether it may be elected now (false for a while after it resigned).
    #[serde(default = "yes")]
    pub candidate: bool,
    /// Unix milliseconds of the write.
    #[serde(default)]
    pub updated_ms: u64,
    /// The masters this node's own checks find failed: the leader fails a master over
    /// when a majority of live nodes report it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One row of `/cluster/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub id: String,
    pub state: NodeState,
    pub priority: u32,
    pub admin: String,
    pub version: String,
    pub queue_depth: u64,
    /// RFC 3339 time this node last saw the record (now, for live ones).
    pub last_seen: String,
}

/// `GET /cluster/status`.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub cluster_state: ClusterState,
    pub leader: Option<String>,
    pub term: u64,
    /// This node's id and state.
    pub node: String,
    pub state: NodeState,
    pub nodes: Vec<NodeView>,
}

/// A peer whose record went away without `leaving`: shown `unreachable` for this long.
pub const FORGET_UNREACHABLE: Duration = Duration::from_secs(24 * 3600);

/// The peers this node has seen, live or gone.
#[derive(Debug, Default)]
pub struct Roster {
    /// By id: the last record seen and when it was seen; `gone` once it disappeared.
    known: std::collections::BTreeMap<String, Known>,
}

#[derive(Debug, Clone)]
struct Known {
    record: NodeRecord,
    seen: SystemTime,
    gone: bool,
}

/// What changed between two readings of the records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// Gone without a clean leave, with the queue depth they last reported.
    pub unreachable: Vec<(String, u64)>,
    /// Came back after being unreachable.
    pub returned: Vec<String>,
    /// Gone (left or unreachable) with messages queued on its disk, with the count it
    /// last reported: a clean leave hands the queue over first, and reports what it
    /// could not.
    pub stranded: Vec<(String, u64)>,
}

impl Roster {
    /// Takes in the live records just read; returns who joined, left or went away.
    pub fn update(&mut self, live: &[NodeRecord], now: SystemTime) -> Changes {
        let mut changes = Changes::default();
        for record in live {
            match self.known.get(&record.id) {
                None => changes.joined.push(record.id.clone()),
                Some(k) if k.gone => changes.returned.push(record.id.clone()),
                Some(_) => {}
            }
            self.known.insert(
                record.id.clone(),
                Known {
                    record: record.clone(),
                    seen: now,
                    gone: false,
                },
            );
        }
        self.known.retain(|id, k| {
            if k.gone || live.iter().any(|r| &r.id == id) {
                return now.duration_since(k.seen).unwrap_or_default() < FORGET_UNREACHABLE;
            }
            let depth = k.record.queue_depth;
            if depth > 0 {
                changes.stranded.push((id.clone(), depth));
            }
            if k.record.state == NodeState::Leaving {
                changes.left.push(id.clone());
                return false;
            }
            k.gone = true;
            changes.unreachable.push((id.clone(), depth));
            true
        });
        changes
    }

    /// Forgets everything gone: for a node that itself was cut off, whose view of
    /// who went away is not to be trusted.
    pub fn forget_gone(&mut self) {
        self.known.retain(|_, k| !k.gone);
    }

    /// Every known node, live ones with their own state, gone ones `unreachable`.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.known
            .values()
            .map(|k| NodeView {
                id: k.record.id.clone(),
                state: if k.gone {
                    NodeState::Unreachable
                } else {
                    k.record.state
                },
                priority: k.record.priority,
                admin: k.record.admin.clone(),
                version: k.record.version.clone(),
                queue_depth: k.record.queue_depth,
                last_seen: crate::util::rfc3339(k.seen),
            })
            .collect()
    }
}

/// `forming` without a leader; `stable` when every known node is active or leader.
pub fn cluster_state(leader: Option<&str>, nodes: &[NodeView], me: NodeState) -> ClusterState {
    if leader.is_none() {
        return ClusterState::Forming;
    }
    let settled = |s: NodeState| matches!(s, NodeState::Active | NodeState::Leader);
    if settled(me) && nodes.iter().all(|n| settled(n.state)) {
        ClusterState::Stable
    } else {
        ClusterState::Degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: NodeState, depth: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            admin: "127.0.0.1:1".into(),
            priority: 1,
            version: "v".into(),
            state,
            queue_depth: depth,
            candidate: true,
            updated_ms: 0,
            down: Vec::new(),
        }
    }

    #[test]
    fn a_clean_leave_is_forgotten_and_a_lost_node_is_unreachable() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut roster = Roster::default();
        let c = roster.update(
            &[
                record("a", NodeState::Active, 0),
                record("b", NodeState::Leaving, 0),
                record("c", NodeState::Active, 7),
            ],
            t,
        );
        assert_eq!(c.joined, ["a", "b", "c"]);
        let c = roster.update(&[record("a", NodeState::Leader, 0)], t);
        assert_eq!(c.left, ["b"]);
        assert_eq!(c.unreachable, [("c".to_string(), 7)]);
        assert_eq!(c.stranded, [("c".to_string(), 7)]);
        let nodes = roster.nodes();
        let states: Vec<_> = nodes.iter().map(|n| (n.id.as_str(), n.state)).collect();
        assert_eq!(
            states,
            [("a", NodeState::Leader), ("c", NodeState::Unreachable)]
        );
        assert_eq!(
            cluster_state(Some("a"), &nodes, NodeState::Leader),
            ClusterState::Degraded
        );
        // Reported once, not at every reading.
        assert_eq!(
            roster.update(&[record("a", NodeState::Leader, 0)], t),
            Changes::default()
        );
        let c = roster.update(
            &[
                record("a", NodeState::Leader, 0),
                record("c", NodeState::Joining, 0),
            ],
            t,
        );
        assert_eq!(c.returned, ["c"]);
        let later = t + FORGET_UNREACHABLE + Duration::from_secs(1);
        roster.update(&[record("a", NodeState::Leader, 0)], t);
        roster.update(&[record("a", NodeState::Leader, 0)], later);
        assert_eq!(
            roster.nodes().len(),
            1,
            "an unreachable node is forgotten a day on"
        );
    }

    #[test]
    fn a_node_that_leaves_with_messages_left_strands_them() {
        let t = SystemTime::UNIX_EPOCH;
        let mut roster = Roster::default();
        roster.update(
            &[
                record("a", NodeState::Leader, 0),
                record("b", NodeState::Leaving, 3),
                record("c", NodeState::Leaving, 0),
            ],
            t,
        );
        let c = roster.update(&[record("a", NodeState::Leader, 0)], t);
        assert_eq!(c.left, ["b", "c"]);
        assert_eq!(c.stranded, [("b".to_string(), 3)]);
        assert!(c.unreachable.is_empty());
    }

    #[test]
    fn stable_needs_a_leader_and_every_node_settled() {
        let t = SystemTime::UNIX_EPOCH;
        let mut roster = Roster::default();
        roster.update(
            &[
                record("a", NodeState::Leader, 0),
                record("b", NodeState::Active, 0),
            ],
            t,
        );
        let nodes = roster.nodes();
        assert_eq!(
            cluster_state(None, &nodes, NodeState::Active),
            ClusterState::Forming
        );
        assert_eq!(
            cluster_state(Some("a"), &nodes, NodeState::Active),
            ClusterState::Stable
        );
        assert_eq!(
            cluster_state(Some("a"), &nodes, NodeState::Isolated),
            ClusterState::Degraded
        );
    }
}
