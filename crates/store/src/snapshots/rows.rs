//! The `snapshots` table: one row per snapshot key, in one flat key space.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Kind, SnapshotInfo, State};
use crate::error::{Error, Result};

/// One row: the public info, the driver layer, and where its life cycle
/// is.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRow {
    pub info: SnapshotInfo,
    pub layer: String,
    pub state: State,
    /// While committing: the active key being committed.
    pub origin: Option<String>,
}

const COLUMNS: &str = "key, parent, kind, layer, created, updated, labels, state, origin";

/// A row as stored: the text columns still to be parsed.
struct Raw {
    info: SnapshotInfo,
    layer: String,
    kind: String,
    state: String,
    labels: String,
    origin: Option<String>,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        info: SnapshotInfo {
            key: r.get(0)?,
            parent: r.get(1)?,
            kind: Kind::View,
            created: r.get(4)?,
            updated: r.get(5)?,
            labels: BTreeMap::new(),
        },
        layer: r.get(3)?,
        kind: r.get(2)?,
        state: r.get(7)?,
        labels: r.get(6)?,
        origin: r.get(8)?,
    })
}

fn finish(raw: Raw) -> Result<SnapshotRow> {
    let mut info = raw.info;
    let bad = |what: &str| Error::Corrupt {
        what: format!("snapshot {}", info.key),
        reason: what.to_string(),
    };
    let kind = Kind::parse(&raw.kind).ok_or_else(|| bad("unknown kind"))?;
    let labels = serde_json::from_str(&raw.labels).map_err(|_| bad("labels are not a JSON map"))?;
    let state = State::parse(&raw.state).ok_or_else(|| bad("unknown state"))?;
    info.kind = kind;
    info.labels = labels;
    Ok(SnapshotRow {
        info,
        layer: raw.layer,
        state,
        origin: raw.origin,
    })
}

/// A prepared statement from the connection's cache (parsing the SQL
/// again costs more than the query it runs).
fn cached<'c>(
    c: &'c Connection,
    sql: &str,
    op: &'static str,
) -> Result<rusqlite::CachedStatement<'c>> {
    c.prepare_cached(sql).map_err(Error::db(op))
}

/// The row of `key`, in any state.
pub(crate) fn get(c: &Connection, key: &str) -> Result<Option<SnapshotRow>> {
    let q = format!("SELECT {COLUMNS} FROM snapshots WHERE key = ?1");
    cached(c, &q, "read snapshot")?
        .query_row([key], from_row)
        .optional()
        .map_err(Error::db("read snapshot"))?
        .map(finish)
        .transpose()
}

/// The row whose driver layer is `layer`.
pub(crate) fn by_layer(c: &Connection, layer: &str) -> Result<Option<SnapshotRow>> {
    let q = format!("SELECT {COLUMNS} FROM snapshots WHERE layer = ?1");
    cached(c, &q, "read snapshot")?
        .query_row([layer], from_row)
        .optional()
        .map_err(Error::db("read snapshot"))?
        .map(finish)
        .transpose()
}

/// Every row, by key.
pub(crate) fn all(c: &Connection) -> Result<Vec<SnapshotRow>> {
    select(c, "ORDER BY key")
}

/// The rows of operations that did not finish (state other than ready;
/// through their partial index, so no ORDER BY).
pub(crate) fn unfinished(c: &Connection) -> Result<Vec<SnapshotRow>> {
    select(c, "WHERE state != 'ready'")
}

fn select(c: &Connection, tail: &str) -> Result<Vec<SnapshotRow>> {
    let q = format!("SELECT {COLUMNS} FROM snapshots {tail}");
    let mut st = c.prepare(&q).map_err(Error::db("list snapshots"))?;
    let rows = st
        .query_map([], from_row)
        .map_err(Error::db("list snapshots"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("list snapshots"))?;
    rows.into_iter().map(finish).collect()
}

/// Keys of the snapshots whose parent is `key`.
pub(crate) fn children(c: &Connection, key: &str) -> Result<Vec<String>> {
    let mut st = cached(
        c,
        "SELECT key FROM snapshots WHERE parent = ?1 ORDER BY key LIMIT 4",
        "list snapshot children",
    )?;
    st.query_map([key], |r| r.get(0))
        .map_err(Error::db("list snapshot children"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("list snapshot children"))
}

pub(crate) fn insert(c: &Connection, r: &SnapshotRow) -> Result<()> {
    let labels = serde_json::to_string(&r.info.labels)
        .map_err(|e| Error::Internal(format!("labels to JSON: {e}")))?;
    cached(
        c,
        "INSERT INTO snapshots (key, parent, kind, layer, created, updated, labels, state, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        "record snapshot",
    )?
    .execute(params![
        r.info.key,
        r.info.parent,
        r.info.kind.as_str(),
        r.layer,
        r.info.created,
        r.info.updated,
        labels,
        r.state.as_str(),
        r.origin
    ])
    .map(|_| ())
    .map_err(Error::db("record snapshot"))
}

pub(crate) fn set_state(c: &Connection, key: &str, state: State) -> Result<()> {
    cached(
        c,
        "UPDATE snapshots SET state = ?2 WHERE key = ?1",
        "update snapshot",
    )?
    .execute(params![key, state.as_str()])
    .map(|_| ())
    .map_err(Error::db("update snapshot"))
}

pub(crate) fn set_labels(
    c: &Connection,
    key: &str,
    labels: &BTreeMap<String, String>,
    updated: i64,
) -> Result<()> {
    let labels = serde_json::to_string(labels)
        .map_err(|e| Error::Internal(format!("labels to JSON: {e}")))?;
    c.execute(
        "UPDATE snapshots SET labels = ?2, updated = ?3 WHERE key = ?1",
        params![key, labels, updated],
    )
    .map(|_| ())
    .map_err(Error::db("update snapshot"))
}

pub(crate) fn delete(c: &Connection, key: &str) -> Result<()> {
    cached(c, "DELETE FROM snapshots WHERE key = ?1", "drop snapshot")?
        .execute([key])
        .map(|_| ())
        .map_err(Error::db("drop snapshot"))
}

/// A new driver layer id for a snapshot: `s` and a number never used
/// before on this root (short, so that containerd's mount code fits deep
/// stacks into one page of `lowerdir=`).
pub(crate) fn next_layer(c: &Connection) -> Result<String> {
    let n: i64 = cached(
        c,
        "SELECT value FROM meta WHERE key = 'snapshot_seq'",
        "read snapshot sequence",
    )?
    .query_row([], |r| r.get::<_, String>(0))
    .optional()
    .map_err(Error::db("read snapshot sequence"))?
    .and_then(|s| s.parse().ok())
    .unwrap_or(1);
    cached(
        c,
        "INSERT INTO meta (key, value) VALUES ('snapshot_seq', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        "write snapshot sequence",
    )?
    .execute([(n + 1).to_string()])
    .map_err(Error::db("write snapshot sequence"))?;
    Ok(format!("s{n}"))
}

/// Is `id` of the form snapshot layers have?
pub(crate) fn is_snapshot_layer(id: &str) -> bool {
    id.len() > 1 && id.starts_with('s') && id[1..].bytes().all(|b| b.is_ascii_digit())
}
