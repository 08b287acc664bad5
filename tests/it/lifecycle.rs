//! State changes through the API: cancel, outcome, races, restarts and shutdown.

use countersign::domain::{Actor, ProposalId, Status};
use countersign::store::{Command, CommandResult};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal, problem, test_config};

async fn cancel_only_while_pending(db: TestDb) {
    let app = TestApp::start(&db).await;
    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = format!("/v1/proposals/{id}/cancel");

    let cancelled: Value = app
        .post(
            REVOPS,
            &cancel,
            Some(&json!({"reason": "customer withdrew"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["decision"]["by"],
        json!({"kind": "agent", "id": "revops-crm"})
    );
    assert_eq!(cancelled["decision"]["reason"], "customer withdrew");

    let again = problem(app.post(REVOPS, &cancel, None).await, 409).await;
    assert_eq!(again["type"], "urn:countersign:problem:invalid-state");
    assert_eq!(again["proposal_status"], "cancelled");

    let bad = problem(
        app.post(REVOPS, &cancel, Some(&json!({"reason": 7}))).await,
        422,
    )
    .await;
    assert_eq!(bad["field"], "reason");
}
both_backends!(cancel_only_while_pending);

async fn outcome_only_after_approval(db: TestDb) {
    let app = TestApp::start(&db).await;
    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outcome = format!("/v1/proposals/{id}/outcome");
    let early_try =
        json!({"result": "executed", "execution_token": "cxt_guess", "digest": "sha256:00"});

    let early = problem(app.post(REVOPS, &outcome, Some(&early_try)).await, 409).await;
    assert_eq!(early["proposal_status"], "pending");

    // Approve the way the decision path will: a Decide command, here from a second "replica".
    let store = db.store().await;
    let approve = Command::Decide {
        id: ProposalId::parse(&id).unwrap(),
        status: Status::Approved,
        decision: countersign::domain::Decision {
            by: Actor::policy(),
            at: crate::common::start_time(),
            reason: None,
            execution_token: None,
            digest: None,
        },
    };
    let results = store
        .apply(vec![approve], crate::common::start_time())
        .await
        .unwrap();
    let CommandResult::Updated(approved) = &results[0] else {
        panic!("{results:?}")
    };
    assert_eq!(approved.status, Status::Approved);
    // The approval issued an execution token; the agent reads it in the decision.
    let read: Value = app.get(REVOPS, &id).await.json().await.unwrap();
    let token = read["decision"]["execution_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        Some(token.as_str()),
        approved
            .decision
            .as_ref()
            .unwrap()
            .execution_token
            .as_deref()
    );
    let digest = read["decision"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        digest,
        countersign::domain::ActionDigest::of(&approved.content).as_str()
    );
    let executed = json!({"result": "executed", "details": {"crm_revision": 42},
                          "execution_token": token, "digest": digest});

    let wrong =
        json!({"result": "executed", "execution_token": "cxt_not-the-token", "digest": digest});
    let refused = problem(app.post(REVOPS, &outcome, Some(&wrong)).await, 403).await;
    assert_eq!(refused["field"], "execution_token");
    let missing = problem(
        app.post(REVOPS, &outcome, Some(&json!({"result": "executed"})))
            .await,
        422,
    )
    .await;
    assert_eq!(missing["field"], "execution_token");

    // Something other than what was approved ran: refused, and the token is not spent.
    let other = "sha256:".to_owned() + &"0".repeat(64);
    let mismatch = json!({"result": "executed", "execution_token": token, "digest": other});
    let refused = problem(app.post(REVOPS, &outcome, Some(&mismatch)).await, 409).await;
    assert_eq!(refused["type"], "urn:countersign:problem:digest-mismatch");
    assert_eq!(refused["field"], "digest");
    assert_eq!(refused["approved_digest"], digest.as_str());

    let bad = problem(
        app.post(
            REVOPS,
            &outcome,
            Some(&json!({"result": "done", "execution_token": token, "digest": digest})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(bad["field"], "result");

    let recorded: Value = app
        .post(REVOPS, &outcome, Some(&executed))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recorded["status"], "approved");
    assert_eq!(recorded["outcome"]["result"], "executed");
    assert_eq!(recorded["outcome"]["details"]["crm_revision"], 42);

    let twice = problem(
        app.post(
            REVOPS,
            &outcome,
            Some(&json!({"result": "failed", "execution_token": token, "digest": digest})),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(twice["type"], "urn:countersign:problem:invalid-state");
    let read: Value = app.get(REVOPS, &id).await.json().await.unwrap();
    assert_eq!(read["outcome"]["result"], "executed");
}
both_backends!(outcome_only_after_approval);

async fn concurrent_cancels_yield_one_decision(db: TestDb) {
    let app = TestApp::start(&db).await;
    let id = app.create(REVOPS, &discount_proposal()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/proposals/{id}/cancel");
    let attempts = (0..10).map(|_| app.post(REVOPS, &path, None));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        9,
        "{statuses:?}"
    );
}
both_backends!(concurrent_cancels_yield_one_decision);

async fn accepted_proposals_survive_a_restart(db: TestDb) {
    let app = TestApp::start(&db).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create(REVOPS, &discount_proposal()).await);
    }
    app.stop().await.unwrap();

    let app = TestApp::start(&db).await;
    for created in &mut ids {
        let mut read: Value = app
            .get(REVOPS, created["id"].as_str().unwrap())
            .await
            .json()
            .await
            .unwrap();
        // Links carry the (new) server's address; everything else is as it was.
        read.as_object_mut().unwrap().remove("links");
        created.as_object_mut().unwrap().remove("links");
        assert_eq!(&read, created);
    }
    let verified = countersign::engine::audit_log::verify(db.store().await.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(verified.events, 5);
}
both_backends!(accepted_proposals_survive_a_restart);

async fn many_concurrent_submissions_chain_correctly(db: TestDb) {
    let app = TestApp::start(&db).await;
    let body = discount_proposal();
    let submissions = (0..200).map(|_| app.submit(REVOPS, &body));
    let responses = futures_util::future::join_all(submissions).await;
    assert!(responses.iter().all(|r| r.status() == 201));
    let store = db.store().await;
    assert_eq!(
        store.count_by_status().await.unwrap(),
        vec![(Status::Pending, 200)]
    );
    let verified = countersign::engine::audit_log::verify(store.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(verified.events, 200);
}
both_backends!(many_concurrent_submissions_chain_correctly);

/// SIGTERM's path: stop accepting, but finish the request already in flight.
#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let address = app.base.trim_start_matches("http://").to_owned();

    // Start a request and send only half of its body.
    let body = serde_json::to_vec(&discount_proposal()).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let headers = format!(
        "POST /v1/proposals HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {REVOPS}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(headers.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    stream.flush().await.unwrap();
    // The accept loop takes connections in order and spawns each one's task as it goes, so once
    // a later connection has been served, ours was accepted first and has read its headers.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let stopping = tokio::spawn(app.stop());
    stream.write_all(tail).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    stopping.await.unwrap().unwrap();

    // Stopped: nothing listens any more, and the proposal was committed.
    assert!(tokio::net::TcpStream::connect(&address).await.is_err());
    let store = db.store().await;
    assert_eq!(
        store.count_by_status().await.unwrap(),
        vec![(Status::Pending, 1)]
    );
}

#[tokio::test]
async fn a_broken_manifest_stops_startup_naming_file_and_key() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(
        dir.path().join("agents/x.yaml"),
        "id: x\nowner: U0X01\ndescription: d\ntoken_sha256: nope\n",
    )
    .unwrap();
    let mut config = test_config(&db);
    config.manifests = dir.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = countersign::app::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("x.yaml:4: token_sha256"), "{message}");
}
