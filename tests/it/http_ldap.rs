//! LDAP sign-in, end to end in headless Chromium against a real OpenLDAP server: the test
//! runs its own `slapd` (an mdb database in a temporary directory, the `memberof` overlay, two
//! groups), and a real Airflow (2.11 with its webserver, and the newest 3.x with its
//! api-server and FAB's auth manager) signs users in with FAB's `AUTH_LDAP`: registration at
//! the first login, roles mapped from the LDAP groups (`editors` → User, `viewers` → Viewer)
//! and synced at every login. backfilld sits behind the same nginx (`/backfills/`,
//! `airflow_sessions = true`). Shown: a wrong LDAP password signs nobody in (and registers
//! nobody); an editor signs in on Airflow's own login page (FAB creates the `ab_user` row
//! then), reaches backfilld's UI with that session and creates a backfill that runs to
//! success; a viewer is told they cannot backfill the DAG and is refused when submitting
//! anyway (Airflow would not let them edit it); added to `editors` in LDAP, the same viewer
//! may backfill it after signing in again (FAB synced the roles). backfilld's own password
//! login stays off while Airflow uses `AUTH_LDAP`; signed out, a user asking for a backfill's
//! page in backfilld follows its login page's link to Airflow's sign-in page (at `[webserver]
//! base_url` / `[api] base_url`, the proxy's front) and, signed in there with LDAP, is back
//! on that page.
//!
//! Needs `slapd` and `ldap-utils` (OpenLDAP), `nginx`, `chromium` and `chromium-driver`;
//! without them the test skips, except when `CI=true`, where it fails. python-ldap comes from
//! the `pyldap` package directory of `scripts/airflow-venvs.sh`, on the PYTHONPATH of this
//! test's Airflow processes only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::http_api::{assert_problem, basic};
use crate::http_browser::{find_program, Browser};
use crate::http_sso::{page_text, proxy_browser_tools, start_front, who, write_webserver_config};
use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon, Proc};

const BIG: Duration = Duration::from_secs(300);
/// The directory's root entry.
const SUFFIX: &str = "dc=example,dc=org";
/// The directory's administrator (also the account FAB searches with).
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "ldap-admin-pw";
const EDITORS: &str = "cn=editors,ou=groups,dc=example,dc=org";
const VIEWERS: &str = "cn=viewers,ou=groups,dc=example,dc=org";

#[test]
fn airflow2_ldap_sign_in_carries_over_to_backfilld() {
    ldap_scenario(AirflowMajor::V2, "http_ldap_af2");
}

#[test]
fn airflow3_ldap_sign_in_carries_over_to_backfilld() {
    ldap_scenario(AirflowMajor::V3Newest, "http_ldap_af33");
}

/// OpenLDAP's programs and files as this distribution lays them out.
struct LdapTools {
    slapd: PathBuf,
    ldapmodify: PathBuf,
    /// Where `core.schema` and the others are.
    schema: PathBuf,
    /// Where `back_mdb` and `memberof` are, when they are modules (not built in).
    modules: Option<PathBuf>,
}

/// slapd and ldapmodify, the schemas and the modules; `None` (the test skips) when missing,
/// which fails under `CI=true`.
fn ldap_tools() -> Option<LdapTools> {
    let slapd = find_program(&["slapd", "/usr/sbin/slapd", "/usr/libexec/slapd"]);
    let ldapmodify = find_program(&["ldapmodify"]);
    let schema = ["/etc/ldap/schema", "/etc/openldap/schema"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("core.schema").is_file());
    let modules = [
        "/usr/lib/ldap",
        "/usr/lib64/openldap",
        "/usr/lib/openldap",
        "/usr/lib/x86_64-linux-gnu/ldap",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|d| d.join("back_mdb.so").exists() || d.join("back_mdb.la").exists());
    let found = slapd
        .zip(ldapmodify)
        .zip(schema)
        .map(|((slapd, ldapmodify), schema)| LdapTools {
            slapd,
            ldapmodify,
            schema,
            modules,
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but OpenLDAP (slapd, ldap-utils) is not installed"
        );
        eprintln!("skipped: OpenLDAP (slapd, ldap-utils) is not installed");
    }
    found
}

/// python-ldap as installed by `scripts/airflow-venvs.sh` (`pip install --target`).
fn python_ldap_dir() -> PathBuf {
    crate::support::package_dir("pyldap", "ldap/__init__.py", "python-ldap")
}

/// The test's own slapd on a free loopback port, its config, database and log in `dir`;
/// killed when dropped.
struct Slapd {
    _proc: Proc,
    url: String,
    ldapmodify: PathBuf,
}

impl Slapd {
    fn start(tools: &LdapTools, dir: &Path) -> Slapd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("db")).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let schema = tools.schema.display();
        let modules = match &tools.modules {
            Some(m) => format!(
                "modulepath {}\nmoduleload back_mdb\nmoduleload memberof\n",
                m.display()
            ),
            None => String::new(),
        };
        let d = dir.display();
        let conf = dir.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include {schema}/core.schema\ninclude {schema}/cosine.schema\n\
                 include {schema}/inetorgperson.schema\ninclude {schema}/nis.schema\n\
                 pidfile {d}/slapd.pid\n{modules}\
                 database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\n\
                 directory {d}/db\nmaxsize 16777216\n\
                 # memberOf on each person: FAB maps the groups it names to roles\n\
                 overlay memberof\n\
                 access to attrs=userPassword by anonymous auth by self read by * none\n\
                 access to * by * read\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(&tools.slapd);
        cmd.args(["-d", "0", "-h", &format!("ldap://127.0.0.1:{port}/"), "-f"])
            .arg(&conf);
        let mut proc = Proc::spawn("slapd", cmd, &dir.join("slapd.log"));
        wait_for("slapd", Duration::from_secs(30), || {
            assert!(
                proc.alive(),
                "slapd exited: {}",
                std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default()
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let slapd = Slapd {
            _proc: proc,
            url: format!("ldap://127.0.0.1:{port}"),
            ldapmodify: tools.ldapmodify.clone(),
        };
        let person = |uid: &str, first: &str, last: &str, pw: &str| {
            format!(
                "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
                 cn: {first} {last}\nsn: {last}\ngivenName: {first}\nmail: {uid}@example.org\n\
                 userPassword: {pw}\n\n"
            )
        };
        let group = |dn: &str, cn: &str, member: &str| {
            format!(
                "dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\nmember: uid={member},ou=people,{SUFFIX}\n\n"
            )
        };
        slapd.modify(
            &[
                format!("dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"),
                format!("dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"),
                format!("dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"),
                person("carol", "Carol", "Editor", "carol-ldap-pw"),
                person("dave", "Dave", "Viewer", "dave-ldap-pw"),
                group(EDITORS, "editors", "carol"),
                group(VIEWERS, "viewers", "dave"),
            ]
            .concat(),
            true,
        );
        slapd
    }

    /// `ldapmodify` (`-a`: every record adds an entry) as the directory's administrator.
    fn modify(&self, ldif: &str, add: bool) {
        use std::io::Write as _;
        let mut cmd = Command::new(&self.ldapmodify);
        cmd.args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PW]);
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ldapmodify: {e}"));
        child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("ldapmodify's stdin"))
            .write_all(ldif.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("ldapmodify: {e}"));
        assert!(
            out.status.success(),
            "ldapmodify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Airflow's `webserver_config.py` for FAB's LDAP sign-in against `url`.
fn write_ldap_config(af: &Airflow, url: &str) {
    write_webserver_config(af, "AUTH_LDAP");
    let path = af.home.join("webserver_config.py");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    text.push_str(&format!(
        "AUTH_LDAP_SERVER = \"{url}\"\n\
         AUTH_LDAP_SEARCH = \"ou=people,{SUFFIX}\"\n\
         AUTH_LDAP_UID_FIELD = \"uid\"\n\
         AUTH_LDAP_BIND_USER = \"{ROOT_DN}\"\n\
         AUTH_LDAP_BIND_PASSWORD = \"{ROOT_PW}\"\n\
         AUTH_USER_REGISTRATION = True\n\
         AUTH_USER_REGISTRATION_ROLE = \"Public\"\n\
         AUTH_ROLES_MAPPING = {{\"{EDITORS}\": [\"User\"], \"{VIEWERS}\": [\"Viewer\"]}}\n\
         AUTH_ROLES_SYNC_AT_LOGIN = True\n"
    ));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// Sign out of everything: delete the browser's cookies from a page that runs no script
/// (backfilld's stylesheet), so no request still running from Airflow's pages sets a session
/// cookie again after the deletion.
fn sign_out(b: &Browser, origin: &str) {
    b.goto(&format!("{origin}/backfills/static/style.css"));
    b.cmd("DELETE", "/cookie", None);
}

/// Sign in on Airflow's own login page (FAB's, on both majors) with fresh cookies; whether
/// Airflow let the browser past its login page.
fn airflow_sign_in(b: &Browser, origin: &str, v3: bool, user: &str, password: &str) -> bool {
    sign_out(b, origin);
    b.goto(&format!(
        "{origin}/{}",
        if v3 { "auth/login/" } else { "login/" }
    ));
    b.type_into("#username", user);
    b.type_into("#password", password);
    b.click("input[type=submit]");
    // A failed login comes back to the login page with FAB's message; a good one leaves it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let url = b.url();
        let text = page_text(b);
        if !url.contains("/login") && !text.is_empty() {
            return true;
        }
        if url.contains("/login") && text.contains("Invalid login") {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "signing in as {user}: still at {url}: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Signed out, the user asks for backfilld's page `page` (under `app`): backfilld's login
/// page says it takes no passwords and links to Airflow's sign-in page, coming back to that
/// page; signing in there with LDAP lands on it, signed in as `user`.
fn sign_in_through_backfilld(
    b: &Browser,
    origin: &str,
    v3: bool,
    (app, page): (&str, &str),
    (user, password): (&str, &str),
) {
    sign_out(b, origin);
    let wanted = format!("{app}/{page}");
    b.goto(&wanted);
    assert!(
        b.url().starts_with(&format!("{app}/login")),
        "{}: {}",
        b.url(),
        page_text(b)
    );
    let text = page_text(b);
    assert!(
        text.contains("accepts no passwords") && text.contains("AUTH_LDAP"),
        "{text}"
    );
    let href =
        b.text("const a = document.getElementById('airflow-sign-in'); return a ? a.href : '';");
    let path = wanted
        .strip_prefix(origin)
        .unwrap_or_else(|| panic!("{wanted}"));
    let login = if v3 { "auth/login/" } else { "login/" };
    assert_eq!(
        href,
        format!("{origin}/{login}?next={}", path.replace('/', "%2F")),
        "{text}"
    );
    b.click("#airflow-sign-in");
    wait_for("Airflow's sign-in page", Duration::from_secs(60), || {
        b.text("return document.getElementById('username') ? 'y' : '';")
            .eq("y")
            .then_some(())
    });
    assert!(b.url().contains(&format!("/{login}?next=")), "{}", b.url());
    b.type_into("#username", user);
    b.type_into("#password", password);
    b.click("input[type=submit]");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(b.url() == wanted && who(b) == user) {
        assert!(
            std::time::Instant::now() < deadline,
            "signed in on Airflow, {user} is not back on {wanted} but at {}: {}",
            b.url(),
            page_text(b)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The roles FAB gave `user` (sorted), or `None` when FAB has no such user.
/// `user` signs in on Airflow's page with their LDAP password (`<user>-ldap-pw`), and FAB
/// holds exactly `roles` for them after it.
fn signs_in_with_roles(b: &Browser, af: &Airflow, origin: &str, user: &str, roles: &[&str]) {
    assert!(
        airflow_sign_in(
            b,
            origin,
            af.major.is_v3(),
            user,
            &format!("{user}-ldap-pw")
        ),
        "{user}'s LDAP sign-in failed\n{}",
        af.logs_tail()
    );
    assert_eq!(
        fab_roles(af, user),
        Some(roles.iter().map(|r| (*r).to_owned()).collect())
    );
}

fn fab_roles(af: &Airflow, user: &str) -> Option<Vec<String>> {
    if af.query_i64(&format!(
        "SELECT COUNT(*) FROM ab_user WHERE username = '{user}'"
    )) == 0
    {
        return None;
    }
    let mut roles: Vec<String> = af
        .query(&format!(
            "SELECT r.name FROM ab_user u JOIN ab_user_role ur ON ur.user_id = u.id \
             JOIN ab_role r ON r.id = ur.role_id WHERE u.username = '{user}'"
        ))
        .iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    roles.sort();
    Some(roles)
}

/// The DAGs backfilld's create form offers (those the user may backfill) and the warning
/// above it, for `new?dag_id=<dag>`.
fn create_form(b: &Browser, app: &str, dag: &str) -> (Vec<String>, String) {
    b.goto(&format!("{app}/new?dag_id={dag}"));
    let offered = b.script(
        "return [...document.querySelectorAll('#dag_id option')].map(o => o.value);",
        json!([]),
    );
    let offered = crate::support::json_strings(&offered);
    let warning =
        b.text("const w = document.getElementById('unknown-dag'); return w ? w.textContent : '';");
    (offered, warning)
}

fn ldap_scenario(major: AirflowMajor, name: &str) {
    let Some((chromium, chromedriver, nginx)) = proxy_browser_tools() else {
        return;
    };
    let Some(tools) = ldap_tools() else {
        return;
    };
    let pyldap = python_ldap_dir();
    let mut af = Airflow::sqlite(major, name);
    let v3 = af.major.is_v3();
    let slapd = Slapd::start(&tools, &af.home.join("ldap"));
    // python-ldap for FAB, on this test's Airflow processes only (the venvs stay as built).
    af.extra_env
        .push(("PYTHONPATH".into(), pyldap.display().to_string()));
    write_ldap_config(&af, &slapd.url);
    let (front_port, bf_port) = (free_port(), free_port());
    // Where users reach Airflow: the proxy's front, for Airflow and backfilld alike (Airflow
    // 3's login redirects name it; backfilld's login page links to Airflow's sign-in page
    // there). Airflow 2 refuses a trailing slash.
    let base_url = if v3 {
        (
            "AIRFLOW__API__BASE_URL",
            format!("http://127.0.0.1:{front_port}/"),
        )
    } else {
        (
            "AIRFLOW__WEBSERVER__BASE_URL",
            format!("http://127.0.0.1:{front_port}"),
        )
    };
    af.extra_env
        .push((base_url.0.to_owned(), base_url.1.clone()));
    // Viewer gets backfilld's own permissions too: what refuses the viewer is then Airflow's
    // DAG permissions alone (Viewer may read DAGs, not edit them).
    let daemon = Daemon::start_with(
        &af,
        &[
            ("AIRFLOW__API_AUTH__JWT_SECRET", "backfilld-it-jwt-secret"),
            (base_url.0, &base_url.1),
        ],
        &format!(
            "\n[http]\nlisten = \"127.0.0.1:{bf_port}\"\nairflow_sessions = true\nbase_path = \"/backfills\"\n\
             \n[authz]\npermitted_roles = [\"User\", \"Op\", \"Viewer\"]\n"
        ),
    );
    af.reserialize();
    let (front, _nginx, _web) = start_front(&mut af, &nginx, front_port, bf_port);
    af.wait_parsed("sales", BIG);
    let origin = format!("http://127.0.0.1:{front_port}");
    let app = format!("{origin}/backfills");

    // backfilld takes no passwords while Airflow signs users in through LDAP, and says why.
    let refused = front.get(
        "/backfills/api/v2/backfills",
        Some(&basic("carol", "carol-ldap-pw")),
    );
    assert_problem(&refused, 401);
    assert!(refused.body.contains("AUTH_LDAP"), "{}", refused.body);

    let profile = af.home.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::start(&chromium, &chromedriver, &profile);

    // A wrong LDAP password: Airflow's login page again, no user registered, and backfilld
    // sends the browser to its login page.
    assert!(
        !airflow_sign_in(&b, &origin, v3, "carol", "not-carols-pw"),
        "a wrong LDAP password signed carol in"
    );
    assert_eq!(fab_roles(&af, "carol"), None);
    b.goto(&format!("{app}/"));
    assert!(
        b.url().starts_with(&format!("{app}/login")),
        "{}: {}",
        b.url(),
        page_text(&b)
    );

    // carol (LDAP group editors) signs in on Airflow's page: FAB registers her with the
    // mapped role, and backfilld's UI knows her with no second password.
    signs_in_with_roles(&b, &af, &origin, "carol", &["Public", "User"]);
    b.goto(&format!("{app}/"));
    assert_eq!(who(&b), "carol", "{}: {}", b.url(), page_text(&b));
    let made = b.create(&app, "sales", "2024-05-01", "2024-05-01", "");
    let status = daemon.ctl_json(&["status", &made, "--json"]);
    assert_eq!(status["submitted_by"], "carol", "{status}");

    // dave (LDAP group viewers) may read DAGs in Airflow, not edit them: backfilld's form
    // does not offer the DAG and says so, and a submission anyway is refused with the reason.
    signs_in_with_roles(&b, &af, &origin, "dave", &["Public", "Viewer"]);
    let (offered, warning) = create_form(&b, &app, "sales");
    assert_eq!(who(&b), "dave", "{}", page_text(&b));
    assert!(!offered.contains(&"sales".to_owned()), "{offered:?}");
    assert!(
        warning.contains("You cannot backfill the DAG sales"),
        "{warning:?}: {}",
        page_text(&b)
    );
    b.script(
        "const s = document.getElementById('dag_id'); const o = document.createElement('option');\
         o.value = 'sales'; o.textContent = 'sales'; s.appendChild(o); s.value = 'sales';\
         document.getElementById('start').value = '2024-05-02';\
         document.getElementById('end').value = '2024-05-02';",
        json!([]),
    );
    b.click("#submit");
    let reason = wait_for("the refusal", Duration::from_secs(60), || {
        let r = b.text(
            "const e = document.querySelector('#create p.error[data-reason], p.error[data-reason]');\
             return e ? e.dataset.reason + ': ' + e.textContent : '';",
        );
        (!r.is_empty()).then_some(r)
    });
    b.screenshot(&crate::support::repo_dir().join(format!("target/it/{name}_refused.png")));
    assert!(
        reason.starts_with("missing_dag_edit: ")
            && reason.contains("You are not allowed to do that.")
            && reason.contains("may not edit DAG \"sales\""),
        "{reason}"
    );

    // Added to editors in LDAP, dave may backfill the DAG once he signs in again: FAB synced
    // his roles at that login, and backfilld reads them from Airflow's tables.
    slapd.modify(
        &format!(
            "dn: {EDITORS}\nchangetype: modify\nadd: member\nmember: uid=dave,ou=people,{SUFFIX}\n"
        ),
        false,
    );
    signs_in_with_roles(&b, &af, &origin, "dave", &["Public", "User", "Viewer"]);
    let (offered, warning) = create_form(&b, &app, "sales");
    assert!(offered.contains(&"sales".to_owned()), "{offered:?}");
    assert_eq!(warning, "", "{}", page_text(&b));

    // carol's backfill ran.
    let done = daemon.wait_finished(&made, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", af.logs_tail());

    // Signed out, carol opens her backfill's page in backfilld: its login page takes her to
    // Airflow's sign-in page, and signing in there with LDAP brings her back to that page.
    sign_in_through_backfilld(
        &b,
        &origin,
        v3,
        (&app, &format!("backfills/{made}")),
        ("carol", "carol-ldap-pw"),
    );
    b.goto(&format!("{app}/backfills/{made}"));
    b.screenshot(&crate::support::repo_dir().join(format!("target/it/{name}.png")));
}
