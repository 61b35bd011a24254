//! Layout of the audit database: one sled tree, `timeline`, with kind-prefixed keys (so
//! that one write is one atomic `apply_batch`); and of the checkpoints' own database,
//! one `checkpoints` tree.
//!
//! | kind | key                                              | value                                |
//! |------|--------------------------------------------------|--------------------------------------|
//! | `M`  | `M`                                              | prost [`Meta`]: format, epoch, applied position and hash, runs of the base |
//! | `E`  | `E`, last position (u64 BE)                      | entry chunk: the stored entries of consecutive positions |
//! | `T`  | `T`, time (i64 ns, sign-flipped BE), last pos.   | empty: one per entry chunk, its last (largest) indexed time |
//! | `L`  | `L`, position of a write, part (u32 BE)          | that write's postings (pieces), until merged into the base |
//! | `B`  | `B`, run (u32 BE), id key, first position        | base block: pieces of every index, sorted by id key, then position |
//! | `checkpoints` tree (own database) | sequence (u64 BE)   | prost `Checkpoint`: never rebuilt    |
//!
//! About two sled keys per chunk of entries (tens of events) instead of about six keys per
//! event in format 1 (nine trees: entries, four indexes, time, domain history, domains of
//! an organization, meta).
//!
//! **Entries.** Every log position has exactly one entry. Entries are written in chunks of
//! consecutive positions (at most [`CHUNK_ENTRIES`] entries or about [`CHUNK_BYTES`]),
//! keyed by the chunk's last position: the chunk holding position *p* is the first `E` key
//! `>= p`. A chunk is `varint n`, the first indexed time (i64 BE), `n - 1` varint time
//! increments (indexed times are the running maximum of `recorded_at`, so never
//! decrease), `n` varint lengths, then the `n` stored entries one after the other, as one
//! LZ4 block (entries of consecutive events repeat ids, actors, field names and phrasing:
//! on the benchmark's log a chunk shrinks about sevenfold, and sled's CPU, which grows
//! with the bytes it writes, was a third of a rebuild's). A stored entry is `varint
//! length`, the prost `AuditEntry` without `position` and `action` (derived again on read
//! from the chunk and the event type), or a *stub* ([`STUB`] and the organization id:
//! an entry described when read), then prost [`DomainChanges`]: the domains the
//! event made an organization claim or stop claiming (where point-in-time routing finds
//! which organizations to fold; up to format 3 every route change was stored here, whole,
//! and computing them was half of a rebuild's CPU on a log in lifecycle order).
//!
//! **Postings.** The indexes are postings: an *id key* (`kind` byte, len u16 BE, id) and
//! the ascending positions carrying it; [`Index`] lists the kinds (organization,
//! connection, actor, event type, claims of a domain, domains an organization newly
//! claims, connections an organization made known, the connection and setup-link streams
//! whose first event named an organization).
//! Postings of recent writes are kept in memory and in one `L` row per write (read back
//! at start). Once they cover enough positions they become a *run* of the base (`B`
//! rows), in the batch that records it in [`Meta`] and deletes the `L` rows; the newest
//! runs are merged with it while they are no larger than it (the logarithmic method: a
//! posting is rewritten about log2(positions / merge size) times, and a query looks up
//! that many runs at most). Runs cover consecutive position ranges, oldest first. A
//! *piece* is `id key`, `varint count`, `varint body length`, body = first position and
//! `count - 1` increments (varints). Base blocks hold pieces (about [`BLOCK_BYTES`]
//! each, so sled nodes stay well below its blob size), sorted by id key then position,
//! and are keyed by their run and first piece; a list can span blocks.
//!
//! Big-endian integers make byte order numeric order; the length prefix keeps one id's
//! keys contiguous whatever bytes the id holds.

use prost::bytes::Buf;
use prost::Message;

/// The on-disk format of the audit database. Any other value (or a database of the
/// nine-tree format 1, detected by its trees) is cleared and rebuilt from the log.
/// 6: format 5's layout, written without the half-commit writes that could lose
/// postings (`lib.rs`).
pub(crate) const FORMAT: u32 = 6;

/// The tree rebuilt from the log.
pub(crate) const TIMELINE: &str = "timeline";
/// Signed checkpoints, in their own database (`Checkpointer::open_at`; earlier versions
/// kept this tree in the audit database, and it is moved out from there).
pub(crate) const CHECKPOINTS: &str = "checkpoints";
/// In the checkpoints' database: (who asked, request id) → the checkpoint it made.
pub(crate) const CHECKPOINT_REQUESTS: &str = "checkpoint_requests";
/// The trees of format 1, dropped when found.
pub(crate) const FORMAT_1_TREES: [&str; 9] = [
    "meta",
    "entries",
    "by_org",
    "by_connection",
    "by_actor",
    "by_type",
    "time",
    "domain_history",
    "org_domains",
];

pub(crate) const META: &[u8] = b"M";
pub(crate) const ENTRY: u8 = b'E';
pub(crate) const TIME: u8 = b'T';
pub(crate) const LOG: u8 = b'L';
pub(crate) const BASE: u8 = b'B';

/// Most entries in one chunk.
pub(crate) const CHUNK_ENTRIES: usize = 64;
/// A chunk is closed once its entries reach this many bytes.
pub(crate) const CHUNK_BYTES: usize = 6 * 1024;
/// A base block (or an `L` row) is closed once its pieces reach this many bytes.
pub(crate) const BLOCK_BYTES: usize = 6 * 1024;
/// Most positions in one piece.
pub(crate) const PIECE_POSITIONS: usize = 2048;

/// The postings kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Index {
    /// Entries whose target is the organization.
    Organization = 1,
    /// Entries about the connection (a switch is about both connections).
    Connection = 2,
    /// Entries caused by the actor.
    Actor = 3,
    /// Entries of the envelope event type.
    EventType = 4,
    /// Events by which an organization claimed the domain or stopped claiming it (their
    /// stored entry says which).
    Domain = 5,
    /// Events by which the organization newly claimed a domain.
    OrgDomain = 6,
    /// Events that made a connection of the organization known (its stream is read when
    /// the organization's routes are folded for a point in time).
    OrgConnection = 7,
    /// The first event of each connection and setup-link stream that named the
    /// organization (its stream is one of the organization's: what an entry of the
    /// organization is described from, `describe::organization_local`).
    OrgStream = 8,
}

impl Index {
    pub(crate) const ALL: [Index; 8] = [
        Index::Organization,
        Index::Connection,
        Index::Actor,
        Index::EventType,
        Index::Domain,
        Index::OrgDomain,
        Index::OrgConnection,
        Index::OrgStream,
    ];

    /// The name of the format-1 tree this index replaces (used by `dump`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Index::Organization => "by_org",
            Index::Connection => "by_connection",
            Index::Actor => "by_actor",
            Index::EventType => "by_type",
            Index::Domain => "domain_history",
            Index::OrgDomain => "org_domains",
            Index::OrgConnection => "org_connections",
            Index::OrgStream => "org_streams",
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|i| *i as u8 == byte)
    }
}

/// What the database records about itself (the `M` row).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Meta {
    /// [`FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The store epoch of the log it was built from.
    #[prost(bytes = "vec", tag = "2")]
    pub epoch: Vec<u8>,
    /// The last log position applied (entries, times, domain history, postings).
    #[prost(uint64, tag = "3")]
    pub position: u64,
    /// The chain hash of the event at `position`.
    #[prost(bytes = "vec", tag = "4")]
    pub hash: Vec<u8>,
    /// The base holds the postings of positions up to here; `L` rows hold the rest.
    #[prost(uint64, tag = "6")]
    pub base_position: u64,
    /// The runs of the base, oldest first (each follows the previous one's last
    /// position; the first starts at position 1).
    #[prost(message, repeated, tag = "7")]
    pub runs: Vec<RunRecord>,
    /// The id the next run gets.
    #[prost(uint32, tag = "8")]
    pub next_run: u32,
}

/// One run of the base.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RunRecord {
    /// The id in its `B` keys.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// The last position whose postings it holds.
    #[prost(uint64, tag = "2")]
    pub last: u64,
    /// How many postings it holds (merges compare run sizes).
    #[prost(uint64, tag = "3")]
    pub postings: u64,
}

/// A domain an event made an organization claim, or stop claiming. (Tag 3, the route
/// from then on, was written up to format 3; routes are now folded when asked.)
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DomainChange {
    /// The normalized domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// The organization that claims the domain from then on; empty: the organization
    /// whose event this is stopped claiming it.
    #[prost(string, tag = "2")]
    pub organization_id: String,
}

/// The domains one event changed, stored after its entry.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DomainChanges {
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<DomainChange>,
}

/// A stored entry: `varint length`, the entry's bytes, the [`DomainChanges`] bytes.
#[cfg(test)]
pub(crate) fn stored(entry: &[u8], changes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.len() + changes.len() + 3);
    put_varint(&mut out, entry.len() as u64);
    out.extend_from_slice(entry);
    out.extend_from_slice(changes);
    out
}

/// The first part of an entry's stored form (see [`stored`]): `varint length`, then the
/// entry's bytes. For tests: entries are written by `describe::encode_entry`, which gives
/// these bytes without building the details as messages.
#[cfg(test)]
pub(crate) fn encode_entry(entry: &signpost_api::audit::v1::AuditEntry) -> Vec<u8> {
    let length = entry.encoded_len();
    let mut out = Vec::with_capacity(length + 5);
    put_varint(&mut out, length as u64);
    entry.encode_raw(&mut out);
    out
}

/// Appends the stored form of an entry made by [`encode_entry`] and of its domain
/// `changes` to `out` (what [`stored`] makes of their encodings), the changes encoded in
/// place.
pub(crate) fn put_stored(out: &mut Vec<u8>, entry: &[u8], changes: Option<&DomainChanges>) {
    out.extend_from_slice(entry);
    if let Some(changes) = changes {
        changes.encode_raw(out);
    }
}

/// The first byte of a *stub*'s entry bytes: an entry written without being described
/// (organization-local events folded by a catch-up of the audit task's own), described
/// when read from its organization's streams. No prost `AuditEntry` encoding starts
/// with it (a field key byte of `0xFF` would be a field numbered 16 or more, and the
/// entry's fields are numbered 1 to 9), and a described entry is never empty.
pub(crate) const STUB: u8 = 0xFF;

/// The entry bytes of a stub for an entry of `organization_id`, as
/// `describe::encode_entry` gives a described one (`varint length`, then the bytes):
/// [`STUB`], then the organization id.
pub(crate) fn encode_stub(organization_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(organization_id.len() + 3);
    put_varint(&mut out, organization_id.len() as u64 + 1);
    out.push(STUB);
    out.extend_from_slice(organization_id.as_bytes());
    out
}

/// The organization of a stub's entry bytes (`None`: a described entry).
pub(crate) fn stub_organization(entry: &[u8]) -> Result<Option<&str>, Malformed> {
    match entry.split_first() {
        Some((&STUB, organization)) => std::str::from_utf8(organization)
            .map(Some)
            .map_err(|_| Malformed),
        _ => Ok(None),
    }
}

/// The `event_type` (field 9) of an entry's bytes as stored (a prost `AuditEntry`), by
/// walking its top-level fields.
fn stored_event_type(mut entry: &[u8]) -> Result<&str, Malformed> {
    let mut event_type = "";
    while !entry.is_empty() {
        let key = get_varint(&mut entry)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                get_varint(&mut entry)?;
            }
            1 | 5 => {
                let size = if wire_type == 1 { 8 } else { 4 };
                entry = entry.get(size..).ok_or(Malformed)?;
            }
            2 => {
                let length = usize::try_from(get_varint(&mut entry)?).map_err(|_| Malformed)?;
                let (value, rest) = entry.split_at_checked(length).ok_or(Malformed)?;
                if field == 9 {
                    event_type = std::str::from_utf8(value).map_err(|_| Malformed)?;
                }
                entry = rest;
            }
            _ => return Err(Malformed),
        }
    }
    Ok(event_type)
}

/// A described entry's bytes as stored (without `position` and `action`) made the
/// encoding of the whole `AuditEntry` at `position`: the two fields appended (a decoder
/// takes fields in any order), the action derived from the event type as a decoded read
/// derives it.
pub(crate) fn wire_entry(entry: &[u8], position: u64) -> Result<Vec<u8>, Malformed> {
    let action = crate::describe::action_name(stored_event_type(entry)?).unwrap_or("unknown");
    let mut out = Vec::with_capacity(entry.len() + 12 + action.len());
    out.extend_from_slice(entry);
    if position != 0 {
        prost::encoding::uint64::encode(1, &position, &mut out);
    }
    prost::encoding::string::encode(4, &action.to_owned(), &mut out);
    Ok(out)
}

/// A stored entry's (entry bytes, [`DomainChanges`] bytes).
pub(crate) fn split_stored(mut stored: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let length = usize::try_from(get_varint(&mut stored)?).map_err(|_| Malformed)?;
    if stored.len() < length {
        return Err(Malformed);
    }
    Ok(stored.split_at(length))
}

/// `kind` then `position`, big-endian.
pub(crate) fn positioned(kind: u8, position: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = kind;
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// `position` as a key (checkpoint sequences).
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

fn push_id(key: &mut Vec<u8>, id: &str) {
    let bytes = id.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
}

/// The format-1 index key of `id` at `position` (len u16 BE, id, position): what `dump`
/// lists, so a dump compares across layouts.
pub(crate) fn indexed(id: &[u8], position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 10);
    key.extend_from_slice(&(id.len() as u16).to_be_bytes());
    key.extend_from_slice(id);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// A time as nanoseconds since the epoch, made byte-orderable (sign bit flipped).
pub(crate) fn time_bytes(nanos: i64) -> [u8; 8] {
    ((nanos as u64) ^ (1 << 63)).to_be_bytes()
}

/// A `T` key.
pub(crate) fn time(nanos: i64, position: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = TIME;
    key[1..9].copy_from_slice(&time_bytes(nanos));
    key[9..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The id key of `id` in `index`: `kind`, len (u16 BE), id.
pub(crate) fn id_key(index: Index, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + id.len());
    put_id_key(&mut key, index, id);
    key
}

/// Writes [`id_key`] into `key` (cleared first), to look it up without allocating.
pub(crate) fn put_id_key(key: &mut Vec<u8>, index: Index, id: &str) {
    key.clear();
    key.push(index as u8);
    push_id(key, id);
}

/// Appends [`id_key`] to `out`.
pub(crate) fn append_id_key(out: &mut Vec<u8>, index: Index, id: &str) {
    out.push(index as u8);
    push_id(out, id);
}

/// The length of the id key at the start of `keys` (`None`: malformed or empty).
pub(crate) fn id_key_len(keys: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*keys.get(1)?, *keys.get(2)?]);
    let end = 3 + usize::from(len);
    (end <= keys.len()).then_some(end)
}

/// Splits an id key into its index and id bytes.
pub(crate) fn split_id_key(id_key: &[u8]) -> Option<(Index, &[u8])> {
    let index = Index::from_byte(*id_key.first()?)?;
    Some((index, id_key.get(3..)?))
}

/// The prefix of every `B` key of run `run`.
pub(crate) fn base_prefix(run: u32) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = BASE;
    key[1..].copy_from_slice(&run.to_be_bytes());
    key
}

/// The `B` key of a block of run `run` whose first piece is `id_key` from `position`.
pub(crate) fn base(run: u32, id_key: &[u8], position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + id_key.len() + 8);
    key.extend_from_slice(&base_prefix(run));
    key.extend_from_slice(id_key);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The smallest key above every key starting with `prefix` (`None`: there is none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: u64) {
    prost::encoding::encode_varint(value, out);
}

pub(crate) fn get_varint(input: &mut &[u8]) -> Result<u64, Malformed> {
    if input.is_empty() {
        return Err(Malformed);
    }
    prost::encoding::decode_varint(input).map_err(|_| Malformed)
}

/// Stored bytes that do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Appends the piece `id_key` / `positions` (ascending, non-empty) to `out`.
pub(crate) fn put_piece(out: &mut Vec<u8>, id_key: &[u8], positions: &[u64]) {
    let mut body = Vec::with_capacity(positions.len() * 2 + 8);
    let mut previous = 0;
    for (i, &position) in positions.iter().enumerate() {
        put_varint(
            &mut body,
            if i == 0 {
                position
            } else {
                position - previous
            },
        );
        previous = position;
    }
    out.extend_from_slice(id_key);
    put_varint(out, positions.len() as u64);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(&body);
}

/// One piece, borrowed from a block or an `L` row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'a> {
    pub id_key: &'a [u8],
    pub count: u64,
    body: &'a [u8],
}

impl<'a> Piece<'a> {
    /// Its positions, ascending.
    pub(crate) fn positions(&self) -> Positions<'a> {
        Positions {
            body: self.body,
            left: self.count,
            previous: 0,
        }
    }
}

/// The positions of a piece.
pub(crate) struct Positions<'a> {
    body: &'a [u8],
    left: u64,
    previous: u64,
}

impl Iterator for Positions<'_> {
    type Item = Result<u64, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(get_varint(&mut self.body).map(|step| {
            self.previous += step;
            self.previous
        }))
    }
}

/// The pieces of a block or an `L` row, in order.
pub(crate) struct Pieces<'a> {
    rest: &'a [u8],
}

pub(crate) fn pieces(value: &[u8]) -> Pieces<'_> {
    Pieces { rest: value }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Result<Piece<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read())
    }
}

impl<'a> Pieces<'a> {
    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn read(&mut self) -> Result<Piece<'a>, Malformed> {
        let rest = self.rest;
        if rest.len() < 3 {
            return Err(Malformed);
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let id_key = rest.get(..3 + len).ok_or(Malformed)?;
        let mut cursor = &rest[3 + len..];
        let count = get_varint(&mut cursor)?;
        let body_len = usize::try_from(get_varint(&mut cursor)?).map_err(|_| Malformed)?;
        if cursor.remaining() < body_len || count == 0 {
            return Err(Malformed);
        }
        let body = &cursor[..body_len];
        self.rest = &cursor[body_len..];
        Ok(Piece {
            id_key,
            count,
            body,
        })
    }
}

/// Builds an entry chunk.
#[derive(Default)]
pub(crate) struct ChunkBuilder {
    /// Position of the first entry.
    pub first: u64,
    times: Vec<i64>,
    lengths: Vec<usize>,
    bytes: Vec<u8>,
}

impl ChunkBuilder {
    pub(crate) fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.times.len() >= CHUNK_ENTRIES || self.bytes.len() >= CHUNK_BYTES
    }

    /// Adds the entry at the next position (`position` must follow the last one).
    #[cfg(test)]
    pub(crate) fn push(&mut self, position: u64, time: i64, entry: &[u8]) {
        self.push_with(position, time, |bytes| bytes.extend_from_slice(entry));
    }

    /// Adds the entry at the next position, written by `write` straight into the chunk;
    /// returns its length.
    pub(crate) fn push_with(
        &mut self,
        position: u64,
        time: i64,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        if self.times.is_empty() {
            self.first = position;
        }
        debug_assert_eq!(position, self.first + self.times.len() as u64);
        let start = self.bytes.len();
        write(&mut self.bytes);
        let length = self.bytes.len() - start;
        self.times.push(time);
        self.lengths.push(length);
        length
    }

    /// The `E` and `T` rows of the chunk (`E` key, `E` value, `T` key); empties it.
    pub(crate) fn finish(&mut self) -> ([u8; 9], Vec<u8>, [u8; 17]) {
        let n = self.times.len();
        let last = self.first + n as u64 - 1;
        let most = lz4_flex::block::get_maximum_output_size(self.bytes.len());
        let mut value = Vec::with_capacity(most + 8 + n * 4);
        put_varint(&mut value, n as u64);
        value.extend_from_slice(&self.times[0].to_be_bytes());
        for pair in self.times.windows(2) {
            put_varint(&mut value, pair[1].saturating_sub(pair[0]) as u64);
        }
        for length in &self.lengths {
            put_varint(&mut value, *length as u64);
        }
        let start = value.len();
        value.resize(start + most, 0);
        let written = lz4_flex::block::compress_into(&self.bytes, &mut value[start..])
            .expect("room for LZ4's worst case");
        value.truncate(start + written);
        let time_key = time(self.times[n - 1], last);
        self.times.clear();
        self.lengths.clear();
        self.bytes.clear();
        (positioned(ENTRY, last), value, time_key)
    }
}

/// A decoded chunk header (the stored value holds the entries after it).
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Position of the first entry.
    pub first: u64,
    /// The indexed time of each entry.
    pub times: Vec<i64>,
    /// (offset, length) of each entry in `body`.
    spans: Vec<(usize, usize)>,
    /// The stored entries one after the other (empty when only the header was decoded).
    body: Vec<u8>,
}

/// LZ4 expands nothing more than about 255-fold: a header claiming more is corrupt (and
/// is not allowed to make us allocate it).
const LZ4_MOST_RATIO: usize = 255;

impl Chunk {
    /// Decodes the chunk stored under the `E` key of `last`, its entries included.
    pub(crate) fn decode(last: u64, value: &[u8]) -> Result<Self, Malformed> {
        let (mut chunk, compressed) = Self::decode_header(last, value)?;
        let length = chunk
            .spans
            .last()
            .map_or(0, |(offset, length)| offset + length);
        if length > compressed.len().saturating_mul(LZ4_MOST_RATIO) + 16 {
            return Err(Malformed);
        }
        let mut body = vec![0; length];
        let written =
            lz4_flex::block::decompress_into(compressed, &mut body).map_err(|_| Malformed)?;
        if written != length {
            return Err(Malformed);
        }
        chunk.body = body;
        Ok(chunk)
    }

    /// Decodes the chunk's header only (positions and times: [`Chunk::entry`] then finds
    /// nothing); also returns the compressed entries.
    pub(crate) fn decode_header(last: u64, value: &[u8]) -> Result<(Self, &[u8]), Malformed> {
        let mut cursor = value;
        let n = usize::try_from(get_varint(&mut cursor)?).map_err(|_| Malformed)?;
        if n == 0 || n > 1 << 16 || cursor.len() < 8 || last < n as u64 {
            return Err(Malformed);
        }
        let mut time = i64::from_be_bytes(cursor[..8].try_into().map_err(|_| Malformed)?);
        cursor = &cursor[8..];
        let mut times = Vec::with_capacity(n);
        times.push(time);
        for _ in 1..n {
            time = time.saturating_add(get_varint(&mut cursor)? as i64);
            times.push(time);
        }
        let mut lengths = Vec::with_capacity(n);
        for _ in 0..n {
            lengths.push(usize::try_from(get_varint(&mut cursor)?).map_err(|_| Malformed)?);
        }
        let mut offset = 0usize;
        let mut spans = Vec::with_capacity(n);
        for length in lengths {
            spans.push((offset, length));
            offset = offset.checked_add(length).ok_or(Malformed)?;
        }
        let chunk = Self {
            first: last + 1 - n as u64,
            times,
            spans,
            body: Vec::new(),
        };
        Ok((chunk, cursor))
    }

    pub(crate) fn last(&self) -> u64 {
        self.first + self.spans.len() as u64 - 1
    }

    /// The stored bytes of the entry at `position`.
    pub(crate) fn entry(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        let (offset, length) = *self.spans.get(index)?;
        self.body.get(offset..offset + length)
    }

    /// The indexed time of the entry at `position`.
    pub(crate) fn time(&self, position: u64) -> Option<i64> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        self.times.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signpost_api::audit::v1::AuditEntry;

    #[test]
    fn time_keys_sort_numerically_across_the_epoch() {
        assert!(time(-5, 1) < time(-1, 1));
        assert!(time(-1, 9) < time(0, 1));
        assert!(time(0, 1) < time(1, 0));
        assert!(time(7, 1) < time(7, 2));
    }

    #[test]
    fn id_keys_of_one_id_are_contiguous_and_ordered_by_position() {
        let a1 = base(1, &id_key(Index::Organization, "a"), 1);
        let a2 = base(1, &id_key(Index::Organization, "a"), 256);
        let ab = base(1, &id_key(Index::Organization, "ab"), 0);
        let next = base(2, &id_key(Index::Organization, "a"), 0);
        assert!(a1 < a2);
        assert!(
            a2 < ab,
            "a longer id sorts after every key of the shorter one"
        );
        assert!(ab < next);
        assert!(a1.starts_with(&base_prefix(1)));
        assert_eq!(trailing_position(&a2), 256);
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255]), None);
    }

    #[test]
    fn pieces_round_trip() {
        let mut value = Vec::new();
        let a = id_key(Index::Actor, "token-admin");
        let b = id_key(Index::EventType, "");
        put_piece(&mut value, &a, &[1, 2, 300, 70_000]);
        put_piece(&mut value, &b, &[u64::MAX - 1]);
        let read: Vec<_> = pieces(&value).map(Result::unwrap).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].id_key, a.as_slice());
        assert_eq!(
            read[0].positions().map(Result::unwrap).collect::<Vec<_>>(),
            [1, 2, 300, 70_000]
        );
        assert_eq!(read[1].positions().next(), Some(Ok(u64::MAX - 1)));
        assert_eq!(split_id_key(&a), Some((Index::Actor, &b"token-admin"[..])));
        assert!(pieces(&value[..value.len() - 1])
            .collect::<Result<Vec<_>, _>>()
            .is_err());
    }

    #[test]
    fn stored_entries_split_into_entry_and_changes() {
        let bytes = stored(b"entry", b"changes");
        assert_eq!(split_stored(&bytes), Ok((&b"entry"[..], &b"changes"[..])));
        assert_eq!(split_stored(&stored(b"", b"")), Ok((&b""[..], &b""[..])));
        assert!(split_stored(&bytes[..3]).is_err());
    }

    #[test]
    fn entries_written_in_place_are_their_stored_form() {
        let entry = AuditEntry {
            summary: "Group Partners assigned".into(),
            action: String::new(),
            ..AuditEntry::default()
        };
        let changes = DomainChanges {
            changes: vec![DomainChange {
                domain: "acme.example".into(),
                organization_id: "org-1".into(),
            }],
        };
        for changes in [None, Some(&changes)] {
            let mut out = b"before".to_vec();
            put_stored(&mut out, &encode_entry(&entry), changes);
            let encoded_changes = changes.map(Message::encode_to_vec).unwrap_or_default();
            let mut expected = b"before".to_vec();
            expected.extend(stored(&entry.encode_to_vec(), &encoded_changes));
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn chunks_round_trip() {
        let mut builder = ChunkBuilder::default();
        builder.push(7, -3, b"seven");
        builder.push(8, 10, b"");
        builder.push(9, 10, b"nine!");
        let (key, value, time_key) = builder.finish();
        assert!(builder.is_empty());
        assert_eq!(key, positioned(ENTRY, 9));
        assert_eq!(time_key, time(10, 9));
        let chunk = Chunk::decode(9, &value).unwrap();
        assert_eq!((chunk.first, chunk.last()), (7, 9));
        assert_eq!(chunk.entry(7), Some(&b"seven"[..]));
        assert_eq!(chunk.entry(8), Some(&b""[..]));
        assert_eq!(chunk.entry(9), Some(&b"nine!"[..]));
        assert_eq!(chunk.entry(10), None);
        assert_eq!(chunk.entry(6), None);
        assert_eq!(chunk.time(7), Some(-3));
        assert_eq!(chunk.times, [-3, 10, 10]);
        assert!(Chunk::decode(9, &value[..value.len() - 1]).is_err());
        let (header, _) = Chunk::decode_header(9, &value).unwrap();
        assert_eq!(
            (&header.times[..], header.entry(7)),
            (&[-3, 10, 10][..], None)
        );
    }

    #[test]
    fn chunk_entries_are_compressed_and_corrupt_chunks_refused() {
        let mut builder = ChunkBuilder::default();
        let entry = b"group \"group-12\" role changed from role-12 to role-62 by bench loader";
        for position in 1..=CHUNK_ENTRIES as u64 {
            builder.push(position, 5, entry);
        }
        let (_, value, _) = builder.finish();
        assert!(
            value.len() < CHUNK_ENTRIES * entry.len() / 4,
            "{} bytes",
            value.len()
        );
        let chunk = Chunk::decode(CHUNK_ENTRIES as u64, &value).unwrap();
        assert_eq!(chunk.entry(CHUNK_ENTRIES as u64), Some(&entry[..]));

        // A header claiming far more than the block can hold: refused before allocating.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1);
        huge.extend_from_slice(&0i64.to_be_bytes());
        put_varint(&mut huge, 1 << 40);
        huge.extend_from_slice(&lz4_flex::block::compress(b"tiny"));
        assert!(Chunk::decode(1, &huge).is_err());
        // Lengths that do not add up to what the block holds.
        let mut short = Vec::new();
        put_varint(&mut short, 1);
        short.extend_from_slice(&0i64.to_be_bytes());
        put_varint(&mut short, 3);
        short.extend_from_slice(&lz4_flex::block::compress(b"tiny"));
        assert!(Chunk::decode(1, &short).is_err());
        // Garbage instead of a block.
        let mut garbage = short[..short.len() - 6].to_vec();
        garbage.extend_from_slice(&[0xff; 6]);
        assert!(Chunk::decode(1, &garbage).is_err());
    }
}
