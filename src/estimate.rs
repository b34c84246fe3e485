//! How long a backfill will take: the estimate a dry run, `status`, the API and the UI show,
//! with the basis it was computed from. Pure: the caller gathers the figures.
//!
//! Once the backfill has finished [`MIN_FINISHED`] dates, its own pace decides (the time
//! since its first run started, over the dates finished): that pace already holds the
//! scheduler's latency between runs, the throttle's waits and the copy's concurrency. Before
//! that, the origin DAG's recent successful runs give a run's duration (their median), and
//! the dates left run in waves of the copy's concurrency (`max_active_runs`, capped by the
//! run budgets).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::request::fmt_ts;

/// Finished dates from which a backfill's own pace is trusted over its origin's durations.
pub const MIN_FINISHED: u32 = 2;

/// Recent successful runs of the origin DAG the estimate reads.
pub const ORIGIN_RUNS: usize = 20;

/// An estimate of the time left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Seconds left, when there is anything to estimate from.
    pub remaining_secs: Option<u64>,
    /// When it would finish (RFC 3339 UTC).
    pub finish_at: Option<String>,
    /// What it was computed from, for people ("median of the last 20 runs of sales: 4m10s;
    /// 3 at a time").
    pub basis: String,
}

/// What the backfill has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Dates finished (succeeded or failed).
    pub finished: u32,
    /// Dates not finished yet (running, queued or without a run).
    pub left: u32,
    /// When its first run started, once one has.
    pub first_start: Option<DateTime<Utc>>,
}

/// The estimate for a backfill of `origin`'s dates: `origin_durations` are the seconds of the
/// origin's recent successful runs (any order), `parallel` how many of its runs may run at
/// once. `None` when nothing is left.
pub fn estimate(
    origin: &str,
    origin_durations: &[f64],
    progress: Progress,
    parallel: u32,
    now: DateTime<Utc>,
) -> Option<Estimate> {
    if progress.left == 0 {
        return None;
    }
    let parallel = parallel.max(1);
    if let Some(since) = progress.first_start {
        let elapsed = (now - since).num_milliseconds() as f64 / 1000.0;
        if progress.finished >= MIN_FINISHED && elapsed > 0.0 {
            let per_date = elapsed / f64::from(progress.finished);
            let secs = per_date * f64::from(progress.left);
            return Some(done_in(
                secs,
                now,
                format!(
                    "this backfill's pace so far: {} dates in {}",
                    progress.finished,
                    human(elapsed)
                ),
            ));
        }
    }
    let Some(run) = median(origin_durations) else {
        return Some(Estimate {
            remaining_secs: None,
            finish_at: None,
            basis: format!(
                "no estimate yet: {origin} has no successful run to measure, and this backfill has finished fewer than {MIN_FINISHED} dates"
            ),
        });
    };
    let waves = progress.left.div_ceil(parallel);
    let n = origin_durations.iter().filter(|d| d.is_finite()).count();
    Some(done_in(
        run * f64::from(waves),
        now,
        format!(
            "median of the last {n} successful run{} of {origin}: {}; {parallel} at a time",
            if n == 1 { "" } else { "s" },
            human(run)
        ),
    ))
}

fn done_in(secs: f64, now: DateTime<Utc>, basis: String) -> Estimate {
    let secs = secs.clamp(0.0, 100.0 * 365.0 * 86_400.0).round() as u64;
    let finish = i64::try_from(secs)
        .ok()
        .and_then(|s| now.checked_add_signed(chrono::Duration::seconds(s)));
    Estimate {
        remaining_secs: Some(secs),
        finish_at: finish.map(fmt_ts),
        basis,
    }
}

/// The median of the finite, non-negative values; `None` without any.
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// A duration as people read it: `45s`, `4m10s`, `2h05m`, `3d04h`.
pub fn human(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn progress(finished: u32, left: u32, first_start: Option<i64>) -> Progress {
        Progress {
            finished,
            left,
            first_start: first_start.map(at),
        }
    }

    /// (case, origin durations, progress, parallel, now, seconds left, basis starts with)
    type Case<'a> = (&'a str, &'a [f64], Progress, u32, i64, Option<u64>, &'a str);

    #[test]
    fn estimates_by_case() {
        let origin = [250.0, 240.0, 260.0, 1000.0, 245.0];
        let cases: Vec<Case> = vec![
            (
                "nothing run yet: origin median, waves of 3",
                &origin,
                progress(0, 10, None),
                3,
                0,
                Some(4 * 250),
                "median of the last 5 successful runs of sales: 4m10s; 3 at a time",
            ),
            (
                "one finished date is not a pace yet",
                &origin,
                progress(1, 9, Some(-300)),
                3,
                0,
                Some(3 * 250),
                "median of the last 5",
            ),
            (
                "own pace once two dates finished",
                &origin,
                progress(2, 8, Some(-100)),
                3,
                0,
                Some(400),
                "this backfill's pace so far: 2 dates in 1m40s",
            ),
            (
                "even count median",
                &[10.0, 20.0],
                progress(0, 1, None),
                1,
                0,
                Some(15),
                "median of the last 2 successful runs",
            ),
            (
                "one run",
                &[30.0],
                progress(0, 4, None),
                0,
                0,
                Some(120),
                "median of the last 1 successful run of sales: 30s; 1 at a time",
            ),
            (
                "no history at all",
                &[],
                progress(0, 4, None),
                2,
                0,
                None,
                "no estimate yet: sales has no successful run",
            ),
            (
                "garbage durations ignored",
                &[f64::NAN, -5.0, f64::INFINITY],
                progress(1, 4, Some(-10)),
                2,
                0,
                None,
                "no estimate yet",
            ),
            (
                "a first start in the future is no pace",
                &origin,
                progress(5, 5, Some(100)),
                5,
                0,
                Some(250),
                "median",
            ),
        ];
        for (name, durations, p, parallel, now, remaining, basis) in cases {
            let e = estimate("sales", durations, p, parallel, at(now))
                .unwrap_or_else(|| panic!("{name}: none"));
            assert_eq!(e.remaining_secs, remaining, "{name}: {e:?}");
            assert!(e.basis.starts_with(basis), "{name}: {}", e.basis);
            assert_eq!(
                e.finish_at,
                remaining.map(|r| fmt_ts(at(now + r as i64))),
                "{name}"
            );
        }
    }

    #[test]
    fn nothing_left_has_no_estimate() {
        assert_eq!(
            estimate("sales", &[1.0], progress(3, 0, Some(-5)), 1, at(0)),
            None
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        for (secs, text) in [
            (0.0, "0s"),
            (44.6, "45s"),
            (250.0, "4m10s"),
            (3599.0, "59m59s"),
            (7500.0, "2h05m"),
            (273_600.0, "3d04h"),
            (-3.0, "0s"),
        ] {
            assert_eq!(human(secs), text);
        }
    }
}
