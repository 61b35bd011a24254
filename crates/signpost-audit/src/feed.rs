//! [`AuditFeed`]: the audit timeline fed by the control plane's read model task, so the
//! server folds the log into one read model instead of two.
//!
//! Every event after the position the audit database has recorded is described by the
//! read model's task, which already holds the model just before and just after it
//! ([`Follower`]), and handed over as [`Step`]s through a bounded channel: the audit task
//! keeps no read model at all. A catch-up at start of fewer than
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
//! A longer catch-up (a rebuild of the timeline, a start far behind) does not make the
//! read model's task wait for the audit's rows: the feed starts let go, and the audit
//! task folds the events with a read model of its own, on a thread of its own. The feed
//! *lends* that fold the events as the read model's task applies them (`Lent`: batches
//! of 256 decoded envelopes and events, handed over by value through
//! `Follower::applied`), so the log is read and decoded once, and the two folds run on
//! two cores at once. The read model's task never waits for the lending: when
//! [`LEND_QUEUE`] batches are waiting (the fold is that far behind) it lends no more, and
//! the fold reads the rest of the log itself once the read model has caught up. On
//! 1,000,001 events the timeline caught up with the read model, 2.2 s after the log
//! opened instead of 3.1, for 3.9 s of CPU instead of 4.9, the server serving at the
//! same moment instead of after 1.2 s (bench/FINDINGS.md, round 20).
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
            hash: envelope.hash.clone(),
            rows,
        }
    }
}

/// Events the read model's task has applied, decoded, lent in position order to the
/// audit task's own fold while both catch up at start (see [`AuditFeed`]).
pub(crate) type Lent = Vec<(EventEnvelope, Event)>;

/// How many events the feed lends at once.
const LEND_BATCH: usize = 256;

/// How many lent batches may wait for the own fold: when they are all waiting, the fold
/// is behind the read model, and the feed stops lending rather than hold the read model
/// back (the fold then reads the rest of the log itself, once the model has caught up).
pub(crate) const LEND_QUEUE: usize = 64;

/// The feed's side of the lending: where the batches go, and the one being filled.
struct Lender {
    sender: mpsc::Sender<Lent>,
    batch: Lent,
}

/// The own fold's offer to give the events back to the feed.
pub(crate) struct Offer {
    /// The last position the own fold has handed to the audit task: the feed takes up
    /// at its next event past it.
    pub after: u64,
    /// Where the feed sends its steps, from the position it takes up at.
    pub steps: mpsc::Sender<Step>,
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
    /// task stopped), so that a fold catching up alone at start reads the log itself
    /// (past what was lent to it) only once the server serves.
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
    /// `None` while the feed is let go.
    sender: Option<mpsc::Sender<Step>>,
    /// Where the audit task's own fold offers the events back.
    handback: Handback,
    /// While the read model catches up and the audit task folds the log itself (a long
    /// catch-up at start): where the applied events are lent to that fold.
    lender: Option<Lender>,
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
            .field("lending", &self.lender.is_some())
            .finish()
    }
}

impl AuditFeed {
    /// A feed describing every event past `from`; `sender: None`: started let go, until
    /// the audit task's own fold offers the events back through `handback`. `lend`: where
    /// the events of the read model's catch-up (up to `catch_up_to`) are lent to that
    /// fold.
    pub(crate) fn new(
        from: u64,
        catch_up_to: u64,
        sender: Option<mpsc::Sender<Step>>,
        handback: Handback,
        stubs: bool,
        lend: Option<mpsc::Sender<Lent>>,
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
            sender,
            handback,
            lender: lend.filter(|_| catch_up_to > 0).map(|sender| Lender {
                sender,
                batch: Vec::with_capacity(LEND_BATCH),
            }),
        }
    }
}

/// The read model's wait for the audit task: until `step` (if any) is handed over, then
/// until `room` steps are free. If the audit task is gone, the wait ends and the next
/// event finds the channel closed.
fn wait(sender: mpsc::Sender<Step>, step: Option<Step>, room: usize) -> FollowerWait {
    Box::pin(async move {
        if let Some(step) = step {
            if sender.send(step).await.is_err() {
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
        }
        let before = self.before.take()?;
        let sender = self.sender.as_ref()?;
        let rows = fold::after(before, model);
        // The last event of the catch-up: the read model (and serving) goes on once the
        // channel is at most half full, so that the first commands' events find room
        // instead of making the feed let go while the audit task drains the catch-up.
        let room = if envelope.position == self.catch_up_to {
            sender.max_capacity() / 2
        } else {
            0
        };
        match sender.try_send(Step::new(envelope, Some(rows))) {
            Ok(()) if room == 0 => None,
            Ok(()) => Some(wait(sender.clone(), None, room)),
            Err(mpsc::error::TrySendError::Full(step)) if envelope.position <= self.catch_up_to => {
                // Catching up at start: the read model waits for the audit task.
                Some(wait(sender.clone(), Some(step), room))
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    position = envelope.position,
                    capacity = sender.max_capacity(),
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

    fn applied(&mut self, envelope: EventEnvelope, event: Event) {
        let Some(lender) = &mut self.lender else {
            return;
        };
        let position = envelope.position;
        lender.batch.push((envelope, event));
        let last = position >= self.catch_up_to;
        if lender.batch.len() < LEND_BATCH && !last {
            return;
        }
        let batch = std::mem::replace(&mut lender.batch, Vec::with_capacity(LEND_BATCH));
        match lender.sender.try_send(batch) {
            Ok(()) if !last => {}
            Ok(()) => self.lender = None,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(
                    position,
                    "audit fold fell behind the read model's catch-up; it reads the rest of the log itself"
                );
                self.lender = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.lender = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signpost_domain::schema;

    /// Shows the feed events 1..=`last` as the read model's task hands them over.
    fn apply_up_to(feed: &mut AuditFeed, last: u64) {
        for position in 1..=last {
            let envelope = EventEnvelope {
                position,
                ..EventEnvelope::default()
            };
            feed.applied(envelope, Event::ApiTokenRevoked(schema::ApiTokenRevoked {}));
        }
    }

    fn positions(batch: &Lent) -> (u64, u64) {
        (batch[0].0.position, batch[batch.len() - 1].0.position)
    }

    #[test]
    fn the_catch_up_is_lent_in_batches_up_to_the_head_and_then_no_more() {
        let (lend, mut lent) = mpsc::channel(LEND_QUEUE);
        let head = LEND_BATCH as u64 + 10;
        let mut feed = AuditFeed::new(0, head, None, Handback::default(), true, Some(lend));
        assert!(format!("{feed:?}").contains("lending: true"));
        apply_up_to(&mut feed, head + 5);
        assert_eq!(positions(&lent.try_recv().unwrap()), (1, LEND_BATCH as u64));
        // The last, partial batch goes at the head, and the lending ends there.
        assert_eq!(
            positions(&lent.try_recv().unwrap()),
            (LEND_BATCH as u64 + 1, head)
        );
        assert_eq!(
            lent.try_recv().unwrap_err(),
            mpsc::error::TryRecvError::Disconnected
        );
        assert!(format!("{feed:?}").contains("lending: false"));
    }

    #[test]
    fn a_fold_a_queue_behind_is_lent_nothing_more() {
        // Room for two batches, nobody taking them: the third does not fit, and the
        // read model's task goes on without waiting, lending nothing after.
        let (lend, mut lent) = mpsc::channel(2);
        let head = 5 * LEND_BATCH as u64;
        let mut feed = AuditFeed::new(0, head, None, Handback::default(), true, Some(lend));
        apply_up_to(&mut feed, head);
        assert!(format!("{feed:?}").contains("lending: false"));
        assert_eq!(positions(&lent.try_recv().unwrap()), (1, LEND_BATCH as u64));
        let batch = LEND_BATCH as u64;
        assert_eq!(positions(&lent.try_recv().unwrap()), (batch + 1, 2 * batch));
        assert_eq!(
            lent.try_recv().unwrap_err(),
            mpsc::error::TryRecvError::Disconnected
        );
    }

    #[test]
    fn nothing_is_lent_when_there_is_nothing_to_catch_up_on() {
        let (lend, mut lent) = mpsc::channel(LEND_QUEUE);
        let mut feed = AuditFeed::new(0, 0, None, Handback::default(), true, Some(lend));
        apply_up_to(&mut feed, 3);
        assert_eq!(
            lent.try_recv().unwrap_err(),
            mpsc::error::TryRecvError::Disconnected
        );
    }
}
