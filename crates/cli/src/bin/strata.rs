//! The `strata` command line: thin over the library.

// The CLI and the bench touch their own files (outputs, workloads, scratch
// roots) and mounted views the way a user would; layer contents are the
// driver's business.
#![allow(clippy::disallowed_methods)]

use clap::Parser;

fn main() {
    let cli = strata_cli::cli::Cli::parse();
    strata_cli::cli::init_logging(cli.verbose);
    if let Err(e) = strata_cli::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
