//! What a reviewer's click does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::payload::{Action, BlockActions, ViewSubmission};
use crate::http::AppState;

/// Approve or Reject on a card.
pub async fn clicked(state: &AppState, click: &BlockActions, action: &Action) {
    let Some(channel) = click.channel_id() else {
        return;
    };
    let text = format!("Received `{}`.", action.action_id);
    if let Err(error) = state.slack.api.post_ephemeral(channel, &click.user.id, &text).await {
        tracing::warn!(%error, "cannot answer a click");
    }
}

/// A modal was submitted.
pub async fn submitted(_state: &AppState, _submission: &ViewSubmission) -> Response {
    StatusCode::OK.into_response()
}
