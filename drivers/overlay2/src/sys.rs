//! The one unsafe call of this crate.

use std::os::fd::BorrowedFd;

/// Give the calling thread its own working directory and change it to
/// `dir`, so that relative paths in a mount(2) option string (the short
/// links `l/...`) resolve there without touching the process's cwd.
/// Call only on a thread that exits right after its work.
pub fn private_cwd(dir: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: the hazard rustix documents for unshare is UnshareFlags::FILES
    // (threads no longer sharing a descriptor table). We pass only FS, which
    // separates this thread's cwd, root and umask from the other threads';
    // the descriptor table stays shared, so every fd stays valid everywhere.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS)? };
    rustix::process::fchdir(dir)?;
    Ok(())
}
