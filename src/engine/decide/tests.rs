//! The admission decisions as tables: facts in, decision out, no DB and no Airflow.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::authz::{CAN_EDIT, CAN_OPERATE, CAN_READ, RESOURCE_BACKFILLS, RESOURCE_DAGS};
use crate::state::BackfillState as S;
use crate::testutil::{backfill_row, day};

fn config(extra: &str) -> Config {
    Config::parse(
        Path::new("x"),
        &format!("[airflow]\nhome = \"/a\"\n{extra}"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn code(d: &Ruling<impl std::fmt::Debug>) -> Option<ReasonCode> {
    d.refusal().map(|r| r.code)
}

fn facts(
    dag: Option<(bool, Option<&str>)>,
    serialized: Option<Value>,
    source: Option<&str>,
) -> DagFacts {
    DagFacts {
        dag: dag.map(|(is_active, fileloc)| DagRow {
            dag_id: "sales".into(),
            is_active,
            is_paused: false,
            fileloc: fileloc.map(str::to_owned),
        }),
        serialized,
        source_code: source.map(str::to_owned),
    }
}

fn serialized_dag() -> Value {
    json!({"dag_id": "sales", "tasks": [{"task_id": "extract"}, {"task_id": "load"}]})
}

#[test]
fn origin_dag_table() {
    let ok = Some((true, Some("/dags/sales.py")));
    let dag = Some(serialized_dag());
    let no_backfill = Some(json!({"allowed_run_types": ["manual", "scheduled"]}));
    let with_backfill = Some(json!({"allowed_run_types": ["backfill"]}));
    let cases: Vec<(&str, DagFacts, Option<ReasonCode>)> = vec![
        (
            "unknown",
            facts(None, None, None),
            Some(ReasonCode::UnknownDag),
        ),
        (
            "inactive",
            facts(Some((false, Some("/f"))), dag.clone(), Some("code")),
            Some(ReasonCode::DagDeleted),
        ),
        (
            "no fileloc",
            facts(Some((true, None)), dag.clone(), Some("code")),
            Some(ReasonCode::DagNotSerialized),
        ),
        (
            "not serialized",
            facts(ok, None, Some("code")),
            Some(ReasonCode::DagNotSerialized),
        ),
        (
            "no source",
            facts(ok, dag.clone(), None),
            Some(ReasonCode::DagNotSerialized),
        ),
        (
            "no backfill runs",
            facts(ok, no_backfill, Some("code")),
            Some(ReasonCode::BackfillNotAllowed),
        ),
        (
            "backfill runs allowed",
            facts(ok, with_backfill, Some("code")),
            None,
        ),
        ("no run type list", facts(ok, dag, Some("code")), None),
    ];
    for (name, f, want) in cases {
        assert_eq!(code(&origin("sales", &f)), want, "{name}");
    }
    let f = facts(ok, Some(serialized_dag()), Some("code"));
    let Ruling::Admit(o) = origin("sales", &f) else {
        panic!("refused")
    };
    assert_eq!((o.fileloc, o.code), ("/dags/sales.py", "code"));
}

fn request(reprocess: Reprocess) -> Request {
    Request {
        dag_id: "sales".into(),
        start: day(1),
        end: day(4),
        wall_clock: request::WallClock::default(),
        description: None,
        max_active_runs: 2,
        params: serde_json::Map::new(),
        ignore_overlap: false,
        on_behalf_of: None,
        dry_run: false,
        scheduled_at: None,
        delete_after_days: None,
        reprocess,
        options: request::Options::default(),
    }
}

fn run(d: u32, state: RunState) -> RunObservation {
    RunObservation {
        logical_date: day(d),
        state,
        start_date: None,
        end_date: None,
    }
}

#[test]
fn reprocess_table() {
    let dates = || (1..=4).map(day).collect::<Vec<_>>();
    /// Mode, origin runs, dates left, skipped, contiguous.
    type Case = (Reprocess, Vec<RunObservation>, Vec<u32>, Vec<u32>, bool);
    let cases: Vec<Case> = vec![
        (Reprocess::None, vec![], vec![1, 2, 3, 4], vec![], true),
        (
            Reprocess::None,
            vec![run(1, RunState::Success)],
            vec![2, 3, 4],
            vec![1],
            true,
        ),
        (
            Reprocess::None,
            vec![run(2, RunState::Failed)],
            vec![1, 3, 4],
            vec![2],
            false,
        ),
        (
            Reprocess::Failed,
            vec![run(2, RunState::Failed)],
            vec![1, 2, 3, 4],
            vec![],
            true,
        ),
        (
            Reprocess::Failed,
            vec![run(4, RunState::Running)],
            vec![1, 2, 3],
            vec![4],
            true,
        ),
        (
            Reprocess::Failed,
            vec![run(2, RunState::Success), run(3, RunState::Queued)],
            vec![1, 4],
            vec![2, 3],
            false,
        ),
    ];
    for (mode, runs, left, skipped, contiguous) in cases {
        let mut req = request(mode);
        let got = reprocess(&mut req, dates(), &runs);
        let want = Reprocessed {
            dates: left.iter().map(|d| day(*d)).collect(),
            skipped: skipped.iter().map(|d| day(*d)).collect(),
            contiguous,
        };
        assert_eq!(got, Ruling::Admit(want.clone()), "{mode:?} {runs:?}");
        assert_eq!(
            (req.start, req.end),
            (want.dates[0], want.dates[want.dates.len() - 1])
        );
    }
    let mut req = request(Reprocess::None);
    let all_ran: Vec<_> = (1..=4).map(|d| run(d, RunState::Success)).collect();
    let got = reprocess(&mut req, dates(), &all_ran);
    assert_eq!(code(&got), Some(ReasonCode::NoLogicalDates));
    assert!(got
        .refusal()
        .is_some_and(|r| r.message.contains("reprocess = \"none\"")));
    assert!(needs_origin_runs(Reprocess::Failed) && !needs_origin_runs(Reprocess::Completed));
}

#[test]
fn dates_and_overlaps() {
    let req = request(Reprocess::Completed);
    assert_eq!(
        code(&some_dates(&req, &[])),
        Some(ReasonCode::NoLogicalDates)
    );
    assert_eq!(some_dates(&req, &[day(1)]), Ruling::Admit(()));
    assert_eq!(
        no_overlap("sales", &[], Overlapping::Range),
        Ruling::Admit(())
    );
    let ids = ["sales_backfill_1".to_owned()];
    for (what, hint) in [(Overlapping::Range, true), (Overlapping::Retry, false)] {
        let d = no_overlap("sales", &ids, what);
        assert_eq!(code(&d), Some(ReasonCode::Overlap));
        let message = d.refusal().map(|r| r.message.clone()).unwrap_or_default();
        assert!(message.contains("sales_backfill_1"), "{message}");
        assert_eq!(message.contains("ignore_overlap"), hint, "{message}");
    }
}

fn subject(name: &str, roles: &[&str], grants: &[(&str, &str)]) -> Subject {
    Subject {
        username: name.into(),
        active: true,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        grants: grants
            .iter()
            .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
            .collect(),
        backfill_resource: RESOURCE_BACKFILLS.into(),
    }
}

fn ident(user: &str, uid: u32) -> Identity {
    Identity {
        uid: Some(uid),
        unix_user: Some(user.into()),
        airflow_user: Some(user.into()),
        on_behalf_of: None,
    }
}

#[test]
fn operation_table() {
    let operator = subject(
        "bob",
        &["Op"],
        &[
            (CAN_OPERATE, RESOURCE_BACKFILLS),
            (CAN_READ, RESOURCE_DAGS),
            (CAN_EDIT, RESOURCE_DAGS),
        ],
    );
    let approver = subject(
        "carol",
        &["Approver"],
        &[
            (CAN_OPERATE, RESOURCE_BACKFILLS),
            (CAN_READ, RESOURCE_DAGS),
            (CAN_EDIT, RESOURCE_DAGS),
        ],
    );
    let blind = subject("dave", &["Op"], &[(CAN_OPERATE, RESOURCE_BACKFILLS)]);
    let roles = ["Approver".to_owned()];
    let row = |state: S, written: bool, failed: u32, deleted: bool| {
        let mut r = backfill_row("sales", state, &[]);
        r.copy_written_at = written.then(|| day(1));
        r.progress.failed = failed;
        r.deleted = deleted;
        r
    };
    type Want = Result<Effect, ReasonCode>;
    let cases: Vec<(&str, &Subject, Action, BackfillRow, Want)> = vec![
        (
            "cancel running",
            &operator,
            Action::Cancel,
            row(S::Running, true, 0, false),
            Ok(Effect::CancelRuns),
        ),
        (
            "cancel unwritten",
            &operator,
            Action::Cancel,
            row(S::Submitted, false, 0, false),
            Ok(Effect::Withdraw),
        ),
        (
            "cancel awaiting",
            &operator,
            Action::Cancel,
            row(S::AwaitingApproval, false, 0, false),
            Ok(Effect::Withdraw),
        ),
        (
            "cancel finished",
            &operator,
            Action::Cancel,
            row(S::Success, true, 0, false),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "cancel deleted",
            &operator,
            Action::Cancel,
            row(S::Running, true, 0, true),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "pause running",
            &operator,
            Action::Pause,
            row(S::Running, true, 0, false),
            Ok(Effect::PauseCopy),
        ),
        (
            "pause paused",
            &operator,
            Action::Pause,
            row(S::Paused, true, 0, false),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "resume paused",
            &operator,
            Action::Resume,
            row(S::Paused, true, 0, false),
            Ok(Effect::ResumeCopy),
        ),
        (
            "delete running",
            &operator,
            Action::Delete,
            row(S::Running, true, 0, false),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "delete failed",
            &operator,
            Action::Delete,
            row(S::Failed, true, 1, false),
            Ok(Effect::DeleteCopy),
        ),
        (
            "retry failed",
            &operator,
            Action::Retry,
            row(S::Failed, true, 2, false),
            Ok(Effect::RetryFailed),
        ),
        (
            "retry never ran",
            &operator,
            Action::Retry,
            row(S::Failed, true, 0, false),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "no edit on the DAG",
            &blind,
            Action::Cancel,
            row(S::Running, true, 0, false),
            Err(ReasonCode::MissingDagEdit),
        ),
        (
            "approve",
            &approver,
            Action::Approve,
            row(S::AwaitingApproval, false, 0, false),
            Ok(Effect::Approve),
        ),
        (
            "reject",
            &approver,
            Action::Reject,
            row(S::AwaitingApproval, false, 0, false),
            Ok(Effect::Reject),
        ),
        (
            "approve running",
            &approver,
            Action::Approve,
            row(S::Running, true, 0, false),
            Err(ReasonCode::IllegalTransition),
        ),
        (
            "approve without the role",
            &operator,
            Action::Approve,
            row(S::AwaitingApproval, false, 0, false),
            Err(ReasonCode::NotAnApprover),
        ),
    ];
    for (name, who, action, r, want) in cases {
        let got = operation(who, &ident(&who.username, 2000), action, &r, &roles).into_result();
        assert_eq!(got.map_err(|r| r.code), want, "{name}");
    }
    let own = subject(
        "alice",
        &["Approver"],
        &[
            (CAN_OPERATE, RESOURCE_BACKFILLS),
            (CAN_READ, RESOURCE_DAGS),
            (CAN_EDIT, RESOURCE_DAGS),
        ],
    );
    let awaiting = row(S::AwaitingApproval, false, 0, false);
    for (who, uid) in [(&own, 2000), (&approver, 1000)] {
        let got = operation(
            who,
            &ident(&who.username, uid),
            Action::Approve,
            &awaiting,
            &roles,
        );
        assert_eq!(
            code(&got),
            Some(ReasonCode::SelfApproval),
            "{}",
            who.username
        );
    }
}

#[test]
fn retry_segments_table() {
    let row = backfill_row("sales", S::Failed, &[day(1), day(2), day(3), day(4)]);
    let seg = |runs: Vec<RunObservation>| retry_segments(&row, &runs).map(|s| s.len());
    assert_eq!(
        code(&seg(vec![run(1, RunState::Success)])),
        Some(ReasonCode::IllegalTransition)
    );
    assert_eq!(
        seg(vec![run(2, RunState::Failed), run(3, RunState::Failed)]),
        Ruling::Admit(1)
    );
    assert_eq!(
        seg(vec![run(1, RunState::Failed), run(3, RunState::Failed)]),
        Ruling::Admit(2)
    );
    assert_eq!(
        seg(vec![
            run(1, RunState::Failed),
            run(2, RunState::Success),
            run(4, RunState::Failed)
        ]),
        Ruling::Admit(2)
    );
}

#[test]
fn retry_backfill() {
    let mut row = backfill_row("sales", S::Failed, &[day(1), day(2), day(3)]);
    row.max_active_runs = 3;
    let who = ident("bob", 2000);
    let budgets = config("").throttle;
    let Ruling::Admit(new) = retry(&row, vec![day(2), day(3)], "new code", None, &who, &budgets)
    else {
        panic!("refused")
    };
    assert_eq!(
        (new.start, new.end, new.logical_dates.len()),
        (day(2), day(3), 2)
    );
    assert_eq!(new.retry_of.as_deref(), Some("sales_backfill_1"));
    assert_eq!(
        new.description.as_deref(),
        Some("retry of sales_backfill_1")
    );
    assert_eq!(
        (new.origin_code.as_str(), new.submitted_by.as_str()),
        ("new code", "bob")
    );
    row.options.tasks = vec!["gone".into()];
    let dag = serialized_dag();
    let d = retry(&row, vec![day(2)], "c", Some(&dag), &who, &budgets);
    assert_eq!(code(&d), Some(ReasonCode::NoMatchingTask));
    row.options.tasks = vec!["load".into()];
    let d = retry(&row, vec![day(2)], "c", Some(&dag), &who, &budgets).map(|n| n.options.task_ids);
    assert_eq!(d, Ruling::Admit(vec!["load".to_owned()]));
}

fn create_with(config: &Config, req: Request, n: u32) -> Ruling<NewBackfill> {
    let dag = serialized_dag();
    let origin = Origin {
        fileloc: "/dags/sales.py",
        serialized: &dag,
        code: "code",
    };
    let dates = Reprocessed {
        dates: (1..=n).map(day).collect(),
        skipped: vec![],
        contiguous: true,
    };
    create(req, dates, origin, &ident("alice", 1000), config)
}

#[test]
fn create_table() {
    let plain = config("");
    let Ruling::Admit(new) = create_with(&plain, request(Reprocess::Completed), 4) else {
        panic!("refused")
    };
    assert_eq!(
        (new.origin_fileloc.as_str(), new.submitted_by.as_str()),
        ("/dags/sales.py", "alice")
    );
    assert_eq!(new.awaiting_approval, None);
    assert_eq!(new.delete_after_days, plain.reconcile.delete_after_days);

    let mut tasks = request(Reprocess::Completed);
    tasks.options.tasks = vec!["ext*".into()];
    let d = create_with(&plain, tasks.clone(), 4).map(|n| n.options.task_ids);
    assert_eq!(d, Ruling::Admit(vec!["extract".to_owned()]));
    tasks.options.tasks = vec!["nothing*".into()];
    assert_eq!(
        code(&create_with(&plain, tasks, 4)),
        Some(ReasonCode::NoMatchingTask)
    );

    let mut notify = request(Reprocess::Completed);
    notify.options.notify = vec!["https://hooks.example.com/x".into()];
    let strict =
        config("[notifications]\nallowed_webhook_prefixes = [\"https://allowed.example.com/\"]\n");
    assert_eq!(
        code(&create_with(&strict, notify.clone(), 4)),
        Some(ReasonCode::InvalidValue)
    );

    let approval = config("[approval]\nover_dates = 3\napprover_roles = [\"Approver\"]\n");
    let waits = |n| match create_with(&approval, request(Reprocess::Completed), n) {
        Ruling::Admit(new) => new.awaiting_approval.is_some(),
        Ruling::Refuse(r) => panic!("{r:?}"),
    };
    assert!(waits(4));
    assert!(!waits(3));

    let defaults =
        config("[reconcile]\ndelete_after_days = 9\n[copies]\nemit_asset_events = true\n");
    let mut own = request(Reprocess::Completed);
    own.delete_after_days = Some(2);
    let d =
        create_with(&defaults, own, 1).map(|n| (n.delete_after_days, n.options.emit_asset_events));
    assert_eq!(d, Ruling::Admit((Some(2), true)));
    let d = create_with(&defaults, request(Reprocess::Completed), 1).map(|n| n.delete_after_days);
    assert_eq!(d, Ruling::Admit(Some(9)));
}

#[test]
fn planned_skips_table() {
    // A daily trigger timetable: a date's run may be created at the date itself. Now is day 6
    // 12:00, so day 6 is the newest date already due.
    let now = day(6) + chrono::TimeDelta::hours(12);
    let run_after = |d: DateTime<Utc>| Some(d);
    let all: Vec<DateTime<Utc>> = (1..=9).map(day).collect();
    let days = |ds: &[u32]| ds.iter().map(|d| day(*d)).collect::<Vec<_>>();
    // (what, dates kept, reported)
    let cases = [
        (
            "every date kept",
            days(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            vec![],
        ),
        (
            "a skipped date older than the newest due one: Airflow's plan is past it",
            days(&[1, 2, 4, 5, 6]),
            vec![],
        ),
        (
            "the newest due date skipped at the end: outside the copy",
            days(&[1, 2, 3, 4, 5]),
            vec![],
        ),
        (
            "the newest due date skipped before dates not due: planned by Airflow",
            days(&[1, 2, 3, 4, 5, 7, 8]),
            days(&[6]),
        ),
        (
            "a future date skipped between future dates: planned once due",
            days(&[1, 2, 3, 4, 5, 6, 7, 9]),
            days(&[8]),
        ),
        ("nothing kept", vec![], vec![]),
    ];
    for (what, kept, want) in cases {
        assert_eq!(planned_skips(&all, &kept, run_after, now), want, "{what}");
    }
    // Unknown run times report nothing.
    assert!(planned_skips(&all, &days(&[5, 7]), |_| None, now).is_empty());
    // A data-interval timetable: a date's run may be created a day later, so day 5 is the
    // newest date already due (the latest complete interval): skipping it before dates not
    // due is reported, skipping day 4 (day 5 is due) is not, skipping day 6 is.
    let interval = |d: DateTime<Utc>| Some(d + chrono::TimeDelta::days(1));
    assert_eq!(
        planned_skips(&all, &days(&[4, 6, 7]), interval, now),
        days(&[5])
    );
    assert_eq!(
        planned_skips(&all, &days(&[3, 5, 7]), interval, now),
        days(&[6])
    );
    let text = planned_skips_warning(&days(&[6])).unwrap_or_default();
    assert!(
        text.starts_with("reprocess skips 2024-01-06T00:00:00Z, but a later date"),
        "{text}"
    );
    assert!(planned_skips_warning(&[]).is_none());
}
