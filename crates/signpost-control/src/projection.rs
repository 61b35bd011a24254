//! Keeps the [`ReadModel`] current by tailing the log.
//!
//! One task subscribes to the log from the model's position + 1 and applies
//! each envelope under a short write lock, then publishes the applied
//! position on a watch channel. Commands wait on that channel for their own
//! position before answering, so a caller always reads its own writes.
//!
//! The same task can drive the routing table ([`RoutingFeed`]): each event is
//! read and decoded once, and routes are computed from the read model's own
//! organizations and connections, so the server holds one copy of them. A
//! [`Follower`] (the audit timeline's feed) is shown each event with the model
//! just before and just after it, for the same reason.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use signpost_domain::Event;
use signpost_eventlog::{EventEnvelope, EventStore};
use signpost_routing::{RouteSource, RoutingFeed};
use tokio::sync::watch;

use crate::error::ControlError;
use crate::read_model::ReadModel;

/// While catching up at start, the applied position is published once per this many events.
const CATCH_UP_PUBLISH_EVERY: u64 = 4096;

/// What a [`Follower`] asks the read model's task to await before its next event (with
/// no lock held): how a follower that cannot keep up makes the task wait for it.
pub type FollowerWait = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Something the read model's task shows every event, in position order from position
/// 1, with the model as it was just before the event and as it is just after. Both calls
/// run under the model's read lock, so they should be quick; the task moves on when they
/// return, or, if [`Follower::after`] returns a wait, once that wait is over. When the
/// task stops (the log cannot be applied, or the server shuts down) the follower is
/// dropped.
pub trait Follower: Send + 'static {
    /// `event` at `envelope`, with the model before it.
    fn before(&mut self, envelope: &EventEnvelope, event: &Event, model: &ReadModel);
    /// `event` at `envelope`, with the model after it. A returned wait is awaited, with
    /// no lock held, before the task takes the next event: it holds back the model (and
    /// every command waiting for its position), so a follower should only ask for it
    /// while the model catches up at start, when nobody is served yet.
    fn after(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        model: &ReadModel,
    ) -> Option<FollowerWait>;
    /// Called when the task has applied every event it had at hand, before it waits for
    /// the log: a follower that holds what it made for a later hand-over gives it now.
    fn idle(&mut self) {}
}

/// What the read model's task drives besides the model, reading and decoding each
/// event once for all of them.
#[derive(Default)]
pub struct Followers {
    /// The routing table, computed from the model's aggregates.
    pub routing: Option<RoutingFeed>,
    /// Anything else that reads the model around each event.
    pub follower: Option<Box<dyn Follower>>,
}

impl std::fmt::Debug for Followers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followers")
            .field("routing", &self.routing)
            .field("follower", &self.follower.is_some())
            .finish()
    }
}

/// The live read model and the position it has reached.
#[derive(Clone)]
pub struct Projection {
    model: Arc<RwLock<ReadModel>>,
    applied: watch::Receiver<u64>,
    failure: Arc<RwLock<Option<String>>>,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

impl Projection {
    /// Starts tailing `store` and returns once everything already in it is applied.
    pub async fn start(store: Arc<dyn EventStore>) -> Result<Self, ControlError> {
        Self::start_with(store, Followers::default()).await
    }

    /// [`Projection::start`], also feeding every applied event to `followers`: the
    /// routing table (with the model as its [`RouteSource`]) and a [`Follower`]. Returns
    /// once the model has applied everything already in the store; the routing table is
    /// then at the same position.
    pub async fn start_with(
        store: Arc<dyn EventStore>,
        followers: Followers,
    ) -> Result<Self, ControlError> {
        let Followers {
            mut routing,
            mut follower,
        } = followers;
        let model = Arc::new(RwLock::new(ReadModel::default()));
        let (publish, applied) = watch::channel(0u64);
        let failure = Arc::new(RwLock::new(None));
        let projection = Self {
            model: model.clone(),
            applied,
            failure: failure.clone(),
        };
        let head = store.head().position;
        if let Some(routing) = routing.as_mut() {
            // What the store holds now is caught up on before anyone can watch: the
            // routes are computed once at the end.
            routing.catch_up_to(head);
        }
        let mut events = store.subscribe(1);
        tokio::spawn(async move {
            while let Some(next) = events.next().await {
                let outcome = next.map_err(|e| e.to_string()).and_then(|envelope| {
                    let event = signpost_domain::decode_event(&envelope.payload)
                        .map_err(|e| format!("position {}: {e}", envelope.position))?;
                    if let Some(follower) = follower.as_mut() {
                        let model = model.read().expect("read model lock");
                        follower.before(&envelope, &event, &model);
                    }
                    model
                        .write()
                        .expect("read model lock")
                        .apply(&envelope, &event);
                    // The routes and the follower only read the model: under a read lock,
                    // so that commands and readers are not held up by the route's
                    // recomputation. This task is the only writer, so they see the state
                    // the event left.
                    let model = model.read().expect("read model lock");
                    if let Some(routing) = routing.as_mut() {
                        routing.apply(&envelope, &*model);
                    }
                    let wait = follower
                        .as_mut()
                        .and_then(|follower| follower.after(&envelope, &event, &model));
                    Ok((envelope.position, wait))
                });
                let outcome = match outcome {
                    Ok((position, Some(wait))) => {
                        wait.await;
                        Ok(position)
                    }
                    Ok((position, None)) => Ok(position),
                    Err(reason) => Err(reason),
                };
                match outcome {
                    // While catching up nobody waits for a position below the head yet
                    // (commands and readers start once `start_with` returns), so the
                    // position is published now and then, not after every event: each
                    // publication wakes the start-up's own waiter.
                    Ok(position) if position < head && position % CATCH_UP_PUBLISH_EVERY != 0 => {}
                    Ok(position) => {
                        if position == head {
                            // Caught up at start: the ordered maps, filled in order, are
                            // half full (see `ReadModel::pack`).
                            model.write().expect("read model lock").pack();
                        }
                        publish.send_replace(position);
                    }
                    Err(reason) => {
                        tracing::error!(%reason, "read model stopped: cannot apply the log");
                        if let Some(routing) = &routing {
                            routing.fail(reason.clone());
                        }
                        *failure.write().expect("failure lock") = Some(reason);
                        // Wake waiters so they see the failure instead of hanging.
                        publish.send_modify(|_| {});
                        return;
                    }
                }
                if events.in_hand() == 0 {
                    if let Some(follower) = follower.as_mut() {
                        follower.idle();
                    }
                }
            }
        });
        projection.wait_for(head).await?;
        Ok(projection)
    }

    /// Waits until the model has applied `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), ControlError> {
        let mut applied = self.applied.clone();
        let failure = self.failure.clone();
        let reached = applied
            .wait_for(|applied| {
                *applied >= position || failure.read().expect("failure lock").is_some()
            })
            .await;
        if let Some(reason) = self.failure.read().expect("failure lock").clone() {
            return Err(ControlError::Internal(format!(
                "read model stopped: {reason}"
            )));
        }
        reached
            .map(|_| ())
            .map_err(|_| ControlError::Unavailable("read model stopped".into()))
    }

    /// The position applied so far.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Reads the model under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.model.read().expect("read model lock"))
    }
}

impl RouteSource for ReadModel {
    fn organization(&self, id: &str) -> Option<&signpost_domain::organization::Organization> {
        self.organizations.get(id).map(|tracked| &tracked.state)
    }

    fn connection(&self, id: &str) -> Option<&signpost_domain::connection::Connection> {
        self.connections.get(id).map(|tracked| &tracked.state)
    }

    fn each_organization(&self, each: &mut dyn FnMut(&str)) {
        self.organizations.keys().for_each(|id| each(id));
    }
}
