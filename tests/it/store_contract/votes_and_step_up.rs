//! Votes and quorum; TOTP steps and step-up lockouts.

use super::*;

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
