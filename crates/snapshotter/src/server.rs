//! The daemon's socket and its life: bind (over a stale socket, never over
//! anything else), serve until SIGINT or SIGTERM, remove the socket.

// The socket's path is the operator's choice, not layer content: it is
// handled by path like any daemon's socket.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::Mode;
use strata_store::Store;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::error::{Error, Result};
use crate::proto::snapshots::snapshots_server::SnapshotsServer;
use crate::service::Service;

/// A socket bound at a path, removed again when dropped (if it is still
/// the one we made).
#[derive(Debug)]
pub struct Socket {
    path: PathBuf,
    ino: u64,
    listener: Option<UnixListener>,
}

fn socket_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Socket {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |err| Error::Io { op, path, err }
}

impl Socket {
    /// Bind `path`, mode 0600. A socket left by a dead daemon is replaced;
    /// a live one, or any other kind of file, is refused.
    pub fn bind(path: &Path) -> Result<Socket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            strata_core::fsx::mkdir_p(dir, 0o700).map_err(io("create", dir))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(socket_err(path, "another process is serving on it"));
                }
                tracing::info!(socket = %path.display(), "replacing a stale socket");
                std::fs::remove_file(path).map_err(io("remove stale socket", path))?;
            }
            Ok(_) => {
                return Err(socket_err(
                    path,
                    "exists and is not a socket; not replacing it",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("stat", path)(e)),
        }
        // the socket is made 0600 from the start: no window in which
        // others could connect
        let old = rustix::process::umask(Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(io("bind", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", path))?;
        let ino = std::fs::symlink_metadata(path)
            .map_err(io("stat", path))?
            .ino();
        Ok(Socket {
            path: path.to_path_buf(),
            ino,
            listener: Some(listener),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take(&mut self) -> Result<tokio::net::UnixListener> {
        let l = self
            .listener
            .take()
            .ok_or_else(|| Error::Internal("the socket is served twice".into()))?;
        l.set_nonblocking(true)
            .map_err(io("set non-blocking", &self.path))?;
        tokio::net::UnixListener::from_std(l).map_err(io("listen", &self.path))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot catch SIGTERM/SIGINT; serving until killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Serve containerd's Snapshots service over `store` on `socket` until
/// SIGINT or SIGTERM; in-flight calls finish first.
pub async fn serve(
    store: Arc<Store>,
    fetcher: Option<crate::fetch::Fetcher>,
    mut socket: Socket,
) -> Result<()> {
    let incoming = UnixListenerStream::new(socket.take()?);
    tracing::info!(socket = %socket.path().display(), "serving containerd.services.snapshots.v1");
    tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service::new(store, fetcher)))
        .serve_with_incoming_shutdown(incoming, stop_signal())
        .await
        .map_err(|e| socket_err(socket.path(), e.to_string()))?;
    drop(socket);
    Ok(())
}
