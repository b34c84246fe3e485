//! The statements behind steered copies (see `crate::steer`): which steered copies may get a
//! run now, what runs they have, and naming a copy's next run in its `dag` row.
//!
//! A pass reads both sets in one statement each, whatever the number of backfills (a join of
//! `backfilld_backfill` with Airflow's `dag` and `dag_run`); naming a run is one `UPDATE` of
//! the copy's own `dag` row, made by the leader only, per copy due a run.

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
             {} AS next_dagrun FROM backfilld_backfill b JOIN dag g ON g.dag_id = b.id WHERE {}",
            d.ts_text("g.next_dagrun"),
            self.due()
        );
        let rows: Vec<SteeredSql> = self.db.load(&sql, &[])?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(SteeredCopy {
                order: RunOrder::parse_stored(r.run_order.as_deref()),
                max_active_runs: u32::try_from(r.max_active_runs).unwrap_or(1),
                next_dagrun: r.next_dagrun.as_deref().map(parse_ts).transpose()?,
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
