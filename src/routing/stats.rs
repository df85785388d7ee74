//! Live per-master counters: atomics that outlive routing tables and reloads.
//!
//! The request path only touches atomics and pre-registered metric handles here; the
//! registry's map is read when a table is built, never per request.

use crate::telemetry::MasterMetrics;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Counters of one master, keyed by id in [`StatsRegistry`].
#[derive(Debug)]
pub struct MasterStats {
    pub in_flight: AtomicU64,
    /// Messages waiting in the queue for this master (filled by the queue).
    pub queued: AtomicU64,
    pub sent_total: AtomicU64,
    pub failed_total: AtomicU64,
    pub consecutive_failures: AtomicU32,
    /// Exponentially weighted moving average of exchange latency, in microseconds.
    latency_ewma_us: AtomicU64,
    last_error: ArcSwapOption<String>,
    pub metrics: MasterMetrics,
}

impl MasterStats {
    pub fn new(id: &str) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            sent_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
            metrics: MasterMetrics::new(id),
        }
    }

    /// Marks one exchange as started; the guard ends it when dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn latency_us(&self) -> u64 {
        self.latency_ewma_us.load(Relaxed)
    }

    /// Folds one latency sample into the moving average (weight 1/8, like TCP's SRTT).
    pub fn observe_latency(&self, elapsed: Duration) {
        let sample = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let _ = self.latency_ewma_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == 0 {
                sample.max(1)
            } else {
                (old * 7 + sample) / 8
            })
        });
    }

    pub fn record_success(&self) {
        self.sent_total.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }

    pub fn record_failure(&self, error: String) {
        self.failed_total.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_error.store(Some(Arc::new(error)));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// (in-flight + queued), the load `least_loaded` divides by weight.
    pub fn load(&self) -> u64 {
        self.in_flight.load(Relaxed) + self.queued.load(Relaxed)
    }
}

/// Decrements the master's in-flight count when dropped, so a cancelled request
/// (client gone, timeout) never leaks load.
#[derive(Debug)]
pub struct InFlight(Arc<MasterStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// All masters' counters by id; entries survive table rebuilds and reloads.
#[derive(Debug, Default)]
pub struct StatsRegistry(DashMap<Arc<str>, Arc<MasterStats>>);

impl StatsRegistry {
    pub fn get_or_create(&self, id: &Arc<str>) -> Arc<MasterStats> {
        if let Some(s) = self.0.get(id) {
            return s.clone();
        }
        self.0
            .entry(id.clone())
            .or_insert_with(|| Arc::new(MasterStats::new(id)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_guard_and_latency() {
        let s = Arc::new(MasterStats::new("a"));
        {
            let _g = s.start();
            assert_eq!(s.load(), 1);
        }
        assert_eq!(s.load(), 0);
        s.observe_latency(Duration::from_micros(800));
        s.observe_latency(Duration::from_micros(0));
        assert_eq!(s.latency_us(), 700);
    }
}
