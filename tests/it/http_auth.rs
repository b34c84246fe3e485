//! Issue 17's web access acceptance on real Airflow 2.11: no password login for a user whose
//! stored hash is that of the empty password (what FAB writes for users its LDAP, OAuth and
//! REMOTE_USER sign-ins create), by HTTP Basic or the login form, while a password user still
//! logs in; password logins refused, with the reason on the login page and in the log, when
//! `webserver_config.py` sets another `AUTH_TYPE` or `[http] password_logins = false`. (A token
//! the Airflow 3.3 api-server revoked at logout is refused: `http_api`'s 3.3 token test.)

use std::time::Duration;

use crate::http_api::{assert_problem, basic, Client};
use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon};

/// `generate_password_hash("")` written by werkzeug in Airflow 2.11's venv.
pub const EMPTY_PASSWORD_HASH: &str = "scrypt:32768:8:1$Kg2fEfpSRITpzhmz$0afc801d4102d74929a35922ffe22721b8dffe4f07a32087ce0e4f75c15a8fd0b839bb177388b42a0d6e4edabe6cbaa6d1e21dea6c06df6285e6ef4fd11e991c";

/// Make `name` look like a user FAB created on an SSO sign-in: the empty password's hash.
pub fn make_sso_user(af: &Airflow, name: &str) {
    af.ensure_user(name, "User");
    let n = af
        .sql()
        .execute(
            "UPDATE ab_user SET password = ?1 WHERE username = ?2",
            [EMPTY_PASSWORD_HASH, name],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 1);
}

fn write_webserver_config(af: &Airflow, auth_type: &str) {
    std::fs::write(
        af.home.join("webserver_config.py"),
        format!(
            "from __future__ import annotations\nimport os\n\
             from flask_appbuilder.const import AUTH_DB, AUTH_LDAP, AUTH_OAUTH\n\
             WTF_CSRF_ENABLED = True\nAUTH_TYPE = {auth_type}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn passwords_only_where_airflow_takes_them_on_airflow2() {
    let af = Airflow::sqlite(AirflowMajor::V2, "http_auth_passwords");
    write_webserver_config(&af, "AUTH_DB");
    let port = free_port();
    let mut daemon = Daemon::start_with(
        &af,
        &[],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_failed_logins = 100\n"),
    );
    make_sso_user(&af, "alice");
    af.ensure_user("bob", "User");
    let c = Client::new(port);
    let listening = || {
        wait_for("the HTTP listener", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
    };
    listening();

    // `curl -u alice:` and the login form with an empty password: refused.
    assert_problem(&c.get("/api/v2/backfills", Some(&basic("alice", ""))), 401);
    assert_problem(
        &c.get("/api/v2/backfills", Some(&basic("alice", "pw"))),
        401,
    );
    let form = c.post_form("/login", None, &[("username", "alice"), ("password", "")]);
    assert_eq!(form.status, 401, "{}", form.body);
    assert!(form.header("set-cookie").is_none());
    // A password user still logs in, under the ab_user row's spelling of the name.
    let ok = c.get("/api/v2/backfills", Some(&basic("bob", "pw")));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let form = c.post_form("/login", None, &[("username", "bob"), ("password", "pw")]);
    assert_eq!(form.status, 303, "{}", form.body);
    // The refusals were audited with their reason.
    let audited = af.count(
        "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'login' AND allowed = 0 \
         AND airflow_user = 'alice' AND reason IN ('empty password', 'wrong password')",
        &[],
    );
    assert!(audited >= 3, "{audited}\n{}", daemon.log_text());

    // Airflow signs users in through LDAP or OAuth: no password logins, and the reason shown.
    for auth_type in ["AUTH_LDAP", "AUTH_OAUTH"] {
        write_webserver_config(&af, auth_type);
        daemon.kill9();
        daemon.restart(&[]);
        listening();
        let refused = c.get("/api/v2/backfills", Some(&basic("bob", "pw")));
        assert_problem(&refused, 401);
        assert!(refused.body.contains(auth_type), "{}", refused.body);
        let page = c.get("/login", None);
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("accepts no passwords") && page.body.contains(auth_type),
            "{}",
            page.body
        );
        assert!(!page.body.contains("type=\"password\""), "{}", page.body);
        let form = c.post_form("/login", None, &[("username", "bob"), ("password", "pw")]);
        assert_eq!(form.status, 401, "{}", form.body);
        let log = daemon.log_text();
        assert!(
            log.contains("password logins are off") && log.contains(auth_type),
            "{log}"
        );
    }

    // An unreadable AUTH_TYPE (set conditionally) is taken as "not AUTH_DB".
    std::fs::write(
        af.home.join("webserver_config.py"),
        "import os\nif os.environ.get('SSO'):\n    AUTH_TYPE = 4\nelse:\n    AUTH_TYPE = 1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    daemon.kill9();
    daemon.restart(&[]);
    listening();
    let refused = c.get("/api/v2/backfills", Some(&basic("bob", "pw")));
    assert_problem(&refused, 401);
    assert!(refused.body.contains("cannot tell"), "{}", refused.body);

    // An admin revokes User's can_create on Backfills: a restart does not grant it again.
    let user_can_create = "SELECT COUNT(*) FROM ab_permission_view_role pvr \
        JOIN ab_role r ON r.id = pvr.role_id \
        JOIN ab_permission_view pv ON pv.id = pvr.permission_view_id \
        JOIN ab_permission p ON p.id = pv.permission_id \
        JOIN ab_view_menu v ON v.id = pv.view_menu_id \
        WHERE r.name = 'User' AND p.name = 'can_create' AND v.name = 'Backfills'";
    assert_eq!(af.count(user_can_create, &[]), 1);
    let delete = format!(
        "DELETE FROM ab_permission_view_role WHERE id IN ({})",
        user_can_create.replace("SELECT COUNT(*)", "SELECT pvr.id")
    );
    af.sql()
        .execute(&delete, [])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(af.count(user_can_create, &[]), 0);

    // Back on AUTH_DB, `[http] password_logins = false` turns them off everywhere.
    write_webserver_config(&af, "AUTH_DB");
    let config = std::fs::read_to_string(&daemon.config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &daemon.config,
        config.replace("[http]\n", "[http]\npassword_logins = false\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    daemon.kill9();
    daemon.restart(&[]);
    listening();
    let refused = c.get("/api/v2/backfills", Some(&basic("bob", "pw")));
    assert_problem(&refused, 401);
    assert!(refused.body.contains("password_logins"), "{}", refused.body);
    assert_eq!(
        af.count(user_can_create, &[]),
        0,
        "a revoked grant came back\n{}",
        daemon.log_text()
    );
    assert!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_grant WHERE role = 'User' AND action = 'can_create'",
            &[]
        ) == 1
    );
}
