//! Issue 16, part 3, on real Airflow: timetables backfilld does not compute natively come from
//! Airflow's own Python.
//!
//! End to end (2.11 and the newest 3.x, SQLite, real scheduler): a DAG scheduled by a timetable
//! class that an Airflow plugin in the test's plugins folder registers is refused with a reason
//! naming `[airflow] python` while no Airflow Python can be found, then, with the venv's
//! `airflow` on backfilld's `PATH`, dry-run and backfilled with exactly the dates Airflow's
//! `iter_dagrun_infos_between` gives (the dag_run rows of the copy).
//!
//! Corpus (2.11 and the newest 3.x, `[core] default_timezone` UTC and Europe/Amsterdam): every
//! example DAG Airflow ships (`load_examples`, reserialized) is asked as a one-month dry run;
//! every DAG Airflow's backfill would run is accepted with exactly Airflow's dates, and the
//! only refusals are DAGs Airflow cannot backfill either or `[limits]` guard rails.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{repo_dir, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(600);
const DAG: &str = "workday_mornings";

/// `[limits] max_dates_per_request` (its default, which the tests keep).
const MAX_DATES: usize = 5000;

fn fixture(name: &str) -> std::path::PathBuf {
    repo_dir().join("tests/it/plugin_timetables").join(name)
}

/// `start..=end` (RFC 3339) → Airflow's answer for every serialized DAG (see
/// `plugin_timetables/airflow_backfill_dates.py`), one Python process.
fn airflow_answer(af: &Airflow, start: &str, end: &str) -> BTreeMap<String, Value> {
    let mut cmd = af.command("python");
    cmd.arg(fixture("airflow_backfill_dates.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("python: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(
                json!({"start": start, "end": end, "max_runs": MAX_DATES})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    assert!(
        out.status.success(),
        "oracle failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// An RFC 3339 date in backfilld's form (`2024-03-01T06:00:00Z`).
fn normalized(date: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(date)
        .unwrap_or_else(|e| panic!("{date}: {e}"))
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn runs_of(entry: &Value) -> Vec<String> {
    entry["runs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(normalized).collect())
        .unwrap_or_default()
}

fn path_with(af: &Airflow) -> String {
    format!(
        "{}:{}",
        af.venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `backfillctl submit --dry-run --json` over `start..=end`, whatever the outcome.
fn dry_run(d: &Daemon, dag: &str, start: &str, end: &str) -> Value {
    let out = d.ctl(&[
        "submit",
        "--json",
        "--dag",
        dag,
        "--start",
        start,
        "--end",
        end,
        "--dry-run",
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn dates_of(v: &Value) -> Vec<String> {
    v["dates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn plugin_timetable_end_to_end(major: AirflowMajor, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    let plugins = af.home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        fixture("backfilld_workday_mornings.py"),
        plugins.join("backfilld_workday_mornings.py"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        fixture("workday_mornings.py"),
        af.dags_folder().join("workday_mornings.py"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    af.start_scheduler();
    af.wait_parsed(DAG, BIG);
    let (start, end) = ("2024-03-01T00:00:00+00:00", "2024-03-12T00:00:00+00:00");
    let expected = runs_of(&airflow_answer(&af, start, end)[DAG]);
    assert_eq!(
        expected.first().map(String::as_str),
        Some("2024-03-01T06:00:00Z")
    );
    assert_eq!(expected.len(), 7, "{expected:?}");

    // No Airflow Python to be found: refused, saying how to enable it.
    let mut d = Daemon::start(&af, &[]);
    let refused = dry_run(&d, DAG, start, end);
    assert_eq!(refused["outcome"], "rejected", "{refused}");
    assert_eq!(refused["reason_code"], "unsupported_schedule", "{refused}");
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("backfilld_workday_mornings.WorkdayMorningTimetable")
            && reason.contains("[airflow] python = "),
        "{reason}"
    );

    // With Airflow's `airflow` on PATH its Python computes the dates: exactly Airflow's.
    d.restart(&[("PATH", &path_with(&af))]);
    let dry = dry_run(&d, DAG, start, end);
    assert_eq!(dry["outcome"], "accepted", "{dry}");
    assert_eq!(dates_of(&dry), expected, "{dry}");
    let submitted = d.ctl_json(&[
        "submit", "--json", "--dag", DAG, "--start", start, "--end", end,
    ]);
    assert_eq!(submitted["outcome"], "accepted", "{submitted}");
    let id = submitted["backfill_id"].as_str().unwrap_or_default();
    let done = d.wait_finished(id, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", d.log_text());
    let col = af.date_column();
    let ran: Vec<String> = af
        .query(&format!(
            "SELECT {col} FROM dag_run WHERE dag_id = '{id}' ORDER BY {col}"
        ))
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_str))
        .map(|s| {
            format!(
                "{}Z",
                s.chars().take(19).collect::<String>().replace(' ', "T")
            )
        })
        .collect();
    assert_eq!(ran, expected, "the copy's runs are Airflow's dates");
}

#[test]
fn plugin_timetable_runs_airflows_dates_on_airflow2() {
    plugin_timetable_end_to_end(AirflowMajor::V2, "plugin_timetable_af2");
}

#[test]
fn plugin_timetable_runs_airflows_dates_on_newest_airflow3() {
    plugin_timetable_end_to_end(AirflowMajor::V3Newest, "plugin_timetable_af33");
}

/// Whether Airflow's own backfill runs the DAG of this oracle entry: it must give runs, and
/// Airflow 3's backfill also refuses non-periodic timetables (`DagNonPeriodicScheduleException`
/// in 3.3: none, `@once`, `@continuous`, asset-triggered).
fn airflow_backfills(major: AirflowMajor, entry: &Value) -> bool {
    let periodic_ok = !major.is_v3() || entry["periodic"] == true;
    entry["error"].is_null() && periodic_ok && !runs_of(entry).is_empty()
}

/// The example-DAG corpus of one release in one `[core] default_timezone`.
fn example_corpus(major: AirflowMajor, timezone: &str, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    af.extra_env
        .push(("AIRFLOW__CORE__LOAD_EXAMPLES".into(), "True".into()));
    af.extra_env
        .push(("AIRFLOW__CORE__DEFAULT_TIMEZONE".into(), timezone.into()));
    af.reserialize();
    let (start, end) = ("2024-03-01T00:00:00+00:00", "2024-04-01T00:00:00+00:00");
    let answer = airflow_answer(&af, start, end);
    assert!(
        answer.len() > 30,
        "too few example DAGs: {:?}",
        answer.keys()
    );
    let path = path_with(&af);
    let d = Daemon::start_with(
        &af,
        &[
            ("PATH", &path),
            ("AIRFLOW__CORE__LOAD_EXAMPLES", "True"),
            ("AIRFLOW__CORE__DEFAULT_TIMEZONE", timezone),
        ],
        "",
    );
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (dag_id, entry) in &answer {
        let expected = runs_of(entry);
        let airflow_runs_it = airflow_backfills(major, entry);
        let v = dry_run(&d, dag_id, start, end);
        let class = entry["class"].as_str().unwrap_or_default();
        let short = class.rsplit('.').next().unwrap_or(class);
        let verdict = match (v["outcome"].as_str(), airflow_runs_it) {
            (Some("accepted"), true) if dates_of(&v) == expected => "same dates".to_owned(),
            (Some("accepted"), true) => {
                failures.push(format!(
                    "{dag_id} ({class}): backfilld {:?} != Airflow {expected:?}",
                    dates_of(&v)
                ));
                "DIFFERENT DATES".to_owned()
            }
            (Some("accepted"), false) => format!(
                "accepted, Airflow's backfill would not ({} runs, periodic {}, error {})",
                expected.len(),
                entry["periodic"],
                entry["error"]
            ),
            (Some("rejected"), _) if entry["partitioned"] == true => {
                let reason = v["reason"].as_str().unwrap_or_default();
                if reason.contains("partition") {
                    format!("partitioned, refused saying so: {reason}")
                } else {
                    failures.push(format!(
                        "{dag_id} ({class}): partitioned, refused without saying so: {reason}"
                    ));
                    "REFUSED".to_owned()
                }
            }
            (Some("rejected"), false) => format!("refused as Airflow: {}", v["reason_code"]),
            (Some("rejected"), true) => {
                let reason = v["reason"].as_str().unwrap_or_default();
                let over_limit = expected.len() > MAX_DATES && v["reason_code"] == "too_many_dates";
                if (over_limit && reason.contains("[limits] max_dates_per_request"))
                    || v["reason_code"] == "copy_id_too_long"
                {
                    format!("guard rail ({} dates): {reason}", expected.len())
                } else {
                    failures.push(format!(
                        "{dag_id} ({class}): refused ({reason}) but Airflow backfills {} dates",
                        expected.len()
                    ));
                    "REFUSED".to_owned()
                }
            }
            _ => {
                failures.push(format!("{dag_id}: unexpected answer {v}"));
                "UNEXPECTED".to_owned()
            }
        };
        report.push(format!("{dag_id:<60} {short:<32} {verdict}"));
    }
    eprintln!(
        "corpus {name} ({} DAGs, default_timezone {timezone}):\n{}",
        answer.len(),
        report.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} example DAGs differ from Airflow:\n{}",
        failures.len(),
        answer.len(),
        failures.join("\n")
    );
}

#[test]
fn example_corpus_airflow2_utc() {
    example_corpus(AirflowMajor::V2, "UTC", "corpus_af2_utc");
}

#[test]
fn example_corpus_airflow2_amsterdam() {
    example_corpus(AirflowMajor::V2, "Europe/Amsterdam", "corpus_af2_ams");
}

#[test]
fn example_corpus_newest_airflow3_utc() {
    example_corpus(AirflowMajor::V3Newest, "UTC", "corpus_af33_utc");
}

#[test]
fn example_corpus_newest_airflow3_amsterdam() {
    example_corpus(
        AirflowMajor::V3Newest,
        "Europe/Amsterdam",
        "corpus_af33_ams",
    );
}
