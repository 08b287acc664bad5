//! The agent API: submit, read, cancel, report an outcome.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::api_doc::{
    ActionNotPermitted, AgentPaused, IdempotencyKeyReused, Internal, InvalidField, InvalidJson,
    InvalidState, NotFound, OutcomeConflict, PayloadTooLarge, RateLimited, Unauthorized,
    Unavailable, WrongExecutionToken,
};
use super::auth::AuthenticatedAgent;
use super::body;
use super::problem::ApiError;
use crate::domain::request::ProposalRequest;
use crate::domain::{ExecutionResult, Proposal, ProposalId, Status};
use crate::engine::{OutcomeProof, Submitted, Transition};
use crate::store::IdempotencyKey;

/// The longest `Idempotency-Key`, in bytes (printable ASCII).
pub(super) const IDEMPOTENCY_KEY_MAX: usize = 255;
/// The longest cancellation reason, in characters.
pub(super) const REASON_MAX: usize = 1_000;
/// The most an outcome's `details` may take, serialized.
pub(super) const DETAILS_MAX_BYTES: usize = 16 * 1024;

/// Submit a proposal.
///
/// Validates the body, evaluates policy and stores the proposal with its verdict. With an
/// `Idempotency-Key`, a retry with the same body gets the original response; the same key with
/// a different body gets 409. Keys are kept at least 24 hours.
#[utoipa::path(
    post, path = "/v1/proposals", tag = "proposals",
    request_body = ProposalRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
            pattern = r"^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$",
            description = "Makes retries safe: 1 to 255 printable ASCII characters (spaces only inside). Kept per agent for 25 hours."),
    ),
    responses(
        (status = 201, description = "Stored, with its verdict; with a known `Idempotency-Key` and the same body, the original answer", body = ProposalView,
            headers(
                ("Location" = String, description = "`/v1/proposals/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the original answer to an earlier request with the same key"),
            )),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = ActionNotPermitted),
        (status = 409, response = IdempotencyKeyReused),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidField),
        (status = 423, response = AgentPaused),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthenticatedAgent { agent, registry }: AuthenticatedAgent,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // First, before any parsing: a flooding agent costs as little as possible.
    if let Some(limit) = agent.rate_limit {
        let now = state.engine.clock().now();
        if let Err(retry_after) = state.limiter.admit(agent.id.as_str(), limit, now).await {
            metrics::counter!("countersign_rate_limited_total", "agent" => agent.id.to_string())
                .increment(1);
            tracing::info!(agent = %agent.id, ?retry_after, "rate limited");
            let refused = state.limiter.refused(agent.id.as_str(), now).await;
            state.engine.after_rate_limited(&agent, refused).await;
            return Err(ApiError::RateLimited { retry_after });
        }
    }
    let key = idempotency_key(&headers)?;
    let body = body::bytes(body)?;
    // One decoder for every request (it refuses duplicate keys); with an idempotency key the
    // document is also hashed, canonically, to recognise a retry whatever its key order.
    let request = body::decode::<ProposalRequest>(&body)?;
    let idempotency = match key {
        Some(key) => Some(IdempotencyKey {
            key,
            request_hash: crate::canonical::sha256_hex(&body::parse(&body)?),
        }),
        None => None,
    };
    let request = request.validate().map_err(ApiError::InvalidFields)?;

    match state
        .engine
        .submit(&registry, &agent, request, idempotency)
        .await?
    {
        Submitted::Created(proposal) => {
            if proposal.status == Status::Rejected {
                let (engine, registry) = (state.engine.clone(), state.registry.clone());
                let agent = proposal.agent.to_string();
                tokio::spawn(async move {
                    engine.after_rejection(&registry.current(), &agent).await;
                });
            }
            Ok(created(state.view(&proposal), false))
        }
        Submitted::Replayed(stored) => {
            let proposal: Proposal = serde_json::from_str(&stored)
                .map_err(|e| ApiError::Internal(format!("stored idempotent response: {e}")))?;
            Ok(created(state.view(&proposal), true))
        }
        Submitted::KeyReused => Err(ApiError::IdempotencyKeyReused),
        Submitted::NotPermitted(detail) => Err(ApiError::NotPermitted(detail)),
        Submitted::AgentPaused(reason) => Err(ApiError::AgentPaused(reason)),
    }
}

fn created(view: ProposalView<'_>, replayed: bool) -> Response {
    let location = format!("/v1/proposals/{}", view.proposal.id);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The longest a long-poll waits.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Read one of your proposals; with `?wait=30s`, once it is decided or the wait ends (at most
/// 60 s), whichever comes first.
#[utoipa::path(
    get, path = "/v1/proposals/{id}", tag = "proposals",
    params(
        ("id" = String, Path, pattern = r"^prop_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", example = "prop_01jd2m3k4n5p6q7r8s9t0v1w2x",
            description = "Proposal id (`prop_` and a ULID); anything else is a 404"),
        ("wait" = Option<String>, Query, nullable = false, pattern = r"^[0-9]{1,6}(ms|s|m|h)$", example = "1s",
            description = "Long-poll: answer as soon as the proposal is decided, or after this long (a duration such as `30s`, `500ms` or `1m`; longer than 60s waits 60s; other humantime forms such as `1m 30s` are read too)"),
    ),
    responses(
        (status = 200, description = "The proposal as it is (or once decided, or when the wait ended)", body = ProposalView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    AuthenticatedAgent { agent, .. }: AuthenticatedAgent,
    ProposalPath(id): ProposalPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let wait = match query.get("wait") {
        Some(text) => Some(
            humantime::parse_duration(text)
                .map_err(|e| ApiError::field("wait", format!("not a duration such as 30s: {e}")))?
                .min(MAX_WAIT),
        ),
        None => None,
    };
    let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
    loop {
        // Subscribed before the read: a decision in between still wakes the wait.
        let waiter = state.engine.waiters().join(&id);
        let decided = waiter.decided();
        let proposal = state
            .engine
            .get(&agent, &id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let now = tokio::time::Instant::now();
        let remaining = match deadline {
            Some(deadline) if proposal.status == Status::Pending && deadline > now => {
                deadline - now
            }
            _ => return Ok(Json(state.view(&proposal)).into_response()),
        };
        // Without other replicas' wake-ups (Redis unreachable) a decision made elsewhere is
        // only seen by reading again.
        let slice = if state.engine.missing_peer_wakeups() {
            remaining.min(crate::cluster::POLL_WHILE_DEGRADED)
        } else {
            remaining
        };
        let _ = tokio::time::timeout(slice, decided).await;
    }
}

/// Body of `POST /v1/proposals/{id}/cancel` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why the agent withdraws the proposal (at most 1,000 characters).
    pub reason: Option<String>,
}

/// Withdraw a pending proposal.
///
/// The body is optional: none (or only white space) is a cancellation without a reason.
#[utoipa::path(
    post, path = "/v1/proposals/{id}/cancel", tag = "proposals",
    params(("id" = String, Path, pattern = r"^prop_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "Proposal id")),
    request_body(content = CancelRequest, description = "Optional; when sent, a JSON object"),
    responses(
        (status = 200, description = "Cancelled", body = ProposalView),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = InvalidState),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    AuthenticatedAgent { agent, .. }: AuthenticatedAgent,
    ProposalPath(id): ProposalPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body::bytes(body)?;
    let request: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        body::decode(&body)?
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
        Transition::Done(proposal) => Ok(Json(state.view(&proposal)).into_response()),
        // A cancellation presents no token nor digest.
        Transition::NotFound | Transition::WrongToken | Transition::DigestMismatch(_) => {
            Err(ApiError::NotFound)
        }
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
    /// The approval's `execution_token` (in the callback and in the proposal's `decision`):
    /// accepted once, so one approval is acted on at most once.
    pub execution_token: String,
    /// The `digest` of what was executed: the approval's (in the callback and in the
    /// proposal's `decision`). Another one is refused (`409 digest-mismatch`) and the token
    /// stays unspent: run exactly what was approved.
    #[schema(pattern = r"^sha256:[0-9a-f]{64}$", example = "sha256:5f0c2b…")]
    pub digest: String,
    pub result: ExecutionResult,
    /// Anything useful to a later reader (error message, external ids); at most 16 KiB of JSON.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// Report what happened after an approval (once).
#[utoipa::path(
    post, path = "/v1/proposals/{id}/outcome", tag = "proposals",
    params(("id" = String, Path, pattern = r"^prop_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "Proposal id")),
    request_body = OutcomeRequest,
    responses(
        (status = 200, description = "Recorded; the execution token is spent", body = ProposalView),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = WrongExecutionToken),
        (status = 404, response = NotFound),
        (status = 409, response = OutcomeConflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn outcome(
    State(state): State<AppState>,
    AuthenticatedAgent { agent, .. }: AuthenticatedAgent,
    ProposalPath(id): ProposalPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: OutcomeRequest = body::decode(&body::bytes(body)?)?;
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
        .record_outcome(
            &agent,
            id,
            request.result,
            request.details,
            OutcomeProof {
                execution_token: request.execution_token,
                digest: request.digest,
            },
        )
        .await?
    {
        Transition::Done(proposal) => Ok(Json(state.view(&proposal)).into_response()),
        Transition::NotFound => Err(ApiError::NotFound),
        Transition::WrongState(status) => Err(ApiError::WrongState {
            status,
            detail: "an outcome is recorded once, after approval (this execution token was already used, or there is none yet)",
        }),
        Transition::WrongToken => Err(ApiError::WrongExecutionToken),
        Transition::DigestMismatch(approved) => Err(ApiError::DigestMismatch { approved }),
    }
}

/// The `{id}` of a proposal path. Anything that is not a proposal id — malformed, not UTF-8 —
/// is simply not found, like an id that does not exist.
pub struct ProposalPath(ProposalId);

impl<S: Send + Sync> FromRequestParts<S> for ProposalPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        ProposalId::parse(&id)
            .map(ProposalPath)
            .map_err(|_| ApiError::NotFound)
    }
}

/// A proposal as the API answers it: the stored proposal and the links to act on it.
#[derive(Serialize, ToSchema)]
pub struct ProposalView<'a> {
    #[serde(flatten)]
    proposal: &'a Proposal,
    links: Links,
}

/// Where to read, cancel and report on the proposal (absolute, from `public_url`).
#[derive(Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    this: String,
    cancel: String,
    outcome: String,
}

impl AppState {
    fn view<'a>(&self, proposal: &'a Proposal) -> ProposalView<'a> {
        let base = self.public_url.as_str().trim_end_matches('/');
        let this = format!("{base}/v1/proposals/{}", proposal.id);
        ProposalView {
            proposal,
            links: Links {
                cancel: format!("{this}/cancel"),
                outcome: format!("{this}/outcome"),
                this,
            },
        }
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
