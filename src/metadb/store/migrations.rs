//! The versioned migrations of backfilld's tables and running them (safe when several agents
//! start at once).

use super::*;
use crate::dburl::Backend;

pub(super) fn migrations(d: Dialect) -> Vec<(i64, Vec<String>)> {
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
        (
            // The leader's pass cache kept in the DB (`metadb::pass::kept`), so a freshly
            // started leader's first pass reads only what changed; and the version stamps of
            // an incremental pass read from an index alone.
            19,
            vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS backfilld_pass_mark (
                id BIGINT NOT NULL PRIMARY KEY,
                run_floor BIGINT NOT NULL,
                run_seen BIGINT NOT NULL,
                known {long} NOT NULL,
                saved_at VARCHAR(40) NOT NULL)"
                ),
                "CREATE TABLE IF NOT EXISTS backfilld_pass_runs (
                backfill_id VARCHAR(250) NOT NULL PRIMARY KEY,
                queued BIGINT NOT NULL,
                running BIGINT NOT NULL,
                succeeded BIGINT NOT NULL,
                failed BIGINT NOT NULL,
                first_start VARCHAR(40),
                last_end VARCHAR(40))"
                    .to_owned(),
                "CREATE TABLE IF NOT EXISTS backfilld_pass_active (
                run_id BIGINT NOT NULL PRIMARY KEY,
                backfill_id VARCHAR(250) NOT NULL,
                running BIGINT NOT NULL)"
                    .to_owned(),
                // What each agent last verified of its copy files (`metadb::copycheck`).
                "CREATE TABLE IF NOT EXISTS backfilld_copy_check (
                host VARCHAR(255) NOT NULL,
                backfill_id VARCHAR(250) NOT NULL,
                size BIGINT NOT NULL,
                mtime_ns BIGINT NOT NULL,
                inode BIGINT NOT NULL,
                PRIMARY KEY (host, backfill_id))"
                    .to_owned(),
                // Every pass reads these without the wide rows: the version stamps and the
                // live copies from this index alone, the pending life-cycle actions and the
                // backfills due for automatic deletion by their own index.
                "CREATE INDEX backfilld_backfill_version ON backfilld_backfill \
                 (deleted, state, id, updated_at, pending_op, copy_written_at, seed_id)"
                    .to_owned(),
                "CREATE INDEX backfilld_backfill_pending ON backfilld_backfill (pending_op)"
                    .to_owned(),
                "CREATE INDEX backfilld_backfill_delete_after ON backfilld_backfill (delete_after_days)"
                    .to_owned(),
            ],
        ),
        (
            20,
            vec![
                // The notifications' read (`Store::unnotified`) from this index alone: the
                // backfills of a notified state changed within `max_age`, without walking
                // every recently updated row (running backfills are updated as they progress).
                "CREATE INDEX backfilld_backfill_notice ON backfilld_backfill \
                 (state, updated_at, run_end, id)"
                    .to_owned(),
            ],
        ),
        (
            // The change signal of `backfilld_backfill` (`metadb::change`): one row, bumped
            // by every transaction that writes the table, so a pass reads the version stamps
            // (and the live copies, the backfills due for deletion) only when it moved.
            21,
            vec![
                "CREATE TABLE IF NOT EXISTS backfilld_change (
                id BIGINT NOT NULL PRIMARY KEY,
                seq BIGINT NOT NULL)"
                    .to_owned(),
                match d.0 {
                    Backend::Sqlite => {
                        "INSERT OR IGNORE INTO backfilld_change (id, seq) VALUES (1, 0)"
                    }
                    Backend::Postgres => {
                        "INSERT INTO backfilld_change (id, seq) VALUES (1, 0) ON CONFLICT DO NOTHING"
                    }
                    Backend::Mysql => "INSERT IGNORE INTO backfilld_change (id, seq) VALUES (1, 0)",
                }
                .to_owned(),
            ],
        ),
    ]
}

/// The migration that starts the audit hash chain.
pub(super) const AUDIT_CHAIN_VERSION: i64 = 8;

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
            if let Err(e) = db.batch_plain(&sql) {
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
            let chained = crate::metadb::audit::chain_existing(db)?;
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

pub(super) fn current_version(db: &mut MetaDb) -> Result<i64, DbError> {
    let rows: Vec<IntRow> = db.load(
        "SELECT COALESCE(MAX(version), 0) AS value FROM backfilld_migration",
        &[],
    )?;
    Ok(rows.first().map(|r| r.value).unwrap_or(0))
}
