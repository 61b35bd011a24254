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
//! The relay also says when an idle stream's progress message is due
//! ([`ChangeRelay::with_progress`]): every interval, each connection's channel *ticks*,
//! and its streams hear it as they hear a change. The connections tick in turn, spread
//! over the interval, so a tick wakes one connection's streams together (written to it
//! at once) and not every stream at the same moment (unless they all share one
//! connection, whose ticks then cost what a change costs, once an interval). A stream
//! then needs no timer of its own: with one per stream, every stream woken by a change
//! read the clock and checked its timer, and the progress messages went out scattered,
//! one stream and one write at a time. With 10,000 idle streams on 100 connections the
//! server spends about 30% less CPU than with a timer per stream (bench/FINDINGS.md,
//! round 37).
//!
//! Streams whose connection is not known (no TCP peer address) share one channel.
//! [`ChangeRelay`] relays any `watch` channel: the benchmark's do-nothing stream servers
//! wake their streams the same way.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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
    /// How often each connection's channel ticks (none: never).
    progress: Option<Duration>,
    channels: Arc<Mutex<Channels<T>>>,
    /// The relay's task, started with the first stream (inside the runtime).
    started: OnceLock<()>,
}

#[derive(Debug)]
struct Channels<T> {
    /// Each connection's channel; a channel is dropped once no stream holds it.
    by_connection: HashMap<ConnectionKey, Arc<Channel<T>>>,
    /// The slot the next new channel ticks in.
    next_slot: usize,
    /// The source closed: nothing will change again.
    closed: bool,
}

/// How many turns an interval's ticks take: each connection ticks in one of them.
const TICK_SLOTS: usize = 20;

/// One connection's channel: the source's latest value, and the streams waiting for the
/// next. Lighter than a `watch` channel, whose waiters each take a place in one of eight
/// lists and are woken in batches: here a change takes the list of wakers at once.
#[derive(Debug)]
struct Channel<T> {
    /// The turn of the interval this channel ticks in.
    slot: usize,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// Moves by one at every change.
    version: u64,
    /// Moves by one at every tick.
    ticks: u64,
    value: T,
    /// The tasks waiting for the next change or tick, each once.
    waiting: Vec<Waker>,
    closed: bool,
}

impl<T> State<T> {
    /// Moves by one at every change and every tick: what a waiting stream waits beyond.
    fn moves(&self) -> u64 {
        self.version + self.ticks
    }
}

/// What moved a connection's channel since a stream last looked
/// ([`Changes::changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The value changed.
    pub changed: bool,
    /// The channel ticked: an idle stream's progress message is due.
    pub ticked: bool,
}

/// How a channel moves.
enum Move<T> {
    Change(T),
    Tick,
    Close,
}

impl<T> Channel<T> {
    fn new(value: T, slot: usize, closed: bool) -> Self {
        Self {
            slot,
            state: Mutex::new(State {
                version: 0,
                ticks: 0,
                value,
                waiting: Vec::new(),
                closed,
            }),
        }
    }

    /// Sets the value, ticks or closes the channel, and wakes every stream waiting.
    fn moved(&self, how: Move<T>) {
        let waiting = {
            let mut state = self.state.lock().expect("relay channel lock");
            match how {
                Move::Change(value) => {
                    state.version += 1;
                    state.value = value;
                }
                Move::Tick => state.ticks += 1,
                Move::Close => state.closed = true,
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
    /// The ticks this stream has seen.
    seen_ticks: u64,
    /// The moves it waits beyond with a waker in the channel's list, and the waker's
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

    /// Completes at the first change or tick this stream has not seen (at once if there
    /// is one), saying which, or with [`Closed`] once the channel closed with every change
    /// seen.
    pub async fn changed(&mut self) -> Result<Moved, Closed> {
        poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// [`Changes::changed`] as a poll: ready with what moved, or pending with the task's
    /// waker in the channel's list.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Result<Moved, Closed>> {
        let mut state = self.channel.state.lock().expect("relay channel lock");
        let moved = Moved {
            changed: state.version != self.seen,
            ticked: state.ticks != self.seen_ticks,
        };
        if moved.changed || moved.ticked {
            self.seen = state.version;
            self.seen_ticks = state.ticks;
            return Poll::Ready(Ok(moved));
        }
        if state.closed {
            return Poll::Ready(Err(Closed));
        }
        // Once a move: a stream polled again before it (woken by something else) is
        // already in the list, and only its waker is replaced if it would wake another
        // task. The list is emptied only when the channel moves.
        let moves = state.moves();
        match self.registered {
            Some((registered, place)) if registered == moves => {
                if !state.waiting[place].will_wake(cx.waker()) {
                    state.waiting[place] = cx.waker().clone();
                }
            }
            _ => {
                self.registered = Some((moves, state.waiting.len()));
                state.waiting.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl<T: Clone + Send + Sync + 'static> ChangeRelay<T> {
    /// Relays the changes of `source`; the channels never tick.
    pub fn new(source: watch::Receiver<T>) -> Self {
        Self {
            source,
            progress: None,
            channels: Arc::new(Mutex::new(Channels {
                by_connection: HashMap::new(),
                next_slot: 0,
                closed: false,
            })),
            started: OnceLock::new(),
        }
    }

    /// Relays the changes of `source`, and ticks each connection's channel every
    /// `interval` (the connections in turn, spread over it).
    pub fn with_progress(source: watch::Receiver<T>, interval: Duration) -> Self {
        Self {
            progress: Some(interval),
            ..Self::new(source)
        }
    }

    /// The changes of the source, shared by the streams of `connection`: each completes
    /// [`Changes::changed`] after the source moves, holding its value. It moves after the
    /// source does, so a stream that reads what changed after subscribing misses nothing;
    /// and it closes once the source has closed. Must be called inside a tokio runtime
    /// (the first call starts the relay's task).
    pub fn subscribe(&self, connection: ConnectionKey) -> Changes<T> {
        self.started.get_or_init(|| {
            tokio::spawn(relay(
                self.source.clone(),
                self.channels.clone(),
                self.progress,
            ));
        });
        let mut channels = self.channels.lock().expect("relay lock");
        let channel = if channels.closed {
            // Nothing will change: the stream hears so at once.
            Arc::new(Channel::new(self.source.borrow().clone(), 0, true))
        } else if let Some(channel) = channels.by_connection.get(&connection) {
            channel.clone()
        } else {
            // A new connection: forget those no stream holds any more (a stream ends
            // without telling the relay), so the map holds live connections only.
            channels
                .by_connection
                .retain(|_, channel| Arc::strong_count(channel) > 1);
            let slot = channels.next_slot;
            channels.next_slot = (slot + 1) % TICK_SLOTS;
            let channel = Arc::new(Channel::new(self.source.borrow().clone(), slot, false));
            channels.by_connection.insert(connection, channel.clone());
            channel
        };
        let (seen, seen_ticks) = {
            let state = channel.state.lock().expect("relay channel lock");
            (state.version, state.ticks)
        };
        Changes {
            channel,
            seen,
            seen_ticks,
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

/// Moves every connection's channel after each change of `source`, and with `progress`
/// ticks each channel once an interval, a [`TICK_SLOTS`]th of the connections at a time;
/// closes them all when `source` closes.
async fn relay<T: Clone>(
    mut source: watch::Receiver<T>,
    channels: Arc<Mutex<Channels<T>>>,
    progress: Option<Duration>,
) {
    let mut turns = progress.map(|interval| {
        let turn = (interval / TICK_SLOTS as u32).max(Duration::from_millis(1));
        let mut turns = tokio::time::interval_at(tokio::time::Instant::now() + turn, turn);
        turns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        turns
    });
    let mut slot = 0;
    loop {
        let next_turn = async {
            match &mut turns {
                Some(turns) => turns.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = source.changed() => {
                if changed.is_err() {
                    break;
                }
                let value = source.borrow_and_update().clone();
                let mut channels = channels.lock().expect("relay lock");
                channels.by_connection.retain(|_, channel| {
                    channel.moved(Move::Change(value.clone()));
                    Arc::strong_count(channel) > 1
                });
            }
            _ = next_turn => {
                let channels = channels.lock().expect("relay lock");
                for channel in channels.by_connection.values() {
                    if channel.slot == slot {
                        channel.moved(Move::Tick);
                    }
                }
                slot = (slot + 1) % TICK_SLOTS;
            }
        }
    }
    let mut channels = channels.lock().expect("relay lock");
    channels.closed = true;
    for (_, channel) in channels.by_connection.drain() {
        channel.moved(Move::Close);
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
        let change = Moved {
            changed: true,
            ticked: false,
        };
        assert_eq!(changes.changed().now_or_never(), Some(Ok(change)));
        assert_eq!(changes.borrow_and_update(), 1);
        // A wait polled again before the change (a stream woken by something else in
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
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(change)));
        drop(wait);
        assert_eq!(changes.borrow_and_update(), 2);
    }

    /// With progress, each connection's channel ticks once an interval, the connections
    /// at different moments of it; a stream hears a tick as it hears a change, told apart.
    #[tokio::test(start_paused = true)]
    async fn each_connection_ticks_once_an_interval_the_connections_in_turn() {
        let interval = Duration::from_secs(5);
        let (table, receiver) = watch::channel(0);
        let relay = ChangeRelay::with_progress(receiver, interval);
        let ticked: Arc<Mutex<Vec<(u16, tokio::time::Instant)>>> = Arc::default();
        const CONNECTIONS: u16 = 3;
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for on in 0..CONNECTIONS {
            // Two streams on each connection.
            for _ in 0..2 {
                let mut changes = relay.subscribe(connection(on));
                let ticked = ticked.clone();
                tasks.push(tokio::spawn(async move {
                    while let Ok(moved) = changes.changed().await {
                        if moved.ticked {
                            ticked
                                .lock()
                                .unwrap()
                                .push((on, tokio::time::Instant::now()));
                        }
                    }
                }));
            }
        }
        // A change is not a tick.
        table.send_replace(1);
        // Three intervals: three ticks each, wherever in the interval its turn is.
        tokio::time::sleep(interval * 3).await;
        let ticked = ticked.lock().unwrap().clone();
        for on in 0..CONNECTIONS {
            let times: Vec<_> = ticked
                .iter()
                .filter(|(connection, _)| *connection == on)
                .map(|(_, at)| *at - started)
                .collect();
            // Each of its two streams hears each of three ticks, an interval apart.
            assert_eq!(times.len(), 6, "connection {on}: {times:?}");
            for pair in times.chunks(2).collect::<Vec<_>>().windows(2) {
                assert_eq!(
                    pair[1][0] - pair[0][0],
                    interval,
                    "connection {on}: {times:?}"
                );
            }
        }
        // The connections tick at different moments.
        let firsts: std::collections::HashSet<_> = (0..CONNECTIONS)
            .map(|on| ticked.iter().find(|(c, _)| *c == on).unwrap().1)
            .collect();
        assert_eq!(firsts.len(), usize::from(CONNECTIONS), "{ticked:?}");
        for task in tasks {
            task.abort();
        }
    }
}
