//! The agent API: submit, read, cancel, report an outcome.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::auth::AuthenticatedAgent;
use super::problem::ApiError;
use crate::domain::request::{ProposalRequest, from_json_value};
use crate::domain::{ExecutionResult, Proposal, ProposalId};
use crate::engine::{Submitted, Transition};
use crate::store::IdempotencyKey;

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;
const IDEMPOTENCY_KEY_MAX: usize = 255;
const REASON_MAX: usize = 1_000;
const DETAILS_MAX_BYTES: usize = 16 * 1024;

/// Submit a proposal.
///
/// Validates the body, evaluates policy and stores the proposal with its verdict. With an
/// `Idempotency-Key`, a retry with the same body gets the original response; the same key with
/// a different body gets 409. Keys are kept at least 24 hours.
#[utoipa::path(
    post, path = "/v1/proposals", tag = "proposals",
    request_body = ProposalRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: up to 255 printable ASCII characters")),
    responses(
        (status = 201, description = "Stored", body = Proposal),
        (status = 400, description = "Not JSON", content_type = "application/problem+json"),
        (status = 401, description = "Bad token", content_type = "application/problem+json"),
        (status = 409, description = "Idempotency key reused with another body", content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (named in `field`)", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthenticatedAgent(agent): AuthenticatedAgent,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let value = json_body(body)?;
    let request_hash = key.is_some().then(|| crate::canonical::sha256_hex(&value));
    let request = ProposalRequest::from_json(value)
        .map_err(|e| ApiError::InvalidFields(vec![e]))?
        .validate()
        .map_err(ApiError::InvalidFields)?;
    let idempotency = key
        .zip(request_hash)
        .map(|(key, request_hash)| IdempotencyKey { key, request_hash });

    match state.engine.submit(&agent, request, idempotency).await? {
        Submitted::Created(proposal) => {
            let body = state.render(
                serde_json::to_value(&proposal).map_err(|e| ApiError::Internal(e.to_string()))?,
            );
            Ok(created(&proposal.id, body, false))
        }
        Submitted::Replayed(stored) => {
            let stored: Value =
                serde_json::from_str(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
            let id = stored["id"]
                .as_str()
                .and_then(|id| ProposalId::parse(id).ok());
            let id = id.ok_or_else(|| ApiError::Internal("stored response has no id".into()))?;
            Ok(created(&id, state.render(stored), true))
        }
        Submitted::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

fn created(id: &ProposalId, body: Value, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/proposals/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Read one of your proposals.
#[utoipa::path(
    get, path = "/v1/proposals/{id}", tag = "proposals",
    params(("id" = String, Path, description = "Proposal id (prop_…)")),
    responses(
        (status = 200, body = Proposal),
        (status = 401, content_type = "application/problem+json"),
        (status = 404, description = "No such proposal, or another agent's", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    AuthenticatedAgent(agent): AuthenticatedAgent,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ProposalId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let proposal = state
        .engine
        .get(&agent, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(state.render_proposal(&proposal)?))
}

/// Body of `POST /v1/proposals/{id}/cancel` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why the agent withdraws the proposal (at most 1,000 characters).
    pub reason: Option<String>,
}

/// Withdraw a pending proposal.
#[utoipa::path(
    post, path = "/v1/proposals/{id}/cancel", tag = "proposals",
    params(("id" = String, Path)),
    request_body(content = Option<CancelRequest>),
    responses(
        (status = 200, body = Proposal),
        (status = 404, content_type = "application/problem+json"),
        (status = 409, description = "Not pending", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    AuthenticatedAgent(agent): AuthenticatedAgent,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = ProposalId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let body = body.map_err(body_rejection)?;
    let request: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        typed(json_body(Ok(body))?)?
    };
    if let Some(reason) = &request.reason
        && reason.chars().count() > REASON_MAX
    {
        return Err(ApiError::field(
            "reason",
            format!("at most {REASON_MAX} characters"),
        ));
    }
    match state.engine.cancel(&agent, id, request.reason).await? {
        Transition::Done(proposal) => Ok(Json(state.render_proposal(&proposal)?)),
        Transition::NotFound => Err(ApiError::NotFound),
        Transition::WrongState(status) => Err(ApiError::WrongState {
            status,
            detail: "only a pending proposal can be cancelled",
        }),
    }
}

/// Body of `POST /v1/proposals/{id}/outcome`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    pub result: ExecutionResult,
    /// Anything useful to a later reader (error message, external ids); at most 16 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// Report what happened after an approval (once).
#[utoipa::path(
    post, path = "/v1/proposals/{id}/outcome", tag = "proposals",
    params(("id" = String, Path)),
    request_body = OutcomeRequest,
    responses(
        (status = 200, body = Proposal),
        (status = 404, content_type = "application/problem+json"),
        (status = 409, description = "Not approved, or outcome already recorded", content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn outcome(
    State(state): State<AppState>,
    AuthenticatedAgent(agent): AuthenticatedAgent,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = ProposalId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let request: OutcomeRequest = typed(json_body(body)?)?;
    if let Some(details) = &request.details
        && details.to_string().len() > DETAILS_MAX_BYTES
    {
        return Err(ApiError::field(
            "details",
            format!("at most {DETAILS_MAX_BYTES} bytes of JSON"),
        ));
    }
    match state
        .engine
        .record_outcome(&agent, id, request.result, request.details)
        .await?
    {
        Transition::Done(proposal) => Ok(Json(state.render_proposal(&proposal)?)),
        Transition::NotFound => Err(ApiError::NotFound),
        Transition::WrongState(status) => Err(ApiError::WrongState {
            status,
            detail: "an outcome is recorded once, after approval",
        }),
    }
}

impl AppState {
    /// The API representation of a proposal: the stored resource plus links.
    fn render(&self, mut proposal: Value) -> Value {
        if let Some(id) = proposal["id"].as_str() {
            let base = self.public_url.as_str().trim_end_matches('/');
            let links = json!({
                "self": format!("{base}/v1/proposals/{id}"),
                "cancel": format!("{base}/v1/proposals/{id}/cancel"),
                "outcome": format!("{base}/v1/proposals/{id}/outcome"),
            });
            proposal["links"] = links;
        }
        proposal
    }

    fn render_proposal(&self, proposal: &Proposal) -> Result<Value, ApiError> {
        let value =
            serde_json::to_value(proposal).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(self.render(value))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::field(
            "Idempotency-Key",
            format!("1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"),
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let ok = !text.is_empty()
        && text.len() <= IDEMPOTENCY_KEY_MAX
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(Some(text.to_owned()))
    } else {
        Err(invalid())
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit: BODY_LIMIT }
    } else {
        ApiError::InvalidJson(rejection.body_text())
    }
}

/// The body as JSON. Syntax errors are 400; shape errors (handled by the caller) are 422.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(body_rejection)?;
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    from_json_value(value).map_err(|e| ApiError::InvalidFields(vec![e]))
}
