//! [`WatchStream`]: one `WatchRoutes` stream, as a state machine written out by hand.
//!
//! A route change wakes every open stream, and each does the same small pass: pull
//! what it is behind by, hand over the delta, wait again. The pass is written here as a
//! plain [`Stream`] over a small struct rather than as a generator (`async_stream`):
//! a generator keeps every local of every branch (the opening, the snapshot's chunk and
//! iterator, the pull's result) in the stream's state, hands each message over through a
//! thread-local slot, and resumes through its whole state machine; 10,000 streams did
//! that at every change, each on a cold cache line of its own (bench/FINDINGS.md, round
//! 37). Here the live state is what a stream needs between changes: its cursor, its
//! connection's channel and the deltas it still has to send. A stream one table change
//! behind takes that change's delta from the channel (`TableChange::delta_after`); only
//! a stream further behind, or one told by a tick that progress is due, pulls from the
//! projection, under its lock. The snapshot, sent when a
//! stream opens or after a `TOO_SLOW` reset, is a boxed stream of its own, dropped once
//! sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::watch_routes_response::Kind;
use signpost_control::ControlError;
use signpost_routing::{Delta, Deltas, Pulled, RoutingProjection, TableChange};
use tonic::Status;

use super::relay::{Changes, Closed};
use super::{message, WatchFrame, SNAPSHOT_CHUNK};
use crate::status::to_status;

/// The frames of a snapshot being sent, then its end marker.
type SnapshotFrames = Pin<Box<dyn Stream<Item = WatchFrame> + Send>>;

/// One `WatchRoutes` stream (see the module's documentation).
pub(super) struct WatchStream {
    routing: RoutingProjection,
    epoch: Arc<str>,
    /// Table changes and progress ticks, shared with the connection's other streams.
    changes: Changes<TableChange>,
    /// The revision the watcher holds once what it was sent is applied.
    cursor: u64,
    step: Step,
    /// A frame to send before anything else (a reset before its snapshot, a catch-up).
    next: Option<WatchFrame>,
    /// The last pull's deltas still to send, the next one last.
    deltas: Deltas,
    /// The last pass sent a delta.
    sent: bool,
    /// The channel ticked: the next pass sends a progress message if it sends no delta.
    progress_due: bool,
}

enum Step {
    /// Sending a snapshot; then a pass at its revision.
    Snapshot(SnapshotFrames),
    /// What a resuming watcher is behind by, pulled once when it opened to know that it
    /// can resume (a catch-up is not built twice); boxed, as it is rare and the stream
    /// lives for hours.
    Resumed(Box<(Pulled, u64)>),
    /// Pull what the watcher is behind by.
    Pass,
    /// Sending the pull's deltas.
    Deltas,
    /// The pass's deltas are sent: the projection's failure, or a progress message.
    AfterPass,
    /// Waiting for the table to change or the channel to tick.
    Wait,
    /// The stream ended (with an error sent, or none).
    Done,
}

impl WatchStream {
    /// A stream for `request` on the channel `changes`: a resume from the request's
    /// revision when the history still reaches it, otherwise (after a reset saying why,
    /// when a resume was asked for) a snapshot.
    pub(super) fn open(
        routing: RoutingProjection,
        mut changes: Changes<TableChange>,
        request: wire::WatchRoutesRequest,
    ) -> Self {
        let epoch = routing.shared_epoch();
        let wire::WatchRoutesRequest {
            from_revision,
            store_epoch,
        } = request;
        let mut stream_reset = None;
        if let Some(from) = from_revision {
            let reset = if store_epoch != *epoch {
                wire::ResetReason::EpochChanged
            } else if from > routing.revision() {
                wire::ResetReason::RevisionAhead
            } else {
                match routing.pull(from) {
                    Ok(pulled) => {
                        return Self::new(
                            routing,
                            epoch,
                            changes,
                            from,
                            Step::Resumed(Box::new(pulled)),
                        );
                    }
                    Err(_) => wire::ResetReason::HistoryNotKept,
                }
            };
            stream_reset = Some(reset);
        }
        let (revision, snapshot) = snapshot(&routing, &epoch, &mut changes);
        let mut stream = Self::new(routing, epoch, changes, revision, snapshot);
        stream.next = stream_reset.map(|reason| stream.reset(reason));
        stream
    }

    fn new(
        routing: RoutingProjection,
        epoch: Arc<str>,
        changes: Changes<TableChange>,
        cursor: u64,
        step: Step,
    ) -> Self {
        Self {
            routing,
            epoch,
            changes,
            cursor,
            step,
            next: None,
            deltas: Deltas::new(),
            sent: false,
            progress_due: false,
        }
    }

    /// A reset message for `reason`, at the current revision.
    fn reset(&self, reason: wire::ResetReason) -> WatchFrame {
        message(
            self.routing.revision(),
            &self.epoch,
            Kind::Reset(wire::Reset {
                reason: reason as i32,
            }),
        )
    }

    /// Takes what the watcher at the cursor is behind by: deltas to send one by one, a
    /// catch-up, or (the history no longer reaching it) a reset and a snapshot.
    fn take(&mut self, pulled: Result<(Pulled, u64), signpost_routing::HistoryGap>) {
        self.sent = false;
        match pulled {
            Err(_) => {
                self.next = Some(self.reset(wire::ResetReason::TooSlow));
                let (revision, snapshot) = snapshot(&self.routing, &self.epoch, &mut self.changes);
                self.cursor = revision;
                self.step = snapshot;
            }
            Ok((Pulled::Deltas(deltas), revision)) => {
                // Behind by commits that change the same routes again: one message.
                let mut deltas = Delta::coalesce(deltas);
                deltas.reverse();
                self.sent = !deltas.is_empty();
                self.deltas = deltas;
                self.cursor = revision;
                self.step = Step::Deltas;
            }
            Ok((Pulled::CatchUp(delta), revision)) => {
                // Far behind: every route changed since, each once, in one message built
                // for this stream (and written in pieces).
                self.sent = true;
                self.next = Some(WatchFrame::CatchUp {
                    delta: Arc::new(delta),
                    store_epoch: self.epoch.clone(),
                });
                self.cursor = revision;
                self.step = Step::Deltas;
            }
        }
    }
}

/// The table now, as a snapshot to send (its revision, and the step sending it); the
/// changes channel marked seen first, so that a change after the snapshot is not missed.
fn snapshot(
    routing: &RoutingProjection,
    epoch: &Arc<str>,
    changes: &mut Changes<TableChange>,
) -> (u64, Step) {
    changes.borrow_and_update();
    let (revision, table) = routing.snapshot();
    let epoch = epoch.clone();
    // Chunks are built as they are sent: one chunk of routes is referenced at a time,
    // never the whole table (the persistent map stays valid while the projection moves
    // on), and routes are encoded where they are.
    let frames = async_stream::stream! {
        let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK.min(table.len()));
        for route in table.values() {
            chunk.push(route.clone());
            if chunk.len() == SNAPSHOT_CHUNK {
                let routes = std::mem::replace(&mut chunk, Vec::with_capacity(SNAPSHOT_CHUNK));
                yield WatchFrame::SnapshotChunk { revision, store_epoch: epoch.clone(), routes };
            }
        }
        if !chunk.is_empty() {
            yield WatchFrame::SnapshotChunk { revision, store_epoch: epoch.clone(), routes: chunk };
        }
        yield message(revision, &epoch, Kind::SnapshotEnd(wire::SnapshotEnd { route_count: table.len() as u64 }));
    };
    (revision, Step::Snapshot(Box::pin(frames)))
}

impl Stream for WatchStream {
    type Item = Result<WatchFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.next.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match &mut this.step {
                Step::Snapshot(frames) => match frames.as_mut().poll_next(cx) {
                    Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(None) => this.step = Step::Pass,
                    Poll::Pending => return Poll::Pending,
                },
                Step::Resumed(_) => {
                    if let Step::Resumed(pulled) = std::mem::replace(&mut this.step, Step::Pass) {
                        this.take(Ok(*pulled));
                    }
                }
                Step::Pass => {
                    let pulled = this.routing.pull(this.cursor);
                    this.take(pulled);
                }
                Step::Deltas => match this.deltas.pop() {
                    // Encoded and framed by the first stream to write it; the others send
                    // those bytes.
                    Some(delta) => {
                        let store_epoch = this.epoch.clone();
                        return Poll::Ready(Some(Ok(WatchFrame::Delta { delta, store_epoch })));
                    }
                    None => this.step = Step::AfterPass,
                },
                Step::AfterPass => {
                    if let Some(reason) = this.routing.failure() {
                        this.step = Step::Done;
                        return Poll::Ready(Some(Err(to_status(ControlError::Internal(reason)))));
                    }
                    this.step = Step::Wait;
                    if std::mem::take(&mut this.progress_due) && !this.sent {
                        // Nothing changed the table since the last message: the stream has
                        // everything up to the revision it just caught up to.
                        let progress = Kind::Progress(wire::Progress {});
                        return Poll::Ready(Some(Ok(message(this.cursor, &this.epoch, progress))));
                    }
                }
                Step::Wait => match this.changes.poll_changed(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(moved)) => {
                        this.progress_due = moved.ticked;
                        this.step = Step::Pass;
                        // One table change behind, as a stream almost always is: its
                        // delta came with the change, and the projection is not asked.
                        if moved.changed {
                            let change = this.changes.borrow_and_update();
                            if let Some(delta) = change.delta_after(this.cursor) {
                                this.cursor = delta.revision;
                                this.sent = true;
                                // Empty: a stream waits only once its deltas are sent.
                                this.deltas.push(delta);
                                this.step = Step::Deltas;
                            }
                        }
                    }
                    Poll::Ready(Err(Closed)) => {
                        this.step = Step::Done;
                        return Poll::Ready(Some(Err(Status::unavailable(
                            "the routing projection stopped; resume from your revision",
                        ))));
                    }
                },
                Step::Done => return Poll::Ready(None),
            }
        }
    }
}
