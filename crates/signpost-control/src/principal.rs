//! Who is calling: the authenticated principal, its role, and how it is
//! recorded as an event's actor.

use signpost_schema::log::v1::{Actor, ActorKind, TokenRole};

use crate::error::ControlError;

/// A role an API token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read routes (login edges).
    Edge,
    /// Read audit, verification and point-in-time answers.
    Auditor,
}

impl Role {
    /// The role of a stored token.
    pub fn from_token_role(role: TokenRole) -> Option<Self> {
        match role {
            TokenRole::Admin => Some(Self::Admin),
            TokenRole::Edge => Some(Self::Edge),
            TokenRole::Auditor => Some(Self::Auditor),
            TokenRole::Unspecified => None,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Edge => "edge",
            Self::Auditor => "auditor",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The control plane itself (bootstrap).
    System,
    /// A caller holding an API token.
    ApiToken {
        /// The token's id.
        token_id: String,
        /// The token's name.
        name: String,
        /// Its role.
        role: Role,
        /// For scoped auditor tokens: the one organization it may read.
        organization_scope: Option<String>,
    },
    /// An IT admin holding a setup link.
    SetupLink {
        /// The link's id.
        setup_link_id: String,
        /// The link's organization.
        organization_id: String,
        /// Whom the link was sent to.
        recipient_email: String,
    },
}

impl Principal {
    /// A stable id for idempotency keys and logs (never a secret).
    pub fn id(&self) -> String {
        match self {
            Self::System => "system".to_owned(),
            Self::ApiToken { token_id, .. } => format!("api-token:{token_id}"),
            Self::SetupLink { setup_link_id, .. } => format!("setup-link:{setup_link_id}"),
        }
    }

    /// Refuses unless the principal is an API token with one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ControlError> {
        match self {
            Self::ApiToken { role, .. } if roles.contains(role) => Ok(()),
            Self::System => Ok(()),
            _ => Err(permission_denied(roles)),
        }
    }

    /// The actor recorded on events this principal causes.
    pub fn actor(&self, on_behalf_of: Option<&str>) -> Actor {
        let on_behalf_of = on_behalf_of.unwrap_or_default().to_owned();
        match self {
            Self::System => Actor {
                kind: ActorKind::System as i32,
                id: "system".into(),
                on_behalf_of,
                display_name: "Signpost".into(),
            },
            Self::ApiToken { token_id, name, .. } => Actor {
                kind: ActorKind::ApiToken as i32,
                id: token_id.clone(),
                on_behalf_of,
                display_name: name.clone(),
            },
            Self::SetupLink {
                setup_link_id,
                recipient_email,
                ..
            } => Actor {
                kind: ActorKind::SetupLink as i32,
                id: setup_link_id.clone(),
                // The link's holder acts for its recipient, whatever a header says.
                on_behalf_of: recipient_email.clone(),
                display_name: "setup link".into(),
            },
        }
    }
}

/// The refusal of a caller whose token has none of `roles`.
pub(crate) fn permission_denied(roles: &[Role]) -> ControlError {
    ControlError::PermissionDenied(format!(
        "this call needs a token with the {} role",
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    ))
}
