//! Whether a claim asks etcd: always while it answers; after a failure, not for a
//! pause, then one claim at a time (a probe) until one succeeds. A frozen etcd thus
//! delays at most one send per pause by the claim timeout, not every send.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// After a failure, claims do not ask etcd for this long (ms).
pub(super) const PAUSE_MS: u64 = 1000;

#[derive(Debug, Default)]
pub(super) struct Breaker {
    /// 0 while etcd answers; else until when (ms since the epoch) claims skip it.
    down_until_ms: AtomicU64,
    /// While etcd is down: one claim is asking it again.
    probing: AtomicBool,
}

/// What a claim may do now.
pub(super) enum Admit<'a> {
    /// Ask etcd.
    Ask,
    /// Ask etcd as the one probe; tell [`Probe::succeeded`] if it answers. Dropped,
    /// it lets the next claim probe.
    Probe(Probe<'a>),
    /// Do not ask: etcd failed recently.
    Skip,
}

pub(super) struct Probe<'a>(&'a Breaker);

impl Probe<'_> {
    pub(super) fn succeeded(self) {
        self.0.down_until_ms.store(0, Ordering::Release);
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.probing.store(false, Ordering::Release);
    }
}

impl Breaker {
    pub(super) fn admit(&self, now_ms: u64) -> Admit<'_> {
        let until = self.down_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Ask;
        }
        if now_ms < until || self.probing.swap(true, Ordering::AcqRel) {
            return Admit::Skip;
        }
        Admit::Probe(Probe(self))
    }

    /// etcd failed: skip it for a pause from `now_ms`.
    pub(super) fn failed(&self, now_ms: u64) {
        self.down_until_ms
            .fetch_max(now_ms + PAUSE_MS, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_claims_skip_etcd_for_a_pause_then_probe_one_at_a_time() {
        let b = Breaker::default();
        assert!(matches!(b.admit(0), Admit::Ask));
        b.failed(10_000);
        assert!(matches!(b.admit(10_000), Admit::Skip));
        assert!(matches!(b.admit(10_000 + PAUSE_MS - 1), Admit::Skip));
        let at = 10_000 + PAUSE_MS;
        let Admit::Probe(probe) = b.admit(at) else {
            panic!("the pause is over: one probe")
        };
        assert!(matches!(b.admit(at), Admit::Skip), "one probe at a time");
        // The probe failed too: another pause, and the next probe after it.
        b.failed(at);
        drop(probe);
        assert!(matches!(b.admit(at + 1), Admit::Skip));
        let Admit::Probe(probe) = b.admit(at + PAUSE_MS) else {
            panic!("the pause is over: one probe")
        };
        // A probe cancelled before an answer lets the next claim probe.
        drop(probe);
        let Admit::Probe(probe) = b.admit(at + PAUSE_MS) else {
            panic!("the next claim probes")
        };
        probe.succeeded();
        assert!(matches!(b.admit(at + PAUSE_MS), Admit::Ask));
    }
}
