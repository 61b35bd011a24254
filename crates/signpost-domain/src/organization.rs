//! The Organization aggregate: a customer firm, its domain claims, its SSO
//! policy and which of its connections is active.
//!
//! Domain uniqueness across organizations is not a rule this aggregate can
//! see; the application layer checks it against its domain registry before
//! calling [`Organization::handle`] (see `signpost-control`).

use signpost_names::DomainName;

use crate::error::{check_text, Decision, DomainError};
use crate::event::{schema, Event};
use crate::vec_map::VecMap;

/// The most domains one organization may claim.
pub const MAX_DOMAINS_PER_ORGANIZATION: usize = 200;

/// Whether a domain claim has been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Claimed; verification outstanding.
    Pending,
    /// Verified by DNS or by an admin.
    Verified,
}

/// One domain claimed by the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainClaim {
    /// Pending or verified.
    pub status: ClaimStatus,
    /// Where the TXT record must be published, when the claim's event named another
    /// record than the domain's standard one ([`verification_record_name`]): every
    /// claim this version makes names the standard one, which is derived rather than
    /// kept (about 48 bytes per domain held in memory).
    other_record_name: Option<Box<str>>,
    /// The TXT value expected there.
    pub verification_value: String,
    /// How it was verified, when it was.
    pub verification_method: schema::VerificationMethod,
}

impl DomainClaim {
    /// A pending claim on `domain` whose TXT record `verification_value` is expected at
    /// `record_name`.
    pub fn pending(domain: &str, record_name: &str, verification_value: String) -> Self {
        let standard = record_name.strip_prefix(RECORD_NAME_PREFIX) == Some(domain);
        DomainClaim {
            status: ClaimStatus::Pending,
            other_record_name: (!standard).then(|| record_name.into()),
            verification_value,
            verification_method: schema::VerificationMethod::Unspecified,
        }
    }

    /// Where the TXT record for this claim on `domain` must be published.
    pub fn verification_record_name(&self, domain: &str) -> String {
        match &self.other_record_name {
            Some(name) => name.to_string(),
            None => format!("{RECORD_NAME_PREFIX}{domain}"),
        }
    }
}

/// What the organization knows of one of its connections when deciding on
/// activation (loaded by the caller from the Connection aggregate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// The connection's id.
    pub connection_id: String,
    /// The organization it belongs to.
    pub organization_id: String,
    /// Whether a configuration was submitted.
    pub configured: bool,
    /// The role it was configured for.
    pub role: schema::ConnectionRole,
}

/// Organization state: a fold of its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organization {
    /// Empty until created.
    pub id: crate::Id,
    /// The firm's name. Boxed texts and list (here and in `previously_active`), not
    /// `String`s and a `Vec`: the read model holds one of these per organization, and
    /// boxed it fits 128 bytes.
    pub display_name: Box<str>,
    /// The platform's own id for the firm.
    pub external_id: Box<str>,
    /// Claimed domains, by normalized name. The names are shared: the read model points
    /// them at its own domain index's keys, and routes are keyed by the same copies.
    pub domains: VecMap<crate::Id, DomainClaim>,
    /// The SSO policy.
    pub sso_policy: schema::SsoPolicy,
    /// The active connection, if any.
    pub active_connection_id: Option<crate::Id>,
    /// Connections that were active once (the ones a switch can go back to).
    pub previously_active: Box<[crate::Id]>,
    /// Stream version (number of events applied).
    pub version: u64,
}

/// Commands on an organization.
#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    /// Create the organization.
    Create {
        id: String,
        display_name: String,
        external_id: String,
    },
    /// Claim a domain; `verification_value` is a fresh random TXT value.
    ClaimDomain {
        domain: DomainName,
        verification_value: String,
    },
    /// Verify a pending claim with the TXT records found in DNS.
    VerifyDomainByDns {
        domain: DomainName,
        txt_records: Vec<String>,
    },
    /// Verify a pending claim on an admin's word; the envelope records who.
    VerifyDomainManually { domain: DomainName, note: String },
    /// Release a claimed domain.
    ReleaseDomain { domain: DomainName },
    /// Set the SSO policy.
    SetSsoPolicy { policy: schema::SsoPolicy },
    /// Make a configured connection active.
    Activate { connection: ConnectionFacts },
    /// Switch the active connection off.
    Deactivate { connection_id: String },
    /// Make `connection` active in place of the active one.
    SwitchProvider { connection: ConnectionFacts },
}

/// What a domain's verification record name starts with (the domain follows).
const RECORD_NAME_PREFIX: &str = "_signpost-challenge.";

/// The DNS name where a domain's verification TXT record lives.
pub fn verification_record_name(domain: &DomainName) -> String {
    format!("{RECORD_NAME_PREFIX}{domain}")
}

impl Organization {
    /// Whether the organization exists.
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// Verified domains, sorted.
    pub fn verified_domains(&self) -> impl Iterator<Item = &crate::Id> {
        self.domains
            .iter()
            .filter(|(_, claim)| claim.status == ClaimStatus::Verified)
            .map(|(domain, _)| domain)
    }

    /// Decides a command: the events to append, or a refusal.
    pub fn handle(&self, command: OrganizationCommand) -> Decision {
        use OrganizationCommand as C;
        if let C::Create {
            id,
            display_name,
            external_id,
        } = command
        {
            if self.exists() {
                return Err(DomainError::already_exists(
                    "ORGANIZATION_EXISTS",
                    "organization_id",
                    "the organization already exists",
                ));
            }
            let display_name = check_text(&display_name, "display_name", 200)?;
            let external_id = check_text(&external_id, "external_id", 200)?;
            return Ok(vec![Event::OrganizationCreated(
                schema::OrganizationCreated {
                    organization_id: id,
                    display_name,
                    external_id,
                },
            )]);
        }
        if !self.exists() {
            return Err(DomainError::not_found(
                "ORGANIZATION_NOT_FOUND",
                "organization_id",
                "no such organization",
            ));
        }
        match command {
            C::Create { .. } => unreachable!("handled above"),
            C::ClaimDomain {
                domain,
                verification_value,
            } => {
                signpost_names::check_claimable(&domain)?;
                if self.domains.contains_key(domain.as_str()) {
                    return Err(DomainError::already_exists(
                        "DOMAIN_ALREADY_CLAIMED",
                        "domain",
                        format!("`{domain}` is already claimed by this organization"),
                    ));
                }
                if self.domains.len() >= MAX_DOMAINS_PER_ORGANIZATION {
                    return Err(DomainError::precondition(
                        "TOO_MANY_DOMAINS",
                        format!("an organization may claim at most {MAX_DOMAINS_PER_ORGANIZATION} domains"),
                    ));
                }
                Ok(vec![Event::DomainClaimed(schema::DomainClaimed {
                    verification_record_name: verification_record_name(&domain),
                    domain: domain.as_str().to_owned(),
                    verification_value,
                })])
            }
            C::VerifyDomainByDns {
                domain,
                txt_records,
            } => {
                let claim = self.pending_claim(&domain)?;
                if !txt_records
                    .iter()
                    .any(|record| record.trim() == claim.verification_value)
                {
                    return Err(DomainError::precondition(
                        "DOMAIN_VERIFICATION_FAILED",
                        format!(
                            "no TXT record `{}` with the expected value was found at `{}`",
                            claim.verification_value,
                            claim.verification_record_name(domain.as_str())
                        ),
                    ));
                }
                Ok(vec![Event::DomainVerified(schema::DomainVerified {
                    domain: domain.as_str().to_owned(),
                    method: schema::VerificationMethod::DnsTxt as i32,
                    note: String::new(),
                })])
            }
            C::VerifyDomainManually { domain, note } => {
                self.pending_claim(&domain)?;
                let note = check_text(&note, "note", 1000)?;
                Ok(vec![Event::DomainVerified(schema::DomainVerified {
                    domain: domain.as_str().to_owned(),
                    method: schema::VerificationMethod::Manual as i32,
                    note,
                })])
            }
            C::ReleaseDomain { domain } => {
                self.claim(&domain)?;
                Ok(vec![Event::DomainReleased(schema::DomainReleased {
                    domain: domain.as_str().to_owned(),
                })])
            }
            C::SetSsoPolicy { policy } => {
                if policy == schema::SsoPolicy::Unspecified {
                    return Err(DomainError::invalid(
                        "FIELD_REQUIRED",
                        "policy",
                        "`policy` must be OPTIONAL or ENFORCED",
                    ));
                }
                if policy == self.sso_policy {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SsoPolicyChanged(schema::SsoPolicyChanged {
                    previous: self.sso_policy as i32,
                    policy: policy as i32,
                })])
            }
            C::Activate { connection } => {
                self.check_can_route_to(&connection)?;
                match &self.active_connection_id {
                    Some(active) if **active == *connection.connection_id => Ok(vec![]),
                    Some(active) => Err(DomainError::precondition(
                        "ORGANIZATION_HAS_ACTIVE_CONNECTION",
                        format!(
                            "connection `{active}` is active; use SwitchProvider to replace it"
                        ),
                    )),
                    None => Ok(vec![Event::ConnectionActivated(
                        schema::ConnectionActivated {
                            connection_id: connection.connection_id,
                        },
                    )]),
                }
            }
            C::Deactivate { connection_id } => {
                if self.active_connection_id.as_deref() != Some(connection_id.as_str()) {
                    return Err(DomainError::precondition(
                        "CONNECTION_NOT_ACTIVE",
                        format!("connection `{connection_id}` is not active"),
                    ));
                }
                Ok(vec![Event::ConnectionDeactivated(
                    schema::ConnectionDeactivated { connection_id },
                )])
            }
            C::SwitchProvider { connection } => {
                let Some(active) = &self.active_connection_id else {
                    return Err(DomainError::precondition(
                        "NO_ACTIVE_CONNECTION",
                        "the organization has no active connection to switch from; activate one instead",
                    ));
                };
                if **active == *connection.connection_id {
                    return Err(DomainError::precondition(
                        "CONNECTION_ALREADY_ACTIVE",
                        format!("connection `{active}` is already active"),
                    ));
                }
                self.check_can_route_to(&connection)?;
                let standby = connection.role == schema::ConnectionRole::Standby;
                if !standby
                    && !self
                        .previously_active
                        .iter()
                        .any(|id| **id == *connection.connection_id)
                {
                    return Err(DomainError::precondition(
                        "CONNECTION_NOT_STANDBY",
                        "only a standby connection (configured through a switch link) or a previously active one can take over",
                    ));
                }
                Ok(vec![Event::ProviderSwitched(schema::ProviderSwitched {
                    previous_connection_id: active.to_string(),
                    connection_id: connection.connection_id,
                })])
            }
        }
    }

    /// Rules shared by activation and switching: the connection is this
    /// organization's, it is configured, and there is a verified domain to route.
    fn check_can_route_to(&self, connection: &ConnectionFacts) -> Result<(), DomainError> {
        if *connection.organization_id != *self.id {
            return Err(DomainError::not_found(
                "CONNECTION_NOT_FOUND",
                "connection_id",
                "no such connection in this organization",
            ));
        }
        if !connection.configured {
            return Err(DomainError::precondition(
                "CONNECTION_NOT_CONFIGURED",
                "the connection has no configuration yet; submit the setup form first",
            ));
        }
        if self.verified_domains().next().is_none() {
            return Err(DomainError::precondition(
                "NO_VERIFIED_DOMAIN",
                "the organization needs at least one verified domain",
            ));
        }
        Ok(())
    }

    fn claim(&self, domain: &DomainName) -> Result<&DomainClaim, DomainError> {
        self.domains.get(domain.as_str()).ok_or_else(|| {
            DomainError::not_found(
                "DOMAIN_NOT_CLAIMED",
                "domain",
                format!("`{domain}` is not claimed by this organization"),
            )
        })
    }

    fn pending_claim(&self, domain: &DomainName) -> Result<&DomainClaim, DomainError> {
        let claim = self.claim(domain)?;
        if claim.status == ClaimStatus::Verified {
            return Err(DomainError::precondition(
                "DOMAIN_ALREADY_VERIFIED",
                format!("`{domain}` is already verified"),
            ));
        }
        Ok(claim)
    }

    /// Applies one of this aggregate's events. Never fails; ignores others.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::OrganizationCreated(e) => {
                self.id = e.organization_id.as_str().into();
                self.display_name = e.display_name.as_str().into();
                self.external_id = e.external_id.as_str().into();
                self.sso_policy = schema::SsoPolicy::Optional;
            }
            Event::DomainClaimed(e) => {
                self.domains.insert(
                    e.domain.as_str().into(),
                    DomainClaim::pending(
                        &e.domain,
                        &e.verification_record_name,
                        e.verification_value.clone(),
                    ),
                );
            }
            Event::DomainVerified(e) => {
                if let Some(claim) = self.domains.get_mut(e.domain.as_str()) {
                    claim.status = ClaimStatus::Verified;
                    claim.verification_method = e.method();
                }
            }
            Event::DomainReleased(e) => {
                self.domains.remove(e.domain.as_str());
            }
            Event::SsoPolicyChanged(e) => self.sso_policy = e.policy(),
            Event::ConnectionActivated(e) => self.make_active(&e.connection_id),
            Event::ConnectionDeactivated(_) => self.active_connection_id = None,
            Event::ProviderSwitched(e) => self.make_active(&e.connection_id),
            _ => return,
        }
        self.version += 1;
    }

    fn make_active(&mut self, connection_id: &str) {
        let id: crate::Id = connection_id.into();
        self.active_connection_id = Some(id.clone());
        if !self
            .previously_active
            .iter()
            .any(|known| **known == *connection_id)
        {
            // One slot at a time: most organizations only ever activate one or two
            // connections.
            let mut known = std::mem::take(&mut self.previously_active).into_vec();
            known.push(id);
            self.previously_active = known.into_boxed_slice();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrganizationCommand as C;

    fn given(events: &[Event]) -> Organization {
        let mut org = Organization::default();
        for event in events {
            org.apply(event);
        }
        org
    }

    fn created() -> Event {
        Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: "org-1".into(),
            display_name: "Acme".into(),
            external_id: "ext-1".into(),
        })
    }

    fn domain(name: &str) -> DomainName {
        DomainName::parse(name).unwrap()
    }

    fn claimed(name: &str) -> Event {
        Event::DomainClaimed(schema::DomainClaimed {
            domain: name.into(),
            verification_record_name: format!("_signpost-challenge.{name}"),
            verification_value: "signpost-verification=abc".into(),
        })
    }

    fn verified(name: &str) -> Event {
        Event::DomainVerified(schema::DomainVerified {
            domain: name.into(),
            method: schema::VerificationMethod::Manual as i32,
            note: "called them".into(),
        })
    }

    fn facts(id: &str, role: schema::ConnectionRole) -> ConnectionFacts {
        ConnectionFacts {
            connection_id: id.into(),
            organization_id: "org-1".into(),
            configured: true,
            role,
        }
    }

    fn reason(decision: Decision) -> &'static str {
        decision.expect_err("command should be refused").reason
    }

    #[test]
    fn creating_twice_is_refused() {
        let org = given(&[created()]);
        let decision = org.handle(C::Create {
            id: "org-1".into(),
            display_name: "Acme".into(),
            external_id: "x".into(),
        });
        assert_eq!(reason(decision), "ORGANIZATION_EXISTS");
    }

    #[test]
    fn blank_display_name_is_refused_with_its_field() {
        let error = Organization::default()
            .handle(C::Create {
                id: "o".into(),
                display_name: "  ".into(),
                external_id: "e".into(),
            })
            .unwrap_err();
        assert_eq!(
            (error.reason, error.field),
            ("FIELD_REQUIRED", Some("display_name"))
        );
    }

    #[test]
    fn commands_on_a_missing_organization_are_not_found() {
        let decision = Organization::default().handle(C::SetSsoPolicy {
            policy: schema::SsoPolicy::Enforced,
        });
        assert_eq!(reason(decision), "ORGANIZATION_NOT_FOUND");
    }

    #[test]
    fn a_claim_reports_the_record_name_its_event_named() {
        let claimed = |record: &str| {
            given(&[
                created(),
                Event::DomainClaimed(schema::DomainClaimed {
                    domain: "acme.com".into(),
                    verification_record_name: record.into(),
                    verification_value: "v".into(),
                }),
            ])
        };
        let standard = claimed("_signpost-challenge.acme.com");
        let claim = &standard.domains["acme.com"];
        assert_eq!(
            claim.other_record_name, None,
            "the standard name is derived"
        );
        assert_eq!(
            claim.verification_record_name("acme.com"),
            "_signpost-challenge.acme.com"
        );
        for other in [
            "_signpost-challenge.beta.com",
            "_signpost-challenge",
            "_x.acme.com",
        ] {
            let org = claimed(other);
            assert_eq!(
                org.domains["acme.com"].verification_record_name("acme.com"),
                other
            );
        }
    }

    #[test]
    fn claiming_a_domain_records_a_verification_challenge() {
        let events = given(&[created()])
            .handle(C::ClaimDomain {
                domain: domain("Acme.COM."),
                verification_value: "v".into(),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![Event::DomainClaimed(schema::DomainClaimed {
                domain: "acme.com".into(),
                verification_record_name: "_signpost-challenge.acme.com".into(),
                verification_value: "v".into(),
            })]
        );
    }

    #[test]
    fn consumer_domains_cannot_be_claimed() {
        let decision = given(&[created()]).handle(C::ClaimDomain {
            domain: domain("gmail.com"),
            verification_value: "v".into(),
        });
        assert_eq!(reason(decision), "DOMAIN_IS_CONSUMER_MAIL");
    }

    #[test]
    fn claiming_the_same_domain_twice_is_refused() {
        let decision = given(&[created(), claimed("acme.com")]).handle(C::ClaimDomain {
            domain: domain("acme.com"),
            verification_value: "v".into(),
        });
        assert_eq!(reason(decision), "DOMAIN_ALREADY_CLAIMED");
    }

    #[test]
    fn dns_verification_needs_the_expected_txt_value() {
        let org = given(&[created(), claimed("acme.com")]);
        let wrong = org.handle(C::VerifyDomainByDns {
            domain: domain("acme.com"),
            txt_records: vec!["v=spf1 -all".into()],
        });
        assert_eq!(reason(wrong), "DOMAIN_VERIFICATION_FAILED");
        let right = org
            .handle(C::VerifyDomainByDns {
                domain: domain("acme.com"),
                txt_records: vec!["signpost-verification=abc".into()],
            })
            .unwrap();
        assert!(
            matches!(&right[0], Event::DomainVerified(e) if e.method() == schema::VerificationMethod::DnsTxt)
        );
    }

    #[test]
    fn manual_verification_needs_a_note() {
        let decision = given(&[created(), claimed("acme.com")]).handle(C::VerifyDomainManually {
            domain: domain("acme.com"),
            note: "".into(),
        });
        assert_eq!(reason(decision), "FIELD_REQUIRED");
    }

    #[test]
    fn a_released_domain_can_be_claimed_again() {
        let org = given(&[
            created(),
            claimed("acme.com"),
            Event::DomainReleased(schema::DomainReleased {
                domain: "acme.com".into(),
            }),
        ]);
        assert!(org
            .handle(C::ClaimDomain {
                domain: domain("acme.com"),
                verification_value: "w".into()
            })
            .is_ok());
    }

    #[test]
    fn activation_needs_a_verified_domain() {
        let org = given(&[created(), claimed("acme.com")]);
        let decision = org.handle(C::Activate {
            connection: facts("c1", schema::ConnectionRole::Primary),
        });
        assert_eq!(reason(decision), "NO_VERIFIED_DOMAIN");
    }

    #[test]
    fn activation_needs_a_configured_connection() {
        let org = given(&[created(), claimed("acme.com"), verified("acme.com")]);
        let mut connection = facts("c1", schema::ConnectionRole::Primary);
        connection.configured = false;
        assert_eq!(
            reason(org.handle(C::Activate { connection })),
            "CONNECTION_NOT_CONFIGURED"
        );
    }

    #[test]
    fn activating_a_second_connection_requires_a_switch() {
        let org = given(&[
            created(),
            claimed("acme.com"),
            verified("acme.com"),
            Event::ConnectionActivated(schema::ConnectionActivated {
                connection_id: "c1".into(),
            }),
        ]);
        let decision = org.handle(C::Activate {
            connection: facts("c2", schema::ConnectionRole::Primary),
        });
        assert_eq!(reason(decision), "ORGANIZATION_HAS_ACTIVE_CONNECTION");
    }

    #[test]
    fn a_connection_of_another_organization_cannot_be_activated() {
        let org = given(&[created(), claimed("acme.com"), verified("acme.com")]);
        let mut connection = facts("c1", schema::ConnectionRole::Primary);
        connection.organization_id = "org-2".into();
        assert_eq!(
            reason(org.handle(C::Activate { connection })),
            "CONNECTION_NOT_FOUND"
        );
    }

    #[test]
    fn switching_moves_to_the_standby_and_back() {
        let mut org = given(&[
            created(),
            claimed("acme.com"),
            verified("acme.com"),
            Event::ConnectionActivated(schema::ConnectionActivated {
                connection_id: "c1".into(),
            }),
        ]);
        let events = org
            .handle(C::SwitchProvider {
                connection: facts("c2", schema::ConnectionRole::Standby),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: "c1".into(),
                connection_id: "c2".into(),
            })]
        );
        org.apply(&events[0]);
        assert_eq!(org.active_connection_id.as_deref(), Some("c2"));
        // c1 was active once, so switching back is allowed although it is not standby.
        let back = org
            .handle(C::SwitchProvider {
                connection: facts("c1", schema::ConnectionRole::Primary),
            })
            .unwrap();
        assert!(matches!(&back[0], Event::ProviderSwitched(e) if e.connection_id == "c1"));
    }

    #[test]
    fn switching_to_a_never_active_primary_is_refused() {
        let org = given(&[
            created(),
            claimed("acme.com"),
            verified("acme.com"),
            Event::ConnectionActivated(schema::ConnectionActivated {
                connection_id: "c1".into(),
            }),
        ]);
        let decision = org.handle(C::SwitchProvider {
            connection: facts("c3", schema::ConnectionRole::Primary),
        });
        assert_eq!(reason(decision), "CONNECTION_NOT_STANDBY");
    }

    #[test]
    fn deactivating_a_connection_that_is_not_active_is_refused() {
        let org = given(&[created()]);
        assert_eq!(
            reason(org.handle(C::Deactivate {
                connection_id: "c1".into()
            })),
            "CONNECTION_NOT_ACTIVE"
        );
    }

    #[test]
    fn setting_the_same_policy_appends_nothing() {
        let org = given(&[created()]);
        assert_eq!(
            org.handle(C::SetSsoPolicy {
                policy: schema::SsoPolicy::Optional
            }),
            Ok(vec![])
        );
    }
}
