//! Issue 2's validation rules, each through the real daemon against a real Airflow 2.11
//! metadata DB (DAGs parsed by `airflow dags reserialize`; no scheduler needed): every
//! rejection carries its machine-readable code and a message naming the problem, and the
//! file is kept in `rejected/` with a receipt.

use serde_json::Value;

use crate::support::{stdout_json, Airflow, AirflowMajor, Daemon};

fn assert_rejected(v: &Value, code: &str, needle: &str) {
    assert_eq!(v["outcome"], "rejected", "{v}");
    assert_eq!(v["reason_code"], code, "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(needle),
        "reason {reason:?} should contain {needle:?}"
    );
}

/// Drop a file by hand and read its outcome with `backfillctl outcome`.
fn drop_and_decide(d: &Daemon, name: &str, body: &str) -> Value {
    d.drop_request(name, body);
    crate::support::wait_for("a decision", std::time::Duration::from_secs(30), || {
        let out = d.ctl(&["outcome", name, "--json"]);
        let v = stdout_json(&out);
        (v["outcome"] != "pending").then_some(v)
    })
}

#[test]
fn every_validation_rule_rejects_with_its_reason() {
    let af = Airflow::sqlite(AirflowMajor::V2, "rejections_af2");
    af.reserialize();
    let d = Daemon::start(&af, &[]);

    let v = d.submit("no_such_dag", "2024-01-01", "2024-01-02", &[]);
    assert_rejected(&v, "unknown_dag", "no DAG with id \"no_such_dag\"");

    let v = d.submit("sales", "2024-01-05", "2024-01-01", &[]);
    assert_rejected(&v, "start_after_end", "is after end");

    let v = d.submit(
        "sales",
        "2024-01-01",
        "2024-01-02",
        &["--max-active-runs", "11"],
    );
    assert_rejected(&v, "max_active_runs_out_of_bounds", "allowed 1..=10");

    let v = d.submit("manual_only", "2024-01-01", "2024-01-02", &[]);
    assert_eq!(v["reason_code"], "unsupported_schedule", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("manual_only"),
        "{v}"
    );

    // @weekly ticks on Sundays: Monday..Tuesday holds none.
    let v = d.submit("weekly_report", "2024-01-01", "2024-01-02", &[]);
    assert_rejected(
        &v,
        "no_logical_dates",
        "no logical date of DAG \"weekly_report\"",
    );

    let v = drop_and_decide(
        &d,
        "params.toml",
        "dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-02\nparams = 3\n",
    );
    assert_rejected(&v, "params_not_table", "params must be a table");

    let v = drop_and_decide(
        &d,
        "typo.toml",
        "dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-02\nmax_active_run = 2\n",
    );
    assert_rejected(&v, "unknown_key", "max_active_run");

    // Overlap: the first is accepted, an overlapping second is rejected naming the first,
    // and accepted with ignore_overlap.
    let first = d.submit("sales", "2024-02-01", "2024-02-10", &[]);
    assert_eq!(first["outcome"], "accepted", "{first}");
    let first_id = first["backfill_id"].as_str().unwrap_or_default().to_owned();
    let v = d.submit("sales", "2024-02-10", "2024-02-12", &[]);
    assert_rejected(&v, "overlap", &first_id);
    let v = d.submit("sales", "2024-02-10", "2024-02-12", &["--ignore-overlap"]);
    assert_eq!(v["outcome"], "accepted", "{v}");
    assert_ne!(
        v["backfill_id"], first["backfill_id"],
        "ids are unique within one second"
    );
    let v = d.submit("sales", "2024-02-11", "2024-02-12", &[]);
    assert_eq!(v["outcome"], "rejected", "{v}");

    // A DAG Airflow deactivated (its file disappeared) cannot be backfilled.
    af.sql()
        .execute(
            "UPDATE dag SET is_active = 0 WHERE dag_id = 'weekly_report'",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let v = d.submit("weekly_report", "2024-01-01", "2024-01-31", &[]);
    assert_rejected(&v, "dag_deleted", "no longer active");

    // Every rejected file is kept, with a receipt naming its reason.
    let rejected: Vec<String> = std::fs::read_dir(d.spool.join("rejected"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let receipts = rejected
        .iter()
        .filter(|n| n.ends_with(".receipt.json"))
        .count();
    let files = rejected.iter().filter(|n| n.ends_with(".toml")).count();
    assert_eq!(receipts, 10, "{rejected:?}");
    assert_eq!(files, 10, "{rejected:?}");
    let typo = rejected
        .iter()
        .find(|n| n.ends_with("typo.toml.receipt.json"))
        .unwrap_or_else(|| panic!("{rejected:?}"));
    let receipt: Value = serde_json::from_slice(
        &std::fs::read(d.spool.join("rejected").join(typo)).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receipt["reason_code"], "unknown_key");
}
