//! The change signal of backfilld's own table (issue 20): `backfilld_change.seq`, a counter
//! bumped once by every transaction that writes `backfilld_backfill` (schema 21). Every write
//! goes through [`MetaDb::execute`](super::MetaDb::execute), which notices it
//! ([`writes_backfill`]) and bumps the counter as the transaction's last statement before
//! `COMMIT` (right after the statement outside a transaction), so the bump commits with the
//! write it signals and holds the counter's row lock only for the commit: two writers never
//! wait on each other in a different order.
//!
//! A reader that reads the counter first and the rows after (in one snapshot, or in two
//! statements in that order) may trust rows it read at the same counter value: a write it did
//! not see moves the counter past it. Readers: the reconcile pass's version stamps
//! (`engine::pass_cache`), the copy folder's live copies and the backfills due for automatic
//! deletion (`engine`).

use super::{Arg, DbError, IntRow, MetaDb};

/// The statement that bumps the counter.
pub(super) const BUMP: &str = "UPDATE backfilld_change SET seq = seq + 1 WHERE id = 1";

/// Whether `sql` writes rows of `backfilld_backfill`: an `INSERT`, `UPDATE`, `DELETE` or
/// `REPLACE` whose target (the first table named, before any parenthesis) is that table, or a
/// `WITH` statement naming it anywhere (conservative). DDL (`ALTER`, `CREATE INDEX`) and reads
/// are not writes of rows; a subquery reading the table from a write to another table is not
/// either.
pub fn writes_backfill(sql: &str) -> bool {
    let s = sql.trim_start();
    let verb: String = s
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    let Some(at) = find_table(s) else {
        return false;
    };
    match verb.as_str() {
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" => !s[..at].contains('('),
        "WITH" => true,
        _ => false,
    }
}

/// Where `backfilld_backfill` first occurs in `s` as a whole name (not a prefix of
/// `backfilld_backfill_…` or part of a longer word).
fn find_table(s: &str) -> Option<usize> {
    const NAME: &str = "backfilld_backfill";
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = s[from..].find(NAME).map(|i| i + from) {
        let before = s[..i].chars().next_back().is_some_and(word);
        let after = s[i + NAME.len()..].chars().next().is_some_and(word);
        if !before && !after {
            return Some(i);
        }
        from = i + NAME.len();
    }
    None
}

/// The counter's value; `None` without the counter's row (then nothing may be trusted).
pub fn seq(db: &mut MetaDb) -> Result<Option<i64>, DbError> {
    let rows: Vec<IntRow> = db.load(
        "SELECT seq AS value FROM backfilld_change WHERE id = ?",
        &[Arg::Int(1)],
    )?;
    Ok(rows.first().map(|r| r.value))
}

/// Whether a reader that last read its rows at counter value `kept`, and has since skipped
/// that read `skipped` times in a row, may skip it again now that the counter reads `now`:
/// only when both are known and equal, and fewer than `every` reads were skipped (the read is
/// done at least every `every` times anyway, which heals a write made outside backfilld).
pub fn may_skip(kept: Option<i64>, now: Option<i64>, skipped: usize, every: usize) -> bool {
    matches!((kept, now), (Some(k), Some(n)) if k == n) && skipped + 1 < every
}

/// What a reader whose rows were read at counter value `kept` may take the counter to be
/// after its own transaction bumped it to `after` (as that transaction saw it): `after` when
/// it is exactly one past `kept` (no other write came between; the reader then reads its own
/// written rows again itself), `None` otherwise (another write came between: read again).
pub fn after_own_write(kept: Option<i64>, after: Option<i64>) -> Option<i64> {
    match (kept, after) {
        (Some(k), Some(a)) if k.checked_add(1) == Some(a) => Some(a),
        _ => None,
    }
}

/// A read of `backfilld_backfill` kept while the change signal stays put: [`Kept::get`] gives
/// it back instead of reading again, [`Kept::put`] replaces it after a read.
#[derive(Debug)]
pub struct Kept<T> {
    seq: Option<i64>,
    skipped: usize,
    value: Option<T>,
}

impl<T> Default for Kept<T> {
    fn default() -> Kept<T> {
        Kept {
            seq: None,
            skipped: 0,
            value: None,
        }
    }
}

impl<T> Kept<T> {
    /// The kept value when the counter, read now as `now` (before the rows would be read),
    /// still reads what it read before the kept read and fewer than `every` reads were
    /// skipped in a row ([`may_skip`]); `None` otherwise (then read, and [`Kept::put`]).
    pub fn get(&mut self, now: Option<i64>, every: usize) -> Option<&T> {
        if self.value.is_some() && may_skip(self.seq, now, self.skipped, every) {
            self.skipped += 1;
            self.value.as_ref()
        } else {
            None
        }
    }

    /// Keep `value`, read after the counter read `seq`.
    pub fn put(&mut self, seq: Option<i64>, value: T) {
        self.seq = seq;
        self.skipped = 0;
        self.value = Some(value);
    }

    /// This reader's own transaction bumped the counter to `after` (as it saw it) with a
    /// write the caller knows leaves the kept value true: when no other write came between
    /// ([`after_own_write`]), the kept value stays good at `after`; otherwise the next
    /// [`Kept::get`] asks for a read, as it would have.
    pub fn own_write(&mut self, after: Option<i64>) {
        if self.value.is_some() {
            if let Some(to) = after_own_write(self.seq, after) {
                self.seq = Some(to);
            }
        }
    }

    /// Forget the kept value: the next [`Kept::get`] asks for a read.
    pub fn clear(&mut self) {
        self.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_own_write_keeps_the_reader_current() {
        assert_eq!(after_own_write(Some(4), Some(5)), Some(5));
        assert_eq!(
            after_own_write(Some(4), Some(6)),
            None,
            "another write between"
        );
        assert_eq!(after_own_write(Some(4), Some(4)), None);
        assert_eq!(after_own_write(None, Some(5)), None);
        assert_eq!(after_own_write(Some(4), None), None, "nothing written");
        assert_eq!(after_own_write(Some(i64::MAX), Some(i64::MIN)), None);
    }

    #[test]
    fn a_kept_read_serves_until_the_counter_moves_or_every_passes() {
        let mut k: Kept<&str> = Kept::default();
        assert_eq!(k.get(Some(1), 3), None, "nothing kept");
        k.put(Some(1), "a");
        assert_eq!(k.get(Some(1), 3), Some(&"a"));
        assert_eq!(k.get(Some(1), 3), Some(&"a"));
        assert_eq!(k.get(Some(1), 3), None, "read at least every 3 times");
        k.put(Some(1), "b");
        assert_eq!(k.get(Some(2), 3), None, "the counter moved");
        k.put(Some(2), "c");
        assert_eq!(k.get(Some(2), 3), Some(&"c"));
        k.own_write(Some(3));
        assert_eq!(k.get(Some(3), 3), Some(&"c"), "a lone own write keeps it");
        k.own_write(Some(5));
        assert_eq!(k.get(Some(5), 3), None, "another write came between");
        k.put(Some(5), "c");
        k.clear();
        assert_eq!(k.get(Some(5), 3), None, "cleared");
        k.own_write(Some(6));
        assert_eq!(k.get(Some(6), 3), None, "nothing kept stays so");
        k.put(None, "d");
        assert_eq!(k.get(None, 3), None, "no counter: never kept");
    }

    #[test]
    fn writes_of_the_backfill_table_are_recognised() {
        let cases = [
            ("UPDATE backfilld_backfill SET state = ? WHERE id = ?", true),
            ("  update backfilld_backfill AS b SET x = v.x FROM (VALUES (1))", true),
            ("INSERT INTO backfilld_backfill (id, dag_id) VALUES (?, ?)", true),
            ("DELETE FROM backfilld_backfill WHERE id = ?", true),
            ("REPLACE INTO backfilld_backfill (id) VALUES (?)", true),
            ("WITH x AS (SELECT 1) UPDATE backfilld_backfill SET y = 1", true),
            ("SELECT id FROM backfilld_backfill", false),
            ("UPDATE backfilld_backfill_x SET a = 1", false),
            ("INSERT INTO backfilld_pass_runs (backfill_id) VALUES (?)", false),
            (
                "DELETE FROM backfilld_pass_runs WHERE backfill_id IN (SELECT id FROM backfilld_backfill)",
                false,
            ),
            (
                "UPDATE dag SET is_paused = 1 WHERE dag_id IN (SELECT id FROM backfilld_backfill)",
                false,
            ),
            ("ALTER TABLE backfilld_backfill ADD COLUMN x INT", false),
            ("CREATE INDEX backfilld_backfill_v ON backfilld_backfill (id)", false),
            ("UPDATE my_backfilld_backfill SET a = 1", false),
            (BUMP, false),
        ];
        for (sql, want) in cases {
            assert_eq!(writes_backfill(sql), want, "{sql}");
        }
    }

    #[test]
    fn a_read_is_skipped_only_at_the_same_known_counter() {
        let cases = [
            (Some(3), Some(3), 0, 30, true),
            (Some(3), Some(3), 28, 30, true),
            (Some(3), Some(3), 29, 30, false),
            (Some(3), Some(4), 0, 30, false),
            (None, Some(3), 0, 30, false),
            (Some(3), None, 0, 30, false),
            (None, None, 0, 30, false),
            (Some(3), Some(3), 0, 1, false),
            (Some(3), Some(3), 0, 0, false),
        ];
        for (kept, now, skipped, every, want) in cases {
            assert_eq!(
                may_skip(kept, now, skipped, every),
                want,
                "{kept:?} {now:?} {skipped} {every}"
            );
        }
    }
}
