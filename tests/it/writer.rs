//! The group-commit writer, against real databases. These tests run on a current-thread runtime
//! so that every command is queued before the writer task first runs: the batch is then exactly
//! the commands sent, deterministically.

use std::sync::Arc;

use countersign::clock::{Clock, ManualClock};
use countersign::engine::Writer;
use countersign::store::{Command, CommandResult};

use crate::common::{TestDb, start_time};
use crate::store_contract::{proposal, submit};

/// A submission whose batch failed although its row was stored (a COMMIT whose answer was lost)
/// is reported as stored, not as an error.
async fn a_submission_that_was_stored_is_not_reported_as_failed(db: TestDb) {
    let store = db.store().await;
    let writer = Writer::spawn(
        store.clone(),
        Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
    );
    let stored = proposal("revops-crm");
    store
        .apply(vec![submit(&stored, None)], start_time())
        .await
        .unwrap();
    let (fresh, culprit) = (proposal("revops-crm"), {
        let mut other = stored.clone();
        other.content.summary = "Another proposal under a taken id".into();
        other
    });
    // The batch fails on the culprit; retried alone, the resubmission of `stored` finds its row.
    let commands = [
        submit(&fresh, None),
        submit(&stored, None),
        submit(&culprit, None),
    ];
    let results =
        futures_util::future::join_all(commands.into_iter().map(|c| writer.apply(c))).await;
    assert!(
        matches!(&results[0], Ok(CommandResult::Submitted(_))),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Ok(CommandResult::Submitted(p)) if p.id == stored.id),
        "{results:?}"
    );
    assert!(results[2].is_err(), "{results:?}");
}

#[tokio::test]
async fn sqlite_a_submission_that_was_stored_is_not_reported_as_failed() {
    a_submission_that_was_stored_is_not_reported_as_failed(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_submission_that_was_stored_is_not_reported_as_failed() {
    if let Some(db) = TestDb::postgres().await {
        a_submission_that_was_stored_is_not_reported_as_failed(db).await;
    }
}

/// A cancellation and an outcome whose batch failed although they were stored are reported as
/// done, not as conflicts with themselves; a different cancellation still conflicts.
async fn a_change_that_was_stored_is_not_reported_as_a_conflict(db: TestDb) {
    use countersign::domain::{AgentId, ExecutionOutcome, ExecutionResult, Status};
    let store = db.store().await;
    let writer = Writer::spawn(
        store.clone(),
        Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
    );
    let agent = AgentId::parse("revops-crm").unwrap();
    let (withdrawn, executed, other) = (
        proposal("revops-crm"),
        proposal("revops-crm"),
        proposal("revops-crm"),
    );
    let cancel = |p: &countersign::domain::Proposal, reason: &str| Command::Cancel {
        id: p.id.clone(),
        agent: agent.clone(),
        reason: Some(reason.into()),
    };
    let setup = vec![
        submit(&withdrawn, None),
        submit(&executed, None),
        submit(&other, None),
        crate::store_contract::decide(&executed, Status::Approved),
    ];
    store.apply(setup, start_time()).await.unwrap();
    let token = store
        .proposal(&executed.id)
        .await
        .unwrap()
        .unwrap()
        .decision
        .unwrap();
    let outcome = ExecutionOutcome {
        result: ExecutionResult::Executed,
        details: Some(serde_json::json!({"ticket": "T-1"})),
        at: start_time(),
    };
    let record = Command::RecordOutcome {
        id: executed.id.clone(),
        agent: agent.clone(),
        outcome: outcome.clone(),
        digest: token.digest.clone().unwrap().to_string(),
        token: token.execution_token.unwrap(),
    };
    // Committed, but the answers were lost.
    let committed = vec![
        cancel(&withdrawn, "customer withdrew"),
        record.clone(),
        cancel(&other, "first reason"),
    ];
    store.apply(committed, start_time()).await.unwrap();

    // The same commands again, in a batch that fails on a culprit and is retried one by one.
    let mut culprit = withdrawn.clone();
    culprit.content.summary = "Another proposal under a taken id".into();
    let commands = [
        cancel(&withdrawn, "customer withdrew"),
        record,
        cancel(&other, "a second, different reason"),
        submit(&culprit, None),
    ];
    let results =
        futures_util::future::join_all(commands.into_iter().map(|c| writer.apply(c))).await;
    assert!(
        matches!(&results[0], Ok(CommandResult::Updated(p)) if p.status == Status::Cancelled),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Ok(CommandResult::Updated(p)) if p.outcome == Some(outcome.clone())),
        "{results:?}"
    );
    assert!(
        matches!(
            &results[2],
            Ok(CommandResult::WrongState(Status::Cancelled))
        ),
        "not this command's write: {results:?}"
    );
    assert!(results[3].is_err(), "{results:?}");
}

#[tokio::test]
async fn sqlite_a_change_that_was_stored_is_not_reported_as_a_conflict() {
    a_change_that_was_stored_is_not_reported_as_a_conflict(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_change_that_was_stored_is_not_reported_as_a_conflict() {
    if let Some(db) = TestDb::postgres().await {
        a_change_that_was_stored_is_not_reported_as_a_conflict(db).await;
    }
}

async fn concurrent_commands_share_one_transaction(db: TestDb) {
    let store = db.store().await;
    let writer = Writer::spawn(
        store.clone(),
        Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
    );
    let proposals: Vec<_> = (0..20).map(|_| proposal("revops-crm")).collect();
    let results =
        futures_util::future::join_all(proposals.iter().map(|p| writer.apply(submit(p, None))))
            .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(CommandResult::Submitted(_)))),
        "{results:?}"
    );
    assert_eq!(
        writer.batches(),
        1,
        "20 queued commands must commit as one batch"
    );
    assert_eq!(
        countersign::engine::audit_log::verify(store.as_ref(), None)
            .await
            .unwrap()
            .events,
        20
    );
}

async fn only_the_culprit_of_a_failed_batch_fails(db: TestDb) {
    let store = db.store().await;
    let writer = Writer::spawn(
        store.clone(),
        Arc::new(ManualClock::new(start_time())) as Arc<dyn Clock>,
    );
    let mut proposals: Vec<_> = (0..10).map(|_| proposal("revops-crm")).collect();
    // Another proposal under an id already taken: the batch's insert violates the primary key
    // and rolls back.
    let mut impostor = proposals[3].clone();
    impostor.content.summary = "Someone else's proposal".into();
    proposals.push(impostor);
    let commands: Vec<Command> = proposals.iter().map(|p| submit(p, None)).collect();
    let results =
        futures_util::future::join_all(commands.into_iter().map(|c| writer.apply(c))).await;
    assert_eq!(writer.batches(), 1);
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, [10], "{results:?}");
    assert_eq!(
        countersign::engine::audit_log::verify(store.as_ref(), None)
            .await
            .unwrap()
            .events,
        10
    );
}

#[tokio::test]
async fn sqlite_concurrent_commands_share_one_transaction() {
    concurrent_commands_share_one_transaction(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_concurrent_commands_share_one_transaction() {
    if let Some(db) = TestDb::postgres().await {
        concurrent_commands_share_one_transaction(db).await;
    }
}

#[tokio::test]
async fn sqlite_only_the_culprit_of_a_failed_batch_fails() {
    only_the_culprit_of_a_failed_batch_fails(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_only_the_culprit_of_a_failed_batch_fails() {
    if let Some(db) = TestDb::postgres().await {
        only_the_culprit_of_a_failed_batch_fails(db).await;
    }
}
