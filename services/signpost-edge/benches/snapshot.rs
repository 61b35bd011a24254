//! The edge with 100,000 realistic routes, through the real code paths:
//!
//! 1. **Snapshot apply**: 100 chunks of 1,000 routes (SAML and OIDC mixed,
//!    uuid ids, 60-90 character https URLs, a certificate fingerprint, group
//!    roles, a claim mapping), each encoded as it arrives from the network,
//!    then decoded as the follower decodes it ([`StreamMessage`]: routes left
//!    encoded) and applied by the real [`StreamApplier`]; the time counts
//!    decoding and applying only (not building the test routes).
//! 2. **State file**: `state_file::save` of that table, timed.
//! 3. **Memory**: this process's `VmRSS` and `VmHWM` (peak) from
//!    `/proc/self/status` after 1 and 2, then, over loopback gRPC from an
//!    in-process fake control plane, the `signpost-edge` binary's `VmRSS` once
//!    it is ready and has written its state file.
//! 4. **End to end**: a bare gRPC client reading the snapshot, and an
//!    in-process `Edge::start` until it is ready with every route.
//! 5. **Lookups**: `Edge::lookup` of 1,000,000 random routed emails, each
//!    timed into an HDR histogram, and the clock's own cost.
//!
//! Run with `cargo bench -p signpost-edge --bench snapshot` (add `-- --quick`
//! for 10,000 routes and 100,000 lookups, `-- --suite-routes` for routes
//! shaped like those of `bench/`'s populate step).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use signpost_api::log::v1 as log;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_client::RoutingServiceClient;
use signpost_api::routing::v1::routing_service_server::{RoutingService, RoutingServiceServer};
use signpost_api::routing::v1::watch_routes_response::Kind;
use signpost_edge::{Edge, EdgeConfig, StreamApplier, StreamMessage, Table};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const CHUNK: usize = 1_000;
const EPOCH: &str = "bench-epoch";
const REVISION: u64 = 1_000;
const TOKEN: &str = "bench-token";

fn uuid(rng: &mut StdRng) -> String {
    let a: u128 = rng.gen();
    let hex = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn alphanumeric(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

/// The domain of route `index`.
fn domain_of(index: usize) -> String {
    format!("firm{index}.example.com")
}

/// Whether to build routes like `bench/src/populate.rs` does (`--suite-routes`).
fn suite_routes() -> bool {
    std::env::args().any(|arg| arg == "--suite-routes")
}

/// A route as the benchmark suite's populate step makes them: SAML, one
/// certificate, a claim mapping of email and groups, no group roles.
fn suite_route(index: usize, rng: &mut StdRng) -> wire::Route {
    let connection_id = uuid(rng);
    let entity = format!("https://idp{index}.example.com/entity");
    wire::Route {
        domain: domain_of(index),
        organization_id: uuid(rng),
        organization_external_id: format!("ext-{index}"),
        connection_id: connection_id.clone(),
        protocol: log::Protocol::Saml as i32,
        saml: Some(wire::SamlRoute {
            idp_entity_id: entity.clone(),
            idp_sso_url: format!("{entity}/sso"),
            idp_sso_binding: log::SamlBinding::HttpRedirect as i32,
            signing_certificates: vec![wire::CertificateFingerprint {
                sha256_fingerprint: format!("{:032x}{:032x}", rng.gen::<u128>(), rng.gen::<u128>()),
                not_after_unix: 1_900_000_000,
            }],
            sp_entity_id: format!("http://127.0.0.1:50051/sso/saml/{connection_id}"),
            acs_url: format!("http://127.0.0.1:50051/sso/saml/{connection_id}/acs"),
        }),
        claim_mapping: Some(log::ClaimMapping {
            email: "email".to_owned(),
            groups: "groups".to_owned(),
            ..Default::default()
        }),
        sso_policy: log::SsoPolicy::Optional as i32,
        ..Default::default()
    }
}

/// A realistic route: what the control plane sends for a configured connection.
fn route(index: usize, rng: &mut StdRng) -> wire::Route {
    if suite_routes() {
        return suite_route(index, rng);
    }
    let connection_id = uuid(rng);
    let mut group_roles = std::collections::BTreeMap::new();
    group_roles.insert("Signpost Administrators".to_owned(), "admin".to_owned());
    group_roles.insert(format!("Engineering-{}", index % 97), "member".to_owned());
    let mut route = wire::Route {
        domain: domain_of(index),
        organization_id: uuid(rng),
        organization_external_id: format!("acct_{:016x}", rng.gen::<u64>()),
        connection_id: connection_id.clone(),
        claim_mapping: Some(log::ClaimMapping {
            email: "email".to_owned(),
            given_name: "given_name".to_owned(),
            family_name: "family_name".to_owned(),
            groups: "groups".to_owned(),
        }),
        group_roles,
        require_group: index % 3 == 0,
        sso_policy: if index % 4 == 0 {
            log::SsoPolicy::Enforced
        } else {
            log::SsoPolicy::Optional
        } as i32,
        ..Default::default()
    };
    if index % 2 == 0 {
        let app = alphanumeric(rng, 20);
        route.protocol = log::Protocol::Saml as i32;
        route.saml = Some(wire::SamlRoute {
            idp_entity_id: format!("http://www.okta.com/exk{app}"),
            idp_sso_url: format!(
                "https://firm{index}.okta.com/app/firm{index}_signpost_1/exk{app}/sso/saml"
            ),
            idp_sso_binding: log::SamlBinding::HttpRedirect as i32,
            signing_certificates: vec![wire::CertificateFingerprint {
                sha256_fingerprint: format!("{:032x}{:032x}", rng.gen::<u128>(), rng.gen::<u128>()),
                not_after_unix: 1_900_000_000 + rng.gen_range(0..100_000_000),
            }],
            sp_entity_id: format!("https://signpost.example.com/saml/{connection_id}"),
            acs_url: format!("https://signpost.example.com/saml/{connection_id}/acs"),
        });
    } else {
        let tenant = uuid(rng);
        route.protocol = log::Protocol::Oidc as i32;
        route.oidc = Some(wire::OidcRoute {
            issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            authorization_endpoint: format!(
                "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
            ),
            client_id: uuid(rng),
            scopes: vec![
                "openid".to_owned(),
                "email".to_owned(),
                "profile".to_owned(),
            ],
            redirect_uri: format!("https://signpost.example.com/oidc/{connection_id}/callback"),
        });
    }
    route
}

fn message(kind: Kind) -> wire::WatchRoutesResponse {
    wire::WatchRoutesResponse {
        revision: REVISION,
        store_epoch: EPOCH.to_owned(),
        kind: Some(kind),
    }
}

/// The snapshot messages of `routes` routes, in the control plane's chunking.
fn snapshot_messages(routes: usize) -> Vec<wire::WatchRoutesResponse> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut messages: Vec<_> = (0..routes)
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .map(|indices| {
            message(Kind::Snapshot(wire::SnapshotChunk {
                routes: indices.iter().map(|&i| route(i, &mut rng)).collect(),
            }))
        })
        .collect();
    messages.push(message(Kind::SnapshotEnd(wire::SnapshotEnd {
        route_count: routes as u64,
    })));
    messages
}

/// `VmRSS` and `VmHWM` of `pid` ("self" for this process), in KiB.
fn memory_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Phase 1 and 2: the snapshot through the real `StreamApplier`, then the
/// state file. Each chunk is built and encoded (as the network delivers it)
/// outside the timed region; decoding and applying it is timed.
fn apply_snapshot(routes: usize, state_file: &Path) -> Table {
    let mut rng = StdRng::seed_from_u64(7);
    let mut applier = StreamApplier::new();
    let mut live = Table::default();
    let mut applying = Duration::ZERO;
    let mut decoding = Duration::ZERO;
    let mut encoded_bytes = 0usize;
    let mut indices = (0..routes).peekable();
    while indices.peek().is_some() {
        let chunk: Vec<_> = indices
            .by_ref()
            .take(CHUNK)
            .map(|i| route(i, &mut rng))
            .collect();
        let bytes = message(Kind::Snapshot(wire::SnapshotChunk { routes: chunk })).encode_to_vec();
        encoded_bytes += bytes.len();
        let started = Instant::now();
        drop(wire::WatchRoutesResponse::decode(bytes.as_slice()).unwrap());
        decoding += started.elapsed();
        let started = Instant::now();
        let decoded = StreamMessage::decode(prost::bytes::Bytes::from(bytes)).unwrap();
        let applied = applier.apply(&live, decoded, chrono::Utc::now()).unwrap();
        assert!(applied.table.is_none());
        applying += started.elapsed();
    }
    let end = message(Kind::SnapshotEnd(wire::SnapshotEnd {
        route_count: routes as u64,
    }))
    .encode_to_vec();
    let started = Instant::now();
    let decoded = StreamMessage::decode(end.as_slice()).unwrap();
    live = applier
        .apply(&live, decoded, chrono::Utc::now())
        .unwrap()
        .table
        .unwrap();
    applying += started.elapsed();
    assert_eq!(live.len(), routes);
    println!(
        "  (for scale: prost decoding the same chunks into `wire` structs, and dropping them: {:.1} ms)",
        decoding.as_secs_f64() * 1000.0
    );
    println!(
        "snapshot apply (decode + StreamApplier): {routes} routes, {:.1} MiB on the wire, {:.1} ms ({:.0} ns/route)",
        encoded_bytes as f64 / (1024.0 * 1024.0),
        applying.as_secs_f64() * 1000.0,
        applying.as_nanos() as f64 / routes as f64
    );
    let (rss, _) = memory_kib("self");
    println!("  VmRSS after the snapshot: {}", mib(rss));
    let started = Instant::now();
    signpost_edge::state_file::save(state_file, &live).unwrap();
    println!(
        "state file save: {:.1} ms, {:.1} MiB",
        started.elapsed().as_secs_f64() * 1000.0,
        std::fs::metadata(state_file).unwrap().len() as f64 / (1024.0 * 1024.0)
    );
    live
}

/// A control plane that streams the same snapshot to every `WatchRoutes` call.
#[derive(Clone)]
struct SnapshotServer {
    messages: Arc<Vec<wire::WatchRoutesResponse>>,
}

#[tonic::async_trait]
impl RoutingService for SnapshotServer {
    async fn resolve(
        &self,
        _request: Request<wire::ResolveRequest>,
    ) -> Result<Response<wire::ResolveResponse>, Status> {
        Err(Status::unimplemented("WatchRoutes only"))
    }

    type WatchRoutesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<wire::WatchRoutesResponse, Status>> + Send>>;

    async fn watch_routes(
        &self,
        _request: Request<wire::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        let messages = self.messages.clone();
        // Cloned per message, as the control plane builds each watcher's chunks;
        // the stream then stays open (idle), like a real one.
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::iter((0..messages.len()).map(move |i| Ok(messages[i].clone()))),
            tokio_stream::pending(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn start_server(messages: Vec<wire::WatchRoutesResponse>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let service = SnapshotServer {
        messages: Arc::new(messages),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RoutingServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    address
}

async fn bare_client_read(address: &str) -> (Duration, usize) {
    let mut client = RoutingServiceClient::connect(address.to_owned())
        .await
        .unwrap();
    let started = Instant::now();
    let mut stream = client
        .watch_routes(wire::WatchRoutesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut routes = 0;
    while let Some(message) = stream.message().await.unwrap() {
        match message.kind {
            Some(Kind::Snapshot(chunk)) => routes += chunk.routes.len(),
            Some(Kind::SnapshotEnd(_)) => break,
            _ => {}
        }
    }
    (started.elapsed(), routes)
}

async fn edge_ready(address: &str, state_file: &Path, routes: usize) -> (Edge, Duration) {
    let _ = std::fs::remove_file(state_file);
    let started = Instant::now();
    let edge = Edge::start(EdgeConfig {
        control_planes: vec![address.to_owned()],
        token: TOKEN.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        state_file: state_file.to_owned(),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    })
    .await
    .unwrap();
    loop {
        let status = edge.status();
        if status.ready && status.route_count >= routes {
            return (edge, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{status:?}");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The `signpost-edge` binary against `address`: time to `readyz` 200, then
/// its resident memory once the state file is written.
async fn binary_memory(address: &str, directory: &Path) {
    let listen = free_port();
    let state_file = directory.join("binary-state.pb");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_signpost-edge"))
        .args(["--control-plane", address, "--token", TOKEN])
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--state-file")
        .arg(&state_file)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    loop {
        let ready = client
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .map(|response| response.status().as_u16() == 200)
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ready = started.elapsed();
    while !state_file.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let written = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.id().unwrap().to_string();
    let (rss, hwm) = memory_kib(&pid);
    println!(
        "signpost-edge binary: readyz 200 after {:.0} ms, state file after {:.0} ms; VmRSS {} (peak VmHWM {})",
        ready.as_secs_f64() * 1000.0,
        written.as_secs_f64() * 1000.0,
        mib(rss),
        mib(hwm)
    );
    let _ = child.kill().await;
}

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name:<26} n={:>8}  p50={:>5} ns  p99={:>5} ns  p99.9={:>6} ns  max={:>8} ns  mean={:>6.0} ns",
        histogram.len(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.mean(),
    );
}

fn lookups(edge: &Edge, routes: usize, count: usize) {
    let mut rng = StdRng::seed_from_u64(11);
    let emails: Vec<String> = (0..count)
        .map(|_| {
            format!(
                "user{}@{}",
                rng.gen_range(0..1000),
                domain_of(rng.gen_range(0..routes))
            )
        })
        .collect();
    let mixed_case: Vec<String> = (0..count / 4)
        .map(|_| format!("Jane.Doe@FIRM{}.Example.COM", rng.gen_range(0..routes)))
        .collect();
    let unrouted: Vec<String> = (0..count / 4)
        .map(|_| format!("someone@unrouted{}.example.com", rng.gen_range(0..routes)))
        .collect();
    for (name, inputs, routed) in [
        ("lookup (routed email)", &emails, true),
        ("lookup (mixed case)", &mixed_case, true),
        ("lookup (unrouted email)", &unrouted, false),
    ] {
        for email in inputs.iter().take(10_000) {
            assert_eq!(edge.lookup(email).unwrap().route.is_some(), routed);
        }
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for email in inputs {
            let started = Instant::now();
            let found = edge.lookup(email);
            let nanos = started.elapsed().as_nanos().max(1) as u64;
            assert_eq!(found.unwrap().route.is_some(), routed);
            histogram.record(nanos).unwrap();
        }
        report(name, &histogram);
    }
    // The map alone, on normalized domains (no parsing, no clone of the route).
    let table = edge.table();
    let domains: Vec<String> = (0..count)
        .map(|_| domain_of(rng.gen_range(0..routes)))
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for domain in &domains {
        let started = Instant::now();
        let found = table.get(domain).is_some();
        let nanos = started.elapsed().as_nanos().max(1) as u64;
        assert!(found);
        histogram.record(nanos).unwrap();
    }
    report("table.get (normalized)", &histogram);
    let mut clock = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for _ in 0..count {
        let started = Instant::now();
        clock
            .record(started.elapsed().as_nanos().max(1) as u64)
            .unwrap();
    }
    report("clock (Instant pair)", &clock);
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (routes, lookup_count) = if quick {
        (10_000, 100_000)
    } else {
        (100_000, 1_000_000)
    };
    let directory = tempfile::tempdir().unwrap();
    let (baseline, _) = memory_kib("self");
    println!("VmRSS before anything: {}", mib(baseline));

    let table = apply_snapshot(routes, &directory.path().join("applier-state.pb"));
    let (rss, hwm) = memory_kib("self");
    println!(
        "  VmRSS holding the table, after the state file: {} (peak VmHWM {})",
        mib(rss),
        mib(hwm)
    );
    drop(table);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let address = start_server(snapshot_messages(routes)).await;
        binary_memory(&address, directory.path()).await;
        for _ in 0..2 {
            let (elapsed, received) = bare_client_read(&address).await;
            assert_eq!(received, routes);
            println!(
                "bare gRPC client reads the snapshot: {:.0} ms",
                elapsed.as_secs_f64() * 1000.0
            );
        }
        let mut edge = None;
        for _ in 0..2 {
            if let Some(previous) = edge.take() {
                Edge::stop(previous).await;
            }
            let (started, ready) =
                edge_ready(&address, &directory.path().join("edge-state.pb"), routes).await;
            println!(
                "in-process Edge::start -> ready with every route: {:.0} ms",
                ready.as_secs_f64() * 1000.0
            );
            edge = Some(started);
        }
        let edge = edge.unwrap();
        // Let the state file writer finish before timing lookups.
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| lookups(&edge, routes, lookup_count));
        edge.stop().await;
    });
}
