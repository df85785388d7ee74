//! State primitives over etcd: get, put, delete, compare-and-swap, leases with a TTL,
//! and a lock with a TTL, extension and a fencing token.
//!
//! Guarantees come from etcd: every read and write here is linearizable (reads are
//! served through the raft leader, writes are committed by a quorum before they
//! return), and every write gives the store a new, strictly greater revision. A call
//! that returns `Ok` therefore saw, or made, the latest committed state at some instant
//! between its start and its return; a call that fails with
//! [`StateError::Unreachable`] may or may not have taken effect.

use tonic::Code;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchOptions,
};

/// Why a state call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// etcd could not be reached or did not answer in time. A write may or may not have
    /// been applied: read again before acting on it.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// The lease is gone (it expired or was revoked): every key attached to it, such as
    /// a lock, has been deleted. The holder must stop acting as the holder. The id is 0
    /// where etcd's answer does not name the lease.
    #[error("lease {0:x} lost")]
    LeaseLost(i64),
    /// A lock is held by someone else.
    #[error("lock {0} is held by another holder")]
    Conflict(String),
    /// etcd refused the request (a bad argument, a compacted revision, ...).
    #[error("etcd: {0}")]
    Etcd(String),
}

impl From<etcd_client::Error> for StateError {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => {
                StateError::Unreachable(e.to_string())
            }
            E::GRpcStatus(ref s) => match s.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    StateError::Unreachable(e.to_string())
                }
                // How tonic reports a connection that broke under a call.
                Code::Unknown if s.message() == "transport error" => {
                    StateError::Unreachable(e.to_string())
                }
                Code::NotFound if s.message().contains("lease not found") => {
                    StateError::LeaseLost(0)
                }
                _ => StateError::Etcd(e.to_string()),
            },
            E::LeaseKeepAliveError(ref m) if m.contains("lease not found") => {
                StateError::LeaseLost(0)
            }
            _ => StateError::Etcd(e.to_string()),
        }
    }
}

/// A value with the revisions etcd keeps for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    /// The revision of the last write to the key: what [`State::compare_and_swap`] expects.
    pub mod_revision: i64,
    /// The revision at which the key was created (it changes when it is deleted and put again).
    pub create_revision: i64,
}

/// The outcome of [`State::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cas {
    /// Whether this write was applied.
    pub won: bool,
    /// The key's mod revision now: the new write's revision when `won`, otherwise the
    /// revision of the write that got there first (0 when the key is absent).
    pub revision: i64,
    /// When not `won`: the key's current value, to retry from (None when absent).
    pub current: Option<Versioned>,
}

/// A held lock. Its key lives under its lease: it disappears when the lease is not kept
/// alive for its TTL, whether or not the holder noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub key: String,
    pub lease: i64,
    /// The fencing token: the revision at which this holder created the lock key. Every
    /// later holder of the same lock has a strictly greater token. A resource guarded by
    /// the lock must remember the greatest token it has seen and refuse a smaller one:
    /// a holder may be paused past its TTL and act after its lock went to another.
    pub token: i64,
}

/// A handle on one etcd cluster. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct State {
    client: Client,
    call_timeout: Duration,
}

/// Tries of one call when etcd could not be reached: with several endpoints, the
/// client's balancer may pick one that is down while the others answer.
const ATTEMPTS: usize = 3;

impl State {
    /// Runs one call, again when etcd could not be reached, at most [`ATTEMPTS`] times
    /// and twice the call timeout in all. Every call here is safe to repeat: reads,
    /// writes of a given value, and transactions guarded by a comparison that a repeat
    /// of an applied write fails.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StateError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let tries = async {
            let mut last = String::new();
            for _ in 0..ATTEMPTS {
                match f(self.client.clone()).await.map_err(StateError::from) {
                    Ok(v) => return Ok(v),
                    Err(StateError::Unreachable(m)) => last = m,
                    Err(other) => return Err(other),
                }
            }
            Err(StateError::Unreachable(last))
        };
        tokio::time::timeout(self.call_timeout * 2, tries)
            .await
            .unwrap_or_else(|_| Err(StateError::Unreachable("no answer in time".into())))
    }

    /// Connects to the etcd cluster behind `endpoints` (`http://host:port`). Every
    /// connection attempt and every call is bounded by `call_timeout`: past it the call
    /// fails with [`StateError::Unreachable`] (an etcd that stopped answering, not only
    /// one that refuses connections).
    pub async fn connect(
        endpoints: &[String],
        call_timeout: Duration,
    ) -> Result<State, StateError> {
        let options = ConnectOptions::new()
            .with_timeout(call_timeout)
            .with_connect_timeout(call_timeout);
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(State {
            client,
            call_timeout,
        })
    }

    /// The key's value and revisions, or None when it is absent. Linearizable: any write
    /// acknowledged before this call started is visible.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let resp = self
            .call(|mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(versioned))
    }

    /// Writes the value unconditionally and returns its mod revision. Durable on a
    /// quorum when it returns. Prefer [`State::compare_and_swap`] for anything read,
    /// changed and written back.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64, StateError> {
        let value: Vec<u8> = value.into();
        let resp = self
            .call(|mut c| {
                let value = value.clone();
                async move { c.put(key, value, None).await }
            })
            .await?;
        Ok(revision_of(resp.header()))
    }

    /// Writes the value under `lease`: the key is deleted when the lease ends.
    pub async fn put_leased(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<i64, StateError> {
        let value: Vec<u8> = value.into();
        let resp = self
            .call(|mut c| {
                let value = value.clone();
                let options = PutOptions::new().with_lease(lease);
                async move { c.put(key, value, Some(options)).await }
            })
            .await?;
        Ok(revision_of(resp.header()))
    }

    /// Every key under `prefix` with its value, in key order, all read at one
    /// revision, which is returned too. Linearizable, like [`State::get`].
    pub async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StateError> {
        let resp = self
            .call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    versioned(kv),
                )
            })
            .collect();
        Ok((kvs, revision_of(resp.header())))
    }

    /// Watches every key under `prefix` from `from_revision` on (use the revision a
    /// [`State::list`] returned, plus one, to miss nothing between the two). Changes
    /// come in revision order. The stream does not notice a silent etcd by itself:
    /// whoever waits on it should also check etcd some other way (the cluster agent's
    /// ticks do) and watch again after an error.
    pub async fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch, StateError> {
        let start = |mut c: Client| async move {
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from_revision);
            match tokio::time::timeout(self.call_timeout, c.watch(prefix, Some(options))).await {
                Ok(answer) => answer,
                Err(_) => Err(etcd_client::Error::WatchError("not started in time".into())),
            }
        };
        let stream = self.call(start).await?;
        Ok(Watch { stream })
    }

    /// Runs a transaction as written: for the cluster's own multi-key writes (a
    /// campaign that also bumps the term, a write fenced by leadership).
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse, StateError> {
        self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Deletes the key; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let resp = self
            .call(|mut c| async move { c.delete(key, None).await })
            .await?;
        Ok(resp.deleted() > 0)
    }

    /// Writes `value` only if the key's mod revision is still `expected` (`None`: only
    /// if the key is absent), atomically. Exactly one of several writers expecting the
    /// same revision wins; the others get `won: false` with the value that beat them,
    /// and must re-read (or use `current`) and decide again.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<i64>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Cas, StateError> {
        let cmp = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Cas {
                won: true,
                revision: revision_of(resp.header()),
                current: None,
            });
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(versioned),
            _ => None,
        });
        Ok(Cas {
            won: false,
            revision: current.as_ref().map_or(0, |v| v.mod_revision),
            current,
        })
    }

    /// Grants a lease of `ttl_secs` seconds (etcd may round a very short TTL up; its
    /// minimum is about 2 s by default) and returns its id. Keys put under it are
    /// deleted when it is revoked or not kept alive for its TTL.
    pub async fn grant(&self, ttl_secs: i64) -> Result<i64, StateError> {
        let resp = self
            .call(|mut c| async move { c.lease_grant(ttl_secs, None).await })
            .await?;
        Ok(resp.id())
    }

    /// Renews the lease once, for its full TTL from now, and returns that TTL in
    /// seconds. [`StateError::LeaseLost`] when it already expired: keys under it are
    /// gone and stay gone. Call it well within the TTL (a third of it is usual).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, StateError> {
        let lost = |e: StateError| match e {
            StateError::LeaseLost(_) => StateError::LeaseLost(lease),
            other => other,
        };
        let timeout = self.call_timeout;
        let answer = self
            .call(|mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match tokio::time::timeout(timeout, stream.message()).await {
                    Ok(answer) => answer,
                    Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "keep-alive unanswered",
                    ))),
                }
            })
            .await;
        match answer.map_err(lost)? {
            Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
            Some(_) => Err(StateError::LeaseLost(lease)),
            None => Err(StateError::Unreachable("keep-alive stream closed".into())),
        }
    }

    /// Revokes the lease: every key under it is deleted at once. Revoking a lease that
    /// is already gone is not an error.
    pub async fn revoke(&self, lease: i64) -> Result<(), StateError> {
        match self
            .call(|mut c| async move { c.lease_revoke(lease).await })
            .await
        {
            Ok(_) | Err(StateError::LeaseLost(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Takes the lock at `key` if nobody holds it, under a fresh lease of `ttl_secs`.
    /// On `Ok` the caller is the only holder until the lease runs out: it must
    /// [`extend`](State::extend) it within the TTL for as long as it needs it, and pass
    /// [`Lock::token`] to whatever it guards. [`StateError::Conflict`] when another
    /// holder has it. When the write's outcome is unknown (etcd unreachable) the lease is
    /// revoked, best effort, so that a lock taken unknowingly does not outlive its TTL.
    pub async fn try_lock(&self, key: &str, ttl_secs: i64) -> Result<Lock, StateError> {
        let lease = self.grant(ttl_secs).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                lease.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let won = match self.txn(txn).await {
            Ok(resp) => resp.succeeded().then(|| revision_of(resp.header())),
            Err(e) => {
                let _ = self.revoke(lease).await;
                return Err(e);
            }
        };
        match won {
            Some(token) => Ok(Lock {
                key: key.to_string(),
                lease,
                token,
            }),
            None => {
                self.revoke(lease).await?;
                Err(StateError::Conflict(key.to_string()))
            }
        }
    }

    /// Keeps the lock for another full TTL from now. [`StateError::LeaseLost`] when it
    /// had already expired (or the key was taken from under it): the caller is no longer
    /// the holder and must stop.
    pub async fn extend(&self, lock: &Lock) -> Result<(), StateError> {
        self.keep_alive(lock.lease).await?;
        if self.holds(lock).await? {
            Ok(())
        } else {
            Err(StateError::LeaseLost(lock.lease))
        }
    }

    /// Whether this lock is still held by this holder at the moment of the read.
    /// Advisory only: it can be lost right after; fencing tokens are what make a stale
    /// holder harmless.
    pub async fn holds(&self, lock: &Lock) -> Result<bool, StateError> {
        Ok(self
            .get(&lock.key)
            .await?
            .is_some_and(|v| v.create_revision == lock.token))
    }

    /// Releases the lock: revokes its lease, which deletes the key if it is still ours
    /// (a key some later holder created lives under that holder's lease and is kept).
    pub async fn release(&self, lock: Lock) -> Result<(), StateError> {
        self.revoke(lock.lease).await
    }
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The new value; `None` when the key was deleted (or its lease ended).
    pub value: Option<Versioned>,
    /// The revision of the write or delete.
    pub revision: i64,
}

/// A stream of the changes under one prefix.
pub struct Watch {
    stream: etcd_client::WatchStream,
}

impl Watch {
    /// The next batch of changes (possibly empty: etcd also sends progress). An error
    /// ends the watch: [`StateError::Etcd`] when the revision asked for was compacted
    /// away (read everything again), [`StateError::Unreachable`] when the stream broke.
    pub async fn next(&mut self) -> Result<Vec<Change>, StateError> {
        let Some(resp) = self.stream.message().await? else {
            return Err(StateError::Unreachable("watch stream closed".into()));
        };
        if resp.canceled() {
            return Err(StateError::Etcd(format!(
                "watch cancelled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            )));
        }
        Ok(resp
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let revision = kv.mod_revision();
                let value = match event.event_type() {
                    etcd_client::EventType::Put => Some(versioned(kv)),
                    etcd_client::EventType::Delete => None,
                };
                Some(Change {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value,
                    revision,
                })
            })
            .collect())
    }
}

fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    }
}

pub(crate) fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}
