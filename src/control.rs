//! The control protocol between `backfillctl` and the daemon: one JSON request line, one JSON
//! response line, over a unix socket. The daemon learns the caller's uid from `SO_PEERCRED`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::estimate::Estimate;
use crate::metadb::lease::ClaimInfo;
use crate::metadb::store::{BackfillRow, ListQuery, RequestRecord};
use crate::request::{fmt_ts, Outcome, ReasonCode};
use crate::state::BackfillState;

/// Longest request line the daemon reads.
pub const MAX_LINE: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Backfills matching a filter, one page at a time (see `paging`). A request without
    /// `limit` (from a `backfillctl` older than paging) is answered with the whole list,
    /// which the daemon streams page by page into one answer line.
    List {
        /// Which ones.
        #[serde(default, flatten)]
        filter: ListFilter,
        /// Most backfills in the answer (default `paging::DEFAULT_LIMIT`, at most
        /// `paging::MAX_LIMIT`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// The `next` of the previous page; none for the first page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// One backfill.
    Status {
        /// Backfill id.
        id: String,
    },
    /// What became of a file the caller dropped into the spool.
    Outcome {
        /// The file's name in `incoming/`.
        file_name: String,
    },
    /// The agents on this metadata DB: which one holds which claim.
    Cluster,
    /// Verify the audit log's hash chain.
    AuditVerify,
    /// Take over the seed plugin's backfills (`backfillctl import-seed`): starts an import job
    /// (or re-attaches to the one running) and answers at once; a dry run answers its report.
    ImportSeed {
        /// Report what would be imported; change nothing.
        #[serde(default)]
        dry_run: bool,
        /// Only attach to the running (or last) job; start none.
        #[serde(default)]
        attach: bool,
    },
    /// An import job's progress (`job`, else the newest), with its report when asked.
    ImportSeedStatus {
        /// Which job.
        #[serde(default)]
        job: Option<i64>,
        /// Include the report (what each batch imported and skipped).
        #[serde(default)]
        report: bool,
    },
}

/// Which backfills `list` shows; every field narrows the list, none set shows every backfill
/// not deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only backfills of this origin DAG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag: Option<String>,
    /// Only backfills in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BackfillState>,
    /// Only backfills submitted at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Include deleted backfills.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl ListFilter {
    /// The part of the filter the metadata DB applies.
    pub fn query(&self) -> ListQuery {
        ListQuery {
            include_deleted: self.all,
            dag_id: self.dag.clone(),
            state: self.state,
            since: self.since,
        }
    }

    /// Whether `b` passes the filter.
    pub fn matches(&self, b: &BackfillRow) -> bool {
        (self.all || !b.deleted)
            && self.dag.as_ref().is_none_or(|d| *d == b.dag_id)
            && self.state.is_none_or(|s| s == b.state)
            && self.since.is_none_or(|t| b.submitted_at >= t)
    }
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlResponse {
    /// Answer to `list`: one page.
    Backfills {
        /// Newest first.
        backfills: Vec<BackfillView>,
        /// The cursor of the next page; absent on the last page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Answer to `status`.
    Backfill {
        /// The backfill (boxed: it is much larger than the other answers).
        backfill: Box<BackfillView>,
    },
    /// Answer to `outcome` once the file was decided.
    Decided {
        /// The record (boxed: it is much larger than the other answers).
        request: Box<RequestView>,
    },
    /// Answer to `outcome` while the file waits.
    Pending,
    /// Answer to `cluster`.
    Cluster {
        /// The answering agent's `[cluster] host_id`.
        host_id: String,
        /// Whether the answering agent holds the leader claim.
        leader: bool,
        /// Whether the agents share one DAGs folder.
        dags_folder_shared: bool,
        /// Every claim and its holder.
        claims: Vec<ClaimView>,
    },
    /// Answer to `audit_verify`.
    AuditReport {
        /// Records checked and the first broken link, if any.
        report: crate::audit::Report,
    },
    /// Answer to `import_seed` (not a dry run) and `import_seed_status`.
    SeedImportJob {
        /// The job and its progress.
        job: crate::seedjob::ImportJob,
        /// Its report, when asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<Box<crate::seed::SeedReport>>,
    },
    /// Answer to `import_seed` with `dry_run`.
    SeedImport {
        /// What was (or would be) imported and skipped.
        report: Box<crate::seed::SeedReport>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A backfill as shown to users (`list --json`, `status --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillView {
    /// Backfill id (the copy's DAG id).
    pub id: String,
    /// Origin DAG.
    pub dag_id: String,
    /// State.
    pub state: BackfillState,
    /// Why it is in that state, if that needs saying.
    pub reason: Option<String>,
    /// First logical date.
    pub start: String,
    /// Last logical date.
    pub end: String,
    /// Description.
    pub description: Option<String>,
    /// Concurrent runs.
    pub max_active_runs: u32,
    /// Param overrides.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Requester (the Airflow user the backfill was authorised for).
    pub submitted_by: String,
    /// The unix user that owned the request file.
    #[serde(default)]
    pub requester: Option<String>,
    /// The Airflow user a trusted submitter acted for.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// When accepted.
    pub submitted_at: String,
    /// Last change.
    pub updated_at: String,
    /// First run start.
    pub run_start: Option<String>,
    /// Last run end.
    pub run_end: Option<String>,
    /// Dates covered.
    pub dates_total: u32,
    /// Dates succeeded.
    pub dates_succeeded: u32,
    /// Dates failed.
    pub dates_failed: u32,
    /// Dates running.
    pub dates_running: u32,
    /// Dates queued.
    pub dates_queued: u32,
    /// Dates without a run yet.
    pub dates_pending: u32,
    /// The copy's file.
    pub copy_path: Option<String>,
    /// Host that accepted it.
    pub host: String,
    /// Deleted (shown by `list --all` only).
    #[serde(default)]
    pub deleted: bool,
    /// A user paused it.
    #[serde(default)]
    pub user_paused: bool,
    /// The backfill this one retries.
    #[serde(default)]
    pub retry_of: Option<String>,
    /// The logical dates it runs.
    #[serde(default)]
    pub logical_dates: Vec<String>,
    /// The copy is written only from this instant on.
    #[serde(default)]
    pub scheduled_at: Option<String>,
    /// When it will be deleted automatically.
    #[serde(default)]
    pub delete_at: Option<String>,
    /// The `reprocess` mode it was created with.
    #[serde(default)]
    pub reprocess: Option<String>,
    /// Dates of its range skipped because the origin DAG already ran them.
    #[serde(default)]
    pub skipped_dates: Vec<String>,
    /// Task subset (`tasks`, `task_ids`, `include_upstream`, `include_downstream`),
    /// `emit_asset_events`, `after` and the warnings given at acceptance.
    #[serde(flatten)]
    pub options: crate::metadb::store::BackfillOptions,
    /// The seed plugin's id it was imported from.
    #[serde(default)]
    pub seed_id: Option<String>,
    /// What the import said about it (the dates the seed did not record).
    #[serde(default)]
    pub import_note: Option<String>,
    /// Who approved it, when it waited for approval (`[approval]`).
    #[serde(default)]
    pub approved_by: Option<String>,
    /// When it was approved.
    #[serde(default)]
    pub approved_at: Option<String>,
    /// Who rejected it (the reason is in `reason`).
    #[serde(default)]
    pub rejected_by: Option<String>,
    /// When it was rejected.
    #[serde(default)]
    pub rejected_at: Option<String>,
    /// How long it will take still, for an unfinished backfill's `status` (not in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::estimate::Estimate>,
}

/// What became of a request file, as the control protocol sends it (`submit`, `outcome`):
/// the wire form of the metadata DB's [`RequestRecord`], which may change without changing
/// this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// Durable identity of the file (see `spool`).
    pub request_key: String,
    /// The name the requester gave the file.
    pub file_name: String,
    /// The file owner's uid, from the kernel.
    pub uid: u32,
    /// The uid's user name, when it has one.
    pub username: Option<String>,
    /// The host whose spool received it.
    pub host: String,
    /// When it was ingested.
    pub received_at: String,
    /// `accepted` or `rejected`.
    pub outcome: Outcome,
    /// The backfill it created.
    pub backfill_id: Option<String>,
    /// Why it was rejected (machine-readable).
    pub reason_code: Option<ReasonCode>,
    /// Why it was rejected (for people).
    pub reason: Option<String>,
    /// The Airflow user the request was decided for (after mapping and `on_behalf_of`).
    #[serde(default)]
    pub airflow_user: Option<String>,
    /// The Airflow user a trusted submitter named in `on_behalf_of`.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// What the file asked for (`create`, `cancel`, ...); `None` from daemons older than that.
    #[serde(default)]
    pub action: Option<String>,
    /// A dry run: validated, nothing created.
    #[serde(default)]
    pub dry_run: bool,
    /// The logical dates a dry run would run.
    #[serde(default)]
    pub dates: Option<Vec<String>>,
    /// Dates of the range not run because the origin DAG already ran them (`reprocess`).
    #[serde(default)]
    pub skipped_dates: Option<Vec<String>>,
    /// Things the requester should know about an accepted request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// A dry run's estimate of how long the backfill would take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

impl From<RequestRecord> for RequestView {
    fn from(r: RequestRecord) -> Self {
        RequestView {
            request_key: r.request_key,
            file_name: r.file_name,
            uid: r.uid,
            username: r.username,
            host: r.host,
            received_at: r.received_at,
            outcome: r.outcome,
            backfill_id: r.backfill_id,
            reason_code: r.reason_code,
            reason: r.reason,
            airflow_user: r.airflow_user,
            on_behalf_of: r.on_behalf_of,
            action: r.action,
            dry_run: r.dry_run,
            dates: r.dates,
            skipped_dates: r.skipped_dates,
            warnings: r.warnings,
            estimate: r.estimate,
        }
    }
}

/// One cluster claim and its holder, as `cluster` answers it: the wire form of the metadata
/// DB's [`ClaimInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimView {
    /// The claim's name (e.g. `leader`).
    pub name: String,
    /// The agent (`[cluster] host_id`) holding it; empty when never taken.
    pub holder: String,
    /// Fencing token: grows by one with every change of holder.
    pub token: i64,
    /// Milliseconds until it expires, on the DB's clock (negative: expired).
    pub expires_in_ms: i64,
    /// When the current holder took it.
    pub acquired_at: Option<String>,
}

impl From<ClaimInfo> for ClaimView {
    fn from(c: ClaimInfo) -> Self {
        ClaimView {
            name: c.name,
            holder: c.holder,
            token: c.token,
            expires_in_ms: c.expires_in_ms,
            acquired_at: c.acquired_at,
        }
    }
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(fmt_ts)
}

impl From<&BackfillRow> for BackfillView {
    fn from(b: &BackfillRow) -> Self {
        BackfillView {
            id: b.id.clone(),
            dag_id: b.dag_id.clone(),
            state: b.state,
            reason: b.state_reason.clone(),
            start: fmt_ts(b.start),
            end: fmt_ts(b.end),
            description: b.description.clone(),
            max_active_runs: b.max_active_runs,
            params: b.params.clone(),
            submitted_by: b.submitted_by.clone(),
            requester: b.requester.clone(),
            on_behalf_of: b.on_behalf_of.clone(),
            submitted_at: fmt_ts(b.submitted_at),
            updated_at: fmt_ts(b.updated_at),
            run_start: opt_ts(b.run_start),
            run_end: opt_ts(b.run_end),
            dates_total: b.progress.total,
            dates_succeeded: b.progress.succeeded,
            dates_failed: b.progress.failed,
            dates_running: b.progress.running,
            dates_queued: b.progress.queued,
            dates_pending: b.progress.pending,
            copy_path: b.copy_path.clone(),
            host: b.host.clone(),
            deleted: b.deleted,
            user_paused: b.user_paused,
            retry_of: b.retry_of.clone(),
            logical_dates: b.logical_dates.iter().map(|d| fmt_ts(*d)).collect(),
            scheduled_at: opt_ts(b.scheduled_at),
            delete_at: if b.deleted {
                None
            } else {
                opt_ts(b.delete_due())
            },
            reprocess: b.reprocess.clone(),
            skipped_dates: b.skipped_dates.iter().map(|d| fmt_ts(*d)).collect(),
            options: b.options.clone(),
            seed_id: b.seed_id.clone(),
            import_note: b.import_note.clone(),
            approved_by: b.approved_by.clone(),
            approved_at: opt_ts(b.approved_at),
            rejected_by: b.rejected_by.clone(),
            rejected_at: opt_ts(b.rejected_at),
            estimate: None,
        }
    }
}

/// Errors of the client side of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The daemon could not be reached.
    #[error("cannot reach backfilld at {path}: {source} (is the daemon running?)")]
    Connect {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to backfilld: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer was not understood.
    #[error("backfilld sent an answer this backfillctl does not understand: {0}")]
    Protocol(#[from] serde_json::Error),
}

/// Send one request and wait for the answer (blocking; for `backfillctl`).
pub fn call(
    socket: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ControlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(dag_id: &str, state: BackfillState, day: u32, deleted: bool) -> BackfillRow {
        BackfillRow {
            id: format!("{dag_id}_backfill_{day}"),
            deleted,
            ..crate::testutil::backfill_row(dag_id, state, &[crate::testutil::day(day)])
        }
    }

    #[test]
    fn list_filters() {
        let rows = [
            row("sales", BackfillState::Running, 1, false),
            row("sales", BackfillState::Failed, 2, false),
            row("other", BackfillState::Failed, 3, false),
            row("sales", BackfillState::Success, 4, true),
        ];
        let ids = |f: ListFilter| -> Vec<u32> {
            rows.iter()
                .filter(|b| f.matches(b))
                .filter_map(|b| b.id.rsplit('_').next().and_then(|d| d.parse().ok()))
                .collect()
        };
        assert_eq!(ids(ListFilter::default()), vec![1, 2, 3]);
        let all = ListFilter {
            all: true,
            ..ListFilter::default()
        };
        assert_eq!(ids(all), vec![1, 2, 3, 4]);
        let sales_failed = ListFilter {
            dag: Some("sales".into()),
            state: Some(BackfillState::Failed),
            ..ListFilter::default()
        };
        assert_eq!(ids(sales_failed), vec![2]);
        let since = ListFilter {
            since: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).single(),
            ..ListFilter::default()
        };
        assert_eq!(ids(since), vec![2, 3]);
    }

    #[test]
    fn list_requests_of_older_clients_still_parse() {
        let old: Result<ControlRequest, _> = serde_json::from_str(r#"{"op":"list"}"#);
        assert!(
            matches!(old, Ok(ControlRequest::List { ref filter, limit: None, cursor: None }) if *filter == ListFilter::default()),
            "{old:?}"
        );
        let new = ControlRequest::List {
            filter: ListFilter {
                dag: Some("sales".into()),
                state: Some(BackfillState::Paused),
                since: None,
                all: true,
            },
            limit: Some(2),
            cursor: Some("abc".into()),
        };
        let text = serde_json::to_string(&new).unwrap_or_default();
        let back: Result<ControlRequest, _> = serde_json::from_str(&text);
        assert_eq!(back.ok(), Some(new), "{text}");
    }
    #[test]
    fn wire_json_is_pinned() {
        let record = RequestRecord {
            request_key: "k1".into(),
            file_name: "a.toml".into(),
            uid: 1000,
            username: Some("alice".into()),
            host: "h1".into(),
            received_at: "2024-01-01T00:00:00Z".into(),
            outcome: Outcome::Rejected,
            backfill_id: None,
            reason_code: Some(ReasonCode::InvalidToml),
            reason: Some("bad".into()),
            airflow_user: Some("alice".into()),
            on_behalf_of: None,
            action: Some("create".into()),
            dry_run: true,
            dates: Some(vec!["2024-01-01T00:00:00Z".into()]),
            skipped_dates: None,
            warnings: Some(vec!["w".into()]),
            estimate: None,
        };
        let decided = ControlResponse::Decided {
            request: Box::new(record.into()),
        };
        assert_eq!(
            serde_json::to_string(&decided).unwrap_or_default(),
            concat!(
                r#"{"kind":"decided","request":{"request_key":"k1","file_name":"a.toml","uid":1000,"#,
                r#""username":"alice","host":"h1","received_at":"2024-01-01T00:00:00Z","#,
                r#""outcome":"rejected","backfill_id":null,"reason_code":"invalid_toml","#,
                r#""reason":"bad","airflow_user":"alice","on_behalf_of":null,"action":"create","#,
                r#""dry_run":true,"dates":["2024-01-01T00:00:00Z"],"skipped_dates":null,"#,
                r#""warnings":["w"]}}"#
            )
        );
        let cluster = ControlResponse::Cluster {
            host_id: "h1".into(),
            leader: true,
            dags_folder_shared: false,
            claims: vec![ClaimInfo {
                name: "leader".into(),
                holder: "h1".into(),
                token: 7,
                expires_in_ms: -5,
                acquired_at: None,
            }
            .into()],
        };
        assert_eq!(
            serde_json::to_string(&cluster).unwrap_or_default(),
            concat!(
                r#"{"kind":"cluster","host_id":"h1","leader":true,"dags_folder_shared":false,"#,
                r#""claims":[{"name":"leader","holder":"h1","token":7,"expires_in_ms":-5,"#,
                r#""acquired_at":null}]}"#
            )
        );
        // An answer from an older daemon (no action, dry_run, dates...) still parses.
        let old = r#"{"kind":"decided","request":{"request_key":"k","file_name":"f","uid":0,"username":null,"host":"h","received_at":"t","outcome":"accepted","backfill_id":"b","reason_code":null,"reason":null}}"#;
        let parsed: Result<ControlResponse, _> = serde_json::from_str(old);
        assert!(
            matches!(&parsed, Ok(ControlResponse::Decided { request }) if request.outcome.is_accepted() && !request.dry_run),
            "{parsed:?}"
        );
    }
}
