//! SLA timers, owed reports, the oldest pending proposal.

use super::*;

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
    let posted = Command::ReportPosted {
        post: claimed[0].clone(),
        at: later,
    };
    store.apply(vec![posted], later).await.unwrap();
    // Marked posted with its event, in one transaction.
    let events = store
        .audit_page(&AuditFilter::default(), 0, 100)
        .await
        .unwrap();
    let posted = events.iter().find(|e| e.kind == "report.posted").unwrap();
    assert_eq!(posted.actor, "reviewer:U0FIN001");
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
