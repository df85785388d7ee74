//! Status records of messages answered at once, for `GET /v1/messages/{id}` (SPEC
//! section 9): every accepted message is findable for at least an hour, not only the
//! queued and keyed ones the [`crate::queue`] store keeps.
//!
//! Why in memory, bucketed by ten seconds: a message id is a UUIDv7, so its acceptance
//! time is in the id itself. Records sit in a ring of [`SLOTS`] buckets, one per
//! [`TICK_MS`]: a write locks only the current bucket, a read goes straight to the
//! bucket its id names, and expiry clears a whole bucket (when its slot is reused, or
//! by [`StatusIndex::sweep`]) without a scan. A record lives from 60 minutes 10 s to
//! 60 minutes 20 s. It costs one hash map insert per message and no disk write; the
//! price is that these records (unlike the store's) do not survive a restart.
//!
//! Bound: `server.max_status_records` (a record takes 56 bytes in its table, which
//! keeps from 1/8 to 1/2 of its room free: 64 to 112 bytes each, more for the rare
//! one with an error text). Past it the oldest ten seconds are dropped whole, earlier
//! than an hour, and counted in `switchyard_status_records_evicted_total`: under more
//! traffic than the bound covers for an hour, the oldest sync statuses go first, and
//! the newest stay findable up to the bound's worth of ten seconds (50,000 messages a
//! second at the default); queued and keyed messages are not affected (the store keeps
//! them).
//!
//! May call: `util`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// How much time one bucket holds.
pub const TICK_MS: u64 = 10_000;
/// Buckets in the ring: an hour's, the one being written, and one more so that a
/// bucket is never reused while its records are younger than an hour and 10 s.
pub const SLOTS: u64 = 3_600_000 / TICK_MS + 2;

/// One message's outcome as `GET /v1/messages/{id}` shows it: a master answered it
/// (`delivered`), with `http_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The client that sent it (see `crate::clients`).
    pub client: Arc<str>,
    pub master: Arc<str>,
    pub attempts: u32,
    /// The master's answer.
    pub http_status: u16,
    /// The last failed attempt, or the master's refusal (a non-2xx answer).
    pub last_error: Option<Box<str>>,
    /// Milliseconds from its acceptance (the id's time) to its answer.
    pub took_ms: u32,
}

impl Entry {
    pub fn status_json(&self, id: &uuid::Uuid) -> serde_json::Value {
        let at = |ms| crate::util::format_rfc3339(std::time::Duration::from_millis(ms));
        let created_ms = millis_of(id);
        serde_json::json!({
            "id": id.to_string(),
            "status": "delivered",
            "master": &*self.master,
            "attempts": self.attempts,
            "last_error": self.last_error.as_deref(),
            "http_status": self.http_status,
            "created_at": at(created_ms),
            "updated_at": at(created_ms + u64::from(self.took_ms)),
        })
    }
}

/// Hashes an id by one multiplication: its low 62 bits are random already (UUIDv7),
/// so SipHash's protection is not needed, and this is the insert's largest cost.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(MIX);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = ((n as u64) ^ ((n >> 64) as u64)).wrapping_mul(MIX);
    }
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

type ById<T> = HashMap<u128, T, BuildHasherDefault<IdHasher>>;

/// An [`Entry`] as kept: 40 bytes; the rare `last_error` lives beside it.
#[derive(Debug)]
struct Kept {
    client: Arc<str>,
    master: Arc<str>,
    attempts: u16,
    http_status: u16,
    took_ms: u32,
}

#[derive(Debug, Default)]
struct Slot {
    tick: u64,
    records: ById<Kept>,
    errors: ById<Box<str>>,
}

impl Slot {
    /// Empties it, giving its memory back; returns how many records it held.
    fn clear(&mut self) -> usize {
        let n = self.records.len();
        self.records = ById::default();
        self.errors = ById::default();
        n
    }
}

#[derive(Debug)]
pub struct StatusIndex {
    slots: Box<[Mutex<Slot>]>,
    len: AtomicUsize,
}

impl Default for StatusIndex {
    fn default() -> Self {
        StatusIndex {
            slots: (0..SLOTS).map(|_| Mutex::default()).collect(),
            len: AtomicUsize::new(0),
        }
    }
}

/// When a UUIDv7 was made: its first 48 bits are Unix milliseconds.
pub fn millis_of(id: &uuid::Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

fn tick_of(id: &uuid::Uuid) -> u64 {
    millis_of(id) / TICK_MS
}

impl StatusIndex {
    fn slot(&self, tick: u64) -> MutexGuard<'_, Slot> {
        self.slots[(tick % SLOTS) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records `id`'s outcome; then, past `max` records, drops the oldest buckets.
    pub fn insert(&self, id: &uuid::Uuid, entry: Entry, max: usize) {
        let tick = tick_of(id);
        {
            let mut slot = self.slot(tick);
            if slot.tick < tick {
                self.len.fetch_sub(slot.clear(), Relaxed);
                slot.tick = tick;
            } else if slot.tick > tick {
                // Its bucket has been reused: older than the ring.
                return;
            }
            let key = id.as_u128();
            let kept = Kept {
                client: entry.client,
                master: entry.master,
                attempts: entry.attempts.min(u32::from(u16::MAX)) as u16,
                http_status: entry.http_status,
                took_ms: entry.took_ms,
            };
            match entry.last_error {
                Some(e) => slot.errors.insert(key, e),
                None => slot.errors.remove(&key),
            };
            if slot.records.insert(key, kept).is_none() {
                self.len.fetch_add(1, Relaxed);
            }
        }
        while self.len.load(Relaxed) > max {
            if !self.drop_oldest() {
                break;
            }
        }
    }

    /// Clears the oldest non-empty bucket; false when all are empty.
    fn drop_oldest(&self) -> bool {
        let oldest = (0..SLOTS)
            .filter_map(|i| {
                let slot = self.slot(i);
                (!slot.records.is_empty()).then_some(slot.tick)
            })
            .min();
        let Some(tick) = oldest else {
            return false;
        };
        let mut slot = self.slot(tick);
        if slot.tick == tick && !slot.records.is_empty() {
            let n = slot.clear();
            self.len.fetch_sub(n, Relaxed);
            metrics::counter!("switchyard_status_records_evicted_total").increment(n as u64);
            tracing::debug!(
                records = n,
                "the oldest ten seconds of status records were dropped: server.max_status_records reached"
            );
        }
        true
    }

    pub fn get(&self, id: &uuid::Uuid) -> Option<Entry> {
        let tick = tick_of(id);
        let slot = self.slot(tick);
        if slot.tick != tick {
            return None;
        }
        let key = id.as_u128();
        slot.records.get(&key).map(|k| Entry {
            client: k.client.clone(),
            master: k.master.clone(),
            attempts: u32::from(k.attempts),
            http_status: k.http_status,
            last_error: slot.errors.get(&key).cloned(),
            took_ms: k.took_ms,
        })
    }

    /// Frees the buckets the ring no longer covers at `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        let now = now_ms / TICK_MS;
        for i in 0..SLOTS {
            let mut slot = self.slot(i);
            if slot.tick + SLOTS <= now && !slot.records.is_empty() {
                let n = slot.clear();
                self.len.fetch_sub(n, Relaxed);
            }
        }
    }

    /// Records kept now.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UUIDv7-shaped id made at `ms`, `n` telling ids of one millisecond apart.
    fn id_at(ms: u64, n: u64) -> uuid::Uuid {
        uuid::Uuid::from_u128(((ms as u128) << 80) | (7 << 76) | n as u128)
    }

    fn entry(client: &str) -> Entry {
        Entry {
            client: Arc::from(client),
            master: Arc::from("a"),
            attempts: 1,
            http_status: 200,
            last_error: None,
            took_ms: 0,
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn a_record_is_found_for_an_hour_then_its_bucket_is_reused() {
        let index = StatusIndex::default();
        let first = id_at(T0, 1);
        index.insert(&first, entry("a"), 1000);
        assert_eq!(index.get(&first).map(|e| e.client), Some(Arc::from("a")));
        assert_eq!(index.get(&id_at(T0, 2)), None);
        // Every ten seconds for an hour later: still there.
        for m in 1..SLOTS - 1 {
            index.insert(&id_at(T0 + m * TICK_MS, 1), entry("b"), 1000);
            index.sweep(T0 + m * TICK_MS);
        }
        index.sweep(T0 + SLOTS * TICK_MS - 1);
        assert!(
            index.get(&first).is_some(),
            "kept for an hour and ten seconds at least"
        );
        index.sweep(T0 + SLOTS * TICK_MS);
        assert!(
            index.get(&first).is_none(),
            "swept after an hour and twenty seconds"
        );
        // A message SLOTS ticks later reuses the first bucket.
        index.insert(&first, entry("a"), 1000);
        index.insert(&id_at(T0 + SLOTS * TICK_MS, 1), entry("c"), 1000);
        assert!(index.get(&first).is_none());
        // An id older than its reused bucket is not kept.
        index.insert(&first, entry("a"), 1000);
        assert!(index.get(&first).is_none());
        assert_eq!(index.len(), SLOTS as usize - 1);
    }

    #[test]
    fn past_the_bound_the_oldest_bucket_goes_first() {
        let index = StatusIndex::default();
        for n in 0..3 {
            index.insert(&id_at(T0, n), entry("a"), 4);
        }
        index.insert(&id_at(T0 + TICK_MS, 0), entry("a"), 4);
        assert_eq!(index.len(), 4);
        index.insert(&id_at(T0 + TICK_MS, 1), entry("a"), 4);
        assert_eq!(index.len(), 2, "the first ten seconds dropped whole");
        assert!(index.get(&id_at(T0, 0)).is_none());
        assert!(index.get(&id_at(T0 + TICK_MS, 1)).is_some());
        let refused = Entry {
            last_error: Some("a answered 422".into()),
            http_status: 422,
            ..entry("a")
        };
        index.insert(&id_at(T0 + TICK_MS, 2), refused.clone(), 4);
        assert_eq!(index.get(&id_at(T0 + TICK_MS, 2)), Some(refused));
        index.insert(&id_at(T0 + TICK_MS, 2), entry("a"), 4);
        assert_eq!(index.get(&id_at(T0 + TICK_MS, 2)), Some(entry("a")));
        index.insert(&id_at(T0 + TICK_MS, 3), entry("a"), 4);
        assert_eq!(index.len(), 4);
        index.insert(&id_at(T0 + TICK_MS, 4), entry("a"), 4);
        assert_eq!(
            index.len(),
            0,
            "the next ten seconds dropped whole, the newest with them"
        );
        index.insert(&id_at(T0 + TICK_MS, 1), entry("a"), 4);
        // A repeated id replaces its record, it does not count twice.
        index.insert(&id_at(T0 + TICK_MS, 1), entry("b"), 4);
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.get(&id_at(T0 + TICK_MS, 1)).map(|e| e.client),
            Some(Arc::from("b"))
        );
    }
}
