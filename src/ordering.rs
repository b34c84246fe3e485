//! Ordering across backfills (`after = ["<backfill id>", ...]`): the pure decision whether a
//! backfill's DAG copy may be written, must wait, or the backfill fails because a prerequisite
//! did.
//!
//! A request may name only backfills that exist when it is decided, and a backfill's id is
//! chosen when it is accepted, so every `after` edge points from a newer backfill to an older
//! one: the graph has no cycle, and no backfill can name itself. Nothing here does I/O.

use crate::state::BackfillState;

/// Most prerequisites one request may name.
pub const AFTER_MAX: usize = 20;

/// What the metadata DB shows of one prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prerequisite {
    /// Its backfill id.
    pub id: String,
    /// Its state; `None` when no such backfill exists.
    pub state: Option<BackfillState>,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// Whether a waiting backfill may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every prerequisite succeeded: write the copy.
    Go,
    /// Some prerequisite has not finished: stay `submitted`, with this reason.
    Wait(String),
    /// A prerequisite failed, was cancelled or deleted before it succeeded: fail with this
    /// reason.
    Fail(String),
}

/// Why `p` can never succeed any more, if it cannot. A backfill deleted after it succeeded did
/// its work and counts as succeeded.
pub fn broken(p: &Prerequisite) -> Option<String> {
    let why = |r: &Option<String>| {
        r.as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    };
    match p.state {
        None => Some(format!("prerequisite {} does not exist", p.id)),
        Some(BackfillState::Success) => None,
        Some(BackfillState::Failed) => {
            Some(format!("prerequisite {} failed{}", p.id, why(&p.reason)))
        }
        Some(BackfillState::Cancelled) => Some(format!(
            "prerequisite {} was cancelled{}",
            p.id,
            why(&p.reason)
        )),
        Some(_) if p.deleted => Some(format!(
            "prerequisite {} was deleted before it finished",
            p.id
        )),
        Some(_) => None,
    }
}

/// The gate of a backfill over its prerequisites (in the order the request named them): the
/// first broken one fails it; otherwise it waits for every unfinished one; otherwise it goes.
pub fn gate(prerequisites: &[Prerequisite]) -> Gate {
    if let Some(why) = prerequisites.iter().find_map(broken) {
        return Gate::Fail(why);
    }
    let waiting: Vec<String> = prerequisites
        .iter()
        .filter_map(|p| match p.state {
            Some(BackfillState::Success) | None => None,
            Some(s) => Some(format!("{} ({s})", p.id)),
        })
        .collect();
    if waiting.is_empty() {
        Gate::Go
    } else {
        Gate::Wait(format!("waiting for {}", waiting.join(", ")))
    }
}

/// Check the `after` list of a request (no database): at most [`AFTER_MAX`] ids, each a valid
/// backfill id, none twice. Returns the ids in the order given.
pub fn check_list(ids: &[String]) -> Result<Vec<String>, String> {
    if ids.len() > AFTER_MAX {
        return Err(format!("after names more than {AFTER_MAX} backfills"));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let valid = !id.is_empty()
            && id.len() <= crate::request::AIRFLOW_ID_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(format!(
                "after: {id:?} is not a backfill id (letters, digits, '_', '.' and '-')"
            ));
        }
        if out.contains(id) {
            return Err(format!("after names {id:?} twice"));
        }
        out.push(id.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackfillState as S;

    fn p(id: &str, state: Option<S>, deleted: bool) -> Prerequisite {
        Prerequisite {
            id: id.into(),
            state,
            reason: match state {
                Some(S::Failed) => Some("1 of 1 logical dates failed".into()),
                Some(S::Cancelled) => Some("withdrawn by bob".into()),
                _ => None,
            },
            deleted,
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(Vec<Prerequisite>, Gate)> = vec![
            (vec![], Gate::Go),
            (vec![p("a", Some(S::Success), false)], Gate::Go),
            (vec![p("a", Some(S::Success), true)], Gate::Go),
            (
                vec![p("a", Some(S::Running), false)],
                Gate::Wait("waiting for a (running)".into()),
            ),
            (
                vec![
                    p("a", Some(S::Success), false),
                    p("b", Some(S::Submitted), false),
                    p("c", Some(S::Paused), false),
                ],
                Gate::Wait("waiting for b (submitted), c (paused)".into()),
            ),
            (
                vec![
                    p("a", Some(S::Running), false),
                    p("b", Some(S::Failed), false),
                ],
                Gate::Fail("prerequisite b failed: 1 of 1 logical dates failed".into()),
            ),
            (
                vec![p("a", Some(S::Cancelled), false)],
                Gate::Fail("prerequisite a was cancelled: withdrawn by bob".into()),
            ),
            (
                vec![p("a", Some(S::Queued), true)],
                Gate::Fail("prerequisite a was deleted before it finished".into()),
            ),
            (
                vec![p("a", None, false)],
                Gate::Fail("prerequisite a does not exist".into()),
            ),
        ];
        for (prereqs, want) in cases {
            assert_eq!(gate(&prereqs), want, "{prereqs:?}");
        }
    }

    #[test]
    fn lists_are_checked() {
        let ok = check_list(&["a_backfill_1".into(), "b.2-x".into()]);
        assert_eq!(ok.map(|v| v.len()), Ok(2));
        for bad in [
            vec!["".to_owned()],
            vec!["../x".to_owned()],
            vec!["a".to_owned(), "a".to_owned()],
            (0..=AFTER_MAX).map(|i| format!("b{i}")).collect(),
        ] {
            assert!(check_list(&bad).is_err(), "{bad:?}");
        }
    }
}
