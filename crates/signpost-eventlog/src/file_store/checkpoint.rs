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
use std::io::{BufReader, Read, Write};
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

/// Reader of what an [`Encoder`] wrote, straight from the file (no copy of it all in
/// memory): every count is checked against the bytes the file has left, so no count read
/// from it can make the reader allocate more than the file holds, and the CRC-32 of
/// everything read is kept for the trailer.
pub(crate) struct Decoder<R> {
    input: R,
    /// Bytes left before the trailer.
    left: u64,
    crc: crc32fast::Hasher,
}

impl<R: Read> Decoder<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        if buf.len() as u64 > self.left {
            return Err("the checkpoint ends early".to_owned());
        }
        self.input
            .read_exact(buf)
            .map_err(|error| format!("cannot read it: {error}"))?;
        self.crc.update(buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut bytes = [0u8; N];
        self.fill(&mut bytes)?;
        Ok(bytes)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of `size` bytes each that must fit in what is left.
    pub fn count(&mut self, size: u64) -> Result<usize, String> {
        let count = self.u64()?;
        count
            .checked_mul(size)
            .filter(|bytes| *bytes <= self.left)
            .and_then(|_| usize::try_from(count).ok())
            .ok_or_else(|| format!("a count of {count} runs past the checkpoint"))
    }

    pub fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.count(1)?;
        let mut bytes = vec![0u8; len];
        self.fill(&mut bytes)?;
        Ok(bytes)
    }

    /// `count` little-endian words of `N` bytes, each turned into a value by `word`, added to
    /// `out` (read a block at a time).
    pub fn words<const N: usize, T>(
        &mut self,
        count: usize,
        out: &mut Vec<T>,
        word: impl Fn([u8; N]) -> T,
    ) -> Result<(), String> {
        let mut block = vec![0u8; 8192.min(count) * N];
        let mut left = count;
        while left > 0 {
            let take = left.min(8192);
            let bytes = &mut block[..take * N];
            self.fill(bytes)?;
            out.extend(
                bytes
                    .chunks_exact(N)
                    .map(|chunk| word(chunk.try_into().expect("N bytes"))),
            );
            left -= take;
        }
        Ok(())
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>, String> {
        let count = self.count(8)?;
        let mut values = Vec::with_capacity(count);
        self.words(count, &mut values, u64::from_le_bytes)?;
        Ok(values)
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
    let file = match File::open(dir.join(CHECKPOINT_FILE)) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read it: {error}")),
    };
    let len = file
        .metadata()
        .map_err(|error| format!("cannot read it: {error}"))?
        .len();
    let Some(body_len) = len.checked_sub(4) else {
        return Err("it is cut short".to_owned());
    };
    let mut input = Decoder {
        input: BufReader::with_capacity(1 << 16, file),
        left: body_len,
        crc: crc32fast::Hasher::new(),
    };
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
    // An eighth more room than they hold, for what is appended after the open. Vectors of
    // exactly their length doubled (and were copied) at the first append; in the benchmarks'
    // scenario 8 the server then held about 10 MiB more after 20 appends than a scan-built
    // index, whose vectors had grown by doubling during the scan (bench/FINDINGS.md, round 23).
    let room = slots + slots / 8;
    let mut locations = Vec::with_capacity(room);
    input.words(slots, &mut locations, u64::from_le_bytes)?;
    let mut lengths = Vec::with_capacity(room);
    input.words(slots, &mut lengths, u32::from_le_bytes)?;
    let streams = Streams::decode(&mut input, slots as u64)?;
    if input.left != 0 {
        return Err("it holds bytes past its streams".to_owned());
    }
    let mut trailer = [0u8; 4];
    input
        .input
        .read_exact(&mut trailer)
        .map_err(|error| format!("cannot read it: {error}"))?;
    if input.crc.finalize() != u32::from_le_bytes(trailer) {
        return Err("its checksum does not match".to_owned());
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
