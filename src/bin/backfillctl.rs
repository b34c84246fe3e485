//! `backfillctl`: the client. All logic is in `backfilld::ctl`.

use clap::Parser;

fn main() {
    let cli = backfilld::ctl::Cli::parse();
    match backfilld::ctl::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("backfillctl: {e:#}");
            std::process::exit(3);
        }
    }
}
