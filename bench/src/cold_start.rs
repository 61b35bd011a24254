//! Scenario 5, cold start with a large log. Two starts of the control plane
//! on the same populated directory:
//!
//! - the first finds no projection state, so it builds every projection from
//!   the whole log (control-plane state, routing table, audit index) and
//!   verifies the hash chain: events / (spawn → "listening") is the rebuild rate;
//! - the second is an ordinary restart: spawn → "listening" and spawn → the
//!   first successful `Resolve` are start-to-serving.

use std::path::Path;
use std::time::{Duration, Instant};

use signpost_api::routing::v1 as wire;

use crate::populate::domain_of;
use crate::server::ControlPlaneProcess;
use crate::grpc;

/// One start: (process, spawn → listening, spawn → first Resolve with a route).
pub async fn start_and_resolve(
    binary: &Path,
    data_dir: &Path,
    token: &str,
) -> anyhow::Result<(ControlPlaneProcess, Duration, Duration)> {
    let server = ControlPlaneProcess::start(binary, data_dir, &[]).await?;
    let listening = server.startup;
    let url = server.url();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(channels) = grpc::channels(&url, 1).await {
            let reply = grpc::routing(&channels[0], token)
                .resolve(wire::ResolveRequest {
                    email: format!("user@{}", domain_of(0)),
                    min_revision: None,
                })
                .await;
            if let Ok(reply) = reply {
                if matches!(
                    reply.into_inner().answer,
                    Some(wire::resolve_response::Answer::Route(_))
                ) {
                    let serving = server.spawned.elapsed();
                    return Ok((server, listening, serving));
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no Resolve answered within 10 minutes");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Both starts; returns the second (still running) and the figures.
pub async fn run(
    binary: &Path,
    data_dir: &Path,
    token: &str,
    events: u64,
) -> anyhow::Result<(ControlPlaneProcess, serde_json::Value)> {
    let (first, rebuild_listening, rebuild_serving) =
        start_and_resolve(binary, data_dir, token).await?;
    let rss_first = first.rss_bytes();
    first.stop().await;
    let (second, listening, serving) = start_and_resolve(binary, data_dir, token).await?;
    let json = serde_json::json!({
        "events": events,
        "rebuild_seconds": rebuild_listening.as_secs_f64(),
        "rebuild_events_per_second": events as f64 / rebuild_listening.as_secs_f64(),
        "rebuild_first_resolve_seconds": rebuild_serving.as_secs_f64(),
        "restart_listening_seconds": listening.as_secs_f64(),
        "restart_first_resolve_seconds": serving.as_secs_f64(),
        "restart_events_per_second": events as f64 / listening.as_secs_f64(),
        "rss_after_rebuild_bytes": rss_first,
        "rss_after_restart_bytes": second.rss_bytes(),
    });
    Ok((second, json))
}
