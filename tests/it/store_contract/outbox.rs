//! The Slack outbox: claims under a lease, renewals, outstanding card posts, replicas.

use super::*;

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
        (Some(p.id.clone()), 0)
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
        .find(|job| job.proposal_id.as_ref() == Some(&posted.id))
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

async fn each_channel_gives_only_its_oldest_undone_card_post(db: TestDb) {
    let store = db.store().await;
    let at = start_time();
    let finance: Vec<Proposal> = (0..3).map(|_| proposal("revops-crm")).collect();
    let elsewhere = proposal("revops-crm");
    let unordered = proposal("revops-crm");
    let mut commands: Vec<Command> = finance
        .iter()
        .map(|p| submit_to_channel(p, "C0FINANCE"))
        .collect();
    commands.push(submit_to_channel(&elsewhere, "C0ELSEWHERE"));
    commands.push(submit(&unordered, None));
    store.apply(commands, at).await.unwrap();
    let claimed = |jobs: &[SlackJob]| -> Vec<ProposalId> {
        jobs.iter().filter_map(|j| j.proposal_id.clone()).collect()
    };

    // One card per channel (the oldest), and the row that has none.
    let jobs = store
        .claim_slack_jobs(at, at + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed(&jobs),
        [
            finance[0].id.clone(),
            elsewhere.id.clone(),
            unordered.id.clone()
        ]
    );
    for job in &jobs[1..] {
        store.finish_slack_job(job, None, at).await.unwrap();
    }
    // While the channel's first card is in hand, its later ones wait…
    assert!(
        store
            .claim_slack_jobs(at, at + Duration::seconds(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // …and while it is put off (a 429), they wait for it, though they are due.
    let later = at + Duration::seconds(2);
    store
        .retry_slack_job(&jobs[0], later, "ratelimited", false)
        .await
        .unwrap();
    let soon = at + Duration::seconds(1);
    assert!(
        store
            .claim_slack_jobs(soon, soon + Duration::seconds(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let first = store
        .claim_slack_jobs(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed(&first), [finance[0].id.clone()]);

    // Done, the next takes its turn; given up, so does the one after.
    store
        .finish_slack_job(&first[0], None, later)
        .await
        .unwrap();
    let second = store
        .claim_slack_jobs(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed(&second), [finance[1].id.clone()]);
    store
        .fail_slack_job(&second[0], later, "channel_not_found")
        .await
        .unwrap();
    let third = store
        .claim_slack_jobs(later, later + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed(&third), [finance[2].id.clone()]);
}
both_backends!(each_channel_gives_only_its_oldest_undone_card_post);

async fn replicas_never_hold_two_cards_of_one_channel(db: TestDb) {
    let store = db.store().await;
    let at = start_time();
    let channels = ["C0A", "C0B", "C0C"];
    let commands = (0..30)
        .map(|n| submit_to_channel(&proposal("revops-crm"), channels[n % 3]))
        .collect();
    store.apply(commands, at).await.unwrap();
    let claims = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_slack_jobs(at, at + Duration::seconds(60), 7)
                .await
                .unwrap()
        })
    });
    let mut ids = Vec::new();
    for claim in claims {
        ids.extend(claim.await.unwrap().into_iter().map(|j| j.id));
    }
    // Rows were inserted in submission order, so the channels' heads are the first three.
    ids.sort_unstable();
    let first = ids.first().copied().unwrap_or_default();
    assert_eq!(
        ids,
        [first, first + 1, first + 2],
        "each channel's head, once, whoever claimed it"
    );
}
both_backends!(replicas_never_hold_two_cards_of_one_channel);

async fn a_callback_in_flight_is_not_redelivered_under_its_worker(db: TestDb) {
    let store = db.store().await;
    let store = store.as_ref();
    let p = proposal("revops-crm");
    apply_one(store, submit(&p, None)).await;
    apply_one(store, decide(&p, Status::Approved)).await;
    let at = start_time();
    let claimed = store
        .claim_webhooks(at, at + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the decision's callback");
    let event = claimed[0].id.clone();
    let redeliver = |event: &str| Command::Redeliver {
        event: event.into(),
        by: "system:admin".into(),
    };
    // A worker holds it: redelivering now would race its attempt's result.
    assert!(matches!(
        apply_one(store, redeliver(&event)).await,
        CommandResult::Redelivered(Redelivery::InFlight)
    ));
    assert!(matches!(
        apply_one(store, redeliver("msg_nope")).await,
        CommandResult::Redelivered(Redelivery::NoSuchEvent)
    ));
    // Once its lease has ended, it starts over, audited in the same transaction.
    let later = at + Duration::seconds(31);
    let started = store.apply(vec![redeliver(&event)], later).await.unwrap();
    assert!(matches!(
        started[0],
        CommandResult::Redelivered(Redelivery::Started)
    ));
    let trail = db.audit_of(p.id.as_str()).await;
    let audited: Vec<_> = trail
        .iter()
        .filter(|e| e.kind == "callback.redelivered")
        .collect();
    assert_eq!(audited.len(), 1, "only the redelivery that happened");
}
both_backends!(a_callback_in_flight_is_not_redelivered_under_its_worker);
