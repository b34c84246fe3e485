//! Shared helpers for the integration tests: locating the Airflow venvs built by `.ci/run`.
#![allow(dead_code)]

use std::path::PathBuf;

/// An Airflow major version the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum AirflowMajor {
    /// Airflow 2.11.x.
    V2,
    /// Airflow 3.0.x with the FAB provider (the oldest 3.x minor).
    V30,
    /// Airflow 3.1.x with the FAB provider.
    V3,
    /// Airflow 3.2.x with the FAB provider.
    V32,
    /// The newest Airflow 3 release (3.3.x) with the FAB provider.
    V3Newest,
}

impl AirflowMajor {
    /// Whether this is an Airflow 3 release (3.0, 3.1, 3.2 or the newest 3.x).
    pub fn is_v3(self) -> bool {
        !matches!(self, AirflowMajor::V2)
    }

    /// The release a test asking for `self` gets: [`AirflowMajor::V3`] becomes
    /// [`AirflowMajor::V3Newest`] when `BACKFILLD_IT_AIRFLOW3=newest`, to run every Airflow 3.1
    /// test once against a new 3.x release without making it permanent.
    pub fn resolved(self) -> AirflowMajor {
        let newest = std::env::var("BACKFILLD_IT_AIRFLOW3").is_ok_and(|v| v == "newest");
        match self {
            AirflowMajor::V3 if newest => AirflowMajor::V3Newest,
            other => other,
        }
    }
}

/// The Python venv holding the given Airflow, as built by `scripts/airflow-venvs.sh`.
///
/// `BACKFILLD_VENV_DIR` overrides the cache directory; see [`AirflowMajor::resolved`]. Panics (failing the test) when the venv
/// is missing: tests never skip for want of Airflow.
#[allow(dead_code)]
pub fn airflow_venv(major: AirflowMajor) -> PathBuf {
    let dir = venv_cache().join(match major.resolved() {
        AirflowMajor::V2 => "af2",
        AirflowMajor::V30 => "af30",
        AirflowMajor::V3 => "af3",
        AirflowMajor::V32 => "af32",
        AirflowMajor::V3Newest => "af33",
    });
    assert!(
        dir.join("bin/airflow").exists(),
        "Airflow venv {} is missing: run scripts/airflow-venvs.sh (or .ci/run) first",
        dir.display()
    );
    dir
}

/// Where `scripts/airflow-venvs.sh` builds its venvs and package directories:
/// `BACKFILLD_VENV_DIR`, by default `~/.cache/backfilld/venvs`.
fn venv_cache() -> PathBuf {
    std::env::var_os("BACKFILLD_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/backfilld/venvs")
        })
}

/// A package directory `scripts/airflow-venvs.sh` installs with `pip install --target`
/// (`name`, e.g. `seedplugin`), for one test's `PYTHONPATH`. Panics (failing the test) when
/// `marker`, a file of the package, is missing: tests never skip for want of it.
#[allow(dead_code)]
pub fn package_dir(name: &str, marker: &str, what: &str) -> PathBuf {
    let dir = venv_cache().join(name);
    assert!(
        dir.join(marker).exists(),
        "{what} is missing from {}: run scripts/airflow-venvs.sh first",
        dir.display()
    );
    dir
}

/// The strings of a JSON array (other items and other values give none).
#[allow(dead_code)]
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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
    /// Start `cmd` in its own process group, its output into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
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

    /// Send `signal` to the process itself.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill {}: {e}", self.name));
    }

    /// Wait up to `timeout` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// Where a test Airflow keeps its metadata DB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaDbKind {
    /// `$AIRFLOW_HOME/airflow.db`.
    Sqlite,
    /// A PostgreSQL database, by SQLAlchemy URL.
    Postgres(String),
    /// A MySQL/MariaDB database, by SQLAlchemy URL.
    Mysql(String),
}

/// The shared PostgreSQL server the tests use (trust auth): `BACKFILLD_TEST_PG_URL` (set by
/// `scripts/test.sh`), by default `postgresql://postgres@127.0.0.1:5432`.
pub fn shared_pg() -> String {
    server_url(
        "BACKFILLD_TEST_PG_URL",
        "postgresql://postgres@127.0.0.1:5432",
    )
}

/// The shared MariaDB server the tests use (root, no password): `BACKFILLD_TEST_MYSQL_URL`
/// (set by `scripts/test.sh`), by default `mysql://root@127.0.0.1:3306`.
pub fn shared_mysql() -> String {
    server_url("BACKFILLD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
}

/// A server URL (no database) from the environment variable `var`, else `default`.
fn server_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| default.to_owned())
}

/// Run one admin statement on the shared PostgreSQL server; fails the test when it is down.
pub fn pg_admin(url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut c = diesel::PgConnection::establish(&format!("{url}/postgres")).unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is required for this test and is unreachable: {e}")
    });
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql} on {url}: {e}"));
}

/// The name of this checkout's database `name` on a shared server: `bfd_<name>_<checkout>`,
/// so test runs from different checkouts never drop each other's databases.
pub fn db_name(name: &str) -> String {
    use md5::{Digest, Md5};
    let checkout = hex::encode(Md5::digest(repo_dir().to_string_lossy().as_bytes()));
    format!("bfd_{name}_{}", &checkout[..8])
}

/// A fresh, empty PostgreSQL database [`db_name`]`(name)` on `server` (dropped first if left
/// over from an earlier run). Returns its SQLAlchemy URL.
pub fn fresh_pg_database(server: &str, name: &str) -> String {
    let db = db_name(name);
    pg_admin(
        server,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    pg_admin(server, &format!("CREATE DATABASE {db}"));
    format!("{server}/{db}")
}

/// A fresh, empty MariaDB/MySQL database [`db_name`]`(name)` on the shared server (dropped
/// first). Returns its SQLAlchemy URL (mysqlclient driver).
pub fn fresh_mysql_database(name: &str) -> String {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let db = db_name(name);
    let server = shared_mysql();
    let mut c = diesel::MysqlConnection::establish(&format!("{server}/test")).unwrap_or_else(|e| {
        panic!("MariaDB at {server} is required for this test and is unreachable: {e}")
    });
    c.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .unwrap_or_else(|e| panic!("creating {db}: {e}"));
    let address = server.split_once("://").map_or(server.as_str(), |(_, a)| a);
    format!("mysql+mysqldb://{address}/{db}")
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Python run by [`Airflow::query`]: one SQL statement through SQLAlchemy, rows as JSON.
const QUERY_PY: &str = r#"
import json, sys, datetime, sqlalchemy as sa
def cell(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)
eng = sa.create_engine(sys.argv[1])
with eng.begin() as c:
    res = c.execute(sa.text(sys.argv[2]))
    rows = [[cell(v) for v in r] for r in res.fetchall()] if res.returns_rows else []
print(json.dumps(rows))
"#;

/// One long-running Airflow component, remembered so it can be started again.
struct Component {
    name: &'static str,
    args: &'static [&'static str],
    proc: Proc,
    starts: u32,
}

/// A real Airflow installation in a temporary AIRFLOW_HOME, on SQLite, PostgreSQL or MySQL.
pub struct Airflow {
    /// AIRFLOW_HOME (kept on failure for inspection under target/).
    pub home: PathBuf,
    /// The venv.
    pub venv: PathBuf,
    /// Which major.
    pub major: AirflowMajor,
    /// Where the metadata DB is.
    pub db: MetaDbKind,
    /// Port of the Airflow 3 api-server (also the execution API).
    pub api_port: u16,
    log_port: u16,
    procs: Vec<Component>,
    /// Extra environment of every Airflow command (e.g. `PYTHONPATH` for a plugin).
    pub extra_env: Vec<(String, String)>,
}

impl Airflow {
    /// Create AIRFLOW_HOME under `target/it/<name>`, copy the example DAGs, migrate the DB.
    pub fn sqlite(major: AirflowMajor, name: &str) -> Airflow {
        Airflow::with_db(major, name, MetaDbKind::Sqlite, false)
    }

    /// Like [`Airflow::sqlite`], on a fresh database [`db_name`]`(name)` of the shared PostgreSQL.
    pub fn postgres(major: AirflowMajor, name: &str) -> Airflow {
        let url = fresh_pg_database(&shared_pg(), name);
        Airflow::with_db(major, name, MetaDbKind::Postgres(url), false)
    }

    /// Like [`Airflow::sqlite`], on a fresh database [`db_name`]`(name)` of the shared MariaDB.
    pub fn mysql(major: AirflowMajor, name: &str) -> Airflow {
        let url = fresh_mysql_database(name);
        Airflow::with_db(major, name, MetaDbKind::Mysql(url), false)
    }

    /// An Airflow on the given (already created, empty) database. For a server DB the URL goes
    /// into `airflow.cfg` (`sql_alchemy_conn`, or `sql_alchemy_conn_cmd` running `echo` when
    /// `via_cmd`), where both Airflow and backfilld find it.
    pub fn with_db(major: AirflowMajor, name: &str, db: MetaDbKind, via_cmd: bool) -> Airflow {
        let major = major.resolved();
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
        if let MetaDbKind::Postgres(url) | MetaDbKind::Mysql(url) = &db {
            let line = if via_cmd {
                // Airflow does not trim the command's output: no trailing newline.
                format!("sql_alchemy_conn_cmd = echo -n '{url}'")
            } else {
                format!("sql_alchemy_conn = {url}")
            };
            std::fs::write(home.join("airflow.cfg"), format!("[database]\n{line}\n"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let af = Airflow {
            home,
            venv,
            major,
            db,
            api_port: free_port(),
            log_port: free_port(),
            procs: Vec::new(),
            extra_env: Vec::new(),
        };
        af.cli_ok(&["db", "migrate"]);
        af
    }

    /// The metadata DB file (SQLite only).
    pub fn db_path(&self) -> PathBuf {
        self.home.join("airflow.db")
    }

    /// The metadata DB's SQLAlchemy URL.
    pub fn conn_url(&self) -> String {
        match &self.db {
            MetaDbKind::Sqlite => format!("sqlite:///{}", self.db_path().display()),
            MetaDbKind::Postgres(u) | MetaDbKind::Mysql(u) => u.clone(),
        }
    }

    /// The DAGs folder.
    pub fn dags_folder(&self) -> PathBuf {
        self.home.join("dags")
    }

    /// The `dag_run` column holding the logical date on this major.
    pub fn date_column(&self) -> &'static str {
        match self.major {
            AirflowMajor::V2 => "execution_date",
            AirflowMajor::V30 | AirflowMajor::V3 | AirflowMajor::V32 | AirflowMajor::V3Newest => {
                "logical_date"
            }
        }
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
            .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
            .env("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "2")
            .env("AIRFLOW__SCHEDULER__PARSING_PROCESSES", "1")
            .env("AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES", "1")
            .env("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "16")
            .env("AIRFLOW__CORE__PARALLELISM", "4")
            .env(
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
                self.log_port.to_string(),
            )
            .env("PYTHONWARNINGS", "ignore");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        match (self.major, &self.db) {
            (AirflowMajor::V2, MetaDbKind::Sqlite) => {
                cmd.env("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor");
            }
            (
                AirflowMajor::V30 | AirflowMajor::V3 | AirflowMajor::V32 | AirflowMajor::V3Newest,
                MetaDbKind::Sqlite,
            ) => {
                // One task at a time: concurrent task starts on SQLite made the api-server fail
                // them ("error occurred while trying to deserialize Dag", 500) under CI load.
                cmd.env("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
                    .env("AIRFLOW__CORE__PARALLELISM", "1");
            }
            _ => {
                cmd.env("AIRFLOW__CORE__EXECUTOR", "LocalExecutor");
            }
        }
        if self.major.is_v3() {
            let port = self.api_port.to_string();
            cmd.env(
                "AIRFLOW__CORE__AUTH_MANAGER",
                "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
            )
            .env("AIRFLOW__API__HOST", "127.0.0.1")
            .env("AIRFLOW__API__PORT", &port)
            .env("AIRFLOW__API__WORKERS", "1")
            // A task's first execution-API call can take tens of seconds on a loaded CI machine
            // (seen on 3.3: five 5 s time-outs in a row failed the task before it started).
            .env("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", "30")
            .env(
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                format!("http://127.0.0.1:{port}/execution/"),
            )
            .env("AIRFLOW__API_AUTH__JWT_SECRET", "backfilld-it-jwt-secret")
            .env("AIRFLOW__API__SECRET_KEY", "backfilld-it-secret-key");
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

    fn spawn_component(&self, name: &str, args: &[&str], starts: u32) -> Proc {
        let log = self
            .home
            .join(format!("{}.{starts}.log", name.replace(' ', "-")));
        let mut cmd = self.command("airflow");
        cmd.args(args);
        Proc::spawn(&format!("airflow {name}"), cmd, &log)
    }

    fn start_component(&mut self, name: &'static str, args: &'static [&'static str]) {
        let proc = self.spawn_component(name, args, 1);
        self.procs.push(Component {
            name,
            args,
            proc,
            starts: 1,
        });
    }

    /// Start what runs DAGs: the scheduler (which on 2.x also parses DAG files and runs tasks);
    /// on 3.x also the api-server (waiting until it answers) and the dag-processor.
    pub fn start_scheduler(&mut self) {
        if self.major.is_v3() {
            self.start_component("api-server", &["api-server"]);
            self.wait_api_server(Duration::from_secs(180));
            self.start_component("dag-processor", &["dag-processor"]);
        }
        self.start_component("scheduler", &["scheduler"]);
    }

    /// Start only Airflow 3's api-server (no scheduler, no DAG processor), waiting until it
    /// answers.
    pub fn start_api_server(&mut self) {
        self.start_component("api-server", &["api-server"]);
        self.wait_api_server(Duration::from_secs(180));
    }

    /// Wait until the api-server answers its health endpoint.
    pub fn wait_api_server(&self, timeout: Duration) {
        use std::io::{Read, Write};
        let port = self.api_port;
        wait_for("the Airflow api-server", timeout, || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET /api/v2/monitor/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .ok()?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        });
    }

    /// Start again every component that exited (as a service manager would); returns their names.
    pub fn revive(&mut self) -> Vec<String> {
        let mut revived = Vec::new();
        for i in 0..self.procs.len() {
            if self.procs[i].proc.alive() {
                continue;
            }
            let (name, args, starts) = (
                self.procs[i].name,
                self.procs[i].args,
                self.procs[i].starts + 1,
            );
            let proc = self.spawn_component(name, args, starts);
            self.procs[i].proc = proc;
            self.procs[i].starts = starts;
            revived.push(name.to_owned());
        }
        revived
    }

    /// Names of the components that are not running.
    pub fn dead_components(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|c| (!c.proc.alive()).then(|| c.name.to_owned()))
            .collect()
    }

    /// The tail of every component log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.home)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "log"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for p in names {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", p.display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Run one SQL statement on the metadata DB through the venv's SQLAlchemy (any backend);
    /// rows as JSON arrays (timestamps as naive-UTC `YYYY-MM-DD HH:MM:SS[.ffffff]` text).
    pub fn query(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        let out = Command::new(self.venv.join("bin/python"))
            .arg("-c")
            .arg(QUERY_PY)
            .arg(self.conn_url())
            .arg(sql)
            .env("PYTHONWARNINGS", "ignore")
            .output()
            .unwrap_or_else(|e| panic!("python: {e}"));
        assert!(
            out.status.success(),
            "query {sql:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A single integer from [`Airflow::query`].
    pub fn query_i64(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_i64())
            .unwrap_or_else(|| panic!("{sql}: no integer in {rows:?}"))
    }

    /// The runs of `dag_id` are alike as Airflow's `create_dagrun` makes them, whoever created
    /// them (the scheduler its first, backfilld the others with `[reconcile] create_runs`):
    /// the same run type, creating job, trigger (2.x `external_trigger`, 3.x `triggered_by`),
    /// log template and conf, on 3.x the same DAG version, bundle version and no backfill;
    /// each with the run id Airflow gives its date (`<run_type>__<logical date>+00:00`), a data
    /// interval, and task instances. Returns how many runs there are.
    pub fn assert_runs_alike(&self, dag_id: &str) -> usize {
        let col = self.date_column();
        let (trigger, v3_cols) = if self.major.is_v3() {
            (
                "triggered_by",
                ", created_dag_version_id, bundle_version, backfill_id",
            )
        } else {
            ("external_trigger", "")
        };
        let id = dag_id.replace('\'', "''");
        let rows = self.query(&format!(
            "SELECT run_id, {col}, data_interval_start, data_interval_end, \
             (SELECT COUNT(*) FROM task_instance ti WHERE ti.dag_id = r.dag_id AND ti.run_id = r.run_id), \
             run_type, creating_job_id, {trigger}, log_template_id, conf{v3_cols} \
             FROM dag_run r WHERE dag_id = '{id}' ORDER BY id"
        ));
        let Some(first) = rows.first() else {
            return 0;
        };
        // Timestamps as `YYYY-MM-DDTHH:MM:SS` whatever the backend returns.
        let ts = |v: &serde_json::Value| -> String {
            v.as_str()
                .unwrap_or_default()
                .chars()
                .take(19)
                .collect::<String>()
                .replace(' ', "T")
        };
        for r in &rows {
            assert_eq!(r[5..], first[5..], "runs of {dag_id} differ: {rows:?}");
            let run_type = r[5].as_str().unwrap_or_default();
            assert_eq!(
                r[0].as_str().unwrap_or_default(),
                format!("{run_type}__{}+00:00", ts(&r[1])),
                "run id of {dag_id}: {r:?}"
            );
            assert!(
                !ts(&r[2]).is_empty() && ts(&r[2]) <= ts(&r[3]),
                "data interval of {dag_id}: {r:?}"
            );
            assert!(
                r[4].as_i64().unwrap_or(0) > 0,
                "no task instances in {dag_id}: {r:?}"
            );
        }
        rows.len()
    }

    /// Logical dates (`YYYY-MM-DD`) of the runs of `dag_id`, sorted, on any backend and major.
    pub fn run_dates(&self, dag_id: &str) -> Vec<String> {
        self.run_dates_by(dag_id, self.date_column())
    }

    /// Logical dates (`YYYY-MM-DD`) of the runs of `dag_id` in the order of `order_by` (a
    /// `dag_run` column such as `id` or `start_date`), on any backend and major.
    pub fn run_dates_by(&self, dag_id: &str, order_by: &str) -> Vec<String> {
        let col = self.date_column();
        self.query(&format!(
            "SELECT {col} FROM dag_run WHERE dag_id = '{}' ORDER BY {order_by}",
            dag_id.replace('\'', "''")
        ))
        .iter()
        .map(|r| {
            r.first()
                .and_then(|v| v.as_str())
                .map(|s| s.chars().take(10).collect())
                .unwrap_or_default()
        })
        .collect()
    }

    /// Open the metadata DB for assertions (SQLite only; see [`Airflow::query`] for any backend).
    pub fn sql(&self) -> rusqlite::Connection {
        assert_eq!(
            self.db,
            MetaDbKind::Sqlite,
            "sql() is for SQLite; use query()"
        );
        let c = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c.busy_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// A single integer from a query (SQLite only).
    pub fn count(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> i64 {
        self.sql()
            .query_row(sql, params, |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Wait until the DAG is serialized in the DB.
    pub fn wait_parsed(&self, dag_id: &str, timeout: Duration) {
        let sql = format!(
            "SELECT COUNT(*) FROM serialized_dag WHERE dag_id = '{}'",
            dag_id.replace('\'', "''")
        );
        wait_for(&format!("Airflow to parse {dag_id}"), timeout, || {
            let n = match self.db {
                MetaDbKind::Sqlite => self.count(&sql, &[]),
                _ => self.query_i64(&sql),
            };
            (n > 0).then_some(())
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

    /// One of several agents on `af`'s metadata DB: its own directory `agents/<host_id>` under
    /// AIRFLOW_HOME (spool, config, logs), `[cluster] host_id`, `airflow_extra` lines in
    /// `[airflow]` (e.g. its own `dags_folder`) and `extra_config` continuing `[cluster]` (more
    /// tables may follow).
    pub fn start_agent(
        af: &Airflow,
        host_id: &str,
        airflow_extra: &str,
        extra_config: &str,
    ) -> Daemon {
        Daemon::start_in(
            af,
            &af.home.join("agents").join(host_id),
            airflow_extra,
            &format!("\n[cluster]\nhost_id = \"{host_id}\"\n{extra_config}"),
            &[],
        )
    }

    /// Write a config into `dir` (spool and logs there too) and start the daemon.
    fn start_in(
        af: &Airflow,
        dir: &Path,
        airflow_extra: &str,
        tail: &str,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        let auth_manager = if af.major.is_v3() {
            "auth_manager = \"airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager\"\n"
        } else {
            ""
        };
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let spool = dir.join("spool");
        let config = dir.join("backfilld.toml");
        std::fs::write(
            &config,
            format!(
                "[airflow]\nhome = \"{}\"\n{auth_manager}{airflow_extra}\n[spool]\ndir = \"{}\"\nrescan_interval_secs = 5\n\n[reconcile]\ninterval_secs = 2\nregister_timeout_secs = 300\n{tail}",
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

    /// Whether the daemon process runs.
    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.alive())
    }

    /// Every log this daemon wrote (all its starts), concatenated.
    pub fn all_logs(&self) -> String {
        let dir = self.log.parent().unwrap_or(Path::new("."));
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// [`Daemon::start`] with extra configuration appended (e.g. `[identity]`, `[authz]`).
    pub fn start_with(af: &Airflow, extra_env: &[(&str, &str)], extra_config: &str) -> Daemon {
        // Airflow's default roles and their DAG permissions exist only after a sync (a
        // webserver start does the same in production).
        af.cli_ok(&["sync-perm"]);
        af.ensure_user("root", "Admin");
        Daemon::start_in(af, &af.home.join("backfilld"), "", extra_config, extra_env)
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

    /// The running daemon process.
    pub fn proc(&mut self) -> &mut Proc {
        self.proc
            .as_mut()
            .unwrap_or_else(|| panic!("backfilld is not running"))
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

    /// `backfillctl submit --json --dag DAG --start START --end END EXTRA...`: the decided
    /// request, accepted or not, parsed.
    pub fn submit(&self, dag: &str, start: &str, end: &str, extra: &[&str]) -> serde_json::Value {
        let args = [
            &[
                "submit", "--json", "--dag", dag, "--start", start, "--end", end,
            ],
            extra,
        ]
        .concat();
        stdout_json(&self.ctl(&args))
    }

    /// [`Daemon::submit`] that must be accepted (else panics with the daemon's log): the new
    /// backfill's id.
    pub fn submit_accepted(&self, dag: &str, start: &str, end: &str, extra: &[&str]) -> String {
        let v = self.submit(dag, start, end, extra);
        assert_eq!(v["outcome"], "accepted", "{v}\n{}", self.log_text());
        v["backfill_id"].as_str().unwrap_or_default().to_owned()
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

/// A command's standard output parsed as JSON; panics with its stdout and stderr otherwise.
pub fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One empty database on each engine's real server, for store-level tests that run the same
/// statements everywhere: a new SQLite file under `target/it/<name>`, a fresh PostgreSQL and a
/// fresh MariaDB database named after `name`.
pub fn every_backend(name: &str) -> Vec<backfilld::dburl::DbUrl> {
    let dir = repo_dir().join("target/it").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let sqlite = dir.join(format!("{name}.db"));
    rusqlite::Connection::open(&sqlite).unwrap_or_else(|e| panic!("{e}"));
    [
        format!("sqlite:///{}", sqlite.display()),
        fresh_pg_database(&shared_pg(), name),
        fresh_mysql_database(name),
    ]
    .iter()
    .map(|u| backfilld::dburl::DbUrl::parse(u).unwrap_or_else(|e| panic!("{u}: {e}")))
    .collect()
}

/// Python run before a test's DagBag script: `DagBag` and `SerializedDAG` from where each
/// Airflow release keeps them (3.2+ moved both), and `dag_bag(folder)` without the examples.
pub const DAGBAG_PRELUDE: &str = r#"
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2+
except ImportError:
    from airflow.models.dagbag import DagBag
try:
    # Airflow 3.2+: SerializedDAG is the scheduler's DAG; this class does the round trip.
    from airflow.serialization.serialized_objects import DagSerialization as SerializedDAG
except ImportError:
    from airflow.serialization.serialized_objects import SerializedDAG
import inspect

def dag_bag(folder):
    # Airflow 3.2+ DagBags load no examples and take no include_examples.
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:
        return DagBag(dag_folder=folder, include_examples=False)
    return DagBag(dag_folder=folder)
"#;

/// Midnight UTC of 2024-01-`d`, the month the store-level suites count days in.
pub fn jan(d: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2024, 1, d, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A backfill of `sales` by alice (uid 1000) over 2024-01-`start`..=`end`, daily, for the
/// store-level suites; change what a case needs with struct update syntax.
pub fn sample_backfill(start: u32, end: u32) -> backfilld::metadb::store::NewBackfill {
    backfilld::metadb::store::NewBackfill {
        dag_id: "sales".into(),
        start: jan(start),
        end: jan(end),
        logical_dates: (start..=end).map(jan).collect(),
        description: None,
        params: serde_json::Map::new(),
        max_active_runs: 1,
        ignore_overlap: true,
        origin_fileloc: "/dags/sales.py".into(),
        origin_code: String::new(),
        submitted_by: "alice".into(),
        submitted_uid: 1000,
        requester: "alice".into(),
        on_behalf_of: None,
        retry_of: None,
        scheduled_at: None,
        delete_after_days: None,
        reprocess: "completed".into(),
        skipped_dates: vec![],
        options: Default::default(),
        awaiting_approval: None,
    }
}

/// A request a [`WebhookSink`] received: its path, its JSON body, and the status it answered.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The request path.
    pub path: String,
    /// The body as JSON (`null` if it was not JSON).
    pub body: serde_json::Value,
    /// The status answered.
    pub status: u16,
}

/// A tiny HTTP server in a test thread that records every POST; it answers 500 to the first
/// `fail_first` requests, then 200.
pub struct WebhookSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    hooks: std::sync::Arc<std::sync::Mutex<Vec<Hook>>>,
}

impl WebhookSink {
    /// Listen and serve in a thread for the rest of the test.
    pub fn start(fail_first: usize) -> WebhookSink {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let hooks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Hook>::new()));
        let seen = hooks.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = std::io::BufReader::new(&mut stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let mut all = seen.lock().unwrap_or_else(|e| e.into_inner());
                let status = if all.len() < fail_first { 500 } else { 200 };
                all.push(Hook {
                    path,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    status,
                });
                drop(all);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        WebhookSink { port, hooks }
    }

    /// Everything received so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A mail [`SmtpSink`] received: the envelope's recipients and the message text.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message (headers and body) as sent in `DATA`.
    pub data: String,
}

/// A tiny SMTP server in a test thread (no TLS, no auth) that records every message.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    mails: std::sync::Arc<std::sync::Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    /// Listen and serve in a thread for the rest of the test.
    pub fn start() -> SmtpSink {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Mail>::new()));
        let seen = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut out) = stream else { continue };
                let _ = out.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(input) = out.try_clone() else { continue };
                let mut reader = std::io::BufReader::new(input);
                let _ = out.write_all(b"220 sink ESMTP\r\n");
                let mut to = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "RCPT" => {
                            let addr = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                            to.push(addr);
                            b"250 OK\r\n"
                        }
                        "DATA" => {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            loop {
                                let mut l = String::new();
                                if reader.read_line(&mut l).unwrap_or(0) == 0
                                    || l == ".\r\n"
                                    || l == ".\n"
                                {
                                    break;
                                }
                                data.push_str(&l);
                            }
                            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Mail {
                                to: std::mem::take(&mut to),
                                data,
                            });
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = out.write_all(reply);
                }
            }
        });
        SmtpSink { port, mails }
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
