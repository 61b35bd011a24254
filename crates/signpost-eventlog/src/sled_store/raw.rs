//! **Low-level, offline access to a sled store's bytes. Not for normal use.**
//!
//! These functions exist for tamper-evidence tests and forensics: they change stored events
//! behind the log's back, exactly what [`verify_chain`](crate::verify_chain) must detect. The
//! server never calls them. Each one opens the directory itself, so it only works while no
//! [`SledEventStore`](super::SledEventStore) holds the directory open (sled locks it): stop the
//! server first.

use std::path::Path;

use super::keys;
use crate::error::LogError;
use crate::types::Position;

/// Opens the directory, waiting for its lock as long as a store's open does: a store just
/// dropped may still hold it while sled's I/O threads finish the last writes.
fn open_offline(dir: &Path) -> Result<sled::Db, LogError> {
    Ok(super::open_sled_waiting_for_lock(
        &sled::Config::new().path(dir),
        crate::DEFAULT_LOCK_WAIT,
    )?)
}

/// The stored bytes of the event at `position` (`None` if no such key).
pub fn read_event_bytes(dir: &Path, position: Position) -> Result<Option<Vec<u8>>, LogError> {
    let db = open_offline(dir)?;
    Ok(db.get(keys::event(position))?.map(|bytes| bytes.to_vec()))
}

/// Replaces the stored bytes of the event at `position` with `bytes`, bypassing the hash chain.
pub fn tamper_overwrite_event_bytes(
    dir: &Path,
    position: Position,
    bytes: &[u8],
) -> Result<(), LogError> {
    let db = open_offline(dir)?;
    db.insert(keys::event(position), bytes)?;
    db.flush()?;
    Ok(())
}

/// Deletes the stored event at `position`, leaving a hole in the log.
pub fn tamper_delete_event(dir: &Path, position: Position) -> Result<(), LogError> {
    let db = open_offline(dir)?;
    db.remove(keys::event(position))?;
    db.flush()?;
    Ok(())
}

/// Overwrites the store's format version, to test what opening a foreign format does.
pub fn tamper_set_format_version(dir: &Path, version: u32) -> Result<(), LogError> {
    let db = open_offline(dir)?;
    db.insert(keys::FORMAT_KEY, &version.to_be_bytes()[..])?;
    db.flush()?;
    Ok(())
}
