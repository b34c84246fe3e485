//! Issue 8's API acceptance on real Airflow 2.11 with SQLite and a real scheduler: the seed's
//! `/api/v1/plugins/backfills` contract (fields, statuses, error shapes), logins of users made
//! by `airflow users create` (wrong password, inactive user and lock-out refused, failures
//! audited), a backfill created through the API running to success, `/api/v2` reads, filters
//! and life-cycle actions (pause, resume, retry of the failed dates), and the web UI's login,
//! CSRF and create form; schemathesis fuzzing `/api/v2/openapi.json` without a server error;
//! and on Airflow 3.1 and 3.3, a token from its api-server's `/auth/token` accepted for reads
//! and a create (an altered one refused; on 3.3 one revoked at sign-out refused too).

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(420);

/// A small HTTP client that reports every status instead of failing on it.
pub struct Client {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    agent: ureq::Agent,
}

/// A response.
pub struct Reply {
    /// The status.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl Client {
    /// A request.
    pub fn new(port: u16) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            base: format!("http://127.0.0.1:{port}"),
            agent,
        }
    }

    fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut r = r.unwrap_or_else(|e| panic!("HTTP request failed: {e}"));
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Reply {
            status: r.status().as_u16(),
            headers,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    /// A request.
    pub fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        Client::finish(req.call())
    }

    /// A request.
    pub fn get_cookie(&self, path: &str, cookie: &str) -> Reply {
        Client::finish(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Cookie", cookie)
                .call(),
        )
    }

    /// A request.
    pub fn post_json(&self, path: &str, auth: &str, body: &Value) -> Reply {
        Client::finish(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", auth)
                .send_json(body),
        )
    }

    /// A request.
    pub fn post_form(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        Client::finish(req.send_form(form.iter().copied()))
    }
}

/// Assert Airflow's problem document with `status`.
pub fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let p = r.json();
    assert_eq!(p["status"], status, "{p}");
    assert!(
        p["title"].is_string() && p["detail"].is_string() && p["type"].is_string(),
        "{p}"
    );
}

#[test]
fn seed_api_and_logins_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "http_api_af2");
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    af.wait_parsed("lifecycle_demo", BIG);
    let port = free_port();
    let daemon = Daemon::start_with(
        &af,
        &[],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_failed_logins = 5\n"),
    );
    af.ensure_user("alice", "User");
    af.ensure_user("vera", "Viewer");
    af.ensure_user("ina", "User");
    af.sql()
        .execute("UPDATE ab_user SET active = 0 WHERE username = 'ina'", [])
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Client::new(port);
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let alice = basic("alice", "pw");

    // The OpenAPI document needs no login.
    let doc = c.get("/api/v2/openapi.json", None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.0.3");

    // Bad credentials: 401 in Airflow's problem shape, with no Basic challenge (a browser
    // would cache what its prompt got typed in).
    let none = c.get("/api/v1/plugins/backfills", None);
    assert_problem(&none, 401);
    assert!(none.header("www-authenticate").is_none());
    assert_problem(
        &c.get("/api/v1/plugins/backfills", Some(&basic("alice", "wrong"))),
        401,
    );
    assert_problem(
        &c.get("/api/v1/plugins/backfills", Some(&basic("ina", "pw"))),
        401,
    );
    assert_problem(
        &c.get("/api/v1/plugins/backfills", Some(&basic("nobody", "pw"))),
        401,
    );

    // A user made by `airflow users create` logs in.
    let list = c.get("/api/v1/plugins/backfills", Some(&alice));
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.json(), json!([]));

    // No permission: Viewer has no Backfills permissions (403 to read and to create).
    let vera = basic("vera", "pw");
    assert_problem(&c.get("/api/v1/plugins/backfills", Some(&vera)), 403);
    let body = json!({
        "dag_id": "sales", "start_date": "2024-05-01", "end_date": "2024-05-02T00:00:00+00:00",
        "description": "via the seed API", "dag_params": {"region": "us"}, "max_active_runs": 2,
        "delete_duration_days": 3, "ignore_overlapping_backfills": false,
    });
    assert_problem(&c.post_json("/api/v1/plugins/backfills", &vera, &body), 403);

    // Unknown DAG: 400 (for a user allowed to edit every DAG); missing field: 400.
    let unknown = c.post_json(
        "/api/v1/plugins/backfills",
        &alice,
        &json!({"dag_id": "no_such_dag", "start_date": "2024-05-01", "end_date": "2024-05-02", "delete_duration_days": 1}),
    );
    assert_problem(&unknown, 400);
    assert_eq!(
        unknown.json()["reason_code"],
        "unknown_dag",
        "{}",
        unknown.body
    );
    assert_problem(
        &c.post_json(
            "/api/v1/plugins/backfills",
            &alice,
            &json!({"dag_id": "sales"}),
        ),
        400,
    );

    // Create: the seed's response fields.
    let created = c.post_json("/api/v1/plugins/backfills", &alice, &body);
    assert_eq!(
        created.status,
        200,
        "{}\n{}",
        created.body,
        daemon.log_text()
    );
    let b = created.json();
    let id = b["backfill_dag_id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("sales_backfill_"), "{b}");
    assert_eq!(b["dag_id"], "sales");
    assert_eq!(b["submitted_by"], "alice");
    assert_eq!(b["description"], "via the seed API");
    assert_eq!(b["max_active_runs"], 2);
    assert_eq!(b["start_date"], "2024-05-01T00:00:00+00:00");
    assert_eq!(b["end_date"], "2024-05-02T00:00:00+00:00");
    assert_eq!(
        b["logical_dates"],
        json!(["2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+00:00"])
    );
    assert_eq!(b["dag_params"], json!({"region": "us"}));
    assert_eq!(b["deleted"], "");
    for key in ["state", "submitted_at", "updated_at"] {
        assert!(b[key].is_string(), "{key}: {b}");
    }
    // The same pipeline as a spool file: an accepted request record and an audit row.
    assert_eq!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_request WHERE backfill_id = ?1 AND outcome = 'accepted' AND airflow_user = 'alice' AND file_name LIKE 'http-%'",
            &[&id],
        ),
        1
    );
    assert!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'create' AND airflow_user = 'alice' AND allowed = 1",
            &[],
        ) >= 1
    );
    // Overlap: 400, naming the active backfill.
    let overlap = c.post_json("/api/v1/plugins/backfills", &alice, &body);
    assert_problem(&overlap, 400);
    assert!(
        overlap.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&id)),
        "{}",
        overlap.body
    );

    // Get and list; not found is 404.
    let got = c.get(&format!("/api/v1/plugins/backfills/{id}"), Some(&alice));
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["backfill_dag_id"], id.as_str());
    assert_problem(
        &c.get(
            "/api/v1/plugins/backfills/sales_backfill_19990101_000000",
            Some(&alice),
        ),
        404,
    );
    let listed = c
        .get(
            "/api/v1/plugins/backfills?dag_id=sales&start_date=2024-05-02&end_date=2024-05-03",
            Some(&alice),
        )
        .json();
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["backfill_dag_id"] == id.as_str())),
        "{listed}"
    );
    let outside = c
        .get(
            "/api/v1/plugins/backfills?start_date=2020-01-01&end_date=2020-01-02",
            Some(&alice),
        )
        .json();
    assert_eq!(outside, json!([]));
    let other_dag = c
        .get("/api/v1/plugins/backfills?dag_id=other", Some(&alice))
        .json();
    assert_eq!(other_dag, json!([]));

    // It runs to success; v2 shows per-date states.
    let done = wait_for(&format!("{id} to succeed"), BIG, || {
        let s = c
            .get(&format!("/api/v1/plugins/backfills/{id}"), Some(&alice))
            .json();
        matches!(
            s["state"].as_str(),
            Some("success" | "failed" | "cancelled")
        )
        .then_some(s)
    });
    assert_eq!(done["state"], "success", "{done}\n{}", daemon.log_text());
    assert!(
        done["run_start_date"].is_string() && done["run_end_date"].is_string(),
        "{done}"
    );
    let v2 = c.get(&format!("/api/v2/backfills/{id}"), Some(&alice));
    assert_eq!(v2.status, 200, "{}", v2.body);
    let v2 = v2.json();
    assert_eq!(v2["dates_succeeded"], 2, "{v2}");
    assert_eq!(
        v2["date_states"]
            .as_array()
            .map(|d| d.iter().all(|s| s["state"] == "success")),
        Some(true),
        "{v2}"
    );
    let v2_list = c
        .get("/api/v2/backfills?state=success", Some(&alice))
        .json();
    assert_eq!(v2_list["total_entries"], 1, "{v2_list}");
    let dags = c.get("/api/v2/dags", Some(&alice)).json();
    assert!(
        dags["dag_ids"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("sales"))
                && !d
                    .iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains("_backfill_")))),
        "{dags}"
    );

    // v2: a dry run lists the dates and creates nothing.
    let dry = c.post_json(
        "/api/v2/backfills",
        &alice,
        &json!({"dag_id": "sales", "start": "2024-07-01", "end": "2024-07-03", "dry_run": true}),
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(
        dry.json()["logical_dates"].as_array().map(Vec::len),
        Some(3),
        "{}",
        dry.body
    );
    assert_eq!(
        c.get("/api/v2/backfills", Some(&alice)).json()["total_entries"],
        1
    );

    // v2 life-cycle: pause a running backfill, resume it, retry the failed dates of another.
    let lc = c.post_json(
        "/api/v2/backfills",
        &alice,
        &json!({"dag_id": "lifecycle_demo", "start": "2024-06-01", "end": "2024-06-01", "params": {"sleep": 8}}),
    );
    assert_eq!(lc.status, 201, "{}", lc.body);
    let lc_id = lc.json()["id"].as_str().unwrap_or_default().to_owned();
    assert!(lc_id.starts_with("lifecycle_demo_backfill_"), "{}", lc.body);
    let v2_path = |id: &str, action: &str| format!("/api/v2/backfills/{id}/{action}");
    wait_for(&format!("{lc_id} to start"), BIG, || {
        let s = c
            .get(&format!("/api/v2/backfills/{lc_id}"), Some(&alice))
            .json();
        matches!(s["state"].as_str(), Some("queued" | "running")).then_some(())
    });
    assert_problem(
        &c.post_json(&v2_path(&lc_id, "pause"), &vera, &json!({})),
        403,
    );
    let paused = c.post_json(&v2_path(&lc_id, "pause"), &alice, &json!({}));
    assert_eq!(paused.status, 200, "{}", paused.body);
    let p = paused.json();
    assert_eq!(p["state"], "paused", "{p}");
    assert_eq!(p["user_paused"], true, "{p}");
    assert!(
        p["allowed_actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("resume")) && !a.contains(&json!("pause"))),
        "{p}"
    );
    assert_problem(
        &c.post_json(&v2_path(&lc_id, "pause"), &alice, &json!({})),
        400,
    );
    assert_problem(
        &c.post_json(&v2_path(&lc_id, "frobnicate"), &alice, &json!({})),
        404,
    );
    let resumed = c.post_json(&v2_path(&lc_id, "resume"), &alice, &json!({}));
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json()["user_paused"], false, "{}", resumed.body);
    let fail_dir = af.home.join("http-fail-dates");
    std::fs::create_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(fail_dir.join("2024-08-02"), "").unwrap_or_else(|e| panic!("{e}"));
    let partial = c.post_json(
        "/api/v2/backfills",
        &alice,
        &json!({"dag_id": "lifecycle_demo", "start": "2024-08-01", "end": "2024-08-02",
                "params": {"fail_dir": fail_dir.display().to_string()}}),
    );
    assert_eq!(partial.status, 201, "{}", partial.body);
    let partial_id = partial.json()["id"].as_str().unwrap_or_default().to_owned();
    let finished = |id: &str| {
        wait_for(&format!("{id} to finish"), BIG, || {
            let s = c
                .get(&format!("/api/v2/backfills/{id}"), Some(&alice))
                .json();
            matches!(
                s["state"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
            .then_some(s)
        })
    };
    let lc_done = finished(&lc_id);
    assert_eq!(
        lc_done["state"],
        "success",
        "{lc_done}\n{}",
        daemon.log_text()
    );
    assert_problem(
        &c.post_json(&v2_path(&lc_id, "retry"), &alice, &json!({})),
        400,
    );
    let failed = finished(&partial_id);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["dates_failed"], 1, "{failed}");
    let by_state = c
        .get(
            "/api/v2/backfills?dag_id=lifecycle_demo&state=failed",
            Some(&alice),
        )
        .json();
    assert_eq!(by_state["total_entries"], 1, "{by_state}");
    assert_eq!(
        by_state["backfills"][0]["id"],
        partial_id.as_str(),
        "{by_state}"
    );
    assert_problem(&c.get("/api/v2/backfills?state=bogus", Some(&alice)), 400);
    std::fs::remove_dir_all(&fail_dir).unwrap_or_else(|e| panic!("{e}"));
    let retried = c.post_json(&v2_path(&partial_id, "retry"), &alice, &json!({}));
    assert_eq!(retried.status, 200, "{}", retried.body);
    let r = retried.json();
    let retry_id = r["id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(retry_id, partial_id, "{r}");
    assert_eq!(r["retry_of"], partial_id.as_str(), "{r}");
    assert_eq!(
        r["date_states"].as_array().map(Vec::len),
        Some(1),
        "only the failed date: {r}"
    );
    let retry_done = finished(&retry_id);
    assert_eq!(retry_done["state"], "success", "{retry_done}");

    // The web UI: login page, session, CSRF on the create form.
    let root = c.get("/", None);
    assert_eq!(root.status, 303, "{}", root.body);
    assert_eq!(root.header("location"), Some("/login"));
    let bad = c.post_form(
        "/login",
        None,
        &[("username", "alice"), ("password", "nope")],
    );
    assert_eq!(bad.status, 401);
    let login = c.post_form("/login", None, &[("username", "alice"), ("password", "pw")]);
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login
        .header("set-cookie")
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie"))
        .to_owned();
    let page = c.get_cookie("/", &cookie);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&id) && page.body.contains("class=\"bar\""),
        "{}",
        page.body
    );
    let form = c.get_cookie("/new", &cookie);
    assert!(
        form.body.contains("<option value=\"sales\""),
        "{}",
        form.body
    );
    let csrf = form
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token"))
        .to_owned();
    let fields = [
        ("dag_id", "sales"),
        ("start", "2024-06-01"),
        ("end", "2024-06-01"),
    ];
    let forged = c.post_form("/new", Some(&cookie), &fields);
    assert_eq!(forged.status, 403, "{}", forged.body);
    let mut with_csrf = fields.to_vec();
    with_csrf.push(("csrf", &csrf));
    let made = c.post_form("/new", Some(&cookie), &with_csrf);
    assert_eq!(made.status, 303, "{}", made.body);
    let detail_path = made.header("location").unwrap_or_default().to_owned();
    assert!(
        detail_path.starts_with("/backfills/sales_backfill_"),
        "{detail_path}"
    );
    let detail = c.get_cookie(&detail_path, &cookie);
    assert!(detail.body.contains("id=\"dates\""), "{}", detail.body);

    // Life-cycle through the seed API: cancel the UI's backfill, delete the finished one.
    let ui_id = detail_path.trim_start_matches("/backfills/").to_owned();
    let v2_ui = c
        .get(&format!("/api/v2/backfills/{ui_id}"), Some(&alice))
        .json();
    assert!(
        v2_ui["allowed_actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("cancel"))),
        "{v2_ui}"
    );
    assert_problem(
        &c.post_json(
            &format!("/api/v1/plugins/backfills/{ui_id}/cancel"),
            &vera,
            &json!({}),
        ),
        403,
    );
    let cancelled = c.post_json(
        &format!("/api/v1/plugins/backfills/{ui_id}/cancel"),
        &alice,
        &json!({}),
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert!(
        matches!(
            cancelled.json()["state"].as_str(),
            Some("cancelled" | "failed")
        ),
        "{}",
        cancelled.body
    );
    assert_problem(
        &c.post_json(
            "/api/v1/plugins/backfills/sales_backfill_19990101_000000/cancel",
            &alice,
            &json!({}),
        ),
        404,
    );
    let deleted = Client::finish(
        c.agent
            .delete(format!("{}/api/v1/plugins/backfills/{id}", c.base))
            .header("Authorization", &alice)
            .header("Content-Type", "application/json")
            .call(),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json()["deleted"], "Deleted", "{}", deleted.body);
    let visible = c.get("/api/v1/plugins/backfills", Some(&alice)).json();
    assert!(
        visible
            .as_array()
            .is_some_and(|l| !l.iter().any(|x| x["backfill_dag_id"] == id.as_str())),
        "{visible}"
    );
    let all = c
        .get(
            "/api/v1/plugins/backfills?include_deleted=true",
            Some(&alice),
        )
        .json();
    assert!(
        all.as_array()
            .is_some_and(|l| l.iter().any(|x| x["backfill_dag_id"] == id.as_str())),
        "{all}"
    );

    // Paging: one backfill a page, following `next` (v2) and the Link header (v1), lists
    // every backfill once, in the order of the whole list.
    let whole = c
        .get("/api/v2/backfills?include_deleted=true", Some(&alice))
        .json();
    let ids = |list: &Value, key: &str| -> Vec<String> {
        list.as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|b| b[key].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let want = ids(&whole["backfills"], "id");
    assert!(want.len() >= 3, "{whole}");
    assert_eq!(whole["next_cursor"], Value::Null, "{whole}");
    let (mut paged, mut path) = (
        Vec::new(),
        "/api/v2/backfills?include_deleted=true&limit=1".to_owned(),
    );
    loop {
        let page = c.get(&path, Some(&alice));
        assert_eq!(page.status, 200, "{}", page.body);
        let v = page.json();
        assert_eq!(v["total_entries"], want.len(), "{v}");
        let got = ids(&v["backfills"], "id");
        assert_eq!(got.len(), 1, "{v}");
        paged.extend(got);
        match v["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    page.header("link"),
                    Some(format!("<{next}>; rel=\"next\"").as_str())
                );
                path = next.to_owned();
            }
            None => break,
        }
        assert!(paged.len() <= want.len(), "{paged:?}");
    }
    assert_eq!(paged, want);
    let (mut seed_paged, mut path) = (
        Vec::new(),
        "/api/v1/plugins/backfills?include_deleted=true&limit=1".to_owned(),
    );
    loop {
        let page = c.get(&path, Some(&alice));
        assert_eq!(page.status, 200, "{}", page.body);
        seed_paged.extend(ids(&page.json(), "backfill_dag_id"));
        match page.header("link") {
            Some(link) => {
                path = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            None => break,
        }
        assert!(seed_paged.len() <= want.len(), "{seed_paged:?}");
    }
    assert_eq!(seed_paged, want);
    assert_problem(&c.get("/api/v2/backfills?limit=0", Some(&alice)), 400);
    assert_problem(&c.get("/api/v2/backfills?cursor=bogus", Some(&alice)), 400);
    assert_problem(
        &c.get("/api/v1/plugins/backfills?offset=-1", Some(&alice)),
        400,
    );

    // Failed logins were audited; too many from one address lock it out (429).
    assert!(
        af.count(
            "SELECT COUNT(*) FROM backfilld_audit WHERE action = 'login' AND allowed = 0",
            &[],
        ) >= 4
    );
    // As many as the limit and one more: the earlier failures may have left the window on a
    // slow machine.
    let mut last = 0;
    for _ in 0..6 {
        last = c
            .get("/api/v1/plugins/backfills", Some(&basic("mallory", "x")))
            .status;
    }
    assert_eq!(last, 429);
    assert_eq!(c.get("/api/v1/plugins/backfills", Some(&alice)).status, 429);
}

/// The schemathesis venv built by `scripts/airflow-venvs.sh` (next to the Airflow ones).
fn schemathesis() -> std::path::PathBuf {
    let base = std::env::var_os("BACKFILLD_VENV_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::PathBuf::from(home).join(".cache/backfilld/venvs")
        });
    let program = base.join("schemathesis/bin/schemathesis");
    assert!(
        program.exists(),
        "{} is missing: run scripts/airflow-venvs.sh (or .ci/run) first",
        program.display()
    );
    program
}

#[test]
fn openapi_fuzzed_by_schemathesis_without_server_errors() {
    let af = Airflow::sqlite(AirflowMajor::V2, "http_schemathesis_af2");
    let port = free_port();
    let daemon = Daemon::start_with(
        &af,
        &[],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_failed_logins = 100000\n"),
    );
    af.ensure_user("alice", "User");
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let out = std::process::Command::new(schemathesis())
        .args([
            "run",
            &format!("http://127.0.0.1:{port}/api/v2/openapi.json"),
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--seed",
            "8",
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--no-color",
            "--header",
            &format!("Authorization: {}", basic("alice", "pw")),
        ])
        .current_dir(&af.home)
        .output()
        .unwrap_or_else(|e| panic!("run schemathesis: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        daemon.log_text()
    );
    assert!(
        text.contains("Test cases:") && !text.contains("Server error"),
        "{text}"
    );
}

#[test]
fn airflow3_api_server_token_on_sqlite() {
    api_server_token_scenario(AirflowMajor::V3, "http_token_af3");
}

/// The same on the newest Airflow 3, whose api-server also revokes a token at sign-out
/// (`revoked_token`, Airflow 3.2+): backfilld then refuses it too.
#[test]
fn airflow33_api_server_token_on_sqlite() {
    api_server_token_scenario(AirflowMajor::V3Newest, "http_token_af33");
}

/// Airflow's api-server issues a token to a FAB user; backfilld accepts it for reads and a
/// create (as that user), refuses an altered one, and, where Airflow revokes tokens, refuses
/// it after its user signed out.
fn api_server_token_scenario(major: AirflowMajor, name: &str) {
    let mut af = Airflow::sqlite(major, name);
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    let port = free_port();
    let daemon = Daemon::start_with(
        &af,
        &[("AIRFLOW__API_AUTH__JWT_SECRET", "backfilld-it-jwt-secret")],
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    af.ensure_user("alice", "User");
    wait_for("the HTTP listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    // A token from Airflow's own api-server, for a user made by `airflow users create`.
    let airflow = Client::new(af.api_port);
    let issued = Client::finish(
        airflow
            .agent
            .post(format!("{}/auth/token", airflow.base))
            .send_json(json!({"username": "alice", "password": "pw"})),
    );
    assert!(
        issued.status == 200 || issued.status == 201,
        "{} {}",
        issued.status,
        issued.body
    );
    let token = issued.json()["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {}", issued.body))
        .to_owned();
    let bearer = format!("Bearer {token}");

    let c = Client::new(port);
    let list = c.get("/api/v2/backfills", Some(&bearer));
    assert_eq!(list.status, 200, "{}\n{}", list.body, daemon.log_text());
    assert_eq!(list.json()["total_entries"], 0, "{}", list.body);
    let created = c.post_json(
        "/api/v2/backfills",
        &bearer,
        &json!({"dag_id": "sales", "start": "2024-05-01", "end": "2024-05-01"}),
    );
    assert_eq!(
        created.status,
        201,
        "{}\n{}",
        created.body,
        daemon.log_text()
    );
    assert_eq!(created.json()["submitted_by"], "alice", "{}", created.body);
    let v1 = c.get("/api/v1/plugins/backfills", Some(&bearer));
    assert_eq!(v1.status, 200, "{}", v1.body);
    assert_eq!(v1.json().as_array().map(Vec::len), Some(1), "{}", v1.body);

    // An altered token (one signature character changed) or garbage is refused.
    let cut = token.len().saturating_sub(10);
    let (head, tail) = token.split_at(cut);
    let swapped = if tail.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}{swapped}{}", &tail[1..]);
    assert_problem(
        &c.get("/api/v2/backfills", Some(&format!("Bearer {forged}"))),
        401,
    );
    assert_problem(&c.get("/api/v2/backfills", Some("Bearer not.a.token")), 401);

    if major == AirflowMajor::V3Newest {
        // Signing out at Airflow's api-server revokes the token there, and here.
        let _ = airflow
            .agent
            .get(format!("{}/api/v2/auth/logout", airflow.base))
            .header("Authorization", &bearer)
            .call();
        assert_eq!(af.query_i64("SELECT COUNT(*) FROM revoked_token"), 1);
        let after = c.get("/api/v2/backfills", Some(&bearer));
        assert_problem(&after, 401);
        assert!(after.body.contains("revoked"), "{}", after.body);
    }
}
