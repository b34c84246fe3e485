//! Issue 11's tamper-evident audit log, end to end on a real Airflow 2.11 metadata DB
//! (SQLite): audit records made by real requests chain by hash; `backfillctl audit verify`
//! passes, then fails at the right record after a field is altered in the DB, at the end
//! after the last record is deleted, and an upgrade from schema 7 chains the existing records.

use std::process::Output;

use serde_json::Value;

use crate::support::{Airflow, AirflowMajor, Daemon};

fn verify(d: &Daemon) -> (Output, Value) {
    let out = d.ctl(&["audit", "verify", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

fn assert_intact(d: &Daemon) -> Value {
    let (out, v) = verify(d);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["broken"], Value::Null, "{v}");
    v
}

fn assert_broken(d: &Daemon, id: i64, kind: &str) {
    let (out, v) = verify(d);
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["broken"]["id"], id, "{v}");
    assert_eq!(v["broken"]["kind"], kind, "{v}");
}

#[test]
fn audit_verify_finds_the_altered_record() {
    let af = Airflow::sqlite(AirflowMajor::V2, "audit_chain_af2");
    af.reserialize();
    let mut d = Daemon::start(&af, &[]);

    // Audit records from real requests: an accepted create, a rejected one, reads.
    let ok = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        "sales",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
    ]);
    assert_eq!(ok["outcome"], "accepted", "{ok}");
    let out = d.ctl(&[
        "submit",
        "--json",
        "--dag",
        "nope",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
    ]);
    assert_eq!(out.status.code(), Some(1));
    d.ctl_json(&["list", "--json"]);
    let id = ok["backfill_id"].as_str().unwrap_or_default();
    d.ctl_json(&["status", id, "--json"]);

    let v = assert_intact(&d);
    assert!(v["records"].as_u64().unwrap_or(0) >= 4, "{v}");
    let text = d.ctl(&["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).starts_with("audit chain intact"),
        "{text:?}"
    );

    // Alter one field of the rejected create's record, directly in the DB.
    let db = af.sql();
    let (victim, reason): (i64, String) = db
        .query_row(
            "SELECT id, reason FROM backfilld_audit WHERE action = 'create' AND allowed = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    db.execute(
        "UPDATE backfilld_audit SET reason = 'nothing happened' WHERE id = ?1",
        [victim],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_broken(&d, victim, "altered");
    let text = d.ctl(&["audit", "verify"]);
    assert_eq!(text.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&format!("BROKEN at record {victim} ")),
        "{text:?}"
    );
    // Flipping the decision is caught the same way; restoring the record heals the chain.
    db.execute(
        "UPDATE backfilld_audit SET reason = ?1, allowed = 1 WHERE id = ?2",
        rusqlite::params![reason, victim],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_broken(&d, victim, "altered");
    db.execute(
        "UPDATE backfilld_audit SET allowed = 0 WHERE id = ?1",
        [victim],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_intact(&d);

    // Deleting a record in the middle breaks the link of the next one.
    let ids: Vec<i64> = {
        let mut st = db
            .prepare("SELECT id FROM backfilld_audit ORDER BY id")
            .unwrap_or_else(|e| panic!("{e}"));
        st.query_map([], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .collect()
    };
    assert!(ids.len() > 4, "{ids:?}");

    // Deleting the newest record leaves the head pointing at nothing.
    let last = ids[ids.len() - 1];
    db.execute("DELETE FROM backfilld_audit WHERE id = ?1", [last])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_broken(&d, ids[ids.len() - 2], "head_mismatch");
    let middle = ids[1];
    db.execute("DELETE FROM backfilld_audit WHERE id = ?1", [middle])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_broken(&d, ids[2], "link_broken");

    // An upgrade from schema 7 (no chain yet) chains the records already there.
    d.kill9();
    db.execute_batch(
        "ALTER TABLE backfilld_audit DROP COLUMN prev_hash;
         ALTER TABLE backfilld_audit DROP COLUMN hash;
         DROP TABLE backfilld_audit_head;
         DELETE FROM backfilld_migration WHERE version >= 8;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before: i64 = db
        .query_row("SELECT COUNT(*) FROM backfilld_audit", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    d.restart(&[]);
    let v = assert_intact(&d);
    assert!(
        v["records"].as_i64().unwrap_or(0) >= before,
        "{v} (had {before})"
    );
    assert!(
        d.log_text().contains("chained the existing audit records"),
        "{}",
        d.log_text()
    );
}

/// Appends from several connections at once (agents sharing one DB) keep one unbroken chain,
/// on each engine's real server: SQLite (write lock), PostgreSQL and MariaDB (head row lock).
#[test]
fn concurrent_appends_keep_one_chain_on_every_backend() {
    use backfilld::metadb::store::{self, AuditEntry, Store};
    use backfilld::metadb::MetaDb;

    let urls = crate::support::every_backend("audit_chain");
    for url in urls {
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}"));
        let (agents, each) = (4, 25);
        let threads: Vec<_> = (0..agents)
            .map(|agent| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                    for n in 0..each {
                        let entry = AuditEntry {
                            at: store::stored_ts(chrono::Utc::now()),
                            uid: Some(agent),
                            unix_user: Some(format!("agent{agent}")),
                            airflow_user: None,
                            on_behalf_of: None,
                            action: "read".into(),
                            target: Some(format!("n{n}")),
                            allowed: true,
                            reason_code: None,
                            reason: None,
                        };
                        Store::new(&mut db)
                            .audit(&format!("host{agent}"), &entry)
                            .unwrap_or_else(|e| panic!("{url}: {e}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("an agent panicked"));
        }
        let report = Store::new(&mut db)
            .verify_audit()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(report.broken, None, "{url}: {report:?}");
        assert_eq!(report.records, u64::from(agents * each), "{url}");
    }
}
