//! Where to send a user: SAML AuthnRequest and OIDC authorization redirects.
//!
//! Every random value (AuthnRequest ID, RelayState, OIDC `state`, `nonce`,
//! PKCE verifier) comes from the operating system's RNG.
//!
//! The OIDC `state`, `nonce` and `code_verifier` are returned to the sign-in
//! frontend, which must keep them server-side (its session store, or an
//! encrypted, `HttpOnly`, `SameSite=Lax` cookie keyed by `state`); its callback
//! handler looks the verifier and nonce up by the `state` it receives, sends
//! the verifier in the token request and checks the ID token's nonce. The
//! verifier must never reach the browser's script or the IdP before then.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use url::Url;

use crate::deflate::deflate;
use crate::route::{OidcTarget, SamlTarget};

/// The SAML NameID format the edge asks for.
pub const NAME_ID_FORMAT_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// The binding the IdP must answer with.
pub const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// Length of a PKCE code verifier (RFC 7636 allows 43..=128).
pub const CODE_VERIFIER_LEN: usize = 64;
/// The unreserved characters of RFC 3986, the PKCE verifier alphabet.
const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// A SAML redirect: the URL and the values the ACS handler checks later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlRedirect {
    /// The IdP SSO URL with `SAMLRequest` and `RelayState`.
    pub redirect_url: String,
    /// The AuthnRequest ID (the response's `InResponseTo`).
    pub request_id: String,
    /// The opaque RelayState sent along.
    pub relay_state: String,
}

/// An OIDC redirect: the URL and the values the callback handler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRedirect {
    /// The authorization endpoint with the authorization request.
    pub redirect_url: String,
    /// The `state` parameter (keys the frontend's stored values).
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the token request.
    pub code_verifier: String,
}

/// Builds the HTTP-Redirect binding URL of a fresh AuthnRequest. Fails only
/// when `idp_sso_url` is not a URL (a route's is checked when it is accepted).
pub fn saml_redirect(
    target: &SamlTarget<'_>,
    now: DateTime<Utc>,
) -> Result<SamlRedirect, url::ParseError> {
    let mut url = Url::parse(target.idp_sso_url)?;
    let request_id = format!("_{}", random_hex(16));
    let relay_state = random_token(24);
    let xml = authn_request_xml(
        &request_id,
        now,
        url.as_str(),
        target.acs_url,
        target.sp_entity_id,
    );
    let encoded = STANDARD.encode(deflate(xml.as_bytes()));
    url.query_pairs_mut()
        .append_pair("SAMLRequest", &encoded)
        .append_pair("RelayState", &relay_state);
    Ok(SamlRedirect {
        redirect_url: url.into(),
        request_id,
        relay_state,
    })
}

/// The AuthnRequest XML (attribute and text values escaped).
pub fn authn_request_xml(
    id: &str,
    issue_instant: DateTime<Utc>,
    destination: &str,
    acs_url: &str,
    issuer: &str,
) -> String {
    format!(
        concat!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" "#,
            r#"xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" "#,
            r#"IssueInstant="{instant}" Destination="{destination}" "#,
            r#"AssertionConsumerServiceURL="{acs}" ProtocolBinding="{binding}">"#,
            r#"<saml:Issuer>{issuer}</saml:Issuer>"#,
            r#"<samlp:NameIDPolicy Format="{format}" AllowCreate="true"/>"#,
            r#"</samlp:AuthnRequest>"#
        ),
        id = xml_escape(id),
        instant = issue_instant.to_rfc3339_opts(SecondsFormat::Secs, true),
        destination = xml_escape(destination),
        acs = xml_escape(acs_url),
        binding = BINDING_HTTP_POST,
        issuer = xml_escape(issuer),
        format = NAME_ID_FORMAT_EMAIL,
    )
}

/// Escapes the five XML special characters.
pub fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Builds an authorization-code request with PKCE (S256) for `login_hint`.
/// Fails only when `authorization_endpoint` is not a URL (a route's is
/// checked when it is accepted).
pub fn oidc_redirect(
    target: &OidcTarget<'_>,
    login_hint: &str,
) -> Result<OidcRedirect, url::ParseError> {
    let mut url = Url::parse(target.authorization_endpoint)?;
    let state = random_token(32);
    let nonce = random_token(32);
    let code_verifier = code_verifier();
    let mut scopes = target.scopes.clone();
    if !scopes.contains(&"openid") {
        scopes.insert(0, "openid");
    }
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", target.client_id)
        .append_pair("redirect_uri", target.redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &code_challenge(&code_verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", login_hint);
    Ok(OidcRedirect {
        redirect_url: url.into(),
        state,
        nonce,
        code_verifier,
    })
}

/// A PKCE verifier: [`CODE_VERIFIER_LEN`] unreserved characters.
pub fn code_verifier() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_VERIFIER_LEN)
        .map(|_| char::from(UNRESERVED[rng.gen_range(0..UNRESERVED.len())]))
        .collect()
}

/// `BASE64URL(SHA-256(verifier))` without padding (RFC 7636 S256).
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Random bytes from the thread's CSPRNG (ChaCha, seeded and periodically
/// reseeded from the OS): unpredictable like the OS RNG, without a system call
/// per value on the sign-in hot path.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn random_hex(len: usize) -> String {
    hex::encode(random_bytes(len))
}

fn random_token(len: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(len))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read;

    use flate2::read::DeflateDecoder;

    use super::*;

    fn saml_target() -> SamlTarget<'static> {
        SamlTarget {
            idp_sso_url: "https://idp.example/sso?tenant=acme",
            sp_entity_id: "https://sp.example/saml?x=1&y=\"2\"",
            acs_url: "https://sp.example/acs",
        }
    }

    fn query(url: &str) -> HashMap<String, String> {
        Url::parse(url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    #[test]
    fn authn_request_round_trips_through_deflate_and_base64() {
        let redirect = saml_redirect(&saml_target(), Utc::now()).unwrap();
        assert!(redirect
            .redirect_url
            .starts_with("https://idp.example/sso?tenant=acme&SAMLRequest="));
        let params = query(&redirect.redirect_url);
        assert_eq!(params["tenant"], "acme");
        assert_eq!(params["RelayState"], redirect.relay_state);
        let deflated = STANDARD.decode(&params["SAMLRequest"]).unwrap();
        let mut xml = String::new();
        DeflateDecoder::new(deflated.as_slice())
            .read_to_string(&mut xml)
            .unwrap();
        assert!(redirect.request_id.starts_with('_'));
        assert_eq!(redirect.request_id.len(), 33);
        assert!(redirect.request_id[1..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert!(xml.contains(&format!(r#"ID="{}""#, redirect.request_id)));
        assert!(xml.contains(r#"Destination="https://idp.example/sso?tenant=acme""#));
        assert!(xml.contains(r#"AssertionConsumerServiceURL="https://sp.example/acs""#));
        assert!(xml.contains(
            "<saml:Issuer>https://sp.example/saml?x=1&amp;y=&quot;2&quot;</saml:Issuer>"
        ));
        assert!(xml.contains(r#"Version="2.0""#));
        assert!(xml.contains(&format!(r#"ProtocolBinding="{BINDING_HTTP_POST}""#)));
        assert!(xml.starts_with("<samlp:AuthnRequest "));
        assert!(xml.ends_with("</samlp:AuthnRequest>"));
    }

    fn inflate(deflated: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        DeflateDecoder::new(deflated)
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn every_deflated_input_and_redirect_inflates_to_itself_alone() {
        // Incompressible input larger than the first output buffer, then small inputs and
        // two redirects: each must inflate to itself alone.
        let mut noise = vec![0u8; 64 * 1024];
        rand::thread_rng().fill_bytes(&mut noise);
        assert_eq!(inflate(&deflate(&noise)), noise);
        for text in ["", "a", "<samlp:AuthnRequest/>", "abcabcabcabcabcabcabc"] {
            assert_eq!(inflate(&deflate(text.as_bytes())), text.as_bytes());
        }
        let first = saml_redirect(&saml_target(), Utc::now()).unwrap();
        let second = saml_redirect(&saml_target(), Utc::now()).unwrap();
        for redirect in [first, second] {
            let deflated = STANDARD
                .decode(&query(&redirect.redirect_url)["SAMLRequest"])
                .unwrap();
            let xml = String::from_utf8(inflate(&deflated)).unwrap();
            assert!(xml.contains(&format!(r#"ID="{}""#, redirect.request_id)));
            assert_eq!(xml.matches("<samlp:AuthnRequest ").count(), 1);
        }
    }

    #[test]
    fn issue_instant_is_utc_seconds_with_z() {
        let instant = DateTime::parse_from_rfc3339("2025-03-03T10:11:12.345+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let xml = authn_request_xml("_1", instant, "https://d", "https://a", "i");
        assert!(
            xml.contains(r#"IssueInstant="2025-03-03T08:11:12Z""#),
            "{xml}"
        );
    }

    #[test]
    fn every_authn_request_gets_fresh_ids() {
        let a = saml_redirect(&saml_target(), Utc::now()).unwrap();
        let b = saml_redirect(&saml_target(), Utc::now()).unwrap();
        assert_ne!(a.request_id, b.request_id);
        assert_ne!(a.relay_state, b.relay_state);
    }

    #[test]
    fn oidc_redirect_carries_a_s256_challenge_of_its_verifier() {
        let target = OidcTarget {
            authorization_endpoint: "https://login.example/authorize?prompt=login",
            client_id: "client 1",
            scopes: vec!["email", "profile"],
            redirect_uri: "https://sp.example/callback?c=1",
        };
        let redirect = oidc_redirect(&target, "jane+x@acme.com").unwrap();
        let params = query(&redirect.redirect_url);
        assert_eq!(params["prompt"], "login", "existing params are kept");
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], "client 1");
        assert_eq!(params["redirect_uri"], "https://sp.example/callback?c=1");
        assert_eq!(params["scope"], "openid email profile");
        assert_eq!(params["state"], redirect.state);
        assert_eq!(params["nonce"], redirect.nonce);
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["login_hint"], "jane+x@acme.com");
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(redirect.code_verifier.as_bytes()));
        assert_eq!(params["code_challenge"], expected);
        assert!(!params["code_challenge"].contains('='));
        assert_eq!(redirect.code_verifier.len(), CODE_VERIFIER_LEN);
        assert!(redirect
            .code_verifier
            .bytes()
            .all(|b| UNRESERVED.contains(&b)));
    }

    #[test]
    fn code_challenge_matches_the_rfc_7636_example() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
