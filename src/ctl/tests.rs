//! backfillctl's tables: the output of list pages, outcomes and estimates.

use super::*;

#[test]
fn streamed_json_array_prints_as_the_whole_array() {
    let cases = [
        serde_json::json!([]),
        serde_json::json!([{"a": 1}]),
        serde_json::json!([
            {"id": "x", "params": {}, "dates": [], "nested": {"k": [1, 2], "s": "two\nlines"}},
            {"id": "y", "list": ["a", "b"], "empty": {}},
            3
        ]),
    ];
    for case in cases {
        let mut array = JsonArray::default();
        let mut out = Vec::new();
        for item in case.as_array().into_iter().flatten() {
            array.item(&mut out, item).unwrap_or_else(|e| panic!("{e}"));
        }
        array.finish(&mut out).unwrap_or_else(|e| panic!("{e}"));
        let want = format!(
            "{}\n",
            serde_json::to_string_pretty(&case).unwrap_or_default()
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
    }
}

#[test]
fn airflow_plugin_needs_no_config_with_a_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = dir.path().display().to_string();
    for (verb, code) in [("install", 0), ("install", 0), ("uninstall", 0)] {
        let cli = Cli::try_parse_from([
            "backfillctl",
            "--config",
            "/nonexistent/backfilld.toml",
            "airflow-plugin",
            verb,
            "--plugins-folder",
            &folder,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run(cli).ok(), Some(code), "{verb}");
    }
    assert!(!dir.path().join(crate::airflow_plugin::FILE_NAME).exists());
    let missing = Cli::try_parse_from([
        "backfillctl",
        "--config",
        "/nonexistent/backfilld.toml",
        "airflow-plugin",
        "install",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run(missing).is_err(), "no config, no folder named");
}
