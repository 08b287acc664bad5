//! A burst of decisions against a Slack that enforces every method's tier: 200 approvals in
//! one channel within a minute. countersign runs as an API replica (clicks over HTTP, signed,
//! from the sandbox served on its own port, as Slack delivers them); its Slack outbox is
//! stepped here on the sandbox's clock, so five simulated minutes take seconds and the pace is
//! Slack's budget, not the machine's. What it shows: no 429 storm (every refusal waited out,
//! none repeated within its `Retry-After`), every card in its final state within five minutes,
//! and what each decision costs in Slack calls (printed: `cargo test --test it burst --
//! --nocapture`; the figures are in BENCHMARKS.md).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use countersign::clock::Clock;
use countersign::config::{Secret, ServeRole};
use countersign::workers::SlackOutbox;

use crate::both_backends;
use crate::common::test_config;
use crate::common::{REVOPS, TestApp, TestDb, discount_proposal};
use crate::sandbox_api::{SIGNING_SECRET, Standalone, TOKEN};
use crate::slack_client::{Message, Slack, status_of};

const DECISIONS: usize = 200;
/// The clicks are spread over this long.
const CLICKING: Duration = Duration::seconds(60);
/// Every card must show its decision within this long of the first click.
const FINAL_WITHIN: Duration = Duration::minutes(5);
/// How far the clock moves when the outbox has nothing it may do yet.
const STEP: Duration = Duration::seconds(1);

struct Burst {
    db: TestDb,
    app: TestApp,
    slack: Standalone,
    worker: SlackOutbox,
    /// Jobs the outbox took up and put off again (the budget's turn-aways): the churn.
    put_off: std::sync::atomic::AtomicUsize,
}

impl Burst {
    /// Both clocks (countersign's and Slack's) move together.
    fn advance(&self, by: Duration) {
        self.app.clock.advance(by);
        self.slack.clock.advance(by);
    }

    fn now(&self) -> DateTime<Utc> {
        self.slack.clock.now()
    }

    /// Runs the outbox until it has nothing it may do now.
    async fn drain_due(&self) {
        loop {
            let pass = self.worker.run_once().await.unwrap();
            self.put_off
                .fetch_add(pass.retried, std::sync::atomic::Ordering::Relaxed);
            if pass.claimed() == 0 {
                return;
            }
        }
    }

    /// Steps the clock and the outbox until every row is done, or `limit` has passed.
    async fn drain_all(&self, limit: DateTime<Utc>) {
        loop {
            self.drain_due().await;
            if self.undone().await == 0 || self.now() >= limit {
                return;
            }
            self.advance(STEP);
        }
    }

    async fn undone(&self) -> i64 {
        let far = self.now() + Duration::days(365);
        let queues = self.worker.store.backlog(far).await.unwrap();
        queues
            .iter()
            .filter(|q| q.queue == "slack")
            .map(|q| q.due)
            .sum()
    }

    /// When the last row of this kind of task was done.
    async fn last_done(&self, task: &str) -> Option<DateTime<Utc>> {
        let sql = format!(
            "SELECT CAST(MAX(done_at) AS TEXT) FROM slack_outbox WHERE task LIKE '%\"kind\":\"{task}\"%'"
        );
        let last = self.db.strings(&sql).await;
        let last = last.first()?;
        // SQLite stores RFC 3339; PostgreSQL's text form is `2026-11-21 09:03:30.25+00`.
        countersign::clock::parse_timestamp(last).ok().or_else(|| {
            DateTime::parse_from_str(last, "%Y-%m-%d %H:%M:%S%.f%#z")
                .ok()
                .map(|at| at.to_utc())
        })
    }
}

async fn two_hundred_approvals_in_one_channel_within_a_minute(db: TestDb) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let slack = Standalone::start_for(&app_url).await;
    let mut config = test_config(&db);
    config.slack_bot_token = Some(Secret::new(TOKEN));
    config.slack_signing_secret = Some(Secret::new(SIGNING_SECRET));
    config.slack_api_url = slack.sandbox.api_url();
    // The replica that takes clicks; the outbox is this test's, stepped by hand.
    config.serve_role = ServeRole::Api;
    let app = TestApp::start_on(config, listener, slack.clock.now()).await;
    let worker = SlackOutbox {
        public_url: app_url.clone(),
        ..crate::slack_outbox::outbox(&db, &slack).await
    };
    let burst = Burst {
        db,
        app,
        slack,
        worker,
        put_off: Default::default(),
    };

    // 200 pending discounts, each routed to finance alone, their cards posted at the channel's
    // pace (about one a second).
    let mut ids = Vec::new();
    for _ in 0..DECISIONS {
        let created = burst.app.create(REVOPS, &discount_proposal()).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let posting = burst.now();
    burst.drain_all(posting + Duration::minutes(10)).await;
    let posted_in = burst.now() - posting;
    let fake = Slack::at(&burst.slack.http, &burst.slack.base);
    let cards: BTreeMap<String, Message> = fake
        .messages("C0FINANCE", "U0NOBODY")
        .await
        .into_iter()
        .filter_map(|m| Some((m.proposal_id()?, m)))
        .collect();
    assert_eq!(cards.len(), DECISIONS, "every card posted before the burst");
    let before = burst.slack.sandbox.calls().len();
    let put_off_before = burst.put_off.load(std::sync::atomic::Ordering::Relaxed);
    let refused_before = burst.slack.sandbox.refused().len();

    // The burst: a finance approver approves each card, 0.3 s apart, while the outbox works.
    let first_click = burst.now();
    let gap = CLICKING / DECISIONS as i32;
    for id in &ids {
        let acted = fake.click("U0FIN002", &cards[id], "approve").await;
        assert_eq!(acted.status, 200, "the click is acknowledged: {acted:?}");
        burst.drain_due().await;
        burst.advance(gap);
    }
    burst.drain_all(first_click + Duration::minutes(15)).await;
    assert_eq!(burst.undone().await, 0, "the outbox drained");

    // Every proposal approved, every card showing it.
    for id in &ids {
        assert_eq!(
            status_of(&burst.app, REVOPS, id).await["status"],
            "approved"
        );
    }
    let finals = fake
        .messages("C0FINANCE", "U0NOBODY")
        .await
        .into_iter()
        .filter(|m| m.thread_ts.is_none() && m.proposal_id().is_some())
        .filter(|m| m.visible_text().contains("*Approved*"))
        .count();
    assert_eq!(finals, DECISIONS, "every card shows its decision");
    let last_update = burst
        .last_done("refresh_cards")
        .await
        .expect("cards were refreshed");
    let final_after = last_update - first_click;
    assert!(
        final_after <= FINAL_WITHIN,
        "the last card showed its decision {}s after the first click",
        final_after.num_seconds()
    );

    // No 429 storm: a bucket refused once is not asked again before its Retry-After.
    let refused = &burst.slack.sandbox.refused()[refused_before..];
    for (n, refusal) in refused.iter().enumerate() {
        let wait = Duration::seconds(refusal.retry_after as i64);
        let again = refused[n + 1..]
            .iter()
            .find(|later| later.bucket == refusal.bucket && later.at < refusal.at + wait);
        assert!(again.is_none(), "{refusal:?} then {again:?}");
    }

    // What a decision cost in Slack calls.
    let calls = &burst.slack.sandbox.calls()[before..];
    let mut by_method: BTreeMap<&str, usize> = BTreeMap::new();
    for call in calls {
        *by_method.entry(call.method.as_str()).or_default() += 1;
    }
    let ephemeral = fake
        .messages("C0FINANCE", "U0FIN002")
        .await
        .into_iter()
        .filter(|m| m.ephemeral_for.as_deref() == Some("U0FIN002"))
        .count();
    let backend = if burst.db.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "burst ({backend}): {DECISIONS} approvals in one channel over {}s",
        CLICKING.num_seconds()
    );
    println!("  cards posted beforehand in {}s", posted_in.num_seconds());
    println!(
        "  every card final {}s after the first click; outbox drained {}s after it",
        final_after.num_seconds(),
        (burst.now() - first_click).num_seconds()
    );
    println!(
        "  429s: {} (none repeated within its Retry-After)",
        refused.len()
    );
    let put_off = burst.put_off.load(std::sync::atomic::Ordering::Relaxed) - put_off_before;
    println!(
        "  outbox rows taken up and put off again: {put_off} ({:.2} per decision)",
        put_off as f64 / DECISIONS as f64
    );
    println!("  Web API calls per decision:");
    for (method, count) in &by_method {
        println!(
            "    {method:<24} {count:>4}  {:.2}",
            *count as f64 / DECISIONS as f64
        );
    }
    println!(
        "    {:<24} {:>4}  {:.2}  (the click's answer, on its response_url: no Web API call)",
        "response_url",
        ephemeral,
        ephemeral as f64 / DECISIONS as f64
    );
    let count = |method: &str| by_method.get(method).copied().unwrap_or(0);
    assert_eq!(
        count("chat.postEphemeral"),
        0,
        "clicks are answered on response_url"
    );
    assert_eq!(ephemeral, DECISIONS, "every clicker answered");
    assert!(
        count("chat.update") <= DECISIONS,
        "at most one update per decision"
    );
    assert!(
        count("users.lookupByEmail") <= 2,
        "the requester looked up once (cached)"
    );
    // Each job turned away by the budget is booked a slot of its own, so it is taken up about
    // twice, not once per token for as long as it waits (which was thousands here).
    assert!(
        put_off <= 2 * 2 * DECISIONS,
        "{put_off} rows put off for {DECISIONS} decisions"
    );
}
both_backends!(two_hundred_approvals_in_one_channel_within_a_minute);
