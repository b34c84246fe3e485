//! Talking to the service manager (systemd's `sd_notify` protocol): readiness, status line,
//! watchdog pings, reload and stop notices. Without `NOTIFY_SOCKET` every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The daemon's side of the service-manager conversation.
pub struct ServiceManager {
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    status: String,
    ready: bool,
}

impl ServiceManager {
    /// Read `NOTIFY_SOCKET` / `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: None,
            status: String::new(),
            ready: false,
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// Whether READY=1 was sent.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Send READY=1 (once; again after a reload).
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
            tracing::info!("ready");
        }
    }

    /// Send STATUS= when it changed.
    pub fn status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_owned();
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// Ping the watchdog if half its interval passed since the last ping.
    pub fn watchdog(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if self.last_ping.is_none_or(|t| t.elapsed() >= interval / 2) {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Some(Instant::now());
        }
    }

    /// Longest the main loop may sleep and still ping the watchdog in time.
    pub fn max_sleep(&self) -> Duration {
        self.watchdog
            .map(|w| w / 4)
            .unwrap_or(Duration::from_secs(3600))
    }

    /// RELOADING=1 with the monotonic timestamp systemd ≥ 253 expects; READY=1 follows when
    /// the reload is applied ([`ServiceManager::reloaded`]).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// READY=1 after a reload.
    pub fn reloaded(&mut self) {
        if self.ready {
            self.send(&[NotifyState::Ready]);
        }
    }

    /// STOPPING=1.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }
}
