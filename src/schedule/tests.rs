//! The schedule tables: every rule of the module against dates Airflow computes.

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
    let t = parse(json!({"timetable": {"__type": ONCE, "__var": {}}, "timezone": "Asia/Tokyo"}));
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
