//! The login edge end to end: a real control plane (in-process, or the real
//! binary as a child process), a real `Edge` following it over real gRPC with
//! an `edge`-role token, and the sign-in page's calls over real HTTP.
//!
//! Nothing here sleeps a fixed time or asserts a duration: every wait polls
//! for a condition until a generous deadline.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use flate2::read::DeflateDecoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;
use signpost_api::routing::v1 as wire;
use signpost_e2e::*;
use signpost_edge::{lookup_in, AppliedMessage, Edge, EdgeConfig, MessageKind};
use tokio::sync::broadcast;
use url::Url;

/// How long any convergence may take before a test gives up.
const DEADLINE: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ helpers

/// Starts an edge following `control_plane` (`host:port`) with `token`,
/// HTTP on a free loopback port, its state in `state_file`, small backoff.
async fn start_edge(control_plane: SocketAddr, token: &str, state_file: &Path) -> Edge {
    let mut config = EdgeConfig::new(vec![format!("http://{control_plane}")], token);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.state_file = state_file.to_owned();
    config.min_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(500);
    Edge::start(config).await.expect("start the edge")
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the edge holds a table at `revision` or later.
async fn converged(edge: &Edge, revision: u64) {
    eventually(&format!("the edge to reach revision {revision}"), || {
        let status = edge.status();
        (status.ready && status.revision >= revision).then_some(())
    })
    .await
}

/// An HTTP client that keeps no idle connections (so stopping an edge never
/// waits for them).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `POST /v1/discover` with `body`; returns the status and the raw body.
async fn discover_raw(edge: SocketAddr, body: String) -> (reqwest::StatusCode, String) {
    let response = http()
        .post(format!("http://{edge}/v1/discover"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the edge answers over HTTP");
    (response.status(), response.text().await.unwrap())
}

/// `POST /v1/discover {"email": email}` that must succeed; returns the answer.
async fn discover(edge: SocketAddr, email: &str) -> Value {
    let (status, body) = discover_raw(edge, json!({ "email": email }).to_string()).await;
    assert_eq!(status, 200, "discover {email}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `GET path` on the edge; returns the status and the JSON body.
async fn get(edge: SocketAddr, path: &str) -> (reqwest::StatusCode, Value) {
    let response = http()
        .get(format!("http://{edge}{path}"))
        .send()
        .await
        .expect("the edge answers over HTTP");
    (response.status(), response.json().await.unwrap())
}

/// The edge's routes, as the control plane sent them, by domain.
fn route_map(edge: &Edge) -> BTreeMap<String, wire::Route> {
    edge.table()
        .routes()
        .iter()
        .map(|(domain, route)| (domain.to_owned(), route.as_wire()))
        .collect()
}

/// Stages a switch to a new SAML IdP and switches to it; returns
/// (new connection id, log position of the switch).
async fn switch_to_new_saml_idp(
    admin: &mut AdminClient,
    addr: SocketAddr,
    org: &str,
    entity_id: &str,
) -> (String, u64) {
    let (_, url, new) = issue_link(admin, org, schema::SetupIntent::StageSwitch, "").await;
    form_client(addr, &url)
        .await
        .submit_setup_form(saml_xml_form(&idp_metadata(
            entity_id,
            &format!("{entity_id}/sso"),
        )))
        .await
        .unwrap();
    let switched = admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org.into(),
            connection_id: new.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    (new, switched)
}

/// Subscribes to the messages a just-started edge applies, checking that
/// none was applied before the subscription (so the test sees them all).
fn subscribe_from_the_start(edge: &Edge) -> broadcast::Receiver<AppliedMessage> {
    let applied = edge.subscribe_applied();
    assert_eq!(
        edge.applied_messages(),
        0,
        "the subscription must see every message the edge applies"
    );
    applied
}

/// Every message `applied` has received so far, in order.
fn drain(applied: &mut broadcast::Receiver<AppliedMessage>) -> Vec<AppliedMessage> {
    let mut messages = Vec::new();
    loop {
        match applied.try_recv() {
            Ok(message) => messages.push(message),
            Err(broadcast::error::TryRecvError::Empty) => return messages,
            Err(error) => panic!("the applied-message subscription failed: {error}"),
        }
    }
}

/// The kinds of `messages` other than progress heartbeats.
fn changes(messages: &[AppliedMessage]) -> Vec<MessageKind> {
    messages
        .iter()
        .map(|m| m.kind)
        .filter(|kind| *kind != MessageKind::Progress)
        .collect()
}

/// The value of XML attribute `name` in `xml` (the first occurrence, unescaped).
fn xml_attribute(xml: &str, name: &str) -> String {
    let needle = format!(" {name}=\"");
    let start = xml
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} attribute in {xml}"))
        + needle.len();
    let end = start + xml[start..].find('"').unwrap();
    xml_unescape(&xml[start..end])
}

/// The text of element `<tag>` in `xml` (unescaped).
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml_unescape(&xml[start..end])
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The query parameters of `url` (URL-decoded).
fn query(url: &Url) -> BTreeMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `url` without its query.
fn without_query(url: &Url) -> String {
    let mut base = url.clone();
    base.set_query(None);
    base.into()
}

/// The AuthnRequest XML carried by a SAML HTTP-Redirect URL: URL-decode,
/// base64-decode, raw-inflate.
fn authn_request(url: &Url) -> String {
    let saml_request = query(url)
        .remove("SAMLRequest")
        .expect("a SAMLRequest parameter");
    let deflated = STANDARD
        .decode(saml_request)
        .expect("SAMLRequest is base64");
    let mut xml = String::new();
    DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut xml)
        .expect("SAMLRequest is raw DEFLATE of UTF-8 XML");
    xml
}

fn state_file_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("edge-state.pb")
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn a_saml_connection_sends_users_to_the_idp_with_a_fresh_authn_request() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, connection_id, activated) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    let connection = get_connection(&mut admin, &connection_id).await;
    let sp = connection.service_provider.clone().unwrap();
    let redirect_endpoint = connection
        .saml
        .as_ref()
        .unwrap()
        .sso_endpoints
        .iter()
        .find(|e| e.binding == schema::SamlBinding::HttpRedirect as i32)
        .expect("the metadata has an HTTP-Redirect endpoint")
        .location
        .clone();
    assert_eq!(redirect_endpoint, "https://idp.acme.com/e/sso");

    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(server.addr(), &token, &state_file_in(&dir)).await;
    converged(&edge, activated).await;

    let mut request_ids = Vec::new();
    for _ in 0..2 {
        let answer = discover(edge.local_addr, "Jane.Doe@Acme.COM").await;
        assert_eq!(answer["method"], "sso", "{answer}");
        assert_eq!(answer["protocol"], "saml");
        assert_eq!(answer["domain"], "acme.com");
        assert_eq!(answer["organization_id"], org.as_str());
        assert_eq!(answer["organization_external_id"], "ext-acme");
        assert_eq!(answer["connection_id"], connection_id.as_str());
        assert_eq!(answer["sso_policy"], "optional");
        assert_eq!(answer["password_allowed"], true);
        assert!(answer["revision"].as_u64().unwrap() >= activated);

        let url = Url::parse(answer["redirect_url"].as_str().unwrap()).unwrap();
        assert_eq!(without_query(&url), redirect_endpoint);
        let relay_state = query(&url).remove("RelayState").expect("a RelayState");
        assert!(!relay_state.is_empty());
        assert_eq!(answer["relay_state"], relay_state.as_str());

        let xml = authn_request(&url);
        assert!(xml.starts_with("<samlp:AuthnRequest "), "{xml}");
        assert_eq!(xml_attribute(&xml, "Destination"), redirect_endpoint);
        assert_eq!(
            xml_attribute(&xml, "AssertionConsumerServiceURL"),
            sp.acs_url
        );
        assert_eq!(xml_text(&xml, "saml:Issuer"), sp.entity_id);
        assert_eq!(xml_attribute(&xml, "Version"), "2.0");
        let id = xml_attribute(&xml, "ID");
        assert_eq!(answer["request_id"], id.as_str());
        let issued = chrono::DateTime::parse_from_rfc3339(&xml_attribute(&xml, "IssueInstant"))
            .expect("IssueInstant is an RFC 3339 instant");
        let skew = (chrono::Utc::now() - issued.to_utc()).num_seconds().abs();
        assert!(skew < 300, "IssueInstant {issued} is not close to now");
        request_ids.push(id);
    }
    assert_ne!(
        request_ids[0], request_ids[1],
        "every request has a fresh ID"
    );
    edge.stop().await;
}

#[tokio::test]
async fn an_oidc_connection_sends_users_to_the_discovered_authorization_endpoint_with_pkce() {
    const SECRET: &str = "client-secret-that-must-never-reach-an-edge";
    let server = TestServer::start().await;
    let idp = FakeIdp::start("https://unused.example.com/e").await;
    let mut admin = server.admin().await;
    let org = organization_with_domains(&mut admin, "oidc-firm", &["oidc-firm.com"]).await;
    let (_, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    server
        .form(&url)
        .await
        .submit_setup_form(oidc_form(&idp.base_url, SECRET))
        .await
        .unwrap();
    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    let connection = get_connection(&mut admin, &connection_id).await;
    assert!(connection.oidc.as_ref().unwrap().client_secret_set);
    let redirect_uri = connection.service_provider.unwrap().oidc_redirect_uri;
    assert!(!redirect_uri.is_empty());

    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = state_file_in(&dir);
    let edge = start_edge(server.addr(), &token, &state_file).await;
    converged(&edge, activated).await;

    let mut states = Vec::new();
    for _ in 0..2 {
        let (status, body) = discover_raw(
            edge.local_addr,
            json!({"email": "ann@oidc-firm.com"}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(SECRET), "a discover answer leaks the secret");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["method"], "sso", "{answer}");
        assert_eq!(answer["protocol"], "oidc");
        assert_eq!(answer["connection_id"], connection_id.as_str());

        let url = Url::parse(answer["redirect_url"].as_str().unwrap()).unwrap();
        assert_eq!(
            without_query(&url),
            "https://idp.example.com/oauth2/authorize",
            "the discovered authorization endpoint"
        );
        let params = query(&url);
        let oidc = &answer["oidc"];
        let verifier = oidc["code_verifier"].as_str().unwrap();
        assert!((43..=128).contains(&verifier.len()));
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], "signpost-client");
        assert_eq!(params["redirect_uri"], redirect_uri);
        assert!(params["scope"].split(' ').any(|s| s == "openid"));
        assert_eq!(params["state"], oidc["state"].as_str().unwrap());
        assert_eq!(params["nonce"], oidc["nonce"].as_str().unwrap());
        assert_eq!(
            params["code_challenge"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        );
        assert_eq!(params["code_challenge_method"], "S256");
        assert!(
            !params.contains_key("code_verifier"),
            "the verifier stays with the frontend"
        );
        assert!(!url.as_str().contains(verifier));
        states.push(params["state"].clone());
    }
    assert_ne!(states[0], states[1], "every attempt has a fresh state");

    for route in edge.table().routes().values() {
        assert!(!format!("{:?}", route.as_wire()).contains(SECRET));
    }
    edge.stop().await;
    let saved = std::fs::read(&state_file).expect("the edge wrote its state file");
    assert!(!saved.is_empty());
    assert!(
        !saved
            .windows(SECRET.len())
            .any(|window| window == SECRET.as_bytes()),
        "the state file holds the client secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_switch_reaches_the_edge_as_one_message_and_no_read_ever_mixes_old_and_new() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let domains = ["acme.com", "acme.co.uk", "acme-law.com"];
    let (org, old, activated) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &domains,
        "https://old-idp.example.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let edge = Arc::new(start_edge(server.addr(), &token, &state_file_in(&dir)).await);
    converged(&edge, activated).await;
    let edge_addr = edge.local_addr;
    for domain in domains {
        let answer = discover(edge_addr, &format!("user@{domain}")).await;
        assert_eq!(answer["connection_id"], old.as_str());
    }
    let mut applied = edge.subscribe_applied();
    let subscribed_at = edge.status().revision;

    // Readers of the in-process table, continuously, on their own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let checker = {
        let (edge, stop, reads) = (edge.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            // (revision, connection) each time either changes.
            let mut seen: Vec<(u64, String)> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let table = edge.table();
                let connections: Vec<String> = domains
                    .iter()
                    .map(|domain| {
                        let lookup = lookup_in(&table, &format!("user@{domain}")).unwrap();
                        assert_eq!(lookup.revision, table.revision());
                        lookup
                            .route
                            .expect("every domain stays routed")
                            .connection_id()
                            .to_owned()
                    })
                    .collect();
                assert!(
                    connections.iter().all(|c| *c == connections[0]),
                    "one table read at revision {} mixes connections: {connections:?}",
                    table.revision()
                );
                // The lookup API itself: one consistent answer per call.
                let lookup = edge.lookup(&format!("user@{}", domains[0])).unwrap();
                let point = (table.revision(), connections[0].clone());
                let single = (
                    lookup.revision,
                    lookup.route.unwrap().connection_id().to_owned(),
                );
                for observed in [point, single] {
                    if seen.last() != Some(&observed) {
                        seen.push(observed);
                    }
                }
                reads.fetch_add(1, Ordering::Release);
                std::thread::yield_now();
            }
            seen
        })
    };
    // Discover over HTTP, continuously, on a task.
    let discovered_up_to = Arc::new(AtomicU64::new(0));
    let discovering = {
        let (stop, discovered_up_to) = (stop.clone(), discovered_up_to.clone());
        tokio::spawn(async move {
            let mut answers: Vec<(u64, String)> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                for domain in domains {
                    let answer = discover(edge_addr, &format!("user@{domain}")).await;
                    let revision = answer["revision"].as_u64().unwrap();
                    answers.push((
                        revision,
                        answer["connection_id"].as_str().unwrap().to_owned(),
                    ));
                    discovered_up_to.fetch_max(revision, Ordering::AcqRel);
                }
            }
            answers
        })
    };
    eventually("the readers to start", || {
        (reads.load(Ordering::Acquire) > 0).then_some(())
    })
    .await;

    let (new, switched) = switch_to_new_saml_idp(
        &mut admin,
        server.addr(),
        &org,
        "https://new-idp.example.com/e",
    )
    .await;

    // The edge applies every message up to the switch; the switch is one delta.
    let mut messages = Vec::new();
    while messages
        .last()
        .is_none_or(|m: &AppliedMessage| m.revision < switched)
    {
        let message = tokio::time::timeout(DEADLINE, applied.recv())
            .await
            .expect("the edge applies the switch in time")
            .unwrap();
        messages.push(message);
    }
    let deltas: Vec<&AppliedMessage> = messages
        .iter()
        .filter(|m| m.kind != MessageKind::Progress)
        .collect();
    assert_eq!(deltas.len(), 1, "staging changes no route: {messages:?}");
    let delta = deltas[0];
    assert_eq!(delta.kind, MessageKind::Delta);
    assert_eq!(delta.revision, switched);
    assert_eq!((delta.upserts, delta.deletes), (3, 0));
    assert!(messages.iter().all(|m| m.revision >= subscribed_at));
    let table = edge.table();
    assert!(table.revision() >= switched);
    for domain in domains {
        assert_eq!(table.get(domain).unwrap().connection_id(), new);
    }

    // Let both readers see the new table before they stop.
    let reads_after_switch = reads.load(Ordering::Acquire) + 10;
    eventually("the table readers to read the new table", || {
        (reads.load(Ordering::Acquire) > reads_after_switch || checker.is_finished()).then_some(())
    })
    .await;
    eventually("a concurrent discover answer after the switch", || {
        (discovered_up_to.load(Ordering::Acquire) >= switched || discovering.is_finished())
            .then_some(())
    })
    .await;
    for domain in domains {
        let answer = discover(edge_addr, &format!("user@{domain}")).await;
        assert_eq!(answer["connection_id"], new.as_str());
        assert!(answer["revision"].as_u64().unwrap() >= switched);
    }
    stop.store(true, Ordering::Release);
    let seen = checker.join().expect("no table read mixed old and new");
    let answers = discovering.await.unwrap();

    for (revision, connection) in seen.iter().chain(answers.iter()) {
        let expected = if *revision >= switched { &new } else { &old };
        assert_eq!(
            connection, expected,
            "an answer at revision {revision} (switch at {switched})"
        );
    }
    assert!(seen.iter().any(|(_, c)| *c == old));
    assert!(seen.iter().any(|(_, c)| *c == new));
    assert!(!answers.is_empty());
    Arc::try_unwrap(edge).unwrap().stop().await;
}

#[tokio::test]
async fn a_restarted_edge_resumes_with_only_deltas_and_ends_with_the_fresh_table() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, first, activated) = active_saml_organization(
        &mut admin,
        server.addr(),
        "one",
        &["one.com"],
        "https://idp-one.example.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = state_file_in(&dir);
    let edge = start_edge(server.addr(), &token, &state_file).await;
    converged(&edge, activated).await;
    let left_at = edge.status().revision;
    edge.stop().await;
    let saved = signpost_edge::state_file::load(&state_file, chrono::Utc::now())
        .unwrap()
        .expect("the stopped edge left a state file");
    assert_eq!(saved.revision(), left_at);

    // Changes while the edge is away.
    routing_changes_while_away(&mut admin, server.addr(), &first).await;
    let head = server.head();
    assert!(head > left_at);

    let edge = start_edge(server.addr(), &token, &state_file).await;
    let mut applied = subscribe_from_the_start(&edge);
    assert_eq!(edge.status().revision, left_at, "the state file is loaded");
    assert!(edge.status().ready);
    converged(&edge, head).await;
    let messages = drain(&mut applied);
    let kinds = changes(&messages);
    assert!(!kinds.is_empty(), "the changes arrive as deltas");
    assert!(
        kinds.iter().all(|kind| *kind == MessageKind::Delta),
        "a resume gets only deltas: {messages:?}"
    );
    assert!(messages.windows(2).all(|w| w[0].revision <= w[1].revision));
    assert!(messages.first().unwrap().revision > left_at);

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = start_edge(server.addr(), &token, &state_file_in(&fresh_dir)).await;
    converged(&fresh, head).await;
    assert_eq!(route_map(&edge), route_map(&fresh));
    assert_eq!(edge.status().revision, fresh.status().revision);
    let resumed = route_map(&edge);
    assert_eq!(
        resumed.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["one.com", "two.com", "two.org"]
    );
    assert_eq!(
        resumed["one.com"]
            .group_roles
            .get("Partners")
            .map(String::as_str),
        Some("admin")
    );
    edge.stop().await;
    fresh.stop().await;
}

#[tokio::test]
async fn an_edge_whose_state_is_from_another_store_epoch_gets_a_reset_and_a_snapshot() {
    let first = TestServer::start().await;
    let mut first_admin = first.admin().await;
    let (_, _, activated) = active_saml_organization(
        &mut first_admin,
        first.addr(),
        "first",
        &["first.com"],
        "https://idp-first.example.com/e",
    )
    .await;
    let first_token = mint_token(&mut first_admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = state_file_in(&dir);
    let edge = start_edge(first.addr(), &first_token, &state_file).await;
    converged(&edge, activated).await;
    let first_epoch = edge.status().store_epoch;
    assert_eq!(first_epoch, first.server.routing.epoch());
    edge.stop().await;

    let second = TestServer::start().await;
    let mut second_admin = second.admin().await;
    let (_, second_connection, _) = active_saml_organization(
        &mut second_admin,
        second.addr(),
        "second",
        &["second.com", "second.org"],
        "https://idp-second.example.com/e",
    )
    .await;
    let second_token = mint_token(&mut second_admin, schema::TokenRole::Edge).await;
    let second_epoch = second.server.routing.epoch().to_owned();
    assert_ne!(first_epoch, second_epoch);

    let edge = start_edge(second.addr(), &second_token, &state_file).await;
    let mut applied = subscribe_from_the_start(&edge);
    assert_eq!(
        edge.status().store_epoch,
        first_epoch,
        "the state file is loaded"
    );
    eventually("the edge to hold the second store's table", || {
        let status = edge.status();
        (status.store_epoch == second_epoch && status.revision >= second.head()).then_some(())
    })
    .await;
    let messages = drain(&mut applied);
    let kinds = changes(&messages);
    assert_eq!(kinds.first(), Some(&MessageKind::Reset), "{messages:?}");
    let end = kinds
        .iter()
        .position(|kind| *kind == MessageKind::SnapshotEnd)
        .expect("a snapshot follows the reset");
    assert!(kinds[1..end]
        .iter()
        .all(|kind| *kind == MessageKind::Snapshot));

    let routes = route_map(&edge);
    assert_eq!(
        routes.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["second.com", "second.org"]
    );
    assert!(routes
        .values()
        .all(|r| r.connection_id == second_connection));
    let answer = discover(edge.local_addr, "a@first.com").await;
    assert_eq!(answer, json!({ "method": "password" }));
    edge.stop().await;
}

/// An edge that stopped, then resumes behind changes the server no longer holds as
/// deltas nor remembers (`catch_up_routes`: 1 changed route, and another organization's
/// route changed last) or does remember (the default).
async fn an_edge_resumes_behind_the_deltas_kept(catch_up_routes: usize) -> Vec<AppliedMessage> {
    let server = TestServer::start_with(|config| {
        config.routing_history = 2;
        config.routing_catch_up_routes = catch_up_routes;
    })
    .await;
    let mut admin = server.admin().await;
    let (_, connection, activated) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = state_file_in(&dir);
    let edge = start_edge(server.addr(), &token, &state_file).await;
    converged(&edge, activated).await;
    edge.stop().await;

    assign_numbered_groups(&mut admin, &connection, 5).await;
    active_globex(&mut admin, server.addr()).await;
    let head = server.head();

    let edge = start_edge(server.addr(), &token, &state_file).await;
    let mut applied = subscribe_from_the_start(&edge);
    converged(&edge, head).await;
    let messages = drain(&mut applied);
    let routes = route_map(&edge);
    assert_eq!(routes["acme.com"].group_roles.len(), 5);
    assert!(routes.contains_key("globex.com"));
    edge.stop().await;
    messages
}

#[tokio::test]
async fn an_edge_resuming_behind_the_deltas_kept_catches_up_in_one_delta() {
    let messages = an_edge_resumes_behind_the_deltas_kept(65_536).await;
    assert_eq!(changes(&messages), [MessageKind::Delta], "{messages:?}");
}

#[tokio::test]
async fn an_edge_resuming_from_history_no_longer_kept_gets_a_reset_and_a_snapshot() {
    let messages = an_edge_resumes_behind_the_deltas_kept(1).await;
    let kinds = changes(&messages);
    assert_eq!(kinds.first(), Some(&MessageKind::Reset), "{messages:?}");
    assert!(kinds.contains(&MessageKind::SnapshotEnd), "{messages:?}");
}

#[tokio::test]
async fn the_edge_keeps_answering_while_the_control_plane_is_down_and_converges_when_it_returns() {
    let data = tempfile::tempdir().unwrap();
    let port = free_loopback_port();
    let control_plane = ChildServer::start_on(signpost_binary!(), data.path(), port, &[]).await;
    let admin_token = control_plane.admin_token();
    let mut admin = admin_client(control_plane.addr, &admin_token).await;
    let (org, connection, activated) = active_saml_organization(
        &mut admin,
        control_plane.addr,
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = state_file_in(&dir);
    let edge = start_edge(control_plane.addr, &token, &state_file).await;
    converged(&edge, activated).await;
    eventually("the edge to report its stream", || {
        edge.status().connected.then_some(())
    })
    .await;
    let epoch = edge.status().store_epoch;
    assert_eq!(
        discover(edge.local_addr, "a@acme.com").await["connection_id"],
        connection.as_str()
    );

    drop(admin);
    control_plane.kill().await;
    eventually("the edge to notice the control plane is gone", || {
        (!edge.status().connected).then_some(())
    })
    .await;
    let (status, body) = get(edge.local_addr, "/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["connected"], false);
    assert_eq!(body["ready"], true);
    assert_eq!(body["route_count"], 1);
    let answer = discover(edge.local_addr, "a@acme.com").await;
    assert_eq!(answer["method"], "sso");
    assert_eq!(answer["connection_id"], connection.as_str());

    // The edge restarts while the control plane is still down.
    edge.stop().await;
    let edge = start_edge(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &token,
        &state_file,
    )
    .await;
    let (status, _) = get(edge.local_addr, "/readyz").await;
    assert_eq!(status, 200, "ready from the state file");
    let (status, _) = get(edge.local_addr, "/healthz").await;
    assert_eq!(status, 200);
    let answer = discover(edge.local_addr, "a@acme.com").await;
    assert_eq!(answer["method"], "sso");
    assert_eq!(answer["connection_id"], connection.as_str());
    let (_, body) = get(edge.local_addr, "/v1/status").await;
    assert_eq!(body["connected"], false);
    assert_eq!(body["revision"].as_u64(), Some(edge.status().revision));

    // The control plane comes back on the same address and data directory.
    let control_plane = ChildServer::start_on(signpost_binary!(), data.path(), port, &[]).await;
    let mut admin = admin_client(control_plane.addr, &admin_token).await;
    let enforced = admin
        .set_sso_policy(pb::SetSsoPolicyRequest {
            organization_id: org,
            policy: schema::SsoPolicy::Enforced as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    converged(&edge, enforced).await;
    eventually("the edge to report its stream again", || {
        edge.status().connected.then_some(())
    })
    .await;
    assert_eq!(
        edge.status().store_epoch,
        epoch,
        "same data directory, same epoch"
    );
    let answer = discover(edge.local_addr, "a@acme.com").await;
    assert_eq!(answer["sso_policy"], "enforced");
    assert_eq!(answer["password_allowed"], false);
    edge.stop().await;
    control_plane.kill().await;
}

#[tokio::test]
async fn deactivation_and_domain_release_route_to_password_and_the_enforced_policy_reaches_the_edge(
) {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, connection, activated) = active_acme(&mut admin, server.addr()).await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(server.addr(), &token, &state_file_in(&dir)).await;
    converged(&edge, activated).await;
    for email in ["a@acme.com", "b@acme.org"] {
        let answer = discover(edge.local_addr, email).await;
        assert_eq!(answer["method"], "sso");
        assert_eq!(answer["sso_policy"], "optional");
        assert_eq!(answer["password_allowed"], true);
    }

    let enforced = admin
        .set_sso_policy(pb::SetSsoPolicyRequest {
            organization_id: org.clone(),
            policy: schema::SsoPolicy::Enforced as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    converged(&edge, enforced).await;
    for email in ["a@acme.com", "b@acme.org"] {
        let answer = discover(edge.local_addr, email).await;
        assert_eq!(answer["method"], "sso");
        assert_eq!(answer["sso_policy"], "enforced");
        assert_eq!(answer["password_allowed"], false);
    }

    let released = admin
        .release_domain(pb::ReleaseDomainRequest {
            organization_id: org.clone(),
            domain: "acme.org".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    converged(&edge, released).await;
    assert_eq!(
        discover(edge.local_addr, "b@acme.org").await,
        json!({ "method": "password" })
    );
    assert_eq!(
        discover(edge.local_addr, "a@acme.com").await["method"],
        "sso"
    );

    let deactivated = admin
        .deactivate_connection(pb::DeactivateConnectionRequest {
            connection_id: connection,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    converged(&edge, deactivated).await;
    assert_eq!(
        discover(edge.local_addr, "a@acme.com").await,
        json!({ "method": "password" })
    );
    assert_eq!(edge.status().route_count, 0);
    edge.stop().await;
}

#[tokio::test]
async fn a_malformed_email_is_refused_with_a_reason_and_an_unknown_domain_signs_in_with_a_password()
{
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, _, activated) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(server.addr(), &token, &state_file_in(&dir)).await;
    converged(&edge, activated).await;

    let malformed = [
        json!({ "email": "not an email" }).to_string(),
        json!({ "email": "jane@" }).to_string(),
        json!({ "email": "@acme.com" }).to_string(),
        json!({ "email": "jane@acme..com" }).to_string(),
        json!({ "email": "jane@ac me.com" }).to_string(),
        json!({ "email": "" }).to_string(),
        json!({ "mail": "jane@acme.com" }).to_string(),
        "{not json".to_owned(),
    ];
    for body in malformed {
        let (status, text) = discover_raw(edge.local_addr, body.clone()).await;
        assert_eq!(status, 400, "{body} → {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"], "EMAIL_INVALID", "{body} → {text}");
        assert!(
            !answer["message"].as_str().unwrap_or("").is_empty(),
            "{body} → a reason"
        );
    }

    assert_eq!(
        discover(edge.local_addr, "someone@nobody.example").await,
        json!({ "method": "password" })
    );
    assert_eq!(
        discover(edge.local_addr, "someone@ACME.com").await["method"],
        "sso"
    );
    edge.stop().await;
}

#[tokio::test]
async fn an_edge_without_any_table_is_not_ready_and_does_not_guess_password() {
    // Nothing listens on this port: the edge never gets a snapshot.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(nowhere, "edge-token", &state_file_in(&dir)).await;
    let (status, _) = get(edge.local_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = get(edge.local_addr, "/readyz").await;
    assert_eq!(status, 503);
    let (status, body) =
        discover_raw(edge.local_addr, json!({"email": "a@acme.com"}).to_string()).await;
    assert_eq!(status, 503, "{body}");
    let (_, status_body) = get(edge.local_addr, "/v1/status").await;
    assert_eq!(status_body["ready"], false);
    assert_eq!(status_body["connected"], false);
    edge.stop().await;
}
