//! The bytes of a file store: the metadata file, segment names, frames and records.
//!
//! ```text
//! <dir>/LOCK                   flock'ed while a store (or a raw tool) has the directory open
//! <dir>/meta                   text: "signpost-eventlog file store" / "format 1" / "epoch <uuid>"
//! <dir>/segment-00000000.log   frames, appended; a new segment starts when one is full
//! <dir>/segment-00000001.log   ... the last one may end with zeros written ahead of the data
//!
//! frame  = magic "SPLF" | body_len u64 | body_crc u32 | header_crc u32 | body     (LE integers)
//!          header_crc = crc32(magic | body_len | body_crc); body_crc = crc32(body)
//! body   = record*, the last record being the frame's HEAD record
//! record = kind u8 | len u32 | crc u32 | payload[len]          crc = crc32(kind | payload)
//!          kind 1 EVENT        payload: prost EventEnvelope
//!          kind 2 IDEMPOTENCY  payload: prost IdempotencyRecord
//!          kind 3 HEAD         payload: position u64 | hash [32]  (the log's head after the frame)
//! ```
//!
//! One frame is one sequencer batch, written with one `write` and made durable with one
//! `fdatasync`: the frame is the unit of atomicity (a commit never spans frames).

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::types::Head;

/// The file store's on-disk format version (a namespace of its own, separate from sled's).
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const META_FILE: &str = "meta";
pub(crate) const META_TEMP_FILE: &str = "meta.tmp";
pub(crate) const LOCK_FILE: &str = "LOCK";
const META_TITLE: &str = "signpost-eventlog file store";
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".log";

pub(crate) const FRAME_MAGIC: [u8; 4] = *b"SPLF";
pub(crate) const FRAME_HEADER_LEN: usize = 20;
pub(crate) const RECORD_HEADER_LEN: usize = 9;

pub(crate) const KIND_EVENT: u8 = 1;
pub(crate) const KIND_IDEMPOTENCY: u8 = 2;
pub(crate) const KIND_HEAD: u8 = 3;
const HEAD_PAYLOAD_LEN: usize = 40;

/// A segment's file name.
pub(crate) fn segment_name(number: u32) -> String {
    format!("{SEGMENT_PREFIX}{number:08}{SEGMENT_SUFFIX}")
}

/// The segment number in a file name, if it is a segment's.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of `dir`, in order. They must be numbered 0, 1, 2, ... without holes.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut numbered = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("listing the log directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing the log directory", e))?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_segment_name) {
            numbered.push((number, entry.path()));
        }
    }
    numbered.sort();
    for (expected, (number, path)) in numbered.iter().enumerate() {
        if *number as usize != expected {
            return Err(LogError::Corrupt {
                position: 0,
                reason: format!(
                    "segment files are not numbered 0..n: expected segment {expected}, found {}",
                    path.display()
                ),
            });
        }
    }
    Ok(numbered.into_iter().map(|(_, path)| path).collect())
}

pub(crate) fn io_error(what: &str, error: std::io::Error) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

/// The metadata file's content.
pub(crate) fn meta_text(format: u32, epoch: uuid::Uuid) -> String {
    format!("{META_TITLE}\nformat {format}\nepoch {epoch}\n")
}

/// Parses the metadata file: `Ok((format, epoch))`. The format is checked by the caller
/// before anything else is trusted, so a later format is refused as such.
pub(crate) fn parse_meta(text: &str) -> Result<(u32, Option<uuid::Uuid>), LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        position: 0,
        reason: format!("store metadata: {reason}"),
    };
    let mut lines = text.lines();
    if lines.next() != Some(META_TITLE) {
        return Err(corrupt("not a signpost-eventlog file store"));
    }
    let mut format = None;
    let mut epoch = None;
    for line in lines {
        if let Some(value) = line.strip_prefix("format ") {
            format = Some(
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| corrupt("bad format line"))?,
            );
        } else if let Some(value) = line.strip_prefix("epoch ") {
            epoch = uuid::Uuid::parse_str(value.trim()).ok();
        }
    }
    let format = format.ok_or_else(|| corrupt("no format version"))?;
    Ok((format, epoch))
}

/// A frame header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub body_len: u64,
    pub body_crc: u32,
}

pub(crate) fn encode_frame_header(header: FrameHeader) -> [u8; FRAME_HEADER_LEN] {
    let mut bytes = [0u8; FRAME_HEADER_LEN];
    bytes[..4].copy_from_slice(&FRAME_MAGIC);
    bytes[4..12].copy_from_slice(&header.body_len.to_le_bytes());
    bytes[12..16].copy_from_slice(&header.body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&header_crc.to_le_bytes());
    bytes
}

/// The header at the start of `bytes`, if it is one (magic and header checksum match).
/// An all-zero region never parses (wrong magic).
pub(crate) fn decode_frame_header(bytes: &[u8]) -> Option<FrameHeader> {
    let bytes = bytes.get(..FRAME_HEADER_LEN)?;
    if bytes[..4] != FRAME_MAGIC {
        return None;
    }
    let header_crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32fast::hash(&bytes[..16]) != header_crc {
        return None;
    }
    Some(FrameHeader {
        body_len: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        body_crc: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
    })
}

pub(crate) fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends a record whose payload `write` appends to `buf`; returns the record's offset in
/// `buf` and its payload length.
pub(crate) fn push_record(
    buf: &mut Vec<u8>,
    kind: u8,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<(usize, u32), LogError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    write(buf);
    let payload = &buf[start + RECORD_HEADER_LEN..];
    let len = u32::try_from(payload.len()).map_err(|_| {
        LogError::Unavailable(format!(
            "a record of {} bytes does not fit the log format (at most 4 GiB)",
            payload.len()
        ))
    })?;
    let crc = record_crc(kind, payload);
    buf[start] = kind;
    buf[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
    buf[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
    Ok((start, len))
}

/// Starts a frame in `buf`: a placeholder header, records are pushed after it.
pub(crate) fn begin_frame(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
}

/// Fills in the header of the frame started by [`begin_frame`].
pub(crate) fn finish_frame(buf: &mut [u8]) {
    let (header, body) = buf.split_at_mut(FRAME_HEADER_LEN);
    header.copy_from_slice(&encode_frame_header(FrameHeader {
        body_len: body.len() as u64,
        body_crc: crc32fast::hash(body),
    }));
}

/// Appends a frame built from `body` (the records) to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&encode_frame_header(FrameHeader {
        body_len: body.len() as u64,
        body_crc: crc32fast::hash(body),
    }));
    out.extend_from_slice(body);
}

pub(crate) fn head_payload(head: Head) -> [u8; HEAD_PAYLOAD_LEN] {
    let mut bytes = [0u8; HEAD_PAYLOAD_LEN];
    bytes[..8].copy_from_slice(&head.position.to_le_bytes());
    bytes[8..].copy_from_slice(&head.hash);
    bytes
}

pub(crate) fn parse_head_payload(bytes: &[u8]) -> Option<Head> {
    if bytes.len() != HEAD_PAYLOAD_LEN {
        return None;
    }
    Some(Head {
        position: u64::from_le_bytes(bytes[..8].try_into().ok()?),
        hash: bytes[8..].try_into().ok()?,
    })
}

/// One record of a frame body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    /// Offset of the record (its header) in the body.
    pub offset: usize,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// Splits a frame body into records. Structure only: checksums are the caller's business.
pub(crate) fn records(body: &[u8]) -> impl Iterator<Item = Result<RawRecord<'_>, String>> + '_ {
    let mut offset = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= body.len() {
            return None;
        }
        let Some(header) = body.get(offset..offset + RECORD_HEADER_LEN) else {
            failed = true;
            return Some(Err(format!(
                "record header at body offset {offset} is cut short"
            )));
        };
        let kind = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let start = offset + RECORD_HEADER_LEN;
        let Some(payload) = body.get(start..start + len) else {
            failed = true;
            return Some(Err(format!(
                "record at body offset {offset} runs past its frame"
            )));
        };
        let record = RawRecord {
            offset,
            kind,
            payload,
        };
        offset = start + len;
        Some(Ok(record))
    })
}

/// Checks a record read back by itself: `bytes` is its header and payload.
pub(crate) fn check_record(bytes: &[u8], kind: u8, len: u32) -> Result<&[u8], String> {
    let header = bytes
        .get(..RECORD_HEADER_LEN)
        .ok_or_else(|| "record is cut short".to_owned())?;
    if header[0] != kind {
        return Err(format!("record kind {} where {kind} expected", header[0]));
    }
    let stored_len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if stored_len != len {
        return Err(format!("record length {stored_len} where {len} expected"));
    }
    let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    let payload = bytes
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len as usize)
        .ok_or_else(|| "record is cut short".to_owned())?;
    if record_crc(kind, payload) != crc {
        return Err("record checksum mismatch".to_owned());
    }
    Ok(payload)
}

// ---------------------------------------------------------------------------------------------
// Reading a few fields of a protobuf message without decoding (nor allocating) the rest.

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A protobuf field: its number and either its varint value or its length-delimited bytes.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// Walks the top-level fields of a protobuf message, calling `visit(number, field)`, until
/// the first field numbered above `last` (prost writes fields in number order, so the fields
/// up to `last` have all been seen by then). `None` when the bytes walked are not well-formed
/// (groups are not supported).
fn walk<'a>(
    bytes: &'a [u8],
    last: u64,
    mut visit: impl FnMut(u64, Field<'a>) -> Option<()>,
) -> Option<()> {
    let mut at = 0usize;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let number = key >> 3;
        if number == 0 {
            return None;
        }
        if number > last {
            return Some(());
        }
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)?),
            1 => {
                at = at.checked_add(8).filter(|end| *end <= bytes.len())?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= bytes.len())?;
                let value = &bytes[at..end];
                at = end;
                Field::Bytes(value)
            }
            5 => {
                at = at.checked_add(4).filter(|end| *end <= bytes.len())?;
                Field::Other
            }
            _ => return None,
        };
        visit(number, field)?;
    }
    Some(())
}

/// What the open scan needs of an envelope: its stream and the position it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventSummary<'a> {
    pub position: u64,
    pub stream_id: &'a str,
}

/// Reads `position` (1) and `stream_id` (2) of an encoded `EventEnvelope`; `None` when the
/// bytes are not a well-formed envelope as far as they are read (the scan stops at the first
/// field past `stream_version`; a full decode happens on every read anyway).
pub(crate) fn summarize_event(bytes: &[u8]) -> Option<EventSummary<'_>> {
    let mut position = 0;
    let mut stream_id: &[u8] = &[];
    walk(bytes, 3, |number, field| {
        match (number, field) {
            (1, Field::Varint(value)) => position = value,
            (2, Field::Bytes(value)) => stream_id = value,
            (3, Field::Varint(_)) => {}
            (1..=3, _) => return None,
            _ => {}
        }
        Some(())
    })?;
    Some(EventSummary {
        position,
        stream_id: std::str::from_utf8(stream_id).ok()?,
    })
}

/// Reads `principal` (1) and `request_id` (2) of an encoded [`IdempotencyRecord`].
pub(crate) fn summarize_idempotency(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut principal: &[u8] = &[];
    let mut request_id: &[u8] = &[];
    walk(bytes, 2, |number, field| {
        match (number, field) {
            (1, Field::Bytes(value)) => principal = value,
            (2, Field::Bytes(value)) => request_id = value,
            (1 | 2, _) => return None,
            _ => {}
        }
        Some(())
    })?;
    Some((principal, request_id))
}

// ---------------------------------------------------------------------------------------------

pub(crate) use crate::record::IdempotencyRecord;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use signpost_schema::log::v1::EventEnvelope;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(parse_segment_name(&segment_name(0)), Some(0));
        assert_eq!(parse_segment_name(&segment_name(123)), Some(123));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("segment-.log"), None);
        assert_eq!(parse_segment_name("segment-0001.log.tmp"), None);
        assert_eq!(parse_segment_name("meta"), None);
    }

    #[test]
    fn frame_headers_round_trip_and_reject_damage() {
        let header = FrameHeader {
            body_len: 1234,
            body_crc: 0xdead_beef,
        };
        let bytes = encode_frame_header(header);
        assert_eq!(decode_frame_header(&bytes), Some(header));
        for index in 0..FRAME_HEADER_LEN {
            let mut damaged = bytes;
            damaged[index] ^= 0x10;
            assert_eq!(decode_frame_header(&damaged), None, "byte {index}");
        }
        assert_eq!(decode_frame_header(&[0u8; FRAME_HEADER_LEN]), None);
        assert_eq!(decode_frame_header(&bytes[..10]), None);
    }

    #[test]
    fn records_round_trip() {
        let mut body = Vec::new();
        let (first, len) =
            push_record(&mut body, KIND_EVENT, |b| b.extend_from_slice(b"abc")).expect("record");
        assert_eq!((first, len), (0, 3));
        let (second, _) = push_record(&mut body, KIND_HEAD, |b| {
            b.extend_from_slice(&head_payload(Head::EMPTY))
        })
        .expect("record");
        let parsed: Vec<_> = records(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].payload, b"abc");
        assert_eq!(parsed[1].offset, second);
        assert_eq!(parse_head_payload(parsed[1].payload), Some(Head::EMPTY));
        assert_eq!(check_record(&body[first..], KIND_EVENT, 3), Ok(&b"abc"[..]));
        let mut damaged = body.clone();
        damaged[RECORD_HEADER_LEN] ^= 1;
        assert!(check_record(&damaged, KIND_EVENT, 3).is_err());
        assert!(records(&body[..body.len() - 1]).any(|r| r.is_err()));
    }

    #[test]
    fn summaries_read_what_prost_wrote() {
        let envelope = EventEnvelope {
            position: 300,
            stream_id: "organization-1".into(),
            stream_version: 7,
            payload: vec![1, 2, 3].into(),
            hash: vec![9; 32].into(),
            ..Default::default()
        };
        let bytes = envelope.encode_to_vec();
        assert_eq!(
            summarize_event(&bytes),
            Some(EventSummary {
                position: 300,
                stream_id: "organization-1",
            })
        );
        // Cut inside the stream id: not an envelope. (Past field 3 the scan does not look.)
        assert_eq!(summarize_event(&bytes[..8]), None);
        assert!(summarize_event(&bytes[..bytes.len() - 1]).is_some());
        assert_eq!(
            summarize_event(&[]),
            Some(EventSummary {
                position: 0,
                stream_id: ""
            })
        );
        let record = IdempotencyRecord {
            principal: "p".into(),
            request_id: "r".into(),
            ..Default::default()
        };
        assert_eq!(
            summarize_idempotency(&record.encode_to_vec()),
            Some((&b"p"[..], &b"r"[..]))
        );
    }

    #[test]
    fn meta_round_trips() {
        let epoch = uuid::Uuid::new_v4();
        assert_eq!(
            parse_meta(&meta_text(FORMAT_VERSION, epoch)).unwrap(),
            (FORMAT_VERSION, Some(epoch))
        );
        assert!(parse_meta("something else\nformat 1\n").is_err());
    }
}
