//! [`AuditFeed`]: the audit timeline fed by the control plane's read model task, so the
//! server folds the log into one read model instead of two.
//!
//! Every event after the position the audit database has recorded is described by the
//! read model's task, which already holds the model just before and just after it
//! ([`Follower`]), and handed over as [`Step`]s through a bounded channel: a rebuild of
//! the timeline at start rides on the read model's own catch-up, and the audit task keeps
//! no read model at all. While the read model catches up with the head the log had at
//! start, nobody is served yet: when the channel is full the feed makes the read model's
//! task wait for the audit task (the two then share the machine's cores: one describes,
//! the other writes), and at the last event of that catch-up it waits until the channel
//! is at most half full, so the first commands after the start find room. Past that head the read model's task never waits for the audit
//! database: when the channel is full (the audit task is far behind, e.g. while writes
//! pour in) the feed lets go, and the audit task goes back to reading the log itself
//! from where the handed-over steps end, as a projection without a feed does. Either way
//! it writes the same rows: both paths call `fold::before` and `fold::after`.

use signpost_control::read_model::ReadModel;
use signpost_control::{Follower, FollowerWait};
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;
use signpost_routing::RouteChange;

use tokio::sync::mpsc;

use crate::fold::{self, Before, IndexedTime, Rows};

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

/// The read model task's side of an [`crate::AuditProjection`] started with
/// [`crate::AuditProjection::start_fed`]: give it to
/// [`signpost_control::ControlPlane::start_with`] as the follower.
pub struct AuditFeed {
    /// Events at or below this position are in the audit database already.
    from: u64,
    /// The log's head when the feed was made: up to it, a full channel makes the read
    /// model's task wait; past it, the feed lets go.
    catch_up_to: u64,
    public_base_url: String,
    time: IndexedTime,
    before: Option<Before>,
    /// `None` once the feed has let go.
    sender: Option<mpsc::Sender<Step>>,
}

impl std::fmt::Debug for AuditFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeed")
            .field("from", &self.from)
            .field("catch_up_to", &self.catch_up_to)
            .field("attached", &self.sender.is_some())
            .finish()
    }
}

impl AuditFeed {
    pub(crate) fn new(
        from: u64,
        catch_up_to: u64,
        public_base_url: &str,
        sender: mpsc::Sender<Step>,
    ) -> Self {
        Self {
            from,
            catch_up_to,
            public_base_url: public_base_url.to_owned(),
            time: IndexedTime::default(),
            before: None,
            sender: Some(sender),
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

impl Follower for AuditFeed {
    fn follows_after(&self) -> u64 {
        self.from
    }

    fn before(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        model: &ReadModel,
        route_changes_follow: bool,
    ) {
        // The indexed time is a running maximum from position 1, wherever the rows start.
        let time_nanos = self.time.advance(envelope);
        if envelope.position <= self.from || self.sender.is_none() {
            return;
        }
        self.before = Some(fold::before(
            envelope,
            event,
            model,
            time_nanos,
            &self.public_base_url,
            route_changes_follow,
        ));
    }

    fn after(
        &mut self,
        envelope: &EventEnvelope,
        _event: &Event,
        model: &ReadModel,
        route_changes: Option<&[RouteChange]>,
    ) -> Option<FollowerWait> {
        let before = self.before.take()?;
        let sender = self.sender.as_ref()?;
        let rows = fold::after(
            before,
            envelope,
            model,
            &self.public_base_url,
            route_changes,
        );
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
}
