//! Key layout of the audit database (one sled db, several trees).
//!
//! | tree             | key                                   | value                              |
//! |------------------|---------------------------------------|------------------------------------|
//! | `meta`           | `position` / `hash` / `epoch`         | u64 BE / 32 bytes / UUID (16)      |
//! | `entries`        | position (u64 BE)                     | prost `AuditEntry`                 |
//! | `by_org`         | len (u16 BE) org id, position         | empty                              |
//! | `by_connection`  | len (u16 BE) connection id, position  | empty                              |
//! | `by_actor`       | len (u16 BE) actor id, position       | empty                              |
//! | `by_type`        | len (u16 BE) event type, position     | empty                              |
//! | `time`           | time (i64 ns, sign-flipped BE), pos.  | empty                              |
//! | `domain_history` | len (u16 BE) domain, position         | prost [`DomainStateRecord`]        |
//! | `org_domains`    | len (u16 BE) org id, domain           | empty                              |
//! | `checkpoints`    | sequence (u64 BE)                     | prost `Checkpoint`                 |
//!
//! Big-endian integers make byte order numeric order; the length prefix keeps one id's
//! keys contiguous whatever bytes the id holds. Index values are empty: the position in
//! the key is the pointer into `entries`.

use signpost_api::routing::v1 as wire;

/// Names of the trees rebuilt from the log (everything but `checkpoints`).
pub(crate) const PROJECTION_TREES: [&str; 9] = [
    META,
    ENTRIES,
    BY_ORG,
    BY_CONNECTION,
    BY_ACTOR,
    BY_TYPE,
    TIME,
    DOMAIN_HISTORY,
    ORG_DOMAINS,
];

pub(crate) const META: &str = "meta";
pub(crate) const ENTRIES: &str = "entries";
pub(crate) const BY_ORG: &str = "by_org";
pub(crate) const BY_CONNECTION: &str = "by_connection";
pub(crate) const BY_ACTOR: &str = "by_actor";
pub(crate) const BY_TYPE: &str = "by_type";
pub(crate) const TIME: &str = "time";
pub(crate) const DOMAIN_HISTORY: &str = "domain_history";
pub(crate) const ORG_DOMAINS: &str = "org_domains";
/// Signed checkpoints: not derivable from the log, so never cleared by a rebuild.
pub(crate) const CHECKPOINTS: &str = "checkpoints";

pub(crate) const META_POSITION: &[u8] = b"position";
pub(crate) const META_EPOCH: &[u8] = b"epoch";
/// The chain hash of the event at the recorded position.
pub(crate) const META_HASH: &[u8] = b"hash";

/// `position` as a key.
pub(crate) fn position(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Reads a position back from the last 8 bytes of a key.
pub(crate) fn trailing_position(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if key.len() >= 8 {
        bytes.copy_from_slice(&key[key.len() - 8..]);
    }
    u64::from_be_bytes(bytes)
}

/// The prefix shared by every key of `id` in an index tree.
pub(crate) fn prefix(id: &str) -> Vec<u8> {
    let bytes = id.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + bytes.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

/// `id`'s key at `position` in an index tree.
pub(crate) fn indexed(id: &str, position: u64) -> Vec<u8> {
    let mut key = prefix(id);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// An `org_domains` key.
pub(crate) fn org_domain(organization_id: &str, domain: &str) -> Vec<u8> {
    let mut key = prefix(organization_id);
    key.extend_from_slice(domain.as_bytes());
    key
}

/// A time as nanoseconds since the epoch, made byte-orderable (sign bit flipped).
pub(crate) fn time(nanos: i64, position: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&((nanos as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&position.to_be_bytes());
    key
}

/// A domain's state from one position on: who owned it and how it routed.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DomainStateRecord {
    /// The organization claiming the domain then (empty: nobody).
    #[prost(string, tag = "1")]
    pub organization_id: String,
    /// The route then; `None` routes to password.
    #[prost(message, optional, tag = "2")]
    pub route: Option<wire::Route>,
    /// The position of the event that made it so.
    #[prost(uint64, tag = "3")]
    pub cause_position: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_numerically_across_the_epoch() {
        assert!(time(-5, 1) < time(-1, 1));
        assert!(time(-1, 9) < time(0, 1));
        assert!(time(0, 1) < time(1, 0));
        assert!(time(7, 1) < time(7, 2));
    }

    #[test]
    fn index_keys_of_one_id_are_contiguous_and_ordered_by_position() {
        let a1 = indexed("a", 1);
        let a2 = indexed("a", 256);
        let ab = indexed("ab", 0);
        assert!(a1 < a2);
        assert!(
            a2 < ab,
            "a longer id sorts after every key of the shorter one"
        );
        assert!(a1.starts_with(&prefix("a")));
        assert!(!ab.starts_with(&prefix("a")));
        assert_eq!(trailing_position(&a2), 256);
    }
}
