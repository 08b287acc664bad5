//! `countersign audit verify|export` and `countersign migrate`, run as the real binary.

use std::process::Output;

use serde_json::Value;

use crate::both_backends;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal};

fn countersign(db: &TestDb, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_DATABASE_URL", db.url_string())
        .env("COUNTERSIGN_MANIFESTS", crate::common::manifests_dir())
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run countersign")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Three proposals, one cancelled: five events.
async fn populate(db: &TestDb) -> Vec<String> {
    let app = TestApp::start(db).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.create(REVOPS, &discount_proposal()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    app.post(REVOPS, &format!("/v1/proposals/{}/cancel", ids[1]), None)
        .await;
    app.get(crate::common::BILLING, &ids[0]).await;
    app.stop().await.unwrap();
    ids
}

async fn verify_passes_then_names_an_edited_row(db: TestDb) {
    populate(&db).await;
    let ok = countersign(&db, &["audit", "verify"]);
    assert!(ok.status.success(), "{ok:?}");
    let out = stdout(&ok);
    assert!(out.contains("ok: 5 events verified"), "{out}");
    let head = out
        .lines()
        .find(|l| l.starts_with("head: seq 5 hash "))
        .expect("head line")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(head.len(), 64);
    let anchored = countersign(&db, &["audit", "verify", "--anchor", &format!("5:{head}")]);
    assert!(anchored.status.success(), "{anchored:?}");

    // The table refuses edits through SQL...
    let blocked = db
        .try_execute("UPDATE audit_events SET actor = 'x' WHERE seq = 3")
        .await;
    assert!(blocked.unwrap_err().to_string().contains("append-only"));
    assert!(
        db.try_execute("DELETE FROM audit_events WHERE seq = 3")
            .await
            .is_err()
    );
    // ...so an attacker first removes the guard, then edits a row.
    drop_guards(&db).await;
    db.execute(
        r#"UPDATE audit_events SET data = replace(data, 'Apply 15%', 'Apply 50%') WHERE seq = 3"#,
    )
    .await;
    let broken = countersign(&db, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(
        stdout(&broken).contains("broken at seq 3: hash does not match"),
        "{}",
        stdout(&broken)
    );
}
both_backends!(verify_passes_then_names_an_edited_row);

async fn verify_names_a_deleted_row_and_a_truncated_tail(db: TestDb) {
    populate(&db).await;
    let head = stdout(&countersign(&db, &["audit", "verify"]));
    let head_hash = head.trim_end().rsplit(' ').next().unwrap().to_owned();
    drop_guards(&db).await;

    db.execute("DELETE FROM audit_events WHERE seq = 5").await;
    // Deleting the last row leaves a valid chain: only the anchor catches it.
    assert!(countersign(&db, &["audit", "verify"]).status.success());
    let truncated = countersign(
        &db,
        &["audit", "verify", "--anchor", &format!("5:{head_hash}")],
    );
    assert_eq!(truncated.status.code(), Some(1));
    assert!(
        stdout(&truncated).contains("anchor seq 5 is beyond the end"),
        "{}",
        stdout(&truncated)
    );

    db.execute("DELETE FROM audit_events WHERE seq = 2").await;
    let broken = countersign(&db, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stdout(&broken).contains("broken at seq 2: row missing"),
        "{}",
        stdout(&broken)
    );
}
both_backends!(verify_names_a_deleted_row_and_a_truncated_tail);

async fn verify_names_reordered_rows(db: TestDb) {
    populate(&db).await;
    drop_guards(&db).await;
    // Swap the contents of rows 2 and 3, keeping seq in place.
    db.execute(
        "UPDATE audit_events SET seq = -2 WHERE seq = 2; UPDATE audit_events SET seq = 2 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = -2;",
    )
    .await;
    let broken = countersign(&db, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stdout(&broken).contains("broken at seq 2"),
        "{}",
        stdout(&broken)
    );
}
both_backends!(verify_names_reordered_rows);

async fn drop_guards(db: &TestDb) {
    if db.is_postgres() {
        db.execute("DROP TRIGGER audit_events_no_change ON audit_events")
            .await;
    } else {
        db.execute("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
            .await;
    }
}

#[tokio::test]
async fn export_writes_json_lines_filtered_by_proposal_and_time() {
    let db = TestDb::sqlite();
    let ids = populate(&db).await;

    let all = countersign(&db, &["audit", "export"]);
    assert!(all.status.success(), "{all:?}");
    let lines: Vec<Value> = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["kind"], "proposal.submitted");
    assert_eq!(lines[0]["data"]["action"], "crm.opportunity.update");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    let one = countersign(&db, &["audit", "export", "--proposal", &ids[1]]);
    let kinds: Vec<String> = stdout(&one)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["proposal.submitted", "proposal.cancelled"]);

    let later = countersign(&db, &["audit", "export", "--since", "2030-01-01T00:00:00Z"]);
    assert!(later.status.success());
    assert_eq!(stdout(&later), "");
    let bad = countersign(&db, &["audit", "export", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
}

#[tokio::test]
async fn migrate_creates_the_database_and_agent_new_mints_a_usable_token() {
    let db = TestDb::sqlite();
    let migrated = countersign(&db, &["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(stdout(&migrated).contains("is up to date"));

    let minted = countersign(&db, &["agent", "new", "my-agent", "--owner", "U0ME0001"]);
    assert!(minted.status.success(), "{minted:?}");
    let out = stdout(&minted);
    let token = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cs_"))
        .unwrap()
        .to_owned();
    let manifest: String = out
        .lines()
        .skip_while(|l| !l.starts_with("id: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(manifest.contains("owner: U0ME0001"));
    assert!(
        !manifest.contains(&token),
        "the token itself must not be in the manifest"
    );

    // The printed lines are a working manifest for the printed token, once it lists an action.
    let manifest = manifest.replace(
        "actions: {}",
        "actions:\n  crm.opportunity.update: {impact: medium, data: [financial], reversible: true, autonomy: approval}",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::common::manifests_dir().join("roles.yaml"),
        dir.path().join("roles.yaml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/my-agent.yaml"), manifest).unwrap();
    let mut config = crate::common::test_config(&db);
    config.manifests = dir.path().to_path_buf();
    let app = TestApp::start_with(config).await;
    let created = app.create(&token, &discount_proposal()).await;
    assert_eq!(created["agent"], "my-agent");

    let refused = countersign(&db, &["agent", "new", "My Agent"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NAME"));
}

#[tokio::test]
async fn configuration_errors_name_the_key() {
    let db = TestDb::sqlite();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["migrate"])
        .env("COUNTERSIGN_DATABASE_URL", "mysql://nope")
        .env("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-do-not-print-me")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("database_url (from env COUNTERSIGN_DATABASE_URL)"),
        "{stderr}"
    );
    assert!(!stderr.contains("xoxb-do-not-print-me"));
    drop(db);
}
