//! Per-agent rate limits (a steady rate with a burst, as the generic cell rate algorithm: one
//! timestamp per agent, when its bucket is next empty) and the count of refusals the circuit
//! breaker watches, on the app's clock.
//!
//! With `redis_url` the state is in Redis, shared by every replica. If Redis cannot be reached
//! (or answers slowly), countersign keeps answering with this process's own buckets, logs the
//! degradation once, exports `countersign_redis_degraded{prefix="<redis_key_prefix>"} 1`, and
//! goes back to Redis as soon as a call succeeds again.

mod local;
mod shared;

use std::sync::atomic::{AtomicBool, Ordering};
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
    degraded: AtomicBool,
}

impl RateLimiter {
    /// Limits kept in this process only.
    pub fn local() -> Self {
        Self::default()
    }

    /// Limits kept in Redis (shared by replicas), falling back to this process's when Redis
    /// cannot be reached.
    pub fn shared(shared: SharedLimiter) -> Self {
        metrics::gauge!("countersign_redis_degraded", "prefix" => shared.prefix().to_owned())
            .set(0.0);
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
        if let Some(shared) = &self.shared {
            match shared.admit(agent, limit, now).await {
                Ok(answer) => {
                    self.recovered();
                    return answer;
                }
                Err(error) => self.degrade(&error),
            }
        }
        self.local.admit(agent, limit, now)
    }

    /// Counts a refusal of `agent`; answers how many it had within the last minute.
    pub async fn refused(&self, agent: &str, now: DateTime<Utc>) -> u32 {
        if let Some(shared) = &self.shared {
            match shared.refused(agent, now).await {
                Ok(count) => {
                    self.recovered();
                    return count;
                }
                Err(error) => self.degrade(&error),
            }
        }
        self.local.refused(agent, now)
    }

    fn degrade(&self, error: &shared::SharedError) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis unreachable: rate limits fall back to this process's own counters until it is back");
            self.gauge(1.0);
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis is back: rate limits are shared again");
            self.gauge(0.0);
        }
    }

    fn gauge(&self, value: f64) {
        if let Some(shared) = &self.shared {
            metrics::gauge!("countersign_redis_degraded", "prefix" => shared.prefix().to_owned())
                .set(value);
        }
    }
}
