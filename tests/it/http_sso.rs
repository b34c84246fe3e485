//! Issue 17's single sign-on acceptance, end to end in headless Chromium: a real Airflow 2.11
//! webserver and backfilld behind one nginx (backfilld under `/backfills/`). A user logs in on
//! Airflow's own login page, then uses backfilld's UI through the same origin as that user
//! (creates a backfill) with no second password, and the API with the same cookie. A user
//! FAB made on an SSO sign-in (empty-password hash) is refused a password login, then signed
//! in by Airflow (`AUTH_REMOTE_USER`, with nginx standing in for the SSO proxy) works through
//! the session.
//!
//! Needs `nginx`, `chromium` and `chromium-driver`; without them the test skips, except when
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http_api::{assert_problem, basic, Client};
use crate::http_auth::make_sso_user;
use crate::http_browser::{find_program, Browser};
use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon, Proc};

/// nginx in the foreground, one process, with its config and temp files in `dir`.
/// Airflow behind one nginx front on `front_port`, backfilld (on `bf_port`) under
/// `/backfills/` of it: the scheduler started (Airflow 3's api-server with it), Airflow 2's
/// webserver started behind the front. Returns the front's client, nginx and the webserver.
pub(crate) fn start_front(
    af: &mut Airflow,
    nginx: &Path,
    front_port: u16,
    bf_port: u16,
) -> (Client, Proc, Option<Proc>) {
    let front = Client::new(front_port);
    af.start_scheduler();
    let v3 = af.major.is_v3();
    let airflow_port = if v3 { af.api_port } else { free_port() };
    let proxy = start_nginx(
        nginx,
        &af.home.join("nginx"),
        front_port,
        bf_port,
        airflow_port,
    );
    let web = (!v3).then(|| start_webserver(af, airflow_port, &front, 1));
    (front, proxy, web)
}

pub(crate) fn start_nginx(
    nginx: &Path,
    dir: &Path,
    port: u16,
    backfilld: u16,
    airflow: u16,
) -> Proc {
    std::fs::create_dir_all(dir.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
             server {{\n    listen 127.0.0.1:{port};\n\
             # backfilld under /backfills/ (the README's snippet)\n\
             location /backfills/ {{\n      proxy_pass http://127.0.0.1:{backfilld}/;\n\
             proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n\
             # Airflow's webserver at the root; X-Airflow-User stands in for an SSO proxy\n\
             location / {{\n      proxy_pass http://127.0.0.1:{airflow};\n\
             proxy_set_header Host $http_host;\n      proxy_set_header X-Airflow-User $arg_sso_user;\n    }}\n  }}\n}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(dir).arg("-c").arg(&conf);
    let proc = Proc::spawn("nginx", cmd, &dir.join("nginx.out"));
    wait_for("nginx", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    proc
}

/// `webserver_config.py` with CSRF on and `AUTH_TYPE = <auth_type>` (`AUTH_DB`, `AUTH_LDAP` or
/// `AUTH_REMOTE_USER`, with the SSO proxy's header); a test may append more settings.
pub(crate) fn write_webserver_config(af: &Airflow, auth_type: &str) {
    std::fs::write(
        af.home.join("webserver_config.py"),
        format!(
            "from __future__ import annotations\n\
             from flask_appbuilder.const import AUTH_DB, AUTH_LDAP, AUTH_REMOTE_USER\n\
             WTF_CSRF_ENABLED = True\nAUTH_TYPE = {auth_type}\n\
             AUTH_REMOTE_USER_ENV_VAR = \"HTTP_X_AIRFLOW_USER\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Airflow 2's webserver with one worker, answering `/health` through nginx at `front`.
pub(crate) fn start_webserver(af: &Airflow, port: u16, front: &Client, run: u32) -> Proc {
    let mut cmd = af.command("airflow");
    cmd.args([
        "webserver",
        "-p",
        &port.to_string(),
        "-H",
        "127.0.0.1",
        "-w",
        "1",
    ]);
    let proc = Proc::spawn(
        "airflow webserver",
        cmd,
        &af.home.join(format!("webserver.{run}.log")),
    );
    wait_for("the Airflow webserver", Duration::from_secs(240), || {
        (front.get("/health", None).status == 200).then_some(())
    });
    proc
}

pub(crate) fn page_text(b: &Browser) -> String {
    b.script("return document.body.innerText;", json!([]))
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Chromium, chromedriver and nginx, for the tests behind a proxy in a browser; `None` (the
/// test skips) when one is missing, which fails under `CI=true`.
pub(crate) fn proxy_browser_tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let chromedriver = find_program(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    let nginx = find_program(&["nginx", "/usr/sbin/nginx"]);
    let found = chromium
        .zip(chromedriver)
        .zip(nginx)
        .map(|((c, d), n)| (c, d, n));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but nginx, chromium or chromium-driver is not installed"
        );
        eprintln!("skipped: nginx, chromium or chromium-driver is not installed");
    }
    found
}

pub(crate) fn who(b: &Browser) -> String {
    b.script(
        "const w = document.querySelector('.who'); return w ? w.textContent : '';",
        json!([]),
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

fn session_cookie(b: &Browser) -> String {
    let v: Value = b.cmd("GET", "/cookie/session", None);
    format!("session={}", v["value"].as_str().unwrap_or_default())
}

#[test]
fn airflow2_sign_in_carries_over_to_backfilld_behind_nginx() {
    let Some((chromium, chromedriver, nginx)) = proxy_browser_tools() else {
        return;
    };
    let af = Airflow::sqlite(AirflowMajor::V2, "http_sso_af2");
    write_webserver_config(&af, "AUTH_DB");
    af.reserialize();
    let (front_port, bf_port, web_port) = (free_port(), free_port(), free_port());
    let mut daemon = Daemon::start_with(
        &af,
        &[],
        &format!(
            "\n[http]\nlisten = \"127.0.0.1:{bf_port}\"\nairflow_sessions = true\nbase_path = \"/backfills\"\n"
        ),
    );
    af.ensure_user("bob", "User");
    make_sso_user(&af, "alice");
    let _nginx = start_nginx(
        &nginx,
        &af.home.join("nginx"),
        front_port,
        bf_port,
        web_port,
    );
    let front = Client::new(front_port);
    let mut web = start_webserver(&af, web_port, &front, 1);
    let origin = format!("http://127.0.0.1:{front_port}");
    let app = format!("{origin}/backfills");

    // The SSO-style user gets no password login, by Basic or the form, through the proxy.
    assert_problem(
        &front.get("/backfills/api/v2/backfills", Some(&basic("alice", ""))),
        401,
    );
    let form = front.post_form(
        "/backfills/login",
        None,
        &[("username", "alice"), ("password", "")],
    );
    assert_eq!(form.status, 401, "{}", form.body);
    // Anonymous: backfilld's redirects stay under the prefix.
    let anon = front.get("/backfills/", None);
    assert_eq!(anon.status, 303, "{}", anon.body);
    assert_eq!(anon.header("location"), Some("/backfills/login"));

    let profile = af.home.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::start(&chromium, &chromedriver, &profile);

    // bob logs in on Airflow's own login page ...
    b.goto(&format!("{origin}/login/"));
    b.type_into("#username", "bob");
    b.type_into("#password", "pw");
    b.click("input[type=submit]");
    wait_for("Airflow's home page", Duration::from_secs(60), || {
        (!b.url().contains("/login")).then_some(())
    });
    // ... and is bob in backfilld's UI, with no second login.
    b.goto(&format!("{app}/"));
    assert_eq!(b.url(), format!("{app}/"), "{}", page_text(&b));
    assert_eq!(who(&b), "bob", "{}", page_text(&b));
    let made = b.create(&app, "sales", "2024-05-01", "2024-05-02", "");
    assert!(
        made.starts_with("sales_backfill_"),
        "{made}: {}\n{}",
        b.url(),
        page_text(&b)
    );
    assert!(
        b.url().starts_with(&format!("{app}/backfills/")),
        "{}",
        b.url()
    );
    let status = daemon.ctl_json(&["status", &made, "--json"]);
    assert_eq!(status["submitted_by"], "bob", "{status}");
    // Its DAG copy is no more readable than the origin file: its group, never others.
    {
        use std::os::unix::fs::MetadataExt as _;
        let copy = af
            .dags_folder()
            .join(backfilld::dagcopy::COPY_SUBDIR)
            .join(backfilld::dagcopy::file_name(&made));
        let meta = wait_for("the DAG copy", Duration::from_secs(120), || {
            std::fs::metadata(&copy).ok()
        });
        let origin =
            std::fs::metadata(af.dags_folder().join("sales.py")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o777, 0o600 | (origin.mode() & 0o040));
        assert_eq!(meta.gid(), origin.gid());
    }
    // The API takes the same cookie.
    let cookie = session_cookie(&b);
    let listed = front.get_cookie("/backfills/api/v2/backfills", &cookie);
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains(&made), "{}", listed.body);
    // Cross-site request forgery through the API with that cookie: a form-encoded POST (what
    // another site's form can send) and a JSON POST from another origin are refused.
    let body =
        json!({"dag_id": "sales", "start": "2024-07-01", "end": "2024-07-01", "dry_run": true});
    let post = |headers: &[(&str, &str)], payload: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(format!("{origin}/backfills/api/v2/backfills"))
            .header("Cookie", &cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut r = req.send(payload).unwrap_or_else(|e| panic!("POST: {e}"));
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let form = post(
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "dag_id=sales",
    );
    assert_eq!(form.0, 415, "{}", form.1);
    let foreign = post(
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.invalid"),
        ],
        &body.to_string(),
    );
    assert_eq!(foreign.0, 403, "{}", foreign.1);
    let same = post(
        &[
            ("Content-Type", "application/json"),
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &body.to_string(),
    );
    assert_eq!(same.0, 200, "{}", same.1);
    // A forged or foreign cookie is nobody.
    let forged = front.get_cookie("/backfills/api/v2/backfills", "session=abc.def");
    assert_problem(&forged, 401);
    // An inactive user's session is refused.
    af.sql()
        .execute("UPDATE ab_user SET active = 0 WHERE username = 'bob'", [])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_problem(
        &front.get_cookie("/backfills/api/v2/backfills", &cookie),
        401,
    );
    af.sql()
        .execute("UPDATE ab_user SET active = 1 WHERE username = 'bob'", [])
        .unwrap_or_else(|e| panic!("{e}"));

    // Airflow now signs users in through an SSO proxy (REMOTE_USER); backfilld takes no
    // passwords at all and says why, but alice's Airflow session works.
    write_webserver_config(&af, "AUTH_REMOTE_USER");
    web.kill9();
    web = start_webserver(&af, web_port, &front, 2);
    daemon.kill9();
    daemon.restart(&[]);
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", bf_port)).ok()
    });
    let refused = front.get("/backfills/api/v2/backfills", Some(&basic("bob", "pw")));
    assert_problem(&refused, 401);
    assert!(
        refused.body.contains("AUTH_REMOTE_USER"),
        "{}",
        refused.body
    );
    b.cmd("DELETE", "/cookie", None);
    b.goto(&format!("{origin}/login/?sso_user=alice"));
    wait_for("Airflow's home page", Duration::from_secs(60), || {
        (!b.url().contains("/login")).then_some(())
    });
    b.goto(&format!("{app}/"));
    assert_eq!(who(&b), "alice", "{}", page_text(&b));
    let second = b.create(&app, "sales", "2024-06-01", "2024-06-01", "");
    assert!(
        second.starts_with("sales_backfill_"),
        "{second}: {}",
        b.url()
    );
    let status = daemon.ctl_json(&["status", &second, "--json"]);
    assert_eq!(status["submitted_by"], "alice", "{status}");
    drop(web);
    let shot: PathBuf = crate::support::repo_dir().join("target/it/http_sso_list.png");
    b.goto(&format!("{app}/"));
    b.screenshot(&shot);
}
