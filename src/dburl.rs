//! Airflow's `sql_alchemy_conn` (a SQLAlchemy URL) turned into what diesel connects to.

use std::fmt;
use std::path::PathBuf;

/// Which database engine holds the metadata DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (Airflow's embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

/// A metadata DB location. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// A SQLite file (must already exist).
    Sqlite(PathBuf),
    /// A libpq URL (`postgres://...`).
    Postgres(String),
    /// A MySQL client URL (`mysql://...`).
    Mysql(String),
}

/// Why a URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("unsupported sql_alchemy_conn `{redacted}`: {reason}")]
pub struct DbUrlError {
    redacted: String,
    reason: String,
}

impl DbUrl {
    /// Parse the SQLAlchemy URL forms Airflow users write.
    pub fn parse(url: &str) -> Result<DbUrl, DbUrlError> {
        let err = |reason: &str| DbUrlError {
            redacted: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| err("no `scheme://`"))?;
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        match dialect {
            "sqlite" => {
                // sqlite:////abs/path (absolute) or sqlite:///relative; query options dropped.
                let path = rest
                    .strip_prefix('/')
                    .ok_or_else(|| err("no database path"))?;
                let path = path.split('?').next().unwrap_or(path);
                if path.is_empty() {
                    return Err(err("in-memory SQLite cannot be shared with Airflow"));
                }
                Ok(DbUrl::Sqlite(PathBuf::from(path)))
            }
            "postgresql" | "postgres" => Ok(DbUrl::Postgres(format!("postgres://{rest}"))),
            "mysql" | "mariadb" => {
                // Keep the query options diesel's MySQL client understands (lower-casing
                // `ssl_mode`, which SQLAlchemy users write as MySQL does, e.g. `REQUIRED`);
                // drop driver-only ones such as `charset` (backfilld always uses utf8mb4).
                let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
                let kept: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        match k {
                            "unix_socket" | "ssl_ca" | "ssl_cert" | "ssl_key" => {
                                Some(format!("{k}={v}"))
                            }
                            "ssl_mode" => Some(format!("{k}={}", v.to_ascii_lowercase())),
                            _ => None,
                        }
                    })
                    .collect();
                if kept.is_empty() {
                    Ok(DbUrl::Mysql(format!("mysql://{base}")))
                } else {
                    Ok(DbUrl::Mysql(format!("mysql://{base}?{}", kept.join("&"))))
                }
            }
            _ => Err(err("backfilld supports sqlite, postgresql and mysql")),
        }
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        match self {
            DbUrl::Sqlite(_) => Backend::Sqlite,
            DbUrl::Postgres(_) => Backend::Postgres,
            DbUrl::Mysql(_) => Backend::Mysql,
        }
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth_host, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth_host.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DbUrl::Postgres(u) | DbUrl::Mysql(u) => f.write_str(&redact(u)),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> String {
        match DbUrl::parse(url) {
            Ok(DbUrl::Sqlite(p)) => format!("sqlite {}", p.display()),
            Ok(DbUrl::Postgres(u)) => format!("pg {u}"),
            Ok(DbUrl::Mysql(u)) => format!("my {u}"),
            Err(e) => format!("err {e}"),
        }
    }

    #[test]
    fn airflow_url_forms() {
        assert_eq!(
            parsed("sqlite:////abs/airflow.db"),
            "sqlite /abs/airflow.db"
        );
        assert_eq!(parsed("sqlite:///rel.db"), "sqlite rel.db");
        assert_eq!(
            parsed("postgresql+psycopg2://u:p@h:5432/db?sslmode=require"),
            "pg postgres://u:p@h:5432/db?sslmode=require"
        );
        assert_eq!(parsed("postgresql://h/db"), "pg postgres://h/db");
        assert_eq!(
            parsed("mysql+mysqldb://root@127.0.0.1:3306/test?charset=utf8mb4"),
            "my mysql://root@127.0.0.1:3306/test"
        );
        assert_eq!(
            parsed("mysql://u:p@db/af?charset=utf8&ssl_mode=REQUIRED&ssl_ca=/etc/ca.pem"),
            "my mysql://u:p@db/af?ssl_mode=required&ssl_ca=/etc/ca.pem"
        );
        assert_eq!(
            parsed("mariadb+mariadbconnector://u@localhost/af?unix_socket=/run/mysqld/mysqld.sock"),
            "my mysql://u@localhost/af?unix_socket=/run/mysqld/mysqld.sock"
        );
        assert_eq!(
            parsed("postgresql+psycopg://u@/af?host=/var/run/postgresql"),
            "pg postgres://u@/af?host=/var/run/postgresql"
        );
        assert!(parsed("oracle://x").starts_with("err"));
        assert!(parsed("sqlite://").starts_with("err"));
    }

    #[test]
    fn password_never_shown() {
        let u = DbUrl::parse("postgresql://alice:s3cret@db:5432/airflow");
        let shown = format!(
            "{:?} {}",
            u,
            u.as_ref().map(|u| u.to_string()).unwrap_or_default()
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("alice:***@db:5432/airflow"), "{shown}");
        let e = DbUrl::parse("bogus://alice:s3cret@db/x")
            .err()
            .map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("s3cret"));
    }
}
