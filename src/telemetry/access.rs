//! The access log (SPEC section 9): one line per message outcome, at info on the
//! target `switchyard::access`, with structured fields (one JSON object per line with
//! `log.format = "json"`), so `RUST_LOG=switchyard::access=off` or a log shipper can
//! pick it out.
//!
//! A message answered at once gets one line (its answer); a queued one gets a line at
//! its 202 (`queued`) and one at its final outcome (`delivered` or `dead`). A request
//! refused before it became a message (400, 401, 413, 503, 507) gets none: it has no
//! id to trace.
//!
//! `log.access` switches it, live: [`set_enabled`] is called with every config that
//! takes effect.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

pub const TARGET: &str = "switchyard::access";

static ENABLED: AtomicBool = AtomicBool::new(true);

/// `log.access` of the config now in effect.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// One message outcome.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub id: &'a str,
    pub client: &'a str,
    /// Empty when no master has answered.
    pub master: &'a str,
    /// `queued`, `delivered` or `dead`.
    pub status: &'a str,
    pub attempts: u32,
    /// Since the message was accepted.
    pub duration_ms: u64,
    pub request_id: &'a str,
    /// The status sent to the client (its answer, or 202 for a queued message); for
    /// the final line of a queued message, the master's answer (0 when none).
    pub http_status: u16,
}

/// Writes `line`, unless `log.access` is off.
pub fn log(line: &Line<'_>) {
    if !enabled() {
        return;
    }
    tracing::info!(
        target: TARGET,
        id = line.id,
        client = line.client,
        master = line.master,
        status = line.status,
        attempts = line.attempts,
        duration_ms = line.duration_ms,
        request_id = line.request_id,
        http_status = line.http_status,
        "message"
    );
}

/// The final line of a queued message, from its record.
pub fn log_record(record: &crate::queue::record::Record, http_status: u16) {
    if !enabled() {
        return;
    }
    let id = record.uuid().to_string();
    log(&Line {
        id: &id,
        client: &record.client,
        master: record.master.as_deref().unwrap_or_default(),
        status: record.status.as_str(),
        attempts: record.attempts,
        duration_ms: record.updated_ms.saturating_sub(record.created_ms),
        request_id: record.request_id.as_deref().unwrap_or_default(),
        http_status,
    });
}
