//! The `strata` command line: thin over the library.

use clap::Parser;

fn main() {
    strata_cli::sys::default_sigpipe();
    let cli = strata_cli::cli::Cli::parse();
    strata_cli::cli::init_logging(cli.verbose);
    if let Err(e) = strata_cli::cli::run(cli) {
        eprintln!("strata: error: {e:#}");
        let usage = e.downcast_ref::<strata_cli::cli::Usage>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
