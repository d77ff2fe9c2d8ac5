//! Container records and their queries.

use rusqlite::{Connection, OptionalExtension, Row, params};

use strata_core::Digest;

use super::{ContainerRecord, digest, strings, tolerant};
use crate::error::{Error, Result};

const CONTAINER_COLS: &str = "id, name, image, image_ref, layer, created, removing";

fn container_row(r: &Row<'_>) -> rusqlite::Result<ContainerRecord> {
    Ok(ContainerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        image: digest(r.get(2)?)?,
        image_ref: r.get(3)?,
        layer: r.get(4)?,
        created: r.get(5)?,
        removing: r.get::<_, i64>(6)? != 0,
    })
}

fn container_where(c: &Connection, cond: &str, key: &str) -> Result<Option<ContainerRecord>> {
    c.query_row(
        &format!("SELECT {CONTAINER_COLS} FROM containers WHERE {cond}"),
        [key],
        container_row,
    )
    .optional()
    .map_err(Error::db("read container"))
}

/// The container named `name`.
pub fn container_by_name(c: &Connection, name: &str) -> Result<Option<ContainerRecord>> {
    container_where(c, "name = ?1", name)
}

/// The container with ID `id`.
pub fn container(c: &Connection, id: &str) -> Result<Option<ContainerRecord>> {
    container_where(c, "id = ?1", id)
}

/// IDs of containers whose ID starts with `prefix` (at most two).
pub fn container_ids_with_prefix(c: &Connection, prefix: &str) -> Result<Vec<String>> {
    let mut st = c
        .prepare_cached("SELECT id FROM containers WHERE id GLOB ?1 LIMIT 2")
        .map_err(Error::db("find container"))?;
    let rows = st
        .query_map([format!("{prefix}*")], |r| r.get::<_, String>(0))
        .map_err(Error::db("find container"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("find container"))
}

/// Every container, newest first (within one second of `created`, the
/// one made last first: rowids grow with each insert).
pub fn containers(c: &Connection) -> Result<Vec<ContainerRecord>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {CONTAINER_COLS} FROM containers ORDER BY created DESC, rowid DESC"
        ))
        .map_err(Error::db("list containers"))?;
    let rows = st
        .query_map([], container_row)
        .map_err(Error::db("list containers"))?;
    tolerant("container", rows)
}

/// Names of the containers made from `image`.
pub fn containers_of_image(c: &Connection, image: &Digest) -> Result<Vec<String>> {
    strings(
        c,
        "SELECT name FROM containers WHERE image = ?1 ORDER BY name",
        image.as_str(),
    )
}

/// The container whose read-write layer is `layer`.
pub fn container_by_layer(c: &Connection, layer: &str) -> Result<Option<ContainerRecord>> {
    container_where(c, "layer = ?1", layer)
}

/// Record a container.
pub fn insert_container(c: &Connection, r: &ContainerRecord) -> Result<()> {
    c.execute(
        &format!("INSERT INTO containers ({CONTAINER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            r.id,
            r.name,
            r.image.as_str(),
            r.image_ref,
            r.layer,
            r.created,
            r.removing as i64
        ],
    )
    .map(|_| ())
    .map_err(Error::db("record container"))
}

/// Mark a container as being removed (or not any more).
pub fn set_container_removing(c: &Connection, id: &str, removing: bool) -> Result<()> {
    c.execute(
        "UPDATE containers SET removing = ?2 WHERE id = ?1",
        params![id, removing as i64],
    )
    .map(|_| ())
    .map_err(Error::db("mark container"))
}

/// Drop a container's record.
pub fn delete_container(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM containers WHERE id = ?1", [id])
        .map(|_| ())
        .map_err(Error::db("drop container record"))
}

/// The containers marked as being removed (what recovery finishes).
pub fn removing_containers(c: &Connection) -> Result<Vec<ContainerRecord>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {CONTAINER_COLS} FROM containers WHERE removing != 0"
        ))
        .map_err(Error::db("list containers"))?;
    let rows = st
        .query_map([], container_row)
        .map_err(Error::db("list containers"))?;
    tolerant("container", rows)
}
