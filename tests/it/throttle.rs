//! Issue 6's throttling acceptance on real Airflow 2.11, 3.1 and the newest 3.x (3.3) with
//! PostgreSQL and the LocalExecutor (runs in parallel), `[throttle] max_running_backfill_runs = 2`:
//! - three backfills at once, each asking `max_active_runs = 3` (above the budget): each is
//!   narrowed to 2 with a warning and steered (backfilld names every run); queued + running
//!   backfill runs, sampled every 100 ms, never exceed 2; turns alternate (every backfill's
//!   first run starts before any backfill's last run ends); the ones that wait say why, never
//!   while the budget is free; all three succeed; prints how fast a freed slot got its next
//!   run;
//! - the same with three ranges ending at the newest due date (2.11: yesterday; 3.x: today
//!   00:00), the date Airflow plans by itself for a `catchup=False` copy (issue 20): still
//!   never more than 2, and that date is each copy's first run (a copy stays paused until its
//!   turn);
//! - a backfill of a DAG with a run of its own queued holds ("yielding to scheduled run of
//!   sales ...") until that run finished;
//! - a backfill its user paused stays paused through throttling passes;
//! - among waiting backfills, a higher `priority` gets the next free slot first;
//! - a steered backfill its user paused before it ever had a turn, resumed while the budget is
//!   full, waits for a turn (handed back to the throttle), then runs and finishes within the
//!   budget;
//! - the budget removed (`[throttle]` dropped from the config, SIGHUP): a copy the throttle
//!   paused is released and finishes while the runs it waited for still hold the old budget;
//!   a copy its user paused stays paused until resumed.

use std::time::{Duration, Instant};

use backfilld::dburl::DbUrl;
use backfilld::metadb::{IntRow, MetaDb};
use nix::sys::signal::Signal;

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(600);

/// The run budget, appended to the daemon's config (section 5 removes it).
const BUDGET: &str = "\n[throttle]\nmax_running_backfill_runs = 2\n";

/// Queued + running runs of every copy of `lifecycle_demo`.
const ACTIVE: &str = "SELECT COUNT(*) AS value FROM dag_run \
    WHERE dag_id LIKE 'lifecycle_demo_backfill_%' AND state IN ('queued', 'running')";

fn count(db: &mut MetaDb, sql: &str) -> i64 {
    let rows: Vec<IntRow> = db.load(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.first().map_or(-1, |r| r.value)
}

fn submit(d: &Daemon, dag: &str, start: &str, end: &str, extra: &[&str]) -> String {
    let v = submit_json(d, dag, start, end, extra);
    v["backfill_id"].as_str().unwrap_or_default().to_owned()
}

/// Submit and return the whole accepted outcome.
fn submit_json(d: &Daemon, dag: &str, start: &str, end: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "submit", "--json", "--dag", dag, "--start", start, "--end", end,
    ];
    args.extend_from_slice(extra);
    let v = d.ctl_json(&args);
    assert_eq!(v["outcome"], "accepted", "{v}");
    v
}

fn status(d: &Daemon, id: &str) -> serde_json::Value {
    d.ctl_json(&["status", id, "--json"])
}

#[test]
fn throttle_on_airflow2_postgres() {
    throttle_scenario(AirflowMajor::V2, "throttle_af2");
}

#[test]
fn throttle_on_airflow3_postgres() {
    throttle_scenario(AirflowMajor::V3, "throttle_af3");
}

/// On the newest Airflow 3 release (PostgreSQL: 3.3.2's scheduler fails on MariaDB).
#[test]
fn throttle_on_airflow33_postgres() {
    throttle_scenario(AirflowMajor::V3Newest, "throttle_af33");
}

fn throttle_scenario(major: AirflowMajor, name: &str) {
    let whole = Instant::now();
    let mut af = Airflow::postgres(major, name);
    af.start_scheduler();
    af.wait_parsed("lifecycle_demo", BIG);
    af.wait_parsed("sales", BIG);
    let mut daemon = Daemon::start_with(&af, &[], BUDGET);
    let url = DbUrl::parse(&af.conn_url()).unwrap_or_else(|e| panic!("{e}"));
    let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{e}"));

    // 1. Budget: three backfills of slow runs at once, each asking for more runs at a time
    //    than the whole budget: each is narrowed to the budget (the outcome says so) and none
    //    waits forever (they used to wait with "global budget 0/2").
    let wide = ["--max-active-runs", "3", "--param", "sleep=4"];
    let started = Instant::now();
    let ids: Vec<String> = [
        ("2024-03-01", "2024-03-03"),
        ("2024-04-01", "2024-04-03"),
        ("2024-05-01", "2024-05-03"),
    ]
    .iter()
    .map(|(s, e)| {
        let v = submit_json(&daemon, "lifecycle_demo", s, e, &wide);
        assert!(
            v["warnings"].as_array().is_some_and(|w| w.iter().any(|w| w
                == "max_active_runs 3 is above the [throttle] budget max_running_backfill_runs = 2: \
                    the copy runs at most 2 at a time")),
            "{v}"
        );
        v["backfill_id"].as_str().unwrap_or_default().to_owned()
    })
    .collect();
    watch_budget(&daemon, &mut db, &ids, "3 backfills x 3 dates", started);
    let copies = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // How fast a freed slot gets its next run: from the end of the last run that ended before
    // a run was created to that run's creation (`queued_at`), over the runs created once the
    // budget was full.
    let gaps = |agg: &str| {
        format!(
            "SELECT CAST({agg}(gap) AS BIGINT) AS value FROM (SELECT EXTRACT(EPOCH FROM \
             r.queued_at - (SELECT MAX(o.end_date) FROM dag_run o WHERE o.dag_id IN ({copies}) \
             AND o.end_date <= r.queued_at)) * 1000 AS gap FROM dag_run r WHERE r.dag_id IN \
             ({copies})) x WHERE gap IS NOT NULL"
        )
    };
    eprintln!(
        "throttle: a freed slot got its next run after {} ms on average, {} ms at most",
        count(&mut db, &gaps("AVG")),
        count(&mut db, &gaps("MAX"))
    );

    // 1b. The same where Airflow plans a date by itself (issue 20, the steered-copy gap):
    //     three backfills of the daily DAG whose ranges end at the newest date already due:
    //     on 2.11 the latest complete interval (yesterday, `CronDataIntervalTimetable`), on
    //     3.x the latest trigger (today 00:00: `@daily` is a `CronTriggerTimetable` there).
    //     With `catchup=False` Airflow plans that date for each copy at registration; a copy
    //     unpaused without a turn would get it at once, over the budget. Copies stay paused
    //     until the steering gives them a run, and that date goes first.
    let today = chrono::Utc::now().date_naive();
    let newest = if major.is_v3() {
        today
    } else {
        today - chrono::Days::new(1)
    };
    let first = newest - chrono::Days::new(2);
    let (first, last) = (first.to_string(), newest.to_string());
    let started = Instant::now();
    let latest: Vec<String> = (0..3)
        .map(|_| {
            submit(
                &daemon,
                "lifecycle_demo",
                &first,
                &last,
                &[
                    "--max-active-runs",
                    "3",
                    "--param",
                    "sleep=3",
                    "--ignore-overlap",
                ],
            )
        })
        .collect();
    watch_budget(
        &daemon,
        &mut db,
        &latest,
        "3 backfills x 3 dates ending at the newest due date",
        started,
    );
    // Each copy's first run is the date Airflow planned by itself (the newest), given as
    // its first turn.
    let column = if major.is_v3() {
        "logical_date"
    } else {
        "execution_date"
    };
    let copies = latest
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let newest_first = count(
        &mut db,
        &format!(
            "SELECT COUNT(*) AS value FROM dag_run r WHERE r.dag_id IN ({copies}) \
             AND r.id = (SELECT MIN(f.id) FROM dag_run f WHERE f.dag_id = r.dag_id) \
             AND CAST(r.{column} AT TIME ZONE 'UTC' AS DATE) = DATE '{last}'"
        ),
    );
    assert_eq!(newest_first, 3, "each copy's first run is {last}");

    // 2. Yield: a run of `sales` of its own is queued (the DAG is paused, so it waits): a
    //    backfill of `sales` holds until that run finished.
    let logical_date = if major.is_v3() {
        "--logical-date"
    } else {
        "-e"
    };
    af.cli_ok(&["dags", "trigger", "sales", logical_date, "2024-06-15"]);
    let held = submit(&daemon, "sales", "2024-06-01", "2024-06-02", &[]);
    let why = wait_for("the backfill to yield", Duration::from_secs(120), || {
        let s = status(&daemon, &held);
        s["reason"]
            .as_str()
            .filter(|r| r.starts_with("yielding to scheduled run of sales 2024-06-15"))
            .map(str::to_owned)
    });
    assert_eq!(why, "yielding to scheduled run of sales 2024-06-15");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        count(
            &mut db,
            &format!("SELECT COUNT(*) AS value FROM dag_run WHERE dag_id = '{held}'")
        ),
        0,
        "the backfill started while the scheduled run waited"
    );
    af.cli_ok(&["dags", "unpause", "sales"]);
    let done = daemon.wait_finished(&held, BIG);
    assert_eq!(done["state"], "success", "{done}");
    let order = count(
        &mut db,
        &format!(
            "SELECT COUNT(*) AS value FROM dag_run o, dag_run b WHERE o.dag_id = 'sales' \
             AND b.dag_id = '{held}' AND b.start_date < o.start_date"
        ),
    );
    assert_eq!(order, 0, "a backfill run started before the scheduled run");
    af.cli_ok(&["dags", "pause", "sales"]);

    // 3. A backfill its user paused stays paused through throttling passes.
    let paused = submit(
        &daemon,
        "lifecycle_demo",
        "2024-07-01",
        "2024-07-05",
        &["--max-active-runs", "1", "--param", "sleep=3"],
    );
    wait_for("the backfill to run", BIG, || {
        (status(&daemon, &paused)["dates_succeeded"].as_u64() >= Some(1)).then_some(())
    });
    let out = daemon.ctl(&["pause", &paused, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for("the pause", Duration::from_secs(60), || {
        (status(&daemon, &paused)["state"] == "paused").then_some(())
    });
    let is_paused = format!(
        "SELECT CAST(CASE WHEN is_paused THEN 1 ELSE 0 END AS BIGINT) AS value FROM dag WHERE dag_id = '{paused}'"
    );
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(count(&mut db, &is_paused), 1, "the throttle unpaused it");
        assert_eq!(status(&daemon, &paused)["state"], "paused");
    }
    let out = daemon.ctl(&["resume", &paused, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let done = daemon.wait_finished(&paused, BIG);
    assert_eq!(done["state"], "success", "{done}");

    // 4. Priority: with both slots taken (one short, one long backfill), a plain and then an
    //    urgent backfill wait; the first slot that frees goes to the urgent one. The short
    //    one runs long enough for both waiting copies to register and be held first (a copy
    //    Airflow has not parsed yet is not a candidate).
    let slow = ["--max-active-runs", "1", "--param", "sleep=8"];
    let short = submit(
        &daemon,
        "lifecycle_demo",
        "2024-08-01",
        "2024-08-01",
        &["--max-active-runs", "1", "--param", "sleep=40"],
    );
    let long = submit(&daemon, "lifecycle_demo", "2024-08-10", "2024-08-12", &slow);
    wait_for("both to run", BIG, || {
        (count(&mut db, ACTIVE) == 2).then_some(())
    });
    let plain = submit(&daemon, "lifecycle_demo", "2024-09-01", "2024-09-01", &slow);
    let urgent = submit(
        &daemon,
        "lifecycle_demo",
        "2024-09-10",
        "2024-09-10",
        &[
            "--max-active-runs",
            "1",
            "--param",
            "sleep=8",
            "--priority",
            "9",
        ],
    );
    assert_eq!(status(&daemon, &urgent)["priority"], 9);
    wait_for("both waiting backfills held by the budget", BIG, || {
        [&plain, &urgent]
            .iter()
            .all(|id| {
                status(&daemon, id)["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("waiting for a turn: 2/2"))
            })
            .then_some(())
    });
    assert_eq!(
        status(&daemon, &short)["state"],
        "running",
        "the short backfill finished before both waiters were held: the check proves nothing"
    );
    for id in [&short, &long, &plain, &urgent] {
        let done = daemon.wait_finished(id, BIG);
        assert_eq!(done["state"], "success", "{done}");
    }
    let started_before = count(
        &mut db,
        &format!(
            "SELECT COUNT(*) AS value FROM dag_run u, dag_run p WHERE u.dag_id = '{urgent}' \
             AND p.dag_id = '{plain}' AND u.start_date < p.start_date"
        ),
    );
    assert_eq!(started_before, 1, "the urgent backfill ran first");

    resume_and_release(&mut daemon, &mut db);
    eprintln!(
        "throttle: {name}: the whole scenario took {:.0} s",
        whole.elapsed().as_secs_f64()
    );
}

/// Whether the copy `id` is paused in Airflow (1), unpaused (0) or unregistered (-1).
fn copy_paused(db: &mut MetaDb, id: &str) -> i64 {
    count(
        db,
        &format!(
            "SELECT CAST(CASE WHEN is_paused THEN 1 ELSE 0 END AS BIGINT) AS value FROM dag \
             WHERE dag_id = '{id}'"
        ),
    )
}

/// The runs of the copy `id`.
fn runs_of(db: &mut MetaDb, id: &str) -> i64 {
    count(
        db,
        &format!("SELECT COUNT(*) AS value FROM dag_run WHERE dag_id = '{id}'"),
    )
}

/// Run `backfillctl ACTION id`; it must succeed.
fn act(daemon: &Daemon, action: &str, id: &str) {
    let out = daemon.ctl(&[action, id, "--json"]);
    assert!(
        out.status.success(),
        "{action} {id}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Wait until the backfill `id`'s status reason says it waits for a turn of a full budget.
fn wait_turn(daemon: &Daemon, id: &str) {
    wait_for(&format!("{id} held by the full budget"), BIG, || {
        let s = status(daemon, id);
        (s["state"] != "paused"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("waiting for a turn: 2/2")))
        .then_some(())
    });
}

/// A backfill holding both slots of the budget with runs that would last 5 minutes (cancelled
/// once it has served): returns its id once both its runs are live.
fn blocker(daemon: &Daemon, db: &mut MetaDb, start: &str, end: &str) -> String {
    let id = submit(
        daemon,
        "lifecycle_demo",
        start,
        end,
        &["--max-active-runs", "2", "--param", "sleep=300"],
    );
    wait_for("the blocker to take both slots", BIG, || {
        (count(db, ACTIVE) == 2 && runs_of(db, &id) == 2).then_some(())
    });
    id
}

/// Section 5, resume and release, on the scenario's budget, cheaply: the budget is kept full
/// by a blocker whose long runs are cancelled once it has served; the other backfills run one
/// or two short dates.
///
/// First, a steered backfill its user paused before it ever had a turn (its copy still paused
/// by the throttle), resumed while the budget is full: handed back to the throttle, it waits
/// for a turn without a run, then, the slots freed, runs and finishes, never more than 2 runs
/// live.
///
/// Then the budget is removed (the `[throttle]` section dropped, SIGHUP): a copy the throttle
/// paused is released at once (it finishes while the blocker still holds the 2 slots of the
/// old budget); one its user paused before its turn stays paused until resumed.
fn resume_and_release(daemon: &mut Daemon, db: &mut MetaDb) {
    let quick = ["--max-active-runs", "1", "--param", "sleep=1"];
    let started = Instant::now();
    let block = blocker(daemon, db, "2024-10-01", "2024-10-02");
    let resumed = submit(daemon, "lifecycle_demo", "2024-10-10", "2024-10-11", &quick);
    let kept = submit(daemon, "lifecycle_demo", "2024-10-20", "2024-10-20", &quick);
    for id in [&resumed, &kept] {
        wait_turn(daemon, id);
        act(daemon, "pause", id);
    }
    for id in [&resumed, &kept] {
        wait_for("the pause", Duration::from_secs(60), || {
            (status(daemon, id)["state"] == "paused").then_some(())
        });
    }
    act(daemon, "resume", &resumed);
    wait_turn(daemon, &resumed);
    // Handed back while the budget is full: still paused in Airflow, no run, over a few passes.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(copy_paused(db, &resumed), 1, "resumed over a full budget");
        assert_eq!(runs_of(db, &resumed), 0, "a run over a full budget");
    }
    act(daemon, "cancel", &block);
    let mut peak = 0;
    let done = wait_for("the resumed backfill to finish", BIG, || {
        peak = peak.max(count(db, ACTIVE));
        let s = status(daemon, &resumed);
        matches!(s["state"].as_str(), Some("success" | "failed")).then_some(s)
    });
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(done["dates_succeeded"], 2, "{done}");
    assert_eq!(runs_of(db, &resumed), 2, "runs of the resumed backfill");
    assert!(peak <= 2, "{peak} backfill runs live after the resume");
    eprintln!(
        "throttle: resumed a backfill paused before its turn: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Throttling turned off while a copy waits for its turn.
    let started = Instant::now();
    let block = blocker(daemon, db, "2024-11-01", "2024-11-02");
    let waiting = submit(daemon, "lifecycle_demo", "2024-11-10", "2024-11-11", &quick);
    wait_turn(daemon, &waiting);
    assert_eq!(copy_paused(db, &waiting), 1, "a waiting copy is paused");
    let config = std::fs::read_to_string(&daemon.config).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.contains(BUDGET), "{config}");
    std::fs::write(&daemon.config, config.replace(BUDGET, "\n")).unwrap_or_else(|e| panic!("{e}"));
    let reloads = daemon.log_text().matches("configuration reloaded").count();
    daemon.proc().signal(Signal::SIGHUP);
    wait_for("the reload", Duration::from_secs(30), || {
        (daemon.log_text().matches("configuration reloaded").count() > reloads).then_some(())
    });
    let done = daemon.wait_finished(&waiting, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(runs_of(db, &waiting), 2, "runs of the released backfill");
    assert_eq!(
        status(daemon, &block)["state"],
        "running",
        "the blocker finished first: the release proves nothing"
    );
    // The user's pause holds through the passes after the budget went.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            copy_paused(db, &kept),
            1,
            "the release unpaused a user's pause"
        );
        assert_eq!(status(daemon, &kept)["state"], "paused");
        assert_eq!(runs_of(db, &kept), 0);
    }
    act(daemon, "resume", &kept);
    let done = daemon.wait_finished(&kept, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert_eq!(
        runs_of(db, &kept),
        1,
        "runs of the backfill paused by its user"
    );
    act(daemon, "cancel", &block);
    daemon.wait_finished(&block, BIG);
    eprintln!(
        "throttle: budget removed, throttle-paused copy released: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Wait until the backfills `ids` (of `lifecycle_demo`, 3 dates each, under
/// `max_running_backfill_runs = 2`) all succeeded, sampling the queued + running runs of every
/// copy of the DAG every 100 ms and the statuses every second: never more than 2 at once, the
/// waiting ones said why (never while the budget was free), and turns alternated.
fn watch_budget(daemon: &Daemon, db: &mut MetaDb, ids: &[String], what: &str, started: Instant) {
    let mut peak = 0;
    let mut samples = 0;
    let mut reasons: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut next_status = Instant::now();
    loop {
        // The live runs are sampled every 100 ms; the statuses every second.
        peak = peak.max(count(db, ACTIVE));
        samples += 1;
        if Instant::now() < next_status {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next_status = Instant::now() + Duration::from_secs(1);
        let states: Vec<serde_json::Value> = ids.iter().map(|id| status(daemon, id)).collect();
        for s in &states {
            if let Some(r) = s["reason"].as_str() {
                if !reasons.iter().any(|x| x == r) {
                    reasons.push(r.to_owned());
                }
            }
        }
        if states
            .iter()
            .all(|s| matches!(s["state"].as_str(), Some("success" | "failed")))
        {
            for s in &states {
                assert_eq!(s["state"], "success", "{s}\n{}", daemon.log_text());
                assert_eq!(
                    s["run_order"], "oldest_first",
                    "steered under a budget: {s}"
                );
                assert_eq!(s["dates_succeeded"], 3, "{s}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backfills did not finish: {states:?}\n{}",
            daemon.log_text()
        );
    }
    eprintln!(
        "throttle: {what}, budget 2: all done in {:.1} s; peak {peak} live runs in {samples} samples",
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak <= 2,
        "{what}: {peak} backfill runs queued or running at once"
    );
    assert!(peak >= 1);
    assert!(
        reasons
            .iter()
            .any(|r| r == "waiting for a turn: 2/2 backfill runs in use"),
        "the waiting backfill said why: {reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains(" 0/")),
        "held while the budget was free: {reasons:?}"
    );
    // Turns alternate: every backfill's first run started before any backfill's last run
    // ended (none waited until another had run all its dates).
    let copies = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let alternate = count(
        db,
        &format!(
            "SELECT CAST(CASE WHEN (SELECT MAX(f) FROM (SELECT MIN(start_date) AS f FROM dag_run \
             WHERE dag_id IN ({copies}) GROUP BY dag_id) x) < (SELECT MIN(l) FROM (SELECT \
             MAX(end_date) AS l FROM dag_run WHERE dag_id IN ({copies}) GROUP BY dag_id) y) \
             THEN 1 ELSE 0 END AS BIGINT) AS value"
        ),
    );
    assert_eq!(
        alternate, 1,
        "a backfill waited until another finished all its dates"
    );
}
