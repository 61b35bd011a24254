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
use std::io::Read;

use foldhash::fast::RandomState as FastState;
use hashbrown::HashTable;

use sha2::{Digest, Sha256};

use super::checkpoint::{Decoder, Encoder};
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

/// Stream id -> its positions, without one allocation per stream: ids live in one arena,
/// entries in a `hashbrown::HashTable` keyed by a seeded foldhash of the id's key and
/// compared by key. (The open scan inserts every stream of the log; SipHash, a `Box<str>`
/// per stream and a second probe for each new stream were most of its time.)
///
/// An id that ends in a UUID in its canonical form (`organization-0193…`, as every
/// aggregate's stream is named) is kept as 17 bytes: the number of the text before the
/// UUID (one of at most 255 such prefixes, kept once each) and the UUID's 16 bytes,
/// against 47 to 49 bytes of text. Any other id is kept as its text. The form is a
/// function of the id, so ids are equal exactly when their keys are (a key's form is part
/// of it), and lookups build the probe's key the same way.
///
/// An entry is 16 bytes, for a resident table of about 17 bytes per bucket: the key's
/// place in the arena, and the stream's one position or, for a stream with more, the
/// place of its list in `many`. The hash is not kept: it is recomputed from the key when
/// the table grows (hashbrown's control bytes keep 7 bits of it, so lookups rarely
/// compare keys in vain).
///
/// The lists of streams with more than one event share one vector too (`many`), each a
/// header word (length and capacity) and its slots: 24 bytes for a stream of two
/// events, where a `Vec` of its own took 56 (its header in a vector of lists, and 32
/// bytes of heap once it held three). A list that is full grows in place when it is the
/// last one, and otherwise moves to the end with twice the room; when the words left
/// behind pass a quarter of the vector, every list is packed again ([`Streams::pack`]).
pub(super) struct Streams {
    table: HashTable<StreamEntry>,
    /// Every stream's key, concatenated.
    keys: Vec<u8>,
    /// The texts before the UUID of compact keys, numbered by their place.
    prefixes: Vec<Box<str>>,
    /// The positions of each stream with more than one event: lists of a header
    /// ([`list_header`]) and as many slots as its capacity, the first `length` used.
    many: Vec<u64>,
    /// Words of `many` that lists left behind when they moved.
    left_behind: usize,
    hasher: FastState,
}

struct StreamEntry {
    /// Offset (47 bits), form (1 bit: compact) and length (16 bits) of the key in `keys`.
    key: u64,
    /// The stream's position, or `MANY | i` when its positions are the list whose header
    /// is `many[i]`.
    positions: u64,
}

/// A list's header word: its length (high 32 bits) and capacity (low 32 bits).
fn list_header(len: usize, capacity: usize) -> u64 {
    ((len as u64) << 32) | capacity as u64
}

/// A list header's length and capacity.
fn list_parts(header: u64) -> (usize, usize) {
    ((header >> 32) as usize, (header & 0xffff_ffff) as usize)
}

/// The longest list: a stream's events past it stay out of the index (a stream of 4
/// billion events is beyond what a log of this format holds).
const MAX_LIST: usize = u32::MAX as usize / 2;

/// Words left behind below which `many` is never packed.
const PACK_AT_LEAST: usize = 256;

/// Marks an entry's `positions` as an index into `Streams::many` (positions stay below
/// 2^63: a log of that many events does not fit a disk).
const MANY: u64 = 1 << 63;

/// Marks an entry's `key` as a compact key (prefix number and UUID bytes).
const COMPACT: u64 = 1 << 16;

/// Length of a UUID's canonical text (`8-4-4-4-12` lowercase hex digits).
const UUID_TEXT: usize = 36;

/// Longest prefix a compact key can number; a longer one keeps the id as text.
const MAX_PREFIX: usize = 64;

/// The key an entry names in `keys`, with its form.
fn key_in(keys: &[u8], key: u64) -> (bool, &[u8]) {
    let start = (key >> 17) as usize;
    (
        key & COMPACT != 0,
        &keys[start..start + (key & 0xffff) as usize],
    )
}

/// The 16 bytes of `text` when it is a UUID in canonical form (lowercase, hyphens at
/// 8, 13, 18 and 23); `None` otherwise, so that each UUID has one text with a compact key.
fn uuid_bytes(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != UUID_TEXT {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut nibbles = 0;
    for (at, &c) in text.iter().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let value = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bytes[nibbles / 2] |= value << (4 * (1 - nibbles % 2));
        nibbles += 1;
    }
    Some(bytes)
}

/// The text before the UUID and the UUID's bytes, when `stream` ends in a canonical UUID
/// after at most [`MAX_PREFIX`] bytes.
fn split_uuid(stream: &str) -> Option<(&str, [u8; 16])> {
    let split = stream.len().checked_sub(UUID_TEXT)?;
    if split > MAX_PREFIX || !stream.is_char_boundary(split) {
        return None;
    }
    let (prefix, uuid) = stream.split_at(split);
    Some((prefix, uuid_bytes(uuid.as_bytes())?))
}

/// The compact key of a UUID after prefix number `number` (below 255).
fn compact_key(number: usize, uuid: [u8; 16]) -> Key<'static> {
    let mut bytes = [0u8; 17];
    bytes[0] = number as u8;
    bytes[1..].copy_from_slice(&uuid);
    Key::Compact(bytes)
}

/// A stream id's key, as looked up or stored.
enum Key<'a> {
    /// Prefix number and UUID bytes.
    Compact([u8; 17]),
    /// The id itself.
    Text(&'a [u8]),
}

impl Key<'_> {
    /// The form (compact or not) and bytes, as entries are compared.
    fn parts(&self) -> (bool, &[u8]) {
        match self {
            Key::Compact(bytes) => (true, bytes),
            Key::Text(text) => (false, text),
        }
    }
}

impl Streams {
    fn new() -> Self {
        Streams {
            table: HashTable::new(),
            keys: Vec::new(),
            prefixes: Vec::new(),
            many: Vec::new(),
            left_behind: 0,
            hasher: FastState::default(),
        }
    }

    /// The key of `stream`: compact when it ends in a canonical UUID after a numbered
    /// prefix. (A prefix is numbered when the first stream with it is pushed, so no id
    /// with a numbered prefix was ever kept as text.)
    fn key<'a>(&self, stream: &'a str) -> Key<'a> {
        let compact = split_uuid(stream).and_then(|(prefix, uuid)| {
            let number = self.prefixes.iter().position(|known| **known == *prefix)?;
            Some(compact_key(number, uuid))
        });
        compact.unwrap_or(Key::Text(stream.as_bytes()))
    }

    /// [`Streams::key`], numbering the prefix first if it is new and there is room.
    fn key_numbering<'a>(&mut self, stream: &'a str) -> Key<'a> {
        let Some((prefix, uuid)) = split_uuid(stream) else {
            return Key::Text(stream.as_bytes());
        };
        match self.prefixes.iter().position(|known| **known == *prefix) {
            Some(number) => compact_key(number, uuid),
            None if self.prefixes.len() < 255 => {
                self.prefixes.push(prefix.into());
                compact_key(self.prefixes.len() - 1, uuid)
            }
            None => Key::Text(stream.as_bytes()),
        }
    }

    fn hash(hasher: &FastState, parts: (bool, &[u8])) -> u64 {
        hasher.hash_one(parts)
    }

    /// The positions of `stream`, ascending.
    pub fn get(&self, stream: &str) -> Option<&[u64]> {
        let key = self.key(stream);
        let probe = key.parts();
        let entry = self.table.find(Self::hash(&self.hasher, probe), |entry| {
            key_in(&self.keys, entry.key) == probe
        })?;
        Some(if entry.positions & MANY == 0 {
            std::slice::from_ref(&entry.positions)
        } else {
            let at = (entry.positions & !MANY) as usize;
            let (len, _) = list_parts(self.many[at]);
            &self.many[at + 1..at + 1 + len]
        })
    }

    fn push(&mut self, stream: &str, position: u64) {
        if position >= MANY || self.keys.len() as u64 >= 1 << 47 {
            return;
        }
        let key = self.key_numbering(stream);
        let (compact, bytes) = key.parts();
        let Ok(len) = u16::try_from(bytes.len()) else {
            // Only a tampered envelope can name such a stream; it stays out of the index.
            return;
        };
        let Streams {
            table,
            keys,
            many,
            left_behind,
            hasher,
            ..
        } = self;
        let entry = table.entry(
            Self::hash(hasher, (compact, bytes)),
            |entry| key_in(keys, entry.key) == (compact, bytes),
            |entry| Self::hash(hasher, key_in(keys, entry.key)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                if entry.positions & MANY == 0 {
                    let first = entry.positions;
                    entry.positions = MANY | many.len() as u64;
                    many.extend_from_slice(&[list_header(2, 2), first, position]);
                } else {
                    let at = (entry.positions & !MANY) as usize;
                    let (len, capacity) = list_parts(many[at]);
                    if len >= MAX_LIST {
                        return;
                    }
                    if len < capacity {
                        many[at + 1 + len] = position;
                        many[at] = list_header(len + 1, capacity);
                    } else if at + 1 + capacity == many.len() {
                        // The last list grows in place.
                        many.push(position);
                        many[at] = list_header(len + 1, capacity + 1);
                    } else {
                        let moved = many.len();
                        let room = (capacity * 2).min(MAX_LIST);
                        many.push(list_header(len + 1, room));
                        many.extend_from_within(at + 1..at + 1 + len);
                        many.push(position);
                        many.resize(moved + 1 + room, 0);
                        entry.positions = MANY | moved as u64;
                        *left_behind += 1 + capacity;
                    }
                }
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                let form = if compact { COMPACT } else { 0 };
                let key = ((keys.len() as u64) << 17) | form | u64::from(len);
                vacant.insert(StreamEntry {
                    key,
                    positions: position,
                });
                keys.extend_from_slice(bytes);
            }
        }
        if self.left_behind >= PACK_AT_LEAST && self.left_behind * 4 > self.many.len() {
            self.pack();
        }
    }

    /// Writes every list again, one after another, each with room for its positions
    /// alone, and lets go of what lists left behind.
    fn pack(&mut self) {
        let mut packed = Vec::with_capacity(self.many.len() - self.left_behind);
        for entry in self.table.iter_mut() {
            if entry.positions & MANY == 0 {
                continue;
            }
            let at = (entry.positions & !MANY) as usize;
            let (len, _) = list_parts(self.many[at]);
            entry.positions = MANY | packed.len() as u64;
            packed.push(list_header(len, len));
            packed.extend_from_slice(&self.many[at + 1..at + 1 + len]);
        }
        self.many = packed;
        self.left_behind = 0;
    }

    /// Writes the streams for a checkpoint: prefixes, keys, and each entry with its
    /// positions, lists packed (the form [`Streams::decode`] reads).
    pub(super) fn encode(&self, out: &mut Encoder) {
        out.u64(self.prefixes.len() as u64);
        for prefix in &self.prefixes {
            out.bytes(prefix.as_bytes());
        }
        out.bytes(&self.keys);
        out.u64(self.table.len() as u64);
        let mut many = Vec::with_capacity(self.many.len() - self.left_behind);
        for entry in &self.table {
            out.u64(entry.key);
            if entry.positions & MANY == 0 {
                out.u64(entry.positions);
            } else {
                let at = (entry.positions & !MANY) as usize;
                let (len, _) = list_parts(self.many[at]);
                out.u64(MANY | many.len() as u64);
                many.push(list_header(len, len));
                many.extend_from_slice(&self.many[at + 1..at + 1 + len]);
            }
        }
        out.u64s(&many);
    }

    /// Reads what [`Streams::encode`] wrote, checking every entry's key and list against
    /// the arena and the lists (a bad one is an error, never a panic later), and hashing
    /// the entries into a table of this process's hasher.
    /// Every position must name one of `slots` events.
    pub(super) fn decode(input: &mut Decoder<impl Read>, slots: u64) -> Result<Self, String> {
        let mut streams = Streams::new();
        let prefixes = input.u64()?;
        if prefixes > 255 {
            return Err(format!("{prefixes} stream prefixes, at most 255"));
        }
        for _ in 0..prefixes {
            let prefix = String::from_utf8(input.bytes()?)
                .map_err(|_| "a stream prefix is not UTF-8".to_owned())?;
            streams.prefixes.push(prefix.into());
        }
        streams.keys = input.bytes()?;
        let entries = input.count(16)?;
        // Each entry is two words (key, positions), read a block at a time.
        let mut words = Vec::with_capacity(entries * 2);
        input.words(entries * 2, &mut words, u64::from_le_bytes)?;
        let raw = words.chunks_exact(2).map(|entry| (entry[0], entry[1]));
        streams.many = input.u64s()?;
        // Room for what is appended after the open (see `checkpoint::load`).
        streams.keys.reserve(streams.keys.len() / 8);
        streams.many.reserve(streams.many.len() / 8);
        streams.table = HashTable::with_capacity(entries + entries / 8);
        for (key, positions) in raw {
            let start = (key >> 17) as usize;
            let len = (key & 0xffff) as usize;
            if start
                .checked_add(len)
                .is_none_or(|end| end > streams.keys.len())
            {
                return Err("a stream key lies outside the key arena".to_owned());
            }
            let (compact, bytes) = key_in(&streams.keys, key);
            if compact && (len != 17 || usize::from(bytes[0]) >= streams.prefixes.len()) {
                return Err("a compact stream key names no prefix".to_owned());
            }
            let named = |position: &u64| (1..=slots).contains(position);
            if positions & MANY == 0 {
                if !named(&positions) {
                    return Err(format!(
                        "a stream names position {positions}, past the slots"
                    ));
                }
            } else {
                let at = (positions & !MANY) as usize;
                let (len, capacity) = streams
                    .many
                    .get(at)
                    .map(|header| list_parts(*header))
                    .ok_or_else(|| "a stream's list lies outside the lists".to_owned())?;
                if len > capacity || at + 1 + capacity > streams.many.len() {
                    return Err("a stream's list runs past the lists".to_owned());
                }
                if !streams.many[at + 1..at + 1 + len].iter().all(named) {
                    return Err("a stream's list names a position past the slots".to_owned());
                }
            }
            let hash = Self::hash(&streams.hasher, (compact, bytes));
            let Streams {
                table,
                keys,
                hasher,
                ..
            } = &mut streams;
            table.insert_unique(hash, StreamEntry { key, positions }, |entry| {
                Self::hash(hasher, key_in(keys, entry.key))
            });
        }
        Ok(streams)
    }
}

/// A running SHA-256 of every frame's header, in order, with its segment and offset: what
/// a checkpoint records of the frames it covers, so that an open can tell they are the
/// same frames (each header holds its body's checksum).
#[derive(Clone, Default)]
pub(crate) struct FrameDigest(Sha256);

impl FrameDigest {
    pub fn add(&mut self, segment: u32, offset: u64, header: &[u8]) {
        self.0.update(segment.to_le_bytes());
        self.0.update(offset.to_le_bytes());
        self.0.update(header);
    }

    pub fn value(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
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
    /// Every frame indexed so far (see [`FrameDigest`]).
    pub frames: FrameDigest,
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
            frames: FrameDigest::default(),
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

    /// The stream index, for a checkpoint.
    pub(super) fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Takes a checkpoint's events and streams for what the scan found them to cover.
    pub(super) fn install(&mut self, locations: Vec<u64>, lengths: Vec<u32>, streams: Streams) {
        self.locations = locations;
        self.lengths = lengths;
        self.streams = streams;
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

    /// A UUID's canonical text from 16 bytes, or a near miss of it (upper case, a
    /// hyphen moved, a letter past `f`) by `variant`.
    fn uuid_text(bytes: [u8; 16], variant: u8) -> String {
        let text = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
        match variant {
            1 => text.to_uppercase(),
            2 => format!("{}-{}", &text[..7], &text[7..]).replacen('-', "", 1),
            3 => format!("{}g", &text[..35]),
            4 => format!("{text}0"),
            _ => text,
        }
    }

    #[test]
    fn uuid_ids_are_kept_compact_and_other_ids_as_text() {
        let mut index = Index::new(Default::default());
        let id = "0193a5c4-7e1b-7c3d-9f00-112233445566";
        let at = |packed| Location { packed, len: 1 };
        index.push_event(at(0), Some(&format!("organization-{id}")));
        index.push_event(at(1), Some(&format!("organization-{}", id.to_uppercase())));
        index.push_event(at(2), Some(id));
        index.push_event(at(3), Some(&format!("organization-{id}")));
        let streams = &index.streams;
        // Two compact keys (17 bytes each) and one key kept as text.
        assert_eq!(streams.keys.len(), 17 + 17 + "organization-".len() + 36);
        assert_eq!(streams.prefixes.len(), 2);
        assert_eq!(
            index.stream(&format!("organization-{id}")).unwrap(),
            &[1, 4]
        );
        assert_eq!(
            index
                .stream(&format!("organization-{}", id.to_uppercase()))
                .unwrap(),
            &[2]
        );
        assert_eq!(index.stream(id).unwrap(), &[3]);
        assert!(index.stream(&format!("connection-{id}")).is_none());
        assert!(index.stream(&format!("organization-{id}0")).is_none());
        assert!(index.stream(&format!("rganization-{id}")).is_none());
    }

    #[test]
    fn prefixes_past_the_255th_keep_their_ids_as_text() {
        let mut index = Index::new(Default::default());
        let id = "0193a5c4-7e1b-7c3d-9f00-112233445566";
        for kind in 0..300u64 {
            index.push_event(
                Location {
                    packed: kind,
                    len: 1,
                },
                Some(&format!("kind{kind}-{id}")),
            );
        }
        assert_eq!(index.streams.prefixes.len(), 255);
        for kind in 0..300u64 {
            assert_eq!(
                index.stream(&format!("kind{kind}-{id}")).unwrap(),
                &[kind + 1]
            );
        }
        assert!(index.stream(&format!("kind300-{id}")).is_none());
    }

    #[test]
    fn lists_that_grow_in_turns_are_packed_and_answer_whole() {
        // Streams that take turns: every list but the last moves to grow, leaving words
        // behind, until the lists are packed again.
        let mut index = Index::new(Default::default());
        let mut expected: Vec<Vec<u64>> = vec![Vec::new(); 500];
        let mut packs = 0;
        for _round in 0..10 {
            for (stream, positions) in expected.iter_mut().enumerate() {
                let before = index.streams.left_behind;
                index.push_event(
                    Location { packed: 0, len: 1 },
                    Some(&format!("stream-{stream}")),
                );
                positions.push(index.slots());
                let streams = &index.streams;
                if streams.left_behind < before {
                    packs += 1;
                }
                assert!(
                    streams.left_behind < PACK_AT_LEAST
                        || streams.left_behind * 4 <= streams.many.len()
                );
            }
        }
        assert!(packs > 0, "the lists were never packed");
        for (stream, positions) in expected.iter().enumerate() {
            assert_eq!(
                index.stream(&format!("stream-{stream}")).unwrap(),
                positions.as_slice()
            );
        }
        // A header and its positions per list, with at most as much again of room and
        // of words left behind.
        let live: usize = expected.iter().map(|positions| 1 + positions.len()).sum();
        assert!(
            index.streams.many.len() <= live * 2,
            "{}",
            index.streams.many.len()
        );
    }

    proptest::proptest! {
        /// The index answers like a map of stream id to positions, through the table's
        /// growth (its hashes are recomputed from the keys then), whatever the mix of
        /// compact keys, texts that almost are UUIDs, and other ids.
        #[test]
        fn streams_answer_like_a_map(
            streams in proptest::collection::vec((0usize..4, 0u8..40, 0u8..6), 1..2_000),
        ) {
            let prefixes = ["connection-", "organization-", "", "é-"];
            let name = |(prefix, id, variant): (usize, u8, u8)| {
                let mut bytes = [0x5a; 16];
                bytes[15] = id;
                if variant == 5 {
                    format!("{}{id:04}", prefixes[prefix])
                } else {
                    format!("{}{}", prefixes[prefix], uuid_text(bytes, variant))
                }
            };
            let mut index = Index::new(Default::default());
            let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
            for (slot, stream) in streams.iter().enumerate() {
                let name = name(*stream);
                index.push_event(Location { packed: slot as u64, len: 1 }, Some(&name));
                expected.entry(name).or_default().push(slot as u64 + 1);
            }
            for prefix in 0..4 {
                for id in 0..45 {
                    for variant in 0..6 {
                        let name = name((prefix, id, variant));
                        proptest::prop_assert_eq!(
                            index.stream(&name),
                            expected.get(&name).map(Vec::as_slice)
                        );
                    }
                }
            }
        }
    }
}
