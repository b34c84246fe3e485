//! The `leader` claim as the engine holds it: take it, renew it once a third of its time to
//! live has passed (every fenced write renews it too), fence every leader-only write with it,
//! release it at shutdown.

use super::*;

/// Whether the leader claim, last renewed at `last` (when the renewing statement began), needs
/// renewing at `now` for a claim that lives `ttl`: when never renewed, or once a third of
/// `ttl` has passed. Until then the claim stays this agent's on the DB's clock (it expires
/// `ttl` after the renewal at the earliest), so a pass sends no statement for it; every
/// leader-only write is fenced in its own transaction anyway.
pub(super) fn renewal_due(last: Option<Instant>, now: Instant, ttl: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= ttl / 3)
}

impl Engine {
    pub(super) fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.cluster.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Take or keep the leader claim; whether this agent leads now.
    pub(super) fn lead(&mut self) -> bool {
        let ttl_ms = self.lease_ttl_ms();
        let started = Instant::now();
        if let (Some(token), Some((renewed_token, at))) = (self.leader_token, self.renewed) {
            let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(u64::MAX));
            if token == renewed_token && !renewal_due(Some(at), started, ttl) {
                return self.conn.current().is_some();
            }
        }
        let host = self.host.clone();
        let now = store::stored_ts(Utc::now());
        let Some(c) = self.conn.current() else {
            return false;
        };
        match Leases::new(&mut c.db).acquire(LEADER, &host, ttl_ms, &now, self.leader_token) {
            Ok(Some(token)) => {
                self.renewed = Some((token, started));
                if self.leader_token != Some(token) {
                    // Copies are unpaused by steering only after this claim's first pass.
                    self.steer.releasable = None;
                    tracing::info!(host = %host, token, "holding the leader claim: reconciling, throttling and carrying out life-cycle actions");
                }
                self.leader_token = Some(token);
                true
            }
            Ok(None) => {
                self.renewed = None;
                if self.leader_token.take().is_some() {
                    tracing::warn!(host = %host, "lost the leader claim to another agent; following");
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take or renew the leader claim");
                self.leader_token = None;
                self.renewed = None;
                self.lost(&e);
                false
            }
        }
    }

    /// The fencing check before a write only the leader may do: the claim is still this
    /// agent's with the same token (renewed in the same statement); otherwise step down.
    pub(super) fn fence(&mut self) -> Result<(), DbError> {
        let token = self.leader_token.ok_or(DbError::NotHolder(LEADER))?;
        let host = self.host.clone();
        let ttl_ms = self.lease_ttl_ms();
        let started = Instant::now();
        let c = self.conn.get()?;
        if Leases::new(&mut c.db).fence(LEADER, &host, token, ttl_ms)? {
            self.renewed = Some((token, started));
            Ok(())
        } else {
            tracing::warn!(host = %host, token, "the leader claim moved to another agent; stepping down");
            self.leader_token = None;
            self.renewed = None;
            Err(DbError::NotHolder(LEADER))
        }
    }

    /// Give up the claims at shutdown, so another agent takes over at once.
    pub(super) fn release_claims(&mut self) {
        self.renewed = None;
        let Some(token) = self.leader_token.take() else {
            return;
        };
        let host = self.host.clone();
        if let Some(c) = self.conn.current() {
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
        let c = self.conn.get()?;
        Leases::new(&mut c.db).all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_is_renewed_once_a_third_of_its_time_passed() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(15);
        let s = Duration::from_secs;
        for (last, after, due) in [
            (None, s(0), true),
            (Some(t0), s(0), false),
            (Some(t0), s(4), false),
            (Some(t0), s(5), true),
            (Some(t0), s(60), true),
        ] {
            assert_eq!(
                renewal_due(last, t0 + after, ttl),
                due,
                "{last:?} +{after:?}"
            );
        }
    }
}
