//! The audit trail of the failover controller: every health transition, failover,
//! breaker change, pause and config change is recorded as an [`Event`], appended as
//! one JSON line to `events.jsonl` under the data dir, and served newest first (the
//! `/ha/events` admin endpoint).
//!
//! # Durability
//!
//! When [`AuditLog::record`] returns, the event has its id and timestamp, is in memory
//! (so [`AuditLog::recent`] shows it at once) and is queued for the writer thread.
//! **Nothing is on disk yet**: a crash at that point loses it. The writer thread takes
//! whatever is queued as one batch, appends it and calls `sync_data` once for the batch
//! (group commit); only after that call succeeds is the event durable.
//! [`AuditLog::flush`] blocks until every event recorded before the call has reached
//! that point, so call it at shutdown (dropping the log also writes and syncs what is
//! pending) and wherever a caller needs a guarantee.
//!
//! A write or sync error never stops the controller: it is logged, the events of that
//! batch stay in memory but may be missing from the file, and the next `flush` reports
//! the error.
//!
//! # Files
//!
//! When `events.jsonl` passes 16 MiB it is renamed to `events.jsonl.1` (replacing the
//! previous one) and a new file is started, so at most two files exist. On open both
//! are read, older first, and the newest [`KEEP`] events are loaded; ids continue from
//! the largest id found. A torn or corrupt line (a crash mid-write, a hand edit) is
//! skipped with a warning; a torn tail of `events.jsonl` is cut off so that new lines
//! start on a line of their own.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::util::rfc3339;

/// How many events are kept in memory (and loaded from disk on open).
pub const KEEP: usize = 10_000;

/// The name of the current file under the data dir.
const FILE_NAME: &str = "events.jsonl";
/// The name the current file is rotated to.
const ROTATED_NAME: &str = "events.jsonl.1";
/// The size past which the current file is rotated.
const ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// The most queued messages the writer takes into one batch.
const MAX_BATCH: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Degraded,
    Recovered,
    /// Slow start finished: the master is at its full share.
    Healthy,
    Failed,
    FailoverStarted,
    FailoverCompleted,
    Failback,
    BreakerOpen,
    BreakerClosed,
    Paused,
    Resumed,
    ConfigReloaded,
    ConfigRejected,
    /// A mutating admin route was called (with `route` and `caller`).
    AdminAction,
    /// A draining master has no exchange or queued delivery left.
    Drained,
    /// A master answered what the ban rules name: out of rotation until reinstated.
    Suspended,
    /// An operator lifted a suspension.
    Reinstated,
    /// Cluster mode: a new leader and term, as this node saw it.
    LeaderChanged,
    /// Cluster mode: this node gave leadership up.
    LeaderResigned,
    /// Cluster mode: a node appeared, or came back.
    NodeJoined,
    /// Cluster mode: a node left cleanly.
    NodeLeft,
    /// Cluster mode: a node's lease ran out without a clean leave.
    NodeUnreachable,
    /// Cluster mode: this node lost etcd and serves with its last state.
    ClusterIsolated,
    /// Cluster mode: this node reaches etcd again.
    ClusterRejoined,
}

impl EventKind {
    /// The snake_case name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Degraded => "degraded",
            EventKind::Recovered => "recovered",
            EventKind::Healthy => "healthy",
            EventKind::Failed => "failed",
            EventKind::FailoverStarted => "failover_started",
            EventKind::FailoverCompleted => "failover_completed",
            EventKind::Failback => "failback",
            EventKind::BreakerOpen => "breaker_open",
            EventKind::BreakerClosed => "breaker_closed",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::ConfigReloaded => "config_reloaded",
            EventKind::ConfigRejected => "config_rejected",
            EventKind::AdminAction => "admin_action",
            EventKind::Drained => "drained",
            EventKind::Suspended => "suspended",
            EventKind::Reinstated => "reinstated",
            EventKind::LeaderChanged => "leader_changed",
            EventKind::LeaderResigned => "leader_resigned",
            EventKind::NodeJoined => "node_joined",
            EventKind::NodeLeft => "node_left",
            EventKind::NodeUnreachable => "node_unreachable",
            EventKind::ClusterIsolated => "cluster_isolated",
            EventKind::ClusterRejoined => "cluster_rejoined",
        }
    }
}

/// One recorded event, as stored and as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing; continues after a restart (largest id on disk + 1).
    pub id: u64,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    pub kind: EventKind,
    pub master: Option<String>,
    pub backup: Option<String>,
    pub reason: String,
    pub duration_ms: Option<u64>,
    /// For `admin_action`: the method and path called. Absent from other events (and
    /// from lines written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// For `admin_action`: the peer address of the admin connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

/// What a caller fills; `id` and `at` are assigned by [`AuditLog::record`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub master: Option<String>,
    pub backup: Option<String>,
    pub reason: String,
    pub duration_ms: Option<u64>,
    pub route: Option<String>,
    pub caller: Option<String>,
}

impl NewEvent {
    pub fn new(kind: EventKind, reason: impl Into<String>) -> Self {
        NewEvent {
            kind,
            master: None,
            backup: None,
            reason: reason.into(),
            duration_ms: None,
            route: None,
            caller: None,
        }
    }

    /// An admin route called by `caller`.
    pub fn admin_action(
        route: impl Into<String>,
        caller: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        NewEvent {
            route: Some(route.into()),
            caller,
            ..NewEvent::new(EventKind::AdminAction, reason)
        }
    }

    pub fn master(mut self, id: &str) -> Self {
        self.master = Some(id.to_owned());
        self
    }

    pub fn backup(mut self, id: &str) -> Self {
        self.backup = Some(id.to_owned());
        self
    }

    /// Whole milliseconds, saturating.
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// The audit trail. `Send + Sync`; share it as `Arc<AuditLog>`.
pub struct AuditLog {
    state: Mutex<State>,
    /// `None` for a memory-only log, and during drop.
    tx: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("on_disk", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

struct State {
    next_id: u64,
    /// Oldest first, at most [`KEEP`].
    events: VecDeque<Event>,
}

enum Msg {
    /// One JSON line, newline included.
    Line(Vec<u8>),
    /// Answer once everything queued before it is written and synced.
    Flush(mpsc::Sender<io::Result<()>>),
}

impl AuditLog {
    /// Opens (creating the directory) `dir/events.jsonl`, loads the newest [`KEEP`]
    /// events into memory and starts the writer thread ("audit-writer").
    ///
    /// A torn or corrupt line is skipped with a warning and never fails the open; an
    /// I/O error reading, creating or repairing the files does.
    pub fn open(dir: &Path) -> io::Result<AuditLog> {
        Self::open_with_limit(dir, ROTATE_BYTES)
    }

    fn open_with_limit(dir: &Path, rotate_bytes: u64) -> io::Result<AuditLog> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let rotated = dir.join(ROTATED_NAME);

        let mut loaded = Loaded::default();
        if let Some(data) = read_if_exists(&rotated)? {
            loaded.parse(&rotated, &data);
        }
        let current = read_if_exists(&path)?;
        if let Some(data) = &current {
            loaded.parse(&path, data);
        }

        let existed = current.is_some();
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Some(data) = &current {
            repair_tail(&path, &mut file, data)?;
        }
        if !existed {
            sync_dir(dir)?;
        }
        let size = file.metadata()?.len();

        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            path,
            rotated,
            rotate_bytes,
            file: Some(file),
            size,
            error: None,
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;

        Ok(AuditLog {
            state: Mutex::new(State {
                next_id: loaded.max_id + 1,
                events: loaded.events,
            }),
            tx: Some(tx),
            writer: Some(handle),
        })
    }

    /// No file: memory only (for tests and callers without a data dir).
    pub fn in_memory() -> AuditLog {
        AuditLog {
            state: Mutex::new(State {
                next_id: 1,
                events: VecDeque::new(),
            }),
            tx: None,
            writer: None,
        }
    }

    /// Assigns the id and timestamp, keeps the event in memory at once and queues its
    /// line for the writer thread. Never waits for the disk: the event is not durable
    /// until a later [`flush`](Self::flush) returns Ok (see the module docs).
    pub fn record(&self, event: NewEvent) -> Event {
        let at = rfc3339(SystemTime::now());
        let mut state = self.lock();
        let event = Event {
            id: state.next_id,
            at,
            kind: event.kind,
            master: event.master,
            backup: event.backup,
            reason: event.reason,
            duration_ms: event.duration_ms,
            route: event.route,
            caller: event.caller,
        };
        state.next_id += 1;
        // Queued under the lock so that the file keeps id order.
        if let Some(tx) = &self.tx {
            match serde_json::to_vec(&event) {
                Ok(mut line) => {
                    line.push(b'\n');
                    if tx.send(Msg::Line(line)).is_err() {
                        tracing::error!(
                            id = event.id,
                            "audit writer is gone; event kept in memory only"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(id = event.id, error = %e, "cannot encode audit event; kept in memory only");
                }
            }
        }
        if state.events.len() == KEEP {
            state.events.pop_front();
        }
        state.events.push_back(event.clone());
        event
    }

    /// Newest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Blocks until every event recorded before the call is written and synced.
    /// Ok when nothing is pending or there is no file. An error is the first write or
    /// sync error the writer met since it last answered a flush; it is reported once.
    pub fn flush(&self) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.send(Msg::Flush(reply_tx))
            .map_err(|_| io::Error::other("audit writer is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| io::Error::other("audit writer stopped before answering"))?
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere cannot
        // leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for AuditLog {
    /// Stops the writer thread after it has written and synced what is pending.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("audit writer panicked");
            }
        }
    }
}

/// Events read from disk on open.
struct Loaded {
    max_id: u64,
    events: VecDeque<Event>,
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            max_id: 0,
            events: VecDeque::with_capacity(KEEP),
        }
    }
}

impl Loaded {
    fn parse(&mut self, path: &Path, data: &[u8]) {
        for (n, line) in data.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(line) {
                Ok(event) => {
                    self.max_id = self.max_id.max(event.id);
                    if self.events.len() == KEEP {
                        self.events.pop_front();
                    }
                    self.events.push_back(event);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), line = n + 1, error = %e, "skipping a corrupt audit line");
                }
            }
        }
    }
}

fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes sure the next appended line starts on a line of its own: a complete last
/// line that only lacks its newline gets one, a torn one is cut off.
fn repair_tail(path: &Path, file: &mut File, data: &[u8]) -> io::Result<()> {
    if data.last().is_none_or(|&b| b == b'\n') {
        return Ok(());
    }
    let start = data
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |pos| pos + 1);
    if serde_json::from_slice::<Event>(&data[start..]).is_ok() {
        file.write_all(b"\n")?;
    } else {
        tracing::warn!(path = %path.display(), bytes = data.len() - start, "cutting off a torn audit line");
        file.set_len(start as u64)?;
    }
    file.sync_data()
}

/// Makes a created or renamed directory entry durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    path: PathBuf,
    rotated: PathBuf,
    rotate_bytes: u64,
    /// `None` after a failed reopen; retried on the next batch.
    file: Option<File>,
    /// Bytes in the current file known to be good.
    size: u64,
    /// The first error since the last flush was answered.
    error: Option<io::Error>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut buf = Vec::new();
        let mut flushes = Vec::new();
        // `recv` hands out everything queued before it reports the log dropped.
        while let Ok(first) = rx.recv() {
            buf.clear();
            let mut lines = 0usize;
            let mut take = |msg| match msg {
                Msg::Line(line) => {
                    buf.extend_from_slice(&line);
                    lines += 1;
                }
                Msg::Flush(reply) => flushes.push(reply),
            };
            take(first);
            for _ in 1..MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => take(msg),
                    Err(_) => break,
                }
            }
            if lines > 0 {
                self.write_batch(&buf, lines);
            }
            if !flushes.is_empty() {
                let error = self.error.take();
                for reply in flushes.drain(..) {
                    let answer = match &error {
                        None => Ok(()),
                        Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(answer);
                }
            }
        }
    }

    fn write_batch(&mut self, buf: &[u8], lines: usize) {
        if self.file.is_none() {
            self.reopen();
        }
        let Some(file) = self.file.as_mut() else {
            tracing::error!(lines, "audit file unavailable; events kept in memory only");
            return;
        };
        if let Err(e) = file.write_all(buf) {
            tracing::error!(path = %self.path.display(), lines, error = %e, "cannot append audit events; kept in memory only");
            // Cut a partial write so the next batch does not glue onto it.
            if let Err(e) = file.set_len(self.size) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot cut a partial audit write");
                // Its length is unknown now: start over from the real length.
                self.size = file.metadata().map_or(self.size, |m| m.len());
            }
            self.note(e);
            return;
        }
        self.size += buf.len() as u64;
        if let Err(e) = file.sync_data() {
            tracing::error!(path = %self.path.display(), lines, error = %e, "cannot sync audit events");
            self.note(e);
            return;
        }
        if self.size > self.rotate_bytes {
            self.rotate();
        }
    }

    /// Renames the full file to the `.1` name and starts a new one.
    fn rotate(&mut self) {
        if let Err(e) = fs::rename(&self.path, &self.rotated) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit file; still appending to it");
            self.note(e);
            return;
        }
        self.file = None;
        self.reopen();
    }

    fn reopen(&mut self) {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|file| Ok((file.metadata()?.len(), file)));
        match opened {
            Ok((size, file)) => {
                self.file = Some(file);
                self.size = size;
                if let Err(e) = sync_dir(&self.dir) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot sync the audit directory");
                    self.note(e);
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot open the audit file");
                self.note(e);
            }
        }
    }

    fn note(&mut self, e: io::Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn file_lines(dir: &Path, name: &str) -> Vec<Event> {
        let data = fs::read_to_string(dir.join(name)).expect("read audit file");
        data.lines()
            .map(|l| serde_json::from_str(l).expect("every line parses"))
            .collect()
    }

    fn ids(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn audit_record_and_recent_newest_first_with_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        let first = log.record(
            NewEvent::new(EventKind::Degraded, "3 failed checks")
                .master("m1")
                .duration(Duration::from_millis(1500)),
        );
        assert_eq!(first.id, 1);
        assert_eq!(first.kind, EventKind::Degraded);
        assert_eq!(first.master.as_deref(), Some("m1"));
        assert_eq!(first.backup, None);
        assert_eq!(first.duration_ms, Some(1500));
        assert_eq!(first.at.len(), "2026-11-24T19:54:09.123Z".len());
        assert!(first.at.ends_with('Z'));
        log.record(NewEvent::new(EventKind::Failed, "down").master("m1"));
        log.record(
            NewEvent::new(EventKind::FailoverStarted, "m1 failed")
                .master("m1")
                .backup("b1"),
        );

        assert_eq!(ids(&log.recent(10)), vec![3, 2, 1]);
        assert_eq!(ids(&log.recent(2)), vec![3, 2]);
        assert!(log.recent(0).is_empty());
        assert_eq!(log.recent(1)[0].backup.as_deref(), Some("b1"));
    }

    #[test]
    fn audit_events_survive_reopen_and_ids_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = {
            let log = AuditLog::open(dir.path()).expect("open");
            log.record(NewEvent::new(EventKind::ConfigReloaded, "version 2"));
            log.record(NewEvent::new(EventKind::Paused, "admin"));
            log.flush().expect("flush");
            log.recent(10)
        };
        let log = AuditLog::open(dir.path()).expect("reopen");
        assert_eq!(log.recent(10), before);
        let next = log.record(NewEvent::new(EventKind::Resumed, "admin"));
        assert_eq!(next.id, 3);
        assert_eq!(ids(&log.recent(10)), vec![3, 2, 1]);
    }

    #[test]
    fn audit_drop_writes_what_is_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = AuditLog::open(dir.path()).expect("open");
            for i in 0..100 {
                log.record(NewEvent::new(EventKind::Recovered, format!("r{i}")));
            }
        }
        assert_eq!(file_lines(dir.path(), FILE_NAME).len(), 100);
        let log = AuditLog::open(dir.path()).expect("reopen");
        assert_eq!(log.recent(1)[0].id, 100);
    }

    #[test]
    fn audit_torn_last_line_is_skipped_and_ids_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = AuditLog::open(dir.path()).expect("open");
            for _ in 0..3 {
                log.record(NewEvent::new(EventKind::BreakerOpen, "too many failovers"));
            }
            log.flush().expect("flush");
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .expect("open file");
        f.write_all(br#"{"id":4,"at":"2026-11-24T19:5"#)
            .expect("append torn line");
        drop(f);

        {
            let log = AuditLog::open(dir.path()).expect("reopen with a torn line");
            assert_eq!(ids(&log.recent(10)), vec![3, 2, 1]);
            let next = log.record(NewEvent::new(EventKind::BreakerClosed, "cooled down"));
            assert_eq!(next.id, 4);
            log.flush().expect("flush");
        }
        // The torn bytes were cut, so the new line stands on its own.
        let on_disk = file_lines(dir.path(), FILE_NAME);
        assert_eq!(ids(&on_disk), vec![1, 2, 3, 4]);
        let log = AuditLog::open(dir.path()).expect("reopen");
        assert_eq!(ids(&log.recent(10)), vec![4, 3, 2, 1]);
        assert_eq!(log.recent(1)[0].kind, EventKind::BreakerClosed);
    }

    #[test]
    fn audit_complete_last_line_without_newline_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let event = Event {
            id: 7,
            at: "2026-11-24T19:54:09.123Z".into(),
            kind: EventKind::Failback,
            master: Some("m1".into()),
            backup: Some("b1".into()),
            reason: "m1 healthy again".into(),
            duration_ms: Some(42),
            route: None,
            caller: None,
        };
        let line = serde_json::to_string(&event).expect("encode");
        fs::write(dir.path().join(FILE_NAME), line).expect("write");
        {
            let log = AuditLog::open(dir.path()).expect("open");
            assert_eq!(log.recent(10), vec![event]);
            assert_eq!(log.record(NewEvent::new(EventKind::Failed, "x")).id, 8);
            log.flush().expect("flush");
        }
        assert_eq!(ids(&file_lines(dir.path(), FILE_NAME)), vec![7, 8]);
    }

    #[test]
    fn audit_corrupt_line_in_the_middle_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = AuditLog::open(dir.path()).expect("open");
            log.record(NewEvent::new(EventKind::Degraded, "a"));
            log.flush().expect("flush");
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .expect("open file");
        f.write_all(b"not json\n{\"id\":99,\"kind\":\"unknown_kind\"}\n\xff\xfe\n")
            .expect("append garbage");
        drop(f);
        {
            let log = AuditLog::open(dir.path()).expect("open");
            assert_eq!(ids(&log.recent(10)), vec![1]);
            assert_eq!(log.record(NewEvent::new(EventKind::Recovered, "b")).id, 2);
        }
        let log = AuditLog::open(dir.path()).expect("open");
        assert_eq!(ids(&log.recent(10)), vec![2, 1]);
    }

    #[test]
    fn audit_rotation_keeps_the_newest_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limit = 2_000;
        {
            let log = AuditLog::open_with_limit(dir.path(), limit).expect("open");
            for i in 0..60 {
                log.record(
                    NewEvent::new(EventKind::FailoverCompleted, format!("event {i}"))
                        .master("m1")
                        .backup("b1"),
                );
                // One batch per event, so rotation is checked after each.
                log.flush().expect("flush");
            }
        }
        let current = file_lines(dir.path(), FILE_NAME);
        let rotated = file_lines(dir.path(), ROTATED_NAME);
        assert!(!rotated.is_empty());
        let rotated_size = fs::metadata(dir.path().join(ROTATED_NAME))
            .expect("stat")
            .len();
        assert!(rotated_size > limit);
        assert!(
            fs::metadata(dir.path().join(FILE_NAME))
                .expect("stat")
                .len()
                <= limit + 200
        );

        let log = AuditLog::open_with_limit(dir.path(), limit).expect("reopen");
        let all = log.recent(usize::MAX);
        assert_eq!(all.len(), rotated.len() + current.len());
        // Newest first, contiguous, ending at the last one recorded; the oldest were
        // rotated away.
        assert_eq!(all[0].id, 60);
        assert!(all.windows(2).all(|w| w[0].id == w[1].id + 1));
        assert!(all.last().expect("some").id > 1);
        assert_eq!(log.record(NewEvent::new(EventKind::Failback, "x")).id, 61);
    }

    #[test]
    fn audit_flush_makes_the_line_visible_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path()).expect("open");
        log.flush().expect("flush with nothing pending");
        let event = log.record(
            NewEvent::new(EventKind::ConfigRejected, "weights must be positive")
                .duration(Duration::from_micros(2_500)),
        );
        log.flush().expect("flush");
        let on_disk = file_lines(dir.path(), FILE_NAME);
        assert_eq!(on_disk, vec![event]);
        assert_eq!(on_disk[0].duration_ms, Some(2));
    }

    #[test]
    fn audit_reopen_loads_only_the_newest_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let total = KEEP as u64 + 5;
        {
            let log = AuditLog::open(dir.path()).expect("open");
            for _ in 0..total {
                log.record(NewEvent::new(EventKind::Degraded, "x"));
            }
            assert_eq!(log.recent(usize::MAX).len(), KEEP);
            log.flush().expect("flush");
        }
        let log = AuditLog::open(dir.path()).expect("reopen");
        let all = log.recent(usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].id, total);
        assert_eq!(all[KEEP - 1].id, 6);
        assert_eq!(
            log.record(NewEvent::new(EventKind::Degraded, "x")).id,
            total + 1
        );
    }

    #[test]
    fn audit_in_memory_works_without_a_dir() {
        let log = AuditLog::in_memory();
        assert!(log.recent(5).is_empty());
        log.flush().expect("nothing to flush");
        for _ in 0..KEEP + 3 {
            log.record(NewEvent::new(EventKind::Paused, "admin"));
        }
        let all = log.recent(usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].id, KEEP as u64 + 3);
        assert_eq!(all[KEEP - 1].id, 4);
        log.flush().expect("nothing to flush");
    }

    #[test]
    fn audit_concurrent_records_land_in_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(AuditLog::open(dir.path()).expect("open"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..250 {
                        log.record(NewEvent::new(EventKind::Recovered, format!("{t}/{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recorder thread");
        }
        log.flush().expect("flush");
        let on_disk = file_lines(dir.path(), FILE_NAME);
        assert_eq!(ids(&on_disk), (1..=1000).collect::<Vec<_>>());
        let mut newest_first = on_disk;
        newest_first.reverse();
        assert_eq!(log.recent(usize::MAX), newest_first);
    }

    #[test]
    fn audit_json_shape_matches_the_admin_api() {
        let kinds = [
            EventKind::Degraded,
            EventKind::Recovered,
            EventKind::Healthy,
            EventKind::Failed,
            EventKind::FailoverStarted,
            EventKind::FailoverCompleted,
            EventKind::Failback,
            EventKind::BreakerOpen,
            EventKind::BreakerClosed,
            EventKind::Paused,
            EventKind::Resumed,
            EventKind::ConfigReloaded,
            EventKind::ConfigRejected,
            EventKind::AdminAction,
            EventKind::Drained,
            EventKind::Suspended,
            EventKind::Reinstated,
        ];
        for kind in kinds {
            let json = serde_json::to_value(kind).expect("encode");
            assert_eq!(json, serde_json::Value::String(kind.as_str().into()));
        }
        let log = AuditLog::in_memory();
        let event = log.record(NewEvent::new(EventKind::FailoverStarted, "r").master("m"));
        let json = serde_json::to_value(&event).expect("encode");
        let obj = json.as_object().expect("object");
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "backup",
                "duration_ms",
                "id",
                "kind",
                "master",
                "reason"
            ]
        );
        assert_eq!(obj["kind"], "failover_started");
        assert_eq!(obj["backup"], serde_json::Value::Null);

        let action = log.record(NewEvent::admin_action(
            "POST /ha/pause",
            Some("127.0.0.1:5000".into()),
            "answered 200",
        ));
        let json = serde_json::to_value(&action).expect("encode");
        assert_eq!(json["kind"], "admin_action");
        assert_eq!(json["route"], "POST /ha/pause");
        assert_eq!(json["caller"], "127.0.0.1:5000");
    }

    #[test]
    fn audit_lines_written_before_route_and_caller_still_read() {
        let old = r#"{"id":3,"at":"2026-11-24T19:54:09.123Z","kind":"paused","master":null,"backup":null,"reason":"r","duration_ms":null}"#;
        let event: Event = serde_json::from_str(old).expect("an old line parses");
        assert_eq!((event.route, event.caller), (None, None));
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AuditLog>();
    }
}
