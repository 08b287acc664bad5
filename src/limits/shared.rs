//! Rate-limit state in Redis: the same algorithm as [`super::LocalLimiter`], run atomically by
//! Lua scripts, with the app's clock passed in (so every replica and the tests agree on time).
//! Every call is bounded: a slow or dead Redis is an error here, not a stalled request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::manifest::RateLimit;

/// How long a Redis call may take before the local counters are used instead.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

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

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("redis: not connected (next attempt within {RECONNECT_EVERY:?})")]
    NotConnected,
}

/// How often a Redis that could not be reached is tried again (calls in between use the local
/// counters at once instead of waiting on it).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

pub struct SharedLimiter {
    client: redis::Client,
    /// Connected once Redis answered; reconnects by itself after that.
    connection: tokio::sync::Mutex<(Option<ConnectionManager>, Option<std::time::Instant>)>,
    prefix: String,
    admit: redis::Script,
    refused: redis::Script,
}

impl SharedLimiter {
    /// A limiter for the Redis at `url` (not contacted yet: a Redis that is down at start only
    /// degrades the limits, it does not stop countersign). Keys start with `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, SharedError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::Mutex::new((None, None)),
            prefix: prefix.to_owned(),
            admit: redis::Script::new(ADMIT),
            refused: redis::Script::new(REFUSED),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn connection(&self) -> Result<ConnectionManager, SharedError> {
        let mut guard = self.connection.lock().await;
        let (connection, tried) = &mut *guard;
        if let Some(connection) = connection {
            return Ok(connection.clone());
        }
        if tried.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return Err(SharedError::NotConnected);
        }
        *tried = Some(std::time::Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| SharedError::Timeout)??;
        *connection = Some(connected.clone());
        Ok(connected)
    }

    pub async fn admit(
        &self,
        agent: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Duration>, SharedError> {
        let (interval, tolerance) = super::gcra(limit);
        let mut connection = self.connection().await?;
        let mut call = self.admit.prepare_invoke();
        call.key(format!("{}rate:{agent}", self.prefix))
            .arg(now.timestamp_micros())
            .arg(interval.num_microseconds().unwrap_or(i64::MAX))
            .arg(tolerance.num_microseconds().unwrap_or(i64::MAX));
        let wait: i64 = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async(&mut connection))
            .await
            .map_err(|_| SharedError::Timeout)??;
        Ok(if wait < 0 {
            Ok(())
        } else {
            Err(Duration::from_micros(wait as u64))
        })
    }

    pub async fn refused(&self, agent: &str, now: DateTime<Utc>) -> Result<u32, SharedError> {
        let mut connection = self.connection().await?;
        let mut call = self.refused.prepare_invoke();
        call.key(format!("{}refused:{agent}", self.prefix))
            .arg(now.timestamp_micros())
            .arg(ulid::Ulid::new().to_string());
        let count: u32 = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async(&mut connection))
            .await
            .map_err(|_| SharedError::Timeout)??;
        Ok(count)
    }
}
