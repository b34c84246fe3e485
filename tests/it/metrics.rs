//! Issue 11's Prometheus metrics, end to end on real Airflow 2.11 (SQLite) with its scheduler:
//! backfills that succeed, fail and are cancelled, and refused requests; the `[metrics]
//! textfile` parses with a Prometheus text parser (the `prometheus-parse` crate) and its counts
//! equal `backfillctl list --json`; `GET /metrics` serves the same families, to an Airflow user
//! with `can_read` on `Backfills` (`[metrics] http = "login"`).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;

use crate::support::{free_port, wait_for, Airflow, AirflowMajor, Daemon};

const BIG: Duration = Duration::from_secs(420);

/// Parse exposition text; every sample line must parse (the crate skips what it cannot read).
fn parse(text: &str) -> Scrape {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let sample_lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "unparsed lines in:\n{text}"
    );
    for s in &scrape.samples {
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP:\n{text}",
            s.metric
        );
    }
    scrape
}

/// The value of `metric` with these labels (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            _ => panic!("{metric} is not a plain value"),
        })
        .sum()
}

fn kind(scrape: &Scrape, metric: &str) -> &'static str {
    match scrape
        .samples
        .iter()
        .find(|s| s.metric == metric)
        .map(|s| &s.value)
    {
        Some(Sample::Counter(_)) => "counter",
        Some(Sample::Gauge(_)) => "gauge",
        Some(_) => "other",
        None => "absent",
    }
}

const STATES: [&str; 7] = [
    "submitted",
    "queued",
    "running",
    "paused",
    "success",
    "failed",
    "cancelled",
];
const DATE_STATES: [&str; 5] = ["succeeded", "failed", "running", "queued", "pending"];

/// Backfills by state and dates by state, as `backfillctl list --json` counts them.
fn from_list(list: &Value) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let rows = list.as_array().cloned().unwrap_or_default();
    for s in STATES {
        let n = rows.iter().filter(|b| b["state"] == s).count();
        m.insert(format!("backfills:{s}"), n as f64);
    }
    for s in DATE_STATES {
        let n: f64 = rows
            .iter()
            .map(|b| b[format!("dates_{s}")].as_f64().unwrap_or(0.0))
            .sum();
        m.insert(format!("dates:{s}"), n);
    }
    m
}

/// The same figures from a scrape.
fn from_scrape(scrape: &Scrape) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in STATES {
        m.insert(
            format!("backfills:{s}"),
            value(scrape, "backfilld_backfills", &[("state", s)]),
        );
    }
    for s in DATE_STATES {
        m.insert(
            format!("dates:{s}"),
            value(scrape, "backfilld_dates", &[("state", s)]),
        );
    }
    m
}

fn http_get(port: u16, auth: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent.get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut r = req.call().unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), ct, body)
}

fn basic(user: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"))
    )
}

#[test]
fn metrics_textfile_matches_list_on_airflow2_sqlite() {
    let mut af = Airflow::sqlite(AirflowMajor::V2, "metrics_af2");
    af.start_scheduler();
    af.wait_parsed("sales", BIG);
    let dir = af.home.join("textfile-collector");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let prom = dir.join("backfilld.prom");
    let port = free_port();
    let d = Daemon::start_with(
        &af,
        &[],
        &format!(
            "\n[metrics]\ntextfile = \"{}\"\nhttp = \"login\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            prom.display()
        ),
    );
    af.ensure_user("vera", "Viewer");

    // One backfill that succeeds, one that fails (sales fails on 2023 dates), one cancelled;
    // refusals for an unknown DAG and too many dates; a dry run.
    let ok = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        "sales",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-02",
    ]);
    assert_eq!(ok["outcome"], "accepted", "{ok}");
    d.drop_request(
        "fails.toml",
        "dag_id = \"sales\"\nstart = 2023-01-01\nend = 2023-01-01\n",
    );
    d.drop_request(
        "unknown.toml",
        "dag_id = \"no_such_dag\"\nstart = 2024-01-01\nend = 2024-01-01\n",
    );
    d.drop_request(
        "huge.toml",
        "dag_id = \"sales\"\nstart = 2000-01-01\nend = 2020-01-01\n",
    );
    d.drop_request(
        "dry.toml",
        "dag_id = \"sales\"\nstart = 2024-05-01\nend = 2024-05-03\ndry_run = true\n",
    );
    let outcome = |name: &str| {
        wait_for("a decision", Duration::from_secs(60), || {
            let out = d.ctl(&["outcome", name, "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            (v["outcome"] != "pending" && v["outcome"].is_string()).then_some(v)
        })
    };
    let failing = outcome("fails.toml");
    assert_eq!(failing["outcome"], "accepted", "{failing}");
    assert_eq!(outcome("unknown.toml")["reason_code"], "unknown_dag");
    assert_eq!(outcome("huge.toml")["reason_code"], "too_many_dates");
    assert_eq!(outcome("dry.toml")["outcome"], "accepted");
    let cancel_me = d.ctl_json(&[
        "submit",
        "--json",
        "--dag",
        "sales",
        "--start",
        "2024-07-01",
        "--end",
        "2024-07-01",
        "--at",
        "2099-01-01T00:00:00Z",
    ]);
    let cancelled = d.ctl_json(&[
        "cancel",
        cancel_me["backfill_id"].as_str().unwrap_or_default(),
        "--json",
    ]);
    assert_eq!(cancelled["outcome"], "accepted", "{cancelled}");

    let ok_id = ok["backfill_id"].as_str().unwrap_or_default();
    let fail_id = failing["backfill_id"].as_str().unwrap_or_default();
    assert_eq!(d.wait_finished(ok_id, BIG)["state"], "success");
    assert_eq!(d.wait_finished(fail_id, BIG)["state"], "failed");

    // The textfile catches up within a pass or two; then its counts equal the list's.
    let (scrape, list) = wait_for(
        "the textfile to match the list",
        Duration::from_secs(60),
        || {
            let list = d.ctl_json(&["list", "--json"]);
            let text = std::fs::read_to_string(&prom).ok()?;
            let scrape = parse(&text);
            (from_scrape(&scrape) == from_list(&list)).then_some((scrape, list))
        },
    );
    let by_state = from_list(&list);
    assert_eq!(by_state["backfills:success"], 1.0, "{list}");
    assert_eq!(by_state["backfills:failed"], 1.0, "{list}");
    assert_eq!(by_state["backfills:cancelled"], 1.0, "{list}");
    assert_eq!(by_state["dates:succeeded"], 2.0, "{list}");
    assert_eq!(by_state["dates:failed"], 1.0, "{list}");
    assert_eq!(kind(&scrape, "backfilld_backfills"), "gauge");
    assert_eq!(kind(&scrape, "backfilld_requests_total"), "counter");
    let requests = |action: &str, outcome: &str, reason: &str| {
        value(
            &scrape,
            "backfilld_requests_total",
            &[("action", action), ("outcome", outcome), ("reason", reason)],
        )
    };
    assert_eq!(requests("create", "accepted", ""), 3.0);
    assert_eq!(requests("create", "rejected", "unknown_dag"), 1.0);
    assert_eq!(requests("create", "rejected", "too_many_dates"), 1.0);
    assert_eq!(requests("create", "dry_run", ""), 1.0);
    assert_eq!(requests("cancel", "accepted", ""), 1.0);
    assert_eq!(value(&scrape, "backfilld_backfills_throttled", &[]), 0.0);
    assert_eq!(value(&scrape, "backfilld_backfills_deleted", &[]), 0.0);
    assert_eq!(value(&scrape, "backfilld_spool_incoming_files", &[]), 0.0);
    assert_eq!(value(&scrape, "backfilld_metadb_up", &[]), 1.0);
    assert!(value(&scrape, "backfilld_reconcile_passes_total", &[]) >= 1.0);
    assert!(value(&scrape, "backfilld_reconcile_pass_queries", &[]) >= 1.0);
    assert!(value(&scrape, "backfilld_reconcile_pass_duration_seconds", &[]) > 0.0);
    // No temp file is left beside the textfile.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // GET /metrics: the same text, for a user who may read backfills.
    let (status, _, _) = http_get(port, None);
    assert_eq!(status, 401);
    let (status, _, body) = http_get(port, Some(&basic("vera")));
    assert_eq!(status, 403, "{body}");
    let (status, content_type, body) = http_get(port, Some(&basic("root")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let served = parse(&body);
    assert_eq!(from_scrape(&served), from_list(&list));
    assert_eq!(
        value(
            &served,
            "backfilld_requests_total",
            &[("reason", "unknown_dag")]
        ),
        1.0
    );
}

/// The aggregate statements behind the metrics read right on every engine's real server
/// (PostgreSQL's `SUM` is `numeric`, MySQL's `DECIMAL`: both cast back to 64-bit integers).
#[test]
fn metrics_figures_on_every_backend() {
    use backfilld::metadb::store::{self, RequestRecord, Store};
    use backfilld::metadb::MetaDb;
    use backfilld::request::ReasonCode;

    let urls = crate::support::every_backend("metrics_figures");
    let day = crate::support::jan;
    for url in urls {
        let mut db = MetaDb::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        store::migrate(&mut db).unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut s = Store::new(&mut db);
        for (n, id) in ["a", "b"].iter().enumerate() {
            let new = crate::support::sample_backfill(1, 3);
            s.insert_backfill(id, &new, "h", &format!("key{n}"), day(4))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for (n, (outcome, code)) in [
            ("accepted", None),
            ("rejected", Some(ReasonCode::Overlap)),
            ("rejected", Some(ReasonCode::Overlap)),
        ]
        .into_iter()
        .enumerate()
        {
            s.record_request(&RequestRecord {
                request_key: format!("r{n}"),
                file_name: format!("f{n}.toml"),
                uid: 1000,
                username: Some("alice".into()),
                host: "h".into(),
                received_at: store::stored_ts(day(4)),
                outcome: backfilld::request::Outcome::parse(outcome),
                backfill_id: None,
                reason_code: code,
                reason: code.map(|_| "x".into()),
                airflow_user: Some("alice".into()),
                on_behalf_of: None,
                action: Some("create".into()),
                dry_run: false,
                dates: None,
                skipped_dates: None,
                warnings: Default::default(),
                estimate: None,
            })
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let f =
            backfilld::metadb::metrics::figures(&mut db).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(f.backfills.len(), 1, "{url}: {f:?}");
        let g = &f.backfills[0];
        assert_eq!(
            (
                g.state.as_str(),
                g.deleted,
                g.backfills,
                g.pending,
                g.succeeded
            ),
            ("submitted", false, 2, 6, 0),
            "{url}"
        );
        let rejected: u64 = f
            .requests
            .iter()
            .filter(|r| r.outcome == "rejected" && r.reason == "overlap")
            .map(|r| r.count)
            .sum();
        assert_eq!(rejected, 2, "{url}: {f:?}");
    }
}
