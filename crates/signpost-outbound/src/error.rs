//! The fetch error and its stable reason codes.

use std::net::IpAddr;
use std::time::Duration;

use crate::address::ForbiddenRange;

/// Why a fetch did not produce a document.
///
/// Messages are safe to show to the admin who submitted the URL: they name the URL's
/// host, a status or a limit, never a response body, and never an address that DNS
/// returned (that stays in the `address` field for logs). Use [`FetchError::reason`] for
/// machine-readable handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse, has no host, or carries userinfo.
    #[error("invalid url: {detail}")]
    InvalidUrl {
        /// What is wrong with the URL.
        detail: String,
    },
    /// The URL's scheme is not allowed (only `https`, plus `http` under the test switch).
    #[error("url scheme `{scheme}` is not allowed, use https")]
    NotHttps {
        /// The refused scheme.
        scheme: String,
    },
    /// The host is, or resolves to, an address outside the public internet.
    #[error("host `{host}` is not a public internet address ({range})")]
    AddressForbidden {
        /// The host as written in the URL.
        host: String,
        /// The refused address; for logs, deliberately not part of the message.
        address: IpAddr,
        /// Which range the address falls in.
        range: ForbiddenRange,
    },
    /// The host name could not be resolved.
    #[error("dns lookup for `{host}` failed: {detail}")]
    DnsFailed {
        /// The host as written in the URL.
        host: String,
        /// What the resolver reported.
        detail: String,
    },
    /// Connecting, the TLS handshake or the transfer failed.
    #[error("connection failed: {detail}")]
    ConnectFailed {
        /// What the HTTP client reported.
        detail: String,
    },
    /// The fetch did not complete in time.
    #[error("fetch did not finish within {limit:?}")]
    Timeout {
        /// The limit that was hit.
        limit: Duration,
    },
    /// The body is larger than the policy allows.
    #[error("response body is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The policy's `max_body_bytes`.
        limit: usize,
    },
    /// The server answered with a status that is neither success nor a followable redirect.
    #[error("server answered with http status {status}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// The redirect chain is longer than the policy allows.
    #[error("more than {max} redirects")]
    TooManyRedirects {
        /// The policy's `max_redirects`.
        max: usize,
    },
    /// A redirect was malformed or would downgrade from https to http.
    #[error("redirect refused: {detail}")]
    RedirectRefused {
        /// Why the redirect was refused.
        detail: String,
    },
}

impl FetchError {
    /// A stable, machine-readable code for this error, e.g. `ADDRESS_FORBIDDEN`.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::InvalidUrl { .. } => "URL_INVALID",
            FetchError::NotHttps { .. } => "URL_NOT_HTTPS",
            FetchError::AddressForbidden { .. } => "ADDRESS_FORBIDDEN",
            FetchError::DnsFailed { .. } => "DNS_FAILED",
            FetchError::ConnectFailed { .. } => "CONNECT_FAILED",
            FetchError::Timeout { .. } => "TIMEOUT",
            FetchError::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE",
            FetchError::HttpStatus { .. } => "HTTP_STATUS",
            FetchError::TooManyRedirects { .. } => "TOO_MANY_REDIRECTS",
            FetchError::RedirectRefused { .. } => "REDIRECT_REFUSED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            FetchError::InvalidUrl {
                detail: "relative url without a base".into(),
            },
            FetchError::NotHttps {
                scheme: "ftp".into(),
            },
            FetchError::AddressForbidden {
                host: "localhost".into(),
                address: "127.0.0.1".parse().unwrap(),
                range: ForbiddenRange::Loopback,
            },
            FetchError::DnsFailed {
                host: "idp.example".into(),
                detail: "no addresses".into(),
            },
            FetchError::ConnectFailed {
                detail: "connection refused".into(),
            },
            FetchError::Timeout {
                limit: Duration::from_secs(10),
            },
            FetchError::ResponseTooLarge { limit: 1024 },
            FetchError::HttpStatus { status: 404 },
            FetchError::TooManyRedirects { max: 3 },
            FetchError::RedirectRefused {
                detail: "https to http downgrade".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.ends_with('.'), "{message}");
            assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
            assert!(!message.contains("127.0.0.1"), "address leaked: {message}");
        }
    }
}
