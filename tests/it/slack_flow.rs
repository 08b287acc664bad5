//! End to end through the built-in sandbox over real HTTP: proposals become cards in role
//! channels, within Slack's limits and pace, through restarts; Slack's endpoints are signed.

use countersign::domain::{Proposal, Status};
use countersign::sandbox::blockkit;
use countersign::store::Command;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, discount_proposal, problem, test_config};
use crate::slack_client::{is_pending, large_payment, status_of};

async fn cards_reach_every_routed_role_channel(db: TestDb) {
    let app = TestApp::start(&db).await;
    let discount = app.create(REVOPS, &discount_proposal()).await;
    let payment = app.create(BILLING, &large_payment()).await;
    let (discount, payment) = (
        discount["id"].as_str().unwrap(),
        payment["id"].as_str().unwrap(),
    );
    let slack = app.slack();

    let card = slack
        .wait_for_card("C0FINANCE", discount, "the discount card", is_pending)
        .await;
    let seen = card.visible_text();
    assert!(
        seen.contains("Apply 15% discount to Acme renewal"),
        "{seen}"
    );
    assert!(
        seen.contains("large-discount"),
        "the rule that routed it: {seen}"
    );
    assert_eq!(blockkit::message_blocks(&card.blocks), Ok(()));
    // The payment needs finance and legal: one card in each channel.
    slack
        .wait_for_card("C0FINANCE", payment, "the payment card", is_pending)
        .await;
    slack
        .wait_for_card("C0LEGAL", payment, "the payment card", is_pending)
        .await;
    assert!(
        slack
            .messages("C0LEGAL", "U0LEG001")
            .await
            .iter()
            .all(|m| m.proposal_id().as_deref() != Some(discount))
    );

    let posts: Vec<Value> = slack
        .calls()
        .await
        .into_iter()
        .filter(|c| c["method"] == "chat.postMessage")
        .collect();
    assert_eq!(posts.len(), 3, "one post per routed role: {posts:#?}");
    assert!(posts.iter().all(|c| c["response"]["ok"] == true));
    app.stop().await.unwrap();
}
both_backends!(cards_reach_every_routed_role_channel);

async fn a_card_owed_before_a_restart_is_posted_after_it(db: TestDb) {
    // The proposal and its outbox row are committed, but no countersign ran to post the card
    // (as if it crashed right after the commit).
    let store = db.store().await;
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    // Its card posted before the stop (one still owed would be due again later, and the
    // channel's later cards would wait for it).
    app.slack()
        .wait_for_card(
            "C0FINANCE",
            created["id"].as_str().unwrap(),
            "the first card",
            is_pending,
        )
        .await;
    app.stop().await.unwrap();
    let mut proposal: Proposal = serde_json::from_value(created).unwrap();
    proposal.id = countersign::domain::ProposalId::generate();
    proposal.status = Status::Pending;
    let submit = Command::Submit {
        proposal: Box::new(proposal.clone()),
        idempotency: None,
        card_channels: Default::default(),
    };
    store
        .apply(vec![submit], proposal.created_at)
        .await
        .unwrap();

    let app = TestApp::start_with(test_config(&db)).await;
    let id = proposal.id.to_string();
    app.slack()
        .wait_for_card("C0FINANCE", &id, "the owed card", is_pending)
        .await;
    app.stop().await.unwrap();

    // Another restart posts nothing again: every card is recorded as posted.
    let app = TestApp::start_with(test_config(&db)).await;
    let ready = app.create(REVOPS, &discount_proposal()).await;
    let ready = ready["id"].as_str().unwrap();
    app.slack()
        .wait_for_card("C0FINANCE", ready, "a new card", is_pending)
        .await;
    let posts: Vec<Value> = app
        .slack()
        .calls()
        .await
        .into_iter()
        .filter(|c| c["method"] == "chat.postMessage")
        .collect();
    assert_eq!(posts.len(), 1, "only the new proposal's card: {posts:#?}");
    app.stop().await.unwrap();
}
both_backends!(a_card_owed_before_a_restart_is_posted_after_it);

async fn a_burst_is_paced_to_slacks_rate_and_every_card_still_arrives(db: TestDb) {
    let app = TestApp::start(&db).await;
    for n in 0..6 {
        let mut body = discount_proposal();
        body["summary"] = json!(format!("Discount number {n}"));
        app.create(REVOPS, &body).await;
    }
    let slack = app.slack();
    // countersign spends a burst of 3 per channel, then waits for its budget (one a second):
    // it never runs into Slack's 429.
    slack
        .wait_for("C0FINANCE", "U0NOBODY", "three cards", |m| {
            (m.len() == 3).then_some(())
        })
        .await;
    // Time passes (the sandbox and the worker share the app's clock): the rest arrive.
    app.clock.advance(chrono::Duration::seconds(3));
    slack
        .wait_for("C0FINANCE", "U0NOBODY", "all six cards", |m| {
            (m.len() == 6).then_some(())
        })
        .await;
    let calls = slack.calls().await;
    assert!(
        calls.iter().all(|c| c["status"] == 200),
        "no 429: {calls:#?}"
    );
    let posts = calls
        .iter()
        .filter(|c| c["method"] == "chat.postMessage")
        .count();
    assert_eq!(posts, 6, "no card posted twice");
    app.stop().await.unwrap();
}
both_backends!(a_burst_is_paced_to_slacks_rate_and_every_card_still_arrives);

#[tokio::test]
async fn slack_endpoints_refuse_unsigned_and_stale_requests() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.slack_signing_secret = Some(countersign::config::Secret::new("test-signing-secret"));
    let app = TestApp::start_with(config).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();
    let card = app
        .slack()
        .wait_for_card("C0FINANCE", id, "the card", is_pending)
        .await;

    let payload = json!({"type": "block_actions", "user": {"id": "U0FIN002"}, "trigger_id": "t",
        "container": {"channel_id": "C0FINANCE", "message_ts": card.ts},
        "actions": [{"action_id": "approve", "value": id, "action_ts": "1"}]});
    let body = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
    );
    let secret = countersign::config::Secret::new("test-signing-secret");
    let now = countersign::clock::Clock::now(&app.clock).timestamp();
    let send = |signature: String, timestamp: i64| {
        app.http
            .post(app.url("/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.clone())
            .send()
    };
    let wrong = countersign::slack::signature::sign(
        &countersign::config::Secret::new("guess"),
        now,
        body.as_bytes(),
    );
    let problem_body = problem(send(wrong, now).await.unwrap(), 401).await;
    assert_eq!(
        problem_body["type"],
        "urn:countersign:problem:bad-signature"
    );
    let stale = now - 301;
    let stale_signature = countersign::slack::signature::sign(&secret, stale, body.as_bytes());
    problem(send(stale_signature, stale).await.unwrap(), 401).await;
    let unsigned = app
        .http
        .post(app.url("/slack/commands"))
        .body("text=help")
        .send()
        .await
        .unwrap();
    problem(unsigned, 401).await;
    assert_eq!(
        status_of(&app, REVOPS, id).await["status"],
        "pending",
        "nothing changed"
    );

    // The same body, correctly signed, is accepted: the refusals were about the signature.
    let good = countersign::slack::signature::sign(&secret, now, body.as_bytes());
    assert_eq!(send(good, now).await.unwrap().status(), 200);
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "approved");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_slash_command_answers_ephemerally() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let acted = app.slack().command("U0FIN001", "C0FINANCE", "help").await;
    assert_eq!(acted.status, 200);
    assert_eq!(acted.body["response_type"], "ephemeral");
    let reply = app
        .slack()
        .wait_for_ephemeral("C0FINANCE", "U0FIN001", "approvals for AI agents")
        .await;
    assert!(
        app.slack()
            .messages("C0FINANCE", "U0FIN002")
            .await
            .iter()
            .all(|m| m.ts != reply.ts),
        "only the caller sees it"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn with_a_slack_token_the_sandbox_does_not_exist() {
    let db = TestDb::sqlite();
    let mut config = test_config(&db);
    config.slack_bot_token = Some(countersign::config::Secret::new("xoxb-real-looking"));
    config.slack_signing_secret = Some(countersign::config::Secret::new("real-signing-secret"));
    config.slack_api_url = url::Url::parse("http://127.0.0.1:9/api").unwrap();
    let app = TestApp::start_with(config).await;
    for path in [
        "/sandbox",
        "/sandbox/control/messages?channel=C0FINANCE",
        "/sandbox/api/auth.test",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // The Slack endpoints are there, and still demand a signature.
    let unsigned = app
        .http
        .post(app.url("/slack/interactions"))
        .body("payload={}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    app.stop().await.unwrap();
}

async fn a_bulk_change_stays_within_limits_and_links_to_the_full_diff(db: TestDb) {
    let app = TestApp::start(&db).await;
    let mut body = discount_proposal();
    body["action"] = json!("crm.records.merge");
    body["summary"] = json!("Merge 5,000 duplicate leads");
    body["changes"] = json!(
        (0..5000)
            .map(|n| json!({"path": format!("l{n}.o"), "after": n}))
            .collect::<Vec<_>>()
    );
    body["params"] = json!({"record_count": 5000});
    let created = app.create(REVOPS, &body).await;
    let id = created["id"].as_str().unwrap();
    let route = created["verdict"]["route"][0].as_str().unwrap().to_owned();
    let channel = if route == "revops" {
        "C0REVOPS"
    } else {
        "C0LEGAL"
    };
    let card = app
        .slack()
        .wait_for_card(channel, id, "the bulk card", |_| true)
        .await;
    assert_eq!(blockkit::message_blocks(&card.blocks), Ok(()));
    let seen = card.visible_text();
    assert!(
        seen.contains("Changes (5000)") && seen.contains("…and 4992 more"),
        "{seen}"
    );

    let link = card
        .blocks
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == "full_diff")
        .and_then(|e| e["url"].as_str().map(str::to_owned))
        .expect("a link to the full diff");
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert_eq!(
        html.matches("<tr>").count(),
        5001,
        "every change, and the header row"
    );
    // Tampered or expired links show nothing.
    let tampered = link.replace("sig=", "sig=00");
    assert_eq!(app.http.get(&tampered).send().await.unwrap().status(), 403);
    let unsigned = link.split('?').next().unwrap().to_owned();
    assert_eq!(app.http.get(&unsigned).send().await.unwrap().status(), 403);
    app.clock.advance(chrono::Duration::days(8));
    assert_eq!(app.http.get(&link).send().await.unwrap().status(), 403);
    app.stop().await.unwrap();
}
both_backends!(a_bulk_change_stays_within_limits_and_links_to_the_full_diff);
