//! The hash chain: `hash = SHA-256(previous_hash || prost-encode(envelope with hash cleared))`.

use prost::Message;
use sha2::{Digest, Sha256};
use signpost_schema::log::v1::EventEnvelope;

/// The previous hash of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Computes the chain hash of `envelope` from its content (its `hash` field is ignored).
pub fn envelope_hash(envelope: &EventEnvelope) -> [u8; 32] {
    if envelope.hash.is_empty() {
        return hash_unsealed(envelope);
    }
    let mut unsealed = envelope.clone();
    unsealed.hash.clear();
    hash_unsealed(&unsealed)
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
    envelope.hash = hash.to_vec();
    hash
}

/// Converts a stored hash field to a fixed array, if it has the right length.
pub(crate) fn hash_array(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}
