//! The in-memory indexes of a file store, rebuilt by the open scan and extended by the
//! sequencer after each durable batch.
//!
//! Events are indexed by *slot*: the n-th event record in file order is slot n-1. In a log
//! written by the store, slot n-1 holds position n; a tampered log may not (a deleted event
//! shifts the slots after it), and then readers see the positions the envelopes claim, which is
//! what `verify_chain` checks. Per event the index keeps 12 bytes (packed location + length).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState as FastState;
use hashbrown::HashTable;

use super::read::Segments;
use crate::types::Head;

const SEGMENT_SHIFT: u32 = 40;
const OFFSET_MASK: u64 = (1 << SEGMENT_SHIFT) - 1;

/// Packs a segment number (24 bits) and an offset in it (40 bits: 1 TiB).
pub(crate) fn pack(segment: u32, offset: u64) -> u64 {
    debug_assert!(offset <= OFFSET_MASK && segment < (1 << 24));
    (u64::from(segment) << SEGMENT_SHIFT) | offset
}

pub(crate) fn unpack(location: u64) -> (u32, u64) {
    ((location >> SEGMENT_SHIFT) as u32, location & OFFSET_MASK)
}

/// Largest segment offset a location can hold.
pub(crate) const MAX_SEGMENT_OFFSET: u64 = OFFSET_MASK;

/// Where a record is: packed location of its header and its payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub packed: u64,
    pub len: u32,
}

/// Hashes an idempotency key (principal, request id) with `hasher`.
pub(crate) fn idempotency_hash(hasher: &RandomState, principal: &[u8], request_id: &[u8]) -> u64 {
    hasher.hash_one((principal, request_id))
}

/// The idempotency records whose key hashes to one value (almost always one record).
#[derive(Debug)]
enum Locations {
    One(Location),
    Many(Vec<Location>),
}

/// Stream id -> its positions, without one allocation per stream: ids live in one arena
/// string, entries in a `hashbrown::HashTable` keyed by a seeded foldhash of the id and
/// compared by id. (The open scan inserts every stream of the log; SipHash, a `Box<str>` per
/// stream and a second probe for each new stream were most of its time.)
///
/// An entry is 16 bytes, for a resident table of about 17 bytes per bucket: the id's place
/// in the arena, and the stream's one position or, for a stream with more, the index of
/// its list in `many`. The hash is not kept: it is recomputed from the id when the table
/// grows (hashbrown's control bytes keep 7 bits of it, so lookups rarely compare ids in
/// vain).
pub(crate) struct Streams {
    table: HashTable<StreamEntry>,
    /// Every stream id, concatenated.
    names: String,
    /// The positions of each stream with more than one event.
    many: Vec<Vec<u64>>,
    hasher: FastState,
}

struct StreamEntry {
    /// Offset (48 bits) and length (16 bits) of the id in `names`.
    name: u64,
    /// The stream's position, or `MANY | i` when its positions are `many[i]`.
    positions: u64,
}

/// Marks an entry's `positions` as an index into `Streams::many` (positions stay below
/// 2^63: a log of that many events does not fit a disk).
const MANY: u64 = 1 << 63;

/// The id an entry names in `names`.
fn name_in(names: &str, name: u64) -> &str {
    let start = (name >> 16) as usize;
    &names[start..start + (name & 0xffff) as usize]
}

impl Streams {
    fn new() -> Self {
        Streams {
            table: HashTable::new(),
            names: String::new(),
            many: Vec::new(),
            hasher: FastState::default(),
        }
    }

    /// The positions of `stream`, ascending.
    pub fn get(&self, stream: &str) -> Option<&[u64]> {
        let hash = self.hasher.hash_one(stream);
        let entry = self
            .table
            .find(hash, |entry| name_in(&self.names, entry.name) == stream)?;
        Some(if entry.positions & MANY == 0 {
            std::slice::from_ref(&entry.positions)
        } else {
            &self.many[(entry.positions & !MANY) as usize]
        })
    }

    fn push(&mut self, stream: &str, position: u64) {
        let Ok(len) = u16::try_from(stream.len()) else {
            // Only a tampered envelope can name such a stream; it stays out of the index.
            return;
        };
        if position >= MANY {
            return;
        }
        let Streams {
            table,
            names,
            many,
            hasher,
        } = self;
        let entry = table.entry(
            hasher.hash_one(stream),
            |entry| name_in(names, entry.name) == stream,
            |entry| hasher.hash_one(name_in(names, entry.name)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                if entry.positions & MANY == 0 {
                    many.push(vec![entry.positions, position]);
                    entry.positions = MANY | (many.len() - 1) as u64;
                } else {
                    many[(entry.positions & !MANY) as usize].push(position);
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let name = ((names.len() as u64) << 16) | u64::from(len);
                vacant.insert(StreamEntry {
                    name,
                    positions: position,
                });
                names.push_str(stream);
            }
        }
    }
}

pub(crate) struct Index {
    /// Every segment file, by number.
    pub segments: Segments,
    /// Per slot: packed location of the event record's header.
    pub locations: Vec<u64>,
    /// Per slot: the envelope's length.
    pub lengths: Vec<u32>,
    /// Stream id -> its slots plus one.
    streams: Streams,
    /// Hash of (principal, request id) -> where the record is; the key is compared on read.
    /// The key hash itself is SipHash with a random key (request ids are client-chosen).
    idempotency: HashMap<u64, Locations, FastState>,
    idempotency_hasher: RandomState,
    /// The head recorded by the last frame (verified against the last event at open).
    pub head: Head,
}

impl Index {
    pub fn new(segments: Segments) -> Self {
        Index {
            segments,
            locations: Vec::new(),
            lengths: Vec::new(),
            streams: Streams::new(),
            idempotency: HashMap::default(),
            idempotency_hasher: RandomState::new(),
            head: Head::EMPTY,
        }
    }

    /// How many event records are indexed (and visible).
    pub fn slots(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Indexes the next event record; `stream` is `None` for an envelope that does not decode.
    pub fn push_event(&mut self, location: Location, stream: Option<&str>) {
        self.locations.push(location.packed);
        self.lengths.push(location.len);
        let position = self.locations.len() as u64;
        if let Some(stream) = stream {
            self.streams.push(stream, position);
        }
    }

    pub fn event_location(&self, slot: usize) -> Location {
        Location {
            packed: self.locations[slot],
            len: self.lengths[slot],
        }
    }

    pub fn stream(&self, stream: &str) -> Option<&[u64]> {
        self.streams.get(stream)
    }

    pub fn idempotency_hash(&self, principal: &[u8], request_id: &[u8]) -> u64 {
        idempotency_hash(&self.idempotency_hasher, principal, request_id)
    }

    /// The hasher of idempotency keys, for the sequencer to hash its batch's keys.
    pub fn idempotency_hasher(&self) -> RandomState {
        self.idempotency_hasher.clone()
    }

    pub fn push_idempotency(&mut self, hash: u64, location: Location) {
        match self.idempotency.entry(hash) {
            Entry::Vacant(vacant) => {
                vacant.insert(Locations::One(location));
            }
            Entry::Occupied(mut occupied) => {
                let locations = occupied.get_mut();
                match locations {
                    Locations::One(first) => *locations = Locations::Many(vec![*first, location]),
                    Locations::Many(all) => all.push(location),
                }
            }
        }
    }

    /// Where the records whose key hashes to `hash` are, newest last.
    pub fn idempotency_locations(&self, hash: u64) -> Vec<Location> {
        match self.idempotency.get(&hash) {
            None => Vec::new(),
            Some(Locations::One(one)) => vec![*one],
            Some(Locations::Many(all)) => all.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_pack_and_unpack() {
        assert_eq!(unpack(pack(0, 0)), (0, 0));
        assert_eq!(unpack(pack(7, 123_456_789)), (7, 123_456_789));
        assert_eq!(
            unpack(pack((1 << 24) - 1, MAX_SEGMENT_OFFSET)),
            ((1 << 24) - 1, MAX_SEGMENT_OFFSET)
        );
    }

    #[test]
    fn streams_collect_their_positions() {
        let mut index = Index::new(Default::default());
        let at = |packed| Location { packed, len: 1 };
        index.push_event(at(0), Some("a"));
        index.push_event(at(10), Some("b"));
        index.push_event(at(20), None);
        index.push_event(at(30), Some("a"));
        assert_eq!(index.slots(), 4);
        assert_eq!(index.stream("a").unwrap(), &[1, 4]);
        assert_eq!(index.stream("b").unwrap(), &[2]);
        assert!(index.stream("c").is_none());
        assert!(index.stream("").is_none());
        assert!(index.stream("ab").is_none());
        assert_eq!(index.event_location(3), at(30));
    }

    #[test]
    fn idempotency_hashes_keep_principal_and_request_apart() {
        let index = Index::new(Default::default());
        assert_ne!(
            index.idempotency_hash(b"ab", b"c"),
            index.idempotency_hash(b"a", b"bc")
        );
        let mut index = index;
        let first = Location { packed: 1, len: 2 };
        let second = Location { packed: 3, len: 4 };
        index.push_idempotency(5, first);
        index.push_idempotency(5, second);
        assert_eq!(index.idempotency_locations(5), vec![first, second]);
        assert!(index.idempotency_locations(6).is_empty());
    }

    proptest::proptest! {
        /// The index answers like a map of stream id to positions, through the table's
        /// growth (its hashes are recomputed from the ids then).
        #[test]
        fn streams_answer_like_a_map(streams in proptest::collection::vec(0usize..300, 1..2_000)) {
            let mut index = Index::new(Default::default());
            let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
            for (slot, stream) in streams.iter().enumerate() {
                let name = format!("connection-{stream:04}");
                index.push_event(Location { packed: slot as u64, len: 1 }, Some(&name));
                expected.entry(name).or_default().push(slot as u64 + 1);
            }
            for stream in 0..310 {
                let name = format!("connection-{stream:04}");
                proptest::prop_assert_eq!(index.stream(&name), expected.get(&name).map(Vec::as_slice));
            }
        }
    }
}
