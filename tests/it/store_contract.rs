//! The storage contract: the same cases against SQLite and PostgreSQL, straight at the trait.

use std::sync::Arc;

use chrono::Duration;
use countersign::audit::{AuditDraft, AuditFilter};
use countersign::domain::request::ProposalRequest;
use countersign::domain::*;
use countersign::store::{Command, CommandResult, IdempotencyKey, Store};
use serde_json::json;

use crate::both_backends;
use crate::common::{TestDb, discount_proposal, start_time};

pub fn proposal(agent: &str) -> Proposal {
    let request = ProposalRequest::from_json(discount_proposal())
        .unwrap()
        .validate()
        .unwrap();
    let at = start_time();
    Proposal {
        id: ProposalId::generate(),
        agent: AgentId::parse(agent).unwrap(),
        status: Status::Pending,
        content: request.into_content(
            Verdict {
                outcome: VerdictOutcome::NeedsReview,
                rules: vec!["large-discount".into()],
                reasons: vec!["large-discount: Discounts above 10% need finance".into()],
                route: vec!["finance".into()],
                quorum: Quorum {
                    approvals: 1,
                    each_role: false,
                    per_role: [("finance".to_owned(), 1)].into(),
                },
                sla: Some("30m".into()),
                step_up: StepUp::None,
                escalation: Vec::new(),
                on_timeout: None,
                reject_reasons: Vec::new(),
            },
            Some(at + Duration::hours(8)),
        ),
        decision: None,
        outcome: None,
        created_at: at,
        updated_at: at,
    }
}

pub fn submit(p: &Proposal, key: Option<(&str, &str)>) -> Command {
    Command::Submit {
        proposal: Box::new(p.clone()),
        idempotency: key.map(|(key, hash)| IdempotencyKey {
            key: key.into(),
            request_hash: hash.into(),
        }),
    }
}

pub fn decide(p: &Proposal, status: Status) -> Command {
    Command::Decide {
        id: p.id.clone(),
        status,
        decision: Decision {
            by: Actor::policy(),
            at: start_time(),
            reason: Some("test".into()),
            execution_token: None,
        },
    }
}

async fn apply_one(store: &dyn Store, command: Command) -> CommandResult {
    store
        .apply(vec![command], start_time())
        .await
        .unwrap()
        .remove(0)
}

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
    let outcome = |agent: &str, token: &str| Command::RecordOutcome {
        id: p.id.clone(),
        agent: AgentId::parse(agent).unwrap(),
        outcome: ExecutionOutcome {
            result: ExecutionResult::Executed,
            details: Some(json!({"ok": true})),
            at: start_time(),
        },
        token: token.to_owned(),
    };
    assert_eq!(
        apply_one(store.as_ref(), outcome("revops-crm", "cxt_x")).await,
        CommandResult::WrongState(Status::Pending)
    );
    let CommandResult::Updated(approved) =
        apply_one(store.as_ref(), decide(&p, Status::Approved)).await
    else {
        panic!()
    };
    let token = approved.decision.unwrap().execution_token.unwrap();
    assert_eq!(
        apply_one(store.as_ref(), outcome("billing", &token)).await,
        CommandResult::NotFound
    );
    assert_eq!(
        apply_one(store.as_ref(), outcome("revops-crm", "cxt_wrong")).await,
        CommandResult::WrongToken
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
    let verified = countersign::audit::verify(two.as_ref(), None)
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
    let verified = countersign::audit::verify(store.as_ref(), None)
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
    let verified = countersign::audit::verify(one.as_ref(), None)
        .await
        .unwrap();
    assert_eq!(verified.events, 100);
}

async fn the_slack_outbox_is_claimed_under_a_lease(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    apply_one(store.as_ref(), submit(&p, None)).await;
    let at = start_time();
    let lease = at + Duration::seconds(60);

    // The pending proposal owes one card (its route is finance).
    let jobs = store.claim_slack_jobs(at, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].task,
        SlackTask::PostCard {
            role: "finance".into()
        }
    );
    assert_eq!(
        (jobs[0].proposal_id.clone(), jobs[0].attempts),
        (p.id.clone(), 0)
    );
    // Leased: nobody else gets it until the lease ends (a worker that died loses only that).
    assert!(
        store
            .claim_slack_jobs(at, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_slack_jobs(lease, lease + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);

    // A retry comes back when due, counted; a finished job records where the card went.
    store
        .retry_slack_job(&again[0], lease + Duration::seconds(5), "unreachable", true)
        .await
        .unwrap();
    assert!(
        store
            .claim_slack_jobs(lease, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let retried = store
        .claim_slack_jobs(
            lease + Duration::seconds(5),
            lease + Duration::seconds(65),
            10,
        )
        .await
        .unwrap();
    assert_eq!(retried[0].attempts, 1);
    let card = PostedCard {
        role: "finance".into(),
        channel: "C0FINANCE".into(),
        ts: "1.000001".into(),
    };
    store
        .finish_slack_job(&retried[0], Some(&card), lease)
        .await
        .unwrap();
    assert_eq!(store.posted_cards(&p.id).await.unwrap(), vec![card.clone()]);
    assert!(
        store
            .claim_slack_jobs(lease + Duration::days(1), lease + Duration::days(2), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A decision owes a refresh of the cards and a word to the requester; a job given up is
    // not claimed again.
    apply_one(store.as_ref(), decide(&p, Status::Rejected)).await;
    let owed = store
        .claim_slack_jobs(lease + Duration::days(1), lease + Duration::days(2), 10)
        .await
        .unwrap();
    assert_eq!(
        owed.iter().map(|j| &j.task).collect::<Vec<_>>(),
        [&SlackTask::RefreshCards, &SlackTask::NotifyRequester]
    );
    for job in &owed {
        store
            .fail_slack_job(job, lease, "channel_not_found")
            .await
            .unwrap();
    }
    assert!(
        store
            .claim_slack_jobs(lease + Duration::days(9), lease + Duration::days(10), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
both_backends!(the_slack_outbox_is_claimed_under_a_lease);

async fn a_renewed_lease_holds_and_only_jobs_in_hand_are_renewed(db: TestDb) {
    let store = db.store().await;
    let (one, two) = (proposal("revops-crm"), proposal("revops-crm"));
    apply_one(store.as_ref(), submit(&one, None)).await;
    apply_one(store.as_ref(), submit(&two, None)).await;
    let at = start_time();
    let jobs = store
        .claim_slack_jobs(at, at + Duration::seconds(30), 10)
        .await
        .unwrap();
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 2);

    // Renewed past the first lease: still held when it would have ended.
    let renewed = store
        .renew_slack_leases(&ids, at + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(renewed, 2);
    assert!(
        store
            .claim_slack_jobs(at + Duration::seconds(45), at + Duration::seconds(90), 10)
            .await
            .unwrap()
            .is_empty(),
        "a renewed lease holds"
    );

    // Settled jobs are not renewed: one put back for later, one done.
    store
        .retry_slack_job(&jobs[0], at + Duration::seconds(50), "rate limited", false)
        .await
        .unwrap();
    store
        .finish_slack_job(&jobs[1], None, at + Duration::seconds(45))
        .await
        .unwrap();
    let renewed = store
        .renew_slack_leases(&ids, at + Duration::seconds(600))
        .await
        .unwrap();
    assert_eq!(renewed, 0);
    let due = store
        .claim_slack_jobs(at + Duration::seconds(50), at + Duration::seconds(80), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|j| j.id).collect::<Vec<_>>(),
        [jobs[0].id],
        "the job put back is due when its retry says, not held by a renewal"
    );
}
both_backends!(a_renewed_lease_holds_and_only_jobs_in_hand_are_renewed);

async fn a_card_post_is_outstanding_until_done_or_given_up(db: TestDb) {
    let store = db.store().await;
    let (posted, refused) = (proposal("revops-crm"), proposal("revops-crm"));
    apply_one(store.as_ref(), submit(&posted, None)).await;
    apply_one(store.as_ref(), submit(&refused, None)).await;
    assert!(store.card_posts_outstanding(&posted.id).await.unwrap());
    let at = start_time();
    let jobs = store
        .claim_slack_jobs(at, at + Duration::seconds(30), 10)
        .await
        .unwrap();
    // In a worker's hands, or put back for later: still outstanding.
    assert!(store.card_posts_outstanding(&posted.id).await.unwrap());
    store
        .retry_slack_job(&jobs[0], at + Duration::seconds(1), "rate limited", false)
        .await
        .unwrap();
    assert!(store.card_posts_outstanding(&posted.id).await.unwrap());
    // A refresh owed after a decision is not a card post.
    apply_one(store.as_ref(), decide(&refused, Status::Rejected)).await;
    store
        .fail_slack_job(&jobs[1], at, "channel_not_found")
        .await
        .unwrap();
    assert!(!store.card_posts_outstanding(&refused.id).await.unwrap());
    let again = store
        .claim_slack_jobs(at + Duration::seconds(1), at + Duration::seconds(31), 10)
        .await
        .unwrap();
    let post = again
        .iter()
        .find(|job| job.proposal_id == posted.id)
        .unwrap();
    store.finish_slack_job(post, None, at).await.unwrap();
    assert!(!store.card_posts_outstanding(&posted.id).await.unwrap());
}
both_backends!(a_card_post_is_outstanding_until_done_or_given_up);

async fn replicas_claim_different_outbox_rows(db: TestDb) {
    let store = db.store().await;
    let proposals: Vec<Proposal> = (0..40).map(|_| proposal("revops-crm")).collect();
    store
        .apply(
            proposals.iter().map(|p| submit(p, None)).collect(),
            start_time(),
        )
        .await
        .unwrap();
    let at = start_time();
    let claims = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_slack_jobs(at, at + Duration::seconds(60), 7)
                .await
                .unwrap()
        })
    });
    let mut ids: Vec<i64> = Vec::new();
    for claim in claims {
        ids.extend(claim.await.unwrap().into_iter().map(|j| j.id));
    }
    let claimed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "no row claimed twice");
    assert_eq!(claimed, 28);
}
both_backends!(replicas_claim_different_outbox_rows);

async fn votes_count_once_per_person_and_the_quorum_decides(db: TestDb) {
    let store = db.store().await;
    let mut p = proposal("billing");
    p.content.verdict.route = vec!["finance".into(), "legal".into()];
    p.content.verdict.quorum = Quorum {
        approvals: 2,
        each_role: true,
        per_role: Default::default(),
    };
    apply_one(store.as_ref(), submit(&p, None)).await;
    let vote = |voter: &str, eligible: &[&str], ballot: Ballot, dedupe: &str| Command::Vote {
        id: p.id.clone(),
        voter: voter.into(),
        eligible: eligible.iter().map(|r| r.to_string()).collect(),
        ballot,
        reason: None,
        dedupe: dedupe.into(),
    };
    let first = apply_one(
        store.as_ref(),
        vote("U1", &["finance"], Ballot::Approve, "a"),
    )
    .await;
    assert!(
        matches!(first, CommandResult::Voted { ref proposal, replay: false, .. } if proposal.status == Status::Pending)
    );
    let replay = apply_one(
        store.as_ref(),
        vote("U1", &["finance"], Ballot::Approve, "a"),
    )
    .await;
    assert!(matches!(replay, CommandResult::Voted { replay: true, .. }));
    let twice = apply_one(
        store.as_ref(),
        vote("U1", &["finance"], Ballot::Approve, "b"),
    )
    .await;
    assert!(matches!(twice, CommandResult::VoteRefused { .. }));
    // A second finance approval does not stand in for legal.
    let finance = apply_one(
        store.as_ref(),
        vote("U2", &["finance"], Ballot::Approve, "c"),
    )
    .await;
    assert!(
        matches!(finance, CommandResult::Voted { ref proposal, .. } if proposal.status == Status::Pending)
    );
    let legal = apply_one(
        store.as_ref(),
        vote("U3", &["finance", "legal"], Ballot::Approve, "d"),
    )
    .await;
    let CommandResult::Voted {
        proposal, votes, ..
    } = legal
    else {
        panic!("{legal:?}")
    };
    assert_eq!(proposal.status, Status::Approved);
    let roles = countersign::domain::vote::tally(
        &p.content.verdict.quorum,
        &p.content.verdict.route,
        &votes,
    )
    .roles;
    assert_eq!(
        roles.last().unwrap().as_deref(),
        Some("legal"),
        "counted where it was needed"
    );
    let late = apply_one(store.as_ref(), vote("U4", &["legal"], Ballot::Reject, "e")).await;
    assert!(matches!(
        late,
        CommandResult::VoteRefused {
            reason: countersign::store::VoteRefusal::NotPending,
            ..
        }
    ));
    assert_eq!(store.votes(&p.id).await.unwrap().len(), 3);

    // Past its expires_at a proposal takes no vote, even before the SLA worker expires it.
    let mut late = self::proposal("billing");
    late.content.expires_at = Some(start_time());
    apply_one(store.as_ref(), submit(&late, None)).await;
    let refused = store
        .apply(
            vec![Command::Vote {
                id: late.id.clone(),
                voter: "U9".into(),
                eligible: vec!["finance".into()],
                ballot: Ballot::Approve,
                reason: None,
                dedupe: "x".into(),
            }],
            start_time(),
        )
        .await
        .unwrap();
    assert!(matches!(
        refused[0],
        CommandResult::VoteRefused {
            reason: countersign::store::VoteRefusal::Expired,
            ..
        }
    ));
}
both_backends!(votes_count_once_per_person_and_the_quorum_decides);

async fn totp_steps_are_spent_once_and_failures_lock(db: TestDb) {
    let store = db.store().await;
    let at = start_time();
    assert_eq!(store.totp_enrollment("U1").await.unwrap(), None);
    assert!(
        store
            .begin_totp_enrollment("U1", "sealed-1", at)
            .await
            .unwrap()
    );
    assert!(
        store
            .begin_totp_enrollment("U1", "sealed-2", at)
            .await
            .unwrap(),
        "a pending one restarts"
    );
    assert!(
        !store.use_totp_step("U1", 10).await.unwrap(),
        "not active yet"
    );
    assert!(store.activate_totp("U1", 10, at).await.unwrap());
    assert!(!store.activate_totp("U1", 11, at).await.unwrap(), "once");
    assert!(
        !store
            .begin_totp_enrollment("U1", "sealed-3", at)
            .await
            .unwrap(),
        "an active one stays"
    );
    let enrollment = store.totp_enrollment("U1").await.unwrap().unwrap();
    assert_eq!(
        (
            enrollment.sealed_secret.as_str(),
            enrollment.active,
            enrollment.last_step
        ),
        ("sealed-2", true, Some(10))
    );
    assert!(
        !store.use_totp_step("U1", 10).await.unwrap(),
        "the first code's step is spent"
    );
    assert!(store.use_totp_step("U1", 11).await.unwrap());
    assert!(!store.use_totp_step("U1", 11).await.unwrap(), "a replay");
    assert!(
        !store.use_totp_step("U1", 9).await.unwrap(),
        "an older code"
    );
    assert!(store.delete_totp("U1").await.unwrap());
    assert!(!store.delete_totp("U1").await.unwrap());

    // Four wrong answers in the window do not lock; the fifth does, for 15 minutes.
    for n in 0..4 {
        assert_eq!(
            store
                .step_up_failure("U2", at + Duration::minutes(n))
                .await
                .unwrap(),
            None
        );
    }
    // One long before does not count.
    assert_eq!(
        store
            .step_up_failure("U3", at - Duration::hours(1))
            .await
            .unwrap(),
        None
    );
    let locked = store
        .step_up_failure("U2", at + Duration::minutes(4))
        .await
        .unwrap();
    assert_eq!(locked, Some(at + Duration::minutes(19)));
    assert_eq!(
        store
            .step_up_locked_until("U2", at + Duration::minutes(10))
            .await
            .unwrap(),
        locked
    );
    assert_eq!(
        store
            .step_up_locked_until("U2", at + Duration::minutes(20))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.step_up_locked_until("U3", at).await.unwrap(), None);
}
both_backends!(totp_steps_are_spent_once_and_failures_lock);

async fn timers_are_armed_with_a_pending_proposal(db: TestDb) {
    let store = db.store().await;
    let p = proposal("revops-crm");
    apply_one(store.as_ref(), submit(&p, None)).await;
    let later = start_time() + Duration::hours(9);
    let due = store.claim_timers(later, later, 10).await.unwrap();
    // Its SLA is 30 minutes without a ladder: a reminder at 15 minutes, and the hard expiry.
    let timers: Vec<(Timer, chrono::DateTime<chrono::Utc>)> =
        due.into_iter().map(|t| (t.timer, t.due_at)).collect();
    assert_eq!(
        timers,
        [
            (
                Timer::Remind { level: None },
                start_time() + Duration::minutes(15)
            ),
            (Timer::Expire, start_time() + Duration::hours(8)),
        ]
    );
}
both_backends!(timers_are_armed_with_a_pending_proposal);

async fn reports_owed_are_scheduled_once_and_claimed_under_a_lease(db: TestDb) {
    use countersign::report::{Period, ReportPost};
    let store = db.store().await;
    let replica = db.store().await;
    let at = start_time();
    let digest = ReportPost {
        id: 0,
        dedupe: "digest:finance:2026-11-16T09:00:00+00:00".into(),
        role: "finance".into(),
        channel: "C0FINANCE".into(),
        period: Period::Week,
        as_of: at,
        requested_by: None,
        attempts: 0,
    };
    // Two replicas noticing the same slot: one row.
    assert!(store.enqueue_report(&digest).await.unwrap());
    assert!(!replica.enqueue_report(&digest).await.unwrap());

    let lease = at + Duration::minutes(2);
    let claimed = store.claim_report_posts(at, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (
            claimed[0].period,
            claimed[0].as_of,
            claimed[0].requested_by.clone()
        ),
        (Period::Week, at, None)
    );
    assert!(
        replica
            .claim_report_posts(at, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A failed attempt comes back when the lease ends; after the last one it is given up.
    for attempt in 0..countersign::store::REPORT_ATTEMPTS {
        let now = lease + Duration::minutes(i64::from(attempt) * 3);
        let again = replica
            .claim_report_posts(now, now + Duration::minutes(2), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "attempt {attempt}");
        assert_eq!(again[0].attempts, attempt);
        replica
            .retry_report_post(again[0].id, "slack down")
            .await
            .unwrap();
    }
    let later = at + Duration::days(1);
    assert!(
        store
            .claim_report_posts(later, later, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A posted report is never claimed again.
    let asked = ReportPost {
        dedupe: "command:trigger-1".into(),
        requested_by: Some("U0FIN001".into()),
        ..digest
    };
    assert!(store.enqueue_report(&asked).await.unwrap());
    let claimed = store
        .claim_report_posts(later, later + Duration::minutes(2), 10)
        .await
        .unwrap();
    assert_eq!(claimed[0].requested_by.as_deref(), Some("U0FIN001"));
    store
        .finish_report_post(claimed[0].id, later)
        .await
        .unwrap();
    let much_later = later + Duration::hours(1);
    assert!(
        store
            .claim_report_posts(much_later, much_later, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
both_backends!(reports_owed_are_scheduled_once_and_claimed_under_a_lease);

async fn the_oldest_pending_proposal_is_known(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.oldest_pending().await.unwrap(), None);
    let p = proposal("revops-crm");
    apply_one(store.as_ref(), submit(&p, None)).await;
    assert_eq!(store.oldest_pending().await.unwrap(), Some(p.created_at));
}
both_backends!(the_oldest_pending_proposal_is_known);
