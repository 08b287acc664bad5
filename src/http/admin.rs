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
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deliveries>, ApiError> {
    let Ok(id) = crate::domain::ProposalId::parse(&id) else {
        return Ok(Json(Deliveries { deliveries: vec![] }));
    };
    let deliveries = state
        .engine
        .store()
        .webhook_events(&id)
        .await
        .map_err(|e| ApiError::from(crate::engine::EngineError::Store(e)))?;
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
