//! Who a request or query is from: the caller's uid resolved to an Airflow user with their
//! roles and grants (FAB or SimpleAuthManager), and the audit of every authorization decision.

use super::*;

impl Engine {
    /// Resolve who `uid` acts as and load that Airflow user's permissions. A refusal carries
    /// the identity as far as it was resolved; `Err(_)` is a DB problem.
    pub(super) fn subject(&mut self, uid: u32, on_behalf_of: Option<&str>) -> Resolved {
        let mut ident = Identity {
            uid: Some(uid),
            ..Identity::default()
        };
        let Some(unix) = self.user_name(uid) else {
            return Ok(Ruling::Refuse((
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
                return Ok(Ruling::Refuse((
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
                    return Ok(Ruling::Refuse((
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
    /// or a user the HTTP layer authenticated).
    pub(super) fn airflow_subject(
        &mut self,
        mut ident: Identity,
        airflow_user: String,
    ) -> Resolved {
        ident.airflow_user = Some(airflow_user.clone());
        let permitted = self.config.authz.permitted_roles.clone();
        let resource = self.config.authz.resource.clone();
        let resource = resource.as_str();
        let allow_all_admins = self.config.authz.allow_simple_all_admins;
        let c = self.conn.get()?;
        let no_user = |ident: Identity| {
            Ok(Ruling::Refuse((
                ident,
                Rejection::new(
                    ReasonCode::NoAirflowUser,
                    format!("Airflow has no user {airflow_user:?}"),
                ),
            )))
        };
        let subject = match &c.auth {
            AuthSource::Unavailable(why) => {
                return Ok(Ruling::Refuse((
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
                return Ok(Ruling::Refuse((
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
        Ok(Ruling::Admit((ident, subject)))
    }

    /// Record an allowed read, as a `backfilld_audit` row at most once per requester (uid and
    /// Airflow user) and target within [`READ_AUDIT_WINDOW`]: `status --watch` and the web
    /// UI's live pages ask every few seconds. Every read is still traced.
    pub(super) fn audit_read(
        &mut self,
        ident: &Identity,
        target: Option<&str>,
    ) -> Result<(), DbError> {
        let now = Instant::now();
        self.recent_reads
            .retain(|_, at| now.duration_since(*at) < READ_AUDIT_WINDOW);
        let key = (
            ident.uid,
            ident.airflow_user.clone(),
            target.map(str::to_owned),
        );
        if self.recent_reads.contains_key(&key) {
            tracing::debug!(uid = ?ident.uid, airflow_user = ?ident.airflow_user, target = ?target, "repeated read, audit row skipped");
            return Ok(());
        }
        self.recent_reads.insert(key, now);
        self.audit(ident, Action::Read, target, None)
    }

    /// Record an authorization decision: a structured event and a `backfilld_audit` row.
    pub(super) fn audit(
        &mut self,
        ident: &Identity,
        action: Action,
        target: Option<&str>,
        denial: Option<&Rejection>,
    ) -> Result<(), DbError> {
        let entry = audit_entry(ident, action, target, denial);
        emit_audit(&entry);
        if !entry.allowed {
            return self.audit_denial_row(&entry);
        }
        let host = self.host.clone();
        let c = self.conn.get()?;
        Store::new(&mut c.db).audit(&host, &entry)
    }
}

pub(super) fn denied_message(r: &Rejection) -> String {
    let code = serde_json::to_value(r.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("permission denied ({code}): {}", r.message)
}

pub(super) fn auth_name(a: &AuthSource) -> String {
    match a {
        AuthSource::Fab => "fab".into(),
        AuthSource::Simple { all_admins, .. } => format!("simple (all_admins={all_admins})"),
        AuthSource::Unavailable(why) => format!("unavailable: {why}"),
    }
}

/// The audit record of `action` by `ident` on `target`, now (`denial`: why it was refused).
pub(super) fn audit_entry(
    ident: &Identity,
    action: Action,
    target: Option<&str>,
    denial: Option<&Rejection>,
) -> AuditEntry {
    AuditEntry {
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
    }
}

/// The structured audit event (target `backfilld::audit`).
pub(super) fn emit_audit(e: &AuditEntry) {
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

/// A resolved caller, also allowed `action` on backfilld's resource (no DAG named yet); a
/// denial becomes a refusal with the caller's identity.
pub(super) fn allowed(
    resolved: Ruling<(Identity, Subject), (Identity, Rejection)>,
    action: Action,
) -> Ruling<(Identity, Subject), (Identity, Rejection)> {
    match resolved {
        Ruling::Admit((ident, subject)) => match authz::authorize(&subject, action, None) {
            Ok(()) => Ruling::Admit((ident, subject)),
            Err(d) => Ruling::Refuse((ident, d.into())),
        },
        refused => refused,
    }
}
