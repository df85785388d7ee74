//! One master's health state machine (SPEC section 5), driven by signals and an
//! injected clock: every method takes `now`, nothing reads the time itself, so tests
//! step through minutes of behaviour without waiting.
//!
//! ```text
//! healthy ──(unhealthy_threshold probe failures | passive ejection)──▶ degraded
//! degraded ──(healthy_threshold passes | trial after backoff)──▶ recovering   (no failover)
//! degraded ──(still down after recovery_wait)──▶ failed                        (failover)
//! failed ──(healthy_threshold passes | trial after backoff)──▶ recovering
//! recovering ──(slow_start elapsed)──▶ healthy
//! recovering ──(failures again)──▶ back to degraded or failed, as before
//! any state ──(a ban answer)──▶ suspended ──(reinstated by an operator)──▶ recovering
//! ```
//!
//! `suspended` (SPEC section 10) is left only by [`Machine::reinstate`]: probes, live
//! outcomes and the clock leave it alone. A master that fails again while recovering
//! from a suspension falls to `failed`.
//!
//! A master without a `health_url` has no probes: it is re-admitted by a trial (a
//! `recovering` spell at a small share) after a backoff that doubles on each failed
//! trial.

use super::HealthState;
use crate::config::HealthConfig;
use std::time::{Duration, Instant};

/// The settings a machine needs, from `[health]` and `[failover]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub recovery_wait: Duration,
    pub slow_start: Duration,
    /// First wait before a trial of a master without probes; doubles up to `trial_max`.
    pub trial_initial: Duration,
    pub trial_max: Duration,
}

impl Settings {
    pub fn new(health: &HealthConfig, recovery_wait: Duration, slow_start: Duration) -> Self {
        Self {
            healthy_threshold: health.healthy_threshold.max(1),
            unhealthy_threshold: health.unhealthy_threshold.max(1),
            recovery_wait,
            slow_start,
            trial_initial: health.interval,
            trial_max: health.interval * 16,
        }
    }
}

/// What the machine is told.
#[derive(Debug, Clone)]
pub enum Signal {
    ProbePass,
    ProbeFail(String),
    /// Live requests failed in a row past the passive limit.
    Ejected(String),
    /// An answer said the master's sender account is blocked.
    Banned(String),
}

/// A change of state, for the audit trail and the routing table.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub reason: String,
    /// For a return to rotation: how long the master was out.
    pub outage: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    state: HealthState,
    /// When `state` was entered.
    since: Instant,
    probed: bool,
    passes: u32,
    fails: u32,
    /// While out of rotation (or on trial): when it left, and the state it fell to.
    down: Option<(Instant, HealthState)>,
    /// When it last came back into rotation, while it stays there.
    routable_since: Option<Instant>,
    trial_wait: Duration,
    next_trial: Option<Instant>,
    /// Time spent routable and not, for `uptime_ratio`.
    up: Duration,
    total: Duration,
    accounted: Instant,
    /// Outages that ended (back in rotation through slow start to `healthy`), and their
    /// summed length up to the return to rotation, for mean time to recovery.
    recoveries: u32,
    recovery_time: Duration,
    /// While `suspended`: why.
    suspended_reason: Option<String>,
}

impl Machine {
    pub fn new(probed: bool, now: Instant) -> Self {
        Self {
            state: HealthState::Healthy,
            since: now,
            probed,
            passes: 0,
            fails: 0,
            down: None,
            routable_since: Some(now),
            trial_wait: Duration::ZERO,
            next_trial: None,
            up: Duration::ZERO,
            total: Duration::ZERO,
            accounted: now,
            recoveries: 0,
            recovery_time: Duration::ZERO,
            suspended_reason: None,
        }
    }

    /// Why it is `suspended`, while it is.
    pub fn suspended_reason(&self) -> Option<&str> {
        self.suspended_reason.as_deref()
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// When the master last came back into rotation (`recovering` or `healthy` since).
    pub fn routable_since(&self) -> Option<Instant> {
        self.routable_since
    }

    /// Whether probes or a health URL watch this master (a config reload may change it).
    pub fn set_probed(&mut self, probed: bool) {
        self.probed = probed;
    }

    /// When [`Machine::tick`] next has something to do, if ever without a signal.
    pub fn deadline(&self, s: &Settings) -> Option<Instant> {
        let trial = self.next_trial.filter(|_| !self.probed);
        match self.state {
            HealthState::Degraded => Some(trial.map_or(self.since + s.recovery_wait, |t| {
                t.min(self.since + s.recovery_wait)
            })),
            HealthState::Failed => trial,
            HealthState::Recovering => Some(self.since + s.slow_start),
            HealthState::Healthy | HealthState::Suspended => None,
        }
    }

    /// Slow-start share in [0.1, 1]: ramps linearly while `recovering`.
    pub fn factor(&self, now: Instant, s: &Settings) -> f64 {
        if self.state != HealthState::Recovering {
            return 1.0;
        }
        slow_start(now.saturating_duration_since(self.since), s.slow_start)
    }

    pub fn observe(&mut self, signal: Signal, now: Instant, s: &Settings) -> Option<Transition> {
        use HealthState::*;
        if self.state == Suspended {
            // Only an operator brings it back: nothing it does or answers counts.
            return None;
        }
        match signal {
            Signal::Banned(why) => Some(self.suspend(why, now)),
            Signal::ProbePass => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                match self.state {
                    Degraded | Failed if self.passes >= s.healthy_threshold => {
                        let reason = format!("passed {} health checks in a row", self.passes);
                        Some(self.recover(reason, now))
                    }
                    _ => None,
                }
            }
            Signal::ProbeFail(why) => {
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                match self.state {
                    Healthy | Recovering if self.fails >= s.unhealthy_threshold => {
                        let reason = format!("failed {} health checks in a row: {why}", self.fails);
                        Some(self.fall(reason, now, s))
                    }
                    _ => None,
                }
            }
            Signal::Ejected(why) => match self.state {
                Healthy | Recovering => Some(self.fall(why, now, s)),
                _ => None,
            },
        }
    }

    /// Time-driven transitions: degraded too long, slow start done, a trial due.
    pub fn tick(&mut self, now: Instant, s: &Settings) -> Option<Transition> {
        use HealthState::*;
        self.account(now);
        let in_state = now.saturating_duration_since(self.since);
        match self.state {
            Degraded if in_state >= s.recovery_wait => Some(self.enter(
                Failed,
                format!(
                    "still down after recovery_wait ({} ms)",
                    s.recovery_wait.as_millis()
                ),
                now,
            )),
            Degraded | Failed if !self.probed && self.next_trial.is_some_and(|t| now >= t) => {
                Some(self.recover("trial after backoff".into(), now))
            }
            Recovering if in_state >= s.slow_start => {
                if let Some((at, _)) = self.down.take() {
                    self.recoveries += 1;
                    self.recovery_time += self.since.saturating_duration_since(at);
                }
                self.trial_wait = Duration::ZERO;
                Some(self.enter(Healthy, "slow start finished".into(), now))
            }
            _ => None,
        }
    }

    /// Suspends the master (a ban answer, or a suspension kept from before a restart):
    /// out of rotation at once, whatever its state.
    pub fn suspend(&mut self, reason: String, now: Instant) -> Transition {
        self.routable_since = None;
        self.next_trial = None;
        // An outage already under way goes on; a relapse after reinstatement falls
        // to `failed`, where a standby takes its place.
        let down_at = self.down.map_or(now, |(at, _)| at);
        self.down = Some((down_at, HealthState::Failed));
        self.suspended_reason = Some(reason.clone());
        self.enter(HealthState::Suspended, reason, now)
    }

    /// An operator lifts the suspension: the master comes back through `recovering`
    /// (slow start). `None` when it is not suspended.
    pub fn reinstate(&mut self, now: Instant) -> Option<Transition> {
        if self.state != HealthState::Suspended {
            return None;
        }
        self.suspended_reason = None;
        self.trial_wait = Duration::ZERO;
        Some(self.recover("reinstated by an operator".into(), now))
    }

    /// Out of rotation. From `recovering`, back to the state the master fell to before,
    /// keeping how long it has been down.
    fn fall(&mut self, reason: String, now: Instant, s: &Settings) -> Transition {
        self.routable_since = None;
        self.trial_wait = if self.trial_wait.is_zero() {
            s.trial_initial
        } else {
            (self.trial_wait * 2).min(s.trial_max)
        };
        self.next_trial = Some(now + self.trial_wait);
        match self.down {
            Some((down_at, fell_to)) => {
                let t = self.enter(fell_to, reason, now);
                if fell_to == HealthState::Degraded {
                    self.since = down_at;
                }
                t
            }
            None => {
                self.down = Some((now, HealthState::Degraded));
                self.enter(HealthState::Degraded, reason, now)
            }
        }
    }

    fn recover(&mut self, reason: String, now: Instant) -> Transition {
        let outage = self.outage(now);
        if let Some((at, _)) = self.down {
            let fell_to = match self.state {
                HealthState::Suspended => HealthState::Failed,
                other => other,
            };
            self.down = Some((at, fell_to));
        }
        self.next_trial = None;
        self.routable_since = Some(now);
        let mut t = self.enter(HealthState::Recovering, reason, now);
        t.outage = outage;
        t
    }

    fn enter(&mut self, to: HealthState, reason: String, now: Instant) -> Transition {
        self.account(now);
        let from = std::mem::replace(&mut self.state, to);
        self.since = now;
        self.passes = 0;
        self.fails = 0;
        Transition {
            from,
            to,
            reason,
            outage: None,
        }
    }

    fn account(&mut self, now: Instant) {
        let step = now.saturating_duration_since(self.accounted);
        self.accounted = now;
        self.total += step;
        if self.state.routable() {
            self.up += step;
        }
    }

    /// Share of the time since the machine started that the master was routable.
    pub fn uptime_ratio(&mut self, now: Instant) -> f64 {
        self.account(now);
        if self.total.is_zero() {
            return 1.0;
        }
        self.up.as_secs_f64() / self.total.as_secs_f64()
    }

    /// Mean length of the outages that have ended, if any.
    pub fn mean_time_to_recovery(&self) -> Option<Duration> {
        (self.recoveries > 0).then(|| self.recovery_time / self.recoveries)
    }

    /// How long the current outage has lasted, if the master is out or on trial.
    pub fn outage(&self, now: Instant) -> Option<Duration> {
        self.down.map(|(at, _)| now.saturating_duration_since(at))
    }
}

/// The share `elapsed` into a slow start of length `window`: 10% at once, then linear
/// to 100% at the end.
pub fn slow_start(elapsed: Duration, window: Duration) -> f64 {
    if window.is_zero() {
        return 1.0;
    }
    (0.1 + 0.9 * elapsed.as_secs_f64() / window.as_secs_f64()).clamp(0.1, 1.0)
}

#[cfg(test)]
mod tests;
