//! Reconcile passes: the leader's pass over every unfinished backfill (set-based reads, the
//! reconcile rule and the throttle's verdicts applied), and the pass for one backfill right
//! after its request was decided.

use super::*;

/// Wall time of a pass's phases, traced at its end (target `backfilld::engine::phase`, level
/// `trace`: off unless asked for, e.g. `BACKFILLD_LOG=backfilld::engine::phase=trace`).
pub(super) struct Phases {
    on: bool,
    last: Instant,
    took: Vec<(&'static str, u128)>,
}

impl Phases {
    pub(super) fn new() -> Phases {
        Phases {
            on: tracing::enabled!(target: "backfilld::engine::phase", tracing::Level::TRACE),
            last: Instant::now(),
            took: Vec::new(),
        }
    }

    /// The phase `name` ended now.
    pub(super) fn done(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.took
                .push((name, now.duration_since(self.last).as_micros()));
            self.last = now;
        }
    }

    /// Trace the phases of `what`.
    pub(super) fn trace(&self, what: &str) {
        if self.on {
            let list: Vec<String> = self
                .took
                .iter()
                .map(|(n, us)| format!("{n}={us}us"))
                .collect();
            tracing::trace!(target: "backfilld::engine::phase", phases = %list.join(" "), "{what}");
        }
    }
}

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
        // automatic deletion, the reconcile pass proper, steering and notifications.
        let started = Instant::now();
        let before = self.conn.query_count();
        let shared = self.config.cluster.dags_folder_shared;
        let mut phases = Phases::new();
        if !shared {
            self.converge_copies();
        }
        if !self.lead() {
            return;
        }
        if shared {
            self.converge_copies();
        }
        phases.done("converge+lead");
        match self
            .conn
            .current()
            .map(|c| Store::new(&mut c.db).pending_ops())
        {
            Some(Ok(rows)) => {
                if !self.carry_out_all(&rows) {
                    return;
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
            if !self.conn.is_up() {
                return;
            }
        }
        phases.done("auto_delete");
        let mut stats = match self.reconcile_pass() {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass failed; retrying next pass");
                self.lost(&e);
                return;
            }
        };
        phases.done("reconcile_pass");
        if let Err(e) = self.steer_copies() {
            tracing::warn!(error = %e, "cannot name the next run of steered copies; retrying next pass");
            self.lost(&e);
        }
        phases.done("steer");
        self.notify();
        phases.done("notify");
        phases.trace("reconcile_all");
        // The figures include the steering and notification reads that follow the pass.
        stats.queries = self.conn.query_count().saturating_sub(before);
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
        // A seed import (the watermark cleared) asks for a full count.
        let full_due = self.watermark.is_none();
        let mut phases = Phases::new();
        // The cache is out of the connection for the pass: a pass that fails leaves none, and
        // the next pass starts from the kept cache in the DB (`metadb::pass::kept`).
        let (mut cache, recounted, full) = {
            let c = self.conn.get()?;
            let kept = c.pass_cache.take().filter(|k| k.serves(token));
            let mut pass = Pass::new(&mut c.db, &c.schema);
            match kept {
                Some(mut k) if !full_due => {
                    let n = k.refresh(&mut pass, RECOUNT_EVERY)?;
                    (k, n, false)
                }
                Some(old) => {
                    let (mut k, n) = pass_cache::PassCache::full(&mut pass, token)?;
                    k.adopt_saved(old);
                    (k, n, true)
                }
                None => match pass_cache::PassCache::load(&mut pass, token, KEPT_MAX_NEW)? {
                    Some((k, n)) => (k, n, false),
                    None => {
                        let (k, n) = pass_cache::PassCache::full(&mut pass, token)?;
                        (k, n, true)
                    }
                },
            }
        };
        phases.done("refresh");
        let rows = cache.rows();
        // Ordering (`after`): one statement for every backfill still without a copy.
        let gates: HashMap<String, Gate> = if rows
            .iter()
            .any(|r| r.state == BackfillState::Submitted && r.copy_written_at.is_none())
        {
            let c = self.conn.get()?;
            Pass::new(&mut c.db, &c.schema)
                .prerequisites(None)?
                .into_iter()
                .map(|(id, p)| (id, ordering::gate(&p)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut written: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
        for id in plan::copies_due(&rows, &gates, now) {
            if let Some(at) = self.write_copy(&id)? {
                written.insert(id, at);
            }
        }
        phases.done("gates+copies");
        let throttle = self.config.throttle.clone();
        let timeout = chrono::Duration::seconds(
            i64::try_from(self.config.reconcile.register_timeout_secs).unwrap_or(i64::MAX / 1000),
        );
        let c = self.conn.get()?;
        let mut pass = Pass::new(&mut c.db, &c.schema);
        let dags = pass.copy_dags()?;
        phases.done("copy_dags");
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
        phases.done("errors+throttle");
        let runs_of = |id: &str| cache.runs_of(id);
        let steer = &self.steer;
        let steer_waiting = |id: &str| steer.waiting(id).map(str::to_owned);
        let decided = plan::plan(&plan::Facts {
            rows: &rows,
            runs_of: &runs_of,
            dags: &dags,
            import_errors: &errors,
            gates: &gates,
            written: &written,
            load: &load,
            pools_of: &pools_of,
            turn_ended: &self.turn_ended,
            steer_waiting: &steer_waiting,
            throttle: &throttle,
            register_timeout: timeout,
            now,
        });
        // Steering after this pass reads its copies only when some row may be one.
        let catchup = self.config.reconcile.create_runs
            && throttle.max_running_backfill_runs.is_none()
            && throttle.max_running_per_dag.is_none();
        self.steer.none_after_pass = !plan::maybe_steered(&rows, &decided.changes, catchup);
        phases.done("plan");
        for (id, why) in &decided.failed_prerequisites {
            tracing::info!(backfill = %id, reason = %why, "a prerequisite did not succeed");
        }
        for (id, from, to, reason) in &decided.state_changes {
            tracing::info!(backfill = %id, from = %from, to = %to, reason = ?reason, "state change");
        }
        let plan::Plan {
            to_pause,
            to_unpause,
            releasable,
            changes,
            unfinished_by_state,
            turn_ended,
            ..
        } = decided;
        self.turn_ended = turn_ended;
        self.unfinished_by_state = unfinished_by_state;
        let mut stats = PassStats {
            backfills: rows.len(),
            recomputed: recounted,
            full,
            changed: changes.len(),
            ..PassStats::default()
        };
        let unsaved = cache.unsaved();
        phases.done("unsaved");
        let mut renewed = None;
        if !(to_pause.is_empty()
            && to_unpause.is_empty()
            && changes.is_empty()
            && unsaved.delta.is_empty())
        {
            let write_started = Instant::now();
            let (paused, unpaused, signal) = c.db.transaction(|db| {
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
                if !unsaved.delta.is_empty() {
                    pass.keep(&unsaved.delta, now)?;
                }
                let signal = db.signal_now()?;
                Ok::<_, DbError>((paused, unpaused, signal))
            })?;
            // The fence renewed the claim.
            renewed = Some((token, write_started));
            // The write leaves every copy's liveness as it was (`Pass::apply` writes neither
            // `deleted` nor `copy_written_at`); unless a row finished, it makes no deletion
            // due and nothing to notify (the pass never sets `awaiting_approval`).
            c.live_kept.own_write(signal);
            if !changes.iter().any(|ch| ch.decision.state.is_terminal()) {
                c.due_kept.own_write(signal);
                c.quiet_kept.own_write(signal);
            }
            cache.saved(unsaved);
            cache.wrote(signal, changes.iter().map(|ch| ch.id.clone()));
            stats.paused = paused;
            stats.unpaused = unpaused;
        } else {
            // Nothing differs from the kept copy: the next diff starts from here.
            cache.saved(unsaved);
        }
        phases.done("write");
        if renewed.is_some() {
            self.renewed = renewed;
        }
        self.steer.releasable = Some(releasable);
        phases.trace("reconcile_pass");
        if let Some(c) = self.conn.current() {
            c.pass_cache = Some(cache);
        }
        self.watermark = Some(now);
        Ok(stats)
    }

    pub(super) fn reconcile_id(&mut self, id: &str) {
        if let Err(e) = self.write_copy(id) {
            tracing::warn!(backfill = %id, error = %e, "cannot write the DAG copy yet; retrying next pass");
            self.lost(&e);
        }
    }
}
