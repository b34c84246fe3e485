//! The web UI: server-rendered HTML with its stylesheet and one small script in the binary
//! (no CDN). Pages are `maud` templates, checked at compile time: every interpolated value is
//! escaped (no page builds markup from strings by hand), so a value cannot become markup.
//! Every page works without JavaScript; the script only adds: times in the browser's zone,
//! the live refresh of a page's `#live` region while a backfill is active (it fetches the
//! same page and swaps that region, unless the user is typing in it), the end-before-start
//! check and the task ids a `tasks` pattern matches (`GET tasks`, JSON).
//! A login form starts a session (cookie `backfilld_session`: HttpOnly, SameSite=Strict, Secure
//! over TLS); every state-changing form carries the session's CSRF token. Creates and actions
//! go through [`super::AppState::submit`], like the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde_json::{Map, Value};

use super::airflow_links::{encode as url, AirflowUi};
use super::api::{action_request, v2_request};
use super::auth::{csrf_ok, Session};
use super::present::{self, Problem};
use super::{ApiError, State};
use crate::authz::Action;
use crate::engine::web::{WebBackfill, WebCommand, WebDetail};
use crate::metadb::store::RequestRecord;

const COOKIE: &str = "backfilld_session";
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("ui.js");

type FormData = HashMap<String, String>;

/// The UI routes.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(list))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/new", get(new_form).post(create))
        .route("/backfills/{id}", get(detail))
        .route("/backfills/{id}/{action}", post(act))
        .route("/tasks", get(tasks))
        .route("/static/style.css", get(style))
        .route("/static/ui.js", get(script))
}

/// A whole page: the header (with the user's navigation when logged in) around `body`.
fn page(base: &str, title: &str, user: Option<&Session>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · backfilld" }
                base href={ (base) "/" };
                link rel="stylesheet" href="static/style.css";
                script src="static/ui.js" defer {}
            }
            body {
                header {
                    h1 { "backfilld" }
                    @if let Some(s) = user {
                        nav {
                            a href="./" { "Backfills" } " "
                            a href="new" { "New backfill" }
                            span.who { (s.username) }
                            form method="post" action="logout" class="inline" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The caller's session: backfilld's own (with its cookie token), or else one standing for
/// a valid Airflow webserver session (no token; its CSRF token derives from that cookie).
async fn session_of(state: &State, headers: &HeaderMap) -> Option<(Option<String>, Session)> {
    let own = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| super::airflow_session::cookie_value(c, COOKIE))
        .and_then(|token| {
            let sessions = state.sessions.lock().ok()?;
            let s = sessions.get(token, Instant::now())?.clone();
            Some((Some(token.to_owned()), s))
        });
    if own.is_some() {
        return own;
    }
    let (username, cookie) = state.airflow_session_user(headers).await?;
    let csrf = state.airflow_session_csrf(&cookie);
    Some((
        None,
        Session {
            username,
            csrf,
            expires: Instant::now() + Duration::from_secs(60),
        },
    ))
}

fn to_login(base: &str) -> Response {
    Redirect::to(&format!("{base}/login")).into_response()
}

/// An error as the UI words it (see [`present::problem`]).
fn problem_of(e: &ApiError) -> Problem {
    present::problem(e.reason_code.as_deref(), &e.detail)
}

/// An error as a page shows it: a sentence (its reason code kept for scripts).
fn error_box(e: &ApiError) -> Markup {
    html! {
        p.error role="alert" data-reason=[e.reason_code.as_deref()] {
            (problem_of(e).message)
        }
    }
}

/// A time: short (a date at midnight UTC), the UTC instant in `datetime` and on hover; the
/// script shows times that are not midnight in the browser's zone.
fn when(ts: &str) -> Markup {
    let midnight = present::is_midnight(ts);
    html! {
        time datetime=(ts) class=[(!midnight).then_some("local")] title={ (ts) } {
            (present::short_time(ts))
        }
    }
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT).into_response()
}

async fn login_form(AxState(state): AxState<State>) -> Html<String> {
    login_page(state.base(), state.password_logins_off(), None)
}

/// The login form, or why there is none (`password_off`: password logins are off).
fn login_page(base: &str, password_off: Option<&str>, error: Option<&ApiError>) -> Html<String> {
    let body = match password_off {
        Some(why) => html! {
            h2 { "Log in" }
            @if let Some(e) = error { (error_box(e)) }
            p.error id="no-passwords" { "backfilld accepts no passwords: " (why) "." }
        },
        None => html! {
            h2 { "Log in with your Airflow account" }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="login" class="card" {
                label { "User " input name="username" id="username" autocomplete="username" required; }
                label {
                    "Password "
                    input name="password" id="password" type="password" autocomplete="current-password" required;
                }
                button id="login" { "Log in" }
            }
        },
    };
    page(base, "Log in", None, body)
}

async fn login(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<FormData>,
) -> Response {
    let user = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    match state.login(user, password, client).await {
        Ok(user) => {
            let lasts = Duration::from_secs(state.http.session_secs);
            let token = state
                .sessions
                .lock()
                .ok()
                .and_then(|mut s| s.start(&user, Instant::now(), lasts));
            let Some(token) = token else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "cannot start a session")
                    .into_response();
            };
            let secure = if state.tls { "; Secure" } else { "" };
            let base = state.base();
            let cookie = format!(
                "{COOKIE}={token}; Path={base}/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                lasts.as_secs()
            );
            (
                [(header::SET_COOKIE, cookie)],
                Redirect::to(&format!("{base}/")),
            )
                .into_response()
        }
        Err(e) => (
            e.status,
            login_page(state.base(), state.password_logins_off(), Some(&e)),
        )
            .into_response(),
    }
}

fn check_csrf(base: &str, session: &Session, form: &FormData) -> Result<(), Box<Response>> {
    if csrf_ok(session, form.get("csrf").map(String::as_str).unwrap_or("")) {
        Ok(())
    } else {
        Err(Box::new((
            StatusCode::FORBIDDEN,
            page(
                base,
                "Forbidden",
                Some(session),
                html! {
                    p.error { "The form's CSRF token is missing or stale; reload the page and try again." }
                },
            ),
        )
            .into_response()))
    }
}

async fn logout(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Response {
    if let Some((token, session)) = session_of(&state, &headers).await {
        if let Err(r) = check_csrf(state.base(), &session, &form) {
            return *r;
        }
        if let (Some(token), Ok(mut s)) = (token, state.sessions.lock()) {
            s.end(&token);
        }
    }
    let base = state.base();
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path={base}/; Max-Age=0"),
        )],
        Redirect::to(&format!("{base}/login")),
    )
        .into_response()
}

/// A backfill's progress: succeeded, failed and running dates as one bar.
fn progress_bar(b: &WebBackfill) -> Markup {
    let v = &b.view;
    let total = v.dates_total.max(1);
    let pct = |n: u32| format!("width:{:.1}%", f64::from(n) * 100.0 / f64::from(total));
    let done = v.dates_succeeded + v.dates_failed;
    html! {
        div.bar
            title={
                (v.dates_succeeded) " of " (v.dates_total) " dates succeeded, "
                (v.dates_failed) " failed, " (v.dates_running) " running"
            }
            role="progressbar" aria-valuemin="0" aria-valuemax=(v.dates_total) aria-valuenow=(done) {
            span.ok style=(pct(v.dates_succeeded)) {}
            span.bad style=(pct(v.dates_failed)) {}
            span.run style=(pct(v.dates_running)) {}
        }
        small { (done) "/" (v.dates_total) }
    }
}

/// A state as a coloured badge (`state` is a state name, styled by `span.state.<name>`,
/// kept in `data-state`; its text is the label).
fn badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } data-state=(state) { (present::state_label(state)) } }
}

/// Whether a backfill may still change without anyone acting (the pages refresh then).
fn is_active(b: &WebBackfill) -> bool {
    matches!(
        super::reason_name(&b.view.state).as_str(),
        "submitted" | "queued" | "running"
    )
}

fn state_badge(state: &impl serde::Serialize) -> Markup {
    badge(&super::reason_name(state))
}

/// The states the list can be filtered by.
const LIST_STATES: [&str; 8] = [
    "awaiting_approval",
    "submitted",
    "queued",
    "running",
    "paused",
    "success",
    "failed",
    "cancelled",
];

/// The list page's filters, from its query string.
#[derive(Debug, Default)]
struct ListFilter {
    /// Only this DAG's backfills (empty: all).
    dag: String,
    /// Only backfills in this state (empty: any).
    state: String,
    /// Deleted backfills too.
    include_deleted: bool,
}

impl ListFilter {
    fn from_query(q: &FormData) -> ListFilter {
        ListFilter {
            dag: q.get("dag_id").cloned().unwrap_or_default(),
            state: q.get("state").cloned().unwrap_or_default(),
            include_deleted: q.get("include_deleted").is_some_and(|v| v == "1"),
        }
    }

    /// Whether a backfill passes the DAG and state filters (deleted ones are the engine's).
    fn keeps(&self, b: &WebBackfill) -> bool {
        (self.dag.is_empty() || b.view.dag_id == self.dag)
            && (self.state.is_empty() || super::reason_name(&b.view.state) == self.state)
    }
}

async fn list(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    let filter = ListFilter::from_query(&q);
    let username = session.username.clone();
    let include_deleted = filter.include_deleted;
    let rows = state
        .ask(|reply| WebCommand::List {
            username,
            include_deleted,
            reply,
        })
        .await;
    let rows = rows
        .as_ref()
        .map(|rows| rows.iter().filter(|b| filter.keeps(b)).collect::<Vec<_>>());
    list_page(
        state.base(),
        &session,
        &filter,
        rows.as_deref().map_err(|e| *e),
    )
    .into_response()
}

/// The list page: the filter form, then the rows given (or the error that stands for them).
fn list_page(
    base: &str,
    session: &Session,
    filter: &ListFilter,
    rows: Result<&[&WebBackfill], &ApiError>,
) -> Html<String> {
    let body = html! {
        h2 { "Backfills" }
        form method="get" action="./" class="filters" {
            label { "DAG " input name="dag_id" value=(filter.dag); }
            label {
                "State "
                select name="state" {
                    option value="" { "any" }
                    @for s in LIST_STATES {
                        option value=(s) selected[s == filter.state] { (present::state_label(s)) }
                    }
                }
            }
            label.check {
                input type="checkbox" name="include_deleted" value="1" checked[filter.include_deleted];
                " Deleted too"
            }
            button { "Filter" }
        }
        @match rows {
            Err(e) => (error_box(e)),
            Ok(rows) => {
                div id="live" data-active=(u8::from(rows.iter().any(|b| is_active(b)))) {
                    (backfills_table(rows))
                }
            }
        }
    };
    page(base, "Backfills", Some(session), body)
}

/// The table of backfills, one row each, in the order given.
fn backfills_table(rows: &[&WebBackfill]) -> Markup {
    html! {
        @if rows.is_empty() {
            p { "No backfills." }
        } @else {
            div.scroll { table id="backfills" {
                thead {
                    tr {
                        th { "Backfill" } th { "DAG" } th { "State" } th { "Progress" }
                        th { "Range" } th { "By" } th { "Submitted" }
                    }
                }
                tbody {
                    @for b in rows {
                        @let v = &b.view;
                        tr data-id=(v.id) {
                            td { a href={ "backfills/" (url(&v.id)) } { (v.id) } }
                            td { (v.dag_id) }
                            td { (state_badge(&v.state)) }
                            td { (progress_bar(b)) }
                            td.nowrap { (when(&v.start)) " – " (when(&v.end)) }
                            td { (v.submitted_by) }
                            td.nowrap { (when(&v.submitted_at)) }
                        }
                    }
                }
            } }
        }
    }
}

/// A create-form field the last answer found wrong: its name and what to say next to it.
#[derive(Debug, Clone, Copy, Default)]
struct Invalid<'a> {
    field: Option<&'a str>,
    message: &'a str,
}

impl Invalid<'_> {
    /// `aria-invalid` of field `name`.
    fn aria(&self, name: &str) -> Option<&'static str> {
        (self.field == Some(name)).then_some("true")
    }

    /// `aria-describedby` of field `name`: its message, else its hint (`hint`: it has one).
    fn described(&self, name: &str, hint: bool) -> Option<String> {
        if self.field == Some(name) {
            Some(format!("{name}-error"))
        } else {
            hint.then(|| format!("{name}-hint"))
        }
    }

    /// The message next to field `name`, if it is the wrong one.
    fn note(&self, name: &str) -> Markup {
        html! {
            @if self.field == Some(name) {
                span.field-error id={ (name) "-error" } { (self.message) }
            }
        }
    }
}

/// The create form's date pattern (ISO dates, or a date and time without seconds).
const DATE_PATTERN: &str = r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?";

/// The create form, filled from `form` (a refused or previewed create shows its values
/// again), with `note` (a preview or an error) above it and the `invalid` field marked.
fn new_page(
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
const REPROCESS: [(&str, &str); 3] = [
    ("completed", "Run them again (default)"),
    ("failed", "Re-run only the failed ones"),
    ("none", "Skip them"),
];

/// The create form's `emit_asset_events` choices (value, label); empty: the configured
/// default.
const ASSET_EVENTS: [(&str, &str); 3] = [
    ("", "As configured (default)"),
    ("true", "Emit them"),
    ("false", "Do not emit them"),
];

/// What a dry run found: the dates (the first 200 listed), the time estimate and the tasks
/// the patterns match.
fn preview_note(
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

async fn dags_of(state: &State, session: &Session) -> Result<Vec<String>, ApiError> {
    let username = session.username.clone();
    state
        .ask(|reply| WebCommand::Dags { username, reply })
        .await
}

async fn new_form(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    let dags = dags_of(&state, &session).await;
    new_page(
        state.base(),
        &session,
        &dags,
        &FormData::new(),
        html! {},
        Invalid::default(),
    )
    .into_response()
}

/// A list field of the form (`tasks`, `after`): items separated by white space or commas
/// (a comma inside `{}` or `[]` belongs to a pattern: `a{1,3}`).
fn list_items(text: &str) -> Vec<String> {
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
fn task_matches(patterns: &[String], task_ids: &[String]) -> Result<Vec<String>, String> {
    let checked = crate::taskset::check_patterns(patterns)?;
    crate::taskset::select(&checked, task_ids).map_err(|e| e.to_string())
}

/// The v2 JSON body of the create form.
fn form_body(form: &FormData) -> Result<Map<String, Value>, ApiError> {
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
    for key in ["tasks", "after"] {
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
fn refusal(record: &RequestRecord) -> ApiError {
    let code = record
        .reason_code
        .as_ref()
        .map(super::reason_name)
        .unwrap_or_default();
    ApiError::rejected(&code, record.reason.clone().unwrap_or_default())
}

async fn tasks_of(state: &State, session: &Session, dag_id: &str) -> Result<Vec<String>, ApiError> {
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
async fn tasks(
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

async fn create(
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
        if record.outcome != "accepted" {
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

/// One backfill: its facts (rows without a value left out), the actions this user may take,
/// and every logical date's state, with links into Airflow's UI when `airflow` is known;
/// `note` (an action's outcome) above them. The facts, actions and dates are the `#live`
/// region the script refreshes while the backfill is active.
fn detail_page(
    base: &str,
    session: &Session,
    d: &WebDetail,
    note: Markup,
    airflow: Option<&AirflowUi<'_>>,
) -> Html<String> {
    let b = &d.backfill;
    let v = &b.view;
    let o = &v.options;
    let params =
        (!v.params.is_empty()).then(|| serde_json::to_string_pretty(&v.params).unwrap_or_default());
    let description = v.description.as_deref().filter(|s| !s.trim().is_empty());
    let body = html! {
        h2 { (v.id) }
        (note)
        div id="live" data-active=(u8::from(is_active(b))) {
        table.facts {
            tr { th scope="row" { "State" } td { (state_badge(&v.state)) } }
            tr { th scope="row" { "Progress" } td { (progress_bar(b)) } }
            @if let Some(w) = &b.waiting {
                tr { th scope="row" { "Waiting" } td { span id="waiting" { (w) } } }
            }
            @if let Some(e) = &v.estimate {
                tr {
                    th scope="row" { "Time left" }
                    td id="estimate" {
                        @if let (Some(secs), Some(at)) = (e.remaining_secs, &e.finish_at) {
                            "About " (crate::estimate::human(secs as f64)) ", done around " (when(at))
                            br;
                        }
                        small { (e.basis) }
                    }
                }
            }
            @if let Some(r) = &v.reason {
                tr { th scope="row" { "Reason" } td { (r) } }
            }
            tr {
                th scope="row" { "DAG" }
                td {
                    (v.dag_id)
                    @if let Some(ui) = airflow {
                        " " a.ext id="airflow-dag" href=(ui.dag(&v.dag_id)) { "in Airflow" }
                        " · " a.ext id="airflow-copy" href=(ui.dag(&v.id)) { "its copy" }
                    }
                }
            }
            tr { th scope="row" { "Dates" } td.nowrap { (when(&v.start)) " – " (when(&v.end)) } }
            @if let Some(desc) = description {
                tr { th scope="row" { "Description" } td { (desc) } }
            }
            @if !o.tasks.is_empty() {
                tr {
                    th scope="row" { "Tasks" }
                    td {
                        (o.task_ids.join(", "))
                        @if o.include_upstream { ", with their upstream tasks" }
                        @if o.include_downstream { ", with their downstream tasks" }
                        br; small { "Patterns: " (o.tasks.join(", ")) }
                    }
                }
            }
            tr { th scope="row" { "Runs at a time" } td { (v.max_active_runs) } }
            @if o.priority != 0 {
                tr { th scope="row" { "Priority" } td { (o.priority) } }
            }
            @if !o.after.is_empty() {
                tr {
                    th scope="row" { "After" }
                    td {
                        @for (i, a) in o.after.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "backfills/" (url(a)) } { (a) }
                        }
                    }
                }
            }
            @if let Some(at) = &v.scheduled_at {
                tr { th scope="row" { "Starts at" } td { (when(at)) } }
            }
            @if let Some(at) = &v.delete_at {
                tr { th scope="row" { "Deleted on" } td { (when(at)) } }
            }
            @if let Some(p) = &params {
                tr { th scope="row" { "Params" } td { pre { code { (p) } } } }
            }
            tr { th scope="row" { "Submitted" } td { (when(&v.submitted_at)) " by " (v.submitted_by) } }
        }
        @if !b.allowed_actions.is_empty() {
            div.actions {
                @for a in &b.allowed_actions {
                    (action_form(&v.id, *a, &session.csrf))
                }
            }
        }
        h3 { "Logical dates" }
        div.scroll {
        table id="dates" {
            thead {
                tr {
                    th scope="col" { "Logical date" } th scope="col" { "State" }
                    th scope="col" { "Started" } th scope="col" { "Ended" }
                    @if airflow.is_some() { th scope="col" { "In Airflow" } }
                }
            }
            tbody {
                @for s in &d.date_states {
                    tr data-date=(s.logical_date) {
                        td.nowrap { (when(&s.logical_date)) }
                        td { (badge(s.state)) }
                        td.nowrap { @if let Some(t) = &s.start { (when(t)) } }
                        td.nowrap { @if let Some(t) = &s.end { (when(t)) } }
                        @if let Some(ui) = airflow {
                            td {
                                @if let Some(run) = &s.run_id {
                                    a.ext.run href=(ui.run(&v.id, run)) { "Run" }
                                    @for t in &s.failed_tasks {
                                        " · "
                                        a.ext.log href=(ui.task_log(&v.id, run, &s.logical_date, &t.task_id, t.map_index)) {
                                            "Log of " (t.task_id)
                                            @if t.map_index >= 0 { " [" (t.map_index) "]" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        }
        }
    };
    page(base, &v.id, Some(session), body)
}

/// The button of one life-cycle action on backfill `id` (a reject says why: required, as in
/// request files).
fn action_form(id: &str, a: Action, csrf: &str) -> Markup {
    let name = a.as_str();
    let class = if matches!(a, Action::Cancel | Action::Delete | Action::Reject) {
        format!("{name} danger")
    } else {
        name.to_owned()
    };
    html! {
        form method="post" action={ "backfills/" (url(id)) "/" (name) } class="inline" {
            input type="hidden" name="csrf" value=(csrf);
            @if a == Action::Reject {
                input name="reason" id="reject-reason" placeholder="why" required;
                " "
            }
            button id={ "action-" (name) } class=(class) { (capitalize(name)) }
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn fetch_detail(state: &State, session: &Session, id: &str) -> Result<WebDetail, ApiError> {
    let (username, id) = (session.username.clone(), id.to_owned());
    state
        .ask(|reply| WebCommand::Get {
            username,
            id,
            reply,
        })
        .await
}

async fn detail(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    match fetch_detail(&state, &session, &id).await {
        Ok(d) => {
            let ui = AirflowUi::new(&state.airflow_urls, d.airflow3);
            detail_page(state.base(), &session, &d, html! {}, ui.as_ref()).into_response()
        }
        Err(e) => (
            e.status,
            page(state.base(), "Backfill", Some(&session), error_box(&e)),
        )
            .into_response(),
    }
}

async fn act(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    if let Err(r) = check_csrf(state.base(), &session, &form) {
        return *r;
    }
    if ![
        "cancel", "pause", "resume", "delete", "retry", "approve", "reject",
    ]
    .contains(&action.as_str())
    {
        return (
            StatusCode::NOT_FOUND,
            page(
                state.base(),
                "Not found",
                Some(&session),
                html! { p.error { "No such action." } },
            ),
        )
            .into_response();
    }
    let mut request = action_request(&action, &id);
    if action == "reject" {
        let reason = form.get("reason").map(|r| r.trim()).unwrap_or_default();
        request.insert("reason".into(), toml::Value::String(reason.to_owned()));
    }
    let outcome = state.submit(&session.username, request).await;
    let note = match &outcome {
        Ok(r) if r.outcome == "accepted" => {
            if let Some(new_id) = r.backfill_id.as_ref().filter(|n| **n != id) {
                return Redirect::to(&format!("{}/backfills/{}", state.base(), url(new_id)))
                    .into_response();
            }
            html! { p.ok role="status" { (capitalize(&action)) " accepted." } }
        }
        Ok(r) => error_box(&refusal(r)),
        Err(e) => error_box(e),
    };
    match fetch_detail(&state, &session, &id).await {
        Ok(d) => {
            let ui = AirflowUi::new(&state.airflow_urls, d.airflow3);
            detail_page(state.base(), &session, &d, note, ui.as_ref()).into_response()
        }
        Err(e) => (
            e.status,
            page(
                state.base(),
                "Backfill",
                Some(&session),
                html! { (note) (error_box(&e)) },
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
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
        assert!(task_matches(&list_items("nothing"), &ids)
            .is_err_and(|e| e.contains("matches no task")));
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

        let Html(login) = login_page(&base, None, Some(&hostile_error("login_error")));
        assert_escaped(&login, &["base", "login_error", "login_error_code"]);
        let Html(off) = login_page(&base, Some(&hostile("why_off")), None);
        assert_escaped(&off, &["base", "why_off"]);

        let b = backfill();
        let filter = ListFilter {
            dag: hostile("filter_dag"),
            state: hostile("filter_state"),
            include_deleted: true,
        };
        let Html(list) = list_page(&base, &s, &filter, Ok(&[&b]));
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

    #[test]
    fn list_renders_the_rows_given() {
        let mut b = backfill();
        b.view.id = "sales_backfill_1".into();
        let s = session();
        let filter = ListFilter::default();
        let Html(empty) = list_page("", &s, &filter, Ok(&[]));
        assert!(empty.contains("No backfills."), "{empty}");
        let Html(one) = list_page("", &s, &filter, Ok(&[&b]));
        assert!(
            one.contains(
                "<tr data-id=\"sales_backfill_1\"><td><a href=\"backfills/sales_backfill_1\">"
            ),
            "{one}"
        );
        assert!(one.contains("class=\"bar\""), "{one}");
        assert!(one.contains("id=\"live\" data-active=\"1\""), "{one}");
        b.view.state = crate::state::BackfillState::Success;
        let Html(done) = list_page("", &s, &filter, Ok(&[&b]));
        assert!(done.contains("data-active=\"0\""), "{done}");
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
            page.contains(
                "class=\"local\" title=\"2024-03-01T06:30:00Z\">2024-03-01 06:30 UTC</time>"
            ),
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
}
