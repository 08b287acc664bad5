//! HTTP: the agent API, operations endpoints and the OpenAPI document. Handlers translate
//! between HTTP and the engine; they hold no business rules.

mod admin;
mod api_doc;
mod auth;
mod body;
mod diff_page;
pub mod html;
mod ops;
pub mod problem;
mod proposals;
mod serve;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use body::BODY_LIMIT;
pub use ops::metrics_handle as ops_metrics_handle;
pub use serve::{REQUEST_TIMEOUT, ServeLimits, serve};

use crate::engine::Engine;
use crate::registry::SharedRegistry;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub registry: SharedRegistry,
    pub public_url: url::Url,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub slack: crate::slack::SlackContext,
    pub links: crate::links::LinkSigner,
    /// Bearer token of the admin API; `None`: the admin API is off.
    pub admin_token: Option<crate::config::Secret>,
    /// Per-agent proposal rate limits.
    pub limiter: std::sync::Arc<crate::limits::RateLimiter>,
    /// Wakes the report worker when a report is asked for.
    pub reports: std::sync::Arc<tokio::sync::Notify>,
    /// Redis, when configured (its health is part of `/readyz`'s detail).
    pub redis: Option<crate::cluster::RedisLink>,
    /// Deliveries already handled (Socket Mode envelopes, retried interactions).
    pub seen: std::sync::Arc<crate::cluster::SeenKeys>,
}

/// Slack's handlers get Slack's part of the state.
impl axum::extract::FromRef<AppState> for crate::slack::SlackState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            engine: state.engine.clone(),
            registry: state.registry.clone(),
            slack: state.slack.clone(),
            reports: state.reports.clone(),
            seen: state.seen.clone(),
        }
    }
}

/// The routes with their OpenAPI description, which is generated from the handlers' annotations.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(api_doc::ApiDoc::openapi())
        .routes(routes!(proposals::create))
        .routes(routes!(proposals::get))
        .routes(routes!(proposals::cancel))
        .routes(routes!(proposals::outcome))
        .routes(routes!(admin::sla_report))
        .routes(routes!(admin::deliveries))
        .routes(routes!(admin::redeliver))
        .routes(routes!(
            admin::agent_controls,
            admin::narrow_agent,
            admin::resume_agent
        ))
        .routes(routes!(admin::autonomy))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts()
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    api_doc::finish(api().1)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A worker replica's HTTP: the operations endpoints (and the sandbox it posts to, if any).
pub fn ops_router(state: AppState, sandbox: Option<&crate::sandbox::Sandbox>) -> Router {
    let mut routes = Router::new()
        .route("/healthz", axum::routing::get(ops::healthz))
        .route("/readyz", axum::routing::get(ops::readyz))
        .route("/metrics", axum::routing::get(ops::metrics));
    if let Some(sandbox) = sandbox {
        routes = routes.merge(sandbox.routes());
    }
    routes
        .fallback(|| async { problem::ApiError::NoRoute })
        .layer(middleware::from_fn(serve::time_limit))
        .with_state(state)
}

/// The whole HTTP application; with a sandbox, its routes too (they exist only then).
pub fn router(state: AppState, sandbox: Option<&crate::sandbox::Sandbox>) -> Router {
    let (routes, doc) = api();
    let doc = std::sync::Arc::new(api_doc::finish(doc));
    let mut routes = routes.route("/p/{id}", axum::routing::get(diff_page::show));
    // Without a signing secret (Socket Mode only) nothing can arrive on `/slack/*`.
    if state.slack.signing_secret.is_some() {
        routes = routes.merge(crate::slack::routes());
    }
    if let Some(sandbox) = sandbox {
        routes = routes.merge(sandbox.routes());
    }
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { problem::ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { problem::ApiError::MethodNotAllowed })
        // Inside the metrics: a request cut off is counted, with its 503.
        .layer(middleware::from_fn(serve::time_limit))
        .layer(middleware::from_fn(track_metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                })
                // The access log is debug: at info, each proposal already logs one line.
                .on_response(|response: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(status = response.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "served");
                }),
        )
        // Outermost: every request has an id before it is traced; the id is echoed back.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Counts requests and their latency by route template (not raw path, so ids do not explode
/// the label space) and status.
async fn track_metrics(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("countersign_http_requests_total", &labels).increment(1);
    metrics::histogram!("countersign_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
