//! A first use of an `Idempotency-Key` on this node, checked against the other nodes of
//! the cluster (see [`crate::cluster::keys`]). Consulted only in cluster mode, only
//! when the node's own log says the key is new.
//!
//! When etcd cannot be asked, the node's own idempotency applies alone: the send goes
//! on, never fails for it (SPEC section 11: forwarding never stops because etcd is
//! down).

use super::idempotency::{Claim, SharedOutcome, StoredAnswer};
use crate::cluster::keys::{self, Held, Limits, SharedKeys};
use crate::cluster::StateError;
use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// What the cluster says about a key that is new on this node.
pub(super) enum Shared {
    /// New everywhere (or etcd could not be asked): send it.
    First,
    /// A repeat of a message another node took: its id and answer.
    Duplicate(String, StoredAnswer),
    /// A repeat whose first message was still in flight on another node when the
    /// wait ran out: its id.
    InFlight(String),
}

/// Claims `key` across the cluster for message `id`, whose local `claim` is new. On a
/// first use the local claim carries the outcome on to the other nodes. A duplicate
/// waits up to `server.request_timeout` for the first message's answer.
pub(super) async fn claim(
    keys: &Arc<SharedKeys>,
    claim: &Claim<'_>,
    key: &str,
    id: &str,
    cfg: &crate::config::Config,
) -> Shared {
    let timeout = cfg.server.request_timeout;
    let tries = cfg.routing.retry_attempts.saturating_add(2);
    let limits = Limits {
        window: cfg.queue.idempotency_window,
        wait: timeout,
        // Every try of the first message, and its write to the queue after them.
        in_flight: timeout.saturating_mul(tries),
    };
    match keys.claim(key, id, limits).await {
        Ok(keys::Claim::First(held)) => {
            claim.share(Box::new(Recorder {
                keys: keys.clone(),
                held,
                runtime: tokio::runtime::Handle::current(),
            }));
            Shared::First
        }
        Ok(keys::Claim::Duplicate(first)) => match first.answer {
            Some(answer) => Shared::Duplicate(first.id, stored(answer)),
            None => Shared::InFlight(first.id),
        },
        Err(e) => {
            // Logged and counted where it failed.
            tracing::debug!(error = %e, "idempotency key checked on this node only");
            Shared::First
        }
    }
}

/// A duplicate's answer as this node replays it. A body that was not kept goes
/// without its content type.
fn stored(answer: keys::Answer) -> StoredAnswer {
    let body = answer.body;
    StoredAnswer {
        status: StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        content_type: answer
            .content_type
            .filter(|_| body.is_some())
            .and_then(|c| HeaderValue::from_str(&c).ok()),
        body: body.unwrap_or_default(),
        master: answer.master.into(),
    }
}

/// Hands a first message's outcome to etcd, in a task of its own: the answer to the
/// client does not wait for it.
#[derive(Debug)]
struct Recorder {
    keys: Arc<SharedKeys>,
    held: Held,
    runtime: tokio::runtime::Handle,
}

/// Tries of recording an answer while etcd is unreachable, and the pause between.
const RECORD_TRIES: u32 = 3;
const RECORD_PAUSE: Duration = Duration::from_millis(500);

impl SharedOutcome for Recorder {
    fn settled(&self, answer: &StoredAnswer) {
        let answer = keys::Answer {
            status: answer.status.as_u16(),
            content_type: answer
                .content_type
                .as_ref()
                .and_then(|c| c.to_str().ok())
                .map(str::to_string),
            master: answer.master.to_string(),
            body: Some(answer.body.clone()),
        };
        let (keys, held) = (self.keys.clone(), self.held.clone());
        self.runtime.spawn(async move {
            for _ in 0..RECORD_TRIES {
                match keys.record(&held, &answer).await {
                    Ok(true) => return,
                    Ok(false) => {
                        tracing::warn!(
                            key = held.path(),
                            "the idempotency key was taken over before its answer was recorded"
                        );
                        return;
                    }
                    Err(StateError::Unreachable(_)) => tokio::time::sleep(RECORD_PAUSE).await,
                    // Logged and counted where it failed.
                    Err(_) => return,
                }
            }
        });
    }

    fn abandoned(&self) {
        let (keys, held) = (self.keys.clone(), self.held.clone());
        // A key left claimed is taken over once its time in flight is up.
        self.runtime.spawn(async move { keys.release(&held).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_duplicate_replays_the_kept_answer_and_no_content_type_for_a_body_not_kept() {
        let answer = |body: Option<&'static [u8]>| keys::Answer {
            status: 201,
            content_type: Some("application/json".into()),
            master: "m1".into(),
            body: body.map(Bytes::from_static),
        };
        let kept = stored(answer(Some(b"{}")));
        assert_eq!(kept.status, StatusCode::CREATED);
        assert_eq!(kept.content_type.unwrap(), "application/json");
        assert_eq!((&kept.body[..], &*kept.master), (&b"{}"[..], "m1"));
        let dropped = stored(answer(None));
        assert_eq!(dropped.status, StatusCode::CREATED);
        assert!(dropped.content_type.is_none() && dropped.body.is_empty());
    }
}
