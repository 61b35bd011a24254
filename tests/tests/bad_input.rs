//! Bad input gets a clear error and changes nothing: every refusal here is
//! checked for its gRPC code, its `ErrorInfo` reason, its `BadRequest` field
//! (when a field is at fault), an unmoved log head, and a server that still
//! answers the next valid call.

use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;
use tonic::Code;

const EXTERNAL_ENTITY_XML: &str =
    include_str!("../../crates/signpost-idp/testdata/external_entity.xml");
const BILLION_LAUGHS_XML: &str =
    include_str!("../../crates/signpost-idp/testdata/billion_laughs.xml");
const SP_ONLY_METADATA_XML: &str =
    include_str!("../../crates/signpost-idp/testdata/sp_only_metadata.xml");
const TWO_IDP_DESCRIPTORS_XML: &str =
    include_str!("../../crates/signpost-idp/testdata/two_idp_descriptors.xml");
const EXPIRED_CERTIFICATE_PEM: &str =
    include_str!("../../crates/signpost-idp/testdata/rsa2048_expired_2020.pem");
const RSA_1024_CERTIFICATE_PEM: &str =
    include_str!("../../crates/signpost-idp/testdata/rsa1024_sha256.pem");
const SHA1_CERTIFICATE_PEM: &str =
    include_str!("../../crates/signpost-idp/testdata/rsa2048_sha1.pem");
const PRIVATE_KEY_PEM: &str =
    include_str!("../../crates/signpost-idp/testdata/private_key_pkcs8.pem");

// ------------------------------------------------------------------ helpers

/// Checks the machine-readable parts of a refusal.
#[track_caller]
fn assert_refused(status: &tonic::Status, code: Code, expected_reason: &str, expected_field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), expected_reason, "{status:?}");
    assert_eq!(field(status), expected_field, "{status:?}");
}

/// A valid admin call still succeeds: the refusal did not take the server down.
async fn assert_still_serving(server: &TestServer) {
    let mut admin = server.admin().await;
    admin
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("the server still answers a valid call");
}

/// An organization with a verified domain and an open NEW_CONNECTION link.
struct OpenForm {
    server: TestServer,
    admin: AdminClient,
    form: FormClient,
}

impl OpenForm {
    async fn start(domain: &str) -> Self {
        Self::on(TestServer::start().await, domain).await
    }

    async fn on(server: TestServer, domain: &str) -> Self {
        let mut admin = server.admin().await;
        let organization_id =
            organization_with_verified_domain(&server, &mut admin, "Acme Law", domain).await;
        let (_, link_url, _) = issue_link(
            &mut admin,
            &organization_id,
            schema::SetupIntent::NewConnection,
            "",
        )
        .await;
        let form = server.form(&link_url).await;
        Self {
            server,
            admin,
            form,
        }
    }

    /// Submits `request`, expects a refusal and an unmoved head, and returns the status.
    async fn refused_submission(&mut self, request: pb::SubmitSetupFormRequest) -> tonic::Status {
        let before = self.server.head();
        let status = self
            .form
            .submit_setup_form(request)
            .await
            .expect_err("the submission is refused");
        assert_eq!(
            self.server.head(),
            before,
            "a refused submission appends nothing"
        );
        status
    }

    /// The same link still opens its form, and the admin API still answers.
    async fn assert_still_serving(&mut self) {
        self.form
            .get_setup_form(pb::GetSetupFormRequest {})
            .await
            .expect("the link still opens its form");
        assert_still_serving(&self.server).await;
    }
}

fn saml_manual_form(entity_id: &str, certificate_pem: &str) -> pb::SubmitSetupFormRequest {
    pb::SubmitSetupFormRequest {
        settings: Some(pb::submit_setup_form_request::Settings::SamlManual(
            pb::SamlManualSettings {
                idp_entity_id: entity_id.into(),
                sso_url: "https://idp.example.com/sso/saml".into(),
                certificate_pem: certificate_pem.into(),
            },
        )),
        ..saml_form("")
    }
}

/// A loopback HTTP server whose OIDC discovery document names `issuer`
/// (whatever URL it is fetched from). Returns its base URL.
async fn discovery_server(issuer: &str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": "https://idp.example.com/oauth2/authorize",
        "token_endpoint": "https://idp.example.com/oauth2/token",
        "jwks_uri": "https://idp.example.com/oauth2/keys",
    })
    .to_string();
    let app = axum::Router::new().route(
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
    (base_url, task)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Asserts that `needle` is in no event payload of the log and in no file of the data directory.
async fn assert_stored_nowhere(server: &TestServer, needle: &str) {
    let events = server
        .server
        .plane
        .store()
        .read_range(1, 10_000)
        .await
        .unwrap();
    assert!(!events.is_empty());
    for event in &events {
        assert!(
            !contains_bytes(event.payload.as_ref(), needle.as_bytes()),
            "event {} ({}) holds the refused text",
            event.position,
            event.event_type
        );
    }
    let files = files_under(server.dir.path());
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains_bytes(&bytes, needle.as_bytes()),
            "{} holds the refused text",
            path.display()
        );
    }
}

// ------------------------------------------------------- hostile metadata XML

#[tokio::test]
async fn metadata_with_an_external_entity_is_refused_before_parsing() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_xml_form(EXTERNAL_ENTITY_XML))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "XML_DOCTYPE_REFUSED",
        "metadata_xml",
    );
    assert!(!status.message().contains("root:"), "{}", status.message());
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn metadata_with_entity_expansion_is_refused_without_expanding_it() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_xml_form(BILLION_LAUGHS_XML))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "XML_DOCTYPE_REFUSED",
        "metadata_xml",
    );
    assert!(!status.message().contains("lollol"), "{}", status.message());
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn metadata_larger_than_512_kib_is_refused() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let padded = format!(
        "{}\n<!-- {} -->\n",
        idp_metadata(
            "https://idp.acme-law.com/entity",
            "https://idp.example.com/sso"
        ),
        "x".repeat(520 * 1024)
    );
    assert!(padded.len() > 512 * 1024);
    let status = setup.refused_submission(saml_xml_form(&padded)).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "METADATA_TOO_LARGE",
        "metadata_xml",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn service_provider_metadata_is_refused_as_having_no_idp() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_xml_form(SP_ONLY_METADATA_XML))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "METADATA_NO_IDP_DESCRIPTOR",
        "metadata_xml",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn metadata_with_two_idp_descriptors_is_refused_as_ambiguous() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_xml_form(TWO_IDP_DESCRIPTORS_XML))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "METADATA_MULTIPLE_IDP_DESCRIPTORS",
        "metadata_xml",
    );
    setup.assert_still_serving().await;
}

// ------------------------------------------------------------- metadata URLs

#[tokio::test]
async fn http_metadata_url_off_loopback_is_refused_even_with_the_test_switch_on() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_form("http://idp.example.com/metadata"))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "URL_NOT_HTTPS",
        "metadata_url",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn loopback_metadata_urls_are_refused_by_default() {
    let server = TestServer::start_with(|config| {
        config.allow_loopback_http_idp_for_tests = false;
    })
    .await;
    let mut setup = OpenForm::on(server, "acme-law.com").await;
    // A real IdP on loopback: only the server's policy stands in the way.
    let idp = FakeIdp::start("https://idp.acme-law.com/entity").await;
    let status = setup
        .refused_submission(saml_form(&idp.metadata_url()))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "URL_NOT_HTTPS",
        "metadata_url",
    );
    for url in ["https://[::1]/", "https://127.0.0.1/saml/metadata"] {
        let status = setup.refused_submission(saml_form(url)).await;
        assert_refused(
            &status,
            Code::InvalidArgument,
            "ADDRESS_FORBIDDEN",
            "metadata_url",
        );
    }
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn metadata_url_on_a_private_address_is_refused() {
    let mut setup = OpenForm::start("acme-law.com").await;
    for url in [
        "https://10.0.0.1/metadata",
        "https://169.254.169.254/latest/meta-data",
        "https://192.168.1.1/metadata",
    ] {
        let status = setup.refused_submission(saml_form(url)).await;
        assert_refused(
            &status,
            Code::InvalidArgument,
            "ADDRESS_FORBIDDEN",
            "metadata_url",
        );
    }
    setup.assert_still_serving().await;
}

// ------------------------------------------------------------- certificates

#[tokio::test]
async fn expired_certificate_is_refused() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_manual_form(
            "https://idp.acme-law.com/entity",
            EXPIRED_CERTIFICATE_PEM,
        ))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "CERTIFICATE_EXPIRED",
        "certificate_pem",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn rsa_1024_certificate_is_refused_as_too_weak() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_manual_form(
            "https://idp.acme-law.com/entity",
            RSA_1024_CERTIFICATE_PEM,
        ))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "CERTIFICATE_KEY_TOO_WEAK",
        "certificate_pem",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn sha1_signed_certificate_is_refused_as_weak() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let status = setup
        .refused_submission(saml_manual_form(
            "https://idp.acme-law.com/entity",
            SHA1_CERTIFICATE_PEM,
        ))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "CERTIFICATE_WEAK_SIGNATURE",
        "certificate_pem",
    );
    setup.assert_still_serving().await;
}

/// A base64 line from the middle of the private key: found nowhere else.
fn private_key_line() -> &'static str {
    let line = PRIVATE_KEY_PEM.lines().nth(5).unwrap();
    assert_eq!(line.len(), 64, "a full base64 line of the key");
    line
}

#[tokio::test]
async fn pasted_private_key_is_refused_and_stored_nowhere() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let secret_line = private_key_line();

    // In the certificate field, alone and bundled with a good certificate.
    for pasted in [
        PRIVATE_KEY_PEM.to_owned(),
        format!("{IDP_CERTIFICATE_PEM}\n{PRIVATE_KEY_PEM}"),
    ] {
        let status = setup
            .refused_submission(saml_manual_form("https://idp.acme-law.com/entity", &pasted))
            .await;
        assert_refused(
            &status,
            Code::InvalidArgument,
            "PRIVATE_KEY_REFUSED",
            "certificate_pem",
        );
        assert!(!status.message().contains(secret_line), "{status:?}");
        assert!(!format!("{status:?}").contains(secret_line));
    }

    // Inside otherwise good metadata XML.
    let metadata = idp_metadata(
        "https://idp.acme-law.com/entity",
        "https://idp.example.com/sso",
    )
    .replace(
        "</md:EntityDescriptor>",
        &format!("<!-- {PRIVATE_KEY_PEM} -->\n</md:EntityDescriptor>"),
    );
    let status = setup.refused_submission(saml_xml_form(&metadata)).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "PRIVATE_KEY_REFUSED",
        "metadata_xml",
    );
    assert!(!status.message().contains(secret_line), "{status:?}");
    assert!(!format!("{status:?}").contains(secret_line));

    setup.assert_still_serving().await;
    assert_stored_nowhere(&setup.server, secret_line).await;
}

// ---------------------------------------------------------- other form input

#[tokio::test]
async fn form_without_an_email_claim_is_refused() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let mut request = saml_xml_form(&idp_metadata(
        "https://idp.acme-law.com/entity",
        "https://idp.example.com/sso",
    ));
    request.claim_mapping = Some(schema::ClaimMapping {
        email: "  ".into(),
        groups: "groups".into(),
        ..Default::default()
    });
    let status = setup.refused_submission(request.clone()).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "FIELD_REQUIRED",
        "claim_mapping.email",
    );
    request.claim_mapping = None;
    let status = setup.refused_submission(request).await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "FIELD_REQUIRED",
        "claim_mapping.email",
    );
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn oidc_issuer_whose_discovery_names_another_issuer_is_refused() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let (issuer, task) = discovery_server("https://login.other-tenant.example.com").await;
    let status = setup
        .refused_submission(oidc_form(&issuer, "client-secret-value"))
        .await;
    assert_refused(
        &status,
        Code::InvalidArgument,
        "OIDC_ISSUER_MISMATCH",
        "issuer",
    );
    task.abort();
    setup.assert_still_serving().await;
}

#[tokio::test]
async fn idp_entity_id_of_another_organization_is_refused() {
    let server = TestServer::start().await;
    let mut first = OpenForm::on(server, "acme-law.com").await;
    let shared_entity_id = "https://idp.shared.example.com/entity";
    let metadata = idp_metadata(shared_entity_id, "https://idp.example.com/sso");
    first
        .form
        .submit_setup_form(saml_xml_form(&metadata))
        .await
        .expect("the first organization configures the entity id");

    let mut admin = first.admin.clone();
    let other =
        organization_with_verified_domain(&first.server, &mut admin, "Bolt", "bolt-legal.com")
            .await;
    let (_, url, _) = issue_link(&mut admin, &other, schema::SetupIntent::NewConnection, "").await;
    let mut other_form = first.server.form(&url).await;
    let before = first.server.head();
    let status = other_form
        .submit_setup_form(saml_xml_form(&metadata))
        .await
        .unwrap_err();
    assert_eq!(first.server.head(), before);
    assert_refused(
        &status,
        Code::AlreadyExists,
        "IDP_ENTITY_ID_TAKEN",
        "entity_id",
    );
    // The same entity id by hand is refused the same way.
    let status = other_form
        .submit_setup_form(saml_manual_form(shared_entity_id, IDP_CERTIFICATE_PEM))
        .await
        .unwrap_err();
    assert_eq!(first.server.head(), before);
    assert_refused(
        &status,
        Code::AlreadyExists,
        "IDP_ENTITY_ID_TAKEN",
        "entity_id",
    );
    first.assert_still_serving().await;
}

#[tokio::test]
async fn oversized_grpc_message_is_refused_and_the_server_stays_up() {
    let mut setup = OpenForm::start("acme-law.com").await;
    let huge = "x".repeat(3 * 1024 * 1024);
    let status = setup.refused_submission(saml_xml_form(&huge)).await;
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );
    setup.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_request_bodies_get_a_precise_status_and_change_nothing() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "bodies",
        &["bodies.example"],
        "https://idp-bodies.example.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Admin).await;
    let (addr, head) = (server.addr(), server.head());
    const ASSIGN: &str = "/signpost.admin.v1.ConnectionAdminService/AssignGroup";
    let assign = |request: &pb::AssignGroupRequest, compressed| {
        let bytes = request.encode_to_vec();
        let token = token.clone();
        async move {
            unary_raw::<pb::AssignGroupResponse>(addr, &token, ASSIGN, bytes, compressed).await
        }
    };
    let request = pb::AssignGroupRequest {
        connection_id: connection_id.clone(),
        idp_group: "Partners".into(),
        role: "admin".into(),
        ..Default::default()
    };

    // A body that does not decode: `every_admin_method_reads_its_request_the_same_way`.

    // Larger than the server's limit on a request (2 MiB).
    let huge = pb::AssignGroupRequest {
        role: "r".repeat(3 * 1024 * 1024),
        ..request.clone()
    };
    let status = assign(&huge, false).await.unwrap_err();
    assert_refused(&status, Code::OutOfRange, "REQUEST_TOO_LARGE", "request");

    // Compressed, which this server does not read.
    let status = assign(&request, true).await.unwrap_err();
    assert_refused(
        &status,
        Code::Unimplemented,
        "COMPRESSION_UNSUPPORTED",
        "grpc-encoding",
    );

    // A method the service does not have: the generated server's answer.
    let status = unary_raw::<pb::AssignGroupResponse>(
        addr,
        &token,
        "/signpost.admin.v1.ConnectionAdminService/DropEverything",
        request.encode_to_vec(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Without a token: refused by the handler, read through the same path.
    let status = unary_raw::<pb::AssignGroupResponse>(
        addr,
        "spt_not-a-real-token",
        ASSIGN,
        request.encode_to_vec(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(server.head(), head, "nothing appended");

    // The same raw bytes, well formed, are one group assignment, answered as the
    // generated client reads it.
    let done = assign(&request, false)
        .await
        .expect("a valid request is served");
    assert_eq!(done.log_position, head + 1);
    let connection = done.connection.expect("the connection");
    assert_eq!(connection.connection_id, connection_id);
    assert!(
        connection
            .groups
            .iter()
            .any(|g| g.idp_group == "Partners" && g.role == "admin"),
        "{connection:?}"
    );
    assert_still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_method_reads_its_request_the_same_way() {
    use prost::Message;
    // The service's methods as the API's own descriptors name them, so a method added
    // to the proto without being added to `AdminServer`'s table fails here.
    let files = prost_types::FileDescriptorSet::decode(signpost_api::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptors");
    let service = files
        .file
        .iter()
        .filter(|file| file.package() == "signpost.admin.v1")
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "ConnectionAdminService")
        .expect("ConnectionAdminService");
    assert!(service.method.len() >= 20, "{:?}", service.method);
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    for method in &service.method {
        assert!(!method.client_streaming() && !method.server_streaming());
        let path: &'static str = Box::leak(
            format!(
                "/signpost.admin.v1.ConnectionAdminService/{}",
                method.name()
            )
            .into_boxed_str(),
        );
        // A length-delimited field that runs past the message: no request type decodes it.
        let status = unary_raw::<pb::GetOrganizationResponse>(
            server.addr(),
            &token,
            path,
            vec![0x0a, 0x7f, b'x'],
            false,
        )
        .await
        .unwrap_err();
        assert_refused(
            &status,
            Code::InvalidArgument,
            "REQUEST_MALFORMED",
            "request",
        );
        assert!(
            status.message().contains(&format!(
                "does not decode as {}",
                method.input_type().rsplit('.').next().unwrap()
            )),
            "{}: {status:?}",
            method.name()
        );
    }
    assert_still_serving(&server).await;
}

// ------------------------------------------------------------ names

#[tokio::test]
async fn malformed_recipient_emails_are_refused_without_echoing_them() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    for email in ["not-an-email", "a@b@c.com", "<script>@x.com", ""] {
        let before = server.head();
        let status = admin
            .issue_setup_link(pb::IssueSetupLinkRequest {
                organization_id: org.clone(),
                intent: schema::SetupIntent::NewConnection as i32,
                recipient_email: email.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{email}");
        assert_refused(
            &status,
            Code::InvalidArgument,
            "EMAIL_INVALID",
            "recipient_email",
        );
        assert!(!status.message().contains("<script>"), "{status:?}");
    }
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn malformed_domains_are_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let too_long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    assert!(too_long.len() > 300);
    for domain in [
        "-bad-.com",
        "a..b.com",
        "1.2.3.4",
        "",
        too_long.as_str(),
        "exa mple.com",
    ] {
        let before = server.head();
        let status = admin
            .claim_domain(pb::ClaimDomainRequest {
                organization_id: org.clone(),
                domain: domain.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{domain}");
        assert_eq!(status.code(), Code::InvalidArgument, "{domain}: {status:?}");
        assert_eq!(reason(&status), "DOMAIN_INVALID", "{domain}: {status:?}");
        assert_eq!(field(&status), "domain", "{domain}: {status:?}");
    }
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn public_suffixes_and_consumer_mail_domains_cannot_be_claimed() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    for (domain, expected_reason) in [
        ("co.uk", "DOMAIN_IS_PUBLIC_SUFFIX"),
        ("com.au", "DOMAIN_IS_PUBLIC_SUFFIX"),
        ("gmail.com", "DOMAIN_IS_CONSUMER_MAIL"),
        ("Outlook.com.", "DOMAIN_IS_CONSUMER_MAIL"),
    ] {
        let before = server.head();
        let status = admin
            .claim_domain(pb::ClaimDomainRequest {
                organization_id: org.clone(),
                domain: domain.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{domain}");
        assert_eq!(status.code(), Code::InvalidArgument, "{domain}: {status:?}");
        assert_eq!(reason(&status), expected_reason, "{domain}: {status:?}");
        assert_eq!(field(&status), "domain", "{domain}: {status:?}");
    }
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn domain_claimed_by_another_organization_is_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let other = new_organization(&mut admin, "Bolt", "ext-bolt").await;
    // The same domain however it is spelled.
    for spelling in ["acme-law.com", "ACME-LAW.com.", " acme-law.com "] {
        let before = server.head();
        let status = admin
            .claim_domain(pb::ClaimDomainRequest {
                organization_id: other.organization_id.clone(),
                domain: spelling.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{spelling}");
        assert_refused(
            &status,
            Code::AlreadyExists,
            "DOMAIN_CLAIMED_BY_ANOTHER_ORGANIZATION",
            "domain",
        );
    }
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn unicode_domain_is_claimed_in_its_normalized_ascii_form() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = new_organization(&mut admin, "Bücher", "ext-buecher").await;
    let claim = admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.organization_id.clone(),
            domain: "Bücher.Example.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .domain_claim
        .unwrap();
    assert_eq!(claim.domain, "xn--bcher-kva.example");
    let shown = admin
        .get_organization(pb::GetOrganizationRequest {
            organization_id: org.organization_id,
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(shown.domains.len(), 1);
    assert_eq!(shown.domains[0].domain, "xn--bcher-kva.example");
}

// -------------------------------------------------------------- setup tokens

/// Both form RPCs refused for `token`: (GetSetupForm, SubmitSetupForm), head unmoved.
async fn refusals_for(server: &TestServer, token: &str) -> [tonic::Status; 2] {
    let mut form = server.form(token).await;
    let before = server.head();
    let shown = form
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .expect_err("the form does not open");
    let submitted = form
        .submit_setup_form(saml_xml_form(&idp_metadata(
            "https://idp.refused.example.com/entity",
            "https://idp.example.com/sso",
        )))
        .await
        .expect_err("the form is not accepted");
    assert_eq!(server.head(), before, "a refused link appends nothing");
    [shown, submitted]
}

/// Every refusal is the same UNAUTHENTICATED SETUP_LINK_INVALID, byte for byte.
#[track_caller]
fn assert_no_oracle(cases: &[(&str, [tonic::Status; 2])]) {
    let reference = &cases[0].1[0];
    assert_eq!(reference.code(), Code::Unauthenticated, "{reference:?}");
    assert_eq!(reason(reference), "SETUP_LINK_INVALID");
    for (case, statuses) in cases {
        for status in statuses {
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            assert_eq!(reason(status), "SETUP_LINK_INVALID", "{case}: {status:?}");
            assert_eq!(status.message(), reference.message(), "{case}");
            assert_eq!(status.details(), reference.details(), "{case}");
        }
    }
}

#[tokio::test]
async fn unusable_setup_links_are_all_refused_like_an_unknown_one() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let token_of = |url: &str| url.rsplit_once('#').unwrap().1.to_owned();

    // Revoked.
    let (revoked_id, revoked_url, _) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    admin
        .revoke_setup_link(pb::RevokeSetupLinkRequest {
            setup_link_id: revoked_id,
            request_id: String::new(),
        })
        .await
        .unwrap();

    // Superseded: re-sending revokes the older open link of the same intent.
    let (superseded_id, superseded_url, _) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let resent = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: org.clone(),
            intent: schema::SetupIntent::NewConnection as i32,
            recipient_email: "it-admin@example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resent.superseded_setup_link_ids, vec![superseded_id]);

    // Spent: the connection it configured was activated.
    let idp = FakeIdp::start("https://idp.acme-law.com/entity").await;
    let mut spent_form = server.form(&resent.url).await;
    let configured = spent_form
        .submit_setup_form(saml_form(&idp.metadata_url()))
        .await
        .unwrap()
        .into_inner();
    admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: configured.connection_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let spent_url = resent.url;

    let unknown = format!("spl_{}", "A".repeat(43));
    let mut cases = vec![
        ("unknown", refusals_for(&server, &unknown).await),
        ("garbage", refusals_for(&server, "garbage-token").await),
        (
            "wrong prefix",
            refusals_for(&server, &format!("spt_{}", "A".repeat(43))).await,
        ),
        (
            "too long",
            refusals_for(&server, &format!("spl_{}", "A".repeat(4000))).await,
        ),
        (
            "revoked",
            refusals_for(&server, &token_of(&revoked_url)).await,
        ),
        (
            "superseded",
            refusals_for(&server, &token_of(&superseded_url)).await,
        ),
        ("spent", refusals_for(&server, &token_of(&spent_url)).await),
    ];

    // Expired: a fresh link of another intent, then 73 hours later.
    let (_, fresh_url, _) =
        issue_link(&mut admin, &org, schema::SetupIntent::StageSwitch, "").await;
    server
        .form(&fresh_url)
        .await
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .expect("the fresh link opens before it expires");
    server.clock.advance(chrono::Duration::hours(73));
    cases.push((
        "expired",
        refusals_for(&server, &token_of(&fresh_url)).await,
    ));

    assert_no_oracle(&cases);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn expired_setup_link_is_refused_like_an_unknown_one() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let (_, url, _) = issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    server.clock.advance(chrono::Duration::hours(73));
    let cases = [
        (
            "unknown",
            refusals_for(&server, &format!("spl_{}", "B".repeat(43))).await,
        ),
        ("expired", refusals_for(&server, &url).await),
    ];
    assert_no_oracle(&cases);
    assert_still_serving(&server).await;
}

// ------------------------------------------------------------ roles

#[tokio::test]
async fn edge_and_auditor_tokens_cannot_call_admin_rpcs() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    for role in [schema::TokenRole::Edge, schema::TokenRole::Auditor] {
        let minted = admin
            .mint_api_token(pb::MintApiTokenRequest {
                name: format!("{role:?} token"),
                role: role as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut client = admin_client(server.addr(), &minted.token).await;
        let before = server.head();
        let status = client
            .create_organization(pb::CreateOrganizationRequest {
                display_name: "Acme".into(),
                external_id: "ext-acme".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{role:?}");
        assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED", "");
        let status = client
            .mint_api_token(pb::MintApiTokenRequest {
                name: "escalation".into(),
                role: schema::TokenRole::Admin as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(server.head(), before, "{role:?}");
        assert_refused(&status, Code::PermissionDenied, "ROLE_NOT_ALLOWED", "");
    }
    assert_still_serving(&server).await;
}

// --------------------------------------------- idempotency, versions, paging

#[tokio::test]
async fn request_id_reused_for_a_different_request_is_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let first = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Acme".into(),
            external_id: "ext-acme".into(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let before = server.head();
    // The same request again: the first outcome, nothing appended.
    let retried = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Acme".into(),
            external_id: "ext-acme".into(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.log_position, first.log_position);
    assert_eq!(server.head(), before);
    // A different request under the same id: refused.
    let status = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Bolt".into(),
            external_id: "ext-bolt".into(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(server.head(), before);
    assert_refused(
        &status,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
        "request_id",
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn stale_expected_version_is_refused_as_a_conflict() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = new_organization(&mut admin, "Acme", "ext-acme").await;
    let before = server.head();
    let status = admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.organization_id.clone(),
            domain: "acme-law.com".into(),
            expected_version: Some(org.version + 5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(server.head(), before);
    assert_refused(
        &status,
        Code::Aborted,
        "VERSION_MISMATCH",
        "expected_version",
    );
    // With the version actually read, the same call goes through.
    admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.organization_id,
            domain: "acme-law.com".into(),
            expected_version: Some(org.version),
            ..Default::default()
        })
        .await
        .expect("the current version is accepted");
}

#[tokio::test]
async fn page_size_out_of_range_and_bad_page_tokens_are_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let before = server.head();
    for page_size in [-1, 1001, i32::MIN, i32::MAX] {
        let status = admin
            .list_organizations(pb::ListOrganizationsRequest {
                page_size,
                page_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_refused(
            &status,
            Code::InvalidArgument,
            "PAGE_SIZE_OUT_OF_RANGE",
            "page_size",
        );
        let status = admin
            .list_connections(pb::ListConnectionsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused(
            &status,
            Code::InvalidArgument,
            "PAGE_SIZE_OUT_OF_RANGE",
            "page_size",
        );
    }
    for page_token in ["!!not base64!!", "%%%", "_w"] {
        let status = admin
            .list_setup_links(pb::ListSetupLinksRequest {
                page_token: page_token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused(
            &status,
            Code::InvalidArgument,
            "PAGE_TOKEN_INVALID",
            "page_token",
        );
        let status = admin
            .list_api_tokens(pb::ListApiTokensRequest {
                page_size: 10,
                page_token: page_token.into(),
            })
            .await
            .unwrap_err();
        assert_refused(
            &status,
            Code::InvalidArgument,
            "PAGE_TOKEN_INVALID",
            "page_token",
        );
    }
    assert_eq!(server.head(), before);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_connection_view_this_server_does_not_know_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "Rowan",
        &["rowan-law.com"],
        "https://idp.rowan-law.com/e",
    )
    .await;
    let before = server.head();
    let status = admin
        .assign_group(pb::AssignGroupRequest {
            connection_id: connection_id.clone(),
            idp_group: "Partners".into(),
            role: "admin".into(),
            view: 7,
            ..Default::default()
        })
        .await
        .expect_err("an unknown view is refused, not read as FULL");
    assert_refused(&status, Code::InvalidArgument, "VIEW_INVALID", "view");
    assert_eq!(server.head(), before, "a refused command appends nothing");
    assert!(get_connection(&mut admin, &connection_id)
        .await
        .groups
        .is_empty());

    let status = admin
        .list_connections(pb::ListConnectionsRequest {
            view: -1,
            ..Default::default()
        })
        .await
        .expect_err("an unknown view is refused in reads too");
    assert_refused(&status, Code::InvalidArgument, "VIEW_INVALID", "view");
    assert_still_serving(&server).await;
}
