//! SLA timers through the sandbox with the app's clock moved by hand: reminders, escalation to
//! the on-call person and to the fallback role, expiry; a restart between arming and firing; two
//! replicas on one PostgreSQL firing each timer once.

use chrono::Duration;
use countersign::registry::Registry;
use serde_json::Value;

use crate::both_backends;
use crate::common::{
    REVOPS, TestApp, TestDb, discount_proposal, manifests_dir, policies_dir, start_time,
    test_config,
};
use crate::slack_client::Message;

async fn kinds(db: &TestDb, id: &str) -> Vec<(String, Value)> {
    db.audit_of(id)
        .await
        .into_iter()
        .map(|e| (e.kind, serde_json::from_str(&e.data).unwrap()))
        .collect()
}

fn replies_containing(card_ts: &str, needle: &str) -> impl Fn(&[Message]) -> Option<Message> {
    let (card_ts, needle) = (card_ts.to_owned(), needle.to_owned());
    move |messages| {
        messages
            .iter()
            .find(|m| {
                m.thread_ts.as_deref() == Some(card_ts.as_str())
                    && m.ts != card_ts
                    && m.text.contains(&needle)
            })
            .cloned()
    }
}

async fn the_ladder_reminds_escalates_and_expires(db: TestDb) {
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();
    let slack = app.slack();
    let card = slack
        .wait_for_card("C0FINANCE", id, "the card", |_| true)
        .await;
    // large-discount: remind approvers at 15m, the on-call person at 30m, revops at 60m,
    // expire when the ladder ends.
    app.clock.advance(Duration::minutes(15));
    slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the reminder",
            replies_containing(
                &card.ts,
                ":bell: Reminder: <@U0FIN001> <@U0FIN002> <!subteam^S0FINAPPR>",
            ),
        )
        .await;

    app.clock.advance(Duration::minutes(15));
    let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
    let oncall = registry
        .oncall
        .who("finance-primary", start_time() + Duration::minutes(30))
        .unwrap()
        .to_owned();
    slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the on-call escalation",
            replies_containing(
                &card.ts,
                &format!("Escalation 2 (on call: finance-primary): <@{oncall}>"),
            ),
        )
        .await;
    slack
        .wait_for(&format!("@{oncall}"), &oncall, "the on-call DM", |m| {
            m.iter().find(|m| m.text.contains("Escalation 2")).cloned()
        })
        .await;

    slack
        .wait_for_card("C0FINANCE", id, "the card's status line", |m| {
            m.visible_text().contains("escalated (level 2)")
        })
        .await;

    app.clock.advance(Duration::minutes(30));
    slack
        .wait_for("C0REVOPS", "U0NOBODY", "the escalation to revops", |m| {
            m.iter()
                .find(|m| m.text.contains("Escalation 3 (role revops)"))
                .cloned()
        })
        .await;

    app.clock.advance(Duration::minutes(60));
    slack
        .wait_for_card("C0FINANCE", id, "the expired card", |m| {
            m.visible_text().contains("*Expired*")
        })
        .await;
    let proposal: Value = app.get(REVOPS, id).await.json().await.unwrap();
    assert_eq!(proposal["status"], "expired");
    assert_eq!(
        proposal["decision"]["by"],
        serde_json::json!({"kind": "system", "id": "sla"})
    );
    let sla: Vec<String> = kinds(&db, id)
        .await
        .into_iter()
        .filter(|(_, d)| d.get("level").is_some() || d["status"] == "expired")
        .map(|(k, d)| format!("{k}:{}", d["level"]))
        .collect();
    assert_eq!(
        sla,
        [
            "proposal.reminded:0",
            "proposal.escalated:1",
            "proposal.escalated:2",
            "proposal.decided:null"
        ]
    );
    // Nothing fires after the decision.
    app.clock.advance(Duration::hours(10));
    assert_eq!(
        db.store()
            .await
            .claim_timers(app_now(&app), app_now(&app), 10)
            .await
            .unwrap(),
        vec![]
    );
    app.stop().await.unwrap();
}
both_backends!(the_ladder_reminds_escalates_and_expires);

fn app_now(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    countersign::clock::Clock::now(&app.clock)
}

async fn a_decision_disarms_the_timers(db: TestDb) {
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();
    let card = app
        .slack()
        .wait_for_card("C0FINANCE", id, "the card", |_| true)
        .await;
    app.slack().click("U0FIN002", &card, "approve").await;
    app.slack()
        .wait_for_ephemeral("C0FINANCE", "U0FIN002", "completed the quorum")
        .await;
    app.clock.advance(Duration::hours(9));
    assert_eq!(
        db.store()
            .await
            .claim_timers(app_now(&app), app_now(&app), 10)
            .await
            .unwrap(),
        vec![]
    );
    assert!(
        kinds(&db, id)
            .await
            .iter()
            .all(|(k, _)| k != "proposal.reminded")
    );
    app.stop().await.unwrap();
}
both_backends!(a_decision_disarms_the_timers);

async fn timers_due_during_a_restart_fire_when_it_is_back(db: TestDb) {
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.slack()
        .wait_for_card("C0FINANCE", &id, "the card", |_| true)
        .await;
    app.stop().await.unwrap();
    // Down for three hours: the whole ladder is overdue when countersign comes back.
    let app = TestApp::start_at(test_config(&db), start_time() + Duration::hours(3)).await;
    let expired = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            let proposal: Value = app.get(REVOPS, &id).await.json().await.unwrap();
            if proposal["status"] == "expired" {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        expired.is_ok(),
        "the overdue expiry fired after the restart"
    );
    let fired: Vec<String> = kinds(&db, &id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("proposal.re") || k == "proposal.escalated")
        .collect();
    assert_eq!(
        fired,
        [
            "proposal.reminded",
            "proposal.escalated",
            "proposal.escalated"
        ],
        "each once, in order"
    );
    app.stop().await.unwrap();
}
both_backends!(timers_due_during_a_restart_fire_when_it_is_back);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_fire_each_timer_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.store().await;
    // Forty proposals armed by one replica; then two replicas come up after everything is due.
    let first = TestApp::start(&db).await;
    let mut ids = Vec::new();
    for n in 0..40 {
        let mut body = discount_proposal();
        body["summary"] = serde_json::json!(format!("Discount {n}"));
        ids.push(
            first.create(REVOPS, &body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    first.stop().await.unwrap();
    let later = start_time() + Duration::minutes(20);
    let (a, b) = tokio::join!(
        TestApp::start_at(test_config(&db), later),
        TestApp::start_at(test_config(&db), later)
    );
    // Both workers race for the same reminders (due at 15 minutes).
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let due = store.claim_timers(later, later, 1).await.unwrap();
            let reminded = db
                .audit_of(&ids[39])
                .await
                .iter()
                .any(|e| e.kind == "proposal.reminded");
            if due.is_empty() && reminded {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "every due timer fired");
    for id in &ids {
        let reminders = db
            .audit_of(id)
            .await
            .iter()
            .filter(|e| e.kind == "proposal.reminded")
            .count();
        assert_eq!(reminders, 1, "{id}");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn an_escalation_that_grants_approval_makes_the_on_call_person_an_approver(db: TestDb) {
    let fixture = crate::fixture::Fixture::new();
    fixture.edit(
        "policies/finance.yaml",
        "{after: 30m, notify: oncall}",
        "{after: 30m, notify: oncall, grants_approval: true}",
    );
    // On call for finance that day: someone who is not a finance approver.
    fixture.edit(
        "manifests/oncall.yaml",
        "      - {user: U0MGR001, start: \"2026-12-24T00:00\", end: \"2026-12-28T00:00\"}",
        "      - {user: U0MGR001, start: \"2026-12-24T00:00\", end: \"2026-12-28T00:00\"}\n      - {user: U0SALES02, start: \"2026-11-21T00:00\", end: \"2026-11-22T00:00\"}",
    );
    let app = TestApp::start_with(fixture.config(&db)).await;
    let created = app.create(REVOPS, &discount_proposal()).await;
    let id = created["id"].as_str().unwrap();
    let slack = app.slack();
    let card = slack
        .wait_for_card("C0FINANCE", id, "the card", |_| true)
        .await;
    slack.click("U0SALES02", &card, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0SALES02", "Only approvers for finance")
        .await;

    app.clock.advance(Duration::minutes(30));
    slack
        .wait_for("@U0SALES02", "U0SALES02", "the escalation DM", |m| {
            m.iter().find(|m| m.text.contains("Escalation 2")).cloned()
        })
        .await;
    slack.click("U0SALES02", &card, "approve").await;
    slack
        .wait_for_ephemeral("C0FINANCE", "U0SALES02", "completed the quorum")
        .await;
    let proposal: Value = app.get(REVOPS, id).await.json().await.unwrap();
    assert_eq!(proposal["status"], "approved");
    app.stop().await.unwrap();
}
both_backends!(an_escalation_that_grants_approval_makes_the_on_call_person_an_approver);
