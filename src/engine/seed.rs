//! `backfillctl import-seed`: the engine takes over the seed plugin's backfills (see
//! [`crate::seed`] for the mapping). Same identity, permission and audit path as the other
//! control requests: the caller's `SO_PEERCRED` uid resolves to an Airflow user, who needs
//! `can_operate` on the backfill resource, and edit on a backfill's origin DAG for that
//! backfill to be imported. The seed's table is only read.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{not_connected, Engine};
use crate::authz::{self, Action};
use crate::control::ControlResponse;
use crate::dagcopy;
use crate::metadb::airflow::Airflow;
use crate::metadb::seed::SeedTable;
use crate::metadb::store::Store;
use crate::metadb::DbError;
use crate::request::{ReasonCode, Rejection};
use crate::seed::{self, SeedFacts, SeedItem, SeedReport, SeedRow, SEED_TABLE, SYSTEM_DAGS};

impl Engine {
    /// Import (or with `dry_run`, report) every seed backfill not imported yet.
    pub(super) fn import_seed(
        &mut self,
        uid: u32,
        dry_run: bool,
    ) -> Result<ControlResponse, DbError> {
        let target = if dry_run {
            format!("{SEED_TABLE} (dry run)")
        } else {
            SEED_TABLE.to_owned()
        };
        let (ident, subject) = match self.subject(uid, None)? {
            Ok(v) => v,
            Err((ident, r)) => {
                self.audit(&ident, Action::Import, Some(&target), Some(&r))?;
                return Ok(refused(&r));
            }
        };
        if let Err(d) = authz::authorize(&subject, Action::Import, None) {
            let r = Rejection::from(d);
            self.audit(&ident, Action::Import, Some(&target), Some(&r))?;
            return Ok(refused(&r));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut table = SeedTable::new(&mut c.db);
        if !table.present()? {
            return Ok(ControlResponse::Error {
                message: format!(
                    "the metadata DB has no {SEED_TABLE} table: there is no seed plugin deployment to import"
                ),
            });
        }
        let rows = table.rows()?;
        let mut report = SeedReport {
            dry_run,
            ..SeedReport::default()
        };
        let mut af = Airflow::new(&mut c.db, &c.schema);
        for name in SYSTEM_DAGS {
            if af.dag(name)?.is_some_and(|d| d.is_active && !d.is_paused) {
                report.active_system_dags.push(name.to_owned());
            }
        }
        if !dry_run && !report.active_system_dags.is_empty() {
            let r = Rejection::new(
                ReasonCode::SeedPluginActive,
                format!(
                    "the seed plugin's system DAGs {} are active and unpaused: they would keep creating, updating and deleting the backfills backfilld takes over; pause them (airflow dags pause <id>) or remove their files, then import again",
                    report.active_system_dags.join(", ")
                ),
            );
            self.audit(&ident, Action::Import, Some(&target), Some(&r))?;
            return Ok(refused(&r));
        }
        self.audit(&ident, Action::Import, Some(&target), None)?;
        let imported = {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Store::new(&mut c.db).seed_ids()?
        };
        let dir = self.copy_dir();
        let mut changed = false;
        for row in rows {
            let row = match row {
                Ok(r) => r,
                Err((id, dag_id, why)) => {
                    report.skipped.push(SeedItem {
                        seed_id: id,
                        dag_id,
                        seed_state: String::new(),
                        state: None,
                        dates: Vec::new(),
                        note: None,
                        skipped: Some(why),
                    });
                    continue;
                }
            };
            if imported.contains(&row.backfill_dag_id) {
                report.already_imported.push(row.backfill_dag_id.clone());
                continue;
            }
            if let Err(d) = authz::authorize(&subject, Action::Import, Some(&row.dag_id)) {
                let r = Rejection::from(d);
                self.audit(&ident, Action::Import, Some(&row.backfill_dag_id), Some(&r))?;
                report.skipped.push(seed::item(
                    &row,
                    &Err(format!("permission denied: {}", r.message)),
                ));
                continue;
            }
            let (facts, written_at, origin_fileloc) = self.seed_facts(&row, &dir)?;
            let planned = seed::plan(&row, &facts);
            let item = seed::item(&row, &planned);
            let Ok(import) = planned else {
                report.skipped.push(item);
                continue;
            };
            if dry_run {
                report.imported.push(item);
                continue;
            }
            let path = dir.join(dagcopy::file_name(&import.id));
            let path = path.to_string_lossy().into_owned();
            let copy = import.copy.then_some((path.as_str(), written_at));
            let host = self.host.clone();
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            if Store::new(&mut c.db).insert_imported(
                &import,
                copy,
                &origin_fileloc,
                &host,
                Utc::now(),
            )? {
                tracing::info!(backfill = %import.id, dag = %import.dag_id, seed_state = %row.state_label(), state = %import.state, note = %import.note, "imported a seed plugin backfill");
                self.audit(&ident, Action::Import, Some(&import.id), None)?;
                report.imported.push(item);
                changed = true;
            } else {
                report.already_imported.push(row.backfill_dag_id.clone());
            }
        }
        if changed {
            // Count every copy's runs again in the next pass, the imported ones included.
            self.watermark = None;
        }
        Ok(ControlResponse::SeedImport {
            report: Box::new(report),
        })
    }

    /// What the plan needs about a seed backfill's id and copy, when the copy file was written
    /// (its mtime), and the origin DAG's file.
    fn seed_facts(
        &mut self,
        row: &SeedRow,
        dir: &Path,
    ) -> Result<(SeedFacts, DateTime<Utc>, String), DbError> {
        let dags_folder = self.airflow.dags_folder.clone();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let id_taken = Store::new(&mut c.db)
            .backfill_any(&row.backfill_dag_id)?
            .is_some();
        let expected = dir.join(dagcopy::file_name(&row.backfill_dag_id));
        let meta = std::fs::metadata(&expected).ok().filter(|m| m.is_file());
        let written_at = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(Utc::now);
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let copy_dag = af.dag(&row.backfill_dag_id)?;
        let copy_elsewhere = copy_dag
            .as_ref()
            .and_then(|d| d.fileloc.clone())
            .filter(|loc| !same_file(Path::new(loc), &expected));
        let runs = if copy_dag.is_some() {
            af.runs(&row.backfill_dag_id)?
        } else {
            Vec::new()
        };
        let origin_fileloc = af
            .dag(&row.dag_id)?
            .and_then(|d| d.fileloc)
            .unwrap_or_else(|| {
                dags_folder
                    .join(row.relative_fileloc.as_deref().unwrap_or_default())
                    .to_string_lossy()
                    .into_owned()
            });
        let facts = SeedFacts {
            id_taken,
            copy_file: meta.is_some(),
            copy_elsewhere,
            runs,
        };
        Ok((facts, written_at, origin_fileloc))
    }
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
