//! The life-cycle actions a user can ask for on an existing backfill (cancel, pause, resume,
//! delete, retry, approve, reject), and in one place which are allowed in which state and what each one does;
//! also which dates a retry or a `reprocess` choice leaves to run.
//! Pure: the engine gathers [`Facts`] and carries out the [`Effect`].

use chrono::{DateTime, Utc};

use crate::authz::Action;
use crate::state::BackfillState;

/// What the engine knows about a backfill when an action arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Current state.
    pub state: BackfillState,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Whether its DAG copy was written.
    pub copy_written: bool,
    /// Dates whose run failed.
    pub failed_dates: u32,
}

/// What carrying out an allowed action means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No copy exists yet: withdraw the backfill (state `cancelled`); no copy is ever written.
    Withdraw,
    /// Pause the copy and mark every unfinished run (and its unfinished task instances) failed;
    /// the backfill ends `failed`, "cancelled by <user>".
    CancelRuns,
    /// Pause the copy in Airflow.
    PauseCopy,
    /// Unpause the copy in Airflow.
    ResumeCopy,
    /// Pause the copy, remove its file and Airflow's rows for its dag_id; mark it deleted.
    DeleteCopy,
    /// Create a new backfill of only the failed dates, linked to this one.
    RetryFailed,
    /// Approved: `awaiting_approval` becomes `submitted` (the copy is written as for any
    /// accepted backfill).
    Approve,
    /// Rejected: `awaiting_approval` becomes `cancelled` ("rejected by <user>: <reason>"); no
    /// copy is ever written.
    Reject,
}

/// Why an action is refused, for the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Decide whether `action` is allowed on a backfill in `facts`, and what it does.
pub fn plan(action: Action, facts: Facts) -> Result<Effect, Refusal> {
    use BackfillState as S;
    let refuse = |why: &str| {
        let state = describe(facts);
        Err(Refusal(format!(
            "cannot {} {} {state} backfill: {why}",
            action.as_str(),
            article(&state)
        )))
    };
    if facts.deleted {
        return refuse("it was deleted");
    }
    match action {
        Action::Create | Action::Read | Action::Import => refuse("not a life-cycle action"),
        Action::Cancel => match facts.state {
            S::AwaitingApproval => Ok(Effect::Withdraw),
            S::Submitted if !facts.copy_written => Ok(Effect::Withdraw),
            S::Submitted | S::Queued | S::Running | S::Paused => Ok(Effect::CancelRuns),
            S::Success | S::Failed | S::Cancelled => refuse("it already finished"),
        },
        Action::Pause => match facts.state {
            S::Queued | S::Running => Ok(Effect::PauseCopy),
            S::AwaitingApproval => {
                refuse("it awaits approval and has no DAG copy; cancel it instead")
            }
            S::Submitted => refuse("its DAG copy is not registered yet; cancel it instead"),
            S::Paused => refuse("it is already paused"),
            S::Success | S::Failed | S::Cancelled => refuse("it already finished"),
        },
        Action::Resume => match facts.state {
            S::Paused => Ok(Effect::ResumeCopy),
            S::Success | S::Failed | S::Cancelled => refuse("it already finished"),
            S::AwaitingApproval | S::Submitted | S::Queued | S::Running => {
                refuse("it is not paused")
            }
        },
        Action::Delete => match facts.state {
            S::Paused | S::Success | S::Failed | S::Cancelled => Ok(Effect::DeleteCopy),
            S::AwaitingApproval | S::Submitted | S::Queued | S::Running => {
                refuse("it is still active; cancel or pause it first")
            }
        },
        Action::Retry => match facts.state {
            S::Failed if facts.failed_dates > 0 => Ok(Effect::RetryFailed),
            S::Failed => refuse("no date failed (the copy never ran); submit it again instead"),
            S::Success => refuse("no date failed"),
            S::Cancelled => refuse("it was withdrawn before it ran; submit it again instead"),
            S::AwaitingApproval | S::Submitted | S::Queued | S::Running | S::Paused => {
                refuse("it has not finished")
            }
        },
        Action::Approve | Action::Reject => match facts.state {
            S::AwaitingApproval if action == Action::Approve => Ok(Effect::Approve),
            S::AwaitingApproval => Ok(Effect::Reject),
            S::Success | S::Failed | S::Cancelled => refuse("it already finished"),
            S::Submitted | S::Queued | S::Running | S::Paused => {
                refuse("it does not await approval")
            }
        },
    }
}

/// What a new backfill does with dates the origin DAG already has a run for (Airflow 3's
/// `reprocess_behavior` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reprocess {
    /// Skip every date the origin DAG has a run for.
    None,
    /// Skip dates whose origin run did not fail (succeeded, or still in flight).
    Failed,
    /// Run every date, whatever the origin DAG did (the default).
    #[default]
    Completed,
}

impl Reprocess {
    /// The name in request files.
    pub fn as_str(self) -> &'static str {
        match self {
            Reprocess::None => "none",
            Reprocess::Failed => "failed",
            Reprocess::Completed => "completed",
        }
    }

    /// Parse a request-file value.
    pub fn parse(s: &str) -> Option<Reprocess> {
        [Reprocess::None, Reprocess::Failed, Reprocess::Completed]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Split `dates` into those to run and those skipped under `mode`, given the state of the
/// origin DAG's run per date (`origin[i]` for `dates[i]`: `None` without a run, else
/// `Some(failed)`). Skipped dates may lie between dates to run: such a backfill's runs are
/// named by backfilld (`steer`), as one copy cannot skip dates of its range by catchup.
pub fn reprocess_dates(
    mode: Reprocess,
    dates: &[DateTime<Utc>],
    origin: &[Option<bool>],
) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    let skip = |o: &Option<bool>| match (mode, o) {
        (Reprocess::Completed, _) | (_, None) => false,
        (Reprocess::None, Some(_)) => true,
        (Reprocess::Failed, Some(failed)) => !failed,
    };
    let (run, skipped): (Vec<_>, Vec<_>) = dates
        .iter()
        .enumerate()
        .partition(|(i, _)| !origin.get(*i).is_some_and(skip));
    let strip = |v: Vec<(usize, &DateTime<Utc>)>| v.into_iter().map(|(_, d)| *d).collect();
    (strip(run), strip(skipped))
}

/// Most backfills one retry may become (one per run of consecutive failed dates).
pub const MAX_RETRY_SEGMENTS: usize = 10;

/// The dates a retry runs: those of `dates` whose run failed (`failed[i]` for `dates[i]`), in
/// runs of consecutive dates. A copy runs one contiguous range of its DAG's dates, so each run
/// becomes a backfill of its own: a succeeded date between two failed ones never runs again.
pub fn retry_dates(
    dates: &[DateTime<Utc>],
    failed: &[bool],
) -> Result<Vec<Vec<DateTime<Utc>>>, Refusal> {
    let mut segments: Vec<Vec<DateTime<Utc>>> = Vec::new();
    let mut previous: Option<usize> = None;
    for (i, d) in dates.iter().enumerate() {
        if !failed.get(i).copied().unwrap_or(false) {
            continue;
        }
        match (previous, segments.last_mut()) {
            (Some(p), Some(last)) if p + 1 == i => last.push(*d),
            _ => segments.push(vec![*d]),
        }
        previous = Some(i);
    }
    if segments.is_empty() {
        return Err(Refusal(
            "cannot retry: Airflow shows no failed run of it".to_owned(),
        ));
    }
    if segments.len() > MAX_RETRY_SEGMENTS {
        return Err(Refusal(format!(
            "cannot retry: the failed dates form {} separate ranges (a retry makes one backfill per range, at most {MAX_RETRY_SEGMENTS}); submit them as backfills of their own",
            segments.len()
        )));
    }
    Ok(segments)
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn describe(f: Facts) -> String {
    if f.deleted {
        "deleted".into()
    } else {
        f.state.as_str().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: [Action; 7] = [
        Action::Cancel,
        Action::Pause,
        Action::Resume,
        Action::Delete,
        Action::Retry,
        Action::Approve,
        Action::Reject,
    ];

    fn facts(state: BackfillState) -> Facts {
        Facts {
            state,
            deleted: false,
            copy_written: !matches!(
                state,
                BackfillState::Submitted | BackfillState::AwaitingApproval
            ),
            failed_dates: u32::from(state == BackfillState::Failed),
        }
    }

    /// Every (state, action) pair, with the expected effect or refusal.
    #[test]
    fn every_state_and_action() {
        use BackfillState as S;
        use Effect as E;
        let ok = |e: Effect| Some(e);
        let no = None;
        // Columns: cancel, pause, resume, delete, retry, approve, reject.
        let table: [(BackfillState, [Option<Effect>; 7]); 8] = [
            (
                S::AwaitingApproval,
                [
                    ok(E::Withdraw),
                    no,
                    no,
                    no,
                    no,
                    ok(E::Approve),
                    ok(E::Reject),
                ],
            ),
            (S::Submitted, [ok(E::Withdraw), no, no, no, no, no, no]),
            (
                S::Queued,
                [ok(E::CancelRuns), ok(E::PauseCopy), no, no, no, no, no],
            ),
            (
                S::Running,
                [ok(E::CancelRuns), ok(E::PauseCopy), no, no, no, no, no],
            ),
            (
                S::Paused,
                [
                    ok(E::CancelRuns),
                    no,
                    ok(E::ResumeCopy),
                    ok(E::DeleteCopy),
                    no,
                    no,
                    no,
                ],
            ),
            (S::Success, [no, no, no, ok(E::DeleteCopy), no, no, no]),
            (
                S::Failed,
                [no, no, no, ok(E::DeleteCopy), ok(E::RetryFailed), no, no],
            ),
            (S::Cancelled, [no, no, no, ok(E::DeleteCopy), no, no, no]),
        ];
        assert_eq!(table.len(), BackfillState::ALL.len(), "every state");
        for (state, row) in table {
            for (action, want) in ACTIONS.into_iter().zip(row) {
                let got = plan(action, facts(state));
                assert_eq!(
                    got.as_ref().ok().copied(),
                    want,
                    "{state} × {}: {got:?}",
                    action.as_str()
                );
                if let Err(Refusal(why)) = got {
                    assert!(
                        why.starts_with(&format!(
                            "cannot {} {} {state} backfill: ",
                            action.as_str(),
                            article(state.as_str())
                        )),
                        "{why}"
                    );
                }
            }
        }
    }

    #[test]
    fn retry_splits_failed_dates_into_consecutive_runs() {
        let dates: Vec<DateTime<Utc>> = (1..=4).map(crate::testutil::day).collect();
        assert_eq!(
            retry_dates(&dates, &[false, true, true, false]),
            Ok(vec![dates[1..3].to_vec()])
        );
        assert_eq!(
            retry_dates(&dates, &[false, false, false, true]),
            Ok(vec![dates[3..].to_vec()])
        );
        assert_eq!(
            retry_dates(&dates, &[true, false, true, true]),
            Ok(vec![dates[..1].to_vec(), dates[2..].to_vec()])
        );
        assert!(retry_dates(&dates, &[false; 4]).is_err());
        let many: Vec<DateTime<Utc>> = (1..=23).map(crate::testutil::day).collect();
        let every_other: Vec<bool> = (0..23).map(|i| i % 2 == 0).collect();
        let refused = retry_dates(&many, &every_other);
        assert!(
            refused
                .as_ref()
                .is_err_and(|r| r.0.contains("12 separate ranges")),
            "{refused:?}"
        );
    }

    #[test]
    fn reprocess_modes() {
        let dates: Vec<DateTime<Utc>> = (1..=4).map(crate::testutil::day).collect();
        // Origin: 01 succeeded, 02 failed, 03 and 04 never ran.
        let origin = [Some(false), Some(true), None, None];
        let split = |m| reprocess_dates(m, &dates, &origin);
        assert_eq!(split(Reprocess::Completed), (dates.clone(), vec![]));
        assert_eq!(
            split(Reprocess::Failed),
            (dates[1..].to_vec(), dates[..1].to_vec())
        );
        assert_eq!(
            split(Reprocess::None),
            (dates[2..].to_vec(), dates[..2].to_vec())
        );
        // A date inside the range is skipped too (the copy is then steered).
        let holes = [None, Some(false), None, None];
        assert_eq!(
            reprocess_dates(Reprocess::None, &dates, &holes),
            (vec![dates[0], dates[2], dates[3]], vec![dates[1]])
        );
        // Everything skipped: nothing to run, nothing refused here.
        let all = [Some(false); 4];
        assert_eq!(
            reprocess_dates(Reprocess::None, &dates, &all),
            (vec![], dates.clone())
        );
        for m in [Reprocess::None, Reprocess::Failed, Reprocess::Completed] {
            assert_eq!(Reprocess::parse(m.as_str()), Some(m));
        }
        assert_eq!(Reprocess::parse("all"), None);
    }

    #[test]
    fn deleted_refuses_everything_and_special_cases() {
        for state in BackfillState::ALL {
            for action in ACTIONS {
                let f = Facts {
                    deleted: true,
                    ..facts(state)
                };
                let why = plan(action, f).err().map(|r| r.0).unwrap_or_default();
                assert!(why.contains("it was deleted"), "{why}");
            }
        }
        let written = Facts {
            copy_written: true,
            ..facts(BackfillState::Submitted)
        };
        assert_eq!(plan(Action::Cancel, written), Ok(Effect::CancelRuns));
        let nothing_failed = Facts {
            failed_dates: 0,
            ..facts(BackfillState::Failed)
        };
        assert!(plan(Action::Retry, nothing_failed).is_err());
        assert!(plan(Action::Create, facts(BackfillState::Queued)).is_err());
    }
}
