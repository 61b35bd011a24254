//! Scenario 6, snapshot: a fresh login edge receiving the whole table. The
//! headline is an in-process `signpost_edge::Edge` started with no state
//! file, from `Edge::start` until it is ready with every route (`readyz`:
//! the snapshot is complete and applied). Also measured: the raw gRPC snapshot
//! (a bare client reading `WatchRoutes` to its end marker), the `signpost-edge`
//! binary from spawn to `readyz` 200, and, for etcd, a fresh list-watch
//! client's list: a `Range` of the whole prefix.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::watch_routes_response::Kind;
use signpost_edge::{Edge, EdgeConfig};
use tonic::transport::Channel;

use crate::{etcd, grpc};

/// What a bare snapshot read saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Time to the end marker.
    pub elapsed: Duration,
    /// Routes received.
    pub routes: u64,
    /// The snapshot's revision.
    pub revision: u64,
    /// The store epoch.
    pub store_epoch: String,
}

/// A fresh watcher reading the whole snapshot (to its end marker).
pub async fn grpc_snapshot(channel: &Channel, token: &str) -> anyhow::Result<Snapshot> {
    let mut client = grpc::routing(channel, token);
    let started = Instant::now();
    let mut stream = client
        .watch_routes(wire::WatchRoutesRequest::default())
        .await?
        .into_inner();
    let mut routes = 0u64;
    while let Some(message) = stream.next().await {
        let message = message?;
        match message.kind {
            Some(Kind::Snapshot(chunk)) => routes += chunk.routes.len() as u64,
            Some(Kind::SnapshotEnd(_)) => {
                return Ok(Snapshot {
                    elapsed: started.elapsed(),
                    routes,
                    revision: message.revision,
                    store_epoch: message.store_epoch,
                })
            }
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the snapshot did")
}

/// Starts an in-process edge with no state file and waits until it holds
/// `routes` routes: (the edge, time from start to ready).
pub async fn edge_ready(
    control_plane: &str,
    token: &str,
    state_file: &Path,
    routes: usize,
) -> anyhow::Result<(Edge, Duration)> {
    let _ = std::fs::remove_file(state_file);
    let started = Instant::now();
    let edge = Edge::start(EdgeConfig {
        control_planes: vec![control_plane.to_owned()],
        token: token.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        state_file: state_file.to_owned(),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    })
    .await?;
    let deadline = started + Duration::from_secs(120);
    loop {
        let status = edge.status();
        if status.ready && status.route_count >= routes {
            return Ok((edge, started.elapsed()));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edge was not ready within 120 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// etcd: a `Range` of every key under `prefix` (what a list-watch client lists first).
pub async fn etcd_list(channel: &Channel, prefix: &str) -> anyhow::Result<(Duration, usize)> {
    let mut kv = etcd::kv(channel);
    let started = Instant::now();
    let reply = kv
        .range(etcd::pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: etcd::prefix_end(prefix.as_bytes()),
            serializable: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((started.elapsed(), reply.kvs.len()))
}
