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
//! The newest date is the one Airflow plans by itself: with `catchup=False` it names the
//! newest date already due (a data-interval timetable's latest complete interval, a trigger
//! timetable's latest trigger) in the copy's `dag` row when that is inside the range and newer
//! than the copy's runs (at registration, at every parse, and after creating a run).
//! Under a run budget a copy therefore registers paused and stays paused until the budgets give
//! it a run ([`release`]): that date then takes its first run, so Airflow's own plan is one
//! the budgets gave, and after it Airflow plans nothing inside the range.
//!
//! Only a date whose run is due is named or created ([`newest_due`]: its `run_after`, when
//! the scheduler would create it, has passed): a range reaching into dates still in their
//! interval gets those runs as they come due, as a catchup copy does.
//!
//! To keep the order, a new date is named only when none of the copy's runs is queued (every
//! run named before has started) and fewer than `max_active_runs` are running: the scheduler
//! starts queued runs oldest first, so two queued at once would start in date order.
//!
//! Naming gives a copy at most one new run per scheduler loop (Airflow's `_create_dag_runs`
//! creates one run per DAG per loop), and a catchup copy is no faster. Once the scheduler created
//! one run of a copy itself (its *template*: a `scheduled` run whose run id is Airflow's for its
//! date), the leader creates the copy's next runs directly, all that fit at once
//! ([`decide`]: [`Step::Create`]): queued `dag_run` rows cloned from the template with their own
//! date, run id and data interval (`metadb::steer`), which the scheduler starts as it starts any
//! queued run — at most `max_active_runs` running — and gives their task instances when it
//! first schedules them (`verify_integrity`), as for a run whose DAG changed. Only as many are
//! created as the copy has room for (`max_active_runs` less its live runs, plus as many again
//! queued ahead while no run budget is set and the order is oldest first: [`queue_ahead`]) and
//! the budgets give, so the runs come as fast as Airflow's own backfill makes them (it queues
//! every run at once) and are paced the same way: the next run is already queued when a slot
//! frees, and the scheduler starts it at its next loop without waiting for backfilld.

use std::collections::HashSet;
use std::time::Duration;

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

/// The next date to name for a steered copy: the first of `order` without a run that
/// `is_due`, when no run is queued and fewer than `max_active_runs` run.
pub fn next_date(
    order: &[DateTime<Utc>],
    runs: &CopyRuns,
    max_active_runs: u32,
    is_due: impl Fn(DateTime<Utc>) -> bool,
) -> Option<DateTime<Utc>> {
    if runs.queued > 0 || runs.running >= max_active_runs.max(1) {
        return None;
    }
    order
        .iter()
        .find(|d| !runs.dates.contains(d) && is_due(**d))
        .copied()
}

/// What a copy's runs need now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: no room, nothing granted, or the scheduler creates the next run itself.
    Wait,
    /// Name this date in the copy's `dag` row; the scheduler creates the run.
    Name(DateTime<Utc>),
    /// Create the runs of these dates (queued), cloned from the copy's template run.
    Create(Vec<DateTime<Utc>>),
}

/// A steered copy as the steering sees it now: what [`decide`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyNow<'a> {
    /// Who creates its runs, and in which order.
    pub kind: RunOrder,
    /// Its dates, in the order they are to run.
    pub order: &'a [DateTime<Utc>],
    /// Its runs.
    pub runs: &'a CopyRuns,
    /// The date its `dag` row names that has no run yet (the scheduler's next run; on a
    /// paused copy, the date Airflow planned by itself).
    pub named: Option<DateTime<Utc>>,
    /// Its `max_active_runs`.
    pub max_active_runs: u32,
    /// Runs it may keep queued beyond `max_active_runs` (see [`queue_ahead`]).
    pub ahead: u32,
    /// The newest date of its order that is due ([`newest_due`]): a later date is neither
    /// named nor created (`None`: none is due).
    pub due_until: Option<DateTime<Utc>>,
    /// Whether backfilld may create its runs (it has a template run).
    pub can_create: bool,
    /// Whether it is paused until the budgets give it a run (see [`decide`]).
    pub paused: bool,
}

impl CopyNow<'_> {
    /// Whether `date` is due ([`CopyNow::due_until`]).
    fn is_due(&self, date: DateTime<Utc>) -> bool {
        self.due_until.is_some_and(|u| date <= u)
    }

    /// The named date when it counts as live: an unpaused copy's, which the scheduler
    /// creates at its next loop (a paused copy's named date is still pending).
    pub fn live_named(&self) -> Option<DateTime<Utc>> {
        self.named.filter(|_| !self.paused)
    }

    /// Its due dates still waiting for a run: without a run, and not the live named date
    /// ([`CopyNow::live_named`]).
    pub fn pending(&self) -> usize {
        let live_named = self.live_named();
        self.order
            .iter()
            .filter(|d| !self.runs.dates.contains(d) && Some(**d) != live_named && self.is_due(**d))
            .count()
    }
}

/// What the steering does to a copy now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Its runs' step.
    pub step: Step,
    /// Unpause it, in the same transaction as the step (a copy the throttle paused until its
    /// first turn, given a run).
    pub unpause: bool,
}

/// The newest date of `order` (one of [`RunOrder::arrange`]'s: ascending or descending) whose
/// run is due at `now`: its `run_after` (when the scheduler would create it,
/// `dag.next_dagrun_create_after`; `None` when it cannot be computed) is not after `now`. A
/// run is due after its logical date and runs come due in date order, so every older date is
/// due too; only the dates from the newest back to the first due one are looked at. Creating a
/// run before it is due would run its tasks over an interval that has not ended (Airflow's
/// own catchup waits for it).
pub fn newest_due(
    order: &[DateTime<Utc>],
    now: DateTime<Utc>,
    run_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let due = |d: &&DateTime<Utc>| **d <= now && run_after(**d).is_some_and(|r| r <= now);
    if order.first() <= order.last() {
        order.iter().rev().find(due).copied()
    } else {
        order.iter().find(due).copied()
    }
}

/// How many runs a copy may keep queued beyond its `max_active_runs` when backfilld creates
/// its runs: as many again while no run budget is set and its order is oldest first, so the
/// scheduler finds the next run queued as soon as a slot frees (it starts queued runs oldest
/// first, at most `max_active_runs` running, as it does for Airflow's own backfill, which
/// queues every run at once); none under a run budget (the budgets count queued runs) or
/// newest first (two queued runs would start in date order).
pub fn queue_ahead(kind: RunOrder, budgeted: bool, max_active_runs: u32) -> u32 {
    if budgeted || kind == RunOrder::NewestFirst {
        0
    } else {
        max_active_runs.max(1)
    }
}

/// What to do with `copy` given `granted` runs by the budgets' turns. An unpaused copy takes
/// [`step`]'s step. A paused one stays paused with nothing granted; given runs, it is
/// unpaused with the rest of the grant's step when its `dag` row names a date Airflow planned
/// by itself (with `catchup=False`, at registration and at every parse: the newest date
/// already due when it is inside the copy's range and newer than its runs), or when that step
/// does something. Unpausing makes the scheduler create the named date, so it takes the first
/// granted run, before the order's dates; once that date has a run, Airflow plans nothing
/// inside the range again (its next date is after the copy's newest run, beyond the range),
/// so no run is ever created that the budgets did not give.
pub fn decide(copy: &CopyNow<'_>, granted: u32) -> Decision {
    if !copy.paused {
        return Decision {
            step: step(copy, granted),
            unpause: false,
        };
    }
    if granted == 0 {
        return Decision {
            step: Step::Wait,
            unpause: false,
        };
    }
    let rest = granted.saturating_sub(u32::from(copy.named.is_some()));
    let next = step(copy, rest);
    let unpause = copy.named.is_some() || next != Step::Wait;
    Decision {
        step: if unpause { next } else { Step::Wait },
        unpause,
    }
}

/// The step of an unpaused copy given `granted` runs: with a template run (`can_create`), the
/// first dates of its order without a run (never `named`, the date the copy's `dag` row names
/// and the scheduler is about to create), as many as its room (`max_active_runs` and `ahead`
/// less its queued, running and named runs) and the grant allow; without one, a steered copy
/// names its next date ([`next_date`]) and a catchup copy waits for the scheduler to create
/// its first run.
fn step(copy: &CopyNow<'_>, granted: u32) -> Step {
    if granted == 0 {
        return Step::Wait;
    }
    let runs = copy.runs;
    if !copy.can_create {
        if !copy.kind.is_steered() || copy.named.is_some() {
            return Step::Wait;
        }
        return next_date(copy.order, runs, copy.max_active_runs, |d| copy.is_due(d))
            .map_or(Step::Wait, Step::Name);
    }
    let live = runs
        .queued
        .saturating_add(runs.running)
        .saturating_add(u32::from(copy.named.is_some()));
    let room = copy
        .max_active_runs
        .max(1)
        .saturating_add(copy.ahead)
        .saturating_sub(live)
        .min(granted);
    let dates: Vec<DateTime<Utc>> = copy
        .order
        .iter()
        .filter(|d| !runs.dates.contains(d) && Some(**d) != copy.named && copy.is_due(**d))
        .take(room as usize)
        .copied()
        .collect();
    if dates.is_empty() {
        Step::Wait
    } else {
        Step::Create(dates)
    }
}

/// The shortest wait between two live checks of the steered copies (see
/// [`live_check_period`]).
pub const LIVE_CHECK_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two live checks: a check that costs more than a tenth of this
/// still runs this often.
pub const LIVE_CHECK_MAX: Duration = Duration::from_secs(1);

/// How long the leader waits before the next live check (one statement over Airflow's
/// queued/running runs), given what the last one cost: ten times its cost, so the checks take
/// at most a tenth of the leader's time (more only for a check over 0.1 s), within
/// [`LIVE_CHECK_MIN`] and [`LIVE_CHECK_MAX`]. A cheap check (a few live runs: 1–3 ms on
/// PostgreSQL at 10,000 backfills) names the next run within 0.1 s of a slot freeing; a
/// costly one (80,000 live runs: 0.14 s) is made once a second.
pub fn live_check_period(cost: Duration) -> Duration {
    cost.saturating_mul(10)
        .clamp(LIVE_CHECK_MIN, LIVE_CHECK_MAX)
}

/// The run id Airflow gives a run of `run_type` (`scheduled`, ...) at `logical_date`:
/// `<run_type>__<date>`, the date as Python's `isoformat()` of an aware UTC datetime
/// (`2024-01-02T05:00:00+00:00`; microseconds only when not zero), as both majors'
/// `DagRun.generate_run_id` write it.
pub fn run_id(run_type: &str, logical_date: DateTime<Utc>) -> String {
    let fmt = if logical_date.timestamp_subsec_micros() == 0 {
        "%Y-%m-%dT%H:%M:%S+00:00"
    } else {
        "%Y-%m-%dT%H:%M:%S%.6f+00:00"
    };
    format!("{run_type}__{}", logical_date.format(fmt))
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
    fn live_check_period_is_ten_times_the_cost_within_bounds() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(0), ms(100)),
            (ms(1), ms(100)),
            (ms(10), ms(100)),
            (ms(12), ms(120)),
            (ms(30), ms(300)),
            (ms(50), ms(500)),
            (ms(100), ms(1000)),
            (ms(245), ms(1000)),
            (Duration::MAX, ms(1000)),
        ];
        for (cost, want) in cases {
            assert_eq!(live_check_period(cost), want, "{cost:?}");
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
        assert_eq!(
            next_date(&order, &runs(&[], 0, 0), 1, all_due),
            Some(day(3))
        );
        // Named but not started yet: wait, whatever the room.
        assert_eq!(next_date(&order, &runs(&[3], 1, 0), 5, all_due), None);
        // Running at the limit: wait.
        assert_eq!(next_date(&order, &runs(&[3], 0, 1), 1, all_due), None);
        // Room for one more.
        assert_eq!(
            next_date(&order, &runs(&[3], 0, 1), 2, all_due),
            Some(day(2))
        );
        assert_eq!(
            next_date(&order, &runs(&[3, 2], 0, 0), 1, all_due),
            Some(day(1))
        );
        assert_eq!(next_date(&order, &runs(&[1, 2, 3], 0, 0), 1, all_due), None);
    }

    fn hour(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 2, h, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn all_due(_: DateTime<Utc>) -> bool {
        true
    }

    /// A date after every date of the tables: every date is due.
    const FAR: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

    /// [`decide`] for a copy whose dates are all due.
    #[allow(clippy::too_many_arguments)]
    fn decided(
        kind: RunOrder,
        order: &[DateTime<Utc>],
        runs: &CopyRuns,
        named: Option<DateTime<Utc>>,
        max_active_runs: u32,
        ahead: u32,
        granted: u32,
        can_create: bool,
        paused: bool,
    ) -> Decision {
        let copy = CopyNow {
            kind,
            order,
            runs,
            named,
            max_active_runs,
            ahead,
            due_until: Some(FAR),
            can_create,
            paused,
        };
        decide(&copy, granted)
    }

    #[test]
    fn steps() {
        use RunOrder::{Catchup, NewestFirst, OldestFirst};
        let all = [day(1), day(2), day(3), day(4), day(5)];
        let back = NewestFirst.arrange(&all);
        // (kind, order, runs (dates, queued, running), named, max_active_runs, granted,
        // can_create) -> step
        type Case<'a> = (
            RunOrder,
            &'a [DateTime<Utc>],
            CopyRuns,
            Option<u32>,
            u32,
            u32,
            bool,
            Step,
        );
        let cases: Vec<Case> = vec![
            // Nothing granted: nothing, whatever the room.
            (
                OldestFirst,
                &all,
                runs(&[1], 0, 0),
                None,
                5,
                0,
                true,
                Step::Wait,
            ),
            // A template: every date that fits the room, oldest first, at once.
            (
                OldestFirst,
                &all,
                runs(&[1], 1, 0),
                None,
                3,
                5,
                true,
                Step::Create(vec![day(2), day(3)]),
            ),
            // ... as many as granted when the grant is smaller.
            (
                OldestFirst,
                &all,
                runs(&[1], 0, 0),
                None,
                5,
                1,
                true,
                Step::Create(vec![day(2)]),
            ),
            // The named date counts as live and is never created by backfilld.
            (
                OldestFirst,
                &all,
                runs(&[1], 0, 1),
                Some(2),
                3,
                5,
                true,
                Step::Create(vec![day(3)]),
            ),
            // No room: queued and running fill max_active_runs.
            (
                OldestFirst,
                &all,
                runs(&[1, 2], 1, 1),
                None,
                2,
                5,
                true,
                Step::Wait,
            ),
            // Every date has a run (a foreign run on another date changes nothing).
            (
                OldestFirst,
                &all,
                runs(&[1, 2, 3, 4, 5, 9], 0, 0),
                None,
                3,
                5,
                true,
                Step::Wait,
            ),
            // Newest first, in order.
            (
                NewestFirst,
                &back,
                runs(&[5], 0, 1),
                None,
                3,
                5,
                true,
                Step::Create(vec![day(4), day(3)]),
            ),
            // A catchup copy creates ahead of the scheduler once it has a template, skipping
            // the date the scheduler names next.
            (
                Catchup,
                &all,
                runs(&[1], 0, 1),
                Some(2),
                10,
                10,
                true,
                Step::Create(vec![day(3), day(4), day(5)]),
            ),
            // Without a template a catchup copy waits for the scheduler.
            (
                Catchup,
                &all,
                runs(&[], 0, 0),
                None,
                10,
                10,
                false,
                Step::Wait,
            ),
            // Without a template a steered copy names one date, only when nothing is queued or
            // named.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                None,
                10,
                10,
                false,
                Step::Name(day(1)),
            ),
            (
                OldestFirst,
                &all,
                runs(&[1], 1, 0),
                None,
                10,
                10,
                false,
                Step::Wait,
            ),
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                Some(1),
                10,
                10,
                false,
                Step::Wait,
            ),
            (
                NewestFirst,
                &back,
                runs(&[5], 0, 1),
                None,
                2,
                1,
                false,
                Step::Name(day(4)),
            ),
            // max_active_runs 0 reads as 1.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                None,
                0,
                5,
                true,
                Step::Create(vec![day(1)]),
            ),
        ];
        for (i, (kind, order, r, named, mar, granted, can, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decided(kind, order, &r, named.map(day), mar, 0, granted, can, false),
                Decision {
                    step: want,
                    unpause: false
                },
                "case {i}"
            );
        }
    }

    /// A copy paused until the budgets give it a run: the date Airflow planned by itself (the
    /// newest, when the range ends in the latest complete interval) takes the first granted
    /// run, whatever the order; nothing granted keeps it paused.
    #[test]
    fn releases() {
        use RunOrder::{NewestFirst, OldestFirst};
        let all = [day(1), day(2), day(3), day(4), day(5)];
        let back = NewestFirst.arrange(&all);
        // (kind, order, runs (dates, queued, running), named, max_active_runs, granted,
        // can_create) -> None (stays paused) or the step taken with the unpause
        type Case<'a> = (
            RunOrder,
            &'a [DateTime<Utc>],
            CopyRuns,
            Option<u32>,
            u32,
            u32,
            bool,
            Option<Step>,
        );
        let cases: Vec<Case> = vec![
            // Nothing granted: stays paused, even with a date Airflow planned.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                Some(5),
                2,
                0,
                false,
                None,
            ),
            (OldestFirst, &all, runs(&[], 0, 0), None, 2, 0, false, None),
            // One run granted, Airflow planned the newest date: unpausing creates it; the
            // oldest waits for the next grant.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                Some(5),
                2,
                1,
                false,
                Some(Step::Wait),
            ),
            // Two granted without a template: the planned date, then one named at a time.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                Some(5),
                2,
                2,
                false,
                Some(Step::Wait),
            ),
            // Nothing planned by Airflow (the range ends before its latest complete interval):
            // the order's first date, named with the unpause.
            (
                OldestFirst,
                &all,
                runs(&[], 0, 0),
                None,
                2,
                1,
                false,
                Some(Step::Name(day(1))),
            ),
            (
                NewestFirst,
                &back,
                runs(&[], 0, 0),
                None,
                2,
                1,
                false,
                Some(Step::Name(day(5))),
            ),
            // A template (held before, for a yield): the runs granted, created with the
            // unpause; a planned date takes one of them.
            (
                OldestFirst,
                &all,
                runs(&[5, 1], 0, 0),
                None,
                3,
                2,
                true,
                Some(Step::Create(vec![day(2), day(3)])),
            ),
            (
                OldestFirst,
                &all,
                runs(&[1], 0, 0),
                Some(5),
                3,
                2,
                true,
                Some(Step::Create(vec![day(2)])),
            ),
            // Every date has a run: nothing to unpause for.
            (
                OldestFirst,
                &all,
                runs(&[1, 2, 3, 4, 5], 0, 0),
                None,
                3,
                2,
                true,
                None,
            ),
        ];
        for (i, (kind, order, r, named, mar, granted, can, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decided(kind, order, &r, named.map(day), mar, 0, granted, can, true),
                Decision {
                    unpause: want.is_some(),
                    step: want.unwrap_or(Step::Wait),
                },
                "case {i}"
            );
        }
    }

    /// Runs queued ahead: a copy whose runs backfilld creates may keep `ahead` more queued
    /// than `max_active_runs`, oldest first, only without a run budget.
    #[test]
    fn queues_ahead() {
        use RunOrder::{Catchup, NewestFirst, OldestFirst};
        assert_eq!(queue_ahead(Catchup, false, 10), 10);
        assert_eq!(queue_ahead(OldestFirst, false, 3), 3);
        assert_eq!(queue_ahead(OldestFirst, false, 0), 1);
        assert_eq!(queue_ahead(NewestFirst, false, 10), 0);
        assert_eq!(queue_ahead(Catchup, true, 10), 0);
        assert_eq!(queue_ahead(OldestFirst, true, 10), 0);
        let all = [day(1), day(2), day(3), day(4), day(5), day(6), day(7)];
        // 2 running, 2 allowed and 2 ahead: two more queued at once.
        assert_eq!(
            decided(
                Catchup,
                &all,
                &runs(&[1, 2], 0, 2),
                None,
                2,
                2,
                u32::MAX,
                true,
                false
            )
            .step,
            Step::Create(vec![day(3), day(4)])
        );
        // The queue full: nothing more until a run ends.
        assert_eq!(
            decided(
                Catchup,
                &all,
                &runs(&[1, 2, 3, 4], 2, 2),
                None,
                2,
                2,
                u32::MAX,
                true,
                false
            )
            .step,
            Step::Wait
        );
        // The named date counts as queued.
        assert_eq!(
            decided(
                Catchup,
                &all,
                &runs(&[1, 2], 0, 2),
                Some(day(3)),
                2,
                2,
                u32::MAX,
                true,
                false
            )
            .step,
            Step::Create(vec![day(4)])
        );
        // Without a template nothing is queued ahead (the scheduler creates the runs).
        assert_eq!(
            decided(
                OldestFirst,
                &all,
                &runs(&[1, 2], 0, 2),
                None,
                2,
                2,
                u32::MAX,
                false,
                false
            )
            .step,
            Step::Wait
        );
    }

    /// Only due dates are named or created, and the newest due one is found from either end.
    #[test]
    fn only_due_dates() {
        let all = [day(1), day(2), day(3), day(4), day(5)];
        let back = RunOrder::NewestFirst.arrange(&all);
        // Daily data intervals: a date's run is due at the next day.
        let run_after = |d: DateTime<Utc>| Some(d + chrono::Duration::days(1));
        assert_eq!(newest_due(&all, day(4), run_after), Some(day(3)));
        assert_eq!(newest_due(&back, day(4), run_after), Some(day(3)));
        assert_eq!(newest_due(&all, day(9), run_after), Some(day(5)));
        assert_eq!(newest_due(&all, day(1), run_after), None);
        assert_eq!(newest_due(&[], day(9), run_after), None);
        // A date whose run cannot be computed is not due; an older one still is.
        let gap = |d: DateTime<Utc>| (d != day(5)).then(|| d + chrono::Duration::days(1));
        assert_eq!(newest_due(&all, day(9), gap), Some(day(4)));
        let r = runs(&[1], 0, 1);
        let copy = |order, due_until, can_create| CopyNow {
            kind: RunOrder::OldestFirst,
            order,
            runs: &r,
            named: None,
            max_active_runs: 10,
            ahead: 0,
            due_until,
            can_create,
            paused: false,
        };
        assert_eq!(
            decide(&copy(&all, Some(day(3)), true), 10).step,
            Step::Create(vec![day(2), day(3)])
        );
        assert_eq!(decide(&copy(&all, None, true), 10).step, Step::Wait);
        // Pending: due dates without a run (day 1 has one; days 4 and 5 are not due).
        assert_eq!(copy(&all, Some(day(3)), true).pending(), 2);
        // An unpaused copy's named date is live, a paused copy's still pending.
        let named = CopyNow {
            named: Some(day(2)),
            ..copy(&all, Some(day(3)), true)
        };
        assert_eq!(named.pending(), 1);
        assert_eq!(
            CopyNow {
                paused: true,
                ..named
            }
            .pending(),
            2
        );
        // Newest first, the newest date not due: the newest due one is named.
        let back_copy = CopyNow {
            kind: RunOrder::NewestFirst,
            runs: &CopyRuns::default(),
            ..copy(&back, Some(day(4)), false)
        };
        assert_eq!(decide(&back_copy, 1).step, Step::Name(day(4)));
    }

    #[test]
    fn run_ids() {
        assert_eq!(
            run_id("scheduled", hour(5)),
            "scheduled__2024-01-02T05:00:00+00:00"
        );
        let odd = hour(0) + chrono::Duration::microseconds(1500);
        assert_eq!(
            run_id("scheduled", odd),
            "scheduled__2024-01-02T00:00:00.001500+00:00"
        );
    }

    #[test]
    fn gaps_and_foreign_runs() {
        // Oldest first with a gap (2 skipped): 1, 3, 4.
        let order = RunOrder::OldestFirst.arrange(&[day(1), day(3), day(4)]);
        assert_eq!(
            next_date(&order, &runs(&[1], 0, 0), 1, all_due),
            Some(day(3))
        );
        // A run the copy got for another date (a manual trigger) changes nothing.
        assert_eq!(
            next_date(&order, &runs(&[1, 2], 0, 0), 1, all_due),
            Some(day(3))
        );
        // max_active_runs 0 reads as 1.
        assert_eq!(
            next_date(&order, &runs(&[], 0, 0), 0, all_due),
            Some(day(1))
        );
    }
}
