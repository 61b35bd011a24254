//! [`AuditFeed`]: the audit timeline fed by the control plane's read model task, so the
//! server folds the log into one read model instead of two.
//!
//! Every event after the position the audit database has recorded is described by the
//! read model's task, which already holds the model just before and just after it
//! ([`Follower`]), and handed over as [`Step`]s through a bounded channel: the audit task
//! keeps no read model at all. While the read model catches up at start the steps go in
//! batches of up to [`FEED_BATCH`] (one channel operation and at most one wake-up of the
//! audit task a batch: a one-fold start of a million events spent about 0.08 s of CPU
//! less), the last one at the head of the catch-up; live events go when the read model's
//! task has applied every event it had at hand (`Follower::idle`), up to [`LIVE_BATCH`]
//! at a time (about 1,800 instructions an event less under a write load,
//! bench/FINDINGS.md, round 32). A catch-up at start of fewer than
//! [`crate::AuditOptions::catch_up_alone_behind`] events rides on the read model's own
//! catch-up: nobody is served yet, so when the channel is full the feed makes the read
//! model's task wait for the audit task (the two then share the machine's cores: one
//! describes, the other writes), and at the last event of that catch-up it waits until
//! the channel is at most half full, so the first commands after the start find room.
//! Past that head the read model's task never waits for the audit database: when the
//! channel is full (the audit task is far behind, e.g. while writes pour in) the feed
//! lets go, and the audit task goes back to reading the log itself from where the
//! handed-over steps end, as a projection without a feed does. Either way it writes the
//! same rows: both paths call `fold::before` and `fold::after`. Events of the catch-up
//! at start are written as stubs where their organization's streams alone describe them
//! (`lazy.rs`); events past it are described at once.
//!
//! A rebuild of a million events rides too (the default threshold is 2^20 events): one
//! fold builds every projection, in 1.9 s on the reference machine against 2.9 s
//! catching up alone, for about a third less CPU (bench/FINDINGS.md, round 20).
//!
//! A longer catch-up (a rebuild of a longer history, a start far behind) does not hold
//! the server back: the feed starts let go, the read model catches up alone, and the
//! audit task folds the log itself once the read model has caught up (so the two do not
//! share the cores until the server serves: on 1,000,000 events, serving after 2.0 s
//! instead of 5.0, the timeline caught up after 7.2 s instead of 5.2; bench/FINDINGS.md,
//! round 12).
//!
//! A fold of its own is the audit task's only while it is behind: once it has reached
//! the log's head it offers the events back ([`Handback`]), and the read model's task,
//! at its next event past the offer, takes the feed up again from that event: the fold
//! describes every event before it, the feed every event from it, so the audit task
//! takes each event once, in order, and drops its read model.

use signpost_control::read_model::ReadModel;
use signpost_control::{Follower, FollowerWait};
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::fold::{self, Before, FirstNamed, IndexedTime, Rows};

/// One event as the audit task consumes it, whoever folded it.
#[derive(Debug)]
pub(crate) struct Step {
    pub position: u64,
    pub commit_last_position: u64,
    pub hash: Vec<u8>,
    /// `None` for an event whose rows are already in the database.
    pub rows: Option<Rows>,
}

impl Step {
    pub(crate) fn new(envelope: &EventEnvelope, rows: Option<Rows>) -> Self {
        Self {
            position: envelope.position,
            commit_last_position: envelope.commit_last_position,
            hash: envelope.hash.to_vec(),
            rows,
        }
    }
}

/// The own fold's offer to give the events back to the feed.
pub(crate) struct Offer {
    /// The last position the own fold has handed to the audit task: the feed takes up
    /// at its next event past it.
    pub after: u64,
    /// Where the feed sends its steps, from the position it takes up at.
    pub steps: mpsc::Sender<Vec<Step>>,
    /// Told that position.
    pub accepted: oneshot::Sender<u64>,
}

/// Between a fed projection's own fold and its [`AuditFeed`]: the fold, caught up with
/// the log's head, offers the events back; the read model's task takes the offer at its
/// next event past it, or the fold withdraws it (to fold an event itself) if that has
/// not happened yet. Cheap to clone; one offer at a time.
#[derive(Clone, Default)]
pub(crate) struct Handback {
    offer: Arc<Mutex<Option<Offer>>>,
    /// Whether an offer stands: the read model's task looks at it on every event while
    /// the feed is let go, so without taking the lock.
    offered: Arc<AtomicBool>,
    /// Whether the feed was dropped (the read model's task stopped): nobody to offer to.
    feed_dropped: Arc<AtomicBool>,
    /// Whether the read model has caught up with the head it had at start.
    model_caught_up: Arc<AtomicBool>,
    /// Raised when the read model has caught up, or the feed is dropped.
    model_moved: Arc<tokio::sync::Notify>,
}

impl Handback {
    /// Puts `offer` up (replacing any other).
    pub(crate) fn offer(&self, offer: Offer) {
        *self.offer.lock().expect("handback lock") = Some(offer);
        self.offered.store(true, Ordering::Release);
    }

    /// Takes the offer back; false if the feed took it first.
    pub(crate) fn withdraw(&self) -> bool {
        let withdrawn = self.offer.lock().expect("handback lock").take().is_some();
        self.offered.store(false, Ordering::Release);
        withdrawn
    }

    /// Waits until the read model has caught up with the head it had at start (or its
    /// task stopped), so that a fold catching up alone at start leaves it the cores
    /// until the server serves.
    pub(crate) async fn model_caught_up(&self) {
        loop {
            let moved = self.model_moved.notified();
            if self.model_caught_up.load(Ordering::Acquire) || !self.feed_is_alive() {
                return;
            }
            moved.await;
        }
    }

    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.model_moved.notify_waiters();
    }

    /// Whether the feed still exists to take an offer.
    pub(crate) fn feed_is_alive(&self) -> bool {
        !self.feed_dropped.load(Ordering::Acquire)
    }

    /// The feed's side: the standing offer, if the event at `position` comes after it.
    fn take_before(&self, position: u64) -> Option<Offer> {
        // Paired with the fence in the fold's offer, which then reads the log's head: the
        // event at `position` was in the log before this, so either the fold sees a head
        // at or past it (and does not count on this feed taking the offer at once) or this
        // sees its offer.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.offered.load(Ordering::Acquire) {
            return None;
        }
        let mut offer = self.offer.lock().expect("handback lock");
        if offer.as_ref().is_some_and(|offer| offer.after < position) {
            self.offered.store(false, Ordering::Release);
            offer.take()
        } else {
            None
        }
    }
}

/// The read model task's side of an [`crate::AuditProjection`] started with
/// [`crate::AuditProjection::start_fed`]: give it to
/// [`signpost_control::ControlPlane::start_with`] as the follower.
pub struct AuditFeed {
    /// Events at or below this position are in the audit database already.
    from: u64,
    /// The log's head when the feed was made: up to it, a full channel makes the read
    /// model's task wait; past it, the feed lets go.
    catch_up_to: u64,
    time: IndexedTime,
    /// While the read model catches up (to `catch_up_to`), with entries described when
    /// read: what writing organization-local entries as stubs needs (kept from position
    /// 1). Live events are described at once.
    stubs: Option<FirstNamed>,
    before: Option<Before>,
    /// Steps described and not handed over yet: while the read model catches up they go
    /// in batches of [`FEED_BATCH`]; live ones when the read model's task runs out of
    /// events at hand, or by [`LIVE_BATCH`].
    batch: Vec<Step>,
    /// `None` while the feed is let go.
    sender: Option<mpsc::Sender<Vec<Step>>>,
    /// Where the audit task's own fold offers the events back.
    handback: Handback,
}

impl std::fmt::Debug for AuditFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeed")
            .field("from", &self.from)
            .field("catch_up_to", &self.catch_up_to)
            .field("attached", &self.sender.is_some())
            .field(
                "offer_standing",
                &self.handback.offered.load(Ordering::Acquire),
            )
            .finish()
    }
}

impl AuditFeed {
    /// A feed describing every event past `from`; `sender: None`: started let go, until
    /// the audit task's own fold offers the events back through `handback`.
    pub(crate) fn new(
        from: u64,
        catch_up_to: u64,
        sender: Option<mpsc::Sender<Vec<Step>>>,
        handback: Handback,
        stubs: bool,
    ) -> Self {
        if catch_up_to == 0 {
            // Nothing to catch up on: the model is caught up already.
            handback.raise(&handback.model_caught_up);
        }
        Self {
            from,
            catch_up_to,
            time: IndexedTime::default(),
            stubs: (stubs && catch_up_to > from).then(FirstNamed::default),
            before: None,
            batch: Vec::new(),
            sender,
            handback,
        }
    }

    /// The room the read model's task waits for once a batch ending at `position` is
    /// handed over: at the last event of the catch-up, half the channel (see the
    /// module's notes); before it, enough that at most `capacity / batch` places hold
    /// batches, so the steps waiting stay within the channel's capacity.
    fn room(&self, position: u64, capacity: usize) -> usize {
        if position == self.catch_up_to {
            capacity / 2
        } else if position < self.catch_up_to {
            capacity - (capacity / batch_len(capacity)).max(1) + 1
        } else {
            0
        }
    }
}

/// The steps a batch holds while the read model catches up, for a channel of `capacity`
/// places: [`FEED_BATCH`], or fewer for a smaller channel.
fn batch_len(capacity: usize) -> usize {
    FEED_BATCH.min(capacity).max(1)
}

/// Most steps handed over at once while the read model catches up at start: one channel
/// operation (and at most one wake-up of the audit task) per batch instead of per event.
pub(crate) const FEED_BATCH: usize = 128;

/// Most live steps handed over at once (a write load's batches of commits are about this
/// size); fewer when the read model's task runs out of events first.
pub(crate) const LIVE_BATCH: usize = 16;

/// The steps a live batch holds at most, for a channel of `capacity` places.
fn live_batch_len(capacity: usize) -> usize {
    LIVE_BATCH.min(capacity).max(1)
}

/// The read model's wait for the audit task: until `steps` (if any) are handed over, then
/// until `room` places are free. If the audit task is gone, the wait ends and the next
/// event finds the channel closed.
fn wait(sender: mpsc::Sender<Vec<Step>>, steps: Option<Vec<Step>>, room: usize) -> FollowerWait {
    Box::pin(async move {
        if let Some(steps) = steps {
            if sender.send(steps).await.is_err() {
                return;
            }
        }
        if room > 0 {
            let _ = sender.reserve_many(room).await;
        }
    })
}

impl Drop for AuditFeed {
    fn drop(&mut self) {
        self.handback.raise(&self.handback.feed_dropped);
    }
}

impl Follower for AuditFeed {
    fn before(&mut self, envelope: &EventEnvelope, event: &Event, model: &ReadModel) {
        // The indexed time is a running maximum from position 1, wherever the rows start.
        let time_nanos = self.time.advance(envelope);
        if envelope.position > self.catch_up_to {
            self.stubs = None;
        }
        if envelope.position <= self.from {
            if let Some(first) = &mut self.stubs {
                first.note_before(envelope, event, model);
            }
            return;
        }
        if self.sender.is_none() {
            let Some(offer) = self.handback.take_before(envelope.position) else {
                return;
            };
            // Nobody waits for the answer when the fold handed the events back at a
            // quiet head, sure that this event would take them up.
            let _ = offer.accepted.send(envelope.position);
            tracing::info!(
                position = envelope.position,
                "audit timeline described by the read model's task again"
            );
            self.sender = Some(offer.steps);
        }
        self.before = Some(fold::before(
            envelope,
            event,
            model,
            time_nanos,
            self.stubs.as_mut(),
        ));
    }

    fn after(
        &mut self,
        envelope: &EventEnvelope,
        _event: &Event,
        model: &ReadModel,
    ) -> Option<FollowerWait> {
        if envelope.position == self.catch_up_to {
            self.handback.raise(&self.handback.model_caught_up);
            // Live events are described at once: what writing stubs needed (an entry per
            // connection and setup-link stream) goes now, not at the first live event.
            self.stubs = None;
        }
        let before = self.before.take()?;
        let sender = self.sender.as_ref()?;
        let capacity = sender.max_capacity();
        let queued = capacity - sender.capacity();
        let rows = fold::after(before, model);
        let position = envelope.position;
        self.batch.push(Step::new(envelope, Some(rows)));
        if position < self.catch_up_to && self.batch.len() < batch_len(capacity) {
            return None;
        }
        // Live steps wait for the read model's task to run out of events at hand (`idle`),
        // or for a live batch to fill: one hand-over and one wake-up of the audit task for
        // what one read of the log brought, not for each event. Only while few messages
        // wait: at most `capacity / live` live batches are queued, so the steps waiting stay
        // within twice the capacity (a crowded channel takes steps one by one, as it did).
        let live = live_batch_len(capacity);
        if position > self.catch_up_to && self.batch.len() < live && queued < capacity / live {
            return None;
        }
        self.hand_over(position)
    }

    fn idle(&mut self) {
        let Some(position) = self.batch.last().map(|step| step.position) else {
            return;
        };
        if position > self.catch_up_to {
            // Live: never a wait (see `hand_over`).
            let wait = self.hand_over(position);
            debug_assert!(wait.is_none());
        }
    }
}

impl AuditFeed {
    /// Hands the steps gathered, the last at `position`, to the audit task. While the
    /// read model catches up a full channel makes it wait (the returned wait); past that,
    /// a full channel lets the feed go.
    fn hand_over(&mut self, position: u64) -> Option<FollowerWait> {
        let sender = self.sender.as_ref()?;
        let capacity = sender.max_capacity();
        let batch = batch_len(capacity);
        let steps = std::mem::replace(
            &mut self.batch,
            if position < self.catch_up_to {
                Vec::with_capacity(batch)
            } else {
                Vec::new()
            },
        );
        // The last event of the catch-up: the read model (and serving) goes on once the
        // channel is at most half full, so that the first commands' events find room
        // instead of making the feed let go while the audit task drains the catch-up.
        let room = self.room(position, capacity);
        match sender.try_send(steps) {
            Ok(()) if sender.capacity() >= room => None,
            Ok(()) => Some(wait(sender.clone(), None, room)),
            Err(mpsc::error::TrySendError::Full(steps)) if position <= self.catch_up_to => {
                // Catching up at start: the read model waits for the audit task.
                Some(wait(sender.clone(), Some(steps), room))
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    position,
                    capacity,
                    "audit timeline fell behind the read model; it reads the log itself from here"
                );
                self.sender = None;
                None
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.sender = None;
                None
            }
        }
    }
}
