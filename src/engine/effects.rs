//! The Airflow-side work of life-cycle actions (`pending_op`: pause, unpause, mark failed,
//! delete), fenced and idempotent, and automatic deletion (`delete_after_days`).

use super::*;

impl Engine {
    /// Delete every finished backfill whose `delete_after_days` elapsed, as a `delete` request
    /// would (the state machine still decides; audited with no requester: the daemon), all of
    /// them together: a few statements per 400 backfills, not a few dozen each.
    pub(super) fn auto_delete(&mut self) -> Result<(), DbError> {
        let now = Utc::now();
        let c = self.conn.get()?;
        // No row written since the last read and no deletion due by then: nothing to read.
        let seq = change::seq(&mut c.db)?;
        if let Some(next) = c.due_kept.get(seq, pass_cache::STAMPS_EVERY) {
            if next.is_none_or(|at| now < at) {
                return Ok(());
            }
        }
        let (due, next) = Store::new(&mut c.db).due_for_deletion(now)?;
        // While some are due (refused by the life-cycle rules, or failing), read every pass.
        c.due_kept
            .put(seq, if due.is_empty() { next } else { Some(now) });
        if due.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = due.iter().map(String::as_str).collect();
        let rows = Store::new(&mut c.db).backfills_any(&ids)?;
        let eligible: Vec<&str> = rows
            .iter()
            .filter(|row| {
                let facts = Facts {
                    state: row.state,
                    deleted: row.deleted,
                    copy_written: row.copy_written_at.is_some(),
                    failed_dates: row.progress.failed,
                };
                lifecycle::plan(Action::Delete, facts) == Ok(Effect::DeleteCopy)
            })
            .map(|row| row.id.as_str())
            .collect();
        if eligible.is_empty() {
            return Ok(());
        }
        let marked: std::collections::HashSet<String> = Store::new(&mut c.db)
            .mark_deleted_many(&eligible, now)?
            .into_iter()
            .collect();
        if marked.is_empty() {
            return Ok(());
        }
        // The rows as `mark_deleted_many` left them, without reading them again.
        let rows: Vec<BackfillRow> = rows
            .into_iter()
            .filter(|row| marked.contains(&row.id))
            .map(|mut row| {
                row.deleted = true;
                row.deleted_at = Some(now);
                row.pending_op = Some(PendingOp::Delete);
                row.updated_at = now;
                row
            })
            .collect();
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            tracing::info!(backfill = %row.id, delete_after_days = ?row.delete_after_days, "deleting a finished backfill automatically");
            let entry = audit_entry(&Identity::default(), Action::Delete, Some(&row.id), None);
            emit_audit(&entry);
            entries.push(entry);
        }
        let host = self.host.clone();
        let c = self.conn.get()?;
        Store::new(&mut c.db).audit_many(&host, &entries)?;
        self.carry_out_all(&rows);
        Ok(())
    }

    /// Carry out the pending life-cycle work of `rows`: the deletions together, the other
    /// actions one by one. Returns false when the connection was lost on the way.
    pub(super) fn carry_out_all(&mut self, rows: &[BackfillRow]) -> bool {
        let (deletes, others): (Vec<&BackfillRow>, Vec<&BackfillRow>) = rows
            .iter()
            .partition(|row| row.pending_op == Some(PendingOp::Delete));
        if !deletes.is_empty() {
            if let Err(e) = self.carry_out_deletes(&deletes) {
                tracing::warn!(backfills = deletes.len(), error = %e, "deletions not carried out yet; retrying next pass");
                self.lost(&e);
                if !self.conn.is_up() {
                    return false;
                }
            }
        }
        for row in others {
            if let Err(e) = self.carry_out(row) {
                tracing::warn!(backfill = %row.id, error = %e, "life-cycle action not carried out yet; retrying next pass");
                self.lost(&e);
                if !self.conn.is_up() {
                    return false;
                }
            }
        }
        true
    }

    /// The Airflow-side work of deleting the backfills `rows` (each with `pending_op` delete),
    /// set-based: their copies paused in one statement, their files removed, their running
    /// task instances counted in one statement, and Airflow's rows of those with none
    /// removed the way `airflow dags delete` does, each table's statement once for all
    /// (per 400). The action is done for a backfill once its deletion settled
    /// (`DELETE_SETTLE_SECS`: a parse in flight may register the copy again) and a removal
    /// over the settled ones found nothing left.
    ///
    /// While a deletion settles, a pass after the one that carried it out looks only at
    /// whether Airflow registered the copy again (its `dag` row, one statement per 400): a
    /// parse in flight writes that row with the rest, and a copy that came back is removed
    /// again at once; the settled sweep removes everything once more before the action is
    /// done.
    fn carry_out_deletes(&mut self, rows: &[&BackfillRow]) -> Result<(), DbError> {
        let dir = self.copy_dir();
        let now = Utc::now();
        let settle = chrono::Duration::seconds(DELETE_SETTLE_SECS);
        let settled_at = |row: &BackfillRow| row.deleted_at.is_none_or(|t| now - t > settle);
        let carried = &self.deletes_carried;
        let (again, mut due): (Vec<&BackfillRow>, Vec<&BackfillRow>) = rows
            .iter()
            .partition(|row| carried.contains(&row.id) && !settled_at(row));
        if !again.is_empty() {
            let c = self.conn.get()?;
            let ids: Vec<&str> = again.iter().map(|row| row.id.as_str()).collect();
            let back: std::collections::HashSet<String> = Airflow::new(&mut c.db, &c.schema)
                .dags_of(&ids)?
                .into_iter()
                .map(|d| d.dag_id)
                .collect();
            due.extend(again.into_iter().filter(|row| back.contains(&row.id)));
        }
        if due.is_empty() {
            return Ok(());
        }
        let rows = due;
        self.fence()?;
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        af.set_paused_many(&ids, true)?;
        // The files, with one fsync of the folder for all of them.
        let names: Vec<String> = rows.iter().map(|row| dagcopy::file_name(&row.id)).collect();
        let mut kept = std::collections::HashSet::new();
        for (name, e) in dagcopy::remove_many(&dir, &names) {
            tracing::error!(file = %name, error = %e, "cannot remove the deleted DAG copy; retrying next pass");
            kept.insert(name);
        }
        let gone: Vec<&BackfillRow> = rows
            .iter()
            .zip(&names)
            .filter(|(_, name)| !kept.contains(*name))
            .map(|(row, _)| *row)
            .collect();
        let ids: Vec<&str> = gone.iter().map(|row| row.id.as_str()).collect();
        let running = af.running_tasks_of(&ids)?;
        let (mut settled, mut fresh) = (Vec::new(), Vec::new());
        for row in gone {
            if running.get(&row.id).is_some_and(|n| *n > 0) {
                tracing::info!(backfill = %row.id, "delete waits for the copy's running tasks to finish");
            } else if settled_at(row) {
                settled.push(row.id.as_str());
            } else {
                fresh.push(row.id.as_str());
            }
        }
        if settled.is_empty() && fresh.is_empty() {
            return Ok(());
        }
        let deletes = af.dag_row_deletes()?;
        for (group, ids) in [("deleted just now", &fresh), ("settled", &settled)] {
            if ids.is_empty() {
                continue;
            }
            let removed = af.delete_dag_rows_of(&deletes, ids)?;
            if removed > 0 {
                tracing::info!(
                    backfills = ids.len(),
                    group,
                    rows = removed,
                    "removed Airflow's rows of deleted copies"
                );
                if group == "settled" {
                    // Something came back: done in a later pass, once nothing is left.
                    return Ok(());
                }
            }
        }
        Store::new(&mut c.db).clear_pending_ops(&settled, PendingOp::Delete)?;
        self.deletes_carried
            .extend(fresh.iter().map(|id| (*id).to_owned()));
        for id in &settled {
            self.deletes_carried.remove(*id);
            tracing::info!(backfill = %id, action = PendingOp::Delete.as_str(), "life-cycle action carried out");
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
        let op = match row.pending_op {
            None => return Ok(()),
            Some(PendingOp::Delete) => return self.carry_out_deletes(&[row]),
            Some(op) => op,
        };
        self.fence()?;
        let dir = self.copy_dir();
        let name = dagcopy::file_name(&row.id);
        let now = Utc::now();
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let done = match op {
            PendingOp::Pause => af.set_paused(&row.id, true)? || row.state.is_terminal(),
            // Under a run budget a steered copy is the steering's to unpause, with the run it
            // gives it (Airflow would otherwise create the date it plans by itself at once,
            // whatever the budget): it stays paused, handed back to the throttle, which
            // unpauses it at once if runs are in flight.
            PendingOp::Resume
                if self.config.throttle.has_budget() && row.options.run_order.is_steered() =>
            {
                let registered = af.set_paused(&row.id, true)?;
                if registered {
                    crate::metadb::steer::Steering::new(&mut c.db, &c.schema)
                        .hand_back(&row.id, now)?;
                }
                registered || row.state.is_terminal()
            }
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
            // Carried out by `carry_out_deletes` above.
            PendingOp::Delete => false,
        };
        if done {
            Store::new(&mut c.db).clear_pending_op(&row.id, op)?;
            tracing::info!(backfill = %row.id, action = op.as_str(), "life-cycle action carried out");
        }
        Ok(())
    }
}
