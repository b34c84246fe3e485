//! The change signals of an incremental reconcile pass, each one set-based statement on an
//! index of Airflow's schema (or on backfilld's own small table), so a pass between full passes
//! reads only what changed:
//!
//! - [`Pass::versions`]: every unfinished backfill's id with a version stamp (`updated_at`,
//!   `pending_op`, `copy_written_at`: every write to a backfill row changes one of them);
//!   only backfills whose stamp differs from the kept one are read again ([`Pass::rows_of`]).
//! - [`Pass::runs_added`]: copies with a `dag_run` whose `id` is above a watermark (the primary
//!   key: new runs).
//! - [`Pass::active_runs`]: the queued and running runs of the copies (Airflow's partial
//!   indexes `idx_dag_run_queued_dags` / `idx_dag_run_running_dags` on `state, dag_id`, plain
//!   indexes on MySQL): a run that starts, finishes, is cleared or deleted while active
//!   changes this set.
//!
//! - [`Pass::run_details`]: the runs whose state changed between two passes, by `id`, to
//!   update the kept run counts without counting every run of their copies again.
//!
//! Airflow has no index on `dag_run.updated_at`, which is why none of these filters on it. The
//! reads of a pass run in one snapshot ([`Pass::snapshot`]), so the kept run counts and the
//! kept set of queued/running runs describe the same moment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::{opt_ts, Pass, PassRow, PassSql, UNFINISHED, WRITE_CHUNK};
use crate::dburl::Backend;
use crate::metadb::{Arg, DbError};
use crate::reconcile::RunState;

/// What a backfill row looked like when it was read: a different stamp means it changed.
pub type RowVersion = (String, Option<String>, Option<String>);

#[derive(QueryableByName)]
struct VersionSql {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    pending_op: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    copy_written_at: Option<String>,
}

#[derive(QueryableByName)]
struct AddedSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    top: i64,
}

#[derive(QueryableByName)]
struct TopSql {
    #[diesel(sql_type = Nullable<BigInt>)]
    top: Option<i64>,
}

#[derive(QueryableByName)]
struct ActiveSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
}

#[derive(QueryableByName)]
struct DetailSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    start_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    end_date: Option<String>,
    #[diesel(sql_type = BigInt)]
    counted: i64,
}

/// A run of a copy as the run counts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDetail {
    /// The copy.
    pub dag_id: String,
    /// Its state.
    pub state: RunState,
    /// When it started.
    pub start: Option<DateTime<Utc>>,
    /// When it ended.
    pub end: Option<DateTime<Utc>>,
    /// Whether its logical date is in the backfill's range (only those are counted).
    pub counted: bool,
}

/// A queued or running run of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActiveRun {
    /// `dag_run.id`.
    pub id: i64,
    /// Whether it is running (otherwise queued).
    pub running: bool,
}

impl Pass<'_> {
    /// Run `f`'s reads in one snapshot of the database: a read-only repeatable-read
    /// transaction on PostgreSQL, a consistent-snapshot transaction on MySQL, a deferred
    /// transaction on SQLite. Two or three statements more.
    pub fn snapshot<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self.db.dialect().0 {
            Backend::Sqlite => self.db.batch("BEGIN DEFERRED")?,
            Backend::Postgres => self
                .db
                .batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?,
            Backend::Mysql => {
                self.db
                    .batch("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
                self.db
                    .batch("START TRANSACTION WITH CONSISTENT SNAPSHOT")?;
            }
        }
        match f(self) {
            Ok(v) => {
                self.db.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // The original error matters more than a failed rollback.
                let _ = self.db.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The change signal of `backfilld_backfill` (`metadb::change`), read first in a
    /// snapshot: the stamps read after it may be trusted while it reads the same. One
    /// statement on a one-row table.
    pub fn change_seq(&mut self) -> Result<Option<i64>, DbError> {
        crate::metadb::change::seq(self.db)
    }

    /// Every unfinished backfill's id with its version stamp. One statement.
    pub fn versions(&mut self) -> Result<HashMap<String, RowVersion>, DbError> {
        let rows: Vec<VersionSql> = self.db.load(
            &format!(
                "SELECT b.id, b.updated_at, b.pending_op, b.copy_written_at \
                 FROM backfilld_backfill b WHERE {UNFINISHED}"
            ),
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r.id, (r.updated_at, r.pending_op, r.copy_written_at)))
            .collect())
    }

    /// Every unfinished backfill, oldest first, without its heavy columns, with its version
    /// stamp; with `only`, those of `ids` alone (one statement per [`WRITE_CHUNK`] ids, none
    /// for an empty list).
    pub fn rows_of(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<Vec<(PassRow, RowVersion)>, DbError> {
        let mut out = Vec::new();
        let chunks: Vec<&[String]> = match only {
            None => vec![&[]],
            Some(ids) => ids.chunks(WRITE_CHUNK).collect(),
        };
        for chunk in chunks {
            let filter = if only.is_some() {
                format!(" AND b.id IN ({})", vec!["?"; chunk.len()].join(", "))
            } else {
                String::new()
            };
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text(id.clone())).collect();
            let rows: Vec<PassSql> = self.db.load(&super::pass_rows_sql(&filter), &args)?;
            for r in rows {
                let version = (
                    r.updated_at.clone(),
                    r.live.pending_op.clone(),
                    r.live.copy_written_at.clone(),
                );
                out.push((PassRow::try_from(r)?, version));
            }
        }
        Ok(out)
    }

    /// The highest `dag_run.id` (0 without runs). One statement on the primary key.
    pub fn top_run_id(&mut self) -> Result<i64, DbError> {
        let d = self.db.dialect();
        let rows: Vec<TopSql> = self.db.load(
            &format!("SELECT {} AS top FROM dag_run", d.int("MAX(id)")),
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.top).unwrap_or(0))
    }

    /// The runs whose `id` is above `after`: (`id`, DAG). One statement, a range scan of the
    /// primary key.
    pub fn runs_added(&mut self, after: i64) -> Result<HashMap<i64, String>, DbError> {
        let d = self.db.dialect();
        let rows: Vec<AddedSql> = self.db.load(
            &format!(
                "SELECT r.dag_id AS dag_id, {} AS top FROM dag_run r WHERE r.id > ?",
                d.int("r.id")
            ),
            &[Arg::Int(after)],
        )?;
        Ok(rows.into_iter().map(|r| (r.top, r.dag_id)).collect())
    }

    /// The runs `ids` of unfinished backfills' copies (runs that are gone, or whose backfill
    /// finished, are absent), with whether each is in its backfill's range: one statement
    /// per [`WRITE_CHUNK`] ids (primary keys), none for an empty list. Written as a
    /// `CROSS JOIN` so SQLite looks the runs up by primary key first (with `JOIN … ON` it
    /// walked every unfinished backfill's runs by `dag_id`: 100-490 ms for 200 runs at
    /// 10,000 backfills × 100 runs, against 1 ms); PostgreSQL and MySQL plan it as the
    /// inner join it is.
    pub fn run_details(&mut self, ids: &[i64]) -> Result<HashMap<i64, RunDetail>, DbError> {
        let d = self.db.dialect();
        let date = format!("r.{}", self.date_col());
        let mut out = HashMap::new();
        for chunk in ids.chunks(WRITE_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Int(*id)).collect();
            let sql = format!(
                "SELECT r.dag_id AS dag_id, {} AS id, r.state AS state, {} AS start_date, \
                 {} AS end_date, {} AS counted FROM dag_run r \
                 CROSS JOIN backfilld_backfill b WHERE b.id = r.dag_id AND {UNFINISHED} \
                 AND r.id IN ({marks})",
                d.int("r.id"),
                d.ts_text("r.start_date"),
                d.ts_text("r.end_date"),
                d.int(&format!(
                    "CASE WHEN {} >= {} AND {} <= {} THEN 1 ELSE 0 END",
                    d.ts_order(&date),
                    d.stored_ts_order("b.start_date"),
                    d.ts_order(&date),
                    d.stored_ts_order("b.end_date"),
                )),
            );
            let rows: Vec<DetailSql> = self.db.load(&sql, &args)?;
            for r in rows {
                out.insert(
                    r.id,
                    RunDetail {
                        dag_id: r.dag_id,
                        state: RunState::parse(r.state.as_deref().unwrap_or("queued")),
                        start: opt_ts(r.start_date)?,
                        end: opt_ts(r.end_date)?,
                        counted: r.counted != 0,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The queued and running runs of every DAG, by DAG, in `id` order (the caller keeps the
    /// copies'). One statement; written as `OR` so PostgreSQL and SQLite use the two partial
    /// indexes (an `IN` list implies neither index's predicate), with no join: a join with
    /// `backfilld_backfill` would read that wide table once more.
    pub fn active_runs(&mut self) -> Result<HashMap<String, Vec<ActiveRun>>, DbError> {
        let d = self.db.dialect();
        let rows: Vec<ActiveSql> = self.db.load(
            &format!(
                "SELECT r.dag_id AS dag_id, {} AS id, r.state AS state FROM dag_run r \
                 WHERE (r.state = 'queued' OR r.state = 'running')",
                d.int("r.id")
            ),
            &[],
        )?;
        let mut out: HashMap<String, Vec<ActiveRun>> = HashMap::new();
        for r in rows {
            out.entry(r.dag_id).or_default().push(ActiveRun {
                id: r.id,
                running: r.state.as_deref() == Some("running"),
            });
        }
        for runs in out.values_mut() {
            runs.sort_unstable();
        }
        Ok(out)
    }
}
