//! Status records of messages answered at once, for `GET /v1/messages/{id}` (SPEC
//! section 9): every accepted message is findable for at least an hour, not only the
//! queued and keyed ones the [`crate::queue`] store keeps.
//!
//! Why in memory, bucketed by ten seconds: a message id is a UUIDv7, so its acceptance
//! time is in the id itself. Records sit in a ring of [`SLOTS`] buckets, one per
//! [`TICK_MS`]: a write locks only the current bucket, a read goes straight to the
//! bucket its id names, and expiry clears a whole bucket (when its slot is reused, or
//! by [`StatusIndex::sweep`]) without a scan. A record lives from 60 minutes 10 s to
//! 60 minutes 20 s. It costs one append to its bucket per message and no disk write;
//! the price is that these records (unlike the store's) do not survive a restart.
//!
//! Bound: `server.max_status_records` (a record takes 32 bytes, in chunks of 4,096
//! that are allocated whole, more for the rare one with an error text: 16 MB for the
//! default 500,000). Past it the oldest ten seconds are dropped whole, earlier than an
//! hour, and counted in `switchyard_status_records_evicted_total`: under more traffic
//! than the bound covers for an hour, the oldest sync statuses go first, and the
//! newest stay findable up to the bound's worth of ten seconds (50,000 messages a
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

/// An [`Entry`] as [`StatusIndex::record`] takes it: the names lent, since a bucket
/// keeps a name once (an `Entry`'s own would be two reference counts up and down per
/// message).
#[derive(Debug)]
pub struct Record<'a> {
    pub client: &'a Arc<str>,
    pub master: &'a Arc<str>,
    pub attempts: u32,
    pub http_status: u16,
    pub last_error: Option<Box<str>>,
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

/// An [`Entry`] as kept: 32 bytes, its names as indices into its bucket's
/// [`Slot::names`]; the rare `last_error` lives beside it.
#[derive(Debug, Clone, Copy)]
struct Kept {
    id: u128,
    client: u16,
    master: u16,
    attempts: u16,
    http_status: u16,
    took_ms: u32,
}

/// Records per chunk of a bucket (128 KiB).
const CHUNK: usize = 4096;

/// One bucket: records in the order they came, in chunks of [`CHUNK`]. A chunk is
/// sorted by id once full, so a lookup is a binary search per full chunk and a scan of
/// the open one. Appending touches only the open chunk's end: no table to grow and
/// rehash, and no memory past the records but the open chunk's free room.
#[derive(Debug, Default)]
struct Slot {
    tick: u64,
    /// The clients and masters its records name.
    names: Vec<Arc<str>>,
    /// Full chunks, each sorted by id (stably: of one id recorded twice, the later
    /// comes last).
    sealed: Vec<Box<[Kept]>>,
    open: Vec<Kept>,
    errors: ById<Box<str>>,
}

impl Slot {
    /// Empties it, giving its memory back; returns how many records it held.
    fn clear(&mut self) -> usize {
        let n = self.len();
        *self = Slot {
            tick: self.tick,
            ..Slot::default()
        };
        n
    }

    fn len(&self) -> usize {
        self.sealed.len() * CHUNK + self.open.len()
    }

    fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.open.is_empty()
    }

    /// `name`'s index in [`Slot::names`], added when new. Names come from the config
    /// (at most [`crate::config::bounds::MAX_MASTERS`] masters and as many clients as
    /// it allows), so they fit a u16.
    fn name(&mut self, name: &Arc<str>) -> u16 {
        let found = self
            .names
            .iter()
            .position(|n| Arc::ptr_eq(n, name))
            .or_else(|| self.names.iter().position(|n| n == name));
        let i = found.unwrap_or_else(|| {
            self.names.push(name.clone());
            self.names.len() - 1
        });
        u16::try_from(i).unwrap_or(u16::MAX)
    }

    fn push(&mut self, kept: Kept) {
        if self.open.capacity() == 0 {
            self.open.reserve_exact(CHUNK);
        }
        self.open.push(kept);
        if self.open.len() == CHUNK {
            let mut full = std::mem::take(&mut self.open);
            full.sort_by_key(|k| k.id);
            self.sealed.push(full.into_boxed_slice());
        }
    }

    /// The latest record of `id`.
    fn find(&self, id: u128) -> Option<&Kept> {
        if let Some(k) = self.open.iter().rev().find(|k| k.id == id) {
            return Some(k);
        }
        self.sealed.iter().rev().find_map(|chunk| {
            let end = chunk.partition_point(|k| k.id <= id);
            chunk[..end].last().filter(|k| k.id == id)
        })
    }

    fn named(&self, i: u16) -> Arc<str> {
        self.names
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
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

    /// [`StatusIndex::record`] of an [`Entry`].
    #[cfg(test)]
    pub fn insert(&self, id: &uuid::Uuid, entry: Entry, max: usize) {
        let Entry {
            client,
            master,
            attempts,
            http_status,
            last_error,
            took_ms,
        } = entry;
        let record = Record {
            client: &client,
            master: &master,
            attempts,
            http_status,
            last_error,
            took_ms,
        };
        self.record(id, record, max);
    }

    /// Records `id`'s outcome; then, past `max` records, drops the oldest buckets.
    pub fn record(&self, id: &uuid::Uuid, entry: Record<'_>, max: usize) {
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
                id: key,
                client: slot.name(entry.client),
                master: slot.name(entry.master),
                attempts: entry.attempts.min(u32::from(u16::MAX)) as u16,
                http_status: entry.http_status,
                took_ms: entry.took_ms,
            };
            match entry.last_error {
                Some(e) => slot.errors.insert(key, e),
                None => slot.errors.remove(&key),
            };
            // A repeated id shadows its earlier record, which keeps its room until
            // the bucket goes: it counts against the bound.
            slot.push(kept);
            self.len.fetch_add(1, Relaxed);
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
                (!slot.is_empty()).then_some(slot.tick)
            })
            .min();
        let Some(tick) = oldest else {
            return false;
        };
        let mut slot = self.slot(tick);
        if slot.tick == tick && !slot.is_empty() {
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
        slot.find(key).map(|k| Entry {
            client: slot.named(k.client),
            master: slot.named(k.master),
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
            if slot.tick + SLOTS <= now && !slot.is_empty() {
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
        // A repeated id shadows its record; the earlier one keeps its room.
        index.insert(&id_at(T0 + TICK_MS, 2), entry("a"), 4);
        assert_eq!(index.get(&id_at(T0 + TICK_MS, 2)), Some(entry("a")));
        assert_eq!(index.len(), 4);
        index.insert(&id_at(T0 + TICK_MS, 3), entry("a"), 4);
        assert_eq!(
            index.len(),
            0,
            "the next ten seconds dropped whole, the newest with them"
        );
    }

    #[test]
    fn every_record_of_full_and_open_chunks_is_found() {
        let index = StatusIndex::default();
        let clients: Vec<Arc<str>> = (0..5).map(|i| Arc::from(format!("c{i}"))).collect();
        // Ids out of order, as answers come: a full chunk is sorted when sealed.
        let n = 3 * CHUNK as u64 + 17;
        let ids: Vec<u64> = (0..n).map(|i| (i * 7919) % n).collect();
        for &i in &ids {
            let e = Entry {
                client: clients[(i % 5) as usize].clone(),
                attempts: (i % 3) as u32 + 1,
                took_ms: i as u32,
                ..entry("unused")
            };
            index.insert(&id_at(T0 + i % TICK_MS, i), e, 1 << 20);
        }
        assert_eq!(index.len(), n as usize);
        for i in 0..n {
            let got = index.get(&id_at(T0 + i % TICK_MS, i)).expect("kept");
            assert_eq!(got.client, clients[(i % 5) as usize]);
            assert_eq!((got.attempts, got.took_ms), ((i % 3) as u32 + 1, i as u32));
        }
        assert!(index.get(&id_at(T0, n + 1)).is_none());
        // A repeat of an id now in a sealed chunk shadows it.
        let e = Entry {
            http_status: 500,
            ..entry("late")
        };
        index.insert(&id_at(T0, 0), e.clone(), 1 << 20);
        assert_eq!(index.get(&id_at(T0, 0)), Some(e));
    }
}
