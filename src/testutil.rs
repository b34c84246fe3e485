//! Helpers shared by the unit tests (compiled for `cargo test` only): the instants their
//! tables are written in.

use chrono::{DateTime, TimeZone, Utc};

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
