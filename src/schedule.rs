//! Logical dates of a backfill range, computed from the origin DAG's timetable.
//!
//! backfilld writes a copy of a DAG whose `start_date`/`end_date` are the backfill range and lets
//! Airflow's scheduler create the runs. To know (and check) which runs that copy will get, this
//! module reproduces, in Rust, what Airflow's timetables compute for it: the logical dates the
//! scheduler creates with `catchup=True` between `start` and `end`, both inclusive.
//!
//! The rules, taken from Airflow 2.11, 3.1 and 3.3 (`airflow/timetables/interval.py`,
//! `trigger.py`, `simple.py`, `events.py`, `_cron.py`, `_delta.py`, `airflow/utils/timezone.py`):
//!
//! * cron timetables run in the timetable's timezone (an IANA name or a fixed offset; `[core]
//!   default_timezone` is already in it, Airflow serializes the DAG's resolved zone). Airflow's
//!   `_get_next(t)` takes the wall-clock reading of `t` in that zone (fold dropped), asks croniter
//!   for the next tick of that naive time, and then
//!   - when the hour field covers every hour (`_covers_every_hour`), adds the naive difference
//!     to `t` as elapsed time (so `30 * * * *` runs twice in a fall-back fold and the ticks stay
//!     an hour apart across a spring-forward gap);
//!   - otherwise localizes the naive tick with `make_aware` (`fold=1` through pendulum): a wall
//!     time in a DST gap is read with the offset before the gap (02:30 becomes 03:30 after a
//!     one-hour jump), an ambiguous one is the later of its two instants.
//!
//!   `_get_prev` mirrors it; `_align_to_next(t)` is `t` when `_get_prev(_get_next(t)) == t`,
//!   else `_get_next(t)`, and `_align_to_prev` mirrors that.
//! * `CronDataIntervalTimetable`: the first date is `_align_to_next(start)`; after a run at `d`
//!   the next is `max(_align_to_prev(_get_next(d)), first)` (Airflow 3.3 steps once more with
//!   `_get_next` if that does not move past `d`).
//! * `CronTriggerTimetable` (zero `interval`): `_align_to_next(start)`, then `_get_next` of the
//!   previous date; `MultipleCronTriggerTimetable` (zero `interval`): the earliest of its crons'
//!   proposals each time.
//! * delta timetables (`DeltaDataIntervalTimetable`, and `DeltaTriggerTimetable` with a zero
//!   `interval`): no alignment; `start`, `start + delta`, ... up to `end`. The scheduler works
//!   on the copy's UTC `start_date`, so the steps are taken in UTC whatever the DAG's zone: a
//!   `timedelta` is elapsed time, a `relativedelta` moves the UTC calendar one step at a time
//!   (calendar months clamp the day to the end of the month, so `months=1` from Jan 31 gives
//!   Feb 29, Mar 29, ...), as dateutil does.
//! * `@once` (`OnceTimetable`): a single run at `start` (when `start <= end`).
//! * `EventsTimetable`: the serialized event dates in `start..=end`, each once, in list order.
//! * `DatasetOrTimeSchedule` (2.x) and `AssetOrTimeSchedule` (3.x): the dates of their time
//!   part (`next_dagrun_info` delegates to it; dataset/asset events add runs of their own).
//! * no schedule, `@continuous`, dataset/asset-triggered and the partitioned timetables of
//!   Airflow 3.3 cannot be backfilled by date: [`ScheduleError::Unsupported`] says why.
//! * any other class (e.g. a plugin's timetable) is [`ScheduleError::NotNative`]: its runs come
//!   from Airflow's own Python ([`crate::airflow_python`]).
//!
//! The tz database is jiff's view of the system's (`/usr/share/zoneinfo`), the same files
//! Python's `zoneinfo` (and so pendulum) reads on the Airflow host.
//!
//! Cron expressions are evaluated with `croner`, after this module has parsed and normalized them
//! the way croniter (Airflow's cron library) reads them. Only the syntax both libraries agree on is
//! accepted: 5 fields of numbers, names, `*`, `a-b`, `*/n`, `a-b/n`, `a/n` and lists, plus `L` as
//! a whole day-of-month field and the `@` presets. Anything else (seconds or year fields, `#`,
//! `W`, `H`, wrapping or equal ranges) is refused as unsupported rather than risk a different
//! schedule.

use std::fmt;

use chrono::{DateTime, Datelike, Months, TimeDelta, Timelike, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde_json::Value;

mod cron;
use cron::*;

/// Why a timetable cannot be turned into logical dates.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule is valid for Airflow but backfilld cannot backfill it; the text says why.
    #[error("schedule cannot be backfilled by backfilld: {0}")]
    Unsupported(String),
    /// A timetable class backfilld does not compute natively (e.g. one registered by an
    /// Airflow plugin), named: its runs can only come from Airflow itself
    /// ([`crate::airflow_python`]).
    #[error("not computed natively: timetable class {0}")]
    NotNative(String),
    /// The serialized timetable or its cron expression is malformed.
    #[error("invalid serialized schedule: {0}")]
    Invalid(String),
    /// The range holds more logical dates than the caller's limit.
    #[error("the backfill range holds more than {limit} logical dates")]
    TooMany {
        /// The limit that was exceeded.
        limit: usize,
    },
}

/// An origin DAG's timetable, restricted to the kinds backfilld can compute.
#[derive(Debug, Clone, PartialEq)]
pub enum Timetable {
    /// `CronDataIntervalTimetable`: a run per cron interval, logical date = interval start.
    CronDataInterval(CronSchedule),
    /// `CronTriggerTimetable` with a zero `interval`: logical date = the cron tick.
    CronTrigger(CronSchedule),
    /// `MultipleCronTriggerTimetable` (Airflow 3) with a zero `interval`: the union of the ticks.
    MultipleCronTrigger(Vec<CronSchedule>),
    /// `DeltaDataIntervalTimetable`: a run per delta, starting exactly at the start date.
    DeltaDataInterval(Delta),
    /// `DeltaTriggerTimetable` with a zero `interval`: same dates as [`Timetable::DeltaDataInterval`].
    DeltaTrigger(Delta),
    /// `OnceTimetable` (`@once`): one run at the start date.
    Once,
    /// `EventsTimetable`: the serialized event dates, in their serialized order.
    Events(Vec<DateTime<Utc>>),
}

/// A validated 5-field cron expression and the timezone it runs in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as Airflow stored it (possibly a preset such as `@daily`).
    expression: String,
    /// The timezone as Airflow stored it: a name, or a fixed offset shown as `+05:30`.
    timezone: String,
    /// The zone itself.
    zone: Zone,
    /// The expression normalized to croniter's reading, as given to croner.
    normalized: String,
    /// Whether the expression can ever match (day of month vs month lengths).
    satisfiable: bool,
    /// croniter expands the hour field to `*` (Airflow's `_covers_every_hour`).
    covers_every_hour: bool,
    /// The croner schedule for `normalized`.
    cron: Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
            && self.timezone == other.timezone
            && self.normalized == other.normalized
    }
}

/// A timetable's timezone: a tz-database zone or a fixed offset (both through jiff).
#[derive(Debug, Clone)]
pub struct Zone {
    tz: jiff::tz::TimeZone,
    /// Whether the offset never changes (UTC and fixed offsets).
    fixed: bool,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            tz: jiff::tz::TimeZone::UTC,
            fixed: true,
        }
    }

    /// The zone Airflow decodes from a serialized timezone (`parse_timezone`): an IANA name, or
    /// a pendulum `FixedTimezone` encoded as its offset in seconds east of UTC.
    pub fn from_serialized(timezone: &Value) -> Result<Zone, ScheduleError> {
        match timezone {
            Value::String(name) if UTC_NAMES.contains(&name.as_str()) => Ok(Zone::utc()),
            Value::String(name) => {
                let tz = jiff::tz::TimeZone::get(name).map_err(|e| {
                    ScheduleError::Invalid(format!(
                        "timezone '{name}' is not in this host's tz database: {e}"
                    ))
                })?;
                Ok(Zone { tz, fixed: false })
            }
            Value::Number(offset) => {
                let seconds = offset
                    .as_i64()
                    .and_then(|s| i32::try_from(s).ok())
                    .ok_or_else(|| {
                        ScheduleError::Invalid(format!(
                            "timezone offset {offset} is not whole seconds"
                        ))
                    })?;
                let offset = jiff::tz::Offset::from_seconds(seconds).map_err(|e| {
                    ScheduleError::Invalid(format!("timezone offset {seconds} s: {e}"))
                })?;
                Ok(Zone {
                    tz: jiff::tz::TimeZone::fixed(offset),
                    fixed: true,
                })
            }
            other => Err(ScheduleError::Invalid(format!(
                "timezone is neither a name nor an offset: {other}"
            ))),
        }
    }

    /// The UTC offset at instant `at`.
    fn offset_at(&self, at: DateTime<Utc>) -> Result<TimeDelta, ScheduleError> {
        let timestamp = jiff::Timestamp::new(at.timestamp(), 0)
            .map_err(|e| ScheduleError::Invalid(format!("date {at} is out of range: {e}")))?;
        Ok(TimeDelta::seconds(i64::from(
            self.tz.to_offset(timestamp).seconds(),
        )))
    }

    /// The wall-clock reading of `at` in this zone, as a naive time (carried in a UTC value),
    /// like Airflow's `make_naive`: which side of a fold it was on is lost.
    pub fn wall_clock(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let offset = self.offset_at(at)?;
        at.checked_add_signed(offset)
            .ok_or_else(|| ScheduleError::Invalid(format!("date {at} is out of range")))
    }

    /// The instant of a naive wall-clock time (carried in a UTC value) in this zone, as
    /// Airflow's `make_aware` gives it (`fold=1` through pendulum's `Timezone.convert`): a time
    /// in a gap is read with the offset before the gap, an ambiguous time is its later instant.
    pub fn localize(&self, wall: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        use jiff::tz::AmbiguousOffset;
        let out_of_range = || ScheduleError::Invalid(format!("date {wall} is out of range"));
        let civil = jiff::civil::DateTime::new(
            i16::try_from(wall.year()).map_err(|_| out_of_range())?,
            // Calendar fields are small: the casts are exact.
            wall.month() as i8,
            wall.day() as i8,
            wall.hour() as i8,
            wall.minute() as i8,
            wall.second() as i8,
            0,
        )
        .map_err(|_| out_of_range())?;
        let offset = match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            AmbiguousOffset::Gap { before, .. } => before,
            AmbiguousOffset::Fold { after, .. } => after,
        };
        wall.checked_sub_signed(TimeDelta::seconds(i64::from(offset.seconds())))
            .ok_or_else(out_of_range)
    }
}

impl CronSchedule {
    /// The cron expression as Airflow serialized it.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The timezone as Airflow serialized it (a name, or a fixed offset shown as `+05:30`).
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The zone the expression runs in.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }
}

/// The step of a delta timetable: a `timedelta` or a simple (relative-only) `relativedelta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// A fixed `datetime.timedelta`.
    Fixed(TimeDelta),
    /// A `dateutil.relativedelta` with only non-negative relative fields: calendar months first
    /// (day clamped to the month's length), then a fixed remainder.
    Calendar {
        /// `years * 12 + months`.
        months: u32,
        /// `days`, `hours`, `minutes`, `seconds` and `microseconds` together.
        rest: TimeDelta,
    },
}

impl Delta {
    /// `at + self`, as Python computes `pendulum.DateTime + delta` in UTC.
    fn add_to(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Delta::Fixed(delta) => at.checked_add_signed(*delta),
            Delta::Calendar { months, rest } => at
                .checked_add_months(Months::new(*months))?
                .checked_add_signed(*rest),
        }
    }
}

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delta::Fixed(delta) => f.write_str(&format_time_delta(*delta)),
            Delta::Calendar { months, rest } => {
                let mut parts = Vec::new();
                let (years, months) = (months / 12, months % 12);
                if years > 0 {
                    parts.push(format!("{years} year{}", if years == 1 { "" } else { "s" }));
                }
                if months > 0 {
                    parts.push(format!(
                        "{months} month{}",
                        if months == 1 { "" } else { "s" }
                    ));
                }
                if !rest.is_zero() {
                    parts.push(format_time_delta(*rest));
                }
                f.write_str(&parts.join(" "))
            }
        }
    }
}

/// `90061.5 s` as `1d 1h 1m 1.5s`.
fn format_time_delta(delta: TimeDelta) -> String {
    let total_micros = delta.num_microseconds().unwrap_or(i64::MAX);
    let (secs, micros) = (total_micros / 1_000_000, total_micros % 1_000_000);
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if hours > 0 {
        parts.push(format!("{hours}h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes}m"));
    }
    if micros > 0 {
        let fraction = format!("{micros:06}");
        parts.push(format!("{seconds}.{}s", fraction.trim_end_matches('0')));
    } else if seconds > 0 || parts.is_empty() {
        parts.push(format!("{seconds}s"));
    }
    parts.join(" ")
}

// Airflow's importable names of the built-in timetables.
const CRON_DATA_INTERVAL: &str = "airflow.timetables.interval.CronDataIntervalTimetable";
const DELTA_DATA_INTERVAL: &str = "airflow.timetables.interval.DeltaDataIntervalTimetable";
const CRON_TRIGGER: &str = "airflow.timetables.trigger.CronTriggerTimetable";
const DELTA_TRIGGER: &str = "airflow.timetables.trigger.DeltaTriggerTimetable";
const MULTIPLE_CRON_TRIGGER: &str = "airflow.timetables.trigger.MultipleCronTriggerTimetable";
const ONCE: &str = "airflow.timetables.simple.OnceTimetable";
const NULL: &str = "airflow.timetables.simple.NullTimetable";
const CONTINUOUS: &str = "airflow.timetables.simple.ContinuousTimetable";
const DATASET_TRIGGERED: &str = "airflow.timetables.simple.DatasetTriggeredTimetable";
const ASSET_TRIGGERED: &str = "airflow.timetables.simple.AssetTriggeredTimetable";
const DATASET_OR_TIME: &str = "airflow.timetables.datasets.DatasetOrTimeSchedule";
const ASSET_OR_TIME: &str = "airflow.timetables.assets.AssetOrTimeSchedule";
const EVENTS: &str = "airflow.timetables.events.EventsTimetable";
const CRON_PARTITION: &str = "airflow.timetables.trigger.CronPartitionTimetable";
const PARTITIONED_ASSET: &str = "airflow.timetables.simple.PartitionedAssetTimetable";
const PARTITIONED_AT_RUNTIME: &str = "airflow.timetables.simple.PartitionedAtRuntime";

const NO_SCHEDULE: &str = "DAG has no schedule (None): its runs are only ever triggered \
                           manually or externally, so there are no logical dates to backfill";
const CONTINUOUS_SCHEDULE: &str = "DAG has a continuous schedule (@continuous): each run starts \
                                   when the previous one ends, so its logical dates are not fixed";

impl Timetable {
    /// Parse Airflow's serialized timetable object (the value of "timetable").
    ///
    /// That is `{"__type": "<importable class name>", "__var": {...}}`, as written by
    /// `encode_timetable` into `serialized_dag.data` under `"dag" -> "timetable"`. Well-formed
    /// timetables that cannot be backfilled (no schedule, `@continuous`, dataset/asset-triggered,
    /// event and custom timetables, timezones other than UTC) give [`ScheduleError::Unsupported`].
    ///
    /// Airflow 2 stores most simple schedules (`@daily`, timedeltas, `None`) as
    /// `"schedule_interval"` instead, with no `"timetable"` key: use
    /// [`Timetable::from_serialized_dag`] on the whole `"dag"` object to handle both forms.
    pub fn from_serialized(value: &Value) -> Result<Timetable, ScheduleError> {
        let object = value.as_object().ok_or_else(|| {
            ScheduleError::Invalid(format!("timetable is not a JSON object: {value}"))
        })?;
        let type_name = object
            .get("__type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ScheduleError::Invalid(format!("timetable has no string \"__type\": {value}"))
            })?;
        let empty = serde_json::Map::new();
        let var = match object.get("__var") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(var)) => var,
            Some(other) => {
                return Err(ScheduleError::Invalid(format!(
                    "\"__var\" of {type_name} is not an object: {other}"
                )))
            }
        };
        let field = |name: &str| {
            var.get(name).ok_or_else(|| {
                ScheduleError::Invalid(format!("{type_name} has no \"{name}\" field"))
            })
        };
        match type_name {
            CRON_DATA_INTERVAL => Ok(Timetable::CronDataInterval(cron_schedule(
                field("expression")?,
                field("timezone")?,
            )?)),
            CRON_TRIGGER => {
                check_zero_interval(type_name, field("interval")?)?;
                Ok(Timetable::CronTrigger(cron_schedule(
                    field("expression")?,
                    field("timezone")?,
                )?))
            }
            MULTIPLE_CRON_TRIGGER => {
                check_zero_interval(type_name, field("interval")?)?;
                let timezone = field("timezone")?;
                let expressions = field("expressions")?.as_array().ok_or_else(|| {
                    ScheduleError::Invalid(format!("\"expressions\" of {type_name} is not a list"))
                })?;
                if expressions.is_empty() {
                    return Err(ScheduleError::Invalid(format!(
                        "{type_name} has no cron expressions"
                    )));
                }
                let crons = expressions
                    .iter()
                    .map(|expression| cron_schedule(expression, timezone))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Timetable::MultipleCronTrigger(crons))
            }
            DELTA_DATA_INTERVAL => Ok(Timetable::DeltaDataInterval(parse_delta(field("delta")?)?)),
            DELTA_TRIGGER => {
                check_zero_interval(type_name, field("interval")?)?;
                Ok(Timetable::DeltaTrigger(parse_delta(field("delta")?)?))
            }
            ONCE => Ok(Timetable::Once),
            NULL => Err(ScheduleError::Unsupported(NO_SCHEDULE.to_string())),
            CONTINUOUS => Err(ScheduleError::Unsupported(CONTINUOUS_SCHEDULE.to_string())),
            DATASET_TRIGGERED => Err(ScheduleError::Unsupported(
                "DAG is dataset-triggered: its runs are created by dataset updates, not by a \
                 time schedule, so there are no logical dates to backfill"
                    .to_string(),
            )),
            ASSET_TRIGGERED => Err(ScheduleError::Unsupported(
                "DAG is asset-triggered: its runs are created by asset updates, not by a time \
                 schedule, so there are no logical dates to backfill"
                    .to_string(),
            )),
            DATASET_OR_TIME | ASSET_OR_TIME => {
                // Airflow's next_dagrun_info (and so a backfill) delegates to the time part.
                match Timetable::from_serialized(field("timetable")?)? {
                    Timetable::Events(_) | Timetable::Once => Err(ScheduleError::Unsupported(
                        format!(
                            "{} nests a non-periodic timetable, which Airflow refuses to backfill",
                            short_name(type_name)
                        ),
                    )),
                    time_part => Ok(time_part),
                }
            }
            EVENTS => parse_events(field("event_dates")?),
            CRON_PARTITION => Err(ScheduleError::Unsupported(
                "DAG uses CronPartitionTimetable (Airflow 3.3): its runs are partitions named by a \
                 partition key and have no logical date, while backfilld's copies are scheduled \
                 and tracked by logical date; use Airflow's native backfill, which iterates the \
                 partitions"
                    .to_string(),
            )),
            PARTITIONED_ASSET => Err(ScheduleError::Unsupported(
                "DAG is asset-triggered with partitions (PartitionedAssetTimetable): its runs are \
                 created by asset events, not by a time schedule, so there are no logical dates \
                 to backfill"
                    .to_string(),
            )),
            PARTITIONED_AT_RUNTIME => Err(ScheduleError::Unsupported(
                "DAG has no schedule (PartitionedAtRuntime): its runs are only triggered with a \
                 partition key at run time, so there are no logical dates to backfill"
                    .to_string(),
            )),
            other => Err(ScheduleError::NotNative(other.to_string())),
        }
    }

    /// Parse the schedule of a whole serialized DAG (the value of `"dag"` in
    /// `serialized_dag.data`), in either of Airflow's two forms.
    ///
    /// With a `"timetable"` key this is [`Timetable::from_serialized`]. Airflow 2 instead stores a
    /// schedule whose timetable summary differs from the DAG's `schedule_interval` (presets such
    /// as `@daily`, timedeltas, relativedeltas, `None`) as `"schedule_interval"` plus the DAG's
    /// `"timezone"`, and rebuilds the timetable when loading; this does the same. (Airflow builds a
    /// data-interval or a trigger timetable there depending on its `create_cron_data_intervals`
    /// setting; both give the same logical dates, so the setting does not matter.)
    pub fn from_serialized_dag(dag: &Value) -> Result<Timetable, ScheduleError> {
        let object = dag.as_object().ok_or_else(|| {
            ScheduleError::Invalid("serialized DAG is not a JSON object".to_string())
        })?;
        if let Some(timetable) = object.get("timetable").filter(|v| !v.is_null()) {
            return Timetable::from_serialized(timetable);
        }
        // Airflow: a missing schedule_interval deserializes as None (NullTimetable).
        match object.get("schedule_interval").unwrap_or(&Value::Null) {
            Value::Null => Err(ScheduleError::Unsupported(NO_SCHEDULE.to_string())),
            Value::String(interval) if interval.as_str() == "@once" => Ok(Timetable::Once),
            Value::String(interval) if interval.as_str() == "@continuous" => {
                Err(ScheduleError::Unsupported(CONTINUOUS_SCHEDULE.to_string()))
            }
            schedule @ Value::String(_) => {
                let timezone = object.get("timezone").ok_or_else(|| {
                    ScheduleError::Unsupported(
                        "serialized DAG has a cron schedule_interval but no timezone: Airflow \
                         would use its configured default_timezone, which backfilld cannot see"
                            .to_string(),
                    )
                })?;
                Ok(Timetable::CronDataInterval(cron_schedule(
                    schedule, timezone,
                )?))
            }
            Value::Object(encoded) => {
                let type_name = encoded.get("__type").and_then(Value::as_str);
                let var = encoded.get("__var").unwrap_or(&Value::Null);
                match type_name {
                    Some("timedelta") | Some("relativedelta") => {
                        Ok(Timetable::DeltaDataInterval(parse_delta(var)?))
                    }
                    _ => Err(ScheduleError::Invalid(format!(
                        "unknown schedule_interval encoding: {}",
                        Value::Object(encoded.clone())
                    ))),
                }
            }
            other => Err(ScheduleError::Invalid(format!(
                "unknown schedule_interval encoding: {other}"
            ))),
        }
    }

    /// Every logical date Airflow's scheduler creates for a copy running start..=end.
    ///
    /// That is the copy with `start_date=start`, `end_date=end` and `catchup=True`; dates are
    /// ascending. An empty vector means the range holds no run (the caller decides what to do).
    /// More than `limit` dates give [`ScheduleError::TooMany`].
    pub fn logical_dates(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
        let mut dates = Dates {
            dates: Vec::new(),
            limit,
        };
        match self {
            Timetable::CronDataInterval(cron) if !cron.zone.fixed => {
                cron.data_interval_dates(start, end, &mut dates)?;
            }
            Timetable::CronTrigger(cron) if !cron.zone.fixed => {
                cron_trigger_dates(std::slice::from_ref(cron), start, end, &mut dates)?;
            }
            Timetable::MultipleCronTrigger(crons) if crons.iter().any(|c| !c.zone.fixed) => {
                cron_trigger_dates(crons, start, end, &mut dates)?;
            }
            // With a fixed offset every rule above reduces to the cron's ticks.
            Timetable::CronDataInterval(cron) | Timetable::CronTrigger(cron) => {
                cron.ticks(start, end, &mut |tick| dates.push(tick))?;
            }
            Timetable::MultipleCronTrigger(crons) => {
                // Every timetable proposes its next tick and the earliest wins, so the runs are
                // the union of the ticks. Each cron is bounded by the limit on its own.
                let mut all = Vec::new();
                for cron in crons {
                    let mut own = Dates {
                        dates: Vec::new(),
                        limit,
                    };
                    cron.ticks(start, end, &mut |tick| own.push(tick))?;
                    all.extend(own.dates);
                }
                all.sort_unstable();
                all.dedup();
                for tick in all {
                    dates.push(tick)?;
                }
            }
            Timetable::Events(events) => events_between(events, start, end, &mut dates)?,
            Timetable::DeltaDataInterval(delta) | Timetable::DeltaTrigger(delta) => {
                let mut at = start;
                while at <= end {
                    dates.push(at)?;
                    let next = delta.add_to(at).ok_or_else(|| {
                        ScheduleError::Invalid(format!("{at} + {delta} is out of range"))
                    })?;
                    if next <= at {
                        return Err(ScheduleError::Invalid(format!(
                            "schedule interval {delta} does not move forward"
                        )));
                    }
                    at = next;
                }
            }
            Timetable::Once => {
                if start <= end {
                    dates.push(start)?;
                }
            }
        }
        Ok(dates.dates)
    }

    /// What Airflow's scheduler stores for a run of this timetable at `logical_date` (one of
    /// [`Timetable::logical_dates`]): its data interval and when it may be created
    /// (`dag.next_dagrun_create_after`). Interval timetables span to the next tick or delta
    /// and may run at its end; trigger timetables (zero `interval`) and `@once` span nothing
    /// and run at the date itself.
    pub fn run_info(&self, logical_date: DateTime<Utc>) -> Result<RunInfo, ScheduleError> {
        let exact = RunInfo {
            logical_date,
            interval_start: logical_date,
            interval_end: logical_date,
            run_after: logical_date,
        };
        let end = match self {
            Timetable::CronDataInterval(cron) => cron.get_next(logical_date)?,
            Timetable::DeltaDataInterval(delta) => delta.add_to(logical_date).ok_or_else(|| {
                ScheduleError::Invalid(format!("{logical_date} + {delta} is out of range"))
            })?,
            Timetable::CronTrigger(_)
            | Timetable::MultipleCronTrigger(_)
            | Timetable::DeltaTrigger(_)
            | Timetable::Once
            | Timetable::Events(_) => return Ok(exact),
        };
        Ok(RunInfo {
            interval_end: end,
            run_after: end,
            ..exact
        })
    }

    /// The timezone a request's wall-clock dates are read in: the cron's zone, else the DAG's
    /// own `"timezone"` in its serialized form (`dag`), else UTC.
    pub fn request_zone(&self, dag: &Value) -> Result<Zone, ScheduleError> {
        match self {
            Timetable::CronDataInterval(cron) | Timetable::CronTrigger(cron) => {
                Ok(cron.zone.clone())
            }
            Timetable::MultipleCronTrigger(crons) if !crons.is_empty() => Ok(crons[0].zone.clone()),
            _ => match dag.get("timezone") {
                Some(timezone) => Zone::from_serialized(timezone),
                None => Ok(Zone::utc()),
            },
        }
    }

    /// Short human description, e.g. "cron '0 0 * * *' (UTC)".
    pub fn describe(&self) -> String {
        match self {
            Timetable::CronDataInterval(cron) => {
                format!("cron '{}' ({})", cron.expression, cron.timezone)
            }
            Timetable::CronTrigger(cron) => {
                format!("cron trigger '{}' ({})", cron.expression, cron.timezone)
            }
            Timetable::MultipleCronTrigger(crons) => {
                let expressions = crons
                    .iter()
                    .map(|cron| format!("'{}'", cron.expression))
                    .collect::<Vec<_>>()
                    .join(", ");
                let timezone = crons.first().map_or("UTC", |cron| cron.timezone.as_str());
                format!("cron triggers {expressions} ({timezone})")
            }
            Timetable::DeltaDataInterval(delta) => format!("every {delta}"),
            Timetable::DeltaTrigger(delta) => format!("trigger every {delta}"),
            Timetable::Once => "@once".to_string(),
            Timetable::Events(events) => format!("{} events", events.len()),
        }
    }
}

/// A run as the scheduler creates it from `dag.next_dagrun*` (see [`Timetable::run_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    /// The run's logical date (`dag.next_dagrun`).
    pub logical_date: DateTime<Utc>,
    /// Start of its data interval.
    pub interval_start: DateTime<Utc>,
    /// End of its data interval.
    pub interval_end: DateTime<Utc>,
    /// When the scheduler may create it (`dag.next_dagrun_create_after`).
    pub run_after: DateTime<Utc>,
}

/// The dates found so far, bounded by the caller's limit.
struct Dates {
    dates: Vec<DateTime<Utc>>,
    limit: usize,
}

impl Dates {
    fn push(&mut self, date: DateTime<Utc>) -> Result<(), ScheduleError> {
        if self.dates.len() >= self.limit {
            return Err(ScheduleError::TooMany { limit: self.limit });
        }
        self.dates.push(date);
        Ok(())
    }
}

/// `airflow.timetables.interval.CronDataIntervalTimetable` -> `CronDataIntervalTimetable`.
fn short_name(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

/// Trigger timetables with a non-zero `interval` give logical date = tick - interval, before
/// the range start; backfilld does not support them.
fn check_zero_interval(type_name: &str, interval: &Value) -> Result<(), ScheduleError> {
    let zero = match interval {
        Value::Number(n) => n.as_f64() == Some(0.0),
        // A zero relativedelta is encoded with no fields at all.
        Value::Object(fields) => fields.is_empty(),
        _ => {
            return Err(ScheduleError::Invalid(format!(
                "\"interval\" of {type_name} is neither seconds nor a relativedelta: {interval}"
            )))
        }
    };
    if zero {
        Ok(())
    } else {
        Err(ScheduleError::Unsupported(format!(
            "{} has a non-zero data interval ({interval}): its logical dates are shifted before \
             the trigger times, which backfilld does not support",
            short_name(type_name)
        )))
    }
}

/// The timezone names Airflow may serialize that are exactly UTC: no offset, no DST, ever.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "utc",
    "Etc/UTC",
    "Etc/UCT",
    "UCT",
    "Etc/Universal",
    "Universal",
    "Etc/Zulu",
    "Zulu",
    "Z",
    "+00:00",
    "-00:00",
    "+0000",
    "GMT",
    "Etc/GMT",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "GMT0",
    "GMT+0",
    "GMT-0",
    "Greenwich",
    "Etc/Greenwich",
];

/// How a serialized timezone is shown: its name, or a fixed offset as `+05:30`.
fn show_timezone(timezone: &Value) -> String {
    match timezone {
        Value::String(name) => name.clone(),
        Value::Number(n) => {
            let seconds = n.as_i64().unwrap_or(0);
            let sign = if seconds < 0 { '-' } else { '+' };
            let abs = seconds.unsigned_abs();
            let (hours, minutes, rest) = (abs / 3600, abs % 3600 / 60, abs % 60);
            if rest == 0 {
                format!("{sign}{hours:02}:{minutes:02}")
            } else {
                format!("{sign}{hours:02}:{minutes:02}:{rest:02}")
            }
        }
        other => other.to_string(),
    }
}

/// An `EventsTimetable`'s `event_dates`: `str()` or `isoformat()` of aware datetimes.
fn parse_events(value: &Value) -> Result<Timetable, ScheduleError> {
    let list = value.as_array().ok_or_else(|| {
        ScheduleError::Invalid(format!(
            "\"event_dates\" of EventsTimetable is not a list: {value}"
        ))
    })?;
    let events = list
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| {
                ScheduleError::Invalid(format!("EventsTimetable event is not a string: {item}"))
            })?;
            DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1))
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ScheduleError::Unsupported(format!(
                        "EventsTimetable event '{text}' is not a date with a UTC offset ({e}): \
                         Airflow cannot compare it with the DAG's dates either"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Timetable::Events(events))
}

/// `EventsTimetable.next_dagrun_info` in a loop: each time, the first event in list order at or
/// after `start` and after the previous date, until one is past `end`.
fn events_between(
    events: &[DateTime<Utc>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dates: &mut Dates,
) -> Result<(), ScheduleError> {
    if events.windows(2).all(|w| w[0] <= w[1]) {
        let mut last = None;
        for &event in events.iter().filter(|e| **e >= start) {
            if event > end {
                break;
            }
            if last.is_some_and(|l| event <= l) {
                continue;
            }
            dates.push(event)?;
            last = Some(event);
        }
        return Ok(());
    }
    let mut last: Option<DateTime<Utc>> = None;
    while let Some(&event) = events
        .iter()
        .find(|e| **e >= start && last.is_none_or(|l| **e > l))
    {
        if event > end {
            break;
        }
        dates.push(event)?;
        last = Some(event);
    }
    Ok(())
}

/// The first whole minute at or after `at`.
fn ceil_to_minute(at: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let secs = at.timestamp();
    let into_minute = secs.rem_euclid(60);
    if into_minute == 0 && at.timestamp_subsec_nanos() == 0 {
        return Ok(at);
    }
    DateTime::from_timestamp(secs - into_minute + 60, 0)
        .ok_or_else(|| ScheduleError::Invalid(format!("date {at} is out of range")))
}

/// Largest fixed delta accepted: Python's `timedelta.max` is 999999999 days.
const MAX_DELTA_MICROS: f64 = 999_999_999.0 * 86_400.0 * 1_000_000.0;

/// A delta timetable's `delta`: seconds as a number (`timedelta.total_seconds()`) or an encoded
/// relativedelta object.
fn parse_delta(value: &Value) -> Result<Delta, ScheduleError> {
    match value {
        Value::Number(seconds) => {
            let seconds = seconds.as_f64().ok_or_else(|| {
                ScheduleError::Invalid(format!("delta is not a number of seconds: {value}"))
            })?;
            // Python: timedelta(seconds=x) rounds to microseconds.
            let micros = (seconds * 1_000_000.0).round();
            if !(1.0..=MAX_DELTA_MICROS).contains(&micros) {
                return Err(ScheduleError::Invalid(format!(
                    "schedule interval must be a positive timedelta, not {seconds} s"
                )));
            }
            // In range by the check above, so the cast is exact.
            Ok(Delta::Fixed(TimeDelta::microseconds(micros as i64)))
        }
        Value::Object(fields) => parse_relativedelta(fields),
        other => Err(ScheduleError::Invalid(format!(
            "delta is neither seconds nor a relativedelta: {other}"
        ))),
    }
}

/// An encoded `relativedelta` (its truthy attributes) with only non-negative relative fields.
fn parse_relativedelta(fields: &serde_json::Map<String, Value>) -> Result<Delta, ScheduleError> {
    let shown = Value::Object(fields.clone());
    let unsupported = |why: &str| {
        ScheduleError::Unsupported(format!(
            "schedule is the relativedelta {shown}, {why}; backfilld only supports relativedeltas \
             made of non-negative whole years, months, days, hours, minutes, seconds and \
             microseconds"
        ))
    };
    let (mut months, mut rest) = (0i64, TimeDelta::zero());
    for (name, value) in fields {
        let amount = match value {
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => f as i64,
                _ => return Err(unsupported(&format!("{name} is not a whole number"))),
            },
            _ => return Err(unsupported(&format!("{name} is not a number"))),
        };
        if amount < 0 {
            return Err(unsupported(&format!("{name} is negative")));
        }
        let too_large = || ScheduleError::Invalid(format!("relativedelta {shown} is too large"));
        let add = |rest: TimeDelta, unit: fn(i64) -> Option<TimeDelta>| {
            unit(amount)
                .and_then(|d| rest.checked_add(&d))
                .ok_or_else(too_large)
        };
        match name.as_str() {
            "years" => {
                months = amount
                    .checked_mul(12)
                    .and_then(|m| m.checked_add(months))
                    .ok_or_else(too_large)?
            }
            "months" => months = amount.checked_add(months).ok_or_else(too_large)?,
            "days" => rest = add(rest, TimeDelta::try_days)?,
            "hours" => rest = add(rest, TimeDelta::try_hours)?,
            "minutes" => rest = add(rest, TimeDelta::try_minutes)?,
            "seconds" => rest = add(rest, TimeDelta::try_seconds)?,
            "microseconds" => rest = add(rest, |n| Some(TimeDelta::microseconds(n)))?,
            // Absolute fields (year, month, day, weekday, hour, ...) and leapdays.
            other => return Err(unsupported(&format!("{other} is set"))),
        }
    }
    let months = u32::try_from(months)
        .map_err(|_| ScheduleError::Invalid(format!("relativedelta {shown} is too large")))?;
    if months == 0 && rest.is_zero() {
        return Err(ScheduleError::Invalid(format!(
            "schedule interval must be positive, not relativedelta {shown}"
        )));
    }
    Ok(if months == 0 {
        Delta::Fixed(rest)
    } else {
        Delta::Calendar { months, rest }
    })
}

#[cfg(test)]
mod tests;
