//! Keyset paging of backfill lists (control socket, HTTP APIs, web UI): the order (newest
//! first: `submitted_at` descending, then `id` descending), the opaque cursor that names the
//! last row of a page, the page size a caller may ask for, and when a page is full.
//!
//! A page never holds more than its `limit` backfills nor (past its first backfill) more than
//! [`MAX_PAGE_DATES`] logical dates, so one page of very long backfills stays small too.

use base64::Engine as _;
use chrono::{DateTime, Utc};

/// Backfills in a page when the caller names no size.
pub const DEFAULT_LIMIT: usize = 500;
/// Most backfills in one page, whatever the caller asks.
pub const MAX_LIMIT: usize = 1000;
/// Most logical dates in one page (a page holds at least one backfill, however long).
pub const MAX_PAGE_DATES: usize = 100_000;
/// Rows read from the DB per statement while a page is filled.
pub const BATCH_ROWS: usize = 200;

/// Version tag at the start of every cursor, so a future order can refuse old cursors.
const CURSOR_TAG: &str = "b1";

/// Where a page ends: the last backfill it showed. The next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    /// When the backfill was accepted.
    pub submitted_at: DateTime<Utc>,
    /// Its id (breaks ties of one instant).
    pub id: String,
}

/// Why a cursor or a page size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// The cursor is not one backfilld handed out.
    #[error("invalid cursor {0:?}: pass the `next` value of the previous page unchanged")]
    Cursor(String),
    /// A page size of zero.
    #[error("limit must be at least 1 (at most {MAX_LIMIT})")]
    Limit,
}

impl PageKey {
    /// The opaque cursor text (URL-safe base64, no padding).
    pub fn encode(&self) -> String {
        let micros = self.submitted_at.timestamp_micros();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{CURSOR_TAG}:{micros}:{}", self.id))
    }

    /// Read a cursor made by [`PageKey::encode`].
    pub fn decode(cursor: &str) -> Result<PageKey, PagingError> {
        let bad = || PagingError::Cursor(cursor.chars().take(80).collect());
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, ':');
        let (Some(CURSOR_TAG), Some(micros), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let submitted_at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or_else(bad)?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(PageKey {
            submitted_at,
            id: id.to_owned(),
        })
    }
}

/// The page size for a caller's `limit`: the default when none, at most `max`; zero is
/// refused.
pub fn page_size(
    requested: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, PagingError> {
    match requested {
        None => Ok(default.clamp(1, max.max(1))),
        Some(0) => Err(PagingError::Limit),
        Some(n) => Ok(n.min(max.max(1))),
    }
}

/// What to do with the next backfill that passed the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Skip it (it is before the `offset`).
    Skip,
    /// Put it in the page.
    Take,
    /// The page is full; this backfill proves there is a next page.
    Full,
}

/// Fills one page: counts what it took against the limit and the date budget.
#[derive(Debug, Clone)]
pub struct Pager {
    limit: usize,
    max_dates: usize,
    skip: usize,
    taken: usize,
    dates: usize,
}

impl Pager {
    /// A page of at most `limit` backfills and [`MAX_PAGE_DATES`] dates, after skipping
    /// `skip` matching ones (offset paging of the seed's API).
    pub fn new(limit: usize, skip: usize) -> Pager {
        Pager::with_date_budget(limit, skip, MAX_PAGE_DATES)
    }

    /// As [`Pager::new`] with another date budget.
    pub fn with_date_budget(limit: usize, skip: usize, max_dates: usize) -> Pager {
        Pager {
            limit: limit.max(1),
            max_dates,
            skip,
            taken: 0,
            dates: 0,
        }
    }

    /// Decide for the next matching backfill, which has `dates` logical dates.
    pub fn offer(&mut self, dates: usize) -> Step {
        if self.skip > 0 {
            self.skip -= 1;
            return Step::Skip;
        }
        let over_budget = self.taken > 0 && self.dates.saturating_add(dates) > self.max_dates;
        if self.taken >= self.limit || over_budget {
            return Step::Full;
        }
        self.taken += 1;
        self.dates = self.dates.saturating_add(dates);
        Step::Take
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cursors_round_trip() {
        let at = Utc
            .with_ymd_and_hms(2024, 5, 6, 7, 8, 9)
            .single()
            .unwrap_or_default()
            + chrono::Duration::microseconds(123_456);
        for id in ["sales_backfill_20240506070809", "a:b:c", "ünïcode_2", "x"] {
            let key = PageKey {
                submitted_at: at,
                id: id.into(),
            };
            let text = key.encode();
            assert!(
                text.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{text} must be URL-safe"
            );
            assert_eq!(PageKey::decode(&text), Ok(key), "{id}");
        }
    }

    #[test]
    fn bad_cursors_are_refused() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "not base64!".into(),
            b64("b1:123"),
            b64("b1:123:"),
            b64("b2:123:id"),
            b64("b1:soon:id"),
            b64("b1:99999999999999999999:id"),
        ] {
            assert!(
                matches!(PageKey::decode(&bad), Err(PagingError::Cursor(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn page_sizes() {
        let cases: [(Option<usize>, Result<usize, PagingError>); 5] = [
            (None, Ok(500)),
            (Some(1), Ok(1)),
            (Some(1000), Ok(1000)),
            (Some(5000), Ok(1000)),
            (Some(0), Err(PagingError::Limit)),
        ];
        for (asked, want) in cases {
            assert_eq!(
                page_size(asked, DEFAULT_LIMIT, MAX_LIMIT),
                want,
                "{asked:?}"
            );
        }
        assert_eq!(page_size(None, 0, 0), Ok(1));
    }

    #[test]
    fn pager_decisions() {
        use Step::*;
        // (limit, skip, date budget, dates of each matching backfill, expected steps)
        type Case = (usize, usize, usize, &'static [usize], &'static [Step]);
        let cases: [Case; 6] = [
            (2, 0, 100, &[1, 1, 1], &[Take, Take, Full]),
            (3, 0, 100, &[1, 1], &[Take, Take]),
            (2, 2, 100, &[1, 1, 1, 1, 1], &[Skip, Skip, Take, Take, Full]),
            // the date budget ends a page early, but never before its first backfill
            (10, 0, 5, &[3, 2, 1], &[Take, Take, Full]),
            (10, 0, 5, &[9, 1], &[Take, Full]),
            (0, 0, 100, &[1, 1], &[Take, Full]),
        ];
        for (limit, skip, budget, dates, want) in cases {
            let mut p = Pager::with_date_budget(limit, skip, budget);
            let got: Vec<Step> = dates.iter().map(|d| p.offer(*d)).collect();
            assert_eq!(
                got, want,
                "limit {limit} skip {skip} budget {budget} {dates:?}"
            );
        }
    }
}
