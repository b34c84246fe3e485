//! Notifications, the effects. After each reconcile pass the leader reads the backfills whose
//! state has an event and no sent mark (`metadb::store`), asks `notification::due` which
//! deliveries are due, renders them and hands them to a sender thread through a bounded queue,
//! so a slow or failing endpoint never holds up the engine. The thread POSTs webhooks
//! (`ureq`, short timeout, no redirects) and sends email through Airflow's SMTP settings
//! (`lettre`), each with retries and a doubling backoff, then reports the delivery finished;
//! the next pass writes its sent mark. A crash between sending and marking sends it again
//! (at most twice); a crash before sending leaves it unmarked, so the next leader sends it.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::time::Duration;

use chrono::Utc;

use super::{pass_cache, Engine};
use crate::config::{Config, SmtpSettings};
use crate::metadb::change;
use crate::metadb::store::Store;
use crate::notification::{self, Delivery, Facts, Recipient};
use crate::state::BackfillState;

/// Deliveries waiting for the sender thread at most; more wait for a later pass.
const QUEUE: usize = 256;

/// A delivery's sent-mark key: backfill id and the state it was told of.
type Key = (String, BackfillState);

/// One rendered delivery for the sender thread.
struct Job {
    key: Key,
    recipients: Vec<Recipient>,
    json: String,
    slack: String,
    subject: String,
    text: String,
}

/// How the sender thread sends.
struct Settings {
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    smtp: Result<SmtpSettings, String>,
}

/// The engine's side of notifications: the queue to the sender thread, what it has in hand,
/// and the finished deliveries whose sent marks are still to write.
pub(super) struct Notifier {
    queue: Option<SyncSender<Job>>,
    done_tx: Sender<Key>,
    done_rx: Receiver<Key>,
    in_flight: HashSet<Key>,
    to_mark: Vec<Key>,
}

impl Notifier {
    /// No thread until the first delivery.
    pub(super) fn new() -> Notifier {
        let (done_tx, done_rx) = mpsc::channel();
        Notifier {
            queue: None,
            done_tx,
            done_rx,
            in_flight: HashSet::new(),
            to_mark: Vec::new(),
        }
    }

    /// After a config reload: the next delivery starts a sender thread with the new settings
    /// (and Airflow's `[smtp]` read again); the old one finishes its queue and ends.
    pub(super) fn reconfigure(&mut self) {
        self.queue = None;
    }

    /// Start the sender thread.
    fn start(&mut self, config: &Config) -> Option<SyncSender<Job>> {
        let n = &config.notifications;
        let settings = Settings {
            timeout: Duration::from_secs(n.timeout_secs),
            retries: n.retries,
            backoff: Duration::from_secs(n.retry_backoff_secs),
            smtp: config.resolve_smtp().map_err(|e| e.to_string()),
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let done = self.done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                for job in rx {
                    send(&settings, &job);
                    if done.send(job.key).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => {
                self.queue = Some(tx.clone());
                Some(tx)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the notification thread; retrying next pass");
                None
            }
        }
    }
}

impl Engine {
    /// On the leader, after a pass: write the sent marks of finished deliveries, then queue
    /// the deliveries now due.
    pub(super) fn notify(&mut self) {
        if !self.config.notifications.enabled {
            return;
        }
        let Some(c) = self.conn.current() else {
            return;
        };
        let now = Utc::now();
        let notifier = &mut self.notifier;
        while let Ok(key) = notifier.done_rx.try_recv() {
            notifier.to_mark.push(key);
        }
        let mut store = Store::new(&mut c.db);
        while let Some((id, state)) = notifier.to_mark.last().cloned() {
            if let Err(e) = store.mark_notified(&id, state, now) {
                tracing::warn!(backfill = %id, error = %e, "cannot mark a notification sent; retrying next pass");
                return;
            }
            notifier.to_mark.pop();
            notifier.in_flight.remove(&(id, state));
        }
        let since = now
            - chrono::Duration::from_std(self.config.notifications.max_age)
                .unwrap_or(chrono::Duration::days(1));
        // Nothing to notify at the change signal's last value, and no write since: rows only
        // leave that set (sent marks, age) unless `backfilld_backfill` is written.
        let seq = match change::seq(&mut c.db) {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change signal; retrying next pass");
                return;
            }
        };
        if c.quiet_kept.get(seq, pass_cache::STAMPS_EVERY).is_some() {
            return;
        }
        let mut store = Store::new(&mut c.db);
        let rows = match store.unnotified(since) {
            Ok(ids) if ids.is_empty() => {
                c.quiet_kept.put(seq, ());
                return;
            }
            Ok(ids) => {
                let ids: Vec<&str> = ids
                    .iter()
                    .map(String::as_str)
                    .filter(|id| !notifier.in_flight.iter().any(|(i, _)| i == id))
                    .collect();
                if ids.is_empty() {
                    return;
                }
                store.backfills_any(&ids)
            }
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the backfills to notify; retrying next pass");
                return;
            }
        };
        let facts: Vec<Facts> = rows
            .into_iter()
            .map(|r| Facts {
                since: if r.state == BackfillState::AwaitingApproval {
                    r.submitted_at
                } else {
                    r.finished_at().unwrap_or(r.updated_at)
                },
                id: r.id,
                dag_id: r.dag_id,
                state: r.state,
                reason: r.state_reason,
                progress: r.progress,
                submitted_by: r.submitted_by,
                notify: r.options.notify,
            })
            .collect();
        let due = notification::due(
            &facts,
            &HashSet::new(),
            &notifier.in_flight,
            &self.config.notifications,
            now,
        );
        // What is not due now never will be in this state (too old, or no recipient or
        // event wanted when first seen): marked, so the next passes do not read it again.
        let due_keys: HashSet<Key> = due.iter().map(Delivery::key).collect();
        let mut nothing: BTreeMap<BackfillState, Vec<&str>> = BTreeMap::new();
        for f in &facts {
            let key = (f.id.clone(), f.state);
            if !due_keys.contains(&key) && !notifier.in_flight.contains(&key) {
                nothing.entry(f.state).or_default().push(f.id.as_str());
            }
        }
        for (state, ids) in &nothing {
            if let Err(e) = store.mark_nothing_to_send(ids, *state, now) {
                tracing::warn!(error = %e, "cannot mark backfills with nothing to send; reading them again next pass");
                break;
            }
        }
        for d in due {
            let job = render(&self.config, &d);
            let queue = match notifier.queue.clone() {
                Some(q) => q,
                None => match notifier.start(&self.config) {
                    Some(q) => q,
                    None => return,
                },
            };
            match queue.try_send(job) {
                Ok(()) => {
                    notifier.in_flight.insert(d.key());
                }
                Err(TrySendError::Full(_)) => return,
                Err(TrySendError::Disconnected(_)) => {
                    notifier.queue = None;
                    return;
                }
            }
        }
    }
}

/// The bodies of one delivery.
fn render(config: &Config, d: &Delivery) -> Job {
    let link = notification::link(
        config.http.public_url.as_deref(),
        &config.http.base_path,
        &d.facts.id,
    );
    Job {
        key: d.key(),
        recipients: d.recipients.clone(),
        json: notification::json_body(d, link.as_deref()).to_string(),
        slack: notification::slack_body(d, link.as_deref()).to_string(),
        subject: notification::email_subject(d),
        text: notification::text(d, link.as_deref()),
    }
}

/// Send one delivery to each of its recipients, each with its retries.
fn send(settings: &Settings, job: &Job) {
    let id = &job.key.0;
    let state = job.key.1.as_str();
    for r in &job.recipients {
        let (what, attempts, result) = match r {
            Recipient::Webhook { url, slack } => {
                let body = if *slack { &job.slack } else { &job.json };
                let (attempts, result) =
                    with_retries(settings.retries, settings.backoff, url, || {
                        post(settings, url, body)
                    });
                (url.as_str(), attempts, result)
            }
            Recipient::Email(address) => {
                let retries = match &settings.smtp {
                    Ok(s) => s.retry_limit.min(10),
                    Err(_) => 0,
                };
                let (attempts, result) = with_retries(retries, settings.backoff, address, || {
                    mail(settings, address, &job.subject, &job.text)
                });
                (address.as_str(), attempts, result)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(backfill = %id, state, recipient = %what, attempts, "notification sent")
            }
            Err(e) => tracing::error!(
                backfill = %id, state, recipient = %what, attempts, error = %e,
                "notification not sent; giving up"
            ),
        }
    }
}

/// Run `f` until it succeeds, at most `retries` more times, waiting `backoff` and then twice
/// as long each time; the attempts made and the last result (`what` names the recipient in
/// the log).
fn with_retries(
    retries: u32,
    backoff: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<(), String>,
) -> (u32, Result<(), String>) {
    let mut wait = backoff;
    let mut attempt = 1;
    loop {
        match f() {
            Ok(()) => return (attempt, Ok(())),
            Err(e) if attempt > retries => return (attempt, Err(e)),
            Err(e) => {
                tracing::warn!(recipient = %what, error = %e, attempt, "notification attempt failed; retrying");
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}

/// One webhook POST: a 2xx answer within the timeout is success; redirects are not followed.
fn post(settings: &Settings, url: &str, body: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("backfilld/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// One email through Airflow's SMTP settings (`[smtp]`): implicit TLS with `smtp_ssl`,
/// required STARTTLS with `smtp_starttls`, else plain.
fn mail(settings: &Settings, to: &str, subject: &str, text: &str) -> Result<(), String> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};

    let s = settings.smtp.as_ref().map_err(Clone::clone)?;
    let builder = if s.ssl {
        SmtpTransport::relay(&s.host).map_err(|e| e.to_string())?
    } else if s.starttls {
        SmtpTransport::starttls_relay(&s.host).map_err(|e| e.to_string())?
    } else {
        SmtpTransport::builder_dangerous(&s.host)
    };
    let mut builder = builder
        .port(s.port)
        .timeout(Some(Duration::from_secs(s.timeout_secs.max(1))));
    if let (Some(user), Some(password)) = (&s.user, &s.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let from: Mailbox = s
        .mail_from
        .parse()
        .map_err(|e| format!("[smtp] smtp_mail_from: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("{to}: {e}"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_owned())
        .map_err(|e| e.to_string())?;
    builder
        .build()
        .send(&message)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_success_or_exhausted() {
        let cases: [(u32, usize, u32, bool); 4] = [
            // (retries, failures before success, attempts made, success)
            (3, 0, 1, true),
            (3, 2, 3, true),
            (2, 2, 3, true),
            (2, 5, 3, false),
        ];
        for (retries, failures, attempts, ok) in cases {
            let mut calls = 0;
            let (made, result) = with_retries(retries, Duration::ZERO, "x", || {
                calls += 1;
                if calls > failures {
                    Ok(())
                } else {
                    Err(format!("HTTP 500 #{calls}"))
                }
            });
            assert_eq!(
                (made, result.is_ok()),
                (attempts, ok),
                "{retries} {failures}"
            );
        }
    }
}
