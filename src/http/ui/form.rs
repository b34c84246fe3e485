//! The create form: every request option, the task matches as you type, the preview (dates,
//! tasks, time estimate) and the create itself, with errors marked on their fields.

use super::*;

/// A create-form field the last answer found wrong: its name and what to say next to it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Invalid<'a> {
    /// The form field the refusal is about, when one is.
    pub(super) field: Option<&'a str>,
    /// The refusal, in words.
    pub(super) message: &'a str,
}

impl Invalid<'_> {
    /// `aria-invalid` of field `name`.
    pub(super) fn aria(&self, name: &str) -> Option<&'static str> {
        (self.field == Some(name)).then_some("true")
    }

    /// `aria-describedby` of field `name`: its message, else its hint (`hint`: it has one).
    pub(super) fn described(&self, name: &str, hint: bool) -> Option<String> {
        if self.field == Some(name) {
            Some(format!("{name}-error"))
        } else {
            hint.then(|| format!("{name}-hint"))
        }
    }

    /// The message next to field `name`, if it is the wrong one.
    pub(super) fn note(&self, name: &str) -> Markup {
        html! {
            @if self.field == Some(name) {
                span.field-error id={ (name) "-error" } { (self.message) }
            }
        }
    }
}

/// The create form's date pattern (ISO dates, or a date and time without seconds).
pub(super) const DATE_PATTERN: &str = r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?";

/// The create form, filled from `form` (a refused or previewed create shows its values
/// again), with `note` (a preview or an error) above it and the `invalid` field marked.
pub(super) fn new_page(
    base: &str,
    session: &Session,
    dags: &Result<Vec<String>, ApiError>,
    form: &FormData,
    note: Markup,
    invalid: Invalid<'_>,
) -> Html<String> {
    let val = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let checked = |k: &str| form.get(k).is_some_and(|v| v == "1");
    let mar = Some(val("max_active_runs"))
        .filter(|s| !s.is_empty())
        .unwrap_or("1");
    let selected = form
        .get("reprocess")
        .map(String::as_str)
        .unwrap_or("completed");
    let assets = val("emit_asset_events");
    let text = |name: &str, label: &str, hint: Option<&str>, attrs: Markup| {
        html! {
            div.field {
                label for=(name) { (label) }
                (attrs)
                @if let Some(h) = hint { small.hint id={ (name) "-hint" } { (h) } }
                (invalid.note(name))
            }
        }
    };
    let body = html! {
        h2 { "New backfill" }
        (note)
        form method="post" action="new" class="card" id="create" {
            input type="hidden" name="csrf" value=(session.csrf);
            div.field {
                label for="dag_id" { "DAG" }
                select name="dag_id" id="dag_id" required aria-invalid=[invalid.aria("dag_id")]
                    aria-describedby=[invalid.described("dag_id", false)] {
                    @if let Ok(dags) = dags {
                        @for d in dags {
                            option value=(d) selected[form.get("dag_id") == Some(d)] { (d) }
                        }
                    }
                }
                @if let Err(e) = dags { (error_box(e)) }
                (invalid.note("dag_id"))
            }
            div.pair {
                (text("start", "First date", Some("YYYY-MM-DD"), html! {
                    input name="start" id="start" value=(val("start")) required
                        pattern=(DATE_PATTERN) placeholder="YYYY-MM-DD" inputmode="numeric" autocomplete="off"
                        aria-invalid=[invalid.aria("start")] aria-describedby=[invalid.described("start", true)];
                }))
                (text("end", "Last date (inclusive)", Some("YYYY-MM-DD, not before the first"), html! {
                    input name="end" id="end" value=(val("end")) required
                        pattern=(DATE_PATTERN) placeholder="YYYY-MM-DD" inputmode="numeric" autocomplete="off"
                        aria-invalid=[invalid.aria("end")] aria-describedby=[invalid.described("end", true)];
                }))
            }
            (text("description", "Description", None, html! {
                input name="description" id="description" value=(val("description")) maxlength="2000"
                    aria-invalid=[invalid.aria("description")] aria-describedby=[invalid.described("description", false)];
            }))
            fieldset {
                legend { "Tasks" }
                (text("tasks", "Only tasks matching", Some("Regular expressions found anywhere in a task id, separated by commas or spaces; empty: every task"), html! {
                    input name="tasks" id="tasks" value=(val("tasks")) autocomplete="off"
                        aria-invalid=[invalid.aria("tasks")] aria-describedby=[invalid.described("tasks", true)];
                    output id="task-matches" for="tasks dag_id" aria-live="polite" {}
                }))
                label.check {
                    input type="checkbox" name="include_upstream" id="include_upstream" value="1" checked[checked("include_upstream")];
                    " and their upstream tasks"
                }
                label.check {
                    input type="checkbox" name="include_downstream" id="include_downstream" value="1" checked[checked("include_downstream")];
                    " and their downstream tasks"
                }
            }
            fieldset {
                legend { "When and how" }
                div.pair {
                    (text("max_active_runs", "Runs at a time", None, html! {
                        input name="max_active_runs" id="max_active_runs" type="number" min="1" value=(mar)
                            aria-invalid=[invalid.aria("max_active_runs")] aria-describedby=[invalid.described("max_active_runs", false)];
                    }))
                    (text("priority", "Priority", Some("-10 to 10; higher goes first when slots are short"), html! {
                        input name="priority" id="priority" type="number" min="-10" max="10" step="1" value=(val("priority")) placeholder="0"
                            aria-invalid=[invalid.aria("priority")] aria-describedby=[invalid.described("priority", true)];
                    }))
                }
                (text("scheduled_at", "Start at (UTC)", Some("YYYY-MM-DD HH:MM; empty: now"), html! {
                    input name="scheduled_at" id="scheduled_at" value=(val("scheduled_at")) autocomplete="off"
                        pattern=(DATE_PATTERN) placeholder="YYYY-MM-DD HH:MM"
                        aria-invalid=[invalid.aria("scheduled_at")] aria-describedby=[invalid.described("scheduled_at", true)];
                }))
                (text("after", "After these backfills succeed", Some("Backfill ids separated by commas or spaces"), html! {
                    input name="after" id="after" value=(val("after")) autocomplete="off"
                        aria-invalid=[invalid.aria("after")] aria-describedby=[invalid.described("after", true)];
                }))
                div.field {
                    label for="reprocess" { "Dates the DAG already ran" }
                    select name="reprocess" id="reprocess" aria-invalid=[invalid.aria("reprocess")] {
                        @for (value, label) in REPROCESS {
                            option value=(value) selected[value == selected] { (label) }
                        }
                    }
                    (invalid.note("reprocess"))
                }
                label.check {
                    input type="checkbox" name="run_backwards" id="run_backwards" value="1" checked[checked("run_backwards")];
                    " Newest date first"
                }
                label.check {
                    input type="checkbox" name="ignore_overlap" id="ignore_overlap" value="1" checked[checked("ignore_overlap")];
                    " Run even if it overlaps an active backfill"
                }
            }
            fieldset {
                legend { "Extras" }
                (text("params", "Params (JSON object)", None, html! {
                    textarea name="params" id="params" rows="3" spellcheck="false"
                        aria-invalid=[invalid.aria("params")] aria-describedby=[invalid.described("params", false)] { (val("params")) }
                }))
                div.field {
                    label for="emit_asset_events" { "Asset events" }
                    select name="emit_asset_events" id="emit_asset_events" {
                        @for (value, label) in ASSET_EVENTS {
                            option value=(value) selected[value == assets] { (label) }
                        }
                    }
                }
                (text("notify", "Tell when it finishes", Some("mailto:you@example.com or webhook URLs (slack:https://...), separated by commas or spaces"), html! {
                    input name="notify" id="notify" value=(val("notify")) autocomplete="off"
                        aria-invalid=[invalid.aria("notify")] aria-describedby=[invalid.described("notify", true)];
                }))
                (text("delete_after_days", "Delete automatically after (days)", Some("Days after it finishes; empty: keep it"), html! {
                    input name="delete_after_days" id="delete_after_days" type="number" min="0" max="3650" value=(val("delete_after_days"))
                        aria-invalid=[invalid.aria("delete_after_days")] aria-describedby=[invalid.described("delete_after_days", true)];
                }))
            }
            div.buttons {
                button name="dry_run" value="1" id="preview" class="secondary" { "Preview" }
                " "
                button id="submit" { "Create backfill" }
            }
        }
    };
    page(base, "New backfill", Some(session), body)
}

/// The create form's `reprocess` choices (value, label); `completed` is the default.
pub(super) const REPROCESS: [(&str, &str); 3] = [
    ("completed", "Run them again (default)"),
    ("failed", "Re-run only the failed ones"),
    ("none", "Skip them"),
];

/// The create form's `emit_asset_events` choices (value, label); empty: the configured
/// default.
pub(super) const ASSET_EVENTS: [(&str, &str); 3] = [
    ("", "As configured (default)"),
    ("true", "Emit them"),
    ("false", "Do not emit them"),
];

/// What a dry run found: the dates (the first 200 listed), the time estimate and the tasks
/// the patterns match.
pub(super) fn preview_note(
    dates: &[String],
    estimate: Option<&crate::estimate::Estimate>,
    tasks: Option<&Result<Vec<String>, String>>,
) -> Markup {
    const SHOWN: usize = 200;
    html! {
        div.preview id="preview-dates" role="status" {
            p {
                "This backfill would run " (dates.len())
                @if dates.len() == 1 { " date" } @else { " dates" }
                @if let (Some(first), Some(last)) = (dates.first(), dates.last()) {
                    ", " (when(first))
                    @if dates.len() > 1 { " to " (when(last)) }
                }
                "."
            }
            @if let Some(e) = estimate {
                p id="preview-estimate" {
                    @if let Some(secs) = e.remaining_secs {
                        "It would take about " (crate::estimate::human(secs as f64)) ". "
                    }
                    small { (e.basis) }
                }
            }
            @match tasks {
                Some(Ok(ids)) => p id="preview-tasks" { "Tasks: " (ids.join(", ")) },
                Some(Err(why)) => p.error id="preview-tasks" { (why) },
                None => {},
            }
            details open[dates.len() <= 12] {
                summary { "Dates" }
                ul.dates {
                    @for d in dates.iter().take(SHOWN) {
                        li { (when(d)) }
                    }
                    @if dates.len() > SHOWN {
                        li { "… and " (dates.len() - SHOWN) " more" }
                    }
                }
            }
        }
    }
}

pub(super) async fn dags_of(state: &State, session: &Session) -> Result<Vec<String>, ApiError> {
    let username = session.username.clone();
    state
        .ask(|reply| WebCommand::Dags { username, reply })
        .await
}

/// The fields a link may prefill the create form with (`new?dag_id=sales`: the "Backfill
/// this DAG" link of backfilld's Airflow plugin).
pub(super) const PREFILLED: [&str; 4] = ["dag_id", "start", "end", "description"];

/// The create form's values from a link's `query` (only the [`PREFILLED`] fields), and what
/// to say above it: that the DAG named is not one of `dags`, those the user may backfill.
pub(super) fn prefilled(
    query: FormData,
    dags: &Result<Vec<String>, ApiError>,
) -> (FormData, Markup) {
    let form: FormData = query
        .into_iter()
        .filter(|(k, v)| PREFILLED.contains(&k.as_str()) && !v.is_empty())
        .collect();
    let note = match (form.get("dag_id"), dags) {
        (Some(d), Ok(dags)) if !dags.contains(d) => html! {
            p.error role="alert" id="unknown-dag" {
                "You cannot backfill the DAG " code { (d) } ": it does not exist, or you may not edit it."
            }
        },
        _ => html! {},
    };
    (form, note)
}

/// `GET new`: the create form, prefilled from the query's [`PREFILLED`] fields; a DAG the
/// user cannot backfill (or that does not exist) is said so above the form.
pub(super) async fn new_form(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        let query: Vec<String> = PREFILLED
            .iter()
            .filter_map(|k| Some(format!("{k}={}", url(q.get(*k)?))))
            .collect();
        let next = if query.is_empty() {
            "new".to_owned()
        } else {
            format!("new?{}", query.join("&"))
        };
        return to_login_then(state.base(), &next);
    };
    let dags = dags_of(&state, &session).await;
    let (form, note) = prefilled(q, &dags);
    new_page(
        state.base(),
        &session,
        &dags,
        &form,
        note,
        Invalid::default(),
    )
    .into_response()
}

/// A list field of the form (`tasks`, `after`): items separated by white space or commas
/// (a comma inside `{}` or `[]` belongs to a pattern: `a{1,3}`).
pub(super) fn list_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c.is_whitespace() || (c == ',' && depth == 0) {
            if !item.is_empty() {
                items.push(std::mem::take(&mut item));
            }
        } else {
            item.push(c);
        }
    }
    if !item.is_empty() {
        items.push(item);
    }
    items
}

/// What `patterns` select of a DAG's `task_ids`, or why nothing (for people).
pub(super) fn task_matches(
    patterns: &[String],
    task_ids: &[String],
) -> Result<Vec<String>, String> {
    let checked = crate::taskset::check_patterns(patterns)?;
    crate::taskset::select(&checked, task_ids).map_err(|e| e.to_string())
}

/// The v2 JSON body of the create form.
pub(super) fn form_body(form: &FormData) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    let filled = |key: &str| form.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    for key in ["dag_id", "start", "end", "description"] {
        if let Some(v) = filled(key) {
            m.insert(key.into(), Value::String(v.to_owned()));
        }
    }
    if let Some(v) = filled("scheduled_at") {
        m.insert(
            "scheduled_at".into(),
            Value::String(v.replacen(' ', "T", 1)),
        );
    }
    for (key, what) in [
        ("max_active_runs", "max_active_runs must be a whole number"),
        ("priority", "priority must be a whole number from -10 to 10"),
        (
            "delete_after_days",
            "delete_after_days must be a whole number of days",
        ),
    ] {
        if let Some(v) = filled(key) {
            let n: i64 = v.parse().map_err(|_| ApiError::bad_request(what))?;
            if key != "priority" || n != 0 {
                m.insert(key.into(), Value::from(n));
            }
        }
    }
    if let Some(p) = filled("params") {
        let v: Value = serde_json::from_str(p)
            .map_err(|e| ApiError::bad_request(format!("params must be a JSON object: {e}")))?;
        m.insert("params".into(), v);
    }
    for key in ["tasks", "after", "notify"] {
        if let Some(v) = filled(key) {
            m.insert(key.into(), Value::from(list_items(v)));
        }
    }
    for key in [
        "ignore_overlap",
        "run_backwards",
        "include_upstream",
        "include_downstream",
    ] {
        if form.get(key).is_some_and(|v| v == "1") {
            m.insert(key.into(), Value::Bool(true));
        }
    }
    match form.get("emit_asset_events").map(String::as_str) {
        Some("true") => {
            m.insert("emit_asset_events".into(), Value::Bool(true));
        }
        Some("false") => {
            m.insert("emit_asset_events".into(), Value::Bool(false));
        }
        _ => {}
    }
    if let Some(r) = form
        .get("reprocess")
        .filter(|r| !r.is_empty() && *r != "completed")
    {
        m.insert("reprocess".into(), Value::String(r.clone()));
    }
    if form.get("dry_run").is_some_and(|v| v == "1") {
        m.insert("dry_run".into(), Value::Bool(true));
    }
    Ok(m)
}

/// A refused request's outcome as the error the page shows (its reason code and reason).
pub(super) fn refusal(record: &RequestView) -> ApiError {
    let code = record
        .reason_code
        .as_ref()
        .map(crate::http::reason_name)
        .unwrap_or_default();
    ApiError::rejected(&code, record.reason.clone().unwrap_or_default())
}

pub(super) async fn tasks_of(
    state: &State,
    session: &Session,
    dag_id: &str,
) -> Result<Vec<String>, ApiError> {
    let (username, dag_id) = (session.username.clone(), dag_id.to_owned());
    state
        .ask(|reply| WebCommand::Tasks {
            username,
            dag_id,
            reply,
        })
        .await
}

/// `GET tasks?dag_id=..&tasks=..`: the DAG's task ids and those the patterns match, as JSON
/// (`{"task_ids": [...], "matched": [...]}` or `{"error": "..."}`).
pub(super) async fn tasks(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "Log in again."})),
        )
            .into_response();
    };
    let dag_id = q.get("dag_id").map(String::as_str).unwrap_or_default();
    let patterns = list_items(q.get("tasks").map(String::as_str).unwrap_or_default());
    let body = match tasks_of(&state, &session, dag_id).await {
        Ok(ids) => match task_matches(&patterns, &ids) {
            Ok(matched) => serde_json::json!({ "task_ids": ids, "matched": matched }),
            Err(why) => serde_json::json!({ "task_ids": ids, "error": why }),
        },
        Err(e) => serde_json::json!({ "error": problem_of(&e).message }),
    };
    axum::Json(body).into_response()
}

pub(super) async fn create(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    if let Err(r) = check_csrf(state.base(), &session, &form) {
        return *r;
    }
    let outcome = async {
        let request = v2_request(&form_body(&form)?)?;
        let record = state.submit(&session.username, request).await?;
        if !record.outcome.is_accepted() {
            return Err(refusal(&record));
        }
        Ok(record)
    }
    .await;
    match outcome {
        Ok(record) => match &record.backfill_id {
            Some(id) => {
                Redirect::to(&format!("{}/backfills/{}", state.base(), url(id))).into_response()
            }
            None => {
                let dates = record.dates.clone().unwrap_or_default();
                let patterns = list_items(form.get("tasks").map(String::as_str).unwrap_or(""));
                let matched = if patterns.is_empty() {
                    None
                } else {
                    let dag = form.get("dag_id").map(String::as_str).unwrap_or("");
                    Some(match tasks_of(&state, &session, dag).await {
                        Ok(ids) => task_matches(&patterns, &ids),
                        Err(e) => Err(problem_of(&e).message),
                    })
                };
                let dags = dags_of(&state, &session).await;
                let note = preview_note(&dates, record.estimate.as_ref(), matched.as_ref());
                new_page(
                    state.base(),
                    &session,
                    &dags,
                    &form,
                    note,
                    Invalid::default(),
                )
                .into_response()
            }
        },
        Err(e) => {
            let dags = dags_of(&state, &session).await;
            let p = problem_of(&e);
            let invalid = Invalid {
                field: p.field,
                message: &p.field_message,
            };
            (
                e.status,
                new_page(state.base(), &session, &dags, &form, error_box(&e), invalid),
            )
                .into_response()
        }
    }
}
