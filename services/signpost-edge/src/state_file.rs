//! The state file: the last good table, so the edge serves sign-ins while the
//! control plane is down and right after its own restart.
//!
//! The file is a prost-encoded `EdgeState`. It is written atomically: a
//! temporary file in the same directory, fsync, rename over the old file,
//! fsync of the directory, so a crash leaves either the old or the new state,
//! never a torn one. It is written as a stream (each route's stored bytes go
//! straight to a buffered file, nothing is decoded or encoded again), so
//! writing it needs no memory beyond a 64 KiB buffer. It is validated on load
//! exactly like a stream update.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use prost::bytes::Bytes;
use prost::Message;

use crate::encoded::length_delimited_header;
use crate::route::{Route, RouteError};
use crate::stream::EncodedEdgeState;
use crate::table::{RoutesBuilder, Table};

/// Buffer between the table and the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading or writing failed.
    #[error("state file `{path}`: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid `EdgeState`.
    #[error("state file `{path}` is not a valid edge state: {source}")]
    Decode {
        /// The state file.
        path: PathBuf,
        /// The decoding error.
        source: prost::DecodeError,
    },
    /// A route in the file is invalid.
    #[error("state file `{path}` has an invalid route: {source}")]
    InvalidRoute {
        /// The state file.
        path: PathBuf,
        /// What is wrong with the route.
        source: RouteError,
    },
}

/// Writes `table` as an encoded `EdgeState` to `out`, one route at a time.
pub fn write(table: &Table, out: &mut impl Write) -> io::Result<()> {
    let mut header = Vec::with_capacity(16);
    // `EdgeState { revision = 1, store_epoch = 2, repeated Route routes = 3 }`,
    // default values left out as prost does.
    if table.revision() != 0 {
        prost::encoding::uint64::encode(1, &table.revision(), &mut header);
    }
    if !table.store_epoch().is_empty() {
        length_delimited_header(2, table.store_epoch().len(), &mut header);
        header.extend_from_slice(table.store_epoch().as_bytes());
    }
    out.write_all(&header)?;
    for route in table.routes().values() {
        header.clear();
        length_delimited_header(3, route.encoded().len(), &mut header);
        out.write_all(&header)?;
        out.write_all(route.encoded())?;
    }
    Ok(())
}

/// Encodes `table` as an `EdgeState` in memory (tests and tools; the edge
/// itself streams it to the file with [`save`]).
pub fn encode(table: &Table) -> Vec<u8> {
    let mut bytes = Vec::new();
    write(table, &mut bytes).expect("writing to a Vec never fails");
    bytes
}

/// Writes `table` to `path` atomically (see the module docs).
pub fn save(path: &Path, table: &Table) -> Result<(), StateFileError> {
    let io_error = |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let mut temporary_name = file_name.to_owned();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    let written = (|| {
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, File::create(&temporary)?);
        write(table, &mut file)?;
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        // The rename is durable only once the directory entry is.
        File::open(&directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(io_error)
}

/// Loads the state file: `Ok(None)` when there is none, an error when it is
/// unreadable, corrupt or holds an invalid route (the caller then starts
/// empty and waits for a snapshot).
pub fn load(path: &Path, loaded_at: DateTime<Utc>) -> Result<Option<Table>, StateFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    // The routes are slices of the file's bytes until each is checked and
    // copied into the table.
    let state =
        EncodedEdgeState::decode(Bytes::from(bytes)).map_err(|source| StateFileError::Decode {
            path: path.to_owned(),
            source,
        })?;
    let mut routes = RoutesBuilder::new();
    for encoded in &state.routes {
        let route =
            Route::from_encoded(encoded).map_err(|source| StateFileError::InvalidRoute {
                path: path.to_owned(),
                source,
            })?;
        routes.push(route);
    }
    Ok(Some(Table::complete(
        routes.build(),
        state.revision,
        state.store_epoch,
        Some(loaded_at),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};
    use signpost_api::routing::v1 as wire;

    fn table() -> Table {
        Table::from_wire_routes(
            [saml_route("acme.com"), oidc_route("globex.com")],
            42,
            "epoch-7".to_owned(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_saved_table_loads_back_equal() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("edge-state.pb");
        save(&path, &table()).unwrap();
        let loaded = load(&path, Utc::now()).unwrap().unwrap();
        assert!(loaded.is_complete());
        assert_eq!(loaded.revision(), 42);
        assert_eq!(loaded.store_epoch(), "epoch-7");
        assert_eq!(loaded.len(), 2);
        assert_eq!(
            loaded.get("acme.com").unwrap().as_wire(),
            saml_route("acme.com")
        );
        assert_eq!(
            loaded.get("globex.com").unwrap().as_wire(),
            oidc_route("globex.com")
        );
        // Saving again replaces the file and leaves no temporary behind.
        save(&path, &loaded).unwrap();
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("edge-state.pb")]);
    }

    #[test]
    fn the_streamed_file_is_the_edge_state_prost_encodes() {
        let table = table();
        let decoded = wire::EdgeState::decode(encode(&table).as_slice()).unwrap();
        let mut expected = wire::EdgeState {
            revision: 42,
            store_epoch: "epoch-7".to_owned(),
            routes: table.routes().values().map(Route::as_wire).collect(),
        };
        assert_eq!(decoded, expected);
        assert_eq!(encode(&table), expected.encode_to_vec());
        expected.routes.sort_by(|a, b| a.domain.cmp(&b.domain));
        assert_eq!(
            expected.routes,
            vec![saml_route("acme.com"), oidc_route("globex.com")]
        );
        assert!(encode(&Table::default()).is_empty());
    }

    #[test]
    fn a_missing_state_file_is_not_an_error() {
        let directory = tempfile::tempdir().unwrap();
        assert!(load(&directory.path().join("absent.pb"), Utc::now())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_corrupt_state_file_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("edge-state.pb");
        fs::write(&path, b"\xff\xff\xff\xff not protobuf").unwrap();
        assert!(matches!(
            load(&path, Utc::now()),
            Err(StateFileError::Decode { .. })
        ));
        let mut truncated = encode(&table());
        truncated.truncate(truncated.len() - 3);
        fs::write(&path, truncated).unwrap();
        assert!(load(&path, Utc::now()).is_err());
    }

    #[test]
    fn a_state_file_with_an_invalid_route_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("edge-state.pb");
        let mut bad = saml_route("acme.com");
        bad.saml.as_mut().unwrap().idp_sso_url = "javascript:alert(1)".to_owned();
        let state = wire::EdgeState {
            revision: 1,
            store_epoch: "e".to_owned(),
            routes: vec![bad],
        };
        fs::write(&path, state.encode_to_vec()).unwrap();
        assert!(matches!(
            load(&path, Utc::now()),
            Err(StateFileError::InvalidRoute { .. })
        ));
    }
}
