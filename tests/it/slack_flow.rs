//! End to end through the built-in sandbox over real HTTP: proposals become cards in role
//! channels, people click, countersign decides, cards follow.

use countersign::domain::{Proposal, Status};
use countersign::sandbox::blockkit;
use countersign::store::Command;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, discount_proposal, problem, test_config};
use crate::slack_client::Message;

fn large_payment() -> Value {
    json!({
        "action": "billing.invoice.pay",
        "summary": "Pay Initech invoice INV-2291",
        "target": {"system": "netsuite", "type": "VendorBill", "id": "INV-2291"},
        "params": {"amount": 25000, "currency": "USD", "vendor": "Initech"}
    })
}

/// A discount that touches personal data: finance (the discount) and legal (PII), one each, no
/// step-up.
fn discount_with_pii() -> Value {
    let mut body = discount_proposal();
    body["data_classes"] = json!(["financial", "pii"]);
    body
}

fn is_pending(card: &Message) -> bool {
    card.buttons() == ["approve", "reject"]
}

/// Submits `body` and waits for its card, pending, in `channel`.
async fn card_for(app: &TestApp, token: &str, body: &Value, channel: &str) -> (String, Message) {
    let created = app.create(token, body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let card = app
        .slack()
        .wait_for_card(channel, &id, "the card", is_pending)
        .await;
    (id, card)
}

async fn votes_of(db: &TestDb, id: &str) -> Vec<countersign::domain::Vote> {
    let id = countersign::domain::ProposalId::parse(id).unwrap();
    db.store().await.votes(&id).await.unwrap()
}

async fn status_of(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(token, id).await.json().await.unwrap()
}

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

async fn an_approver_approves_and_every_copy_of_the_card_follows(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, finance) = card_for(&app, REVOPS, &discount_with_pii(), "C0FINANCE").await;
    let id = id.as_str();
    let slack = app.slack();

    // One approval of the two needed (finance and legal, one each).
    let acted = slack.click("U0FIN002", &finance, "approve").await;
    assert_eq!(acted.status, 200);
    slack
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "Still needed: 1 more from legal")
        .await;
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "pending");
    slack.click("U0FIN002", &finance, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "You already approved this")
        .await;
    slack
        .wait_for_card(
            "C0LEGAL",
            id,
            "the legal copy showing the finance vote",
            |m| {
                m.visible_text()
                    .contains("<@U0FIN002> approved for finance")
            },
        )
        .await;

    let legal = slack
        .wait_for_card("C0LEGAL", id, "the card", is_pending)
        .await;
    slack.click("U0LEG001", &legal, "approve").await;
    slack
        .wait_for_ephemeral("C0LEGAL", "U0LEG001", "completed the quorum")
        .await;
    let decided = status_of(&app, REVOPS, id).await;
    assert_eq!(decided["status"], "approved");
    assert_eq!(
        decided["decision"]["by"],
        json!({"kind": "reviewer", "id": "U0LEG001"})
    );

    for channel in ["C0FINANCE", "C0LEGAL"] {
        let card = slack
            .wait_for_card(channel, id, "the approved card", |m| {
                m.visible_text().contains("*Approved*")
            })
            .await;
        assert!(
            card.buttons().is_empty(),
            "no buttons once decided: {card:?}"
        );
    }
    let kinds: Vec<String> = db.audit_of(id).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "proposal.submitted",
            "proposal.voted",
            "request.refused",
            "proposal.voted",
            "proposal.decided"
        ]
    );
    app.stop().await.unwrap();
}
both_backends!(an_approver_approves_and_every_copy_of_the_card_follows);

async fn reject_asks_why_in_a_modal_and_the_reason_is_kept(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let id = id.as_str();
    let slack = app.slack();

    let acted = slack.click("U0FIN001", &card, "reject").await;
    let view = acted.view.expect("the click opened the rejection modal");
    assert_eq!(view["callback_id"], "reject");
    let presets: Vec<&str> = view["blocks"][0]["element"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        presets[0], "Above the discount playbook",
        "the policy's reasons"
    );
    let view_id = view["id"].as_str().unwrap();

    // Nothing said: the modal stays open with an error, nothing is recorded.
    let empty = slack.submit("U0FIN001", view_id, json!({})).await;
    assert!(
        empty.errors.unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("Say why")
    );
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "pending");

    let values = json!({"preset": {"choice": "Needs a deal desk review first"}, "reason": {"text": "This is the <!here> wrong account"}});
    let done = slack.submit("U0FIN001", view_id, values).await;
    assert_eq!((done.status, done.errors), (200, None));
    let decided = status_of(&app, REVOPS, id).await;
    assert_eq!(decided["status"], "rejected");
    assert_eq!(
        decided["decision"]["reason"],
        "Needs a deal desk review first: This is the <!here> wrong account"
    );

    let card = slack
        .wait_for_card("C0FINANCE", id, "the rejected card", |m| {
            m.visible_text().contains("*Rejected*")
        })
        .await;
    let seen = card.visible_text();
    assert!(
        seen.contains("This is the &lt;!here&gt; wrong account"),
        "reason shown, escaped: {seen}"
    );
    assert!(!seen.contains("<!here>"));
    app.stop().await.unwrap();
}
both_backends!(reject_asks_why_in_a_modal_and_the_reason_is_kept);

async fn clicks_from_people_who_may_not_approve_are_refused_and_audited(db: TestDb) {
    let app = TestApp::start(&db).await;
    // billing's owner is U0FIN001, a finance approver: separation of duties refuses them.
    let (id, card) = card_for(&app, BILLING, &large_payment(), "C0FINANCE").await;
    let id = id.as_str();
    let slack = app.slack();

    slack.click("U0SEC001", &card, "approve").await;
    slack
        .wait_for_ephemeral(
            "C0FINANCE",
            "U0SEC001",
            "Only approvers for finance or legal",
        )
        .await;
    slack.click("U0FIN001", &card, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0FIN001", "separation of duties")
        .await;

    assert_eq!(status_of(&app, BILLING, id).await["status"], "pending");
    let refusals: Vec<(String, Value)> = db
        .audit_of(id)
        .await
        .into_iter()
        .filter(|e| e.kind == "request.refused")
        .map(|e| (e.actor, serde_json::from_str(&e.data).unwrap()))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[0].0, "reviewer:U0SEC001");
    assert_eq!(refusals[1].0, "reviewer:U0FIN001");
    assert!(
        refusals[1].1["reason"]
            .as_str()
            .unwrap()
            .contains("separation of duties")
    );
    assert_eq!(votes_of(&db, id).await, vec![]);
    app.stop().await.unwrap();
}
both_backends!(clicks_from_people_who_may_not_approve_are_refused_and_audited);

async fn the_person_the_agent_acts_for_may_not_approve_by_email_either(db: TestDb) {
    let app = TestApp::start(&db).await;
    let mut body = discount_proposal();
    body["requested_by"] = json!("Tomas@Acme.example");
    let (id, card) = card_for(&app, REVOPS, &body, "C0FINANCE").await;
    // tomas@acme.example is U0FIN002 in the workspace, a finance approver.
    app.slack().click("U0FIN002", &card, "approve").await;
    app.slack()
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "The agent is acting for you")
        .await;
    assert_eq!(votes_of(&db, &id).await, vec![]);
    app.slack().click("U0FIN001", &card, "approve").await;
    app.slack()
        .wait_for_ephemeral("C0FINANCE", "U0FIN001", "completed the quorum")
        .await;
    app.stop().await.unwrap();
}
both_backends!(the_person_the_agent_acts_for_may_not_approve_by_email_either);

async fn an_expired_proposal_cannot_be_decided(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, _) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    // The discount's escalation ladder ends in `expire` (and it expires in 8 hours anyway).
    app.clock.advance(chrono::Duration::hours(8));
    let card = app
        .slack()
        .wait_for_card("C0FINANCE", &id, "the expired card", |m| {
            m.visible_text().contains("*Expired*")
        })
        .await;
    assert!(card.buttons().is_empty(), "nothing left to click");
    assert_eq!(votes_of(&db, &id).await, vec![]);
    assert_eq!(status_of(&app, REVOPS, &id).await["status"], "expired");
    app.stop().await.unwrap();
}
both_backends!(an_expired_proposal_cannot_be_decided);

async fn a_usergroup_member_may_approve_and_a_repeated_click_counts_once(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let id = id.as_str();
    let slack = app.slack();
    // U0MGR001 is not listed in roles.yaml but is in the finance approvers' user group.
    slack.click("U0MGR001", &card, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0MGR001", "completed the quorum")
        .await;
    slack.click("U0MGR001", &card, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0MGR001", "Already approved by <@U0MGR001>")
        .await;
    let votes = votes_of(&db, id).await;
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].eligible, ["finance"]);
    app.stop().await.unwrap();
}
both_backends!(a_usergroup_member_may_approve_and_a_repeated_click_counts_once);

async fn racing_clicks_make_exactly_one_decision(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let id = id.as_str();
    let slack = app.slack();
    let clicks = ["U0FIN001", "U0FIN002", "U0MGR001"]
        .iter()
        .flat_map(|user| std::iter::repeat_n(*user, 5))
        .map(|user| slack.click(user, &card, "approve"));
    let acted = futures_util::future::join_all(clicks).await;
    assert!(acted.iter().all(|a| a.status == 200));
    let decided = db
        .audit_of(id)
        .await
        .into_iter()
        .filter(|e| e.kind == "proposal.decided")
        .count();
    assert_eq!(decided, 1);
    assert_eq!(status_of(&app, REVOPS, id).await["status"], "approved");
    app.stop().await.unwrap();
}
both_backends!(racing_clicks_make_exactly_one_decision);

async fn a_card_owed_before_a_restart_is_posted_after_it(db: TestDb) {
    // The proposal and its outbox row are committed, but no countersign ran to post the card
    // (as if it crashed right after the commit).
    let store = db.store().await;
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    app.stop().await.unwrap();
    let mut proposal: Proposal = serde_json::from_value(created).unwrap();
    proposal.id = countersign::domain::ProposalId::generate();
    proposal.status = Status::Pending;
    let submit = Command::Submit {
        proposal: Box::new(proposal.clone()),
        idempotency: None,
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

async fn votes_are_replies_in_the_cards_thread_and_the_requester_hears_the_outcome(db: TestDb) {
    let app = TestApp::start(&db).await;
    let mut body = discount_with_pii();
    body["requested_by"] = json!("sam@acme.example"); // U0SALES02 in the sandbox workspace
    let (id, finance) = card_for(&app, REVOPS, &body, "C0FINANCE").await;
    assert!(
        finance.visible_text().contains("for <@U0SALES02>"),
        "a resolved requester is a mention"
    );
    let slack = app.slack();
    slack.click("U0FIN002", &finance, "approve").await;
    let legal = slack
        .wait_for_card("C0LEGAL", &id, "the legal card", is_pending)
        .await;
    let reply = |card: &Message, needle: &'static str| {
        let ts = card.ts.clone();
        move |messages: &[Message]| {
            messages
                .iter()
                .find(|m| {
                    m.thread_ts.as_deref() == Some(ts.as_str())
                        && m.ts != ts
                        && m.text.contains(needle)
                })
                .cloned()
        }
    };
    // The vote is a reply under both copies of the card.
    slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the vote in the thread",
            reply(&finance, "<@U0FIN002> approved for finance"),
        )
        .await;
    slack
        .wait_for(
            "C0LEGAL",
            "U0NOBODY",
            "the vote in the thread",
            reply(&legal, "<@U0FIN002> approved for finance"),
        )
        .await;
    slack.click("U0LEG001", &legal, "approve").await;
    let dm = slack
        .wait_for(
            "@U0SALES02",
            "U0SALES02",
            "the requester's DM",
            |messages| {
                messages
                    .iter()
                    .find(|m| m.text.contains("*Approved*"))
                    .cloned()
            },
        )
        .await;
    assert!(dm.text.contains("asked on your behalf"), "{}", dm.text);
    app.stop().await.unwrap();
}
both_backends!(votes_are_replies_in_the_cards_thread_and_the_requester_hears_the_outcome);

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
        seen.contains("*Changes* (5000)") && seen.contains("…and 4992 more"),
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

async fn twenty_racing_approvals_and_rejections_make_one_decision(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let slack = app.slack();
    // Two reviewers have the rejection form open; then everyone acts at once.
    let mut views = Vec::new();
    for user in ["U0FIN001", "U0FIN002"] {
        let opened = slack.click(user, &card, "reject").await;
        views.push((
            user,
            opened.view.unwrap()["id"].as_str().unwrap().to_owned(),
        ));
    }
    let rejections = views
        .iter()
        .map(|(user, view)| slack.submit(user, view, json!({"reason": {"text": "no"}})));
    let approvals = ["U0FIN001", "U0FIN002", "U0MGR001"]
        .iter()
        .cycle()
        .take(18)
        .map(|user| slack.click(user, &card, "approve"));
    let (rejected, approved) = tokio::join!(
        futures_util::future::join_all(rejections),
        futures_util::future::join_all(approvals)
    );
    assert!(
        rejected
            .iter()
            .chain(approved.iter())
            .all(|a| a.status == 200)
    );
    let decided: Vec<_> = db
        .audit_of(&id)
        .await
        .into_iter()
        .filter(|e| e.kind == "proposal.decided")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    let status = status_of(&app, REVOPS, &id).await["status"].clone();
    assert!(status == "approved" || status == "rejected", "{status}");
    app.stop().await.unwrap();
}
both_backends!(twenty_racing_approvals_and_rejections_make_one_decision);
