//! Each master's messages over the last 24 hours, kept across restarts in
//! `daily_counts.json` in the data dir, so that `daily_limit` holds over any 24 hours
//! even when switchyard restarts inside them (SPEC section 10).
//!
//! The counts per minute ([`DailyCap::snapshot`]) are written every second when they
//! changed, and once more at a clean shutdown, the way the operator state is: a
//! temporary file, `sync_all`, a rename over the old one, and a sync of the directory.
//!
//! # What a `kill -9` can lose, and why the cap still holds
//!
//! A kill loses what was sent since the last write: at most one second (plus the
//! write's own time) of sends. So every periodic write also *reserves* what a master
//! could send before the next one lands: two seconds at its pace plus its burst
//! (`2 * rate_per_sec + burst`), counted at the current minute. A clean shutdown writes
//! the true counts without a reservation. After a kill, the reservation is restored
//! with the counts: the master may then send a little less than its `daily_limit`
//! that day, never more. A master with a `daily_limit` but no `rate_per_sec` has no
//! bound on a second's sends, so nothing can be reserved for it: a kill may lose up
//! to its last second of counts. Give such a master a pace when the cap is strict.

use super::Control;
use crate::util::unix_ms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const FILE: &str = "daily_counts.json";
/// How often changed counts are written.
const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Saved {
    /// Master id -> its counts.
    masters: BTreeMap<String, SavedMaster>,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct SavedMaster {
    /// (minute since the Unix epoch, messages), oldest first.
    minutes: Vec<(u64, u64)>,
    /// Sends reserved ahead at minute `reserved_at` (see the module doc); 0 after a
    /// clean shutdown.
    #[serde(default)]
    reserved: u64,
    #[serde(default)]
    reserved_at: u64,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Restores the saved counts of the masters the config has. A missing file is a
/// first start; an unreadable one is logged and counts start from zero.
pub fn restore(control: &Control, dir: &Path) {
    let saved: Saved = match fs::read(path(dir)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(error = %e, file = %path(dir).display(), "cannot read the saved daily counts; they start from zero");
                return;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!(error = %e, file = %path(dir).display(), "cannot read the saved daily counts; they start from zero");
            return;
        }
    };
    let table = control.table();
    let now = unix_ms();
    for m in &table.masters {
        if let Some(s) = saved.masters.get(m.id()) {
            let mut minutes = s.minutes.clone();
            if s.reserved > 0 {
                minutes.push((s.reserved_at, s.reserved));
            }
            m.stats.daily.restore(&minutes, now);
        }
    }
}

/// What to write now: every master's counts, with a reservation unless `clean`.
fn collect(control: &Control, clean: bool) -> Saved {
    let table = control.table();
    let minute = unix_ms() / 60_000;
    let mut saved = Saved::default();
    for m in &table.masters {
        let minutes = m.stats.daily.snapshot();
        if minutes.is_empty() {
            continue;
        }
        let c = &m.config;
        let reserved = if clean || c.daily_limit == 0 || c.rate_per_sec <= 0.0 {
            0
        } else {
            (2.0 * c.rate_per_sec).ceil() as u64 + u64::from(c.burst)
        };
        saved.masters.insert(
            m.id().to_string(),
            SavedMaster {
                minutes,
                reserved,
                reserved_at: minute,
            },
        );
    }
    saved
}

fn write(dir: &Path, saved: &Saved) -> io::Result<()> {
    let bytes = serde_json::to_vec(saved).map_err(io::Error::other)?;
    let file = path(dir);
    let tmp = file.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &file)?;
    let parent = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Writes the counts every second while they change, until shutdown; then
/// [`save_clean`] writes them once more when nothing can send any longer.
///
/// Each second it also raises a `daily_budget_90` warning for every master that has
/// spent 90% of its `daily_limit` (the alerter folds repeats).
pub async fn run(
    control: Arc<Control>,
    alerts: Arc<crate::alerts::Alerter>,
    dir: PathBuf,
    mut shutdown: crate::server::Shutdown,
) {
    let mut last: Option<Saved> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        warn_near_limit(&control, &alerts);
        let saved = collect(&control, false);
        if last.as_ref() == Some(&saved) {
            continue;
        }
        let d = dir.clone();
        let written = tokio::task::spawn_blocking(move || write(&d, &saved).map(|()| saved)).await;
        match written {
            Ok(Ok(saved)) => last = Some(saved),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save the daily counts"),
            Err(e) => tracing::error!(error = %e, "the daily counts save failed"),
        }
    }
}

/// A warning for each master with 90% or more of its `daily_limit` spent.
fn warn_near_limit(control: &Control, alerts: &crate::alerts::Alerter) {
    let table = control.table();
    let now = unix_ms();
    for m in &table.masters {
        let limit = m.config.daily_limit;
        if limit == 0 {
            continue;
        }
        let sent = m.stats.daily.sent_24h(now);
        if sent.saturating_mul(10) >= limit.saturating_mul(9) {
            alerts.raise(
                crate::alerts::Severity::Warning,
                "daily_budget_90",
                Some(m.id()),
                format!(
                    "{} has sent {sent} of its daily_limit of {limit} messages over the last 24 hours",
                    m.id()
                ),
            );
        }
    }
}

/// The last write, at a clean shutdown once every exchange has ended: the true
/// counts, without reservations. Blocks on two fsyncs.
pub fn save_clean(control: &Control, dir: &Path) {
    if let Err(e) = write(dir, &collect(control, true)) {
        tracing::error!(error = %e, "cannot save the daily counts at shutdown");
    }
}

/// Only for tests: the saved counts of `id` as `DailyCap` would restore them.
#[cfg(test)]
fn saved_of(dir: &Path, id: &str) -> Option<crate::routing::budget::DailyCap> {
    let saved: Saved = serde_json::from_slice(&fs::read(path(dir)).ok()?).ok()?;
    let s = saved.masters.get(id)?;
    let cap = crate::routing::budget::DailyCap::new(0);
    let mut minutes = s.minutes.clone();
    minutes.push((s.reserved_at, s.reserved));
    cap.restore(&minutes, unix_ms());
    Some(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_reserves_ahead_and_a_clean_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::from_toml(
            "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/\"\nrate_per_sec = 3\nburst = 2\ndaily_limit = 100\n",
        )
        .unwrap();
        let control = Control::new(
            config,
            0,
            None,
            Arc::new(crate::audit::AuditLog::in_memory()),
            super::super::operator::OperatorStore::in_memory(),
        );
        let stats = control.stats_of(&Arc::from("a"));
        for _ in 0..5 {
            assert!(stats.daily.try_take(unix_ms()));
        }
        write(dir.path(), &collect(&control, false)).unwrap();
        // 5 sent, and 2 * 3 + 2 reserved: what a kill could have lost.
        assert_eq!(saved_of(dir.path(), "a").unwrap().sent_24h(unix_ms()), 13);
        write(dir.path(), &collect(&control, true)).unwrap();
        assert_eq!(saved_of(dir.path(), "a").unwrap().sent_24h(unix_ms()), 5);
        stats.daily.give_back(unix_ms());
        restore(&control, dir.path());
        assert_eq!(
            stats.daily.sent_24h(unix_ms()),
            4 + 5,
            "restore adds to the counts"
        );
    }
}
