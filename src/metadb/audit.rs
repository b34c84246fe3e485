//! Appending to and verifying the audit log's hash chain (`backfilld_audit`,
//! `backfilld_audit_head`); the hashing rules are in the pure `crate::audit`.
//!
//! Appends are race-safe across agents sharing one DB: each runs in one write transaction that
//! first locks the chain head, the one row of `backfilld_audit_head` (`SELECT ... FOR UPDATE`
//! on PostgreSQL and MySQL; on SQLite the transaction starts with `BEGIN IMMEDIATE`, which
//! takes the database's write lock), reads the last hash, inserts the record with it and moves
//! the head. Two appends therefore never read the same head, and the ids increase in chain
//! order.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

use super::store::AuditEntry;
use super::{Arg, DbError, MetaDb, TextRow};
use crate::audit::{self, Fields, Record, Report, Verifier, GENESIS};

/// Records read per statement while verifying.
const PAGE: i64 = 1000;

fn fields_of(host: &str, e: &AuditEntry) -> Fields {
    Fields {
        at: e.at.clone(),
        host: host.to_owned(),
        uid: e.uid.map(i64::from),
        unix_user: e.unix_user.clone(),
        airflow_user: e.airflow_user.clone(),
        on_behalf_of: e.on_behalf_of.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        allowed: i64::from(e.allowed),
        reason_code: e
            .reason_code
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
        reason: e.reason.clone(),
    }
}

/// Lock the chain head (inside a write transaction) and read its hash; create it when
/// missing (a fresh chain; `verify` reports the break if records exist).
fn lock_head(db: &mut MetaDb) -> Result<String, DbError> {
    let sql = format!(
        "SELECT hash AS value FROM backfilld_audit_head WHERE id = 1{}",
        db.dialect().for_update()
    );
    let rows: Vec<TextRow> = db.load(&sql, &[])?;
    if let Some(r) = rows.into_iter().next() {
        return Ok(r.value);
    }
    tracing::warn!(
        "the audit chain head is missing; starting it again (audit verify will report the break)"
    );
    db.execute(
        "INSERT INTO backfilld_audit_head (id, hash) VALUES (1, ?)",
        &[Arg::Text(GENESIS.to_owned())],
    )?;
    Ok(GENESIS.to_owned())
}

fn set_head(db: &mut MetaDb, hash: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE backfilld_audit_head SET hash = ? WHERE id = 1",
        &[Arg::Text(hash.to_owned())],
    )?;
    Ok(())
}

/// Append a record to the chain, in its own transaction; inside a caller's transaction (a
/// batch of ingest decisions) it is a savepoint, and the head stays locked until the caller
/// commits, so the records of a batch are chained in order.
pub fn append(db: &mut MetaDb, host: &str, e: &AuditEntry) -> Result<(), DbError> {
    let f = fields_of(host, e);
    db.transaction(|db| {
        let prev = lock_head(db)?;
        let hash = audit::record_hash(&prev, &f);
        db.execute(
            "INSERT INTO backfilld_audit (at, host, uid, unix_user, airflow_user, on_behalf_of, \
             action, target, allowed, reason_code, reason, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                Arg::Text(f.at.clone()),
                Arg::Text(f.host.clone()),
                Arg::OptInt(f.uid),
                Arg::OptText(f.unix_user.clone()),
                Arg::OptText(f.airflow_user.clone()),
                Arg::OptText(f.on_behalf_of.clone()),
                Arg::Text(f.action.clone()),
                Arg::OptText(f.target.clone()),
                Arg::Int(f.allowed),
                Arg::OptText(f.reason_code.clone()),
                Arg::OptText(f.reason.clone()),
                Arg::Text(prev),
                Arg::Text(hash.clone()),
            ],
        )?;
        set_head(db, &hash)
    })
}

/// Append several records to the chain in one multi-row `INSERT` (ids increase in the given
/// order), in its own transaction or a savepoint of the caller's; the head is locked once.
pub fn append_many(db: &mut MetaDb, host: &str, entries: &[AuditEntry]) -> Result<(), DbError> {
    if entries.is_empty() {
        return Ok(());
    }
    db.transaction(|db| {
        let mut prev = lock_head(db)?;
        for chunk in entries.chunks(APPEND_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() * 13);
            for e in chunk {
                let f = fields_of(host, e);
                let hash = audit::record_hash(&prev, &f);
                args.extend([
                    Arg::Text(f.at),
                    Arg::Text(f.host),
                    Arg::OptInt(f.uid),
                    Arg::OptText(f.unix_user),
                    Arg::OptText(f.airflow_user),
                    Arg::OptText(f.on_behalf_of),
                    Arg::Text(f.action),
                    Arg::OptText(f.target),
                    Arg::Int(f.allowed),
                    Arg::OptText(f.reason_code),
                    Arg::OptText(f.reason),
                    Arg::Text(std::mem::replace(&mut prev, hash.clone())),
                    Arg::Text(hash),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            db.execute(
                &format!(
                    "INSERT INTO backfilld_audit (at, host, uid, unix_user, airflow_user, on_behalf_of, \
                     action, target, allowed, reason_code, reason, prev_hash, hash) VALUES {rows}"
                ),
                &args,
            )?;
        }
        set_head(db, &prev)
    })
}

/// Most records one `append_many` statement inserts (13 binds each, under every backend's
/// bind limit).
const APPEND_CHUNK: usize = 1000;

#[derive(QueryableByName)]
struct AuditSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    at: String,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    uid: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    unix_user: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    airflow_user: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    on_behalf_of: Option<String>,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Nullable<Text>)]
    target: Option<String>,
    #[diesel(sql_type = BigInt)]
    allowed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    prev_hash: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    hash: Option<String>,
}

impl From<AuditSql> for Record {
    fn from(r: AuditSql) -> Record {
        Record {
            id: r.id,
            fields: Fields {
                at: r.at,
                host: r.host,
                uid: r.uid,
                unix_user: r.unix_user,
                airflow_user: r.airflow_user,
                on_behalf_of: r.on_behalf_of,
                action: r.action,
                target: r.target,
                allowed: r.allowed,
                reason_code: r.reason_code,
                reason: r.reason,
            },
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The records with an id above `after`, `limit` of them, in chain order; with
/// `unchained_only`, only those without a hash.
fn page(
    db: &mut MetaDb,
    after: i64,
    limit: i64,
    unchained_only: bool,
) -> Result<Vec<Record>, DbError> {
    let filter = if unchained_only {
        " AND hash IS NULL"
    } else {
        ""
    };
    let d = db.dialect();
    let sql = format!(
        "SELECT {} AS id, at, host, uid, unix_user, airflow_user, on_behalf_of, action, target, \
         {} AS allowed, reason_code, reason, prev_hash, hash FROM backfilld_audit \
         WHERE id > ?{filter} ORDER BY id LIMIT {limit}",
        d.int("id"),
        d.int("allowed"),
    );
    let rows: Vec<AuditSql> = db.load(&sql, &[Arg::Int(after)])?;
    Ok(rows.into_iter().map(Record::from).collect())
}

/// Check the whole chain without blocking writers: read the head, then every record in pages
/// (records appended meanwhile are checked too). Stops at the first break.
pub fn verify(db: &mut MetaDb) -> Result<Report, DbError> {
    let head: Vec<TextRow> = db.load(
        "SELECT hash AS value FROM backfilld_audit_head WHERE id = 1",
        &[],
    )?;
    let mut v = Verifier::new(head.into_iter().next().map(|r| r.value));
    let mut after = 0;
    loop {
        let records = page(db, after, PAGE, false)?;
        for r in &records {
            v.push(r);
            after = r.id;
        }
        if records.len() < usize::try_from(PAGE).unwrap_or(0) || v.is_broken() {
            return Ok(v.finish());
        }
    }
}

/// Chain the records written before the chain existed (migration 8): in id order, from the
/// head, under the head's lock. Records that already have a hash are left alone.
pub fn chain_existing(db: &mut MetaDb) -> Result<u64, DbError> {
    if let Err(e) = db.execute(
        "INSERT INTO backfilld_audit_head (id, hash) VALUES (1, ?)",
        &[Arg::Text(GENESIS.to_owned())],
    ) {
        // Another agent created it a moment ago.
        if !e.is_unique_violation() {
            return Err(e);
        }
    }
    db.transaction(|db| {
        let mut prev = lock_head(db)?;
        let mut chained = 0u64;
        loop {
            let records = page(db, 0, PAGE, true)?;
            if records.is_empty() {
                break;
            }
            for r in records {
                let hash = audit::record_hash(&prev, &r.fields);
                db.execute(
                    "UPDATE backfilld_audit SET prev_hash = ?, hash = ? WHERE id = ?",
                    &[
                        Arg::Text(prev.clone()),
                        Arg::Text(hash.clone()),
                        Arg::Int(r.id),
                    ],
                )?;
                prev = hash;
                chained += 1;
            }
        }
        set_head(db, &prev)?;
        Ok(chained)
    })
}
