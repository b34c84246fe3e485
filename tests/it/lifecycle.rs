//! Issue 9's acceptance on real Airflow 2.11 with SQLite and a real scheduler: dry run, cancel
//! before the DAG copy exists, cancel while running, pause then resume, delete after success,
//! retry of the failed dates, refusals from the state machine, and `list` filters — through
//! `backfillctl` and through hand-dropped request files. Airflow 3.1 runs pause/resume, cancel
//! and delete on SQLite, and the same on PostgreSQL (3.1) and MariaDB (2.11).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{stdout_json, wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(420);
const DAG: &str = "lifecycle_demo";

/// `backfillctl <action> ID --json`: the decided request record and the exit code.
fn operate(d: &Daemon, action: &str, id: &str) -> (Value, Option<i32>) {
    let out = d.ctl(&[action, id, "--json"]);
    (stdout_json(&out), out.status.code())
}

/// A backfill cancelled by root while running, after its first date succeeded: failed, and
/// the counts are those after the cancel (one success, the rest failed, nothing in flight).
fn assert_cancelled_after_one_success(s: &Value) {
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["reason"], "cancelled by root", "{s}");
    assert_eq!(
        (
            &s["dates_succeeded"],
            &s["dates_running"],
            &s["dates_queued"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(0)),
        "the counts are those after the cancel: {s}"
    );
    assert!(s["dates_failed"].as_u64().is_some_and(|n| n >= 1), "{s}");
}

/// `backfillctl <action> ID` refused by the state machine (exit code 1), its reason
/// containing `needle`.
fn assert_refused(d: &Daemon, action: &str, id: &str, needle: &str) {
    let (v, code) = operate(d, action, id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["reason_code"], "illegal_transition", "{v}");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains(needle)),
        "{v}"
    );
}

fn status(d: &Daemon, id: &str) -> Value {
    d.ctl_json(&["status", id, "--json"])
}

/// Task instances of `dag_id` as `(run_id, task_id, state, started)`.
fn task_instances(af: &Airflow, dag_id: &str) -> Vec<(String, String, String, bool)> {
    let c = af.sql();
    let mut st = c
        .prepare(
            "SELECT run_id, task_id, COALESCE(state, ''), start_date IS NOT NULL \
             FROM task_instance WHERE dag_id = ?1 ORDER BY run_id, task_id",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = st
        .query_map([dag_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// `(logical date, state)` of every run of `dag_id`, by date.
fn runs(af: &Airflow, dag_id: &str) -> Vec<(String, String)> {
    let c = af.sql();
    let col = af.date_column();
    let mut st = c
        .prepare(&format!(
            "SELECT substr({col}, 1, 10), state FROM dag_run WHERE dag_id = ?1 ORDER BY {col}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = st
        .query_map([dag_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap_or_else(|e| panic!("{e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
}

fn copy_path(af: &Airflow, id: &str) -> std::path::PathBuf {
    af.dags_folder()
        .join("backfill_user_dags")
        .join(format!("{id}.py"))
}

#[test]
fn lifecycle_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "lifecycle_af2");
    af.start_scheduler();
    af.wait_parsed(DAG, BIG);
    let d = Daemon::start(&af, &[]);

    // Dry run: the dates as JSON and as a table; nothing is created.
    let dry = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        DAG,
        "--start",
        "2024-05-01",
        "--end",
        "2024-05-03",
        "--dry-run",
    ]);
    assert_eq!(dry["outcome"], "accepted", "{dry}");
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["backfill_id"].is_null(), "{dry}");
    assert_eq!(
        dry["dates"],
        serde_json::json!([
            "2024-05-01T00:00:00Z",
            "2024-05-02T00:00:00Z",
            "2024-05-03T00:00:00Z"
        ])
    );
    let table = d.ctl(&[
        "submit",
        "--dag",
        DAG,
        "--start",
        "2024-05-01",
        "--end",
        "2024-05-02",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(
        text.contains("LOGICAL DATE") && text.contains("2024-05-02T00:00:00Z"),
        "{text}"
    );
    assert_eq!(
        d.ctl_json(&["list", "--all", "--json"]),
        serde_json::json!([])
    );

    // 1. Cancel before the copy exists: while the copy cannot be written (the copy folder is
    //    a file), cancel withdraws the backfill; once writing works again no copy ever appears.
    let copies = af.dags_folder().join("backfill_user_dags");
    let _ = std::fs::remove_dir_all(&copies);
    std::fs::write(&copies, "not a directory").unwrap_or_else(|e| panic!("{e}"));
    let early = d.submit_accepted(DAG, "2024-04-01", "2024-04-02", &[]);
    assert_eq!(status(&d, &early)["state"], "submitted");
    let (v, code) = operate(&d, "cancel", &early);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["action"], "cancel", "{v}");
    std::fs::remove_file(&copies).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(&copies).unwrap_or_else(|e| panic!("{e}"));
    let s = status(&d, &early);
    assert_eq!(s["state"], "cancelled", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("withdrawn by root")),
        "{s}"
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !copy_path(&af, &early).exists(),
        "a withdrawn backfill never gets a copy"
    );
    assert!(runs(&af, &early).is_empty());
    // Cancelling it again is refused by the state machine, with the reason.
    assert_refused(&d, "cancel", &early, "cannot cancel a cancelled backfill");

    // 2. Cancel while running: three slow dates; once the first succeeded and the second is
    //    running, cancel. Delete is refused while it runs.
    let running = d.submit_accepted(DAG, "2024-05-01", "2024-05-03", &["--param", "sleep=15"]);
    wait_for("a finished date and a running task", BIG, || {
        let s = status(&d, &running);
        let busy = task_instances(&af, &running)
            .iter()
            .any(|t| t.2 == "running");
        (s["dates_succeeded"] == 1 && busy).then_some(())
    });
    assert_refused(&d, "delete", &running, "cannot delete a running backfill");
    let (v, code) = operate(&d, "cancel", &running);
    assert_eq!(code, Some(0), "{v}");
    let cancelled_at = Instant::now();
    // Within one reconcile interval (2 s) nothing of the copy is running or queued.
    wait_for("the copy to stop", Duration::from_secs(2), || {
        let tis = task_instances(&af, &running);
        let busy = tis
            .iter()
            .any(|t| matches!(t.2.as_str(), "running" | "queued" | "scheduled" | ""));
        let runs_busy = runs(&af, &running)
            .iter()
            .any(|r| matches!(r.1.as_str(), "running" | "queued"));
        (!busy && !runs_busy).then_some(())
    });
    assert!(cancelled_at.elapsed() <= Duration::from_secs(3));
    let s = status(&d, &running);
    assert_cancelled_after_one_success(&s);
    // The finished date keeps its success; the others stay failed (the running task was
    // killed, not allowed to finish) and nothing new starts.
    std::thread::sleep(Duration::from_secs(20));
    let r = runs(&af, &running);
    assert_eq!(r.first().map(|r| r.1.as_str()), Some("success"), "{r:?}");
    assert!(
        r.iter().skip(1).all(|r| r.1 == "failed"),
        "unfinished runs are failed: {r:?}"
    );
    let tis = task_instances(&af, &running);
    assert!(
        !tis.iter().any(
            |t| matches!(t.2.as_str(), "running" | "queued" | "scheduled" | "success")
                && !t.0.contains("2024-05-01")
        ),
        "{tis:?}"
    );
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM dag WHERE dag_id = ?1 AND is_paused = 1",
            &[&running]
        ),
        1
    );

    // 3. Pause (by a hand-dropped request file) while a task runs: it finishes, no new task
    //    instance starts; resume (backfillctl) and it completes.
    let paused = d.submit_accepted(DAG, "2024-06-01", "2024-06-02", &["--param", "sleep=6"]);
    wait_for("a running task", BIG, || {
        task_instances(&af, &paused)
            .iter()
            .any(|t| t.2 == "running")
            .then_some(())
    });
    d.drop_request(
        "pause-it.toml",
        &format!("action = \"pause\"\nid = \"{paused}\"\n"),
    );
    let v = wait_for("the pause decision", Duration::from_secs(30), || {
        let v = stdout_json(&d.ctl(&["outcome", "pause-it.toml", "--json"]));
        (v["outcome"] != "pending").then_some(v)
    });
    assert_eq!(v["outcome"], "accepted", "{v}");
    let started: BTreeSet<(String, String)> = task_instances(&af, &paused)
        .into_iter()
        .filter(|t| t.3)
        .map(|t| (t.0, t.1))
        .collect();
    let s = status(&d, &paused);
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["user_paused"], true, "{s}");
    std::thread::sleep(Duration::from_secs(20));
    let later: BTreeSet<(String, String)> = task_instances(&af, &paused)
        .into_iter()
        .filter(|t| t.3)
        .map(|t| (t.0, t.1))
        .collect();
    assert_eq!(started, later, "no task instance started while paused");
    assert!(
        !task_instances(&af, &paused)
            .iter()
            .any(|t| t.2 == "running"),
        "the running task finished"
    );
    assert_eq!(status(&d, &paused)["state"], "paused");
    let (v, code) = operate(&d, "pause", &paused);
    assert_eq!(code, Some(1), "already paused: {v}");
    let (v, code) = operate(&d, "resume", &paused);
    assert_eq!(code, Some(0), "{v}");
    let done = d.wait_finished(&paused, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["user_paused"], false, "{done}");

    // 4. Delete after success: file gone, no row for the copy's dag_id in Airflow's tables
    //    (but `log`, which `airflow dags delete` keeps too), origin untouched, list --all.
    let origin_before = af.count("SELECT COUNT(*) FROM dag WHERE dag_id = ?1", &[&DAG]);
    let (v, code) = operate(&d, "delete", &paused);
    assert_eq!(code, Some(0), "{v}");
    assert!(!copy_path(&af, &paused).exists());
    let tables = dag_id_tables_any(&af);
    assert!(tables.iter().any(|t| t == "task_instance"), "{tables:?}");
    wait_for(
        "Airflow's rows of the copy to go",
        Duration::from_secs(60),
        || {
            let left: Vec<String> = tables
                .iter()
                .filter(|t| *t != "log")
                .filter(|t| {
                    af.count(
                        &format!("SELECT COUNT(*) FROM {t} WHERE dag_id = ?1"),
                        &[&paused],
                    ) > 0
                })
                .cloned()
                .collect();
            left.is_empty().then_some(())
        },
    );
    // It stays gone: the DAG processor does not bring it back.
    std::thread::sleep(Duration::from_secs(10));
    for t in tables.iter().filter(|t| *t != "log") {
        let n = af.count(
            &format!("SELECT COUNT(*) FROM {t} WHERE dag_id = ?1"),
            &[&paused],
        );
        assert_eq!(n, 0, "{t} still holds rows of {paused}");
    }
    assert_eq!(
        af.count("SELECT COUNT(*) FROM dag WHERE dag_id = ?1", &[&DAG]),
        origin_before
    );
    assert!(runs(&af, DAG).is_empty(), "the origin DAG never ran");
    let list = d.ctl_json(&["list", "--json"]);
    assert!(
        !list
            .as_array()
            .is_some_and(|l| l.iter().any(|b| b["id"] == paused.as_str())),
        "{list}"
    );
    let all = d.ctl_json(&["list", "--all", "--json"]);
    let row = all
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == paused.as_str()).cloned())
        .unwrap_or_else(|| panic!("list --all lacks {paused}: {all}"));
    assert_eq!(row["deleted"], true, "{row}");
    let table = d.ctl(&["list", "--all"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("deleted"));
    let (v, code) = operate(&d, "resume", &paused);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("it was deleted")),
        "{v}"
    );

    // 5. Retry after a partial failure: 07-01 and 07-03 fail, 07-02 succeeds; once their
    //    cause is gone, the retry runs exactly the failed dates, as two backfills (one per run
    //    of consecutive failed dates, so 07-02 never runs again) linked to the first.
    let fail_dir = af.home.join("fail-dates");
    std::fs::create_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    for day in ["2024-07-01", "2024-07-03"] {
        std::fs::write(fail_dir.join(day), "").unwrap_or_else(|e| panic!("{e}"));
    }
    let fail_param = format!("fail_dir=\"{}\"", fail_dir.display());
    let partial = d.submit_accepted(DAG, "2024-07-01", "2024-07-03", &["--param", &fail_param]);
    let done = d.wait_finished(&partial, BIG);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["dates_failed"], 2, "{done}");
    let before = runs(&af, &partial);
    std::fs::remove_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    let (v, code) = operate(&d, "retry", &partial);
    assert_eq!(code, Some(0), "{v}");
    let retry = v["backfill_id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(retry, partial);
    let warning = v["warnings"][0].as_str().unwrap_or_default().to_owned();
    assert!(
        warning.starts_with("the failed dates are not consecutive: the retry is 2 backfills"),
        "{v}"
    );
    let retries: Vec<String> = d
        .ctl_json(&["list", "--json"])
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|b| b["retry_of"] == partial.as_str())
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.contains(&retry) && retries.iter().all(|id| warning.contains(id.as_str())));
    let text = d.ctl(&["status", &retry]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&format!("retry of: {partial}")),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let mut rerun = Vec::new();
    for id in &retries {
        let done = d.wait_finished(id, BIG);
        assert_eq!(done["state"], "success", "{done}");
        rerun.extend(runs(&af, id));
    }
    rerun.sort();
    assert_eq!(
        rerun,
        vec![
            ("2024-07-01".to_owned(), "success".to_owned()),
            ("2024-07-03".to_owned(), "success".to_owned())
        ]
    );
    assert_eq!(
        runs(&af, &partial),
        before,
        "the first backfill is untouched"
    );
    let (v, code) = operate(&d, "retry", &retry);
    assert_eq!(code, Some(1), "nothing failed: {v}");

    // 6. list filters.
    let ids = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        d.ctl_json(&all)
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|b| b["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        ids(&["--dag", DAG, "--state", "failed"]),
        BTreeSet::from([running.clone(), partial.clone()])
    );
    assert_eq!(
        ids(&["--state", "cancelled"]),
        BTreeSet::from([early.clone()])
    );
    assert!(ids(&["--dag", "sales"]).is_empty());
    assert!(ids(&["--since", "2999-01-01"]).is_empty());
    // early, running, partial and its two retries; --all adds the deleted one.
    assert_eq!(ids(&["--since", "2000-01-01"]).len(), 5);
    assert_eq!(ids(&["--since", "2000-01-01", "--all"]).len(), 6);
    // Paging: pages of 1 and 2 print exactly what one page prints (JSON and table), and a
    // client older than paging (no limit) still gets the whole list in one answer.
    for args in [&["list", "--all", "--json"][..], &["list", "--all"][..]] {
        let whole = d.ctl(args);
        assert!(whole.status.success(), "{whole:?}");
        for size in ["1", "2"] {
            let mut paged = args.to_vec();
            paged.extend(["--page-size", size]);
            let out = d.ctl(&paged);
            assert!(out.status.success(), "{out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&whole.stdout),
                "{paged:?}"
            );
        }
    }
    let old_client = backfilld::control::call(
        &d.spool.join("public/control.sock"),
        &backfilld::control::ControlRequest::List {
            filter: backfilld::control::ListFilter {
                all: true,
                ..Default::default()
            },
            limit: None,
            cursor: None,
        },
        Duration::from_secs(60),
    );
    let listed: Vec<String> = match old_client {
        Ok(backfilld::control::ControlResponse::Backfills {
            backfills,
            next: None,
        }) => backfills.into_iter().map(|b| b.id).collect(),
        other => panic!("{other:?}"),
    };
    let want: Vec<String> = d
        .ctl_json(&["list", "--all", "--json"])
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(listed, want);

    // 7. scheduled_at: no copy before the time; a scheduled backfill cancelled before its
    //    time never gets a copy. delete_after_days = 0: deleted as soon as it finished.
    let at = |secs: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let later = d.submit_accepted(DAG, "2024-08-01", "2024-08-01", &["--at", &at(15)]);
    let soon_at = at(8);
    let soon = d.submit_accepted(
        DAG,
        "2024-08-02",
        "2024-08-02",
        &["--at", &soon_at, "--delete-after-days", "0"],
    );
    let s = status(&d, &soon);
    assert_eq!(s["scheduled_at"], soon_at.as_str(), "{s}");
    std::thread::sleep(Duration::from_secs(3));
    for id in [&later, &soon] {
        assert_eq!(status(&d, id)["state"], "submitted");
        assert!(
            !copy_path(&af, id).exists(),
            "{id} has a copy before its time"
        );
    }
    let (v, code) = operate(&d, "cancel", &later);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(status(&d, &later)["state"], "cancelled");
    wait_for("the scheduled copy", Duration::from_secs(30), || {
        copy_path(&af, &soon).exists().then_some(())
    });
    let soon_time =
        chrono::DateTime::parse_from_rfc3339(&soon_at).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        chrono::Utc::now() >= soon_time,
        "the copy came before its time"
    );
    let row = wait_for("the automatic deletion", BIG, || {
        let all = d.ctl_json(&["list", "--all", "--json"]);
        all.as_array()
            .and_then(|l| l.iter().find(|b| b["id"] == soon.as_str()).cloned())
            .filter(|b| b["deleted"] == true)
    });
    assert_eq!(row["state"], "success", "{row}");
    assert!(!copy_path(&af, &soon).exists());
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        !copy_path(&af, &later).exists(),
        "a scheduled backfill cancelled before its time never gets a copy"
    );
    assert!(runs(&af, &later).is_empty());

    // 8. reprocess, against runs the origin DAG really has: 09-01 succeeded, 09-02 failed.
    let fail_dir = af.home.join("origin-fail");
    std::fs::create_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(fail_dir.join("2024-09-02"), "").unwrap_or_else(|e| panic!("{e}"));
    let conf = serde_json::json!({"fail_dir": fail_dir.display().to_string()}).to_string();
    af.cli_ok(&["dags", "test", DAG, "2024-09-01"]);
    let out = af.cli(&["dags", "test", "-c", &conf, DAG, "2024-09-02"]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        runs(&af, DAG),
        vec![
            ("2024-09-01".to_owned(), "success".to_owned()),
            ("2024-09-02".to_owned(), "failed".to_owned())
        ],
        "{text}"
    );
    std::fs::remove_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    let dry = |mode: &str| {
        d.ctl_json(&[
            "submit",
            "--json",
            "--dag",
            DAG,
            "--start",
            "2024-09-01",
            "--end",
            "2024-09-04",
            "--dry-run",
            "--reprocess",
            mode,
        ])
    };
    let day = |d: &str| format!("2024-09-{d}T00:00:00Z");
    let v = dry("none");
    assert_eq!(v["dates"], serde_json::json!([day("03"), day("04")]), "{v}");
    assert_eq!(
        v["skipped_dates"],
        serde_json::json!([day("01"), day("02")]),
        "{v}"
    );
    let v = dry("completed");
    assert_eq!(v["dates"].as_array().map(Vec::len), Some(4), "{v}");
    assert!(v["skipped_dates"].is_null(), "{v}");
    let table = d.ctl(&[
        "submit",
        "--dag",
        DAG,
        "--start",
        "2024-09-01",
        "--end",
        "2024-09-04",
        "--dry-run",
        "--reprocess",
        "failed",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("3 logical dates would run, 1 skipped")
            && text.contains("skipped: the DAG already ran it"),
        "{text}"
    );
    let out = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        DAG,
        "--start",
        "2024-09-01",
        "--end",
        "2024-09-04",
        "--reprocess",
        "failed",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    assert_eq!(
        out["skipped_dates"],
        serde_json::json!([day("01")]),
        "{out}"
    );
    let id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    let done = d.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["reprocess"], "failed", "{done}");
    assert_eq!(
        done["skipped_dates"],
        serde_json::json!([day("01")]),
        "{done}"
    );
    assert_eq!(
        runs(&af, &id).into_iter().map(|r| r.0).collect::<Vec<_>>(),
        vec!["2024-09-02", "2024-09-03", "2024-09-04"],
        "Airflow ran exactly the dates not skipped"
    );
    // Origin dates inside the range are skipped too (here both: `none`); backfilld then names
    // each run of the copy (catchup could only run the whole range), oldest first.
    let v = stdout_json(&d.ctl(&[
        "submit",
        "--json",
        "--dag",
        DAG,
        "--start",
        "2024-08-30",
        "--end",
        "2024-09-03",
        "--reprocess",
        "none",
        "--ignore-overlap",
    ]));
    assert_eq!(v["outcome"], "accepted", "{v}");
    assert_eq!(
        v["skipped_dates"],
        serde_json::json!([day("01"), day("02")]),
        "{v}"
    );
    let gap = v["backfill_id"].as_str().unwrap_or_default().to_owned();
    let done = d.wait_finished(&gap, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["run_order"], "oldest_first", "{done}");
    assert_eq!(done["dates_total"], 3, "{done}");
    assert_eq!(
        runs(&af, &gap).into_iter().map(|r| r.0).collect::<Vec<_>>(),
        vec!["2024-08-30", "2024-08-31", "2024-09-03"],
        "Airflow ran the dates around the skipped ones, and not them"
    );

    run_backwards_scenario(&af, &d);
    newest_date_skipped_scenario(&af, &d);
}

/// `run_backwards`: backfilld names the copy's runs newest first, one at a time with
/// `max_active_runs = 1`; checked against the order in which Airflow created and started them.
fn run_backwards_scenario(af: &Airflow, d: &Daemon) {
    let day = |d: &str| format!("2024-10-{d}T00:00:00Z");
    let (start, end) = ("2024-10-01", "2024-10-04");
    let dry = d.submit(DAG, start, end, &["--backwards", "--dry-run"]);
    assert_eq!(dry["outcome"], "accepted", "{dry}");
    assert_eq!(
        dry["dates"],
        serde_json::json!([day("04"), day("03"), day("02"), day("01")]),
        "a dry run lists the dates in the order they would run: {dry}"
    );
    let id = d.submit_accepted(DAG, start, end, &["--backwards", "--max-active-runs", "1"]);
    let done = d.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["run_order"], "newest_first", "{done}");
    assert_eq!(done["dates_succeeded"], 4, "{done}");
    let newest_first = vec!["2024-10-04", "2024-10-03", "2024-10-02", "2024-10-01"];
    assert_eq!(
        af.run_dates_by(&id, "id"),
        newest_first,
        "created newest first"
    );
    assert_eq!(
        af.run_dates_by(&id, "start_date"),
        newest_first,
        "started newest first"
    );
}

/// A steered copy runs exactly backfilld's dates, not the one Airflow plans by itself: with
/// `catchup=False` Airflow plans the newest date already due (2.11: yesterday, the latest
/// complete interval; 3.x: today 00:00, `@daily` is a `CronTriggerTimetable`) whenever it is
/// inside the copy's dates. Here the origin DAG already ran that date, so `reprocess = "failed"`
/// skips it, and the backfill runs backwards (steered): the copy ends at the date before
/// (`dagcopy::copy_bounds`), so Airflow plans nothing and only the two dates left run.
fn newest_date_skipped_scenario(af: &Airflow, d: &Daemon) {
    let started = Instant::now();
    let today = chrono::Utc::now().date_naive();
    let newest = if af.major.is_v3() {
        today
    } else {
        today - chrono::Days::new(1)
    };
    let day = |back: u64| (newest - chrono::Days::new(back)).to_string();
    af.cli_ok(&["dags", "test", DAG, &day(0)]);
    let origin = runs(af, DAG);
    assert!(
        origin.contains(&(day(0), "success".to_owned())),
        "{origin:?}"
    );
    // Reaching two dates past it, not due yet, the skipped date would be planned by Airflow
    // (it is the newest due date): the outcome warns.
    let ahead = (newest + chrono::Days::new(2)).to_string();
    let dry = d.submit(
        DAG,
        &day(2),
        &ahead,
        &["--reprocess", "failed", "--dry-run"],
    );
    assert_eq!(dry["outcome"], "accepted", "{dry}");
    let warned = format!("reprocess skips {}T00:00:00Z, but a later date", day(0));
    assert!(
        dry["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.starts_with(&warned)))),
        "{dry}"
    );
    let out = d.submit(
        DAG,
        &day(2),
        &day(0),
        &[
            "--reprocess",
            "failed",
            "--backwards",
            "--max-active-runs",
            "1",
        ],
    );
    assert_eq!(out["outcome"], "accepted", "{out}");
    assert_eq!(
        out["skipped_dates"],
        serde_json::json!([format!("{}T00:00:00Z", day(0))]),
        "{out}"
    );
    assert!(
        out["warnings"].is_null(),
        "ending at the skipped date: {out}"
    );
    let id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    let done = d.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["run_order"], "newest_first", "{done}");
    assert_eq!(done["dates_total"], 2, "{done}");
    assert_eq!(
        af.run_dates_by(&id, "id"),
        vec![day(1), day(2)],
        "the copy ran exactly the dates backfilld lists, newest first, and not {}",
        day(0)
    );
    assert_eq!(
        af.query_i64(&format!(
            "SELECT COUNT(*) FROM dag WHERE dag_id = '{id}' AND next_dagrun IS NOT NULL"
        )),
        0,
        "Airflow plans no date of the copy by itself"
    );
    // A range reaching one date past the newest due one, newest first (steered: backfilld
    // creates the runs): the due dates run, the date whose interval has not ended gets no run
    // (it is created once due, as a catchup copy's would be).
    let next = (newest + chrono::Days::new(1)).to_string();
    let id = d.submit_accepted(
        DAG,
        &day(1),
        &next,
        &[
            "--reprocess",
            "completed",
            "--backwards",
            "--max-active-runs",
            "3",
        ],
    );
    let due = wait_for("the due dates of a range reaching past them", BIG, || {
        let ok = af.query_i64(&format!(
            "SELECT COUNT(*) FROM dag_run WHERE dag_id = '{id}' AND state = 'success'"
        ));
        (ok >= 2).then_some(ok)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(due, 2);
    assert_eq!(
        af.run_dates_by(&id, af.date_column()),
        vec![day(1), day(0)],
        "only the due dates have runs, not {next}\n{}",
        d.log_text()
    );
    let (cancelled, code) = operate(d, "cancel", &id);
    assert_eq!(code, Some(0), "{cancelled}");
    eprintln!(
        "newest_date_skipped_scenario ({:?}): {:.1} s",
        af.major,
        started.elapsed().as_secs_f64()
    );
}

/// The same life cycle on the newest Airflow 3 (3.3) with SQLite (`dag_run.logical_date`,
/// task-instance ids, DAG versions, the 3.2+ tables a delete clears): pause, resume, cancel
/// while running, delete, then running backwards, and a steered copy whose newest date is
/// skipped ([`newest_date_skipped_scenario`]). Airflow 3.1 runs it on PostgreSQL
/// (`lifecycle_on_postgres_and_mysql`); `BACKFILLD_IT_AIRFLOW3=newest` runs that on 3.3 too.
#[test]
fn lifecycle_on_airflow33_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V3Newest, "lifecycle_af33");
    let d = lifecycle_scenario(&mut af);
    newest_date_skipped_scenario(&af, &d);
}

/// Tables of Airflow's DB (any backend) with a `dag_id` column.
fn dag_id_tables_any(af: &Airflow) -> Vec<String> {
    let sql = match af.db {
        crate::support::MetaDbKind::Sqlite => "SELECT m.name FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND p.name = 'dag_id' \
             ORDER BY m.name"
            .to_owned(),
        crate::support::MetaDbKind::Mysql(_) => {
            "SELECT table_name FROM information_schema.columns \
             WHERE column_name = 'dag_id' AND table_schema = DATABASE() ORDER BY table_name"
                .to_owned()
        }
        crate::support::MetaDbKind::Postgres(_) => {
            "SELECT table_name FROM information_schema.columns \
             WHERE column_name = 'dag_id' AND table_schema = 'public' ORDER BY table_name"
                .to_owned()
        }
    };
    af.query(&sql)
        .into_iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
}

/// Pause, resume, cancel while running and delete, every check made through SQLAlchemy in
/// Airflow's venv (backend-neutral SQL): the life-cycle statements backfilld sends (pause
/// flags, Airflow-style mark failed, `airflow dags delete`-style removal) on each backend's
/// types and quoting.
fn lifecycle_scenario(af: &mut Airflow) -> Daemon {
    af.start_scheduler();
    af.wait_parsed(DAG, BIG);
    let d = Daemon::start(af, &[]);
    let id = d.submit_accepted(DAG, "2024-05-01", "2024-05-03", &["--param", "sleep=12"]);
    let ti_states = |af: &Airflow| -> Vec<String> {
        af.query(&format!(
            "SELECT COALESCE(state, '') FROM task_instance WHERE dag_id = '{id}'"
        ))
        .into_iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
    };
    let run_states = |af: &Airflow| -> Vec<String> {
        let col = af.date_column();
        af.query(&format!(
            "SELECT state FROM dag_run WHERE dag_id = '{id}' ORDER BY {col}"
        ))
        .into_iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
    };
    let paused = |af: &Airflow| {
        af.query_i64(&format!(
            "SELECT COUNT(*) FROM dag WHERE dag_id = '{id}' AND is_paused"
        ))
    };
    wait_for("a running task", BIG, || {
        ti_states(af).iter().any(|s| s == "running").then_some(())
    });
    let (v, code) = operate(&d, "pause", &id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(status(&d, &id)["state"], "paused");
    assert_eq!(paused(af), 1);
    let (v, code) = operate(&d, "resume", &id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(paused(af), 0);
    wait_for("a finished date and a running task", BIG, || {
        let s = status(&d, &id);
        (s["dates_succeeded"] == 1 && ti_states(af).iter().any(|t| t == "running")).then_some(())
    });
    let (v, code) = operate(&d, "cancel", &id);
    assert_eq!(code, Some(0), "{v}");
    wait_for("the copy to stop", Duration::from_secs(10), || {
        let busy = ti_states(af)
            .iter()
            .any(|t| matches!(t.as_str(), "running" | "queued" | "scheduled" | ""));
        let runs_busy = run_states(af)
            .iter()
            .any(|r| matches!(r.as_str(), "running" | "queued"));
        (!busy && !runs_busy).then_some(())
    });
    let s = status(&d, &id);
    assert_cancelled_after_one_success(&s);
    std::thread::sleep(Duration::from_secs(10));
    let r = run_states(af);
    assert_eq!(r.first().map(String::as_str), Some("success"), "{r:?}");
    assert!(r.iter().skip(1).all(|s| s == "failed"), "{r:?}");

    let (v, code) = operate(&d, "delete", &id);
    assert_eq!(code, Some(0), "{v}");
    assert!(!copy_path(af, &id).exists());
    let tables = dag_id_tables_any(af);
    assert!(tables.iter().any(|t| t == "dag_run"), "{tables:?}");
    if af.major.is_v3() {
        assert!(tables.iter().any(|t| t == "dag_version"), "{tables:?}");
    }
    let left = |af: &Airflow| -> Vec<String> {
        tables
            .iter()
            .filter(|t| *t != "log")
            .filter(|t| {
                af.query_i64(&format!("SELECT COUNT(*) FROM {t} WHERE dag_id = '{id}'")) > 0
            })
            .cloned()
            .collect()
    };
    wait_for(
        "Airflow's rows of the copy to go",
        Duration::from_secs(60),
        || left(af).is_empty().then_some(()),
    );
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(left(af), Vec::<String>::new());
    assert_eq!(
        af.query_i64(&format!("SELECT COUNT(*) FROM dag WHERE dag_id = '{DAG}'")),
        1
    );
    let all = d.ctl_json(&["list", "--all", "--json"]);
    assert!(
        all.as_array().is_some_and(|l| l
            .iter()
            .any(|b| b["id"] == id.as_str() && b["deleted"] == true)),
        "{all}"
    );

    run_backwards_scenario(af, &d);
    d
}

/// The server-DB life cycle on PostgreSQL with Airflow 3.1, then on MariaDB with Airflow 2.11
/// (one after the other: one scheduler at a time).
#[test]
fn lifecycle_on_postgres_and_mysql() {
    let mut af = Airflow::postgres(AirflowMajor::V3, "lifecycle_pg_af3");
    lifecycle_scenario(&mut af);
    drop(af);
    let mut af = Airflow::mysql(AirflowMajor::V2, "lifecycle_mysql_af2");
    lifecycle_scenario(&mut af);
}
