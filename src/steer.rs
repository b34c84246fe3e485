//! Steered copies: a backfill whose runs Airflow's catchup cannot create in the wanted order or
//! set of dates (`run_backwards`, or `reprocess` skipping dates inside the range), and every
//! new backfill while a `[throttle]` run budget is set (backfilld then names each run within
//! the budget, see [`crate::turns`]).
//!
//! A catchup copy lets Airflow's scheduler create its runs oldest first over one contiguous
//! range: the next run is always the one after the latest run (`max(logical_date)`), so neither
//! "newest first" nor "skip these dates" can be expressed in the copy's file. A steered copy is
//! written with `catchup=False` (with its `end_date` in the past Airflow then schedules nothing
//! by itself, or only the newest date) and backfilld names each run: when the copy has room, it
//! sets the copy's `dag.next_dagrun` (with its data interval and `next_dagrun_create_after`) to
//! the next date of the backfill's order that has no run, and the scheduler creates that run at
//! its next loop, as it does for any scheduled run. Setting a date that already has a run is
//! harmless (the scheduler skips creating it and clears the field), so a stale decision never
//! creates a run twice.
//!
//! To keep the order, a new date is named only when none of the copy's runs is queued (every
//! run named before has started) and fewer than `max_active_runs` are running: the scheduler
//! starts queued runs oldest first, so two queued at once would start in date order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who creates a copy's runs, and in which order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOrder {
    /// Airflow's catchup: every date of one contiguous range, oldest first.
    #[default]
    Catchup,
    /// Steered by backfilld, oldest first: the backfill's dates have gaps (`reprocess`).
    OldestFirst,
    /// Steered by backfilld, newest first (`run_backwards = true`).
    NewestFirst,
}

impl RunOrder {
    /// The order for a backfill: newest first when asked; otherwise catchup, unless the dates to
    /// run are not one contiguous stretch of the timetable's dates (`contiguous` false) or a
    /// run budget is set (`budgeted`: backfilld names every run so the budget holds per run).
    pub fn for_backfill(run_backwards: bool, contiguous: bool, budgeted: bool) -> RunOrder {
        match (run_backwards, contiguous && !budgeted) {
            (true, _) => RunOrder::NewestFirst,
            (false, true) => RunOrder::Catchup,
            (false, false) => RunOrder::OldestFirst,
        }
    }

    /// Whether backfilld names the copy's runs (the copy is written with `catchup=False`).
    pub fn is_steered(self) -> bool {
        self != RunOrder::Catchup
    }

    /// The name stored in `backfilld_backfill.run_order` (`None` for catchup).
    pub fn stored(self) -> Option<&'static str> {
        match self {
            RunOrder::Catchup => None,
            RunOrder::OldestFirst => Some("oldest_first"),
            RunOrder::NewestFirst => Some("newest_first"),
        }
    }

    /// Parse [`RunOrder::stored`]; unknown or absent values read as catchup.
    pub fn parse_stored(s: Option<&str>) -> RunOrder {
        match s {
            Some("oldest_first") => RunOrder::OldestFirst,
            Some("newest_first") => RunOrder::NewestFirst,
            _ => RunOrder::Catchup,
        }
    }

    /// `dates` (ascending) in the order their runs are created.
    pub fn arrange(self, dates: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
        let mut out = dates.to_vec();
        if self == RunOrder::NewestFirst {
            out.reverse();
        }
        out
    }
}

/// Whether `run` (ascending) is one contiguous stretch of `all` (ascending): no date of `all`
/// between the first and the last of `run` is missing from it.
pub fn is_contiguous(all: &[DateTime<Utc>], run: &[DateTime<Utc>]) -> bool {
    let Some(first) = run.first() else {
        return true;
    };
    let Some(at) = all.iter().position(|d| d == first) else {
        return false;
    };
    all.get(at..at + run.len()) == Some(run)
}

/// What a steered copy's runs look like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRuns {
    /// Logical dates the copy has a run for (any state).
    pub dates: HashSet<DateTime<Utc>>,
    /// Runs queued.
    pub queued: u32,
    /// Runs running.
    pub running: u32,
}

/// The next date to name for a steered copy, if one is due: the first of `order` without a
/// run, when no run is queued and fewer than `max_active_runs` run.
pub fn next_date(
    order: &[DateTime<Utc>],
    runs: &CopyRuns,
    max_active_runs: u32,
) -> Option<DateTime<Utc>> {
    if runs.queued > 0 || runs.running >= max_active_runs.max(1) {
        return None;
    }
    order.iter().find(|d| !runs.dates.contains(d)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn runs(dates: &[u32], queued: u32, running: u32) -> CopyRuns {
        CopyRuns {
            dates: dates.iter().map(|d| day(*d)).collect(),
            queued,
            running,
        }
    }

    #[test]
    fn order_for_backfill() {
        let cases = [
            (false, true, false, RunOrder::Catchup),
            (false, false, false, RunOrder::OldestFirst),
            (true, true, false, RunOrder::NewestFirst),
            (true, false, false, RunOrder::NewestFirst),
            (false, true, true, RunOrder::OldestFirst),
            (true, true, true, RunOrder::NewestFirst),
        ];
        for (backwards, contiguous, budgeted, want) in cases {
            assert_eq!(
                RunOrder::for_backfill(backwards, contiguous, budgeted),
                want,
                "{backwards} {contiguous} {budgeted}"
            );
        }
        for o in [
            RunOrder::Catchup,
            RunOrder::OldestFirst,
            RunOrder::NewestFirst,
        ] {
            assert_eq!(RunOrder::parse_stored(o.stored()), o);
        }
        assert_eq!(RunOrder::parse_stored(Some("sideways")), RunOrder::Catchup);
    }

    #[test]
    fn contiguity() {
        let all = [day(1), day(2), day(3), day(4)];
        assert!(is_contiguous(&all, &[day(2), day(3)]));
        assert!(is_contiguous(&all, &all));
        assert!(is_contiguous(&all, &[]));
        assert!(!is_contiguous(&all, &[day(1), day(3)]));
        assert!(!is_contiguous(&all, &[day(5)]));
    }

    #[test]
    fn newest_first_one_at_a_time() {
        let order = RunOrder::NewestFirst.arrange(&[day(1), day(2), day(3)]);
        assert_eq!(next_date(&order, &runs(&[], 0, 0), 1), Some(day(3)));
        // Named but not started yet: wait, whatever the room.
        assert_eq!(next_date(&order, &runs(&[3], 1, 0), 5), None);
        // Running at the limit: wait.
        assert_eq!(next_date(&order, &runs(&[3], 0, 1), 1), None);
        // Room for one more.
        assert_eq!(next_date(&order, &runs(&[3], 0, 1), 2), Some(day(2)));
        assert_eq!(next_date(&order, &runs(&[3, 2], 0, 0), 1), Some(day(1)));
        assert_eq!(next_date(&order, &runs(&[1, 2, 3], 0, 0), 1), None);
    }

    #[test]
    fn gaps_and_foreign_runs() {
        // Oldest first with a gap (2 skipped): 1, 3, 4.
        let order = RunOrder::OldestFirst.arrange(&[day(1), day(3), day(4)]);
        assert_eq!(next_date(&order, &runs(&[1], 0, 0), 1), Some(day(3)));
        // A run the copy got for another date (a manual trigger) changes nothing.
        assert_eq!(next_date(&order, &runs(&[1, 2], 0, 0), 1), Some(day(3)));
        // max_active_runs 0 reads as 1.
        assert_eq!(next_date(&order, &runs(&[], 0, 0), 0), Some(day(1)));
    }
}
