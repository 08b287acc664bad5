//! Operations endpoints: liveness, readiness, Prometheus metrics.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use super::api_doc::{Problem, Unavailable};
use crate::domain::Status;

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("countersign_write_batch_size".into()),
                        &batch,
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "`ok`", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers. The body's first line is `ready` (or why not); the lines
/// after it are the detail: the database, and Redis when configured — `degraded` means rate
/// limits, the Slack budget, dedup keys and caches are this process's own and other replicas'
/// decisions are seen by polling, which is not a reason to take the replica out of rotation.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: `ready`, then the detail", body = String),
        (status = 503, description = "Not ready (text: why, then the detail); or not answered in time (problem+json, `request-timeout`)",
            content((String = "text/plain"), (Problem = "application/problem+json"))),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let redis = match &state.redis {
        None => "redis: not configured",
        Some(redis) if redis.is_degraded() => "redis: degraded (local fallbacks in use)",
        Some(redis) if redis.is_unsubscribed() => "redis: connecting",
        Some(_) => "redis: ok",
    };
    match state.engine.ping().await {
        Ok(()) => (StatusCode::OK, format!("ready\ndatabase: ok\n{redis}\n")),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unreachable\ndatabase: unreachable\n{redis}\n"),
            )
        }
    }
}

/// Prometheus text format: request counts and latency by route and status, write batch sizes,
/// and, read from the database at scrape time so every replica reports the shared truth,
/// proposals by status and the background queues' backlog and lag.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 503, response = Unavailable),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    let mut text = state.metrics.render();
    match state.engine.count_by_status().await {
        Ok(counts) => {
            text.push_str("# HELP countersign_proposals Proposals by status.\n# TYPE countersign_proposals gauge\n");
            for status in Status::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                let _ = writeln!(
                    text,
                    "countersign_proposals{{status=\"{}\"}} {n}",
                    status.as_str()
                );
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot count proposals"),
    }
    let now = state.engine.clock().now();
    match state.engine.backlog(now).await {
        Ok(queues) => {
            text.push_str("# HELP countersign_backlog Background work due and not yet done, by queue (slack, timers, callbacks).\n# TYPE countersign_backlog gauge\n");
            for queue in &queues {
                let _ = writeln!(
                    text,
                    "countersign_backlog{{queue=\"{}\"}} {}",
                    queue.queue, queue.due
                );
            }
            text.push_str("# HELP countersign_backlog_oldest_seconds How long the oldest due row of each queue has waited (0 when none): the workers' lag.\n# TYPE countersign_backlog_oldest_seconds gauge\n");
            for queue in &queues {
                let lag = queue.oldest_due.map_or(0.0, |due| {
                    (now - due).num_milliseconds().max(0) as f64 / 1000.0
                });
                let _ = writeln!(
                    text,
                    "countersign_backlog_oldest_seconds{{queue=\"{}\"}} {lag}",
                    queue.queue
                );
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the queues' backlog"),
    }
    let _ = writeln!(
        text,
        "# HELP countersign_long_polls Proposals with a long-poll waiting on them in this process.\n# TYPE countersign_long_polls gauge\ncountersign_long_polls {}",
        state.engine.waiters().len()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
