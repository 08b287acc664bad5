//! Long-polling a proposal (`GET …?wait=`): it returns when the proposal is decided, and a
//! waiter parked on it is counted and released.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::callbacks::{cancel, config};
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, problem};

async fn a_long_poll_returns_when_the_proposal_is_decided(db: TestDb) {
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = problem(
        app.http
            .get(app.url(&format!("/v1/proposals/{id}?wait=soon")))
            .bearer_auth(REVOPS)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(bad["field"], "wait");

    let poll = {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/v1/proposals/{id}?wait=60s")),
        );
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(REVOPS).send().await.unwrap();
            (Instant::now(), response.json::<Value>().await.unwrap())
        })
    };
    // Decided only once the poll is parked (it has joined the waiters).
    let deadline = Instant::now() + Duration::from_secs(10);
    while app_waiters(&app).await == 0 {
        assert!(Instant::now() < deadline, "the long-poll never parked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel(&app, &id).await;
    let decided_at = Instant::now();
    let (returned_at, body) = poll.await.unwrap();
    assert_eq!(body["status"], "cancelled");
    // Woken by the decision, not by the end of its 60 s wait.
    assert!(returned_at.duration_since(decided_at) < Duration::from_secs(5));
    // Already decided: answered at once.
    let at_once: Value = app
        .http
        .get(app.url(&format!("/v1/proposals/{id}?wait=60s")))
        .bearer_auth(REVOPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(at_once["status"], "cancelled");
    app.stop().await.unwrap();
}
both_backends!(a_long_poll_returns_when_the_proposal_is_decided);

/// How many proposals have a long-poll parked on them, from `/metrics`.
async fn app_waiters(app: &TestApp) -> u64 {
    app.metric("countersign_long_polls")
        .await
        .map_or(0, |v| v as u64)
}
