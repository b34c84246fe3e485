//! Issue 11, "Adopt a seed deployment", on real Airflow 2.11 with PostgreSQL (where the seed
//! stores its states as a native enum type) and the LocalExecutor:
//! - the real seed plugin (`li-airflow-backfill-plugin` 1.0.4 from PyPI, installed by
//!   `scripts/airflow-venvs.sh` into a directory of its own on the test Airflow's PYTHONPATH)
//!   creates its table and four backfills through its own code: one that succeeds, one that
//!   fails, one cancelled before its copy was written, and one still running when imported;
//! - `import-seed` is refused to a Viewer (audited), and while a seed system DAG is unpaused; `--dry-run` reports every
//!   backfill (seed state → backfilld state, the recorded dates, the missing first date) and
//!   changes nothing;
//! - `import-seed` takes them over, as a job in batches that a `kill -9` after the first batch
//!   does not break (the restarted daemon resumes it, `--attach` follows it to exact counts,
//!   nothing imported twice): states and dates (minus the first one, flagged) match,
//!   no DAG copy is written or rewritten, the running one goes on to success under backfilld's
//!   reconcile from the seed's copy, the imports are audited, and a second import imports
//!   nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::authz_matrix::{ctl_as, unix_user};
use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(600);

/// The seed plugin as installed by `scripts/airflow-venvs.sh` (`pip install --target`).
fn seed_plugin_dir() -> PathBuf {
    crate::support::package_dir(
        "seedplugin",
        "linkedin/airflow/backfill/__init__.py",
        "the seed plugin",
    )
}

/// Drives the seed plugin through its own API functions (what its REST API and system DAGs
/// call). Prints one `RESULT:` line of JSON.
const SEED_PY: &str = r#"
import json, sys, time
from airflow.models import DagBag
from linkedin.airflow.backfill.models.backfill import init_models
from linkedin.airflow.backfill.apis import api_impl
from linkedin.airflow.backfill.dag_operations.creation import process_submitted_backfills
from linkedin.airflow.backfill.dag_operations.state_update import update_backfill_states
init_models()
op = sys.argv[1]
result = None
if op == "create":
    bag = DagBag()
    result = []
    for data in json.loads(sys.argv[2]):
        cancel = data.pop("cancel", False)
        created = api_impl.create_backfill([data["dag_id"]], data, bag, "root")
        if cancel:
            api_impl.cancel_backfill(created["backfill_dag_id"], bag)
        result.append(created["backfill_dag_id"])
        time.sleep(1.2)  # the seed's ids have a one-second stamp
    process_submitted_backfills()
elif op == "update":
    update_backfill_states(None)
print("RESULT:" + json.dumps(result))
"#;

fn seed(af: &Airflow, args: &[&str]) -> Value {
    let out = af
        .command("python")
        .arg("-c")
        .arg(SEED_PY)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "seed {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT:"))
        .unwrap_or_else(|| panic!("no result from seed {args:?}:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The seed's table: id → (state as stored, deleted).
fn seed_states(af: &Airflow) -> BTreeMap<String, (String, bool)> {
    af.query(
        "SELECT backfill_dag_id, CAST(state AS TEXT), CASE WHEN deleted THEN 1 ELSE 0 END \
         FROM custom_backfill",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap_or_default().to_owned(),
            (
                r[1].as_str().unwrap_or_default().to_owned(),
                r[2].as_i64() == Some(1),
            ),
        )
    })
    .collect()
}

/// Every file of the copies folder with its content.
fn copies(af: &Airflow) -> BTreeMap<String, Vec<u8>> {
    let dir = af.dags_folder().join("backfill_user_dags");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn finished_runs(af: &Airflow, dag_id: &str) -> i64 {
    af.query_i64(&format!(
        "SELECT COUNT(*) FROM dag_run WHERE dag_id = '{dag_id}' AND state IN ('success', 'failed')"
    ))
}

fn import(d: &Daemon, dry_run: bool) -> Value {
    let mut args = vec!["import-seed", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    d.ctl_json(&args)
}

fn by_seed_id(items: &Value) -> BTreeMap<String, Value> {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["seed_id"].as_str().unwrap_or_default().to_owned(),
                        i.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn import_seed_on_airflow2_postgres() {
    let mut af = Airflow::postgres(AirflowMajor::V2, "seed_import_af2");
    af.extra_env.push((
        "PYTHONPATH".into(),
        seed_plugin_dir().to_string_lossy().into_owned(),
    ));
    // The seed writes copies without asking for a priority parse: let the scheduler list the
    // DAGs folder often, as a seed deployment tuned for it would.
    af.extra_env.push((
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL".into(),
        "5".into(),
    ));
    // The seed's system DAGs live in its repository, not in its PyPI package: a stand-in
    // with the same dag_id (never scheduled) checks that an unpaused one blocks the import.
    std::fs::write(
        af.dags_folder().join("seed_system_stand_in.py"),
        "import datetime\nfrom airflow import DAG\nfrom airflow.operators.empty import EmptyOperator\n\
         with DAG(dag_id='backfill_state_update', schedule=None, \
         start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)):\n    \
         EmptyOperator(task_id='noop')\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    af.start_scheduler();
    for dag in ["sales", "lifecycle_demo", "backfill_state_update"] {
        af.wait_parsed(dag, BIG);
    }

    // 1. The seed creates a succeeding, a failing and a cancelled backfill with its own code.
    let ids = seed(
        &af,
        &[
            "create",
            &serde_json::json!([
                {"dag_id": "sales", "start_date": "2024-02-01T00:00:00+00:00",
                 "end_date": "2024-02-03T00:00:00+00:00", "delete_duration_days": 30,
                 "description": "seed success", "dag_params": "{\"region\": \"eu\"}"},
                {"dag_id": "sales", "start_date": "2023-02-01T00:00:00+00:00",
                 "end_date": "2023-02-03T00:00:00+00:00", "delete_duration_days": 30,
                 "description": "seed failure"},
                {"dag_id": "lifecycle_demo", "start_date": "2024-05-01T00:00:00+00:00",
                 "end_date": "2024-05-02T00:00:00+00:00", "delete_duration_days": 30,
                 "scheduled_date": "2030-01-01T00:00:00+00:00", "cancel": true},
            ])
            .to_string(),
        ],
    );
    let ids = crate::support::json_strings(&ids);
    let [ok, bad, cancelled] = [&ids[0], &ids[1], &ids[2]];
    for id in [ok, bad] {
        wait_for(&format!("the seed's copy {id} to run 3 dates"), BIG, || {
            (finished_runs(&af, id) == 3).then_some(())
        });
    }
    seed(&af, &["update"]);

    // 2. One still running when backfilld takes over: 4 dates of 20 s, one at a time.
    let active = seed(
        &af,
        &[
            "create",
            &serde_json::json!([
                {"dag_id": "lifecycle_demo", "start_date": "2024-03-01T00:00:00+00:00",
                 "end_date": "2024-03-04T00:00:00+00:00", "delete_duration_days": 30,
                 "max_active_runs": 1, "dag_params": "{\"sleep\": 20}"},
            ])
            .to_string(),
        ],
    );
    let running = active[0].as_str().unwrap_or_default().to_owned();
    wait_for("the seed's running copy to start a run", BIG, || {
        (af.query_i64(&format!(
            "SELECT COUNT(*) FROM dag_run WHERE dag_id = '{running}' AND state = 'running'"
        )) > 0)
            .then_some(())
    });
    seed(&af, &["update"]);
    let states = seed_states(&af);
    let expect = [
        (ok, "SUCCESS", false),
        (bad, "FAILED", false),
        (cancelled, "SUBMITTED", true),
        (&running, "RUNNING", false),
    ];
    for (id, state, deleted) in expect {
        assert_eq!(
            states.get(id.as_str()),
            Some(&(state.to_owned(), deleted)),
            "seed state of {id}: {states:?}"
        );
    }
    let seed_dates: Vec<String> = af
        .query(&format!(
            "SELECT logical_dates FROM custom_backfill WHERE backfill_dag_id = '{ok}'"
        ))
        .first()
        .and_then(|r| r[0].as_str())
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    assert_eq!(
        seed_dates,
        ["2024-02-02T00:00:00+00:00", "2024-02-03T00:00:00+00:00"],
        "the seed drops the first date of a range"
    );
    let copies_before = copies(&af);
    assert_eq!(copies_before.len(), 3, "{:?}", copies_before.keys());

    // 3. backfilld: an unpaused seed system DAG blocks the import; a dry run reports and
    // changes nothing.
    let mut daemon = Daemon::start(&af, &[]);
    // A Viewer may not import (no can_operate on Backfills), audited like any refusal.
    unix_user("bfd_seedview");
    af.ensure_user("bfd_seedview", "Viewer");
    let viewer = ctl_as(&daemon, "bfd_seedview", &["import-seed", "--dry-run"]);
    let text = String::from_utf8_lossy(&viewer.stderr).into_owned();
    assert!(
        !viewer.status.success() && text.contains("missing_backfill_permission"),
        "{text}"
    );
    af.cli_ok(&["dags", "unpause", "backfill_state_update"]);
    let refused = daemon.ctl(&["import-seed"]);
    let text = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("backfill_state_update"), "{text}");
    let dry = import(&daemon, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["active_system_dags"],
        serde_json::json!(["backfill_state_update"])
    );
    let planned = by_seed_id(&dry["imported"]);
    assert_eq!(planned.len(), 4, "{dry:#}");
    for (id, state) in [
        (ok, "success"),
        (bad, "failed"),
        (cancelled, "cancelled"),
        (&running, "running"),
    ] {
        assert_eq!(planned[id.as_str()]["state"], state, "{dry:#}");
    }
    assert_eq!(planned[ok.as_str()]["seed_state"], "SUCCESS");
    assert_eq!(
        planned[cancelled.as_str()]["seed_state"],
        "SUBMITTED, deleted"
    );
    assert_eq!(
        planned[ok.as_str()]["dates"],
        serde_json::json!(["2024-02-02T00:00:00Z", "2024-02-03T00:00:00Z"])
    );
    let note = planned[ok.as_str()]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("did not record")
            && note.contains("its copy ran 2024-02-01T00:00:00Z success"),
        "{note}"
    );
    let listed = daemon.ctl_json(&["list", "--all", "--json"]);
    assert_eq!(listed, serde_json::json!([]), "a dry run changes nothing");
    let text =
        String::from_utf8_lossy(&daemon.ctl(&["import-seed", "--dry-run"]).stdout).into_owned();
    assert!(text.contains("would import 4"), "{text}");

    // 4. The import, once the system DAG is paused.
    af.cli_ok(&["dags", "pause", "backfill_state_update"]);
    assert!(
        finished_runs(&af, &running) < 4,
        "the seed's backfill {running} finished before the import: nothing to take over"
    );
    // The import runs as a job in batches: stopped dead after its first batch (2 of the 4
    // seed rows; a failpoint parks the engine, then kill -9, the client polling meanwhile),
    // a restart resumes it, and the client attached again sees it finish with exact counts.
    daemon.restart(&[
        ("BACKFILLD_FAILPOINTS", "after_import_batch"),
        ("BACKFILLD_IMPORT_BATCH", "2"),
    ]);
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_backfillctl"))
        .arg("--config")
        .arg(&daemon.config)
        .args(["import-seed", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("backfillctl: {e}"));
    wait_for("the import's first batch", BIG, || {
        daemon
            .log_text()
            .contains("failpoint reached")
            .then_some(())
    });
    let _ = client.kill();
    let _ = client.wait();
    daemon.kill9();
    let imported_rows = "SELECT COUNT(*) FROM backfilld_backfill WHERE seed_id IS NOT NULL";
    assert_eq!(af.query_i64(imported_rows), 2, "the first batch committed");
    assert_eq!(
        af.query_i64("SELECT rows_done FROM backfilld_import WHERE state = 'running'"),
        2
    );
    // Batches of 2 again: the rows end at a batch boundary, so the job ends on an empty batch.
    daemon.restart(&[("BACKFILLD_IMPORT_BATCH", "2")]);
    let report = daemon.ctl_json(&["import-seed", "--attach", "--json"]);
    assert_eq!(report["job"]["state"], "finished", "{report:#}");
    for (key, n) in [
        ("total", 4),
        ("done", 4),
        ("imported", 4),
        ("skipped", 0),
        ("refused", 0),
        ("already", 0),
    ] {
        assert_eq!(report["job"][key], n, "{key}: {report:#}");
    }
    assert_eq!(af.query_i64(imported_rows), 4);
    assert_eq!(
        af.query_i64("SELECT COUNT(DISTINCT seed_id) FROM backfilld_backfill"),
        4
    );
    assert_eq!(report["dry_run"], false);
    let done = by_seed_id(&report["imported"]);
    assert_eq!(done.len(), 4, "{report:#}");
    assert_eq!(report["skipped"], serde_json::json!([]), "{report:#}");
    assert_eq!(done[running.as_str()]["state"], "running", "{report:#}");

    let list = daemon.ctl_json(&["list", "--all", "--json"]);
    let rows = by_seed_id(&list);
    assert_eq!(rows.len(), 4, "{list:#}");
    let a = &rows[ok.as_str()];
    assert_eq!(a["id"], ok.as_str());
    assert_eq!(a["state"], "success");
    assert_eq!(a["dag_id"], "sales");
    assert_eq!(a["submitted_by"], "root");
    assert_eq!(
        a["logical_dates"],
        serde_json::json!(["2024-02-02T00:00:00Z", "2024-02-03T00:00:00Z"])
    );
    assert_eq!(a["dates_total"], 2);
    assert_eq!(a["dates_succeeded"], 2);
    assert_eq!(a["params"]["region"], "eu");
    assert!(
        a["import_note"]
            .as_str()
            .is_some_and(|n| n.contains("did not record")),
        "{a:#}"
    );
    assert_eq!(rows[bad.as_str()]["state"], "failed");
    assert_eq!(rows[bad.as_str()]["dates_failed"], 2);
    assert_eq!(rows[cancelled.as_str()]["state"], "cancelled");
    assert_eq!(rows[cancelled.as_str()]["copy_path"], Value::Null);
    let c = &rows[running.as_str()];
    assert!(
        matches!(c["state"].as_str(), Some("running" | "queued" | "success")),
        "{c:#}"
    );
    assert_eq!(
        c["logical_dates"],
        serde_json::json!([
            "2024-03-02T00:00:00Z",
            "2024-03-03T00:00:00Z",
            "2024-03-04T00:00:00Z"
        ])
    );
    assert_eq!(
        c["copy_path"],
        af.dags_folder()
            .join("backfill_user_dags")
            .join(format!("{running}.py"))
            .to_string_lossy()
            .as_ref()
    );

    // 5. The running one finishes under backfilld, from the seed's copy.
    let finished = daemon.wait_finished(&running, BIG);
    assert_eq!(
        finished["state"],
        "success",
        "{finished:#}\n{}",
        daemon.log_text()
    );
    assert_eq!(finished["dates_succeeded"], 3, "{finished:#}");
    assert_eq!(
        copies(&af),
        copies_before,
        "backfilld wrote or rewrote a DAG copy"
    );
    assert_eq!(
        af.query_i64(&format!(
            "SELECT COUNT(*) FROM dag_run WHERE dag_id = '{running}'"
        )),
        4,
        "the seed's copy runs its whole range once"
    );

    // 6. Audited; a second import imports nothing; the seed's table is untouched.
    let audited = af.query_i64(
        "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'import' AND allowed = 1 \
         AND airflow_user = 'root' AND target NOT LIKE 'custom_backfill%'",
    );
    assert_eq!(audited, 4);
    let denied = af.query_i64(
        "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'import' AND allowed = 0 \
         AND reason_code = 'seed_plugin_active'",
    );
    assert_eq!(denied, 1);
    let viewer_denied = af.query_i64(
        "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'import' AND allowed = 0 \
         AND unix_user = 'bfd_seedview' AND reason_code = 'missing_backfill_permission'",
    );
    assert_eq!(viewer_denied, 1);
    // The batches' audit records (one multi-row insert each) keep the hash chain intact.
    let verified = daemon.ctl_json(&["audit", "verify", "--json"]);
    assert_eq!(verified["broken"], Value::Null, "{verified:#}");
    let again = import(&daemon, false);
    assert_eq!(again["imported"], serde_json::json!([]), "{again:#}");
    assert_eq!(
        again["already_imported"].as_array().map(Vec::len),
        Some(4),
        "{again:#}"
    );
    assert_eq!(seed_states(&af), states, "the seed's table changed");
    assert!(af.dead_components().is_empty(), "{}", af.logs_tail());
}
