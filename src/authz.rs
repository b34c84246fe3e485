//! Who may do what: the pure authorization decision, mirroring Airflow's FAB model.
//!
//! Everything here works on plain data loaded elsewhere (`metadb::fab` for FAB's `ab_*`
//! tables, [`simple_grants`] for Airflow 3's SimpleAuthManager), so every rule is tested
//! without a database. A subject's permissions are the union over all its roles (and FAB
//! groups), as `(action, resource)` pairs with Airflow's names:
//!
//! - create a backfill: `can_create` on `Backfills` AND `can_edit` on `DAGs` or `DAG:<dag_id>`;
//! - cancel/pause/resume/delete/retry: `can_operate` on `Backfills` AND the same DAG edit right;
//! - import the seed plugin's backfills (`import-seed`): `can_operate` on `Backfills`, and
//!   each backfill is imported only when its origin DAG is editable (the same DAG edit right);
//! - approve/reject: the same, and then `approval::decide` (an approver role, not the requester);
//! - read backfills (list/status): `can_read` on `Backfills`; each backfill is shown only when
//!   its origin DAG is readable (`can_read` on `DAGs` or `DAG:<dag_id>`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The FAB resource backfilld registers unless `[authz] resource` names another.
pub const RESOURCE_BACKFILLS: &str = "Backfills";
/// FAB's resource covering every DAG.
pub const RESOURCE_DAGS: &str = "DAGs";
/// Prefix of FAB's per-DAG resources (`DAG:<dag_id>`).
pub const RESOURCE_DAG_PREFIX: &str = "DAG:";
/// Action: create a backfill.
pub const CAN_CREATE: &str = "can_create";
/// Action: read.
pub const CAN_READ: &str = "can_read";
/// Action: edit (DAGs).
pub const CAN_EDIT: &str = "can_edit";
/// Action: operate on existing backfills.
pub const CAN_OPERATE: &str = "can_operate";
/// Action: see the menu entry in Airflow's UI.
pub const MENU_ACCESS: &str = "menu_access";
/// The actions backfilld registers on its resource ([`RESOURCE_BACKFILLS`] by default).
pub const BACKFILL_ACTIONS: [&str; 4] = [CAN_CREATE, CAN_READ, CAN_OPERATE, MENU_ACCESS];
/// The role that is always granted the Backfills permissions.
pub const ADMIN_ROLE: &str = "Admin";

/// Something a user asks backfilld to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Submit a new backfill of a DAG.
    Create,
    /// List backfills or show one.
    Read,
    /// Cancel a backfill.
    Cancel,
    /// Pause a backfill.
    Pause,
    /// Resume a paused backfill.
    Resume,
    /// Delete a backfill and its copy.
    Delete,
    /// Retry failed dates.
    Retry,
    /// Take over the seed plugin's backfills (`backfillctl import-seed`).
    Import,
    /// Approve a backfill awaiting approval (see `approval`).
    Approve,
    /// Reject a backfill awaiting approval.
    Reject,
}

impl Action {
    /// The name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Cancel => "cancel",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Delete => "delete",
            Action::Retry => "retry",
            Action::Import => "import",
            Action::Approve => "approve",
            Action::Reject => "reject",
        }
    }
}

/// Why authorization failed, stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyCode {
    /// The Airflow account is not active.
    InactiveUser,
    /// The user lacks the Backfills permission for the action.
    MissingBackfillPermission,
    /// The user may not edit the origin DAG.
    MissingDagEdit,
    /// The user may not read the origin DAG.
    MissingDagRead,
}

/// A refused action, with a message for the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    /// Machine-readable reason.
    pub code: DenyCode,
    /// Explanation naming the user, permission and resource.
    pub message: String,
}

/// An Airflow user as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// `ab_user.username` (or the SimpleAuthManager user name).
    pub username: String,
    /// Whether the account is active.
    pub active: bool,
    /// Role names, for audit and messages.
    pub roles: Vec<String>,
    /// Every `(action, resource)` granted through any role or group.
    pub grants: BTreeSet<(String, String)>,
    /// The FAB resource that stands for backfilld's permissions (`[authz] resource`).
    pub backfill_resource: String,
}

impl Subject {
    /// Whether the user holds `action` on `resource`.
    pub fn has(&self, action: &str, resource: &str) -> bool {
        self.grants
            .contains(&(action.to_owned(), resource.to_owned()))
    }

    /// Whether the user holds `action` on all DAGs or on `DAG:<dag_id>`.
    pub fn has_on_dag(&self, action: &str, dag_id: &str) -> bool {
        self.has(action, RESOURCE_DAGS)
            || self.has(action, &format!("{RESOURCE_DAG_PREFIX}{dag_id}"))
    }

    /// Whether the user may see backfills of `dag_id` (read filter for lists).
    pub fn can_read_dag(&self, dag_id: &str) -> bool {
        self.active && self.has_on_dag(CAN_READ, dag_id)
    }
}

/// Decide whether `subject` may do `action`; `dag_id` is the origin DAG (for [`Action::Read`]
/// of the whole list, `None`: the per-DAG filter is [`Subject::can_read_dag`]).
pub fn authorize(subject: &Subject, action: Action, dag_id: Option<&str>) -> Result<(), Denial> {
    let user = &subject.username;
    if !subject.active {
        return Err(Denial {
            code: DenyCode::InactiveUser,
            message: format!("Airflow user {user:?} is not active"),
        });
    }
    let needed = match action {
        Action::Create => CAN_CREATE,
        Action::Read => CAN_READ,
        Action::Cancel
        | Action::Pause
        | Action::Resume
        | Action::Delete
        | Action::Retry
        | Action::Import
        | Action::Approve
        | Action::Reject => CAN_OPERATE,
    };
    let resource = &subject.backfill_resource;
    if !subject.has(needed, resource) {
        return Err(Denial {
            code: DenyCode::MissingBackfillPermission,
            message: format!(
                "Airflow user {user:?} (roles: {}) lacks {needed} on {resource}; an admin can grant it to one of the user's roles in Airflow's Security UI",
                role_list(subject)
            ),
        });
    }
    let Some(dag_id) = dag_id else {
        return Ok(());
    };
    match action {
        Action::Read => {
            if !subject.has_on_dag(CAN_READ, dag_id) {
                return Err(Denial {
                    code: DenyCode::MissingDagRead,
                    message: format!(
                        "Airflow user {user:?} may not read DAG {dag_id:?} (needs {CAN_READ} on {RESOURCE_DAGS} or {RESOURCE_DAG_PREFIX}{dag_id})"
                    ),
                });
            }
        }
        _ => {
            if !subject.has_on_dag(CAN_EDIT, dag_id) {
                return Err(Denial {
                    code: DenyCode::MissingDagEdit,
                    message: format!(
                        "Airflow user {user:?} may not edit DAG {dag_id:?} (needs {CAN_EDIT} on {RESOURCE_DAGS} or {RESOURCE_DAG_PREFIX}{dag_id})"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn role_list(subject: &Subject) -> String {
    if subject.roles.is_empty() {
        "none".to_owned()
    } else {
        subject.roles.join(", ")
    }
}

/// The roles granted the Backfills permissions: Admin plus `permitted`, without duplicates.
pub fn granted_roles(permitted: &[String]) -> Vec<String> {
    let mut roles = vec![ADMIN_ROLE.to_owned()];
    for r in permitted {
        if !roles.iter().any(|x| x == r) {
            roles.push(r.clone());
        }
    }
    roles
}

/// Roles of Airflow 3's SimpleAuthManager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleRole {
    /// Read-only.
    Viewer,
    /// Can edit DAGs.
    User,
    /// User plus operations.
    Op,
    /// Everything.
    Admin,
}

impl SimpleRole {
    /// Parse a role as written in `simple_auth_manager_users` (case-insensitive).
    pub fn parse(s: &str) -> Option<SimpleRole> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(SimpleRole::Viewer),
            "user" => Some(SimpleRole::User),
            "op" => Some(SimpleRole::Op),
            "admin" => Some(SimpleRole::Admin),
            _ => None,
        }
    }

    /// The FAB-style role name (`Viewer`, `User`, `Op`, `Admin`).
    pub fn name(self) -> &'static str {
        match self {
            SimpleRole::Viewer => "Viewer",
            SimpleRole::User => "User",
            SimpleRole::Op => "Op",
            SimpleRole::Admin => "Admin",
        }
    }
}

/// Parse `[core] simple_auth_manager_users` (`name:role,name:role`). Entries that do not
/// parse are returned as errors, so a typo is reported instead of silently dropped.
pub fn parse_simple_users(text: &str) -> Result<Vec<(String, SimpleRole)>, String> {
    let mut users = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, role) = entry
            .split_once(':')
            .ok_or_else(|| format!("entry {entry:?} is not name:role"))?;
        let role =
            SimpleRole::parse(role).ok_or_else(|| format!("entry {entry:?}: unknown role"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("entry {entry:?} has no user name"));
        }
        users.push((name.to_owned(), role));
    }
    Ok(users)
}

/// The grants a SimpleAuthManager role stands for, the same rules as FAB's default roles: every
/// role reads all DAGs; User, Op and Admin edit them; the Backfills permissions go to Admin and
/// to the roles in `permitted` (compared case-insensitively), never to Viewer; `resource` is
/// the name they are granted on (`[authz] resource`).
pub fn simple_grants(
    role: SimpleRole,
    permitted: &[String],
    resource: &str,
) -> BTreeSet<(String, String)> {
    let mut g = BTreeSet::new();
    let pair = |a: &str, r: &str| (a.to_owned(), r.to_owned());
    g.insert(pair(CAN_READ, RESOURCE_DAGS));
    if role == SimpleRole::Viewer {
        return g;
    }
    g.insert(pair(CAN_EDIT, RESOURCE_DAGS));
    let permitted = role == SimpleRole::Admin
        || permitted
            .iter()
            .any(|p| p.eq_ignore_ascii_case(role.name()));
    if permitted {
        for a in BACKFILL_ACTIONS {
            g.insert(pair(a, resource));
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(active: bool, grants: &[(&str, &str)]) -> Subject {
        Subject {
            backfill_resource: RESOURCE_BACKFILLS.into(),
            username: "u".into(),
            active,
            roles: vec!["R".into()],
            grants: grants
                .iter()
                .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
                .collect(),
        }
    }

    fn backfills(actions: &[&'static str]) -> Vec<(&'static str, &'static str)> {
        actions.iter().map(|a| (*a, RESOURCE_BACKFILLS)).collect()
    }

    fn code(s: &Subject, a: Action, dag: Option<&str>) -> Option<DenyCode> {
        authorize(s, a, dag).err().map(|d| d.code)
    }

    const OPERATE: [Action; 7] = [
        Action::Cancel,
        Action::Pause,
        Action::Resume,
        Action::Delete,
        Action::Retry,
        Action::Approve,
        Action::Reject,
    ];

    #[test]
    fn matrix_of_roles_and_actions() {
        let all_backfill = backfills(&BACKFILL_ACTIONS);
        let mut user = all_backfill.clone();
        user.extend([(CAN_READ, RESOURCE_DAGS), (CAN_EDIT, RESOURCE_DAGS)]);
        let user = subject(true, &user);
        let viewer = subject(true, &[(CAN_READ, RESOURCE_DAGS)]);
        let mut sales = all_backfill.clone();
        sales.extend([(CAN_READ, "DAG:sales"), (CAN_EDIT, "DAG:sales")]);
        let sales_only = subject(true, &sales);
        let inactive = Subject {
            active: false,
            ..user.clone()
        };
        // A role outside permitted_roles: DAG rights but no Backfills permissions.
        let unpermitted = subject(
            true,
            &[(CAN_READ, RESOURCE_DAGS), (CAN_EDIT, RESOURCE_DAGS)],
        );

        for a in std::iter::once(Action::Create).chain(OPERATE) {
            assert_eq!(code(&user, a, Some("sales")), None, "{a:?}");
            assert_eq!(code(&sales_only, a, Some("sales")), None, "{a:?}");
            assert_eq!(
                code(&sales_only, a, Some("weekly_report")),
                Some(DenyCode::MissingDagEdit),
                "{a:?}"
            );
            assert_eq!(
                code(&viewer, a, Some("sales")),
                Some(DenyCode::MissingBackfillPermission)
            );
            assert_eq!(
                code(&inactive, a, Some("sales")),
                Some(DenyCode::InactiveUser)
            );
            assert_eq!(
                code(&unpermitted, a, Some("sales")),
                Some(DenyCode::MissingBackfillPermission)
            );
        }
        assert_eq!(code(&user, Action::Read, None), None);
        assert_eq!(code(&sales_only, Action::Read, None), None);
        assert_eq!(
            code(&sales_only, Action::Read, Some("weekly_report")),
            Some(DenyCode::MissingDagRead)
        );
        assert!(sales_only.can_read_dag("sales") && !sales_only.can_read_dag("weekly_report"));
        assert_eq!(
            code(&viewer, Action::Read, None),
            Some(DenyCode::MissingBackfillPermission)
        );
        assert!(!inactive.can_read_dag("sales"));
    }

    #[test]
    fn operate_needs_can_operate_not_create() {
        let s = subject(
            true,
            &[
                (CAN_CREATE, RESOURCE_BACKFILLS),
                (CAN_EDIT, RESOURCE_DAGS),
                (CAN_READ, RESOURCE_DAGS),
            ],
        );
        assert_eq!(code(&s, Action::Create, Some("x")), None);
        for a in OPERATE {
            assert_eq!(
                code(&s, a, Some("x")),
                Some(DenyCode::MissingBackfillPermission)
            );
        }
        let s = subject(
            true,
            &[(CAN_OPERATE, RESOURCE_BACKFILLS), (CAN_READ, RESOURCE_DAGS)],
        );
        assert_eq!(
            code(&s, Action::Delete, Some("x")),
            Some(DenyCode::MissingDagEdit)
        );
        let msg = authorize(&s, Action::Create, Some("x"))
            .err()
            .map(|d| d.message)
            .unwrap_or_default();
        assert!(msg.contains("can_create on Backfills"), "{msg}");
    }

    #[test]
    fn import_needs_can_operate_and_the_dag_edit_right() {
        let creator = subject(
            true,
            &[(CAN_CREATE, RESOURCE_BACKFILLS), (CAN_EDIT, RESOURCE_DAGS)],
        );
        assert_eq!(
            code(&creator, Action::Import, None),
            Some(DenyCode::MissingBackfillPermission)
        );
        let op = subject(
            true,
            &[(CAN_OPERATE, RESOURCE_BACKFILLS), (CAN_EDIT, "DAG:sales")],
        );
        assert_eq!(code(&op, Action::Import, None), None);
        assert_eq!(code(&op, Action::Import, Some("sales")), None);
        assert_eq!(
            code(&op, Action::Import, Some("other")),
            Some(DenyCode::MissingDagEdit)
        );
    }

    #[test]
    fn per_dag_resource_is_exact() {
        let s = subject(
            true,
            &[(CAN_CREATE, RESOURCE_BACKFILLS), (CAN_EDIT, "DAG:sales")],
        );
        assert_eq!(code(&s, Action::Create, Some("sales")), None);
        assert_eq!(
            code(&s, Action::Create, Some("sales2")),
            Some(DenyCode::MissingDagEdit)
        );
        assert_eq!(
            code(&s, Action::Create, Some("sale")),
            Some(DenyCode::MissingDagEdit)
        );
    }

    #[test]
    fn simple_auth_manager_roles() {
        let permitted = vec!["User".to_owned(), "Op".to_owned()];
        let users = parse_simple_users("admin:admin, bob:viewer,carol:USER,dan:op")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users.len(), 4);
        assert_eq!(users[2], ("carol".to_owned(), SimpleRole::User));
        let s = |role| Subject {
            backfill_resource: RESOURCE_BACKFILLS.into(),
            username: "x".into(),
            active: true,
            roles: vec![],
            grants: simple_grants(role, &permitted, RESOURCE_BACKFILLS),
        };
        for role in [SimpleRole::Admin, SimpleRole::Op, SimpleRole::User] {
            for a in [Action::Create, Action::Read, Action::Cancel, Action::Delete] {
                assert_eq!(code(&s(role), a, Some("d")), None, "{role:?} {a:?}");
            }
        }
        for a in [Action::Create, Action::Read, Action::Cancel, Action::Delete] {
            assert_eq!(
                code(&s(SimpleRole::Viewer), a, Some("d")),
                Some(DenyCode::MissingBackfillPermission)
            );
        }
        // Only Admin is permitted: User keeps DAG rights but loses Backfills.
        let only_admin: Vec<String> = vec![];
        let user = Subject {
            grants: simple_grants(SimpleRole::User, &only_admin, RESOURCE_BACKFILLS),
            ..s(SimpleRole::User)
        };
        assert_eq!(
            code(&user, Action::Create, Some("d")),
            Some(DenyCode::MissingBackfillPermission)
        );
        assert!(parse_simple_users("bob").is_err());
        assert!(parse_simple_users("bob:superuser").is_err());
        assert!(parse_simple_users("")
            .map(|u| u.is_empty())
            .unwrap_or(false));
    }

    #[test]
    fn admin_is_always_granted() {
        assert_eq!(granted_roles(&[]), vec!["Admin"]);
        assert_eq!(
            granted_roles(&["User".into(), "Admin".into(), "Op".into()]),
            vec!["Admin", "User", "Op"]
        );
    }
}
