//! The one unsafe call of the binaries.

/// Restore the default action of SIGPIPE. Rust ignores it, which turns a
/// write to a closed pipe (`strata image inspect X | head -2`) into an
/// error that `println!` panics on; with the default action the process
/// ends quietly, as Docker's CLI (and every C tool) does.
#[allow(unsafe_code)]
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler (no Rust code runs
    // on the signal), is async-signal-safe, and is called once, first thing
    // in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
