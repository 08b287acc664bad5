//! Everything that speaks Slack: the Web API client, the approval card, and what Slack delivers
//! — interactions and slash commands — whether it arrives on the signed HTTP endpoints
//! (`/slack/interactions`, `/slack/commands`) or over a Socket Mode connection ([`socket`]):
//! both transports hand the same parsed payload to the same handler and send back the same
//! [`Ack`]. The only module that imports slack-morphism; the engine knows nothing of Slack.

mod autonomy;
pub mod budget;
pub mod card;
mod client;
mod commands;
mod controls;
mod diff;
mod directory;
pub mod doctor;
pub mod escape;
mod interactions;
pub mod messages;
pub mod payload;
mod rejection;
pub mod report;
mod response_url;
mod review;
pub mod rich;
pub mod signature;
pub mod socket;
pub mod state;
pub mod step_up;
pub mod tiers;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub use budget::SlackBudget;
pub use client::{
    BotIdentity, BudgetBucket, ChannelInfo, OutgoingMessage, PostPermit, SlackApi, SlackError,
    UserInfo,
};
pub use controls::control_notice;
pub use directory::Directory;
pub use rejection::SlackRejection;
pub use response_url::Responder;
pub use state::SlackState;

use crate::config::Secret;

/// The workspace countersign is connected to: Slack itself, or the built-in sandbox.
#[derive(Clone, Debug)]
pub struct SlackContext {
    pub api: SlackApi,
    /// Checks requests on `/slack/*`. `None` (Socket Mode without a signing secret): those
    /// routes are not served, as nothing arrives on them.
    pub signing_secret: Option<Secret>,
    pub directory: Directory,
    /// Replies to the person who clicked, on the click's `response_url`.
    pub responder: Responder,
    pub step_up: step_up::StepUpKeys,
    /// Who may pause and resume agents from Slack (user and user group ids).
    pub admins: Vec<String>,
}

impl SlackContext {
    /// `api_url` is where `api` calls (Slack's, or the sandbox's); `secret_key` seals TOTP
    /// secrets (without it TOTP step-up is off) and signs step-up forms.
    pub fn new(
        api: SlackApi,
        api_url: &url::Url,
        signing_secret: Option<Secret>,
        secret_key: Option<&Secret>,
    ) -> Self {
        Self {
            directory: Directory::new(api.clone()),
            responder: Responder::new(api_url),
            api,
            signing_secret,
            step_up: step_up::StepUpKeys::new(secret_key),
            admins: Vec::new(),
        }
    }

    /// Spends from `budget` (the app's clock, Redis when configured). Call before the
    /// directory is given its shared cache: the directory is rebuilt on the budgeted client.
    pub fn with_budget(mut self, budget: SlackBudget) -> Self {
        self.api = self.api.with_budget(budget);
        self.directory = Directory::new(self.api.clone());
        self
    }
}

/// countersign's answer to something Slack delivered, the same on either transport: a bare
/// acknowledgement, or one with a body (a slash command's reply, a modal's `response_action`).
/// Over HTTP it is the response to Slack's request; over Socket Mode, the `payload` of the
/// envelope's acknowledgement.
#[derive(Debug, Default, PartialEq)]
pub struct Ack(pub Option<serde_json::Value>);

impl Ack {
    pub fn with(body: serde_json::Value) -> Self {
        Self(Some(body))
    }
}

impl IntoResponse for Ack {
    fn into_response(self) -> Response {
        match self.0 {
            Some(body) => axum::Json(body).into_response(),
            None => StatusCode::OK.into_response(),
        }
    }
}

/// `/slack/*`, the HTTP transport.
/// Generic over the app's state: any state Slack's part can be taken from.
pub fn routes<S>() -> Router<S>
where
    SlackState: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/slack/interactions", post(interactions::handle))
        .route("/slack/commands", post(commands::handle))
}

/// Checks Slack's signature on the raw body; nothing is parsed before this passes.
fn verified(state: &SlackState, headers: &HeaderMap, body: &Bytes) -> Result<(), SlackRejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // The routes are only served with a secret; without one nothing can be verified.
    let Some(secret) = &state.slack.signing_secret else {
        return Err(SlackRejection::Signature(
            signature::SignatureError::Missing,
        ));
    };
    signature::verify(
        secret,
        header(signature::SIGNATURE_HEADER),
        header(signature::TIMESTAMP_HEADER),
        body,
        state.engine.clock().now(),
    )
    .map_err(|error| {
        tracing::warn!(%error, "Slack request refused");
        SlackRejection::Signature(error)
    })
}

/// Placeholder host of `manifests/slack-app.yaml`.
const MANIFEST_HOST: &str = "https://countersign.example.com";

/// How Slack is to reach countersign, for the app manifest.
#[derive(Debug, Clone)]
pub enum Reach {
    /// Request URLs on this public base URL (https).
    Http(url::Url),
    /// Socket Mode: no request URLs; countersign connects out.
    SocketMode,
}

/// The Slack app manifest (`manifests/slack-app.yaml`) for `reach`: the placeholder host
/// replaced by the public URL (Slack only calls HTTPS URLs, so anything else is refused), or, for
/// Socket Mode, the request URLs left out and `socket_mode_enabled` turned on.
pub fn app_manifest(manifests: &std::path::Path, reach: &Reach) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = manifests.join("slack-app.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    match reach {
        Reach::Http(public_url) => {
            if public_url.scheme() != "https" {
                anyhow::bail!("--public-url: Slack only calls https:// URLs (got {public_url})");
            }
            Ok(text.replace(MANIFEST_HOST, public_url.as_str().trim_end_matches('/')))
        }
        Reach::SocketMode => {
            let mut out = String::with_capacity(text.len());
            let mut switched = false;
            for line in text.lines() {
                let setting = line.trim_start();
                // A request URL (`url:`, `request_url:`) is what Socket Mode does without.
                if line.contains(MANIFEST_HOST) && !setting.starts_with('#') {
                    continue;
                }
                if setting == "socket_mode_enabled: false" {
                    out.push_str(&line.replace("false", "true"));
                    switched = true;
                } else {
                    out.push_str(line);
                }
                out.push('\n');
            }
            if !switched {
                anyhow::bail!(
                    "{}: no `socket_mode_enabled: false` setting to turn on",
                    path.display()
                );
            }
            Ok(out)
        }
    }
}
