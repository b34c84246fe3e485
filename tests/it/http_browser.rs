//! Issues 8 and 22's browser acceptance: Debian's headless Chromium, driven through
//! chromedriver's W3C WebDriver HTTP API, logs in to the web UI, previews and creates a
//! task-subset backfill through the form and watches its detail page reach success without a
//! reload (live update) on real Airflow 2.11 with SQLite and a scheduler (only the chosen
//! task ran), follows the links into Airflow, cancels another, and keeps screenshots of the
//! pages at desktop (1280 px) and phone (400 px) widths under `target/it/http_browser/`, where
//! no page may scroll sideways.
//!
//! Without `chromium` and `chromium-driver` the test skips, except when `CI=true`, where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{free_port, repo_dir, wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(420);

/// The first of `names` found on `PATH` or at an absolute path.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        let direct = PathBuf::from(n);
        if direct.is_absolute() {
            return direct.is_file().then_some(direct);
        }
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// A chromedriver process and one WebDriver session on it; both end on drop.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    session: String,
    base: String,
}

impl Browser {
    pub fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let mut b = Browser {
            driver,
            agent,
            session: String::new(),
            base,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let r = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self
                .agent
                .post(&url)
                .send_json(b.cloned().unwrap_or(json!({}))),
        };
        let mut r = r.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON ({e}): {text}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    pub fn cmd(&self, method: &str, rest: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{rest}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    pub fn script(&self, js: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": js, "args": args})),
        )
    }

    /// Fill the create form (set as values: a date input's typing order depends on the
    /// locale) and submit it; the new backfill's id from the detail page URL.
    pub fn create(&self, app: &str, dag: &str, start: &str, end: &str, params: &str) -> String {
        self.goto(&format!("{app}/new"));
        self.script(
            "document.getElementById('dag_id').value = arguments[0];\
             document.getElementById('start').value = arguments[1];\
             document.getElementById('end').value = arguments[2];\
             document.getElementById('params').value = arguments[3];",
            json!([dag, start, end, params]),
        );
        self.click("#submit");
        // The detail page's URL ends in the new id (behind a proxy, `/backfills/new` itself
        // may be under a `/backfills/` prefix).
        let backfill = format!("{dag}_backfill_");
        wait_for("the detail page", Duration::from_secs(60), || {
            let u = self.url();
            let id = u.rsplit('/').next().unwrap_or_default().to_owned();
            id.starts_with(&backfill).then_some(id)
        })
    }

    /// The state badge of a backfill's detail page, freshly loaded.
    pub fn state_of(&self, app: &str, id: &str) -> String {
        self.goto(&format!("{app}/backfills/{id}"));
        self.shown_state()
    }

    /// The state badge of the page shown now (no reload).
    pub fn shown_state(&self) -> String {
        self.script(
            "const s = document.querySelector('span.state'); return s ? s.dataset.state : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A script's answer as text.
    pub fn text(&self, js: &str) -> String {
        self.script(js, json!([]))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Resize the window (its outer size; the page is about as wide).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    pub fn screenshot(&self, to: &Path) {
        use base64::Engine as _;
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot is not base64: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn web_ui_in_headless_chromium_on_airflow2_sqlite() {
    let chromium = find_program(&["chromium", "chromium-browser"]);
    let chromedriver = find_program(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but chromium and chromium-driver are not installed"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let mut af = Airflow::sqlite(AirflowMajor::V2, "http_browser_af2");
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    af.wait_parsed("lifecycle_demo", BIG);
    let port = free_port();
    let daemon = Daemon::start_with(
        &af,
        &[],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    af.ensure_user("alice", "User");
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let app = format!("http://127.0.0.1:{port}");
    let profile = af.home.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::start(&chromium, &chromedriver, &profile);

    // Log in: the root page sends an anonymous browser to the login form.
    b.goto(&format!("{app}/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.type_into("#username", "alice");
    b.type_into("#password", "pw");
    b.click("#login");
    wait_for("the list page", Duration::from_secs(30), || {
        (b.url() == format!("{app}/")).then_some(())
    });

    // The create form: a task pattern shows its matches as one types; the preview lists the
    // dates and the tasks before anything is created.
    b.goto(&format!("{app}/new"));
    b.script(
        "document.getElementById('dag_id').value = 'sales';\
         document.getElementById('start').value = '2024-05-01';\
         document.getElementById('end').value = '2024-05-02';",
        json!([]),
    );
    b.type_into("#tasks", "extr");
    wait_for("the task matches", Duration::from_secs(20), || {
        let m = b.text("return document.getElementById('task-matches').textContent;");
        (m == "Matches: extract").then_some(())
    });
    b.click("#preview");
    let preview = wait_for("the preview", Duration::from_secs(60), || {
        let t = b.text(
            "const p = document.getElementById('preview-dates'); return p ? p.innerText : '';",
        );
        (!t.is_empty()).then_some(t)
    });
    assert!(
        preview.contains("2 dates, 2024-05-01 to 2024-05-02") && preview.contains("Tasks: extract"),
        "{preview}"
    );
    assert_eq!(
        b.text("return document.getElementById('tasks').value;"),
        "extr",
        "the preview keeps the form's values"
    );
    // The browser stops an end before the start; the server refuses one anyway, in a
    // sentence, with the field marked.
    let blocked = b.script(
        "const e = document.getElementById('end'); e.value = '2024-04-01';\
         e.dispatchEvent(new Event('input')); return e.checkValidity();",
        json!([]),
    );
    assert_eq!(
        blocked,
        json!(false),
        "the end before the start is not flagged"
    );
    b.script(
        "document.getElementById('create').noValidate = true;",
        json!([]),
    );
    b.click("#submit");
    let refused = wait_for("the refusal", Duration::from_secs(60), || {
        let t = b.text("const e = document.querySelector('p.error'); return e ? e.innerText : '';");
        (!t.is_empty()).then_some(t)
    });
    assert!(
        refused.starts_with("The end date is before the start date.") && !refused.contains("400"),
        "{refused}"
    );
    assert_eq!(
        b.text("return document.getElementById('end').getAttribute('aria-invalid');"),
        "true"
    );
    // Created with the subset, the detail page turns to success by itself (no reload: a
    // marker set on the loaded page survives).
    b.script(
        "const e = document.getElementById('end'); e.value = '2024-05-02';\
         e.dispatchEvent(new Event('input'));",
        json!([]),
    );
    b.click("#submit");
    let ok = wait_for("the detail page", Duration::from_secs(60), || {
        let u = b.url();
        u.contains("/backfills/").then_some(u)
    })
    .rsplit('/')
    .next()
    .unwrap_or_default()
    .to_owned();
    assert!(ok.starts_with("sales_backfill_"), "{ok}");
    b.script("window.backfilldMarker = 1;", json!([]));
    let state = wait_for(&format!("{ok} to finish on the page"), BIG, || {
        let s = b.shown_state();
        matches!(s.as_str(), "success" | "failed" | "cancelled").then_some(s)
    });
    assert_eq!(state, "success", "{}", daemon.log_text());
    assert_eq!(
        b.script("return window.backfilldMarker === 1;", json!([])),
        json!(true),
        "the page was reloaded"
    );
    let ran: Vec<String> = af
        .query(&format!(
            "SELECT DISTINCT task_id FROM task_instance WHERE dag_id = '{ok}' ORDER BY task_id"
        ))
        .into_iter()
        .filter_map(|r| r.first().and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    assert_eq!(ran, ["extract"], "only the chosen task ran");
    // Links into Airflow 2's UI: the DAG's grid and each date's run.
    let dag_link =
        b.text("const a = document.getElementById('airflow-dag'); return a ? a.href : '';");
    assert!(dag_link.ends_with("/dags/sales/grid"), "{dag_link}");
    let run_links = b.script(
        "return Array.from(document.querySelectorAll('a.run')).map(a => a.href);",
        json!([]),
    );
    assert!(
        run_links.as_array().is_some_and(|l| l.len() == 2
            && l.iter().all(|u| u
                .as_str()
                .is_some_and(|u| u.contains(&format!("/dags/{ok}/grid?dag_run_id="))))),
        "{run_links}"
    );
    let shots = repo_dir().join("target/it/http_browser");
    std::fs::create_dir_all(&shots).unwrap_or_else(|e| panic!("{e}"));
    b.screenshot(&shots.join("detail-1280.png"));

    // Create another (slow) one and cancel it with its button.
    let slow = b.create(
        &app,
        "lifecycle_demo",
        "2024-06-01",
        "2024-06-03",
        "{\"sleep\": 20}",
    );
    assert!(slow.starts_with("lifecycle_demo_backfill_"), "{slow}");
    b.click("#action-cancel");
    // Leave the browser alone until the form's POST is answered (navigating away at once
    // would abort it): watch the backfill through the daemon, then read the page.
    wait_for(&format!("{slow} to stop"), BIG, || {
        let s = daemon.ctl_json(&["status", &slow, "--json"]);
        s["state"]
            .as_str()
            .filter(|st| matches!(*st, "success" | "failed" | "cancelled"))
            .map(str::to_owned)
    });
    let state = b.state_of(&app, &slow);
    assert!(
        state == "cancelled" || state == "failed",
        "{slow}: {state}\n{}",
        daemon.log_text()
    );

    // The list page shows both; screenshots of the pages at desktop and phone widths are
    // kept, and no page scrolls sideways on a phone.
    b.goto(&format!("{app}/"));
    let text = b.text("return document.body.innerText;");
    assert!(text.contains(&ok) && text.contains(&slow), "{text}");
    b.screenshot(&shots.join("list-1280.png"));
    b.goto(&format!("{app}/new"));
    b.screenshot(&shots.join("new-1280.png"));
    b.resize(400, 900);
    for (name, path) in [
        ("list", "/".to_owned()),
        ("detail", format!("/backfills/{ok}")),
        ("new", "/new".to_owned()),
    ] {
        b.goto(&format!("{app}{path}"));
        let inner = b.script("return window.innerWidth;", json!([]));
        let wide = b.script("return document.documentElement.scrollWidth;", json!([]));
        let culprits = b.script(
            "return Array.from(document.querySelectorAll('body *'))\
               .filter(e => e.getBoundingClientRect().right > 400 && !e.closest('.scroll'))\
               .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8);",
            json!([]),
        );
        assert!(
            wide.as_u64().is_some_and(|w| w <= 400),
            "{name} at 400 px (inner {inner}) is {wide} px wide: {culprits}"
        );
        b.screenshot(&shots.join(format!("{name}-400.png")));
    }
    for name in [
        "list-1280",
        "detail-1280",
        "new-1280",
        "list-400",
        "detail-400",
        "new-400",
    ] {
        let shot = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "{}",
            shot.display()
        );
    }
}
