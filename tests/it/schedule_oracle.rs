//! Oracle test for `backfilld::schedule`: our logical dates against what real Airflow computes.
//!
//! One Python process per Airflow major runs the whole table: for each case it builds
//! `DAG(schedule=..., start_date=start, end_date=end, catchup=True)`, prints the timetable as
//! `encode_timetable` serializes it and the DAG's schedule keys as `SerializedDAG.to_dict` stores
//! them in `serialized_dag.data`, then round-trips the DAG through `SerializedDAG` (what the
//! scheduler runs) and lists the logical dates twice: with `iter_dagrun_infos_between(start, end)`
//! and with the scheduler's own loop (`next_dagrun_info(last data interval)` until `None`). The
//! Rust side parses exactly that JSON and must produce the same dates, or the expected error.
//!
//! Besides the hand-written table, a deterministic pseudo-random set of cron expressions (within
//! the syntax backfilld accepts) is checked the same way.

use std::fmt::Write as _;
use std::process::Command;

use backfilld::schedule::{ScheduleError, Timetable};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::support::{airflow_venv, AirflowMajor};

/// The Python side. argv[1]: Airflow major; argv[2]: path of the JSON case list.
const ORACLE_PY: &str = r#"
import calendar, inspect, json, sys
from datetime import datetime, timedelta

import pendulum
from dateutil.relativedelta import relativedelta

MAJOR = int(sys.argv[1])
if MAJOR == 2:
    from airflow import DAG
    from airflow.datasets import Dataset
else:
    from airflow.sdk import DAG
    from airflow.sdk import Asset as Dataset
try:
    # Airflow 3.3: DagSerialization writes and reads serialized_dag; SerializedDAG is the result.
    from airflow.serialization.serialized_objects import DagSerialization as SerializedDAG
except ImportError:
    from airflow.serialization.serialized_objects import SerializedDAG
try:
    from airflow.serialization.encoders import encode_timetable
except ImportError:
    from airflow.serialization.serialized_objects import encode_timetable
from airflow.timetables.events import EventsTimetable
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
from airflow.timetables.trigger import CronTriggerTimetable, DeltaTriggerTimetable

NAMESPACE = dict(
    timedelta=timedelta,
    relativedelta=relativedelta,
    pendulum=pendulum,
    Dataset=Dataset,
    EventsTimetable=EventsTimetable,
    CronDataIntervalTimetable=CronDataIntervalTimetable,
    DeltaDataIntervalTimetable=DeltaDataIntervalTimetable,
    CronTriggerTimetable=CronTriggerTimetable,
    DeltaTriggerTimetable=DeltaTriggerTimetable,
)
if MAJOR >= 3:
    from airflow.timetables.trigger import MultipleCronTriggerTimetable
    NAMESPACE["MultipleCronTriggerTimetable"] = MultipleCronTriggerTimetable
    try:
        # Airflow 3.3: the DAG authoring classes live in the Task SDK (but its EventsTimetable
        # fails to serialize in 3.3.2: "'_summary'", so the core one is kept).
        from airflow import sdk
        for name in ("CronDataIntervalTimetable", "CronTriggerTimetable",
                     "DeltaDataIntervalTimetable", "DeltaTriggerTimetable",
                     "MultipleCronTriggerTimetable", "AssetOrTimeSchedule",
                     "CronPartitionTimetable"):
            NAMESPACE[name] = getattr(sdk, name)
    except AttributeError:
        from airflow.timetables.assets import AssetOrTimeSchedule
        NAMESPACE["AssetOrTimeSchedule"] = AssetOrTimeSchedule

    def or_time(timetable, datasets):
        return NAMESPACE["AssetOrTimeSchedule"](timetable=timetable, assets=datasets)
else:
    from airflow.timetables.datasets import DatasetOrTimeSchedule

    def or_time(timetable, datasets):
        return DatasetOrTimeSchedule(timetable=timetable, datasets=datasets)
NAMESPACE["or_time"] = or_time


def micros(dt):
    dt = pendulum.instance(dt).in_timezone("UTC")
    return calendar.timegm(dt.utctimetuple()) * 1000000 + dt.microsecond


def start_date(start, tz):
    if tz == "default":
        # A naive start_date: the DAG takes [core] default_timezone.
        from airflow.settings import TIMEZONE
        local = start.in_timezone(TIMEZONE)
        return datetime(local.year, local.month, local.day, local.hour, local.minute,
                        local.second, local.microsecond)
    if tz.startswith("fixed:"):
        return start.in_timezone(pendulum.FixedTimezone(int(tz[len("fixed:"):])))
    return start.in_timezone(tz)


def run(index, case):
    start = pendulum.parse(case["start"])
    end = pendulum.parse(case["end"])
    cap = case["cap"]
    namespace = dict(NAMESPACE)
    namespace["TZ"] = case["tz"]
    schedule = eval(case["schedule"], namespace)
    extra = eval("dict(%s)" % case["extra"], namespace)
    dag = DAG(
        dag_id="oracle_%d" % index,
        schedule=schedule,
        start_date=start_date(start, case["tz"]),
        end_date=end,
        catchup=True,
        **extra,
    )
    serialized = SerializedDAG.to_dict(dag)
    result = {
        "timetable": json.loads(json.dumps(encode_timetable(dag.timetable))),
        "dag": json.loads(json.dumps({
            k: v for k, v in serialized["dag"].items()
            if k in ("timetable", "schedule_interval", "timezone")
        })),
    }
    # What the scheduler works with: the DAG deserialized from serialized_dag.
    loaded = SerializedDAG.from_dict(serialized)
    between = []
    for info in loaded.iter_dagrun_infos_between(start, end):
        between.append(micros(info.logical_date or info.partition_date))
        if len(between) >= cap:
            break
    scheduled, last = [], None
    # Airflow 3.3 passes the last DagRunInfo, older releases its data interval.
    run_info_api = "last_automated_run_info" in inspect.signature(loaded.next_dagrun_info).parameters
    while len(scheduled) < cap:
        if run_info_api:
            info = loaded.next_dagrun_info(last_automated_run_info=last)
        else:
            info = loaded.next_dagrun_info(last)
        if info is None:
            break
        # Partitioned runs (Airflow 3.3) have no logical date: record their partition date.
        scheduled.append(micros(info.logical_date or info.partition_date))
        last = info if run_info_api else info.data_interval
    result["between"] = between
    result["scheduled"] = scheduled
    return result


with open(sys.argv[2]) as f:
    cases = json.load(f)
results = []
for index, case in enumerate(cases):
    try:
        results.append(run(index, case))
    except Exception as e:
        results.append({"python_error": "%s: %s" % (type(e).__name__, e)})
print("ORACLE_RESULT " + json.dumps(results))
"#;

/// What a case must give.
#[derive(Clone, Debug)]
enum Expect {
    /// Exactly this many dates (and the same ones as Airflow).
    Dates(usize),
    /// The same dates as Airflow, at most `CAP` compared (generated cases).
    SameAsAirflow,
    /// `ScheduleError::Unsupported` whose text contains this.
    Unsupported(&'static str),
}

/// One row of the table.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    /// A Python expression for `DAG(schedule=...)`.
    schedule: String,
    /// Extra `DAG(...)` keyword arguments, as Python source.
    extra: &'static str,
    /// Timezone of the DAG's `start_date` (the cron timetable's timezone).
    tz: &'static str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    expect: Expect,
    /// Only for Airflow 3 (3.1 and 3.3).
    v3_only: bool,
    /// Only for the newest Airflow 3 (3.3).
    newest_only: bool,
}

/// Most dates compared for a generated case (Airflow's iteration is slow).
const CAP: usize = 150;

fn at(text: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad date {text}: {e}"),
    }
}

fn case(name: &str, schedule: &str, start: &str, end: &str, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        schedule: schedule.to_string(),
        extra: "",
        tz: "UTC",
        start: at(start),
        end: at(end),
        expect,
        v3_only: false,
        newest_only: false,
    }
}

/// The hand-written table (kept one case per line).
#[rustfmt::skip]
fn table() -> Vec<Case> {
    use Expect::{Dates, Unsupported};
    let mut cases = vec![
        // Crons.
        case("daily on ticks", "'0 0 * * *'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(10)),
        case("daily between ticks", "'0 0 * * *'", "2024-01-01T06:00:00Z", "2024-01-10T06:00:00Z", Dates(9)),
        case("daily sub-minute start", "'0 0 * * *'", "2024-01-01T00:00:30Z", "2024-01-03T00:00:00Z", Dates(2)),
        case("hourly", "'0 * * * *'", "2024-03-01T00:30:00Z", "2024-03-02T00:30:00Z", Dates(24)),
        case("every 15 minutes over leap day", "'*/15 * * * *'", "2024-02-28T23:00:00Z", "2024-03-01T01:00:00Z", Dates(105)),
        case("weekdays at 3", "'0 3 * * 1-5'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(22)),
        case("monthly", "'0 0 1 * *'", "2024-01-15T00:00:00Z", "2024-12-31T00:00:00Z", Dates(11)),
        case("1st and 15th", "'0 0 1,15 * *'", "2024-01-01T00:00:00Z", "2024-03-15T00:00:00Z", Dates(6)),
        case("13th OR Friday", "'0 0 13 * 5'", "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", Dates(62)),
        case("last day of month", "'0 0 L * *'", "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", Dates(12)),
        case("names", "'0 12 * jan-mar mon,FRI'", "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", Dates(26)),
        case("dow range to 7 with step", "'0 0 * * 1-7/2'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(18)),
        case("dow range to 7", "'0 0 * * 5-7'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(12)),
        case("full dom OR monday", "'0 0 1-31 * 1'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(31)),
        case("full dom AND */2 dow", "'0 0 1-31 * */2'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(17)),
        case("never (Feb 30)", "'0 0 30 2 *'", "2024-01-01T00:00:00Z", "2027-12-31T00:00:00Z", Dates(0)),
        case("leap day", "'30 2 29 2 *'", "2024-01-01T00:00:00Z", "2029-12-31T00:00:00Z", Dates(2)),
        // Presets.
        case("@daily", "'@daily'", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(31)),
        case("@weekly", "'@weekly'", "2024-01-01T00:00:00Z", "2024-03-31T00:00:00Z", Dates(13)),
        case("@monthly", "'@monthly'", "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", Dates(12)),
        case("@quarterly", "'@quarterly'", "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z", Dates(4)),
        case("@yearly", "'@yearly'", "2020-06-01T00:00:00Z", "2024-01-01T00:00:00Z", Dates(4)),
        case("@annually", "'@annually'", "2020-06-01T00:00:00Z", "2024-01-01T00:00:00Z", Dates(4)),
        case("@midnight", "'@midnight'", "2024-01-01T12:00:00Z", "2024-01-05T12:00:00Z", Dates(4)),
        case("@hourly", "'@hourly'", "2024-01-01T00:00:00Z", "2024-01-01T23:59:00Z", Dates(24)),
        // Deltas: no alignment.
        case("6 hours", "timedelta(hours=6)", "2024-01-01T01:07:00Z", "2024-01-03T01:07:00Z", Dates(9)),
        case("1 day from odd time", "timedelta(days=1)", "2024-01-01T13:45:10Z", "2024-01-10T13:45:09Z", Dates(9)),
        case("37 minutes", "timedelta(minutes=37)", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", Dates(39)),
        case("relativedelta month from Jan 31", "relativedelta(months=1)", "2024-01-31T00:00:00Z", "2024-12-31T00:00:00Z", Dates(12)),
        case("relativedelta days+hours", "relativedelta(days=1, hours=6)", "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z", Dates(25)),
        // Range edges.
        case("single date on tick", "'0 0 * * *'", "2024-05-05T00:00:00Z", "2024-05-05T00:00:00Z", Dates(1)),
        case("single instant off tick", "'0 0 * * *'", "2024-05-05T00:01:00Z", "2024-05-05T00:01:00Z", Dates(0)),
        case("no tick in range", "'0 0 1 * *'", "2024-01-02T00:00:00Z", "2024-01-31T23:59:00Z", Dates(0)),
        case("end before next delta", "timedelta(days=7)", "2024-01-01T00:00:00Z", "2024-01-07T23:59:59Z", Dates(1)),
        // @once.
        case("@once", "'@once'", "2024-01-01T05:03:00Z", "2024-02-01T00:00:00Z", Dates(1)),
        // Explicit timetables.
        case("explicit CronTriggerTimetable", "CronTriggerTimetable('0 6 * * *', timezone='UTC')", "2024-01-01T07:00:00Z", "2024-01-05T06:00:00Z", Dates(4)),
        case("explicit CronDataIntervalTimetable", "CronDataIntervalTimetable('0 6 * * *', timezone='UTC')", "2024-01-01T07:00:00Z", "2024-01-05T06:00:00Z", Dates(4)),
        case("explicit DeltaTriggerTimetable", "DeltaTriggerTimetable(timedelta(hours=5))", "2024-01-01T00:10:00Z", "2024-01-02T00:10:00Z", Dates(5)),
        case("explicit DeltaDataIntervalTimetable", "DeltaDataIntervalTimetable(timedelta(hours=5))", "2024-01-01T00:10:00Z", "2024-01-02T00:10:00Z", Dates(5)),
        // Rejections.
        case("no schedule", "None", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("DAG has no schedule (None)")),
        case("dataset/asset triggered", "[Dataset('s3://bucket/key')]", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("-triggered")),
        case("seconds field", "'0 0 * * * 0'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("seconds")),
        case("nth weekday", "'0 0 * * 1#2'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("1#2")),
        case("trigger with interval", "CronTriggerTimetable('0 0 * * *', timezone='UTC', interval=timedelta(hours=1))", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("non-zero data interval")),
        case("events", "EventsTimetable(event_dates=[pendulum.datetime(2024, 1, 2, tz='UTC'), pendulum.datetime(2024, 1, 9, 12, tz='Europe/Paris'), pendulum.datetime(2023, 1, 9, tz='UTC'), pendulum.datetime(2024, 1, 11, tz='UTC')])", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(2)),
        case("events restricted", "EventsTimetable(event_dates=[pendulum.datetime(2024, 1, 2, 7, 30, tz='Asia/Kolkata'), pendulum.datetime(2024, 1, 2, 7, 30, tz='Asia/Kolkata')], restrict_to_events=True)", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(1)),
    ];
    cases.push(Case {
        tz: "Etc/UTC",
        ..case("daily in Etc/UTC", "'@daily'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(10))
    });
    cases.push(Case {
        tz: "Europe/Amsterdam",
        ..case("daily in Europe/Amsterdam", "'@daily'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(9))
    });
    cases.push(Case {
        tz: "Europe/Amsterdam",
        ..case("cron in Europe/Amsterdam across spring-forward", "'30 2 * * *'", "2024-03-29T00:00:00Z", "2024-04-02T00:00:00Z", Dates(4))
    });
    cases.push(Case {
        tz: "fixed:19800",
        ..case("fixed offset +05:30", "'0 6 * * *'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Dates(9))
    });
    cases.push(Case {
        tz: "fixed:-12600",
        ..case("fixed offset -03:30 trigger", "CronTriggerTimetable('15 */4 * * *', timezone=pendulum.FixedTimezone(-12600))", "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z", Dates(12))
    });
    cases.push(Case {
        tz: "default",
        ..case("naive start in default_timezone", "'0 2 * * *'", "2024-09-25T00:00:00Z", "2024-10-15T00:00:00Z", Dates(20))
    });
    cases.push(Case {
        tz: "default",
        ..case("naive start, hourly over fall-back", "'0 * * * *'", "2024-04-06T10:00:00Z", "2024-04-06T20:00:00Z", Dates(11))
    });
    cases.push(Case {
        tz: "Europe/Berlin",
        ..case("dataset or time", "or_time(CronTriggerTimetable('30 2 * * *', timezone='Europe/Berlin'), [Dataset('s3://b/k')])", "2024-03-28T00:00:00Z", "2024-04-02T00:00:00Z", Dates(5))
    });
    cases.push(Case {
        extra: "max_active_runs=1",
        ..case("@continuous", "'@continuous'", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("@continuous"))
    });
    cases.push(Case {
        v3_only: true,
        ..case("MultipleCronTriggerTimetable", "MultipleCronTriggerTimetable('0 0 * * *', '30 12 * * 1-5', '0 0 * * 1', timezone='UTC')", "2024-01-01T00:00:00Z", "2024-01-14T23:00:00Z", Dates(24))
    });
    cases.push(Case {
        newest_only: true,
        ..case("CronPartitionTimetable", "CronPartitionTimetable('0 0 * * *', timezone='Europe/Paris')", "2024-01-01T00:00:00Z", "2024-01-10T00:00:00Z", Unsupported("partition key"))
    });
    cases.extend(generated_cases());
    cases.extend(generated_tz_cases());
    cases
}

/// A small deterministic generator (64-bit LCG), so the generated table is the same every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // The high 32 bits are the best mixed; the result is below n <= u32::MAX.
        ((self.0 >> 32) % u64::from(n)) as u32
    }

    fn between(&mut self, low: u32, high: u32) -> u32 {
        low + self.below(high - low + 1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u32) as usize]
    }

    /// `a-b` with a < b, both in min..=max.
    fn range(&mut self, min: u32, max: u32) -> (u32, u32) {
        let a = self.between(min, max - 1);
        (a, self.between(a + 1, max))
    }

    /// A field from the syntax backfilld accepts. `max_single` allows day-of-week 7.
    fn field(&mut self, min: u32, max: u32, max_single: u32, star_weight: u32) -> String {
        if self.below(10) < star_weight {
            return "*".to_string();
        }
        match self.below(7) {
            0 => self.between(min, max_single).to_string(),
            1 => {
                let n = self.between(2, 3);
                (0..n)
                    .map(|_| self.between(min, max_single).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            2 => {
                let (a, b) = self.range(min, max_single);
                format!("{a}-{b}")
            }
            3 => format!("*/{}", self.between(2, (max - min).div_ceil(2))),
            4 => format!("{}/{}", self.between(min, max), self.between(2, 9)),
            5 => {
                let (a, b) = self.range(min, max_single);
                format!("{a}-{b}/{}", self.between(2, 5))
            }
            _ => {
                let (a, b) = self.range(min, max);
                format!("{a}-{b},{}", self.between(min, max_single))
            }
        }
    }

    /// A minute field with at most a few values, to keep the dates per day low.
    fn minute(&mut self) -> String {
        match self.below(4) {
            0 => self.between(0, 59).to_string(),
            1 => format!("{},{}", self.between(0, 29), self.between(30, 59)),
            2 => self.pick(&["*/15", "*/20", "*/30"]).to_string(),
            _ => format!("{}-59/{}", self.between(0, 20), self.pick(&["20", "30"])),
        }
    }
}

/// Pseudo-random cron expressions within the accepted syntax, over ~2 month windows.
fn generated_cases() -> Vec<Case> {
    let mut rng = Lcg(0x5eed_ba5e_f111);
    (0..160)
        .map(|i| {
            let dom = match rng.below(12) {
                0 => "L".to_string(),
                1 => "?".to_string(),
                _ => rng.field(1, 31, 31, 4),
            };
            let dow = match rng.below(10) {
                0 => rng
                    .pick(&["mon-fri", "sat,sun", "MON/2", "tue-sat/2"])
                    .to_string(),
                _ => rng.field(0, 6, 7, 5),
            };
            let month = match rng.below(8) {
                0 => rng
                    .pick(&["jan-jun", "FEB,aug", "mar/3", "*/4"])
                    .to_string(),
                _ => rng.field(1, 12, 12, 6),
            };
            let expression = format!(
                "{} {} {dom} {month} {dow}",
                rng.minute(),
                rng.field(0, 23, 23, 3)
            );
            let start = Utc
                .with_ymd_and_hms(2020 + rng.below(10) as i32, 1 + rng.below(12), 1, 0, 0, 0)
                .single()
                .unwrap_or_else(|| panic!("bad generated date"))
                + Duration::minutes(i64::from(rng.below(40 * 24 * 60)))
                + Duration::seconds(i64::from(rng.below(2)) * 30);
            // Short windows check where the range ends; long ones reach restricted months.
            let days = if i % 2 == 0 {
                rng.between(1, 60)
            } else {
                rng.between(200, 800)
            };
            let end = start + Duration::days(i64::from(days));
            Case {
                name: format!("generated #{i} '{expression}'"),
                schedule: format!("'{expression}'"),
                extra: "",
                tz: "UTC",
                start,
                end,
                expect: Expect::SameAsAirflow,
                v3_only: false,
                newest_only: false,
            }
        })
        .collect()
}

/// The zones of the generated time-zone cases: both hemispheres, half-hour and 45-minute
/// offsets, 30-minute DST (Lord Howe), DST at midnight (Havana, Santiago, Sao Paulo), negative
/// DST (Dublin), and zones whose rules changed (Moscow, Sao Paulo, Tehran, Istanbul, Apia).
const TZ_ZONES: &[&str] = &[
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Santiago",
    "Asia/Kolkata",
    "Australia/Adelaide",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Europe/Moscow",
    "America/Sao_Paulo",
    "Asia/Tehran",
    "Europe/Istanbul",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "America/Havana",
    "Europe/Dublin",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Asia/Jerusalem",
];

/// Cron shapes of every class: every hour (Airflow's "covers every hour" rule), every N hours,
/// fixed times inside spring-forward gaps and fall-back folds, midnight, day of week and day of
/// month, presets.
const TZ_CRONS: &[&str] = &[
    "0 * * * *",
    "*/15 * * * *",
    "30 * * * *",
    "0 */3 * * *",
    "0 */2 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0 2 * * *",
    "0 3 * * *",
    "0 0 * * *",
    "45 23 * * *",
    "0 1-3 * * *",
    "15 0,1,2,3 * * *",
    "0 2 * * 0",
    "30 1 * * sat,sun",
    "0 2 1 * *",
    "0 0 * * 1-5",
    "5 * 1 * *",
    "@daily",
    "@weekly",
    "@monthly",
    "@hourly",
];

/// Cases across the DST transitions of [`TZ_ZONES`] (found in the tz database), with cron,
/// cron-trigger, multiple-cron-trigger, timedelta and relativedelta schedules.
fn generated_tz_cases() -> Vec<Case> {
    let mut rng = Lcg(0x7a_dead_beef);
    let mut cases = Vec::new();
    for (zone_index, zone) in TZ_ZONES.iter().enumerate() {
        let tz = match jiff::tz::TimeZone::get(zone) {
            Ok(tz) => tz,
            Err(e) => panic!("{zone}: {e}"),
        };
        // Transitions between 2005 and 2026, where the zone has them.
        let from =
            jiff::Timestamp::from_second(1_104_537_600).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let until = 1_798_761_600;
        let transitions: Vec<i64> = tz
            .following(from)
            .map(|t| t.timestamp().as_second())
            .take_while(|t| *t < until)
            .collect();
        // Zones without DST (Kolkata, Kathmandu) get random instants instead.
        let transitions = if transitions.is_empty() {
            (0..9)
                .map(|_| 1_104_537_600 + i64::from(rng.below(690_000_000)))
                .collect()
        } else {
            transitions
        };
        for n in 0..9 {
            let transition = transitions[rng.below(transitions.len() as u32) as usize];
            let at = DateTime::from_timestamp(transition, 0)
                .unwrap_or_else(|| panic!("bad transition {transition}"));
            let expression = TZ_CRONS[(zone_index * 9 + n) % TZ_CRONS.len()];
            let fine = expression.split(' ').nth(1) == Some("*") || expression == "@hourly";
            // Sub-hourly crons get a window of hours, the others days (monthly: months).
            let (before, after) = if expression.contains("*/15") {
                (
                    Duration::minutes(i64::from(rng.between(60, 600))),
                    Duration::hours(i64::from(rng.between(2, 20))),
                )
            } else if fine {
                (
                    Duration::minutes(i64::from(rng.between(60, 2000))),
                    Duration::hours(i64::from(rng.between(3, 60))),
                )
            } else if expression.contains(" 1 * *") || expression == "@monthly" {
                (
                    Duration::days(i64::from(rng.between(20, 70))),
                    Duration::days(i64::from(rng.between(20, 70))),
                )
            } else {
                (
                    Duration::minutes(i64::from(rng.between(60, 6000))),
                    Duration::minutes(i64::from(rng.between(60, 9000))),
                )
            };
            // Starts on and off the minute (and sometimes exactly on a tick).
            let mut start = at - before;
            if rng.below(3) == 0 {
                start += Duration::seconds(30);
            }
            let end = at + after;
            let (schedule, v3_only) = match n % 6 {
                0 | 1 => (format!("'{expression}'"), false),
                2 => (
                    format!("CronTriggerTimetable('{expression}', timezone=TZ)"),
                    false,
                ),
                3 => (
                    format!(
                        "MultipleCronTriggerTimetable('{expression}', '{}', timezone=TZ)",
                        rng.pick(&["30 2 * * *", "0 */5 * * *", "15 1 * * *"])
                    ),
                    true,
                ),
                4 => (
                    rng.pick(&[
                        "timedelta(hours=1)",
                        "timedelta(hours=6)",
                        "timedelta(days=1)",
                        "timedelta(minutes=90)",
                    ])
                    .to_string(),
                    false,
                ),
                _ => (
                    rng.pick(&[
                        "relativedelta(days=1)",
                        "relativedelta(months=1)",
                        "relativedelta(days=1, hours=1)",
                        "relativedelta(weeks=1)",
                    ])
                    .to_string(),
                    false,
                ),
            };
            cases.push(Case {
                name: format!("tz #{} {zone} {schedule}", cases.len()),
                schedule,
                extra: "",
                tz: zone,
                start,
                end,
                expect: Expect::SameAsAirflow,
                v3_only,
                newest_only: false,
            });
        }
    }
    // A few with a naive start_date, which takes [core] default_timezone.
    for (n, expression) in ["30 2 * * *", "0 * * * *", "0 0 * * *", "0 */3 * * *"]
        .iter()
        .enumerate()
    {
        let start = at("2024-04-05T00:00:00Z") + Duration::days(i64::from(rng.between(0, 1)));
        let end = start + Duration::days(3 + n as i64);
        cases.push(Case {
            name: format!("default_timezone '{expression}'"),
            schedule: format!("'{expression}'"),
            extra: "",
            tz: "default",
            start,
            end,
            expect: Expect::SameAsAirflow,
            v3_only: false,
            newest_only: false,
        });
    }
    cases
}

/// The `[core] default_timezone` of the oracle's Airflow (cases with `tz: "default"`).
const ORACLE_DEFAULT_TIMEZONE: &str = "Australia/Sydney";

/// Runs the whole table through one Python process of the given Airflow.
fn run_oracle(major: AirflowMajor, cases: &[Case]) -> Vec<Value> {
    let venv = airflow_venv(major);
    let home = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let input: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "schedule": c.schedule,
                "extra": c.extra,
                "tz": c.tz,
                "start": c.start.to_rfc3339(),
                "end": c.end.to_rfc3339(),
                "cap": CAP,
            })
        })
        .collect();
    let cases_path = home.path().join("cases.json");
    if let Err(e) = std::fs::write(&cases_path, Value::Array(input).to_string()) {
        panic!("writing {}: {e}", cases_path.display());
    }
    let major_arg = match major {
        AirflowMajor::V2 => "2",
        _ => "3",
    };
    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(ORACLE_PY)
        .arg(major_arg)
        .arg(&cases_path)
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__DEFAULT_TIMEZONE", ORACLE_DEFAULT_TIMEZONE)
        .env("AIRFLOW__CORE__DAGS_FOLDER", home.path())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!("running {}/bin/python: {e}", venv.display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "oracle script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ORACLE_RESULT "))
        .unwrap_or_else(|| panic!("no ORACLE_RESULT line:\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Array(results)) if results.len() == cases.len() => results,
        other => panic!("bad oracle output {other:?}"),
    }
}

fn micros_list(value: &Value) -> Result<Vec<DateTime<Utc>>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("not a list: {value}"))?
        .iter()
        .map(|v| {
            v.as_i64()
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| format!("bad timestamp {v}"))
        })
        .collect()
}

fn show(dates: &[DateTime<Utc>]) -> String {
    let shown: Vec<String> = dates.iter().take(8).map(|d| d.to_rfc3339()).collect();
    let more = dates.len().saturating_sub(shown.len());
    if more > 0 {
        format!("[{} ... +{more}] ({} dates)", shown.join(", "), dates.len())
    } else {
        format!("[{}] ({} dates)", shown.join(", "), dates.len())
    }
}

/// Checks one case; `Err` describes the mismatch.
fn check(case: &Case, result: &Value) -> Result<(), String> {
    if let Some(error) = result.get("python_error") {
        return Err(format!("Airflow failed to build the DAG: {error}"));
    }
    let between = micros_list(&result["between"])?;
    let scheduled = micros_list(&result["scheduled"])?;
    // (Airflow 3.3's CronPartitionTimetable, refused, disagrees with itself: native backfill
    // reads the range's bounds as wall-clock times of the timetable's zone, the scheduler not.)
    if between != scheduled && !matches!(case.expect, Expect::Unsupported(_)) {
        return Err(format!(
            "Airflow disagrees with itself: iter_dagrun_infos_between {} vs next_dagrun_info loop {}",
            show(&between),
            show(&scheduled)
        ));
    }
    let truncated = between.len() >= CAP;
    // Both the encode_timetable form and the serialized_dag form ("timetable" or, in Airflow 2,
    // "schedule_interval" + "timezone").
    let parsed = [
        (
            "timetable",
            Timetable::from_serialized(&result["timetable"]),
        ),
        ("dag", Timetable::from_serialized_dag(&result["dag"])),
    ];
    for (form, timetable) in parsed {
        let context = format!("{form} {}", result[form]);
        match (&case.expect, timetable) {
            (Expect::Unsupported(needle), Err(e @ ScheduleError::Unsupported(_))) => {
                if !e.to_string().contains(needle) {
                    return Err(format!(
                        "{context}: error '{e}' does not mention '{needle}'"
                    ));
                }
            }
            (Expect::Unsupported(needle), Err(e)) => {
                return Err(format!(
                    "{context}: expected Unsupported('{needle}'), got {e:?}"
                ))
            }
            (Expect::Unsupported(needle), Ok(t)) => {
                return Err(format!(
                    "{context}: expected Unsupported('{needle}'), parsed as {} (Airflow dates {})",
                    t.describe(),
                    show(&between)
                ))
            }
            (_, Err(e)) => return Err(format!("{context}: {e}")),
            (expect, Ok(t)) => {
                let ours = t
                    .logical_dates(case.start, case.end, 1_000_000)
                    .map_err(|e| format!("{context}: {} logical_dates: {e}", t.describe()))?;
                let compared = if truncated && ours.len() > CAP {
                    &ours[..CAP]
                } else {
                    &ours[..]
                };
                if compared != between {
                    return Err(format!(
                        "{context}: ours {} != Airflow {}",
                        show(&ours),
                        show(&between)
                    ));
                }
                if let Expect::Dates(n) = expect {
                    if ours.len() != *n {
                        return Err(format!(
                            "{context}: {} dates (same as Airflow), the table expects {n}",
                            ours.len()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn run_table(major: AirflowMajor) {
    let cases: Vec<Case> = table()
        .into_iter()
        .filter(|c| !c.v3_only || major.is_v3())
        .filter(|c| !c.newest_only || major == AirflowMajor::V3Newest)
        .collect();
    let results = run_oracle(major, &cases);
    // The generated cases must exercise something: most of them should produce dates.
    let (mut generated, mut empty, mut capped) = (0, 0, 0);
    for (case, result) in cases.iter().zip(&results) {
        if let Expect::SameAsAirflow = case.expect {
            generated += 1;
            match result["between"].as_array().map(Vec::len) {
                Some(0) | None => empty += 1,
                Some(n) if n >= CAP => capped += 1,
                Some(_) => {}
            }
        }
    }
    eprintln!(
        "generated cron cases: {generated}, without dates: {empty}, capped at {CAP}: {capped}"
    );
    assert!(
        empty * 4 < generated,
        "too many generated cases without dates ({empty} of {generated})"
    );
    // Airflow 2 stores simple schedules as "schedule_interval": that path must be exercised.
    if major == AirflowMajor::V2 {
        let legacy = results
            .iter()
            .filter(|r| r["dag"].get("schedule_interval").is_some())
            .count();
        assert!(
            legacy > 0,
            "no Airflow 2 case serialized a schedule_interval"
        );
    }
    let mut failures = String::new();
    let mut failed = 0;
    for (case, result) in cases.iter().zip(&results) {
        if let Err(why) = check(case, result) {
            failed += 1;
            let _ = writeln!(
                failures,
                "- {} [{} .. {}, tz {}]: {why}",
                case.name,
                case.start.to_rfc3339(),
                case.end.to_rfc3339(),
                case.tz
            );
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} cases differ from Airflow {major:?}:\n{failures}",
        cases.len()
    );
}

#[test]
fn schedule_matches_airflow_2() {
    run_table(AirflowMajor::V2);
}

#[test]
fn schedule_matches_airflow_3() {
    run_table(AirflowMajor::V3);
}

#[test]
fn schedule_matches_airflow_3_newest() {
    run_table(AirflowMajor::V3Newest);
}
