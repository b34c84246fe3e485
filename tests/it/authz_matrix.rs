//! Issue 3's permission matrix on Airflow 2.11 + SQLite: real `ab_*` rows made by Airflow's own
//! CLI (`sync-perm`, `roles create`, `roles add-perms`, `users import`, per-DAG
//! `access_control`), real unix users made with `useradd`, requests dropped and read by those
//! users through `runuser`. Create, read, cancel and delete all go through the daemon.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use backfilld::authz::{self, Action};
use backfilld::dburl::DbUrl;
use backfilld::metadb::fab::Fab;
use backfilld::metadb::MetaDb;

use crate::support::{repo_dir, wait_for, Airflow, AirflowMajor, Daemon};

/// Create a unix user (no home, no login) unless it exists; its uid.
pub fn unix_user(name: &str) -> u32 {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let out = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", name])
            .output()
            .unwrap_or_else(|e| panic!("useradd: {e}"));
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .unwrap_or_else(|| panic!("no uid for {name}"))
}

/// Run `backfillctl --config <daemon's> args...` as the unix user `user`.
pub fn ctl_as(d: &Daemon, user: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            env!("CARGO_BIN_EXE_backfillctl"),
            "--config",
        ])
        .arg(&d.config)
        .args(args)
        .env_remove("BACKFILLD_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("runuser: {e}"))
}

/// Drop a request file as `user` (write a hidden temp file, rename it in), as a user's own
/// tools would, then wait for its outcome as that user.
pub fn drop_as(d: &Daemon, user: &str, name: &str, body: &str) -> Value {
    let incoming = d.spool.join("incoming");
    let script = format!(
        "umask 022 && cat > {dir}/.{name}.part && mv {dir}/.{name}.part {dir}/{name}",
        dir = incoming.display()
    );
    let mut child = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("runuser: {e}"));
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(body.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "dropping {name} as {user}");
    outcome_as(d, user, name)
}

/// Poll `backfillctl outcome` as `user` until the file is decided.
pub fn outcome_as(d: &Daemon, user: &str, name: &str) -> Value {
    wait_for(
        &format!("a decision on {name}"),
        Duration::from_secs(60),
        || {
            let out = ctl_as(d, user, &["outcome", name, "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["outcome"] != "pending").then_some(v)
        },
    )
}

fn submit_as(d: &Daemon, user: &str, dag: &str, month: u32) -> Value {
    let start = format!("2024-{month:02}-01");
    let end = format!("2024-{month:02}-02");
    let out = ctl_as(
        d,
        user,
        &[
            "submit", "--dag", dag, "--start", &start, "--end", &end, "--json",
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{user} submit {dag}: {e}: {}{}\n--- daemon ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        )
    })
}

fn expect(v: &Value, what: &str, code: Option<&str>) {
    match code {
        None => assert_eq!(v["outcome"], "accepted", "{what}: {v}"),
        Some(c) => {
            assert_eq!(v["outcome"], "rejected", "{what}: {v}");
            assert_eq!(v["reason_code"], c, "{what}: {v}");
            assert!(
                v["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{what}: {v}"
            );
        }
    }
}

/// The Airflow side: default roles, custom roles, per-DAG access, users.
fn airflow_with_rbac() -> Airflow {
    let af = Airflow::sqlite(AirflowMajor::V2, "authz_matrix_af2");
    af.cli_ok(&[
        "roles",
        "create",
        "sales_editor",
        "ledger_editor",
        "dag_editor",
    ]);
    std::fs::copy(
        repo_dir().join("dags/authz/ledger.py"),
        af.dags_folder().join("ledger.py"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    af.reserialize();
    af.cli_ok(&["sync-perm", "--include-dags"]);
    af.cli_ok(&[
        "roles",
        "add-perms",
        "sales_editor",
        "-a",
        "can_edit",
        "can_read",
        "-r",
        "DAG:sales",
    ]);
    af.cli_ok(&[
        "roles",
        "add-perms",
        "dag_editor",
        "-a",
        "can_edit",
        "can_read",
        "-r",
        "DAGs",
    ]);
    let users: Vec<Value> = [
        ("bfz_admin", "Admin"),
        ("bfz_user", "User"),
        ("op_person", "Op"),
        ("bfz_viewer", "Viewer"),
        ("bfz_sales", "sales_editor"),
        ("bfz_ledger", "ledger_editor"),
        ("bfz_inactive", "User"),
        ("bfz_outsider", "dag_editor"),
    ]
    .iter()
    .map(|(u, r)| {
        serde_json::json!({
            "username": u, "firstname": u, "lastname": "test",
            "email": format!("{u}@backfilld.invalid"), "roles": [r]
        })
    })
    .collect();
    let file = af.home.join("users.json");
    std::fs::write(&file, Value::Array(users).to_string()).unwrap_or_else(|e| panic!("{e}"));
    af.cli_ok(&["users", "import", &file.to_string_lossy()]);
    af.sql()
        .execute(
            "UPDATE ab_user SET active = 0 WHERE username = 'bfz_inactive'",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    af
}

#[test]
fn permission_matrix_on_airflow2_fab() {
    let af = airflow_with_rbac();
    let unix = [
        "bfz_admin",
        "bfz_user",
        "bfz_op",
        "bfz_viewer",
        "bfz_sales",
        "bfz_ledger",
        "bfz_inactive",
        "bfz_nouser",
        "bfz_unmapped",
        "bfz_outsider",
        "bfz_svc",
    ];
    let uids: Vec<u32> = unix.iter().map(|u| unix_user(u)).collect();
    let svc_uid = uids[10];
    let mut map = String::new();
    for u in unix
        .iter()
        .filter(|u| **u != "bfz_unmapped" && **u != "bfz_op")
    {
        map.push_str(&format!("{u} = \"{u}\"\n"));
    }
    map.push_str("bfz_op = \"op_person\"\n");
    let extra = format!(
        "\n[identity]\nsame_name = false\ntrusted_submitters = [{svc_uid}]\n\n[identity.map]\n{map}\n\
         [authz]\npermitted_roles = [\"User\", \"Op\", \"sales_editor\", \"ledger_editor\"]\n"
    );
    let d = Daemon::start_with(&af, &[], &extra);

    // Registration: Backfills with its four actions, granted to Admin and the permitted roles
    // that exist, not to Viewer or dag_editor.
    let granted = |role: &str| {
        af.count(
            "SELECT COUNT(*) FROM ab_permission_view_role pvr \
             JOIN ab_permission_view pv ON pv.id = pvr.permission_view_id \
             JOIN ab_view_menu v ON v.id = pv.view_menu_id \
             JOIN ab_role r ON r.id = pvr.role_id WHERE v.name = 'Backfills' AND r.name = ?1",
            &[&role],
        )
    };
    // The control socket is up before the daemon has connected and registered: wait for it.
    let granted_roles = ["Admin", "User", "Op", "sales_editor", "ledger_editor"];
    wait_for("the Backfills permissions", Duration::from_secs(60), || {
        granted_roles
            .iter()
            .all(|role| granted(role) == 4)
            .then_some(())
    });
    for role in granted_roles {
        assert_eq!(granted(role), 4, "{role}");
    }
    for role in ["Viewer", "dag_editor", "Public"] {
        assert_eq!(granted(role), 0, "{role}");
    }

    // Create: (unix user, DAG, expected reason or None for accepted). One month per case, so
    // no accepted request overlaps another.
    let creates: &[(&str, &str, Option<&str>)] = &[
        ("bfz_admin", "sales", None),
        ("bfz_admin", "ledger", None),
        ("bfz_user", "sales", None),
        ("bfz_op", "ledger", None),
        ("bfz_viewer", "sales", Some("missing_backfill_permission")),
        ("bfz_sales", "sales", None),
        ("bfz_sales", "ledger", Some("missing_dag_edit")),
        ("bfz_sales", "weekly_report", Some("missing_dag_edit")),
        ("bfz_ledger", "ledger", None),
        ("bfz_ledger", "sales", Some("missing_dag_edit")),
        ("bfz_inactive", "sales", Some("inactive_user")),
        ("bfz_nouser", "sales", Some("no_airflow_user")),
        ("bfz_unmapped", "sales", Some("unmapped_user")),
        ("bfz_outsider", "sales", Some("missing_backfill_permission")),
    ];
    let mut sales_ids = BTreeSet::new();
    let mut ledger_ids = BTreeSet::new();
    for (i, (user, dag, code)) in creates.iter().enumerate() {
        let month = u32::try_from(i % 12 + 1).unwrap_or(1);
        let v = submit_as(&d, user, dag, month);
        expect(&v, &format!("{user} create {dag}"), *code);
        if code.is_none() {
            let id = v["backfill_id"].as_str().unwrap_or_default().to_owned();
            if *dag == "ledger" {
                ledger_ids.insert(id);
            } else {
                sales_ids.insert(id);
            }
        }
    }

    // on_behalf_of: a trusted submitter acts for bfz_user (allowed) or for bfz_sales on a DAG
    // bfz_sales may not edit (refused by bfz_sales's rights); anyone else may not use it.
    let body = |dag: &str, month: u32, who: &str| {
        format!(
            "dag_id = \"{dag}\"\nstart = 2025-{month:02}-01\nend = 2025-{month:02}-02\non_behalf_of = \"{who}\"\n"
        )
    };
    let v = drop_as(&d, "bfz_svc", "svc-1.toml", &body("sales", 1, "bfz_user"));
    expect(&v, "svc for bfz_user", None);
    assert_eq!(v["airflow_user"], "bfz_user", "{v}");
    assert_eq!(v["on_behalf_of"], "bfz_user", "{v}");
    let svc_id = v["backfill_id"].as_str().unwrap_or_default().to_owned();
    sales_ids.insert(svc_id.clone());
    let v = drop_as(&d, "bfz_svc", "svc-2.toml", &body("ledger", 2, "bfz_sales"));
    expect(&v, "svc for bfz_sales on ledger", Some("missing_dag_edit"));
    let v = drop_as(
        &d,
        "bfz_user",
        "sneaky.toml",
        &body("sales", 3, "bfz_admin"),
    );
    expect(
        &v,
        "on_behalf_of by an untrusted user",
        Some("on_behalf_not_allowed"),
    );
    // The stored rows show requester and on-behalf-of.
    let (requester, obo, by): (String, String, String) = af
        .sql()
        .query_row(
            "SELECT requester, on_behalf_of, submitted_by FROM backfilld_backfill WHERE id = ?1",
            [&svc_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (requester.as_str(), obo.as_str(), by.as_str()),
        ("bfz_svc", "bfz_user", "bfz_user")
    );
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_request WHERE file_name = 'svc-1.toml' \
             AND airflow_user = 'bfz_user' AND on_behalf_of = 'bfz_user'",
            &[]
        ),
        1
    );

    // A file whose owner uid has no user name on this host.
    let orphan = d.spool.join("incoming").join(".orphan.part");
    std::fs::write(
        &orphan,
        "dag_id = \"sales\"\nstart = 2026-01-01\nend = 2026-01-02\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    nix::unistd::chown(&orphan, Some(nix::unistd::Uid::from_raw(54_321)), None)
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&orphan, d.spool.join("incoming").join("orphan.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the orphan's decision", Duration::from_secs(60), || {
        (af.count(
            "SELECT COUNT(*) FROM backfilld_request WHERE uid = 54321 AND reason_code = 'unknown_user'",
            &[],
        ) == 1)
            .then_some(())
    });

    // Read: who may list, and what each sees.
    let all: BTreeSet<String> = sales_ids.union(&ledger_ids).cloned().collect();
    let reads: &[(&str, Result<&BTreeSet<String>, &str>)] = &[
        ("bfz_admin", Ok(&all)),
        ("bfz_user", Ok(&all)),
        ("bfz_op", Ok(&all)),
        ("bfz_sales", Ok(&sales_ids)),
        ("bfz_ledger", Ok(&ledger_ids)),
        ("bfz_viewer", Err("missing_backfill_permission")),
        ("bfz_outsider", Err("missing_backfill_permission")),
        ("bfz_inactive", Err("inactive_user")),
        ("bfz_nouser", Err("no_airflow_user")),
        ("bfz_unmapped", Err("unmapped_user")),
    ];
    for (user, expected) in reads {
        let out = ctl_as(&d, user, &["list", "--json"]);
        match expected {
            Ok(ids) => {
                assert!(out.status.success(), "{user} list: {out:?}");
                let list: Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
                let seen: BTreeSet<String> = list
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|b| b["id"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(&&seen, ids, "{user} list");
            }
            Err(code) => {
                assert!(!out.status.success(), "{user} list should be refused");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(code), "{user} list: {err}");
            }
        }
    }
    // status of a backfill of a DAG the caller cannot read is refused.
    let ledger_one = ledger_ids.iter().next().cloned().unwrap_or_default();
    let out = ctl_as(&d, "bfz_sales", &["status", &ledger_one, "--json"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing_dag_read"));

    // Cancel and delete through the daemon, dropped by the real unix users: for each case the
    // admin makes a fresh backfill (2022, one month per case); the user cancels it; an allowed
    // user then deletes it, a refused one tries to delete it after the admin cancelled it.
    let operate: &[(&str, &str, Option<&str>)] = &[
        ("bfz_admin", "sales", None),
        ("bfz_user", "ledger", None),
        ("bfz_op", "sales", None),
        ("bfz_viewer", "sales", Some("missing_backfill_permission")),
        ("bfz_sales", "sales", None),
        ("bfz_sales", "ledger", Some("missing_dag_edit")),
        ("bfz_ledger", "ledger", None),
        ("bfz_inactive", "sales", Some("inactive_user")),
        ("bfz_outsider", "sales", Some("missing_backfill_permission")),
        ("bfz_nouser", "sales", Some("no_airflow_user")),
        ("bfz_unmapped", "sales", Some("unmapped_user")),
    ];
    let act = |user: &str, action: &str, id: &str| -> Value {
        let out = ctl_as(&d, user, &[action, id, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{user} {action} {id}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let mut operated = 0usize;
    for (i, (user, dag, code)) in operate.iter().enumerate() {
        let month = u32::try_from(i % 12 + 1).unwrap_or(1);
        let body =
            format!("dag_id = \"{dag}\"\nstart = 2022-{month:02}-01\nend = 2022-{month:02}-02\n");
        let made = drop_as(&d, "bfz_admin", &format!("op-{i}.toml"), &body);
        expect(&made, &format!("admin create {dag} for {user}"), None);
        let id = made["backfill_id"].as_str().unwrap_or_default().to_owned();
        let v = act(user, "cancel", &id);
        expect(&v, &format!("{user} cancel {dag}"), *code);
        if code.is_some() {
            let v = act("bfz_admin", "cancel", &id);
            expect(&v, &format!("admin cancel {dag} after {user}"), None);
        }
        let v = act(user, "delete", &id);
        expect(&v, &format!("{user} delete {dag}"), *code);
        if code.is_none() {
            operated += 1;
            wait_for(
                &format!("{user}'s delete of {id}"),
                Duration::from_secs(60),
                || {
                    (af.count(
                        "SELECT COUNT(*) FROM backfilld_backfill WHERE id = ?1 AND deleted = 1",
                        &[&id],
                    ) == 1)
                        .then_some(())
                },
            );
        }
    }
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE action IN ('cancel', 'delete') AND allowed = 1",
            &[]
        ),
        i64::try_from(2 * operated + (operate.len() - operated)).unwrap_or(0)
    );
    assert!(Fab::new(
        &mut MetaDb::connect(&DbUrl::Sqlite(af.db_path())).unwrap_or_else(|e| panic!("{e}"))
    )
    .user("bfz_nouser")
    .unwrap_or_else(|e| panic!("{e}"))
    .is_none());

    // Audit: every decision has a row; denials carry their reason.
    let denied = |code: &str| {
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE allowed = 0 AND reason_code = ?1",
            &[&code],
        )
    };
    // Creates of ledger/weekly_report by bfz_sales, sales by bfz_ledger, the svc for bfz_sales,
    // and bfz_sales's cancel and delete of a ledger backfill.
    assert_eq!(denied("missing_dag_edit"), 6);
    assert_eq!(denied("on_behalf_not_allowed"), 1);
    assert!(denied("missing_backfill_permission") >= 4);
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'create' AND allowed = 1",
            &[]
        ),
        i64::try_from(sales_ids.len() + ledger_ids.len() + operate.len()).unwrap_or(0)
    );
    assert!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'read' AND unix_user = 'bfz_sales' AND allowed = 1",
            &[]
        ) >= 1
    );
    assert!(d.log_text().contains("authorization decision"));

    // Registration is idempotent across restarts.
    let rows = af.count("SELECT COUNT(*) FROM ab_permission_view_role", &[]);
    let mut d = d;
    d.restart(&[]);
    assert_eq!(
        af.count("SELECT COUNT(*) FROM ab_permission_view_role", &[]),
        rows
    );
}

/// Airflow 3.1 with the FAB provider: the same registration and decisions over its `ab_*`
/// tables, including roles granted through FAB groups (which Airflow 2.11's FAB lacks). Groups
/// have no Airflow CLI, so the group rows are inserted directly.
#[test]
fn fab_rules_on_airflow3_with_groups() {
    let af = Airflow::sqlite(AirflowMajor::V3, "authz_fab_af3");
    af.cli_ok(&["sync-perm"]);
    let users: Vec<Value> = [
        ("bfz_user", "User"),
        ("bfz_viewer", "Viewer"),
        ("bfz_grouped", "Public"),
    ]
    .iter()
    .map(|(u, r)| {
        serde_json::json!({
            "username": u, "firstname": u, "lastname": "test",
            "email": format!("{u}@backfilld.invalid"), "roles": [r]
        })
    })
    .collect();
    let file = af.home.join("users.json");
    std::fs::write(&file, Value::Array(users).to_string()).unwrap_or_else(|e| panic!("{e}"));
    af.cli_ok(&["users", "import", &file.to_string_lossy()]);
    {
        let c = af.sql();
        c.execute(
            "INSERT INTO ab_group (name, label, description) VALUES ('backfillers', 'b', 'b')",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c.execute(
            "INSERT INTO ab_group_role (group_id, role_id) SELECT g.id, r.id FROM ab_group g, ab_role r \
             WHERE g.name = 'backfillers' AND r.name = 'User'",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c.execute(
            "INSERT INTO ab_user_group (user_id, group_id) SELECT u.id, g.id FROM ab_user u, ab_group g \
             WHERE u.username = 'bfz_grouped' AND g.name = 'backfillers'",
            [],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut db = MetaDb::connect(&DbUrl::Sqlite(af.db_path())).unwrap_or_else(|e| panic!("{e}"));
    let mut fab = Fab::new(&mut db);
    assert!(fab.present().unwrap_or_else(|e| panic!("{e}")));
    let permitted = vec!["User".to_owned(), "Op".to_owned()];
    let reg = fab
        .register_backfills(&permitted, authz::RESOURCE_BACKFILLS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg.granted, vec!["Admin", "User", "Op"], "{reg:?}");
    let again = fab
        .register_backfills(&permitted, authz::RESOURCE_BACKFILLS)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.inserted, 0, "registration is idempotent");
    let decide_on = |fab: &mut Fab<'_>, resource: &str, user: &str, action: Action| {
        let u = fab
            .user(user)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no ab_user {user}"));
        let s = fab.subject(&u, resource).unwrap_or_else(|e| panic!("{e}"));
        authz::authorize(&s, action, Some("sales"))
            .err()
            .map(|d| d.code)
    };
    let decide = |fab: &mut Fab<'_>, user: &str, action: Action| {
        decide_on(fab, authz::RESOURCE_BACKFILLS, user, action)
    };
    // Airflow 3's own FAB model already has a `Backfills` resource (its native backfills) and
    // grants Viewer `can_read` on it, so a Viewer may read (lists stay filtered by DAG read).
    assert_eq!(decide(&mut fab, "bfz_viewer", Action::Read), None);
    for action in [Action::Create, Action::Read, Action::Cancel, Action::Delete] {
        assert_eq!(decide(&mut fab, "bfz_user", action), None, "{action:?}");
        assert_eq!(decide(&mut fab, "bfz_grouped", action), None, "{action:?}");
        if action == Action::Read {
            continue;
        }
        assert_eq!(
            decide(&mut fab, "bfz_viewer", action),
            Some(authz::DenyCode::MissingBackfillPermission),
            "{action:?}"
        );
    }

    // `[authz] resource` names a resource of backfilld's own: Airflow's native `Backfills`
    // grants (Viewer's can_read, Op's can_create) then count for nothing.
    let own = "backfilld";
    let reg = fab
        .register_backfills(&["User".to_owned()], own)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg.granted, vec!["Admin", "User"], "{reg:?}");
    assert_eq!(decide_on(&mut fab, own, "bfz_user", Action::Create), None);
    assert_eq!(
        decide_on(&mut fab, own, "bfz_grouped", Action::Cancel),
        None
    );
    assert_eq!(
        decide_on(&mut fab, own, "bfz_viewer", Action::Read),
        Some(authz::DenyCode::MissingBackfillPermission)
    );
}

/// Airflow 3's SimpleAuthManager (no `ab_*` users): users and roles come from
/// `simple_auth_manager_users`; admin/op/user may create, viewer may not, unlisted users are
/// refused; with `simple_auth_manager_all_admins` nobody is authorised unless backfilld's
/// config allows it. The DAG does not exist, so an authorised request ends `unknown_dag`.
#[test]
fn simple_auth_manager_on_airflow3() {
    let af = Airflow::sqlite(AirflowMajor::V3, "authz_simple_af3");
    for u in ["bfz_user", "bfz_viewer", "bfz_op"] {
        unix_user(u);
    }
    let mut d = Daemon::start_with(&af, &[], "");
    let simple = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager";
    let config = std::fs::read_to_string(&d.config).unwrap_or_else(|e| panic!("{e}"));
    let config = config
        .lines()
        .filter(|l| !l.starts_with("auth_manager"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "[airflow]\n",
            &format!("[airflow]\nauth_manager = \"{simple}\"\n"),
        );
    std::fs::write(&d.config, &config).unwrap_or_else(|e| panic!("{e}"));
    let users = (
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "bfz_user:user,bfz_viewer:viewer",
    );
    d.restart(&[users]);
    assert!(
        d.log_text().contains("simple (all_admins=false)"),
        "{}",
        d.log_text()
    );
    let cases: &[(&str, u32, &str)] = &[
        ("bfz_user", 1, "unknown_dag"),
        ("bfz_viewer", 2, "missing_backfill_permission"),
        ("bfz_op", 3, "no_airflow_user"),
    ];
    for (user, month, code) in cases {
        let v = submit_as(&d, user, "no_such_dag", *month);
        expect(&v, &format!("{user} under SimpleAuthManager"), Some(code));
    }
    let out = ctl_as(&d, "bfz_viewer", &["list", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing_backfill_permission"));
    let out = ctl_as(&d, "bfz_user", &["list", "--json"]);
    assert!(out.status.success(), "{out:?}");

    // Everyone admin: refused unless allowed.
    let all_admins = ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True");
    d.restart(&[users, all_admins]);
    let v = submit_as(&d, "bfz_op", "no_such_dag", 4);
    expect(&v, "all_admins, not allowed", Some("auth_unavailable"));
    std::fs::write(
        &d.config,
        format!("{config}\n[authz]\nallow_simple_all_admins = true\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.restart(&[users, all_admins]);
    let v = submit_as(&d, "bfz_op", "no_such_dag", 5);
    expect(&v, "all_admins, allowed", Some("unknown_dag"));
    assert!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE reason_code = 'auth_unavailable'",
            &[]
        ) >= 1
    );
}
