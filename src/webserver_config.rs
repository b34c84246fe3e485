//! Facts backfilld reads from Airflow's `webserver_config.py` (FAB's Flask configuration,
//! also used by Airflow 3's FAB auth manager) without executing it: `AUTH_TYPE`, which decides
//! whether Airflow checks passwords against its own user table, and a `SECRET_KEY` override.
//! Only plain top-level assignments of a name or a literal are read; any other mention of the
//! setting makes it unreadable, and callers then take the safe choice.

/// FAB's `AUTH_TYPE` (`flask_appbuilder.const`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthType {
    /// `AUTH_DB` (1): passwords in `ab_user`.
    Db,
    /// `AUTH_LDAP` (2).
    Ldap,
    /// `AUTH_REMOTE_USER` (3).
    RemoteUser,
    /// `AUTH_OAUTH` (4).
    OAuth,
    /// `AUTH_OID` (0).
    OpenId,
    /// The file sets `AUTH_TYPE` in a way backfilld will not guess at (the reason).
    Unreadable(String),
}

impl AuthType {
    /// The name FAB gives it.
    pub fn name(&self) -> &str {
        match self {
            AuthType::Db => "AUTH_DB",
            AuthType::Ldap => "AUTH_LDAP",
            AuthType::RemoteUser => "AUTH_REMOTE_USER",
            AuthType::OAuth => "AUTH_OAUTH",
            AuthType::OpenId => "AUTH_OID",
            AuthType::Unreadable(_) => "unreadable",
        }
    }

    fn from_value(value: &str) -> Option<AuthType> {
        let name = value.rsplit('.').next().unwrap_or(value);
        Some(match name {
            "AUTH_DB" | "1" => AuthType::Db,
            "AUTH_LDAP" | "2" => AuthType::Ldap,
            "AUTH_REMOTE_USER" | "3" => AuthType::RemoteUser,
            "AUTH_OAUTH" | "4" => AuthType::OAuth,
            "AUTH_OID" | "0" => AuthType::OpenId,
            _ => return None,
        })
    }
}

/// Why password logins are off, or `None` when Airflow checks passwords itself (`AUTH_DB`).
pub fn password_logins_off(auth: &AuthType) -> Option<String> {
    match auth {
        AuthType::Db => None,
        AuthType::Unreadable(why) => Some(format!(
            "backfilld cannot tell how Airflow signs users in ({why}), so it accepts no passwords"
        )),
        other => Some(format!(
            "Airflow signs users in with {} (webserver_config.py), not with passwords in its user table",
            other.name()
        )),
    }
}

/// The `AUTH_TYPE` of a `webserver_config.py` text (`None`: no file; FAB's default `AUTH_DB`).
pub fn auth_type(text: Option<&str>) -> AuthType {
    let Some(text) = text else {
        return AuthType::Db;
    };
    match assigned(text, "AUTH_TYPE") {
        Ok(None) => AuthType::Db,
        Ok(Some(value)) => AuthType::from_value(&value).unwrap_or_else(|| {
            AuthType::Unreadable(format!(
                "AUTH_TYPE = {value} is not one of FAB's AUTH_* names"
            ))
        }),
        Err(why) => AuthType::Unreadable(why),
    }
}

/// A `SECRET_KEY` the file sets: `Ok(None)` when it sets none (Airflow's `[webserver]
/// secret_key` applies), `Ok(Some(key))` for a plain string literal, `Err` otherwise.
pub fn secret_key(text: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    match assigned(text, "SECRET_KEY")? {
        None => Ok(None),
        Some(value) => string_literal(&value)
            .map(Some)
            .ok_or_else(|| "SECRET_KEY is set to something other than a plain string".to_owned()),
    }
}

/// The value of the last plain top-level `NAME = value` line; `Err` when `NAME` appears in
/// any other code (indented, in an expression, augmented, via a star import is not seen).
fn assigned(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut value = None;
    let mut in_string = false;
    for (number, raw) in text.lines().enumerate() {
        let triple = raw.matches("\"\"\"").count() + raw.matches("'''").count();
        let was_in_string = in_string;
        if triple % 2 == 1 {
            in_string = !in_string;
        }
        if was_in_string || triple > 0 {
            continue;
        }
        let code = strip_comment(raw);
        if !mentions(code, name) {
            continue;
        }
        let plain = code
            .strip_prefix(name)
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .filter(|rest| !rest.starts_with('='))
            .map(str::trim);
        match plain {
            Some(v) if !v.is_empty() && !mentions(v, name) && simple_value(v) => {
                value = Some(v.to_owned());
            }
            _ => {
                return Err(format!(
                    "line {} of webserver_config.py sets or uses {name} in a way backfilld does not read",
                    number + 1
                ))
            }
        }
    }
    Ok(value)
}

/// A dotted name, an integer, or a string literal without escapes.
fn simple_value(v: &str) -> bool {
    string_literal(v).is_some()
        || (!v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
}

fn string_literal(v: &str) -> Option<String> {
    let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = v.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(quote) && !inner.contains('\\')).then(|| inner.to_owned())
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return line[..i].trim_end(),
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line.trim_end()
}

/// Whether `name` occurs in `code` as a whole identifier.
fn mentions(code: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn airflow_default_file_is_auth_db() {
        let text = "\"\"\"Default configuration for the Airflow webserver.\"\"\"\n\
                    from __future__ import annotations\nimport os\n\
                    from flask_appbuilder.const import AUTH_DB\n\
                    # from flask_appbuilder.const import AUTH_LDAP\n\
                    basedir = os.path.abspath(os.path.dirname(__file__))\n\
                    WTF_CSRF_ENABLED = True\nAUTH_TYPE = AUTH_DB\n# AUTH_TYPE = AUTH_OAUTH\n";
        assert_eq!(auth_type(Some(text)), AuthType::Db);
        assert_eq!(password_logins_off(&auth_type(Some(text))), None);
        assert_eq!(auth_type(None), AuthType::Db);
        assert_eq!(auth_type(Some("import os\n")), AuthType::Db);
    }

    #[test]
    fn other_auth_types_turn_passwords_off() {
        for (line, want) in [
            ("AUTH_TYPE = AUTH_LDAP", AuthType::Ldap),
            ("AUTH_TYPE=AUTH_OAUTH  # Google", AuthType::OAuth),
            ("AUTH_TYPE = const.AUTH_REMOTE_USER", AuthType::RemoteUser),
            ("AUTH_TYPE = 0", AuthType::OpenId),
            ("AUTH_TYPE = 1", AuthType::Db),
        ] {
            let got = auth_type(Some(&format!("from x import y\n{line}\n")));
            assert_eq!(got, want, "{line}");
        }
        let why = password_logins_off(&AuthType::OAuth).unwrap_or_default();
        assert!(why.contains("AUTH_OAUTH"), "{why}");
        assert_eq!(
            auth_type(Some("AUTH_TYPE = AUTH_DB\nAUTH_TYPE = AUTH_LDAP\n")),
            AuthType::Ldap
        );
    }

    #[test]
    fn anything_else_is_unreadable() {
        for text in [
            "if os.environ.get('X'):\n    AUTH_TYPE = AUTH_OAUTH\nelse:\n    AUTH_TYPE = AUTH_DB\n",
            "AUTH_TYPE = AUTH_DB if x else AUTH_LDAP\n",
            "AUTH_TYPE = pick()\n",
            "AUTH_TYPE += 1\n",
            "globals().update(AUTH_TYPE=2)\nAUTH_TYPE = AUTH_DB\n",
            "AUTH_TYPE = AUTH_WHATEVER\n",
        ] {
            let got = auth_type(Some(text));
            assert!(matches!(got, AuthType::Unreadable(_)), "{text}: {got:?}");
            assert!(password_logins_off(&got).is_some());
        }
        // A docstring or comment mentioning it is not code.
        assert_eq!(
            auth_type(Some(
                "\"\"\"\nAUTH_TYPE = AUTH_LDAP\n\"\"\"\nAUTH_TYPE = AUTH_DB\n"
            )),
            AuthType::Db
        );
        assert_eq!(auth_type(Some("MY_AUTH_TYPE = 4\n")), AuthType::Db);
    }

    #[test]
    fn secret_key_override() {
        assert_eq!(secret_key(None), Ok(None));
        assert_eq!(secret_key(Some("AUTH_TYPE = AUTH_DB\n")), Ok(None));
        assert_eq!(
            secret_key(Some("SECRET_KEY = 'abc'\n")),
            Ok(Some("abc".into()))
        );
        assert!(secret_key(Some("SECRET_KEY = os.environ['K']\n")).is_err());
        assert!(secret_key(Some("SECRET_KEY = K\n")).is_err());
    }
}
