//! A backfill request file: strict parsing and the checks that need no database.
//!
//! Every failure is a [`Rejection`]: a machine-readable [`ReasonCode`] plus a message written
//! for the requester. Nothing here does I/O.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::authz::Action;
use crate::lifecycle::Reprocess;

/// Longest `dag_id` Airflow accepts.
pub const AIRFLOW_ID_MAX: usize = 250;
/// Characters the backfill id adds to the origin id (`_backfill_YYYYmmdd_HHMMSS` plus a
/// same-second suffix such as `_99`).
pub const BACKFILL_ID_EXTRA: usize = "_backfill_20240101_000000_99".len();
/// Longest description kept.
pub const DESCRIPTION_MAX: usize = 2000;
/// Largest params table, as serialized JSON.
pub const PARAMS_JSON_MAX: usize = 32 * 1024;
/// Longest params key.
pub const PARAMS_KEY_MAX: usize = 250;
/// Deepest nesting of arrays and tables inside `params`.
pub const PARAMS_DEPTH_MAX: usize = 16;
/// Longest Airflow user name in `on_behalf_of` (FAB's `ab_user.username` is 256 wide).
pub const USERNAME_MAX: usize = 256;
/// Largest `delete_after_days` (ten years).
pub const DELETE_AFTER_DAYS_MAX: u32 = 3650;
/// Deepest bracket nesting accepted in a request file before parsing.
pub const TOML_DEPTH_MAX: usize = 32;

/// Why a request was rejected, stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The spool entry is a symlink.
    Symlink,
    /// The spool entry is not a regular file (FIFO, socket, device, directory).
    NotRegularFile,
    /// The file has more than one hard link.
    HardLinked,
    /// The file is larger than the configured cap.
    TooLarge,
    /// The file changed while it was read.
    ChangedWhileReading,
    /// The file is not UTF-8.
    InvalidUtf8,
    /// The file is not valid TOML, or a value has the wrong type.
    InvalidToml,
    /// The file has a key backfilld does not know.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value is malformed or out of range.
    InvalidValue,
    /// `start` is after `end`.
    StartAfterEnd,
    /// `max_active_runs` outside 1..=limit.
    MaxActiveRunsOutOfBounds,
    /// `params` is not a table.
    ParamsNotTable,
    /// No such DAG in Airflow.
    UnknownDag,
    /// The DAG exists but is no longer active in Airflow.
    DagDeleted,
    /// The DAG has not been parsed into Airflow's serialized form yet.
    DagNotSerialized,
    /// The DAG's schedule cannot be backfilled.
    UnsupportedSchedule,
    /// The DAG's `allowed_run_types` (Airflow 3.2+) leave out backfill runs.
    BackfillNotAllowed,
    /// No logical date falls in the range.
    NoLogicalDates,
    /// More logical dates than allowed.
    TooManyDates,
    /// The user already has `[limits] max_active_backfills_per_user` unfinished backfills.
    TooManyActiveBackfills,
    /// The backfill copy's dag_id would exceed Airflow's dag_id limit.
    CopyIdTooLong,
    /// An active backfill of the same DAG overlaps the range.
    Overlap,
    /// The requester's uid has no user name.
    UnknownUser,
    /// The requester's unix user maps to no Airflow user (`[identity]`).
    UnmappedUser,
    /// No `ab_user` (or SimpleAuthManager user) has the mapped name.
    NoAirflowUser,
    /// The Airflow user is not active.
    InactiveUser,
    /// `on_behalf_of` was set by a uid that is not a trusted submitter.
    OnBehalfNotAllowed,
    /// The user lacks the needed permission on `Backfills`.
    MissingBackfillPermission,
    /// The user may not edit the origin DAG.
    MissingDagEdit,
    /// The user may not read the origin DAG.
    MissingDagRead,
    /// Airflow's auth manager cannot be mirrored (or makes everyone admin): nobody is authorised.
    AuthUnavailable,
    /// The uid has too many undecided requests.
    TooManyPending,
    /// The file's mode is unsafe (setuid/setgid/sticky, or writable by group or others).
    UnsafeMode,
    /// A life-cycle request names no backfill backfilld knows.
    UnknownBackfill,
    /// The life-cycle action is not allowed in the backfill's state (see `lifecycle`).
    IllegalTransition,
    /// A `tasks` pattern matches no task of the DAG.
    NoMatchingTask,
    /// `after` names a backfill that does not exist (or that the requester may not read).
    UnknownPrerequisite,
    /// `after` names a backfill that already failed, was cancelled or deleted.
    PrerequisiteFailed,
    /// `import-seed` refused: the seed plugin's system DAGs still run and would keep acting on
    /// the backfills backfilld takes over.
    SeedPluginActive,
    /// Approving or rejecting needs one of `[approval] approver_roles`.
    NotAnApprover,
    /// The requester cannot approve or reject their own backfill.
    SelfApproval,
    /// An audit summary: denials of a requester over its rate, counted instead of written.
    RateLimited,
}

impl From<crate::authz::DenyCode> for ReasonCode {
    fn from(c: crate::authz::DenyCode) -> Self {
        use crate::authz::DenyCode;
        match c {
            DenyCode::InactiveUser => ReasonCode::InactiveUser,
            DenyCode::MissingBackfillPermission => ReasonCode::MissingBackfillPermission,
            DenyCode::MissingDagEdit => ReasonCode::MissingDagEdit,
            DenyCode::MissingDagRead => ReasonCode::MissingDagRead,
        }
    }
}

impl From<crate::authz::Denial> for Rejection {
    fn from(d: crate::authz::Denial) -> Self {
        Rejection::new(d.code.into(), d.message)
    }
}

/// What became of a request file: accepted (a backfill created, an action taken, or a dry
/// run's dates reported) or rejected (with a [`Rejection`]). Stored and shown as
/// `"accepted"` / `"rejected"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Refused; the record says why.
    #[default]
    Rejected,
    /// Taken.
    Accepted,
}

impl Outcome {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::Accepted => "accepted",
        }
    }

    /// The outcome of a stored name; anything but `accepted` reads as rejected.
    pub fn parse(text: &str) -> Outcome {
        if text == "accepted" {
            Outcome::Accepted
        } else {
            Outcome::Rejected
        }
    }

    /// Whether the request was taken.
    pub fn is_accepted(self) -> bool {
        self == Outcome::Accepted
    }
}

/// A rejected request: what went wrong, for scripts and for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: ReasonCode,
    /// Explanation for the requester.
    pub message: String,
}

impl Rejection {
    /// Build a rejection.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// The file as written by the user: every key backfilld knows, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    action: Option<String>,
    id: Option<String>,
    dry_run: Option<bool>,
    scheduled_at: Option<toml::value::Datetime>,
    delete_after_days: Option<i64>,
    reprocess: Option<String>,
    dag_id: Option<String>,
    start: Option<toml::value::Datetime>,
    end: Option<toml::value::Datetime>,
    description: Option<String>,
    max_active_runs: Option<i64>,
    params: Option<toml::Value>,
    ignore_overlap: Option<bool>,
    on_behalf_of: Option<String>,
    reason: Option<String>,
    tasks: Option<Vec<String>>,
    include_upstream: Option<bool>,
    include_downstream: Option<bool>,
    emit_asset_events: Option<bool>,
    after: Option<Vec<String>>,
    priority: Option<i64>,
    run_backwards: Option<bool>,
    notify: Option<Vec<String>>,
}

/// Options of a create beyond its range: the task subset, asset events and ordering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Run only the tasks whose id one of these patterns is found in (see `taskset`); empty:
    /// every task.
    pub tasks: Vec<String>,
    /// With `tasks`: also every task upstream of a selected one.
    pub include_upstream: bool,
    /// With `tasks`: also every task downstream of a selected one.
    pub include_downstream: bool,
    /// Let the copy's tasks emit dataset/asset events (`None`: `[copies]` default).
    pub emit_asset_events: Option<bool>,
    /// Write the copy only once these backfills succeeded (see `ordering`).
    pub after: Vec<String>,
    /// Turn order under a short throttle budget: higher first, then oldest waiting
    /// ([`PRIORITY_RANGE`], default 0).
    pub priority: i32,
    /// Run the newest date first (the daemon names each run; see `steer`).
    pub run_backwards: bool,
    /// Who is told when it finishes, is cancelled or waits for approval
    /// (`mailto:ADDRESS`, a webhook URL or `slack:URL`; see `notification`).
    pub notify: Vec<String>,
}

/// The bounds of a request's range that were written as wall-clock times (no offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WallClock {
    /// `start`, when written as a bare date or a local datetime.
    pub start: Option<chrono::NaiveDateTime>,
    /// `end`, when written as a bare date or a local datetime.
    pub end: Option<chrono::NaiveDateTime>,
}

/// The `priority` values a request may set.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -10..=10;

/// A request that passed every check that needs no database.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The origin DAG.
    pub dag_id: String,
    /// First logical date (inclusive), UTC. When `wall_clock.start` is set, this is that
    /// wall-clock time read as UTC until the engine knows the DAG's schedule timezone.
    pub start: DateTime<Utc>,
    /// Last logical date (inclusive), UTC (see `start`).
    pub end: DateTime<Utc>,
    /// The range's bounds written without an offset (a bare date or a local datetime): they
    /// mean that wall-clock time in the DAG's schedule timezone.
    pub wall_clock: WallClock,
    /// Free text shown with the backfill.
    pub description: Option<String>,
    /// Concurrent runs of the copy.
    pub max_active_runs: u32,
    /// Param overrides merged over the DAG's params.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Accept a range overlapping another active backfill of the DAG.
    pub ignore_overlap: bool,
    /// The Airflow user a trusted submitter acts for (checked by the engine).
    pub on_behalf_of: Option<String>,
    /// Validate and report the dates only; create nothing.
    pub dry_run: bool,
    /// Write the DAG copy only from this instant on (until then the backfill is `submitted`).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Delete the backfill this many days after it finished (`None`: the configured default).
    pub delete_after_days: Option<u32>,
    /// What to do with dates the origin DAG already ran.
    pub reprocess: Reprocess,
    /// Task subset, asset events, ordering.
    pub options: Options,
}

/// A life-cycle request on an existing backfill (`action` other than `"create"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// What to do: cancel, pause, resume, delete or retry.
    pub action: Action,
    /// The backfill id.
    pub id: String,
    /// The Airflow user a trusted submitter acts for (checked by the engine).
    pub on_behalf_of: Option<String>,
    /// Why (`reject` only, where it is required).
    pub reason: Option<String>,
}

/// What a request file asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A new backfill (`action = "create"`, the default).
    Create(Request),
    /// A life-cycle action on an existing backfill.
    Operate(Operation),
}

impl Parsed {
    /// The action asked for.
    pub fn action(&self) -> Action {
        match self {
            Parsed::Create(_) => Action::Create,
            Parsed::Operate(op) => op.action,
        }
    }

    /// The `on_behalf_of` user named in the file.
    pub fn on_behalf_of(&self) -> Option<&str> {
        match self {
            Parsed::Create(r) => r.on_behalf_of.as_deref(),
            Parsed::Operate(op) => op.on_behalf_of.as_deref(),
        }
    }
}

/// The life-cycle actions a request file may name, besides `create`.
const OPERATIONS: [Action; 7] = [
    Action::Cancel,
    Action::Pause,
    Action::Resume,
    Action::Delete,
    Action::Retry,
    Action::Approve,
    Action::Reject,
];

/// Longest `reason` of a `reject`.
pub const REASON_MAX: usize = 2000;

/// Parse a request to create a backfill; a file naming another action is refused (see
/// [`parse_any`]).
pub fn parse(bytes: &[u8], max_active_runs_limit: u32) -> Result<Request, Rejection> {
    match parse_any(bytes, max_active_runs_limit)? {
        Parsed::Create(r) => Ok(r),
        Parsed::Operate(op) => Err(Rejection::new(
            ReasonCode::InvalidValue,
            format!("action = {:?} is not a create request", op.action.as_str()),
        )),
    }
}

/// Parse a request file's bytes: a create request or a life-cycle action.
/// `max_active_runs_limit` bounds `max_active_runs`.
pub fn parse_any(bytes: &[u8], max_active_runs_limit: u32) -> Result<Parsed, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            ReasonCode::InvalidUtf8,
            format!("request is not valid UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    check_nesting(text)?;
    let raw: RawRequest = toml::from_str(text).map_err(toml_rejection)?;
    let action = match raw.action.as_deref() {
        None | Some("create") => Action::Create,
        Some(name) => match OPERATIONS.into_iter().find(|a| a.as_str() == name) {
            Some(a) => a,
            None => {
                return Err(Rejection::new(
                    ReasonCode::InvalidValue,
                    format!("action = {name:?} is unknown; use create, cancel, pause, resume, delete, retry, approve or reject"),
                ))
            }
        },
    };
    if action != Action::Create {
        return parse_operation(action, raw).map(Parsed::Operate);
    }
    if raw.id.is_some() {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            "id names an existing backfill and applies only to cancel, pause, resume, delete, retry, approve and reject",
        ));
    }
    if raw.reason.is_some() {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            "reason applies only to reject",
        ));
    }
    let missing = |key: &str| {
        Rejection::new(
            ReasonCode::MissingKey,
            format!("missing field `{key}` (required to create a backfill)"),
        )
    };
    let (Some(raw_dag_id), Some(raw_start), Some(raw_end)) = (&raw.dag_id, &raw.start, &raw.end)
    else {
        let key = if raw.dag_id.is_none() {
            "dag_id"
        } else if raw.start.is_none() {
            "start"
        } else {
            "end"
        };
        return Err(missing(key));
    };
    let dag_id = check_dag_id(raw_dag_id)?;
    let options = parse_options(&raw)?;
    let (start, start_wall) = range_bound("start", raw_start)?;
    let (end, end_wall) = range_bound("end", raw_end)?;
    if start > end {
        return Err(Rejection::new(
            ReasonCode::StartAfterEnd,
            format!("start {} is after end {}", fmt_ts(start), fmt_ts(end)),
        ));
    }
    let max_active_runs = match raw.max_active_runs {
        None => 1,
        Some(n) if n >= 1 && n <= i64::from(max_active_runs_limit) => u32::try_from(n).unwrap_or(1),
        Some(n) => {
            return Err(Rejection::new(
                ReasonCode::MaxActiveRunsOutOfBounds,
                format!(
                    "max_active_runs = {n} is out of bounds: allowed 1..={max_active_runs_limit}"
                ),
            ))
        }
    };
    let params = match raw.params {
        None => serde_json::Map::new(),
        Some(toml::Value::Table(t)) => {
            let json = serde_json::to_value(&t)
                .map_err(|e| Rejection::new(ReasonCode::InvalidValue, format!("params: {e}")))?;
            let size = json.to_string().len();
            if size > PARAMS_JSON_MAX {
                return Err(Rejection::new(
                    ReasonCode::InvalidValue,
                    format!("params are {size} bytes as JSON; at most {PARAMS_JSON_MAX}"),
                ));
            }
            check_params(&json, 0)?;
            match json {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            }
        }
        Some(other) => {
            return Err(Rejection::new(
                ReasonCode::ParamsNotTable,
                format!(
                    "params must be a table ([params]), not a {}",
                    other.type_str()
                ),
            ))
        }
    };
    let description = match raw.description {
        Some(d) if d.chars().count() > DESCRIPTION_MAX => {
            return Err(Rejection::new(
                ReasonCode::InvalidValue,
                format!("description is longer than {DESCRIPTION_MAX} characters"),
            ))
        }
        d => d,
    };
    let on_behalf_of = match raw.on_behalf_of {
        Some(u) => Some(check_username(&u)?),
        None => None,
    };
    let scheduled_at = match &raw.scheduled_at {
        None => None,
        Some(t) if t.time.is_none() || t.offset.is_none() => {
            return Err(Rejection::new(
                ReasonCode::InvalidValue,
                format!(
                    "scheduled_at = {t}: write a datetime with an offset (2024-01-31T06:00:00Z)"
                ),
            ))
        }
        Some(t) => Some(to_utc("scheduled_at", t)?),
    };
    let delete_after_days = match raw.delete_after_days {
        None => None,
        Some(n) if (0..=i64::from(DELETE_AFTER_DAYS_MAX)).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            return Err(Rejection::new(
                ReasonCode::InvalidValue,
                format!(
                    "delete_after_days = {n} is out of bounds: allowed 0..={DELETE_AFTER_DAYS_MAX}"
                ),
            ))
        }
    };
    let reprocess = match raw.reprocess.as_deref() {
        None => Reprocess::default(),
        Some(s) => Reprocess::parse(s).ok_or_else(|| {
            Rejection::new(
                ReasonCode::InvalidValue,
                format!("reprocess = {s:?} is unknown; use \"none\", \"failed\" or \"completed\""),
            )
        })?,
    };
    Ok(Parsed::Create(Request {
        options,
        on_behalf_of,
        dag_id,
        start,
        end,
        wall_clock: WallClock {
            start: start_wall,
            end: end_wall,
        },
        description,
        max_active_runs,
        params,
        ignore_overlap: raw.ignore_overlap.unwrap_or(false),
        dry_run: raw.dry_run.unwrap_or(false),
        scheduled_at,
        delete_after_days,
        reprocess,
    }))
}

/// The options of a create: patterns checked (`taskset`), `after` checked (`ordering`).
fn parse_options(raw: &RawRequest) -> Result<Options, Rejection> {
    let invalid = |m: String| Rejection::new(ReasonCode::InvalidValue, m);
    let tasks = raw.tasks.clone().unwrap_or_default();
    if raw.tasks.is_some() && tasks.is_empty() {
        return Err(invalid(
            "tasks is empty; leave it out to run every task".into(),
        ));
    }
    crate::taskset::check_patterns(&tasks).map_err(invalid)?;
    if tasks.is_empty() {
        for (key, set) in [
            ("include_upstream", raw.include_upstream.is_some()),
            ("include_downstream", raw.include_downstream.is_some()),
        ] {
            if set {
                return Err(invalid(format!("{key} applies only with tasks")));
            }
        }
    }
    let after =
        crate::ordering::check_list(raw.after.as_deref().unwrap_or_default()).map_err(invalid)?;
    let priority = match raw.priority {
        None => 0,
        Some(n) if PRIORITY_RANGE.contains(&n) => i32::try_from(n).unwrap_or(0),
        Some(n) => {
            return Err(invalid(format!(
                "priority = {n} is out of bounds: allowed {}..={}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            )))
        }
    };
    let notify = match &raw.notify {
        None => Vec::new(),
        Some(list) if list.is_empty() => {
            return Err(invalid(
                "notify is empty; leave it out to use the defaults".into(),
            ))
        }
        Some(list) => crate::notification::check_list(list).map_err(invalid)?,
    };
    Ok(Options {
        notify,
        priority,
        run_backwards: raw.run_backwards.unwrap_or(false),
        tasks,
        include_upstream: raw.include_upstream.unwrap_or(false),
        include_downstream: raw.include_downstream.unwrap_or(false),
        emit_asset_events: raw.emit_asset_events,
        after,
    })
}

/// A life-cycle request: `id` and optionally `on_behalf_of`; every create key is refused.
fn parse_operation(action: Action, raw: RawRequest) -> Result<Operation, Rejection> {
    let create_only = [
        ("dag_id", raw.dag_id.is_some()),
        ("start", raw.start.is_some()),
        ("end", raw.end.is_some()),
        ("description", raw.description.is_some()),
        ("max_active_runs", raw.max_active_runs.is_some()),
        ("params", raw.params.is_some()),
        ("ignore_overlap", raw.ignore_overlap.is_some()),
        ("dry_run", raw.dry_run.is_some()),
        ("scheduled_at", raw.scheduled_at.is_some()),
        ("delete_after_days", raw.delete_after_days.is_some()),
        ("reprocess", raw.reprocess.is_some()),
        ("tasks", raw.tasks.is_some()),
        ("include_upstream", raw.include_upstream.is_some()),
        ("include_downstream", raw.include_downstream.is_some()),
        ("emit_asset_events", raw.emit_asset_events.is_some()),
        ("after", raw.after.is_some()),
        ("priority", raw.priority.is_some()),
        ("run_backwards", raw.run_backwards.is_some()),
        ("notify", raw.notify.is_some()),
    ];
    if let Some((key, _)) = create_only.iter().find(|(_, set)| *set) {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            format!(
                "{key} applies only to create; action = {:?} takes only id (and on_behalf_of)",
                action.as_str()
            ),
        ));
    }
    let Some(id) = raw.id else {
        return Err(Rejection::new(
            ReasonCode::MissingKey,
            format!("missing field `id` (the backfill to {})", action.as_str()),
        ));
    };
    let id = check_backfill_id(&id)?;
    let on_behalf_of = match raw.on_behalf_of {
        Some(u) => Some(check_username(&u)?),
        None => None,
    };
    let reason = match (action, raw.reason) {
        (Action::Reject, None) => {
            return Err(Rejection::new(
                ReasonCode::MissingKey,
                "missing field `reason` (why the backfill is rejected, for the requester)",
            ))
        }
        (Action::Reject, Some(r)) => {
            let r = r.trim().to_owned();
            if r.is_empty()
                || r.chars().count() > REASON_MAX
                || r.chars().any(|c| c.is_control() && c != '\n')
            {
                return Err(Rejection::new(
                    ReasonCode::InvalidValue,
                    format!(
                        "reason must have 1 to {REASON_MAX} characters without control characters"
                    ),
                ));
            }
            Some(r)
        }
        (_, Some(_)) => {
            return Err(Rejection::new(
                ReasonCode::InvalidValue,
                format!(
                    "reason applies only to reject, not to action = {:?}",
                    action.as_str()
                ),
            ))
        }
        (_, None) => None,
    };
    Ok(Operation {
        action,
        id,
        on_behalf_of,
        reason,
    })
}

/// A backfill id as a request names it: Airflow's id rule, at most 250 characters.
pub fn check_backfill_id(id: &str) -> Result<String, Rejection> {
    if id.is_empty()
        || id.len() > AIRFLOW_ID_MAX
        || id.contains("..")
        || id == "."
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            format!(
                "id must be a backfill id: 1 to {AIRFLOW_ID_MAX} letters, digits, '_', '.' or '-', without '..'"
            ),
        ));
    }
    Ok(id.to_owned())
}

/// Refuse deep nesting before the TOML parser sees it (a "TOML bomb"). Counts `[` and `{`
/// outside strings and comments; conservative: a bracket inside a multi-line string may count.
fn check_nesting(text: &str) -> Result<(), Rejection> {
    let mut depth = 0usize;
    let mut in_str: Option<u8> = None;
    let mut comment = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if comment {
            comment = b != b'\n';
            continue;
        }
        if let Some(q) = in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' && q == b'"' {
                escaped = true;
            } else if b == q || b == b'\n' {
                in_str = None;
            }
            continue;
        }
        match b {
            b'"' | b'\'' => in_str = Some(b),
            b'#' => comment = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > TOML_DEPTH_MAX {
                    return Err(Rejection::new(
                        ReasonCode::InvalidToml,
                        format!("arrays and tables are nested more than {TOML_DEPTH_MAX} deep"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Bound params keys and nesting (the total size is bounded separately).
fn check_params(v: &serde_json::Value, depth: usize) -> Result<(), Rejection> {
    if depth > PARAMS_DEPTH_MAX {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            format!("params are nested more than {PARAMS_DEPTH_MAX} deep"),
        ));
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k.is_empty() || k.chars().count() > PARAMS_KEY_MAX {
                    return Err(Rejection::new(
                        ReasonCode::InvalidValue,
                        format!("params keys must have 1 to {PARAMS_KEY_MAX} characters"),
                    ));
                }
                check_params(v, depth + 1)?;
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                check_params(v, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An Airflow user name as written in `on_behalf_of`: 1..=256 characters, no control
/// characters or surrounding whitespace.
pub fn check_username(name: &str) -> Result<String, Rejection> {
    if name.is_empty()
        || name.chars().count() > USERNAME_MAX
        || name.chars().any(char::is_control)
        || name.trim() != name
    {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            format!("on_behalf_of must be an Airflow user name of 1 to {USERNAME_MAX} characters without control characters or surrounding spaces"),
        ));
    }
    Ok(name.to_owned())
}

/// Turn toml's error into a rejection naming the key where possible.
fn toml_rejection(e: toml::de::Error) -> Rejection {
    let message = e.message().to_owned();
    let code = if message.starts_with("unknown field") {
        ReasonCode::UnknownKey
    } else if message.starts_with("missing field") {
        ReasonCode::MissingKey
    } else {
        ReasonCode::InvalidToml
    };
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    Rejection::new(code, format!("{message}{at}"))
}

/// Airflow's id rule (`^[A-Za-z0-9_.-]+$`), and the backfill copy's id (the DAG id plus the
/// backfill suffix) within Airflow's 250 characters (`guard::copy_id_length`).
pub fn check_dag_id(id: &str) -> Result<String, Rejection> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            "dag_id must be non-empty and use only letters, digits, '_', '.' and '-' (Airflow's id rule)",
        ));
    }
    if id.contains("..") || id == "." {
        return Err(Rejection::new(
            ReasonCode::InvalidValue,
            "dag_id must not be '.' or contain '..' (it becomes part of a file name)",
        ));
    }
    if let Some(refusal) = crate::guard::copy_id_length(id) {
        return Err(refusal);
    }
    Ok(id.to_owned())
}

/// A range bound (`start`, `end`): an offset datetime is that instant; a date (its midnight) or
/// a local datetime is a wall-clock time, returned as well, and read as UTC until the DAG's
/// schedule timezone is known.
pub fn range_bound(
    key: &str,
    dt: &toml::value::Datetime,
) -> Result<(DateTime<Utc>, Option<chrono::NaiveDateTime>), Rejection> {
    if dt.offset.is_some() {
        return Ok((to_utc(key, dt)?, None));
    }
    let bad = |why: &str| {
        Rejection::new(
            ReasonCode::InvalidValue,
            format!("{key} = {dt}: {why}; write a date (2024-01-31), a local datetime (2024-01-31T06:00:00) or a datetime with an offset (2024-01-31T06:00:00Z)"),
        )
    };
    let date = dt.date.ok_or_else(|| bad("a time without a date"))?;
    let day = NaiveDate::from_ymd_opt(i32::from(date.year), date.month.into(), date.day.into())
        .ok_or_else(|| bad("no such date"))?;
    let time = match dt.time {
        None => chrono::NaiveTime::MIN,
        Some(time) => chrono::NaiveTime::from_hms_nano_opt(
            time.hour.into(),
            time.minute.into(),
            time.second.unwrap_or(0).into(),
            time.nanosecond.unwrap_or(0),
        )
        .ok_or_else(|| bad("no such time"))?,
    };
    let wall = day.and_time(time);
    Ok((Utc.from_utc_datetime(&wall), Some(wall)))
}

/// A TOML date is 00:00 UTC; an offset datetime is converted to UTC; anything else is refused.
pub fn to_utc(key: &str, dt: &toml::value::Datetime) -> Result<DateTime<Utc>, Rejection> {
    let bad = |why: &str| {
        Rejection::new(
            ReasonCode::InvalidValue,
            format!("{key} = {dt}: {why}; write a date (2024-01-31) or a datetime with an offset (2024-01-31T06:00:00Z)"),
        )
    };
    let date = dt.date.ok_or_else(|| bad("a time without a date"))?;
    let naive = NaiveDate::from_ymd_opt(i32::from(date.year), date.month.into(), date.day.into())
        .ok_or_else(|| bad("no such date"))?;
    let Some(time) = dt.time else {
        return Ok(Utc.from_utc_datetime(&naive.and_time(chrono::NaiveTime::MIN)));
    };
    let offset = dt
        .offset
        .ok_or_else(|| bad("a local datetime has no time zone"))?;
    let naive_time = chrono::NaiveTime::from_hms_nano_opt(
        time.hour.into(),
        time.minute.into(),
        time.second.unwrap_or(0).into(),
        time.nanosecond.unwrap_or(0),
    )
    .ok_or_else(|| bad("no such time"))?;
    let minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i32::from(minutes),
    };
    let fixed = chrono::FixedOffset::east_opt(minutes * 60).ok_or_else(|| bad("bad offset"))?;
    fixed
        .from_local_datetime(&naive.and_time(naive_time))
        .single()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| bad("no such instant"))
}

/// The canonical text form of a timestamp in backfilld (RFC 3339, UTC, seconds).
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
