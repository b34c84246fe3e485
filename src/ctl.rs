//! `backfillctl`: submit requests into the spool and read backfills from the daemon.
//!
//! `submit` is a convenience, not a security boundary: it writes the same TOML file a user
//! could write, with the publishing protocol the daemon expects (hidden temp name, fsync,
//! rename into `incoming/`), then asks the daemon for the outcome.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::config::Config;
use crate::control::{
    self, BackfillView, ControlRequest, ControlResponse, ListFilter, RequestView,
};
use crate::spool::INCOMING;
use crate::state::BackfillState;
use publish::*;
use show::*;

mod publish;
mod show;

/// Command line of `backfillctl`.
#[derive(Debug, Parser)]
#[command(
    name = "backfillctl",
    version,
    about = "Submit and follow Airflow backfills run by backfilld"
)]
pub struct Cli {
    /// The daemon's configuration file.
    #[arg(long, global = true, env = "BACKFILLD_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `backfillctl` subcommands.
// Parsed once per process: the size of the `submit` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Write a request into the spool and wait for the daemon's decision.
    Submit(SubmitArgs),
    /// Show what became of a request file you dropped into the spool yourself.
    Outcome {
        /// The file's name in `incoming/` (e.g. `sales-jan.toml`).
        file_name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List backfills (not deleted, unless --all).
    List {
        /// Only backfills of this DAG.
        #[arg(long = "dag")]
        dag_id: Option<String>,
        /// Only backfills in this state (awaiting_approval, submitted, queued, running, paused,
        /// success, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only backfills submitted at or after this time (2024-01-31 or 2024-01-31T06:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Include deleted backfills.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Backfills asked from the daemon at a time (at most 1000); the list is printed
        /// page by page as it comes.
        #[arg(long, default_value_t = crate::paging::DEFAULT_LIMIT)]
        page_size: usize,
    },
    /// Cancel a backfill: withdrawn before its DAG copy exists, else its unfinished runs fail.
    Cancel(OperateArgs),
    /// Pause a backfill's DAG copy: running tasks finish, no new ones start.
    Pause(OperateArgs),
    /// Resume a paused backfill.
    Resume(OperateArgs),
    /// Delete a finished or paused backfill: its copy and Airflow's rows for it go; the record
    /// stays (`list --all`).
    Delete(OperateArgs),
    /// Run the failed dates of a failed backfill again, as a new backfill.
    Retry(OperateArgs),
    /// Approve a backfill awaiting approval (`[approval]`): needs an approver role and edit
    /// rights on the DAG; the requester cannot approve their own.
    Approve(OperateArgs),
    /// Reject a backfill awaiting approval, with a reason the requester sees.
    Reject(RejectArgs),
    /// The audit log (needs can_read on Backfills, like list).
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Take over the backfills of the seed plugin (li-airflow-backfill-plugin) from its
    /// `custom_backfill` table in the same metadata DB. Pause the plugin's system DAGs first.
    /// The import runs in the daemon as a job, in batches, with a progress bar here; Ctrl-C
    /// leaves it running (`--attach` follows it again), a daemon restart resumes it.
    ImportSeed {
        /// Report what would be imported; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the running (or last) import job; start none.
        #[arg(long, conflicts_with = "dry_run")]
        attach: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// backfilld's Airflow plugin: links from Airflow's UI (a "Backfills" menu entry, a
    /// "Backfill this DAG" link on every DAG page) to backfilld's web UI at `[backfilld]
    /// ui_url` of airflow.cfg. Installed only by this command.
    AirflowPlugin {
        /// What to do with it.
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Show one backfill's state and progress; without an id, the agents on this metadata DB
    /// and which one holds which claim.
    Status {
        /// Backfill id.
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Follow until the backfill finishes.
        #[arg(long)]
        watch: bool,
    },
}

/// `backfillctl airflow-plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write the plugin into Airflow's plugins folder (atomically; again is a no-op).
    Install {
        /// The folder (default: Airflow's `[core] plugins_folder`, as Airflow resolves it).
        #[arg(long)]
        plugins_folder: Option<PathBuf>,
    },
    /// Remove the plugin from Airflow's plugins folder.
    Uninstall {
        /// The folder (default: Airflow's `[core] plugins_folder`, as Airflow resolves it).
        #[arg(long)]
        plugins_folder: Option<PathBuf>,
    },
}

/// `backfillctl audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; exit 1 and name the first broken record if any.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of the life-cycle commands: they write `action = "<command>"`, `id = ID` into
/// the spool and wait for the decision, like `submit`.
#[derive(Debug, clap::Args)]
pub struct OperateArgs {
    /// Backfill id.
    pub id: String,
    /// Seconds to wait for the decision.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `reject`: `operate`'s and the reason.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The life-cycle arguments (id, timeout, json).
    #[command(flatten)]
    pub operate: OperateArgs,
    /// Why it is rejected (shown to the requester in the backfill's status).
    #[arg(long)]
    pub reason: String,
}

/// Arguments of `submit`; each maps to a request-file key.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The DAG to backfill.
    #[arg(long = "dag")]
    pub dag_id: String,
    /// First logical date: 2024-01-01 (00:00 UTC) or 2024-01-01T06:00:00Z.
    #[arg(long)]
    pub start: String,
    /// Last logical date (inclusive), same forms as --start.
    #[arg(long)]
    pub end: String,
    /// Why this backfill exists.
    #[arg(long)]
    pub description: Option<String>,
    /// Concurrent runs of the backfill.
    #[arg(long)]
    pub max_active_runs: Option<i64>,
    /// Turn order when a throttle budget is short: -10..=10, higher first (default 0).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i64>,
    /// A param override, KEY=VALUE (VALUE is read as TOML when it parses, else as a string).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Accept a range that overlaps another active backfill of the DAG.
    #[arg(long)]
    pub ignore_overlap: bool,
    /// Validate and print the dates that would run; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the DAG copy only from this time on (2024-01-31T06:00:00Z); until then the
    /// backfill waits as `submitted` and can be cancelled without a copy ever being written.
    #[arg(long = "at", value_name = "TIME")]
    pub scheduled_at: Option<String>,
    /// Delete the backfill this many days after it finishes (0: at once).
    #[arg(long)]
    pub delete_after_days: Option<i64>,
    /// Dates the origin DAG already ran: none (skip them all), failed (re-run only failed
    /// ones) or completed (run them all; the default).
    #[arg(long, value_name = "MODE")]
    pub reprocess: Option<String>,
    /// Run the newest logical date first (backfilld names each run in turn).
    #[arg(long)]
    pub backwards: bool,
    /// Run only the tasks whose id this regex is found in (as `airflow dags backfill -t`);
    /// repeat for more patterns.
    #[arg(long = "task", value_name = "REGEX")]
    pub tasks: Vec<String>,
    /// With --task: also run the upstream tasks of the selected ones.
    #[arg(long)]
    pub include_upstream: bool,
    /// With --task: also run the downstream tasks of the selected ones.
    #[arg(long)]
    pub include_downstream: bool,
    /// Let the copy emit dataset/asset events (triggering the DAGs scheduled on them).
    #[arg(long, conflicts_with = "no_asset_events")]
    pub emit_asset_events: bool,
    /// Do not let the copy emit dataset/asset events (overrides the `[copies]` default).
    #[arg(long)]
    pub no_asset_events: bool,
    /// Write the DAG copy only once this backfill succeeded (fail if it does not); repeat
    /// for more.
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    /// Tell this recipient when the backfill finishes, is cancelled or waits for approval:
    /// mailto:ADDRESS, an https:// webhook URL, or slack:URL; repeat for more.
    #[arg(long = "notify", value_name = "RECIPIENT")]
    pub notify: Vec<String>,
    /// Return once the file is in the spool, without waiting for the decision.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the decision.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `backfillctl`; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    if let CtlCommand::AirflowPlugin { command } = &cli.command {
        return airflow_plugin(&cli.config, command);
    }
    let config = Config::load(&cli.config)?;
    let socket = config.socket_path();
    match cli.command {
        CtlCommand::Submit(args) => submit(&config, &socket, args),
        CtlCommand::Cancel(a) => operate(&config, &socket, "cancel", a),
        CtlCommand::Pause(a) => operate(&config, &socket, "pause", a),
        CtlCommand::Resume(a) => operate(&config, &socket, "resume", a),
        CtlCommand::Delete(a) => operate(&config, &socket, "delete", a),
        CtlCommand::Retry(a) => operate(&config, &socket, "retry", a),
        CtlCommand::Approve(a) => operate(&config, &socket, "approve", a),
        CtlCommand::Reject(a) => {
            operate_with(&config, &socket, "reject", a.operate, Some(&a.reason))
        }
        CtlCommand::List {
            dag_id,
            state,
            since,
            all,
            json,
            page_size,
        } => {
            let state = match state {
                None => None,
                Some(s) => Some(BackfillState::parse(&s).with_context(|| {
                    format!("--state {s:?}: use awaiting_approval, submitted, queued, running, paused, success, failed or cancelled")
                })?),
            };
            let since = match since {
                None => None,
                Some(s) => Some(parse_instant("since", &s)?),
            };
            let filter = ListFilter {
                dag: dag_id,
                state,
                since,
                all,
            };
            list(&socket, filter, page_size, json)?;
            Ok(0)
        }
        CtlCommand::Status {
            id: Some(id),
            json,
            watch,
        } => status(&socket, &id, json, watch),
        CtlCommand::Status { id: None, json, .. } => cluster(&socket, json),
        CtlCommand::AirflowPlugin { command } => airflow_plugin(&cli.config, &command),
        CtlCommand::Audit {
            command: AuditCommand::Verify { json },
        } => audit_verify(&socket, json),
        CtlCommand::ImportSeed {
            dry_run,
            attach,
            json,
        } => match call(&socket, ControlRequest::ImportSeed { dry_run, attach })? {
            ControlResponse::SeedImport { report } => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_seed_report(&report);
                }
                Ok(0)
            }
            ControlResponse::SeedImportJob { job, .. } => follow_import(&socket, job, json),
            other => bail!(unexpected(other)),
        },
        CtlCommand::Outcome { file_name, json } => {
            match call(
                &socket,
                ControlRequest::Outcome {
                    file_name: file_name.clone(),
                },
            )? {
                ControlResponse::Decided { request } => Ok(print_outcome(&request, json)?),
                ControlResponse::Pending => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"file_name": file_name, "outcome": "pending"})
                        );
                    } else {
                        println!("{file_name}: not decided yet (or not dropped by you)");
                    }
                    Ok(2)
                }
                other => bail!(unexpected(other)),
            }
        }
    }
}

/// `backfillctl list`: page after page from the daemon, each printed as it comes (a table,
/// or one JSON array written item by item), so neither side holds the whole list.
fn list(socket: &Path, filter: ListFilter, page_size: usize, json: bool) -> anyhow::Result<()> {
    if page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut array = JsonArray::default();
    if !json {
        write_table_header(&mut out)?;
    }
    let mut cursor: Option<String> = None;
    loop {
        let request = ControlRequest::List {
            filter: filter.clone(),
            limit: Some(page_size),
            cursor: cursor.clone(),
        };
        let (backfills, next) = match call(socket, request)? {
            ControlResponse::Backfills { backfills, next } => (backfills, next),
            other => bail!(unexpected(other)),
        };
        for b in &backfills {
            if json {
                array.item(&mut out, b)?;
            } else {
                write_table_row(&mut out, b)?;
            }
        }
        out.flush()?;
        match next {
            Some(n) if cursor.as_ref() == Some(&n) => {
                bail!("backfilld answered the same page twice; stopping")
            }
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    if json {
        array.finish(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// `backfillctl audit verify`: 0 when the chain is intact, 1 when broken.
fn audit_verify(socket: &Path, json: bool) -> anyhow::Result<i32> {
    let report = match call(socket, ControlRequest::AuditVerify)? {
        ControlResponse::AuditReport { report } => report,
        other => bail!(unexpected(other)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report.broken {
            None => println!(
                "audit chain intact: {} records, head {}",
                report.records, report.head
            ),
            Some(b) => println!(
                "audit chain BROKEN at record {} ({}): {}",
                b.id, b.at, b.message
            ),
        }
    }
    Ok(if report.broken.is_some() { 1 } else { 0 })
}

fn call(socket: &Path, request: ControlRequest) -> anyhow::Result<ControlResponse> {
    Ok(control::call(socket, &request, Duration::from_secs(90))?)
}

fn unexpected(r: ControlResponse) -> String {
    match r {
        ControlResponse::Error { message } => message,
        other => format!("unexpected answer from backfilld: {other:?}"),
    }
}

/// `airflow-plugin install|uninstall`: the folder named, else Airflow's (from the config's
/// `[airflow] home`).
fn airflow_plugin(config_path: &Path, command: &PluginCommand) -> anyhow::Result<i32> {
    use crate::airflow_plugin::{install, uninstall, Installed};
    let (PluginCommand::Install { plugins_folder } | PluginCommand::Uninstall { plugins_folder }) =
        command;
    let folder = match plugins_folder {
        Some(f) => f.clone(),
        None => Config::load(config_path)?.resolve_plugins_folder()?,
    };
    match command {
        PluginCommand::Install { .. } => {
            match install(&folder)? {
                Installed::Written(p) => println!("installed {}", p.display()),
                Installed::Unchanged(p) => println!("already installed: {}", p.display()),
            }
            println!(
                "Airflow shows its links once [backfilld] ui_url is set in airflow.cfg \
                 (e.g. ui_url = /backfills, backfilld's [http] base_path behind the same proxy) \
                 and its webserver (2.x) or api-server (3.x) restarted"
            );
        }
        PluginCommand::Uninstall { .. } => {
            if uninstall(&folder)? {
                println!(
                    "removed {}",
                    folder.join(crate::airflow_plugin::FILE_NAME).display()
                );
            } else {
                println!("not installed in {}", folder.display());
            }
        }
    }
    Ok(0)
}

fn status(socket: &Path, id: &str, json: bool, watch: bool) -> anyhow::Result<i32> {
    let fetch = || -> anyhow::Result<BackfillView> {
        match call(socket, ControlRequest::Status { id: id.to_owned() })? {
            ControlResponse::Backfill { backfill } => Ok(*backfill),
            other => bail!(unexpected(other)),
        }
    };
    let mut b = fetch()?;
    if watch && !json {
        let bar = indicatif::ProgressBar::new(u64::from(b.dates_total));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} dates")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        loop {
            bar.set_length(u64::from(b.dates_total));
            bar.set_position(u64::from(b.dates_succeeded + b.dates_failed));
            bar.set_message(b.state.to_string());
            if b.state.is_terminal() {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
            b = fetch()?;
        }
        bar.finish();
    } else if watch {
        while !b.state.is_terminal() {
            std::thread::sleep(Duration::from_secs(2));
            b = fetch()?;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print_status(&b);
    }
    Ok(0)
}

fn cluster(socket: &Path, json: bool) -> anyhow::Result<i32> {
    let answer = call(socket, ControlRequest::Cluster)?;
    let ControlResponse::Cluster {
        host_id,
        leader,
        dags_folder_shared,
        claims,
    } = &answer
    else {
        bail!(unexpected(answer));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    println!(
        "this agent: {host_id} ({}); DAGs folder {}",
        if *leader { "leader" } else { "follower" },
        if *dags_folder_shared {
            "shared by the agents"
        } else {
            "of its own"
        }
    );
    if claims.is_empty() {
        println!("no claim taken yet");
    }
    for c in claims {
        let left = if c.expires_in_ms >= 0 {
            format!("expires in {:.1} s", c.expires_in_ms as f64 / 1000.0)
        } else {
            "expired".to_owned()
        };
        println!(
            "claim {}: held by {} (token {}, {left}{})",
            c.name,
            if c.holder.is_empty() {
                "nobody"
            } else {
                &c.holder
            },
            c.token,
            c.acquired_at
                .as_deref()
                .map(|t| format!(", since {t}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

/// Follow an import job with a progress bar until it ends, then print its report (with
/// `json`, the report with the job's final progress under `job`). 0 when it finished.
fn follow_import(
    socket: &Path,
    mut job: crate::seedjob::ImportJob,
    json: bool,
) -> anyhow::Result<i32> {
    use crate::seedjob::JobState;
    let fetch = |id: i64, report: bool| -> anyhow::Result<_> {
        match call(
            socket,
            ControlRequest::ImportSeedStatus {
                job: Some(id),
                report,
            },
        )? {
            ControlResponse::SeedImportJob { job, report } => Ok((job, report)),
            other => bail!(unexpected(other)),
        }
    };
    let bar = indicatif::ProgressBar::new(job.total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "import job {prefix} [{bar:40}] {pos}/{len} seed backfills {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(job.id.to_string());
    if !json {
        eprintln!(
            "seed import job {}: Ctrl-C leaves it running (backfillctl import-seed --attach follows it again)",
            job.id
        );
    }
    while job.state == JobState::Running {
        bar.set_length(job.total);
        bar.set_position(job.done);
        bar.set_message(format!(
            "({} imported, {} skipped, {} refused)",
            job.imported, job.skipped, job.refused
        ));
        std::thread::sleep(Duration::from_millis(500));
        job = fetch(job.id, false)?.0;
    }
    bar.set_length(job.total);
    bar.set_position(job.done);
    bar.finish_and_clear();
    let (job, report) = fetch(job.id, true)?;
    let report = report.map(|r| *r).unwrap_or_default();
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("job".to_owned(), serde_json::to_value(&job)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let skipped = crate::seed::SeedReport {
            imported: Vec::new(),
            ..report
        };
        if !skipped.skipped.is_empty() {
            print_seed_report(&skipped);
        }
        println!("{}", job.summary());
    }
    Ok(if job.state == JobState::Finished {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests;
