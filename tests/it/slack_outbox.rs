//! The Slack outbox worker stepped by hand (`run_once`) against the sandbox: what it does with
//! Slack's answers.

use std::sync::Arc;

use countersign::clock::Clock;
use countersign::config::Secret;
use countersign::links::LinkSigner;
use countersign::registry::{Registry, SharedRegistry};
use countersign::slack::{Directory, OutgoingMessage};
use countersign::workers::{ChannelBudget, SlackOutbox};
use serde_json::json;

use crate::common::{TestDb, manifests_dir, policies_dir};
use crate::fixture::Fixture;
use crate::sandbox_api::Standalone;
use crate::store_contract::{proposal, submit};

async fn outbox(db: &TestDb, slack: &Standalone) -> SlackOutbox {
    SlackOutbox {
        store: db.store().await,
        api: slack.api.clone(),
        directory: Directory::new(slack.api.clone()),
        registry: SharedRegistry::new(Registry::load(&manifests_dir(), &policies_dir()).unwrap()),
        clock: Arc::new(slack.clock.clone()) as Arc<dyn Clock>,
        links: LinkSigner::new(Some(&Secret::new("k".repeat(32)))),
        public_url: url::Url::parse("http://countersign.test/").unwrap(),
        budget: ChannelBudget::default(),
    }
}

#[tokio::test]
async fn a_429_from_slack_is_waited_out_and_the_card_posted_once() {
    let db = TestDb::sqlite();
    let slack = Standalone::start().await;
    let worker = outbox(&db, &slack).await;
    let p = proposal("revops-crm");
    worker
        .store
        .apply(vec![submit(&p, None)], slack.clock.now())
        .await
        .unwrap();

    // Someone else has just spent the channel's whole burst.
    let noise = OutgoingMessage {
        text: "busy channel".into(),
        blocks: serde_json::from_value(json!([])).unwrap(),
    };
    for _ in 0..4 {
        slack
            .api
            .post_message("C0FINANCE", &noise, None)
            .await
            .unwrap();
    }
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
    let p = proposal("revops-crm");
    worker
        .store
        .apply(vec![submit(&p, None)], slack.clock.now())
        .await
        .unwrap();

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
