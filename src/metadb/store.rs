//! backfilld's own tables in the metadata DB (all prefixed `backfilld_`), created and upgraded by
//! versioned migrations that backfilld runs itself.
//!
//! Timestamps are stored as RFC 3339 UTC text of one fixed width, so they sort as text on every
//! backend. `backfilld_request` has one row per request file ever ingested (its `request_key`
//! is what makes ingest idempotent); `backfilld_backfill` one row per accepted backfill.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::{parse_ts, Arg, DbError, Dialect, IntRow, MetaDb, TextRow};
use crate::paging::PageKey;
use crate::reconcile::{Decision, Progress};
use crate::request::{fmt_ts, ReasonCode};
use crate::state::BackfillState;

mod migrations;
mod rows;
pub use migrations::*;
pub use rows::*;

/// Schema version this build expects.
pub const SCHEMA_VERSION: i64 = 21;

/// Most ids one `IN (...)` list binds (under every backend's bind limit).
const IN_CHUNK: usize = 400;

/// Timestamps as stored: RFC 3339, UTC, microseconds, `Z`.
pub fn stored_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Typed access to backfilld's tables.
pub struct Store<'a> {
    db: &'a mut MetaDb,
}

impl<'a> Store<'a> {
    /// Wrap a migrated connection.
    pub fn new(db: &'a mut MetaDb) -> Store<'a> {
        Store { db }
    }

    /// The record of a request file, by its durable key.
    pub fn request(&mut self, key: &str) -> Result<Option<RequestRecord>, DbError> {
        let rows: Vec<RequestSql> = self.db.load(
            &format!("SELECT {REQUEST_COLS} FROM backfilld_request WHERE request_key = ?"),
            &[Arg::Text(key.to_owned())],
        )?;
        Ok(rows.into_iter().next().map(Into::into))
    }

    /// The newest record of a file `uid` dropped under `file_name`.
    pub fn outcome(&mut self, uid: u32, file_name: &str) -> Result<Option<RequestRecord>, DbError> {
        let rows: Vec<RequestSql> = self.db.load(
            &format!(
                "SELECT {REQUEST_COLS} FROM backfilld_request WHERE uid = ? AND file_name = ? ORDER BY received_at DESC"
            ),
            &[Arg::Int(i64::from(uid)), Arg::Text(file_name.to_owned())],
        )?;
        Ok(rows.into_iter().next().map(Into::into))
    }

    /// Retention of request records: delete those received before `cutoff`, except the
    /// record of a backfill not deleted (its status and retries read it). Idempotence is
    /// not weakened: a record's key names its claim, and claims are minutes old, not days.
    /// Returns how many rows were deleted.
    pub fn prune_requests(&mut self, cutoff: DateTime<Utc>) -> Result<usize, DbError> {
        self.db.execute(
            "DELETE FROM backfilld_request WHERE received_at < ? AND (backfill_id IS NULL \
             OR backfill_id NOT IN (SELECT id FROM backfilld_backfill WHERE deleted = 0))",
            &[Arg::Text(stored_ts(cutoff))],
        )
    }

    /// Record a request. A record with the same key already present is left as it is.
    pub fn record_request(&mut self, r: &RequestRecord) -> Result<(), DbError> {
        let code = r
            .reason_code
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| v.as_str().map(str::to_owned));
        let res = self.db.execute(
            &format!("INSERT INTO backfilld_request ({REQUEST_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            &[
                Arg::Text(r.request_key.clone()),
                Arg::Text(r.file_name.clone()),
                Arg::Int(i64::from(r.uid)),
                Arg::OptText(r.username.clone()),
                Arg::Text(r.host.clone()),
                Arg::Text(r.received_at.clone()),
                Arg::Text(r.outcome.as_str().to_owned()),
                Arg::OptText(r.backfill_id.clone()),
                Arg::OptText(code),
                Arg::OptText(r.reason.clone()),
                Arg::OptText(r.airflow_user.clone()),
                Arg::OptText(r.on_behalf_of.clone()),
                Arg::OptText(r.action.clone()),
                Arg::Int(i64::from(r.dry_run)),
                Arg::OptText(
                    r.dates
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok()),
                ),
                Arg::OptText(
                    r.skipped_dates
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok()),
                ),
                Arg::OptText(
                    r.warnings
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok()),
                ),
                Arg::OptText(
                    r.estimate
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok()),
                ),
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether a backfill id is taken.
    pub fn id_taken(&mut self, id: &str) -> Result<bool, DbError> {
        let rows: Vec<IntRow> = self.db.load(
            "SELECT COUNT(*) AS value FROM backfilld_backfill WHERE id = ?",
            &[Arg::Text(id.to_owned())],
        )?;
        Ok(rows.first().map(|r| r.value > 0).unwrap_or(false))
    }

    /// Insert an accepted backfill under `id` (state `submitted`, or `awaiting_approval`
    /// with its reason).
    pub fn insert_backfill(
        &mut self,
        id: &str,
        b: &NewBackfill,
        host: &str,
        request_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let dates: Vec<String> = b.logical_dates.iter().map(|d| fmt_ts(*d)).collect();
        let dates = serde_json::to_string(&dates).map_err(|e| DbError::Data(e.to_string()))?;
        let params = serde_json::to_string(&b.params).map_err(|e| DbError::Data(e.to_string()))?;
        let options =
            serde_json::to_string(&b.options).map_err(|e| DbError::Data(e.to_string()))?;
        let now = stored_ts(now);
        self.db.execute(
            "INSERT INTO backfilld_backfill (id, dag_id, state, state_reason, description, start_date, end_date, \
             logical_dates, params, max_active_runs, ignore_overlap, origin_fileloc, origin_code, \
             submitted_by, submitted_uid, submitted_at, updated_at, deleted, dates_total, \
             dates_succeeded, dates_failed, dates_running, dates_queued, host, request_key, \
             requester, on_behalf_of, retry_of, scheduled_at, delete_after_days, reprocess, skipped_dates, \
             options, priority, run_order) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                Arg::Text(id.to_owned()),
                Arg::Text(b.dag_id.clone()),
                Arg::Text(
                    if b.awaiting_approval.is_some() {
                        BackfillState::AwaitingApproval
                    } else {
                        BackfillState::Submitted
                    }
                    .as_str()
                    .to_owned(),
                ),
                Arg::OptText(b.awaiting_approval.clone()),
                Arg::OptText(b.description.clone()),
                Arg::Text(stored_ts(b.start)),
                Arg::Text(stored_ts(b.end)),
                Arg::Text(dates),
                Arg::Text(params),
                Arg::Int(i64::from(b.max_active_runs)),
                Arg::Int(i64::from(b.ignore_overlap)),
                Arg::Text(b.origin_fileloc.clone()),
                Arg::Text(b.origin_code.clone()),
                Arg::Text(b.submitted_by.clone()),
                Arg::Int(i64::from(b.submitted_uid)),
                Arg::Text(now.clone()),
                Arg::Text(now),
                Arg::Int(i64::try_from(b.logical_dates.len()).unwrap_or(i64::MAX)),
                Arg::Text(host.to_owned()),
                Arg::Text(request_key.to_owned()),
                Arg::Text(b.requester.clone()),
                Arg::OptText(b.on_behalf_of.clone()),
                Arg::OptText(b.retry_of.clone()),
                Arg::OptText(b.scheduled_at.map(stored_ts)),
                Arg::OptInt(b.delete_after_days.map(i64::from)),
                Arg::Text(b.reprocess.clone()),
                Arg::OptText(if b.skipped_dates.is_empty() {
                    None
                } else {
                    let texts: Vec<String> = b.skipped_dates.iter().map(|d| fmt_ts(*d)).collect();
                    serde_json::to_string(&texts).ok()
                }),
                Arg::Text(options),
                Arg::Int(i64::from(b.options.priority)),
                Arg::OptText(b.options.run_order.stored().map(str::to_owned)),
            ],
        )?;
        for (position, after) in b.options.after.iter().enumerate() {
            if after == id {
                return Err(DbError::Data(format!(
                    "backfill {id} cannot come after itself"
                )));
            }
            self.db.execute(
                "INSERT INTO backfilld_after (backfill_id, after_id, ordinal) VALUES (?, ?, ?)",
                &[
                    Arg::Text(id.to_owned()),
                    Arg::Text(after.clone()),
                    Arg::Int(i64::try_from(position).unwrap_or(i64::MAX)),
                ],
            )?;
        }
        Ok(())
    }

    /// Ids of unfinished backfills of `dag_id` whose range overlaps `start..=end`.
    pub fn overlapping(
        &mut self,
        dag_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<String>, DbError> {
        let rows: Vec<TextRow> = self.db.load(
            "SELECT id AS value FROM backfilld_backfill WHERE dag_id = ? AND deleted = 0 \
             AND state NOT IN ('success', 'failed', 'cancelled') AND start_date <= ? AND end_date >= ? ORDER BY id",
            &[
                Arg::Text(dag_id.to_owned()),
                Arg::Text(stored_ts(end)),
                Arg::Text(stored_ts(start)),
            ],
        )?;
        Ok(rows.into_iter().map(|r| r.value).collect())
    }

    /// How many unfinished (awaiting approval, submitted, queued, running, paused), undeleted
    /// backfills were submitted for Airflow user `user`.
    pub fn active_backfills_of(&mut self, user: &str) -> Result<usize, DbError> {
        let rows: Vec<IntRow> = self.db.load(
            "SELECT COUNT(*) AS value FROM backfilld_backfill WHERE submitted_by = ? AND deleted = 0 \
             AND state IN ('awaiting_approval', 'submitted', 'queued', 'running', 'paused')",
            &[Arg::Text(user.to_owned())],
        )?;
        Ok(rows
            .first()
            .map_or(0, |r| usize::try_from(r.value).unwrap_or(0)))
    }

    /// One backfill.
    pub fn backfill(&mut self, id: &str) -> Result<Option<BackfillRow>, DbError> {
        let rows: Vec<BackfillSql> = self.db.load(
            &format!("SELECT {BACKFILL_COLS} FROM backfilld_backfill WHERE id = ? AND deleted = 0"),
            &[Arg::Text(id.to_owned())],
        )?;
        rows.into_iter().next().map(TryInto::try_into).transpose()
    }

    /// One backfill, deleted or not.
    pub fn backfill_any(&mut self, id: &str) -> Result<Option<BackfillRow>, DbError> {
        let rows: Vec<BackfillSql> = self.db.load(
            &format!("SELECT {BACKFILL_COLS} FROM backfilld_backfill WHERE id = ?"),
            &[Arg::Text(id.to_owned())],
        )?;
        rows.into_iter().next().map(TryInto::try_into).transpose()
    }

    /// The backfills named `ids` (deleted ones too), in no particular order; unknown ids are
    /// left out. One statement per [`IN_CHUNK`] ids, none for none.
    pub fn backfills_any(&mut self, ids: &[&str]) -> Result<Vec<BackfillRow>, DbError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            let rows: Vec<BackfillSql> = self.db.load(
                &format!("SELECT {BACKFILL_COLS} FROM backfilld_backfill WHERE id IN ({marks})"),
                &args,
            )?;
            for row in rows {
                out.push(row.try_into()?);
            }
        }
        Ok(out)
    }

    /// Backfills changed since `since` that are in a state with a notification
    /// (`notification::Event::of`), did not finish their runs before `since` (the notice
    /// would be too old: e.g. imported seed backfills), and have no sent mark for that state:
    /// their ids.
    pub fn unnotified(&mut self, since: DateTime<Utc>) -> Result<Vec<String>, DbError> {
        let rows: Vec<TextRow> = self.db.load(
            "SELECT b.id AS value FROM backfilld_backfill b \
             WHERE b.updated_at >= ? AND (b.run_end IS NULL OR b.run_end >= ?) \
             AND b.state IN ('success', 'failed', 'cancelled', 'awaiting_approval') \
             AND NOT EXISTS (SELECT 1 FROM backfilld_notification n \
                             WHERE n.backfill_id = b.id AND n.state = b.state)",
            &[Arg::Text(stored_ts(since)), Arg::Text(stored_ts(since))],
        )?;
        Ok(rows.into_iter().map(|r| r.value).collect())
    }

    /// Record that the notification of backfill `id` in `state` was sent (idempotent).
    pub fn mark_notified(
        &mut self,
        id: &str,
        state: BackfillState,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        match self.db.execute(
            "INSERT INTO backfilld_notification (backfill_id, state, sent_at) VALUES (?, ?, ?)",
            &[
                Arg::Text(id.to_owned()),
                Arg::Text(state.as_str().to_owned()),
                Arg::Text(stored_ts(now)),
            ],
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Record that there is nothing to send for each backfill in `ids` in `state` (no
    /// recipient, the event not wanted, or too old when first seen), so later passes do not
    /// read its row again for notifications: a sent mark written for them all, one statement
    /// per [`IN_CHUNK`] ids, only where the backfill is still in `state` and has no mark.
    pub fn mark_nothing_to_send(
        &mut self,
        ids: &[&str],
        state: BackfillState,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        for chunk in ids.chunks(IN_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut args = vec![
                Arg::Text(stored_ts(now)),
                Arg::Text(state.as_str().to_owned()),
            ];
            args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
            match self.db.execute(
                &format!(
                    "INSERT INTO backfilld_notification (backfill_id, state, sent_at) \
                     SELECT b.id, b.state, ? FROM backfilld_backfill b \
                     WHERE b.state = ? AND b.id IN ({marks}) \
                     AND NOT EXISTS (SELECT 1 FROM backfilld_notification n \
                                     WHERE n.backfill_id = b.id AND n.state = b.state)"
                ),
                &args,
            ) {
                Ok(_) => {}
                // A mark written meanwhile: the next pass marks the rest.
                Err(e) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One slice of a list, newest first (`submitted_at` descending, then `id` descending):
    /// at most `limit` backfills matching `query`, strictly after `after` when given. Read by
    /// keyset from the `(submitted_at, id)` index, so a page never reads the rows before it.
    /// The rows come without their origin source (`origin_code` is empty): lists never show it.
    pub fn backfills_page(
        &mut self,
        query: &ListQuery,
        after: Option<&PageKey>,
        limit: usize,
    ) -> Result<Vec<BackfillRow>, DbError> {
        let (mut sql, mut args) = query.conditions();
        if let Some(key) = after {
            let bounds = [stored_ts(key.submitted_at), key.id.clone()];
            let (before, binds) = self.db.dialect().keyset_before("submitted_at", "id");
            sql.push(before);
            args.extend(binds.iter().map(|i| Arg::Text(bounds[*i].clone())));
        }
        let cols = BACKFILL_COLS.replacen("origin_code", "'' AS origin_code", 1);
        let rows: Vec<BackfillSql> = self.db.load(
            &format!(
                "SELECT {cols} FROM backfilld_backfill{} ORDER BY submitted_at DESC, id DESC LIMIT {}",
                where_clause(&sql),
                limit.max(1)
            ),
            &args,
        )?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// How many backfills match `query`, per origin DAG (for a list's total, counted over the
    /// DAGs the caller may read).
    pub fn count_by_dag(&mut self, query: &ListQuery) -> Result<Vec<(String, u64)>, DbError> {
        let (sql, args) = query.conditions();
        let rows: Vec<DagCountSql> = self.db.load(
            &format!(
                "SELECT dag_id, COUNT(*) AS n FROM backfilld_backfill{} GROUP BY dag_id",
                where_clause(&sql)
            ),
            &args,
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r.dag_id, u64::try_from(r.n).unwrap_or(0)))
            .collect())
    }

    /// Ids of finished, undeleted backfills whose `delete_after_days` elapsed by `now`, and
    /// the earliest instant after `now` at which another one's does (`None`: none will
    /// without a write to the table). Reads only the columns that decide it.
    pub fn due_for_deletion(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, Option<DateTime<Utc>>), DbError> {
        let rows: Vec<RetentionSql> = self.db.load(
            "SELECT id, updated_at, run_end, delete_after_days FROM backfilld_backfill \
             WHERE deleted = 0 AND state IN ('success', 'failed', 'cancelled') \
             AND delete_after_days IS NOT NULL ORDER BY id",
            &[],
        )?;
        let mut due = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        for r in rows {
            let finished = match r.run_end.as_deref() {
                Some(t) => parse_ts(t)?,
                None => parse_ts(&r.updated_at)?,
            };
            let at = finished + chrono::Duration::days(r.delete_after_days);
            if at <= now {
                due.push(r.id);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok((due, next))
    }

    /// Refresh the planner statistics of `backfilld_backfill` after a bulk change (a seed
    /// import): `ANALYZE` on PostgreSQL, whose autovacuum may be off or not there yet; MySQL
    /// recalculates InnoDB's persistent statistics itself, and SQLite is left without
    /// statistics tables in Airflow's file (nothing sent).
    pub fn analyze(&mut self) -> Result<(), DbError> {
        match self.db.dialect().0 {
            crate::dburl::Backend::Postgres => self.db.batch("ANALYZE backfilld_backfill"),
            crate::dburl::Backend::Sqlite | crate::dburl::Backend::Mysql => Ok(()),
        }
    }

    /// Every backfill with Airflow-side work of a life-cycle action outstanding.
    pub fn pending_ops(&mut self) -> Result<Vec<BackfillRow>, DbError> {
        // Without the origin source, which no action's Airflow-side work needs (a pass reads
        // these rows while thousands of imported deletions settle). The actions named, not
        // `IS NOT NULL`: SQLite then searches the `pending_op` index instead of walking the
        // whole table in `id` order (30-70 ms a pass at 10,000 backfills with none pending).
        let cols = BACKFILL_COLS.replacen("origin_code", "'' AS origin_code", 1);
        let ops = [
            PendingOp::Cancel,
            PendingOp::Pause,
            PendingOp::Resume,
            PendingOp::Delete,
        ]
        .map(|op| format!("'{}'", op.as_str()))
        .join(", ");
        let rows: Vec<BackfillSql> = self.db.load(
            &format!(
                "SELECT {cols} FROM backfilld_backfill WHERE pending_op IN ({ops}) ORDER BY id"
            ),
            &[],
        )?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Withdraw a backfill whose copy was never written (submitted, or awaiting approval):
    /// state `cancelled`. Returns false when it no longer qualifies (the copy was written
    /// meanwhile).
    pub fn withdraw(
        &mut self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET state = 'cancelled', state_reason = ?, updated_at = ? \
             WHERE id = ? AND state IN ('submitted', 'awaiting_approval') AND copy_written_at IS NULL \
             AND deleted = 0",
            &[
                Arg::Text(reason.to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Approve a backfill awaiting approval: state `submitted` (its copy is written next),
    /// with who and when. Returns false when it no longer awaits approval.
    pub fn approve(&mut self, id: &str, by: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET state = 'submitted', state_reason = NULL, approved_by = ?, \
             approved_at = ?, updated_at = ? WHERE id = ? AND state = 'awaiting_approval' AND deleted = 0",
            &[
                Arg::Text(by.to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Reject a backfill awaiting approval: state `cancelled` with `reason`, and who and when.
    /// Returns false when it no longer awaits approval.
    pub fn reject(
        &mut self,
        id: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET state = 'cancelled', state_reason = ?, rejected_by = ?, \
             rejected_at = ?, updated_at = ? WHERE id = ? AND state = 'awaiting_approval' AND deleted = 0",
            &[
                Arg::Text(reason.to_owned()),
                Arg::Text(by.to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Cancel a backfill whose copy exists: state `failed` with `reason`, and the Airflow-side
    /// cancel recorded as pending. Returns false when it already finished.
    pub fn cancel(&mut self, id: &str, reason: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET state = 'failed', state_reason = ?, pending_op = 'cancel', \
             run_end = ?, updated_at = ? \
             WHERE id = ? AND state NOT IN ('success', 'failed', 'cancelled') AND deleted = 0",
            &[
                Arg::Text(reason.to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Record a user's pause (state `paused`) or resume, with the Airflow-side toggle pending.
    pub fn set_user_paused(
        &mut self,
        id: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let (state, op) = if paused {
            ("'paused'", PendingOp::Pause)
        } else {
            ("state", PendingOp::Resume)
        };
        let n = self.db.execute(
            &format!(
                "UPDATE backfilld_backfill SET user_paused = ?, pending_op = ?, state = {state}, updated_at = ? \
                 WHERE id = ? AND state NOT IN ('success', 'failed', 'cancelled') AND deleted = 0"
            ),
            &[
                Arg::Int(i64::from(paused)),
                Arg::Text(op.as_str().to_owned()),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Mark a backfill deleted (kept for audit), with the Airflow-side removal pending.
    pub fn mark_deleted(&mut self, id: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET deleted = 1, deleted_at = ?, pending_op = 'delete', updated_at = ? \
             WHERE id = ? AND deleted = 0",
            &[
                Arg::Text(stored_ts(now)),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Mark the backfills `ids` deleted, as [`Store::mark_deleted`] does one: one statement per
    /// [`IN_CHUNK`] ids, and one more for a chunk some of whose rows were already deleted (to
    /// read back which were marked now). Returns the ids marked now.
    pub fn mark_deleted_many(
        &mut self,
        ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, DbError> {
        let at = stored_ts(now);
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut args = vec![Arg::Text(at.clone()), Arg::Text(at.clone())];
            args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
            let n = self.db.execute(
                &format!(
                    "UPDATE backfilld_backfill SET deleted = 1, deleted_at = ?, pending_op = 'delete', \
                     updated_at = ? WHERE id IN ({marks}) AND deleted = 0"
                ),
                &args,
            )?;
            if n == 0 {
                continue;
            }
            if n == chunk.len() {
                out.extend(chunk.iter().map(|id| (*id).to_owned()));
                continue;
            }
            // Those marked by this statement carry its time (one marked before has an older one).
            let mut args = vec![Arg::Text(at.clone())];
            args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
            let rows: Vec<TextRow> = self.db.load(
                &format!(
                    "SELECT id AS value FROM backfilld_backfill WHERE deleted = 1 AND deleted_at = ? \
                     AND id IN ({marks})"
                ),
                &args,
            )?;
            out.extend(rows.into_iter().map(|r| r.value));
        }
        Ok(out)
    }

    /// Store the date counts of a decision without touching the state (for a backfill that
    /// just ended by a cancel, whose runs changed after its state became final).
    pub fn set_progress(
        &mut self,
        id: &str,
        d: &Decision,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let p = d.progress;
        self.db.execute(
            "UPDATE backfilld_backfill SET dates_succeeded = ?, dates_failed = ?, dates_running = ?, \
             dates_queued = ?, updated_at = ? WHERE id = ?",
            &[
                Arg::Int(p.succeeded.into()),
                Arg::Int(p.failed.into()),
                Arg::Int(p.running.into()),
                Arg::Int(p.queued.into()),
                Arg::Text(stored_ts(now)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(())
    }

    /// The Airflow-side work `op` is done.
    pub fn clear_pending_op(&mut self, id: &str, op: PendingOp) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_backfill SET pending_op = NULL WHERE id = ? AND pending_op = ?",
            &[Arg::Text(id.to_owned()), Arg::Text(op.as_str().to_owned())],
        )?;
        Ok(())
    }

    /// The Airflow-side work `op` is done for each of `ids`: one statement per [`IN_CHUNK`].
    pub fn clear_pending_ops(&mut self, ids: &[&str], op: PendingOp) -> Result<(), DbError> {
        for chunk in ids.chunks(IN_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut args = vec![Arg::Text(op.as_str().to_owned())];
            args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
            self.db.execute(
                &format!(
                    "UPDATE backfilld_backfill SET pending_op = NULL WHERE pending_op = ? \
                     AND id IN ({marks})"
                ),
                &args,
            )?;
        }
        Ok(())
    }

    /// Claim the first write of a `submitted` backfill's copy: records where and when, and
    /// whether it registers paused. False when it no longer qualifies (another agent claimed
    /// it, or it was withdrawn): the two exclude each other, as both need `copy_written_at`
    /// unset.
    pub fn claim_copy(
        &mut self,
        id: &str,
        path: &str,
        at: DateTime<Utc>,
        paused: bool,
    ) -> Result<bool, DbError> {
        let n = self.db.execute(
            "UPDATE backfilld_backfill SET copy_path = ?, copy_written_at = ?, updated_at = ?, \
             throttled = ?, copy_paused = ? \
             WHERE id = ? AND state = 'submitted' AND deleted = 0 AND copy_written_at IS NULL",
            &[
                Arg::Text(path.to_owned()),
                Arg::Text(stored_ts(at)),
                Arg::Text(stored_ts(at)),
                Arg::Int(i64::from(paused)),
                Arg::Int(i64::from(paused)),
                Arg::Text(id.to_owned()),
            ],
        )?;
        Ok(n > 0)
    }

    /// Give back a claim whose file could not be written: the backfill is again one without a
    /// copy (and so can be withdrawn).
    pub fn unclaim_copy(&mut self, id: &str, claimed_at: DateTime<Utc>) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_backfill SET copy_path = NULL, copy_written_at = NULL \
             WHERE id = ? AND state = 'submitted' AND copy_written_at = ?",
            &[Arg::Text(id.to_owned()), Arg::Text(stored_ts(claimed_at))],
        )?;
        Ok(())
    }

    /// Record that a copy was removed on purpose (cancelled before Airflow registered it): no
    /// agent restores it.
    pub fn mark_copy_removed(&mut self, id: &str, at: DateTime<Utc>) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_backfill SET copy_path = NULL, copy_written_at = NULL, updated_at = ? WHERE id = ?",
            &[Arg::Text(stored_ts(at)), Arg::Text(id.to_owned())],
        )?;
        Ok(())
    }

    /// Every backfill whose copy must be on disk (written, neither deleted nor removed on
    /// purpose): its id, when its copy was first written, and whether the copy is backfilld's
    /// rendering (copies taken over from the seed plugin are its files, left as they are, but
    /// still not to be removed). One statement.
    pub fn live_copies(&mut self) -> Result<Vec<(String, DateTime<Utc>, bool)>, DbError> {
        let ours = self
            .db
            .dialect()
            .int("CASE WHEN seed_id IS NULL THEN 1 ELSE 0 END");
        let rows: Vec<LiveCopySql> = self.db.load(
            &format!(
                "SELECT id, copy_written_at, {ours} AS ours FROM backfilld_backfill \
                 WHERE deleted = 0 AND copy_written_at IS NOT NULL ORDER BY id"
            ),
            &[],
        )?;
        rows.into_iter()
            .map(|r| Ok((r.id, parse_ts(&r.copy_written_at)?, r.ours != 0)))
            .collect()
    }

    /// Of the copy files named after `ids`, those that belong to a backfill whose copy must be
    /// gone (deleted, or removed on purpose). Files of unknown ids (another tool's, an imported
    /// seed backfill's) are not backfilld's to remove. One statement per [`IN_CHUNK`] ids, none
    /// for none.
    pub fn gone_copies(&mut self, ids: &[&str]) -> Result<Vec<String>, DbError> {
        let mut gone = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            let rows: Vec<TextRow> = self.db.load(
                &format!(
                    "SELECT id AS value FROM backfilld_backfill WHERE id IN ({marks}) \
                     AND (deleted = 1 OR copy_written_at IS NULL)"
                ),
                &args,
            )?;
            gone.extend(rows.into_iter().map(|r| r.value));
        }
        Ok(gone)
    }
}

/// One authorization decision, for `backfilld_audit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: String,
    /// The caller's or file owner's uid (kernel-verified), when known.
    pub uid: Option<u32>,
    /// Its unix user name.
    pub unix_user: Option<String>,
    /// The Airflow user decided for.
    pub airflow_user: Option<String>,
    /// The Airflow user named in `on_behalf_of`.
    pub on_behalf_of: Option<String>,
    /// What was asked (`create`, `read`, ...).
    pub action: String,
    /// What it was asked on (DAG id, backfill id or request file).
    pub target: Option<String>,
    /// The decision.
    pub allowed: bool,
    /// Why not (machine-readable).
    pub reason_code: Option<ReasonCode>,
    /// Why not (for people).
    pub reason: Option<String>,
}

impl Store<'_> {
    /// Append an audit record to the hash chain (its own transaction, or a savepoint of the
    /// caller's: see `metadb::audit`).
    pub fn audit(&mut self, host: &str, e: &AuditEntry) -> Result<(), DbError> {
        super::audit::append(self.db, host, e)
    }

    /// Append several audit records to the hash chain in order, in one multi-row `INSERT`
    /// per chunk (see `metadb::audit::append_many`).
    pub fn audit_many(&mut self, host: &str, entries: &[AuditEntry]) -> Result<(), DbError> {
        super::audit::append_many(self.db, host, entries)
    }

    /// Verify the audit log's hash chain; the report names the first broken link.
    pub fn verify_audit(&mut self) -> Result<crate::audit::Report, DbError> {
        super::audit::verify(self.db)
    }
}
