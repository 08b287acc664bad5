//! Clicks on cards through the sandbox: who may vote, quorum, rejection with a reason, races,
//! and what every copy of the card, its thread and the requester are told.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, discount_proposal};
use crate::slack_client::{
    Message, card_for, discount_with_pii, is_pending, large_payment, status_of, votes_of,
};

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
    // The reason is shown as written, in a literal rich text run: text, not a broadcast.
    let seen = card.visible_text();
    assert!(
        seen.contains("This is the <!here> wrong account"),
        "reason shown literally: {seen}"
    );
    let blocks = card.blocks.to_string();
    assert!(!blocks.contains("\"broadcast\""), "{blocks}");
    let mrkdwn: Vec<&Value> = card
        .blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["text"]["type"] == "mrkdwn")
        .collect();
    assert!(
        mrkdwn
            .iter()
            .all(|b| !b["text"]["text"].as_str().unwrap().contains("here")),
        "never in mrkdwn: {mrkdwn:?}"
    );
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
    // U0MGR001 is not listed in roles.yaml but is in the finance approvers' user group. A
    // double click: both reach countersign before the card loses its buttons (clicked one
    // after the other, the second would race the card's update and find no button).
    let (first, second) = tokio::join!(
        slack.click("U0MGR001", &card, "approve"),
        slack.click("U0MGR001", &card, "approve")
    );
    assert_eq!((first.status, second.status), (200, 200));
    slack
        .wait_for_ephemeral("C0FINANCE", "U0MGR001", "completed the quorum")
        .await;
    slack
        .wait_for("C0FINANCE", "U0MGR001", "the repeat refused", |messages| {
            messages
                .iter()
                .find(|m| {
                    m.ephemeral_for.as_deref() == Some("U0MGR001")
                        && (m.text.contains("Already approved by <@U0MGR001>")
                            || m.text.contains("You already approved this"))
                })
                .cloned()
        })
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

/// A burst of approvals costs Slack no call per click that a cache or the click's own reply
/// channel can answer: the requester's email is looked up once (the card's mention; separation
/// of duties reuses it), and each clicker hears back on the click's `response_url`, not through
/// `chat.postEphemeral`.
async fn approvals_cost_no_lookup_or_ephemeral_call_per_click(db: TestDb) {
    let app = TestApp::start(&db).await;
    let slack = app.slack();
    let mut body = discount_proposal();
    body["requested_by"] = json!("sam@acme.example");
    let mut cards = Vec::new();
    for summary in ["first", "second", "third"] {
        body["summary"] = json!(format!("Discount, {summary}"));
        cards.push(card_for(&app, REVOPS, &body, "C0FINANCE").await);
    }
    for (id, card) in &cards {
        slack.click("U0FIN001", card, "approve").await;
        slack
            .wait_for_ephemeral("C0FINANCE", "U0FIN001", "completed the quorum")
            .await;
        assert_eq!(status_of(&app, REVOPS, id).await["status"], "approved");
    }
    let calls = slack.calls().await;
    let count = |method: &str| calls.iter().filter(|c| c["method"] == method).count();
    assert_eq!(count("users.lookupByEmail"), 1, "{calls:#?}");
    assert_eq!(count("chat.postEphemeral"), 0, "{calls:#?}");
    app.stop().await.unwrap();
}
both_backends!(approvals_cost_no_lookup_or_ephemeral_call_per_click);

/// Reject from someone who may not decide is refused at the click, as Approve is: no form to
/// fill in first, the refusal audited.
async fn a_non_approvers_reject_is_refused_at_the_click(db: TestDb) {
    let app = TestApp::start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let slack = app.slack();
    let acted = slack.click("U0SEC001", &card, "reject").await;
    assert_eq!(acted.status, 200);
    assert!(acted.view.is_none(), "no rejection form: {:?}", acted.view);
    slack
        .wait_for_ephemeral("C0FINANCE", "U0SEC001", "Only approvers for finance")
        .await;
    let refused: Vec<Value> = db
        .audit_of(&id)
        .await
        .into_iter()
        .filter(|e| e.kind == "request.refused")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["request"], "reject");
    // An approver still gets the form.
    let acted = slack.click("U0FIN001", &card, "reject").await;
    assert!(acted.view.is_some());
    assert_eq!(status_of(&app, REVOPS, &id).await["status"], "pending");
    app.stop().await.unwrap();
}
both_backends!(a_non_approvers_reject_is_refused_at_the_click);
