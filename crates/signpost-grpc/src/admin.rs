//! gRPC handlers: a few lines each. Authenticate, convert, call the
//! [`ControlPlane`], map the result. Rules live in the domain and the
//! control plane; errors are mapped in [`crate::status`].

use signpost_control::views::ConnectionDetail;
use signpost_control::{
    ControlPlane, Principal, RequestMeta, SettingsInput, SetupFormInput, VerifyMethod,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use signpost_api::admin::v1 as pb;
use signpost_api::admin::v1::connection_admin_service_server::ConnectionAdminService;
use signpost_api::admin::v1::setup_form_service_server::SetupFormService;

mod server;

pub use server::{admin_response, read_admin_request, AdminServer};

use crate::convert::connection_status_i32;
use crate::convert::ToWire;
use crate::status::{invalid_field, to_status};

/// Metadata key naming the person an internal service acts for.
pub const ON_BEHALF_OF_HEADER: &str = "x-signpost-on-behalf-of";
/// Metadata key carrying a correlation id.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// The bearer credential of a request.
pub(crate) fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let missing = || {
        to_status(signpost_control::ControlError::Unauthenticated {
            reason: "CREDENTIALS_MISSING",
            message: "send `authorization: Bearer <token>`".into(),
        })
    };
    let value = metadata
        .get("authorization")
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)
}

fn header(metadata: &MetadataMap, key: &str) -> Result<Option<String>, Status> {
    match metadata.get(key) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.to_owned()))
            .map_err(|_| invalid_field("FIELD_INVALID", key, format!("`{key}` must be ASCII"))),
    }
}

/// A request's `view`: unset means FULL; a value this server does not know is refused,
/// not read as FULL (prost's getter would).
fn connection_detail(view: i32) -> Result<ConnectionDetail, Status> {
    match pb::ConnectionView::try_from(view) {
        Ok(pb::ConnectionView::Basic) => Ok(ConnectionDetail::Basic),
        Ok(pb::ConnectionView::Full | pb::ConnectionView::Unspecified) => {
            Ok(ConnectionDetail::Full)
        }
        Err(_) => Err(invalid_field(
            "VIEW_INVALID",
            "view",
            format!("view {view} is not a ConnectionView (BASIC or FULL)"),
        )),
    }
}

/// Request metadata shared by every mutation.
fn request_meta(
    metadata: &MetadataMap,
    request_id: &str,
    expected_version: Option<u64>,
) -> Result<RequestMeta, Status> {
    Ok(RequestMeta {
        request_id: Some(request_id.to_owned()).filter(|r| !r.is_empty()),
        expected_version,
        correlation_id: header(metadata, CORRELATION_ID_HEADER)?,
        on_behalf_of: header(metadata, ON_BEHALF_OF_HEADER)?,
    })
}

/// `ConnectionAdminService` over a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct AdminApi {
    plane: ControlPlane,
}

impl AdminApi {
    /// Serves `plane`.
    pub fn new(plane: ControlPlane) -> Self {
        Self { plane }
    }

    fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        self.plane
            .authenticate_api_token(bearer(metadata)?)
            .map_err(to_status)
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ConnectionAdminService for AdminApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::CreateOrganizationResponse> {
        let principal = self.principal(request.metadata())?;
        let meta = request_meta(request.metadata(), &request.get_ref().request_id, None)?;
        let r = request.into_inner();
        let done = self
            .plane
            .create_organization(&principal, &meta, &r.display_name, &r.external_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateOrganizationResponse {
            organization: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::GetOrganizationResponse> {
        let principal = self.principal(request.metadata())?;
        let view = self
            .plane
            .get_organization(&principal, &request.get_ref().organization_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(view.to_wire()),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Reply<pb::ListOrganizationsResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let page = self
            .plane
            .list_organizations(&principal, r.page_size, &r.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: page.items.into_iter().map(ToWire::to_wire).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn claim_domain(
        &self,
        request: Request<pb::ClaimDomainRequest>,
    ) -> Reply<pb::ClaimDomainResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let done = self
            .plane
            .claim_domain(&principal, &meta, &r.organization_id, &r.domain)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ClaimDomainResponse {
            domain_claim: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn verify_domain(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Reply<pb::VerifyDomainResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let method = match r.method() {
            pb::VerifyDomainMethod::Dns => Some(VerifyMethod::Dns),
            pb::VerifyDomainMethod::Manual => Some(VerifyMethod::Manual {
                note: r.note.clone(),
            }),
            pb::VerifyDomainMethod::Unspecified => None,
        };
        let done = self
            .plane
            .verify_domain(&principal, &meta, &r.organization_id, &r.domain, method)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::VerifyDomainResponse {
            domain_claim: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn release_domain(
        &self,
        request: Request<pb::ReleaseDomainRequest>,
    ) -> Reply<pb::ReleaseDomainResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let position = self
            .plane
            .release_domain(&principal, &meta, &r.organization_id, &r.domain)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ReleaseDomainResponse {
            log_position: position,
        }))
    }

    async fn set_sso_policy(
        &self,
        request: Request<pb::SetSsoPolicyRequest>,
    ) -> Reply<pb::SetSsoPolicyResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let done = self
            .plane
            .set_sso_policy(&principal, &meta, &r.organization_id, r.policy())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SetSsoPolicyResponse {
            organization: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn issue_setup_link(
        &self,
        request: Request<pb::IssueSetupLinkRequest>,
    ) -> Reply<pb::IssueSetupLinkResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, None)?;
        let done = self
            .plane
            .issue_setup_link(
                &principal,
                &meta,
                &signpost_control::IssueSetupLink {
                    organization_id: r.organization_id.clone(),
                    intent: r.intent(),
                    connection_id: r.connection_id.clone(),
                    recipient_email: r.recipient_email.clone(),
                    lifetime_seconds: r.lifetime_seconds,
                },
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::IssueSetupLinkResponse {
            setup_link: Some(done.value.link.to_wire()),
            url: done.value.url,
            log_position: done.position,
            superseded_setup_link_ids: done.value.superseded,
        }))
    }

    async fn revoke_setup_link(
        &self,
        request: Request<pb::RevokeSetupLinkRequest>,
    ) -> Reply<pb::RevokeSetupLinkResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, None)?;
        let done = self
            .plane
            .revoke_setup_link(&principal, &meta, &r.setup_link_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RevokeSetupLinkResponse {
            setup_link: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn get_setup_link(
        &self,
        request: Request<pb::GetSetupLinkRequest>,
    ) -> Reply<pb::GetSetupLinkResponse> {
        let principal = self.principal(request.metadata())?;
        let view = self
            .plane
            .get_setup_link(&principal, &request.get_ref().setup_link_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetSetupLinkResponse {
            setup_link: Some(view.to_wire()),
        }))
    }

    async fn list_setup_links(
        &self,
        request: Request<pb::ListSetupLinksRequest>,
    ) -> Reply<pb::ListSetupLinksResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let page = self
            .plane
            .list_setup_links(&principal, &r.organization_id, r.page_size, &r.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListSetupLinksResponse {
            setup_links: page.items.into_iter().map(ToWire::to_wire).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Reply<pb::GetConnectionResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let detail = connection_detail(r.view)?;
        let view = self
            .plane
            .get_connection(&principal, &r.connection_id, detail)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetConnectionResponse {
            connection: Some(view.to_wire()),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Reply<pb::ListConnectionsResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let detail = connection_detail(r.view)?;
        let page = self
            .plane
            .list_connections(
                &principal,
                &r.organization_id,
                r.page_size,
                &r.page_token,
                detail,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListConnectionsResponse {
            connections: page.items.into_iter().map(ToWire::to_wire).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn assign_group(
        &self,
        request: Request<pb::AssignGroupRequest>,
    ) -> Reply<pb::AssignGroupResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let detail = connection_detail(r.view)?;
        let done = self
            .plane
            .assign_group(
                &principal,
                &meta,
                &r.connection_id,
                &r.idp_group,
                &r.role,
                detail,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AssignGroupResponse {
            connection: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn unassign_group(
        &self,
        request: Request<pb::UnassignGroupRequest>,
    ) -> Reply<pb::UnassignGroupResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let detail = connection_detail(r.view)?;
        let done = self
            .plane
            .unassign_group(&principal, &meta, &r.connection_id, &r.idp_group, detail)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UnassignGroupResponse {
            connection: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn set_group_requirement(
        &self,
        request: Request<pb::SetGroupRequirementRequest>,
    ) -> Reply<pb::SetGroupRequirementResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let detail = connection_detail(r.view)?;
        let done = self
            .plane
            .set_group_requirement(&principal, &meta, &r.connection_id, r.require_group, detail)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SetGroupRequirementResponse {
            connection: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn activate_connection(
        &self,
        request: Request<pb::ActivateConnectionRequest>,
    ) -> Reply<pb::ActivateConnectionResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let detail = connection_detail(r.view)?;
        let done = self
            .plane
            .activate_connection(&principal, &meta, &r.connection_id, detail)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ActivateConnectionResponse {
            connection: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn deactivate_connection(
        &self,
        request: Request<pb::DeactivateConnectionRequest>,
    ) -> Reply<pb::DeactivateConnectionResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let detail = connection_detail(r.view)?;
        let done = self
            .plane
            .deactivate_connection(&principal, &meta, &r.connection_id, detail)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeactivateConnectionResponse {
            connection: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }

    async fn switch_provider(
        &self,
        request: Request<pb::SwitchProviderRequest>,
    ) -> Reply<pb::SwitchProviderResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, r.expected_version)?;
        let done = self
            .plane
            .switch_provider(&principal, &meta, &r.organization_id, &r.connection_id)
            .await
            .map_err(to_status)?;
        let (organization, previous) = done.value;
        Ok(Response::new(pb::SwitchProviderResponse {
            organization: Some(organization.to_wire()),
            previous_connection_id: previous,
            log_position: done.position,
        }))
    }

    async fn mint_api_token(
        &self,
        request: Request<pb::MintApiTokenRequest>,
    ) -> Reply<pb::MintApiTokenResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, None)?;
        let done = self
            .plane
            .mint_api_token(&principal, &meta, &r.name, r.role(), &r.organization_scope)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MintApiTokenResponse {
            api_token: Some(done.value.token.to_wire()),
            token: done.value.secret,
            log_position: done.position,
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Reply<pb::ListApiTokensResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let page = self
            .plane
            .list_api_tokens(&principal, r.page_size, &r.page_token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListApiTokensResponse {
            api_tokens: page.items.into_iter().map(ToWire::to_wire).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Reply<pb::RevokeApiTokenResponse> {
        let principal = self.principal(request.metadata())?;
        let r = request.get_ref();
        let meta = request_meta(request.metadata(), &r.request_id, None)?;
        let done = self
            .plane
            .revoke_api_token(&principal, &meta, &r.token_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RevokeApiTokenResponse {
            api_token: Some(done.value.to_wire()),
            log_position: done.position,
        }))
    }
}

/// `SetupFormService` over a [`ControlPlane`], authorized by setup link tokens.
#[derive(Debug, Clone)]
pub struct SetupFormApi {
    plane: ControlPlane,
}

impl SetupFormApi {
    /// Serves `plane`.
    pub fn new(plane: ControlPlane) -> Self {
        Self { plane }
    }

    fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        self.plane
            .authenticate_setup_link(bearer(metadata)?)
            .map_err(to_status)
    }
}

#[tonic::async_trait]
impl SetupFormService for SetupFormApi {
    async fn get_setup_form(
        &self,
        request: Request<pb::GetSetupFormRequest>,
    ) -> Reply<pb::GetSetupFormResponse> {
        let principal = self.principal(request.metadata())?;
        let view = self.plane.setup_form(&principal).await.map_err(to_status)?;
        Ok(Response::new(view.to_wire()))
    }

    async fn submit_setup_form(
        &self,
        request: Request<pb::SubmitSetupFormRequest>,
    ) -> Reply<pb::SubmitSetupFormResponse> {
        let principal = self.principal(request.metadata())?;
        let meta = request_meta(request.metadata(), &request.get_ref().request_id, None)?;
        let r = request.into_inner();
        let settings = match r.settings {
            Some(pb::submit_setup_form_request::Settings::SamlMetadataUrl(url)) => {
                SettingsInput::SamlMetadataUrl(url)
            }
            Some(pb::submit_setup_form_request::Settings::SamlMetadataXml(xml)) => {
                SettingsInput::SamlMetadataXml(xml)
            }
            Some(pb::submit_setup_form_request::Settings::SamlManual(m)) => {
                SettingsInput::SamlManual {
                    entity_id: m.idp_entity_id,
                    sso_url: m.sso_url,
                    certificate_pem: m.certificate_pem,
                }
            }
            Some(pb::submit_setup_form_request::Settings::Oidc(o)) => SettingsInput::Oidc {
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret: o.client_secret,
                scopes: o.scopes,
            },
            None => {
                return Err(invalid_field(
                    "FIELD_REQUIRED",
                    "settings",
                    "give SAML metadata, SAML settings or OIDC settings",
                ))
            }
        };
        let form = SetupFormInput {
            provider_preset: r.provider_preset,
            settings,
            claim_mapping: r.claim_mapping.unwrap_or_default(),
        };
        let done = self
            .plane
            .submit_setup_form(&principal, &meta, form)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SubmitSetupFormResponse {
            connection_id: done.connection_id,
            status: connection_status_i32(done.status),
            submission: done.submission,
            log_position: done.position,
        }))
    }
}
