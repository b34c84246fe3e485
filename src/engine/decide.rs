//! The admission decisions, pure: facts in (what the checks read from Airflow's and backfilld's
//! tables), a [`Ruling`] out. No DB, no clock, no I/O: `engine::checks` gathers the facts
//! and applies these in order, and the table tests below run them in-process.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ruling::Ruling;
use crate::approval;
use crate::authz::{self, Action, Subject};
use crate::config::{Config, ThrottleSection};
use crate::lifecycle::{self, Effect, Facts, Reprocess};
use crate::reconcile::{RunObservation, RunState};
use crate::request::{self, fmt_ts, ReasonCode, Rejection, Request};
use crate::rows::{BackfillOptions, BackfillRow, DagRow, NewBackfill};
use crate::steer::{self, RunOrder};
use crate::{taskset, throttle};

/// Who a request or query is from, as far as it was resolved.
#[derive(Debug, Clone, Default)]
pub(super) struct Identity {
    pub(super) uid: Option<u32>,
    pub(super) unix_user: Option<String>,
    pub(super) airflow_user: Option<String>,
    pub(super) on_behalf_of: Option<String>,
}

/// What Airflow knows of a DAG, read in the order the checks need it: the `dag` row; for an
/// active DAG its serialized form; with a file and a serialized form, its source.
pub(super) struct DagFacts {
    pub(super) dag: Option<DagRow>,
    pub(super) serialized: Option<Value>,
    pub(super) source_code: Option<String>,
}

/// The origin DAG a create request can be backfilled from: its file, serialized form and source.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin<'a> {
    /// The file Airflow parsed it from.
    pub(super) fileloc: &'a str,
    /// Its serialized form (tasks, timetable, `allowed_run_types`).
    pub(super) serialized: &'a Value,
    /// Its source code, as Airflow stored it.
    pub(super) code: &'a str,
}

/// Whether `dag_id` can be backfilled at all: Airflow knows it, it is active, Airflow stored
/// its serialized form and source, and it allows backfill runs.
pub(super) fn origin<'a>(dag_id: &str, facts: &'a DagFacts) -> Ruling<Origin<'a>> {
    let Some(dag) = &facts.dag else {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::UnknownDag,
            format!("Airflow has no DAG with id {dag_id:?}"),
        ));
    };
    if !dag.is_active {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::DagDeleted,
            format!("DAG {dag_id:?} is no longer active in Airflow (its file was removed or it failed to parse)"),
        ));
    }
    let (Some(fileloc), Some(serialized), Some(code)) = (
        dag.fileloc.as_deref(),
        facts.serialized.as_ref(),
        facts.source_code.as_deref(),
    ) else {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::DagNotSerialized,
            format!("Airflow has not stored DAG {dag_id:?} and its source yet; try again after the next parse"),
        ));
    };
    if let Some(reason) = crate::runtypes::backfill_refusal(dag_id, serialized) {
        return Ruling::Refuse(Rejection::new(ReasonCode::BackfillNotAllowed, reason));
    }
    Ruling::Admit(Origin {
        fileloc,
        serialized,
        code,
    })
}

/// The request's dates once `reprocess` left out those the origin DAG already ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reprocessed {
    /// The dates to run.
    pub(super) dates: Vec<DateTime<Utc>>,
    /// The dates left out.
    pub(super) skipped: Vec<DateTime<Utc>>,
    /// Whether the dates to run are consecutive among the range's dates.
    pub(super) contiguous: bool,
}

/// The range's `dates` without those the origin DAG's `runs` already ran (as `req.reprocess`
/// says), with `req`'s bounds narrowed to the dates left; refused when none is left.
pub(super) fn reprocess(
    req: &mut Request,
    dates: Vec<DateTime<Utc>>,
    runs: &[RunObservation],
) -> Ruling<Reprocessed> {
    let origin: Vec<Option<bool>> = dates
        .iter()
        .map(|d| {
            runs.iter()
                .find(|r| r.logical_date == *d)
                .map(|r| r.state == RunState::Failed)
        })
        .collect();
    let (left, skipped) = lifecycle::reprocess_dates(req.reprocess, &dates, &origin);
    let contiguous = steer::is_contiguous(&dates, &left);
    let (Some(&first), Some(&last)) = (left.first(), left.last()) else {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::NoLogicalDates,
            format!(
                "DAG {:?} already ran every logical date between {} and {} (reprocess = \"{}\")",
                req.dag_id,
                fmt_ts(req.start),
                fmt_ts(req.end),
                req.reprocess.as_str()
            ),
        ));
    };
    req.start = first;
    req.end = last;
    Ruling::Admit(Reprocessed {
        dates: left,
        skipped,
        contiguous,
    })
}

/// The dates `reprocess` skipped between the dates kept (`kept`) that Airflow would still plan
/// by itself for the steered copy. With `catchup=False` Airflow plans the newest date already
/// due, or the date after the copy's newest run, when it is between the copy's first and newest
/// date (`dagcopy::copy_bounds`). A skipped date is safe once a later date of the range is due
/// (Airflow's plan is then past it); one whose next date in the range (`all`, ascending) is
/// not due yet at `now` (`run_after` of that date after `now`; `None`: unknown, not reported)
/// is planned once it is due, and runs in the copy too.
pub(super) fn planned_skips(
    all: &[DateTime<Utc>],
    kept: &[DateTime<Utc>],
    run_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let (Some(&first), Some(&last)) = (kept.iter().min(), kept.iter().max()) else {
        return Vec::new();
    };
    let kept: std::collections::HashSet<&DateTime<Utc>> = kept.iter().collect();
    all.windows(2)
        .filter_map(|pair| match *pair {
            [skipped, next] => (first < skipped
                && skipped < last
                && !kept.contains(&skipped)
                && run_after(next).is_some_and(|at| at > now))
            .then_some(skipped),
            _ => None,
        })
        .collect()
}

/// The warning for [`planned_skips`]' dates (`None` when there are none).
pub(super) fn planned_skips_warning(dates: &[DateTime<Utc>]) -> Option<String> {
    if dates.is_empty() {
        return None;
    }
    let list: Vec<String> = dates.iter().map(|d| fmt_ts(*d)).collect();
    Some(format!(
        "reprocess skips {}, but a later date of the range is not due yet: Airflow plans {} by \
         itself for the copy once due, so the copy runs {} too (end the range at the newest \
         date already due to skip {})",
        list.join(", "),
        if dates.len() == 1 { "it" } else { "them" },
        if dates.len() == 1 { "it" } else { "them" },
        if dates.len() == 1 { "it" } else { "them" },
    ))
}

/// Refused when the range's schedule has no logical date in it.
pub(super) fn some_dates(req: &Request, dates: &[DateTime<Utc>]) -> Ruling<()> {
    if dates.is_empty() {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::NoLogicalDates,
            format!(
                "no logical date of DAG {:?} falls between {} and {}",
                req.dag_id,
                fmt_ts(req.start),
                fmt_ts(req.end)
            ),
        ));
    }
    Ruling::Admit(())
}

/// What overlaps: a new range, or a retry's failed dates (worded for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overlapping {
    /// A create request's range (which `ignore_overlap = true` would accept).
    Range,
    /// The failed dates a retry runs again.
    Retry,
}

/// Refused when `overlapping` (the active backfills of `dag_id` over the same dates) is not
/// empty.
pub(super) fn no_overlap(dag_id: &str, overlapping: &[String], what: Overlapping) -> Ruling<()> {
    if overlapping.is_empty() {
        return Ruling::Admit(());
    }
    let ids = overlapping.join(", ");
    Ruling::Refuse(Rejection::new(
        ReasonCode::Overlap,
        match what {
            Overlapping::Range => format!(
                "the range overlaps active backfill(s) of {dag_id:?}: {ids}; set ignore_overlap = true to run anyway"
            ),
            Overlapping::Retry => {
                format!("the failed dates overlap active backfill(s) of {dag_id:?}: {ids}")
            }
        },
    ))
}

/// The new backfill of an admitted create request: the configured defaults applied, its
/// order, its notification recipients against `[notifications]`, its `tasks` resolved
/// against the DAG, and whether it waits for approval.
pub(super) fn create(
    req: Request,
    dates: Reprocessed,
    origin: Origin<'_>,
    ident: &Identity,
    config: &Config,
) -> Ruling<NewBackfill> {
    let budgets = &config.throttle;
    let emit_asset_events = req
        .options
        .emit_asset_events
        .unwrap_or(config.copies.emit_asset_events);
    let mut new = new_backfill(
        req,
        dates.dates,
        origin.fileloc.to_owned(),
        origin.code.to_owned(),
        ident,
        budgets,
    );
    new.delete_after_days = new.delete_after_days.or(config.reconcile.delete_after_days);
    new.skipped_dates = dates.skipped;
    new.options.run_order = RunOrder::for_backfill(
        new.options.run_order == RunOrder::NewestFirst,
        dates.contiguous,
        budgets.has_budget(),
    );
    new.options.emit_asset_events = emit_asset_events;
    if let Err(m) = crate::notification::check_policy(&new.options.notify, &config.notifications) {
        return Ruling::Refuse(Rejection::new(ReasonCode::InvalidValue, m));
    }
    if let Err(r) = resolve_tasks(&new.dag_id, origin.serialized, &mut new.options) {
        return Ruling::Refuse(r);
    }
    let approval = &config.approval;
    let n = new.logical_dates.len();
    if approval::needed(approval.over_dates, n) {
        new.awaiting_approval = Some(approval::waiting_reason(
            n,
            approval.over_dates,
            &approval.approver_roles,
        ));
    }
    Ruling::Admit(new)
}

/// What a life-cycle `action` by `subject` does to backfill `row`: permission on its origin
/// DAG, the state machine of `lifecycle`, and for approve/reject the approval rules.
pub(super) fn operation(
    subject: &Subject,
    ident: &Identity,
    action: Action,
    row: &BackfillRow,
    approver_roles: &[String],
) -> Ruling<Effect> {
    if let Err(d) = authz::authorize(subject, action, Some(&row.dag_id)) {
        return Ruling::Refuse(d.into());
    }
    let facts = Facts {
        state: row.state,
        deleted: row.deleted,
        copy_written: row.copy_written_at.is_some(),
        failed_dates: row.progress.failed,
    };
    let effect = match lifecycle::plan(action, facts) {
        Ok(e) => e,
        Err(refusal) => {
            return Ruling::Refuse(Rejection::new(ReasonCode::IllegalTransition, refusal.0))
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
        if let Err(r) = approval::decide(decider, requester, &row.dag_id, approver_roles, action) {
            return Ruling::Refuse(r);
        }
    }
    Ruling::Admit(effect)
}

/// The runs of consecutive failed dates of `row` a retry runs again (one backfill each),
/// given the copy's `runs`; refused when none failed.
pub(super) fn retry_segments(
    row: &BackfillRow,
    runs: &[RunObservation],
) -> Ruling<Vec<Vec<DateTime<Utc>>>> {
    let failed: Vec<bool> = row
        .logical_dates
        .iter()
        .map(|d| {
            runs.iter()
                .any(|r| r.logical_date == *d && r.state == RunState::Failed)
        })
        .collect();
    lifecycle::retry_dates(&row.logical_dates, &failed)
        .map_err(|refusal| Rejection::new(ReasonCode::IllegalTransition, refusal.0))
        .into()
}

/// The backfill retrying `dates` (failed dates of `row`, consecutive) with the origin DAG's
/// current source `origin_code` (so a fixed DAG runs fixed): the same params, tasks (selected
/// again from `serialized`, the current DAG, when the backfill had a task subset) and asset
/// events; no prerequisites (they already succeeded).
pub(super) fn retry(
    row: &BackfillRow,
    dates: Vec<DateTime<Utc>>,
    origin_code: &str,
    serialized: Option<&Value>,
    ident: &Identity,
    budgets: &ThrottleSection,
) -> Ruling<NewBackfill> {
    let (Some(&start), Some(&end)) = (dates.first(), dates.last()) else {
        return Ruling::Refuse(Rejection::new(
            ReasonCode::IllegalTransition,
            format!("backfill {:?} has no failed date to retry", row.id),
        ));
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
        origin_code.to_owned(),
        ident,
        budgets,
    );
    new.retry_of = Some(row.id.clone());
    if let Some(serialized) = serialized {
        if let Err(r) = resolve_tasks(&row.dag_id, serialized, &mut new.options) {
            return Ruling::Refuse(r);
        }
    }
    Ruling::Admit(new)
}

/// Whether a request's `reprocess` needs the origin DAG's runs (anything but `completed`,
/// which runs every date).
pub(super) fn needs_origin_runs(mode: Reprocess) -> bool {
    mode != Reprocess::Completed
}

/// The backfill `req` asks for over `dates`, by `ident`, of the origin DAG at `origin_fileloc`
/// with source `origin_code`: `max_active_runs` capped by the throttle's budgets.
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

#[cfg(test)]
mod tests;
