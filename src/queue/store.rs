//! The queue's storage: an embedded fjall database under `queue.path`.
//!
//! fjall is chosen over redb for its write path: an append to one journal per batch,
//! with `fsync` on demand (`PersistMode::SyncData`), and recovery by replaying that
//! journal, which stays short; a B-tree store rewrites pages per commit instead.
//!
//! Keyspaces:
//! - `messages`: id (16 bytes, a UUIDv7, so acceptance order) → [`Record`];
//! - `due`: due time (8 bytes, big-endian ms) + id → nothing: what to deliver next;
//! - `dead`: id → nothing: the dead letters;
//! - `keys`: routing key + 0xff + id → nothing, for queued messages with a routing
//!   key: the first entry of a key is the only one of that key that may be delivered.
//!   (0xff never occurs in UTF-8, so one key's entries never interleave another's.)
//!
//! **Durability.** Every write goes through one writer thread, which takes all the
//! writes waiting for it, commits them as one batch and `fsync`s once (group commit),
//! then answers each. When [`Store::write`] returns `Ok`, the write is on disk and
//! survives a crash or power loss; when it returns `Err`, none of that write's
//! operations are applied (a batch is atomic).

use super::record::{Id, Record};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

/// The most writes one commit takes.
const MAX_GROUP: usize = 4096;
const CACHE_BYTES: u64 = 4 << 20;
const MEMTABLE_BYTES: u64 = 4 << 20;
/// fjall's minimum: the journal replayed at start is at most this large.
const JOURNAL_BYTES: u64 = 64 << 20;

/// One change to the store.
#[derive(Debug)]
pub enum Op {
    /// Writes the record; moves its `due` entry from `old_due` (if any) to its
    /// `due_ms` when it is queued, and files it as a dead letter when dead.
    Put {
        record: Box<Record>,
        old_due: Option<u64>,
    },
    /// Forgets a dead letter.
    ForgetDead { id: Id },
}

#[derive(Debug, thiserror::Error)]
#[error("queue storage: {0}")]
pub struct StoreError(String);

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError(e.to_string())
    }
}

type Job = (Vec<Op>, oneshot::Sender<Result<(), StoreError>>);

pub struct Store {
    messages: Keyspace,
    due: Keyspace,
    dead: Keyspace,
    keys: Keyspace,
    /// `None` only while dropping.
    writer: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Store {
    /// Lets the writer finish what it holds and close the database, so the store can
    /// be opened again as soon as this returns.
    fn drop(&mut self) {
        self.writer = None;
        if let Some(thread) = self.thread.take() {
            let _panicked_writer_already_logged = thread.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub fn due_key(due_ms: u64, id: &Id) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&due_ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

impl Store {
    /// Opens (creating) the store; recovery replays the journal.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        // Memory stays small whatever the backlog: a small block cache, small memtables
        // (flushed to disk early), and at most 64 MiB of journal to replay at start.
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let messages = db.keyspace("messages", options)?;
        let due = db.keyspace("due", options)?;
        let dead = db.keyspace("dead", options)?;
        let keys = db.keyspace("keys", options)?;
        let (writer, jobs) = std_mpsc::channel::<Job>();
        let spaces = Spaces {
            messages: messages.clone(),
            due: due.clone(),
            dead: dead.clone(),
            keys: keys.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_loop(db, spaces, jobs))
            .map_err(|e| StoreError(format!("cannot start the queue writer: {e}")))?;
        Ok(Store {
            messages,
            due,
            dead,
            keys,
            writer: Some(writer),
            thread: Some(thread),
        })
    }

    /// Applies `ops` atomically and durably (see the module docs).
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .and_then(|w| w.send((ops, tx)).ok())
            .ok_or_else(|| StoreError("the queue writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError("the queue writer has stopped".into()))?
    }

    pub fn get(&self, id: &Id) -> Result<Option<Record>, StoreError> {
        match self.messages.get(id)? {
            None => Ok(None),
            Some(v) => Record::decode(&v)
                .map(Some)
                .map_err(|e| StoreError(format!("a stored record is unreadable: {e}"))),
        }
    }

    /// Up to `limit` (due time, id) of queued messages due from `from_ms` to `now_ms`,
    /// earliest first. Starting at `from_ms` skips the deleted entries below it, which
    /// an LSM tree would otherwise step over on every scan.
    pub fn due(
        &self,
        from_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Id)>, StoreError> {
        let start = due_key(from_ms, &[0; 16]);
        let end = due_key(now_ms, &[0xff; 16]);
        let mut out = Vec::new();
        for guard in self
            .due
            .range(start.as_slice()..=end.as_slice())
            .take(limit)
        {
            let key = guard.key()?;
            if key.len() == 24 {
                let due = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
                let id: Id = key[8..].try_into().unwrap_or_default();
                out.push((due, id));
            }
        }
        Ok(out)
    }

    /// The earliest queued message with routing key `key`, if any.
    pub fn first_of_key(&self, key: &str) -> Result<Option<Id>, StoreError> {
        let prefix = key_prefix(key);
        match self.keys.prefix(&prefix).next() {
            None => Ok(None),
            Some(guard) => {
                let k = guard.key()?;
                Ok(k[prefix.len()..].try_into().ok())
            }
        }
    }

    /// The oldest dead letters first, up to `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for guard in self.dead.iter().take(limit) {
            let key = guard.key()?;
            let Ok(id) = Id::try_from(&key[..]) else {
                continue;
            };
            if let Some(record) = self.get(&id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Counts the queued messages exactly (a scan of the `due` keys).
    pub fn count_queued(&self) -> u64 {
        self.due.iter().count() as u64
    }

    pub fn count_dead(&self) -> u64 {
        self.dead.iter().count() as u64
    }
}

fn key_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key.as_bytes());
    k.push(0xff);
    k
}

fn key_entry(key: &str, id: &Id) -> Vec<u8> {
    let mut k = key_prefix(key);
    k.extend_from_slice(id);
    k
}

struct Spaces {
    messages: Keyspace,
    due: Keyspace,
    dead: Keyspace,
    keys: Keyspace,
}

fn write_loop(db: Database, spaces: Spaces, jobs: std_mpsc::Receiver<Job>) {
    let Spaces {
        messages,
        due,
        dead,
        keys,
    } = spaces;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        for (ops, _) in &group {
            for op in ops {
                match op {
                    Op::Put { record, old_due } => {
                        if let Some(old) = old_due {
                            batch.remove(&due, due_key(*old, &record.id).to_vec());
                        }
                        let key = record
                            .routing_key
                            .as_deref()
                            .map(|k| key_entry(k, &record.id));
                        match record.status {
                            super::record::Status::Queued => {
                                // A dead letter sent again leaves the dead letters.
                                batch.remove(&dead, record.id.to_vec());
                                batch.insert(&due, due_key(record.due_ms, &record.id).to_vec(), []);
                                if let Some(k) = key {
                                    batch.insert(&keys, k, []);
                                }
                            }
                            super::record::Status::Dead => {
                                batch.insert(&dead, record.id.to_vec(), []);
                                if let Some(k) = key {
                                    batch.remove(&keys, k);
                                }
                            }
                            super::record::Status::Delivered => {
                                if let Some(k) = key {
                                    batch.remove(&keys, k);
                                }
                            }
                        }
                        batch.insert(&messages, record.id.to_vec(), record.encode());
                    }
                    Op::ForgetDead { id } => {
                        batch.remove(&dead, id.to_vec());
                        batch.remove(&messages, id.to_vec());
                    }
                }
            }
        }
        let result = batch.commit().map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "the queue could not write to disk");
        }
        for (_, done) in group {
            let _caller_gone = done.send(result.clone().map_err(StoreError));
        }
    }
}
