//! A change and its audit events are never apart: the real binary, killed between writing a
//! change and appending its audit event (`COUNTERSIGN_CRASH_BEFORE_AUDIT` aborts it there),
//! leaves neither; restarted, the same request writes both.

use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::callbacks::SECRET;
use crate::common::{REVOPS, TestDb, discount_proposal, serve_command, spawn_ready};
use countersign::stepup::totp::Authenticator;

const SECRET_KEY: &str = "crash-test-secret-key-of-at-least-32-characters";

/// A free port for a server of this test (each restart reuses it).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The binary with the built-in sandbox, crashing before an audit event of `crash_before`.
async fn start(db: &TestDb, port: u16, crash_before: Option<&str>) -> Child {
    let mut command = serve_command(db, port);
    command
        .env("COUNTERSIGN_MANIFESTS", crate::common::manifests_dir())
        .env("COUNTERSIGN_POLICIES", crate::common::policies_dir())
        .env("COUNTERSIGN_SECRET_KEY", SECRET_KEY)
        .env("REVOPS_CRM_WHSEC", SECRET)
        .stderr(std::process::Stdio::null());
    if let Some(kind) = crash_before {
        command.env("COUNTERSIGN_CRASH_BEFORE_AUDIT", kind);
    }
    spawn_ready(command, port, Duration::from_secs(30)).await
}

/// Waits for the process to die of the abort (not to exit normally).
fn crashed(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(!status.success(), "the server aborted: {status:?}");
}

/// `/countersign <text>` by `user`, through the sandbox of the server at `base`.
async fn command(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    text: &str,
) -> reqwest::Result<Value> {
    let body = json!({"user": user, "channel": "C0FINANCE", "text": text});
    let response = http
        .post(format!("{base}/sandbox/control/command"))
        .json(&body)
        .send()
        .await?;
    response.json().await
}

/// The authenticator in `user`'s enrollment DM, once the outbox has sent it.
async fn authenticator_from_dm(http: &reqwest::Client, base: &str, user: &str) -> Authenticator {
    let url = format!("{base}/sandbox/control/messages?channel=@{user}&viewer={user}");
    let uri = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    crate::common::eventually(Duration::from_secs(20), "the enrollment DM", || {
        let (http, url, uri) = (http.clone(), url.clone(), uri.clone());
        async move {
            let messages: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            let found = messages.as_array().unwrap().iter().find_map(|m| {
                let text = m["text"].as_str()?;
                let start = text.find("otpauth://")?;
                Some(text[start..].split('`').next().unwrap().to_owned())
            });
            let seen = found.is_some();
            *uri.lock().unwrap() = found;
            seen
        }
    })
    .await;
    let uri = uri.lock().unwrap().take().unwrap();
    crate::step_up::authenticator_of(&uri, user)
}

fn current_code(authenticator: &Authenticator) -> String {
    authenticator.code_at(chrono::Utc::now().timestamp() as u64)
}

async fn count(db: &TestDb, sql: &str) -> usize {
    db.strings(sql).await.len()
}

async fn totp_activation_and_its_audit_event_are_written_together_or_not_at_all(db: TestDb) {
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = start(&db, port, Some("totp.enrolled")).await;
    let started = command(&http, &base, "U0FIN001", "enroll").await.unwrap();
    assert!(started.to_string().contains("I sent you a DM"), "{started}");
    let authenticator = authenticator_from_dm(&http, &base, "U0FIN001").await;
    let code = current_code(&authenticator);
    // The process dies inside the activation's transaction: the request gets no answer.
    let answered = command(&http, &base, "U0FIN001", &format!("enroll {code}")).await;
    assert!(answered.is_err(), "{answered:?}");
    crashed(server);

    let active =
        "SELECT user_id FROM totp_enrollments WHERE user_id = 'U0FIN001' AND active = TRUE";
    let enrolled = "SELECT kind FROM audit_events WHERE kind = 'totp.enrolled'";
    assert_eq!(count(&db, active).await, 0, "not active without its event");
    assert_eq!(count(&db, enrolled).await, 0);
    let pending = "SELECT user_id FROM totp_enrollments WHERE user_id = 'U0FIN001'";
    assert_eq!(
        count(&db, pending).await,
        1,
        "the started enrollment stands"
    );

    let mut server = start(&db, port, None).await;
    let code = current_code(&authenticator);
    let confirmed = command(&http, &base, "U0FIN001", &format!("enroll {code}"))
        .await
        .unwrap();
    assert!(confirmed.to_string().contains("Enrolled"), "{confirmed}");
    assert_eq!(count(&db, active).await, 1);
    assert_eq!(count(&db, enrolled).await, 1);
    server.kill().unwrap();
    server.wait().unwrap();
}
both_backends!(totp_activation_and_its_audit_event_are_written_together_or_not_at_all);

async fn a_proposal_and_its_submission_event_are_written_together_or_not_at_all(db: TestDb) {
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let submit = || {
        http.post(format!("{base}/v1/proposals"))
            .bearer_auth(REVOPS)
            .header("Idempotency-Key", "crash-1")
            .json(&discount_proposal())
            .send()
    };
    let server = start(&db, port, Some("proposal.submitted")).await;
    assert!(submit().await.is_err(), "the process died before answering");
    crashed(server);
    let proposals = "SELECT id FROM proposals";
    let submitted = "SELECT kind FROM audit_events WHERE kind = 'proposal.submitted'";
    assert_eq!(count(&db, proposals).await, 0);
    assert_eq!(count(&db, submitted).await, 0);
    assert_eq!(
        count(&db, "SELECT CAST(id AS TEXT) FROM slack_outbox").await,
        0
    );

    // The agent retries with the same key: written once, with its event and its card.
    let mut server = start(&db, port, None).await;
    let created = submit().await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(count(&db, proposals).await, 1);
    assert_eq!(count(&db, submitted).await, 1);
    assert!(count(&db, "SELECT CAST(id AS TEXT) FROM slack_outbox").await >= 1);
    server.kill().unwrap();
    server.wait().unwrap();
}
both_backends!(a_proposal_and_its_submission_event_are_written_together_or_not_at_all);
