//! The REST API: the seed plugin's `/api/v1/plugins/backfills` (same paths, verbs, fields and
//! error shapes) and backfilld's `/api/v2` (life-cycle actions, dry runs, per-date progress,
//! why-waiting; described by [`super::openapi`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use super::body::{parse_date, seed_request, v2_request};
use super::{ApiError, State};
use crate::control::RequestView;
use crate::engine::web::{PageRequest, WebBackfill, WebCommand, WebDetail, WebPage};
use crate::metadb::store::ListQuery;
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

/// A list's `state` filter (empty: any), or a 400.
pub(super) fn state_param(text: Option<&str>) -> Result<Option<BackfillState>, ApiError> {
    match text {
        Some(s) if !s.is_empty() => serde_json::from_value(Value::String(s.to_owned()))
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("unknown state {s:?}"))),
        _ => Ok(None),
    }
}

/// A list's `cursor` (the previous page's `next`; empty: the first page), or a 400.
pub(super) fn cursor_param(text: Option<&str>) -> Result<Option<PageKey>, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) => PageKey::decode(c)
            .map(Some)
            .map_err(|e| ApiError::bad_request(e.to_string())),
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
) -> Result<(RequestView, Option<WebDetail>), ApiError> {
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
    let wanted = state_param(f.state.as_deref())?;
    let cursor = cursor_param(f.cursor.as_deref())?;
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
