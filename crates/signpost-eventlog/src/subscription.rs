//! Catch-up-then-live subscriptions that "pull on notify".
//!
//! A subscription keeps at most three pages of events. While behind, it reads the next page
//! from the store, and when more than that page is behind it has the next two read on tasks
//! of their own while the subscriber works through this one (a catch-up's reading and
//! decoding then runs beside the subscriber's work instead of taking turns with it, and a
//! read that the scheduler starts late is covered by the one after it: a first start of a
//! million events listened about 5% sooner than with one page ahead, bench/FINDINGS.md,
//! round 26); once caught up it waits on the head watch channel and reads again. Nothing is
//! pushed to it, so a slow subscriber costs only its own reads and never slows appends, and
//! a subscriber that stops polling holds no growing buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use signpost_schema::log::v1::EventEnvelope;

use crate::error::LogError;
use crate::store::EventStore;
use crate::types::Position;

/// How many events a subscription reads per page.
pub const SUBSCRIPTION_PAGE: usize = 512;

/// A stream of every event from a position on, in order, exactly once.
///
/// It ends after yielding an error (a failed read, or a gap in positions).
pub struct Subscription {
    /// The pages read, in order (each non-empty).
    pages: BoxStream<'static, Result<Vec<EventEnvelope>, LogError>>,
    /// The rest of the current page: yielded straight from `poll_next`, so an event costs
    /// no turn of the page reader's state machine (one per page).
    page: std::vec::IntoIter<EventEnvelope>,
    /// The position expected next.
    next: Position,
    failed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The events of one read; a read ahead in flight.
type Page = Result<Vec<EventEnvelope>, LogError>;

/// The page reader's state, moved from one page to the next.
struct PullState<S> {
    store: S,
    /// The first position of the next page to read.
    next: Position,
    /// The pages after the one being yielded, being read, in order: each one's first
    /// position and its reading task.
    ahead: std::collections::VecDeque<(Position, tokio::task::JoinHandle<Page>)>,
    head: tokio::sync::watch::Receiver<Position>,
    failed: bool,
}

/// Pages read ahead of the one being yielded, at most.
const READ_AHEAD_PAGES: usize = 2;

impl<S: EventStore + Clone> PullState<S> {
    /// Starts reading the pages after the one at `next` (a full page) that begin at or
    /// below `head`, until [`READ_AHEAD_PAGES`] are being read. Whether it started any.
    fn read_ahead(&mut self, head: Position) -> bool {
        let mut started = false;
        while self.ahead.len() < READ_AHEAD_PAGES {
            // The pages before it are wholly below the head, so full: it starts here.
            let from = self.next + (self.ahead.len() as u64 + 1) * SUBSCRIPTION_PAGE as u64;
            if from > head {
                break;
            }
            let store = self.store.clone();
            let reading =
                tokio::spawn(async move { store.read_range(from, SUBSCRIPTION_PAGE).await });
            self.ahead.push_back((from, reading));
            started = true;
        }
        started
    }
}

impl Subscription {
    /// How many events the subscription holds, read and not yet yielded: while it is
    /// more than zero, the next `poll_next` yields at once.
    pub fn in_hand(&self) -> usize {
        self.page.len()
    }

    /// Subscribes to `store` from `from` by reading pages and waiting on its head watch.
    /// Any `EventStore` can build its `subscribe` from this.
    pub fn pull_on_notify<S>(store: S, from: Position) -> Subscription
    where
        S: EventStore + Clone,
    {
        let from = from.max(1);
        let head = store.watch_head();
        let state = PullState {
            store,
            next: from,
            ahead: std::collections::VecDeque::new(),
            head,
            failed: false,
        };
        let pages = stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                // Mark the current head as seen *before* reading, so a commit published while
                // we read wakes the wait below instead of being missed.
                let head = *state.head.borrow_and_update();
                if head >= state.next {
                    let read = match state.ahead.pop_front() {
                        Some((from, reading)) if from == state.next => {
                            reading.await.unwrap_or_else(|error| {
                                Err(LogError::Unavailable(format!("read-ahead task: {error}")))
                            })
                        }
                        _ => {
                            state.ahead.clear();
                            state.store.read_range(state.next, SUBSCRIPTION_PAGE).await
                        }
                    };
                    if let Ok(events) = &read {
                        if events.len() == SUBSCRIPTION_PAGE && state.read_ahead(head) {
                            // A task spawned from a runtime thread waits in that thread's
                            // own slot until the spawner yields (no other thread takes
                            // it from there): yield once, so that its read starts now.
                            tokio::task::yield_now().await;
                        }
                    }
                    return match read {
                        Ok(events) if events.is_empty() => {
                            state.failed = true;
                            let error = LogError::Corrupt {
                                position: state.next,
                                reason: "event below the head is missing".to_owned(),
                            };
                            Some((Err(error), state))
                        }
                        Ok(events) => {
                            state.next += events.len() as u64;
                            Some((Ok(events), state))
                        }
                        Err(error) => {
                            state.failed = true;
                            Some((Err(error), state))
                        }
                    };
                }
                if state.head.changed().await.is_err() {
                    state.failed = true;
                    return Some((Err(LogError::Closed), state));
                }
            }
        });
        Subscription {
            pages: pages.boxed(),
            page: Vec::new().into_iter(),
            next: from,
            failed: false,
        }
    }
}

impl Stream for Subscription {
    type Item = Result<EventEnvelope, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            if let Some(envelope) = this.page.next() {
                if envelope.position != this.next {
                    this.failed = true;
                    return Poll::Ready(Some(Err(LogError::Corrupt {
                        position: this.next,
                        reason: format!(
                            "subscription expected position {} but read {}",
                            this.next, envelope.position
                        ),
                    })));
                }
                this.next += 1;
                return Poll::Ready(Some(Ok(envelope)));
            }
            match std::task::ready!(this.pages.poll_next_unpin(cx)) {
                Some(Ok(events)) => this.page = events.into_iter(),
                Some(Err(error)) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    this.failed = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}
