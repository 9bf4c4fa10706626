//! Where an execution stands: the status every store indexes and every view shows. Its own
//! module so that events (which say which status they move to) and the state fold both use
//! it without depending on each other.

use serde::{Deserialize, Serialize};

/// Where an execution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Going forward through its steps.
    Running,
    /// Undoing completed steps.
    Compensating,
    /// Every step done.
    Completed,
    /// Every needed compensation done.
    Compensated,
    /// A compensation gave up; waits for an operator's `resume`.
    Failed,
}

impl ExecutionStatus {
    /// Every status, for listings and metrics.
    pub const ALL: [Self; 5] = [Self::Running, Self::Compensating, Self::Completed, Self::Compensated, Self::Failed];

    /// No host work left (a `failed` execution waits for an operator).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// The status as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for ExecutionStatus {
    type Err = super::ids::InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| super::ids::InvalidId::Status(s.to_owned()))
    }
}
