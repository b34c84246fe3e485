//! Issue 17's control-socket flood: an unprivileged local user (uid 65534 through `setpriv`)
//! holds many connections open at once; beyond the per-uid cap it is refused at once with a
//! reason, while another user's `backfillctl status` is still answered.

use std::process::{Command, Stdio};
use std::time::Duration;

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

#[test]
fn control_socket_flood_by_one_uid_leaves_others_served() {
    let af = Airflow::sqlite(AirflowMajor::V2, "control_flood");
    let daemon = Daemon::start(&af, &[]);
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
