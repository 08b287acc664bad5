//! Operations endpoints: health, readiness, metrics, OpenAPI, request ids.

use serde_json::Value;

use crate::both_backends;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, problem};

#[tokio::test]
async fn health_readiness_and_request_ids() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let id = health.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        app.readyz().await.1,
        "ready\ndatabase: ok\nredis: not configured\n"
    );
    // A caller's own request id is kept and echoed.
    let echoed = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_proposals_by_status() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    for _ in 0..3 {
        app.create(REVOPS, &discount_proposal()).await;
    }
    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(REVOPS, &format!("/v1/proposals/{id}/cancel"), None)
        .await;
    app.get(REVOPS, &id).await;

    let metrics = app.metrics().await;
    for expected in [
        "countersign_proposals{status=\"pending\"} 3",
        "countersign_proposals{status=\"cancelled\"} 1",
        "countersign_proposals{status=\"approved\"} 0",
        "countersign_http_requests_total{method=\"POST\",route=\"/v1/proposals\",status=\"201\"}",
        // The route template, not the raw path: ids do not become labels.
        "route=\"/v1/proposals/{id}\",status=\"200\"",
        "countersign_http_request_duration_seconds_bucket{",
        "countersign_write_batch_size",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    assert!(!metrics.contains(&id), "a proposal id leaked into labels");
}

#[tokio::test]
async fn openapi_describes_the_api() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/proposals",
        "/v1/proposals/{id}",
        "/v1/proposals/{id}/cancel",
        "/v1/proposals/{id}/outcome",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["ProposalRequest"]["properties"]["changes"].is_object(),
        "{schemas}"
    );
    assert!(schemas["Proposal"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The served document is the one generated from the code.
    assert_eq!(
        doc,
        serde_json::to_value(countersign::http::openapi()).unwrap()
    );
}

async fn api_and_worker_roles_split_the_work(db: TestDb) {
    use countersign::config::ServeRole;
    let mut api = crate::common::test_config(&db);
    api.serve_role = ServeRole::Api;
    let api = TestApp::start_with(api).await;
    let created = api.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();

    // A worker replica on the same database posts the card (to the sandbox it serves).
    let mut worker = crate::common::test_config(&db);
    worker.serve_role = ServeRole::Worker;
    let worker = TestApp::start_with(worker).await;
    worker
        .slack()
        .wait_for_card("C0FINANCE", id, "the card, posted by the worker", |_| true)
        .await;
    // The API replica posted nothing itself (it runs no outbox), though it was told first.
    let posted_by_api = api
        .slack()
        .calls()
        .await
        .iter()
        .filter(|c| c["method"] == "chat.postMessage")
        .count();
    assert_eq!(posted_by_api, 0);
    // The worker serves operations only.
    assert_eq!(worker.readyz().await.0, 200);
    let no_api = worker
        .http
        .get(worker.url(&format!("/v1/proposals/{id}")))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(no_api, 404).await["type"],
        "urn:countersign:problem:no-route"
    );
    api.stop().await.unwrap();
    worker.stop().await.unwrap();
}
both_backends!(api_and_worker_roles_split_the_work);

async fn each_queues_backlog_and_lag_are_exported(db: TestDb) {
    use countersign::clock::Clock;
    use countersign::config::ServeRole;
    // An API replica alone: what it accepts waits for a worker.
    let mut config = crate::common::test_config(&db);
    config.serve_role = ServeRole::Api;
    let api = TestApp::start_with(config).await;
    api.create(REVOPS, &discount_proposal()).await;
    let backlog = |queue: &str| format!("countersign_backlog{{queue=\"{queue}\"}}");
    let lag = |queue: &str| format!("countersign_backlog_oldest_seconds{{queue=\"{queue}\"}}");
    assert_eq!(api.metric(&backlog("slack")).await, Some(1.0), "the card");
    assert_eq!(api.metric(&backlog("timers")).await, Some(0.0));
    assert_eq!(api.metric(&backlog("callbacks")).await, Some(0.0));
    assert_eq!(api.metric(&lag("timers")).await, Some(0.0));

    // Sixteen minutes on: the card still waits, and the 15-minute reminder is a minute late.
    api.clock.advance(chrono::Duration::minutes(16));
    assert_eq!(api.metric(&lag("slack")).await, Some(960.0));
    assert_eq!(api.metric(&backlog("timers")).await, Some(1.0));
    assert_eq!(api.metric(&lag("timers")).await, Some(60.0));

    // A worker replica catches up; every replica reports the shared truth.
    let mut config = crate::common::test_config(&db);
    config.serve_role = ServeRole::Worker;
    let worker = TestApp::start_at(config, api.clock.now()).await;
    crate::common::eventually(
        std::time::Duration::from_secs(30),
        "the backlog done",
        || {
            let api = &api;
            async move {
                api.metric(&backlog("slack")).await == Some(0.0)
                    && api.metric(&backlog("timers")).await == Some(0.0)
            }
        },
    )
    .await;
    assert_eq!(api.metric(&lag("slack")).await, Some(0.0));
    api.stop().await.unwrap();
    worker.stop().await.unwrap();
}
both_backends!(each_queues_backlog_and_lag_are_exported);
