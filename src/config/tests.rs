//! The configuration's tables: parsing, validation, every section's defaults and Airflow's settings resolved.

use super::*;

#[test]
fn passwords_in_config_text() {
    assert!(holds_password(
        "[airflow]\nsql_alchemy_conn = \"postgresql://af:s3cret@db/airflow\"\n"
    ));
    assert!(holds_password("[x]\npassword = \"hunter2\"\n"));
    assert!(!holds_password(
        "[airflow]\n# sql_alchemy_conn = \"postgresql://af:s3cret@db/airflow\"\n"
    ));
    assert!(!holds_password(
        "sql_alchemy_conn = \"postgresql://af@db/airflow\"\n"
    ));
    assert!(!holds_password(
        "password_logins = true\nlisten = \"127.0.0.1:8790\"\n"
    ));
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(Path::new("x"), "[airflow]\nhome = \"/opt/airflow\"\n");
    let c = c.map_err(|e| e.to_string());
    assert!(c.is_ok(), "{c:?}");
    if let Ok(c) = c {
        assert_eq!(c.spool.dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert_eq!(
            c.socket_path(),
            PathBuf::from("/var/spool/backfilld/public/control.sock")
        );
        assert_eq!(c.limits.max_active_runs, 10);
    }
}

#[test]
fn unknown_key_is_named() {
    let e = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[spool]\ndirr = \"/s\"\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("dirr"), "{e}");
}

#[test]
fn bad_value_is_named() {
    let e = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[limits]\nmax_active_runs = 0\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("limits.max_active_runs"), "{e}");
}

#[test]
fn airflow_python_must_be_absolute() {
    let parse = |python: &str| {
        Config::parse(
            Path::new("x"),
            &format!("[airflow]\nhome = \"/a\"\npython = \"{python}\"\n"),
        )
    };
    let e = parse("venv/bin/python")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("airflow.python"), "{e}");
    assert_eq!(
        parse("/opt/af/bin/python")
            .ok()
            .and_then(|c| c.airflow.python),
        Some(PathBuf::from("/opt/af/bin/python"))
    );
}

#[test]
fn approval_section() {
    let c = Config::parse(Path::new("x"), "[airflow]\nhome = \"/a\"\n");
    assert_eq!(
        c.map(|c| c.approval).ok(),
        Some(ApprovalSection {
            over_dates: 0,
            approver_roles: vec!["Admin".into()]
        })
    );
    let c = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[approval]\nover_dates = 30\napprover_roles = [\"Admin\", \"Approver\"]\n",
    );
    assert_eq!(c.map(|c| c.approval.over_dates).ok(), Some(30));
    for bad in ["approver_roles = []", "approver_roles = [\"\"]", "over = 1"] {
        let text = format!("[airflow]\nhome = \"/a\"\n[approval]\n{bad}\n");
        assert!(Config::parse(Path::new("x"), &text).is_err(), "{bad}");
    }
}

#[test]
fn notifications_section() {
    let c = Config::parse(Path::new("x"), "[airflow]\nhome = \"/a\"\n");
    assert_eq!(
        c.map(|c| c.notifications).ok(),
        Some(NotificationsSection::default())
    );
    let ok = "[airflow]\nhome = \"/a\"\n[notifications]\nwebhooks = [\"slack:https://hooks.slack.com/services/x\"]\nemails = [\"ops@example.com\"]\nallowed_webhook_prefixes = [\"https://hooks.example.com/\"]\nevents = [\"failure\", \"approval_needed\"]\nmax_age = \"12h\"\n";
    let c = Config::parse(Path::new("x"), ok).map(|c| c.notifications);
    assert_eq!(
        c.as_ref().map(|n| n.events.clone()).ok(),
        Some(vec![
            crate::notification::Event::Failure,
            crate::notification::Event::ApprovalNeeded
        ])
    );
    for (bad, key) in [
        ("webhooks = [\"ftp://x/\"]", "notifications.webhooks"),
        (
            "webhooks = [\"mailto:a@example.com\"]",
            "notifications.webhooks",
        ),
        ("emails = [\"nobody\"]", "notifications.emails"),
        (
            "allowed_webhook_prefixes = [\"https://hooks.example.com\"]",
            "notifications.allowed_webhook_prefixes",
        ),
        (
            "allowed_webhook_prefixes = [\"https://\"]",
            "notifications.allowed_webhook_prefixes",
        ),
        ("timeout_secs = 0", "notifications.timeout_secs"),
        ("events = [\"finished\"]", "events"),
    ] {
        let text = format!("[airflow]\nhome = \"/a\"\n[notifications]\n{bad}\n");
        let e = Config::parse(Path::new("x"), &text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(key), "{bad}: {e}");
    }
    let e = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[http]\npublic_url = \"af.example.com\"\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("http.public_url"), "{e}");
}

#[test]
fn base_path_is_one_path_on_this_site() {
    let parse = |path: &str| {
        let text = format!("[airflow]\nhome = \"/a\"\n[http]\nbase_path = \"{path}\"\n");
        Config::parse(Path::new("x"), &text).map(|c| c.http.base_path)
    };
    for (path, want) in [
        ("", ""),
        ("/", ""),
        ("/backfills/", "/backfills"),
        ("/a/b-c_d.e", "/a/b-c_d.e"),
    ] {
        assert_eq!(parse(path).ok().as_deref(), Some(want), "{path}");
    }
    for bad in [
        "backfills",
        "//evil.example",
        "/a//b",
        "/a b",
        "/a?b",
        "/\\\\evil",
    ] {
        let e = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("http.base_path"), "{bad}: {e}");
    }
}

#[test]
fn authz_resource_may_not_be_a_dag_resource() {
    for bad in ["DAGs", "DAG:sales", "", "a\nb"] {
        let text = format!("[airflow]\nhome = \"/a\"\n[authz]\nresource = {bad:?}\n");
        let e = Config::parse(Path::new("x"), &text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("authz.resource"), "{bad:?}: {e}");
    }
    let ok = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[authz]\nresource = \"backfilld\"\n",
    );
    assert!(ok.is_ok_and(|c| c.authz.resource == "backfilld"));
}

#[test]
fn log_level_is_checked() {
    let ok = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[log]\nlevel = \"info,backfilld=debug\"\n",
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    let e = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[log]\nlevel = \"info,=\"\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("log.level"), "{e}");
}

#[test]
fn shipped_example_parses() {
    let text = include_str!("../../config/backfilld.toml");
    let c = Config::parse(Path::new("config/backfilld.toml"), text);
    assert!(c.is_ok(), "{:?}", c.err());
    assert_eq!(
        c.ok().map(|c| c.notifications),
        Some(NotificationsSection::default()),
        "the example documents the defaults"
    );
}

#[test]
fn identity_and_authz_sections() {
    let c = Config::parse(
        Path::new("x"),
        "[airflow]\nhome = \"/a\"\n[identity]\nsame_name = false\ntrusted_submitters = [990]\n[identity.map]\nsvc = \"alice\"\n[authz]\npermitted_roles = [\"User\"]\n",
    );
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.airflow_user("svc").as_deref(), Some("alice"));
    assert_eq!(c.identity.airflow_user("bob"), None);
    assert!(c.identity.is_trusted(990) && !c.identity.is_trusted(0));
    assert_eq!(c.authz.permitted_roles, vec!["User"]);
    let d = Config::parse(Path::new("x"), "[airflow]\nhome = \"/a\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.identity.airflow_user("bob").as_deref(), Some("bob"));
    assert_eq!(d.authz.permitted_roles, vec!["User", "Op"]);
    assert_eq!(d.authz.resource, "Backfills");
    assert_eq!(d.limits.max_pending_per_user, 20);
    assert_eq!(d.limits.max_dates_per_request, 5000);
    assert_eq!(d.limits.max_active_backfills_per_user, 20);
}

#[test]
fn auth_manager_is_classified() {
    assert_eq!(
        classify_auth_manager(None, None, None),
        AuthManager::Default
    );
    assert_eq!(
        classify_auth_manager(
            Some("airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"),
            None,
            None
        ),
        AuthManager::Fab
    );
    assert_eq!(
        classify_auth_manager(
            Some("airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"),
            Some("a:admin".into()),
            Some("True".into())
        ),
        AuthManager::Simple {
            users: "a:admin".into(),
            all_admins: true
        }
    );
    assert!(matches!(
        classify_auth_manager(Some("my.Custom"), None, None),
        AuthManager::Other(_)
    ));
    assert_eq!(
        AuthManager::Default.for_generation(false, None),
        AuthManager::Fab
    );
    assert!(matches!(
        AuthManager::Default.for_generation(true, None),
        AuthManager::Simple { .. }
    ));
}

#[test]
fn missing_home_is_named() {
    let e = Config::parse(Path::new("x"), "[airflow]\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("home"), "{e}");
}

#[test]
fn plugins_folder_is_resolved_as_airflow_does() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("[airflow]\nhome = \"{}\"\n", home.path().display());
    let c = Config::parse(Path::new("x"), &text).unwrap_or_else(|e| panic!("{e}"));
    // The environment variable would win over both; this test leaves it unset.
    if std::env::var_os("AIRFLOW__CORE__PLUGINS_FOLDER").is_some() {
        return;
    }
    assert_eq!(
        c.resolve_plugins_folder().ok(),
        Some(home.path().join("plugins"))
    );
    std::fs::write(
        home.path().join("airflow.cfg"),
        "[core]\nplugins_folder = {AIRFLOW_HOME}/our-plugins\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.resolve_plugins_folder().ok(),
        Some(home.path().join("our-plugins"))
    );
    std::fs::write(
        home.path().join("airflow.cfg"),
        "[core]\nplugins_folder = rel\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.resolve_plugins_folder().is_err());
}
