//! Per-IdP defaults for the setup form: which protocol and which attribute or claim names
//! carry the user's email, names and groups.
//!
//! These are the names each provider uses out of the box or that its own SAML app setup
//! guides tell admins to configure; the form pre-fills them and the admin may change them.

/// Protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SAML 2.0 Web Browser SSO.
    Saml,
    /// OpenID Connect authorization code flow.
    Oidc,
}

/// Defaults for one identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderPreset {
    /// Stable identifier, e.g. `entra_id`.
    pub id: &'static str,
    /// Name shown to admins.
    pub display_name: &'static str,
    /// Protocol the preset configures.
    pub protocol: Protocol,
    /// Attribute (SAML) or claim (OIDC) holding the email address.
    pub email_claim: &'static str,
    /// Attribute or claim holding the given name.
    pub given_name_claim: &'static str,
    /// Attribute or claim holding the family name.
    pub family_name_claim: &'static str,
    /// Attribute or claim holding group memberships.
    pub groups_claim: &'static str,
    /// Short hint shown next to the form.
    pub notes: &'static str,
}

static PRESETS: [ProviderPreset; 6] = [
    ProviderPreset {
        id: "okta",
        display_name: "Okta",
        protocol: Protocol::Saml,
        email_claim: "email",
        given_name_claim: "firstName",
        family_name_claim: "lastName",
        groups_claim: "groups",
        notes: "In the Okta SAML app, add attribute statements email = user.email, \
                firstName = user.firstName, lastName = user.lastName, and a group attribute \
                statement named groups (filter: matches regex .*).",
    },
    ProviderPreset {
        id: "entra_id",
        display_name: "Microsoft Entra ID (Azure AD)",
        protocol: Protocol::Saml,
        email_claim: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        given_name_claim: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
        family_name_claim: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
        groups_claim: "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
        notes: "Entra ID sends these claim URIs by default; add a group claim under Attributes & \
                Claims to send groups (sent as object IDs unless configured otherwise).",
    },
    ProviderPreset {
        id: "google_workspace",
        display_name: "Google Workspace",
        protocol: Protocol::Saml,
        email_claim: "email",
        given_name_claim: "firstName",
        family_name_claim: "lastName",
        groups_claim: "groups",
        notes: "In the custom SAML app, map Primary email to email, First name to firstName, \
                Last name to lastName, and add a Group membership mapping named groups.",
    },
    ProviderPreset {
        id: "onelogin",
        display_name: "OneLogin",
        protocol: Protocol::Saml,
        email_claim: "User.email",
        given_name_claim: "User.FirstName",
        family_name_claim: "User.LastName",
        groups_claim: "memberOf",
        notes: "The OneLogin SAML connector sends User.email, User.FirstName and User.LastName; \
                set the memberOf parameter to send groups or roles.",
    },
    ProviderPreset {
        id: "generic_saml",
        display_name: "Other SAML 2.0 provider",
        protocol: Protocol::Saml,
        email_claim: "email",
        given_name_claim: "firstName",
        family_name_claim: "lastName",
        groups_claim: "groups",
        notes: "Use the attribute names your provider sends; the NameID should be the user's \
                email address.",
    },
    ProviderPreset {
        id: "generic_oidc",
        display_name: "Other OpenID Connect provider",
        protocol: Protocol::Oidc,
        email_claim: "email",
        given_name_claim: "given_name",
        family_name_claim: "family_name",
        groups_claim: "groups",
        notes: "Standard OpenID Connect claims; request the openid, email and profile scopes. \
                The groups claim is not standard and may need configuring in the provider.",
    },
];

/// All presets, in the order the form lists them.
pub fn provider_presets() -> &'static [ProviderPreset] {
    &PRESETS
}

/// The preset with this [`ProviderPreset::id`], if any.
pub fn provider_preset(id: &str) -> Option<&'static ProviderPreset> {
    PRESETS.iter().find(|preset| preset.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRA_CLAIMS: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims";

    #[test]
    fn every_required_provider_has_a_preset_with_unique_id() {
        let ids: Vec<_> = provider_presets().iter().map(|p| p.id).collect();
        assert_eq!(
            ids,
            [
                "okta",
                "entra_id",
                "google_workspace",
                "onelogin",
                "generic_saml",
                "generic_oidc"
            ]
        );
    }

    #[test]
    fn entra_uses_the_claim_uris() {
        let entra = provider_preset("entra_id").unwrap();
        assert_eq!(entra.email_claim, format!("{ENTRA_CLAIMS}/emailaddress"));
        assert_eq!(entra.given_name_claim, format!("{ENTRA_CLAIMS}/givenname"));
        assert_eq!(entra.family_name_claim, format!("{ENTRA_CLAIMS}/surname"));
        assert_eq!(
            entra.groups_claim,
            "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
        );
    }

    #[test]
    fn only_generic_oidc_speaks_oidc() {
        for preset in provider_presets() {
            assert_eq!(
                preset.protocol == Protocol::Oidc,
                preset.id == "generic_oidc",
                "{}",
                preset.id
            );
            assert!(!preset.email_claim.is_empty() && !preset.notes.is_empty());
        }
        assert_eq!(
            provider_preset("onelogin").unwrap().email_claim,
            "User.email"
        );
        assert_eq!(provider_preset("nope"), None);
    }
}
