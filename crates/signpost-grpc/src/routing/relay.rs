//! Table changes handed to the watch streams one connection at a time.
//!
//! A route change wakes every open watch stream. Woken from the projection's own
//! channel, they are woken in no useful order: tokio's `watch` spreads its waiters over
//! eight lists and picks one at random for each, so the streams of one HTTP/2
//! connection are scattered through the run queue, and both runtime threads take turns
//! with every connection's state (its stream store and the lock around it) during a
//! change. The [`ChangeRelay`] holds one channel per connection instead, and a task of
//! its own moves them all, one after the other, when the table changes: each
//! connection's streams are then woken together, and run together, on one thread at a
//! time (bench/FINDINGS.md, round 36).
//!
//! A connection's channel is a list of wakers and the latest value under a lock
//! ([`Changes`] is a stream's end of it), lighter than a `watch` channel for this use:
//! a change takes the whole list at once.
//!
//! Streams whose connection is not known (no TCP peer address) share one channel.
//! [`ChangeRelay`] relays any `watch` channel: the benchmark's do-nothing stream servers
//! wake their streams the same way.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};

use tokio::sync::watch;

/// The connection a watch stream arrived on (its peer's address), if known.
pub type ConnectionKey = Option<SocketAddr>;

/// The connection of a request, from the extensions the server's transport gave it (a
/// TCP peer address; none on other transports).
pub fn connection_of(extensions: &tonic::codegen::http::Extensions) -> ConnectionKey {
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
}

/// One change channel per connection with watch streams open, moved by one task
/// whenever the source channel moves (see the module's documentation). `signpost serve`
/// relays the routing table's channel
/// ([`signpost_routing::RoutingProjection::watch_table`]); the benchmark's do-nothing
/// stream servers relay their own, so that their streams are woken as the control
/// plane's are.
#[derive(Debug)]
pub struct ChangeRelay<T> {
    source: watch::Receiver<T>,
    channels: Arc<Mutex<Channels<T>>>,
    /// The relay's task, started with the first stream (inside the runtime).
    started: OnceLock<()>,
}

#[derive(Debug)]
struct Channels<T> {
    /// Each connection's channel; a channel is dropped once no stream holds it.
    by_connection: HashMap<ConnectionKey, Arc<Channel<T>>>,
    /// The source closed: nothing will change again.
    closed: bool,
}

/// One connection's channel: the source's latest value, and the streams waiting for the
/// next. Lighter than a `watch` channel, whose waiters each take a place in one of eight
/// lists and are woken in batches: here a change takes the list of wakers at once.
#[derive(Debug)]
struct Channel<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// Moves by one at every change.
    version: u64,
    value: T,
    /// The tasks waiting for the next change, each once.
    waiting: Vec<Waker>,
    closed: bool,
}

impl<T> Channel<T> {
    fn new(value: T, closed: bool) -> Self {
        Self {
            state: Mutex::new(State {
                version: 0,
                value,
                waiting: Vec::new(),
                closed,
            }),
        }
    }

    /// Sets the value (or closes the channel) and wakes every stream waiting.
    fn change(&self, value: Option<T>) {
        let waiting = {
            let mut state = self.state.lock().expect("relay channel lock");
            match value {
                Some(value) => {
                    state.version += 1;
                    state.value = value;
                }
                None => state.closed = true,
            }
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }
}

/// A stream's end of its connection's channel ([`ChangeRelay::subscribe`]).
#[derive(Debug)]
pub struct Changes<T> {
    channel: Arc<Channel<T>>,
    /// The version this stream has seen.
    seen: u64,
    /// The version it waits beyond with a waker in the channel's list, and the waker's
    /// place there.
    registered: Option<(u64, usize)>,
}

/// The channel closed: nothing will change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl<T: Clone> Changes<T> {
    /// The latest value, now seen.
    pub fn borrow_and_update(&mut self) -> T {
        let state = self.channel.state.lock().expect("relay channel lock");
        self.seen = state.version;
        state.value.clone()
    }

    /// Completes at the first change this stream has not seen (at once if there is one),
    /// or with [`Closed`] once the channel closed with every change seen.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        poll_fn(|cx| {
            let mut state = self.channel.state.lock().expect("relay channel lock");
            if state.version != self.seen {
                self.seen = state.version;
                return Poll::Ready(Ok(()));
            }
            if state.closed {
                return Poll::Ready(Err(Closed));
            }
            // Once a change: a stream polled again before it (woken by its progress timer,
            // say) is already in the list, and only its waker is replaced if it would wake
            // another task. The list is emptied only when the version moves.
            match self.registered {
                Some((version, place)) if version == state.version => {
                    if !state.waiting[place].will_wake(cx.waker()) {
                        state.waiting[place] = cx.waker().clone();
                    }
                }
                _ => {
                    self.registered = Some((state.version, state.waiting.len()));
                    state.waiting.push(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl<T: Clone + Send + Sync + 'static> ChangeRelay<T> {
    /// Relays the changes of `source`.
    pub fn new(source: watch::Receiver<T>) -> Self {
        Self {
            source,
            channels: Arc::new(Mutex::new(Channels {
                by_connection: HashMap::new(),
                closed: false,
            })),
            started: OnceLock::new(),
        }
    }

    /// The changes of the source, shared by the streams of `connection`: each completes
    /// [`Changes::changed`] after the source moves, holding its value. It moves after the
    /// source does, so a stream that reads what changed after subscribing misses nothing;
    /// and it closes once the source has closed. Must be called inside a tokio runtime
    /// (the first call starts the relay's task).
    pub fn subscribe(&self, connection: ConnectionKey) -> Changes<T> {
        self.started.get_or_init(|| {
            tokio::spawn(relay(self.source.clone(), self.channels.clone()));
        });
        let mut channels = self.channels.lock().expect("relay lock");
        let channel = if channels.closed {
            // Nothing will change: the stream hears so at once.
            Arc::new(Channel::new(self.source.borrow().clone(), true))
        } else if let Some(channel) = channels.by_connection.get(&connection) {
            channel.clone()
        } else {
            // A new connection: forget those no stream holds any more (a stream ends
            // without telling the relay), so the map holds live connections only.
            channels
                .by_connection
                .retain(|_, channel| Arc::strong_count(channel) > 1);
            let channel = Arc::new(Channel::new(self.source.borrow().clone(), false));
            channels.by_connection.insert(connection, channel.clone());
            channel
        };
        let seen = channel.state.lock().expect("relay channel lock").version;
        Changes {
            channel,
            seen,
            registered: None,
        }
    }

    /// Connections with a channel (for tests).
    #[cfg(test)]
    fn connections(&self) -> usize {
        self.channels
            .lock()
            .expect("relay lock")
            .by_connection
            .len()
    }
}

/// Moves every connection's channel after each change of `source`; closes them all when
/// it closes.
async fn relay<T: Clone>(mut source: watch::Receiver<T>, channels: Arc<Mutex<Channels<T>>>) {
    while source.changed().await.is_ok() {
        let value = source.borrow_and_update().clone();
        let mut channels = channels.lock().expect("relay lock");
        channels.by_connection.retain(|_, channel| {
            channel.change(Some(value.clone()));
            Arc::strong_count(channel) > 1
        });
    }
    let mut channels = channels.lock().expect("relay lock");
    channels.closed = true;
    for (_, channel) in channels.by_connection.drain() {
        channel.change(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::future::Future;
    use std::time::Duration;

    fn connection(n: u16) -> ConnectionKey {
        Some(SocketAddr::from(([127, 0, 0, 1], 40_000 + n)))
    }

    /// Waits (a few turns of the test's runtime) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_change_wakes_the_streams_of_each_connection_together() {
        const CONNECTIONS: u16 = 4;
        const STREAMS: u16 = 40;
        let (table, receiver) = watch::channel(0);
        let relay = ChangeRelay::new(receiver);
        let woken = Arc::new(Mutex::new(Vec::new()));
        // Subscribed in turn on the connections, as the benchmark opens them: a change
        // woken through one channel would run them in that interleaved order, or at random.
        for stream in 0..STREAMS {
            let on = stream % CONNECTIONS;
            let mut changes = relay.subscribe(connection(on));
            let woken = woken.clone();
            tokio::spawn(async move {
                changes.changed().await.expect("a change");
                woken.lock().unwrap().push(on);
            });
        }
        // Every stream waits before the change.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        table.send_replace(7);
        until(|| woken.lock().unwrap().len() == usize::from(STREAMS)).await;
        let order = woken.lock().unwrap().clone();
        let runs = 1 + order.windows(2).filter(|pair| pair[0] != pair[1]).count();
        assert_eq!(
            runs,
            usize::from(CONNECTIONS),
            "each connection's streams ran one after another: {order:?}"
        );
    }

    #[tokio::test]
    async fn every_stream_hears_each_change_and_then_the_close() {
        let (table, receiver) = watch::channel(0);
        let relay = ChangeRelay::new(receiver);
        let mut streams: Vec<_> = [connection(1), connection(1), connection(2), None]
            .into_iter()
            .map(|on| relay.subscribe(on))
            .collect();
        for revision in [3, 9] {
            table.send_replace(revision);
            for changes in &mut streams {
                changes.changed().await.expect("the change");
                assert_eq!(changes.borrow_and_update(), revision);
            }
        }
        drop(table);
        for changes in &mut streams {
            assert!(
                changes.changed().await.is_err(),
                "the table's channel closed"
            );
        }
        // A stream that starts afterwards hears at once that nothing will change again.
        let mut late = relay.subscribe(connection(3));
        assert!(late.changed().await.is_err());
    }

    #[tokio::test]
    async fn connections_whose_streams_ended_are_forgotten() {
        let (table, receiver) = watch::channel(0);
        let relay = ChangeRelay::new(receiver);
        let first = relay.subscribe(connection(1));
        let second = relay.subscribe(connection(1));
        let mut other = relay.subscribe(connection(2));
        assert_eq!(relay.connections(), 2);
        drop((first, second));
        // Forgotten at the next change...
        table.send_replace(1);
        other.changed().await.expect("the change");
        until(|| relay.connections() == 1).await;
        // ...or when a new connection comes.
        drop(other);
        let _third = relay.subscribe(connection(3));
        assert_eq!(relay.connections(), 1);
    }

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_missed_and_a_wait_polled_again_wakes_its_last_waker() {
        let (table, receiver) = watch::channel(0);
        let relay = ChangeRelay::new(receiver);
        let mut changes = relay.subscribe(connection(1));
        // Let the relay's task start and wait for the table.
        until(|| relay.connections() == 1).await;
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // Changed after subscribing, before the stream waits: the wait ends at once.
        table.send_replace(1);
        until(|| changes.channel.state.lock().unwrap().version == 1).await;
        assert_eq!(changes.changed().now_or_never(), Some(Ok(())));
        assert_eq!(changes.borrow_and_update(), 1);
        // A wait polled again before the change (a stream woken by its progress timer in
        // between), here with another waker each time, is in the channel's list once, with
        // the last waker, which the next change wakes.
        assert_eq!(changes.changed().now_or_never(), None);
        assert_eq!(changes.changed().now_or_never(), None);
        assert_eq!(changes.channel.state.lock().unwrap().waiting.len(), 1);
        struct Count(std::sync::atomic::AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(count: &Arc<Self>) {
                count.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = futures::task::waker(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut wait = Box::pin(changes.changed());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        table.send_replace(2);
        // Woken by the relay's pass, not found later by chance.
        until(|| count.0.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        drop(wait);
        assert_eq!(changes.borrow_and_update(), 2);
    }
}
