//! What `/slack/*` answers when a request is not Slack's or not understood: RFC 9457
//! `application/problem+json`, with the same `type` URIs as the agent API's problems.

use axum::response::{IntoResponse, Response};
use http_api_problem::{HttpApiProblem, StatusCode};

use super::signature::SignatureError;

/// A request on `/slack/*` refused before (or while) it was handled.
#[derive(Debug, thiserror::Error)]
pub enum SlackRejection {
    #[error("Slack request refused: {0}")]
    Signature(SignatureError),
    #[error("malformed Slack payload: {0}")]
    Payload(String),
    /// A handler failed (logged; the cause is not returned).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SlackRejection {
    fn problem(&self) -> HttpApiProblem {
        let base = |status: StatusCode, slug: &str, title: &str| {
            HttpApiProblem::new(status)
                .type_url(format!("urn:countersign:problem:{slug}"))
                .title(title)
        };
        match self {
            Self::Signature(error) => base(StatusCode::UNAUTHORIZED, "bad-signature", "Invalid Slack request signature")
                .detail(format!("{error}. Slack requests are signed with the app's signing secret (X-Slack-Signature, X-Slack-Request-Timestamp).")),
            Self::Payload(detail) => base(StatusCode::BAD_REQUEST, "invalid-slack-payload", "Malformed Slack payload")
                .detail(detail.clone()),
            Self::Internal(_) => base(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for SlackRejection {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "Slack request failed");
        }
        self.problem().into_response()
    }
}
