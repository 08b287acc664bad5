//! Rate-limit state in Redis: the same algorithm as [`super::LocalLimiter`], run atomically by
//! Lua scripts, with the app's clock passed in (so every replica and the tests agree on time).
//! Every call is bounded by the link: a slow or dead Redis is an error here, not a stalled
//! request.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cluster::{RedisError, RedisLink};
use crate::manifest::RateLimit;

/// GCRA: KEYS[1] holds the theoretical arrival time (µs). Answers -1 (admitted) or the wait (µs).
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
if tat - now > tolerance then return tat - now - tolerance end
local next = tat + interval
redis.call('SET', KEYS[1], next, 'PX', math.floor((next - now) / 1000) + 60000)
return -1
";

/// A sliding minute of refusals: KEYS[1] is a sorted set of their times (µs).
const REFUSED: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000000)
redis.call('PEXPIRE', KEYS[1], 61000)
return redis.call('ZCARD', KEYS[1])
";

pub struct SharedLimiter {
    redis: RedisLink,
    admit: redis::Script,
    refused: redis::Script,
}

impl SharedLimiter {
    /// Limits kept through `redis` (keys `<prefix>rate:<agent>`, `<prefix>refused:<agent>`).
    pub fn new(redis: RedisLink) -> Self {
        Self {
            redis,
            admit: redis::Script::new(ADMIT),
            refused: redis::Script::new(REFUSED),
        }
    }

    pub async fn admit(
        &self,
        agent: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Duration>, RedisError> {
        let (interval, tolerance) = super::gcra(limit);
        let mut call = self.admit.prepare_invoke();
        call.key(self.redis.key(format_args!("rate:{agent}")))
            .arg(now.timestamp_micros())
            .arg(interval.num_microseconds().unwrap_or(i64::MAX))
            .arg(tolerance.num_microseconds().unwrap_or(i64::MAX));
        let wait: i64 = self.redis.invoke(call).await?;
        Ok(if wait < 0 {
            Ok(())
        } else {
            Err(Duration::from_micros(wait as u64))
        })
    }

    pub async fn refused(&self, agent: &str, now: DateTime<Utc>) -> Result<u32, RedisError> {
        let mut call = self.refused.prepare_invoke();
        call.key(self.redis.key(format_args!("refused:{agent}")))
            .arg(now.timestamp_micros())
            .arg(ulid::Ulid::new().to_string());
        self.redis.invoke(call).await
    }
}
