//! Notifications: which recipients a request may name, which events are due for which
//! backfill (given its state and the sent marks), and the bodies sent (pure).
//!
//! A recipient is written as `mailto:ADDRESS` (email through Airflow's SMTP settings),
//! `https://...` or `http://...` (a webhook: a JSON POST of [`json_body`]) or
//! `slack:https://...` (a webhook with the Slack-compatible body `{"text": ...}`). Each backfill
//! is told once per event: `success`, `failure`, `cancel`, `approval_needed`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::NotificationsSection;
use crate::reconcile::Progress;
use crate::state::BackfillState;

/// Most recipients one request may name.
pub const MAX_RECIPIENTS: usize = 10;
/// Longest webhook URL.
pub const URL_MAX: usize = 2000;
/// Longest email address (RFC 5321's path limit).
pub const ADDRESS_MAX: usize = 254;

/// What a backfill is notified of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Every date succeeded.
    Success,
    /// It failed.
    Failure,
    /// It was cancelled (or its approval was rejected).
    Cancel,
    /// It waits for an approver (`[approval]`).
    ApprovalNeeded,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 4] = [
        Event::Success,
        Event::Failure,
        Event::Cancel,
        Event::ApprovalNeeded,
    ];

    /// The name in bodies and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Success => "success",
            Event::Failure => "failure",
            Event::Cancel => "cancel",
            Event::ApprovalNeeded => "approval_needed",
        }
    }

    /// The event a backfill in `state` is due, if any. Each state is entered at most once by
    /// a backfill (terminal states are final; `awaiting_approval` only at acceptance), so the
    /// state names the event's sent mark.
    pub fn of(state: BackfillState) -> Option<Event> {
        match state {
            BackfillState::Success => Some(Event::Success),
            BackfillState::Failed => Some(Event::Failure),
            BackfillState::Cancelled => Some(Event::Cancel),
            BackfillState::AwaitingApproval => Some(Event::ApprovalNeeded),
            _ => None,
        }
    }

    /// Words for a subject line.
    fn verb(self) -> &'static str {
        match self {
            Event::Success => "succeeded",
            Event::Failure => "failed",
            Event::Cancel => "was cancelled",
            Event::ApprovalNeeded => "waits for approval",
        }
    }
}

/// One recipient of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipient {
    /// An email address.
    Email(String),
    /// A webhook URL; `slack`: send `{"text": ...}` instead of the JSON document.
    Webhook {
        /// The URL (http or https).
        url: String,
        /// Slack-compatible body.
        slack: bool,
    },
}

impl Recipient {
    /// Parse one recipient as written in a request or the config.
    pub fn parse(spec: &str) -> Result<Recipient, String> {
        if let Some(address) = spec.strip_prefix("mailto:") {
            check_address(address)?;
            return Ok(Recipient::Email(address.to_owned()));
        }
        let (url, slack) = match spec.strip_prefix("slack:") {
            Some(url) => (url, true),
            None => (spec, false),
        };
        check_url(url)?;
        Ok(Recipient::Webhook {
            url: url.to_owned(),
            slack,
        })
    }

    /// The host part of a webhook URL (lowercase), or the domain of an address.
    fn domain(&self) -> String {
        match self {
            Recipient::Email(a) => a.rsplit('@').next().unwrap_or_default().to_lowercase(),
            Recipient::Webhook { url, .. } => authority(url).0.to_lowercase(),
        }
    }
}

/// The scheme's rest split into (authority, path) of an http(s) URL, or ("", "") otherwise.
fn authority(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or_default();
    match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// A plausible email address: one `@`, a local part and a dotted domain, nothing a mail
/// header could be split on.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("mailto:{address}: {why}"));
    if address.len() > ADDRESS_MAX {
        return bad(&format!("longer than {ADDRESS_MAX} characters"));
    }
    if address
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>,;:\"()[]\\".contains(c))
    {
        return bad("not a plain address (no spaces, brackets, quotes, commas)");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return bad("not an email address");
    };
    let labels_ok = domain
        .split('.')
        .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
    if local.is_empty() || domain.contains('@') || !domain.contains('.') || !labels_ok {
        return bad("not an email address");
    }
    Ok(())
}

/// An http(s) URL with a host, no user info, no spaces or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{url:?}: {why}"));
    if url.len() > URL_MAX {
        return bad(&format!("longer than {URL_MAX} characters"));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return bad("use mailto:ADDRESS, an https:// or http:// URL, or slack:URL");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("spaces or control characters");
    }
    let (host, _) = authority(url);
    if host.is_empty() || host.contains('@') {
        return bad("needs a host and no user info");
    }
    Ok(())
}

/// The `notify` list of a request: each recipient parsed, at most [`MAX_RECIPIENTS`],
/// duplicates dropped (the order kept).
pub fn check_list(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > MAX_RECIPIENTS {
        return Err(format!(
            "notify names {} recipients; at most {MAX_RECIPIENTS}",
            list.len()
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for spec in list {
        Recipient::parse(spec).map_err(|e| format!("notify: {e}"))?;
        if !out.contains(spec) {
            out.push(spec.clone());
        }
    }
    Ok(out)
}

/// Whether the operator lets a request name `r` (`[notifications]`): a webhook only under an
/// allowed URL prefix, an email only in an allowed domain when domains are listed. The spool
/// is open to every local user, so a request must not make the daemon POST anywhere else.
pub fn allowed(r: &Recipient, policy: &NotificationsSection) -> Result<(), String> {
    match r {
        Recipient::Webhook { url, .. } => {
            if policy
                .allowed_webhook_prefixes
                .iter()
                .any(|p| url.starts_with(p.as_str()))
            {
                Ok(())
            } else if policy.allowed_webhook_prefixes.is_empty() {
                Err(format!(
                    "{url:?}: requests may not name webhooks here ([notifications] allowed_webhook_prefixes is empty)"
                ))
            } else {
                Err(format!(
                    "{url:?}: not under an allowed webhook prefix ([notifications] allowed_webhook_prefixes)"
                ))
            }
        }
        Recipient::Email(a) => {
            let domain = r.domain();
            if policy.allowed_email_domains.is_empty()
                || policy
                    .allowed_email_domains
                    .iter()
                    .any(|d| d.to_lowercase() == domain)
            {
                Ok(())
            } else {
                Err(format!(
                    "mailto:{a}: not in an allowed domain ([notifications] allowed_email_domains)"
                ))
            }
        }
    }
}

/// A request's recipients checked against the operator's policy (see [`allowed`]).
pub fn check_policy(list: &[String], policy: &NotificationsSection) -> Result<(), String> {
    if !list.is_empty() && !policy.enabled {
        return Err("notify: notifications are turned off here ([notifications] enabled)".into());
    }
    for spec in list {
        let r = Recipient::parse(spec).map_err(|e| format!("notify: {e}"))?;
        allowed(&r, policy).map_err(|e| format!("notify: {e}"))?;
    }
    Ok(())
}

/// What the decision needs to know of a backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The backfill id.
    pub id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// Its state now.
    pub state: BackfillState,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Date counts.
    pub progress: Progress,
    /// The Airflow user who asked for it.
    pub submitted_by: String,
    /// When it entered the state (finished, or accepted for `awaiting_approval`).
    pub since: DateTime<Utc>,
    /// The recipients its request named.
    pub notify: Vec<String>,
}

/// One notification to send: an event of a backfill and who is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// The backfill.
    pub facts: Facts,
    /// Config defaults first, then the request's own; each once.
    pub recipients: Vec<Recipient>,
}

impl Delivery {
    /// The sent mark's key: (backfill id, state).
    pub fn key(&self) -> (String, BackfillState) {
        (self.facts.id.clone(), self.facts.state)
    }
}

/// The deliveries due now: for each backfill in a state with an event the config wants, not
/// yet marked sent (`sent`) nor in hand (`in_flight`), entered within `[notifications]
/// max_age` (older ones finished before anyone could be told), with at least one recipient.
/// A request's recipients that the policy no longer allows are left out.
pub fn due(
    backfills: &[Facts],
    sent: &HashSet<(String, BackfillState)>,
    in_flight: &HashSet<(String, BackfillState)>,
    config: &NotificationsSection,
    now: DateTime<Utc>,
) -> Vec<Delivery> {
    if !config.enabled {
        return Vec::new();
    }
    let max_age = chrono::Duration::from_std(config.max_age).unwrap_or(chrono::Duration::MAX);
    let defaults = config_recipients(config);
    let mut out = Vec::new();
    for f in backfills {
        let Some(event) = Event::of(f.state) else {
            continue;
        };
        let key = (f.id.clone(), f.state);
        if !config.events.contains(&event)
            || sent.contains(&key)
            || in_flight.contains(&key)
            || now.signed_duration_since(f.since) > max_age
        {
            continue;
        }
        let mut recipients: Vec<Recipient> = defaults.clone();
        for spec in &f.notify {
            if let Ok(r) = Recipient::parse(spec) {
                if allowed(&r, config).is_ok() && !recipients.contains(&r) {
                    recipients.push(r);
                }
            }
        }
        if recipients.is_empty() {
            continue;
        }
        out.push(Delivery {
            event,
            facts: f.clone(),
            recipients,
        });
    }
    out
}

/// The recipients `[notifications]` names for every backfill (`emails` with or without
/// `mailto:`).
pub fn config_recipients(config: &NotificationsSection) -> Vec<Recipient> {
    let emails = config.emails.iter().map(|e| {
        if e.starts_with("mailto:") {
            e.clone()
        } else {
            format!("mailto:{e}")
        }
    });
    config
        .webhooks
        .iter()
        .cloned()
        .chain(emails)
        .filter_map(|s| Recipient::parse(&s).ok())
        .collect()
}

/// The link to a backfill's page in the web UI, when `[http] public_url` is set.
pub fn link(public_url: Option<&str>, base_path: &str, id: &str) -> Option<String> {
    let base = public_url?.trim_end_matches('/');
    let id: String = id
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect();
    Some(format!(
        "{base}{}/backfills/{id}",
        base_path.trim_end_matches('/')
    ))
}

/// One line saying what happened.
pub fn summary(d: &Delivery) -> String {
    let f = &d.facts;
    let p = &f.progress;
    let counts = match d.event {
        Event::ApprovalNeeded => format!("{} dates", p.total),
        _ => format!(
            "{} of {} dates succeeded, {} failed",
            p.succeeded, p.total, p.failed
        ),
    };
    format!(
        "Backfill {} of DAG {} {} ({counts})",
        f.id,
        f.dag_id,
        d.event.verb()
    )
}

/// The documented JSON body of a webhook (`version` 1).
pub fn json_body(d: &Delivery, link: Option<&str>) -> serde_json::Value {
    let f = &d.facts;
    let p = &f.progress;
    serde_json::json!({
        "version": 1,
        "event": d.event.as_str(),
        "backfill_id": f.id,
        "dag_id": f.dag_id,
        "state": f.state.as_str(),
        "reason": f.reason,
        "submitted_by": f.submitted_by,
        "at": crate::request::fmt_ts(f.since),
        "counts": {
            "total": p.total,
            "succeeded": p.succeeded,
            "failed": p.failed,
            "running": p.running,
            "queued": p.queued,
            "pending": p.pending,
        },
        "link": link,
        "text": summary(d),
    })
}

/// The Slack-compatible body: `{"text": ...}` (the summary, the reason, the link).
pub fn slack_body(d: &Delivery, link: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "text": text(d, link) })
}

/// The email subject.
pub fn email_subject(d: &Delivery) -> String {
    format!("[backfilld] Backfill {} {}", d.facts.id, d.event.verb())
}

/// The plain-text email body, also the Slack text: the summary, the reason, the link.
pub fn text(d: &Delivery, link: Option<&str>) -> String {
    let mut out = summary(d);
    if let Some(reason) = &d.facts.reason {
        out.push_str("\nReason: ");
        out.push_str(reason);
    }
    if let Some(link) = link {
        out.push('\n');
        out.push_str(link);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NotificationsSection {
        NotificationsSection {
            allowed_webhook_prefixes: vec!["https://hooks.example.com/".into()],
            ..NotificationsSection::default()
        }
    }

    fn facts(id: &str, state: BackfillState, notify: &[&str]) -> Facts {
        Facts {
            id: id.into(),
            dag_id: "sales".into(),
            state,
            reason: (state == BackfillState::Failed).then(|| "2 of 3 logical dates failed".into()),
            progress: Progress {
                total: 3,
                succeeded: 1,
                failed: 2,
                ..Progress::default()
            },
            submitted_by: "alice".into(),
            since: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            notify: notify.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn recipients_parse_strictly() {
        let ok = [
            ("mailto:alice@example.com", true),
            ("https://hooks.example.com/x", true),
            ("http://127.0.0.1:8080/hook", true),
            ("slack:https://hooks.slack.com/services/T/B/X", true),
            ("mailto:alice", false),
            ("mailto:alice@localhost", false),
            ("mailto:a@b.com\r\nBcc: x@y.com", false),
            ("mailto:\"a b\"@example.com", false),
            ("mailto:a@@example.com", false),
            ("mailto:a@example..com", false),
            ("ftp://example.com/", false),
            ("file:///etc/passwd", false),
            ("https://", false),
            ("https://user:pw@example.com/", false),
            ("https://example.com/a b", false),
            ("slack:mailto:a@example.com", false),
            ("alice@example.com", false),
        ];
        for (spec, good) in ok {
            assert_eq!(Recipient::parse(spec).is_ok(), good, "{spec}");
        }
        assert_eq!(
            Recipient::parse("slack:https://h.example/x"),
            Ok(Recipient::Webhook {
                url: "https://h.example/x".into(),
                slack: true
            })
        );
        let long = format!("https://example.com/{}", "a".repeat(URL_MAX));
        assert!(Recipient::parse(&long).is_err());
    }

    #[test]
    fn lists_are_capped_and_deduplicated() {
        let many: Vec<String> = (0..=MAX_RECIPIENTS)
            .map(|i| format!("mailto:u{i}@example.com"))
            .collect();
        assert!(check_list(&many).is_err());
        let twice = vec![
            "mailto:a@example.com".to_owned(),
            "mailto:a@example.com".to_owned(),
        ];
        assert_eq!(check_list(&twice), Ok(vec!["mailto:a@example.com".into()]));
    }

    #[test]
    fn policy_limits_request_webhooks_and_domains() {
        let cases: [(&str, NotificationsSection, bool); 7] = [
            (
                "https://hooks.example.com/x",
                NotificationsSection::default(),
                false,
            ),
            ("https://hooks.example.com/x", policy(), true),
            ("slack:https://hooks.example.com/x", policy(), true),
            ("https://hooks.example.com.evil.net/x", policy(), false),
            ("http://169.254.169.254/latest", policy(), false),
            (
                "mailto:a@example.com",
                NotificationsSection::default(),
                true,
            ),
            (
                "mailto:a@evil.net",
                NotificationsSection {
                    allowed_email_domains: vec!["Example.com".into()],
                    ..NotificationsSection::default()
                },
                false,
            ),
        ];
        for (spec, p, good) in cases {
            assert_eq!(check_policy(&[spec.to_owned()], &p).is_ok(), good, "{spec}");
        }
        let off = NotificationsSection {
            enabled: false,
            ..NotificationsSection::default()
        };
        assert!(check_policy(&["mailto:a@example.com".into()], &off).is_err());
        assert!(check_policy(&[], &off).is_ok());
    }

    #[test]
    fn due_events_by_state_marks_and_config() {
        let config = NotificationsSection {
            webhooks: vec!["https://ops.example.com/hook".into()],
            ..policy()
        };
        let now = DateTime::from_timestamp(1_700_000_600, 0).unwrap_or_default();
        let key = |id: &str, s| (id.to_owned(), s);
        let no = HashSet::new();
        type Case<'a> = (
            &'a str,
            Facts,
            HashSet<(String, BackfillState)>,
            HashSet<(String, BackfillState)>,
            Option<Event>,
        );
        let cases: Vec<Case> = vec![
            (
                "success due",
                facts("a", BackfillState::Success, &[]),
                no.clone(),
                no.clone(),
                Some(Event::Success),
            ),
            (
                "failure due",
                facts("b", BackfillState::Failed, &[]),
                no.clone(),
                no.clone(),
                Some(Event::Failure),
            ),
            (
                "cancel due",
                facts("c", BackfillState::Cancelled, &[]),
                no.clone(),
                no.clone(),
                Some(Event::Cancel),
            ),
            (
                "approval due",
                facts("d", BackfillState::AwaitingApproval, &[]),
                no.clone(),
                no.clone(),
                Some(Event::ApprovalNeeded),
            ),
            (
                "running: nothing",
                facts("e", BackfillState::Running, &[]),
                no.clone(),
                no.clone(),
                None,
            ),
            (
                "already sent",
                facts("f", BackfillState::Success, &[]),
                [key("f", BackfillState::Success)].into(),
                no.clone(),
                None,
            ),
            (
                "sent for another state",
                facts("g", BackfillState::Cancelled, &[]),
                [key("g", BackfillState::AwaitingApproval)].into(),
                no.clone(),
                Some(Event::Cancel),
            ),
            (
                "in flight",
                facts("h", BackfillState::Success, &[]),
                no.clone(),
                [key("h", BackfillState::Success)].into(),
                None,
            ),
        ];
        for (what, f, sent, in_flight, want) in cases {
            let got = due(&[f], &sent, &in_flight, &config, now);
            assert_eq!(got.first().map(|d| d.event), want, "{what}");
        }
        // Too old: finished before max_age.
        let mut old = facts("o", BackfillState::Success, &[]);
        old.since = now - chrono::Duration::days(2);
        assert!(due(&[old], &no, &no, &config, now).is_empty());
        // Events the config leaves out; no recipients at all.
        let only_failures = NotificationsSection {
            events: vec![Event::Failure],
            ..config.clone()
        };
        assert!(due(
            &[facts("a", BackfillState::Success, &[])],
            &no,
            &no,
            &only_failures,
            now
        )
        .is_empty());
        let none = NotificationsSection::default();
        assert!(due(
            &[facts("a", BackfillState::Success, &[])],
            &no,
            &no,
            &none,
            now
        )
        .is_empty());
        // Defaults first, the request's own after, each once; a webhook the policy no longer
        // allows is left out.
        let f = facts(
            "r",
            BackfillState::Success,
            &[
                "mailto:a@example.com",
                "https://ops.example.com/hook",
                "https://elsewhere.example.net/x",
            ],
        );
        let got = due(&[f], &no, &no, &config, now);
        assert_eq!(
            got.first().map(|d| d.recipients.clone()),
            Some(vec![
                Recipient::Webhook {
                    url: "https://ops.example.com/hook".into(),
                    slack: false
                },
                Recipient::Email("a@example.com".into()),
            ])
        );
        let off = NotificationsSection {
            enabled: false,
            ..config
        };
        assert!(due(
            &[facts("a", BackfillState::Success, &[])],
            &no,
            &no,
            &off,
            now
        )
        .is_empty());
    }

    #[test]
    fn bodies() {
        let d = Delivery {
            event: Event::Failure,
            facts: facts("sales_backfill_1", BackfillState::Failed, &[]),
            recipients: Vec::new(),
        };
        let link = link(Some("https://af.example.com/"), "/backfills", &d.facts.id);
        assert_eq!(
            link.as_deref(),
            Some("https://af.example.com/backfills/backfills/sales_backfill_1")
        );
        let body = json_body(&d, link.as_deref());
        assert_eq!(body["event"], "failure");
        assert_eq!(body["backfill_id"], "sales_backfill_1");
        assert_eq!(body["dag_id"], "sales");
        assert_eq!(body["state"], "failed");
        assert_eq!(body["reason"], "2 of 3 logical dates failed");
        assert_eq!(body["counts"]["total"], 3);
        assert_eq!(body["counts"]["failed"], 2);
        assert_eq!(body["at"], "2023-11-14T22:13:20Z");
        assert_eq!(body["link"], link.as_deref().unwrap_or_default());
        let slack = slack_body(&d, None);
        assert_eq!(
            slack,
            serde_json::json!({"text": "Backfill sales_backfill_1 of DAG sales failed (1 of 3 dates succeeded, 2 failed)\nReason: 2 of 3 logical dates failed"})
        );
        assert_eq!(
            email_subject(&d),
            "[backfilld] Backfill sales_backfill_1 failed"
        );
        assert!(json_body(&d, None)["link"].is_null());
        assert_eq!(
            link_of_odd_id(),
            Some("https://x.example/backfills/a%20b".into())
        );
    }

    fn link_of_odd_id() -> Option<String> {
        link(Some("https://x.example"), "", "a b")
    }
}
