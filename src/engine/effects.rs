//! The Airflow-side work of life-cycle actions (`pending_op`: pause, unpause, mark failed,
//! delete), fenced and idempotent, and automatic deletion (`delete_after_days`).

use super::*;

impl Engine {
    /// Delete every finished backfill whose `delete_after_days` elapsed, as a `delete` request
    /// would (the state machine still decides; audited with no requester: the daemon).
    pub(super) fn auto_delete(&mut self) -> Result<(), DbError> {
        let now = Utc::now();
        let c = self.conn.get()?;
        let due = Store::new(&mut c.db).due_for_deletion(now)?;
        for id in due {
            let c = self.conn.get()?;
            let Some(row) = Store::new(&mut c.db).backfill_any(&id)? else {
                continue;
            };
            let facts = Facts {
                state: row.state,
                deleted: row.deleted,
                copy_written: row.copy_written_at.is_some(),
                failed_dates: row.progress.failed,
            };
            if lifecycle::plan(Action::Delete, facts) != Ok(Effect::DeleteCopy) {
                continue;
            }
            let c = self.conn.get()?;
            if !Store::new(&mut c.db).mark_deleted(&row.id, now)? {
                continue;
            }
            tracing::info!(backfill = %row.id, delete_after_days = ?row.delete_after_days, "deleting a finished backfill automatically");
            self.audit(&Identity::default(), Action::Delete, Some(&row.id), None)?;
            self.carry_out_id(&row.id);
        }
        Ok(())
    }

    pub(super) fn carry_out_id(&mut self, id: &str) {
        let row = match self
            .conn
            .current()
            .map(|c| Store::new(&mut c.db).backfill_any(id))
        {
            Some(Ok(Some(row))) => row,
            Some(Err(e)) => {
                self.lost(&e);
                return;
            }
            _ => return,
        };
        if let Err(e) = self.carry_out(&row) {
            tracing::warn!(backfill = %id, error = %e, "life-cycle action not carried out yet; retrying next pass");
            self.lost(&e);
        }
    }

    /// Do the Airflow-side work of the life-cycle action recorded on `row`; clear it once done.
    /// Every step is idempotent, so a crash in between only repeats it.
    pub(super) fn carry_out(&mut self, row: &BackfillRow) -> Result<(), DbError> {
        let Some(op) = row.pending_op else {
            return Ok(());
        };
        self.fence()?;
        let dir = self.copy_dir();
        let name = dagcopy::file_name(&row.id);
        let now = Utc::now();
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let done = match op {
            PendingOp::Pause => af.set_paused(&row.id, true)? || row.state.is_terminal(),
            PendingOp::Resume => af.set_paused(&row.id, false)? || row.state.is_terminal(),
            PendingOp::Cancel => {
                let registered = af.set_paused(&row.id, true)?;
                let failed = af.fail_unfinished_runs(&row.id, now)?;
                let obs = Observation {
                    registered: Some(true),
                    import_error: None,
                    runs: RunSummary::of_runs(&row.logical_dates, &af.runs(&row.id)?),
                };
                let d = reconcile::decide(
                    row.state,
                    row.progress.total,
                    &obs,
                    chrono::Duration::zero(),
                    chrono::Duration::zero(),
                );
                Store::new(&mut c.db).set_progress(&row.id, &d, now)?;
                tracing::info!(backfill = %row.id, registered, failed_runs = failed, "cancelled: copy paused, unfinished runs marked failed");
                if registered {
                    // Done once a pass finds nothing left to fail (a run the scheduler created
                    // while the pause was being written is caught by the next pass).
                    failed == 0
                } else {
                    // Airflow has not registered the copy: remove it so it never runs.
                    match dagcopy::remove(&dir, &name) {
                        Ok(()) => {
                            Store::new(&mut c.db).mark_copy_removed(&row.id, now)?;
                            true
                        }
                        Err(e) => {
                            tracing::error!(backfill = %row.id, error = %e, "cannot remove the cancelled DAG copy");
                            false
                        }
                    }
                }
            }
            PendingOp::Delete => {
                af.set_paused(&row.id, true)?;
                if let Err(e) = dagcopy::remove(&dir, &name) {
                    tracing::error!(backfill = %row.id, error = %e, "cannot remove the deleted DAG copy; retrying next pass");
                    return Ok(());
                }
                if af.running_tasks(&row.id)? > 0 {
                    tracing::info!(backfill = %row.id, "delete waits for the copy's running tasks to finish");
                    false
                } else {
                    let removed = af.delete_dag_rows(&row.id)?;
                    if removed > 0 {
                        tracing::info!(backfill = %row.id, rows = removed, "removed Airflow's rows of the deleted copy");
                    }
                    let settled = row
                        .deleted_at
                        .is_none_or(|t| now - t > chrono::Duration::seconds(DELETE_SETTLE_SECS));
                    removed == 0 && settled
                }
            }
        };
        if done {
            Store::new(&mut c.db).clear_pending_op(&row.id, op)?;
            tracing::info!(backfill = %row.id, action = op.as_str(), "life-cycle action carried out");
        }
        Ok(())
    }
}
