//! [`Edge`]: the running login edge (HTTP server, follower, state file writer).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use signpost_names::{DomainName, EmailAddress, NameError};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::follower::{self, FollowerSettings, PersistHint};
use crate::route::Route;
use crate::state_file;
use crate::table::{AppliedMessage, Table};

/// How many applied messages a slow [`Edge::subscribe_applied`] receiver may lag.
const APPLIED_CHANNEL_CAPACITY: usize = 4096;
/// How long [`Edge::stop`] waits for open HTTP connections to finish.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the edge needs to run.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Control plane gRPC addresses (`http://host:port`), tried in turn.
    pub control_planes: Vec<String>,
    /// An API token with the `edge` role.
    pub token: String,
    /// Where the HTTP API listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the last good table is kept.
    pub state_file: PathBuf,
    /// First reconnect delay ceiling.
    pub min_backoff: Duration,
    /// Largest reconnect delay ceiling.
    pub max_backoff: Duration,
}

impl EdgeConfig {
    /// A config with the default listen address, state file and backoff.
    pub fn new(control_planes: Vec<String>, token: impl Into<String>) -> Self {
        Self {
            control_planes,
            token: token.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            state_file: PathBuf::from("./signpost-edge-state.pb"),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What `GET /v1/status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeStatus {
    /// The table's revision (0 before any table).
    pub revision: u64,
    /// The table's store epoch (empty before any table).
    pub store_epoch: String,
    /// Whether a routing stream is open.
    pub connected: bool,
    /// When the table last changed (RFC 3339), `null` before any table.
    pub last_update: Option<DateTime<Utc>>,
    /// Number of routed domains.
    pub route_count: usize,
    /// The control plane address in use (or last tried).
    pub control_plane: Option<String>,
    /// Whether the edge holds a table (a snapshot ended or the state file loaded).
    pub ready: bool,
}

/// The answer of [`Edge::lookup`].
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The table's revision at the time of the lookup.
    pub revision: u64,
    /// The route, or `None` for password sign-in.
    pub route: Option<Route>,
    /// Whether the edge holds a table. When it does not, `route: None` means
    /// "unknown", not "password".
    pub ready: bool,
    domain: LookedUpDomain,
}

impl Lookup {
    /// The normalized domain looked up.
    pub fn domain(&self) -> &str {
        self.domain.as_str()
    }
}

/// A normalized domain (at most 253 ASCII bytes) kept inline, so that a
/// lookup allocates nothing.
#[derive(Clone, Copy)]
struct LookedUpDomain {
    len: u8,
    bytes: [u8; MAX_DOMAIN_LEN],
}

/// The longest normalized domain.
const MAX_DOMAIN_LEN: usize = 253;

impl LookedUpDomain {
    fn new(domain: &str) -> LookedUpDomain {
        let mut bytes = [0; MAX_DOMAIN_LEN];
        // Normalization guarantees the length; a longer text would be cut.
        let len = domain.len().min(MAX_DOMAIN_LEN);
        bytes[..len].copy_from_slice(&domain.as_bytes()[..len]);
        LookedUpDomain {
            len: len as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        // A copy of a normalized (ASCII) domain.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for LookedUpDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Looks up `email_or_domain` (an email address, or a bare domain) in `table`.
///
/// The hot path of the edge: the input is checked exactly like
/// `EmailAddress::parse` / `DomainName::parse` do, but its domain is borrowed
/// when it is already normalized, so a lookup allocates nothing. Then one
/// hash and a probe of one shard of the table (see [`crate::table::Routes`]);
/// the answer shares the route (a reference count).
pub fn lookup_in(table: &Table, email_or_domain: &str) -> Result<Lookup, NameError> {
    let domain = if email_or_domain.contains('@') {
        EmailAddress::normalized_domain(email_or_domain)?
    } else {
        DomainName::normalize(email_or_domain)?
    };
    let route = table.get(&domain);
    Ok(Lookup {
        route: route.cloned(),
        revision: table.revision(),
        ready: table.is_complete(),
        domain: LookedUpDomain::new(&domain),
    })
}

/// State shared by the HTTP handlers, the follower and the state file writer.
pub(crate) struct Shared {
    pub(crate) table: ArcSwap<Table>,
    pub(crate) connected: AtomicBool,
    control_plane: Mutex<Option<String>>,
    applied: broadcast::Sender<AppliedMessage>,
    applied_count: AtomicU64,
}

impl Shared {
    fn new(table: Table) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            connected: AtomicBool::new(false),
            control_plane: Mutex::new(None),
            applied: broadcast::channel(APPLIED_CHANNEL_CAPACITY).0,
            applied_count: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_control_plane(&self, address: String) {
        *self
            .control_plane
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(address);
    }

    pub(crate) fn record_applied(&self, message: AppliedMessage) {
        self.applied_count.fetch_add(1, Ordering::Relaxed);
        // No subscriber is fine.
        let _ = self.applied.send(message);
    }

    pub(crate) fn status(&self) -> EdgeStatus {
        let table = self.table.load();
        EdgeStatus {
            revision: table.revision(),
            store_epoch: table.store_epoch().to_owned(),
            connected: self.connected.load(Ordering::Acquire),
            last_update: table.last_update(),
            route_count: table.len(),
            control_plane: self
                .control_plane
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            ready: table.is_complete(),
        }
    }

    pub(crate) fn lookup(&self, email_or_domain: &str) -> Result<Lookup, NameError> {
        lookup_in(&self.table.load(), email_or_domain)
    }
}

/// A running login edge.
pub struct Edge {
    /// The address the HTTP API is bound to.
    pub local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<()>,
    follower: JoinHandle<()>,
    persister: JoinHandle<()>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("local_addr", &self.local_addr)
            .field("status", &self.status())
            .finish()
    }
}

impl Edge {
    /// Loads the state file (if any), binds the HTTP API and starts following
    /// the control plane. Fails on an unusable config or listen address; a
    /// corrupt state file is logged and ignored (the edge waits for a snapshot).
    pub async fn start(config: EdgeConfig) -> anyhow::Result<Edge> {
        anyhow::ensure!(
            !config.control_planes.is_empty(),
            "at least one control plane address is needed"
        );
        let control_planes = config
            .control_planes
            .iter()
            .map(|address| Ok((address.clone(), follower::endpoint(address)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let authorization = follower::authorization(&config.token)?;

        let state_path = config.state_file.clone();
        let loaded =
            tokio::task::spawn_blocking(move || state_file::load(&state_path, Utc::now())).await?;
        let initial = match loaded {
            Ok(Some(table)) => {
                info!(
                    revision = table.revision(),
                    store_epoch = %table.store_epoch(),
                    routes = table.len(),
                    path = %config.state_file.display(),
                    "routing table loaded from the state file"
                );
                table
            }
            Ok(None) => Table::default(),
            Err(error) => {
                error!(%error, "ignoring the state file; waiting for a snapshot");
                Table::default()
            }
        };
        let shared = Arc::new(Shared::new(initial));

        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);

        let mut http_shutdown = shutdown_rx.clone();
        let router = crate::http::router(shared.clone());
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // Sender dropped counts as shutdown too.
                    let _ = http_shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = served {
                error!(%error, "HTTP server failed");
            }
        });

        let (persist_tx, persist_rx) = watch::channel(PersistHint::default());
        let persister = tokio::spawn(follower::persist(
            shared.clone(),
            config.state_file.clone(),
            persist_rx,
        ));
        let settings = FollowerSettings {
            control_planes,
            authorization,
            min_backoff: config.min_backoff,
            max_backoff: config.max_backoff,
        };
        let follower = tokio::spawn(follower::follow(
            shared.clone(),
            settings,
            persist_tx,
            shutdown_rx,
        ));
        info!(%local_addr, "login edge listening");
        Ok(Edge {
            local_addr,
            shared,
            shutdown,
            http,
            follower,
            persister,
        })
    }

    /// The current table (revision, epoch, routes).
    pub fn table(&self) -> Arc<Table> {
        self.shared.table.load_full()
    }

    /// The same as `GET /v1/status`.
    pub fn status(&self) -> EdgeStatus {
        self.shared.status()
    }

    /// Looks up an email address or a bare domain: one `ArcSwap` load and one
    /// map lookup after normalization.
    pub fn lookup(&self, email_or_domain: &str) -> Result<Lookup, NameError> {
        self.shared.lookup(email_or_domain)
    }

    /// Every message the edge applies from now on, in order.
    pub fn subscribe_applied(&self) -> broadcast::Receiver<AppliedMessage> {
        self.shared.applied.subscribe()
    }

    /// How many stream messages the edge has applied since it started.
    pub fn applied_messages(&self) -> u64 {
        self.shared.applied_count.load(Ordering::Relaxed)
    }

    /// Stops the HTTP API and the follower, then writes the state file if the
    /// table moved since the last write.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.follower.await {
            warn!(%error, "follower task failed");
        }
        // The follower's end dropped the persister's hint sender: it flushes and ends.
        if let Err(error) = self.persister.await {
            warn!(%error, "state file task failed");
        }
        let mut http = self.http;
        if tokio::time::timeout(HTTP_DRAIN_TIMEOUT, &mut http)
            .await
            .is_err()
        {
            warn!("HTTP connections did not finish in time; closing them");
            http.abort();
        }
        info!("login edge stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::saml_route;

    fn table() -> Table {
        Table::from_wire_routes([saml_route("acme.com")], 4, "e".to_owned(), None).unwrap()
    }

    #[test]
    fn lookups_normalize_like_the_names_crate() {
        let table = table();
        for input in [
            "jane@acme.com",
            " Jane.Doe@ACME.com. ",
            "acme.com",
            "Acme.COM",
        ] {
            let lookup = lookup_in(&table, input).unwrap();
            assert_eq!(lookup.domain(), "acme.com", "{input}");
            assert_eq!(lookup.route.unwrap().domain(), "acme.com");
            assert_eq!((lookup.revision, lookup.ready), (4, true));
        }
        let miss = lookup_in(&table, "bob@globex.com").unwrap();
        assert!(miss.route.is_none());
        assert_eq!(miss.domain(), "globex.com");
        let long = format!("a@{}.com", vec!["b".repeat(63); 3].join("."));
        assert_eq!(lookup_in(&table, &long).unwrap().domain(), &long[2..]);
        for invalid in ["jane@@acme.com", "jane@acme", "ja ne@acme.com", "@acme.com"] {
            assert_eq!(
                lookup_in(&table, invalid).unwrap_err(),
                EmailAddress::parse(invalid).unwrap_err(),
                "{invalid}"
            );
        }
        assert_eq!(
            lookup_in(&table, "1.2.3.4").unwrap_err(),
            DomainName::parse("1.2.3.4").unwrap_err()
        );
    }
}
