//! The latency benchmark (`--only-latency`): the same DAG, the same dates, in the same Airflow
//! home with a real scheduler, backfilled in turn by backfilld and by Airflow's own backfill:
//! `airflow dags backfill` on Airflow 2, the native backfill through the REST API and
//! `airflow backfill create` on Airflow 3. Each trial takes 24 hourly dates of a day no other
//! trial uses; the sides alternate trial by trial. Per side it prints the time from the request
//! (the file's rename into the spool; the command's start; the POST) to the first successful
//! run and to the last run finished, min/median/max over the trials, and whether each trial
//! ran exactly its 24 dates. Every home is on a fresh PostgreSQL database of the run with the
//! LocalExecutor (the production set-up; on SQLite Airflow 3's native backfill fails with
//! "database is locked", and Airflow 2 allows only the SequentialExecutor), the same executor,
//! `[core] parallelism` and `max_active_tasks_per_dag` for the scheduler and for Airflow's own
//! backfill. `--latency-af2-sqlite` keeps Airflow 2.11 on SQLite with the SequentialExecutor.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backfilld::metadb::{Arg, MetaDb};
use diesel::sql_types::BigInt;

use super::{die, drop_file, free_port, percentile, start_daemon_bin, Daemon};

/// The benchmark's DAG: hourly, two short tasks, `max_active_runs` 10; unpaused (Airflow 3
/// starts no run of a paused DAG, its native backfill's neither) and ended in 2024, so only
/// backfills run it.
const DAG: &str = r#"import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="latency_hourly",
    schedule="@hourly",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    end_date=datetime.datetime(2024, 12, 31, tzinfo=datetime.timezone.utc),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=10,
    default_args={"retries": 0},
) as dag:
    first = BashOperator(task_id="first", bash_command="echo first {{ ts }}")
    second = BashOperator(task_id="second", bash_command="echo second {{ ts }}")
    first >> second
"#;

const DAG_ID: &str = "latency_hourly";
const DATES: i64 = 24;
const MAX_ACTIVE_RUNS: u32 = 10;

/// What `--only-latency` measures.
pub struct LatencyArgs {
    /// Trials per side.
    pub trials: usize,
    /// Warm-up rounds before them, not counted.
    pub warmup: usize,
    /// The venvs to measure (`af2`, `af30`, `af3`, `af32`, `af33`).
    pub venvs: Vec<String>,
    /// Another build's `backfilld`, measured as one more side ("before").
    pub before: Option<PathBuf>,
    /// Airflow 2's home on SQLite with the SequentialExecutor instead of PostgreSQL with the
    /// LocalExecutor.
    pub af2_sqlite: bool,
}

/// Who backfills in a trial.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Backfilld,
    /// The `--latency-before` build.
    Before,
    /// `airflow dags backfill` (2.x) or `airflow backfill create` (3.x).
    Cli,
    /// `POST /api/v2/backfills` (3.x).
    Rest,
}

impl Side {
    fn name(self, v3: bool) -> &'static str {
        match (self, v3) {
            (Side::Backfilld, _) => "backfilld",
            (Side::Before, _) => "backfilld (before)",
            (Side::Cli, false) => "airflow dags backfill",
            (Side::Cli, true) => "airflow backfill create",
            (Side::Rest, _) => "native backfill (REST)",
        }
    }
}

/// One trial's outcome.
struct Trial {
    first: Option<f64>,
    all: Option<f64>,
    runs: i64,
    failed: i64,
}

/// An Airflow home with its components running.
struct Home {
    home: PathBuf,
    venv: PathBuf,
    v3: bool,
    api_port: u16,
    log_port: u16,
    procs: Vec<Child>,
    /// The PostgreSQL database of the home (dropped with it); `None` on SQLite.
    pg: Option<String>,
}

impl Drop for Home {
    fn drop(&mut self) {
        for p in &mut self.procs {
            kill_group(p);
        }
        if let Some(url) = &self.pg {
            super::drop_pg_database(url);
        }
    }
}

/// Three integers of a query.
#[derive(diesel::QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    a: i64,
    #[diesel(sql_type = BigInt)]
    b: i64,
    #[diesel(sql_type = BigInt)]
    c: i64,
}

/// One integer of a query.
#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `sql`'s one integer `n` (-1 on an error).
fn count(db: &mut MetaDb, sql: &str, args: &[Arg]) -> i64 {
    db.load::<Count>(sql, args)
        .ok()
        .and_then(|rows| rows.first().map(|r| r.n))
        .unwrap_or(-1)
}

/// Stop a component and the processes it started (its own process group).
fn kill_group(p: &mut Child) {
    if let Ok(pid) = i32::try_from(p.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = p.wait();
}

impl Home {
    fn new(venv_name: &str, sqlite: bool) -> Home {
        let venv = super::venv_named(venv_name);
        let v3 = venv_name != "af2";
        let home = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench")
            .join(format!("latency-{venv_name}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("dags")).unwrap_or_else(|e| die(e.to_string()));
        std::fs::write(home.join("dags/latency_hourly.py"), DAG)
            .unwrap_or_else(|e| die(e.to_string()));
        let pg = (v3 || !sqlite).then(|| super::pg_database(&format!("latency_{venv_name}")));
        if let Some(url) = &pg {
            // In airflow.cfg, so backfilld reads the same database (and on 3.x the same auth
            // manager: root's FAB user).
            let core = if v3 {
                "[core]\nauth_manager = airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager\n"
            } else {
                ""
            };
            std::fs::write(
                home.join("airflow.cfg"),
                format!("{core}[database]\nsql_alchemy_conn = {url}\n"),
            )
            .unwrap_or_else(|e| die(e.to_string()));
        }
        let h = Home {
            home,
            venv,
            v3,
            api_port: free_port(),
            log_port: free_port(),
            procs: Vec::new(),
            pg,
        };
        h.cli(&["db", "migrate"]);
        h.cli(&["dags", "reserialize"]);
        if !v3 {
            h.cli(&["sync-perm"]);
        }
        h.cli(&super::ROOT_ADMIN);
        h
    }

    fn command(&self, program: &str) -> Command {
        let mut c = super::airflow_command(&self.home, &self.venv, program);
        c.env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
            .env("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
            .env("AIRFLOW__SCHEDULER__PARSING_PROCESSES", "1")
            .env("AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES", "1")
            .env(
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
                self.log_port.to_string(),
            )
            // Airflow's defaults, set so both sides plainly run with the same ones.
            .env("AIRFLOW__CORE__PARALLELISM", "32")
            .env("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "16");
        // Every command of the home (scheduler, `airflow dags backfill`, the native backfill's
        // scheduler) runs the same executor.
        c.env("AIRFLOW__CORE__EXECUTOR", self.executor());
        if self.v3 {
            let port = self.api_port.to_string();
            c.env(
                "AIRFLOW__CORE__AUTH_MANAGER",
                "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
            )
            .env("AIRFLOW__API__HOST", "127.0.0.1")
            .env("AIRFLOW__API__PORT", &port)
            .env("AIRFLOW__API__WORKERS", "1")
            .env("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")
            .env(
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                format!("http://127.0.0.1:{port}/execution/"),
            )
            .env(
                "AIRFLOW__API_AUTH__JWT_SECRET",
                "backfilld-bench-jwt-secret",
            )
            .env("AIRFLOW__API__SECRET_KEY", "backfilld-bench-secret-key");
        }
        c
    }

    /// The executor: Airflow 2 on SQLite allows only the SequentialExecutor.
    fn executor(&self) -> &'static str {
        if self.pg.is_some() {
            "LocalExecutor"
        } else {
            "SequentialExecutor"
        }
    }

    fn cli(&self, args: &[&str]) {
        super::run_airflow(self.command("airflow"), args);
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.home.join(format!("{name}.log")))
            .unwrap_or_else(|e| die(e.to_string()));
        self.command("airflow")
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| die(e.to_string()))
    }

    /// The scheduler (and on 3.x the api-server and the dag-processor).
    fn start(&mut self) {
        if self.v3 {
            let api = self.spawn("api-server", &["api-server"]);
            self.procs.push(api);
            let port = self.api_port;
            super::wait("the Airflow api-server", Duration::from_secs(300), || {
                ureq::get(format!("http://127.0.0.1:{port}/api/v2/monitor/health"))
                    .call()
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            });
            let p = self.spawn("dag-processor", &["dag-processor"]);
            self.procs.push(p);
        }
        let s = self.spawn("scheduler", &["scheduler"]);
        self.procs.push(s);
    }

    /// A connection to the home's database.
    fn db(&self) -> MetaDb {
        let url = match &self.pg {
            Some(url) => url.clone(),
            None => format!("sqlite:///{}", self.home.join("airflow.db").display()),
        };
        backfilld::dburl::DbUrl::parse(&url)
            .map_err(|e| e.to_string())
            .and_then(|u| MetaDb::connect(&u).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| die(e))
    }

    fn date_column(&self) -> &'static str {
        if self.v3 {
            "logical_date"
        } else {
            "execution_date"
        }
    }

    /// Runs of `dag_like` (a `LIKE` pattern) on `day`: (all, success, failed).
    fn runs(&self, db: &mut MetaDb, dag_like: &str, day: &str) -> (i64, i64, i64) {
        let col = self.date_column();
        let d = db.dialect();
        let ts = d.ts_param();
        let Ok(start) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
            return (0, 0, 0);
        };
        let start = start.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = start + chrono::Duration::days(1);
        let sql = format!(
            "SELECT {} AS a, {} AS b, {} AS c FROM dag_run \
             WHERE dag_id LIKE ? AND {col} >= {ts} AND {col} < {ts}",
            d.int("COUNT(*)"),
            d.int("COALESCE(SUM(CASE WHEN state = 'success' THEN 1 ELSE 0 END), 0)"),
            d.int("COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0)"),
        );
        db.load::<Counts>(
            &sql,
            &[
                Arg::Text(dag_like.to_owned()),
                Arg::Text(d.ts_value(start)),
                Arg::Text(d.ts_value(end)),
            ],
        )
        .ok()
        .and_then(|rows| rows.first().map(|r| (r.a, r.b, r.c)))
        .unwrap_or((0, 0, 0))
    }

    /// Live (queued or running) runs of any DAG.
    fn live(&self, db: &mut MetaDb) -> i64 {
        let sql = format!(
            "SELECT {} AS n FROM dag_run WHERE state IN ('queued', 'running')",
            db.dialect().int("COUNT(*)")
        );
        count(db, &sql, &[])
    }

    /// Airflow 3's backfills not marked completed yet (it refuses a second one for the DAG
    /// until the scheduler marked the first).
    fn open_backfills(&self, db: &mut MetaDb) -> i64 {
        if !self.v3 {
            return 0;
        }
        let sql = format!(
            "SELECT {} AS n FROM backfill WHERE completed_at IS NULL",
            db.dialect().int("COUNT(*)")
        );
        count(db, &sql, &[])
    }

    /// An access token of root from the api-server (FAB's `/auth/token`).
    fn token(&self) -> String {
        let mut r = ureq::post(format!("http://127.0.0.1:{}/auth/token", self.api_port))
            .send_json(serde_json::json!({"username": "root", "password": "pw"}))
            .unwrap_or_else(|e| die(format!("POST /auth/token: {e}")));
        let v: serde_json::Value = r
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| die(e.to_string()));
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| die(format!("no access_token: {v}")))
    }
}

/// The day of trial `n` (one day each, never reused): `2024-01-02` onwards.
fn day(n: usize) -> String {
    let d = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap_or_default()
        + chrono::Days::new(n as u64);
    d.to_string()
}

/// Start one side's backfill of `day`'s 24 hours; returns the instant it was asked and, for a
/// command, the process to reap.
fn start_side(
    h: &Home,
    daemon: Option<&Daemon>,
    side: Side,
    day: &str,
    token: &str,
) -> (Instant, Option<Child>) {
    let (from, to) = (format!("{day}T00:00:00"), format!("{day}T23:00:00"));
    match side {
        Side::Backfilld | Side::Before => {
            let Some(daemon) = daemon else {
                die("no daemon".into());
            };
            let t = Instant::now();
            drop_file(
                &daemon.spool,
                &format!("latency-{day}.toml"),
                &format!(
                    "dag_id = \"{DAG_ID}\"\nstart = {from}\nend = {to}\nmax_active_runs = {MAX_ACTIVE_RUNS}\n"
                ),
            );
            (t, None)
        }
        Side::Cli => {
            let mut c = h.command("airflow");
            if h.v3 {
                c.args([
                    "backfill",
                    "create",
                    "--dag-id",
                    DAG_ID,
                    "--from-date",
                    &format!("{from}+00:00"),
                    "--to-date",
                    &format!("{to}+00:00"),
                    "--max-active-runs",
                    &MAX_ACTIVE_RUNS.to_string(),
                ]);
            } else {
                c.args(["dags", "backfill", "-s", &from, "-e", &to, DAG_ID]);
            }
            let log = std::fs::File::create(h.home.join(format!("cli-{day}.log")))
                .unwrap_or_else(|e| die(e.to_string()));
            let t = Instant::now();
            let child = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| die(e.to_string()));
            (t, Some(child))
        }
        Side::Rest => {
            // On SQLite the api-server may answer 500 ("database is locked"), sometimes after
            // it created the backfill: asked again, up to 5 times, timed from the attempt that
            // was accepted, or from the first when a later one finds it created (409).
            let first = Instant::now();
            for attempt in 1..=5 {
                let t = Instant::now();
                let r = ureq::post(format!("http://127.0.0.1:{}/api/v2/backfills", h.api_port))
                    .header("Authorization", &format!("Bearer {token}"))
                    .send_json(serde_json::json!({
                        "dag_id": DAG_ID,
                        "from_date": format!("{from}Z"),
                        "to_date": format!("{to}Z"),
                        "max_active_runs": MAX_ACTIVE_RUNS,
                        "run_backwards": false,
                        "dag_run_conf": {},
                        "reprocess_behavior": "none",
                    }));
                match r {
                    Ok(_) => return (t, None),
                    Err(ureq::Error::StatusCode(409)) if attempt > 1 => return (first, None),
                    Err(e) => {
                        eprintln!(
                            "latency: POST /api/v2/backfills for {day} (attempt {attempt}): {e}"
                        );
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            (Instant::now(), None)
        }
    }
}

/// One trial: ask, then watch the day's runs until all 24 finished (or 600 s passed). A
/// backfilld side runs its own daemon for the trial (started and settled before the request).
fn trial(h: &Home, a: &LatencyArgs, side: Side, day: &str, token: &str) -> Trial {
    let like = match side {
        Side::Backfilld | Side::Before => format!("{DAG_ID}_backfill_%"),
        Side::Cli | Side::Rest => DAG_ID.to_owned(),
    };
    let bin = match side {
        Side::Backfilld => Some(PathBuf::from(env!("CARGO_BIN_EXE_backfilld"))),
        Side::Before => a.before.clone(),
        Side::Cli | Side::Rest => None,
    };
    let daemon = bin.map(|bin| {
        let af = super::Airflow::existing(&h.home, &h.venv, h.pg.as_deref());
        let d = start_daemon_bin(&af, "", &bin);
        std::thread::sleep(Duration::from_secs(3));
        d
    });
    let daemon = daemon.as_ref();
    let mut db = h.db();
    let (t0, mut child) = start_side(h, daemon, side, day, token);
    let deadline = t0 + Duration::from_secs(600);
    let mut first = None;
    let all = loop {
        let (n, ok, bad) = h.runs(&mut db, &like, day);
        if ok > 0 && first.is_none() {
            first = Some(t0.elapsed().as_secs_f64());
        }
        if ok + bad >= DATES {
            break Some(t0.elapsed().as_secs_f64());
        }
        let exited = child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        let nothing = n == 0 && t0.elapsed() > Duration::from_secs(120);
        if Instant::now() > deadline || nothing || (exited && h.v3 && n == 0) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(mut c) = child {
        let _ = c.wait();
    }
    // Settle: nothing queued or running anywhere before the next trial; then count again (a
    // run created late would show here).
    super::wait(
        "the trial's runs to settle",
        Duration::from_secs(600),
        || (h.live(&mut db) == 0 && h.open_backfills(&mut db) == 0).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (runs, _, failed) = h.runs(&mut db, &like, day);
    Trial {
        first,
        all,
        runs,
        failed,
    }
}

fn summary(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".to_owned();
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{:.1} / {:.1} / {:.1} s",
        v[0],
        percentile(&v, 0.5),
        v[v.len() - 1]
    )
}

/// The latency benchmark on one venv.
fn one(a: &LatencyArgs, venv_name: &str) {
    let mut h = Home::new(venv_name, a.af2_sqlite);
    h.start();
    let version = {
        let out = h
            .command("airflow")
            .arg("version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        out.lines().last().unwrap_or("?").to_owned()
    };
    let mut db = h.db();
    let parsed = format!(
        "SELECT {} AS n FROM serialized_dag WHERE dag_id = ?",
        db.dialect().int("COUNT(*)")
    );
    super::wait("the DAG to be parsed", Duration::from_secs(300), || {
        (count(&mut db, &parsed, &[Arg::Text(DAG_ID.to_owned())]) > 0).then_some(())
    });
    let token = if h.v3 { h.token() } else { String::new() };
    let mut sides: Vec<Side> = if h.v3 {
        vec![Side::Backfilld, Side::Rest, Side::Cli]
    } else {
        vec![Side::Backfilld, Side::Cli]
    };
    if a.before.is_some() {
        sides.insert(1, Side::Before);
    }
    let setup = if h.pg.is_some() {
        "PostgreSQL, LocalExecutor"
    } else {
        "SQLite, SequentialExecutor"
    };
    let mut results: Vec<Vec<Trial>> = sides.iter().map(|_| Vec::new()).collect();
    let mut n = 0;
    // Warm-up rounds first (not counted): the first runs after Airflow started are slow.
    for round in 0..a.warmup + a.trials {
        let warm = round < a.warmup;
        for (i, side) in sides.iter().enumerate() {
            let d = day(n);
            n += 1;
            let t = trial(&h, a, *side, &d, &token);
            println!(
                "latency (Airflow {version}, {setup}): {} {} {}: {d}: first success {}, all dates {}, {} runs, {} failed",
                if warm { "warm-up" } else { "trial" },
                round + 1,
                side.name(h.v3),
                t.first.map_or("-".to_owned(), |s| format!("{s:.1} s")),
                t.all.map_or("not finished".to_owned(), |s| format!("{s:.1} s")),
                t.runs,
                t.failed
            );
            if !warm {
                results[i].push(t);
            }
        }
    }
    for (side, ts) in sides.iter().zip(&results) {
        let firsts: Vec<f64> = ts.iter().filter_map(|t| t.first).collect();
        let alls: Vec<f64> = ts.iter().filter_map(|t| t.all).collect();
        let exact = ts
            .iter()
            .filter(|t| t.all.is_some() && t.runs == DATES && t.failed == 0)
            .count();
        println!(
            "latency (Airflow {version}, {setup}, {DATES} hourly dates, max_active_runs {MAX_ACTIVE_RUNS}): {}: first success {} , all dates {} (min / median / max); {exact} of {} trials ran exactly {DATES} dates, all successful",
            side.name(h.v3),
            summary(&firsts),
            summary(&alls),
            ts.len()
        );
    }
}

/// `--only-latency`: every venv asked, one after the other.
pub fn bench(a: &LatencyArgs) {
    for v in &a.venvs {
        one(a, v);
    }
}
