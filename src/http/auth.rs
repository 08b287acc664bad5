//! The bearer-token extractor for the agent API.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::problem::ApiError;
use crate::manifest::Agent;
use crate::registry::Registry;

/// The agent that sent the request, authenticated by its bearer token, with the registry
/// snapshot it was found in (so one request never mixes two reloads).
pub struct AuthenticatedAgent {
    pub agent: Arc<Agent>,
    pub registry: Arc<Registry>,
}

impl FromRequestParts<AppState> for AuthenticatedAgent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(bearer)
            .ok_or(ApiError::Unauthorized)?;
        let registry = state.registry.current();
        let agent = registry
            .agents
            .authenticate(token)
            .ok_or(ApiError::Unauthorized)?;
        Ok(AuthenticatedAgent { agent, registry })
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(value: &axum::http::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// A request carrying the configured admin token (compared in constant time). Without an
/// admin token configured the admin API is off.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let expected = state.admin_token.as_ref().ok_or(ApiError::AdminDisabled)?;
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(bearer)
            .ok_or(ApiError::AdminUnauthorized)?;
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.expose().as_bytes()).into();
        if matches {
            Ok(Admin)
        } else {
            Err(ApiError::AdminUnauthorized)
        }
    }
}
