//! DAG copies on disk: writing a backfill's copy, and converging the copies folder to the live
//! backfills (restoring missing or damaged copies, removing those of deleted ones).

use super::*;

impl Engine {
    /// Bring this agent's copy folder to the set of live copies in the DB: write missing ones,
    /// repair changed or truncated ones, remove those of deleted backfills. With a shared DAGs
    /// folder only the leader does this; otherwise every agent does it for its own folder.
    pub(super) fn converge_copies(&mut self) {
        if let Err(e) = self.try_converge_copies() {
            tracing::warn!(error = %e, "cannot converge the DAG copies; retrying next pass");
            self.lost(&e);
        }
    }

    pub(super) fn try_converge_copies(&mut self) -> Result<(), DbError> {
        let result = self.converge_folder();
        // What was verified is saved even when a later step failed.
        let saved = self.save_verified();
        result.and(saved)
    }

    fn converge_folder(&mut self) -> Result<(), DbError> {
        let dir = self.copy_dir();
        let shared = self.config.cluster.dags_folder_shared;
        let c = self.conn.get()?;
        if !self.verified_loaded {
            // What this agent verified before it started: files unchanged since are not read.
            let kept = CopyChecks::new(&mut c.db, &self.host).load()?;
            for (id, f) in &kept {
                self.verified_copies.entry(id.clone()).or_insert(*f);
            }
            self.verified_saved = kept;
            self.verified_loaded = true;
        }
        // Read again only when a backfill row was written since (`metadb::change`).
        let seq = change::seq(&mut c.db)?;
        let all = match c.live_kept.get(seq, pass_cache::STAMPS_EVERY) {
            Some(all) => Arc::clone(all),
            None => {
                let all = Arc::new(Store::new(&mut c.db).live_copies()?);
                c.live_kept.put(seq, Arc::clone(&all));
                all
            }
        };
        let known: std::collections::HashSet<&str> =
            all.iter().map(|(id, _, _)| id.as_str()).collect();
        let live: Vec<(&str, chrono::DateTime<Utc>)> = all
            .iter()
            .filter(|(_, _, ours)| *ours)
            .map(|(id, at, _)| (id.as_str(), *at))
            .collect();
        let wanted: std::collections::HashSet<&str> = live.iter().map(|(id, _)| *id).collect();
        self.verified_copies
            .retain(|id, _| wanted.contains(id.as_str()));
        let now = Utc::now();
        // Only copies whose file changed since it was last verified are read back, and their
        // rows are fetched together.
        let to_check: Vec<&str> = live
            .iter()
            .filter(|(id, written_at)| {
                let before = fingerprint(&dir.join(dagcopy::file_name(id)));
                if before.is_some() && self.verified_copies.get(*id) == before.as_ref() {
                    return false;
                }
                // In a shared folder the agent that claimed a copy this recent is writing it.
                !(shared
                    && before.is_none()
                    && now - *written_at < chrono::Duration::seconds(COPY_WRITE_GRACE_SECS))
            })
            .map(|(id, _)| *id)
            .collect();
        // A chunk of rows at a time (one statement each, as one `backfills_any` call would
        // send): at start every copy may need checking, and the rows carry the origin source.
        for chunk in to_check.chunks(COPY_CHECK_CHUNK) {
            let c = self.conn.get()?;
            let rows = Store::new(&mut c.db).backfills_any(chunk)?;
            self.check_copies(&dir, shared, &rows)?;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let unexpected: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let file = entry.file_name();
                let id = file.to_str()?.strip_suffix(".py")?;
                // Files of live backfills (the seed's copies of imported ones included) stay;
                // the others are looked up together.
                (!known.contains(id)).then(|| id.to_owned())
            })
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = unexpected.iter().map(String::as_str).collect();
        let c = self.conn.get()?;
        let gone = Store::new(&mut c.db).gone_copies(&names)?;
        for id in &gone {
            if shared {
                self.fence()?;
            }
            match dagcopy::remove(&dir, &dagcopy::file_name(id)) {
                Ok(()) => {
                    tracing::info!(backfill = %id, "removed the DAG copy of a deleted backfill")
                }
                Err(e) => {
                    tracing::error!(backfill = %id, error = %e, "cannot remove a deleted backfill's DAG copy")
                }
            }
        }
        Ok(())
    }

    /// Save what changed in `verified_copies` since it was last saved (`metadb::copycheck`).
    fn save_verified(&mut self) -> Result<(), DbError> {
        if !self.verified_loaded {
            return Ok(());
        }
        let put: Vec<(String, CopyFingerprint)> = self
            .verified_copies
            .iter()
            .filter(|(id, f)| self.verified_saved.get(*id) != Some(*f))
            .map(|(id, f)| (id.clone(), *f))
            .collect();
        let gone: Vec<String> = self
            .verified_saved
            .keys()
            .filter(|id| !self.verified_copies.contains_key(*id))
            .cloned()
            .collect();
        if put.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let c = self.conn.get()?;
        CopyChecks::new(&mut c.db, &self.host).save(&put, &gone)?;
        for id in &gone {
            self.verified_saved.remove(id);
        }
        self.verified_saved.extend(put);
        Ok(())
    }

    /// Check and restore the copies of `rows` (see `try_converge_copies`).
    fn check_copies(
        &mut self,
        dir: &std::path::Path,
        shared: bool,
        rows: &[BackfillRow],
    ) -> Result<(), DbError> {
        for row in rows {
            let id = &row.id;
            let name = dagcopy::file_name(id);
            let path = dir.join(&name);
            let expected = render_copy(row);
            let current = std::fs::read(&path).ok();
            if current.as_deref() != Some(expected.as_bytes()) {
                if shared {
                    self.fence()?;
                }
                if let Err(e) = dagcopy::write_atomically(
                    dir,
                    &name,
                    expected.as_bytes(),
                    dagcopy::CopyAccess::of_origin(std::path::Path::new(&row.origin_fileloc)),
                ) {
                    tracing::error!(backfill = %id, error = %e, "cannot restore the DAG copy; retrying next pass");
                    continue;
                }
                tracing::info!(backfill = %id, path = %path.display(), was = if current.is_some() { "changed" } else { "missing" }, "DAG copy restored");
            }
            if let Some(f) = fingerprint(&path) {
                self.verified_copies.insert(id.clone(), f);
            }
        }
        Ok(())
    }

    pub(super) fn copy_dir(&self) -> PathBuf {
        self.airflow.dags_folder.join(dagcopy::COPY_SUBDIR)
    }

    /// Write the copy of a `submitted` backfill if it is missing (the only place the origin
    /// source snapshot is read). With a throttle budget the copy registers paused, marked as
    /// held by the throttle, which unpauses it when its turn comes. Returns when it was written.
    pub(super) fn write_copy(
        &mut self,
        id: &str,
    ) -> Result<Option<chrono::DateTime<Utc>>, DbError> {
        let dir = self.copy_dir();
        let name = dagcopy::file_name(id);
        let path = dir.join(&name);
        let path_text = path.to_string_lossy().into_owned();
        let paused = self.config.throttle.has_budget();
        let now = Utc::now();
        let c = self.conn.get()?;
        let Some(row) = Store::new(&mut c.db).backfill(id)? else {
            return Ok(None);
        };
        // A copy another agent (or an earlier pass) claimed is that writer's to write; when its
        // file is missing, the folder's convergence restores it (after a grace period in a shared
        // folder, where the claimer may be writing it right now).
        if row.state != BackfillState::Submitted
            || row.scheduled_at.is_some_and(|t| t > now)
            || row.copy_written_at.is_some()
        {
            return Ok(None);
        }
        if !row.options.after.is_empty() {
            // Checked again right before writing (the pass checked it set-based).
            let prerequisites = Pass::new(&mut c.db, &c.schema)
                .prerequisites(Some(&row.id))?
                .remove(&row.id)
                .unwrap_or_default();
            if ordering::gate(&prerequisites) != Gate::Go {
                return Ok(None);
            }
        }
        let mut row = row;
        // Claim the write first: one agent wins, and a withdraw (which needs an unwritten copy)
        // and this write exclude each other in the DB.
        if !Store::new(&mut c.db).claim_copy(&row.id, &path_text, now, paused)? {
            return Ok(None);
        }
        row.copy_paused = paused;
        let source = render_copy(&row);
        if let Err(e) = dagcopy::write_atomically(
            &dir,
            &name,
            source.as_bytes(),
            dagcopy::CopyAccess::of_origin(std::path::Path::new(&row.origin_fileloc)),
        ) {
            tracing::error!(backfill = %row.id, error = %e, "cannot write the DAG copy; retrying next pass");
            // Give the claim back: until a copy is on disk the backfill can still be withdrawn
            // (a crash right here leaves the claim; convergence then writes the file).
            let c = self.conn.get()?;
            Store::new(&mut c.db).unclaim_copy(&row.id, now)?;
            return Ok(None);
        }
        if let Some(f) = fingerprint(&path) {
            self.verified_copies.insert(row.id.clone(), f);
        }
        let c = self.conn.get()?;
        let fast = Airflow::new(&mut c.db, &c.schema).request_parse(&path_text)?;
        tracing::info!(backfill = %row.id, path = %path_text, parse_requested = fast, paused, "DAG copy written");
        Ok(Some(now))
    }
}

/// The copy's options from the stored ones.
pub(super) fn copy_options(o: &BackfillOptions) -> CopyOptions {
    CopyOptions {
        subset: (!o.tasks.is_empty()).then(|| TaskSubset {
            patterns: o.tasks.clone(),
            task_ids: o.task_ids.clone(),
            include_upstream: o.include_upstream,
            include_downstream: o.include_downstream,
        }),
        emit_asset_events: o.emit_asset_events,
        steered: o.run_order.is_steered(),
    }
}

/// The copy of a backfill, rendered from its stored row alone, so every agent writes the same
/// bytes.
pub(super) fn render_copy(row: &BackfillRow) -> String {
    dagcopy::render_with(
        &row.origin_code,
        &copy_spec(row),
        &copy_options(&row.options),
    )
}

/// The copy's overlay values from the stored row.
pub(super) fn copy_spec(row: &BackfillRow) -> CopySpec {
    let (start, end) = dagcopy::copy_bounds(
        row.start,
        row.end,
        &row.logical_dates,
        row.options.run_order.is_steered(),
    );
    CopySpec {
        backfill_id: row.id.clone(),
        origin_dag_id: row.dag_id.clone(),
        start,
        end,
        max_active_runs: row.max_active_runs,
        params: row.params.clone(),
        description: row.description.clone(),
        paused: row.copy_paused,
    }
}

/// Size, modification time and inode of a regular file (not following links).
pub(super) fn fingerprint(path: &std::path::Path) -> Option<CopyFingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type()
        .is_file()
        .then(|| (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino()))
}
