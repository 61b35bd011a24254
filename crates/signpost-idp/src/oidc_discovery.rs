//! OpenID Connect discovery: the issuer the admin types, and the
//! `/.well-known/openid-configuration` document fetched from it (fetching is the caller's
//! job; this module only judges the bytes).

use serde::Deserialize;

use crate::error::{field, reason};
use crate::url_check::{https_url, HttpPolicy};
use crate::IdpError;

/// Largest accepted discovery document.
pub const MAX_DISCOVERY_BYTES: usize = 1024 * 1024;
/// Path appended to the issuer to find the discovery document (OpenID Connect Discovery 1.0
/// section 4).
pub const WELL_KNOWN_PATH: &str = "/.well-known/openid-configuration";

/// Knobs for [`parse_discovery_document_with_options`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// TEST ONLY: accept `http` URLs whose host is loopback (`127.0.0.0/8`, `::1`,
    /// `localhost`), so that tests can run a plain-http provider on `127.0.0.1:0`.
    /// Never set this in production configuration. Default `false`.
    pub allow_http_for_tests: bool,
}

impl DiscoveryOptions {
    fn http_policy(self) -> HttpPolicy {
        if self.allow_http_for_tests {
            HttpPolicy::AllowLoopbackHttpForTests
        } else {
            HttpPolicy::HttpsOnly
        }
    }
}

/// The checked parts of a provider's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcProviderMetadata {
    /// The issuer exactly as the document states it (ID tokens must carry this `iss`).
    pub issuer: String,
    /// Where users are sent to sign in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged for tokens.
    pub token_endpoint: String,
    /// Where the provider's signing keys are published.
    pub jwks_uri: String,
    /// The userinfo endpoint, when the provider has one.
    pub userinfo_endpoint: Option<String>,
    /// Scopes the provider advertises (empty when it does not say).
    pub scopes_supported: Vec<String>,
    /// PKCE methods the provider advertises, e.g. `S256` (empty when it does not say).
    pub code_challenge_methods_supported: Vec<String>,
}

/// The wire shape; unknown members are ignored, duplicate members are an error.
#[derive(Deserialize)]
struct RawDiscoveryDocument {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
}

/// Normalizes the issuer the admin typed (field `issuer`): trimmed, an absolute `https` URL
/// with a host, no user name or password, no query or fragment, host lowercased by URL
/// parsing, without a trailing `/`. `allow_http_for_tests` is as in [`DiscoveryOptions`].
pub fn normalize_issuer(input: &str, allow_http_for_tests: bool) -> Result<String, IdpError> {
    let policy = DiscoveryOptions {
        allow_http_for_tests,
    }
    .http_policy();
    let url = https_url(input, field::ISSUER, "issuer", policy)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(IdpError::new(
            reason::URL_NOT_HTTPS,
            field::ISSUER,
            "the issuer must not have a query or fragment",
        ));
    }
    let serialized: String = url.into();
    Ok(trim_one_slash(&serialized).to_owned())
}

/// The discovery document URL of a (normalized) issuer:
/// `{issuer}/.well-known/openid-configuration`, without doubling a trailing `/`.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}{WELL_KNOWN_PATH}", trim_one_slash(issuer))
}

/// Parses a discovery document (field `discovery_document`) with https required everywhere.
///
/// Same as [`parse_discovery_document_with_options`] with [`DiscoveryOptions::default`].
pub fn parse_discovery_document(
    json: &[u8],
    expected_issuer: &str,
) -> Result<OidcProviderMetadata, IdpError> {
    parse_discovery_document_with_options(json, expected_issuer, DiscoveryOptions::default())
}

/// Parses a discovery document and checks it against the issuer it was fetched for.
///
/// Refusals: over 1 MiB (`DISCOVERY_TOO_LARGE`); not a JSON object of the expected shape, or
/// missing `issuer`, `authorization_endpoint`, `token_endpoint` or `jwks_uri`
/// (`DISCOVERY_INVALID`); `issuer` different from `expected_issuer`, compared exactly after
/// removing one trailing `/` from each (`OIDC_ISSUER_MISMATCH`, field `issuer`); an endpoint
/// that is not an absolute https URL (`URL_NOT_HTTPS`).
pub fn parse_discovery_document_with_options(
    json: &[u8],
    expected_issuer: &str,
    options: DiscoveryOptions,
) -> Result<OidcProviderMetadata, IdpError> {
    let invalid = |message: &str| {
        IdpError::new(
            reason::DISCOVERY_INVALID,
            field::DISCOVERY_DOCUMENT,
            message,
        )
    };
    if json.len() > MAX_DISCOVERY_BYTES {
        return Err(IdpError::new(
            reason::DISCOVERY_TOO_LARGE,
            field::DISCOVERY_DOCUMENT,
            "the discovery document is larger than 1 MiB",
        ));
    }
    let raw: RawDiscoveryDocument = serde_json::from_slice(json).map_err(|error| {
        // serde_json's own messages can quote document values; describe the failure by
        // category and position only.
        let problem = match error.classify() {
            serde_json::error::Category::Data => "is not an object of the expected shape",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            serde_json::error::Category::Io => "could not be read",
        };
        invalid(&format!(
            "the discovery document {problem} (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    let required = |value: Option<String>, name: &str| {
        value
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| invalid(&format!("the discovery document has no `{name}`")))
    };
    let issuer = required(raw.issuer, "issuer")?;
    if trim_one_slash(&issuer) != trim_one_slash(expected_issuer) {
        return Err(IdpError::new(
            reason::OIDC_ISSUER_MISMATCH,
            field::ISSUER,
            "the discovery document names a different issuer than the one entered; \
             enter the issuer exactly as the provider publishes it",
        ));
    }
    let policy = options.http_policy();
    let endpoint = |value: String, name: &str| -> Result<String, IdpError> {
        https_url(&value, field::DISCOVERY_DOCUMENT, name, policy).map(String::from)
    };
    https_url(&issuer, field::ISSUER, "issuer", policy)?;
    let authorization_endpoint = endpoint(
        required(raw.authorization_endpoint, "authorization_endpoint")?,
        "authorization_endpoint",
    )?;
    let token_endpoint = endpoint(
        required(raw.token_endpoint, "token_endpoint")?,
        "token_endpoint",
    )?;
    let jwks_uri = endpoint(required(raw.jwks_uri, "jwks_uri")?, "jwks_uri")?;
    let userinfo_endpoint = raw
        .userinfo_endpoint
        .map(|value| endpoint(value, "userinfo_endpoint"))
        .transpose()?;
    Ok(OidcProviderMetadata {
        issuer,
        authorization_endpoint,
        token_endpoint,
        jwks_uri,
        userinfo_endpoint,
        scopes_supported: raw.scopes_supported,
        code_challenge_methods_supported: raw.code_challenge_methods_supported,
    })
}

fn trim_one_slash(text: &str) -> &str {
    text.strip_suffix('/').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOGLE_LIKE: &str = r#"{
        "issuer": "https://accounts.example.com",
        "authorization_endpoint": "https://accounts.example.com/o/oauth2/v2/auth",
        "token_endpoint": "https://oauth2.example.com/token",
        "userinfo_endpoint": "https://openidconnect.example.com/v1/userinfo",
        "jwks_uri": "https://www.example.com/oauth2/v3/certs",
        "response_types_supported": ["code", "id_token"],
        "scopes_supported": ["openid", "email", "profile"],
        "code_challenge_methods_supported": ["plain", "S256"]
    }"#;

    fn refused(json: &str, issuer: &str) -> IdpError {
        parse_discovery_document(json.as_bytes(), issuer).unwrap_err()
    }

    #[test]
    fn discovery_document_is_parsed() {
        let metadata =
            parse_discovery_document(GOOGLE_LIKE.as_bytes(), "https://accounts.example.com/")
                .unwrap();
        assert_eq!(metadata.issuer, "https://accounts.example.com");
        assert_eq!(metadata.token_endpoint, "https://oauth2.example.com/token");
        assert_eq!(
            metadata.userinfo_endpoint.as_deref(),
            Some("https://openidconnect.example.com/v1/userinfo")
        );
        assert_eq!(metadata.scopes_supported, ["openid", "email", "profile"]);
        assert_eq!(metadata.code_challenge_methods_supported, ["plain", "S256"]);
    }

    #[test]
    fn optional_members_may_be_absent() {
        let json = r#"{"issuer":"https://idp.example.com/","authorization_endpoint":"https://idp.example.com/a",
            "token_endpoint":"https://idp.example.com/t","jwks_uri":"https://idp.example.com/k"}"#;
        let metadata =
            parse_discovery_document(json.as_bytes(), "https://idp.example.com").unwrap();
        assert_eq!(metadata.issuer, "https://idp.example.com/");
        assert_eq!(metadata.userinfo_endpoint, None);
        assert!(metadata.scopes_supported.is_empty());
    }

    #[test]
    fn issuer_mismatch_is_refused() {
        for expected in [
            "https://accounts.example.com//",
            "https://ACCOUNTS.example.com",
            "https://accounts.example.com/tenant",
            "https://evil.example.com",
        ] {
            let error = refused(GOOGLE_LIKE, expected);
            assert_eq!(
                (error.reason(), error.field()),
                (reason::OIDC_ISSUER_MISMATCH, field::ISSUER)
            );
        }
    }

    #[test]
    fn http_endpoints_are_refused() {
        let json = GOOGLE_LIKE.replace("https://oauth2", "http://oauth2");
        let error = refused(&json, "https://accounts.example.com");
        assert_eq!(
            (error.reason(), error.field()),
            (reason::URL_NOT_HTTPS, field::DISCOVERY_DOCUMENT)
        );
        let json = GOOGLE_LIKE.replace("https://openidconnect", "javascript://openidconnect");
        assert_eq!(
            refused(&json, "https://accounts.example.com").reason(),
            reason::URL_NOT_HTTPS
        );
    }

    #[test]
    fn loopback_http_is_accepted_only_with_the_test_option() {
        let json = GOOGLE_LIKE
            .replace("https://", "http://")
            .replace("http://accounts.example.com", "http://127.0.0.1:8080");
        let json = json
            .replace("oauth2.example.com", "127.0.0.1:8080")
            .replace("openidconnect.example.com", "127.0.0.1:8080")
            .replace("www.example.com", "127.0.0.1:8080");
        assert_eq!(
            refused(&json, "http://127.0.0.1:8080").reason(),
            reason::URL_NOT_HTTPS
        );
        let options = DiscoveryOptions {
            allow_http_for_tests: true,
        };
        let metadata = parse_discovery_document_with_options(
            json.as_bytes(),
            "http://127.0.0.1:8080",
            options,
        )
        .unwrap();
        assert_eq!(metadata.token_endpoint, "http://127.0.0.1:8080/token");
        let remote_http = GOOGLE_LIKE.replace("https://oauth2", "http://oauth2");
        let error = parse_discovery_document_with_options(
            remote_http.as_bytes(),
            "https://accounts.example.com",
            options,
        )
        .unwrap_err();
        assert_eq!(error.reason(), reason::URL_NOT_HTTPS);
        assert!(!DiscoveryOptions::default().allow_http_for_tests);
    }

    #[test]
    fn malformed_documents_are_refused() {
        let missing_jwks = GOOGLE_LIKE.replace("jwks_uri", "jwks");
        let empty_token = GOOGLE_LIKE.replace("https://oauth2.example.com/token", "");
        let duplicate = GOOGLE_LIKE.replace(
            r#""jwks_uri""#,
            r#""issuer": "https://evil.example.com", "jwks_uri""#,
        );
        let wrong_type = GOOGLE_LIKE.replace(r#"["openid", "email", "profile"]"#, "\"openid\"");
        for json in [
            "",
            "null",
            "[]",
            "{",
            "{}",
            missing_jwks.as_str(),
            empty_token.as_str(),
            duplicate.as_str(),
            wrong_type.as_str(),
        ] {
            let error = refused(json, "https://accounts.example.com");
            assert_eq!(error.reason(), reason::DISCOVERY_INVALID, "{json}: {error}");
            assert_eq!(error.field(), field::DISCOVERY_DOCUMENT);
        }
    }

    #[test]
    fn oversized_document_is_refused() {
        let json = format!("{}{}", " ".repeat(MAX_DISCOVERY_BYTES), GOOGLE_LIKE);
        assert_eq!(
            refused(&json, "https://accounts.example.com").reason(),
            reason::DISCOVERY_TOO_LARGE
        );
    }

    #[test]
    fn issuers_are_normalized() {
        assert_eq!(
            normalize_issuer(" https://Login.Example.com/tenant/v2.0/ ", false).unwrap(),
            "https://login.example.com/tenant/v2.0"
        );
        assert_eq!(
            normalize_issuer("https://idp.example.com", false).unwrap(),
            "https://idp.example.com"
        );
        assert_eq!(
            normalize_issuer("http://127.0.0.1:4000", true).unwrap(),
            "http://127.0.0.1:4000"
        );
    }

    #[test]
    fn bad_issuers_are_refused() {
        for (input, allow_http) in [
            ("", false),
            ("idp.example.com", false),
            ("http://idp.example.com", false),
            ("http://idp.example.com", true),
            ("http://127.0.0.1:4000", false),
            ("https://idp.example.com?tenant=1", false),
            ("https://idp.example.com#x", false),
            ("https://user:secret@idp.example.com", false),
        ] {
            let error = normalize_issuer(input, allow_http).unwrap_err();
            assert_eq!(
                (error.reason(), error.field()),
                (reason::URL_NOT_HTTPS, field::ISSUER),
                "{input}"
            );
            assert!(!error.message().contains("secret"));
        }
    }

    #[test]
    fn discovery_url_appends_the_well_known_path() {
        assert_eq!(
            discovery_url("https://idp.example.com"),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.example.com/tenant/"),
            "https://idp.example.com/tenant/.well-known/openid-configuration"
        );
    }
}
