//! The persistent queue (SPEC section 4): messages that cannot go out now wait on disk
//! and are delivered later by `crate::proxy::delivery`.
//!
//! A message is accepted ([`Queue::enqueue`] returns `Ok`, and only then the client
//! gets its 202) once it is durable in the [`store`]. Each message is handed to at most
//! one delivery at a time; the outcome is written back before the next attempt.
//!
//! May call: `config`, `clients` (the anonymous label), `telemetry` (the access log
//! line of a dead letter).

mod handoff;
pub mod record;
pub mod store;

use crate::config::QueueConfig;
use bytes::Bytes;
pub use handoff::{Handed, TakenOver};
use rand::Rng;
use record::{Id, MasterAnswer, Record, Status};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Op, State, Store, StoreError};
use tokio::sync::Notify;

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({0} messages)")]
    Full(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A message to queue.
#[derive(Debug)]
pub struct NewMessage {
    pub id: uuid::Uuid,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub idempotency_key: String,
    /// The `Idempotency-Key` came from the client: it is filed so that repeats find
    /// this message (a key switchyard made up can never repeat).
    pub client_key: bool,
    pub region: Option<String>,
    /// The routing key, for per-key ordering.
    pub routing_key: Option<String>,
    /// The error that sent it here, if any.
    pub last_error: Option<String>,
    /// Attempts already made before it was queued.
    pub attempts: u32,
    /// The client headers passed on to masters (see [`Record::forward_headers`]).
    pub forward_headers: Vec<(String, String)>,
    /// Who sent it, and its request id (see [`Record::client`]).
    pub client: String,
    pub request_id: Option<String>,
    /// The sticky recipient (see [`Record::recipient`]).
    pub recipient: Option<String>,
}

impl NewMessage {
    fn into_record(self, status: Status, now: u64) -> Record {
        Record {
            id: *self.id.as_bytes(),
            status,
            created_ms: now,
            updated_ms: now,
            due_ms: now,
            attempts: self.attempts,
            content_type: self.content_type,
            idempotency_key: self.idempotency_key,
            region: self.region,
            routing_key: self.routing_key,
            master: None,
            last_error: self.last_error,
            body: self.body,
            answer: None,
            forward_headers: self.forward_headers,
            client: self.client,
            request_id: self.request_id,
            recipient: self.recipient,
        }
    }
}

#[derive(Debug)]
pub struct Queue {
    store: Store,
    depth: AtomicU64,
    dead: AtomicU64,
    max: u64,
    /// Messages handed to a delivery and not yet written back.
    taken: Mutex<HashSet<Id>>,
    /// No queued message is due before this (ms): where the due scan starts.
    cursor: AtomicU64,
    /// Due times being written right now (they are not visible to a scan yet), so the
    /// cursor never passes them. Also hands out the queue's clock, which never goes
    /// backwards.
    pending: Mutex<Pending>,
    /// Outcomes of taken messages that could not be written yet; their messages stay
    /// in `taken` until they are (see `Queue::write_back`).
    kept: Mutex<HashMap<Id, Outcome>>,
    /// When [`Queue::retry_kept`] last started a retry (ms).
    last_retry: AtomicU64,
    /// Woken when a message is queued.
    pub arrived: Notify,
    /// Held while messages a leaving peer handed over are checked and written, so
    /// that two hand-offs of one message write it once (see `handoff`).
    taking_over: tokio::sync::Mutex<()>,
}

/// How often kept outcomes are tried again at most.
const RETRY_KEPT_EVERY: Duration = Duration::from_millis(250);

/// A taken message's outcome, to be written.
#[derive(Debug)]
struct Outcome {
    /// The record as the outcome leaves it.
    record: Record,
    /// Its due time while it was queued: its `due` entry.
    old_due: u64,
    effect: Effect,
}

/// What an outcome changes once written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Delivered,
    /// Back in the queue, due later.
    Requeued,
    Dead,
}

impl Queue {
    /// Opens the store at `queue.path` and counts what it holds.
    pub fn open(config: &QueueConfig) -> Result<Queue, StoreError> {
        let store = Store::open(&config.path)?;
        let depth = store.count_queued()?;
        let dead = store.count_dead()?;
        if depth > 0 {
            tracing::info!(queued = depth, dead, "queue recovered");
        }
        Ok(Queue {
            store,
            depth: AtomicU64::new(depth),
            dead: AtomicU64::new(dead),
            max: config.max_messages,
            taken: Mutex::new(HashSet::new()),
            cursor: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            kept: Mutex::new(HashMap::new()),
            last_retry: AtomicU64::new(0),
            arrived: Notify::new(),
            taking_over: tokio::sync::Mutex::new(()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a write of a due key at `now + delay` until [`Queue::end_due`].
    fn register_due(&self, delay: Duration) -> u64 {
        let mut p = self.pending();
        let due = p.now() + delay.as_millis() as u64;
        *p.writing.entry(due).or_default() += 1;
        due
    }

    /// Registers a write of a due key at `due` until [`Queue::end_due`].
    fn register_at(&self, due: u64) -> u64 {
        *self.pending().writing.entry(due).or_default() += 1;
        due
    }

    fn end_due(&self, due: u64) {
        let mut p = self.pending();
        if let std::collections::btree_map::Entry::Occupied(mut e) = p.writing.entry(due) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Relaxed)
    }

    /// Writes to disk that failed since the queue was opened (see [`store`]).
    pub fn failed_writes(&self) -> u64 {
        self.store.failed_writes()
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead.load(Relaxed)
    }

    /// Runs a store write to its end in a task of its own, then `settle` with its
    /// outcome. A client that hangs up cancels its request's future; the write may
    /// land all the same, and the counters must follow what is on disk.
    async fn write_then(
        self: &Arc<Self>,
        ops: Vec<Op>,
        settle: impl FnOnce(&Queue, &Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let queue = self.clone();
        tokio::spawn(async move {
            let written = queue.store.write(ops).await;
            settle(&queue, &written);
            written
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::failed(format!("the write was lost: {e}"))))
    }

    /// Persists `msg` for delivery now; returns once it is on disk.
    pub async fn enqueue(self: &Arc<Self>, msg: NewMessage) -> Result<(), QueueError> {
        self.enqueue_then(msg, |_| ()).await
    }

    /// [`Queue::enqueue`], then `then(written)` once the write has ended, whether or
    /// not the caller is still waiting for it.
    pub async fn enqueue_then(
        self: &Arc<Self>,
        msg: NewMessage,
        then: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), QueueError> {
        let remember_key = msg.client_key;
        let make = |now| msg.into_record(Status::Queued, now);
        self.admit(remember_key, false, make, then).await?;
        metrics::counter!("switchyard_queue_enqueued_total").increment(1);
        Ok(())
    }

    /// Writes a queued record, due now (`make` gets that time), counting it in the
    /// depth unless the queue is full; `then` as for [`Queue::enqueue_then`].
    /// `revive`: the record is a dead letter, queued again.
    async fn admit(
        self: &Arc<Self>,
        remember_key: bool,
        revive: bool,
        make: impl FnOnce(u64) -> Record,
        then: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), QueueError> {
        if self.depth.fetch_add(1, Relaxed) >= self.max {
            self.depth.fetch_sub(1, Relaxed);
            then(false);
            return Err(QueueError::Full(self.max));
        }
        let due = self.register_due(Duration::ZERO);
        let record = make(due);
        let mut ops = Vec::with_capacity(2);
        if revive {
            ops.push(Op::LeaveDead { id: record.id });
        }
        ops.push(Op::put_new(record, remember_key));
        self.write_then(ops, move |queue, written| {
            queue.end_due(due);
            match written {
                Ok(()) => {
                    if revive {
                        queue.dead.fetch_sub(1, Relaxed);
                    }
                    queue.arrived.notify_one();
                }
                Err(_) => {
                    queue.depth.fetch_sub(1, Relaxed);
                }
            }
            then(written.is_ok());
        })
        .await?;
        Ok(())
    }

    /// The message as it stands: a kept outcome (see `Queue::write_back`) before
    /// what the store holds.
    pub fn get(&self, id: &uuid::Uuid) -> Result<Option<Record>, StoreError> {
        if let Some(kept) = self.kept().get(id.as_bytes()) {
            return Ok(Some(kept.record.clone()));
        }
        self.store.get(id.as_bytes())
    }

    /// Up to `limit` queued messages due now that no delivery holds, marked as taken.
    pub fn take_due(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let (now, lowest_pending) = {
            let mut p = self.pending();
            (p.now(), p.writing.keys().next().copied())
        };
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let from = self.cursor.load(Relaxed);
        // The held messages come first among the due ones; read past them.
        let due = self.store.due(from, now, limit + taken.len())?;
        let floor = due.first().map_or(now, |(at, _)| *at);
        self.cursor
            .store(floor.min(lowest_pending.unwrap_or(u64::MAX)), Relaxed);
        let mut out = Vec::new();
        for (_, id) in due {
            if out.len() >= limit || taken.contains(&id) {
                continue;
            }
            // Per-key order needs no check here: only the head of a routing key's
            // line is ever due (see `store`).
            if let Some(record) = self.store.get(&id)? {
                if record.status == Status::Queued {
                    taken.insert(id);
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// Whether messages with routing key `key` are waiting: a new one must then queue
    /// behind them.
    pub fn has_waiting(&self, key: &str) -> Result<bool, StoreError> {
        self.store.key_has_waiting(key)
    }

    /// A message that stays at its old due time (a write back failed, or it was given
    /// back untouched) must be seen by the next scan.
    fn rewind(&self, due: u64) {
        self.cursor.fetch_min(due, Relaxed);
    }

    /// Scans the whole due index again from the start: a safety net against a wall
    /// clock that jumped backwards.
    pub fn rescan(&self) {
        self.cursor.store(0, Relaxed);
    }

    fn release(&self, id: &Id) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The message reached a master. Should the outcome not be written, it is kept
    /// (see `Queue::write_back`): the message is not delivered again.
    pub async fn delivered(
        self: &Arc<Self>,
        mut record: Record,
        master: &str,
    ) -> Result<(), StoreError> {
        let old_due = record.due_ms;
        record.status = Status::Delivered;
        record.attempts += 1;
        record.master = Some(master.to_string());
        record.updated_ms = crate::util::unix_ms();
        // Delivered: the body is no longer needed; the record stays for its status.
        record.body = Bytes::new();
        let outcome = Outcome {
            record,
            old_due,
            effect: Effect::Delivered,
        };
        self.write_back(outcome, None).await
    }

    /// Writes a taken message's outcome, through [`Queue::write_then`]; once it is on
    /// disk the counts follow and the message is let go. A message that leaves its
    /// routing key's line makes the next one due now. `registered`: the new due time
    /// the record got from [`Queue::register_due`], if any.
    ///
    /// When the write fails, the outcome is kept in memory and the message stays
    /// taken: no scan hands it out again (a delivered message would go out twice).
    /// [`Queue::retry_kept`] writes it again once the store works.
    async fn write_back(
        self: &Arc<Self>,
        outcome: Outcome,
        registered: Option<u64>,
    ) -> Result<(), StoreError> {
        let record = &outcome.record;
        let next = (record.status != Status::Queued && record.routing_key.is_some())
            .then(|| self.register_due(Duration::ZERO));
        let ops = vec![Op::Put {
            record: Box::new(record.clone()),
            old_due: Some(outcome.old_due),
            next_due: next.unwrap_or(0),
            remember_key: false,
        }];
        self.write_then(ops, move |queue, written| {
            for due in [registered, next].into_iter().flatten() {
                queue.end_due(due);
            }
            match written {
                Ok(()) => queue.settle(outcome),
                Err(e) => queue.keep(outcome, e),
            }
        })
        .await
    }

    /// An outcome is on disk: the counts follow, and the message is let go.
    fn settle(&self, outcome: Outcome) {
        match outcome.effect {
            Effect::Delivered => {
                self.depth.fetch_sub(1, Relaxed);
                metrics::counter!("switchyard_queue_delivered_total").increment(1);
            }
            Effect::Dead => {
                self.depth.fetch_sub(1, Relaxed);
                self.dead.fetch_add(1, Relaxed);
                metrics::counter!("switchyard_queue_dead_total").increment(1);
            }
            // A kept outcome written late may be due before the scan's start.
            Effect::Requeued => self.rewind(outcome.record.due_ms),
        }
        self.release(&outcome.record.id);
    }

    /// An outcome could not be written: kept, its message still taken.
    fn keep(&self, outcome: Outcome, error: &StoreError) {
        let id = outcome.record.id;
        tracing::warn!(
            message_id = %uuid::Uuid::from_bytes(id),
            outcome = outcome.record.status.as_str(),
            error = %error.detail(),
            "a delivery outcome could not be written; it is kept and written once the store works"
        );
        self.kept().insert(id, outcome);
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Outcome>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivery outcomes kept in memory because they could not be written yet.
    pub fn kept_outcomes(&self) -> usize {
        self.kept().len()
    }

    /// Whether the store can write now.
    pub fn state(&self) -> State {
        self.store.state()
    }

    /// Writes the kept outcomes again, in a task of its own, unless a retry began
    /// less than `RETRY_KEPT_EVERY` ago, none is kept, or the store cannot write
    /// now. Called by the delivery loop on each turn.
    pub fn retry_kept(self: &Arc<Self>) {
        if self.kept_outcomes() == 0 || self.state() != State::Open {
            return;
        }
        let now = crate::util::unix_ms();
        let last = self.last_retry.load(Relaxed);
        if now.saturating_sub(last) < RETRY_KEPT_EVERY.as_millis() as u64
            || self
                .last_retry
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move { queue.write_kept().await });
    }

    /// Writes every kept outcome again, and returns once each has been tried; those
    /// that fail again are kept again.
    pub async fn write_kept(self: &Arc<Self>) {
        let kept: Vec<Outcome> = self.kept().drain().map(|(_, o)| o).collect();
        let mut writes = tokio::task::JoinSet::new();
        for outcome in kept {
            let queue = self.clone();
            let registered = (outcome.effect == Effect::Requeued)
                .then(|| queue.register_at(outcome.record.due_ms));
            writes.spawn(async move { queue.write_back(outcome, registered).await });
        }
        while writes.join_next().await.is_some() {}
    }

    /// The attempt failed (`attempted`: a master was tried; otherwise none was
    /// eligible, which counts only against the TTL). Schedules the next attempt with
    /// exponential backoff and jitter, or makes it a dead letter.
    pub async fn failed(
        self: &Arc<Self>,
        record: Record,
        error: String,
        attempted: bool,
        config: &QueueConfig,
    ) -> Result<(), StoreError> {
        let delay = backoff(record.attempts + u32::from(attempted), attempted, config);
        self.requeue(record, error, attempted, delay, config).await
    }

    /// No eligible master had budget for it (SPEC section 10): it waits, without an
    /// attempt counted, until `wait` from now, when budget frees (at least 1 ms, so
    /// that the delivery loop never spins on it). Counts against the TTL only.
    pub async fn wait_budget(
        self: &Arc<Self>,
        record: Record,
        wait: Duration,
        config: &QueueConfig,
    ) -> Result<(), StoreError> {
        let error = record
            .last_error
            .clone()
            .unwrap_or_else(|| "waiting for a master's sending budget".to_string());
        let wait = wait.max(Duration::from_millis(1));
        self.requeue(record, error, false, wait, config).await
    }

    /// Puts a message back, due after `delay`, or makes it a dead letter.
    async fn requeue(
        self: &Arc<Self>,
        mut record: Record,
        error: String,
        attempted: bool,
        delay: Duration,
        config: &QueueConfig,
    ) -> Result<(), StoreError> {
        let now = self.pending().now();
        let old_due = record.due_ms;
        if attempted {
            record.attempts += 1;
        }
        record.last_error = Some(error);
        record.updated_ms = now;
        let expired = now.saturating_sub(record.created_ms) >= config.ttl.as_millis() as u64;
        let dead = record.attempts >= config.max_attempts || expired;
        let registered = if dead {
            record.status = Status::Dead;
            tracing::warn!(
                message_id = %record.uuid(),
                attempts = record.attempts,
                expired,
                reason = record.last_error.as_deref().unwrap_or_default(),
                "a message became a dead letter"
            );
            crate::telemetry::access::log_record(&record, 0);
            None
        } else {
            let due = self.register_due(delay);
            record.due_ms = due;
            Some(due)
        };
        let effect = if dead { Effect::Dead } else { Effect::Requeued };
        let outcome = Outcome {
            record,
            old_due,
            effect,
        };
        self.write_back(outcome, registered).await
    }

    /// Files a message `master` took at once, with its `answer`, for repeats of a
    /// client's `Idempotency-Key` and for `GET /v1/messages/{id}`.
    pub async fn remember(
        &self,
        msg: NewMessage,
        master: &str,
        answer: MasterAnswer,
    ) -> Result<(), StoreError> {
        let remember_key = msg.client_key;
        let record = Record {
            master: Some(master.to_string()),
            // Only the answer is replayed; the message itself is not kept.
            body: Bytes::new(),
            answer: Some(answer),
            forward_headers: Vec::new(),
            ..msg.into_record(Status::Delivered, crate::util::unix_ms())
        };
        self.store
            .write(vec![Op::put_new(record, remember_key)])
            .await
    }

    /// The message that first carried the client's `Idempotency-Key` `key`, if it
    /// was accepted less than `window` ago.
    pub fn first_with_key(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<Option<Record>, StoreError> {
        match self.store.first_use(key)? {
            Some(first)
                if crate::util::unix_ms().saturating_sub(first.at_ms)
                    < window.as_millis() as u64 =>
            {
                self.store.get(&first.id)
            }
            _ => Ok(None),
        }
    }

    /// Forgets delivered records (and the idempotency keys that name them) delivered
    /// more than `window` ago, a batch at a time. Returns how many.
    pub async fn sweep(&self, window: Duration) -> Result<u64, StoreError> {
        const BATCH: usize = 1024;
        let until = crate::util::unix_ms().saturating_sub(window.as_millis() as u64);
        let mut swept = 0;
        loop {
            let found = self.store.delivered_until(until, BATCH)?;
            let n = found.len();
            if n > 0 {
                let ops = found.into_iter().map(|(at, id)| Op::Sweep { at, id });
                self.store.write(ops.collect()).await?;
                swept += n as u64;
            }
            if n < BATCH {
                return Ok(swept);
            }
        }
    }

    /// The oldest dead letters first, up to `limit`.
    pub fn list_dead(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.store.dead_letters(limit)
    }

    /// Age (ms) of the oldest among the next messages due, if any is queued.
    pub fn oldest_age_ms(&self) -> Result<Option<u64>, StoreError> {
        let now = crate::util::unix_ms();
        let mut oldest = None;
        for (_, id) in self.store.due(0, u64::MAX, 100)? {
            if let Some(r) = self.store.get(&id)? {
                oldest = Some(oldest.unwrap_or(0).max(now.saturating_sub(r.created_ms)));
            }
        }
        Ok(oldest)
    }

    /// Queues a dead letter again: attempts start over, due now. `Ok(false)` when `id`
    /// is not a dead letter.
    pub async fn retry_dead(self: &Arc<Self>, id: &uuid::Uuid) -> Result<bool, QueueError> {
        let Some(record) = self.store.get(id.as_bytes())? else {
            return Ok(false);
        };
        if record.status != Status::Dead {
            return Ok(false);
        }
        // The writer checks again: of two retries at once, one wins.
        let make = |now| Record {
            status: Status::Queued,
            attempts: 0,
            due_ms: now,
            updated_ms: now,
            ..record
        };
        let queued = self.admit(false, true, make, |_| ());
        match queued.await {
            Ok(()) => {}
            Err(QueueError::Store(StoreError::NotDead)) => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Deletes a dead letter for good. `Ok(false)` when `id` is not a dead letter.
    pub async fn delete_dead(self: &Arc<Self>, id: &uuid::Uuid) -> Result<bool, StoreError> {
        // The writer checks that it is a dead letter: of two deletes at once, one wins.
        let ops = vec![Op::ForgetDead { id: *id.as_bytes() }];
        let deleted = self.write_then(ops, |queue, written| {
            if written.is_ok() {
                queue.dead.fetch_sub(1, Relaxed);
            }
        });
        match deleted.await {
            Ok(()) => Ok(true),
            Err(StoreError::NotDead) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives a taken message back untouched.
    pub fn untake(&self, record: &Record) {
        self.give_back(&record.id, record.due_ms);
    }

    /// Gives back taken message `id`, due at `due_ms`, untouched.
    pub fn give_back(&self, id: &Id, due_ms: u64) {
        self.release(id);
        self.rewind(due_ms);
    }
}

/// See [`Queue::pending`].
#[derive(Debug, Default)]
struct Pending {
    /// Due time -> writes in progress with it.
    writing: std::collections::BTreeMap<u64, u32>,
    last_now: u64,
}

impl Pending {
    /// Wall-clock milliseconds, never below an earlier reading.
    fn now(&mut self) -> u64 {
        self.last_now = self.last_now.max(crate::util::unix_ms());
        self.last_now
    }
}

/// Exponential from `backoff_initial` to `backoff_max`, with ±20% jitter. Waiting for
/// an eligible master retries at the initial backoff.
fn backoff(attempts: u32, attempted: bool, config: &QueueConfig) -> Duration {
    let base = if attempted {
        let exp = attempts.saturating_sub(1).min(30);
        config
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(config.backoff_max)
    } else {
        config.backoff_initial
    };
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::Future;

    pub(crate) fn open(dir: &std::path::Path) -> (Arc<Queue>, QueueConfig) {
        let text = format!(
            "[queue]\npath = \"{}\"\nbackoff_initial_ms = 1\nbackoff_max_ms = 2\nmax_attempts = 2\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/\"\n",
            dir.join("q").display()
        );
        let config = crate::config::Config::from_toml(&text)
            .expect("config")
            .queue;
        (Arc::new(Queue::open(&config).expect("open")), config)
    }

    pub(crate) fn message(n: u8) -> NewMessage {
        NewMessage {
            id: uuid::Uuid::now_v7(),
            body: Bytes::from(vec![n]),
            content_type: None,
            idempotency_key: format!("k{n}"),
            client_key: false,
            region: None,
            routing_key: None,
            last_error: None,
            attempts: 0,
            forward_headers: Vec::new(),
            client: String::new(),
            request_id: None,
            recipient: None,
        }
    }

    fn keyed(n: u8, key: &str) -> NewMessage {
        NewMessage {
            routing_key: Some(key.to_string()),
            ..message(n)
        }
    }

    fn bodies(records: &[Record]) -> Vec<u8> {
        records.iter().map(|r| r.body[0]).collect()
    }

    /// Takes what is due, waiting (with a deadline) until something is.
    fn take_some(q: &Queue) -> Vec<Record> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = q.take_due(10).expect("take");
            if !got.is_empty() || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[tokio::test]
    async fn taken_messages_are_held_given_back_retried_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        for n in 1..=3 {
            q.enqueue(message(n)).await.unwrap();
        }
        assert_eq!(q.depth(), 3);
        let first = q.take_due(2).unwrap();
        assert_eq!(bodies(&first), vec![1, 2], "acceptance order");
        // Held messages are not handed out twice.
        assert_eq!(bodies(&q.take_due(10).unwrap()), vec![3]);
        assert!(q.take_due(10).unwrap().is_empty());
        let [one, two]: [Record; 2] = first.try_into().unwrap();
        // Given back untouched: found again although the scan moved past it.
        q.untake(&one);
        assert_eq!(bodies(&q.take_due(10).unwrap()), vec![1]);
        q.delivered(two, "a").await.unwrap();
        assert_eq!(q.depth(), 2);
        // A failed attempt comes back after its backoff; the second makes it dead.
        q.failed(one, "503".into(), true, &config).await.unwrap();
        let again = take_some(&q);
        assert_eq!(bodies(&again), vec![1]);
        assert_eq!(again[0].attempts, 1);
        let one = again.into_iter().next().unwrap();
        let id = uuid::Uuid::from_bytes(one.id);
        q.failed(one, "503".into(), true, &config).await.unwrap();
        assert_eq!(q.get(&id).unwrap().unwrap().status, Status::Dead);
        assert_eq!((q.depth(), q.dead_letters()), (1, 1));
    }

    #[tokio::test]
    async fn forwarded_headers_are_kept_with_the_message_across_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        let headers = vec![
            ("traceparent".to_string(), "00-abc-def-01".to_string()),
            ("x-request-id".to_string(), "r-1".to_string()),
        ];
        let msg = NewMessage {
            forward_headers: headers.clone(),
            ..message(1)
        };
        q.enqueue(msg).await.unwrap();
        let taken = take_some(&q).pop().unwrap();
        assert_eq!(taken.forward_headers, headers);
        q.failed(taken, "503".into(), true, &config).await.unwrap();
        assert_eq!(take_some(&q).pop().unwrap().forward_headers, headers);
    }

    /// Fails every taken message (max_attempts = 2) until two are dead letters;
    /// returns the ids of those whose bodies are 1 and 2.
    async fn dead_letters_1_and_2(q: &Arc<Queue>, config: &QueueConfig) -> [uuid::Uuid; 2] {
        while q.dead_letters() < 2 {
            for r in take_some(q) {
                q.failed(r, "503".into(), true, config).await.unwrap();
            }
        }
        let dead = q.list_dead(10).unwrap();
        [1, 2].map(|b| dead.iter().find(|r| r.body[0] == b).unwrap().uuid())
    }

    /// Polls `f` once, then drops it: a client that hangs up while its write is
    /// under way.
    fn cancel_after_one_poll<F: Future>(f: F) {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = f.as_mut().poll(&mut cx);
    }

    /// Waits (with a deadline) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn cancelled_writes_still_land_and_keep_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        let due = q.register_due(Duration::ZERO);
        assert_eq!(q.pending().writing.len(), 1);
        q.end_due(due);
        assert!(q.pending().writing.is_empty());

        // A cancelled enqueue is written all the same, and its due time is released
        // once it is (a due time left registered would hold the scan back for good).
        cancel_after_one_poll(q.enqueue(message(1)));
        q.enqueue(message(2)).await.unwrap();
        until("the due time is released", || {
            q.pending().writing.is_empty()
        })
        .await;
        let mut taken = take_some(&q);
        if taken.len() < 2 {
            taken.extend(take_some(&q));
        }
        let mut seen = bodies(&taken);
        seen.sort();
        assert_eq!(seen, vec![1, 2], "the cancelled write still landed");
        assert_eq!(q.depth(), 2);

        // Both become dead letters.
        for r in taken {
            q.failed(r, "503".into(), true, &config).await.unwrap();
        }
        let [one, two] = dead_letters_1_and_2(&q, &config).await;
        assert_eq!((q.depth(), q.dead_letters()), (0, 2));

        // A cancelled retry and a cancelled delete: the counts follow the disk.
        cancel_after_one_poll(q.retry_dead(&one));
        cancel_after_one_poll(q.delete_dead(&two));
        until("the retry lands", || {
            q.get(&one)
                .unwrap()
                .is_some_and(|r| r.status == Status::Queued)
        })
        .await;
        until("the delete lands", || q.get(&two).unwrap().is_none()).await;
        until("the counts follow", || {
            (q.depth(), q.dead_letters()) == (1, 0)
        })
        .await;
    }

    #[tokio::test]
    async fn one_routing_key_goes_in_order_others_are_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        q.enqueue(keyed(1, "alice")).await.unwrap();
        q.enqueue(keyed(2, "alice")).await.unwrap();
        q.enqueue(keyed(3, "bob")).await.unwrap();
        q.enqueue(message(4)).await.unwrap();
        assert!(q.has_waiting("alice").unwrap());
        assert!(!q.has_waiting("carol").unwrap());
        let first = q.take_due(10).unwrap();
        assert_eq!(bodies(&first), vec![1, 3, 4], "2 waits for 1");
        let one = first.into_iter().next().unwrap();
        // 1 fails and backs off: 2 still waits behind it.
        q.failed(one, "503".into(), true, &config).await.unwrap();
        let again = take_some(&q);
        assert_eq!(bodies(&again), vec![1]);
        q.delivered(again.into_iter().next().unwrap(), "a")
            .await
            .unwrap();
        assert_eq!(bodies(&q.take_due(10).unwrap()), vec![2]);
    }

    #[tokio::test]
    async fn a_long_line_of_one_key_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        for n in 1..=50 {
            q.enqueue(keyed(n, "alice")).await.unwrap();
        }
        q.enqueue(message(51)).await.unwrap();
        q.enqueue(keyed(52, "bob")).await.unwrap();
        // A scan of three finds the head of alice's line and both others: the 49
        // behind the head are not in its way.
        let first = q.take_due(3).unwrap();
        assert_eq!(bodies(&first), vec![1, 51, 52]);
        let head = first.into_iter().next().unwrap();
        q.failed(head, "503".into(), true, &config).await.unwrap();
        assert_eq!(
            bodies(&take_some(&q)),
            vec![1],
            "the head again, after its backoff"
        );
        assert_eq!(q.depth(), 52);
        drop(q);
        let (q, _) = open(dir.path());
        assert_eq!(q.depth(), 52, "lines are counted after a restart");
        let mut taken = q.take_due(10).unwrap();
        // In due time order, which the head's backoff changed.
        taken.sort_by_key(|r| r.body[0]);
        assert_eq!(bodies(&taken), vec![1, 51, 52]);
        let head = taken.into_iter().next().unwrap();
        q.delivered(head, "a").await.unwrap();
        assert_eq!(
            bodies(&q.take_due(10).unwrap()),
            vec![2],
            "the next of the line"
        );
    }

    #[tokio::test]
    async fn idempotency_keys_are_kept_across_a_restart_and_swept_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let window = Duration::from_secs(3600);
        let first = NewMessage {
            client_key: true,
            idempotency_key: "order-1".into(),
            attempts: 1,
            ..message(1)
        };
        let first_id = first.id;
        let answer = MasterAnswer {
            status: 200,
            content_type: None,
            body: Bytes::from_static(b"sent"),
        };
        let queued = NewMessage {
            client_key: true,
            idempotency_key: "order-2".into(),
            ..message(2)
        };
        let queued_id = *queued.id.as_bytes();
        {
            let (q, _) = open(dir.path());
            q.remember(first, "a", answer.clone()).await.unwrap();
            q.enqueue(queued).await.unwrap();
            // A key switchyard made up is not filed.
            q.enqueue(message(3)).await.unwrap();
        }
        let (q, _) = open(dir.path());
        let found = q.first_with_key("order-1", window).unwrap();
        let found = found.expect("kept across a restart");
        assert_eq!(found.uuid(), first_id);
        assert_eq!((found.status, found.attempts), (Status::Delivered, 1));
        assert_eq!(found.master.as_deref(), Some("a"));
        assert_eq!(found.answer, Some(answer));
        assert!(found.body.is_empty(), "only the answer is kept");
        let found = q.first_with_key("order-2", window).unwrap().unwrap();
        assert_eq!((found.id, found.status), (queued_id, Status::Queued));
        assert!(q.first_with_key("k3", window).unwrap().is_none());
        assert!(q.first_with_key("nobody", window).unwrap().is_none());
        // Outside the window, the key is free.
        assert!(q
            .first_with_key("order-1", Duration::ZERO)
            .unwrap()
            .is_none());
        // A sweep with the window still open keeps everything.
        assert_eq!(q.sweep(window).await.unwrap(), 0);
        assert!(q.get(&first_id).unwrap().is_some());
        // Past the window: the delivered record and its key go; the queued message
        // (not delivered yet) stays, with its key.
        assert_eq!(q.sweep(Duration::ZERO).await.unwrap(), 1);
        assert!(q.get(&first_id).unwrap().is_none());
        assert!(q.store.first_use("order-1").unwrap().is_none());
        assert!(q.first_with_key("order-2", window).unwrap().is_some());
        assert_eq!(q.depth(), 2);
    }

    #[tokio::test]
    async fn of_two_retries_or_deletes_of_one_dead_letter_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        q.enqueue(message(1)).await.unwrap();
        q.enqueue(message(2)).await.unwrap();
        let [one, two] = dead_letters_1_and_2(&q, &config).await;

        let (a, b) = tokio::join!(q.retry_dead(&one), q.retry_dead(&one));
        let mut won = [a.unwrap(), b.unwrap()];
        won.sort();
        assert_eq!(won, [false, true]);
        assert_eq!((q.depth(), q.dead_letters()), (1, 1));

        let (a, b) = tokio::join!(q.delete_dead(&two), q.delete_dead(&two));
        let mut won = [a.unwrap(), b.unwrap()];
        won.sort();
        assert_eq!(won, [false, true]);
        assert_eq!(q.dead_letters(), 0);
        assert!(q.get(&two).unwrap().is_none());
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Step {
        /// Queue a message, with one of three routing keys or none.
        Enqueue(Option<u8>),
        /// Take what is due; `n` limits how many.
        Take(usize),
        /// The `i`-th held message (modulo) was delivered.
        Deliver(usize),
        /// The `i`-th held message (modulo) failed an attempt.
        Fail(usize),
        /// Close the queue (dropping what is held) and open it again; an outage
        /// ends first.
        Restart,
        /// The store starts or stops refusing every write; at the end of an outage
        /// the kept outcomes are written.
        Outage,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => proptest::option::of(0u8..3).prop_map(Step::Enqueue),
            2 => (1usize..6).prop_map(Step::Take),
            2 => any::<usize>().prop_map(Step::Deliver),
            1 => any::<usize>().prop_map(Step::Fail),
            1 => Just(Step::Restart),
            1 => Just(Step::Outage),
        ]
    }

    /// What the model knows of one message.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Expected {
        key: Option<u8>,
        status: Status,
        attempts: u32,
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(32))]
        /// Against a simple model: counts always match, a held message (or one whose
        /// outcome could not be written yet) is never handed out again, a message
        /// never overtakes an earlier queued one of its key, and a restart keeps every
        /// message with its status.
        #[test]
        fn the_queue_follows_a_model(steps in proptest::collection::vec(step(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let (mut q, config) = open(dir.path());
                // Acceptance order = id order (UUIDv7 within one process).
                let mut model: Vec<(Id, Expected)> = Vec::new();
                let mut held: Vec<Record> = Vec::new();
                // Outcomes written while the store refused writes: id -> their status.
                let mut kept: HashMap<Id, Status> = HashMap::new();
                let mut refusing = false;
                for step in steps {
                    let outage_ends = refusing && matches!(step, Step::Restart | Step::Outage);
                    if outage_ends {
                        refusing = false;
                        q.store.refuse_writes(false);
                        q.write_kept().await;
                        assert_eq!(q.kept_outcomes(), 0);
                        kept.clear();
                    }
                    match step {
                        Step::Enqueue(key) => {
                            let msg = NewMessage {
                                routing_key: key.map(|k| format!("key{k}")),
                                ..message(0)
                            };
                            let id = *msg.id.as_bytes();
                            let written = q.enqueue(msg).await;
                            assert_eq!(written.is_err(), refusing);
                            if written.is_ok() {
                                model.push((id, Expected { key, status: Status::Queued, attempts: 0 }));
                            }
                        }
                        Step::Take(n) => {
                            for r in q.take_due(n).unwrap() {
                                assert!(!held.iter().any(|h| h.id == r.id), "handed out twice");
                                assert!(!kept.contains_key(&r.id), "handed out with its outcome kept");
                                let pos = model.iter().position(|(id, _)| *id == r.id).unwrap();
                                let (_, e) = model[pos];
                                assert_eq!(e.status, Status::Queued);
                                if e.key.is_some() {
                                    let earlier = model[..pos]
                                        .iter()
                                        .any(|(_, o)| o.key == e.key && o.status == Status::Queued);
                                    assert!(!earlier, "overtook an earlier message of its key");
                                }
                                held.push(r);
                            }
                        }
                        Step::Deliver(i) if !held.is_empty() => {
                            let r = held.remove(i % held.len());
                            let e = &mut model.iter_mut().find(|(id, _)| *id == r.id).unwrap().1;
                            e.status = Status::Delivered;
                            e.attempts += 1;
                            let id = r.id;
                            let written = q.delivered(r, "a").await;
                            assert_eq!(written.is_err(), refusing);
                            if refusing {
                                kept.insert(id, Status::Delivered);
                            }
                        }
                        Step::Fail(i) if !held.is_empty() => {
                            let r = held.remove(i % held.len());
                            let e = &mut model.iter_mut().find(|(id, _)| *id == r.id).unwrap().1;
                            e.attempts += 1;
                            if e.attempts >= config.max_attempts {
                                e.status = Status::Dead;
                            }
                            let (id, status) = (r.id, e.status);
                            let written = q.failed(r, "503".into(), true, &config).await;
                            assert_eq!(written.is_err(), refusing);
                            if refusing {
                                kept.insert(id, status);
                            }
                        }
                        Step::Deliver(_) | Step::Fail(_) => {}
                        Step::Restart => {
                            held.clear();
                            drop(q);
                            q = open(dir.path()).0;
                        }
                        Step::Outage if outage_ends => {}
                        Step::Outage => {
                            refusing = true;
                            q.store.refuse_writes(true);
                        }
                    }
                    // A kept outcome is not on disk yet: the counts follow the disk.
                    let count = |s: Status| model.iter().filter(|(_, e)| e.status == s).count();
                    let kept_as = |s: Status| kept.values().filter(|k| **k == s).count();
                    let queued = count(Status::Queued) + kept.len() - kept_as(Status::Queued);
                    let dead = count(Status::Dead) - kept_as(Status::Dead);
                    assert_eq!((q.depth(), q.dead_letters()), (queued as u64, dead as u64));
                    assert_eq!(q.kept_outcomes(), kept.len());
                }
                q.store.refuse_writes(false);
                q.write_kept().await;
                for (id, e) in &model {
                    let r = q.store.get(id).unwrap().expect("every message is kept");
                    assert_eq!((r.status, r.attempts), (e.status, e.attempts));
                }
            });
        }
    }

    #[tokio::test]
    async fn a_reopened_queue_finds_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = open(dir.path());
            for n in 1..=5 {
                q.enqueue(message(n)).await.unwrap();
            }
            let taken = q.take_due(1).unwrap();
            q.delivered(taken.into_iter().next().unwrap(), "a")
                .await
                .unwrap();
        }
        let (q, _) = open(dir.path());
        assert_eq!(q.depth(), 4);
        assert_eq!(bodies(&q.take_due(10).unwrap()), vec![2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn an_outcome_that_cannot_be_written_is_kept_and_its_message_never_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let (q, config) = open(dir.path());
        q.enqueue(keyed(1, "alice")).await.unwrap();
        q.enqueue(keyed(2, "alice")).await.unwrap();
        q.enqueue(message(3)).await.unwrap();
        let taken = q.take_due(10).unwrap();
        assert_eq!(bodies(&taken), vec![1, 3]);
        let [one, three]: [Record; 2] = taken.try_into().unwrap();
        let (one_id, three_id) = (one.uuid(), three.uuid());

        // 1 reached its master and 3 failed, but the store writes nothing now.
        q.store.refuse_writes(true);
        assert!(q.delivered(one, "a").await.is_err());
        assert!(q.failed(three, "503".into(), true, &config).await.is_err());
        assert_eq!(q.kept_outcomes(), 2);
        // Neither is handed out again, not even by a scan from the start; 2 still
        // waits behind 1.
        q.rescan();
        assert!(q.take_due(10).unwrap().is_empty());
        assert!(q.has_waiting("alice").unwrap());
        assert_eq!(q.get(&one_id).unwrap().unwrap().status, Status::Delivered);
        assert_eq!(q.depth(), 3, "the counts follow the disk");
        // A retry while the store still refuses keeps them.
        q.write_kept().await;
        assert_eq!(q.kept_outcomes(), 2);

        // The store works again: the outcomes land, then 2 and 3 go out, never 1.
        q.store.refuse_writes(false);
        q.write_kept().await;
        assert_eq!(q.kept_outcomes(), 0);
        assert_eq!(
            q.store.get(one_id.as_bytes()).unwrap().unwrap().status,
            Status::Delivered
        );
        let three = q.store.get(three_id.as_bytes()).unwrap().unwrap();
        assert_eq!((three.status, three.attempts), (Status::Queued, 1));
        assert_eq!(q.depth(), 2);
        let seen = Mutex::new(Vec::new());
        until("2 and 3 are due", || {
            let mut seen = seen.lock().unwrap();
            seen.extend(bodies(&q.take_due(10).unwrap()));
            seen.len() >= 2
        })
        .await;
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, vec![2, 3]);
    }
}
