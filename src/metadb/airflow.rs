//! Airflow's own tables: detecting the schema generation, reading DAGs, runs and import
//! errors, and the one write issue 2 needs (a priority parse request for a new copy).
//!
//! backfilld never alters the schema of these tables.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use md5::{Digest, Md5};

use super::{parse_ts, Arg, DbError, IntRow, MetaDb, TextRow};
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
    /// Whether `revoked_token (jti)` exists (Airflow 3.2+: the api-server refuses a token
    /// whose `jti` is listed there, i.e. one its user signed out of).
    pub has_revoked_tokens: bool,
    /// Whether `dag_run.partition_key` exists (Airflow 3.2+: a run of a partitioned
    /// timetable names its partition).
    pub has_run_partitions: bool,
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
        let mut missing = Vec::new();
        for (table, cols) in required_columns(generation) {
            let present = db.columns(table)?;
            for col in *cols {
                if !present.iter().any(|p| p.eq_ignore_ascii_case(col)) {
                    missing.push(format!("{table}.{col}"));
                }
            }
        }
        if !missing.is_empty() {
            return Err(DbError::Schema(format!(
                "unsupported Airflow schema (alembic revision {revision}, {generation:?}-like): \
                 missing {}; backfilld supports Airflow 2.10/2.11 and 3.0 to 3.3 schemas",
                missing.join(", ")
            )));
        }
        let parse_cols = db.columns("dag_priority_parsing_request")?;
        let wanted: &[&str] = match generation {
            Generation::V2 => &["id", "fileloc"],
            Generation::V3 => &["id", "bundle_name", "relative_fileloc"],
        };
        let has_parse_requests = wanted
            .iter()
            .all(|c| parse_cols.iter().any(|p| p.eq_ignore_ascii_case(c)));
        let has_revoked_tokens = db
            .columns("revoked_token")?
            .iter()
            .any(|c| c.eq_ignore_ascii_case("jti"));
        let has_run_partitions = has("partition_key");
        Ok(AirflowSchema {
            generation,
            revision,
            has_parse_requests,
            has_revoked_tokens,
            has_run_partitions,
        })
    }
}

/// The columns of Airflow's tables that backfilld reads, per generation.
fn required_columns(g: Generation) -> &'static [(&'static str, &'static [&'static str])] {
    match g {
        Generation::V2 => &[
            (
                "dag",
                &[
                    "dag_id",
                    "is_active",
                    "is_paused",
                    "fileloc",
                    "next_dagrun",
                    "next_dagrun_data_interval_start",
                    "next_dagrun_data_interval_end",
                    "next_dagrun_create_after",
                ],
            ),
            (
                "dag_run",
                &[
                    "dag_id",
                    "execution_date",
                    "state",
                    "start_date",
                    "end_date",
                ],
            ),
            ("dag_code", &["fileloc", "source_code"]),
            ("serialized_dag", &["dag_id", "data"]),
            ("import_error", &["id", "filename", "stacktrace"]),
        ],
        Generation::V3 => &[
            (
                "dag",
                &[
                    "dag_id",
                    "is_stale",
                    "is_paused",
                    "fileloc",
                    "relative_fileloc",
                    "bundle_name",
                    "next_dagrun",
                    "next_dagrun_data_interval_start",
                    "next_dagrun_data_interval_end",
                    "next_dagrun_create_after",
                ],
            ),
            (
                "dag_run",
                &["dag_id", "logical_date", "state", "start_date", "end_date"],
            ),
            ("dag_version", &["id", "version_number"]),
            (
                "dag_code",
                &["dag_id", "source_code", "dag_version_id", "last_updated"],
            ),
            (
                "serialized_dag",
                &["dag_id", "data", "dag_version_id", "last_updated"],
            ),
            ("import_error", &["id", "filename", "stacktrace"]),
        ],
    }
}

pub use crate::rows::DagRow;

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

/// One run of a DAG as the web UI links to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLink {
    /// The run's logical date.
    pub logical_date: DateTime<Utc>,
    /// `dag_run.run_id`.
    pub run_id: String,
    /// Its failed task instances.
    pub failed_tasks: Vec<FailedTask>,
}

/// A failed task instance of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedTask {
    /// `task_instance.task_id`.
    pub task_id: String,
    /// `task_instance.map_index` (-1: not mapped).
    pub map_index: i64,
}

#[derive(QueryableByName)]
struct RunIdSql {
    #[diesel(sql_type = Nullable<Text>)]
    logical_date: Option<String>,
    #[diesel(sql_type = Text)]
    run_id: String,
}

#[derive(QueryableByName)]
struct FailedTaskSql {
    #[diesel(sql_type = Text)]
    run_id: String,
    #[diesel(sql_type = Text)]
    task_id: String,
    #[diesel(sql_type = BigInt)]
    map_index: i64,
}

/// A run's start and end, as text; also the tail of [`DagRunSql`].
#[derive(QueryableByName)]
struct SpanSql {
    #[diesel(sql_type = Nullable<Text>)]
    start_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    end_date: Option<String>,
}

/// A `dag_run` row: its DAG, logical date, state and span.
#[derive(QueryableByName)]
struct DagRunSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    logical_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(embed)]
    span: SpanSql,
}

/// Most ids one `IN (...)` list binds.
const IN_IDS: usize = 400;

#[derive(QueryableByName)]
struct OptTextRow {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
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

    /// `dag_run`'s logical date column: `execution_date` on Airflow 2.
    fn date_col(&self) -> &'static str {
        match self.schema.generation {
            Generation::V2 => "execution_date",
            Generation::V3 => "logical_date",
        }
    }

    /// The `dag` row of `dag_id`.
    pub fn dag(&mut self, dag_id: &str) -> Result<Option<DagRow>, DbError> {
        Ok(self.dags_of(&[dag_id])?.into_iter().next())
    }

    /// Every active DAG Airflow knows, by id (for the web UI's DAG picker).
    pub fn active_dags(&mut self) -> Result<Vec<DagRow>, DbError> {
        let d = self.db.dialect();
        let active = match self.schema.generation {
            Generation::V2 => d.bool_int("is_active"),
            Generation::V3 => format!("1 - {}", d.bool_int("is_stale")),
        };
        let sql = format!(
            "SELECT dag_id, {active} AS active, {} AS paused, fileloc FROM dag ORDER BY dag_id",
            d.bool_int("is_paused")
        );
        let rows: Vec<DagSql> = self.db.load(&sql, &[])?;
        Ok(rows
            .into_iter()
            .filter(|r| r.active == 1)
            .map(|r| DagRow {
                dag_id: r.dag_id,
                is_active: true,
                is_paused: r.paused == 1,
                fileloc: r.fileloc,
            })
            .collect())
    }

    /// The DAG as Airflow serialized it (`serialized_dag.data -> dag`), which holds its
    /// schedule (read with `schedule::Timetable::from_serialized_dag`).
    pub fn serialized_dag(&mut self, dag_id: &str) -> Result<Option<serde_json::Value>, DbError> {
        let d = self.db.dialect();
        // Airflow 3 keeps one row per DAG version; the newest version is the live one.
        let sql = match self.schema.generation {
            Generation::V2 => format!(
                "SELECT {} AS value FROM serialized_dag WHERE dag_id = ?",
                d.text("data")
            ),
            Generation::V3 => format!(
                "SELECT {} AS value FROM serialized_dag s JOIN dag_version v ON v.id = s.dag_version_id \
                 WHERE s.dag_id = ? ORDER BY v.version_number DESC, s.last_updated DESC",
                d.text("s.data")
            ),
        };
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
        Ok(data.get("dag").cloned())
    }

    /// The source code Airflow stored for the DAG's file.
    pub fn source_code(&mut self, dag_id: &str, fileloc: &str) -> Result<Option<String>, DbError> {
        let rows: Vec<TextRow> = match self.schema.generation {
            Generation::V2 => self.db.load(
                "SELECT source_code AS value FROM dag_code WHERE fileloc = ?",
                &[Arg::Text(fileloc.to_owned())],
            )?,
            Generation::V3 => self.db.load(
                "SELECT c.source_code AS value FROM dag_code c JOIN dag_version v ON v.id = c.dag_version_id \
                 WHERE c.dag_id = ? ORDER BY v.version_number DESC, c.last_updated DESC",
                &[Arg::Text(dag_id.to_owned())],
            )?,
        };
        Ok(rows.into_iter().next().map(|r| r.value))
    }

    /// Every run of `dag_id`.
    pub fn runs(&mut self, dag_id: &str) -> Result<Vec<RunObservation>, DbError> {
        Ok(self.runs_of(&[dag_id])?.remove(dag_id).unwrap_or_default())
    }

    /// The run id of each of `dag_id`'s runs by logical date, and its failed task instances
    /// (`upstream_failed` ones too): what the web UI links into Airflow with.
    pub fn run_links(&mut self, dag_id: &str) -> Result<Vec<RunLink>, DbError> {
        let d = self.db.dialect();
        let date_col = self.date_col();
        let sql = format!(
            "SELECT {} AS logical_date, run_id FROM dag_run WHERE dag_id = ?",
            d.ts_text(date_col)
        );
        let rows: Vec<RunIdSql> = self.db.load(&sql, &[Arg::Text(dag_id.to_owned())])?;
        let sql = format!(
            "SELECT run_id, task_id, {} AS map_index FROM task_instance \
             WHERE dag_id = ? AND state IN ('failed', 'upstream_failed') ORDER BY task_id, map_index",
            d.int("map_index")
        );
        let failed: Vec<FailedTaskSql> = self.db.load(&sql, &[Arg::Text(dag_id.to_owned())])?;
        let mut links = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(date) = r.logical_date else { continue };
            let failed_tasks = failed
                .iter()
                .filter(|t| t.run_id == r.run_id)
                .map(|t| FailedTask {
                    task_id: t.task_id.clone(),
                    map_index: t.map_index,
                })
                .collect();
            links.push(RunLink {
                logical_date: parse_ts(&date)?,
                run_id: r.run_id,
                failed_tasks,
            });
        }
        Ok(links)
    }

    /// Seconds each of the `limit` most recently finished successful runs of `dag_id` or of
    /// its backfills' copies took (start to end), newest first: the origin's side of a
    /// backfill's time estimate (a DAG that only ever runs in backfills has history too).
    pub fn recent_success_durations(
        &mut self,
        dag_id: &str,
        limit: usize,
    ) -> Result<Vec<f64>, DbError> {
        let d = self.db.dialect();
        let sql = format!(
            "SELECT {} AS start_date, {} AS end_date FROM dag_run \
             WHERE (dag_id = ? OR dag_id IN (SELECT id FROM backfilld_backfill WHERE dag_id = ?)) \
             AND state = 'success' AND start_date IS NOT NULL AND end_date IS NOT NULL \
             ORDER BY end_date DESC LIMIT {limit}",
            d.ts_text("start_date"),
            d.ts_text("end_date")
        );
        let rows: Vec<SpanSql> = self.db.load(
            &sql,
            &[Arg::Text(dag_id.to_owned()), Arg::Text(dag_id.to_owned())],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let (Some(start), Some(end)) = (r.start_date, r.end_date) {
                let secs = (parse_ts(&end)? - parse_ts(&start)?).num_milliseconds() as f64 / 1000.0;
                out.push(secs);
            }
        }
        Ok(out)
    }

    /// The `dag` rows of `dag_ids` (unknown ones left out); one statement per 400 ids.
    pub fn dags_of(&mut self, dag_ids: &[&str]) -> Result<Vec<DagRow>, DbError> {
        let d = self.db.dialect();
        let active = match self.schema.generation {
            Generation::V2 => d.bool_int("is_active"),
            Generation::V3 => format!("1 - {}", d.bool_int("is_stale")),
        };
        let mut out = Vec::with_capacity(dag_ids.len());
        for chunk in dag_ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT dag_id, {active} AS active, {} AS paused, fileloc FROM dag WHERE dag_id IN ({marks})",
                d.bool_int("is_paused")
            );
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            let rows: Vec<DagSql> = self.db.load(&sql, &args)?;
            out.extend(rows.into_iter().map(|r| DagRow {
                dag_id: r.dag_id,
                is_active: r.active == 1,
                is_paused: r.paused == 1,
                fileloc: r.fileloc,
            }));
        }
        Ok(out)
    }

    /// Every run of each of `dag_ids`, by DAG id; one statement per 400 ids.
    pub fn runs_of(
        &mut self,
        dag_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<RunObservation>>, DbError> {
        let d = self.db.dialect();
        let date_col = self.date_col();
        let mut out: std::collections::HashMap<String, Vec<RunObservation>> =
            std::collections::HashMap::new();
        for chunk in dag_ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT dag_id, {} AS logical_date, state, {} AS start_date, {} AS end_date FROM dag_run WHERE dag_id IN ({marks})",
                d.ts_text(date_col),
                d.ts_text("start_date"),
                d.ts_text("end_date")
            );
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            let rows: Vec<DagRunSql> = self.db.load(&sql, &args)?;
            let opt = |s: Option<String>| -> Result<Option<DateTime<Utc>>, DbError> {
                s.as_deref().map(parse_ts).transpose()
            };
            for r in rows {
                let Some(date) = r.logical_date else { continue };
                out.entry(r.dag_id).or_default().push(RunObservation {
                    logical_date: parse_ts(&date)?,
                    state: RunState::parse(r.state.as_deref().unwrap_or("queued")),
                    start_date: opt(r.span.start_date)?,
                    end_date: opt(r.span.end_date)?,
                });
            }
        }
        Ok(out)
    }

    /// Airflow's import error for a DAG file (absolute path), if it recorded one.
    ///
    /// Airflow 2 records the absolute path; Airflow 3 the path relative to the file's DAG
    /// bundle (and the bundle's name), so there the stored name must be a path suffix of
    /// `fileloc`.
    pub fn import_error(&mut self, fileloc: &str) -> Result<Option<String>, DbError> {
        match self.schema.generation {
            Generation::V2 => {
                let rows: Vec<OptTextRow> = self.db.load(
                    "SELECT stacktrace AS value FROM import_error WHERE filename = ? ORDER BY id DESC",
                    &[Arg::Text(fileloc.to_owned())],
                )?;
                Ok(rows.into_iter().next().map(|r| r.value.unwrap_or_default()))
            }
            Generation::V3 => {
                // LIKE wildcards in the name only widen the match; the suffix test decides.
                let base = fileloc.rsplit('/').next().unwrap_or(fileloc);
                let rows: Vec<ImportErrorSql> = self.db.load(
                    "SELECT filename, stacktrace FROM import_error WHERE filename = ? OR filename LIKE ? ORDER BY id DESC",
                    &[Arg::Text(base.to_owned()), Arg::Text(format!("%/{base}"))],
                )?;
                Ok(rows
                    .into_iter()
                    .find(|r| {
                        r.filename
                            .as_deref()
                            .is_some_and(|f| is_path_suffix(fileloc, f))
                    })
                    .map(|r| r.stacktrace.unwrap_or_default()))
            }
        }
    }

    /// Where each DAG bundle Airflow 3 parsed files from lives on this host, from the `dag`
    /// rows of that bundle (`fileloc` = bundle root + `relative_fileloc`).
    fn bundle_roots(&mut self) -> Result<Vec<(String, String)>, DbError> {
        let rows: Vec<BundleSql> = self.db.load(
            "SELECT bundle_name, fileloc, relative_fileloc FROM dag \
             WHERE fileloc IS NOT NULL AND relative_fileloc IS NOT NULL",
            &[],
        )?;
        let mut roots: Vec<(String, String)> = Vec::new();
        for r in rows {
            let (Some(fileloc), Some(rel)) = (r.fileloc, r.relative_fileloc) else {
                continue;
            };
            let Some(root) = fileloc
                .strip_suffix(rel.as_str())
                .map(|root| root.trim_end_matches('/').to_owned())
            else {
                continue;
            };
            if !roots.iter().any(|(b, p)| *b == r.bundle_name && *p == root) {
                roots.push((r.bundle_name, root));
            }
        }
        // The deepest root wins when bundles nest.
        roots.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));
        Ok(roots)
    }

    /// Whether Airflow revoked the api-server token `jti` (its user signed out), as the
    /// api-server checks on every request from Airflow 3.2. Expired entries Airflow has not yet
    /// cleaned up still count: the token's own `exp` was checked before.
    pub fn token_revoked(&mut self, jti: &str) -> Result<bool, DbError> {
        if !self.schema.has_revoked_tokens {
            return Ok(false);
        }
        let rows: Vec<IntRow> = self.db.load(
            "SELECT COUNT(*) AS value FROM revoked_token WHERE jti = ?",
            &[Arg::Text(jti.to_owned())],
        )?;
        Ok(rows.first().is_some_and(|r| r.value > 0))
    }

    /// Ask Airflow's DAG processor to parse `fileloc` next (Airflow 2.10+), so a new copy does
    /// not wait for the next directory listing. Returns whether a request was recorded.
    ///
    /// Airflow 2 keys a request by the md5 of the absolute path; Airflow 3 by the md5 of
    /// `<bundle>:<relative path>`, with the bundle found from the DAGs already parsed (a file in
    /// no known bundle gets no request and waits for the DAG processor's own listing).
    pub fn request_parse(&mut self, fileloc: &str) -> Result<bool, DbError> {
        if !self.schema.has_parse_requests {
            return Ok(false);
        }
        let (id, insert, args) = match self.schema.generation {
            Generation::V2 => (
                hex::encode(Md5::digest(fileloc.as_bytes())),
                "INSERT INTO dag_priority_parsing_request (id, fileloc) VALUES (?, ?)",
                vec![Arg::Text(fileloc.to_owned())],
            ),
            Generation::V3 => {
                let found = self.bundle_roots()?.into_iter().find_map(|(bundle, root)| {
                    fileloc
                        .strip_prefix(root.as_str())
                        .and_then(|rest| rest.strip_prefix('/'))
                        .map(|rel| (bundle, rel.to_owned()))
                });
                let Some((bundle, rel)) = found else {
                    return Ok(false);
                };
                (
                    hex::encode(Md5::digest(format!("{bundle}:{rel}").as_bytes())),
                    "INSERT INTO dag_priority_parsing_request (id, bundle_name, relative_fileloc) VALUES (?, ?, ?)",
                    vec![Arg::Text(bundle), Arg::Text(rel)],
                )
            }
        };
        let existing: Vec<TextRow> = self.db.load(
            "SELECT id AS value FROM dag_priority_parsing_request WHERE id = ?",
            &[Arg::Text(id.clone())],
        )?;
        if !existing.is_empty() {
            return Ok(true);
        }
        let mut all = vec![Arg::Text(id)];
        all.extend(args);
        match self.db.execute(insert, &all) {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique_violation() => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Task-instance states Airflow's "mark failed" sets to `failed` (the rest of the unfinished
/// ones become `skipped`).
const TI_RUNNING_STATES: &str = "'running', 'deferred', 'up_for_reschedule'";
/// Task-instance states that are finished (Airflow's `State.finished`).
const TI_FINISHED_STATES: &str = "'success', 'failed', 'skipped', 'upstream_failed', 'removed'";

/// Tables whose rows `airflow dags delete` removes by `dag_id`, children first (Airflow's
/// `delete_dag`: every model with a `dag_id` column except `log`, which it keeps for audit).
fn dag_id_tables(g: Generation) -> &'static [&'static str] {
    match g {
        Generation::V2 => &[
            "task_instance_note",
            "task_instance_history",
            "rendered_task_instance_fields",
            "task_map",
            "task_reschedule",
            "task_fail",
            "xcom",
            "sla_miss",
            "task_instance",
            "dag_run",
            "dag_warning",
            "job",
            "dag_owner_attributes",
            "dag_schedule_dataset_reference",
            "dag_schedule_dataset_alias_reference",
            "task_outlet_dataset_reference",
            "dag_tag",
            "serialized_dag",
            "dag",
        ],
        Generation::V3 => &[
            "task_instance_history",
            "rendered_task_instance_fields",
            "task_map",
            "xcom",
            "task_state_store",
            "task_instance",
            "dag_run",
            "backfill",
            "dag_warning",
            "job",
            "dag_owner_attributes",
            "dag_favorite",
            "dag_schedule_asset_reference",
            "dag_schedule_asset_alias_reference",
            "dag_schedule_asset_name_reference",
            "dag_schedule_asset_uri_reference",
            "task_outlet_asset_reference",
            "task_inlet_asset_reference",
            "dag_tag",
            "serialized_dag",
            "dag_code",
            "dag_version",
            "dag",
        ],
    }
}

/// Rows without a `dag_id` that hang off a run or task instance of the DAG: `(table, column,
/// parent query)`, deleted before their parents (PostgreSQL and MySQL would cascade; this
/// makes it explicit on every backend).
const CHILD_TABLES: &[(&str, &str, &str)] = &[
    (
        "dag_run_note",
        "dag_run_id",
        "SELECT id FROM dag_run WHERE dag_id = ?",
    ),
    (
        "task_instance_note",
        "ti_id",
        "SELECT id FROM task_instance WHERE dag_id = ?",
    ),
    (
        "task_reschedule",
        "ti_id",
        "SELECT id FROM task_instance WHERE dag_id = ?",
    ),
    (
        "hitl_detail",
        "ti_id",
        "SELECT id FROM task_instance WHERE dag_id = ?",
    ),
    (
        "hitl_detail_history",
        "ti_history_id",
        "SELECT task_instance_id FROM task_instance_history WHERE dag_id = ?",
    ),
    (
        "deadline",
        "dagrun_id",
        "SELECT id FROM dag_run WHERE dag_id = ?",
    ),
    (
        "backfill_dag_run",
        "backfill_id",
        "SELECT id FROM backfill WHERE dag_id = ?",
    ),
    (
        "deadline_alert",
        "serialized_dag_id",
        "SELECT id FROM serialized_dag WHERE dag_id = ?",
    ),
];

/// The reviewed writes backfilld makes to Airflow's tables for the life cycle of a copy. Each
/// touches only rows of the copy's own `dag_id`.
impl Airflow<'_> {
    /// Pause or unpause the DAGs `dag_ids`, one statement per 400. Returns how many have a
    /// row.
    pub fn set_paused_many(&mut self, dag_ids: &[&str], paused: bool) -> Result<usize, DbError> {
        let d = self.db.dialect();
        let mut n = 0;
        for chunk in dag_ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            n += self.db.execute(
                &format!(
                    "UPDATE dag SET is_paused = {} WHERE dag_id IN ({marks})",
                    d.bool_lit(paused)
                ),
                &args,
            )?;
        }
        Ok(n)
    }

    /// Running task instances of each of the DAGs `dag_ids` (Airflow refuses to delete a DAG
    /// while one runs; those with none are absent), one statement per 400.
    pub fn running_tasks_of(&mut self, dag_ids: &[&str]) -> Result<HashMap<String, i64>, DbError> {
        let mut out = HashMap::new();
        for chunk in dag_ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            let rows: Vec<DagCountSql> = self.db.load(
                &format!(
                    "SELECT dag_id, COUNT(*) AS n FROM task_instance WHERE dag_id IN ({marks}) \
                     AND state = 'running' GROUP BY dag_id"
                ),
                &args,
            )?;
            out.extend(rows.into_iter().map(|r| (r.dag_id, r.n)));
        }
        Ok(out)
    }

    /// Pause or unpause a DAG (`dag.is_paused`), as the UI toggle does. Returns whether the
    /// DAG has a row.
    pub fn set_paused(&mut self, dag_id: &str, paused: bool) -> Result<bool, DbError> {
        let d = self.db.dialect();
        let n = self.db.execute(
            &format!(
                "UPDATE dag SET is_paused = {} WHERE dag_id = ?",
                d.bool_lit(paused)
            ),
            &[Arg::Text(dag_id.to_owned())],
        )?;
        Ok(n > 0)
    }

    /// Airflow's "mark failed" on every unfinished run of `dag_id`: running (also deferred,
    /// up for reschedule) task instances become `failed`, the other unfinished ones
    /// `skipped`, and the run `failed`, all ended `now`. Finished runs are not touched.
    /// Returns how many runs it failed.
    pub fn fail_unfinished_runs(
        &mut self,
        dag_id: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, DbError> {
        let d = self.db.dialect();
        let ts = d.ts_param();
        let now = d.ts_value(now);
        let unfinished_runs =
            "SELECT run_id FROM dag_run WHERE dag_id = ? AND state NOT IN ('success', 'failed')";
        self.db.transaction(|db| {
            db.execute(
                &format!(
                    "UPDATE task_instance SET state = 'failed', end_date = {ts}                      WHERE dag_id = ? AND state IN ({TI_RUNNING_STATES}) AND run_id IN ({unfinished_runs})"
                ),
                &[
                    Arg::Text(now.clone()),
                    Arg::Text(dag_id.to_owned()),
                    Arg::Text(dag_id.to_owned()),
                ],
            )?;
            db.execute(
                &format!(
                    "UPDATE task_instance SET state = 'skipped', end_date = {ts}                      WHERE dag_id = ? AND (state IS NULL OR state NOT IN ({TI_FINISHED_STATES}))                      AND run_id IN ({unfinished_runs})"
                ),
                &[
                    Arg::Text(now.clone()),
                    Arg::Text(dag_id.to_owned()),
                    Arg::Text(dag_id.to_owned()),
                ],
            )?;
            db.execute(
                &format!(
                    "UPDATE dag_run SET state = 'failed', end_date = {ts}                      WHERE dag_id = ? AND state NOT IN ('success', 'failed')"
                ),
                &[Arg::Text(now), Arg::Text(dag_id.to_owned())],
            )
        })
    }

    /// The statements that remove every row Airflow holds for some DAGs, the way `airflow dags
    /// delete` does (its `log` rows are kept, as Airflow keeps them), for this Airflow's tables
    /// (those it does not have are skipped), each with `IN ({ids})` where the DAG ids go: one
    /// statement per table looked at.
    pub fn dag_row_deletes(&mut self) -> Result<Vec<String>, DbError> {
        let mut children = Vec::new();
        for (table, col, parent) in CHILD_TABLES {
            let cols = self.db.columns(table)?;
            if cols.iter().any(|c| c.eq_ignore_ascii_case(col)) {
                let parent = parent.replace("dag_id = ?", "dag_id IN ({ids})");
                children.push(format!("DELETE FROM {table} WHERE {col} IN ({parent})"));
            }
        }
        let mut tables = Vec::new();
        for table in dag_id_tables(self.schema.generation) {
            let cols = self.db.columns(table)?;
            if cols.iter().any(|c| c.eq_ignore_ascii_case("dag_id")) {
                tables.push(format!("DELETE FROM {table} WHERE dag_id IN ({{ids}})"));
            }
        }
        children.extend(tables);
        Ok(children)
    }

    /// Remove every row Airflow holds for the DAGs `dag_ids` with `deletes`
    /// ([`Airflow::dag_row_deletes`]): one transaction per 400 DAGs, each statement once for
    /// all of them. Returns how many rows went.
    pub fn delete_dag_rows_of(
        &mut self,
        deletes: &[String],
        dag_ids: &[&str],
    ) -> Result<usize, DbError> {
        let mut n = 0;
        for chunk in dag_ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            n += self.db.transaction(|db| {
                let mut n = 0;
                for sql in deletes {
                    n += db.execute(&sql.replace("{ids}", &marks), &args)?;
                }
                Ok::<_, DbError>(n)
            })?;
        }
        Ok(n)
    }
}

#[derive(QueryableByName)]
struct DagCountSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A row of Airflow's `import_error`: the file as Airflow stores its name, and the message
/// (`SELECT filename, stacktrace`). Shared with `metadb::pass`.
#[derive(QueryableByName)]
pub(super) struct ImportErrorSql {
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) filename: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) stacktrace: Option<String>,
}

#[derive(QueryableByName)]
struct BundleSql {
    #[diesel(sql_type = Text)]
    bundle_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    fileloc: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    relative_fileloc: Option<String>,
}

/// Whether `rel` names `path` relative to some directory (`path` ends with `/<rel>`).
pub fn is_path_suffix(path: &str, rel: &str) -> bool {
    path == rel
        || path
            .strip_suffix(rel)
            .is_some_and(|head| head.ends_with('/') && !rel.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_import_error_names_match_by_path_suffix() {
        let copy = "/opt/airflow/dags/backfill_user_dags/sales_backfill_1.py";
        assert!(is_path_suffix(
            copy,
            "backfill_user_dags/sales_backfill_1.py"
        ));
        assert!(is_path_suffix(copy, copy));
        assert!(!is_path_suffix(copy, "er_dags/sales_backfill_1.py"));
        assert!(!is_path_suffix(
            copy,
            "backfill_user_dags/sales_backfill_11.py"
        ));
    }
}
