//! Intents: driver layers being made for the store, which recovery
//! removes when their operation died before recording them.

use rusqlite::{Connection, params};

use crate::error::{Error, Result};

/// Say that driver layer `cache` is being made for the store (`op`).
pub fn add_intent(c: &Connection, cache: &str, op: &str) -> Result<()> {
    c.execute(
        "INSERT INTO intents (cache_id, op, started) VALUES (?1, ?2, ?3)",
        params![cache, op, crate::now()],
    )
    .map(|_| ())
    .map_err(Error::db("record intent"))
}

/// The layer is recorded, or gone again.
pub fn remove_intent(c: &Connection, cache: &str) -> Result<()> {
    c.execute("DELETE FROM intents WHERE cache_id = ?1", [cache])
        .map(|_| ())
        .map_err(Error::db("drop intent"))
}

/// Every intent: (driver layer, operation).
pub fn intents(c: &Connection) -> Result<Vec<(String, String)>> {
    let mut st = c
        .prepare("SELECT cache_id, op FROM intents ORDER BY cache_id")
        .map_err(Error::db("list intents"))?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(Error::db("list intents"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(Error::db("list intents"))
}
