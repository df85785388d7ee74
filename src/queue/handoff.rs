//! The queue's side of a hand-off between cluster nodes (SPEC section 11; the
//! transfer itself is `crate::cluster::handoff`).
//!
//! The leaving node reads its queued messages in acceptance order, a batch at a time,
//! holding each one as a delivery would ([`Queue::take_for_handoff`]), and removes a
//! batch only once a peer holds it on disk ([`Queue::handed_off`]). The peer writes
//! what it is handed as its own queued messages ([`Queue::take_over`]), keeping each
//! one's id, acceptance time, attempts, last error, client, request id, headers,
//! routing key, recipient and `Idempotency-Key`: its status can be asked of the peer
//! by id, a repeat of its key sent to the peer is a duplicate, and its `ttl_ms` still
//! counts from its first acceptance.

use super::record::{Id, Record, Status};
use super::store::{Op, StoreError};
use super::{Queue, QueueError};
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A queued message as a hand-off carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Handed {
    pub record: Record,
    /// Its client's `Idempotency-Key` is filed for it: the receiver files it too.
    pub keyed: bool,
}

/// What [`Queue::take_over`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TakenOver {
    /// Written as queued messages of this node.
    pub accepted: u64,
    /// Already here (a batch sent again after its answer was lost): left as they are.
    pub known: u64,
}

impl Queue {
    /// Up to `limit` queued messages (about `max_bytes` of them, at least one) with
    /// ids after `after` (from the first without it), in acceptance order, that no
    /// delivery holds and `skip` does not name. Each is held until
    /// [`Queue::handed_off`] or [`Queue::untake`]: no delivery takes it meanwhile.
    /// The messages of a routing key whose head a delivery holds wait for it: handed
    /// over without it, they would go out before it on the peer.
    pub fn take_for_handoff(
        &self,
        after: Option<Id>,
        limit: usize,
        max_bytes: usize,
        skip: impl Fn(&Id) -> bool,
    ) -> Result<Vec<Handed>, StoreError> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let mut held_keys = HashSet::new();
        for id in taken.iter() {
            if let Some(key) = self.store.get(id)?.and_then(|r| r.routing_key) {
                held_keys.insert(key);
            }
        }
        let records = self.store.queued_after(after, limit, max_bytes, |r| {
            taken.contains(&r.id)
                || skip(&r.id)
                || r.routing_key
                    .as_ref()
                    .is_some_and(|k| held_keys.contains(k))
        })?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let keyed = self
                .store
                .first_use(&record.idempotency_scope())?
                .is_some_and(|first| first.id == record.id);
            taken.insert(record.id);
            out.push(Handed { record, keyed });
        }
        Ok(out)
    }

    /// Messages held by a delivery under way (not those whose outcome waits to be
    /// written: they stay held until a restart).
    pub fn in_delivery(&self) -> usize {
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner()).len();
        taken.saturating_sub(self.kept_outcomes())
    }

    /// A peer holds these messages on disk now: they are removed here in one durable
    /// write (the next of a routing key's line becomes due), the depth follows, and
    /// they are let go. On an error nothing is removed and they stay held.
    pub async fn handed_off(self: &Arc<Self>, ids: Vec<Id>) -> Result<(), StoreError> {
        let next = self.register_due(Duration::ZERO);
        let ops = ids
            .iter()
            .map(|&id| Op::HandedOff { id, next_due: next })
            .collect();
        self.write_then(ops, move |queue, written| {
            queue.end_due(next);
            if written.is_ok() {
                queue.depth.fetch_sub(ids.len() as u64, Relaxed);
                for id in &ids {
                    queue.release(id);
                }
            }
        })
        .await
    }

    /// Writes messages a leaving peer hands over as queued messages of this node, due
    /// now, in one durable write; returns once they are on disk. A message already
    /// here (by id) is left as it is, so a batch sent twice is written once. Its
    /// `Idempotency-Key` is filed here unless a message accepted after it holds the
    /// key already. The whole batch is refused when it does not fit in
    /// `queue.max_messages`.
    pub async fn take_over(self: &Arc<Self>, handed: Vec<Handed>) -> Result<TakenOver, QueueError> {
        let _one_at_a_time = self.taking_over.lock().await;
        let mut seen = HashSet::with_capacity(handed.len());
        let mut fresh: Vec<(Record, bool)> = Vec::with_capacity(handed.len());
        let mut known = 0;
        for Handed { record, keyed } in handed {
            if !seen.insert(record.id) || self.store.get(&record.id)?.is_some() {
                known += 1;
                continue;
            }
            let file_key = keyed
                && self
                    .store
                    .first_use(&record.idempotency_scope())?
                    .is_none_or(|first| first.at_ms < record.created_ms);
            fresh.push((record, file_key));
        }
        let n = fresh.len() as u64;
        if n == 0 {
            return Ok(TakenOver { accepted: 0, known });
        }
        if self.depth.fetch_add(n, Relaxed) + n > self.max {
            self.depth.fetch_sub(n, Relaxed);
            return Err(QueueError::Full(self.max));
        }
        let due = self.register_due(Duration::ZERO);
        let ops = fresh
            .into_iter()
            .map(|(record, file_key)| {
                let record = Record {
                    status: Status::Queued,
                    due_ms: due,
                    updated_ms: due,
                    ..record
                };
                Op::put_new(record, file_key)
            })
            .collect();
        self.write_then(ops, move |queue, written| {
            queue.end_due(due);
            match written {
                Ok(()) => queue.arrived.notify_one(),
                Err(_) => {
                    queue.depth.fetch_sub(n, Relaxed);
                }
            }
        })
        .await?;
        Ok(TakenOver { accepted: n, known })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{message, open};
    use super::*;

    fn keyed(n: u8, key: &str) -> super::super::NewMessage {
        super::super::NewMessage {
            routing_key: Some(key.to_string()),
            ..message(n)
        }
    }

    fn bodies(records: &[Record]) -> Vec<u8> {
        records.iter().map(|r| r.body[0]).collect()
    }

    fn all(q: &Queue) -> Vec<Handed> {
        q.take_for_handoff(None, 1000, usize::MAX, |_| false)
            .unwrap()
    }

    #[tokio::test]
    async fn a_handed_queue_arrives_whole_keeps_order_and_keys_and_leaves_nothing_behind() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _) = open(a_dir.path());
        let (b, _) = open(b_dir.path());
        a.enqueue(keyed(1, "k")).await.unwrap();
        let client_keyed = super::super::NewMessage {
            client_key: true,
            idempotency_key: "client-key".into(),
            ..message(2)
        };
        let keyed_id = client_keyed.id;
        a.enqueue(client_keyed).await.unwrap();
        a.enqueue(keyed(3, "k")).await.unwrap();
        a.enqueue(message(4)).await.unwrap();
        // A message in delivery is not handed over; a dead letter is not queued.
        let in_delivery = a.take_due(1).unwrap();
        assert_eq!(bodies(&in_delivery), [1]);
        assert_eq!(a.in_delivery(), 1);
        let first = all(&a);
        // 3 waits behind 1, whose delivery is under way.
        assert_eq!(
            first.iter().map(|h| h.record.body[0]).collect::<Vec<_>>(),
            [2, 4]
        );
        assert_eq!(
            first.iter().map(|h| h.keyed).collect::<Vec<_>>(),
            [true, false]
        );
        // Held while being handed: neither a delivery nor a second read takes them.
        assert!(a.take_due(10).unwrap().is_empty());
        assert!(all(&a).is_empty());
        a.untake(&in_delivery[0]);
        let second = all(&a);
        let second_bodies: Vec<Record> = second.iter().map(|h| h.record.clone()).collect();
        assert_eq!(bodies(&second_bodies), [1, 3]);

        // Sent twice (its answer lost): written once.
        let batch: Vec<Handed> = second.iter().chain(&first).cloned().collect();
        let taken = b.take_over(batch.clone()).await.unwrap();
        assert_eq!(
            taken,
            TakenOver {
                accepted: 4,
                known: 0
            }
        );
        let again = b.take_over(batch.clone()).await.unwrap();
        assert_eq!(
            again,
            TakenOver {
                accepted: 0,
                known: 4
            }
        );
        assert_eq!(b.depth(), 4);
        let ids: Vec<Id> = batch.iter().map(|h| h.record.id).collect();
        a.handed_off(ids).await.unwrap();
        assert_eq!(a.depth(), 0);
        assert!(all(&a).is_empty());
        assert!(a.take_due(10).unwrap().is_empty());

        // On the receiver: due now, routing key order kept (3 waits behind 1),
        // the client's key a duplicate, acceptance time and id kept.
        let original = &first[0].record;
        let got = b
            .get(&uuid::Uuid::from_bytes(original.id))
            .unwrap()
            .unwrap();
        assert_eq!(got.created_ms, original.created_ms);
        assert_eq!(got.status, Status::Queued);
        let repeat = b
            .first_with_key("client-key", Duration::from_secs(60))
            .unwrap()
            .expect("the key is filed on the receiver");
        assert_eq!(repeat.id, *keyed_id.as_bytes());
        let due = b.take_due(10).unwrap();
        assert_eq!(bodies(&due), [1, 2, 4]);
        let one = due.into_iter().next().unwrap();
        b.delivered(one, "m").await.unwrap();
        assert_eq!(bodies(&b.take_due(10).unwrap()), [3]);
    }

    #[tokio::test]
    async fn removing_a_line_head_alone_makes_the_next_due_and_a_full_queue_refuses_all() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _) = open(a_dir.path());
        for n in 1..=3 {
            a.enqueue(keyed(n, "k")).await.unwrap();
        }
        let head = a.take_for_handoff(None, 1, usize::MAX, |_| false).unwrap();
        assert_eq!(head.len(), 1);
        a.handed_off(vec![head[0].record.id]).await.unwrap();
        // The line moves on: what is left is still delivered in order.
        assert_eq!(bodies(&a.take_due(10).unwrap()), [2]);
        assert_eq!(a.depth(), 2);
        drop(a);
        let (a, _) = open(a_dir.path());
        assert_eq!(a.depth(), 2, "a reopened queue counts what is left exactly");
        assert_eq!(bodies(&a.take_due(10).unwrap()), [2]);
        let text = format!(
            "[queue]\npath = \"{}\"\nmax_messages = 2\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/\"\n",
            b_dir.path().join("q").display()
        );
        let config = crate::config::Config::from_toml(&text).unwrap().queue;
        let b = Arc::new(Queue::open(&config).unwrap());
        let copies = |n: usize| -> Vec<Handed> {
            (0..n)
                .map(|_| Handed {
                    record: Record {
                        id: *uuid::Uuid::now_v7().as_bytes(),
                        routing_key: None,
                        ..head[0].record.clone()
                    },
                    keyed: false,
                })
                .collect()
        };
        assert!(matches!(
            b.take_over(copies(3)).await,
            Err(QueueError::Full(2))
        ));
        assert_eq!(b.depth(), 0);
        assert_eq!(b.take_over(copies(2)).await.unwrap().accepted, 2);
        assert_eq!(bodies(&b.take_due(10).unwrap()), [1, 1]);
    }
}
