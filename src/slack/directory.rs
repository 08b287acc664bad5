//! Who may approve for a role: the role's named users, and the members of its Slack user group
//! (usergroups.users.list, cached briefly: membership changes rarely, clicks come in bursts, and
//! the method is rate-limited at Tier 2). And who an email is (users.lookupByEmail, Tier 3: about
//! 50 a minute for the whole workspace), asked on every approval for separation of duties and
//! on every card for the requester's mention, so answers — "nobody" included — are cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SlackApi;
use crate::cluster::RedisLink;
use crate::manifest::Role;

const TTL: Duration = Duration::from_secs(60);
const LOCAL_TTL_WHEN_SHARED: Duration = Duration::from_secs(10);
/// How long an email's owner is remembered. Slack accounts rarely change hands; ten minutes
/// keeps a burst of approvals to one lookup per requester.
const PERSON_TTL: Duration = Duration::from_secs(600);
/// DM channels remembered before the cache starts over.
const MAX_DMS: usize = 50_000;
/// How long "no such member" is remembered: shorter, so a new hire is found soon.
const NOBODY_TTL: Duration = Duration::from_secs(120);

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
    /// Email lookups are shared the same way.
    shared: Option<RedisLink>,
    /// Email → Slack user id (or none): separation of duties and the requester's mention.
    people: Arc<Mutex<HashMap<String, CachedPerson>>>,
    /// User → the bot's DM channel with them. A DM channel never changes, so it is opened
    /// (conversations.open, Tier 3) once per person per process rather than once per message.
    dms: Arc<Mutex<HashMap<String, String>>>,
}

impl Directory {
    pub fn new(api: SlackApi) -> Self {
        Self {
            api,
            groups: Arc::default(),
            people: Arc::default(),
            dms: Arc::default(),
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
        match self.lookup_email(requested_by).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot look up a requester");
                None
            }
        }
    }

    /// Who `email` belongs to in the workspace, if anyone; an error when Slack cannot say (not
    /// cached: separation of duties refuses rather than guess). Answers, "nobody" included, are
    /// kept for [`PERSON_TTL`] / [`NOBODY_TTL`] in this process and, with Redis, for every
    /// replica, so a burst of approvals costs one `users.lookupByEmail` per requester.
    pub async fn lookup_email(&self, email: &str) -> Result<Option<String>, super::SlackError> {
        let email = email.trim().to_ascii_lowercase();
        if !email.contains('@') {
            return Ok(None);
        }
        if let Some((at, found)) = self.people.lock().expect("cache poisoned").get(&email)
            && at.elapsed() < person_ttl(found)
        {
            return Ok(found.clone());
        }
        let found = match self.shared_person(&email).await {
            Some(found) => found,
            None => {
                let found = self.api.user_by_email(&email).await?;
                self.share_person(&email, &found).await;
                found
            }
        };
        self.people
            .lock()
            .expect("cache poisoned")
            .insert(email, (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Another replica's recent lookup of `email` (`Some(None)`: nobody has it).
    async fn shared_person(&self, email: &str) -> Option<Option<String>> {
        let redis = self.shared.as_ref()?;
        let key = redis.key(format_args!("email:{}", email_key(email)));
        let cached: Option<String> = redis.query(redis::Cmd::get(&key)).await.ok().flatten();
        cached.map(|id| (!id.is_empty()).then_some(id))
    }

    async fn share_person(&self, email: &str, found: &Option<String>) {
        let Some(redis) = &self.shared else { return };
        let key = redis.key(format_args!("email:{}", email_key(email)));
        let value = found.clone().unwrap_or_default();
        let ttl = person_ttl(found).as_secs();
        let _ = redis
            .query::<()>(redis::Cmd::set_ex(&key, value, ttl))
            .await;
    }

    /// The bot's DM channel with `user`, opened once and remembered.
    pub async fn dm_channel(&self, user: &str) -> Result<String, super::SlackError> {
        if let Some(channel) = self.dms.lock().expect("cache poisoned").get(user) {
            return Ok(channel.clone());
        }
        let channel = self.api.open_dm(user).await?;
        let mut dms = self.dms.lock().expect("cache poisoned");
        // A bound, not an eviction policy: a workspace's reviewers fit many times over.
        if dms.len() >= MAX_DMS {
            dms.clear();
        }
        dms.insert(user.to_owned(), channel.clone());
        Ok(channel)
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

fn person_ttl(found: &Option<String>) -> Duration {
    if found.is_some() {
        PERSON_TTL
    } else {
        NOBODY_TTL
    }
}

/// Emails are personal data: Redis keys carry their SHA-256, not the address.
fn email_key(email: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(email.as_bytes()))
}

/// The core asks the workspace about people through this (`engine::People`): answered from
/// the directory's caches.
#[async_trait::async_trait]
impl crate::engine::People for Directory {
    async fn approves_for(&self, role: &Role, user: &str) -> bool {
        Directory::approves_for(self, role, user).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<String>, String> {
        self.lookup_email(email)
            .await
            .map_err(|error| error.to_string())
    }
}
