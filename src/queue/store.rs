//! The queue's storage: an embedded fjall database under `queue.path`.
//!
//! fjall is chosen over redb for its write path: an append to one journal per batch,
//! with `fsync` on demand (`PersistMode::SyncData`), and recovery by replaying that
//! journal, which stays short; a B-tree store rewrites pages per commit instead.
//!
//! Keyspaces:
//! - `messages`: id (16 bytes, a UUIDv7, so acceptance order) → [`Record`];
//! - `due`: due time (8 bytes, big-endian ms) + id → nothing: what to deliver next.
//!   Every queued message without a routing key is here; of the queued messages that
//!   share a routing key, only the head of the line is (see `keys`);
//! - `keys`: routing key + 0xff + id → nothing, for every queued message with a
//!   routing key. When a key's head is delivered or dead, the next of its line (the
//!   lowest id) gets its `due` entry in the same batch, so a scan of `due` never steps
//!   over messages that wait behind another. (0xff never occurs in UTF-8, so one
//!   key's entries never interleave another's.)
//! - `dead`: id → nothing: the dead letters;
//! - `idem`: a client's `Idempotency-Key` → id (16 bytes) + accepted at (8 bytes,
//!   big-endian ms): the first message that carried it;
//! - `done`: delivered at (8 bytes, big-endian ms) + id → nothing: delivered records,
//!   oldest first, swept with their `idem` entry once the idempotency window passes.
//!
//! **Durability.** Every write goes through one writer thread, which takes all the
//! writes waiting for it, commits them as one batch and `fsync`s once (group commit),
//! then answers each. When [`Store::write`] returns `Ok`, the write is on disk and
//! survives a crash or power loss; when it returns `Err`, none of that write's
//! operations are applied (a batch is atomic). Reads see every write that returned.
//!
//! **After a failed write** (a full or read-only disk) fjall refuses all further
//! writes, as a database must once it cannot tell what reached the disk. The writer
//! then closes the database and opens it again from disk, as a restart would, once a
//! second, until that succeeds; meanwhile reads and writes fail at once (the client
//! gets 507) and nothing already accepted is touched. A failed commit can still reach
//! the disk (fjall writes out the rest of its journal buffer when it closes, if there
//! is space by then); the new records of such a commit were answered with an error,
//! so they are removed before the reopened store is read.

use super::record::{Id, Record, Status};
use arc_swap::ArcSwapOption;
use fjall::config::FilterPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The most writes one commit takes.
const MAX_GROUP: usize = 4096;
const CACHE_BYTES: u64 = 1 << 20;
const MEMTABLE_BYTES: u64 = 1 << 20;
/// fjall's minimum: the journal replayed at start is at most this large.
const JOURNAL_BYTES: u64 = 64 << 20;
/// How often the writer tries to open the database again after a failed write.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// One change to the store.
#[derive(Debug)]
pub enum Op {
    /// Writes the record and keeps the indexes in step with its status:
    /// - queued: its `due` entry moves from `old_due` (if any) to `due_ms`; a new
    ///   message with a routing key joins the key's line, and is due only if it heads
    ///   it;
    /// - delivered or dead: it leaves `due` and its key's line, whose next message
    ///   becomes due at `next_due`; dead letters are filed in `dead`, delivered
    ///   records in `done`.
    ///
    /// With `remember_key`, the record's `idempotency_key` is filed in `idem`.
    Put {
        record: Box<Record>,
        old_due: Option<u64>,
        next_due: u64,
        remember_key: bool,
    },
    /// Takes a dead letter out of the dead letters (it is being queued again).
    /// Refused with [`StoreError::NotDead`] unless it is one when its batch is staged.
    LeaveDead { id: Id },
    /// Forgets a dead letter; refused as [`Op::LeaveDead`] is.
    ForgetDead { id: Id },
    /// Forgets a delivered record (its idempotency window has passed), found in
    /// `done` at `at`.
    Sweep { at: u64, id: Id },
}

impl Op {
    /// [`Op::Put`] of a record not stored before.
    pub fn put_new(record: Record, remember_key: bool) -> Op {
        Op::Put {
            record: Box::new(record),
            old_due: None,
            next_due: 0,
            remember_key,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("queue storage: {0}")]
    Failed(String),
    /// A dead-letter operation ([`Op::LeaveDead`], [`Op::ForgetDead`]) found no dead
    /// letter with its id: another one took it first, or there never was one.
    #[error("not a dead letter")]
    NotDead,
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Failed(e.to_string())
    }
}

type Job = (Vec<Op>, oneshot::Sender<Result<(), StoreError>>);

/// The keyspaces of one open database.
struct Spaces {
    messages: Keyspace,
    due: Keyspace,
    keys: Keyspace,
    dead: Keyspace,
    idem: Keyspace,
    done: Keyspace,
}

pub struct Store {
    /// `None` while the writer reopens the database after a failed write.
    spaces: Arc<ArcSwapOption<Spaces>>,
    failed_writes: Arc<AtomicU64>,
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

/// A time (ms) and an id, big-endian: the `due` and `done` keys, in time order.
pub fn time_key(ms: u64, id: &Id) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

fn split_time_key(key: &[u8]) -> Option<(u64, Id)> {
    let ms = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((ms, key.get(8..)?.try_into().ok()?))
}

/// A message's `idem` value: its id and when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstUse {
    pub id: Id,
    pub at_ms: u64,
}

impl FirstUse {
    fn encode(&self) -> Vec<u8> {
        time_key(self.at_ms, &self.id).to_vec()
    }

    fn decode(value: &[u8]) -> Option<FirstUse> {
        split_time_key(value).map(|(at_ms, id)| FirstUse { id, at_ms })
    }
}

impl Store {
    /// Opens (creating) the store; recovery replays the journal.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", path.display())))?;
        let (db, open) = open_db(path)?;
        let open = Arc::new(open);
        let spaces = Arc::new(ArcSwapOption::new(Some(open.clone())));
        let (writer, jobs) = std_mpsc::channel::<Job>();
        let failed_writes = Arc::new(AtomicU64::new(0));
        let writer_side = Shared {
            spaces: spaces.clone(),
            failed_writes: failed_writes.clone(),
        };
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_loop((db, open), writer_side, &path, jobs))
            .map_err(|e| StoreError::Failed(format!("cannot start the queue writer: {e}")))?;
        Ok(Store {
            spaces,
            failed_writes,
            writer: Some(writer),
            thread: Some(thread),
        })
    }

    /// Commits that failed since the store was opened.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Relaxed)
    }

    fn spaces(&self) -> Result<Arc<Spaces>, StoreError> {
        self.spaces.load_full().ok_or_else(reopening)
    }

    /// Applies `ops` atomically and durably (see the module docs).
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .and_then(|w| w.send((ops, tx)).ok())
            .ok_or_else(|| StoreError::Failed("the queue writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Failed("the queue writer has stopped".into()))?
    }

    pub fn get(&self, id: &Id) -> Result<Option<Record>, StoreError> {
        read_record(&self.spaces()?.messages, id)
    }

    /// The first message that carried the client's `Idempotency-Key` `key`, if one
    /// is kept.
    pub fn first_use(&self, key: &str) -> Result<Option<FirstUse>, StoreError> {
        Ok(self
            .spaces()?
            .idem
            .get(key.as_bytes())?
            .and_then(|v| FirstUse::decode(&v)))
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
        time_range(&self.spaces()?.due, from_ms, now_ms, limit)
    }

    /// Up to `limit` (delivered at, id) of records delivered up to `until_ms`,
    /// oldest first.
    pub fn delivered_until(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Id)>, StoreError> {
        time_range(&self.spaces()?.done, 0, until_ms, limit)
    }

    /// Whether queued messages with routing key `key` are waiting.
    pub fn key_has_waiting(&self, key: &str) -> Result<bool, StoreError> {
        Ok(first_of_line(&self.spaces()?.keys, key, &BTreeMap::new())?.is_some())
    }

    /// The oldest dead letters first, up to `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let spaces = self.spaces()?;
        for guard in spaces.dead.iter().take(limit) {
            let key = guard.key()?;
            let Ok(id) = Id::try_from(&key[..]) else {
                continue;
            };
            if let Some(record) = read_record(&spaces.messages, &id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Counts the queued messages exactly: those due, plus those waiting in a key's
    /// line behind its head (each line's head is also due).
    pub fn count_queued(&self) -> Result<u64, StoreError> {
        let spaces = self.spaces()?;
        let due = spaces.due.iter().count() as u64;
        let (mut in_lines, mut lines) = (0u64, 0u64);
        let mut last_key: Option<Vec<u8>> = None;
        for guard in spaces.keys.iter() {
            let entry = guard.key()?;
            let key = &entry[..entry.len().saturating_sub(17)];
            in_lines += 1;
            if last_key.as_deref() != Some(key) {
                lines += 1;
                last_key = Some(key.to_vec());
            }
        }
        Ok(due + in_lines - lines)
    }

    pub fn count_dead(&self) -> Result<u64, StoreError> {
        Ok(self.spaces()?.dead.iter().count() as u64)
    }
}

fn reopening() -> StoreError {
    StoreError::Failed("the store is being reopened after a failed write".into())
}

fn open_db(path: &Path) -> Result<(Database, Spaces), StoreError> {
    // Memory stays small whatever the backlog: a small block cache, small memtables
    // (flushed to disk early), and at most 64 MiB of journal to replay at start.
    let db = Database::builder(path)
        .cache_size(CACHE_BYTES)
        .max_journaling_size(JOURNAL_BYTES)
        .open()?;
    let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
    // Bloom filters only save reads of keys that are absent, scattered over the tables.
    // Ids and times grow, so each table holds one slice of them and a point read is
    // sent to the one table whose range covers it; the other keyspaces are only
    // scanned. Only the clients' idempotency keys, random and mostly new, need them.
    let unfiltered = || options().filter_policy(FilterPolicy::disabled());
    let spaces = Spaces {
        messages: db.keyspace("messages", unfiltered)?,
        due: db.keyspace("due", unfiltered)?,
        keys: db.keyspace("keys", unfiltered)?,
        dead: db.keyspace("dead", unfiltered)?,
        idem: db.keyspace("idem", options)?,
        done: db.keyspace("done", unfiltered)?,
    };
    Ok((db, spaces))
}

fn read_record(messages: &Keyspace, id: &Id) -> Result<Option<Record>, StoreError> {
    match messages.get(id)? {
        None => Ok(None),
        Some(v) => Record::decode(&v)
            .map(Some)
            .map_err(|e| StoreError::Failed(format!("a stored record is unreadable: {e}"))),
    }
}

fn time_range(
    space: &Keyspace,
    from_ms: u64,
    until_ms: u64,
    limit: usize,
) -> Result<Vec<(u64, Id)>, StoreError> {
    let start = time_key(from_ms, &[0; 16]);
    let end = time_key(until_ms, &[0xff; 16]);
    let mut out = Vec::new();
    for guard in space.range(start.as_slice()..=end.as_slice()).take(limit) {
        if let Some(entry) = split_time_key(&guard.key()?) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn line_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 17);
    k.extend_from_slice(key.as_bytes());
    k.push(0xff);
    k
}

fn line_entry(key: &str, id: &Id) -> Vec<u8> {
    let mut k = line_prefix(key);
    k.extend_from_slice(id);
    k
}

/// Staged changes to one keyspace: key → new value, or `None` for a removal.
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The first id in routing key `key`'s line: the lowest stored entry that `staged`
/// does not remove, or a lower one `staged` adds.
fn first_of_line(keys: &Keyspace, key: &str, staged: &Changes) -> Result<Option<Id>, StoreError> {
    let prefix = line_prefix(key);
    let id_of = |entry: &[u8]| Id::try_from(&entry[prefix.len()..]).ok();
    let mut stored = None;
    for guard in keys.prefix(&prefix) {
        let entry = guard.key()?;
        if !matches!(staged.get(&entry[..]), Some(None)) {
            stored = id_of(&entry);
            break;
        }
    }
    let added = staged
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .find(|(_, v)| v.is_some())
        .and_then(|(k, _)| id_of(k));
    Ok(match (stored, added) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// One batch being built: what it writes, readable before it is committed, so the
/// writes of one batch see each other.
struct Staging<'a> {
    spaces: &'a Spaces,
    /// id → the record as this batch leaves it (`None`: removed).
    records: HashMap<Id, Option<Record>>,
    due: Changes,
    keys: Changes,
    dead: Changes,
    idem: Changes,
    done: Changes,
}

impl<'a> Staging<'a> {
    fn new(spaces: &'a Spaces) -> Self {
        Staging {
            spaces,
            records: HashMap::new(),
            due: Changes::new(),
            keys: Changes::new(),
            dead: Changes::new(),
            idem: Changes::new(),
            done: Changes::new(),
        }
    }

    fn record(&self, id: &Id) -> Result<Option<Record>, StoreError> {
        match self.records.get(id) {
            Some(staged) => Ok(staged.clone()),
            None => read_record(&self.spaces.messages, id),
        }
    }

    /// The dead letter `id`, as this batch leaves it so far.
    fn dead_letter(&self, id: &Id) -> Result<Record, StoreError> {
        match self.record(id)? {
            Some(record) if record.status == Status::Dead => Ok(record),
            _ => Err(StoreError::NotDead),
        }
    }

    fn first_use(&self, key: &str) -> Result<Option<FirstUse>, StoreError> {
        let value = match self.idem.get(key.as_bytes()) {
            Some(staged) => staged.clone(),
            None => self.spaces.idem.get(key.as_bytes())?.map(|v| v.to_vec()),
        };
        Ok(value.and_then(|v| FirstUse::decode(&v)))
    }

    fn apply(&mut self, op: &Op) -> Result<(), StoreError> {
        match *op {
            Op::Put {
                ref record,
                old_due,
                next_due,
                remember_key,
            } => self.put((**record).clone(), old_due, next_due, remember_key),
            Op::LeaveDead { id } => {
                self.dead_letter(&id)?;
                self.dead.insert(id.to_vec(), None);
                Ok(())
            }
            Op::ForgetDead { id } => {
                let record = self.dead_letter(&id)?;
                self.forget(&record)?;
                self.dead.insert(id.to_vec(), None);
                Ok(())
            }
            Op::Sweep { at, id } => {
                self.done.insert(time_key(at, &id).to_vec(), None);
                match self.record(&id)? {
                    Some(record) if record.status == Status::Delivered => self.forget(&record),
                    _ => Ok(()),
                }
            }
        }
    }

    fn put(
        &mut self,
        record: Record,
        old_due: Option<u64>,
        next_due: u64,
        remember_key: bool,
    ) -> Result<(), StoreError> {
        let id = record.id;
        if let Some(old) = old_due {
            self.due.insert(time_key(old, &id).to_vec(), None);
        }
        if remember_key {
            let first = FirstUse {
                id,
                at_ms: record.created_ms,
            };
            self.idem.insert(
                record.idempotency_key.clone().into_bytes(),
                Some(first.encode()),
            );
        }
        let key = record.routing_key.as_deref();
        match record.status {
            Status::Queued => {
                let heads_line = match key {
                    None => true,
                    // Already in the line: the head, rescheduled.
                    Some(_) if old_due.is_some() => true,
                    Some(k) => {
                        let empty = first_of_line(&self.spaces.keys, k, &self.keys)?.is_none();
                        self.keys.insert(line_entry(k, &id), Some(Vec::new()));
                        empty
                    }
                };
                if heads_line {
                    self.due
                        .insert(time_key(record.due_ms, &id).to_vec(), Some(Vec::new()));
                }
            }
            Status::Delivered | Status::Dead => {
                if record.status == Status::Dead {
                    self.dead.insert(id.to_vec(), Some(Vec::new()));
                } else {
                    self.done
                        .insert(time_key(record.updated_ms, &id).to_vec(), Some(Vec::new()));
                }
                // Only a taken message (`old_due`) was in a line.
                if let (Some(k), Some(_)) = (key, old_due) {
                    self.keys.insert(line_entry(k, &id), None);
                    self.promote_next(k, next_due)?;
                }
            }
        }
        self.records.insert(id, Some(record));
        Ok(())
    }

    /// Routing key `key`'s head is done: the next of its line becomes due at `at`.
    fn promote_next(&mut self, key: &str, at: u64) -> Result<(), StoreError> {
        while let Some(next) = first_of_line(&self.spaces.keys, key, &self.keys)? {
            let Some(mut record) = self.record(&next)? else {
                // Cannot happen (the line and the record are written together); if it
                // did, a stale entry must not stop the line.
                tracing::error!(
                    routing_key = key,
                    "a routing key line named a missing message"
                );
                self.keys.insert(line_entry(key, &next), None);
                continue;
            };
            self.due
                .insert(time_key(record.due_ms, &next).to_vec(), None);
            record.due_ms = at;
            self.due
                .insert(time_key(at, &next).to_vec(), Some(Vec::new()));
            self.records.insert(next, Some(record));
            return Ok(());
        }
        Ok(())
    }

    /// Removes a record [`Op::put_new`] wrote, with its index entries.
    fn remove_new(&mut self, record: &Record) -> Result<(), StoreError> {
        let id = record.id;
        self.due.insert(time_key(record.due_ms, &id).to_vec(), None);
        self.done
            .insert(time_key(record.updated_ms, &id).to_vec(), None);
        if let Some(key) = &record.routing_key {
            // A new record heads its line only when the line was empty: nothing
            // waits behind it that would need promoting.
            self.keys.insert(line_entry(key, &id), None);
        }
        self.forget(record)
    }

    /// Removes a record and the `idem` entry that names it.
    fn forget(&mut self, record: &Record) -> Result<(), StoreError> {
        if self
            .first_use(&record.idempotency_key)?
            .is_some_and(|f| f.id == record.id)
        {
            self.idem
                .insert(record.idempotency_key.clone().into_bytes(), None);
        }
        self.records.insert(record.id, None);
        Ok(())
    }

    fn commit(self, db: &Database) -> Result<(), StoreError> {
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        for (id, record) in self.records {
            match record {
                Some(r) => batch.insert(&self.spaces.messages, id.to_vec(), r.encode()),
                None => batch.remove(&self.spaces.messages, id.to_vec()),
            }
        }
        let s = self.spaces;
        for (space, changes) in [
            (&s.due, self.due),
            (&s.keys, self.keys),
            (&s.dead, self.dead),
            (&s.idem, self.idem),
            (&s.done, self.done),
        ] {
            for (key, value) in changes {
                match value {
                    Some(v) => batch.insert(space, key, v),
                    None => batch.remove(space, key),
                }
            }
        }
        Ok(batch.commit()?)
    }
}

/// What the writer shares with the readers.
struct Shared {
    spaces: Arc<ArcSwapOption<Spaces>>,
    failed_writes: Arc<AtomicU64>,
}

/// The open database, and its keyspaces as the writer uses them.
type Open = (Database, Arc<Spaces>);

fn write_loop(open: Open, shared: Shared, path: &Path, jobs: std_mpsc::Receiver<Job>) {
    let (mut db, mut spaces) = open;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (staging, refused) = stage(&spaces, &group);
        // A job refused while staging wrote nothing and holds no other job back; a
        // failed commit may leave the database refusing writes.
        let committed = staging.commit(&db);
        let unanswered = match &committed {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, "the queue could not write to disk");
                new_records(&group, &refused)
            }
        };
        for ((_, done), refused) in group.into_iter().zip(refused) {
            let result = match refused {
                Some(e) => Err(e),
                None => committed.clone(),
            };
            let _caller_gone = done.send(result);
        }
        if committed.is_err() {
            shared.failed_writes.fetch_add(1, Relaxed);
            shared.spaces.store(None);
            // The old database closes (and unlocks) once its last handle is gone.
            drop(spaces);
            drop(db);
            match reopen(&shared, path, &jobs, &unanswered) {
                Some(open) => (db, spaces) = open,
                None => return,
            }
        }
    }
}

/// The records a group writes for the first time (a queued message, a delivered one
/// kept for its key), but not a dead letter queued again: it existed before.
fn new_records(group: &[Job], refused: &[Option<StoreError>]) -> Vec<Record> {
    group
        .iter()
        .zip(refused)
        .filter(|(_, refused)| refused.is_none())
        .map(|((ops, _), _)| ops)
        .filter(|ops| !ops.iter().any(|op| matches!(op, Op::LeaveDead { .. })))
        .flatten()
        .filter_map(|op| match op {
            Op::Put {
                record,
                old_due: None,
                ..
            } => Some((**record).clone()),
            _ => None,
        })
        .collect()
}

/// A commit that failed may still reach the disk: the journal keeps what it could
/// not flush in memory, and writes it out when it is closed if there is space by
/// then. Its writers were answered with an error (the client got 507), so whatever
/// of their new records came back with the journal is removed before anyone reads.
fn forget_unanswered(
    db: &Database,
    spaces: &Spaces,
    records: &[Record],
) -> Result<usize, StoreError> {
    let mut staging = Staging::new(spaces);
    let mut found = 0;
    for record in records {
        if read_record(&spaces.messages, &record.id)?.is_some() {
            staging.remove_new(record)?;
            found += 1;
        }
    }
    staging.commit(db)?;
    Ok(found)
}

/// Stages every job of a group into one batch. A job whose ops cannot be staged (a
/// record that cannot be read) is refused alone: the batch is staged again without it.
fn stage<'a>(spaces: &'a Spaces, group: &[Job]) -> (Staging<'a>, Vec<Option<StoreError>>) {
    let mut refused: Vec<Option<StoreError>> = vec![None; group.len()];
    'again: loop {
        let mut staging = Staging::new(spaces);
        for (i, (ops, _)) in group.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            if let Err(e) = ops.iter().try_for_each(|op| staging.apply(op)) {
                if !matches!(e, StoreError::NotDead) {
                    tracing::error!(error = %e, "a queue write was refused");
                }
                refused[i] = Some(e);
                continue 'again;
            }
        }
        return (staging, refused);
    }
}

/// Opens the database again after a failed write, once every [`REOPEN_EVERY`],
/// answering the writes that come meanwhile with an error, and removes what of the
/// `unanswered` records came back (see [`forget_unanswered`]) before readers see it.
/// `None` when the store is being dropped.
fn reopen(
    shared: &Shared,
    path: &Path,
    jobs: &std_mpsc::Receiver<Job>,
    unanswered: &[Record],
) -> Option<Open> {
    loop {
        // Writes keep coming: the next try is at a fixed time, not after a quiet second.
        let next_try = std::time::Instant::now() + REOPEN_EVERY;
        loop {
            let wait = next_try.saturating_duration_since(std::time::Instant::now());
            match jobs.recv_timeout(wait) {
                Ok((_, done)) => {
                    let _caller_gone = done.send(Err(reopening()));
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        let (db, spaces) = match open_db(path) {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "the queue store could not be opened again yet");
                continue;
            }
        };
        match forget_unanswered(&db, &spaces, unanswered) {
            Ok(found) => {
                if found > 0 {
                    tracing::warn!(
                        records = found,
                        "writes answered with an error had reached the disk; removed"
                    );
                }
                let spaces = Arc::new(spaces);
                shared.spaces.store(Some(spaces.clone()));
                tracing::info!(path = %path.display(), "the queue store is open again");
                return Some((db, spaces));
            }
            Err(e) => {
                shared.failed_writes.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "the queue store could not be cleaned up yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::Record;

    fn queued(id: Id) -> Record {
        Record {
            id,
            status: Status::Queued,
            created_ms: 1,
            updated_ms: 1,
            due_ms: 1,
            attempts: 0,
            content_type: None,
            idempotency_key: "k".into(),
            region: None,
            routing_key: None,
            master: None,
            last_error: None,
            body: bytes::Bytes::from_static(b"m"),
            answer: None,
        }
    }

    #[test]
    fn new_records_answered_with_an_error_are_removed_with_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, spaces) = open_db(dir.path()).unwrap();
        let keyed = Record {
            routing_key: Some("alice".into()),
            idempotency_key: "order-1".into(),
            ..queued([1; 16])
        };
        let delivered = Record {
            status: Status::Delivered,
            idempotency_key: "order-2".into(),
            ..queued([2; 16])
        };
        let kept = queued([3; 16]);
        let job = |ops: Vec<Op>| (ops, oneshot::channel().0);
        let group = vec![
            job(vec![Op::put_new(keyed.clone(), true)]),
            job(vec![Op::put_new(delivered.clone(), true)]),
            job(vec![Op::put_new(kept.clone(), false)]),
        ];
        let (staging, _) = stage(&spaces, &group);
        staging.commit(&db).unwrap();
        // The first two were answered with an error; the third was not.
        let removed = forget_unanswered(&db, &spaces, &[keyed, delivered, queued([4; 16])]);
        assert_eq!(removed.unwrap(), 2, "only what is there");
        for id in [[1; 16], [2; 16]] {
            assert!(read_record(&spaces.messages, &id).unwrap().is_none());
        }
        assert!(read_record(&spaces.messages, &[3; 16]).unwrap().is_some());
        let due: Vec<Id> = time_range(&spaces.due, 0, u64::MAX, 10)
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(due, vec![[3; 16]]);
        assert!(first_of_line(&spaces.keys, "alice", &Changes::new())
            .unwrap()
            .is_none());
        assert!(spaces.idem.get("order-1").unwrap().is_none());
        assert!(spaces.idem.get("order-2").unwrap().is_none());
        assert!(time_range(&spaces.done, 0, u64::MAX, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_job_that_cannot_be_staged_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spaces = store.spaces().unwrap();
        // A record that cannot be read back, as a damaged disk could leave one.
        spaces.messages.insert([1; 16], b"not a record").unwrap();
        let job = |ops: Vec<Op>| (ops, oneshot::channel().0);
        let group = vec![
            job(vec![Op::put_new(queued([2; 16]), false)]),
            job(vec![Op::ForgetDead { id: [1; 16] }]),
            job(vec![Op::put_new(queued([3; 16]), false)]),
        ];
        let (staging, refused) = stage(&spaces, &group);
        let refused: Vec<bool> = refused.iter().map(Option::is_some).collect();
        assert_eq!(refused, vec![false, true, false]);
        let staged: std::collections::HashSet<Id> = staging.records.keys().copied().collect();
        assert_eq!(staged, [[2; 16], [3; 16]].into_iter().collect());
    }
}
