//! [`SafeFetcher`]: GET one document from a user-supplied URL without letting the URL
//! reach anything but the public internet.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::redirect;
use url::{Host, Url};

use crate::address::check_address;
use crate::error::FetchError;
use crate::resolve::{CheckedResolver, ResolveRefusal};

/// Longest URL accepted; metadata URLs are short, and this bounds what we log.
const MAX_URL_LEN: usize = 2048;

/// Limits and switches for [`SafeFetcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Largest body accepted, counted while streaming. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Limit for establishing one TCP + TLS connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Limit for the whole fetch: every redirect hop and the body. Default 10 s.
    pub total_timeout: Duration,
    /// Most redirects followed. Default 3.
    pub max_redirects: usize,
    /// TEST-ONLY: also allow loopback addresses, and `http` URLs to them (and nothing
    /// else that is otherwise forbidden). Default `false`; never enable in production.
    pub allow_loopback_http_for_tests: bool,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_redirects: 3,
            allow_loopback_http_for_tests: false,
        }
    }
}

/// A fetched document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDocument {
    /// The URL the body came from, after redirects.
    pub final_url: String,
    /// The `Content-Type` header, when present and valid text.
    pub content_type: Option<String>,
    /// The body, at most `max_body_bytes` long.
    pub body: Bytes,
}

/// Fetches documents from untrusted URLs (SAML metadata, OIDC discovery).
///
/// Every hop is validated: scheme, no userinfo, and every address the host resolves to
/// (or the IP literal) must be public. The connection is pinned to the checked
/// addresses, redirects are followed by hand, the body is capped while streaming, proxy
/// environment variables are ignored, and the whole fetch has one deadline.
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct SafeFetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

impl SafeFetcher {
    /// Builds a fetcher with its own HTTP client (rustls with webpki roots).
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        let test_switch = policy.allow_loopback_http_for_tests;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect::Policy::none())
            .https_only(!test_switch)
            .dns_resolver(Arc::new(CheckedResolver {
                allow_loopback: test_switch,
            }))
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.total_timeout)
            .referer(false)
            .user_agent(concat!("signpost/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| FetchError::ConnectFailed {
                detail: format!("http client setup failed: {}", error_chain(&error)),
            })?;
        Ok(Self {
            client,
            policy: Arc::new(policy),
        })
    }

    /// The policy this fetcher enforces.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// GETs `url`, following at most `max_redirects` validated redirects, and returns
    /// the body of the first 2xx response.
    pub async fn fetch(&self, url: &str) -> Result<FetchedDocument, FetchError> {
        let limit = self.policy.total_timeout;
        match tokio::time::timeout(limit, self.fetch_with_redirects(url)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(FetchError::Timeout { limit }),
        }
    }

    async fn fetch_with_redirects(&self, url: &str) -> Result<FetchedDocument, FetchError> {
        if url.len() > MAX_URL_LEN {
            return Err(FetchError::InvalidUrl {
                detail: format!("longer than {MAX_URL_LEN} characters"),
            });
        }
        let parsed = Url::parse(url.trim()).map_err(|error| FetchError::InvalidUrl {
            detail: error.to_string(),
        })?;
        let mut current = self.validate_hop(parsed)?;
        let mut redirects_followed = 0;
        loop {
            let response = self
                .client
                .get(current.clone())
                .header(
                    ACCEPT,
                    "application/samlmetadata+xml, application/xml, text/xml, \
                     application/json, */*;q=0.1",
                )
                .send()
                .await
                .map_err(|error| self.map_transport_error(&error))?;
            let status = response.status();
            if status.is_redirection() {
                if redirects_followed >= self.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        max: self.policy.max_redirects,
                    });
                }
                let next = redirect_target(&current, &response)?;
                tracing::debug!(from = %current, to = %next, "following redirect");
                current = self.validate_hop(next)?;
                redirects_followed += 1;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::HttpStatus {
                    status: status.as_u16(),
                });
            }
            return self.read_document(current, response).await;
        }
    }

    /// Checks what can be checked before connecting: scheme, userinfo, and IP-literal
    /// hosts (reqwest's connector skips the resolver for those). Host names are checked
    /// by [`CheckedResolver`] at connect time.
    fn validate_hop(&self, mut url: Url) -> Result<Url, FetchError> {
        let test_switch = self.policy.allow_loopback_http_for_tests;
        match url.scheme() {
            "https" => {}
            "http" if test_switch => {}
            other => {
                return Err(FetchError::NotHttps {
                    scheme: other.to_owned(),
                })
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::InvalidUrl {
                detail: "credentials in urls are not allowed".to_owned(),
            });
        }
        let address = match url.host() {
            None => {
                return Err(FetchError::InvalidUrl {
                    detail: "missing host".to_owned(),
                })
            }
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(v4)) => Some(v4.into()),
            Some(Host::Ipv6(v6)) => Some(v6.into()),
        };
        if let Some(address) = address {
            if let Err(range) = check_address(address, test_switch) {
                return Err(FetchError::AddressForbidden {
                    host: url.host_str().unwrap_or_default().to_owned(),
                    address,
                    range,
                });
            }
        }
        // The test switch opens plain http to loopback only, never to other hosts.
        if url.scheme() == "http" && !is_loopback_host(&url) {
            return Err(FetchError::NotHttps {
                scheme: "http".to_owned(),
            });
        }
        url.set_fragment(None);
        Ok(url)
    }

    async fn read_document(
        &self,
        final_url: Url,
        mut response: reqwest::Response,
    ) -> Result<FetchedDocument, FetchError> {
        let limit = self.policy.max_body_bytes;
        let too_large = FetchError::ResponseTooLarge { limit };
        // Content-Length only lets us refuse early; the streaming count is the real cap.
        let announced = response.content_length();
        if announced.is_some_and(|length| length > limit as u64) {
            return Err(too_large);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let initial_capacity = announced.map_or(8 * 1024, |length| length as usize);
        let mut body = BytesMut::with_capacity(initial_capacity.min(limit));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.map_transport_error(&error))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchedDocument {
            final_url: final_url.into(),
            content_type,
            body: body.freeze(),
        })
    }

    fn map_transport_error(&self, error: &reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(refusal) = current.downcast_ref::<ResolveRefusal>() {
                return refusal.into();
            }
            source = current.source();
        }
        if error.is_timeout() {
            let limit = if error.is_connect() {
                self.policy.connect_timeout
            } else {
                self.policy.total_timeout
            };
            return FetchError::Timeout { limit };
        }
        FetchError::ConnectFailed {
            detail: error_chain(error),
        }
    }
}

/// Resolves the `Location` of a redirect response against the current URL and refuses
/// redirects that cannot be followed safely.
fn redirect_target(current: &Url, response: &reqwest::Response) -> Result<Url, FetchError> {
    let status = response.status().as_u16();
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Err(FetchError::HttpStatus { status });
    }
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| FetchError::RedirectRefused {
            detail: "missing location header".to_owned(),
        })?
        .to_str()
        .map_err(|_| FetchError::RedirectRefused {
            detail: "location header is not valid text".to_owned(),
        })?;
    let next = current
        .join(location)
        .map_err(|error| FetchError::RedirectRefused {
            detail: format!("location is not a valid url: {error}"),
        })?;
    check_redirect(current, &next)?;
    Ok(next)
}

/// Rules that depend on the previous hop (the rest is [`SafeFetcher::validate_hop`]).
fn check_redirect(current: &Url, next: &Url) -> Result<(), FetchError> {
    if current.scheme() == "https" && next.scheme() == "http" {
        return Err(FetchError::RedirectRefused {
            detail: "https to http downgrade".to_owned(),
        });
    }
    Ok(())
}

/// The error and its sources, joined; reqwest's top-level message alone is vague.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        text.push_str(": ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// Whether `url` names this machine: `localhost` or a loopback address.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn https_to_http_redirect_is_a_downgrade() {
        let error = check_redirect(&url("https://idp.example/a"), &url("http://idp.example/b"))
            .unwrap_err();
        assert_eq!(error.reason(), "REDIRECT_REFUSED");
    }

    #[test]
    fn same_scheme_redirects_pass_the_hop_rule() {
        assert!(check_redirect(&url("https://a.example/"), &url("https://b.example/")).is_ok());
        assert!(check_redirect(&url("http://127.0.0.1/"), &url("http://127.0.0.1/x")).is_ok());
        assert!(check_redirect(&url("http://127.0.0.1/"), &url("https://idp.example/")).is_ok());
    }

    #[test]
    fn default_policy_matches_the_documented_limits() {
        let policy = FetchPolicy::default();
        assert_eq!(policy.max_body_bytes, 1 << 20);
        assert_eq!(policy.connect_timeout, Duration::from_secs(5));
        assert_eq!(policy.total_timeout, Duration::from_secs(10));
        assert_eq!(policy.max_redirects, 3);
        assert!(!policy.allow_loopback_http_for_tests);
    }

    #[tokio::test]
    async fn urls_with_credentials_or_odd_schemes_are_refused() {
        let fetcher = SafeFetcher::new(FetchPolicy::default()).unwrap();
        let cases = [
            ("https://user:pass@idp.example/", "URL_INVALID"),
            ("https://user@idp.example/", "URL_INVALID"),
            ("not a url", "URL_INVALID"),
            ("/relative/path", "URL_INVALID"),
            ("ftp://idp.example/", "URL_NOT_HTTPS"),
            ("file:///etc/passwd", "URL_NOT_HTTPS"),
            ("gopher://idp.example/", "URL_NOT_HTTPS"),
            ("http://idp.example/", "URL_NOT_HTTPS"),
            ("https://0x7f.1/", "ADDRESS_FORBIDDEN"),
            ("https://2130706433/", "ADDRESS_FORBIDDEN"),
            ("https://[fe80::1]/", "ADDRESS_FORBIDDEN"),
            ("https://[64:ff9b::a9fe:a9fe]/", "ADDRESS_FORBIDDEN"),
        ];
        for (input, reason) in cases {
            let error = fetcher.fetch(input).await.unwrap_err();
            assert_eq!(error.reason(), reason, "{input}: {error}");
        }
        let long = format!("https://idp.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            fetcher.fetch(&long).await.unwrap_err().reason(),
            "URL_INVALID"
        );
    }
}
