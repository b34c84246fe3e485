//! Guard rails on a create request (`[limits]` and Airflow's own limits): each refusal names
//! the limit and the value that broke it. Pure: the engine supplies the counts.

use chrono::{DateTime, Utc};

use crate::request::{ReasonCode, Rejection, AIRFLOW_ID_MAX, BACKFILL_ID_EXTRA};
use crate::schedule::Timetable;

/// How far past `[limits] max_dates_per_request` the dates of a refused range are counted, as
/// a multiple of the limit (a refusal says "more than N" beyond that, so a huge range costs a
/// bounded amount of work).
pub const DATE_COUNT_FACTOR: usize = 10;

/// The refusal of a range with more logical dates than `[limits] max_dates_per_request`.
/// `count` is the number of dates, or `None` when there are more than `counted_up_to`.
pub fn too_many_dates(count: Option<usize>, counted_up_to: usize, limit: usize) -> Rejection {
    let value = match count {
        Some(n) => n.to_string(),
        None => format!("more than {counted_up_to}"),
    };
    Rejection::new(
        ReasonCode::TooManyDates,
        format!(
            "refused: {value} dates exceed [limits] max_dates_per_request = {limit}; split the range into several requests"
        ),
    )
}

/// Count the logical dates of `start..=end` of a serialized DAG past `limit`, up to
/// [`DATE_COUNT_FACTOR`] times it, for [`too_many_dates`]; the refusal to give.
pub fn count_and_refuse(
    serialized: &serde_json::Value,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Rejection {
    let cap = limit.saturating_mul(DATE_COUNT_FACTOR).max(limit + 1);
    let count = Timetable::from_serialized_dag(serialized)
        .and_then(|t| t.logical_dates(start, end, cap))
        .ok()
        .map(|d| d.len());
    too_many_dates(count, cap, limit)
}

/// The refusal of a new backfill for an Airflow user who already has `active` unfinished
/// (submitted, queued, running or paused) backfills, at or over `[limits]
/// max_active_backfills_per_user`; `None` when there is room.
pub fn active_backfills(user: &str, active: usize, limit: usize) -> Option<Rejection> {
    (active >= limit).then(|| {
        Rejection::new(
            ReasonCode::TooManyActiveBackfills,
            format!(
                "refused: {user:?} has {active} unfinished backfills (submitted, queued, running or paused), \
                 [limits] max_active_backfills_per_user = {limit}; wait for one to finish or cancel one"
            ),
        )
    })
}

/// The longest id a backfill copy of `dag_id` can get: `<dag_id>_backfill_<YYYYmmdd_HHMMSS>`
/// plus a same-second suffix up to `_99` (see `engine::free_id`).
pub fn longest_copy_id(dag_id: &str) -> usize {
    dag_id.len() + BACKFILL_ID_EXTRA
}

/// The refusal of a DAG whose backfill copy's dag_id could exceed Airflow's limit
/// ([`AIRFLOW_ID_MAX`], Airflow's `ID_LEN`); `None` when it fits.
pub fn copy_id_length(dag_id: &str) -> Option<Rejection> {
    let longest = longest_copy_id(dag_id);
    (longest > AIRFLOW_ID_MAX).then(|| {
        Rejection::new(
            ReasonCode::CopyIdTooLong,
            format!(
                "refused: the backfill copy's dag_id (<dag_id>_backfill_YYYYmmdd_HHMMSS_NN) would be up to {longest} characters, \
                 over Airflow's dag_id limit of {AIRFLOW_ID_MAX}; the origin dag_id has {} characters, at most {} fit",
                dag_id.len(),
                AIRFLOW_ID_MAX - BACKFILL_ID_EXTRA
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::day;

    #[test]
    fn refusals_name_the_limit_and_the_value() {
        let r = too_many_dates(Some(5001), 50_000, 5000);
        assert_eq!(r.code, ReasonCode::TooManyDates);
        assert!(
            r.message
                .starts_with("refused: 5001 dates exceed [limits] max_dates_per_request = 5000"),
            "{}",
            r.message
        );
        let r = too_many_dates(None, 50_000, 5000);
        assert!(r.message.contains("more than 50000 dates"), "{}", r.message);

        assert_eq!(active_backfills("alice", 19, 20), None);
        let r = active_backfills("alice", 20, 20).unwrap_or_else(|| panic!("not refused"));
        assert_eq!(r.code, ReasonCode::TooManyActiveBackfills);
        assert!(r.message.contains("has 20 unfinished"), "{}", r.message);
        assert!(
            r.message
                .contains("[limits] max_active_backfills_per_user = 20"),
            "{}",
            r.message
        );
    }

    #[test]
    fn copy_id_fits_airflow() {
        let fits = "a".repeat(AIRFLOW_ID_MAX - BACKFILL_ID_EXTRA);
        assert_eq!(copy_id_length(&fits), None);
        // The longest id free_id can make really is that long.
        let id = format!("{fits}_backfill_20240101_000000_99");
        assert_eq!(id.len(), AIRFLOW_ID_MAX);
        let long = format!("{fits}a");
        let r = copy_id_length(&long).unwrap_or_else(|| panic!("not refused"));
        assert_eq!(r.code, ReasonCode::CopyIdTooLong);
        assert!(
            r.message.contains("up to 251 characters")
                && r.message.contains("Airflow's dag_id limit of 250"),
            "{}",
            r.message
        );
    }

    #[test]
    fn dates_are_counted_past_the_limit() {
        let dag = serde_json::json!({"schedule_interval": "@daily", "timezone": "UTC"});
        let r = count_and_refuse(&dag, day(1), day(31), 5);
        assert!(
            r.message.starts_with("refused: 31 dates exceed"),
            "{}",
            r.message
        );
        let r = count_and_refuse(&dag, day(1), day(31), 2);
        assert!(
            r.message.starts_with("refused: more than 20 dates exceed"),
            "{}",
            r.message
        );
    }
}
