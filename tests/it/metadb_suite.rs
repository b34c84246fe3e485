//! One backend-neutral suite of backfilld's own statements (garage's model: the same test,
//! every engine): the claims of `metadb::lease` and the store's request and copy-claim
//! statements, each case run on SQLite, PostgreSQL and MariaDB through
//! [`crate::support::every_backend`]. The approval, audit-chain, metrics, list-paging and
//! retention statements have suites of their own beside their features.

use crate::support::jan as day;
use backfilld::dburl::DbUrl;
use backfilld::metadb::lease::{Leases, LEADER};
use backfilld::metadb::store::{self, NewBackfill, RequestRecord, Store};
use backfilld::metadb::MetaDb;
use backfilld::state::BackfillState;

fn migrated(url: &DbUrl) -> MetaDb {
    let mut db = MetaDb::connect(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}")),
        store::SCHEMA_VERSION,
        "{url}"
    );
    // Migrating again changes nothing.
    assert_eq!(
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}")),
        store::SCHEMA_VERSION,
        "{url}: second migration"
    );
    db
}

fn new_backfill(start: u32, end: u32) -> NewBackfill {
    NewBackfill {
        ignore_overlap: false,
        origin_code: "print('sales')".into(),
        ..crate::support::sample_backfill(start, end)
    }
}

/// Claims: the first taker gets token 1; a renewal keeps it; another agent cannot take an
/// unexpired claim, and its fence fails; after a release (or expiry) the other agent takes it
/// with a higher token and the first one's fence fails; a restart of the same agent takes its
/// own claim again with a new token.
#[test]
fn leases_on_every_backend() {
    for url in crate::support::every_backend("metadb_suite_leases") {
        let mut db = migrated(&url);
        let mut l = Leases::new(&mut db);
        let now = "2026-01-01T00:00:00Z";
        let ok = |r: Result<Option<i64>, _>| r.unwrap_or_else(|e| panic!("{url}: {e}"));
        let fence = |r: Result<bool, _>| r.unwrap_or_else(|e| panic!("{url}: {e}"));
        let a = ok(l.acquire(LEADER, "a", 60_000, now, None));
        assert_eq!(a, Some(1), "{url}: first taker");
        assert_eq!(
            ok(l.acquire(LEADER, "a", 60_000, now, a)),
            a,
            "{url}: renewal"
        );
        assert_eq!(
            ok(l.acquire(LEADER, "b", 60_000, now, None)),
            None,
            "{url}: held"
        );
        assert!(fence(l.fence(LEADER, "a", 1, 60_000)), "{url}");
        assert!(!fence(l.fence(LEADER, "b", 1, 60_000)), "{url}: not b's");
        l.release(LEADER, "a", 1)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let b = ok(l.acquire(LEADER, "b", 60_000, now, None));
        assert_eq!(b, Some(2), "{url}: taken after the release");
        assert!(
            !fence(l.fence(LEADER, "a", 1, 60_000)),
            "{url}: a is fenced out"
        );
        // An expired claim (ttl 0) is taken by anyone; a restarted `b` takes its own at once.
        assert!(fence(l.fence(LEADER, "b", 2, -1)), "{url}: expire now");
        assert_eq!(
            ok(l.acquire(LEADER, "a", 60_000, now, None)),
            Some(3),
            "{url}"
        );
        assert_eq!(
            ok(l.acquire(LEADER, "a", 60_000, now, None)),
            Some(4),
            "{url}: restart"
        );
        let all = l.all().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(all.len(), 1, "{url}");
        assert_eq!((all[0].holder.as_str(), all[0].token), ("a", 4), "{url}");
        assert!(all[0].expires_in_ms > 0, "{url}: {all:?}");
    }
}

/// Requests and backfills: a request record is idempotent by key and found by owner and
/// name; ids are taken once; overlapping ranges are found; the first copy write is claimed by
/// one agent only, given back once, and a withdrawn backfill cannot be claimed.
#[test]
fn requests_and_copy_claims_on_every_backend() {
    for url in crate::support::every_backend("metadb_suite_store") {
        let mut db = migrated(&url);
        let mut s = Store::new(&mut db);
        let record = RequestRecord {
            request_key: "k1".into(),
            file_name: "jan.toml".into(),
            uid: 1000,
            host: "h".into(),
            received_at: store::stored_ts(day(1)),
            outcome: backfilld::request::Outcome::Rejected,
            reason: Some("first".into()),
            ..RequestRecord::default()
        };
        s.record_request(&record)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let again = RequestRecord {
            reason: Some("second".into()),
            ..record.clone()
        };
        s.record_request(&again)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let got = s.request("k1").unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            got.and_then(|r| r.reason).as_deref(),
            Some("first"),
            "{url}"
        );
        let by_owner = s
            .outcome(1000, "jan.toml")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            by_owner.map(|r| r.request_key).as_deref(),
            Some("k1"),
            "{url}"
        );
        assert!(
            s.outcome(1001, "jan.toml")
                .unwrap_or_else(|e| panic!("{url}: {e}"))
                .is_none(),
            "{url}"
        );

        assert!(
            !s.id_taken("sales_backfill_a")
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            "{url}"
        );
        s.insert_backfill("sales_backfill_a", &new_backfill(1, 5), "h", "ka", day(6))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            s.id_taken("sales_backfill_a")
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            "{url}"
        );
        s.insert_backfill("sales_backfill_b", &new_backfill(10, 12), "h", "kb", day(6))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let over = s
            .overlapping("sales", day(4), day(11))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(over.len(), 2, "{url}: {over:?}");
        let over = s
            .overlapping("sales", day(6), day(9))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(over.is_empty(), "{url}: {over:?}");
        assert_eq!(s.active_backfills_of("alice").ok(), Some(2), "{url}");

        // The first write of a copy: one agent wins, a give-back lets it be claimed again.
        let claim = |s: &mut Store<'_>, at| {
            s.claim_copy(
                "sales_backfill_a",
                "/dags/backfill_user_dags/a.py",
                at,
                false,
            )
            .unwrap_or_else(|e| panic!("{url}: {e}"))
        };
        assert!(claim(&mut s, day(7)), "{url}: first claim");
        assert!(!claim(&mut s, day(7)), "{url}: claimed already");
        s.unclaim_copy("sales_backfill_a", day(7))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            claim(&mut s, day(8)),
            "{url}: claimed again after the give-back"
        );
        let a = s
            .backfill_any("sales_backfill_a")
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .unwrap_or_else(|| panic!("{url}: no row"));
        assert_eq!(a.copy_written_at, Some(day(8)), "{url}");
        assert_eq!(a.state, BackfillState::Submitted, "{url}");
        // A withdrawn backfill (no copy yet) cannot be claimed any more.
        assert!(
            s.withdraw("sales_backfill_b", "withdrawn by alice", day(9))
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            "{url}"
        );
        assert!(
            !s.claim_copy("sales_backfill_b", "/x.py", day(9), false)
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            "{url}: withdrawn"
        );
        let ids: Vec<String> = s
            .backfills_page(&store::ListQuery::default(), None, 100)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert!(
            ids.contains(&"sales_backfill_a".to_owned()),
            "{url}: {ids:?}"
        );
    }
}
