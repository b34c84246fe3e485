//! The seed import job's tables (`backfilld_import`, `backfilld_import_batch`) and the
//! set-based writes of one batch (see [`crate::seedjob`]): the imported backfills in one
//! multi-row `INSERT`, their audit records, the report fragment and the job's new cursor and
//! counts, in one transaction guarded by the job's progress (two agents never commit the
//! same batch).

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::store::{stored_ts, AuditEntry};
use super::{Arg, DbError, MetaDb};
use crate::request::fmt_ts;
use crate::seed::{Import, SeedReport};
use crate::seedjob::{ImportJob, JobState};

/// One backfill a batch imports.
#[derive(Debug, Clone)]
pub struct NewImport {
    /// What the plan decided.
    pub import: Import,
    /// The seed's copy taken over: its path and when it was written.
    pub copy: Option<(String, DateTime<Utc>)>,
    /// The origin DAG's file.
    pub origin_fileloc: String,
}

/// Everything one batch writes.
#[derive(Debug, Clone)]
pub struct BatchWrite<'a> {
    /// The job before the batch (its `done` guards the write).
    pub before: &'a ImportJob,
    /// The job after it.
    pub after: &'a ImportJob,
    /// The backfills to insert.
    pub imports: &'a [NewImport],
    /// Their audit records, in order.
    pub audits: &'a [AuditEntry],
    /// The batch's report fragment.
    pub report: &'a SeedReport,
    /// This agent's host id.
    pub host: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct JobSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    uid: i64,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Text)]
    started_at: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    cursor_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = BigInt)]
    imported: i64,
    #[diesel(sql_type = BigInt)]
    skipped: i64,
    #[diesel(sql_type = BigInt)]
    refused: i64,
    #[diesel(sql_type = BigInt)]
    already: i64,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

#[derive(QueryableByName)]
struct IdsSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    seed_id: Option<String>,
}

#[derive(QueryableByName)]
struct ReportSql {
    #[diesel(sql_type = Text)]
    report: String,
}

const JOB_COLS: &str =
    "id, state, uid, host, started_at, updated_at, cursor_id, total, rows_done, \
    imported, skipped, refused, already, error";

/// Most ids one `IN (...)` list binds.
const IN_IDS: usize = 400;

/// Most backfills one `INSERT` carries (23 binds each, under every backend's bind limit).
const INSERT_ROWS: usize = 1000;

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn stored(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl TryFrom<JobSql> for ImportJob {
    type Error = DbError;

    fn try_from(r: JobSql) -> Result<ImportJob, DbError> {
        Ok(ImportJob {
            id: r.id,
            state: JobState::parse(&r.state).ok_or_else(|| {
                DbError::Data(format!("import job {}: state {:?}", r.id, r.state))
            })?,
            uid: u32::try_from(r.uid).unwrap_or(u32::MAX),
            host: r.host,
            started_at: r.started_at,
            updated_at: r.updated_at,
            cursor: r.cursor_id,
            total: count(r.total),
            done: count(r.rows_done),
            imported: count(r.imported),
            skipped: count(r.skipped),
            refused: count(r.refused),
            already: count(r.already),
            error: r.error,
        })
    }
}

/// Access to the import jobs.
pub struct ImportJobs<'a> {
    db: &'a mut MetaDb,
}

impl<'a> ImportJobs<'a> {
    /// Wrap a connection.
    pub fn new(db: &'a mut MetaDb) -> ImportJobs<'a> {
        ImportJobs { db }
    }

    /// The newest job.
    pub fn newest(&mut self) -> Result<Option<ImportJob>, DbError> {
        let rows: Vec<JobSql> = self.db.load(
            &format!("SELECT {JOB_COLS} FROM backfilld_import ORDER BY id DESC LIMIT 1"),
            &[],
        )?;
        rows.into_iter().next().map(TryInto::try_into).transpose()
    }

    /// One job.
    pub fn get(&mut self, id: i64) -> Result<Option<ImportJob>, DbError> {
        let rows: Vec<JobSql> = self.db.load(
            &format!("SELECT {JOB_COLS} FROM backfilld_import WHERE id = ?"),
            &[Arg::Int(id)],
        )?;
        rows.into_iter().next().map(TryInto::try_into).transpose()
    }

    /// The oldest running job.
    pub fn running(&mut self) -> Result<Option<ImportJob>, DbError> {
        let rows: Vec<JobSql> = self.db.load(
            &format!(
                "SELECT {JOB_COLS} FROM backfilld_import WHERE state = 'running' ORDER BY id LIMIT 1"
            ),
            &[],
        )?;
        rows.into_iter().next().map(TryInto::try_into).transpose()
    }

    /// Start a job for `uid` over `total` seed rows; returns it.
    pub fn create(
        &mut self,
        uid: u32,
        host: &str,
        total: u64,
        now: DateTime<Utc>,
    ) -> Result<ImportJob, DbError> {
        let now = stored_ts(now);
        self.db.execute(
            "INSERT INTO backfilld_import (state, uid, host, started_at, updated_at, total, rows_done, \
             imported, skipped, refused, already) VALUES ('running', ?, ?, ?, ?, ?, 0, 0, 0, 0, 0)",
            &[
                Arg::Int(i64::from(uid)),
                Arg::Text(host.to_owned()),
                Arg::Text(now.clone()),
                Arg::Text(now),
                Arg::Int(stored(total)),
            ],
        )?;
        self.newest()?
            .ok_or_else(|| DbError::Data("the new import job is missing".to_owned()))
    }

    /// Mark a running job failed.
    pub fn fail(&mut self, id: i64, error: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_import SET state = 'failed', error = ?, updated_at = ? \
             WHERE id = ? AND state = 'running'",
            &[
                Arg::Text(error.to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Int(id),
            ],
        )?;
        Ok(())
    }

    /// The job's report: its batches' fragments merged in order.
    pub fn report(&mut self, id: i64) -> Result<SeedReport, DbError> {
        let rows: Vec<ReportSql> = self.db.load(
            "SELECT report FROM backfilld_import_batch WHERE import_id = ? ORDER BY seq",
            &[Arg::Int(id)],
        )?;
        let fragments = rows
            .into_iter()
            .map(|r| {
                serde_json::from_str::<SeedReport>(&r.report)
                    .map_err(|e| DbError::Data(format!("import job {id}: a batch report: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::seedjob::merge(fragments))
    }

    /// Of `ids` (seed ids, which are also the backfill ids they import as): the ones already
    /// imported (a backfill has the seed id) and the ones taken by a backfill not imported
    /// from it.
    pub fn known(
        &mut self,
        ids: &[&str],
    ) -> Result<
        (
            std::collections::HashSet<String>,
            std::collections::HashSet<String>,
        ),
        DbError,
    > {
        let mut imported = std::collections::HashSet::new();
        let mut taken = std::collections::HashSet::new();
        for chunk in ids.chunks(IN_IDS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
            let rows: Vec<IdsSql> = self.db.load(
                &format!(
                    "SELECT id, seed_id FROM backfilld_backfill WHERE id IN ({marks}) OR seed_id IN ({marks})"
                ),
                &args,
            )?;
            for r in rows {
                match r.seed_id {
                    Some(seed) => {
                        if seed != r.id {
                            taken.insert(r.id);
                        }
                        imported.insert(seed);
                    }
                    None => {
                        taken.insert(r.id);
                    }
                }
            }
        }
        Ok((imported, taken))
    }

    /// Write a batch in one transaction. Returns false (and writes nothing) when the job moved
    /// on meanwhile (another agent committed this batch) or is no longer running.
    pub fn commit_batch(&mut self, w: &BatchWrite<'_>) -> Result<bool, DbError> {
        self.db.begin()?;
        match self.write_batch(w) {
            Ok(true) => {
                self.db.commit()?;
                Ok(true)
            }
            Ok(false) => {
                self.db.rollback()?;
                Ok(false)
            }
            Err(e) => {
                let _ = self.db.rollback();
                Err(e)
            }
        }
    }

    fn write_batch(&mut self, w: &BatchWrite<'_>) -> Result<bool, DbError> {
        let a = w.after;
        let moved = self.db.execute(
            "UPDATE backfilld_import SET state = ?, updated_at = ?, cursor_id = ?, total = ?, \
             rows_done = ?, imported = ?, skipped = ?, refused = ?, already = ? \
             WHERE id = ? AND state = 'running' AND rows_done = ?",
            &[
                Arg::Text(a.state.as_str().to_owned()),
                Arg::Text(a.updated_at.clone()),
                Arg::OptText(a.cursor.clone()),
                Arg::Int(stored(a.total)),
                Arg::Int(stored(a.done)),
                Arg::Int(stored(a.imported)),
                Arg::Int(stored(a.skipped)),
                Arg::Int(stored(a.refused)),
                Arg::Int(stored(a.already)),
                Arg::Int(a.id),
                Arg::Int(stored(w.before.done)),
            ],
        )?;
        if moved == 0 {
            return Ok(false);
        }
        for chunk in w.imports.chunks(INSERT_ROWS) {
            self.insert_imports(chunk, w.host, w.now)?;
        }
        super::audit::append_many(self.db, w.host, w.audits)?;
        if a.done > w.before.done {
            // Keyed by the rows done after it; an empty last batch (the rows ended at a batch
            // boundary) has nothing to report.
            let report =
                serde_json::to_string(w.report).map_err(|e| DbError::Data(e.to_string()))?;
            self.db.execute(
                "INSERT INTO backfilld_import_batch (import_id, seq, report) VALUES (?, ?, ?)",
                &[Arg::Int(a.id), Arg::Int(stored(a.done)), Arg::Text(report)],
            )?;
        }
        Ok(true)
    }

    /// One multi-row `INSERT` of imported backfills (`seed_id` = their id). Integers are
    /// written as literals, the rest bound.
    fn insert_imports(
        &mut self,
        rows: &[NewImport],
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = stored_ts(now);
        let mut values = Vec::with_capacity(rows.len());
        let mut args = Vec::with_capacity(rows.len() * 23);
        for r in rows {
            let i = &r.import;
            let dates: Vec<String> = i.logical_dates.iter().map(|d| fmt_ts(*d)).collect();
            let dates = serde_json::to_string(&dates).map_err(|e| DbError::Data(e.to_string()))?;
            let params =
                serde_json::to_string(&i.params).map_err(|e| DbError::Data(e.to_string()))?;
            let p = i.progress;
            values.push(format!(
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, {mar}, 0, ?, ?, ?, ?, ?, {uid}, ?, ?, {deleted}, ?, ?, ?, \
                 {total}, {succeeded}, {failed}, {running}, {queued}, ?, 'import-seed', ?, {days}, \
                 'completed', ?, ?)",
                mar = i.max_active_runs,
                uid = u32::MAX,
                deleted = i64::from(i.deleted),
                total = p.total,
                succeeded = p.succeeded,
                failed = p.failed,
                running = p.running,
                queued = p.queued,
                days = i
                    .delete_after_days
                    .map_or_else(|| "NULL".to_owned(), |d| d.to_string()),
            ));
            args.extend([
                Arg::Text(i.id.clone()),
                Arg::Text(i.dag_id.clone()),
                Arg::Text(i.state.as_str().to_owned()),
                Arg::OptText(i.reason.clone()),
                Arg::OptText(i.description.clone()),
                Arg::Text(stored_ts(i.start)),
                Arg::Text(stored_ts(i.end)),
                Arg::Text(dates),
                Arg::Text(params),
                Arg::Text(r.origin_fileloc.clone()),
                Arg::Text(i.origin_code.clone()),
                Arg::OptText(r.copy.as_ref().map(|(path, _)| path.clone())),
                Arg::OptText(r.copy.as_ref().map(|(_, at)| stored_ts(*at))),
                Arg::Text(i.submitted_by.clone()),
                Arg::Text(stored_ts(i.submitted_at)),
                Arg::Text(now.clone()),
                Arg::OptText(i.deleted_at.map(stored_ts)),
                Arg::OptText(i.run_start.map(stored_ts)),
                Arg::OptText(i.run_end.map(stored_ts)),
                Arg::Text(host.to_owned()),
                Arg::OptText(i.scheduled_at.map(stored_ts)),
                Arg::Text(i.id.clone()),
                Arg::Text(i.note.clone()),
            ]);
        }
        self.db.execute(
            &format!(
                "INSERT INTO backfilld_backfill (id, dag_id, state, state_reason, description, start_date, \
                 end_date, logical_dates, params, max_active_runs, ignore_overlap, origin_fileloc, origin_code, \
                 copy_path, copy_written_at, submitted_by, submitted_uid, submitted_at, updated_at, deleted, \
                 deleted_at, run_start, run_end, dates_total, dates_succeeded, dates_failed, dates_running, \
                 dates_queued, host, request_key, scheduled_at, delete_after_days, reprocess, seed_id, \
                 import_note) VALUES {}",
                values.join(", ")
            ),
            &args,
        )?;
        Ok(())
    }
}
