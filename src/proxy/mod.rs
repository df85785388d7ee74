//! The data path: listener → routing hints → table snapshot → strategy → forward (with
//! retries on other masters) → answer. The client API of SPEC section 4.
//!
//! A message that cannot go out now (asked async, no eligible master, retries used
//! up) is handed to the [`crate::queue`] and answered 202 once it is on disk;
//! [`delivery`] sends it later.
//!
//! May call: `control` (to load the table), `routing`, `queue`, `telemetry`, `reply`.

pub mod body;
pub mod delivery;
mod fault;
pub mod hints;
pub mod idempotency;
mod shared;
pub mod status;
pub mod trace;
pub mod upstream;

use crate::config::WhenUnavailable;
use crate::control::Control;
use crate::h1::headers::{Headers, Lookup};
use crate::h1::server::{Added, Reply, Request, RequestBody};
use crate::queue::record::MasterAnswer;
use crate::queue::store::StoreError;
use crate::queue::{NewMessage, Queue, QueueError};
use crate::reply;
use crate::routing::stats::{InFlight, MasterStats};
use crate::server::Body;
use http::{header, HeaderName, HeaderValue, Method, Response, StatusCode};
use idempotency::{Begin, Claim, MessageLog, StoredAnswer};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::Instrument;
use upstream::{exchange, Answer, Outgoing};

/// State shared by every client request.
#[derive(Debug)]
pub struct Proxy {
    pub control: Arc<Control>,
    pool: crate::h1::pool::Pool,
    pub messages: MessageLog,
    /// `None` when `queue.enabled = false`.
    pub queue: Option<Arc<Queue>>,
    /// Outcomes of messages answered at once, for an hour (see [`status`]).
    pub statuses: status::StatusIndex,
    /// In cluster mode: idempotency keys shared with the other nodes.
    shared_keys: OnceLock<Arc<crate::cluster::keys::SharedKeys>>,
}

/// A response on its way up from the send's futures: boxed, so that each level moves
/// a pointer rather than a 136-byte `Response`.
type Answered = Box<Response<Body>>;

/// Where clients send messages: nearly every request names it.
pub const SEND_PATH: &str = "/v1/messages";
const MESSAGE_ID: HeaderName = HeaderName::from_static("x-switchyard-message-id");
const MASTER: HeaderName = HeaderName::from_static("x-switchyard-master");

impl Proxy {
    pub fn new(control: Arc<Control>, queue: Option<Arc<Queue>>) -> Proxy {
        Proxy {
            control,
            pool: crate::h1::pool::Pool::default(),
            messages: MessageLog::default(),
            queue,
            statuses: status::StatusIndex::default(),
            shared_keys: OnceLock::new(),
        }
    }

    /// Makes a key accepted on any node of the cluster a duplicate here (SPEC section
    /// 11): from now on, a keyed message new to this node is also claimed in etcd.
    /// Set once; returns false (and changes nothing) when keys were already set.
    pub fn set_shared_keys(&self, keys: Arc<crate::cluster::keys::SharedKeys>) -> bool {
        self.shared_keys.set(keys).is_ok()
    }

    /// Routes one client request. Everything under `/v1/` needs a client key once
    /// `[[clients]]` are configured.
    pub async fn handle(self: Arc<Self>, req: Request) -> Reply {
        // Taken apart once: the headers are lent to what follows, not moved (a copy
        // each time).
        let Request {
            method,
            uri,
            headers,
            body,
            ..
        } = req;
        let path = uri.path();
        if !(path == "/v1" || path.starts_with("/v1/")) {
            return reply::not_found().into();
        }
        // One table for the whole request: its clients, then its routing.
        let table = self.control.table();
        let clients = &table.config.clients;
        let client = match clients.authenticate(&headers) {
            Ok(client) => client,
            Err(e) => {
                let mut resp = unauthorized(&e);
                if path == SEND_PATH && method == Method::POST {
                    // Every answer to a send carries one, this refusal too.
                    let id = trace::request_id(&headers)
                        .ok()
                        .flatten()
                        .or_else(new_request_id);
                    if let Some(id) = id {
                        resp.headers_mut().insert(trace::X_REQUEST_ID, id);
                    }
                }
                return resp.into();
            }
        };
        if path == SEND_PATH {
            return match method {
                Method::POST => self.post_message(&headers, body, &client, table).await,
                _ => reply::method_not_allowed("POST").into(),
            };
        }
        if let Some(id) = path.strip_prefix("/v1/messages/") {
            if id.is_empty() || id.contains('/') {
                return reply::not_found().into();
            }
            return match method {
                Method::GET => self.message_status(id, &client, clients.is_open()),
                _ => reply::method_not_allowed("GET"),
            }
            .into();
        }
        reply::not_found().into()
    }

    /// The outcome of the first message with the client's `Idempotency-Key` `key`,
    /// if the store keeps one from inside the window: the master's answer when it was
    /// delivered at once, else its 202 with its status now.
    fn stored(
        &self,
        key: &str,
        window: std::time::Duration,
    ) -> Result<Option<(String, StoredAnswer)>, crate::queue::store::StoreError> {
        let Some(queue) = &self.queue else {
            return Ok(None);
        };
        let Some(first) = queue.first_with_key(key, window)? else {
            return Ok(None);
        };
        let id = first.uuid().to_string();
        let answer = match first.answer {
            Some(a) => StoredAnswer {
                status: StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
                content_type: a.content_type.and_then(|c| HeaderValue::from_str(&c).ok()),
                body: a.body,
                master: first.master.as_deref().unwrap_or_default().into(),
            },
            None => queued_answer(&id, first.status.as_str()),
        };
        Ok(Some((id, answer)))
    }

    /// A message's status: from the records of messages answered at once, else the
    /// store (queued and keyed ones), else the keys in flight. With clients configured
    /// (`open` false), a client sees only its own messages: another's is a 404, as an
    /// unknown id is, so that its existence does not show.
    fn message_status(&self, id: &str, client: &Arc<str>, open: bool) -> Response<Body> {
        let visible = |owner: &str| open || owner == &**client;
        let uuid = uuid::Uuid::parse_str(id).ok();
        if let Some(uuid) = &uuid {
            if let Some(entry) = self.statuses.get(uuid) {
                if visible(&entry.client) {
                    return reply::json(StatusCode::OK, &entry.status_json(uuid));
                }
                return message_not_found(id);
            }
        }
        if let (Some(queue), Some(uuid)) = (&self.queue, &uuid) {
            match queue.get(uuid) {
                Ok(Some(r)) if visible(&r.client) => {
                    return reply::json(StatusCode::OK, &r.status_json())
                }
                Ok(Some(_)) => return message_not_found(id),
                Ok(None) => {}
                // A status read: no message was being stored.
                Err(e) => return reply::queue_storage(&e),
            }
        }
        match self.messages.get(id) {
            Some(record) if visible(&record.client) => reply::json(StatusCode::OK, &record),
            _ => message_not_found(id),
        }
    }

    /// `POST /v1/messages`: every answer carries an `x-request-id`, the client's or,
    /// when it sent none, the message's id (a fresh UUID when the request was refused
    /// before it had one).
    async fn post_message(
        &self,
        headers: &Headers,
        body: RequestBody,
        client: &Arc<str>,
        table: Arc<crate::routing::RoutingTable>,
    ) -> Reply {
        let mut request_id = None;
        // The request id, and for a master's answer its master and message id.
        let mut added = Added {
            headers: Vec::with_capacity(3),
            ..Added::default()
        };
        let resp = match trace::request_id(headers) {
            Ok(given) => {
                request_id = given;
                // Caught here too (the listener catches it anyway), so that a 500 for
                // a bug still carries the request id. Boxed: the send's future is the
                // largest by far, and inline it would be copied whole as it is
                // wrapped and moved.
                let send = || self.send(headers, body, client, table, &mut request_id, &mut added);
                reply::unless_panic(crate::util::boxed(send)).await
            }
            Err(e) => Box::new(reply::error(
                StatusCode::BAD_REQUEST,
                e.code(),
                e.to_string(),
            )),
        };
        let request_id = request_id.or_else(new_request_id);
        if let Some(id) = request_id {
            added.headers.push((trace::X_REQUEST_ID, id));
        }
        Reply {
            response: resp,
            added,
        }
    }

    /// Takes the message; `request_id` holds the client's `x-request-id` and is given
    /// the message id when the client sent none; `added` is given the master's header
    /// lines, its id and the message id when one answered.
    async fn send(
        &self,
        headers: &Headers,
        body: RequestBody,
        client: &Arc<str>,
        table: Arc<crate::routing::RoutingTable>,
        request_id: &mut Option<HeaderValue>,
        added: &mut Added,
    ) -> Answered {
        let cfg = &table.config;
        let limit = cfg.server.max_body_bytes;
        let declared = headers
            .first(&header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Box::new(too_large(limit));
        }
        let deadline = body.deadline();
        let body = match body::read(body, declared, limit, deadline).await {
            Ok(b) => b,
            Err(body::BodyError::TooLarge) => return Box::new(too_large(limit)),
            Err(e) => return Box::new(e.into_response()),
        };
        let max_key = cfg.server.max_key_bytes;
        let checked =
            hints::idempotency_key(&cfg.routing, headers, max_key).and_then(|client_key| {
                let hints = hints::extract(&cfg.routing, headers, &body, max_key)?;
                let content_type = hints::content_type(headers)?;
                let forward = trace::forwarded(&cfg.routing.forward_headers, headers)?;
                Ok((client_key.cloned(), hints, content_type.cloned(), forward))
            });
        let (client_key, hints, content_type, mut forward) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                return Box::new(reply::error(
                    StatusCode::BAD_REQUEST,
                    e.code(),
                    e.to_string(),
                ))
            }
        };

        let uuid = crate::message_id::new();
        let mut text = uuid::Uuid::encode_buffer();
        // Text as written: visible ASCII, used as it is (not checked again).
        let id: &str = uuid.hyphenated().encode_lower(&mut text);
        // One allocation, shared by the value's clones (a copied `Vec` would take a
        // second at the first clone). A hyphenated UUID is a valid value, so this
        // cannot fail; if it ever did, say so.
        let owned: Option<[u8; uuid::fmt::Hyphenated::LENGTH]> = id.as_bytes().try_into().ok();
        let id_value =
            owned.and_then(|o| HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(o)).ok());
        let Some(id_value) = id_value else {
            return Box::new(reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the message id could not be written as a header",
            ));
        };
        let generated_request_id = request_id.is_none();
        if generated_request_id {
            if cfg.routing.forward_headers.contains(&trace::X_REQUEST_ID) {
                forward.push((trace::X_REQUEST_ID, id_value.clone()));
            }
            *request_id = Some(id_value.clone());
        }
        // Checked above: visible ASCII. Scoped by client: a repeat of another
        // client's key is a new message, never that client's answer.
        let scoped = client_key
            .as_ref()
            .and_then(|k| k.to_str().ok())
            .map(|k| crate::queue::record::scoped_key(client, k));
        let claim = match scoped.as_deref() {
            None => None,
            Some(key) => {
                let window = cfg.queue.idempotency_window;
                let begin = || {
                    self.messages
                        .begin(key, id, client, window, || self.stored(key, window))
                };
                let mut waited = false;
                loop {
                    match begin() {
                        Err(e) => return Box::new(storage_error(&e)),
                        Ok(Begin::New(claim)) => {
                            let Some(keys) = self.shared_keys.get() else {
                                break Some(claim);
                            };
                            // Boxed: the etcd claim's future is large, and inline it
                            // would make every request's future (moved on each spawn
                            // and poll) as large, keyed or not.
                            let claimed =
                                crate::util::boxed(|| shared::claim(keys, &claim, key, id, cfg));
                            match claimed.await {
                                shared::Shared::First => break Some(claim),
                                // The local claim, dropped, frees the key here.
                                shared::Shared::Duplicate(first, answer) => {
                                    if generated_request_id {
                                        *request_id = HeaderValue::from_str(&first).ok();
                                    }
                                    return Box::new(replay(&first, &answer));
                                }
                                shared::Shared::InFlight(first) => {
                                    return Box::new(in_flight_elsewhere(cfg, &first))
                                }
                            }
                        }
                        Ok(Begin::Stored(first, answer)) => {
                            if generated_request_id {
                                // The id of the message the answer is about.
                                *request_id = HeaderValue::from_str(&first).ok();
                            }
                            return Box::new(replay(&first, &answer));
                        }
                        Ok(Begin::Repeat(first)) => {
                            if let Some(answer) = first.wait_answer().await {
                                if generated_request_id {
                                    *request_id = HeaderValue::from_str(&first.id).ok();
                                }
                                return Box::new(replay(&first.id, &answer));
                            }
                            // The first attempt was not accepted: this one is sent as
                            // new, unless another repeat took the key first and also
                            // went unanswered.
                            if waited {
                                return Box::new(no_master(cfg));
                            }
                            waited = true;
                        }
                    }
                }
            }
        };
        let keyed = client_key.is_some();
        let msg = Outgoing {
            body,
            content_type,
            idempotency_key: client_key.unwrap_or_else(|| id_value.clone()),
            forward,
        };
        let region = hints.region.as_deref();
        // Visible ASCII: the client's header was checked, or it is the id.
        let request_id_text = match request_id {
            Some(given) if !generated_request_id => given.to_str().unwrap_or(id),
            _ => id,
        };
        // Visible ASCII: the client's key was checked above, or it is the id.
        let idempotency_key = if keyed {
            msg.idempotency_key.to_str().unwrap_or(id)
        } else {
            id
        };
        let message = Message {
            uuid,
            id,
            id_value: &id_value,
            region,
            key: hints.key.as_deref(),
            idempotency_key,
            claim: claim.as_ref(),
            client,
            request_id: request_id_text,
            recipient: hints.recipient.as_deref(),
        };
        let asked_async = hints::prefers_async(headers);
        if let Some(queue) = &self.queue {
            // Asked async, or earlier messages of its key still waiting: it queues.
            let queue_now = asked_async
                || match message.key.map(|k| queue.has_waiting(k)).transpose() {
                    Ok(waiting) => waiting == Some(true),
                    Err(e) => return Box::new(storage_error(&e)),
                };
            if queue_now {
                return crate::util::boxed(|| self.park(&table, &msg, &message, 0, None)).await;
            }
        }
        self.forward(&table, &msg, &message, added).await
    }

    /// Tries up to `1 + retry_attempts` distinct masters; then, or with none eligible,
    /// queues the message. A master's answer goes to the client with its header lines,
    /// its id and the message id in `added`.
    async fn forward(
        &self,
        table: &crate::routing::RoutingTable,
        msg: &Outgoing,
        message: &Message<'_>,
        added: &mut Added,
    ) -> Answered {
        let Message {
            id,
            id_value,
            region,
            claim,
            ..
        } = *message;
        let cfg = &table.config;
        let max_tries = 1 + cfg.routing.retry_attempts as usize;
        // Masters passed over for a ban: they use up no try (SPEC section 10: the
        // message that met the ban is retried on another master). At most one per
        // master, as `select` skips those tried.
        let mut banned = 0usize;
        // On the stack for the usual few tries: no allocation per message.
        let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        // Real delivery attempts: an exchange this machine could not start (a local
        // fault) is tried elsewhere but is no attempt.
        let mut attempts = 0u32;
        let mut last_error: Option<String> = None;
        // Set when eligible masters were left but none had budget (SPEC section 10).
        let mut budget_wait = None;
        // Sticky recipients (SPEC section 10): the recipient's own master first; with
        // no budget there, the message waits for it (queued, or 429 with the queue
        // off) unless that would take longer than sticky_max_wait_ms.
        let mut sticky = None;
        if let Some(recipient) = message.recipient {
            match table.select_sticky(recipient, &tried) {
                Some(Ok(pick)) => sticky = Some(pick),
                Some(Err(wait)) if wait <= cfg.routing.sticky_max_wait => {
                    if self.queue.is_some() {
                        return crate::util::boxed(|| {
                            self.park(table, msg, message, attempts, None)
                        })
                        .await;
                    }
                    return Box::new(over_budget(wait));
                }
                Some(Err(_)) => crate::telemetry::sticky_move(),
                None => {}
            }
        }
        while tried.len() < max_tries + banned {
            let picked = sticky.take().or_else(|| table.select(region, &tried));
            let Some(pick) = picked else {
                budget_wait = table.budget_wait(&tried);
                break;
            };
            if message.recipient.is_some() && tried.len() == 1 && table.sticky() {
                // Its own master failed it: this one takes it instead.
                crate::telemetry::sticky_move();
            }
            tried.push(pick.index);
            let master = &table.masters[pick.index];
            let stats = &master.stats;
            let exchange = || self.exchange(master, msg, cfg, MasterStats::start);
            // The span only where debug logs are on: wrapping the exchange's future
            // copies it (800 bytes) twice more per message; and the future is made in
            // the branch that awaits it, else it is copied into the branch.
            let result = if tracing::enabled!(tracing::Level::DEBUG) {
                let span = tracing::debug_span!("forward", master = master.id());
                exchange().instrument(span).await
            } else {
                exchange().await
            };
            let (result, ended) = result;
            match result {
                Ok(answer) => {
                    attempts += 1;
                    // Passed to the client as is, whatever it is.
                    // The exchange's end is the time of the answer's count and its
                    // status record.
                    let now_ms = crate::util::unix_ms_at(ended);
                    self.count_answer(master, answer.status, now_ms);
                    let outcome = if answer.status.is_success() {
                        crate::telemetry::Outcome::Success
                    } else {
                        crate::telemetry::Outcome::Rejected
                    };
                    stats.metrics.request(outcome, message.client);
                    if let Some(claim) = claim {
                        let stored = StoredAnswer {
                            status: answer.status,
                            content_type: answer
                                .headers
                                .get("content-type")
                                .and_then(|v| HeaderValue::from_bytes(v).ok()),
                            body: answer.body.clone(),
                            master: master.config.id.clone(),
                        };
                        crate::util::boxed(|| {
                            self.keep_answer(
                                claim,
                                stored,
                                msg,
                                message,
                                attempts,
                                last_error.clone(),
                            )
                        })
                        .await;
                    } else {
                        // Nothing waited on since: the listener's time for the answer.
                        added.at = Some(ended.into());
                    }
                    let max = cfg.server.max_status_records;
                    let status = answer.status;
                    self.record_answer(message, master, status, attempts, last_error, max, now_ms);
                    added
                        .headers
                        .push((MASTER, master.config.id_header.clone()));
                    added.headers.push((MESSAGE_ID, id_value.clone()));
                    added.lines = answer.headers;
                    let mut resp = Box::new(Response::new(Body::new(answer.body)));
                    *resp.status_mut() = answer.status;
                    if pick.region_fallback {
                        resp.headers_mut().insert(
                            "x-switchyard-region-fallback",
                            HeaderValue::from_static("true"),
                        );
                    }
                    return resp;
                }
                Err(e) if e.is_ban() => {
                    banned += 1;
                    self.count_ban(master, &e, message.client);
                    last_error = Some(format!("{}: {}", master.id(), e.reason()));
                }
                Err(e) => {
                    stats.metrics.request(e.outcome(), message.client);
                    let text = e.to_string();
                    tracing::warn!(master = master.id(), message_id = id, error = %text, "exchange with master failed");
                    if self.count_failure(master, &e, text) {
                        attempts += 1;
                    }
                    // What the client and the message's record see: no OS text.
                    last_error = Some(format!("{}: {}", master.id(), e.reason()));
                }
            }
        }
        // Over budget means later, not lost: queued whatever `when_unavailable` says.
        let queue_takes_it = self.queue.is_some()
            && (last_error.is_some()
                || budget_wait.is_some()
                || cfg.queue.when_unavailable == WhenUnavailable::Queue);
        if queue_takes_it {
            return crate::util::boxed(|| self.park(table, msg, message, attempts, last_error))
                .await;
        }
        // A claim dropped unfinished frees its key (see `Claim`).
        Box::new(match (last_error, budget_wait) {
            (None, Some(wait)) => over_budget(wait),
            (None, None) => no_master(cfg),
            (Some(err), _) => unavailable(
                cfg,
                "masters_unavailable",
                format!(
                    "no master accepted the message ({} tried); last error: {err}",
                    tried.len()
                ),
            ),
        })
    }

    /// Records the answer to a message that carried a client's `Idempotency-Key`, for
    /// its repeats: in memory, then durably in the store when the queue is on. A failed
    /// store write does not change the client's answer (the master took the message);
    /// the key then stays in memory for the window.
    async fn keep_answer(
        &self,
        claim: &Claim<'_>,
        answer: StoredAnswer,
        msg: &Outgoing,
        message: &Message<'_>,
        attempts: u32,
        last_error: Option<String>,
    ) {
        claim.finish(answer.clone(), attempts, last_error.clone());
        let Some(queue) = &self.queue else {
            return;
        };
        let kept = MasterAnswer {
            status: answer.status.as_u16(),
            content_type: header_text(answer.content_type.as_ref()),
            body: answer.body,
        };
        let new = new_message(msg, message, attempts, last_error);
        match queue.remember(new, &answer.master, kept).await {
            Ok(()) => self.messages.settle(claim),
            Err(e) => tracing::error!(
                message_id = message.id,
                error = %e,
                "the idempotency record could not be stored; it is kept in memory"
            ),
        }
    }

    /// Queues the message and answers 202 once it is on disk; 503 when the queue is
    /// full, 507 when it cannot write.
    async fn park(
        &self,
        table: &crate::routing::RoutingTable,
        msg: &Outgoing,
        message: &Message<'_>,
        attempts: u32,
        last_error: Option<String>,
    ) -> Answered {
        let cfg = &table.config;
        let Some(queue) = &self.queue else {
            return Box::new(no_master(cfg));
        };
        let new = new_message(msg, message, attempts, last_error.clone());
        let answer = queued_answer(message.id, "queued");
        // The write runs to its end whatever happens to this request, and the key's
        // outcome with it: a client hanging up must not free its key while the message
        // may still land.
        let hold = message.claim.map(Claim::hand_off);
        let answer_kept = answer.clone();
        let settle_key = move |written: bool| {
            if let (true, Some(hold)) = (written, hold) {
                hold.finish(answer_kept, attempts, last_error);
            }
        };
        Box::new(match queue.enqueue_then(new, settle_key).await {
            Ok(()) => {
                if let Some(claim) = message.claim {
                    // The store answers repeats from now on.
                    self.messages.settle(claim);
                }
                let now = crate::util::unix_ms();
                message.log_access("", "queued", attempts, StatusCode::ACCEPTED, now);
                kept_answer(message.id, &answer)
            }
            Err(QueueError::Full(max)) => unavailable(
                cfg,
                "queue_full",
                format!("the queue holds its maximum of {max} messages; retry later"),
            ),
            Err(QueueError::Store(e)) => storage_error(&e),
        })
    }
}

/// One client message on its way.
#[derive(Clone, Copy)]
struct Message<'a> {
    uuid: uuid::Uuid,
    /// `uuid`, hyphenated.
    id: &'a str,
    id_value: &'a HeaderValue,
    region: Option<&'a str>,
    /// The routing key: per-key order.
    key: Option<&'a str>,
    /// The `Idempotency-Key` sent to masters: the client's, or `id`.
    idempotency_key: &'a str,
    claim: Option<&'a Claim<'a>>,
    /// Who sent it (see `crate::clients`).
    client: &'a Arc<str>,
    /// Its `x-request-id`: the client's, or `id`.
    request_id: &'a str,
    /// Its recipient, with `routing.sticky`.
    recipient: Option<&'a str>,
}

impl Message<'_> {
    /// Milliseconds from its acceptance (the time in its UUIDv7) to `now_ms`.
    fn took_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(status::millis_of(&self.uuid))
    }

    /// Its access log line (see [`crate::telemetry::access`]).
    fn log_access(&self, master: &str, status: &str, attempts: u32, sent: StatusCode, now_ms: u64) {
        crate::telemetry::access::log(&crate::telemetry::access::Line {
            id: self.id,
            client: self.client,
            master,
            status,
            attempts,
            duration_ms: self.took_ms(now_ms),
            request_id: self.request_id,
            http_status: sent.as_u16(),
        });
    }
}

/// The message as the queue keeps it.
fn new_message(
    msg: &Outgoing,
    message: &Message<'_>,
    attempts: u32,
    last_error: Option<String>,
) -> NewMessage {
    NewMessage {
        id: message.uuid,
        body: msg.body.clone(),
        content_type: header_text(msg.content_type.as_ref()),
        idempotency_key: message.idempotency_key.to_string(),
        client_key: message.claim.is_some(),
        region: message.region.map(str::to_string),
        routing_key: message.key.map(str::to_string),
        last_error,
        attempts,
        forward_headers: trace::to_text(&msg.forward),
        client: message.client.to_string(),
        request_id: Some(message.request_id.to_string()),
        recipient: message.recipient.map(str::to_string),
    }
}

/// An `x-request-id` for an answer to a send refused before it made its message id
/// (and without the client's own): a fresh id.
fn new_request_id() -> Option<HeaderValue> {
    HeaderValue::from_str(&crate::message_id::new().to_string()).ok()
}

/// 401 for a request to `/v1/*` without a valid client key.
fn unauthorized(e: &crate::clients::AuthError) -> Response<Body> {
    let mut resp = reply::error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn message_not_found(id: &str) -> Response<Body> {
    reply::error(
        StatusCode::NOT_FOUND,
        "message_not_found",
        format!("no message with id `{id}` is known"),
    )
}

/// 507 for a message the queue could not take. The store's writer logs a failed
/// commit once per batch with its detail; here it is logged at debug, so a full disk
/// under load does not write a line per refused message.
fn storage_error(e: &StoreError) -> Response<Body> {
    tracing::debug!(error = %e.detail(), "a message could not be stored");
    reply::error(
        StatusCode::INSUFFICIENT_STORAGE,
        "queue_write_failed",
        format!("the message could not be stored; nothing was kept: {e}"),
    )
}

impl Proxy {
    /// A master answered `message` at once (at `now`, in Unix milliseconds): its status
    /// record (for an hour) and its access log line. A non-2xx answer is the master's
    /// refusal, kept as its `last_error` with the status in `http_status`.
    #[allow(clippy::too_many_arguments)]
    fn record_answer(
        &self,
        message: &Message<'_>,
        master: &crate::routing::MasterEntry,
        status: StatusCode,
        attempts: u32,
        last_error: Option<String>,
        max: usize,
        now: u64,
    ) {
        let last_error = if status.is_success() {
            last_error
        } else {
            Some(format!("{} answered {status}", master.id()))
        };
        let entry = status::Record {
            client: message.client,
            master: &master.config.id,
            attempts,
            http_status: status.as_u16(),
            last_error: last_error.map(String::into_boxed_str),
            took_ms: message.took_ms(now).min(u64::from(u32::MAX)) as u32,
        };
        self.statuses.record(&message.uuid, entry, max);
        message.log_access(master.id(), "delivered", attempts, status, now);
    }

    /// One exchange with `master`, counted in its load (`start`: which counter, see
    /// [`MasterStats::start`]), latency and duration histogram. Success and failure
    /// are for the caller to count. With its result, when it ended (a clock read the
    /// caller can use again).
    async fn exchange(
        &self,
        master: &crate::routing::MasterEntry,
        msg: &Outgoing,
        cfg: &crate::config::Config,
        start: fn(&Arc<MasterStats>) -> InFlight,
    ) -> (Result<Answer, upstream::UpstreamError>, Instant) {
        let stats = &master.stats;
        let started = Instant::now();
        // The last check before anything is sent: a master suspended after this
        // table was published takes nothing more.
        if stats.is_suspended() {
            return (Err(upstream::UpstreamError::Suspended), started);
        }
        let result = {
            let _in_flight = start(stats);
            let timeout = cfg.server.request_timeout;
            let result = exchange(&self.pool, &master.config, msg, timeout, started).await;
            match upstream::ban_reason(&cfg.health.bans, &result) {
                Some(why) => Err(upstream::UpstreamError::Banned(why)),
                None => result,
            }
        };
        let ended = Instant::now();
        let elapsed = ended - started;
        stats.observe_latency(elapsed);
        stats.metrics.duration.record(elapsed);
        (result, ended)
    }

    /// A ban answer suspends `master` (through the controller; no later exchange
    /// starts with it); it counts in no failure run, since suspension already takes
    /// the master out. A master found suspended before sending is only passed over.
    fn count_ban(
        &self,
        master: &crate::routing::MasterEntry,
        e: &upstream::UpstreamError,
        client: &Arc<str>,
    ) {
        if let upstream::UpstreamError::Banned(why) = e {
            master.stats.metrics.request(e.outcome(), client);
            tracing::warn!(master = master.id(), error = %e, "ban answer");
            self.control.ban(master, why.clone());
        }
    }

    /// Counts a master's answer for its health: a 5xx counts against it (and may take
    /// it out), any other answer shows it alive and ends its run of failures.
    fn count_answer(&self, master: &crate::routing::MasterEntry, status: StatusCode, now_ms: u64) {
        let stats = &master.stats;
        if status.is_server_error() {
            let failures = stats.record_failure(format!("answered {status}"), master.table_version);
            self.passive_check(master, failures);
        } else {
            stats.record_success(now_ms);
        }
    }

    /// Ejects a master whose live requests failed `passive_failures` times in a row. A
    /// master on trial after an outage, with no probes to
    /// vouch for it, is ejected at its first failure.
    fn passive_check(&self, master: &crate::routing::MasterEntry, failures: u32) {
        let on_trial = master.health == crate::health::HealthState::Recovering
            && master.config.health_url.is_none();
        let limit = if on_trial {
            1
        } else {
            self.control.table().config.health.passive_failures.max(1)
        };
        // At or past the limit: an ejection the controller could not act on (a master
        // it has not seen yet, a limit lowered by reload) is sent again.
        if failures >= limit {
            let reason = format!("{failures} live requests failed in a row");
            self.control.eject(master.config.id.clone(), reason);
        }
    }
}

fn too_large(limit: usize) -> Response<Body> {
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than server.max_body_bytes ({limit} bytes)"),
    )
}

/// 503 for a repeat whose first message was still in flight on another node when the
/// wait for its answer ran out.
fn in_flight_elsewhere(cfg: &crate::config::Config, first: &str) -> Response<Body> {
    let mut resp = unavailable(
        cfg,
        "duplicate_in_flight",
        "the first message with this Idempotency-Key is still being delivered by another \
         node; retry later for its answer"
            .into(),
    );
    let headers = resp.headers_mut();
    if let Ok(id) = HeaderValue::from_str(first) {
        headers.insert(MESSAGE_ID, id);
    }
    headers.insert("x-switchyard-duplicate", HeaderValue::from_static("true"));
    resp
}

fn no_master(cfg: &crate::config::Config) -> Response<Body> {
    unavailable(
        cfg,
        "no_eligible_master",
        "no master is eligible to take the message; retry later".into(),
    )
}

/// 429 when every eligible master is out of budget and the queue is off; the
/// `Retry-After` is when the first of them has budget again, in whole seconds.
fn over_budget(wait: std::time::Duration) -> Response<Body> {
    let secs = wait.as_millis().div_ceil(1000).clamp(1, 86_400 + 60) as u64;
    let mut resp = reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "over_budget",
        format!(
            "every eligible master has used its sending budget (rate_per_sec, burst or \
             daily_limit); retry after {secs} s"
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn unavailable(cfg: &crate::config::Config, code: &str, message: String) -> Response<Body> {
    let mut resp = reply::error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    let secs = cfg.health.interval.as_secs().clamp(1, 60);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// The 202 body of a queued message, `status` being where it stands.
fn queued_answer(id: &str, status: &str) -> StoredAnswer {
    StoredAnswer {
        status: StatusCode::ACCEPTED,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: serde_json::json!({"id": id, "status": status})
            .to_string()
            .into(),
        master: Arc::from(""),
    }
}

fn header_text(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The first message's answer, for a repeat of its `Idempotency-Key`.
fn replay(id: &str, answer: &StoredAnswer) -> Response<Body> {
    let mut resp = kept_answer(id, answer);
    resp.headers_mut()
        .insert("x-switchyard-duplicate", HeaderValue::from_static("true"));
    resp
}

/// A kept answer as the client gets it: the master's (with `x-switchyard-master`) or
/// a queued message's 202 (with `Location`).
fn kept_answer(id: &str, answer: &StoredAnswer) -> Response<Body> {
    let mut resp = Response::new(Body::new(answer.body.clone()));
    *resp.status_mut() = answer.status;
    let headers = resp.headers_mut();
    if let Some(ct) = &answer.content_type {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    // Both are (or were, when the first message was answered) header values.
    if let Ok(id_value) = HeaderValue::from_str(id) {
        headers.insert(MESSAGE_ID, id_value);
    }
    if let Ok(master) = HeaderValue::from_str(&answer.master) {
        if !master.is_empty() {
            headers.insert(MASTER, master);
        }
    }
    if answer.status == StatusCode::ACCEPTED {
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/messages/{id}")) {
            headers.insert(header::LOCATION, location);
        }
    }
    resp
}

/// Once a minute, forgets what the idempotency window no longer covers: entries in
/// memory, and delivered records (with their keys) in the store.
pub async fn sweep_messages(proxy: Arc<Proxy>, mut shutdown: crate::server::Shutdown) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let window = proxy.control.table().config.queue.idempotency_window;
                proxy.messages.sweep(window);
                proxy.statuses.sweep(crate::util::unix_ms());
                if let Some(queue) = &proxy.queue {
                    match queue.sweep(window).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(records = n, "swept delivered records"),
                        Err(e) => tracing::warn!(error = %e, "could not sweep delivered records"),
                    }
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}
