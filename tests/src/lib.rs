//! Shared helpers for Signpost's end-to-end tests: real servers on loopback,
//! real gRPC, a real data directory on disk.
//!
//! - [`TestServer`]: the control plane in-process on `127.0.0.1:0`, with a
//!   static DNS TXT resolver, a movable clock and the TEST-ONLY loopback http
//!   switch on (so fake IdPs can serve metadata from loopback).
//! - [`ChildServer`]: the real binary as a child process (restarts, the CLI).
//! - [`FakeIdp`]: an HTTP server on loopback serving SAML metadata and an
//!   OIDC discovery document.
//! - [`reason`], [`field`]: the machine-readable parts of an error status.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use signpost::cli::{interceptor, BearerInterceptor};
use signpost::{Overrides, Server, ServerConfig};
use signpost_api::admin::v1 as pb;
use signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient;
use signpost_api::admin::v1::setup_form_service_client::SetupFormServiceClient;
use signpost_api::log::v1 as schema;
use signpost_outbound::StaticTxtResolver;
use tokio::io::AsyncBufReadExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// An admin API client with a bearer token.
pub type AdminClient = ConnectionAdminServiceClient<InterceptedService<Channel, BearerInterceptor>>;
/// A setup form client with a link token.
pub type FormClient = SetupFormServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// A clock tests can move.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    /// Starts at the real time.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Utc::now())))
    }
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    /// Now, on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The machine-readable `ErrorInfo.reason` of a status.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The first `BadRequest` field violation of a status.
pub fn field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// Connects to a gRPC address.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the control plane")
}

/// An admin client using `token`.
pub async fn admin_client(addr: SocketAddr, token: &str) -> AdminClient {
    ConnectionAdminServiceClient::with_interceptor(
        channel(addr).await,
        interceptor(token, None).unwrap(),
    )
}

/// A setup form client using a link token (or a setup URL).
pub async fn form_client(addr: SocketAddr, link: &str) -> FormClient {
    let token = link.rsplit_once('#').map(|(_, t)| t).unwrap_or(link);
    SetupFormServiceClient::with_interceptor(channel(addr).await, interceptor(token, None).unwrap())
}

/// The control plane running in this process.
pub struct TestServer {
    /// The server.
    pub server: Server,
    /// The data directory (kept alive with the server).
    pub dir: tempfile::TempDir,
    /// DNS TXT records the server will see.
    pub txt: StaticTxtResolver,
    /// The server's clock.
    pub clock: TestClock,
    /// The bootstrap admin token.
    pub admin_token: String,
}

impl TestServer {
    /// Starts a fresh control plane on loopback.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a fresh control plane on loopback after `tweak` has adjusted the
    /// test configuration (e.g. to turn the TEST-ONLY loopback http switch off
    /// and see the production default).
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.public_base_url = "https://signpost.test/".parse().unwrap();
        config.allow_loopback_http_idp_for_tests = true;
        tweak(&mut config);
        let txt = StaticTxtResolver::new();
        let clock = TestClock::new();
        let clock_for_server = clock.clone();
        let server = Server::start(
            &config,
            Overrides {
                txt_resolver: Some(Arc::new(txt.clone())),
                clock: Some(Arc::new(move || clock_for_server.now())),
            },
        )
        .await
        .expect("start the control plane");
        let admin_token = std::fs::read_to_string(server.bootstrap_token_file.as_ref().unwrap())
            .unwrap()
            .trim()
            .to_owned();
        Self {
            server,
            dir,
            txt,
            clock,
            admin_token,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    /// An admin client with the bootstrap token.
    pub async fn admin(&self) -> AdminClient {
        admin_client(self.addr(), &self.admin_token).await
    }

    /// A setup form client for a link URL or token.
    pub async fn form(&self, link: &str) -> FormClient {
        form_client(self.addr(), link).await
    }

    /// The log head position.
    pub fn head(&self) -> u64 {
        self.server.plane.store().head().position
    }

    /// Every event in the log, in position order.
    pub async fn events(&self) -> Vec<schema::EventEnvelope> {
        self.server
            .plane
            .store()
            .read_range(1, 100_000)
            .await
            .unwrap()
    }
}

/// Path of the `signpost` binary under test (usable in integration tests only).
#[macro_export]
macro_rules! signpost_binary {
    () => {
        env!("CARGO_BIN_EXE_signpost-e2e-server")
    };
}

/// The real binary, as a child process.
pub struct ChildServer {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl ChildServer {
    /// Starts `signpost serve` (the binary at `binary`, see [`signpost_binary!`])
    /// on `data_dir` with a free loopback port.
    pub async fn start(binary: &str, data_dir: &Path, extra_args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("SIGNPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the signpost binary");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("signpost listening on ") {
                    return addr.trim().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server starts within 60 s");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
        }
    }

    /// The bootstrap admin token written in the data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("bootstrap-admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Stops it with SIGKILL (no graceful shutdown: acknowledged writes must survive anyway).
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }
}

/// The test IdP signing certificate (RSA-2048, SHA-256, valid until 2046).
pub const IDP_CERTIFICATE_PEM: &str =
    include_str!("../../crates/signpost-idp/testdata/rsa2048_sha256.pem");

/// The base64 body of [`IDP_CERTIFICATE_PEM`].
pub fn idp_certificate_base64() -> String {
    IDP_CERTIFICATE_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect()
}

/// SAML IdP metadata with one entity, HTTP-Redirect and HTTP-POST SSO endpoints and the test certificate.
pub fn idp_metadata(entity_id: &str, sso_url: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing">
      <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
    </md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{sso_url}/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#,
        cert = idp_certificate_base64()
    )
}

/// A fake identity provider on loopback: `/saml/metadata` serves SAML
/// metadata, `/.well-known/openid-configuration` an OIDC discovery document
/// whose issuer is the server's own base URL.
pub struct FakeIdp {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub base_url: String,
    /// The entity id in the metadata.
    pub entity_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeIdp {
    /// Starts a fake IdP whose SAML entity id is `entity_id`.
    pub async fn start(entity_id: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let metadata = idp_metadata(entity_id, "https://idp.example.com/sso/saml");
        let discovery = serde_json::json!({
            "issuer": base_url,
            "authorization_endpoint": "https://idp.example.com/oauth2/authorize",
            "token_endpoint": "https://idp.example.com/oauth2/token",
            "jwks_uri": "https://idp.example.com/oauth2/keys",
            "userinfo_endpoint": "https://idp.example.com/oauth2/userinfo",
            "scopes_supported": ["openid", "email", "profile"],
            "code_challenge_methods_supported": ["S256"],
        })
        .to_string();
        let app = axum::Router::new()
            .route(
                "/saml/metadata",
                axum::routing::get(move || async move { metadata }),
            )
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        discovery,
                    )
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url,
            entity_id: entity_id.to_owned(),
            task,
        }
    }

    /// The metadata URL.
    pub fn metadata_url(&self) -> String {
        format!("{}/saml/metadata", self.base_url)
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates an organization with `domain` claimed and verified by DNS TXT.
/// Returns the organization id.
pub async fn organization_with_verified_domain(
    server: &TestServer,
    admin: &mut AdminClient,
    name: &str,
    domain: &str,
) -> String {
    let org = new_organization(admin, name, format!("ext-{name}-{domain}")).await;
    let claim = admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.organization_id.clone(),
            domain: domain.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .domain_claim
        .unwrap();
    server.txt.set(
        &claim.verification_record_name,
        vec![claim.verification_value.clone()],
    );
    admin
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: org.organization_id.clone(),
            domain: domain.into(),
            method: pb::VerifyDomainMethod::Dns as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    org.organization_id
}

/// Issues a setup link; returns (link id, URL, connection id).
pub async fn issue_link(
    admin: &mut AdminClient,
    organization_id: &str,
    intent: schema::SetupIntent,
    connection_id: &str,
) -> (String, String, String) {
    let reply = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: organization_id.into(),
            intent: intent as i32,
            connection_id: connection_id.into(),
            recipient_email: "it-admin@example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let link = reply.setup_link.unwrap();
    (link.setup_link_id, reply.url, link.connection_id)
}

/// A SAML form submission by metadata URL.
pub fn saml_form(metadata_url: &str) -> pb::SubmitSetupFormRequest {
    pb::SubmitSetupFormRequest {
        provider_preset: "okta".into(),
        settings: Some(pb::submit_setup_form_request::Settings::SamlMetadataUrl(
            metadata_url.into(),
        )),
        claim_mapping: Some(schema::ClaimMapping {
            email: "email".into(),
            groups: "groups".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// A SAML form submission with pasted metadata XML.
pub fn saml_xml_form(xml: &str) -> pb::SubmitSetupFormRequest {
    pb::SubmitSetupFormRequest {
        settings: Some(pb::submit_setup_form_request::Settings::SamlMetadataXml(
            xml.into(),
        )),
        ..saml_form("")
    }
}

/// An OIDC form submission.
pub fn oidc_form(issuer: &str, client_secret: &str) -> pb::SubmitSetupFormRequest {
    pb::SubmitSetupFormRequest {
        provider_preset: "generic_oidc".into(),
        settings: Some(pb::submit_setup_form_request::Settings::Oidc(
            pb::OidcForm {
                issuer: issuer.into(),
                client_id: "signpost-client".into(),
                client_secret: client_secret.into(),
                scopes: vec![],
            },
        )),
        claim_mapping: Some(schema::ClaimMapping {
            email: "email".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

// ------------------------------------------------------------------ routing

/// A routing client with a bearer token.
pub type RoutingClient = signpost_api::routing::v1::routing_service_client::RoutingServiceClient<
    InterceptedService<Channel, BearerInterceptor>,
>;

/// A routing client using `token`.
pub async fn routing_client(addr: SocketAddr, token: &str) -> RoutingClient {
    signpost_api::routing::v1::routing_service_client::RoutingServiceClient::with_interceptor(
        channel(addr).await,
        interceptor(token, None).unwrap(),
    )
}

/// Mints an API token with `role`; returns the bearer token.
pub async fn mint_token(admin: &mut AdminClient, role: schema::TokenRole) -> String {
    admin
        .mint_api_token(pb::MintApiTokenRequest {
            name: format!("{role:?} token"),
            role: role as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Assigns the groups `g0`..`g{count - 1}` of `connection_id` the role `r`, one call
/// each: `count` changes of the connection's routes.
pub async fn assign_numbered_groups(admin: &mut AdminClient, connection_id: &str, count: usize) {
    for group in 0..count {
        admin
            .assign_group(pb::AssignGroupRequest {
                connection_id: connection_id.to_owned(),
                idp_group: format!("g{group}"),
                role: "r".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// `acme` (acme.com and acme.org) with an active SAML connection for
/// `https://idp.acme.com/e`: (organization id, connection id, log position after activation).
pub async fn active_acme(admin: &mut AdminClient, addr: SocketAddr) -> (String, String, u64) {
    active_saml_organization(
        admin,
        addr,
        "acme",
        &["acme.com", "acme.org"],
        "https://idp.acme.com/e",
    )
    .await
}

/// The organization "globex", routing globex.com through an active SAML connection: a
/// route of another organization.
pub async fn active_globex(admin: &mut AdminClient, addr: SocketAddr) {
    active_saml_organization(
        admin,
        addr,
        "globex",
        &["globex.com"],
        "https://idp.globex.com/e",
    )
    .await;
}

/// An organization with `domains` verified (manually) and an active SAML
/// connection configured from pasted metadata for `entity_id`.
/// Returns (organization id, connection id, log position after activation).
pub async fn active_saml_organization(
    admin: &mut AdminClient,
    addr: SocketAddr,
    name: &str,
    domains: &[&str],
    entity_id: &str,
) -> (String, String, u64) {
    let org = organization_with_domains(admin, name, domains).await;
    let (_, url, connection) =
        issue_link(admin, &org, schema::SetupIntent::NewConnection, "").await;
    let mut form = form_client(addr, &url).await;
    form.submit_setup_form(saml_xml_form(&idp_metadata(
        entity_id,
        &format!("{entity_id}/sso"),
    )))
    .await
    .unwrap();
    let position = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    (org, connection, position)
}

// ------------------------------------------------------- audit and event feed

/// An audit client with a bearer token.
pub type AuditClient = signpost_api::audit::v1::audit_service_client::AuditServiceClient<
    InterceptedService<Channel, BearerInterceptor>,
>;

/// An audit client using `token`.
pub async fn audit_client(addr: SocketAddr, token: &str) -> AuditClient {
    signpost_api::audit::v1::audit_service_client::AuditServiceClient::with_interceptor(
        channel(addr).await,
        interceptor(token, None).unwrap(),
    )
}

/// An event feed client with a bearer token.
pub type EventLogClient =
    signpost_api::eventlog::v1::event_log_service_client::EventLogServiceClient<
        InterceptedService<Channel, BearerInterceptor>,
    >;

/// An event feed client using `token` over `channel`.
pub fn eventlog_client(channel: Channel, token: &str) -> EventLogClient {
    signpost_api::eventlog::v1::event_log_service_client::EventLogServiceClient::with_interceptor(
        channel,
        interceptor(token, None).unwrap(),
    )
}

/// Mints an auditor token scoped to `organization_id`; returns (token id, bearer token).
pub async fn mint_scoped_auditor(
    admin: &mut AdminClient,
    organization_id: &str,
) -> (String, String) {
    let reply = admin
        .mint_api_token(pb::MintApiTokenRequest {
            name: format!("auditor of {organization_id}"),
            role: schema::TokenRole::Auditor as i32,
            organization_scope: organization_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (reply.api_token.unwrap().token_id, reply.token)
}

/// The real binary as a child process whose log lines (stderr) are kept.
pub struct LoggedChildServer {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl LoggedChildServer {
    /// Starts `signpost serve` on `data_dir` with `SIGNPOST_LOG=<log_filter>`.
    pub async fn start(
        binary: &str,
        data_dir: &Path,
        extra_args: &[&str],
        log_filter: &str,
    ) -> Self {
        let mut child = tokio::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("SIGNPOST_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the signpost binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (found, listening) = tokio::sync::oneshot::channel();
        let kept = log.clone();
        tokio::spawn(async move {
            let mut found = Some(found);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("signpost listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(addr.trim().parse::<SocketAddr>().unwrap());
                    }
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(std::time::Duration::from_secs(60), listening)
            .await
            .expect("the server starts within 60 s")
            .expect("the server exited before listening");
        Self { child, addr, log }
    }

    /// Everything it logged so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Stops it with SIGKILL.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }
}

/// Runs `signpost serve` on `data_dir` expecting it to exit on its own (within 60 s);
/// returns whether it succeeded and its stderr.
pub async fn run_server_until_exit(binary: &str, data_dir: &Path) -> (bool, String) {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("SIGNPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server exits within 60 s")
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ------------------------------------------------------------- login edge

/// A loopback port that was free a moment ago (bind `127.0.0.1:0`, read the
/// port, drop the listener), for a child server that must come back on the
/// same address after a restart.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ChildServer {
    /// Like [`ChildServer::start`], but listening on `127.0.0.1:<port>`, so a
    /// restarted server is reachable at the same address.
    pub async fn start_on(binary: &str, data_dir: &Path, port: u16, extra_args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(binary)
            .args(["serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env("SIGNPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the signpost binary");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let mut seen = Vec::new();
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("signpost listening on ") {
                    return addr.trim().parse::<SocketAddr>().unwrap();
                }
                seen.push(line);
            }
            panic!("the server exited before listening:\n{}", seen.join("\n"));
        })
        .await
        .expect("the server starts within 60 s");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
        }
    }
}

// ---------------------------------------------------------------- readers

/// Reads a connection (panics if the call fails).
pub async fn get_connection(admin: &mut AdminClient, connection_id: &str) -> pb::Connection {
    let request = pb::GetConnectionRequest {
        connection_id: connection_id.into(),
        ..Default::default()
    };
    admin
        .get_connection(request)
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap()
}

/// Reads an organization (panics if the call fails).
pub async fn get_organization(admin: &mut AdminClient, organization_id: &str) -> pb::Organization {
    let request = pb::GetOrganizationRequest {
        organization_id: organization_id.into(),
    };
    admin
        .get_organization(request)
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
}

/// Reads a setup link (panics if the call fails).
pub async fn get_setup_link(admin: &mut AdminClient, setup_link_id: &str) -> pb::SetupLink {
    let request = pb::GetSetupLinkRequest {
        setup_link_id: setup_link_id.into(),
    };
    admin
        .get_setup_link(request)
        .await
        .unwrap()
        .into_inner()
        .setup_link
        .unwrap()
}

/// A scripted set of route changes (used while a watcher or an edge is away): a group
/// assigned on `connection_id`, a new organization "two" with two routed domains, and
/// an organization "three" activated then deactivated (its domain ends on password).
pub async fn routing_changes_while_away(
    admin: &mut AdminClient,
    addr: SocketAddr,
    connection_id: &str,
) {
    let group = pb::AssignGroupRequest {
        connection_id: connection_id.into(),
        idp_group: "Partners".into(),
        role: "admin".into(),
        ..Default::default()
    };
    admin.assign_group(group).await.unwrap();
    active_saml_organization(
        admin,
        addr,
        "two",
        &["two.com", "two.org"],
        "https://idp-two.example.com/e",
    )
    .await;
    let (_, three, _) = active_saml_organization(
        admin,
        addr,
        "three",
        &["three.com"],
        "https://idp-three.example.com/e",
    )
    .await;
    let deactivate = pb::DeactivateConnectionRequest {
        connection_id: three,
        ..Default::default()
    };
    admin.deactivate_connection(deactivate).await.unwrap();
}

/// Creates an organization (external id `ext-<name>`) with `domains` claimed and verified
/// manually; returns its id.
pub async fn organization_with_domains(
    admin: &mut AdminClient,
    name: &str,
    domains: &[&str],
) -> String {
    let org = new_organization(admin, name, format!("ext-{name}"))
        .await
        .organization_id;
    for domain in domains {
        admin
            .claim_domain(pb::ClaimDomainRequest {
                organization_id: org.clone(),
                domain: (*domain).into(),
                ..Default::default()
            })
            .await
            .unwrap();
        admin
            .verify_domain(pb::VerifyDomainRequest {
                organization_id: org.clone(),
                domain: (*domain).into(),
                method: pb::VerifyDomainMethod::Manual as i32,
                note: "test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    org
}
/// Creates an organization (panics if the call fails).
pub async fn new_organization(
    admin: &mut AdminClient,
    display_name: impl Into<String>,
    external_id: impl Into<String>,
) -> pb::Organization {
    let request = pb::CreateOrganizationRequest {
        display_name: display_name.into(),
        external_id: external_id.into(),
        request_id: String::new(),
    };
    admin
        .create_organization(request)
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
}

/// A client codec that sends its bytes as the request message, as they are, and reads
/// `T`s: requests no generated client would send.
#[derive(Debug)]
pub struct RawRequest<T>(std::marker::PhantomData<T>);

impl<T> Default for RawRequest<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct ResponseDecoder<T>(std::marker::PhantomData<T>);

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl<T: prost::Message + Default + Send + 'static> tonic::codec::Decoder for ResponseDecoder<T> {
    type Item = T;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<T>, tonic::Status> {
        T::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl<T: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawRequest<T> {
    type Encode = Vec<u8>;
    type Decode = T;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder<T>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder<T> {
        ResponseDecoder(std::marker::PhantomData)
    }
}

/// A raw client of `RoutingService` at `addr`, authenticated with `token`.
pub async fn raw_client(
    addr: SocketAddr,
    token: &str,
    compressed: bool,
) -> tonic::client::Grpc<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor,
    >,
> {
    let service = tonic::service::interceptor::InterceptedService::new(
        channel(addr).await,
        signpost::cli::interceptor(token, None).unwrap(),
    );
    let mut grpc = tonic::client::Grpc::new(service);
    if compressed {
        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    grpc
}

/// Calls unary `path` (`/package.Service/Method`) with `message` as the request's bytes,
/// as they are (gzip-compressed when `compressed`), and reads a `T`.
pub async fn unary_raw<T: prost::Message + Default + Send + 'static>(
    addr: SocketAddr,
    token: &str,
    path: &'static str,
    message: Vec<u8>,
    compressed: bool,
) -> Result<T, tonic::Status> {
    let mut grpc = raw_client(addr, token, compressed).await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let call = grpc.unary(tonic::Request::new(message), path, RawRequest::default());
    tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("an answer within 20 s")
        .map(tonic::Response::into_inner)
}
