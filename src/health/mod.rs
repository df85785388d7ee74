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
    /// The master's answer said its sender account is blocked (SPEC section 10): out
    /// of rotation until an operator reinstates it; probes never bring it back.
    Suspended,
}

impl HealthState {
    pub const ALL: [HealthState; 5] = [
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Failed,
        HealthState::Recovering,
        HealthState::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Recovering => "recovering",
            Self::Suspended => "suspended",
        }
    }

    /// Whether traffic may be sent to a master in this state.
    pub fn routable(self) -> bool {
        matches!(self, Self::Healthy | Self::Recovering)
    }
}
