//! The engine's guards against local abuse: intake paced per uid, audited denials limited per
//! requester (the decisions are [`crate::ratelimit`]'s), and retention of what decided
//! requests leave behind (files in `accepted/`/`rejected/`, request records).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::Engine;
use crate::config::{LimitsSection, RetentionSection};
use crate::metadb::store::AuditEntry;
use crate::metadb::store::{self, Store};
use crate::ratelimit::{DenialAudit, DenialRecord, RateLimiter};
use crate::request::ReasonCode;

/// Who a denial is counted against: the uid (spool, control socket) and the Airflow user
/// (HTTP), as the audit row names them.
pub(super) type Requester = (Option<u32>, Option<String>);

/// Suppressed denials of a requester quiet this long are written as one summary row.
const SUMMARY_AFTER: Duration = Duration::from_secs(60);

/// Rate limits and retention state.
pub(super) struct Guards {
    /// Request files decided per uid.
    intake: RateLimiter<u32>,
    /// At most one "files wait" warning per uid a minute.
    deferral_warnings: RateLimiter<u32>,
    /// Files left in `incoming/` by the last scan, per uid.
    pub(super) deferred: HashMap<u32, usize>,
    /// Denials written per requester.
    denials: DenialAudit<Requester>,
    /// Limits the rate limiters were built with.
    limits: (u32, u32),
    /// When retention runs next.
    next_sweep: Instant,
    /// Denials counted and not written one by one, since the start.
    pub(super) denials_suppressed: u64,
    /// The last suppressed denial of each requester with some, for its summary row.
    last_suppressed: HashMap<Requester, AuditEntry>,
}

/// The requester a denial counts against: a uid when the kernel gave one (spool, control
/// socket); else the HTTP client of a login (`http:<addr>`) or the signed-in Airflow user.
fn requester(e: &AuditEntry) -> Requester {
    match e.uid {
        Some(uid) => (Some(uid), None),
        None => (None, e.unix_user.clone().or_else(|| e.airflow_user.clone())),
    }
}

impl Guards {
    /// Guards for `limits`.
    pub(super) fn new(limits: &LimitsSection) -> Guards {
        Guards {
            intake: RateLimiter::new(limits.max_files_per_user_per_minute),
            deferral_warnings: RateLimiter::new(1),
            deferred: HashMap::new(),
            denials: DenialAudit::new(limits.max_audited_denials_per_user_per_minute),
            limits: (
                limits.max_files_per_user_per_minute,
                limits.max_audited_denials_per_user_per_minute,
            ),
            next_sweep: Instant::now(),
            denials_suppressed: 0,
            last_suppressed: HashMap::new(),
        }
    }

    /// Rebuild the limiters when a reloaded configuration changed their rates.
    pub(super) fn reconfigure(&mut self, limits: &LimitsSection) {
        let wanted = (
            limits.max_files_per_user_per_minute,
            limits.max_audited_denials_per_user_per_minute,
        );
        if wanted != self.limits {
            let suppressed = self.denials_suppressed;
            *self = Guards::new(limits);
            self.denials_suppressed = suppressed;
        }
    }

    /// Whether a file of `uid` in `incoming/` may be claimed now. Root and the trusted
    /// submitters (`trusted`: `[identity] trusted_submitters` and the daemon's own uid, which
    /// writes the HTTP API's requests) are never paced.
    pub(super) fn admit_file(&mut self, uid: u32, trusted: bool, now: Instant) -> bool {
        if uid == 0 || trusted || self.intake.allow(&uid, now) {
            return true;
        }
        *self.deferred.entry(uid).or_default() += 1;
        false
    }

    /// Log the uids whose files wait (once a minute each) and say when the next of them may
    /// be claimed, so the engine rescans then instead of at its rescan interval.
    pub(super) fn report_deferred(&mut self, now: Instant) -> Option<Duration> {
        let mut soonest: Option<Duration> = None;
        let deferred = std::mem::take(&mut self.deferred);
        for (uid, n) in &deferred {
            if self.deferral_warnings.allow(uid, now) {
                tracing::warn!(
                    uid,
                    waiting = n,
                    "a uid drops request files faster than [limits] max_files_per_user_per_minute = {}; the rest wait in incoming/ for their turn",
                    self.limits.0
                );
            }
            let wait = self.intake.wait(uid, now);
            soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
        }
        self.deferred = deferred;
        soonest
    }

    /// Files that waited in the last scan, over all uids.
    pub(super) fn deferred_total(&self) -> usize {
        self.deferred.values().sum()
    }
}

/// Whether a retention sweep runs every `every`: a tenth of the shortest retention, between
/// one second and ten minutes.
fn sweep_interval(r: &RetentionSection) -> Duration {
    (r.decided_files.min(r.request_records) / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(600))
}

impl Engine {
    /// How long until the next rescan after a scan: `every`, or sooner when files wait in
    /// `incoming/` for their uid's next turn (at least 250 ms apart).
    pub(super) fn paced_rescan(&mut self, every: Duration) -> Duration {
        match self.guards.report_deferred(Instant::now()) {
            Some(wait) => wait.max(Duration::from_millis(250)).min(every),
            None => every,
        }
    }

    /// Write one denial's audit row unless the requester is over its rate (then it is counted,
    /// and a summary row written later). Allowed decisions are not limited here.
    pub(super) fn audit_denial_row(
        &mut self,
        entry: &AuditEntry,
    ) -> Result<(), crate::metadb::DbError> {
        let key = requester(entry);
        match self.guards.denials.record(&key, Instant::now()) {
            DenialRecord::Suppress => {
                self.guards.denials_suppressed += 1;
                self.guards.last_suppressed.insert(key, entry.clone());
                Ok(())
            }
            DenialRecord::Write { suppressed } => {
                self.guards.last_suppressed.remove(&key);
                if suppressed > 0 {
                    self.write_denial_summary(entry, suppressed)?;
                }
                let host = self.host.clone();
                let c = self.conn.get()?;
                Store::new(&mut c.db).audit(&host, entry)
            }
        }
    }

    fn write_denial_summary(
        &mut self,
        like: &AuditEntry,
        suppressed: u64,
    ) -> Result<(), crate::metadb::DbError> {
        let summary = AuditEntry {
            at: store::stored_ts(Utc::now()),
            target: None,
            reason_code: Some(ReasonCode::RateLimited),
            reason: Some(format!(
                "{suppressed} further denials of this requester were not written one by one (over [limits] max_audited_denials_per_user_per_minute = {})",
                self.guards.limits.1
            )),
            ..like.clone()
        };
        let host = self.host.clone();
        let c = self.conn.get()?;
        Store::new(&mut c.db).audit(&host, &summary)
    }

    /// Summary rows for requesters whose suppressed denials went quiet, and the retention
    /// sweep when due. Run after each reconcile pass.
    pub(super) fn guard_housekeeping(&mut self) {
        let now = Instant::now();
        for (key, n) in self.guards.denials.take_quiet(now, SUMMARY_AFTER) {
            let Some(like) = self.guards.last_suppressed.remove(&key) else {
                continue;
            };
            if let Err(e) = self.write_denial_summary(&like, n) {
                tracing::warn!(error = %e, suppressed = n, "cannot write a denial summary");
            }
        }
        if now < self.guards.next_sweep {
            return;
        }
        self.guards.next_sweep = now + sweep_interval(&self.config.retention);
        self.sweep_retention();
    }

    /// Remove decided files past `[retention] decided_files` from this agent's spool and, on
    /// the leader, request records past `request_records`.
    fn sweep_retention(&mut self) {
        let now = Utc::now();
        let keep = |d: Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
        };
        if let Some(cutoff) = keep(self.config.retention.decided_files) {
            match self.spool.prune_decided(cutoff) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "retention: removed decided request files"),
                Err(e) => tracing::warn!(error = %e, "retention: cannot prune the spool"),
            }
        }
        if self.leader_token.is_none() {
            return;
        }
        let Some(cutoff) = keep(self.config.retention.request_records) else {
            return;
        };
        let Some(c) = self.conn.current() else {
            return;
        };
        match Store::new(&mut c.db).prune_requests(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "retention: deleted request records"),
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot delete old request records");
                self.lost(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_run_at_a_tenth_of_the_shortest_retention_within_bounds() {
        let r = |files: u64, records: u64| RetentionSection {
            decided_files: Duration::from_secs(files),
            request_records: Duration::from_secs(records),
        };
        for (files, records, every) in [
            (30 * 86_400, 90 * 86_400, 600),
            (5, 90 * 86_400, 1),
            (100, 90 * 86_400, 10),
            (3600, 1800, 180),
        ] {
            assert_eq!(
                sweep_interval(&r(files, records)),
                Duration::from_secs(every),
                "{files} {records}"
            );
        }
    }

    #[test]
    fn root_and_trusted_submitters_are_never_paced_and_others_wait_their_turn() {
        let limits = LimitsSection {
            max_files_per_user_per_minute: 2,
            ..LimitsSection::default()
        };
        let mut g = Guards::new(&limits);
        let now = Instant::now();
        assert!((0..100).all(|_| g.admit_file(0, false, now)));
        assert!((0..100).all(|_| g.admit_file(999, true, now)), "trusted");
        assert!(g.admit_file(1000, false, now));
        assert!(g.admit_file(1000, false, now));
        assert!(!g.admit_file(1000, false, now));
        assert!(!g.admit_file(1000, false, now));
        assert!(g.admit_file(1001, false, now), "another uid is served");
        assert_eq!(g.deferred_total(), 2);
        let wait = g.report_deferred(now).unwrap_or_default();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        g.reconfigure(&limits);
        assert_eq!(g.deferred_total(), 2, "same limits: state kept");
        g.reconfigure(&LimitsSection::default());
        assert_eq!(g.deferred_total(), 0, "new limits: new limiters");
    }
}
