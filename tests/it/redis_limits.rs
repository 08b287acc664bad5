//! Rate limits shared through Redis (the real server on 127.0.0.1:6379, reached through a proxy
//! the test can cut): two replicas share one bucket; with Redis gone countersign keeps answering
//! with its own counters, says so in /metrics, and returns to Redis when it is back.

use std::time::{Duration, Instant};

use crate::common::{OUTBOUND, TestApp, TestDb, email_draft, problem};
use crate::redis_support::{Proxy, REDIS, redis_available, redis_config};

/// `countersign_redis_degraded` for this app's key prefix (the recorder is shared by every app in
/// the test process; the label keeps them apart).
async fn degraded(app: &TestApp, prefix: &str) -> Option<f64> {
    app.metric(&format!(
        "countersign_redis_degraded{{prefix=\"{prefix}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_bucket() {
    if !redis_available().await {
        return;
    }
    let prefix = format!("cs_test_{}:", ulid::Ulid::new());
    let (db_a, db_b) = (TestDb::sqlite(), TestDb::sqlite());
    let a = TestApp::start_with(redis_config(&db_a, &format!("redis://{REDIS}/"), &prefix)).await;
    let b = TestApp::start_with(redis_config(&db_b, &format!("redis://{REDIS}/"), &prefix)).await;
    // outbound-email: 5 at once, then 30 a minute — across both replicas together.
    for app in [&a, &b, &a, &b, &a] {
        assert_eq!(app.submit(OUTBOUND, &email_draft()).await.status(), 201);
    }
    let limited = problem(b.submit(OUTBOUND, &email_draft()).await, 429).await;
    assert_eq!(limited["type"], "urn:countersign:problem:rate-limited");
    assert_eq!(degraded(&a, &prefix).await, Some(0.0));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_limits_are_local_until_it_returns() {
    if !redis_available().await {
        return;
    }
    let mut proxy = Proxy::start().await;
    let prefix = format!("cs_test_{}:", ulid::Ulid::new());
    let db = TestDb::sqlite();
    let app = TestApp::start_with(redis_config(&db, &proxy.url(), &prefix)).await;
    for _ in 0..5 {
        assert_eq!(app.submit(OUTBOUND, &email_draft()).await.status(), 201);
    }
    problem(app.submit(OUTBOUND, &email_draft()).await, 429).await;

    // Redis goes away: requests are still answered, with this process's own buckets (fresh: the
    // agent gets its burst again here), and the degradation is exported.
    proxy.cut();
    let started = Instant::now();
    assert_eq!(app.submit(OUTBOUND, &email_draft()).await.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead Redis does not stall requests"
    );
    assert_eq!(degraded(&app, &prefix).await, Some(1.0));

    // Redis is back: the next calls use it again (the connection comes back by itself).
    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        app.clock.advance(chrono::Duration::seconds(2));
        let status = app.submit(OUTBOUND, &email_draft()).await.status();
        assert!(status == 201 || status == 429, "{status}");
        if degraded(&app, &prefix).await == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.unwrap();
}

/// The rate-limit and flood tests of `controls.rs`, with their counters in Redis.
async fn in_redis(test: &str) -> Option<(String, String)> {
    redis_available().await.then(|| {
        (
            format!("redis://{REDIS}/"),
            format!("cs_test_{test}_{}:", ulid::Ulid::new()),
        )
    })
}

async fn rate_limited_in_redis(db: TestDb) {
    if let Some(redis) = in_redis("rate").await {
        crate::controls::rate_limited_with(db, Some(redis)).await;
    }
}
crate::both_backends!(rate_limited_in_redis);

async fn flood_in_redis(db: TestDb) {
    if let Some(redis) = in_redis("flood").await {
        crate::controls::flood_with(db, Some(redis)).await;
    }
}
crate::both_backends!(flood_in_redis);
