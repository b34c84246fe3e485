//! Issue 11's guard rails through the real daemon against a real Airflow 2.11 metadata DB
//! (SQLite, DAGs parsed by `airflow dags reserialize`; no scheduler needed): request files
//! dropped into the spool (and `backfillctl submit`) are refused with a reason naming the
//! `[limits]` key (or Airflow's limit) and the value that broke it.

use std::time::Duration;

use chrono::{Days, NaiveDate};
use serde_json::Value;

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

/// `backfillctl ARGS` output as JSON, whatever its exit status (a refusal exits 1).
fn ctl_value(d: &Daemon, args: &[&str]) -> Value {
    let out = d.ctl(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn decide(d: &Daemon, name: &str, body: &str) -> Value {
    d.drop_request(name, body);
    wait_for("a decision", Duration::from_secs(60), || {
        let v = ctl_value(d, &["outcome", name, "--json"]);
        (v["outcome"] != "pending").then_some(v)
    })
}

fn assert_refused(v: &Value, code: &str, needles: &[&str]) {
    assert_eq!(v["outcome"], "rejected", "{v}");
    assert_eq!(v["reason_code"], code, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    for n in needles {
        assert!(reason.contains(n), "reason {reason:?} should contain {n:?}");
    }
}

fn request(dag: &str, start: &str, end: &str, extra: &str) -> String {
    format!("dag_id = \"{dag}\"\nstart = {start}\nend = {end}\n{extra}")
}

#[test]
fn guard_rails_refuse_naming_limit_and_value() {
    let af = Airflow::sqlite(AirflowMajor::V2, "guard_rails_af2");
    af.reserialize();
    // max_dates_per_request keeps its default (5000); the per-user limit is lowered.
    let d = Daemon::start_with(&af, &[], "\n[limits]\nmax_active_backfills_per_user = 2\n");

    // max_dates_per_request (default 5000): 5001 daily dates are refused, 5000 pass.
    let start = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    let last = |n: u64| {
        start
            .checked_add_days(Days::new(n - 1))
            .unwrap_or_default()
            .to_string()
    };
    let v = decide(
        &d,
        "too-many-dates.toml",
        &request("sales", &start.to_string(), &last(5001), ""),
    );
    assert_refused(
        &v,
        "too_many_dates",
        &["refused: 5001 dates exceed [limits] max_dates_per_request = 5000"],
    );
    let v = decide(
        &d,
        "just-enough.toml",
        &request("sales", &start.to_string(), &last(5000), "dry_run = true\n"),
    );
    assert_eq!(v["outcome"], "accepted", "{v}");
    assert_eq!(v["dates"].as_array().map(Vec::len), Some(5000), "dry run");

    // max_active_backfills_per_user = 2: two unfinished backfills, the third is refused (a
    // dry run too), until one of the two is cancelled.
    let first = decide(
        &d,
        "first.toml",
        &request("sales", "2024-03-01", "2024-03-02", ""),
    );
    assert_eq!(first["outcome"], "accepted", "{first}");
    let second = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        "sales",
        "--start",
        "2024-04-01",
        "--end",
        "2024-04-02",
    ]);
    assert_eq!(second["outcome"], "accepted", "{second}");
    let v = decide(
        &d,
        "third.toml",
        &request("sales", "2024-05-01", "2024-05-02", ""),
    );
    assert_refused(
        &v,
        "too_many_active_backfills",
        &[
            "refused: \"root\" has 2 unfinished backfills",
            "[limits] max_active_backfills_per_user = 2",
        ],
    );
    let v = ctl_value(
        &d,
        &[
            "submit",
            "--json",
            "--dag",
            "sales",
            "--start",
            "2024-05-01",
            "--end",
            "2024-05-02",
            "--dry-run",
        ],
    );
    assert_refused(&v, "too_many_active_backfills", &["= 2"]);
    let id = first["backfill_id"].as_str().unwrap_or_default();
    let cancelled = d.ctl_json(&["cancel", id, "--json"]);
    assert_eq!(cancelled["outcome"], "accepted", "{cancelled}");
    let v = decide(
        &d,
        "third-again.toml",
        &request("sales", "2024-05-01", "2024-05-02", ""),
    );
    assert_eq!(v["outcome"], "accepted", "{v}");

    // The copy's dag_id (<dag_id>_backfill_YYYYmmdd_HHMMSS_NN) must fit Airflow's 250.
    let v = decide(
        &d,
        "long-id.toml",
        &request(&"a".repeat(223), "2024-01-01", "2024-01-02", ""),
    );
    assert_refused(
        &v,
        "copy_id_too_long",
        &[
            "would be up to 251 characters",
            "Airflow's dag_id limit of 250",
        ],
    );
    let v = decide(
        &d,
        "longest-id.toml",
        &request(&"a".repeat(222), "2024-01-01", "2024-01-02", ""),
    );
    assert_refused(&v, "unknown_dag", &[]);

    // Every refused file is kept in rejected/ with its receipt.
    let rejected: Vec<String> = std::fs::read_dir(d.spool.join("rejected"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    for name in ["too-many-dates.toml", "third.toml", "long-id.toml"] {
        assert!(
            rejected
                .iter()
                .any(|n| n.ends_with(&format!("{name}.receipt.json"))),
            "{name}: {rejected:?}"
        );
    }
}
