//! Naming the next run of steered copies (see [`crate::steer`]): after each reconcile pass, the
//! leader sets the `dag.next_dagrun` of every steered copy that has room for a run to the next
//! date of its order, and Airflow's scheduler creates that run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{not_connected, Engine};
use crate::airflow_python::AirflowPython;
use crate::metadb::airflow::Airflow;
use crate::metadb::lease::{Leases, LEADER};
use crate::metadb::steer::Steering;
use crate::metadb::store::Store;
use crate::metadb::DbError;
use crate::schedule::{RunInfo, ScheduleError, Timetable};
use crate::steer::{self, CopyRuns};

/// What the engine keeps of a steered backfill between passes: its dates in run order and
/// its copy's timetable (read once, from the copy's serialized DAG).
pub(super) struct SteerPlan {
    order: Vec<DateTime<Utc>>,
    runs: PlanRuns,
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

impl Engine {
    /// Name the next run of every steered copy due one; returns how many were named. Leader
    /// only: the writes are fenced by the leader claim, in one transaction.
    pub(super) fn steer_copies(&mut self) -> Result<usize, DbError> {
        let host = self.host.clone();
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let ttl_ms = self.lease_ttl_ms();
        let limit = self.config.limits.max_dates_per_request;
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let copies = Steering::new(&mut c.db, &c.schema).copies()?;
        self.steer_plans
            .retain(|id, _| copies.iter().any(|copy| copy.id == *id));
        if copies.is_empty() {
            return Ok(0);
        }
        let runs = Steering::new(&mut c.db, &c.schema).runs()?;
        let none = CopyRuns::default();
        let mut due: Vec<(String, RunInfo)> = Vec::new();
        for copy in &copies {
            if !self.steer_plans.contains_key(&copy.id) {
                match load_plan(
                    &mut c.db,
                    &c.schema,
                    &mut self.airflow_python,
                    &copy.id,
                    limit,
                )? {
                    Ok(plan) => {
                        self.steer_plans.insert(copy.id.clone(), plan);
                    }
                    Err(why) => {
                        tracing::debug!(backfill = %copy.id, reason = %why, "steered copy not ready");
                        continue;
                    }
                }
            }
            let Some(plan) = self.steer_plans.get(&copy.id) else {
                continue;
            };
            let copy_runs = runs.get(&copy.id).unwrap_or(&none);
            let Some(date) = steer::next_date(&plan.order, copy_runs, copy.max_active_runs) else {
                continue;
            };
            if copy.next_dagrun == Some(date) {
                continue;
            }
            match plan.runs.run_info(date) {
                Ok(info) => due.push((copy.id.clone(), info)),
                Err(e) => {
                    tracing::warn!(backfill = %copy.id, error = %e, "cannot compute the next run of a steered copy");
                }
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let schema = &c.schema;
        c.db.transaction(|db| {
            if !Leases::new(db).fence(LEADER, &host, token, ttl_ms)? {
                return Err(DbError::NotHolder(LEADER));
            }
            for (id, info) in &due {
                Steering::new(db, schema).name_next_run(id, info)?;
                tracing::info!(backfill = %id, logical_date = %info.logical_date, "named the next run of a steered copy");
            }
            Ok(due.len())
        })
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
    Ok(Ok(SteerPlan {
        order: row.options.run_order.arrange(&row.logical_dates),
        runs,
    }))
}

/// Plans by backfill id.
pub(super) type SteerPlans = HashMap<String, SteerPlan>;
