//! Issue 2's end-to-end acceptance on real Airflow 2.11 with SQLite: request file → DAG copy →
//! runs by the real scheduler → reconciled state, a failing range, and a kill -9 between
//! accept and DAG write. Issue 21's notifications ride along: a webhook that fails once, a
//! Slack-style webhook and email through Airflow's SMTP settings, each sent once.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon, Hook, SmtpSink, WebhookSink};

const BIG: Duration = Duration::from_secs(420);

fn run_dates(af: &Airflow, dag_id: &str) -> Vec<String> {
    let c = af.sql();
    let mut st = c
        .prepare("SELECT execution_date FROM dag_run WHERE dag_id = ?1 ORDER BY execution_date")
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = st
        .query_map([dag_id], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{e}"));
    rows.map(|r| r.unwrap_or_default()[..10].to_owned())
        .collect()
}

#[test]
fn core_loop_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "core_loop_af2");
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    // Notifications (issue 21): a config webhook that answers 500 once, request webhooks
    // under the allowed prefix, email through Airflow's [smtp] settings (environment).
    let hooks = WebhookSink::start(1);
    let smtp = SmtpSink::start();
    let hp = hooks.port;
    let smtp_port = smtp.port.to_string();
    let smtp_env = [
        ("AIRFLOW__SMTP__SMTP_HOST", "127.0.0.1"),
        ("AIRFLOW__SMTP__SMTP_PORT", smtp_port.as_str()),
        ("AIRFLOW__SMTP__SMTP_STARTTLS", "False"),
        (
            "AIRFLOW__SMTP__SMTP_MAIL_FROM",
            "Airflow <airflow@example.com>",
        ),
    ];
    let mut daemon = Daemon::start_with(
        &af,
        &smtp_env,
        &format!(
            "\n[http]\npublic_url = \"https://af.example.com\"\n\n[notifications]\nwebhooks = [\"http://127.0.0.1:{hp}/ops\"]\nallowed_webhook_prefixes = [\"http://127.0.0.1:{hp}/\"]\nretry_backoff_secs = 1\n\n[approval]\nover_dates = 10\n"
        ),
    );
    let mine = format!("http://127.0.0.1:{hp}/mine");

    // 1. A request through backfillctl: three daily dates with a param override.
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-03",
        "--max-active-runs",
        "2",
        "--param",
        "region=eu",
        "--description",
        "recompute March",
        "--notify",
        "mailto:alice@example.com",
        "--notify",
        &mine,
        "--json",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("sales_backfill_"), "{id}");
    let copy = af
        .dags_folder()
        .join("backfill_user_dags")
        .join(format!("{id}.py"));
    wait_for("the DAG copy", Duration::from_secs(30), || {
        copy.exists().then_some(())
    });

    let done = daemon.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(done["dates_total"], 3);
    assert_eq!(done["dates_succeeded"], 3);
    assert_eq!(done["dates_failed"], 0);
    assert!(
        done["run_start"].is_string() && done["run_end"].is_string(),
        "{done}"
    );
    // Exactly the expected logical dates, each once; none for the origin DAG.
    assert_eq!(
        run_dates(&af, &id),
        vec!["2024-03-01", "2024-03-02", "2024-03-03"]
    );
    assert!(
        run_dates(&af, "sales").is_empty(),
        "the origin DAG must not run"
    );
    // The param override reached the task's rendered command.
    let rendered: Vec<String> = {
        let c = af.sql();
        let mut st = c
            .prepare("SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ?1 AND task_id = 'extract'")
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = st
            .query_map([&id], |r| r.get::<_, String>(0))
            .unwrap_or_else(|e| panic!("{e}"));
        rows.map(|r| r.unwrap_or_default()).collect()
    };
    assert_eq!(rendered.len(), 3, "{rendered:?}");
    assert!(
        rendered.iter().all(|r| r.contains("region=eu")),
        "{rendered:?}"
    );
    // No import error for the copy.
    assert_eq!(af.count("SELECT COUNT(*) FROM import_error", &[]), 0);
    // list --json shows it.
    let list = daemon.ctl_json(&["list", "--json"]);
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|b| b["id"] == id.as_str())),
        "{list}"
    );

    // 2. A range whose task fails ends failed, with counts.
    daemon.drop_request(
        "sales-2023.toml",
        &format!("dag_id = \"sales\"\nstart = 2023-06-01\nend = 2023-06-02\nmax_active_runs = 2\nnotify = [\"slack:http://127.0.0.1:{hp}/slack\"]\n"),
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
    let done = daemon.wait_finished(&failing, BIG);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["dates_total"], 2);
    assert_eq!(done["dates_failed"], 2);
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("2 of 2 logical dates failed"),
        "{done}"
    );

    // 3. A copy Airflow refuses to import fails the backfill with Airflow's own message.
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
    let done = daemon.wait_finished(&broken, BIG);
    assert_eq!(done["state"], "failed", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Airflow could not import the DAG copy"),
        "{reason}"
    );
    assert!(
        reason.contains("mars"),
        "Airflow's message names the bad value: {reason}"
    );

    // 3b. Notifications: a webhook outside the allowed prefixes is refused; a cancel and a
    // backfill waiting for approval are told too; each event reaches each recipient once,
    // the failing endpoint after a retry.
    let out = daemon.ctl(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-05-01",
        "--end",
        "2024-05-01",
        "--dry-run",
        "--notify",
        "http://169.254.169.254/latest",
        "--json",
    ]);
    let refused: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(refused["outcome"], "rejected", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed_webhook_prefixes"),
        "{refused}"
    );
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-01",
        "--at",
        "2030-01-01T00:00:00Z",
        "--json",
    ]);
    let later = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    let out = daemon.ctl_json(&["cancel", &later, "--json"]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2025-02-01",
        "--end",
        "2025-02-12",
        "--json",
    ]);
    let big = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    wait_for(
        "the approval-needed notification",
        Duration::from_secs(60),
        || {
            hooks
                .hooks()
                .iter()
                .any(|h| h.body["backfill_id"] == big.as_str() && h.status == 200)
                .then_some(())
        },
    );
    let out = daemon.ctl_json(&["cancel", &big, "--json"]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    wait_for("six sent marks", Duration::from_secs(60), || {
        (af.count("SELECT COUNT(*) FROM backfilld_notification", &[]) >= 6).then_some(())
    });
    let told = |hooks: &[Hook], path: &str| -> Vec<(String, String)> {
        hooks
            .iter()
            .filter(|h| h.path == path && h.status == 200)
            .map(|h| {
                (
                    h.body["backfill_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    h.body["event"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let all = hooks.hooks();
    let mut ops = told(&all, "/ops");
    ops.sort();
    let mut want: Vec<(String, String)> = [
        (&id, "success"),
        (&failing, "failure"),
        (&broken, "failure"),
        (&later, "cancel"),
        (&big, "approval_needed"),
        (&big, "cancel"),
    ]
    .iter()
    .map(|(i, e)| ((*i).clone(), (*e).to_owned()))
    .collect();
    want.sort();
    assert_eq!(ops, want, "{all:#?}");
    assert_eq!(
        (all[0].path.as_str(), all[0].status),
        ("/ops", 500),
        "the first POST failed and was retried: {all:#?}"
    );
    let first = all
        .iter()
        .find(|h| h.path == "/mine")
        .map(|h| h.body.clone());
    let first = first.unwrap_or_default();
    assert_eq!(first["event"], "success", "{first}");
    assert_eq!(first["dag_id"], "sales");
    assert_eq!(first["state"], "success");
    assert_eq!(first["counts"]["total"], 3);
    assert_eq!(first["counts"]["succeeded"], 3);
    assert_eq!(
        first["link"],
        format!("https://af.example.com/backfills/{id}").as_str()
    );
    assert_eq!(all.iter().filter(|h| h.path == "/mine").count(), 1);
    let slack: Vec<&Hook> = all.iter().filter(|h| h.path == "/slack").collect();
    assert_eq!(slack.len(), 1, "{all:#?}");
    let text = slack[0].body["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&failing)
            && text.contains("failed")
            && text.contains("2 of 2 logical dates failed"),
        "{text}"
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].to, ["alice@example.com"]);
    assert!(
        mails[0]
            .data
            .contains(&format!("Subject: [backfilld] Backfill {id} succeeded")),
        "{}",
        mails[0].data
    );

    // 4. kill -9 between accept and DAG write: one row, one copy, completes once after restart.
    let mut env = vec![("BACKFILLD_FAILPOINTS", "after_accept")];
    env.extend(smtp_env);
    daemon.restart(&env);
    daemon.drop_request(
        "sales-crash.toml",
        "dag_id = \"sales\"\nstart = 2024-04-01\nend = 2024-04-02\n",
    );
    wait_for("the failpoint", Duration::from_secs(60), || {
        daemon
            .log_text()
            .contains("failpoint reached")
            .then_some(())
    });
    daemon.kill9();
    let rows = af.count(
        "SELECT COUNT(*) FROM backfilld_backfill WHERE start_date LIKE '2024-04-01%'",
        &[],
    );
    assert_eq!(rows, 1, "the accept committed before the crash");
    let crash_id: String = af
        .sql()
        .query_row(
            "SELECT id FROM backfilld_backfill WHERE start_date LIKE '2024-04-01%'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let copy = af
        .dags_folder()
        .join("backfill_user_dags")
        .join(format!("{crash_id}.py"));
    assert!(!copy.exists(), "the crash came before the DAG write");
    daemon.restart(&smtp_env);
    let done = daemon.wait_finished(&crash_id, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_backfill WHERE start_date LIKE '2024-04-01%'",
            &[]
        ),
        1
    );
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_request WHERE file_name = 'sales-crash.toml'",
            &[]
        ),
        1
    );
    let copies: BTreeSet<String> = std::fs::read_dir(af.dags_folder().join("backfill_user_dags"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(&crash_id))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(run_dates(&af, &crash_id), vec!["2024-04-01", "2024-04-02"]);
    // The file ended in accepted/ with its receipt; nothing is left in active/.
    let accepted: Vec<String> = std::fs::read_dir(daemon.spool.join("accepted"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        accepted
            .iter()
            .any(|n| n.ends_with("sales-crash.toml.receipt.json")),
        "{accepted:?}"
    );
    assert_eq!(
        std::fs::read_dir(daemon.spool.join("active"))
            .map(|d| d.count())
            .unwrap_or(99),
        0
    );

    // 5. Time estimates (issue 21): a dry run estimates from the runs `sales` had (its
    // backfills' copies: the origin itself never runs here); once a third of the dates are
    // done, `status` estimates from the backfill's own pace, within a factor of 1.5 of the
    // time it really took.
    let dry = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-06",
        "--max-active-runs",
        "2",
        "--dry-run",
        "--json",
    ]);
    let basis = dry["estimate"]["basis"].as_str().unwrap_or_default();
    assert!(
        basis.starts_with("median of the last ") && basis.ends_with("2 at a time"),
        "{dry}"
    );
    assert!(
        dry["estimate"]["remaining_secs"]
            .as_u64()
            .is_some_and(|s| s > 0),
        "{dry}"
    );
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-06",
        "--max-active-runs",
        "2",
        "--json",
    ]);
    let eta_id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    let (third_at, estimate) = wait_for("a third of the dates done", BIG, || {
        let s = daemon.ctl_json(&["status", &eta_id, "--json"]);
        let done = s["dates_succeeded"].as_u64()? + s["dates_failed"].as_u64()?;
        (done >= 2).then(|| (std::time::Instant::now(), s["estimate"].clone()))
    });
    assert!(
        estimate["basis"]
            .as_str()
            .is_some_and(|b| b.starts_with("this backfill's pace so far: ")),
        "{estimate}"
    );
    let estimated = estimate["remaining_secs"].as_f64().unwrap_or_default();
    let done = daemon.wait_finished(&eta_id, BIG);
    assert_eq!(done["state"], "success", "{done}");
    assert!(
        done.get("estimate").is_none(),
        "a finished backfill has no estimate: {done}"
    );
    let actual = third_at.elapsed().as_secs_f64();
    assert!(
        estimated <= actual * 1.5 && estimated >= actual / 1.5,
        "estimated {estimated:.0} s left after a third of the dates; it took {actual:.0} s ({estimate})"
    );

    // Notifications across the restarts: every event once at the config webhook, none twice.
    wait_for("the last notifications", Duration::from_secs(60), || {
        let ops = told(&hooks.hooks(), "/ops");
        [&crash_id, &eta_id]
            .iter()
            .all(|i| ops.iter().any(|(b, _)| b == *i))
            .then_some(())
    });
    // A pass and a half more: nothing is sent again.
    std::thread::sleep(Duration::from_secs(3));
    let all = hooks.hooks();
    let ops = told(&all, "/ops");
    let distinct: BTreeSet<&(String, String)> = ops.iter().collect();
    assert_eq!(
        distinct.len(),
        ops.len(),
        "a notification was sent twice: {all:#?}"
    );
    assert_eq!(ops.len(), 8, "{all:#?}");
    assert_eq!(all.iter().filter(|h| h.status != 200).count(), 1);
    assert_eq!(smtp.mails().len(), 1);
}
