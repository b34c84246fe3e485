//! The logical dates of a requested range: computed natively by [`crate::schedule`], or, for a
//! timetable class it does not compute (a plugin's), asked of Airflow's Python
//! ([`crate::airflow_python`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ruling::Ruling;
use super::Engine;
use crate::airflow_python::AirflowPythonError;
use crate::authz::{self, Action};
use crate::request::{self, Parsed, ReasonCode, Rejection, Request};
use crate::schedule::{RunInfo, ScheduleError, Timetable, Zone};
use crate::spool::ClaimedFile;

impl Engine {
    /// Every logical date of the request's DAG (its serialized DAG `serialized`) in its range,
    /// ascending, or the refusal to give (more than `limit` dates, or a schedule that cannot
    /// be backfilled). Wall-clock bounds of `req` are first resolved in the DAG's zone.
    pub(super) fn range_dates(
        &mut self,
        req: &mut Request,
        serialized: &Value,
        limit: usize,
    ) -> Result<Vec<DateTime<Utc>>, Rejection> {
        let dag_id = req.dag_id.clone();
        let unsupported = |why: String| {
            Rejection::new(
                ReasonCode::UnsupportedSchedule,
                format!("DAG {dag_id:?}: {why}"),
            )
        };
        match Timetable::from_serialized_dag(serialized) {
            Ok(t) => match localize_bounds(req, t.request_zone(serialized))
                .and_then(|()| t.logical_dates(req.start, req.end, limit))
            {
                Ok(dates) => Ok(dates),
                Err(ScheduleError::TooMany { limit }) => Err(crate::guard::count_and_refuse(
                    serialized, req.start, req.end, limit,
                )),
                Err(e) => Err(unsupported(e.to_string())),
            },
            Err(ScheduleError::NotNative(class)) => {
                localize_bounds(req, dag_zone(serialized))
                    .map_err(|e| unsupported(e.to_string()))?;
                match self.airflow_runs(serialized, req.start, req.end, limit) {
                    Ok(runs) => Ok(runs.iter().map(|r| r.logical_date).collect()),
                    Err(AirflowPythonError::TooMany { .. }) => {
                        Err(crate::guard::too_many_dates(None, limit, limit))
                    }
                    Err(e) => Err(unsupported(format!(
                        "its timetable {class} is not one backfilld computes, so Airflow's own \
                         Python computes its dates, and that failed: {e}"
                    ))),
                }
            }
            Err(e) => Err(unsupported(e.to_string())),
        }
    }

    /// The runs of a serialized DAG's (non-native) timetable in `start..=end`, from Airflow.
    pub(super) fn airflow_runs(
        &mut self,
        serialized: &Value,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunInfo>, AirflowPythonError> {
        let timetable = serialized.get("timetable").unwrap_or(&Value::Null);
        self.airflow_python.runs(timetable, start, end, limit)
    }
}

impl Engine {
    /// Before a batch's write transaction: compute (and cache) the Airflow-computed runs of the
    /// authorised create requests among `files` whose DAG has a timetable backfilld does not
    /// compute, so that deciding them inside the transaction never starts Python while the
    /// write lock is held (on SQLite that would stall Airflow's scheduler). Best effort: any
    /// failure here is met again, and reported, by the decision itself.
    pub(super) fn prefetch_airflow_runs(&mut self, files: &[ClaimedFile]) {
        let limit = self.config.limits.max_dates_per_request;
        for file in files {
            let Ok(content) = &file.content else {
                continue;
            };
            let Ok(Parsed::Create(mut req)) =
                request::parse_any(&content.bytes, self.config.limits.max_active_runs)
            else {
                continue;
            };
            let Ok(Ruling::Admit((_, subject))) =
                self.subject(content.uid, req.on_behalf_of.as_deref())
            else {
                continue;
            };
            if authz::authorize(&subject, Action::Create, Some(&req.dag_id)).is_err() {
                continue;
            }
            let Ok(facts) = self.dag_facts(&req.dag_id) else {
                continue;
            };
            let Some(serialized) = facts.serialized.as_ref() else {
                continue;
            };
            if matches!(
                Timetable::from_serialized_dag(serialized),
                Err(ScheduleError::NotNative(_))
            ) && localize_bounds(&mut req, dag_zone(serialized)).is_ok()
            {
                let _ = self.airflow_runs(serialized, req.start, req.end, limit);
            }
        }
    }
}

/// The zone a request's wall-clock bounds are read in for a timetable backfilld does not
/// compute: the DAG's own `"timezone"` in its serialized form, else UTC.
fn dag_zone(serialized: &Value) -> Result<Zone, ScheduleError> {
    match serialized.get("timezone") {
        Some(timezone) => Zone::from_serialized(timezone),
        None => Ok(Zone::utc()),
    }
}

/// Resolve the wall-clock bounds of `req` (written without an offset) in `zone`.
fn localize_bounds(
    req: &mut Request,
    zone: Result<Zone, ScheduleError>,
) -> Result<(), ScheduleError> {
    let zone = zone?;
    if let Some(wall) = req.wall_clock.start.take() {
        req.start = zone.localize(wall.and_utc())?;
    }
    if let Some(wall) = req.wall_clock.end.take() {
        req.end = zone.localize(wall.and_utc())?;
    }
    Ok(())
}
