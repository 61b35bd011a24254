//! Key layout of the sled store: one tree, one-letter prefixes.
//!
//! | key                                        | value                                  |
//! |--------------------------------------------|----------------------------------------|
//! | `e/` pos (u64 BE)                          | prost-encoded `EventEnvelope`          |
//! | `s/` stream `\0` version (u64 BE)          | position (u64 BE)                      |
//! | `v/` stream                                | stream version (u64 BE)                |
//! | `i/` len(principal) (u32 BE) principal request id | prost-encoded idempotency record |
//! | `m/format`                                 | format version (u32 BE)                |
//! | `m/epoch`                                  | epoch UUID (16 bytes)                  |
//! | `m/head`                                   | head position (u64 BE) + hash (32 B)   |
//!
//! Big-endian integers make sled's byte order the numeric order, so range scans over `e/` and
//! `s/<stream>\0` walk positions and versions in order. Stream ids cannot contain NUL.

use crate::error::LogError;
use crate::types::{Head, IdempotencyKey, Position, StreamId};

pub(crate) const EVENT_PREFIX: &[u8] = b"e/";
pub(crate) const FORMAT_KEY: &[u8] = b"m/format";
pub(crate) const EPOCH_KEY: &[u8] = b"m/epoch";
pub(crate) const HEAD_KEY: &[u8] = b"m/head";

pub(crate) fn event(position: Position) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(EVENT_PREFIX);
    key[2..].copy_from_slice(&position.to_be_bytes());
    key
}

pub(crate) fn event_position(key: &[u8]) -> Option<Position> {
    let bytes = key.strip_prefix(EVENT_PREFIX)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn stream_index_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + stream.len() + 8);
    key.extend_from_slice(b"s/");
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

pub(crate) fn stream_index(stream: &str, version: u64) -> Vec<u8> {
    let mut key = stream_index_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(crate) fn stream_index_version(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

pub(crate) fn stream_version(stream: &StreamId) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + stream.as_str().len());
    key.extend_from_slice(b"v/");
    key.extend_from_slice(stream.as_str().as_bytes());
    key
}

pub(crate) fn idempotency(key: &IdempotencyKey) -> Vec<u8> {
    // Length-prefixed principal: principals and request ids are free text, so no separator
    // byte could keep ("ab", "c") and ("a", "bc") apart.
    let principal = key.principal.as_bytes();
    let mut out = Vec::with_capacity(6 + principal.len() + key.request_id.len());
    out.extend_from_slice(b"i/");
    out.extend_from_slice(&(principal.len() as u32).to_be_bytes());
    out.extend_from_slice(principal);
    out.extend_from_slice(key.request_id.as_bytes());
    out
}

pub(crate) fn u64_value(bytes: &[u8], what: &str) -> Result<u64, LogError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| LogError::Corrupt {
        position: 0,
        reason: format!("{what} is {} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

pub(crate) fn head_value(head: Head) -> [u8; 40] {
    let mut value = [0u8; 40];
    value[..8].copy_from_slice(&head.position.to_be_bytes());
    value[8..].copy_from_slice(&head.hash);
    value
}

pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head, LogError> {
    if bytes.len() != 40 {
        return Err(LogError::Corrupt {
            position: 0,
            reason: format!("stored head is {} bytes, expected 40", bytes.len()),
        });
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[8..]);
    Ok(Head {
        position: u64_value(&bytes[..8], "head position")?,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_position() {
        assert!(event(255) < event(256));
        assert_eq!(event_position(&event(42)), Some(42));
    }

    #[test]
    fn stream_index_keys_sort_by_version_within_a_stream() {
        assert!(stream_index("a", 255) < stream_index("a", 256));
        assert_eq!(stream_index_version(&stream_index("a", 7)), Some(7));
        // "a" and "a-b" never interleave thanks to the NUL separator.
        assert!(stream_index("a", u64::MAX) < stream_index("a-b", 0));
    }

    #[test]
    fn idempotency_keys_keep_principal_and_request_apart() {
        let a = IdempotencyKey {
            principal: "ab".into(),
            request_id: "c".into(),
        };
        let b = IdempotencyKey {
            principal: "a".into(),
            request_id: "bc".into(),
        };
        assert_ne!(idempotency(&a), idempotency(&b));
    }
}
