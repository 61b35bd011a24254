//! The DNS resolver handed to reqwest: it resolves, checks every address, and returns
//! only checked addresses, so the connection goes exactly where the check looked.
//!
//! Resolution happens once per connection, inside the connector, which closes the
//! check-then-reresolve gap that DNS rebinding exploits. reqwest does not call the
//! resolver for IP-literal hosts; those are checked by the fetcher before the request.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address::{check_address, ForbiddenRange};
use crate::error::FetchError;

/// A refusal raised inside the connector; the fetcher finds it again in the error chain
/// of the reqwest error to report the precise reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveRefusal {
    #[error("host `{host}` is not a public internet address ({range})")]
    Forbidden {
        host: String,
        address: IpAddr,
        range: ForbiddenRange,
    },
    #[error("dns lookup for `{host}` failed: {detail}")]
    Lookup { host: String, detail: String },
}

impl From<&ResolveRefusal> for FetchError {
    fn from(refusal: &ResolveRefusal) -> Self {
        match refusal {
            ResolveRefusal::Forbidden {
                host,
                address,
                range,
            } => FetchError::AddressForbidden {
                host: host.clone(),
                address: *address,
                range: *range,
            },
            ResolveRefusal::Lookup { host, detail } => FetchError::DnsFailed {
                host: host.clone(),
                detail: detail.clone(),
            },
        }
    }
}

/// Resolves `host` with the system resolver and refuses the whole answer when any
/// address is forbidden: a mixed answer is how rebinding attacks hide a private address.
pub(crate) async fn resolve_checked(
    host: &str,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, ResolveRefusal> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|error| ResolveRefusal::Lookup {
            host: host.to_owned(),
            detail: error.to_string(),
        })?
        .collect();
    if addresses.is_empty() {
        return Err(ResolveRefusal::Lookup {
            host: host.to_owned(),
            detail: "no addresses".to_owned(),
        });
    }
    for address in &addresses {
        if let Err(range) = check_address(address.ip(), allow_loopback) {
            tracing::warn!(host, address = %address.ip(), %range, "outbound fetch refused");
            return Err(ResolveRefusal::Forbidden {
                host: host.to_owned(),
                address: address.ip(),
                range,
            });
        }
    }
    Ok(addresses)
}

/// reqwest resolver that only ever yields checked addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedResolver {
    pub(crate) allow_loopback: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let addresses = resolve_checked(name.as_str(), allow_loopback).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}
