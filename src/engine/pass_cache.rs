//! What the leader keeps between reconcile passes, so a pass between two full passes reads
//! only what changed (issue 6): every unfinished backfill's row with its version stamp, every
//! copy's run counts, and the copies' queued and running runs, all as of the last pass's
//! snapshot of the database.
//!
//! The rule (see ARCHITECTURE.md, "Reconcile"): a pass is full — every row read, every copy's
//! runs counted — when nothing is kept: at start, after the metadata DB connection was lost
//! (the cache lives with the connection), after a pass failed, when the leader claim was
//! taken with a new token (another agent may have led meanwhile), after a seed import, and
//! every `FULL_PASS_EVERY` passes. Between full passes a pass reads the version stamps and
//! only the rows whose stamp changed, then compares the copies' queued and running runs with
//! the kept ones and looks up by `id` the runs that started, finished or are new, updating the
//! kept counts with them. A copy's runs are counted again in full when its row is new, or a run
//! went back from running to queued, came back from a finished state (cleared), or vanished
//! (deleted while active). What this cannot see — a finished run deleted, or set to another
//! finished state, with no run of its copy queued or running in between — the next full pass
//! heals.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::metadb::pass::{ActiveRun, Pass, PassRow, RowVersion};
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

    /// Whether this cache may serve a pass of the leader holding `token`.
    pub(super) fn serves(&self, token: i64) -> bool {
        self.token == token
    }

    /// Bring the cache up to date with what changed since the last pass, in one snapshot.
    /// Returns how many backfills had their run counts updated.
    pub(super) fn refresh(&mut self, pass: &mut Pass<'_>) -> Result<usize, DbError> {
        pass.snapshot(|pass| self.refresh_in(pass))
    }

    fn refresh_in(&mut self, pass: &mut Pass<'_>) -> Result<usize, DbError> {
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
        let mut updates: BTreeMap<String, Update> = stale
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
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        touched.extend(
            active
                .iter()
                .filter(|(id, runs)| self.active.get(*id) != Some(*runs))
                .map(|(id, _)| id.as_str()),
        );
        touched.extend(
            self.active
                .keys()
                .filter(|id| !active.contains_key(*id) && self.versions.contains_key(*id))
                .map(String::as_str),
        );
        let none = Vec::new();
        for copy in touched {
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
        let counted = pass.run_summaries(Some(&recount))?;
        for id in &recount {
            match counted.get(id) {
                Some(s) => self.runs.insert(id.clone(), *s),
                None => self.runs.remove(id),
            };
        }
        self.active = active;
        self.run_floor = self.run_seen;
        self.run_seen = top;
        self.known = added.into_keys().collect();
        if dropped {
            self.prune();
        }
        Ok(updates.len())
    }

    fn insert(&mut self, row: PassRow, version: RowVersion) {
        self.versions
            .insert(row.id.clone(), (version, row.submitted_at));
        self.rows.insert((row.submitted_at, row.id.clone()), row);
    }

    fn remove(&mut self, id: &str) {
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
