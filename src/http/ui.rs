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
use crate::control::RequestView;
use crate::engine::web::{WebBackfill, WebCommand, WebDetail};

const COOKIE: &str = "backfilld_session";
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("ui.js");

mod form;
use form::*;

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
        Ok(r) if r.outcome.is_accepted() => {
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
mod tests;
