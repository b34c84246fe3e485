//! The tamper-evident audit log's hash chain: every `backfilld_audit` record carries the hash
//! of the record before it (`prev_hash`) and its own `hash`, SHA-256 over a canonical encoding
//! of its fields and `prev_hash`. Changing, inserting or deleting a record breaks the chain at
//! that record (or, for records deleted at the end, at the chain head kept in
//! `backfilld_audit_head`). Pure: hashing and verification over records the caller reads
//! (`metadb::audit` does the I/O).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Tag of the canonical encoding, hashed first (a later encoding would use another tag).
const ENCODING: &str = "backfilld-audit-v1";

/// An audit record's hashed fields, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// When (stored text).
    pub at: String,
    /// The host that wrote it.
    pub host: String,
    /// The caller's uid.
    pub uid: Option<i64>,
    /// Its unix user name.
    pub unix_user: Option<String>,
    /// The Airflow user decided for.
    pub airflow_user: Option<String>,
    /// The Airflow user named in `on_behalf_of`.
    pub on_behalf_of: Option<String>,
    /// What was asked.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// The decision (0/1 as stored).
    pub allowed: i64,
    /// Why not (stored reason code).
    pub reason_code: Option<String>,
    /// Why not (for people).
    pub reason: Option<String>,
}

/// The hash of a record with these fields following a record whose hash is `prev`: SHA-256,
/// hex, over the JSON array `[tag, prev, at, host, uid, unix_user, airflow_user, on_behalf_of,
/// action, target, allowed, reason_code, reason]` (JSON escapes every string one way, so the
/// encoding is canonical and no field can run into the next).
pub fn record_hash(prev: &str, f: &Fields) -> String {
    let canonical = serde_json::json!([
        ENCODING,
        prev,
        f.at,
        f.host,
        f.uid,
        f.unix_user,
        f.airflow_user,
        f.on_behalf_of,
        f.action,
        f.target,
        f.allowed,
        f.reason_code,
        f.reason,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// A stored record, as verification reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `backfilld_audit.id`.
    pub id: i64,
    /// The hashed fields.
    pub fields: Fields,
    /// The hash of the record before it, as stored.
    pub prev_hash: Option<String>,
    /// Its own hash, as stored.
    pub hash: Option<String>,
}

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The record has no hash (written by hand, or by a backfilld older than the chain).
    Unchained,
    /// Its `prev_hash` is not the hash of the record before it: a record before it was
    /// deleted or inserted, or the one before was rewritten along with its hash.
    LinkBroken,
    /// Its fields do not give its hash: the record was altered.
    Altered,
    /// The chain head (`backfilld_audit_head`) names a hash no record has: records at the end
    /// were deleted (or the head was altered).
    HeadMismatch,
}

impl BreakKind {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            BreakKind::Unchained => "it has no hash (written outside backfilld's chain)",
            BreakKind::LinkBroken => {
                "its prev_hash is not the hash of the record before it (a record was deleted or inserted before it, or the one before was rewritten)"
            }
            BreakKind::Altered => "its fields do not match its hash (the record was altered)",
            BreakKind::HeadMismatch => {
                "the chain head names a hash no record has (records after it were deleted, or the head was altered)"
            }
        }
    }
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The record where the chain breaks (`backfilld_audit.id`; for a head mismatch, the last
    /// record).
    pub id: i64,
    /// Its timestamp.
    pub at: String,
    /// How it breaks.
    pub kind: BreakKind,
    /// [`BreakKind::describe`].
    pub message: String,
}

/// What `backfillctl audit verify` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// The hash of the last record checked ([`GENESIS`] for an empty log).
    pub head: String,
    /// The first broken link, if any.
    pub broken: Option<Break>,
}

/// Checks records in chain order (ascending id), one at a time, so a large log is read in
/// pages. `head` is the chain head read *before* the first record: records appended
/// meanwhile by other agents come after it and are checked too.
#[derive(Debug, Clone)]
pub struct Verifier {
    head: String,
    head_seen: bool,
    prev: String,
    last: Option<(i64, String)>,
    records: u64,
    broken: Option<Break>,
}

impl Verifier {
    /// Start a verification against the chain head read first (`None`: no head row).
    pub fn new(head: Option<String>) -> Verifier {
        let head = head.unwrap_or_else(|| GENESIS.to_owned());
        Verifier {
            head_seen: head == GENESIS,
            head,
            prev: GENESIS.to_owned(),
            last: None,
            records: 0,
            broken: None,
        }
    }

    /// Whether a break was found (later records need not be read).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Check the next record.
    pub fn push(&mut self, r: &Record) {
        if self.broken.is_some() {
            return;
        }
        self.records += 1;
        self.last = Some((r.id, r.fields.at.clone()));
        let kind = match (&r.hash, &r.prev_hash) {
            (None, _) | (_, None) => Some(BreakKind::Unchained),
            (Some(_), Some(prev)) if *prev != self.prev => Some(BreakKind::LinkBroken),
            (Some(hash), Some(prev)) if *hash != record_hash(prev, &r.fields) => {
                Some(BreakKind::Altered)
            }
            (Some(hash), Some(_)) => {
                self.prev = hash.clone();
                if *hash == self.head {
                    self.head_seen = true;
                }
                None
            }
        };
        if let Some(kind) = kind {
            self.broken = Some(Break {
                id: r.id,
                at: r.fields.at.clone(),
                kind,
                message: kind.describe().to_owned(),
            });
        }
    }

    /// The report, once every record was pushed.
    pub fn finish(mut self) -> Report {
        if self.broken.is_none() && !self.head_seen {
            let (id, at) = self.last.clone().unwrap_or((0, String::new()));
            self.broken = Some(Break {
                id,
                at,
                kind: BreakKind::HeadMismatch,
                message: BreakKind::HeadMismatch.describe().to_owned(),
            });
        }
        Report {
            records: self.records,
            head: self.prev,
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Record> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|id| {
                let fields = Fields {
                    at: format!("2026-01-01T00:00:{id:02}.000000Z"),
                    host: "h".into(),
                    uid: Some(1000),
                    unix_user: Some("alice".into()),
                    airflow_user: Some("alice".into()),
                    on_behalf_of: None,
                    action: "create".into(),
                    target: Some(format!("sales{id}")),
                    allowed: 1,
                    reason_code: None,
                    reason: None,
                };
                let hash = record_hash(&prev, &fields);
                let r = Record {
                    id,
                    fields,
                    prev_hash: Some(prev.clone()),
                    hash: Some(hash.clone()),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn verify(records: &[Record], head: Option<String>) -> Report {
        let mut v = Verifier::new(head);
        for r in records {
            v.push(r);
        }
        v.finish()
    }

    fn head_of(records: &[Record]) -> Option<String> {
        records.last().and_then(|r| r.hash.clone())
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let report = verify(&c, head_of(&c));
        assert_eq!(report.broken, None);
        assert_eq!(report.records, 5);
        assert_eq!(Some(report.head), head_of(&c));
        assert_eq!(verify(&[], None).broken, None);
        // Records appended after the head was read are fine.
        assert_eq!(verify(&c, head_of(&c[..3])).broken, None);
    }

    #[test]
    fn each_tampering_is_found_at_its_record() {
        let c = chain(5);
        let head = head_of(&c);
        let kind_at = |records: &[Record], head: Option<String>| {
            verify(records, head).broken.map(|b| (b.id, b.kind))
        };

        let mut altered = c.clone();
        altered[2].fields.reason = Some("x".into());
        assert_eq!(
            kind_at(&altered, head.clone()),
            Some((3, BreakKind::Altered))
        );

        let mut allowed = c.clone();
        allowed[1].fields.allowed = 0;
        assert_eq!(
            kind_at(&allowed, head.clone()),
            Some((2, BreakKind::Altered))
        );

        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(
            kind_at(&deleted, head.clone()),
            Some((3, BreakKind::LinkBroken))
        );

        let mut rehashed = c.clone();
        rehashed[1].fields.target = Some("other".into());
        let prev = rehashed[1].prev_hash.clone().unwrap_or_default();
        rehashed[1].hash = Some(record_hash(&prev, &rehashed[1].fields));
        assert_eq!(
            kind_at(&rehashed, head.clone()),
            Some((3, BreakKind::LinkBroken))
        );

        let mut unchained = c.clone();
        unchained[3].hash = None;
        assert_eq!(
            kind_at(&unchained, head.clone()),
            Some((4, BreakKind::Unchained))
        );

        assert_eq!(
            kind_at(&c[..4], head.clone()),
            Some((4, BreakKind::HeadMismatch))
        );
        assert_eq!(kind_at(&[], head), Some((0, BreakKind::HeadMismatch)));
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        let c = chain(1);
        let mut a = c[0].fields.clone();
        let mut b = a.clone();
        a.unix_user = Some("al".into());
        a.airflow_user = Some("ice".into());
        b.unix_user = Some("ali".into());
        b.airflow_user = Some("ce".into());
        assert_ne!(record_hash(GENESIS, &a), record_hash(GENESIS, &b));
        b.unix_user = None;
        b.airflow_user = Some("null".into());
        a.unix_user = Some("null".into());
        a.airflow_user = None;
        assert_ne!(record_hash(GENESIS, &a), record_hash(GENESIS, &b));
    }
}
