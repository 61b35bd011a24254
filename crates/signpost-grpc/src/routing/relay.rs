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
//! time.
//!
//! Streams whose connection is not known (no TCP peer address) share one channel.
//! [`ChangeRelay`] relays any `watch` channel: the benchmark's do-nothing stream servers
//! wake their streams the same way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

/// The connection a watch stream arrived on (its peer's address), if known.
pub type ConnectionKey = Option<SocketAddr>;

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
    /// Each connection's channel; a channel is dropped once no stream listens to it.
    by_connection: HashMap<ConnectionKey, watch::Sender<T>>,
    /// The source closed: nothing will change again.
    closed: bool,
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

    /// A receiver that changes after every change of the source, holding its value,
    /// shared by the streams of `connection`. It moves after the source does, so a
    /// stream that reads what changed after subscribing misses nothing; and it closes
    /// once the source has closed. Must be called inside a tokio runtime (the first call
    /// starts the relay's task).
    pub fn subscribe(&self, connection: ConnectionKey) -> watch::Receiver<T> {
        self.started.get_or_init(|| {
            tokio::spawn(relay(self.source.clone(), self.channels.clone()));
        });
        let mut channels = self.channels.lock().expect("relay lock");
        if channels.closed {
            // The sender is dropped at once: the stream hears that nothing will change.
            return watch::channel(self.source.borrow().clone()).1;
        }
        if let Some(sender) = channels.by_connection.get(&connection) {
            return sender.subscribe();
        }
        // A new connection: forget those no stream listens to any more (a stream ends
        // without telling the relay), so the map holds live connections only.
        channels
            .by_connection
            .retain(|_, sender| sender.receiver_count() > 0);
        let (sender, receiver) = watch::channel(self.source.borrow().clone());
        channels.by_connection.insert(connection, sender);
        receiver
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
        channels.by_connection.retain(|_, sender| {
            // `send_replace` rather than `send`: it stores the value even while no stream
            // waits, and wakes those that do.
            sender.send_replace(value.clone());
            sender.receiver_count() > 0
        });
    }
    let mut channels = channels.lock().expect("relay lock");
    channels.closed = true;
    channels.by_connection.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
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
                assert_eq!(*changes.borrow_and_update(), revision);
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
}
