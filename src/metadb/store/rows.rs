//! The typed rows of backfilld's tables (requests, backfills and their options) and the SQL
//! rows they are read from.

use super::*;

/// What became of a request file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// Durable identity of the file (see `spool`).
    pub request_key: String,
    /// The name the requester gave the file.
    pub file_name: String,
    /// The file owner's uid, from the kernel.
    pub uid: u32,
    /// The uid's user name, when it has one.
    pub username: Option<String>,
    /// The host whose spool received it.
    pub host: String,
    /// When it was ingested.
    pub received_at: String,
    /// `accepted` or `rejected`.
    pub outcome: crate::request::Outcome,
    /// The backfill it created.
    pub backfill_id: Option<String>,
    /// Why it was rejected (machine-readable).
    pub reason_code: Option<ReasonCode>,
    /// Why it was rejected (for people).
    pub reason: Option<String>,
    /// The Airflow user the request was decided for (after mapping and `on_behalf_of`).
    pub airflow_user: Option<String>,
    /// The Airflow user a trusted submitter named in `on_behalf_of`.
    pub on_behalf_of: Option<String>,
    /// What the file asked for (`create`, `cancel`, ...); `None` in records older than that.
    pub action: Option<String>,
    /// A dry run: validated, nothing created.
    pub dry_run: bool,
    /// The logical dates a dry run would run.
    pub dates: Option<Vec<String>>,
    /// Dates of the range not run because the origin DAG already ran them (`reprocess`).
    pub skipped_dates: Option<Vec<String>>,
    /// Things the requester should know about an accepted request (e.g. sensors waiting on
    /// other DAGs).
    pub warnings: Option<Vec<String>>,
    /// A dry run's estimate of how long the backfill would take.
    pub estimate: Option<crate::estimate::Estimate>,
}

#[derive(QueryableByName)]
pub(super) struct RequestSql {
    #[diesel(sql_type = Text)]
    pub(super) request_key: String,
    #[diesel(sql_type = Text)]
    pub(super) file_name: String,
    #[diesel(sql_type = BigInt)]
    pub(super) uid: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) username: Option<String>,
    #[diesel(sql_type = Text)]
    pub(super) host: String,
    #[diesel(sql_type = Text)]
    pub(super) received_at: String,
    #[diesel(sql_type = Text)]
    pub(super) outcome: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) backfill_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) reason_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) airflow_user: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) on_behalf_of: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) action: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(super) dry_run: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) dates: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) skipped_dates: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) warnings: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) estimate: Option<String>,
}

impl From<RequestSql> for RequestRecord {
    fn from(r: RequestSql) -> Self {
        RequestRecord {
            request_key: r.request_key,
            file_name: r.file_name,
            uid: u32::try_from(r.uid).unwrap_or(u32::MAX),
            username: r.username,
            host: r.host,
            received_at: r.received_at,
            outcome: crate::request::Outcome::parse(&r.outcome),
            backfill_id: r.backfill_id,
            reason_code: r
                .reason_code
                .and_then(|c| serde_json::from_value(serde_json::Value::String(c)).ok()),
            reason: r.reason,
            airflow_user: r.airflow_user,
            on_behalf_of: r.on_behalf_of,
            action: r.action,
            dry_run: r.dry_run != 0,
            dates: r.dates.and_then(|d| serde_json::from_str(&d).ok()),
            skipped_dates: r.skipped_dates.and_then(|d| serde_json::from_str(&d).ok()),
            warnings: r.warnings.and_then(|d| serde_json::from_str(&d).ok()),
            estimate: r.estimate.and_then(|d| serde_json::from_str(&d).ok()),
        }
    }
}

pub(super) const REQUEST_COLS: &str =
    "request_key, file_name, uid, username, host, received_at, outcome, backfill_id, reason_code, reason, \
     airflow_user, on_behalf_of, action, dry_run, dates, skipped_dates, warnings, estimate";

pub use crate::rows::{BackfillOptions, BackfillRow, NewBackfill, PendingOp};

/// The columns of a `backfilld_backfill` row that every read of one takes — the full
/// [`BackfillRow`] and a reconcile pass's light `PassRow` — as stored.
#[derive(QueryableByName)]
pub(crate) struct LiveSql {
    #[diesel(sql_type = Text)]
    pub(crate) id: String,
    #[diesel(sql_type = Text)]
    pub(crate) dag_id: String,
    #[diesel(sql_type = Text)]
    pub(crate) state: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) state_reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) copy_path: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) copy_written_at: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) submitted_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) run_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) run_end: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(crate) dates_total: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) dates_succeeded: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) dates_failed: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) dates_running: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) dates_queued: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) user_paused: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) pending_op: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) scheduled_at: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(crate) max_active_runs: i64,
}

/// [`LiveSql`] read: the fields the full row and the pass's row share, converted once.
pub(crate) struct Live {
    pub(crate) id: String,
    pub(crate) dag_id: String,
    pub(crate) state: BackfillState,
    pub(crate) state_reason: Option<String>,
    pub(crate) copy_path: Option<String>,
    pub(crate) copy_written_at: Option<DateTime<Utc>>,
    pub(crate) submitted_at: DateTime<Utc>,
    pub(crate) scheduled_at: Option<DateTime<Utc>>,
    pub(crate) run_start: Option<DateTime<Utc>>,
    pub(crate) run_end: Option<DateTime<Utc>>,
    pub(crate) progress: Progress,
    pub(crate) user_paused: bool,
    pub(crate) pending_op: Option<PendingOp>,
    pub(crate) max_active_runs: u32,
}

impl TryFrom<LiveSql> for Live {
    type Error = DbError;

    fn try_from(r: LiveSql) -> Result<Self, DbError> {
        let opt = |s: Option<String>| s.as_deref().map(parse_ts).transpose();
        let state = BackfillState::parse(&r.state).ok_or_else(|| {
            DbError::Data(format!("backfill {}: unknown state {:?}", r.id, r.state))
        })?;
        let total = count(r.dates_total);
        let (succeeded, failed, running, queued) = (
            count(r.dates_succeeded),
            count(r.dates_failed),
            count(r.dates_running),
            count(r.dates_queued),
        );
        Ok(Live {
            state,
            state_reason: r.state_reason,
            copy_path: r.copy_path,
            copy_written_at: opt(r.copy_written_at)?,
            submitted_at: parse_ts(&r.submitted_at)?,
            scheduled_at: opt(r.scheduled_at)?,
            run_start: opt(r.run_start)?,
            run_end: opt(r.run_end)?,
            progress: Progress {
                total,
                succeeded,
                failed,
                running,
                queued,
                pending: total.saturating_sub(succeeded + failed + running + queued),
            },
            user_paused: r.user_paused != 0,
            pending_op: r.pending_op.as_deref().and_then(PendingOp::parse),
            max_active_runs: count(r.max_active_runs),
            dag_id: r.dag_id,
            id: r.id,
        })
    }
}

#[derive(QueryableByName)]
pub(super) struct BackfillSql {
    #[diesel(embed)]
    pub(super) live: LiveSql,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) description: Option<String>,
    #[diesel(sql_type = Text)]
    pub(super) start_date: String,
    #[diesel(sql_type = Text)]
    pub(super) end_date: String,
    #[diesel(sql_type = Text)]
    pub(super) logical_dates: String,
    #[diesel(sql_type = Text)]
    pub(super) params: String,
    #[diesel(sql_type = BigInt)]
    pub(super) ignore_overlap: i64,
    #[diesel(sql_type = Text)]
    pub(super) origin_fileloc: String,
    #[diesel(sql_type = Text)]
    pub(super) origin_code: String,
    #[diesel(sql_type = Text)]
    pub(super) submitted_by: String,
    #[diesel(sql_type = BigInt)]
    pub(super) submitted_uid: i64,
    #[diesel(sql_type = Text)]
    pub(super) updated_at: String,
    #[diesel(sql_type = Text)]
    pub(super) host: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) requester: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) on_behalf_of: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(super) deleted: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) deleted_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) retry_of: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(super) delete_after_days: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) reprocess: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) skipped_dates: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(super) copy_paused: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) options: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) seed_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) import_note: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) approved_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) approved_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) rejected_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) rejected_at: Option<String>,
}

#[derive(QueryableByName)]
pub(super) struct LiveCopySql {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) copy_written_at: String,
    #[diesel(sql_type = BigInt)]
    pub(super) ours: i64,
}

#[derive(QueryableByName)]
pub(super) struct RetentionSql {
    #[diesel(sql_type = Text)]
    pub(super) id: String,
    #[diesel(sql_type = Text)]
    pub(super) updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) run_end: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub(super) delete_after_days: i64,
}

pub(super) const BACKFILL_COLS: &str = "id, dag_id, state, state_reason, description, start_date, end_date, \
    logical_dates, params, max_active_runs, ignore_overlap, origin_fileloc, origin_code, copy_path, \
    copy_written_at, submitted_by, submitted_uid, submitted_at, updated_at, run_start, run_end, \
    dates_total, dates_succeeded, dates_failed, dates_running, dates_queued, host, requester, \
    on_behalf_of, deleted, deleted_at, user_paused, pending_op, retry_of, scheduled_at, \
    delete_after_days, reprocess, skipped_dates, copy_paused, options, seed_id, import_note, \
    approved_by, approved_at, rejected_by, rejected_at";

/// The filters of a list that the DB applies (the caller's DAG permissions are applied on the
/// rows read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Include deleted backfills.
    pub include_deleted: bool,
    /// Only backfills of this origin DAG.
    pub dag_id: Option<String>,
    /// Only backfills in this state.
    pub state: Option<BackfillState>,
    /// Only backfills submitted at or after this instant.
    pub since: Option<DateTime<Utc>>,
}

impl ListQuery {
    /// The `WHERE` conditions (joined with `AND`) and their arguments.
    pub(super) fn conditions(&self) -> (Vec<String>, Vec<Arg>) {
        let (mut sql, mut args) = (Vec::new(), Vec::new());
        if !self.include_deleted {
            sql.push("deleted = 0".to_owned());
        }
        if let Some(d) = &self.dag_id {
            sql.push("dag_id = ?".to_owned());
            args.push(Arg::Text(d.clone()));
        }
        if let Some(s) = self.state {
            sql.push("state = ?".to_owned());
            args.push(Arg::Text(s.as_str().to_owned()));
        }
        if let Some(t) = self.since {
            sql.push("submitted_at >= ?".to_owned());
            args.push(Arg::Text(stored_ts(t)));
        }
        (sql, args)
    }
}

pub(super) fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

#[derive(QueryableByName)]
pub(super) struct DagCountSql {
    #[diesel(sql_type = Text)]
    pub(super) dag_id: String,
    #[diesel(sql_type = BigInt)]
    pub(super) n: i64,
}

/// A stored JSON list of timestamps (NULL: none).
pub(super) fn dates_of(id: &str, json: Option<&str>) -> Result<Vec<DateTime<Utc>>, DbError> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let texts: Vec<String> = serde_json::from_str(json)
        .map_err(|e| DbError::Data(format!("backfill {id}: skipped_dates: {e}")))?;
    texts.iter().map(|d| parse_ts(d)).collect()
}

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl TryFrom<BackfillSql> for BackfillRow {
    type Error = DbError;

    fn try_from(r: BackfillSql) -> Result<Self, DbError> {
        let opt = |s: Option<String>| s.as_deref().map(parse_ts).transpose();
        let live = Live::try_from(r.live)?;
        let id = live.id;
        let dates: Vec<String> = serde_json::from_str(&r.logical_dates)
            .map_err(|e| DbError::Data(format!("backfill {id}: logical_dates: {e}")))?;
        let logical_dates = dates
            .iter()
            .map(|d| parse_ts(d))
            .collect::<Result<Vec<_>, _>>()?;
        let params = match serde_json::from_str(&r.params) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(DbError::Data(format!(
                    "backfill {id}: params is not a JSON object"
                )))
            }
        };
        let skipped_dates = dates_of(&id, r.skipped_dates.as_deref())?;
        let options = match r.options.as_deref() {
            None => BackfillOptions::default(),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| DbError::Data(format!("backfill {id}: options: {e}")))?,
        };
        Ok(BackfillRow {
            id,
            dag_id: live.dag_id,
            state: live.state,
            state_reason: live.state_reason,
            description: r.description,
            start: parse_ts(&r.start_date)?,
            end: parse_ts(&r.end_date)?,
            logical_dates,
            params,
            max_active_runs: live.max_active_runs,
            ignore_overlap: r.ignore_overlap != 0,
            origin_fileloc: r.origin_fileloc,
            origin_code: r.origin_code,
            copy_path: live.copy_path,
            copy_written_at: live.copy_written_at,
            submitted_by: r.submitted_by,
            submitted_uid: count(r.submitted_uid),
            requester: r.requester,
            on_behalf_of: r.on_behalf_of,
            submitted_at: live.submitted_at,
            updated_at: parse_ts(&r.updated_at)?,
            run_start: live.run_start,
            run_end: live.run_end,
            progress: live.progress,
            host: r.host,
            deleted: r.deleted != 0,
            deleted_at: opt(r.deleted_at)?,
            user_paused: live.user_paused,
            pending_op: live.pending_op,
            retry_of: r.retry_of,
            scheduled_at: live.scheduled_at,
            delete_after_days: r.delete_after_days.map(count),
            reprocess: r.reprocess,
            skipped_dates,
            copy_paused: r.copy_paused != 0,
            options,
            seed_id: r.seed_id,
            import_note: r.import_note,
            approved_by: r.approved_by,
            approved_at: opt(r.approved_at)?,
            rejected_by: r.rejected_by,
            rejected_at: opt(r.rejected_at)?,
        })
    }
}
