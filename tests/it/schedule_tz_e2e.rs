//! End to end on a real scheduler: a backfill of a Europe/Paris cron DAG across the spring-forward
//! change runs exactly the dates the schedule oracle agrees on, with the request's bounds read as
//! Paris wall-clock times.

use std::time::Duration;

use crate::support::{Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(480);

/// A DAG at 02:30 Paris time, which does not exist on 2024-03-31 (Airflow runs it at 03:30).
const PARIS_DAG: &str = r#"
import pendulum

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="paris_nightly",
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Paris"),
    catchup=False,
    is_paused_upon_creation=True,
) as dag:
    BashOperator(task_id="work", bash_command="echo {{ logical_date }}")
"#;

fn run_instants(af: &Airflow, major: AirflowMajor, dag_id: &str) -> Vec<String> {
    let column = if major.is_v3() {
        "logical_date"
    } else {
        "execution_date"
    };
    let c = af.sql();
    let mut st = c
        .prepare(&format!(
            "SELECT {column} FROM dag_run WHERE dag_id = ?1 ORDER BY {column}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = st
        .query_map([dag_id], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{e}"));
    rows.map(|r| r.unwrap_or_default().chars().take(16).collect())
        .collect()
}

fn paris_backfill_across_dst(major: AirflowMajor, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    let dag_file = af.dags_folder().join("paris_nightly.py");
    std::fs::write(&dag_file, PARIS_DAG).unwrap_or_else(|e| panic!("{e}"));
    af.start_scheduler();
    af.wait_parsed("paris_nightly", BIG);
    let daemon = Daemon::start(&af, &[]);
    // Local bounds: 02:15 Paris on Mar 30 is 01:15 UTC (read as UTC it would miss that night).
    // Three at once: the scheduler creates the first run, backfilld the others (`[reconcile]
    // create_runs`) with their data intervals across the change.
    daemon.drop_request(
        "paris.toml",
        "dag_id = \"paris_nightly\"\nstart = 2024-03-30T02:15:00\nend = 2024-04-01T02:45:00\nmax_active_runs = 3\n",
    );
    let id = crate::support::wait_for(
        "the request to be accepted",
        Duration::from_secs(120),
        || {
            let list = daemon.ctl_json(&["list", "--json"]);
            list.as_array()?
                .iter()
                .find(|b| b["dag_id"] == "paris_nightly")
                .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
        },
    );
    let done = daemon.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(done["dates_total"], 3, "{done}");
    // Mar 30 02:30 CET, Mar 31 "02:30" in the gap = 03:30 CEST, Apr 1 02:30 CEST.
    assert_eq!(
        run_instants(&af, major, &id),
        vec!["2024-03-30 01:30", "2024-03-31 01:30", "2024-04-01 00:30"]
    );
    assert!(run_instants(&af, major, "paris_nightly").is_empty());
    assert_eq!(af.assert_runs_alike(&id), 3);
    // Data intervals as Airflow's timetable gives them: a cron data interval up to the next
    // night on 2.x (23 h across the change), none on 3.x (CronTriggerTimetable).
    let intervals: Vec<(String, String)> = af
        .query(&format!(
            "SELECT data_interval_start, data_interval_end FROM dag_run WHERE dag_id = '{id}' \
             ORDER BY data_interval_start"
        ))
        .iter()
        .map(|r| {
            let t = |i: usize| -> String {
                r.get(i)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .chars()
                    .take(16)
                    .collect()
            };
            (t(0), t(1))
        })
        .collect();
    let expected: &[(&str, &str)] = if major.is_v3() {
        &[
            ("2024-03-30 01:30", "2024-03-30 01:30"),
            ("2024-03-31 01:30", "2024-03-31 01:30"),
            ("2024-04-01 00:30", "2024-04-01 00:30"),
        ]
    } else {
        &[
            ("2024-03-30 01:30", "2024-03-31 01:30"),
            ("2024-03-31 01:30", "2024-04-01 00:30"),
            ("2024-04-01 00:30", "2024-04-02 00:30"),
        ]
    };
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(intervals, expected, "{}", daemon.log_text());
}

#[test]
fn paris_cron_across_spring_forward_airflow2() {
    paris_backfill_across_dst(AirflowMajor::V2, "tz_e2e_af2");
}

#[test]
fn paris_cron_across_spring_forward_airflow3_newest() {
    paris_backfill_across_dst(AirflowMajor::V3Newest, "tz_e2e_af33");
}
