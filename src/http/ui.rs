//! The web UI: server-rendered HTML with its stylesheet in the binary (no CDN, no script).
//! Pages are `maud` templates, checked at compile time: every interpolated value is escaped
//! (no page builds markup from strings by hand), so a value cannot become markup.
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

use super::api::{action_request, v2_request};
use super::auth::{csrf_ok, Session};
use super::{ApiError, State};
use crate::authz::Action;
use crate::engine::web::{WebBackfill, WebCommand, WebDetail};
use crate::metadb::store::RequestRecord;

const COOKIE: &str = "backfilld_session";
const STYLE: &str = include_str!("style.css");

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
        .route("/static/style.css", get(style))
}

/// Percent-encode a path segment or query value.
fn url(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A whole page: the header (with the user's navigation when logged in) around `body`.
fn page(base: &str, title: &str, user: Option<&Session>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · backfilld" }
                base href={ (base) "/" };
                link rel="stylesheet" href="static/style.css";
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

/// An error as a page shows it: status, reason code and detail.
fn error_box(e: &ApiError) -> Markup {
    html! {
        p.error role="alert" {
            (e.status.as_u16())
            @if let Some(code) = &e.reason_code {
                " " code { (code) }
            }
            ": " (e.detail)
        }
    }
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
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

/// A state as a coloured badge (`state` is a state name, styled by `span.state.<name>`).
fn badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
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
                        option selected[s == filter.state] { (s) }
                    }
                }
            }
            label {
                input type="checkbox" name="include_deleted" value="1" checked[filter.include_deleted];
                " deleted too"
            }
            button { "Filter" }
        }
        @match rows {
            Err(e) => (error_box(e)),
            Ok(rows) => (backfills_table(rows)),
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
            table id="backfills" {
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
                            td { (v.start) " – " (v.end) }
                            td { (v.submitted_by) }
                            td { (v.submitted_at) }
                        }
                    }
                }
            }
        }
    }
}

/// The create form, filled from `form` (a refused or previewed create shows its values
/// again), with `note` (a preview or an error) above it.
fn new_page(
    base: &str,
    session: &Session,
    dags: &Result<Vec<String>, ApiError>,
    form: &FormData,
    note: Markup,
) -> Html<String> {
    let val = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let mar = Some(val("max_active_runs"))
        .filter(|s| !s.is_empty())
        .unwrap_or("1");
    let selected = form
        .get("reprocess")
        .map(String::as_str)
        .unwrap_or("completed");
    let body = html! {
        h2 { "New backfill" }
        (note)
        form method="post" action="new" class="card" id="create" {
            input type="hidden" name="csrf" value=(session.csrf);
            label {
                "DAG "
                select name="dag_id" id="dag_id" required {
                    @if let Ok(dags) = dags {
                        @for d in dags {
                            option value=(d) selected[form.get("dag_id") == Some(d)] { (d) }
                        }
                    }
                }
                @if let Err(e) = dags {
                    (error_box(e))
                    select name="dag_id" {}
                }
            }
            label { "Start " input name="start" id="start" type="date" value=(val("start")) required; }
            label {
                "End (inclusive) "
                input name="end" id="end" type="date" value=(val("end")) required;
            }
            label { "Description " input name="description" id="description" value=(val("description")); }
            label {
                "Max active runs "
                input name="max_active_runs" id="max_active_runs" type="number" min="1" value=(mar);
            }
            label {
                "Params (JSON object) "
                textarea name="params" id="params" rows="3" { (val("params")) }
            }
            label {
                input type="checkbox" name="ignore_overlap" value="1" checked[form.contains_key("ignore_overlap")];
                " run even if it overlaps an active backfill"
            }
            label {
                input type="checkbox" name="run_backwards" id="run_backwards" value="1"
                    checked[form.contains_key("run_backwards")];
                " newest date first"
            }
            label {
                "Dates the DAG already ran "
                select name="reprocess" id="reprocess" {
                    @for (value, label) in REPROCESS {
                        option value=(value) selected[value == selected] { (label) }
                    }
                }
            }
            div.buttons {
                button name="dry_run" value="1" id="preview" class="secondary" { "Preview dates" }
                " "
                button id="submit" { "Create backfill" }
            }
        }
    };
    page(base, "New backfill", Some(session), body)
}

/// The create form's `reprocess` choices (value, label); `completed` is the default.
const REPROCESS: [(&str, &str); 3] = [
    ("completed", "run them again (default)"),
    ("failed", "re-run only the failed ones"),
    ("none", "skip them"),
];

/// The dates a dry run found, the first 200 listed.
fn preview_note(dates: &[String]) -> Markup {
    const SHOWN: usize = 200;
    html! {
        div.preview id="preview-dates" {
            p { "A backfill of this range would run " (dates.len()) " logical date(s):" }
            ul {
                @for d in dates.iter().take(SHOWN) {
                    li { (d) }
                }
                @if dates.len() > SHOWN {
                    li { "… and " (dates.len() - SHOWN) " more" }
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
    new_page(state.base(), &session, &dags, &FormData::new(), html! {}).into_response()
}

/// The v2 JSON body of the create form.
fn form_body(form: &FormData) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    for key in ["dag_id", "start", "end", "description"] {
        if let Some(v) = form.get(key).filter(|v| !v.trim().is_empty()) {
            m.insert(key.into(), Value::String(v.trim().to_owned()));
        }
    }
    if let Some(v) = form.get("max_active_runs").filter(|v| !v.trim().is_empty()) {
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request("max active runs must be a number"))?;
        m.insert("max_active_runs".into(), Value::from(n));
    }
    if let Some(p) = form.get("params").filter(|v| !v.trim().is_empty()) {
        let v: Value = serde_json::from_str(p)
            .map_err(|e| ApiError::bad_request(format!("params must be a JSON object: {e}")))?;
        m.insert("params".into(), v);
    }
    if form.contains_key("ignore_overlap") {
        m.insert("ignore_overlap".into(), Value::Bool(true));
    }
    if form.contains_key("run_backwards") {
        m.insert("run_backwards".into(), Value::Bool(true));
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
                let dags = dags_of(&state, &session).await;
                new_page(state.base(), &session, &dags, &form, preview_note(&dates)).into_response()
            }
        },
        Err(e) => {
            let dags = dags_of(&state, &session).await;
            (
                e.status,
                new_page(state.base(), &session, &dags, &form, error_box(&e)),
            )
                .into_response()
        }
    }
}

/// One backfill: its facts, the actions this user may take, and every logical date's state;
/// `note` (an action's outcome) above them.
fn detail_page(base: &str, session: &Session, d: &WebDetail, note: Markup) -> Html<String> {
    let b = &d.backfill;
    let v = &b.view;
    let params = serde_json::to_string(&v.params).unwrap_or_default();
    let body = html! {
        h2 { (v.id) }
        (note)
        table.facts {
            tr { th { "State" } td { (state_badge(&v.state)) } }
            tr { th { "Progress" } td { (progress_bar(b)) } }
            @if let Some(w) = &b.waiting {
                tr { th { "Waiting" } td { span id="waiting" { (w) } } }
            }
            @if let Some(e) = &v.estimate {
                tr {
                    th { "Time left" }
                    td id="estimate" {
                        @if let (Some(secs), Some(at)) = (e.remaining_secs, &e.finish_at) {
                            "about " (crate::estimate::human(secs as f64)) ", done around " (at)
                            br;
                        }
                        small { (e.basis) }
                    }
                }
            }
            @if let Some(r) = &v.reason {
                tr { th { "Reason" } td { (r) } }
            }
            tr { th { "DAG" } td { (v.dag_id) } }
            tr { th { "Range" } td { (v.start) " – " (v.end) } }
            tr { th { "Description" } td { (v.description.as_deref().unwrap_or("")) } }
            tr { th { "Max active runs" } td { (v.max_active_runs) } }
            tr { th { "Params" } td { code { (params) } } }
            tr { th { "Submitted" } td { (v.submitted_at) " by " (v.submitted_by) } }
        }
        @if !b.allowed_actions.is_empty() {
            div.actions {
                @for a in &b.allowed_actions {
                    (action_form(&v.id, *a, &session.csrf))
                }
            }
        }
        h3 { "Logical dates" }
        table id="dates" {
            thead {
                tr { th { "Logical date" } th { "State" } th { "Started" } th { "Ended" } }
            }
            tbody {
                @for s in &d.date_states {
                    tr {
                        td { (s.logical_date) }
                        td { (badge(s.state)) }
                        td { (s.start.as_deref().unwrap_or("")) }
                        td { (s.end.as_deref().unwrap_or("")) }
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
        Ok(d) => detail_page(state.base(), &session, &d, html! {}).into_response(),
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
        Ok(d) => detail_page(state.base(), &session, &d, note).into_response(),
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
    fn percent_encodes() {
        assert_eq!(url("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(url("<\"&'>"), "%3C%22%26%27%3E");
    }

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

    /// `html` shows every tagged value escaped and none raw: no script element, no quote
    /// after a tag (an attribute cannot be closed early), every `&` starts an entity.
    fn assert_escaped(html: &str, tags: &[&str]) {
        assert!(!html.contains("<script"), "{html}");
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
        ]
        .into_iter()
        .map(|k| (k.to_owned(), hostile(&format!("form_{k}"))))
        .chain([("reprocess".to_owned(), hostile("form_reprocess"))])
        .collect();
        let dags = Ok(vec![hostile("form_dag_id"), hostile("other_dag")]);
        let note = preview_note(&[hostile("preview_date")]);
        let Html(new) = new_page(&base, &s, &dags, &form, note);
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
                "preview_date",
            ],
        );
        let Html(new_error) = new_page(
            &base,
            &s,
            &Err(hostile_error("dags_error")),
            &form,
            error_box(&hostile_error("create_error")),
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
            }],
        };
        let Html(detail) = detail_page(&base, &s, &d, error_box(&hostile_error("act_error")));
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
                "act_error",
                "act_error_code",
                "finish_at",
                "basis",
            ],
        );
        // Params are shown as JSON (whose quotes are backslash-escaped), escaped again.
        assert!(detail.contains("&lt;script&gt;tag-param_value\\&quot;&amp;'&lt;/script&gt;"));
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
    }
}
