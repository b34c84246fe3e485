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

/// Schema version this build expects.
pub const SCHEMA_VERSION: i64 = 18;

fn migrations(d: Dialect) -> Vec<(i64, Vec<String>)> {
    let long = d.long_text();
    vec![
        (
            1,
            vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_request (
                request_key VARCHAR(64) NOT NULL PRIMARY KEY,
                file_name VARCHAR(255) NOT NULL,
                uid BIGINT NOT NULL,
                username VARCHAR(255),
                host VARCHAR(255) NOT NULL,
                received_at VARCHAR(40) NOT NULL,
                outcome VARCHAR(16) NOT NULL,
                backfill_id VARCHAR(250),
                reason_code VARCHAR(64),
                reason {long})"
                ),
                "CREATE INDEX backfilld_request_owner ON backfilld_request (uid, file_name)"
                    .to_owned(),
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_backfill (
                id VARCHAR(250) NOT NULL PRIMARY KEY,
                dag_id VARCHAR(250) NOT NULL,
                state VARCHAR(16) NOT NULL,
                state_reason {long},
                description {long},
                start_date VARCHAR(40) NOT NULL,
                end_date VARCHAR(40) NOT NULL,
                logical_dates {long} NOT NULL,
                params {long} NOT NULL,
                max_active_runs BIGINT NOT NULL,
                ignore_overlap BIGINT NOT NULL,
                scheduled_at VARCHAR(40),
                delete_at VARCHAR(40),
                origin_fileloc VARCHAR(2000) NOT NULL,
                origin_code {long} NOT NULL,
                copy_path VARCHAR(2000),
                copy_written_at VARCHAR(40),
                submitted_by VARCHAR(255) NOT NULL,
                submitted_uid BIGINT NOT NULL,
                submitted_at VARCHAR(40) NOT NULL,
                updated_at VARCHAR(40) NOT NULL,
                deleted BIGINT NOT NULL,
                run_start VARCHAR(40),
                run_end VARCHAR(40),
                dates_total BIGINT NOT NULL,
                dates_succeeded BIGINT NOT NULL,
                dates_failed BIGINT NOT NULL,
                dates_running BIGINT NOT NULL,
                dates_queued BIGINT NOT NULL,
                host VARCHAR(255) NOT NULL,
                request_key VARCHAR(64) NOT NULL)"
                ),
                "CREATE INDEX backfilld_backfill_dag ON backfilld_backfill (dag_id, state)"
                    .to_owned(),
            ],
        ),
        (
            2,
            vec![
                "ALTER TABLE backfilld_request ADD COLUMN airflow_user VARCHAR(256)".to_owned(),
                "ALTER TABLE backfilld_request ADD COLUMN on_behalf_of VARCHAR(256)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN requester VARCHAR(255)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN on_behalf_of VARCHAR(256)".to_owned(),
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_audit (
                id {},
                at VARCHAR(40) NOT NULL,
                host VARCHAR(255) NOT NULL,
                uid BIGINT,
                unix_user VARCHAR(255),
                airflow_user VARCHAR(256),
                on_behalf_of VARCHAR(256),
                action VARCHAR(32) NOT NULL,
                target VARCHAR(2000),
                allowed BIGINT NOT NULL,
                reason_code VARCHAR(64),
                reason {long})",
                    d.serial_pk()
                ),
                "CREATE INDEX backfilld_audit_at ON backfilld_audit (at)".to_owned(),
            ],
        ),
        (
            3,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN user_paused BIGINT NOT NULL DEFAULT 0"
                    .to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN pending_op VARCHAR(16)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN retry_of VARCHAR(250)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN deleted_at VARCHAR(40)".to_owned(),
                "ALTER TABLE backfilld_request ADD COLUMN action VARCHAR(16)".to_owned(),
                "ALTER TABLE backfilld_request ADD COLUMN dry_run BIGINT NOT NULL DEFAULT 0"
                    .to_owned(),
                format!("ALTER TABLE backfilld_request ADD COLUMN dates {long}"),
            ],
        ),
        (
            4,
            vec!["ALTER TABLE backfilld_backfill ADD COLUMN delete_after_days BIGINT".to_owned()],
        ),
        (
            5,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN reprocess VARCHAR(16)".to_owned(),
                format!("ALTER TABLE backfilld_backfill ADD COLUMN skipped_dates {long}"),
                format!("ALTER TABLE backfilld_request ADD COLUMN skipped_dates {long}"),
            ],
        ),
        (
            6,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN throttled BIGINT NOT NULL DEFAULT 0"
                    .to_owned(),
            ],
        ),
        (
            7,
            vec![
                "CREATE TABLE IF NOT EXISTS backfilld_lease (
                name VARCHAR(64) NOT NULL PRIMARY KEY,
                holder VARCHAR(255) NOT NULL,
                token BIGINT NOT NULL,
                expires_ms BIGINT NOT NULL,
                acquired_at VARCHAR(40))"
                    .to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN copy_paused BIGINT NOT NULL DEFAULT 0"
                    .to_owned(),
            ],
        ),
        (
            // The audit hash chain (see `metadb::audit`); existing records are chained right
            // after these statements, before the version is recorded.
            AUDIT_CHAIN_VERSION,
            vec![
                "ALTER TABLE backfilld_audit ADD COLUMN prev_hash VARCHAR(64)".to_owned(),
                "ALTER TABLE backfilld_audit ADD COLUMN hash VARCHAR(64)".to_owned(),
                "CREATE TABLE IF NOT EXISTS backfilld_audit_head (id BIGINT NOT NULL PRIMARY KEY, hash VARCHAR(64) NOT NULL)"
                    .to_owned(),
            ],
        ),
        (
            9,
            vec![
                format!("ALTER TABLE backfilld_backfill ADD COLUMN options {long}"),
                format!("ALTER TABLE backfilld_request ADD COLUMN warnings {long}"),
                "CREATE TABLE IF NOT EXISTS backfilld_after (
                backfill_id VARCHAR(250) NOT NULL,
                after_id VARCHAR(250) NOT NULL,
                ordinal BIGINT NOT NULL,
                PRIMARY KEY (backfill_id, after_id))"
                    .to_owned(),
            ],
        ),
        (
            10,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN priority BIGINT NOT NULL DEFAULT 0"
                    .to_owned(),
            ],
        ),
        (
            11,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN seed_id VARCHAR(250)".to_owned(),
                format!("ALTER TABLE backfilld_backfill ADD COLUMN import_note {long}"),
                "CREATE UNIQUE INDEX backfilld_backfill_seed ON backfilld_backfill (seed_id)"
                    .to_owned(),
            ],
        ),
        (
            // Approval of big backfills: who approved or rejected one, and when; the state
            // column widened for `awaiting_approval` (17 characters).
            12,
            [
                "ALTER TABLE backfilld_backfill ADD COLUMN approved_by VARCHAR(256)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN approved_at VARCHAR(40)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN rejected_by VARCHAR(256)".to_owned(),
                "ALTER TABLE backfilld_backfill ADD COLUMN rejected_at VARCHAR(40)".to_owned(),
            ]
            .into_iter()
            .chain(d.widen_varchar("backfilld_backfill", "state", 32, true))
            .collect(),
        ),
        (
            // Steered copies (`steer`): NULL for catchup, else `oldest_first`/`newest_first`;
            // indexed so the leader's per-pass look for steered copies reads only those.
            13,
            vec![
                "ALTER TABLE backfilld_backfill ADD COLUMN run_order VARCHAR(16)".to_owned(),
                "CREATE INDEX backfilld_backfill_run_order ON backfilld_backfill (run_order)"
                    .to_owned(),
            ],
        ),
        (
            // Grants backfilld made (or found) in Airflow's FAB tables: each is made once, so
            // one an admin revokes later stays revoked.
            14,
            vec!["CREATE TABLE IF NOT EXISTS backfilld_grant (
                role VARCHAR(256) NOT NULL,
                action VARCHAR(100) NOT NULL,
                resource VARCHAR(250) NOT NULL,
                granted_at VARCHAR(40) NOT NULL,
                PRIMARY KEY (role, action, resource))"
                .to_owned()],
        ),
        (
            // A dry run's time estimate (`estimate::Estimate` as JSON).
            15,
            vec![format!(
                "ALTER TABLE backfilld_request ADD COLUMN estimate {long}"
            )],
        ),
        (
            // Notifications sent (`notification`): one mark per backfill and state it was
            // told of; `updated_at` indexed for the leader's look for recent state changes.
            16,
            vec![
                "CREATE TABLE IF NOT EXISTS backfilld_notification (
                backfill_id VARCHAR(250) NOT NULL,
                state VARCHAR(32) NOT NULL,
                sent_at VARCHAR(40) NOT NULL,
                PRIMARY KEY (backfill_id, state))"
                    .to_owned(),
                "CREATE INDEX backfilld_backfill_updated ON backfilld_backfill (updated_at)"
                    .to_owned(),
            ],
        ),
        (
            // The seed import as a job (`seedjob`): its progress and keyset cursor, and each
            // batch's report fragment, written with the batch's imports.
            17,
            vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_import (
                id {serial},
                state VARCHAR(16) NOT NULL,
                uid BIGINT NOT NULL,
                host VARCHAR(255) NOT NULL,
                started_at VARCHAR(40) NOT NULL,
                updated_at VARCHAR(40) NOT NULL,
                cursor_id VARCHAR(250),
                total BIGINT NOT NULL,
                rows_done BIGINT NOT NULL,
                imported BIGINT NOT NULL,
                skipped BIGINT NOT NULL,
                refused BIGINT NOT NULL,
                already BIGINT NOT NULL,
                error {long})",
                    serial = d.serial_pk()
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_import_batch (
                import_id BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                report {long} NOT NULL,
                PRIMARY KEY (import_id, seq))"
                ),
            ],
        ),
        (
            // Keyset paging of lists (`paging`): newest first, read from the index alone.
            18,
            vec![
                "CREATE INDEX backfilld_backfill_submitted ON backfilld_backfill (submitted_at, id)"
                    .to_owned(),
            ],
        ),
    ]
}

/// The migration that starts the audit hash chain.
const AUDIT_CHAIN_VERSION: i64 = 8;

/// Most ids one `IN (...)` list binds (under every backend's bind limit).
const IN_CHUNK: usize = 400;

/// Timestamps as stored: RFC 3339, UTC, microseconds, `Z`.
pub fn stored_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Create or upgrade backfilld's tables. Safe when several agents start at once.
pub fn migrate(db: &mut MetaDb) -> Result<i64, DbError> {
    db.batch(
        "CREATE TABLE IF NOT EXISTS backfilld_migration (version BIGINT NOT NULL PRIMARY KEY, applied_at VARCHAR(40) NOT NULL)",
    )?;
    let current = current_version(db)?;
    if current > SCHEMA_VERSION {
        return Err(DbError::Schema(format!(
            "backfilld's tables are at version {current}, newer than this build ({SCHEMA_VERSION}): upgrade backfilld"
        )));
    }
    for (version, statements) in migrations(db.dialect()) {
        if version <= current_version(db)? {
            continue;
        }
        for sql in statements {
            if let Err(e) = db.batch(&sql) {
                // Another agent may have applied the same migration a moment ago.
                if current_version(db)? >= version {
                    break;
                }
                let msg = e.to_string();
                if !(msg.contains("already exists")
                    || msg.contains("Duplicate key name")
                    || msg.contains("uplicate column"))
                {
                    return Err(e);
                }
            }
        }
        if version == AUDIT_CHAIN_VERSION {
            let chained = super::audit::chain_existing(db)?;
            tracing::info!(records = chained, "chained the existing audit records");
        }
        match db.execute(
            "INSERT INTO backfilld_migration (version, applied_at) VALUES (?, ?)",
            &[Arg::Int(version), Arg::Text(stored_ts(Utc::now()))],
        ) {
            Ok(_) => tracing::info!(version, "applied backfilld schema migration"),
            Err(e) if e.is_unique_violation() => {}
            Err(e) => return Err(e),
        }
    }
    current_version(db)
}

fn current_version(db: &mut MetaDb) -> Result<i64, DbError> {
    let rows: Vec<IntRow> = db.load(
        "SELECT COALESCE(MAX(version), 0) AS value FROM backfilld_migration",
        &[],
    )?;
    Ok(rows.first().map(|r| r.value).unwrap_or(0))
}

/// What became of a request file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    pub outcome: String,
    /// The backfill it created.
    pub backfill_id: Option<String>,
    /// Why it was rejected (machine-readable).
    pub reason_code: Option<ReasonCode>,
    /// Why it was rejected (for people).
    pub reason: Option<String>,
    /// The Airflow user the request was decided for (after mapping and `on_behalf_of`).
    #[serde(default)]
    pub airflow_user: Option<String>,
    /// The Airflow user a trusted submitter named in `on_behalf_of`.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// What the file asked for (`create`, `cancel`, ...); `None` in records older than that.
    #[serde(default)]
    pub action: Option<String>,
    /// A dry run: validated, nothing created.
    #[serde(default)]
    pub dry_run: bool,
    /// The logical dates a dry run would run.
    #[serde(default)]
    pub dates: Option<Vec<String>>,
    /// Dates of the range not run because the origin DAG already ran them (`reprocess`).
    #[serde(default)]
    pub skipped_dates: Option<Vec<String>>,
    /// Things the requester should know about an accepted request (e.g. sensors waiting on
    /// other DAGs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// A dry run's estimate of how long the backfill would take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::estimate::Estimate>,
}

#[derive(QueryableByName)]
struct RequestSql {
    #[diesel(sql_type = Text)]
    request_key: String,
    #[diesel(sql_type = Text)]
    file_name: String,
    #[diesel(sql_type = BigInt)]
    uid: i64,
    #[diesel(sql_type = Nullable<Text>)]
    username: Option<String>,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Text)]
    received_at: String,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<Text>)]
    backfill_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    reason_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    airflow_user: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    on_behalf_of: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    action: Option<String>,
    #[diesel(sql_type = BigInt)]
    dry_run: i64,
    #[diesel(sql_type = Nullable<Text>)]
    dates: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    skipped_dates: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    warnings: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    estimate: Option<String>,
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
            outcome: r.outcome,
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

const REQUEST_COLS: &str =
    "request_key, file_name, uid, username, host, received_at, outcome, backfill_id, reason_code, reason, \
     airflow_user, on_behalf_of, action, dry_run, dates, skipped_dates, warnings, estimate";

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

#[derive(QueryableByName)]
struct BackfillSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    state_reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    description: Option<String>,
    #[diesel(sql_type = Text)]
    start_date: String,
    #[diesel(sql_type = Text)]
    end_date: String,
    #[diesel(sql_type = Text)]
    logical_dates: String,
    #[diesel(sql_type = Text)]
    params: String,
    #[diesel(sql_type = BigInt)]
    max_active_runs: i64,
    #[diesel(sql_type = BigInt)]
    ignore_overlap: i64,
    #[diesel(sql_type = Text)]
    origin_fileloc: String,
    #[diesel(sql_type = Text)]
    origin_code: String,
    #[diesel(sql_type = Nullable<Text>)]
    copy_path: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    copy_written_at: Option<String>,
    #[diesel(sql_type = Text)]
    submitted_by: String,
    #[diesel(sql_type = BigInt)]
    submitted_uid: i64,
    #[diesel(sql_type = Text)]
    submitted_at: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    run_end: Option<String>,
    #[diesel(sql_type = BigInt)]
    dates_total: i64,
    #[diesel(sql_type = BigInt)]
    dates_succeeded: i64,
    #[diesel(sql_type = BigInt)]
    dates_failed: i64,
    #[diesel(sql_type = BigInt)]
    dates_running: i64,
    #[diesel(sql_type = BigInt)]
    dates_queued: i64,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Nullable<Text>)]
    requester: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    on_behalf_of: Option<String>,
    #[diesel(sql_type = BigInt)]
    deleted: i64,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_at: Option<String>,
    #[diesel(sql_type = BigInt)]
    user_paused: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pending_op: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    retry_of: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    scheduled_at: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    delete_after_days: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    reprocess: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    skipped_dates: Option<String>,
    #[diesel(sql_type = BigInt)]
    copy_paused: i64,
    #[diesel(sql_type = Nullable<Text>)]
    options: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    seed_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    import_note: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    approved_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    approved_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    rejected_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    rejected_at: Option<String>,
}

#[derive(QueryableByName)]
struct LiveCopySql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    copy_written_at: String,
}

#[derive(QueryableByName)]
struct RetentionSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    run_end: Option<String>,
    #[diesel(sql_type = BigInt)]
    delete_after_days: i64,
}

const BACKFILL_COLS: &str = "id, dag_id, state, state_reason, description, start_date, end_date, \
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
    fn conditions(&self) -> (Vec<String>, Vec<Arg>) {
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

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

#[derive(QueryableByName)]
struct DagCountSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A stored JSON list of timestamps (NULL: none).
fn dates_of(id: &str, json: Option<&str>) -> Result<Vec<DateTime<Utc>>, DbError> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let texts: Vec<String> = serde_json::from_str(json)
        .map_err(|e| DbError::Data(format!("backfill {id}: skipped_dates: {e}")))?;
    texts.iter().map(|d| parse_ts(d)).collect()
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl TryFrom<BackfillSql> for BackfillRow {
    type Error = DbError;

    fn try_from(r: BackfillSql) -> Result<Self, DbError> {
        let opt = |s: Option<String>| s.as_deref().map(parse_ts).transpose();
        let dates: Vec<String> = serde_json::from_str(&r.logical_dates)
            .map_err(|e| DbError::Data(format!("backfill {}: logical_dates: {e}", r.id)))?;
        let logical_dates = dates
            .iter()
            .map(|d| parse_ts(d))
            .collect::<Result<Vec<_>, _>>()?;
        let params = match serde_json::from_str(&r.params) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(DbError::Data(format!(
                    "backfill {}: params is not a JSON object",
                    r.id
                )))
            }
        };
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
        Ok(BackfillRow {
            state,
            state_reason: r.state_reason,
            description: r.description,
            start: parse_ts(&r.start_date)?,
            end: parse_ts(&r.end_date)?,
            logical_dates,
            params,
            max_active_runs: count(r.max_active_runs),
            ignore_overlap: r.ignore_overlap != 0,
            origin_fileloc: r.origin_fileloc,
            origin_code: r.origin_code,
            copy_path: r.copy_path,
            copy_written_at: opt(r.copy_written_at)?,
            submitted_by: r.submitted_by,
            submitted_uid: count(r.submitted_uid),
            requester: r.requester,
            on_behalf_of: r.on_behalf_of,
            submitted_at: parse_ts(&r.submitted_at)?,
            updated_at: parse_ts(&r.updated_at)?,
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
            host: r.host,
            deleted: r.deleted != 0,
            deleted_at: opt(r.deleted_at)?,
            user_paused: r.user_paused != 0,
            pending_op: r.pending_op.as_deref().and_then(PendingOp::parse),
            retry_of: r.retry_of,
            scheduled_at: opt(r.scheduled_at)?,
            delete_after_days: r.delete_after_days.map(count),
            reprocess: r.reprocess,
            skipped_dates: dates_of(&r.id, r.skipped_dates.as_deref())?,
            copy_paused: r.copy_paused != 0,
            options: match r.options.as_deref() {
                None => BackfillOptions::default(),
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| DbError::Data(format!("backfill {}: options: {e}", r.id)))?,
            },
            seed_id: r.seed_id,
            import_note: r.import_note,
            approved_by: r.approved_by,
            approved_at: opt(r.approved_at)?,
            rejected_by: r.rejected_by,
            rejected_at: opt(r.rejected_at)?,
            dag_id: r.dag_id,
            id: r.id,
        })
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
                Arg::Text(r.outcome.clone()),
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
    /// (`notification::Event::of`) and have no sent mark for that state: their ids.
    pub fn unnotified(&mut self, since: DateTime<Utc>) -> Result<Vec<String>, DbError> {
        let rows: Vec<TextRow> = self.db.load(
            "SELECT b.id AS value FROM backfilld_backfill b \
             WHERE b.updated_at >= ? \
             AND b.state IN ('success', 'failed', 'cancelled', 'awaiting_approval') \
             AND NOT EXISTS (SELECT 1 FROM backfilld_notification n \
                             WHERE n.backfill_id = b.id AND n.state = b.state)",
            &[Arg::Text(stored_ts(since))],
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

    /// Ids of finished, undeleted backfills whose `delete_after_days` elapsed by `now`. Reads
    /// only the columns that decide it (this runs every pass; history only grows).
    pub fn due_for_deletion(&mut self, now: DateTime<Utc>) -> Result<Vec<String>, DbError> {
        let rows: Vec<RetentionSql> = self.db.load(
            "SELECT id, updated_at, run_end, delete_after_days FROM backfilld_backfill \
             WHERE deleted = 0 AND state IN ('success', 'failed', 'cancelled') \
             AND delete_after_days IS NOT NULL ORDER BY id",
            &[],
        )?;
        let mut due = Vec::new();
        for r in rows {
            let finished = match r.run_end.as_deref() {
                Some(t) => parse_ts(t)?,
                None => parse_ts(&r.updated_at)?,
            };
            if finished + chrono::Duration::days(r.delete_after_days) <= now {
                due.push(r.id);
            }
        }
        Ok(due)
    }

    /// Every backfill with Airflow-side work of a life-cycle action outstanding.
    pub fn pending_ops(&mut self) -> Result<Vec<BackfillRow>, DbError> {
        let rows: Vec<BackfillSql> = self.db.load(
            &format!("SELECT {BACKFILL_COLS} FROM backfilld_backfill WHERE pending_op IS NOT NULL ORDER BY id"),
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
    /// purpose): its id and when its copy was first written. Copies taken over from the seed
    /// plugin are its files, not renderings of backfilld's overlay: they are left as they are.
    pub fn live_copies(&mut self) -> Result<Vec<(String, DateTime<Utc>)>, DbError> {
        let rows: Vec<LiveCopySql> = self.db.load(
            "SELECT id, copy_written_at FROM backfilld_backfill WHERE deleted = 0 AND copy_written_at IS NOT NULL AND seed_id IS NULL ORDER BY id",
            &[],
        )?;
        rows.into_iter()
            .map(|r| Ok((r.id, parse_ts(&r.copy_written_at)?)))
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

    /// Verify the audit log's hash chain; the report names the first broken link.
    pub fn verify_audit(&mut self) -> Result<crate::audit::Report, DbError> {
        super::audit::verify(self.db)
    }
}
