//! The REST API: the seed plugin's `/api/v1/plugins/backfills` (same paths, verbs, fields and
//! error shapes) and backfilld's `/api/v2` (life-cycle actions, dry runs, per-date progress,
//! why-waiting; described by [`super::openapi`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{ApiError, State};
use crate::engine::web::{PageRequest, WebBackfill, WebCommand, WebDetail, WebPage};
use crate::metadb::store::ListQuery;
use crate::metadb::store::RequestRecord;
use crate::paging::{self, PageKey};
use crate::state::BackfillState;

/// Where Airflow's REST API documents its error types (the seed's `type` links).
const ERRORS_DOC: &str = "https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html#section/Errors/";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let kind = match self.status.as_u16() {
            400 => "BadRequest",
            401 => "Unauthenticated",
            403 => "PermissionDenied",
            404 => "NotFound",
            409 => "AlreadyExists",
            _ => "Unknown",
        };
        let mut body = json!({
            "detail": self.detail,
            "status": self.status.as_u16(),
            "title": title,
            "type": format!("{ERRORS_DOC}{kind}"),
        });
        if let (Some(code), Some(obj)) = (&self.reason_code, body.as_object_mut()) {
            obj.insert("reason_code".into(), Value::String(code.clone()));
        }
        // No `WWW-Authenticate: Basic` on a 401: browsers would prompt and then cache the
        // typed credentials for every later request to this site.
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Refuse state-changing API calls a cross-site page could have made (see
/// [`super::csrf::refusal`]).
async fn csrf_guard(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match super::csrf::refusal(request.method(), request.headers()) {
        Some((status, why)) => ApiError::new(status, why).into_response(),
        None => next.run(request).await,
    }
}

/// The API routes.
pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v1/plugins/backfills", get(v1_list).post(v1_create))
        .route(
            "/api/v1/plugins/backfills/{id}",
            get(v1_get).delete(v1_delete),
        )
        .route("/api/v1/plugins/backfills/{id}/cancel", post(v1_cancel))
        .route("/api/v2/openapi.json", get(openapi))
        .route("/api/v2/backfills", get(v2_list).post(v2_create))
        .route("/api/v2/backfills/{id}", get(v2_get).delete(v2_delete))
        .route("/api/v2/backfills/{id}/{action}", post(v2_action))
        .route("/api/v2/dags", get(v2_dags))
        .layer(axum::middleware::from_fn(csrf_guard))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}

/// Parse a date as the seed (pendulum) does for its fields: RFC 3339, a naive date-time
/// (UTC), or a date (00:00 UTC).
pub fn parse_date(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(d.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(d) = d.and_hms_opt(0, 0, 0) {
            return Ok(d.and_utc());
        }
    }
    Err(ApiError::bad_request(format!(
        "{field} must be a date or date-time (e.g. 2024-01-01 or 2024-01-01T00:00:00+00:00), not {text:?}"
    )))
}

/// A range bound (`start`/`end`) for the request file: with an offset an exact instant (in
/// UTC), without one (a date or a local date-time) a TOML local date-time, which means that
/// wall-clock time in the DAG's schedule timezone.
fn range_bound(field: &str, text: &str) -> Result<toml::Value, ApiError> {
    let instant = parse_date(field, text)?;
    if DateTime::parse_from_rfc3339(text.trim()).is_ok() {
        return toml_datetime(instant);
    }
    // parse_date read the wall-clock time as if it were UTC.
    instant
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
        .parse::<toml::value::Datetime>()
        .map(toml::Value::Datetime)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn toml_datetime(t: DateTime<Utc>) -> Result<toml::Value, ApiError> {
    t.format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .parse::<toml::value::Datetime>()
        .map(toml::Value::Datetime)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn json_to_toml(field: &str, v: &Value) -> Result<toml::Value, ApiError> {
    toml::Value::try_from(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{field} cannot be passed to the DAG (null values are not supported): {e}"
        ))
    })
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(matches!(s.to_ascii_lowercase().as_str(), "true" | "1")),
        Value::Number(n) => Some(n.as_i64() == Some(1)),
        _ => None,
    }
}

fn as_int(field: &str, v: &Value) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request(format!("{field} must be an integer")))
}

fn as_text<'a>(field: &str, v: &'a Value) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be a string")))
}

/// The request file of a seed creation body (`dag_id`, `start_date`, `end_date`,
/// `description`, `dag_params`, `max_active_runs`, `scheduled_date`, `delete_duration_days`,
/// `ignore_overlapping_backfills`, and backfilld's `notify`). Errors carry the seed's messages where it has one.
pub fn seed_request(
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<toml::Table, ApiError> {
    let known = [
        "dag_id",
        "start_date",
        "end_date",
        "description",
        "dag_params",
        "max_active_runs",
        "scheduled_date",
        "delete_duration_days",
        "ignore_overlapping_backfills",
        "notify",
    ];
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {k:?}")));
    }
    let mut t = toml::Table::new();
    let dag_id = body
        .get("dag_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("dag_id is required"))?;
    t.insert("dag_id".into(), toml::Value::String(dag_id.to_owned()));
    for (field, key) in [("start_date", "start"), ("end_date", "end")] {
        let text = body
            .get(field)
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
            .ok_or_else(|| ApiError::bad_request(format!("{field} is required")))?;
        t.insert(key.into(), range_bound(field, as_text(field, text)?)?);
    }
    if let Some(d) = body.get("description").filter(|v| !v.is_null()) {
        let d = as_text("description", d)?;
        if !d.is_empty() {
            t.insert("description".into(), toml::Value::String(d.to_owned()));
        }
    }
    if let Some(p) = body.get("dag_params").filter(|v| !v.is_null()) {
        let parsed: Value = match p {
            Value::String(s) if s.trim().is_empty() => Value::Object(Map::new()),
            Value::String(s) => serde_json::from_str(s)
                .map_err(|e| ApiError::bad_request(format!("dag_params must be dict: {e}")))?,
            other => other.clone(),
        };
        let Value::Object(map) = parsed else {
            return Err(ApiError::bad_request("dag_params must be dict"));
        };
        if !map.is_empty() {
            t.insert(
                "params".into(),
                json_to_toml("dag_params", &Value::Object(map))?,
            );
        }
    }
    if let Some(m) = body.get("max_active_runs").filter(|v| !v.is_null()) {
        t.insert(
            "max_active_runs".into(),
            toml::Value::Integer(as_int("max_active_runs", m)?),
        );
    }
    if let Some(s) = body.get("scheduled_date").filter(|v| !v.is_null()) {
        let when = parse_date("scheduled_date", as_text("scheduled_date", s)?)?;
        if when > now {
            t.insert("scheduled_at".into(), toml_datetime(when)?);
        }
    }
    if let Some(n) = body.get("notify").filter(|v| !v.is_null()) {
        match n.as_array() {
            Some(items) if items.iter().all(Value::is_string) => {
                t.insert("notify".into(), json_to_toml("notify", n)?);
            }
            _ => return Err(ApiError::bad_request("notify must be an array of strings")),
        }
    }
    if let Some(d) = body.get("delete_duration_days").filter(|v| !v.is_null()) {
        t.insert(
            "delete_after_days".into(),
            toml::Value::Integer(as_int("delete_duration_days", d)?),
        );
    }
    if let Some(i) = body
        .get("ignore_overlapping_backfills")
        .filter(|v| !v.is_null())
    {
        let b = as_bool(i).ok_or_else(|| {
            ApiError::bad_request("ignore_overlapping_backfills must be a boolean")
        })?;
        t.insert("ignore_overlap".into(), toml::Value::Boolean(b));
    }
    Ok(t)
}

/// The request file of a v2 creation body: the request file's own keys, as JSON.
pub fn v2_request(body: &Map<String, Value>) -> Result<toml::Table, ApiError> {
    let known = [
        "dag_id",
        "start",
        "end",
        "description",
        "max_active_runs",
        "params",
        "ignore_overlap",
        "dry_run",
        "scheduled_at",
        "delete_after_days",
        "tasks",
        "include_upstream",
        "include_downstream",
        "emit_asset_events",
        "after",
        "priority",
        "run_backwards",
        "reprocess",
        "notify",
    ];
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {k:?}")));
    }
    let mut t = toml::Table::new();
    for key in ["dag_id", "start", "end"] {
        if body.get(key).is_none_or(Value::is_null) {
            return Err(ApiError::bad_request(format!("{key} is required")));
        }
    }
    for (key, v) in body {
        if v.is_null() {
            continue;
        }
        let value = match key.as_str() {
            "start" | "end" => range_bound(key, as_text(key, v)?)?,
            "dag_id" | "description" | "reprocess" => {
                toml::Value::String(as_text(key, v)?.to_owned())
            }
            "scheduled_at" => toml_datetime(parse_date(key, as_text(key, v)?)?)?,
            "delete_after_days" => match v.as_i64() {
                Some(n) => toml::Value::Integer(n),
                None => {
                    return Err(ApiError::bad_request(
                        "delete_after_days must be an integer",
                    ))
                }
            },
            "max_active_runs" | "priority" => match v.as_i64() {
                Some(n) => toml::Value::Integer(n),
                None => return Err(ApiError::bad_request(format!("{key} must be an integer"))),
            },
            "tasks" | "after" | "notify" => match v.as_array() {
                Some(items) if items.iter().all(Value::is_string) => json_to_toml(key, v)?,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{key} must be an array of strings"
                    )))
                }
            },
            "ignore_overlap" | "dry_run" | "include_upstream" | "include_downstream"
            | "emit_asset_events" | "run_backwards" => match v.as_bool() {
                Some(false) if key == "dry_run" => continue,
                Some(b) => toml::Value::Boolean(b),
                None => return Err(ApiError::bad_request(format!("{key} must be a boolean"))),
            },
            _ => match v {
                Value::Object(_) => json_to_toml(key, v)?,
                _ => return Err(ApiError::bad_request("params must be an object")),
            },
        };
        t.insert(key.clone(), value);
    }
    Ok(t)
}

/// The request file of a life-cycle action.
pub fn action_request(action: &str, id: &str) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("action".into(), toml::Value::String(action.to_owned()));
    t.insert("id".into(), toml::Value::String(id.to_owned()));
    t
}

fn iso(t: &str) -> String {
    match DateTime::parse_from_rfc3339(t) {
        Ok(d) => d
            .with_timezone(&Utc)
            .format("%Y-%m-%dT%H:%M:%S+00:00")
            .to_string(),
        Err(_) => t.to_owned(),
    }
}

/// A backfill in the seed's response format.
pub fn seed_json(b: &WebBackfill) -> Value {
    let v = &b.view;
    let mut out = json!({
        "backfill_dag_id": v.id,
        "description": v.description.clone().unwrap_or_default(),
        "dag_id": v.dag_id,
        "state": v.state,
        "start_date": iso(&v.start),
        "end_date": iso(&v.end),
        "max_active_runs": v.max_active_runs,
        "submitted_by": v.submitted_by,
        "submitted_at": iso(&v.submitted_at),
        "updated_at": iso(&v.updated_at),
        "deleted": if v.deleted { "Deleted" } else { "" },
    });
    if let Some(obj) = out.as_object_mut() {
        if !b.dates.is_empty() {
            obj.insert(
                "logical_dates".into(),
                b.dates
                    .iter()
                    .map(|d| Value::String(d.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()))
                    .collect(),
            );
        }
        if !v.params.is_empty() {
            obj.insert("dag_params".into(), Value::Object(v.params.clone()));
        }
        if let Some(t) = &v.run_start {
            obj.insert("run_start_date".into(), Value::String(iso(t)));
        }
        if let Some(t) = &v.run_end {
            obj.insert("run_end_date".into(), Value::String(iso(t)));
        }
    }
    out
}

/// The seed's list filters.
#[derive(Debug, Default, Deserialize)]
pub struct SeedFilter {
    dag_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    include_deleted: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|s| s == "1" || s.eq_ignore_ascii_case("true"))
}

async fn user(state: &State, headers: &HeaderMap, client: SocketAddr) -> Result<String, ApiError> {
    state.authenticate(headers, client).await
}

async fn page_for(state: &State, user: String, page: PageRequest) -> Result<WebPage, ApiError> {
    state
        .ask(|reply| WebCommand::ListPage {
            username: user,
            page,
            reply,
        })
        .await
}

/// A page size or offset from the query string.
fn count_param(field: &str, text: Option<&str>) -> Result<Option<usize>, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("{field} must be a whole number, not {t:?}"))
        }),
    }
}

/// The page size of a list request, or a 400 naming the limits.
fn limit_param(text: Option<&str>, default: usize) -> Result<usize, ApiError> {
    paging::page_size(count_param("limit", text)?, default, paging::MAX_LIMIT)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The request's own URL (under `base`, the `[http] base_path`) with `key` set to `value`
/// (any earlier `key` dropped): the link to the next page.
pub fn next_link(base: &str, uri: &axum::http::Uri, key: &str, value: &str) -> String {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(key))
        .collect();
    let pair = format!("{key}={value}");
    query.push(&pair);
    format!("{base}{}?{}", uri.path(), query.join("&"))
}

async fn get_for(state: &State, user: &str, id: &str) -> Result<WebDetail, ApiError> {
    let (username, id) = (user.to_owned(), id.to_owned());
    state
        .ask(|reply| WebCommand::Get {
            username,
            id,
            reply,
        })
        .await
}

async fn v1_list(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(f): Query<SeedFilter>,
) -> Result<Response, ApiError> {
    let user = user(&state, &headers, client).await?;
    let dates_within = match (&f.start_date, &f.end_date) {
        (Some(s), Some(e)) if !s.is_empty() && !e.is_empty() => {
            Some((parse_date("start_date", s)?, parse_date("end_date", e)?))
        }
        _ => None,
    };
    let limit = limit_param(f.limit.as_deref(), paging::MAX_LIMIT)?;
    let offset = count_param("offset", f.offset.as_deref())?.unwrap_or(0);
    let page = PageRequest {
        query: ListQuery {
            include_deleted: flag(&f.include_deleted),
            dag_id: f.dag_id.clone().filter(|d| !d.is_empty()),
            ..ListQuery::default()
        },
        dates_within,
        cursor: None,
        skip: offset,
        limit,
        count: false,
    };
    let page = page_for(&state, user, page).await?;
    // Written one backfill at a time: no JSON tree of the whole page.
    let mut body = b"[".to_vec();
    for (i, b) in page.backfills.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &seed_json(b))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    body.push(b']');
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if page.next.is_some() {
        let link = next_link(
            state.base(),
            &uri,
            "offset",
            &(offset + page.backfills.len()).to_string(),
        );
        if let Ok(v) = header::HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

async fn v1_get(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user(&state, &headers, client).await?;
    let detail = get_for(&state, &user, &id).await?;
    Ok(Json(seed_json(&detail.backfill)))
}

/// Submit and return the backfill the accepted request names, or the rejection.
async fn decide(
    state: &State,
    user: &str,
    request: toml::Table,
) -> Result<(RequestRecord, Option<WebDetail>), ApiError> {
    let record = state.submit(user, request).await?;
    if !record.outcome.is_accepted() {
        let code = record
            .reason_code
            .as_ref()
            .map(super::reason_name)
            .unwrap_or_default();
        return Err(ApiError::rejected(
            &code,
            record.reason.clone().unwrap_or_else(|| "rejected".into()),
        ));
    }
    let detail = match &record.backfill_id {
        Some(id) => Some(get_for(state, user, id).await?),
        None => None,
    };
    Ok((record, detail))
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

async fn v1_create(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let user = user(&state, &headers, client).await?;
    let request = seed_request(&body_object(&body)?, Utc::now())?;
    let (_, detail) = decide(&state, &user, request).await?;
    let detail = detail.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "accepted without a backfill id",
        )
    })?;
    Ok(Json(seed_json(&detail.backfill)))
}

async fn v1_action(
    state: State,
    client: SocketAddr,
    headers: HeaderMap,
    id: String,
    action: &str,
) -> Result<Json<Value>, ApiError> {
    let user = user(&state, &headers, client).await?;
    decide(&state, &user, action_request(action, &id)).await?;
    let detail = get_for(&state, &user, &id).await?;
    Ok(Json(seed_json(&detail.backfill)))
}

async fn v1_cancel(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    v1_action(state, client, headers, id, "cancel").await
}

async fn v1_delete(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    v1_action(state, client, headers, id, "delete").await
}

/// backfilld's list filters.
#[derive(Debug, Default, Deserialize)]
pub struct V2Filter {
    dag_id: Option<String>,
    state: Option<String>,
    include_deleted: Option<bool>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page of the v2 list, serialized straight from the backfills (no JSON tree in between).
#[derive(Serialize)]
struct V2Page<'a> {
    backfills: &'a [WebBackfill],
    total_entries: u64,
    next_cursor: Option<&'a str>,
    next: Option<&'a str>,
}

async fn v2_list(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(f): Query<V2Filter>,
) -> Result<Response, ApiError> {
    let user = user(&state, &headers, client).await?;
    let wanted: Option<BackfillState> = match &f.state {
        Some(s) if !s.is_empty() => Some(
            serde_json::from_value(Value::String(s.clone()))
                .map_err(|_| ApiError::bad_request(format!("unknown state {s:?}")))?,
        ),
        _ => None,
    };
    let cursor = match f.cursor.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => Some(PageKey::decode(c).map_err(|e| ApiError::bad_request(e.to_string()))?),
    };
    let page = PageRequest {
        query: ListQuery {
            include_deleted: f.include_deleted.unwrap_or(false),
            dag_id: f.dag_id.clone().filter(|d| !d.is_empty()),
            state: wanted,
            since: None,
        },
        dates_within: None,
        cursor,
        skip: 0,
        limit: limit_param(f.limit.as_deref(), paging::DEFAULT_LIMIT)?,
        count: true,
    };
    let page = page_for(&state, user, page).await?;
    let next_cursor = page.next.as_ref().map(PageKey::encode);
    let next = next_cursor
        .as_deref()
        .map(|c| next_link(state.base(), &uri, "cursor", c));
    let mut response = Json(V2Page {
        backfills: &page.backfills,
        total_entries: page.total.unwrap_or(0),
        next_cursor: next_cursor.as_deref(),
        next: next.as_deref(),
    })
    .into_response();
    if let Some(link) = &next {
        if let Ok(v) = header::HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

async fn v2_get(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<WebDetail>, ApiError> {
    let user = user(&state, &headers, client).await?;
    Ok(Json(get_for(&state, &user, &id).await?))
}

async fn v2_create(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let user = user(&state, &headers, client).await?;
    let request = v2_request(&body_object(&body)?)?;
    let (record, detail) = decide(&state, &user, request).await?;
    Ok(match detail {
        Some(d) => (StatusCode::CREATED, Json(d)).into_response(),
        None => Json(json!({ "dry_run": true, "logical_dates": record.dates.unwrap_or_default() }))
            .into_response(),
    })
}

async fn v2_delete(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<WebDetail>, ApiError> {
    let user = user(&state, &headers, client).await?;
    decide(&state, &user, action_request("delete", &id)).await?;
    Ok(Json(get_for(&state, &user, &id).await?))
}

async fn v2_action(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<WebDetail>, ApiError> {
    if !["cancel", "pause", "resume", "retry", "approve", "reject"].contains(&action.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown action {action:?}; use cancel, pause, resume, retry, approve or reject"
            ),
        ));
    }
    let user = user(&state, &headers, client).await?;
    let mut request = action_request(&action, &id);
    if action == "reject" {
        request.insert("reason".into(), toml::Value::String(reject_reason(&body)?));
    }
    let (_, detail) = decide(&state, &user, request).await?;
    match detail {
        Some(d) => Ok(Json(d)),
        None => Ok(Json(get_for(&state, &user, &id).await?)),
    }
}

/// The `reason` of a reject's JSON body (`{"reason": "..."}`); checked again by the request
/// parser like any request file's.
fn reject_reason(body: &[u8]) -> Result<String, ApiError> {
    let object = if body.is_empty() {
        Map::new()
    } else {
        body_object(body)?
    };
    if let Some(key) = object.keys().find(|k| *k != "reason") {
        return Err(ApiError::bad_request(format!(
            "unknown key {key:?}; a reject takes only reason"
        )));
    }
    match object.get("reason") {
        Some(Value::String(r)) => Ok(r.clone()),
        Some(_) => Err(ApiError::bad_request("reason must be a string")),
        None => Err(ApiError::bad_request(
            "reason is required: why the backfill is rejected",
        )),
    }
}

async fn v2_dags(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let username = user(&state, &headers, client).await?;
    let dags = state
        .ask(|reply| WebCommand::Dags { username, reply })
        .await?;
    Ok(Json(json!({ "dag_ids": dags })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn dates_like_the_seed() {
        let want = "2024-01-02T00:00:00Z";
        for text in [
            "2024-01-02",
            "2024-01-02T00:00:00",
            "2024-01-02T00:00:00+00:00",
            "2024-01-02T01:00:00+01:00",
            "2024-01-02 00:00:00",
        ] {
            let got = parse_date("start_date", text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(crate::request::fmt_ts(got), want, "{text}");
        }
        assert!(parse_date("start_date", "yesterday").is_err());
    }

    #[test]
    fn seed_body_becomes_a_request_file() {
        let now = Utc::now();
        let t = seed_request(
            &obj(json!({
                "dag_id": "sales", "start_date": "2024-01-01", "end_date": "2024-01-03T00:00:00+00:00",
                "description": "fix", "dag_params": "{\"region\": \"eu\"}", "max_active_runs": "2",
                "delete_duration_days": 7, "ignore_overlapping_backfills": "true",
                "scheduled_date": "2020-01-01T00:00:00"
            })),
            now,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
        let parsed =
            crate::request::parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(parsed.dag_id, "sales");
        assert_eq!(parsed.max_active_runs, 2);
        assert!(parsed.ignore_overlap);
        assert_eq!(parsed.params.get("region"), Some(&json!("eu")));
        assert_eq!(crate::request::fmt_ts(parsed.end), "2024-01-03T00:00:00Z");
        assert_eq!(parsed.delete_after_days, Some(7));
        assert_eq!(
            parsed.scheduled_at, None,
            "a scheduled_date in the past means now"
        );
        let later = seed_request(
            &obj(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "scheduled_date": "2999-01-01"})),
            now,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(later.contains_key("scheduled_at"));
    }

    #[test]
    fn seed_body_errors() {
        let now = Utc::now();
        let err = |v: Value| {
            seed_request(&obj(v), now)
                .err()
                .map(|e| (e.status, e.detail))
        };
        assert_eq!(
            err(json!({"start_date": "2024-01-01"})),
            Some((StatusCode::BAD_REQUEST, "dag_id is required".into()))
        );
        assert_eq!(
            err(json!({"dag_id": "a", "end_date": "2024-01-01"})),
            Some((StatusCode::BAD_REQUEST, "start_date is required".into()))
        );
        assert!(err(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "dag_params": "[1]"})).is_some());
        assert!(err(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "dag_params": {"x": null}})).is_some());
        assert!(err(
            json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "bogus": 1})
        )
        .is_some());
    }

    #[test]
    fn v2_body_becomes_a_request_file() {
        let t = v2_request(&obj(json!({
            "dag_id": "sales", "start": "2024-01-01", "end": "2024-01-02", "params": {"a": [1, 2]},
            "max_active_runs": 3, "ignore_overlap": true, "dry_run": false
        })))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!t.contains_key("dry_run"));
        let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
        let parsed =
            crate::request::parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(parsed.max_active_runs, 3);
        assert!(v2_request(&obj(json!({"dag_id": "x", "start": "2024-01-01"}))).is_err());
        assert!(v2_request(&obj(
            json!({"dag_id": "x", "start": "2024-01-01", "end": "2024-01-01", "params": 3})
        ))
        .is_err());
    }

    #[test]
    fn next_links_keep_the_filters() {
        let uri: axum::http::Uri = "/api/v2/backfills?dag_id=sales&cursor=old&limit=2"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            next_link("/bf", &uri, "cursor", "new"),
            "/bf/api/v2/backfills?dag_id=sales&limit=2&cursor=new"
        );
        let bare: axum::http::Uri = "/api/v1/plugins/backfills"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            next_link("", &bare, "offset", "1000"),
            "/api/v1/plugins/backfills?offset=1000"
        );
    }

    #[test]
    fn page_parameters() {
        assert_eq!(limit_param(None, 500).ok(), Some(500));
        assert_eq!(limit_param(Some(" 7 "), 500).ok(), Some(7));
        assert_eq!(
            limit_param(Some("100000"), 500).ok(),
            Some(paging::MAX_LIMIT)
        );
        for bad in ["0", "-1", "ten"] {
            let e = limit_param(Some(bad), 500).err();
            assert_eq!(e.map(|e| e.status), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
        assert_eq!(count_param("offset", Some("")).ok(), Some(None));
        assert!(count_param("offset", Some("x")).is_err());
    }

    #[test]
    fn notify_in_both_creates() {
        let notify = json!([
            "mailto:alice@example.com",
            "slack:https://hooks.example.com/x"
        ]);
        let seed = seed_request(
            &obj(
                json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "notify": notify}),
            ),
            Utc::now(),
        );
        let v2 = v2_request(&obj(
            json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "notify": notify}),
        ));
        for t in [seed, v2] {
            let t = t.unwrap_or_else(|e| panic!("{e:?}"));
            let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
            let parsed = crate::request::parse(text.as_bytes(), 10)
                .unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(
                parsed.options.notify,
                [
                    "mailto:alice@example.com",
                    "slack:https://hooks.example.com/x"
                ]
            );
        }
        for bad in [json!("mailto:a@example.com"), json!([1])] {
            let seed = seed_request(
                &obj(
                    json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "notify": bad}),
                ),
                Utc::now(),
            );
            let v2 = v2_request(&obj(
                json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "notify": bad}),
            ));
            for r in [seed, v2] {
                assert_eq!(
                    r.err().map(|e| e.status),
                    Some(StatusCode::BAD_REQUEST),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn problem_documents() {
        let e = ApiError::rejected("unknown_dag", "Airflow has no DAG with id \"x\"");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
}
