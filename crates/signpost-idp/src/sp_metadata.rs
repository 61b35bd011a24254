//! Our own SAML service provider metadata, which the admin uploads to their IdP.

use crate::saml_metadata::{SamlBinding, SAML_METADATA_NS};

/// Name ID format we ask for: the user's email address.
pub const NAME_ID_FORMAT_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Our side of one connection: what the IT admin enters in their IdP and what
/// login edges put in their requests. Derived from the public base URL and the
/// connection id, so the control plane and the routing table always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProviderUrls {
    /// Our SAML SP entity id.
    pub entity_id: String,
    /// Our SAML assertion consumer service URL (HTTP-POST).
    pub acs_url: String,
    /// Our OIDC redirect URI.
    pub oidc_redirect_uri: String,
}

/// The URLs' parts: the SAML entity id is the base URL (without a trailing `/`),
/// [`SAML_PATH`] and the connection id; the ACS URL is the entity id and
/// [`ACS_SUFFIX`]; the OIDC redirect URI is the base URL, [`OIDC_PATH`], the
/// connection id and [`OIDC_CALLBACK_SUFFIX`]. (The routing table writes them from these
/// parts instead of keeping them in every route.)
pub const SAML_PATH: &str = "/sso/saml/";
/// See [`SAML_PATH`].
pub const ACS_SUFFIX: &str = "/acs";
/// See [`SAML_PATH`].
pub const OIDC_PATH: &str = "/sso/oidc/";
/// See [`SAML_PATH`].
pub const OIDC_CALLBACK_SUFFIX: &str = "/callback";

impl ServiceProviderUrls {
    /// The URLs of `connection_id` under `public_base_url`.
    pub fn for_connection(public_base_url: &str, connection_id: &str) -> Self {
        let base = public_base_url.trim_end_matches('/');
        Self {
            entity_id: format!("{base}{SAML_PATH}{connection_id}"),
            acs_url: format!("{base}{SAML_PATH}{connection_id}{ACS_SUFFIX}"),
            oidc_redirect_uri: format!("{base}{OIDC_PATH}{connection_id}{OIDC_CALLBACK_SUFFIX}"),
        }
    }

    /// Our SP metadata XML for these URLs.
    pub fn metadata_xml(&self) -> String {
        sp_metadata_xml(&self.entity_id, &self.acs_url)
    }
}

/// Renders SAML 2.0 SP metadata for one connection.
///
/// One `SPSSODescriptor` with `AuthnRequestsSigned="false"` (we do not sign requests),
/// `WantAssertionsSigned="true"`, the emailAddress NameID format and one HTTP-POST
/// `AssertionConsumerService` at index 0. Both values are XML-escaped; they are not
/// validated here (the caller builds them from its own configuration).
pub fn sp_metadata_xml(sp_entity_id: &str, acs_url: &str) -> String {
    let entity_id = escape_xml_attribute(sp_entity_id);
    let acs_url = escape_xml_attribute(acs_url);
    let post = SamlBinding::HttpPost.urn();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{SAML_METADATA_NS}" entityID="{entity_id}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>{NAME_ID_FORMAT_EMAIL}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{post}" Location="{acs_url}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#
    )
}

fn escape_xml_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Attribute-value normalization would turn these into spaces; keep them intact.
            '\t' => escaped.push_str("&#9;"),
            '\n' => escaped.push_str("&#10;"),
            '\r' => escaped.push_str("&#13;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md<'a, 'input>(
        node: roxmltree::Node<'a, 'input>,
        name: &str,
    ) -> roxmltree::Node<'a, 'input> {
        node.descendants()
            .find(|n| {
                n.tag_name().namespace() == Some(SAML_METADATA_NS) && n.tag_name().name() == name
            })
            .unwrap_or_else(|| panic!("no md:{name}"))
    }

    #[test]
    fn sp_metadata_is_valid_saml_with_both_values() {
        let entity_id = "https://signpost.example.com/saml/org_123/conn_456";
        let acs_url = "https://signpost.example.com/saml/acs?connection=conn_456&v=1";
        let xml = sp_metadata_xml(entity_id, acs_url);
        let document = roxmltree::Document::parse(&xml).unwrap();
        let root = document.root_element();
        assert_eq!(root.tag_name().namespace(), Some(SAML_METADATA_NS));
        assert_eq!(root.tag_name().name(), "EntityDescriptor");
        assert_eq!(root.attribute("entityID"), Some(entity_id));
        let descriptor = md(root, "SPSSODescriptor");
        assert_eq!(descriptor.attribute("AuthnRequestsSigned"), Some("false"));
        assert_eq!(descriptor.attribute("WantAssertionsSigned"), Some("true"));
        assert_eq!(md(root, "NameIDFormat").text(), Some(NAME_ID_FORMAT_EMAIL));
        let acs = md(root, "AssertionConsumerService");
        assert_eq!(acs.attribute("Location"), Some(acs_url));
        assert_eq!(acs.attribute("Binding"), Some(SamlBinding::HttpPost.urn()));
        assert_eq!(acs.attribute("index"), Some("0"));
    }

    #[test]
    fn hostile_values_are_escaped() {
        let entity_id = "urn:x\"/><evil a='1'>&amp;\n";
        let xml = sp_metadata_xml(entity_id, "https://a.example/<acs>");
        let document = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(
            document.root_element().attribute("entityID"),
            Some(entity_id)
        );
        assert!(document
            .descendants()
            .all(|n| n.tag_name().name() != "evil"));
    }
}
