//! Scenario 5, cold start with a large log. Two starts of the control plane
//! on the same populated directory:
//!
//! - the first finds no projection state, so it builds every projection from
//!   the whole log (control-plane state, routing table, audit index) and
//!   verifies the hash chain: events / (spawn → every projection caught up) is
//!   the rebuild rate. The audit index may catch up after the server listens
//!   (`ListAuditEvents` answers `Unavailable` meanwhile), so "caught up" is the
//!   later of the first routed `Resolve` and the first `ListAuditEvents` answer;
//! - the second is an ordinary restart: spawn → "listening" and spawn → the
//!   first successful `Resolve` are start-to-serving.
//!
//! Each start's CPU (every thread of the server, from /proc) is read at the same moments:
//! per event, it is what bounds the rebuild rate on this machine's cores.
//!
//! [`rebuild`] times a first start alone: the suite runs it on the same events written in
//! lifecycle order (`populate --lifecycle`), where every group assignment is made to an
//! active connection and so changes a route, as in a real log; and, with
//! [`SERVE_FIRST`], on the first log again (its audit database deleted), where the
//! server serves as soon as its read model has caught up and the audit index is rebuilt
//! behind it (by default a catch-up of a million events is one fold of the log, and the
//! server serves once every projection is built).

use std::path::Path;
use std::time::{Duration, Instant};

use signpost_api::audit::v1 as audit_pb;
use signpost_api::routing::v1 as wire;

use crate::populate::domain_of;
use crate::server::ControlPlaneProcess;
use crate::{cpu, grpc};

/// Server flags that make a first start serve first and rebuild the audit index behind
/// it (instead of building every projection, the audit index included, in the read
/// model's one fold of the log).
pub const SERVE_FIRST: &[&str] = &["--audit-serve-first-behind", "1"];

/// One start: (process, spawn → listening, spawn → first Resolve with a route).
pub async fn start_and_resolve(
    binary: &Path,
    data_dir: &Path,
    token: &str,
    extra: &[&str],
) -> anyhow::Result<(ControlPlaneProcess, Duration, Duration)> {
    let server = ControlPlaneProcess::start(binary, data_dir, extra).await?;
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
        anyhow::ensure!(
            Instant::now() < deadline,
            "no Resolve answered within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Spawn → the first `ListAuditEvents` answer (the audit index caught up), or
/// `None` when the server has no audit service.
pub async fn audit_caught_up(
    server: &ControlPlaneProcess,
    token: &str,
) -> anyhow::Result<Option<Duration>> {
    let channels = grpc::channels(&server.url(), 1).await?;
    let mut client = grpc::audit(&channels[0], token);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        match client
            .list_audit_events(audit_pb::ListAuditEventsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
        {
            Ok(_) => return Ok(Some(server.spawned.elapsed())),
            Err(status) if status.code() == tonic::Code::Unavailable => {}
            Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(status) => anyhow::bail!("ListAuditEvents failed: {status}"),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit index did not catch up within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A first start alone (every projection built from the log; `extra`: server flags),
/// stopped once caught up.
pub async fn rebuild(
    binary: &Path,
    data_dir: &Path,
    token: &str,
    events: u64,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let (first, listening, serving) = start_and_resolve(binary, data_dir, token, extra).await?;
    let audit = audit_caught_up(&first, token).await?;
    let cpu_seconds = first.pid().and_then(cpu::process_seconds);
    let rebuilt = audit.unwrap_or_default().max(serving);
    let rss = first.rss_bytes();
    first.stop().await;
    Ok(serde_json::json!({
        "events": events,
        "rebuild_seconds": rebuilt.as_secs_f64(),
        "rebuild_events_per_second": events as f64 / rebuilt.as_secs_f64(),
        "rebuild_listening_seconds": listening.as_secs_f64(),
        "rebuild_audit_caught_up_seconds": audit.map(|d| d.as_secs_f64()),
        "rebuild_first_resolve_seconds": serving.as_secs_f64(),
        "rss_after_rebuild_bytes": rss,
        "rebuild_cpu_seconds": cpu_seconds,
        "cores": cpu::cores(),
    }))
}

/// Both starts; returns the second (still running) and the figures.
pub async fn run(
    binary: &Path,
    data_dir: &Path,
    token: &str,
    events: u64,
) -> anyhow::Result<(ControlPlaneProcess, serde_json::Value)> {
    let mut json = rebuild(binary, data_dir, token, events, &[]).await?;
    let (second, listening, serving) = start_and_resolve(binary, data_dir, token, &[]).await?;
    let restart_cpu_seconds = second.pid().and_then(cpu::process_seconds);
    let audit_second = audit_caught_up(&second, token).await?;
    let restart = serde_json::json!({
        "restart_audit_caught_up_seconds": audit_second.map(|d| d.as_secs_f64()),
        "restart_listening_seconds": listening.as_secs_f64(),
        "restart_first_resolve_seconds": serving.as_secs_f64(),
        "restart_cpu_seconds": restart_cpu_seconds,
        "restart_events_per_second": events as f64 / listening.as_secs_f64(),
        "rss_after_restart_bytes": second.rss_bytes(),
    });
    if let (Some(all), serde_json::Value::Object(restart)) = (json.as_object_mut(), restart) {
        all.extend(restart);
    }
    Ok((second, json))
}
