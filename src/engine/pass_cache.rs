//! What the leader keeps between reconcile passes, so a pass reads only what changed (issue 6,
//! issue 20): every unfinished backfill's row with its version stamp, every copy's run
//! counts, and the copies' queued and running runs, all as of the last pass's snapshot of the
//! database. The counts, the queued/running runs and the `dag_run.id` watermarks are also kept
//! in the DB (`metadb::pass::kept`, written in the pass's fenced transaction, only what
//! changed), so a leader that starts — a restarted daemon, another agent taking the lead, a
//! lost connection — reads every unfinished row once and then only the change signals.
//!
//! The rule (see ARCHITECTURE.md, "Reconcile"): a pass is full — every row read, every copy's
//! runs counted — only when nothing usable is kept: no kept cache in the DB, a kept watermark
//! above the highest `dag_run.id` (the metadata DB was reset), more than `KEPT_MAX_NEW`
//! backfills the kept counts do not cover, or a seed import just ran. Otherwise a pass reads
//! the version stamps — only when the change signal of backfilld's table moved
//! (`metadb::change`), or at least every `STAMPS_EVERY` passes — and only the rows whose stamp
//! changed (a starting leader: every row),
//! then compares the copies' queued and running runs with the kept ones and looks up by `id`
//! the runs that started, finished or are new, updating the kept counts with them. A copy's
//! runs are counted again in full when its row is new, or a run went back from running to
//! queued, came back from a finished state (cleared), or vanished (deleted while active).
//! What this cannot see — a finished run deleted, or set to another finished state, or cleared
//! and finished again, with no pass seeing it queued or running (between two passes, or while
//! no leader ran) — the rolling recount heals: each pass counts again one in
//! `RECOUNT_EVERY` backfills, so every copy is counted again within that many passes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::metadb::change;
use crate::metadb::pass::{ActiveRun, KeptDelta, KeptMark, Pass, PassRow, RowVersion};
use crate::metadb::DbError;
use crate::reconcile::{RunState, RunSummary};

/// The rows and run counts of the last pass.
#[derive(Debug)]
pub(super) struct PassCache {
    /// The leader token the cache was built under.
    token: i64,
    /// The rows, oldest first (the order of a pass).
    rows: BTreeMap<(DateTime<Utc>, String), PassRow>,
    /// Each row's version stamp and its key in `rows`.
    versions: HashMap<String, (RowVersion, DateTime<Utc>)>,
    /// Each copy's run counts (copies without a counted run are absent).
    runs: HashMap<String, RunSummary>,
    /// Each copy's queued and running runs, in `id` order.
    active: HashMap<String, Vec<ActiveRun>>,
    /// New runs are looked for above this `dag_run.id`: the highest id seen one pass before
    /// the last, so a run whose insert committed after a higher id was read is still seen.
    run_floor: i64,
    /// The highest `dag_run.id` the last pass saw.
    run_seen: i64,
    /// The runs above `run_floor` the last pass saw (already in the counts).
    known: HashSet<i64>,
    /// What the DB's kept copy of this cache holds (`metadb::pass::kept`); `None` when it is
    /// not known to match (the next save replaces it whole).
    saved: Option<Saved>,
    /// Where the rolling recount goes on (a position in pass order).
    roll: usize,
    /// Backfills whose row, run counts or queued/running runs may differ from `saved` (the
    /// kept cache's diff looks at these alone), unless `all_dirty`.
    dirty: HashSet<String>,
    /// Every backfill may differ from `saved` (a cache just built or adopted).
    all_dirty: bool,
    /// The change signal of `backfilld_backfill` (`metadb::change`) when the version stamps
    /// were last read: while it reads the same, no row changed and the stamps are not read.
    seq: Option<i64>,
    /// Passes in a row that did not read the stamps (at most `STAMPS_EVERY - 1`).
    stamps_skipped: usize,
    /// Rows this leader's last write changed, read again by the next pass when the change
    /// signal moved by that write alone ([`PassCache::wrote`]).
    reread: BTreeSet<String>,
}

/// The version stamps are read at least every this many passes, even with the change signal
/// unmoved (heals a write to `backfilld_backfill` made outside backfilld).
pub(super) const STAMPS_EVERY: usize = 60;

/// The kept cache as last written.
#[derive(Debug)]
struct Saved {
    /// Run counts by backfill (every backfill covered, zeros included).
    runs: HashMap<String, RunSummary>,
    /// Queued/running runs by backfill.
    active: HashMap<String, Vec<ActiveRun>>,
    /// The watermarks.
    mark: KeptMark,
}

/// What a save writes, and the copies whose queued/running runs it brings up to date.
#[derive(Debug, Default)]
pub(super) struct Unsaved {
    /// The statements' content.
    pub(super) delta: KeptDelta,
    /// Copies whose kept queued/running runs change.
    touched: Vec<String>,
}

/// How a copy's kept run counts are brought up to date.
enum Update {
    /// Count every run of the copy again.
    Recount,
    /// Apply these runs: (`id`, the state the counts have for it, if any).
    Runs(Vec<(i64, Option<RunState>)>),
}

impl PassCache {
    /// A full read, in one snapshot: every unfinished backfill and every copy's runs. Returns
    /// the cache and how many backfills had their runs counted (all).
    pub(super) fn full(pass: &mut Pass<'_>, token: i64) -> Result<(PassCache, usize), DbError> {
        pass.snapshot(|pass| {
            let seq = pass.change_seq()?;
            let top = pass.top_run_id()?;
            let mut cache = PassCache {
                token,
                rows: BTreeMap::new(),
                versions: HashMap::new(),
                runs: HashMap::new(),
                active: pass.active_runs()?,
                run_floor: top,
                run_seen: top,
                known: HashSet::new(),
                saved: None,
                roll: 0,
                dirty: HashSet::new(),
                all_dirty: true,
                seq,
                stamps_skipped: 0,
                reread: BTreeSet::new(),
            };
            for (row, v) in pass.rows_of(None)? {
                cache.insert(row, v);
            }
            cache.runs = pass.run_summaries(None)?;
            cache.prune();
            let counted = cache.rows.len();
            Ok((cache, counted))
        })
    }

    /// The cache as the last leader's pass kept it in the DB, brought up to date with what
    /// changed since, in one snapshot: every unfinished row read, the kept counts and
    /// queued/running runs, then the same change signals as [`PassCache::refresh`]; backfills
    /// the kept counts do not cover are counted. `None` when nothing is kept, the kept
    /// watermark is above the highest `dag_run.id` (a reset metadata DB), or more than
    /// `max_new` backfills are not covered (a full count is cheaper). Returns the cache and
    /// how many backfills had their run counts updated.
    pub(super) fn load(
        pass: &mut Pass<'_>,
        token: i64,
        max_new: usize,
    ) -> Result<Option<(PassCache, usize)>, DbError> {
        pass.snapshot(|pass| {
            let seq = pass.change_seq()?;
            let Some(mark) = pass.kept_mark()? else {
                return Ok(None);
            };
            if pass.top_run_id()? < mark.run_seen {
                return Ok(None);
            }
            let runs = pass.kept_counts()?;
            let active = pass.kept_active()?;
            let mut cache = PassCache {
                token,
                rows: BTreeMap::new(),
                versions: HashMap::new(),
                runs: runs.clone(),
                active: active.clone(),
                run_floor: mark.run_floor,
                run_seen: mark.run_seen,
                known: mark.known.iter().copied().collect(),
                saved: Some(Saved { runs, active, mark }),
                roll: 0,
                dirty: HashSet::new(),
                all_dirty: true,
                seq,
                stamps_skipped: 0,
                reread: BTreeSet::new(),
            };
            for (row, v) in pass.rows_of(None)? {
                cache.insert(row, v);
            }
            let mut new: Vec<String> = cache
                .versions
                .keys()
                .filter(|id| !cache.runs.contains_key(*id))
                .cloned()
                .collect();
            if new.len() > max_new {
                return Ok(None);
            }
            new.sort_unstable();
            let dropped = cache.runs.keys().any(|id| !cache.versions.contains_key(id));
            let updates = new.into_iter().map(|id| (id, Update::Recount)).collect();
            let n = cache.refresh_runs(pass, updates, dropped, None)?;
            Ok(Some((cache, n)))
        })
    }

    /// Take over what `old` (a cache of the same leader token) knows of the kept cache, so
    /// the next save writes only what differs.
    pub(super) fn adopt_saved(&mut self, old: PassCache) {
        if old.token == self.token {
            self.saved = old.saved;
            self.all_dirty = true;
        }
    }

    /// What differs from the kept cache: the statements that bring it up to date.
    pub(super) fn unsaved(&self) -> Unsaved {
        let Some(saved) = &self.saved else {
            let mut u = Unsaved {
                delta: KeptDelta {
                    reset: true,
                    mark: Some(self.mark()),
                    ..KeptDelta::default()
                },
                touched: self.active.keys().cloned().collect(),
            };
            for id in self.versions.keys() {
                u.delta.counts.push((id.clone(), self.runs_of(id)));
            }
            for (copy, runs) in &self.active {
                u.delta
                    .active
                    .extend(runs.iter().map(|r| (r.id, copy.clone(), r.running)));
            }
            return u;
        };
        let u = if self.all_dirty {
            self.unsaved_of(saved, self.every_id(saved))
        } else {
            self.unsaved_of(saved, self.dirty.iter())
        };
        #[cfg(debug_assertions)]
        if !self.all_dirty {
            // The dirty set must cover every difference: the full comparison agrees.
            let all = self.unsaved_of(saved, self.every_id(saved));
            debug_assert_eq!(
                sorted(&u),
                sorted(&all),
                "the kept cache's diff missed a change"
            );
        }
        u
    }

    /// Every backfill id kept here or in `saved` (repeats included).
    fn every_id<'s>(&'s self, saved: &'s Saved) -> impl Iterator<Item = &'s String> {
        self.versions
            .keys()
            .chain(saved.runs.keys())
            .chain(self.active.keys())
            .chain(saved.active.keys())
    }

    /// What differs from `saved` among the backfills `ids` (repeats allowed).
    fn unsaved_of<'s>(&self, saved: &Saved, ids: impl Iterator<Item = &'s String>) -> Unsaved {
        let ids: BTreeSet<&String> = ids.collect();
        let mut u = Unsaved::default();
        for id in &ids {
            if self.versions.contains_key(*id) {
                let now = self.runs_of(id);
                if saved.runs.get(*id) != Some(&now) {
                    u.delta.counts.push(((*id).clone(), now));
                }
            } else if saved.runs.contains_key(*id) {
                u.delta.counts_gone.push((*id).clone());
            }
        }
        let none = Vec::new();
        for copy in ids {
            let old = saved.active.get(copy).unwrap_or(&none);
            let new = self.active.get(copy).unwrap_or(&none);
            if old == new {
                continue;
            }
            u.touched.push(copy.clone());
            for (id, _, is) in diff(old, new) {
                match is {
                    Some(running) => u.delta.active.push((id, copy.clone(), running)),
                    None => u.delta.active_gone.push(id),
                }
            }
        }
        let mark = self.mark();
        if mark != saved.mark {
            u.delta.mark = Some(mark);
        }
        u
    }

    /// Record that `u` was written (its transaction committed).
    pub(super) fn saved(&mut self, u: Unsaved) {
        self.dirty.clear();
        self.all_dirty = false;
        let Unsaved { delta, touched } = u;
        let saved = self.saved.get_or_insert_with(|| Saved {
            runs: HashMap::new(),
            active: HashMap::new(),
            mark: KeptMark {
                run_floor: 0,
                run_seen: 0,
                known: Vec::new(),
            },
        });
        if delta.reset {
            saved.runs.clear();
            saved.active.clear();
        }
        for id in &delta.counts_gone {
            saved.runs.remove(id);
        }
        saved.runs.extend(delta.counts);
        for copy in touched {
            match self.active.get(&copy) {
                Some(runs) => saved.active.insert(copy, runs.clone()),
                None => saved.active.remove(&copy),
            };
        }
        if let Some(mark) = delta.mark {
            saved.mark = mark;
        }
    }

    /// This leader's pass wrote the rows `ids` and bumped the change signal to `after` (as
    /// its transaction saw it, [`MetaDb::signal_now`](crate::metadb::MetaDb::signal_now)).
    /// When that is one past what this cache's rows were read at, no one else wrote since:
    /// the next pass reads those rows again by id instead of every version stamp. Otherwise
    /// the signal moved further and the next pass reads the stamps.
    pub(super) fn wrote(&mut self, after: Option<i64>, ids: impl Iterator<Item = String>) {
        if let Some(to) = change::after_own_write(self.seq, after) {
            self.seq = Some(to);
            self.reread.extend(ids);
        }
    }

    fn mark(&self) -> KeptMark {
        let mut known: Vec<i64> = self.known.iter().copied().collect();
        known.sort_unstable();
        KeptMark {
            run_floor: self.run_floor,
            run_seen: self.run_seen,
            known,
        }
    }

    /// Whether this cache may serve a pass of the leader holding `token`.
    pub(super) fn serves(&self, token: i64) -> bool {
        self.token == token
    }

    /// Bring the cache up to date with what changed since the last pass, in one snapshot,
    /// and count again the runs of one in `roll_every` backfills (a different slice each
    /// pass, so every copy is counted again every `roll_every` passes: this heals what the
    /// change signals cannot see). Returns how many backfills had their run counts updated
    /// for a change (the rolling recount's are not counted).
    pub(super) fn refresh(
        &mut self,
        pass: &mut Pass<'_>,
        roll_every: usize,
    ) -> Result<usize, DbError> {
        pass.snapshot(|pass| self.refresh_in(pass, roll_every))
    }

    fn refresh_in(&mut self, pass: &mut Pass<'_>, roll_every: usize) -> Result<usize, DbError> {
        // No row written since the stamps were last read: only the runs may have changed.
        let seq = pass.change_seq()?;
        if change::may_skip(self.seq, seq, self.stamps_skipped, STAMPS_EVERY) {
            self.stamps_skipped += 1;
            // Only this leader's own last write: its rows are read again by id.
            let ids: Vec<String> = std::mem::take(&mut self.reread).into_iter().collect();
            for id in &ids {
                self.remove(id);
            }
            for (row, v) in pass.rows_of(Some(&ids))? {
                self.insert(row, v);
            }
            let dropped = ids.iter().any(|id| !self.versions.contains_key(id));
            return self.refresh_runs(pass, BTreeMap::new(), dropped, Some(roll_every));
        }
        self.seq = seq;
        self.stamps_skipped = 0;
        self.reread.clear();
        // Rows: drop those no longer unfinished, read again those whose stamp changed.
        let versions = pass.versions()?;
        let gone: Vec<String> = self
            .versions
            .keys()
            .filter(|id| !versions.contains_key(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.remove(id);
        }
        let mut stale: Vec<String> = versions
            .into_iter()
            .filter(|(id, v)| self.versions.get(id).is_none_or(|(kept, _)| kept != v))
            .map(|(id, _)| id)
            .collect();
        stale.sort_unstable();
        let updates: BTreeMap<String, Update> = stale
            .iter()
            .filter(|id| !self.versions.contains_key(*id))
            .map(|id| (id.clone(), Update::Recount))
            .collect();
        for id in &stale {
            self.remove(id);
        }
        for (row, v) in pass.rows_of(Some(&stale))? {
            self.insert(row, v);
        }
        let dropped = !gone.is_empty() || stale.iter().any(|id| !self.versions.contains_key(id));
        self.refresh_runs(pass, updates, dropped, Some(roll_every))
    }

    /// The runs part of a refresh: `updates` holds the backfills already known to need
    /// counting again; `dropped` says rows left the cache. With `roll_every`, one slice of
    /// the backfills is counted again too.
    fn refresh_runs(
        &mut self,
        pass: &mut Pass<'_>,
        mut updates: BTreeMap<String, Update>,
        dropped: bool,
        roll_every: Option<usize>,
    ) -> Result<usize, DbError> {
        // Runs: those new since the last snapshot (above the floor, not seen then), and the
        // changes of the copies' queued/running runs.
        let added = pass.runs_added(self.run_floor)?;
        let top = added.keys().copied().fold(self.run_seen, i64::max);
        let fresh: HashMap<i64, &str> = added
            .iter()
            .filter(|(id, _)| !self.known.contains(*id))
            .map(|(id, dag)| (*id, dag.as_str()))
            .collect();
        let mut active = pass.active_runs()?;
        active.retain(|id, _| self.versions.contains_key(id));
        // The copies whose queued/running runs differ from the last pass's (computed once:
        // the counts below and the kept cache's dirty set both need them).
        let mut touched: BTreeSet<String> = BTreeSet::new();
        touched.extend(
            active
                .iter()
                .filter(|(id, runs)| self.active.get(*id) != Some(*runs))
                .map(|(id, _)| id.clone()),
        );
        touched.extend(
            self.active
                .keys()
                .filter(|id| !active.contains_key(*id))
                .cloned(),
        );
        let none = Vec::new();
        for copy in touched.iter().filter(|id| self.versions.contains_key(*id)) {
            let copy = copy.as_str();
            let old = self.active.get(copy).unwrap_or(&none);
            let new = active.get(copy).unwrap_or(&none);
            let update = updates
                .entry(copy.to_owned())
                .or_insert_with(|| Update::Runs(Vec::new()));
            for change in diff(old, new) {
                let step = match change {
                    // Back from running to queued: cleared, its times reset.
                    (_, Some(true), Some(false)) => None,
                    (_, Some(_), Some(_)) | (_, Some(_), None) => Some(change),
                    // New since the last snapshot, or back from a finished state.
                    (id, None, _) => fresh.contains_key(&id).then_some(change),
                };
                match (step, &mut *update) {
                    (Some((id, was, _)), Update::Runs(runs)) => runs.push((id, was.map(state))),
                    (Some(_), Update::Recount) => {}
                    (None, u) => *u = Update::Recount,
                }
            }
        }
        // New runs that finished before this snapshot saw them queued or running.
        for (&id, &copy) in &fresh {
            if !self.versions.contains_key(copy)
                || active
                    .get(copy)
                    .is_some_and(|runs| runs.iter().any(|r| r.id == id))
            {
                continue;
            }
            if let Update::Runs(runs) = updates
                .entry(copy.to_owned())
                .or_insert_with(|| Update::Runs(Vec::new()))
            {
                runs.push((id, None));
            }
        }
        let changed = updates.len();
        self.dirty.extend(updates.keys().cloned());
        // The rolling recount: the next `n / every` rows (rounded up) in pass order, wrapping
        // around, counted again after the updates above are applied.
        let mut rolled: Vec<String> = Vec::new();
        let n = self.rows.len();
        if let Some(every) = roll_every.filter(|e| *e > 0 && n > 0) {
            let take = n.div_ceil(every);
            let start = self.roll % n;
            self.roll = (start + take) % n;
            let keys = self.rows.keys().map(|(_, id)| id);
            rolled.extend(keys.clone().skip(start).chain(keys).take(take).cloned());
        }
        let looked_up: Vec<i64> = updates
            .values()
            .filter_map(|u| match u {
                Update::Runs(runs) => Some(runs.iter().map(|(id, _)| *id)),
                Update::Recount => None,
            })
            .flatten()
            .collect();
        let details = pass.run_details(&looked_up)?;
        let mut recount = Vec::new();
        for (copy, update) in &updates {
            let Update::Runs(runs) = update else {
                recount.push(copy.clone());
                continue;
            };
            if runs.iter().any(|(id, _)| !details.contains_key(id)) {
                // Gone (deleted while active): count again.
                recount.push(copy.clone());
                continue;
            }
            let summary = self.runs.entry(copy.clone()).or_default();
            for (id, was) in runs {
                let Some(d) = details.get(id).filter(|d| d.counted) else {
                    continue;
                };
                if let Some(was) = was {
                    remove_one(summary, *was);
                }
                summary.add(d.state, 1, d.start, d.end);
            }
        }
        for id in rolled {
            if !recount.contains(&id) {
                recount.push(id);
            }
        }
        self.dirty.extend(recount.iter().cloned());
        let counted = pass.run_summaries(Some(&recount))?;
        for id in &recount {
            match counted.get(id) {
                Some(s) => self.runs.insert(id.clone(), *s),
                None => self.runs.remove(id),
            };
        }
        self.dirty.extend(touched);
        self.active = active;
        self.run_floor = self.run_seen;
        self.run_seen = top;
        self.known = added.into_keys().collect();
        if dropped {
            self.prune();
        }
        Ok(changed)
    }

    fn insert(&mut self, row: PassRow, version: RowVersion) {
        self.dirty.insert(row.id.clone());
        self.versions
            .insert(row.id.clone(), (version, row.submitted_at));
        self.rows.insert((row.submitted_at, row.id.clone()), row);
    }

    fn remove(&mut self, id: &str) {
        self.dirty.insert(id.to_owned());
        if let Some((_, at)) = self.versions.remove(id) {
            self.rows.remove(&(at, id.to_owned()));
        }
    }

    /// Forget what belongs to no kept backfill.
    fn prune(&mut self) {
        let rows = &self.versions;
        self.runs.retain(|id, _| rows.contains_key(id));
        self.active.retain(|id, _| rows.contains_key(id));
    }

    /// The unfinished backfills, oldest first.
    pub(super) fn rows(&self) -> Vec<&PassRow> {
        self.rows.values().collect()
    }

    /// Whether `id` is an unfinished backfill.
    pub(super) fn has(&self, id: &str) -> bool {
        self.versions.contains_key(id)
    }

    /// The counted runs of backfill `id`'s copy.
    pub(super) fn runs_of(&self, id: &str) -> RunSummary {
        self.runs.get(id).copied().unwrap_or_default()
    }
}

/// `u`'s content in a comparable order (a debug check of the dirty set).
#[cfg(debug_assertions)]
fn sorted(u: &Unsaved) -> String {
    let mut d = u.delta.clone();
    d.counts.sort_by(|a, b| a.0.cmp(&b.0));
    d.counts_gone.sort();
    d.active.sort();
    d.active_gone.sort_unstable();
    let mut t = u.touched.clone();
    t.sort();
    format!("{:?} {:?}", d, t)
}

fn state(running: bool) -> RunState {
    if running {
        RunState::Running
    } else {
        RunState::Queued
    }
}

/// Take one run in state `was` out of the counts (its start and end stay in the earliest
/// start and latest end: a run that starts or ends only moves those further).
fn remove_one(s: &mut RunSummary, was: RunState) {
    let slot = match was {
        RunState::Queued => &mut s.queued,
        RunState::Running => &mut s.running,
        RunState::Success => &mut s.succeeded,
        RunState::Failed => &mut s.failed,
    };
    *slot = slot.saturating_sub(1);
}

/// The runs whose queued/running state differs between two `id`-ordered lists: (`id`, was
/// running, is running), `None` where absent.
fn diff(old: &[ActiveRun], new: &[ActiveRun]) -> Vec<(i64, Option<bool>, Option<bool>)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.id == n.id => {
                if o.running != n.running {
                    out.push((o.id, Some(o.running), Some(n.running)));
                }
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.id < n.id => {
                out.push((o.id, Some(o.running), None));
                i += 1;
            }
            (Some(o), None) => {
                out.push((o.id, Some(o.running), None));
                i += 1;
            }
            (_, Some(n)) => {
                out.push((n.id, None, Some(n.running)));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, running: bool) -> ActiveRun {
        ActiveRun { id, running }
    }

    #[test]
    fn diff_lists_started_finished_and_new_runs() {
        let old = [run(1, true), run(2, false), run(4, false)];
        let new = [run(2, true), run(3, false), run(4, false)];
        assert_eq!(
            diff(&old, &new),
            vec![
                (1, Some(true), None),
                (2, Some(false), Some(true)),
                (3, None, Some(false)),
            ]
        );
        assert!(diff(&new, &new).is_empty());
        assert_eq!(diff(&[], &[run(5, false)]), vec![(5, None, Some(false))]);
    }

    #[test]
    fn removing_a_run_keeps_times() {
        let mut s = RunSummary::default();
        s.add(RunState::Running, 2, None, None);
        remove_one(&mut s, RunState::Running);
        remove_one(&mut s, RunState::Queued);
        assert_eq!((s.running, s.queued), (1, 0));
    }
}
