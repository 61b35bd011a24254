//! The admin CLI: the same `signpost` binary, talking gRPC to a control plane.
//! Human-readable output by default, `--json` for scripts. The bearer token
//! comes from `--token`, `SIGNPOST_TOKEN`, or the bootstrap token file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use signpost_api::admin::v1 as pb;
use signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient;
use signpost_api::admin::v1::setup_form_service_client::SetupFormServiceClient;
use signpost_api::log::v1 as schema;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::config::ServeArgs;
use crate::output::print;

/// Signpost: event-sourced control plane for enterprise SSO connections.
#[derive(Debug, Parser)]
#[command(name = "signpost", version)]
pub struct Cli {
    /// Control plane address (for the admin commands).
    #[arg(
        long,
        global = true,
        env = "SIGNPOST_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// API token (for the admin commands) [default: read from --token-file].
    #[arg(long, global = true, env = "SIGNPOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token.
    #[arg(
        long,
        global = true,
        env = "SIGNPOST_TOKEN_FILE",
        default_value = "./signpost-data/bootstrap-admin.token"
    )]
    pub token_file: PathBuf,
    /// Print replies as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// The person a change is made for (sent as `x-signpost-on-behalf-of`, recorded in the log).
    #[arg(long, global = true, env = "SIGNPOST_ON_BEHALF_OF")]
    pub on_behalf_of: Option<String>,
    /// How much of a connection `conn` and `group` commands show: `basic` leaves out the
    /// IdP settings, claim mapping and our SP details.
    #[arg(long, global = true, value_enum, default_value_t = ViewArg::Full)]
    pub view: ViewArg,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Organizations.
    #[command(subcommand, alias = "organization")]
    Org(OrgCommand),
    /// Domain claims.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// SSO policy.
    Policy {
        /// Organization id.
        organization_id: String,
        /// The policy.
        policy: PolicyArg,
    },
    /// Setup links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Connections: show, list, activate, deactivate, switch.
    #[command(subcommand, alias = "connection")]
    Conn(ConnCommand),
    /// Group → role assignments.
    #[command(subcommand)]
    Group(GroupCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The setup form, as the IT admin holding a link fills it.
    #[command(subcommand)]
    Form(FormCommand),
    /// The audit timeline: list, export, verify, point in time, checkpoints (auditor or admin).
    #[command(subcommand)]
    Audit(crate::cli_audit::AuditCommand),
    /// The raw event log: export it for offline verification (admin).
    #[command(subcommand)]
    Log(crate::cli_audit::LogCommand),
}

/// Options every mutation takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MutationArgs {
    /// Idempotency key: a retry with the same id returns the first outcome.
    #[arg(long, default_value = "")]
    pub request_id: String,
    /// Fail with ABORTED unless the resource is at this version.
    #[arg(long)]
    pub expected_version: Option<u64>,
}

/// `signpost org ...`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// The platform's own id for it.
        #[arg(long)]
        external_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Show one organization.
    Get {
        /// Organization id.
        organization_id: String,
    },
    /// List organizations.
    List {
        /// Page size.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Page token from a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

/// `signpost domain ...`
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Claim a domain (pending until verified).
    Claim {
        /// Organization id.
        organization_id: String,
        /// The domain.
        domain: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Verify a claim by DNS TXT, or manually with --manual and a note saying how.
    Verify {
        /// Organization id.
        organization_id: String,
        /// The domain.
        domain: String,
        /// Verify manually, with this note (recorded with who did it).
        #[arg(long, value_name = "NOTE")]
        manual: Option<String>,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Release a claim.
    Release {
        /// Organization id.
        organization_id: String,
        /// The domain.
        domain: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
}

/// How much of a connection an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewArg {
    /// Ids, status, protocol, groups and version.
    Basic,
    /// Everything, with our SP details.
    Full,
}

impl ViewArg {
    fn wire(self) -> i32 {
        match self {
            ViewArg::Basic => pb::ConnectionView::Basic as i32,
            ViewArg::Full => pb::ConnectionView::Full as i32,
        }
    }
}

/// An SSO policy.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    /// SSO or password.
    Optional,
    /// SSO only.
    Enforced,
}

/// A setup link intent.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IntentArg {
    /// Set up a new connection.
    New,
    /// Update an existing connection.
    Update,
    /// Stage a provider switch.
    Switch,
}

/// `signpost link ...`
#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Issue a setup link (revokes older open links of the same intent).
    Issue {
        /// Organization id.
        organization_id: String,
        /// What the link is for.
        #[arg(long, value_enum, default_value = "new")]
        intent: IntentArg,
        /// The IT admin's email.
        #[arg(long)]
        recipient: String,
        /// For --intent update: the connection to update.
        #[arg(long, default_value = "")]
        connection: String,
        /// Lifetime in hours (default 72, at most 720).
        #[arg(long)]
        lifetime_hours: Option<u64>,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Revoke a setup link.
    Revoke {
        /// Setup link id.
        setup_link_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Show a setup link.
    Get {
        /// Setup link id.
        setup_link_id: String,
    },
    /// List setup links.
    List {
        /// Only this organization's.
        #[arg(long, default_value = "")]
        org: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Page token.
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

/// `signpost conn ...`
#[derive(Debug, Subcommand)]
pub enum ConnCommand {
    /// Show a connection.
    Get {
        /// Connection id.
        connection_id: String,
    },
    /// List connections.
    List {
        /// Only this organization's.
        #[arg(long, default_value = "")]
        org: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Page token.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Make a configured connection active.
    Activate {
        /// Connection id.
        connection_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Switch the active connection off.
    Deactivate {
        /// Connection id.
        connection_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Make a standby (or previously active) connection the active one.
    Switch {
        /// Organization id.
        organization_id: String,
        /// The connection to activate.
        connection_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
}

/// `signpost group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Map an IdP group to an application role.
    Assign {
        /// Connection id.
        connection_id: String,
        /// IdP group name.
        group: String,
        /// Application role.
        role: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Remove a group mapping.
    Unassign {
        /// Connection id.
        connection_id: String,
        /// IdP group name.
        group: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// Require (true) or stop requiring (false) an assigned group.
    Require {
        /// Connection id.
        connection_id: String,
        /// Whether membership is required.
        #[arg(action = clap::ArgAction::Set)]
        required: bool,
        #[command(flatten)]
        mutation: MutationArgs,
    },
}

/// A token role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Routing reads (login edges).
    Edge,
    /// Audit reads.
    Auditor,
}

/// `signpost token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token (printed once).
    Mint {
        /// A name for it.
        #[arg(long)]
        name: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Auditor tokens only: the one organization it may read.
        #[arg(long, default_value = "")]
        scope: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        token_id: String,
        #[command(flatten)]
        mutation: MutationArgs,
    },
}

/// `signpost form ...` (authorized by the setup link, not an API token).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum FormCommand {
    /// Show what the form needs (SP details, presets).
    Show {
        /// The setup link URL (or its bare token).
        #[arg(long)]
        link: String,
    },
    /// Submit the form.
    Submit {
        /// The setup link URL (or its bare token).
        #[arg(long)]
        link: String,
        /// Provider preset id (okta, entra_id, google_workspace, onelogin, generic_saml, generic_oidc).
        #[arg(long, default_value = "generic_saml")]
        preset: String,
        /// SAML: the IdP's metadata URL.
        #[arg(long, group = "settings")]
        metadata_url: Option<String>,
        /// SAML: a file with the IdP's metadata XML.
        #[arg(long, group = "settings")]
        metadata_file: Option<PathBuf>,
        /// OIDC: the issuer URL.
        #[arg(long, group = "settings")]
        oidc_issuer: Option<String>,
        /// OIDC: client id.
        #[arg(long, default_value = "")]
        client_id: String,
        /// OIDC: environment variable holding the client secret (kept off the command line).
        #[arg(long, default_value = "SIGNPOST_CLIENT_SECRET")]
        client_secret_env: String,
        /// Claim carrying the email.
        #[arg(long, default_value = "email")]
        email_claim: String,
        /// Claim carrying the groups.
        #[arg(long, default_value = "")]
        groups_claim: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
}

type Admin = ConnectionAdminServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// Adds `authorization: Bearer <token>` and optional headers to every call.
#[derive(Clone)]
pub struct BearerInterceptor {
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    on_behalf_of: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(person) = &self.on_behalf_of {
            request
                .metadata_mut()
                .insert(signpost_grpc::ON_BEHALF_OF_HEADER, person.clone());
        }
        Ok(request)
    }
}

/// An interceptor adding `authorization: Bearer <token>` (and the on-behalf-of header when given).
pub fn interceptor(token: &str, on_behalf_of: Option<&str>) -> anyhow::Result<BearerInterceptor> {
    Ok(BearerInterceptor {
        authorization: format!("Bearer {token}")
            .parse()
            .context("the token is not valid header text")?,
        on_behalf_of: on_behalf_of
            .map(|p| p.parse())
            .transpose()
            .context("--on-behalf-of must be ASCII")?,
    })
}

/// Connects to the control plane.
pub(crate) async fn channel(server: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(server.to_owned())
        .context("invalid --server")?
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))
}

/// The API token from `--token`, `SIGNPOST_TOKEN` or the token file.
pub(crate) fn api_token(cli: &Cli) -> anyhow::Result<String> {
    if let Some(token) = &cli.token {
        return Ok(token.trim().to_owned());
    }
    let text = std::fs::read_to_string(&cli.token_file).with_context(|| {
        format!(
            "reading the API token from {} (or pass --token / SIGNPOST_TOKEN)",
            cli.token_file.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

/// The token inside a setup link URL (fragment), or a bare token.
fn link_token(link: &str) -> String {
    link.rsplit_once('#')
        .map(|(_, token)| token)
        .unwrap_or(link)
        .trim()
        .to_owned()
}

/// Prints a failed call: code, message, machine-readable reason and field.
pub fn report_status(status: &tonic::Status, json: bool) {
    let details = status.get_error_details();
    let reason = details
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default();
    let field = details
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .map(|v| v.field.clone())
        .unwrap_or_default();
    if json {
        let value = serde_json::json!({
            "error": { "code": format!("{:?}", status.code()), "message": status.message(), "reason": reason, "field": field }
        });
        eprintln!("{value}");
    } else {
        let mut line = format!("error: {:?}: {}", status.code(), status.message());
        if !reason.is_empty() {
            line.push_str(&format!(" (reason: {reason}"));
            if !field.is_empty() {
                line.push_str(&format!(", field: {field}"));
            }
            line.push(')');
        }
        eprintln!("{line}");
    }
}

macro_rules! show {
    ($cli:expr, $call:expr, $name:literal) => {{
        let reply = $call.await?.into_inner();
        print(&reply, concat!("signpost.admin.v1.", $name), $cli.json);
    }};
}

/// Runs an admin or form command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Form(form) => return run_form(&cli, form).await,
        Command::Audit(crate::cli_audit::AuditCommand::Checkpoint(
            crate::cli_audit::CheckpointCommand::Verify {
                checkpoint,
                offline,
                log,
                public_key,
            },
        )) => {
            return crate::cli_audit::verify_checkpoint(
                &cli,
                checkpoint,
                *offline,
                log.as_ref(),
                public_key.as_deref(),
            )
            .await
        }
        Command::Audit(audit) => return crate::cli_audit::run_audit(&cli, audit).await,
        Command::Log(log) => return crate::cli_audit::run_log(&cli, log).await,
        _ => {}
    }
    let token = api_token(&cli)?;
    let mut admin: Admin = ConnectionAdminServiceClient::with_interceptor(
        channel(&cli.server).await?,
        interceptor(&token, cli.on_behalf_of.as_deref())?,
    );
    match &cli.command {
        Command::Org(OrgCommand::Create {
            name,
            external_id,
            mutation,
        }) => show!(
            cli,
            admin.create_organization(pb::CreateOrganizationRequest {
                display_name: name.clone(),
                external_id: external_id.clone(),
                request_id: mutation.request_id.clone(),
            }),
            "CreateOrganizationResponse"
        ),
        Command::Org(OrgCommand::Get { organization_id }) => show!(
            cli,
            admin.get_organization(pb::GetOrganizationRequest {
                organization_id: organization_id.clone()
            }),
            "GetOrganizationResponse"
        ),
        Command::Org(OrgCommand::List {
            page_size,
            page_token,
        }) => show!(
            cli,
            admin.list_organizations(pb::ListOrganizationsRequest {
                page_size: *page_size,
                page_token: page_token.clone()
            }),
            "ListOrganizationsResponse"
        ),
        Command::Domain(DomainCommand::Claim {
            organization_id,
            domain,
            mutation,
        }) => show!(
            cli,
            admin.claim_domain(pb::ClaimDomainRequest {
                organization_id: organization_id.clone(),
                domain: domain.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
            }),
            "ClaimDomainResponse"
        ),
        Command::Domain(DomainCommand::Verify {
            organization_id,
            domain,
            manual,
            mutation,
        }) => {
            let method = if manual.is_some() {
                pb::VerifyDomainMethod::Manual
            } else {
                pb::VerifyDomainMethod::Dns
            };
            show!(
                cli,
                admin.verify_domain(pb::VerifyDomainRequest {
                    organization_id: organization_id.clone(),
                    domain: domain.clone(),
                    method: method as i32,
                    note: manual.clone().unwrap_or_default(),
                    request_id: mutation.request_id.clone(),
                    expected_version: mutation.expected_version,
                }),
                "VerifyDomainResponse"
            )
        }
        Command::Domain(DomainCommand::Release {
            organization_id,
            domain,
            mutation,
        }) => show!(
            cli,
            admin.release_domain(pb::ReleaseDomainRequest {
                organization_id: organization_id.clone(),
                domain: domain.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
            }),
            "ReleaseDomainResponse"
        ),
        Command::Policy {
            organization_id,
            policy,
        } => {
            let policy = match policy {
                PolicyArg::Optional => schema::SsoPolicy::Optional,
                PolicyArg::Enforced => schema::SsoPolicy::Enforced,
            };
            show!(
                cli,
                admin.set_sso_policy(pb::SetSsoPolicyRequest {
                    organization_id: organization_id.clone(),
                    policy: policy as i32,
                    ..Default::default()
                }),
                "SetSsoPolicyResponse"
            )
        }
        Command::Link(LinkCommand::Issue {
            organization_id,
            intent,
            recipient,
            connection,
            lifetime_hours,
            mutation,
        }) => {
            let intent = match intent {
                IntentArg::New => schema::SetupIntent::NewConnection,
                IntentArg::Update => schema::SetupIntent::UpdateConnection,
                IntentArg::Switch => schema::SetupIntent::StageSwitch,
            };
            show!(
                cli,
                admin.issue_setup_link(pb::IssueSetupLinkRequest {
                    organization_id: organization_id.clone(),
                    intent: intent as i32,
                    connection_id: connection.clone(),
                    recipient_email: recipient.clone(),
                    lifetime_seconds: lifetime_hours.map(|h| h.saturating_mul(3600)).unwrap_or(0),
                    request_id: mutation.request_id.clone(),
                }),
                "IssueSetupLinkResponse"
            )
        }
        Command::Link(LinkCommand::Revoke {
            setup_link_id,
            mutation,
        }) => show!(
            cli,
            admin.revoke_setup_link(pb::RevokeSetupLinkRequest {
                setup_link_id: setup_link_id.clone(),
                request_id: mutation.request_id.clone()
            }),
            "RevokeSetupLinkResponse"
        ),
        Command::Link(LinkCommand::Get { setup_link_id }) => show!(
            cli,
            admin.get_setup_link(pb::GetSetupLinkRequest {
                setup_link_id: setup_link_id.clone()
            }),
            "GetSetupLinkResponse"
        ),
        Command::Link(LinkCommand::List {
            org,
            page_size,
            page_token,
        }) => show!(
            cli,
            admin.list_setup_links(pb::ListSetupLinksRequest {
                organization_id: org.clone(),
                page_size: *page_size,
                page_token: page_token.clone()
            }),
            "ListSetupLinksResponse"
        ),
        Command::Conn(ConnCommand::Get { connection_id }) => show!(
            cli,
            admin.get_connection(pb::GetConnectionRequest {
                connection_id: connection_id.clone(),
                view: cli.view.wire(),
            }),
            "GetConnectionResponse"
        ),
        Command::Conn(ConnCommand::List {
            org,
            page_size,
            page_token,
        }) => show!(
            cli,
            admin.list_connections(pb::ListConnectionsRequest {
                organization_id: org.clone(),
                page_size: *page_size,
                page_token: page_token.clone(),
                view: cli.view.wire(),
            }),
            "ListConnectionsResponse"
        ),
        Command::Conn(ConnCommand::Activate {
            connection_id,
            mutation,
        }) => show!(
            cli,
            admin.activate_connection(pb::ActivateConnectionRequest {
                connection_id: connection_id.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
                view: cli.view.wire(),
            }),
            "ActivateConnectionResponse"
        ),
        Command::Conn(ConnCommand::Deactivate {
            connection_id,
            mutation,
        }) => show!(
            cli,
            admin.deactivate_connection(pb::DeactivateConnectionRequest {
                connection_id: connection_id.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
                view: cli.view.wire(),
            }),
            "DeactivateConnectionResponse"
        ),
        Command::Conn(ConnCommand::Switch {
            organization_id,
            connection_id,
            mutation,
        }) => show!(
            cli,
            admin.switch_provider(pb::SwitchProviderRequest {
                organization_id: organization_id.clone(),
                connection_id: connection_id.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
            }),
            "SwitchProviderResponse"
        ),
        Command::Group(GroupCommand::Assign {
            connection_id,
            group,
            role,
            mutation,
        }) => show!(
            cli,
            admin.assign_group(pb::AssignGroupRequest {
                connection_id: connection_id.clone(),
                idp_group: group.clone(),
                role: role.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
                view: cli.view.wire(),
            }),
            "AssignGroupResponse"
        ),
        Command::Group(GroupCommand::Unassign {
            connection_id,
            group,
            mutation,
        }) => show!(
            cli,
            admin.unassign_group(pb::UnassignGroupRequest {
                connection_id: connection_id.clone(),
                idp_group: group.clone(),
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
                view: cli.view.wire(),
            }),
            "UnassignGroupResponse"
        ),
        Command::Group(GroupCommand::Require {
            connection_id,
            required,
            mutation,
        }) => show!(
            cli,
            admin.set_group_requirement(pb::SetGroupRequirementRequest {
                connection_id: connection_id.clone(),
                require_group: *required,
                request_id: mutation.request_id.clone(),
                expected_version: mutation.expected_version,
                view: cli.view.wire(),
            }),
            "SetGroupRequirementResponse"
        ),
        Command::Token(TokenCommand::Mint {
            name,
            role,
            scope,
            mutation,
        }) => {
            let role = match role {
                RoleArg::Admin => schema::TokenRole::Admin,
                RoleArg::Edge => schema::TokenRole::Edge,
                RoleArg::Auditor => schema::TokenRole::Auditor,
            };
            show!(
                cli,
                admin.mint_api_token(pb::MintApiTokenRequest {
                    name: name.clone(),
                    role: role as i32,
                    organization_scope: scope.clone(),
                    request_id: mutation.request_id.clone(),
                }),
                "MintApiTokenResponse"
            )
        }
        Command::Token(TokenCommand::List) => {
            show!(
                cli,
                admin.list_api_tokens(pb::ListApiTokensRequest::default()),
                "ListApiTokensResponse"
            )
        }
        Command::Token(TokenCommand::Revoke { token_id, mutation }) => show!(
            cli,
            admin.revoke_api_token(pb::RevokeApiTokenRequest {
                token_id: token_id.clone(),
                request_id: mutation.request_id.clone()
            }),
            "RevokeApiTokenResponse"
        ),
        Command::Serve(_) | Command::Form(_) | Command::Audit(_) | Command::Log(_) => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

async fn run_form(cli: &Cli, form: &FormCommand) -> anyhow::Result<()> {
    let link = match form {
        FormCommand::Show { link } | FormCommand::Submit { link, .. } => link_token(link),
    };
    let mut client = SetupFormServiceClient::with_interceptor(
        channel(&cli.server).await?,
        interceptor(&link, None)?,
    );
    match form {
        FormCommand::Show { .. } => {
            show!(
                cli,
                client.get_setup_form(pb::GetSetupFormRequest {}),
                "GetSetupFormResponse"
            )
        }
        FormCommand::Submit {
            preset,
            metadata_url,
            metadata_file,
            oidc_issuer,
            client_id,
            client_secret_env,
            email_claim,
            groups_claim,
            request_id,
            ..
        } => {
            use pb::submit_setup_form_request::Settings;
            let settings = if let Some(url) = metadata_url {
                Settings::SamlMetadataUrl(url.clone())
            } else if let Some(file) = metadata_file {
                Settings::SamlMetadataXml(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?,
                )
            } else if let Some(issuer) = oidc_issuer {
                let client_secret = std::env::var(client_secret_env)
                    .with_context(|| format!("set the client secret in ${client_secret_env}"))?;
                Settings::Oidc(pb::OidcForm {
                    issuer: issuer.clone(),
                    client_id: client_id.clone(),
                    client_secret,
                    scopes: vec![],
                })
            } else {
                anyhow::bail!("give --metadata-url, --metadata-file or --oidc-issuer");
            };
            show!(
                cli,
                client.submit_setup_form(pb::SubmitSetupFormRequest {
                    provider_preset: preset.clone(),
                    settings: Some(settings),
                    claim_mapping: Some(schema::ClaimMapping {
                        email: email_claim.clone(),
                        groups: groups_claim.clone(),
                        ..Default::default()
                    }),
                    request_id: request_id.clone(),
                }),
                "SubmitSetupFormResponse"
            )
        }
    }
    Ok(())
}
