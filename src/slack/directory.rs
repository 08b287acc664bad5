//! Who may approve for a role: the role's named users, and the members of its Slack user group
//! (usergroups.users.list, cached briefly: membership changes rarely, clicks come in bursts, and
//! the method is rate-limited at Tier 2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SlackApi;
use crate::cluster::RedisLink;
use crate::manifest::Role;

const TTL: Duration = Duration::from_secs(60);
const LOCAL_TTL_WHEN_SHARED: Duration = Duration::from_secs(10);

/// A user group's members, and when they were read.
type CachedGroup = (Instant, Arc<Vec<String>>);
/// Whom an email belongs to (if anyone), and when that was asked.
type CachedPerson = (Instant, Option<String>);

#[derive(Clone, Debug)]
pub struct Directory {
    api: SlackApi,
    groups: Arc<Mutex<HashMap<String, CachedGroup>>>,
    /// With Redis, user group members are shared by the replicas for [`TTL`] (one Tier 2 call a
    /// minute per group for the whole deployment); each process then keeps its copy for
    /// [`LOCAL_TTL_WHEN_SHARED`] only, so a change is seen everywhere within about a minute.
    shared: Option<RedisLink>,
    /// Email → Slack user id (or none), for the requester's mention on cards.
    people: Arc<Mutex<HashMap<String, CachedPerson>>>,
}

impl Directory {
    pub fn new(api: SlackApi) -> Self {
        Self {
            api,
            groups: Arc::default(),
            people: Arc::default(),
            shared: None,
        }
    }

    /// Shares the user group cache through Redis.
    pub fn with_shared_cache(mut self, redis: RedisLink) -> Self {
        self.shared = Some(redis);
        self
    }

    /// The workspace member a proposal's `requested_by` names, when it is an email Slack knows
    /// (cached; a lookup that fails is `None` and not cached). An agent's text is never
    /// trusted to be a user id: `U…` text is not turned into a mention.
    pub async fn person(&self, requested_by: &str) -> Option<String> {
        let email = requested_by.trim().to_ascii_lowercase();
        if !email.contains('@') {
            return None;
        }
        if let Some((at, found)) = self.people.lock().expect("cache poisoned").get(&email)
            && at.elapsed() < TTL * 10
        {
            return found.clone();
        }
        match self.api.user_by_email(&email).await {
            Ok(found) => {
                self.people
                    .lock()
                    .expect("cache poisoned")
                    .insert(email, (Instant::now(), found.clone()));
                found
            }
            Err(error) => {
                tracing::warn!(%error, "cannot look up a requester");
                None
            }
        }
    }

    /// Is `user` an approver for `role`? A user group that cannot be read counts as empty (and
    /// is logged): a Slack outage must not widen who may approve.
    pub async fn approves_for(&self, role: &Role, user: &str) -> bool {
        if role.approvers.users.iter().any(|u| u == user) {
            return true;
        }
        let Some(group) = &role.approvers.usergroup else {
            return false;
        };
        self.members(group).await.iter().any(|u| u == user)
    }

    /// Is `user` one of `admins` (Slack user ids `U…`, or user groups `S…` whose members count)?
    /// As for approvers, an unreadable group counts as empty.
    pub async fn is_one_of(&self, admins: &[String], user: &str) -> bool {
        if admins.iter().any(|a| a == user) {
            return true;
        }
        for group in admins.iter().filter(|a| a.starts_with('S')) {
            if self.members(group).await.iter().any(|u| u == user) {
                return true;
            }
        }
        false
    }

    async fn members(&self, group: &str) -> Arc<Vec<String>> {
        let local_ttl = if self.shared.is_some() {
            LOCAL_TTL_WHEN_SHARED
        } else {
            TTL
        };
        if let Some((at, members)) = self.groups.lock().expect("cache poisoned").get(group)
            && at.elapsed() < local_ttl
        {
            return members.clone();
        }
        let members = match self.shared_members(group).await {
            Some(members) => members,
            None => match self.api.usergroup_members(group).await {
                Ok(members) => {
                    self.share_members(group, &members).await;
                    members
                }
                Err(error) => {
                    tracing::warn!(%error, usergroup = group, "cannot read user group members");
                    return Arc::default();
                }
            },
        };
        let members = Arc::new(members);
        self.groups
            .lock()
            .expect("cache poisoned")
            .insert(group.to_owned(), (Instant::now(), members.clone()));
        members
    }

    /// Another replica's recent read of `group`, if Redis has one.
    async fn shared_members(&self, group: &str) -> Option<Vec<String>> {
        let redis = self.shared.as_ref()?;
        let key = redis.key(format_args!("usergroup:{group}"));
        let cached: Option<String> = redis.query(redis::Cmd::get(&key)).await.ok().flatten();
        serde_json::from_str(&cached?).ok()
    }

    async fn share_members(&self, group: &str, members: &[String]) {
        let Some(redis) = &self.shared else { return };
        let key = redis.key(format_args!("usergroup:{group}"));
        let value = serde_json::to_string(members).expect("strings serialize");
        let _ = redis
            .query::<()>(redis::Cmd::set_ex(&key, value, TTL.as_secs()))
            .await;
    }
}
