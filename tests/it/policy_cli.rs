//! `countersign policy …` and SIGHUP reload, run as the real binary.

use serde_json::{Value, json};

use crate::common::{BILLING, policies_dir};
use crate::fixture::Fixture;

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
