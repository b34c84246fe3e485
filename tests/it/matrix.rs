//! Issue 4's support matrix: the core end-to-end scenario (request → DAG copy → runs by a real
//! scheduler → success, and a failing range → failed) on Airflow 2.11 and every 3.x minor (3.0,
//! 3.1, 3.2 and the newest, 3.3; FAB auth manager, with dag-processor and api-server), on SQLite,
//! and on PostgreSQL for 2.11, 3.1 and 3.3. Airflow 2.11 + SQLite is `core_loop`. Every case
//! runs the one [`core_scenario`]; cases that share a backend and major line run one after
//! another inside one test.

use std::time::{Duration, Instant};

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(420);

/// The scenario on one Airflow: two daily dates succeed with a param override, one 2023 date
/// fails, a copy Airflow cannot import fails with Airflow's message. Returns how long it took
/// once Airflow was up.
pub fn core_scenario(af: &mut Airflow) -> Duration {
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    let began = Instant::now();
    let daemon = Daemon::start(af, &[]);
    let fail = |what: &str, daemon: &Daemon, af: &Airflow| -> String {
        format!(
            "{what}\n--- daemon log ---\n{}\n{}",
            daemon.log_text(),
            af.logs_tail()
        )
    };

    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
        "--max-active-runs",
        "2",
        "--param",
        "region=eu",
        "--json",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let ok_id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    assert!(ok_id.starts_with("sales_backfill_"), "{ok_id}");
    daemon.drop_request(
        "sales-2023.toml",
        "dag_id = \"sales\"\nstart = 2023-06-01\nend = 2023-06-01\n",
    );
    let failing = wait_for(
        "the 2023 request to be accepted",
        Duration::from_secs(60),
        || {
            let list = daemon.ctl_json(&["list", "--json"]);
            list.as_array()?
                .iter()
                .find(|b| b["start"] == "2023-06-01T00:00:00Z")
                .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
        },
    );

    // A copy Airflow refuses to import (the param's schema rejects the override): found through
    // Airflow's import_error (bundle-relative file names on Airflow 3).
    af.wait_parsed("regional_report", BIG);
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "regional_report",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-01",
        "--param",
        "region=mars",
        "--json",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let broken = out["backfill_id"].as_str().unwrap_or_default().to_owned();

    let done = daemon.wait_finished(&ok_id, BIG);
    assert_eq!(
        done["state"],
        "success",
        "{}",
        fail(&done.to_string(), &daemon, af)
    );
    assert_eq!(done["dates_total"], 2);
    assert_eq!(done["dates_succeeded"], 2);
    assert!(
        done["run_start"].is_string() && done["run_end"].is_string(),
        "{done}"
    );
    let done = daemon.wait_finished(&failing, BIG);
    assert_eq!(
        done["state"],
        "failed",
        "{}",
        fail(&done.to_string(), &daemon, af)
    );
    assert_eq!(done["dates_failed"], 1, "{done}");
    let done = daemon.wait_finished(&broken, BIG);
    assert_eq!(done["state"], "failed", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Airflow could not import the DAG copy") && reason.contains("mars"),
        "{}",
        fail(reason, &daemon, af)
    );
    let took = began.elapsed();

    // Airflow's own view: the copy registered under the backfill id and ran exactly the dates;
    // the origin never ran; the override reached the task; no import error.
    assert_eq!(af.run_dates(&ok_id), vec!["2024-03-01", "2024-03-02"]);
    // Runs backfilld created (`[reconcile] create_runs`) are alike the scheduler's.
    assert_eq!(af.assert_runs_alike(&ok_id), 2);
    assert_eq!(af.run_dates(&failing), vec!["2023-06-01"]);
    assert!(
        af.run_dates("sales").is_empty(),
        "the origin DAG must not run"
    );
    let rendered = af.query(&format!(
        "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = '{ok_id}' AND task_id = 'extract'"
    ));
    // Airflow 3.1 on MariaDB sometimes prunes one of these rows right after writing it (its
    // rendered-fields cleanup), so the task logs are the authority on what ran.
    assert!(!rendered.is_empty(), "no rendered fields for {ok_id}");
    assert!(
        rendered
            .iter()
            .all(|r| r[0].to_string().contains("region=eu")),
        "{rendered:?}"
    );
    let logs = extract_logs(af, &ok_id);
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(
        logs.iter().all(|l| l.contains("region=eu")),
        "the override reached every run: {logs:?}"
    );
    let errors = af.query("SELECT filename FROM import_error");
    assert!(
        errors.iter().all(|e| e[0]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("/{broken}.py")))),
        "only the broken copy has an import error: {errors:?}"
    );
    assert!(af.run_dates(&broken).is_empty());
    took
}

/// The scenario on a fresh Airflow of `major` with a SQLite metadata DB.
fn core_scenario_sqlite(major: AirflowMajor, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    let took = core_scenario(&mut af);
    eprintln!("core scenario, {major:?} + SQLite: {took:?}");
}

#[test]
fn core_scenario_airflow30_sqlite() {
    core_scenario_sqlite(AirflowMajor::V30, "matrix_af30_sqlite");
}

#[test]
fn core_scenario_airflow3_sqlite() {
    core_scenario_sqlite(AirflowMajor::V3, "matrix_af3_sqlite");
}

#[test]
fn core_scenario_airflow32_sqlite() {
    core_scenario_sqlite(AirflowMajor::V32, "matrix_af32_sqlite");
}

#[test]
fn core_scenario_airflow33_sqlite() {
    core_scenario_sqlite(AirflowMajor::V3Newest, "matrix_af33_sqlite");
}

#[test]
fn core_scenario_postgres_airflow2_then_3() {
    for (major, name) in [
        (AirflowMajor::V2, "matrix_af2_pg"),
        (AirflowMajor::V3, "matrix_af3_pg"),
    ] {
        let mut af = Airflow::postgres(major, name);
        let took = core_scenario(&mut af);
        eprintln!("core scenario, {major:?} + PostgreSQL: {took:?}");
    }
}

#[test]
fn core_scenario_postgres_airflow33() {
    let mut af = Airflow::postgres(AirflowMajor::V3Newest, "matrix_af33_pg");
    let took = core_scenario(&mut af);
    eprintln!("core scenario, V3Newest + PostgreSQL: {took:?}");
}

/// The task logs of `extract` in every run of `dag_id` (Airflow's default log layout, the same
/// on both majors).
fn extract_logs(af: &Airflow, dag_id: &str) -> Vec<String> {
    let dir = af.home.join("logs").join(format!("dag_id={dag_id}"));
    let mut logs = Vec::new();
    for run in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let task = run
            .unwrap_or_else(|e| panic!("{e}"))
            .path()
            .join("task_id=extract");
        for attempt in
            std::fs::read_dir(&task).unwrap_or_else(|e| panic!("{}: {e}", task.display()))
        {
            let path = attempt.unwrap_or_else(|e| panic!("{e}")).path();
            logs.push(
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    logs
}
