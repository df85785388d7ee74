//! Idempotency keys shared by every node of a cluster (SPEC section 11): a key accepted
//! on one node is a duplicate on every node within `queue.idempotency_window_ms`.
//!
//! Each (client-scoped) key is one etcd record under `{prefix}{sha256 of the key}`,
//! created by a put-if-absent transaction: of any number of nodes claiming a key at
//! once, exactly one is told [`Claim::First`]; every other claim, on any node, gets
//! [`Claim::Duplicate`] with the first message's id, node and, once that node has
//! [recorded](SharedKeys::record) it, its answer. A duplicate whose first message is
//! still in flight watches that one key until the answer is recorded or the caller's
//! `wait` runs out.
//!
//! Guarantees and their limits:
//! - **Window.** A record counts for `window` from its claim, measured on the claiming
//!   node's wall clock (nodes' clocks should agree to well under a second). Records
//!   live under leases shared by time bucket: one lease per node per bucket of
//!   `window / 8` (between 1 s and 1 h), granted by the first claim in the bucket and
//!   reused by every later one, with a TTL of the window plus one bucket. A record thus
//!   outlives its window by at most one bucket, and old buckets' leases simply expire;
//!   a record found past its window is taken over as a first use. A window lengthened
//!   by a reload applies to keys claimed after it.
//! - **Answers.** The stored answer keeps the status, content type and master, and the
//!   body when it is at most [`MAX_ANSWER_BODY`] bytes; a larger body is not kept and a
//!   duplicate then gets the first message's id and status with an empty body.
//! - **A first that never settles.** A claim released (no master took the message)
//!   deletes the record, and waiting duplicates claim the key themselves. A record
//!   still pending `in_flight` plus two seconds after its claim (its node died, or could
//!   not record the outcome) is taken over by the next claim: that message is sent
//!   again, which may duplicate one its node delivered without recording.
//! - **etcd unreachable.** Every call is bounded by the claim timeout given at
//!   [`SharedKeys::connect`]; a failure is counted in
//!   `switchyard_cluster_etcd_errors_total`, logged, and returned as
//!   [`StateError::Unreachable`]; for the next second claims fail at once without
//!   asking etcd, then one claim at a time asks again until etcd answers. The caller
//!   then falls back to its node-local idempotency: keys stay unique per node but not
//!   across nodes while etcd is away.
//! - **Privacy.** Keys are stored hashed; answers (bodies included) are stored as
//!   they came, readable by anyone who can read the prefix in etcd.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};

use super::StateError;
use breaker::{Admit, Breaker};
use record::{decode, encode};
pub use record::{Answer, Record};

mod breaker;
mod record;

/// A sensible bound on each etcd call of a claim: what a slow etcd may add to a send.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_millis(500);
/// Answer bodies up to this size are kept for duplicates on other nodes.
pub const MAX_ANSWER_BODY: usize = 16 * 1024;
/// Buckets per window, so that a record outlives its window by at most 1/8 of it.
const BUCKETS_PER_WINDOW: u32 = 8;
const MIN_BUCKET: Duration = Duration::from_secs(1);
const MAX_BUCKET: Duration = Duration::from_secs(3600);
/// Added to `in_flight` before a pending record is taken over: clocks differ a little.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);
/// Rounds of claim, watch and claim again before a claim gives up waiting.
const MAX_ROUNDS: u32 = 16;

/// How long a claim's key counts, and how long a duplicate waits for its first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `queue.idempotency_window_ms`, read for each claim (reloads change it).
    pub window: Duration,
    /// How long a duplicate waits for its first message's answer.
    pub wait: Duration,
    /// The longest a first message can take to an outcome (all its tries): a pending
    /// record older than this (plus a margin) is taken over.
    pub in_flight: Duration,
}

/// The outcome of [`SharedKeys::claim`].
#[derive(Debug)]
pub enum Claim {
    /// First use on any node: send the message, then [`record`](SharedKeys::record)
    /// its answer (or [`release`](SharedKeys::release) the key if nobody took it).
    First(Held),
    /// A repeat: the first message's record. Its `answer` is `None` when the first
    /// message was still in flight when the wait ran out.
    Duplicate(Record),
}

/// A key this node claimed first.
#[derive(Debug, Clone)]
pub struct Held {
    path: String,
    /// The revision of the claim: the record is only changed while it is still ours.
    revision: i64,
    lease: i64,
    record: Record,
}

impl Held {
    /// The etcd key of the record.
    pub fn path(&self) -> &str {
        &self.path
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    len_ms: u64,
    lease: i64,
}

/// Shared idempotency keys over one etcd cluster. One per node; cheap to share
/// behind an `Arc`.
pub struct SharedKeys {
    client: Client,
    prefix: String,
    node: String,
    timeout: Duration,
    bucket: Mutex<Option<Bucket>>,
    granting: tokio::sync::Mutex<()>,
    leases_granted: AtomicU64,
    /// Whether claims ask etcd, after failures.
    breaker: Breaker,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeys")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SharedKeys {
    /// A handle for node `node`, keeping records under `prefix` (for example
    /// `{cluster prefix}/keys/`) on the etcd cluster behind `endpoints`. It has its
    /// own connection, so claims do not queue behind membership traffic; the
    /// connection is made lazily, so this succeeds while etcd is down. `timeout`
    /// bounds every etcd call of a claim (see [`DEFAULT_CLAIM_TIMEOUT`]).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<SharedKeys, StateError> {
        let options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(SharedKeys {
            client,
            prefix: prefix.to_string(),
            node: node.to_string(),
            timeout,
            bucket: Mutex::new(None),
            granting: tokio::sync::Mutex::new(()),
            leases_granted: AtomicU64::new(0),
            breaker: Breaker::default(),
        })
    }

    /// The etcd key of `key`'s record: the prefix and the SHA-256 of the key in hex,
    /// so that any byte string is a valid key of bounded length.
    pub fn path(&self, key: &str) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut path = String::with_capacity(self.prefix.len() + 64);
        path.push_str(&self.prefix);
        for b in digest.as_ref() {
            // Writing to a String cannot fail.
            let _ = write!(path, "{b:02x}");
        }
        path
    }

    /// How many bucket leases this handle has granted.
    pub fn leases_granted(&self) -> u64 {
        self.leases_granted.load(Relaxed)
    }

    /// Claims `key` for message `id`: [`Claim::First`] for exactly one claimant on
    /// any node, [`Claim::Duplicate`] for the others, which wait up to `limits.wait`
    /// for the first message's answer. At most a few round trips to etcd when the key
    /// is free or answered. An error means etcd could not be asked (see the module
    /// doc): the caller falls back to its own node's idempotency.
    pub async fn claim(&self, key: &str, id: &str, limits: Limits) -> Result<Claim, StateError> {
        let probe = match self.breaker.admit(crate::util::unix_ms()) {
            Admit::Skip => {
                return Err(StateError::Unreachable(
                    "etcd failed within the last second; not asked again yet".into(),
                ))
            }
            Admit::Ask => None,
            Admit::Probe(probe) => Some(probe),
        };
        let result = self.claim_in_etcd(key, id, limits).await;
        match &result {
            Err(e) => self.failed("claim", e),
            Ok(_) => {
                if let Some(probe) = probe {
                    probe.succeeded();
                }
            }
        }
        result
    }

    /// Records the first message's answer for duplicates on every node. `Ok(false)`
    /// when the record is no longer this claim's (taken over or expired).
    pub async fn record(&self, held: &Held, answer: &Answer) -> Result<bool, StateError> {
        let mut record = held.record.clone();
        let mut answer = answer.clone();
        if answer
            .body
            .as_ref()
            .is_some_and(|b| b.len() > MAX_ANSWER_BODY)
        {
            answer.body = None;
        }
        record.body_kept = answer.body.is_some();
        record.answer = Some(answer);
        let value = encode(&record);
        let options = PutOptions::new().with_lease(held.lease);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                held.path.as_str(),
                CompareOp::Equal,
                held.revision,
            )])
            .and_then([TxnOp::put(held.path.as_str(), value, Some(options))]);
        let result = self.txn(txn).await.map(|r| r.succeeded());
        if let Err(e) = &result {
            self.failed("record", e);
        }
        result
    }

    /// Frees a key whose message nobody took: deletes the record if it is still this
    /// claim's, so the next claim (a waiting duplicate's included) is a first.
    pub async fn release(&self, held: &Held) -> Result<bool, StateError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                held.path.as_str(),
                CompareOp::Equal,
                held.revision,
            )])
            .and_then([TxnOp::delete(held.path.as_str(), None)]);
        let result = self.txn(txn).await.map(|r| r.succeeded());
        if let Err(e) = &result {
            self.failed("release", e);
        }
        result
    }

    async fn claim_in_etcd(
        &self,
        key: &str,
        id: &str,
        limits: Limits,
    ) -> Result<Claim, StateError> {
        let path = self.path(key);
        let deadline = tokio::time::Instant::now() + limits.wait;
        let mut expected = None;
        let mut lease_retried = false;
        // The last first seen in flight: a claim that gives up is its duplicate.
        let mut seen = None;
        for _ in 0..MAX_ROUNDS {
            let lease = self.lease(limits.window).await?;
            let record = Record {
                id: id.to_string(),
                node: self.node.clone(),
                at_ms: crate::util::unix_ms(),
                answer: None,
                body_kept: false,
            };
            let attempt = self.put_if(&path, expected, encode(&record), lease).await;
            let current = match attempt {
                Ok(Ok(revision)) => {
                    return Ok(Claim::First(Held {
                        path,
                        revision,
                        lease,
                        record,
                    }))
                }
                Ok(Err(current)) => current,
                // The bucket's lease is gone (revoked, or expired while unused): take a
                // fresh one, once.
                Err(StateError::LeaseLost(_)) if !lease_retried => {
                    lease_retried = true;
                    self.forget_lease(lease);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((revision, value)) = current else {
                // Deleted between the compare and the read: claim again.
                expected = None;
                continue;
            };
            let now = crate::util::unix_ms();
            let Some(first) = decode(&value) else {
                // Not a record this version can read: treat it as stale.
                expected = Some(revision);
                continue;
            };
            let age = Duration::from_millis(now.saturating_sub(first.at_ms));
            if age >= limits.window
                || (first.answer.is_none() && age >= limits.in_flight + CLOCK_MARGIN)
            {
                // Past its window, or a first that never settled: take it over.
                expected = Some(revision);
                continue;
            }
            if first.answer.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(Claim::Duplicate(first));
            }
            // In flight elsewhere: wait for the key to change, then look again. A
            // watch that fails leaves a known first in flight: still a duplicate.
            match self.changed(&path, revision, deadline).await {
                Ok(true) => {}
                Ok(false) => return Ok(Claim::Duplicate(first)),
                Err(e) => {
                    self.failed("watch", &e);
                    return Ok(Claim::Duplicate(first));
                }
            }
            expected = None;
            seen = Some(first);
        }
        match seen {
            Some(first) => Ok(Claim::Duplicate(first)),
            None => Err(StateError::Etcd(format!(
                "key record {path} kept changing; gave up after {MAX_ROUNDS} rounds"
            ))),
        }
    }

    /// Writes `value` under `lease` if the key is absent (`expected` None) or still at
    /// revision `expected`. `Ok(Ok(revision))` when written, else the key's revision
    /// and value now (`None` when absent).
    async fn put_if(
        &self,
        path: &str,
        expected: Option<i64>,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Result<i64, Option<(i64, Vec<u8>)>>, StateError> {
        let cmp = match expected {
            Some(rev) => Compare::mod_revision(path, CompareOp::Equal, rev),
            None => Compare::create_revision(path, CompareOp::Equal, 0),
        };
        let options = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(path, value, Some(options))])
            .or_else([TxnOp::get(path, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map_or(0, |h| h.revision())));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.mod_revision(), kv.value().to_vec())),
            _ => None,
        });
        Ok(Err(current))
    }

    /// Waits until the key changes after `revision` (true) or `deadline` passes (false).
    async fn changed(
        &self,
        path: &str,
        revision: i64,
        deadline: tokio::time::Instant,
    ) -> Result<bool, StateError> {
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = self
            .bounded(self.client.clone().watch(path, Some(options)))
            .await?;
        loop {
            let message = match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => return Ok(false),
                Ok(message) => message?,
            };
            let Some(resp) = message else {
                return Err(StateError::Unreachable("watch stream closed".into()));
            };
            // A compacted start revision cancels the watch: read the key again.
            if resp.canceled() {
                return Ok(true);
            }
            let changed = resp
                .events()
                .iter()
                .any(|e| matches!(e.event_type(), EventType::Put | EventType::Delete));
            if changed {
                return Ok(true);
            }
        }
    }

    /// The current bucket's lease, granting it if this is the bucket's first claim.
    async fn lease(&self, window: Duration) -> Result<i64, StateError> {
        let len = (window / BUCKETS_PER_WINDOW).clamp(MIN_BUCKET, MAX_BUCKET);
        let len_ms = len.as_millis() as u64;
        let index = crate::util::unix_ms() / len_ms;
        let cached = |b: &Option<Bucket>| {
            b.filter(|b| b.index == index && b.len_ms == len_ms)
                .map(|b| b.lease)
        };
        if let Some(lease) = cached(&self.bucket.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(lease);
        }
        let _granting = self.granting.lock().await;
        if let Some(lease) = cached(&self.bucket.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(lease);
        }
        // A record claimed at the very end of the bucket still lives `window` after.
        let ttl = (window + len).as_secs() as i64 + 1;
        let lease = self
            .bounded(self.client.clone().lease_grant(ttl, None))
            .await?
            .id();
        self.leases_granted.fetch_add(1, Relaxed);
        *self.bucket.lock().unwrap_or_else(|p| p.into_inner()) = Some(Bucket {
            index,
            len_ms,
            lease,
        });
        Ok(lease)
    }

    fn forget_lease(&self, lease: i64) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if bucket.is_some_and(|b| b.lease == lease) {
            *bucket = None;
        }
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StateError> {
        self.bounded(self.client.clone().txn(txn)).await
    }

    /// One etcd call, bounded by the claim timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(StateError::from),
            Err(_) => Err(StateError::Unreachable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Counts and logs a failed call; after an unreachable etcd, claims skip it for a
    /// while (see [`breaker`]).
    fn failed(&self, what: &'static str, e: &StateError) {
        metrics::counter!("switchyard_cluster_etcd_errors_total").increment(1);
        if matches!(e, StateError::Unreachable(_)) {
            self.breaker.failed(crate::util::unix_ms());
        }
        tracing::warn!(
            call = what,
            error = %e,
            "shared idempotency keys: etcd call failed; this node's own keys apply"
        );
    }
}
