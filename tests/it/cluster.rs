//! Issue 7: several agents on one metadata DB act as one system. Three agents (own spool; own
//! DAGs folder, or one shared folder) take 300 requests dropped over their spools at once while a seeded chaos loop
//! kills -9 and restarts them; the end state is 300 backfills, each copy once in every folder,
//! every outcome on the host where its file was dropped. Local folders converge (a deleted or
//! truncated copy comes back; a cancelled backfill's copy leaves every folder). On PostgreSQL
//! with a real scheduler and a shared DAGs folder, a backfill submitted on one agent finishes
//! although the agent holding the leader claim is killed mid-way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{wait_for, Airflow, AirflowMajor, Daemon, WebhookSink};

const AGENTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];
const REQUESTS: usize = 300;

/// A small deterministic generator, so a chaos run can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

fn copies_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("backfill_user_dags"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn drop_into(spool: &Path, name: &str, body: &str) {
    let tmp = spool.join("incoming").join(format!(".{name}.part"));
    std::fs::write(&tmp, body).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, spool.join("incoming").join(name)).unwrap_or_else(|e| panic!("{e}"));
}

/// The `backfill=<id>` field of a log line.
fn backfill_field(line: &str) -> Option<&str> {
    let rest = &line[line.find("backfill=")? + "backfill=".len()..];
    Some(rest.split_whitespace().next().unwrap_or(rest))
}

fn dump(agents: &[Daemon]) -> String {
    agents
        .iter()
        .map(|d| {
            let log = d.all_logs();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            format!("--- {} ---\n{tail}\n", d.config.display())
        })
        .collect()
}

/// Three agents on `af`'s DB, with their own DAGs folders or (`shared`) one folder for all:
/// ingest under chaos, each copy written once per folder, repair of a deleted and a truncated
/// copy, removal of a cancelled and deleted backfill's copy everywhere.
fn three_agents(af: &Airflow, shared: bool) {
    af.reserialize();
    let seed: u64 = std::env::var("BACKFILLD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("chaos seed {seed} (BACKFILLD_CHAOS_SEED replays it)");
    let folders: Vec<PathBuf> = AGENTS
        .iter()
        .map(|a| {
            if shared {
                af.home.join("agents").join("shared-dags")
            } else {
                af.home.join("agents").join(a).join("dags")
            }
        })
        .collect();
    let cluster_keys = if shared {
        "dags_folder_shared = true\nlease_secs = 6\n"
    } else {
        "lease_secs = 6\n"
    };
    af.cli_ok(&["sync-perm"]);
    af.ensure_user("root", "Admin");
    let mut agents: Vec<Daemon> = AGENTS
        .iter()
        .zip(&folders)
        .map(|(name, folder)| {
            std::fs::create_dir_all(folder).unwrap_or_else(|e| panic!("{e}"));
            Daemon::start_agent(
                af,
                name,
                &format!("dags_folder = \"{}\"\n", folder.display()),
                &format!("{cluster_keys}\n[limits]\nmax_pending_per_user = 1000\nmax_active_backfills_per_user = 1000\n"),
            )
        })
        .collect();

    // 300 one-day backfills of `sales` (2021 dates: they all succeed), spread over the spools.
    let day0 = chrono::NaiveDate::from_ymd_opt(2021, 1, 1).unwrap_or_default();
    let mut dropped_on: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..REQUESTS {
        let day = day0 + chrono::Duration::days(i64::try_from(i).unwrap_or(0));
        let name = format!("req-{i:03}.toml");
        drop_into(
            &agents[i % 3].spool,
            &name,
            &format!("dag_id = \"sales\"\nstart = {day}\nend = {day}\n"),
        );
        dropped_on.insert(name, i % 3);
    }

    // Chaos: kill -9 and restart random agents every 2-4 s, at most 8 kills within 40 s.
    let mut rng = Lcg(seed);
    let chaos_until = Instant::now() + Duration::from_secs(40);
    let mut kills = 0;
    while Instant::now() < chaos_until && kills < 8 {
        std::thread::sleep(Duration::from_millis(2000 + rng.next(2000)));
        let victim = usize::try_from(rng.next(3)).unwrap_or(0);
        eprintln!("chaos: kill -9 {}", AGENTS[victim]);
        agents[victim].kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(rng.next(1500)));
        agents[victim].restart(&[]);
    }

    // Every request decided once, on the host it was dropped on, and accepted.
    let rows = wait_for("300 decided requests", Duration::from_secs(240), || {
        let rows = af.query("SELECT file_name, host, outcome, backfill_id FROM backfilld_request");
        (rows.len() >= REQUESTS).then_some(rows)
    });
    assert_eq!(rows.len(), REQUESTS, "one row per file: {rows:?}");
    for r in &rows {
        let file = r[0].as_str().unwrap_or_default();
        let host = r[1].as_str().unwrap_or_default();
        assert_eq!(r[2], "accepted", "{r:?}\n{}", dump(&agents));
        assert_eq!(host, AGENTS[dropped_on[file]], "{r:?}");
        let spool = &agents[dropped_on[file]].spool;
        let kept = std::fs::read_dir(spool.join("accepted"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with(&format!(".{file}"))
                    })
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(kept, 1, "{file}: kept once in accepted/ of its host");
    }
    let ids: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r[3].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), REQUESTS, "one backfill per request");
    assert_eq!(
        af.query_i64("SELECT COUNT(*) FROM backfilld_backfill"),
        i64::try_from(REQUESTS).unwrap_or(0)
    );

    // Every folder converges to the same 300 copies.
    let expected: BTreeSet<String> = ids.iter().map(|id| format!("{id}.py")).collect();
    let reference = wait_for(
        "every folder to hold the 300 copies",
        Duration::from_secs(120),
        || {
            let sets: Vec<BTreeMap<String, Vec<u8>>> =
                folders.iter().map(|f| copies_in(f)).collect();
            let complete = sets
                .iter()
                .all(|s| s.keys().cloned().collect::<BTreeSet<_>>() == expected);
            (complete && sets[1] == sets[0] && sets[2] == sets[0]).then(|| sets[0].clone())
        },
    );
    // Each copy written once per folder (the claim winner's first write, or another agent
    // restoring a missing one), even across the kills. A shared folder is one folder.
    let logs: Vec<String> = if shared {
        vec![agents.iter().map(Daemon::all_logs).collect()]
    } else {
        agents.iter().map(Daemon::all_logs).collect()
    };
    for log in &logs {
        let mut writes: BTreeMap<String, usize> = BTreeMap::new();
        for line in log
            .lines()
            .filter(|l| l.contains("DAG copy written") || l.contains("DAG copy restored"))
        {
            if let Some(id) = backfill_field(line) {
                *writes.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        let twice: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "written more than once: {twice:?}");
    }

    // One leader, shown by `backfillctl status`.
    let cluster = agents[1].ctl_json(&["status", "--json"]);
    let claims = cluster["claims"].as_array().cloned().unwrap_or_default();
    let leader = claims
        .iter()
        .find(|c| c["name"] == "leader")
        .cloned()
        .unwrap_or_default();
    assert!(
        AGENTS.contains(&leader["holder"].as_str().unwrap_or_default()),
        "{cluster}"
    );
    let text = String::from_utf8_lossy(&agents[0].ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("claim leader: held by agent-"), "{text}");

    // Local folders: a copy deleted by hand on one host and one truncated on another are
    // restored within one interval.
    let mut names = reference.keys();
    let gone = names.next().cloned().unwrap_or_default();
    let cut = names.next().cloned().unwrap_or_default();
    let gone_path = folders[1].join("backfill_user_dags").join(&gone);
    let cut_path = folders[2].join("backfill_user_dags").join(&cut);
    std::fs::remove_file(&gone_path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&cut_path, b"from airflow import DAG\n").unwrap_or_else(|e| panic!("{e}"));
    wait_for("both copies restored", Duration::from_secs(6), || {
        (std::fs::read(&gone_path).ok().as_ref() == reference.get(&gone)
            && std::fs::read(&cut_path).ok().as_ref() == reference.get(&cut))
        .then_some(())
    });

    // A cancelled (never registered) and then deleted backfill's copy leaves every folder.
    let victim = gone.trim_end_matches(".py").to_owned();
    let v = agents[2].ctl_json(&["cancel", &victim, "--json"]);
    assert_eq!(v["outcome"], "accepted", "{v}");
    let v = agents[0].ctl_json(&["delete", &victim, "--json"]);
    assert_eq!(v["outcome"], "accepted", "{v}");
    wait_for(
        "the copy gone from every folder",
        Duration::from_secs(30),
        || {
            folders
                .iter()
                .all(|f| !f.join("backfill_user_dags").join(&gone).exists())
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    for f in &folders {
        assert!(!f.join("backfill_user_dags").join(&gone).exists());
        assert_eq!(copies_in(f).len(), REQUESTS - 1);
    }
}

#[test]
fn three_agents_postgres() {
    let af = Airflow::postgres(AirflowMajor::V2, "cluster_pg");
    three_agents(&af, false);
    let af = Airflow::postgres(AirflowMajor::V2, "cluster_pg_shared");
    three_agents(&af, true);
}

#[test]
fn three_agents_mysql() {
    let af = Airflow::mysql(AirflowMajor::V2, "cluster_mysql");
    three_agents(&af, false);
    let af = Airflow::mysql(AirflowMajor::V2, "cluster_mysql_shared");
    three_agents(&af, true);
}

/// Shared DAGs folder, real scheduler on PostgreSQL: agent A leads, the request is dropped on
/// agent B, A is killed while the backfill runs; B takes the claim within the lease and the
/// backfill finishes; the copy was written once.
#[test]
fn leader_killed_mid_backfill_postgres() {
    let mut af = Airflow::postgres(AirflowMajor::V2, "cluster_leader_pg");
    af.start_scheduler();
    af.wait_parsed("lifecycle_demo", Duration::from_secs(420));
    af.cli_ok(&["sync-perm"]);
    af.ensure_user("root", "Admin");
    // Issue 21: both agents notify the same webhook; only the leader sends, once per event,
    // across the failover.
    let hooks = WebhookSink::start(0);
    let hp = hooks.port;
    let shared = format!(
        "dags_folder_shared = true\nlease_secs = 8\n\n[notifications]\nwebhooks = [\"http://127.0.0.1:{hp}/ops\"]\nallowed_webhook_prefixes = [\"http://127.0.0.1:{hp}/\"]\n"
    );
    let shared = shared.as_str();
    let mut a = Daemon::start_agent(&af, "agent-a", "", shared);
    wait_for("agent-a to lead", Duration::from_secs(30), || {
        let c = a.ctl_json(&["status", "--json"]);
        (c["leader"] == true).then_some(())
    });
    let b = Daemon::start_agent(&af, "agent-b", "", shared);
    let c = b.ctl_json(&["status", "--json"]);
    assert_eq!(c["leader"], false, "{c}");
    let out = b.ctl_json(&[
        "submit",
        "--dag",
        "lifecycle_demo",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-03",
        "--param",
        "sleep=8",
        "--json",
    ]);
    assert_eq!(out["outcome"], "accepted", "{out}");
    let id = out["backfill_id"].as_str().unwrap_or_default().to_owned();
    wait_for("the backfill to run", Duration::from_secs(300), || {
        let s = b.ctl_json(&["status", &id, "--json"]);
        (s["state"] == "running").then_some(())
    });
    a.kill9();
    let killed = Instant::now();
    let took = wait_for(
        "agent-b to take the leader claim",
        Duration::from_secs(30),
        || {
            let c = b.ctl_json(&["status", "--json"]);
            (c["leader"] == true).then(|| killed.elapsed())
        },
    );
    eprintln!("agent-b took over {took:?} after the kill");
    let s: Value = wait_for("the backfill to finish", Duration::from_secs(420), || {
        let s = b.ctl_json(&["status", &id, "--json"]);
        s["state"]
            .as_str()
            .is_some_and(|st| st == "success" || st == "failed")
            .then_some(s)
    });
    assert_eq!(
        s["state"],
        "success",
        "{s}\n{}{}",
        a.all_logs(),
        b.all_logs()
    );
    assert_eq!(s["dates_succeeded"], 3, "{s}");
    let logs = format!("{}{}", a.all_logs(), b.all_logs());
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("DAG copy written") || l.contains("DAG copy restored"))
            .count(),
        1,
        "one write of the copy in the shared folder"
    );
    let told = || -> Vec<String> {
        hooks
            .hooks()
            .iter()
            .filter(|h| h.path == "/ops" && h.body["backfill_id"] == id.as_str())
            .map(|h| h.body["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    wait_for("the success notification", Duration::from_secs(60), || {
        told().iter().any(|e| e == "success").then_some(())
    });
    // A few passes more on the surviving agent: nothing is sent again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(told(), ["success"], "{:#?}", hooks.hooks());
}
