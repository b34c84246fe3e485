//! Whole-process benchmarks of `backfilld` against a real Airflow 2.11 metadata DB (SQLite,
//! migrated by Airflow itself), printing their figures:
//!
//! - idle: CPU time the daemon uses over a quiet interval, and its RSS;
//! - ingest: N request files renamed into `incoming/` at once: time until every DAG copy is on
//!   disk, and per-request latency from rename to copy written (p50/p99/max);
//! - request to first run: seconds from a request's rename to the first `dag_run` of its copy,
//!   with an unmodified Airflow scheduler (default `dag_dir_list_interval`).
//!
//! Run: `cargo bench --bench daemon -- [--requests N] [--idle-secs S] [--no-first-run]`
//! (defaults 1000, 60, with first run). Needs the venvs of `scripts/airflow-venvs.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

struct Args {
    requests: usize,
    idle_secs: u64,
    first_run: bool,
}

fn args() -> Args {
    let mut a = Args {
        requests: 1000,
        idle_secs: 60,
        first_run: true,
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
    let base = std::env::var_os("BACKFILLD_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/backfilld/venvs")
        });
    let v = base.join("af2");
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
}

impl Airflow {
    fn new(name: &str) -> Airflow {
        let home = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench")
            .join(name);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("dags")).unwrap_or_else(|e| die(e.to_string()));
        let sales = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dags/sales.py");
        std::fs::copy(sales, home.join("dags/sales.py")).unwrap_or_else(|e| die(e.to_string()));
        let af = Airflow { home, venv: venv() };
        af.cli(&["db", "migrate"]);
        af.cli(&["dags", "reserialize"]);
        af.cli(&["sync-perm"]);
        af.cli(&[
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
        ]);
        af
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.venv.join("bin").join(program));
        c.env("AIRFLOW_HOME", &self.home)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor")
            .env("PYTHONWARNINGS", "ignore")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.venv.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        c
    }

    fn cli(&self, args: &[&str]) {
        let out = self
            .command("airflow")
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

    fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.home.join("airflow.db"))
            .unwrap_or_else(|e| die(e.to_string()));
        let _ = c.busy_timeout(Duration::from_secs(10));
        c
    }

    fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
    }
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
    let dir = af.home.join("backfilld");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(e.to_string()));
    let spool = dir.join("spool");
    let config = dir.join("backfilld.toml");
    std::fs::write(
        &config,
        format!(
            "[airflow]\nhome = \"{}\"\n[spool]\ndir = \"{}\"\n[limits]\nmax_pending_per_user = 100000\n",
            af.home.display(),
            spool.display()
        ),
    )
    .unwrap_or_else(|e| die(e.to_string()));
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap_or_else(|e| die(e.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_backfilld"))
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

fn main() {
    let a = args();
    println!("backfilld benchmarks on {}", machine());

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
    let n = a.requests as i64;
    wait("every DAG copy", Duration::from_secs(600), || {
        (af.count("SELECT COUNT(*) FROM backfilld_backfill WHERE copy_written_at IS NOT NULL") >= n)
            .then_some(())
    });
    let all_done = t0.elapsed();
    let written: std::collections::HashMap<String, DateTime<Utc>> = {
        let c = af.db();
        let mut st = c
            .prepare("SELECT start_date, copy_written_at FROM backfilld_backfill")
            .unwrap_or_else(|e| die(e.to_string()));
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap_or_else(|e| die(e.to_string()));
        rows.filter_map(Result::ok)
            .filter_map(|(s, w)| {
                Some((
                    s.get(..19)?.to_owned(),
                    DateTime::parse_from_rfc3339(&w).ok()?.with_timezone(&Utc),
                ))
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
    let copies = std::fs::read_dir(af.home.join("dags/backfill_user_dags"))
        .map(|d| d.count())
        .unwrap_or(0);
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
    println!("reconcile at scale (10,000 backfills / 1M dag_run): not measured yet (set-based reconcile pending)");
}
