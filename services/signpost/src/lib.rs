//! The Signpost control plane server: wiring only.
//!
//! [`Server::start`] opens the event log in the data directory ([`open_event_log`]:
//! segment files, or the sled format of older directories), loads (or creates) the
//! data key, starts the [`ControlPlane`] (whose read model's task folds the log once
//! and also feeds the routing projection), mints the bootstrap admin token on an
//! empty store, and serves over gRPC:
//! `ConnectionAdminService`, `SetupFormService`, `RoutingService`,
//! `grpc.health.v1` and server reflection, with explicit limits.
//!
//! Before serving it walks the whole hash chain (concurrently with the
//! projections' catch-up) and refuses to start, naming the first bad position,
//! when it is broken. It also starts the audit projection (`<data-dir>/audit`)
//! and the checkpointer (a signed checkpoint at start when the head moved, then
//! periodically), serves `AuditService` and `EventLogService`, and sweeps
//! expired setup links periodically.
//!
//! - [`config`]: settings from flags, `SIGNPOST_*` variables and a TOML file.
//! - [`cli`]: the admin CLI (the same binary), a thin gRPC client.
//! - [`cli_audit`]: `signpost audit ...` and `signpost log export`.
//! - [`entry`]: the binary's `main` (argument parsing, logging, signals).
//! - [`output`]: one printer for every reply (human or `--json`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod cli_audit;
pub mod config;
pub mod entry;
pub mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use signpost_api::admin::v1::setup_form_service_server::SetupFormServiceServer;
use signpost_api::audit::v1::audit_service_server::AuditServiceServer;
use signpost_api::eventlog::v1::event_log_service_server::EventLogServiceServer;
use signpost_audit::{AuditOptions, AuditProjection, CheckpointKey, Checkpointer};
use signpost_control::{ControlConfig, ControlPlane, Followers, SecretBox};
use signpost_eventlog::{
    verify_chain, ChainVerdict, EventStore, FileEventStore, FileOptions, LogError, SledEventStore,
    SledOptions,
};
use signpost_grpc::{
    AdminApi, AdminServer, AuditApi, EventLogApi, RoutingApi, RoutingServer, SetupFormApi,
};
use signpost_outbound::{SystemTxtResolver, TxtResolver};
use signpost_routing::{RoutingOptions, RoutingProjection};
use tokio::sync::oneshot;

pub use config::ServerConfig;

/// Largest inbound gRPC message (metadata XML is capped lower, at 512 KiB).
pub const MAX_INBOUND_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Concurrent requests per connection.
pub const MAX_CONCURRENT_REQUESTS_PER_CONNECTION: usize = 256;
/// Deadline for a request when the client sets none (or a longer one).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Things tests replace; production uses the defaults.
#[derive(Default)]
pub struct Overrides {
    /// DNS TXT lookups for domain verification (tests use a static map).
    pub txt_resolver: Option<Arc<dyn TxtResolver>>,
    /// The clock (tests move it to expire links).
    pub clock: Option<signpost_control::Clock>,
}

/// A running control plane.
pub struct Server {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// The application layer (tests read it directly).
    pub plane: ControlPlane,
    /// The routing projection.
    pub routing: RoutingProjection,
    /// The bootstrap token file, when this start minted it.
    pub bootstrap_token_file: Option<PathBuf>,
    /// The audit projection.
    pub audit: AuditProjection,
    /// Signed checkpoints of the log.
    pub checkpoints: Arc<Checkpointer>,
    /// Periodic work (checkpoints, link expiry sweeps), stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, starts the control plane and binds the listener.
    pub async fn start(config: &ServerConfig, overrides: Overrides) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let store = open_event_log(&config.data_dir.join("log"))
            .with_context(|| format!("opening the event log in {}", config.data_dir.display()))?;
        let key_file = config
            .secret_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("secret.key"));
        let secrets = SecretBox::load_or_create(&key_file)?;
        let mut control = ControlConfig::new(config.public_base_url.clone());
        control.allow_loopback_http_idp_for_tests = config.allow_loopback_http_idp_for_tests;
        if let Some(clock) = overrides.clock {
            control.clock = clock;
        }
        let txt_resolver = overrides
            .txt_resolver
            .unwrap_or_else(|| Arc::new(SystemTxtResolver::new()));
        let mut routing_options = RoutingOptions::new(config.public_base_url.as_str());
        routing_options.history_limit = config.routing_history;
        routing_options.catch_up_routes = config.routing_catch_up_routes;
        let mut audit_options = AuditOptions::new(config.public_base_url.as_str());
        audit_options.cache_capacity_bytes = config.audit_cache_bytes;
        // The audit timeline's catch-up is the read model's (below): nothing to wait for
        // before that starts.
        audit_options.wait_at_start = false;
        audit_options.catch_up_alone_behind = config.audit_serve_first_behind;
        let started = std::time::Instant::now();
        let projections = async {
            // One read of the log builds the control plane's read model, the routing
            // table (computed from the read model's aggregates) and, past the position
            // its database recorded, the audit timeline's entries (described from the read
            // model around each event). A catch-up of the audit timeline shorter than
            // `--audit-serve-first-behind` events (2^20 by default: a rebuild of a million
            // events included) rides on the read model's, which keeps the audit task's
            // pace, and the server serves once every projection has caught up. A longer
            // one does not hold the server back:
            // the audit task folds the log with a read model of its own while the
            // server serves, and hands the events back to the read model's task once it
            // has reached the head, dropping that model (bench/FINDINGS.md, round 12).
            let (audit, audit_feed) = AuditProjection::start_fed(
                store.clone(),
                &config.data_dir.join("audit"),
                audit_options,
            )
            .await
            .context("building the audit timeline")?;
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "audit timeline opened"
            );
            let (routing, routing_feed) =
                RoutingProjection::fed(store.store_epoch().to_string(), routing_options);
            let plane = ControlPlane::start_with(
                store.clone(),
                secrets,
                txt_resolver,
                control,
                Followers {
                    routing: Some(routing_feed),
                    follower: Some(Box::new(audit_feed)),
                },
            )
            .await?;
            tracing::info!(
                position = plane.projection().position(),
                seconds = started.elapsed().as_secs_f64(),
                "read model caught up"
            );
            routing
                .wait_for(plane.projection().position())
                .await
                .map_err(|reason| anyhow::anyhow!("building the routing table: {reason}"))?;
            anyhow::Ok((plane, routing, audit))
        };
        let head = store.head().position;
        // The chain is verified beside the projections' start, on a thread of its own at
        // a lower priority (`verify_in_background`).
        let verification = verify_in_background(store.clone(), head);
        let (plane, routing, audit) = start_if_intact(verification, projections).await?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "projections started on an intact log"
        );
        let checkpoint_key = CheckpointKey::load_or_create(
            &config
                .checkpoint_key_file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("checkpoint.key")),
        )?;
        // Checkpoints cannot be rebuilt: in a database of their own, the audit database
        // can be deleted (and is rebuilt) without losing them, and flushing each one does
        // not write the audit timeline's rows too.
        let checkpoints = Arc::new(Checkpointer::open_at(
            &config.data_dir.join("checkpoints"),
            Some(&*audit.database()?),
            store.clone(),
            checkpoint_key,
        )?);
        let token_file = ControlPlane::bootstrap_token_path(&config.data_dir);
        let bootstrap_token_file = plane
            .bootstrap_admin_token(&token_file)
            .await?
            .then_some(token_file);
        checkpoints.create_if_moved(plane.now()).await?;
        let background = vec![
            tokio::spawn(checkpoint_periodically(
                checkpoints.clone(),
                plane.clone(),
                config.checkpoint_interval,
            )),
            tokio::spawn(sweep_expired_links(
                plane.clone(),
                config.link_expiry_sweep_interval,
            )),
        ];

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<AdminServer>().await;
        health_reporter
            .set_serving::<SetupFormServiceServer<SetupFormApi>>()
            .await;
        health_reporter
            .set_serving::<AuditServiceServer<AuditApi>>()
            .await;
        health_reporter
            .set_serving::<EventLogServiceServer<EventLogApi>>()
            .await;
        health_reporter.set_serving::<RoutingServer>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(signpost_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Each admin call read and answered with one buffer each way.
        let admin = AdminServer::new(AdminApi::new(plane.clone()))
            .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES);
        let form = SetupFormServiceServer::new(SetupFormApi::new(plane.clone()))
            .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES);
        // `WatchRoutes` sends each delta's bytes, encoded once, on every stream.
        let routes = RoutingServer::new(RoutingApi::new(
            plane.clone(),
            routing.clone(),
            config.routing_progress_interval,
        ))
        .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES);
        let audit_service = AuditServiceServer::new(AuditApi::new(
            plane.clone(),
            audit.clone(),
            checkpoints.clone(),
        ))
        .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES);
        let event_log = EventLogServiceServer::new(EventLogApi::new(
            plane.clone(),
            store.clone(),
            config.event_feed_max_lag,
        ))
        .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES);
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS_PER_CONNECTION)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(admin)
            .add_service(form)
            .add_service(routes)
            .add_service(audit_service)
            .add_service(event_log);
        // Every accepted socket with Nagle off and its responses finished in one turn of the
        // runtime written together (`signpost_grpc::transport::incoming`).
        let incoming = signpost_grpc::transport::incoming(listener);
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = shutdown_signal.await;
        }));
        tracing::info!(listen = %local_addr, data_dir = %config.data_dir.display(), "signpost control plane serving");
        if let Some(path) = &bootstrap_token_file {
            tracing::info!(path = %path.display(), "bootstrap admin token written (mode 0600)");
        }
        Ok(Self {
            local_addr,
            plane,
            routing,
            bootstrap_token_file,
            audit,
            checkpoints,
            background,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// Stops serving and waits for in-flight requests.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        for task in &self.background {
            task.abort();
        }
        (&mut self.task).await??;
        Ok(())
    }

    /// Serves until the task ends (an error) or forever.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task).await??;
        Ok(())
    }

    /// Asks the server to stop without waiting.
    pub fn request_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Opens the event log in `dir`: the segment-file store ([`FileEventStore`]), which every new
/// data directory gets, or the sled store of a directory created before it (recognised by
/// sled's `conf` and `db` files), which keeps working as it was.
pub fn open_event_log(dir: &std::path::Path) -> Result<Arc<dyn EventStore>, LogError> {
    if is_sled_log(dir) {
        tracing::info!(dir = %dir.display(), "event log in the sled format (created by an earlier version)");
        return Ok(Arc::new(SledEventStore::open(dir, SledOptions::default())?));
    }
    Ok(Arc::new(FileEventStore::open(dir, FileOptions::default())?))
}

/// Whether `dir` holds a sled event log (the format before the segment-file store).
pub fn is_sled_log(dir: &std::path::Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// How much less CPU the chain verification at start gets than the projections' catch-up
/// when both want a core (a Linux nice value: each step is about 1.25 times less, so 10
/// is about a tenth). Not lower: on a machine busy with other work it would wait for
/// idle cores, and serving waits for its verdict.
const VERIFY_NICE: i32 = 10;

/// Verifies the hash chain up to `head` on a thread of its own, at a lower scheduling
/// priority ([`VERIFY_NICE`]), as are the reads it hands to blocking threads (which
/// inherit it): the read model's task, which every projection's catch-up waits for, gets
/// the cores first, and the verification takes what it leaves (serving still waits for
/// its verdict). On a million events the catch-up is then CPU-bound on one task for half
/// its time with cores to spare, which the verification fills: 1.92 s against 2.06 s
/// from spawn to every projection built, alternating runs (bench/FINDINGS.md, round 21).
fn verify_in_background(
    store: Arc<dyn EventStore>,
    head: u64,
) -> impl std::future::Future<Output = Result<ChainVerdict, LogError>> {
    let (verdict_sender, verdict) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("chain-verify".to_owned())
        .spawn(move || {
            // `None`: this thread (on Linux a nice value is a thread's). Where it cannot be
            // lowered, the verification runs at the server's priority.
            if let Err(error) = rustix::process::setpriority_process(None, VERIFY_NICE) {
                tracing::debug!(%error, "chain verification at the server's priority");
            }
            let verdict = tokio::runtime::Builder::new_current_thread()
                .thread_name("chain-verify-read")
                .enable_all()
                .build()
                .map_err(|error| {
                    LogError::Unavailable(format!("chain verification runtime: {error}"))
                })
                .and_then(|runtime| runtime.block_on(verify_chain(store.as_ref(), 1, head)));
            let _ = verdict_sender.send(verdict);
        });
    async move {
        spawned.map_err(|error| {
            LogError::Unavailable(format!("chain verification thread: {error}"))
        })?;
        verdict
            .await
            .map_err(|_| LogError::Unavailable("chain verification thread stopped".to_owned()))?
    }
}

/// Runs the projections' start-up while the hash chain is verified, and refuses to start,
/// loudly and naming the first bad position, when the chain is broken. A broken log may
/// also make a projection fail or stall (a gap stops a subscription), so whichever
/// finishes first, the verdict decides.
async fn start_if_intact<T>(
    verify: impl std::future::Future<Output = Result<ChainVerdict, LogError>>,
    startup: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(verify);
    tokio::pin!(startup);
    let started = tokio::select! {
        verdict = &mut verify => {
            require_intact(verdict)?;
            startup.await
        }
        started = &mut startup => {
            require_intact(verify.await)?;
            started
        }
    };
    started
}

fn require_intact(verdict: Result<ChainVerdict, LogError>) -> anyhow::Result<()> {
    match verdict.context("verifying the event log's hash chain")? {
        ChainVerdict::Intact {
            head,
            events_checked,
        } => {
            tracing::info!(
                head = head.position,
                events_checked,
                "event log hash chain verified"
            );
            Ok(())
        }
        ChainVerdict::Broken { position, problem } => {
            tracing::error!(
                position,
                %problem,
                "EVENT LOG TAMPERED OR DAMAGED: the hash chain is broken; refusing to serve"
            );
            anyhow::bail!(
                "the event log's hash chain is broken at position {position}: {problem}; refusing to start"
            )
        }
    }
}

/// Signs a checkpoint every `interval` when the head moved since the last one.
async fn checkpoint_periodically(
    checkpoints: Arc<Checkpointer>,
    plane: ControlPlane,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = checkpoints.create_if_moved(plane.now()).await {
            tracing::error!(%error, "signing a log checkpoint failed");
        }
    }
}

/// Records `SetupLinkExpired` for links past their expiry every `interval`.
async fn sweep_expired_links(plane: ControlPlane, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match plane.expire_setup_links().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "setup links expired"),
            Err(error) => tracing::warn!(%error, "setup link expiry sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signpost_eventlog::{Commit, CommitMeta, ExpectedVersion, NewEvent, StreamId, StreamWrite};

    fn commit() -> Commit {
        Commit {
            writes: vec![StreamWrite {
                stream: StreamId::new("format-probe").unwrap(),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_type: "probe".into(),
                    payload: b"probe".to_vec().into(),
                }],
            }],
            meta: CommitMeta {
                actor: Default::default(),
                correlation_id: "c".into(),
                request_id: None,
            },
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn a_new_log_is_a_segment_file_store_and_reopens_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let store = open_event_log(&log).unwrap();
        store.append(commit()).await.unwrap();
        drop(store);
        assert!(!is_sled_log(&log));
        assert!(
            log.join("meta").is_file(),
            "the segment-file store's metadata"
        );
        let reopened = open_event_log(&log).unwrap();
        assert_eq!(reopened.head().position, 1);
    }

    #[tokio::test]
    async fn a_log_written_in_the_sled_format_is_opened_as_sled() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let sled = SledEventStore::open(&log, SledOptions::default()).unwrap();
        let epoch = sled.store_epoch();
        sled.append(commit()).await.unwrap();
        sled.append(commit()).await.unwrap();
        drop(sled);
        assert!(is_sled_log(&log));
        let reopened = open_event_log(&log).unwrap();
        assert_eq!(reopened.head().position, 2);
        assert_eq!(
            reopened.store_epoch(),
            epoch,
            "the same store, not a new one beside it"
        );
        assert!(
            !log.join("meta").exists(),
            "no segment-file store was created"
        );
    }
}
