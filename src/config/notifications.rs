//! `[notifications]` (who is told of which backfill events, and the allow-lists of a request's
//! own recipients), checked at load, and Airflow's SMTP settings that email is sent with.

use super::*;

/// `[notifications]`: webhooks and email when a backfill succeeds, fails, is cancelled or
/// waits for approval. Config recipients are told of every backfill; a request's own
/// (`notify`) only of that one, and only within the allow-lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsSection {
    /// Send notifications at all (false: none, and requests naming recipients are refused).
    pub enabled: bool,
    /// The events sent.
    pub events: Vec<crate::notification::Event>,
    /// Webhooks told of every backfill (`https://...`, `http://...`, `slack:https://...`).
    pub webhooks: Vec<String>,
    /// Email addresses told of every backfill (`mailto:` optional).
    pub emails: Vec<String>,
    /// URL prefixes a request's webhooks must start with (each `http(s)://host/...`, ending
    /// in `/`); empty: requests may name no webhook.
    pub allowed_webhook_prefixes: Vec<String>,
    /// Domains a request's email addresses must be in; empty: any domain.
    pub allowed_email_domains: Vec<String>,
    /// Seconds one webhook POST may take.
    pub timeout_secs: u64,
    /// Retries of a failed webhook POST or email, waiting `retry_backoff_secs`, then twice
    /// as long each time.
    pub retries: u32,
    /// The first wait before a retry.
    pub retry_backoff_secs: u64,
    /// Events older than this (a backfill that finished before notifications were set up,
    /// or during a long outage) are not sent.
    #[serde(deserialize_with = "duration")]
    pub max_age: std::time::Duration,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        NotificationsSection {
            enabled: true,
            events: crate::notification::Event::ALL.to_vec(),
            webhooks: Vec::new(),
            emails: Vec::new(),
            allowed_webhook_prefixes: Vec::new(),
            allowed_email_domains: Vec::new(),
            timeout_secs: 10,
            retries: 3,
            retry_backoff_secs: 2,
            max_age: std::time::Duration::from_secs(86_400),
        }
    }
}

/// Airflow's SMTP settings (`[smtp]` in `airflow.cfg` or `AIRFLOW__SMTP__*`), with Airflow's
/// defaults. The password never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// `smtp_host`.
    pub host: String,
    /// `smtp_port`.
    pub port: u16,
    /// `smtp_starttls`: upgrade the connection (required when true).
    pub starttls: bool,
    /// `smtp_ssl`: TLS from the start.
    pub ssl: bool,
    /// `smtp_user`.
    pub user: Option<String>,
    /// `smtp_password`.
    pub password: Option<String>,
    /// `smtp_mail_from`.
    pub mail_from: String,
    /// `smtp_timeout` in seconds.
    pub timeout_secs: u64,
    /// `smtp_retry_limit`.
    pub retry_limit: u32,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("ssl", &self.ssl)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("mail_from", &self.mail_from)
            .field("timeout_secs", &self.timeout_secs)
            .field("retry_limit", &self.retry_limit)
            .finish()
    }
}

/// The `[notifications]` keys' values: recipients parse, prefixes name a path.
pub(super) fn check(n: &NotificationsSection) -> Result<(), (&'static str, String)> {
    use crate::notification::Recipient;
    for w in &n.webhooks {
        match Recipient::parse(w) {
            Ok(Recipient::Webhook { .. }) => {}
            Ok(Recipient::Email(_)) => {
                return Err((
                    "notifications.webhooks",
                    format!("{w:?} is an address; list it in emails"),
                ))
            }
            Err(e) => return Err(("notifications.webhooks", e)),
        }
    }
    for e in &n.emails {
        let spec = if e.starts_with("mailto:") {
            e.clone()
        } else {
            format!("mailto:{e}")
        };
        Recipient::parse(&spec).map_err(|m| ("notifications.emails", m))?;
    }
    for p in &n.allowed_webhook_prefixes {
        crate::notification::check_url(p)
            .map_err(|m| ("notifications.allowed_webhook_prefixes", m))?;
        let rest = p.split_once("://").map(|(_, r)| r).unwrap_or_default();
        if !rest.contains('/') || !p.ends_with('/') {
            return Err((
                "notifications.allowed_webhook_prefixes",
                format!(
                    "{p:?} must name a host and a path ending in / (https://hooks.example.com/)"
                ),
            ));
        }
    }
    if n.timeout_secs == 0 || n.timeout_secs > 300 {
        return Err(("notifications.timeout_secs", "allowed 1..=300".into()));
    }
    if n.retries > 10 {
        return Err(("notifications.retries", "allowed 0..=10".into()));
    }
    Ok(())
}
