//! countersign's own posting budget per Slack channel: Slack allows about one message a second
//! per channel with short bursts, and answers more with 429. Spending from a token bucket first
//! keeps the worker under that line instead of bouncing off it; a 429 that happens anyway (other
//! posters in the channel) is still honoured through `Retry-After`.
//!
//! With Redis the bucket is shared by every replica (a Lua script on the app's clock), so three
//! replicas never post into one channel faster than one would; without Redis, or while it is
//! unreachable, each process spends from its own bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cluster::RedisLink;

/// Messages a channel may receive at once, and per second after that: a little under Slack's.
pub const BURST: f64 = 3.0;
pub const PER_SECOND: f64 = 1.0;

/// KEYS[1] is a hash of the bucket's tokens (in thousandths) and when they were counted (ms).
/// ARGV: now (ms), burst (thousandths), refill (thousandths per ms). Answers -1 when a message
/// may go, else the wait in ms.
const TAKE: &str = r"
local now = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local refill = tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * refill)
  at = now
end
local answer = -1
if tokens >= 1000 then
  tokens = tokens - 1000
else
  answer = math.ceil((1000 - tokens) / refill)
end
redis.call('HSET', KEYS[1], 't', math.floor(tokens), 'at', at)
redis.call('PEXPIRE', KEYS[1], 60000)
return answer
";

/// Tokens left in a channel's bucket, and when they were counted.
type Bucket = (f64, DateTime<Utc>);

#[derive(Clone, Default)]
pub struct ChannelBudget {
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    shared: Option<(RedisLink, Arc<redis::Script>)>,
}

impl ChannelBudget {
    /// A budget shared by every replica through `redis`, falling back to this process's own.
    pub fn shared(redis: RedisLink) -> Self {
        Self {
            shared: Some((redis, Arc::new(redis::Script::new(TAKE)))),
            ..Self::default()
        }
    }

    /// Takes one message's worth for `channel`, or says how long until there is one.
    pub async fn take(&self, channel: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        if let Some((redis, script)) = &self.shared {
            let mut call = script.prepare_invoke();
            call.key(redis.key(format_args!("slack-budget:{channel}")))
                .arg(now.timestamp_millis())
                .arg((BURST * 1000.0) as i64)
                .arg(PER_SECOND);
            if let Ok(wait) = redis.invoke::<i64>(call).await {
                return if wait < 0 {
                    Ok(())
                } else {
                    Err(Duration::from_millis(wait as u64))
                };
            }
        }
        self.take_here(channel, now)
    }

    fn take_here(&self, channel: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("budget poisoned");
        let (tokens, updated) = buckets.entry(channel.to_owned()).or_insert((BURST, now));
        let elapsed = (now - *updated).num_milliseconds().max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * PER_SECOND).min(BURST);
        *updated = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / PER_SECOND))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_one_a_second_per_channel() {
        let budget = ChannelBudget::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert_eq!(budget.take("C1", now).await, Ok(()));
        }
        assert_eq!(budget.take("C1", now).await, Err(Duration::from_secs(1)));
        assert_eq!(budget.take("C2", now).await, Ok(()));
        let later = now + chrono::Duration::milliseconds(500);
        assert_eq!(
            budget.take("C1", later).await,
            Err(Duration::from_millis(500))
        );
        assert_eq!(
            budget.take("C1", now + chrono::Duration::seconds(1)).await,
            Ok(())
        );
    }
}
