//! Issue 5: behaving like a system service. The daemon runs under a fake `NOTIFY_SOCKET` (a
//! datagram socket this test owns) against a real Airflow 2.11 metadata DB: READY only once the
//! DB is reachable, STATUS and WATCHDOG, reload on SIGHUP (a bad config keeps the old one),
//! and SIGTERM in the middle of a burst of 200 requests loses nothing and applies nothing twice.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

/// Collects every datagram sent to the socket, with its arrival time.
struct FakeSystemd {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeSystemd {
    fn bind(dir: &std::path::Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Ok(mut m) = sink.lock() {
                    m.push((Instant::now(), text));
                }
            }
        });
        FakeSystemd { path, messages }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Lines (one per state) received so far.
    fn lines(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .flat_map(|(_, m)| m.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| l.as_str() == line).count()
    }

    fn wait(&self, what: &str, line: &str, n: usize) {
        wait_for(what, Duration::from_secs(60), || {
            (self.count(line) >= n).then_some(())
        });
    }
}

fn submit(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["submit", "--json"];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn systemd_protocol_reload_and_clean_stop() {
    let af = Airflow::sqlite(AirflowMajor::V2, "service_af2");
    af.reserialize();
    af.cli_ok(&["sync-perm"]);
    // A first run sets the daemon up (and its Airflow user); it is then stopped.
    let mut d = Daemon::start(&af, &[]);
    d.proc().signal(Signal::SIGTERM);
    assert!(d
        .proc()
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let systemd = FakeSystemd::bind(&af.home);
    let notify = systemd.path.to_string_lossy().into_owned();
    let env = [
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "2000000"),
    ];

    // The DB is not there yet: no READY, a status that says so, watchdog pings all the same.
    let db = af.db_path();
    let hidden = db.with_extension("db.hidden");
    std::fs::rename(&db, &hidden).unwrap_or_else(|e| panic!("{e}"));
    d.restart(&env);
    systemd.wait(
        "a status line",
        "STATUS=waiting for database; 0 requests waiting",
        1,
    );
    systemd.wait("watchdog pings", "WATCHDOG=1", 2);
    assert_eq!(
        systemd.count("READY=1"),
        0,
        "READY before the DB is reachable: {:?}",
        systemd.lines()
    );
    assert!(
        !db.exists(),
        "backfilld must never create a SQLite metadata DB"
    );
    std::fs::rename(&hidden, &db).unwrap_or_else(|e| panic!("{e}"));
    systemd.wait("READY=1 once the DB is back", "READY=1", 1);
    wait_for(
        "a db-ok status naming this agent's role",
        Duration::from_secs(30),
        || {
            systemd
                .lines()
                .iter()
                .any(|l| l.starts_with("STATUS=") && l.contains("db ok; leader ("))
                .then_some(())
        },
    );

    // Watchdog pings keep coming, well within WATCHDOG_USEC (2 s).
    let before = systemd.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_secs(3));
    let pings: Vec<Instant> = systemd
        .all()
        .into_iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| t)
        .collect();
    assert!(pings.len() >= before + 2, "{pings:?}");
    let worst = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        worst < Duration::from_secs(2),
        "a watchdog gap of {worst:?}"
    );

    // SIGHUP with a lower limit takes effect without a restart.
    let v = submit(
        &d,
        &[
            "--dag",
            "sales",
            "--start",
            "2021-01-01",
            "--end",
            "2021-01-01",
            "--max-active-runs",
            "5",
        ],
    );
    assert_eq!(v["outcome"], "accepted", "{v}");
    let good = std::fs::read_to_string(&d.config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &d.config,
        format!("{good}\n[limits]\nmax_active_runs = 3\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.proc().signal(Signal::SIGHUP);
    systemd.wait("RELOADING=1", "RELOADING=1", 1);
    systemd.wait("READY=1 after the reload", "READY=1", 2);
    assert!(
        systemd
            .lines()
            .iter()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{:?}",
        systemd.lines()
    );
    let v = submit(
        &d,
        &[
            "--dag",
            "sales",
            "--start",
            "2021-01-02",
            "--end",
            "2021-01-02",
            "--max-active-runs",
            "5",
        ],
    );
    assert_eq!(v["reason_code"], "max_active_runs_out_of_bounds", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed 1..=3"),
        "{v}"
    );

    // A broken config is refused; the daemon keeps running on the old one.
    std::fs::write(&d.config, "[airflow]\nhome = 42\n").unwrap_or_else(|e| panic!("{e}"));
    d.proc().signal(Signal::SIGHUP);
    systemd.wait("RELOADING=1 again", "RELOADING=1", 2);
    wait_for(
        "the reload error in the log",
        Duration::from_secs(30),
        || {
            d.log_text()
                .contains("the new configuration is invalid; keeping the running one")
                .then_some(())
        },
    );
    assert!(d.proc().alive());
    // backfillctl reads the file too: give it a valid one again, without SIGHUP, so the
    // daemon still runs on the limit of 3 it had before the broken reload.
    std::fs::write(&d.config, &good).unwrap_or_else(|e| panic!("{e}"));
    let v = submit(
        &d,
        &[
            "--dag",
            "sales",
            "--start",
            "2021-01-03",
            "--end",
            "2021-01-03",
            "--max-active-runs",
            "5",
        ],
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed 1..=3"),
        "{v}"
    );

    // The burst is one user's: lift the per-user cap on waiting requests for it.
    std::fs::write(
        &d.config,
        format!(
            "{good}\n[limits]\nmax_pending_per_user = 1000\nmax_active_backfills_per_user = 1000\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.proc().signal(Signal::SIGHUP);
    systemd.wait("READY=1 after the third reload", "READY=1", 4);

    // SIGTERM in the middle of a burst of 200 requests: exit 0 within 10 s, STOPPING=1.
    for day in 0..200u32 {
        let date = chrono::NaiveDate::from_ymd_opt(2022, 1, 1)
            .and_then(|d| d.checked_add_days(chrono::Days::new(day.into())))
            .unwrap_or_else(|| panic!("date"));
        d.drop_request(
            &format!("burst-{day:03}.toml"),
            &format!("dag_id = \"sales\"\nstart = {date}\nend = {date}\n"),
        );
        if day == 100 {
            d.proc().signal(Signal::SIGTERM);
        }
    }
    let started = Instant::now();
    let status = d.proc().wait_exit(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("backfilld did not exit within 10 s of SIGTERM"));
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(systemd.count("STOPPING=1"), 1);

    // After a restart, all 200 are decided, each exactly once.
    d.restart(&[]);
    let decided = || {
        af.count(
            "SELECT COUNT(*) FROM backfilld_request WHERE file_name LIKE 'burst-%'",
            &[],
        )
    };
    wait_for("all 200 burst requests", Duration::from_secs(120), || {
        (decided() == 200).then_some(())
    });
    assert_eq!(
        af.count("SELECT COUNT(DISTINCT file_name) FROM backfilld_request WHERE file_name LIKE 'burst-%'", &[]),
        200
    );
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_backfill WHERE start_date LIKE '2022-%'",
            &[]
        ),
        200,
        "each burst request created exactly one backfill"
    );
    // A batch records its decisions first and moves its files after the commit: wait for
    // the spool to settle.
    let accepted = || {
        std::fs::read_dir(d.spool.join("accepted"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.contains("burst-") && n.ends_with(".toml")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for(
        "all 200 burst files accepted",
        Duration::from_secs(60),
        || (accepted() == 200).then_some(()),
    );
    assert_eq!(
        std::fs::read_dir(d.spool.join("active"))
            .map(|d| d.count())
            .unwrap_or(99),
        0
    );
    assert_eq!(
        std::fs::read_dir(d.spool.join("incoming"))
            .map(|d| d.count())
            .unwrap_or(99),
        0
    );
}
