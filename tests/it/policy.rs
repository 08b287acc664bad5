//! The policy engine end to end: shipped policies and their table tests, verdicts through the
//! API on both backends, agent modes, catalog refusals, fail-closed evaluation, load errors, and
//! reload.

use std::path::{Path, PathBuf};

use countersign::registry::Registry;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{BILLING, REVOPS, TestApp, TestDb, manifests_dir, problem, test_config};

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the shipped manifests and policies that a test may edit.
pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&manifests_dir(), &dir.path().join("manifests"));
        copy_dir(&policies_dir(), &dir.path().join("policies"));
        Self { dir }
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Replaces `from` with `to` in a file of the fixture, asserting it was there.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    pub fn config(&self, db: &TestDb) -> countersign::config::Config {
        let mut config = test_config(db);
        config.manifests = self.manifests();
        config.policies = self.policies();
        config
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

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

    let store = db.store().await;
    let filter = countersign::audit::AuditFilter {
        since: None,
        proposal_id: Some(id.to_owned()),
    };
    let events = store.audit_page(&filter, 0, 10).await.unwrap();
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
            Some(&json!({"result": "executed"})),
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
    assert_eq!(created["decision"]["by"]["kind"], "policy");
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
        json!({"approvals": 2, "each_role": true})
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

fn countersign(fixture: &Fixture, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_MANIFESTS", fixture.manifests())
        .env("COUNTERSIGN_POLICIES", fixture.policies())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run countersign")
}

#[test]
fn policy_check_explain_and_test_from_the_command_line() {
    let fixture = Fixture::new();
    let check = countersign(&fixture, &["policy", "check"]);
    assert!(check.status.success(), "{check:?}");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok: 3 agents, 4 roles, 13 rules"
    );

    let example = policies_dir().join("examples/discount.json");
    let explain = countersign(
        &fixture,
        &[
            "policy",
            "explain",
            example.to_str().unwrap(),
            "--agent",
            "revops-crm",
        ],
    );
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.status.success(), "{explain:?}");
    assert!(
        text.contains("MATCH   large-discount") && text.contains("-       lead-tagging"),
        "{text}"
    );
    assert!(
        text.contains("verdict: needs_review") && text.contains("route: finance"),
        "{text}"
    );
    let json = countersign(
        &fixture,
        &[
            "policy",
            "explain",
            example.to_str().unwrap(),
            "--agent",
            "revops-crm",
            "--json",
        ],
    );
    let verdict: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(verdict["route"], json!(["finance"]));
    let unknown = countersign(
        &fixture,
        &[
            "policy",
            "explain",
            example.to_str().unwrap(),
            "--agent",
            "nobody",
        ],
    );
    assert!(!unknown.status.success());

    let tests = countersign(&fixture, &["policy", "test"]);
    assert!(tests.status.success(), "{tests:?}");
    // A policy change that breaks an expectation fails the table tests, naming the case.
    fixture.edit(
        "policies/finance.yaml",
        "double(proposal.params.discount_percent) > 10.0",
        "double(proposal.params.discount_percent) > 20.0",
    );
    let failing = countersign(&fixture, &["policy", "test"]);
    assert_eq!(failing.status.code(), Some(1));
    let out = String::from_utf8_lossy(&failing.stdout);
    assert!(
        out.contains("FAIL") && out.contains("a 15% discount goes to finance"),
        "{out}"
    );

    // A broken file: check names file, line and key, and exits 1.
    fixture.write(
        "policies/zz.yaml",
        "rules:\n  - name: broken\n    when: action.id ==\n    route: [finance]\n",
    );
    let broken = countersign(&fixture, &["policy", "check"]);
    assert_eq!(broken.status.code(), Some(1));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(
        err.contains("zz.yaml:3: rules[0].when: rule broken: does not compile"),
        "{err}"
    );
}

/// SIGHUP on the real binary: a good change takes effect, a broken one is refused and the old
/// set stays. The test waits on the server's log lines, never on the clock.
#[tokio::test]
async fn sighup_reloads_manifests_and_policies() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let fixture = Fixture::new();
    let data = tempfile::tempdir().unwrap();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--log-json"])
        .env("COUNTERSIGN_LISTEN", "127.0.0.1:0")
        .env(
            "COUNTERSIGN_DATABASE_URL",
            format!("sqlite://{}", data.path().join("db").display()),
        )
        .env("COUNTERSIGN_MANIFESTS", fixture.manifests())
        .env("COUNTERSIGN_POLICIES", fixture.policies())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = server.id().unwrap().to_string();
    let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut wait_for = async |message: &str| -> Value {
        let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = log.next_line().await.unwrap() {
                let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if entry["message"] == message {
                    return entry;
                }
            }
            panic!("the server exited before logging {message:?}");
        });
        found
            .await
            .unwrap_or_else(|_| panic!("no {message:?} in the log"))
    };
    let address = wait_for("countersign listening").await["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let refund =
        json!({"action": "billing.refund", "summary": "Refund $120", "params": {"amount": 120}});
    let submit = || {
        http.post(format!("http://{address}/v1/proposals"))
            .bearer_auth(BILLING)
            .json(&refund)
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 201);

    fixture.edit(
        "manifests/agents/billing.yaml",
        "mode: active",
        "mode: paused",
    );
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
    };
    assert!(hup().success());
    wait_for("SIGHUP: manifests and policies reloaded").await;
    assert_eq!(submit().await.unwrap().status(), 423);

    fixture.edit(
        "manifests/agents/billing.yaml",
        "mode: paused",
        "mode: active",
    );
    fixture.write(
        "policies/zz.yaml",
        "rules:\n  - name: broken\n    when: nope(\n    route: [finance]\n",
    );
    assert!(hup().success());
    let refused =
        wait_for("SIGHUP: reload refused; the previous manifests and policies stay in force").await;
    assert!(
        refused["error"].as_str().unwrap().contains("zz.yaml"),
        "{refused}"
    );
    assert_eq!(
        submit().await.unwrap().status(),
        423,
        "the previous set (billing paused) stays"
    );
    server.kill().await.unwrap();
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
