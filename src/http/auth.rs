//! The bearer-token extractor for the agent API.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::problem::ApiError;
use crate::manifest::Agent;

/// The agent that sent the request, authenticated by its bearer token.
pub struct AuthenticatedAgent(pub Arc<Agent>);

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
        let agent = state
            .registry
            .current()
            .agents
            .authenticate(token)
            .ok_or(ApiError::Unauthorized)?;
        Ok(AuthenticatedAgent(agent))
    }
}
