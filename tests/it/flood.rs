//! Issue 17's floods by an unprivileged local user, on one real Airflow 2.11 and one daemon:
//! - the control socket: uid 65534 (through `setpriv`) holds many connections open at once;
//!   beyond the per-uid cap it is refused at once with a reason, while another user's
//!   `backfillctl status` is still answered;
//! - the spool: a user drops 400 request files at once; its files are decided at its
//!   `[limits]` rate while the rest wait in `incoming/` (none lost), another user's request
//!   is decided at once, the audit table gets at most the denial rate plus summary rows,
//!   and `[retention]` removes decided files, so disk and DB stay bounded.
//!
//! Request-record retention on every backend is `request_retention_on_every_backend`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::authz_matrix::{outcome_as, unix_user};
use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

/// Python, run as `nobody`: open `n` connections to the socket, send nothing, collect what
/// the daemon answers within 3 s, print how many were refused.
const FLOOD: &str = r#"
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(0.05)
    conns.append(s)
print("open", flush=True)
refused, deadline = 0, time.time() + 3
pending = list(conns)
while pending and time.time() < deadline:
    for s in list(pending):
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        pending.remove(s)
        if b"too many open connections" in data:
            refused += 1
print("refused", refused, flush=True)
time.sleep(4)
"#;

/// Limits of the flood test's daemon: 30 files a minute per uid, 5 audited denials a minute
/// per requester, decided files kept 15 s.
const FLOOD_LIMITS: &str = "\n[limits]\nmax_files_per_user_per_minute = 30\nmax_audited_denials_per_user_per_minute = 5\n\n[retention]\ndecided_files = \"15s\"\n";

#[test]
fn floods_by_one_uid_leave_others_served_and_stay_bounded() {
    let af = Airflow::sqlite(AirflowMajor::V2, "flood");
    af.reserialize();
    let daemon = Daemon::start_with(&af, &[], FLOOD_LIMITS);
    control_socket_flood(&daemon);
    spool_flood(&af, &daemon);
}

/// The control socket: nobody's 60 connections, 16 held and 44 refused; root served.
fn control_socket_flood(daemon: &Daemon) {
    let socket = daemon.spool.join("public/control.sock");
    let flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("/usr/bin/python3")
        .arg("-c")
        .arg(FLOOD)
        .arg(&socket)
        .arg("60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    // While nobody's 60 connections are open (16 held, 44 refused), root is served.
    std::thread::sleep(Duration::from_secs(2));
    let status = wait_for("root's status", Duration::from_secs(20), || {
        let out = daemon.ctl(&["status"]);
        out.status.success().then_some(out)
    });
    assert!(status.status.success());
    let out = flood
        .wait_with_output()
        .unwrap_or_else(|e| panic!("flood: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("refused 44"), "{text}\n{}", daemon.log_text());
    // Once nobody's connections are closed, it is served again.
    let again = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("/usr/bin/python3")
        .arg("-c")
        .arg(FLOOD)
        .arg(&socket)
        .arg("1")
        .output()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("refused 0"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

/// Python, run as the flooder: drop `n` requests for `sales` into `incoming/` (temp file,
/// then rename, as tools do), as fast as it can.
const DROP_MANY: &str = r#"
import os, sys
incoming, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    tmp = os.path.join(incoming, ".f%04d.part" % i)
    with open(tmp, "w") as f:
        f.write('dag_id = "sales"\nstart = 2024-01-01\nend = 2024-01-02\n')
    os.rename(tmp, os.path.join(incoming, "f%04d.toml" % i))
print("dropped", n, flush=True)
"#;

const FLOODER: &str = "bff_flood";
const NEIGHBOUR: &str = "bff_alice";
const FLOOD_FILES: usize = 400;

fn count_files(dir: &std::path::Path, owner: Option<u32>) -> usize {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    !name.starts_with('.')
                        && !name.ends_with(".receipt.json")
                        && e.metadata()
                            .is_ok_and(|m| owner.is_none_or(|uid| m.uid() == uid))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The spool: 400 files of one uid paced at 30 a minute, a neighbour served at once, the
/// audit table and `rejected/` bounded, nothing lost.
fn spool_flood(af: &Airflow, daemon: &Daemon) {
    let flooder = unix_user(FLOODER);
    unix_user(NEIGHBOUR);
    // The flooder is a Viewer: each of its requests is a denial (no edit on `sales`).
    af.ensure_user(FLOODER, "Viewer");
    af.ensure_user(NEIGHBOUR, "Admin");
    let incoming = daemon.spool.join("incoming");
    let rejected = daemon.spool.join("rejected");
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={flooder}"),
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg("/usr/bin/python3")
        .arg("-c")
        .arg(DROP_MANY)
        .arg(&incoming)
        .arg(FLOOD_FILES.to_string())
        .output()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dropped"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dropped_at = std::time::Instant::now();

    // The neighbour's dry run is decided while the flood waits.
    let body = "dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-03\ndry_run = true\n";
    let v = crate::authz_matrix::drop_as(daemon, NEIGHBOUR, "mine.toml", body);
    let served_in = dropped_at.elapsed();
    assert_eq!(v["outcome"], "accepted", "{v}\n{}", daemon.log_text());
    assert!(
        served_in < Duration::from_secs(30),
        "the neighbour waited {served_in:?} behind the flood"
    );
    let waiting = count_files(&incoming, Some(flooder));
    assert!(
        waiting >= FLOOD_FILES - 60,
        "only {waiting} of the flood's files wait in incoming/: not paced\n{}",
        daemon.log_text()
    );
    let a_flood_file = outcome_as(daemon, FLOODER, "f0000.toml");
    assert_eq!(a_flood_file["outcome"], "rejected", "{a_flood_file}");

    // Summary rows appear as the flooder's denials go on beyond 5 a minute; the audit table
    // grows by at most the rate.
    let q = |sql: &str| af.query_i64(sql);
    wait_for("a denial summary row", Duration::from_secs(60), || {
        (q(&format!(
            "SELECT COUNT(*) FROM backfilld_audit WHERE uid = {flooder} AND reason_code = 'rate_limited'"
        )) > 0)
        .then_some(())
    });
    let decided = q(&format!(
        "SELECT COUNT(*) FROM backfilld_request WHERE uid = {flooder}"
    ));
    let written = q(&format!(
        "SELECT COUNT(*) FROM backfilld_audit WHERE uid = {flooder} AND allowed = 0 AND reason_code <> 'rate_limited'"
    ));
    let minutes = dropped_at.elapsed().as_secs_f64() / 60.0;
    assert!(
        (written as f64) <= 5.0 + 5.0 * minutes + 1.0,
        "{written} denials written in {minutes:.2} min (rate 5/min; {decided} decided)"
    );
    assert!(
        (decided as f64) <= 30.0 + 30.0 * minutes + 2.0,
        "{decided} files decided in {minutes:.2} min (rate 30/min)"
    );

    // Retention: decided files older than 15 s leave rejected/, so it holds at most what was
    // decided in the last 15 s or so.
    wait_for(
        "retention to prune rejected/",
        Duration::from_secs(60),
        || {
            let decided = q(&format!(
                "SELECT COUNT(*) FROM backfilld_request WHERE uid = {flooder}"
            ));
            let kept = count_files(&rejected, Some(flooder)) as i64;
            (decided > 30 && kept < decided - 20).then_some(())
        },
    );
    // Nothing lost: every file is decided or still waits. The three counts are read one after
    // the other while the daemon goes on deciding (one file every 2 s), so a file moving
    // between two reads is seen in neither or both: read them again until they agree.
    let mut counts = (0, 0, 0);
    for _ in 0..40 {
        let decided = q(&format!(
            "SELECT COUNT(*) FROM backfilld_request WHERE uid = {flooder}"
        ));
        let active = count_files(&daemon.spool.join("active"), Some(flooder)) as i64;
        let waiting = count_files(&incoming, Some(flooder)) as i64;
        counts = (decided, active, waiting);
        if decided + active + waiting == FLOOD_FILES as i64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (decided, active, waiting) = counts;
    assert_eq!(
        decided + active + waiting,
        FLOOD_FILES as i64,
        "decided {decided}, active {active}, waiting {waiting}"
    );
}

/// `Store::prune_requests` on every engine: old records go, except those of backfills not
/// deleted; recent ones stay.
#[test]
fn request_retention_on_every_backend() {
    use backfilld::metadb::store::{self, RequestRecord, Store};
    use backfilld::metadb::MetaDb;
    use backfilld::request::Outcome;

    let day = crate::support::jan;
    for url in crate::support::every_backend("request_retention") {
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut s = Store::new(&mut db);
        for id in ["kept", "gone"] {
            let new = crate::support::sample_backfill(1, 1);
            s.insert_backfill(id, &new, "h", &format!("key-{id}"), day(1))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        s.mark_deleted("gone", day(2))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let record = |key: &str, at: u32, backfill: Option<&str>| RequestRecord {
            request_key: key.into(),
            file_name: format!("{key}.toml"),
            uid: 1000,
            host: "h".into(),
            received_at: store::stored_ts(day(at)),
            outcome: if backfill.is_some() {
                Outcome::Accepted
            } else {
                Outcome::Rejected
            },
            backfill_id: backfill.map(str::to_owned),
            ..RequestRecord::default()
        };
        for r in [
            record("old-rejected", 1, None),
            record("old-kept", 1, Some("kept")),
            record("old-gone", 1, Some("gone")),
            record("new-rejected", 20, None),
        ] {
            s.record_request(&r)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert_eq!(s.prune_requests(day(10)).ok(), Some(2), "{url}");
        for (key, present) in [
            ("old-rejected", false),
            ("old-kept", true),
            ("old-gone", false),
            ("new-rejected", true),
        ] {
            let found = s.request(key).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(found.is_some(), present, "{url}: {key}");
        }
        assert_eq!(s.prune_requests(day(10)).ok(), Some(0), "{url}: idempotent");
    }
}
