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
            let work = tokio::spawn(async move {
                for action in &click.actions {
                    match action.action_id.as_str() {
                        card::APPROVE | card::REJECT => {
                            review::clicked(&state, &click, action).await;
                        }
                        other => tracing::debug!(action_id = other, "ignored action"),
                    }
                }
            });
            // Normally the vote is recorded before Slack gets its answer; if Slack or the
            // database is slow the answer goes first and the work finishes on its own.
            if tokio::time::timeout(ACK_WITHIN, work).await.is_err() {
                tracing::warn!(
                    "click still being handled after {ACK_WITHIN:?}; acknowledged first"
                );
            }
            Ok(StatusCode::OK.into_response())
        }
        Interaction::ViewSubmission(submission) => {
            let work = tokio::spawn(async move { review::submitted(&state, &submission).await });
            match tokio::time::timeout(ACK_WITHIN, work).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(panicked)) => Err(ApiError::Internal(panicked.to_string())),
                // Too slow to answer in the form itself: close it; the outcome arrives as a
                // message instead.
                Err(_) => Ok(StatusCode::OK.into_response()),
            }
        }
        Interaction::Other => Ok(StatusCode::OK.into_response()),
    }
}

/// Slack wants every interaction acknowledged within 3 seconds; this leaves room for the trip.
const ACK_WITHIN: std::time::Duration = std::time::Duration::from_millis(2500);
