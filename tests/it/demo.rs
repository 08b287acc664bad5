//! `serve --demo`, started as the binary starts it (`demo::prepare`, then `app::run`, then
//! `demo::post_examples`): every pending example card can be approved — the TOTP ones too, the
//! secret key being made and kept in the data directory — and each decision reaches the demo
//! agent's inbox in the sandbox, signed, verified, delivered at the first attempt.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use countersign::demo::{self, CALLBACK_SECRETS_FILE, Inboxes, SECRET_KEY_FILE};
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{
    BILLING, REVOPS, TestApp, TestDb, eventually, policies_dir, start_time, test_config,
};
use crate::slack_client::is_pending;
use crate::step_up::{answer, enroll};

/// Starts countersign the way `serve --demo` does, its demo files in `data`.
async fn start_demo(db: &TestDb, data: &Path) -> (TestApp, Inboxes, countersign::config::Config) {
    let mut config = test_config(db);
    config.report_digest = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let inboxes = demo::prepare(&mut config, address, data)
        .unwrap()
        .expect("the sandbox is on: the demo agents have inboxes");
    let app = TestApp::start_on(config.clone(), listener, start_time()).await;
    (app, inboxes, config)
}

/// Posts the examples as `serve --demo` does; answers each one's proposal id by file.
async fn post_examples(app: &TestApp, inboxes: &Inboxes) -> Vec<(String, Value)> {
    let base = url::Url::parse(&app.base).unwrap();
    let posted = demo::post_examples(&base, &policies_dir().join("examples"), Some(inboxes))
        .await
        .unwrap();
    posted
        .into_iter()
        .map(|p| {
            (
                p.file.to_owned(),
                p.outcome.expect("every example is accepted"),
            )
        })
        .collect()
}

fn id_of(posted: &[(String, Value)], file: &str) -> String {
    let (_, proposal) = posted.iter().find(|(f, _)| f == file).unwrap();
    proposal["id"].as_str().unwrap().to_owned()
}

/// `GET /sandbox/control/inbox?agent=…`, newest first.
async fn inbox(app: &TestApp, agent: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url("/sandbox/control/inbox"))
        .query(&[("agent", agent)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits for `agent`'s inbox to hold the delivery about `proposal_id`.
async fn delivery(app: &TestApp, agent: &str, proposal_id: &str) -> Value {
    let found = app
        .slack()
        .wait_until(|| async {
            inbox(app, agent)
                .await
                .into_iter()
                .find(|d| d["proposal_id"] == proposal_id)
        })
        .await;
    found.unwrap_or_else(|| panic!("no delivery about {proposal_id} in {agent}'s inbox"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn one_run_shows_the_whole_loop(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    let (app, inboxes, config) = start_demo(&db, data.path()).await;
    assert!(config.secret_key.is_some());
    assert_eq!(mode(&data.path().join(SECRET_KEY_FILE)), 0o600);
    assert_eq!(mode(&data.path().join(CALLBACK_SECRETS_FILE)), 0o600);
    let posted = post_examples(&app, &inboxes).await;
    let status = |file: &str| {
        posted.iter().find(|(f, _)| f == file).unwrap().1["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("discount.json"), "pending");
    assert_eq!(status("large-payment.json"), "pending");
    assert_eq!(status("access-grant.json"), "pending");

    // Policy decided two at once: the agent hears of both, each with what to do next.
    let tagged = delivery(&app, "revops-crm", &id_of(&posted, "tag-lead.json")).await;
    assert_eq!(tagged["status"], "approved");
    assert_eq!(tagged["verified"], true);
    assert_eq!(tagged["answered"], 204);
    assert_eq!(tagged["event"], "proposal.decided");
    let denied = delivery(&app, "revops-crm", &id_of(&posted, "health-export.json")).await;
    assert_eq!(denied["status"], "rejected");
    assert_eq!(denied["verified"], true);
    assert!(
        denied["next"]
            .as_str()
            .unwrap()
            .starts_with("do not retry the same action"),
        "{denied}"
    );

    // Tomás approves the discount (as the README suggests); the agent is told to run it with
    // its token, once.
    let slack = app.slack();
    let discount = id_of(&posted, "discount.json");
    let card = slack
        .wait_for_card("C0FINANCE", &discount, "the discount card", is_pending)
        .await;
    let clicked = slack.click("U0FIN002", &card, "approve").await;
    assert_eq!(clicked.status, 200);
    let approved = delivery(&app, "revops-crm", &discount).await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["verified"], true);
    let next = approved["next"].as_str().unwrap();
    assert!(
        next.starts_with("run it exactly as approved (digest sha256:"),
        "{next}"
    );
    assert!(
        next.contains(&format!("POST /v1/proposals/{discount}/outcome")),
        "{next}"
    );
    let token = next
        .split_whitespace()
        .find(|w| w.starts_with("cxt_"))
        .unwrap()
        .trim_end_matches(',');
    let digest = next
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .trim_end_matches(')');
    let reported = app
        .post(
            REVOPS,
            &format!("/v1/proposals/{discount}/outcome"),
            Some(&json!({"execution_token": token, "digest": digest, "result": "executed"})),
        )
        .await;
    assert!(
        reported.status().is_success(),
        "{:?}",
        reported.text().await
    );

    // The payment (finance and legal) and the access grant (two of security) ask for a TOTP
    // code: with the demo's key, enrollment works, and so does every approval.
    let payment = id_of(&posted, "large-payment.json");
    let grant = id_of(&posted, "access-grant.json");
    let mut authenticators = std::collections::HashMap::new();
    for user in ["U0FIN002", "U0LEG001", "U0SEC001", "U0SEC002"] {
        authenticators.insert(user, enroll(&app, user).await);
    }
    for (proposal, channel, user) in [
        (&payment, "C0FINANCE", "U0FIN002"),
        (&payment, "C0LEGAL", "U0LEG001"),
        (&grant, "C0SECURITY", "U0SEC001"),
        (&grant, "C0SECURITY", "U0SEC002"),
    ] {
        let card = slack
            .wait_for_card(channel, proposal, "the card", is_pending)
            .await;
        let form = slack.click(user, &card, "approve").await.view.unwrap();
        let now = countersign::clock::Clock::now(&app.clock).timestamp() as u64;
        let code = authenticators[user].code_at(now);
        answer(&app, user, form["id"].as_str().unwrap(), code)
            .await
            .unwrap();
    }
    for (agent, token, proposal) in [
        ("billing", BILLING, &payment),
        ("revops-crm", REVOPS, &grant),
    ] {
        let told = delivery(&app, agent, proposal).await;
        assert_eq!(told["status"], "approved", "{told}");
        assert_eq!(told["verified"], true);
        let proposal = app
            .get(token, proposal)
            .await
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(proposal["status"], "approved");
    }

    // Every callback was delivered at its first attempt: nothing retried, nothing refused. (The
    // worker records the attempt just after the inbox answered it.)
    let sql = "SELECT status || ' ' || CAST(attempts AS TEXT) FROM webhook_events";
    eventually(
        Duration::from_secs(10),
        "every callback recorded",
        || async { db.strings(sql).await.iter().all(|e| e != "pending 0") },
    )
    .await;
    let events = db.strings(sql).await;
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events.iter().all(|e| e == "delivered 1"), "{events:?}");
    app.stop().await.unwrap();
}
both_backends!(one_run_shows_the_whole_loop);

async fn the_demo_files_are_made_once_and_reused(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    let (app, _, first) = start_demo(&db, data.path()).await;
    app.stop().await.unwrap();
    // (Other tests in this process set REVOPS_CRM_WHSEC; nobody sets these two.)
    let secrets = std::fs::read_to_string(data.path().join(CALLBACK_SECRETS_FILE)).unwrap();
    for var in ["BILLING_WHSEC", "OUTBOUND_EMAIL_WHSEC"] {
        assert!(secrets.contains(&format!("\n{var}=whsec_")), "{secrets}");
    }

    let (app, _, second) = start_demo(&db, data.path()).await;
    assert_eq!(second.secret_key, first.secret_key);
    assert_eq!(
        std::fs::read_to_string(data.path().join(CALLBACK_SECRETS_FILE)).unwrap(),
        secrets
    );
    assert_eq!(mode(&data.path().join(SECRET_KEY_FILE)), 0o600);
    assert_eq!(inbox(&app, "billing").await, Vec::<Value>::new());
    app.stop().await.unwrap();

    // Without --demo nothing is made and there are no inboxes.
    let plain = TestApp::start(&db).await;
    let response = plain
        .http
        .get(plain.url("/sandbox/control/inbox"))
        .query(&[("agent", "revops-crm")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    plain.stop().await.unwrap();
}
both_backends!(the_demo_files_are_made_once_and_reused);

/// A delivery whose signature does not verify is answered 401 and shown as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_is_refused_and_recorded() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let (app, inboxes, _) = start_demo(&db, data.path()).await;
    let url = inboxes.url("revops-crm").unwrap();
    let body = r#"{"type":"proposal.decided","data":{"proposal_id":"prop_forged","status":"approved","summary":"<img src=x onerror=alert(1)>"}}"#;
    let timestamp = countersign::clock::Clock::now(&app.clock).timestamp();
    // A secret nobody has (a fixed one might be what another test set REVOPS_CRM_WHSEC to).
    let forger = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
    let wrong = countersign::callbacks::signature::parse_all(&forger).unwrap();
    let response = app
        .http
        .post(url)
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            countersign::callbacks::signature::sign(
                &wrong,
                "msg_forged",
                timestamp,
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let recorded = inbox(&app, "revops-crm").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["verified"], false);
    assert_eq!(recorded[0]["answered"], 401);
    assert!(
        recorded[0]["next"]
            .as_str()
            .unwrap()
            .starts_with("ignore it")
    );
    // The page escapes what the body claims.
    let page: Value = app
        .http
        .get(app.url("/sandbox/ui/inbox"))
        .query(&[("agent", "revops-crm")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let html = page["html"].as_str().unwrap();
    assert!(html.contains("&lt;img src=x"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    app.stop().await.unwrap();
}
