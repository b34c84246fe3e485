//! Issue 4: pull the metadata DB away while requests arrive. A private PostgreSQL (initdb in a
//! temp dir, its own port, run as `nobody` because initdb refuses root) holds Airflow 2.11's
//! metadata DB, reached through `sql_alchemy_conn_cmd` in `airflow.cfg`. It is stopped for 20 s
//! while requests are dropped: backfilld stays up, reports the outage, loses nothing, and every
//! backfill completes once the DB is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    db_name, free_port, fresh_pg_database, wait_for, Airflow, AirflowMajor, Daemon, MetaDbKind,
};

const BIG: Duration = Duration::from_secs(420);

/// A PostgreSQL cluster of our own, stopped and removed on drop.
struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`), found as
/// `scripts/test-dbs.sh` finds it: Debian's newest `/usr/lib/postgresql/<major>/bin`, else the
/// `PATH` (Fedora and RHEL install them in `/usr/bin`).
fn server_bin() -> PathBuf {
    let has_programs = |b: &PathBuf| b.join("initdb").is_file() && b.join("pg_ctl").is_file();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, b)| has_programs(b))
        .max_by_key(|(major, _)| *major)
        .map(|(_, b)| b);
    debian
        .or_else(|| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .find(has_programs)
        })
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server programs (initdb, pg_ctl) not found in \
                 /usr/lib/postgresql/*/bin or on PATH: scripts/setup-host.sh test installs them"
            )
        })
}

impl PrivatePg {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_nobody(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "nobody", "--"])
            .arg(self.bin.join(program))
            .current_dir(self.dir.path());
        cmd
    }

    fn init() -> PrivatePg {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("backfilld-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.path().display()));
        let pg = PrivatePg {
            dir,
            bin,
            port: free_port(),
        };
        let out = pg
            .as_nobody("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap_or_else(|e| panic!("initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self
            .as_nobody("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg_ctl(&["-w", "-l", &log.to_string_lossy(), "-o", &opts, "start"]);
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn server_url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .as_nobody("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

/// The id of the backfill starting at `start`; `None` also while the daemon cannot answer
/// (it may still be waiting to reconnect).
fn find_backfill(daemon: &Daemon, start: &str) -> Option<String> {
    let out = daemon.ctl(&["list", "--json"]);
    if !out.status.success() {
        return None;
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    list.as_array()?
        .iter()
        .find(|b| b["start"] == start)
        .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".receipt.json"))
                .count()
        })
        .unwrap_or(usize::MAX)
}

#[test]
fn postgres_outage_while_requests_arrive() {
    let pg = PrivatePg::init();
    let url = fresh_pg_database(&pg.server_url(), "outage");
    let mut af = Airflow::with_db(
        AirflowMajor::V2,
        "db_outage",
        MetaDbKind::Postgres(url),
        true,
    );
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    let daemon = Daemon::start(&af, &[]);

    // A backfill under way when the DB goes.
    let out = daemon.ctl_json(&[
        "submit",
        "--dag",
        "sales",
        "--start",
        "2024-05-01",
        "--end",
        "2024-05-02",
        "--json",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let first = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        daemon.log_text().contains(&format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            pg.port,
            db_name("outage")
        )),
        "backfilld found the DB through sql_alchemy_conn_cmd:\n{}",
        daemon.log_text()
    );

    pg.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    daemon.drop_request(
        "outage-a.toml",
        "dag_id = \"sales\"\nstart = 2024-06-01\nend = 2024-06-02\n",
    );
    std::thread::sleep(Duration::from_secs(5));
    daemon.drop_request(
        "outage-b.toml",
        "dag_id = \"sales\"\nstart = 2024-07-01\nend = 2024-07-01\n",
    );
    // While the DB is away the daemon answers, reports the outage, and keeps the files.
    let listed = daemon.ctl(&["list", "--json"]);
    assert!(
        !listed.status.success(),
        "list cannot succeed without the DB"
    );
    let spool_waiting =
        count_files(&daemon.spool.join("incoming")) + count_files(&daemon.spool.join("active"));
    assert_eq!(spool_waiting, 2, "both requests wait in the spool");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    let log = daemon.log_text();
    assert!(
        log.contains("metadata DB unavailable") || log.contains("lost the metadata DB connection"),
        "the outage is reported:\n{log}"
    );
    pg.start();
    let back = Instant::now();
    // Airflow's own services may have died with their DB; a service manager restarts them.
    std::thread::sleep(Duration::from_secs(3));
    let revived = af.revive();
    eprintln!("Airflow components restarted after the outage: {revived:?}");

    let second = wait_for(
        "the requests dropped during the outage to be accepted",
        Duration::from_secs(120),
        || find_backfill(&daemon, "2024-06-01T00:00:00Z"),
    );
    let third = wait_for(
        "the second request dropped during the outage",
        Duration::from_secs(60),
        || find_backfill(&daemon, "2024-07-01T00:00:00Z"),
    );
    eprintln!("accepted {:?} after the DB returned", back.elapsed());
    for (id, dates) in [
        (&first, vec!["2024-05-01", "2024-05-02"]),
        (&second, vec!["2024-06-01", "2024-06-02"]),
        (&third, vec!["2024-07-01"]),
    ] {
        let done = daemon.wait_finished(id, BIG);
        assert_eq!(
            done["state"],
            "success",
            "{done}\n{}\n{}",
            daemon.log_text(),
            af.logs_tail()
        );
        assert_eq!(af.run_dates(id), dates);
    }
    eprintln!("all complete {:?} after the DB returned", back.elapsed());
    // Nothing lost, nothing doubled.
    assert_eq!(af.query_i64("SELECT COUNT(*) FROM backfilld_request"), 3);
    assert_eq!(af.query_i64("SELECT COUNT(*) FROM backfilld_backfill"), 3);
    assert_eq!(count_files(&daemon.spool.join("incoming")), 0);
    assert_eq!(count_files(&daemon.spool.join("active")), 0);
    let log = daemon.log_text();
    assert!(
        log.matches("connected to the metadata DB").count() >= 2,
        "reconnected:\n{log}"
    );
}
