//! Health of a master: the states of SPEC section 5.
//!
//! This module owns the state names. The probe loops and the state machine that move a
//! master between them are the failover controller's work; until they run, every
//! master stays `healthy` and only the admin state (`crate::control`) takes one out.

/// Health state of one master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    Healthy,
    Degraded,
    Failed,
    Recovering,
}

impl HealthState {
    pub const ALL: [HealthState; 4] = [
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Failed,
        HealthState::Recovering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Recovering => "recovering",
        }
    }

    /// Whether traffic may be sent to a master in this state.
    pub fn routable(self) -> bool {
        matches!(self, Self::Healthy | Self::Recovering)
    }
}
