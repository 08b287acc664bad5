//! Proposals, idempotency keys, decisions, outcomes, batches and the audit chain.

use super::*;

async fn stored_proposals_read_back_equal(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    let result = apply_one(store.as_ref(), submit(&p, None)).await;
    let CommandResult::Submitted(stored) = result else {
        panic!("{result:?}")
    };
    assert_eq!(*stored, p);
    assert_eq!(store.proposal(&p.id).await.unwrap().unwrap(), p);
    assert_eq!(store.proposal(&ProposalId::generate()).await.unwrap(), None);
    assert_eq!(
        store.count_by_status().await.unwrap(),
        vec![(Status::Pending, 1)]
    );
    store.ping().await.unwrap();
    // Migrating again is harmless.
    store.migrate().await.unwrap();
}
both_backends!(stored_proposals_read_back_equal);

async fn idempotency_within_and_across_batches(db: TestDb) {
    let store = db.store().await;
    let (a, b, c) = (
        proposal("revops-crm"),
        proposal("revops-crm"),
        proposal("billing"),
    );
    // Same key twice in one batch: the second sees the first.
    let results = store
        .apply(
            vec![
                submit(&a, Some(("k", "h1"))),
                submit(&b, Some(("k", "h1"))),
                submit(&c, Some(("k", "h1"))),
            ],
            start_time(),
        )
        .await
        .unwrap();
    assert_eq!(results[0], CommandResult::Submitted(Box::new(a.clone())));
    let CommandResult::Replayed { response } = &results[1] else {
        panic!("{results:?}")
    };
    assert_eq!(serde_json::from_str::<Proposal>(response).unwrap(), a);
    assert!(
        matches!(results[2], CommandResult::Submitted(_)),
        "keys are per agent"
    );
    // A different body under the same key.
    assert_eq!(
        apply_one(store.as_ref(), submit(&b, Some(("k", "h2")))).await,
        CommandResult::IdempotencyConflict
    );
    assert_eq!(store.proposal(&b.id).await.unwrap(), None);

    assert_eq!(store.purge_idempotency_keys(start_time()).await.unwrap(), 0);
    assert_eq!(
        store
            .purge_idempotency_keys(start_time() + Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        apply_one(store.as_ref(), submit(&b, Some(("k", "h2")))).await,
        CommandResult::Submitted(_)
    ));
}
both_backends!(idempotency_within_and_across_batches);

async fn a_decision_never_changes(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    apply_one(store.as_ref(), submit(&p, None)).await;
    let CommandResult::Updated(approved) =
        apply_one(store.as_ref(), decide(&p, Status::Approved)).await
    else {
        panic!()
    };
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.decision.as_ref().unwrap().by, Actor::policy());
    assert_eq!(
        apply_one(store.as_ref(), decide(&p, Status::Rejected)).await,
        CommandResult::WrongState(Status::Approved)
    );
    let cancel = Command::Cancel {
        id: p.id.clone(),
        agent: p.agent.clone(),
        reason: None,
    };
    assert_eq!(
        apply_one(store.as_ref(), cancel).await,
        CommandResult::WrongState(Status::Approved)
    );
    assert_eq!(store.proposal(&p.id).await.unwrap().unwrap(), *approved);
    assert_eq!(
        apply_one(store.as_ref(), decide(&proposal("x"), Status::Approved)).await,
        CommandResult::NotFound
    );
}
both_backends!(a_decision_never_changes);

async fn outcomes_are_recorded_once_after_approval(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    apply_one(store.as_ref(), submit(&p, None)).await;
    let digest = ActionDigest::of(&p.content);
    let named = |agent: &str, token: &str, digest: &str| Command::RecordOutcome {
        id: p.id.clone(),
        agent: AgentId::parse(agent).unwrap(),
        outcome: ExecutionOutcome {
            result: ExecutionResult::Executed,
            details: Some(json!({"ok": true})),
            at: start_time(),
        },
        token: token.to_owned(),
        digest: digest.to_owned(),
    };
    let outcome = |agent: &str, token: &str| named(agent, token, digest.as_str());
    assert_eq!(
        apply_one(store.as_ref(), outcome("revops-crm", "cxt_x")).await,
        CommandResult::WrongState(Status::Pending)
    );
    let CommandResult::Updated(approved) =
        apply_one(store.as_ref(), decide(&p, Status::Approved)).await
    else {
        panic!()
    };
    let decision = approved.decision.unwrap();
    assert_eq!(
        decision.digest.as_ref(),
        Some(&digest),
        "bound to what was approved"
    );
    let token = decision.execution_token.unwrap();
    assert_eq!(
        apply_one(store.as_ref(), outcome("billing", &token)).await,
        CommandResult::NotFound
    );
    assert_eq!(
        apply_one(store.as_ref(), outcome("revops-crm", "cxt_wrong")).await,
        CommandResult::WrongToken
    );
    // Another digest (something else ran, or a stale copy): refused, audited, token unspent.
    let mut edited = p.content.clone();
    edited.params.insert("discount_percent".into(), json!(8));
    let other = ActionDigest::of(&edited);
    assert_eq!(
        apply_one(store.as_ref(), named("revops-crm", &token, other.as_str())).await,
        CommandResult::DigestMismatch(digest.clone())
    );
    let refusals: Vec<String> = (db.audit_of(p.id.as_str()).await.into_iter())
        .filter(|e| e.kind == "request.refused")
        .map(|e| e.data)
        .collect();
    assert!(
        refusals.iter().any(|d| d.contains("digest mismatch")),
        "{refusals:?}"
    );
    let CommandResult::Updated(done) =
        apply_one(store.as_ref(), outcome("revops-crm", &token)).await
    else {
        panic!()
    };
    assert_eq!(
        done.outcome.as_ref().unwrap().result,
        ExecutionResult::Executed
    );
    assert_eq!(
        apply_one(store.as_ref(), outcome("revops-crm", &token)).await,
        CommandResult::WrongState(Status::Approved)
    );
    assert_eq!(store.proposal(&p.id).await.unwrap().unwrap(), *done);
}
both_backends!(outcomes_are_recorded_once_after_approval);

async fn a_failed_batch_leaves_nothing_behind(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    // The second insert of the same id violates the primary key: the whole batch rolls back.
    let result = store
        .apply(
            vec![submit(&p, Some(("k", "h"))), submit(&p, None)],
            start_time(),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(store.proposal(&p.id).await.unwrap(), None);
    assert!(
        store
            .audit_page(&AuditFilter::default(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Nor was the idempotency key kept.
    assert!(matches!(
        apply_one(store.as_ref(), submit(&p, Some(("k", "other")))).await,
        CommandResult::Submitted(_)
    ));
}
both_backends!(a_failed_batch_leaves_nothing_behind);

/// Two "replicas" (separate pools) race to decide the same proposals and extend the chain.
async fn replicas_race_safely(db: TestDb) {
    let (one, two) = (db.store().await, db.store().await);
    let proposals: Vec<Proposal> = (0..20).map(|_| proposal("revops-crm")).collect();
    one.apply(
        proposals.iter().map(|p| submit(p, None)).collect(),
        start_time(),
    )
    .await
    .unwrap();

    let race = |store: Arc<dyn Store>, status: Status| {
        let commands: Vec<Command> = proposals.iter().map(|p| decide(p, status)).collect();
        tokio::spawn(async move {
            let mut wins = 0;
            for command in commands {
                if let CommandResult::Updated(_) =
                    store.apply(vec![command], start_time()).await.unwrap()[0]
                {
                    wins += 1;
                }
            }
            wins
        })
    };
    let (approvals, rejections) = tokio::join!(
        race(one.clone(), Status::Approved),
        race(two.clone(), Status::Rejected)
    );
    assert_eq!(
        approvals.unwrap() + rejections.unwrap(),
        20,
        "each proposal decided exactly once"
    );

    let counts = one.count_by_status().await.unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 20);
    assert!(
        counts
            .iter()
            .all(|(s, _)| matches!(s, Status::Approved | Status::Rejected))
    );
    let verified = countersign::engine::audit_log::verify(two.as_ref(), None)
        .await
        .unwrap();
    // 20 submissions, 20 decisions, 20 audited refusals of the losing side.
    assert_eq!(verified.events, 60);
}
both_backends!(replicas_race_safely);

async fn audit_pages_filter_by_time_and_proposal(db: TestDb) {
    let store = db.store().await;
    let (a, b) = (proposal("revops-crm"), proposal("revops-crm"));
    store
        .apply(vec![submit(&a, None)], start_time())
        .await
        .unwrap();
    let later = start_time() + Duration::hours(1);
    let note = AuditDraft::new(
        "test.note",
        Some(&a.id),
        "system:test".into(),
        json!({"n": 1}),
    );
    store
        .apply(vec![submit(&b, None), Command::Audit(note)], later)
        .await
        .unwrap();

    let all = store
        .audit_page(&AuditFilter::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[2].at, later);
    let paged = store
        .audit_page(&AuditFilter::default(), 1, 1)
        .await
        .unwrap();
    assert_eq!(paged.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    let since = AuditFilter {
        since: Some(later),
        proposal_id: None,
    };
    assert_eq!(store.audit_page(&since, 0, 100).await.unwrap().len(), 2);
    let of_a = AuditFilter {
        since: None,
        proposal_id: Some(a.id.to_string()),
    };
    let kinds: Vec<String> = store
        .audit_page(&of_a, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["proposal.submitted", "test.note"]);
}
both_backends!(audit_pages_filter_by_time_and_proposal);

/// Inserts are held back and written per table; a later command in the same batch must still
/// see what an earlier one wrote.
async fn later_commands_in_a_batch_see_earlier_ones(db: TestDb) {
    let store = db.store().await;
    let (a, b) = (proposal("revops-crm"), proposal("revops-crm"));
    let cancel = Command::Cancel {
        id: a.id.clone(),
        agent: a.agent.clone(),
        reason: None,
    };
    let results = store
        .apply(
            vec![
                submit(&a, None),
                submit(&b, None),
                cancel,
                decide(&b, Status::Approved),
            ],
            start_time(),
        )
        .await
        .unwrap();
    assert!(matches!(&results[2], CommandResult::Updated(p) if p.status == Status::Cancelled));
    assert!(matches!(&results[3], CommandResult::Updated(p) if p.status == Status::Approved));
    let verified = countersign::engine::audit_log::verify(store.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(verified.events, 4);
}
both_backends!(later_commands_in_a_batch_see_earlier_ones);

/// The chain tip must be read after the advisory lock is granted, even when the database's
/// default isolation would take the snapshot earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chain_holds_under_a_stricter_default_isolation() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    db.execute(&format!(
        "ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
    ))
    .await;
    let (one, two) = (db.store().await, db.store().await);
    let note = |i: usize| {
        Command::Audit(AuditDraft::new(
            "test.note",
            None,
            "system:test".into(),
            json!({ "i": i }),
        ))
    };
    let write = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            for i in 0..50 {
                store.apply(vec![note(i)], start_time()).await.unwrap();
            }
        })
    };
    let (a, b) = tokio::join!(write(one.clone()), write(two.clone()));
    a.unwrap();
    b.unwrap();
    let verified = countersign::engine::audit_log::verify(one.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(verified.events, 100);
}
