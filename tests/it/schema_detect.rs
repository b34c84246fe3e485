//! Issue 4: backfilld finds the Airflow schema generation from the live DB and refuses, with a
//! clear message, a schema it does not know. (Each real schema, 2.11 and 3.0 to 3.3 on SQLite, 2.11, 3.1
//! and 3.3 on PostgreSQL, and MariaDB, is detected in `matrix`, `mysql` and `core_loop`; the
//! 3.x schemas' optional features here.)

use backfilld::dburl::DbUrl;
use backfilld::metadb::airflow::{AirflowSchema, Generation};
use backfilld::metadb::MetaDb;

use crate::support::{Airflow, AirflowMajor};

fn detect(ddl: &str) -> Result<AirflowSchema, String> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("airflow.db");
    let c = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch(ddl).unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    let url = DbUrl::parse(&format!("sqlite:///{}", path.display())).map_err(|e| e.to_string())?;
    let mut db = MetaDb::connect(&url).map_err(|e| e.to_string())?;
    AirflowSchema::detect(&mut db).map_err(|e| e.to_string())
}

#[test]
fn not_an_airflow_db_is_refused() {
    let e = detect("CREATE TABLE t (x INT);").err().unwrap_or_default();
    assert!(e.contains("airflow db migrate"), "{e}");
}

#[test]
fn dag_run_without_a_date_column_is_refused() {
    let e = detect(
        "CREATE TABLE alembic_version (version_num VARCHAR(32));
         INSERT INTO alembic_version VALUES ('f00dbeef');
         CREATE TABLE dag_run (id INT, dag_id TEXT, run_date TIMESTAMP);",
    )
    .err()
    .unwrap_or_default();
    assert!(e.contains("unknown Airflow schema"), "{e}");
    assert!(e.contains("f00dbeef"), "{e}");
}

#[test]
fn a_generation_missing_columns_backfilld_reads_is_refused() {
    let e = detect(
        "CREATE TABLE alembic_version (version_num VARCHAR(32));
         INSERT INTO alembic_version VALUES ('c0ffee');
         CREATE TABLE dag_run (id INT, dag_id TEXT, logical_date TIMESTAMP, run_after TIMESTAMP,
                               state TEXT, start_date TIMESTAMP, end_date TIMESTAMP);
         CREATE TABLE dag (dag_id TEXT, is_paused BOOLEAN, fileloc TEXT);",
    )
    .err()
    .unwrap_or_default();
    assert!(e.contains("unsupported Airflow schema"), "{e}");
    assert!(e.contains("dag.is_stale"), "{e}");
    assert!(e.contains("dag_version.version_number"), "{e}");
}

/// The real schemas `airflow db migrate` makes for every Airflow 3 minor (3.0, 3.1, 3.2 and the
/// newest, 3.3) are all detected as Airflow 3 with parse requests; 3.2 and 3.3 revoke tokens
/// (`revoked_token`) and name a run's partition (`dag_run.partition_key`).
#[test]
fn real_airflow3_schemas_are_detected() {
    for (major, name, from_3_2) in [
        (AirflowMajor::V30, "schema_af30", false),
        (AirflowMajor::V3, "schema_af3", false),
        (AirflowMajor::V32, "schema_af32", true),
        (AirflowMajor::V3Newest, "schema_af33", true),
    ] {
        let af = Airflow::sqlite(major, name);
        let url = DbUrl::parse(&af.conn_url()).unwrap_or_else(|e| panic!("{e}"));
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{e}"));
        let schema = AirflowSchema::detect(&mut db).unwrap_or_else(|e| panic!("{major:?}: {e}"));
        assert_eq!(schema.generation, Generation::V3, "{major:?}");
        assert!(schema.has_parse_requests, "{major:?}");
        assert_eq!(schema.has_revoked_tokens, from_3_2, "{major:?}");
        assert_eq!(schema.has_run_partitions, from_3_2, "{major:?}");
    }
}
