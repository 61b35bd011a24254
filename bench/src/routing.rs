//! Routing scenarios: Resolve under load (with the do-nothing ceiling), a
//! fresh watcher's snapshot, fan-out of one change to many watchers, and the
//! server's memory per watching stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use signpost_api::admin::v1 as pb;
use signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_client::RoutingServiceClient;
use signpost_api::routing::v1::watch_routes_response::Kind;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::load;
use crate::populate::domain_of;

/// Adds the bearer token.
#[derive(Clone)]
pub struct Bearer(pub MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A routing client.
pub type Routing = RoutingServiceClient<InterceptedService<Channel, Bearer>>;
/// An admin client.
pub type Admin = ConnectionAdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Opens `count` HTTP/2 connections to `addr`.
pub async fn channels(addr: std::net::SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// The bearer interceptor for `token`.
pub fn bearer(token: &str) -> Bearer {
    Bearer(format!("Bearer {token}").parse().expect("ASCII token"))
}

/// `Resolve` for random routed domains among `routes`, `in_flight` at a time.
pub async fn resolve_load(
    channels: &[Channel],
    token: &str,
    routes: usize,
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Vec<Routing> = channels
        .iter()
        .map(|c| RoutingServiceClient::with_interceptor(c.clone(), bearer(token)))
        .collect();
    let clients = Arc::new(clients);
    load::run(in_flight, duration, move |worker, i| {
        let mut client = clients[worker % clients.len()].clone();
        let domain =
            domain_of(((worker as u64 * 7919 + i * 104_729) % routes.max(1) as u64) as usize);
        async move {
            match client
                .resolve(wire::ResolveRequest {
                    email: format!("user@{domain}"),
                    min_revision: None,
                })
                .await
            {
                Ok(reply) => matches!(
                    reply.into_inner().answer,
                    Some(wire::resolve_response::Answer::Route(_))
                ),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The ceiling: `grpc.health.v1.Health/Check` (a do-nothing unary handler) from the same client.
pub async fn noop_load(
    channels: &[Channel],
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Vec<_> = channels
        .iter()
        .map(|c| tonic_health::pb::health_client::HealthClient::new(c.clone()))
        .collect();
    let clients = Arc::new(clients);
    load::run(in_flight, duration, move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        async move {
            client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        }
    })
    .await
}

/// Time for a fresh watcher to receive the whole snapshot (to its end marker).
pub async fn snapshot_time(channel: &Channel, token: &str) -> anyhow::Result<(Duration, u64)> {
    let mut client = RoutingServiceClient::with_interceptor(channel.clone(), bearer(token))
        .max_decoding_message_size(64 << 20);
    let started = Instant::now();
    let mut stream = client
        .watch_routes(wire::WatchRoutesRequest::default())
        .await?
        .into_inner();
    let mut routes = 0u64;
    while let Some(message) = stream.next().await {
        match message?.kind {
            Some(Kind::Snapshot(chunk)) => routes += chunk.routes.len() as u64,
            Some(Kind::SnapshotEnd(_)) => return Ok((started.elapsed(), routes)),
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the snapshot did")
}

/// Fan-out figures.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// Changes made.
    pub changes: usize,
    /// Per change: median and worst delivery latency over all watchers (ms).
    pub per_change_ms: Vec<(f64, f64)>,
    /// Server RSS growth per stream while all were open (bytes).
    pub memory_per_stream: f64,
    /// Time to open all streams and receive their snapshots.
    pub connect_seconds: f64,
}

/// Opens `streams` watchers (spread over `channels`), then makes `changes`
/// route changes one after another, timing from just before each mutation is
/// sent to each watcher's receipt of the delta.
pub async fn fan_out(
    channels: &[Channel],
    token: &str,
    streams: usize,
    changes: usize,
    connection_id: &str,
    server_rss: impl Fn() -> u64,
) -> anyhow::Result<FanOut> {
    let epoch = Instant::now();
    let sent_at = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let (latency_tx, mut latency_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let rss_before = server_rss();
    let opening = Instant::now();
    for index in 0..streams {
        let channel = channels[index % channels.len()].clone();
        let mut client = RoutingServiceClient::with_interceptor(channel, bearer(token));
        let ready = ready_tx.clone();
        let latencies = latency_tx.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let Ok(reply) = client
                .watch_routes(wire::WatchRoutesRequest::default())
                .await
            else {
                return;
            };
            let mut stream = reply.into_inner();
            let mut change = 0usize;
            while let Some(Ok(message)) = stream.next().await {
                match message.kind {
                    Some(Kind::SnapshotEnd(_)) => {
                        let _ = ready.send(()).await;
                    }
                    Some(Kind::Delta(_)) => {
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ = latencies
                            .send((change, now.saturating_sub(sent_at.load(Ordering::SeqCst))));
                        change += 1;
                    }
                    _ => {}
                }
            }
        });
    }
    drop(ready_tx);
    drop(latency_tx);
    for _ in 0..streams {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("a watcher failed to open"))?;
    }
    let connect_seconds = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server_rss();
    let mut admin: Admin =
        ConnectionAdminServiceClient::with_interceptor(channels[0].clone(), bearer(token));
    let mut per_change_ms = Vec::with_capacity(changes);
    for change in 0..changes {
        sent_at.store(epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
        admin
            .assign_group(pb::AssignGroupRequest {
                connection_id: connection_id.to_owned(),
                idp_group: "fan-out".into(),
                role: format!("role-{change}"),
                ..Default::default()
            })
            .await?;
        let mut latencies = Vec::with_capacity(streams);
        while latencies.len() < streams {
            let (index, micros) = tokio::time::timeout(Duration::from_secs(60), latency_rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watchers ended"))?;
            anyhow::ensure!(
                index == change,
                "a watcher saw change {index} while {change} was measured"
            );
            latencies.push(micros);
        }
        latencies.sort_unstable();
        per_change_ms.push((
            latencies[latencies.len() / 2] as f64 / 1000.0,
            latencies[latencies.len() - 1] as f64 / 1000.0,
        ));
    }
    Ok(FanOut {
        changes,
        per_change_ms,
        memory_per_stream: (rss_after.saturating_sub(rss_before)) as f64 / streams as f64,
        connect_seconds,
    })
}

/// The connection id of an organization's active connection found by listing.
pub async fn some_active_connection(admin: &mut Admin) -> anyhow::Result<String> {
    let page = admin
        .list_connections(pb::ListConnectionsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    page.connections
        .into_iter()
        .next()
        .map(|c| c.connection_id)
        .ok_or_else(|| anyhow::anyhow!("no connection"))
}
