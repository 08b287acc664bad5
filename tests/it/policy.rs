//! The policy engine end to end: shipped policies and their table tests, verdicts through the
//! API on both backends, agent modes, catalog refusals, fail-closed evaluation, load errors, and
//! reload.

use countersign::registry::Registry;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, manifests_dir, policies_dir, problem};
use crate::fixture::Fixture;

#[test]
fn the_shipped_policy_tests_pass() {
    let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
    let report =
        countersign::policy::cases::run_tests(&registry, &policies_dir().join("tests")).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    assert!(report.passed.len() >= 15, "{:?}", report.passed);
}

fn tag_lead() -> Value {
    json!({"action": "crm.lead.tag", "summary": "Tag Acme as hot", "params": {"tag": "hot"}})
}

async fn auto_approved_proposals_are_decided_at_once(db: TestDb) {
    let app = TestApp::start(&db).await;
    let created = app.create(REVOPS, &tag_lead()).await;
    assert_eq!(created["status"], "approved");
    assert_eq!(created["verdict"]["outcome"], "auto_approve");
    assert_eq!(
        created["decision"]["by"],
        json!({"kind": "policy", "id": "lead-tagging"})
    );
    let id = created["id"].as_str().unwrap();

    let events = db.audit_of(id).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("proposal.submitted", "agent:revops-crm"),
            ("proposal.decided", "policy:lead-tagging")
        ]
    );
    assert!(
        events[0].data.contains("\"outcome\":\"auto_approve\""),
        "the verdict is in the trail"
    );

    // Approved, so the agent may report the outcome straight away.
    let outcome = app
        .post(
            REVOPS,
            &format!("/v1/proposals/{id}/outcome"),
            Some(&json!({"result": "executed", "execution_token": created["decision"]["execution_token"],
                         "digest": created["decision"]["digest"]})),
        )
        .await;
    assert_eq!(outcome.status(), 200);
}
both_backends!(auto_approved_proposals_are_decided_at_once);

async fn denied_proposals_are_rejected_with_the_reason(db: TestDb) {
    let app = TestApp::start(&db).await;
    let body = json!({"action": "contacts.export", "summary": "Export the patients list", "data_classes": ["pii", "health"]});
    let created = app.create(REVOPS, &body).await;
    assert_eq!(created["status"], "rejected");
    assert_eq!(created["verdict"]["outcome"], "deny");
    // The decision names the rule that denied, not every rule that matched.
    assert_eq!(
        created["decision"]["by"],
        json!({"kind": "policy", "id": "no-health-data-exports"})
    );
    assert_eq!(
        created["verdict"]["rules"],
        json!(["personal-data", "no-health-data-exports"])
    );
    assert!(
        created["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("Exports of health data are forbidden"),
        "{created}"
    );
}
both_backends!(denied_proposals_are_rejected_with_the_reason);

async fn routing_to_one_role_and_to_several(db: TestDb) {
    let app = TestApp::start(&db).await;
    let refund = json!({"action": "billing.refund", "summary": "Refund $120 to Acme", "params": {"amount": 120}});
    let single = app.create(BILLING, &refund).await;
    assert_eq!(single["status"], "pending");
    assert_eq!(single["verdict"]["route"], json!(["finance"]));
    assert_eq!(single["verdict"]["step_up"], "totp");

    let big = json!({"action": "billing.invoice.pay", "summary": "Pay Initech", "params": {"amount": 25000}});
    let multi = app.create(BILLING, &big).await;
    assert_eq!(multi["verdict"]["route"], json!(["finance", "legal"]));
    assert_eq!(
        multi["verdict"]["quorum"],
        json!({"approvals": 2, "each_role": true, "per_role": {"finance": 1, "legal": 1}})
    );
    assert_eq!(
        multi["verdict"]["rules"],
        json!(["refunds-and-payments", "large-money-movement"])
    );
}
both_backends!(routing_to_one_role_and_to_several);

async fn catalog_and_mode_refusals(db: TestDb) {
    let fixture = Fixture::new();
    fixture.edit(
        "manifests/agents/billing.yaml",
        "mode: active",
        "mode: paused",
    );
    fixture.edit(
        "manifests/agents/outbound-email.yaml",
        "mode: active",
        "mode: draft_only",
    );
    let app = TestApp::start_with(fixture.config(&db)).await;

    // Not in the catalog: 403, naming the field, and audited.
    let refund = json!({"action": "billing.refund", "summary": "Refund"});
    let body = problem(app.submit(REVOPS, &refund).await, 403).await;
    assert_eq!(body["type"], "urn:countersign:problem:action-not-permitted");
    assert_eq!(body["field"], "action");
    // Read-only for this agent: 403 too.
    let read = json!({"action": "crm.report.read", "summary": "Read the pipeline"});
    problem(app.submit(REVOPS, &read).await, 403).await;
    // A paused agent: 423.
    let body = problem(app.submit(BILLING, &refund).await, 423).await;
    assert_eq!(body["type"], "urn:countersign:problem:agent-paused");
    // A draft_only agent: what would be auto-approved waits for a person.
    let draft = json!({"action": "email.draft", "summary": "Draft a follow-up"});
    let created = app.create("cs_demo_outbound_email_d3m0t0k3n", &draft).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(created["verdict"]["outcome"], "needs_review");
    assert!(
        created["verdict"]["reasons"]
            .to_string()
            .contains("draft_only"),
        "{created}"
    );

    let store = db.store().await;
    let events = store.audit_page(&Default::default(), 0, 100).await.unwrap();
    let refusals: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "request.refused")
        .map(|e| e.actor.as_str())
        .collect();
    assert_eq!(
        refusals,
        ["agent:revops-crm", "agent:revops-crm", "agent:billing"]
    );
    assert!(
        events[0].data.contains("not in the agent's catalog"),
        "{}",
        events[0].data
    );
    assert_eq!(
        store.count_by_status().await.unwrap().len(),
        1,
        "only the draft was stored"
    );
}
both_backends!(catalog_and_mode_refusals);

async fn a_rule_that_fails_to_evaluate_fails_closed(db: TestDb) {
    let fixture = Fixture::new();
    // No has() guard: for a proposal without `priority` this rule cannot be evaluated.
    fixture.write(
        "policies/unguarded.yaml",
        "rules:\n  - name: unguarded-priority\n    when: proposal.params.priority > 3\n    decision: auto_approve\n    reason: urgent things go through\n",
    );
    let app = TestApp::start_with(fixture.config(&db)).await;
    // Without the broken rule this would be auto-approved (lead-tagging).
    let created = app.create(REVOPS, &tag_lead()).await;
    assert_eq!(created["status"], "pending", "{created}");
    assert_eq!(created["verdict"]["outcome"], "needs_review");
    // The rule had no route: the review goes where the action's impact sends reviews.
    assert_eq!(created["verdict"]["route"], json!(["security"]));
    let reasons = created["verdict"]["reasons"].to_string();
    assert!(
        reasons.contains("unguarded-priority: could not be evaluated")
            && reasons.contains("fail closed"),
        "{reasons}"
    );
}
both_backends!(a_rule_that_fails_to_evaluate_fails_closed);

#[test]
fn broken_policies_are_refused_naming_file_line_and_rule() {
    let cases = [
        (
            "rules:\n  - name: bad\n    when: action.id ==\n    route: [finance]\n",
            "bad.yaml:3: rules[0].when: rule bad: does not compile",
        ),
        (
            "rules:\n  - name: bad\n    when: proposal.parms.x == 1\n    route: [finance]\n",
            "unknown field `proposal.parms`",
        ),
        (
            "rules:\n  - name: bad\n    when: size(proposal.changes)\n    route: [finance]\n",
            "not a boolean",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    route: [treasury]\n",
            "bad.yaml:2: rules[0].route: rule bad: no role named \"treasury\"",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n",
            "a review needs a route",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    decision: deny\n",
            "a decision (auto_approve or deny) needs a reason",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    decision: deny\n    reason: no\n    route: [finance]\n",
            "not both",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    route: [finance]\n    sla: soon\n",
            "not a duration",
        ),
        (
            "rules:\n  - name: large-discount\n    when: 'true'\n    route: [finance]\n",
            "already defined",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    route: [finance]\n    colour: red\n",
            "colour",
        ),
        (
            "rules:\n  - name: bad\n    when: 'true'\n    route: [finance]\n    reject_reasons: ['']\n",
            "bad.yaml:2: rules[0].reject_reasons: rule bad: \"\": each reason is 1 to 75 characters",
        ),
    ];
    for (text, expected) in cases {
        let fixture = Fixture::new();
        fixture.write("policies/bad.yaml", text);
        let error = Registry::load(&fixture.manifests(), &fixture.policies())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text}\n→ {error}");
    }
    let fixture = Fixture::new();
    std::fs::remove_file(fixture.policies().join("defaults.yaml")).unwrap();
    let error = Registry::load(&fixture.manifests(), &fixture.policies())
        .unwrap_err()
        .to_string();
    assert!(error.contains("defaults"), "{error}");
}

#[tokio::test]
async fn reload_keeps_the_old_set_when_the_new_one_is_broken() {
    let db = TestDb::sqlite();
    let fixture = Fixture::new();
    let config = fixture.config(&db);
    let registry = countersign::registry::SharedRegistry::new(
        Registry::load(&config.manifests, &config.policies).unwrap(),
    );

    fixture.write(
        "policies/bad.yaml",
        "rules:\n  - name: bad\n    when: nope(\n    route: [finance]\n",
    );
    let error = countersign::app::reload(&registry, &config).unwrap_err();
    assert!(error.to_string().contains("bad.yaml"), "{error}");
    assert_eq!(
        registry.current().policies.rules().len(),
        13,
        "the old set stays"
    );

    std::fs::remove_file(fixture.policies().join("bad.yaml")).unwrap();
    fixture.edit(
        "manifests/agents/billing.yaml",
        "mode: active",
        "mode: paused",
    );
    countersign::app::reload(&registry, &config).unwrap();
    let current = registry.current();
    let billing = current
        .agents
        .agents()
        .iter()
        .find(|a| a.id.as_str() == "billing")
        .unwrap();
    assert_eq!(billing.mode, countersign::manifest::AgentMode::Paused);
}

/// Every shipped example explains to the verdict its README promises.
#[test]
fn the_shipped_examples_explain_as_documented() {
    let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
    let cases = [
        (
            "discount.json",
            "revops-crm",
            "needs_review",
            vec!["large-discount"],
        ),
        (
            "tag-lead.json",
            "revops-crm",
            "auto_approve",
            vec!["lead-tagging"],
        ),
        (
            "large-payment.json",
            "billing",
            "needs_review",
            vec!["refunds-and-payments", "large-money-movement"],
        ),
        (
            "access-grant.json",
            "revops-crm",
            "needs_review",
            vec!["access-changes"],
        ),
        (
            "health-export.json",
            "revops-crm",
            "deny",
            vec![
                "personal-data",
                "bulk-record-update",
                "no-health-data-exports",
            ],
        ),
    ];
    for (file, agent, outcome, rules) in cases {
        let body: Value = serde_json::from_str(
            &std::fs::read_to_string(policies_dir().join("examples").join(file)).unwrap(),
        )
        .unwrap();
        let (agent, request, evaluation) =
            countersign::policy::cases::evaluate(&registry, agent, body, chrono::Utc::now())
                .unwrap();
        assert_eq!(
            serde_json::to_value(evaluation.verdict.outcome).unwrap(),
            outcome,
            "{file}"
        );
        assert_eq!(evaluation.verdict.rules, rules, "{file}");
        let text = countersign::policy::cases::explain(&registry, &agent, &request, &evaluation);
        let matched: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  MATCH   "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(matched, rules, "{file}:\n{text}");
        assert!(text.contains(&format!("verdict: {outcome}")), "{text}");
    }
}

/// A rule may say auto_approve; the catalog's autonomy still has the last word.
#[test]
fn an_action_that_is_not_autonomous_is_never_auto_approved() {
    let fixture = Fixture::new();
    fixture.write(
        "policies/lenient.yaml",
        "rules:\n  - name: wave-through-updates\n    when: action.id == \"crm.opportunity.update\"\n    decision: auto_approve\n    reason: trusted\n",
    );
    let registry = Registry::load(&fixture.manifests(), &fixture.policies()).unwrap();
    let body = json!({"action": "crm.opportunity.update", "summary": "Fix the close date"});
    let (_, _, evaluation) =
        countersign::policy::cases::evaluate(&registry, "revops-crm", body, chrono::Utc::now())
            .unwrap();
    let verdict = evaluation.verdict;
    assert_eq!(
        verdict.outcome,
        countersign::domain::VerdictOutcome::NeedsReview
    );
    assert_eq!(verdict.rules, ["wave-through-updates", "action-autonomy"]);
    assert!(
        verdict
            .reasons
            .iter()
            .any(|r| r.contains("autonomy is approval")),
        "{:?}",
        verdict.reasons
    );
    assert_eq!(verdict.route, ["revops"], "the medium-impact default route");
}
