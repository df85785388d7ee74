//! Delivery of queued messages: takes what is due, chooses a master for each with the
//! configured strategy at that moment (never the one that failed before by pinning),
//! sends it, and writes the outcome back to the queue. At most `CONCURRENCY`
//! deliveries run at once; a message is held by one delivery at a time. An outcome
//! that cannot be written is kept by the queue, and its message held, until it is
//! (`Queue::retry_kept`, on each turn of the loop): a delivered message never goes out
//! again because its outcome could not be written at once.

use super::upstream::{Outgoing, UpstreamError};
use super::Proxy;
use crate::queue::record::Record;
use crate::queue::store::{State, StoreError};
use crate::queue::Queue;
use crate::routing::stats::MasterStats;
use crate::server::Shutdown;
use http::HeaderValue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const CONCURRENCY: usize = 256;
/// Looks for due messages at least this often (backoffs expire without a wake-up).
const POLL: Duration = Duration::from_millis(100);
/// How often the due index is scanned again from its start (see `Queue::rescan`).
const RESCAN: Duration = Duration::from_secs(30);

pub async fn run(proxy: Arc<Proxy>, queue: Arc<Queue>, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut running = JoinSet::new();
    let mut last_rescan = Instant::now();
    while !shutdown.is_triggered() {
        if last_rescan.elapsed() >= RESCAN {
            queue.rescan();
            last_rescan = Instant::now();
        }
        queue.retry_kept();
        // With no eligible master, messages wait where they are: taking them would
        // only rewrite each one per backoff. While the store cannot write, no outcome
        // could be written either.
        // Without budget at any eligible master they wait too, until budget frees;
        // no more are taken than the masters can take now (SPEC section 10).
        let table = proxy.control.table();
        let budget = table.budget_available();
        let free = slots
            .available_permits()
            .min(usize::try_from(budget).unwrap_or(usize::MAX));
        let blocked = table.eligible_count() == 0 || queue.state() != State::Open;
        let budget_wait = if budget == 0 && !blocked {
            table.budget_wait(&[])
        } else {
            None
        };
        drop(table);
        let batch = if free == 0 || blocked {
            Vec::new()
        } else {
            queue.take_due(free).unwrap_or_else(|e| {
                tracing::error!(error = %e.detail(), "cannot read the queue");
                Vec::new()
            })
        };
        let took = batch.len();
        for record in batch {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                queue.untake(&record);
                continue;
            };
            let (proxy, queue) = (proxy.clone(), queue.clone());
            running.spawn(async move {
                deliver(&proxy, &queue, record).await;
                drop(permit);
            });
        }
        if let Some(wait) = budget_wait {
            // Sleeps until the first master has budget again (or a slot frees, or
            // the table changes at the next poll).
            tokio::select! {
                _ = tokio::time::sleep(wait.clamp(Duration::from_millis(1), POLL)) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = shutdown.wait() => {}
            }
            continue;
        }
        if took > 0 && took == free {
            // There may be more due: look again as soon as a slot frees up.
            tokio::select! {
                _ = running.join_next() => {}
                _ = shutdown.wait() => {}
            }
            continue;
        }
        tokio::select! {
            _ = queue.arrived.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.wait() => {}
        }
    }
    // Deliveries under way finish (each bounded by request_timeout_ms); nothing new starts.
    while running.join_next().await.is_some() {}
    // A last try for outcomes not written yet: they cannot be kept across a restart.
    queue.write_kept().await;
    let lost = queue.kept_outcomes();
    if lost > 0 {
        tracing::error!(
            outcomes = lost,
            "delivery outcomes could not be written before shutdown: those messages may be delivered again after a restart"
        );
    }
}

async fn deliver(proxy: &Proxy, queue: &Arc<Queue>, record: Record) {
    let mut held = Held {
        queue: queue.clone(),
        id: record.id,
        due_ms: record.due_ms,
        armed: true,
    };
    let result = attempt(proxy, queue, record).await;
    held.disarm();
    if let Err(e) = result {
        // The queue logged it and keeps the outcome until it can be written.
        tracing::debug!(error = %e, "a delivery outcome was not written at once");
    }
}

/// A taken message whose delivery has not reached its outcome. Dropped armed — the
/// delivery panicked (the hook logged and counted it), or its task was dropped with
/// the delivery loop (a panic there restarts the loop) — it gives the message back to
/// the queue, after [`GIVE_BACK_AFTER`] so that a message whose delivery panics every
/// time is not taken again at once in a loop, for a later delivery with the same
/// `Idempotency-Key`, rather than leaving it held until a restart.
struct Held {
    queue: Arc<Queue>,
    id: crate::queue::record::Id,
    due_ms: u64,
    armed: bool,
}

impl Held {
    /// The outcome path released or kept the message: nothing to give back.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

/// How long a message whose delivery ended without an outcome stays held.
#[cfg(not(test))]
const GIVE_BACK_AFTER: Duration = Duration::from_secs(10);
#[cfg(test)]
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

impl Drop for Held {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (queue, id, due_ms) = (self.queue.clone(), self.id, self.due_ms);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(GIVE_BACK_AFTER).await;
                    queue.give_back(&id, due_ms);
                });
            }
            Err(_) => queue.give_back(&id, due_ms),
        }
    }
}

/// One delivery attempt of `record`, its outcome written back to the queue.
async fn attempt(proxy: &Proxy, queue: &Arc<Queue>, record: Record) -> Result<(), StoreError> {
    let table = proxy.control.table();
    let config = &table.config;
    let age = crate::util::unix_ms().saturating_sub(record.created_ms);
    if age >= config.queue.ttl.as_millis() as u64 {
        let mut error = format!(
            "not delivered within ttl_ms ({} ms)",
            config.queue.ttl.as_millis()
        );
        if let Some(last) = &record.last_error {
            error = format!("{error}; last error: {last}");
        }
        return queue.failed(record, error, false, &config.queue).await;
    }
    // Sticky recipients: its own master, waited for up to sticky_max_wait_ms from
    // its acceptance while it has no budget, then any master.
    let mut sticky = None;
    if let Some(recipient) = &record.recipient {
        match table.select_sticky(recipient, &[]) {
            Some(Ok(pick)) => sticky = Some(pick),
            Some(Err(wait)) => {
                let max_wait = config.routing.sticky_max_wait.as_millis() as u64;
                let left = max_wait.saturating_sub(age);
                if left > 0 {
                    let wait = wait.min(Duration::from_millis(left));
                    return queue.wait_budget(record, wait, &config.queue).await;
                }
                crate::telemetry::sticky_move();
            }
            None => {}
        }
    }
    // Stored as the request gave it to the routing hints: lower-cased.
    let picked = sticky.or_else(|| table.select(record.region.as_deref(), &[]));
    let Some(pick) = picked else {
        if let Some(wait) = table.budget_wait(&[]) {
            // Masters are eligible but out of budget: later, not lost, no attempt.
            return queue.wait_budget(record, wait, &config.queue).await;
        }
        let error = "no master is eligible".to_string();
        return queue.failed(record, error, false, &config.queue).await;
    };
    let master = &table.masters[pick.index];
    let Ok(key) = HeaderValue::from_str(&record.idempotency_key) else {
        let error = "the stored Idempotency-Key is not a valid header".to_string();
        return queue.failed(record, error, true, &config.queue).await;
    };
    let msg = Outgoing {
        body: record.body.clone(),
        content_type: record
            .content_type
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok()),
        idempotency_key: key,
        forward: super::trace::from_text(&config.routing.forward_headers, &record.forward_headers),
    };
    let stats = &master.stats;
    let client: Arc<str> = Arc::from(record.client.as_str());
    let (result, _) = proxy
        .exchange(master, &msg, config, MasterStats::start_delivery)
        .await;
    match result {
        Ok(answer) if answer.status.is_success() => {
            proxy.count_answer(master, answer.status, crate::util::unix_ms());
            stats
                .metrics
                .request(crate::telemetry::Outcome::Success, &client);
            let id = record.uuid().to_string();
            crate::telemetry::access::log(&crate::telemetry::access::Line {
                id: &id,
                client: &record.client,
                master: master.id(),
                status: "delivered",
                attempts: record.attempts + 1,
                duration_ms: crate::util::unix_ms().saturating_sub(record.created_ms),
                request_id: record.request_id.as_deref().unwrap_or_default(),
                http_status: answer.status.as_u16(),
            });
            queue.delivered(record, master.id()).await
        }
        Ok(answer) => {
            // A final refusal: the master will not take this message; retrying it
            // elsewhere is what the backoff does, up to max_attempts.
            proxy.count_answer(master, answer.status, crate::util::unix_ms());
            stats
                .metrics
                .request(crate::telemetry::Outcome::Rejected, &client);
            let error = format!("{} answered {}", master.id(), answer.status);
            queue.failed(record, error, true, &config.queue).await
        }
        Err(e) if e.is_ban() => {
            // Not counted against max_attempts: the account was refused, not the
            // message. The next attempt goes to another master (this one is out).
            proxy.count_ban(master, &e, &client);
            let error = format!("{}: {}", master.id(), e.reason());
            queue.failed(record, error, false, &config.queue).await
        }
        Err(e) => {
            stats.metrics.request(e.outcome(), &client);
            // A local fault was no real attempt: it counts only against the TTL.
            let attempted = proxy.count_failure(master, &e, format!("{}: {e}", master.id()));
            // What the message's record shows its client: no OS text.
            let error = format!("{}: {}", master.id(), e.reason());
            if !matches!(e, UpstreamError::Status(_)) {
                tracing::debug!(master = master.id(), error = %e, "queued delivery failed");
            }
            queue.failed(record, error, attempted, &config.queue).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::{message, open};

    #[tokio::test]
    async fn a_delivery_dropped_without_an_outcome_gives_its_message_back_later() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = open(dir.path());
        queue.enqueue(message(1)).await.unwrap();
        let record = queue.take_due(10).unwrap().pop().expect("due");
        let task = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _held = Held {
                    queue,
                    id: record.id,
                    due_ms: record.due_ms,
                    armed: true,
                };
                panic!("a bug in a delivery");
            })
        };
        assert!(task.await.unwrap_err().is_panic());
        assert!(queue.take_due(10).unwrap().is_empty(), "held a while");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(again) = queue.take_due(10).unwrap().pop() {
                assert_eq!(again.id, record.id);
                break;
            }
            assert!(Instant::now() < deadline, "never given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
