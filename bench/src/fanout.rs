//! Scenario 3, fan-out: `streams` `WatchRoutes` streams against as many etcd
//! watchers on a prefix; `changes` changes made one after another; for each,
//! the time from just before the mutation is sent to its delivery at every
//! watcher (median and worst over all watchers). The server's resident memory
//! is read before the streams open and while they are all open.
//!
//! Signpost streams resume from the revision of a snapshot taken once (as
//! edges do after a restart with their state file), so the figure is the
//! delivery of deltas, not 10,000 snapshots of the table; etcd watchers start
//! at the current revision, which is the same thing.
//!
//! Every peer's watchers first get [`WARM_UP_CHANGES`] changes that are not counted: a
//! watcher's first messages cost the load generator more than later ones, and 10,000
//! watchers paying that at once took the two cores from the server (see the constant).
//! The watchers are [`crate::h2_client`]'s calls on `h2`, the same for every peer,
//! and each change is made over a connection of its own.
//!
//! A watcher reads each message as far as its kind ([`RouteArrival`], [`EtcdArrival`])
//! and writes the arrival's latency to its own slot of [`Deliveries`]; the collector is
//! woken once per change, by the arrival that completes it. The load generator shares the
//! two cores with the server, so its work per arrival delays the watchers served later.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use signpost_api::admin::v1 as pb;
use signpost_api::routing::v1 as wire;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cpu::server_and_own_seconds;
use crate::h2_client::{Connection, Messages};
use crate::load::LoadReport;
use crate::populate::Organization;
use crate::{etcd, grpc};

/// Key prefix the etcd watchers watch.
pub const ETCD_PREFIX: &str = "/signpost/fanout/";

/// Changes made and delivered before the measured ones, on every peer, and not counted.
///
/// Found with tonic's client, which the watchers used until round 30: it reads each
/// stream's messages into an 8 KiB buffer of its own, allocated when the stream opens and
/// written page by page as messages arrive. With route-sized messages (about 520 bytes)
/// every watcher wrote a fresh page at its 1st and its 8th message: 10,000 page faults in
/// the load generator within one change, on the two cores the server is delivering with.
/// Profiled with change timestamps (round 30), the load generator took 127 samples in
/// the 8th change against 61 to 89 in the others, 36 of them page faults in tonic's
/// decoding; the server's samples did not change. Over 48 changes, only the
/// 1st and the 8th stood out: once the buffer is full it is reused in place. An edge
/// pays such first costs once per stream in its life; 16 changes (one full buffer) left
/// every watcher in the state it keeps. [`crate::h2_client`] keeps no buffer per
/// stream; the warm-up stays, so that any first cost of a client is kept out of the
/// figures, for every peer alike.
pub const WARM_UP_CHANGES: usize = 16;

/// Fan-out figures of one peer.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    /// Watchers.
    pub streams: usize,
    /// Per change: median and worst delivery latency over all watchers (ms).
    pub per_change_ms: Vec<(f64, f64)>,
    /// The same, for the [`WARM_UP_CHANGES`] made before them and not counted.
    pub warm_up_ms: Vec<(f64, f64)>,
    /// Time to open every watcher.
    pub connect_seconds: f64,
    /// Server RSS before the watchers opened.
    pub rss_before: u64,
    /// Server RSS with every watcher open, before the changes.
    pub rss_open: u64,
    /// Server RSS with every watcher open, after the changes.
    pub rss_after: u64,
    /// CPU seconds the server and this load generator spent making and delivering the
    /// changes (from the first change made to the last delivered), when the server's
    /// process id is known.
    pub changes_cpu: Option<(f64, f64)>,
    /// Server CPU a commit that changes no route (µs), made one after another with every
    /// watcher still open, when asked for and the server's process id is known.
    pub quiet_write_us: Option<f64>,
    /// A write load made with every watcher still open, when asked for.
    pub writes_with_streams: Option<WritesWithStreams>,
}

impl FanOut {
    /// Median over changes of the per-change median (ms).
    pub fn median_ms(&self) -> f64 {
        let mut medians: Vec<f64> = self.per_change_ms.iter().map(|(m, _)| *m).collect();
        medians.sort_by(f64::total_cmp);
        medians.get(medians.len() / 2).copied().unwrap_or_default()
    }

    /// Worst delivery over every change and watcher (ms).
    pub fn worst_ms(&self) -> f64 {
        self.per_change_ms
            .iter()
            .map(|(_, w)| *w)
            .fold(0.0, f64::max)
    }

    /// Server memory growth per watcher (bytes), the larger of open and after changes.
    pub fn memory_per_stream(&self) -> f64 {
        self.rss_open
            .max(self.rss_after)
            .saturating_sub(self.rss_before) as f64
            / self.streams.max(1) as f64
    }

    /// A JSON object for reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "streams": self.streams, "changes": self.per_change_ms.len(),
            "median_ms": self.median_ms(), "worst_ms": self.worst_ms(),
            "per_change_ms": self.per_change_ms,
            "warm_up_per_change_ms": self.warm_up_ms,
            "connect_seconds": self.connect_seconds,
            "rss_before_bytes": self.rss_before, "rss_open_bytes": self.rss_open,
            "rss_after_bytes": self.rss_after,
            "memory_per_stream_bytes": self.memory_per_stream(),
            "changes_server_cpu_seconds": self.changes_cpu.map(|(server, _)| server),
            "changes_generator_cpu_seconds": self.changes_cpu.map(|(_, generator)| generator),
        })
    }
}

/// What the watchers record and the collector reads: for each change, the time it was
/// made and its arrival at each watcher. A watcher writes its own slot and counts the
/// arrival; only the arrival that completes a change wakes the collector. (Until round 29
/// every arrival was sent to the collector over a channel, which woke the runtime's main
/// thread with a `futex` call thousands of times per change: CPU taken from the server
/// being measured on this 2-core machine.)
struct Deliveries {
    epoch: Instant,
    streams: usize,
    /// The first changes, not counted (in the scenario, [`WARM_UP_CHANGES`]).
    warm_up: usize,
    /// Per change: microseconds since `epoch` just before it was made, or [`NOT_MADE`].
    made_at: Box<[AtomicU64]>,
    /// Per change and watcher (`change * streams + watcher`): the arrival's latency (µs).
    latencies: Box<[AtomicU64]>,
    /// Per change: the watchers it has reached.
    arrived: Box<[AtomicUsize]>,
    /// Watchers open.
    opened: AtomicUsize,
    /// Watchers whose stream ended or failed.
    ended: AtomicUsize,
    /// Arrivals of a change not made yet, or past the last one: a watcher saw more than
    /// was made.
    unexpected: AtomicUsize,
    /// Per watcher: the revision of the last message it received (`WatchRoutes` only).
    reached: Box<[AtomicU64]>,
    /// Per watcher: the deltas it has received.
    deltas: Box<[AtomicU64]>,
    /// Past the measured changes (a write load with the watchers open): arrivals are
    /// counted, not timed, and a watcher that is reset reads the snapshot that follows
    /// and goes on.
    free_running: AtomicBool,
    /// Watchers reset while free running.
    resets: AtomicUsize,
    wake: Notify,
}

/// [`Deliveries::made_at`] of a change not made yet.
const NOT_MADE: u64 = u64::MAX;

impl Deliveries {
    /// For `changes` measured changes after `warm_up` ones.
    fn new(streams: usize, warm_up: usize, changes: usize) -> Arc<Self> {
        let changes = warm_up + changes;
        let atomics =
            |count: usize, value: u64| (0..count).map(|_| AtomicU64::new(value)).collect();
        Arc::new(Deliveries {
            epoch: Instant::now(),
            streams,
            warm_up,
            made_at: atomics(changes, NOT_MADE),
            latencies: atomics(changes * streams, 0),
            arrived: (0..changes).map(|_| AtomicUsize::new(0)).collect(),
            opened: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            unexpected: AtomicUsize::new(0),
            reached: atomics(streams, 0),
            deltas: atomics(streams, 0),
            free_running: AtomicBool::new(false),
            resets: AtomicUsize::new(0),
            wake: Notify::new(),
        })
    }

    fn changes(&self) -> usize {
        self.made_at.len()
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A watcher is open.
    fn opened(&self) {
        if self.opened.fetch_add(1, Ordering::AcqRel) + 1 == self.streams {
            self.wake.notify_one();
        }
    }

    /// A watcher's stream ended (or never opened).
    fn ended(&self) {
        self.ended.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Change `change` is about to be made.
    fn making(&self, change: usize) {
        self.made_at[change].store(self.micros(), Ordering::Release);
    }

    /// `watcher` received a message of `revision`.
    fn reached(&self, watcher: usize, revision: u64) {
        self.reached[watcher].store(revision, Ordering::Release);
    }

    /// The next change reached `watcher` now; `seen` counts the changes it has seen.
    fn arrived(&self, watcher: usize, seen: &mut usize) {
        let now = self.micros();
        let change = *seen;
        *seen += 1;
        self.deltas[watcher].store(*seen as u64, Ordering::Relaxed);
        if self.free_running.load(Ordering::Relaxed) {
            return;
        }
        let made_at = self
            .made_at
            .get(change)
            .map_or(NOT_MADE, |made_at| made_at.load(Ordering::Acquire));
        if made_at == NOT_MADE {
            self.unexpected.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_one();
            return;
        }
        self.latencies[change * self.streams + watcher]
            .store(now.saturating_sub(made_at), Ordering::Relaxed);
        if self.arrived[change].fetch_add(1, Ordering::AcqRel) + 1 == self.streams {
            self.wake.notify_one();
        }
    }

    /// Waits until `done` holds, failing at once if a watcher ended or saw too much, and
    /// after `timeout` with `late`'s message.
    async fn wait(
        &self,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
        late: impl Fn(&Self) -> String,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ended = self.ended.load(Ordering::Acquire);
            anyhow::ensure!(ended == 0, "{ended} watchers ended or failed to open");
            let unexpected = self.unexpected.load(Ordering::Acquire);
            anyhow::ensure!(
                unexpected == 0,
                "watchers saw {unexpected} changes that were not made"
            );
            if done(self) {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .map_err(|_| anyhow::anyhow!(late(self)))?;
        }
    }

    /// (median, worst) latency of `change` over every watcher, in ms, once it reached all.
    fn latency_ms(&self, change: usize) -> (f64, f64) {
        let slots = &self.latencies[change * self.streams..(change + 1) * self.streams];
        let mut latencies: Vec<u64> = slots
            .iter()
            .map(|latency| latency.load(Ordering::Relaxed))
            .collect();
        latencies.sort_unstable();
        match (latencies.get(latencies.len() / 2), latencies.last()) {
            (Some(median), Some(worst)) => (*median as f64 / 1000.0, *worst as f64 / 1000.0),
            _ => (0.0, 0.0),
        }
    }
}

/// What [`Collector::changes`] measured.
struct Changes {
    /// Per measured change: (median, worst) delivery latency over all watchers (ms).
    per_change_ms: Vec<(f64, f64)>,
    /// The same for the warm-up changes before them.
    warm_up_ms: Vec<(f64, f64)>,
    /// CPU seconds the server and this load generator spent on the measured changes,
    /// from the first made to the last delivered, when the server's process id is known.
    cpu: Option<(f64, f64)>,
}

/// The watchers' tasks and what they record.
struct Collector {
    deliveries: Arc<Deliveries>,
    tasks: Vec<JoinHandle<()>>,
}

impl Collector {
    /// The collector of the watchers `tasks`, once each has reported that it is open, and
    /// half a second more for the server to settle; with the seconds since `opening`.
    async fn open(
        deliveries: Arc<Deliveries>,
        tasks: Vec<JoinHandle<()>>,
        opening: Instant,
    ) -> anyhow::Result<(Self, f64)> {
        let collector = Collector { deliveries, tasks };
        let streams = collector.deliveries.streams;
        collector
            .deliveries
            .wait(
                Duration::from_secs(300),
                |deliveries| deliveries.opened.load(Ordering::Acquire) == streams,
                |deliveries| {
                    format!(
                        "only {} of {streams} watchers opened within 300 s",
                        deliveries.opened.load(Ordering::Acquire)
                    )
                },
            )
            .await?;
        let connect_seconds = opening.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok((collector, connect_seconds))
    }

    /// Makes the warm-up changes, then the measured ones, one after another with `make`
    /// (given the change's number), each timed from just before it is made to its arrival
    /// at every watcher; with `server_pid`, the CPU of the measured ones.
    async fn changes(
        &mut self,
        server_pid: Option<u32>,
        mut make: impl AsyncFnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<Changes> {
        let deliveries = &self.deliveries;
        let streams = deliveries.streams;
        let mut per_change_ms = Vec::with_capacity(deliveries.changes());
        let mut cpu_before = None;
        for change in 0..deliveries.changes() {
            if change == deliveries.warm_up {
                cpu_before = server_and_own_seconds(server_pid);
            }
            deliveries.making(change);
            make(change).await?;
            deliveries
                .wait(
                    Duration::from_secs(60),
                    |deliveries| deliveries.arrived[change].load(Ordering::Acquire) == streams,
                    |deliveries| {
                        format!(
                            "change {change}: only {} of {streams} watchers saw it within 60 s",
                            deliveries.arrived[change].load(Ordering::Acquire)
                        )
                    },
                )
                .await?;
            per_change_ms.push(deliveries.latency_ms(change));
        }
        let cpu = cpu_before.zip(server_and_own_seconds(server_pid)).map(
            |((server, generator), (server_after, generator_after))| {
                (server_after - server, generator_after - generator)
            },
        );
        let measured = per_change_ms.split_off(deliveries.warm_up);
        Ok(Changes {
            per_change_ms: measured,
            warm_up_ms: per_change_ms,
            cpu,
        })
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Spawns watcher number `watcher`'s task: `watch` runs it and returns when its stream
/// ends; the collector is told if that happens before the watcher is stopped.
fn spawn_watcher<F>(deliveries: &Arc<Deliveries>, watch: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let deliveries = deliveries.clone();
    tokio::spawn(async move {
        watch.await;
        deliveries.ended();
    })
}

/// What a watcher decodes of a `WatchRoutesResponse`: its kind, with the routes it
/// carries left encoded. A delivery is timed to its arrival at the watcher, not through
/// the watcher's decoding of the routes: that is an edge's own work, done on machines of
/// its own in production, while here it takes CPU from the server on the same two cores.
/// etcd's watchers are treated alike ([`EtcdArrival`]).
#[derive(Clone, PartialEq, prost::Message)]
struct RouteArrival {
    #[prost(uint64, tag = "1")]
    revision: u64,
    #[prost(oneof = "RouteArrivalKind", tags = "3, 4, 5, 6, 7")]
    kind: Option<RouteArrivalKind>,
}

/// [`RouteArrival`]'s kind (`WatchRoutesResponse.kind`'s field numbers).
#[derive(Clone, PartialEq, prost::Oneof)]
enum RouteArrivalKind {
    #[prost(bytes = "bytes", tag = "3")]
    Snapshot(Bytes),
    #[prost(bytes = "bytes", tag = "4")]
    SnapshotEnd(Bytes),
    #[prost(bytes = "bytes", tag = "5")]
    Delta(Bytes),
    #[prost(message, tag = "6")]
    Reset(wire::Reset),
    #[prost(bytes = "bytes", tag = "7")]
    Progress(Bytes),
}

/// What an etcd watcher decodes of a `WatchResponse`: its flags and its events, each left
/// encoded (see [`RouteArrival`]).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdArrival {
    #[prost(bool, tag = "3")]
    created: bool,
    #[prost(bool, tag = "4")]
    canceled: bool,
    #[prost(string, tag = "6")]
    cancel_reason: String,
    #[prost(bytes = "bytes", repeated, tag = "11")]
    events: Vec<Bytes>,
}

/// A `WatchRoutes` call on `connection` (its messages are read as [`RouteArrival`]s).
async fn watch_routes(
    connection: &Connection,
    token: &str,
    request: &wire::WatchRoutesRequest,
) -> anyhow::Result<Messages> {
    connection
        .call(
            "/signpost.routing.v1.RoutingService/WatchRoutes",
            Some(&format!("Bearer {token}")),
            &request.encode_to_vec(),
            false,
        )
        .await
}

/// An etcd `Watch` call on `connection` sending `create` and keeping its request side
/// open, as a watch must (its messages are read as [`EtcdArrival`]s).
async fn etcd_watch(
    connection: &Connection,
    create: &etcd::pb::WatchRequest,
) -> anyhow::Result<Messages> {
    connection
        .call(
            "/etcdserverpb.Watch/Watch",
            None,
            &create.encode_to_vec(),
            true,
        )
        .await
}

/// Opens `streams` `WatchRoutes` streams with `request`, spread over `connections`, and
/// returns their collector for `changes` changes once all are open (with the seconds that
/// took).
async fn route_watchers(
    connections: &[Connection],
    token: &str,
    streams: usize,
    changes: usize,
    request: wire::WatchRoutesRequest,
) -> anyhow::Result<(Collector, f64)> {
    let deliveries = Deliveries::new(streams, WARM_UP_CHANGES, changes);
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for watcher in 0..streams {
        let connection = connections[watcher % connections.len()].clone();
        let token = token.to_owned();
        let request = request.clone();
        let recorder = deliveries.clone();
        tasks.push(spawn_watcher(&deliveries, async move {
            let Ok(mut stream) = watch_routes(&connection, &token, &request).await else {
                return;
            };
            recorder.opened();
            let mut seen = 0usize;
            while let Some(Ok(bytes)) = stream.next().await {
                let Ok(message) = RouteArrival::decode(bytes) else {
                    return;
                };
                recorder.reached(watcher, message.revision);
                match message.kind {
                    Some(RouteArrivalKind::Delta(_)) => recorder.arrived(watcher, &mut seen),
                    Some(RouteArrivalKind::Reset(reset)) => {
                        if recorder.free_running.load(Ordering::Relaxed) {
                            recorder.resets.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        eprintln!("[fan-out] a watcher was reset: {:?}", reset.reason);
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }
    Collector::open(deliveries, tasks, opening).await
}

/// What [`signpost`] does once the changes are measured, every watcher still open.
#[derive(Debug, Clone, Copy, Default)]
pub struct After<'a> {
    /// Commits that change no route (new organizations), one after another.
    pub quiet_writes: usize,
    /// Scenario 1's concurrent `AssignGroup` load, every write a route change.
    pub write_load: Option<WriteLoad<'a>>,
}

/// A concurrent `AssignGroup` load ([`crate::writes::signpost_assign_load`]).
#[derive(Debug, Clone, Copy)]
pub struct WriteLoad<'a> {
    /// Its connections (others than the watchers').
    pub connections: &'a [Connection],
    /// The organizations it writes to.
    pub organizations: &'a [Organization],
    /// Calls in flight.
    pub in_flight: usize,
    /// How long.
    pub duration: Duration,
}

/// A write load made with every watcher open.
#[derive(Debug, Clone)]
pub struct WritesWithStreams {
    /// The load.
    pub load: LoadReport,
    /// From the load's end to every watcher at the revision of one write made right
    /// after it (ms): how far behind the streams were when the writes stopped.
    pub caught_up_ms: f64,
    /// Deltas a watcher received during the load, on average (each may carry the route
    /// changes of several commits).
    pub deltas_per_stream: f64,
    /// Watchers reset during the load or before they caught up (each then read a
    /// snapshot of the whole table).
    pub resets: usize,
}

impl WritesWithStreams {
    /// A JSON object for reports.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "load": self.load.json(),
            "caught_up_ms": self.caught_up_ms,
            "deltas_per_stream": self.deltas_per_stream,
            "resets": self.resets,
        })
    }
}

/// Signpost: `streams` `WatchRoutes` streams on `watchers` resuming from `revision` in
/// `store_epoch`, then `changes` `AssignGroup`s on `connection_id` through `channel`,
/// then, the streams still open, what `after` asks for. With `server_pid`, the CPU the
/// changes and the quiet commits cost is recorded too.
#[allow(clippy::too_many_arguments)]
pub async fn signpost(
    watchers: &[Connection],
    channel: &Channel,
    token: &str,
    streams: usize,
    changes: usize,
    connection_id: &str,
    revision: u64,
    store_epoch: &str,
    server_rss: impl Fn() -> u64,
    server_pid: Option<u32>,
    after: After<'_>,
) -> anyhow::Result<FanOut> {
    let quiet_writes = after.quiet_writes;
    let rss_before = server_rss();
    let request = wire::WatchRoutesRequest {
        from_revision: Some(revision),
        store_epoch: store_epoch.to_owned(),
    };
    let (mut collector, connect_seconds) =
        route_watchers(watchers, token, streams, changes, request).await?;
    let rss_open = server_rss();
    let mut admin = grpc::admin(channel, token);
    let run = uuid::Uuid::now_v7().simple().to_string();
    // Each change gives the connection's "fan-out" group a new role: one route change.
    let assign = |role: String| pb::AssignGroupRequest {
        connection_id: connection_id.to_owned(),
        idp_group: "fan-out".into(),
        role: format!("role-{run}-{role}"),
        ..Default::default()
    };
    let changes = collector
        .changes(server_pid, async |change| {
            admin.assign_group(assign(change.to_string())).await?;
            Ok(())
        })
        .await?;
    let rss_after = server_rss();
    // Commits that change no route (organizations without a domain), the watchers open.
    let quiet_started = server_and_own_seconds(server_pid);
    for write in 0..quiet_writes {
        admin
            .create_organization(pb::CreateOrganizationRequest {
                display_name: format!("quiet {write}"),
                external_id: format!("quiet-{run}-{write}"),
                ..Default::default()
            })
            .await?;
    }
    let quiet_write_us = quiet_started
        .zip(server_and_own_seconds(server_pid))
        .filter(|_| quiet_writes > 0)
        .map(|((server, _), (server_after, _))| {
            (server_after - server) * 1e6 / quiet_writes as f64
        });
    let writes_with_streams = match after.write_load {
        Some(load) => Some(
            writes_with_streams(&collector.deliveries, token, server_pid, load, async || {
                let written = admin.assign_group(assign("after-load".into())).await?;
                Ok(written.into_inner().log_position)
            })
            .await?,
        ),
        None => None,
    };
    collector.stop();
    Ok(FanOut {
        streams,
        per_change_ms: changes.per_change_ms,
        warm_up_ms: changes.warm_up_ms,
        connect_seconds,
        rss_before,
        rss_open,
        rss_after,
        changes_cpu: changes.cpu,
        quiet_write_us,
        writes_with_streams,
    })
}

/// Runs `load` with every watcher of `deliveries` open, then makes one more write with
/// `last` (which returns its log position) and waits for every watcher to reach it (a
/// watcher reset meanwhile reaches it through the snapshot that follows).
async fn writes_with_streams(
    deliveries: &Deliveries,
    token: &str,
    server_pid: Option<u32>,
    load: WriteLoad<'_>,
    last: impl AsyncFnOnce() -> anyhow::Result<u64>,
) -> anyhow::Result<WritesWithStreams> {
    deliveries.free_running.store(true, Ordering::Relaxed);
    let deltas = || {
        deliveries
            .deltas
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let deltas_before = deltas();
    let report = crate::cpu::measure(
        server_pid,
        crate::writes::signpost_assign_load(
            load.connections,
            token,
            load.organizations,
            load.in_flight,
            load.duration,
        ),
    )
    .await;
    let ended = Instant::now();
    let deltas_during = deltas() - deltas_before;
    let position = last().await?;
    let deadline = ended + Duration::from_secs(120);
    loop {
        let behind = deliveries
            .reached
            .iter()
            .filter(|reached| reached.load(Ordering::Acquire) < position)
            .count();
        if behind == 0 {
            break;
        }
        let ended_streams = deliveries.ended.load(Ordering::Acquire);
        anyhow::ensure!(ended_streams == 0, "{ended_streams} watchers ended");
        anyhow::ensure!(
            Instant::now() < deadline,
            "{behind} watchers had not reached position {position} 120 s after the write load"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(WritesWithStreams {
        load: report,
        caught_up_ms: ended.elapsed().as_secs_f64() * 1000.0,
        deltas_per_stream: deltas_during as f64 / deliveries.streams.max(1) as f64,
        resets: deliveries.resets.load(Ordering::Relaxed),
    })
}

/// etcd: `streams` watchers on [`ETCD_PREFIX`] on `watchers` (one Watch stream each,
/// like one `WatchRoutes` stream each), then `changes` puts of `value_bytes` under it
/// through `channel`.
pub async fn etcd(
    watchers: &[Connection],
    channel: &Channel,
    streams: usize,
    changes: usize,
    value_bytes: usize,
    server_rss: impl Fn() -> u64,
) -> anyhow::Result<FanOut> {
    let deliveries = Deliveries::new(streams, WARM_UP_CHANGES, changes);
    let rss_before = server_rss();
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for watcher in 0..streams {
        let connection = watchers[watcher % watchers.len()].clone();
        let recorder = deliveries.clone();
        tasks.push(spawn_watcher(&deliveries, async move {
            let create = etcd::pb::WatchRequest {
                request_union: Some(etcd::pb::watch_request::RequestUnion::CreateRequest(
                    etcd::pb::WatchCreateRequest {
                        key: ETCD_PREFIX.as_bytes().to_vec(),
                        range_end: etcd::prefix_end(ETCD_PREFIX.as_bytes()),
                        ..Default::default()
                    },
                )),
            };
            let Ok(mut stream) = etcd_watch(&connection, &create).await else {
                return;
            };
            let mut seen = 0usize;
            while let Some(Ok(bytes)) = stream.next().await {
                let Ok(message) = EtcdArrival::decode(bytes) else {
                    return;
                };
                if message.created {
                    recorder.opened();
                }
                if message.canceled {
                    eprintln!(
                        "[fan-out] an etcd watch was canceled: {}",
                        message.cancel_reason
                    );
                    return;
                }
                for _ in &message.events {
                    recorder.arrived(watcher, &mut seen);
                }
            }
        }));
    }
    let (mut collector, connect_seconds) = Collector::open(deliveries, tasks, opening).await?;
    let rss_open = server_rss();
    let mut kv = etcd::kv(channel);
    let changes = collector
        .changes(None, async |change| {
            etcd::put(
                &mut kv,
                format!("{ETCD_PREFIX}route").into_bytes(),
                etcd::value_of(change, value_bytes),
            )
            .await?;
            Ok(())
        })
        .await?;
    let rss_after = server_rss();
    collector.stop();
    Ok(FanOut {
        streams,
        per_change_ms: changes.per_change_ms,
        warm_up_ms: changes.warm_up_ms,
        connect_seconds,
        rss_before,
        rss_open,
        rss_after,
        changes_cpu: None,
        quiet_write_us: None,
        writes_with_streams: None,
    })
}

/// Makes one change on the do-nothing stream server ([`crate::stream_ceiling`]).
async fn trigger(
    client: &mut tonic_health::pb::health_client::HealthClient<Channel>,
) -> anyhow::Result<()> {
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: crate::stream_ceiling::TRIGGER.into(),
        })
        .await?;
    Ok(())
}

/// The limit with route-sized messages ([`crate::stream_ceiling`] given a route):
/// `streams` `WatchRoutes` streams opened by the same client as [`signpost`]'s, with the
/// same request, then `changes` changes, each a delta as large as the control plane's.
pub async fn route_floor(
    watchers: &[Connection],
    channel: &Channel,
    streams: usize,
    changes: usize,
    store_epoch: &str,
) -> anyhow::Result<FanOut> {
    let request = wire::WatchRoutesRequest {
        from_revision: Some(0),
        store_epoch: store_epoch.to_owned(),
    };
    // The floor authorizes nothing; the client sends a bearer token all the same.
    let opened = route_watchers(watchers, "floor", streams, changes, request).await?;
    triggered_changes(opened, channel, streams).await
}

/// Makes the collector's changes on the do-nothing stream server through `channel`, timed
/// by the collector of `streams` watchers opened in `connect_seconds`.
async fn triggered_changes(
    (mut collector, connect_seconds): (Collector, f64),
    channel: &Channel,
    streams: usize,
) -> anyhow::Result<FanOut> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let changes = collector
        .changes(None, async |_| trigger(&mut client).await)
        .await?;
    collector.stop();
    Ok(FanOut {
        streams,
        per_change_ms: changes.per_change_ms,
        warm_up_ms: changes.warm_up_ms,
        connect_seconds,
        ..FanOut::default()
    })
}

/// The limit of this machine and client ([`crate::stream_ceiling`]): `streams` `Watch`
/// streams on a do-nothing server on `watchers`, then `changes` changes made through
/// `channel`, measured like the peers.
pub async fn ceiling(
    watchers: &[Connection],
    channel: &Channel,
    streams: usize,
    changes: usize,
) -> anyhow::Result<FanOut> {
    let request = tonic_health::pb::HealthCheckRequest::default().encode_to_vec();
    let deliveries = Deliveries::new(streams, WARM_UP_CHANGES, changes);
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for watcher in 0..streams {
        let connection = watchers[watcher % watchers.len()].clone();
        let request = request.clone();
        let recorder = deliveries.clone();
        tasks.push(spawn_watcher(&deliveries, async move {
            let path = "/grpc.health.v1.Health/Watch";
            let Ok(mut stream) = connection.call(path, None, &request, false).await else {
                return;
            };
            // The first message is the state when the stream opened.
            if !matches!(stream.next().await, Some(Ok(_))) {
                return;
            }
            recorder.opened();
            let mut seen = 0usize;
            while let Some(Ok(_)) = stream.next().await {
                recorder.arrived(watcher, &mut seen);
            }
        }));
    }
    let opened = Collector::open(deliveries, tasks, opening).await?;
    triggered_changes(opened, channel, streams).await
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn route(domain: &str) -> wire::Route {
        wire::Route {
            domain: domain.into(),
            organization_id: "org_1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_route_arrival_is_the_response_s_kind_with_its_body_left_encoded() {
        let delta = wire::RouteDelta {
            upserts: vec![route("acme.example"), route("globex.example")],
            deletes: vec!["initech.example".into()],
        };
        let response = wire::WatchRoutesResponse {
            revision: 41,
            store_epoch: "epoch".into(),
            kind: Some(wire::watch_routes_response::Kind::Delta(delta.clone())),
        };
        let arrival = RouteArrival::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            arrival.kind,
            Some(RouteArrivalKind::Delta(delta.encode_to_vec().into()))
        );

        let reset = wire::WatchRoutesResponse {
            revision: 41,
            kind: Some(wire::watch_routes_response::Kind::Reset(wire::Reset {
                reason: wire::ResetReason::EpochChanged as i32,
            })),
            ..Default::default()
        };
        let arrival = RouteArrival::decode(reset.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            arrival.kind,
            Some(RouteArrivalKind::Reset(wire::Reset {
                reason: wire::ResetReason::EpochChanged as i32
            }))
        );

        let progress = wire::WatchRoutesResponse {
            revision: 42,
            kind: Some(wire::watch_routes_response::Kind::Progress(
                wire::Progress::default(),
            )),
            ..Default::default()
        };
        let arrival = RouteArrival::decode(progress.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(arrival.kind, Some(RouteArrivalKind::Progress(_))));
    }

    #[test]
    fn an_etcd_arrival_counts_the_response_s_events() {
        let event = |key: &str| etcd::pb::Event {
            kv: Some(etcd::pb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'x'; 200],
                mod_revision: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = etcd::pb::WatchResponse {
            watch_id: 3,
            events: vec![event("/a"), event("/b")],
            ..Default::default()
        };
        let arrival = EtcdArrival::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(arrival.events.len(), 2);
        assert_eq!(arrival.events[1], Bytes::from(event("/b").encode_to_vec()));
        assert!(!arrival.created && !arrival.canceled);

        let canceled = etcd::pb::WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: "compacted".into(),
            ..Default::default()
        };
        let arrival = EtcdArrival::decode(canceled.encode_to_vec().as_slice()).unwrap();
        assert!(arrival.created && arrival.canceled);
        assert_eq!(arrival.cancel_reason, "compacted");
        assert!(arrival.events.is_empty());
    }

    /// Waits a short while for `change` to reach every watcher.
    async fn wait_for(deliveries: &Deliveries, change: usize) -> anyhow::Result<()> {
        deliveries
            .wait(
                Duration::from_millis(200),
                |d| d.arrived[change].load(Ordering::Acquire) == d.streams,
                |_| format!("change {change} is late"),
            )
            .await
    }

    #[tokio::test]
    async fn a_change_is_collected_once_it_reached_every_watcher() {
        let deliveries = Deliveries::new(3, 0, 2);
        let mut seen = [0usize; 3];
        deliveries.making(0);
        deliveries.arrived(2, &mut seen[2]);
        deliveries.arrived(0, &mut seen[0]);
        let late = wait_for(&deliveries, 0).await.unwrap_err();
        assert_eq!(late.to_string(), "change 0 is late");

        deliveries.arrived(1, &mut seen[1]);
        wait_for(&deliveries, 0).await.unwrap();
        let (median, worst) = deliveries.latency_ms(0);
        assert!(median <= worst);
        assert_eq!(seen, [1, 1, 1]);

        // The next change is recorded in its own slots, from its own making.
        tokio::time::sleep(Duration::from_millis(5)).await;
        deliveries.making(1);
        for (watcher, seen) in seen.iter_mut().enumerate() {
            deliveries.arrived(watcher, seen);
        }
        wait_for(&deliveries, 1).await.unwrap();
        assert!(deliveries.latency_ms(1).1 < 5.0);
    }

    /// The warm-up changes are made and delivered first, with the numbers before the
    /// measured ones', and only the measured ones are returned as such.
    #[tokio::test]
    async fn the_warm_up_changes_come_first_and_are_not_counted() {
        let deliveries = Deliveries::new(2, 3, 2);
        let mut collector = Collector {
            deliveries: deliveries.clone(),
            tasks: Vec::new(),
        };
        let mut made = Vec::new();
        let mut seen = [0usize; 2];
        let changes = collector
            .changes(None, async |change| {
                made.push(change);
                if change >= 3 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                for (watcher, seen) in seen.iter_mut().enumerate() {
                    deliveries.arrived(watcher, seen);
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(made, [0, 1, 2, 3, 4]);
        assert_eq!(seen, [5, 5]);
        assert_eq!(changes.warm_up_ms.len(), 3);
        assert_eq!(changes.per_change_ms.len(), 2);
        // The measured changes are the ones that took at least 30 ms to arrive.
        assert!(changes
            .per_change_ms
            .iter()
            .all(|(median, _)| *median >= 30.0));
        assert!(changes.cpu.is_none());
    }

    #[tokio::test]
    async fn an_arrival_of_a_change_not_made_fails_the_collection() {
        let deliveries = Deliveries::new(2, 0, 2);
        let mut seen = [0usize; 2];
        deliveries.making(0);
        deliveries.arrived(0, &mut seen[0]);
        // Watcher 0 sees a second change before the second one was made.
        deliveries.arrived(0, &mut seen[0]);
        deliveries.arrived(1, &mut seen[1]);
        let error = wait_for(&deliveries, 0).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "watchers saw 1 changes that were not made"
        );

        // Past the last change, too.
        let deliveries = Deliveries::new(1, 0, 1);
        let mut seen = 0;
        deliveries.making(0);
        deliveries.arrived(0, &mut seen);
        deliveries.arrived(0, &mut seen);
        assert!(wait_for(&deliveries, 0).await.is_err());
    }

    #[tokio::test]
    async fn a_watcher_that_ended_fails_the_collection_at_once() {
        let deliveries = Deliveries::new(2, 0, 1);
        let waiting = {
            let deliveries = deliveries.clone();
            tokio::spawn(async move {
                deliveries
                    .wait(
                        Duration::from_secs(60),
                        |d| d.opened.load(Ordering::Acquire) == d.streams,
                        |_| "late".into(),
                    )
                    .await
            })
        };
        deliveries.opened();
        let task = spawn_watcher(&deliveries, async {});
        task.await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends when a watcher ends, not at its timeout")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.to_string(), "1 watchers ended or failed to open");
    }
}
