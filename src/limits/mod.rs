//! Per-agent rate limits (a steady rate with a burst, as the generic cell rate algorithm: one
//! timestamp per agent, when its bucket is next empty) and the count of refusals the circuit
//! breaker watches, on the app's clock.
//!
//! With `redis_url` the state is in Redis, shared by every replica. If Redis cannot be reached
//! (or answers slowly), countersign keeps answering with this process's own buckets; the
//! [`crate::cluster::RedisLink`] reports the degradation and notices the recovery.

mod local;
mod shared;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use local::LocalLimiter;
pub use shared::SharedLimiter;

use crate::manifest::RateLimit;

/// The emission interval and burst tolerance of a limit.
fn gcra(limit: RateLimit) -> (chrono::Duration, chrono::Duration) {
    let interval = chrono::Duration::microseconds(60_000_000 / i64::from(limit.per_minute));
    let tolerance = interval * (limit.burst.saturating_sub(1) as i32);
    (interval, tolerance)
}

#[derive(Default)]
pub struct RateLimiter {
    local: LocalLimiter,
    shared: Option<SharedLimiter>,
}

impl RateLimiter {
    /// Limits kept in this process only.
    pub fn local() -> Self {
        Self::default()
    }

    /// Limits kept in Redis (shared by replicas), falling back to this process's when Redis
    /// cannot be reached.
    pub fn shared(shared: SharedLimiter) -> Self {
        Self {
            shared: Some(shared),
            ..Self::default()
        }
    }

    /// Lets a request from `agent` through, or says how long until one would be.
    pub async fn admit(
        &self,
        agent: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Result<(), Duration> {
        if let Some(shared) = &self.shared
            && let Ok(answer) = shared.admit(agent, limit, now).await
        {
            return answer;
        }
        self.local.admit(agent, limit, now)
    }

    /// Counts a refusal of `agent`; answers how many it had within the last minute.
    pub async fn refused(&self, agent: &str, now: DateTime<Utc>) -> u32 {
        if let Some(shared) = &self.shared
            && let Ok(count) = shared.refused(agent, now).await
        {
            return count;
        }
        self.local.refused(agent, now)
    }
}
