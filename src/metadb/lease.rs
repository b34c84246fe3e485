//! Claims shared by every agent on one metadata DB (`backfilld_lease`): one row per job that
//! must happen once, with its holder, an expiry on the DB server's clock and a fencing token
//! that grows by one with every change of holder.
//!
//! An agent takes a claim when it is free or expired, keeps it by renewing it before it
//! expires, and checks it (renewing it in the same statement) before each write that only the
//! holder may do. A holder that stalled past its expiry finds the claim gone (another holder,
//! a larger token) and steps down instead of writing. Every step is one conditional `UPDATE`,
//! so it works the same on SQLite, PostgreSQL and MySQL; inside a transaction it also locks
//! the row until commit, so a takeover cannot slip between the check and the write.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::{Arg, DbError, MetaDb};

/// The claim on the jobs that must happen once: reconcile and throttle passes, life-cycle
/// actions on Airflow, automatic deletion, and the copies of a shared DAGs folder.
pub const LEADER: &str = "leader";

/// One claim as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimInfo {
    /// The claim's name (e.g. [`LEADER`]).
    pub name: String,
    /// The agent (`[cluster] host_id`) holding it; empty when never taken.
    pub holder: String,
    /// Fencing token: grows by one with every change of holder.
    pub token: i64,
    /// Milliseconds until it expires, on the DB's clock (negative: expired).
    pub expires_in_ms: i64,
    /// When the current holder took it.
    pub acquired_at: Option<String>,
}

#[derive(QueryableByName)]
struct ClaimRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    holder: String,
    #[diesel(sql_type = BigInt)]
    token: i64,
    #[diesel(sql_type = BigInt)]
    expires_in_ms: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    acquired_at: Option<String>,
}

#[derive(QueryableByName)]
struct TokenRow {
    #[diesel(sql_type = BigInt)]
    token: i64,
}

/// The claims, over one connection.
pub struct Leases<'a> {
    db: &'a mut MetaDb,
}

impl<'a> Leases<'a> {
    /// Wrap a connection.
    pub fn new(db: &'a mut MetaDb) -> Leases<'a> {
        Leases { db }
    }

    /// Take or keep `name` for `holder` for `ttl_ms`. `held` is the token this process holds
    /// (from its last call), if any: then the claim is renewed when it is still that token's
    /// and unexpired. Otherwise (a fresh process, or the claim was lost) it is taken when free
    /// or expired, or when it names `holder` (a restart of the same agent): taking always
    /// increments the token, so writes of an earlier holder, even one with the same name, are
    /// fenced out. Returns the token when `holder` holds the claim now.
    pub fn acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_text: &str,
        held: Option<i64>,
    ) -> Result<Option<i64>, DbError> {
        if let Some(token) = held {
            if self.fence(name, holder, token, ttl_ms)? {
                return Ok(Some(token));
            }
        }
        let mut n = self.take(name, holder, ttl_ms, now_text, held.is_some())?;
        if n == 0 && !self.exists(name)? {
            // The first agent ever to ask: create the row (a racing agent may too; one wins).
            match self.db.execute(
                "INSERT INTO backfilld_lease (name, holder, token, expires_ms) VALUES (?, '', 0, 0)",
                &[Arg::Text(name.to_owned())],
            ) {
                Ok(_) => {}
                Err(e) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
            n = self.take(name, holder, ttl_ms, now_text, held.is_some())?;
        }
        if n == 0 {
            return Ok(None);
        }
        let rows: Vec<TokenRow> = self.db.load(
            "SELECT token FROM backfilld_lease WHERE name = ? AND holder = ?",
            &[Arg::Text(name.to_owned()), Arg::Text(holder.to_owned())],
        )?;
        Ok(rows.first().map(|r| r.token))
    }

    /// Take `name` when expired, or (`lost` unset: a fresh process) when it names `holder`;
    /// the token grows by one. Returns the rows changed (0 or 1).
    fn take(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_text: &str,
        lost: bool,
    ) -> Result<usize, DbError> {
        let now = self.db.dialect().now_ms();
        // A process that held the claim and lost it takes it again only once it expired.
        let same_holder = if lost { "1 = 0" } else { "holder = ?" };
        let mut args = vec![
            Arg::Text(holder.to_owned()),
            Arg::Text(now_text.to_owned()),
            Arg::Int(ttl_ms),
            Arg::Text(name.to_owned()),
        ];
        if !lost {
            args.push(Arg::Text(holder.to_owned()));
        }
        self.db.execute(
            &format!(
                "UPDATE backfilld_lease SET token = token + 1, holder = ?, acquired_at = ?, \
                 expires_ms = {now} + ? WHERE name = ? AND ({same_holder} OR expires_ms < {now})"
            ),
            &args,
        )
    }

    fn exists(&mut self, name: &str) -> Result<bool, DbError> {
        let rows: Vec<TokenRow> = self.db.load(
            "SELECT token FROM backfilld_lease WHERE name = ?",
            &[Arg::Text(name.to_owned())],
        )?;
        Ok(!rows.is_empty())
    }

    /// The fencing check before a write only the holder may do: still `holder`'s, with the
    /// same `token`, and not expired; renews it for `ttl_ms` in the same statement. Inside a
    /// transaction the row stays locked until commit.
    pub fn fence(
        &mut self,
        name: &str,
        holder: &str,
        token: i64,
        ttl_ms: i64,
    ) -> Result<bool, DbError> {
        let now = self.db.dialect().now_ms();
        let n = self.db.execute(
            &format!(
                "UPDATE backfilld_lease SET expires_ms = {now} + ? \
                 WHERE name = ? AND holder = ? AND token = ? AND expires_ms >= {now}"
            ),
            &[
                Arg::Int(ttl_ms),
                Arg::Text(name.to_owned()),
                Arg::Text(holder.to_owned()),
                Arg::Int(token),
            ],
        )?;
        Ok(n > 0)
    }

    /// Give the claim up (clean shutdown): it expires at once, so another agent takes it on
    /// its next pass.
    pub fn release(&mut self, name: &str, holder: &str, token: i64) -> Result<(), DbError> {
        self.db.execute(
            "UPDATE backfilld_lease SET expires_ms = 0 WHERE name = ? AND holder = ? AND token = ?",
            &[
                Arg::Text(name.to_owned()),
                Arg::Text(holder.to_owned()),
                Arg::Int(token),
            ],
        )?;
        Ok(())
    }

    /// Every claim, by name.
    pub fn all(&mut self) -> Result<Vec<ClaimInfo>, DbError> {
        let now = self.db.dialect().now_ms();
        let rows: Vec<ClaimRow> = self.db.load(
            &format!(
                "SELECT name, holder, token, expires_ms - {now} AS expires_in_ms, acquired_at \
                 FROM backfilld_lease ORDER BY name"
            ),
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| ClaimInfo {
                name: r.name,
                holder: r.holder,
                token: r.token,
                expires_in_ms: r.expires_in_ms,
                acquired_at: r.acquired_at,
            })
            .collect())
    }
}
