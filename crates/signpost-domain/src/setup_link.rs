//! The SetupLink aggregate: a bearer capability for one organization and one
//! intent. The token is generated and hashed by the caller; only its SHA-256
//! reaches the log.

use chrono::{DateTime, Duration, Utc};
use signpost_names::EmailAddress;

use crate::error::{Decision, DomainError};
use crate::event::{from_timestamp, schema, timestamp, Event};

/// Lifetime when the issuer gives none.
pub const DEFAULT_LIFETIME: Duration = Duration::hours(72);
/// The longest lifetime a link may have.
pub const MAX_LIFETIME: Duration = Duration::days(30);
/// The shortest lifetime a link may have.
pub const MIN_LIFETIME: Duration = Duration::minutes(5);

/// Where a link is in its life (expiry aside, which depends on the clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkState {
    /// Not issued yet.
    #[default]
    Unissued,
    /// Usable until it expires.
    Open,
    /// Revoked by an admin or superseded.
    Revoked,
    /// The connection it set up was activated.
    Spent,
    /// Its expiry passed while it was open (recorded by the sweeper).
    Expired,
}

impl LinkState {
    /// Whether a link in this state is closed (revoked, spent or expired): no command
    /// changes it any more, and every command on it is decided by this state alone.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            LinkState::Revoked | LinkState::Spent | LinkState::Expired
        )
    }
}

/// SetupLink state: a fold of its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupLink {
    /// The link's id.
    pub id: crate::Id,
    /// Its organization.
    pub organization_id: crate::Id,
    /// What it lets its holder do.
    pub intent: schema::SetupIntent,
    /// The connection it configures.
    pub connection_id: crate::Id,
    /// SHA-256 of the token; empty once the link is closed (revoked, spent or
    /// expired): it authorizes nothing then, and a control plane holds every link ever
    /// issued. A box, not a `Vec`: the read model's boxed link fits 128 bytes.
    pub token_sha256: Box<[u8]>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The IT admin it was sent to.
    pub recipient_email: String,
    /// Lifecycle state.
    pub state: LinkState,
    /// Number of form submissions so far.
    pub submissions: u32,
    /// Stream version.
    pub version: u64,
}

/// Commands on a setup link.
#[derive(Debug, Clone)]
pub enum SetupLinkCommand {
    /// Issue the link.
    Issue {
        id: String,
        organization_id: String,
        intent: schema::SetupIntent,
        connection_id: String,
        token_sha256: [u8; 32],
        recipient_email: String,
        /// `None` for the default lifetime.
        lifetime: Option<Duration>,
        now: DateTime<Utc>,
    },
    /// Revoke it, by an admin or because a newer link supersedes it.
    Revoke { superseded_by: Option<String> },
    /// Record a form submission.
    Submit { now: DateTime<Utc> },
    /// Mark it spent: the connection it set up was activated.
    Spend,
    /// Record that an open link's expiry has passed.
    Expire { now: DateTime<Utc> },
}

/// The same refusal for unknown, expired, revoked and spent links: the answer
/// must not tell a token guesser which of these it hit.
pub fn unusable_link() -> DomainError {
    DomainError {
        kind: crate::error::ErrorKind::NotFound,
        reason: "SETUP_LINK_INVALID",
        field: Some("token"),
        message: "this setup link is not valid; ask for a new one".into(),
    }
}

impl SetupLink {
    /// Whether the link can be used at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.state == LinkState::Open && now < self.expires_at
    }

    /// Whether the link is open (not revoked or spent), expired or not.
    pub fn is_open(&self) -> bool {
        self.state == LinkState::Open
    }

    /// Decides a command.
    pub fn handle(&self, command: SetupLinkCommand) -> Decision {
        match command {
            SetupLinkCommand::Issue {
                id,
                organization_id,
                intent,
                connection_id,
                token_sha256,
                recipient_email,
                lifetime,
                now,
            } => {
                if self.state != LinkState::Unissued {
                    return Err(DomainError::already_exists(
                        "SETUP_LINK_EXISTS",
                        "setup_link_id",
                        "the setup link already exists",
                    ));
                }
                if intent == schema::SetupIntent::Unspecified {
                    return Err(DomainError::invalid(
                        "FIELD_REQUIRED",
                        "intent",
                        "`intent` must be NEW_CONNECTION, UPDATE_CONNECTION or STAGE_SWITCH",
                    ));
                }
                let recipient = EmailAddress::parse(&recipient_email).map_err(|e| {
                    DomainError::invalid(e.reason(), "recipient_email", e.to_string())
                })?;
                let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
                if lifetime > MAX_LIFETIME || lifetime < MIN_LIFETIME {
                    return Err(DomainError::invalid(
                        "LIFETIME_OUT_OF_RANGE",
                        "lifetime_seconds",
                        "a setup link lives between 5 minutes and 30 days",
                    ));
                }
                Ok(vec![Event::SetupLinkIssued(schema::SetupLinkIssued {
                    setup_link_id: id,
                    organization_id,
                    intent: intent as i32,
                    connection_id,
                    token_sha256: token_sha256.to_vec(),
                    expires_at: Some(timestamp(now + lifetime)),
                    recipient_email: recipient.to_string(),
                })])
            }
            SetupLinkCommand::Revoke { superseded_by } => {
                if self.state == LinkState::Unissued {
                    return Err(DomainError::not_found(
                        "SETUP_LINK_NOT_FOUND",
                        "setup_link_id",
                        "no such setup link",
                    ));
                }
                if self.state != LinkState::Open {
                    return Err(DomainError::precondition(
                        "SETUP_LINK_NOT_OPEN",
                        "the setup link is already revoked or spent",
                    ));
                }
                let reason = if superseded_by.is_some() {
                    schema::RevocationReason::Superseded
                } else {
                    schema::RevocationReason::Revoked
                };
                Ok(vec![Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                    reason: reason as i32,
                    superseded_by: superseded_by.unwrap_or_default(),
                })])
            }
            SetupLinkCommand::Submit { now } => {
                if !self.is_usable(now) {
                    return Err(unusable_link());
                }
                Ok(vec![Event::SetupFormSubmitted(
                    schema::SetupFormSubmitted {
                        setup_link_id: self.id.to_string(),
                        connection_id: self.connection_id.to_string(),
                        submission: self.submissions + 1,
                    },
                )])
            }
            SetupLinkCommand::Expire { now } => {
                if self.state != LinkState::Open || now < self.expires_at {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SetupLinkExpired(schema::SetupLinkExpired {
                    expired_at: Some(timestamp(self.expires_at)),
                })])
            }
            SetupLinkCommand::Spend => {
                if self.state != LinkState::Open {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SetupLinkSpent(schema::SetupLinkSpent {
                    connection_id: self.connection_id.to_string(),
                })])
            }
        }
    }

    /// Whether `event` can change a link's token hash (issue it, or close the link).
    pub fn changes_token(event: &Event) -> bool {
        matches!(
            event,
            Event::SetupLinkIssued(_)
                | Event::SetupLinkRevoked(_)
                | Event::SetupLinkSpent(_)
                | Event::SetupLinkExpired(_)
        )
    }

    fn close(&mut self, state: LinkState) {
        self.state = state;
        self.token_sha256 = Box::default();
    }

    /// Applies one of this aggregate's events.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::SetupLinkIssued(e) => {
                self.id = e.setup_link_id.as_str().into();
                self.organization_id = e.organization_id.as_str().into();
                self.intent = e.intent();
                self.connection_id = e.connection_id.as_str().into();
                self.token_sha256 = e.token_sha256.as_slice().into();
                self.expires_at = from_timestamp(e.expires_at.as_ref());
                self.recipient_email = e.recipient_email.clone();
                self.state = LinkState::Open;
            }
            Event::SetupFormSubmitted(e) => self.submissions = e.submission,
            Event::SetupLinkRevoked(_) => self.close(LinkState::Revoked),
            Event::SetupLinkSpent(_) => self.close(LinkState::Spent),
            Event::SetupLinkExpired(_) => self.close(LinkState::Expired),
            _ => return,
        }
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SetupLinkCommand as C;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-03T09:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn issue(lifetime: Option<Duration>) -> C {
        C::Issue {
            id: "l1".into(),
            organization_id: "o1".into(),
            intent: schema::SetupIntent::NewConnection,
            connection_id: "c1".into(),
            token_sha256: [7; 32],
            recipient_email: "it@Acme.com".into(),
            lifetime,
            now: now(),
        }
    }

    fn issued() -> SetupLink {
        let mut link = SetupLink::default();
        for event in link.handle(issue(None)).unwrap() {
            link.apply(&event);
        }
        link
    }

    #[test]
    fn a_link_lives_72_hours_by_default() {
        let link = issued();
        assert_eq!(link.expires_at, now() + Duration::hours(72));
        assert_eq!(link.recipient_email, "it@acme.com");
    }

    #[test]
    fn a_lifetime_over_30_days_is_refused() {
        let error = SetupLink::default()
            .handle(issue(Some(Duration::days(31))))
            .unwrap_err();
        assert_eq!(
            (error.reason, error.field),
            ("LIFETIME_OUT_OF_RANGE", Some("lifetime_seconds"))
        );
    }

    #[test]
    fn each_submission_is_numbered() {
        let mut link = issued();
        for expected in 1..=3 {
            let events = link.handle(C::Submit { now: now() }).unwrap();
            assert!(matches!(&events[0], Event::SetupFormSubmitted(e) if e.submission == expected));
            link.apply(&events[0]);
        }
    }

    #[test]
    fn a_closed_link_forgets_its_token_hash() {
        assert_eq!(&*issued().token_sha256, &[7; 32]);
        let closing = [
            C::Revoke {
                superseded_by: None,
            },
            C::Spend,
            C::Expire {
                now: now() + Duration::hours(73),
            },
        ];
        for command in closing {
            let mut link = issued();
            let events = link.handle(command).unwrap();
            assert!(SetupLink::changes_token(&events[0]));
            link.apply(&events[0]);
            assert!(!link.is_open());
            assert!(link.token_sha256.is_empty(), "{:?}", link.state);
        }
        // Submissions keep it: the link stays usable.
        let mut link = issued();
        link.apply(&link.handle(C::Submit { now: now() }).unwrap()[0]);
        assert_eq!(&*link.token_sha256, &[7; 32]);
    }

    #[test]
    fn expired_revoked_and_spent_links_give_the_same_answer() {
        let expired = issued()
            .handle(C::Submit {
                now: now() + Duration::hours(73),
            })
            .unwrap_err();
        let mut revoked = issued();
        revoked.apply(
            &issued()
                .handle(C::Revoke {
                    superseded_by: None,
                })
                .unwrap()[0],
        );
        let revoked = revoked.handle(C::Submit { now: now() }).unwrap_err();
        let mut spent = issued();
        spent.apply(&issued().handle(C::Spend).unwrap()[0]);
        let spent = spent.handle(C::Submit { now: now() }).unwrap_err();
        let unknown = SetupLink::default()
            .handle(C::Submit { now: now() })
            .unwrap_err();
        assert_eq!(expired, revoked);
        assert_eq!(revoked, spent);
        assert_eq!(spent, unknown);
    }

    #[test]
    fn only_an_open_link_past_its_expiry_is_recorded_as_expired() {
        let link = issued();
        assert_eq!(
            link.handle(C::Expire {
                now: now() + Duration::hours(71)
            })
            .unwrap(),
            vec![]
        );
        let events = link
            .handle(C::Expire {
                now: now() + Duration::hours(73),
            })
            .unwrap();
        assert!(matches!(&events[0], Event::SetupLinkExpired(_)));
        let mut expired = link.clone();
        expired.apply(&events[0]);
        assert_eq!(expired.state, LinkState::Expired);
        assert_eq!(
            expired
                .handle(C::Expire {
                    now: now() + Duration::hours(80)
                })
                .unwrap(),
            vec![]
        );
        assert_eq!(
            expired.handle(C::Submit { now: now() }).unwrap_err(),
            unusable_link()
        );
    }

    #[test]
    fn superseding_records_the_newer_link() {
        let events = issued()
            .handle(C::Revoke {
                superseded_by: Some("l2".into()),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                reason: schema::RevocationReason::Superseded as i32,
                superseded_by: "l2".into(),
            })]
        );
    }

    #[test]
    fn revoking_twice_is_refused() {
        let mut link = issued();
        link.apply(
            &link
                .handle(C::Revoke {
                    superseded_by: None,
                })
                .unwrap()[0],
        );
        assert_eq!(
            link.handle(C::Revoke {
                superseded_by: None
            })
            .unwrap_err()
            .reason,
            "SETUP_LINK_NOT_OPEN"
        );
    }
}
