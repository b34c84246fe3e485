//! The reconcile rule: from what Airflow's metadata DB shows about a copy, the backfill's
//! state and progress. Pure: the engine gathers an [`Observation`] and applies the [`Decision`].

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::state::BackfillState;

/// State of one of the copy's DAG runs, as Airflow stores it in `dag_run.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, waiting for a slot.
    Queued,
    /// Running.
    Running,
    /// Finished, every task fine.
    Success,
    /// Finished with a failure.
    Failed,
}

impl RunState {
    /// Parse `dag_run.state`; unknown values count as queued (not finished).
    pub fn parse(s: &str) -> RunState {
        match s {
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            _ => RunState::Queued,
        }
    }
}

/// One DAG run of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunObservation {
    /// The run's logical date.
    pub logical_date: DateTime<Utc>,
    /// Its state.
    pub state: RunState,
    /// When it started, if it did.
    pub start_date: Option<DateTime<Utc>>,
    /// When it ended, if it did.
    pub end_date: Option<DateTime<Utc>>,
}

/// The copy's runs of the backfill's logical dates, counted by state: what one set-based query
/// returns for every copy at once (runs outside the backfill's range are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Runs queued (or in a state Airflow may add, see [`RunState::parse`]).
    pub queued: u32,
    /// Runs running.
    pub running: u32,
    /// Runs that succeeded.
    pub succeeded: u32,
    /// Runs that failed.
    pub failed: u32,
    /// The earliest run start.
    pub first_start: Option<DateTime<Utc>>,
    /// The latest run end.
    pub last_end: Option<DateTime<Utc>>,
}

impl RunSummary {
    /// Count `runs` whose logical date is one of `expected` (each date once).
    pub fn of_runs(expected: &[DateTime<Utc>], runs: &[RunObservation]) -> RunSummary {
        let by_date: HashMap<DateTime<Utc>, &RunObservation> =
            runs.iter().map(|r| (r.logical_date, r)).collect();
        let mut s = RunSummary::default();
        let mut seen = std::collections::HashSet::new();
        for date in expected {
            let Some(r) = by_date.get(date) else { continue };
            if !seen.insert(*date) {
                continue;
            }
            s.add(r.state, 1, r.start_date, r.end_date);
        }
        s
    }

    /// Add `n` runs in `state` whose earliest start and latest end are given.
    pub fn add(
        &mut self,
        state: RunState,
        n: u32,
        first_start: Option<DateTime<Utc>>,
        last_end: Option<DateTime<Utc>>,
    ) {
        let slot = match state {
            RunState::Queued => &mut self.queued,
            RunState::Running => &mut self.running,
            RunState::Success => &mut self.succeeded,
            RunState::Failed => &mut self.failed,
        };
        *slot = slot.saturating_add(n);
        self.first_start = min_opt(self.first_start, first_start);
        self.last_end = self.last_end.max(last_end);
    }

    /// Runs queued or running: what counts against a throttling budget.
    pub fn active(&self) -> u32 {
        self.queued.saturating_add(self.running)
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// What the metadata DB shows about a copy at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// `Some(is_paused)` once Airflow has a `dag` row for the copy.
    pub registered: Option<bool>,
    /// Airflow's import error for the copy's file, if any.
    pub import_error: Option<String>,
    /// The copy's runs of the backfill's dates.
    pub runs: RunSummary,
}

/// Counts of logical dates by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Dates the backfill covers.
    pub total: u32,
    /// Dates whose run succeeded.
    pub succeeded: u32,
    /// Dates whose run failed.
    pub failed: u32,
    /// Dates whose run is running.
    pub running: u32,
    /// Dates whose run is queued.
    pub queued: u32,
    /// Dates without a run yet.
    pub pending: u32,
}

impl Progress {
    /// Dates that reached a final run state.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }
}

/// What the reconciler concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The new state (may equal the old one).
    pub state: BackfillState,
    /// Why, when the state needs an explanation (failures).
    pub reason: Option<String>,
    /// Date counts.
    pub progress: Progress,
    /// When the first run started.
    pub run_start: Option<DateTime<Utc>>,
    /// When the last run ended, once every date finished.
    pub run_end: Option<DateTime<Utc>>,
}

/// Apply the reconcile rules.
///
/// - an import error on the copy's file fails the backfill with Airflow's message;
/// - a copy not registered within `register_timeout` of being written fails it;
/// - every date finished: success if all succeeded, else failed (never earlier: a failed date
///   does not fail a backfill whose other dates are still queued or running);
/// - paused in Airflow and not finished: paused; a run running: running; else queued.
///
/// Terminal states never change.
pub fn decide(
    current: BackfillState,
    total: u32,
    obs: &Observation,
    copy_age: Duration,
    register_timeout: Duration,
) -> Decision {
    let r = obs.runs;
    let counted = r
        .queued
        .saturating_add(r.running)
        .saturating_add(r.succeeded)
        .saturating_add(r.failed);
    let progress = Progress {
        total,
        succeeded: r.succeeded,
        failed: r.failed,
        running: r.running,
        queued: r.queued,
        pending: total.saturating_sub(counted),
    };
    let run_start = r.first_start;
    let all_done = progress.finished() >= progress.total;
    let run_end = if all_done { r.last_end } else { None };
    let decision = |state, reason: Option<String>| Decision {
        state,
        reason,
        progress,
        run_start,
        run_end,
    };
    if current.is_terminal() {
        return decision(current, None);
    }
    if let Some(err) = &obs.import_error {
        return decision(
            BackfillState::Failed,
            Some(format!("Airflow could not import the DAG copy: {err}")),
        );
    }
    let Some(paused) = obs.registered else {
        if copy_age > register_timeout {
            return decision(
                BackfillState::Failed,
                Some(format!(
                    "Airflow did not register the DAG copy within {} s",
                    register_timeout.num_seconds()
                )),
            );
        }
        return decision(current, None);
    };
    let state = if all_done {
        if progress.failed == 0 {
            BackfillState::Success
        } else {
            BackfillState::Failed
        }
    } else if paused {
        BackfillState::Paused
    } else if progress.running > 0 {
        BackfillState::Running
    } else {
        BackfillState::Queued
    };
    let reason = (state == BackfillState::Failed).then(|| {
        format!(
            "{} of {} logical dates failed",
            progress.failed, progress.total
        )
    });
    if current.can_become(state) {
        decision(state, reason)
    } else {
        decision(current, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::day;

    fn run(d: u32, state: RunState) -> RunObservation {
        RunObservation {
            logical_date: day(d),
            state,
            start_date: Some(day(20 + d)),
            end_date: matches!(state, RunState::Success | RunState::Failed).then(|| day(21 + d)),
        }
    }

    fn check(runs: Vec<RunObservation>, paused: Option<bool>) -> Decision {
        let obs = Observation {
            registered: paused,
            import_error: None,
            runs: RunSummary::of_runs(&[day(1), day(2), day(3)], &runs),
        };
        decide(
            BackfillState::Queued,
            3,
            &obs,
            Duration::seconds(5),
            Duration::seconds(600),
        )
    }

    #[test]
    fn table() {
        use BackfillState as S;
        use RunState as R;
        let cases: Vec<(Vec<RunObservation>, Option<bool>, S)> = vec![
            (vec![], Some(false), S::Queued),
            (vec![run(1, R::Running)], Some(false), S::Running),
            (
                vec![run(1, R::Success), run(2, R::Queued)],
                Some(false),
                S::Queued,
            ),
            (
                vec![run(1, R::Failed), run(2, R::Running)],
                Some(false),
                S::Running,
            ),
            (
                vec![run(1, R::Failed), run(2, R::Success)],
                Some(false),
                S::Queued,
            ),
            (vec![run(1, R::Running)], Some(true), S::Paused),
            (
                vec![run(1, R::Success), run(2, R::Success), run(3, R::Success)],
                Some(false),
                S::Success,
            ),
            (
                vec![run(1, R::Success), run(2, R::Failed), run(3, R::Success)],
                Some(true),
                S::Failed,
            ),
        ];
        for (runs, paused, want) in cases {
            let d = check(runs.clone(), paused);
            assert_eq!(d.state, want, "{runs:?}");
        }
    }

    #[test]
    fn progress_and_times() {
        let d = check(
            vec![
                run(1, RunState::Success),
                run(2, RunState::Failed),
                run(3, RunState::Success),
            ],
            Some(false),
        );
        assert_eq!(
            d.progress,
            Progress {
                total: 3,
                succeeded: 2,
                failed: 1,
                running: 0,
                queued: 0,
                pending: 0
            }
        );
        assert_eq!(d.run_start, Some(day(21)));
        assert_eq!(d.run_end, Some(day(24)));
        assert_eq!(d.reason.as_deref(), Some("1 of 3 logical dates failed"));
    }

    #[test]
    fn unregistered_copy_times_out_and_import_error_fails() {
        let obs = Observation::default();
        let wait = decide(
            BackfillState::Submitted,
            1,
            &obs,
            Duration::seconds(5),
            Duration::seconds(60),
        );
        assert_eq!(wait.state, BackfillState::Submitted);
        let late = decide(
            BackfillState::Submitted,
            1,
            &obs,
            Duration::seconds(61),
            Duration::seconds(60),
        );
        assert_eq!(late.state, BackfillState::Failed);
        assert!(late.reason.unwrap_or_default().contains("within 60 s"));
        let obs = Observation {
            import_error: Some("SyntaxError: x".into()),
            ..Observation::default()
        };
        let broken = decide(
            BackfillState::Submitted,
            1,
            &obs,
            Duration::seconds(1),
            Duration::seconds(60),
        );
        assert_eq!(broken.state, BackfillState::Failed);
        assert!(broken.reason.unwrap_or_default().contains("SyntaxError: x"));
    }

    #[test]
    fn terminal_is_kept_and_foreign_runs_ignored() {
        let obs = Observation {
            registered: Some(false),
            import_error: None,
            runs: RunSummary::of_runs(&[day(1)], &[run(9, RunState::Running)]),
        };
        let d = decide(
            BackfillState::Success,
            1,
            &obs,
            Duration::zero(),
            Duration::seconds(1),
        );
        assert_eq!(d.state, BackfillState::Success);
        assert_eq!(d.progress.pending, 1);
        assert_eq!(d.progress.running, 0);
    }
}
