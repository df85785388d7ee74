//! Idempotency keys of messages in flight, in memory.
//!
//! Keys are scoped by client (`crate::queue::record::scoped_key`): a key repeated by
//! another client is that client's first use, never a replay of the other's answer.
//!
//! A repeat of a key inside the window is not sent again: it waits for the first
//! message's outcome (if still in flight) and gets its id and answer.
//!
//! With the queue on, the store keeps every settled key (see [`MessageLog::begin`]'s
//! `stored`): an entry here lives only until its outcome is on disk
//! ([`MessageLog::settle`]). With the queue off, entries stay here for the window and
//! are also what `GET /v1/messages/{id}` reads.
//!
//! In a cluster, a first use here is also claimed across nodes (see
//! `crate::cluster::keys`); the claim then carries a [`SharedOutcome`] that hands its
//! answer, or its abandonment, on to the other nodes.

use crate::util::rfc3339;
use bytes::Bytes;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use http::StatusCode;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The answer a master gave (or the 202 of a queued message), kept to replay to
/// repeats.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub status: StatusCode,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
    /// Empty when no master has answered (queued).
    pub master: Arc<str>,
}

/// Where a claim's outcome goes besides this log: the cluster's record of the key.
/// Each claim calls at most one of its methods, once; neither may block.
pub trait SharedOutcome: Send + Sync + std::fmt::Debug {
    /// The first message's answer (the master's, or the 202 of a queued message).
    fn settled(&self, answer: &StoredAnswer);
    /// Nobody took the message: the key is free again on every node.
    fn abandoned(&self);
}

/// What `GET /v1/messages/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: String,
    pub status: &'static str,
    pub master: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Who sent it: only that client may see it.
    #[serde(skip)]
    pub client: Arc<str>,
}

#[derive(Debug)]
pub struct Entry {
    pub id: String,
    key: String,
    created: Instant,
    record: Mutex<MessageRecord>,
    answer: watch::Sender<Answer>,
    /// Its outcome is up to a [`Handoff`], not to the claim.
    handed: AtomicBool,
    /// Told the outcome too, in a cluster.
    shared: Mutex<Option<Box<dyn SharedOutcome>>>,
}

#[derive(Debug, Clone)]
enum Answer {
    Pending,
    Done(StoredAnswer),
    Abandoned,
}

impl Entry {
    fn record(&self) -> std::sync::MutexGuard<'_, MessageRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is(&self, state: fn(&Answer) -> bool) -> bool {
        state(&self.answer.borrow())
    }

    fn take_shared(&self) -> Option<Box<dyn SharedOutcome>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// No outcome: repeats, here and on other nodes, send theirs.
    fn abandon(&self) {
        self.answer.send_replace(Answer::Abandoned);
        if let Some(shared) = self.take_shared() {
            shared.abandoned();
        }
    }

    /// Records the master's final answer (or the 202 of a queued message) and wakes
    /// waiting repeats.
    fn finish(&self, answer: StoredAnswer, attempts: u32, last_error: Option<String>) {
        {
            let mut r = self.record();
            // Any answer of a master means the message reached it.
            r.status = if answer.status == StatusCode::ACCEPTED && answer.master.is_empty() {
                "queued"
            } else {
                "delivered"
            };
            r.master = Some(answer.master.to_string());
            r.attempts = attempts;
            r.last_error = last_error;
            r.updated_at = rfc3339(SystemTime::now());
        }
        if let Some(shared) = self.take_shared() {
            shared.settled(&answer);
        }
        self.answer.send_replace(Answer::Done(answer));
    }

    /// Waits for the first message's answer; `None` if it failed without one (the key
    /// is then free again and the caller should send the message itself).
    pub async fn wait_answer(&self) -> Option<StoredAnswer> {
        let mut rx = self.answer.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Answer::Pending => {}
                Answer::Done(a) => return Some(a.clone()),
                Answer::Abandoned => return None,
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Outcome of [`MessageLog::begin`].
pub enum Begin<'a> {
    /// First use of the key: the caller sends the message.
    New(Claim<'a>),
    /// A repeat of a message in flight or kept in memory: replay this entry's outcome.
    Repeat(Arc<Entry>),
    /// A repeat of a message kept in the store: its id and outcome.
    Stored(String, StoredAnswer),
}

/// The first message's hold on its key. Dropped without [`Claim::finish`] — no master
/// took the message, or the client went away and the request was cancelled — it
/// frees the key, so repeats are sent instead of waiting forever.
pub struct Claim<'a> {
    log: &'a MessageLog,
    entry: Arc<Entry>,
}

impl Claim<'_> {
    /// Also tells `shared` the outcome: the answer when it is finished, or that the
    /// key is free when the claim is dropped unfinished.
    pub fn share(&self, shared: Box<dyn SharedOutcome>) {
        *self.entry.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared);
    }

    /// Records the master's final answer and wakes waiting repeats.
    pub fn finish(&self, answer: StoredAnswer, attempts: u32, last_error: Option<String>) {
        self.entry.finish(answer, attempts, last_error);
    }

    /// For a write that runs to its end in a task of its own: from now on the returned
    /// [`Handoff`] settles the key, so a request cancelled meanwhile (the client hung
    /// up) does not free it while the write may still land.
    pub fn hand_off(&self) -> Handoff {
        self.entry.handed.store(true, Relaxed);
        Handoff(self.entry.clone())
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let unsettled = match &*self.entry.answer.borrow() {
            Answer::Pending => !self.entry.handed.load(Relaxed),
            Answer::Abandoned => true,
            Answer::Done(_) => false,
        };
        if unsettled {
            self.log.abandon(&self.entry);
        }
    }
}

/// A claim's key, held for a write finishing in its own task (see [`Claim::hand_off`]).
/// Dropped without [`Handoff::finish`] it frees the key: repeats are sent again.
pub struct Handoff(Arc<Entry>);

impl Handoff {
    pub fn finish(&self, answer: StoredAnswer, attempts: u32, last_error: Option<String>) {
        self.0.finish(answer, attempts, last_error);
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        // Nothing to forget from the log here: `begin` replaces an abandoned entry and
        // `get` skips it.
        if self.0.is(|a| matches!(a, Answer::Pending)) {
            self.0.abandon();
        }
    }
}

#[derive(Debug, Default)]
pub struct MessageLog {
    by_key: DashMap<String, Arc<Entry>>,
    by_id: DashMap<String, Arc<Entry>>,
}

impl MessageLog {
    /// Claims `key` for a new message `id`, or returns the first message's entry.
    /// `stored` looks the key up in the store when no entry is in memory; it runs
    /// while the key is locked here, so a concurrent first use cannot slip in.
    pub fn begin<E>(
        &self,
        key: &str,
        id: &str,
        client: &Arc<str>,
        window: Duration,
        stored: impl FnOnce() -> Result<Option<(String, StoredAnswer)>, E>,
    ) -> Result<Begin<'_>, E> {
        Ok(match self.by_key.entry(key.to_string()) {
            MapEntry::Occupied(mut o)
                if o.get().created.elapsed() >= window
                    || o.get().is(|a| matches!(a, Answer::Abandoned)) =>
            {
                self.by_id.remove(&o.get().id);
                let entry = new_entry(key, id, client);
                o.insert(entry.clone());
                self.by_id.insert(id.to_string(), entry.clone());
                Begin::New(Claim { log: self, entry })
            }
            // Written by a hand-off whose request was gone, so nobody settled it: the
            // store has the outcome, and where the message stands now.
            MapEntry::Occupied(o)
                if o.get().handed.load(Relaxed) && o.get().is(|a| matches!(a, Answer::Done(_))) =>
            {
                match stored()? {
                    Some((first_id, answer)) => {
                        self.by_id.remove(&o.remove().id);
                        Begin::Stored(first_id, answer)
                    }
                    None => Begin::Repeat(o.get().clone()),
                }
            }
            MapEntry::Occupied(o) => Begin::Repeat(o.get().clone()),
            MapEntry::Vacant(v) => match stored()? {
                Some((first_id, answer)) => Begin::Stored(first_id, answer),
                None => {
                    let entry = new_entry(key, id, client);
                    v.insert(entry.clone());
                    self.by_id.insert(id.to_string(), entry.clone());
                    Begin::New(Claim { log: self, entry })
                }
            },
        })
    }

    /// The claim's outcome is in the store, which answers repeats from now on.
    pub fn settle(&self, claim: &Claim<'_>) {
        self.forget(&claim.entry);
    }

    fn forget(&self, entry: &Entry) {
        self.by_key.remove_if(&entry.key, |_, e| e.id == entry.id);
        self.by_id.remove(&entry.id);
    }

    /// The message was not accepted: forget the key so the client's retry is sent,
    /// and let waiting repeats send theirs.
    fn abandon(&self, entry: &Entry) {
        self.forget(entry);
        entry.abandon();
    }

    /// A message kept in memory; not one that was never accepted.
    pub fn get(&self, id: &str) -> Option<MessageRecord> {
        self.by_id
            .get(id)
            .filter(|e| !e.is(|a| matches!(a, Answer::Abandoned)))
            .map(|e| e.record().clone())
    }

    /// Drops entries older than `window`.
    pub fn sweep(&self, window: Duration) {
        self.by_key.retain(|_, e| e.created.elapsed() < window);
        self.by_id.retain(|_, e| e.created.elapsed() < window);
    }
}

fn new_entry(key: &str, id: &str, client: &Arc<str>) -> Arc<Entry> {
    let now = rfc3339(SystemTime::now());
    Arc::new(Entry {
        id: id.to_string(),
        key: key.to_string(),
        created: Instant::now(),
        record: Mutex::new(MessageRecord {
            id: id.to_string(),
            status: "delivering",
            master: None,
            attempts: 0,
            last_error: None,
            created_at: now.clone(),
            updated_at: now,
            client: client.clone(),
        }),
        answer: watch::channel(Answer::Pending).0,
        handed: AtomicBool::new(false),
        shared: Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn begin<'a>(log: &'a MessageLog, id: &str) -> Begin<'a> {
        log.begin("key", id, &crate::clients::ANONYMOUS, WINDOW, || {
            Ok::<_, ()>(None)
        })
        .expect("no store")
    }

    fn queued() -> StoredAnswer {
        StoredAnswer {
            status: StatusCode::ACCEPTED,
            content_type: None,
            body: Bytes::from_static(b"{}"),
            master: Arc::from(""),
        }
    }

    #[tokio::test]
    async fn a_handed_off_key_outlives_its_cancelled_claim() {
        let log = MessageLog::default();
        let Begin::New(claim) = begin(&log, "1") else {
            panic!("first use")
        };
        let hold = claim.hand_off();
        drop(claim); // the client hung up while the message was being written
        let Begin::Repeat(first) = begin(&log, "2") else {
            panic!("the key is still taken")
        };
        assert_eq!(first.id, "1");
        hold.finish(queued(), 0, None);
        let answer = first.wait_answer().await.expect("the write's outcome");
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        // Nobody settled it, so the next repeat asks the store, which knows where the
        // message stands now, and the entry leaves memory.
        let from_store = || Ok::<_, ()>(Some(("1".to_string(), queued())));
        let again = log
            .begin("key", "3", &crate::clients::ANONYMOUS, WINDOW, from_store)
            .expect("no error");
        assert!(matches!(again, Begin::Stored(id, _) if id == "1"));
        assert!(log.get("1").is_none());
    }

    #[test]
    fn a_key_is_free_again_when_its_write_fails_or_its_claim_is_dropped() {
        let log = MessageLog::default();
        let Begin::New(claim) = begin(&log, "1") else {
            panic!("first use")
        };
        let hold = claim.hand_off();
        drop(claim);
        drop(hold); // the write failed
        assert!(log.get("1").is_none(), "never accepted: not shown");
        let Begin::New(claim) = begin(&log, "2") else {
            panic!("a failed write frees the key")
        };
        assert!(log.get("2").is_some());
        drop(claim); // no master took it, nothing handed off
        assert!(log.get("2").is_none());
        assert!(matches!(begin(&log, "3"), Begin::New(_)));
    }

    /// Notes what a claim told the cluster.
    #[derive(Debug, Default)]
    struct Told(Mutex<Vec<String>>);

    impl SharedOutcome for Arc<Told> {
        fn settled(&self, answer: &StoredAnswer) {
            self.0
                .lock()
                .unwrap()
                .push(format!("settled {}", answer.status.as_u16()));
        }
        fn abandoned(&self) {
            self.0.lock().unwrap().push("abandoned".into());
        }
    }

    fn told(told: &Arc<Told>) -> Vec<String> {
        told.0.lock().unwrap().clone()
    }

    #[test]
    fn a_shared_claim_tells_the_cluster_its_answer_or_its_abandonment_once() {
        let log = MessageLog::default();
        // Finished: the answer, once, and nothing when the claim goes.
        let Begin::New(claim) = begin(&log, "1") else {
            panic!("first use")
        };
        let first = Arc::new(Told::default());
        claim.share(Box::new(first.clone()));
        claim.finish(queued(), 1, None);
        drop(claim);
        assert_eq!(told(&first), ["settled 202"]);

        // Dropped unfinished: the key is free on every node.
        let log = MessageLog::default();
        let Begin::New(claim) = begin(&log, "2") else {
            panic!("first use")
        };
        let second = Arc::new(Told::default());
        claim.share(Box::new(second.clone()));
        drop(claim);
        assert_eq!(told(&second), ["abandoned"]);

        // Handed off: the write's outcome decides, not the cancelled request.
        let Begin::New(claim) = begin(&log, "3") else {
            panic!("first use")
        };
        let third = Arc::new(Told::default());
        claim.share(Box::new(third.clone()));
        let hold = claim.hand_off();
        drop(claim);
        assert!(told(&third).is_empty());
        drop(hold); // the write failed
        assert_eq!(told(&third), ["abandoned"]);
    }
}
