//! The engine: the one owner of the metadata-DB connection. It ingests spool files, writes DAG
//! copies, reconciles state, and answers control queries, one command at a time on its own
//! thread (diesel is synchronous; serialising the work also keeps every decision ordered).
//!
//! Ingest of a file is idempotent: its outcome is recorded under the file's durable key in the
//! same transaction that creates the backfill, and only then is the file moved out of
//! `active/`. A crash at any point leaves the file in `incoming/` or `active/`, and the next
//! pass either decides it or, finding the key recorded, just finishes the move.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use chrono::Utc;

use crate::approval;
use crate::authz::{self, Action, SimpleRole, Subject};
use crate::config::{AirflowLocation, AuthManager, Config, ThrottleSection};
use crate::control::{BackfillView, ControlRequest, ControlResponse};
use crate::dagcopy::{self, CopyOptions, CopySpec, TaskSubset};
use crate::failpoint;
use crate::lifecycle::{self, Effect, Facts, Reprocess};
use crate::metadb::airflow;
use crate::metadb::airflow::{Airflow, AirflowSchema, Generation};
use crate::metadb::fab::Fab;
use crate::metadb::lease::{ClaimInfo, Leases, LEADER};
use crate::metadb::pass::{self, Pass, PassRow};
use crate::metadb::store::{
    self, AuditEntry, BackfillOptions, BackfillRow, NewBackfill, PendingOp, RequestRecord, Store,
};
use crate::metadb::{DbError, MetaDb};
use crate::ordering::{self, Gate};
use crate::reconcile::{self, Observation, RunState, RunSummary};
use crate::request::{self, fmt_ts, Operation, Parsed, ReasonCode, Rejection, Request};
use crate::service::ServiceManager;
use crate::spool::{self, ClaimedFile, Disposition, Spool};
use crate::state::BackfillState;
use crate::steer::{self, RunOrder};
use crate::taskset;
use crate::throttle;

mod abuse;
mod dates;
mod ingest;
mod limits;
mod metrics;
mod pass_cache;
mod seed;
mod steering;
pub mod web;

/// A unit of work for the engine thread.
pub enum Command {
    /// Claim and decide spool files.
    Scan,
    /// Answer a control request from `uid`.
    Query {
        /// Caller uid (from `SO_PEERCRED`).
        uid: u32,
        /// The request.
        request: ControlRequest,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<ControlResponse>,
    },
    /// Apply a re-read configuration (what can change live: intervals, limits, identity
    /// and permission settings).
    Reload(Box<Config>),
    /// A request of the HTTP layer for a user it authenticated (see [`web`]).
    Web(web::WebCommand),
    /// Finish and return.
    Stop,
}

struct Connected {
    db: MetaDb,
    schema: AirflowSchema,
    auth: AuthSource,
    /// What the last reconcile pass read (dropped with the connection: full pass after).
    pass_cache: Option<pass_cache::PassCache>,
}

/// Where users, roles and permissions come from, decided at connect time.
#[derive(Debug, Clone)]
enum AuthSource {
    /// FAB's `ab_*` tables.
    Fab,
    /// Airflow 3's SimpleAuthManager users and roles.
    Simple {
        users: Vec<(String, SimpleRole)>,
        all_admins: bool,
    },
    /// Nobody can be authorised; the reason says why.
    Unavailable(String),
}

/// Who a request or query is from, as far as it was resolved.
#[derive(Debug, Clone, Default)]
struct Identity {
    uid: Option<u32>,
    unix_user: Option<String>,
    airflow_user: Option<String>,
    on_behalf_of: Option<String>,
}

/// A caller resolved to an Airflow user with its permissions, or refused (with the identity as
/// far as it was resolved).
type Resolved = Result<(Identity, Subject), (Identity, Rejection)>;

/// The outcome of validating a file, with who it was decided for.
struct Verdict {
    ident: Identity,
    action: Action,
    target: Option<String>,
    result: Result<Accepted, Rejection>,
}

/// What an accepted file does.
enum Accepted {
    /// Create this backfill.
    Create(Box<NewBackfill>),
    /// A dry run: this backfill would be created; nothing is.
    DryRun(Box<NewBackfill>),
    /// A life-cycle action on backfill `id`; a retry creates the backfills in `retry` (one
    /// per run of consecutive failed dates); a reject carries its `reason`.
    Operate {
        id: String,
        effect: Effect,
        retry: Vec<NewBackfill>,
        reason: Option<String>,
    },
}

/// How long after a delete backfilld keeps removing rows Airflow may still write for the
/// copy (a parse of the file that was in flight when it was removed).
const DELETE_SETTLE_SECS: i64 = 30;

/// The engine state.
pub struct Engine {
    config: Config,
    airflow: AirflowLocation,
    spool: Spool,
    host: String,
    conn: Option<Connected>,
    next_connect: Instant,
    backoff: Duration,
    outage_reported: bool,
    service: ServiceManager,
    stop: Arc<AtomicBool>,
    unfinished_by_state: BTreeMap<BackfillState, usize>,
    watermark: Option<chrono::DateTime<Utc>>,
    passes_since_full: u32,
    turn_ended: HashMap<String, chrono::DateTime<Utc>>,
    last_pass: PassStats,
    recent_reads: HashMap<(Option<u32>, Option<String>), Instant>,
    /// A seed import job may be running: the loop runs its batches between other work.
    import_active: bool,
    /// After a lost connection, the next batch waits until then.
    import_retry_at: Option<Instant>,
    leader_token: Option<i64>,
    verified_copies: HashMap<String, CopyFingerprint>,
    passes: u64,
    last_pass_at: Option<(chrono::DateTime<Utc>, f64)>,
    metrics: crate::metrics::Published,
    steer_plans: steering::SteerPlans,
    airflow_python: crate::airflow_python::AirflowPython,
    batch: Option<ingest::BatchCache>,
    guards: abuse::Guards,
}

/// What a copy file looked like when this agent last wrote or checked it: a file whose size,
/// modification time and inode are unchanged is not read again.
type CopyFingerprint = (u64, i64, u64);

/// An allowed read by the same uid of the same target within this window is traced but not
/// written to `backfilld_audit` again (`backfillctl status --watch` polls every few seconds).
const READ_AUDIT_WINDOW: Duration = Duration::from_secs(300);

/// Longest wait between reconnect attempts: after an outage, requests wait at most this long.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Figures of one reconcile pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Unfinished backfills looked at.
    pub backfills: usize,
    /// Backfills whose run counts were brought up to date: by the runs that changed, or
    /// counted again (all of them in a full pass).
    pub recomputed: usize,
    /// Backfill rows written.
    pub changed: usize,
    /// Copies the throttle paused.
    pub paused: usize,
    /// Copies the throttle unpaused.
    pub unpaused: usize,
    /// Statements sent to the metadata DB.
    pub queries: u64,
    /// Whether it was a full pass (not incremental).
    pub full: bool,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// Every this many passes, a full pass reads every backfill and counts every copy's runs again
/// (heals anything an incremental pass cannot see, such as a deleted finished run; the other
/// reasons for a full pass are in `engine::pass_cache`).
const FULL_PASS_EVERY: u32 = 60;
/// In a shared DAGs folder, how long after a copy's write was claimed a missing file is left
/// to the claiming agent before the leader restores it.
const COPY_WRITE_GRACE_SECS: i64 = 10;

impl Engine {
    /// An engine over an opened spool; connects lazily.
    pub fn new(config: Config, airflow: AirflowLocation, spool: Spool) -> Engine {
        let host = config.cluster.host_id();
        let airflow_python = crate::airflow_python::AirflowPython::new(
            config.airflow.python.clone(),
            config.airflow.home.clone(),
        );
        let guards = abuse::Guards::new(&config.limits);
        Engine {
            config,
            airflow,
            spool,
            host,
            recent_reads: HashMap::new(),
            import_active: true,
            import_retry_at: None,
            leader_token: None,
            verified_copies: HashMap::new(),
            conn: None,
            next_connect: Instant::now(),
            backoff: Duration::from_millis(500),
            outage_reported: false,
            service: ServiceManager::from_env(),
            stop: Arc::new(AtomicBool::new(false)),
            unfinished_by_state: BTreeMap::new(),
            watermark: None,
            passes_since_full: 0,
            turn_ended: HashMap::new(),
            last_pass: PassStats::default(),
            passes: 0,
            last_pass_at: None,
            metrics: crate::metrics::Published::default(),
            steer_plans: steering::SteerPlans::new(),
            airflow_python,
            batch: None,
            guards,
        }
    }

    /// The last rendered metrics, for the HTTP listener's `/metrics`.
    pub fn metrics_cell(&self) -> crate::metrics::Published {
        self.metrics.clone()
    }

    /// Set to make the engine stop between two files of a scan (the one in hand is finished).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Ready once the DB is reachable (schema detected, migrations done); keep STATUS= current
    /// and ping the watchdog. Called once per loop iteration, so a hung loop stops the pings.
    fn tick_service(&mut self) {
        if self.conn.is_some() {
            self.service.ready();
        }
        let waiting = self.spool.incoming().map(|v| v.len()).unwrap_or(0)
            + self.spool.claimed().map(|v| v.len()).unwrap_or(0);
        let status = if self.conn.is_some() {
            let count = |s: BackfillState| self.unfinished_by_state.get(&s).copied().unwrap_or(0);
            let role = if self.leader_token.is_some() {
                "leader"
            } else {
                "follower"
            };
            format!(
                "{} running, {} queued, {} submitted, {} paused backfills; {waiting} requests waiting; db ok; {role} ({})",
                count(BackfillState::Running),
                count(BackfillState::Queued),
                count(BackfillState::Submitted),
                count(BackfillState::Paused),
                self.host,
            )
        } else {
            format!("waiting for database; {waiting} requests waiting")
        };
        self.service.status(&status);
        self.service.watchdog();
    }

    /// Make sure a connection is up (connect, detect the schema, migrate), with backoff.
    pub fn ensure_connected(&mut self) -> Result<(), DbError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_connect {
            return Err(DbError::Connect {
                url: self.airflow.db.to_string(),
                message: "waiting to reconnect".into(),
            });
        }
        let attempt = (|| {
            let mut db = MetaDb::connect(&self.airflow.db)?;
            let schema = AirflowSchema::detect(&mut db)?;
            let version = store::migrate(&mut db)?;
            let auth = self.auth_source(&mut db, &schema)?;
            Ok::<_, DbError>((db, schema, version, auth))
        })();
        match attempt {
            Ok((db, schema, version, auth)) => {
                tracing::info!(db = %self.airflow.db, generation = ?schema.generation, revision = %schema.revision, backfilld_schema = version, auth = ?auth_name(&auth), "connected to the metadata DB");
                self.conn = Some(Connected {
                    db,
                    schema,
                    auth,
                    pass_cache: None,
                });
                self.backoff = Duration::from_millis(500);
                self.outage_reported = false;
                Ok(())
            }
            Err(e) => {
                if !self.outage_reported || self.backoff >= MAX_BACKOFF {
                    tracing::error!(error = %e, retry_in_ms = self.backoff.as_millis() as u64, "metadata DB unavailable; requests wait in the spool");
                    self.outage_reported = true;
                }
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    /// Detect the auth manager and, with FAB, register the `Backfills` permissions.
    fn auth_source(&self, db: &mut MetaDb, schema: &AirflowSchema) -> Result<AuthSource, DbError> {
        let setting = match self.config.resolve_auth_manager() {
            Ok(s) => s.for_generation(schema.generation == Generation::V3, None),
            Err(e) => return Ok(AuthSource::Unavailable(e.to_string())),
        };
        Ok(match setting {
            AuthManager::Fab | AuthManager::Default => {
                let mut fab = Fab::new(db);
                if !fab.present()? {
                    return Ok(AuthSource::Unavailable(
                        "Airflow uses the FAB auth manager but the metadata DB has no ab_* tables (run `airflow db migrate` / `airflow fab-db migrate`)".into(),
                    ));
                }
                match fab.register_backfills(
                    &self.config.authz.permitted_roles,
                    &self.config.authz.resource,
                ) {
                    Ok(reg) => {
                        tracing::info!(inserted = reg.inserted, granted = ?reg.granted, "registered the Backfills permissions in Airflow");
                        if !reg.missing_roles.is_empty() {
                            tracing::warn!(roles = ?reg.missing_roles, "permitted roles missing in Airflow (run `airflow sync-perm` or create them); restart backfilld to grant them");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register the Backfills permissions in Airflow")
                    }
                }
                AuthSource::Fab
            }
            AuthManager::Simple { users, all_admins } => match authz::parse_simple_users(&users) {
                Ok(users) => AuthSource::Simple { users, all_admins },
                Err(e) => AuthSource::Unavailable(format!(
                    "cannot read Airflow's simple_auth_manager_users: {e}"
                )),
            },
            AuthManager::Other(class) => AuthSource::Unavailable(format!(
                "Airflow uses the auth manager {class}, which backfilld cannot mirror"
            )),
        })
    }

    /// Resolve who `uid` acts as and load that Airflow user's permissions. `Ok(Err(_))` is a
    /// refusal (with the identity as far as it was resolved); `Err(_)` a DB problem.
    fn subject(&mut self, uid: u32, on_behalf_of: Option<&str>) -> Result<Resolved, DbError> {
        let mut ident = Identity {
            uid: Some(uid),
            ..Identity::default()
        };
        let Some(unix) = self.user_name(uid) else {
            return Ok(Err((
                ident,
                Rejection::new(
                    ReasonCode::UnknownUser,
                    format!("uid {uid} has no user name on this host"),
                ),
            )));
        };
        ident.unix_user = Some(unix.clone());
        let airflow_user = match on_behalf_of {
            Some(other) if !self.config.identity.is_trusted(uid) => {
                ident.on_behalf_of = Some(other.to_owned());
                return Ok(Err((
                    ident,
                    Rejection::new(
                        ReasonCode::OnBehalfNotAllowed,
                        format!("user {unix:?} (uid {uid}) is not a trusted submitter and may not set on_behalf_of"),
                    ),
                )));
            }
            Some(other) => {
                ident.on_behalf_of = Some(other.to_owned());
                other.to_owned()
            }
            None => match self.config.identity.airflow_user(&unix) {
                Some(a) => a,
                None => {
                    return Ok(Err((
                        ident,
                        Rejection::new(
                            ReasonCode::UnmappedUser,
                            format!("unix user {unix:?} (uid {uid}) is not mapped to an Airflow user in backfilld's [identity] configuration"),
                        ),
                    )))
                }
            },
        };
        self.airflow_subject(ident, airflow_user)
    }

    /// Load the permissions of Airflow user `airflow_user` (a spool requester's mapped user,
    /// or a user the HTTP layer authenticated). `Ok(Err(_))` is a refusal.
    fn airflow_subject(
        &mut self,
        mut ident: Identity,
        airflow_user: String,
    ) -> Result<Resolved, DbError> {
        ident.airflow_user = Some(airflow_user.clone());
        let permitted = self.config.authz.permitted_roles.clone();
        let resource = self.config.authz.resource.clone();
        let resource = resource.as_str();
        let allow_all_admins = self.config.authz.allow_simple_all_admins;
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let no_user = |ident: Identity| {
            Ok(Err((
                ident,
                Rejection::new(
                    ReasonCode::NoAirflowUser,
                    format!("Airflow has no user {airflow_user:?}"),
                ),
            )))
        };
        let subject = match &c.auth {
            AuthSource::Unavailable(why) => {
                return Ok(Err((
                    ident,
                    Rejection::new(ReasonCode::AuthUnavailable, why.clone()),
                )))
            }
            AuthSource::Fab => {
                let cached = self
                    .batch
                    .as_ref()
                    .and_then(|b| b.subjects.get(&airflow_user).cloned());
                let subject = match cached {
                    Some(subject) => subject,
                    None => {
                        let mut fab = Fab::new(&mut c.db);
                        let subject = match fab.user(&airflow_user)? {
                            Some(user) => Some(fab.subject(&user, resource)?),
                            None => None,
                        };
                        if let Some(b) = self.batch.as_mut() {
                            b.subjects.insert(airflow_user.clone(), subject.clone());
                        }
                        subject
                    }
                };
                let Some(subject) = subject else {
                    return no_user(ident);
                };
                subject
            }
            AuthSource::Simple { all_admins: true, .. } if !allow_all_admins => {
                return Ok(Err((
                    ident,
                    Rejection::new(
                        ReasonCode::AuthUnavailable,
                        "Airflow's SimpleAuthManager makes everyone admin (simple_auth_manager_all_admins); backfilld authorises nobody unless [authz] allow_simple_all_admins = true",
                    ),
                )))
            }
            AuthSource::Simple { all_admins: true, .. } => Subject {
                username: airflow_user.clone(),
                active: true,
                roles: vec![SimpleRole::Admin.name().to_owned()],
                grants: authz::simple_grants(SimpleRole::Admin, &permitted, resource),
                backfill_resource: resource.to_owned(),
            },
            AuthSource::Simple { users, .. } => {
                let Some((_, role)) = users.iter().find(|(u, _)| *u == airflow_user) else {
                    return no_user(ident);
                };
                Subject {
                    username: airflow_user.clone(),
                    active: true,
                    roles: vec![role.name().to_owned()],
                    grants: authz::simple_grants(*role, &permitted, resource),
                    backfill_resource: resource.to_owned(),
                }
            }
        };
        Ok(Ok((ident, subject)))
    }

    /// Record an authorization decision: a structured event and a `backfilld_audit` row.
    fn audit(
        &mut self,
        ident: &Identity,
        action: Action,
        target: Option<&str>,
        denial: Option<&Rejection>,
    ) -> Result<(), DbError> {
        let entry = AuditEntry {
            at: store::stored_ts(Utc::now()),
            uid: ident.uid,
            unix_user: ident.unix_user.clone(),
            airflow_user: ident.airflow_user.clone(),
            on_behalf_of: ident.on_behalf_of.clone(),
            action: action.as_str().to_owned(),
            target: target.map(str::to_owned),
            allowed: denial.is_none(),
            reason_code: denial.map(|d| d.code),
            reason: denial.map(|d| d.message.clone()),
        };
        emit_audit(&entry);
        if !entry.allowed {
            return self.audit_denial_row(&entry);
        }
        let host = self.host.clone();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        Store::new(&mut c.db).audit(&host, &entry)
    }

    fn lost(&mut self, e: &DbError) {
        if e.is_connection_lost() {
            tracing::warn!(error = %e, "lost the metadata DB connection; will reconnect");
            self.conn = None;
        }
    }

    /// Run commands until `Stop` or the channel closes; between commands, rescan and reconcile
    /// on their intervals.
    pub fn run(mut self, commands: std::sync::mpsc::Receiver<Command>) {
        let mut rescan_every = Duration::from_secs(self.config.spool.rescan_interval_secs);
        let mut reconcile_every = self.config.reconcile_interval();
        let mut next_rescan = Instant::now();
        let mut next_reconcile = Instant::now();
        loop {
            self.tick_service();
            let now = Instant::now();
            if now >= next_rescan {
                self.scan();
                next_rescan = now + self.paced_rescan(rescan_every);
            }
            if now >= next_reconcile {
                self.reconcile();
                next_reconcile = Instant::now() + reconcile_every;
            }
            let importing = self.import_active && self.import_retry_at.is_none_or(|t| now >= t);
            if importing {
                // One batch, then the commands and passes that came meanwhile.
                let _ = self.import_step();
            }
            let wait = if importing && self.import_active {
                Duration::ZERO
            } else {
                next_rescan
                    .min(next_reconcile)
                    .min(self.import_retry_at.unwrap_or(next_reconcile))
                    .saturating_duration_since(Instant::now())
                    .min(self.service.max_sleep())
            };
            let first = match commands.recv_timeout(wait) {
                Ok(c) => c,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Command::Stop,
            };
            // Take the whole burst, so many doorbells cost one scan.
            let mut batch = vec![first];
            batch.extend(commands.try_iter());
            let mut scan = false;
            for command in batch {
                match command {
                    Command::Scan => scan = true,
                    Command::Query {
                        uid,
                        request,
                        reply,
                    } => {
                        let answer = self.query(uid, request);
                        let _ = reply.send(answer);
                    }
                    Command::Reload(config) => {
                        self.config = *config;
                        self.guards.reconfigure(&self.config.limits);
                        rescan_every = Duration::from_secs(self.config.spool.rescan_interval_secs);
                        reconcile_every = self.config.reconcile_interval();
                        next_reconcile = Instant::now();
                        tracing::info!("configuration reloaded");
                        self.service.reloaded();
                    }
                    Command::Web(command) => self.web(command),
                    Command::Stop => {
                        tracing::info!("engine stopping");
                        self.release_claims();
                        return;
                    }
                }
            }
            if scan {
                self.scan();
                next_rescan = next_rescan.min(Instant::now() + self.paced_rescan(rescan_every));
            }
        }
    }

    /// Decide one claimed file: record its outcome, then move it.
    fn decide_file(
        &mut self,
        file: ClaimedFile,
        pending: &mut HashMap<u32, usize>,
    ) -> Result<(), DbError> {
        self.ensure_connected()?;
        let record = self.record_of(file.clone(), pending)?;
        if record.backfill_id.is_some() {
            failpoint::hang_if_armed(failpoint::AFTER_ACCEPT);
        }
        let to = if record.outcome == "accepted" {
            Disposition::Accepted
        } else {
            Disposition::Rejected
        };
        let receipt = serde_json::to_value(&record).map_err(|e| DbError::Data(e.to_string()))?;
        self.spool
            .finish(&file.claim_name, to, &receipt)
            .map_err(|e| DbError::Data(e.to_string()))?;
        if let Some(id) = record.backfill_id {
            if self.leader_token.is_some() {
                self.carry_out_id(&id);
            }
            self.reconcile_id(&id);
        }
        Ok(())
    }

    /// The outcome of a claimed file: the one recorded under its key, or a new decision
    /// (recorded, and audited). `pending` counts the new files of each uid in this pass.
    fn record_of(
        &mut self,
        mut file: ClaimedFile,
        pending: &mut HashMap<u32, usize>,
    ) -> Result<RequestRecord, DbError> {
        let recorded = {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Store::new(&mut c.db).request(&file.key)?
        };
        let record = match recorded {
            Some(r) => r,
            None => {
                let owner = match &file.content {
                    Ok(c) => Some(c.uid),
                    Err((uid, _)) => *uid,
                };
                if let Some(uid) = owner {
                    let n = pending.entry(uid).or_insert(0);
                    *n += 1;
                    let max = self.config.limits.max_pending_per_user;
                    if *n > max {
                        file.content = Err((
                            Some(uid),
                            Rejection::new(
                                ReasonCode::TooManyPending,
                                format!("refused: uid {uid} has more than {max} requests waiting, [limits] max_pending_per_user = {max}; resubmit once they are decided"),
                            ),
                        ));
                    }
                }
                let record = self.evaluate(&file)?;
                if let Some(id) = &record.backfill_id {
                    tracing::info!(request = %file.file_name, uid = record.uid, user = ?record.username, backfill = %id, "request accepted");
                } else {
                    tracing::info!(request = %file.file_name, uid = record.uid, user = ?record.username, code = ?record.reason_code, reason = ?record.reason, "request rejected");
                }
                record
            }
        };
        Ok(record)
    }

    /// Validate a new file and record the outcome (accepting creates the backfill atomically).
    fn evaluate(&mut self, file: &ClaimedFile) -> Result<RequestRecord, DbError> {
        let verdict = match &file.content {
            Err((uid, rejection)) => Verdict {
                ident: Identity {
                    uid: *uid,
                    unix_user: uid.and_then(spool::user_name),
                    ..Identity::default()
                },
                action: Action::Create,
                target: None,
                result: Err(rejection.clone()),
            },
            Ok(content) => self.validate(content.uid, &content.bytes)?,
        };
        let Verdict {
            ident,
            action,
            target,
            result: verdict,
        } = verdict;
        let target = target.unwrap_or_else(|| format!("file:{}", file.file_name));
        self.audit(&ident, action, Some(&target), verdict.as_ref().err())?;
        let uid = ident.uid;
        let username = ident.unix_user.clone();
        let mut record = RequestRecord {
            request_key: file.key.clone(),
            file_name: file.file_name.clone(),
            uid: uid.unwrap_or(u32::MAX),
            username: username.clone(),
            host: self.host.clone(),
            received_at: store::stored_ts(Utc::now()),
            outcome: "rejected".into(),
            backfill_id: None,
            reason_code: None,
            reason: None,
            airflow_user: ident.airflow_user.clone(),
            on_behalf_of: ident.on_behalf_of.clone(),
            action: Some(action.as_str().to_owned()),
            dry_run: false,
            dates: None,
            skipped_dates: None,
            warnings: None,
        };
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        match verdict {
            Err(rejection) => {
                record.reason_code = Some(rejection.code);
                record.reason = Some(rejection.message);
                Store::new(&mut c.db).record_request(&record)?;
            }
            Ok(Accepted::DryRun(new)) => {
                record.outcome = "accepted".into();
                record.dry_run = true;
                // In the order they would run (newest first for `run_backwards`).
                let in_order = new.options.run_order.arrange(&new.logical_dates);
                record.dates = Some(in_order.iter().map(|d| fmt_ts(*d)).collect());
                record.skipped_dates = skipped_of(&new);
                record.warnings = warnings_of(&new);
                Store::new(&mut c.db).record_request(&record)?;
            }
            Ok(Accepted::Operate {
                id,
                effect,
                retry,
                reason,
            }) => {
                let host = self.host.clone();
                let by = ident.airflow_user.clone().unwrap_or_default();
                let key = file.key.clone();
                let done = c.db.transaction(|db| {
                    let mut s = Store::new(db);
                    if let Some(existing) = s.request(&key)? {
                        return Ok::<_, DbError>((existing.backfill_id, existing.warnings));
                    }
                    let now = Utc::now();
                    let affected = match (effect, &retry) {
                        (Effect::Withdraw, _) => {
                            let reason =
                                format!("withdrawn by {by} before its DAG copy was written");
                            s.withdraw(&id, &reason, now)?
                                || s.cancel(&id, &format!("cancelled by {by}"), now)?
                        }
                        (Effect::CancelRuns, _) => {
                            s.cancel(&id, &format!("cancelled by {by}"), now)?
                        }
                        (Effect::PauseCopy, _) => s.set_user_paused(&id, true, now)?,
                        (Effect::ResumeCopy, _) => s.set_user_paused(&id, false, now)?,
                        (Effect::DeleteCopy, _) => s.mark_deleted(&id, now)?,
                        (Effect::Approve, _) => s.approve(&id, &by, now)?,
                        (Effect::Reject, _) => {
                            let why = reason.as_deref().unwrap_or("no reason given");
                            s.reject(&id, &by, &format!("rejected by {by}: {why}"), now)?
                        }
                        (Effect::RetryFailed, new) if !new.is_empty() => {
                            let mut ids = Vec::new();
                            for one in new {
                                let new_id = free_id(&mut s, &one.dag_id)?;
                                s.insert_backfill(&new_id, one, &host, &key, now)?;
                                ids.push(new_id);
                            }
                            let mut accepted = record.clone();
                            accepted.outcome = "accepted".into();
                            accepted.backfill_id = ids.first().cloned();
                            if ids.len() > 1 {
                                accepted.warnings = Some(vec![format!(
                                    "the failed dates are not consecutive: the retry is {} backfills, {}",
                                    ids.len(),
                                    ids.join(", ")
                                )]);
                            }
                            s.record_request(&accepted)?;
                            return Ok((ids.first().cloned(), accepted.warnings));
                        }
                        (Effect::RetryFailed, _) => false,
                    };
                    if !affected {
                        return Err(DbError::Data(format!(
                            "backfill {id} changed while {} was decided; deciding again",
                            action.as_str()
                        )));
                    }
                    let mut accepted = record.clone();
                    accepted.outcome = "accepted".into();
                    accepted.backfill_id = Some(id.clone());
                    s.record_request(&accepted)?;
                    Ok((Some(id.clone()), None))
                })?;
                record.outcome = "accepted".into();
                record.backfill_id = done.0;
                if done.1.is_some() {
                    record.warnings = done.1;
                }
            }
            Ok(Accepted::Create(new)) => {
                record.skipped_dates = skipped_of(&new);
                record.warnings = warnings_of(&new);
                let host = self.host.clone();
                let mut cursor = self
                    .batch
                    .as_mut()
                    .and_then(|b| b.ids.get(&new.dag_id).copied());
                let id = c.db.transaction(|db| {
                    let mut s = Store::new(db);
                    if let Some(existing) = s.request(&file.key)? {
                        return Ok::<_, DbError>(existing.backfill_id);
                    }
                    let id = free_id_from(&mut s, &new.dag_id, &mut cursor)?;
                    s.insert_backfill(&id, &new, &host, &file.key, Utc::now())?;
                    let mut accepted = record.clone();
                    accepted.outcome = "accepted".into();
                    accepted.backfill_id = Some(id.clone());
                    s.record_request(&accepted)?;
                    Ok(Some(id))
                })?;
                if let (Some(b), Some(cursor)) = (self.batch.as_mut(), cursor) {
                    b.ids.insert(new.dag_id.clone(), cursor);
                }
                record.outcome = "accepted".into();
                record.backfill_id = id;
            }
        }
        Ok(record)
    }

    /// Every check of a request. `Ok(Err(_))` is a rejection; `Err(_)` a DB problem.
    fn validate(&mut self, uid: u32, bytes: &[u8]) -> Result<Verdict, DbError> {
        let parsed = request::parse_any(bytes, self.config.limits.max_active_runs);
        let on_behalf_of = parsed
            .as_ref()
            .ok()
            .and_then(|p| p.on_behalf_of().map(str::to_owned));
        let action = parsed
            .as_ref()
            .map(Parsed::action)
            .unwrap_or(Action::Create);
        let target_of = |p: &Parsed| match p {
            Parsed::Create(r) => r.dag_id.clone(),
            Parsed::Operate(op) => op.id.clone(),
        };
        let (ident, subject) = match self.subject(uid, on_behalf_of.as_deref())? {
            Ok(v) => v,
            Err((ident, rejection)) => {
                return Ok(Verdict {
                    ident,
                    action,
                    target: parsed.ok().map(|p| target_of(&p)),
                    result: Err(rejection),
                })
            }
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(r) => {
                return Ok(Verdict {
                    ident,
                    action,
                    target: None,
                    result: Err(r),
                })
            }
        };
        let target = Some(target_of(&parsed));
        let result = match parsed {
            Parsed::Create(req) => {
                match authz::authorize(&subject, Action::Create, Some(&req.dag_id)) {
                    Err(denial) => Err(denial.into()),
                    Ok(()) => {
                        let dry_run = req.dry_run;
                        match self.check_dag(req, &ident)? {
                            Ok(new) => self.check_after(&subject, &new.options.after)?.map(|()| {
                                if dry_run {
                                    Accepted::DryRun(Box::new(new))
                                } else {
                                    Accepted::Create(Box::new(new))
                                }
                            }),
                            Err(r) => Err(r),
                        }
                    }
                }
            }
            Parsed::Operate(op) => self.check_operation(&subject, &ident, op)?,
        };
        Ok(Verdict {
            ident,
            action,
            target,
            result,
        })
    }

    /// The checks of `after`: every named backfill exists and the requester may read it
    /// (`can_read` on `Backfills`, as for `backfillctl status`, and read on its origin DAG; one
    /// that may not be read is reported like a missing one, so refusals reveal nothing), and
    /// none of them already failed, was cancelled or deleted before it finished.
    fn check_after(
        &mut self,
        subject: &Subject,
        after: &[String],
    ) -> Result<Result<(), Rejection>, DbError> {
        if after.is_empty() {
            return Ok(Ok(()));
        }
        if let Err(d) = authz::authorize(subject, Action::Read, None) {
            let mut r = Rejection::from(d);
            r.message = format!("after needs permission to read backfills: {}", r.message);
            return Ok(Err(r));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut s = Store::new(&mut c.db);
        for id in after {
            let row = s
                .backfill_any(id)?
                .filter(|b| authz::authorize(subject, Action::Read, Some(&b.dag_id)).is_ok());
            let Some(row) = row else {
                return Ok(Err(Rejection::new(
                    ReasonCode::UnknownPrerequisite,
                    format!("after: no backfill {id:?} that you may read"),
                )));
            };
            let p = ordering::Prerequisite {
                id: row.id,
                state: Some(row.state),
                reason: row.state_reason,
                deleted: row.deleted,
            };
            if let Some(why) = ordering::broken(&p) {
                return Ok(Err(Rejection::new(ReasonCode::PrerequisiteFailed, why)));
            }
        }
        Ok(Ok(()))
    }

    /// The checks of a life-cycle request: permission on `Backfills`, the backfill exists,
    /// permission on its origin DAG, and the state machine of `lifecycle` allows it.
    fn check_operation(
        &mut self,
        subject: &Subject,
        ident: &Identity,
        op: Operation,
    ) -> Result<Result<Accepted, Rejection>, DbError> {
        if let Err(d) = authz::authorize(subject, op.action, None) {
            return Ok(Err(d.into()));
        }
        // Decide on fresh facts: the stored state may lag Airflow by up to one reconcile
        // interval (a copy that just started running may still read `submitted`).
        self.reconcile();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let Some(row) = Store::new(&mut c.db).backfill_any(&op.id)? else {
            return Ok(Err(Rejection::new(
                ReasonCode::UnknownBackfill,
                format!("no backfill with id {:?}", op.id),
            )));
        };
        if let Err(d) = authz::authorize(subject, op.action, Some(&row.dag_id)) {
            return Ok(Err(d.into()));
        }
        let facts = Facts {
            state: row.state,
            deleted: row.deleted,
            copy_written: row.copy_written_at.is_some(),
            failed_dates: row.progress.failed,
        };
        let effect = match lifecycle::plan(op.action, facts) {
            Ok(e) => e,
            Err(refusal) => {
                return Ok(Err(Rejection::new(
                    ReasonCode::IllegalTransition,
                    refusal.0,
                )))
            }
        };
        if matches!(effect, Effect::Approve | Effect::Reject) {
            let decider = approval::Decider {
                subject,
                uid: ident.uid,
                on_behalf: ident.on_behalf_of.is_some(),
            };
            let requester = approval::Requester {
                airflow_user: &row.submitted_by,
                uid: row.submitted_uid,
                on_behalf: row.on_behalf_of.is_some(),
            };
            let roles = &self.config.approval.approver_roles;
            if let Err(r) = approval::decide(decider, requester, &row.dag_id, roles, op.action) {
                return Ok(Err(r));
            }
        }
        let retry = if effect == Effect::RetryFailed {
            match self.retry_of(&row, ident)? {
                Ok(new) => new,
                Err(r) => return Ok(Err(r)),
            }
        } else {
            Vec::new()
        };
        Ok(Ok(Accepted::Operate {
            id: row.id,
            effect,
            retry,
            reason: op.reason,
        }))
    }

    /// The new backfill retrying the failed dates of `row`, with the origin DAG's current
    /// source (so a fixed DAG runs fixed).
    fn retry_of(
        &mut self,
        row: &BackfillRow,
        ident: &Identity,
    ) -> Result<Result<Vec<NewBackfill>, Rejection>, DbError> {
        if let Some(refusal) = self.over_active_limit(ident)? {
            return Ok(Err(refusal));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let runs = af.runs(&row.id)?;
        let failed: Vec<bool> = row
            .logical_dates
            .iter()
            .map(|d| {
                runs.iter()
                    .any(|r| r.logical_date == *d && r.state == RunState::Failed)
            })
            .collect();
        let segments = match lifecycle::retry_dates(&row.logical_dates, &failed) {
            Ok(s) => s,
            Err(refusal) => {
                return Ok(Err(Rejection::new(
                    ReasonCode::IllegalTransition,
                    refusal.0,
                )))
            }
        };
        let origin_code = af
            .source_code(&row.dag_id, &row.origin_fileloc)?
            .unwrap_or_else(|| row.origin_code.clone());
        let serialized = if row.options.tasks.is_empty() {
            None
        } else {
            // The retry runs the origin's current source: select its tasks again.
            let Some(serialized) = af.serialized_dag(&row.dag_id)? else {
                return Ok(Err(Rejection::new(
                    ReasonCode::DagNotSerialized,
                    format!(
                        "Airflow has no serialized DAG {:?} to select the tasks of the retry from",
                        row.dag_id
                    ),
                )));
            };
            Some(serialized)
        };
        let mut retries = Vec::new();
        for dates in segments {
            let (Some(&start), Some(&end)) = (dates.first(), dates.last()) else {
                continue;
            };
            let mut new = new_backfill(
                Request {
                    dag_id: row.dag_id.clone(),
                    start,
                    end,
                    wall_clock: request::WallClock::default(),
                    description: Some(format!("retry of {}", row.id)),
                    max_active_runs: row.max_active_runs,
                    params: row.params.clone(),
                    ignore_overlap: row.ignore_overlap,
                    on_behalf_of: ident.on_behalf_of.clone(),
                    dry_run: false,
                    scheduled_at: None,
                    delete_after_days: row.delete_after_days,
                    reprocess: Reprocess::Completed,
                    // The same tasks and asset events; the prerequisites already succeeded.
                    options: request::Options {
                        tasks: row.options.tasks.clone(),
                        include_upstream: row.options.include_upstream,
                        include_downstream: row.options.include_downstream,
                        emit_asset_events: Some(row.options.emit_asset_events),
                        after: Vec::new(),
                        priority: row.options.priority,
                        run_backwards: row.options.run_order == RunOrder::NewestFirst,
                    },
                },
                dates,
                row.origin_fileloc.clone(),
                origin_code.clone(),
                ident,
                &self.config.throttle,
            );
            new.retry_of = Some(row.id.clone());
            if let Some(serialized) = &serialized {
                if let Err(r) = resolve_tasks(&row.dag_id, serialized, &mut new.options) {
                    return Ok(Err(r));
                }
            }
            if !new.ignore_overlap {
                let overlapping = Store::new(&mut c.db).overlapping(&new.dag_id, start, end)?;
                if !overlapping.is_empty() {
                    return Ok(Err(Rejection::new(
                        ReasonCode::Overlap,
                        format!(
                            "the failed dates overlap active backfill(s) of {:?}: {}",
                            new.dag_id,
                            overlapping.join(", ")
                        ),
                    )));
                }
            }
            retries.push(new);
        }
        Ok(Ok(retries))
    }

    /// The checks of an authorised request against Airflow's DAG and backfilld's backfills.
    fn check_dag(
        &mut self,
        mut req: Request,
        ident: &Identity,
    ) -> Result<Result<NewBackfill, Rejection>, DbError> {
        let limit = self.config.limits.max_dates_per_request;
        let approval = self.config.approval.clone();
        let default_delete_after_days = self.config.reconcile.delete_after_days;
        let default_emit_asset_events = self.config.copies.emit_asset_events;
        let budgets = self.config.throttle.clone();
        let facts = self.dag_facts(&req.dag_id)?;
        let Some(dag) = &facts.dag else {
            return Ok(Err(Rejection::new(
                ReasonCode::UnknownDag,
                format!("Airflow has no DAG with id {:?}", req.dag_id),
            )));
        };
        if !dag.is_active {
            return Ok(Err(Rejection::new(
                ReasonCode::DagDeleted,
                format!("DAG {:?} is no longer active in Airflow (its file was removed or it failed to parse)", req.dag_id),
            )));
        }
        let not_serialized = || {
            Rejection::new(
                ReasonCode::DagNotSerialized,
                format!("Airflow has not stored DAG {:?} and its source yet; try again after the next parse", req.dag_id),
            )
        };
        let (Some(fileloc), Some(serialized)) = (dag.fileloc.clone(), facts.serialized.as_ref())
        else {
            return Ok(Err(not_serialized()));
        };
        let Some(origin_code) = facts.source_code.clone() else {
            return Ok(Err(not_serialized()));
        };
        if let Some(reason) = crate::runtypes::backfill_refusal(&req.dag_id, serialized) {
            return Ok(Err(Rejection::new(ReasonCode::BackfillNotAllowed, reason)));
        }
        let mut dates = match self.range_dates(&mut req, serialized, limit) {
            Ok(d) => d,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if dates.is_empty() {
            return Ok(Err(Rejection::new(
                ReasonCode::NoLogicalDates,
                format!(
                    "no logical date of DAG {:?} falls between {} and {}",
                    req.dag_id,
                    fmt_ts(req.start),
                    fmt_ts(req.end)
                ),
            )));
        }
        let mut skipped = Vec::new();
        let mut contiguous = true;
        if req.reprocess != Reprocess::Completed {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            let origin_runs = Airflow::new(&mut c.db, &c.schema).runs(&req.dag_id)?;
            let origin: Vec<Option<bool>> = dates
                .iter()
                .map(|d| {
                    origin_runs
                        .iter()
                        .find(|r| r.logical_date == *d)
                        .map(|r| r.state == RunState::Failed)
                })
                .collect();
            let all = std::mem::take(&mut dates);
            (dates, skipped) = lifecycle::reprocess_dates(req.reprocess, &all, &origin);
            contiguous = steer::is_contiguous(&all, &dates);
            let (Some(&first), Some(&last)) = (dates.first(), dates.last()) else {
                return Ok(Err(Rejection::new(
                    ReasonCode::NoLogicalDates,
                    format!(
                        "DAG {:?} already ran every logical date between {} and {} (reprocess = \"{}\")",
                        req.dag_id,
                        fmt_ts(req.start),
                        fmt_ts(req.end),
                        req.reprocess.as_str()
                    ),
                )));
            };
            req.start = first;
            req.end = last;
        }
        if let Some(refusal) = self.over_active_limit(ident)? {
            return Ok(Err(refusal));
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        if !req.ignore_overlap {
            let overlapping = Store::new(&mut c.db).overlapping(&req.dag_id, req.start, req.end)?;
            if !overlapping.is_empty() {
                return Ok(Err(Rejection::new(
                    ReasonCode::Overlap,
                    format!(
                        "the range overlaps active backfill(s) of {:?}: {}; set ignore_overlap = true to run anyway",
                        req.dag_id,
                        overlapping.join(", ")
                    ),
                )));
            }
        }
        let emit_asset_events = req
            .options
            .emit_asset_events
            .unwrap_or(default_emit_asset_events);
        let mut new = new_backfill(req, dates, fileloc, origin_code, ident, &budgets);
        new.delete_after_days = new.delete_after_days.or(default_delete_after_days);
        new.skipped_dates = skipped;
        new.options.run_order =
            RunOrder::for_backfill(new.options.run_order == RunOrder::NewestFirst, contiguous);
        new.options.emit_asset_events = emit_asset_events;
        if let Err(r) = resolve_tasks(&new.dag_id, serialized, &mut new.options) {
            return Ok(Err(r));
        }
        let n = new.logical_dates.len();
        if approval::needed(approval.over_dates, n) {
            new.awaiting_approval = Some(approval::waiting_reason(
                n,
                approval.over_dates,
                &approval.approver_roles,
            ));
        }
        Ok(Ok(new))
    }

    /// Carry out the pending Airflow-side work of life-cycle actions, then reconcile every
    /// unfinished backfill; then publish the metrics (`[metrics]`).
    pub fn reconcile(&mut self) {
        self.reconcile_all();
        self.guard_housekeeping();
        self.publish_metrics();
    }

    fn reconcile_all(&mut self) {
        if self.ensure_connected().is_err() {
            return;
        }
        // A pass's figures cover everything it does: copy convergence, life-cycle work,
        // automatic deletion and the reconcile pass proper.
        let started = Instant::now();
        let before = self.conn.as_ref().map_or(0, |c| c.db.query_count());
        let shared = self.config.cluster.dags_folder_shared;
        if !shared {
            self.converge_copies();
        }
        if !self.lead() {
            return;
        }
        if shared {
            self.converge_copies();
        }
        match self
            .conn
            .as_mut()
            .map(|c| Store::new(&mut c.db).pending_ops())
        {
            Some(Ok(rows)) => {
                for row in rows {
                    if let Err(e) = self.carry_out(&row) {
                        tracing::warn!(backfill = %row.id, error = %e, "life-cycle action not carried out yet; retrying next pass");
                        self.lost(&e);
                        if self.conn.is_none() {
                            return;
                        }
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot list pending life-cycle actions");
                self.lost(&e);
                return;
            }
            None => return,
        }
        if let Err(e) = self.auto_delete() {
            tracing::warn!(error = %e, "automatic deletion failed; retrying next pass");
            self.lost(&e);
            if self.conn.is_none() {
                return;
            }
        }
        match self.reconcile_pass() {
            Ok(mut stats) => {
                stats.queries = self
                    .conn
                    .as_ref()
                    .map_or(0, |c| c.db.query_count().saturating_sub(before));
                stats.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                if stats.changed + stats.paused + stats.unpaused > 0 {
                    tracing::info!(
                        backfills = stats.backfills,
                        recomputed = stats.recomputed,
                        changed = stats.changed,
                        paused = stats.paused,
                        unpaused = stats.unpaused,
                        queries = stats.queries,
                        full = stats.full,
                        elapsed_ms = stats.millis,
                        "reconcile pass"
                    );
                } else {
                    tracing::debug!(
                        backfills = stats.backfills,
                        recomputed = stats.recomputed,
                        queries = stats.queries,
                        full = stats.full,
                        elapsed_ms = stats.millis,
                        "reconcile pass"
                    );
                }
                self.last_pass = stats;
                self.passes += 1;
                self.last_pass_at = Some((Utc::now(), started.elapsed().as_secs_f64()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconcile pass failed; retrying next pass");
                self.lost(&e);
                return;
            }
        }
        if let Err(e) = self.steer_copies() {
            tracing::warn!(error = %e, "cannot name the next run of steered copies; retrying next pass");
            self.lost(&e);
        }
    }

    /// Figures of the last reconcile pass (queries issued, backfills, changes).
    pub fn last_pass(&self) -> PassStats {
        self.last_pass
    }

    /// One set-based pass over every unfinished backfill: write missing copies, then a fixed
    /// number of reads (backfills, copies' `dag` rows, import errors, run counts; with a
    /// throttle, the origin DAGs' runs and pool use), the reconcile rule and the throttle in
    /// memory, and batched writes of what changed. Between full passes, the rows and run
    /// counts of the last pass are kept: only changed rows are read again, and only the runs
    /// that are new or left or entered the queued/running set update the counts
    /// (`engine::pass_cache`).
    fn reconcile_pass(&mut self) -> Result<PassStats, DbError> {
        let now = Utc::now();
        let host = self.host.clone();
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let ttl_ms = self.lease_ttl_ms();
        let full_due = self.watermark.is_none() || self.passes_since_full >= FULL_PASS_EVERY;
        // The cache is out of the connection for the pass: a pass that fails leaves none, and
        // the next pass is full.
        let (cache, recounted, full) = {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            let kept = c.pass_cache.take().filter(|k| !full_due && k.serves(token));
            let mut pass = Pass::new(&mut c.db, &c.schema);
            match kept {
                Some(mut k) => {
                    let n = k.refresh(&mut pass)?;
                    (k, n, false)
                }
                None => {
                    let (k, n) = pass_cache::PassCache::full(&mut pass, token)?;
                    (k, n, true)
                }
            }
        };
        let rows = cache.rows();
        // Ordering (`after`): one statement for every backfill still without a copy.
        let gates: HashMap<String, Gate> = if rows
            .iter()
            .any(|r| r.state == BackfillState::Submitted && r.copy_written_at.is_none())
        {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Pass::new(&mut c.db, &c.schema)
                .prerequisites(None)?
                .into_iter()
                .map(|(id, p)| (id, ordering::gate(&p)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut written: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
        for row in &rows {
            if row.state == BackfillState::Submitted
                && gates.get(&row.id).is_none_or(|g| *g == Gate::Go)
                && row.scheduled_at.is_none_or(|t| t <= now)
                && row.copy_written_at.is_none()
            {
                if let Some(at) = self.write_copy(&row.id)? {
                    written.insert(row.id.clone(), at);
                }
            }
        }
        let throttle = self.config.throttle.clone();
        let timeout = chrono::Duration::seconds(
            i64::try_from(self.config.reconcile.register_timeout_secs).unwrap_or(i64::MAX / 1000),
        );
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut pass = Pass::new(&mut c.db, &c.schema);
        let dags = pass.copy_dags()?;
        let errors = pass.copy_import_errors(dagcopy::COPY_SUBDIR)?;
        let throttling = throttle.has_budget() || throttle.yield_to_scheduled;
        let mut load = throttle::Load::default();
        let mut pools_of: HashMap<String, Vec<String>> = HashMap::new();
        if throttling && !rows.is_empty() {
            let mut origins: Vec<&str> = rows.iter().map(|r| r.dag_id.as_str()).collect();
            origins.sort_unstable();
            origins.dedup();
            for run in pass.origin_runs(&origins)? {
                let date = run
                    .logical_date
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                let date = date.trim_end_matches(" 00:00").to_owned();
                load.origin_runs.entry(run.dag_id).or_insert(date);
            }
            if throttle.pool_share_percent.is_some() || throttle.yield_to_scheduled {
                for (pool, used) in pass.pool_use(|id| cache.has(id))? {
                    let ours: u32 = used.by_backfill.values().sum();
                    for id in used.by_backfill.keys() {
                        pools_of.entry(id.clone()).or_default().push(pool.clone());
                    }
                    load.pools.insert(pool, (used.slots, ours, used.others));
                }
            }
        }
        let runs_of = |row: &PassRow| cache.runs_of(&row.id);
        let live: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        self.turn_ended.retain(|id, _| live.contains(id.as_str()));
        let mut candidates = Vec::new();
        let mut candidate_of: HashMap<&str, usize> = HashMap::new();
        for row in &rows {
            let runs = runs_of(row);
            if runs.active() == 0 && row.progress.running + row.progress.queued > 0 {
                self.turn_ended.insert(row.id.clone(), now);
            }
            // Without a throttle every registered copy is `Untouched`: no candidates to build.
            if !throttling {
                continue;
            }
            let Some(&paused) = dags.get(&row.id) else {
                continue;
            };
            let paused_elsewhere = paused && !row.throttled;
            candidate_of.insert(&row.id, candidates.len());
            candidates.push(throttle::Candidate {
                id: row.id.clone(),
                dag_id: row.dag_id.clone(),
                waiting_since: self
                    .turn_ended
                    .get(&row.id)
                    .copied()
                    .unwrap_or(row.submitted_at),
                active: runs.active(),
                pending: row
                    .progress
                    .total
                    .saturating_sub(runs.active() + runs.succeeded + runs.failed),
                max_active_runs: row.max_active_runs,
                hands_off: row.user_paused || row.pending_op.is_some() || paused_elsewhere,
                pools: pools_of.remove(&row.id).unwrap_or_default(),
                priority: row.priority,
            });
        }
        let verdicts = if throttling {
            throttle::decide(&throttle, &candidates, &load)
        } else {
            vec![throttle::Verdict::Untouched; candidates.len()]
        };
        let mut stats = PassStats {
            backfills: rows.len(),
            recomputed: recounted,
            full,
            ..PassStats::default()
        };
        // A copy paused now may have had a run created since it was read: unpause others
        // only in the next pass, once that run is counted.
        let pausing = rows.iter().any(|row| {
            dags.get(&row.id) == Some(&false)
                && candidate_of
                    .get(row.id.as_str())
                    .and_then(|&i| verdicts.get(i))
                    .is_some_and(|v| matches!(v, throttle::Verdict::Hold(_)))
        });
        let (mut to_pause, mut to_unpause, mut changes) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let airflow_paused = dags.get(&row.id).copied();
            let deferred = throttle::Verdict::Hold(
                row.state_reason
                    .clone()
                    .unwrap_or_else(|| "throttled: waiting for a free slot".to_owned()),
            );
            let verdict = if throttling {
                candidate_of
                    .get(row.id.as_str())
                    .and_then(|&i| verdicts.get(i))
            } else {
                dags.get(&row.id).map(|_| &throttle::Verdict::Untouched)
            }
            .map(|v| match v {
                throttle::Verdict::Go
                    if pausing && row.throttled && airflow_paused == Some(true) =>
                {
                    &deferred
                }
                v => v,
            });
            let throttled = match verdict {
                Some(throttle::Verdict::Hold(_)) => {
                    if airflow_paused == Some(false) {
                        to_pause.push(row.id.clone());
                    }
                    true
                }
                Some(throttle::Verdict::Go) => {
                    if row.throttled && airflow_paused == Some(true) {
                        to_unpause.push(row.id.clone());
                    }
                    false
                }
                Some(throttle::Verdict::Untouched) => false,
                None => row.throttled,
            };
            // A copy the throttle holds or releases now is not paused in the user's sense.
            let released = row.throttled && matches!(verdict, Some(throttle::Verdict::Go));
            let import_error = row.copy_path.as_deref().and_then(|path| {
                errors
                    .iter()
                    .find(|(name, _)| airflow::is_path_suffix(path, name))
                    .map(|(_, e)| e.clone())
            });
            let obs = Observation {
                registered: airflow_paused.map(|p| p && !(throttled || released)),
                import_error,
                runs: runs_of(row),
            };
            let written_at = written.get(&row.id).copied().or(row.copy_written_at);
            let age = written_at
                .map(|t| now - t)
                .unwrap_or_else(chrono::Duration::zero);
            let mut d = reconcile::decide(row.state, row.progress.total, &obs, age, timeout);
            if d.state == BackfillState::Submitted && !written.contains_key(&row.id) {
                match gates.get(&row.id) {
                    Some(Gate::Wait(why)) => d.reason = Some(why.clone()),
                    Some(Gate::Fail(why)) => {
                        tracing::info!(backfill = %row.id, reason = %why, "a prerequisite did not succeed");
                        d.state = BackfillState::Failed;
                        d.reason = Some(why.clone());
                    }
                    Some(Gate::Go) | None => {}
                }
            }
            if let Some(throttle::Verdict::Hold(why)) = verdict {
                if !d.state.is_terminal() && d.reason.is_none() {
                    d.reason = Some(why.clone());
                }
            }
            let unchanged = d.state == row.state
                && d.reason == row.state_reason
                && d.progress == row.progress
                && d.run_start == row.run_start
                && d.run_end == row.run_end
                && throttled == row.throttled;
            if !unchanged {
                if d.state != row.state {
                    tracing::info!(backfill = %row.id, from = %row.state, to = %d.state, reason = ?d.reason, "state change");
                }
                changes.push(pass::Change {
                    id: row.id.clone(),
                    decision: d,
                    throttled,
                });
            }
        }
        self.unfinished_by_state.clear();
        let new_state: HashMap<&str, BackfillState> = changes
            .iter()
            .map(|c| (c.id.as_str(), c.decision.state))
            .collect();
        for row in &rows {
            let state = new_state.get(row.id.as_str()).copied().unwrap_or(row.state);
            if !state.is_terminal() {
                *self.unfinished_by_state.entry(state).or_insert(0) += 1;
            }
        }
        stats.changed = changes.len();
        if !(to_pause.is_empty() && to_unpause.is_empty() && changes.is_empty()) {
            let (paused, unpaused) = c.db.transaction(|db| {
                if !Leases::new(db).fence(LEADER, &host, token, ttl_ms)? {
                    return Err(DbError::NotHolder(LEADER));
                }
                let mut pass = Pass::new(db, &c.schema);
                let paused = if to_pause.is_empty() {
                    0
                } else {
                    pass.set_copies_paused(&to_pause, true)?
                };
                let unpaused = if to_unpause.is_empty() {
                    0
                } else {
                    pass.set_copies_paused(&to_unpause, false)?
                };
                pass.apply(&changes, now)?;
                Ok::<_, DbError>((paused, unpaused))
            })?;
            stats.paused = paused;
            stats.unpaused = unpaused;
        }
        if let Some(c) = self.conn.as_mut() {
            c.pass_cache = Some(cache);
        }
        self.watermark = Some(now);
        self.passes_since_full = if full { 0 } else { self.passes_since_full + 1 };
        Ok(stats)
    }

    fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.cluster.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Take or keep the leader claim; whether this agent leads now.
    fn lead(&mut self) -> bool {
        let host = self.host.clone();
        let ttl_ms = self.lease_ttl_ms();
        let now = store::stored_ts(Utc::now());
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match Leases::new(&mut c.db).acquire(LEADER, &host, ttl_ms, &now, self.leader_token) {
            Ok(Some(token)) => {
                if self.leader_token != Some(token) {
                    tracing::info!(host = %host, token, "holding the leader claim: reconciling, throttling and carrying out life-cycle actions");
                }
                self.leader_token = Some(token);
                true
            }
            Ok(None) => {
                if self.leader_token.take().is_some() {
                    tracing::warn!(host = %host, "lost the leader claim to another agent; following");
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take or renew the leader claim");
                self.leader_token = None;
                self.lost(&e);
                false
            }
        }
    }

    /// The fencing check before a write only the leader may do: the claim is still this
    /// agent's with the same token (renewed in the same statement); otherwise step down.
    fn fence(&mut self) -> Result<(), DbError> {
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let host = self.host.clone();
        let ttl_ms = self.lease_ttl_ms();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        if Leases::new(&mut c.db).fence(LEADER, &host, token, ttl_ms)? {
            Ok(())
        } else {
            tracing::warn!(host = %host, token, "the leader claim moved to another agent; stepping down");
            self.leader_token = None;
            Err(DbError::NotHolder(LEADER))
        }
    }

    /// Give up the claims at shutdown, so another agent takes over at once.
    fn release_claims(&mut self) {
        let Some(token) = self.leader_token.take() else {
            return;
        };
        let host = self.host.clone();
        if let Some(c) = self.conn.as_mut() {
            match Leases::new(&mut c.db).release(LEADER, &host, token) {
                Ok(()) => tracing::info!(host = %host, "released the leader claim"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot release the leader claim; it expires on its own")
                }
            }
        }
    }

    /// The claims and their holders (`backfillctl status` without an id).
    pub fn claims(&mut self) -> Result<Vec<ClaimInfo>, DbError> {
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        Leases::new(&mut c.db).all()
    }

    /// Bring this agent's copy folder to the set of live copies in the DB: write missing ones,
    /// repair changed or truncated ones, remove those of deleted backfills. With a shared DAGs
    /// folder only the leader does this; otherwise every agent does it for its own folder.
    fn converge_copies(&mut self) {
        if let Err(e) = self.try_converge_copies() {
            tracing::warn!(error = %e, "cannot converge the DAG copies; retrying next pass");
            self.lost(&e);
        }
    }

    fn try_converge_copies(&mut self) -> Result<(), DbError> {
        let dir = self.copy_dir();
        let shared = self.config.cluster.dags_folder_shared;
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let live = Store::new(&mut c.db).live_copies()?;
        let wanted: std::collections::HashSet<&str> =
            live.iter().map(|(id, _)| id.as_str()).collect();
        self.verified_copies
            .retain(|id, _| wanted.contains(id.as_str()));
        let now = Utc::now();
        // Only copies whose file changed since it was last verified are read back, and their
        // rows are fetched together.
        let to_check: Vec<&str> = live
            .iter()
            .filter(|(id, written_at)| {
                let before = fingerprint(&dir.join(dagcopy::file_name(id)));
                if before.is_some() && self.verified_copies.get(id) == before.as_ref() {
                    return false;
                }
                // In a shared folder the agent that claimed a copy this recent is writing it.
                !(shared
                    && before.is_none()
                    && now - *written_at < chrono::Duration::seconds(COPY_WRITE_GRACE_SECS))
            })
            .map(|(id, _)| id.as_str())
            .collect();
        let rows = if to_check.is_empty() {
            Vec::new()
        } else {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Store::new(&mut c.db).backfills_any(&to_check)?
        };
        for row in &rows {
            let id = &row.id;
            let name = dagcopy::file_name(id);
            let path = dir.join(&name);
            let expected = render_copy(row);
            let current = std::fs::read(&path).ok();
            if current.as_deref() != Some(expected.as_bytes()) {
                if shared {
                    self.fence()?;
                }
                if let Err(e) = dagcopy::write_atomically(
                    &dir,
                    &name,
                    expected.as_bytes(),
                    dagcopy::CopyAccess::of_origin(std::path::Path::new(&row.origin_fileloc)),
                ) {
                    tracing::error!(backfill = %id, error = %e, "cannot restore the DAG copy; retrying next pass");
                    continue;
                }
                tracing::info!(backfill = %id, path = %path.display(), was = if current.is_some() { "changed" } else { "missing" }, "DAG copy restored");
            }
            if let Some(f) = fingerprint(&path) {
                self.verified_copies.insert(id.clone(), f);
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let unexpected: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let file = entry.file_name();
                let id = file.to_str()?.strip_suffix(".py")?;
                (!wanted.contains(id)).then(|| id.to_owned())
            })
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = unexpected.iter().map(String::as_str).collect();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let gone = Store::new(&mut c.db).gone_copies(&names)?;
        for id in &gone {
            if shared {
                self.fence()?;
            }
            match dagcopy::remove(&dir, &dagcopy::file_name(id)) {
                Ok(()) => {
                    tracing::info!(backfill = %id, "removed the DAG copy of a deleted backfill")
                }
                Err(e) => {
                    tracing::error!(backfill = %id, error = %e, "cannot remove a deleted backfill's DAG copy")
                }
            }
        }
        Ok(())
    }

    fn reconcile_id(&mut self, id: &str) {
        if let Err(e) = self.write_copy(id) {
            tracing::warn!(backfill = %id, error = %e, "cannot write the DAG copy yet; retrying next pass");
            self.lost(&e);
        }
    }

    /// Delete every finished backfill whose `delete_after_days` elapsed, as a `delete` request
    /// would (the state machine still decides; audited with no requester: the daemon).
    fn auto_delete(&mut self) -> Result<(), DbError> {
        let now = Utc::now();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let due = Store::new(&mut c.db).due_for_deletion(now)?;
        for id in due {
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            let Some(row) = Store::new(&mut c.db).backfill_any(&id)? else {
                continue;
            };
            let facts = Facts {
                state: row.state,
                deleted: row.deleted,
                copy_written: row.copy_written_at.is_some(),
                failed_dates: row.progress.failed,
            };
            if lifecycle::plan(Action::Delete, facts) != Ok(Effect::DeleteCopy) {
                continue;
            }
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            if !Store::new(&mut c.db).mark_deleted(&row.id, now)? {
                continue;
            }
            tracing::info!(backfill = %row.id, delete_after_days = ?row.delete_after_days, "deleting a finished backfill automatically");
            self.audit(&Identity::default(), Action::Delete, Some(&row.id), None)?;
            self.carry_out_id(&row.id);
        }
        Ok(())
    }

    fn carry_out_id(&mut self, id: &str) {
        let row = match self
            .conn
            .as_mut()
            .map(|c| Store::new(&mut c.db).backfill_any(id))
        {
            Some(Ok(Some(row))) => row,
            Some(Err(e)) => {
                self.lost(&e);
                return;
            }
            _ => return,
        };
        if let Err(e) = self.carry_out(&row) {
            tracing::warn!(backfill = %id, error = %e, "life-cycle action not carried out yet; retrying next pass");
            self.lost(&e);
        }
    }

    /// Do the Airflow-side work of the life-cycle action recorded on `row`; clear it once done.
    /// Every step is idempotent, so a crash in between only repeats it.
    fn carry_out(&mut self, row: &BackfillRow) -> Result<(), DbError> {
        let Some(op) = row.pending_op else {
            return Ok(());
        };
        self.fence()?;
        let dir = self.copy_dir();
        let name = dagcopy::file_name(&row.id);
        let now = Utc::now();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut af = Airflow::new(&mut c.db, &c.schema);
        let done = match op {
            PendingOp::Pause => af.set_paused(&row.id, true)? || row.state.is_terminal(),
            PendingOp::Resume => af.set_paused(&row.id, false)? || row.state.is_terminal(),
            PendingOp::Cancel => {
                let registered = af.set_paused(&row.id, true)?;
                let failed = af.fail_unfinished_runs(&row.id, now)?;
                let obs = Observation {
                    registered: Some(true),
                    import_error: None,
                    runs: RunSummary::of_runs(&row.logical_dates, &af.runs(&row.id)?),
                };
                let d = reconcile::decide(
                    row.state,
                    row.progress.total,
                    &obs,
                    chrono::Duration::zero(),
                    chrono::Duration::zero(),
                );
                Store::new(&mut c.db).set_progress(&row.id, &d, now)?;
                tracing::info!(backfill = %row.id, registered, failed_runs = failed, "cancelled: copy paused, unfinished runs marked failed");
                if registered {
                    // Done once a pass finds nothing left to fail (a run the scheduler created
                    // while the pause was being written is caught by the next pass).
                    failed == 0
                } else {
                    // Airflow has not registered the copy: remove it so it never runs.
                    match dagcopy::remove(&dir, &name) {
                        Ok(()) => {
                            Store::new(&mut c.db).mark_copy_removed(&row.id, now)?;
                            true
                        }
                        Err(e) => {
                            tracing::error!(backfill = %row.id, error = %e, "cannot remove the cancelled DAG copy");
                            false
                        }
                    }
                }
            }
            PendingOp::Delete => {
                af.set_paused(&row.id, true)?;
                if let Err(e) = dagcopy::remove(&dir, &name) {
                    tracing::error!(backfill = %row.id, error = %e, "cannot remove the deleted DAG copy; retrying next pass");
                    return Ok(());
                }
                if af.running_tasks(&row.id)? > 0 {
                    tracing::info!(backfill = %row.id, "delete waits for the copy's running tasks to finish");
                    false
                } else {
                    let removed = af.delete_dag_rows(&row.id)?;
                    if removed > 0 {
                        tracing::info!(backfill = %row.id, rows = removed, "removed Airflow's rows of the deleted copy");
                    }
                    let settled = row
                        .deleted_at
                        .is_none_or(|t| now - t > chrono::Duration::seconds(DELETE_SETTLE_SECS));
                    removed == 0 && settled
                }
            }
        };
        if done {
            Store::new(&mut c.db).clear_pending_op(&row.id, op)?;
            tracing::info!(backfill = %row.id, action = op.as_str(), "life-cycle action carried out");
        }
        Ok(())
    }

    fn copy_dir(&self) -> PathBuf {
        self.airflow.dags_folder.join(dagcopy::COPY_SUBDIR)
    }

    /// Write the copy of a `submitted` backfill if it is missing (the only place the origin
    /// source snapshot is read). With a throttle budget the copy registers paused, marked as
    /// held by the throttle, which unpauses it when its turn comes. Returns when it was written.
    fn write_copy(&mut self, id: &str) -> Result<Option<chrono::DateTime<Utc>>, DbError> {
        let dir = self.copy_dir();
        let name = dagcopy::file_name(id);
        let path = dir.join(&name);
        let path_text = path.to_string_lossy().into_owned();
        let paused = self.config.throttle.has_budget();
        let now = Utc::now();
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let Some(row) = Store::new(&mut c.db).backfill(id)? else {
            return Ok(None);
        };
        // A copy another agent (or an earlier pass) claimed is that writer's to write; when its
        // file is missing, the folder's convergence restores it (after a grace period in a shared
        // folder, where the claimer may be writing it right now).
        if row.state != BackfillState::Submitted
            || row.scheduled_at.is_some_and(|t| t > now)
            || row.copy_written_at.is_some()
        {
            return Ok(None);
        }
        if !row.options.after.is_empty() {
            // Checked again right before writing (the pass checked it set-based).
            let prerequisites = Pass::new(&mut c.db, &c.schema)
                .prerequisites(Some(&row.id))?
                .remove(&row.id)
                .unwrap_or_default();
            if ordering::gate(&prerequisites) != Gate::Go {
                return Ok(None);
            }
        }
        let mut row = row;
        // Claim the write first: one agent wins, and a withdraw (which needs an unwritten copy)
        // and this write exclude each other in the DB.
        if !Store::new(&mut c.db).claim_copy(&row.id, &path_text, now, paused)? {
            return Ok(None);
        }
        row.copy_paused = paused;
        let source = render_copy(&row);
        if let Err(e) = dagcopy::write_atomically(
            &dir,
            &name,
            source.as_bytes(),
            dagcopy::CopyAccess::of_origin(std::path::Path::new(&row.origin_fileloc)),
        ) {
            tracing::error!(backfill = %row.id, error = %e, "cannot write the DAG copy; retrying next pass");
            // Give the claim back: until a copy is on disk the backfill can still be withdrawn
            // (a crash right here leaves the claim; convergence then writes the file).
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            Store::new(&mut c.db).unclaim_copy(&row.id, now)?;
            return Ok(None);
        }
        if let Some(f) = fingerprint(&path) {
            self.verified_copies.insert(row.id.clone(), f);
        }
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let fast = Airflow::new(&mut c.db, &c.schema).request_parse(&path_text)?;
        tracing::info!(backfill = %row.id, path = %path_text, parse_requested = fast, paused, "DAG copy written");
        Ok(Some(now))
    }

    /// Answer a control request.
    pub fn query(&mut self, uid: u32, request: ControlRequest) -> ControlResponse {
        match self.try_query(uid, request) {
            Ok(r) => r,
            Err(e) => {
                self.lost(&e);
                ControlResponse::Error {
                    message: e.to_string(),
                }
            }
        }
    }

    fn try_query(&mut self, uid: u32, request: ControlRequest) -> Result<ControlResponse, DbError> {
        if let ControlRequest::ImportSeed { dry_run, attach } = request {
            self.ensure_connected()?;
            return self.import_seed(uid, dry_run, attach);
        }
        if let ControlRequest::ImportSeedStatus { job, report } = request {
            self.ensure_connected()?;
            return self.import_status(uid, job, report);
        }
        if let ControlRequest::Outcome { file_name } = &request {
            // Decide anything waiting first, so a fresh submit gets its answer at once.
            if !spool::valid_file_name(file_name) {
                return Ok(ControlResponse::Error {
                    message: format!("{file_name:?} is not a valid request file name"),
                });
            }
            self.scan();
        }
        self.ensure_connected()?;
        if let ControlRequest::Outcome { file_name } = &request {
            // A caller only ever sees the outcome of files it owned: no further check.
            let c = self.conn.as_mut().ok_or_else(not_connected)?;
            return Ok(match Store::new(&mut c.db).outcome(uid, file_name)? {
                Some(r) => ControlResponse::Decided {
                    request: Box::new(r),
                },
                None => ControlResponse::Pending,
            });
        }
        let target = match &request {
            ControlRequest::Status { id } => Some(id.clone()),
            ControlRequest::AuditVerify => Some("audit".to_owned()),
            _ => None,
        };
        let subject = match self.subject(uid, None)? {
            Ok((ident, subject)) => match authz::authorize(&subject, Action::Read, None) {
                Ok(()) => Ok((ident, subject)),
                Err(d) => Err((ident, Rejection::from(d))),
            },
            Err(refused) => Err(refused),
        };
        let (ident, subject) = match subject {
            Ok(v) => v,
            Err((ident, r)) => {
                self.audit(&ident, Action::Read, target.as_deref(), Some(&r))?;
                return Ok(ControlResponse::Error {
                    message: denied_message(&r),
                });
            }
        };
        let c = self.conn.as_mut().ok_or_else(not_connected)?;
        let mut s = Store::new(&mut c.db);
        let response = match request {
            ControlRequest::Status { id } => match s.backfill_any(&id)? {
                Some(b) => match authz::authorize(&subject, Action::Read, Some(&b.dag_id)) {
                    Ok(()) => ControlResponse::Backfill {
                        backfill: Box::new(BackfillView::from(&b)),
                    },
                    Err(d) => {
                        let r = Rejection::from(d);
                        self.audit(&ident, Action::Read, Some(&id), Some(&r))?;
                        return Ok(ControlResponse::Error {
                            message: denied_message(&r),
                        });
                    }
                },
                None => ControlResponse::Error {
                    message: format!("no backfill with id {id:?}"),
                },
            },
            ControlRequest::List { filter } => ControlResponse::Backfills {
                backfills: s
                    .backfills(filter.all)?
                    .iter()
                    .filter(|b| filter.matches(b) && subject.can_read_dag(&b.dag_id))
                    .map(BackfillView::from)
                    .collect(),
            },
            ControlRequest::Outcome { .. }
            | ControlRequest::ImportSeed { .. }
            | ControlRequest::ImportSeedStatus { .. } => ControlResponse::Pending,
            ControlRequest::Cluster => ControlResponse::Cluster {
                host_id: self.host.clone(),
                leader: self.leader_token.is_some(),
                dags_folder_shared: self.config.cluster.dags_folder_shared,
                claims: Leases::new(&mut c.db).all()?,
            },
            ControlRequest::AuditVerify => ControlResponse::AuditReport {
                report: s.verify_audit()?,
            },
        };
        let now = Instant::now();
        self.recent_reads
            .retain(|_, at| now.duration_since(*at) < READ_AUDIT_WINDOW);
        match self.recent_reads.entry((ident.uid, target.clone())) {
            std::collections::hash_map::Entry::Occupied(_) => {
                tracing::debug!(uid = ?ident.uid, target = ?target, "repeated read, audit row skipped");
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                self.audit(&ident, Action::Read, target.as_deref(), None)?;
            }
        }
        Ok(response)
    }
}

fn denied_message(r: &Rejection) -> String {
    let code = serde_json::to_value(r.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("permission denied ({code}): {}", r.message)
}

fn not_connected() -> DbError {
    DbError::Connect {
        url: String::new(),
        message: "not connected".into(),
    }
}

/// `<dag_id>_backfill_<UTC YYYYmmdd_HHMMSS>`, with `_2`, `_3`, ... `_99` when taken.
fn free_id(s: &mut Store<'_>, dag_id: &str) -> Result<String, DbError> {
    free_id_from(s, dag_id, &mut None)
}

/// Where the search for a free id of one DAG goes on: the second (Unix time) and the next
/// suffix (1 = none) to try.
type IdCursor = (i64, u32);

/// How many seconds past the current one an id may name when a burst took every id of the
/// seconds before (`_2` to `_99`: at most 99 ids a second and DAG, the longest id
/// `guard::copy_id_length` allows).
const ID_SECONDS_AHEAD: i64 = 600;

/// [`free_id`], starting at `cursor` (left after the id found) when it is not in the past.
/// When all 99 ids of a second are taken, the next second's are tried: a burst of requests
/// for one DAG gets ids naming the seconds after it, not a refusal.
fn free_id_from(
    s: &mut Store<'_>,
    dag_id: &str,
    cursor: &mut Option<IdCursor>,
) -> Result<String, DbError> {
    let now = Utc::now().timestamp();
    let (mut second, mut n) = match *cursor {
        Some((second, n)) if second >= now => (second, n),
        _ => (now, 1),
    };
    while second <= now + ID_SECONDS_AHEAD {
        let stamp = chrono::DateTime::from_timestamp(second, 0)
            .ok_or_else(|| DbError::Data(format!("no time for second {second}")))?;
        let base = format!("{dag_id}_backfill_{}", stamp.format("%Y%m%d_%H%M%S"));
        while n < 100 {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            if !s.id_taken(&id)? {
                *cursor = Some((second, n + 1));
                return Ok(id);
            }
            n += 1;
        }
        second += 1;
        n = 1;
    }
    Err(DbError::Data(format!(
        "no free backfill id for {dag_id} within {ID_SECONDS_AHEAD} s"
    )))
}

fn new_backfill(
    req: Request,
    dates: Vec<chrono::DateTime<Utc>>,
    origin_fileloc: String,
    origin_code: String,
    ident: &Identity,
    budgets: &ThrottleSection,
) -> NewBackfill {
    let (max_active_runs, budget_warning) =
        throttle::cap_max_active_runs(budgets, req.max_active_runs);
    NewBackfill {
        dag_id: req.dag_id,
        start: req.start,
        end: req.end,
        logical_dates: dates,
        description: req.description,
        params: req.params,
        max_active_runs,
        ignore_overlap: req.ignore_overlap,
        origin_fileloc,
        origin_code,
        submitted_by: ident.airflow_user.clone().unwrap_or_default(),
        submitted_uid: ident.uid.unwrap_or(u32::MAX),
        requester: ident.unix_user.clone().unwrap_or_default(),
        on_behalf_of: ident.on_behalf_of.clone(),
        retry_of: None,
        scheduled_at: req.scheduled_at,
        delete_after_days: req.delete_after_days,
        reprocess: req.reprocess.as_str().to_owned(),
        skipped_dates: Vec::new(),
        options: BackfillOptions {
            tasks: req.options.tasks,
            task_ids: Vec::new(),
            include_upstream: req.options.include_upstream,
            include_downstream: req.options.include_downstream,
            emit_asset_events: req.options.emit_asset_events.unwrap_or(false),
            after: req.options.after,
            warnings: budget_warning.into_iter().collect(),
            priority: req.options.priority,
            run_order: RunOrder::for_backfill(req.options.run_backwards, true),
        },
        awaiting_approval: None,
    }
}

/// Resolve the `tasks` patterns of `options` against the serialized DAG's tasks (the ids
/// they select, kept so the overlay can check its own evaluation), and collect the warnings
/// about the DAG. A pattern matching no task refuses the request, naming the DAG's tasks.
fn resolve_tasks(
    dag_id: &str,
    serialized: &serde_json::Value,
    options: &mut BackfillOptions,
) -> Result<(), Rejection> {
    let tasks = taskset::tasks(serialized);
    options
        .warnings
        .extend(taskset::cross_dag_warning(dag_id, &tasks));
    if options.tasks.is_empty() {
        options.task_ids.clear();
        return Ok(());
    }
    let patterns = taskset::check_patterns(&options.tasks)
        .map_err(|m| Rejection::new(ReasonCode::InvalidValue, m))?;
    let ids: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
    options.task_ids = taskset::select(&patterns, &ids)
        .map_err(|e| Rejection::new(ReasonCode::NoMatchingTask, format!("DAG {dag_id:?}: {e}")))?;
    Ok(())
}

/// The copy's options from the stored ones.
fn copy_options(o: &BackfillOptions) -> CopyOptions {
    CopyOptions {
        subset: (!o.tasks.is_empty()).then(|| TaskSubset {
            patterns: o.tasks.clone(),
            task_ids: o.task_ids.clone(),
            include_upstream: o.include_upstream,
            include_downstream: o.include_downstream,
        }),
        emit_asset_events: o.emit_asset_events,
        steered: o.run_order.is_steered(),
    }
}

/// The warnings of a new backfill, for its outcome (`None` when none); with the approval it
/// waits for (or, for a dry run, would wait for) first.
fn warnings_of(new: &NewBackfill) -> Option<Vec<String>> {
    let all: Vec<String> = new
        .awaiting_approval
        .iter()
        .chain(&new.options.warnings)
        .cloned()
        .collect();
    (!all.is_empty()).then_some(all)
}

/// The dates a new backfill skips, for its outcome (`None` when none).
fn skipped_of(new: &NewBackfill) -> Option<Vec<String>> {
    (!new.skipped_dates.is_empty()).then(|| new.skipped_dates.iter().map(|d| fmt_ts(*d)).collect())
}

fn auth_name(a: &AuthSource) -> String {
    match a {
        AuthSource::Fab => "fab".into(),
        AuthSource::Simple { all_admins, .. } => format!("simple (all_admins={all_admins})"),
        AuthSource::Unavailable(why) => format!("unavailable: {why}"),
    }
}

/// The copy of a backfill, rendered from its stored row alone, so every agent writes the same
/// bytes.
fn render_copy(row: &BackfillRow) -> String {
    dagcopy::render_with(
        &row.origin_code,
        &copy_spec(row),
        &copy_options(&row.options),
    )
}

/// The copy's overlay values from the stored row.
fn copy_spec(row: &BackfillRow) -> CopySpec {
    CopySpec {
        backfill_id: row.id.clone(),
        origin_dag_id: row.dag_id.clone(),
        start: row.start,
        end: row.end,
        max_active_runs: row.max_active_runs,
        params: row.params.clone(),
        description: row.description.clone(),
        paused: row.copy_paused,
    }
}

/// Size, modification time and inode of a regular file (not following links).
fn fingerprint(path: &std::path::Path) -> Option<CopyFingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type()
        .is_file()
        .then(|| (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino()))
}

/// The structured audit event (target `backfilld::audit`).
fn emit_audit(e: &AuditEntry) {
    let code = e
        .reason_code
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    tracing::info!(
        target: "backfilld::audit",
        uid = ?e.uid,
        unix_user = ?e.unix_user,
        airflow_user = ?e.airflow_user,
        on_behalf_of = ?e.on_behalf_of,
        action = %e.action,
        object = ?e.target,
        allowed = e.allowed,
        reason_code = ?code,
        reason = ?e.reason,
        "authorization decision"
    );
}
