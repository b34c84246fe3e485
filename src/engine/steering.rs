//! Naming or creating the next runs of steered copies (see [`crate::steer`]): after each
//! reconcile pass, and between passes as soon as a copy's live runs changed, the leader gives
//! the steered copies that have room the runs the run budgets allow ([`crate::turns`]) and
//! either sets the `dag.next_dagrun` of each to the next date of its order (Airflow's
//! scheduler creates that run) or, once the scheduler created one run of the copy, creates
//! the granted runs itself, queued (`metadb::steer`'s `create_runs`). Without a run budget,
//! catchup copies get their runs created ahead of the scheduler the same way.
//!
//! A steered copy the throttle paused (registered paused under a run budget, or held idle)
//! and that nothing holds now (the last pass's [`crate::throttle::Verdict::Turn`]) is unpaused
//! here, in the same fenced transaction as the run it is given ([`crate::steer::decide`]):
//! the scheduler never sees it unpaused without a granted run, and the date Airflow planned
//! for it by itself is that run.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Engine;
use crate::airflow_python::AirflowPython;
use crate::metadb::airflow::Airflow;
use crate::metadb::lease::{Leases, LEADER};
use crate::metadb::steer::{LiveRuns, RunTemplate, Steering};
use crate::metadb::store::Store;
use crate::metadb::DbError;
use crate::schedule::{RunInfo, ScheduleError, Timetable};
use crate::steer::{self, CopyRuns, Step};
use crate::turns;

/// How long after its backfill was submitted a copy Airflow has not serialized yet keeps the
/// live check going (its first run, made by the scheduler once the copy is parsed, is then
/// seen within a check period instead of at the next pass).
const NEW_COPY_WATCH_SECS: i64 = 60;
/// How long after a scan decided requests the live check runs even with nothing steered yet
/// (a new copy has no `dag` row until Airflow parsed it), unless a steering step names or
/// creates a run first.
const NEW_REQUEST_WATCH: Duration = Duration::from_secs(30);

/// What the engine keeps of a steered backfill between passes: its dates in run order and
/// its copy's timetable (read once, from the copy's serialized DAG).
pub(super) struct SteerPlan {
    order: Vec<DateTime<Utc>>,
    runs: PlanRuns,
    /// Whether backfilld may create the copy's runs itself: not for a DAG with deadlines
    /// (Airflow 3.1+ creates a run's `deadline` rows with the run; a clone would have none).
    can_create: bool,
}

/// How a steered copy's runs are found: from its timetable computed natively, or, for a
/// timetable backfilld does not compute, the runs Airflow's Python gave for its dates.
enum PlanRuns {
    Native(Box<Timetable>),
    FromAirflow(HashMap<DateTime<Utc>, RunInfo>),
}

impl PlanRuns {
    fn run_info(&self, date: DateTime<Utc>) -> Result<RunInfo, String> {
        match self {
            PlanRuns::Native(timetable) => timetable.run_info(date).map_err(|e| e.to_string()),
            PlanRuns::FromAirflow(runs) => runs
                .get(&date)
                .copied()
                .ok_or_else(|| format!("Airflow's timetable has no run at {date}")),
        }
    }
}

/// What the leader keeps of steering between steps.
#[derive(Default)]
pub(super) struct SteerState {
    /// Plans by backfill id.
    plans: HashMap<String, SteerPlan>,
    /// When each backfill's last run was named (turns: longest ago first).
    last_named: HashMap<String, DateTime<Utc>>,
    /// Why a steered backfill waits for a turn, for its status.
    waiting: HashMap<String, String>,
    /// Every copy's live runs at the last step (a change means a slot may have freed).
    live_seen: Option<Vec<(String, LiveRuns)>>,
    /// Whether some steered copy has dates left to name, or a new copy is waiting for Airflow
    /// to parse it (the live check is worth running).
    pub(super) watch: bool,
    /// What the last live check cost, the steering step it led to included (or, after a
    /// pass, the pass's read of the live runs): paces the live check
    /// ([`steer::live_check_period`]).
    live_cost: Duration,
    /// Until when the live check runs for requests just decided (their copies' first runs),
    /// or until a steering step names or creates a run.
    new_until: Option<Instant>,
    /// The last pass found no backfill steering could take (`plan::maybe_steered`): the
    /// step after it need not read the copies.
    pub(super) none_after_pass: bool,
    /// The paused steered copies the last pass left to the steering to unpause
    /// ([`crate::throttle::Verdict::Turn`]); `None` before this leader's first pass (no
    /// paused copy is unpaused then).
    pub(super) releasable: Option<HashSet<String>>,
}

impl SteerState {
    /// How long to wait before the next live check.
    pub(super) fn check_period(&self) -> Duration {
        steer::live_check_period(self.live_cost)
    }

    /// A scan decided requests (new backfills among them, perhaps): check the live runs for
    /// a while, so a new copy's first run (the scheduler's, once Airflow parsed the copy) is
    /// seen within a check period rather than at the next pass, and its next runs created.
    pub(super) fn requests_decided(&mut self) {
        self.new_until = Some(Instant::now() + NEW_REQUEST_WATCH);
    }

    /// Whether the live check is worth running now.
    pub(super) fn watching(&self) -> bool {
        self.watch || self.new_until.is_some_and(|t| Instant::now() < t)
    }

    /// Why `id` waits for a turn, if it does.
    pub(super) fn waiting(&self, id: &str) -> Option<&str> {
        self.waiting.get(id).map(String::as_str)
    }
}

/// The live runs as a comparable list.
fn signature(live: &HashMap<String, LiveRuns>) -> Vec<(String, LiveRuns)> {
    let mut v: Vec<(String, LiveRuns)> = live.iter().map(|(k, l)| (k.clone(), l.clone())).collect();
    v.sort();
    v
}

impl Engine {
    /// Between passes: when a copy's live runs changed since the last steering step, steer
    /// again (a slot may have freed, or a named run started). Leader only.
    pub(super) fn steer_on_change(&mut self) {
        if self.leader_token.is_none() || !self.steer.watching() {
            return;
        }
        let Some(c) = self.conn.current() else {
            return;
        };
        let started = Instant::now();
        let read = Steering::new(&mut c.db, &c.schema).live();
        self.steer.live_cost = started.elapsed();
        let live = match read {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live runs of the copies");
                self.lost(&e);
                return;
            }
        };
        if self.steer.live_seen.as_ref() == Some(&signature(&live)) {
            return;
        }
        if let Err(e) = self.steer_copies() {
            tracing::warn!(error = %e, "cannot name the next run of steered copies; retrying");
            self.lost(&e);
        }
        // The whole check paces the next: the read and the step it led to.
        self.steer.live_cost = started.elapsed();
    }

    /// Name the next run of every steered copy the run budgets give a run now; returns how
    /// many were named. Leader only: the writes are fenced by the leader claim, in one
    /// transaction.
    pub(super) fn steer_copies(&mut self) -> Result<usize, DbError> {
        let host = self.host.clone();
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let ttl_ms = self.lease_ttl_ms();
        let limit = self.config.limits.max_dates_per_request;
        let budgets = turns::Budgets {
            global: self.config.throttle.max_running_backfill_runs,
            per_dag: self.config.throttle.max_running_per_dag,
        };
        // With `[reconcile] create_runs`, runs are created ahead of the scheduler; catchup
        // copies get that only while no run budget holds them.
        let create_runs = self.config.reconcile.create_runs;
        let budgeted = budgets.global.is_some() || budgets.per_dag.is_some();
        let catchup = create_runs && !budgeted;
        let c = self.conn.get()?;
        let releasable = self.steer.releasable.as_ref();
        // A paused copy only when the last pass left it to the steering (a hold keeps it).
        let copies: Vec<_> = if std::mem::take(&mut self.steer.none_after_pass) {
            Vec::new()
        } else {
            Steering::new(&mut c.db, &c.schema)
                .with_catchup(catchup)
                .with_paused(true)
                .copies()?
                .into_iter()
                .filter(|copy| !copy.paused || releasable.is_some_and(|r| r.contains(&copy.id)))
                .collect()
        };
        if copies.is_empty() && self.steer.last_named.is_empty() {
            // Nothing steered and no turn to remember: the live runs of every copy (a join
            // of every queued/running run with backfilld's rows, the costliest read of a pass
            // at 10,000 backfills) are not needed. Nothing watches them either.
            let st = &mut self.steer;
            st.plans.clear();
            st.waiting.clear();
            st.watch = false;
            st.live_seen = None;
            return Ok(0);
        }
        let started = Instant::now();
        let all_live = Steering::new(&mut c.db, &c.schema).live()?;
        self.steer.live_cost = started.elapsed();
        self.steer.live_seen = Some(signature(&all_live));
        let ids: HashSet<&str> = copies.iter().map(|copy| copy.id.as_str()).collect();
        let st = &mut self.steer;
        st.plans.retain(|id, _| ids.contains(id.as_str()));
        // A backfill held for a while (paused) keeps its last turn.
        st.last_named
            .retain(|id, _| ids.contains(id.as_str()) || all_live.contains_key(id));
        st.waiting.clear();
        st.watch = false;
        if copies.is_empty() {
            return Ok(0);
        }
        let steer_runs = Steering::new(&mut c.db, &c.schema)
            .with_catchup(catchup)
            .with_paused(true)
            .runs()?;
        let (runs, templates) = (&steer_runs.runs, &steer_runs.templates);
        let none = CopyRuns::default();
        for copy in &copies {
            if st.plans.contains_key(&copy.id) {
                continue;
            }
            match load_plan(
                &mut c.db,
                &c.schema,
                &mut self.airflow_python,
                &copy.id,
                limit,
            )? {
                Ok(plan) => {
                    st.plans.insert(copy.id.clone(), plan);
                }
                Err(why) => {
                    tracing::debug!(backfill = %copy.id, reason = %why, "steered copy not ready");
                    // A new copy Airflow has not parsed yet: keep checking, its first run
                    // comes soon.
                    if (Utc::now() - copy.submitted_at).num_seconds() < NEW_COPY_WATCH_SECS {
                        st.watch = true;
                    }
                }
            }
        }
        let now = Utc::now();
        let mut ready = Vec::new();
        for copy in &copies {
            let Some(plan) = st.plans.get(&copy.id) else {
                continue;
            };
            let copy_runs = runs.get(&copy.id).unwrap_or(&none);
            // A run named and not created yet counts as queued: the scheduler creates it at
            // its next loop. On a paused copy it is the date Airflow planned by itself, which
            // the scheduler creates only once the copy is unpaused: not live, still pending.
            let named = copy
                .next_dagrun
                .filter(|d| copy.next_dagrun_due && !copy_runs.dates.contains(d));
            let view = steer::CopyNow {
                kind: copy.order,
                order: &plan.order,
                runs: copy_runs,
                named,
                max_active_runs: copy.max_active_runs,
                ahead: steer::queue_ahead(copy.order, budgeted, copy.max_active_runs),
                // Only dates whose run is due now (as the scheduler would create it) count
                // and may be named or created: a date still in its interval waits.
                due_until: steer::newest_due(&plan.order, now, |d| {
                    plan.runs.run_info(d).ok().map(|i| i.run_after)
                }),
                can_create: create_runs && templates.contains_key(&copy.id) && plan.can_create,
                paused: copy.paused,
            };
            let pending = view.pending();
            ready.push((copy, plan, view, pending));
        }
        // The budgets count every copy's live runs: the steered ones as just read, the others
        // from the live check.
        let mut live = turns::Live::default();
        let mut add = |dag_id: &str, n: u32| {
            live.total = live.total.saturating_add(n);
            let e = live.per_dag.entry(dag_id.to_owned()).or_insert(0);
            *e = e.saturating_add(n);
        };
        let mut steered: Vec<turns::Steered> = Vec::with_capacity(ready.len());
        for (copy, _, view, pending) in &ready {
            let queued = view.runs.queued + u32::from(view.live_named().is_some());
            add(&copy.dag_id, queued + view.runs.running);
            steered.push(turns::Steered {
                id: copy.id.clone(),
                dag_id: copy.dag_id.clone(),
                queued,
                running: view.runs.running,
                pending: u32::try_from(*pending).unwrap_or(u32::MAX),
                max_active_runs: copy.max_active_runs,
                priority: copy.priority,
                last_turn: st
                    .last_named
                    .get(&copy.id)
                    .copied()
                    .unwrap_or(copy.submitted_at),
                batch: view.can_create,
                ahead: view.ahead,
            });
        }
        let counted: HashSet<&str> = ready.iter().map(|(copy, ..)| copy.id.as_str()).collect();
        for (id, l) in &all_live {
            if !counted.contains(id.as_str()) {
                add(&l.dag_id, l.queued + l.running);
            }
        }
        let grants = turns::grant(budgets, &live, &steered, 1);
        let mut due: Vec<(String, RunInfo)> = Vec::new();
        let mut release: HashSet<String> = HashSet::new();
        let mut create: Vec<(String, RunTemplate, Vec<RunInfo>)> = Vec::new();
        for ((copy, plan, view, pending), grant) in ready.iter().zip(grants) {
            st.watch |= *pending > 0;
            if let Some(why) = grant.waiting {
                st.waiting.insert(copy.id.clone(), why);
            }
            let template = templates.get(&copy.id);
            let decision = steer::decide(view, grant.runs);
            if decision.unpause {
                release.insert(copy.id.clone());
            }
            let step = decision.step;
            let info = |date| match plan.runs.run_info(date) {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::warn!(backfill = %copy.id, error = %e, "cannot compute a run of a steered copy");
                    None
                }
            };
            match (step, template) {
                (Step::Wait, _) => {}
                (Step::Name(date), _) => due.extend(info(date).map(|i| (copy.id.clone(), i))),
                (Step::Create(dates), Some(t)) => {
                    let infos: Vec<RunInfo> = dates.into_iter().filter_map(info).collect();
                    if !infos.is_empty() {
                        create.push((copy.id.clone(), t.clone(), infos));
                    }
                }
                (Step::Create(_), None) => {}
            }
        }
        if due.is_empty() && create.is_empty() && release.is_empty() {
            return Ok(0);
        }
        let schema = &c.schema;
        let named = c.db.transaction(|db| {
            if !Leases::new(db).fence(LEADER, &host, token, ttl_ms)? {
                return Err(DbError::NotHolder(LEADER));
            }
            // Unpaused first: the runs of a copy that could not be (its user paused it since
            // the read) are neither named nor created.
            let mut kept = HashSet::new();
            for id in &release {
                if Steering::new(db, schema).release(id, now)? {
                    tracing::info!(backfill = %id, "unpaused a steered copy for the run it was given");
                } else {
                    kept.insert(id.as_str());
                }
            }
            let due: Vec<&(String, RunInfo)> =
                due.iter().filter(|(id, _)| !kept.contains(id.as_str())).collect();
            for (id, info) in &due {
                Steering::new(db, schema).name_next_run(id, info)?;
                tracing::info!(backfill = %id, logical_date = %info.logical_date, "named the next run of a steered copy");
            }
            let mut n = due.len();
            for (id, template, infos) in &create {
                if kept.contains(id.as_str()) {
                    continue;
                }
                let made = Steering::new(db, schema)
                    .with_catchup(catchup)
                    .create_runs(id, template, infos, now)?;
                if let Some(first) = infos.first() {
                    tracing::info!(backfill = %id, runs = made, first = %first.logical_date, "created runs of a copy");
                }
                n += made;
            }
            Ok(n)
        })?;
        for (id, _) in &due {
            st.last_named.insert(id.clone(), now);
        }
        for (id, ..) in &create {
            st.last_named.insert(id.clone(), now);
        }
        if named > 0 {
            st.new_until = None;
        }
        for id in &release {
            st.last_named.insert(id.clone(), now);
        }
        Ok(named)
    }
}

/// The plan of a steered backfill: its dates from its row, the timetable from its copy's
/// serialized DAG (a timetable backfilld does not compute gives the runs Airflow's Python
/// computes over the backfill's dates, at most `limit`). `Ok(Err(why))` while Airflow has not
/// serialized the copy yet.
fn load_plan(
    db: &mut crate::metadb::MetaDb,
    schema: &crate::metadb::airflow::AirflowSchema,
    airflow_python: &mut AirflowPython,
    id: &str,
    limit: usize,
) -> Result<Result<SteerPlan, String>, DbError> {
    let Some(row) = Store::new(db).backfill(id)? else {
        return Ok(Err("no backfill row".to_owned()));
    };
    let Some(serialized) = Airflow::new(db, schema).serialized_dag(id)? else {
        return Ok(Err("the copy is not serialized yet".to_owned()));
    };
    let runs = match Timetable::from_serialized_dag(&serialized) {
        Ok(t) => PlanRuns::Native(Box::new(t)),
        Err(ScheduleError::NotNative(_)) => {
            let (Some(&first), Some(&last)) = (row.logical_dates.first(), row.logical_dates.last())
            else {
                return Ok(Err("the backfill has no dates".to_owned()));
            };
            let timetable = serialized
                .get("timetable")
                .unwrap_or(&serde_json::Value::Null);
            match airflow_python.runs(timetable, first, last, limit) {
                Ok(runs) => {
                    PlanRuns::FromAirflow(runs.into_iter().map(|r| (r.logical_date, r)).collect())
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let can_create = serialized
        .get("deadline")
        .is_none_or(|d| d.is_null() || d.as_array().is_some_and(Vec::is_empty));
    Ok(Ok(SteerPlan {
        order: row.options.run_order.arrange(&row.logical_dates),
        runs,
        can_create,
    }))
}
