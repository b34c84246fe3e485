//! `backfilld`: the daemon, in the foreground. All logic is in `backfilld::daemon`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Managed, restart-proof backfills for Apache Airflow.
#[derive(Parser)]
#[command(name = "backfilld", version)]
struct Args {
    /// Configuration file.
    #[arg(long, env = "BACKFILLD_CONFIG", default_value = backfilld::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Run one full pass (ingest the spool, reconcile) and exit.
    #[arg(long)]
    once: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines; without timestamps or colours under systemd (the journal adds them).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

fn init_logging(format: LogFormat, configured: Option<&str>) {
    // Level: BACKFILLD_LOG, else RUST_LOG, else [log] level, else info.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKFILLD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(configured.unwrap_or("info")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            builder.without_time().with_ansi(false).init()
        }
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() {
    let args = Args::parse();
    let config = backfilld::config::Config::load(&args.config);
    let level = config.as_ref().ok().and_then(|c| c.log.level.clone());
    init_logging(args.log_format, level.as_deref());
    if let Some(warning) = backfilld::config::exposed_secret_warning(&args.config) {
        tracing::warn!("{warning}");
    }
    let result = config.map_err(anyhow::Error::from).and_then(|config| {
        if args.check_config {
            config.resolve_airflow()?;
            println!("{}: OK", args.config.display());
            return Ok(());
        }
        if args.once {
            return backfilld::daemon::run_once(config);
        }
        backfilld::daemon::run(&args.config, config)
    });
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
