//! Leadership: one leader at a time, chosen by priority, each with a new term.
//!
//! The leader holds `{prefix}/leader` under its node lease, so the key goes when the
//! leader stops renewing. Taking it is one transaction: the key must be absent and the
//! term counter `{prefix}/term` unchanged since it was read; the leader key and the
//! term + 1 are written together. Two campaigns can therefore never get the same term,
//! and terms only grow.
//!
//! Who campaigns: when the key is absent, the best candidate among the live nodes
//! (highest priority, then lowest id) takes it at once; any other active node takes it
//! when it has stayed absent for a lease TTL (the best one may be stuck). A leader that
//! sees a candidate of strictly higher priority steps down for it.
//!
//! Fencing: [`Leadership::fence`] is the comparison every leader-only write carries:
//! the leader key still exists with the revision this leader created it at. A deposed
//! leader (its lease expired while it was paused, say) fails it, whatever it believes.

use super::member::{NodeRecord, NodeState};
use super::state::{revision_of, State, StateError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

/// What the leader key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub id: String,
    pub term: u64,
}

/// This node's hold on leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    /// The leader key's create revision: the fencing token.
    pub token: i64,
}

impl Leadership {
    /// The comparison that makes a write hold only while this node is still leader.
    pub fn fence(&self, prefix: &str) -> Compare {
        Compare::create_revision(leader_key(prefix), CompareOp::Equal, self.token)
    }
}

/// The leader as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The record, the key's create revision (the fencing token) and its lease.
    pub leader: Option<(LeaderRecord, i64, i64)>,
    /// The term counter and its mod revision (0 when it was never written).
    pub term: u64,
    pub term_revision: i64,
}

pub fn leader_key(prefix: &str) -> String {
    format!("{prefix}/leader")
}

fn term_key(prefix: &str) -> String {
    format!("{prefix}/term")
}

/// Reads the leader key and the term counter.
pub async fn read(state: &State, prefix: &str) -> Result<Current, StateError> {
    let txn = Txn::new().and_then([
        TxnOp::get(leader_key(prefix), None),
        TxnOp::get(term_key(prefix), None),
    ]);
    let resp = state.txn(txn).await?;
    let mut gets = resp.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    });
    let leader = gets.next().flatten().and_then(|kv| {
        let record = serde_json::from_slice::<LeaderRecord>(kv.value()).ok()?;
        Some((record, kv.create_revision(), kv.lease()))
    });
    let (term, term_revision) = match gets.next().flatten() {
        Some(kv) => (
            std::str::from_utf8(kv.value())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            kv.mod_revision(),
        ),
        None => (0, 0),
    };
    Ok(Current {
        leader,
        term,
        term_revision,
    })
}

/// Tries to become leader under `lease`, from what `current` read. `Ok(None)` when
/// someone else moved first.
pub async fn campaign(
    state: &State,
    prefix: &str,
    id: &str,
    lease: i64,
    current: &Current,
) -> Result<Option<Leadership>, StateError> {
    let term = current.term + 1;
    let record = serde_json::to_vec(&LeaderRecord {
        id: id.to_string(),
        term,
    })
    .unwrap_or_default();
    let term_unchanged = if current.term_revision == 0 {
        Compare::create_revision(term_key(prefix), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(term_key(prefix), CompareOp::Equal, current.term_revision)
    };
    let txn = Txn::new()
        .when([
            Compare::create_revision(leader_key(prefix), CompareOp::Equal, 0),
            term_unchanged,
        ])
        .and_then([
            TxnOp::put(
                leader_key(prefix),
                record,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(term_key(prefix), term.to_string(), None),
        ]);
    let resp = state.txn(txn).await?;
    Ok(resp.succeeded().then(|| Leadership {
        term,
        token: revision_of(resp.header()),
    }))
}

/// Gives leadership up: deletes the leader key if it is still this holder's.
pub async fn resign(state: &State, prefix: &str, held: Leadership) -> Result<(), StateError> {
    let txn = Txn::new()
        .when([held.fence(prefix)])
        .and_then([TxnOp::delete(leader_key(prefix), None)]);
    state.txn(txn).await?;
    Ok(())
}

/// May this record's node be elected now?
fn eligible(r: &NodeRecord) -> bool {
    r.candidate && matches!(r.state, NodeState::Active | NodeState::Leader)
}

/// Orders candidates: higher priority first, then lower id.
fn better(a: &NodeRecord, b: &NodeRecord) -> bool {
    (a.priority, std::cmp::Reverse(&a.id)) > (b.priority, std::cmp::Reverse(&b.id))
}

/// The node that should lead among `live`, if any may.
pub fn best(live: &[NodeRecord]) -> Option<&NodeRecord> {
    live.iter()
        .filter(|r| eligible(r))
        .fold(None, |best: Option<&NodeRecord>, r| match best {
            Some(b) if !better(r, b) => Some(b),
            _ => Some(r),
        })
}

/// Whether the leader `me` should step down: a candidate of strictly higher priority
/// is live.
pub fn outranked(me: &NodeRecord, live: &[NodeRecord]) -> bool {
    live.iter()
        .any(|r| r.id != me.id && eligible(r) && r.priority > me.priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, priority: u32, state: NodeState, candidate: bool) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            admin: String::new(),
            priority,
            version: String::new(),
            state,
            queue_depth: 0,
            candidate,
            updated_ms: 0,
            down: Vec::new(),
        }
    }

    #[test]
    fn the_highest_priority_active_candidate_leads_ties_by_id() {
        let live = [
            node("c", 100, NodeState::Active, true),
            node("a", 100, NodeState::Active, true),
            node("z", 500, NodeState::Joining, true),
            node("y", 400, NodeState::Active, false),
            node("x", 300, NodeState::Isolated, true),
        ];
        assert_eq!(best(&live).map(|r| r.id.as_str()), Some("a"));
        assert!(best(&live[2..3]).is_none());
        let me = node("a", 100, NodeState::Leader, true);
        assert!(!outranked(&me, &live), "equal priority does not take over");
        let higher = [me.clone(), node("b", 101, NodeState::Active, true)];
        assert!(outranked(&me, &higher));
        let resigned = [me.clone(), node("b", 101, NodeState::Active, false)];
        assert!(!outranked(&me, &resigned));
    }
}
