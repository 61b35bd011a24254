//! The one URL rule shared by SAML and OIDC inputs.

use url::Url;

use crate::error::reason;
use crate::IdpError;

/// Longest URL accepted anywhere.
const MAX_URL_LEN: usize = 2048;

/// Whether plain `http` is acceptable; only tests against a loopback server ever say yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpPolicy {
    HttpsOnly,
    AllowLoopbackHttpForTests,
}

/// Parses `raw` as an absolute `https` URL with a host and without user name or password.
///
/// Every failure is `URL_NOT_HTTPS` so the form can show one hint ("must be an absolute https
/// URL"). The URL is never echoed: a user name or password in it would be a secret.
pub(crate) fn https_url(
    raw: &str,
    field: &'static str,
    what: &str,
    policy: HttpPolicy,
) -> Result<Url, IdpError> {
    let refuse = |problem: &str| {
        IdpError::new(
            reason::URL_NOT_HTTPS,
            field,
            format!("the {what} {problem}; it must be an absolute https URL"),
        )
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(refuse("is empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(refuse("is longer than 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|_| refuse("is not a valid absolute URL"))?;
    let Some(host) = url.host() else {
        return Err(refuse("has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if policy == HttpPolicy::AllowLoopbackHttpForTests && is_loopback(&host) => {}
        _ => return Err(refuse("does not use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("contains a user name or password"));
    }
    Ok(url)
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => *name == "localhost",
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::field;

    fn check(raw: &str, policy: HttpPolicy) -> Result<Url, IdpError> {
        https_url(raw, field::SSO_URL, "sso url", policy)
    }

    #[test]
    fn absolute_https_urls_are_accepted() {
        let url = check(
            " https://acme.okta.com/app/sso/saml ",
            HttpPolicy::HttpsOnly,
        )
        .unwrap();
        assert_eq!(url.as_str(), "https://acme.okta.com/app/sso/saml");
    }

    #[test]
    fn other_urls_are_refused_without_echoing_them() {
        for raw in [
            "",
            "/relative/path",
            "acme.okta.com/sso",
            "http://acme.okta.com/sso",
            "ftp://acme.okta.com/sso",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://admin:hunter2@acme.okta.com/sso",
            "https://admin@acme.okta.com/sso",
            "http://127.0.0.1:8080/sso",
        ] {
            let error = check(raw, HttpPolicy::HttpsOnly).unwrap_err();
            assert_eq!(error.reason(), reason::URL_NOT_HTTPS, "{raw}");
            assert_eq!(error.field(), field::SSO_URL);
            assert!(!error.message().contains("hunter2"));
        }
        let long = format!("https://acme.com/{}", "a".repeat(3000));
        assert_eq!(
            check(&long, HttpPolicy::HttpsOnly).unwrap_err().reason(),
            reason::URL_NOT_HTTPS
        );
    }

    #[test]
    fn test_policy_allows_http_only_on_loopback() {
        let policy = HttpPolicy::AllowLoopbackHttpForTests;
        assert!(check("http://127.0.0.1:8080/sso", policy).is_ok());
        assert!(check("http://localhost:8080/sso", policy).is_ok());
        assert!(check("http://[::1]:8080/sso", policy).is_ok());
        assert!(check("http://acme.okta.com/sso", policy).is_err());
    }
}
