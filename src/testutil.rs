//! Helpers shared by the unit tests (compiled for `cargo test` only): the instants their
//! tables are written in, and a sample backfill row.

use chrono::{DateTime, TimeZone, Utc};

use crate::metadb::store::BackfillRow;
use crate::state::BackfillState;

/// `year-month-day hour:minute` UTC; panics on a date that does not exist.
pub(crate) fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .single()
        .unwrap_or_else(|| panic!("no such test date: {year}-{month}-{day} {hour}:{minute}"))
}

/// Midnight UTC of `year-month-day`.
pub(crate) fn date(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    utc(year, month, day, 0, 0)
}

/// Midnight UTC of 2024-01-`d`, the month most tables count days in.
pub(crate) fn day(d: u32) -> DateTime<Utc> {
    date(2024, 1, d)
}

/// A backfill of `dag_id` in `state` over `dates` (none: the one date 2024-01-01), submitted by
/// Airflow user `alice` (uid 1000) on host `h`, id `<dag_id>_backfill_1`; every option default.
pub(crate) fn backfill_row(
    dag_id: &str,
    state: BackfillState,
    dates: &[DateTime<Utc>],
) -> BackfillRow {
    let dates = if dates.is_empty() {
        vec![day(1)]
    } else {
        dates.to_vec()
    };
    let (start, end) = (dates[0], dates[dates.len() - 1]);
    BackfillRow {
        id: format!("{dag_id}_backfill_1"),
        dag_id: dag_id.into(),
        state,
        state_reason: None,
        description: None,
        start,
        end,
        logical_dates: dates,
        params: serde_json::Map::new(),
        max_active_runs: 1,
        ignore_overlap: false,
        origin_fileloc: "/dags/origin.py".into(),
        origin_code: String::new(),
        copy_path: None,
        copy_written_at: None,
        submitted_by: "alice".into(),
        submitted_uid: 1000,
        requester: None,
        on_behalf_of: None,
        submitted_at: start,
        updated_at: start,
        run_start: None,
        run_end: None,
        progress: Default::default(),
        host: "h".into(),
        deleted: false,
        deleted_at: None,
        user_paused: false,
        pending_op: None,
        retry_of: None,
        scheduled_at: None,
        delete_after_days: None,
        reprocess: None,
        skipped_dates: vec![],
        copy_paused: false,
        options: Default::default(),
        seed_id: None,
        import_note: None,
        approved_by: None,
        approved_at: None,
        rejected_by: None,
        rejected_at: None,
    }
}
