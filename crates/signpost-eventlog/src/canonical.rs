//! Checking a stored envelope's hash from its bytes, without decoding it.
//!
//! The chain's definition hashes prost's encoding of the envelope with `hash` cleared
//! (`chain.rs`). A store that keeps each envelope as prost wrote it can hash those bytes with
//! the hash field cut out instead of decoding, allocating every string and encoding them
//! again: that was half of what verifying a log cost. The two agree exactly when the stored
//! bytes are the *canonical* encoding of what they decode to, which is what this module
//! checks, field by field, without allocating: fields in number order, each known with its
//! wire type, no field holding its default value (prost leaves those out), varints in their
//! shortest form, strings valid UTF-8, and the same of the nested `Timestamp` and `Actor`.
//! Bytes that are not canonical (never written by our stores, so damaged or forged) get
//! `None`, and the verifier decodes them and applies the definition, so its verdict is the
//! definition's for any bytes. A property test checks that whatever this accepts decodes and
//! encodes back to the same bytes.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// The shape of a field, as far as its canonical encoding goes.
#[derive(Clone, Copy)]
enum Kind {
    /// `uint64`, and `int64` (any 64-bit value is canonical).
    U64,
    /// `int32` and enums: prost writes a negative value sign-extended to 64 bits.
    I32,
    /// `string`: valid UTF-8.
    Str,
    /// `bytes`.
    Bytes,
    /// A nested message, present even when empty.
    Message(&'static [(u64, Kind)]),
}

/// `google.protobuf.Timestamp`.
const TIMESTAMP: &[(u64, Kind)] = &[(1, Kind::U64), (2, Kind::I32)];
/// `signpost.log.v1.Actor`.
const ACTOR: &[(u64, Kind)] = &[
    (1, Kind::I32),
    (2, Kind::Str),
    (3, Kind::Str),
    (4, Kind::Str),
];
/// `signpost.log.v1.EventEnvelope` (`proto/signpost/log/v1/envelope.proto`).
const ENVELOPE: &[(u64, Kind)] = &[
    (1, Kind::U64),
    (2, Kind::Str),
    (3, Kind::U64),
    (4, Kind::Str),
    (5, Kind::Message(TIMESTAMP)),
    (6, Kind::Message(ACTOR)),
    (7, Kind::Str),
    (8, Kind::Str),
    (9, Kind::Str),
    (10, Kind::Bytes),
    (11, Kind::Bytes),
    (12, Kind::Bytes),
    (13, Kind::U64),
];

/// A field's value, as the top-level walk hands it over.
enum Value<'a> {
    Varint(u64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// Reads a varint in its shortest form at `*at`; `None` when cut short, longer than it needs
/// to be, or past 64 bits.
fn shortest_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for index in 0..10 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        if index == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            // A last byte of zero (after the first) is a longer form than needed.
            return (index == 0 || byte != 0).then_some(value);
        }
    }
    None
}

/// Walks `bytes` as the canonical encoding of a message of `schema`, calling `visit` with
/// each field's number, the range of its whole encoding (key included) and its value.
fn walk<'a>(
    bytes: &'a [u8],
    schema: &[(u64, Kind)],
    visit: &mut dyn FnMut(u64, Range<usize>, Value<'a>),
) -> Option<()> {
    let mut at = 0;
    let mut fields = schema.iter();
    while at < bytes.len() {
        let start = at;
        let key = shortest_varint(bytes, &mut at)?;
        let number = key >> 3;
        // The next field of the schema with this number: numbers only go up.
        let kind = loop {
            let (expected, kind) = fields.next()?;
            if *expected == number {
                break *kind;
            }
        };
        let value = match (kind, key & 7) {
            (Kind::U64, 0) => Value::Varint(shortest_varint(bytes, &mut at).filter(|v| *v != 0)?),
            (Kind::I32, 0) => {
                let value = shortest_varint(bytes, &mut at)?;
                let narrowed = value as i32;
                if narrowed == 0 || i64::from(narrowed) as u64 != value {
                    return None;
                }
                Value::Varint(value)
            }
            (Kind::Str | Kind::Bytes | Kind::Message(_), 2) => {
                let len = usize::try_from(shortest_varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= bytes.len())?;
                let value = &bytes[at..end];
                at = end;
                match kind {
                    Kind::Str if value.is_empty() => return None,
                    Kind::Str => Value::Str(std::str::from_utf8(value).ok()?),
                    Kind::Bytes if value.is_empty() => return None,
                    Kind::Message(nested) => {
                        walk(value, nested, &mut |_, _, _| {})?;
                        Value::Bytes(value)
                    }
                    _ => Value::Bytes(value),
                }
            }
            _ => return None,
        };
        visit(number, start..at, value);
    }
    Some(())
}

/// The fields of a stored envelope the chain checks, read from its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedEnvelope<'a> {
    pub position: u64,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub previous_hash: &'a [u8],
    pub hash: &'a [u8],
    bytes: &'a [u8],
    /// Where the `hash` field lies in `bytes` (empty when absent).
    hash_field: Range<usize>,
}

impl<'a> EncodedEnvelope<'a> {
    /// Reads `bytes` when they are the canonical encoding of an envelope, `None` otherwise
    /// (they may still decode: the caller then applies the definition).
    pub(crate) fn read(bytes: &'a [u8]) -> Option<Self> {
        let mut envelope = EncodedEnvelope {
            position: 0,
            stream_id: "",
            stream_version: 0,
            previous_hash: &[],
            hash: &[],
            bytes,
            hash_field: 0..0,
        };
        walk(
            bytes,
            ENVELOPE,
            &mut |number, range, value| match (number, value) {
                (1, Value::Varint(position)) => envelope.position = position,
                (2, Value::Str(id)) => envelope.stream_id = id,
                (3, Value::Varint(version)) => envelope.stream_version = version,
                (11, Value::Bytes(previous)) => envelope.previous_hash = previous,
                (12, Value::Bytes(hash)) => {
                    envelope.hash = hash;
                    envelope.hash_field = range;
                }
                _ => {}
            },
        )?;
        Some(envelope)
    }

    /// The chain hash of the envelope: what [`crate::envelope_hash`] computes from its
    /// decoded form.
    pub(crate) fn chain_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.previous_hash);
        hasher.update(&self.bytes[..self.hash_field.start]);
        hasher.update(&self.bytes[self.hash_field.end..]);
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::envelope_hash;
    use proptest::prelude::*;
    use prost::Message;
    use signpost_schema::log::v1::{Actor, EventEnvelope};

    fn envelope() -> impl Strategy<Value = EventEnvelope> {
        let actor = prop::option::of((any::<i32>(), ".{0,8}", ".{0,8}", ".{0,4}").prop_map(
            |(kind, id, on, name)| Actor {
                kind,
                id,
                on_behalf_of: on,
                display_name: name,
            },
        ));
        let time = prop::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        );
        (
            (any::<u64>(), ".{0,12}", any::<u64>(), ".{0,8}", time, actor),
            (".{0,6}", ".{0,6}", ".{0,10}"),
            (
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 0..33),
                prop::collection::vec(any::<u8>(), 0..33),
                any::<u64>(),
            ),
        )
            .prop_map(
                |(
                    (position, stream_id, stream_version, event_id, recorded_at, actor),
                    (correlation_id, request_id, event_type),
                    (payload, previous_hash, hash, commit_last_position),
                )| EventEnvelope {
                    position: position % 4, // zeros and small values are the edge cases
                    stream_id,
                    stream_version: stream_version >> (stream_version % 64),
                    event_id,
                    recorded_at,
                    actor,
                    correlation_id,
                    request_id,
                    event_type,
                    payload: payload.into(),
                    previous_hash: previous_hash.into(),
                    hash: hash.into(),
                    commit_last_position: commit_last_position >> (commit_last_position % 64),
                },
            )
    }

    proptest! {
        /// Whatever prost writes is read, and hashed as the definition hashes it.
        #[test]
        fn prost_encodings_are_read_and_hashed_as_defined(envelope in envelope()) {
            let bytes = envelope.encode_to_vec();
            let read = EncodedEnvelope::read(&bytes).expect("prost's encoding is canonical");
            prop_assert_eq!(read.position, envelope.position);
            prop_assert_eq!(read.stream_id, envelope.stream_id.as_str());
            prop_assert_eq!(read.stream_version, envelope.stream_version);
            prop_assert_eq!(read.previous_hash, &envelope.previous_hash[..]);
            prop_assert_eq!(read.hash, &envelope.hash[..]);
            prop_assert_eq!(read.chain_hash(), envelope_hash(&envelope));
        }

        /// Bytes it accepts, damaged or not, are exactly prost's encoding of what they
        /// decode to, so hashing them is the definition.
        #[test]
        fn accepted_bytes_are_canonical(
            envelope in envelope(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = envelope.encode_to_vec();
            for (at, byte, how) in edits {
                match how {
                    0 if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes[i] = byte; }
                    1 => { let i = at.index(bytes.len() + 1); bytes.insert(i, byte); }
                    _ if !bytes.is_empty() => { let i = at.index(bytes.len()); bytes.remove(i); }
                    _ => {}
                }
            }
            if let Some(read) = EncodedEnvelope::read(&bytes) {
                let decoded = EventEnvelope::decode(bytes.as_slice())
                    .expect("accepted bytes decode");
                prop_assert_eq!(decoded.encode_to_vec(), bytes.clone());
                prop_assert_eq!(read.chain_hash(), envelope_hash(&decoded));
            }
        }
    }

    proptest! {
        /// Any bytes at all: read without panicking, and accepted only when canonical.
        #[test]
        fn arbitrary_bytes_are_read_safely(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(read) = EncodedEnvelope::read(&bytes) {
                let decoded = EventEnvelope::decode(bytes.as_slice())
                    .expect("accepted bytes decode");
                prop_assert_eq!(decoded.encode_to_vec(), bytes.clone());
                prop_assert_eq!(read.chain_hash(), envelope_hash(&decoded));
            }
        }
    }

    /// Encodings prost accepts but never writes are refused (the verifier then decodes).
    #[test]
    fn non_canonical_encodings_are_refused() {
        let envelope = EventEnvelope {
            position: 7,
            stream_id: "organization-1".into(),
            stream_version: 2,
            hash: vec![1; 32].into(),
            ..Default::default()
        };
        let bytes = envelope.encode_to_vec();
        assert!(EncodedEnvelope::read(&bytes).is_some());
        // Fields out of order: stream_version (3) before stream_id (2).
        let reordered: Vec<u8> = [&[0x08, 7, 0x18, 2][..], &bytes[2..18], &bytes[20..]].concat();
        assert!(EventEnvelope::decode(reordered.as_slice()).is_ok());
        assert!(EncodedEnvelope::read(&reordered).is_none());
        // A default value written out: position 0.
        let zero: Vec<u8> = [&[0x08, 0][..], &bytes[2..]].concat();
        assert!(EncodedEnvelope::read(&zero).is_none());
        // A longer varint than needed: position 7 in two bytes.
        let long: Vec<u8> = [&[0x08, 0x87, 0x00][..], &bytes[2..]].concat();
        assert!(EventEnvelope::decode(long.as_slice()).is_ok());
        assert!(EncodedEnvelope::read(&long).is_none());
        // An unknown field (20).
        let unknown: Vec<u8> = [&bytes[..], &[0xa0, 0x01, 1][..]].concat();
        assert!(EventEnvelope::decode(unknown.as_slice()).is_ok());
        assert!(EncodedEnvelope::read(&unknown).is_none());
        // Changed content inside a string stays canonical, and hashes differently.
        let mut edited = bytes.clone();
        edited[5] = b'X';
        let read = EncodedEnvelope::read(&edited).expect("still canonical");
        assert_eq!(read.stream_id, "oXganization-1");
        assert_ne!(
            read.chain_hash(),
            EncodedEnvelope::read(&bytes).unwrap().chain_hash()
        );
        // A field repeated.
        let twice: Vec<u8> = [&bytes[..2], &bytes[..]].concat();
        assert!(EncodedEnvelope::read(&twice).is_none());
    }
}
