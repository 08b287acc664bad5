//! Everything that speaks Slack: the Web API client, the approval card, and the signed
//! endpoints Slack calls (`/slack/interactions`, `/slack/commands`). The only module that
//! imports slack-morphism; the engine knows nothing of Slack.

mod autonomy;
pub mod card;
mod client;
mod commands;
mod controls;
mod diff;
mod directory;
pub mod escape;
mod interactions;
pub mod payload;
pub mod report;
mod review;
pub mod signature;
pub mod step_up;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;

pub use client::{OutgoingMessage, SlackApi, SlackError};
pub use controls::announce as announce_control;
pub use directory::Directory;

use crate::config::Secret;
use crate::http::AppState;
use crate::http::problem::ApiError;

/// The workspace countersign is connected to: Slack itself, or the built-in sandbox.
#[derive(Clone, Debug)]
pub struct SlackContext {
    pub api: SlackApi,
    pub signing_secret: Secret,
    pub directory: Directory,
    pub step_up: step_up::StepUpKeys,
    /// Who may pause and resume agents from Slack (user and user group ids).
    pub admins: Vec<String>,
}

impl SlackContext {
    /// `secret_key` seals TOTP secrets (without it TOTP step-up is off) and signs step-up forms.
    pub fn new(api: SlackApi, signing_secret: Secret, secret_key: Option<&Secret>) -> Self {
        Self {
            directory: Directory::new(api.clone()),
            api,
            signing_secret,
            step_up: step_up::StepUpKeys::new(secret_key),
            admins: Vec::new(),
        }
    }
}

/// `/slack/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/slack/interactions", post(interactions::handle))
        .route("/slack/commands", post(commands::handle))
}

/// Checks Slack's signature on the raw body; nothing is parsed before this passes.
fn verified(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    signature::verify(
        &state.slack.signing_secret,
        header(signature::SIGNATURE_HEADER),
        header(signature::TIMESTAMP_HEADER),
        body,
        state.engine.clock().now(),
    )
    .map_err(|error| {
        tracing::warn!(%error, "Slack request refused");
        ApiError::SlackSignature(error)
    })
}

/// Placeholder host of `manifests/slack-app.yaml`.
const MANIFEST_HOST: &str = "https://countersign.example.com";

/// The Slack app manifest (`manifests/slack-app.yaml`) with `public_url` in place of the
/// placeholder host. Slack only calls HTTPS URLs, so anything else is refused.
pub fn app_manifest(manifests: &std::path::Path, public_url: &url::Url) -> anyhow::Result<String> {
    use anyhow::Context;
    if public_url.scheme() != "https" {
        anyhow::bail!("--public-url: Slack only calls https:// URLs (got {public_url})");
    }
    let path = manifests.join("slack-app.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.replace(MANIFEST_HOST, public_url.as_str().trim_end_matches('/')))
}
