//! Approval of big backfills (`[approval]`): which new backfills wait for an approver, and
//! who may approve or reject one. Pure: the engine passes the caller's [`Subject`] and the
//! stored requester of the backfill.
//!
//! A backfill of more than `over_dates` logical dates is accepted in state
//! `awaiting_approval` (no DAG copy). An approver must be allowed to operate backfills and edit
//! the origin DAG (`authz::authorize`, as for every life-cycle action), hold one of
//! `approver_roles`, and not be the requester: the Airflow user the backfill was submitted
//! for (so a trusted submitter acting `on_behalf_of` the requester counts as the requester),
//! or, without `on_behalf_of` on either side, the same unix uid.

use crate::authz::{Action, Subject, CAN_EDIT, RESOURCE_DAGS, RESOURCE_DAG_PREFIX};
use crate::request::{ReasonCode, Rejection};

/// Whether a new backfill of `dates` logical dates waits for approval (`over_dates` 0: never).
pub fn needed(over_dates: usize, dates: usize) -> bool {
    over_dates > 0 && dates > over_dates
}

/// The reason shown while a backfill awaits approval (and, for a dry run, as a warning).
pub fn waiting_reason(dates: usize, over_dates: usize, approver_roles: &[String]) -> String {
    format!(
        "approval needed: {dates} dates exceed [approval] over_dates = {over_dates}; a user with one of the roles [{}] who may edit the DAG approves or rejects it (backfillctl approve|reject ID)",
        approver_roles.join(", ")
    )
}

/// Who asked for the backfill, as stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester<'a> {
    /// The Airflow user it was submitted for (`submitted_by`).
    pub airflow_user: &'a str,
    /// The uid that owned the request file.
    pub uid: u32,
    /// Whether a trusted submitter named the Airflow user (`on_behalf_of`).
    pub on_behalf: bool,
}

/// Who asks to approve or reject.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    /// The Airflow user with its roles and grants.
    pub subject: &'a Subject,
    /// The uid that owned the approve/reject file.
    pub uid: Option<u32>,
    /// Whether a trusted submitter named the Airflow user (`on_behalf_of`).
    pub on_behalf: bool,
}

/// Decide whether `decider` may `action` (approve or reject) a backfill of `dag_id` asked for
/// by `requester`; `approver_roles` from `[approval]`. The requester is refused first (even an
/// Admin cannot approve their own backfill), then a caller without the DAG edit right or
/// without an approver role.
pub fn decide(
    decider: Decider<'_>,
    requester: Requester<'_>,
    dag_id: &str,
    approver_roles: &[String],
    action: Action,
) -> Result<(), Rejection> {
    let verb = action.as_str();
    let subject = decider.subject;
    let same_user = subject.username == requester.airflow_user;
    let same_uid = !decider.on_behalf && !requester.on_behalf && decider.uid == Some(requester.uid);
    if same_user || same_uid {
        let hint = if action == Action::Reject {
            "; cancel it to withdraw it"
        } else {
            ""
        };
        return Err(Rejection::new(
            ReasonCode::SelfApproval,
            format!("the requester cannot {verb} their own backfill{hint}"),
        ));
    }
    if !subject.has_on_dag(CAN_EDIT, dag_id) {
        return Err(Rejection::new(
            ReasonCode::MissingDagEdit,
            format!(
                "Airflow user {:?} may not edit DAG {dag_id:?} (needs {CAN_EDIT} on {RESOURCE_DAGS} or {RESOURCE_DAG_PREFIX}{dag_id})",
                subject.username
            ),
        ));
    }
    if !subject.roles.iter().any(|r| approver_roles.contains(r)) {
        let held = if subject.roles.is_empty() {
            "no role".to_owned()
        } else {
            subject.roles.join(", ")
        };
        let gerund = if action == Action::Reject {
            "rejecting"
        } else {
            "approving"
        };
        return Err(Rejection::new(
            ReasonCode::NotAnApprover,
            format!(
                "{gerund} needs one of the roles [{}]; {} has {held}",
                approver_roles.join(", "),
                subject.username
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(name: &str, roles: &[&str], edit: Option<&str>) -> Subject {
        Subject {
            username: name.into(),
            active: true,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            grants: edit
                .into_iter()
                .map(|r| (CAN_EDIT.to_owned(), r.to_owned()))
                .collect(),
            backfill_resource: crate::authz::RESOURCE_BACKFILLS.into(),
        }
    }

    fn code(d: Decider<'_>, r: Requester<'_>, a: Action) -> Result<(), (ReasonCode, String)> {
        decide(
            d,
            r,
            "sales",
            &["Admin".to_owned(), "Approver".to_owned()],
            a,
        )
        .map_err(|e| (e.code, e.message))
    }

    #[test]
    fn threshold() {
        assert!(!needed(0, 10_000), "0 is off");
        assert!(!needed(3, 3));
        assert!(needed(3, 4));
        let why = waiting_reason(5, 3, &["Admin".into()]);
        assert!(
            why.contains("5 dates exceed [approval] over_dates = 3") && why.contains("[Admin]"),
            "{why}"
        );
    }

    #[test]
    fn who_may_decide() {
        let alice = Requester {
            airflow_user: "alice",
            uid: 1001,
            on_behalf: false,
        };
        let admin = subject("root_admin", &["Admin"], Some("DAGs"));
        fn by(s: &Subject, uid: u32, on_behalf: bool) -> Decider<'_> {
            Decider {
                subject: s,
                uid: Some(uid),
                on_behalf,
            }
        }
        for a in [Action::Approve, Action::Reject] {
            assert_eq!(code(by(&admin, 1002, false), alice, a), Ok(()));
            // A per-DAG edit right and a second approver role do as well.
            let approver = subject("carol", &["User", "Approver"], Some("DAG:sales"));
            assert_eq!(code(by(&approver, 1003, false), alice, a), Ok(()));
        }
        // The requester: by Airflow user, by uid, or through a trusted submitter.
        let alice_admin = subject("alice", &["Admin"], Some("DAGs"));
        let (c, m) = code(by(&alice_admin, 1001, false), alice, Action::Approve)
            .err()
            .unwrap_or((ReasonCode::InvalidValue, String::new()));
        assert_eq!(c, ReasonCode::SelfApproval);
        assert_eq!(m, "the requester cannot approve their own backfill");
        assert_eq!(
            code(by(&alice_admin, 0, true), alice, Action::Approve)
                .err()
                .map(|e| e.0),
            Some(ReasonCode::SelfApproval)
        );
        assert_eq!(
            code(by(&admin, 1001, false), alice, Action::Approve)
                .err()
                .map(|e| e.0),
            Some(ReasonCode::SelfApproval),
            "the requester's uid mapped to another Airflow user"
        );
        let via_http = Requester {
            on_behalf: true,
            ..alice
        };
        assert_eq!(
            code(by(&admin, 1001, true), via_http, Action::Approve),
            Ok(()),
            "one trusted submitter acting for two users"
        );
        let reject_own = code(by(&alice_admin, 1001, false), alice, Action::Reject);
        assert!(
            reject_own
                .as_ref()
                .is_err_and(|(c, m)| *c == ReasonCode::SelfApproval && m.contains("cancel")),
            "{reject_own:?}"
        );
        // Not an approver: the roles named.
        let user = subject("bfz_user", &["User"], Some("DAGs"));
        assert_eq!(
            code(by(&user, 1004, false), alice, Action::Approve),
            Err((
                ReasonCode::NotAnApprover,
                "approving needs one of the roles [Admin, Approver]; bfz_user has User".into()
            ))
        );
        let nobody = subject("n", &[], Some("DAGs"));
        let msg = code(by(&nobody, 1005, false), alice, Action::Reject)
            .err()
            .map(|e| e.1)
            .unwrap_or_default();
        assert_eq!(
            msg,
            "rejecting needs one of the roles [Admin, Approver]; n has no role"
        );
        // An approver role without the DAG edit right.
        let other_dag = subject("o", &["Admin"], Some("DAG:ledger"));
        assert_eq!(
            code(by(&other_dag, 1006, false), alice, Action::Approve)
                .err()
                .map(|e| e.0),
            Some(ReasonCode::MissingDagEdit)
        );
    }
}
