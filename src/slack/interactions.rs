//! `POST /slack/interactions`: button clicks and modal submissions. The signature is checked on
//! the raw bytes first; then the form's `payload` is parsed and dispatched. Slack wants an answer
//! within 3 seconds, so only what must be inline (opening a modal) happens before the ack;
//! card updates go through the outbox.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::payload::Interaction;
use super::{card, review, verified};
use crate::http::AppState;
use crate::http::problem::ApiError;

pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    verified(&state, &headers, &body)?;
    let payload = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| ApiError::SlackPayload("no `payload` field".into()))?;
    let interaction: Interaction = serde_json::from_str(&payload)
        .map_err(|e| ApiError::SlackPayload(format!("payload: {e}")))?;
    match interaction {
        Interaction::BlockActions(click) => {
            for action in &click.actions {
                match action.action_id.as_str() {
                    card::APPROVE | card::REJECT => review::clicked(&state, &click, action).await,
                    other => tracing::debug!(action_id = other, "ignored action"),
                }
            }
            Ok(StatusCode::OK.into_response())
        }
        Interaction::ViewSubmission(submission) => Ok(review::submitted(&state, &submission).await),
        Interaction::Other => Ok(StatusCode::OK.into_response()),
    }
}
