//! The daemon's configuration file, and where Airflow keeps its metadata DB and DAGs.
//!
//! `[airflow] home` is the only required key on an Airflow host: the metadata DB URL and the
//! DAGs folder are then read the way Airflow reads them (environment, `airflow.cfg`, defaults).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dburl::DbUrl;

mod airflow_cfg;
mod notifications;

pub use airflow_cfg::*;
pub use notifications::{NotificationsSection, SmtpSettings};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/backfilld/backfilld.toml";
/// Default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/backfilld";

/// Errors loading or resolving the configuration; each names the file and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A key has a value outside its allowed range.
    #[error("invalid config {path}: key `{key}`: {message}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Airflow's own configuration could not be resolved.
    #[error("cannot resolve Airflow's {what}: {message}")]
    Airflow {
        /// Which setting.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// The parsed configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Airflow lives.
    pub airflow: AirflowSection,
    /// The spool directory.
    #[serde(default)]
    pub spool: SpoolSection,
    /// The control socket.
    #[serde(default)]
    pub control: ControlSection,
    /// Limits on requests.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Reconciler timing.
    #[serde(default)]
    pub reconcile: ReconcileSection,
    /// How file owners map to Airflow users.
    #[serde(default)]
    pub identity: IdentitySection,
    /// Who may backfill.
    #[serde(default)]
    pub authz: AuthzSection,
    /// The HTTP API and web UI (off unless `listen` is set).
    #[serde(default)]
    pub http: HttpSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// Budgets that keep scheduled runs alive.
    #[serde(default)]
    pub throttle: ThrottleSection,
    /// Several agents on one metadata DB.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Prometheus metrics (textfile, HTTP `/metrics`).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Defaults of the DAG copies.
    #[serde(default)]
    pub copies: CopiesSection,
    /// Approval of big backfills.
    #[serde(default)]
    pub approval: ApprovalSection,
    /// How long decided request files and request records are kept.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Who is told when a backfill finishes, is cancelled or waits for approval.
    #[serde(default)]
    pub notifications: NotificationsSection,
}

/// `[retention]`: how long what requests leave behind is kept. Durations in humantime's
/// form (`"30d"`, `"12h"`, `"90s"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Files in `accepted/` and `rejected/` (with their receipts) are removed this long after
    /// they were claimed; each agent prunes its own spool.
    #[serde(deserialize_with = "duration")]
    pub decided_files: std::time::Duration,
    /// Request records (`backfilld_request`) are deleted this long after they were received,
    /// except those of backfills not deleted; the leader prunes them.
    #[serde(deserialize_with = "duration")]
    pub request_records: std::time::Duration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            decided_files: std::time::Duration::from_secs(30 * 86_400),
            request_records: std::time::Duration::from_secs(90 * 86_400),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration such as \"30d\": {e}"))
    })
}

/// `[approval]`: backfills of more than `over_dates` logical dates wait for an approver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSection {
    /// A new backfill of more logical dates than this waits in `awaiting_approval`; 0 (the
    /// default) turns approval off.
    pub over_dates: usize,
    /// Airflow roles whose users may approve or reject (besides edit rights on the origin DAG
    /// and `can_operate` on the backfill resource); never the requester.
    pub approver_roles: Vec<String>,
}

impl Default for ApprovalSection {
    fn default() -> Self {
        ApprovalSection {
            over_dates: 0,
            approver_roles: vec![crate::authz::ADMIN_ROLE.to_owned()],
        }
    }
}

/// `[cluster]`: how this agent shares the work with the other agents on the same metadata DB.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This agent's name among the agents (recorded on rows, holds claims); default: the host
    /// name. Two agents on one machine must set different ones.
    pub host_id: Option<String>,
    /// Whether every agent sees the same DAGs folder (NFS, EFS, git-sync volume): then one
    /// agent (the leader) keeps the copies; otherwise every agent keeps its own folder.
    pub dags_folder_shared: bool,
    /// Seconds a claim lasts without renewal; another agent takes over a dead holder's claim
    /// after at most this long (plus one reconcile interval).
    pub lease_secs: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            host_id: None,
            dags_folder_shared: false,
            lease_secs: 15,
        }
    }
}

impl ClusterSection {
    /// `host_id`, or the host name.
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// `[metrics]`: Prometheus metrics written after every reconcile pass.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where to write them atomically for node_exporter's textfile collector (a `*.prom` file
    /// in its directory); unset: no file.
    pub textfile: Option<PathBuf>,
    /// Who may read `GET /metrics` on the HTTP listener (when `[http] listen` is set).
    pub http: MetricsHttp,
}

/// Access to `GET /metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsHttp {
    /// No credentials, as node_exporter and most exporters (the metrics carry no DAG or user
    /// names: only counts by state and reason code).
    #[default]
    Public,
    /// An Airflow user with `can_read` on `Backfills` (Basic or an Airflow 3 token).
    Login,
    /// No `/metrics` route.
    Off,
}

impl Config {
    /// Whether the engine gathers metrics: for a textfile, or for the HTTP listener's
    /// `/metrics`.
    pub fn metrics_wanted(&self) -> bool {
        self.metrics.textfile.is_some()
            || (self.http.listen.is_some() && self.metrics.http != MetricsHttp::Off)
    }
}

/// `[copies]`: defaults of the DAG copies, for requests that do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CopiesSection {
    /// Let copies emit dataset/asset events (and so trigger the DAGs scheduled on them once
    /// per backfilled date). Default false: the overlay empties every task's `outlets`.
    pub emit_asset_events: bool,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// A tracing filter such as `info` or `info,backfilld=debug`; `BACKFILLD_LOG` or
    /// `RUST_LOG` in the environment win over it. Default `info`.
    pub level: Option<String>,
}

/// `[http]`: the REST API and web UI, authenticated by Airflow's users. Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on, e.g. `127.0.0.1:8790`; unset: no HTTP listener.
    pub listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain; with `tls_key`, serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Seconds a web UI login lasts.
    pub session_secs: u64,
    /// Failed logins allowed per user name, and per client address, within `lockout_secs`.
    pub max_failed_logins: u32,
    /// The window of `max_failed_logins`, and how long a locked-out name or address waits.
    pub lockout_secs: u64,
    /// Seconds an API request waits for the engine to decide a create or life-cycle request.
    pub decide_timeout_secs: u64,
    /// Accept Airflow users' passwords (HTTP Basic and the login form). Even when true, only
    /// while Airflow itself checks passwords against its user table (FAB's `AUTH_DB` in
    /// `webserver_config.py`); false turns password logins off everywhere.
    pub password_logins: bool,
    /// Accept Airflow's own sign-in cookie (single sign-on: an Airflow 2 webserver session, an
    /// Airflow 3 api-server `_token`), for when backfilld is served on the same site as
    /// Airflow through a reverse proxy.
    pub airflow_sessions: bool,
    /// The path prefix the reverse proxy serves backfilld under (e.g. `/backfills`), used in
    /// links, form actions, redirects and the cookie path; empty when served at the root.
    pub base_path: String,
    /// The address users reach backfilld's web UI at (e.g. `https://airflow.example.com`,
    /// without `base_path`), for links in notifications; unset: no links.
    pub public_url: Option<String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            tls_cert: None,
            tls_key: None,
            session_secs: 8 * 3600,
            max_failed_logins: 5,
            lockout_secs: 300,
            decide_timeout_secs: 60,
            password_logins: true,
            airflow_sessions: false,
            base_path: String::new(),
            public_url: None,
        }
    }
}

/// `[throttle]`: budgets the reconciler enforces by pausing and unpausing copies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSection {
    /// Most queued + running runs of all backfill copies together (unset: no limit).
    pub max_running_backfill_runs: Option<u32>,
    /// Most queued + running backfill runs per origin DAG (unset: no limit).
    pub max_running_per_dag: Option<u32>,
    /// Largest share (1..=100) of a pool's slots backfill task instances may hold (unset: no
    /// limit).
    pub pool_share_percent: Option<u32>,
    /// Hold a backfill while its origin DAG has a queued or running run of its own, or a pool
    /// it uses is full of other tasks.
    pub yield_to_scheduled: bool,
}

impl Default for ThrottleSection {
    fn default() -> Self {
        ThrottleSection {
            max_running_backfill_runs: None,
            max_running_per_dag: None,
            pool_share_percent: None,
            yield_to_scheduled: true,
        }
    }
}

/// Airflow's web sign-in settings (see [`Config::resolve_airflow_web`]).
#[derive(Clone)]
pub struct AirflowWeb {
    /// FAB's `AUTH_TYPE`.
    pub auth_type: crate::webserver_config::AuthType,
    /// The Flask secret key of Airflow 2's webserver, or why it cannot be read.
    pub secret_key: Result<String, String>,
    /// `[webserver] session_lifetime_minutes` (Flask's `PERMANENT_SESSION_LIFETIME`).
    pub session_lifetime_minutes: u64,
    /// Whether sessions live in the `session` table (`[webserver] session_backend =
    /// database`, Airflow 2's default) rather than in the signed cookie itself.
    pub database_sessions: bool,
    /// Where people reach Airflow's UI: `[webserver] base_url` (2.x), `[api] base_url` (3.x).
    pub base_urls: AirflowBaseUrls,
}

/// The base URLs of Airflow's UI, per major (no trailing slash); `None`: not configured, and
/// the web UI links nowhere into Airflow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AirflowBaseUrls {
    /// `[webserver] base_url`, Airflow 2's webserver.
    pub v2: Option<String>,
    /// `[api] base_url`, Airflow 3's api-server (or, as Airflow 3 reads it when that is unset,
    /// `[webserver] base_url`).
    pub v3: Option<String>,
}

impl std::fmt::Debug for AirflowWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AirflowWeb")
            .field("auth_type", &self.auth_type)
            .field("session_lifetime_minutes", &self.session_lifetime_minutes)
            .field("database_sessions", &self.database_sessions)
            .finish_non_exhaustive()
    }
}

/// How Airflow 3's api-server signs the tokens it hands out (`/auth/token`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokenSettings {
    /// `[api_auth] jwt_secret`.
    pub secret: String,
    /// `[api_auth] jwt_algorithm` (`HS512` when unset or `GUESS`).
    pub algorithm: String,
    /// `[api_auth] jwt_audience` (`apache-airflow` when unset).
    pub audience: String,
}

impl std::fmt::Debug for ApiTokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokenSettings")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl ThrottleSection {
    /// Whether a budget is set, so a new copy should start paused until the throttle lets it
    /// go (otherwise the scheduler could start runs before the next pass counts them).
    pub fn has_budget(&self) -> bool {
        self.max_running_backfill_runs.is_some()
            || self.max_running_per_dag.is_some()
            || self.pool_share_percent.is_some()
    }
}

/// `[identity]`: from the kernel-verified owner uid of a request to an Airflow user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Map a unix user name to the Airflow user name it acts as.
    pub map: std::collections::BTreeMap<String, String>,
    /// Whether a unix user absent from `map` acts as the Airflow user of the same name.
    /// When false, unmapped users are refused.
    pub same_name: bool,
    /// Uids (e.g. a web front end's service account) allowed to set `on_behalf_of`.
    pub trusted_submitters: Vec<u32>,
    /// The daemon's own uid when its HTTP listener is on: the HTTP layer submits requests
    /// on behalf of the Airflow users it authenticated, as files the daemon itself owns.
    #[serde(skip)]
    pub http_submitter: Option<u32>,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            map: std::collections::BTreeMap::new(),
            same_name: true,
            trusted_submitters: Vec::new(),
            http_submitter: None,
        }
    }
}

impl IdentitySection {
    /// The Airflow user a unix user acts as, or `None` when unmapped.
    pub fn airflow_user(&self, unix_name: &str) -> Option<String> {
        match self.map.get(unix_name) {
            Some(a) => Some(a.clone()),
            None if self.same_name => Some(unix_name.to_owned()),
            None => None,
        }
    }

    /// Whether `uid` may submit on behalf of another Airflow user.
    pub fn is_trusted(&self, uid: u32) -> bool {
        self.trusted_submitters.contains(&uid) || self.http_submitter == Some(uid)
    }
}

/// `[authz]`: how backfilld mirrors Airflow's permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzSection {
    /// Roles granted the `Backfills` permissions at start (`Admin` always is).
    pub permitted_roles: Vec<String>,
    /// The FAB resource (view menu) backfilld registers and checks, default `Backfills`.
    pub resource: String,
    /// With Airflow 3's SimpleAuthManager set to make everyone admin
    /// (`simple_auth_manager_all_admins`), authorise everyone anyway. Off by default: then
    /// nobody is authorised.
    pub allow_simple_all_admins: bool,
}

impl Default for AuthzSection {
    fn default() -> Self {
        AuthzSection {
            permitted_roles: vec!["User".into(), "Op".into()],
            resource: crate::authz::RESOURCE_BACKFILLS.to_owned(),
            allow_simple_all_admins: false,
        }
    }
}

/// Which auth manager the Airflow installation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthManager {
    /// Not configured: Airflow's default for its major version (FAB on 2, Simple on 3).
    Default,
    /// The FAB auth manager (`ab_*` tables).
    Fab,
    /// Airflow 3's SimpleAuthManager.
    Simple {
        /// `[core] simple_auth_manager_users` (`name:role,...`).
        users: String,
        /// `[core] simple_auth_manager_all_admins`.
        all_admins: bool,
    },
    /// Another auth manager backfilld cannot mirror: everyone is refused.
    Other(String),
}

/// `[airflow]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirflowSection {
    /// AIRFLOW_HOME.
    pub home: PathBuf,
    /// SQLAlchemy URL of the metadata DB; resolved as Airflow does when absent.
    pub sql_alchemy_conn: Option<String>,
    /// The DAGs folder; resolved as Airflow does when absent.
    pub dags_folder: Option<PathBuf>,
    /// Airflow's `[core] auth_manager` class; resolved as Airflow does when absent.
    pub auth_manager: Option<String>,
    /// The Python of Airflow's installation, which computes the runs of timetables backfilld
    /// does not compute natively; found from the `airflow` executable on `PATH` when absent.
    pub python: Option<PathBuf>,
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Root of the spool (holds `incoming/`, `active/`, `accepted/`, `rejected/`, `public/`).
    pub dir: PathBuf,
    /// Largest request file accepted, in bytes.
    pub max_request_bytes: u64,
    /// Seconds between full rescans of `incoming/` (events are only a hint).
    pub rescan_interval_secs: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            max_request_bytes: 64 * 1024,
            rescan_interval_secs: 30,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// The unix socket; default `<spool>/public/control.sock`.
    pub socket: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Highest `max_active_runs` a request may ask for.
    pub max_active_runs: u32,
    /// Most logical dates one request may cover.
    pub max_dates_per_request: usize,
    /// Most claimed, undecided requests one uid may have; files beyond are rejected.
    pub max_pending_per_user: usize,
    /// Most unfinished (submitted, queued, running, paused) backfills one Airflow user may
    /// have; a create or retry beyond is refused.
    pub max_active_backfills_per_user: usize,
    /// Request files of one uid decided per minute (a minute's worth may come at once); the
    /// rest wait in `incoming/`, unclaimed and not lost, for their turn. Root and trusted
    /// submitters (the daemon's own uid included) are not paced;
    /// 0 turns pacing off.
    pub max_files_per_user_per_minute: u32,
    /// Denials of one requester written to the audit table per minute; beyond, they are
    /// counted and written as one summary row. 0 writes every denial.
    pub max_audited_denials_per_user_per_minute: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_active_runs: 10,
            max_dates_per_request: 5000,
            max_pending_per_user: 20,
            max_active_backfills_per_user: 20,
            max_files_per_user_per_minute: 120,
            max_audited_denials_per_user_per_minute: 30,
        }
    }
}

/// `[reconcile]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSection {
    /// Seconds between reconcile passes.
    pub interval_secs: u64,
    /// Seconds Airflow may take to register a copy before the backfill fails.
    pub register_timeout_secs: u64,
    /// Days after a backfill finishes that it is deleted, when its request sets no
    /// `delete_after_days`; unset keeps finished backfills until deleted by hand.
    pub delete_after_days: Option<u32>,
    /// Create a copy's next runs as queued `dag_run` rows once the scheduler made its first
    /// (as fast as Airflow's own backfill), instead of one run per scheduler loop or steering
    /// round. On by default; set `false` for one run per scheduler loop.
    pub create_runs: bool,
}

impl Default for ReconcileSection {
    fn default() -> Self {
        ReconcileSection {
            interval_secs: 5,
            register_timeout_secs: 600,
            delete_after_days: None,
            create_runs: true,
        }
    }
}

/// Whether configuration text holds a password: a URL with one (`scheme://user:secret@host`)
/// or a `password`/`secret` key with a value, outside comments.
pub fn holds_password(text: &str) -> bool {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(code, _)| code).trim())
        .filter(|l| !l.is_empty())
        .any(|line| {
            let url_secret = line.match_indices("://").any(|(i, _)| {
                let rest = &line[i + 3..];
                let authority = rest.split(['/', '"', '\'', ' ']).next().unwrap_or("");
                authority
                    .rsplit_once('@')
                    .and_then(|(userinfo, _)| userinfo.split_once(':'))
                    .is_some_and(|(_, secret)| !secret.is_empty())
            });
            let key_secret = line.split_once('=').is_some_and(|(key, value)| {
                let key = key.trim().to_ascii_lowercase();
                (key.contains("password") || key.ends_with("secret"))
                    && !matches!(value.trim(), "" | "\"\"" | "''" | "true" | "false")
            });
            url_secret || key_secret
        })
}

/// A warning when the config file at `path` holds a password and others may read it.
pub fn exposed_secret_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    let text = std::fs::read_to_string(path).ok()?;
    (mode & 0o004 != 0 && holds_password(&text)).then(|| {
        format!(
            "{} holds a password and is readable by every local user (mode {:o}); \
             make it 0640 root:backfilld (chmod 0640, chgrp backfilld)",
            path.display(),
            mode & 0o7777
        )
    })
}

impl Config {
    /// Read and validate the configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate configuration text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let bad = |key: &'static str, message: &str| ConfigError::Value {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if let Some(level) = &config.log.level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
                return Err(bad("log.level", &format!("not a tracing filter: {e}")));
            }
        }
        if !config.airflow.home.is_absolute() {
            return Err(bad("airflow.home", "must be an absolute path"));
        }
        if config
            .airflow
            .python
            .as_ref()
            .is_some_and(|p| !p.is_absolute())
        {
            return Err(bad("airflow.python", "must be an absolute path"));
        }
        if !config.spool.dir.is_absolute() {
            return Err(bad("spool.dir", "must be an absolute path"));
        }
        if config.spool.max_request_bytes == 0 || config.spool.max_request_bytes > 16 * 1024 * 1024
        {
            return Err(bad("spool.max_request_bytes", "must be 1..=16777216"));
        }
        if config.spool.rescan_interval_secs == 0 {
            return Err(bad("spool.rescan_interval_secs", "must be at least 1"));
        }
        if config.limits.max_active_runs == 0 {
            return Err(bad("limits.max_active_runs", "must be at least 1"));
        }
        if config.limits.max_dates_per_request == 0 {
            return Err(bad("limits.max_dates_per_request", "must be at least 1"));
        }
        if config.limits.max_pending_per_user == 0 {
            return Err(bad("limits.max_pending_per_user", "must be at least 1"));
        }
        for (key, d) in [
            ("retention.decided_files", config.retention.decided_files),
            (
                "retention.request_records",
                config.retention.request_records,
            ),
        ] {
            if d < std::time::Duration::from_secs(1) {
                return Err(bad(key, "must be at least 1s"));
            }
        }
        if let Some(h) = &config.cluster.host_id {
            if h.is_empty() || h.len() > 255 || h.chars().any(char::is_control) {
                return Err(bad(
                    "cluster.host_id",
                    "must be 1 to 255 characters without control characters",
                ));
            }
        }
        if !(2..=3600).contains(&config.cluster.lease_secs) {
            return Err(bad("cluster.lease_secs", "must be 2..=3600"));
        }
        if config.cluster.lease_secs <= config.reconcile.interval_secs {
            return Err(bad(
                "cluster.lease_secs",
                "must be longer than [reconcile] interval_secs (the leader renews its claim every pass)",
            ));
        }
        let resource = config.authz.resource.as_str();
        if resource.trim().is_empty()
            || resource.chars().count() > 250
            || resource.chars().any(char::is_control)
        {
            return Err(bad(
                "authz.resource",
                "must be 1 to 250 characters without control characters",
            ));
        }
        if resource == crate::authz::RESOURCE_DAGS
            || resource.starts_with(crate::authz::RESOURCE_DAG_PREFIX)
        {
            return Err(bad(
                "authz.resource",
                "must not be Airflow's DAG resource (DAGs or DAG:<dag_id>): granting backfilld's actions there would change who may edit DAGs",
            ));
        }
        if config.approval.approver_roles.is_empty()
            || config
                .approval
                .approver_roles
                .iter()
                .any(|r| r.trim().is_empty() || r.chars().any(char::is_control))
        {
            return Err(bad(
                "approval.approver_roles",
                "must name at least one role, each non-empty (nobody could approve otherwise)",
            ));
        }
        if config.limits.max_active_backfills_per_user == 0 {
            return Err(bad(
                "limits.max_active_backfills_per_user",
                "must be at least 1",
            ));
        }
        if let Some((unix, _)) = config
            .identity
            .map
            .iter()
            .find(|(u, a)| u.is_empty() || a.is_empty())
        {
            return Err(bad(
                "identity.map",
                &format!("entry {unix:?}: names must be non-empty"),
            ));
        }
        if config
            .throttle
            .pool_share_percent
            .is_some_and(|p| p == 0 || p > 100)
        {
            return Err(bad("throttle.pool_share_percent", "must be 1..=100"));
        }
        if config
            .metrics
            .textfile
            .as_ref()
            .is_some_and(|p| !p.is_absolute() || p.file_name().is_none())
        {
            return Err(bad("metrics.textfile", "must be an absolute file path"));
        }
        if config.reconcile.interval_secs == 0 {
            return Err(bad("reconcile.interval_secs", "must be at least 1"));
        }
        if config.http.tls_cert.is_some() != config.http.tls_key.is_some() {
            return Err(bad("http.tls_cert", "tls_cert and tls_key go together"));
        }
        if config.http.max_failed_logins == 0 {
            return Err(bad("http.max_failed_logins", "must be at least 1"));
        }
        if config.http.session_secs == 0 || config.http.decide_timeout_secs == 0 {
            return Err(bad(
                "http.session_secs",
                "session_secs and decide_timeout_secs must be at least 1",
            ));
        }
        config.http.base_path = config.http.base_path.trim_end_matches('/').to_owned();
        if !config.http.base_path.is_empty()
            && (!config.http.base_path.starts_with('/')
                || config.http.base_path.contains("//")
                || !config
                    .http
                    .base_path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)))
        {
            return Err(bad(
                "http.base_path",
                "must start with one / and hold only letters, digits, single /, -, _ and .",
            ));
        }
        notifications::check(&config.notifications).map_err(|(key, m)| bad(key, &m))?;
        if config
            .http
            .public_url
            .as_deref()
            .is_some_and(|u| crate::notification::check_url(u).is_err())
        {
            return Err(bad("http.public_url", "must be an http(s) URL"));
        }
        if config.http.listen.is_some() {
            config.identity.http_submitter = Some(nix::unistd::geteuid().as_raw());
        }
        Ok(config)
    }

    /// The control socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.spool.dir.join("public").join("control.sock"))
    }

    /// Seconds between reconcile passes.
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile.interval_secs)
    }
}

#[cfg(test)]
mod conn_cmd_tests;

#[cfg(test)]
mod tests;
