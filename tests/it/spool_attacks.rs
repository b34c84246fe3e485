//! Issue 3's hostile files, end to end through the daemon on Airflow 2.11 + SQLite (DAGs parsed
//! by `airflow dags reserialize`, no scheduler): each is dropped by a real unix user, rejected
//! with its reason, the daemon keeps serving, and nothing outside the spool is read or changed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::authz_matrix::{ctl_as, outcome_as, unix_user};
use crate::support::{Airflow, AirflowMajor, Daemon};

const MALLORY: &str = "bfz_mallory";
const VICTIM: &str = "bfz_victim";

/// Run a shell command as `user`; panics when it fails.
fn sh_as(user: &str, script: &str) {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .output()
        .unwrap_or_else(|e| panic!("runuser: {e}"));
    assert!(
        out.status.success(),
        "{user}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Content hash, mtime and ctime of a file outside the spool.
fn fingerprint(p: &Path) -> (String, i64, i64) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{e}"));
    (
        hex::encode(Sha256::digest(&bytes)),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime_nsec() + m.ctime() * 1_000_000_000,
    )
}

fn rejected(v: &Value, what: &str, codes: &[&str]) {
    assert_eq!(v["outcome"], "rejected", "{what}: {v}");
    assert!(
        codes.iter().any(|c| v["reason_code"] == *c),
        "{what}: expected one of {codes:?}: {v}"
    );
    assert!(
        v["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{what}: {v}"
    );
}

#[test]
fn hostile_files_are_rejected_and_the_daemon_keeps_serving() {
    let af = Airflow::sqlite(AirflowMajor::V2, "spool_attacks_af2");
    af.reserialize();
    unix_user(MALLORY);
    unix_user(VICTIM);
    let mut d = Daemon::start_with(&af, &[], "\n[limits]\nmax_pending_per_user = 3\n");
    af.ensure_user(MALLORY, "User");
    let inc = d.spool.join("incoming");
    let inc_s = inc.display().to_string();
    let shadow = Path::new("/etc/shadow");
    let passwd = Path::new("/etc/passwd");
    let before = (fingerprint(shadow), fingerprint(passwd));

    // A symlink to /etc/shadow.
    sh_as(MALLORY, &format!("ln -s /etc/shadow {inc_s}/shadow.toml"));
    let v = outcome_as(&d, MALLORY, "shadow.toml");
    rejected(&v, "symlink", &["symlink"]);

    // A hard link to another user's request (the victim's file outside the spool). The kernel
    // (fs.protected_hardlinks) may stop mallory making it, so root stands in for a host
    // without that protection.
    let victim_dir = af.home.join("victim");
    std::fs::create_dir_all(&victim_dir).unwrap_or_else(|e| panic!("{e}"));
    let victim_file = victim_dir.join("mine.toml");
    std::fs::write(
        &victim_file,
        "dag_id = \"sales\"\nstart = 2024-05-01\nend = 2024-05-02\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let victim_uid = nix::unistd::User::from_name(VICTIM)
        .ok()
        .flatten()
        .map(|u| u.uid)
        .unwrap_or_else(|| panic!("no {VICTIM}"));
    nix::unistd::chown(&victim_file, Some(victim_uid), None).unwrap_or_else(|e| panic!("{e}"));
    let victim_before = fingerprint(&victim_file);
    std::fs::hard_link(&victim_file, inc.join("stolen.toml")).unwrap_or_else(|e| panic!("{e}"));
    let v = outcome_as(&d, VICTIM, "stolen.toml");
    rejected(&v, "hard link", &["hard_linked"]);
    assert_eq!(fingerprint(&victim_file).0, victim_before.0);
    assert_eq!(fingerprint(&victim_file).1, victim_before.1);

    // A FIFO: the daemon must not block on it.
    // (umask, not `mkfifo -m`: the daemon may claim the FIFO before a later chmod.)
    sh_as(MALLORY, &format!("umask 022; mkfifo {inc_s}/fifo.toml"));
    let t = Instant::now();
    let v = outcome_as(&d, MALLORY, "fifo.toml");
    rejected(&v, "fifo", &["not_regular_file"]);
    assert!(t.elapsed() < Duration::from_secs(30));

    // 100 MB.
    sh_as(
        MALLORY,
        &format!(
            "umask 022; head -c 104857600 /dev/zero > {inc_s}/.big.part && mv {inc_s}/.big.part {inc_s}/big.toml"
        ),
    );
    let v = outcome_as(&d, MALLORY, "big.toml");
    rejected(&v, "100 MB", &["too_large"]);

    // Content attacks, each written by mallory and renamed in.
    let bomb = format!(
        "dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-02\n[params]\nx = {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "utf8.toml",
            b"dag_id = \"sa\xff\xfeles\"\n".to_vec(),
            "invalid_utf8",
            "UTF-8",
        ),
        ("bomb.toml", bomb.into_bytes(), "invalid_toml", "nested"),
        (
            "unknown.toml",
            b"dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-02\nrun_as = \"root\"\n"
                .to_vec(),
            "unknown_key",
            "run_as",
        ),
        (
            "traversal.toml",
            b"dag_id = \"../../etc/passwd\"\nstart = 2024-01-01\nend = 2024-01-02\n".to_vec(),
            "invalid_value",
            "dag_id",
        ),
    ];
    for (name, body, code, needle) in cases {
        let part = af.home.join(format!("{name}.src"));
        std::fs::write(&part, &body).unwrap_or_else(|e| panic!("{e}"));
        sh_as(
            MALLORY,
            &format!(
                "umask 022; cat {} > {inc_s}/.{name}.part && mv {inc_s}/.{name}.part {inc_s}/{name}",
                part.display()
            ),
        );
        let t = Instant::now();
        let v = outcome_as(&d, MALLORY, name);
        rejected(&v, name, &[code]);
        let reason = v["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{name}: {reason}");
        assert!(t.elapsed() < Duration::from_secs(30), "{name}");
    }

    // A file renamed in while its writer keeps writing through an open descriptor: it grows
    // during the claim and read. Its description string stays open until past the size cap,
    // so whatever moment the daemon reads it, it must refuse it.
    sh_as(
        MALLORY,
        &format!(
            "umask 022; ( printf 'dag_id = \"sales\"\\nstart = 2024-01-01\\nend = 2024-01-02\\ndescription = \"\"\"\\n'; \
             mv {inc_s}/.grow.part {inc_s}/grow.toml; \
             i=0; while [ $i -lt 20000 ]; do printf '# padding padding padding padding\\n'; i=$((i+1)); done ) > {inc_s}/.grow.part"
        ),
    );
    let v = outcome_as(&d, MALLORY, "grow.toml");
    rejected(
        &v,
        "file written during the read",
        &["changed_while_reading", "too_large", "invalid_toml"],
    );

    // Nothing outside the spool was changed; no DAG copy was written for any of these.
    assert_eq!((fingerprint(shadow), fingerprint(passwd)), before);
    let copies = std::fs::read_dir(af.dags_folder().join("backfill_user_dags"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(copies, 0);
    // The symlink was quarantined as a link, never followed into a copy.
    let kept: Vec<_> = std::fs::read_dir(d.spool.join("rejected"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("shadow.toml"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].file_type().map(|t| t.is_symlink()).unwrap_or(false));

    // Per-user limit: six files claimed at once (dropped while the daemon is down); three are
    // decided on their merits, the rest refused as too many pending.
    d.kill9();
    for i in 1..=6 {
        sh_as(
            MALLORY,
            &format!(
                "umask 022; printf 'dag_id = \"nope{i}\"\\nstart = 2024-01-01\\nend = 2024-01-02\\n' > {inc_s}/.p{i}.part && mv {inc_s}/.p{i}.part {inc_s}/p{i}.toml"
            ),
        );
    }
    d.restart(&[]);
    let codes: Vec<String> = (1..=6)
        .map(|i| {
            outcome_as(&d, MALLORY, &format!("p{i}.toml"))["reason_code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        codes.iter().filter(|c| *c == "too_many_pending").count(),
        3,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "unknown_dag").count(),
        3,
        "{codes:?}"
    );

    // The daemon still serves: a good request from an authorised user is accepted.
    let out = ctl_as(
        &d,
        "root",
        &[
            "submit",
            "--dag",
            "sales",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-02",
            "--json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        )
    });
    assert_eq!(v["outcome"], "accepted", "{v}");
    // The log never holds file contents (the symlink target's, or anyone's).
    let shadow_line = std::fs::read_to_string(shadow)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        shadow_line.is_empty() || !d.log_text().contains(&shadow_line),
        "log leaked /etc/shadow"
    );
}
