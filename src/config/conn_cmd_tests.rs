//! Running `sql_alchemy_conn_cmd` and `sql_alchemy_conn_secret` the way Airflow does: the command's output, trimmed, and its failures.

use super::*;

fn resolve(cfg_text: &str) -> Result<AirflowLocation, ConfigError> {
    let home = tempfile::tempdir().map_err(|e| ConfigError::Airflow {
        what: "test",
        message: e.to_string(),
    })?;
    std::fs::write(home.path().join("airflow.cfg"), cfg_text).map_err(|e| {
        ConfigError::Airflow {
            what: "test",
            message: e.to_string(),
        }
    })?;
    let text = format!("[airflow]\nhome = \"{}\"\n", home.path().display());
    Config::parse(Path::new("x"), &text)?.resolve_airflow()
}

#[test]
fn smtp_settings_from_airflow_cfg_with_airflow_defaults() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("[airflow]\nhome = \"{}\"\n", home.path().display());
    let config = Config::parse(Path::new("x"), &text).unwrap_or_else(|e| panic!("{e}"));
    let s = config.resolve_smtp().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            s.host.as_str(),
            s.port,
            s.starttls,
            s.ssl,
            s.mail_from.as_str()
        ),
        ("localhost", 25, true, false, "airflow@example.com")
    );
    assert_eq!(
        (s.timeout_secs, s.retry_limit, s.user.clone()),
        (30, 5, None)
    );
    std::fs::write(
        home.path().join("airflow.cfg"),
        "[smtp]\nsmtp_host = mail.example.com\nsmtp_port = 465\nsmtp_starttls = False\nsmtp_ssl = True\nsmtp_user = af\nsmtp_password = s3cret-pw\nsmtp_mail_from = Airflow <af@example.com>\nsmtp_timeout = 7\nsmtp_retry_limit = 2\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = config.resolve_smtp().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            s.host.as_str(),
            s.port,
            s.starttls,
            s.ssl,
            s.mail_from.as_str()
        ),
        (
            "mail.example.com",
            465,
            false,
            true,
            "Airflow <af@example.com>"
        )
    );
    assert_eq!((s.timeout_secs, s.retry_limit), (7, 2));
    assert_eq!(s.password.as_deref(), Some("s3cret-pw"));
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("s3cret-pw") && shown.contains("redacted"),
        "{shown}"
    );
    std::fs::write(
        home.path().join("airflow.cfg"),
        "[smtp]\nsmtp_ssl = maybe\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.resolve_smtp().is_err());
}

#[test]
fn airflow_ui_base_urls_come_from_airflow_cfg() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = |cfg: &str| {
        std::fs::write(home.path().join("airflow.cfg"), cfg).unwrap_or_else(|e| panic!("{e}"));
        let text = format!("[airflow]\nhome = \"{}\"\n", home.path().display());
        Config::parse(Path::new("x"), &text)
            .and_then(|c| c.resolve_airflow_web())
            .map(|w| w.base_urls)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        config("[webserver]\nbase_url = http://af:8080/\n[api]\nbase_url = https://af3/x\n"),
        AirflowBaseUrls {
            v2: Some("http://af:8080".into()),
            v3: Some("https://af3/x".into()),
        }
    );
    assert_eq!(config("[api]\nbase_url =\n"), AirflowBaseUrls::default());
    assert_eq!(
        config("[webserver]\nbase_url = http://af:8080\n"),
        AirflowBaseUrls {
            v2: Some("http://af:8080".into()),
            v3: Some("http://af:8080".into()),
        }
    );
}

#[test]
fn conn_cmd_in_airflow_cfg_is_run_and_trimmed() {
    let loc =
        resolve("[database]\nsql_alchemy_conn_cmd = printf '  postgresql://u:pw@h:5432/af\\n'\n");
    let shown = loc.map(|l| l.db.to_string()).map_err(|e| e.to_string());
    assert_eq!(shown.as_deref(), Ok("postgres://u:***@h:5432/af"));
}

#[test]
fn plain_key_wins_over_cmd() {
    let loc =
        resolve("[database]\nsql_alchemy_conn = mysql://root@h/a\nsql_alchemy_conn_cmd = exit 1\n");
    let shown = loc.map(|l| l.db.to_string()).map_err(|e| e.to_string());
    assert_eq!(shown.as_deref(), Ok("mysql://root@h/a"));
}

#[test]
fn failing_or_empty_cmd_is_an_error_naming_the_key() {
    for cmd in ["echo nope >&2; exit 3", "true"] {
        let e = resolve(&format!("[database]\nsql_alchemy_conn_cmd = {cmd}\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("sql_alchemy_conn_cmd"), "{e}");
    }
}

#[test]
fn secret_is_refused_with_a_way_out() {
    let e = resolve("[database]\nsql_alchemy_conn_secret = airflow/db\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("secrets backend"), "{e}");
    assert!(e.contains("[airflow] sql_alchemy_conn"), "{e}");
}
