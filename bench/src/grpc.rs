//! gRPC plumbing shared by the scenarios: HTTP/2 connections, the bearer
//! interceptor and typed Signpost clients.

use std::time::Duration;

use signpost_api::admin::v1::connection_admin_service_client::ConnectionAdminServiceClient;
use signpost_api::audit::v1::audit_service_client::AuditServiceClient;
use signpost_api::routing::v1::routing_service_client::RoutingServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the bearer token.
#[derive(Clone)]
pub struct Bearer(pub MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A routing client.
pub type Routing = RoutingServiceClient<InterceptedService<Channel, Bearer>>;
/// An admin client.
pub type Admin = ConnectionAdminServiceClient<InterceptedService<Channel, Bearer>>;
/// An audit client.
pub type Audit = AuditServiceClient<InterceptedService<Channel, Bearer>>;

/// Opens `count` HTTP/2 connections to `url` (`http://host:port`). Both
/// peers are reached through these, so they get the same client stack.
pub async fn channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            Channel::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// `http://addr`.
pub fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

/// The bearer interceptor for `token`.
pub fn bearer(token: &str) -> Bearer {
    Bearer(format!("Bearer {token}").parse().expect("ASCII token"))
}

/// A routing client on `channel`.
pub fn routing(channel: &Channel, token: &str) -> Routing {
    RoutingServiceClient::with_interceptor(channel.clone(), bearer(token))
        .max_decoding_message_size(256 << 20)
}

/// An admin client on `channel`.
pub fn admin(channel: &Channel, token: &str) -> Admin {
    ConnectionAdminServiceClient::with_interceptor(channel.clone(), bearer(token))
}

/// An audit client on `channel`.
pub fn audit(channel: &Channel, token: &str) -> Audit {
    AuditServiceClient::with_interceptor(channel.clone(), bearer(token))
        .max_decoding_message_size(256 << 20)
}
