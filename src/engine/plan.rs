//! The reconcile pass's decisions, pure: given what the pass read (every unfinished backfill,
//! its copy's runs, Airflow's `dag` rows and import errors, the prerequisites' gates, the
//! throttle's load) and the time, which copies to write, which to pause and unpause, and which
//! rows change. `engine::passes` gathers the facts and applies the [`Plan`]; nothing here
//! reads or writes anything, so every rule is table-tested in-process.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::ThrottleSection;
use crate::metadb::airflow::is_path_suffix;
use crate::metadb::pass::{Change, PassRow};
use crate::ordering::Gate;
use crate::reconcile::{self, Observation, Progress, RunSummary};
use crate::state::BackfillState;
use crate::throttle::{self, Verdict};

/// Submitted backfills whose copy is written in this pass: no copy yet, their prerequisites
/// (`after`) let them go, and their `scheduled_at` (if any) has come.
pub(super) fn copies_due(
    rows: &[&PassRow],
    gates: &HashMap<String, Gate>,
    now: DateTime<Utc>,
) -> Vec<String> {
    rows.iter()
        .filter(|row| {
            row.state == BackfillState::Submitted
                && gates.get(&row.id).is_none_or(|g| *g == Gate::Go)
                && row.scheduled_at.is_none_or(|t| t <= now)
                && row.copy_written_at.is_none()
        })
        .map(|row| row.id.clone())
        .collect()
}

/// What one pass read, and the settings its decisions depend on.
pub(super) struct Facts<'a> {
    /// Every unfinished backfill.
    pub(super) rows: &'a [&'a PassRow],
    /// A copy's run counts (within its backfill's dates).
    pub(super) runs_of: &'a dyn Fn(&str) -> RunSummary,
    /// Copies Airflow registered, with their `is_paused`.
    pub(super) dags: &'a HashMap<String, bool>,
    /// Airflow's import errors of copy files (file name as Airflow recorded it, error).
    pub(super) import_errors: &'a [(String, String)],
    /// Prerequisite gates of backfills without a copy.
    pub(super) gates: &'a HashMap<String, Gate>,
    /// Copies written in this pass, and when.
    pub(super) written: &'a HashMap<String, DateTime<Utc>>,
    /// Origin runs and pool use the throttle weighs.
    pub(super) load: &'a throttle::Load,
    /// Pools where each copy has queued or running task instances.
    pub(super) pools_of: &'a HashMap<String, Vec<String>>,
    /// When each backfill's last turn ended (fair share), carried between passes.
    pub(super) turn_ended: &'a HashMap<String, DateTime<Utc>>,
    /// Why a steered backfill got no run from the run budgets at the last steering step.
    pub(super) steer_waiting: &'a dyn Fn(&str) -> Option<String>,
    /// `[throttle]`.
    pub(super) throttle: &'a ThrottleSection,
    /// How long Airflow may take to register a copy.
    pub(super) register_timeout: chrono::Duration,
    /// The pass's time.
    pub(super) now: DateTime<Utc>,
}

/// What a pass does.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Copies to pause for the throttle.
    pub(super) to_pause: Vec<String>,
    /// Copies the throttle releases.
    pub(super) to_unpause: Vec<String>,
    /// Steered copies paused by the throttle that nothing holds ([`Verdict::Turn`]): the
    /// steering step may unpause them when it grants them a run.
    pub(super) releasable: HashSet<String>,
    /// Rows whose stored outcome changes.
    pub(super) changes: Vec<Change>,
    /// Unfinished backfills by state after the pass.
    pub(super) unfinished_by_state: BTreeMap<BackfillState, usize>,
    /// When each live backfill's last turn ended, for the next pass.
    pub(super) turn_ended: HashMap<String, DateTime<Utc>>,
    /// State changes, for the log: (id, from, to, reason).
    pub(super) state_changes: Vec<(String, BackfillState, BackfillState, Option<String>)>,
    /// Backfills failed because a prerequisite did not succeed: (id, why).
    pub(super) failed_prerequisites: Vec<(String, String)>,
}

/// The pass's decisions over `f`.
pub(super) fn plan(f: &Facts<'_>) -> Plan {
    let now = f.now;
    let throttling = f.throttle.has_budget() || f.throttle.yield_to_scheduled;
    let live: HashSet<&str> = f.rows.iter().map(|r| r.id.as_str()).collect();
    let mut turn_ended: HashMap<String, DateTime<Utc>> = f
        .turn_ended
        .iter()
        .filter(|(id, _)| live.contains(id.as_str()))
        .map(|(id, t)| (id.clone(), *t))
        .collect();
    let mut candidates = Vec::new();
    let mut candidate_of: HashMap<&str, usize> = HashMap::new();
    for &row in f.rows {
        let runs = (f.runs_of)(&row.id);
        if runs.active() == 0 && row.progress.running + row.progress.queued > 0 {
            turn_ended.insert(row.id.clone(), now);
        }
        // Without a throttle every registered copy is `Untouched`: no candidates to build.
        if !throttling {
            continue;
        }
        let Some(&paused) = f.dags.get(&row.id) else {
            continue;
        };
        let paused_elsewhere = paused && !row.throttled;
        candidate_of.insert(&row.id, candidates.len());
        candidates.push(throttle::Candidate {
            id: row.id.clone(),
            dag_id: row.dag_id.clone(),
            waiting_since: turn_ended.get(&row.id).copied().unwrap_or(row.submitted_at),
            active: runs.active(),
            pending: row
                .progress
                .total
                .saturating_sub(runs.active() + runs.succeeded + runs.failed),
            max_active_runs: row.max_active_runs,
            hands_off: row.user_paused || row.pending_op.is_some() || paused_elsewhere,
            pools: f.pools_of.get(&row.id).cloned().unwrap_or_default(),
            priority: row.priority,
            steered: row.steered,
        });
    }
    let verdicts = if throttling {
        throttle::decide(f.throttle, &candidates, f.load)
    } else {
        vec![Verdict::Untouched; candidates.len()]
    };
    // A copy paused now may have had a run created since it was read: unpause others only in
    // the next pass, once that run is counted.
    let pausing = f.rows.iter().any(|row| {
        f.dags.get(&row.id) == Some(&false)
            && candidate_of
                .get(row.id.as_str())
                .and_then(|&i| verdicts.get(i))
                .is_some_and(|v| matches!(v, Verdict::Hold(_)))
    });
    let mut out = Plan::default();
    for &row in f.rows {
        let airflow_paused = f.dags.get(&row.id).copied();
        let deferred = Verdict::Hold(
            row.state_reason
                .clone()
                .unwrap_or_else(|| "throttled: waiting for a free slot".to_owned()),
        );
        let verdict = if throttling {
            candidate_of
                .get(row.id.as_str())
                .and_then(|&i| verdicts.get(i))
        } else {
            // Throttling turned off: a copy the throttle paused (waiting for a turn when the
            // budget was removed) is released, never one its user paused.
            f.dags.get(&row.id).map(|_| {
                if row.throttled && !row.user_paused && row.pending_op.is_none() {
                    &Verdict::Go
                } else {
                    &Verdict::Untouched
                }
            })
        }
        .map(|v| match v {
            Verdict::Go if pausing && row.throttled && airflow_paused == Some(true) => &deferred,
            v => v,
        });
        let throttled = match verdict {
            Some(Verdict::Hold(_)) => {
                if airflow_paused == Some(false) {
                    out.to_pause.push(row.id.clone());
                }
                true
            }
            Some(Verdict::Go) => {
                if row.throttled && airflow_paused == Some(true) {
                    out.to_unpause.push(row.id.clone());
                }
                false
            }
            Some(Verdict::Untouched) => false,
            // Left as it is: the steering unpauses the copy with the run it grants.
            Some(Verdict::Turn) => {
                if row.throttled && airflow_paused == Some(true) {
                    out.releasable.insert(row.id.clone());
                }
                row.throttled
            }
            None => row.throttled,
        };
        // A copy the throttle holds or releases now is not paused in the user's sense.
        let released = row.throttled && matches!(verdict, Some(Verdict::Go));
        let import_error = row.copy_path.as_deref().and_then(|path| {
            f.import_errors
                .iter()
                .find(|(name, _)| is_path_suffix(path, name))
                .map(|(_, e)| e.clone())
        });
        let obs = Observation {
            registered: airflow_paused.map(|p| p && !(throttled || released)),
            import_error,
            runs: (f.runs_of)(&row.id),
        };
        let written_at = f.written.get(&row.id).copied().or(row.copy_written_at);
        let age = written_at
            .map(|t| now - t)
            .unwrap_or_else(chrono::Duration::zero);
        let mut d = reconcile::decide(row.state, row.progress.total, &obs, age, f.register_timeout);
        if d.state == BackfillState::Submitted && !f.written.contains_key(&row.id) {
            match f.gates.get(&row.id) {
                Some(Gate::Wait(why)) => d.reason = Some(why.clone()),
                Some(Gate::Fail(why)) => {
                    out.failed_prerequisites.push((row.id.clone(), why.clone()));
                    d.state = BackfillState::Failed;
                    d.reason = Some(why.clone());
                }
                Some(Gate::Go) | None => {}
            }
        }
        if let Some(Verdict::Hold(why)) = verdict {
            if !d.state.is_terminal() && d.reason.is_none() {
                d.reason = Some(why.clone());
            }
        } else if let Some(why) = (f.steer_waiting)(&row.id) {
            // A steered backfill the run budgets give no run (the last steering step).
            if !d.state.is_terminal() && d.reason.is_none() && obs.runs.active() == 0 {
                d.reason = Some(why);
            }
        }
        let unchanged = d.state == row.state
            && d.reason == row.state_reason
            && d.progress == row.progress
            && d.run_start == row.run_start
            && d.run_end == row.run_end
            && throttled == row.throttled;
        if !d.state.is_terminal() {
            *out.unfinished_by_state.entry(d.state).or_insert(0) += 1;
        }
        if !unchanged {
            if d.state != row.state {
                out.state_changes
                    .push((row.id.clone(), row.state, d.state, d.reason.clone()));
            }
            out.changes.push(Change {
                id: row.id.clone(),
                decision: d,
                throttled,
            });
        }
    }
    out.turn_ended = turn_ended;
    out
}

/// Whether steering may have a copy to name runs for after this pass: some row in a state
/// steering takes (`submitted`, `queued`, `running`), not paused by its user, no life-cycle
/// action pending, and steered or (with `catchup`) with dates still without a run as the
/// pass leaves them (`changes` give the progress it writes). A superset of
/// `metadb::steer`'s condition, which also needs the copy registered and unpaused: when this
/// is false, steering's read of the copies would find none.
pub(super) fn maybe_steered(rows: &[&PassRow], changes: &[Change], catchup: bool) -> bool {
    let written: HashMap<&str, &Progress> = changes
        .iter()
        .map(|c| (c.id.as_str(), &c.decision.progress))
        .collect();
    rows.iter().any(|r| {
        let takes = matches!(
            r.state,
            BackfillState::Submitted | BackfillState::Queued | BackfillState::Running
        ) && !r.user_paused
            && r.pending_op.is_none();
        let p = written.get(r.id.as_str()).copied().unwrap_or(&r.progress);
        takes && (r.steered || (catchup && p.succeeded + p.failed + p.running + p.queued < p.total))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::utc;

    const NOW: (i32, u32, u32) = (2026, 1, 10);

    fn now() -> DateTime<Utc> {
        utc(NOW.0, NOW.1, NOW.2, 12, 0)
    }

    fn row(id: &str, state: BackfillState, total: u32) -> PassRow {
        PassRow {
            id: id.to_owned(),
            dag_id: "sales".to_owned(),
            state,
            state_reason: None,
            copy_path: Some(format!("/dags/backfill_user_dags/{id}.py")),
            copy_written_at: Some(utc(2026, 1, 10, 11, 59)),
            submitted_at: utc(2026, 1, 10, 10, 0),
            scheduled_at: None,
            run_start: None,
            run_end: None,
            progress: Progress {
                total,
                pending: total,
                ..Progress::default()
            },
            user_paused: false,
            throttled: false,
            pending_op: None,
            max_active_runs: 1,
            priority: 0,
            steered: false,
        }
    }

    #[test]
    fn maybe_steered_sees_steered_and_catchup_copies_with_dates_left() {
        let full = |id: &str| {
            let mut r = row(id, BackfillState::Running, 3);
            r.progress.succeeded = 2;
            r.progress.running = 1;
            r.progress.pending = 0;
            r
        };
        let steered = PassRow {
            steered: true,
            ..full("s")
        };
        let paused = PassRow {
            user_paused: true,
            ..row("p", BackfillState::Running, 3)
        };
        let pending = PassRow {
            pending_op: Some(crate::rows::PendingOp::Pause),
            ..row("o", BackfillState::Queued, 3)
        };
        let dates_left = row("d", BackfillState::Submitted, 3);
        let dates_full = full("f");
        let wrote_left = Change {
            id: "f".to_owned(),
            decision: reconcile::Decision {
                state: BackfillState::Running,
                reason: None,
                progress: Progress {
                    total: 3,
                    succeeded: 1,
                    pending: 2,
                    ..Progress::default()
                },
                run_start: None,
                run_end: None,
            },
            throttled: false,
        };
        // (rows, changes, catchup, expected)
        let table: Vec<(Vec<&PassRow>, Vec<Change>, bool, bool)> = vec![
            (vec![], vec![], true, false),
            (vec![&steered], vec![], false, true),
            (vec![&paused, &pending], vec![], true, false),
            (vec![&dates_left], vec![], true, true),
            (vec![&dates_left], vec![], false, false),
            (vec![&dates_full], vec![], true, false),
            (vec![&dates_full], vec![wrote_left], true, true),
        ];
        for (i, (rows, changes, catchup, want)) in table.into_iter().enumerate() {
            assert_eq!(maybe_steered(&rows, &changes, catchup), want, "case {i}");
        }
    }

    struct World {
        rows: Vec<PassRow>,
        runs: HashMap<String, RunSummary>,
        dags: HashMap<String, bool>,
        errors: Vec<(String, String)>,
        gates: HashMap<String, Gate>,
        written: HashMap<String, DateTime<Utc>>,
        turn_ended: HashMap<String, DateTime<Utc>>,
        steer_waiting: HashMap<String, String>,
        throttle: ThrottleSection,
    }

    impl World {
        fn new(rows: Vec<PassRow>) -> World {
            World {
                rows,
                runs: HashMap::new(),
                dags: HashMap::new(),
                errors: Vec::new(),
                gates: HashMap::new(),
                written: HashMap::new(),
                turn_ended: HashMap::new(),
                steer_waiting: HashMap::new(),
                throttle: ThrottleSection {
                    yield_to_scheduled: false,
                    ..ThrottleSection::default()
                },
            }
        }

        fn plan(&self) -> Plan {
            let runs = |id: &str| self.runs.get(id).copied().unwrap_or_default();
            let load = throttle::Load::default();
            let pools = HashMap::new();
            let rows: Vec<&PassRow> = self.rows.iter().collect();
            let steer_waiting = |id: &str| self.steer_waiting.get(id).cloned();
            plan(&Facts {
                rows: &rows,
                runs_of: &runs,
                dags: &self.dags,
                import_errors: &self.errors,
                gates: &self.gates,
                written: &self.written,
                load: &load,
                pools_of: &pools,
                turn_ended: &self.turn_ended,
                steer_waiting: &steer_waiting,
                throttle: &self.throttle,
                register_timeout: chrono::Duration::seconds(600),
                now: now(),
            })
        }
    }

    fn summary(queued: u32, running: u32, succeeded: u32, failed: u32) -> RunSummary {
        RunSummary {
            queued,
            running,
            succeeded,
            failed,
            ..RunSummary::default()
        }
    }

    fn change_of<'a>(p: &'a Plan, id: &str) -> Option<&'a Change> {
        p.changes.iter().find(|c| c.id == id)
    }

    #[test]
    fn copies_are_due_when_submitted_without_a_copy_gates_open_and_time_come() {
        let mut fresh = row("fresh", BackfillState::Submitted, 2);
        fresh.copy_written_at = None;
        let mut later = fresh.clone();
        later.id = "later".into();
        later.scheduled_at = Some(utc(2026, 1, 11, 0, 0));
        let mut waiting = fresh.clone();
        waiting.id = "waiting".into();
        let mut failing = fresh.clone();
        failing.id = "failing".into();
        let mut go = fresh.clone();
        go.id = "go".into();
        let mut written = fresh.clone();
        written.id = "written".into();
        written.copy_written_at = Some(now());
        let mut running = fresh.clone();
        running.id = "running".into();
        running.state = BackfillState::Running;
        let gates = HashMap::from([
            ("waiting".to_owned(), Gate::Wait("waiting for a".into())),
            ("failing".to_owned(), Gate::Fail("a failed".into())),
            ("go".to_owned(), Gate::Go),
        ]);
        let rows = [fresh, later, waiting, failing, go, written, running];
        let rows: Vec<&PassRow> = rows.iter().collect();
        assert_eq!(
            copies_due(&rows, &gates, now()),
            vec!["fresh".to_owned(), "go".to_owned()]
        );
    }

    #[test]
    fn registration_runs_and_import_errors_drive_the_state() {
        // (case, row state, registered paused?, runs, import error?, written this pass,
        //  expected state, expected change)
        let cases = [
            (
                "unregistered, young",
                BackfillState::Submitted,
                None,
                summary(0, 0, 0, 0),
                false,
                false,
                BackfillState::Submitted,
                false,
            ),
            (
                "registered",
                BackfillState::Submitted,
                Some(false),
                summary(0, 0, 0, 0),
                false,
                false,
                BackfillState::Queued,
                true,
            ),
            (
                "a run queued",
                BackfillState::Queued,
                Some(false),
                summary(1, 0, 0, 0),
                false,
                false,
                BackfillState::Queued,
                true,
            ),
            (
                "a run running",
                BackfillState::Queued,
                Some(false),
                summary(0, 1, 0, 0),
                false,
                false,
                BackfillState::Running,
                true,
            ),
            (
                "user paused in Airflow",
                BackfillState::Running,
                Some(true),
                summary(0, 1, 0, 0),
                false,
                false,
                BackfillState::Paused,
                true,
            ),
            (
                "all succeeded",
                BackfillState::Running,
                Some(false),
                summary(0, 0, 2, 0),
                false,
                false,
                BackfillState::Success,
                true,
            ),
            (
                "one failed",
                BackfillState::Running,
                Some(false),
                summary(0, 0, 1, 1),
                false,
                false,
                BackfillState::Failed,
                true,
            ),
            (
                "import error",
                BackfillState::Submitted,
                None,
                summary(0, 0, 0, 0),
                true,
                false,
                BackfillState::Failed,
                true,
            ),
        ];
        for (name, state, paused, runs, error, written, want, changed) in cases {
            let mut w = World::new(vec![row("b", state, 2)]);
            if let Some(p) = paused {
                w.dags.insert("b".into(), p);
            }
            w.runs.insert("b".into(), runs);
            if error {
                w.errors
                    .push(("backfill_user_dags/b.py".into(), "SyntaxError".into()));
            }
            if written {
                w.written.insert("b".into(), now());
            }
            let p = w.plan();
            let got = change_of(&p, "b")
                .map(|c| c.decision.state)
                .unwrap_or(state);
            assert_eq!(got, want, "{name}: {p:?}");
            assert_eq!(change_of(&p, "b").is_some(), changed, "{name}");
            assert!(
                p.to_pause.is_empty() && p.to_unpause.is_empty(),
                "{name}: no throttle"
            );
            let unfinished: usize = p.unfinished_by_state.values().sum();
            assert_eq!(unfinished, usize::from(!want.is_terminal()), "{name}");
        }
    }

    #[test]
    fn an_unregistered_copy_fails_after_the_register_timeout() {
        let mut stale = row("b", BackfillState::Submitted, 1);
        stale.copy_written_at = Some(now() - chrono::Duration::seconds(601));
        let p = World::new(vec![stale]).plan();
        let c = change_of(&p, "b").unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(c.decision.state, BackfillState::Failed);
        assert_eq!(p.state_changes.len(), 1);
    }

    #[test]
    fn prerequisites_hold_or_fail_a_submitted_backfill() {
        let mut waiting = row("w", BackfillState::Submitted, 1);
        waiting.copy_written_at = None;
        let mut failing = waiting.clone();
        failing.id = "f".into();
        let mut w = World::new(vec![waiting, failing]);
        w.gates
            .insert("w".into(), Gate::Wait("waiting for a to succeed".into()));
        w.gates
            .insert("f".into(), Gate::Fail("a was cancelled".into()));
        let p = w.plan();
        let wc = change_of(&p, "w").unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(wc.decision.state, BackfillState::Submitted);
        assert_eq!(
            wc.decision.reason.as_deref(),
            Some("waiting for a to succeed")
        );
        let fc = change_of(&p, "f").unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(fc.decision.state, BackfillState::Failed);
        assert_eq!(
            p.failed_prerequisites,
            vec![("f".to_owned(), "a was cancelled".to_owned())]
        );
    }

    #[test]
    fn an_unchanged_row_is_not_written() {
        let mut r = row("b", BackfillState::Running, 2);
        r.progress = Progress {
            total: 2,
            running: 1,
            pending: 1,
            ..Progress::default()
        };
        let mut w = World::new(vec![r]);
        w.dags.insert("b".into(), false);
        w.runs.insert("b".into(), summary(0, 1, 0, 0));
        let first = w.plan();
        let Some(c) = change_of(&first, "b") else {
            // Already in its reconciled form.
            return;
        };
        // Store what the first pass decided: the second pass changes nothing.
        w.rows[0].state = c.decision.state;
        w.rows[0].state_reason = c.decision.reason.clone();
        w.rows[0].progress = c.decision.progress;
        w.rows[0].run_start = c.decision.run_start;
        w.rows[0].run_end = c.decision.run_end;
        assert!(w.plan().changes.is_empty());
    }

    #[test]
    fn a_budget_pauses_the_copy_over_it_and_releases_it_later() {
        let mut a = row("a", BackfillState::Running, 3);
        a.progress.running = 1;
        a.progress.pending = 2;
        let mut b = row("b", BackfillState::Queued, 3);
        b.submitted_at = utc(2026, 1, 10, 10, 30);
        let mut w = World::new(vec![a, b]);
        w.throttle.max_running_backfill_runs = Some(1);
        w.dags.insert("a".into(), false);
        w.dags.insert("b".into(), false);
        w.runs.insert("a".into(), summary(0, 1, 0, 0));
        let p = w.plan();
        assert_eq!(p.to_pause, vec!["b".to_owned()], "{p:?}");
        let held = change_of(&p, "b").unwrap_or_else(|| panic!("{p:?}"));
        assert!(held.throttled);
        assert!(
            held.decision
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("budget")),
            "{:?}",
            held.decision.reason
        );
        // `a` finished its runs: `b`, paused by the throttle, is released; a's turn ended.
        w.rows[1].throttled = true;
        w.dags.insert("b".into(), true);
        w.runs.insert("a".into(), summary(0, 0, 3, 0));
        w.rows[0].progress.running = 1;
        let p = w.plan();
        assert_eq!(p.to_unpause, vec!["b".to_owned()], "{p:?}");
        assert!(p.to_pause.is_empty());
        assert_eq!(p.turn_ended.get("a"), Some(&now()));
        let released = change_of(&p, "b").unwrap_or_else(|| panic!("{p:?}"));
        assert!(!released.throttled);
        assert_ne!(
            released.decision.state,
            BackfillState::Paused,
            "not paused in the user's sense"
        );
    }

    #[test]
    fn a_steered_copy_waits_paused_for_the_steering_unless_its_runs_are_in_flight() {
        // Registered paused under a budget, nothing holds it: left paused for the steering,
        // not paused in the user's sense.
        let mut s = row("s", BackfillState::Queued, 3);
        s.steered = true;
        s.throttled = true;
        s.max_active_runs = 2;
        let mut w = World::new(vec![s]);
        w.throttle.max_running_backfill_runs = Some(2);
        w.throttle.yield_to_scheduled = false;
        w.dags.insert("s".into(), true);
        let p = w.plan();
        assert!(p.to_pause.is_empty() && p.to_unpause.is_empty(), "{p:?}");
        assert!(p.releasable.contains("s"), "{p:?}");
        assert!(change_of(&p, "s")
            .is_none_or(|c| c.throttled && c.decision.state != BackfillState::Paused));
        // A run in flight on the paused copy (created as the throttle paused it): unpaused
        // by the pass, its run is counted already.
        w.runs.insert("s".into(), summary(1, 0, 0, 0));
        let p = w.plan();
        assert_eq!(p.to_unpause, vec!["s".to_owned()], "{p:?}");
        assert!(p.releasable.is_empty());
        // Its user paused it in Airflow (not the throttle): neither the pass nor the steering
        // touches it.
        w.rows[0].throttled = false;
        w.runs.clear();
        let p = w.plan();
        assert!(p.to_unpause.is_empty() && p.releasable.is_empty(), "{p:?}");
    }

    #[test]
    fn copies_paused_by_a_removed_throttle_are_released() {
        let mut s = row("s", BackfillState::Queued, 3);
        s.steered = true;
        s.throttled = true;
        let mut u = row("u", BackfillState::Paused, 3);
        u.user_paused = true;
        u.throttled = true;
        let mut w = World::new(vec![s, u]);
        w.throttle.yield_to_scheduled = false;
        w.dags.insert("s".into(), true);
        w.dags.insert("u".into(), true);
        let p = w.plan();
        assert_eq!(p.to_unpause, vec!["s".to_owned()], "{p:?}");
        assert!(change_of(&p, "s").is_some_and(|c| !c.throttled));
    }

    #[test]
    fn a_user_paused_copy_is_left_alone() {
        let mut r = row("b", BackfillState::Paused, 2);
        r.user_paused = true;
        let mut w = World::new(vec![r]);
        w.throttle.max_running_backfill_runs = Some(1);
        w.dags.insert("b".into(), true);
        let p = w.plan();
        assert!(p.to_pause.is_empty() && p.to_unpause.is_empty(), "{p:?}");
    }

    #[test]
    fn turns_of_gone_backfills_are_forgotten() {
        let mut w = World::new(vec![row("a", BackfillState::Running, 1)]);
        w.turn_ended.insert("a".into(), utc(2026, 1, 9, 0, 0));
        w.turn_ended.insert("gone".into(), utc(2026, 1, 9, 0, 0));
        let p = w.plan();
        assert!(p.turn_ended.contains_key("a"));
        assert!(!p.turn_ended.contains_key("gone"));
    }
}
