//! Step-up through the sandbox: typed confirmation and TOTP, enrollment, replays, lockouts,
//! forms bound to their reviewer and proposal. Every outcome is checked in the audit trail.

use countersign::clock::Clock;
use countersign::config::Secret;
use countersign::stepup::totp::Authenticator;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, discount_proposal, test_config};
use crate::slack_client::{Message, card_for, large_payment, votes_of};

const SIGNING_SECRET: &str = "step-up-test-signing-secret";

async fn start(db: &TestDb) -> TestApp {
    let mut config = test_config(db);
    config.secret_key = Some(Secret::new("a-test-secret-key-of-at-least-32-chars"));
    config.slack_signing_secret = Some(Secret::new(SIGNING_SECRET));
    TestApp::start_with(config).await
}

fn kinds_of(events: &[countersign::audit::AuditEvent]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|e| (e.kind.clone(), serde_json::from_str(&e.data).unwrap()))
        .collect()
}

fn merge() -> Value {
    let mut body = discount_proposal();
    body["action"] = json!("crm.records.merge");
    body["summary"] = json!("Merge 120 duplicate Acme leads");
    body["params"] = json!({"record_count": 120});
    body["data_classes"] = json!([]);
    body
}

async fn confirm_asks_for_a_value_from_the_action(db: TestDb) {
    let app = start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &merge(), "C0REVOPS").await;
    let slack = app.slack();
    let opened = slack.click("U0REVOPS02", &card, "approve").await;
    let view = opened.view.expect("Approve opens the confirmation form");
    assert_eq!(view["callback_id"], "step_up");
    assert!(
        view.to_string()
            .contains("Type the number of records to confirm")
    );
    let view_id = view["id"].as_str().unwrap();

    assert!(
        answer(&app, "U0REVOPS02", view_id, "12")
            .await
            .unwrap_err()
            .contains("does not match the number of records")
    );
    assert_eq!(votes_of(&db, &id).await, vec![]);

    answer(&app, "U0REVOPS02", view_id, "120").await.unwrap();
    // The merge touches PII, so legal must approve too: the confirmed approval is one vote.
    slack
        .wait_for_ephemeral("C0REVOPS", "U0REVOPS02", "Still needed: 1 more from legal")
        .await;
    let votes = votes_of(&db, &id).await;
    assert_eq!(votes.len(), 1);
    let audit = kinds_of(&db.audit_of(&id).await);
    let step_ups: Vec<(&str, &Value)> = audit
        .iter()
        .filter(|(k, _)| k.starts_with("step_up"))
        .map(|(k, d)| (k.as_str(), d))
        .collect();
    assert_eq!(step_ups[0].0, "step_up.failed");
    assert_eq!(step_ups[0].1["reason"], "wrong confirmation value");
    assert_eq!(step_ups[1].0, "step_up.passed");
    app.stop().await.unwrap();
}
both_backends!(confirm_asks_for_a_value_from_the_action);

/// Submits `value` in `user`'s open step-up form: Ok if accepted, else the error the form shows.
pub async fn answer(
    app: &TestApp,
    user: &str,
    view_id: &str,
    value: impl std::fmt::Display,
) -> Result<(), String> {
    let acted = app
        .slack()
        .submit(
            user,
            view_id,
            json!({"answer": {"value": value.to_string()}}),
        )
        .await;
    match acted.errors {
        None if acted.status == 200 => Ok(()),
        None => Err(format!("HTTP {}", acted.status)),
        Some(errors) => Err(errors["answer"].as_str().unwrap_or_default().to_owned()),
    }
}

/// The authenticator an enrollment DM's `otpauth://` URI sets up, as a phone would.
pub fn authenticator_of(uri: &str, user: &str) -> Authenticator {
    let secret = url::Url::parse(uri)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let secret = totp_rs::Secret::Encoded(secret).to_bytes().unwrap();
    Authenticator::new(secret, user).unwrap()
}

/// Enrolls `user` through the slash commands and the DM, as a person would.
pub async fn enroll(app: &TestApp, user: &str) -> Authenticator {
    let slack = app.slack();
    let dm = format!("@{user}");
    let uris = |messages: &[Message]| -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| {
                let start = m.text.find("otpauth://")?;
                Some(m.text[start..].split('`').next().unwrap().to_owned())
            })
            .collect()
    };
    let qr_codes = |messages: &[Message]| {
        messages
            .iter()
            .filter(|m| m.text == "Scan with your authenticator app")
            .count()
    };
    let before = slack.messages(&dm, user).await;
    let (uris_before, qr_before) = (uris(&before).len(), qr_codes(&before));
    let started = slack.command(user, "C0FINANCE", "enroll").await;
    assert!(
        started.body["text"]
            .as_str()
            .unwrap()
            .contains("I sent you a DM")
    );
    // This enrollment's DM: a new URI, then the QR code as an uploaded image.
    let uri = slack
        .wait_for(&dm, user, "the enrollment DM", |messages| {
            let all = uris(messages);
            (all.len() > uris_before).then(|| all.last().unwrap().clone())
        })
        .await;
    slack
        .wait_for(&dm, user, "the QR code", |messages| {
            (qr_codes(messages) > qr_before).then_some(())
        })
        .await;
    let authenticator = authenticator_of(&uri, user);
    let code = authenticator.code_at(app.clock.now().timestamp() as u64);
    let confirmed = slack
        .command(user, "C0FINANCE", &format!("enroll {code}"))
        .await;
    assert!(
        confirmed.body["text"]
            .as_str()
            .unwrap()
            .contains("Enrolled"),
        "{}",
        confirmed.body
    );
    // The first code's time step is spent: move to the next one.
    app.clock.advance(chrono::Duration::seconds(30));
    authenticator
}

async fn totp_codes_approve_once_and_replays_and_old_codes_are_refused(db: TestDb) {
    let app = start(&db).await;
    let (id, card) = card_for(&app, BILLING, &large_payment(), "C0FINANCE").await;
    let slack = app.slack();

    // Not enrolled: told how, and nothing is recorded.
    let opened = slack.click("U0FIN002", &card, "approve").await;
    assert!(opened.view.is_none());
    slack
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "/countersign enroll")
        .await;

    let authenticator = enroll(&app, "U0FIN002").await;
    let code = |app: &TestApp| authenticator.code_at(app.clock.now().timestamp() as u64);

    // A code from two steps ago is refused.
    let view = slack
        .click("U0FIN002", &card, "approve")
        .await
        .view
        .unwrap();
    let view_id = view["id"].as_str().unwrap();
    let stale = authenticator.code_at((app.clock.now().timestamp() - 60) as u64);
    assert!(
        answer(&app, "U0FIN002", view_id, stale)
            .await
            .unwrap_err()
            .contains("not valid now")
    );

    // The current code is a vote.
    let current = code(&app);
    answer(&app, "U0FIN002", view_id, &current).await.unwrap();
    let votes = votes_of(&db, &id).await;
    assert_eq!(votes.len(), 1);

    // The same code again — even by the same person on another form — is a replay.
    let legal_card = slack
        .wait_for_card("C0LEGAL", &id, "the legal card", |_| true)
        .await;
    let _ = legal_card;
    let other = slack
        .click("U0FIN002", &card, "approve")
        .await
        .view
        .unwrap();
    assert!(
        answer(&app, "U0FIN002", other["id"].as_str().unwrap(), current)
            .await
            .unwrap_err()
            .contains("already used")
    );

    let audit = kinds_of(&db.audit_of(&id).await);
    let reasons: Vec<String> = audit
        .iter()
        .filter(|(k, _)| k == "step_up.failed")
        .map(|(_, d)| d["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["not enrolled", "wrong code", "code already used"]);
    assert_eq!(
        audit.iter().filter(|(k, _)| k == "step_up.passed").count(),
        1
    );
    app.stop().await.unwrap();
}
both_backends!(totp_codes_approve_once_and_replays_and_old_codes_are_refused);

async fn a_form_is_bound_to_its_reviewer_and_the_proposal_as_it_was(db: TestDb) {
    let app = start(&db).await;
    let (id, card) = card_for(&app, REVOPS, &merge(), "C0REVOPS").await;
    let slack = app.slack();
    let view = slack
        .click("U0REVOPS02", &card, "approve")
        .await
        .view
        .unwrap();

    // Someone else submits U0REVOPS02's form (Slack would not let them; a forger might try).
    let payload = json!({
        "type": "view_submission", "user": {"id": "U0MGR001"},
        "view": {"id": view["id"], "callback_id": "step_up", "private_metadata": view["private_metadata"],
                 "state": {"values": {"answer": {"value": {"type": "plain_text_input", "value": "120"}}}}}
    });
    let body = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
    );
    let now = app.clock.now().timestamp();
    let signature =
        countersign::slack::signature::sign(&Secret::new(SIGNING_SECRET), now, body.as_bytes());
    let forged: Value = app
        .http
        .post(app.url("/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        forged["errors"]["answer"]
            .as_str()
            .unwrap()
            .contains("opened by someone else"),
        "{forged}"
    );

    // The agent cancels while the form is open: the form is stale.
    let cancel = app
        .post(REVOPS, &format!("/v1/proposals/{id}/cancel"), None)
        .await;
    assert_eq!(cancel.status(), 200);
    assert!(
        answer(&app, "U0REVOPS02", view["id"].as_str().unwrap(), "120")
            .await
            .unwrap_err()
            .contains("changed since you opened")
    );

    // And forms expire after five minutes.
    let (_, card) = card_for(&app, REVOPS, &merge(), "C0REVOPS").await;
    let view = slack
        .click("U0REVOPS02", &card, "approve")
        .await
        .view
        .unwrap();
    app.clock.advance(chrono::Duration::minutes(6));
    assert!(
        answer(&app, "U0REVOPS02", view["id"].as_str().unwrap(), "120")
            .await
            .unwrap_err()
            .contains("expired")
    );

    let reasons: Vec<String> = kinds_of(&db.audit_of(&id).await)
        .into_iter()
        .filter(|(k, _)| k == "step_up.failed")
        .map(|(_, d)| d["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "form opened by another reviewer",
            "proposal changed since the form opened"
        ]
    );
    app.stop().await.unwrap();
}
both_backends!(a_form_is_bound_to_its_reviewer_and_the_proposal_as_it_was);

async fn five_wrong_codes_lock_the_reviewer_and_alert_the_channel(db: TestDb) {
    let app = start(&db).await;
    let (id, card) = card_for(&app, BILLING, &large_payment(), "C0FINANCE").await;
    let slack = app.slack();
    let authenticator = enroll(&app, "U0FIN002").await;
    let view = slack
        .click("U0FIN002", &card, "approve")
        .await
        .view
        .unwrap();
    let view_id = view["id"].as_str().unwrap();
    for n in 0..5 {
        let wrong = slack
            .submit(
                "U0FIN002",
                view_id,
                json!({"answer": {"value": format!("00000{n}")}}),
            )
            .await;
        let message = wrong.errors.unwrap()["answer"].as_str().unwrap().to_owned();
        assert_eq!(message.contains("locked until"), n == 4, "{n}: {message}");
        // A field error is plain text in Slack: a readable date, never a `<!date^…>` token.
        assert!(!message.contains('<'), "{n}: {message}");
        if n == 4 {
            assert!(message.contains(" UTC"), "{message}");
        }
    }
    slack
        .wait_for("C0FINANCE", "U0NOBODY", "the lockout alert", |messages| {
            messages
                .iter()
                .find(|m| m.text.contains("<@U0FIN002>'s step-up is locked"))
                .cloned()
        })
        .await;
    // Even the right code is refused while locked: no new form, no vote.
    let right = authenticator.code_at(app.clock.now().timestamp() as u64);
    assert!(
        answer(&app, "U0FIN002", view_id, right)
            .await
            .unwrap_err()
            .contains("locked until")
    );
    assert!(
        slack
            .click("U0FIN002", &card, "approve")
            .await
            .view
            .is_none()
    );
    let audit = kinds_of(&db.audit_of(&id).await);
    assert_eq!(
        audit.iter().filter(|(k, _)| k == "step_up.locked").count(),
        1
    );
    assert_eq!(
        audit.iter().filter(|(k, _)| k == "proposal.voted").count(),
        0
    );
    // Fifteen minutes later the lock is gone.
    app.clock.advance(chrono::Duration::minutes(16));
    assert!(
        slack
            .click("U0FIN002", &card, "approve")
            .await
            .view
            .is_some()
    );
    app.stop().await.unwrap();
}
both_backends!(five_wrong_codes_lock_the_reviewer_and_alert_the_channel);

#[tokio::test]
async fn without_a_secret_key_totp_is_off_and_says_so() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let (_, card) = card_for(&app, BILLING, &large_payment(), "C0FINANCE").await;
    let enroll = app.slack().command("U0FIN002", "C0FINANCE", "enroll").await;
    assert!(
        enroll.body["text"]
            .as_str()
            .unwrap()
            .contains("no `secret_key` configured")
    );
    assert!(
        app.slack()
            .click("U0FIN002", &card, "approve")
            .await
            .view
            .is_none()
    );
    app.slack()
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "TOTP step-up is off")
        .await;
    app.stop().await.unwrap();
}

async fn all_audit(db: &TestDb) -> Vec<countersign::audit::AuditEvent> {
    let filter = countersign::audit::AuditFilter {
        since: None,
        proposal_id: None,
    };
    db.store()
        .await
        .audit_page(&filter, 0, 10_000)
        .await
        .unwrap()
}

async fn enrollment_is_confirmed_removed_with_a_code_and_reset_by_an_operator(db: TestDb) {
    let app = start(&db).await;
    let slack = app.slack();
    // A code is needed to confirm; a wrong one does not activate.
    slack.command("U0LEG001", "C0LEGAL", "enroll").await;
    let wrong = slack.command("U0LEG001", "C0LEGAL", "enroll 000000").await;
    assert!(
        wrong.body["text"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    assert!(
        !db.store()
            .await
            .totp_enrollment("U0LEG001")
            .await
            .unwrap()
            .unwrap()
            .active
    );

    let authenticator = enroll(&app, "U0LEG001").await;
    assert!(
        db.store()
            .await
            .totp_enrollment("U0LEG001")
            .await
            .unwrap()
            .unwrap()
            .active
    );
    let stored = db
        .store()
        .await
        .totp_enrollment("U0LEG001")
        .await
        .unwrap()
        .unwrap();
    let secret_b32 = {
        let uri = authenticator.uri();
        url::Url::parse(&uri)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "secret")
            .unwrap()
            .1
            .into_owned()
    };
    assert!(
        !stored.sealed_secret.contains(&secret_b32),
        "the secret is not stored in clear"
    );

    let refused = slack
        .command("U0LEG001", "C0LEGAL", "unenroll 000000")
        .await;
    assert!(
        refused.body["text"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    let code = authenticator.code_at(app.clock.now().timestamp() as u64);
    let removed = slack
        .command("U0LEG001", "C0LEGAL", &format!("unenroll {code}"))
        .await;
    assert!(
        removed.body["text"]
            .as_str()
            .unwrap()
            .contains("Unenrolled")
    );
    assert_eq!(
        db.store().await.totp_enrollment("U0LEG001").await.unwrap(),
        None
    );

    // An operator resets a lost phone from the command line.
    enroll(&app, "U0FIN002").await;
    app.stop().await.unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["totp", "reset", "U0FIN002"])
        .env("COUNTERSIGN_DATABASE_URL", db.url_string())
        .env("COUNTERSIGN_MANIFESTS", crate::common::manifests_dir())
        .env("COUNTERSIGN_POLICIES", crate::common::policies_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("enrollment removed"));
    assert_eq!(
        db.store().await.totp_enrollment("U0FIN002").await.unwrap(),
        None
    );

    let kinds: Vec<(String, String)> = all_audit(&db)
        .await
        .into_iter()
        .filter(|e| e.kind.starts_with("totp."))
        .map(|e| (e.kind, e.actor))
        .collect();
    let expect = |kind: &str, actor: &str| (kind.to_owned(), actor.to_owned());
    assert_eq!(
        kinds,
        [
            expect("totp.enrollment_started", "reviewer:U0LEG001"),
            expect("totp.enrollment_started", "reviewer:U0LEG001"),
            expect("totp.enrolled", "reviewer:U0LEG001"),
            expect("totp.unenrolled", "reviewer:U0LEG001"),
            expect("totp.enrollment_started", "reviewer:U0FIN002"),
            expect("totp.enrolled", "reviewer:U0FIN002"),
            expect("totp.reset", "operator:cli"),
        ]
    );
}
both_backends!(enrollment_is_confirmed_removed_with_a_code_and_reset_by_an_operator);
