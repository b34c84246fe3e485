//! Ingest in batches: a scan claims what is in `incoming/`, then decides the claimed files up
//! to [`BATCH_MAX`] at a time.
//!
//! A batch's decisions (validation, audit rows, accepted backfills, request rows) run in one
//! write transaction, each file in a savepoint of its own, so a file that cannot be decided
//! now (a DB error) is undone alone and waits in `active/` as before, while the batch commits
//! once. The facts that repeat within a batch are read once: user names of uids, the FAB
//! user and grants of an Airflow user, and a DAG's `dag` row, serialized DAG and source. Only
//! after the commit are the copies claimed (one transaction), written
//! ([`dagcopy::write_many`]: data fsynced together, one directory fsync), their parse
//! requested (one transaction), and the files moved with their receipts
//! ([`crate::spool::Spool::finish_many`]).
//!
//! A crash anywhere leaves each file in `active/`: before the commit it is decided again;
//! after it, its key is recorded, so the next scan writes the missing copies and finishes the
//! move (a claimed copy whose file never got written is also restored by the pass's
//! convergence of the copies). Life-cycle requests (which run a reconcile pass first) are
//! decided one at a time, between batches, in the order they were claimed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use super::decide::DagFacts;
use super::{fingerprint, render_copy, Engine, IdCursor};
use crate::authz::Subject;
use crate::dagcopy;
use crate::failpoint;
use crate::metadb::airflow::Airflow;
use crate::metadb::store::{BackfillRow, RequestRecord, Store};
use crate::metadb::DbError;
use crate::request::{self, Parsed};
use crate::spool::{self, ClaimedFile, Disposition};
use crate::state::BackfillState;

/// Most files decided in one transaction: bounds how long the write lock is held (on SQLite
/// the whole database's) and how long the first file of a burst waits for its copy.
const BATCH_MAX: usize = 200;

/// What a batch reads once.
#[derive(Default)]
pub(super) struct BatchCache {
    /// Unix user names of uids.
    pub(super) users: HashMap<u32, Option<String>>,
    /// FAB users with their roles and grants (`None`: no such user).
    pub(super) subjects: HashMap<String, Option<Subject>>,
    /// Airflow's facts of a DAG.
    pub(super) dags: HashMap<String, Arc<DagFacts>>,
    /// Where the search for a free backfill id goes on, by origin DAG.
    pub(super) ids: HashMap<String, IdCursor>,
}

impl Engine {
    /// One ingest pass: claim everything in `incoming/`, then decide every claimed file, in
    /// batches. Loops until a pass finds nothing new. Returns how many files were decided.
    pub fn scan(&mut self) -> usize {
        let mut decided = 0;
        loop {
            match self.spool.incoming() {
                Ok(names) => {
                    self.guards.deferred.clear();
                    let now = std::time::Instant::now();
                    for name in names {
                        // Pace each uid (as lstat sees the name; the requester is decided
                        // later from the opened file): over its rate, a file waits here.
                        if let Some(uid) = self.spool.incoming_owner(&name) {
                            let trusted = self.config.identity.is_trusted(uid);
                            if !self.guards.admit_file(uid, trusted, now) {
                                continue;
                            }
                        }
                        match self.spool.claim(&name) {
                            Ok(Some(claim)) => {
                                tracing::debug!(file = %name, claim = %claim, "claimed")
                            }
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "cannot claim a spool file"),
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list the spool"),
            }
            let claimed = match self.spool.claimed() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list claimed files");
                    return decided;
                }
            };
            if claimed.is_empty() {
                return decided;
            }
            let mut progress = false;
            let mut pending: HashMap<u32, usize> = HashMap::new();
            let mut rest: &[String] = &claimed;
            while !rest.is_empty() {
                if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // The rest stay claimed in active/ and are decided after the restart.
                    return decided;
                }
                let (taken, done) = self.ingest_batch(rest, &mut pending);
                rest = rest.get(taken.max(1)..).unwrap_or_default();
                decided += done;
                progress |= done > 0;
            }
            if !progress {
                return decided;
            }
        }
    }

    /// Decide the next files of `names`: a batch of create requests (and files refused
    /// before parsing), or one life-cycle request alone. Returns how many names it took and
    /// how many files it decided.
    fn ingest_batch(
        &mut self,
        names: &[String],
        pending: &mut HashMap<u32, usize>,
    ) -> (usize, usize) {
        let max_runs = self.config.limits.max_active_runs;
        let mut files = Vec::new();
        let mut taken = 0;
        for name in names {
            if files.len() >= BATCH_MAX {
                break;
            }
            let file = match self.spool.read_claimed(name) {
                Ok(f) => f,
                Err(e) => {
                    taken += 1;
                    tracing::warn!(claim = %name, error = %e, "request waits: cannot decide it now");
                    continue;
                }
            };
            let operation = matches!(&file.content,
                Ok(c) if matches!(request::parse_any(&c.bytes, max_runs), Ok(Parsed::Operate(_))));
            if operation {
                if !files.is_empty() {
                    break;
                }
                taken += 1;
                return match self.decide_file(file, pending) {
                    Ok(()) => (taken, 1),
                    Err(e) => {
                        self.lost(&e);
                        tracing::warn!(claim = %name, error = %e, "request waits: cannot decide it now");
                        (taken, 0)
                    }
                };
            }
            taken += 1;
            files.push(file);
        }
        if files.is_empty() {
            return (taken, 0);
        }
        (taken, self.decide_batch(files, pending))
    }

    /// Decide `files` together (see the module documentation); returns how many were decided
    /// and moved.
    fn decide_batch(
        &mut self,
        files: Vec<ClaimedFile>,
        pending: &mut HashMap<u32, usize>,
    ) -> usize {
        if let Err(e) = self.ensure_connected() {
            for f in &files {
                tracing::warn!(claim = %f.claim_name, error = %e, "request waits: cannot decide it now");
            }
            return 0;
        }
        self.prefetch_airflow_runs(&files);
        self.batch = Some(BatchCache::default());
        let decided = self.decide_in_transaction(files, pending);
        self.batch = None;
        if decided.iter().any(|(_, r)| r.backfill_id.is_some()) {
            failpoint::hang_if_armed(failpoint::AFTER_ACCEPT);
        }
        let ids: Vec<String> = decided
            .iter()
            .filter_map(|(_, r)| r.backfill_id.clone())
            .collect();
        self.write_copies(&ids);
        let mut moves = Vec::with_capacity(decided.len());
        for (file, record) in &decided {
            let to = if record.outcome.is_accepted() {
                Disposition::Accepted
            } else {
                Disposition::Rejected
            };
            match serde_json::to_value(crate::control::RequestView::from(record.clone())) {
                Ok(receipt) => moves.push((file.claim_name.clone(), to, receipt)),
                Err(e) => {
                    tracing::warn!(claim = %file.claim_name, error = %e, "request waits: cannot decide it now")
                }
            }
        }
        let results = self.spool.finish_many(&moves);
        let mut moved = 0;
        for ((claim, _, _), result) in moves.iter().zip(results) {
            match result {
                Ok(()) => moved += 1,
                Err(e) => {
                    tracing::warn!(claim = %claim, error = %e, "request waits: cannot decide it now")
                }
            }
        }
        moved
    }

    /// The outcomes of `files`, decided and recorded in one transaction (each file in a
    /// savepoint). Files that could not be decided are left out (they wait in `active/`); all
    /// of them when the transaction cannot be committed.
    fn decide_in_transaction(
        &mut self,
        files: Vec<ClaimedFile>,
        pending: &mut HashMap<u32, usize>,
    ) -> Vec<(ClaimedFile, RequestRecord)> {
        let wait_all = |files: &[ClaimedFile], e: &DbError| {
            for f in files {
                tracing::warn!(claim = %f.claim_name, error = %e, "request waits: cannot decide it now");
            }
        };
        if let Err(e) = self.db_begin() {
            wait_all(&files, &e);
            self.lost(&e);
            return Vec::new();
        }
        let mut decided = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let outcome = self
                .db_begin()
                .and_then(|()| self.record_of(file.clone(), pending));
            let result = match outcome {
                Ok(record) => self.db_commit().map(|()| record),
                Err(e) => {
                    if let Some(c) = self.conn.current() {
                        let _ = c.db.rollback();
                    }
                    Err(e)
                }
            };
            match result {
                Ok(record) => decided.push((file.clone(), record)),
                Err(e) if e.is_connection_lost() => {
                    wait_all(files.get(i..).unwrap_or_default(), &e);
                    wait_all(
                        &decided.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
                        &e,
                    );
                    self.lost(&e);
                    return Vec::new();
                }
                Err(e) => {
                    tracing::warn!(claim = %file.claim_name, error = %e, "request waits: cannot decide it now");
                }
            }
        }
        if let Err(e) = self.db_commit() {
            wait_all(&files, &e);
            self.lost(&e);
            return Vec::new();
        }
        decided
    }

    fn db_begin(&mut self) -> Result<(), DbError> {
        self.conn.get()?.db.begin()
    }

    fn db_commit(&mut self) -> Result<(), DbError> {
        self.conn.get()?.db.commit()
    }

    /// The unix user name of `uid` (once per batch).
    pub(super) fn user_name(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.batch.as_ref().and_then(|b| b.users.get(&uid)) {
            return name.clone();
        }
        let name = spool::user_name(uid);
        if let Some(b) = self.batch.as_mut() {
            b.users.insert(uid, name.clone());
        }
        name
    }

    /// Airflow's facts of `dag_id` (once per batch).
    pub(super) fn dag_facts(&mut self, dag_id: &str) -> Result<Arc<DagFacts>, DbError> {
        if let Some(f) = self.batch.as_ref().and_then(|b| b.dags.get(dag_id)) {
            return Ok(f.clone());
        }
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let dag = af.dag(dag_id)?;
        let (serialized, source_code) = match &dag {
            Some(d) if d.is_active => {
                let serialized = af.serialized_dag(dag_id)?;
                let source_code = match (&d.fileloc, &serialized) {
                    (Some(fileloc), Some(_)) => af.source_code(dag_id, fileloc)?,
                    _ => None,
                };
                (serialized, source_code)
            }
            _ => (None, None),
        };
        let facts = Arc::new(DagFacts {
            dag,
            serialized,
            source_code,
        });
        if let Some(b) = self.batch.as_mut() {
            b.dags.insert(dag_id.to_owned(), facts.clone());
        }
        Ok(facts)
    }

    /// Write the missing copies of the backfills `ids` accepted (as [`Engine::write_copy`]
    /// would, one by one): claims in one transaction, files by [`dagcopy::write_many`], parse
    /// requests in one transaction. Backfills with prerequisites go through `write_copy`.
    fn write_copies(&mut self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.try_write_copies(ids) {
            tracing::warn!(error = %e, "cannot write the DAG copies yet; retrying next pass");
            self.lost(&e);
        }
    }

    fn try_write_copies(&mut self, ids: &[String]) -> Result<(), DbError> {
        let dir = self.copy_dir();
        let paused = self.config.throttle.has_budget();
        let now = Utc::now();
        let mut gated = Vec::new();
        let c = self.conn.get()?;
        let claimed: Vec<(BackfillRow, bool)> = c.db.transaction(|db| {
            let mut s = Store::new(db);
            let mut claimed = Vec::new();
            for id in ids {
                let Some(mut row) = s.backfill(id)? else {
                    continue;
                };
                let path = dir.join(dagcopy::file_name(id));
                if row.state != BackfillState::Submitted
                    || row.scheduled_at.is_some_and(|t| t > now)
                    || (row.copy_written_at.is_some() && path.exists())
                {
                    continue;
                }
                if !row.options.after.is_empty() {
                    gated.push(id.clone());
                    continue;
                }
                let claimed_now = row.copy_written_at.is_none();
                if claimed_now {
                    let path_text = path.to_string_lossy().into_owned();
                    if !s.claim_copy(&row.id, &path_text, now, paused)? {
                        continue;
                    }
                    row.copy_paused = paused;
                }
                claimed.push((row, claimed_now));
            }
            Ok::<_, DbError>(claimed)
        })?;
        let files: Vec<(String, Vec<u8>, dagcopy::CopyAccess)> = claimed
            .iter()
            .map(|(row, _)| {
                (
                    dagcopy::file_name(&row.id),
                    render_copy(row).into_bytes(),
                    dagcopy::CopyAccess::of_origin(std::path::Path::new(&row.origin_fileloc)),
                )
            })
            .collect();
        let results = dagcopy::write_many(&dir, &files);
        let mut written = Vec::new();
        for ((row, claimed_now), result) in claimed.iter().zip(results) {
            match result {
                Ok(path) => {
                    if let Some(f) = fingerprint(&path) {
                        self.verified_copies.insert(row.id.clone(), f);
                    }
                    written.push((row.id.clone(), path.to_string_lossy().into_owned()));
                }
                Err(e) => {
                    tracing::error!(backfill = %row.id, error = %e, "cannot write the DAG copy; retrying next pass");
                    if *claimed_now {
                        // Give the claim back: until a copy is on disk the backfill can still
                        // be withdrawn.
                        let c = self.conn.get()?;
                        Store::new(&mut c.db).unclaim_copy(&row.id, now)?;
                    }
                }
            }
        }
        let c = self.conn.get()?;
        let super::Connected { db, schema, .. } = c;
        let requested = db.transaction(|db| {
            let mut af = Airflow::new(db, schema);
            written
                .iter()
                .map(|(_, path)| af.request_parse(path))
                .collect::<Result<Vec<bool>, DbError>>()
        })?;
        for ((id, path), fast) in written.iter().zip(requested) {
            tracing::info!(backfill = %id, path = %path, parse_requested = fast, paused, "DAG copy written");
        }
        for id in gated {
            self.reconcile_id(&id);
        }
        Ok(())
    }
}
