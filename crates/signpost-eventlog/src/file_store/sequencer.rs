//! The file store's single writer: group commit into one frame, one `write`, one `fdatasync`.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::checkpoint;
use super::format::{
    begin_frame, finish_frame, head_payload, io_error, push_record, IdempotencyRecord,
    FRAME_HEADER_LEN, KIND_EVENT, KIND_HEAD, KIND_IDEMPOTENCY,
};
use super::index::{idempotency_hash, pack, Location, MAX_SEGMENT_OFFSET};
use super::recover::create_segment;
use super::{find_idempotency, FileOptions, RecentBatch, Shared, RECENT_BATCH_EVENTS};
use crate::batch::{BatchPlan, CommittedState};
use crate::error::LogError;
use crate::sequencing::{next_batch, poisoned_error};
use crate::types::{AppendOutcome, Head, IdempotencyKey, StoredOutcome, StreamId};

pub(super) use crate::sequencing::Request;

pub(super) struct Sequencer {
    pub dir: PathBuf,
    pub shared: Arc<Shared>,
    pub requests: mpsc::Receiver<Request>,
    pub head: Head,
    /// The segment frames are appended to, and its length.
    pub segment: u32,
    pub file: Arc<File>,
    pub offset: u64,
    /// The segment's length: `offset..allocated` holds zeros written ahead.
    pub allocated: u64,
    /// Writing zeros ahead failed in this segment: not tried again before the next one.
    pub preallocation_failed: bool,
    pub options: FileOptions,
    pub hasher: RandomState,
    pub poisoned: bool,
    /// The frame being built (reused between batches).
    pub frame: Vec<u8>,
    /// The store's epoch, which its index checkpoint carries.
    pub epoch: uuid::Uuid,
    /// Where the index checkpoint on disk ends, if it is this store's index up to there:
    /// closing at that place has nothing new to save.
    pub checkpointed_at: Option<(u32, u64)>,
}

/// Where a written batch's records landed.
struct Written {
    events: Vec<Location>,
    idempotency: Vec<(u64, Location)>,
    /// The frame's segment, offset and header.
    frame: (u32, u64, [u8; FRAME_HEADER_LEN]),
}

/// The committed state as the sequencer sees it: the index holds exactly what is durable,
/// and only the sequencer extends it.
struct SequencerView<'a> {
    shared: &'a Shared,
}

impl CommittedState for SequencerView<'_> {
    fn stream_version(&mut self, stream: &StreamId) -> Result<u64, LogError> {
        Ok(self
            .shared
            .index()
            .stream(stream.as_str())
            .map_or(0, |positions| positions.len() as u64))
    }

    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<StoredOutcome>, LogError> {
        find_idempotency(self.shared, key)
    }
}

impl Sequencer {
    pub fn run(mut self) {
        let max_batch = self.options.max_batch_commits.max(1);
        let mut requests = Vec::with_capacity(max_batch);
        while next_batch(&mut self.requests, &mut requests, max_batch) {
            self.commit_batch(&mut requests);
        }
        // Closing cleanly: save the index, so that the next open need not rebuild it
        // (`checkpoint.rs`). A poisoned store saves nothing.
        if !self.poisoned && self.checkpointed_at != Some((self.segment, self.offset)) {
            let index = self.shared.index();
            if index.slots() > 0 {
                if let Err(error) =
                    checkpoint::write(&self.dir, self.epoch, &index, self.segment, self.offset)
                {
                    tracing::warn!(%error, "event log: could not write the index checkpoint");
                }
            }
        }
        tracing::debug!("event log sequencer stopped");
    }

    fn commit_batch(&mut self, requests: &mut Vec<Request>) {
        if self.poisoned {
            for request in requests.drain(..) {
                let _ = request.reply.send(Err(poisoned_error()));
            }
            return;
        }
        let mut plan = BatchPlan::with_capacity(self.head, requests.len());
        let mut answers = Vec::with_capacity(requests.len());
        let mut accepted = 0u64;
        {
            let mut view = SequencerView {
                shared: &self.shared,
            };
            for request in requests.drain(..) {
                let answer = plan.add(request.commit, &mut view);
                if matches!(answer, Ok(AppendOutcome::Committed(_))) {
                    accepted += 1;
                }
                answers.push((request.reply, answer));
            }
        }
        if plan.is_empty() {
            // Only refusals and duplicates of committed commands: nothing to make durable.
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
            return;
        }

        let written = match self.write(&plan) {
            Ok(written) => written,
            Err(error) => {
                // Part of the frame may be on disk and the next frame would follow it: stop
                // writing. A restart cuts the frame if it is incomplete (it was never
                // acknowledged) or keeps it whole.
                self.poisoned = true;
                self.shared.poisoned.store(true, Ordering::Release);
                tracing::error!(%error, position = self.head.position, "event log write failed, store poisoned");
                for (reply, _) in answers {
                    let _ = reply.send(Err(LogError::Unavailable(format!(
                        "event log write failed: {error}"
                    ))));
                }
                return;
            }
        };

        let head = plan.head();
        self.head = head;
        // Kept before the index reaches the batch, so that a reader who sees it there finds
        // its envelopes here (a reader who does not reads the segment: the same bytes).
        let first = head.position + 1 - plan.envelopes.len() as u64;
        let recent = (plan.envelopes.len() <= RECENT_BATCH_EVENTS).then(|| {
            Arc::new(RecentBatch {
                first,
                envelopes: std::mem::take(&mut plan.envelopes),
            })
        });
        *self.shared.recent() = recent.clone();
        let envelopes = recent
            .as_deref()
            .map_or(&plan.envelopes, |batch| &batch.envelopes);
        {
            let mut index = self.shared.index_mut();
            for (envelope, location) in envelopes.iter().zip(written.events) {
                index.push_event(location, Some(&envelope.stream_id));
            }
            for (hash, location) in written.idempotency {
                index.push_idempotency(hash, location);
            }
            let (segment, offset, header) = written.frame;
            index.frames.add(segment, offset, &header);
            index.head = head;
        }
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.shared.commits.fetch_add(accepted, Ordering::Relaxed);
        self.shared
            .events
            .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
        // Published (index, then watch) before answering: whoever hears "committed" can read
        // it back.
        self.shared.head_tx.send_replace(head.position);
        tracing::trace!(
            position = head.position,
            commits = accepted,
            "batch committed"
        );
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        if let Err(error) = self.preallocate() {
            // Only zeros were written, past the data: nothing is damaged. Frames simply go past
            // the end of the file again (each `fdatasync` then commits the journal too) until
            // the next segment; a disk that cannot take the frames fails their write instead.
            self.preallocation_failed = true;
            tracing::warn!(%error, "event log could not write zeros ahead of its data; continuing without");
        }
    }

    /// Keeps zeros written ahead of the log's end (see [`FileOptions::preallocate_bytes`]), so
    /// that the next batches overwrite allocated blocks and their `fdatasync` flushes data
    /// only. Runs after the batch was answered, so no caller waits for it.
    fn preallocate(&mut self) -> Result<(), LogError> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let chunk = self.options.preallocate_bytes;
        if chunk == 0 || self.preallocation_failed || self.allocated >= self.offset + chunk / 2 {
            return Ok(());
        }
        let limit = self.options.segment_bytes.min(MAX_SEGMENT_OFFSET);
        let end = (self.offset + chunk).min(limit);
        let mut at = self.allocated.max(self.offset);
        if end <= at {
            return Ok(());
        }
        while at < end {
            let len = (end - at).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..len], at)
                .map_err(|e| io_error("writing zeros ahead of the log", e))?;
            at += len as u64;
        }
        self.file
            .sync_data()
            .map_err(|e| io_error("fdatasync of the zeros ahead of the log", e))?;
        self.allocated = end;
        Ok(())
    }

    /// Encodes the batch as one frame, appends it with one write and one `fdatasync`.
    fn write(&mut self, plan: &BatchPlan) -> Result<Written, LogError> {
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::AcqRel) {
            return Err(LogError::Unavailable("injected write failure".to_owned()));
        }
        let frame = &mut self.frame;
        begin_frame(frame);
        let mut events = Vec::with_capacity(plan.envelopes.len());
        for envelope in &plan.envelopes {
            events.push(push_record(frame, KIND_EVENT, |buf| {
                buf.reserve(envelope.encoded_len());
                envelope.encode_raw(buf);
            })?);
        }
        let mut idempotency = Vec::with_capacity(plan.idempotency.len());
        for (key, stored) in &plan.idempotency {
            let record = IdempotencyRecord::new(key, stored);
            let hash = idempotency_hash(
                &self.hasher,
                key.principal.as_bytes(),
                key.request_id.as_bytes(),
            );
            let (offset, len) = push_record(frame, KIND_IDEMPOTENCY, |buf| {
                buf.reserve(record.encoded_len());
                record.encode_raw(buf);
            })?;
            idempotency.push((hash, offset, len));
        }
        push_record(frame, KIND_HEAD, |buf| {
            buf.extend_from_slice(&head_payload(plan.head()))
        })?;
        finish_frame(frame);

        let frame_len = self.frame.len() as u64;
        let limit = self.options.segment_bytes.min(MAX_SEGMENT_OFFSET);
        if self.offset > 0 && self.offset + frame_len > limit {
            self.roll()?;
        }
        self.file
            .write_all_at(&self.frame, self.offset)
            .map_err(|e| io_error("writing to the log", e))?;
        self.file
            .sync_data()
            .map_err(|e| io_error("fdatasync of the log", e))?;
        let base = self.offset;
        self.offset += frame_len;
        self.allocated = self.allocated.max(self.offset);
        let at = |offset: usize, len: u32| Location {
            packed: pack(self.segment, base + offset as u64),
            len,
        };
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.frame[..FRAME_HEADER_LEN]);
        Ok(Written {
            frame: (self.segment, base, header),
            events: events.into_iter().map(|(o, l)| at(o, l)).collect(),
            idempotency: idempotency
                .into_iter()
                .map(|(hash, o, l)| (hash, at(o, l)))
                .collect(),
        })
    }

    /// Starts the next segment (durably created before anything is written to it), after
    /// cutting the zeros written ahead of the current one.
    fn roll(&mut self) -> Result<(), LogError> {
        if self.allocated > self.offset {
            self.file
                .set_len(self.offset)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| io_error("cutting the zeros of a full segment", e))?;
        }
        let number = self.segment + 1;
        let file = Arc::new(create_segment(&self.dir, number)?);
        {
            let mut index = self.shared.index_mut();
            let mut segments = (*index.segments).clone();
            segments.push(file.clone());
            index.segments = Arc::new(segments);
        }
        tracing::debug!(segment = number, "event log started a new segment");
        self.segment = number;
        self.file = file;
        self.offset = 0;
        self.allocated = 0;
        self.preallocation_failed = false;
        Ok(())
    }
}
