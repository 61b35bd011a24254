//! **Low-level, offline access to a file store's bytes. Not for normal use.**
//!
//! The same tools as `sled_store::raw` (the crate's [`raw`](crate::raw)), for tamper-evidence
//! tests and forensics. They change stored events behind the log's back, exactly what
//! [`verify_chain`](crate::verify_chain) must detect, and the server never calls them. Each
//! one takes the directory's lock itself, so it fails while a
//! [`FileEventStore`](super::FileEventStore) holds the directory: stop the server first.
//!
//! "The event at position `p`" is the `p`-th event record in file order (in an untampered log,
//! the event with position `p`). Edits keep the framing valid: the changed segment is rewritten
//! with fresh record and frame checksums (to a temp file, fsynced, renamed over the old one),
//! so the store still opens and the *hash chain* is what reveals the change. The head record
//! of each frame is left alone, so altering or deleting the last event is reported by the
//! store's open, as with sled.

use std::path::{Path, PathBuf};

use super::format::{
    self, decode_frame_header, push_frame, push_record, records, FRAME_HEADER_LEN, KIND_EVENT,
};
use super::{lock_dir, recover::sync_dir, write_meta};
use crate::error::LogError;
use crate::types::Position;

/// A record as the tools edit it.
struct Record {
    kind: u8,
    payload: Vec<u8>,
}

struct Segment {
    path: PathBuf,
    frames: Vec<Vec<Record>>,
    dirty: bool,
}

/// The whole store, parsed, while the directory is locked.
struct Offline {
    dir: PathBuf,
    _lock: std::fs::File,
    segments: Vec<Segment>,
}

/// Where an event record is: segment, frame, record index.
type Slot = (usize, usize, usize);

fn corrupt(reason: String) -> LogError {
    LogError::Corrupt {
        position: 0,
        reason,
    }
}

impl Offline {
    fn open(dir: &Path) -> Result<Self, LogError> {
        let lock = lock_dir(dir, crate::DEFAULT_LOCK_WAIT)?;
        let mut segments = Vec::new();
        for path in format::list_segments(dir)? {
            let bytes = std::fs::read(&path)
                .map_err(|e| format::io_error(&format!("reading {}", path.display()), e))?;
            let frames = parse_segment(&bytes).map_err(|reason| {
                corrupt(format!(
                    "{}: {reason} (open the store once to cut a torn tail first)",
                    path.display()
                ))
            })?;
            segments.push(Segment {
                path,
                frames,
                dirty: false,
            });
        }
        Ok(Offline {
            dir: dir.to_owned(),
            _lock: lock,
            segments,
        })
    }

    /// Every event record, in file order.
    fn slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for (s, segment) in self.segments.iter().enumerate() {
            for (f, frame) in segment.frames.iter().enumerate() {
                for (r, record) in frame.iter().enumerate() {
                    if record.kind == KIND_EVENT {
                        slots.push((s, f, r));
                    }
                }
            }
        }
        slots
    }

    fn slot(&self, position: Position) -> Option<Slot> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.slots().get(index).copied()
    }

    fn record_mut(&mut self, (s, f, r): Slot) -> &mut Record {
        self.segments[s].dirty = true;
        &mut self.segments[s].frames[f][r]
    }

    fn save(self) -> Result<(), LogError> {
        for segment in self.segments.iter().filter(|segment| segment.dirty) {
            let mut bytes = Vec::new();
            let mut body = Vec::new();
            for frame in &segment.frames {
                body.clear();
                for record in frame {
                    push_record(&mut body, record.kind, |buf| {
                        buf.extend_from_slice(&record.payload)
                    })?;
                }
                push_frame(&mut bytes, &body);
            }
            replace_file(&segment.path, &bytes)?;
        }
        sync_dir(&self.dir)
    }
}

fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let temp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        std::fs::write(&temp, bytes)?;
        std::fs::File::open(&temp)?.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| format::io_error(&format!("rewriting {}", path.display()), e))
}

/// Parses every frame of a segment, refusing any damage; zeros after the last frame (written
/// ahead by the store) end it.
fn parse_segment(bytes: &[u8]) -> Result<Vec<Vec<Record>>, String> {
    let mut frames = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        if bytes[offset..].iter().all(|byte| *byte == 0) {
            break;
        }
        let header = decode_frame_header(&bytes[offset..])
            .ok_or_else(|| format!("no valid frame header at offset {offset}"))?;
        let start = offset + FRAME_HEADER_LEN;
        let body = usize::try_from(header.body_len)
            .ok()
            .and_then(|len| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| format!("frame at offset {offset} runs past the end"))?;
        if crc32fast::hash(body) != header.body_crc {
            return Err(format!("frame at offset {offset}: checksum mismatch"));
        }
        let frame = records(body)
            .map(|record| {
                record.map(|record| Record {
                    kind: record.kind,
                    payload: record.payload.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| format!("frame at offset {offset}: {reason}"))?;
        frames.push(frame);
        offset = start + body.len();
    }
    Ok(frames)
}

/// The segment files of a store, in order (for forensics and for tests that damage files).
pub fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    format::list_segments(dir)
}

/// Where the valid frames of a segment file end (the rest is zeros written ahead, damage, or
/// a torn write). Reads the file only: it takes no lock.
pub fn segment_data_len(segment: &Path) -> Result<u64, LogError> {
    let bytes = std::fs::read(segment)
        .map_err(|e| format::io_error(&format!("reading {}", segment.display()), e))?;
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..).and_then(decode_frame_header) {
        let start = offset + FRAME_HEADER_LEN;
        let Some(body) = usize::try_from(header.body_len)
            .ok()
            .and_then(|len| bytes.get(start..start.checked_add(len)?))
        else {
            break;
        };
        if crc32fast::hash(body) != header.body_crc {
            break;
        }
        offset = start + body.len();
    }
    Ok(offset as u64)
}

/// The stored bytes (an encoded envelope) of the event at `position` (`None` if the log has
/// fewer event records).
pub fn read_event_bytes(dir: &Path, position: Position) -> Result<Option<Vec<u8>>, LogError> {
    let offline = Offline::open(dir)?;
    Ok(offline
        .slot(position)
        .map(|(s, f, r)| offline.segments[s].frames[f][r].payload.clone()))
}

/// Replaces the stored bytes of the event at `position` with `bytes`, bypassing the hash
/// chain. A `position` one past the last event record inserts a record at the end of the last
/// frame (restoring a deleted last event).
pub fn tamper_overwrite_event_bytes(
    dir: &Path,
    position: Position,
    bytes: &[u8],
) -> Result<(), LogError> {
    let mut offline = Offline::open(dir)?;
    let events = offline.slots().len() as u64;
    if let Some(slot) = offline.slot(position) {
        offline.record_mut(slot).payload = bytes.to_vec();
    } else if position == events + 1 {
        let (s, segment) = offline
            .segments
            .iter_mut()
            .enumerate()
            .rev()
            .find(|(_, segment)| !segment.frames.is_empty())
            .ok_or_else(|| LogError::Unavailable("the log has no frame to insert into".into()))?;
        let frame = segment
            .frames
            .last_mut()
            .expect("a non-empty segment has frames");
        // Before the frame's head record, which stays last.
        let at = frame.len().saturating_sub(1);
        frame.insert(
            at,
            Record {
                kind: KIND_EVENT,
                payload: bytes.to_vec(),
            },
        );
        offline.segments[s].dirty = true;
    } else {
        return Err(LogError::Unavailable(format!(
            "no event at position {position} (the log holds {events} event records)"
        )));
    }
    offline.save()
}

/// Deletes the stored event at `position`, leaving a hole in the log (the events after it
/// move down one record; their envelopes still claim their own positions).
pub fn tamper_delete_event(dir: &Path, position: Position) -> Result<(), LogError> {
    let mut offline = Offline::open(dir)?;
    let (s, f, r) = offline.slot(position).ok_or_else(|| {
        LogError::Unavailable(format!("no event at position {position} to delete"))
    })?;
    offline.segments[s].frames[f].remove(r);
    offline.segments[s].dirty = true;
    offline.save()
}

/// Overwrites the store's format version, to test what opening a foreign format does.
pub fn tamper_set_format_version(dir: &Path, version: u32) -> Result<(), LogError> {
    let _lock = lock_dir(dir, crate::DEFAULT_LOCK_WAIT)?;
    let text = std::fs::read_to_string(dir.join(format::META_FILE))
        .map_err(|e| format::io_error("reading the store metadata", e))?;
    let (_, epoch) = format::parse_meta(&text)?;
    let epoch = epoch.ok_or_else(|| corrupt("store metadata has no epoch".to_owned()))?;
    write_meta(dir, version, epoch)
}
