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

use crate::authz::{self, Action, SimpleRole, Subject};
use crate::config::{AirflowLocation, AuthManager, Config};
use crate::control::{BackfillView, ControlRequest, ControlResponse};
use crate::dagcopy::{self, CopyOptions, CopySpec, TaskSubset};
use crate::failpoint;
use crate::lifecycle::{self, Effect, Facts};
use crate::metadb::airflow::{Airflow, AirflowSchema, Generation};
use crate::metadb::copycheck::CopyChecks;
use crate::metadb::fab::Fab;
use crate::metadb::lease::{ClaimInfo, Leases, LEADER};
use crate::metadb::pass::Pass;
use crate::metadb::store::{
    self, AuditEntry, BackfillOptions, BackfillRow, NewBackfill, PendingOp, RequestRecord, Store,
};
use crate::metadb::{change, DbError, MetaDb};
use crate::ordering::{self, Gate};
use crate::paging::{self, PageKey};
use crate::reconcile::{self, Observation, RunSummary};
use crate::request::{self, fmt_ts, Operation, Outcome, Parsed, ReasonCode, Rejection, Request};
use crate::service::ServiceManager;
use crate::spool::{self, ClaimedFile, Disposition, Spool};
use crate::state::BackfillState;
use crate::throttle;
use checks::*;
use connection::{AuthSource, Connected};
use copies::*;
use decide::{skipped_of, warnings_of, Identity, Overlapping, Reprocessed};
use eta::estimate_of;
use identity::*;
use ruling::{admit, refuse, Ruling};

mod abuse;
mod admission;
mod checks;
mod connection;
mod copies;
mod dates;
mod decide;
mod effects;
mod eta;
mod identity;
mod ingest;
mod leader;
mod limits;
pub mod listing;
mod metrics;
mod notify;
mod pass_cache;
mod passes;
mod plan;
mod query;
mod ruling;
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

/// A check that may need the DB: a DB problem (`Err`: the request waits and is decided
/// again), or a decision ([`Ruling`]).
type Checked<T, R = Rejection> = Result<Ruling<T, R>, DbError>;

/// A caller resolved to an Airflow user with its permissions, or refused (with the identity as
/// far as it was resolved).
type Resolved = Checked<(Identity, Subject), (Identity, Rejection)>;

/// The outcome of validating a file, with who it was decided for.
struct Verdict {
    ident: Identity,
    action: Action,
    target: Option<String>,
    result: Ruling<Accepted>,
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
    /// The metadata-DB connection (`engine::connection`).
    conn: connection::Link,
    service: ServiceManager,
    stop: Arc<AtomicBool>,
    unfinished_by_state: BTreeMap<BackfillState, usize>,
    watermark: Option<chrono::DateTime<Utc>>,
    turn_ended: HashMap<String, chrono::DateTime<Utc>>,
    last_pass: PassStats,
    recent_reads: HashMap<ReadKey, Instant>,
    /// A seed import job may be running: the loop runs its batches between other work.
    import_active: bool,
    /// After a lost connection, the next batch waits until then.
    import_retry_at: Option<Instant>,
    leader_token: Option<i64>,
    /// When the leader claim was last renewed (a statement that renewed it began then), and
    /// under which token: `lead` sends no renewal while it is fresh (`leader::renewal_due`).
    renewed: Option<(i64, Instant)>,
    verified_copies: HashMap<String, CopyFingerprint>,
    /// `verified_copies` as last saved in the DB (`metadb::copycheck`).
    verified_saved: HashMap<String, CopyFingerprint>,
    /// Whether the saved fingerprints were read (once, at the first convergence).
    verified_loaded: bool,
    passes: u64,
    last_pass_at: Option<(chrono::DateTime<Utc>, f64)>,
    metrics: crate::metrics::Published,
    steer: steering::SteerState,
    airflow_python: crate::airflow_python::AirflowPython,
    batch: Option<ingest::BatchCache>,
    guards: abuse::Guards,
    notifier: notify::Notifier,
    /// Deleted backfills whose Airflow-side removal this engine carried out once and whose
    /// deletion has not settled yet (`Engine::carry_out_deletes`).
    deletes_carried: std::collections::HashSet<String>,
}

/// Who read what: uid, Airflow user, target (the key of [`READ_AUDIT_WINDOW`]).
type ReadKey = (Option<u32>, Option<String>, Option<String>);

/// What a copy file looked like when this agent last wrote or checked it: a file whose size,
/// modification time and inode are unchanged is not read again.
type CopyFingerprint = (u64, i64, u64);

/// An allowed read by the same requester of the same target within this window is traced but
/// not written to `backfilld_audit` again (`Engine::audit_read`).
const READ_AUDIT_WINDOW: Duration = Duration::from_secs(300);

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

/// Every backfill's runs are counted again once every this many passes (30 min at the
/// default interval), a slice of them each pass (heals anything an incremental pass cannot
/// see, such as a deleted finished run; a full pass is made only when no cache is kept, see
/// `engine::pass_cache`). A slice of 1/60 cost 80 ms a pass at 10,000 backfills on SQLite.
const RECOUNT_EVERY: usize = 360;
/// A leader starting from the kept pass cache counts the backfills it does not cover one by
/// one (400 a statement); above this many it counts every run at once instead.
const KEPT_MAX_NEW: usize = 2000;
/// In a shared DAGs folder, how long after a copy's write was claimed a missing file is left
/// to the claiming agent before the leader restores it.
const COPY_WRITE_GRACE_SECS: i64 = 10;
/// Copies whose rows convergence reads and checks at a time (one statement each).
const COPY_CHECK_CHUNK: usize = 400;

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
            renewed: None,
            verified_copies: HashMap::new(),
            verified_saved: HashMap::new(),
            verified_loaded: false,
            conn: connection::Link::new(),
            service: ServiceManager::from_env(),
            stop: Arc::new(AtomicBool::new(false)),
            unfinished_by_state: BTreeMap::new(),
            watermark: None,
            turn_ended: HashMap::new(),
            last_pass: PassStats::default(),
            passes: 0,
            last_pass_at: None,
            metrics: crate::metrics::Published::default(),
            steer: steering::SteerState::default(),
            airflow_python,
            batch: None,
            guards,
            notifier: notify::Notifier::new(),
            deletes_carried: std::collections::HashSet::new(),
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
        if self.conn.is_up() {
            self.service.ready();
        }
        let waiting = self.spool.incoming().map(|v| v.len()).unwrap_or(0)
            + self.spool.claimed().map(|v| v.len()).unwrap_or(0);
        let status = if self.conn.is_up() {
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

    /// Run commands until `Stop` or the channel closes; between commands, rescan and reconcile
    /// on their intervals.
    pub fn run(mut self, commands: std::sync::mpsc::Receiver<Command>) {
        let mut rescan_every = Duration::from_secs(self.config.spool.rescan_interval_secs);
        let mut reconcile_every = self.config.reconcile_interval();
        let mut next_rescan = Instant::now();
        let mut next_reconcile = Instant::now();
        let mut next_live_check = Instant::now();
        loop {
            self.tick_service();
            let now = Instant::now();
            if now >= next_rescan {
                if self.scan() > 0 {
                    self.steer.requests_decided();
                }
                next_rescan = now + self.paced_rescan(rescan_every);
            }
            if now >= next_reconcile {
                self.reconcile();
                next_reconcile = Instant::now() + reconcile_every;
                next_live_check = Instant::now() + self.steer.check_period();
            } else if self.steer.watching() && now >= next_live_check {
                self.steer_on_change();
                next_live_check = Instant::now() + self.steer.check_period();
            }
            let importing = self.import_active && self.import_retry_at.is_none_or(|t| now >= t);
            if importing {
                // One batch, then the commands and passes that came meanwhile.
                let _ = self.import_step();
            }
            let wait = if importing && self.import_active {
                Duration::ZERO
            } else {
                let mut next = next_rescan
                    .min(next_reconcile)
                    .min(self.import_retry_at.unwrap_or(next_reconcile));
                if self.steer.watching() {
                    next = next.min(next_live_check);
                }
                next.saturating_duration_since(Instant::now())
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
                        self.notifier.reconfigure();
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
                if self.scan() > 0 {
                    self.steer.requests_decided();
                }
                next_rescan = next_rescan.min(Instant::now() + self.paced_rescan(rescan_every));
            }
        }
    }
}
