//! Button clicks and modal submissions. Over HTTP (`POST /slack/interactions`) the signature is
//! checked on the raw bytes first, then the form's `payload` is parsed; over Socket Mode the
//! envelope carries the same payload as JSON. Either way [`dispatch`] handles it. Slack wants an
//! answer within 3 seconds, so only what must be inline (opening a modal) happens before the ack;
//! card updates go through the outbox.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;

use super::SlackRejection;
use super::SlackState;
use super::payload::Interaction;
use super::{Ack, card, review, verified};

pub async fn handle(
    State(state): State<SlackState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Ack, SlackRejection> {
    verified(&state, &headers, &body)?;
    let payload = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| SlackRejection::Payload("no `payload` field".into()))?;
    let interaction: Interaction = serde_json::from_str(&payload)
        .map_err(|e| SlackRejection::Payload(format!("payload: {e}")))?;
    dispatch(state, interaction).await
}

/// One interaction, from either transport; answers within [`ACK_WITHIN`].
pub(super) async fn dispatch(
    state: SlackState,
    interaction: Interaction,
) -> Result<Ack, SlackRejection> {
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
            Ok(Ack::default())
        }
        Interaction::ViewSubmission(submission) => {
            let work = tokio::spawn(async move { review::submitted(&state, &submission).await });
            match tokio::time::timeout(ACK_WITHIN, work).await {
                Ok(Ok(ack)) => Ok(ack),
                Ok(Err(panicked)) => Err(SlackRejection::Internal(panicked.to_string())),
                // Too slow to answer in the form itself: close it; the outcome arrives as a
                // message instead.
                Err(_) => Ok(Ack::default()),
            }
        }
        Interaction::Other => Ok(Ack::default()),
    }
}

/// Slack wants every interaction acknowledged within 3 seconds; this leaves room for the trip.
const ACK_WITHIN: std::time::Duration = std::time::Duration::from_millis(2500);
