//! The Slack outbox worker stepped by hand (`run_once`) against the sandbox: what it does with
//! Slack's answers.

use std::sync::Arc;

use countersign::clock::Clock;
use countersign::config::Secret;
use countersign::links::LinkSigner;
use countersign::registry::{Registry, SharedRegistry};
use countersign::slack::Directory;
use countersign::workers::{Lease, SlackOutbox};

use crate::common::{TestDb, eventually, manifests_dir, policies_dir};
use crate::fixture::Fixture;
use crate::sandbox_api::{SlowAnswers, Standalone};
use crate::store_contract::{decide, proposal, submit, submit_to_channel};

/// The Slack outbox worker on `db`, calling `slack`, on its clock; stepped by hand.
pub async fn outbox(db: &TestDb, slack: &Standalone) -> SlackOutbox {
    SlackOutbox {
        store: db.store().await,
        api: slack.api.clone(),
        directory: Directory::new(slack.api.clone()),
        registry: SharedRegistry::new(Registry::load(&manifests_dir(), &policies_dir()).unwrap()),
        clock: Arc::new(slack.clock.clone()) as Arc<dyn Clock>,
        links: LinkSigner::new(Some(&Secret::new("k".repeat(32)))),
        public_url: url::Url::parse("http://countersign.test/").unwrap(),
        bookings: Default::default(),
        lease: Lease::default(),
    }
}

/// A pending proposal whose card the worker owes (routed to finance, queued in its channel as
/// the engine queues it).
async fn owe_a_card(worker: &SlackOutbox, slack: &Standalone) -> countersign::domain::Proposal {
    let p = proposal("revops-crm");
    worker
        .store
        .apply(vec![submit_to_channel(&p, "C0FINANCE")], slack.clock.now())
        .await
        .unwrap();
    p
}

#[tokio::test]
async fn a_429_from_slack_is_waited_out_and_the_card_posted_once() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    let p = owe_a_card(&worker, &slack).await;

    // Someone else has just spent the channel's whole burst.
    slack.spend_channel("C0FINANCE").await;
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.done, pass.retried, pass.failed), (0, 1, 0));
    let last = slack.sandbox.calls().last().cloned().unwrap();
    assert_eq!(
        (last.method.as_str(), last.status),
        ("chat.postMessage", 429)
    );
    // Not due again before Retry-After (1 s)…
    assert_eq!(worker.run_once().await.unwrap().claimed(), 0);
    // …and then posted, once.
    slack.clock.advance(chrono::Duration::seconds(1));
    let pass = worker.run_once().await.unwrap();
    assert_eq!(pass.done, 1);
    assert_eq!(worker.store.posted_cards(&p.id).await.unwrap().len(), 1);
    assert_eq!(worker.run_once().await.unwrap().claimed(), 0);
    let cards = slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .filter(|m| m.text.contains("Approval needed"))
        .count();
    assert_eq!(cards, 1);
}

#[tokio::test]
async fn a_card_slack_refuses_is_given_up_not_retried() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    // countersign's roles name a channel this workspace does not have.
    let fixture = Fixture::new();
    fixture.edit(
        "manifests/roles.yaml",
        "channel: C0FINANCE",
        "channel: C0MISSING",
    );
    let mut worker = outbox(&db, &slack).await;
    worker.registry =
        SharedRegistry::new(Registry::load(&fixture.manifests(), &fixture.policies()).unwrap());
    let p = owe_a_card(&worker, &slack).await;

    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.done, pass.retried, pass.failed), (0, 0, 1));
    let last = slack.sandbox.calls().last().cloned().unwrap();
    assert_eq!(last.response["error"], "channel_not_found");
    slack.clock.advance(chrono::Duration::days(1));
    assert_eq!(
        worker.run_once().await.unwrap().claimed(),
        0,
        "given up, not retried"
    );
    assert!(worker.store.posted_cards(&p.id).await.unwrap().is_empty());
}

fn cards_in_finance(slack: &Standalone) -> usize {
    slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .filter(|m| m.text.contains("Approval needed"))
        .count()
}

#[tokio::test]
async fn a_slow_post_keeps_its_lease_so_no_second_worker_posts_it() {
    let db = TestDb::sqlite();
    let slow = SlowAnswers::new("chat.postMessage");
    let slack = Standalone::start_wrapped(|sandbox| sandbox, |router| slow.layer(router)).await;
    let mut worker = outbox(&db, &slack).await;
    worker.lease.renew_every = std::time::Duration::from_millis(20);
    owe_a_card(&worker, &slack).await;

    let first = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await.unwrap() }
    });
    slow.arrived.notified().await;
    let lease_sql = "SELECT CAST(leased_until AS TEXT) FROM slack_outbox WHERE done_at IS NULL";
    let claimed = db.strings(lease_sql).await;
    // Slack takes longer than the whole lease; the pass still holding the row renews it.
    slack
        .clock
        .advance(worker.lease.length + chrono::Duration::seconds(1));
    eventually(
        std::time::Duration::from_secs(10),
        "the lease renewed",
        || {
            let db = &db;
            let claimed = claimed.clone();
            async move { db.strings(lease_sql).await != claimed }
        },
    )
    .await;
    let second = outbox(&db, &slack).await;
    assert_eq!(
        second.run_once().await.unwrap().claimed(),
        0,
        "a row in hand is not claimed again"
    );

    slow.release.add_permits(1);
    assert_eq!(first.await.unwrap().done, 1);
    assert_eq!(cards_in_finance(&slack), 1);
}

#[tokio::test]
async fn a_dead_workers_row_comes_back_when_its_short_lease_ends() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    owe_a_card(&worker, &slack).await;
    // A worker claims the row and is killed before doing it: nobody renews its lease.
    let now = slack.clock.now();
    let claimed = worker
        .store
        .claim_slack_jobs(now, now + Lease::default().length, 8)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    assert_eq!(
        worker.run_once().await.unwrap().claimed(),
        0,
        "still leased"
    );
    slack.clock.advance(Lease::default().length);
    assert_eq!(worker.run_once().await.unwrap().done, 1);
    assert_eq!(cards_in_finance(&slack), 1);
}

#[tokio::test]
async fn a_refresh_waits_for_the_card_another_worker_is_still_posting() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    let p = owe_a_card(&worker, &slack).await;
    let store = worker.store.clone();
    // Another replica has claimed the card's post and is slow about it; meanwhile the proposal
    // is decided, which owes a refresh of the card.
    let now = slack.clock.now();
    let held = store
        .claim_slack_jobs(now, now + Lease::default().length, 8)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    store
        .apply(
            vec![decide(&p, countersign::domain::Status::Rejected)],
            slack.clock.now(),
        )
        .await
        .unwrap();

    let pass = worker.run_once().await.unwrap();
    assert_eq!(pass.retried, 1, "the refresh waits for the card: {pass:?}");
    assert!(
        !slack
            .sandbox
            .calls()
            .iter()
            .any(|c| c.method == "chat.update"),
        "no update before the card exists"
    );

    // That replica dies; its post comes back, and the refresh follows it.
    slack.clock.advance(Lease::default().length);
    while worker.run_once().await.unwrap().claimed() > 0 {}
    let methods: Vec<String> = slack
        .sandbox
        .calls()
        .into_iter()
        .filter(|c| c.method.starts_with("chat."))
        .map(|c| c.method)
        .collect();
    let post = methods.iter().position(|m| m == "chat.postMessage");
    let update = methods.iter().position(|m| m == "chat.update");
    assert!(
        post.is_some() && update.is_some() && post < update,
        "the card is posted, then refreshed: {methods:?}"
    );
    let cards: Vec<String> = slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(cards.len(), 1, "{cards:?}");
    assert!(cards[0].starts_with("Rejected"), "{cards:?}");
}

#[tokio::test]
async fn a_retry_after_counts_from_the_attempt_not_from_a_slow_answer() {
    let db = TestDb::sqlite();
    let slow = SlowAnswers::new("chat.postMessage");
    slow.hold(false);
    let slack = Standalone::start_wrapped(|sandbox| sandbox, |router| slow.layer(router)).await;
    let worker = outbox(&db, &slack).await;
    owe_a_card(&worker, &slack).await;
    // Someone else has spent the channel's burst: Slack will answer 429, Retry-After 1 s…
    slack.spend_channel("C0FINANCE").await;
    slow.hold(true);
    let pass = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await.unwrap() }
    });
    // …and takes a second to say so.
    slow.arrived.notified().await;
    slack.clock.advance(chrono::Duration::seconds(1));
    slow.hold(false);
    slow.release.add_permits(1);
    assert_eq!(pass.await.unwrap().retried, 1);
    let last = slack.sandbox.calls().last().cloned().unwrap();
    assert_eq!(last.status, 429);

    // A second after the attempt, the card is due again (not a second after the answer).
    assert_eq!(worker.run_once().await.unwrap().done, 1);
    assert_eq!(cards_in_finance(&slack), 1);
}

/// Five votes before the worker gets to the card: one `chat.update` shows them all. Rows claimed
/// in the same pass are folded into the first refresh, and rows left unclaimed are marked done
/// by it (`coalesced into job …`).
#[tokio::test]
async fn several_refreshes_of_one_card_go_out_as_one_update() {
    use countersign::domain::Ballot;
    use countersign::store::Command;
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    let mut p = proposal("revops-crm");
    p.content.verdict.quorum.approvals = 9;
    p.content.verdict.quorum.per_role = [("finance".to_owned(), 9)].into();
    let store = worker.store.clone();
    store
        .apply(vec![submit(&p, None)], slack.clock.now())
        .await
        .unwrap();
    assert_eq!(
        worker.run_once().await.unwrap().done,
        1,
        "the card is posted"
    );
    let votes = (1..=5)
        .map(|n| Command::Vote {
            id: p.id.clone(),
            voter: format!("U0VOTER{n}"),
            eligible: vec!["finance".into()],
            ballot: Ballot::Approve,
            reason: None,
            dedupe: format!("click:{n}"),
            proof: None,
        })
        .collect();
    store.apply(votes, slack.clock.now()).await.unwrap();
    let updates = || {
        slack
            .sandbox
            .calls()
            .iter()
            .filter(|c| c.method == "chat.update")
            .count()
    };
    worker.run_once().await.unwrap();
    assert_eq!(updates(), 1);
    // The thread replies get their turn as the channel's budget allows; no refresh is left.
    for _ in 0..10 {
        slack.clock.advance(chrono::Duration::seconds(2));
        worker.run_once().await.unwrap();
    }
    assert_eq!(updates(), 1, "one update for five votes");
    assert_eq!(worker.run_once().await.unwrap().claimed(), 0);
    let card = slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .find(|m| m.thread_ts.is_none() && m.text.contains("Approval needed"))
        .unwrap();
    assert!(
        serde_json::to_string(&card.blocks)
            .unwrap()
            .contains("U0VOTER5"),
        "the update shows the last vote: {:?}",
        card.blocks
    );
}

/// The statuses of countersign's posts (not the other app's), in the order Slack got them.
fn card_posts(slack: &Standalone) -> Vec<u16> {
    slack
        .sandbox
        .calls()
        .into_iter()
        .filter(|c| c.method == "chat.postMessage" && c.args["text"] != "busy channel")
        .map(|c| c.status)
        .collect()
}

#[tokio::test]
async fn a_429_pauses_the_channel_and_its_cards_go_out_in_order() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    let first = owe_a_card(&worker, &slack).await;
    slack.spend_channel("C0FINANCE").await;
    let pass = worker.run_once().await.unwrap();
    assert_eq!(
        (pass.done, pass.retried),
        (0, 1),
        "the first card met a 429"
    );

    // A second card for the channel is owed while the first waits: it does not overtake it,
    // nor is it even taken up.
    let second = owe_a_card(&worker, &slack).await;
    assert_eq!(worker.run_once().await.unwrap().claimed(), 0);
    assert_eq!(card_posts(&slack).len(), 1, "only the refused post so far");

    // Retry-After (1 s) has passed: the first card goes; the second follows at the channel's
    // pace, a second later (after a 429, one post, then the steady rate).
    slack.clock.advance(chrono::Duration::seconds(1));
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.done, pass.retried), (1, 0), "{pass:?}");
    assert_eq!(worker.store.posted_cards(&first.id).await.unwrap().len(), 1);
    let pass = worker.run_once().await.unwrap();
    assert_eq!(
        (pass.done, pass.retried),
        (0, 1),
        "the channel's pace: {pass:?}"
    );
    assert!(
        worker
            .store
            .posted_cards(&second.id)
            .await
            .unwrap()
            .is_empty()
    );
    slack.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(worker.run_once().await.unwrap().done, 1);
    assert_eq!(worker.run_once().await.unwrap().claimed(), 0);

    // Slack saw: the first card refused once, the first card, the second card.
    assert_eq!(card_posts(&slack), [429, 200, 200]);
    let refusals = slack.sandbox.refused();
    assert_eq!(
        refusals.len(),
        1,
        "every 429 waited out once, none repeated"
    );
    let in_channel: Vec<String> = slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .filter(|m| m.text.contains("Approval needed"))
        .map(|m| m.ts)
        .collect();
    let posted_ts = |p: &countersign::domain::Proposal| {
        let store = worker.store.clone();
        let id = p.id.clone();
        async move { store.posted_cards(&id).await.unwrap()[0].ts.clone() }
    };
    assert_eq!(
        in_channel,
        [posted_ts(&first).await, posted_ts(&second).await],
        "in submission order"
    );
}

/// The case: replicas without a shared budget, a channel Slack answers 429. Before the
/// channel's cards were queued in the store, the other replica took the next card, was refused
/// in turn, and the cards went out of order.
#[tokio::test]
async fn a_429_on_one_replica_holds_the_channel_on_every_replica() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let one = outbox(&db, &slack).await;
    // A second process: its own Slack client and budget (no Redis), its own bookings.
    let other = SlackOutbox {
        api: countersign::slack::SlackApi::new(
            &slack.sandbox.api_url(),
            &Secret::new(crate::sandbox_api::TOKEN),
        )
        .with_budget(countersign::slack::SlackBudget::new(
            Arc::new(slack.clock.clone()),
            None,
        )),
        bookings: Default::default(),
        ..outbox(&db, &slack).await
    };
    let cards = [
        owe_a_card(&one, &slack).await,
        owe_a_card(&one, &slack).await,
        owe_a_card(&one, &slack).await,
    ];
    slack.spend_channel("C0FINANCE").await;
    assert_eq!(
        one.run_once().await.unwrap().retried,
        1,
        "the first card met a 429"
    );
    assert_eq!(
        other.run_once().await.unwrap().claimed(),
        0,
        "the other replica does not take the next card"
    );
    // The replicas take turns, a second apart, until every card is out.
    for turn in 0..12 {
        slack.clock.advance(chrono::Duration::seconds(1));
        let worker = if turn % 2 == 0 { &other } else { &one };
        worker.run_once().await.unwrap();
    }
    assert_eq!(card_posts(&slack), [429, 200, 200, 200]);
    assert_eq!(slack.sandbox.refused().len(), 1, "one 429, waited out once");
    let in_channel: Vec<String> = slack
        .sandbox
        .messages("C0FINANCE", None)
        .into_iter()
        .filter(|m| m.text.contains("Approval needed"))
        .map(|m| m.ts)
        .collect();
    let mut posted = Vec::new();
    for card in &cards {
        posted.push(
            one.store.posted_cards(&card.id).await.unwrap()[0]
                .ts
                .clone(),
        );
    }
    assert_eq!(in_channel, posted, "in submission order");
}
