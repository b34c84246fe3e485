//! The engine's one metadata-DB connection: connecting (schema detection, migrations, the auth
//! source) with a doubling backoff between attempts, the [`Connected`] handle every DB step
//! works through, and dropping the connection when it is lost.
//!
//! The connection lives only in a [`Link`]; the engine reaches it through
//! [`Engine::connected`] (connect if need be, then the handle), [`Link::get`] (the handle of
//! a connection made earlier in the same step) or [`Link::current`] (the work that is skipped
//! while the DB is down). [`Engine::lost`] drops it after an error that lost it; the next
//! step reconnects.

use super::*;

/// The copy folder's live copies as `Store::live_copies` reads them: (backfill id, when its
/// copy was written, whether it is backfilld's own copy and not an imported seed's).
pub(super) type LiveCopies = Vec<(String, chrono::DateTime<Utc>, bool)>;

/// An open connection and what was learnt when it was made. Dropped as a whole when the
/// connection is lost, so nothing here outlives it.
pub(super) struct Connected {
    pub(super) db: MetaDb,
    pub(super) schema: AirflowSchema,
    pub(super) auth: AuthSource,
    /// What the last reconcile pass read (dropped with the connection: full pass after).
    pub(super) pass_cache: Option<pass_cache::PassCache>,
    /// The copy folder's live copies (`Store::live_copies`), kept while backfilld's change
    /// signal stays put (`metadb::change`).
    pub(super) live_kept: change::Kept<Arc<LiveCopies>>,
    /// When the next automatic deletion is due, kept while the change signal stays put.
    pub(super) due_kept: change::Kept<Option<chrono::DateTime<Utc>>>,
    /// Kept while the change signal stays put after notifications found nothing to send.
    pub(super) quiet_kept: change::Kept<()>,
    /// Origin DAGs' recent run durations for estimates (`eta`).
    pub(super) durations: eta::RecentDurations,
}

/// Where users, roles and permissions come from, decided at connect time.
#[derive(Debug, Clone)]
pub(super) enum AuthSource {
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

/// Longest wait between reconnect attempts: after an outage, requests wait at most this long.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The first wait after a failed attempt (doubled up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The connection, when there is one, and when the next attempt may be made.
pub(super) struct Link {
    up: Option<Connected>,
    next_connect: Instant,
    backoff: Duration,
    outage_reported: bool,
}

impl Link {
    /// No connection yet; the first attempt may be made at once.
    pub(super) fn new() -> Link {
        Link {
            up: None,
            next_connect: Instant::now(),
            backoff: FIRST_BACKOFF,
            outage_reported: false,
        }
    }

    /// Whether a connection is up.
    pub(super) fn is_up(&self) -> bool {
        self.up.is_some()
    }

    /// The handle of the connection made earlier in this step; `not connected` if it was lost
    /// since (the step fails and the next one reconnects).
    pub(super) fn get(&mut self) -> Result<&mut Connected, DbError> {
        self.up.as_mut().ok_or_else(|| DbError::Connect {
            url: String::new(),
            message: "not connected".into(),
        })
    }

    /// The handle if a connection is up, for work that is skipped while the DB is down.
    pub(super) fn current(&mut self) -> Option<&mut Connected> {
        self.up.as_mut()
    }

    /// The statements sent over the connection so far (0 when down).
    pub(super) fn query_count(&self) -> u64 {
        self.up.as_ref().map_or(0, |c| c.db.query_count())
    }

    /// Drop the connection after `e` if `e` lost it.
    fn lost(&mut self, e: &DbError) {
        if e.is_connection_lost() {
            tracing::warn!(error = %e, "lost the metadata DB connection; will reconnect");
            self.up = None;
        }
    }

    /// The connection, made by `open` (with the backfilld schema version it migrated to) if
    /// none is up and the backoff allows an attempt.
    fn ensure(
        &mut self,
        url: &crate::dburl::DbUrl,
        open: impl FnOnce() -> Result<(Connected, i64), DbError>,
    ) -> Result<&mut Connected, DbError> {
        if self.up.is_none() {
            if Instant::now() < self.next_connect {
                return Err(DbError::Connect {
                    url: url.to_string(),
                    message: "waiting to reconnect".into(),
                });
            }
            match open() {
                Ok((c, version)) => {
                    tracing::info!(db = %url, generation = ?c.schema.generation, revision = %c.schema.revision, backfilld_schema = version, auth = ?auth_name(&c.auth), "connected to the metadata DB");
                    self.up = Some(c);
                    self.backoff = FIRST_BACKOFF;
                    self.outage_reported = false;
                }
                Err(e) => {
                    if !self.outage_reported || self.backoff >= MAX_BACKOFF {
                        tracing::error!(error = %e, retry_in_ms = self.backoff.as_millis() as u64, "metadata DB unavailable; requests wait in the spool");
                        self.outage_reported = true;
                    }
                    self.next_connect = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(e);
                }
            }
        }
        self.get()
    }
}

impl Engine {
    /// Make sure a connection is up (connect, detect the schema, migrate), with backoff.
    pub fn ensure_connected(&mut self) -> Result<(), DbError> {
        self.connected().map(|_| ())
    }

    /// The connection's handle, connecting first if none is up (with backoff).
    pub(super) fn connected(&mut self) -> Result<&mut Connected, DbError> {
        let config = &self.config;
        let url = &self.airflow.db;
        self.conn.ensure(url, || {
            let mut db = MetaDb::connect(url)?;
            let schema = AirflowSchema::detect(&mut db)?;
            let version = store::migrate(&mut db)?;
            let auth = auth_source(config, &mut db, &schema)?;
            let c = Connected {
                db,
                schema,
                auth,
                pass_cache: None,
                live_kept: change::Kept::default(),
                due_kept: change::Kept::default(),
                quiet_kept: change::Kept::default(),
                durations: eta::RecentDurations::default(),
            };
            Ok((c, version))
        })
    }

    /// Drop the connection if `e` lost it; the next step reconnects.
    pub(super) fn lost(&mut self, e: &DbError) {
        if matches!(e, DbError::NotHolder(_)) {
            // A fenced write found the claim gone: the next pass asks the DB again.
            self.renewed = None;
        }
        self.conn.lost(e);
    }
}

/// Detect the auth manager and, with FAB, register the `Backfills` permissions.
fn auth_source(
    config: &Config,
    db: &mut MetaDb,
    schema: &AirflowSchema,
) -> Result<AuthSource, DbError> {
    let setting = match config.resolve_auth_manager() {
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
            match fab.register_backfills(&config.authz.permitted_roles, &config.authz.resource) {
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
