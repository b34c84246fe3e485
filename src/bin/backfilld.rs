//! `backfilld`: the daemon, in the foreground. All logic is in `backfilld::daemon`.

use std::path::PathBuf;

use clap::Parser;

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
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BACKFILLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = backfilld::config::Config::load(&args.config)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            if args.check_config {
                config.resolve_airflow()?;
                println!("{}: OK", args.config.display());
                return Ok(());
            }
            backfilld::daemon::run(config)
        });
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("backfilld: {e:#}");
        std::process::exit(1);
    }
}
