//! The agent API from the outside: authentication, validation, idempotency, reads.

use countersign::clock::Clock;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, discount_proposal, problem};

async fn submit_then_read_back(db: TestDb) {
    let app = TestApp::start(&db).await;
    let response = app.submit(REVOPS, &discount_proposal()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();

    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("prop_"), "{id}");
    assert_eq!(location, format!("/v1/proposals/{id}"));
    assert_eq!(created["status"], "pending");
    assert_eq!(created["agent"], "revops-crm");
    assert_eq!(created["verdict"]["outcome"], "needs_review");
    assert_eq!(created["verdict"]["route"], json!(["finance"]));
    assert_eq!(created["verdict"]["rules"], json!(["large-discount"]));
    assert_eq!(created["verdict"]["sla"], "30m");
    assert_eq!(created["verdict"]["on_timeout"], "expire");
    assert_eq!(created["changes"][1]["after"], 40500);
    assert_eq!(created["expires_at"], "2026-11-21T17:00:00Z");
    assert_eq!(
        created["links"]["self"],
        app.url(&format!("/v1/proposals/{id}"))
    );

    let read: Value = app.get(REVOPS, id).await.json().await.unwrap();
    assert_eq!(read, created);

    // Times come from the injected clock.
    assert_eq!(created["created_at"], "2026-11-21T09:00:00Z");
    app.clock.advance(chrono::Duration::minutes(90));
    let later = app.create(REVOPS, &discount_proposal()).await;
    assert_eq!(later["created_at"], "2026-11-21T10:30:00Z");
}
both_backends!(submit_then_read_back);

async fn another_agents_proposal_is_not_found(db: TestDb) {
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();

    problem(app.get(BILLING, id).await, 404).await;
    problem(
        app.post(BILLING, &format!("/v1/proposals/{id}/cancel"), None)
            .await,
        404,
    )
    .await;
    // Unknown and malformed ids look the same as someone else's.
    problem(
        app.get(REVOPS, "prop_01jd0000000000000000000000").await,
        404,
    )
    .await;
    problem(app.get(REVOPS, "prop_..%2F..%2Fetc").await, 404).await;
    // Paths that match no route are problem+json too.
    problem(app.get(REVOPS, "../../etc/passwd").await, 404).await;
    // The owner still sees it pending: the refused cancel changed nothing.
    let read: Value = app.get(REVOPS, id).await.json().await.unwrap();
    assert_eq!(read["status"], "pending");

    // Both refusals named a real proposal, so both are in the audit trail.
    let events = db.audit_of(id).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("proposal.submitted", "agent:revops-crm"),
            ("request.refused", "agent:billing"),
            ("request.refused", "agent:billing"),
        ]
    );
}
both_backends!(another_agents_proposal_is_not_found);

async fn bad_tokens_are_refused(db: TestDb) {
    let app = TestApp::start(&db).await;
    for token in [
        "cs_wrong",
        "",
        "cs_demo_revops_crm_d3m0t0k3",
        "cs_demo_revops_crm_d3m0t0k3nX",
    ] {
        let response = app.submit(token, &discount_proposal()).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body = problem(response, 401).await;
        assert_eq!(body["type"], "urn:countersign:problem:unauthorized");
    }
    let response = app
        .http
        .post(app.url("/v1/proposals"))
        .json(&discount_proposal())
        .send()
        .await
        .unwrap();
    problem(response, 401).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("countersign_proposals{status=\"pending\"} 0"),
        "{metrics}"
    );
}
both_backends!(bad_tokens_are_refused);

#[tokio::test]
async fn oversized_bodies_get_413() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let mut body = discount_proposal();
    body["metadata"] = json!({"blob": "x".repeat(300 * 1024)});
    let problem = problem(app.submit(REVOPS, &body).await, 413).await;
    assert_eq!(problem["type"], "urn:countersign:problem:payload-too-large");
    assert_eq!(problem["limit"], 262144);

    // Without Content-Length (chunked), the limit still holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..300).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = app
        .http
        .post(app.url("/v1/proposals"))
        .bearer_auth(REVOPS)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    crate::common::problem(response, 413).await;
}

async fn invalid_fields_are_named(db: TestDb) {
    let app = TestApp::start(&db).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"action": "crm.opportunity.update"}), "summary"),
        (
            json!({"action": "crm.opportunity.update", "summary": 5}),
            "summary",
        ),
        (json!({"action": "Not An Action", "summary": "x"}), "action"),
        (
            json!({"action": "a.b", "summary": "x", "callback_url": "ftp://example.com/x"}),
            "callback_url",
        ),
        (
            json!({"action": "a.b", "summary": "x", "target": {"system": "s", "type": "t", "id": "1", "url": "javascript:alert(1)"}}),
            "target.url",
        ),
        (
            json!({"action": "a.b", "summary": "x", "changes": [{"path": "a", "after": 1}, {"path": ""}]}),
            "changes[1].path",
        ),
        (
            json!({"action": "a.b", "summary": "x", "data_classes": ["pii", "gossip"]}),
            "data_classes[1]",
        ),
        (
            json!({"action": "a.b", "summary": "x", "expires_in": "forever"}),
            "expires_in",
        ),
        (
            json!({"action": "a.b", "summary": "x", "sumary": "typo"}),
            "sumary",
        ),
        (
            json!({"action": "a.b", "summary": "x".repeat(301)}),
            "summary",
        ),
        (
            json!({"action": "a.b", "summary": "x", "changes": vec![json!({"path": "a", "after": 1}); 10_001]}),
            "changes",
        ),
    ];
    for (body, field) in cases {
        let problem = problem(app.submit(REVOPS, &body).await, 422).await;
        assert_eq!(problem["type"], "urn:countersign:problem:invalid-field");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(problem["errors"][0]["message"].is_string());
    }
    // An IPv6 literal without brackets is named as such, not as "invalid port number".
    let body = json!({"action": "a.b", "summary": "x", "callback_url": "http://fd00::1/hook"});
    let unbracketed = problem(app.submit(REVOPS, &body).await, 422).await;
    assert_eq!(unbracketed["field"], "callback_url");
    let message = unbracketed["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("http://[fd00::1]/"), "{message}");
    // Not JSON at all is a 400.
    let response = app
        .http
        .post(app.url("/v1/proposals"))
        .bearer_auth(REVOPS)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let problem = problem(response, 400).await;
    assert_eq!(problem["type"], "urn:countersign:problem:invalid-json");
    // A bad Idempotency-Key header is named too.
    let response = app
        .http
        .post(app.url("/v1/proposals"))
        .bearer_auth(REVOPS)
        .header("idempotency-key", "x".repeat(300))
        .json(&discount_proposal())
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::common::problem(response, 422).await["field"],
        "Idempotency-Key"
    );

    // Nothing of all that was stored.
    let store = db.store().await;
    assert!(store.count_by_status().await.unwrap().is_empty());
    let events = store.audit_page(&Default::default(), 0, 10).await.unwrap();
    assert!(events.is_empty(), "{events:?}");
}
both_backends!(invalid_fields_are_named);

async fn idempotency_keys_replay_or_conflict(db: TestDb) {
    let app = TestApp::start(&db).await;
    let send = |token: &'static str, key: &'static str, body: Value| {
        let request = app
            .http
            .post(app.url("/v1/proposals"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = send(REVOPS, "key-1", discount_proposal()).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same body, even re-serialised with another key order, replays the original answer.
    let reordered: Value =
        serde_json::from_str(&serde_json::to_string(&discount_proposal()).unwrap()).unwrap();
    let again = send(REVOPS, "key-1", reordered).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);

    // The original answer stays the original even after the proposal moved on.
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        app.post(REVOPS, &format!("/v1/proposals/{id}/cancel"), None)
            .await
            .status(),
        200
    );
    let later: Value = send(REVOPS, "key-1", discount_proposal())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["status"], "pending");

    let mut other = discount_proposal();
    other["summary"] = json!("Apply 20% discount to Acme renewal");
    let conflict = problem(send(REVOPS, "key-1", other).await, 409).await;
    assert_eq!(
        conflict["type"],
        "urn:countersign:problem:idempotency-key-reused"
    );

    // Keys belong to one agent: another agent may use the same key.
    let mut refund = discount_proposal();
    refund["action"] = json!("billing.refund");
    assert_eq!(send(BILLING, "key-1", refund).await.status(), 201);

    // Concurrent retries with one key create one proposal.
    let tasks: Vec<_> = (0..8)
        .map(|_| send(REVOPS, "key-2", discount_proposal()))
        .collect();
    let answers = futures_util::future::join_all(tasks).await;
    let mut ids = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 201);
        ids.push(
            answer.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let store = db.store().await;
    // The refused reuse is in the audit trail, against the proposal the key belongs to.
    let kinds: Vec<String> = db.audit_of(id).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "proposal.submitted",
            "proposal.cancelled",
            "request.refused"
        ]
    );

    let total: i64 = store
        .count_by_status()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, 3);
}
both_backends!(idempotency_keys_replay_or_conflict);

#[tokio::test]
async fn idempotency_keys_are_kept_a_day_then_purged() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let app = TestApp::start(&db).await;
    let send = |body: Value| {
        let request = app
            .http
            .post(app.url("/v1/proposals"))
            .bearer_auth(REVOPS)
            .header("idempotency-key", "daily")
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(send(discount_proposal()).await.status(), 201);

    // A day later the purge (as the app runs it) keeps the key, and a retry is a replay.
    app.clock.advance(chrono::Duration::hours(24));
    let purged =
        countersign::app::purge_idempotency_keys_once(store.as_ref(), app.clock.now()).await;
    assert_eq!(purged.unwrap(), 0);
    let retry = send(discount_proposal()).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");

    // Past the retention the key is forgotten: the same key now starts a new proposal.
    app.clock
        .advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    let purged =
        countersign::app::purge_idempotency_keys_once(store.as_ref(), app.clock.now()).await;
    assert_eq!(purged.unwrap(), 1);
    let mut other = discount_proposal();
    other["summary"] = json!("A new proposal under an old key");
    let fresh = send(other).await;
    assert_eq!(fresh.status(), 201);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn every_error_is_problem_json() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let wrong_method = app
        .http
        .delete(app.url("/v1/proposals/prop_01jd0000000000000000000000"))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(wrong_method, 405).await["type"],
        "urn:countersign:problem:method-not-allowed"
    );
    let list = app
        .http
        .get(app.url("/v1/proposals"))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap();
    problem(list, 405).await;
    let not_utf8 = app
        .http
        .get(app.url("/v1/proposals/%FF"))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap();
    problem(not_utf8, 404).await;
    // A duplicated key is refused whether or not an idempotency key came with it.
    let duplicated = r#"{"action":"crm.opportunity.update","summary":"x","summary":"y"}"#;
    for key in [None, Some("dup")] {
        let mut request = app
            .http
            .post(app.url("/v1/proposals"))
            .bearer_auth(REVOPS)
            .body(duplicated);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = problem(request.send().await.unwrap(), 422).await;
        assert_eq!(body["field"], "summary", "{body}");
    }
}
