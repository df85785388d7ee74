//! Queues on leave (SPEC section 11): a node stopped with SIGTERM hands its queued
//! messages to its live peers before it exits; each message leaves its disk only once
//! a peer answered 202, which it does once the message is on its own disk.
//!
//! **Sender** ([`send::Sender`], run by `Cluster::run` once shutdown began). The node's
//! record says `leaving` and it gives up leadership first; its agent keeps renewing
//! the lease meanwhile, so peers see it leave, not vanish. The peers are the nodes the
//! last tick saw `active` or `leader`, other than this one. Queued messages are read in
//! acceptance order, in rounds of up to [`BATCH_RECORDS`] messages (and about
//! [`BATCH_BYTES`]) per peer, and spread over the peers: the messages of one routing
//! key all go to the same peer (a hash of the key), the others in turn. Each batch is
//! one `POST /cluster/handoff` on the peer's admin listener; on its 202 the batch is
//! removed here in one durable write. A peer that fails (no connection, a timeout,
//! 5xx, 503 because it is leaving too or its queue is off or full, 401 or 404) rests
//! for [`PEER_REST`] and its messages go to the others in the next round; messages a
//! peer refuses as malformed (400, 413) stay here. The delivery loop stops on shutdown
//! too: the messages its last deliveries hold are handed over once their outcome is
//! written (requeued), or not at all (delivered), and the rest of their routing key's
//! line waits for them. Dead letters stay on the node.
//!
//! **Bounded.** The hand-off ends when the queue is empty, when no live peer is left,
//! or after `[cluster] handoff_timeout_ms` (30 s by default; 0 hands nothing over).
//! What was not handed over stays on this disk for the next start, which delivers it;
//! the log says how many, and the record this node leaves behind carries that depth,
//! so the leader raises `stranded_messages` for it.
//!
//! **What is kept.** A message keeps its id (its status can be asked of the peer), its
//! acceptance time (`ttl_ms` counts from it), attempts, last error, client, request
//! id, forwarded headers, routing key and recipient; a client's `Idempotency-Key` is
//! filed on the peer, so a repeat sent there is a duplicate. The routing key order
//! holds among the messages one node handed over; messages of one key queued on both
//! nodes go out the receiver's current head first, then in acceptance order; a key
//! whose peer failed mid-way continues on another peer, without order across the two.
//! A batch whose answer was lost (the peer stored it, then the connection broke) may
//! be on two nodes: at least once, never lost. On this node the message and its
//! `Idempotency-Key` entry are gone after the hand-off.
//!
//! **Receiver** ([`receive`]): the route takes the admin token of the receiving node
//! (the nodes of one cluster share `server.admin_token`; the sender sends its own). It
//! refuses with 503 while this node is leaving itself (`node_leaving`), when its queue
//! is off (`queue_disabled`), cannot write (`queue_unavailable`) or has no room for the
//! batch (`queue_full`), so the sender tries another peer.
//!
//! **Wire format** (`application/vnd.switchyard.handoff`): a big-endian `u32` count,
//! then for each message a flags byte (bit 0: its client's key is filed for it), a
//! big-endian `u32` length and the stored record (`crate::queue::record`). A receiver reads records of its own version
//! and older: upgrade receivers first.

mod plan;
pub mod send;

use super::Cluster;
use crate::queue::record::{Record, Status};
use crate::queue::{Handed, Queue, QueueError};
use crate::reply;
use crate::server::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

pub use send::Sender;

pub const PATH: &str = "/cluster/handoff";
pub const CONTENT_TYPE: &str = "application/vnd.switchyard.handoff";
/// Messages per batch at most.
pub const BATCH_RECORDS: usize = 2_000;
/// A batch stops growing past this many bytes of records (it always holds one).
pub const BATCH_BYTES: usize = 4 << 20;
/// Messages in one request at most, as the receiver takes them.
const MAX_RECORDS: usize = 10_000;
/// How long a peer that failed a batch is left out.
pub const PEER_REST: Duration = Duration::from_secs(1);

/// Why a hand-off body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the batch is truncated")]
    Truncated,
    #[error("the batch holds more than {MAX_RECORDS} messages")]
    TooMany,
    #[error("a handed message is unreadable: {0}")]
    Record(&'static str),
    #[error("a handed message is not queued")]
    NotQueued,
    #[error("the batch has bytes after its last message")]
    Trailing,
}

/// The body of one batch.
pub fn encode(batch: &[Handed]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    for h in batch {
        let record = h.record.encode();
        out.push(u8::from(h.keyed));
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(&record);
    }
    out
}

/// Reads a batch: as many queued messages as it says (at most [`MAX_RECORDS`]), and
/// nothing after them.
pub fn decode(body: &[u8]) -> Result<Vec<Handed>, WireError> {
    let (count, mut body) = body.split_at_checked(4).ok_or(WireError::Truncated)?;
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if count > MAX_RECORDS {
        return Err(WireError::TooMany);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (head, rest) = body.split_at_checked(5).ok_or(WireError::Truncated)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (bytes, rest) = rest.split_at_checked(len).ok_or(WireError::Truncated)?;
        let record = Record::decode(bytes).map_err(WireError::Record)?;
        if record.status != Status::Queued {
            return Err(WireError::NotQueued);
        }
        out.push(Handed {
            record,
            keyed: head[0] & 1 == 1,
        });
        body = rest;
    }
    if !body.is_empty() {
        return Err(WireError::Trailing);
    }
    Ok(out)
}

/// The largest body [`receive`] reads: batches stop growing at [`BATCH_BYTES`], and
/// one message may be as large as `server.max_body_bytes` with its headers.
fn max_body(max_body_bytes: usize) -> usize {
    2 * BATCH_BYTES + max_body_bytes
}

/// `POST /cluster/handoff` (after the admin token was checked): takes a leaving peer's
/// batch over, and answers 202 `{"accepted", "known"}` once it is on disk.
pub async fn receive(
    cluster: &Cluster,
    queue: Option<&Arc<Queue>>,
    req: Request<Incoming>,
    server: &crate::config::ServerConfig,
) -> Response<Body> {
    if cluster.is_leaving() {
        return unavailable(
            "node_leaving",
            "this node is leaving the cluster: hand the messages to another",
        );
    }
    let Some(queue) = queue else {
        return unavailable("queue_disabled", "the queue is off (queue.enabled = false)");
    };
    if queue.state() != crate::queue::store::State::Open {
        return unavailable("queue_unavailable", "the queue cannot write to disk now");
    }
    let from = req
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(64)
        .collect::<String>();
    let deadline = crate::proxy::body::deadline(req.extensions(), server.read_timeout);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = max_body(server.max_body_bytes);
    let body = match crate::proxy::body::read(req.into_body(), declared, limit, || deadline).await {
        Ok(body) => body,
        Err(crate::proxy::body::BodyError::TooLarge) => {
            return reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a hand-off batch holds at most {limit} bytes"),
            )
        }
        Err(e) => return e.into_response(),
    };
    let batch = match decode(&body) {
        Ok(batch) => batch,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "bad_handoff", e.to_string()),
    };
    match queue.take_over(batch).await {
        Ok(taken) => {
            metrics::counter!("switchyard_cluster_handoff_messages_total", "direction" => "received")
                .increment(taken.accepted);
            tracing::info!(
                from = %from,
                accepted = taken.accepted,
                known = taken.known,
                "took over queued messages from a leaving node"
            );
            reply::json(StatusCode::ACCEPTED, &taken)
        }
        Err(QueueError::Full(max)) => unavailable(
            "queue_full",
            format!("the queue has no room for the batch (queue.max_messages = {max})"),
        ),
        Err(QueueError::Store(e)) => reply::queue_storage(&e),
    }
}

/// The header that names the sending node (for the receiver's log).
pub const NODE_HEADER: &str = "x-switchyard-node";

fn unavailable(code: &str, message: impl Into<String>) -> Response<Body> {
    reply::error(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn handed(n: u8, keyed: bool) -> Handed {
        Handed {
            record: Record {
                id: [n; 16],
                idempotency_key: format!("k{n}"),
                master: None,
                body: Bytes::from(vec![n; 10]),
                ..Record::test_full()
            },
            keyed,
        }
    }

    #[test]
    fn a_batch_round_trips_and_every_truncation_is_refused() {
        let batch = vec![handed(1, true), handed(2, false)];
        let body = encode(&batch);
        assert_eq!(decode(&body), Ok(batch));
        assert_eq!(decode(&encode(&[])), Ok(Vec::new()));
        for n in 0..body.len() {
            assert!(decode(&body[..n]).is_err(), "{n}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(WireError::Trailing));
    }

    #[test]
    fn only_queued_messages_and_a_bounded_count_are_taken() {
        let mut dead = handed(1, false);
        dead.record.status = Status::Dead;
        assert_eq!(decode(&encode(&[dead])), Err(WireError::NotQueued));
        let many: Vec<Handed> = (0..=MAX_RECORDS).map(|_| handed(1, false)).collect();
        assert_eq!(decode(&encode(&many)), Err(WireError::TooMany));
        let mut garbled = encode(&[handed(1, false)]);
        garbled[9] = 99;
        assert!(matches!(decode(&garbled), Err(WireError::Record(_))));
    }
}
