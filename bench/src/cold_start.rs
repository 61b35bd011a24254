//! Scenario 5, cold start with a large log. Two kinds of start of the control
//! plane on the same populated directory:
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
//! per event, it is what bounds the rebuild rate on this machine's cores. The first start
//! is timed [`FIRST_STARTS`] times, each on its own copy of the populated directory, and
//! the median start is reported with all of them listed.
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

/// First starts that [`run`] times, each on its own copy of the populated directory: one
/// start is one sample of a shared machine's minute, so the figures reported are the
/// median start's (by the time until every projection was built), and every start is
/// listed beside them.
pub const FIRST_STARTS: usize = 3;

/// Copies the directory tree `from` (directories and regular files) to `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The median of `starts` by `rebuild_seconds` (the lower middle one for an even count),
/// with every start's own figures under `first_starts`.
fn median_start(starts: &[serde_json::Value]) -> serde_json::Value {
    let seconds = |start: &serde_json::Value| start["rebuild_seconds"].as_f64().unwrap_or(0.0);
    let mut order: Vec<&serde_json::Value> = starts.iter().collect();
    order.sort_by(|a, b| seconds(a).total_cmp(&seconds(b)));
    let mut median = order[(order.len() - 1) / 2].clone();
    median["first_starts"] = starts
        .iter()
        .map(|start| {
            serde_json::json!({
                "rebuild_seconds": start["rebuild_seconds"],
                "rebuild_events_per_second": start["rebuild_events_per_second"],
                "rebuild_first_resolve_seconds": start["rebuild_first_resolve_seconds"],
                "rebuild_cpu_seconds": start["rebuild_cpu_seconds"],
            })
        })
        .collect();
    median
}

/// [`FIRST_STARTS`] first starts (all but the last on copies of `data_dir`, the last on
/// `data_dir` itself), then a restart after the last; returns the restarted server (still
/// running) and the figures: the median first start's, and the restart's.
pub async fn run(
    binary: &Path,
    data_dir: &Path,
    token: &str,
    events: u64,
) -> anyhow::Result<(ControlPlaneProcess, serde_json::Value)> {
    let mut starts = Vec::with_capacity(FIRST_STARTS);
    for copy in 1..FIRST_STARTS {
        let dir = data_dir.with_extension(format!("first-start-{copy}"));
        copy_tree(data_dir, &dir)?;
        starts.push(rebuild(binary, &dir, token, events, &[]).await?);
        std::fs::remove_dir_all(&dir)?;
    }
    starts.push(rebuild(binary, data_dir, token, events, &[]).await?);
    let mut json = median_start(&starts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_start_is_reported_and_every_start_listed() {
        let start = |seconds: f64| serde_json::json!({ "rebuild_seconds": seconds, "rebuild_events_per_second": 1e6 / seconds, "rebuild_cpu_seconds": 2.0 * seconds });
        let starts = [start(2.3), start(1.8), start(1.9)];
        let median = median_start(&starts);
        assert_eq!(median["rebuild_seconds"], 1.9);
        assert_eq!(median["rebuild_cpu_seconds"], 3.8);
        let listed: Vec<f64> = median["first_starts"]
            .as_array()
            .expect("listed")
            .iter()
            .map(|s| s["rebuild_seconds"].as_f64().expect("seconds"))
            .collect();
        assert_eq!(listed, [2.3, 1.8, 1.9], "in the order they ran");
        // An even count takes the lower middle (the faster of the two middle ones).
        assert_eq!(
            median_start(&[start(3.0), start(1.0)])["rebuild_seconds"],
            1.0
        );
    }

    #[test]
    fn a_copied_tree_holds_the_same_files() {
        let from = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(from.path().join("log")).expect("mkdir");
        std::fs::write(from.path().join("log").join("segment"), b"frames").expect("write");
        std::fs::write(from.path().join("token"), b"secret").expect("write");
        let to = from.path().with_extension("copy");
        copy_tree(from.path(), &to).expect("copied");
        assert_eq!(
            std::fs::read(to.join("log").join("segment")).unwrap(),
            b"frames"
        );
        assert_eq!(std::fs::read(to.join("token")).unwrap(), b"secret");
        std::fs::remove_dir_all(&to).expect("cleanup");
    }
}
