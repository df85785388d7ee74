//! Health of a master: the states of SPEC section 5, the state machine that moves a
//! master between them ([`machine`]) and the active checks that feed it ([`probe`]).
//! The failover controller (`crate::control::failover`) owns one machine per master.

pub mod machine;
pub mod probe;

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
