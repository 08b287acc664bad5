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
        countersign::audit::verify(store.as_ref(), None)
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
        countersign::audit::verify(store.as_ref(), None)
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
