//! The persistent queue (SPEC section 4): messages that cannot go out now wait on disk
//! and are delivered later by `crate::proxy::delivery`.
//!
//! A message is accepted ([`Queue::enqueue`] returns `Ok`, and only then the client
//! gets its 202) once it is durable in the [`store`]. Each message is handed to at most
//! one delivery at a time; the outcome is written back before the next attempt.
//!
//! May call: `config`.

pub mod record;
pub mod store;

use crate::config::QueueConfig;
use bytes::Bytes;
use rand::Rng;
use record::{Id, Record, Status};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Op, Store, StoreError};
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
    pub region: Option<String>,
    /// The error that sent it here, if any.
    pub last_error: Option<String>,
    /// Attempts already made before it was queued.
    pub attempts: u32,
}

#[derive(Debug)]
pub struct Queue {
    store: Store,
    depth: AtomicU64,
    dead: AtomicU64,
    max: u64,
    /// Messages handed to a delivery and not yet written back.
    taken: Mutex<HashSet<Id>>,
    /// Woken when a message is queued.
    pub arrived: Notify,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Queue {
    /// Opens the store at `queue.path` and counts what it holds.
    pub fn open(config: &QueueConfig) -> Result<Queue, StoreError> {
        let store = Store::open(&config.path)?;
        let depth = store.count_queued();
        let dead = store.count_dead();
        if depth > 0 {
            tracing::info!(queued = depth, dead, "queue recovered");
        }
        Ok(Queue {
            store,
            depth: AtomicU64::new(depth),
            dead: AtomicU64::new(dead),
            max: config.max_messages,
            taken: Mutex::new(HashSet::new()),
            arrived: Notify::new(),
        })
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Relaxed)
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead.load(Relaxed)
    }

    /// Persists `msg` for delivery now; returns once it is on disk.
    pub async fn enqueue(&self, msg: NewMessage) -> Result<(), QueueError> {
        let depth = self.depth.fetch_add(1, Relaxed);
        if depth >= self.max {
            self.depth.fetch_sub(1, Relaxed);
            return Err(QueueError::Full(self.max));
        }
        let now = now_ms();
        let record = Record {
            id: *msg.id.as_bytes(),
            status: Status::Queued,
            created_ms: now,
            updated_ms: now,
            due_ms: now,
            attempts: msg.attempts,
            content_type: msg.content_type,
            idempotency_key: msg.idempotency_key,
            region: msg.region,
            master: None,
            last_error: msg.last_error,
            body: msg.body,
        };
        if let Err(e) = self
            .store
            .write(vec![Op::Put {
                record,
                old_due: None,
            }])
            .await
        {
            self.depth.fetch_sub(1, Relaxed);
            return Err(e.into());
        }
        metrics::counter!("switchyard_queue_enqueued_total").increment(1);
        self.arrived.notify_one();
        Ok(())
    }

    pub fn get(&self, id: &uuid::Uuid) -> Result<Option<Record>, StoreError> {
        self.store.get(id.as_bytes())
    }

    /// Up to `limit` queued messages due now that no delivery holds, marked as taken.
    pub fn take_due(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let due = self.store.due(now_ms(), limit * 2)?;
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (_, id) in due {
            if out.len() >= limit || taken.contains(&id) {
                continue;
            }
            if let Some(record) = self.store.get(&id)? {
                if record.status == Status::Queued {
                    taken.insert(id);
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    fn release(&self, id: &Id) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The message reached a master.
    pub async fn delivered(&self, mut record: Record, master: &str) -> Result<(), StoreError> {
        let old_due = Some(record.due_ms);
        record.status = Status::Delivered;
        record.attempts += 1;
        record.master = Some(master.to_string());
        record.updated_ms = now_ms();
        let id = record.id;
        let result = self.store.write(vec![Op::Put { record, old_due }]).await;
        self.release(&id);
        if result.is_ok() {
            self.depth.fetch_sub(1, Relaxed);
            metrics::counter!("switchyard_queue_delivered_total").increment(1);
        }
        result
    }

    /// The attempt failed (`attempted`: a master was tried; otherwise none was
    /// eligible, which counts only against the TTL). Schedules the next attempt with
    /// exponential backoff and jitter, or makes it a dead letter.
    pub async fn failed(
        &self,
        mut record: Record,
        error: String,
        attempted: bool,
        config: &QueueConfig,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let old_due = Some(record.due_ms);
        if attempted {
            record.attempts += 1;
        }
        record.last_error = Some(error);
        record.updated_ms = now;
        let expired = now.saturating_sub(record.created_ms) >= config.ttl.as_millis() as u64;
        let dead = record.attempts >= config.max_attempts || expired;
        if dead {
            record.status = Status::Dead;
        } else {
            record.due_ms = now + backoff(record.attempts, attempted, config).as_millis() as u64;
        }
        let id = record.id;
        let result = self.store.write(vec![Op::Put { record, old_due }]).await;
        self.release(&id);
        if result.is_ok() && dead {
            self.depth.fetch_sub(1, Relaxed);
            self.dead.fetch_add(1, Relaxed);
            metrics::counter!("switchyard_queue_dead_total").increment(1);
        }
        result
    }

    /// Gives a taken message back untouched (delivery stopped before an attempt).
    pub fn untake(&self, id: &Id) {
        self.release(id);
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
