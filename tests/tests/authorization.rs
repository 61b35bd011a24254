//! The authorization matrix: every RPC against every kind of credential.
//!
//! `ConnectionAdminService` needs an active API token with the `admin` role;
//! `SetupFormService` needs a usable setup link token. Each RPC is issued
//! with a minimal request: what matters is whether authentication and
//! authorization let it through, not whether the dummy ids exist. A refused
//! call never moves the log head.

use futures::future::BoxFuture;
use signpost_api::admin::v1 as pb;
use signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient;
use signpost_api::admin::v1::setup_form_service_client::SetupFormServiceClient;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends `authorization: <value>` when there is one, nothing otherwise.
#[derive(Clone)]
struct Credential(Option<MetadataValue<Ascii>>);

impl Credential {
    fn bearer(token: &str) -> Self {
        Self(Some(format!("Bearer {token}").parse().unwrap()))
    }

    fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Admin = ConnectionAdminServiceClient<InterceptedService<Channel, Credential>>;
type Form = SetupFormServiceClient<InterceptedService<Channel, Credential>>;

type Call<C> = fn(C) -> BoxFuture<'static, Result<(), Status>>;

const DUMMY_ID: &str = "00000000-0000-7000-8000-000000000000";

// ----------------------------------------------- one minimal call per RPC

async fn create_organization(mut c: Admin) -> Result<(), Status> {
    c.create_organization(pb::CreateOrganizationRequest {
        display_name: "Matrix".into(),
        external_id: unique_external_id(),
        request_id: String::new(),
    })
    .await
    .map(drop)
}

async fn get_organization(mut c: Admin) -> Result<(), Status> {
    c.get_organization(pb::GetOrganizationRequest {
        organization_id: DUMMY_ID.into(),
    })
    .await
    .map(drop)
}

async fn list_organizations(mut c: Admin) -> Result<(), Status> {
    c.list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .map(drop)
}

async fn claim_domain(mut c: Admin) -> Result<(), Status> {
    c.claim_domain(pb::ClaimDomainRequest {
        organization_id: DUMMY_ID.into(),
        domain: "matrix-law.com".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn verify_domain(mut c: Admin) -> Result<(), Status> {
    c.verify_domain(pb::VerifyDomainRequest::default())
        .await
        .map(drop)
}

async fn release_domain(mut c: Admin) -> Result<(), Status> {
    c.release_domain(pb::ReleaseDomainRequest {
        organization_id: DUMMY_ID.into(),
        domain: "matrix-law.com".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn set_sso_policy(mut c: Admin) -> Result<(), Status> {
    c.set_sso_policy(pb::SetSsoPolicyRequest {
        organization_id: DUMMY_ID.into(),
        policy: schema::SsoPolicy::Enforced as i32,
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn issue_setup_link(mut c: Admin) -> Result<(), Status> {
    c.issue_setup_link(pb::IssueSetupLinkRequest {
        organization_id: DUMMY_ID.into(),
        intent: schema::SetupIntent::NewConnection as i32,
        recipient_email: "it@matrix-law.com".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn revoke_setup_link(mut c: Admin) -> Result<(), Status> {
    c.revoke_setup_link(pb::RevokeSetupLinkRequest {
        setup_link_id: DUMMY_ID.into(),
        request_id: String::new(),
    })
    .await
    .map(drop)
}

async fn get_setup_link(mut c: Admin) -> Result<(), Status> {
    c.get_setup_link(pb::GetSetupLinkRequest {
        setup_link_id: DUMMY_ID.into(),
    })
    .await
    .map(drop)
}

async fn list_setup_links(mut c: Admin) -> Result<(), Status> {
    c.list_setup_links(pb::ListSetupLinksRequest::default())
        .await
        .map(drop)
}

async fn get_connection(mut c: Admin) -> Result<(), Status> {
    c.get_connection(pb::GetConnectionRequest {
        connection_id: DUMMY_ID.into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn list_connections(mut c: Admin) -> Result<(), Status> {
    c.list_connections(pb::ListConnectionsRequest::default())
        .await
        .map(drop)
}

async fn assign_group(mut c: Admin) -> Result<(), Status> {
    c.assign_group(pb::AssignGroupRequest {
        connection_id: DUMMY_ID.into(),
        idp_group: "Lawyers".into(),
        role: "editor".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn unassign_group(mut c: Admin) -> Result<(), Status> {
    c.unassign_group(pb::UnassignGroupRequest {
        connection_id: DUMMY_ID.into(),
        idp_group: "Lawyers".into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn set_group_requirement(mut c: Admin) -> Result<(), Status> {
    c.set_group_requirement(pb::SetGroupRequirementRequest {
        connection_id: DUMMY_ID.into(),
        require_group: true,
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn activate_connection(mut c: Admin) -> Result<(), Status> {
    c.activate_connection(pb::ActivateConnectionRequest {
        connection_id: DUMMY_ID.into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn deactivate_connection(mut c: Admin) -> Result<(), Status> {
    c.deactivate_connection(pb::DeactivateConnectionRequest {
        connection_id: DUMMY_ID.into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn switch_provider(mut c: Admin) -> Result<(), Status> {
    c.switch_provider(pb::SwitchProviderRequest {
        organization_id: DUMMY_ID.into(),
        connection_id: DUMMY_ID.into(),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn mint_api_token(mut c: Admin) -> Result<(), Status> {
    c.mint_api_token(pb::MintApiTokenRequest {
        name: "escalation".into(),
        role: schema::TokenRole::Admin as i32,
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn list_api_tokens(mut c: Admin) -> Result<(), Status> {
    c.list_api_tokens(pb::ListApiTokensRequest::default())
        .await
        .map(drop)
}

async fn revoke_api_token(mut c: Admin) -> Result<(), Status> {
    c.revoke_api_token(pb::RevokeApiTokenRequest {
        token_id: DUMMY_ID.into(),
        request_id: String::new(),
    })
    .await
    .map(drop)
}

/// Every RPC of `ConnectionAdminService`, in the order of the proto.
const ADMIN_RPCS: [(&str, Call<Admin>); 22] = [
    ("CreateOrganization", |c| Box::pin(create_organization(c))),
    ("GetOrganization", |c| Box::pin(get_organization(c))),
    ("ListOrganizations", |c| Box::pin(list_organizations(c))),
    ("ClaimDomain", |c| Box::pin(claim_domain(c))),
    ("VerifyDomain", |c| Box::pin(verify_domain(c))),
    ("ReleaseDomain", |c| Box::pin(release_domain(c))),
    ("SetSsoPolicy", |c| Box::pin(set_sso_policy(c))),
    ("IssueSetupLink", |c| Box::pin(issue_setup_link(c))),
    ("RevokeSetupLink", |c| Box::pin(revoke_setup_link(c))),
    ("GetSetupLink", |c| Box::pin(get_setup_link(c))),
    ("ListSetupLinks", |c| Box::pin(list_setup_links(c))),
    ("GetConnection", |c| Box::pin(get_connection(c))),
    ("ListConnections", |c| Box::pin(list_connections(c))),
    ("AssignGroup", |c| Box::pin(assign_group(c))),
    ("UnassignGroup", |c| Box::pin(unassign_group(c))),
    ("SetGroupRequirement", |c| {
        Box::pin(set_group_requirement(c))
    }),
    ("ActivateConnection", |c| Box::pin(activate_connection(c))),
    ("DeactivateConnection", |c| {
        Box::pin(deactivate_connection(c))
    }),
    ("SwitchProvider", |c| Box::pin(switch_provider(c))),
    ("MintApiToken", |c| Box::pin(mint_api_token(c))),
    ("ListApiTokens", |c| Box::pin(list_api_tokens(c))),
    ("RevokeApiToken", |c| Box::pin(revoke_api_token(c))),
];

async fn get_setup_form(mut c: Form) -> Result<(), Status> {
    c.get_setup_form(pb::GetSetupFormRequest {}).await.map(drop)
}

async fn submit_setup_form(mut c: Form) -> Result<(), Status> {
    c.submit_setup_form(saml_xml_form(&idp_metadata(
        "https://idp.matrix-law.com/entity",
        "https://idp.example.com/sso",
    )))
    .await
    .map(drop)
}

/// Both RPCs of `SetupFormService`.
const FORM_RPCS: [(&str, Call<Form>); 2] = [
    ("GetSetupForm", |c| Box::pin(get_setup_form(c))),
    ("SubmitSetupForm", |c| Box::pin(submit_setup_form(c))),
];

fn unique_external_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("ext-matrix-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// --------------------------------------------------------- the credentials

/// What a credential must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Through authentication and authorization (the call itself may still fail).
    Allowed,
    /// PERMISSION_DENIED, ROLE_NOT_ALLOWED.
    Forbidden,
    /// UNAUTHENTICATED with this reason.
    Unauthenticated(&'static str),
}

async fn mint(admin: &mut AdminClient, name: &str, role: schema::TokenRole) -> (String, String) {
    let minted = admin
        .mint_api_token(pb::MintApiTokenRequest {
            name: name.into(),
            role: role as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (minted.api_token.unwrap().token_id, minted.token)
}

/// A server with one credential of each kind.
struct Credentials {
    server: TestServer,
    admin_token: String,
    edge_token: String,
    auditor_token: String,
    revoked_admin_token: String,
    setup_link_token: String,
}

impl Credentials {
    async fn start() -> Self {
        let server = TestServer::start().await;
        let mut admin = server.admin().await;
        let (_, edge_token) = mint(&mut admin, "edge", schema::TokenRole::Edge).await;
        let (_, auditor_token) = mint(&mut admin, "auditor", schema::TokenRole::Auditor).await;
        let (revoked_id, revoked_admin_token) =
            mint(&mut admin, "revoked admin", schema::TokenRole::Admin).await;
        admin
            .revoke_api_token(pb::RevokeApiTokenRequest {
                token_id: revoked_id,
                request_id: String::new(),
            })
            .await
            .unwrap();
        let org =
            organization_with_verified_domain(&server, &mut admin, "Matrix", "matrix-law.com")
                .await;
        let (_, url, _) =
            issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
        let setup_link_token = url.rsplit_once('#').unwrap().1.to_owned();
        let admin_token = server.admin_token.clone();
        Self {
            server,
            admin_token,
            edge_token,
            auditor_token,
            revoked_admin_token,
            setup_link_token,
        }
    }

    async fn admin_client(&self, credential: Credential) -> Admin {
        ConnectionAdminServiceClient::with_interceptor(
            channel(self.server.addr()).await,
            credential,
        )
    }

    async fn form_client(&self, credential: Credential) -> Form {
        SetupFormServiceClient::with_interceptor(channel(self.server.addr()).await, credential)
    }
}

/// Checks one call's outcome against what its credential must get, and that
/// a refused call appended nothing.
#[track_caller]
fn check(
    rpc: &str,
    credential: &str,
    expect: Expect,
    outcome: &Result<(), Status>,
    head_before: u64,
    head_after: u64,
) {
    let case = format!("{rpc} with {credential}");
    match (expect, outcome) {
        (Expect::Allowed, Ok(())) => {}
        (Expect::Allowed, Err(status)) => {
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied | Code::Internal | Code::Unknown
                ),
                "{case}: authentication and authorization should pass, got {status:?}"
            );
            assert_eq!(head_after, head_before, "{case}: a refused call appended");
        }
        (Expect::Forbidden, Err(status)) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{case}: {status:?}");
            assert_eq!(reason(status), "ROLE_NOT_ALLOWED", "{case}: {status:?}");
            assert_eq!(head_after, head_before, "{case}: a refused call appended");
        }
        (Expect::Unauthenticated(expected_reason), Err(status)) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            assert_eq!(reason(status), expected_reason, "{case}: {status:?}");
            assert_eq!(head_after, head_before, "{case}: a refused call appended");
        }
        (_, Ok(())) => panic!("{case}: expected {expect:?}, the call succeeded"),
    }
}

#[tokio::test]
async fn every_admin_rpc_needs_an_active_admin_token() {
    let creds = Credentials::start().await;
    let credentials = [
        (
            "the admin token",
            Credential::bearer(&creds.admin_token),
            Expect::Allowed,
        ),
        (
            "an edge token",
            Credential::bearer(&creds.edge_token),
            Expect::Forbidden,
        ),
        (
            "an auditor token",
            Credential::bearer(&creds.auditor_token),
            Expect::Forbidden,
        ),
        (
            "a revoked admin token",
            Credential::bearer(&creds.revoked_admin_token),
            Expect::Unauthenticated("API_TOKEN_INVALID"),
        ),
        (
            "no token",
            Credential::none(),
            Expect::Unauthenticated("CREDENTIALS_MISSING"),
        ),
        (
            "a garbage token",
            Credential::bearer("garbage"),
            Expect::Unauthenticated("API_TOKEN_INVALID"),
        ),
        (
            "a setup link token",
            Credential::bearer(&creds.setup_link_token),
            Expect::Unauthenticated("API_TOKEN_INVALID"),
        ),
    ];
    for (rpc, call) in ADMIN_RPCS {
        for (name, credential, expect) in &credentials {
            let client = creds.admin_client(credential.clone()).await;
            let before = creds.server.head();
            let outcome = call(client).await;
            check(rpc, name, *expect, &outcome, before, creds.server.head());
        }
    }
}

#[tokio::test]
async fn setup_form_rpcs_need_a_usable_setup_link_token() {
    let creds = Credentials::start().await;
    let credentials = [
        (
            "the setup link token",
            Credential::bearer(&creds.setup_link_token),
            Expect::Allowed,
        ),
        (
            "the admin API token",
            Credential::bearer(&creds.admin_token),
            Expect::Unauthenticated("SETUP_LINK_INVALID"),
        ),
        (
            "no token",
            Credential::none(),
            Expect::Unauthenticated("CREDENTIALS_MISSING"),
        ),
    ];
    for (rpc, call) in FORM_RPCS {
        for (name, credential, expect) in &credentials {
            let client = creds.form_client(credential.clone()).await;
            let before = creds.server.head();
            let outcome = call(client).await;
            check(rpc, name, *expect, &outcome, before, creds.server.head());
        }
    }
}

#[tokio::test]
async fn malformed_authorization_headers_are_refused_as_missing_credentials() {
    let creds = Credentials::start().await;
    let malformed = [
        format!("Basic {}", creds.admin_token),
        format!("bearer{}", creds.admin_token),
        "Bearer ".to_owned(),
        creds.admin_token.clone(),
    ];
    for header in malformed {
        let credential = Credential(Some(header.parse().unwrap()));
        for (rpc, call) in ADMIN_RPCS {
            let client = creds.admin_client(credential.clone()).await;
            let before = creds.server.head();
            let outcome = call(client).await;
            check(
                rpc,
                &format!("`authorization: {header}`"),
                Expect::Unauthenticated("CREDENTIALS_MISSING"),
                &outcome,
                before,
                creds.server.head(),
            );
        }
    }
}
