//! SAML 2.0 identity provider metadata: what the admin pastes (or what the metadata URL
//! returned), and the by-hand alternative.
//!
//! Flow: size cap → textual refusal of `<!DOCTYPE` / `<!ENTITY` → roxmltree with DTDs off and
//! a node limit → find the one IdP `EntityDescriptor` → its one `IDPSSODescriptor` → entity ID,
//! SSO endpoints (HTTP-Redirect / HTTP-POST only, https only) and signing certificates (each
//! checked by [`crate::certificate`]). Elements are matched by namespace URI and local name,
//! never by prefix, and only at the places the schema puts them: a certificate inside a
//! metadata `ds:Signature` or an `SPSSODescriptor` is not an IdP signing certificate.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use roxmltree::{Document, Node, ParsingOptions};

use crate::certificate::{
    check_validity, inspect_certificate_der, parse_certificate_pem, CertificateInfo,
};
use crate::error::{field, reason};
use crate::url_check::{https_url, HttpPolicy};
use crate::IdpError;

/// SAML 2.0 metadata namespace.
pub const SAML_METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML Signature namespace (`ds:`).
pub const XMLDSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Protocol token an IdP descriptor must list in `protocolSupportEnumeration`.
pub const SAML2_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// Largest accepted metadata document.
pub const MAX_METADATA_BYTES: usize = 512 * 1024;
/// Largest accepted number of XML nodes.
pub const MAX_METADATA_NODES: u32 = 20_000;
/// Longest accepted entity ID.
pub const MAX_ENTITY_ID_CHARS: usize = 1024;

/// A SAML request/response binding we can send users through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamlBinding {
    /// `urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect`: the AuthnRequest in a query
    /// string.
    HttpRedirect,
    /// `urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST`: the AuthnRequest in an auto-posted
    /// form.
    HttpPost,
}

impl SamlBinding {
    /// The binding's URN as it appears in metadata.
    pub fn urn(self) -> &'static str {
        match self {
            SamlBinding::HttpRedirect => "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
            SamlBinding::HttpPost => "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
        }
    }

    /// The binding for a metadata URN, `None` for bindings we do not use (SOAP, Artifact, ...).
    pub fn from_urn(urn: &str) -> Option<SamlBinding> {
        [SamlBinding::HttpRedirect, SamlBinding::HttpPost]
            .into_iter()
            .find(|binding| binding.urn() == urn)
    }
}

/// One IdP single sign-on endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoEndpoint {
    /// How the AuthnRequest is sent.
    pub binding: SamlBinding,
    /// Absolute https URL, as parsed and re-serialized by the `url` crate.
    pub location: String,
}

/// The checked essentials of a SAML identity provider.
///
/// Values built by [`parse_idp_metadata`] or [`manual_idp_config`] always have at least one
/// SSO endpoint and at least one signing certificate, without duplicate certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlIdpMetadata {
    /// The IdP's entity ID (the `Issuer` of its responses), trimmed.
    pub entity_id: String,
    /// Endpoints in document order.
    pub sso_endpoints: Vec<SsoEndpoint>,
    /// Signing certificates in document order, deduplicated by fingerprint.
    pub signing_certificates: Vec<CertificateInfo>,
}

impl SamlIdpMetadata {
    /// The endpoint to send users to: the first HTTP-Redirect endpoint, else the first one.
    ///
    /// # Panics
    ///
    /// If `sso_endpoints` is empty, which [`parse_idp_metadata`] and [`manual_idp_config`]
    /// never produce.
    pub fn preferred_sso_endpoint(&self) -> &SsoEndpoint {
        self.sso_endpoints
            .iter()
            .find(|endpoint| endpoint.binding == SamlBinding::HttpRedirect)
            .or_else(|| self.sso_endpoints.first())
            .expect("SamlIdpMetadata built by this crate has at least one SSO endpoint")
    }
}

/// Parses and checks IdP metadata XML (field `metadata_xml`).
///
/// Accepts an `md:EntityDescriptor` root, or an `md:EntitiesDescriptor` holding exactly one
/// entity with an `IDPSSODescriptor`. Certificates are checked against `now`; one bad signing
/// certificate refuses the whole document, so that what is stored is exactly what was shown.
/// Errors point at `metadata_xml`, except entity ID problems (`entity_id`) and endpoint URL
/// problems (`sso_url`).
pub fn parse_idp_metadata(xml: &str, now: DateTime<Utc>) -> Result<SamlIdpMetadata, IdpError> {
    let refuse = |reason, message: &str| IdpError::new(reason, field::METADATA_XML, message);
    if xml.len() > MAX_METADATA_BYTES {
        return Err(refuse(
            reason::METADATA_TOO_LARGE,
            "the metadata is larger than 512 KiB",
        ));
    }
    // A private key pasted along with the metadata is refused before anything else looks
    // at the text, and the message never echoes it.
    if crate::certificate::contains_private_key(xml) {
        return Err(refuse(
            reason::PRIVATE_KEY_REFUSED,
            "the metadata contains a private key; it was not stored; paste only the IdP's public metadata",
        ));
    }
    // Refused textually, before any parser sees it: DTDs are how external entities and
    // entity expansion ("billion laughs") get in, and SAML metadata never needs one.
    if contains_ignore_ascii_case(xml, "<!DOCTYPE") || contains_ignore_ascii_case(xml, "<!ENTITY") {
        return Err(refuse(
            reason::XML_DOCTYPE_REFUSED,
            "the metadata contains a DOCTYPE or ENTITY declaration, which is not allowed",
        ));
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_METADATA_NODES,
        ..ParsingOptions::default()
    };
    let document = Document::parse_with_options(xml, options).map_err(|error| match error {
        roxmltree::Error::NodesLimitReached => refuse(
            reason::METADATA_TOO_MANY_NODES,
            "the metadata has more than 20000 XML nodes",
        ),
        // roxmltree's message names a position and a token kind, never document content.
        other => refuse(
            reason::XML_INVALID,
            &format!("the metadata is not well-formed XML: {other}"),
        ),
    })?;

    let entity = idp_entity(document.root_element())?;
    let entity_id = check_entity_id(entity.attribute("entityID").unwrap_or(""))?;

    let mut idp_descriptors = md_children(entity, "IDPSSODescriptor");
    let descriptor = match (idp_descriptors.next(), idp_descriptors.next()) {
        (None, _) => return Err(no_idp_descriptor()),
        (Some(descriptor), None) => descriptor,
        (Some(_), Some(_)) => {
            return Err(refuse(
                reason::METADATA_MULTIPLE_IDP_DESCRIPTORS,
                "the metadata has more than one IDPSSODescriptor; keep only the one to use",
            ))
        }
    };
    let supports_saml2 = descriptor
        .attribute("protocolSupportEnumeration")
        .is_some_and(|protocols| {
            protocols
                .split_ascii_whitespace()
                .any(|p| p == SAML2_PROTOCOL)
        });
    if !supports_saml2 {
        return Err(refuse(
            reason::METADATA_NOT_SAML2,
            "the IDPSSODescriptor does not support the SAML 2.0 protocol",
        ));
    }

    let mut sso_endpoints = Vec::new();
    for service in md_children(descriptor, "SingleSignOnService") {
        let Some(binding) = service.attribute("Binding").and_then(SamlBinding::from_urn) else {
            continue;
        };
        let location = https_url(
            service.attribute("Location").unwrap_or(""),
            field::SSO_URL,
            "SingleSignOnService location",
            HttpPolicy::HttpsOnly,
        )?;
        sso_endpoints.push(SsoEndpoint {
            binding,
            location: location.into(),
        });
    }
    if sso_endpoints.is_empty() {
        return Err(refuse(
            reason::METADATA_NO_SSO_ENDPOINT,
            "the metadata has no SingleSignOnService with the HTTP-Redirect or HTTP-POST binding",
        ));
    }

    // IdPs rotate by listing the retired or the next certificate beside the current one:
    // an expired certificate is left out (it can sign nothing any more), one not valid yet
    // is kept (assertions signed with it are accepted once the IdP switches), and the
    // document is refused only when no certificate is valid now. Anything else wrong
    // with a certificate (syntax, weak key or signature) refuses the document.
    let mut signing_certificates: Vec<CertificateInfo> = Vec::new();
    let (mut valid_now, mut expired, mut not_yet_valid) = (false, None, None);
    for encoded in signing_certificate_texts(descriptor) {
        let certificate = decode_metadata_certificate(encoded)?;
        match check_validity(&certificate, now, field::METADATA_XML) {
            Ok(()) => valid_now = true,
            Err(error) if error.reason() == reason::CERTIFICATE_EXPIRED => {
                expired.get_or_insert(error);
                continue;
            }
            Err(error) => {
                not_yet_valid.get_or_insert(error);
            }
        }
        if !signing_certificates
            .iter()
            .any(|known| known.sha256_fingerprint == certificate.sha256_fingerprint)
        {
            signing_certificates.push(certificate);
        }
    }
    if !valid_now {
        return Err(not_yet_valid.or(expired).unwrap_or_else(|| {
            refuse(
                reason::METADATA_NO_SIGNING_CERTIFICATE,
                "the IDPSSODescriptor has no signing certificate",
            )
        }));
    }

    Ok(SamlIdpMetadata {
        entity_id,
        sso_endpoints,
        signing_certificates,
    })
}

/// Builds IdP settings from the by-hand form: entity ID, SSO URL (used with the
/// HTTP-Redirect binding) and a PEM certificate, each checked like its metadata counterpart
/// and reported against its own field (`entity_id`, `sso_url`, `certificate_pem`).
pub fn manual_idp_config(
    entity_id: &str,
    sso_url: &str,
    certificate_pem: &str,
    now: DateTime<Utc>,
) -> Result<SamlIdpMetadata, IdpError> {
    let entity_id = check_entity_id(entity_id)?;
    let location = https_url(sso_url, field::SSO_URL, "SSO URL", HttpPolicy::HttpsOnly)?;
    let certificate = parse_certificate_pem(certificate_pem, now)?;
    Ok(SamlIdpMetadata {
        entity_id,
        sso_endpoints: vec![SsoEndpoint {
            binding: SamlBinding::HttpRedirect,
            location: location.into(),
        }],
        signing_certificates: vec![certificate],
    })
}

/// Finds the entity that holds the IdP role.
fn idp_entity<'a, 'input>(root: Node<'a, 'input>) -> Result<Node<'a, 'input>, IdpError> {
    if is_md(root, "EntityDescriptor") {
        return Ok(root);
    }
    if !is_md(root, "EntitiesDescriptor") {
        return Err(IdpError::new(
            reason::METADATA_NOT_SAML,
            field::METADATA_XML,
            "the document is not SAML 2.0 metadata: expected an EntityDescriptor or EntitiesDescriptor root",
        ));
    }
    // EntitiesDescriptor may nest; any depth is fine, the node limit bounds the walk.
    let mut idp_entities = root
        .descendants()
        .filter(|node| is_md(*node, "EntityDescriptor"))
        .filter(|entity| md_children(*entity, "IDPSSODescriptor").next().is_some());
    match (idp_entities.next(), idp_entities.next()) {
        (None, _) => Err(no_idp_descriptor()),
        (Some(entity), None) => Ok(entity),
        (Some(_), Some(_)) => Err(IdpError::new(
            reason::METADATA_MULTIPLE_IDP_ENTITIES,
            field::METADATA_XML,
            "the metadata describes more than one identity provider; paste the metadata of one",
        )),
    }
}

/// Texts of `KeyDescriptor[use=signing or absent]/ds:KeyInfo/ds:X509Data/ds:X509Certificate`.
fn signing_certificate_texts<'a>(descriptor: Node<'a, 'a>) -> impl Iterator<Item = &'a str> {
    md_children(descriptor, "KeyDescriptor")
        .filter(|key| matches!(key.attribute("use"), None | Some("signing")))
        .flat_map(|key| ds_children(key, "KeyInfo"))
        .flat_map(|info| ds_children(info, "X509Data"))
        .flat_map(|data| ds_children(data, "X509Certificate"))
        .map(|certificate| certificate.text().unwrap_or(""))
}

fn decode_metadata_certificate(encoded: &str) -> Result<CertificateInfo, IdpError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    // Base64 is 4/3 of the DER; anything longer cannot pass the DER size cap anyway.
    if compact.len() > crate::certificate::MAX_CERTIFICATE_BYTES * 4 / 3 + 4 {
        return Err(IdpError::new(
            reason::CERTIFICATE_TOO_LARGE,
            field::METADATA_XML,
            "a signing certificate in the metadata is larger than 16 KiB",
        ));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| {
            IdpError::new(
                reason::CERTIFICATE_INVALID,
                field::METADATA_XML,
                "a signing certificate in the metadata is not valid base64",
            )
        })?;
    inspect_certificate_der(&der, field::METADATA_XML)
}

fn check_entity_id(raw: &str) -> Result<String, IdpError> {
    let refuse =
        |message: &str| IdpError::new(reason::ENTITY_ID_INVALID, field::ENTITY_ID, message);
    let entity_id = raw.trim();
    if entity_id.is_empty() {
        return Err(refuse("the entity ID is missing"));
    }
    if entity_id.chars().count() > MAX_ENTITY_ID_CHARS {
        return Err(refuse("the entity ID is longer than 1024 characters"));
    }
    if entity_id.chars().any(char::is_control) {
        return Err(refuse("the entity ID contains control characters"));
    }
    Ok(entity_id.to_owned())
}

fn no_idp_descriptor() -> IdpError {
    IdpError::new(
        reason::METADATA_NO_IDP_DESCRIPTOR,
        field::METADATA_XML,
        "the metadata has no IDPSSODescriptor; it may be service provider metadata",
    )
}

fn is_md(node: Node<'_, '_>, local_name: &str) -> bool {
    node.is_element()
        && node.tag_name().namespace() == Some(SAML_METADATA_NS)
        && node.tag_name().name() == local_name
}

fn md_children<'a, 'input>(
    parent: Node<'a, 'input>,
    local_name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    parent
        .children()
        .filter(move |child| is_md(*child, local_name))
}

fn ds_children<'a, 'input>(
    parent: Node<'a, 'input>,
    local_name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    parent.children().filter(move |child| {
        child.is_element()
            && child.tag_name().namespace() == Some(XMLDSIG_NS)
            && child.tag_name().name() == local_name
    })
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod private_key_tests {
    use super::*;

    #[test]
    fn metadata_with_a_pasted_private_key_is_refused_without_echoing_it() {
        let xml = "<EntityDescriptor>-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY-----</EntityDescriptor>";
        let error = parse_idp_metadata(xml, Utc::now()).unwrap_err();
        assert_eq!(error.reason(), reason::PRIVATE_KEY_REFUSED);
        assert!(!error.message().contains("MIIEvQIBADAN"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::tests::{
        base64_body, now, EC_P256, EXPIRED_2020, PRIVATE_KEY, RSA_1024, RSA_2048_SHA1,
        RSA_2048_SHA256, VALID_FROM_2090,
    };
    use proptest::prelude::*;

    const OKTA: &str = include_str!("../testdata/okta_idp_metadata.xml");
    const ENTRA: &str = include_str!("../testdata/entra_idp_metadata.xml");
    const SP_ONLY: &str = include_str!("../testdata/sp_only_metadata.xml");
    const TWO_IDP_DESCRIPTORS: &str = include_str!("../testdata/two_idp_descriptors.xml");
    const HTTP_SSO_URL: &str = include_str!("../testdata/http_sso_url.xml");
    const BILLION_LAUGHS: &str = include_str!("../testdata/billion_laughs.xml");
    const EXTERNAL_ENTITY: &str = include_str!("../testdata/external_entity.xml");

    fn refused(xml: &str) -> IdpError {
        parse_idp_metadata(xml, now()).unwrap_err()
    }

    /// A minimal IdP entity with the given certificate body and SSO location.
    fn idp_entity_xml(certificate_base64: &str, location: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="{SAML_METADATA_NS}" xmlns:ds="{XMLDSIG_NS}" entityID="https://idp.example.com">
  <md:IDPSSODescriptor protocolSupportEnumeration="{SAML2_PROTOCOL}">
    <md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{certificate_base64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{location}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#
        )
    }

    fn good_entity_xml() -> String {
        idp_entity_xml(&base64_body(RSA_2048_SHA256), "https://idp.example.com/sso")
    }

    #[test]
    fn okta_metadata_is_parsed() {
        let metadata = parse_idp_metadata(OKTA, now()).unwrap();
        assert_eq!(
            metadata.entity_id,
            "http://www.okta.com/exk1a2b3c4d5E6f7g8h9"
        );
        assert_eq!(metadata.sso_endpoints.len(), 2);
        assert_eq!(metadata.sso_endpoints[0].binding, SamlBinding::HttpPost);
        let preferred = metadata.preferred_sso_endpoint();
        assert_eq!(preferred.binding, SamlBinding::HttpRedirect);
        assert_eq!(
            preferred.location,
            "https://acme.okta.com/app/acme_signpost_1/exk1a2b3c4d5E6f7g8h9/sso/saml"
        );
        assert_eq!(metadata.signing_certificates.len(), 1);
        let expected = parse_certificate_pem(RSA_2048_SHA256, now()).unwrap();
        assert_eq!(metadata.signing_certificates[0], expected);
    }

    #[test]
    fn entra_metadata_keeps_only_idp_signing_certificates_and_usable_bindings() {
        let metadata = parse_idp_metadata(ENTRA, now()).unwrap();
        assert_eq!(
            metadata.entity_id,
            "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
        );
        let bindings: Vec<_> = metadata.sso_endpoints.iter().map(|e| e.binding).collect();
        assert_eq!(bindings, [SamlBinding::HttpRedirect, SamlBinding::HttpPost]);
        let algorithms: Vec<_> = metadata
            .signing_certificates
            .iter()
            .map(|c| c.key_algorithm.as_str())
            .collect();
        assert_eq!(algorithms, ["RSA", "EC"]);
    }

    #[test]
    fn entities_descriptor_with_one_idp_entity_is_accepted() {
        let sp_entity = SP_ONLY.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let xml = format!(
            r#"<md:EntitiesDescriptor xmlns:md="{SAML_METADATA_NS}">{sp_entity}<md:EntitiesDescriptor>{}</md:EntitiesDescriptor></md:EntitiesDescriptor>"#,
            good_entity_xml()
        );
        let metadata = parse_idp_metadata(&xml, now()).unwrap();
        assert_eq!(metadata.entity_id, "https://idp.example.com");
    }

    #[test]
    fn entities_descriptor_with_two_idp_entities_is_refused() {
        let xml = format!(
            r#"<md:EntitiesDescriptor xmlns:md="{SAML_METADATA_NS}">{0}{0}</md:EntitiesDescriptor>"#,
            good_entity_xml()
        );
        assert_eq!(
            refused(&xml).reason(),
            reason::METADATA_MULTIPLE_IDP_ENTITIES
        );
    }

    #[test]
    fn prefixes_do_not_matter_but_namespaces_do() {
        let default_namespace = good_entity_xml()
            .replace("md:", "")
            .replace(r#"xmlns:md="#, "xmlns=");
        assert!(parse_idp_metadata(&default_namespace, now()).is_ok());
        let wrong_namespace = good_entity_xml().replace(SAML_METADATA_NS, "urn:example:not-saml");
        assert_eq!(
            refused(&wrong_namespace).reason(),
            reason::METADATA_NOT_SAML
        );
        let wrong_ds = good_entity_xml().replace(XMLDSIG_NS, "urn:example:not-dsig");
        assert_eq!(
            refused(&wrong_ds).reason(),
            reason::METADATA_NO_SIGNING_CERTIFICATE
        );
    }

    #[test]
    fn service_provider_metadata_is_refused() {
        assert_eq!(
            refused(SP_ONLY).reason(),
            reason::METADATA_NO_IDP_DESCRIPTOR
        );
        let wrapped = format!(
            r#"<md:EntitiesDescriptor xmlns:md="{SAML_METADATA_NS}">{}</md:EntitiesDescriptor>"#,
            SP_ONLY.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
        );
        assert_eq!(
            refused(&wrapped).reason(),
            reason::METADATA_NO_IDP_DESCRIPTOR
        );
    }

    #[test]
    fn two_idp_descriptors_are_refused() {
        assert_eq!(
            refused(TWO_IDP_DESCRIPTORS).reason(),
            reason::METADATA_MULTIPLE_IDP_DESCRIPTORS
        );
    }

    #[test]
    fn doctype_and_entities_are_refused_before_parsing() {
        for xml in [
            BILLION_LAUGHS,
            EXTERNAL_ENTITY,
            "<!doctype x><x/>",
            "<x><!ENTITY a 'b'></x>",
        ] {
            let error = refused(xml);
            assert_eq!(error.reason(), reason::XML_DOCTYPE_REFUSED);
            assert_eq!(error.field(), field::METADATA_XML);
        }
    }

    #[test]
    fn http_sso_location_is_refused() {
        let error = refused(HTTP_SSO_URL);
        assert_eq!(error.reason(), reason::URL_NOT_HTTPS);
        assert_eq!(error.field(), field::SSO_URL);
        for location in ["/relative", "https://user:pw@idp.example.com/sso", ""] {
            let xml = idp_entity_xml(&base64_body(RSA_2048_SHA256), location);
            assert_eq!(refused(&xml).reason(), reason::URL_NOT_HTTPS, "{location}");
        }
    }

    #[test]
    fn metadata_without_usable_sso_binding_is_refused() {
        let xml = good_entity_xml().replace("bindings:HTTP-POST", "bindings:SOAP");
        assert_eq!(refused(&xml).reason(), reason::METADATA_NO_SSO_ENDPOINT);
    }

    #[test]
    fn metadata_without_signing_certificate_is_refused() {
        let encryption_only = good_entity_xml().replace(
            "<md:KeyDescriptor>",
            r#"<md:KeyDescriptor use="encryption">"#,
        );
        assert_eq!(
            refused(&encryption_only).reason(),
            reason::METADATA_NO_SIGNING_CERTIFICATE
        );
        let no_key = idp_entity_xml("", "https://idp.example.com/sso")
            .replace("<md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate></ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>", "");
        assert_eq!(
            refused(&no_key).reason(),
            reason::METADATA_NO_SIGNING_CERTIFICATE
        );
    }

    #[test]
    fn metadata_certificates_are_checked_like_pasted_ones() {
        for (pem, expected) in [
            (EXPIRED_2020, reason::CERTIFICATE_EXPIRED),
            (RSA_1024, reason::CERTIFICATE_KEY_TOO_WEAK),
            (RSA_2048_SHA1, reason::CERTIFICATE_WEAK_SIGNATURE),
        ] {
            let xml = idp_entity_xml(&base64_body(pem), "https://idp.example.com/sso");
            let error = refused(&xml);
            assert_eq!(error.reason(), expected);
            assert_eq!(error.field(), field::METADATA_XML);
        }
        let not_base64 = idp_entity_xml("not base64!", "https://idp.example.com/sso");
        assert_eq!(refused(&not_base64).reason(), reason::CERTIFICATE_INVALID);
        let huge = idp_entity_xml(&"A".repeat(40_000), "https://idp.example.com/sso");
        assert_eq!(refused(&huge).reason(), reason::CERTIFICATE_TOO_LARGE);
    }

    #[test]
    fn a_rotation_keeps_the_current_and_next_certificates_and_drops_expired_ones() {
        use chrono::Datelike;
        // good_entity_xml lists the current certificate (RSA_2048_SHA256); an IdP rotating
        // adds its retired one (expired) and its next one (valid from 2090).
        let with = |pems: &[&str]| {
            let keys: String = pems
                .iter()
                .map(|pem| {
                    let body = base64_body(pem);
                    format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>")
                })
                .collect();
            good_entity_xml().replace(
                "<md:SingleSignOnService",
                &format!("{keys}<md:SingleSignOnService"),
            )
        };
        let rotating = with(&[EXPIRED_2020, VALID_FROM_2090]);
        let metadata = parse_idp_metadata(&rotating, now()).unwrap();
        let current = parse_certificate_pem(RSA_2048_SHA256, now()).unwrap();
        let years: Vec<_> = metadata
            .signing_certificates
            .iter()
            .map(|c| c.not_before.year())
            .collect();
        assert_eq!(years.len(), 2, "the expired one is left out: {years:?}");
        assert_eq!(
            metadata.signing_certificates[0], current,
            "the current one first"
        );
        assert_eq!(metadata.signing_certificates[1].not_before.year(), 2090);

        // Nothing valid now: refused, naming why.
        let only = |pem: &str| idp_entity_xml(&base64_body(pem), "https://idp.example.com/sso");
        assert_eq!(
            refused(&only(VALID_FROM_2090)).reason(),
            reason::CERTIFICATE_NOT_YET_VALID
        );
        assert_eq!(
            refused(&only(EXPIRED_2020)).reason(),
            reason::CERTIFICATE_EXPIRED
        );
        let retired_and_next = idp_entity_xml(&base64_body(EXPIRED_2020), "https://idp.example.com/sso")
            .replace(
                "<md:SingleSignOnService",
                &format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService", base64_body(VALID_FROM_2090)),
            );
        assert_eq!(
            refused(&retired_and_next).reason(),
            reason::CERTIFICATE_NOT_YET_VALID
        );
        // A weak certificate beside a good one still refuses the document.
        assert_eq!(
            refused(&with(&[RSA_1024])).reason(),
            reason::CERTIFICATE_KEY_TOO_WEAK
        );
    }

    #[test]
    fn duplicate_certificates_are_kept_once() {
        let body = base64_body(RSA_2048_SHA256);
        let key = format!("<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>");
        let xml = good_entity_xml().replace(
            "<md:SingleSignOnService",
            &format!("{key}<md:SingleSignOnService"),
        );
        let metadata = parse_idp_metadata(&xml, now()).unwrap();
        assert_eq!(metadata.signing_certificates.len(), 1);
    }

    #[test]
    fn entity_id_is_required_and_bounded() {
        let missing = good_entity_xml().replace(r#"entityID="https://idp.example.com""#, "");
        let error = refused(&missing);
        assert_eq!(
            (error.reason(), error.field()),
            (reason::ENTITY_ID_INVALID, field::ENTITY_ID)
        );
        let blank =
            good_entity_xml().replace(r#"entityID="https://idp.example.com""#, r#"entityID="  ""#);
        assert_eq!(refused(&blank).reason(), reason::ENTITY_ID_INVALID);
        let long = good_entity_xml().replace(
            r#"entityID="https://idp.example.com""#,
            &format!(r#"entityID="https://idp.example.com/{}""#, "a".repeat(1024)),
        );
        assert_eq!(refused(&long).reason(), reason::ENTITY_ID_INVALID);
    }

    #[test]
    fn descriptor_without_saml2_protocol_is_refused() {
        let xml = good_entity_xml().replace(SAML2_PROTOCOL, "urn:oasis:names:tc:SAML:1.1:protocol");
        assert_eq!(refused(&xml).reason(), reason::METADATA_NOT_SAML2);
    }

    #[test]
    fn malformed_and_foreign_xml_is_refused() {
        assert_eq!(refused("").reason(), reason::XML_INVALID);
        assert_eq!(
            refused("<md:EntityDescriptor").reason(),
            reason::XML_INVALID
        );
        assert_eq!(refused("not xml at all").reason(), reason::XML_INVALID);
        assert_eq!(
            refused("<html><body/></html>").reason(),
            reason::METADATA_NOT_SAML
        );
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let padding = format!("<!-- {} -->", "x".repeat(MAX_METADATA_BYTES));
        let xml = good_entity_xml().replace(
            "<md:IDPSSODescriptor",
            &format!("{padding}<md:IDPSSODescriptor"),
        );
        assert_eq!(refused(&xml).reason(), reason::METADATA_TOO_LARGE);
    }

    #[test]
    fn too_many_nodes_are_refused() {
        let xml = format!("<r>{}</r>", "<a/>".repeat(30_000));
        assert_eq!(refused(&xml).reason(), reason::METADATA_TOO_MANY_NODES);
    }

    #[test]
    fn manual_config_becomes_a_redirect_endpoint() {
        let metadata = manual_idp_config(
            " https://idp.example.com/entity ",
            "https://idp.example.com/sso",
            RSA_2048_SHA256,
            now(),
        )
        .unwrap();
        assert_eq!(metadata.entity_id, "https://idp.example.com/entity");
        assert_eq!(
            metadata.preferred_sso_endpoint().binding,
            SamlBinding::HttpRedirect
        );
        assert_eq!(
            metadata.preferred_sso_endpoint().location,
            "https://idp.example.com/sso"
        );
        assert_eq!(metadata.signing_certificates.len(), 1);
    }

    #[test]
    fn manual_config_reports_the_field_at_fault() {
        let sso = "https://idp.example.com/sso";
        let cases = [
            manual_idp_config("", sso, RSA_2048_SHA256, now()),
            manual_idp_config("e", "http://idp.example.com/sso", RSA_2048_SHA256, now()),
            manual_idp_config("e", sso, PRIVATE_KEY, now()),
            manual_idp_config(
                "e",
                sso,
                EC_P256.replace("CERTIFICATE", "X").as_str(),
                now(),
            ),
        ];
        let reported: Vec<_> = cases
            .into_iter()
            .map(|result| {
                let error = result.unwrap_err();
                (error.reason(), error.field())
            })
            .collect();
        assert_eq!(
            reported,
            [
                (reason::ENTITY_ID_INVALID, field::ENTITY_ID),
                (reason::URL_NOT_HTTPS, field::SSO_URL),
                (reason::PRIVATE_KEY_REFUSED, field::CERTIFICATE_PEM),
                (reason::CERTIFICATE_INVALID, field::CERTIFICATE_PEM),
            ]
        );
    }

    #[test]
    fn post_endpoint_is_used_when_there_is_no_redirect() {
        let metadata = parse_idp_metadata(&good_entity_xml(), now()).unwrap();
        assert_eq!(
            metadata.preferred_sso_endpoint().binding,
            SamlBinding::HttpPost
        );
    }

    #[test]
    fn binding_urns_round_trip() {
        for binding in [SamlBinding::HttpRedirect, SamlBinding::HttpPost] {
            assert_eq!(SamlBinding::from_urn(binding.urn()), Some(binding));
        }
        assert_eq!(
            SamlBinding::from_urn("urn:oasis:names:tc:SAML:2.0:bindings:SOAP"),
            None
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(xml in "\\PC{0,400}") {
            let _ = parse_idp_metadata(&xml, now());
        }

        #[test]
        fn mutated_metadata_never_panics(cut in 0usize..4000, insert in "[<>&\"'/= a-zA-Z:!-]{0,8}") {
            let mut xml = OKTA.to_owned();
            let mut at = cut.min(xml.len());
            while !xml.is_char_boundary(at) {
                at -= 1;
            }
            xml.insert_str(at, &insert);
            let _ = parse_idp_metadata(&xml, now());
        }
    }
}
