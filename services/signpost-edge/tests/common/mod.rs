//! Shared helpers: a scripted in-process `RoutingService`, route builders and
//! an edge started against it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signpost_api::log::v1 as log;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_server::{RoutingService, RoutingServiceServer};
use signpost_api::routing::v1::watch_routes_response::Kind;
use signpost_edge::{AppliedMessage, Edge, EdgeConfig};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

pub const EPOCH: &str = "epoch-test";
pub const TOKEN: &str = "edge-token-123";

/// What one `WatchRoutes` call asked for.
#[derive(Debug, Clone)]
pub struct WatchCall {
    pub request: wire::WatchRoutesRequest,
    pub authorization: Option<String>,
}

type Script = mpsc::UnboundedReceiver<Result<wire::WatchRoutesResponse, Status>>;

#[derive(Clone)]
struct FakeRouting {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    calls: mpsc::UnboundedSender<WatchCall>,
}

#[tonic::async_trait]
impl RoutingService for FakeRouting {
    async fn resolve(
        &self,
        _request: Request<wire::ResolveRequest>,
    ) -> Result<Response<wire::ResolveResponse>, Status> {
        Err(Status::unimplemented("the fake serves WatchRoutes only"))
    }

    type WatchRoutesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<wire::WatchRoutesResponse, Status>> + Send>>;

    async fn watch_routes(
        &self,
        request: Request<wire::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let _ = self.calls.send(WatchCall {
            request: request.into_inner(),
            authorization,
        });
        let script = self.scripts.lock().unwrap().pop_front();
        match script {
            Some(script) => Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
                script,
            )))),
            None => Err(Status::unavailable("no scripted stream")),
        }
    }
}

/// An in-process control plane whose streams the test writes by hand.
pub struct FakeControlPlane {
    pub address: String,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    pub calls: mpsc::UnboundedReceiver<WatchCall>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeControlPlane {
    pub async fn start() -> FakeControlPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let scripts = Arc::new(Mutex::new(VecDeque::new()));
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let service = FakeRouting {
            scripts: scripts.clone(),
            calls: calls_tx,
        };
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RoutingServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        FakeControlPlane {
            address,
            scripts,
            calls,
            server,
        }
    }

    /// Queues the stream the next `WatchRoutes` call gets; dropping the
    /// returned sender ends that stream.
    pub fn next_stream(&self) -> ScriptedStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.scripts.lock().unwrap().push_back(rx);
        ScriptedStream { tx }
    }

    /// The next `WatchRoutes` call (waits up to 10 s).
    pub async fn next_call(&mut self) -> WatchCall {
        tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
            .await
            .expect("the edge called WatchRoutes in time")
            .expect("the fake is running")
    }

    pub fn stop(&self) {
        self.server.abort();
    }
}

/// The sending side of one scripted stream.
pub struct ScriptedStream {
    tx: mpsc::UnboundedSender<Result<wire::WatchRoutesResponse, Status>>,
}

impl ScriptedStream {
    pub fn send(&self, revision: u64, kind: Kind) {
        self.tx
            .send(Ok(wire::WatchRoutesResponse {
                revision,
                store_epoch: EPOCH.to_owned(),
                kind: Some(kind),
            }))
            .expect("the stream is open");
    }

    pub fn snapshot(&self, revision: u64, routes: Vec<wire::Route>) {
        let count = routes.len() as u64;
        if !routes.is_empty() {
            self.send(revision, Kind::Snapshot(wire::SnapshotChunk { routes }));
        }
        self.send(
            revision,
            Kind::SnapshotEnd(wire::SnapshotEnd { route_count: count }),
        );
    }

    pub fn delta(&self, revision: u64, upserts: Vec<wire::Route>, deletes: &[&str]) {
        self.send(
            revision,
            Kind::Delta(wire::RouteDelta {
                upserts,
                deletes: deletes.iter().map(|d| d.to_string()).collect(),
            }),
        );
    }

    pub fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status));
    }
}

pub fn saml_route(domain: &str) -> wire::Route {
    wire::Route {
        domain: domain.to_owned(),
        organization_id: "org_acme".to_owned(),
        organization_external_id: "acme-ext".to_owned(),
        connection_id: "conn_saml".to_owned(),
        protocol: log::Protocol::Saml as i32,
        saml: Some(wire::SamlRoute {
            idp_entity_id: "https://idp.acme.example/entity".to_owned(),
            idp_sso_url: "https://idp.acme.example/sso/saml?app=42".to_owned(),
            idp_sso_binding: log::SamlBinding::HttpRedirect as i32,
            signing_certificates: vec![],
            sp_entity_id: "https://signpost.example/saml/conn_saml".to_owned(),
            acs_url: "https://signpost.example/saml/conn_saml/acs".to_owned(),
        }),
        sso_policy: log::SsoPolicy::Optional as i32,
        ..Default::default()
    }
}

pub fn oidc_route(domain: &str) -> wire::Route {
    wire::Route {
        domain: domain.to_owned(),
        organization_id: "org_globex".to_owned(),
        organization_external_id: "globex-ext".to_owned(),
        connection_id: "conn_oidc".to_owned(),
        protocol: log::Protocol::Oidc as i32,
        oidc: Some(wire::OidcRoute {
            issuer: "https://login.globex.example".to_owned(),
            authorization_endpoint: "https://login.globex.example/oauth2/authorize".to_owned(),
            client_id: "signpost-client".to_owned(),
            scopes: vec![
                "openid".to_owned(),
                "email".to_owned(),
                "profile".to_owned(),
            ],
            redirect_uri: "https://signpost.example/oidc/conn_oidc/callback".to_owned(),
        }),
        sso_policy: log::SsoPolicy::Enforced as i32,
        ..Default::default()
    }
}

pub fn config(control_plane: &str, state_file: PathBuf) -> EdgeConfig {
    EdgeConfig {
        control_planes: vec![control_plane.to_owned()],
        token: TOKEN.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_file,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

/// Waits for the next applied message.
pub async fn next_applied(applied: &mut broadcast::Receiver<AppliedMessage>) -> AppliedMessage {
    tokio::time::timeout(Duration::from_secs(10), applied.recv())
        .await
        .expect("a message was applied in time")
        .expect("the channel is open")
}

/// Polls until `condition` holds (10 s at most).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn start_edge(control_plane: &str, state_file: PathBuf) -> Edge {
    Edge::start(config(control_plane, state_file))
        .await
        .unwrap()
}
