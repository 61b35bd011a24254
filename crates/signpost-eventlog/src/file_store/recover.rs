//! Opening a file store: one sequential scan of every segment that checks each frame, builds
//! the in-memory indexes, cuts a torn tail and refuses damaged acknowledged data.
//!
//! Where the frames of a segment end, the rest of the file may be zeros: space the writer
//! prepared ahead of the log ([`FileOptions::preallocate_bytes`](super::FileOptions)), or the
//! sectors of an unacknowledged write that never reached the disk. Zeros are no data: the
//! segment's data simply ends there, and the next frame is written over them.
//!
//! How a damaged frame (short header, bad header, body past the end of the file, bad body
//! checksum) followed by anything but zeros is judged:
//!
//! - The sequencer writes one frame per batch and only starts the next write after the
//!   previous frame's `fdatasync` returned. So at any crash at most the *last* frame can be
//!   incomplete, and nothing valid can follow an incomplete frame.
//! - Hence a damaged frame **followed by no valid frame anywhere** (searched byte by byte in
//!   the rest of its segment and in every later segment) is a torn tail: a batch that was
//!   never acknowledged. It is cut off (the segment truncated at the frame, later segments
//!   removed) and the store opens.
//! - A damaged frame **followed by a valid frame** is damage to acknowledged data: open fails
//!   with [`LogError::Corrupt`] naming the segment, the offset and the first position that
//!   cannot be read. Nothing is dropped.
//! - A frame whose checksums are valid but whose records do not parse (no HEAD record, a
//!   record past the frame, an unknown kind) was written by something other than this store:
//!   [`LogError::Corrupt`] too.
//!
//! Events whose envelope does not decode inside a valid frame (tampering that kept the framing
//! valid) are indexed by slot anyway and not in any stream: reading them reports `Corrupt` at
//! their position, which is how `verify_chain` names them. Finally the tail is checked as the
//! sled store does: the last event record must decode, claim the head position the last frame
//! recorded, and hash to the recorded head hash.
//!
//! The last segment is `fdatasync`ed before the store opens: a writer killed between its
//! `write` and its `fdatasync` leaves a complete frame in the page cache that this process
//! sees but the disk may not hold yet. It was never acknowledged, and it must not become
//! visible before it is durable.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use signpost_schema::log::v1::EventEnvelope;

use super::checkpoint::Checkpoint;
use super::format::{
    self, decode_frame_header, io_error, parse_head_payload, records, segment_name,
    summarize_event, summarize_idempotency, FRAME_HEADER_LEN, FRAME_MAGIC, KIND_EVENT, KIND_HEAD,
    KIND_IDEMPOTENCY,
};
use super::index::{pack, Index, Location, MAX_SEGMENT_OFFSET};
use super::read::read_record;
use crate::chain;
use crate::error::LogError;
use crate::types::Head;

/// Read buffer of the open scan.
const SCAN_BUFFER: usize = 1 << 20;

/// What the open scan leaves for the store.
pub(crate) struct Recovered {
    pub index: Index,
    /// The last segment's number and the end of its frames: where the next frame goes.
    pub write_segment: u32,
    pub write_offset: u64,
    /// The last segment's length (beyond `write_offset`: zeros written ahead).
    pub allocated: u64,
    /// Bytes of torn tail cut off.
    pub discarded_bytes: u64,
    /// The place (segment, offset) up to which a checkpoint's index was taken, if one was.
    pub checkpoint_used: Option<(u32, u64)>,
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing the log directory", e))
}

fn open_segment(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error(&format!("opening segment {}", path.display()), e))
}

/// Creates segment `number` (empty) and makes its directory entry durable.
pub(crate) fn create_segment(dir: &Path, number: u32) -> Result<File, LogError> {
    let path = dir.join(segment_name(number));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error(&format!("creating segment {}", path.display()), e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// What the scan checks of a checkpoint while it reads the frames the checkpoint covers.
struct Covered {
    checkpoint: Checkpoint,
    /// Event records met so far, each found where the checkpoint's slot for it says.
    slots: usize,
}

/// Scans every segment of `dir` (creating segment 0 for a new store) and builds the index,
/// taking what `checkpoint` covers from it if the segments bear it out
/// (`checkpoint.rs`), and otherwise scanning them whole.
pub(crate) fn recover(dir: &Path, checkpoint: Option<Checkpoint>) -> Result<Recovered, LogError> {
    if let Some(checkpoint) = checkpoint {
        match scan(
            dir,
            Some(Covered {
                checkpoint,
                slots: 0,
            }),
        )? {
            Ok(recovered) => return Ok(recovered),
            Err(reason) => tracing::warn!(
                %reason,
                "event log: the index checkpoint does not match the segments; indexing them whole"
            ),
        }
    }
    scan(dir, None)?.map_err(|reason| LogError::Corrupt {
        position: 0,
        reason,
    })
}

/// Ends the covered part of a scan: the checkpoint holds exactly the events and frames the
/// scan met, and becomes the index's.
fn take_covered(index: &mut Index, covered: Covered) -> Result<(), String> {
    let Covered { checkpoint, slots } = covered;
    if slots != checkpoint.locations.len() {
        return Err(format!(
            "it holds {} events where the segments hold {slots}",
            checkpoint.locations.len()
        ));
    }
    if index.frames.value() != checkpoint.digest {
        return Err("the frames it covers are not the frames it was written from".to_owned());
    }
    if index.head != checkpoint.head {
        return Err(format!(
            "it ends at position {} where the frames end at {}",
            checkpoint.head.position, index.head.position
        ));
    }
    index.install(checkpoint.locations, checkpoint.lengths, checkpoint.streams);
    Ok(())
}

/// The scan is at `offset` of segment `number`, before a frame or, when `ended`, where the
/// segment's frames end. At the place the checkpoint covers, its index is taken; `Err` when
/// the scan is past that place without having stopped at it (or, at a segment's end, the
/// place lies in this segment beyond its frames or in an earlier one).
fn reach(
    covered: &mut Option<Covered>,
    index: &mut Index,
    number: u32,
    offset: u64,
    ended: bool,
) -> Result<(), String> {
    let Some(at) = covered else {
        return Ok(());
    };
    let place = (at.checkpoint.segment, at.checkpoint.offset);
    if place == (number, offset) {
        return take_covered(index, covered.take().expect("some"));
    }
    if place < (number, offset) || (ended && place.0 == number) {
        return Err(format!(
            "no frame ends at segment {} offset {}, where it ends (segment {number}'s frames \
             read up to offset {offset})",
            place.0, place.1
        ));
    }
    Ok(())
}

/// The scan itself; `Ok(Err(why))` when the segments do not bear out the checkpoint being
/// checked (nothing was changed on disk then).
fn scan(dir: &Path, mut covered: Option<Covered>) -> Result<Result<Recovered, String>, LogError> {
    let checkpoint_used = covered
        .as_ref()
        .map(|covered| (covered.checkpoint.segment, covered.checkpoint.offset));
    let mut paths = format::list_segments(dir)?;
    if paths.is_empty() {
        create_segment(dir, 0)?;
        paths = format::list_segments(dir)?;
    }
    let mut files = paths
        .iter()
        .map(|path| open_segment(path).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;

    let mut index = Index::new(Arc::new(Vec::new()));
    let mut body = Vec::new();
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut discarded_bytes = 0;
    // Where the frames of the segment scanned last end (the rest, if any, is zeros).
    let mut data_end = 0u64;
    'segments: for number in 0..files.len() {
        let file = files[number].clone();
        let len = file_len(&file)?;
        let mut reader = BufReader::with_capacity(SCAN_BUFFER, &*file);
        let mut offset = 0u64;
        data_end = 0;
        while offset < len {
            if let Err(reason) = reach(&mut covered, &mut index, number as u32, offset, false) {
                return Ok(Err(reason));
            }
            match read_frame(&mut reader, offset, len, &mut body, &mut header)? {
                Ok(()) => {
                    index.frames.add(number as u32, offset, &header);
                    let applied = apply_frame(
                        &mut index,
                        covered.as_mut(),
                        number as u32,
                        offset,
                        &body,
                        &paths[number],
                    );
                    match applied {
                        Err(error) if covered.is_some() => return Ok(Err(error.to_string())),
                        applied => applied?,
                    }
                    offset += (FRAME_HEADER_LEN + body.len()) as u64;
                    data_end = offset;
                }
                Err(_) if rest_is_zero(&file, offset, len)? => {
                    // Space the writer prepared ahead of the log (FileOptions::preallocate_bytes),
                    // or sectors of an unacknowledged write that never landed: no data.
                    break;
                }
                Err(damage) if covered.is_some() => {
                    // Judged by the scan without a checkpoint, which alone may cut anything.
                    return Ok(Err(format!(
                        "{} offset {offset}, before the place it covers: {damage}",
                        paths[number].display()
                    )));
                }
                Err(damage) => {
                    if let Some((found_segment, found_offset)) =
                        find_valid_frame(&files, number, offset + 1)?
                    {
                        return Err(LogError::Corrupt {
                            position: index.slots() + 1,
                            reason: format!(
                                "{} offset {offset}: {damage}; a valid frame follows ({} offset \
                                 {found_offset}), so this is damage to acknowledged data, not \
                                 a torn tail",
                                paths[number].display(),
                                paths[found_segment].display(),
                            ),
                        });
                    }
                    discarded_bytes = discard_tail(dir, &paths, &files, number, offset)?;
                    tracing::warn!(
                        segment = %paths[number].display(),
                        offset,
                        discarded_bytes,
                        %damage,
                        "event log: cut a torn tail (a batch that was never acknowledged)"
                    );
                    files.truncate(number + 1);
                    paths.truncate(number + 1);
                    data_end = offset;
                    break 'segments;
                }
            }
        }
        if let Err(reason) = reach(&mut covered, &mut index, number as u32, data_end, true) {
            return Ok(Err(reason));
        }
    }
    if covered.is_some() {
        return Ok(Err("the segments end before the place it covers".to_owned()));
    }

    verify_tail(&index, &files)?;
    let write_segment = (files.len() - 1) as u32;
    let last = &files[files.len() - 1];
    // A process killed between its `write` and its `fdatasync` leaves a whole frame in the
    // page cache, not on disk: make it durable before anything it holds becomes visible.
    // (Earlier segments were synced before the next one was created.)
    last.sync_data()
        .map_err(|e| io_error("fdatasync of the last segment", e))?;
    let allocated = file_len(last)?;
    index.segments = Arc::new(files);
    Ok(Ok(Recovered {
        index,
        write_segment,
        write_offset: data_end,
        allocated,
        discarded_bytes,
        checkpoint_used,
    }))
}

/// Whether `file[from..len]` holds only zero bytes.
pub(crate) fn rest_is_zero(file: &File, from: u64, len: u64) -> Result<bool, LogError> {
    let mut buf = vec![0u8; SCAN_BUFFER.min((len.saturating_sub(from)) as usize)];
    let mut at = from;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], at)
            .map_err(|e| io_error("reading a segment", e))?;
        if buf[..want].iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        at += want as u64;
    }
    Ok(true)
}

fn file_len(file: &File) -> Result<u64, LogError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| io_error("reading a segment's length", e))
}

/// Reads the frame at `offset` into `body`. `Ok(Err(why))` when the frame is damaged or
/// incomplete; `Err` only for I/O failures.
fn read_frame(
    reader: &mut impl Read,
    offset: u64,
    len: u64,
    body: &mut Vec<u8>,
    header_bytes: &mut [u8; FRAME_HEADER_LEN],
) -> Result<Result<(), String>, LogError> {
    let read_error = |e| io_error("reading a segment", e);
    let remaining = len - offset;
    if remaining < FRAME_HEADER_LEN as u64 {
        return Ok(Err(format!(
            "{remaining} bytes left, too few for a frame header"
        )));
    }
    reader.read_exact(header_bytes).map_err(read_error)?;
    let Some(header) = decode_frame_header(header_bytes) else {
        return Ok(Err("not a valid frame header".to_owned()));
    };
    let available = remaining - FRAME_HEADER_LEN as u64;
    if header.body_len > available {
        return Ok(Err(format!(
            "frame of {} bytes runs past the end of the segment ({available} bytes left)",
            header.body_len
        )));
    }
    body.clear();
    let read = reader
        .by_ref()
        .take(header.body_len)
        .read_to_end(body)
        .map_err(read_error)?;
    if read as u64 != header.body_len {
        return Ok(Err("segment shrank while being read".to_owned()));
    }
    if crc32fast::hash(body) != header.body_crc {
        return Ok(Err("frame checksum mismatch".to_owned()));
    }
    Ok(Ok(()))
}

/// Indexes the records of one valid frame. Within a checkpoint's cover, events are only
/// checked to lie where its slots say (the checkpoint indexes them).
fn apply_frame(
    index: &mut Index,
    mut covered: Option<&mut Covered>,
    segment: u32,
    frame_offset: u64,
    body: &[u8],
    path: &Path,
) -> Result<(), LogError> {
    let body_offset = frame_offset + FRAME_HEADER_LEN as u64;
    let corrupt = |index: &Index, reason: String| LogError::Corrupt {
        position: index.slots() + 1,
        reason: format!(
            "{} frame at offset {frame_offset}: {reason}",
            path.display()
        ),
    };
    if body_offset + body.len() as u64 > MAX_SEGMENT_OFFSET {
        return Err(corrupt(index, "segment larger than 1 TiB".to_owned()));
    }
    let mut head = None;
    for record in records(body) {
        let record = record.map_err(|reason| corrupt(index, reason))?;
        if head.is_some() {
            return Err(corrupt(
                index,
                "a record follows the frame's head record".to_owned(),
            ));
        }
        let location = Location {
            packed: pack(segment, body_offset + record.offset as u64),
            len: record.payload.len() as u32,
        };
        match record.kind {
            KIND_EVENT => match covered.as_deref_mut() {
                Some(covered) => {
                    let slot = covered.slots;
                    let checkpoint = &covered.checkpoint;
                    if checkpoint.locations.get(slot) != Some(&location.packed)
                        || checkpoint.lengths.get(slot) != Some(&location.len)
                    {
                        return Err(corrupt(
                            index,
                            format!("event {} is not where the checkpoint has it", slot + 1),
                        ));
                    }
                    covered.slots += 1;
                }
                None => {
                    let stream = summarize_event(record.payload).map(|summary| summary.stream_id);
                    index.push_event(location, stream);
                }
            },
            KIND_IDEMPOTENCY => {
                // An undecodable record cannot be found by key; it is simply not indexed.
                if let Some((principal, request_id)) = summarize_idempotency(record.payload) {
                    let hash = index.idempotency_hash(principal, request_id);
                    index.push_idempotency(hash, location);
                }
            }
            KIND_HEAD => {
                head = Some(
                    parse_head_payload(record.payload)
                        .ok_or_else(|| corrupt(index, "malformed head record".to_owned()))?,
                );
            }
            other => return Err(corrupt(index, format!("unknown record kind {other}"))),
        }
    }
    index.head = head.ok_or_else(|| corrupt(index, "frame without a head record".to_owned()))?;
    Ok(())
}

/// The first valid frame (header and body checksums) at or after `from` in segment
/// `segment`, or anywhere in a later segment.
fn find_valid_frame(
    files: &[Arc<File>],
    segment: usize,
    from: u64,
) -> Result<Option<(usize, u64)>, LogError> {
    for (number, file) in files.iter().enumerate().skip(segment) {
        let start = if number == segment { from } else { 0 };
        if let Some(offset) = search_segment(file, start)? {
            return Ok(Some((number, offset)));
        }
    }
    Ok(None)
}

fn search_segment(file: &File, start: u64) -> Result<Option<u64>, LogError> {
    const WINDOW: usize = 1 << 20;
    let read_error = |e| io_error("searching a segment", e);
    let len = file_len(file)?;
    let mut window = vec![0u8; WINDOW + FRAME_HEADER_LEN];
    let mut base = start;
    while base + FRAME_HEADER_LEN as u64 <= len {
        let want = (len - base).min(window.len() as u64) as usize;
        file.read_exact_at(&mut window[..want], base)
            .map_err(read_error)?;
        let candidates = (want + 1 - FRAME_HEADER_LEN).min(WINDOW);
        for at in 0..candidates {
            if window[at..at + 4] != FRAME_MAGIC {
                continue;
            }
            let Some(header) = decode_frame_header(&window[at..at + FRAME_HEADER_LEN]) else {
                continue;
            };
            let body_start = base + (at + FRAME_HEADER_LEN) as u64;
            if header.body_len > len - body_start {
                continue;
            }
            let mut body = vec![0u8; header.body_len as usize];
            file.read_exact_at(&mut body, body_start)
                .map_err(read_error)?;
            if crc32fast::hash(&body) == header.body_crc {
                return Ok(Some(base + at as u64));
            }
        }
        base += WINDOW as u64;
    }
    Ok(None)
}

/// Cuts segment `segment` at `offset` and removes every later segment; returns the bytes cut.
fn discard_tail(
    dir: &Path,
    paths: &[PathBuf],
    files: &[Arc<File>],
    segment: usize,
    offset: u64,
) -> Result<u64, LogError> {
    let file = &files[segment];
    let mut discarded = file_len(file)? - offset;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("truncating a torn tail", e))?;
    for (later, path) in files.iter().zip(paths).skip(segment + 1) {
        discarded += file_len(later)?;
        std::fs::remove_file(path)
            .map_err(|e| io_error(&format!("removing {}", path.display()), e))?;
    }
    if files.len() > segment + 1 {
        sync_dir(dir)?;
    }
    Ok(discarded)
}

/// The last event record must be the head the last frame recorded.
fn verify_tail(index: &Index, files: &[Arc<File>]) -> Result<(), LogError> {
    let head = index.head;
    let slots = index.slots();
    if slots == 0 {
        if head != Head::EMPTY {
            return Err(LogError::Corrupt {
                position: head.position,
                reason: "the head event is missing".to_owned(),
            });
        }
        return Ok(());
    }
    if head.position == 0 {
        return Err(LogError::Corrupt {
            position: 1,
            reason: "events are stored beyond the recorded head 0".to_owned(),
        });
    }
    let corrupt = |reason: String| LogError::Corrupt {
        position: head.position,
        reason,
    };
    let location = index.event_location((slots - 1) as usize);
    let bytes = read_record(files, location, KIND_EVENT, head.position)?;
    let envelope = EventEnvelope::decode(bytes.as_slice())
        .map_err(|error| corrupt(format!("undecodable head event: {error}")))?;
    if envelope.position < head.position {
        return Err(corrupt(format!(
            "the head event is missing: the last event claims position {}",
            envelope.position
        )));
    }
    if envelope.position > head.position {
        return Err(corrupt(format!(
            "event stored beyond the recorded head: the last event claims position {}",
            envelope.position
        )));
    }
    let computed = chain::envelope_hash(&envelope);
    if *envelope.hash != computed || computed != head.hash {
        return Err(corrupt("head event hash does not match".to_owned()));
    }
    Ok(())
}
