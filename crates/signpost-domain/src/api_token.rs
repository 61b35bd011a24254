//! The ApiToken aggregate: a bearer credential with one role. The token is
//! generated and hashed by the caller; only its SHA-256 reaches the log.

use crate::error::{check_text, Decision, DomainError};
use crate::event::{schema, Event};

/// ApiToken state: a fold of its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiToken {
    /// Empty until issued.
    pub id: crate::Id,
    /// A name for humans ("login-edge eu-west").
    pub name: String,
    /// What it may do.
    pub role: schema::TokenRole,
    /// SHA-256 of the token.
    pub token_sha256: Vec<u8>,
    /// For auditor tokens: the one organization it may read.
    pub organization_scope: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Stream version.
    pub version: u64,
}

/// Commands on an API token.
#[derive(Debug, Clone)]
pub enum ApiTokenCommand {
    /// Mint the token.
    Issue {
        id: String,
        name: String,
        role: schema::TokenRole,
        token_sha256: [u8; 32],
        organization_scope: String,
    },
    /// Revoke it.
    Revoke,
}

impl ApiToken {
    /// Whether the token exists and is not revoked.
    pub fn is_active(&self) -> bool {
        !self.id.is_empty() && !self.revoked
    }

    /// Decides a command.
    pub fn handle(&self, command: ApiTokenCommand) -> Decision {
        match command {
            ApiTokenCommand::Issue {
                id,
                name,
                role,
                token_sha256,
                organization_scope,
            } => {
                if !self.id.is_empty() {
                    return Err(DomainError::already_exists(
                        "API_TOKEN_EXISTS",
                        "token_id",
                        "the token already exists",
                    ));
                }
                let name = check_text(&name, "name", 200)?;
                if role == schema::TokenRole::Unspecified {
                    return Err(DomainError::invalid(
                        "FIELD_REQUIRED",
                        "role",
                        "`role` must be ADMIN, EDGE or AUDITOR",
                    ));
                }
                if !organization_scope.is_empty() && role != schema::TokenRole::Auditor {
                    return Err(DomainError::invalid(
                        "SCOPE_NOT_ALLOWED",
                        "organization_scope",
                        "only auditor tokens can be scoped to an organization",
                    ));
                }
                Ok(vec![Event::ApiTokenIssued(schema::ApiTokenIssued {
                    token_id: id,
                    name,
                    role: role as i32,
                    token_sha256: token_sha256.to_vec(),
                    organization_scope,
                })])
            }
            ApiTokenCommand::Revoke => {
                if self.id.is_empty() {
                    return Err(DomainError::not_found(
                        "API_TOKEN_NOT_FOUND",
                        "token_id",
                        "no such token",
                    ));
                }
                if self.revoked {
                    return Err(DomainError::precondition(
                        "API_TOKEN_REVOKED",
                        "the token is already revoked",
                    ));
                }
                Ok(vec![Event::ApiTokenRevoked(schema::ApiTokenRevoked {})])
            }
        }
    }

    /// Applies one of this aggregate's events.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ApiTokenIssued(e) => {
                self.id = e.token_id.as_str().into();
                self.name = e.name.clone();
                self.role = e.role();
                self.token_sha256 = e.token_sha256.clone();
                self.organization_scope = e.organization_scope.clone();
            }
            Event::ApiTokenRevoked(_) => self.revoked = true,
            _ => return,
        }
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(role: schema::TokenRole, scope: &str) -> ApiTokenCommand {
        ApiTokenCommand::Issue {
            id: "t1".into(),
            name: "edge eu".into(),
            role,
            token_sha256: [1; 32],
            organization_scope: scope.into(),
        }
    }

    #[test]
    fn only_auditor_tokens_can_be_scoped() {
        let error = ApiToken::default()
            .handle(issue(schema::TokenRole::Edge, "o1"))
            .unwrap_err();
        assert_eq!(
            (error.reason, error.field),
            ("SCOPE_NOT_ALLOWED", Some("organization_scope"))
        );
        assert!(ApiToken::default()
            .handle(issue(schema::TokenRole::Auditor, "o1"))
            .is_ok());
    }

    #[test]
    fn a_revoked_token_is_inactive_and_cannot_be_revoked_again() {
        let mut token = ApiToken::default();
        token.apply(&token.handle(issue(schema::TokenRole::Admin, "")).unwrap()[0]);
        assert!(token.is_active());
        token.apply(&token.handle(ApiTokenCommand::Revoke).unwrap()[0]);
        assert!(!token.is_active());
        assert_eq!(
            token.handle(ApiTokenCommand::Revoke).unwrap_err().reason,
            "API_TOKEN_REVOKED"
        );
    }
}
