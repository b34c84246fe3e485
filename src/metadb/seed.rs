//! The seed plugin's `custom_backfill` table, read only (`backfillctl import-seed`). backfilld
//! never writes it: after an import the seed's rows stay as they were.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::{parse_ts, Arg, DbError, IntRow, MetaDb};
use crate::seed::{SeedRow, SEED_TABLE};

#[derive(QueryableByName)]
struct SeedSql {
    #[diesel(sql_type = Text)]
    backfill_dag_id: String,
    #[diesel(sql_type = Text)]
    dag_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    description: Option<String>,
    #[diesel(sql_type = Text)]
    start_date: String,
    #[diesel(sql_type = Text)]
    end_date: String,
    #[diesel(sql_type = Nullable<Text>)]
    logical_dates: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    dag_params: Option<String>,
    #[diesel(sql_type = BigInt)]
    max_active_runs: i64,
    #[diesel(sql_type = Nullable<Text>)]
    scheduled_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    delete_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    relative_fileloc: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    origin_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    submitted_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    submitted_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    updated_at: Option<String>,
    #[diesel(sql_type = BigInt)]
    deleted: i64,
    #[diesel(sql_type = Nullable<Text>)]
    run_start_date: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    run_end_date: Option<String>,
}

/// Read access to the seed plugin's table.
pub struct SeedTable<'a> {
    db: &'a mut MetaDb,
}

impl<'a> SeedTable<'a> {
    /// Wrap a connection.
    pub fn new(db: &'a mut MetaDb) -> SeedTable<'a> {
        SeedTable { db }
    }

    /// Whether the metadata DB has the seed's table.
    pub fn present(&mut self) -> Result<bool, DbError> {
        Ok(!self.db.columns(SEED_TABLE)?.is_empty())
    }

    /// How many rows the table has.
    pub fn count(&mut self) -> Result<u64, DbError> {
        let rows: Vec<IntRow> = self
            .db
            .load(&format!("SELECT COUNT(*) AS value FROM {SEED_TABLE}"), &[])?;
        Ok(rows
            .first()
            .map(|r| u64::try_from(r.value).unwrap_or(0))
            .unwrap_or(0))
    }

    /// Up to `limit` rows whose id (`backfill_dag_id`, the primary key) sorts after `after`,
    /// in id order (a keyset page). The state (a native enum on PostgreSQL and MySQL) and the
    /// timestamps are read as text; a row whose timestamps do not parse is returned as
    /// `Err((backfill_dag_id, dag_id, why))`.
    #[allow(clippy::type_complexity)]
    pub fn rows_after(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Result<SeedRow, (String, String, String)>>, DbError> {
        let d = self.db.dialect();
        let (filter, args) = match after {
            Some(id) => ("WHERE backfill_dag_id > ?", vec![Arg::Text(id.to_owned())]),
            None => ("", Vec::new()),
        };
        let sql = format!(
            "SELECT backfill_dag_id, dag_id, {state} AS state, description, {start} AS start_date, \
             {end} AS end_date, {dates} AS logical_dates, {params} AS dag_params, \
             {mar} AS max_active_runs, {sched} AS scheduled_date, {del} AS delete_date, \
             relative_fileloc, {code} AS origin_code, {sub} AS submitted_at, submitted_by, \
             {upd} AS updated_at, {deleted} AS deleted, {rs} AS run_start_date, \
             {re} AS run_end_date FROM {SEED_TABLE} {filter} ORDER BY backfill_dag_id LIMIT {limit}",
            state = d.text("state"),
            start = d.ts_text("start_date"),
            end = d.ts_text("end_date"),
            dates = d.text("logical_dates"),
            params = d.text("dag_params"),
            mar = d.int("max_active_runs"),
            sched = d.ts_text("scheduled_date"),
            del = d.ts_text("delete_date"),
            code = d.text("origin_code"),
            sub = d.ts_text("submitted_at"),
            upd = d.ts_text("updated_at"),
            deleted = d.bool_int("deleted"),
            rs = d.ts_text("run_start_date"),
            re = d.ts_text("run_end_date"),
        );
        let rows: Vec<SeedSql> = self.db.load(&sql, &args)?;
        Ok(rows.into_iter().map(convert).collect())
    }
}

fn convert(r: SeedSql) -> Result<SeedRow, (String, String, String)> {
    let ids = (r.backfill_dag_id.clone(), r.dag_id.clone());
    let fail = |e: DbError| (ids.0.clone(), ids.1.clone(), e.to_string());
    let opt = |s: Option<String>| s.as_deref().map(parse_ts).transpose();
    Ok(SeedRow {
        start_date: parse_ts(&r.start_date).map_err(fail)?,
        end_date: parse_ts(&r.end_date).map_err(fail)?,
        scheduled_date: opt(r.scheduled_date).map_err(fail)?,
        delete_date: opt(r.delete_date).map_err(fail)?,
        submitted_at: opt(r.submitted_at).map_err(fail)?,
        updated_at: opt(r.updated_at).map_err(fail)?,
        run_start_date: opt(r.run_start_date).map_err(fail)?,
        run_end_date: opt(r.run_end_date).map_err(fail)?,
        backfill_dag_id: r.backfill_dag_id,
        dag_id: r.dag_id,
        state: r.state,
        description: r.description,
        logical_dates: r.logical_dates,
        dag_params: r.dag_params,
        max_active_runs: r.max_active_runs,
        relative_fileloc: r.relative_fileloc,
        origin_code: r.origin_code,
        submitted_by: r.submitted_by,
        deleted: r.deleted != 0,
    })
}
