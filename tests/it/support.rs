//! Shared helpers for the integration tests: locating the Airflow venvs built by `.ci/run`.
#![allow(dead_code)]

use std::path::PathBuf;

/// An Airflow major version the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum AirflowMajor {
    /// Airflow 2.11.x.
    V2,
    /// Airflow 3.1.x with the FAB provider.
    V3,
}

/// The Python venv holding the given Airflow, as built by `scripts/airflow-venvs.sh`.
///
/// `BACKFILLD_VENV_DIR` overrides the cache directory. Panics (failing the test) when the venv
/// is missing: tests never skip for want of Airflow.
#[allow(dead_code)]
pub fn airflow_venv(major: AirflowMajor) -> PathBuf {
    let base = std::env::var_os("BACKFILLD_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/backfilld/venvs")
        });
    let dir = base.join(match major {
        AirflowMajor::V2 => "af2",
        AirflowMajor::V3 => "af3",
    });
    assert!(
        dir.join("bin/airflow").exists(),
        "Airflow venv {} is missing: run scripts/airflow-venvs.sh (or .ci/run) first",
        dir.display()
    );
    dir
}

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Repository root (for `dags/`).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Poll `f` every 500 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A child process killed (with its whole process group) when dropped.
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
        }
    }

    /// Send SIGKILL to the process group, as `kill -9` would, and reap it.
    pub fn kill9(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
    }
}

/// A real Airflow installation in a temporary AIRFLOW_HOME with a SQLite metadata DB.
pub struct Airflow {
    /// AIRFLOW_HOME (kept on failure for inspection under target/).
    pub home: PathBuf,
    /// The venv.
    pub venv: PathBuf,
    /// Which major.
    pub major: AirflowMajor,
    procs: Vec<Proc>,
}

impl Airflow {
    /// Create AIRFLOW_HOME under `target/it/<name>`, copy the example DAGs, migrate the DB.
    pub fn sqlite(major: AirflowMajor, name: &str) -> Airflow {
        let venv = airflow_venv(major);
        let home = repo_dir().join("target/it").join(name);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("dags")).unwrap_or_else(|e| panic!("{e}"));
        for entry in std::fs::read_dir(repo_dir().join("dags")).unwrap_or_else(|e| panic!("{e}")) {
            let p = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if p.extension().is_some_and(|e| e == "py") {
                let name = p.file_name().unwrap_or_default();
                std::fs::copy(&p, home.join("dags").join(name)).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let af = Airflow {
            home,
            venv,
            major,
            procs: Vec::new(),
        };
        af.cli_ok(&["db", "migrate"]);
        af
    }

    /// The metadata DB file.
    pub fn db_path(&self) -> PathBuf {
        self.home.join("airflow.db")
    }

    /// The DAGs folder.
    pub fn dags_folder(&self) -> PathBuf {
        self.home.join("dags")
    }

    /// A command running `program` from the venv with this Airflow's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.venv.join("bin").join(program));
        let path = format!(
            "{}:{}",
            self.venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("AIRFLOW_HOME", &self.home)
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
            .env("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "2")
            .env("AIRFLOW__SCHEDULER__PARSING_PROCESSES", "1")
            .env("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "16")
            .env("PYTHONWARNINGS", "ignore");
        if self.major == AirflowMajor::V2 {
            cmd.env("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor");
        }
        cmd
    }

    /// Run an `airflow` CLI command.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command("airflow")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("airflow {args:?}: {e}"))
    }

    /// Run an `airflow` CLI command that must succeed.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "airflow {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Create the Airflow user `name` with `role` through Airflow's CLI, unless it exists.
    pub fn ensure_user(&self, name: &str, role: &str) {
        let email = format!("{name}@backfilld.invalid");
        let out = self.cli(&[
            "users", "create", "-u", name, "-p", "pw", "-f", name, "-l", "test", "-e", &email,
            "-r", role,
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() || text.contains("already exist"),
            "airflow users create {name}: {text}"
        );
    }

    /// Parse every DAG file into the DB without a scheduler.
    pub fn reserialize(&self) {
        self.cli_ok(&["dags", "reserialize"]);
    }

    /// Start the scheduler (which also parses DAG files and, on 2.x, runs tasks).
    pub fn start_scheduler(&mut self) {
        let log = self.home.join("scheduler.log");
        let mut cmd = self.command("airflow");
        cmd.arg("scheduler");
        self.procs.push(Proc::spawn("airflow scheduler", cmd, &log));
    }

    /// Open the metadata DB for assertions (independent of backfilld's own DB code).
    pub fn sql(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c.busy_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// A single integer from a query.
    pub fn count(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> i64 {
        self.sql()
            .query_row(sql, params, |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Wait until the DAG is serialized in the DB.
    pub fn wait_parsed(&self, dag_id: &str, timeout: Duration) {
        wait_for(&format!("Airflow to parse {dag_id}"), timeout, || {
            (self.count(
                "SELECT COUNT(*) FROM serialized_dag WHERE dag_id = ?1",
                &[&dag_id],
            ) > 0)
                .then_some(())
        });
    }
}

/// A running `backfilld` with its own spool, configured for an [`Airflow`].
pub struct Daemon {
    /// Its config file.
    pub config: PathBuf,
    /// Its spool root.
    pub spool: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    proc: Option<Proc>,
}

impl Daemon {
    /// Write a config next to AIRFLOW_HOME and start the daemon; waits for its socket. The
    /// tests run as root, so Airflow's roles are synced and root is made an Airflow Admin
    /// (backfilld maps uid 0 to the Airflow user `root`).
    pub fn start(af: &Airflow, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(af, extra_env, "")
    }

    /// [`Daemon::start`] with extra configuration appended (e.g. `[identity]`, `[authz]`).
    pub fn start_with(af: &Airflow, extra_env: &[(&str, &str)], extra_config: &str) -> Daemon {
        // Airflow's default roles and their DAG permissions exist only after a sync (a
        // webserver start does the same in production).
        af.cli_ok(&["sync-perm"]);
        af.ensure_user("root", "Admin");
        let auth_manager = if af.major == AirflowMajor::V3 {
            "auth_manager = \"airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager\"\n"
        } else {
            ""
        };
        let dir = af.home.join("backfilld");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let spool = dir.join("spool");
        let config = dir.join("backfilld.toml");
        std::fs::write(
            &config,
            format!(
                "[airflow]\nhome = \"{}\"\n{auth_manager}\n[spool]\ndir = \"{}\"\nrescan_interval_secs = 5\n\n[reconcile]\ninterval_secs = 2\nregister_timeout_secs = 300\n{extra_config}",
                af.home.display(),
                spool.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut d = Daemon {
            config,
            spool,
            log: dir.join("daemon.log"),
            proc: None,
        };
        d.restart(extra_env);
        d
    }

    /// Start (again) with the same config.
    pub fn restart(&mut self, extra_env: &[(&str, &str)]) {
        self.proc = None;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backfilld"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("BACKFILLD_LOG", "info,backfilld=debug");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let n = std::fs::read_dir(self.log.parent().unwrap_or(Path::new(".")))
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.log.with_extension(format!("{n}.log"));
        self.log = log.clone();
        let mut proc = Proc::spawn("backfilld", cmd, &log);
        let sock = self.spool.join("public/control.sock");
        wait_for(
            "backfilld's control socket",
            Duration::from_secs(30),
            || {
                assert!(proc.alive(), "backfilld exited:\n{}", self.log_text());
                std::os::unix::net::UnixStream::connect(&sock)
                    .ok()
                    .map(|_| ())
            },
        );
        self.proc = Some(proc);
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
        self.proc = None;
    }

    /// Run `backfillctl --config <ours> args...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_backfillctl"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("backfillctl: {e}"))
    }

    /// `backfillctl ... --json`, parsed; panics on failure.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "backfillctl {args:?} failed ({}):\n{}\n{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Drop a request file the way a user would: write elsewhere, rename into `incoming/`.
    pub fn drop_request(&self, name: &str, body: &str) {
        let tmp = self.spool.join("incoming").join(format!(".{name}.part"));
        std::fs::write(&tmp, body).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, self.spool.join("incoming").join(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Wait for a backfill to reach a terminal state; returns its status JSON.
    pub fn wait_finished(&self, id: &str, timeout: Duration) -> serde_json::Value {
        wait_for(&format!("backfill {id} to finish"), timeout, || {
            let s = self.ctl_json(&["status", id, "--json"]);
            matches!(
                s["state"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
            .then_some(s)
        })
    }
}
