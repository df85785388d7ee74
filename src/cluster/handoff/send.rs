//! The leaving node's side of a hand-off: rounds of batches to the live peers until
//! the queue is empty, no peer is left, or the time is up (see the parent module).

use super::plan::{assign, batch_len, live_peers, Peer};
use super::{encode, Cluster, BATCH_BYTES, BATCH_RECORDS, CONTENT_TYPE, NODE_HEADER, PATH};
use crate::config::Endpoint;
use crate::control::Control;
use crate::pool::ConnPool;
use crate::queue::record::Id;
use crate::queue::{Handed, Queue};
use crate::server::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One batch may take this long at most (less when the hand-off ends sooner).
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for deliveries under way before looking again.
const DELIVERY_WAIT: Duration = Duration::from_millis(50);
/// A peer's answer is read up to this size.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Hands this node's queue to its peers.
pub struct Sender {
    queue: Arc<Queue>,
    control: Arc<Control>,
    pool: ConnPool,
}

/// How a hand-off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nothing queued is left (or there was nothing to hand over).
    Empty,
    /// `handoff_timeout_ms` is zero.
    Off,
    /// No peer was active.
    NoPeer,
    /// `handoff_timeout_ms` passed.
    TimedOut,
    /// This node's queue could not be read or written.
    StoreFailed,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "queue empty",
            Self::Off => "hand-off off (cluster.handoff_timeout_ms = 0)",
            Self::NoPeer => "no live peer",
            Self::TimedOut => "cluster.handoff_timeout_ms passed",
            Self::StoreFailed => "the queue's store failed",
        }
    }
}

/// What a hand-off did.
#[derive(Debug)]
pub struct Summary {
    pub ending: Ending,
    pub handed: u64,
    /// Queued messages left on this disk.
    pub left: u64,
    pub took: Duration,
    /// Messages each peer took.
    pub peers: BTreeMap<String, u64>,
}

/// How one peer's part of a round went.
enum Outcome {
    /// All of it is on the peer and gone from here.
    Done(u64),
    /// The peer failed after taking `done`; the rest stays here for another peer.
    Failed(u64, Vec<Handed>, String),
    /// The peer refused the rest as malformed: it stays here.
    Refused(u64, Vec<Handed>, String),
    /// The peer took a batch, but it could not be removed here.
    StoreFailed(u64, String),
}

impl Sender {
    pub fn new(queue: Arc<Queue>, control: Arc<Control>) -> Sender {
        metrics::describe_counter!(
            "switchyard_cluster_handoff_messages_total",
            "Queued messages handed to a peer by this node as it left (direction sent), \
             or taken over from a leaving peer (direction received)."
        );
        Sender {
            queue,
            control,
            pool: ConnPool::default(),
        }
    }

    /// Hands the queue over (see the parent module), logs how it went and returns it.
    pub async fn run(&self, cluster: &Cluster) -> Summary {
        let start = Instant::now();
        let mut peers = BTreeMap::new();
        let (ending, handed) = if self.queue.depth() == 0 {
            (Ending::Empty, 0)
        } else if cluster.config.handoff_timeout.is_zero() {
            (Ending::Off, 0)
        } else {
            self.rounds(cluster, start + cluster.config.handoff_timeout, &mut peers)
                .await
        };
        let summary = Summary {
            ending,
            handed,
            left: self.queue.depth(),
            took: start.elapsed(),
            peers,
        };
        let took_ms = summary.took.as_millis() as u64;
        if summary.left > 0 {
            tracing::warn!(
                handed = summary.handed,
                left = summary.left,
                took_ms,
                ending = ending.as_str(),
                "queued messages stay on this node's disk: the next start delivers them"
            );
        } else if summary.handed > 0 {
            tracing::info!(
                handed = summary.handed,
                took_ms,
                peers = ?summary.peers,
                "queued messages handed over to the peers"
            );
        }
        summary
    }

    async fn rounds(
        &self,
        cluster: &Cluster,
        deadline: Instant,
        per_peer: &mut BTreeMap<String, u64>,
    ) -> (Ending, u64) {
        let mut cursor: Option<Id> = None;
        let mut refused: HashSet<Id> = HashSet::new();
        let mut resting: HashMap<String, Instant> = HashMap::new();
        let mut handed = 0u64;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return (Ending::TimedOut, handed);
            }
            let live = live_peers(cluster);
            if live.is_empty() {
                return (Ending::NoPeer, handed);
            }
            let ready: Vec<Peer> = live
                .into_iter()
                .filter(|p| resting.get(&p.id).is_none_or(|until| *until <= now))
                .collect();
            if ready.is_empty() {
                let back = resting.values().min().copied().unwrap_or(now);
                tokio::time::sleep_until(back.min(deadline)).await;
                continue;
            }
            let read = self.queue.take_for_handoff(
                cursor,
                ready.len() * BATCH_RECORDS,
                ready.len() * BATCH_BYTES,
                |id| refused.contains(id),
            );
            let batch = match read {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e.detail(), "cannot read the queue to hand it over");
                    return (Ending::StoreFailed, handed);
                }
            };
            if batch.is_empty() {
                // From the start once more: messages given back lie behind the cursor.
                if cursor.take().is_some() {
                    continue;
                }
                if self.queue.in_delivery() == 0 {
                    return (Ending::Empty, handed);
                }
                tokio::time::sleep_until((now + DELIVERY_WAIT).min(deadline)).await;
                continue;
            }
            cursor = batch.last().map(|h| h.record.id);
            let parts = assign(batch, &ready);
            let sends = parts.into_iter().map(|(peer, part)| async move {
                let outcome = self.hand_to(cluster, &peer, part, deadline).await;
                (peer, outcome)
            });
            for (peer, outcome) in futures_util::future::join_all(sends).await {
                let done = match outcome {
                    Outcome::Done(n) => n,
                    Outcome::Failed(n, rest, why) => {
                        tracing::warn!(peer = %peer.id, error = %why, "a peer failed a hand-off batch: its messages go to another");
                        self.give_back(&rest);
                        resting.insert(peer.id.clone(), Instant::now() + super::PEER_REST);
                        cursor = None;
                        n
                    }
                    Outcome::Refused(n, rest, why) => {
                        tracing::error!(peer = %peer.id, error = %why, messages = rest.len(), "a peer refused handed messages: they stay on this node");
                        refused.extend(rest.iter().map(|h| h.record.id));
                        self.give_back(&rest);
                        n
                    }
                    Outcome::StoreFailed(n, why) => {
                        tracing::error!(peer = %peer.id, error = %why, "a batch the peer holds could not be removed here: it may be delivered twice after a restart");
                        handed += n;
                        *per_peer.entry(peer.id).or_default() += n;
                        return (Ending::StoreFailed, handed);
                    }
                };
                handed += done;
                if done > 0 {
                    *per_peer.entry(peer.id).or_default() += done;
                }
            }
        }
    }

    fn give_back(&self, rest: &[Handed]) {
        for h in rest {
            self.queue.untake(&h.record);
        }
    }

    /// Sends `part` to `peer` in batches, one after the other (their order is kept).
    async fn hand_to(
        &self,
        cluster: &Cluster,
        peer: &Peer,
        mut part: Vec<Handed>,
        deadline: Instant,
    ) -> Outcome {
        let mut done = 0;
        while !part.is_empty() {
            let rest = part.split_off(batch_len(&part));
            let batch = std::mem::replace(&mut part, rest);
            let until = (Instant::now() + BATCH_TIMEOUT).min(deadline);
            let sent = tokio::time::timeout_at(until, self.post(cluster, peer, &batch)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(Refusal::Malformed(why))) => {
                    part.splice(0..0, batch);
                    return Outcome::Refused(done, part, why);
                }
                Ok(Err(Refusal::Unavailable(why))) => {
                    part.splice(0..0, batch);
                    return Outcome::Failed(done, part, why);
                }
                Err(_) => {
                    part.splice(0..0, batch);
                    return Outcome::Failed(done, part, "no answer in time".into());
                }
            }
            let n = batch.len() as u64;
            let ids = batch.iter().map(|h| h.record.id).collect();
            if let Err(e) = self.queue.handed_off(ids).await {
                return Outcome::StoreFailed(done + n, e.detail());
            }
            metrics::counter!("switchyard_cluster_handoff_messages_total", "direction" => "sent")
                .increment(n);
            done += n;
        }
        Outcome::Done(done)
    }

    /// One batch to `peer`: Ok on its 202.
    async fn post(&self, cluster: &Cluster, peer: &Peer, batch: &[Handed]) -> Result<(), Refusal> {
        let table = self.control.table();
        let server = &table.config.server;
        let scheme = if server.admin_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let token = server.admin_token.clone();
        drop(table);
        let uri: Uri = format!("{scheme}://{}{PATH}", peer.admin)
            .parse()
            .map_err(|e| Refusal::Unavailable(format!("its admin address is unusable: {e}")))?;
        let endpoint = Endpoint::with_tls(&uri, None)
            .map_err(|e| Refusal::Unavailable(format!("its admin address is unusable: {e}")))?;
        let body = Bytes::from(encode(batch));
        let me = HeaderValue::from_str(cluster.node_id()).ok();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).ok();
        let build = || {
            let mut req = Request::new(Body::new(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = endpoint.path.clone();
            let headers = req.headers_mut();
            headers.insert(header::HOST, endpoint.host.clone());
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            if let Some(me) = &me {
                headers.insert(NODE_HEADER, me.clone());
            }
            if let (false, Some(bearer)) = (token.is_empty(), &bearer) {
                headers.insert(header::AUTHORIZATION, bearer.clone());
            }
            req
        };
        let (conn, resp) = self
            .pool
            .send(&endpoint, build)
            .await
            .map_err(|e| Refusal::Unavailable(crate::util::error_chain(&e)))?;
        let status = resp.status();
        let answer = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        let Ok(answer) = answer else {
            return Err(Refusal::Unavailable(format!(
                "answered {status}, and its answer could not be read"
            )));
        };
        conn.release();
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&answer.to_bytes()).into_owned();
        let why = format!(
            "answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        // The batch itself is at fault: no peer would take it. Anything else (a
        // wrong token, a route it does not have, 5xx) is this peer's.
        Err(match status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Refusal::Malformed(why),
            _ => Refusal::Unavailable(why),
        })
    }
}

/// Why a peer did not take a batch.
enum Refusal {
    /// The batch itself is at fault (4xx): no peer would take it.
    Malformed(String),
    /// The peer could not take it now: another may.
    Unavailable(String),
}
