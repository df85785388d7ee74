//! The routing table: one immutable snapshot of everything a request needs to choose
//! a master — the config, each master's eligibility and effective weight, and the
//! built strategy. It is published through one `ArcSwap` by `crate::control`, the only
//! writer; the request path loads it and takes no lock.
//!
//! May call: `config`, `health`, `telemetry` (metric handles inside [`stats`]), `util`.

pub mod budget;
pub mod stats;
pub mod sticky;
pub mod strategy;

use crate::config::{Config, MasterConfig, Role};
use crate::health::HealthState;
use rand::Rng;
use stats::MasterStats;
use std::sync::Arc;
use strategy::{Candidate, Strategy};

pub use strategy::Pick;

/// An operator's hold on a master, separate from its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Enabled,
    /// Takes no new traffic until enabled again.
    Disabled,
    /// Takes no new traffic; in-flight exchanges and queued deliveries under way
    /// finish. Shown as `drained` once none is left.
    Draining,
}

impl AdminState {
    pub const ALL: [AdminState; 3] = [Self::Enabled, Self::Disabled, Self::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Draining => "draining",
        }
    }
}

/// Every value [`MasterEntry::admin_shown`] takes.
pub const ADMIN_SHOWN: [&str; 4] = ["enabled", "disabled", "draining", "drained"];

/// The state of one master, as the controller hands it to [`RoutingTable::build`].
#[derive(Debug, Clone)]
pub struct MasterInput {
    pub config: Arc<MasterConfig>,
    pub stats: Arc<MasterStats>,
    pub health: HealthState,
    pub admin: AdminState,
    /// A standby currently taking a failed master's place.
    pub promoted: bool,
    /// A failed-over master, kept out of rotation until failback.
    pub held: bool,
    /// Slow-start share in [0.1, 1] (1 for a master at full share).
    pub factor: f64,
    /// For a promoted standby: the failed master whose place (and so whose sticky
    /// recipients) it takes.
    pub stands_for: Option<Arc<str>>,
}

/// One master in a table snapshot.
#[derive(Debug)]
pub struct MasterEntry {
    pub config: Arc<MasterConfig>,
    pub stats: Arc<MasterStats>,
    pub health: HealthState,
    pub admin: AdminState,
    pub promoted: bool,
    pub held: bool,
    pub eligible: bool,
    pub effective_weight: f64,
    /// The version of the table this entry belongs to: exchanges it routed report it
    /// with their failures.
    pub table_version: u64,
    /// It has a pace or a daily cap: selection checks its budget.
    pub limited: bool,
}

impl MasterEntry {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Draining, with no exchange and no queued delivery under way.
    pub fn drained(&self) -> bool {
        self.admin == AdminState::Draining && self.stats.load.total() == 0
    }

    /// The admin state as `/ha/status` and `/metrics` show it: one of
    /// [`ADMIN_SHOWN`], `drained` for a master [`MasterEntry::drained`].
    pub fn admin_shown(&self) -> &'static str {
        if self.drained() {
            "drained"
        } else {
            self.admin.as_str()
        }
    }
}

/// An immutable routing snapshot.
#[derive(Debug)]
pub struct RoutingTable {
    /// Moves on every rebuild.
    pub version: u64,
    /// Moves on every accepted config.
    pub config_version: u64,
    pub config: Arc<Config>,
    pub masters: Vec<MasterEntry>,
    strategy: Strategy,
    /// Some eligible master has a budget: selection checks budgets.
    limited: bool,
    /// With `routing.sticky`: the eligible masters' places (see [`sticky`]).
    places: Option<sticky::Places>,
}

impl RoutingTable {
    /// Builds a snapshot. A master is eligible when enabled, `healthy` or `recovering`,
    /// not a standby unless promoted (SPEC section 3), and not held out by a failover.
    pub fn build(
        version: u64,
        config_version: u64,
        config: Arc<Config>,
        inputs: Vec<MasterInput>,
        rng: &mut impl Rng,
    ) -> RoutingTable {
        let stands_for: Vec<Option<Arc<str>>> =
            inputs.iter().map(|m| m.stands_for.clone()).collect();
        let masters: Vec<MasterEntry> = inputs
            .into_iter()
            .map(|m| {
                let eligible = m.admin == AdminState::Enabled
                    && !m.held
                    && m.health.routable()
                    && (m.config.role != Role::Standby || m.promoted);
                // Slow start: after a recovery, or after a failback.
                let factor = m.factor.clamp(0.1, 1.0);
                // Counts live in the stats, so a changed budget keeps them.
                m.stats.configure(&m.config);
                MasterEntry {
                    limited: m.config.limited(),
                    effective_weight: m.config.weight * factor,
                    config: m.config,
                    stats: m.stats,
                    health: m.health,
                    admin: m.admin,
                    promoted: m.promoted,
                    held: m.held,
                    eligible,
                    table_version: version,
                }
            })
            .collect();
        let candidates: Vec<Candidate> = masters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.eligible)
            .map(|(index, m)| Candidate {
                index,
                weight: m.config.weight,
                factor: m.effective_weight / m.config.weight,
                priority: m.config.priority,
                region: m.config.region_key.clone(),
                stats: m.stats.clone(),
            })
            .collect();
        let strategy = Strategy::build(config.routing.strategy, &candidates, rng);
        let limited = masters.iter().any(|m| m.eligible && m.limited);
        let places = config.routing.sticky.then(|| {
            let places: Vec<sticky::Place> = masters
                .iter()
                .enumerate()
                .filter(|(_, m)| m.eligible)
                .map(|(index, m)| sticky::Place {
                    // A promoted standby serves its failed master's place; its
                    // config already carries that master's weight.
                    id: stands_for[index].as_deref().unwrap_or(m.id()).to_string(),
                    weight: m.config.weight,
                    master: index,
                })
                .collect();
            sticky::Places::new(&places)
        });
        RoutingTable {
            version,
            config_version,
            config,
            masters,
            strategy,
            limited,
            places,
        }
    }

    /// Chooses an eligible master that is not in `tried` (indexes into `masters`) and
    /// has budget, and takes one message's budget from it (SPEC section 10): a master
    /// without budget is passed over like an ineligible one. `region` must be
    /// lower-cased. Lock-free: a few atomic operations, and no more when no master
    /// has limits. `None` when no eligible master is left; [`RoutingTable::budget_wait`]
    /// then tells whether budget is what was missing.
    #[inline]
    pub fn select(&self, region: Option<&str>, tried: &[usize]) -> Option<Pick> {
        let pick = self.strategy.select(region, tried)?;
        if !self.limited || !self.masters[pick.index].limited {
            return Some(pick);
        }
        self.select_with_budget(pick, region, tried)
    }

    /// [`RoutingTable::select`] once its first pick has limits: takes its budget, else
    /// passes it over and picks again among the others.
    fn select_with_budget(
        &self,
        first: Pick,
        region: Option<&str>,
        tried: &[usize],
    ) -> Option<Pick> {
        let now = budget::now_ns();
        let mut pick = first;
        let mut skip: Vec<usize> = Vec::new();
        loop {
            let m = &self.masters[pick.index];
            if !m.limited || m.stats.try_take_budget(now, m.config.warmup) {
                return Some(pick);
            }
            if skip.is_empty() {
                skip.extend_from_slice(tried);
            }
            // Each turn passes one more master over: at most one turn per master.
            skip.push(pick.index);
            pick = self.strategy.select(region, &skip)?;
        }
    }

    /// The recipient's own master (SPEC section 10), with one message's budget taken
    /// from it: `Some(Ok)`; `Some(Err(wait))` when it has no budget for `wait`; `None`
    /// without sticky routing, with no eligible master, or when its master is in
    /// `tried` (it failed this message): the caller then selects as usual.
    pub fn select_sticky(
        &self,
        recipient: &str,
        tried: &[usize],
    ) -> Option<Result<Pick, std::time::Duration>> {
        let index = self.places.as_ref()?.pick(sticky::bucket(recipient))?;
        if tried.contains(&index) {
            return None;
        }
        let m = &self.masters[index];
        let now = budget::now_ns();
        let pick = Pick {
            index,
            region_fallback: false,
        };
        if !m.limited || m.stats.try_take_budget(now, m.config.warmup) {
            Some(Ok(pick))
        } else {
            Some(Err(m.stats.budget_wait(now, m.config.warmup)))
        }
    }

    /// When an eligible master not in `tried` will have budget again: zero when one has
    /// now, `None` when no master is eligible.
    pub fn budget_wait(&self, tried: &[usize]) -> Option<std::time::Duration> {
        let now = budget::now_ns();
        self.masters
            .iter()
            .enumerate()
            .filter(|(i, m)| m.eligible && !tried.contains(i))
            .map(|(_, m)| {
                if m.limited {
                    m.stats.budget_wait(now, m.config.warmup)
                } else {
                    std::time::Duration::ZERO
                }
            })
            .min()
    }

    /// Messages the eligible masters could take at once now, all together
    /// (`u64::MAX` when one has no limits).
    pub fn budget_available(&self) -> u64 {
        if !self.limited {
            return u64::MAX;
        }
        let now = budget::now_ns();
        self.masters
            .iter()
            .filter(|m| m.eligible)
            .map(|m| {
                if m.limited {
                    m.stats.budget_available(now, m.config.warmup)
                } else {
                    u64::MAX
                }
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Whether `routing.sticky` is on.
    pub fn sticky(&self) -> bool {
        self.places.is_some()
    }

    pub fn eligible_count(&self) -> usize {
        self.masters.iter().filter(|m| m.eligible).count()
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.masters.iter().position(|m| m.id() == id)
    }
}

#[cfg(test)]
mod budget_table_tests;
#[cfg(test)]
mod tests;
