//! The helper's answer (see `src/airflow_py/timetable_dates.py`), parsed and checked. Pure.
//!
//! The answer comes from another program (Airflow and a plugin's code), so it is validated
//! before backfilld relies on it: every run is inside the asked range, runs are strictly
//! ascending, each logical date is its data interval's start, and intervals do not run backwards.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::schedule::RunInfo;

/// What the helper's answer says about the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Every run of the range, ascending.
    Runs(Vec<RunInfo>),
    /// The range holds more than the asked limit of runs.
    TooMany,
    /// Airflow could not compute the runs (e.g. the timetable class is not registered); why.
    Refused(String),
}

/// The answer is not what the helper writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed answer from Airflow's Python: {0}")]
pub struct MalformedAnswer(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    logical_date: String,
    interval_start: String,
    interval_end: String,
    run_after: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    runs: Option<Vec<RawRun>>,
    more: Option<bool>,
    error: Option<String>,
}

/// Longest refusal text kept from the helper (a plugin's exception message can be anything).
const MAX_REASON_CHARS: usize = 500;

/// Parse the helper's standard output for the range `start..=end` asked with `limit`.
pub fn parse(
    stdout: &[u8],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Result<Answer, MalformedAnswer> {
    let raw: RawAnswer = serde_json::from_slice(stdout)
        .map_err(|e| MalformedAnswer(format!("not the expected JSON document: {e}")))?;
    if let Some(error) = raw.error {
        let reason: String = error.chars().take(MAX_REASON_CHARS).collect();
        return Ok(Answer::Refused(reason));
    }
    let runs = raw
        .runs
        .ok_or_else(|| MalformedAnswer("neither \"runs\" nor \"error\"".into()))?;
    if raw.more == Some(true) {
        return Ok(Answer::TooMany);
    }
    if runs.len() > limit {
        return Err(MalformedAnswer(format!(
            "{} runs, more than the {limit} asked for",
            runs.len()
        )));
    }
    let mut parsed: Vec<RunInfo> = Vec::with_capacity(runs.len());
    for run in &runs {
        let info = RunInfo {
            logical_date: date(&run.logical_date)?,
            interval_start: date(&run.interval_start)?,
            interval_end: date(&run.interval_end)?,
            run_after: date(&run.run_after)?,
        };
        check_run(&info, start, end)?;
        if let Some(previous) = parsed.last() {
            if previous.logical_date >= info.logical_date {
                return Err(MalformedAnswer(format!(
                    "runs are not strictly ascending: {} then {}",
                    previous.logical_date, info.logical_date
                )));
            }
        }
        parsed.push(info);
    }
    Ok(Answer::Runs(parsed))
}

fn check_run(
    run: &RunInfo,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), MalformedAnswer> {
    if run.logical_date < start || run.logical_date > end {
        return Err(MalformedAnswer(format!(
            "run {} is outside the range {start}..={end}",
            run.logical_date
        )));
    }
    if run.logical_date != run.interval_start {
        return Err(MalformedAnswer(format!(
            "run {} does not start its data interval ({})",
            run.logical_date, run.interval_start
        )));
    }
    if run.interval_end < run.interval_start {
        return Err(MalformedAnswer(format!(
            "run {} has a data interval ending before it starts ({})",
            run.logical_date, run.interval_end
        )));
    }
    Ok(())
}

fn date(text: &str) -> Result<DateTime<Utc>, MalformedAnswer> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| MalformedAnswer(format!("date {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::utc;

    /// `hour`:00 UTC on 2024-03-`d`.
    fn march(d: u32, hour: u32) -> DateTime<Utc> {
        utc(2024, 3, d, hour, 0)
    }

    fn run(d: u32) -> String {
        format!(
            r#"{{"logical_date": "2024-03-{d:02}T00:00:00+00:00", "interval_start": "2024-03-{d:02}T00:00:00+00:00", "interval_end": "2024-03-{:02}T00:00:00+00:00", "run_after": "2024-03-{:02}T01:00:00+01:00"}}"#,
            d + 1,
            d + 1
        )
    }

    fn answer(runs: &[u32], more: bool) -> Vec<u8> {
        let runs: Vec<String> = runs.iter().map(|d| run(*d)).collect();
        format!(r#"{{"runs": [{}], "more": {more}}}"#, runs.join(", ")).into_bytes()
    }

    #[test]
    fn runs_parse_in_utc() {
        let got = parse(&answer(&[1, 4], false), march(1, 0), march(10, 0), 10);
        let Ok(Answer::Runs(runs)) = got else {
            panic!("{got:?}");
        };
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].logical_date, march(4, 0));
        assert_eq!(runs[1].interval_end, march(5, 0));
        assert_eq!(runs[1].run_after, march(5, 0), "+01:00 is converted to UTC");
    }

    #[test]
    fn more_and_error_answers() {
        assert_eq!(
            parse(&answer(&[1], true), march(1, 0), march(10, 0), 1),
            Ok(Answer::TooMany)
        );
        let long = "x".repeat(2000);
        let got = parse(
            format!(r#"{{"error": "{long}"}}"#).as_bytes(),
            march(1, 0),
            march(10, 0),
            5,
        );
        let Ok(Answer::Refused(reason)) = got else {
            panic!("{got:?}");
        };
        assert_eq!(reason.len(), MAX_REASON_CHARS);
    }

    #[test]
    fn rejects_malformed_answers() {
        let cases: Vec<(Vec<u8>, usize)> = vec![
            (b"Traceback (most recent call last)".to_vec(), 5),
            (br#"{"runs": [], "extra": 1}"#.to_vec(), 5),
            (br#"{}"#.to_vec(), 5),
            (answer(&[4, 1], false), 5),
            (answer(&[4, 4], false), 5),
            (answer(&[1, 2, 3], false), 2),
            (answer(&[12], false), 5),
            (
                br#"{"runs": [{"logical_date": "2024-03-02T00:00:00+00:00", "interval_start": "2024-03-01T00:00:00+00:00", "interval_end": "2024-03-03T00:00:00+00:00", "run_after": "2024-03-03T00:00:00+00:00"}]}"#.to_vec(),
                5,
            ),
            (
                br#"{"runs": [{"logical_date": "2024-03-02T00:00:00+00:00", "interval_start": "2024-03-02T00:00:00+00:00", "interval_end": "2024-03-01T00:00:00+00:00", "run_after": "2024-03-03T00:00:00+00:00"}]}"#.to_vec(),
                5,
            ),
            (
                br#"{"runs": [{"logical_date": "2024-03-02 00:00", "interval_start": "2024-03-02T00:00:00+00:00", "interval_end": "2024-03-03T00:00:00+00:00", "run_after": "2024-03-03T00:00:00+00:00"}]}"#.to_vec(),
                5,
            ),
        ];
        for (text, limit) in cases {
            let got = parse(&text, march(1, 0), march(10, 0), limit);
            assert!(got.is_err(), "{}: {got:?}", String::from_utf8_lossy(&text));
        }
    }
}
