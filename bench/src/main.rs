//! `signpost-bench`: measures a real Signpost control plane (a child process
//! of the release binary) over loopback, and prints JSON lines of figures.
//!
//! - `populate`: bulk-load a synthetic history into a data directory.
//! - `routing`: Resolve throughput (and the do-nothing ceiling), snapshot
//!   time, fan-out to many watchers, memory per watcher.
//!
//! Modules: [`populate`] (loader), [`server`] (child process, RSS),
//! [`load`] (closed-loop load generator), [`routing`] (scenarios).
#![forbid(unsafe_code)]

mod load;
mod populate;
mod routing;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "signpost-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk-load organizations (one route each) into a fresh data directory.
    Populate {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        organizations: usize,
        #[arg(long, default_value_t = 0)]
        extra_events: usize,
    },
    /// Routing scenarios against a control plane started on a populated directory.
    Routing {
        /// Scratch directory (populated here).
        #[arg(long)]
        work_dir: PathBuf,
        /// Routes in the table.
        #[arg(long, default_value_t = 100_000)]
        routes: usize,
        /// Requests in flight for Resolve.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Watcher counts for fan-out, e.g. 1000,10000.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        fan_out: Vec<usize>,
        /// Changes per fan-out run.
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// The signpost binary.
        #[arg(long)]
        signpost: Option<PathBuf>,
    },
}

fn emit(scenario: &str, value: serde_json::Value) {
    println!(
        "{}",
        serde_json::json!({ "scenario": scenario, "result": value })
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Populate {
            data_dir,
            organizations,
            extra_events,
        } => {
            let started = std::time::Instant::now();
            populate::populate(
                &data_dir,
                populate::Population {
                    organizations,
                    extra_events_per_organization: extra_events,
                },
            )
            .await?;
            emit(
                "populate",
                serde_json::json!({ "organizations": organizations, "seconds": started.elapsed().as_secs_f64() }),
            );
        }
        Command::Routing {
            work_dir,
            routes,
            in_flight,
            seconds,
            fan_out,
            changes,
            signpost,
        } => {
            let binary = signpost.unwrap_or_else(|| server::sibling_binary("signpost"));
            let duration = Duration::from_secs(seconds);
            // A big table for lookups and snapshots.
            let big = work_dir.join(format!("routes-{routes}"));
            let _ = std::fs::remove_dir_all(&big);
            let token = populate::populate(
                &big,
                populate::Population {
                    organizations: routes,
                    extra_events_per_organization: 0,
                },
            )
            .await?;
            let server = server::ControlPlaneProcess::start(&binary, &big, &[]).await?;
            emit(
                "startup",
                serde_json::json!({ "routes": routes, "seconds": server.startup.as_secs_f64(), "rss_bytes": server.rss_bytes() }),
            );
            let channels = routing::channels(server.addr, 4).await?;
            let (snapshot, count) = routing::snapshot_time(&channels[0], &token).await?;
            emit(
                "snapshot",
                serde_json::json!({ "routes": count, "ms": snapshot.as_secs_f64() * 1000.0 }),
            );
            let noop = routing::noop_load(&channels, in_flight, duration).await;
            emit("noop_unary", noop.json());
            let resolve =
                routing::resolve_load(&channels, &token, routes, in_flight, duration).await;
            emit(
                "resolve",
                serde_json::json!({ "routes": routes, "in_flight": in_flight, "load": resolve.json(), "ratio_to_noop": resolve.rate() / noop.rate() }),
            );
            emit(
                "memory",
                serde_json::json!({ "routes": routes, "control_plane_rss_bytes": server.rss_bytes() }),
            );
            server.stop().await;

            // A small table for fan-out, so snapshots don't dominate.
            let small = work_dir.join("fan-out");
            let _ = std::fs::remove_dir_all(&small);
            let token = populate::populate(
                &small,
                populate::Population {
                    organizations: 100,
                    extra_events_per_organization: 0,
                },
            )
            .await?;
            for streams in fan_out {
                let server = server::ControlPlaneProcess::start(&binary, &small, &[]).await?;
                let channels = routing::channels(server.addr, (streams / 100).max(1)).await?;
                let mut admin: routing::Admin = signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient::with_interceptor(
                    channels[0].clone(),
                    routing::bearer(&token),
                );
                let connection = routing::some_active_connection(&mut admin).await?;
                let result =
                    routing::fan_out(&channels, &token, streams, changes, &connection, || {
                        server.rss_bytes()
                    })
                    .await?;
                let mut medians: Vec<f64> = result.per_change_ms.iter().map(|(m, _)| *m).collect();
                medians.sort_by(f64::total_cmp);
                let worst = result
                    .per_change_ms
                    .iter()
                    .map(|(_, w)| *w)
                    .fold(0.0, f64::max);
                emit(
                    "fan_out",
                    serde_json::json!({
                        "streams": streams, "changes": result.changes,
                        "median_of_medians_ms": medians[medians.len() / 2], "worst_ms": worst,
                        "per_change_ms": result.per_change_ms, "memory_per_stream_bytes": result.memory_per_stream,
                        "connect_seconds": result.connect_seconds,
                    }),
                );
                server.stop().await;
            }
        }
    }
    Ok(())
}
