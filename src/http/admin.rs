//! The admin API (operators; `Authorization: Bearer <admin_token>`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Admin;
use super::problem::ApiError;
use crate::report::{self, Period, SlaReport};

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
        ("period" = Option<String>, Query, description = "7d (default), 30d or 90d"),
        ("role" = Option<String>, Query, description = "A role from manifests/roles.yaml; every role when absent"),
    ),
    responses(
        (status = 200, description = "The reports", body = SlaReports),
        (status = 401, description = "Missing or wrong admin token", content_type = "application/problem+json"),
        (status = 403, description = "No admin token is configured", content_type = "application/problem+json"),
        (status = 422, description = "Unknown period or role (named in `field`)", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
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
    let now = state.engine.clock().now();
    let reports = report::build_all(state.engine.store().as_ref(), &roles, period, now)
        .await
        .map_err(|e| ApiError::from(crate::engine::EngineError::Store(e)))?;
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
    params(("id" = String, Path, description = "Proposal id (prop_…)")),
    responses(
        (status = 200, body = Deliveries),
        (status = 401, content_type = "application/problem+json"),
        (status = 403, content_type = "application/problem+json"),
        (status = 404, description = "No such proposal", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deliveries>, ApiError> {
    // An unknown proposal is a 404, as on the agent API, not an empty list that reads like
    // "no callback was owed".
    let Ok(id) = crate::domain::ProposalId::parse(&id) else {
        return Err(ApiError::NotFound);
    };
    let store = state.engine.store();
    let stored = |e| ApiError::from(crate::engine::EngineError::Store(e));
    if store.proposal(&id).await.map_err(stored)?.is_none() {
        return Err(ApiError::NotFound);
    }
    let deliveries = store.webhook_events(&id).await.map_err(stored)?;
    Ok(Json(Deliveries { deliveries }))
}

/// Delivers a callback again from the start of the schedule (same `webhook-id`), also one that
/// was delivered or given up, and lifts a 410 block on its endpoint.
#[utoipa::path(
    post, path = "/v1/admin/deliveries/{event}/redeliver", tag = "admin",
    params(("event" = String, Path, description = "The webhook id (msg_…)")),
    responses(
        (status = 202, description = "Queued"),
        (status = 401, content_type = "application/problem+json"),
        (status = 403, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn redeliver(
    _: Admin,
    State(state): State<AppState>,
    Path(event): Path<String>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), ApiError> {
    let now = state.engine.clock().now();
    let found = state
        .engine
        .store()
        .redeliver_webhook(&event, now)
        .await
        .map_err(|e| ApiError::from(crate::engine::EngineError::Store(e)))?;
    if !found {
        return Err(ApiError::NoSuchDelivery);
    }
    state.engine.callback_work().notify_one();
    tracing::info!(%event, "callback redelivery requested");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({"redelivering": event})),
    ))
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
    params(("agent" = String, Path)),
    responses((status = 200, body = AgentControls), (status = 404, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn agent_controls(
    _: Admin,
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &agent)?;
    Ok(Json(controls_of(&state, &agent)))
}

/// Pauses or draft-onlies an agent (or one action), in force for its next request; audited.
#[utoipa::path(
    post, path = "/v1/admin/agents/{agent}/controls", tag = "admin",
    params(("agent" = String, Path)),
    request_body = ControlRequest,
    responses(
        (status = 200, body = AgentControls),
        (status = 404, content_type = "application/problem+json"),
        (status = 422, description = "Bad field (named in `field`)", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn narrow_agent(
    _: Admin,
    State(state): State<AppState>,
    Path(agent): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &agent)?;
    let request: ControlRequest = super::body::decode(&body)?;
    if let Some(action) = &request.action
        && !agent.actions.keys().any(|a| a.as_str() == action)
    {
        return Err(ApiError::field(
            "action",
            "not an action of this agent's catalog",
        ));
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::field("reason", "say why, in 1 to 500 characters"));
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
        ("agent" = String, Path),
        ("action" = Option<String>, Query),
        ("by" = Option<String>, Query),
        ("reason" = Option<String>, Query, description = "Why (at most 500 characters)"),
    ),
    responses(
        (status = 200, body = AgentControls),
        (status = 404, content_type = "application/problem+json"),
        (status = 422, description = "Bad field (named in `field`)", content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn resume_agent(
    _: Admin,
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<AgentControls>, ApiError> {
    let agent = find_agent(&state, &agent)?;
    let by = query.get("by").map_or("system:admin".to_owned(), |by| {
        format!("system:admin:{}", by.chars().take(100).collect::<String>())
    });
    let reason = query
        .get("reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::field("reason", "at most 500 characters"));
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
    params(("agent" = String, Path), ("period" = Option<String>, Query, description = "7d, 30d (default) or 90d")),
    responses(
        (status = 200, body = crate::autonomy::AutonomyReport),
        (status = 404, content_type = "application/problem+json"),
        (status = 422, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn autonomy(
    _: Admin,
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<crate::autonomy::AutonomyReport>, ApiError> {
    let agent = find_agent(&state, &agent)?;
    let period = match query.get("period") {
        Some(text) => text
            .parse::<Period>()
            .map_err(|e| ApiError::field("period", e))?,
        None => Period::Month,
    };
    let registry = state.registry.current();
    let report = crate::autonomy::report(
        state.engine.store().as_ref(),
        &agent,
        period,
        state.engine.clock().now(),
        registry.policies.autonomy(),
    )
    .await
    .map_err(|e| ApiError::from(crate::engine::EngineError::Store(e)))?;
    Ok(Json(report))
}
