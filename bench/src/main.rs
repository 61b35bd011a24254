//! `signpost-bench`: measures a real Signpost control plane and login edge
//! (child processes of the release binaries) side by side with etcd, over
//! loopback, and prints JSON lines of figures; `report` turns them into
//! `BENCHMARKS.md`. `bench/run.sh` runs the whole suite.
//!
//! Subcommands and the scenarios they run (one module each):
//! - `writes`: [`writes`] (1, durable writes).
//! - `routing`: [`lookups`] (2), [`snapshot`] (6), [`edge`] (4), [`fanout`] (3),
//!   [`memory`] (8), all against one control plane holding the big table.
//! - `history`: [`cold_start`] (5) and [`audit`] (7) on a large log.
//! - `populate`: bulk-load a data directory ([`populate`]).
//! - `sample-answer`: the control plane's answer to one of scenario 1's calls, in hex, for
//!   `durable-ceiling` (`bench/instructions.sh` counts instructions on both).
//! - `stream-ceiling`: the do-nothing stream server scenario 3's limit is measured on
//!   ([`stream_ceiling`]).
//! - `durable-ceiling`: the durable do-nothing server (each call one append to Signpost's
//!   own log, nothing else: a two-byte `Check`, or the load's own `AssignGroup` answered
//!   with the control plane's answer) scenario 1's durable limits are measured on
//!   ([`durable_ceiling`]).
//! - `resolve-ceiling`: the do-nothing `Resolve` (one fixed answer as large as a route)
//!   scenario 2 compares `Resolve` with ([`resolve_ceiling`]).
//! - `resolve-ab`: `Resolve` and the do-nothing call at two running control planes in
//!   turns ([`lookups`]), for comparing two builds side by side.
//! - `writes-ab`, `fanout-ab`: scenario 1's `AssignGroup` load, and scenario 3's
//!   fan-out (with `--quiet-writes`, commits that change no route while the streams are
//!   open; with `--write-seconds`, scenario 1's write load with the streams open), at two
//!   running control planes in turns ([`writes`], [`fanout`]).
//! - `report`: JSON lines → markdown ([`report`]).
//!
//! Shared: [`server`] (child processes, RSS), [`load`] (closed-loop load
//! generator, HDR histograms), [`cpu`] (CPU per request of the server and the load
//! generator over a load phase), [`grpc`] and [`etcd`] (clients), [`h2_client`] (the
//! minimal gRPC client on `h2` every load of scenarios 1 to 3 uses, for every peer),
//! [`one_method`] (the one-method `RoutingService` the `Resolve` and `WatchRoutes` limits
//! serve).
#![forbid(unsafe_code)]

mod admin_lists;
mod audit;
mod cold_start;
mod cpu;
mod durable_ceiling;
mod edge;
mod etcd;
mod fanout;
mod grpc;
mod h2_client;
mod load;
mod lookups;
mod memory;
mod one_method;
mod populate;
mod report;
mod resolve_ceiling;
mod server;
mod snapshot;
mod stream_ceiling;
mod writes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "signpost-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every scenario run needs.
/// Two running control planes driven in turns (A, B, A, B, ...), each holding a copy of
/// the same `populate`d data directory.
#[derive(Args, Debug, Clone)]
struct AbPeers {
    /// Control plane A's URL.
    #[arg(long)]
    a: String,
    /// Control plane B's URL.
    #[arg(long)]
    b: String,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Control plane A's process id: each turn then reports its CPU per call.
    #[arg(long)]
    a_pid: Option<u32>,
    /// Control plane B's process id.
    #[arg(long)]
    b_pid: Option<u32>,
}

impl AbPeers {
    /// Each peer's name ("a", "b"), the loads' connections and process id.
    async fn connect(
        &self,
    ) -> anyhow::Result<Vec<(&'static str, Vec<h2_client::Connection>, Option<u32>)>> {
        let mut peers = Vec::new();
        for (name, url, pid) in [("a", &self.a, self.a_pid), ("b", &self.b, self.b_pid)] {
            peers.push((name, h2_client::connect(url, self.connections).await?, pid));
        }
        Ok(peers)
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Scratch directory for data directories (on the disk under test).
    #[arg(long)]
    work_dir: PathBuf,
    /// etcd's client URL.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// etcd's process id (for its resident memory).
    #[arg(long)]
    etcd_pid: Option<u32>,
    /// Seconds per load phase (default: 10, or 1 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// Requests in flight for load phases.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// HTTP/2 connections the load is spread over (same for both peers).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Small sizes and short phases: proves the suite works, measures nothing.
    #[arg(long)]
    quick: bool,
    /// The `signpost` binary (default: next to this one).
    #[arg(long)]
    signpost: Option<PathBuf>,
    /// The `signpost-edge` binary (default: next to this one).
    #[arg(long)]
    signpost_edge: Option<PathBuf>,
}

impl Common {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(if self.quick { 1 } else { 10 }))
    }
    fn signpost(&self) -> PathBuf {
        self.signpost
            .clone()
            .unwrap_or_else(|| server::sibling_binary("signpost"))
    }
    fn edge(&self) -> PathBuf {
        self.signpost_edge
            .clone()
            .unwrap_or_else(|| server::sibling_binary("signpost-edge"))
    }
    fn etcd_rss(&self) -> u64 {
        self.etcd_pid.map(server::rss_of).unwrap_or_default()
    }
    /// Both servers for a scenario's load phases (with the pids whose CPU they record).
    fn peers<'a>(
        &self,
        server: &server::ControlPlaneProcess,
        signpost: &'a [h2_client::Connection],
        etcd: &'a [h2_client::Connection],
    ) -> load::Peers<'a> {
        load::Peers {
            signpost,
            etcd,
            pids: cpu::Servers {
                signpost: server.pid(),
                etcd: self.etcd_pid,
            },
        }
    }
    /// A fresh directory `name` under the work dir.
    fn fresh(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.work_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
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
        /// Each organization in lifecycle order, group assignments to an active
        /// connection (see `populate::Population::lifecycle`).
        #[arg(long)]
        lifecycle: bool,
        /// Each organization's setup link too (see `populate::Population::setup_links`).
        #[arg(long)]
        setup_links: bool,
    },
    /// Scenario 1: durable writes.
    Writes {
        #[command(flatten)]
        common: Common,
        /// Organizations (connections) the writers spread over.
        #[arg(long)]
        organizations: Option<usize>,
    },
    /// Scenarios 2, 3, 4, 6 and 8 against one control plane with the big table.
    Routing {
        #[command(flatten)]
        common: Common,
        /// Routes in the table (default 100,000; 2,000 with --quick).
        #[arg(long)]
        routes: Option<usize>,
        /// Watching streams for fan-out (default 10,000; 200 with --quick).
        #[arg(long)]
        streams: Option<usize>,
        /// Changes in the fan-out run (default 20; 3 with --quick).
        #[arg(long)]
        changes: Option<usize>,
        /// Each organization also holds the setup link its connection was configured
        /// through (see `populate::Population::setup_links`).
        #[arg(long)]
        setup_links: bool,
    },
    /// Scenarios 5 and 7 on a large log.
    History {
        #[command(flatten)]
        common: Common,
        /// Organizations (default 10,000; 200 with --quick).
        #[arg(long)]
        organizations: Option<usize>,
        /// Events per organization, 5 of them its setup (default 100; 25 with --quick).
        #[arg(long)]
        events_per_organization: Option<usize>,
    },
    /// Prints a loopback port that is free right now.
    FreePort,
    /// Makes one `AssignGroup` of scenario 1's shape at a running control plane holding a
    /// `populate`d data directory and prints the answer, encoded, in hex: what
    /// `durable-ceiling --assign-answer-hex` sends (`bench/instructions.sh`).
    SampleAnswer {
        /// The control plane's URL.
        #[arg(long)]
        url: String,
        /// The `populate`d data directory it serves (its token and organizations).
        #[arg(long)]
        populated: PathBuf,
    },
    /// Prints, for a running control plane holding a `populate`d data directory, the route
    /// of its first organization (the one `fanout-ab` changes), encoded, in hex, and the
    /// store epoch, separated by a space: what `stream-ceiling --route-hex --store-epoch`
    /// serves (`bench/instructions.sh --fanout`).
    SampleRoute {
        /// The control plane's URL.
        #[arg(long)]
        url: String,
        /// The `populate`d data directory it serves (its token).
        #[arg(long)]
        populated: PathBuf,
    },
    /// Scenario 3's route-sized limit alone, at a running `stream-ceiling` given a route:
    /// `streams` `WatchRoutes` streams, then `changes` changes, each timed to its delivery
    /// at every stream, as `fanout-ab` times the control plane's.
    FloorFanout {
        /// The do-nothing stream server's URL.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// The store epoch it serves.
        #[arg(long)]
        store_epoch: String,
    },
    /// Serves the do-nothing stream server that scenario 3's limit is measured on.
    StreamCeiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// A `Route`, encoded, in hex: also serve `WatchRoutes`, each change a delta
        /// upserting it.
        #[arg(long)]
        route_hex: Option<String>,
        /// The store epoch of those deltas.
        #[arg(long, default_value = "")]
        store_epoch: String,
    },
    /// Serves the do-nothing `Resolve` (one fixed answer) that scenario 2 compares `Resolve` with.
    ResolveCeiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The `ResolveResponse` every call gets, encoded, in hex.
        #[arg(long)]
        answer_hex: String,
    },
    /// Serves the durable do-nothing server that scenario 1's durable limit is measured on.
    DurableCeiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where its event log lives (on the disk under test).
        #[arg(long)]
        data_dir: PathBuf,
        /// The `AssignGroupResponse` every `AssignGroup` gets (with its append's
        /// position), encoded, in hex.
        #[arg(long)]
        assign_answer_hex: String,
    },
    /// `Resolve` and the do-nothing call against two running control planes in turns
    /// (A, B, A, B, ...), for comparing two builds in the same minutes: each holds a
    /// copy of the same `populate`d data directory.
    ResolveAb {
        #[command(flatten)]
        peers: AbPeers,
        /// The admin token file both data directories hold.
        #[arg(long)]
        token_file: PathBuf,
        /// Routes the data directories hold.
        #[arg(long, default_value_t = 100_000)]
        routes: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// `AssignGroup` (scenario 1's concurrent load) against two running control planes in
    /// turns (A, B, A, B, ...), for comparing two builds in the same minutes: each holds a
    /// copy of the same `populate`d data directory, whose organizations `populate` listed
    /// in `bench-organizations.txt`.
    WritesAb {
        #[command(flatten)]
        peers: AbPeers,
        /// The `populate`d data directory both copied (its token and organizations).
        #[arg(long)]
        populated: PathBuf,
        #[arg(long, default_value_t = 4)]
        seconds: u64,
    },
    /// Scenario 3's fan-out (the control plane's side) at two running control planes in
    /// turns, each holding a copy of the same `populate`d data directory: `streams`
    /// `WatchRoutes` streams resuming from a snapshot's revision, then `changes`
    /// `AssignGroup`s to its first organization's connection, each timed to its delivery
    /// at every stream.
    FanoutAb {
        #[command(flatten)]
        peers: AbPeers,
        /// The `populate`d data directory both copied (its token and organizations).
        #[arg(long)]
        populated: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Then, the streams still open, this many commits that change no route (new
        /// organizations, one after another): the server's CPU a commit.
        #[arg(long, default_value_t = 0)]
        quiet_writes: usize,
        /// Then, the streams still open, scenario 1's concurrent `AssignGroup` load for
        /// this many seconds (every write a route change), after the same load with no
        /// stream open (at the turn's start): writes per second and server CPU a write
        /// with and without the streams, and how far behind the streams were when the
        /// writes stopped.
        #[arg(long, default_value_t = 0)]
        write_seconds: u64,
        /// The write load's organizations: the first this many populated (0: every one).
        /// With 1, every write changes the same route again, as a burst of group
        /// assignments to one connection does.
        #[arg(long, default_value_t = 0)]
        write_organizations: usize,
    },
    /// Turns JSON lines of results into BENCHMARKS.md.
    Report {
        /// The JSON lines the scenario runs printed.
        #[arg(long)]
        results: PathBuf,
        /// Where to write the markdown.
        #[arg(long)]
        out: PathBuf,
        /// The commit measured.
        #[arg(long, default_value = "unknown")]
        commit: String,
        /// The etcd version measured against.
        #[arg(long, default_value = "unknown")]
        etcd_version: String,
        /// The run was --quick.
        #[arg(long)]
        quick: bool,
    },
}

fn emit(scenario: &str, value: serde_json::Value) {
    println!(
        "{}",
        serde_json::json!({ "scenario": scenario, "result": value })
    );
}

fn status(message: &str) {
    eprintln!("[signpost-bench] {message}");
}

async fn populate_timed(
    dir: &Path,
    organizations: usize,
    extra: usize,
) -> anyhow::Result<populate::Populated> {
    populate_shaped(
        dir,
        populate::Population {
            organizations,
            extra_events_per_organization: extra,
            lifecycle: false,
            setup_links: false,
        },
    )
    .await
}

async fn populate_shaped(
    dir: &Path,
    population: populate::Population,
) -> anyhow::Result<populate::Populated> {
    let (organizations, extra) = (
        population.organizations,
        population.extra_events_per_organization,
    );
    let started = std::time::Instant::now();
    status(&format!(
        "populating {organizations} organizations (+{extra} events each) in {}",
        dir.display()
    ));
    let populated = populate::populate(dir, population).await?;
    emit(
        "populate",
        serde_json::json!({
            "dir": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "organizations": organizations, "events": populated.events,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    );
    Ok(populated)
}

async fn writes_run(common: Common, organizations: Option<usize>) -> anyhow::Result<()> {
    let organizations = organizations.unwrap_or(if common.quick { 256 } else { 4096 });
    let dir = common.fresh("writes")?;
    let populated = populate_timed(&dir, organizations, 0).await?;
    let server = server::ControlPlaneProcess::start(&common.signpost(), &dir, &[]).await?;
    let channels = grpc::channels(&server.url(), 1).await?;
    let connections = h2_client::connect(&server.url(), common.connections).await?;
    let etcd_connections = h2_client::connect(&common.etcd, common.connections).await?;
    // The durable do-nothing server, its log beside the control plane's (same disk),
    // answering `AssignGroup` with the control plane's own answer to a call of the load's
    // shape.
    let answer =
        writes::sample_answer(&channels[0], &populated.token, &populated.organizations).await?;
    let durable = server::CeilingProcess::durable(&dir.join("durable-ceiling"), &answer).await?;
    let durable_connections =
        h2_client::connect(&format!("http://{}", durable.addr), common.connections).await?;
    status("scenario 1: durable writes");
    let result = writes::run(
        common.peers(&server, &connections, &etcd_connections),
        writes::DurableCeiling {
            connections: &durable_connections,
            pid: durable.pid(),
        },
        &populated.token,
        &populated.organizations,
        &dir,
        common.in_flight,
        common.duration(),
    )
    .await?;
    emit("writes", result);
    durable.stop().await;
    server.stop().await;
    Ok(())
}

async fn routing_run(
    common: Common,
    routes: Option<usize>,
    streams: Option<usize>,
    changes: Option<usize>,
    setup_links: bool,
) -> anyhow::Result<()> {
    let quick = common.quick;
    let routes = routes.unwrap_or(if quick { 2_000 } else { 100_000 });
    let streams = streams.unwrap_or(if quick { 200 } else { 10_000 });
    let changes = changes.unwrap_or(if quick { 3 } else { 20 });
    let duration = common.duration();
    let dir = common.fresh("routing")?;
    let populated = populate_shaped(
        &dir,
        populate::Population {
            organizations: routes,
            extra_events_per_organization: 0,
            lifecycle: false,
            setup_links,
        },
    )
    .await?;
    let token = populated.token.clone();
    let server = server::ControlPlaneProcess::start(&common.signpost(), &dir, &[]).await?;
    emit(
        "startup",
        serde_json::json!({ "routes": routes, "setup_links": setup_links, "seconds": server.startup.as_secs_f64(), "rss_bytes": server.rss_bytes() }),
    );
    let url = server.url();
    // For set-up calls and the fan-out's changes; the loads have connections of their own.
    let channels = grpc::channels(&url, 1).await?;
    let etcd_channels = grpc::channels(&common.etcd, common.connections).await?;
    let mut memory = memory::Memory {
        routes,
        streams,
        ..Default::default()
    };

    // Scenario 2: lookups.
    let answer = lookups::routed_answer(&channels[0], &token).await?;
    let value_bytes = lookups::route_bytes(&answer);
    status(&format!(
        "loading {routes} keys of {value_bytes} bytes into etcd"
    ));
    let etcd_load_seconds =
        lookups::load_etcd_table(&etcd_channels, routes, value_bytes, common.in_flight).await?;
    status("scenario 2: lookups");
    let answer_server = server::CeilingProcess::resolve(&answer).await?;
    let answer_connections =
        h2_client::connect(&grpc::url(answer_server.addr), common.connections).await?;
    let connections = h2_client::connect(&url, common.connections).await?;
    let etcd_connections = h2_client::connect(&common.etcd, common.connections).await?;
    let mut result = lookups::run(
        common.peers(&server, &connections, &etcd_connections),
        lookups::AnswerCeiling {
            connections: &answer_connections,
            pid: answer_server.pid(),
        },
        &token,
        routes,
        common.in_flight,
        duration,
    )
    .await?;
    drop((answer_connections, connections, etcd_connections));
    answer_server.stop().await;
    result["value_bytes"] = value_bytes.into();
    result["etcd_load_seconds"] = etcd_load_seconds.into();
    emit("lookups", result);
    status("admin lists among every organization");
    let lists = admin_lists::run(
        &channels[0],
        &token,
        &populated.organizations,
        if quick { 50 } else { 1_000 },
    )
    .await?;
    emit("admin_lists", lists);
    memory.control_plane_idle = server.rss_bytes();
    memory.etcd_idle = common.etcd_rss();

    // Scenario 6: snapshot; the in-process edge then serves scenario 4's lookups.
    status("scenario 6: snapshot");
    let grpc_snapshot = snapshot::grpc_snapshot(&channels[0], &token).await?;
    let (etcd_list, etcd_keys) =
        snapshot::etcd_list(&etcd_channels[0], lookups::ETCD_PREFIX).await?;
    let (edge, edge_ready) =
        snapshot::edge_ready(&url, &token, &dir.join("edge-in-process.state"), routes).await?;
    status("scenario 4: edge lookups");
    let lookups_done = tokio::task::block_in_place(|| {
        edge::lookup_latency(&edge, routes, if quick { 100_000 } else { 1_000_000 })
    });
    edge.stop().await;
    let edge_process = server::EdgeProcess::start(
        &common.edge(),
        &url,
        &dir.join("bench-admin.token"),
        &dir.join("edge-binary.state"),
    )
    .await?;
    let edge_binary_ready = edge_process.wait_ready(Duration::from_secs(120)).await?;
    let edge_status = server::http_get(edge_process.addr, "/v1/status")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    emit(
        "snapshot",
        serde_json::json!({
            "routes": routes,
            "edge_ready_ms": edge_ready.as_secs_f64() * 1000.0,
            "grpc_snapshot_ms": grpc_snapshot.elapsed.as_secs_f64() * 1000.0,
            "grpc_snapshot_routes": grpc_snapshot.routes,
            "edge_binary_ready_ms": edge_binary_ready.as_secs_f64() * 1000.0,
            "edge_binary_status": edge_status,
            "etcd_list_ms": etcd_list.as_secs_f64() * 1000.0,
            "etcd_list_keys": etcd_keys,
        }),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory.edge = edge_process.rss_bytes();
    status("scenario 4: edge discover over HTTP");
    let discover =
        edge::discover(edge_process.addr, routes, common.in_flight, duration, &dir).await?;
    emit(
        "edge",
        serde_json::json!({ "lookup": lookups_done, "discover": discover }),
    );
    edge_process.stop().await;

    // Scenario 3: fan-out (and scenario 8's peak memory).
    status(&format!("scenario 3: fan-out to {streams} streams"));
    let per_connection = 100;
    let watchers = h2_client::connect(&url, streams.div_ceil(per_connection).max(1)).await?;
    let signpost_fan_out = fanout::signpost(
        &watchers,
        &channels[0],
        &token,
        streams,
        changes,
        &populated.organizations[0].connection_id,
        grpc_snapshot.revision,
        &grpc_snapshot.store_epoch,
        || server.rss_bytes(),
        server.pid(),
        fanout::After::default(),
    )
    .await?;
    memory.control_plane_streams = signpost_fan_out.rss_open.max(signpost_fan_out.rss_after);
    drop(watchers);
    let etcd_watchers =
        h2_client::connect(&common.etcd, streams.div_ceil(per_connection).max(1)).await?;
    let etcd_fan_out = fanout::etcd(
        &etcd_watchers,
        &etcd_channels[0],
        streams,
        changes,
        writes::VALUE_BYTES,
        || common.etcd_rss(),
    )
    .await?;
    memory.etcd_watchers = etcd_fan_out.rss_open.max(etcd_fan_out.rss_after);
    drop(etcd_watchers);
    // The limit: the same client against a server that does nothing but stream, first
    // two-byte messages, then deltas of the route the changes above made (as large as
    // the control plane's), each on connections of its own.
    status("scenario 3: fan-out limit (do-nothing stream server)");
    let delta_route = match lookups::routed_answer(&channels[0], &token).await?.answer {
        Some(signpost_api::routing::v1::resolve_response::Answer::Route(route)) => route,
        _ => anyhow::bail!("the fan-out's organization has no route"),
    };
    let ceiling_server =
        server::CeilingProcess::stream(Some((&delta_route, &grpc_snapshot.store_epoch))).await?;
    let ceiling_url = grpc::url(ceiling_server.addr);
    let trigger_channels = grpc::channels(&ceiling_url, 1).await?;
    let ceiling_watchers =
        h2_client::connect(&ceiling_url, streams.div_ceil(per_connection).max(1)).await?;
    let ceiling_fan_out =
        fanout::ceiling(&ceiling_watchers, &trigger_channels[0], streams, changes).await?;
    drop(ceiling_watchers);
    let floor_watchers =
        h2_client::connect(&ceiling_url, streams.div_ceil(per_connection).max(1)).await?;
    let route_floor = fanout::route_floor(
        &floor_watchers,
        &trigger_channels[0],
        streams,
        changes,
        &grpc_snapshot.store_epoch,
    )
    .await?;
    drop(floor_watchers);
    ceiling_server.stop().await;
    emit(
        "fan_out",
        serde_json::json!({
            "streams": streams, "changes": changes,
            "signpost": signpost_fan_out.json(), "etcd": etcd_fan_out.json(),
            "ceiling": ceiling_fan_out.json(), "route_floor": route_floor.json(),
            "delta_route_bytes": prost::Message::encoded_len(&delta_route),
        }),
    );
    server.stop().await;
    // For context: the same data after a restart, where every projection is found in
    // place (a first start also built them, and some of what that left stays resident).
    let restarted = server::ControlPlaneProcess::start(&common.signpost(), &dir, &[]).await?;
    tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 10 })).await;
    memory.control_plane_restarted = restarted.rss_bytes();
    restarted.stop().await;
    if !setup_links {
        // And for the state a real lifecycle leaves: every organization also holds the
        // setup link its connection was configured through (issued, then spent).
        status("scenario 8: memory with every organization's setup link");
        let with_links = memory_with_links(&common, routes, streams).await?;
        memory.control_plane_streams_with_links = with_links.streams;
        memory.control_plane_restarted_with_links = with_links.restarted;
    }
    emit("memory", memory.json());
    Ok(())
}

/// Scenario 8's control plane on organizations that each also hold their spent setup
/// link: RSS with the streams open after a first start, and after a restart.
struct WithLinks {
    streams: u64,
    restarted: u64,
}

/// [`WithLinks`] on `routes` such organizations and `streams` watching streams: a first
/// start, the streams opened once it has built every projection (the audit index left 15
/// s to finish behind it) and one change sent to them; then a restart, measured after the
/// same wait as the restart row.
async fn memory_with_links(
    common: &Common,
    routes: usize,
    streams: usize,
) -> anyhow::Result<WithLinks> {
    let dir = common.fresh("routing-links")?;
    let population = populate::Population {
        organizations: routes,
        extra_events_per_organization: 0,
        lifecycle: false,
        setup_links: true,
    };
    let populated = populate_shaped(&dir, population).await?;
    let first = server::ControlPlaneProcess::start(&common.signpost(), &dir, &[]).await?;
    tokio::time::sleep(Duration::from_secs(if common.quick { 1 } else { 15 })).await;
    let channels = grpc::channels(&first.url(), 1).await?;
    let watchers = h2_client::connect(&first.url(), streams.div_ceil(100).max(1)).await?;
    let snapshot = snapshot::grpc_snapshot(&channels[0], &populated.token).await?;
    let fan_out = fanout::signpost(
        &watchers,
        &channels[0],
        &populated.token,
        streams,
        1,
        &populated.organizations[0].connection_id,
        snapshot.revision,
        &snapshot.store_epoch,
        || first.rss_bytes(),
        first.pid(),
        fanout::After::default(),
    )
    .await?;
    status("admin lists of closed setup links");
    let link_pages = admin_lists::setup_link_pages(
        &channels[0],
        &populated.token,
        100,
        if common.quick { 5 } else { 200 },
    )
    .await?;
    emit("admin_link_lists", link_pages);
    drop(channels);
    first.stop().await;
    let restarted = server::ControlPlaneProcess::start(&common.signpost(), &dir, &[]).await?;
    tokio::time::sleep(Duration::from_secs(if common.quick { 1 } else { 10 })).await;
    let rss = restarted.rss_bytes();
    restarted.stop().await;
    Ok(WithLinks {
        streams: fan_out.rss_open.max(fan_out.rss_after),
        restarted: rss,
    })
}

async fn history_run(
    common: Common,
    organizations: Option<usize>,
    events_per_organization: Option<usize>,
) -> anyhow::Result<()> {
    let quick = common.quick;
    let organizations = organizations.unwrap_or(if quick { 200 } else { 10_000 });
    let per_organization = events_per_organization.unwrap_or(if quick { 25 } else { 100 });
    let dir = common.fresh("history")?;
    // Each organization's setup is 5 events; the rest are group assignments.
    let populated = populate_timed(&dir, organizations, per_organization.saturating_sub(5)).await?;
    status(&format!(
        "scenario 5: cold start with {} events",
        populated.events
    ));
    let (server, result) =
        cold_start::run(&common.signpost(), &dir, &populated.token, populated.events).await?;
    emit("cold_start", result);
    status("scenario 7: audit");
    let channels = grpc::channels(&server.url(), common.connections).await?;
    let result = audit::run(&channels, &populated, common.in_flight, common.duration()).await?;
    emit("audit", result);
    server.stop().await;

    // Scenario 5 once more on the same log, its audit database deleted: the server
    // serving first, the audit index rebuilt behind it.
    std::fs::remove_dir_all(dir.join("audit"))?;
    status("scenario 5: first start serving first (--audit-serve-first-behind 1)");
    let result = cold_start::rebuild(
        &common.signpost(),
        &dir,
        &populated.token,
        populated.events,
        cold_start::SERVE_FIRST,
    )
    .await?;
    emit("cold_start_serve_first", result);

    // And once more, the audit database and the log's index checkpoint (which `populate`'s
    // clean close left) deleted: every projection and the log's own index built from the
    // segments.
    std::fs::remove_dir_all(dir.join("audit"))?;
    std::fs::remove_file(dir.join("log").join("index"))?;
    status("scenario 5: first start without the log's index checkpoint");
    let result = cold_start::rebuild(
        &common.signpost(),
        &dir,
        &populated.token,
        populated.events,
        &[],
    )
    .await?;
    emit("cold_start_no_checkpoint", result);

    // Scenario 5 again, on the same events in lifecycle order.
    let dir = common.fresh("history-lifecycle")?;
    let lifecycle = populate_shaped(
        &dir,
        populate::Population {
            organizations,
            extra_events_per_organization: per_organization.saturating_sub(5),
            lifecycle: true,
            setup_links: false,
        },
    )
    .await?;
    status(&format!(
        "scenario 5: first start with {} events in lifecycle order",
        lifecycle.events
    ));
    let result = cold_start::rebuild(
        &common.signpost(),
        &dir,
        &lifecycle.token,
        lifecycle.events,
        &[],
    )
    .await?;
    emit("cold_start_lifecycle", result);
    Ok(())
}

/// The control plane's allocator (jemalloc, built with the settings `.cargo/config.toml`
/// gives it), so that the ceiling servers this binary runs (`stream-ceiling`,
/// `durable-ceiling`, `resolve-ceiling`) allocate as `signpost serve` does: with glibc's
/// malloc the do-nothing `Resolve` was slower than the control plane's own `Resolve` in
/// one run (bench/FINDINGS.md, round 24), and the control plane spent about 15% of its CPU
/// in glibc's malloc when it used it. The load generator, the same binary, uses it too,
/// for every peer alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Installs a subscriber that keeps warnings and errors (`SIGNPOST_BENCH_LOG` sets another
/// filter), on stderr. Without one, the `tracing` crate's `log` fallback (its `log` feature,
/// which tower turns on) makes every span of h2 a record for `log` to look at: about 9,700
/// instructions an `AssignGroup` call in the do-nothing servers, which the control plane,
/// whose filter turns those spans off where they are declared, does not pay, and likewise in
/// the load generator's h2 client (bench/FINDINGS.md, round 33).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNPOST_BENCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if matches!(
        cli.command,
        Command::StreamCeiling { .. }
            | Command::ResolveCeiling { .. }
            | Command::DurableCeiling { .. }
    ) {
        // The do-nothing servers run on the control plane's runtime settings, as on its
        // transport; the load generator keeps tokio's defaults.
        runtime.event_interval(signpost_grpc::transport::RUNTIME_EVENT_INTERVAL);
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Populate {
            data_dir,
            organizations,
            extra_events,
            lifecycle,
            setup_links,
        } => {
            let population = populate::Population {
                organizations,
                extra_events_per_organization: extra_events,
                lifecycle,
                setup_links,
            };
            populate_shaped(&data_dir, population).await?;
        }
        Command::Writes {
            common,
            organizations,
        } => writes_run(common, organizations).await?,
        Command::Routing {
            common,
            routes,
            streams,
            changes,
            setup_links,
        } => routing_run(common, routes, streams, changes, setup_links).await?,
        Command::History {
            common,
            organizations,
            events_per_organization,
        } => history_run(common, organizations, events_per_organization).await?,
        Command::FreePort => println!("{}", server::free_port()?.port()),
        Command::SampleAnswer { url, populated } => {
            let (token, organizations) = populate::read_populated(&populated)?;
            let channels = grpc::channels(&url, 1).await?;
            let answer = writes::sample_answer(&channels[0], &token, &organizations).await?;
            println!("{}", hex::encode(prost::Message::encode_to_vec(&answer)));
        }
        Command::SampleRoute { url, populated } => {
            let (token, _) = populate::read_populated(&populated)?;
            let channels = grpc::channels(&url, 1).await?;
            let route = match lookups::routed_answer(&channels[0], &token).await?.answer {
                Some(signpost_api::routing::v1::resolve_response::Answer::Route(route)) => route,
                _ => anyhow::bail!("the first organization has no route"),
            };
            let snapshot = snapshot::grpc_snapshot(&channels[0], &token).await?;
            let route = hex::encode(prost::Message::encode_to_vec(&route));
            println!("{route} {}", snapshot.store_epoch);
        }
        Command::FloorFanout {
            url,
            streams,
            changes,
            store_epoch,
        } => {
            let trigger = grpc::channels(&url, 1).await?;
            let watchers = h2_client::connect(&url, streams.div_ceil(100).max(1)).await?;
            let floor =
                fanout::route_floor(&watchers, &trigger[0], streams, changes, &store_epoch).await?;
            emit(
                "floor_fanout",
                serde_json::json!({
                    "median_ms": floor.median_ms(),
                    "worst_ms": floor.worst_ms(),
                    "per_change_ms": floor.per_change_ms,
                }),
            );
        }
        Command::StreamCeiling {
            listen,
            route_hex,
            store_epoch,
        } => stream_ceiling::serve(listen, route_hex.as_deref(), &store_epoch).await?,
        Command::ResolveCeiling { listen, answer_hex } => {
            resolve_ceiling::serve(listen, &answer_hex).await?
        }
        Command::DurableCeiling {
            listen,
            data_dir,
            assign_answer_hex,
        } => durable_ceiling::serve(listen, &data_dir, &assign_answer_hex).await?,
        Command::ResolveAb {
            peers,
            token_file,
            routes,
            seconds,
        } => {
            let token = std::fs::read_to_string(&token_file)?.trim().to_owned();
            let duration = Duration::from_secs(seconds);
            let in_flight = peers.in_flight;
            let connected = peers.connect().await?;
            for round in 1..=peers.rounds {
                for (name, connections, pid) in &connected {
                    let resolve = cpu::measure(
                        *pid,
                        lookups::resolve_load(connections, &token, routes, in_flight, duration),
                    )
                    .await;
                    let noop =
                        cpu::measure(*pid, lookups::noop_load(connections, in_flight, duration))
                            .await;
                    emit(
                        "resolve_ab",
                        serde_json::json!({
                            "round": round,
                            "server": name,
                            "resolve": resolve.rate(),
                            "noop": noop.rate(),
                            "errors": resolve.errors + noop.errors,
                            "vs_noop": resolve.rate() / noop.rate(),
                            "resolve_server_us": resolve.server_us_per_request(),
                            "noop_server_us": noop.server_us_per_request(),
                        }),
                    );
                }
            }
        }
        Command::WritesAb {
            peers,
            populated,
            seconds,
        } => {
            let (token, organizations) = populate::read_populated(&populated)?;
            let duration = Duration::from_secs(seconds);
            let in_flight = peers.in_flight;
            let connected = peers.connect().await?;
            for round in 1..=peers.rounds {
                for (name, connections, pid) in &connected {
                    let load = writes::signpost_assign_load(
                        connections,
                        &token,
                        &organizations,
                        in_flight,
                        duration,
                    );
                    let report = cpu::measure(*pid, load).await;
                    emit(
                        "writes_ab",
                        serde_json::json!({
                            "round": round,
                            "server": name,
                            "writes": report.rate(),
                            "errors": report.errors,
                            "server_us": report.server_us_per_request(),
                        }),
                    );
                }
            }
        }
        Command::FanoutAb {
            peers,
            populated,
            streams,
            changes,
            quiet_writes,
            write_seconds,
            write_organizations,
        } => {
            let (token, organizations) = populate::read_populated(&populated)?;
            let written = match write_organizations {
                0 => &organizations[..],
                n => &organizations[..n.min(organizations.len())],
            };
            let write_duration = Duration::from_secs(write_seconds);
            let connection_id = &organizations
                .first()
                .ok_or_else(|| anyhow::anyhow!("no organization populated"))?
                .connection_id;
            let urls = [("a", &peers.a, peers.a_pid), ("b", &peers.b, peers.b_pid)];
            for round in 1..=peers.rounds {
                for (name, url, pid) in urls {
                    let channels = grpc::channels(url, 1).await?;
                    let load_connections = h2_client::connect(url, peers.connections).await?;
                    let without_streams = if write_seconds > 0 {
                        let load = writes::signpost_assign_load(
                            &load_connections,
                            &token,
                            written,
                            peers.in_flight,
                            write_duration,
                        );
                        Some(cpu::measure(pid, load).await)
                    } else {
                        None
                    };
                    let write_load = without_streams.as_ref().map(|_| fanout::WriteLoad {
                        connections: &load_connections,
                        organizations: written,
                        in_flight: peers.in_flight,
                        duration: write_duration,
                    });
                    let snapshot = snapshot::grpc_snapshot(&channels[0], &token).await?;
                    let watchers = h2_client::connect(url, streams.div_ceil(100).max(1)).await?;
                    let rss = || pid.map(server::rss_of).unwrap_or_default();
                    let fan_out = fanout::signpost(
                        &watchers,
                        &channels[0],
                        &token,
                        streams,
                        changes,
                        connection_id,
                        snapshot.revision,
                        &snapshot.store_epoch,
                        rss,
                        pid,
                        fanout::After {
                            quiet_writes,
                            write_load,
                        },
                    )
                    .await?;
                    emit(
                        "fanout_ab",
                        serde_json::json!({
                            "round": round,
                            "server": name,
                            "median_ms": fan_out.median_ms(),
                            "worst_ms": fan_out.worst_ms(),
                            "per_change_ms": fan_out.per_change_ms,
                            "warm_up_per_change_ms": fan_out.warm_up_ms,
                            "changes_server_cpu_seconds": fan_out.changes_cpu.map(|(s, _)| s),
                            "changes_generator_cpu_seconds": fan_out.changes_cpu.map(|(_, g)| g),
                            "memory_per_stream_bytes": fan_out.memory_per_stream(),
                            "quiet_write_server_us": fan_out.quiet_write_us,
                            "writes_without_streams": without_streams.map(|load| load.json()),
                            "writes_with_streams": fan_out.writes_with_streams.map(|w| w.json()),
                        }),
                    );
                }
            }
        }
        Command::Report {
            results,
            out,
            commit,
            etcd_version,
            quick,
        } => {
            let text = std::fs::read_to_string(&results)?;
            let measured_at = std::fs::metadata(&results)?.modified()?.into();
            let markdown = report::render(&text, measured_at, &commit, &etcd_version, quick)?;
            std::fs::write(&out, markdown)?;
            let failed = report::failed_calls(&text)?;
            if quick && !failed.is_empty() {
                anyhow::bail!("calls failed in a quick run: {}", failed.join(", "));
            }
        }
    }
    Ok(())
}
