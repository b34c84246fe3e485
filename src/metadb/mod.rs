//! Access to Airflow's metadata DB through diesel: one connection type over SQLite, PostgreSQL
//! and MySQL, with every dialect difference kept in this module.
//!
//! Queries are plain SQL with `?` placeholders and typed [`Arg`]s; [`Dialect`] renders the few
//! expressions that differ (timestamps, booleans, long text). Timestamps are read as text and
//! parsed here, so no backend-specific time type leaks out.
//!
//! Submodules: [`airflow`] reads (and, in a few reviewed places, writes) Airflow's own tables;
//! [`store`] owns backfilld's tables and their migrations; [`pass`] holds the set-based
//! queries of a reconcile pass; [`seed`] reads the seed plugin's table for `import-seed`.

pub mod airflow;
pub mod audit;
pub mod change;
pub mod copycheck;
pub mod fab;
pub mod lease;
pub mod metrics;
pub mod pass;
pub mod seed;
pub mod seedjob;
pub mod steer;
pub mod store;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::mysql::{Mysql, MysqlConnection};
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::BoxedSqlQuery;
use diesel::query_builder::SqlQuery;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{Connection, QueryableByName, RunQueryDsl};

use crate::dburl::{Backend, DbUrl};

/// Errors talking to the metadata DB.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The DB could not be reached or opened.
    #[error("cannot connect to the metadata DB {url}: {message}")]
    Connect {
        /// Where (password redacted).
        url: String,
        /// Why.
        message: String,
    },
    /// A statement failed.
    #[error("metadata DB query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A value read from the DB is not what Airflow or backfilld writes there.
    #[error("unexpected value in the metadata DB: {0}")]
    Data(String),
    /// The DB schema is not one backfilld knows.
    #[error("{0}")]
    Schema(String),
    /// A write only the holder of a claim may do was refused: this agent no longer holds it.
    #[error("not carried out: this agent no longer holds the {0} claim")]
    NotHolder(&'static str),
}

/// Fragments of the messages libpq, libmysqlclient/libmariadb and the servers give when a
/// connection broke (server shut down or restarted, network gone), checked against the real
/// servers by the outage tests.
const CONNECTION_LOST_MESSAGES: &[&str] = &[
    // libpq
    "server closed the connection",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
    "connection to server",
    "SSL SYSCALL error",
    // PostgreSQL server: shutdown (57P01), crash recovery, startup
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    // MySQL / MariaDB clients (CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_CONN_HOST_ERROR)
    "gone away",
    "Lost connection",
    "Can't connect to",
    "Server shutdown in progress",
];

impl DbError {
    /// Whether the error means the connection is gone and should be re-established.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::Connect { .. } => true,
            DbError::Query(diesel::result::Error::DatabaseError(kind, info)) => {
                matches!(kind, diesel::result::DatabaseErrorKind::ClosedConnection)
                    || CONNECTION_LOST_MESSAGES
                        .iter()
                        .any(|m| info.message().contains(m))
            }
            DbError::Query(diesel::result::Error::BrokenTransactionManager) => true,
            _ => false,
        }
    }

    /// Whether the error is a unique-key violation (a concurrent insert won).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// A bind value.
#[derive(Debug, Clone)]
pub enum Arg {
    /// Text.
    Text(String),
    /// Nullable text.
    OptText(Option<String>),
    /// A 64-bit integer.
    Int(i64),
    /// A nullable 64-bit integer.
    OptInt(Option<i64>),
}

/// SQL fragments that differ between backends.
#[derive(Debug, Clone, Copy)]
pub struct Dialect(pub Backend);

impl Dialect {
    /// An expression giving a timestamp column as text `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC.
    pub fn ts_text(self, col: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!("CAST({col} AS TEXT)"),
            Backend::Postgres => {
                format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            Backend::Mysql => format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"),
        }
    }

    /// An expression giving a boolean column as a 64-bit 0/1 (NULL as 0). PostgreSQL types
    /// a bare `1` as `integer`, which diesel will not read as `BigInt`.
    pub fn bool_int(self, col: &str) -> String {
        match self.0 {
            Backend::Postgres => {
                format!("CASE WHEN {col} THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END")
            }
            Backend::Sqlite | Backend::Mysql => format!("CASE WHEN {col} = 1 THEN 1 ELSE 0 END"),
        }
    }

    /// An expression giving a JSON/text column as text.
    pub fn text(self, col: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!("CAST({col} AS TEXT)"),
            Backend::Postgres => format!("CAST({col} AS TEXT)"),
            Backend::Mysql => format!("CAST({col} AS CHAR)"),
        }
    }

    /// An expression giving an integer column as a 64-bit integer (Airflow's `INTEGER` ids
    /// come back 32-bit from PostgreSQL, which diesel will not read as `BigInt`).
    pub fn int(self, col: &str) -> String {
        match self.0 {
            Backend::Sqlite => col.to_owned(),
            Backend::Postgres => format!("CAST({col} AS BIGINT)"),
            Backend::Mysql => format!("CAST({col} AS SIGNED)"),
        }
    }

    /// A boolean literal for a `WHERE`/`SET` on a boolean column: PostgreSQL's booleans take
    /// no integer, SQLite and MySQL store booleans as 0/1.
    pub fn bool_lit(self, value: bool) -> &'static str {
        match (self.0, value) {
            (Backend::Postgres, true) => "TRUE",
            (Backend::Postgres, false) => "FALSE",
            (Backend::Sqlite | Backend::Mysql, true) => "1",
            (Backend::Sqlite | Backend::Mysql, false) => "0",
        }
    }

    /// A condition "the pair `(first, second)` sorts before a bound pair", written so the
    /// index on `(first, second)` seeks to it: a row-value comparison on SQLite and
    /// PostgreSQL, a range on `first` plus the tie-break on MySQL/MariaDB (whose range
    /// optimizer does not read row values). The second part says which bound each
    /// placeholder takes, in order: `0` the bound of `first`, `1` that of `second`.
    pub fn keyset_before(self, first: &str, second: &str) -> (String, &'static [usize]) {
        match self.0 {
            Backend::Sqlite | Backend::Postgres => {
                (format!("({first}, {second}) < (?, ?)"), &[0, 1])
            }
            Backend::Mysql => (
                format!("{first} <= ? AND ({first} < ? OR ({first} = ? AND {second} < ?))"),
                &[0, 0, 0, 1],
            ),
        }
    }

    /// A placeholder for a UTC timestamp bound as text made by [`Dialect::ts_value`], for
    /// Airflow's timestamp columns (SQLAlchemy's naive-UTC text on SQLite, `timestamptz` on
    /// PostgreSQL, `TIMESTAMP(6)` in a UTC session on MySQL).
    pub fn ts_param(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "?",
            Backend::Postgres => "CAST(? AS TIMESTAMP WITH TIME ZONE)",
            Backend::Mysql => "CAST(? AS DATETIME(6))",
        }
    }

    /// The text to bind for [`Dialect::ts_param`].
    pub fn ts_value(self, t: DateTime<Utc>) -> String {
        let text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
        match self.0 {
            Backend::Postgres => format!("{text}+00:00"),
            Backend::Sqlite | Backend::Mysql => text,
        }
    }

    /// An expression ordering an Airflow timestamp column (or [`Dialect::ts_param`]) by time.
    /// On SQLite, SQLAlchemy stores fixed-width text (`YYYY-MM-DD HH:MM:SS.ffffff`, as
    /// [`Dialect::ts_value`] binds it), compared as its first 26 characters so an offset
    /// suffix some writers add does not matter.
    pub fn ts_order(self, expr: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!("SUBSTR({expr}, 1, 26)"),
            Backend::Postgres | Backend::Mysql => expr.to_owned(),
        }
    }

    /// An expression giving a timestamp backfilld stored as text (see `store::stored_ts`:
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`) as a value comparable with [`Dialect::ts_order`].
    pub fn stored_ts_order(self, col: &str) -> String {
        match self.0 {
            Backend::Sqlite => format!("REPLACE(REPLACE({col}, 'T', ' '), 'Z', '')"),
            Backend::Postgres => format!("CAST({col} AS TIMESTAMP WITH TIME ZONE)"),
            Backend::Mysql => format!("STR_TO_DATE({col}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
        }
    }

    /// An expression giving the DB server's clock as milliseconds since the Unix epoch (one
    /// clock for every agent, whatever their own clocks say).
    pub fn now_ms(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Mysql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        }
    }

    /// A JSON literal for a JSON column (PostgreSQL's `JSONB` takes no text in an
    /// `INSERT ... SELECT`; MySQL converts text, MariaDB's JSON is text). `json` must hold no
    /// single quote or `?`.
    pub fn json_lit(self, json: &str) -> String {
        match self.0 {
            Backend::Postgres => format!("CAST('{json}' AS JSONB)"),
            Backend::Sqlite | Backend::Mysql => format!("'{json}'"),
        }
    }

    /// Column type for unbounded text (MySQL's TEXT stops at 64 KiB).
    pub fn long_text(self) -> &'static str {
        match self.0 {
            Backend::Mysql => "LONGTEXT",
            Backend::Sqlite | Backend::Postgres => "TEXT",
        }
    }

    /// Statements widening the `VARCHAR` column `col` of `table` to `width` (keeping `NOT
    /// NULL` when `not_null`): none on SQLite, which does not enforce `VARCHAR` lengths.
    pub fn widen_varchar(self, table: &str, col: &str, width: u32, not_null: bool) -> Vec<String> {
        let null = if not_null { " NOT NULL" } else { "" };
        match self.0 {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres => vec![format!(
                "ALTER TABLE {table} ALTER COLUMN {col} TYPE VARCHAR({width})"
            )],
            Backend::Mysql => vec![format!(
                "ALTER TABLE {table} MODIFY {col} VARCHAR({width}){null}"
            )],
        }
    }

    /// Auto-incrementing integer primary key column definition.
    pub fn serial_pk(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
            Backend::Mysql => "BIGINT AUTO_INCREMENT PRIMARY KEY",
        }
    }

    /// The clause locking the rows a `SELECT` reads until the transaction ends (empty on
    /// SQLite, whose write transactions hold the database's write lock from `BEGIN IMMEDIATE`).
    pub fn for_update(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "",
            Backend::Postgres | Backend::Mysql => " FOR UPDATE",
        }
    }

    /// Statement that opens a write transaction.
    fn begin(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres | Backend::Mysql => "BEGIN",
        }
    }
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
    Mysql(MysqlConnection),
}

/// One open connection to the metadata DB.
pub struct MetaDb {
    conn: Conn,
    dialect: Dialect,
    queries: u64,
    /// Open transactions: 0 none, 1 a transaction, more its nested savepoints.
    depth: u32,
    /// The open transaction wrote `backfilld_backfill`: its commit bumps the change signal
    /// ([`change`]).
    changed: bool,
}

/// How long a SQLite statement waits for Airflow's lock before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

impl MetaDb {
    /// Connect. A SQLite file must already exist: it is opened read-write, never created.
    pub fn connect(url: &DbUrl) -> Result<MetaDb, DbError> {
        let fail = |message: String| DbError::Connect {
            url: url.to_string(),
            message,
        };
        let conn = match url {
            DbUrl::Sqlite(path) => {
                if !path.is_file() {
                    return Err(fail(
                        "no such SQLite file (backfilld never creates one)".into(),
                    ));
                }
                let mut encoded = String::from("file:");
                for c in path.to_string_lossy().chars() {
                    match c {
                        '%' => encoded.push_str("%25"),
                        '?' => encoded.push_str("%3f"),
                        '#' => encoded.push_str("%23"),
                        c => encoded.push(c),
                    }
                }
                encoded.push_str("?mode=rw");
                let mut c =
                    SqliteConnection::establish(&encoded).map_err(|e| fail(e.to_string()))?;
                // Foreign keys on, as Airflow's own SQLite connections have them: deleting a
                // copy's rows then cascades the way it does for Airflow.
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON;"
                ))
                .map_err(|e| fail(e.to_string()))?;
                Conn::Sqlite(c)
            }
            DbUrl::Postgres(u) => {
                let mut c = PgConnection::establish(u).map_err(|e| fail(e.to_string()))?;
                c.batch_execute("SET TIME ZONE 'UTC'")
                    .map_err(|e| fail(e.to_string()))?;
                Conn::Postgres(c)
            }
            DbUrl::Mysql(u) => {
                let mut c = MysqlConnection::establish(u).map_err(|e| fail(e.to_string()))?;
                c.batch_execute("SET time_zone = '+00:00'")
                    .map_err(|e| fail(e.to_string()))?;
                Conn::Mysql(c)
            }
        };
        Ok(MetaDb {
            conn,
            dialect: Dialect(url.backend()),
            queries: 0,
            depth: 0,
            changed: false,
        })
    }

    /// The SQL dialect of this connection.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How many statements this connection has sent so far (queries, writes, transaction
    /// control): the reconciler reports the difference over a pass.
    pub fn query_count(&self) -> u64 {
        self.queries
    }

    /// Run a query and load its rows.
    pub fn load<T>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<T>, DbError>
    where
        T: QueryableByName<Sqlite> + QueryableByName<Pg> + QueryableByName<Mysql> + 'static,
    {
        self.queries += 1;
        let _timed = Timed::new(sql);
        Ok(match &mut self.conn {
            Conn::Sqlite(c) => {
                bind_all(diesel::sql_query(sql).into_boxed::<Sqlite>(), args).load(c)?
            }
            Conn::Postgres(c) => {
                bind_all(diesel::sql_query(numbered(sql)).into_boxed::<Pg>(), args).load(c)?
            }
            Conn::Mysql(c) => {
                bind_all(diesel::sql_query(sql).into_boxed::<Mysql>(), args).load(c)?
            }
        })
    }

    /// Run a statement; returns the number of rows it touched. A write of
    /// `backfilld_backfill` bumps the change signal ([`change`]): at the commit of the open
    /// transaction, or right after the statement outside one.
    pub fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<usize, DbError> {
        let n = self.execute_plain(sql, args)?;
        self.signal_write(sql)?;
        Ok(n)
    }

    /// After `sql` ran: when it wrote `backfilld_backfill`, bump the change signal now outside
    /// a transaction, or mark the open one for the bump at its commit.
    fn signal_write(&mut self, sql: &str) -> Result<(), DbError> {
        if change::writes_backfill(sql) {
            if self.depth == 0 {
                self.execute_plain(change::BUMP, &[])?;
            } else {
                self.changed = true;
            }
        }
        Ok(())
    }

    fn execute_plain(&mut self, sql: &str, args: &[Arg]) -> Result<usize, DbError> {
        self.queries += 1;
        let _timed = Timed::new(sql);
        Ok(match &mut self.conn {
            Conn::Sqlite(c) => {
                bind_all(diesel::sql_query(sql).into_boxed::<Sqlite>(), args).execute(c)?
            }
            Conn::Postgres(c) => {
                bind_all(diesel::sql_query(numbered(sql)).into_boxed::<Pg>(), args).execute(c)?
            }
            Conn::Mysql(c) => {
                bind_all(diesel::sql_query(sql).into_boxed::<Mysql>(), args).execute(c)?
            }
        })
    }

    /// Run statements without binds (DDL). A write of `backfilld_backfill` as the first
    /// statement bumps the change signal as [`MetaDb::execute`] does.
    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.batch_plain(sql)?;
        self.signal_write(sql)
    }

    /// [`MetaDb::batch`] without the change signal (the migrations: the signal's table may
    /// not exist yet).
    pub(crate) fn batch_plain(&mut self, sql: &str) -> Result<(), DbError> {
        self.queries += 1;
        let _timed = Timed::new(sql);
        match &mut self.conn {
            Conn::Sqlite(c) => c.batch_execute(sql)?,
            Conn::Postgres(c) => c.batch_execute(sql)?,
            Conn::Mysql(c) => c.batch_execute(sql)?,
        }
        Ok(())
    }

    /// Run `f` in a write transaction: committed when it returns `Ok`, rolled back otherwise.
    /// Inside an open transaction it is a savepoint: `f`'s work is undone alone when it fails,
    /// and kept for the enclosing transaction's commit when it succeeds.
    pub fn transaction<T, E>(&mut self, f: impl FnOnce(&mut MetaDb) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => {
                // The original error matters more than a failed rollback.
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Bump the change signal now, if the open transaction wrote `backfilld_backfill` (its
    /// commit then does not), and return the counter as this transaction sees it: the
    /// transaction's last statement before `COMMIT`, so the counter's row is locked only for
    /// the commit. `None` when nothing was written.
    pub fn signal_now(&mut self) -> Result<Option<i64>, DbError> {
        if self.depth == 0 || !self.changed {
            return Ok(None);
        }
        self.execute_plain(change::BUMP, &[])?;
        self.changed = false;
        change::seq(self)
    }

    /// Open a write transaction, or a savepoint inside the open one. Every `begin` is closed
    /// by one `commit` or `rollback`.
    pub fn begin(&mut self) -> Result<(), DbError> {
        if self.depth == 0 {
            self.batch(self.dialect.begin())?;
        } else {
            self.batch(&format!("SAVEPOINT backfilld_{}", self.depth))?;
        }
        self.depth += 1;
        Ok(())
    }

    /// Commit the innermost `begin` (a savepoint's work then belongs to the enclosing
    /// transaction). When that fails, its work is rolled back.
    pub fn commit(&mut self) -> Result<(), DbError> {
        let depth = self.depth.saturating_sub(1);
        self.depth = depth;
        if depth == 0 {
            // The change signal's bump last: its row lock is held only for the commit.
            if std::mem::take(&mut self.changed) {
                if let Err(e) = self.execute_plain(change::BUMP, &[]) {
                    let _ = self.batch("ROLLBACK");
                    return Err(e);
                }
            }
            let res = self.batch("COMMIT");
            if res.is_err() {
                // SQLite keeps the transaction open after a failed COMMIT.
                let _ = self.batch("ROLLBACK");
            }
            res
        } else {
            let res = self.batch(&format!("RELEASE SAVEPOINT backfilld_{depth}"));
            if res.is_err() {
                let _ = self.batch(&format!("ROLLBACK TO SAVEPOINT backfilld_{depth}"));
                let _ = self.batch(&format!("RELEASE SAVEPOINT backfilld_{depth}"));
            }
            res
        }
    }

    /// Roll back the innermost `begin`.
    pub fn rollback(&mut self) -> Result<(), DbError> {
        let depth = self.depth.saturating_sub(1);
        self.depth = depth;
        if depth == 0 {
            self.changed = false;
            self.batch("ROLLBACK")
        } else {
            self.batch(&format!("ROLLBACK TO SAVEPOINT backfilld_{depth}"))?;
            self.batch(&format!("RELEASE SAVEPOINT backfilld_{depth}"))
        }
    }

    /// The SQL expression to insert as `id` into an Airflow table, or `None` when the column
    /// fills itself. FAB's tables on Airflow 3 are created by SQLAlchemy with an explicit
    /// `<table>_id_seq` sequence and no server-side default (PostgreSQL) or `AUTO_INCREMENT`
    /// (MariaDB), so a row inserted without an id would be refused.
    pub fn new_id_expr(&mut self, table: &str) -> Result<Option<String>, DbError> {
        if table.is_empty()
            || !table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(DbError::Data(format!("not a table name: {table:?}")));
        }
        let seq = format!("{table}_id_seq");
        let (fills_itself, seq_exists, expr) = match self.dialect.0 {
            Backend::Sqlite => return Ok(None),
            Backend::Postgres => (
                "SELECT COUNT(*) AS value FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = ? AND column_name = 'id' AND (column_default IS NOT NULL OR is_identity = 'YES')",
                "SELECT COUNT(*) AS value FROM information_schema.sequences \
                 WHERE sequence_schema = current_schema() AND sequence_name = ?",
                format!("nextval('{seq}')"),
            ),
            Backend::Mysql => (
                "SELECT COUNT(*) AS value FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = ? AND column_name = 'id' AND extra LIKE '%auto_increment%'",
                "SELECT COUNT(*) AS value FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = ? AND table_type = 'SEQUENCE'",
                format!("NEXT VALUE FOR {seq}"),
            ),
        };
        let count = |db: &mut MetaDb, sql: &str, arg: &str| -> Result<i64, DbError> {
            let rows: Vec<IntRow> = db.load(sql, &[Arg::Text(arg.to_owned())])?;
            Ok(rows.first().map(|r| r.value).unwrap_or(0))
        };
        if count(self, fills_itself, table)? > 0 || count(self, seq_exists, &seq)? == 0 {
            return Ok(None);
        }
        Ok(Some(expr))
    }

    /// Column names of a table (empty when the table does not exist).
    pub fn columns(&mut self, table: &str) -> Result<Vec<String>, DbError> {
        let sql = match self.dialect.0 {
            Backend::Sqlite => "SELECT name AS value FROM pragma_table_info(?)",
            Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT) AS value FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ?"
            }
            Backend::Mysql => {
                "SELECT CAST(column_name AS CHAR) AS value FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ?"
            }
        };
        let rows: Vec<TextRow> = self.load(sql, &[Arg::Text(table.to_owned())])?;
        Ok(rows.into_iter().map(|r| r.value).collect())
    }
}

/// Replace `?` placeholders by PostgreSQL's `$1, $2, ...` (our SQL never has `?` in literals).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn bind_all<'a, DB>(
    mut q: BoxedSqlQuery<'a, DB, SqlQuery>,
    args: &[Arg],
) -> BoxedSqlQuery<'a, DB, SqlQuery>
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<BigInt>,
    String: diesel::serialize::ToSql<Text, DB>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    Option<String>: diesel::serialize::ToSql<Nullable<Text>, DB>,
    Option<i64>: diesel::serialize::ToSql<Nullable<BigInt>, DB>,
{
    for a in args {
        q = match a.clone() {
            Arg::Text(s) => q.bind::<Text, _>(s),
            Arg::OptText(s) => q.bind::<Nullable<Text>, _>(s),
            Arg::Int(i) => q.bind::<BigInt, _>(i),
            Arg::OptInt(i) => q.bind::<Nullable<BigInt>, _>(i),
        };
    }
    q
}

/// A single text column named `value`.
#[derive(QueryableByName, Debug)]
pub struct TextRow {
    /// The value.
    #[diesel(sql_type = Text)]
    pub value: String,
}

/// Traces a statement's wall time when it ends (target `backfilld::metadb::sql`, level
/// `trace`: off unless asked for, e.g. `BACKFILLD_LOG=backfilld::metadb::sql=trace`).
struct Timed<'a> {
    sql: &'a str,
    started: Option<std::time::Instant>,
}

impl<'a> Timed<'a> {
    fn new(sql: &'a str) -> Timed<'a> {
        let on = tracing::enabled!(target: "backfilld::metadb::sql", tracing::Level::TRACE);
        Timed {
            sql,
            started: on.then(std::time::Instant::now),
        }
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.started {
            let sql: String = self.sql.chars().take(160).collect();
            tracing::trace!(target: "backfilld::metadb::sql", us = t.elapsed().as_micros() as u64, sql = %sql, "statement");
        }
    }
}

/// A single integer column named `value`.
#[derive(QueryableByName, Debug)]
pub struct IntRow {
    /// The value.
    #[diesel(sql_type = BigInt)]
    pub value: i64,
}

/// Parse a timestamp read through [`Dialect::ts_text`] (or stored by backfilld) as UTC.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, DbError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // SQLite keeps SQLAlchemy's naive-UTC text; some versions append an offset.
    let core = s.trim_end_matches("+00:00");
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(core, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(DbError::Data(format!("unparseable timestamp {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
    }

    #[test]
    fn stored_timestamps_order_like_sqlalchemy_text_on_sqlite() {
        let t = parse_ts("2024-01-02T03:04:05.000006Z").unwrap_or_default();
        let d = Dialect(Backend::Sqlite);
        assert_eq!(d.ts_value(t), "2024-01-02 03:04:05.000006");
        assert_eq!(
            d.stored_ts_order("b.start_date"),
            "REPLACE(REPLACE(b.start_date, 'T', ' '), 'Z', '')"
        );
        assert_eq!(
            "2024-01-02T03:04:05.000006Z"
                .replace('T', " ")
                .replace('Z', ""),
            d.ts_value(t)
        );
    }

    #[test]
    fn timestamps_from_every_backend_parse() {
        for s in [
            "2024-01-01 00:00:00.000000",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00.000000+00:00",
            "2024-01-01T00:00:00+00:00",
        ] {
            let t = parse_ts(s).map(|t| t.to_rfc3339()).unwrap_or_default();
            assert_eq!(t, "2024-01-01T00:00:00+00:00", "{s}");
        }
        assert!(parse_ts("yesterday").is_err());
    }
}
