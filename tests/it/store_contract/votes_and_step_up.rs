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
        proof: None,
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
                proof: None,
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

/// One step-up change through the store's command path: (changed, lock set).
async fn step_up(
    store: &dyn Store,
    user: &str,
    change: StepUpChange,
    at: chrono::DateTime<chrono::Utc>,
) -> (bool, Option<chrono::DateTime<chrono::Utc>>) {
    let command = Command::StepUp {
        user: user.into(),
        change,
    };
    match store.apply(vec![command], at).await.unwrap().remove(0) {
        CommandResult::StepUp {
            changed,
            locked_until,
        } => (changed, locked_until),
        other => panic!("{other:?}"),
    }
}

/// Spends `step` of `user`'s TOTP code the way a stepped-up approval does, with its vote on a
/// fresh proposal: whether the step counted (else the vote is refused, `StepUpSpent`).
async fn spend(
    store: &dyn Store,
    user: &str,
    step: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> bool {
    let p = proposal("billing");
    store.apply(vec![submit(&p, None)], at).await.unwrap();
    let vote = Command::Vote {
        id: p.id.clone(),
        voter: user.into(),
        eligible: vec!["finance".into()],
        ballot: Ballot::Approve,
        reason: None,
        dedupe: format!("form {step}"),
        proof: Some(StepUpProof {
            kind: StepUp::Totp,
            totp_step: Some(step),
        }),
    };
    match store.apply(vec![vote], at).await.unwrap().remove(0) {
        CommandResult::Voted { .. } => true,
        CommandResult::VoteRefused {
            reason: VoteRefusal::StepUpSpent,
            ..
        } => false,
        other => panic!("{other:?}"),
    }
}

async fn totp_steps_are_spent_once_and_failures_lock(db: TestDb) {
    let store = db.store().await;
    let store = store.as_ref();
    let at = start_time();
    let begin = |sealed: &str| StepUpChange::BeginTotp {
        sealed_secret: sealed.into(),
    };
    assert_eq!(store.totp_enrollment("U1").await.unwrap(), None);
    assert!(step_up(store, "U1", begin("sealed-1"), at).await.0);
    assert!(
        step_up(store, "U1", begin("sealed-2"), at).await.0,
        "a pending one restarts"
    );
    assert!(!spend(store, "U1", 10, at).await, "not active yet");
    let activate = |step, sealed: &str| StepUpChange::ActivateTotp {
        step,
        sealed_secret: sealed.into(),
    };
    assert!(
        !step_up(store, "U1", activate(10, "sealed-1"), at).await.0,
        "a code checked against the replaced enrollment does not activate the new one"
    );
    assert!(step_up(store, "U1", activate(10, "sealed-2"), at).await.0);
    assert!(
        !step_up(store, "U1", activate(11, "sealed-2"), at).await.0,
        "once"
    );
    assert!(
        !step_up(store, "U1", begin("sealed-3"), at).await.0,
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
        !spend(store, "U1", 10, at).await,
        "the first code's step is spent"
    );
    assert!(spend(store, "U1", 11, at).await);
    assert!(!spend(store, "U1", 11, at).await, "a replay");
    assert!(!spend(store, "U1", 9, at).await, "an older code");
    let unenroll = |step| StepUpChange::Unenroll { step };
    assert!(
        !step_up(store, "U1", unenroll(Some(11)), at).await.0,
        "an unenrollment proven with a spent code changes nothing"
    );
    assert!(step_up(store, "U1", unenroll(Some(12)), at).await.0);
    assert!(!step_up(store, "U1", unenroll(None), at).await.0);
    // Each change that took effect is in the trail, written with it; the ones that did not
    // are not.
    let kinds: Vec<String> = store
        .audit_page(&AuditFilter::default(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|kind| kind.starts_with("totp."))
        .collect();
    assert_eq!(
        kinds,
        [
            "totp.enrollment_started",
            "totp.enrollment_started",
            "totp.enrolled",
            "totp.unenrolled"
        ]
    );

    // Four wrong answers in the window do not lock; the fifth does, for 15 minutes — audited
    // and announced in the proposal's channels in the same transaction.
    let p = proposal("revops-crm");
    apply_one(store, submit(&p, None)).await;
    let wrong = || StepUpChange::WrongAnswer {
        proposal: Some(p.id.clone()),
    };
    for n in 0..4 {
        let counted = step_up(store, "U2", wrong(), at + Duration::minutes(n)).await;
        assert_eq!(counted, (true, None));
    }
    // One long before does not count.
    let old = step_up(store, "U3", wrong(), at - Duration::hours(1)).await;
    assert_eq!(old, (true, None));
    let (_, locked) = step_up(store, "U2", wrong(), at + Duration::minutes(4)).await;
    assert_eq!(locked, Some(at + Duration::minutes(19)));
    // While locked, not even a right code's step is spent (the guard is in the spend itself,
    // so a right code racing the fifth wrong one loses); after the lock, it is.
    step_up(store, "U2", begin("sealed-u2"), at).await;
    step_up(store, "U2", activate(1, "sealed-u2"), at).await;
    let during = at + Duration::minutes(10);
    assert!(!spend(store, "U2", 2, during).await);
    let after = at + Duration::minutes(20);
    assert!(spend(store, "U2", 2, after).await);
    let trail = db.audit_of(p.id.as_str()).await;
    let lock_events: Vec<_> = trail
        .iter()
        .filter(|e| e.kind == "step_up.locked")
        .collect();
    assert_eq!(lock_events.len(), 1, "{trail:?}");
    assert_eq!(lock_events[0].actor, "reviewer:U2");
    let alerts = db
        .strings("SELECT task FROM slack_outbox WHERE task LIKE '%lockout_alert%'")
        .await;
    assert_eq!(
        alerts.len(),
        1,
        "the channels' alert is queued with the lock"
    );
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
