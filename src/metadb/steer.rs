//! The statements behind steered copies (see `crate::steer`): which steered copies may get a
//! run now, what runs they have, unpausing a copy the throttle paused with the run it is given
//! ([`Steering::release`]), and naming a copy's next run in its `dag` row.
//!
//! A pass reads both sets in one statement each, whatever the number of backfills (a join of
//! `backfilld_backfill` with Airflow's `dag` and `dag_run`); naming a run is one `UPDATE` of
//! the copy's own `dag` row, made by the leader only, per copy due a run. The live (queued +
//! running) runs of every copy, which the run budgets count, are one more statement over
//! Airflow's partial indexes of queued and running runs; it is also the cheap check between
//! passes that tells the leader a slot may have freed.
//!
//! Creating a copy's runs ([`Steering::create_runs`], see `crate::steer::decide`): each new run is
//! an `INSERT ... SELECT` of the copy's *template* run (one the scheduler created for the copy
//! itself through Airflow's `create_dagrun`), every column copied as the scheduler wrote it
//! (run type, log template, conf, the creating job, external trigger on 2.x, trigger and
//! triggering user on 3.x) except those of the new date and of a new run: `run_id` (Airflow's
//! `<run_type>__<date>`), the logical date, the data interval and `run_after` (as the
//! scheduler names them), state `queued`, `queued_at`/`updated_at` now, no start, end or
//! scheduling decision, `clear_number` 0, `span_status` `not_started`, no
//! `scheduled_by_job_id`, on 2.x no `dag_hash`, and on 3.x what `_create_orm_dagrun` reads
//! at creation: the DAG's latest version (`created_dag_version_id`), the `dag` row's bundle
//! version (none if the template has none) and a `context_carrier` of its own (empty on
//! 3.0-3.1; on 3.2+ a fresh unsampled trace context, as Airflow makes with tracing off); on
//! 3.2+ no partition (a copy whose scheduler runs name one gets no template). The task instances are the scheduler's to
//! create: a 2.x run whose `dag_hash` is not the serialized DAG's, and a 3.x run with no task
//! instance of the latest DAG version, get `verify_integrity` (every task instance) the first
//! time the scheduler schedules them, before anything reads their task instances. The insert
//! is skipped when the copy already has a run of that date or run id, or the date is the one
//! the copy's `dag` row names next (the scheduler's), or the backfill stopped being due (its
//! row is re-checked in the same statement); the copy's `dag` row is locked first (the
//! scheduler locks it, skipping locked rows, before it creates runs), so the scheduler and
//! backfilld never create the same date.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::airflow::{AirflowSchema, Generation};
use super::{parse_ts, Arg, DbError, MetaDb};
use crate::reconcile::RunState;
use crate::schedule::RunInfo;
use crate::steer::{self, CopyRuns, RunOrder};

/// An empty dict as Airflow 3's `ExtendedJSON` stores it (`BaseSerialization.serialize({})`):
/// a new run's `context_carrier` on Airflow 3.0-3.1.
const EMPTY_CARRIER: &str = r#"{"__var": {}, "__type": "dict"}"#;

/// A new run's `context_carrier` on Airflow 3.2+ (the releases with `dag_run.partition_key`),
/// which gives every run its own W3C trace context at creation (`new_dagrun_trace_carrier`):
/// a random trace and span id, not sampled (what Airflow writes with OpenTelemetry off; with
/// it on, Airflow's sampler would decide).
fn fresh_carrier() -> Result<String, DbError> {
    let mut ids = [0u8; 24];
    getrandom::fill(&mut ids).map_err(|e| DbError::Data(format!("no random trace id: {e}")))?;
    let hex: String = ids.iter().map(|b| format!("{b:02x}")).collect();
    let (trace, span) = hex.split_at(32);
    Ok(format!(
        r#"{{"__var": {{"traceparent": "00-{trace}-{span}-00"}}, "__type": "dict"}}"#
    ))
}

/// A steered backfill whose copy Airflow registered and nothing holds: not paused (by its
/// user, the throttle or a life-cycle action), not finished; with [`Steering::with_paused`]
/// also one the throttle paused (`throttled`), which the steering unpauses with its next run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeredCopy {
    /// The backfill id (the copy's `dag_id`).
    pub id: String,
    /// Its run order ([`RunOrder::Catchup`] only with [`Steering::with_catchup`]).
    pub order: RunOrder,
    /// The copy's `max_active_runs`.
    pub max_active_runs: u32,
    /// The run the copy's `dag` row names next, if any.
    pub next_dagrun: Option<DateTime<Utc>>,
    /// Whether the scheduler will create that run (`next_dagrun_create_after` set).
    pub next_dagrun_due: bool,
    /// Its origin DAG.
    pub dag_id: String,
    /// The request's `priority`.
    pub priority: i32,
    /// When the backfill was accepted.
    pub submitted_at: DateTime<Utc>,
    /// Whether its copy is paused (by the throttle: only with [`Steering::with_paused`]).
    pub paused: bool,
}

/// The live runs of one copy: its origin DAG, queued and running runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveRuns {
    /// The copy's origin DAG.
    pub dag_id: String,
    /// Runs queued.
    pub queued: u32,
    /// Runs running.
    pub running: u32,
}

#[derive(QueryableByName)]
struct SteeredSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_order: Option<String>,
    #[diesel(sql_type = BigInt)]
    max_active_runs: i64,
    #[diesel(sql_type = Nullable<Text>)]
    next_dagrun: Option<String>,
    #[diesel(sql_type = BigInt)]
    next_dagrun_due: i64,
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    priority: i64,
    #[diesel(sql_type = Text)]
    submitted_at: String,
    #[diesel(sql_type = BigInt)]
    paused: i64,
}

/// A run of a copy that the scheduler created itself, new runs are cloned from (see
/// [`Steering::create_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTemplate {
    /// Its `dag_run.id`.
    pub id: i64,
    /// Its `run_type`.
    pub run_type: String,
}

/// The runs of the copies [`Steering::copies`] returns.
#[derive(Debug, Clone, Default)]
pub struct SteerRuns {
    /// Their runs, by copy.
    pub runs: HashMap<String, CopyRuns>,
    /// A template run by copy, for the copies that have one.
    pub templates: HashMap<String, RunTemplate>,
}

#[derive(QueryableByName)]
struct CopyRunSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    logical_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    run_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    run_type: Option<String>,
}

#[derive(QueryableByName)]
struct LiveSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Steered copies' reads and writes.
pub struct Steering<'a> {
    db: &'a mut MetaDb,
    schema: &'a AirflowSchema,
    catchup: bool,
    paused: bool,
}

impl<'a> Steering<'a> {
    /// Wrap a connection to a detected Airflow schema.
    pub fn new(db: &'a mut MetaDb, schema: &'a AirflowSchema) -> Steering<'a> {
        Steering {
            db,
            schema,
            catchup: false,
            paused: false,
        }
    }

    /// Include in [`Steering::copies`] and [`Steering::runs`] the steered copies the throttle
    /// paused (`backfilld_backfill.throttled`): registered paused under a run budget, or
    /// held idle for `yield_to_scheduled` or the pool share; the steering unpauses them when
    /// it gives them a run ([`Steering::release`]).
    pub fn with_paused(mut self, paused: bool) -> Steering<'a> {
        self.paused = paused;
        self
    }

    /// Include catchup copies in [`Steering::copies`] and [`Steering::runs`] (backfilld then
    /// creates their runs ahead of the scheduler once they have a template run; only while no
    /// run budget is set, as budgets hold catchup copies by pausing them whole), those the last
    /// reconcile pass counted dates without a run for.
    pub fn with_catchup(mut self, catchup: bool) -> Steering<'a> {
        self.catchup = catchup;
        self
    }

    /// The condition on `backfilld_backfill b` joined with the copy's `dag g` selecting
    /// steered backfills (and catchup ones with [`Steering::with_catchup`]) with a
    /// registered, unpaused copy that nothing holds.
    fn due(&self) -> String {
        // A catchup copy only while the last pass saw dates without a run: a pass at scale
        // does not read the runs of every copy whose dates all have one.
        let order = if self.catchup {
            "(b.run_order IS NOT NULL OR b.dates_succeeded + b.dates_failed + b.dates_running \
             + b.dates_queued < b.dates_total) AND "
        } else {
            "b.run_order IS NOT NULL AND "
        };
        let d = self.db.dialect();
        let unpaused = if self.paused {
            format!(
                "(g.is_paused = {} OR (b.run_order IS NOT NULL AND b.throttled = 1))",
                d.bool_lit(false)
            )
        } else {
            format!("g.is_paused = {}", d.bool_lit(false))
        };
        format!(
            "{order}b.deleted = 0 \
             AND b.state IN ('submitted', 'queued', 'running') \
             AND b.user_paused = 0 AND b.pending_op IS NULL AND {unpaused}"
        )
    }

    fn date_column(&self) -> &'static str {
        match self.schema.generation {
            Generation::V2 => "execution_date",
            Generation::V3 => "logical_date",
        }
    }

    /// Every steered copy that may get a run now: one statement.
    pub fn copies(&mut self) -> Result<Vec<SteeredCopy>, DbError> {
        let d = self.db.dialect();
        let sql = format!(
            "SELECT b.id AS id, b.run_order AS run_order, b.max_active_runs AS max_active_runs, \
             {} AS next_dagrun, {} AS next_dagrun_due, b.dag_id AS dag_id, b.priority AS priority, \
             b.submitted_at AS submitted_at, {} AS paused FROM backfilld_backfill b \
             JOIN dag g ON g.dag_id = b.id WHERE {}",
            d.ts_text("g.next_dagrun"),
            d.int("CASE WHEN g.next_dagrun_create_after IS NULL THEN 0 ELSE 1 END"),
            d.int(&format!(
                "CASE WHEN g.is_paused = {} THEN 0 ELSE 1 END",
                d.bool_lit(false)
            )),
            self.due()
        );
        let rows: Vec<SteeredSql> = self.db.load(&sql, &[])?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(SteeredCopy {
                order: RunOrder::parse_stored(r.run_order.as_deref()),
                max_active_runs: u32::try_from(r.max_active_runs).unwrap_or(1),
                next_dagrun: r.next_dagrun.as_deref().map(parse_ts).transpose()?,
                next_dagrun_due: r.next_dagrun_due != 0,
                dag_id: r.dag_id,
                priority: i32::try_from(r.priority).unwrap_or(0),
                submitted_at: parse_ts(&r.submitted_at)?,
                paused: r.paused != 0,
                id: r.id,
            });
        }
        Ok(out)
    }

    /// The runs of every copy [`Steering::copies`] returns, by copy, and each copy's template
    /// run: one statement. A template is the copy's first `scheduled` run whose run id is the
    /// one Airflow gives its date ([`steer::run_id`]), i.e. one the scheduler created, and
    /// that names no partition (a partitioned timetable's runs each name their own, which
    /// backfilld does not compute: such a copy gets its runs from the scheduler).
    pub fn runs(&mut self) -> Result<SteerRuns, DbError> {
        let d = self.db.dialect();
        // A partitioned run reads as run type `partitioned`, never a template.
        let run_type = if self.schema.has_run_partitions {
            "CASE WHEN r.partition_key IS NULL THEN r.run_type ELSE 'partitioned' END"
        } else {
            "r.run_type"
        };
        let sql = format!(
            "SELECT {} AS id, r.dag_id AS dag_id, {} AS logical_date, r.state AS state, \
             r.run_id AS run_id, {run_type} AS run_type FROM dag_run r \
             JOIN backfilld_backfill b ON b.id = r.dag_id JOIN dag g ON g.dag_id = b.id WHERE {} \
             ORDER BY r.id",
            d.int("r.id"),
            d.ts_text(&format!("r.{}", self.date_column())),
            self.due()
        );
        let rows: Vec<CopyRunSql> = self.db.load(&sql, &[])?;
        let mut out = SteerRuns::default();
        for r in rows {
            let runs = out.runs.entry(r.dag_id.clone()).or_default();
            match RunState::parse(r.state.as_deref().unwrap_or("queued")) {
                RunState::Queued => runs.queued += 1,
                RunState::Running => runs.running += 1,
                RunState::Success | RunState::Failed => {}
            }
            let Some(date) = r.logical_date.as_deref().map(parse_ts).transpose()? else {
                continue;
            };
            runs.dates.insert(date);
            if let (Some(run_id), Some(run_type)) = (r.run_id, r.run_type) {
                if run_type == "scheduled"
                    && run_id == steer::run_id(&run_type, date)
                    && !out.templates.contains_key(&r.dag_id)
                {
                    out.templates
                        .insert(r.dag_id, RunTemplate { id: r.id, run_type });
                }
            }
        }
        Ok(out)
    }

    /// The live (queued or running) runs of every backfill's copy, steered or not, by copy:
    /// one statement over Airflow's partial indexes of queued and running runs.
    pub fn live(&mut self) -> Result<HashMap<String, LiveRuns>, DbError> {
        let sql = "SELECT r.dag_id AS id, b.dag_id AS dag_id, r.state AS state, COUNT(*) AS n \
                   FROM dag_run r JOIN backfilld_backfill b ON b.id = r.dag_id \
                   WHERE (r.state = 'queued' OR r.state = 'running') \
                   GROUP BY r.dag_id, b.dag_id, r.state";
        let rows: Vec<LiveSql> = self.db.load(sql, &[])?;
        let mut out: HashMap<String, LiveRuns> = HashMap::new();
        for r in rows {
            let n = u32::try_from(r.n).unwrap_or(0);
            let live = out.entry(r.id).or_default();
            live.dag_id = r.dag_id;
            match r.state.as_deref() {
                Some("running") => live.running += n,
                _ => live.queued += n,
            }
        }
        Ok(out)
    }

    /// Unpause the copy `copy_id` the throttle paused, to give it a run now (call in the
    /// leader's fenced transaction, before naming or creating that run): only while its
    /// backfill is still marked `throttled`, not paused by its user, with no life-cycle action
    /// in flight and not finished (re-checked in the statement), so a user's pause made since
    /// the steering read is never overridden. Clears `throttled` (the copy is no longer the
    /// throttle's pause) and moves the row's version stamp (`updated_at`), so the next pass
    /// reads it again. Returns whether the copy was unpaused.
    pub fn release(&mut self, copy_id: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
        let d = self.db.dialect();
        let held = "SELECT 1 FROM backfilld_backfill b WHERE b.id = ? AND b.throttled = 1 \
                    AND b.user_paused = 0 AND b.pending_op IS NULL AND b.deleted = 0 \
                    AND b.state IN ('submitted', 'queued', 'running')";
        let n = self.db.execute(
            &format!(
                "UPDATE dag SET is_paused = {} WHERE dag_id = ? AND is_paused = {} \
                 AND EXISTS ({held})",
                d.bool_lit(false),
                d.bool_lit(true)
            ),
            &[Arg::Text(copy_id.to_owned()), Arg::Text(copy_id.to_owned())],
        )?;
        if n == 0 {
            return Ok(false);
        }
        self.db.execute(
            "UPDATE backfilld_backfill SET throttled = 0, updated_at = ? WHERE id = ?",
            &[
                Arg::Text(super::store::stored_ts(now)),
                Arg::Text(copy_id.to_owned()),
            ],
        )?;
        Ok(true)
    }

    /// Hand the paused copy `copy_id` of a resumed steered backfill back to the throttle
    /// (`throttled`, and a new version stamp so the next pass reads the row again): the
    /// steering unpauses it with its next run, or the pass at once if it has runs in flight.
    pub fn hand_back(&mut self, copy_id: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_backfill SET throttled = 1, updated_at = ? WHERE id = ?",
            &[
                Arg::Text(super::store::stored_ts(now)),
                Arg::Text(copy_id.to_owned()),
            ],
        )?;
        Ok(())
    }

    /// Name `run` as the copy's next run (`dag.next_dagrun`, its data interval and
    /// `next_dagrun_create_after`): the scheduler creates it at its next loop. Returns whether
    /// the copy has a row.
    pub fn name_next_run(&mut self, copy_id: &str, run: &RunInfo) -> Result<bool, DbError> {
        let d = self.db.dialect();
        let ts = d.ts_param();
        let n = self.db.execute(
            &format!(
                "UPDATE dag SET next_dagrun = {ts}, next_dagrun_data_interval_start = {ts}, \
                 next_dagrun_data_interval_end = {ts}, next_dagrun_create_after = {ts} \
                 WHERE dag_id = ?"
            ),
            &[
                Arg::Text(d.ts_value(run.logical_date)),
                Arg::Text(d.ts_value(run.interval_start)),
                Arg::Text(d.ts_value(run.interval_end)),
                Arg::Text(d.ts_value(run.run_after)),
                Arg::Text(copy_id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Create the runs of `runs` for the copy `copy_id`, queued, each cloned from `template`
    /// (see the module doc); returns how many were created. One statement to list
    /// `dag_run`'s columns, one to lock the copy's `dag` row, one insert per run. Call in the
    /// leader's fenced transaction.
    pub fn create_runs(
        &mut self,
        copy_id: &str,
        template: &RunTemplate,
        runs: &[RunInfo],
        now: DateTime<Utc>,
    ) -> Result<usize, DbError> {
        if runs.is_empty() {
            return Ok(0);
        }
        let d = self.db.dialect();
        let ts = d.ts_param();
        let columns = self.db.columns("dag_run")?;
        if let Some(bad) = columns.iter().find(|c| {
            c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        }) {
            return Err(DbError::Data(format!("unexpected dag_run column {bad:?}")));
        }
        let id_expr = self.db.new_id_expr("dag_run")?;
        let date_col = self.date_column();
        // Lock the copy's `dag` row: the scheduler creates a DAG's runs holding it.
        self.db.execute(
            "UPDATE dag SET next_dagrun = next_dagrun WHERE dag_id = ?",
            &[Arg::Text(copy_id.to_owned())],
        )?;
        let mut created = 0;
        for run in runs {
            let run_id = steer::run_id(&template.run_type, run.logical_date);
            let carrier = if self.schema.has_run_partitions {
                fresh_carrier()?
            } else {
                EMPTY_CARRIER.to_owned()
            };
            let mut cols = Vec::with_capacity(columns.len());
            let mut exprs = Vec::with_capacity(columns.len());
            let mut args = Vec::new();
            for c in &columns {
                let expr = match c.as_str() {
                    "id" => match &id_expr {
                        Some(e) => e.clone(),
                        None => continue,
                    },
                    "run_id" => {
                        args.push(Arg::Text(run_id.clone()));
                        "?".to_owned()
                    }
                    c if c == date_col => {
                        args.push(Arg::Text(d.ts_value(run.logical_date)));
                        ts.to_owned()
                    }
                    "data_interval_start" => {
                        args.push(Arg::Text(d.ts_value(run.interval_start)));
                        ts.to_owned()
                    }
                    "data_interval_end" => {
                        args.push(Arg::Text(d.ts_value(run.interval_end)));
                        ts.to_owned()
                    }
                    "run_after" => {
                        args.push(Arg::Text(d.ts_value(run.run_after)));
                        ts.to_owned()
                    }
                    "queued_at" | "updated_at" => {
                        args.push(Arg::Text(d.ts_value(now)));
                        ts.to_owned()
                    }
                    "state" => "'queued'".to_owned(),
                    "span_status" => "'not_started'".to_owned(),
                    "clear_number" => "0".to_owned(),
                    // Airflow 3 gives a new run the DAG's latest version (by `created_at`,
                    // `DagVersion.get_latest_version`), the bundle version its `dag` row
                    // holds (none when the template has none: versioning disabled or an
                    // unversioned bundle) and a trace carrier of its own.
                    "created_dag_version_id" => "COALESCE((SELECT v.id FROM dag_version v \
                         WHERE v.dag_id = t.dag_id ORDER BY v.created_at DESC LIMIT 1), \
                         t.created_dag_version_id)"
                        .to_owned(),
                    "bundle_version" => "CASE WHEN t.bundle_version IS NULL THEN NULL ELSE \
                         (SELECT g.bundle_version FROM dag g WHERE g.dag_id = t.dag_id) END"
                        .to_owned(),
                    "context_carrier" => d.json_lit(&carrier),
                    "start_date"
                    | "partition_key"
                    | "partition_date"
                    | "end_date"
                    | "last_scheduling_decision"
                    | "dag_hash"
                    | "scheduled_by_job_id" => "NULL".to_owned(),
                    other => format!("t.{other}"),
                };
                cols.push(c.as_str());
                exprs.push(expr);
            }
            let sql = format!(
                "INSERT INTO dag_run ({}) SELECT {} FROM dag_run t \
                 WHERE t.id = ? AND t.dag_id = ? \
                 AND NOT EXISTS (SELECT 1 FROM dag_run x WHERE x.dag_id = ? \
                 AND ({} = {} OR x.run_id = ?)) \
                 AND NOT EXISTS (SELECT 1 FROM dag n WHERE n.dag_id = ? \
                 AND n.next_dagrun_create_after IS NOT NULL AND {} = {}) \
                 AND EXISTS (SELECT 1 FROM backfilld_backfill b JOIN dag g ON g.dag_id = b.id \
                 WHERE b.id = ? AND {})",
                cols.join(", "),
                exprs.join(", "),
                d.ts_order(&format!("x.{date_col}")),
                d.ts_order(ts),
                d.ts_order("n.next_dagrun"),
                d.ts_order(ts),
                self.due()
            );
            let date = d.ts_value(run.logical_date);
            args.extend([
                Arg::Int(template.id),
                Arg::Text(copy_id.to_owned()),
                Arg::Text(copy_id.to_owned()),
                Arg::Text(date.clone()),
                Arg::Text(run_id),
                Arg::Text(copy_id.to_owned()),
                Arg::Text(date),
                Arg::Text(copy_id.to_owned()),
            ]);
            created += self.db.execute(&sql, &args)?;
        }
        Ok(created)
    }
}
