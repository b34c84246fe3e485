//! Whole-process benchmarks of `backfilld` against a real Airflow 2.11 metadata DB (SQLite,
//! migrated by Airflow itself), printing their figures:
//!
//! - idle: CPU time the daemon uses over a quiet interval, and its RSS;
//! - ingest: N request files renamed into `incoming/` at once: time until every DAG copy is on
//!   disk, and per-request latency from rename to copy on disk (p50/p99/max): the copy's ctime,
//!   which its rename into `backfill_user_dags/` sets (its data was made durable before); then
//!   N single requests 200 ms apart (latency outside a burst);
//! - request to first run: seconds from a request's rename to the first `dag_run` of its copy,
//!   with an unmodified Airflow scheduler (default `dag_dir_list_interval`).
//!
//! - reconcile at scale: N backfills with M runs of K task instances each, generated inside
//!   the database (SQLite, and PostgreSQL in a database of its own on the server of
//!   `BACKFILLD_TEST_PG_URL`, by default `postgresql://postgres@127.0.0.1:5432`): one
//!   full pass and one incremental pass after 1% of the backfills moved on, timed in-process
//!   on the library's engine, with the statements each pass sent and the peak RSS.
//!
//! - seed import (`--only-seed`): the seed plugin's `custom_backfill` table with N backfills
//!   generated inside the database (SQLite, then PostgreSQL as above), imported by the import
//!   job on the library's engine in-process, timed from the control request to the job's end.
//! - list at scale (`--only-list`): N generated backfills served by the daemon to
//!   `backfillctl list --json --all` and to every page of the v2 API's list, with the daemon's
//!   peak RSS during each.
//!
//! - the seed side by side (`--only-seed-side-by-side`): the seed plugin's table with
//!   `--backfills` backfills of `--runs` runs (8 in 10 running) generated in the database, the
//!   seed's own pass (`update_backfill_states(None)`, the plugin from PyPI) timed, the table
//!   imported by `import-seed`, then backfilld's passes on the same DB: the first pass after the
//!   import, a cold pass (a fresh engine), a steady pass (nothing new) and an incremental one
//!   (1% moved on), with statements and peak RSS; `--no-seed-pass` leaves the seed's own
//!   pass out (it takes minutes; the ratios are then not printed), `--settled` adds a steady
//!   and an incremental pass once the imported deletions settled (`DELETE_SETTLE_SECS`, 30 s
//!   after the first pass).
//! - latency (`--only-latency`): 24 hourly dates of one DAG backfilled in turn by backfilld and
//!   by Airflow's own backfill in the same Airflow home with a real scheduler, each home on a
//!   fresh PostgreSQL database as above with the LocalExecutor (Airflow 2.11:
//!   `airflow dags backfill`; Airflow 3: the native backfill through REST and
//!   `airflow backfill create`): time to the first successful run and to all dates, per side
//!   (`--latency-trials N`, default 3, after `--latency-warmup N` rounds not counted, default
//!   1; `--latency-venvs af2,af3`, the venvs to measure;
//!   `--latency-before PATH`: another build's `backfilld` as one more side, e.g. the previous
//!   commit's, so before and after are measured in one run; `--latency-af2-sqlite`: Airflow
//!   2.11 on SQLite with the SequentialExecutor instead).
//!
//! Run: `cargo bench --bench daemon -- [--requests N] [--idle-secs S] [--no-first-run]
//! [--backfills N] [--runs M] [--tis K] [--no-pg] [--no-sqlite] [--keep-pg] [--only-reconcile]
//! [--no-reconcile] [--singles N] [--only-seed] [--seed-backfills N] [--seed-runs M]
//! [--only-list] [--no-list] [--only-seed-side-by-side] [--no-seed-pass] [--settled] [--only-latency]
//! [--latency-trials N] [--latency-warmup N] [--latency-venvs af2,af3] [--latency-before PATH]
//! [--latency-af2-sqlite]` (defaults 1000, 60, with first run, 10000, 100, 5, with
//! reconcile, 20, 100000, 3, with list). Needs the venvs of `scripts/airflow-venvs.sh`.

#[path = "support/latency.rs"]
mod latency;
#[path = "support/metagen.rs"]
mod metagen;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

struct Args {
    requests: usize,
    idle_secs: u64,
    first_run: bool,
    backfills: usize,
    runs: usize,
    tis: usize,
    pg: bool,
    sqlite: bool,
    keep_pg: bool,
    only_reconcile: bool,
    reconcile: bool,
    singles: usize,
    only_seed: bool,
    seed_backfills: usize,
    seed_runs: usize,
    only_list: bool,
    list: bool,
    only_side_by_side: bool,
    seed_pass: bool,
    settled: bool,
    only_latency: bool,
    latency: latency::LatencyArgs,
}

fn args() -> Args {
    let mut a = Args {
        requests: 1000,
        idle_secs: 60,
        first_run: true,
        backfills: 10_000,
        runs: 100,
        tis: 5,
        pg: true,
        sqlite: true,
        keep_pg: false,
        only_reconcile: false,
        reconcile: true,
        singles: 20,
        only_seed: false,
        seed_backfills: 100_000,
        seed_runs: 3,
        only_list: false,
        list: true,
        only_side_by_side: false,
        seed_pass: true,
        settled: false,
        only_latency: false,
        latency: latency::LatencyArgs {
            trials: 3,
            warmup: 1,
            venvs: vec!["af2".to_owned(), "af3".to_owned()],
            before: None,
            af2_sqlite: false,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => {
                a.requests = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.requests)
            }
            "--idle-secs" => {
                a.idle_secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.idle_secs)
            }
            "--no-first-run" => a.first_run = false,
            "--backfills" => {
                a.backfills = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.backfills)
            }
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.runs),
            "--tis" => a.tis = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.tis),
            "--no-pg" => a.pg = false,
            "--no-sqlite" => a.sqlite = false,
            "--keep-pg" => a.keep_pg = true,
            "--only-reconcile" => a.only_reconcile = true,
            "--no-reconcile" => a.reconcile = false,
            "--only-list" => a.only_list = true,
            "--no-list" => a.list = false,
            "--singles" => a.singles = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.singles),
            "--only-seed" => a.only_seed = true,
            "--only-seed-side-by-side" => a.only_side_by_side = true,
            "--no-seed-pass" => a.seed_pass = false,
            "--settled" => a.settled = true,
            "--only-latency" => a.only_latency = true,
            "--latency-trials" => {
                a.latency.trials = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.latency.trials)
            }
            "--latency-warmup" => {
                a.latency.warmup = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.latency.warmup)
            }
            "--latency-before" => a.latency.before = it.next().map(PathBuf::from),
            "--latency-af2-sqlite" => a.latency.af2_sqlite = true,
            "--latency-venvs" => {
                if let Some(v) = it.next() {
                    a.latency.venvs = v.split(',').map(str::to_owned).collect();
                }
            }
            "--seed-backfills" => {
                a.seed_backfills = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.seed_backfills)
            }
            "--seed-runs" => {
                a.seed_runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.seed_runs)
            }
            _ => {}
        }
    }
    a
}

fn die(msg: String) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(1);
}

fn venv() -> PathBuf {
    venv_named("af2")
}

/// The venv `name` of `scripts/airflow-venvs.sh` (`af2`, `af30`, `af3`, `af32`, `af33`).
fn venv_named(name: &str) -> PathBuf {
    let base = std::env::var_os("BACKFILLD_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/backfilld/venvs")
        });
    let v = base.join(name);
    if !v.join("bin/airflow").exists() {
        die(format!(
            "{} is missing: run scripts/airflow-venvs.sh",
            v.display()
        ));
    }
    v
}

/// A fresh AIRFLOW_HOME with `sales` parsed and root an Airflow Admin.
struct Airflow {
    home: PathBuf,
    venv: PathBuf,
    /// The PostgreSQL database's URL when the home is on one (SQLite otherwise).
    pg: Option<String>,
}

impl Airflow {
    fn new(name: &str) -> Airflow {
        Airflow::on(name, None)
    }

    /// On SQLite, or on the PostgreSQL database `pg` (SQLAlchemy URL) when given.
    fn on(name: &str, pg: Option<&str>) -> Airflow {
        let home = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench")
            .join(name);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("dags")).unwrap_or_else(|e| die(e.to_string()));
        if let Some(url) = pg {
            std::fs::write(
                home.join("airflow.cfg"),
                format!("[database]\nsql_alchemy_conn = {url}\n"),
            )
            .unwrap_or_else(|e| die(e.to_string()));
        }
        let sales = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dags/sales.py");
        std::fs::copy(sales, home.join("dags/sales.py")).unwrap_or_else(|e| die(e.to_string()));
        let af = Airflow {
            home,
            venv: venv(),
            pg: pg.map(str::to_owned),
        };
        af.cli(&["db", "migrate"]);
        af.cli(&["dags", "reserialize"]);
        af.cli(&["sync-perm"]);
        af.cli(&ROOT_ADMIN);
        af
    }

    /// An Airflow home another bench set up (only its DB is used here), on the PostgreSQL
    /// database `pg` when given.
    fn existing(home: &Path, venv: &Path, pg: Option<&str>) -> Airflow {
        Airflow {
            home: home.to_owned(),
            venv: venv.to_owned(),
            pg: pg.map(str::to_owned),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = airflow_command(&self.home, &self.venv, program);
        c.env("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor");
        c
    }

    fn cli(&self, args: &[&str]) {
        run_airflow(self.command("airflow"), args);
    }

    fn db(&self) -> rusqlite::Connection {
        airflow_db(&self.home)
    }

    /// The first column of `sql`'s first row, an integer, on PostgreSQL (-1 on
    /// an error).
    fn count(&self, sql: &str) -> i64 {
        match &self.pg {
            Some(url) => pg_count(url, sql),
            None => self.db().query_row(sql, [], |r| r.get(0)).unwrap_or(-1),
        }
    }
}

/// `program` of the venv `venv` for AIRFLOW_HOME `home`: the venv's `bin` first on PATH, no
/// example DAGs, Python's warnings off (the executor is the caller's).
fn airflow_command(home: &Path, venv: &Path, program: &str) -> Command {
    let mut c = Command::new(venv.join("bin").join(program));
    c.env("AIRFLOW_HOME", home)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("PYTHONWARNINGS", "ignore")
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    c
}

/// Run `airflow args` (`cmd`, an `airflow` command); die with its stderr when it fails.
fn run_airflow(mut cmd: Command, args: &[&str]) {
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| die(e.to_string()));
    if !out.status.success() {
        die(format!(
            "airflow {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

/// The SQLite metadata DB of AIRFLOW_HOME `home`, waiting up to 10 s on a lock.
fn airflow_db(home: &Path) -> rusqlite::Connection {
    let c =
        rusqlite::Connection::open(home.join("airflow.db")).unwrap_or_else(|e| die(e.to_string()));
    let _ = c.busy_timeout(Duration::from_secs(10));
    c
}

struct Daemon {
    child: Child,
    spool: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(af: &Airflow) -> Daemon {
    start_daemon_with(af, "")
}

/// The daemon with `extra` appended to its config file.
fn start_daemon_with(af: &Airflow, extra: &str) -> Daemon {
    start_daemon_bin(af, extra, Path::new(env!("CARGO_BIN_EXE_backfilld")))
}

/// [`start_daemon_with`] running the daemon binary `bin` (another build's, for "before").
fn start_daemon_bin(af: &Airflow, extra: &str, bin: &Path) -> Daemon {
    let dir = af.home.join("backfilld");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(e.to_string()));
    let spool = dir.join("spool");
    let config = dir.join("backfilld.toml");
    std::fs::write(
        &config,
        format!(
            "[airflow]\nhome = \"{}\"\n[spool]\ndir = \"{}\"\n[limits]\nmax_pending_per_user = 100000\nmax_active_backfills_per_user = 100000\n{extra}",
            af.home.display(),
            spool.display()
        ),
    )
    .unwrap_or_else(|e| die(e.to_string()));
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap_or_else(|e| die(e.to_string()));
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("BACKFILLD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| die(e.to_string()));
    let d = Daemon { child, spool };
    wait(
        "backfilld to migrate its tables",
        Duration::from_secs(60),
        || (af.count("SELECT COUNT(*) FROM backfilld_migration") > 0).then_some(()),
    );
    d
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            die(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    // Fields after the command: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / hz
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on the loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(e.to_string()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn drop_file(spool: &Path, name: &str, body: &str) -> SystemTime {
    let staged = spool.join(format!("../staging-{name}"));
    std::fs::write(&staged, body).unwrap_or_else(|e| die(e.to_string()));
    let t = SystemTime::now();
    std::fs::rename(&staged, spool.join("incoming").join(name))
        .unwrap_or_else(|e| die(e.to_string()));
    t
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// One integer of a query on the PostgreSQL database `url` (-1 on an error).
fn pg_count(url: &str, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Value {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        value: i64,
    }
    let Ok(parsed) = backfilld::dburl::DbUrl::parse(url) else {
        return -1;
    };
    let Ok(mut db) = backfilld::metadb::MetaDb::connect(&parsed) else {
        return -1;
    };
    let sql = format!("SELECT CAST(({sql}) AS BIGINT) AS value");
    db.load::<Value>(&sql, &[])
        .ok()
        .and_then(|rows| rows.first().map(|r| r.value))
        .unwrap_or(-1)
}

/// A fresh PostgreSQL database `bfd_bench_<what>_<pid>` on the local server; returns its URL.
fn pg_database(what: &str) -> String {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let server = std::env::var("BACKFILLD_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| "postgresql://postgres@127.0.0.1:5432".to_owned());
    let name = format!("bfd_bench_{what}_{}", std::process::id());
    let mut c =
        diesel::PgConnection::establish(&format!("{server}/postgres")).unwrap_or_else(|e| {
            die(format!(
                "PostgreSQL at {server} is required (or --no-pg): {e}"
            ))
        });
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        c.batch_execute(&sql)
            .unwrap_or_else(|e| die(format!("{sql}: {e}")));
    }
    format!("{server}/{name}")
}

fn drop_pg_database(url: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let Some((server, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(mut c) = diesel::PgConnection::establish(&format!("{server}/postgres")) {
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

fn engine(af: &Airflow) -> backfilld::engine::Engine {
    let dir = af.home.join("backfilld");
    let text = format!(
        "[airflow]\nhome = \"{}\"\n[spool]\ndir = \"{}\"\n",
        af.home.display(),
        dir.join("spool").display()
    );
    let config = backfilld::config::Config::parse(&dir.join("backfilld.toml"), &text)
        .unwrap_or_else(|e| die(e.to_string()));
    let airflow = config
        .resolve_airflow()
        .unwrap_or_else(|e| die(e.to_string()));
    let spool = backfilld::spool::Spool::open(&config.spool.dir, config.spool.max_request_bytes)
        .unwrap_or_else(|e| die(e.to_string()));
    let mut e = backfilld::engine::Engine::new(config, airflow, spool);
    e.ensure_connected().unwrap_or_else(|e| die(e.to_string()));
    e
}

/// Reconcile at scale on one backend: generate, then a first pass (writes every backfill), a
/// full pass with nothing new, and an incremental pass after 1% moved on.
fn reconcile_bench(a: &Args, pg: Option<&str>) {
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let af = Airflow::on(
        if pg.is_some() {
            "reconcile-pg"
        } else {
            "reconcile-sqlite"
        },
        pg,
    );
    let mut first = engine(&af);
    let url = backfilld::config::Config::parse(
        Path::new("bench"),
        &format!("[airflow]\nhome = \"{}\"\n", af.home.display()),
    )
    .and_then(|c| c.resolve_airflow())
    .map(|l| l.db)
    .unwrap_or_else(|e| die(e.to_string()));
    let mut db = backfilld::metadb::MetaDb::connect(&url).unwrap_or_else(|e| die(e.to_string()));
    let t = Instant::now();
    let dags = af.home.join("dags").to_string_lossy().into_owned();
    metagen::generate(&mut db, &dags, 0, a.backfills, a.runs, a.tis)
        .unwrap_or_else(|e| die(e.to_string()));
    println!(
        "reconcile ({backend}): generated {} backfills, {} dag_run, {} task_instance rows in {:.1} s",
        a.backfills,
        a.backfills * a.runs,
        a.backfills * a.runs * a.tis,
        t.elapsed().as_secs_f64()
    );
    let rss_before = status_kib(std::process::id(), "VmRSS:");
    first.reconcile();
    let initial = first.last_pass();
    drop(first);
    let mut e = engine(&af);
    e.reconcile();
    let cold = e.last_pass();
    e.reconcile();
    let steady = e.last_pass();
    let moved = metagen::advance(&mut db, a.backfills, 100).unwrap_or_else(|e| die(e.to_string()));
    e.reconcile();
    let incremental = e.last_pass();
    drop(e);
    // A fresh engine with nothing kept: every run counted.
    db.batch("DELETE FROM backfilld_pass_mark")
        .unwrap_or_else(|e| die(e.to_string()));
    let mut e = engine(&af);
    e.reconcile();
    let full = e.last_pass();
    let show = |what: &str, s: backfilld::engine::PassStats| {
        println!(
            "reconcile ({backend}): {what}: {} ms, {} statements, {} backfills, {} recounted, {} rows written",
            s.millis, s.queries, s.backfills, s.recomputed, s.changed
        );
    };
    show("first pass (every row written)", initial);
    show(
        "cold pass (a fresh engine, the kept cache; target <= 350 ms)",
        cold,
    );
    show("steady pass (nothing new; target <= 100 ms)", steady);
    show(
        &format!("incremental pass after 1% moved on ({moved} runs changed; target <= 20 ms)"),
        incremental,
    );
    show("full pass (a fresh engine, nothing kept)", full);
    println!(
        "reconcile ({backend}): bench process RSS {} KiB before the passes, peak {} KiB (target <= 65536)",
        rss_before,
        status_kib(std::process::id(), "VmHWM:")
    );
}

/// The seed import job at scale on one backend: the seed's table generated, then the job
/// started through the control request and its batches run until it finishes, timed.
fn seed_bench(a: &Args, pg: Option<&str>) {
    use backfilld::control::{ControlRequest, ControlResponse};
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let af = Airflow::on(
        if pg.is_some() {
            "seed-pg"
        } else {
            "seed-sqlite"
        },
        pg,
    );
    let mut e = engine(&af);
    let url = backfilld::config::Config::parse(
        Path::new("bench"),
        &format!("[airflow]\nhome = \"{}\"\n", af.home.display()),
    )
    .and_then(|c| c.resolve_airflow())
    .map(|l| l.db)
    .unwrap_or_else(|e| die(e.to_string()));
    let mut db = backfilld::metadb::MetaDb::connect(&url).unwrap_or_else(|e| die(e.to_string()));
    let t = Instant::now();
    let dags = af.home.join("dags").to_string_lossy().into_owned();
    metagen::seed_table(&mut db, &dags, "sales", a.seed_backfills, a.seed_runs, 0)
        .unwrap_or_else(|e| die(e.to_string()));
    println!(
        "seed import ({backend}): generated {} seed backfills with {} runs each in {:.1} s",
        a.seed_backfills,
        a.seed_runs,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let started = e.query(
        0,
        ControlRequest::ImportSeed {
            dry_run: false,
            attach: false,
        },
    );
    let ControlResponse::SeedImportJob { job, .. } = started else {
        die(format!("import-seed: {started:?}"));
    };
    let start_ms = t.elapsed().as_millis();
    let mut batches = 0;
    while e.import_step() {
        batches += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let done = e.query(
        0,
        ControlRequest::ImportSeedStatus {
            job: Some(job.id),
            report: false,
        },
    );
    let ControlResponse::SeedImportJob { job, .. } = done else {
        die(format!("import-seed status: {done:?}"));
    };
    println!(
        "seed import ({backend}): {} seed backfills in {secs:.1} s (target <= 30 s), the request answered in {start_ms} ms, {batches} batches; {}",
        a.seed_backfills,
        job.summary()
    );
    println!(
        "seed import ({backend}): bench process peak RSS {} KiB",
        status_kib(std::process::id(), "VmHWM:")
    );
}

/// Run `bench` on SQLite, then on PostgreSQL in a database of its own (dropped after unless
/// `--keep-pg`), as the flags ask.
fn on_each_backend(a: &Args, name: &str, bench: fn(&Args, Option<&str>)) {
    if a.sqlite {
        bench(a, None);
    }
    if a.pg {
        let url = pg_database("reconcile");
        bench(a, Some(&url));
        if a.keep_pg {
            println!("{name} (PostgreSQL): database kept: {url}");
        } else {
            drop_pg_database(&url);
        }
    }
}

/// `airflow users create` arguments of the benches' Admin user `root` (password `pw`).
const ROOT_ADMIN: [&str; 14] = [
    "users",
    "create",
    "-u",
    "root",
    "-p",
    "pw",
    "-f",
    "r",
    "-l",
    "r",
    "-e",
    "root@bench.invalid",
    "-r",
    "Admin",
];

fn main() {
    let a = args();
    // Per-statement timings on stderr when asked for (e.g.
    // `BACKFILLD_LOG=backfilld::metadb::sql=trace`).
    if let Ok(filter) = std::env::var("BACKFILLD_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    println!("backfilld benchmarks on {}", machine());
    if a.only_reconcile {
        return on_each_backend(&a, "reconcile", reconcile_bench);
    }
    if a.only_list {
        return list_bench(&a);
    }
    if a.only_seed {
        return on_each_backend(&a, "seed import", seed_bench);
    }
    if a.only_side_by_side {
        return on_each_backend(&a, "side by side", side_by_side);
    }
    if a.only_latency {
        return latency::bench(&a.latency);
    }

    // Idle and ingest share one Airflow without a scheduler (nothing parses the copies).
    let af = Airflow::new("ingest");
    let daemon = start_daemon(&af);
    let pid = daemon.child.id();
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let idle_cpu = cpu_seconds(pid) - before;
    println!(
        "idle: {:.3} s CPU over {} s (target < 0.1 s per 60 s); RSS {} KiB (target <= 20480)",
        idle_cpu,
        a.idle_secs,
        status_kib(pid, "VmRSS:")
    );

    let start_day = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    let mut renamed: Vec<(String, SystemTime)> = Vec::with_capacity(a.requests);
    let bodies: Vec<(String, String, String)> = (0..a.requests)
        .map(|i| {
            let day = start_day + chrono::Days::new(i as u64);
            (
                format!("bench-{i:05}.toml"),
                format!("dag_id = \"sales\"\nstart = {day}\nend = {day}\n"),
                format!("{day}T00:00:00"),
            )
        })
        .collect();
    let t0 = Instant::now();
    for (name, body, day) in &bodies {
        renamed.push((day.clone(), drop_file(&daemon.spool, name, body)));
    }
    let copy_dir = af.home.join("dags/backfill_user_dags");
    let copies_on_disk = || {
        std::fs::read_dir(&copy_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".py"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait("every DAG copy", Duration::from_secs(600), || {
        (copies_on_disk() >= a.requests).then_some(())
    });
    let all_done = t0.elapsed();
    // When each copy appeared under its name: the ctime its rename set.
    let written: std::collections::HashMap<String, DateTime<Utc>> = {
        use std::os::unix::fs::MetadataExt;
        let c = af.db();
        let mut st = c
            .prepare("SELECT start_date, id FROM backfilld_backfill")
            .unwrap_or_else(|e| die(e.to_string()));
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap_or_else(|e| die(e.to_string()));
        rows.filter_map(Result::ok)
            .filter_map(|(s, id)| {
                let m = std::fs::metadata(copy_dir.join(format!("{id}.py"))).ok()?;
                let at = DateTime::from_timestamp(m.ctime(), u32::try_from(m.ctime_nsec()).ok()?)?;
                Some((s.get(..19)?.to_owned(), at))
            })
            .collect()
    };
    let mut lat: Vec<f64> = renamed
        .iter()
        .filter_map(|(day, t)| {
            let w = written.get(day)?;
            let r: DateTime<Utc> = (*t).into();
            Some((*w - r).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(|x, y| x.total_cmp(y));
    let copies = copies_on_disk();
    println!(
        "ingest: {} requests, all DAG copies on disk after {:.2} s (target <= 10 s); {} copies; \
         rename-to-copy latency p50 {:.1} ms, p99 {:.1} ms (target <= 50), max {:.1} ms; daemon peak RSS {} KiB",
        a.requests,
        all_done.as_secs_f64(),
        copies,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        status_kib(pid, "VmHWM:")
    );
    // Outside a burst: single requests, one at a time, each once the one before is on disk.
    let mut single: Vec<f64> = Vec::with_capacity(a.singles);
    for i in 0..a.singles {
        std::thread::sleep(Duration::from_millis(200));
        let day = start_day + chrono::Days::new((a.requests + i) as u64);
        let t = drop_file(
            &daemon.spool,
            &format!("single-{i:03}.toml"),
            &format!("dag_id = \"sales\"\nstart = {day}\nend = {day}\n"),
        );
        wait(
            "a single request's DAG copy",
            Duration::from_secs(60),
            || (copies_on_disk() > a.requests + i).then_some(()),
        );
        let id: String = af
            .db()
            .query_row(
                "SELECT id FROM backfilld_backfill WHERE start_date LIKE ?1",
                [format!("{day}%")],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| die(e.to_string()));
        let m = std::fs::metadata(copy_dir.join(format!("{id}.py")))
            .unwrap_or_else(|e| die(e.to_string()));
        let at = {
            use std::os::unix::fs::MetadataExt;
            DateTime::from_timestamp(m.ctime(), u32::try_from(m.ctime_nsec()).unwrap_or(0))
                .unwrap_or_default()
        };
        let r: DateTime<Utc> = t.into();
        single.push((at - r).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    single.sort_by(|x, y| x.total_cmp(y));
    if !single.is_empty() {
        println!(
            "ingest outside bursts: {} single requests 200 ms apart, rename-to-copy latency p50 {:.1} ms, max {:.1} ms",
            single.len(),
            percentile(&single, 0.5),
            single.last().copied().unwrap_or(f64::NAN)
        );
    }
    drop(daemon);

    if a.first_run {
        let af = Airflow::new("first-run");
        let log = std::fs::File::create(af.home.join("scheduler.log"))
            .unwrap_or_else(|e| die(e.to_string()));
        let mut scheduler = af
            .command("airflow")
            .arg("scheduler")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| die(e.to_string()));
        let daemon = start_daemon(&af);
        std::thread::sleep(Duration::from_secs(10));
        let t = Instant::now();
        drop_file(
            &daemon.spool,
            "first.toml",
            "dag_id = \"sales\"\nstart = 2024-05-01\nend = 2024-05-01\n",
        );
        let secs = wait("the first backfill run", Duration::from_secs(600), || {
            (af.count("SELECT COUNT(*) FROM dag_run WHERE dag_id LIKE 'sales_backfill_%'") > 0)
                .then(|| t.elapsed())
        });
        println!(
            "request to first run: {:.1} s with default dag_dir_list_interval (target <= 15 s)",
            secs.as_secs_f64()
        );
        let _ = scheduler.kill();
        let _ = scheduler.wait();
    }
    if a.reconcile {
        on_each_backend(&a, "reconcile", reconcile_bench);
    }
    if a.list {
        list_bench(&a);
    }
}

/// Listing at scale: N generated backfills (SQLite; `--runs` dates and runs each, one task
/// instance a run), the daemon serving `backfillctl list --json --all` and then every page of
/// the v2 API's list: the daemon's peak RSS during each (its high-water mark reset through `/proc/<pid>/clear_refs` before each),
/// the time and the size of the answer.
fn list_bench(a: &Args) {
    let af = Airflow::on("list-sqlite", None);
    let url = backfilld::config::Config::parse(
        Path::new("bench"),
        &format!("[airflow]\nhome = \"{}\"\n", af.home.display()),
    )
    .and_then(|c| c.resolve_airflow())
    .map(|l| l.db)
    .unwrap_or_else(|e| die(e.to_string()));
    let mut db = backfilld::metadb::MetaDb::connect(&url).unwrap_or_else(|e| die(e.to_string()));
    backfilld::metadb::store::migrate(&mut db).unwrap_or_else(|e| die(e.to_string()));
    let dags = af.home.join("dags").to_string_lossy().into_owned();
    metagen::generate(&mut db, &dags, 0, a.backfills, a.runs, 1)
        .unwrap_or_else(|e| die(e.to_string()));
    drop(db);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| die(e.to_string()));
    let daemon = start_daemon_with(&af, &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let pid = daemon.child.id();
    // Let the first passes over the new backfills finish: CPU time steady for 3 s.
    let mut last = -1.0;
    wait("the daemon to settle", Duration::from_secs(600), || {
        std::thread::sleep(Duration::from_secs(3));
        let now = cpu_seconds(pid);
        let settled = now - last < 0.05;
        last = now;
        settled.then_some(())
    });
    let settled_peak = status_kib(pid, "VmHWM:");
    let reset = || {
        if std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_err() {
            die("cannot reset the daemon's peak RSS (/proc/<pid>/clear_refs)".into());
        }
    };
    println!(
        "list: {} backfills; daemon RSS {} KiB settled, peak {} KiB since start (startup and first passes)",
        a.backfills,
        status_kib(pid, "VmRSS:"),
        settled_peak
    );

    reset();
    let out = af.home.join("list.json");
    let file = std::fs::File::create(&out).unwrap_or_else(|e| die(e.to_string()));
    let t = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_backfillctl"))
        .arg("--config")
        .arg(af.home.join("backfilld/backfilld.toml"))
        .args(["list", "--json", "--all"])
        .stdout(file)
        .status()
        .unwrap_or_else(|e| die(e.to_string()));
    if !status.success() {
        die(format!("backfillctl list failed: {status}"));
    }
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "list: backfillctl list --json --all: {:.2} s, {:.1} MB printed; daemon peak RSS {} KiB (target <= 65536)",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6,
        status_kib(pid, "VmHWM:")
    );

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "root:pw")
    );
    // One request with Airflow's own hash of root's password (werkzeug's scrypt, 32 MiB a
    // verification), then a cheap hash, so the pages measure the list rather than the login.
    reset();
    let first = agent
        .get(format!(
            "http://127.0.0.1:{port}/api/v2/backfills?include_deleted=true&limit=1"
        ))
        .header("Authorization", &auth)
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| die(e.to_string()));
    println!(
        "list: one GET /api/v2/backfills?limit=1 ({first}) with a Basic login against the scrypt hash: daemon peak RSS {} KiB",
        status_kib(pid, "VmHWM:")
    );
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha256>>(b"pw", b"benchsalt", 1000, &mut key)
        .unwrap_or_else(|e| die(e.to_string()));
    let hash = format!("pbkdf2:sha256:1000$benchsalt${}", hex::encode(key));
    af.db()
        .execute(
            "UPDATE ab_user SET password = ?1 WHERE username = 'root'",
            [&hash],
        )
        .unwrap_or_else(|e| die(e.to_string()));
    // The default page size, then the largest.
    for limit in [
        backfilld::paging::DEFAULT_LIMIT,
        backfilld::paging::MAX_LIMIT,
    ] {
        reset();
        let t = Instant::now();
        let (mut pages, mut seen, mut bytes) = (0, 0usize, 0usize);
        let mut path = format!("/api/v2/backfills?include_deleted=true&limit={limit}");
        loop {
            let mut r = agent
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("Authorization", &auth)
                .call()
                .unwrap_or_else(|e| die(format!("GET {path}: {e}")));
            let body = r
                .body_mut()
                .with_config()
                .limit(256 * 1024 * 1024)
                .read_to_string()
                .unwrap_or_else(|e| die(e.to_string()));
            bytes += body.len();
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| die(e.to_string()));
            pages += 1;
            seen += v["backfills"].as_array().map_or(0, Vec::len);
            match v["next"].as_str() {
                Some(next) => path = next.to_owned(),
                None => break,
            }
        }
        if seen != a.backfills {
            die(format!(
                "the v2 pages held {seen} backfills, not {}",
                a.backfills
            ));
        }
        println!(
            "list: GET /api/v2/backfills, {pages} pages of {limit}: {:.2} s, {:.1} MB; daemon peak RSS {} KiB (target <= 65536)",
            t.elapsed().as_secs_f64(),
            bytes as f64 / 1e6,
            status_kib(pid, "VmHWM:")
        );
    }
    // Last, as their failures lock the client's address out for a while: eight logins at
    // once that each need a verification (unknown users are checked against a dummy scrypt
    // hash, so timing does not tell which names exist). Verifications run one at a time, so
    // the peak stays at one verification's 32 MiB over the settled RSS.
    reset();
    let started = Instant::now();
    let logins: Vec<_> = (0..8)
        .map(|i| {
            let agent = agent.clone();
            let url = format!("http://127.0.0.1:{port}/api/v2/backfills?limit=1");
            std::thread::spawn(move || {
                let auth = format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("bench_nobody_{i}:wrong")
                    )
                );
                agent
                    .get(url)
                    .header("Authorization", &auth)
                    .call()
                    .map_or_else(
                        |e| match e {
                            ureq::Error::StatusCode(code) => code,
                            other => die(other.to_string()),
                        },
                        |r| r.status().as_u16(),
                    )
            })
        })
        .collect();
    let codes: Vec<u16> = logins
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| die("a login thread panicked".into()))
        })
        .collect();
    println!(
        "list: 8 concurrent Basic logins of unknown users (statuses {codes:?}), {:.2} s: daemon peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        status_kib(pid, "VmHWM:")
    );
    drop(daemon);
}

/// The seed plugin as installed by `scripts/airflow-venvs.sh` (`pip install --target`).
fn seed_plugin_dir() -> PathBuf {
    let base = std::env::var_os("BACKFILLD_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/backfilld/venvs")
        });
    let dir = base.join("seedplugin");
    if !dir.join("linkedin/airflow/backfill/__init__.py").exists() {
        die(format!(
            "the seed plugin is missing from {}: run scripts/airflow-venvs.sh",
            dir.display()
        ));
    }
    dir
}

/// The seed's own state update pass, timed inside its process, with the statements its
/// SQLAlchemy engine sent and the process's peak RSS. Prints one `RESULT:` line of JSON.
const SEED_PASS_PY: &str = r#"
import json, logging, resource, time
from sqlalchemy import event
from airflow import settings
from linkedin.airflow.backfill.models.backfill import init_models
from linkedin.airflow.backfill.dag_operations.state_update import update_backfill_states
init_models()
logging.disable(logging.INFO)
n = [0]
def count(*args, **kwargs):
    n[0] += 1
event.listen(settings.engine, "before_cursor_execute", count)
t = time.monotonic()
update_backfill_states(None)
secs = time.monotonic() - t
print("RESULT:" + json.dumps({"secs": secs, "statements": n[0],
    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"#;

/// The seed's own pass on `af`'s DB, with its own code: its time in seconds.
fn seed_pass(af: &Airflow, backend: &str) -> f64 {
    let out = af
        .command("python")
        .env("PYTHONPATH", seed_plugin_dir())
        .arg("-c")
        .arg(SEED_PASS_PY)
        .output()
        .unwrap_or_else(|e| die(e.to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT:"))
        .unwrap_or_else(|| {
            die(format!(
                "the seed's pass printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        });
    let seed: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| die(format!("{e}: {line}")));
    let seed_secs = seed["secs"].as_f64().unwrap_or(f64::NAN);
    println!(
        "side by side ({backend}): seed pass (update_backfill_states(None)): {:.2} s, {} statements, peak RSS {} KiB",
        seed_secs, seed["statements"], seed["maxrss_kib"]
    );
    seed_secs
}

/// Reset this process's peak RSS (`VmHWM`) to its current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The seed and backfilld side by side on one backend, on the same DB in one run.
fn side_by_side(a: &Args, pg: Option<&str>) {
    use backfilld::control::{ControlRequest, ControlResponse};
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let af = Airflow::on(
        if pg.is_some() {
            "side-by-side-pg"
        } else {
            "side-by-side-sqlite"
        },
        pg,
    );
    let url = backfilld::config::Config::parse(
        Path::new("bench"),
        &format!("[airflow]\nhome = \"{}\"\n", af.home.display()),
    )
    .and_then(|c| c.resolve_airflow())
    .map(|l| l.db)
    .unwrap_or_else(|e| die(e.to_string()));
    let mut db = backfilld::metadb::MetaDb::connect(&url).unwrap_or_else(|e| die(e.to_string()));
    let t = Instant::now();
    let dags = af.home.join("dags").to_string_lossy().into_owned();
    let running = 8;
    metagen::seed_table(&mut db, &dags, "sales", a.backfills, a.runs, running)
        .unwrap_or_else(|e| die(e.to_string()));
    // The seed's copy files of its running backfills (an import of a running one needs it).
    let copies = af.home.join("dags/backfill_user_dags");
    std::fs::create_dir_all(&copies).unwrap_or_else(|e| die(e.to_string()));
    for k in (0..a.backfills).filter(|k| k % 10 < running) {
        std::fs::write(
            copies.join(format!("seed_{k}_backfill.py")),
            format!("# the seed's copy of sales for seed_{k}_backfill\n"),
        )
        .unwrap_or_else(|e| die(e.to_string()));
    }
    println!(
        "side by side ({backend}): generated the seed's table, {} backfills ({} running) with {} runs each ({} dag_run) in {:.1} s",
        a.backfills,
        a.backfills / 10 * running,
        a.runs,
        a.backfills / 10 * 9 * a.runs,
        t.elapsed().as_secs_f64()
    );
    // The seed's pass, with its own code (unless left out: it takes minutes).
    let seed_secs = if a.seed_pass {
        seed_pass(&af, backend)
    } else {
        f64::NAN
    };
    // The import, as a job.
    let mut e = engine(&af);
    reset_peak_rss();
    let t = Instant::now();
    let started = e.query(
        0,
        ControlRequest::ImportSeed {
            dry_run: false,
            attach: false,
        },
    );
    let ControlResponse::SeedImportJob { .. } = started else {
        die(format!("import-seed: {started:?}"));
    };
    while e.import_step() {}
    println!(
        "side by side ({backend}): import-seed: {:.2} s, peak RSS {} KiB",
        t.elapsed().as_secs_f64(),
        status_kib(std::process::id(), "VmHWM:")
    );
    let show = |what: &str, s: backfilld::engine::PassStats, rss: u64| {
        println!(
            "side by side ({backend}): backfilld {what}: {:.3} s, {} statements, {} backfills, {} recounted, {} rows written, peak RSS {rss} KiB; seed/backfilld {:.0}x",
            s.millis as f64 / 1000.0,
            s.queries,
            s.backfills,
            s.recomputed,
            s.changed,
            seed_secs * 1000.0 / (s.millis.max(1) as f64)
        );
    };
    reset_peak_rss();
    let first = Instant::now();
    e.reconcile();
    show(
        "first pass after the import (every row written, counted in full)",
        e.last_pass(),
        status_kib(std::process::id(), "VmHWM:"),
    );
    drop(e);
    for round in 0..2 {
        reset_peak_rss();
        let mut e = engine(&af);
        e.reconcile();
        show(
            &format!("cold pass {} (a fresh engine)", round + 1),
            e.last_pass(),
            status_kib(std::process::id(), "VmHWM:"),
        );
        reset_peak_rss();
        e.reconcile();
        show(
            "steady pass (nothing new)",
            e.last_pass(),
            status_kib(std::process::id(), "VmHWM:"),
        );
        let moved = metagen::advance_named(&mut db, "seed", a.backfills, 100)
            .unwrap_or_else(|e| die(e.to_string()));
        reset_peak_rss();
        e.reconcile();
        show(
            &format!("incremental pass after 1% moved on ({moved} runs changed)"),
            e.last_pass(),
            status_kib(std::process::id(), "VmHWM:"),
        );
    }
    if a.settled {
        // Once the imported deletions settled (30 s after they were marked), nothing is left
        // to carry out: the passes of a daemon at rest.
        let wait = Duration::from_secs(32).saturating_sub(first.elapsed());
        std::thread::sleep(wait);
        let mut e = engine(&af);
        e.reconcile();
        show(
            "cold pass 3 (a fresh engine, deletions settled)",
            e.last_pass(),
            status_kib(std::process::id(), "VmHWM:"),
        );
        for round in 0..2 {
            reset_peak_rss();
            e.reconcile();
            show(
                &format!("steady pass {} (deletions settled)", round + 1),
                e.last_pass(),
                status_kib(std::process::id(), "VmHWM:"),
            );
        }
        for round in 0..2 {
            let moved = metagen::advance_slice(&mut db, "seed", a.backfills, 100, round + 1)
                .unwrap_or_else(|e| die(e.to_string()));
            reset_peak_rss();
            e.reconcile();
            show(
                &format!(
                    "incremental pass {} after 1% moved on ({moved} runs changed, deletions settled)",
                    round + 1
                ),
                e.last_pass(),
                status_kib(std::process::id(), "VmHWM:"),
            );
        }
    }
}
