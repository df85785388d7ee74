//! A master's sending budget (SPEC section 10): a pace of `rate_per_sec` messages a
//! second with `burst` allowed at once, and a cap of `daily_limit` messages over any
//! rolling 24 hours.
//!
//! # The pace
//!
//! A generic cell rate algorithm (GCRA) over one atomic: the theoretical arrival time
//! (TAT) of the next message, in nanoseconds of [`now_ns`]. A message may go when
//! `TAT - now <= (burst - 1) * T`, with `T = 1 / rate`, and moves the TAT on by `T`.
//! So `burst` messages go at once, then one every `T`: in any one-second window at
//! most `rate_per_sec + burst` (the window closed at both ends). A taken message is
//! one CAS; a refused one is one load.
//!
//! Warm-up passes a factor in (0, 1] that scales the rate (10% → 100%): `T` grows
//! as the factor shrinks, so a warming master never goes above its current pace.
//!
//! `governor` has this algorithm, but its quota is fixed when the limiter is built;
//! warm-up changes the pace continuously, and the routing table needs to know a
//! master's budget without spending it (`available`) and when the next message may
//! go (`Retry-After`). Both are a few lines over the same state.
//!
//! # The daily cap
//!
//! Counts per minute of wall-clock time, the last 1,440 of them: a message counts
//! until its minute is more than 24 hours old, so the cap holds over any 24 hours
//! (a message may count up to a minute longer than 24 h, never shorter). Only
//! masters with a cap pay for its mutex; it is held for a few instructions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Nanoseconds since the first call in this process: the pace's clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Cluster mode (SPEC section 11): how many nodes share every master's budget. Each
/// node paces a master at `rate_per_sec / rate_nodes` (burst likewise, at least 1)
/// and caps it at `daily_limit / daily_nodes` a day (at least 1), so the nodes
/// together stay within the master's limits. One node: 1 and 1.
static SPLIT: AtomicU64 = AtomicU64::new((1 << 32) | 1);

/// Sets the split; applied by the next [`crate::routing::stats::MasterStats::configure`].
pub fn set_split(rate_nodes: u32, daily_nodes: u32) {
    let (r, d) = (rate_nodes.max(1) as u64, daily_nodes.max(1) as u64);
    SPLIT.store((r << 32) | d, Ordering::Relaxed);
}

/// `(rate_nodes, daily_nodes)`.
pub fn split() -> (u32, u32) {
    let v = SPLIT.load(Ordering::Relaxed);
    ((v >> 32) as u32, v as u32)
}

/// The pace of one master. `rate = 0` means no limit. A reload may change the rate
/// and burst ([`Pace::set`]) without losing what was spent.
#[derive(Debug)]
pub struct Pace {
    /// `f64` bits of the rate.
    rate: AtomicU64,
    burst: AtomicU32,
    /// Theoretical arrival time of the next message, in [`now_ns`] nanoseconds.
    tat: AtomicU64,
}

impl Pace {
    pub fn new(rate: f64, burst: u32) -> Pace {
        Pace {
            rate: AtomicU64::new(rate.max(0.0).to_bits()),
            burst: AtomicU32::new(burst.max(1)),
            tat: AtomicU64::new(0),
        }
    }

    /// Changes the rate and burst; the budget already spent stays spent.
    pub fn set(&self, rate: f64, burst: u32) {
        self.rate.store(rate.max(0.0).to_bits(), Ordering::Relaxed);
        self.burst.store(burst.max(1), Ordering::Relaxed);
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    pub fn burst(&self) -> u32 {
        self.burst.load(Ordering::Relaxed)
    }

    /// The emission interval `T` at `factor` of the full rate and the tolerance
    /// `(burst - 1) * T`, in nanoseconds, from one read of the rate; `None` when
    /// unlimited.
    fn timing(&self, factor: f64) -> Option<(u64, u64)> {
        let rate = self.rate();
        if rate <= 0.0 {
            return None;
        }
        let t = (1e9 / (rate * factor.clamp(0.01, 1.0))).ceil() as u64;
        Some((t, t * (self.burst() as u64 - 1)))
    }

    /// Takes one message's budget at `now`, or says how long until one is free.
    pub fn try_take(&self, now: u64, factor: f64) -> Result<(), Duration> {
        let Some((t, tolerance)) = self.timing(factor) else {
            return Ok(());
        };
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > tolerance {
                return Err(Duration::from_nanos(start - now - tolerance));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + t,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Messages that could go at once at `now`, without taking any (`u32::MAX`
    /// when unlimited).
    pub fn available(&self, now: u64, factor: f64) -> u32 {
        let Some((t, tolerance)) = self.timing(factor) else {
            return u32::MAX;
        };
        let ahead = self.tat.load(Ordering::Acquire).saturating_sub(now);
        if ahead > tolerance {
            0
        } else {
            ((tolerance - ahead) / t + 1) as u32
        }
    }

    /// How long until the next message may go at `now` (zero when one may go now).
    pub fn wait(&self, now: u64, factor: f64) -> Duration {
        let Some((_, tolerance)) = self.timing(factor) else {
            return Duration::ZERO;
        };
        let ahead = self.tat.load(Ordering::Acquire).saturating_sub(now);
        Duration::from_nanos(ahead.saturating_sub(tolerance))
    }
}

/// Minutes counted by the daily cap.
const DAY_MINUTES: u64 = 24 * 60;

/// Messages per minute over the last 24 hours, against a cap. `limit = 0` means no cap
/// (nothing is counted then but the total sent, for display).
#[derive(Debug)]
pub struct DailyCap {
    limit: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Window {
    /// (minute since the Unix epoch, messages), oldest first, one entry per minute
    /// that sent anything.
    minutes: VecDeque<(u64, u64)>,
    total: u64,
}

impl Window {
    fn expire(&mut self, minute: u64) {
        while let Some(&(m, n)) = self.minutes.front() {
            if m + DAY_MINUTES >= minute {
                break;
            }
            self.minutes.pop_front();
            self.total -= n;
        }
    }

    fn add(&mut self, minute: u64, n: u64) {
        match self.minutes.back_mut() {
            Some((m, count)) if *m >= minute => *count += n,
            _ => self.minutes.push_back((minute, n)),
        }
        self.total += n;
    }
}

impl DailyCap {
    pub fn new(limit: u64) -> DailyCap {
        DailyCap {
            limit: AtomicU64::new(limit),
            window: Mutex::new(Window::default()),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the cap; the counts stay.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Milliseconds from `unix_ms` until a message may go under the cap (0 when one
    /// may go now): until the oldest counted minute leaves the window.
    pub fn wait_ms(&self, unix_ms: u64) -> u64 {
        let limit = self.limit();
        let mut w = self.lock();
        w.expire(unix_ms / 60_000);
        if limit == 0 || w.total < limit {
            return 0;
        }
        // Expired once `m + DAY_MINUTES < minute`, so at minute m + DAY_MINUTES + 1.
        let mut left = w.total;
        for &(m, n) in &w.minutes {
            left -= n.min(left);
            if left < limit {
                return ((m + DAY_MINUTES + 1) * 60_000).saturating_sub(unix_ms);
            }
        }
        0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding it leaves counts that are still counts.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one message sent at `unix_ms`, unless the cap is reached.
    pub fn try_take(&self, unix_ms: u64) -> bool {
        let minute = unix_ms / 60_000;
        let mut w = self.lock();
        w.expire(minute);
        let limit = self.limit();
        if limit > 0 && w.total >= limit {
            return false;
        }
        w.add(minute, 1);
        true
    }

    /// Gives back one message counted at `unix_ms` that was not sent after all.
    pub fn give_back(&self, unix_ms: u64) {
        let minute = unix_ms / 60_000;
        let mut guard = self.lock();
        let w = &mut *guard;
        let counted = w
            .minutes
            .iter_mut()
            .rev()
            .find(|(m, n)| *m <= minute && *n > 0);
        if let Some((_, n)) = counted {
            *n -= 1;
            w.total -= 1;
        }
    }

    /// Messages counted over the 24 hours before `unix_ms`.
    pub fn sent_24h(&self, unix_ms: u64) -> u64 {
        let mut w = self.lock();
        w.expire(unix_ms / 60_000);
        w.total
    }

    /// Whether the cap is reached at `unix_ms`.
    pub fn exhausted(&self, unix_ms: u64) -> bool {
        let limit = self.limit();
        limit > 0 && self.sent_24h(unix_ms) >= limit
    }

    /// The counts per minute, oldest first: what a restart needs to go on.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.lock().minutes.iter().copied().collect()
    }

    /// Adds counts saved by [`DailyCap::snapshot`] (before a restart, or of this
    /// master under its previous config).
    pub fn restore(&self, minutes: &[(u64, u64)], unix_ms: u64) {
        let mut w = self.lock();
        let mut merged: Vec<(u64, u64)> =
            w.minutes.drain(..).chain(minutes.iter().copied()).collect();
        merged.sort_unstable();
        *w = Window::default();
        for (m, n) in merged {
            w.add(m, n);
        }
        w.expire(unix_ms / 60_000);
    }
}

#[cfg(test)]
mod tests;
