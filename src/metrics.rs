//! Prometheus metrics: the figures the engine gathers after each reconcile pass, rendered in
//! Prometheus' text exposition format (0.0.4, what node_exporter's textfile collector reads)
//! by the `prometheus` crate, written atomically to `[metrics] textfile`, and kept for the
//! HTTP listener's `/metrics`.
//!
//! Rendering is pure; [`write_textfile`] is the one I/O edge (temp file in the same directory,
//! fsync, rename: a scraper never reads half a file).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The last rendered text, shared by the engine (writer) and the HTTP listener (reader).
pub type Published = Arc<Mutex<Option<String>>>;

/// Errors rendering or writing metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The prometheus crate refused a metric (a bug: names and labels are fixed here).
    #[error("cannot render metrics: {0}")]
    Render(#[from] prometheus::Error),
    /// The textfile could not be written.
    #[error("cannot write the metrics textfile {path}: {source}")]
    Write {
        /// The textfile.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Backfills of one state (and deleted or not), as stored in `backfilld_backfill`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillGroup {
    /// The state.
    pub state: String,
    /// Whether these are deleted backfills.
    pub deleted: bool,
    /// How many backfills.
    pub backfills: u64,
    /// Of which the throttle holds.
    pub throttled: u64,
    /// Their logical dates that succeeded.
    pub succeeded: u64,
    /// ... failed.
    pub failed: u64,
    /// ... are running.
    pub running: u64,
    /// ... are queued.
    pub queued: u64,
    /// ... have no run yet.
    pub pending: u64,
}

/// Request files decided with one action, outcome and reason code, from `backfilld_request`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestGroup {
    /// `create`, `cancel`, ...
    pub action: String,
    /// `accepted` or `rejected`.
    pub outcome: String,
    /// The reason code of a rejection (empty for an acceptance).
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// What the metadata DB says (absent while it is unreachable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbFigures {
    /// Backfills grouped by state and deleted.
    pub backfills: Vec<BackfillGroup>,
    /// Requests grouped by action, outcome and reason.
    pub requests: Vec<RequestGroup>,
}

/// The last reconcile pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassFigures {
    /// Wall time in seconds.
    pub seconds: f64,
    /// Statements it sent to the metadata DB.
    pub queries: u64,
    /// Unfinished backfills it looked at.
    pub backfills: u64,
    /// When it ended (Unix seconds).
    pub at: i64,
}

/// Everything one render shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// From the metadata DB, `None` while it is unreachable.
    pub db: Option<DbFigures>,
    /// The last successful reconcile pass, if any since the start.
    pub pass: Option<PassFigures>,
    /// Successful reconcile passes since the start.
    pub passes: u64,
    /// Request files waiting in `incoming/`.
    pub spool_incoming: u64,
    /// Request files claimed but not decided yet (`active/`).
    pub spool_active: u64,
    /// Request files the last scan left in `incoming/` because their uid was over its rate.
    pub spool_deferred: u64,
    /// Denials counted but not written one by one (requesters over their audit rate).
    pub denials_suppressed: u64,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn gauge(r: &Registry, name: &str, help: &str, value: i64) -> Result<(), MetricsError> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    g.set(value);
    r.register(Box::new(g))?;
    Ok(())
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Render a snapshot in the text exposition format.
pub fn render(s: &Snapshot) -> Result<String, MetricsError> {
    let r = Registry::new();
    gauge(
        &r,
        "backfilld_metadb_up",
        "Whether the metadata DB answered when these metrics were gathered (1) or not (0).",
        i64::from(s.db.is_some()),
    )?;
    gauge(
        &r,
        "backfilld_spool_incoming_files",
        "Request files waiting in the spool's incoming/ directory.",
        int(s.spool_incoming),
    )?;
    gauge(
        &r,
        "backfilld_spool_active_files",
        "Request files claimed (active/) and not decided yet.",
        int(s.spool_active),
    )?;
    gauge(
        &r,
        "backfilld_spool_deferred_files",
        "Request files the last scan left in incoming/ because their uid was over [limits] max_files_per_user_per_minute.",
        int(s.spool_deferred),
    )?;
    let suppressed = IntCounter::with_opts(Opts::new(
        "backfilld_audit_denials_suppressed_total",
        "Denials not written to the audit table one by one (their requester was over [limits] max_audited_denials_per_user_per_minute; summary rows count them).",
    ))?;
    suppressed.inc_by(s.denials_suppressed);
    r.register(Box::new(suppressed))?;
    let passes = IntCounter::with_opts(Opts::new(
        "backfilld_reconcile_passes_total",
        "Successful reconcile passes since backfilld started.",
    ))?;
    passes.inc_by(s.passes);
    r.register(Box::new(passes))?;
    if let Some(p) = &s.pass {
        let seconds = prometheus::Gauge::with_opts(Opts::new(
            "backfilld_reconcile_pass_duration_seconds",
            "Wall time of the last reconcile pass.",
        ))?;
        seconds.set(p.seconds);
        r.register(Box::new(seconds))?;
        gauge(
            &r,
            "backfilld_reconcile_pass_queries",
            "Statements the last reconcile pass sent to the metadata DB (copy convergence, life-cycle work and automatic deletion included).",
            int(p.queries),
        )?;
        gauge(
            &r,
            "backfilld_reconcile_pass_backfills",
            "Unfinished backfills the last reconcile pass looked at.",
            int(p.backfills),
        )?;
        gauge(
            &r,
            "backfilld_reconcile_last_pass_timestamp_seconds",
            "When the last reconcile pass ended (Unix time).",
            p.at,
        )?;
    }
    if let Some(db) = &s.db {
        render_db(&r, db)?;
    }
    Ok(TextEncoder::new().encode_to_string(&r.gather())?)
}

fn render_db(r: &Registry, db: &DbFigures) -> Result<(), MetricsError> {
    let backfills = gauge_vec(
        r,
        "backfilld_backfills",
        "Backfills not deleted, by state (the rows `backfillctl list` shows).",
        &["state"],
    )?;
    let dates = gauge_vec(
        r,
        "backfilld_dates",
        "Logical dates (DAG runs) of the backfills not deleted, by the state of their run.",
        &["state"],
    )?;
    // Every state has a series, even at zero.
    for state in crate::state::BackfillState::ALL {
        backfills.with_label_values(&[state.as_str()]).set(0);
    }
    for state in ["succeeded", "failed", "running", "queued", "pending"] {
        dates.with_label_values(&[state]).set(0);
    }
    let (mut deleted, mut throttled) = (0u64, 0u64);
    for g in &db.backfills {
        if g.deleted {
            deleted += g.backfills;
            continue;
        }
        throttled += g.throttled;
        backfills
            .with_label_values(&[g.state.as_str()])
            .add(int(g.backfills));
        for (state, n) in [
            ("succeeded", g.succeeded),
            ("failed", g.failed),
            ("running", g.running),
            ("queued", g.queued),
            ("pending", g.pending),
        ] {
            dates.with_label_values(&[state]).add(int(n));
        }
    }
    gauge(
        r,
        "backfilld_backfills_deleted",
        "Deleted backfills (kept for audit; `backfillctl list --all`).",
        int(deleted),
    )?;
    gauge(
        r,
        "backfilld_backfills_throttled",
        "Unfinished backfills the throttle holds back (copy paused until their turn).",
        int(throttled),
    )?;
    let requests = IntCounterVec::new(
        Opts::new(
            "backfilld_requests_total",
            "Request files decided, by action, outcome and rejection reason code (totals from backfilld_request: they survive restarts).",
        ),
        &["action", "outcome", "reason"],
    )?;
    for g in &db.requests {
        requests
            .with_label_values(&[g.action.as_str(), g.outcome.as_str(), g.reason.as_str()])
            .inc_by(g.count);
    }
    r.register(Box::new(requests))?;
    Ok(())
}

/// Write `text` to `path` atomically: a temp file in the same directory (named so that
/// node_exporter's textfile collector, which reads `*.prom`, never picks it up), mode 0644,
/// fsync, rename over `path`.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), MetricsError> {
    let fail = |source: std::io::Error| MetricsError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".backfilld-metrics.")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_in_the_text_format() {
        let s = Snapshot {
            db: Some(DbFigures {
                backfills: vec![
                    BackfillGroup {
                        state: "running".into(),
                        backfills: 2,
                        throttled: 1,
                        succeeded: 3,
                        running: 1,
                        pending: 4,
                        ..BackfillGroup::default()
                    },
                    BackfillGroup {
                        state: "success".into(),
                        deleted: true,
                        backfills: 5,
                        succeeded: 10,
                        ..BackfillGroup::default()
                    },
                ],
                requests: vec![
                    RequestGroup {
                        action: "create".into(),
                        outcome: "rejected".into(),
                        reason: "overlap".into(),
                        count: 7,
                    },
                    RequestGroup {
                        action: "create".into(),
                        outcome: "accepted".into(),
                        reason: String::new(),
                        count: 9,
                    },
                ],
            }),
            pass: Some(PassFigures {
                seconds: 0.25,
                queries: 6,
                backfills: 2,
                at: 1_700_000_000,
            }),
            passes: 3,
            spool_incoming: 4,
            spool_active: 0,
            spool_deferred: 7,
            denials_suppressed: 9,
        };
        let text = render(&s).unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "# TYPE backfilld_backfills gauge",
            "backfilld_backfills{state=\"running\"} 2",
            "backfilld_backfills{state=\"success\"} 0",
            "backfilld_backfills{state=\"awaiting_approval\"} 0",
            "backfilld_backfills_deleted 5",
            "backfilld_backfills_throttled 1",
            "backfilld_dates{state=\"succeeded\"} 3",
            "backfilld_dates{state=\"pending\"} 4",
            "# TYPE backfilld_requests_total counter",
            "backfilld_requests_total{action=\"create\",outcome=\"rejected\",reason=\"overlap\"} 7",
            "backfilld_reconcile_pass_duration_seconds 0.25",
            "backfilld_reconcile_pass_queries 6",
            "backfilld_reconcile_passes_total 3",
            "backfilld_spool_incoming_files 4",
            "backfilld_spool_deferred_files 7",
            "backfilld_audit_denials_suppressed_total 9",
            "backfilld_metadb_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        let down = render(&Snapshot::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(down.contains("backfilld_metadb_up 0"), "{down}");
        assert!(!down.contains("backfilld_backfills"), "{down}");
    }

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("backfilld.prom");
        write_textfile(&path, "a 1\n").unwrap_or_else(|e| panic!("{e}"));
        write_textfile(&path, "a 2\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("a 2\n")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
