//! The HTTP API the sign-in page calls: `POST /v1/discover`, `GET /healthz`,
//! `GET /readyz`, `GET /v1/status`.
//!
//! Handlers only translate: the lookup is [`Shared::lookup`], the redirects
//! come from [`crate::signin`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::edge::Shared;
use crate::route::{SsoPolicy, Target};
use crate::signin;

/// Largest discover request body.
pub const DISCOVER_BODY_LIMIT: usize = 4 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1/discover",
            post(discover).layer(DefaultBodyLimit::max(DISCOVER_BODY_LIMIT)),
        )
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// An error body: `{"error": "CODE", "message": "..."}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code,
            message: message.into(),
        }),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct DiscoverRequest {
    email: String,
}

/// The discover answer for a routed domain.
#[derive(Debug, Serialize)]
struct SsoAnswer {
    method: &'static str,
    domain: String,
    organization_id: String,
    organization_external_id: String,
    connection_id: String,
    protocol: &'static str,
    sso_policy: &'static str,
    password_allowed: bool,
    redirect_url: String,
    login_hint: String,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc: Option<OidcValues>,
}

/// What the frontend keeps server-side for the OIDC callback (see the crate docs).
#[derive(Debug, Serialize)]
struct OidcValues {
    state: String,
    nonce: String,
    code_verifier: String,
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

async fn discover(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be application/json",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body is larger than {DISCOVER_BODY_LIMIT} bytes"),
            )
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "EMAIL_INVALID",
                rejection.body_text(),
            )
        }
    };
    let request: DiscoverRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "EMAIL_INVALID",
                format!("the body must be {{\"email\": \"...\"}}: {e}"),
            )
        }
    };
    if !request.email.contains('@') {
        return error(
            StatusCode::BAD_REQUEST,
            "EMAIL_INVALID",
            "the email address has no `@`",
        );
    }
    let lookup = match shared.lookup(&request.email) {
        Ok(lookup) => lookup,
        Err(e) => return error(StatusCode::BAD_REQUEST, "EMAIL_INVALID", e.to_string()),
    };
    if !lookup.ready {
        // Without a table "no route" means "unknown": answering "password"
        // could let users of an enforced-SSO domain use passwords.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "the edge has no routing table yet",
        );
    }
    let Some(route) = &lookup.route else {
        return Json(serde_json::json!({ "method": "password" })).into_response();
    };
    let email = request.email.trim().to_owned();
    let route = route.view();
    let mut answer = SsoAnswer {
        method: "sso",
        domain: lookup.domain().to_owned(),
        organization_id: route.organization_id.to_owned(),
        organization_external_id: route.organization_external_id.to_owned(),
        connection_id: route.connection_id.to_owned(),
        protocol: route.protocol_name(),
        sso_policy: route.sso_policy.as_str(),
        password_allowed: route.sso_policy == SsoPolicy::Optional,
        redirect_url: String::new(),
        login_hint: email.clone(),
        revision: lookup.revision,
        request_id: None,
        relay_state: None,
        oidc: None,
    };
    let redirected = match &route.target {
        Target::Saml(saml) => signin::saml_redirect(saml, Utc::now()).map(|redirect| {
            answer.redirect_url = redirect.redirect_url;
            answer.request_id = Some(redirect.request_id);
            answer.relay_state = Some(redirect.relay_state);
        }),
        Target::Oidc(oidc) => signin::oidc_redirect(oidc, &email).map(|redirect| {
            answer.redirect_url = redirect.redirect_url;
            answer.oidc = Some(OidcValues {
                state: redirect.state,
                nonce: redirect.nonce,
                code_verifier: redirect.code_verifier,
            });
        }),
    };
    if let Err(problem) = redirected {
        // Every route's URL was checked when the route was accepted.
        tracing::error!(%problem, connection_id = route.connection_id, "cannot build the sign-in redirect");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the sign-in redirect could not be built",
        );
    }
    let mut response = Json(answer).into_response();
    // The answer carries one-time secrets (PKCE verifier): never cache it.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("valid header"),
    );
    response
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "alive" })).into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let table = shared.table.load();
    if table.is_complete() {
        Json(serde_json::json!({ "status": "ready", "revision": table.revision() })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "no routing table yet" })),
        )
            .into_response()
    }
}
