//! The backfill life cycle: its states and, in one place, the transitions allowed between them.

use serde::{Deserialize, Serialize};

/// Where a backfill is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    /// Accepted, but covering more dates than `[approval] over_dates`: no DAG copy until an
    /// approver approves it (then `submitted`) or rejects it (then `cancelled`).
    AwaitingApproval,
    /// Accepted; the DAG copy is being written or waits for Airflow to register it.
    Submitted,
    /// Airflow registered the copy; no run of it is running yet.
    Queued,
    /// At least one run of the copy is running.
    Running,
    /// The copy is paused in Airflow and not finished.
    Paused,
    /// Every logical date succeeded.
    Success,
    /// Every logical date finished and at least one failed, or the copy could not be registered.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl BackfillState {
    /// Every state, in life-cycle order.
    pub const ALL: [BackfillState; 8] = [
        BackfillState::AwaitingApproval,
        BackfillState::Submitted,
        BackfillState::Queued,
        BackfillState::Running,
        BackfillState::Paused,
        BackfillState::Success,
        BackfillState::Failed,
        BackfillState::Cancelled,
    ];

    /// Whether nothing more will happen to the backfill.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BackfillState::Success | BackfillState::Failed | BackfillState::Cancelled
        )
    }

    /// Whether `self → to` is a legal transition. Staying in the same state is always legal.
    pub fn can_become(self, to: BackfillState) -> bool {
        use BackfillState::*;
        if self == to {
            return true;
        }
        match self {
            AwaitingApproval => matches!(to, Submitted | Cancelled),
            Submitted => matches!(to, Queued | Running | Paused | Success | Failed | Cancelled),
            Queued | Running | Paused => {
                matches!(to, Queued | Running | Paused | Success | Failed | Cancelled)
            }
            Success | Failed | Cancelled => false,
        }
    }

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillState::AwaitingApproval => "awaiting_approval",
            BackfillState::Submitted => "submitted",
            BackfillState::Queued => "queued",
            BackfillState::Running => "running",
            BackfillState::Paused => "paused",
            BackfillState::Success => "success",
            BackfillState::Failed => "failed",
            BackfillState::Cancelled => "cancelled",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<BackfillState> {
        BackfillState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for BackfillState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in BackfillState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in BackfillState::ALL {
                assert_eq!(from.can_become(to), from == to, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn only_an_approval_leads_to_submitted() {
        for from in BackfillState::ALL {
            let want = matches!(
                from,
                BackfillState::Submitted | BackfillState::AwaitingApproval
            );
            assert_eq!(from.can_become(BackfillState::Submitted), want, "{from}");
        }
    }

    #[test]
    fn nothing_returns_to_awaiting_approval() {
        for from in BackfillState::ALL {
            if from != BackfillState::AwaitingApproval {
                assert!(!from.can_become(BackfillState::AwaitingApproval), "{from}");
            }
        }
        let a = BackfillState::AwaitingApproval;
        for to in BackfillState::ALL {
            let want = matches!(
                to,
                BackfillState::AwaitingApproval
                    | BackfillState::Submitted
                    | BackfillState::Cancelled
            );
            assert_eq!(a.can_become(to), want, "{a} -> {to}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in BackfillState::ALL {
            assert_eq!(BackfillState::parse(s.as_str()), Some(s));
        }
        assert_eq!(BackfillState::parse("nope"), None);
    }
}
