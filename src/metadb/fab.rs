//! Airflow's FAB security tables (`ab_*`): reading a user's roles and permissions, and the one
//! reviewed write backfilld makes there: registering the `Backfills` resource with its actions
//! and granting them to the permitted roles (idempotent, at start).
//!
//! Permissions are resolved the way FAB resolves them: user → roles (`ab_user_role`) and, where
//! the FAB version has groups (Airflow 3's FAB provider), user → groups → roles
//! (`ab_user_group`, `ab_group_role`); role → permission views (`ab_permission_view_role`) →
//! `(ab_permission.name, ab_view_menu.name)`.

use std::collections::BTreeSet;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use super::{Arg, DbError, IntRow, MetaDb, TextRow};
use crate::authz::{self, Subject};

/// A row of `ab_user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabUser {
    /// `ab_user.id`.
    pub id: i64,
    /// `ab_user.username`.
    pub username: String,
    /// `ab_user.active`.
    pub active: bool,
}

#[derive(QueryableByName)]
struct UserSql {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    username: String,
    #[diesel(sql_type = BigInt)]
    active: i64,
}

#[derive(QueryableByName)]
struct PasswordSql {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    password: Option<String>,
}

#[derive(QueryableByName)]
struct SessionSql {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
    data: Option<Vec<u8>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    expiry: Option<String>,
}

/// A naive UTC timestamp as the databases print one (`YYYY-MM-DD HH:MM:SS[.ffffff]`).
fn parse_naive(text: &str) -> Option<chrono::NaiveDateTime> {
    let t = text.trim().replace('T', " ");
    let t = t.get(..26.min(t.len())).unwrap_or(&t);
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok()
}

#[derive(QueryableByName)]
struct GrantSql {
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    resource: String,
}

/// What [`Fab::register_backfills`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Rows inserted (0 when everything was already there).
    pub inserted: usize,
    /// Roles that received the permissions (Admin and the permitted roles that exist).
    pub granted: Vec<String>,
    /// Permitted roles that do not exist in Airflow (yet).
    pub missing_roles: Vec<String>,
}

/// Access to the FAB tables of one connection.
pub struct Fab<'a> {
    db: &'a mut MetaDb,
}

impl<'a> Fab<'a> {
    /// Wrap a connection.
    pub fn new(db: &'a mut MetaDb) -> Fab<'a> {
        Fab { db }
    }

    /// Whether the DB has FAB's user tables.
    pub fn present(&mut self) -> Result<bool, DbError> {
        Ok(!self.db.columns("ab_user")?.is_empty()
            && !self.db.columns("ab_permission_view_role")?.is_empty())
    }

    /// Whether FAB's group tables exist (FAB provider on Airflow 3).
    fn has_groups(&mut self) -> Result<bool, DbError> {
        Ok(!self.db.columns("ab_user_group")?.is_empty()
            && !self.db.columns("ab_group_role")?.is_empty())
    }

    /// The `ab_user` row with exactly this user name.
    pub fn user(&mut self, username: &str) -> Result<Option<FabUser>, DbError> {
        let active = self.db.dialect().bool_int("active");
        let id = self.db.dialect().int("id");
        let rows: Vec<UserSql> = self.db.load(
            &format!(
                "SELECT {id} AS id, username, {active} AS active FROM ab_user WHERE username = ?"
            ),
            &[Arg::Text(username.to_owned())],
        )?;
        Ok(rows.into_iter().next().map(|r| FabUser {
            id: r.id,
            username: r.username,
            active: r.active == 1,
        }))
    }

    /// The password hash FAB stored for `username` (`ab_user.password`, werkzeug's format),
    /// with the user row; `None` when there is no such user.
    pub fn credentials(
        &mut self,
        username: &str,
    ) -> Result<Option<(FabUser, Option<String>)>, DbError> {
        let Some(user) = self.user(username)? else {
            return Ok(None);
        };
        let rows: Vec<PasswordSql> = self.db.load(
            "SELECT password FROM ab_user WHERE username = ?",
            &[Arg::Text(username.to_owned())],
        )?;
        let hash = rows.into_iter().next().and_then(|r| r.password);
        Ok(Some((user, hash)))
    }

    /// The `ab_user` row of an id (the `sub` of Airflow 3's FAB tokens, Flask-Login's
    /// `_user_id` of an Airflow 2 webserver session).
    pub fn user_by_id(&mut self, id: i64) -> Result<Option<FabUser>, DbError> {
        let active = self.db.dialect().bool_int("active");
        let id_col = self.db.dialect().int("id");
        let rows: Vec<UserSql> = self.db.load(
            &format!(
                "SELECT {id_col} AS id, username, {active} AS active FROM ab_user WHERE id = ?"
            ),
            &[Arg::Int(id)],
        )?;
        Ok(rows.into_iter().next().map(|r| FabUser {
            id: r.id,
            username: r.username,
            active: r.active == 1,
        }))
    }

    /// The data of an Airflow 2 webserver session stored in the `session` table
    /// (`[webserver] session_backend = database`), unless it has expired at `now` (a row
    /// without an expiry is expired, as Flask-Session treats it); `None` without the table.
    pub fn webserver_session(
        &mut self,
        sid: &str,
        now: chrono::NaiveDateTime,
    ) -> Result<Option<Vec<u8>>, DbError> {
        if self.db.columns("session")?.is_empty() {
            return Ok(None);
        }
        let expiry = self.db.dialect().text("expiry");
        let rows: Vec<SessionSql> = self.db.load(
            &format!("SELECT data, {expiry} AS expiry FROM session WHERE session_id = ?"),
            &[Arg::Text(sid.to_owned())],
        )?;
        Ok(rows.into_iter().next().and_then(|r| {
            let until = r.expiry.as_deref().and_then(parse_naive)?;
            (until > now).then_some(r.data).flatten()
        }))
    }

    /// Role ids of the user, directly and through groups.
    fn role_ids_sql(&mut self) -> Result<String, DbError> {
        let mut sql = "SELECT role_id FROM ab_user_role WHERE user_id = ?".to_owned();
        if self.has_groups()? {
            sql.push_str(
                " UNION SELECT gr.role_id FROM ab_user_group ug \
                 JOIN ab_group_role gr ON gr.group_id = ug.group_id WHERE ug.user_id = ?",
            );
        }
        Ok(sql)
    }

    /// The user with its roles and every `(action, resource)` they grant.
    pub fn subject(&mut self, user: &FabUser, resource: &str) -> Result<Subject, DbError> {
        let role_ids = self.role_ids_sql()?;
        let binds = if role_ids.contains("UNION") {
            vec![Arg::Int(user.id), Arg::Int(user.id)]
        } else {
            vec![Arg::Int(user.id)]
        };
        let roles: Vec<TextRow> = self.db.load(
            &format!("SELECT name AS value FROM ab_role WHERE id IN ({role_ids}) ORDER BY name"),
            &binds,
        )?;
        let grants: Vec<GrantSql> = self.db.load(
            &format!(
                "SELECT p.name AS action, v.name AS resource FROM ab_permission_view_role pvr \
                 JOIN ab_permission_view pv ON pv.id = pvr.permission_view_id \
                 JOIN ab_permission p ON p.id = pv.permission_id \
                 JOIN ab_view_menu v ON v.id = pv.view_menu_id \
                 WHERE pvr.role_id IN ({role_ids})"
            ),
            &binds,
        )?;
        Ok(Subject {
            username: user.username.clone(),
            active: user.active,
            roles: roles.into_iter().map(|r| r.value).collect(),
            grants: grants
                .into_iter()
                .map(|g| (g.action, g.resource))
                .collect::<BTreeSet<_>>(),
            backfill_resource: resource.to_owned(),
        })
    }

    /// Register `Backfills` with its actions and grant them to Admin and `permitted` roles,
    /// each grant once: a grant recorded in `backfilld_grant` is never made again, so one an
    /// admin revoked stays revoked; a grant found already in place is recorded as made.
    /// Idempotent; runs in one transaction. Roles that do not exist are reported, not created
    /// (they get their grants once they exist). Without `backfilld_grant` (backfilld's tables
    /// not migrated) every missing grant is made.
    pub fn register_backfills(
        &mut self,
        permitted: &[String],
        resource: &str,
    ) -> Result<Registration, DbError> {
        let roles = authz::granted_roles(permitted);
        let ledger = !self.db.columns("backfilld_grant")?.is_empty();
        let now = crate::metadb::store::stored_ts(chrono::Utc::now());
        self.db.transaction(|db| {
            let mut fab = Fab { db };
            let mut reg = Registration::default();
            let resource_id = fab.id_or_insert("ab_view_menu", resource, &mut reg)?;
            let mut pv_ids = Vec::new();
            for action in authz::BACKFILL_ACTIONS {
                let action_id = fab.id_or_insert("ab_permission", action, &mut reg)?;
                pv_ids.push((action, fab.permission_view(action_id, resource_id, &mut reg)?));
            }
            for role in roles {
                let ids: Vec<IntRow> = fab.db.load(
                    &format!(
                        "SELECT {} AS value FROM ab_role WHERE name = ?",
                        fab.db.dialect().int("id")
                    ),
                    &[Arg::Text(role.clone())],
                )?;
                let Some(role_id) = ids.first().map(|r| r.value) else {
                    reg.missing_roles.push(role);
                    continue;
                };
                for (action, pv) in &pv_ids {
                    let key = [
                        Arg::Text(role.clone()),
                        Arg::Text((*action).to_owned()),
                        Arg::Text(resource.to_owned()),
                    ];
                    if ledger {
                        let made: Vec<IntRow> = fab.db.load(
                            "SELECT COUNT(*) AS value FROM backfilld_grant \
                             WHERE role = ? AND action = ? AND resource = ?",
                            &key,
                        )?;
                        if made.first().map(|r| r.value).unwrap_or(0) > 0 {
                            continue;
                        }
                    }
                    let have: Vec<IntRow> = fab.db.load(
                        "SELECT COUNT(*) AS value FROM ab_permission_view_role \
                         WHERE permission_view_id = ? AND role_id = ?",
                        &[Arg::Int(*pv), Arg::Int(role_id)],
                    )?;
                    if have.first().map(|r| r.value).unwrap_or(0) == 0 {
                        let (id_col, id_val) = id_insert(fab.db, "ab_permission_view_role")?;
                        fab.db.execute(
                            &format!("INSERT INTO ab_permission_view_role ({id_col}permission_view_id, role_id) VALUES ({id_val}?, ?)"),
                            &[Arg::Int(*pv), Arg::Int(role_id)],
                        )?;
                        reg.inserted += 1;
                    }
                    if ledger {
                        let mut row = key.to_vec();
                        row.push(Arg::Text(now.clone()));
                        fab.db.execute(
                            "INSERT INTO backfilld_grant (role, action, resource, granted_at) \
                             VALUES (?, ?, ?, ?)",
                            &row,
                        )?;
                    }
                }
                reg.granted.push(role);
            }
            Ok(reg)
        })
    }

    /// The id of the row named `name` in `ab_view_menu` or `ab_permission`, inserted if absent.
    fn id_or_insert(
        &mut self,
        table: &'static str,
        name: &str,
        reg: &mut Registration,
    ) -> Result<i64, DbError> {
        let select = format!(
            "SELECT {} AS value FROM {table} WHERE name = ?",
            self.db.dialect().int("id")
        );
        let found: Vec<IntRow> = self.db.load(&select, &[Arg::Text(name.to_owned())])?;
        if let Some(r) = found.first() {
            return Ok(r.value);
        }
        let (id_col, id_val) = id_insert(self.db, table)?;
        self.db.execute(
            &format!("INSERT INTO {table} ({id_col}name) VALUES ({id_val}?)"),
            &[Arg::Text(name.to_owned())],
        )?;
        reg.inserted += 1;
        let found: Vec<IntRow> = self.db.load(&select, &[Arg::Text(name.to_owned())])?;
        found
            .first()
            .map(|r| r.value)
            .ok_or_else(|| DbError::Data(format!("{table} row {name:?} vanished after insert")))
    }

    fn permission_view(
        &mut self,
        action_id: i64,
        resource_id: i64,
        reg: &mut Registration,
    ) -> Result<i64, DbError> {
        let select = format!(
            "SELECT {} AS value FROM ab_permission_view WHERE permission_id = ? AND view_menu_id = ?",
            self.db.dialect().int("id")
        );
        let select = select.as_str();
        let args = [Arg::Int(action_id), Arg::Int(resource_id)];
        let found: Vec<IntRow> = self.db.load(select, &args)?;
        if let Some(r) = found.first() {
            return Ok(r.value);
        }
        let (id_col, id_val) = id_insert(self.db, "ab_permission_view")?;
        self.db.execute(
            &format!("INSERT INTO ab_permission_view ({id_col}permission_id, view_menu_id) VALUES ({id_val}?, ?)"),
            &args,
        )?;
        reg.inserted += 1;
        let found: Vec<IntRow> = self.db.load(select, &args)?;
        found
            .first()
            .map(|r| r.value)
            .ok_or_else(|| DbError::Data("ab_permission_view row vanished after insert".into()))
    }
}

/// The `id` column and value prefixes for an insert into a FAB table (empty when the column
/// fills itself; see [`MetaDb::new_id_expr`]).
fn id_insert(db: &mut MetaDb, table: &str) -> Result<(&'static str, String), DbError> {
    Ok(match db.new_id_expr(table)? {
        Some(expr) => ("id, ", format!("{expr}, ")),
        None => ("", String::new()),
    })
}
