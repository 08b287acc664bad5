//! countersign's Slack budget: one token bucket per Web API method (sized by the method's tier,
//! [`super::tiers`]) and, for chat.postMessage, one per channel — per workspace, since every
//! key is scoped to the bot token's workspace. Spending first keeps countersign under Slack's
//! limits instead of bouncing off them; a 429 that happens anyway (another app, a replica
//! without Redis) pauses the bucket until its `Retry-After`, so nothing more goes to that
//! method or channel meanwhile.
//!
//! With Redis the buckets (and so the pauses) are shared by every replica; without Redis, or
//! while it is unreachable, each process spends from its own. A pause is also kept locally, so
//! one recorded while Redis answered is still honoured if it stops answering.

mod bucket;
mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use bucket::{Bucket, Rate};

use super::tiers::Tier;
use crate::clock::{Clock, SystemClock};
use crate::cluster::RedisLink;
use shared::SharedBuckets;

/// Cheap to clone; clones spend from the same buckets.
#[derive(Clone)]
pub struct SlackBudget(Arc<Inner>);

struct Inner {
    clock: Arc<dyn Clock>,
    /// `slack_tier_scale`: how many times Slack's documented tiers to spend.
    tier_scale: u32,
    local: Mutex<HashMap<String, Bucket>>,
    shared: Option<SharedBuckets>,
}

impl std::fmt::Debug for SlackBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackBudget")
            .field("shared", &self.0.shared.is_some())
            .field("tier_scale", &self.0.tier_scale)
            .finish()
    }
}

impl Default for SlackBudget {
    /// This process's own buckets, on the wall clock (a one-shot command such as `doctor`).
    fn default() -> Self {
        Self::new(Arc::new(SystemClock), None)
    }
}

impl SlackBudget {
    /// Buckets on `clock` (the app's, which the sandbox shares), in Redis when `redis` is given
    /// (falling back to this process's while it cannot be reached).
    pub fn new(clock: Arc<dyn Clock>, redis: Option<RedisLink>) -> Self {
        Self(Arc::new(Inner {
            clock,
            tier_scale: 1,
            local: Mutex::default(),
            shared: redis.map(SharedBuckets::new),
        }))
    }

    /// Spends `scale` times Slack's documented tiers (`slack_tier_scale`). Before sharing.
    pub fn with_tier_scale(mut self, scale: u32) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("the tier scale is set before the budget is shared")
            .tier_scale = scale.max(1);
        self
    }

    /// The size of the bucket for a method of `tier` (or a channel).
    pub fn rate(&self, tier: Tier) -> Rate {
        tier.scaled(tier.ours(), self.0.tier_scale)
    }

    /// Takes one call's worth from the bucket `key`. `Ok(delay)`: go after `delay` (zero
    /// unless up to `max_wait` was acceptable; the token is then reserved). `Err(wait)`: there
    /// is none within `max_wait`; one would be there in `wait`.
    pub async fn take(
        &self,
        key: &str,
        rate: Rate,
        max_wait: Duration,
    ) -> Result<Duration, Duration> {
        let now = self.millis_now();
        let answer = match &self.0.shared {
            Some(shared) => match shared.take(key, rate, now, max_wait).await {
                Ok(answer) => answer,
                Err(_) => self.take_here(key, rate, now, max_wait),
            },
            None => self.take_here(key, rate, now, max_wait),
        };
        answer.map(millis).map_err(millis)
    }

    /// The budget's time, to date a call's sending for [`SlackBudget::pause`].
    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    /// Slack answered 429 to a call from the bucket `key` sent at `sent`: nothing more from it
    /// until `retry_after` after that, on every replica. Counted from the sending, not from
    /// when the answer arrived: Slack's wait began when it answered, and a slow answer (or,
    /// in tests, a clock moved meanwhile) must not stretch it — at worst one call comes early
    /// and meets another 429.
    pub async fn pause(&self, key: &str, rate: Rate, sent: DateTime<Utc>, retry_after: Duration) {
        let now = self.millis_now();
        let until = sent
            .timestamp_millis()
            .saturating_add(i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX));
        if let Some(shared) = &self.0.shared
            && let Err(error) = shared.pause(key, rate, now, until).await
        {
            tracing::debug!(%error, key, "Slack budget: pause kept locally only");
        }
        self.local()
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(rate, now))
            .pause(rate, now, until);
    }

    fn take_here(&self, key: &str, rate: Rate, now: i64, max_wait: Duration) -> Result<i64, i64> {
        let max_wait = i64::try_from(max_wait.as_millis()).unwrap_or(i64::MAX);
        self.local()
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now, max_wait)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.0.local.lock().expect("Slack budget poisoned")
    }

    fn millis_now(&self) -> i64 {
        self.0.clock.now().timestamp_millis()
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const RATE: Rate = Rate {
        burst: 2,
        per_minute: 60,
    };

    fn budget() -> (SlackBudget, ManualClock) {
        let clock = ManualClock::new(chrono::Utc::now());
        (SlackBudget::new(Arc::new(clock.clone()), None), clock)
    }

    #[tokio::test]
    async fn buckets_are_kept_apart_by_key() {
        let (budget, _) = budget();
        let none = Duration::ZERO;
        assert_eq!(budget.take("a", RATE, none).await, Ok(Duration::ZERO));
        assert_eq!(budget.take("a", RATE, none).await, Ok(Duration::ZERO));
        assert_eq!(
            budget.take("a", RATE, none).await,
            Err(Duration::from_secs(1))
        );
        assert_eq!(budget.take("b", RATE, none).await, Ok(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_pause_holds_the_bucket_on_the_budgets_clock() {
        let (budget, clock) = budget();
        budget
            .pause("a", RATE, budget.now(), Duration::from_secs(30))
            .await;
        assert_eq!(
            budget.take("a", RATE, Duration::ZERO).await,
            Err(Duration::from_secs(30))
        );
        // A caller that may wait a second still may not jump a pause.
        assert_eq!(
            budget.take("a", RATE, Duration::from_secs(1)).await,
            Err(Duration::from_secs(30))
        );
        clock.advance(chrono::Duration::seconds(30));
        assert_eq!(
            budget.take("a", RATE, Duration::ZERO).await,
            Ok(Duration::ZERO)
        );
        assert_eq!(
            budget.take("a", RATE, Duration::ZERO).await,
            Err(Duration::from_secs(1))
        );
    }
}
