//! [`AdminServer`]: `ConnectionAdminService` as served. Every method is read and answered
//! by [`crate::unary`] (one buffer for the request, the answer encoded once into a buffer
//! of its size) and handled by [`AdminApi`], the generated service's own handlers. A
//! path this table does not name, and every call while compression is enabled, goes to
//! the generated server.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use signpost_api::admin::v1::connection_admin_service_server::{
    ConnectionAdminService, ConnectionAdminServiceServer, SERVICE_NAME,
};
use tonic::codegen::{http, Body, BoxFuture, CompressionEncoding, Service, StdError};
use tonic::server::NamedService;

use super::AdminApi;
use crate::unary::{self, Limits};

/// `ConnectionAdminService` over an [`AdminApi`], each unary call served without tonic's
/// codec streams ([`crate::unary`]); message size settings apply as on the generated
/// server.
#[derive(Debug, Clone)]
pub struct AdminServer {
    api: Arc<AdminApi>,
    generated: ConnectionAdminServiceServer<AdminApi>,
    limits: Limits,
    compression: bool,
}

impl AdminServer {
    /// Serves `api`.
    pub fn new(api: AdminApi) -> Self {
        let api = Arc::new(api);
        Self {
            generated: ConnectionAdminServiceServer::from_arc(api.clone()),
            api,
            limits: Limits::default(),
            compression: false,
        }
    }

    /// Largest request message accepted (tonic's default: 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.limits.max_request = Some(limit);
        self.generated = self.generated.max_decoding_message_size(limit);
        self
    }

    /// Largest response message sent (tonic's default: no limit).
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.limits.max_message = Some(limit);
        self.generated = self.generated.max_encoding_message_size(limit);
        self
    }

    /// Accepts requests compressed with `encoding`: every call then goes through the
    /// generated server.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.compression = true;
        self.generated = self.generated.accept_compressed(encoding);
        self
    }

    /// Compresses responses with `encoding` when the client accepts it: every call then
    /// goes through the generated server.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.compression = true;
        self.generated = self.generated.send_compressed(encoding);
        self
    }
}

/// Reads the one request message of `ConnectionAdminService` method `method` (such as
/// `"AssignGroup"`) as [`AdminServer`] reads it, with the call's metadata. Public, with
/// [`admin_response`], so that a server answering an admin method on its own (the
/// benchmark's durable do-nothing `AssignGroup`) reads and writes it the same way.
pub async fn read_admin_request<M, B>(
    method: &'static str,
    request: http::Request<B>,
    max_request: Option<usize>,
) -> Result<tonic::Request<M>, tonic::Status>
where
    M: prost::Message + Default,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    unary::read_request(method, request, max_request).await
}

/// The HTTP response [`AdminServer`] writes for `method`'s `answer` (no metadata): the
/// message encoded once into a buffer of its size, then `grpc-status: 0`; a refusal is
/// its status alone.
pub fn admin_response(
    method: &str,
    answer: Result<impl prost::Message, tonic::Status>,
    max_message: Option<usize>,
) -> http::Response<tonic::body::Body> {
    unary::response(answer.and_then(|answer| unary::encode(method, &answer, max_message)))
}

impl NamedService for AdminServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// The methods served by [`unary::serve`]: `"Method" => handler`, the handler being the
/// generated trait's method, so the request and answer types are its own.
macro_rules! serve_methods {
    ($server:expr, $request:expr, { $($name:literal => $method:ident),* $(,)? }) => {{
        let method = $request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(SERVICE_NAME))
            .and_then(|path| path.strip_prefix('/'))
            .unwrap_or_default();
        match method {
            $(
                $name => {
                    let api = $server.api.clone();
                    let limits = $server.limits;
                    let request = $request;
                    let served: BoxFuture<http::Response<tonic::body::Body>, Infallible> =
                        Box::pin(async move {
                            Ok(unary::serve($name, request, limits, |request| async move {
                                api.$method(request).await
                            })
                            .await)
                        });
                    return served;
                }
            )*
            _ => {}
        }
        $request
    }};
}

impl<B> Service<http::Request<B>> for AdminServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.compression {
            return self.generated.call(request);
        }
        let request = serve_methods!(self, request, {
            "CreateOrganization" => create_organization,
            "GetOrganization" => get_organization,
            "ListOrganizations" => list_organizations,
            "ClaimDomain" => claim_domain,
            "VerifyDomain" => verify_domain,
            "ReleaseDomain" => release_domain,
            "SetSsoPolicy" => set_sso_policy,
            "IssueSetupLink" => issue_setup_link,
            "RevokeSetupLink" => revoke_setup_link,
            "GetSetupLink" => get_setup_link,
            "ListSetupLinks" => list_setup_links,
            "GetConnection" => get_connection,
            "ListConnections" => list_connections,
            "AssignGroup" => assign_group,
            "UnassignGroup" => unassign_group,
            "SetGroupRequirement" => set_group_requirement,
            "ActivateConnection" => activate_connection,
            "DeactivateConnection" => deactivate_connection,
            "SwitchProvider" => switch_provider,
            "MintApiToken" => mint_api_token,
            "ListApiTokens" => list_api_tokens,
            "RevokeApiToken" => revoke_api_token,
        });
        self.generated.call(request)
    }
}
