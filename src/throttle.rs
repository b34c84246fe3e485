//! Throttling: which backfills may run now and why the others wait. Pure: the reconciler
//! gathers one [`Candidate`] per unfinished backfill (from the set-based reads of a pass) and
//! enforces the [`Verdict`]s by pausing and unpausing the copies.
//!
//! Rules, in order:
//! 1. a backfill its user paused, or one with a life-cycle action in flight, is left alone;
//! 2. with `yield_to_scheduled`, a backfill holds while its origin DAG has a queued or running
//!    run of its own (scheduled work first);
//! 3. with `pool_share_percent`, a backfill holds while the backfills' queued and running task
//!    instances in a pool it uses reach that share of the pool's slots;
//! 4. the budgets (`max_running_backfill_runs` over all backfills, `max_running_per_dag` per
//!    origin DAG) count queued + running runs of the copies. A backfill may add up to
//!    `max_active_runs` runs once unpaused, so it is admitted only while its potential fits.
//!    Backfills with runs in flight are never paused (a paused DAG's running run would hold
//!    its slot without finishing); the rest are admitted oldest waiting first, so a backfill
//!    that just had a turn goes after those that waited longer. A turn ends when a pass sees
//!    the backfill without a run in flight; Airflow's scheduler often creates the next run
//!    before that, so under a tight budget turns mostly change when a backfill finishes.
//! 5. no backfill waits forever: a new copy's `max_active_runs` is capped at the smallest
//!    budget ([`cap_max_active_runs`]), and a backfill whose potential still exceeds a budget
//!    (a copy written before the budget was lowered) runs alone when that budget is entirely
//!    free.
//!
//! With a budget set, every new copy is steered (see [`crate::steer`]): backfilld names each of
//! its runs, and the budgets hold per run in the steering step ([`crate::turns`]). Here a
//! steered backfill only goes through rules 1–3 (a hold pauses its idle copy); its live runs
//! count toward the budgets of the catchup copies (written before the budget was set), which
//! keep the pause/unpause rules above. An idle steered copy nothing holds gets
//! [`Verdict::Turn`], not [`Verdict::Go`]: the throttle leaves its pause as it is, and the
//! steering step unpauses it in the transaction that gives it a run (a steered copy registers
//! paused and stays so until then, so Airflow's scheduler never creates a run of it on its own
//! while the budget is full). A steered copy with runs in flight that the throttle paused gets
//! `Go`: its runs are counted already, and a paused DAG's runs would never finish.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::config::ThrottleSection;

/// What the throttle knows about one unfinished backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The backfill id.
    pub id: String,
    /// Its origin DAG.
    pub dag_id: String,
    /// Since when it waits for a turn (fair share: oldest first).
    pub waiting_since: DateTime<Utc>,
    /// Its copy's queued + running runs.
    pub active: u32,
    /// Its dates without a run yet.
    pub pending: u32,
    /// Its copy's `max_active_runs`.
    pub max_active_runs: u32,
    /// Paused by its user, or a life-cycle action in flight: never touched.
    pub hands_off: bool,
    /// Pools where its copy has queued or running task instances.
    pub pools: Vec<String>,
    /// The request's `priority`: among the waiting, higher goes first.
    pub priority: i32,
    /// Steered: the budgets hold in the steering step ([`crate::turns`]), not here.
    pub steered: bool,
}

/// Load outside the backfills that the throttle weighs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Logical date (as shown) of a queued or running run of each origin DAG that has one.
    pub origin_runs: HashMap<String, String>,
    /// Per pool: (slots, backfill task instances, other task instances), queued or running.
    pub pools: HashMap<String, (i64, u32, u32)>,
}

/// The throttle's verdict on one backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not the throttle's business (user paused, action in flight).
    Untouched,
    /// May run: unpause its copy if throttling paused it.
    Go,
    /// A steered backfill nothing holds, idle: may run when the run budgets give it a turn.
    /// Its copy stays as it is (paused by the throttle until then); the steering step
    /// unpauses it with the run it grants ([`crate::steer::decide`]).
    Turn,
    /// Must wait: pause its copy; the reason is shown in its status.
    Hold(String),
}

/// The `max_active_runs` a new backfill's copy is written with under `config`'s run budgets:
/// `asked`, or the smallest budget when `asked` is above it, with the warning for the outcome.
/// A copy wider than a budget could only ever run alone, so it is narrowed instead.
pub fn cap_max_active_runs(config: &ThrottleSection, asked: u32) -> (u32, Option<String>) {
    let budgets = [
        (
            "max_running_backfill_runs",
            config.max_running_backfill_runs,
        ),
        ("max_running_per_dag", config.max_running_per_dag),
    ];
    let Some((name, cap)) = budgets
        .into_iter()
        .filter_map(|(name, max)| max.map(|m| (name, m.max(1))))
        .min_by_key(|&(_, max)| max)
    else {
        return (asked, None);
    };
    if asked <= cap {
        return (asked, None);
    }
    (
        cap,
        Some(format!(
            "max_active_runs {asked} is above the [throttle] budget {name} = {cap}: the copy runs at most {cap} at a time"
        )),
    )
}

/// Whether `potential` more runs do not fit a budget of `max` of which `used` are taken. A budget
/// nobody uses takes any backfill (one wider than it runs alone); a budget of 0 takes none.
fn exceeds(used: u32, potential: u32, max: u32) -> bool {
    (used > 0 || max == 0) && used.saturating_add(potential) > max
}

/// Decide every candidate. Verdicts come back in the candidates' order.
pub fn decide(config: &ThrottleSection, candidates: &[Candidate], load: &Load) -> Vec<Verdict> {
    let mut verdicts: Vec<Option<Verdict>> = vec![None; candidates.len()];
    for (i, c) in candidates.iter().enumerate() {
        if c.hands_off {
            verdicts[i] = Some(Verdict::Untouched);
        } else if config.yield_to_scheduled && c.active == 0 {
            if let Some(date) = load.origin_runs.get(&c.dag_id) {
                verdicts[i] = Some(Verdict::Hold(format!(
                    "yielding to scheduled run of {} {date}",
                    c.dag_id
                )));
            }
        }
        if verdicts[i].is_some() || c.active > 0 {
            continue;
        }
        if let Some(share) = config.pool_share_percent {
            for pool in &c.pools {
                let Some(&(slots, ours, others)) = load.pools.get(pool) else {
                    continue;
                };
                if slots < 0 {
                    continue;
                }
                let limit = (slots.saturating_mul(i64::from(share)) / 100).max(1);
                if i64::from(ours) >= limit {
                    verdicts[i] = Some(Verdict::Hold(format!(
                        "throttled: pool {pool} share {ours}/{limit}"
                    )));
                    break;
                }
                if config.yield_to_scheduled && i64::from(others) >= slots {
                    verdicts[i] = Some(Verdict::Hold(format!(
                        "yielding to scheduled tasks filling pool {pool} ({others}/{slots})"
                    )));
                    break;
                }
            }
        }
    }
    // Admission order: backfills with runs in flight (they keep their slots), then the
    // others by priority, higher first, and among equals oldest waiting first.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| {
        let c = &candidates[i];
        (
            c.active == 0,
            std::cmp::Reverse(c.priority),
            c.waiting_since,
            c.id.clone(),
        )
    });
    let mut used: u32 = 0;
    let mut used_per_dag: BTreeMap<&str, u32> = BTreeMap::new();
    for i in order {
        let c = &candidates[i];
        let potential = c.max_active_runs.min(c.active.saturating_add(c.pending));
        let potential = potential.max(c.active);
        let held = verdicts[i].is_some();
        if held && c.active == 0 {
            continue;
        }
        let dag_used = used_per_dag.get(c.dag_id.as_str()).copied().unwrap_or(0);
        if c.steered {
            used = used.saturating_add(c.active);
            used_per_dag.insert(&c.dag_id, dag_used.saturating_add(c.active));
            if verdicts[i].is_none() {
                verdicts[i] = Some(if c.active > 0 {
                    Verdict::Go
                } else {
                    Verdict::Turn
                });
            }
            continue;
        }
        // A budget already used by others holds a backfill whose potential does not fit; an
        // unused budget never does, or a backfill wider than the budget would wait forever.
        let over_global = config
            .max_running_backfill_runs
            .filter(|&max| c.active == 0 && exceeds(used, potential, max));
        let over_dag = config
            .max_running_per_dag
            .filter(|&max| c.active == 0 && exceeds(dag_used, potential, max));
        if let Some(max) = over_global {
            verdicts[i] = Some(Verdict::Hold(format!(
                "throttled: global budget {used}/{max}"
            )));
            continue;
        }
        if let Some(max) = over_dag {
            verdicts[i] = Some(Verdict::Hold(format!(
                "throttled: budget of {} {dag_used}/{max}",
                c.dag_id
            )));
            continue;
        }
        used = used.saturating_add(potential);
        used_per_dag.insert(&c.dag_id, dag_used.saturating_add(potential));
        if verdicts[i].is_none() {
            verdicts[i] = Some(Verdict::Go);
        }
    }
    verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Verdict::Go))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        crate::testutil::utc(2024, 1, 1, 0, minute)
    }

    fn cand(id: &str, dag: &str, waiting: u32, active: u32, pending: u32) -> Candidate {
        Candidate {
            id: id.into(),
            dag_id: dag.into(),
            waiting_since: at(waiting),
            active,
            pending,
            max_active_runs: 1,
            hands_off: false,
            pools: vec!["default_pool".into()],
            priority: 0,
            steered: false,
        }
    }

    /// An idle backfill asking `max_active_runs = 3` with 6 dates to go.
    fn wide(id: &str, dag: &str, waiting: u32) -> Candidate {
        Candidate {
            max_active_runs: 3,
            ..cand(id, dag, waiting, 0, 6)
        }
    }

    #[test]
    fn max_active_runs_capped_at_the_smallest_budget() {
        let cases = [
            (budget(None, None), 5, 5, false),
            (budget(Some(2), None), 3, 2, true),
            (budget(Some(4), Some(2)), 3, 2, true),
            (budget(Some(4), Some(8)), 3, 3, false),
            (budget(Some(0), None), 3, 1, true),
        ];
        for (config, asked, want, warned) in cases {
            let (got, warning) = cap_max_active_runs(&config, asked);
            assert_eq!(
                (got, warning.is_some()),
                (want, warned),
                "{config:?} {asked}"
            );
        }
        let (_, warning) = cap_max_active_runs(&budget(Some(4), Some(2)), 3);
        assert_eq!(
            warning.as_deref(),
            Some("max_active_runs 3 is above the [throttle] budget max_running_per_dag = 2: the copy runs at most 2 at a time")
        );
    }

    fn budget(global: Option<u32>, per_dag: Option<u32>) -> ThrottleSection {
        ThrottleSection {
            max_running_backfill_runs: global,
            max_running_per_dag: per_dag,
            pool_share_percent: None,
            yield_to_scheduled: true,
        }
    }

    fn go() -> Verdict {
        Verdict::Go
    }

    fn hold(s: &str) -> Verdict {
        Verdict::Hold(s.into())
    }

    #[test]
    fn table() {
        type Case = (
            &'static str,
            ThrottleSection,
            Vec<Candidate>,
            Load,
            Vec<Verdict>,
        );
        let scheduled = Load {
            origin_runs: [("sales".to_owned(), "2024-06-01".to_owned())].into(),
            ..Load::default()
        };
        let mut user_paused = cand("c", "sales", 0, 0, 5);
        user_paused.hands_off = true;
        let mut urgent = cand("c", "sales", 2, 0, 5);
        urgent.priority = 5;
        let steered_busy = Candidate {
            steered: true,
            max_active_runs: 3,
            ..cand("s", "orders", 0, 2, 5)
        };
        let steered_idle = Candidate {
            steered: true,
            ..wide("t", "sales", 1)
        };
        let cases: Vec<Case> = vec![
            (
                "no limits: everything goes",
                budget(None, None),
                vec![cand("a", "sales", 0, 0, 5), cand("b", "sales", 1, 0, 5)],
                Load::default(),
                vec![go(), go()],
            ),
            (
                "global budget 2 of 3 idle backfills: the two oldest go",
                budget(Some(2), None),
                vec![
                    cand("a", "sales", 0, 0, 5),
                    cand("b", "orders", 1, 0, 5),
                    cand("c", "sales", 2, 0, 5),
                ],
                Load::default(),
                vec![go(), go(), hold("throttled: global budget 2/2")],
            ),
            (
                "priority goes before age among the waiting",
                budget(Some(2), None),
                vec![
                    cand("a", "sales", 0, 0, 5),
                    cand("b", "orders", 1, 0, 5),
                    urgent,
                ],
                Load::default(),
                vec![go(), hold("throttled: global budget 2/2"), go()],
            ),
            (
                "runs in flight keep their slot; a backfill that just had a turn waits behind older waiters",
                budget(Some(2), None),
                vec![
                    cand("a", "sales", 9, 0, 5),
                    cand("b", "orders", 1, 1, 5),
                    cand("c", "sales", 2, 0, 5),
                ],
                Load::default(),
                vec![hold("throttled: global budget 2/2"), go(), go()],
            ),
            (
                "a backfill wider than the free budget runs alone, never waits forever",
                budget(Some(2), None),
                vec![wide("a", "sales", 0), wide("b", "orders", 1), wide("c", "sales", 2)],
                Load::default(),
                vec![
                    go(),
                    hold("throttled: global budget 3/2"),
                    hold("throttled: global budget 3/2"),
                ],
            ),
            (
                "a backfill wider than a free per-DAG budget runs alone in its DAG",
                budget(None, Some(2)),
                vec![wide("a", "sales", 0), wide("b", "orders", 1), wide("c", "sales", 2)],
                Load::default(),
                vec![go(), go(), hold("throttled: budget of sales 3/2")],
            ),
            (
                "steered backfills: one with runs goes, an idle one waits for its turn from the \
                 steering (which holds the budget); their live runs count for catchup copies",
                budget(Some(2), None),
                vec![
                    steered_busy.clone(),
                    steered_idle.clone(),
                    cand("c", "sales", 2, 0, 5),
                ],
                Load::default(),
                vec![go(), Verdict::Turn, hold("throttled: global budget 2/2")],
            ),
            (
                "a steered idle backfill still yields to a scheduled run; one its user paused \
                 is left alone",
                budget(Some(2), None),
                vec![
                    steered_idle.clone(),
                    Candidate {
                        hands_off: true,
                        ..steered_idle
                    },
                    steered_busy,
                ],
                scheduled.clone(),
                vec![
                    hold("yielding to scheduled run of sales 2024-06-01"),
                    Verdict::Untouched,
                    go(),
                ],
            ),
            (
                "a budget of 0 holds everything",
                budget(Some(0), None),
                vec![cand("a", "sales", 0, 0, 5)],
                Load::default(),
                vec![hold("throttled: global budget 0/0")],
            ),
            (
                "per-DAG budget",
                budget(None, Some(1)),
                vec![
                    cand("a", "sales", 0, 0, 5),
                    cand("b", "orders", 1, 0, 5),
                    cand("c", "sales", 2, 0, 5),
                ],
                Load::default(),
                vec![go(), go(), hold("throttled: budget of sales 1/1")],
            ),
            (
                "finished dates need no slot",
                budget(Some(1), None),
                vec![cand("a", "sales", 0, 0, 0), cand("b", "orders", 1, 0, 3)],
                Load::default(),
                vec![go(), go()],
            ),
            (
                "yield to a scheduled run of the origin DAG; others use the budget",
                budget(Some(1), None),
                vec![cand("a", "sales", 0, 0, 5), cand("b", "orders", 1, 0, 5)],
                scheduled.clone(),
                vec![hold("yielding to scheduled run of sales 2024-06-01"), go()],
            ),
            (
                "yielding off",
                ThrottleSection {
                    yield_to_scheduled: false,
                    ..budget(None, None)
                },
                vec![cand("a", "sales", 0, 0, 5)],
                scheduled,
                vec![go()],
            ),
            (
                "a user-paused backfill is never touched",
                budget(Some(0), None),
                vec![user_paused],
                Load::default(),
                vec![Verdict::Untouched],
            ),
            (
                "pool share: backfills already use half of a 4-slot pool",
                ThrottleSection {
                    pool_share_percent: Some(50),
                    ..budget(None, None)
                },
                vec![cand("a", "sales", 0, 0, 5)],
                Load {
                    pools: [("default_pool".to_owned(), (4, 2, 0))].into(),
                    ..Load::default()
                },
                vec![hold("throttled: pool default_pool share 2/2")],
            ),
            (
                "pool saturated by scheduled tasks",
                ThrottleSection {
                    pool_share_percent: Some(50),
                    ..budget(None, None)
                },
                vec![cand("a", "sales", 0, 0, 5)],
                Load {
                    pools: [("default_pool".to_owned(), (4, 0, 4))].into(),
                    ..Load::default()
                },
                vec![hold(
                    "yielding to scheduled tasks filling pool default_pool (4/4)",
                )],
            ),
        ];
        for (name, config, cands, load, want) in cases {
            assert_eq!(decide(&config, &cands, &load), want, "{name}");
        }
    }

    #[test]
    fn turns_rotate_under_a_short_budget() {
        // Three idle backfills, budget 1: whoever waited longest goes; after its turn it
        // waits from then on, so each gets a turn before anyone gets a second one.
        let config = budget(Some(1), None);
        let mut waiting = [at(0), at(1), at(2)];
        let mut turns = Vec::new();
        for round in 0..6u32 {
            let cands: Vec<Candidate> = ["a", "b", "c"]
                .iter()
                .zip(waiting.iter())
                .map(|(id, w)| Candidate {
                    waiting_since: *w,
                    ..cand(id, id, 0, 0, 5)
                })
                .collect();
            let v = decide(&config, &cands, &Load::default());
            let i = v.iter().position(|v| *v == Verdict::Go).unwrap_or(99);
            turns.push(i);
            if let Some(w) = waiting.get_mut(i) {
                *w = at(10 + round);
            }
        }
        assert_eq!(turns, vec![0, 1, 2, 0, 1, 2]);
    }
}
