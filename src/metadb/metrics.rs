//! The metadata-DB figures of the Prometheus metrics (see `crate::metrics`): two aggregate
//! statements over backfilld's own tables, whatever their size.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::{DbError, MetaDb};
use crate::metrics::{BackfillGroup, DbFigures, RequestGroup};

#[derive(QueryableByName)]
struct BackfillSql {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    is_deleted: i64,
    #[diesel(sql_type = BigInt)]
    backfills: i64,
    #[diesel(sql_type = BigInt)]
    throttled: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    running: i64,
    #[diesel(sql_type = BigInt)]
    queued: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
}

#[derive(QueryableByName)]
struct RequestSql {
    #[diesel(sql_type = Text)]
    req_action: String,
    #[diesel(sql_type = Text)]
    req_outcome: String,
    #[diesel(sql_type = Text)]
    req_reason: String,
    #[diesel(sql_type = BigInt)]
    requests: i64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Backfills by state and deleted (with their date counts), and requests by action, outcome
/// (`accepted`, `rejected`, or `dry_run` for an accepted dry run) and reason code.
pub fn figures(db: &mut MetaDb) -> Result<DbFigures, DbError> {
    let d = db.dialect();
    let pending = "dates_total - dates_succeeded - dates_failed - dates_running - dates_queued";
    let sql = format!(
        "SELECT state, {deleted} AS is_deleted, {n} AS backfills, {throttled} AS throttled, \
         {succeeded} AS succeeded, {failed} AS failed, {running} AS running, {queued} AS queued, \
         {pending} AS pending FROM backfilld_backfill GROUP BY state, deleted",
        deleted = d.int("deleted"),
        n = d.int("COUNT(*)"),
        throttled = d.int(
            "SUM(CASE WHEN throttled = 1 AND state IN ('submitted', 'queued', 'running', 'paused') THEN 1 ELSE 0 END)"
        ),
        succeeded = d.int("SUM(dates_succeeded)"),
        failed = d.int("SUM(dates_failed)"),
        running = d.int("SUM(dates_running)"),
        queued = d.int("SUM(dates_queued)"),
        pending = d.int(&format!(
            "SUM(CASE WHEN {pending} > 0 THEN {pending} ELSE 0 END)"
        )),
    );
    let rows: Vec<BackfillSql> = db.load(&sql, &[])?;
    let backfills = rows
        .into_iter()
        .map(|r| BackfillGroup {
            state: r.state,
            deleted: r.is_deleted != 0,
            backfills: count(r.backfills),
            throttled: count(r.throttled),
            succeeded: count(r.succeeded),
            failed: count(r.failed),
            running: count(r.running),
            queued: count(r.queued),
            pending: count(r.pending),
        })
        .collect();
    let sql = format!(
        "SELECT COALESCE(action, 'create') AS req_action, \
         CASE WHEN dry_run = 1 THEN 'dry_run' ELSE outcome END AS req_outcome, \
         COALESCE(reason_code, '') AS req_reason, {n} AS requests FROM backfilld_request \
         GROUP BY action, outcome, dry_run, reason_code",
        n = d.int("COUNT(*)"),
    );
    let rows: Vec<RequestSql> = db.load(&sql, &[])?;
    let requests = rows
        .into_iter()
        .map(|r| RequestGroup {
            action: r.req_action,
            outcome: r.req_outcome,
            reason: r.req_reason,
            count: count(r.requests),
        })
        .collect();
    Ok(DbFigures {
        backfills,
        requests,
    })
}
