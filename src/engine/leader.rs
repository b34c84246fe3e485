//! The `leader` claim as the engine holds it: take or renew it each pass, fence every
//! leader-only write with it, release it at shutdown.

use super::*;

impl Engine {
    pub(super) fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.cluster.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Take or keep the leader claim; whether this agent leads now.
    pub(super) fn lead(&mut self) -> bool {
        let host = self.host.clone();
        let ttl_ms = self.lease_ttl_ms();
        let now = store::stored_ts(Utc::now());
        let Some(c) = self.conn.current() else {
            return false;
        };
        match Leases::new(&mut c.db).acquire(LEADER, &host, ttl_ms, &now, self.leader_token) {
            Ok(Some(token)) => {
                if self.leader_token != Some(token) {
                    // Copies are unpaused by steering only after this claim's first pass.
                    self.steer.releasable = None;
                    tracing::info!(host = %host, token, "holding the leader claim: reconciling, throttling and carrying out life-cycle actions");
                }
                self.leader_token = Some(token);
                true
            }
            Ok(None) => {
                if self.leader_token.take().is_some() {
                    tracing::warn!(host = %host, "lost the leader claim to another agent; following");
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take or renew the leader claim");
                self.leader_token = None;
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
        let c = self.conn.get()?;
        if Leases::new(&mut c.db).fence(LEADER, &host, token, ttl_ms)? {
            Ok(())
        } else {
            tracing::warn!(host = %host, token, "the leader claim moved to another agent; stepping down");
            self.leader_token = None;
            Err(DbError::NotHolder(LEADER))
        }
    }

    /// Give up the claims at shutdown, so another agent takes over at once.
    pub(super) fn release_claims(&mut self) {
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
