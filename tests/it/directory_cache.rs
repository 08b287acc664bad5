//! The user-group cache shared through Redis: one replica's read of a group's members serves the
//! others (usergroups.users.list is Tier 2), and a Redis that is gone sends each back to Slack.

use countersign::cluster::RedisLink;
use countersign::registry::Registry;
use countersign::slack::Directory;

use crate::common::{manifests_dir, policies_dir};
use crate::redis_support::{Proxy, redis_available};
use crate::sandbox_api::Standalone;

fn group_reads(slack: &Standalone) -> usize {
    slack
        .sandbox
        .calls()
        .iter()
        .filter(|c| c.method == "usergroups.users.list")
        .count()
}

#[tokio::test]
async fn replicas_share_a_groups_members_and_fall_back_to_slack_without_redis() {
    if !redis_available().await {
        return;
    }
    let slack = Standalone::start().await;
    let mut redis = Proxy::start().await;
    let prefix = format!("cs_test_directory_{}:", ulid::Ulid::new());
    let url = redis.url();
    let replica = || {
        Directory::new(slack.api.clone()).with_shared_cache(RedisLink::new(&url, &prefix).unwrap())
    };
    let registry = Registry::load(&manifests_dir(), &policies_dir()).unwrap();
    let finance = registry.roles.get("finance").unwrap();
    // U0MGR001 approves for finance only as a member of its user group S0FINAPPR.
    let (one, two) = (replica(), replica());
    assert!(one.approves_for(finance, "U0MGR001").await);
    assert_eq!(group_reads(&slack), 1);
    assert!(two.approves_for(finance, "U0MGR001").await);
    assert!(!two.approves_for(finance, "U0NOBODY").await);
    assert_eq!(
        group_reads(&slack),
        1,
        "the second replica read Redis, not Slack"
    );

    redis.cut();
    let three = replica();
    assert!(three.approves_for(finance, "U0MGR001").await);
    assert_eq!(group_reads(&slack), 2, "without Redis, Slack is asked");
}
