//! What replicas share through Redis, with two apps on one database: a decision on one ends a
//! long-poll on the other (pub/sub wake-ups, and polling while Redis is away); one Slack budget
//! (per method, per channel) and the pauses Slack's 429s put on it; dedup keys seen by every
//! replica.

use std::sync::Arc;
use std::time::Duration;

use countersign::clock::ManualClock;
use countersign::cluster::{RedisLink, SeenKeys};
use countersign::slack::SlackBudget;
use countersign::slack::tiers::Tier;
use serde_json::Value;

use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, start_time};
use crate::redis_support::{Proxy, REDIS, redis_available, redis_config};

fn prefix(test: &str) -> String {
    format!("cs_test_{test}_{}:", ulid::Ulid::new())
}

/// Waits until the app's `/readyz` detail says `redis: <state>`.
async fn redis_becomes(app: &TestApp, state: &str) {
    let line = format!("redis: {state}");
    let became = tokio::time::timeout(Duration::from_secs(20), async {
        while !app.readyz().await.1.lines().any(|l| l.starts_with(&line)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if became.is_err() {
        panic!("redis never became {state}: {}", app.readyz().await.1);
    }
}

/// Waits until the app has `n` long-polls parked.
async fn long_polls_parked(app: &TestApp, n: u32) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while app.metric("countersign_long_polls").await != Some(f64::from(n)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the long-poll never parked");
}

/// Submits on `a`, long-polls (60 s) on `b`, cancels on `a`: answers what `b`'s poll returned.
async fn decided_elsewhere(a: &TestApp, b: &TestApp) -> Value {
    let id = a.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll = {
        let request = b
            .http
            .get(b.url(&format!("/v1/proposals/{id}?wait=60s")))
            .bearer_auth(REVOPS);
        tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    long_polls_parked(b, 1).await;
    let cancelled = a
        .post(REVOPS, &format!("/v1/proposals/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status(), 200);
    // Far less than the poll's 60 s: it ends when the other replica decides, or not at all.
    tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long-poll on the other replica was not woken")
        .unwrap()
}

async fn a_decision_on_one_replica_ends_a_long_poll_on_another(db: TestDb) {
    if !redis_available().await {
        return;
    }
    let prefix = prefix("wake");
    let redis = format!("redis://{REDIS}/");
    let a = TestApp::start_with(redis_config(&db, &redis, &prefix)).await;
    let b = TestApp::start_with(redis_config(&db, &redis, &prefix)).await;
    redis_becomes(&a, "ok").await;
    redis_becomes(&b, "ok").await;
    let answer = decided_elsewhere(&a, &b).await;
    assert_eq!(answer["status"], "cancelled");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
crate::both_backends!(a_decision_on_one_replica_ends_a_long_poll_on_another);

async fn without_redis_a_long_poll_still_sees_another_replicas_decision(db: TestDb) {
    if !redis_available().await {
        return;
    }
    let prefix = prefix("wake_cut");
    let mut proxy = Proxy::start().await;
    let a = TestApp::start_with(redis_config(&db, &proxy.url(), &prefix)).await;
    let b = TestApp::start_with(redis_config(&db, &proxy.url(), &prefix)).await;
    redis_becomes(&b, "ok").await;

    // Redis dies: both replicas keep serving, say so, and long-polls fall back to re-reading.
    proxy.cut();
    redis_becomes(&b, "degraded").await;
    assert!(b.readyz().await.1.starts_with("ready\n"), "still ready");
    let answer = decided_elsewhere(&a, &b).await;
    assert_eq!(answer["status"], "cancelled");

    // Back: the subscription returns by itself and wake-ups flow again.
    proxy.restore().await;
    redis_becomes(&a, "ok").await;
    redis_becomes(&b, "ok").await;
    let answer = decided_elsewhere(&a, &b).await;
    assert_eq!(answer["status"], "cancelled");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
crate::both_backends!(without_redis_a_long_poll_still_sees_another_replicas_decision);

#[tokio::test]
async fn replicas_spend_from_one_slack_budget_and_honour_each_others_pauses() {
    if !redis_available().await {
        return;
    }
    let prefix = prefix("budget");
    let link = || RedisLink::new(&format!("redis://{REDIS}/"), &prefix).unwrap();
    let clock = ManualClock::new(start_time());
    let replica = || SlackBudget::new(Arc::new(clock.clone()), Some(link()));
    let (a, b) = (replica(), replica());
    let none = Duration::ZERO;
    let ok = Ok(Duration::ZERO);
    let wait = |ms| Err(Duration::from_millis(ms));

    // A channel's burst of three, whichever replica posts.
    let channel = Tier::PerChannel.ours();
    assert_eq!(a.take("T1:channel:C1", channel, none).await, ok);
    assert_eq!(b.take("T1:channel:C1", channel, none).await, ok);
    assert_eq!(a.take("T1:channel:C1", channel, none).await, ok);
    assert_eq!(b.take("T1:channel:C1", channel, none).await, wait(1000));
    assert_eq!(
        a.take("T1:channel:C2", channel, none).await,
        ok,
        "another channel"
    );
    clock.advance(chrono::Duration::milliseconds(500));
    assert_eq!(a.take("T1:channel:C1", channel, none).await, wait(500));
    // One that may wait half a second reserves the next post; nobody else gets it.
    assert_eq!(
        b.take("T1:channel:C1", channel, Duration::from_millis(500))
            .await,
        Ok(Duration::from_millis(500))
    );
    assert_eq!(a.take("T1:channel:C1", channel, none).await, wait(1500));

    // Slack answered one replica 429 for chat.update: the other sends none before Retry-After.
    let tier = Tier::Three.ours();
    assert_eq!(b.take("T1:method:chat.update", tier, none).await, ok);
    a.pause(
        "T1:method:chat.update",
        tier,
        a.now(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        b.take("T1:method:chat.update", tier, none).await,
        wait(30_000)
    );
    clock.advance(chrono::Duration::seconds(30));
    assert_eq!(b.take("T1:method:chat.update", tier, none).await, ok);
    // After a pause: that one call, then the tier's pace (1.2 s), not the rest of a burst.
    assert_eq!(
        a.take("T1:method:chat.update", tier, none).await,
        wait(1200)
    );
    // Budgets are per workspace.
    assert_eq!(a.take("T2:method:chat.update", tier, none).await, ok);
}

#[tokio::test]
async fn a_delivery_seen_by_one_replica_is_a_repeat_on_another() {
    if !redis_available().await {
        return;
    }
    let prefix = prefix("seen");
    let link = || RedisLink::new(&format!("redis://{REDIS}/"), &prefix).unwrap();
    let (a, b) = (SeenKeys::new(Some(link())), SeenKeys::new(Some(link())));
    let ttl = Duration::from_secs(60);
    assert!(a.first_time("envelope:1", ttl).await);
    assert!(!b.first_time("envelope:1", ttl).await);
    assert!(!a.first_time("envelope:1", ttl).await);
    assert!(b.first_time("envelope:2", ttl).await);
}
