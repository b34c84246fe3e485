//! The request format's tables: parsing, strictness, every refusal with its reason code.

use super::*;

fn rejected(text: &str) -> (ReasonCode, String) {
    match parse(text.as_bytes(), 10) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(r) => (r.code, r.message),
    }
}

#[test]
fn full_request() {
    let r = parse(
        b"dag_id = \"sales\"\nstart = 2024-01-01\nend = 2024-01-31T06:00:00+02:00\n\
          description = \"x\"\nmax_active_runs = 2\n[params]\nregion = \"eu\"\nn = 3\n",
        10,
    );
    let r = r.map_err(|e| e.to_string());
    assert!(r.is_ok(), "{r:?}");
    let Ok(r) = r else { return };
    assert_eq!(fmt_ts(r.start), "2024-01-01T00:00:00Z");
    assert_eq!(fmt_ts(r.end), "2024-01-31T04:00:00Z");
    assert_eq!(r.max_active_runs, 2);
    assert_eq!(r.params.get("region"), Some(&serde_json::json!("eu")));
    assert!(!r.ignore_overlap);
}

#[test]
fn each_rule_has_its_reason() {
    let cases: &[(&str, ReasonCode, &str)] = &[
        (
            "dag_id = \"a\"\nstart = 2024-01-02\nend = 2024-01-01\n",
            ReasonCode::StartAfterEnd,
            "is after end",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\nmax_active_runs = 11\n",
            ReasonCode::MaxActiveRunsOutOfBounds,
            "allowed 1..=10",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\nmax_active_runs = 0\n",
            ReasonCode::MaxActiveRunsOutOfBounds,
            "out of bounds",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\nparams = 3\n",
            ReasonCode::ParamsNotTable,
            "must be a table",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\ncolour = 1\n",
            ReasonCode::UnknownKey,
            "colour",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\n",
            ReasonCode::MissingKey,
            "end",
        ),
        (
            "dag_id = \"../../etc/passwd\"\nstart = 2024-01-01\nend = 2024-01-02\n",
            ReasonCode::InvalidValue,
            "Airflow's id rule",
        ),
        (
            "dag_id = \"a\"\nstart = 06:00:00\nend = 2024-01-02\n",
            ReasonCode::InvalidValue,
            "a time without a date",
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-02-30\n",
            ReasonCode::InvalidToml,
            "",
        ),
        ("dag_id = [\n", ReasonCode::InvalidToml, ""),
    ];
    for (text, code, needle) in cases {
        let (c, m) = rejected(text);
        assert_eq!(c, *code, "{text}: {m}");
        assert!(m.contains(needle), "{text}: {m}");
    }
    let long = format!(
        "dag_id = \"{}\"\nstart = 2024-01-01\nend = 2024-01-02\n",
        "a".repeat(240)
    );
    assert_eq!(rejected(&long).0, ReasonCode::CopyIdTooLong);
    assert_eq!(
        parse(&[0xff, 0xfe], 10).err().map(|r| r.code),
        Some(ReasonCode::InvalidUtf8)
    );
}

#[test]
fn life_cycle_requests() {
    for name in ["cancel", "pause", "resume", "delete", "retry", "approve"] {
        let text = format!("action = \"{name}\"\nid = \"sales_backfill_20240101_000000\"\n");
        match parse_any(text.as_bytes(), 10) {
            Ok(Parsed::Operate(op)) => {
                assert_eq!(op.action.as_str(), name);
                assert_eq!(op.id, "sales_backfill_20240101_000000");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let refused = |text: &str| {
        parse_any(text.as_bytes(), 10)
            .err()
            .map(|r| (r.code, r.message))
    };
    match parse_any(
        b"action = \"reject\"\nid = \"x\"\nreason = \"  too big for this week \"\n",
        10,
    ) {
        Ok(Parsed::Operate(op)) => {
            assert_eq!(op.action, Action::Reject);
            assert_eq!(op.reason.as_deref(), Some("too big for this week"));
        }
        other => panic!("reject: {other:?}"),
    }
    for (body, want) in [
        ("action = \"reject\"\nid = \"x\"\n", ReasonCode::MissingKey),
        (
            "action = \"reject\"\nid = \"x\"\nreason = \" \"\n",
            ReasonCode::InvalidValue,
        ),
        (
            "action = \"reject\"\nid = \"x\"\nreason = \"a\\u0007b\"\n",
            ReasonCode::InvalidValue,
        ),
        (
            "action = \"approve\"\nid = \"x\"\nreason = \"ok\"\n",
            ReasonCode::InvalidValue,
        ),
        (
            "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\nreason = \"x\"\n",
            ReasonCode::InvalidValue,
        ),
    ] {
        assert_eq!(refused(body).map(|r| r.0), Some(want), "{body}");
    }
    let (code, msg) = refused("action = \"cancel\"\n").unwrap_or_else(|| panic!("accepted"));
    assert_eq!(code, ReasonCode::MissingKey);
    assert!(msg.contains("`id`"), "{msg}");
    let (code, msg) =
        refused("action = \"explode\"\nid = \"x\"\n").unwrap_or_else(|| panic!("accepted"));
    assert_eq!(code, ReasonCode::InvalidValue);
    assert!(msg.contains("explode"), "{msg}");
    let (code, msg) = refused("action = \"pause\"\nid = \"x\"\ndag_id = \"a\"\n")
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(code, ReasonCode::InvalidValue);
    assert!(msg.contains("dag_id applies only to create"), "{msg}");
    let (code, _) =
        refused("action = \"pause\"\nid = \"../x\"\n").unwrap_or_else(|| panic!("accepted"));
    assert_eq!(code, ReasonCode::InvalidValue);
    for body in [
        "action = \"pause\"\nid = \"..\"\n",
        "action = \"delete\"\nid = \"a..b\"\n",
        "dag_id = \"..\"\nstart = 2024-01-01\nend = 2024-01-01\n",
        "dag_id = \".\"\nstart = 2024-01-01\nend = 2024-01-01\n",
    ] {
        let (code, _) = refused(body).unwrap_or_else(|| panic!("accepted {body}"));
        assert_eq!(code, ReasonCode::InvalidValue, "{body}");
    }
    let (code, _) = refused("id = \"x\"\ndag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\n")
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(code, ReasonCode::InvalidValue);
    let later = parse(
        b"dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\nscheduled_at = 2030-01-01T06:00:00+01:00\ndelete_after_days = 7\n",
        10,
    );
    assert_eq!(
        later
            .as_ref()
            .ok()
            .and_then(|r| r.scheduled_at)
            .map(fmt_ts)
            .as_deref(),
        Some("2030-01-01T05:00:00Z")
    );
    assert_eq!(
        later.as_ref().ok().and_then(|r| r.delete_after_days),
        Some(7)
    );
    assert_eq!(later.map(|r| r.reprocess).ok(), Some(Reprocess::Completed));
    let none = parse(
        b"dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\nreprocess = \"none\"\n",
        10,
    );
    assert_eq!(none.map(|r| r.reprocess).ok(), Some(Reprocess::None));
    for bad in [
        "scheduled_at = 2030-01-01",
        "scheduled_at = 2030-01-01T06:00:00",
        "delete_after_days = -1",
        "delete_after_days = 3651",
        "reprocess = \"all\"",
    ] {
        let text = format!("dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\n{bad}\n");
        let (code, _) = refused(&text).unwrap_or_else(|| panic!("accepted {bad}"));
        assert_eq!(code, ReasonCode::InvalidValue, "{bad}");
    }
    let dry = parse(b"action = \"create\"\ndag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-01\ndry_run = true\n", 10);
    assert_eq!(dry.map(|r| r.dry_run).ok(), Some(true));
    assert!(parse(b"action = \"cancel\"\nid = \"x\"\n", 10).is_err());
}

#[test]
fn notify_recipients() {
    let head = "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\n";
    let r = parse(
        format!("{head}notify = [\"mailto:alice@example.com\", \"https://hooks.example.com/x\", \"slack:https://hooks.example.com/y\"]\n").as_bytes(),
        10,
    );
    assert_eq!(
        r.map(|r| r.options.notify).unwrap_or_default(),
        [
            "mailto:alice@example.com",
            "https://hooks.example.com/x",
            "slack:https://hooks.example.com/y"
        ]
    );
    for bad in [
        "notify = []",
        "notify = [\"alice@example.com\"]",
        "notify = [\"file:///etc/passwd\"]",
        "notify = [\"mailto:a@example.com\\r\\nBcc: b@example.com\"]",
    ] {
        let (code, msg) = rejected(&format!("{head}{bad}\n"));
        assert_eq!(code, ReasonCode::InvalidValue, "{bad}");
        assert!(msg.contains("notify"), "{bad}: {msg}");
    }
    let (code, _) = rejected("notify = 3\n");
    assert_eq!(code, ReasonCode::InvalidToml);
    let (code, msg) = rejected("action = \"cancel\"\nid = \"a_backfill_20240101_000000\"\nnotify = [\"mailto:a@example.com\"]\n");
    assert_eq!(code, ReasonCode::InvalidValue);
    assert!(msg.contains("notify applies only to create"), "{msg}");
}

#[test]
fn task_subset_asset_and_after_options() {
    let head = "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\n";
    let r = parse(
        format!("{head}tasks = [\"^transform$\", \"load\"]\ninclude_upstream = true\nemit_asset_events = true\nafter = [\"a_backfill_20240101_000000\"]\n").as_bytes(),
        10,
    );
    let o = r.map(|r| r.options).unwrap_or_default();
    assert_eq!(o.tasks, ["^transform$", "load"]);
    assert!(o.include_upstream && !o.include_downstream);
    assert_eq!(o.emit_asset_events, Some(true));
    assert_eq!(o.after, ["a_backfill_20240101_000000"]);
    let plain = parse(head.as_bytes(), 10).map(|r| r.options);
    assert_eq!(plain, Ok(Options::default()));
    for (bad, needle) in [
        ("tasks = []", "tasks is empty"),
        ("tasks = [\"(?=x)\"]", "tasks pattern \"(?=x)\""),
        ("include_upstream = true", "only with tasks"),
        ("after = [\"../x\"]", "not a backfill id"),
        ("after = [\"a\", \"a\"]", "twice"),
    ] {
        let (code, msg) = rejected(&format!("{head}{bad}\n"));
        assert_eq!(code, ReasonCode::InvalidValue, "{bad}");
        assert!(msg.contains(needle), "{bad}: {msg}");
    }
    let (code, _) = rejected(&format!("{head}tasks = \"x\"\n"));
    assert_eq!(code, ReasonCode::InvalidToml);
    let op = parse_any(b"action = \"cancel\"\nid = \"x\"\nafter = [\"y\"]\n", 10);
    assert!(op.is_err());
}

#[test]
fn toml_bombs_are_rejected_quickly() {
    let head = "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\n";
    // Up to the size a spool file may have (64 KiB by default).
    for n in [40usize, 10_000, 30_000] {
        let bombs = [
            format!("{head}[params]\nx = {}{}\n", "[".repeat(n), "]".repeat(n)),
            format!(
                "{head}[params]\nx = {}1{}\n",
                "{a=".repeat(n),
                "}".repeat(n)
            ),
            format!("{head}[params.{}]\n", vec!["a"; n].join(".")),
        ];
        for b in bombs {
            let t = std::time::Instant::now();
            let r = parse(b.as_bytes(), 10);
            assert!(r.is_err(), "nesting {n} accepted");
            assert!(t.elapsed() < std::time::Duration::from_secs(2), "{n}");
        }
    }
    // Brackets inside strings and comments do not count.
    let ok = format!(
        "{head}description = \"{}\"\n# {}\n[params]\nx = [[1]]\n",
        "[".repeat(100),
        "{".repeat(100)
    );
    assert!(parse(ok.as_bytes(), 10).is_ok());
}

#[test]
fn range_bounds_without_offset_are_wall_clock() {
    let text = "dag_id = \"a\"\nstart = 2024-03-01\nend = 2024-03-02T06:30:00\n";
    let r = parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{e:?}"));
    let wall = |text: &str| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok();
    assert_eq!(r.wall_clock.start, wall("2024-03-01T00:00:00"));
    assert_eq!(r.wall_clock.end, wall("2024-03-02T06:30:00"));
    assert_eq!(fmt_ts(r.start), "2024-03-01T00:00:00Z");
    // An offset is an exact instant.
    let text = "dag_id = \"a\"\nstart = 2024-03-01T00:00:00+01:00\nend = 2024-03-02T00:00:00Z\n";
    let r = parse(text.as_bytes(), 10).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(r.wall_clock, WallClock::default());
    assert_eq!(fmt_ts(r.start), "2024-02-29T23:00:00Z");
}

#[test]
fn lengths_and_on_behalf_of() {
    let head = "dag_id = \"a\"\nstart = 2024-01-01\nend = 2024-01-02\n";
    let r = parse(format!("{head}on_behalf_of = \"alice\"\n").as_bytes(), 10);
    assert_eq!(
        r.map(|r| r.on_behalf_of).unwrap_or_default().as_deref(),
        Some("alice")
    );
    for bad in ["", " alice", "a\\u0000b"] {
        let text = format!("{head}on_behalf_of = \"{bad}\"\n");
        assert_eq!(rejected(&text).0, ReasonCode::InvalidValue, "{bad:?}");
    }
    let long = format!("{head}on_behalf_of = \"{}\"\n", "a".repeat(257));
    assert_eq!(rejected(&long).0, ReasonCode::InvalidValue);
    let key = format!("{head}[params]\n{} = 1\n", "k".repeat(251));
    assert_eq!(rejected(&key).0, ReasonCode::InvalidValue);
    let desc = format!("{head}description = \"{}\"\n", "d".repeat(2001));
    assert_eq!(rejected(&desc).0, ReasonCode::InvalidValue);
}

#[test]
fn outcomes_are_stored_and_shown_by_name() {
    for (o, name) in [
        (Outcome::Accepted, "accepted"),
        (Outcome::Rejected, "rejected"),
    ] {
        assert_eq!(o.as_str(), name);
        assert_eq!(Outcome::parse(name), o);
        assert_eq!(serde_json::to_value(o).ok(), Some(serde_json::json!(name)));
    }
    assert_eq!(Outcome::parse("pending"), Outcome::Rejected);
    assert!(Outcome::Accepted.is_accepted() && !Outcome::Rejected.is_accepted());
}
