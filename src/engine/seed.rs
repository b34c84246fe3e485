//! `backfillctl import-seed`: the engine takes over the seed plugin's backfills (see
//! [`crate::seed`] for the mapping) as a job ([`crate::seedjob`]): the control request starts
//! it (or re-attaches) and answers at once; the loop runs one batch at a time between other
//! work. Same identity, permission and audit path as the other control requests: the caller's
//! `SO_PEERCRED` uid resolves to an Airflow user, who needs `can_operate` on the backfill
//! resource, and edit on a backfill's origin DAG for that backfill to be imported (checked
//! again for each batch, for the uid that started the job). The seed's table is only read.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::identity::allowed;
use super::ruling::Ruling;
use super::{emit_audit, Engine, Identity, Resolved};
use crate::authz::{self, Action, Subject};
use crate::control::ControlResponse;
use crate::dagcopy;
use crate::failpoint;
use crate::metadb::airflow::Airflow;
use crate::metadb::seed::SeedTable;
use crate::metadb::seedjob::{BatchWrite, ImportJobs, NewImport};
use crate::metadb::store::{self, AuditEntry};
use crate::metadb::DbError;
use crate::request::{ReasonCode, Rejection};
use crate::seed::{self, SeedFacts, SeedItem, SeedReport, SeedRow, SEED_TABLE, SYSTEM_DAGS};
use crate::seedjob::{self, BatchCounts, ImportJob, JobState, Start};

/// A batch as read: seed rows, or the ones whose data did not parse.
type SeedRows = Vec<Result<SeedRow, (String, String, String)>>;

/// What planning a batch decided.
struct Planned {
    report: SeedReport,
    imports: Vec<NewImport>,
    audits: Vec<AuditEntry>,
}

impl Engine {
    /// Start an import job (or re-attach to the running one; with `attach`, only that), or
    /// with `dry_run` report every seed backfill not imported yet.
    pub(super) fn import_seed(
        &mut self,
        uid: u32,
        dry_run: bool,
        attach: bool,
    ) -> Result<ControlResponse, DbError> {
        if attach {
            return self.import_status(uid, None, false);
        }
        let target = if dry_run {
            format!("{SEED_TABLE} (dry run)")
        } else {
            SEED_TABLE.to_owned()
        };
        let (ident, subject) = match self.import_subject(uid)? {
            Ruling::Admit(v) => v,
            Ruling::Refuse((ident, r)) => {
                self.audit(&ident, Action::Import, Some(&target), Some(&r))?;
                return Ok(refused(&r));
            }
        };
        let c = self.conn.get()?;
        if !SeedTable::new(&mut c.db).present()? {
            return Ok(ControlResponse::Error {
                message: format!(
                    "the metadata DB has no {SEED_TABLE} table: there is no seed plugin deployment to import"
                ),
            });
        }
        let mut active_system_dags = Vec::new();
        let mut af = Airflow::new(&mut c.db, &c.schema);
        for name in SYSTEM_DAGS {
            if af.dag(name)?.is_some_and(|d| d.is_active && !d.is_paused) {
                active_system_dags.push(name.to_owned());
            }
        }
        if !dry_run && !active_system_dags.is_empty() {
            let r = Rejection::new(
                ReasonCode::SeedPluginActive,
                format!(
                    "the seed plugin's system DAGs {} are active and unpaused: they would keep creating, updating and deleting the backfills backfilld takes over; pause them (airflow dags pause <id>) or remove their files, then import again",
                    active_system_dags.join(", ")
                ),
            );
            self.audit(&ident, Action::Import, Some(&target), Some(&r))?;
            return Ok(refused(&r));
        }
        self.audit(&ident, Action::Import, Some(&target), None)?;
        if dry_run {
            let mut report = self.dry_run(&ident, &subject)?;
            report.active_system_dags = active_system_dags;
            return Ok(ControlResponse::SeedImport {
                report: Box::new(report),
            });
        }
        let host = self.host.clone();
        let c = self.conn.get()?;
        let mut jobs = ImportJobs::new(&mut c.db);
        let newest = jobs.newest()?;
        let job = match seedjob::start(newest.as_ref()) {
            Start::Attach(_) => newest.ok_or_else(|| DbError::Data("no import job".to_owned()))?,
            Start::New => {
                let total = SeedTable::new(&mut c.db).count()?;
                let job = ImportJobs::new(&mut c.db).create(uid, &host, total, Utc::now())?;
                tracing::info!(job = job.id, total, "seed import job started");
                job
            }
        };
        self.import_active = true;
        Ok(ControlResponse::SeedImportJob { job, report: None })
    }

    /// An import job's progress (`job`, else the newest), with its report when asked. Needs
    /// the same permission as starting one; only refusals are audited (clients poll).
    pub(super) fn import_status(
        &mut self,
        uid: u32,
        job: Option<i64>,
        report: bool,
    ) -> Result<ControlResponse, DbError> {
        if let Ruling::Refuse((ident, r)) = self.import_subject(uid)? {
            self.audit(&ident, Action::Import, Some(SEED_TABLE), Some(&r))?;
            return Ok(refused(&r));
        }
        let c = self.conn.get()?;
        let mut jobs = ImportJobs::new(&mut c.db);
        let found = match job {
            Some(id) => jobs.get(id)?,
            None => jobs.newest()?,
        };
        let Some(found) = found else {
            return Ok(ControlResponse::Error {
                message: "no seed import job: start one with backfillctl import-seed".to_owned(),
            });
        };
        let report = if report {
            Some(Box::new(jobs.report(found.id)?))
        } else {
            None
        };
        Ok(ControlResponse::SeedImportJob { job: found, report })
    }

    /// The caller resolved and allowed to import at all.
    fn import_subject(&mut self, uid: u32) -> Resolved {
        Ok(allowed(self.subject(uid, None)?, Action::Import))
    }

    /// The dry run's report: every batch planned, nothing written.
    fn dry_run(&mut self, ident: &Identity, subject: &Subject) -> Result<SeedReport, DbError> {
        let mut report = SeedReport {
            dry_run: true,
            ..SeedReport::default()
        };
        let mut cursor: Option<String> = None;
        let batch = import_batch_size();
        loop {
            let c = self.conn.get()?;
            let rows = SeedTable::new(&mut c.db).rows_after(cursor.as_deref(), batch)?;
            let n = rows.len();
            cursor = last_id(&rows).or(cursor);
            let planned = self.plan_batch(ident, subject, rows)?;
            report.imported.extend(planned.report.imported);
            report.skipped.extend(planned.report.skipped);
            report
                .already_imported
                .extend(planned.report.already_imported);
            if n < batch {
                return Ok(report);
            }
        }
    }

    /// Run one batch of the running import job, if there is one (the loop calls this between
    /// other work; a bench may call it directly). Returns whether a job may still run: false
    /// once none does; after a lost connection the loop waits a little before the next try.
    pub fn import_step(&mut self) -> bool {
        match self.try_import_step() {
            Ok(more) => {
                self.import_active = more;
                self.import_retry_at = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "seed import: batch not done; will retry");
                self.lost(&e);
                self.import_retry_at =
                    Some(std::time::Instant::now() + std::time::Duration::from_secs(5));
            }
        }
        self.import_active
    }

    fn try_import_step(&mut self) -> Result<bool, DbError> {
        let c = self.connected()?;
        let Some(job) = ImportJobs::new(&mut c.db).running()? else {
            return Ok(false);
        };
        match self.import_batch(&job) {
            Ok(()) => Ok(true),
            Err(e) if e.is_connection_lost() => Err(e),
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "seed import job failed");
                let c = self.conn.get()?;
                ImportJobs::new(&mut c.db).fail(job.id, &e.to_string(), Utc::now())?;
                Ok(true)
            }
        }
    }

    /// Plan and write the job's next batch in one transaction.
    fn import_batch(&mut self, job: &ImportJob) -> Result<(), DbError> {
        let (ident, subject) = match self.import_subject(job.uid)? {
            Ruling::Admit(v) => v,
            Ruling::Refuse((_, r)) => {
                let c = self.conn.get()?;
                ImportJobs::new(&mut c.db).fail(
                    job.id,
                    &format!(
                        "the user who started it may no longer import: {}",
                        r.message
                    ),
                    Utc::now(),
                )?;
                return Ok(());
            }
        };
        let batch = import_batch_size();
        let c = self.conn.get()?;
        let rows = SeedTable::new(&mut c.db).rows_after(job.cursor.as_deref(), batch)?;
        let n = rows.len();
        let last = last_id(&rows);
        let planned = self.plan_batch(&ident, &subject, rows)?;
        let now = Utc::now();
        let after = seedjob::advance(
            job,
            batch,
            BatchCounts::of(&planned.report, n),
            last.as_deref(),
            &store::stored_ts(now),
        );
        let host = self.host.clone();
        let c = self.conn.get()?;
        let committed = ImportJobs::new(&mut c.db).commit_batch(&BatchWrite {
            before: job,
            after: &after,
            imports: &planned.imports,
            audits: &planned.audits,
            report: &planned.report,
            host: &host,
            now,
        })?;
        if !committed {
            tracing::info!(job = job.id, "seed import: another agent did this batch");
            return Ok(());
        }
        for e in &planned.audits {
            emit_audit(e);
        }
        for i in &planned.imports {
            tracing::debug!(backfill = %i.import.id, dag = %i.import.dag_id, state = %i.import.state, "imported a seed plugin backfill");
        }
        if !planned.imports.is_empty() {
            // Count every copy's runs again in the next pass, the imported ones included.
            self.watermark = None;
        }
        if after.done > job.done {
            tracing::info!(
                job = job.id,
                done = after.done,
                total = after.total,
                imported = after.imported,
                skipped = after.skipped,
                refused = after.refused,
                already = after.already,
                "seed import batch committed"
            );
        }
        if after.state == JobState::Finished {
            tracing::info!(job = job.id, "{}", after.summary());
            // Thousands of rows just arrived: without fresh statistics PostgreSQL's planner
            // takes the table for nearly empty and looks up a pass's few ids through the
            // `deleted = 0` index, every live row (30-50 ms a statement at 10,000 backfills).
            if let Err(e) = store::Store::new(&mut self.conn.get()?.db).analyze() {
                tracing::warn!(error = %e, "cannot refresh the planner statistics of backfilld's table");
            }
        }
        failpoint::hang_if_armed(failpoint::AFTER_IMPORT_BATCH);
        Ok(())
    }

    /// Decide a batch: what is imported before, refused, skipped, imported; the facts read in
    /// a few set-based statements (ids, `dag` rows, runs) and one `stat` per copy file.
    fn plan_batch(
        &mut self,
        ident: &Identity,
        subject: &Subject,
        rows: SeedRows,
    ) -> Result<Planned, DbError> {
        let mut report = SeedReport::default();
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(r) => candidates.push(r),
                Err((id, dag_id, why)) => report.skipped.push(SeedItem {
                    seed_id: id,
                    dag_id,
                    seed_state: String::new(),
                    state: None,
                    dates: Vec::new(),
                    note: None,
                    skipped: Some(why),
                }),
            }
        }
        let c = self.conn.get()?;
        let ids: Vec<&str> = candidates
            .iter()
            .map(|r| r.backfill_dag_id.as_str())
            .collect();
        let (imported, taken) = ImportJobs::new(&mut c.db).known(&ids)?;
        let mut todo = Vec::with_capacity(candidates.len());
        let mut denials = Vec::new();
        for row in candidates {
            if imported.contains(&row.backfill_dag_id) {
                report.already_imported.push(row.backfill_dag_id.clone());
                continue;
            }
            if let Err(d) = authz::authorize(subject, Action::Import, Some(&row.dag_id)) {
                let r = Rejection::from(d);
                report.skipped.push(seed::item(
                    &row,
                    &Err(format!("{}{}", seedjob::REFUSAL, r.message)),
                ));
                denials.push((row.backfill_dag_id.clone(), r));
                continue;
            }
            todo.push(row);
        }
        for (target, r) in &denials {
            self.audit(ident, Action::Import, Some(target), Some(r))?;
        }
        let dir = self.copy_dir();
        let dags_folder = self.airflow.dags_folder.clone();
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let names: Vec<&str> = todo
            .iter()
            .flat_map(|r| [r.backfill_dag_id.as_str(), r.dag_id.as_str()])
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let dags: HashMap<String, Option<String>> = af
            .dags_of(&names)?
            .into_iter()
            .map(|d| (d.dag_id, d.fileloc))
            .collect();
        let copies: Vec<&str> = todo
            .iter()
            .map(|r| r.backfill_dag_id.as_str())
            .filter(|id| dags.contains_key(*id))
            .collect();
        let mut runs = af.runs_of(&copies)?;
        let now = Utc::now();
        let mut imports = Vec::with_capacity(todo.len());
        let mut audits = Vec::with_capacity(todo.len());
        for row in todo {
            let expected = dir.join(dagcopy::file_name(&row.backfill_dag_id));
            let meta = std::fs::metadata(&expected).ok().filter(|m| m.is_file());
            let written_at = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .map(DateTime::<Utc>::from)
                .unwrap_or(now);
            let copy_elsewhere = dags
                .get(&row.backfill_dag_id)
                .cloned()
                .flatten()
                .filter(|loc| !same_file(Path::new(loc), &expected));
            let origin_fileloc = dags.get(&row.dag_id).cloned().flatten().unwrap_or_else(|| {
                dags_folder
                    .join(row.relative_fileloc.as_deref().unwrap_or_default())
                    .to_string_lossy()
                    .into_owned()
            });
            let facts = SeedFacts {
                id_taken: taken.contains(&row.backfill_dag_id),
                copy_file: meta.is_some(),
                copy_elsewhere,
                runs: runs.remove(&row.backfill_dag_id).unwrap_or_default(),
            };
            let planned = seed::plan(&row, &facts);
            let item = seed::item(&row, &planned);
            let Ok(import) = planned else {
                report.skipped.push(item);
                continue;
            };
            let copy = import
                .copy
                .then(|| (expected.to_string_lossy().into_owned(), written_at));
            audits.push(AuditEntry {
                at: store::stored_ts(now),
                uid: ident.uid,
                unix_user: ident.unix_user.clone(),
                airflow_user: ident.airflow_user.clone(),
                on_behalf_of: ident.on_behalf_of.clone(),
                action: Action::Import.as_str().to_owned(),
                target: Some(import.id.clone()),
                allowed: true,
                reason_code: None,
                reason: None,
            });
            imports.push(NewImport {
                import,
                copy,
                origin_fileloc,
            });
            report.imported.push(item);
        }
        Ok(Planned {
            report,
            imports,
            audits,
        })
    }
}

/// The id of a batch's last row.
fn last_id(rows: &SeedRows) -> Option<String> {
    rows.last().map(|r| match r {
        Ok(row) => row.backfill_dag_id.clone(),
        Err((id, _, _)) => id.clone(),
    })
}

/// Whether two paths name the same file (the same path, or the same file once resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn refused(r: &Rejection) -> ControlResponse {
    ControlResponse::Error {
        message: super::denied_message(r),
    }
}

/// The import's batch size: [`seedjob::BATCH`], or `BACKFILLD_IMPORT_BATCH` from the
/// environment (tests stop a job between batches of a few rows).
fn import_batch_size() -> usize {
    seedjob::batch_size(std::env::var("BACKFILLD_IMPORT_BATCH").ok().as_deref())
}
