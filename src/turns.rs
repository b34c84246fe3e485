//! Run budgets at run granularity: how many new runs each steered backfill may be given now.
//! Pure: the leader's steering step (`engine::steering`) gathers one [`Steered`] per steered
//! copy that may get a run and the live runs of every copy, and names the next date of each
//! backfill this decision gives a run (see [`crate::steer`]).
//!
//! Rules:
//! 1. the budgets (`max_running_backfill_runs` over all backfills, `max_running_per_dag` per
//!    origin DAG) count the live (queued + running) runs of every copy, catchup copies
//!    included, plus the runs named and not created yet; they are never exceeded;
//! 2. a backfill never gets more than its `max_active_runs` live runs, nor more runs than it
//!    has dates without a run, nor more than `per_copy` at once (steering names one date per
//!    copy at a time), and nothing while a run of its copy is queued (the order rule of
//!    [`crate::steer`]) — unless backfilld creates its runs itself (`batch`: a template run
//!    exists), when it may take every slot its room allows at once;
//! 3. free slots are handed out in turns: higher `priority` first; among equals, one run per
//!    backfill per round, the one whose last run was named longest ago first, so backfills
//!    alternate instead of one finishing before another starts;
//! 4. no slot stays free while a backfill may take it: a backfill asking more than a budget
//!    runs with at most the budget, and one that gets nothing says which budget is full.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// One steered backfill that may get a run (registered, unpaused, held by nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// The backfill id (its copy's `dag_id`).
    pub id: String,
    /// Its origin DAG.
    pub dag_id: String,
    /// Its copy's queued runs, counting a named run the scheduler has not created yet.
    pub queued: u32,
    /// Its copy's running runs.
    pub running: u32,
    /// Its dates without a run yet.
    pub pending: u32,
    /// Its copy's `max_active_runs`.
    pub max_active_runs: u32,
    /// The request's `priority` (higher first).
    pub priority: i32,
    /// When its last run was named (or it was submitted): longest ago first among equals.
    pub last_turn: DateTime<Utc>,
    /// Whether backfilld creates its runs itself (see [`crate::steer::decide`]): it may then
    /// take several runs at once, queued runs or not.
    pub batch: bool,
    /// Runs it may keep queued beyond `max_active_runs` ([`crate::steer::queue_ahead`]; 0
    /// under a run budget).
    pub ahead: u32,
}

/// The run budgets (`[throttle]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Most live runs of all backfill copies together.
    pub global: Option<u32>,
    /// Most live backfill runs per origin DAG.
    pub per_dag: Option<u32>,
}

/// Live runs of every backfill copy (steered or not), as the budgets count them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// All copies together.
    pub total: u32,
    /// By origin DAG.
    pub per_dag: HashMap<String, u32>,
}

/// What one steered backfill gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// New runs it may be given now.
    pub runs: u32,
    /// Why it gets none although it could take one: the budget that is full, as
    /// "waiting for a turn: 2/2 backfill runs in use".
    pub waiting: Option<String>,
}

/// How many runs `b` could take now, before budgets.
fn room(b: &Steered, per_copy: u32) -> u32 {
    if b.queued > 0 && !b.batch {
        return 0;
    }
    let live = b.queued.saturating_add(b.running);
    let room = b
        .max_active_runs
        .max(1)
        .saturating_add(if b.batch { b.ahead } else { 0 })
        .saturating_sub(live)
        .min(b.pending);
    if b.batch {
        room
    } else {
        room.min(per_copy)
    }
}

/// Decide every steered backfill; grants come back in `backfills`' order. `live` counts every
/// copy's live runs, those of `backfills` included.
pub fn grant(budgets: Budgets, live: &Live, backfills: &[Steered], per_copy: u32) -> Vec<Grant> {
    let mut given = vec![0u32; backfills.len()];
    let rooms: Vec<u32> = backfills.iter().map(|b| room(b, per_copy)).collect();
    let mut used = live.total;
    let mut used_per_dag = live.per_dag.clone();
    let mut order: Vec<usize> = (0..backfills.len()).filter(|&i| rooms[i] > 0).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&backfills[a], &backfills[b]);
        y.priority
            .cmp(&x.priority)
            .then(x.last_turn.cmp(&y.last_turn))
            .then(x.id.cmp(&y.id))
    });
    // Priority groups one after the other; within a group, rounds of one run each.
    let mut start = 0;
    while start < order.len() {
        let priority = backfills[order[start]].priority;
        let end = order[start..]
            .iter()
            .position(|&i| backfills[i].priority != priority)
            .map_or(order.len(), |n| start + n);
        loop {
            let mut any = false;
            for &i in &order[start..end] {
                let b = &backfills[i];
                if given[i] >= rooms[i] {
                    continue;
                }
                if budgets.global.is_some_and(|max| used >= max) {
                    continue;
                }
                let dag_used = used_per_dag.get(&b.dag_id).copied().unwrap_or(0);
                if budgets.per_dag.is_some_and(|max| dag_used >= max) {
                    continue;
                }
                given[i] += 1;
                used = used.saturating_add(1);
                used_per_dag.insert(b.dag_id.clone(), dag_used.saturating_add(1));
                any = true;
            }
            if !any {
                break;
            }
        }
        start = end;
    }
    backfills
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let waiting = (given[i] == 0 && rooms[i] > 0).then(|| {
                match budgets.global.filter(|&max| used >= max) {
                    Some(max) => format!("waiting for a turn: {used}/{max} backfill runs in use"),
                    None => {
                        let dag_used = used_per_dag.get(&b.dag_id).copied().unwrap_or(0);
                        let max = budgets.per_dag.unwrap_or(0);
                        format!(
                            "waiting for a turn: {dag_used}/{max} runs of {} in use",
                            b.dag_id
                        )
                    }
                }
            });
            Grant {
                runs: given[i],
                waiting,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        crate::testutil::utc(2024, 1, 1, 0, minute)
    }

    fn b(id: &str, dag: &str, turn: u32, running: u32, pending: u32) -> Steered {
        Steered {
            id: id.into(),
            dag_id: dag.into(),
            queued: 0,
            running,
            pending,
            max_active_runs: 3,
            priority: 0,
            last_turn: at(turn),
            batch: false,
            ahead: 0,
        }
    }

    fn budgets(global: Option<u32>, per_dag: Option<u32>) -> Budgets {
        Budgets { global, per_dag }
    }

    /// The live counts of `backfills` plus `extra` runs of catchup copies of `dag`.
    fn live_of(backfills: &[Steered], extra: &[(&str, u32)]) -> Live {
        let mut live = Live::default();
        for s in backfills {
            let n = s.queued + s.running;
            live.total += n;
            *live.per_dag.entry(s.dag_id.clone()).or_default() += n;
        }
        for (dag, n) in extra {
            live.total += n;
            *live.per_dag.entry((*dag).to_owned()).or_default() += n;
        }
        live
    }

    fn give(n: u32) -> Grant {
        Grant {
            runs: n,
            waiting: None,
        }
    }

    fn wait(why: &str) -> Grant {
        Grant {
            runs: 0,
            waiting: Some(why.into()),
        }
    }

    #[test]
    fn table() {
        type Case = (
            &'static str,
            Budgets,
            Vec<Steered>,
            Vec<(&'static str, u32)>,
            u32,
            Vec<Grant>,
        );
        let mut queued = b("a", "sales", 0, 0, 5);
        queued.queued = 1;
        let mut urgent = b("c", "sales", 9, 0, 5);
        urgent.priority = 5;
        let batch = Steered {
            queued: 1,
            max_active_runs: 5,
            batch: true,
            ..b("a", "sales", 0, 0, 5)
        };
        let mut narrow = b("a", "sales", 0, 1, 5);
        narrow.max_active_runs = 1;
        let cases: Vec<Case> = vec![
            (
                "no budget: every backfill takes one now",
                budgets(None, None),
                vec![b("a", "sales", 0, 0, 5), b("b", "orders", 1, 2, 5)],
                vec![],
                1,
                vec![give(1), give(1)],
            ),
            (
                "budget 2, three idle backfills: the two waiting longest go, the third says why",
                budgets(Some(2), None),
                vec![
                    b("a", "sales", 2, 0, 3),
                    b("b", "sales", 0, 0, 3),
                    b("c", "sales", 1, 0, 3),
                ],
                vec![],
                1,
                vec![
                    wait("waiting for a turn: 2/2 backfill runs in use"),
                    give(1),
                    give(1),
                ],
            ),
            (
                "a freed slot goes to the one whose last run was named longest ago",
                budgets(Some(2), None),
                vec![
                    b("a", "sales", 5, 1, 2),
                    b("b", "sales", 6, 0, 2),
                    b("c", "sales", 1, 0, 2),
                ],
                vec![],
                1,
                vec![
                    wait("waiting for a turn: 2/2 backfill runs in use"),
                    wait("waiting for a turn: 2/2 backfill runs in use"),
                    give(1),
                ],
            ),
            (
                "turns in rounds: with room for several at once, one each before a second",
                budgets(Some(4), None),
                vec![
                    b("a", "sales", 0, 0, 9),
                    b("b", "orders", 1, 0, 9),
                    b("c", "misc", 2, 0, 9),
                ],
                vec![],
                3,
                vec![give(2), give(1), give(1)],
            ),
            (
                "a request above the budget runs with at most the budget, never waits",
                budgets(Some(2), None),
                vec![Steered {
                    max_active_runs: 10,
                    ..b("a", "sales", 0, 0, 20)
                }],
                vec![],
                10,
                vec![give(2)],
            ),
            (
                "runs created by backfilld: a queued run does not hold the copy, several runs \
                 at once in turns within the budget",
                budgets(Some(4), None),
                vec![batch.clone(), b("b", "orders", 5, 0, 3)],
                vec![],
                1,
                vec![give(2), give(1)],
            ),
            (
                "runs created by backfilld without a budget: the room, at most the dates left",
                budgets(None, None),
                vec![Steered {
                    pending: 2,
                    ..batch.clone()
                }],
                vec![],
                1,
                vec![give(2)],
            ),
            (
                "runs created by backfilld queued ahead: max_active_runs plus the queue ahead, \
                 less its live runs",
                budgets(None, None),
                vec![Steered {
                    ahead: 5,
                    pending: 20,
                    ..batch.clone()
                }],
                vec![],
                1,
                vec![give(9)],
            ),
            (
                "queue ahead of a copy that is not batched: no more than one, as before",
                budgets(None, None),
                vec![Steered {
                    ahead: 3,
                    ..b("a", "sales", 0, 1, 5)
                }],
                vec![],
                1,
                vec![give(1)],
            ),
            (
                "a queued run: nothing more now, the slot goes to another backfill",
                budgets(Some(2), None),
                vec![queued, b("b", "orders", 5, 0, 3)],
                vec![],
                1,
                vec![give(0), give(1)],
            ),
            (
                "at its own max_active_runs: no reason to show, the slot goes elsewhere",
                budgets(Some(3), None),
                vec![narrow, b("b", "orders", 5, 0, 3)],
                vec![],
                1,
                vec![give(0), give(1)],
            ),
            (
                "priority first, whatever the wait",
                budgets(Some(1), None),
                vec![b("a", "sales", 0, 0, 3), b("b", "orders", 1, 0, 3), urgent],
                vec![],
                1,
                vec![
                    wait("waiting for a turn: 1/1 backfill runs in use"),
                    wait("waiting for a turn: 1/1 backfill runs in use"),
                    give(1),
                ],
            ),
            (
                "live runs of catchup copies count",
                budgets(Some(2), None),
                vec![b("a", "sales", 0, 0, 3)],
                vec![("sales", 2)],
                1,
                vec![wait("waiting for a turn: 2/2 backfill runs in use")],
            ),
            (
                "per-DAG budget: another DAG's backfill takes the slot (a backfill with a run says why it gets no second)",
                budgets(Some(4), Some(1)),
                vec![
                    b("a", "sales", 0, 1, 3),
                    b("b", "sales", 1, 0, 3),
                    b("c", "orders", 2, 0, 3),
                ],
                vec![],
                1,
                vec![
                    wait("waiting for a turn: 1/1 runs of sales in use"),
                    wait("waiting for a turn: 1/1 runs of sales in use"),
                    give(1),
                ],
            ),
            (
                "a budget of 0 gives nothing",
                budgets(Some(0), None),
                vec![b("a", "sales", 0, 0, 3)],
                vec![],
                1,
                vec![wait("waiting for a turn: 0/0 backfill runs in use")],
            ),
            (
                "all dates have runs: nothing to give, nothing to say",
                budgets(Some(2), None),
                vec![b("a", "sales", 0, 1, 0)],
                vec![],
                1,
                vec![give(0)],
            ),
        ];
        for (name, budgets, backfills, extra, per_copy, want) in cases {
            let live = live_of(&backfills, &extra);
            assert_eq!(grant(budgets, &live, &backfills, per_copy), want, "{name}");
        }
    }

    /// Budget 2, three backfills of `max_active_runs` 3 and 3 dates each, one run named per
    /// copy at a time and each run finishing a step after it started: every backfill gets a
    /// run before any finishes all its dates, never more than 2 live, and all dates run.
    #[test]
    fn turns_alternate_and_nothing_starves() {
        let budgets = budgets(Some(2), None);
        let mut all: Vec<Steered> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| b(id, "sales", u32::try_from(i).unwrap_or(0), 0, 3))
            .collect();
        let mut first_run: Vec<Option<u32>> = vec![None; 3];
        let mut finished: Vec<Option<u32>> = vec![None; 3];
        for step in 1..=40u32 {
            // The runs of the last step finish; the named ones start.
            for s in &mut all {
                s.running = s.queued;
                s.queued = 0;
            }
            let live = live_of(&all, &[]);
            assert!(live.total <= 2, "step {step}: {} live", live.total);
            let grants = grant(budgets, &live, &all, 1);
            for (i, (s, g)) in all.iter_mut().zip(&grants).enumerate() {
                if s.running > 0 && s.pending == 0 && finished[i].is_none() {
                    finished[i] = Some(step);
                }
                s.running = 0;
                if g.runs > 0 {
                    s.queued = g.runs;
                    s.pending -= g.runs;
                    s.last_turn = at(10 + step);
                    first_run[i].get_or_insert(step);
                }
            }
        }
        assert!(all.iter().all(|s| s.pending == 0));
        let last_first = first_run.iter().flatten().max().copied();
        let first_done = finished.iter().flatten().min().copied();
        assert!(last_first < first_done, "{first_run:?} {finished:?}");
    }
}
