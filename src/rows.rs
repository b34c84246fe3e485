//! Rows of backfilld's tables and of Airflow's `dag` table as plain values: what the metadata
//! DB layer (`metadb`) reads and writes and the pure decisions (`engine::decide`) take, with
//! no I/O of their own. `metadb::store` and `metadb::airflow` re-export them beside the
//! statements that fill them.

use chrono::{DateTime, Utc};

use crate::reconcile::Progress;
use crate::state::BackfillState;

/// A backfill as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillRow {
    /// The backfill id, which is also the copy's DAG id.
    pub id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// Current state.
    pub state: BackfillState,
    /// Why it is in that state, when that needs saying.
    pub state_reason: Option<String>,
    /// The requester's description.
    pub description: Option<String>,
    /// First logical date.
    pub start: DateTime<Utc>,
    /// Last logical date.
    pub end: DateTime<Utc>,
    /// Every logical date the backfill runs.
    pub logical_dates: Vec<DateTime<Utc>>,
    /// Param overrides.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Concurrent runs.
    pub max_active_runs: u32,
    /// Whether overlap was allowed.
    pub ignore_overlap: bool,
    /// The origin DAG's file.
    pub origin_fileloc: String,
    /// Origin source snapshot taken at accept time.
    pub origin_code: String,
    /// Where the copy was written.
    pub copy_path: Option<String>,
    /// When the copy was written.
    pub copy_written_at: Option<DateTime<Utc>>,
    /// Airflow user name of the requester.
    pub submitted_by: String,
    /// The requester's uid.
    pub submitted_uid: u32,
    /// The unix user that owned the request file.
    pub requester: Option<String>,
    /// The Airflow user a trusted submitter acted for (then `submitted_by`).
    pub on_behalf_of: Option<String>,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First run start.
    pub run_start: Option<DateTime<Utc>>,
    /// Last run end.
    pub run_end: Option<DateTime<Utc>>,
    /// Date counts (pending is derived).
    pub progress: Progress,
    /// Host that accepted it.
    pub host: String,
    /// Whether it was deleted (kept for audit).
    pub deleted: bool,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Whether a user paused it (nothing automatic may unpause it).
    pub user_paused: bool,
    /// Airflow-side work of a life-cycle action still to carry out (see [`PendingOp`]).
    pub pending_op: Option<PendingOp>,
    /// The backfill this one retries.
    pub retry_of: Option<String>,
    /// The copy is written only from this instant on.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Days after it finished that it is deleted automatically.
    pub delete_after_days: Option<u32>,
    /// The `reprocess` mode it was created with (`None` in rows older than that).
    pub reprocess: Option<String>,
    /// Dates of its range not run because the origin DAG already ran them.
    pub skipped_dates: Vec<DateTime<Utc>>,
    /// Whether its copy was written to register paused (held by the throttle from the start).
    pub copy_paused: bool,
    /// Task subset, asset events, ordering.
    pub options: BackfillOptions,
    /// The seed plugin's `backfill_dag_id` it was imported from (`backfillctl import-seed`).
    pub seed_id: Option<String>,
    /// What the import found worth saying (the seed's state, the dates it did not record).
    pub import_note: Option<String>,
    /// The Airflow user who approved it (`[approval]`), when it waited for approval.
    pub approved_by: Option<String>,
    /// When it was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// The Airflow user who rejected it.
    pub rejected_by: Option<String>,
    /// When it was rejected.
    pub rejected_at: Option<DateTime<Utc>>,
}

/// A backfill's options beyond its range, stored as JSON (`backfilld_backfill.options`; NULL in
/// rows older than them reads as the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BackfillOptions {
    /// The `tasks` patterns (empty: every task runs).
    pub tasks: Vec<String>,
    /// The task ids the patterns selected when it was accepted (relatives not included).
    pub task_ids: Vec<String>,
    /// With `tasks`: upstream tasks of the selected ones run too.
    pub include_upstream: bool,
    /// With `tasks`: downstream tasks of the selected ones run too.
    pub include_downstream: bool,
    /// Whether the copy's tasks emit dataset/asset events.
    pub emit_asset_events: bool,
    /// Backfills that must succeed before the copy is written.
    pub after: Vec<String>,
    /// Warnings given when it was accepted.
    pub warnings: Vec<String>,
    /// Turn order under a short throttle budget (higher first; also the `priority` column).
    pub priority: i32,
    /// Who creates the copy's runs and in which order (also the `run_order` column).
    pub run_order: crate::steer::RunOrder,
    /// The recipients the request named (`notification`); the config's are added when sent.
    pub notify: Vec<String>,
}

impl BackfillRow {
    /// When it finished (its last run ended, or it was cancelled or failed), if it did.
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.state
            .is_terminal()
            .then(|| self.run_end.unwrap_or(self.updated_at))
    }

    /// When it is due for automatic deletion, if ever.
    pub fn delete_due(&self) -> Option<DateTime<Utc>> {
        let days = self.delete_after_days?;
        Some(self.finished_at()? + chrono::Duration::days(i64::from(days)))
    }
}

/// Airflow-side work of an accepted life-cycle action, recorded with the decision and carried
/// out (again, after a crash) until done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOp {
    /// Pause the copy, fail its unfinished runs (or remove a copy Airflow has not registered).
    Cancel,
    /// Pause the copy.
    Pause,
    /// Unpause the copy.
    Resume,
    /// Pause the copy, remove its file and Airflow's rows for its dag_id.
    Delete,
}

impl PendingOp {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingOp::Cancel => "cancel",
            PendingOp::Pause => "pause",
            PendingOp::Resume => "resume",
            PendingOp::Delete => "delete",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<PendingOp> {
        [
            PendingOp::Cancel,
            PendingOp::Pause,
            PendingOp::Resume,
            PendingOp::Delete,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A backfill about to be accepted.
#[derive(Debug, Clone)]
pub struct NewBackfill {
    /// The origin DAG.
    pub dag_id: String,
    /// Requested range.
    pub start: DateTime<Utc>,
    /// Requested range.
    pub end: DateTime<Utc>,
    /// Dates computed from the timetable.
    pub logical_dates: Vec<DateTime<Utc>>,
    /// Description.
    pub description: Option<String>,
    /// Param overrides.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Concurrent runs.
    pub max_active_runs: u32,
    /// Overlap allowed.
    pub ignore_overlap: bool,
    /// Origin file.
    pub origin_fileloc: String,
    /// Origin source snapshot.
    pub origin_code: String,
    /// Requester's Airflow user name.
    pub submitted_by: String,
    /// Requester's uid.
    pub submitted_uid: u32,
    /// The unix user that owned the request file.
    pub requester: String,
    /// The Airflow user named in `on_behalf_of` by a trusted submitter.
    pub on_behalf_of: Option<String>,
    /// The backfill this one retries.
    pub retry_of: Option<String>,
    /// Write the copy only from this instant on.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Days after it finished that it is deleted automatically.
    pub delete_after_days: Option<u32>,
    /// The `reprocess` mode.
    pub reprocess: String,
    /// Dates of the range skipped because the origin DAG already ran them.
    pub skipped_dates: Vec<DateTime<Utc>>,
    /// Task subset, asset events, ordering.
    pub options: BackfillOptions,
    /// Set when it waits for approval (`[approval] over_dates`): the reason shown meanwhile.
    /// It is then stored as `awaiting_approval` instead of `submitted`.
    pub awaiting_approval: Option<String>,
}

/// A row of Airflow's `dag` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagRow {
    /// The DAG id.
    pub dag_id: String,
    /// Whether Airflow still finds the DAG in its files.
    pub is_active: bool,
    /// Whether the DAG is paused.
    pub is_paused: bool,
    /// The file it was parsed from.
    pub fileloc: Option<String>,
}
