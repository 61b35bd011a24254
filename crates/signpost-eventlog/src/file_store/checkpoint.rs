//! The index checkpoint: the open scan's indexing, saved when the store closes.
//!
//! Most of an open scan's time is indexing, not reading: each event's stream id read out of
//! its envelope, its UUID parsed, its position appended to its stream's list. When the store
//! closes cleanly the sequencer writes the index to `<dir>/index` (temp file, `fsync`, rename),
//! and the next open takes from it what the scan would have rebuilt. The checkpoint is a cache
//! of what the segments say and is never trusted over them:
//!
//! - the scan still reads every frame and checks its checksums, so damage is found and judged
//!   exactly as without a checkpoint;
//! - up to the place the checkpoint covers, every event record must lie where the checkpoint's
//!   slot for it says, the frames' headers (each holds its body's checksum) must hash to the
//!   [`FrameDigest`](super::index::FrameDigest) it recorded, and the head must be the one it
//!   recorded;
//! - any difference, or damage before that place, and the open drops the checkpoint and scans
//!   the segments whole, as if there were none: judging damage, and cutting a torn tail, is
//!   only ever done by that scan;
//! - the file carries its own magic and version, the store's epoch and a CRC-32 of its bytes:
//!   a file of another store or version, or a torn one, is not used.
//!
//! Past the covered place the scan indexes as usual: a crash leaves the checkpoint of the last
//! clean close, and the events appended since are indexed one by one.
//!
//! The digest proves the frames unchanged, not that the streams were filed by this code: the
//! file is as open to whoever can write the data directory as the audit database is. So
//! reads check what they hand over (every event read for a stream must name that stream, or
//! the read fails with `Corrupt`), the loaded entries are bounds-checked (no position past
//! the slots, no key outside the arena), and the chain verification at start checks every
//! stream's versions from the events themselves.
//!
//! Layout (little-endian): magic, version, epoch (16 bytes), covered segment (u32) and offset
//! (u64), frame digest (32), head position (u64) and hash (32), slots (u64) with every slot's
//! location (u64) then length (u32), the streams (`Streams::encode`), and the CRC-32 of all
//! of it. For a million events on 110,000 streams it is about 24 MiB.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::format::io_error;
use super::index::{Index, Streams};
use super::recover::sync_dir;
use crate::error::LogError;
use crate::types::Head;

/// The checkpoint's file in the log directory.
pub(crate) const CHECKPOINT_FILE: &str = "index";
const CHECKPOINT_TEMP_FILE: &str = "index.tmp";
const MAGIC: [u8; 8] = *b"SPINDEX\0";
const VERSION: u32 = 1;

/// A checkpoint as read, before the scan has checked it against the segments.
pub(crate) struct Checkpoint {
    /// Where the covered frames end (the place of the next frame): segment and offset.
    pub segment: u32,
    pub offset: u64,
    /// The covered frames' [`FrameDigest`](super::index::FrameDigest).
    pub digest: [u8; 32],
    /// The head the last covered frame recorded.
    pub head: Head,
    /// Per slot: packed location and length of the event record.
    pub locations: Vec<u64>,
    pub lengths: Vec<u32>,
    pub streams: Streams,
}

/// Little-endian writer of a checkpoint's fields.
pub(crate) struct Encoder(Vec<u8>);

impl Encoder {
    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// Count-prefixed words.
    pub fn u64s(&mut self, values: &[u64]) {
        self.u64(values.len() as u64);
        self.0.reserve(values.len() * 8);
        for value in values {
            self.u64(*value);
        }
    }
}

/// Reader of what an [`Encoder`] wrote; every read is bounds-checked.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.bytes.len() {
            return Err("the checkpoint ends early".to_owned());
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("taken N bytes"))
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of `size` bytes each that must fit in what is left (so that no
    /// count read from the file can make the reader allocate more than the file holds).
    pub fn count(&mut self, size: usize) -> Result<usize, String> {
        let count = self.u64()?;
        usize::try_from(count)
            .ok()
            .filter(|count| {
                count
                    .checked_mul(size)
                    .is_some_and(|n| n <= self.bytes.len())
            })
            .ok_or_else(|| format!("a count of {count} runs past the checkpoint"))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.count(1)?;
        self.take(len)
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>, String> {
        let count = self.count(8)?;
        Ok(self
            .take(count * 8)?
            .chunks_exact(8)
            .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
            .collect())
    }
}

/// Writes the checkpoint of `index`, whose frames end at `segment`/`offset`.
pub(crate) fn write(
    dir: &Path,
    epoch: uuid::Uuid,
    index: &Index,
    segment: u32,
    offset: u64,
) -> Result<(), LogError> {
    let slots = index.locations.len();
    let mut out = Encoder(Vec::with_capacity(128 + slots * 24));
    out.0.extend_from_slice(&MAGIC);
    out.u32(VERSION);
    out.0.extend_from_slice(epoch.as_bytes());
    out.u32(segment);
    out.u64(offset);
    out.0.extend_from_slice(&index.frames.value());
    out.u64(index.head.position);
    out.0.extend_from_slice(&index.head.hash);
    out.u64(slots as u64);
    for location in &index.locations {
        out.u64(*location);
    }
    for length in &index.lengths {
        out.u32(*length);
    }
    index.streams().encode(&mut out);
    let crc = crc32fast::hash(&out.0);
    out.u32(crc);

    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(&out.0)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(CHECKPOINT_FILE))
    };
    write().map_err(|e| io_error("writing the index checkpoint", e))?;
    sync_dir(dir)
}

/// The checkpoint in `dir`, if there is one this store can use; why not, otherwise (`Ok(None)`
/// when there is none at all).
pub(crate) fn load(dir: &Path, epoch: uuid::Uuid) -> Result<Option<Checkpoint>, String> {
    let bytes = match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read it: {error}")),
    };
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err("it is cut short".to_owned());
    };
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("its checksum does not match".to_owned());
    }
    let mut input = Decoder { bytes: body };
    if input.array::<8>()? != MAGIC {
        return Err("it is not an index checkpoint".to_owned());
    }
    let version = input.u32()?;
    if version != VERSION {
        return Err(format!("it has version {version}, not {VERSION}"));
    }
    if input.array::<16>()? != *epoch.as_bytes() {
        return Err("it belongs to another store (epoch)".to_owned());
    }
    let segment = input.u32()?;
    let offset = input.u64()?;
    let digest = input.array::<32>()?;
    let head = Head {
        position: input.u64()?,
        hash: input.array::<32>()?,
    };
    let slots = input.count(12)?;
    let locations = input
        .take(slots * 8)?
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
        .collect();
    let lengths = input
        .take(slots * 4)?
        .chunks_exact(4)
        .map(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")))
        .collect();
    let streams = Streams::decode(&mut input, slots as u64)?;
    if !input.bytes.is_empty() {
        return Err("it holds bytes past its streams".to_owned());
    }
    Ok(Some(Checkpoint {
        segment,
        offset,
        digest,
        head,
        locations,
        lengths,
        streams,
    }))
}
