//! The Strata binaries' library: the `strata` command line ([`cli`]) and
//! the benchmarks of `driver-test bench` ([`bench`](mod@bench)). The `strata` and
//! `driver-test` binaries in `src/bin` are thin mains over it. Runtimes
//! link the `strata` facade crate instead, which carries none of this.

// The CLI and the bench touch their own files (outputs, workloads, scratch
// roots) and mounted views the way a user would; layer contents are the
// driver's business.
#![allow(clippy::disallowed_methods)]
#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod sys;
