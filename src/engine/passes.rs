//! Reconcile passes: the leader's pass over every unfinished backfill (set-based reads, the
//! reconcile rule and the throttle's verdicts applied), and the pass for one backfill right
//! after its request was decided.

use super::*;

impl Engine {
    /// Carry out the pending Airflow-side work of life-cycle actions, then reconcile every
    /// unfinished backfill; then publish the metrics (`[metrics]`).
    pub fn reconcile(&mut self) {
        self.reconcile_all();
        self.guard_housekeeping();
        self.publish_metrics();
    }

    pub(super) fn reconcile_all(&mut self) {
        if self.ensure_connected().is_err() {
            return;
        }
        // A pass's figures cover everything it does: copy convergence, life-cycle work,
        // automatic deletion and the reconcile pass proper.
        let started = Instant::now();
        let before = self.conn.as_ref().map_or(0, |c| c.db.query_count());
        let shared = self.config.cluster.dags_folder_shared;
        if !shared {
            self.converge_copies();
        }
        if !self.lead() {
            return;
        }
        if shared {
            self.converge_copies();
        }
        match self
            .conn
            .as_mut()
            .map(|c| Store::new(&mut c.db).pending_ops())
        {
            Some(Ok(rows)) => {
                for row in rows {
                    if let Err(e) = self.carry_out(&row) {
                        tracing::warn!(backfill = %row.id, error = %e, "life-cycle action not carried out yet; retrying next pass");
                        self.lost(&e);
                        if self.conn.is_none() {
                            return;
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot list pending life-cycle actions");
                self.lost(&e);
                return;
            }
            None => return,
        }
        if let Err(e) = self.auto_delete() {
            tracing::warn!(error = %e, "automatic deletion failed; retrying next pass");
            self.lost(&e);
            if self.conn.is_none() {
                return;
            }
        }
        match self.reconcile_pass() {
            Ok(mut stats) => {
                stats.queries = self
                    .conn
                    .as_ref()
                    .map_or(0, |c| c.db.query_count().saturating_sub(before));
                stats.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if stats.changed + stats.paused + stats.unpaused > 0 {
                    tracing::info!(
                        backfills = stats.backfills,
                        recomputed = stats.recomputed,
                        changed = stats.changed,
                        paused = stats.paused,
                        unpaused = stats.unpaused,
                        queries = stats.queries,
                        full = stats.full,
                        elapsed_ms = stats.millis,
                        "reconcile pass"
                    );
                } else {
                    tracing::debug!(
                        backfills = stats.backfills,
                        recomputed = stats.recomputed,
                        queries = stats.queries,
                        full = stats.full,
                        elapsed_ms = stats.millis,
                        "reconcile pass"
                    );
                }
                self.last_pass = stats;
                self.passes += 1;
                self.last_pass_at = Some((Utc::now(), started.elapsed().as_secs_f64()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass failed; retrying next pass");
                self.lost(&e);
                return;
            }
        }
        if let Err(e) = self.steer_copies() {
            tracing::warn!(error = %e, "cannot name the next run of steered copies; retrying next pass");
            self.lost(&e);
        }
    }

    /// Figures of the last reconcile pass (queries issued, backfills, changes).
    pub fn last_pass(&self) -> PassStats {
        self.last_pass
    }

    /// One set-based pass over every unfinished backfill: write missing copies, then a fixed
    /// number of reads (backfills, copies' `dag` rows, import errors, run counts; with a
    /// throttle, the origin DAGs' runs and pool use), the reconcile rule and the throttle in
    /// memory, and batched writes of what changed. Between full passes, the rows and run
    /// counts of the last pass are kept: only changed rows are read again, and only the runs
    /// that are new or left or entered the queued/running set update the counts
    /// (`engine::pass_cache`).
    pub(super) fn reconcile_pass(&mut self) -> Result<PassStats, DbError> {
        let now = Utc::now();
        let host = self.host.clone();
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let ttl_ms = self.lease_ttl_ms();
        let full_due = self.watermark.is_none() || self.passes_since_full >= FULL_PASS_EVERY;
        // The cache is out of the connection for the pass: a pass that fails leaves none, and
        // the next pass is full.
        let (cache, recounted, full) = {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            let kept = c.pass_cache.take().filter(|k| !full_due && k.serves(token));
            let mut pass = Pass::new(&mut c.db, &c.schema);
            match kept {
                Some(mut k) => {
                    let n = k.refresh(&mut pass)?;
                    (k, n, false)
                }
                None => {
                    let (k, n) = pass_cache::PassCache::full(&mut pass, token)?;
                    (k, n, true)
                }
            }
        };
        let rows = cache.rows();
        // Ordering (`after`): one statement for every backfill still without a copy.
        let gates: HashMap<String, Gate> = if rows
            .iter()
            .any(|r| r.state == BackfillState::Submitted && r.copy_written_at.is_none())
        {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Pass::new(&mut c.db, &c.schema)
                .prerequisites(None)?
                .into_iter()
                .map(|(id, p)| (id, ordering::gate(&p)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut written: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
        for row in &rows {
            if row.state == BackfillState::Submitted
                && gates.get(&row.id).is_none_or(|g| *g == Gate::Go)
                && row.scheduled_at.is_none_or(|t| t <= now)
                && row.copy_written_at.is_none()
            {
                if let Some(at) = self.write_copy(&row.id)? {
                    written.insert(row.id.clone(), at);
                }
            }
        }
        let throttle = self.config.throttle.clone();
        let timeout = chrono::Duration::seconds(
            i64::try_from(self.config.reconcile.register_timeout_secs).unwrap_or(i64::MAX / 1000),
        );
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut pass = Pass::new(&mut c.db, &c.schema);
        let dags = pass.copy_dags()?;
        let errors = pass.copy_import_errors(dagcopy::COPY_SUBDIR)?;
        let throttling = throttle.has_budget() || throttle.yield_to_scheduled;
        let mut load = throttle::Load::default();
        let mut pools_of: HashMap<String, Vec<String>> = HashMap::new();
        if throttling && !rows.is_empty() {
            let mut origins: Vec<&str> = rows.iter().map(|r| r.dag_id.as_str()).collect();
            origins.sort_unstable();
            origins.dedup();
            for run in pass.origin_runs(&origins)? {
                let date = run
                    .logical_date
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                let date = date.trim_end_matches(" 00:00").to_owned();
                load.origin_runs.entry(run.dag_id).or_insert(date);
            }
            if throttle.pool_share_percent.is_some() || throttle.yield_to_scheduled {
                for (pool, used) in pass.pool_use(|id| cache.has(id))? {
                    let ours: u32 = used.by_backfill.values().sum();
                    for id in used.by_backfill.keys() {
                        pools_of.entry(id.clone()).or_default().push(pool.clone());
                    }
                    load.pools.insert(pool, (used.slots, ours, used.others));
                }
            }
        }
        let runs_of = |row: &PassRow| cache.runs_of(&row.id);
        let live: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        self.turn_ended.retain(|id, _| live.contains(id.as_str()));
        let mut candidates = Vec::new();
        let mut candidate_of: HashMap<&str, usize> = HashMap::new();
        for row in &rows {
            let runs = runs_of(row);
            if runs.active() == 0 && row.progress.running + row.progress.queued > 0 {
                self.turn_ended.insert(row.id.clone(), now);
            }
            // Without a throttle every registered copy is `Untouched`: no candidates to build.
            if !throttling {
                continue;
            }
            let Some(&paused) = dags.get(&row.id) else {
                continue;
            };
            let paused_elsewhere = paused && !row.throttled;
            candidate_of.insert(&row.id, candidates.len());
            candidates.push(throttle::Candidate {
                id: row.id.clone(),
                dag_id: row.dag_id.clone(),
                waiting_since: self
                    .turn_ended
                    .get(&row.id)
                    .copied()
                    .unwrap_or(row.submitted_at),
                active: runs.active(),
                pending: row
                    .progress
                    .total
                    .saturating_sub(runs.active() + runs.succeeded + runs.failed),
                max_active_runs: row.max_active_runs,
                hands_off: row.user_paused || row.pending_op.is_some() || paused_elsewhere,
                pools: pools_of.remove(&row.id).unwrap_or_default(),
                priority: row.priority,
            });
        }
        let verdicts = if throttling {
            throttle::decide(&throttle, &candidates, &load)
        } else {
            vec![throttle::Verdict::Untouched; candidates.len()]
        };
        let mut stats = PassStats {
            backfills: rows.len(),
            recomputed: recounted,
            full,
            ..PassStats::default()
        };
        // A copy paused now may have had a run created since it was read: unpause others
        // only in the next pass, once that run is counted.
        let pausing = rows.iter().any(|row| {
            dags.get(&row.id) == Some(&false)
                && candidate_of
                    .get(row.id.as_str())
                    .and_then(|&i| verdicts.get(i))
                    .is_some_and(|v| matches!(v, throttle::Verdict::Hold(_)))
        });
        let (mut to_pause, mut to_unpause, mut changes) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let airflow_paused = dags.get(&row.id).copied();
            let deferred = throttle::Verdict::Hold(
                row.state_reason
                    .clone()
                    .unwrap_or_else(|| "throttled: waiting for a free slot".to_owned()),
            );
            let verdict = if throttling {
                candidate_of
                    .get(row.id.as_str())
                    .and_then(|&i| verdicts.get(i))
            } else {
                dags.get(&row.id).map(|_| &throttle::Verdict::Untouched)
            }
            .map(|v| match v {
                throttle::Verdict::Go
                    if pausing && row.throttled && airflow_paused == Some(true) =>
                {
                    &deferred
                }
                v => v,
            });
            let throttled = match verdict {
                Some(throttle::Verdict::Hold(_)) => {
                    if airflow_paused == Some(false) {
                        to_pause.push(row.id.clone());
                    }
                    true
                }
                Some(throttle::Verdict::Go) => {
                    if row.throttled && airflow_paused == Some(true) {
                        to_unpause.push(row.id.clone());
                    }
                    false
                }
                Some(throttle::Verdict::Untouched) => false,
                None => row.throttled,
            };
            // A copy the throttle holds or releases now is not paused in the user's sense.
            let released = row.throttled && matches!(verdict, Some(throttle::Verdict::Go));
            let import_error = row.copy_path.as_deref().and_then(|path| {
                errors
                    .iter()
                    .find(|(name, _)| airflow::is_path_suffix(path, name))
                    .map(|(_, e)| e.clone())
            });
            let obs = Observation {
                registered: airflow_paused.map(|p| p && !(throttled || released)),
                import_error,
                runs: runs_of(row),
            };
            let written_at = written.get(&row.id).copied().or(row.copy_written_at);
            let age = written_at
                .map(|t| now - t)
                .unwrap_or_else(chrono::Duration::zero);
            let mut d = reconcile::decide(row.state, row.progress.total, &obs, age, timeout);
            if d.state == BackfillState::Submitted && !written.contains_key(&row.id) {
                match gates.get(&row.id) {
                    Some(Gate::Wait(why)) => d.reason = Some(why.clone()),
                    Some(Gate::Fail(why)) => {
                        tracing::info!(backfill = %row.id, reason = %why, "a prerequisite did not succeed");
                        d.state = BackfillState::Failed;
                        d.reason = Some(why.clone());
                    }
                    Some(Gate::Go) | None => {}
                }
            }
            if let Some(throttle::Verdict::Hold(why)) = verdict {
                if !d.state.is_terminal() && d.reason.is_none() {
                    d.reason = Some(why.clone());
                }
            }
            let unchanged = d.state == row.state
                && d.reason == row.state_reason
                && d.progress == row.progress
                && d.run_start == row.run_start
                && d.run_end == row.run_end
                && throttled == row.throttled;
            if !unchanged {
                if d.state != row.state {
                    tracing::info!(backfill = %row.id, from = %row.state, to = %d.state, reason = ?d.reason, "state change");
                }
                changes.push(pass::Change {
                    id: row.id.clone(),
                    decision: d,
                    throttled,
                });
            }
        }
        self.unfinished_by_state.clear();
        let new_state: HashMap<&str, BackfillState> = changes
            .iter()
            .map(|c| (c.id.as_str(), c.decision.state))
            .collect();
        for row in &rows {
            let state = new_state.get(row.id.as_str()).copied().unwrap_or(row.state);
            if !state.is_terminal() {
                *self.unfinished_by_state.entry(state).or_insert(0) += 1;
            }
        }
        stats.changed = changes.len();
        if !(to_pause.is_empty() && to_unpause.is_empty() && changes.is_empty()) {
            let (paused, unpaused) = c.db.transaction(|db| {
                if !Leases::new(db).fence(LEADER, &host, token, ttl_ms)? {
                    return Err(DbError::NotHolder(LEADER));
                }
                let mut pass = Pass::new(db, &c.schema);
                let paused = if to_pause.is_empty() {
                    0
                } else {
                    pass.set_copies_paused(&to_pause, true)?
                };
                let unpaused = if to_unpause.is_empty() {
                    0
                } else {
                    pass.set_copies_paused(&to_unpause, false)?
                };
                pass.apply(&changes, now)?;
                Ok::<_, DbError>((paused, unpaused))
            })?;
            stats.paused = paused;
            stats.unpaused = unpaused;
        }
        if let Some(c) = self.conn.as_mut() {
            c.pass_cache = Some(cache);
        }
        self.watermark = Some(now);
        self.passes_since_full = if full { 0 } else { self.passes_since_full + 1 };
        Ok(stats)
    }

    pub(super) fn reconcile_id(&mut self, id: &str) {
        if let Err(e) = self.write_copy(id) {
            tracing::warn!(backfill = %id, error = %e, "cannot write the DAG copy yet; retrying next pass");
            self.lost(&e);
        }
    }
}
