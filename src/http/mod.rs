//! The HTTP listener: the seed's REST API (`/api/v1/plugins/backfills`), backfilld's own
//! (`/api/v2/...`, described at `/api/v2/openapi.json`) and the web UI (`/`), on the daemon's
//! tokio runtime. Off unless `[http] listen` is set.
//!
//! Callers are Airflow users: HTTP Basic checked against `ab_user`'s password hashes, Airflow 3
//! api-server tokens, or a web UI session. Nothing here decides or writes anything itself:
//! reads are answered by the engine thread ([`crate::engine::web`]) under the same
//! authorization rules and audit as the control socket, and every create or life-cycle action
//! is published as a request file into the spool on the user's behalf and goes through the one
//! ingest pipeline (validation, authorization, audit, outcome record), whose outcome is
//! awaited like `backfillctl submit` does.

pub mod airflow_links;
pub mod airflow_session;
pub mod api;
pub mod auth;
pub mod body;
pub mod csrf;
pub mod metrics;
pub mod openapi;
pub mod present;
pub mod ui;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::oneshot;

use crate::config::{ApiTokenSettings, Config, HttpSection};
use crate::control::RequestView;
use crate::control::{ControlRequest, ControlResponse};
use crate::engine::web::{Credentials, WebCommand, WebError};
use crate::engine::Command;
use crate::spool::INCOMING;
use auth::{RateLimiter, Sessions};

/// How long a verified password stays verified for repeated API calls (hashing is slow on
/// purpose; a changed password changes the stored hash and so misses the cache).
const VERIFIED_FOR: Duration = Duration::from_secs(300);

/// Password verifications running at once. Airflow's default hash (werkzeug's
/// `scrypt:32768:8:1`) needs 32 MiB per verification, so concurrent logins would add 32 MiB
/// each; one at a time keeps the daemon's memory at its settled size plus one verification
/// however many logins arrive (repeated API calls hit the verified-login cache instead).
const CONCURRENT_VERIFICATIONS: usize = 1;

/// Shared state of every handler.
pub struct AppState {
    engine: Sender<Command>,
    http: HttpSection,
    incoming: PathBuf,
    own_uid: u32,
    tokens: Option<ApiTokenSettings>,
    tls: bool,
    /// Why password logins are off (`None`: on).
    password_logins_off: Option<String>,
    /// How to check Airflow 2 webserver sessions, when `[http] airflow_sessions` is on.
    airflow_sessions: Option<AirflowSessions>,
    /// The key of the CSRF tokens of pages seen through an Airflow session.
    csrf_key: [u8; 32],
    limiter: Mutex<RateLimiter>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Permits of [`CONCURRENT_VERIFICATIONS`].
    verifying: tokio::sync::Semaphore,
    sessions: Mutex<Sessions>,
    metrics: crate::metrics::Published,
    metrics_http: crate::config::MetricsHttp,
    /// Airflow's UI, for the web UI's links into it.
    airflow_urls: crate::config::AirflowBaseUrls,
}

/// Shared handler state.
pub type State = Arc<AppState>;

/// What checks an Airflow 2 webserver session cookie.
struct AirflowSessions {
    secret: Vec<u8>,
    max_age_secs: u64,
    database: bool,
}

/// The name of the Airflow webserver's session cookie (Flask's `SESSION_COOKIE_NAME`).
pub const AIRFLOW_SESSION_COOKIE: &str = "session";

/// The name of Airflow 3's api-server token cookie (`COOKIE_NAME_JWT_TOKEN`), which its UI
/// signs in with.
pub const AIRFLOW_TOKEN_COOKIE: &str = "_token";

/// An API error: an HTTP status and Airflow's problem document (`title`, `detail`, `status`,
/// `type`), plus backfilld's `reason_code` when a rejection has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub detail: String,
    /// backfilld's stable reason code, when there is one.
    pub reason_code: Option<String>,
}

impl ApiError {
    /// An error with a status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            reason_code: None,
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401.
    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// A rejection by the engine, with the status its reason code calls for.
    pub fn rejected(code: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of_reason(code),
            detail: detail.into(),
            reason_code: Some(code.to_owned()),
        }
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> ApiError {
        match e {
            WebError::Denied(r) => ApiError::rejected(&reason_name(&r.code), r.message),
            WebError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            WebError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

/// The snake_case name of a reason code.
pub fn reason_name<T: serde::Serialize>(code: &T) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The HTTP status of a rejection: who-may-not is 403, an unknown backfill 404, an outage
/// 503, any other invalid request 400 (the seed's statuses).
pub fn status_of_reason(code: &str) -> StatusCode {
    match code {
        "unknown_backfill" => StatusCode::NOT_FOUND,
        "inactive_user"
        | "missing_backfill_permission"
        | "missing_dag_edit"
        | "missing_dag_read"
        | "no_airflow_user"
        | "unmapped_user"
        | "on_behalf_not_allowed"
        | "auth_unavailable"
        | "not_an_approver"
        | "self_approval"
        | "unknown_user" => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Start the listener on the running tokio runtime; it stops when `stop` turns true.
/// Binding errors (address in use, unreadable certificate) fail the start.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    engine: Sender<Command>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: crate::metrics::Published,
) -> anyhow::Result<()> {
    let Some(addr) = config.http.listen else {
        return Ok(());
    };
    let tokens = match config.resolve_api_tokens() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Airflow's token settings; Bearer tokens are refused");
            None
        }
    };
    let web = match config.resolve_airflow_web() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Airflow's web sign-in settings");
            None
        }
    };
    let password_logins_off = if !config.http.password_logins {
        Some("password logins are turned off ([http] password_logins = false)".to_owned())
    } else {
        match &web {
            Some(w) => crate::webserver_config::password_logins_off(&w.auth_type),
            None => Some("backfilld cannot read Airflow's configuration".to_owned()),
        }
    };
    if let Some(why) = &password_logins_off {
        tracing::warn!(reason = %why, "password logins are off");
    }
    let airflow_sessions = match (&web, config.http.airflow_sessions) {
        (_, false) => None,
        (None, true) => {
            tracing::warn!(
                "Airflow sessions are off: backfilld cannot read Airflow's configuration"
            );
            None
        }
        (Some(w), true) => match &w.secret_key {
            Ok(secret) => {
                tracing::info!(
                    database = w.database_sessions,
                    "Airflow webserver sessions are accepted"
                );
                Some(AirflowSessions {
                    secret: secret.as_bytes().to_vec(),
                    max_age_secs: w.session_lifetime_minutes.saturating_mul(60),
                    database: w.database_sessions,
                })
            }
            Err(why) if tokens.is_none() => {
                tracing::warn!(reason = %why, "Airflow sessions are off: no secret key");
                None
            }
            Err(why) => {
                tracing::debug!(reason = %why, "Airflow 2 webserver sessions are off");
                None
            }
        },
    };
    if config.http.airflow_sessions && tokens.is_some() {
        tracing::info!("Airflow 3 sign-in cookies (_token) are accepted");
    }
    let mut csrf_key = [0u8; 32];
    getrandom::fill(&mut csrf_key)
        .map_err(|e| anyhow::anyhow!("no randomness for the CSRF key: {e}"))?;
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let state = Arc::new(AppState {
        engine,
        http: config.http.clone(),
        incoming: config.spool.dir.join(INCOMING),
        own_uid: nix::unistd::geteuid().as_raw(),
        tokens,
        tls: tls.is_some(),
        password_logins_off,
        airflow_sessions,
        csrf_key,
        limiter: Mutex::new(RateLimiter::default()),
        verified: Mutex::new(HashMap::new()),
        verifying: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
        sessions: Mutex::new(Sessions::default()),
        metrics,
        metrics_http: config.metrics.http,
        airflow_urls: web
            .as_ref()
            .map(|w| w.base_urls.clone())
            .unwrap_or_default(),
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the HTTP listener {addr}"))?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    runtime.spawn(async move {
        let _ = stop.changed().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let _guard = runtime.enter();
    match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls).handle(handle);
            runtime.spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "the HTTPS listener stopped");
                }
            });
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle);
            runtime.spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "the HTTP listener stopped");
                }
            });
        }
    }
    tracing::info!(url = %format!("{scheme}://{addr}/"), "HTTP API and web UI listening");
    Ok(())
}

fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading the TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading the TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(server),
    ))
}

/// Every route.
pub fn router(state: State) -> axum::Router {
    api::routes()
        .merge(ui::routes())
        .merge(metrics::routes(state.metrics_http))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

impl AppState {
    /// Send a command to the engine and wait for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, WebError>>) -> WebCommand,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        if self.engine.send(Command::Web(make(tx))).is_err() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backfilld is stopping",
            ));
        }
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(answer)) => answer.map_err(ApiError::from),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backfilld is busy; try again",
            )),
        }
    }

    /// The Airflow user behind `Authorization` (Basic or Bearer); failures are rate-limited
    /// per user and per address, and audited.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: SocketAddr,
    ) -> Result<String, ApiError> {
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return match self.airflow_session_user(headers).await {
                Some((user, _)) => Ok(user),
                None => Err(ApiError::unauthenticated("No credentials given")),
            };
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.token_user(token.trim()).await;
        }
        let (user, password) = auth::parse_basic(value)
            .ok_or_else(|| ApiError::unauthenticated("Malformed Authorization header"))?;
        self.login(&user, &password, client).await
    }

    /// Why password logins are off, if they are.
    pub fn password_logins_off(&self) -> Option<&str> {
        self.password_logins_off.as_deref()
    }

    /// Check a user name and password against `ab_user`, as FAB's `AUTH_DB` does; the user
    /// name returned is the `ab_user` row's (one spelling whatever case was typed). An empty
    /// password is never accepted, so neither is a hash of the empty string (what FAB stores
    /// for users its LDAP, OAuth and REMOTE_USER sign-ins create): a non-empty password that
    /// verifies cannot have been hashed as the empty one.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        client: SocketAddr,
    ) -> Result<String, ApiError> {
        if let Some(why) = &self.password_logins_off {
            return Err(ApiError::unauthenticated(format!(
                "Password logins are off: {why}"
            )));
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.http.lockout_secs);
        let addr_key = format!("addr:{}", client.ip());
        let user_key = format!("user:{}", user.to_lowercase());
        if let Ok(limiter) = self.limiter.lock() {
            for key in [&user_key, &addr_key] {
                if let Err(wait) = limiter.check(key, now, self.http.max_failed_logins, window) {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "too many failed logins; try again in {} s",
                            wait.as_secs() + 1
                        ),
                    ));
                }
            }
        }
        let creds = if user.is_empty() || password.is_empty() {
            None
        } else {
            let username = user.to_owned();
            self.ask(|reply| WebCommand::Credentials { username, reply })
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e.detail, "cannot check a login");
                    ApiError::new(e.status, "Cannot check credentials now; try again later")
                })?
        };
        let failure = match &creds {
            _ if password.is_empty() => Err("empty password".to_owned()),
            None => {
                // As slow as checking a real password, so timing does not tell which
                // user names exist.
                let _ = self.check_password(user, password, auth::DUMMY_HASH).await;
                Err("no such user".to_owned())
            }
            Some(Credentials { active: false, .. }) => Err("the user is not active".to_owned()),
            Some(Credentials {
                password_hash: None,
                ..
            }) => Err("the user has no password".to_owned()),
            Some(Credentials {
                password_hash: Some(stored),
                username,
                ..
            }) => self
                .check_password(username, password, stored)
                .await
                .map(|()| username.clone()),
        };
        let client_text = client.ip().to_string();
        match failure {
            Ok(canonical) => {
                if let Ok(mut limiter) = self.limiter.lock() {
                    limiter.clear(&user_key);
                }
                Ok(canonical)
            }
            Err(reason) => {
                if let Ok(mut limiter) = self.limiter.lock() {
                    limiter.fail(&user_key, now, window);
                    limiter.fail(&addr_key, now, window);
                }
                let _ = self.engine.send(Command::Web(WebCommand::AuditLogin {
                    username: creds
                        .as_ref()
                        .map_or_else(|| user.to_owned(), |c| c.username.clone()),
                    client: client_text,
                    allowed: false,
                    reason: Some(reason),
                }));
                Err(ApiError::unauthenticated("Invalid credentials"))
            }
        }
    }

    /// Verify off the async workers (hashing is slow on purpose), one at a time, with a
    /// short-lived cache of successes (checked again once a waiting login gets its turn).
    async fn check_password(&self, user: &str, password: &str, stored: &str) -> Result<(), String> {
        let key = auth::login_key(user, password, stored);
        let now = Instant::now();
        if let Ok(mut cache) = self.verified.lock() {
            cache.retain(|_, until| *until > now);
            if cache.contains_key(&key) {
                return Ok(());
            }
        }
        let _permit = self
            .verifying
            .acquire()
            .await
            .map_err(|e| format!("verification failed: {e}"))?;
        if let Ok(cache) = self.verified.lock() {
            if cache.get(&key).is_some_and(|until| *until > now) {
                return Ok(());
            }
        }
        let (p, s) = (password.to_owned(), stored.to_owned());
        let verdict = tokio::task::spawn_blocking(move || auth::verify_password(&s, &p))
            .await
            .map_err(|e| format!("verification failed: {e}"))?;
        match verdict {
            Ok(true) => {
                if let Ok(mut cache) = self.verified.lock() {
                    cache.insert(key, now + VERIFIED_FOR);
                }
                Ok(())
            }
            Ok(false) => Err("wrong password".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn token_user(&self, token: &str) -> Result<String, ApiError> {
        let Some(settings) = &self.tokens else {
            return Err(ApiError::unauthenticated(
                "Bearer tokens need Airflow's [api_auth] jwt_secret, which backfilld could not read",
            ));
        };
        let claims = auth::validate_token(
            token,
            settings.secret.as_bytes(),
            &settings.algorithm,
            Some(&settings.audience),
        )
        .map_err(ApiError::unauthenticated)?;
        if let Some(jti) = claims.jti.clone() {
            let revoked = self
                .ask(|reply| WebCommand::TokenRevoked { jti, reply })
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e.detail, "cannot check a token's revocation");
                    ApiError::new(e.status, "Cannot check the token now; try again later")
                })?;
            if revoked {
                return Err(ApiError::unauthenticated("The token has been revoked"));
            }
        }
        match claims.sub.parse::<i64>() {
            Ok(id) => match self
                .ask(|reply| WebCommand::UserById { id, reply })
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e.detail, "cannot look up a token's user");
                    ApiError::new(e.status, "Cannot check the token now; try again later")
                })? {
                Some(user) if user.active => Ok(user.username),
                _ => Err(ApiError::unauthenticated("Invalid credentials")),
            },
            Err(_) => Ok(claims.sub),
        }
    }

    /// The user of Airflow's own sign-in, when `[http] airflow_sessions` is on, with the
    /// cookie's value: Airflow 3's api-server token cookie (`_token`, checked as a Bearer
    /// token is), else the Airflow 2 webserver's session cookie when it is valid (signature,
    /// expiry, a logged-in active `ab_user`); `None` otherwise.
    pub async fn airflow_session_user(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let header = headers.get(axum::http::header::COOKIE)?.to_str().ok()?;
        if self.http.airflow_sessions && self.tokens.is_some() {
            if let Some(token) = airflow_session::cookie_value(header, AIRFLOW_TOKEN_COOKIE) {
                match self.token_user(token).await {
                    Ok(user) => return Some((user, token.to_owned())),
                    Err(e) => tracing::debug!(error = %e.detail, "Airflow token cookie refused"),
                }
            }
        }
        let sso = self.airflow_sessions.as_ref()?;
        let cookie = airflow_session::cookie_value(header, AIRFLOW_SESSION_COOKIE)?;
        let data = if sso.database {
            let sid = airflow_session::open_sid(cookie, &sso.secret)
                .map_err(|e| tracing::debug!(error = %e, "Airflow session refused"))
                .ok()?;
            let bytes = self
                .ask(|reply| WebCommand::WebserverSession { sid, reply })
                .await
                .ok()??;
            serde_json::from_slice(&bytes).ok()?
        } else {
            airflow_session::open_cookie(
                cookie,
                &sso.secret,
                sso.max_age_secs,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| tracing::debug!(error = %e, "Airflow session refused"))
            .ok()?
        };
        let id = airflow_session::user_id(&data).ok()?;
        let user = self
            .ask(|reply| WebCommand::UserById { id, reply })
            .await
            .ok()??;
        if !user.active {
            tracing::debug!(user = %user.username, "Airflow session of an inactive user refused");
            return None;
        }
        Some((user.username, cookie.to_owned()))
    }

    /// The CSRF token of pages seen through the Airflow session cookie `cookie` (stateless:
    /// a keyed hash of the cookie, so it ends with the Airflow session).
    pub fn airflow_session_csrf(&self, cookie: &str) -> String {
        use hmac::Mac as _;
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.csrf_key) {
            Ok(mut mac) => {
                mac.update(cookie.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// The path prefix backfilld is served under (empty at the root).
    pub fn base(&self) -> &str {
        &self.http.base_path
    }

    /// Publish a request file on `user`'s behalf and wait for its outcome: the same
    /// pipeline as a file dropped into the spool.
    pub async fn submit(
        &self,
        user: &str,
        mut request: toml::Table,
    ) -> Result<RequestView, ApiError> {
        request.insert("on_behalf_of".into(), toml::Value::String(user.to_owned()));
        let body = toml::to_string(&request)
            .map_err(|e| ApiError::bad_request(format!("cannot encode the request: {e}")))?;
        let suffix = auth::random_token().ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no randomness available")
        })?;
        let name = format!("http-{}.toml", &suffix[..24]);
        let dir = self.incoming.clone();
        let file_name = name.clone();
        tokio::task::spawn_blocking(move || publish(&dir, &file_name, body.as_bytes()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot write the request into the spool: {e}"),
                )
            })?;
        let deadline = Instant::now() + Duration::from_secs(self.http.decide_timeout_secs);
        let mut pause = Duration::from_millis(50);
        loop {
            let (reply, answer) = oneshot::channel();
            let sent = self.engine.send(Command::Query {
                uid: self.own_uid,
                request: ControlRequest::Outcome {
                    file_name: name.clone(),
                },
                reply,
            });
            if sent.is_err() {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backfilld is stopping",
                ));
            }
            match tokio::time::timeout(Duration::from_secs(60), answer).await {
                Ok(Ok(ControlResponse::Decided { request })) => return Ok(*request),
                Ok(Ok(ControlResponse::Error { message })) => {
                    tracing::debug!(%message, "outcome query failed; retrying");
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the request waits in the spool as {name} (is the metadata DB down?); it will be decided once backfilld can"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// Write a request file the way `backfillctl` does: a dot-named temp file, fsync, rename.
fn publish(dir: &std::path::Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_reasons() {
        assert_eq!(status_of_reason("unknown_dag"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of_reason("overlap"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of_reason("missing_dag_edit"), StatusCode::FORBIDDEN);
        assert_eq!(status_of_reason("inactive_user"), StatusCode::FORBIDDEN);
        assert_eq!(status_of_reason("unknown_backfill"), StatusCode::NOT_FOUND);
    }
}
