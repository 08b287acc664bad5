//! Calling the agent back, against a local receiver: signed Standard Webhooks deliveries, retries
//! with the same id and fresh signatures, Retry-After, 410, redirects, timeouts, the SSRF guard
//! and the execution token. (A crash between decision and delivery: `callback_crash.rs`;
//! long-polling: `long_poll.rs`.)

use std::sync::Once;
use std::time::{Duration, Instant};

use countersign::callbacks::signature::{WebhookSecret, verify};
use countersign::clock::Clock;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, problem, test_config};
use crate::receiver::{Receiver, Reply};
use crate::slack_client::card_for;

/// The revops-crm agent's signing secret (its manifest names `REVOPS_CRM_WHSEC`).
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const ADMIN: &str = "admin-token-for-the-callback-tests";

pub(crate) fn set_secret() {
    static ONCE: Once = Once::new();
    // Set once, before any app reads it, to the same value for every test in this process.
    ONCE.call_once(|| unsafe { std::env::set_var("REVOPS_CRM_WHSEC", SECRET) });
}

pub(crate) fn config(db: &TestDb, allowlist: &str) -> countersign::config::Config {
    set_secret();
    let mut config = test_config(db);
    config.admin_token = Some(countersign::config::Secret::new(ADMIN.to_owned()));
    config.callback_allowlist = countersign::callbacks::ssrf::Allowlist::parse(allowlist).unwrap();
    config.callback_timeout = Duration::from_millis(500);
    config
}

pub(crate) fn proposal_calling(url: &str) -> Value {
    let mut proposal = discount_proposal();
    proposal["callback_url"] = json!(url);
    proposal
}

fn secrets() -> Vec<WebhookSecret> {
    vec![WebhookSecret::parse(SECRET).unwrap()]
}

/// Checks a request carries a valid signature for the app's clock now.
fn assert_signed(app: &TestApp, request: &crate::receiver::Received) {
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert_eq!(timestamp, app.clock.now().timestamp());
    let id = request.header("webhook-id");
    let signature = request.header("webhook-signature");
    assert!(
        verify(
            &secrets(),
            id,
            timestamp,
            &request.body,
            signature,
            timestamp
        ),
        "signature {signature} verifies"
    );
    assert!(readme_verify(
        SECRET,
        id,
        timestamp,
        &request.body,
        signature,
        timestamp
    ));
}

/// The README's Rust verification example, verbatim, so it stays right.
#[rustfmt::skip]
fn readme_verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str, now: i64) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{Hmac, Mac};
    use subtle::ConstantTimeEq;

    let Some(key) = secret.strip_prefix("whsec_").and_then(|k| STANDARD.decode(k).ok()) else { return false };
    if (now - timestamp).abs() > 300 { return false; }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header.split(' ').filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| bool::from(sig.as_bytes().ct_eq(expected.as_bytes())))
}

#[test]
fn the_readme_example_verifies_the_published_vector() {
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let (id, ts) = ("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553);
    let header = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert!(readme_verify(secret, id, ts, body, header, ts));
    assert!(!readme_verify(secret, id, ts, b"{}", header, ts));
    assert!(!readme_verify(secret, id, ts, body, header, ts + 301));
}

pub(crate) async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url(&format!("/v1/admin/proposals/{id}/deliveries")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["deliveries"].as_array().unwrap().clone()
}

/// Waits until the proposal's (only) delivery satisfies `check`. The attempt is recorded right
/// after the receiver answers, with nothing to subscribe to: this looks every 20 ms, bounded.
pub(crate) async fn delivery_where(
    app: &TestApp,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = deliveries(app, id).await;
        if let Some(found) = all.iter().find(|d| check(d)) {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no delivery as expected: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a proposal calling `url` back and cancels it (a decision): answers its id.
async fn cancelled_calling(app: &TestApp, url: &str) -> String {
    let created = app.create(REVOPS, &proposal_calling(url)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    cancel(app, &id).await;
    id
}

pub(crate) async fn cancel(app: &TestApp, id: &str) {
    let cancelled = app
        .post(
            REVOPS,
            &format!("/v1/proposals/{id}/cancel"),
            Some(&json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
}

async fn an_approval_is_delivered_signed_with_its_execution_token(db: TestDb) {
    let mut receiver = Receiver::start().await;
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let (id, card) = card_for(
        &app,
        REVOPS,
        &proposal_calling(&receiver.url("/hook")),
        "C0FINANCE",
    )
    .await;
    app.slack().click("U0FIN001", &card, "approve").await;

    let request = receiver.next().await;
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("webhook-id").starts_with("msg_"));
    assert_signed(&app, &request);
    let event = request.json();
    assert_eq!(event["type"], "proposal.decided");
    let data = &event["data"];
    assert_eq!(data["proposal_id"], json!(id));
    assert_eq!(data["status"], "approved");
    assert_eq!(data["action"], "crm.opportunity.update");
    assert_eq!(
        data["decided_by"],
        json!({"kind": "reviewer", "id": "U0FIN001"})
    );
    assert_eq!(data["votes"][0]["voter"], "U0FIN001");
    assert_eq!(data["votes"][0]["ballot"], "approve");
    assert_eq!(data["rules"], json!(["large-discount"]));
    assert_eq!(data["step_up"], "none");
    assert!(data["rejection_reason"].is_null());
    let token = data["execution_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cxt_"));
    let digest = data["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let delivered = delivery_where(&app, &id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["id"], request.header("webhook-id"));
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivered["attempts"][0]["status_code"], 204);

    // The token, presented with the outcome, is accepted once.
    let outcome = format!("/v1/proposals/{id}/outcome");
    let executed = json!({"result": "executed", "execution_token": token, "digest": digest});
    assert_eq!(
        app.post(REVOPS, &outcome, Some(&executed)).await.status(),
        200
    );
    let again = problem(app.post(REVOPS, &outcome, Some(&executed)).await, 409).await;
    assert!(again["detail"].as_str().unwrap().contains("already used"));
    let kinds: Vec<String> = db.audit_of(&id).await.into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"callback.delivered".to_owned()),
        "{kinds:?}"
    );
    app.stop().await.unwrap();
}
both_backends!(an_approval_is_delivered_signed_with_its_execution_token);

async fn a_failure_is_retried_with_the_same_id_and_a_fresh_signature(db: TestDb) {
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::status(500)]);
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let id = cancelled_calling(&app, &receiver.url("/hook")).await;
    let first = receiver.next().await;
    assert_eq!(first.json()["data"]["status"], "cancelled");
    assert_eq!(first.json()["data"]["reason"], "changed my mind");
    let retry = delivery_where(&app, &id, |d| d["attempts"].as_array().unwrap().len() == 1).await;
    assert_eq!(retry["status"], "pending");
    assert_eq!(retry["attempts"][0]["status_code"], 500);

    // The second attempt is due 5 s (plus jitter of at most 10%) later.
    app.clock.advance(chrono::Duration::milliseconds(5_600));
    let second = receiver.next().await;
    assert_eq!(second.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(second.body, first.body, "the same event, byte for byte");
    assert_ne!(
        second.header("webhook-timestamp"),
        first.header("webhook-timestamp")
    );
    assert_ne!(
        second.header("webhook-signature"),
        first.header("webhook-signature")
    );
    assert_signed(&app, &second);
    let done = delivery_where(&app, &id, |d| d["status"] == "delivered").await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);
    app.stop().await.unwrap();
}
both_backends!(a_failure_is_retried_with_the_same_id_and_a_fresh_signature);

async fn retry_after_is_honoured(db: TestDb) {
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::status(429).with_header("retry-after", "120")]);
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let id = cancelled_calling(&app, &receiver.url("/hook")).await;
    receiver.next().await;
    let waiting = delivery_where(&app, &id, |d| d["attempts"].as_array().unwrap().len() == 1).await;
    let attempted: chrono::DateTime<chrono::Utc> = waiting["attempts"][0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let next: chrono::DateTime<chrono::Utc> = waiting["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        next - attempted,
        chrono::Duration::seconds(120),
        "not the schedule's 5 s: {waiting:#}"
    );
    app.clock.advance(chrono::Duration::seconds(120));
    receiver.next().await;
    delivery_where(&app, &id, |d| d["status"] == "delivered").await;
    app.stop().await.unwrap();
}
both_backends!(retry_after_is_honoured);

async fn gone_stops_deliveries_until_redelivered(db: TestDb) {
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let url = receiver.url("/gone");
    let first = cancelled_calling(&app, &url).await;
    receiver.next().await;
    let failed = delivery_where(&app, &first, |d| d["status"] == "failed").await;
    assert!(failed["last_error"].as_str().unwrap().contains("410"));

    // The owner hears of it in Slack.
    app.slack()
        .wait_for("@U0REVOPS01", "U0REVOPS01", "the owner's DM", |messages| {
            messages
                .iter()
                .find(|m| m.text.contains("could not tell agent `revops-crm`"))
                .cloned()
        })
        .await;

    // Nothing more goes to that endpoint.
    let second = cancelled_calling(&app, &url).await;
    let stopped = delivery_where(&app, &second, |d| d["status"] == "failed").await;
    assert!(
        stopped["last_error"]
            .as_str()
            .unwrap()
            .contains("410 Gone earlier")
    );
    assert!(
        stopped["attempts"][0]["status_code"].is_null(),
        "no request was made"
    );
    assert_eq!(receiver.pending(), 0);

    // An operator redelivers: the block is lifted and the event goes out with its own id.
    let event = stopped["id"].as_str().unwrap();
    let response = app
        .http
        .post(app.url(&format!("/v1/admin/deliveries/{event}/redeliver")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let again = receiver.next().await;
    assert_eq!(again.header("webhook-id"), event);
    delivery_where(&app, &second, |d| d["status"] == "delivered").await;
    let unknown = app
        .http
        .post(app.url("/v1/admin/deliveries/msg_nope/redeliver"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    problem(unknown, 404).await;
    // The redelivery is in the trail, written with it; the unknown one changed nothing.
    let redelivered: Vec<(String, String)> = db
        .audit_of(&second)
        .await
        .into_iter()
        .filter(|e| e.kind == "callback.redelivered")
        .map(|e| (e.actor, e.data))
        .collect();
    assert_eq!(redelivered.len(), 1, "{redelivered:?}");
    assert_eq!(redelivered[0].0, "system:admin");
    assert!(redelivered[0].1.contains(event));
    app.stop().await.unwrap();
}
both_backends!(gone_stops_deliveries_until_redelivered);

async fn redirects_are_not_followed(db: TestDb) {
    let mut receiver = Receiver::start().await;
    let mut elsewhere = Receiver::start().await;
    receiver.script([Reply::status(302).with_header("location", elsewhere.url("/stolen"))]);
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let id = cancelled_calling(&app, &receiver.url("/hook")).await;
    receiver.next().await;
    let attempted =
        delivery_where(&app, &id, |d| !d["attempts"].as_array().unwrap().is_empty()).await;
    let error = attempted["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("redirect") && error.contains("not followed"),
        "{error}"
    );
    assert_eq!(
        attempted["attempts"][0]["status_code"], 302,
        "the status is kept"
    );
    assert_eq!(attempted["status"], "pending", "retried on the schedule");
    assert_eq!(
        elsewhere.pending(),
        0,
        "the redirect target was never called"
    );
    app.stop().await.unwrap();
}
both_backends!(redirects_are_not_followed);

async fn a_slow_endpoint_times_out_without_holding_up_others(db: TestDb) {
    let mut slow = Receiver::start().await;
    let mut fast = Receiver::start().await;
    slow.script([Reply::status(204).after(Duration::from_secs(5))]);
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let slow_id = cancelled_calling(&app, &slow.url("/slow")).await;
    slow.next().await;
    // The slow one is still hanging when the fast one is decided and delivered.
    let fast_id = cancelled_calling(&app, &fast.url("/fast")).await;
    fast.next().await;
    delivery_where(&app, &fast_id, |d| d["status"] == "delivered").await;
    let timed_out = delivery_where(&app, &slow_id, |d| {
        !d["attempts"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(timed_out["attempts"][0]["error"], "no answer within 500ms");
    assert_eq!(timed_out["status"], "pending");
    app.stop().await.unwrap();
}
both_backends!(a_slow_endpoint_times_out_without_holding_up_others);

async fn private_and_disguised_addresses_are_refused(db: TestDb) {
    let mut receiver = Receiver::start().await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    // Only 127.0.0.1 is allowlisted, as in every test; the rest must be refused.
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    for (url, reason) in [
        ("http://10.0.0.7/hook".to_owned(), "10.0.0.7 is private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "cloud metadata",
        ),
        ("http://[::ffff:10.0.0.7]/hook".to_owned(), "private"),
        (
            "http://[::ffff:169.254.169.254]/".to_owned(),
            "cloud metadata",
        ),
        (format!("http://[::1]:{port}/hook"), "loopback"),
        ("http://100.64.0.1/hook".to_owned(), "carrier-grade NAT"),
    ] {
        let id = cancelled_calling(&app, &url).await;
        let refused = delivery_where(&app, &id, |d| d["status"] == "failed").await;
        let error = refused["last_error"].as_str().unwrap();
        assert!(
            error.contains("refused") && error.contains(reason),
            "{url}: {error}"
        );
    }
    // A host name resolving only to loopback is refused where it is resolved — for good and in
    // the same words as the literal, not retried with the HTTP client's long error — here
    // without an allowlist.
    app.stop().await.unwrap();
    let app = TestApp::start_with(config(&db, "")).await;
    let id = app
        .create(
            REVOPS,
            &proposal_calling(&format!("http://localhost:{port}/hook")),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cancel(&app, &id).await;
    let refused = delivery_where(&app, &id, |d| d["status"] == "failed").await;
    assert_eq!(refused["attempts"].as_array().unwrap().len(), 1);
    let error = refused["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("refused: callback URL host localhost") && error.contains("loopback"),
        "{error}"
    );
    assert!(error.len() < 200, "short: {error}");
    assert_eq!(receiver.pending(), 0, "nothing reached the receiver");

    // Not http(s): refused when proposed.
    let ftp = problem(
        app.submit(REVOPS, &proposal_calling("ftp://files.example/drop"))
            .await,
        422,
    )
    .await;
    assert_eq!(ftp["field"], "callback_url");
    app.stop().await.unwrap();
}
both_backends!(private_and_disguised_addresses_are_refused);

async fn an_expiry_is_told_to_the_agent(db: TestDb) {
    let mut receiver = Receiver::start().await;
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    let mut proposal = proposal_calling(&receiver.url("/hook"));
    proposal["expires_in"] = json!("10m");
    let id = app.create(REVOPS, &proposal).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(chrono::Duration::minutes(10));
    let told = receiver.next().await.json();
    assert_eq!(told["data"]["proposal_id"], json!(id));
    assert_eq!(told["data"]["status"], "expired");
    assert_eq!(
        told["data"]["decided_by"],
        json!({"kind": "system", "id": "sla"})
    );
    assert_eq!(told["data"]["reason"], "nobody decided in time");
    assert!(told["data"]["execution_token"].is_null());
    app.stop().await.unwrap();
}
both_backends!(an_expiry_is_told_to_the_agent);

/// The deliveries of a proposal that does not exist are a 404 (problem+json), as on the agent
/// API, not an empty list; a real proposal with none owed is an empty list.
async fn deliveries_of_an_unknown_proposal_are_not_found(db: TestDb) {
    let app = TestApp::start_with(config(&db, "127.0.0.1")).await;
    for unknown in ["prop_01JDNOSUCHPROPOSAL0000000", "not-an-id"] {
        let response = app
            .http
            .get(app.url(&format!("/v1/admin/proposals/{unknown}/deliveries")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{unknown}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let created = app
        .create(REVOPS, &crate::common::discount_proposal())
        .await;
    assert_eq!(
        deliveries(&app, created["id"].as_str().unwrap()).await,
        Vec::<Value>::new()
    );
    app.stop().await.unwrap();
}
both_backends!(deliveries_of_an_unknown_proposal_are_not_found);
