//! The set-based queries of one reconcile pass. Each reads or writes every unfinished backfill
//! at once (joins against `backfilld_backfill`), so a pass issues the same small number of
//! statements whatever the number of backfills; only the rows that changed are written. Between
//! full passes, the change signals of [`delta`] say which rows to read again and which copies'
//! runs to count again (one statement per 400 of them).
//!
//! Index use (PostgreSQL): the run summary joins `dag_run` on `dag_id` (Airflow's
//! `dag_run_dag_id_execution_date_key` / `dag_run_dag_id_logical_date_key` unique index); the
//! origin DAGs' unfinished runs use `idx_dag_run_running_dags` / `idx_dag_run_queued_dags`
//! (state, dag_id).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::airflow::{AirflowSchema, Generation, ImportErrorSql};
use super::store::{stored_ts, Live, LiveSql, PendingOp};
use super::{parse_ts, Arg, DbError, MetaDb};
use crate::dburl::Backend;
use crate::ordering::Prerequisite;
use crate::reconcile::{Decision, Progress, RunState, RunSummary};
use crate::state::BackfillState;

mod delta;
mod kept;
pub use delta::{ActiveRun, RowVersion, RunDetail};
pub use kept::{KeptDelta, KeptMark};

/// The `WHERE` condition on `backfilld_backfill b` selecting the backfills a pass looks at:
/// not deleted, not finished, and not awaiting approval (such a backfill has no copy and
/// nothing to reconcile until an approval makes it `submitted`; only a life-cycle decision
/// changes it).
const UNFINISHED: &str =
    "b.deleted = 0 AND b.state NOT IN ('success', 'failed', 'cancelled', 'awaiting_approval')";

/// Most rows one batched `UPDATE` changes (keeps the bind count under every backend's limit).
const WRITE_CHUNK: usize = 400;

/// An unfinished backfill as a pass needs it: without the origin source snapshot or the list
/// of dates (the heavy columns), which only the copy write reads (`Store::backfill`).
#[derive(Debug, Clone, PartialEq)]
pub struct PassRow {
    /// The backfill id (the copy's DAG id).
    pub id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// Current state.
    pub state: BackfillState,
    /// Why it is in that state.
    pub state_reason: Option<String>,
    /// Where the copy was written.
    pub copy_path: Option<String>,
    /// When the copy was written.
    pub copy_written_at: Option<DateTime<Utc>>,
    /// When it was accepted (fair share: oldest first).
    pub submitted_at: DateTime<Utc>,
    /// The copy is written only from this instant on.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// First run start.
    pub run_start: Option<DateTime<Utc>>,
    /// Last run end.
    pub run_end: Option<DateTime<Utc>>,
    /// Stored date counts.
    pub progress: Progress,
    /// Paused by a user (throttling never touches it).
    pub user_paused: bool,
    /// Paused by backfilld's throttling (so throttling may unpause it).
    pub throttled: bool,
    /// A life-cycle action still being carried out.
    pub pending_op: Option<PendingOp>,
    /// The copy's `max_active_runs`.
    pub max_active_runs: u32,
    /// Turn order under a short budget: higher first.
    pub priority: i32,
    /// backfilld names the copy's runs (`run_order` set, see `crate::steer`).
    pub steered: bool,
}

#[derive(QueryableByName)]
struct PassSql {
    #[diesel(embed)]
    live: LiveSql,
    #[diesel(sql_type = BigInt)]
    throttled: i64,
    #[diesel(sql_type = BigInt)]
    priority: i64,
    #[diesel(sql_type = Nullable<Text>)]
    run_order: Option<String>,
    #[diesel(sql_type = Text)]
    updated_at: String,
}

/// The `SELECT` of [`PassRow`]s of unfinished backfills, with an extra `AND` condition.
fn pass_rows_sql(and: &str) -> String {
    format!(
        "SELECT b.id, b.dag_id, b.state, b.state_reason, b.copy_path, b.copy_written_at, \
         b.submitted_at, b.scheduled_at, b.run_start, b.run_end, b.dates_total, b.dates_succeeded, \
         b.dates_failed, b.dates_running, b.dates_queued, b.user_paused, b.throttled, \
         b.pending_op, b.max_active_runs, b.priority, b.run_order, b.updated_at FROM backfilld_backfill b \
         WHERE {UNFINISHED}{and} \
         ORDER BY b.submitted_at, b.id"
    )
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, DbError> {
    s.as_deref().map(parse_ts).transpose()
}

impl TryFrom<PassSql> for PassRow {
    type Error = DbError;

    fn try_from(r: PassSql) -> Result<Self, DbError> {
        let live = Live::try_from(r.live)?;
        Ok(PassRow {
            id: live.id,
            dag_id: live.dag_id,
            state: live.state,
            state_reason: live.state_reason,
            copy_path: live.copy_path,
            copy_written_at: live.copy_written_at,
            submitted_at: live.submitted_at,
            scheduled_at: live.scheduled_at,
            run_start: live.run_start,
            run_end: live.run_end,
            progress: live.progress,
            user_paused: live.user_paused,
            throttled: r.throttled != 0,
            pending_op: live.pending_op,
            max_active_runs: live.max_active_runs,
            priority: i32::try_from(r.priority).unwrap_or(0),
            steered: r.run_order.is_some(),
        })
    }
}

#[derive(QueryableByName)]
struct CopyDagSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = BigInt)]
    paused: i64,
}

#[derive(QueryableByName)]
struct RunGroupSql {
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<Text>)]
    first_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_end: Option<String>,
}

/// A `dag_run` row as `(dag_id, logical_date as text, state)`; also read by `metadb::steer`.
#[derive(QueryableByName)]
pub(super) struct DagRunSql {
    #[diesel(sql_type = Text)]
    pub(super) dag_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) logical_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) state: Option<String>,
}

#[derive(QueryableByName)]
struct PoolSql {
    #[diesel(sql_type = Text)]
    pool: String,
    #[diesel(sql_type = BigInt)]
    slots: i64,
}

#[derive(QueryableByName)]
struct PoolUseSql {
    #[diesel(sql_type = Text)]
    pool: String,
    #[diesel(sql_type = Nullable<Text>)]
    backfill: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct AfterSql {
    #[diesel(sql_type = Text)]
    backfill_id: String,
    #[diesel(sql_type = Text)]
    after_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    state_reason: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    deleted: Option<i64>,
}

/// A queued or running run of an origin DAG (scheduled work a backfill yields to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRun {
    /// The origin DAG.
    pub dag_id: String,
    /// Its logical date, when it has one.
    pub logical_date: Option<DateTime<Utc>>,
    /// Queued or running.
    pub state: RunState,
}

/// Queued and running task instances in one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolUse {
    /// The pool's slots (`slot_pool.slots`; negative means unlimited in Airflow).
    pub slots: i64,
    /// Task instances of backfill copies, by backfill id.
    pub by_backfill: HashMap<String, u32>,
    /// Task instances of every other DAG.
    pub others: u32,
}

/// One backfill's new reconcile outcome, to be written.
#[derive(Debug, Clone)]
pub struct Change {
    /// The backfill id.
    pub id: String,
    /// The decision (state, reason, progress, run times).
    pub decision: Decision,
    /// Whether throttling holds its copy paused.
    pub throttled: bool,
}

/// The set-based reads and writes of a reconcile pass.
pub struct Pass<'a> {
    db: &'a mut MetaDb,
    schema: &'a AirflowSchema,
}

impl<'a> Pass<'a> {
    /// Wrap a migrated connection whose Airflow schema was detected.
    pub fn new(db: &'a mut MetaDb, schema: &'a AirflowSchema) -> Pass<'a> {
        Pass { db, schema }
    }

    fn date_col(&self) -> &'static str {
        match self.schema.generation {
            Generation::V2 => "execution_date",
            Generation::V3 => "logical_date",
        }
    }

    /// `is_paused` of every DAG Airflow registered, the copies among them (looked up by
    /// backfill id). No join: `dag` is small, `backfilld_backfill` is wide (reading it again
    /// would cost more than the DAGs that are not copies).
    pub fn copy_dags(&mut self) -> Result<HashMap<String, bool>, DbError> {
        let d = self.db.dialect();
        let rows: Vec<CopyDagSql> = self.db.load(
            &format!(
                "SELECT d.dag_id, {} AS paused FROM dag d",
                d.bool_int("d.is_paused")
            ),
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r.dag_id, r.paused == 1))
            .collect())
    }

    /// Airflow's import errors of files in the copies' folder `subdir`: (file name as Airflow
    /// stores it, message), newest first. Matched to copies by the caller.
    pub fn copy_import_errors(&mut self, subdir: &str) -> Result<Vec<(String, String)>, DbError> {
        let rows: Vec<ImportErrorSql> = self.db.load(
            "SELECT filename, stacktrace FROM import_error WHERE filename LIKE ? ORDER BY id DESC",
            &[Arg::Text(format!("%{subdir}/%"))],
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.filename?, r.stacktrace.unwrap_or_default())))
            .collect())
    }

    /// The runs of every unfinished backfill's copy within the backfill's range, counted by
    /// state; with `only`, of those copies alone (one statement per [`WRITE_CHUNK`] ids, none
    /// for an empty list). Copies without a counted run are absent.
    pub fn run_summaries(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<HashMap<String, RunSummary>, DbError> {
        let mut out: HashMap<String, RunSummary> = HashMap::new();
        match only {
            None => self.count_runs("", &[], &mut out)?,
            Some(ids) => {
                for chunk in ids.chunks(WRITE_CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text(id.clone())).collect();
                    self.count_runs(&format!(" AND b.id IN ({marks})"), &args, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn count_runs(
        &mut self,
        and: &str,
        args: &[Arg],
        out: &mut HashMap<String, RunSummary>,
    ) -> Result<(), DbError> {
        let d = self.db.dialect();
        let date = format!("r.{}", self.date_col());
        let sql = format!(
            "SELECT r.dag_id AS dag_id, r.state AS state, COUNT(*) AS n, {} AS first_start, \
             {} AS last_end FROM dag_run r JOIN backfilld_backfill b ON b.id = r.dag_id \
             WHERE {UNFINISHED} AND {} >= {} AND {} <= {}{and} GROUP BY r.dag_id, r.state",
            d.ts_text("MIN(r.start_date)"),
            d.ts_text("MAX(r.end_date)"),
            d.ts_order(&date),
            d.stored_ts_order("b.start_date"),
            d.ts_order(&date),
            d.stored_ts_order("b.end_date"),
        );
        let rows: Vec<RunGroupSql> = self.db.load(&sql, args)?;
        for r in rows {
            let state = RunState::parse(r.state.as_deref().unwrap_or("queued"));
            out.entry(r.dag_id).or_default().add(
                state,
                count(r.n),
                opt_ts(r.first_start)?,
                opt_ts(r.last_end)?,
            );
        }
        Ok(())
    }

    /// The prerequisites (`after`) of every unfinished backfill whose copy is not written yet
    /// (with `only`, of that one backfill), in the order the request named them, with their
    /// state: one statement. Backfills without prerequisites are absent.
    pub fn prerequisites(
        &mut self,
        only: Option<&str>,
    ) -> Result<HashMap<String, Vec<Prerequisite>>, DbError> {
        let (filter, args) = match only {
            Some(id) => (" AND a.backfill_id = ?", vec![Arg::Text(id.to_owned())]),
            None => ("", Vec::new()),
        };
        let rows: Vec<AfterSql> = self.db.load(
            &format!(
                "SELECT a.backfill_id AS backfill_id, a.after_id AS after_id, p.state AS state, \
                 p.state_reason AS state_reason, p.deleted AS deleted FROM backfilld_after a \
                 JOIN backfilld_backfill b ON b.id = a.backfill_id \
                 LEFT JOIN backfilld_backfill p ON p.id = a.after_id \
                 WHERE {UNFINISHED} AND b.copy_written_at IS NULL{filter} \
                 ORDER BY a.backfill_id, a.ordinal"
            ),
            &args,
        )?;
        let mut out: HashMap<String, Vec<Prerequisite>> = HashMap::new();
        for r in rows {
            out.entry(r.backfill_id).or_default().push(Prerequisite {
                state: r.state.as_deref().and_then(BackfillState::parse),
                reason: r.state_reason,
                deleted: r.deleted.is_some_and(|d| d != 0),
                id: r.after_id,
            });
        }
        Ok(out)
    }

    /// Queued and running runs (other than Airflow's own backfill runs) of the DAGs `origins`
    /// (the origin DAGs of unfinished backfills, named by the caller, which has them: a
    /// subquery on `backfilld_backfill` would read that wide table again), by DAG and logical
    /// date: one statement per [`WRITE_CHUNK`] DAGs (`dag_id_state` index), none for none.
    pub fn origin_runs(&mut self, origins: &[&str]) -> Result<Vec<OriginRun>, DbError> {
        let d = self.db.dialect();
        let date = self.date_col();
        let mut rows: Vec<DagRunSql> = Vec::new();
        for chunk in origins.chunks(WRITE_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text((*id).to_owned())).collect();
            rows.extend(self.db.load::<DagRunSql>(
                &format!(
                    "SELECT r.dag_id AS dag_id, {} AS logical_date, r.state AS state FROM dag_run r \
                     WHERE r.state IN ('queued', 'running') AND r.run_type <> 'backfill' \
                     AND r.dag_id IN ({marks}) ORDER BY r.dag_id, logical_date",
                    d.ts_text(&format!("r.{date}"))
                ),
                &args,
            )?);
        }
        rows.into_iter()
            .map(|r| {
                Ok(OriginRun {
                    dag_id: r.dag_id,
                    logical_date: opt_ts(r.logical_date)?,
                    state: RunState::parse(r.state.as_deref().unwrap_or("queued")),
                })
            })
            .collect()
    }

    /// Queued and running task instances per pool, split into those of unfinished backfills'
    /// copies (`is_copy`, by backfill) and the rest, with each pool's slots. Two statements;
    /// no join with the wide `backfilld_backfill` (the caller knows the copies).
    pub fn pool_use(
        &mut self,
        is_copy: impl Fn(&str) -> bool,
    ) -> Result<HashMap<String, PoolUse>, DbError> {
        let d = self.db.dialect();
        let pools: Vec<PoolSql> = self.db.load(
            &format!("SELECT pool, {} AS slots FROM slot_pool", d.int("slots")),
            &[],
        )?;
        let mut out: HashMap<String, PoolUse> = pools
            .into_iter()
            .map(|p| {
                (
                    p.pool,
                    PoolUse {
                        slots: p.slots,
                        ..PoolUse::default()
                    },
                )
            })
            .collect();
        let used: Vec<PoolUseSql> = self.db.load(
            "SELECT t.pool AS pool, t.dag_id AS backfill, COUNT(*) AS n FROM task_instance t \
             WHERE t.state IN ('queued', 'running') GROUP BY t.pool, t.dag_id",
            &[],
        )?;
        for u in used {
            let entry = out.entry(u.pool).or_default();
            match u.backfill.filter(|id| is_copy(id)) {
                Some(id) => {
                    *entry.by_backfill.entry(id).or_default() += count(u.n);
                }
                None => entry.others = entry.others.saturating_add(count(u.n)),
            }
        }
        Ok(out)
    }

    /// Write the changed backfills: a few batched `UPDATE`s (one per [`WRITE_CHUNK`] rows).
    /// Terminal rows are never changed.
    pub fn apply(&mut self, changes: &[Change], now: DateTime<Utc>) -> Result<(), DbError> {
        let now = stored_ts(now);
        for chunk in changes.chunks(WRITE_CHUNK) {
            type Col = (&'static str, fn(&Change) -> Arg);
            let cols: [Col; 9] = [
                ("state", |c| Arg::Text(c.decision.state.as_str().to_owned())),
                ("state_reason", |c| Arg::OptText(c.decision.reason.clone())),
                ("run_start", |c| {
                    Arg::OptText(c.decision.run_start.map(stored_ts))
                }),
                ("run_end", |c| {
                    Arg::OptText(c.decision.run_end.map(stored_ts))
                }),
                ("dates_succeeded", |c| {
                    Arg::Int(c.decision.progress.succeeded.into())
                }),
                ("dates_failed", |c| {
                    Arg::Int(c.decision.progress.failed.into())
                }),
                ("dates_running", |c| {
                    Arg::Int(c.decision.progress.running.into())
                }),
                ("dates_queued", |c| {
                    Arg::Int(c.decision.progress.queued.into())
                }),
                ("throttled", |c| Arg::Int(i64::from(c.throttled))),
            ];
            let d = self.db.dialect();
            let mut args = Vec::new();
            if matches!(d.0, Backend::Mysql) {
                // MySQL has no `UPDATE ... FROM`: one `CASE` per column.
                let mut sets = Vec::new();
                for (col, value) in cols {
                    let mut case = format!("{col} = CASE id");
                    for c in chunk {
                        case.push_str(" WHEN ? THEN ?");
                        args.push(Arg::Text(c.id.clone()));
                        args.push(value(c));
                    }
                    case.push_str(" END");
                    sets.push(case);
                }
                let marks = vec!["?"; chunk.len()].join(", ");
                args.push(Arg::Text(now.clone()));
                args.extend(chunk.iter().map(|c| Arg::Text(c.id.clone())));
                self.db.execute(
                    &format!(
                        "UPDATE backfilld_backfill SET {}, updated_at = ? WHERE id IN ({marks}) \
                         AND state NOT IN ('success', 'failed', 'cancelled', 'awaiting_approval')",
                        sets.join(", ")
                    ),
                    &args,
                )?;
                continue;
            }
            // One row of values per backfill, joined by id: linear in the rows (a `CASE` per
            // column is quadratic, 0.5 s for 400 rows on SQLite).
            args.push(Arg::Text(now.clone()));
            let mut rows = Vec::with_capacity(chunk.len());
            for c in chunk {
                rows.push(format!("({})", vec!["?"; cols.len() + 1].join(", ")));
                args.push(Arg::Text(c.id.clone()));
                args.extend(cols.iter().map(|(_, value)| value(c)));
            }
            // SQLite names the columns of `VALUES` column1, column2, ...; PostgreSQL takes
            // the names after the alias.
            let (alias, name): (String, Box<dyn Fn(usize) -> String>) = match d.0 {
                Backend::Postgres => (
                    format!(
                        "v(id, {})",
                        cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                    ),
                    Box::new(|i| format!("v.{}", if i == 0 { "id" } else { cols[i - 1].0 })),
                ),
                _ => ("v".to_owned(), Box::new(|i| format!("v.column{}", i + 1))),
            };
            let sets: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, (col, _))| format!("{col} = {}", name(i + 1)))
                .collect();
            self.db.execute(
                &format!(
                    "UPDATE backfilld_backfill SET {}, updated_at = ? FROM (VALUES {}) AS {alias} \
                     WHERE backfilld_backfill.id = {} \
                     AND backfilld_backfill.state NOT IN ('success', 'failed', 'cancelled', 'awaiting_approval')",
                    sets.join(", "),
                    rows.join(", "),
                    name(0)
                ),
                &args,
            )?;
        }
        Ok(())
    }

    /// Pause or unpause the copies `ids` (`dag.is_paused`), one statement per
    /// [`WRITE_CHUNK`] copies. Only copies of backfills not paused by their user are touched.
    pub fn set_copies_paused(&mut self, ids: &[String], paused: bool) -> Result<usize, DbError> {
        let d = self.db.dialect();
        let mut n = 0;
        for chunk in ids.chunks(WRITE_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Arg> = chunk.iter().map(|id| Arg::Text(id.clone())).collect();
            n += self.db.execute(
                &format!(
                    "UPDATE dag SET is_paused = {} WHERE dag_id IN ({marks}) AND dag_id IN \
                     (SELECT b.id FROM backfilld_backfill b WHERE b.user_paused = 0 AND {UNFINISHED})",
                    d.bool_lit(paused)
                ),
                &args,
            )?;
        }
        Ok(n)
    }
}
