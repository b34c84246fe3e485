//! Issue 6's CI check: a reconcile pass issues the same number of statements for 10 and for
//! 200 backfills (full pass, incremental pass with nothing new, incremental pass after a
//! change), on real Airflow 2.11 metadata (SQLite and PostgreSQL, migrated by Airflow), and
//! reads the generated runs right. The engine runs in-process; no scheduler.

use backfilld::config::Config;
use backfilld::engine::{Engine, PassStats};
use backfilld::metadb::MetaDb;
use backfilld::spool::Spool;

use crate::metagen;
use crate::support::{Airflow, AirflowMajor};

fn config(af: &Airflow) -> Config {
    let dir = af.home.join("backfilld");
    let text = format!(
        "[airflow]\nhome = \"{}\"\n[spool]\ndir = \"{}\"\n",
        af.home.display(),
        dir.join("spool").display()
    );
    Config::parse(&dir.join("backfilld.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

/// An engine connected to the metadata DB (backfilld's tables migrated).
fn engine(af: &Airflow) -> Engine {
    let config = config(af);
    let airflow = config.resolve_airflow().unwrap_or_else(|e| panic!("{e}"));
    let spool = Spool::open(&config.spool.dir, config.spool.max_request_bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut e = Engine::new(config, airflow, spool);
    e.ensure_connected().unwrap_or_else(|e| panic!("{e}"));
    e
}

/// Full pass, quiet incremental pass, incremental pass after one backfill in ten moved on.
fn three_passes(af: &Airflow, db: &mut MetaDb, total: usize) -> [PassStats; 3] {
    let mut e = engine(af);
    e.reconcile();
    let full = e.last_pass();
    e.reconcile();
    let quiet = e.last_pass();
    let moved = metagen::advance(db, total, 10).unwrap_or_else(|e| panic!("{e}"));
    assert!(moved > 0);
    e.reconcile();
    let changed = e.last_pass();
    [full, quiet, changed]
}

fn check(af: &Airflow) {
    drop(engine(af));
    let url = config(af)
        .resolve_airflow()
        .unwrap_or_else(|e| panic!("{e}"))
        .db;
    let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{e}"));
    let dags = af.dags_folder().to_string_lossy().into_owned();
    metagen::generate(&mut db, &dags, 0, 10, 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let small = three_passes(af, &mut db, 10);
    metagen::generate(&mut db, &dags, 10, 190, 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let large = three_passes(af, &mut db, 200);
    for (s, l) in small.iter().zip(large.iter()) {
        assert_eq!(
            s.queries, l.queries,
            "10 backfills: {s:?}\n200 backfills: {l:?}"
        );
    }
    assert!(
        small[0].full && !small[1].full && !small[2].full,
        "{small:?}"
    );
    assert_eq!((small[0].backfills, large[0].backfills), (10, 200));
    assert_eq!(small[1].recomputed, 0, "{small:?}");
    assert_eq!(large[1].changed, 0, "{large:?}");
    assert_eq!(large[2].recomputed, 20, "one in ten moved on: {large:?}");
    // The full pass: its reads in one snapshot (BEGIN, highest run id, queued/running runs,
    // backfills, run counts, COMMIT), the copies' `dag` rows, import errors, origin runs, pool
    // slots and use; then the writes in one transaction opened by the leader's fencing check
    // (BEGIN, fence, batched UPDATE, COMMIT).
    assert!(small[0].queries <= 15, "{small:?}");
    // A quiet incremental pass reads no more than a full one.
    assert!(small[1].queries <= 11, "{small:?}");
    // What the passes wrote. Backfill 0 moved on twice: all four dates done. The other
    // backfills k % 10 == 0 moved on once; the rest are as generated.
    let count = |db: &mut MetaDb, filter: &str| -> i64 {
        let rows: Vec<backfilld::metadb::IntRow> = db
            .load(
                &format!("SELECT COUNT(*) AS value FROM backfilld_backfill WHERE {filter}"),
                &[],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        rows.first().map_or(-1, |r| r.value)
    };
    assert_eq!(
        count(
            &mut db,
            "state = 'success' AND dates_succeeded = 4 AND run_end IS NOT NULL"
        ),
        1
    );
    assert_eq!(
        count(
            &mut db,
            "state = 'running' AND dates_succeeded = 3 AND dates_running = 1 AND dates_queued = 0"
        ),
        19
    );
    assert_eq!(
        count(
            &mut db,
            "state = 'running' AND dates_succeeded = 2 AND dates_running = 1 AND dates_queued = 1 \
             AND run_start IS NOT NULL AND run_end IS NULL"
        ),
        180
    );
}

#[test]
fn reconcile_queries_do_not_grow_with_backfills_sqlite() {
    check(&Airflow::sqlite(AirflowMajor::V2, "reconcile_scale_sqlite"));
}

#[test]
fn reconcile_queries_do_not_grow_with_backfills_postgres() {
    check(&Airflow::postgres(AirflowMajor::V2, "reconcile_scale_pg"));
}
