//! The web UI: server-rendered HTML with its stylesheet in the binary (no CDN, no script).
//! A login form starts a session (cookie `backfilld_session`: HttpOnly, SameSite=Strict, Secure
//! over TLS); every state-changing form carries the session's CSRF token. Creates and actions
//! go through [`super::AppState::submit`], like the API.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{Map, Value};

use super::api::{action_request, v2_request};
use super::auth::{csrf_ok, Session};
use super::{ApiError, State};
use crate::authz::Action;
use crate::engine::web::{WebBackfill, WebCommand, WebDetail};

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

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

fn page(base: &str, title: &str, user: Option<&Session>, body: &str) -> Html<String> {
    let nav = match user {
        Some(s) => format!(
            "<nav><a href=\"./\">Backfills</a> <a href=\"new\">New backfill</a><span class=\"who\">{}</span>\
             <form method=\"post\" action=\"logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form></nav>",
            esc(&s.username),
            esc(&s.csrf)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · backfilld</title>\
         <base href=\"{}/\"><link rel=\"stylesheet\" href=\"static/style.css\"></head><body><header><h1>backfilld</h1>{nav}</header><main>{body}</main></body></html>",
        esc(title),
        esc(base)
    ))
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

fn error_box(e: &ApiError) -> String {
    let code = e
        .reason_code
        .as_deref()
        .map(|c| format!(" <code>{}</code>", esc(c)))
        .unwrap_or_default();
    format!(
        "<p class=\"error\" role=\"alert\">{}{code}: {}</p>",
        e.status.as_u16(),
        esc(&e.detail)
    )
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response()
}

async fn login_form(AxState(state): AxState<State>) -> Html<String> {
    login_page(&state, None)
}

fn login_page(state: &State, error: Option<&ApiError>) -> Html<String> {
    let err = error.map(error_box).unwrap_or_default();
    if let Some(why) = state.password_logins_off() {
        return page(
            state.base(),
            "Log in",
            None,
            &format!(
                "<h2>Log in</h2>{err}<p class=\"error\" id=\"no-passwords\">backfilld accepts no passwords: {}.</p>",
                esc(why)
            ),
        );
    }
    page(
        state.base(),
        "Log in",
        None,
        &format!(
            "<h2>Log in with your Airflow account</h2>{err}<form method=\"post\" action=\"login\" class=\"card\">\
             <label>User <input name=\"username\" id=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button id=\"login\">Log in</button></form>"
        ),
    )
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
        Err(e) => (e.status, login_page(&state, Some(&e))).into_response(),
    }
}

fn check_csrf(base: &str, session: &Session, form: &FormData) -> Result<(), Box<Response>> {
    if csrf_ok(session, form.get("csrf").map(String::as_str).unwrap_or("")) {
        Ok(())
    } else {
        Err(Box::new((
            StatusCode::FORBIDDEN,
            page(base, "Forbidden", Some(session), "<p class=\"error\">The form's CSRF token is missing or stale; reload the page and try again.</p>"),
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

fn progress_bar(b: &WebBackfill) -> String {
    let v = &b.view;
    let total = v.dates_total.max(1);
    let pct = |n: u32| f64::from(n) * 100.0 / f64::from(total);
    format!(
        "<div class=\"bar\" title=\"{} of {} dates succeeded, {} failed, {} running\" role=\"progressbar\" aria-valuemin=\"0\" aria-valuemax=\"{}\" aria-valuenow=\"{}\">\
         <span class=\"ok\" style=\"width:{:.1}%\"></span><span class=\"bad\" style=\"width:{:.1}%\"></span><span class=\"run\" style=\"width:{:.1}%\"></span></div>\
         <small>{}/{}</small>",
        v.dates_succeeded,
        v.dates_total,
        v.dates_failed,
        v.dates_running,
        v.dates_total,
        v.dates_succeeded + v.dates_failed,
        pct(v.dates_succeeded),
        pct(v.dates_failed),
        pct(v.dates_running),
        v.dates_succeeded + v.dates_failed,
        v.dates_total
    )
}

fn state_badge(state: &impl serde::Serialize) -> String {
    let s = super::reason_name(state);
    format!("<span class=\"state {s}\">{s}</span>")
}

async fn list(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Query(q): Query<FormData>,
) -> Response {
    let Some((_, session)) = session_of(&state, &headers).await else {
        return to_login(state.base());
    };
    let dag = q.get("dag_id").cloned().unwrap_or_default();
    let wanted = q.get("state").cloned().unwrap_or_default();
    let include_deleted = q.get("include_deleted").is_some_and(|v| v == "1");
    let username = session.username.clone();
    let rows = state
        .ask(|reply| WebCommand::List {
            username,
            include_deleted,
            reply,
        })
        .await;
    let mut body = String::from("<h2>Backfills</h2>");
    let _ = write!(
        body,
        "<form method=\"get\" action=\"./\" class=\"filters\"><label>DAG <input name=\"dag_id\" value=\"{}\"></label>\
         <label>State <select name=\"state\"><option value=\"\">any</option>",
        esc(&dag)
    );
    for s in [
        "awaiting_approval",
        "submitted",
        "queued",
        "running",
        "paused",
        "success",
        "failed",
        "cancelled",
    ] {
        let sel = if s == wanted { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{s}</option>");
    }
    let _ = write!(
        body,
        "</select></label><label><input type=\"checkbox\" name=\"include_deleted\" value=\"1\"{}> deleted too</label><button>Filter</button></form>",
        if include_deleted { " checked" } else { "" }
    );
    match rows {
        Err(e) => body.push_str(&error_box(&e)),
        Ok(rows) => {
            let rows: Vec<&WebBackfill> = rows
                .iter()
                .filter(|b| dag.is_empty() || b.view.dag_id == dag)
                .filter(|b| wanted.is_empty() || super::reason_name(&b.view.state) == wanted)
                .collect();
            if rows.is_empty() {
                body.push_str("<p>No backfills.</p>");
            } else {
                body.push_str("<table id=\"backfills\"><thead><tr><th>Backfill</th><th>DAG</th><th>State</th><th>Progress</th><th>Range</th><th>By</th><th>Submitted</th></tr></thead><tbody>");
                for b in rows {
                    let v = &b.view;
                    let _ = write!(
                        body,
                        "<tr data-id=\"{id}\"><td><a href=\"backfills/{uid}\">{id}</a></td><td>{dag}</td><td>{st}</td><td>{bar}</td><td>{s} – {e}</td><td>{by}</td><td>{at}</td></tr>",
                        id = esc(&v.id),
                        uid = url(&v.id),
                        dag = esc(&v.dag_id),
                        st = state_badge(&v.state),
                        bar = progress_bar(b),
                        s = esc(&v.start),
                        e = esc(&v.end),
                        by = esc(&v.submitted_by),
                        at = esc(&v.submitted_at)
                    );
                }
                body.push_str("</tbody></table>");
            }
        }
    }
    page(state.base(), "Backfills", Some(&session), &body).into_response()
}

fn new_page(
    base: &str,
    session: &Session,
    dags: &Result<Vec<String>, ApiError>,
    form: &FormData,
    note: &str,
) -> Html<String> {
    let val = |k: &str| esc(form.get(k).map(String::as_str).unwrap_or(""));
    let mut body = format!("<h2>New backfill</h2>{note}");
    let _ = write!(
        body,
        "<form method=\"post\" action=\"new\" class=\"card\" id=\"create\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>DAG <select name=\"dag_id\" id=\"dag_id\" required>",
        esc(&session.csrf)
    );
    match dags {
        Ok(dags) => {
            for d in dags {
                let sel = if form.get("dag_id") == Some(d) {
                    " selected"
                } else {
                    ""
                };
                let _ = write!(body, "<option value=\"{0}\"{sel}>{0}</option>", esc(d));
            }
        }
        Err(e) => body.push_str(&format!(
            "</select>{}<select name=\"dag_id\">",
            error_box(e)
        )),
    }
    let mar = form
        .get("max_active_runs")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("1");
    let _ = write!(
        body,
        "</select></label>\
         <label>Start <input name=\"start\" id=\"start\" type=\"date\" value=\"{}\" required></label>\
         <label>End (inclusive) <input name=\"end\" id=\"end\" type=\"date\" value=\"{}\" required></label>\
         <label>Description <input name=\"description\" id=\"description\" value=\"{}\"></label>\
         <label>Max active runs <input name=\"max_active_runs\" id=\"max_active_runs\" type=\"number\" min=\"1\" value=\"{}\"></label>\
         <label>Params (JSON object) <textarea name=\"params\" id=\"params\" rows=\"3\">{}</textarea></label>\
         <label><input type=\"checkbox\" name=\"ignore_overlap\" value=\"1\"{}> run even if it overlaps an active backfill</label>\
         <label><input type=\"checkbox\" name=\"run_backwards\" id=\"run_backwards\" value=\"1\"{}> newest date first</label>\
         <label>Dates the DAG already ran <select name=\"reprocess\" id=\"reprocess\">{}</select></label>\
         <div class=\"buttons\"><button name=\"dry_run\" value=\"1\" id=\"preview\" class=\"secondary\">Preview dates</button> <button id=\"submit\">Create backfill</button></div></form>",
        val("start"),
        val("end"),
        val("description"),
        esc(mar),
        val("params"),
        if form.get("ignore_overlap").is_some() { " checked" } else { "" },
        if form.get("run_backwards").is_some() { " checked" } else { "" },
        reprocess_options(form.get("reprocess").map(String::as_str))
    );
    page(base, "New backfill", Some(session), &body)
}

/// The `<option>`s of the create form's `reprocess` choice, `selected` marked (default
/// `completed`).
fn reprocess_options(selected: Option<&str>) -> String {
    let selected = selected.unwrap_or("completed");
    [
        ("completed", "run them again (default)"),
        ("failed", "re-run only the failed ones"),
        ("none", "skip them"),
    ]
    .iter()
    .map(|(value, label)| {
        let sel = if *value == selected { " selected" } else { "" };
        format!("<option value=\"{value}\"{sel}>{label}</option>")
    })
    .collect()
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
    new_page(state.base(), &session, &dags, &FormData::new(), "").into_response()
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
            let code = record
                .reason_code
                .as_ref()
                .map(super::reason_name)
                .unwrap_or_default();
            return Err(ApiError::rejected(
                &code,
                record.reason.clone().unwrap_or_default(),
            ));
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
                let mut note = format!(
                    "<div class=\"preview\" id=\"preview-dates\"><p>A backfill of this range would run {} logical date(s):</p><ul>",
                    dates.len()
                );
                for d in dates.iter().take(200) {
                    let _ = write!(note, "<li>{}</li>", esc(d));
                }
                if dates.len() > 200 {
                    let _ = write!(note, "<li>… and {} more</li>", dates.len() - 200);
                }
                note.push_str("</ul></div>");
                let dags = dags_of(&state, &session).await;
                new_page(state.base(), &session, &dags, &form, &note).into_response()
            }
        },
        Err(e) => {
            let dags = dags_of(&state, &session).await;
            (
                e.status,
                new_page(state.base(), &session, &dags, &form, &error_box(&e)),
            )
                .into_response()
        }
    }
}

fn detail_page(base: &str, session: &Session, d: &WebDetail, note: &str) -> Html<String> {
    let b = &d.backfill;
    let v = &b.view;
    let mut body = format!("<h2>{}</h2>{note}", esc(&v.id));
    let row = |k: &str, val: &str| format!("<tr><th>{k}</th><td>{val}</td></tr>");
    body.push_str("<table class=\"facts\">");
    body.push_str(&row("State", &state_badge(&v.state)));
    body.push_str(&row("Progress", &progress_bar(b)));
    if let Some(w) = &b.waiting {
        body.push_str(&row(
            "Waiting",
            &format!("<span id=\"waiting\">{}</span>", esc(w)),
        ));
    }
    if let Some(r) = &v.reason {
        body.push_str(&row("Reason", &esc(r)));
    }
    body.push_str(&row("DAG", &esc(&v.dag_id)));
    body.push_str(&row(
        "Range",
        &format!("{} – {}", esc(&v.start), esc(&v.end)),
    ));
    body.push_str(&row(
        "Description",
        &esc(v.description.as_deref().unwrap_or("")),
    ));
    body.push_str(&row("Max active runs", &v.max_active_runs.to_string()));
    let params = serde_json::to_string(&v.params).unwrap_or_default();
    body.push_str(&row("Params", &format!("<code>{}</code>", esc(&params))));
    body.push_str(&row(
        "Submitted",
        &format!("{} by {}", esc(&v.submitted_at), esc(&v.submitted_by)),
    ));
    body.push_str("</table>");
    if !b.allowed_actions.is_empty() {
        body.push_str("<div class=\"actions\">");
        for a in &b.allowed_actions {
            let name = a.as_str();
            let danger = if matches!(a, Action::Cancel | Action::Delete | Action::Reject) {
                " danger"
            } else {
                ""
            };
            // A reject says why (required, as in request files).
            let reason = if *a == Action::Reject {
                "<input name=\"reason\" id=\"reject-reason\" placeholder=\"why\" required> "
            } else {
                ""
            };
            let _ = write!(
                body,
                "<form method=\"post\" action=\"backfills/{}/{name}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{reason}<button id=\"action-{name}\" class=\"{name}{danger}\">{}</button></form>",
                url(&v.id),
                esc(&session.csrf),
                capitalize(name)
            );
        }
        body.push_str("</div>");
    }
    body.push_str("<h3>Logical dates</h3><table id=\"dates\"><thead><tr><th>Logical date</th><th>State</th><th>Started</th><th>Ended</th></tr></thead><tbody>");
    for s in &d.date_states {
        let _ = write!(
            body,
            "<tr><td>{}</td><td><span class=\"state {st}\">{st}</span></td><td>{}</td><td>{}</td></tr>",
            esc(&s.logical_date),
            esc(s.start.as_deref().unwrap_or("")),
            esc(s.end.as_deref().unwrap_or("")),
            st = s.state
        );
    }
    body.push_str("</tbody></table>");
    page(base, &v.id, Some(session), &body)
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
        Ok(d) => detail_page(state.base(), &session, &d, "").into_response(),
        Err(e) => (
            e.status,
            page(state.base(), "Backfill", Some(&session), &error_box(&e)),
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
                "<p class=\"error\">No such action.</p>",
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
            format!(
                "<p class=\"ok\" role=\"status\">{} accepted.</p>",
                capitalize(&action)
            )
        }
        Ok(r) => {
            let code = r
                .reason_code
                .as_ref()
                .map(super::reason_name)
                .unwrap_or_default();
            error_box(&ApiError::rejected(
                &code,
                r.reason.clone().unwrap_or_default(),
            ))
        }
        Err(e) => error_box(e),
    };
    match fetch_detail(&state, &session, &id).await {
        Ok(d) => detail_page(state.base(), &session, &d, &note).into_response(),
        Err(e) => (
            e.status,
            page(
                state.base(),
                "Backfill",
                Some(&session),
                &format!("{note}{}", error_box(&e)),
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("a b/ü"), "a%20b%2F%C3%BC");
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
}
