//! Issue 11 (part): task subsets, asset-safe copies and ordering across backfills.
//!
//! Copies with a task subset or with/without asset events load in real Airflow 2.11 and 3.1
//! (DagBag, serialization round trip), and end to end on Airflow 2.11 (SQLite) with the real
//! scheduler: a subset runs only its tasks for every date, a producer's backfill triggers its
//! consumer only when asked to, and `after` orders backfills and propagates a failure.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use backfilld::dagcopy::{self, CopyOptions, CopySpec, TaskSubset, COPY_SUBDIR};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::support::{
    airflow_venv, repo_dir, wait_for, Airflow, AirflowMajor, Daemon, DAGBAG_PRELUDE,
};

const BIG: Duration = Duration::from_secs(420);

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn date(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn spec(origin: &str, id: &str) -> CopySpec {
    CopySpec {
        backfill_id: id.into(),
        origin_dag_id: origin.into(),
        start: date("2024-01-01T00:00:00Z"),
        end: date("2024-01-02T00:00:00Z"),
        max_active_runs: 1,
        params: Map::new(),
        description: None,
        paused: false,
    }
}

fn subset(task_ids: &[&str], upstream: bool, downstream: bool) -> Option<TaskSubset> {
    Some(TaskSubset {
        patterns: vec!["^transform$".into()],
        task_ids: task_ids.iter().map(|s| s.to_string()).collect(),
        include_upstream: upstream,
        include_downstream: downstream,
    })
}

/// Loads the DAGs folder argv[1] (and the errors folder argv[2]) into DagBags; prints, as JSON,
/// every DAG's tasks with their upstream ids and number of outlets, parsed and after a
/// serialization round trip, and the import errors.
const LOAD: &str = r#"
import json, os, sys

def tasks(dag):
    return {
        t.task_id: {"upstream": sorted(t.upstream_task_ids), "outlets": len(t.outlets or [])}
        for t in dag.tasks
    }

bag = dag_bag(sys.argv[1])
ebag = dag_bag(sys.argv[2])
out = {
    "dags": {d.dag_id: tasks(d) for d in bag.dags.values()},
    "serialized": {
        d.dag_id: tasks(SerializedDAG.from_dict(SerializedDAG.to_dict(d))) for d in bag.dags.values()
    },
    "errors": {os.path.basename(k): v for k, v in list(bag.import_errors.items()) + list(ebag.import_errors.items())},
    "error_dags": sorted(ebag.dags),
}
print("RESULT " + json.dumps(out))
"#;

fn copies_load(major: AirflowMajor) -> TestResult {
    let venv = airflow_venv(major);
    let tmp = tempfile::tempdir()?;
    let dags = tmp.path().join("dags");
    let errors = tmp.path().join("errors");
    std::fs::create_dir_all(&dags)?;
    let origin = |name: &str| {
        std::fs::read_to_string(repo_dir().join("dags").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for name in ["etl_chain.py", "asset_producer.py", "asset_consumer.py"] {
        std::fs::write(dags.join(name), origin(name))?;
    }
    let write = |folder: &Path, file: &str, spec: &CopySpec, options: CopyOptions| {
        let source = dagcopy::render_with(&origin(file), spec, &options);
        dagcopy::write_atomically(
            &folder.join(COPY_SUBDIR),
            &dagcopy::file_name(&spec.backfill_id),
            source.as_bytes(),
            dagcopy::CopyAccess::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    };
    let cases = [
        ("etl_only", subset(&["transform"], false, false)),
        ("etl_up", subset(&["transform"], true, false)),
        ("etl_down", subset(&["transform"], false, true)),
        ("etl_all", None),
    ];
    for (id, subset) in cases {
        let options = CopyOptions {
            subset,
            emit_asset_events: false,
            steered: false,
        };
        write(&dags, "etl_chain.py", &spec("etl_chain", id), options);
    }
    for (id, emit) in [("assets_off", false), ("assets_on", true)] {
        let options = CopyOptions {
            subset: None,
            emit_asset_events: emit,
            steered: false,
        };
        write(
            &dags,
            "asset_producer.py",
            &spec("asset_producer", id),
            options,
        );
    }
    // The daemon resolved other tasks than the overlay finds: no copy, an import error.
    let options = CopyOptions {
        subset: subset(&["load"], false, false),
        emit_asset_events: false,
        steered: false,
    };
    write(
        &errors,
        "etl_chain.py",
        &spec("etl_chain", "etl_drift"),
        options,
    );

    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(format!("{DAGBAG_PRELUDE}{LOAD}"))
        .arg(&dags)
        .arg(&errors)
        .env("AIRFLOW_HOME", tmp.path().join("home"))
        .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
        .env("PYTHONWARNINGS", "ignore")
        .current_dir(tmp.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{major:?}: no result ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let out: Value = serde_json::from_str(line)?;
    let errors = &out["errors"];
    assert_eq!(
        errors.as_object().map(|e| e.len()),
        Some(1),
        "{major:?}: {errors}"
    );
    let drift = errors["etl_drift.py"].as_str().unwrap_or_default();
    assert!(
        drift.contains("select ['transform'] in this file but selected ['load']"),
        "{drift}"
    );
    assert_eq!(out["error_dags"], json!([]));
    for view in ["dags", "serialized"] {
        let d = &out[view];
        let ids = |dag: &str| -> Vec<String> {
            let mut v: Vec<String> = d[dag]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        assert_eq!(ids("etl_only"), ["transform"], "{major:?} {view}: {d}");
        assert_eq!(d["etl_only"]["transform"]["upstream"], json!([]));
        assert_eq!(ids("etl_up"), ["extract", "transform"], "{major:?} {view}");
        assert_eq!(d["etl_up"]["transform"]["upstream"], json!(["extract"]));
        assert_eq!(ids("etl_down"), ["load", "transform"], "{major:?} {view}");
        assert_eq!(ids("etl_all"), ["extract", "load", "transform"]);
        assert_eq!(ids("etl_chain"), ["extract", "load", "transform"]);
        assert_eq!(
            d["assets_off"]["produce"]["outlets"], 0,
            "{major:?} {view}: {d}"
        );
        assert_eq!(
            d["assets_on"]["produce"]["outlets"], 1,
            "{major:?} {view}: {d}"
        );
        assert_eq!(
            d["asset_producer"]["produce"]["outlets"], 1,
            "the origin keeps its outlets"
        );
    }
    Ok(())
}

#[test]
fn airflow2_loads_subset_and_asset_safe_copies() -> TestResult {
    copies_load(AirflowMajor::V2)
}

#[test]
fn airflow3_loads_subset_and_asset_safe_copies() -> TestResult {
    copies_load(AirflowMajor::V3)
}

// ----------------------------------------------------------------------------------------------
// End to end on Airflow 2.11
// ----------------------------------------------------------------------------------------------

/// Task instances of `dag_id` by task id: (task_id, count).
fn task_counts(af: &Airflow, dag_id: &str) -> Vec<(String, i64)> {
    let c = af.sql();
    let mut st = c
        .prepare("SELECT task_id, COUNT(*) FROM task_instance WHERE dag_id = ?1 GROUP BY task_id ORDER BY task_id")
        .unwrap_or_else(|e| panic!("{e}"));
    st.query_map([dag_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn counts(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[test]
fn task_subset_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "copy_subset_af2");
    af.start_scheduler();
    af.wait_parsed("etl_chain", BIG);
    let daemon = Daemon::start(&af, &[]);

    // A pattern matching nothing is refused, naming the DAG's tasks; so is one the daemon
    // cannot evaluate like RE2.
    let out = daemon.submit(
        "etl_chain",
        "2024-03-01",
        "2024-03-01",
        &["--task", "^nope$"],
    );
    assert_eq!(out["reason_code"], "no_matching_task", "{out}");
    let reason = out["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("extract, load, transform"), "{reason}");
    let out = daemon.submit(
        "etl_chain",
        "2024-03-01",
        "2024-03-01",
        &["--task", "(?=x)"],
    );
    assert_eq!(out["reason_code"], "invalid_value", "{out}");

    // Only `transform`, for every date.
    let only = daemon.submit_accepted(
        "etl_chain",
        "2024-03-01",
        "2024-03-02",
        &["--task", "^transform$", "--max-active-runs", "2"],
    );
    // `transform` and its upstream `extract`, from a request file.
    daemon.drop_request(
        "etl-up.toml",
        "dag_id = \"etl_chain\"\nstart = 2024-04-01\nend = 2024-04-02\nmax_active_runs = 2\n\
         tasks = [\"^transform$\"]\ninclude_upstream = true\n",
    );
    let up = wait_for("the etl-up request", Duration::from_secs(60), || {
        let out = daemon.ctl_json(&["outcome", "etl-up.toml", "--json"]);
        out["backfill_id"].as_str().map(str::to_owned)
    });

    let done = daemon.wait_finished(&only, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(done["dates_total"], 2);
    assert_eq!(done["dates_succeeded"], 2);
    assert_eq!(done["tasks"], json!(["^transform$"]));
    assert_eq!(done["task_ids"], json!(["transform"]));
    assert_eq!(task_counts(&af, &only), counts(&[("transform", 2)]));

    let done = daemon.wait_finished(&up, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["dates_succeeded"], 2);
    assert_eq!(done["include_upstream"], true);
    assert_eq!(
        task_counts(&af, &up),
        counts(&[("extract", 2), ("transform", 2)])
    );
    assert!(
        af.run_dates("etl_chain").is_empty(),
        "the origin never runs"
    );
    assert_eq!(af.count("SELECT COUNT(*) FROM import_error", &[]), 0);
    let status = daemon.ctl(&["status", &only]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("tasks: ^transform$ (selected: transform)"),
        "{text}"
    );
}

#[test]
fn asset_events_on_airflow2_sqlite() {
    asset_events(AirflowMajor::V2, "copy_assets_af2");
}

/// Airflow 3.1 on SQLite runs one task at a time (see `support`), so this is the slow one.
#[test]
fn asset_events_on_airflow3_sqlite() {
    asset_events(AirflowMajor::V3, "copy_assets_af3");
}

fn asset_events(major: AirflowMajor, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    af.start_scheduler();
    af.wait_parsed("asset_producer", BIG);
    af.wait_parsed("asset_consumer", BIG);
    af.cli_ok(&["dags", "unpause", "asset_consumer"]);
    let daemon = Daemon::start(&af, &[]);
    let consumer_runs = || {
        af.count(
            "SELECT COUNT(*) FROM dag_run WHERE dag_id = 'asset_consumer'",
            &[],
        )
    };
    let table = match major {
        AirflowMajor::V2 => "dataset_event",
        _ => "asset_event",
    };
    let events = |id: &str| {
        af.count(
            &format!("SELECT COUNT(*) FROM {table} WHERE source_dag_id = ?1"),
            &[&id],
        )
    };

    // By default the copy emits no dataset event: the consumer never runs.
    let out = daemon.submit(
        "asset_producer",
        "2024-03-01",
        "2024-03-03",
        &["--max-active-runs", "3"],
    );
    assert_eq!(out["outcome"], "accepted", "{out}");
    let warnings = out["warnings"].to_string();
    assert!(
        warnings.contains("mark_consumer (ExternalTaskMarker on asset_consumer)"),
        "{out}"
    );
    let quiet = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    let done = daemon.wait_finished(&quiet, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(done["dates_succeeded"], 3);
    assert_eq!(done["emit_asset_events"], false);
    assert_eq!(done["warnings"].as_array().map(Vec::len), Some(1), "{done}");
    // Give the scheduler time to act on any event.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(events(&quiet), 0);
    assert_eq!(consumer_runs(), 0, "the consumer ran from a backfill");

    // Opted in: three events, and the consumer runs.
    let loud = daemon.submit_accepted(
        "asset_producer",
        "2024-04-01",
        "2024-04-03",
        &["--max-active-runs", "3", "--emit-asset-events"],
    );
    let done = daemon.wait_finished(&loud, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["emit_asset_events"], true);
    assert_eq!(events(&loud), 3);
    wait_for("a consumer run", BIG, || {
        (consumer_runs() > 0).then_some(())
    });
}

#[test]
fn ordering_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "copy_after_af2");
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    af.wait_parsed("lifecycle_demo", BIG);
    let daemon = Daemon::start(&af, &[]);
    let copy = |id: &str| {
        af.dags_folder()
            .join(COPY_SUBDIR)
            .join(dagcopy::file_name(id))
    };

    // An unknown prerequisite is refused, named.
    let out = daemon.submit(
        "sales",
        "2024-03-01",
        "2024-03-02",
        &["--after", "nope_backfill_1"],
    );
    assert_eq!(out["reason_code"], "unknown_prerequisite", "{out}");
    assert!(out["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("nope_backfill_1"));

    // B after A: B's copy appears only once A succeeded; B runs after A ended.
    let a = daemon.submit_accepted(
        "lifecycle_demo",
        "2024-03-01",
        "2024-03-02",
        &["--param", "sleep=6"],
    );
    let b = daemon.submit_accepted("sales", "2024-03-01", "2024-03-02", &["--after", &a]);
    let mut saw_waiting = false;
    loop {
        let b_copy = copy(&b).exists();
        let sa = daemon.ctl_json(&["status", &a, "--json"]);
        let a_done = sa["state"] == "success" || sa["state"] == "failed";
        if !a_done {
            assert!(!b_copy, "B's copy was written while A is {}", sa["state"]);
            let sb = daemon.ctl_json(&["status", &b, "--json"]);
            assert_eq!(sb["state"], "submitted", "{sb}");
            if sb["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(&format!("waiting for {a} (")))
            {
                saw_waiting = true;
            }
        } else {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw_waiting, "B never said it waits for A");
    let done_a = daemon.wait_finished(&a, BIG);
    assert_eq!(done_a["state"], "success", "{done_a}");
    let done_b = daemon.wait_finished(&b, BIG);
    assert_eq!(
        done_b["state"],
        "success",
        "{done_b}\n{}",
        daemon.log_text()
    );
    assert_eq!(done_b["after"], json!([a]));
    let a_end = done_a["run_end"].as_str().unwrap_or_default();
    let b_start = done_b["run_start"].as_str().unwrap_or_default();
    assert!(
        !a_end.is_empty() && b_start >= a_end,
        "B started {b_start}, A ended {a_end}"
    );

    // D after a failing C fails with C's reason and never gets a copy.
    let c = daemon.submit_accepted("sales", "2023-06-01", "2023-06-01", &[]);
    let d = daemon.submit_accepted("sales", "2024-05-01", "2024-05-01", &["--after", &c]);
    let done_c = daemon.wait_finished(&c, BIG);
    assert_eq!(done_c["state"], "failed", "{done_c}");
    let done_d = daemon.wait_finished(&d, BIG);
    assert_eq!(done_d["state"], "failed", "{done_d}");
    assert_eq!(
        done_d["reason"],
        format!("prerequisite {c} failed: 1 of 1 logical dates failed").as_str(),
        "{done_d}"
    );
    assert!(!copy(&d).exists());
    assert!(af.run_dates(&d).is_empty());
    // Naming a prerequisite that already failed is refused.
    let out = daemon.submit("sales", "2024-06-01", "2024-06-01", &["--after", &c]);
    assert_eq!(out["reason_code"], "prerequisite_failed", "{out}");
}

// ----------------------------------------------------------------------------------------------
// Airflow 3.1: a subset copy registers with the selected tasks
// ----------------------------------------------------------------------------------------------

/// Task ids of the newest serialized version of `dag_id`.
fn serialized_task_ids(af: &Airflow, dag_id: &str) -> Option<Vec<String>> {
    let rows = af.query(&format!(
        "SELECT s.data FROM serialized_dag s JOIN dag_version v ON v.id = s.dag_version_id \
         WHERE s.dag_id = '{dag_id}' ORDER BY v.version_number DESC"
    ));
    let text = rows.first()?.first()?.as_str()?.to_owned();
    let data: Value = serde_json::from_str(&text).ok()?;
    let mut ids: Vec<String> = backfilld::taskset::tasks(&data["dag"])
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    ids.sort();
    Some(ids)
}

#[test]
fn subset_copy_registers_on_airflow3_sqlite() {
    let af = Airflow::sqlite(AirflowMajor::V3, "copy_subset_af3");
    af.reserialize();
    af.wait_parsed("etl_chain", BIG);
    let daemon = Daemon::start(&af, &[]);
    let id = daemon.submit_accepted(
        "etl_chain",
        "2024-03-01",
        "2024-03-02",
        &["--task", "^transform$", "--include-downstream"],
    );
    let copy = af
        .dags_folder()
        .join(COPY_SUBDIR)
        .join(dagcopy::file_name(&id));
    wait_for("the DAG copy", Duration::from_secs(60), || {
        copy.exists().then_some(())
    });
    // Airflow 3's DAG processor (one pass of it) registers the copy with the subset's tasks.
    af.reserialize();
    assert_eq!(
        serialized_task_ids(&af, &id),
        Some(vec!["load".to_owned(), "transform".to_owned()]),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        serialized_task_ids(&af, "etl_chain"),
        Some(vec![
            "extract".to_owned(),
            "load".to_owned(),
            "transform".to_owned()
        ])
    );
    assert_eq!(af.query_i64("SELECT COUNT(*) FROM import_error"), 0);
    let status = wait_for("the copy to be registered", BIG, || {
        let s = daemon.ctl_json(&["status", &id, "--json"]);
        (s["state"] != "submitted").then_some(s)
    });
    assert_eq!(status["state"], "queued", "{status}");
    assert_eq!(status["task_ids"], json!(["transform"]));
    assert_eq!(status["include_downstream"], true);
}
