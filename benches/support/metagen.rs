//! Realistic metadata for reconcile benchmarks and the query-count check, generated inside the
//! database (set-based `INSERT ... SELECT`, no row-by-row round trips) into an Airflow 2
//! metadata DB that Airflow itself migrated, on SQLite, PostgreSQL or MariaDB (the seed
//! plugin's table on SQLite and PostgreSQL only).
//!
//! Backfill `k` is `gen_<k>_backfill` (origin `gen_origin_<k % 50>`): a `backfilld_backfill`
//! row in state `queued` with stale counts, a `dag` row for its copy, `runs` daily runs from
//! 2000-01-01 (all `success` but the last two: one `running`, one `queued`) with `tis` task
//! instances each, `updated_at` far in the past.

use chrono::{DateTime, Duration, TimeZone, Utc};

use backfilld::dburl::Backend;
use backfilld::metadb::{Arg, DbError, MetaDb};

/// The first logical date of every generated backfill.
fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The few SQL spellings the generator needs that differ by backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spelling(Backend);

impl Spelling {
    fn of(db: &MetaDb) -> Spelling {
        Spelling(db.dialect().0)
    }

    /// The string concatenation of `parts` (MySQL's `||` is OR).
    fn cat(self, parts: &[&str]) -> String {
        match self.0 {
            Backend::Mysql => format!("CONCAT({})", parts.join(", ")),
            Backend::Sqlite | Backend::Postgres => parts.join(" || "),
        }
    }

    /// The timestamp `n` (an SQL expression) days after 2000-01-01, as stored in `dag_run`.
    fn day(self, n: &str) -> String {
        match self.0 {
            Backend::Postgres => {
                format!("(TIMESTAMPTZ '2000-01-01 00:00:00+00' + {n} * INTERVAL '1 day')")
            }
            Backend::Mysql => format!("(TIMESTAMP('2000-01-01 00:00:00') + INTERVAL {n} DAY)"),
            Backend::Sqlite => {
                format!("strftime('%Y-%m-%d %H:%M:%S.000000', '2000-01-01', '+' || {n} || ' days')")
            }
        }
    }

    /// A timestamp long past (2020-01-01), as stored in `dag_run`.
    fn old(self) -> &'static str {
        match self.0 {
            Backend::Postgres => "TIMESTAMPTZ '2020-01-01 00:00:00+00'",
            Backend::Sqlite | Backend::Mysql => "'2020-01-01 00:00:00.000000'",
        }
    }

    /// Refresh the planner's statistics of the generated tables.
    fn analyze(self) -> &'static str {
        match self.0 {
            Backend::Mysql => "ANALYZE TABLE backfilld_backfill, dag, dag_run, task_instance",
            Backend::Sqlite | Backend::Postgres => "ANALYZE",
        }
    }
}

fn is_pg(db: &MetaDb) -> Result<bool, DbError> {
    match db.dialect().0 {
        Backend::Sqlite => Ok(false),
        Backend::Postgres => Ok(true),
        Backend::Mysql => Err(DbError::Schema(
            "the seed table is generated on SQLite and PostgreSQL".into(),
        )),
    }
}

/// Fill the numbers table `gen_nums` with `0..n` (kept between calls; only grows).
fn numbers(db: &mut MetaDb, n: usize) -> Result<(), DbError> {
    db.batch("CREATE TABLE IF NOT EXISTS gen_nums (k BIGINT NOT NULL PRIMARY KEY)")?;
    db.batch("DELETE FROM gen_nums")?;
    db.batch(&format!(
        "INSERT INTO gen_nums (k) WITH RECURSIVE r(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM r WHERE k < {}) SELECT k FROM r",
        n.max(1) - 1
    ))
}

/// Add backfills `first..first + count`, each with `runs` runs of `tis` task instances.
pub fn generate(
    db: &mut MetaDb,
    dags_folder: &str,
    first: usize,
    count: usize,
    runs: usize,
    tis: usize,
) -> Result<(), DbError> {
    let sp = Spelling::of(db);
    let d = db.dialect();
    numbers(db, (first + count).max(runs).max(tis))?;
    let stored = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let dates: Vec<String> = (0..runs)
        .map(|i| stored(day0() + Duration::days(i as i64)))
        .collect();
    let end = day0() + Duration::days(runs.max(1) as i64 - 1);
    let code = format!(
        "# generated origin DAG\n{}",
        "from airflow import DAG  # padding to a realistic DAG file size\n".repeat(80)
    );
    let (lo, hi) = (first, first + count);
    db.execute(
        &format!(
            "INSERT INTO backfilld_backfill (id, dag_id, state, description, start_date, end_date, \
             logical_dates, params, max_active_runs, ignore_overlap, origin_fileloc, origin_code, \
             copy_path, copy_written_at, submitted_by, submitted_uid, submitted_at, updated_at, \
             deleted, dates_total, dates_succeeded, dates_failed, dates_running, dates_queued, host, \
             request_key, requester) \
             SELECT {id}, {origin}, 'queued', NULL, ?, ?, ?, \
             '{{}}', 2, 0, '/dags/origin.py', ?, {path}, \
             ?, 'root', 0, ?, ?, 0, {runs}, 0, 0, 0, 0, 'bench', {key}, 'root' \
             FROM gen_nums WHERE k >= {lo} AND k < {hi}",
            id = sp.cat(&["'gen_'", "k", "'_backfill'"]),
            origin = sp.cat(&["'gen_origin_'", "(k % 50)"]),
            path = sp.cat(&["?", "'/backfill_user_dags/gen_'", "k", "'_backfill.py'"]),
            key = sp.cat(&["'gen'", "k"]),
        ),
        &[
            Arg::Text(stored(day0())),
            Arg::Text(stored(end)),
            Arg::Text(serde_json::to_string(&dates).unwrap_or_default()),
            Arg::Text(code),
            Arg::Text(dags_folder.to_owned()),
            Arg::Text(stored(day0())),
            Arg::Text(stored(day0())),
            Arg::Text(stored(day0())),
        ],
    )?;
    let (t, f) = (d.bool_lit(true), d.bool_lit(false));
    db.batch(&format!(
        "INSERT INTO dag (dag_id, is_paused, is_subdag, is_active, fileloc, max_active_tasks, \
         max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits, \
         has_import_errors) \
         SELECT {id}, {f}, {f}, {t}, {path}, \
         16, 2, 0, {f}, {f} FROM gen_nums WHERE k >= {lo} AND k < {hi}",
        id = sp.cat(&["'gen_'", "k", "'_backfill'"]),
        path = sp.cat(&[
            &format!("'{dags_folder}/backfill_user_dags/gen_'"),
            "k",
            "'_backfill.py'"
        ]),
    ))?;
    let old = sp.old();
    let last = runs as i64 - 1;
    db.batch(&format!(
        "INSERT INTO dag_run (dag_id, execution_date, run_id, run_type, state, queued_at, start_date, \
         end_date, updated_at, external_trigger, clear_number) \
         SELECT {id}, {exec}, {run_id}, 'scheduled', \
         CASE WHEN r.k < {last} - 1 THEN 'success' WHEN r.k = {last} - 1 THEN 'running' ELSE 'queued' END, \
         {old}, CASE WHEN r.k < {last} THEN {old} END, CASE WHEN r.k < {last} - 1 THEN {old} END, \
         {old}, {f}, 0 \
         FROM gen_nums b CROSS JOIN gen_nums r WHERE b.k >= {lo} AND b.k < {hi} AND r.k < {runs}",
        id = sp.cat(&["'gen_'", "b.k", "'_backfill'"]),
        exec = sp.day("r.k"),
        run_id = sp.cat(&["'scheduled__'", "r.k"]),
    ))?;
    db.batch(&format!(
        "INSERT INTO task_instance (task_id, dag_id, run_id, map_index, state, pool, pool_slots, \
         try_number, max_tries, priority_weight, queue) \
         SELECT {task}, {id}, {run_id}, -1, \
         CASE WHEN r.k < {last} - 1 THEN 'success' WHEN r.k = {last} - 1 AND t.k = 0 THEN 'running' END, \
         'default_pool', 1, 1, 0, 1, 'default' \
         FROM gen_nums b CROSS JOIN gen_nums r CROSS JOIN gen_nums t \
         WHERE b.k >= {lo} AND b.k < {hi} AND r.k < {runs} AND t.k < {tis}",
        task = sp.cat(&["'t'", "t.k"]),
        id = sp.cat(&["'gen_'", "b.k", "'_backfill'"]),
        run_id = sp.cat(&["'scheduled__'", "r.k"]),
    ))?;
    db.batch(sp.analyze())
}

/// Move on one backfill in every `every` of `0..total`: its running run succeeds and its
/// queued run starts (`updated_at` now). Returns how many runs changed.
pub fn advance(db: &mut MetaDb, total: usize, every: usize) -> Result<usize, DbError> {
    advance_named(db, "gen", total, every)
}

/// [`advance`] for the backfills `<prefix>_<k>_backfill` (`seed` for [`seed_table`]'s).
pub fn advance_named(
    db: &mut MetaDb,
    prefix: &str,
    total: usize,
    every: usize,
) -> Result<usize, DbError> {
    advance_slice(db, prefix, total, every, 0)
}

/// [`advance_named`] for the backfills with `k % every == offset` (another 1% each offset).
pub fn advance_slice(
    db: &mut MetaDb,
    prefix: &str,
    total: usize,
    every: usize,
    offset: usize,
) -> Result<usize, DbError> {
    let d = db.dialect();
    let now = d.ts_value(Utc::now());
    let picked = format!(
        "SELECT {} FROM gen_nums WHERE k < {total} AND k % {} = {offset}",
        Spelling::of(db).cat(&[&format!("'{prefix}_'"), "k", "'_backfill'"]),
        every.max(1)
    );
    let ts = d.ts_param();
    let done = db.execute(
        &format!(
            "UPDATE dag_run SET state = 'success', end_date = {ts}, updated_at = {ts} \
             WHERE state = 'running' AND dag_id IN ({picked})"
        ),
        &[Arg::Text(now.clone()), Arg::Text(now.clone())],
    )?;
    let started = db.execute(
        &format!(
            "UPDATE dag_run SET state = 'running', start_date = {ts}, updated_at = {ts} \
             WHERE state = 'queued' AND dag_id IN ({picked})"
        ),
        &[Arg::Text(now.clone()), Arg::Text(now)],
    )?;
    Ok(done + started)
}

/// The seed plugin's `custom_backfill` table (its SQLAlchemy model's columns; on PostgreSQL
/// the state a native enum as the plugin makes it) with `count` backfills of `runs` daily
/// dates each, generated inside the database: `seed_<k>_backfill` of the DAG `origin`,
/// `running` in 10 `RUNNING` (all runs `success` but the last two: one `running`, one
/// `queued`; the caller writes their copy files, which an import of a running backfill needs),
/// the others of the first 8 in 10 `SUCCESS`, 1 `FAILED`, 1 cancelled before its copy
/// (`SUBMITTED`, deleted); every copy but the cancelled ones has its `dag` row and `runs`
/// runs (finished backfills import without copy files). Used by the bench, not by the tests
/// that share this file.
#[allow(dead_code)]
pub fn seed_table(
    db: &mut MetaDb,
    dags_folder: &str,
    origin: &str,
    count: usize,
    runs: usize,
    running: usize,
) -> Result<(), DbError> {
    let pg = is_pg(db)?;
    let d = db.dialect();
    numbers(db, count.max(runs))?;
    let (ts, state) = if pg {
        db.batch(
            "CREATE TYPE backfillstate AS ENUM ('SUBMITTED', 'QUEUED', 'RUNNING', 'PAUSED', 'SUCCESS', 'FAILED')",
        )?;
        ("TIMESTAMP WITH TIME ZONE", "backfillstate")
    } else {
        ("DATETIME", "VARCHAR(9)")
    };
    db.batch(&format!(
        "CREATE TABLE custom_backfill (backfill_dag_id VARCHAR(250) NOT NULL PRIMARY KEY, \
         dag_id VARCHAR(250) NOT NULL, state {state} NOT NULL, description VARCHAR(1000), \
         start_date {ts} NOT NULL, end_date {ts} NOT NULL, logical_dates TEXT, dag_params TEXT, \
         max_active_runs INTEGER NOT NULL, scheduled_date {ts}, delete_date {ts}, \
         relative_fileloc VARCHAR(1000), origin_code TEXT, submitted_at {ts}, \
         submitted_by VARCHAR(50), updated_at {ts}, deleted BOOLEAN, run_start_date {ts}, \
         run_end_date {ts})"
    ))?;
    let at = |days: i64| {
        let t = day0() + Duration::days(days);
        if pg {
            format!("TIMESTAMPTZ '{}'", t.format("%Y-%m-%d %H:%M:%S+00"))
        } else {
            format!("'{}'", t.format("%Y-%m-%d %H:%M:%S.000000"))
        }
    };
    // The seed drops the first date of a range from `logical_dates`.
    let dates: Vec<String> = (1..runs.max(1))
        .map(|i| {
            (day0() + Duration::days(i as i64))
                .format("%Y-%m-%dT%H:%M:%S+00:00")
                .to_string()
        })
        .collect();
    let dates = serde_json::to_string(&dates).unwrap_or_default();
    let (t, f) = (d.bool_lit(true), d.bool_lit(false));
    let cast = if pg { "::backfillstate" } else { "" };
    db.batch(&format!(
        "INSERT INTO custom_backfill (backfill_dag_id, dag_id, state, description, start_date, end_date, \
         logical_dates, dag_params, max_active_runs, scheduled_date, delete_date, relative_fileloc, \
         origin_code, submitted_at, submitted_by, updated_at, deleted, run_start_date, run_end_date) \
         SELECT 'seed_' || k || '_backfill', '{origin}', \
         (CASE WHEN k % 10 < {running} THEN 'RUNNING' WHEN k % 10 < 8 THEN 'SUCCESS' WHEN k % 10 = 8 THEN 'FAILED' ELSE 'SUBMITTED' END){cast}, \
         'generated', {start}, {end}, '{dates}', '{{}}', 2, {start}, {delete}, '{origin}.py', \
         '# generated', {start}, 'root', {end}, CASE WHEN k % 10 = 9 THEN {t} ELSE {f} END, \
         CASE WHEN k % 10 < 9 THEN {start} END, CASE WHEN k % 10 < 9 AND k % 10 >= {running} THEN {end} END \
         FROM gen_nums WHERE k < {count}",
        start = at(0),
        end = at(runs.max(1) as i64 - 1),
        delete = at(30),
    ))?;
    db.batch(&format!(
        "INSERT INTO dag (dag_id, is_paused, is_subdag, is_active, fileloc, max_active_tasks, \
         max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits, \
         has_import_errors) \
         SELECT 'seed_' || k || '_backfill', {f}, {f}, {t}, '{dags_folder}/backfill_user_dags/seed_' || k || '_backfill.py', \
         16, 2, 0, {f}, {f} FROM gen_nums WHERE k < {count} AND k % 10 < 9"
    ))?;
    let exec = if pg {
        "(TIMESTAMPTZ '2000-01-01 00:00:00+00' + r.k * INTERVAL '1 day')".to_owned()
    } else {
        "strftime('%Y-%m-%d %H:%M:%S.000000', '2000-01-01', '+' || r.k || ' days')".to_owned()
    };
    db.batch(&format!(
        "INSERT INTO dag_run (dag_id, execution_date, run_id, run_type, state, queued_at, start_date, \
         end_date, updated_at, external_trigger, clear_number) \
         SELECT 'seed_' || b.k || '_backfill', {exec}, 'scheduled__' || r.k, 'scheduled', \
         CASE WHEN b.k % 10 = 8 THEN 'failed' WHEN b.k % 10 >= {running} OR r.k < {last} - 1 \
         THEN 'success' WHEN r.k = {last} - 1 THEN 'running' ELSE 'queued' END, {s}, \
         CASE WHEN b.k % 10 >= {running} OR r.k < {last} THEN {s} END, \
         CASE WHEN b.k % 10 >= {running} OR r.k < {last} - 1 THEN {s} END, {s}, {f}, 0 \
         FROM gen_nums b CROSS JOIN gen_nums r WHERE b.k < {count} AND b.k % 10 < 9 AND r.k < {runs}",
        s = at(0),
        last = runs as i64 - 1,
    ))?;
    db.batch("ANALYZE")
}
