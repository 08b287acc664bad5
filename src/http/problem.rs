//! API errors as RFC 9457 `application/problem+json`. Each kind has a stable `type` URI that
//! clients may match on; internal causes are logged, never returned.

use axum::response::{IntoResponse, Response};
use http_api_problem::{HttpApiProblem, StatusCode};

use crate::domain::Status;
use crate::domain::request::FieldError;
use crate::engine::EngineError;
use crate::store::StoreError;

/// Prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:countersign:problem:";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("missing or invalid admin token")]
    AdminUnauthorized,
    #[error("admin API disabled")]
    AdminDisabled,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid field {}", .0.first().map_or("", |e| e.field.as_str()))]
    InvalidFields(Vec<FieldError>),
    #[error("action not permitted: {0}")]
    NotPermitted(String),
    #[error("agent paused")]
    /// Paused by its manifest (`None`) or by this override.
    AgentPaused(Option<crate::domain::Control>),
    #[error("no such proposal")]
    NotFound,
    #[error("no such delivery")]
    NoSuchDelivery,
    #[error("the delivery is in progress")]
    DeliveryInFlight,
    #[error("no such agent")]
    NoSuchAgent,
    #[error("rate limited")]
    RateLimited { retry_after: std::time::Duration },
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("proposal is {status:?}: {detail}")]
    WrongState {
        status: Status,
        detail: &'static str,
    },
    #[error("wrong execution token")]
    WrongExecutionToken,
    #[error("the outcome names another digest than the approved one")]
    DigestMismatch {
        approved: crate::domain::ActionDigest,
    },
    #[error("idempotency key reused with a different body")]
    IdempotencyKeyReused,
    #[error("request not answered in time")]
    RequestTimeout,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Store(StoreError::Unavailable(e)) => ApiError::Unavailable(e),
            EngineError::WriterStopped => ApiError::Unavailable("shutting down".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidFields(vec![FieldError::new(field, message)])
    }

    pub(super) fn problem(&self) -> HttpApiProblem {
        let base = |status: StatusCode, slug: &str, title: &str| {
            HttpApiProblem::new(status)
                .type_url(format!("{TYPE_PREFIX}{slug}"))
                .title(title)
        };
        match self {
            ApiError::Unauthorized => base(StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid bearer token")
                .detail("Send `Authorization: Bearer <token>` with a token declared in manifests/agents."),
            ApiError::AdminUnauthorized => base(StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid admin token")
                .detail("Send `Authorization: Bearer <admin_token>` (the admin_token configuration key)."),
            ApiError::AdminDisabled => base(StatusCode::FORBIDDEN, "admin-api-disabled", "The admin API is disabled")
                .detail("Set admin_token (COUNTERSIGN_ADMIN_TOKEN, at least 24 characters) to use the admin API."),
            ApiError::PayloadTooLarge { limit } => base(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large")
                .detail(format!("The body must be at most {limit} bytes."))
                .value("limit", limit),
            ApiError::InvalidJson(detail) => {
                base(StatusCode::BAD_REQUEST, "invalid-json", "Body is not valid JSON").detail(detail.clone())
            }
            ApiError::InvalidFields(errors) => {
                let first = errors.first();
                let mut problem = base(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", "Invalid field")
                    .detail(first.map_or_else(String::new, |e| format!("{}: {}", e.field, e.message)))
                    .value("errors", errors);
                if let Some(first) = first {
                    problem = problem.value("field", &first.field);
                }
                problem
            }
            ApiError::NotPermitted(detail) => base(StatusCode::FORBIDDEN, "action-not-permitted", "The agent may not propose this action")
                .detail(detail.clone())
                .value("field", &"action"),
            ApiError::AgentPaused(reason) => base(StatusCode::LOCKED, "agent-paused", "The agent is paused")
                .detail(match reason {
                    Some(control) => {
                        use crate::domain::control::{Setter, setter};
                        let who = match setter(&control.set_by) {
                            Setter::Breaker => "The circuit breaker paused this agent",
                            Setter::SlackUser(_) => "A countersign admin paused this agent from Slack",
                            Setter::Operator => "An operator paused this agent",
                        };
                        let why = control.reason.as_deref().unwrap_or("no reason given");
                        format!("{who} (or this action): {why}. No proposal is accepted until a person resumes it.")
                    }
                    None => "The agent's manifest sets it paused; no proposal is accepted until the manifest changes.".to_owned(),
                }),
            ApiError::NotFound => base(StatusCode::NOT_FOUND, "not-found", "No such proposal"),
            ApiError::RateLimited { retry_after } => base(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many proposals")
                .detail(format!("This agent's rate limit (its manifest's rate_limit) is used up; retry in {} s.", retry_after.as_secs_f64().ceil()))
                .value("retry_after_seconds", &retry_after.as_secs_f64().ceil()),
            ApiError::NoSuchAgent => base(StatusCode::NOT_FOUND, "not-found", "No such agent")
                .detail("Agents are declared in manifests/agents/."),
            ApiError::NoSuchDelivery => base(StatusCode::NOT_FOUND, "not-found", "No such delivery"),
            ApiError::DeliveryInFlight => base(StatusCode::CONFLICT, "delivery-in-flight", "The delivery is in progress")
                .detail("A worker is delivering this callback right now; ask again once its attempt is recorded (see the deliveries list)."),
            ApiError::NoRoute => base(StatusCode::NOT_FOUND, "no-route", "No such endpoint")
                .detail("See /openapi.json for the API."),
            ApiError::MethodNotAllowed => base(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
                .detail("See /openapi.json for the methods each endpoint takes."),
            ApiError::WrongState { status, detail } => base(StatusCode::CONFLICT, "invalid-state", "Proposal is not in a state that allows this")
                .detail(format!("The proposal is {}; {detail}.", status.as_str()))
                .value("proposal_status", status),
            ApiError::WrongExecutionToken => base(StatusCode::FORBIDDEN, "wrong-execution-token", "Wrong execution token")
                .detail("Present the execution_token of this proposal's approval (from the proposal.decided callback or the proposal's decision).")
                .value("field", &"execution_token"),
            ApiError::DigestMismatch { approved } => base(StatusCode::CONFLICT, "digest-mismatch", "Not what was approved")
                .detail(format!("The approval is bound to {approved}; an outcome must name the digest it executed, and only what was approved may run. The execution token was not spent."))
                .value("field", &"digest")
                .value("approved_digest", &approved.as_str()),
            ApiError::IdempotencyKeyReused => base(StatusCode::CONFLICT, "idempotency-key-reused", "Idempotency key reused with a different body")
                .detail("This Idempotency-Key was already used with a different request body; use a new key for a new request.")
                .value("field", &"Idempotency-Key"),
            ApiError::Unavailable(_) => base(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
                .detail("The database is not reachable; retry with the same Idempotency-Key."),
            ApiError::RequestTimeout => base(StatusCode::SERVICE_UNAVAILABLE, "request-timeout", "Request not answered in time")
                .detail("The request took longer than the server allows; if it changed something, retry with the same Idempotency-Key."),
            ApiError::Internal(_) => base(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) | ApiError::Unavailable(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let mut response = self.problem().into_response();
        if let ApiError::RateLimited { retry_after } = &self {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if matches!(self, ApiError::Unauthorized | ApiError::AdminUnauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
