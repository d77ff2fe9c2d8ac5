//! The `strata` command line: thin over the library.

use clap::Parser;

fn main() {
    let cli = strata::cli::Cli::parse();
    strata::cli::init_logging(cli.verbose);
    if let Err(e) = strata::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
