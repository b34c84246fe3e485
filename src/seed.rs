//! Adopting a deployment of the seed plugin (LinkedIn's `li-airflow-backfill-plugin`): how one
//! row of its `custom_backfill` table becomes a backfilld backfill. Pure: the engine reads the
//! row and the facts about its copy (`metadb::seed`, `metadb::airflow`, the file system) and
//! writes what [`plan`] decides.
//!
//! What the seed stores, and how it maps:
//! - `backfill_dag_id` is both the seed's id and its copy's DAG id (`<dag>_backfill_<UTC
//!   stamp>`, the convention backfilld uses too), so the imported backfill keeps it as its id
//!   and backfilld's reconcile finds the seed's copy under it: no new copy is written.
//! - `state` is an upper-case name (`SUBMITTED`, `QUEUED`, `RUNNING`, `PAUSED`, `SUCCESS`,
//!   `FAILED`; a native enum type on PostgreSQL) and `deleted` a flag. The seed has no
//!   cancelled state: a cancel before the copy existed sets `deleted` on a `SUBMITTED` row
//!   (imported as `cancelled`), a cancel after it fails the runs (the seed then says `FAILED`).
//! - `logical_dates` (JSON list) lacks the first date of every range: the seed tests its date
//!   generator with `any()` and then lists what is left of it. Its own progress counts only
//!   the dates it recorded, so the import keeps those (the range starts at the first recorded
//!   date) and says so in the backfill's `import_note`, with what the copy did on the dates
//!   before it (the seed's copy runs the whole range).
//! - `delete_date` is absolute (submission + `delete_duration_days`); backfilld keeps the
//!   number of days and counts it from the end of the backfill, as its seed API does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reconcile::{Progress, RunObservation, RunState, RunSummary};
use crate::request::fmt_ts;
use crate::state::BackfillState;

/// The seed plugin's table.
pub const SEED_TABLE: &str = "custom_backfill";

/// The DAG ids of the seed plugin's system DAGs (its repository's `dags/backfill_dags/`):
/// they create copies, update states and delete old backfills. While one of them is active and
/// unpaused, an import is refused: it would go on acting on the backfills backfilld took over.
pub const SYSTEM_DAGS: [&str; 4] = [
    "backfill_creation",
    "backfill_deletion",
    "backfill_state_update",
    "backfill_state_update_backlog",
];

/// A state of the seed plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedState {
    /// Accepted; the copy is not written yet.
    Submitted,
    /// The copy was written.
    Queued,
    /// A run of the copy runs.
    Running,
    /// The copy is paused in Airflow.
    Paused,
    /// Every recorded date succeeded.
    Success,
    /// A recorded date failed (or the copy never registered, or it was cancelled).
    Failed,
}

impl SeedState {
    /// Every state.
    pub const ALL: [SeedState; 6] = [
        SeedState::Submitted,
        SeedState::Queued,
        SeedState::Running,
        SeedState::Paused,
        SeedState::Success,
        SeedState::Failed,
    ];

    /// The name the seed stores (SQLAlchemy stores an enum member's name).
    pub fn name(self) -> &'static str {
        match self {
            SeedState::Submitted => "SUBMITTED",
            SeedState::Queued => "QUEUED",
            SeedState::Running => "RUNNING",
            SeedState::Paused => "PAUSED",
            SeedState::Success => "SUCCESS",
            SeedState::Failed => "FAILED",
        }
    }

    /// Parse a stored state (its name; the lower-case value is accepted too).
    pub fn parse(s: &str) -> Option<SeedState> {
        let s = s.trim();
        SeedState::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s))
    }
}

/// One `custom_backfill` row, as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeedRow {
    /// The seed's id, which is its copy's DAG id.
    pub backfill_dag_id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// The stored state name.
    pub state: String,
    /// The user's description.
    pub description: Option<String>,
    /// The requested range's start.
    pub start_date: DateTime<Utc>,
    /// The requested range's end.
    pub end_date: DateTime<Utc>,
    /// The recorded logical dates (a JSON list of ISO 8601 texts).
    pub logical_dates: Option<String>,
    /// The param overrides (a JSON object).
    pub dag_params: Option<String>,
    /// The copy's `max_active_runs`.
    pub max_active_runs: i64,
    /// When the copy was (to be) written.
    pub scheduled_date: Option<DateTime<Utc>>,
    /// When the seed deletes it.
    pub delete_date: Option<DateTime<Utc>>,
    /// The origin DAG's file, relative to the DAGs folder.
    pub relative_fileloc: Option<String>,
    /// The origin source snapshot.
    pub origin_code: Option<String>,
    /// When it was submitted.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The Airflow user who submitted it.
    pub submitted_by: Option<String>,
    /// Last change.
    pub updated_at: Option<DateTime<Utc>>,
    /// Deleted (or cancelled before its copy was written).
    pub deleted: bool,
    /// First run start.
    pub run_start_date: Option<DateTime<Utc>>,
    /// Last run end.
    pub run_end_date: Option<DateTime<Utc>>,
}

/// What the engine found about a seed backfill's id and copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedFacts {
    /// A backfilld backfill (not imported from this row) already has the id.
    pub id_taken: bool,
    /// The copy's file is where backfilld keeps copies (`<dags_folder>/backfill_user_dags/<id>.py`).
    pub copy_file: bool,
    /// Airflow registered the copy's DAG id from a file other than that one (its path).
    pub copy_elsewhere: Option<String>,
    /// The copy's DAG runs Airflow has.
    pub runs: Vec<RunObservation>,
}

/// The backfilld backfill an import creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// Its id: the seed's `backfill_dag_id`, which is the copy's DAG id.
    pub id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// backfilld's state.
    pub state: BackfillState,
    /// Why it is in that state, when that needs saying.
    pub reason: Option<String>,
    /// Kept as deleted (the seed deleted it).
    pub deleted: bool,
    /// When it was deleted (the seed's last update).
    pub deleted_at: Option<DateTime<Utc>>,
    /// First recorded logical date.
    pub start: DateTime<Utc>,
    /// Last recorded logical date.
    pub end: DateTime<Utc>,
    /// The recorded logical dates.
    pub logical_dates: Vec<DateTime<Utc>>,
    /// Param overrides.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Concurrent runs.
    pub max_active_runs: u32,
    /// The description.
    pub description: Option<String>,
    /// The copy is written only from then on (a seed backfill still `SUBMITTED`).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Days after it finishes that it is deleted.
    pub delete_after_days: Option<u32>,
    /// The Airflow user who submitted it to the seed.
    pub submitted_by: String,
    /// When it was submitted to the seed.
    pub submitted_at: DateTime<Utc>,
    /// First run start.
    pub run_start: Option<DateTime<Utc>>,
    /// Last run end.
    pub run_end: Option<DateTime<Utc>>,
    /// Date counts from the copy's runs.
    pub progress: Progress,
    /// The seed's copy exists and backfilld takes it over (else: none, or written by backfilld
    /// when the backfill is due, for one still `SUBMITTED`).
    pub copy: bool,
    /// The origin DAG's file, relative to the DAGs folder.
    pub relative_fileloc: String,
    /// The origin source snapshot.
    pub origin_code: String,
    /// What the import says about it (kept in `import_note`).
    pub note: String,
}

/// One seed backfill in an import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedItem {
    /// The seed's `backfill_dag_id` (the imported backfill's id).
    pub seed_id: String,
    /// The origin DAG.
    pub dag_id: String,
    /// The seed's state as stored, with `deleted` when flagged.
    pub seed_state: String,
    /// backfilld's state for it (absent when it is skipped).
    #[serde(default)]
    pub state: Option<BackfillState>,
    /// The logical dates it keeps.
    #[serde(default)]
    pub dates: Vec<String>,
    /// The note kept with it (the dates the seed did not record, and what its copy did).
    #[serde(default)]
    pub note: Option<String>,
    /// Why it is not imported.
    #[serde(default)]
    pub skipped: Option<String>,
}

/// What `import-seed` did, or with `dry_run` would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Imported (or to import).
    pub imported: Vec<SeedItem>,
    /// Not imported, with the reason.
    pub skipped: Vec<SeedItem>,
    /// Seed ids imported by an earlier run.
    pub already_imported: Vec<String>,
    /// The seed's system DAGs that are active and unpaused (an import is refused while any is).
    pub active_system_dags: Vec<String>,
}

impl SeedRow {
    /// The seed state as stored, with `, deleted` when flagged.
    pub fn state_label(&self) -> String {
        if self.deleted {
            format!("{}, deleted", self.state)
        } else {
            self.state.clone()
        }
    }
}

/// Parse the seed's `logical_dates` (a JSON list of ISO 8601 texts with offsets), sorted.
pub fn parse_dates(text: Option<&str>) -> Result<Vec<DateTime<Utc>>, String> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let texts: Vec<String> =
        serde_json::from_str(text).map_err(|e| format!("logical_dates is not a JSON list: {e}"))?;
    let mut dates = texts
        .iter()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|e| format!("logical date {t:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    dates.sort();
    dates.dedup();
    Ok(dates)
}

/// Whole days from `submitted` to `delete`, rounded (the seed's `delete_duration_days`).
pub fn delete_after_days(
    submitted: Option<DateTime<Utc>>,
    delete: Option<DateTime<Utc>>,
) -> Option<u32> {
    let secs = (delete? - submitted?).num_seconds().max(0);
    u32::try_from((secs + 43_200) / 86_400).ok()
}

fn run_state_name(s: RunState) -> &'static str {
    match s {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Success => "success",
        RunState::Failed => "failed",
    }
}

/// backfilld's state for a seed state (and whether it stays marked deleted).
pub fn map_state(state: SeedState, deleted: bool) -> (BackfillState, bool, Option<String>) {
    match (state, deleted) {
        (SeedState::Submitted, true) => (
            BackfillState::Cancelled,
            false,
            Some("cancelled in the seed plugin before its DAG copy was written".to_owned()),
        ),
        (SeedState::Submitted, false) => (BackfillState::Submitted, false, None),
        (SeedState::Queued, d) => (BackfillState::Queued, d, None),
        (SeedState::Running, d) => (BackfillState::Running, d, None),
        (SeedState::Paused, d) => (BackfillState::Paused, d, None),
        (SeedState::Success, d) => (BackfillState::Success, d, None),
        (SeedState::Failed, d) => (
            BackfillState::Failed,
            d,
            Some("failed in the seed plugin".to_owned()),
        ),
    }
}

/// The note about the dates the seed did not record: the range's start lies before the first
/// recorded date, and the copy (which runs the whole range) may have runs there.
fn dates_note(row: &SeedRow, dates: &[DateTime<Utc>], runs: &[RunObservation]) -> String {
    let Some(&first) = dates.first() else {
        return String::new();
    };
    if row.start_date >= first {
        return String::new();
    }
    let mut before: Vec<&RunObservation> = runs
        .iter()
        .filter(|r| r.logical_date >= row.start_date && r.logical_date < first)
        .collect();
    before.sort_by_key(|r| r.logical_date);
    let ran = if before.is_empty() {
        "its copy has no run before that date".to_owned()
    } else {
        let list: Vec<String> = before
            .iter()
            .map(|r| format!("{} {}", fmt_ts(r.logical_date), run_state_name(r.state)))
            .collect();
        format!("its copy ran {} (not counted)", list.join(", "))
    };
    format!(
        "the seed recorded {} logical date(s) from {}, but the range starts at {}: it did not record the range's first date (a known defect of the plugin); backfilld keeps the recorded dates; {ran}",
        dates.len(),
        fmt_ts(first),
        fmt_ts(row.start_date),
    )
}

/// Decide how one seed backfill is imported, or why it is not.
pub fn plan(row: &SeedRow, facts: &SeedFacts) -> Result<Import, String> {
    let id = &row.backfill_dag_id;
    crate::request::check_backfill_id(id)
        .map_err(|_| format!("its id {id:?} is not a valid backfill id"))?;
    if row.dag_id.trim().is_empty() {
        return Err("it names no origin DAG".to_owned());
    }
    if facts.id_taken {
        return Err(format!(
            "backfilld already has a backfill {id:?} (not imported from the seed)"
        ));
    }
    let seed_state = SeedState::parse(&row.state)
        .ok_or_else(|| format!("unknown seed state {:?}", row.state))?;
    let dates = parse_dates(row.logical_dates.as_deref())?;
    let params = match row.dag_params.as_deref().map(str::trim) {
        None | Some("") => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err("its dag_params is not a JSON object".to_owned()),
        },
    };
    let (mut state, deleted, reason) = map_state(seed_state, row.deleted);
    if let Some(path) = &facts.copy_elsewhere {
        return Err(format!(
            "Airflow reads its DAG copy from {path}, not from backfilld's copy folder (backfill_user_dags/ of the DAGs folder)"
        ));
    }
    let mut copy = facts.copy_file;
    if state == BackfillState::Submitted && copy {
        // Written by the seed, which had not marked it queued yet: take the copy over.
        state = BackfillState::Queued;
    }
    let active = !state.is_terminal() && !deleted;
    if active && state != BackfillState::Submitted && !copy {
        return Err(format!(
            "it is {} in the seed but its DAG copy file is missing",
            row.state
        ));
    }
    if state == BackfillState::Cancelled {
        copy = false;
    }
    let (Some(&start), Some(&end)) = (dates.first(), dates.last()) else {
        if active {
            return Err(
                "the seed recorded no logical date for it (a one-date range, whose only date the seed drops); there is nothing for backfilld to follow"
                    .to_owned(),
            );
        }
        return Ok(Import {
            start: row.start_date,
            end: row.end_date,
            note: format!(
                "imported from the seed plugin ({id}, {}); the seed recorded no logical date (it drops the first date of every range, and this range had one)",
                row.state_label()
            ),
            ..import_base(row, state, deleted, reason, params, dates, copy, facts)
        });
    };
    let mut note = format!(
        "imported from the seed plugin ({id}, {})",
        row.state_label()
    );
    let dn = dates_note(row, &dates, &facts.runs);
    if !dn.is_empty() {
        note.push_str("; ");
        note.push_str(&dn);
    }
    Ok(Import {
        start,
        end,
        note,
        ..import_base(row, state, deleted, reason, params, dates, copy, facts)
    })
}

#[allow(clippy::too_many_arguments)]
fn import_base(
    row: &SeedRow,
    state: BackfillState,
    deleted: bool,
    reason: Option<String>,
    params: serde_json::Map<String, serde_json::Value>,
    dates: Vec<DateTime<Utc>>,
    copy: bool,
    facts: &SeedFacts,
) -> Import {
    let summary = RunSummary::of_runs(&dates, &facts.runs);
    let total = u32::try_from(dates.len()).unwrap_or(u32::MAX);
    let mut progress = Progress {
        total,
        succeeded: summary.succeeded,
        failed: summary.failed,
        running: summary.running,
        queued: summary.queued,
        pending: 0,
    };
    if state == BackfillState::Success && facts.runs.is_empty() {
        // Its copy's runs were deleted with it: the seed saw every date succeed.
        progress.succeeded = total;
    }
    progress.pending = total
        .saturating_sub(progress.succeeded + progress.failed + progress.running + progress.queued);
    let submitted_at = row
        .submitted_at
        .or(row.updated_at)
        .unwrap_or(row.start_date);
    Import {
        id: row.backfill_dag_id.clone(),
        dag_id: row.dag_id.clone(),
        state,
        reason,
        deleted,
        deleted_at: if deleted {
            Some(row.updated_at.unwrap_or(submitted_at))
        } else {
            None
        },
        start: row.start_date,
        end: row.end_date,
        logical_dates: dates,
        params,
        max_active_runs: u32::try_from(row.max_active_runs.max(1)).unwrap_or(1),
        description: row.description.clone().filter(|d| !d.is_empty()),
        scheduled_at: if state == BackfillState::Submitted {
            row.scheduled_date
        } else {
            None
        },
        delete_after_days: delete_after_days(row.submitted_at, row.delete_date),
        submitted_by: row
            .submitted_by
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
        submitted_at,
        run_start: row.run_start_date.or(summary.first_start),
        run_end: if state.is_terminal() {
            row.run_end_date.or(summary.last_end)
        } else {
            None
        },
        progress,
        copy,
        relative_fileloc: row.relative_fileloc.clone().unwrap_or_default(),
        origin_code: row.origin_code.clone().unwrap_or_default(),
        note: String::new(),
    }
}

/// The report line of a planned (or refused) import.
pub fn item(row: &SeedRow, planned: &Result<Import, String>) -> SeedItem {
    match planned {
        Ok(i) => SeedItem {
            seed_id: row.backfill_dag_id.clone(),
            dag_id: row.dag_id.clone(),
            seed_state: row.state_label(),
            state: Some(i.state),
            dates: i.logical_dates.iter().map(|d| fmt_ts(*d)).collect(),
            note: Some(i.note.clone()),
            skipped: None,
        },
        Err(why) => SeedItem {
            seed_id: row.backfill_dag_id.clone(),
            dag_id: row.dag_id.clone(),
            seed_state: row.state_label(),
            state: None,
            dates: Vec::new(),
            note: None,
            skipped: Some(why.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::date;

    /// Midnight UTC of 2024-02-`d`.
    fn day(d: u32) -> DateTime<Utc> {
        date(2024, 2, d)
    }

    fn row(state: &str, deleted: bool) -> SeedRow {
        SeedRow {
            backfill_dag_id: "sales_backfill_20240301_120000".into(),
            dag_id: "sales".into(),
            state: state.into(),
            start_date: day(1),
            end_date: day(3),
            logical_dates: Some(
                r#"["2024-02-02T00:00:00+00:00", "2024-02-03T00:00:00+00:00"]"#.into(),
            ),
            dag_params: Some(r#"{"region": "eu"}"#.into()),
            max_active_runs: 2,
            submitted_at: Some(day(1)),
            delete_date: Some(day(1) + chrono::Duration::days(30)),
            submitted_by: Some("alice".into()),
            updated_at: Some(day(4)),
            deleted,
            ..SeedRow::default()
        }
    }

    fn run(d: u32, state: RunState) -> RunObservation {
        RunObservation {
            logical_date: day(d),
            state,
            start_date: Some(day(d)),
            end_date: (state == RunState::Success || state == RunState::Failed).then(|| day(d)),
        }
    }

    fn with_copy(runs: Vec<RunObservation>) -> SeedFacts {
        SeedFacts {
            copy_file: true,
            runs,
            ..SeedFacts::default()
        }
    }

    #[test]
    fn states_parse_by_name_in_any_case() {
        assert_eq!(SeedState::parse("RUNNING"), Some(SeedState::Running));
        assert_eq!(SeedState::parse("running"), Some(SeedState::Running));
        assert_eq!(SeedState::parse("CANCELLED"), None);
    }

    #[test]
    fn every_seed_state_maps() {
        let cases = [
            ("SUBMITTED", false, BackfillState::Submitted, false),
            ("SUBMITTED", true, BackfillState::Cancelled, false),
            ("QUEUED", false, BackfillState::Queued, false),
            ("RUNNING", false, BackfillState::Running, false),
            ("PAUSED", false, BackfillState::Paused, false),
            ("PAUSED", true, BackfillState::Paused, true),
            ("SUCCESS", false, BackfillState::Success, false),
            ("SUCCESS", true, BackfillState::Success, true),
            ("FAILED", false, BackfillState::Failed, false),
        ];
        for (seed, deleted, state, kept_deleted) in cases {
            let st = SeedState::parse(seed).unwrap_or(SeedState::Submitted);
            let (s, d, _) = map_state(st, deleted);
            assert_eq!((s, d), (state, kept_deleted), "{seed} deleted={deleted}");
        }
    }

    #[test]
    fn an_active_backfill_keeps_its_copy_and_the_recorded_dates() {
        let facts = with_copy(vec![run(1, RunState::Success), run(2, RunState::Running)]);
        let i = plan(&row("RUNNING", false), &facts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.id, "sales_backfill_20240301_120000");
        assert_eq!(i.state, BackfillState::Running);
        assert!(i.copy);
        assert_eq!(i.logical_dates, vec![day(2), day(3)]);
        assert_eq!((i.start, i.end), (day(2), day(3)));
        assert_eq!(i.progress.total, 2);
        assert_eq!(i.progress.running, 1);
        assert_eq!(
            i.progress.succeeded, 0,
            "the unrecorded first date is not counted"
        );
        assert_eq!(i.progress.pending, 1);
        assert_eq!(i.delete_after_days, Some(30));
        assert_eq!(i.max_active_runs, 2);
        assert_eq!(i.params.get("region"), Some(&serde_json::json!("eu")));
        assert!(i.note.contains("did not record"), "{}", i.note);
        assert!(
            i.note.contains("its copy ran 2024-02-01T00:00:00Z success"),
            "{}",
            i.note
        );
    }

    #[test]
    fn finished_backfills_become_history() {
        let runs = vec![
            run(1, RunState::Success),
            run(2, RunState::Success),
            run(3, RunState::Failed),
        ];
        let i = plan(&row("FAILED", false), &with_copy(runs)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.state, BackfillState::Failed);
        assert_eq!((i.progress.succeeded, i.progress.failed), (1, 1));
        assert_eq!(i.reason.as_deref(), Some("failed in the seed plugin"));
        let gone =
            plan(&row("SUCCESS", true), &SeedFacts::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(gone.deleted);
        assert_eq!(gone.deleted_at, Some(day(4)));
        assert_eq!(gone.progress.succeeded, 2);
        assert!(!gone.copy);
    }

    #[test]
    fn a_seed_cancel_before_the_copy_is_a_cancelled_backfill() {
        let i =
            plan(&row("SUBMITTED", true), &SeedFacts::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.state, BackfillState::Cancelled);
        assert!(!i.deleted);
        assert!(!i.copy);
    }

    #[test]
    fn a_submitted_backfill_with_a_copy_on_disk_is_taken_over_queued() {
        let mut r = row("SUBMITTED", false);
        r.scheduled_date = Some(day(9));
        let planned = plan(&r, &SeedFacts::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(planned.state, BackfillState::Submitted);
        assert_eq!(planned.scheduled_at, Some(day(9)));
        assert!(!planned.copy);
        let i = plan(&r, &with_copy(vec![])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.state, BackfillState::Queued);
        assert!(i.copy);
        assert_eq!(i.scheduled_at, None);
    }

    #[test]
    fn refusals_say_why() {
        let missing = plan(&row("RUNNING", false), &SeedFacts::default());
        assert!(
            matches!(&missing, Err(e) if e.contains("copy file is missing")),
            "{missing:?}"
        );
        let elsewhere = SeedFacts {
            copy_elsewhere: Some("/srv/other/x.py".into()),
            ..with_copy(vec![])
        };
        let e = plan(&row("RUNNING", false), &elsewhere);
        assert!(
            matches!(&e, Err(m) if m.contains("/srv/other/x.py")),
            "{e:?}"
        );
        let taken = SeedFacts {
            id_taken: true,
            ..with_copy(vec![])
        };
        assert!(plan(&row("SUCCESS", false), &taken).is_err());
        let mut bad = row("RUNNING", false);
        bad.backfill_dag_id = "../etc/x".into();
        assert!(plan(&bad, &with_copy(vec![])).is_err());
        let mut unknown = row("EXPLODED", false);
        unknown.backfill_dag_id = "x".into();
        assert!(plan(&unknown, &with_copy(vec![])).is_err());
        let mut params = row("SUCCESS", false);
        params.dag_params = Some("[1]".into());
        assert!(plan(&params, &with_copy(vec![])).is_err());
        let mut one_date = row("RUNNING", false);
        one_date.logical_dates = Some("[]".into());
        assert!(plan(&one_date, &with_copy(vec![])).is_err());
        one_date.state = "SUCCESS".into();
        let i = plan(&one_date, &with_copy(vec![])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.progress.total, 0);
    }

    #[test]
    fn dates_and_retention_parse() {
        assert_eq!(parse_dates(None), Ok(vec![]));
        assert_eq!(
            parse_dates(Some(
                r#"["2024-02-03T00:00:00+00:00","2024-02-02T00:00:00.000000+00:00"]"#
            )),
            Ok(vec![day(2), day(3)])
        );
        assert!(parse_dates(Some("2024-02-02")).is_err());
        assert_eq!(
            delete_after_days(Some(day(1)), Some(day(1) + chrono::Duration::days(7))),
            Some(7)
        );
        assert_eq!(delete_after_days(Some(day(1)), None), None);
    }
}
