//! The web UI's tables: every page rendered with hostile values escaped, the form mapped to requests, the lists rendering the rows given.

use super::*;

#[test]
fn create_form_to_body() {
    let form: FormData = [
        ("dag_id", "sales"),
        ("start", "2024-01-01"),
        ("end", "2024-01-02"),
        ("max_active_runs", "2"),
        ("params", "{\"x\": 1}"),
        ("dry_run", "1"),
        ("description", " "),
        ("run_backwards", "1"),
        ("reprocess", "failed"),
        ("tasks", "extract, load  report"),
        ("include_upstream", "1"),
        ("after", "a_backfill_1,b_backfill_2"),
        ("priority", "3"),
        ("scheduled_at", "2024-03-01 06:30"),
        ("emit_asset_events", "false"),
        ("delete_after_days", "7"),
        ("notify", "mailto:a@example.com https://hooks.example.com/x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let body = form_body(&form).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(body.get("dry_run"), Some(&Value::Bool(true)));
    assert!(!body.contains_key("description"));
    let t = v2_request(&body).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        t.get("max_active_runs").and_then(toml::Value::as_integer),
        Some(2)
    );
    assert_eq!(
        t.get("run_backwards").and_then(toml::Value::as_bool),
        Some(true)
    );
    assert_eq!(
        t.get("reprocess").and_then(toml::Value::as_str),
        Some("failed")
    );
    let strings = |k: &str| {
        t.get(k)
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(toml::Value::as_str).collect::<Vec<_>>())
    };
    assert_eq!(strings("tasks"), Some(vec!["extract", "load", "report"]));
    assert_eq!(strings("after"), Some(vec!["a_backfill_1", "b_backfill_2"]));
    assert_eq!(
        strings("notify"),
        Some(vec!["mailto:a@example.com", "https://hooks.example.com/x"])
    );
    assert_eq!(t.get("priority").and_then(toml::Value::as_integer), Some(3));
    assert_eq!(
        t.get("delete_after_days").and_then(toml::Value::as_integer),
        Some(7)
    );
    assert_eq!(
        t.get("emit_asset_events").and_then(toml::Value::as_bool),
        Some(false)
    );
    assert_eq!(
        t.get("include_upstream").and_then(toml::Value::as_bool),
        Some(true)
    );
    assert_eq!(
        t.get("scheduled_at").map(ToString::to_string).as_deref(),
        Some("2024-03-01T06:30:00Z")
    );
    // Defaults stay out of the request: priority 0, asset events as configured.
    let plain: FormData = [("priority", "0"), ("emit_asset_events", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let body = form_body(&plain).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(body.is_empty(), "{body:?}");
    let bad: FormData = [("priority".to_owned(), "high".to_owned())].into();
    let e = form_body(&bad).err().map(|e| problem_of(&e));
    assert_eq!(e.and_then(|p| p.field), Some("priority"));
}

#[test]
fn task_patterns_match_ids() {
    let ids: Vec<String> = ["extract", "load", "report"].map(String::from).to_vec();
    assert_eq!(
        task_matches(&list_items("load, rep"), &ids),
        Ok(vec!["load".to_owned(), "report".to_owned()])
    );
    assert!(
        task_matches(&list_items("nothing"), &ids).is_err_and(|e| e.contains("matches no task"))
    );
    assert_eq!(
        list_items(" a{1,3}, [a,b]x  c,d "),
        ["a{1,3}", "[a,b]x", "c", "d"]
    );
}

/// A hostile value for one field: a script element, quotes and an ampersand, tagged so
/// each field's value can be found in the page.
fn hostile(tag: &str) -> String {
    format!("<script>tag-{tag}\"&'</script>")
}

/// How `hostile(tag)` reads once escaped.
fn escaped(tag: &str) -> String {
    format!("&lt;script&gt;tag-{tag}&quot;&amp;'&lt;/script&gt;")
}

/// `html` shows every tagged value escaped and none raw: no script element but the
/// page's own, no quote after a tag (an attribute cannot be closed early), every `&`
/// starts an entity.
fn assert_escaped(html: &str, tags: &[&str]) {
    let own = "<script src=\"static/ui.js\" defer></script>";
    assert!(!html.replace(own, "").contains("<script"), "{html}");
    for tag in tags {
        assert!(
            html.contains(&escaped(tag)),
            "{tag} not shown escaped:\n{html}"
        );
        assert!(
            !html.contains(&format!("tag-{tag}\"")),
            "{tag}: raw quote:\n{html}"
        );
    }
    for (i, _) in html.match_indices('&') {
        let rest = &html[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "a raw & at {i}:\n{html}"
        );
    }
}

fn session() -> Session {
    Session {
        username: hostile("username"),
        csrf: hostile("csrf"),
        expires: Instant::now(),
    }
}

fn hostile_error(tag: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        detail: hostile(tag),
        reason_code: Some(hostile(&format!("{tag}_code"))),
    }
}

/// A backfill with a hostile value in every text field users or Airflow control.
fn backfill() -> WebBackfill {
    let view = serde_json::from_value(serde_json::json!({
        "id": hostile("id"),
        "dag_id": hostile("dag_id"),
        "state": "running",
        "reason": hostile("reason"),
        "start": hostile("start"),
        "end": hostile("end"),
        "description": hostile("description"),
        "max_active_runs": 2,
        "params": { hostile("param_key"): hostile("param_value") },
        "submitted_by": hostile("submitted_by"),
        "requester": hostile("requester"),
        "on_behalf_of": hostile("on_behalf_of"),
        "submitted_at": hostile("submitted_at"),
        "updated_at": hostile("updated_at"),
        "run_start": null,
        "run_end": null,
        "dates_total": 3,
        "dates_succeeded": 1,
        "dates_failed": 1,
        "dates_running": 1,
        "dates_queued": 0,
        "dates_pending": 0,
        "copy_path": hostile("copy_path"),
        "host": hostile("host"),
        "estimate": {
            "remaining_secs": 90,
            "finish_at": hostile("finish_at"),
            "basis": hostile("basis"),
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    WebBackfill {
        view,
        allowed_actions: vec![Action::Cancel, Action::Reject],
        waiting: Some(hostile("waiting")),
        dates: Vec::new(),
    }
}

#[test]
fn every_page_escapes_hostile_values() {
    let base = hostile("base");
    let s = session();

    let Html(login) = login_page(&base, None, Some(&hostile_error("login_error")), None, None);
    assert_escaped(&login, &["base", "login_error", "login_error_code"]);
    let Html(off) = login_page(&base, Some(&hostile("why_off")), None, None, None);
    assert_escaped(&off, &["base", "why_off"]);
    let link = SignInLink::Link(hostile("sign_in_link"));
    let Html(off) = login_page(&base, Some("off"), None, None, Some(&link));
    assert_escaped(&off, &["base", "sign_in_link"]);
    let unknown = SignInLink::Unknown(hostile("sign_in_why"));
    let Html(off) = login_page(&base, Some("off"), None, None, Some(&unknown));
    assert_escaped(&off, &["base", "sign_in_why"]);

    let b = backfill();
    let filter = ListFilter {
        dag: hostile("filter_dag"),
        state: hostile("filter_state"),
        include_deleted: true,
        after: hostile("filter_after"),
    };
    let shown = one_page(vec![b.clone()], true);
    let Html(list) = list_page(&base, &s, &filter, Ok(&shown));
    assert_escaped(
        &list,
        &[
            "base",
            "username",
            "csrf",
            "filter_dag",
            "id",
            "dag_id",
            "start",
            "end",
            "submitted_by",
            "submitted_at",
        ],
    );
    assert!(!list.contains("<script>tag-filter_after"), "{list}");
    let Html(list_error) = list_page(&base, &s, &filter, Err(&hostile_error("list_error")));
    assert_escaped(&list_error, &["list_error", "list_error_code"]);

    let form: FormData = [
        "dag_id",
        "start",
        "end",
        "description",
        "max_active_runs",
        "params",
        "tasks",
        "after",
        "priority",
        "scheduled_at",
        "delete_after_days",
        "notify",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), hostile(&format!("form_{k}"))))
    .chain([("reprocess".to_owned(), hostile("form_reprocess"))])
    .collect();
    let dags = Ok(vec![hostile("form_dag_id"), hostile("other_dag")]);
    let estimate = crate::estimate::Estimate {
        remaining_secs: Some(90),
        finish_at: Some(hostile("preview_finish")),
        basis: hostile("preview_basis"),
    };
    let matched = Ok(vec![hostile("preview_task")]);
    let note = preview_note(&[hostile("preview_date")], Some(&estimate), Some(&matched));
    let message = hostile("field_message");
    let invalid = Invalid {
        field: Some("tasks"),
        message: &message,
    };
    let Html(new) = new_page(&base, &s, &dags, &form, note, invalid);
    assert!(new.contains("aria-invalid=\"true\""), "{new}");
    assert!(new.contains("id=\"tasks-error\""), "{new}");
    assert_escaped(
        &new,
        &[
            "base",
            "csrf",
            "form_dag_id",
            "other_dag",
            "form_start",
            "form_end",
            "form_description",
            "form_max_active_runs",
            "form_params",
            "form_tasks",
            "form_after",
            "form_priority",
            "form_scheduled_at",
            "form_delete_after_days",
            "form_notify",
            "preview_date",
            "preview_basis",
            "preview_task",
            "field_message",
        ],
    );
    let Html(new_error) = new_page(
        &base,
        &s,
        &Err(hostile_error("dags_error")),
        &form,
        error_box(&hostile_error("create_error")),
        Invalid::default(),
    );
    assert_escaped(
        &new_error,
        &[
            "dags_error",
            "dags_error_code",
            "create_error",
            "create_error_code",
        ],
    );

    let d = WebDetail {
        backfill: b,
        date_states: vec![crate::engine::web::DateState {
            logical_date: hostile("logical_date"),
            state: "running",
            start: Some(hostile("run_started")),
            end: Some(hostile("run_ended")),
            run_id: Some(hostile("run_id")),
            failed_tasks: vec![crate::metadb::airflow::FailedTask {
                task_id: hostile("task_id"),
                map_index: -1,
            }],
        }],
        airflow3: false,
    };
    let urls = crate::config::AirflowBaseUrls {
        v2: Some("http://airflow:8080".into()),
        v3: None,
    };
    let ui = AirflowUi::new(&urls, false);
    let Html(detail) = detail_page(
        &base,
        &s,
        &d,
        error_box(&hostile_error("act_error")),
        ui.as_ref(),
    );
    assert_escaped(
        &detail,
        &[
            "base",
            "username",
            "csrf",
            "id",
            "dag_id",
            "reason",
            "waiting",
            "start",
            "end",
            "description",
            "submitted_by",
            "submitted_at",
            "logical_date",
            "run_started",
            "run_ended",
            "task_id",
            "act_error",
            "act_error_code",
            "finish_at",
            "basis",
        ],
    );
    // Params are shown as JSON (whose quotes are backslash-escaped), escaped again.
    assert!(detail.contains("&lt;script&gt;tag-param_value\\&quot;&amp;'&lt;/script&gt;"));
    // Ids in links into Airflow are percent-encoded.
    assert!(detail.contains(&format!("dag_run_id={}", url(&hostile("run_id")))));
    assert!(detail.contains(&format!("task_id={}", url(&hostile("task_id")))));
    // The id in the action's URL is percent-encoded.
    assert!(detail.contains(&format!("backfills/{}/cancel", url(&hostile("id")))));
}

/// A page of the list holding `rows`, with a next page when `more`.
fn one_page(rows: Vec<WebBackfill>, more: bool) -> WebPage {
    let next = more.then(|| crate::paging::PageKey {
        submitted_at: chrono::DateTime::UNIX_EPOCH,
        id: "older_one".into(),
    });
    WebPage {
        backfills: rows,
        next,
        total: None,
    }
}

#[test]
fn list_renders_the_rows_given() {
    let mut b = backfill();
    b.view.id = "sales_backfill_1".into();
    let s = session();
    let filter = ListFilter::default();
    let Html(empty) = list_page("", &s, &filter, Ok(&one_page(vec![], false)));
    assert!(empty.contains("No backfills."), "{empty}");
    assert!(!empty.contains("Older backfills"), "{empty}");
    let Html(one) = list_page("", &s, &filter, Ok(&one_page(vec![b.clone()], false)));
    assert!(
        one.contains(
            "<tr data-id=\"sales_backfill_1\"><td><a href=\"backfills/sales_backfill_1\">"
        ),
        "{one}"
    );
    assert!(one.contains("class=\"bar\""), "{one}");
    assert!(one.contains("id=\"live\" data-active=\"1\""), "{one}");
    b.view.state = crate::state::BackfillState::Success;
    let Html(done) = list_page("", &s, &filter, Ok(&one_page(vec![b], false)));
    assert!(done.contains("data-active=\"0\""), "{done}");
}

#[test]
fn list_pages_link_to_older_backfills_keeping_the_filters() {
    let s = session();
    let filter = ListFilter {
        dag: "sales daily".into(),
        state: "running".into(),
        include_deleted: false,
        after: String::new(),
    };
    let Html(first) = list_page("", &s, &filter, Ok(&one_page(vec![backfill()], true)));
    let cursor = crate::paging::PageKey {
        submitted_at: chrono::DateTime::UNIX_EPOCH,
        id: "older_one".into(),
    }
    .encode();
    let older = format!("href=\"./?dag_id=sales%20daily&amp;state=running&amp;after={cursor}\"");
    assert!(first.contains(&older), "{first}");
    assert!(!first.contains(">Newest<"), "{first}");
    let later = ListFilter {
        after: cursor.clone(),
        ..filter
    };
    let Html(last) = list_page("", &s, &later, Ok(&one_page(vec![backfill()], false)));
    assert!(
        last.contains("href=\"./?dag_id=sales%20daily&amp;state=running\">Newest<"),
        "{last}"
    );
    assert!(!last.contains("Older backfills"), "{last}");
    let Ok(request) = later.page_request() else {
        panic!("a valid page request")
    };
    assert_eq!(request.query.dag_id.as_deref(), Some("sales daily"));
    assert_eq!(
        request.query.state,
        Some(crate::state::BackfillState::Running)
    );
    assert_eq!(request.cursor.map(|k| k.id), Some("older_one".to_owned()));
    assert_eq!(request.limit, LIST_PAGE_SIZE);
    let bad = ListFilter {
        state: "sleeping".into(),
        ..ListFilter::default()
    };
    assert!(bad.page_request().is_err());
}

#[test]
fn detail_is_short_and_links_into_airflow() {
    let mut b = backfill();
    b.view.id = "sales_backfill_1".into();
    b.view.dag_id = "sales".into();
    b.view.description = Some(String::new());
    b.view.params = Map::new();
    b.view.start = "2024-02-01T00:00:00Z".into();
    b.view.submitted_at = "2024-03-01T06:30:00Z".into();
    let d = WebDetail {
        backfill: b,
        date_states: vec![crate::engine::web::DateState {
            logical_date: "2024-02-01T00:00:00Z".into(),
            state: "failed",
            start: None,
            end: None,
            run_id: Some("backfill__2024-02-01T00:00:00+00:00".into()),
            failed_tasks: vec![crate::metadb::airflow::FailedTask {
                task_id: "load".into(),
                map_index: -1,
            }],
        }],
        airflow3: true,
    };
    let urls = crate::config::AirflowBaseUrls {
        v2: None,
        v3: Some("http://af3".into()),
    };
    let ui = AirflowUi::new(&urls, true);
    let Html(page) = detail_page("", &session(), &d, html! {}, ui.as_ref());
    assert!(!page.contains(">Description<"), "{page}");
    assert!(!page.contains(">Params<"), "{page}");
    assert!(
        page.contains("<time datetime=\"2024-02-01T00:00:00Z\" title=\"2024-02-01T00:00:00Z\">2024-02-01</time>"),
        "{page}"
    );
    assert!(
        page.contains("class=\"local\" title=\"2024-03-01T06:30:00Z\">2024-03-01 06:30 UTC</time>"),
        "{page}"
    );
    assert!(page.contains("href=\"http://af3/dags/sales\""), "{page}");
    assert!(
        page.contains("href=\"http://af3/dags/sales_backfill_1/runs/backfill__2024-02-01T00%3A00%3A00%2B00%3A00/tasks/load\""),
        "{page}"
    );
    assert!(page.contains(">Failed</span>"), "{page}");
    let Html(no_links) = detail_page("", &session(), &d, html! {}, None);
    assert!(!no_links.contains("In Airflow"), "{no_links}");
}

#[test]
fn errors_are_sentences() {
    let e = ApiError::rejected(
        "start_after_end",
        "start 2024-02-03T00:00:00Z is after end 2024-02-01T00:00:00Z",
    );
    let html = error_box(&e).into_string();
    assert!(!html.contains("400"), "{html}");
    assert!(
        html.contains(">The end date is before the start date. Start"),
        "{html}"
    );
    assert!(html.contains("data-reason=\"start_after_end\""), "{html}");
}

#[test]
fn a_link_prefills_the_form() {
    let query: FormData = [
        ("dag_id", "sales"),
        ("start", "2024-05-01"),
        ("csrf", "x"),
        ("dry_run", "1"),
        ("end", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let dags = Ok(vec!["other".to_owned(), "sales".to_owned()]);
    let (form, note) = prefilled(query.clone(), &dags);
    let mut keys: Vec<_> = form.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["dag_id", "start"]);
    assert!(note.into_string().is_empty());
    let Html(page) = new_page("", &session(), &dags, &form, html! {}, Invalid::default());
    assert!(page.contains("<option value=\"sales\" selected>"), "{page}");
    assert!(page.contains("value=\"2024-05-01\""), "{page}");
    // A DAG the user may not backfill is said so, escaped.
    let hostile_query: FormData = [("dag_id".to_owned(), hostile("link_dag"))].into();
    let (_, note) = prefilled(hostile_query, &dags);
    let note = note.into_string();
    assert!(note.contains("id=\"unknown-dag\""), "{note}");
    assert_escaped(&note, &["link_dag"]);
}

#[test]
fn login_page_without_passwords_leads_to_airflow() {
    let link = SignInLink::Link("https://af.example/login/?next=%2Fb%2Fnew".into());
    let Html(page) = login_page("/b", Some("AUTH_LDAP"), None, Some("new"), Some(&link));
    assert!(page.contains("id=\"no-passwords\""), "{page}");
    assert!(
        page.contains(
            "<a class=\"button\" id=\"airflow-sign-in\" href=\"https://af.example/login/?next=%2Fb%2Fnew\">Sign in with Airflow</a>"
        ),
        "{page}"
    );
    assert!(!page.contains("type=\"password\""), "{page}");
    let unknown = SignInLink::Unknown("no [webserver] base_url".into());
    let Html(page) = login_page("/b", Some("AUTH_LDAP"), None, None, Some(&unknown));
    assert!(!page.contains("airflow-sign-in"), "{page}");
    assert!(
        page.contains("id=\"no-sign-in-link\"") && page.contains("no [webserver] base_url"),
        "{page}"
    );
    let Html(page) = login_page("/b", Some("AUTH_LDAP"), None, None, None);
    assert!(
        !page.contains("airflow-sign-in") && !page.contains("no-sign-in-link"),
        "{page}"
    );
}

#[test]
fn after_login_only_pages_of_the_ui() {
    for ok in [
        "new",
        "new?dag_id=sales&start=2024-05-01",
        "new?dag_id=a%2Fb",
        "backfills/sales_backfill_20260101_120000",
    ] {
        assert_eq!(next_page(ok), Some(ok));
    }
    for bad in [
        "",
        "/new",
        "//evil.example/new",
        "https://evil.example/",
        "new/../../x",
        "new?x=<script>",
        "backfills//evil.example",
        "login",
        "new?\\evil",
    ] {
        assert_eq!(next_page(bad), None, "{bad}");
    }
    let Html(login) = login_page("/b", None, None, Some("new?dag_id=sales"), None);
    assert!(
        login.contains("name=\"next\" value=\"new?dag_id=sales\""),
        "{login}"
    );
}
