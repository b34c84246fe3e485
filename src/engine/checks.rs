//! The checks of a request that need the metadata DB: the origin DAG and its dates, the
//! prerequisites (`after`), a life-cycle action's target, the failed dates a retry runs, and a
//! free backfill id.

use super::*;

impl Engine {
    /// The checks of `after`: every named backfill exists and the requester may read it
    /// (`can_read` on `Backfills`, as for `backfillctl status`, and read on its origin DAG; one
    /// that may not be read is reported like a missing one, so refusals reveal nothing), and
    /// none of them already failed, was cancelled or deleted before it finished.
    pub(super) fn check_after(
        &mut self,
        subject: &Subject,
        after: &[String],
    ) -> Result<Result<(), Rejection>, DbError> {
        if after.is_empty() {
            return Ok(Ok(()));
        }
        if let Err(d) = authz::authorize(subject, Action::Read, None) {
            let mut r = Rejection::from(d);
            r.message = format!("after needs permission to read backfills: {}", r.message);
            return Ok(Err(r));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut s = Store::new(&mut c.db);
        for id in after {
            let row = s
                .backfill_any(id)?
                .filter(|b| authz::authorize(subject, Action::Read, Some(&b.dag_id)).is_ok());
            let Some(row) = row else {
                return Ok(Err(Rejection::new(
                    ReasonCode::UnknownPrerequisite,
                    format!("after: no backfill {id:?} that you may read"),
                )));
            };
            let p = ordering::Prerequisite {
                id: row.id,
                state: Some(row.state),
                reason: row.state_reason,
                deleted: row.deleted,
            };
            if let Some(why) = ordering::broken(&p) {
                return Ok(Err(Rejection::new(ReasonCode::PrerequisiteFailed, why)));
            }
        }
        Ok(Ok(()))
    }

    /// The checks of a life-cycle request: permission on `Backfills`, the backfill exists,
    /// permission on its origin DAG, and the state machine of `lifecycle` allows it.
    pub(super) fn check_operation(
        &mut self,
        subject: &Subject,
        ident: &Identity,
        op: Operation,
    ) -> Result<Result<Accepted, Rejection>, DbError> {
        if let Err(d) = authz::authorize(subject, op.action, None) {
            return Ok(Err(d.into()));
        }
        // Decide on fresh facts: the stored state may lag Airflow by up to one reconcile
        // interval (a copy that just started running may still read `submitted`).
        self.reconcile();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let Some(row) = Store::new(&mut c.db).backfill_any(&op.id)? else {
            return Ok(Err(Rejection::new(
                ReasonCode::UnknownBackfill,
                format!("no backfill with id {:?}", op.id),
            )));
        };
        if let Err(d) = authz::authorize(subject, op.action, Some(&row.dag_id)) {
            return Ok(Err(d.into()));
        }
        let facts = Facts {
            state: row.state,
            deleted: row.deleted,
            copy_written: row.copy_written_at.is_some(),
            failed_dates: row.progress.failed,
        };
        let effect = match lifecycle::plan(op.action, facts) {
            Ok(e) => e,
            Err(refusal) => {
                return Ok(Err(Rejection::new(
                    ReasonCode::IllegalTransition,
                    refusal.0,
                )))
            }
        };
        if matches!(effect, Effect::Approve | Effect::Reject) {
            let decider = approval::Decider {
                subject,
                uid: ident.uid,
                on_behalf: ident.on_behalf_of.is_some(),
            };
            let requester = approval::Requester {
                airflow_user: &row.submitted_by,
                uid: row.submitted_uid,
                on_behalf: row.on_behalf_of.is_some(),
            };
            let roles = &self.config.approval.approver_roles;
            if let Err(r) = approval::decide(decider, requester, &row.dag_id, roles, op.action) {
                return Ok(Err(r));
            }
        }
        let retry = if effect == Effect::RetryFailed {
            match self.retry_of(&row, ident)? {
                Ok(new) => new,
                Err(r) => return Ok(Err(r)),
            }
        } else {
            Vec::new()
        };
        Ok(Ok(Accepted::Operate {
            id: row.id,
            effect,
            retry,
            reason: op.reason,
        }))
    }

    /// The new backfill retrying the failed dates of `row`, with the origin DAG's current
    /// source (so a fixed DAG runs fixed).
    pub(super) fn retry_of(
        &mut self,
        row: &BackfillRow,
        ident: &Identity,
    ) -> Result<Result<Vec<NewBackfill>, Rejection>, DbError> {
        if let Some(refusal) = self.over_active_limit(ident)? {
            return Ok(Err(refusal));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let runs = af.runs(&row.id)?;
        let failed: Vec<bool> = row
            .logical_dates
            .iter()
            .map(|d| {
                runs.iter()
                    .any(|r| r.logical_date == *d && r.state == RunState::Failed)
            })
            .collect();
        let segments = match lifecycle::retry_dates(&row.logical_dates, &failed) {
            Ok(s) => s,
            Err(refusal) => {
                return Ok(Err(Rejection::new(
                    ReasonCode::IllegalTransition,
                    refusal.0,
                )))
            }
        };
        let origin_code = af
            .source_code(&row.dag_id, &row.origin_fileloc)?
            .unwrap_or_else(|| row.origin_code.clone());
        let serialized = if row.options.tasks.is_empty() {
            None
        } else {
            // The retry runs the origin's current source: select its tasks again.
            let Some(serialized) = af.serialized_dag(&row.dag_id)? else {
                return Ok(Err(Rejection::new(
                    ReasonCode::DagNotSerialized,
                    format!(
                        "Airflow has no serialized DAG {:?} to select the tasks of the retry from",
                        row.dag_id
                    ),
                )));
            };
            Some(serialized)
        };
        let mut retries = Vec::new();
        for dates in segments {
            let (Some(&start), Some(&end)) = (dates.first(), dates.last()) else {
                continue;
            };
            let mut new = new_backfill(
                Request {
                    dag_id: row.dag_id.clone(),
                    start,
                    end,
                    wall_clock: request::WallClock::default(),
                    description: Some(format!("retry of {}", row.id)),
                    max_active_runs: row.max_active_runs,
                    params: row.params.clone(),
                    ignore_overlap: row.ignore_overlap,
                    on_behalf_of: ident.on_behalf_of.clone(),
                    dry_run: false,
                    scheduled_at: None,
                    delete_after_days: row.delete_after_days,
                    reprocess: Reprocess::Completed,
                    // The same tasks and asset events; the prerequisites already succeeded.
                    options: request::Options {
                        tasks: row.options.tasks.clone(),
                        include_upstream: row.options.include_upstream,
                        include_downstream: row.options.include_downstream,
                        emit_asset_events: Some(row.options.emit_asset_events),
                        after: Vec::new(),
                        priority: row.options.priority,
                        run_backwards: row.options.run_order == RunOrder::NewestFirst,
                        notify: row.options.notify.clone(),
                    },
                },
                dates,
                row.origin_fileloc.clone(),
                origin_code.clone(),
                ident,
                &self.config.throttle,
            );
            new.retry_of = Some(row.id.clone());
            if let Some(serialized) = &serialized {
                if let Err(r) = resolve_tasks(&row.dag_id, serialized, &mut new.options) {
                    return Ok(Err(r));
                }
            }
            if !new.ignore_overlap {
                let overlapping = Store::new(&mut c.db).overlapping(&new.dag_id, start, end)?;
                if !overlapping.is_empty() {
                    return Ok(Err(Rejection::new(
                        ReasonCode::Overlap,
                        format!(
                            "the failed dates overlap active backfill(s) of {:?}: {}",
                            new.dag_id,
                            overlapping.join(", ")
                        ),
                    )));
                }
            }
            retries.push(new);
        }
        Ok(Ok(retries))
    }

    /// The checks of an authorised request against Airflow's DAG and backfilld's backfills.
    pub(super) fn check_dag(
        &mut self,
        mut req: Request,
        ident: &Identity,
    ) -> Result<Result<NewBackfill, Rejection>, DbError> {
        let limit = self.config.limits.max_dates_per_request;
        let approval = self.config.approval.clone();
        let default_delete_after_days = self.config.reconcile.delete_after_days;
        let default_emit_asset_events = self.config.copies.emit_asset_events;
        let budgets = self.config.throttle.clone();
        let facts = self.dag_facts(&req.dag_id)?;
        let Some(dag) = &facts.dag else {
            return Ok(Err(Rejection::new(
                ReasonCode::UnknownDag,
                format!("Airflow has no DAG with id {:?}", req.dag_id),
            )));
        };
        if !dag.is_active {
            return Ok(Err(Rejection::new(
                ReasonCode::DagDeleted,
                format!("DAG {:?} is no longer active in Airflow (its file was removed or it failed to parse)", req.dag_id),
            )));
        }
        let not_serialized = || {
            Rejection::new(
                ReasonCode::DagNotSerialized,
                format!("Airflow has not stored DAG {:?} and its source yet; try again after the next parse", req.dag_id),
            )
        };
        let (Some(fileloc), Some(serialized)) = (dag.fileloc.clone(), facts.serialized.as_ref())
        else {
            return Ok(Err(not_serialized()));
        };
        let Some(origin_code) = facts.source_code.clone() else {
            return Ok(Err(not_serialized()));
        };
        if let Some(reason) = crate::runtypes::backfill_refusal(&req.dag_id, serialized) {
            return Ok(Err(Rejection::new(ReasonCode::BackfillNotAllowed, reason)));
        }
        let mut dates = match self.range_dates(&mut req, serialized, limit) {
            Ok(d) => d,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if dates.is_empty() {
            return Ok(Err(Rejection::new(
                ReasonCode::NoLogicalDates,
                format!(
                    "no logical date of DAG {:?} falls between {} and {}",
                    req.dag_id,
                    fmt_ts(req.start),
                    fmt_ts(req.end)
                ),
            )));
        }
        let mut skipped = Vec::new();
        let mut contiguous = true;
        if req.reprocess != Reprocess::Completed {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            let origin_runs = Airflow::new(&mut c.db, &c.schema).runs(&req.dag_id)?;
            let origin: Vec<Option<bool>> = dates
                .iter()
                .map(|d| {
                    origin_runs
                        .iter()
                        .find(|r| r.logical_date == *d)
                        .map(|r| r.state == RunState::Failed)
                })
                .collect();
            let all = std::mem::take(&mut dates);
            (dates, skipped) = lifecycle::reprocess_dates(req.reprocess, &all, &origin);
            contiguous = steer::is_contiguous(&all, &dates);
            let (Some(&first), Some(&last)) = (dates.first(), dates.last()) else {
                return Ok(Err(Rejection::new(
                    ReasonCode::NoLogicalDates,
                    format!(
                        "DAG {:?} already ran every logical date between {} and {} (reprocess = \"{}\")",
                        req.dag_id,
                        fmt_ts(req.start),
                        fmt_ts(req.end),
                        req.reprocess.as_str()
                    ),
                )));
            };
            req.start = first;
            req.end = last;
        }
        if let Some(refusal) = self.over_active_limit(ident)? {
            return Ok(Err(refusal));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        if !req.ignore_overlap {
            let overlapping = Store::new(&mut c.db).overlapping(&req.dag_id, req.start, req.end)?;
            if !overlapping.is_empty() {
                return Ok(Err(Rejection::new(
                    ReasonCode::Overlap,
                    format!(
                        "the range overlaps active backfill(s) of {:?}: {}; set ignore_overlap = true to run anyway",
                        req.dag_id,
                        overlapping.join(", ")
                    ),
                )));
            }
        }
        let emit_asset_events = req
            .options
            .emit_asset_events
            .unwrap_or(default_emit_asset_events);
        let mut new = new_backfill(req, dates, fileloc, origin_code, ident, &budgets);
        new.delete_after_days = new.delete_after_days.or(default_delete_after_days);
        new.skipped_dates = skipped;
        new.options.run_order = RunOrder::for_backfill(
            new.options.run_order == RunOrder::NewestFirst,
            contiguous,
            budgets.has_budget(),
        );
        new.options.emit_asset_events = emit_asset_events;
        if let Err(m) =
            crate::notification::check_policy(&new.options.notify, &self.config.notifications)
        {
            return Ok(Err(Rejection::new(ReasonCode::InvalidValue, m)));
        }
        if let Err(r) = resolve_tasks(&new.dag_id, serialized, &mut new.options) {
            return Ok(Err(r));
        }
        let n = new.logical_dates.len();
        if approval::needed(approval.over_dates, n) {
            new.awaiting_approval = Some(approval::waiting_reason(
                n,
                approval.over_dates,
                &approval.approver_roles,
            ));
        }
        Ok(Ok(new))
    }
}

/// `<dag_id>_backfill_<UTC YYYYmmdd_HHMMSS>`, with `_2`, `_3`, ... `_99` when taken.
pub(super) fn free_id(s: &mut Store<'_>, dag_id: &str) -> Result<String, DbError> {
    free_id_from(s, dag_id, &mut None)
}

/// Where the search for a free id of one DAG goes on: the second (Unix time) and the next
/// suffix (1 = none) to try.
pub(super) type IdCursor = (i64, u32);

/// How many seconds past the current one an id may name when a burst took every id of the
/// seconds before (`_2` to `_99`: at most 99 ids a second and DAG, the longest id
/// `guard::copy_id_length` allows).
pub(super) const ID_SECONDS_AHEAD: i64 = 600;

/// [`free_id`], starting at `cursor` (left after the id found) when it is not in the past.
/// When all 99 ids of a second are taken, the next second's are tried: a burst of requests
/// for one DAG gets ids naming the seconds after it, not a refusal.
pub(super) fn free_id_from(
    s: &mut Store<'_>,
    dag_id: &str,
    cursor: &mut Option<IdCursor>,
) -> Result<String, DbError> {
    let now = Utc::now().timestamp();
    let (mut second, mut n) = match *cursor {
        Some((second, n)) if second >= now => (second, n),
        _ => (now, 1),
    };
    while second <= now + ID_SECONDS_AHEAD {
        let stamp = chrono::DateTime::from_timestamp(second, 0)
            .ok_or_else(|| DbError::Data(format!("no time for second {second}")))?;
        let base = format!("{dag_id}_backfill_{}", stamp.format("%Y%m%d_%H%M%S"));
        while n < 100 {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            if !s.id_taken(&id)? {
                *cursor = Some((second, n + 1));
                return Ok(id);
            }
            n += 1;
        }
        second += 1;
        n = 1;
    }
    Err(DbError::Data(format!(
        "no free backfill id for {dag_id} within {ID_SECONDS_AHEAD} s"
    )))
}

pub(super) fn new_backfill(
    req: Request,
    dates: Vec<chrono::DateTime<Utc>>,
    origin_fileloc: String,
    origin_code: String,
    ident: &Identity,
    budgets: &ThrottleSection,
) -> NewBackfill {
    let (max_active_runs, budget_warning) =
        throttle::cap_max_active_runs(budgets, req.max_active_runs);
    NewBackfill {
        dag_id: req.dag_id,
        start: req.start,
        end: req.end,
        logical_dates: dates,
        description: req.description,
        params: req.params,
        max_active_runs,
        ignore_overlap: req.ignore_overlap,
        origin_fileloc,
        origin_code,
        submitted_by: ident.airflow_user.clone().unwrap_or_default(),
        submitted_uid: ident.uid.unwrap_or(u32::MAX),
        requester: ident.unix_user.clone().unwrap_or_default(),
        on_behalf_of: ident.on_behalf_of.clone(),
        retry_of: None,
        scheduled_at: req.scheduled_at,
        delete_after_days: req.delete_after_days,
        reprocess: req.reprocess.as_str().to_owned(),
        skipped_dates: Vec::new(),
        options: BackfillOptions {
            tasks: req.options.tasks,
            task_ids: Vec::new(),
            include_upstream: req.options.include_upstream,
            include_downstream: req.options.include_downstream,
            emit_asset_events: req.options.emit_asset_events.unwrap_or(false),
            after: req.options.after,
            warnings: budget_warning.into_iter().collect(),
            priority: req.options.priority,
            run_order: RunOrder::for_backfill(
                req.options.run_backwards,
                true,
                budgets.has_budget(),
            ),
            notify: req.options.notify,
        },
        awaiting_approval: None,
    }
}

/// Resolve the `tasks` patterns of `options` against the serialized DAG's tasks (the ids
/// they select, kept so the overlay can check its own evaluation), and collect the warnings
/// about the DAG. A pattern matching no task refuses the request, naming the DAG's tasks.
pub(super) fn resolve_tasks(
    dag_id: &str,
    serialized: &serde_json::Value,
    options: &mut BackfillOptions,
) -> Result<(), Rejection> {
    let tasks = taskset::tasks(serialized);
    options
        .warnings
        .extend(taskset::cross_dag_warning(dag_id, &tasks));
    if options.tasks.is_empty() {
        options.task_ids.clear();
        return Ok(());
    }
    let patterns = taskset::check_patterns(&options.tasks)
        .map_err(|m| Rejection::new(ReasonCode::InvalidValue, m))?;
    let ids: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
    options.task_ids = taskset::select(&patterns, &ids)
        .map_err(|e| Rejection::new(ReasonCode::NoMatchingTask, format!("DAG {dag_id:?}: {e}")))?;
    Ok(())
}

/// The warnings of a new backfill, for its outcome (`None` when none); with the approval it
/// waits for (or, for a dry run, would wait for) first.
pub(super) fn warnings_of(new: &NewBackfill) -> Option<Vec<String>> {
    let all: Vec<String> = new
        .awaiting_approval
        .iter()
        .chain(&new.options.warnings)
        .cloned()
        .collect();
    (!all.is_empty()).then_some(all)
}

/// The dates a new backfill skips, for its outcome (`None` when none).
pub(super) fn skipped_of(new: &NewBackfill) -> Option<Vec<String>> {
    (!new.skipped_dates.is_empty()).then(|| new.skipped_dates.iter().map(|d| fmt_ts(*d)).collect())
}
