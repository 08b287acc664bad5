//! "Have we handled this already?" for deliveries that may arrive twice: a Socket Mode envelope
//! Slack redelivers after a reconnect, an interaction a proxy retried. Keys live for a short
//! while in Redis (so a duplicate landing on another replica is caught too), or in this process
//! when Redis is not configured or unreachable.
//!
//! Dedup keys only save repeated work: everything they guard is idempotent in the database as
//! well (a vote is counted once whatever arrives twice), so a key lost with Redis costs nothing
//! but the repeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RedisLink;

/// Local keys kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
pub struct SeenKeys {
    redis: Option<RedisLink>,
    local: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for SeenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenKeys")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl SeenKeys {
    /// Keys shared through Redis when `redis` is given, else kept in this process.
    pub fn new(redis: Option<RedisLink>) -> Self {
        Self {
            redis,
            local: Mutex::default(),
        }
    }

    /// True the first time `key` is offered within `ttl`; false for a repeat.
    pub async fn first_time(&self, key: &str, ttl: Duration) -> bool {
        if let Some(redis) = &self.redis {
            let name = redis.key(format_args!("seen:{key}"));
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let only_new = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(millis));
            let set = redis
                .query::<Option<String>>(redis::Cmd::set_options(&name, 1, only_new))
                .await;
            if let Ok(answer) = set {
                return answer.is_some();
            }
        }
        self.first_time_here(key, ttl)
    }

    fn first_time_here(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut seen = self.local.lock().expect("dedup lock");
        if seen.len() >= SWEEP_AT {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(key) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(key.to_owned(), now + ttl);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_new_once_until_it_expires() {
        let seen = SeenKeys::new(None);
        assert!(seen.first_time("a", Duration::from_secs(60)).await);
        assert!(!seen.first_time("a", Duration::from_secs(60)).await);
        assert!(seen.first_time("b", Duration::from_secs(60)).await);
        assert!(seen.first_time("c", Duration::ZERO).await);
        assert!(
            seen.first_time("c", Duration::ZERO).await,
            "expired at once"
        );
    }
}
