//! The field tables and the one mapping, on both bodies.

use axum::http::StatusCode;
use serde_json::json;

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn dates_like_the_seed() {
    let want = "2024-01-02T00:00:00Z";
    for text in [
        "2024-01-02",
        "2024-01-02T00:00:00",
        "2024-01-02T00:00:00+00:00",
        "2024-01-02T01:00:00+01:00",
        "2024-01-02 00:00:00",
    ] {
        let got = parse_date("start_date", text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(crate::request::fmt_ts(got), want, "{text}");
    }
    assert!(parse_date("start_date", "yesterday").is_err());
}

#[test]
fn seed_body_becomes_a_request_file() {
    let now = Utc::now();
    let t = seed_request(
        &obj(json!({
            "dag_id": "sales", "start_date": "2024-01-01", "end_date": "2024-01-03T00:00:00+00:00",
            "description": "fix", "dag_params": "{\"region\": \"eu\"}", "max_active_runs": "2",
            "delete_duration_days": 7, "ignore_overlapping_backfills": "true",
            "scheduled_date": "2020-01-01T00:00:00"
        })),
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
    let parsed =
        crate::request::parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    assert_eq!(parsed.dag_id, "sales");
    assert_eq!(parsed.max_active_runs, 2);
    assert!(parsed.ignore_overlap);
    assert_eq!(parsed.params.get("region"), Some(&json!("eu")));
    assert_eq!(crate::request::fmt_ts(parsed.end), "2024-01-03T00:00:00Z");
    assert_eq!(parsed.delete_after_days, Some(7));
    assert_eq!(
        parsed.scheduled_at, None,
        "a scheduled_date in the past means now"
    );
    let later = seed_request(
        &obj(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "scheduled_date": "2999-01-01"})),
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(later.contains_key("scheduled_at"));
}

#[test]
fn seed_body_errors() {
    let now = Utc::now();
    let err = |v: Value| {
        seed_request(&obj(v), now)
            .err()
            .map(|e| (e.status, e.detail))
    };
    assert_eq!(
        err(json!({"start_date": "2024-01-01"})),
        Some((StatusCode::BAD_REQUEST, "dag_id is required".into()))
    );
    assert_eq!(
        err(json!({"dag_id": "a", "end_date": "2024-01-01"})),
        Some((StatusCode::BAD_REQUEST, "start_date is required".into()))
    );
    assert!(err(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "dag_params": "[1]"})).is_some());
    assert!(err(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "dag_params": {"x": null}})).is_some());
    assert!(err(
        json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "bogus": 1})
    )
    .is_some());
}

#[test]
fn v2_body_becomes_a_request_file() {
    let t = v2_request(&obj(json!({
        "dag_id": "sales", "start": "2024-01-01", "end": "2024-01-02", "params": {"a": [1, 2]},
        "max_active_runs": 3, "ignore_overlap": true, "dry_run": false
    })))
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!t.contains_key("dry_run"));
    let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
    let parsed =
        crate::request::parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    assert_eq!(parsed.max_active_runs, 3);
    assert!(v2_request(&obj(json!({"dag_id": "x", "start": "2024-01-01"}))).is_err());
    assert!(v2_request(&obj(
        json!({"dag_id": "x", "start": "2024-01-01", "end": "2024-01-01", "params": 3})
    ))
    .is_err());
}

#[test]
fn notify_in_both_creates() {
    let notify = json!([
        "mailto:alice@example.com",
        "slack:https://hooks.example.com/x"
    ]);
    let seed = seed_request(
        &obj(
            json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "notify": notify}),
        ),
        Utc::now(),
    );
    let v2 = v2_request(&obj(
        json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "notify": notify}),
    ));
    for t in [seed, v2] {
        let t = t.unwrap_or_else(|e| panic!("{e:?}"));
        let text = toml::to_string(&t).unwrap_or_else(|e| panic!("{e}"));
        let parsed =
            crate::request::parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(
            parsed.options.notify,
            [
                "mailto:alice@example.com",
                "slack:https://hooks.example.com/x"
            ]
        );
    }
    for bad in [json!("mailto:a@example.com"), json!([1])] {
        let seed = seed_request(
            &obj(
                json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "notify": bad}),
            ),
            Utc::now(),
        );
        let v2 = v2_request(&obj(
            json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "notify": bad}),
        ));
        for r in [seed, v2] {
            assert_eq!(
                r.err().map(|e| e.status),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }
}

#[test]
fn v2_fields_in_body_order() {
    let names: Vec<&str> = V2.iter().map(|f| f.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        names, sorted,
        "V2 must list fields in a JSON object's key order"
    );
}

#[test]
fn required_fields_and_what_counts_as_missing() {
    let now = Utc::now();
    let seed_err = |v: Value| seed_request(&obj(v), now).err().map(|e| e.detail);
    let v2_err = |v: Value| v2_request(&obj(v)).err().map(|e| e.detail);
    let required = |f: &str| Some(format!("{f} is required"));
    assert_eq!(
        seed_err(json!({"dag_id": 3, "start_date": "2024-01-01", "end_date": "2024-01-01"})),
        required("dag_id")
    );
    assert_eq!(
        seed_err(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": ""})),
        required("end_date")
    );
    assert_eq!(
        v2_err(json!({"dag_id": "a", "start": "2024-01-01", "after": 5})),
        required("end")
    );
    assert_eq!(
        v2_err(json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "priority": "2"})),
        Some("priority must be an integer".to_owned())
    );
    assert_eq!(
        seed_err(
            json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "max_active_runs": "x"})
        ),
        Some("max_active_runs must be an integer".to_owned())
    );
    assert_eq!(
        v2_err(
            json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "ignore_overlap": "true"})
        ),
        Some("ignore_overlap must be a boolean".to_owned())
    );
}

#[test]
fn empty_values_per_api() {
    let now = Utc::now();
    let seed = seed_request(
        &obj(json!({"dag_id": "a", "start_date": "2024-01-01", "end_date": "2024-01-01", "description": "", "dag_params": ""})),
        now,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!seed.contains_key("description") && !seed.contains_key("params"));
    let v2 = v2_request(&obj(
        json!({"dag_id": "a", "start": "2024-01-01", "end": "2024-01-01", "description": "", "params": {}, "scheduled_at": "2020-01-01"}),
    ))
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        v2.contains_key("description")
            && v2.contains_key("params")
            && v2.contains_key("scheduled_at")
    );
}
