//! The state file: the last good table, so the edge serves sign-ins while the
//! control plane is down and right after its own restart.
//!
//! The file is a prost-encoded `EdgeState`. It is written atomically: a
//! temporary file in the same directory, fsync, rename over the old file,
//! fsync of the directory, so a crash leaves either the old or the new state,
//! never a torn one. It is validated on load exactly like a stream update.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use prost::Message;
use signpost_api::routing::v1 as wire;

use crate::route::RouteError;
use crate::table::Table;

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

/// Encodes `table` as an `EdgeState`.
pub fn encode(table: &Table) -> Vec<u8> {
    let state = wire::EdgeState {
        revision: table.revision(),
        store_epoch: table.store_epoch().to_owned(),
        routes: table
            .routes()
            .values()
            .map(|route| route.as_wire().clone())
            .collect(),
    };
    state.encode_to_vec()
}

/// Writes `table` to `path` atomically (see the module docs).
pub fn save(path: &Path, table: &Table) -> Result<(), StateFileError> {
    let io_error = |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = encode(table);
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
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
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
    let state =
        wire::EdgeState::decode(bytes.as_slice()).map_err(|source| StateFileError::Decode {
            path: path.to_owned(),
            source,
        })?;
    let table = Table::from_wire_routes(
        state.routes,
        state.revision,
        state.store_epoch,
        Some(loaded_at),
    )
    .map_err(|source| StateFileError::InvalidRoute {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};

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
            &saml_route("acme.com")
        );
        assert_eq!(
            loaded.get("globex.com").unwrap().as_wire(),
            &oidc_route("globex.com")
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
