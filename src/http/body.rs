//! Creation bodies → request files: one mapping, driven by a field table, for both the seed's
//! `/api/v1/plugins/backfills` body ([`SEED`]) and backfilld's `/api/v2/backfills` body
//! ([`V2`]). Each table names a body field, the request file key it becomes, how its value is
//! read (the seed's leniency — numbers as strings, `dag_params` as JSON text — is a property
//! of the field, not a second copy of the mapping) and whether it is required.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::ApiError;

/// When a required field counts as missing (the error is then "`<field>` is required").
#[derive(Debug, Clone, Copy)]
enum Blank {
    /// Absent or `null`.
    Null,
    /// Absent, `null` or `""`.
    NullOrEmpty,
    /// Absent, `null`, not a string, or `""`.
    NotText,
}

/// How a field's JSON value becomes a request file value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A string; with `keep_empty` false, `""` is left out.
    Text { keep_empty: bool },
    /// A range bound (`start`/`end`): see [`range_bound`].
    Bound,
    /// An instant; with `future_only`, one not after now is left out (it means "now").
    Instant { future_only: bool },
    /// An integer; `lenient` also takes a numeric string.
    Int { lenient: bool },
    /// A boolean; `lenient` also takes `"true"`/`"1"`/`1`; `drop_false` leaves `false` out.
    Bool { lenient: bool, drop_false: bool },
    /// An array of strings.
    Strings,
    /// The DAG's params, an object (kept even when empty).
    Params,
    /// The seed's `dag_params`: an object or JSON text of one; an empty one is left out.
    SeedParams,
}

/// One body field: its JSON name, the request file key it becomes, its kind, and whether it
/// is required (and what counts as missing).
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    key: &'static str,
    kind: Kind,
    required: Option<Blank>,
}

const fn field(name: &'static str, key: &'static str, kind: Kind) -> Field {
    Field {
        name,
        key,
        kind,
        required: None,
    }
}

const fn required(name: &'static str, key: &'static str, kind: Kind, blank: Blank) -> Field {
    Field {
        name,
        key,
        kind,
        required: Some(blank),
    }
}

const TEXT: Kind = Kind::Text { keep_empty: true };
const STRICT_INT: Kind = Kind::Int { lenient: false };
const STRICT_BOOL: Kind = Kind::Bool {
    lenient: false,
    drop_false: false,
};

/// The seed plugin's creation body, in the order its fields are checked.
const SEED: &[Field] = &[
    required("dag_id", "dag_id", TEXT, Blank::NotText),
    required("start_date", "start", Kind::Bound, Blank::NullOrEmpty),
    required("end_date", "end", Kind::Bound, Blank::NullOrEmpty),
    field(
        "description",
        "description",
        Kind::Text { keep_empty: false },
    ),
    field("dag_params", "params", Kind::SeedParams),
    field(
        "max_active_runs",
        "max_active_runs",
        Kind::Int { lenient: true },
    ),
    field(
        "scheduled_date",
        "scheduled_at",
        Kind::Instant { future_only: true },
    ),
    field("notify", "notify", Kind::Strings),
    field(
        "delete_duration_days",
        "delete_after_days",
        Kind::Int { lenient: true },
    ),
    field(
        "ignore_overlapping_backfills",
        "ignore_overlap",
        Kind::Bool {
            lenient: true,
            drop_false: false,
        },
    ),
];

/// backfilld's v2 creation body: the request file's own keys. Sorted by name, the order a
/// JSON object's keys come in, so the first bad field reported is the first in the body.
const V2: &[Field] = &[
    field("after", "after", Kind::Strings),
    required("dag_id", "dag_id", TEXT, Blank::Null),
    field("delete_after_days", "delete_after_days", STRICT_INT),
    field("description", "description", TEXT),
    field(
        "dry_run",
        "dry_run",
        Kind::Bool {
            lenient: false,
            drop_false: true,
        },
    ),
    field("emit_asset_events", "emit_asset_events", STRICT_BOOL),
    required("end", "end", Kind::Bound, Blank::Null),
    field("ignore_overlap", "ignore_overlap", STRICT_BOOL),
    field("include_downstream", "include_downstream", STRICT_BOOL),
    field("include_upstream", "include_upstream", STRICT_BOOL),
    field("max_active_runs", "max_active_runs", STRICT_INT),
    field("notify", "notify", Kind::Strings),
    field("params", "params", Kind::Params),
    field("priority", "priority", STRICT_INT),
    field("reprocess", "reprocess", TEXT),
    field("run_backwards", "run_backwards", STRICT_BOOL),
    field(
        "scheduled_at",
        "scheduled_at",
        Kind::Instant { future_only: false },
    ),
    required("start", "start", Kind::Bound, Blank::Null),
    field("tasks", "tasks", Kind::Strings),
];

/// The request file of a seed creation body (`dag_id`, `start_date`, `end_date`,
/// `description`, `dag_params`, `max_active_runs`, `scheduled_date`, `delete_duration_days`,
/// `ignore_overlapping_backfills`, and backfilld's `notify`). Errors carry the seed's messages
/// where it has one.
pub fn seed_request(
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<toml::Table, ApiError> {
    request_file(SEED, body, now)
}

/// The request file of a v2 creation body: the request file's own keys, as JSON.
pub fn v2_request(body: &Map<String, Value>) -> Result<toml::Table, ApiError> {
    request_file(V2, body, Utc::now())
}

/// The one mapping: refuse unknown fields, then missing required ones (in table order), then
/// convert each present, non-null field in table order.
fn request_file(
    fields: &[Field],
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<toml::Table, ApiError> {
    if let Some(k) = body
        .keys()
        .find(|k| !fields.iter().any(|f| f.name == k.as_str()))
    {
        return Err(ApiError::bad_request(format!("unknown field {k:?}")));
    }
    for f in fields {
        if let Some(blank) = f.required {
            if missing(body.get(f.name), blank) {
                return Err(ApiError::bad_request(format!("{} is required", f.name)));
            }
        }
    }
    let mut t = toml::Table::new();
    for f in fields {
        let Some(v) = body.get(f.name).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(value) = convert(f, v, now)? {
            t.insert(f.key.into(), value);
        }
    }
    Ok(t)
}

fn missing(v: Option<&Value>, blank: Blank) -> bool {
    match (v, blank) {
        (None | Some(Value::Null), _) => true,
        (Some(v), Blank::NullOrEmpty) => v.as_str() == Some(""),
        (Some(v), Blank::NotText) => v.as_str().is_none_or(str::is_empty),
        (Some(_), Blank::Null) => false,
    }
}

/// A field's request file value, or `None` when the field leaves it out.
fn convert(f: &Field, v: &Value, now: DateTime<Utc>) -> Result<Option<toml::Value>, ApiError> {
    let name = f.name;
    let value = match f.kind {
        Kind::Text { keep_empty } => {
            let s = as_text(name, v)?;
            if s.is_empty() && !keep_empty {
                return Ok(None);
            }
            toml::Value::String(s.to_owned())
        }
        Kind::Bound => range_bound(name, as_text(name, v)?)?,
        Kind::Instant { future_only } => {
            let when = parse_date(name, as_text(name, v)?)?;
            if future_only && when <= now {
                return Ok(None);
            }
            toml_datetime(when)?
        }
        Kind::Int { lenient } => {
            let n = if lenient { as_int(v) } else { v.as_i64() };
            toml::Value::Integer(
                n.ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer")))?,
            )
        }
        Kind::Bool {
            lenient,
            drop_false,
        } => {
            let b = if lenient { as_bool(v) } else { v.as_bool() };
            match b {
                Some(false) if drop_false => return Ok(None),
                Some(b) => toml::Value::Boolean(b),
                None => return Err(ApiError::bad_request(format!("{name} must be a boolean"))),
            }
        }
        Kind::Strings => match v.as_array() {
            Some(items) if items.iter().all(Value::is_string) => json_to_toml(name, v)?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{name} must be an array of strings"
                )))
            }
        },
        Kind::Params => match v {
            Value::Object(_) => json_to_toml(name, v)?,
            _ => return Err(ApiError::bad_request(format!("{name} must be an object"))),
        },
        Kind::SeedParams => {
            let parsed: Value = match v {
                Value::String(s) if s.trim().is_empty() => Value::Object(Map::new()),
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| ApiError::bad_request(format!("{name} must be dict: {e}")))?,
                other => other.clone(),
            };
            let Value::Object(map) = parsed else {
                return Err(ApiError::bad_request(format!("{name} must be dict")));
            };
            if map.is_empty() {
                return Ok(None);
            }
            json_to_toml(name, &Value::Object(map))?
        }
    };
    Ok(Some(value))
}

/// Parse a date as the seed (pendulum) does for its fields: RFC 3339, a naive date-time
/// (UTC), or a date (00:00 UTC).
pub fn parse_date(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(d.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(d) = d.and_hms_opt(0, 0, 0) {
            return Ok(d.and_utc());
        }
    }
    Err(ApiError::bad_request(format!(
        "{field} must be a date or date-time (e.g. 2024-01-01 or 2024-01-01T00:00:00+00:00), not {text:?}"
    )))
}

/// A range bound (`start`/`end`) for the request file: with an offset an exact instant (in
/// UTC), without one (a date or a local date-time) a TOML local date-time, which means that
/// wall-clock time in the DAG's schedule timezone.
fn range_bound(field: &str, text: &str) -> Result<toml::Value, ApiError> {
    let instant = parse_date(field, text)?;
    if DateTime::parse_from_rfc3339(text.trim()).is_ok() {
        return toml_datetime(instant);
    }
    // parse_date read the wall-clock time as if it were UTC.
    instant
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
        .parse::<toml::value::Datetime>()
        .map(toml::Value::Datetime)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn toml_datetime(t: DateTime<Utc>) -> Result<toml::Value, ApiError> {
    t.format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .parse::<toml::value::Datetime>()
        .map(toml::Value::Datetime)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn json_to_toml(field: &str, v: &Value) -> Result<toml::Value, ApiError> {
    toml::Value::try_from(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{field} cannot be passed to the DAG (null values are not supported): {e}"
        ))
    })
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(matches!(s.to_ascii_lowercase().as_str(), "true" | "1")),
        Value::Number(n) => Some(n.as_i64() == Some(1)),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_text<'a>(field: &str, v: &'a Value) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be a string")))
}

#[cfg(test)]
mod tests;
