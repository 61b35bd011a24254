//! `POST /v1/discover` and the status endpoints over real HTTP.

mod common;

use std::collections::HashMap;
use std::io::Read;

use base64::Engine;
use common::*;
use serde_json::Value;
use sha2::Digest;

struct Running {
    edge: signpost_edge::Edge,
    _control_plane: FakeControlPlane,
    _stream: ScriptedStream,
    _directory: tempfile::TempDir,
    client: reqwest::Client,
}

impl Running {
    async fn start() -> Running {
        let mut control_plane = FakeControlPlane::start().await;
        let stream = control_plane.next_stream();
        let directory = tempfile::tempdir().unwrap();
        let edge = start_edge(&control_plane.address, directory.path().join("state.pb")).await;
        control_plane.next_call().await;
        stream.snapshot(17, vec![saml_route("acme.com"), oidc_route("globex.com")]);
        eventually("the snapshot", || edge.table().is_complete()).await;
        Running {
            edge,
            _control_plane: control_plane,
            _stream: stream,
            _directory: directory,
            client: reqwest::Client::new(),
        }
    }

    async fn discover(&self, body: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("http://{}/v1/discover", self.edge.local_addr))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_saml_domain_gets_an_authn_request_redirect() {
    let running = Running::start().await;
    let (status, body) = running.discover(r#"{"email":"Jane.Doe@ACME.com"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "sso");
    assert_eq!(body["protocol"], "saml");
    assert_eq!(body["organization_id"], "org_acme");
    assert_eq!(body["organization_external_id"], "acme-ext");
    assert_eq!(body["connection_id"], "conn_saml");
    assert_eq!(body["sso_policy"], "optional");
    assert_eq!(body["password_allowed"], true);
    assert_eq!(body["revision"], 17);
    let redirect = body["redirect_url"].as_str().unwrap();
    assert!(redirect.starts_with("https://idp.acme.example/sso/saml?app=42&SAMLRequest="));
    let params = query(redirect);
    assert_eq!(params["RelayState"], body["relay_state"].as_str().unwrap());
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(&params["SAMLRequest"])
        .unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut xml)
        .unwrap();
    let request_id = body["request_id"].as_str().unwrap();
    assert!(xml.contains(&format!(r#"ID="{request_id}""#)));
    assert!(xml.contains(r#"Destination="https://idp.acme.example/sso/saml?app=42""#));
    assert!(xml
        .contains(r#"AssertionConsumerServiceURL="https://signpost.example/saml/conn_saml/acs""#));
    assert!(xml.contains("<saml:Issuer>https://signpost.example/saml/conn_saml</saml:Issuer>"));
}

#[tokio::test]
async fn an_oidc_domain_gets_an_authorization_redirect_with_pkce() {
    let running = Running::start().await;
    let (status, body) = running.discover(r#"{"email":"bob@globex.com"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["protocol"], "oidc");
    assert_eq!(body["sso_policy"], "enforced");
    assert_eq!(body["password_allowed"], false);
    let redirect = body["redirect_url"].as_str().unwrap();
    assert!(redirect.starts_with("https://login.globex.example/oauth2/authorize?"));
    let params = query(redirect);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "signpost-client");
    assert_eq!(
        params["redirect_uri"],
        "https://signpost.example/oidc/conn_oidc/callback"
    );
    assert_eq!(params["scope"], "openid email profile");
    assert_eq!(params["login_hint"], "bob@globex.com");
    assert_eq!(params["state"], body["oidc"]["state"].as_str().unwrap());
    assert_eq!(params["nonce"], body["oidc"]["nonce"].as_str().unwrap());
    let verifier = body["oidc"]["code_verifier"].as_str().unwrap();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(params["code_challenge"], challenge);
    assert_eq!(params["code_challenge_method"], "S256");
}

#[tokio::test]
async fn an_unknown_domain_signs_in_with_a_password() {
    let running = Running::start().await;
    let (status, body) = running
        .discover(r#"{"email":"someone@initech.example"}"#)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"method": "password"}));
}

#[tokio::test]
async fn malformed_emails_and_bodies_are_refused() {
    let running = Running::start().await;
    for body in [
        r#"{"email":"not an email"}"#,
        r#"{"email":"acme.com"}"#,
        r#"{"email":"jane@"}"#,
        r#"{"email":"jane@acme..com"}"#,
        r#"{"email":42}"#,
        r#"{}"#,
        r#"not json"#,
    ] {
        let (status, answer) = running.discover(body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "EMAIL_INVALID", "{body}");
        assert!(answer["message"].as_str().is_some());
    }
    let big = format!(r#"{{"email":"{}@acme.com"}}"#, "a".repeat(5000));
    let (status, answer) = running.discover(&big).await;
    assert_eq!(status, 413, "{answer}");
    let response = running
        .client
        .post(format!("http://{}/v1/discover", running.edge.local_addr))
        .header("content-type", "text/plain")
        .body(r#"{"email":"jane@acme.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
}

#[tokio::test]
async fn status_reports_the_table_and_the_connection() {
    let running = Running::start().await;
    let base = format!("http://{}", running.edge.local_addr);
    let health = running
        .client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let status: Value = running
        .client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["revision"], 17);
    assert_eq!(status["store_epoch"], EPOCH);
    assert_eq!(status["connected"], true);
    assert_eq!(status["route_count"], 2);
    assert!(status["last_update"].as_str().unwrap().ends_with('Z'));
    assert!(status["control_plane"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(
        serde_json::to_value(running.edge.status()).unwrap()["revision"],
        17
    );
}

#[tokio::test]
async fn discover_before_any_table_is_unavailable_not_password() {
    let directory = tempfile::tempdir().unwrap();
    let edge = start_edge("http://127.0.0.1:9", directory.path().join("state.pb")).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/discover", edge.local_addr))
        .json(&serde_json::json!({"email": "jane@acme.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    edge.stop().await;
}
