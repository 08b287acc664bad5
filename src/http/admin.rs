//! The admin API (operators; `Authorization: Bearer <admin_token>`).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::api_doc::{
    AdminDisabled, DeliveryInFlight, Internal, InvalidField, InvalidJson, NotFound,
    PayloadTooLarge, Unauthorized, Unavailable,
};
use super::auth::Admin;
use super::problem::ApiError;
use crate::report::{Period, SlaReport};
use crate::store::Redelivery;

/// The longest reason for a control, in characters (after trimming).
pub(super) const CONTROL_REASON_MAX: usize = 500;

/// A path segment as text. One that is not (invalid percent-encoding, not UTF-8) names nothing
/// there is: `missing`, as for an unknown one, rather than axum's plain-text 400.
fn segment(
    path: Result<Path<String>, PathRejection>,
    missing: ApiError,
) -> Result<String, ApiError> {
    path.map(|Path(text)| text).map_err(|_| missing)
}

/// One SLA report per role asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlaReports {
    pub reports: Vec<SlaReport>,
}

/// The SLA figures `/countersign report` posts, as JSON: for one role (`role`) or every role,
/// over the last `period` (7d, 30d or 90d; default 7d) up to now.
#[utoipa::path(
    get, path = "/v1/reports/sla", tag = "admin",
    params(
        ("period" = Option<Period>, Query, nullable = false, description = "7d (default), 30d or 90d"),
        ("role" = Option<String>, Query, nullable = false, description = "A role from manifests/roles.yaml; every role when absent"),
    ),
    responses(
        (status = 200, description = "The reports", body = SlaReports),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn sla_report(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SlaReports>, ApiError> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !["period", "role"].contains(&k.as_str()))
    {
        return Err(ApiError::field(
            unknown.clone(),
            "unknown parameter: this endpoint takes period and role",
        ));
    }
    let period = match query.get("period") {
        Some(text) => text
            .parse::<Period>()
            .map_err(|e| ApiError::field("period", e))?,
        None => Period::Week,
    };
    let registry = state.registry.current();
    let roles: Vec<String> = match query.get("role") {
        Some(role) if registry.roles.get(role).is_some() => vec![role.clone()],
        Some(role) => {
            let known: Vec<&str> = registry.roles.iter().map(|(id, _)| id).collect();
            return Err(ApiError::field(
                "role",
                format!("no role `{role}` (roles: {})", known.join(", ")),
            ));
        }
        None => registry.roles.iter().map(|(id, _)| id.to_owned()).collect(),
    };
    let reports = state.engine.sla_reports(&roles, period).await?;
    Ok(Json(SlaReports { reports }))
}

/// A proposal's callback deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<crate::store::WebhookRecord>,
}

/// Every `proposal.decided` callback for a proposal, with each attempt: when, what the agent's
/// endpoint answered (or why nothing did), how long it took.
#[utoipa::path(
    get, path = "/v1/admin/proposals/{id}/deliveries", tag = "admin",
    params(("id" = String, Path, pattern = r"^prop_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "Proposal id (`prop_` and a ULID); anything else is a 404")),
    responses(
        (status = 200, description = "The proposal's callbacks, each with its attempts", body = Deliveries),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deliveries>, ApiError> {
    let id = segment(id, ApiError::NotFound)?;
    // An unknown proposal is a 404, as on the agent API, not an empty list that reads like
    // "no callback was owed".
    let Ok(id) = crate::domain::ProposalId::parse(&id) else {
        return Err(ApiError::NotFound);
    };
    let Some(deliveries) = state.engine.deliveries(&id).await? else {
        return Err(ApiError::NotFound);
    };
    Ok(Json(Deliveries { deliveries }))
}

/// Delivers a callback again from the start of the schedule (same `webhook-id`), also one that
/// was delivered or given up, and lifts a 410 block on its endpoint.
#[utoipa::path(
    post, path = "/v1/admin/deliveries/{event}/redeliver", tag = "admin",
    params(("event" = String, Path, description = "The webhook id (`msg_…`)")),
    responses(
        (status = 202, description = "Queued", body = Redelivering),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 409, response = DeliveryInFlight),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn redeliver(
    _: Admin,
    State(state): State<AppState>,
    event: Result<Path<String>, PathRejection>,
) -> Result<(axum::http::StatusCode, Json<Redelivering>), ApiError> {
    let event = segment(event, ApiError::NoSuchDelivery)?;
    match state.engine.redeliver(&event, "system:admin").await? {
        Redelivery::Started => {}
        Redelivery::NoSuchEvent => return Err(ApiError::NoSuchDelivery),
        Redelivery::InFlight => return Err(ApiError::DeliveryInFlight),
    }
    tracing::info!(%event, "callback redelivery requested");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(Redelivering {
            redelivering: event,
        }),
    ))
}

/// The answer to a redelivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivering {
    /// The webhook id going out again.
    pub redelivering: String,
}

/// An agent's mode: what its manifest says and the overrides in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentControls {
    pub agent: String,
    /// `active`, `draft_only` or `paused`, from `manifests/agents/`.
    pub manifest_mode: String,
    pub controls: Vec<crate::domain::Control>,
}

/// Body of `POST /v1/admin/agents/{agent}/controls`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// `paused` or `draft_only`.
    pub mode: crate::domain::ControlMode,
    /// One action of the agent's catalog; the whole agent when absent.
    pub action: Option<String>,
    /// Why (recorded in the audit trail and shown to the agent with a 423): required.
    pub reason: String,
    /// Who is doing this (recorded as `admin:<by>`); `admin` when absent.
    pub by: Option<String>,
    /// Also reject the agent's pending proposals this covers.
    #[serde(default)]
    pub reject_pending: bool,
}

fn find_agent(
    state: &AppState,
    agent: &str,
) -> Result<std::sync::Arc<crate::manifest::Agent>, ApiError> {
    let registry = state.registry.current();
    registry
        .agents
        .get(agent)
        .cloned()
        .ok_or(ApiError::NoSuchAgent)
}

fn controls_of(state: &AppState, agent: &crate::manifest::Agent) -> AgentControls {
    AgentControls {
        agent: agent.id.to_string(),
        manifest_mode: serde_json::to_value(agent.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        controls: state.engine.controls().of(agent.id.as_str()),
    }
}

/// The agent's manifest mode and the overrides in force.
#[utoipa::path(
    get, path = "/v1/admin/agents/{agent}/controls", tag = "admin",
    params(("agent" = String, Path, pattern = r"^[a-z][a-z0-9_-]*$", max_length = 64, example = "billing", description = "An agent id from manifests/agents/")),
    responses(
        (status = 200, description = "The manifest's mode and the overrides in force", body = AgentControls),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn agent_controls(
    _: Admin,
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &segment(agent, ApiError::NoSuchAgent)?)?;
    Ok(Json(controls_of(&state, &agent)))
}

/// Pauses or draft-onlies an agent (or one action), in force for its next request; audited.
#[utoipa::path(
    post, path = "/v1/admin/agents/{agent}/controls", tag = "admin",
    params(("agent" = String, Path, pattern = r"^[a-z][a-z0-9_-]*$", max_length = 64, example = "billing", description = "An agent id from manifests/agents/")),
    request_body = ControlRequest,
    responses(
        (status = 200, description = "In force; the agent's controls", body = AgentControls),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn narrow_agent(
    _: Admin,
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &segment(agent, ApiError::NoSuchAgent)?)?;
    let request: ControlRequest = super::body::decode(&super::body::bytes(body)?)?;
    if let Some(action) = &request.action
        && !agent.actions.keys().any(|a| a.as_str() == action)
    {
        return Err(ApiError::field(
            "action",
            "not an action of this agent's catalog",
        ));
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > CONTROL_REASON_MAX {
        return Err(ApiError::field(
            "reason",
            format!("say why, in 1 to {CONTROL_REASON_MAX} characters"),
        ));
    }
    let by = crate::domain::Actor {
        kind: crate::domain::ActorKind::System,
        id: match &request.by {
            Some(by) => format!("admin:{}", by.chars().take(100).collect::<String>()),
            None => "admin".into(),
        },
    };
    let control = crate::domain::Control {
        agent: agent.id.to_string(),
        action: request.action.clone(),
        mode: request.mode,
        reason: Some(reason.to_owned()),
        set_by: by.audit_name(),
        set_at: state.engine.clock().now(),
    };
    state
        .engine
        .narrow(control, request.reject_pending, by)
        .await?;
    Ok(Json(controls_of(&state, &agent)))
}

/// Clears an override (`?action=` for one action's): the manifest's mode applies again. Who
/// (`by`) and why (`reason`) are audited and announced with it.
#[utoipa::path(
    delete, path = "/v1/admin/agents/{agent}/controls", tag = "admin",
    params(
        ("agent" = String, Path, pattern = r"^[a-z][a-z0-9_-]*$", max_length = 64, example = "billing", description = "An agent id from manifests/agents/"),
        ("action" = Option<String>, Query, nullable = false, description = "Clear this action's override instead of the agent's"),
        ("by" = Option<String>, Query, nullable = false, description = "Who is doing this (recorded as `system:admin:<by>`, the first 100 characters)"),
        ("reason" = Option<String>, Query, nullable = false, max_length = 500, description = "Why (at most 500 characters)"),
    ),
    responses(
        (status = 200, description = "Cleared (or there was nothing to clear); the agent's controls", body = AgentControls),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn resume_agent(
    _: Admin,
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &segment(agent, ApiError::NoSuchAgent)?)?;
    let by = query.get("by").map_or("system:admin".to_owned(), |by| {
        format!("system:admin:{}", by.chars().take(100).collect::<String>())
    });
    let reason = query
        .get("reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > CONTROL_REASON_MAX)
    {
        return Err(ApiError::field(
            "reason",
            format!("at most {CONTROL_REASON_MAX} characters"),
        ));
    }
    state
        .engine
        .clear_control(
            agent.id.as_str(),
            query.get("action").map(String::as_str),
            by,
            reason,
        )
        .await?;
    Ok(Json(controls_of(&state, &agent)))
}

/// Each action's record over the last `period` (30d default, or 7d, 90d) and what the autonomy
/// criteria in policy recommend (nothing changes by itself).
#[utoipa::path(
    get, path = "/v1/admin/agents/{agent}/autonomy", tag = "admin",
    params(
        ("agent" = String, Path, pattern = r"^[a-z][a-z0-9_-]*$", max_length = 64, example = "billing", description = "An agent id from manifests/agents/"),
        ("period" = Option<Period>, Query, nullable = false, description = "7d, 30d (default) or 90d"),
    ),
    responses(
        (status = 200, description = "Each action's record and what the criteria recommend", body = crate::autonomy::AutonomyReport),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, response = NotFound),
        (status = 422, response = InvalidField),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("admin" = []))
)]
pub async fn autonomy(
    _: Admin,
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<crate::autonomy::AutonomyReport>, ApiError> {
    let agent = find_agent(&state, &segment(agent, ApiError::NoSuchAgent)?)?;
    let period = match query.get("period") {
        Some(text) => text
            .parse::<Period>()
            .map_err(|e| ApiError::field("period", e))?,
        None => Period::Month,
    };
    let registry = state.registry.current();
    let report = state
        .engine
        .autonomy_report(&agent, period, registry.policies.autonomy())
        .await?;
    Ok(Json(report))
}
