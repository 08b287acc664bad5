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
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let registry = state.registry.current();
        let agent = registry
            .agents
            .authenticate(token)
            .ok_or(ApiError::Unauthorized)?;
        Ok(AuthenticatedAgent { agent, registry })
    }
}
