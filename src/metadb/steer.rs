//! The statements behind steered copies (see `crate::steer`): which steered copies may get a
//! run now, what runs they have, and naming a copy's next run in its `dag` row.
//!
//! A pass reads both sets in one statement each, whatever the number of backfills (a join of
//! `backfilld_backfill` with Airflow's `dag` and `dag_run`); naming a run is one `UPDATE` of
//! the copy's own `dag` row, made by the leader only, per copy due a run. The live (queued +
//! running) runs of every copy, which the run budgets count, are one more statement over
//! Airflow's partial indexes of queued and running runs; it is also the cheap check between
//! passes that tells the leader a slot may have freed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::airflow::{AirflowSchema, Generation};
use super::pass::DagRunSql;
use super::{parse_ts, Arg, DbError, MetaDb};
use crate::reconcile::RunState;
use crate::schedule::RunInfo;
use crate::steer::{CopyRuns, RunOrder};

/// A steered backfill whose copy Airflow registered and nothing holds: not paused (by its
/// user, the throttle or a life-cycle action), not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeredCopy {
    /// The backfill id (the copy's `dag_id`).
    pub id: String,
    /// Its run order (never [`RunOrder::Catchup`]).
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
}

impl<'a> Steering<'a> {
    /// Wrap a connection to a detected Airflow schema.
    pub fn new(db: &'a mut MetaDb, schema: &'a AirflowSchema) -> Steering<'a> {
        Steering { db, schema }
    }

    /// The condition on `backfilld_backfill b` joined with the copy's `dag g` selecting
    /// steered backfills with a registered, unpaused copy that nothing holds.
    fn due(&self) -> String {
        format!(
            "b.run_order IS NOT NULL AND b.deleted = 0 \
             AND b.state IN ('submitted', 'queued', 'running') \
             AND b.user_paused = 0 AND b.pending_op IS NULL AND g.is_paused = {}",
            self.db.dialect().bool_lit(false)
        )
    }

    /// Every steered copy that may get a run now: one statement.
    pub fn copies(&mut self) -> Result<Vec<SteeredCopy>, DbError> {
        let d = self.db.dialect();
        let sql = format!(
            "SELECT b.id AS id, b.run_order AS run_order, b.max_active_runs AS max_active_runs, \
             {} AS next_dagrun, {} AS next_dagrun_due, b.dag_id AS dag_id, b.priority AS priority, \
             b.submitted_at AS submitted_at FROM backfilld_backfill b JOIN dag g ON g.dag_id = b.id \
             WHERE {}",
            d.ts_text("g.next_dagrun"),
            d.int("CASE WHEN g.next_dagrun_create_after IS NULL THEN 0 ELSE 1 END"),
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
                id: r.id,
            });
        }
        Ok(out)
    }

    /// The runs of every copy [`Steering::copies`] returns, by copy: one statement.
    pub fn runs(&mut self) -> Result<HashMap<String, CopyRuns>, DbError> {
        let d = self.db.dialect();
        let date = match self.schema.generation {
            Generation::V2 => "r.execution_date",
            Generation::V3 => "r.logical_date",
        };
        let sql = format!(
            "SELECT r.dag_id AS dag_id, {} AS logical_date, r.state AS state FROM dag_run r \
             JOIN backfilld_backfill b ON b.id = r.dag_id JOIN dag g ON g.dag_id = b.id WHERE {}",
            d.ts_text(date),
            self.due()
        );
        let rows: Vec<DagRunSql> = self.db.load(&sql, &[])?;
        let mut out: HashMap<String, CopyRuns> = HashMap::new();
        for r in rows {
            let runs = out.entry(r.dag_id).or_default();
            match RunState::parse(r.state.as_deref().unwrap_or("queued")) {
                RunState::Queued => runs.queued += 1,
                RunState::Running => runs.running += 1,
                RunState::Success | RunState::Failed => {}
            }
            if let Some(date) = r.logical_date {
                runs.dates.insert(parse_ts(&date)?);
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
}
