//! Approval of big backfills (`[approval]`) through the real daemon on real Airflow metadata
//! DBs (DAGs parsed by `airflow dags reserialize`; the copies are not run, only written), with
//! real unix users made by `useradd` acting through `runuser` and Airflow users with their
//! roles made by Airflow's CLI: a request over `over_dates` waits in `awaiting_approval`
//! without a DAG copy; the requester (also through a trusted submitter) and a non-approver are
//! refused with their reasons; an Admin approves (copy written, status names the approver) or
//! rejects with a reason; the requester withdraws; a small request does not wait. Every
//! decision is audited. On Airflow 2.11 (backfillctl and request files) and 3.1.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::authz_matrix::{ctl_as, drop_as, unix_user};
use crate::support::{wait_for, Airflow, AirflowMajor, Daemon};

/// `backfillctl <args> --json` as `user`, parsed (refusals print their outcome too).
fn ctl_json_as(d: &Daemon, user: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ctl_as(d, user, &all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{user} {args:?}: {e}: {}{}\n--- daemon ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        )
    })
}

fn accepted(v: &Value, what: &str) -> String {
    assert_eq!(v["outcome"], "accepted", "{what}: {v}");
    v["backfill_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no backfill id: {v}"))
        .to_owned()
}

fn refused(v: &Value, what: &str, code: &str, reason: &str) {
    assert_eq!(v["outcome"], "rejected", "{what}: {v}");
    assert_eq!(v["reason_code"], code, "{what}: {v}");
    assert_eq!(v["reason"], reason, "{what}: {v}");
}

fn copy_file(af: &Airflow, id: &str) -> PathBuf {
    af.dags_folder()
        .join("backfill_user_dags")
        .join(format!("{id}.py"))
}

fn submit(d: &Daemon, user: &str, start: &str, end: &str) -> Value {
    ctl_json_as(
        d,
        user,
        &["submit", "--dag", "sales", "--start", start, "--end", end],
    )
}

/// The audit rows of `action` on `target`: (airflow user, allowed, reason code).
fn audit_rows(af: &Airflow, action: &str, target: &str) -> Vec<(String, bool, Option<String>)> {
    let conn = af.sql();
    let mut stmt = conn
        .prepare(
            "SELECT airflow_user, allowed, reason_code FROM backfilld_audit \
             WHERE action = ?1 AND target = ?2 ORDER BY id",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    stmt.query_map([action, target], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            r.get::<_, i64>(1)? != 0,
            r.get::<_, Option<String>>(2)?,
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .collect::<Result<Vec<_>, _>>()
    .unwrap_or_else(|e| panic!("{e}"))
}

fn allowed(who: &str) -> (String, bool, Option<String>) {
    (who.to_owned(), true, None)
}

fn denied(who: &str, code: &str) -> (String, bool, Option<String>) {
    (who.to_owned(), false, Some(code.to_owned()))
}

#[test]
fn big_backfills_wait_for_an_approver_on_airflow2() {
    let af = Airflow::sqlite(AirflowMajor::V2, "approval_af2");
    af.reserialize();
    af.cli_ok(&["sync-perm"]);
    for (user, role) in [
        ("bfa_req", "User"),
        ("bfa_user", "User"),
        ("bfa_admin", "Admin"),
    ] {
        unix_user(user);
        af.ensure_user(user, role);
    }
    let svc_uid = unix_user("bfa_svc");
    let port = crate::support::free_port();
    let d = Daemon::start_with(
        &af,
        &[],
        &format!(
            "\n[identity]\ntrusted_submitters = [{svc_uid}]\n\n[approval]\nover_dates = 3\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );

    // A dry run says approval would be needed; nothing is created.
    let dry = ctl_json_as(
        &d,
        "bfa_req",
        &[
            "submit",
            "--dag",
            "sales",
            "--start",
            "2024-06-01",
            "--end",
            "2024-06-05",
            "--dry-run",
        ],
    );
    assert_eq!(dry["dry_run"], true, "{dry}");
    let needed = "approval needed: 5 dates exceed [approval] over_dates = 3; a user with one of the roles [Admin] who may edit the DAG approves or rejects it (backfillctl approve|reject ID)";
    assert_eq!(dry["warnings"][0], needed, "{dry}");

    // 5 dates > 3: accepted, awaiting approval, no DAG copy even after reconcile passes.
    let v = submit(&d, "bfa_req", "2024-01-01", "2024-01-05");
    let big = accepted(&v, "5 dates");
    assert_eq!(v["warnings"][0], needed, "{v}");
    std::thread::sleep(Duration::from_secs(5));
    let s = d.ctl_json(&["status", &big, "--json"]);
    assert_eq!(s["state"], "awaiting_approval", "{s}");
    assert_eq!(s["reason"], needed, "{s}");
    assert_eq!(s["submitted_by"], "bfa_req", "{s}");
    assert_eq!(s["approved_by"], Value::Null, "{s}");
    assert!(!copy_file(&af, &big).exists(), "no copy before approval");
    let waiting = d.ctl_json(&["list", "--state", "awaiting_approval", "--json"]);
    assert_eq!(
        waiting.as_array().map(|l| l.len()),
        Some(1),
        "list --state awaiting_approval: {waiting}"
    );
    // Pausing it makes no sense: the state machine says why.
    let v = ctl_json_as(&d, "bfa_req", &["pause", &big]);
    refused(
        &v,
        "pause while awaiting approval",
        "illegal_transition",
        "cannot pause an awaiting_approval backfill: it awaits approval and has no DAG copy; cancel it instead",
    );

    // The requester may not approve their own backfill, neither directly nor through a
    // trusted submitter acting on their behalf.
    let own = "the requester cannot approve their own backfill";
    let v = ctl_json_as(&d, "bfa_req", &["approve", &big]);
    refused(&v, "requester approves", "self_approval", own);
    let v = drop_as(
        &d,
        "bfa_svc",
        "svc-approve.toml",
        &format!("action = \"approve\"\nid = \"{big}\"\non_behalf_of = \"bfa_req\"\n"),
    );
    refused(&v, "svc for the requester", "self_approval", own);
    // A User-role user who may edit the DAG is no approver.
    let v = ctl_json_as(&d, "bfa_user", &["approve", &big]);
    refused(
        &v,
        "User approves",
        "not_an_approver",
        "approving needs one of the roles [Admin]; bfa_user has User",
    );
    assert_eq!(
        d.ctl_json(&["status", &big, "--json"])["state"],
        "awaiting_approval"
    );
    assert!(!copy_file(&af, &big).exists());

    // An Admin approves: submitted, the copy is written, the status names the approver.
    let v = ctl_json_as(&d, "bfa_admin", &["approve", &big]);
    assert_eq!(accepted(&v, "Admin approves"), big);
    let s = d.ctl_json(&["status", &big, "--json"]);
    assert!(
        matches!(s["state"].as_str(), Some("submitted" | "queued")),
        "{s}"
    );
    assert_eq!(s["approved_by"], "bfa_admin", "{s}");
    assert!(
        s["approved_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{s}"
    );
    assert_eq!(s["reason"], Value::Null, "{s}");
    wait_for("the approved copy", Duration::from_secs(30), || {
        copy_file(&af, &big).exists().then_some(())
    });
    // Approving twice: it no longer awaits approval.
    let v = ctl_json_as(&d, "bfa_admin", &["approve", &big]);
    assert_eq!(v["reason_code"], "illegal_transition", "{v}");
    assert_eq!(
        audit_rows(&af, "approve", &big),
        vec![
            denied("bfa_req", "self_approval"),
            denied("bfa_req", "self_approval"),
            denied("bfa_user", "not_an_approver"),
            allowed("bfa_admin"),
            denied("bfa_admin", "illegal_transition"),
        ]
    );

    // Another big request, rejected with a reason through a request file: cancelled with
    // that reason, never a copy.
    let v = submit(&d, "bfa_req", "2024-02-01", "2024-02-05");
    let rejected = accepted(&v, "second big request");
    let v = ctl_json_as(
        &d,
        "bfa_user",
        &["reject", &rejected, "--reason", "not today"],
    );
    refused(
        &v,
        "User rejects",
        "not_an_approver",
        "rejecting needs one of the roles [Admin]; bfa_user has User",
    );
    let v = ctl_json_as(
        &d,
        "bfa_req",
        &["reject", &rejected, "--reason", "changed my mind"],
    );
    refused(
        &v,
        "requester rejects",
        "self_approval",
        "the requester cannot reject their own backfill; cancel it to withdraw it",
    );
    let v = drop_as(
        &d,
        "bfa_admin",
        "reject-feb.toml",
        &format!(
            "action = \"reject\"\nid = \"{rejected}\"\nreason = \"5 days of sales at once would starve the nightly loads\"\n"
        ),
    );
    accepted(&v, "Admin rejects by file");
    let s = d.ctl_json(&["status", &rejected, "--json"]);
    assert_eq!(s["state"], "cancelled", "{s}");
    assert_eq!(
        s["reason"],
        "rejected by bfa_admin: 5 days of sales at once would starve the nightly loads",
        "{s}"
    );
    assert_eq!(s["rejected_by"], "bfa_admin", "{s}");
    assert_eq!(s["approved_by"], Value::Null, "{s}");
    let v = ctl_json_as(&d, "bfa_admin", &["approve", &rejected]);
    refused(
        &v,
        "approve after reject",
        "illegal_transition",
        "cannot approve a cancelled backfill: it already finished",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !copy_file(&af, &rejected).exists(),
        "a rejected backfill never gets a copy"
    );
    assert_eq!(
        audit_rows(&af, "reject", &rejected),
        vec![
            denied("bfa_user", "not_an_approver"),
            denied("bfa_req", "self_approval"),
            allowed("bfa_admin"),
        ]
    );

    // The requester withdraws a third one while it awaits approval.
    let v = submit(&d, "bfa_req", "2024-03-01", "2024-03-05");
    let withdrawn = accepted(&v, "third big request");
    let v = ctl_json_as(&d, "bfa_req", &["cancel", &withdrawn]);
    accepted(&v, "requester withdraws");
    let s = d.ctl_json(&["status", &withdrawn, "--json"]);
    assert_eq!(s["state"], "cancelled", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("withdrawn by bfa_req")),
        "{s}"
    );

    // 3 dates do not exceed 3: no approval, the copy is written at once.
    let v = submit(&d, "bfa_req", "2024-04-01", "2024-04-03");
    let small = accepted(&v, "3 dates");
    assert_eq!(v["warnings"], Value::Null, "{v}");
    let s = d.ctl_json(&["status", &small, "--json"]);
    assert!(
        matches!(s["state"].as_str(), Some("submitted" | "queued")),
        "{s}"
    );
    assert_eq!(s["approved_by"], Value::Null, "{s}");
    wait_for("the small copy", Duration::from_secs(30), || {
        copy_file(&af, &small).exists().then_some(())
    });

    // The HTTP API: the same rules for a user the listener authenticated.
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let v = submit(&d, "bfa_req", "2024-05-01", "2024-05-05");
    let via_http = accepted(&v, "a big request for the API");
    let post = |user: &str, action: &str, body: Option<Value>| -> (u16, Value) {
        use base64::Engine as _;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
        let req = agent
            .post(format!(
                "http://127.0.0.1:{port}/api/v2/backfills/{via_http}/{action}"
            ))
            .header("Authorization", &format!("Basic {auth}"));
        let reply = match body {
            Some(b) => req.send_json(&b),
            None => req.header("Content-Type", "application/json").send_empty(),
        };
        let mut reply = reply.unwrap_or_else(|e| panic!("{user} {action}: {e}"));
        let text = reply.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (reply.status().as_u16(), json)
    };
    // The actions offered (the web UI's buttons): approve and reject only to an approver
    // who did not ask for it.
    let offered = |user: &str| -> Vec<String> {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
        let mut reply = ureq::get(format!(
            "http://127.0.0.1:{port}/api/v2/backfills/{via_http}"
        ))
        .header("Authorization", &format!("Basic {auth}"))
        .call()
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        let text = reply.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["allowed_actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let admin = offered("bfa_admin");
    assert!(
        admin.contains(&"approve".to_owned()) && admin.contains(&"reject".to_owned()),
        "{admin:?}"
    );
    for user in ["bfa_req", "bfa_user"] {
        let a = offered(user);
        assert!(
            !a.contains(&"approve".to_owned()) && !a.contains(&"reject".to_owned()),
            "{user}: {a:?}"
        );
    }
    let (status, p) = post("bfa_user", "approve", None);
    assert_eq!(
        (status, &p["reason_code"]),
        (403, &Value::from("not_an_approver")),
        "{p}"
    );
    let (status, p) = post("bfa_req", "approve", None);
    assert_eq!(
        (status, &p["reason_code"]),
        (403, &Value::from("self_approval")),
        "{p}"
    );
    assert_eq!(p["detail"], own, "{p}");
    let (status, p) = post("bfa_admin", "reject", Some(serde_json::json!({})));
    assert_eq!(status, 400, "a reject without a reason: {p}");
    let (status, p) = post("bfa_admin", "approve", None);
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["approved_by"], "bfa_admin", "{p}");
    assert!(
        matches!(p["state"].as_str(), Some("submitted" | "queued")),
        "{p}"
    );

    // The audit chain holds with all of that in it.
    let out = d.ctl(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn approval_on_airflow3() {
    let af = Airflow::sqlite(AirflowMajor::V3, "approval_af3");
    af.reserialize();
    let d = Daemon::start_with(&af, &[], "\n[approval]\nover_dates = 2\n");
    unix_user("bfa_admin");
    af.ensure_user("bfa_admin", "Admin");

    // root (an Admin) asks for 3 dates by a request file: it waits, and root cannot approve
    // it even as an Admin.
    d.drop_request(
        "big.toml",
        "dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-03\n",
    );
    let v = wait_for("the request's outcome", Duration::from_secs(60), || {
        let v = d.ctl_json(&["outcome", "big.toml", "--json"]);
        (v["outcome"] != "pending").then_some(v)
    });
    let id = accepted(&v, "3 dates on Airflow 3");
    assert_eq!(
        d.ctl_json(&["status", &id, "--json"])["state"],
        "awaiting_approval"
    );
    d.drop_request(
        "own.toml",
        &format!("action = \"approve\"\nid = \"{id}\"\n"),
    );
    let v = crate::authz_matrix::outcome_as(&d, "root", "own.toml");
    refused(
        &v,
        "root approves its own",
        "self_approval",
        "the requester cannot approve their own backfill",
    );
    assert!(!copy_file(&af, &id).exists());

    // Another Admin approves through backfillctl: the copy is written.
    let v = ctl_json_as(&d, "bfa_admin", &["approve", &id]);
    accepted(&v, "bfa_admin approves");
    let s = d.ctl_json(&["status", &id, "--json"]);
    assert_eq!(s["approved_by"], "bfa_admin", "{s}");
    wait_for("the approved copy", Duration::from_secs(30), || {
        copy_file(&af, &id).exists().then_some(())
    });
}

/// The store's approval statements on every engine's real server: the migration's columns, an
/// awaiting backfill counted as unfinished (overlap, per-user limit), approve and reject only
/// from `awaiting_approval`, a withdraw while awaiting; the notifications' sent marks.
#[test]
fn approval_rows_on_every_backend() {
    use backfilld::metadb::store::{self, NewBackfill, Store};
    use backfilld::metadb::MetaDb;
    use backfilld::state::BackfillState;

    let urls = crate::support::every_backend("approval_rows");
    let day = crate::support::jan;
    for url in urls {
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}")),
            store::SCHEMA_VERSION
        );
        let mut s = Store::new(&mut db);
        for (n, id) in ["a", "b", "c"].iter().enumerate() {
            let new = NewBackfill {
                awaiting_approval: Some("approval needed".into()),
                ..crate::support::sample_backfill(1, 5)
            };
            s.insert_backfill(id, &new, "h", &format!("key{n}"), day(6))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let row = |s: &mut Store<'_>, id: &str| {
            s.backfill_any(id)
                .unwrap_or_else(|e| panic!("{url}: {e}"))
                .unwrap_or_else(|| panic!("{url}: no {id}"))
        };
        let a = row(&mut s, "a");
        assert_eq!(a.state, BackfillState::AwaitingApproval, "{url}");
        assert_eq!(a.state_reason.as_deref(), Some("approval needed"), "{url}");
        assert_eq!(s.active_backfills_of("alice").ok(), Some(3), "{url}");
        assert_eq!(
            s.overlapping("sales", day(2), day(2)).ok().map(|v| v.len()),
            Some(3),
            "{url}"
        );
        let ok = |r: Result<bool, _>| r.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(ok(s.approve("a", "root_admin", day(7))), "{url}");
        assert!(!ok(s.approve("a", "root_admin", day(7))), "{url}: twice");
        assert!(!ok(s.reject("a", "x", "no", day(7))), "{url}: approved");
        assert!(ok(s.reject(
            "b",
            "root_admin",
            "rejected by root_admin: no",
            day(8)
        )));
        assert!(!ok(s.approve("b", "root_admin", day(8))), "{url}: rejected");
        assert!(ok(s.withdraw("c", "withdrawn by alice", day(9))), "{url}");
        let a = row(&mut s, "a");
        assert_eq!(
            (
                a.state,
                a.approved_by.as_deref(),
                a.approved_at,
                a.state_reason
            ),
            (
                BackfillState::Submitted,
                Some("root_admin"),
                Some(day(7)),
                None
            ),
            "{url}"
        );
        let b = row(&mut s, "b");
        assert_eq!(
            (
                b.state,
                b.rejected_by.as_deref(),
                b.rejected_at,
                b.approved_by
            ),
            (
                BackfillState::Cancelled,
                Some("root_admin"),
                Some(day(8)),
                None
            ),
            "{url}"
        );
        assert_eq!(row(&mut s, "c").state, BackfillState::Cancelled, "{url}");
        assert_eq!(s.active_backfills_of("alice").ok(), Some(1), "{url}");
        // Notifications (issue 21): the backfills in a notified state without a sent mark for
        // that state, changed since the cutoff; marking is idempotent.
        let unnotified = |s: &mut Store<'_>, since| {
            let mut ids = s.unnotified(since).unwrap_or_else(|e| panic!("{url}: {e}"));
            ids.sort();
            ids
        };
        assert_eq!(unnotified(&mut s, day(1)), ["b", "c"], "{url}");
        assert!(unnotified(&mut s, day(10)).is_empty(), "{url}");
        for state in [BackfillState::Cancelled, BackfillState::Cancelled] {
            s.mark_notified("b", state, day(9))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        s.mark_notified("c", BackfillState::AwaitingApproval, day(9))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(unnotified(&mut s, day(1)), ["c"], "{url}");
    }
}
