//! Airflow's own settings, read the way Airflow reads them (environment, then `airflow.cfg`,
//! then Airflow's defaults): the metadata DB URL (and `_cmd`/`_secret` variants), the DAGs
//! folder, the auth manager, the api-server's token settings, the web UI's base URLs and SMTP.

use super::*;

impl Config {
    /// Resolve the metadata DB URL and DAGs folder the way Airflow would on this host.
    pub fn resolve_airflow(&self) -> Result<AirflowLocation, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let home = self.airflow.home.to_string_lossy().into_owned();
        let conn = match &self.airflow.sql_alchemy_conn {
            Some(c) => c.clone(),
            None => airflow_sql_alchemy_conn(&cfg)?
                .unwrap_or_else(|| format!("sqlite:///{home}/airflow.db")),
        };
        let conn = conn.replace("{AIRFLOW_HOME}", &home);
        let db = DbUrl::parse(&conn).map_err(|e| ConfigError::Airflow {
            what: "sql_alchemy_conn",
            message: e.to_string(),
        })?;
        let dags_folder = match &self.airflow.dags_folder {
            Some(d) => d.clone(),
            None => PathBuf::from(
                env("AIRFLOW__CORE__DAGS_FOLDER")
                    .or_else(|| cfg.get("core", "dags_folder"))
                    .unwrap_or_else(|| format!("{home}/dags"))
                    .replace("{AIRFLOW_HOME}", &home),
            ),
        };
        if !dags_folder.is_absolute() {
            return Err(ConfigError::Airflow {
                what: "dags_folder",
                message: format!("{} is not an absolute path", dags_folder.display()),
            });
        }
        Ok(AirflowLocation { db, dags_folder })
    }

    /// How Airflow 3's api-server signs its tokens (`[api_auth] jwt_secret`, `jwt_algorithm`,
    /// `jwt_audience`, from the environment or `airflow.cfg`); `None` without a shared secret.
    pub fn resolve_api_tokens(&self) -> Result<Option<ApiTokenSettings>, ConfigError> {
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let get = |section: &str, key: &str| cfg.setting(section, key);
        let Some(secret) = get("api_auth", "jwt_secret") else {
            return Ok(None);
        };
        let algorithm = get("api_auth", "jwt_algorithm")
            .and_then(|a| a.split(',').next().map(|a| a.trim().to_owned()))
            .filter(|a| a != "GUESS")
            .unwrap_or_else(|| "HS512".into());
        let audience = get("api_auth", "jwt_audience").unwrap_or_else(|| "apache-airflow".into());
        Ok(Some(ApiTokenSettings {
            secret,
            algorithm,
            audience,
        }))
    }

    /// Airflow's plugins folder as Airflow resolves it: `AIRFLOW__CORE__PLUGINS_FOLDER`, then
    /// `[core] plugins_folder` in `airflow.cfg`, then `$AIRFLOW_HOME/plugins`.
    pub fn resolve_plugins_folder(&self) -> Result<PathBuf, ConfigError> {
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let home = self.airflow.home.to_string_lossy().into_owned();
        let folder = PathBuf::from(
            cfg.setting("core", "plugins_folder")
                .unwrap_or_else(|| format!("{home}/plugins"))
                .replace("{AIRFLOW_HOME}", &home),
        );
        if !folder.is_absolute() {
            return Err(ConfigError::Airflow {
                what: "plugins_folder",
                message: format!("{} is not an absolute path", folder.display()),
            });
        }
        Ok(folder)
    }

    /// What backfilld reads of Airflow's web sign-in: `webserver_config.py` (`[fab]
    /// config_file` on Airflow 3, `[webserver] config_file` on Airflow 2, default
    /// `$AIRFLOW_HOME/webserver_config.py`; read, never executed) and the webserver's session
    /// settings (`[webserver] secret_key`, `session_lifetime_minutes`, `session_backend`).
    pub fn resolve_airflow_web(&self) -> Result<AirflowWeb, ConfigError> {
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let get = |section: &str, key: &str| cfg.setting(section, key);
        let home = self.airflow.home.display().to_string();
        let path = PathBuf::from(
            get("fab", "config_file")
                .or_else(|| get("webserver", "config_file"))
                .unwrap_or_else(|| format!("{home}/webserver_config.py"))
                .replace("{AIRFLOW_HOME}", &home),
        );
        let base_url = |section: &str| {
            get(section, "base_url")
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
        };
        // Airflow 3 reads a `[webserver] base_url` left from 2.x as `[api] base_url`.
        let base_urls = AirflowBaseUrls {
            v2: base_url("webserver"),
            v3: base_url("api").or_else(|| base_url("webserver")),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Ok(AirflowWeb {
                    auth_type: crate::webserver_config::AuthType::Unreadable(format!(
                        "{}: {e}",
                        path.display()
                    )),
                    secret_key: Err(format!("{}: {e}", path.display())),
                    session_lifetime_minutes: 0,
                    database_sessions: false,
                    base_urls,
                })
            }
        };
        let secret_key = crate::webserver_config::secret_key(text.as_deref()).and_then(|k| {
            k.or_else(|| get("webserver", "secret_key"))
                .ok_or_else(|| "[webserver] secret_key is not set".to_owned())
        });
        Ok(AirflowWeb {
            auth_type: crate::webserver_config::auth_type(text.as_deref()),
            secret_key,
            session_lifetime_minutes: get("webserver", "session_lifetime_minutes")
                .and_then(|m| m.parse().ok())
                .unwrap_or(43200),
            database_sessions: get("webserver", "session_backend").as_deref()
                != Some("securecookie"),
            base_urls,
        })
    }

    /// The auth manager Airflow uses on this host, read as Airflow reads it
    /// (`AIRFLOW__CORE__AUTH_MANAGER`, then `[core] auth_manager` in `airflow.cfg`).
    pub fn resolve_auth_manager(&self) -> Result<AuthManager, ConfigError> {
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let get = |key: &str| cfg.setting("core", key);
        Ok(classify_auth_manager(
            self.airflow
                .auth_manager
                .clone()
                .or_else(|| get("auth_manager"))
                .as_deref(),
            get("simple_auth_manager_users"),
            get("simple_auth_manager_all_admins"),
        ))
    }
}

impl Config {
    /// Airflow's SMTP settings as Airflow reads them (`AIRFLOW__SMTP__<KEY>`, then `[smtp]` in
    /// `airflow.cfg`, then Airflow's defaults).
    pub fn resolve_smtp(&self) -> Result<SmtpSettings, ConfigError> {
        let cfg = AirflowCfg::read(&self.airflow.home)?;
        let get = |key: &str| cfg.setting("smtp", key);
        let flag = |key: &str, default: bool| -> Result<bool, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" | "t" | "1" | "yes" | "on" => Ok(true),
                    "false" | "f" | "0" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError::Airflow {
                        what: "[smtp]",
                        message: format!("{key} = {v:?} is not a boolean"),
                    }),
                },
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| ConfigError::Airflow {
                    what: "[smtp]",
                    message: format!("{key} = {v:?} is not a number"),
                }),
            }
        };
        Ok(SmtpSettings {
            host: get("smtp_host").unwrap_or_else(|| "localhost".into()),
            port: u16::try_from(number("smtp_port", 25)?).map_err(|_| ConfigError::Airflow {
                what: "[smtp]",
                message: "smtp_port is out of range".into(),
            })?,
            starttls: flag("smtp_starttls", true)?,
            ssl: flag("smtp_ssl", false)?,
            user: get("smtp_user"),
            password: get("smtp_password"),
            mail_from: get("smtp_mail_from").unwrap_or_else(|| "airflow@example.com".into()),
            timeout_secs: number("smtp_timeout", 30)?,
            retry_limit: u32::try_from(number("smtp_retry_limit", 5)?).unwrap_or(5),
        })
    }
}

/// Classify an `auth_manager` class path (pure; see [`Config::resolve_auth_manager`]).
pub fn classify_auth_manager(
    class: Option<&str>,
    simple_users: Option<String>,
    all_admins: Option<String>,
) -> AuthManager {
    let simple = || AuthManager::Simple {
        // Airflow's own default for simple_auth_manager_users.
        users: simple_users.clone().unwrap_or_else(|| "admin:admin".into()),
        all_admins: all_admins
            .as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
    };
    match class.map(str::trim) {
        None | Some("") => AuthManager::Default,
        Some(c) if c.ends_with(".FabAuthManager") => AuthManager::Fab,
        Some(c) if c.ends_with(".SimpleAuthManager") => simple(),
        Some(c) => AuthManager::Other(c.to_owned()),
    }
}

impl AuthManager {
    /// What [`AuthManager::Default`] means for an Airflow major version.
    pub fn for_generation(self, airflow3: bool, simple_users: Option<String>) -> AuthManager {
        match self {
            AuthManager::Default if airflow3 => AuthManager::Simple {
                users: simple_users.unwrap_or_else(|| "admin:admin".into()),
                all_admins: false,
            },
            AuthManager::Default => AuthManager::Fab,
            other => other,
        }
    }
}

/// `sql_alchemy_conn` as Airflow resolves it: for `[database]` then the deprecated `[core]`,
/// the environment (`AIRFLOW__<SECTION>__SQL_ALCHEMY_CONN`, then `..._CMD`, then `..._SECRET`)
/// before `airflow.cfg` (`sql_alchemy_conn`, then `sql_alchemy_conn_cmd`, then
/// `sql_alchemy_conn_secret`). A `_cmd` runs through `/bin/sh -c` and its trimmed standard
/// output is the URL. A `_secret` needs Airflow's secrets backend, which backfilld does not
/// embed: it is refused with a message saying to give the URL another way.
pub(super) fn airflow_sql_alchemy_conn(cfg: &AirflowCfg) -> Result<Option<String>, ConfigError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    for section in ["database", "core"] {
        let var = format!("AIRFLOW__{}__SQL_ALCHEMY_CONN", section.to_uppercase());
        let sources = [
            (env(&var), None, var.clone()),
            (
                env(&format!("{var}_CMD")),
                Some(false),
                format!("{var}_CMD"),
            ),
            (
                env(&format!("{var}_SECRET")),
                Some(true),
                format!("{var}_SECRET"),
            ),
            (
                cfg.get(section, "sql_alchemy_conn"),
                None,
                format!("airflow.cfg [{section}] sql_alchemy_conn"),
            ),
            (
                cfg.get(section, "sql_alchemy_conn_cmd"),
                Some(false),
                format!("airflow.cfg [{section}] sql_alchemy_conn_cmd"),
            ),
            (
                cfg.get(section, "sql_alchemy_conn_secret"),
                Some(true),
                format!("airflow.cfg [{section}] sql_alchemy_conn_secret"),
            ),
        ];
        for (value, kind, origin) in sources {
            let Some(value) = value else { continue };
            return match kind {
                None => Ok(Some(value)),
                Some(false) => run_conn_cmd(&value, &origin).map(Some),
                Some(true) => Err(ConfigError::Airflow {
                    what: "sql_alchemy_conn",
                    message: format!(
                        "{origin} names a secret ({value:?}) that only Airflow's secrets backend can read; \
                         backfilld does not load secrets backends: set [airflow] sql_alchemy_conn in \
                         backfilld's config, or give Airflow the URL through sql_alchemy_conn_cmd"
                    ),
                }),
            };
        }
    }
    Ok(None)
}

/// Run a `sql_alchemy_conn_cmd` the way Airflow does (a shell command; trimmed stdout).
pub(super) fn run_conn_cmd(cmd: &str, origin: &str) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError::Airflow {
        what: "sql_alchemy_conn",
        message: format!("{origin} (`{cmd}`): {message}"),
    };
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "it failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let url = String::from_utf8(out.stdout)
        .map_err(|_| fail("its output is not UTF-8".into()))?
        .trim()
        .to_owned();
    if url.is_empty() {
        return Err(fail("it printed nothing".into()));
    }
    Ok(url)
}

/// Where this host's Airflow keeps its metadata DB and DAG files.
#[derive(Debug, Clone)]
pub struct AirflowLocation {
    /// The metadata DB.
    pub db: DbUrl,
    /// The DAGs folder.
    pub dags_folder: PathBuf,
}

/// The sections of `$AIRFLOW_HOME/airflow.cfg` that backfilld reads (absent file = empty).
pub(super) struct AirflowCfg(Option<ini::Ini>);

impl AirflowCfg {
    pub(super) fn read(home: &Path) -> Result<AirflowCfg, ConfigError> {
        let path = home.join("airflow.cfg");
        if !path.exists() {
            return Ok(AirflowCfg(None));
        }
        let opts = ini::ParseOption {
            enabled_escape: false,
            enabled_quote: false,
            ..Default::default()
        };
        ini::Ini::load_from_file_opt(&path, opts)
            .map(|i| AirflowCfg(Some(i)))
            .map_err(|e| ConfigError::Airflow {
                what: "airflow.cfg",
                message: format!("{}: {e}", path.display()),
            })
    }

    fn get(&self, section: &str, key: &str) -> Option<String> {
        self.0
            .as_ref()?
            .get_from(Some(section), key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A setting as Airflow reads it: `AIRFLOW__<SECTION>__<KEY>` from the environment when
    /// set and not empty, else `[section] key` in `airflow.cfg`.
    fn setting(&self, section: &str, key: &str) -> Option<String> {
        std::env::var(format!(
            "AIRFLOW__{}__{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        ))
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| self.get(section, key))
    }
}
