//! Reading records back: one `pread` per run of neighbouring records, checked and decoded.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use signpost_schema::log::v1::EventEnvelope;

use super::format::{check_record, KIND_EVENT, RECORD_HEADER_LEN};
use super::index::{unpack, Location};
use crate::error::LogError;
use crate::types::Position;

/// Most bytes one `pread` fetches.
pub(crate) const MAX_RUN_BYTES: u64 = 8 << 20;
/// Neighbouring records further apart than this are read separately.
const MAX_GAP_BYTES: u64 = 64 << 10;

/// The segment files, shared with the index (replaced, not mutated, when a segment is added).
pub(crate) type Segments = Arc<Vec<Arc<File>>>;

/// An event to read: its slot (position - 1 in an untampered log) and record location.
pub(crate) type Item = (u64, Location);

fn corrupt(position: Position, reason: String) -> LogError {
    LogError::Corrupt { position, reason }
}

fn segment(segments: &[Arc<File>], number: u32, position: Position) -> Result<&File, LogError> {
    segments
        .get(number as usize)
        .map(|file| &**file)
        .ok_or_else(|| corrupt(position, format!("index names a missing segment {number}")))
}

fn read_exact_at(
    file: &File,
    buf: &mut [u8],
    offset: u64,
    position: Position,
) -> Result<(), LogError> {
    file.read_exact_at(buf, offset).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(
                position,
                format!("record at offset {offset} lies past the end of its segment"),
            )
        } else {
            LogError::Unavailable(format!("reading the log: {error}"))
        }
    })
}

/// The payload of the record of `kind` at `location`, checked against its checksum.
/// `position` names the record in errors.
pub(crate) fn read_record(
    segments: &[Arc<File>],
    location: Location,
    kind: u8,
    position: Position,
) -> Result<Vec<u8>, LogError> {
    let (number, offset) = unpack(location.packed);
    let file = segment(segments, number, position)?;
    let mut bytes = vec![0u8; RECORD_HEADER_LEN + location.len as usize];
    read_exact_at(file, &mut bytes, offset, position)?;
    check_record(&bytes, kind, location.len).map_err(|reason| corrupt(position, reason))?;
    bytes.drain(..RECORD_HEADER_LEN);
    Ok(bytes)
}

fn record_end(location: Location) -> u64 {
    unpack(location.packed).1 + RECORD_HEADER_LEN as u64 + u64::from(location.len)
}

/// How many leading `items` one `pread` fetches: same segment, ascending, close together, and
/// at most [`MAX_RUN_BYTES`] (always at least one item).
pub(crate) fn run_len(items: &[Item]) -> usize {
    let Some((_, first)) = items.first() else {
        return 0;
    };
    let (segment, start) = unpack(first.packed);
    let mut end = record_end(*first);
    let mut count = 1;
    for (_, location) in &items[1..] {
        let (next_segment, offset) = unpack(location.packed);
        let next_end = record_end(*location);
        if next_segment != segment
            || offset < end
            || offset - end > MAX_GAP_BYTES
            || next_end - start > MAX_RUN_BYTES
        {
            break;
        }
        end = next_end;
        count += 1;
    }
    count
}

/// Reads the bytes covering `run` (a result of [`run_len`]) into `buf`; returns the file offset
/// of `buf[0]`.
pub(crate) fn read_run(
    segments: &[Arc<File>],
    run: &[Item],
    buf: &mut Vec<u8>,
) -> Result<u64, LogError> {
    let (Some((first_slot, first)), Some((_, last))) = (run.first(), run.last()) else {
        buf.clear();
        return Ok(0);
    };
    let (number, start) = unpack(first.packed);
    let file = segment(segments, number, first_slot + 1)?;
    let len = (record_end(*last) - start) as usize;
    buf.clear();
    buf.resize(len, 0);
    read_exact_at(file, buf, start, first_slot + 1)?;
    Ok(start)
}

/// Where the encoded envelope of `item` lies in a run buffer starting at file offset `base`,
/// once its record is checked against its checksum.
fn envelope_in_run(buf: &[u8], base: u64, item: Item) -> Result<Range<usize>, LogError> {
    let (slot, location) = item;
    let at = (unpack(location.packed).1 - base) as usize;
    check_record(&buf[at..], KIND_EVENT, location.len)
        .map_err(|reason| corrupt(slot + 1, reason))?;
    let start = at + RECORD_HEADER_LEN;
    Ok(start..start + location.len as usize)
}

/// Decodes the event of `item` from a run buffer starting at file offset `base` (its payload
/// and hashes copied out of it).
pub(crate) fn decode_event(buf: &[u8], base: u64, item: Item) -> Result<EventEnvelope, LogError> {
    let envelope = envelope_in_run(buf, base, item)?;
    decode_envelope(&buf[envelope], item)
}

/// Decodes the envelope of `item` from its bytes (a slice or a `Bytes`, whose payload and
/// hashes are then slices of it).
fn decode_envelope(bytes: impl bytes::Buf, item: Item) -> Result<EventEnvelope, LogError> {
    EventEnvelope::decode(bytes)
        .map_err(|error| corrupt(item.0 + 1, format!("undecodable event: {error}")))
}

/// Reads and decodes the events of `items`, in order. Each run is read into a buffer of its
/// own, which the envelopes' payloads and hashes are slices of (not copies): it lives as
/// long as one of them does.
pub(crate) fn read_events(
    segments: &[Arc<File>],
    mut items: &[Item],
) -> Result<Vec<EventEnvelope>, LogError> {
    let mut events = Vec::with_capacity(items.len());
    while !items.is_empty() {
        let count = run_len(items);
        let (run, rest) = items.split_at(count);
        let mut buf = Vec::new();
        let base = read_run(segments, run, &mut buf)?;
        let buf = Bytes::from(buf);
        for item in run {
            let envelope = buf.slice(envelope_in_run(&buf, base, *item)?);
            events.push(decode_envelope(envelope, *item)?);
        }
        items = rest;
    }
    Ok(events)
}

/// Reads the encoded envelopes of `items`, in order, checked against their checksums but not
/// decoded: slices of one buffer a run, so no envelope is copied.
pub(crate) fn read_encoded(
    segments: &[Arc<File>],
    mut items: &[Item],
) -> Result<Vec<Bytes>, LogError> {
    let mut events = Vec::with_capacity(items.len());
    while !items.is_empty() {
        let count = run_len(items);
        let (run, rest) = items.split_at(count);
        let mut buf = Vec::new();
        let base = read_run(segments, run, &mut buf)?;
        let buf = Bytes::from(buf);
        for item in run {
            events.push(buf.slice(envelope_in_run(&buf, base, *item)?));
        }
        items = rest;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::index::pack;
    use super::*;

    fn item(slot: u64, segment: u32, offset: u64, len: u32) -> Item {
        (
            slot,
            Location {
                packed: pack(segment, offset),
                len,
            },
        )
    }

    #[test]
    fn runs_stop_at_segment_changes_gaps_and_size() {
        assert_eq!(run_len(&[]), 0);
        let contiguous = [item(0, 0, 0, 10), item(1, 0, 19, 10), item(2, 0, 100, 10)];
        assert_eq!(run_len(&contiguous), 3);
        let segment_change = [item(0, 0, 0, 10), item(1, 1, 0, 10)];
        assert_eq!(run_len(&segment_change), 1);
        let far = [item(0, 0, 0, 10), item(1, 0, 1 << 20, 10)];
        assert_eq!(run_len(&far), 1);
        let big = [item(0, 0, 0, 6 << 20), item(1, 0, (6 << 20) + 9, 6 << 20)];
        assert_eq!(run_len(&big), 1);
        let backwards = [item(0, 0, 100, 10), item(1, 0, 0, 10)];
        assert_eq!(run_len(&backwards), 1);
    }
}
