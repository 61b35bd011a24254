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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use signpost_api::admin::v1 as pb;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::watch_routes_response::Kind;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::{etcd, grpc};

/// Key prefix the etcd watchers watch.
pub const ETCD_PREFIX: &str = "/signpost/fanout/";

/// Fan-out figures of one peer.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    /// Watchers.
    pub streams: usize,
    /// Per change: median and worst delivery latency over all watchers (ms).
    pub per_change_ms: Vec<(f64, f64)>,
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
            "connect_seconds": self.connect_seconds,
            "rss_before_bytes": self.rss_before, "rss_open_bytes": self.rss_open,
            "rss_after_bytes": self.rss_after,
            "memory_per_stream_bytes": self.memory_per_stream(),
            "changes_server_cpu_seconds": self.changes_cpu.map(|(server, _)| server),
            "changes_generator_cpu_seconds": self.changes_cpu.map(|(_, generator)| generator),
        })
    }
}

/// Where the watchers send what they see.
struct Collector {
    epoch: Instant,
    sent_at: Arc<AtomicU64>,
    ready_rx: tokio::sync::mpsc::Receiver<()>,
    latency_rx: tokio::sync::mpsc::UnboundedReceiver<(usize, u64)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Collector {
    /// The collector of the watchers `tasks`, once each of the `streams` has reported that it
    /// is open (the senders in `parts` are the originals, dropped here so that watchers that
    /// fail are noticed), and half a second more for the server to settle; with the seconds
    /// since `opening`.
    async fn open(
        parts: CollectorParts,
        tasks: Vec<JoinHandle<()>>,
        streams: usize,
        opening: Instant,
    ) -> anyhow::Result<(Self, f64)> {
        let (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx) = parts;
        drop(ready_tx);
        drop(latency_tx);
        let mut collector = Collector {
            epoch,
            sent_at,
            ready_rx,
            latency_rx,
            tasks,
        };
        collector.wait_ready(streams).await?;
        let connect_seconds = opening.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok((collector, connect_seconds))
    }

    async fn wait_ready(&mut self, streams: usize) -> anyhow::Result<()> {
        for _ in 0..streams {
            tokio::time::timeout(Duration::from_secs(300), self.ready_rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("a watcher failed to open"))?;
        }
        Ok(())
    }

    /// Makes `changes` changes one after another with `make` (given the change's number),
    /// each timed from just before it is made to its arrival at every one of `streams`
    /// watchers: (median, worst) in ms per change.
    async fn changes(
        &mut self,
        streams: usize,
        changes: usize,
        mut make: impl AsyncFnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<(f64, f64)>> {
        let mut per_change_ms = Vec::with_capacity(changes);
        for change in 0..changes {
            self.mark_sent();
            make(change).await?;
            per_change_ms.push(self.collect(change, streams).await?);
        }
        Ok(per_change_ms)
    }

    fn mark_sent(&self) {
        self.sent_at
            .store(self.epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
    }

    /// Waits for `streams` deliveries of `change`: (median, worst) in ms.
    async fn collect(&mut self, change: usize, streams: usize) -> anyhow::Result<(f64, f64)> {
        let mut latencies = Vec::with_capacity(streams);
        while latencies.len() < streams {
            let (index, micros) =
                tokio::time::timeout(Duration::from_secs(60), self.latency_rx.recv())
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "change {change}: only {} of {streams} watchers saw it within 60 s",
                            latencies.len()
                        )
                    })?
                    .ok_or_else(|| anyhow::anyhow!("watchers ended"))?;
            anyhow::ensure!(
                index == change,
                "a watcher saw change {index} while {change} was measured"
            );
            latencies.push(micros);
        }
        latencies.sort_unstable();
        Ok((
            latencies[latencies.len() / 2] as f64 / 1000.0,
            latencies[latencies.len() - 1] as f64 / 1000.0,
        ))
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// What every watcher task shares with the collector: the clock's origin, the send time of
/// the change being measured, and the channels for "snapshot done" and delivery latencies.
type CollectorParts = (
    Instant,
    Arc<AtomicU64>,
    tokio::sync::mpsc::Sender<()>,
    tokio::sync::mpsc::UnboundedSender<(usize, u64)>,
    tokio::sync::mpsc::Receiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<(usize, u64)>,
);

/// Records that change number `change` reached a watcher now (microseconds since the
/// change was sent), and moves on to the next change.
fn record_delivery(
    latencies: &tokio::sync::mpsc::UnboundedSender<(usize, u64)>,
    epoch: Instant,
    sent_at: &AtomicU64,
    change: &mut usize,
) {
    let now = epoch.elapsed().as_micros() as u64;
    let _ = latencies.send((*change, now.saturating_sub(sent_at.load(Ordering::SeqCst))));
    *change += 1;
}

fn collector_parts(streams: usize) -> CollectorParts {
    let (ready_tx, ready_rx) = tokio::sync::mpsc::channel::<()>(streams.max(1));
    let (latency_tx, latency_rx) = tokio::sync::mpsc::unbounded_channel();
    (
        Instant::now(),
        Arc::new(AtomicU64::new(0)),
        ready_tx,
        latency_tx,
        ready_rx,
        latency_rx,
    )
}

/// Opens `streams` `WatchRoutes` streams with `request`, spread over `channels`, and
/// returns their collector once all are open (with the seconds that took).
async fn route_watchers(
    channels: &[Channel],
    token: &str,
    streams: usize,
    request: wire::WatchRoutesRequest,
) -> anyhow::Result<(Collector, f64)> {
    let (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx) = collector_parts(streams);
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for index in 0..streams {
        let mut client = grpc::routing(&channels[index % channels.len()], token);
        let ready = ready_tx.clone();
        let latencies = latency_tx.clone();
        let sent_at = sent_at.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(reply) = client.watch_routes(request).await else {
                return;
            };
            let _ = ready.send(()).await;
            let mut stream = reply.into_inner();
            let mut change = 0usize;
            while let Some(Ok(message)) = stream.next().await {
                match message.kind {
                    Some(Kind::Delta(_)) => {
                        record_delivery(&latencies, epoch, &sent_at, &mut change);
                    }
                    Some(Kind::Reset(reset)) => {
                        eprintln!("[fan-out] a watcher was reset: {:?}", reset.reason);
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }
    Collector::open(
        (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx),
        tasks,
        streams,
        opening,
    )
    .await
}

/// Signpost: `streams` `WatchRoutes` streams resuming from `revision` in
/// `store_epoch`, then `changes` `AssignGroup`s on `connection_id`, then, the streams
/// still open, `quiet_writes` commits that change no route. With `server_pid`, the CPU
/// the changes and the quiet commits cost is recorded too.
#[allow(clippy::too_many_arguments)]
pub async fn signpost(
    channels: &[Channel],
    token: &str,
    streams: usize,
    changes: usize,
    connection_id: &str,
    revision: u64,
    store_epoch: &str,
    server_rss: impl Fn() -> u64,
    server_pid: Option<u32>,
    quiet_writes: usize,
) -> anyhow::Result<FanOut> {
    let rss_before = server_rss();
    let request = wire::WatchRoutesRequest {
        from_revision: Some(revision),
        store_epoch: store_epoch.to_owned(),
    };
    let (mut collector, connect_seconds) =
        route_watchers(channels, token, streams, request).await?;
    let rss_open = server_rss();
    let mut admin = grpc::admin(&channels[0], token);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let cpu_seconds = || {
        server_pid
            .and_then(crate::cpu::process_seconds)
            .zip(crate::cpu::process_seconds(std::process::id()))
    };
    let cpu_before = cpu_seconds();
    let per_change_ms = collector
        .changes(streams, changes, async |change| {
            admin
                .assign_group(pb::AssignGroupRequest {
                    connection_id: connection_id.to_owned(),
                    idp_group: "fan-out".into(),
                    role: format!("role-{run}-{change}"),
                    ..Default::default()
                })
                .await?;
            Ok(())
        })
        .await?;
    let changes_cpu = cpu_before.zip(cpu_seconds()).map(
        |((server, generator), (server_after, generator_after))| {
            (server_after - server, generator_after - generator)
        },
    );
    let rss_after = server_rss();
    // Commits that change no route (organizations without a domain), the watchers open.
    let quiet_started = cpu_seconds();
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
        .zip(cpu_seconds())
        .filter(|_| quiet_writes > 0)
        .map(|((server, _), (server_after, _))| {
            (server_after - server) * 1e6 / quiet_writes as f64
        });
    collector.stop();
    Ok(FanOut {
        streams,
        per_change_ms,
        connect_seconds,
        rss_before,
        rss_open,
        rss_after,
        changes_cpu,
        quiet_write_us,
    })
}

/// etcd: `streams` watchers on [`ETCD_PREFIX`] (one Watch stream each, like
/// one `WatchRoutes` stream each), then `changes` puts of `value_bytes` under it.
pub async fn etcd(
    channels: &[Channel],
    streams: usize,
    changes: usize,
    value_bytes: usize,
    server_rss: impl Fn() -> u64,
) -> anyhow::Result<FanOut> {
    let (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx) = collector_parts(streams);
    let rss_before = server_rss();
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for index in 0..streams {
        let mut client = etcd::watch(&channels[index % channels.len()]);
        let ready = ready_tx.clone();
        let latencies = latency_tx.clone();
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let create = etcd::pb::WatchRequest {
                request_union: Some(etcd::pb::watch_request::RequestUnion::CreateRequest(
                    etcd::pb::WatchCreateRequest {
                        key: ETCD_PREFIX.as_bytes().to_vec(),
                        range_end: etcd::prefix_end(ETCD_PREFIX.as_bytes()),
                        ..Default::default()
                    },
                )),
            };
            // Keep the request side open: closing it would end the watch.
            let requests = futures::stream::iter([create]).chain(futures::stream::pending());
            let Ok(reply) = client.watch(requests).await else {
                return;
            };
            let mut stream = reply.into_inner();
            let mut change = 0usize;
            while let Some(Ok(message)) = stream.next().await {
                if message.created {
                    let _ = ready.send(()).await;
                }
                if message.canceled {
                    eprintln!(
                        "[fan-out] an etcd watch was canceled: {}",
                        message.cancel_reason
                    );
                    return;
                }
                for _ in &message.events {
                    record_delivery(&latencies, epoch, &sent_at, &mut change);
                }
            }
        }));
    }
    let (mut collector, connect_seconds) = Collector::open(
        (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx),
        tasks,
        streams,
        opening,
    )
    .await?;
    let rss_open = server_rss();
    let mut kv = etcd::kv(&channels[0]);
    let per_change_ms = collector
        .changes(streams, changes, async |change| {
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
        per_change_ms,
        connect_seconds,
        rss_before,
        rss_open,
        rss_after,
        changes_cpu: None,
        quiet_write_us: None,
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
    channels: &[Channel],
    streams: usize,
    changes: usize,
    store_epoch: &str,
) -> anyhow::Result<FanOut> {
    let request = wire::WatchRoutesRequest {
        from_revision: Some(0),
        store_epoch: store_epoch.to_owned(),
    };
    // The floor authorizes nothing; the client sends a bearer token all the same.
    let opened = route_watchers(channels, "floor", streams, request).await?;
    triggered_changes(opened, &channels[0], streams, changes).await
}

/// Makes `changes` changes on the do-nothing stream server through `channel`, timed by
/// the collector of `streams` watchers opened in `connect_seconds`.
async fn triggered_changes(
    (mut collector, connect_seconds): (Collector, f64),
    channel: &Channel,
    streams: usize,
    changes: usize,
) -> anyhow::Result<FanOut> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let per_change_ms = collector
        .changes(streams, changes, async |_| trigger(&mut client).await)
        .await?;
    collector.stop();
    Ok(FanOut {
        streams,
        per_change_ms,
        connect_seconds,
        ..FanOut::default()
    })
}

/// The limit of this machine and client ([`crate::stream_ceiling`]): `streams` `Watch`
/// streams on a do-nothing server, then `changes` changes, measured like the peers.
pub async fn ceiling(
    channels: &[Channel],
    streams: usize,
    changes: usize,
) -> anyhow::Result<FanOut> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx) = collector_parts(streams);
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for index in 0..streams {
        let mut client = HealthClient::new(channels[index % channels.len()].clone());
        let ready = ready_tx.clone();
        let latencies = latency_tx.clone();
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(reply) = client.watch(HealthCheckRequest::default()).await else {
                return;
            };
            let mut stream = reply.into_inner();
            // The first message is the state when the stream opened.
            if !matches!(stream.next().await, Some(Ok(_))) {
                return;
            }
            let _ = ready.send(()).await;
            let mut change = 0usize;
            while let Some(Ok(_)) = stream.next().await {
                record_delivery(&latencies, epoch, &sent_at, &mut change);
            }
        }));
    }
    let opened = Collector::open(
        (epoch, sent_at, ready_tx, latency_tx, ready_rx, latency_rx),
        tasks,
        streams,
        opening,
    )
    .await?;
    triggered_changes(opened, &channels[0], streams, changes).await
}
