//! The engine's side of the HTTP layer: reads and look-ups for an Airflow user the HTTP layer
//! authenticated, answered on the engine thread with the same authorization and audit as the
//! control socket. Creating and life-cycle actions do not come through here: the HTTP layer
//! publishes request files into the spool (see `http::api`), which go through the one ingest
//! pipeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;

use super::identity::allowed;
use super::listing;
use super::ruling::{admit, refuse, Ruling};
use super::{emit_audit, AuthSource, Checked, Engine, Identity};
use crate::approval;
use crate::authz::{self, Action, Subject};
use crate::control::BackfillView;
use crate::dagcopy;
use crate::lifecycle::{self, Facts};
use crate::metadb::airflow::{Airflow, FailedTask, Generation, RunLink};
use crate::metadb::fab::{Fab, FabUser};
use crate::metadb::store::{self, AuditEntry, BackfillRow, ListQuery, Store};
use crate::paging::PageKey;
use crate::reconcile::{Progress, RunObservation, RunState};
use crate::request::{fmt_ts, Rejection};
use crate::state::BackfillState;

/// The life-cycle actions, in the order the web UI shows them.
pub const LIFECYCLE_ACTIONS: [Action; 7] = [
    Action::Approve,
    Action::Reject,
    Action::Pause,
    Action::Resume,
    Action::Cancel,
    Action::Retry,
    Action::Delete,
];

/// Why a web request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebError {
    /// The user may not do this (the rejection says why); audited.
    #[error("{}", .0.message)]
    Denied(Rejection),
    /// No such backfill.
    #[error("{0}")]
    NotFound(String),
    /// The metadata DB or the auth source is unavailable.
    #[error("{0}")]
    Unavailable(String),
}

/// Where an answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, WebError>>;

/// What the HTTP layer asks the engine.
pub enum WebCommand {
    /// The stored password hash of an Airflow (FAB) user, to verify a login off the engine
    /// thread.
    Credentials {
        /// `ab_user.username`.
        username: String,
        /// `None`: no such user, or no password login with this auth manager.
        reply: Reply<Option<Credentials>>,
    },
    /// The `ab_user` row of an id (the subject of an Airflow 3 token, the user of an Airflow
    /// 2 webserver session).
    UserById {
        /// `ab_user.id`.
        id: i64,
        /// The user, if it exists.
        reply: Reply<Option<FabUser>>,
    },
    /// The data of an unexpired Airflow 2 webserver session in the `session` table.
    WebserverSession {
        /// Flask-Session's session id (its signature already checked).
        sid: String,
        /// Flask's tagged JSON, if the session exists and has not expired.
        reply: Reply<Option<Vec<u8>>>,
    },
    /// Whether Airflow revoked an api-server token (its `jti`).
    TokenRevoked {
        /// The token's `jti` claim.
        jti: String,
        /// True when revoked.
        reply: Reply<bool>,
    },
    /// Record a login attempt (audit row and event).
    AuditLogin {
        /// The user name tried.
        username: String,
        /// The client address.
        client: String,
        /// Whether it succeeded.
        allowed: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// One page of the backfills the user may read, newest first (see `paging`).
    ListPage {
        /// The authenticated Airflow user.
        username: String,
        /// Which page.
        page: PageRequest,
        /// The page.
        reply: Reply<WebPage>,
    },
    /// One backfill, with per-date states.
    Get {
        /// The authenticated Airflow user.
        username: String,
        /// Backfill id.
        id: String,
        /// The backfill.
        reply: Reply<WebDetail>,
    },
    /// Whether the user may read `/metrics` (`can_read` on `Backfills`; only a refusal is
    /// audited, so a scraper does not fill the audit log).
    MetricsAccess {
        /// The authenticated Airflow user.
        username: String,
        /// `Ok(())` when allowed.
        reply: Reply<()>,
    },
    /// The task ids of a DAG the user may read, from its serialized form (for the create
    /// form's task patterns).
    Tasks {
        /// The authenticated Airflow user.
        username: String,
        /// The DAG.
        dag_id: String,
        /// Its task ids, sorted (none when it is not serialized yet).
        reply: Reply<Vec<String>>,
    },
    /// Active DAGs the user may create backfills of.
    Dags {
        /// The authenticated Airflow user.
        username: String,
        /// DAG ids, sorted.
        reply: Reply<Vec<String>>,
    },
    /// Which Airflow signs users in, for the link from the login page to its sign-in page.
    SignIn {
        /// Its major and auth manager.
        reply: Reply<AirflowSignIn>,
    },
}

/// The Airflow that signs users in (see [`WebCommand::SignIn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AirflowSignIn {
    /// Airflow 3 (its api-server), else Airflow 2 (its webserver).
    pub airflow3: bool,
    /// Through FAB: Airflow 2's webserver, or Airflow 3's FAB auth manager.
    pub fab: bool,
}

/// Which page of a list the HTTP layer asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The filters the DB applies (deleted, DAG, state, submitted since).
    pub query: ListQuery,
    /// Only backfills with a logical date in this range, bounds included (the seed API's
    /// `start_date`/`end_date`); a backfill without dates passes.
    pub dates_within: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Start after this backfill (the previous page's `next`).
    pub cursor: Option<PageKey>,
    /// Matching backfills to leave out first (the seed API's `offset`).
    pub skip: usize,
    /// Most backfills in the page (already checked with `paging::page_size`).
    pub limit: usize,
    /// Also count every backfill matching `query` that the user may read.
    pub count: bool,
}

/// A page of a list, as one user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebPage {
    /// The backfills, newest first.
    pub backfills: Vec<WebBackfill>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageKey>,
    /// Backfills matching the query that the user may read (without `dates_within`), when
    /// asked.
    pub total: Option<u64>,
}

/// A stored login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `ab_user.username`.
    pub username: String,
    /// `ab_user.active`.
    pub active: bool,
    /// `ab_user.password` (werkzeug's `method$salt$hash`), if set.
    pub password_hash: Option<String>,
}

/// A backfill as the HTTP layer shows it to one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebBackfill {
    /// The backfill as `backfillctl status --json` shows it.
    #[serde(flatten)]
    pub view: BackfillView,
    /// The life-cycle actions this user may ask for now.
    pub allowed_actions: Vec<Action>,
    /// Why it is not further along, when something is waiting.
    pub waiting: Option<String>,
    /// Every logical date, typed (the view has them as text).
    #[serde(skip)]
    pub dates: Vec<DateTime<Utc>>,
}

/// One backfill with the state of each of its logical dates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebDetail {
    /// The backfill.
    #[serde(flatten)]
    pub backfill: WebBackfill,
    /// Per logical date, in order.
    pub date_states: Vec<DateState>,
    /// Whether Airflow is 3.x (its UI's URLs differ from 2.x's; for the web UI only).
    #[serde(skip)]
    pub airflow3: bool,
}

/// The state of one logical date of a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DateState {
    /// The logical date (RFC 3339).
    pub logical_date: String,
    /// `pending` (no run yet), `queued`, `running`, `success` or `failed`.
    pub state: &'static str,
    /// When its run started.
    pub start: Option<String>,
    /// When its run ended.
    pub end: Option<String>,
    /// Its run's id in Airflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Its run's failed task instances.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<FailedTask>,
}

/// The state of each logical date from the copy's runs (and their ids and failed tasks).
pub fn date_states(
    dates: &[DateTime<Utc>],
    runs: &[RunObservation],
    links: &[RunLink],
) -> Vec<DateState> {
    dates
        .iter()
        .map(|d| {
            let run = runs.iter().find(|r| r.logical_date == *d);
            let link = links.iter().find(|l| l.logical_date == *d);
            DateState {
                logical_date: fmt_ts(*d),
                state: match run.map(|r| r.state) {
                    None => "pending",
                    Some(RunState::Queued) => "queued",
                    Some(RunState::Running) => "running",
                    Some(RunState::Success) => "success",
                    Some(RunState::Failed) => "failed",
                },
                start: run.and_then(|r| r.start_date).map(fmt_ts),
                end: run.and_then(|r| r.end_date).map(fmt_ts),
                run_id: link.map(|l| l.run_id.clone()),
                failed_tasks: link.map(|l| l.failed_tasks.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// `n` with its noun: `1 date`, `3 dates` (`one`/`many` the words after the number).
pub fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Why a backfill in `state` with `progress` is not further along, for people; `None` when
/// nothing waits.
pub fn why_waiting(
    state: BackfillState,
    copy_written: bool,
    progress: &Progress,
    max_active_runs: u32,
) -> Option<String> {
    let waiting = progress.pending + progress.queued;
    match state {
        BackfillState::Submitted if !copy_written => {
            Some("Accepted. backfilld writes its copy of the DAG in a moment.".into())
        }
        BackfillState::Submitted => Some(
            "The DAG copy is written; waiting for Airflow's DAG processor to pick it up.".into(),
        ),
        BackfillState::Queued => {
            Some("Airflow knows the copy; waiting for its scheduler to start the runs.".into())
        }
        BackfillState::Paused => Some(format!(
            "Paused in Airflow: {} will wait until it is resumed.",
            count(waiting, "date", "dates")
        )),
        BackfillState::Running if waiting > 0 => Some(format!(
            "{} waiting for a turn. This backfill runs at most {} at a time ({} now); Airflow's scheduler may have fewer slots free.",
            count(waiting, "date is", "dates are"),
            count(max_active_runs, "date", "dates"),
            count(progress.running, "is running", "are running")
        )),
        _ => None,
    }
}

impl Engine {
    /// Answer one request of the HTTP layer.
    pub(super) fn web(&mut self, command: WebCommand) {
        match command {
            WebCommand::Credentials { username, reply } => {
                let answer = self.web_answer(|e| e.credentials(&username));
                let _ = reply.send(answer);
            }
            WebCommand::UserById { id, reply } => {
                let answer = self.web_answer(|e| {
                    let c = e.conn.get()?;
                    Ok(Ruling::Admit(match c.auth {
                        AuthSource::Fab => Fab::new(&mut c.db).user_by_id(id)?,
                        _ => None,
                    }))
                });
                let _ = reply.send(answer);
            }
            WebCommand::WebserverSession { sid, reply } => {
                let answer = self.web_answer(|e| {
                    let c = e.conn.get()?;
                    Ok(Ruling::Admit(match c.auth {
                        AuthSource::Fab => {
                            Fab::new(&mut c.db).webserver_session(&sid, Utc::now().naive_utc())?
                        }
                        _ => None,
                    }))
                });
                let _ = reply.send(answer);
            }
            WebCommand::TokenRevoked { jti, reply } => {
                let answer = self.web_answer(|e| {
                    let c = e.conn.get()?;
                    Ok(Ruling::Admit(
                        Airflow::new(&mut c.db, &c.schema).token_revoked(&jti)?,
                    ))
                });
                let _ = reply.send(answer);
            }
            WebCommand::AuditLogin {
                username,
                client,
                allowed,
                reason,
            } => {
                let entry = AuditEntry {
                    at: store::stored_ts(Utc::now()),
                    uid: None,
                    unix_user: Some(format!("http:{client}")),
                    airflow_user: Some(username),
                    on_behalf_of: None,
                    action: "login".into(),
                    target: None,
                    allowed,
                    reason_code: None,
                    reason,
                };
                emit_audit(&entry);
                if self.ensure_connected().is_ok() {
                    let written = if entry.allowed {
                        let host = self.host.clone();
                        match self.conn.current() {
                            Some(c) => Store::new(&mut c.db).audit(&host, &entry),
                            None => Ok(()),
                        }
                    } else {
                        self.audit_denial_row(&entry)
                    };
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "cannot record a login in the audit log");
                        self.lost(&e);
                    }
                }
            }
            WebCommand::ListPage {
                username,
                page,
                reply,
            } => {
                let answer = self.web_answer(|e| e.web_list_page(&username, &page));
                let _ = reply.send(answer);
            }
            WebCommand::Get {
                username,
                id,
                reply,
            } => {
                let answer = self.web_answer(|e| e.web_get(&username, &id));
                let _ = reply.send(answer);
            }
            WebCommand::Tasks {
                username,
                dag_id,
                reply,
            } => {
                let answer = self.web_answer(|e| e.web_tasks(&username, &dag_id));
                let _ = reply.send(answer);
            }
            WebCommand::Dags { username, reply } => {
                let answer = self.web_answer(|e| e.web_dags(&username));
                let _ = reply.send(answer);
            }
            WebCommand::SignIn { reply } => {
                let answer = self.web_answer(|e| {
                    let c = e.conn.get()?;
                    Ok(Ruling::Admit(AirflowSignIn {
                        airflow3: c.schema.generation == Generation::V3,
                        fab: matches!(c.auth, AuthSource::Fab),
                    }))
                });
                let _ = reply.send(answer);
            }
            WebCommand::MetricsAccess { username, reply } => {
                let answer =
                    self.web_answer(|e| Ok(e.web_reader(&username, Some("metrics"))?.map(|_| ())));
                let _ = reply.send(answer);
            }
        }
    }

    /// Connect if needed, run `f`, and turn DB trouble into [`WebError::Unavailable`].
    fn web_answer<T>(
        &mut self,
        f: impl FnOnce(&mut Engine) -> Checked<T, WebError>,
    ) -> Result<T, WebError> {
        if let Err(e) = self.ensure_connected() {
            return Err(WebError::Unavailable(format!(
                "the metadata DB is unavailable: {e}"
            )));
        }
        match f(self) {
            Ok(answer) => answer.into_result(),
            Err(e) => {
                self.lost(&e);
                Err(WebError::Unavailable(format!("metadata DB error: {e}")))
            }
        }
    }

    fn credentials(&mut self, username: &str) -> Checked<Option<Credentials>, WebError> {
        let c = self.conn.get()?;
        match &c.auth {
            AuthSource::Fab => {
                let found = Fab::new(&mut c.db).credentials(username)?;
                Ok(Ruling::Admit(found.map(|(user, hash)| Credentials {
                    username: user.username,
                    active: user.active,
                    password_hash: hash,
                })))
            }
            AuthSource::Simple { .. } => Ok(Ruling::Refuse(WebError::Unavailable(
                "Airflow uses the SimpleAuthManager, whose passwords backfilld cannot check; log in with a token from Airflow's api-server".into(),
            ))),
            AuthSource::Unavailable(why) => Ok(Ruling::Refuse(WebError::Unavailable(why.clone()))),
        }
    }

    /// The user's subject, authorised to read `Backfills` (audited when refused).
    fn web_reader(
        &mut self,
        username: &str,
        target: Option<&str>,
    ) -> Checked<(Identity, Subject), WebError> {
        let ident = Identity {
            unix_user: Some("http".into()),
            ..Identity::default()
        };
        match allowed(
            self.airflow_subject(ident, username.to_owned())?,
            Action::Read,
        ) {
            Ruling::Admit(v) => Ok(Ruling::Admit(v)),
            Ruling::Refuse((ident, r)) => {
                self.audit(&ident, Action::Read, target, Some(&r))?;
                Ok(Ruling::Refuse(WebError::Denied(r)))
            }
        }
    }

    fn web_list_page(
        &mut self,
        username: &str,
        request: &PageRequest,
    ) -> Checked<WebPage, WebError> {
        let (ident, subject) = admit!(self.web_reader(username, None)?);
        let roles = self.config.approval.approver_roles.clone();
        let c = self.conn.get()?;
        let within = request.dates_within;
        let page = listing::page(
            &mut c.db,
            &request.query,
            request.cursor.clone(),
            request.limit,
            request.skip,
            |b| {
                subject.can_read_dag(&b.dag_id)
                    && within.is_none_or(|(from, to)| {
                        b.logical_dates.is_empty()
                            || b.logical_dates.iter().any(|d| from <= *d && *d <= to)
                    })
            },
            |b| web_backfill(b, &subject, &roles),
        )?;
        let total = if request.count {
            let counts = Store::new(&mut c.db).count_by_dag(&request.query)?;
            Some(
                counts
                    .iter()
                    .filter(|(dag, _)| subject.can_read_dag(dag))
                    .map(|(_, n)| n)
                    .sum(),
            )
        } else {
            None
        };
        self.audit_read(&ident, None)?;
        Ok(Ruling::Admit(WebPage {
            backfills: page.items,
            next: page.next,
            total,
        }))
    }

    fn web_get(&mut self, username: &str, id: &str) -> Checked<WebDetail, WebError> {
        let (ident, subject) = admit!(self.web_reader(username, Some(id))?);
        let c = self.conn.get()?;
        let Some(row) = Store::new(&mut c.db).backfill_any(id)? else {
            refuse!(WebError::NotFound(format!(
                "The backfill with backfill_dag_id: `{id}` was not found"
            )));
        };
        if let Err(d) = authz::authorize(&subject, Action::Read, Some(&row.dag_id)) {
            let r = Rejection::from(d);
            self.audit(&ident, Action::Read, Some(id), Some(&r))?;
            refuse!(WebError::Denied(r));
        }
        let (runs, links) = if row.copy_written_at.is_some() {
            let mut af = Airflow::new(&mut c.db, &c.schema);
            (af.runs(&row.id)?, af.run_links(&row.id)?)
        } else {
            (Vec::new(), Vec::new())
        };
        let airflow3 = c.schema.generation == Generation::V3;
        let mut backfill = web_backfill(&row, &subject, &self.config.approval.approver_roles);
        backfill.view.estimate = super::estimate_of(c, &row, &self.config)?;
        let detail = WebDetail {
            date_states: date_states(&row.logical_dates, &runs, &links),
            backfill,
            airflow3,
        };
        self.audit_read(&ident, Some(id))?;
        Ok(Ruling::Admit(detail))
    }

    fn web_tasks(&mut self, username: &str, dag_id: &str) -> Checked<Vec<String>, WebError> {
        let (ident, subject) = admit!(self.web_reader(username, None)?);
        if let Err(d) = authz::authorize(&subject, Action::Read, Some(dag_id)) {
            let r = Rejection::from(d);
            self.audit(&ident, Action::Read, Some(dag_id), Some(&r))?;
            refuse!(WebError::Denied(r));
        }
        let c = self.conn.get()?;
        let dag = Airflow::new(&mut c.db, &c.schema).serialized_dag(dag_id)?;
        let mut ids: Vec<String> = dag
            .as_ref()
            .map(crate::taskset::tasks)
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        ids.sort();
        Ok(Ruling::Admit(ids))
    }

    fn web_dags(&mut self, username: &str) -> Checked<Vec<String>, WebError> {
        let (_, subject) = admit!(self.web_reader(username, None)?);
        let c = self.conn.get()?;
        let copies = format!("/{}/", dagcopy::COPY_SUBDIR);
        let dags = Airflow::new(&mut c.db, &c.schema).active_dags()?;
        Ok(Ruling::Admit(
            dags.into_iter()
                .filter(|d| !d.fileloc.as_deref().is_some_and(|f| f.contains(&copies)))
                .filter(|d| authz::authorize(&subject, Action::Create, Some(&d.dag_id)).is_ok())
                .map(|d| d.dag_id)
                .collect(),
        ))
    }
}

/// A row as one user sees it: with the actions they may take on it now (approve and reject
/// only for an approver who is not its requester; see `approval::decide`).
fn web_backfill(row: &BackfillRow, subject: &Subject, approver_roles: &[String]) -> WebBackfill {
    let facts = Facts {
        state: row.state,
        deleted: row.deleted,
        copy_written: row.copy_written_at.is_some(),
        failed_dates: row.progress.failed,
    };
    let may_decide = |action: Action| {
        // Web requests are written with `on_behalf_of`, so only the Airflow user is compared.
        let decider = approval::Decider {
            subject,
            uid: None,
            on_behalf: true,
        };
        let requester = approval::Requester {
            airflow_user: &row.submitted_by,
            uid: row.submitted_uid,
            on_behalf: row.on_behalf_of.is_some(),
        };
        approval::decide(decider, requester, &row.dag_id, approver_roles, action).is_ok()
    };
    let allowed_actions = LIFECYCLE_ACTIONS
        .into_iter()
        .filter(|a| {
            authz::authorize(subject, *a, Some(&row.dag_id)).is_ok()
                && lifecycle::plan(*a, facts).is_ok()
                && (!matches!(a, Action::Approve | Action::Reject) || may_decide(*a))
        })
        .collect();
    WebBackfill {
        view: BackfillView::from(row),
        allowed_actions,
        // A backfill waiting for its prerequisites (`after`) says for which; one awaiting
        // approval says why it needs one.
        waiting: row
            .state_reason
            .clone()
            .filter(|r| {
                (row.state == BackfillState::Submitted && r.starts_with("waiting for "))
                    || row.state == BackfillState::AwaitingApproval
            })
            .or_else(|| {
                why_waiting(
                    row.state,
                    row.copy_written_at.is_some(),
                    &row.progress,
                    row.max_active_runs,
                )
            }),
        dates: row.logical_dates.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::day;

    #[test]
    fn date_states_follow_runs() {
        let runs = vec![
            RunObservation {
                logical_date: day(1),
                state: RunState::Success,
                start_date: Some(day(5)),
                end_date: Some(day(6)),
            },
            RunObservation {
                logical_date: day(2),
                state: RunState::Running,
                start_date: Some(day(6)),
                end_date: None,
            },
        ];
        let links = vec![RunLink {
            logical_date: day(1),
            run_id: "backfill__2024-01-01".into(),
            failed_tasks: vec![FailedTask {
                task_id: "load".into(),
                map_index: -1,
            }],
        }];
        let states = date_states(&[day(1), day(2), day(3)], &runs, &links);
        assert_eq!(states[0].run_id.as_deref(), Some("backfill__2024-01-01"));
        assert_eq!(states[0].failed_tasks.len(), 1);
        assert_eq!(states[1].run_id, None);
        let names: Vec<_> = states.iter().map(|s| s.state).collect();
        assert_eq!(names, ["success", "running", "pending"]);
        assert_eq!(states[0].end.as_deref(), Some("2024-01-06T00:00:00Z"));
        assert_eq!(states[2].start, None);
    }

    #[test]
    fn why_waiting_says_what_blocks() {
        let p = Progress {
            total: 5,
            succeeded: 1,
            running: 2,
            pending: 2,
            ..Progress::default()
        };
        let running = why_waiting(BackfillState::Running, true, &p, 2);
        assert_eq!(
            running.as_deref(),
            Some("2 dates are waiting for a turn. This backfill runs at most 2 dates at a time (2 are running now); Airflow's scheduler may have fewer slots free.")
        );
        let one = Progress {
            running: 1,
            pending: 1,
            ..p
        };
        assert!(why_waiting(BackfillState::Running, true, &one, 1)
            .is_some_and(|w| w.starts_with("1 date is waiting")
                && w.contains("at most 1 date at a time (1 is running now)")));
        assert!(why_waiting(BackfillState::Submitted, false, &p, 2)
            .is_some_and(|w| w.contains("writes its copy of the DAG")));
        assert!(why_waiting(BackfillState::Submitted, true, &p, 2)
            .is_some_and(|w| w.contains("pick it up")));
        assert!(
            why_waiting(BackfillState::Paused, true, &p, 2).is_some_and(|w| w.contains("resumed"))
        );
        assert_eq!(why_waiting(BackfillState::Success, true, &p, 2), None);
        let done = Progress {
            total: 2,
            succeeded: 1,
            running: 1,
            ..Progress::default()
        };
        assert_eq!(why_waiting(BackfillState::Running, true, &done, 2), None);
    }
}
