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
//! - `idem`: a client's `Idempotency-Key` (scoped by its client id) → id (16 bytes) + accepted at (8 bytes,
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
//! so they are removed before the reopened store is read. The reopened store is open
//! again only once that clean-up commit (never empty) has landed: it writes again.
//!
//! **A write the store cannot take fails alone.** A job with a key fjall would panic
//! on (empty, or over 65,535 bytes) is refused while staging with
//! [`StoreError::BadKey`]; a panic while staging a job refuses that job; a panic while
//! building or committing a batch fails that batch's writes (mid-commit, as a failed
//! commit: the store is reopened). The writer goes on with the next writes, and should
//! it still fail, it opens the store again. [`Store::state`] says whether it can write.
//!
//! **Errors.** [`StoreError`]'s `Display` is a short reason for a client ("the disk is
//! full"); the library's text is its source, for the log ([`StoreError::detail`]).

use super::record::{Id, Record, Status};
use arc_swap::ArcSwapOption;
use fjall::config::FilterPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
/// fjall takes keys of 1 to this many bytes, and panics on any other.
const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// Whether fjall takes `key` (see [`MAX_KEY_BYTES`]).
fn storable(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

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
    /// With `remember_key`, the record's `idempotency_key` is filed in `idem`, scoped
    /// by its client (see [`Record::idempotency_scope`]).
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
    /// Takes a queued message out for good: a peer now holds it
    /// (`crate::cluster::handoff`). Its `due` entry, its place in its routing key's
    /// line and the `idem` entry that names it go with it; when it headed its line
    /// (had a `due` entry), the next of the line becomes due at `next_due`. A message
    /// that is no longer queued, or gone, is left as it is.
    HandedOff { id: Id, next_due: u64 },
    /// Tests: panics while its batch is staged.
    #[cfg(test)]
    Panic,
    /// Tests: makes the writer panic outside the guards of a batch.
    #[cfg(test)]
    PanicUnguarded,
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

/// Why the store did not do what was asked. Its `Display` is a short reason fit for a
/// client's error body; the library's own text stays in the source, for the log
/// (see [`StoreError::detail`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The disk is full (ENOSPC).
    #[error("the disk is full")]
    DiskFull(#[source] Cause),
    /// Any other failure of the storage (I/O, a damaged record, a failed writer step).
    #[error("the queue storage failed")]
    Failed(#[source] Cause),
    /// A write failed; until the store is open again, everything is refused at once.
    #[error("the store is being reopened after a failed write")]
    Reopening,
    /// As [`StoreError::Reopening`], after a write that found the disk full.
    #[error("the disk is full; the store is being reopened")]
    ReopeningDiskFull,
    /// The writer thread is gone: nothing can be written until a restart.
    #[error("the queue writer has stopped")]
    WriterStopped,
    /// A key of the message cannot be stored (empty, or longer than the store takes);
    /// only the write that carried it is refused.
    #[error("the {0} cannot be stored: {1}")]
    BadKey(&'static str, &'static str),
    /// A dead-letter operation ([`Op::LeaveDead`], [`Op::ForgetDead`]) found no dead
    /// letter with its id: another one took it first, or there never was one.
    #[error("not a dead letter")]
    NotDead,
}

impl StoreError {
    /// A failure described by `text` (no library error behind it).
    pub fn failed(text: impl Into<String>) -> StoreError {
        StoreError::Failed(Cause::text(text))
    }

    /// The reason with every source, for the log: may carry library text
    /// (`FjallError: Io(Os { code: 28, ... })`), never for a client.
    pub fn detail(&self) -> String {
        crate::util::error_chain(self)
    }

    /// Whether the disk was found full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull(_) | StoreError::ReopeningDiskFull
        )
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        let cause = Cause(Arc::new(e));
        if cause.is_disk_full() {
            StoreError::DiskFull(cause)
        } else {
            StoreError::Failed(cause)
        }
    }
}

/// What a [`StoreError`] came from: a library's error or a sentence, shared so the
/// error can be answered to every write of a failed batch.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    fn text(text: impl Into<String>) -> Cause {
        Cause(Arc::new(Text(text.into())))
    }

    /// Whether an I/O error in the chain is ENOSPC.
    fn is_disk_full(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*self.0);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                    return true;
                }
            }
            next = e.source();
        }
        false
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[derive(Debug)]
struct Text(String);

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Text {}

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
    shared: Arc<Shared>,
    /// `None` only while dropping.
    writer: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Tests: every write is refused as while reopening.
    #[cfg(test)]
    refuse_writes: AtomicBool,
}

/// Whether the store can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Open: writes are committed.
    Open,
    /// A write failed; the writer opens the database again (once a second) and
    /// refuses every write meanwhile. It is open again only once a write landed.
    Reopening,
    /// The writer thread is gone: nothing is written until a restart.
    Stopped,
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
            .map_err(|e| StoreError::failed(format!("cannot create {}: {e}", path.display())))?;
        let (db, open) = open_db(path)?;
        let open = Arc::new(open);
        let shared = Arc::new(Shared {
            spaces: ArcSwapOption::new(Some(open.clone())),
            failed_writes: AtomicU64::new(0),
            disk_full: AtomicBool::new(false),
        });
        let (writer, jobs) = std_mpsc::channel::<Job>();
        let writer_side = shared.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || supervise((db, open), &writer_side, &path, jobs))
            .map_err(|e| StoreError::failed(format!("cannot start the queue writer: {e}")))?;
        Ok(Store {
            shared,
            writer: Some(writer),
            thread: Some(thread),
            #[cfg(test)]
            refuse_writes: AtomicBool::new(false),
        })
    }

    /// Tests: refuses every write (as while reopening) until called with `false`.
    #[cfg(test)]
    pub(crate) fn refuse_writes(&self, refuse: bool) {
        self.refuse_writes.store(refuse, Relaxed);
    }

    /// Commits that failed since the store was opened.
    pub fn failed_writes(&self) -> u64 {
        self.shared.failed_writes.load(Relaxed)
    }

    /// Whether the store can write now (see [`State`]).
    pub fn state(&self) -> State {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            State::Stopped
        } else if self.shared.spaces.load().is_none() {
            State::Reopening
        } else {
            State::Open
        }
    }

    fn spaces(&self) -> Result<Arc<Spaces>, StoreError> {
        self.shared
            .spaces
            .load_full()
            .ok_or_else(|| self.shared.refusal())
    }

    /// Applies `ops` atomically and durably (see the module docs).
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.refuse_writes.load(Relaxed) {
            return Err(StoreError::Reopening);
        }
        let (tx, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .and_then(|w| w.send((ops, tx)).ok())
            .ok_or(StoreError::WriterStopped)?;
        // Every job is answered; one dropped unanswered went down with a writer that
        // failed and was started again.
        rx.await
            .map_err(|_| StoreError::failed("the queue writer dropped the write"))?
    }

    pub fn get(&self, id: &Id) -> Result<Option<Record>, StoreError> {
        read_record(&self.spaces()?.messages, id)
    }

    /// The first message that carried the client's `Idempotency-Key` `key`, if one
    /// is kept.
    pub fn first_use(&self, key: &str) -> Result<Option<FirstUse>, StoreError> {
        if !storable(key.as_bytes()) {
            return Ok(None);
        }
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

    /// Queued messages with ids after `after` (all, without it), in acceptance order,
    /// that `skip` does not refuse: up to `limit` of them and about `max_bytes` of
    /// stored records (always one, when one is there). Reads the `messages` keyspace,
    /// stepping over delivered records and dead letters: a cost per record stored.
    pub fn queued_after(
        &self,
        after: Option<Id>,
        limit: usize,
        max_bytes: usize,
        skip: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        use std::ops::Bound;
        let spaces = self.spaces()?;
        let start = match after {
            Some(id) => Bound::Excluded(id.to_vec()),
            None => Bound::Unbounded,
        };
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for guard in spaces
            .messages
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            if out.len() >= limit || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let value = guard.value()?;
            // The status byte follows the version and the id (see `record`): the
            // other records are stepped over without decoding them.
            if value.get(17) != Some(&0) {
                continue;
            }
            let record = Record::decode(&value)
                .map_err(|e| StoreError::failed(format!("a stored record is unreadable: {e}")))?;
            if record.status == Status::Queued && !skip(&record) {
                bytes += value.len();
                out.push(record);
            }
        }
        Ok(out)
    }
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
            .map_err(|e| StoreError::failed(format!("a stored record is unreadable: {e}"))),
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
    if !storable(&line_entry(key, &[0; 16])) {
        // No line of such a key can be stored.
        return Ok(None);
    }
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
        if !storable(key.as_bytes()) {
            return Ok(None);
        }
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
            Op::HandedOff { id, next_due } => self.handed_off(&id, next_due),
            #[cfg(test)]
            Op::Panic => panic!("a job that panics while staged"),
            #[cfg(test)]
            Op::PanicUnguarded => Ok(()),
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
        let scope = record.idempotency_scope();
        if remember_key && !storable(scope.as_bytes()) {
            return Err(bad_key("Idempotency-Key", &record.idempotency_key));
        }
        if let Some(k) = &record.routing_key {
            if !storable(&line_entry(k, &id)) {
                return Err(bad_key("routing key", k));
            }
        }
        if let Some(old) = old_due {
            self.due.insert(time_key(old, &id).to_vec(), None);
        }
        if remember_key {
            let first = FirstUse {
                id,
                at_ms: record.created_ms,
            };
            self.idem
                .insert(scope.as_bytes().to_vec(), Some(first.encode()));
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

    /// See [`Op::HandedOff`]. The head of a line is the one with a `due` entry
    /// (usually its lowest id; not always on a node that took messages over).
    fn handed_off(&mut self, id: &Id, next_due: u64) -> Result<(), StoreError> {
        let record = match self.record(id)? {
            Some(record) if record.status == Status::Queued => record,
            _ => return Ok(()),
        };
        let due_key = time_key(record.due_ms, id).to_vec();
        let was_due = match self.due.get(&due_key) {
            Some(staged) => staged.is_some(),
            None => self.spaces.due.contains_key(&due_key)?,
        };
        self.due.insert(due_key, None);
        if let Some(key) = &record.routing_key {
            self.keys.insert(line_entry(key, id), None);
            if was_due {
                self.promote_next(key, next_due)?;
            }
        }
        self.forget(&record)
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

    /// Removes a record and the `idem` entry that names it (an unstorable key names
    /// none).
    fn forget(&mut self, record: &Record) -> Result<(), StoreError> {
        let scope = record.idempotency_scope();
        if self.first_use(&scope)?.is_some_and(|f| f.id == record.id) {
            self.idem.insert(scope.as_bytes().to_vec(), None);
        }
        self.records.insert(record.id, None);
        Ok(())
    }

    /// The batch that writes what is staged. A key fjall would not take (see
    /// [`storable`]) fails it: staging refuses such keys first, so this is a last
    /// guard against a panic inside fjall. Removing such a key removes nothing.
    fn into_batch(self, db: &Database) -> Result<fjall::OwnedWriteBatch, StoreError> {
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
                if !storable(&key) {
                    if value.is_none() {
                        continue;
                    }
                    return Err(StoreError::failed("a key of the write is unstorable"));
                }
                match value {
                    Some(v) => batch.insert(space, key, v),
                    None => batch.remove(space, key),
                }
            }
        }
        Ok(batch)
    }

    /// Builds and commits the batch; a panic inside fjall is an error like any other.
    fn commit(self, db: &Database) -> Result<(), StoreError> {
        guarded("committing a queue write", || {
            Ok::<_, StoreError>(self.into_batch(db)?.commit()?)
        })
    }
}

/// Runs `f`; a panic (already logged and counted by the process's panic hook) becomes a
/// [`StoreError::Failed`] naming `what`.
fn guarded<T, E: Into<StoreError>>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(StoreError::failed(format!("a panic while {what}"))),
    }
}

fn bad_key(what: &'static str, key: &str) -> StoreError {
    let why = if key.is_empty() {
        "it is empty"
    } else {
        "it is too long"
    };
    StoreError::BadKey(what, why)
}

/// What the writer shares with the readers.
struct Shared {
    /// `None` while the writer reopens the database after a failed write.
    spaces: ArcSwapOption<Spaces>,
    failed_writes: AtomicU64,
    /// The last failed write found the disk full.
    disk_full: AtomicBool,
}

impl Shared {
    /// The answer to a read or write while the database is being reopened.
    fn refusal(&self) -> StoreError {
        if self.disk_full.load(Relaxed) {
            StoreError::ReopeningDiskFull
        } else {
            StoreError::Reopening
        }
    }

    /// A write failed with `e`: counted, and readers are turned away until the
    /// database is open again.
    fn write_failed(&self, e: &StoreError) {
        self.failed_writes.fetch_add(1, Relaxed);
        self.disk_full.store(e.is_disk_full(), Relaxed);
        self.spaces.store(None);
    }
}

/// The open database, and its keyspaces as the writer uses them.
type Open = (Database, Arc<Spaces>);

/// The writer thread: runs [`write_loop`], and should it ever fail with a panic that
/// its own guards did not catch, opens the database again and goes on, as after a
/// failed write. Returns when the store is dropped.
fn supervise(open: Open, shared: &Shared, path: &Path, jobs: std_mpsc::Receiver<Job>) {
    let mut open = Some(open);
    loop {
        let ran = catch_unwind(AssertUnwindSafe(|| {
            let open = match open.take() {
                Some(open) => open,
                None => match reopen(shared, path, &jobs, &[]) {
                    Some(open) => open,
                    None => return,
                },
            };
            write_loop(open, shared, path, &jobs);
        }));
        if ran.is_ok() {
            return;
        }
        // The panic hook logged the panic; the jobs in hand were dropped, which their
        // callers see as an error.
        tracing::error!("the queue writer failed; it opens the store again");
        shared.write_failed(&StoreError::failed("the queue writer failed"));
    }
}

fn write_loop(open: Open, shared: &Shared, path: &Path, jobs: &std_mpsc::Receiver<Job>) {
    let (mut db, mut spaces) = open;
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        #[cfg(test)]
        if group
            .iter()
            .flat_map(|(ops, _)| ops)
            .any(|op| matches!(op, Op::PanicUnguarded))
        {
            panic!("the writer fails outside the guards of a batch");
        }
        let (staging, refused) = stage(&spaces, &group);
        // A job refused while staging wrote nothing and holds no other job back.
        // A batch that cannot be built fails its own writes and nothing else; a failed
        // commit (or one that panicked) may leave the database refusing writes.
        let (committed, reopen_now) =
            match guarded("preparing a queue write", || staging.into_batch(&db)) {
                Err(e) => (Err(e), false),
                Ok(batch) => {
                    let committed = guarded("committing a queue write", || batch.commit());
                    let failed = committed.is_err();
                    (committed, failed)
                }
            };
        let unanswered = match &committed {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e.detail(), "the queue could not write to disk");
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
        if let Err(e) = &committed {
            if !reopen_now {
                continue;
            }
            shared.write_failed(e);
            // The old database closes (and unlocks) once its last handle is gone.
            drop(spaces);
            drop(db);
            match reopen(shared, path, jobs, &unanswered) {
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

/// The `due` key no message ever has (time 0, id 0): removing it is the write that
/// proves a reopened database can write.
const PROBE: [u8; 24] = [0; 24];

/// A commit that failed may still reach the disk: the journal keeps what it could
/// not flush in memory, and writes it out when it is closed if there is space by
/// then. Its writers were answered with an error (the client got 507), so whatever
/// of their new records came back with the journal is removed before anyone reads.
/// The same commit removes [`PROBE`], so it is never empty: when it lands, the
/// database writes again.
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
    staging.due.insert(PROBE.to_vec(), None);
    staging.commit(db)?;
    Ok(found)
}

/// Stages every job of a group into one batch. A job whose ops cannot be staged (a
/// record that cannot be read, a key that cannot be stored, a panic) is refused
/// alone: the batch is staged again without it.
fn stage<'a>(spaces: &'a Spaces, group: &[Job]) -> (Staging<'a>, Vec<Option<StoreError>>) {
    let mut refused: Vec<Option<StoreError>> = vec![None; group.len()];
    'again: loop {
        let mut staging = Staging::new(spaces);
        for (i, (ops, _)) in group.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            let staged = guarded("staging a queue write", || {
                ops.iter().try_for_each(|op| staging.apply(op))
            });
            if let Err(e) = staged {
                match e {
                    StoreError::NotDead => {}
                    StoreError::BadKey(..) => {
                        tracing::warn!(error = %e, "a queue write was refused");
                    }
                    _ => tracing::error!(error = %e.detail(), "a queue write was refused"),
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
                    let _caller_gone = done.send(Err(shared.refusal()));
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        let (db, spaces) = match guarded("opening the queue store", || open_db(path)) {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e.detail(), "the queue store could not be opened again yet");
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
                shared.disk_full.store(e.is_disk_full(), Relaxed);
                tracing::warn!(error = %e.detail(), "the queue store could not be cleaned up yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::Record;

    fn queued(id: Id) -> Record {
        Record::test_queued(id, b"m")
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

    fn keyed(id: Id, key: &str) -> Record {
        Record {
            routing_key: Some(key.into()),
            ..queued(id)
        }
    }

    #[tokio::test]
    async fn a_write_with_a_key_fjall_refuses_is_refused_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let empty_idem = Record {
            idempotency_key: String::new(),
            ..queued([1; 16])
        };
        let long_idem = Record {
            idempotency_key: "i".repeat(MAX_KEY_BYTES + 1),
            ..queued([2; 16])
        };
        let long_routing = keyed([3; 16], &"r".repeat(MAX_KEY_BYTES));
        let fine = keyed([4; 16], "alice");
        // Written at once, so that the writer may take them as one group.
        let (a, b, c, d) = tokio::join!(
            store.write(vec![Op::put_new(empty_idem, true)]),
            store.write(vec![Op::put_new(long_idem, true)]),
            store.write(vec![Op::put_new(long_routing, false)]),
            store.write(vec![Op::put_new(fine, true)]),
        );
        for (refused, what) in [
            (a, "Idempotency-Key"),
            (b, "Idempotency-Key"),
            (c, "routing key"),
        ] {
            let e = refused.unwrap_err();
            assert!(matches!(e, StoreError::BadKey(w, _) if w == what), "{e:?}");
        }
        d.unwrap();
        assert!(store.get(&[4; 16]).unwrap().is_some());
        for id in [[1; 16], [2; 16], [3; 16]] {
            assert!(
                store.get(&id).unwrap().is_none(),
                "nothing of a refused write"
            );
        }
        // The writer is still there, and reads of such keys find nothing, no panic.
        store
            .write(vec![Op::put_new(queued([5; 16]), false)])
            .await
            .unwrap();
        assert_eq!(store.state(), State::Open);
        assert!(store.first_use("").unwrap().is_none());
        assert!(store.first_use(&"i".repeat(70_000)).unwrap().is_none());
        assert!(!store.key_has_waiting(&"r".repeat(70_000)).unwrap());
        assert!(store.key_has_waiting("alice").unwrap());
        assert_eq!(
            StoreError::BadKey("Idempotency-Key", "it is empty").to_string(),
            "the Idempotency-Key cannot be stored: it is empty"
        );
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = tokio::join!(
            store.write(vec![Op::put_new(queued([1; 16]), false)]),
            store.write(vec![Op::put_new(queued([2; 16]), false), Op::Panic]),
            store.write(vec![Op::put_new(queued([3; 16]), false)]),
        );
        let e = b.unwrap_err();
        assert!(matches!(e, StoreError::Failed(_)), "{e:?}");
        assert_eq!(e.to_string(), "the queue storage failed");
        a.unwrap();
        c.unwrap();
        assert!(store.get(&[2; 16]).unwrap().is_none());
        store
            .write(vec![Op::put_new(queued([4; 16]), false)])
            .await
            .unwrap();
        for id in [[1; 16], [3; 16], [4; 16]] {
            assert!(store.get(&id).unwrap().is_some());
        }
        assert_eq!((store.state(), store.failed_writes()), (State::Open, 0));
    }

    #[test]
    fn a_batch_never_hands_fjall_a_key_it_would_panic_on() {
        let dir = tempfile::tempdir().unwrap();
        let (db, spaces) = open_db(dir.path()).unwrap();
        // Removing what cannot be stored removes nothing.
        let mut staging = Staging::new(&spaces);
        staging.idem.insert(Vec::new(), None);
        staging.keys.insert(vec![b'k'; MAX_KEY_BYTES + 1], None);
        staging.commit(&db).unwrap();
        // Writing it fails the batch, without a panic.
        let mut staging = Staging::new(&spaces);
        staging.idem.insert(Vec::new(), Some(vec![1]));
        assert!(matches!(staging.commit(&db), Err(StoreError::Failed(_))));
        let panicked = guarded("testing", || -> Result<(), StoreError> { panic!("boom") });
        assert!(matches!(panicked, Err(StoreError::Failed(_))));
    }

    #[test]
    fn errors_say_a_short_reason_and_keep_the_detail_for_the_log() {
        let full = StoreError::from(fjall::Error::Io(std::io::Error::from_raw_os_error(28)));
        assert!(full.is_disk_full());
        assert_eq!(full.to_string(), "the disk is full");
        assert!(full.detail().contains("os error 28"), "{}", full.detail());
        let poisoned = StoreError::from(fjall::Error::Poisoned);
        assert!(!poisoned.is_disk_full());
        assert_eq!(poisoned.to_string(), "the queue storage failed");
        assert!(poisoned.detail().contains("Poisoned"));
        for e in [
            full,
            poisoned,
            StoreError::ReopeningDiskFull,
            StoreError::Reopening,
        ] {
            let text = e.to_string();
            assert!(!text.contains("Fjall") && !text.contains("Os {"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_writer_that_fails_outside_its_guards_opens_the_store_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(vec![Op::put_new(queued([1; 16]), false)])
            .await
            .unwrap();
        let e = store.write(vec![Op::PanicUnguarded]).await.unwrap_err();
        assert_eq!(e.to_string(), "the queue storage failed");
        // Refused while the store is opened again, then written.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match store.write(vec![Op::put_new(queued([2; 16]), false)]).await {
                Ok(()) => break,
                Err(StoreError::Reopening) => {
                    assert!(std::time::Instant::now() < deadline, "never open again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((store.state(), store.failed_writes()), (State::Open, 1));
        for id in [[1; 16], [2; 16]] {
            assert!(store.get(&id).unwrap().is_some());
        }
    }
}
