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

/// A cron timetable's expression and timezone, validated.
fn cron_schedule(expression: &Value, timezone: &Value) -> Result<CronSchedule, ScheduleError> {
    let expression = expression.as_str().ok_or_else(|| {
        ScheduleError::Invalid(format!("cron expression is not a string: {expression}"))
    })?;
    let zone = Zone::from_serialized(timezone)?;
    let timezone = show_timezone(timezone);
    let parsed = parse_cron(expression)?;
    let normalized = parsed.normalized();
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(&normalized)
        .map_err(|e| {
            ScheduleError::Invalid(format!(
                "cron expression '{expression}' (read as '{normalized}'): {e}"
            ))
        })?;
    Ok(CronSchedule {
        expression: expression.to_string(),
        timezone,
        zone,
        normalized,
        satisfiable: parsed.satisfiable(),
        covers_every_hour: parsed.hour.values.count_ones() == HOUR.len_means_all,
        cron,
    })
}

impl CronSchedule {
    fn no_tick(
        &self,
        direction: &str,
        at: DateTime<Utc>,
        e: croner::errors::CronError,
    ) -> ScheduleError {
        ScheduleError::Invalid(format!(
            "cron expression '{}': no tick {direction} {at}: {e}",
            self.expression
        ))
    }

    /// croniter's `get_next` on a naive time: the first tick strictly after `naive`.
    fn naive_next(&self, naive: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let floor = floor_to_minute(naive)?;
        self.cron
            .find_next_occurrence(&floor, false)
            .map_err(|e| self.no_tick("after", naive, e))
    }

    /// croniter's `get_prev` on a naive time: the last tick strictly before `naive`.
    fn naive_prev(&self, naive: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let floor = floor_to_minute(naive)?;
        self.cron
            .find_previous_occurrence(&floor, floor != naive)
            .map_err(|e| self.no_tick("before", naive, e))
    }

    /// Airflow's `CronMixin._get_next`: the next tick after instant `current`.
    fn get_next(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let naive = self.zone.wall_clock(current)?;
        let scheduled = self.naive_next(naive)?;
        if self.covers_every_hour {
            // pendulum adds a plain timedelta as elapsed seconds.
            add(current, scheduled - naive)
        } else {
            self.zone.localize(scheduled)
        }
    }

    /// Airflow's `CronMixin._get_prev`: the previous tick before instant `current`.
    fn get_prev(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let naive = self.zone.wall_clock(current)?;
        let scheduled = self.naive_prev(naive)?;
        if self.covers_every_hour {
            add(current, scheduled - naive)
        } else {
            self.zone.localize(scheduled)
        }
    }

    /// Airflow's `_align_to_next`: `current` when it is on the schedule, else the next tick.
    fn align_to_next(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let next = self.get_next(current)?;
        Ok(if self.get_prev(next)? != current {
            next
        } else {
            current
        })
    }

    /// Airflow's `_align_to_prev`: `current` when it is on the schedule, else the previous tick.
    fn align_to_prev(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let prev = self.get_prev(current)?;
        Ok(if self.get_next(prev)? != current {
            prev
        } else {
            current
        })
    }

    /// The dates of `CronDataIntervalTimetable` in a zone with DST (see the module doc).
    fn data_interval_dates(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        dates: &mut Dates,
    ) -> Result<(), ScheduleError> {
        // croniter raises "failed to find next date" for a schedule that never matches; Airflow
        // then schedules nothing.
        if !self.satisfiable || start > end {
            return Ok(());
        }
        let first = self.align_to_next(start)?;
        let mut at = first;
        while at <= end {
            dates.push(at)?;
            let mut next = self.align_to_prev(self.get_next(at)?)?.max(first);
            if next <= at {
                // Airflow 3.3 steps once more; older releases would stall the DAG here.
                next = self.get_next(next)?;
                if next <= at {
                    return Err(not_advancing(&self.expression, &self.timezone, at));
                }
            }
            at = next;
        }
        Ok(())
    }

    /// Calls `found` with every tick in `start..=end`, ascending, for a fixed-offset zone.
    fn ticks(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        found: &mut dyn FnMut(DateTime<Utc>) -> Result<(), ScheduleError>,
    ) -> Result<(), ScheduleError> {
        // croniter raises "failed to find next date" for a schedule that never matches (such as
        // February 30th) and Airflow then schedules nothing; croner would search until year 5000.
        if !self.satisfiable || start > end {
            return Ok(());
        }
        let offset = self.zone.offset_at(start)?;
        let (start, end) = (add(start, offset)?, add(end, offset)?);
        // Ticks fall on whole minutes, and croner ignores sub-seconds: search from the first
        // whole minute at or after `start`, inclusively.
        let mut at = ceil_to_minute(start)?;
        let mut inclusive = true;
        loop {
            let tick = self
                .cron
                .find_next_occurrence(&at, inclusive)
                .map_err(|e| self.no_tick("after", at, e))?;
            if tick > end {
                return Ok(());
            }
            found(add(tick, -offset)?)?;
            at = tick;
            inclusive = false;
        }
    }
}

/// The error for a schedule on which Airflow's scheduler would not move forward.
fn not_advancing(expression: &str, timezone: &str, at: DateTime<Utc>) -> ScheduleError {
    ScheduleError::Unsupported(format!(
        "cron '{expression}' ({timezone}) does not advance after {at} across a daylight-saving \
         change: Airflow's scheduler would stall there"
    ))
}

/// The dates of `CronTriggerTimetable` / `MultipleCronTriggerTimetable` (zero `interval`): the
/// earliest aligned start, then each time the earliest `_get_next` of the previous date.
fn cron_trigger_dates(
    crons: &[CronSchedule],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dates: &mut Dates,
) -> Result<(), ScheduleError> {
    let crons: Vec<&CronSchedule> = crons.iter().filter(|c| c.satisfiable).collect();
    if crons.is_empty() || start > end {
        return Ok(());
    }
    let earliest = |step: &dyn Fn(&CronSchedule) -> Result<DateTime<Utc>, ScheduleError>| {
        crons
            .iter()
            .map(|c| step(c))
            .try_fold(None::<DateTime<Utc>>, |best, t| {
                let t = t?;
                Ok::<_, ScheduleError>(Some(best.map_or(t, |b| b.min(t))))
            })
    };
    let mut at = earliest(&|c| c.align_to_next(start))?;
    while let Some(current) = at.filter(|t| *t <= end) {
        dates.push(current)?;
        let next = earliest(&|c| c.get_next(current))?;
        if next.is_some_and(|n| n <= current) {
            let first = crons[0];
            return Err(not_advancing(&first.expression, &first.timezone, current));
        }
        at = next;
    }
    Ok(())
}

/// `at + delta`, or an error when out of range.
fn add(at: DateTime<Utc>, delta: TimeDelta) -> Result<DateTime<Utc>, ScheduleError> {
    at.checked_add_signed(delta)
        .ok_or_else(|| ScheduleError::Invalid(format!("date {at} + {delta} is out of range")))
}

/// The whole minute at or before `at`.
fn floor_to_minute(at: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0)
        .ok_or_else(|| ScheduleError::Invalid(format!("date {at} is out of range")))
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

// ---------------------------------------------------------------------------------------------
// Cron expressions, read the way croniter (used by Airflow) reads them.

/// One cron field: the set of matching values and whether croniter treats it as `*`.
#[derive(Debug, Clone, PartialEq)]
struct CronField {
    /// Bit `v` set when value `v` matches.
    values: u64,
    /// croniter's expansion of the field is `["*"]` (decides the day-of-month/day-of-week OR).
    star: bool,
}

/// The day-of-month field: values, or `L` (last day of the month).
#[derive(Debug, Clone, PartialEq)]
enum DomField {
    Values(CronField),
    Last,
}

/// A parsed 5-field cron expression.
#[derive(Debug, Clone, PartialEq)]
struct ParsedCron {
    minute: CronField,
    hour: CronField,
    dom: DomField,
    month: CronField,
    dow: CronField,
}

/// What a field accepts: croniter's `RANGES` bounds, plus the names (index = value - offset).
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Largest number accepted as a single value (7 for Sunday in day-of-week).
    max_single: u32,
    names: &'static [&'static str],
    names_from: u32,
    /// croniter's `LEN_MEANS_ALL`: a set this large is "every value".
    len_means_all: u32,
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    max_single: 59,
    names: &[],
    names_from: 0,
    len_means_all: 60,
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    max_single: 23,
    names: &[],
    names_from: 0,
    len_means_all: 24,
};
const DOM: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    max_single: 31,
    names: &[],
    names_from: 1,
    len_means_all: 31,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    max_single: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_from: 1,
    len_means_all: 12,
};
const DOW: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 6,
    max_single: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_from: 0,
    len_means_all: 7,
};

/// Airflow's `cron_presets` (exact match), then croniter's own aliases (case-insensitive).
fn expand_preset(expression: &str) -> Option<&'static str> {
    match expression {
        "@hourly" => return Some("0 * * * *"),
        "@daily" => return Some("0 0 * * *"),
        "@weekly" => return Some("0 0 * * 0"),
        "@monthly" => return Some("0 0 1 * *"),
        "@quarterly" => return Some("0 0 1 */3 *"),
        "@yearly" => return Some("0 0 1 1 *"),
        _ => {}
    }
    match expression.to_ascii_lowercase().as_str() {
        "@midnight" | "@daily" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@monthly" => Some("0 0 1 * *"),
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        _ => None,
    }
}

fn parse_cron(expression: &str) -> Result<ParsedCron, ScheduleError> {
    let trimmed = expression.trim();
    let text = if trimmed.starts_with('@') {
        expand_preset(trimmed)
            .ok_or_else(|| ScheduleError::Invalid(format!("unknown cron preset '{expression}'")))?
    } else {
        trimmed
    };
    let lower = text.to_ascii_lowercase();
    let fields: Vec<&str> = lower.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = match fields.as_slice() {
        [a, b, c, d, e] => [*a, *b, *c, *d, *e],
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => {
            return Err(ScheduleError::Unsupported(format!(
                "cron expression '{expression}' has a seconds (or year) field: backfilld only \
                 supports 5-field cron expressions"
            )))
        }
        _ => {
            return Err(ScheduleError::Invalid(format!(
                "cron expression '{expression}' does not have 5 fields"
            )))
        }
    };
    let context = |e: String| {
        // Unsupported syntax stays unsupported, everything else is a malformed expression.
        match e.strip_prefix("unsupported: ") {
            Some(why) => {
                ScheduleError::Unsupported(format!("cron expression '{expression}': {why}"))
            }
            None => ScheduleError::Invalid(format!("cron expression '{expression}': {e}")),
        }
    };
    let minute_field = parse_field(minute, &MINUTE).map_err(context)?;
    let hour_field = parse_field(hour, &HOUR).map_err(context)?;
    let month_field = parse_field(month, &MONTH).map_err(context)?;
    let mut dow_field = parse_field(dow, &DOW).map_err(context)?;
    let dom_field = if dom == "l" {
        DomField::Last
    } else {
        let mut field = parse_field(dom, &DOM).map_err(context)?;
        // croniter: a full day-of-month set reads as "*" only when the day-of-week text has a
        // "*" in it, and vice versa (`_expand`, "avoid over-optimization").
        if !field.star && field.values.count_ones() == DOM.len_means_all && dow.contains('*') {
            field.star = true;
        }
        DomField::Values(field)
    };
    if !dow_field.star && dow_field.values.count_ones() == DOW.len_means_all && dom.contains('*') {
        dow_field.star = true;
    }
    Ok(ParsedCron {
        minute: minute_field,
        hour: hour_field,
        dom: dom_field,
        month: month_field,
        dow: dow_field,
    })
}

/// Parses one field (already lower-case). Errors starting with "unsupported: " are syntax
/// croniter accepts but backfilld does not.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<CronField, String> {
    let name = spec.name;
    let full = (spec.min..=spec.max).fold(0u64, |bits, v| bits | 1 << v);
    if text == "*" || (text == "?" && (spec.name == DOM.name || spec.name == DOW.name)) {
        return Ok(CronField {
            values: full,
            star: true,
        });
    }
    let mut values = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in {name} field '{text}'"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = parse_number(step)
                    .ok_or_else(|| format!("step '{step}' in {name} field is not a number"))?;
                if step == 0 {
                    return Err(format!("step 0 in {name} field '{text}'"));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            match step {
                Some(_) => (spec.min, spec.max),
                None => {
                    return Err(format!(
                        "unsupported: '*' inside a list in the {name} field ('{text}')"
                    ))
                }
            }
        } else if let Some((low, high)) = range.split_once('-') {
            let low = parse_value(low, spec)?;
            let high = parse_value(high, spec)?;
            if low == high {
                return Err(format!(
                    "unsupported: equal range '{range}' in the {name} field (croniter reads it \
                     as the whole cycle)"
                ));
            }
            if low > high {
                return Err(format!(
                    "unsupported: wrapping range '{range}' in the {name} field"
                ));
            }
            (low, high)
        } else {
            let value = parse_value(range, spec)?;
            match step {
                // croniter: "a/n" is "a-max/n", and just "a" when a is the field's maximum.
                Some(_) if value >= spec.max => {
                    if value > spec.max {
                        return Err(format!("unsupported: '{item}' in the {name} field"));
                    }
                    (value, value)
                }
                Some(_) => (value, spec.max),
                None => (value, value),
            }
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            // Day-of-week 7 is Sunday (croniter's LOWMAP).
            let v_alias = if spec.name == DOW.name && v == 7 {
                0
            } else {
                v
            };
            values |= 1 << v_alias;
            v += step;
        }
    }
    Ok(CronField {
        values,
        star: false,
    })
}

/// A field value: digits or (for month and day-of-week) a three-letter name.
fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let name = spec.name;
    let value = match parse_number(text) {
        Some(value) => value,
        None => match spec.names.iter().position(|n| *n == text) {
            // At most 12 names, so the cast is exact.
            Some(index) => index as u32 + spec.names_from,
            None if is_croniter_extension(text) => {
                return Err(format!("unsupported: '{text}' in the {name} field"))
            }
            None => return Err(format!("'{text}' is not a valid {name} value")),
        },
    };
    if value < spec.min || value > spec.max_single {
        return Err(format!(
            "{name} value {value} is out of range {}-{}",
            spec.min, spec.max_single
        ));
    }
    Ok(value)
}

/// croniter syntax beyond plain cron: `L` (last), `W` (nearest weekday), `#` (nth weekday) and
/// `H` (hashed) forms such as `5l`, `l`, `15w`, `1#2`, `h`, `h(0-29)`.
fn is_croniter_extension(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.contains('#')
        || text.starts_with('h')
        || text == "l"
        || ["l", "w"].iter().any(|suffix| {
            text.strip_suffix(suffix).is_some_and(digits)
                || text.strip_prefix(suffix).is_some_and(digits)
        })
}

/// A non-empty string of ASCII digits (no sign) as a number.
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 4 {
        return None;
    }
    text.parse().ok()
}

impl ParsedCron {
    /// The expression as croner must read it to match croniter: a field is `*` exactly when
    /// croniter reads it as `*` (that decides whether day of month and day of week are ORed).
    fn normalized(&self) -> String {
        fn render(field: &CronField) -> String {
            if field.star {
                return "*".to_string();
            }
            (0..64u32)
                .filter(|v| field.values & (1 << v) != 0)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
        let dom = match &self.dom {
            DomField::Last => "L".to_string(),
            DomField::Values(field) => render(field),
        };
        format!(
            "{} {} {} {} {}",
            render(&self.minute),
            render(&self.hour),
            dom,
            render(&self.month),
            render(&self.dow)
        )
    }

    /// Whether some date can match. A day-of-month list matched alone (day of week `*`) may
    /// fall on no month at all, e.g. `0 0 30 2 *`.
    fn satisfiable(&self) -> bool {
        const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let DomField::Values(dom) = &self.dom else {
            return true;
        };
        if dom.star || !self.dow.star {
            // Either any day, or (OR with day of week) every month has every weekday.
            return true;
        }
        (1..=12u32).any(|month| {
            self.month.values & (1 << month) != 0
                && (1..=MAX_DAYS[month as usize - 1]).any(|day| dom.values & (1 << day) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::utc;
    use serde_json::json;

    fn cron(expression: &str) -> Timetable {
        let value = json!({
            "__type": CRON_DATA_INTERVAL,
            "__var": {"expression": expression, "timezone": "UTC"},
        });
        match Timetable::from_serialized(&value) {
            Ok(t) => t,
            Err(e) => panic!("{expression}: {e}"),
        }
    }

    fn dates(t: &Timetable, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        match t.logical_dates(start, end, 10_000) {
            Ok(d) => d,
            Err(e) => panic!("{}: {e}", t.describe()),
        }
    }

    fn normalized(expression: &str) -> String {
        match parse_cron(expression) {
            Ok(p) => p.normalized(),
            Err(e) => panic!("{expression}: {e}"),
        }
    }

    #[test]
    fn daily_aligns_start_to_next_midnight() {
        let t = cron("0 0 * * *");
        let got = dates(&t, utc(2024, 1, 1, 12, 0), utc(2024, 1, 4, 0, 0));
        assert_eq!(
            got,
            vec![
                utc(2024, 1, 2, 0, 0),
                utc(2024, 1, 3, 0, 0),
                utc(2024, 1, 4, 0, 0)
            ]
        );
        // On a tick: the start itself is the first date.
        let got = dates(&t, utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 0));
        assert_eq!(got, vec![utc(2024, 1, 1, 0, 0)]);
        // Between ticks, no date.
        assert!(dates(&t, utc(2024, 1, 1, 1, 0), utc(2024, 1, 1, 23, 0)).is_empty());
        // Sub-minute start just after a tick.
        let start = utc(2024, 1, 1, 0, 0) + TimeDelta::milliseconds(1);
        assert_eq!(
            dates(&t, start, utc(2024, 1, 2, 0, 0)),
            vec![utc(2024, 1, 2, 0, 0)]
        );
    }

    #[test]
    fn dom_dow_or_semantics() {
        // 13th of the month OR Fridays (croniter's default day_or=True).
        let t = cron("0 0 13 * 5");
        let got = dates(&t, utc(2024, 9, 1, 0, 0), utc(2024, 9, 30, 0, 0));
        let days: Vec<u32> = got
            .iter()
            .map(|d| d.format("%d").to_string().parse().unwrap_or(0))
            .collect();
        assert_eq!(days, vec![6, 13, 20, 27]);
        let got = dates(&t, utc(2024, 10, 1, 0, 0), utc(2024, 10, 31, 0, 0));
        let days: Vec<u32> = got
            .iter()
            .map(|d| d.format("%d").to_string().parse().unwrap_or(0))
            .collect();
        assert_eq!(days, vec![4, 11, 13, 18, 25]);
    }

    #[test]
    fn normalization_follows_croniter() {
        assert_eq!(normalized("@daily"), "0 0 * * *");
        assert_eq!(normalized("@ANNUALLY"), "0 0 1 1 *");
        assert_eq!(normalized("*/15 * * * *"), "0,15,30,45 * * * *");
        assert_eq!(normalized("0 3 * * mon-fri"), "0 3 * * 1,2,3,4,5");
        assert_eq!(normalized("0 0 1,15 * *"), "0 0 1,15 * *");
        assert_eq!(normalized("0 0 * jan/3 7"), "0 0 * 1,4,7,10 0");
        assert_eq!(normalized("0 0 * * 1-7/2"), "0 0 * * 0,1,3,5");
        assert_eq!(normalized("0 0 * * 6/3"), "0 0 * * 6");
        assert_eq!(normalized("0 0 L * *"), "0 0 L * *");
        // Full day-of-month is "*" only if the day-of-week text has a "*" in it.
        assert_eq!(normalized("0 0 1-31 * */2"), "0 0 * * 0,2,4,6");
        assert_eq!(
            normalized("0 0 1-31 * 1"),
            format!(
                "0 0 {} * 1",
                (1..=31)
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        );
        assert_eq!(normalized("0 0 */5 * 0-6"), "0 0 1,6,11,16,21,26,31 * *");
        assert_eq!(normalized("0 0 5 * 0-7"), "0 0 5 * 0,1,2,3,4,5,6");
    }

    #[test]
    fn rejects_unsupported_and_invalid_cron() {
        for expression in [
            "0 0 * * * 0",
            "0 0 0 * * * 2024",
            "0 0 * * 1#2",
            "0 0 15w * *",
            "0 0 * * 5l",
            "h 0 * * *",
            "0 0 5-5 * *",
            "0 22-2 * * *",
            "*,5 0 * * *",
        ] {
            match parse_cron(expression) {
                Err(ScheduleError::Unsupported(_)) => {}
                other => panic!("{expression}: expected Unsupported, got {other:?}"),
            }
        }
        for expression in [
            "",
            "0 0 * *",
            "60 0 * * *",
            "0 0 0 * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "*/0 * * * *",
            "@reboot",
            "0 0 * foo *",
            "-1 0 * * *",
        ] {
            match parse_cron(expression) {
                Err(ScheduleError::Invalid(_)) => {}
                other => panic!("{expression}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn impossible_cron_gives_no_dates() {
        let t = cron("0 0 30 2 *");
        assert!(dates(&t, utc(2024, 1, 1, 0, 0), utc(2030, 1, 1, 0, 0)).is_empty());
        // ... but OR-ed with a weekday it matches the weekdays.
        let t = cron("0 0 30 2 1");
        assert_eq!(
            dates(&t, utc(2024, 2, 1, 0, 0), utc(2024, 2, 29, 0, 0)).len(),
            4
        );
    }

    #[test]
    fn delta_does_not_align() {
        let t = match Timetable::from_serialized(&json!({
            "__type": DELTA_DATA_INTERVAL, "__var": {"delta": 21600.0}
        })) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let start = utc(2024, 1, 1, 1, 7);
        let got = dates(&t, start, utc(2024, 1, 2, 1, 7));
        assert_eq!(got.len(), 5);
        assert_eq!(got[1], utc(2024, 1, 1, 7, 7));
        assert_eq!(t.describe(), "every 6h");
    }

    #[test]
    fn relativedelta_months_clamp_and_drift() {
        let t = match Timetable::from_serialized(&json!({
            "__type": DELTA_DATA_INTERVAL, "__var": {"delta": {"months": 1}}
        })) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let got = dates(&t, utc(2024, 1, 31, 0, 0), utc(2024, 4, 30, 0, 0));
        assert_eq!(
            got,
            vec![
                utc(2024, 1, 31, 0, 0),
                utc(2024, 2, 29, 0, 0),
                utc(2024, 3, 29, 0, 0),
                utc(2024, 4, 29, 0, 0)
            ]
        );
        for bad in [
            json!({"months": 1, "day": 1}),
            json!({"months": -1}),
            json!({"weekday": [0]}),
            json!({"days": 1.5}),
        ] {
            match parse_delta(&bad) {
                Err(ScheduleError::Unsupported(_)) => {}
                other => panic!("{bad}: expected Unsupported, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_delta(&json!({})),
            Err(ScheduleError::Invalid(_))
        ));
        assert!(matches!(
            parse_delta(&json!(0.0)),
            Err(ScheduleError::Invalid(_))
        ));
        assert!(matches!(
            parse_delta(&json!(-60.0)),
            Err(ScheduleError::Invalid(_))
        ));
        assert!(
            matches!(parse_delta(&json!({"days": 2})), Ok(Delta::Fixed(d)) if d == TimeDelta::days(2))
        );
    }

    #[test]
    fn run_info_intervals() {
        let at = utc(2024, 1, 31, 0, 0);
        let daily = cron("@daily");
        let info = daily.run_info(at).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (info.interval_start, info.interval_end, info.run_after),
            (at, utc(2024, 2, 1, 0, 0), utc(2024, 2, 1, 0, 0))
        );
        let trigger = Timetable::CronTrigger(match cron("@daily") {
            Timetable::CronDataInterval(c) => c,
            other => panic!("{other:?}"),
        });
        let info = trigger.run_info(at).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (info.interval_start, info.interval_end, info.run_after),
            (at, at, at)
        );
        let monthly = Timetable::DeltaDataInterval(Delta::Calendar {
            months: 1,
            rest: TimeDelta::zero(),
        });
        let info = monthly.run_info(at).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.interval_end, utc(2024, 2, 29, 0, 0));
        let once = Timetable::Once
            .run_info(at)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(once.run_after, at);
    }

    #[test]
    fn once_and_limit() {
        let t = match Timetable::from_serialized(&json!({"__type": ONCE, "__var": {}})) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            dates(&t, utc(2024, 1, 1, 5, 3), utc(2024, 2, 1, 0, 0)),
            vec![utc(2024, 1, 1, 5, 3)]
        );
        assert!(dates(&t, utc(2024, 2, 1, 5, 3), utc(2024, 1, 1, 0, 0)).is_empty());
        let hourly = cron("@hourly");
        match hourly.logical_dates(utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0), 24) {
            Err(ScheduleError::TooMany { limit: 24 }) => {}
            other => panic!("expected TooMany, got {other:?}"),
        }
        assert_eq!(
            hourly
                .logical_dates(utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 23, 0), 24)
                .map(|d| d.len())
                .ok(),
            Some(24)
        );
    }

    #[test]
    fn rejects_unbackfillable_timetables_with_reason() {
        let cases = [
            (json!({"__type": NULL, "__var": {}}), "no schedule (None)"),
            (json!({"__type": CONTINUOUS, "__var": {}}), "@continuous"),
            (
                json!({"__type": DATASET_TRIGGERED, "__var": {"dataset_condition": {}}}),
                "dataset-triggered",
            ),
            (
                json!({"__type": ASSET_TRIGGERED, "__var": {"asset_condition": {}}}),
                "asset-triggered",
            ),
            (
                json!({"__type": CRON_PARTITION, "__var": {"expression": "0 0 * * *", "timezone": "UTC", "run_offset": 0, "key_format": "%Y-%m-%d"}}),
                "partition key and have no logical date",
            ),
            (
                json!({"__type": ASSET_OR_TIME, "__var": {"asset_condition": {}, "timetable": {"__type": ONCE, "__var": {}}}}),
                "non-periodic",
            ),
            (
                json!({"__type": CRON_TRIGGER, "__var": {"expression": "0 0 * * *", "timezone": "UTC", "interval": 3600.0}}),
                "non-zero data interval",
            ),
        ];
        for (value, needle) in cases {
            match Timetable::from_serialized(&value) {
                Err(e @ ScheduleError::Unsupported(_)) => {
                    assert!(
                        e.to_string().contains(needle),
                        "{e} should mention {needle}"
                    )
                }
                other => panic!("{value}: expected Unsupported, got {other:?}"),
            }
        }
        assert!(matches!(
            Timetable::from_serialized(
                &json!({"__type": "plugins.workday.AfterWorkdayTimetable", "__var": {}})
            ),
            Err(ScheduleError::NotNative(class)) if class == "plugins.workday.AfterWorkdayTimetable"
        ));
        for value in [
            json!(null),
            json!({"__var": {}}),
            json!({"__type": CRON_DATA_INTERVAL, "__var": {"timezone": "UTC"}}),
        ] {
            assert!(
                matches!(
                    Timetable::from_serialized(&value),
                    Err(ScheduleError::Invalid(_))
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn utc_equivalent_timezones() {
        for tz in [
            json!("UTC"),
            json!("Etc/UTC"),
            json!("Z"),
            json!("+00:00"),
            json!(0),
        ] {
            let value = json!({"__type": CRON_DATA_INTERVAL, "__var": {"expression": "@daily", "timezone": tz}});
            assert!(Timetable::from_serialized(&value).is_ok(), "{tz}");
        }
        // A pendulum FixedTimezone is its offset in seconds: 06:00 at +01:00 is 05:00 UTC.
        let value = json!({"__type": CRON_DATA_INTERVAL, "__var": {"expression": "0 6 * * *", "timezone": 3600}});
        let t = Timetable::from_serialized(&value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.describe(), "cron '0 6 * * *' (+01:00)");
        assert_eq!(
            dates(&t, utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0)),
            vec![utc(2024, 1, 1, 5, 0)]
        );
        let unknown = json!({"__type": CRON_DATA_INTERVAL, "__var": {"expression": "@daily", "timezone": "Mars/Olympus"}});
        assert!(matches!(
            Timetable::from_serialized(&unknown),
            Err(ScheduleError::Invalid(_))
        ));
    }

    #[test]
    fn airflow2_schedule_interval_form() {
        let parse = |dag: Value| Timetable::from_serialized_dag(&dag);
        let t = parse(json!({"schedule_interval": "@daily", "timezone": "UTC"}));
        assert_eq!(
            t.as_ref().map(Timetable::describe).ok().as_deref(),
            Some("cron '@daily' (UTC)")
        );
        let t = parse(
            json!({"schedule_interval": {"__type": "timedelta", "__var": 3600.0}, "timezone": "UTC"}),
        );
        assert!(
            matches!(t, Ok(Timetable::DeltaDataInterval(Delta::Fixed(d))) if d == TimeDelta::hours(1))
        );
        assert!(matches!(
            parse(json!({"schedule_interval": null, "timezone": "UTC"})),
            Err(ScheduleError::Unsupported(_))
        ));
        assert!(matches!(
            parse(json!({"timezone": "UTC"})),
            Err(ScheduleError::Unsupported(_))
        ));
        assert!(matches!(
            parse(json!({"schedule_interval": "@once"})),
            Ok(Timetable::Once)
        ));
        let tokyo = parse(json!({"schedule_interval": "@daily", "timezone": "Asia/Tokyo"}));
        assert_eq!(
            tokyo.as_ref().map(Timetable::describe).ok().as_deref(),
            Some("cron '@daily' (Asia/Tokyo)")
        );
        let t =
            parse(json!({"timetable": {"__type": ONCE, "__var": {}}, "timezone": "Asia/Tokyo"}));
        assert!(matches!(t, Ok(Timetable::Once)));
    }

    #[test]
    fn multiple_cron_trigger_is_union() {
        let value = json!({"__type": MULTIPLE_CRON_TRIGGER, "__var": {
            "expressions": ["0 0 * * *", "0 */12 * * *"], "timezone": "UTC", "interval": 0.0, "run_immediately": false,
        }});
        let t = match Timetable::from_serialized(&value) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let got = dates(&t, utc(2024, 1, 1, 0, 0), utc(2024, 1, 2, 0, 0));
        assert_eq!(
            got,
            vec![
                utc(2024, 1, 1, 0, 0),
                utc(2024, 1, 1, 12, 0),
                utc(2024, 1, 2, 0, 0)
            ]
        );
        assert_eq!(
            t.describe(),
            "cron triggers '0 0 * * *', '0 */12 * * *' (UTC)"
        );
    }

    fn zoned(type_name: &str, expression: &str, timezone: &str) -> Timetable {
        let value = json!({"__type": type_name, "__var": {
            "expression": expression, "timezone": timezone, "interval": 0.0,
        }});
        Timetable::from_serialized(&value).unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn dates_at(t: &Timetable, start: &str, end: &str) -> Vec<String> {
        dates(t, at(start), at(end))
            .iter()
            .map(|d| d.format("%Y-%m-%dT%H:%M").to_string())
            .collect()
    }

    // The expected dates below are what Airflow 2.11 computes (next_dagrun_info loop).

    #[test]
    fn fixed_time_in_dst_gap_and_fold() {
        let t = zoned(CRON_DATA_INTERVAL, "30 2 * * *", "Europe/Paris");
        // 02:30 does not exist on Mar 31: read with the offset before the gap (01:30 UTC).
        assert_eq!(
            dates_at(&t, "2024-03-29T12:00:00Z", "2024-04-02T00:00:00Z"),
            ["2024-03-30T01:30", "2024-03-31T01:30", "2024-04-01T00:30"]
        );
        // 02:30 happens twice on Oct 27: the later one (CET).
        assert_eq!(
            dates_at(&t, "2024-10-25T12:00:00Z", "2024-10-29T00:00:00Z"),
            ["2024-10-26T00:30", "2024-10-27T01:30", "2024-10-28T01:30"]
        );
        let sydney = zoned(CRON_TRIGGER, "0 2 * * *", "Australia/Sydney");
        assert_eq!(
            dates_at(&sydney, "2024-04-05T00:00:00Z", "2024-04-08T00:00:00Z"),
            ["2024-04-05T15:00", "2024-04-06T16:00", "2024-04-07T16:00"]
        );
    }

    #[test]
    fn every_hour_crons_step_in_elapsed_time() {
        // "Covers every hour": 02:30 runs in both CEST and CET on Oct 27.
        let t = zoned(CRON_DATA_INTERVAL, "30 * * * *", "Europe/Paris");
        assert_eq!(
            dates_at(&t, "2024-10-27T00:00:00Z", "2024-10-27T03:00:00Z"),
            ["2024-10-27T00:30", "2024-10-27T01:30", "2024-10-27T02:30"]
        );
        assert_eq!(
            dates_at(&t, "2024-03-31T00:00:00Z", "2024-03-31T03:00:00Z"),
            ["2024-03-31T00:30", "2024-03-31T01:30", "2024-03-31T02:30"]
        );
        // Every two hours does not cover every hour: local 00:00 EDT, 02:00 EST, 04:00 EST.
        let ny = zoned(CRON_TRIGGER, "0 */2 * * *", "America/New_York");
        assert_eq!(
            dates_at(&ny, "2024-11-03T03:00:00Z", "2024-11-03T09:00:00Z"),
            ["2024-11-03T04:00", "2024-11-03T07:00", "2024-11-03T09:00"]
        );
    }

    #[test]
    fn zone_localize_and_wall_clock() {
        let paris = Zone::from_serialized(&json!("Europe/Paris")).unwrap_or_else(|e| panic!("{e}"));
        let local = |text: &str| at(&format!("{text}Z"));
        // Unique, gap (offset before: +01:00), fold (later instant: +01:00).
        assert_eq!(
            paris.localize(local("2024-01-15T12:00:00")).ok(),
            Some(at("2024-01-15T11:00:00Z"))
        );
        assert_eq!(
            paris.localize(local("2024-03-31T02:30:00")).ok(),
            Some(at("2024-03-31T01:30:00Z"))
        );
        assert_eq!(
            paris.localize(local("2024-10-27T02:30:00")).ok(),
            Some(at("2024-10-27T01:30:00Z"))
        );
        // Both instants of the fold read 02:30.
        assert_eq!(
            paris.wall_clock(at("2024-10-27T00:30:00Z")).ok(),
            Some(local("2024-10-27T02:30:00"))
        );
        assert_eq!(
            paris.wall_clock(at("2024-10-27T01:30:00Z")).ok(),
            Some(local("2024-10-27T02:30:00"))
        );
        // 45-minute offset.
        let kathmandu =
            Zone::from_serialized(&json!("Asia/Kathmandu")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kathmandu.localize(local("2024-06-01T00:00:00")).ok(),
            Some(at("2024-05-31T18:15:00Z"))
        );
    }

    #[test]
    fn events_and_time_part_of_combined_schedules() {
        let events = json!({"__type": EVENTS, "__var": {
            "event_dates": ["2024-01-02 00:00:00+00:00", "2024-01-05T10:00:00+01:00", "2024-03-01T00:00:00+00:00"],
            "restrict_to_events": false,
        }});
        let t = Timetable::from_serialized(&events).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dates_at(&t, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
            ["2024-01-02T00:00", "2024-01-05T09:00"]
        );
        let naive = json!({"__type": EVENTS, "__var": {"event_dates": ["2024-01-02 00:00:00"], "restrict_to_events": false}});
        assert!(matches!(
            Timetable::from_serialized(&naive),
            Err(ScheduleError::Unsupported(_))
        ));
        let combined = json!({"__type": DATASET_OR_TIME, "__var": {
            "dataset_condition": {"__type": "dataset", "uri": "s3://b/k"},
            "timetable": {"__type": CRON_TRIGGER, "__var": {"expression": "0 1 * * *", "timezone": "UTC", "interval": 0.0}},
        }});
        let t = Timetable::from_serialized(&combined).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.describe(), "cron trigger '0 1 * * *' (UTC)");
    }

    #[test]
    fn describe_forms() {
        assert_eq!(cron("0 0 * * *").describe(), "cron '0 0 * * *' (UTC)");
        assert_eq!(
            format_time_delta(TimeDelta::seconds(90_061) + TimeDelta::milliseconds(500)),
            "1d 1h 1m 1.5s"
        );
        let calendar = Delta::Calendar {
            months: 14,
            rest: TimeDelta::days(1),
        };
        assert_eq!(calendar.to_string(), "1 year 2 months 1d");
    }
}
