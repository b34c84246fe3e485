//! The checks of a request that need the metadata DB: the origin DAG and its dates, the
//! prerequisites (`after`), a life-cycle action's target, the failed dates a retry runs, and a
//! free backfill id.

use super::*;

impl Engine {
    /// The checks of `after`: every named backfill exists and the requester may read it
    /// (`can_read` on `Backfills`, as for `backfillctl status`, and read on its origin DAG; one
    /// that may not be read is reported like a missing one, so refusals reveal nothing), and
    /// none of them already failed, was cancelled or deleted before it finished.
    pub(super) fn check_after(&mut self, subject: &Subject, after: &[String]) -> Checked<()> {
        if after.is_empty() {
            return Ok(Ruling::Admit(()));
        }
        if let Err(d) = authz::authorize(subject, Action::Read, None) {
            let mut r = Rejection::from(d);
            r.message = format!("after needs permission to read backfills: {}", r.message);
            refuse!(r);
        }
        let c = self.conn.get()?;
        let mut s = Store::new(&mut c.db);
        for id in after {
            let row = s
                .backfill_any(id)?
                .filter(|b| authz::authorize(subject, Action::Read, Some(&b.dag_id)).is_ok());
            let Some(row) = row else {
                refuse!(Rejection::new(
                    ReasonCode::UnknownPrerequisite,
                    format!("after: no backfill {id:?} that you may read"),
                ));
            };
            let p = ordering::Prerequisite {
                id: row.id,
                state: Some(row.state),
                reason: row.state_reason,
                deleted: row.deleted,
            };
            if let Some(why) = ordering::broken(&p) {
                refuse!(Rejection::new(ReasonCode::PrerequisiteFailed, why));
            }
        }
        Ok(Ruling::Admit(()))
    }

    /// The checks of a life-cycle request: permission on `Backfills`, the backfill exists,
    /// then [`decide::operation`] on it (and for a retry, [`Engine::retry_of`]).
    pub(super) fn check_operation(
        &mut self,
        subject: &Subject,
        ident: &Identity,
        op: Operation,
    ) -> Checked<Accepted> {
        admit!(authz::authorize(subject, op.action, None));
        // Decide on fresh facts: the stored state may lag Airflow by up to one reconcile
        // interval (a copy that just started running may still read `submitted`).
        self.reconcile();
        let c = self.conn.get()?;
        let Some(row) = Store::new(&mut c.db).backfill_any(&op.id)? else {
            refuse!(Rejection::new(
                ReasonCode::UnknownBackfill,
                format!("no backfill with id {:?}", op.id),
            ));
        };
        let roles = &self.config.approval.approver_roles;
        let effect = admit!(decide::operation(subject, ident, op.action, &row, roles));
        let retry = if effect == Effect::RetryFailed {
            admit!(self.retry_of(&row, ident)?)
        } else {
            Vec::new()
        };
        Ok(Ruling::Admit(Accepted::Operate {
            id: row.id,
            effect,
            retry,
            reason: op.reason,
        }))
    }

    /// The new backfills retrying the failed dates of `row` (one per run of consecutive failed
    /// dates), with the origin DAG's current source (so a fixed DAG runs fixed).
    pub(super) fn retry_of(
        &mut self,
        row: &BackfillRow,
        ident: &Identity,
    ) -> Checked<Vec<NewBackfill>> {
        admit!(limits::under_active_limit(
            self.conn.get()?,
            &self.config.limits,
            ident
        )?);
        let c = self.conn.get()?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let runs = af.runs(&row.id)?;
        let segments = admit!(decide::retry_segments(row, &runs));
        let origin_code = af
            .source_code(&row.dag_id, &row.origin_fileloc)?
            .unwrap_or_else(|| row.origin_code.clone());
        let serialized = if row.options.tasks.is_empty() {
            None
        } else {
            // The retry runs the origin's current source: select its tasks again.
            let Some(serialized) = af.serialized_dag(&row.dag_id)? else {
                refuse!(Rejection::new(
                    ReasonCode::DagNotSerialized,
                    format!(
                        "Airflow has no serialized DAG {:?} to select the tasks of the retry from",
                        row.dag_id
                    ),
                ));
            };
            Some(serialized)
        };
        let budgets = &self.config.throttle;
        let mut retries = Vec::new();
        for dates in segments.into_iter().filter(|d| !d.is_empty()) {
            let new = admit!(decide::retry(
                row,
                dates,
                &origin_code,
                serialized.as_ref(),
                ident,
                budgets
            ));
            if !new.ignore_overlap {
                let overlapping =
                    Store::new(&mut c.db).overlapping(&new.dag_id, new.start, new.end)?;
                admit!(decide::no_overlap(
                    &new.dag_id,
                    &overlapping,
                    Overlapping::Retry
                ));
            }
            retries.push(new);
        }
        Ok(Ruling::Admit(retries))
    }

    /// The checks of an authorised create request against Airflow's DAG and backfilld's
    /// backfills: each gathers its facts, then decides with [`decide`].
    pub(super) fn check_dag(&mut self, mut req: Request, ident: &Identity) -> Checked<NewBackfill> {
        let limit = self.config.limits.max_dates_per_request;
        let facts = self.dag_facts(&req.dag_id)?;
        let origin = admit!(decide::origin(&req.dag_id, &facts));
        let dates = admit!(self.range_dates(&mut req, origin.serialized, limit));
        admit!(decide::some_dates(&req, &dates));
        let mut planned = Vec::new();
        let dates = if decide::needs_origin_runs(req.reprocess) {
            let c = self.conn.get()?;
            let origin_runs = Airflow::new(&mut c.db, &c.schema).runs(&req.dag_id)?;
            let all = dates.clone();
            let kept = admit!(decide::reprocess(&mut req, dates, &origin_runs));
            if let Ok(t) = crate::schedule::Timetable::from_serialized_dag(origin.serialized) {
                let run_after = |d| t.run_info(d).ok().map(|i| i.run_after);
                planned = decide::planned_skips(&all, &kept.dates, run_after, Utc::now());
            }
            kept
        } else {
            Reprocessed {
                dates,
                skipped: Vec::new(),
                contiguous: true,
            }
        };
        admit!(limits::under_active_limit(
            self.conn.get()?,
            &self.config.limits,
            ident
        )?);
        if !req.ignore_overlap {
            let c = self.conn.get()?;
            let overlapping = Store::new(&mut c.db).overlapping(&req.dag_id, req.start, req.end)?;
            admit!(decide::no_overlap(
                &req.dag_id,
                &overlapping,
                Overlapping::Range
            ));
        }
        let warning = decide::planned_skips_warning(&planned);
        Ok(
            decide::create(req, dates, origin, ident, &self.config).map(|mut new| {
                new.options.warnings.extend(warning);
                new
            }),
        )
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
