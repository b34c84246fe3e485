//! `GET /metrics`: the text the engine rendered after its last reconcile pass (the same as
//! the `[metrics] textfile`), public or for Airflow users with `can_read` on `Backfills`
//! (`[metrics] http`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, State};
use crate::config::MetricsHttp;
use crate::engine::web::WebCommand;

/// The `/metrics` route, unless `[metrics] http = "off"`.
pub fn routes(access: MetricsHttp) -> Router<State> {
    match access {
        MetricsHttp::Off => Router::new(),
        MetricsHttp::Public | MetricsHttp::Login => Router::new().route("/metrics", get(serve)),
    }
}

async fn serve(
    AxState(state): AxState<State>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.metrics_http == MetricsHttp::Login {
        let username = state.authenticate(&headers, client).await?;
        state
            .ask(|reply| WebCommand::MetricsAccess { username, reply })
            .await?;
    }
    let text = state.metrics.lock().ok().and_then(|m| m.clone());
    match text {
        Some(text) => {
            Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics yet: the first reconcile pass has not run",
        )),
    }
}
