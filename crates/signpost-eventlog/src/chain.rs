//! The hash chain: `hash = SHA-256(previous_hash || prost-encode(envelope with hash cleared))`.

use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use signpost_schema::log::v1::EventEnvelope;

/// The previous hash of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Computes the chain hash of `envelope` from its content (its `hash` field is ignored).
///
/// Without copying the envelope: prost writes fields in tag order and `hash` (12) comes
/// just before `commit_last_position` (13), the last field, so the encoding of the
/// envelope with `hash` cleared is the full encoding with the hash field's bytes cut out.
pub fn envelope_hash(envelope: &EventEnvelope) -> [u8; 32] {
    use prost::encoding::{bytes, uint64};
    ENCODED.with_borrow_mut(|buffer| {
        buffer.clear();
        envelope
            .encode(buffer)
            .expect("a Vec grows to any encoded length");
        let tail = match envelope.commit_last_position {
            0 => 0,
            last => uint64::encoded_len(13, &last),
        };
        let hash_field = match envelope.hash.is_empty() {
            true => 0,
            false => bytes::encoded_len(12, &envelope.hash),
        };
        let cut = buffer.len() - tail - hash_field;
        let mut hasher = Sha256::new();
        hasher.update(&envelope.previous_hash);
        hasher.update(&buffer[..cut]);
        hasher.update(&buffer[buffer.len() - tail..]);
        hasher.finalize().into()
    })
}

thread_local! {
    /// The encoding buffer [`envelope_hash`] reuses.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hash of an envelope whose `hash` field is already empty.
fn hash_unsealed(envelope: &EventEnvelope) -> [u8; 32] {
    debug_assert!(envelope.hash.is_empty());
    let mut hasher = Sha256::new();
    hasher.update(&envelope.previous_hash);
    hasher.update(envelope.encode_to_vec());
    hasher.finalize().into()
}

/// Fills `envelope.hash` from the rest of the envelope.
pub(crate) fn seal(envelope: &mut EventEnvelope) -> [u8; 32] {
    envelope.hash.clear();
    let hash = hash_unsealed(envelope);
    envelope.hash = Bytes::copy_from_slice(&hash);
    hash
}

/// Converts a stored hash field to a fixed array, if it has the right length.
pub(crate) fn hash_array(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use signpost_schema::log::v1::Actor;

    /// The definition: clear the hash, encode, hash with the previous hash in front.
    fn by_definition(envelope: &EventEnvelope) -> [u8; 32] {
        let mut unsealed = envelope.clone();
        unsealed.hash.clear();
        hash_unsealed(&unsealed)
    }

    proptest! {
        #[test]
        fn envelope_hash_is_the_hash_of_the_unsealed_encoding(
            position in any::<u64>(),
            stream_id in ".{0,20}",
            stream_version in any::<u64>(),
            event_type in "[a-z_]{0,12}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            previous_hash in proptest::collection::vec(any::<u8>(), 0..40),
            hash in proptest::collection::vec(any::<u8>(), 0..40),
            commit_last_position in prop_oneof![Just(0u64), any::<u64>()],
            actor_id in ".{0,10}",
            with_actor in any::<bool>(),
        ) {
            let envelope = EventEnvelope {
                position,
                stream_id,
                stream_version,
                event_id: "e".into(),
                recorded_at: None,
                actor: with_actor.then(|| Actor { id: actor_id, ..Actor::default() }),
                correlation_id: String::new(),
                request_id: String::new(),
                event_type,
                payload: payload.into(),
                previous_hash: previous_hash.into(),
                hash: hash.into(),
                commit_last_position,
            };
            prop_assert_eq!(envelope_hash(&envelope), by_definition(&envelope));
        }
    }
}
