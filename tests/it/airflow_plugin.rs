//! Issue 21's "inside Airflow's UI", end to end in headless Chromium: backfilld's Airflow
//! plugin installed by `backfillctl airflow-plugin install` into a real Airflow's plugins
//! folder (again: nothing changes), `[backfilld] ui_url` naming backfilld's UI behind the same
//! nginx (`/backfills`). A user signs in on Airflow's own login page; Airflow's page shows
//! the "Backfills" entry and, on the DAG's page, the link (Airflow 2.11: a button; Airflow 3:
//! a tab showing backfilld's form in the page); it leads to backfilld's create form for that
//! DAG, prefilled, as that user with no second password; the backfill created there runs to
//! success. `uninstall` removes the file. On Airflow 2.11, 3.1 and 3.3.
//!
//! Needs `nginx`, `chromium` and `chromium-driver`; without them the test skips, except when
//! `CI=true`, where it fails.

use std::time::Duration;

use serde_json::json;

use crate::http_browser::Browser;
use crate::http_sso::{page_text, proxy_browser_tools, start_front, who, write_webserver_config};
use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(240);

#[test]
fn airflow2_plugin_links_to_a_prefilled_form_that_runs() {
    plugin_scenario(AirflowMajor::V2, "airflow_plugin_af2");
}

#[test]
fn airflow3_plugin_links_to_a_prefilled_form_that_runs() {
    plugin_scenario(AirflowMajor::V3, "airflow_plugin_af3");
}

/// The same on the newest Airflow 3 (3.3: the same `external_views`, its UI encodes the DAG
/// id into the tab's `href`).
#[test]
fn airflow33_plugin_links_to_a_prefilled_form_that_runs() {
    plugin_scenario(AirflowMajor::V3Newest, "airflow_plugin_af33");
}

/// The value of `js` (a script returning a string) in the page or frame shown now.
fn text(b: &Browser, js: &str) -> String {
    b.script(js, json!([]))
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn plugin_scenario(major: AirflowMajor, name: &str) {
    let Some((chromium, chromedriver, nginx)) = proxy_browser_tools() else {
        return;
    };
    let mut af = Airflow::sqlite(major, name);
    let v3 = af.major.is_v3();
    af.extra_env
        .push(("AIRFLOW__BACKFILLD__UI_URL".into(), "/backfills".into()));
    if !v3 {
        write_webserver_config(&af, "AUTH_DB");
    }
    let (front_port, bf_port) = (free_port(), free_port());
    if v3 {
        // Behind the proxy: Airflow 3's login redirects and UI links name the front.
        af.extra_env.push((
            "AIRFLOW__API__BASE_URL".into(),
            format!("http://127.0.0.1:{front_port}/"),
        ));
    }
    let daemon = Daemon::start_with(
        &af,
        &[("AIRFLOW__API_AUTH__JWT_SECRET", "backfilld-it-jwt-secret")],
        &format!(
            "\n[http]\nlisten = \"127.0.0.1:{bf_port}\"\nairflow_sessions = true\nbase_path = \"/backfills\"\n"
        ),
    );

    // The plugin goes in only by the command: into [core] plugins_folder, idempotently.
    let plugins = af.home.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap_or_else(|e| panic!("{e}"));
    let out = daemon.ctl(&["airflow-plugin", "install"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.starts_with("installed"),
        "{said}"
    );
    let installed = plugins.join("backfilld_plugin.py");
    let first = std::fs::metadata(&installed)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{e}"));
    let again = daemon.ctl(&["airflow-plugin", "install"]);
    let said = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(said.starts_with("already installed"), "{said}");
    let listed = af.cli_ok(&["plugins", "--output", "json"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("backfilld"), "{listed}");

    af.reserialize();
    af.ensure_user("bob", "User");
    if v3 {
        // Airflow 3's UI shows plugins' views only to users who may read Plugins (FAB:
        // Admin's by default); the README says to grant it to the roles that should see them.
        af.cli_ok(&[
            "roles",
            "add-perms",
            "User",
            "-r",
            "Plugins",
            "-a",
            "can_read",
        ]);
    }
    let (_front, _nginx, _web) = start_front(&mut af, &nginx, front_port, bf_port);
    af.wait_parsed("sales", BIG);
    let origin = format!("http://127.0.0.1:{front_port}");

    let profile = af.home.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("{e}"));
    let b = Browser::start(&chromium, &chromedriver, &profile);

    // bob signs in on Airflow's own login page (FAB's, on both majors).
    b.goto(&format!(
        "{origin}/{}",
        if v3 { "auth/login/" } else { "login/" }
    ));
    b.type_into("#username", "bob");
    b.type_into("#password", "pw");
    b.click("input[type=submit]");
    wait_for("Airflow's home page", Duration::from_secs(60), || {
        (!b.url().contains("/login")).then_some(())
    });

    // The DAG's page in Airflow: the menu entry and the link to backfilld's form.
    let started = std::time::Instant::now();
    let form = if v3 {
        b.goto(&format!("{origin}/dags/sales"));
        // One plugin entry is a top-level item of the navigation bar, opening backfilld's UI
        // (its element carries the `href`).
        let nav = "const n = document.querySelector('[data-testid=nav-sidebar]');\
                   const a = n && n.querySelector('[href=\"/backfills/\"]');\
                   return a ? a.textContent : '';";
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let menu = loop {
            let found = text(&b, nav);
            if !found.is_empty() {
                break found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no Backfills entry in Airflow's navigation: {}",
                text(
                    &b,
                    "const n = document.querySelector('[data-testid=nav-sidebar]'); return n ? n.outerHTML : document.body.outerHTML;"
                )
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(menu.contains("Backfills"), "{menu}");
        wait_for("the Backfill tab on the DAG page", BIG, || {
            let found = text(
                &b,
                "const a = document.querySelector('a[href$=\"/dags/sales/plugin/backfilld\"]');\
                 if (a) { a.click(); return 'clicked'; } return '';",
            );
            (!found.is_empty()).then_some(())
        });
        let src = wait_for("backfilld's form in the tab", BIG, || {
            let src = text(
                &b,
                "const f = document.querySelector('iframe'); return f ? f.getAttribute('src') : '';",
            );
            (!src.is_empty()).then_some(src)
        });
        assert!(
            b.url().ends_with("/dags/sales/plugin/backfilld"),
            "{}",
            b.url()
        );
        b.cmd("POST", "/frame", Some(&json!({ "id": 0 })));
        src
    } else {
        b.goto(&format!("{origin}/dags/sales/grid"));
        let menu = text(
            &b,
            "const a = [...document.querySelectorAll('nav a, .navbar a')].find(a => a.textContent.trim() === 'Backfills');\
             return a ? a.getAttribute('href') : '';",
        );
        assert_eq!(menu, "/backfills/", "{}", page_text(&b));
        let link = text(
            &b,
            "const a = document.getElementById('backfilld-dag-link'); return a ? a.getAttribute('href') : '';",
        );
        assert_eq!(link, "/backfills/new?dag_id=sales", "{}", page_text(&b));
        b.click("#backfilld-dag-link");
        link
    };
    assert_eq!(form, "/backfills/new?dag_id=sales");
    // backfilld's form, for that DAG, as bob: no second password.
    let dag = wait_for("backfilld's create form", Duration::from_secs(60), || {
        let v = text(
            &b,
            "const s = document.getElementById('dag_id'); return s ? s.value : '';",
        );
        (!v.is_empty()).then_some(v)
    });
    let here = text(&b, "return location.href;");
    assert_eq!(dag, "sales", "{here}: {}", page_text(&b));
    assert_eq!(who(&b), "bob", "{here}: {}", page_text(&b));
    eprintln!(
        "from Airflow's DAG page to the prefilled form: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    b.script(
        "document.getElementById('start').value = '2024-05-01';\
         document.getElementById('end').value = '2024-05-01';",
        json!([]),
    );
    b.click("#submit");
    let id = wait_for("the detail page", Duration::from_secs(60), || {
        let u = text(&b, "return location.href;");
        let id = u.rsplit('/').next().unwrap_or_default().to_owned();
        id.starts_with("sales_backfill_").then_some(id)
    });
    let status = daemon.ctl_json(&["status", &id, "--json"]);
    assert_eq!(status["submitted_by"], "bob", "{status}");
    let done = daemon.wait_finished(&id, BIG);
    assert_eq!(done["state"], "success", "{done}\n{}", af.logs_tail());
    if v3 {
        b.cmd("POST", "/frame", Some(&json!({ "id": null })));
    }
    b.screenshot(&crate::support::repo_dir().join(format!("target/it/{name}.png")));

    // Removed by the command too; the file was written once.
    assert_eq!(
        std::fs::metadata(&installed)
            .and_then(|m| m.modified())
            .ok(),
        Some(first)
    );
    let out = daemon.ctl(&["airflow-plugin", "uninstall"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!installed.exists());
}
