//! The seed import as a job (`backfillctl import-seed`): the control request starts one (or
//! re-attaches to the one running) and returns at once; the engine then imports the seed's
//! rows in batches of [`BATCH`], in the order of their id (`backfill_dag_id`, the seed
//! table's primary key), one transaction a batch that also moves the job's cursor and counts
//! (`backfilld_import`). A restart resumes after the cursor; the unique `seed_id` column keeps
//! a seed backfill from being imported twice. Pure: the decisions about the job's progress.

use serde::{Deserialize, Serialize};

use crate::seed::SeedReport;

/// Seed rows read and imported per transaction.
pub const BATCH: usize = 1000;

/// The batch size for a `BACKFILLD_IMPORT_BATCH` setting (read by the engine; tests set it so
/// an end-to-end test can stop a job between batches of a few rows): `n` within
/// 1..=[`BATCH`], else [`BATCH`].
pub fn batch_size(setting: Option<&str>) -> usize {
    setting
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(BATCH, |n| n.clamp(1, BATCH))
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Batches remain.
    Running,
    /// Every seed row was read.
    Finished,
    /// Stopped on an error (a new `import-seed` starts a new job that skips what was imported).
    Failed,
}

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<JobState> {
        [JobState::Running, JobState::Finished, JobState::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// An import job and its progress, as stored and as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    /// Its id.
    pub id: i64,
    /// Where it is.
    pub state: JobState,
    /// The uid (`SO_PEERCRED`) that started it; its batches are authorized and audited for it.
    pub uid: u32,
    /// The agent that started it.
    pub host: String,
    /// When it started (stored text).
    pub started_at: String,
    /// Last progress (stored text).
    pub updated_at: String,
    /// The last seed id done (the keyset cursor); none before the first batch.
    pub cursor: Option<String>,
    /// Seed rows when it started.
    pub total: u64,
    /// Seed rows done.
    pub done: u64,
    /// Imported.
    pub imported: u64,
    /// Not imported: the plan said why (bad data, missing copy, id taken).
    pub skipped: u64,
    /// Not imported: the starter may not edit the origin DAG.
    pub refused: u64,
    /// Imported before (by an earlier job or another agent).
    pub already: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Seed rows read.
    pub read: u64,
    /// Imported.
    pub imported: u64,
    /// Skipped by the plan.
    pub skipped: u64,
    /// Refused by authorization.
    pub refused: u64,
    /// Imported before.
    pub already: u64,
}

impl BatchCounts {
    /// Counts of a batch's report fragment (`refused` items are the skipped ones whose
    /// reason is a permission denial).
    pub fn of(report: &SeedReport, read: usize) -> BatchCounts {
        let refused = report
            .skipped
            .iter()
            .filter(|i| i.skipped.as_deref().is_some_and(is_refusal))
            .count();
        BatchCounts {
            read: read as u64,
            imported: report.imported.len() as u64,
            skipped: (report.skipped.len() - refused) as u64,
            refused: refused as u64,
            already: report.already_imported.len() as u64,
        }
    }
}

/// The prefix of a skip reason that is an authorization refusal.
pub const REFUSAL: &str = "permission denied: ";

fn is_refusal(reason: &str) -> bool {
    reason.starts_with(REFUSAL)
}

/// How `import-seed` (not a dry run) proceeds, given the newest job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Attach to the job running.
    Attach(i64),
    /// Start a new job.
    New,
}

/// A running job is re-attached to; after a finished or failed one, a new job starts (it
/// skips what was imported).
pub fn start(newest: Option<&ImportJob>) -> Start {
    match newest {
        Some(j) if j.state == JobState::Running => Start::Attach(j.id),
        _ => Start::New,
    }
}

/// The job after a batch of at most `batch` rows whose last seed id is `last` (none for an
/// empty batch). A batch shorter than `batch` was the last one. `done` never exceeds the
/// total (seed rows added meanwhile raise it).
pub fn advance(
    job: &ImportJob,
    batch: usize,
    counts: BatchCounts,
    last: Option<&str>,
    now: &str,
) -> ImportJob {
    let done = job.done + counts.read;
    ImportJob {
        state: if counts.read < batch as u64 {
            JobState::Finished
        } else {
            JobState::Running
        },
        updated_at: now.to_owned(),
        cursor: last.map(str::to_owned).or_else(|| job.cursor.clone()),
        total: job.total.max(done),
        done,
        imported: job.imported + counts.imported,
        skipped: job.skipped + counts.skipped,
        refused: job.refused + counts.refused,
        already: job.already + counts.already,
        ..job.clone()
    }
}

/// The whole job's report from its batches' fragments, in batch order.
pub fn merge(fragments: impl IntoIterator<Item = SeedReport>) -> SeedReport {
    let mut out = SeedReport::default();
    for f in fragments {
        out.imported.extend(f.imported);
        out.skipped.extend(f.skipped);
        out.already_imported.extend(f.already_imported);
    }
    out
}

impl ImportJob {
    /// One line for people: state, progress, counts.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "import job {} {}: {}/{} seed backfills done; {} imported, {} skipped, {} refused, {} imported before",
            self.id,
            self.state.as_str(),
            self.done,
            self.total,
            self.imported,
            self.skipped,
            self.refused,
            self.already
        );
        if let Some(e) = &self.error {
            s.push_str(": ");
            s.push_str(e);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::SeedItem;

    fn job(state: JobState) -> ImportJob {
        ImportJob {
            id: 7,
            state,
            uid: 0,
            host: "h".into(),
            started_at: "t0".into(),
            updated_at: "t0".into(),
            cursor: None,
            total: 2500,
            done: 0,
            imported: 0,
            skipped: 0,
            refused: 0,
            already: 0,
            error: None,
        }
    }

    fn item(id: &str, skipped: Option<&str>) -> SeedItem {
        SeedItem {
            seed_id: id.into(),
            dag_id: "d".into(),
            seed_state: "SUCCESS".into(),
            state: None,
            dates: Vec::new(),
            note: None,
            skipped: skipped.map(str::to_owned),
        }
    }

    #[test]
    fn a_running_job_is_attached_to_else_a_new_one_starts() {
        let cases = [
            (None, Start::New),
            (Some(job(JobState::Running)), Start::Attach(7)),
            (Some(job(JobState::Finished)), Start::New),
            (Some(job(JobState::Failed)), Start::New),
        ];
        for (newest, want) in cases {
            assert_eq!(start(newest.as_ref()), want, "{newest:?}");
        }
    }

    #[test]
    fn batches_move_the_cursor_and_a_short_batch_finishes() {
        let full = BatchCounts {
            read: BATCH as u64,
            imported: 990,
            skipped: 5,
            refused: 3,
            already: 2,
        };
        let j = advance(&job(JobState::Running), BATCH, full, Some("a_1000"), "t1");
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.cursor.as_deref(), Some("a_1000"));
        assert_eq!(
            (j.done, j.imported, j.skipped, j.refused, j.already),
            (1000, 990, 5, 3, 2)
        );
        assert_eq!(j.updated_at, "t1");
        let j = advance(&j, BATCH, full, Some("a_2000"), "t2");
        assert_eq!((j.state, j.done), (JobState::Running, 2000));
        let short = BatchCounts {
            read: 500,
            imported: 500,
            ..BatchCounts::default()
        };
        let j = advance(&j, BATCH, short, Some("a_2500"), "t3");
        assert_eq!(
            (j.state, j.done, j.imported),
            (JobState::Finished, 2500, 2480)
        );
        // An empty batch (the rows ended exactly at a batch boundary) keeps the cursor.
        let j = advance(&j, BATCH, BatchCounts::default(), None, "t4");
        assert_eq!(
            (j.state, j.cursor.as_deref()),
            (JobState::Finished, Some("a_2500"))
        );
    }

    #[test]
    fn done_never_exceeds_the_total() {
        let mut j = job(JobState::Running);
        j.total = 10;
        let j = advance(
            &j,
            BATCH,
            BatchCounts {
                read: 12,
                imported: 12,
                ..BatchCounts::default()
            },
            Some("x"),
            "t",
        );
        assert_eq!((j.done, j.total), (12, 12));
    }

    #[test]
    fn a_smaller_batch_size_decides_when_the_job_ends() {
        let two = BatchCounts {
            read: 2,
            imported: 2,
            ..BatchCounts::default()
        };
        assert_eq!(
            advance(&job(JobState::Running), 2, two, Some("b"), "t").state,
            JobState::Running
        );
        assert_eq!(
            advance(&job(JobState::Running), 3, two, Some("b"), "t").state,
            JobState::Finished
        );
    }

    #[test]
    fn counts_split_refusals_from_skips() {
        let report = SeedReport {
            imported: vec![item("a", None)],
            skipped: vec![
                item("b", Some("permission denied: no edit on d")),
                item("c", Some("its DAG copy file is missing")),
            ],
            already_imported: vec!["e".into()],
            ..SeedReport::default()
        };
        assert_eq!(
            BatchCounts::of(&report, 4),
            BatchCounts {
                read: 4,
                imported: 1,
                skipped: 1,
                refused: 1,
                already: 1
            }
        );
    }

    #[test]
    fn fragments_merge_in_order_and_states_round_trip() {
        let a = SeedReport {
            imported: vec![item("a", None)],
            ..SeedReport::default()
        };
        let b = SeedReport {
            imported: vec![item("b", None)],
            already_imported: vec!["z".into()],
            ..SeedReport::default()
        };
        let m = merge([a, b]);
        let ids: Vec<&str> = m.imported.iter().map(|i| i.seed_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(m.already_imported, ["z"]);
        for s in [JobState::Running, JobState::Finished, JobState::Failed] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("paused"), None);
    }
}
