//! Keyset paging of backfill lists on every engine's real server (no Airflow): pages of a
//! list with ties on `submitted_at`, deleted rows, a DAG filter in the DB and a permission
//! filter on the rows, each backfill exactly once, newest first, whatever the page size.

use crate::support::jan as day;
use backfilld::engine::listing;
use backfilld::metadb::store::{self, ListQuery, NewBackfill, Store};
use backfilld::metadb::MetaDb;

fn new_backfill(dag_id: &str) -> NewBackfill {
    NewBackfill {
        dag_id: dag_id.into(),
        origin_code: "source".into(),
        ..crate::support::sample_backfill(1, 2)
    }
}

/// Every page of `query` (rows kept by `keep`), `limit` at a time: the ids in order.
fn all_pages(
    db: &mut MetaDb,
    query: &ListQuery,
    limit: usize,
    keep: impl Fn(&store::BackfillRow) -> bool,
) -> Vec<String> {
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = listing::page(db, query, cursor, limit, 0, &keep, |b| {
            assert!(b.origin_code.is_empty(), "a list reads no origin source");
            b.id.clone()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(page.items.len() <= limit);
        pages += 1;
        assert!(pages < 1000, "paging does not end");
        ids.extend(page.items);
        match page.next {
            Some(k) => cursor = Some(k),
            None => return ids,
        }
    }
}

#[test]
fn list_pages_on_every_backend() {
    for url in crate::support::every_backend("list_paging") {
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}"));
        // 230 backfills (more than one of the store's read batches of 200) over 3 DAGs, 10 per
        // submitted_at (ties broken by id); every 7th deleted.
        let mut s = Store::new(&mut db);
        let mut want = Vec::new();
        for n in 0..230u32 {
            let dag = ["sales", "ops", "hr"][(n % 3) as usize];
            let id = format!("{dag}_backfill_{n:04}");
            let at = day(1) + chrono::Duration::minutes(i64::from(n / 10));
            s.insert_backfill(&id, &new_backfill(dag), "h", &format!("k{n}"), at)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            if n % 7 == 0 {
                s.mark_deleted(&id, at).unwrap_or_else(|e| panic!("{e}"));
            }
            want.push((at, id, n % 7 == 0, dag));
        }
        want.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let expect = |deleted: bool, dag: Option<&str>, readable: &[&str]| -> Vec<String> {
            want.iter()
                .filter(|w| deleted || !w.2)
                .filter(|w| dag.is_none_or(|d| d == w.3))
                .filter(|w| readable.contains(&w.3))
                .map(|w| w.1.clone())
                .collect()
        };
        let every = ["sales", "ops", "hr"];
        for limit in [1, 9, 1000] {
            let all = ListQuery {
                include_deleted: true,
                ..ListQuery::default()
            };
            assert_eq!(
                all_pages(&mut db, &all, limit, |_| true),
                expect(true, None, &every),
                "{url}: limit {limit}"
            );
            let live = ListQuery::default();
            assert_eq!(
                all_pages(&mut db, &live, limit, |b| b.dag_id != "ops"),
                expect(false, None, &["sales", "hr"]),
                "{url}: limit {limit}, ops unreadable"
            );
            let sales = ListQuery {
                dag_id: Some("sales".into()),
                ..ListQuery::default()
            };
            assert_eq!(
                all_pages(&mut db, &sales, limit, |_| true),
                expect(false, Some("sales"), &every),
                "{url}: limit {limit}, sales only"
            );
        }
        // Offset paging (the seed API): skip matching rows, then a page.
        let page = listing::page(
            &mut db,
            &ListQuery::default(),
            None,
            5,
            10,
            |_| true,
            |b| b.id.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.items, expect(false, None, &every)[10..15], "{url}");
        let counts = Store::new(&mut db)
            .count_by_dag(&ListQuery::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        assert_eq!(total, expect(false, None, &every).len() as u64, "{url}");
    }
}
