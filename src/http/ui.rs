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
use super::api::{action_request, cursor_param, state_param, v2_request};
use super::auth::{csrf_ok, Session};
use super::present::{self, Problem};
use super::{ApiError, State};
use crate::authz::Action;
use crate::control::RequestView;
use crate::engine::web::{PageRequest, WebBackfill, WebCommand, WebDetail, WebPage};
use crate::metadb::store::ListQuery;

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

/// To the login form, coming back to `next` (a page under `base`, see [`next_page`]) after.
fn to_login_then(base: &str, next: &str) -> Response {
    Redirect::to(&format!("{base}/login?next={}", url(next))).into_response()
}

/// A page to go to after logging in, relative to the UI's base: only the create form and a
/// backfill's page (so a link cannot send the browser elsewhere), in URL characters only.
fn next_page(next: &str) -> Option<&str> {
    let known = next == "new" || next.starts_with("new?") || next.starts_with("backfills/");
    let plain = next
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~%?=&/".contains(&b));
    (known && plain && !next.contains("..") && !next.contains("//")).then_some(next)
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

async fn login_form(AxState(state): AxState<State>, Query(q): Query<FormData>) -> Html<String> {
    login_page_for(&state, None, q.get("next").and_then(|n| next_page(n))).await
}

/// [`login_page`] as `state` shows it, with the way to Airflow's sign-in page when there is one.
async fn login_page_for(
    state: &State,
    error: Option<&ApiError>,
    next: Option<&str>,
) -> Html<String> {
    let sign_in = airflow_sign_in(state, next).await;
    login_page(
        state.base(),
        state.password_logins_off(),
        error,
        next,
        sign_in.as_ref(),
    )
}

/// Where a signed-out user signs in while backfilld takes no passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SignInLink {
    /// Airflow's sign-in page, which comes back to backfilld's page after.
    Link(String),
    /// Why backfilld cannot link to it (the user signs in on Airflow's page by hand).
    Unknown(String),
}

/// The link from the login page to Airflow's sign-in page (FAB's), coming back to `next` (a
/// page under the UI's base, see [`next_page`]; the list without one): only while password
/// logins are off and Airflow's sign-in carries over to backfilld (`[http] airflow_sessions`
/// with what checks this major's sign-in); `None` otherwise. The page it comes back to is a
/// path on this site that backfilld built, never one taken from the request as it came.
async fn airflow_sign_in(state: &State, next: Option<&str>) -> Option<SignInLink> {
    state.password_logins_off()?;
    if !state.http.airflow_sessions {
        return None;
    }
    let found = match state.ask(|reply| WebCommand::SignIn { reply }).await {
        Ok(f) => f,
        Err(e) => {
            return Some(SignInLink::Unknown(format!(
                "backfilld cannot tell which Airflow signs you in right now ({})",
                e.detail
            )))
        }
    };
    let carries_over = if found.airflow3 {
        state.tokens.is_some()
    } else {
        state.airflow_sessions.is_some()
    };
    let link = if !carries_over {
        SignInLink::Unknown(
            "backfilld cannot check Airflow's sign-in here (its log says why)".to_owned(),
        )
    } else if !found.fab {
        SignInLink::Unknown(
            "backfilld links only to FAB's sign-in page, and Airflow uses another auth manager"
                .to_owned(),
        )
    } else {
        match AirflowUi::new(&state.airflow_urls, found.airflow3) {
            Some(ui) => SignInLink::Link(ui.fab_login(&format!(
                "{}/{}",
                state.base(),
                next.unwrap_or("")
            ))),
            None => SignInLink::Unknown(format!(
                "backfilld does not know where Airflow's UI is (set {} in airflow.cfg to an http(s) URL)",
                if found.airflow3 {
                    "[api] base_url"
                } else {
                    "[webserver] base_url"
                }
            )),
        }
    };
    Some(link)
}

/// The login form, or why there is none (`password_off`: password logins are off) with the
/// way to Airflow's sign-in page (`sign_in`); `next`: the page to go to after it.
fn login_page(
    base: &str,
    password_off: Option<&str>,
    error: Option<&ApiError>,
    next: Option<&str>,
    sign_in: Option<&SignInLink>,
) -> Html<String> {
    let body = match password_off {
        Some(why) => html! {
            h2 { "Log in" }
            @if let Some(e) = error { (error_box(e)) }
            p.error id="no-passwords" { "backfilld accepts no passwords: " (why) "." }
            @match sign_in {
                Some(SignInLink::Link(href)) => {
                    p { a.button id="airflow-sign-in" href=(href) { "Sign in with Airflow" } }
                    p.hint { "Airflow's sign-in page brings you back here after you sign in." }
                }
                Some(SignInLink::Unknown(why)) => {
                    p.error id="no-sign-in-link" {
                        "Sign in on Airflow's own page, then come back here: " (why) "."
                    }
                }
                None => {}
            }
        },
        None => html! {
            h2 { "Log in with your Airflow account" }
            @if let Some(e) = error { (error_box(e)) }
            form method="post" action="login" class="card" {
                @if let Some(n) = next { input type="hidden" name="next" value=(n); }
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
            let next = form.get("next").and_then(|n| next_page(n)).unwrap_or("");
            (
                [(header::SET_COOKIE, cookie)],
                Redirect::to(&format!("{base}/{next}")),
            )
                .into_response()
        }
        Err(e) => {
            let next = form.get("next").and_then(|n| next_page(n));
            (e.status, login_page_for(&state, Some(&e), next).await).into_response()
        }
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

/// Backfills in one page of the list.
const LIST_PAGE_SIZE: usize = 100;

/// The list page's filters, from its query string.
#[derive(Debug, Default)]
struct ListFilter {
    /// Only this DAG's backfills (empty: all).
    dag: String,
    /// Only backfills in this state (empty: any).
    state: String,
    /// Deleted backfills too.
    include_deleted: bool,
    /// Start after this backfill (the cursor of the previous page's "Older" link).
    after: String,
}

impl ListFilter {
    fn from_query(q: &FormData) -> ListFilter {
        let text = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        ListFilter {
            dag: text("dag_id"),
            state: text("state"),
            include_deleted: q.get("include_deleted").is_some_and(|v| v == "1"),
            after: text("after"),
        }
    }

    /// The page the engine reads: the filters applied by the DB, by keyset from `after`.
    fn page_request(&self) -> Result<PageRequest, ApiError> {
        let state = state_param(Some(&self.state))?;
        let cursor = cursor_param(Some(&self.after))?;
        Ok(PageRequest {
            query: ListQuery {
                include_deleted: self.include_deleted,
                dag_id: Some(self.dag.clone()).filter(|d| !d.is_empty()),
                state,
                since: None,
            },
            dates_within: None,
            cursor,
            skip: 0,
            limit: LIST_PAGE_SIZE,
            count: false,
        })
    }

    /// The list's URL with these filters, starting after `after` (none: the newest page).
    fn href(&self, after: Option<&str>) -> String {
        let mut pairs = Vec::new();
        if !self.dag.is_empty() {
            pairs.push(format!("dag_id={}", url(&self.dag)));
        }
        if !self.state.is_empty() {
            pairs.push(format!("state={}", url(&self.state)));
        }
        if self.include_deleted {
            pairs.push("include_deleted=1".to_owned());
        }
        if let Some(a) = after {
            pairs.push(format!("after={}", url(a)));
        }
        format!("./?{}", pairs.join("&"))
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
    let page = match filter.page_request() {
        Ok(page) => {
            let username = session.username.clone();
            state
                .ask(|reply| WebCommand::ListPage {
                    username,
                    page,
                    reply,
                })
                .await
        }
        Err(e) => Err(e),
    };
    list_page(state.base(), &session, &filter, page.as_ref()).into_response()
}

/// The list page: the filter form, then one page of rows (or the error that stands for
/// them) with links to the older ones and back to the newest.
fn list_page(
    base: &str,
    session: &Session,
    filter: &ListFilter,
    shown: Result<&WebPage, &ApiError>,
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
        @match shown {
            Err(e) => (error_box(e)),
            Ok(shown) => {
                @let rows: Vec<&WebBackfill> = shown.backfills.iter().collect();
                div id="live" data-active=(u8::from(rows.iter().any(|b| is_active(b)))) {
                    (backfills_table(&rows))
                }
                @if shown.next.is_some() || !filter.after.is_empty() {
                    nav.pages {
                        @if !filter.after.is_empty() {
                            a href=(filter.href(None)) { "Newest" }
                            " "
                        }
                        @if let Some(next) = &shown.next {
                            a href=(filter.href(Some(&next.encode()))) rel="next" { "Older backfills" }
                        }
                    }
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
        return to_login_then(state.base(), &format!("backfills/{}", url(&id)));
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
