//! The Slack budget's buckets in Redis, shared by every replica: the maths of
//! [`super::bucket::Bucket`], run atomically by Lua on the app's clock (passed in, so replicas
//! and tests agree on time). Each bucket is a hash `{u: units, at: ms}`; a pause is simply a
//! bucket dated in the future, so a 429 seen by one replica holds back all of them.

use std::time::Duration;

use super::bucket::{Rate, TOKEN};
use crate::cluster::{RedisError, RedisLink};

/// The refill, up to `now`, both scripts start with.
const REFILL: &str = r"
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local refill = tonumber(ARGV[3])
local token = tonumber(ARGV[4])
local bucket = redis.call('HMGET', KEYS[1], 'u', 'at')
local units = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
if now > at then
  units = math.min(capacity, units + (now - at) * refill)
  at = now
end
";

/// Stores the bucket, forgotten once it would be full again (then absent means full).
const STORE: &str = r"
redis.call('HSET', KEYS[1], 'u', units, 'at', at)
redis.call('PEXPIRE', KEYS[1], (at - now) + math.ceil((capacity - units) / refill) + 1000)
";

/// ARGV[5]: the longest wait (ms) the caller accepts. Answers {granted (1/0), wait in ms}.
const TAKE: &str = r"
local wait = at - now
if units < token then
  wait = wait + math.ceil((token - units) / refill)
end
local granted = 0
if wait <= tonumber(ARGV[5]) then
  units = units - token
  granted = 1
end
";

/// ARGV[5]: the end of the pause (ms).
const PAUSE: &str = r"
local until_ms = tonumber(ARGV[5])
if until_ms >= at then
  at = until_ms
  units = token
else
  units = math.min(units, token)
end
";

pub struct SharedBuckets {
    redis: RedisLink,
    take: redis::Script,
    pause: redis::Script,
}

impl SharedBuckets {
    pub fn new(redis: RedisLink) -> Self {
        Self {
            redis,
            take: redis::Script::new(&format!("{REFILL}{TAKE}{STORE}return {{granted, wait}}")),
            pause: redis::Script::new(&format!("{REFILL}{PAUSE}{STORE}return 1")),
        }
    }

    /// As [`super::bucket::Bucket::take`], on the bucket `key` in Redis.
    pub async fn take(
        &self,
        key: &str,
        rate: Rate,
        now: i64,
        max_wait: Duration,
    ) -> Result<Result<i64, i64>, RedisError> {
        let mut call = self.take.prepare_invoke();
        self.args(&mut call, key, rate, now)
            .arg(i64::try_from(max_wait.as_millis()).unwrap_or(i64::MAX));
        let (granted, wait): (i64, i64) = self.redis.invoke(call).await?;
        Ok(if granted == 1 { Ok(wait) } else { Err(wait) })
    }

    /// As [`super::bucket::Bucket::pause`], on the bucket `key` in Redis.
    pub async fn pause(
        &self,
        key: &str,
        rate: Rate,
        now: i64,
        until: i64,
    ) -> Result<(), RedisError> {
        let mut call = self.pause.prepare_invoke();
        self.args(&mut call, key, rate, now).arg(until);
        self.redis.invoke::<i64>(call).await.map(drop)
    }

    fn args<'a, 'b>(
        &self,
        call: &'b mut redis::ScriptInvocation<'a>,
        key: &str,
        rate: Rate,
        now: i64,
    ) -> &'b mut redis::ScriptInvocation<'a> {
        call.key(self.redis.key(format_args!("slack-budget:{key}")))
            .arg(now)
            .arg(rate.capacity())
            .arg(rate.refill())
            .arg(TOKEN)
    }
}
