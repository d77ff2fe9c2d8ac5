//! The store's metadata: one SQLite database (`ROOT/store/store.db`),
//! shared by every process on the root.
//!
//! SQLite because many processes use one root at once (CLI invocations,
//! the snapshotter daemon): it gives them transactions across processes
//! (WAL mode, a busy timeout instead of failures), indexes, and durability
//! per transaction (`synchronous=FULL`). A pure-Rust alternative (redb)
//! locks its file for one process at a time.
//!
//! Each store operation is one transaction. Work on the driver is
//! bracketed: a layer being made has an `intents` row first (recovery
//! removes the driver layer if the operation died); a layer or container
//! being removed is marked `removing` first and its row goes only after the
//! driver removed it (a refusal clears the mark, a crash leaves it for
//! recovery to finish). So a record is never lost while the driver still
//! has the layer, and a driver layer is never left unclaimed.
//!
//! Schema versions: 2 (this: snapshots and blob sources added), 1 (images, containers,
//! layers), migrated on open from the JSON files of earlier roots (see
//! `migrate`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT,
    cache_id TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    tar_size INTEGER NOT NULL,
    created INTEGER NOT NULL,
    blob_digest TEXT,
    blob_media_type TEXT,
    blob_size INTEGER,
    removing INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE INDEX IF NOT EXISTS layers_blob ON layers(blob_digest);
CREATE INDEX IF NOT EXISTS layers_removing ON layers(removing) WHERE removing != 0;
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest TEXT,
    loaded INTEGER NOT NULL,
    created INTEGER,
    created_text TEXT,
    size INTEGER NOT NULL,
    os TEXT,
    architecture TEXT
);
CREATE INDEX IF NOT EXISTS images_manifest ON images(manifest);
CREATE TABLE IF NOT EXISTS image_layers (
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    chain_id TEXT NOT NULL,
    PRIMARY KEY (image, pos)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image);
CREATE TABLE IF NOT EXISTS repo_digests (
    name TEXT NOT NULL,
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (name, image)
);
CREATE INDEX IF NOT EXISTS repo_digests_image ON repo_digests(image);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    layer TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    removing INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS containers_image ON containers(image);
CREATE INDEX IF NOT EXISTS containers_removing ON containers(removing) WHERE removing != 0;
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    parent TEXT,
    kind TEXT NOT NULL,
    layer TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE INDEX IF NOT EXISTS snapshots_unfinished ON snapshots(state) WHERE state != 'ready';
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repository)
);
CREATE TABLE IF NOT EXISTS intents (
    cache_id TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    started INTEGER NOT NULL
);
"#;

/// How long a process waits for another one's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `f` again while SQLite answers "busy", up to [`BUSY_TIMEOUT`].
///
/// The busy timeout does not cover everything: SQLite returns
/// `SQLITE_BUSY` at once, without calling the busy handler, where waiting
/// could deadlock. Setting WAL mode does this when several processes open
/// a new database at once (concurrent loads into a new root did, about one
/// run in five). Nothing is held between tries, so trying again is safe.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                tracing::debug!("store database busy ({e}); trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// The database of one store.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Open (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(Error::db("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(Error::db("busy timeout"))?;
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(Error::db("WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(Error::db("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(Error::db("foreign keys"))?;
        let db = Db {
            conn: Mutex::new(conn),
        };
        db.write("create schema", |tx| {
            tx.execute_batch(SCHEMA).map_err(Error::db("create schema"))?;
            let v: Option<i64> = tx
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get::<_, String>(0)
                })
                .ok()
                .and_then(|s| s.parse().ok());
            match v {
                Some(v) if v > SCHEMA_VERSION => Err(Error::Corrupt {
                    what: "store database".into(),
                    reason: format!(
                        "schema version {v} is newer than this build's {SCHEMA_VERSION}; use a newer strata"
                    ),
                }),
                Some(v) if v == SCHEMA_VERSION => Ok(()),
                // older versions only lack tables, which were created above
                _ => tx
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        [SCHEMA_VERSION.to_string()],
                    )
                    .map(|_| ())
                    .map_err(Error::db("write schema version")),
            }
        })?;
        Ok(db)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::Internal("a thread panicked holding the database".into()))
    }

    /// Run `f` in a write transaction (taken up front, so that two writers
    /// queue instead of failing); commits when `f` returns `Ok`.
    pub fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.lock()?;
        Self::write_in(&mut c, op, f)
    }

    fn write_in<T>(
        c: &mut Connection,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::db(op))?;
        let v = f(&tx)?;
        faults::in_transaction(faults::Phase::BeforeCommit);
        tx.commit().map_err(Error::db(op))?;
        faults::in_transaction(faults::Phase::AfterCommit);
        Ok(v)
    }

    /// Like [`Db::write`], but the commit is not synced to disk
    /// (`synchronous=NORMAL` in WAL mode): it survives the process being
    /// killed, and a power loss may lose it until the next synced commit,
    /// which persists it with its own. Only for a transaction whose loss
    /// recovery undoes cleanly: a snapshot's `creating` -> `ready` flip
    /// (the `creating` row was synced before the driver acted; lost, the
    /// snapshot is rolled back as one that never finished).
    pub fn write_lazy<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.lock()?;
        c.pragma_update(None, "synchronous", "NORMAL")
            .map_err(Error::db(op))?;
        let r = Self::write_in(&mut c, op, f);
        let back = c
            .pragma_update(None, "synchronous", "FULL")
            .map_err(Error::db(op));
        let v = r?;
        back?;
        Ok(v)
    }

    /// Run `f` in a read transaction (one consistent snapshot).
    pub fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.lock()?;
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(Error::db(op))?;
        let v = f(&tx)?;
        tx.finish().map_err(Error::db(op))?;
        Ok(v)
    }
}

/// A test hook for crash-consistency tests: `STRATA_TEST_KILL_IN_TX=N`
/// kills the process (SIGKILL) inside its N-th write transaction, after
/// the transaction's statements and before its commit;
/// `STRATA_TEST_KILL_IN_TX=N:after` kills it right after that commit. The
/// harness (tests/reliability.rs) walks N over every transaction of an
/// operation and checks the store after each kill. Unset, it costs one
/// relaxed atomic increment per write transaction.
mod faults {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Phase {
        BeforeCommit,
        AfterCommit,
    }

    static COUNT: AtomicU64 = AtomicU64::new(0);
    static TARGET: OnceLock<Option<(u64, Phase)>> = OnceLock::new();

    fn target() -> Option<(u64, Phase)> {
        *TARGET.get_or_init(|| {
            let v = std::env::var("STRATA_TEST_KILL_IN_TX").ok()?;
            let (n, phase) = match v.split_once(':') {
                Some((n, "after")) => (n, Phase::AfterCommit),
                Some(_) => return None,
                None => (v.as_str(), Phase::BeforeCommit),
            };
            Some((n.parse().ok()?, phase))
        })
    }

    pub(super) fn in_transaction(phase: Phase) {
        let Some((n, want)) = target() else { return };
        let k = if phase == Phase::BeforeCommit {
            COUNT.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            COUNT.load(Ordering::Relaxed)
        };
        if k == n && phase == want {
            tracing::warn!(
                transaction = n,
                ?phase,
                "STRATA_TEST_KILL_IN_TX: killing this process"
            );
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const CHILD: &str = "STRATA_DB_TEST_CHILD";
    const PROCS: usize = 4;
    const ROUNDS: u64 = 25;
    const ROUND_MS: u64 = 40;

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    /// One process's share: in each round, at the same moment as the
    /// others, open a new database and write to it.
    fn child(dir: &Path, start_ms: u64) -> Result<()> {
        for n in 0..ROUNDS {
            let at = start_ms + n * ROUND_MS;
            std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
            let db = Db::open(&dir.join(format!("{n}.db")))?;
            db.write("test", |tx| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, 'x')",
                    [format!("p{}", std::process::id())],
                )
                .map_err(Error::db("test"))
            })?;
        }
        Ok(())
    }

    /// Processes creating one database at the same moment, as loads into a
    /// new root do: SQLite answers one of them "busy" without waiting
    /// while another switches the new database to WAL. Every open must
    /// succeed. (Processes, not threads: connections of one process share
    /// their locks.)
    #[test]
    fn processes_creating_one_database_at_once_all_succeed() {
        if let Ok(spec) = std::env::var(CHILD) {
            let (dir, start) = spec.split_once('\n').unwrap();
            child(Path::new(dir), start.parse().unwrap()).unwrap();
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let start = now_ms() + 300;
        let exe = std::env::current_exe().unwrap();
        let name = "db::tests::processes_creating_one_database_at_once_all_succeed";
        let kids: Vec<_> = (0..PROCS)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--exact", name, "--nocapture"])
                    .env(CHILD, format!("{}\n{start}", t.path().display()))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "a process failed: {err}");
        }
        for n in 0..ROUNDS {
            let db = Db::open(&t.path().join(format!("{n}.db"))).unwrap();
            let rows: i64 = db
                .read("count", |tx| {
                    tx.query_row("SELECT count(*) FROM meta WHERE key LIKE 'p%'", [], |r| {
                        r.get(0)
                    })
                    .map_err(Error::db("count"))
                })
                .unwrap();
            assert_eq!(rows, PROCS as i64, "database {n}");
        }
    }
}
