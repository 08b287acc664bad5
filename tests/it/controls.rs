//! The kill switch: pause and draft-only from Slack (admins only) and from the admin API, per
//! agent or per action, audited, in force for the very next request, cleared by resume.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{
    OUTBOUND, REVOPS, TestApp, TestDb, discount_proposal, email_draft, problem, test_config,
};
use crate::fixture::Fixture;
use crate::slack_client::{card_for, status_of};

const ADMIN: &str = "admin-token-for-the-control-tests";

fn tag_lead() -> Value {
    json!({"action": "crm.lead.tag", "summary": "Tag Acme as hot", "params": {"tag": "hot"}})
}

/// `redis`: a Redis URL and key prefix for the shared counters.
fn with_redis(
    mut config: countersign::config::Config,
    redis: Option<(String, String)>,
) -> countersign::config::Config {
    if let Some((url, prefix)) = redis {
        config.redis_url = Some(countersign::config::Secret::new(url));
        config.redis_key_prefix = prefix;
    }
    config
}

fn config(db: &TestDb, admins: &[&str]) -> countersign::config::Config {
    with_admins(test_config(db), admins)
}

/// `config` with these Slack admins, and the admin API's token.
fn with_admins(
    mut config: countersign::config::Config,
    admins: &[&str],
) -> countersign::config::Config {
    config.slack_admins = admins.iter().map(|a| (*a).to_owned()).collect();
    config.admin_token = Some(countersign::config::Secret::new(ADMIN.to_owned()));
    config
}

async fn controls_in_trail(db: &TestDb) -> Vec<(String, String, Value)> {
    db.store()
        .await
        .audit_page(&Default::default(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("agent."))
        .map(|e| (e.kind, e.actor, serde_json::from_str(&e.data).unwrap()))
        .collect()
}

async fn a_pause_from_slack_refuses_the_next_proposal_and_is_audited(db: TestDb) {
    let app = TestApp::start_with(config(&db, &["U0MGR001"])).await;
    let (pending, _) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let slack = app.slack();

    let acted = slack
        .command(
            "U0MGR001",
            "C0FINANCE",
            "pause revops-crm --reject-pending Runaway discounts",
        )
        .await;
    let reply = acted.body["text"].as_str().unwrap();
    assert!(reply.contains("*revops-crm* is paused"), "{reply}");
    assert!(reply.contains("1 pending proposal(s) rejected"), "{reply}");

    // The very next request is refused, with the operator's reason.
    let refused = problem(app.submit(REVOPS, &tag_lead()).await, 423).await;
    assert_eq!(refused["type"], "urn:countersign:problem:agent-paused");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("Runaway discounts")
    );
    // Its pending proposal was rejected by the admin, with the reason.
    let rejected = status_of(&app, REVOPS, &pending).await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(
        rejected["decision"]["by"],
        json!({"kind": "reviewer", "id": "U0MGR001"})
    );
    assert_eq!(
        rejected["decision"]["reason"],
        "agent paused revops-crm: Runaway discounts"
    );
    // The role channel the agent's cards go to hears of it: who, why, and (on a line of its
    // own) how many pending proposals went with it.
    let notice = slack
        .wait_for("C0FINANCE", "U0NOBODY", "the pause notice", |messages| {
            messages
                .iter()
                .find(|m| m.text.contains(":octagonal_sign: *revops-crm* paused"))
                .cloned()
        })
        .await;
    assert!(notice.text.contains("— by <@U0MGR001>."), "{}", notice.text);
    assert!(
        notice
            .text
            .ends_with("\nReason: Runaway discounts\n1 pending proposal rejected."),
        "{}",
        notice.text
    );

    let resumed = slack
        .command(
            "U0MGR001",
            "C0FINANCE",
            "resume revops-crm fixed the prompt",
        )
        .await;
    assert!(
        resumed.body["text"]
            .as_str()
            .unwrap()
            .contains("back to what its manifest says")
    );
    assert_eq!(app.submit(REVOPS, &tag_lead()).await.status(), 201);

    let trail = controls_in_trail(&db).await;
    assert_eq!(
        trail,
        [
            (
                "agent.controlled".to_owned(),
                "reviewer:U0MGR001".to_owned(),
                json!({"agent": "revops-crm", "action": null, "mode": "paused", "reason": "Runaway discounts", "reject_pending": true})
            ),
            (
                "agent.resumed".to_owned(),
                "reviewer:U0MGR001".to_owned(),
                json!({"agent": "revops-crm", "action": null, "reason": "fixed the prompt"})
            ),
        ]
    );
    app.stop().await.unwrap();
}
both_backends!(a_pause_from_slack_refuses_the_next_proposal_and_is_audited);

async fn only_admins_may_pause(db: TestDb) {
    // Admins by user group: finance approvers (U0FIN001, U0FIN002, U0MGR001).
    let app = TestApp::start_with(config(&db, &["S0FINAPPR"])).await;
    let slack = app.slack();
    let refused = slack
        .command("U0REVOPS01", "C0REVOPS", "pause revops-crm because")
        .await;
    assert!(
        refused.body["text"]
            .as_str()
            .unwrap()
            .contains("Only countersign admins")
    );
    assert_eq!(app.submit(REVOPS, &tag_lead()).await.status(), 201);
    assert!(controls_in_trail(&db).await.is_empty(), "nothing changed");

    // A member of the admins' group may; the word after the agent names one of its actions.
    let paused = slack
        .command(
            "U0FIN002",
            "C0REVOPS",
            "pause revops-crm crm.lead.tag tagging spree",
        )
        .await;
    assert!(
        paused.body["text"]
            .as_str()
            .unwrap()
            .contains("`crm.lead.tag` of *revops-crm* is paused")
    );
    problem(app.submit(REVOPS, &tag_lead()).await, 423).await;
    // Other actions go on.
    assert_eq!(app.submit(REVOPS, &discount_proposal()).await.status(), 201);
    let unknown = slack
        .command("U0FIN002", "C0REVOPS", "pause no-such-agent")
        .await;
    assert!(
        unknown.body["text"]
            .as_str()
            .unwrap()
            .contains("There is no agent `no-such-agent`")
    );
    app.stop().await.unwrap();
}
both_backends!(only_admins_may_pause);

async fn draft_only_from_the_admin_api_forces_review(db: TestDb) {
    let app = TestApp::start_with(config(&db, &[])).await;
    let url = app.url("/v1/admin/agents/revops-crm/controls");
    let set = |body: Value| app.http.post(&url).bearer_auth(ADMIN).json(&body).send();

    let missing = problem(
        set(json!({"mode": "draft_only", "reason": " "}))
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(missing["field"], "reason");
    let bad = problem(
        set(json!({"mode": "paused", "action": "crm.nope", "reason": "x"}))
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(bad["field"], "action");
    let nobody = app
        .http
        .get(app.url("/v1/admin/agents/nobody/controls"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    problem(nobody, 404).await;

    let body: Value =
        set(json!({"mode": "draft_only", "reason": "new prompt under watch", "by": "ops@acme"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(body["manifest_mode"], "active");
    assert_eq!(body["controls"][0]["mode"], "draft_only");
    assert_eq!(body["controls"][0]["set_by"], "system:admin:ops@acme");

    // Tagging a lead is auto-approved by policy; draft-only, it waits for a person.
    let drafted = app.create(REVOPS, &tag_lead()).await;
    assert_eq!(drafted["status"], "pending");
    assert_eq!(drafted["verdict"]["outcome"], "needs_review");

    let cleared: Value = app
        .http
        .delete(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["controls"], json!([]));
    assert_eq!(app.create(REVOPS, &tag_lead()).await["status"], "approved");
    let unauthorized = app.http.delete(&url).send().await.unwrap();
    problem(unauthorized, 401).await;
    app.stop().await.unwrap();
}
both_backends!(draft_only_from_the_admin_api_forces_review);

/// Every change from the admin API is announced, through the outbox: six quick pauses and
/// resumes make six audit events and six posts, however the channel's budget paces them; a
/// resume says who and why.
async fn every_admin_change_is_announced_through_the_outbox(db: TestDb) {
    let app = TestApp::start_with(config(&db, &[])).await;
    // A card in finance: that is where revops-crm's announcements go.
    card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let url = app.url("/v1/admin/agents/revops-crm/controls");
    for n in 0..3 {
        let pause = json!({"mode": "paused", "reason": format!("check {n}"), "by": "ops@acme"});
        let set = app.http.post(&url).bearer_auth(ADMIN).json(&pause).send();
        assert_eq!(set.await.unwrap().status(), 200);
        let resume = app
            .http
            .delete(format!("{url}?by=ops@acme&reason=looked+at+it+{n}"))
            .bearer_auth(ADMIN)
            .send();
        assert_eq!(resume.await.unwrap().status(), 200);
    }
    let too_long = app
        .http
        .delete(format!("{url}?reason={}", "x".repeat(501)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(too_long, 422).await["field"], "reason");
    assert_eq!(controls_in_trail(&db).await.len(), 6);

    // The channel's budget lets some out at once; the rest follow as time passes.
    let slack = app.slack();
    let notices = || async {
        let messages: Vec<Value> = app
            .http
            .get(app.url("/sandbox/control/messages?channel=C0FINANCE"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        messages
            .into_iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .filter(|t| t.contains("*revops-crm*"))
            .collect::<Vec<String>>()
    };
    crate::common::eventually(
        std::time::Duration::from_secs(20),
        "six notices",
        || async {
            app.clock.advance(chrono::Duration::seconds(1));
            notices().await.len() == 6
        },
    )
    .await;
    let all = notices().await;
    assert_eq!(all.iter().filter(|t| t.contains(" paused: ")).count(), 3);
    let resumed: Vec<&String> = all.iter().filter(|t| t.contains(" resumed: ")).collect();
    assert_eq!(resumed.len(), 3);
    assert!(
        resumed[0].contains("— by an operator (admin API).\nReason: looked at it 0"),
        "{}",
        resumed[0]
    );
    let refused = slack.calls().await;
    assert!(
        refused.iter().all(|c| c["status"] == 200),
        "paced by the budget, never refused: {refused:#?}"
    );
    app.stop().await.unwrap();
}
both_backends!(every_admin_change_is_announced_through_the_outbox);

async fn an_agent_over_its_rate_is_told_when_to_retry(db: TestDb) {
    rate_limited_with(db, None).await;
}
both_backends!(an_agent_over_its_rate_is_told_when_to_retry);

/// With `redis` (a URL and key prefix), the buckets are in Redis (`redis_limits.rs` runs these
/// there too).
pub async fn rate_limited_with(db: TestDb, redis: Option<(String, String)>) {
    let (app, draft) = outbound_burst_spent(&db, redis).await;
    let response = app.submit(OUTBOUND, &draft).await;
    assert_eq!(response.headers()["retry-after"], "2");
    let limited = problem(response, 429).await;
    assert_eq!(limited["type"], "urn:countersign:problem:rate-limited");
    assert_eq!(limited["retry_after_seconds"], 2.0);
    // Other agents are not affected; the agent itself is let through once it waited.
    assert_eq!(app.submit(REVOPS, &tag_lead()).await.status(), 201);
    app.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(app.submit(OUTBOUND, &draft).await.status(), 201);
    assert_eq!(
        problem(app.submit(OUTBOUND, &draft).await, 429).await["status"],
        429
    );
    app.stop().await.unwrap();
}

async fn the_circuit_breaker_pauses_an_agent_rejected_again_and_again(db: TestDb) {
    // revops-crm's manifest: five rejections in a row trip it.
    let app = TestApp::start_with(config(&db, &["U0MGR001"])).await;
    let denied = json!({"action": "contacts.export", "summary": "Export the patients list", "data_classes": ["pii", "health"]});
    for _ in 0..4 {
        assert_eq!(app.create(REVOPS, &denied).await["status"], "rejected");
    }
    // The fifth rejection is a person's, in Slack.
    let (id, card) = card_for(&app, REVOPS, &discount_proposal(), "C0FINANCE").await;
    let slack = app.slack();
    let view = slack.click("U0FIN001", &card, "reject").await.view.unwrap();
    let values = json!({"preset": {"choice": "Above the discount playbook"}});
    slack
        .submit("U0FIN001", view["id"].as_str().unwrap(), values)
        .await;
    assert_eq!(status_of(&app, REVOPS, &id).await["status"], "rejected");

    let notice = slack
        .wait_for(
            "C0FINANCE",
            "U0NOBODY",
            "the breaker's notice",
            |messages| {
                messages
                    .iter()
                    .find(|m| {
                        m.text
                            .contains("paused: new proposals are refused — by the circuit breaker")
                    })
                    .cloned()
            },
        )
        .await;
    assert!(notice.text.contains("last 5 proposals were all rejected"));
    assert!(notice.text.contains("/countersign resume revops-crm"));
    let refused = problem(app.submit(REVOPS, &tag_lead()).await, 423).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("circuit breaker")
    );
    let trail = controls_in_trail(&db).await;
    assert_eq!(trail[0].1, "system:breaker");
    // A person looks, and resumes it.
    slack
        .command("U0MGR001", "C0FINANCE", "resume revops-crm prompt fixed")
        .await;
    assert_eq!(app.submit(REVOPS, &tag_lead()).await.status(), 201);
    app.stop().await.unwrap();
}
both_backends!(the_circuit_breaker_pauses_an_agent_rejected_again_and_again);

/// An app whose outbound-email agent has just spent its burst of five (see [`OUTBOUND`]), and
/// the proposal it spent it on.
async fn outbound_burst_spent(db: &TestDb, redis: Option<(String, String)>) -> (TestApp, Value) {
    let app = TestApp::start_with(with_redis(config(db, &[]), redis)).await;
    let draft = email_draft();
    for _ in 0..5 {
        assert_eq!(app.submit(OUTBOUND, &draft).await.status(), 201);
    }
    (app, draft)
}

async fn a_flood_trips_the_circuit_breaker(db: TestDb) {
    flood_with(db, None).await;
}
both_backends!(a_flood_trips_the_circuit_breaker);

pub async fn flood_with(db: TestDb, redis: Option<(String, String)>) {
    let (app, draft) = outbound_burst_spent(&db, redis).await;
    for _ in 0..20 {
        assert_eq!(app.submit(OUTBOUND, &draft).await.status(), 429);
    }
    // Even once its rate allows again, it stays paused until a person resumes it.
    app.clock.advance(chrono::Duration::minutes(5));
    let paused = problem(app.submit(OUTBOUND, &draft).await, 423).await;
    assert!(
        paused["detail"]
            .as_str()
            .unwrap()
            .contains("flooded: 20 proposals")
    );
    app.stop().await.unwrap();
}

async fn an_auto_approval_over_budget_becomes_a_review_that_names_it(db: TestDb) {
    // The repository's manifests with `budgets` added to revops-crm's.
    let fixture = Fixture::new();
    fixture.append(
        "manifests/agents/revops-crm.yaml",
        "budgets: {per_proposal: 500, daily: {amount: 1000, count: 3}}\n",
    );
    let app = TestApp::start_with(with_admins(fixture.config(&db), &[])).await;
    let tag = |amount: Option<f64>| {
        let mut body = tag_lead();
        if let Some(amount) = amount {
            body["params"]["amount"] = json!(amount);
        }
        body
    };
    let over = app.create(REVOPS, &tag(Some(600.0))).await;
    assert_eq!(over["status"], "pending");
    let reasons = over["verdict"]["reasons"].to_string();
    assert!(
        reasons.contains("600 is over the per-proposal auto-approval cap of 500"),
        "{reasons}"
    );
    // The card says which budget.
    let id = over["id"].as_str().unwrap();
    let card = app
        .slack()
        .wait_for_card("C0SECURITY", id, "the card", |_| true)
        .await;
    assert!(
        card.visible_text()
            .contains("per-proposal auto-approval cap")
    );

    assert_eq!(
        app.create(REVOPS, &tag(Some(400.0))).await["status"],
        "approved"
    );
    assert_eq!(
        app.create(REVOPS, &tag(Some(400.0))).await["status"],
        "approved"
    );
    let daily = app.create(REVOPS, &tag(Some(300.0))).await;
    assert_eq!(daily["status"], "pending");
    assert!(
        daily["verdict"]["reasons"]
            .to_string()
            .contains("daily auto-approved amount would reach 1,100 (cap 1,000; 800 used)")
    );
    assert_eq!(app.create(REVOPS, &tag(None)).await["status"], "approved");
    let counted = app.create(REVOPS, &tag(None)).await;
    assert!(
        counted["verdict"]["reasons"]
            .to_string()
            .contains("daily cap of 3 auto-approved proposals")
    );
    // A new UTC day, a new daily budget.
    app.clock.advance(chrono::Duration::days(1));
    assert_eq!(
        app.create(REVOPS, &tag(Some(400.0))).await["status"],
        "approved"
    );
    app.stop().await.unwrap();
}
both_backends!(an_auto_approval_over_budget_becomes_a_review_that_names_it);

/// Amounts as agents send them: integers, decimals, or none at all. Each later submission is
/// still answered (SQLite's SUM of integers once made every one after the first a 500), and the
/// budget counts them all.
async fn budgets_count_integer_decimal_and_absent_amounts(db: TestDb) {
    let fixture = Fixture::new();
    fixture.append(
        "manifests/agents/revops-crm.yaml",
        "budgets: {daily: {amount: 1000, count: 5}}\n",
    );
    let app = TestApp::start_with(with_admins(fixture.config(&db), &[])).await;
    let tag = |amount: Option<Value>| {
        let mut body = tag_lead();
        if let Some(amount) = amount {
            body["params"]["amount"] = amount;
        }
        body
    };
    for amount in [Some(json!(400)), Some(json!(250.5)), None, Some(json!(300))] {
        let created = app.create(REVOPS, &tag(amount.clone())).await;
        assert_eq!(created["status"], "approved", "{amount:?}: {created}");
    }
    let over = app.create(REVOPS, &tag(Some(json!(100)))).await;
    assert_eq!(over["status"], "pending", "{over}");
    assert!(
        over["verdict"]["reasons"]
            .to_string()
            .contains("daily auto-approved amount would reach 1,050.5 (cap 1,000; 950.5 used)"),
        "{over}"
    );
    app.stop().await.unwrap();
}
both_backends!(budgets_count_integer_decimal_and_absent_amounts);

async fn the_autonomy_report_reads_a_known_history(db: TestDb) {
    use countersign::domain::{Actor, Decision, ProposalId, Status};
    use countersign::store::Command;
    // The repository's policies with small autonomy criteria, so a short history can earn them.
    let fixture = Fixture::new();
    fixture.write(
        "policies/autonomy.yaml",
        "autonomy:\n  promote:\n    - {from: approval, to: autonomous, min_decided: 3, max_rejected: 0.3}\n  demote: {min_decided: 2, max_rejected: 0.5, max_failed: 0.5}\n",
    );
    let app = TestApp::start_with(with_admins(fixture.config(&db), &[])).await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            app.create(REVOPS, &discount_proposal()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Three approved and one rejected, decided as the decision path does.
    for (i, id) in ids.iter().enumerate() {
        let (status, reason) = if i == 3 {
            (
                Status::Rejected,
                Some("Above the discount playbook".to_owned()),
            )
        } else {
            (Status::Approved, None)
        };
        let decision = Decision {
            by: Actor {
                kind: countersign::domain::ActorKind::Reviewer,
                id: "U0FIN001".into(),
            },
            at: crate::common::start_time(),
            reason,
            execution_token: None,
            digest: None,
        };
        let command = Command::Decide {
            id: ProposalId::parse(id).unwrap(),
            status,
            decision,
        };
        store
            .apply(vec![command], crate::common::start_time())
            .await
            .unwrap();
    }
    // Two executions reported, one failed.
    for (id, result) in [
        (&ids[0], "executed"),
        (&ids[1], "executed"),
        (&ids[2], "failed"),
    ] {
        let read = app.get(REVOPS, id).await.json::<Value>().await.unwrap();
        let decision = &read["decision"];
        let body = json!({"result": result, "execution_token": decision["execution_token"],
                          "digest": decision["digest"]});
        assert_eq!(
            app.post(REVOPS, &format!("/v1/proposals/{id}/outcome"), Some(&body))
                .await
                .status(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(app.create(REVOPS, &tag_lead()).await["status"], "approved");
    }
    // One override on lead tagging.
    let url = app.url("/v1/admin/agents/revops-crm/controls");
    let pause = json!({"mode": "paused", "action": "crm.lead.tag", "reason": "checking"});
    app.http
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&pause)
        .send()
        .await
        .unwrap();
    app.http
        .delete(format!("{url}?action=crm.lead.tag"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();

    let report: Value = app
        .http
        .get(app.url("/v1/admin/agents/revops-crm/autonomy?period=30d"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action = |name: &str| {
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == name)
            .unwrap()
            .clone()
    };
    let update = action("crm.opportunity.update");
    assert_eq!(
        (
            update["proposals"].clone(),
            update["approved"].clone(),
            update["rejected"].clone()
        ),
        (json!(4), json!(3), json!(1))
    );
    assert_eq!(update["approval_rate"], 0.75);
    assert_eq!(
        update["rejection_reasons"],
        json!([["Above the discount playbook", 1]])
    );
    assert_eq!(
        (
            update["executed"].clone(),
            update["failed_executions"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(update["overrides"], 0);
    assert_eq!(update["recommendation"], "promote");
    assert!(
        update["reason"]
            .as_str()
            .unwrap()
            .contains("eligible for autonomous")
    );
    let tag = action("crm.lead.tag");
    assert_eq!(
        (tag["approved"].clone(), tag["overrides"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(tag["recommendation"], "keep");

    // The same in Slack, for whoever asks.
    let answer = app
        .slack()
        .command("U0FIN001", "C0FINANCE", "autonomy revops-crm 30d")
        .await;
    let text = answer.body["text"].as_str().unwrap();
    assert!(text.contains("`crm.opportunity.update` (approval): 4 proposals, 3 approved / 1 rejected (75% approved)"), "{text}");
    assert!(text.contains("→ *promote*"), "{text}");
    assert!(
        text.contains("rejected ×1: Above the discount playbook"),
        "{text}"
    );
    app.stop().await.unwrap();
}
both_backends!(the_autonomy_report_reads_a_known_history);
