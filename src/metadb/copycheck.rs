//! What each agent last verified of its DAG copy files (`backfilld_copy_check`): a copy's
//! size, modification time and inode when its content was last written or found right, so an
//! agent that starts does not read every copy back (and every backfill's origin source) to
//! verify files that did not change while it was down.

use std::collections::HashMap;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::{Arg, DbError, MetaDb};

/// Rows one statement binds at most.
const CHUNK: usize = 400;

/// A copy file's size, modification time (ns since the epoch) and inode.
pub type Fingerprint = (u64, i64, u64);

#[derive(QueryableByName)]
struct CheckSql {
    #[diesel(sql_type = Text)]
    backfill_id: String,
    #[diesel(sql_type = BigInt)]
    size: i64,
    #[diesel(sql_type = BigInt)]
    mtime_ns: i64,
    #[diesel(sql_type = BigInt)]
    inode: i64,
}

/// The verified fingerprints of one agent's copy files.
pub struct CopyChecks<'a> {
    db: &'a mut MetaDb,
    host: &'a str,
}

// Sizes and inodes are stored as their 64-bit patterns (BIGINT is signed).
fn to_db(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

fn from_db(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes())
}

impl<'a> CopyChecks<'a> {
    /// The fingerprints of agent `host`.
    pub fn new(db: &'a mut MetaDb, host: &'a str) -> CopyChecks<'a> {
        CopyChecks { db, host }
    }

    /// Every fingerprint this agent saved, by backfill. One statement.
    pub fn load(&mut self) -> Result<HashMap<String, Fingerprint>, DbError> {
        let rows: Vec<CheckSql> = self.db.load(
            "SELECT backfill_id, size, mtime_ns, inode FROM backfilld_copy_check WHERE host = ?",
            &[Arg::Text(self.host.to_owned())],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.backfill_id,
                    (from_db(r.size), r.mtime_ns, from_db(r.inode)),
                )
            })
            .collect())
    }

    /// Replace the fingerprints of `put` and drop those of `gone`, in one transaction: one
    /// `DELETE` and one multi-row `INSERT` per [`CHUNK`] rows, none for none.
    pub fn save(&mut self, put: &[(String, Fingerprint)], gone: &[String]) -> Result<(), DbError> {
        if put.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let host = self.host;
        self.db.transaction(|db| {
            let mut ids: Vec<&str> = gone.iter().map(String::as_str).collect();
            ids.extend(put.iter().map(|(id, _)| id.as_str()));
            for chunk in ids.chunks(CHUNK) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut args = vec![Arg::Text(host.to_owned())];
                args.extend(chunk.iter().map(|id| Arg::Text((*id).to_owned())));
                db.execute(
                    &format!(
                        "DELETE FROM backfilld_copy_check WHERE host = ? AND backfill_id IN ({marks})"
                    ),
                    &args,
                )?;
            }
            for chunk in put.chunks(CHUNK) {
                let mut args = Vec::with_capacity(chunk.len() * 5);
                for (id, (size, mtime, inode)) in chunk {
                    args.extend([
                        Arg::Text(host.to_owned()),
                        Arg::Text(id.clone()),
                        Arg::Int(to_db(*size)),
                        Arg::Int(*mtime),
                        Arg::Int(to_db(*inode)),
                    ]);
                }
                db.execute(
                    &format!(
                        "INSERT INTO backfilld_copy_check (host, backfill_id, size, mtime_ns, inode) VALUES {}",
                        vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ")
                    ),
                    &args,
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_bit_patterns_round_trip() {
        for n in [0, 1, u64::MAX, 1 << 63] {
            assert_eq!(from_db(to_db(n)), n);
        }
    }
}
