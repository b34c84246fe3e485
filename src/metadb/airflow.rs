//! Airflow's own tables: detecting the schema generation, reading DAGs, runs and import
//! errors, and the one write issue 2 needs (a priority parse request for a new copy).
//!
//! backfilld never alters the schema of these tables.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use md5::{Digest, Md5};

use super::{parse_ts, Arg, DbError, MetaDb, TextRow};
use crate::reconcile::{RunObservation, RunState};

/// Which Airflow schema the metadata DB has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Airflow 2.x (`dag_run.execution_date`).
    V2,
    /// Airflow 3.x (`dag_run.logical_date`, DAG versions, bundles).
    V3,
}

/// What backfilld learned about the schema at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirflowSchema {
    /// Schema generation.
    pub generation: Generation,
    /// `alembic_version.version_num`.
    pub revision: String,
    /// Whether `dag_priority_parsing_request` exists (Airflow 2.10+).
    pub has_parse_requests: bool,
}

impl AirflowSchema {
    /// Inspect the live schema; refuse what backfilld does not know.
    pub fn detect(db: &mut MetaDb) -> Result<AirflowSchema, DbError> {
        let revision: Vec<TextRow> =
            db.load("SELECT version_num AS value FROM alembic_version", &[])
                .map_err(|e| DbError::Schema(format!(
                    "this does not look like an Airflow metadata DB (no alembic_version: {e}); run `airflow db migrate` first"
                )))?;
        let revision = revision
            .into_iter()
            .next()
            .map(|r| r.value)
            .ok_or_else(|| {
                DbError::Schema("alembic_version is empty: run `airflow db migrate`".into())
            })?;
        let run_cols = db.columns("dag_run")?;
        let has = |c: &str| run_cols.iter().any(|x| x == c);
        let generation = if has("execution_date") {
            Generation::V2
        } else if has("logical_date") && has("run_after") {
            Generation::V3
        } else {
            return Err(DbError::Schema(format!(
                "unknown Airflow schema (alembic revision {revision}): dag_run has neither execution_date nor logical_date/run_after"
            )));
        };
        let has_parse_requests = !db.columns("dag_priority_parsing_request")?.is_empty();
        Ok(AirflowSchema {
            generation,
            revision,
            has_parse_requests,
        })
    }
}

/// A row of Airflow's `dag` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagRow {
    /// The DAG id.
    pub dag_id: String,
    /// Whether Airflow still finds the DAG in its files.
    pub is_active: bool,
    /// Whether the DAG is paused.
    pub is_paused: bool,
    /// The file it was parsed from.
    pub fileloc: Option<String>,
}

#[derive(QueryableByName)]
struct DagSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    active: i64,
    #[diesel(sql_type = BigInt)]
    paused: i64,
    #[diesel(sql_type = Nullable<Text>)]
    fileloc: Option<String>,
}

#[derive(QueryableByName)]
struct RunSql {
    #[diesel(sql_type = Nullable<Text>)]
    logical_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    start_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    end_date: Option<String>,
}

#[derive(QueryableByName)]
struct OptTextRow {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// The timetable of a serialized DAG, in the `{"__type": <class>, "__var": {...}}` form.
///
/// Airflow 3 always stores `timetable`. Airflow 2 stores it only for timetables that a
/// `schedule_interval` cannot express; otherwise it keeps `schedule_interval` (a cron string or
/// preset, a `timedelta`, or null) and `timezone`, and this rebuilds the timetable Airflow 2's
/// `create_timetable` would make from them.
pub fn timetable_of(dag: &serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    if let Some(t) = dag.get("timetable") {
        return t.clone();
    }
    let timezone = match dag.get("timezone") {
        Some(serde_json::Value::String(tz)) => tz.clone(),
        Some(other) => other.to_string(),
        None => "UTC".to_owned(),
    };
    match dag.get("schedule_interval") {
        None => json!({"__type": "backfilld.UnknownSchedule", "__var": {}}),
        Some(serde_json::Value::Null) => {
            json!({"__type": "airflow.timetables.simple.NullTimetable", "__var": {}})
        }
        Some(serde_json::Value::String(s)) if s == "@once" => {
            json!({"__type": "airflow.timetables.simple.OnceTimetable", "__var": {}})
        }
        Some(serde_json::Value::String(s)) if s == "@continuous" => {
            json!({"__type": "airflow.timetables.simple.ContinuousTimetable", "__var": {}})
        }
        Some(serde_json::Value::String(cron)) => json!({
            "__type": "airflow.timetables.interval.CronDataIntervalTimetable",
            "__var": {"expression": cron, "timezone": timezone}
        }),
        Some(obj) => match (obj.get("__type").and_then(|t| t.as_str()), obj.get("__var")) {
            (Some("timedelta"), Some(seconds)) => json!({
                "__type": "airflow.timetables.interval.DeltaDataIntervalTimetable",
                "__var": {"delta": seconds}
            }),
            (Some("relativedelta"), Some(delta)) => json!({
                "__type": "airflow.timetables.interval.DeltaDataIntervalTimetable",
                "__var": {"delta": delta}
            }),
            _ => {
                json!({"__type": "backfilld.UnknownSchedule", "__var": {"schedule_interval": obj}})
            }
        },
    }
}

/// Read access to Airflow's tables, for one detected schema.
pub struct Airflow<'a> {
    db: &'a mut MetaDb,
    schema: &'a AirflowSchema,
}

impl<'a> Airflow<'a> {
    /// Wrap a connection whose schema was detected.
    pub fn new(db: &'a mut MetaDb, schema: &'a AirflowSchema) -> Airflow<'a> {
        Airflow { db, schema }
    }

    /// The `dag` row of `dag_id`.
    pub fn dag(&mut self, dag_id: &str) -> Result<Option<DagRow>, DbError> {
        let d = self.db.dialect();
        let active = match self.schema.generation {
            Generation::V2 => d.bool_int("is_active"),
            Generation::V3 => format!("1 - {}", d.bool_int("is_stale")),
        };
        let sql = format!(
            "SELECT dag_id, {active} AS active, {} AS paused, fileloc FROM dag WHERE dag_id = ?",
            d.bool_int("is_paused")
        );
        let rows: Vec<DagSql> = self.db.load(&sql, &[Arg::Text(dag_id.to_owned())])?;
        Ok(rows.into_iter().next().map(|r| DagRow {
            dag_id: r.dag_id,
            is_active: r.active == 1,
            is_paused: r.paused == 1,
            fileloc: r.fileloc,
        }))
    }

    /// The DAG's timetable as Airflow serialized it (`serialized_dag.data -> dag.timetable`).
    pub fn serialized_timetable(
        &mut self,
        dag_id: &str,
    ) -> Result<Option<serde_json::Value>, DbError> {
        let d = self.db.dialect();
        let order = match self.schema.generation {
            Generation::V2 => "",
            Generation::V3 => " ORDER BY created_at DESC",
        };
        let sql = format!(
            "SELECT {} AS value FROM serialized_dag WHERE dag_id = ?{order}",
            d.text("data")
        );
        let rows: Vec<OptTextRow> = self.db.load(&sql, &[Arg::Text(dag_id.to_owned())])?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let text = row.value.ok_or_else(|| {
            DbError::Data(format!(
                "serialized_dag of {dag_id} is compressed ([core] compress_serialized_dags); backfilld reads only uncompressed DAGs"
            ))
        })?;
        let data: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| DbError::Data(format!("serialized_dag of {dag_id} is not JSON: {e}")))?;
        Ok(data.get("dag").map(timetable_of))
    }

    /// The source code Airflow stored for the DAG's file.
    pub fn source_code(&mut self, dag_id: &str, fileloc: &str) -> Result<Option<String>, DbError> {
        let rows: Vec<TextRow> = match self.schema.generation {
            Generation::V2 => self.db.load(
                "SELECT source_code AS value FROM dag_code WHERE fileloc = ?",
                &[Arg::Text(fileloc.to_owned())],
            )?,
            Generation::V3 => self.db.load(
                "SELECT source_code AS value FROM dag_code WHERE dag_id = ? ORDER BY created_at DESC",
                &[Arg::Text(dag_id.to_owned())],
            )?,
        };
        Ok(rows.into_iter().next().map(|r| r.value))
    }

    /// Every run of `dag_id`.
    pub fn runs(&mut self, dag_id: &str) -> Result<Vec<RunObservation>, DbError> {
        let d = self.db.dialect();
        let date_col = match self.schema.generation {
            Generation::V2 => "execution_date",
            Generation::V3 => "logical_date",
        };
        let sql = format!(
            "SELECT {} AS logical_date, state, {} AS start_date, {} AS end_date FROM dag_run WHERE dag_id = ?",
            d.ts_text(date_col),
            d.ts_text("start_date"),
            d.ts_text("end_date")
        );
        let rows: Vec<RunSql> = self.db.load(&sql, &[Arg::Text(dag_id.to_owned())])?;
        let opt = |s: Option<String>| -> Result<Option<DateTime<Utc>>, DbError> {
            s.as_deref().map(parse_ts).transpose()
        };
        let mut runs = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(date) = r.logical_date else { continue };
            runs.push(RunObservation {
                logical_date: parse_ts(&date)?,
                state: RunState::parse(r.state.as_deref().unwrap_or("queued")),
                start_date: opt(r.start_date)?,
                end_date: opt(r.end_date)?,
            });
        }
        Ok(runs)
    }

    /// Airflow's import error for a DAG file, if it recorded one.
    pub fn import_error(&mut self, fileloc: &str) -> Result<Option<String>, DbError> {
        let rows: Vec<OptTextRow> = self.db.load(
            "SELECT stacktrace AS value FROM import_error WHERE filename = ? ORDER BY id DESC",
            &[Arg::Text(fileloc.to_owned())],
        )?;
        Ok(rows.into_iter().next().map(|r| r.value.unwrap_or_default()))
    }

    /// Ask Airflow's DAG processor to parse `fileloc` next (Airflow 2.10+), so a new copy does
    /// not wait for the next directory listing. Returns whether a request was recorded.
    pub fn request_parse(&mut self, fileloc: &str) -> Result<bool, DbError> {
        if !self.schema.has_parse_requests || self.schema.generation != Generation::V2 {
            return Ok(false);
        }
        let id = hex::encode(Md5::digest(fileloc.as_bytes()));
        let existing: Vec<TextRow> = self.db.load(
            "SELECT id AS value FROM dag_priority_parsing_request WHERE id = ?",
            &[Arg::Text(id.clone())],
        )?;
        if !existing.is_empty() {
            return Ok(true);
        }
        match self.db.execute(
            "INSERT INTO dag_priority_parsing_request (id, fileloc) VALUES (?, ?)",
            &[Arg::Text(id), Arg::Text(fileloc.to_owned())],
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique_violation() => Ok(true),
            Err(e) => Err(e),
        }
    }
}
