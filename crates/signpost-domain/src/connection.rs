//! The Connection aggregate: one IdP configuration of an organization, its
//! claim mapping and its group → role assignments.
//!
//! Settings arrive already parsed and checked (metadata, certificates,
//! discovery documents: `signpost-idp`); this aggregate holds the rules about
//! the connection itself. Whether it is *active* is the organization's
//! decision (see `organization.rs`): one organization, one active connection.

use crate::error::{check_text, Decision, DomainError};
use crate::event::{schema, Event};
use crate::vec_map::VecMap;

/// The most group assignments one connection may hold.
pub const MAX_GROUPS: usize = 500;

/// Where a connection is in its lifecycle. Derived, not stored: whether a
/// connection is active is the organization's decision (its stream), the rest
/// comes from the connection's own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Allocated by a setup link, not configured yet.
    Draft,
    /// Configured, never active.
    Configured,
    /// Configured through a switch link, waiting for `SwitchProvider`.
    Standby,
    /// The organization's active connection.
    Active,
    /// Was active once (deactivated or switched away from).
    Inactive,
}

/// The status of `connection_id` given its state (`None` while a draft) and its
/// organization's. The one place this rule lives: the admin read model and the
/// point-in-time answers both call it.
pub fn connection_status(
    connection_id: &str,
    connection: Option<&Connection>,
    organization: Option<&crate::organization::Organization>,
) -> ConnectionStatus {
    let Some(connection) = connection.filter(|c| c.is_configured()) else {
        return ConnectionStatus::Draft;
    };
    match organization {
        Some(org) if org.active_connection_id.as_deref() == Some(connection_id) => {
            ConnectionStatus::Active
        }
        Some(org)
            if org
                .previously_active
                .iter()
                .any(|id| &**id == connection_id) =>
        {
            ConnectionStatus::Inactive
        }
        _ if connection.role == schema::ConnectionRole::Standby => ConnectionStatus::Standby,
        _ => ConnectionStatus::Configured,
    }
}

pub use crate::saml_idp::SamlIdp;

/// The IdP settings of a connection, as its state keeps them.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionSettings {
    /// SAML 2.0: one encoded message, certificates without their DER (see [`SamlIdp`]).
    Saml(SamlIdp),
    /// OpenID Connect (client secret encrypted). Boxed: every connection held in memory
    /// would pay for its size otherwise.
    Oidc(Box<schema::OidcSettings>),
}

/// The IdP settings a setup form submits, whole (the certificates' DER included): what
/// the configuration event records.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmittedSettings {
    /// SAML 2.0.
    Saml(schema::SamlSettings),
    /// OpenID Connect (client secret encrypted).
    Oidc(Box<schema::OidcSettings>),
}

/// Connection state: a fold of its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection {
    /// Empty until configured.
    pub id: crate::Id,
    /// Its organization.
    pub organization_id: crate::Id,
    /// The link whose form last configured it.
    pub setup_link_id: crate::Id,
    /// Primary or standby.
    pub role: schema::ConnectionRole,
    /// SAML or OIDC settings; `None` until configured.
    pub settings: Option<ConnectionSettings>,
    /// Claim names. Shared: connections configured from the same preset name the same
    /// claims, and the read model keeps one copy of each mapping.
    pub claim_mapping: std::sync::Arc<schema::ClaimMapping>,
    /// The provider preset picked on the form (shared like the claim mapping).
    pub provider_preset: crate::Id,
    /// IdP group → application role.
    pub groups: VecMap<String, String>,
    /// Whether users must belong to an assigned group.
    pub require_group: bool,
    /// Stream version.
    pub version: u64,
}

/// Commands on a connection.
// Commands are short-lived values; boxing the settings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ConnectionCommand {
    /// Set (or replace) the IdP configuration from a setup form.
    Configure {
        connection_id: String,
        organization_id: String,
        setup_link_id: String,
        role: schema::ConnectionRole,
        settings: SubmittedSettings,
        claim_mapping: schema::ClaimMapping,
        provider_preset: String,
    },
    /// Map an IdP group to an application role.
    AssignGroup { idp_group: String, role: String },
    /// Remove an IdP group mapping.
    UnassignGroup { idp_group: String },
    /// Require (or not) membership of an assigned group.
    SetGroupRequirement { require_group: bool },
}

impl Connection {
    /// Whether settings were submitted.
    pub fn is_configured(&self) -> bool {
        self.settings.is_some()
    }

    /// The connection's protocol.
    pub fn protocol(&self) -> schema::Protocol {
        match self.settings {
            Some(ConnectionSettings::Saml(_)) => schema::Protocol::Saml,
            Some(ConnectionSettings::Oidc(_)) => schema::Protocol::Oidc,
            None => schema::Protocol::Unspecified,
        }
    }

    /// Decides a command.
    pub fn handle(&self, command: ConnectionCommand) -> Decision {
        match command {
            ConnectionCommand::Configure {
                connection_id,
                organization_id,
                setup_link_id,
                role,
                settings,
                claim_mapping,
                provider_preset,
            } => {
                if self.is_configured() && *self.organization_id != *organization_id {
                    return Err(DomainError::precondition(
                        "CONNECTION_OF_ANOTHER_ORGANIZATION",
                        "the connection belongs to another organization",
                    ));
                }
                let claim_mapping = check_claim_mapping(claim_mapping)?;
                let (protocol, saml, oidc) = match settings {
                    SubmittedSettings::Saml(saml) => (schema::Protocol::Saml, Some(saml), None),
                    SubmittedSettings::Oidc(oidc) => (schema::Protocol::Oidc, None, Some(*oidc)),
                };
                Ok(vec![Event::ConnectionConfigured(Box::new(
                    schema::ConnectionConfigured {
                        connection_id,
                        organization_id,
                        setup_link_id,
                        role: role as i32,
                        protocol: protocol as i32,
                        saml,
                        oidc,
                        claim_mapping: Some(claim_mapping),
                        provider_preset,
                    },
                ))])
            }
            ConnectionCommand::AssignGroup { idp_group, role } => {
                self.check_configured()?;
                let idp_group = check_text(&idp_group, "idp_group", 256)?;
                let role = check_text(&role, "role", 128)?;
                match self.groups.get(&idp_group) {
                    Some(current) if *current == role => return Ok(vec![]),
                    Some(_) => {}
                    None if self.groups.len() >= MAX_GROUPS => {
                        return Err(DomainError::precondition(
                            "TOO_MANY_GROUPS",
                            format!("a connection may map at most {MAX_GROUPS} groups"),
                        ))
                    }
                    None => {}
                }
                Ok(vec![Event::GroupAssigned(schema::GroupAssigned {
                    idp_group,
                    role,
                })])
            }
            ConnectionCommand::UnassignGroup { idp_group } => {
                self.check_configured()?;
                if !self.groups.contains_key(idp_group.trim()) {
                    return Err(DomainError::not_found(
                        "GROUP_NOT_ASSIGNED",
                        "idp_group",
                        format!("group `{}` is not assigned", idp_group.trim()),
                    ));
                }
                if self.require_group && self.groups.len() == 1 {
                    return Err(DomainError::precondition(
                        "LAST_REQUIRED_GROUP",
                        "group membership is required; keep at least one group or stop requiring it first",
                    ));
                }
                Ok(vec![Event::GroupUnassigned(schema::GroupUnassigned {
                    idp_group: idp_group.trim().to_owned(),
                })])
            }
            ConnectionCommand::SetGroupRequirement { require_group } => {
                self.check_configured()?;
                if require_group == self.require_group {
                    return Ok(vec![]);
                }
                if require_group && self.groups.is_empty() {
                    return Err(DomainError::precondition(
                        "NO_GROUPS_ASSIGNED",
                        "assign at least one group before requiring group membership",
                    ));
                }
                Ok(vec![Event::GroupRequirementChanged(
                    schema::GroupRequirementChanged { require_group },
                )])
            }
        }
    }

    fn check_configured(&self) -> Result<(), DomainError> {
        if self.is_configured() {
            Ok(())
        } else {
            Err(DomainError::not_found(
                "CONNECTION_NOT_FOUND",
                "connection_id",
                "no such configured connection",
            ))
        }
    }

    /// Applies one of this aggregate's events.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ConnectionConfigured(e) => {
                self.id = e.connection_id.as_str().into();
                self.organization_id = e.organization_id.as_str().into();
                self.setup_link_id = e.setup_link_id.as_str().into();
                self.role = e.role();
                self.settings = match (&e.saml, &e.oidc) {
                    (Some(saml), _) => Some(ConnectionSettings::Saml(SamlIdp::new(saml))),
                    (None, Some(oidc)) => Some(ConnectionSettings::Oidc(Box::new(oidc.clone()))),
                    (None, None) => None,
                };
                self.claim_mapping = e.claim_mapping.clone().unwrap_or_default().into();
                self.provider_preset = e.provider_preset.as_str().into();
            }
            Event::GroupAssigned(e) => {
                self.groups.insert(e.idp_group.clone(), e.role.clone());
            }
            Event::GroupUnassigned(e) => {
                self.groups.remove(&e.idp_group);
            }
            Event::GroupRequirementChanged(e) => self.require_group = e.require_group,
            _ => return,
        }
        self.version += 1;
    }
}

/// The email claim is required; the others are optional. Names are trimmed.
fn check_claim_mapping(mapping: schema::ClaimMapping) -> Result<schema::ClaimMapping, DomainError> {
    let email = check_text(&mapping.email, "claim_mapping.email", 256)?;
    let optional = |value: &str, field: &'static str| -> Result<String, DomainError> {
        if value.trim().is_empty() {
            Ok(String::new())
        } else {
            check_text(value, field, 256)
        }
    };
    Ok(schema::ClaimMapping {
        email,
        given_name: optional(&mapping.given_name, "claim_mapping.given_name")?,
        family_name: optional(&mapping.family_name, "claim_mapping.family_name")?,
        groups: optional(&mapping.groups, "claim_mapping.groups")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionCommand as C;

    fn configure(email_claim: &str) -> C {
        C::Configure {
            connection_id: "c1".into(),
            organization_id: "o1".into(),
            setup_link_id: "l1".into(),
            role: schema::ConnectionRole::Primary,
            settings: SubmittedSettings::Saml(schema::SamlSettings {
                idp_entity_id: "https://idp.example/entity".into(),
                ..Default::default()
            }),
            claim_mapping: schema::ClaimMapping {
                email: email_claim.into(),
                ..Default::default()
            },
            provider_preset: "okta".into(),
        }
    }

    fn configured() -> Connection {
        let mut connection = Connection::default();
        for event in connection.handle(configure("email")).unwrap() {
            connection.apply(&event);
        }
        connection
    }

    fn then(connection: &mut Connection, command: C) -> Vec<Event> {
        let events = connection.handle(command).unwrap();
        for event in &events {
            connection.apply(event);
        }
        events
    }

    #[test]
    fn the_email_claim_is_required() {
        let error = Connection::default().handle(configure(" ")).unwrap_err();
        assert_eq!(
            (error.reason, error.field),
            ("FIELD_REQUIRED", Some("claim_mapping.email"))
        );
    }

    #[test]
    fn groups_can_be_assigned_and_unassigned() {
        let mut connection = configured();
        then(
            &mut connection,
            C::AssignGroup {
                idp_group: " Lawyers ".into(),
                role: "editor".into(),
            },
        );
        assert_eq!(
            connection.groups.get("Lawyers").map(String::as_str),
            Some("editor")
        );
        then(
            &mut connection,
            C::UnassignGroup {
                idp_group: "Lawyers".into(),
            },
        );
        assert!(connection.groups.is_empty());
    }

    #[test]
    fn assigning_the_same_mapping_again_appends_nothing() {
        let mut connection = configured();
        then(
            &mut connection,
            C::AssignGroup {
                idp_group: "g".into(),
                role: "r".into(),
            },
        );
        assert_eq!(
            then(
                &mut connection,
                C::AssignGroup {
                    idp_group: "g".into(),
                    role: "r".into()
                }
            ),
            vec![]
        );
    }

    #[test]
    fn requiring_groups_needs_an_assigned_group() {
        let connection = configured();
        let error = connection
            .handle(C::SetGroupRequirement {
                require_group: true,
            })
            .unwrap_err();
        assert_eq!(error.reason, "NO_GROUPS_ASSIGNED");
    }

    #[test]
    fn the_last_required_group_cannot_be_unassigned() {
        let mut connection = configured();
        then(
            &mut connection,
            C::AssignGroup {
                idp_group: "g".into(),
                role: "r".into(),
            },
        );
        then(
            &mut connection,
            C::SetGroupRequirement {
                require_group: true,
            },
        );
        let error = connection
            .handle(C::UnassignGroup {
                idp_group: "g".into(),
            })
            .unwrap_err();
        assert_eq!(error.reason, "LAST_REQUIRED_GROUP");
    }

    #[test]
    fn groups_need_a_configured_connection() {
        let error = Connection::default()
            .handle(C::AssignGroup {
                idp_group: "g".into(),
                role: "r".into(),
            })
            .unwrap_err();
        assert_eq!(error.reason, "CONNECTION_NOT_FOUND");
    }
}
