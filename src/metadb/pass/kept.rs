//! The leader's pass cache kept in backfilld's own tables, so a freshly started leader's first
//! pass reads only what changed since the last pass of any leader (`engine::pass_cache`):
//!
//! - `backfilld_pass_runs`: every cached backfill's run counts (a row with zeros for a copy
//!   without counted runs: the rows name the backfills the counts cover);
//! - `backfilld_pass_active`: the cached copies' queued and running runs, by `dag_run.id`;
//! - `backfilld_pass_mark`: one row, the `dag_run.id` watermarks and the runs above the lower
//!   one already counted.
//!
//! All three describe the snapshot of the same pass and are written in the leader's fenced
//! transaction with that pass's other writes, only what differs from what was saved before.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::{opt_ts, ActiveRun, Pass};
use crate::metadb::store::stored_ts;
use crate::metadb::{Arg, DbError};
use crate::reconcile::RunSummary;

/// Rows one multi-row statement of the kept cache binds at most (under every backend's bind
/// limit).
const KEEP_CHUNK: usize = 400;

/// The `dag_run.id` watermarks of the pass the kept cache describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMark {
    /// New runs are looked for above this id.
    pub run_floor: i64,
    /// The highest id that pass saw.
    pub run_seen: i64,
    /// The runs above `run_floor` that pass saw (already counted).
    pub known: Vec<i64>,
}

/// What to write to bring the kept cache up to date.
#[derive(Debug, Clone, Default)]
pub struct KeptDelta {
    /// Replace everything kept (nothing saved is known to be valid).
    pub reset: bool,
    /// Backfills whose counts are new or changed.
    pub counts: Vec<(String, RunSummary)>,
    /// Backfills no longer cached.
    pub counts_gone: Vec<String>,
    /// Queued/running runs new or changed: (`dag_run.id`, backfill, running).
    pub active: Vec<(i64, String, bool)>,
    /// Runs no longer queued or running (or whose backfill is no longer cached).
    pub active_gone: Vec<i64>,
    /// New watermarks.
    pub mark: Option<KeptMark>,
}

impl KeptDelta {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.reset
            && self.counts.is_empty()
            && self.counts_gone.is_empty()
            && self.active.is_empty()
            && self.active_gone.is_empty()
            && self.mark.is_none()
    }
}

#[derive(QueryableByName)]
struct MarkSql {
    #[diesel(sql_type = BigInt)]
    run_floor: i64,
    #[diesel(sql_type = BigInt)]
    run_seen: i64,
    #[diesel(sql_type = Text)]
    known: String,
}

#[derive(QueryableByName)]
struct CountsSql {
    #[diesel(sql_type = Text)]
    backfill_id: String,
    #[diesel(sql_type = BigInt)]
    queued: i64,
    #[diesel(sql_type = BigInt)]
    running: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    first_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_end: Option<String>,
}

#[derive(QueryableByName)]
struct KeptActiveSql {
    #[diesel(sql_type = BigInt)]
    run_id: i64,
    #[diesel(sql_type = Text)]
    backfill_id: String,
    #[diesel(sql_type = BigInt)]
    running: i64,
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl Pass<'_> {
    /// The kept watermarks, if a pass saved any. One statement.
    pub fn kept_mark(&mut self) -> Result<Option<KeptMark>, DbError> {
        let rows: Vec<MarkSql> = self.db.load(
            "SELECT run_floor, run_seen, known FROM backfilld_pass_mark WHERE id = 1",
            &[],
        )?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let known = r
            .known
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| DbError::Data(format!("kept pass mark: bad run id {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(KeptMark {
            run_floor: r.run_floor,
            run_seen: r.run_seen,
            known,
        }))
    }

    /// The kept run counts, by backfill (every backfill the counts cover). One statement.
    pub fn kept_counts(&mut self) -> Result<HashMap<String, RunSummary>, DbError> {
        let rows: Vec<CountsSql> = self.db.load(
            "SELECT backfill_id, queued, running, succeeded, failed, first_start, last_end \
             FROM backfilld_pass_runs",
            &[],
        )?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            out.insert(
                r.backfill_id,
                RunSummary {
                    queued: count(r.queued),
                    running: count(r.running),
                    succeeded: count(r.succeeded),
                    failed: count(r.failed),
                    first_start: opt_ts(r.first_start)?,
                    last_end: opt_ts(r.last_end)?,
                },
            );
        }
        Ok(out)
    }

    /// The kept queued and running runs, by backfill, in `id` order. One statement.
    pub fn kept_active(&mut self) -> Result<HashMap<String, Vec<ActiveRun>>, DbError> {
        let rows: Vec<KeptActiveSql> = self.db.load(
            "SELECT run_id, backfill_id, running FROM backfilld_pass_active ORDER BY run_id",
            &[],
        )?;
        let mut out: HashMap<String, Vec<ActiveRun>> = HashMap::new();
        for r in rows {
            out.entry(r.backfill_id).or_default().push(ActiveRun {
                id: r.run_id,
                running: r.running != 0,
            });
        }
        Ok(out)
    }

    /// Forget the kept cache (the next leader's first pass is a full one). Three statements.
    pub fn forget_kept(&mut self) -> Result<(), DbError> {
        for table in [
            "backfilld_pass_mark",
            "backfilld_pass_runs",
            "backfilld_pass_active",
        ] {
            self.db.execute(&format!("DELETE FROM {table}"), &[])?;
        }
        Ok(())
    }

    /// Write `delta` (in the caller's transaction): one `DELETE` and one multi-row `INSERT`
    /// per [`KEEP_CHUNK`] changed rows of each table, two for the mark; none for
    /// what did not change.
    pub fn keep(&mut self, delta: &KeptDelta, now: DateTime<Utc>) -> Result<(), DbError> {
        if delta.reset {
            self.forget_kept()?;
        }
        let gone: Vec<&str> = delta.counts_gone.iter().map(String::as_str).collect();
        for chunk in gone.chunks(KEEP_CHUNK) {
            self.delete_in("backfilld_pass_runs", "backfill_id", chunk)?;
        }
        for chunk in delta.counts.chunks(KEEP_CHUNK) {
            if !delta.reset {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                self.delete_in("backfilld_pass_runs", "backfill_id", &ids)?;
            }
            let mut args = Vec::with_capacity(chunk.len() * 7);
            for (id, s) in chunk {
                args.extend([
                    Arg::Text(id.clone()),
                    Arg::Int(s.queued.into()),
                    Arg::Int(s.running.into()),
                    Arg::Int(s.succeeded.into()),
                    Arg::Int(s.failed.into()),
                    Arg::OptText(s.first_start.map(stored_ts)),
                    Arg::OptText(s.last_end.map(stored_ts)),
                ]);
            }
            self.db.execute(
                &format!(
                    "INSERT INTO backfilld_pass_runs (backfill_id, queued, running, succeeded, \
                     failed, first_start, last_end) VALUES {}",
                    vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
                ),
                &args,
            )?;
        }
        if !delta.reset {
            let mut ids: Vec<i64> = delta.active_gone.clone();
            ids.extend(delta.active.iter().map(|(id, _, _)| *id));
            for chunk in ids.chunks(KEEP_CHUNK) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let args: Vec<Arg> = chunk.iter().map(|id| Arg::Int(*id)).collect();
                self.db.execute(
                    &format!("DELETE FROM backfilld_pass_active WHERE run_id IN ({marks})"),
                    &args,
                )?;
            }
        }
        for chunk in delta.active.chunks(KEEP_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for (id, copy, running) in chunk {
                args.extend([
                    Arg::Int(*id),
                    Arg::Text(copy.clone()),
                    Arg::Int(i64::from(*running)),
                ]);
            }
            self.db.execute(
                &format!(
                    "INSERT INTO backfilld_pass_active (run_id, backfill_id, running) VALUES {}",
                    vec!["(?, ?, ?)"; chunk.len()].join(", ")
                ),
                &args,
            )?;
        }
        if let Some(m) = &delta.mark {
            let known = m
                .known
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let args = [
                Arg::Int(m.run_floor),
                Arg::Int(m.run_seen),
                Arg::Text(known),
                Arg::Text(stored_ts(now)),
            ];
            if !delta.reset {
                self.db
                    .execute("DELETE FROM backfilld_pass_mark WHERE id = 1", &[])?;
            }
            self.db.execute(
                "INSERT INTO backfilld_pass_mark (id, run_floor, run_seen, known, saved_at) \
                 VALUES (1, ?, ?, ?, ?)",
                &args,
            )?;
        }
        Ok(())
    }

    fn delete_in(&mut self, table: &str, col: &str, ids: &[&str]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let args: Vec<Arg> = ids.iter().map(|id| Arg::Text((*id).to_owned())).collect();
        self.db.execute(
            &format!("DELETE FROM {table} WHERE {col} IN ({marks})"),
            &args,
        )?;
        Ok(())
    }
}
