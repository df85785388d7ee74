//! Each master's share of recent traffic, over a rolling window: the lifetime request
//! counts are sampled every `step`, and a share is the count since the oldest sample
//! kept (at most `window` plus one `step` ago) over the total since then. From start,
//! the window is simply shorter: shares are right from the first requests.
//!
//! May call: nothing; the failover controller feeds it counts and a clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts by master id at one instant.
type Sample = (Instant, HashMap<Arc<str>, u64>);

#[derive(Debug)]
pub struct Shares {
    window: Duration,
    step: Duration,
    /// Oldest first; never empty after the first [`Shares::measure`].
    samples: VecDeque<Sample>,
    measured_at: Option<Instant>,
}

/// How often [`Shares::due`] lets the shares be measured again.
const REFRESH: Duration = Duration::from_millis(250);

/// Shares of the window measured, and the requests they are shares of.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Measured {
    pub shares: HashMap<Arc<str>, f64>,
    pub total: u64,
}

impl Shares {
    pub fn new(window: Duration, step: Duration) -> Shares {
        Shares {
            window,
            step,
            samples: VecDeque::new(),
            measured_at: None,
        }
    }

    /// Whether the shares are worth measuring again (every 250 ms: the controller
    /// ticks faster than anyone reads them).
    pub fn due(&self, now: Instant) -> bool {
        self.measured_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH)
    }

    /// The shares of the requests since the oldest sample, given each master's
    /// lifetime count now. A master absent from every sample (new in the config) is
    /// counted from its first sample on.
    pub fn measure(&mut self, now: Instant, counts: &[(Arc<str>, u64)]) -> Measured {
        self.measured_at = Some(now);
        let due = self
            .samples
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= self.step);
        if due {
            let sample = counts.iter().cloned().collect();
            self.samples.push_back((now, sample));
        }
        // Drop the oldest while the next one still covers the window.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.window)
        {
            self.samples.pop_front();
        }
        let since: Vec<(Arc<str>, u64)> = counts
            .iter()
            .map(|(id, now_count)| {
                let base = self
                    .samples
                    .iter()
                    .find_map(|(_, s)| s.get(id))
                    .copied()
                    .unwrap_or(*now_count);
                (id.clone(), now_count.saturating_sub(base))
            })
            .collect();
        let total: u64 = since.iter().map(|(_, n)| n).sum();
        let shares = since
            .into_iter()
            .map(|(id, n)| {
                let share = if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                };
                (id, share)
            })
            .collect();
        Measured { shares, total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(a: u64, b: u64) -> Vec<(Arc<str>, u64)> {
        vec![(Arc::from("a"), a), (Arc::from("b"), b)]
    }

    #[test]
    fn shares_are_right_from_start_then_roll() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Shares::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(w.measure(at(0), &counts(0, 0)).total, 0);
        // Half a second in: no second sample yet, the first one is the base.
        let m = w.measure(t0 + Duration::from_millis(500), &counts(3, 1));
        assert_eq!((m.shares["a"], m.shares["b"], m.total), (0.75, 0.25, 4));
        // Ten seconds of `a` only, then ten of `b` only: `a` leaves the window.
        for s in 1..=10 {
            w.measure(at(s), &counts(3 + s * 10, 1));
        }
        for s in 11..=21 {
            w.measure(at(s), &counts(103, 1 + (s - 10) * 10));
        }
        let m = w.measure(at(21), &counts(103, 111));
        assert_eq!(m.shares["a"], 0.0, "{m:?}");
        assert_eq!(m.shares["b"], 1.0, "{m:?}");
        assert!(w.samples.len() <= 12, "{}", w.samples.len());
    }

    #[test]
    fn a_new_master_counts_from_its_first_sample() {
        let t0 = Instant::now();
        let mut w = Shares::new(Duration::from_secs(10), Duration::from_secs(1));
        w.measure(t0, &[(Arc::from("a"), 5)]);
        // `b` arrives with an old lifetime count (a master removed and added back).
        let m = w.measure(t0 + Duration::from_secs(1), &counts(9, 1000));
        assert_eq!((m.shares["a"], m.shares["b"]), (1.0, 0.0));
        let m = w.measure(t0 + Duration::from_secs(2), &counts(9, 1004));
        assert_eq!((m.shares["a"], m.shares["b"]), (0.5, 0.5));
    }
}
