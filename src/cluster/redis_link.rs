//! One process's link to Redis: connected lazily, every call bounded, and one answer to "is
//! Redis reachable?" for everything that shares state through it (rate limits, the Slack
//! channel budget, dedup keys, the user-group cache, wake-ups).
//!
//! Nothing countersign must not lose lives in Redis, so an unreachable Redis is a degradation,
//! not an outage: callers fall back to their in-process state, the link logs the change once,
//! exports `countersign_redis_degraded{prefix="…"} 1`, reports it on `/readyz`, and goes back to
//! Redis as soon as a call succeeds again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a Redis call may take before the caller's local fallback is used instead.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How often a Redis that could not be reached is tried again (calls in between fall back at
/// once instead of waiting on it).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("redis: not connected (next attempt within {RECONNECT_EVERY:?})")]
    NotConnected,
}

/// Cheap to clone; clones share the connection and the degraded flag.
#[derive(Clone)]
pub struct RedisLink(Arc<Inner>);

struct Inner {
    client: redis::Client,
    /// Connected once Redis answered (it reconnects by itself after that), and when a
    /// connection was last attempted.
    connection: tokio::sync::Mutex<(Option<ConnectionManager>, Option<Instant>)>,
    prefix: String,
    degraded: AtomicBool,
    /// Whether a wake-up subscription was started, and whether it is live (it has its own
    /// connection): a link with a dead subscription stays degraded even while calls succeed.
    subscribing: AtomicBool,
    subscribed: AtomicBool,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisLink")
            .field("prefix", &self.0.prefix)
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

impl RedisLink {
    /// A link to the Redis at `url`, not contacted yet: a Redis that is down at start only
    /// degrades countersign, it does not stop it. Every key starts with `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisError> {
        Self::with_client(redis::Client::open(url)?, prefix)
    }

    /// As [`RedisLink::new`] for a `rediss://` URL whose certificate is checked against the
    /// certificate authorities in `ca_pem` only (a private CA), not the system's.
    pub fn with_ca(url: &str, prefix: &str, ca_pem: &[u8]) -> Result<Self, RedisError> {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        Self::with_client(redis::Client::build_with_tls(url, certificates)?, prefix)
    }

    fn with_client(client: redis::Client, prefix: &str) -> Result<Self, RedisError> {
        metrics::gauge!("countersign_redis_degraded", "prefix" => prefix.to_owned()).set(0.0);
        Ok(Self(Arc::new(Inner {
            client,
            connection: tokio::sync::Mutex::new((None, None)),
            prefix: prefix.to_owned(),
            degraded: AtomicBool::new(false),
            subscribing: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
        })))
    }

    pub fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// `prefix` + `name`: every key and channel countersign uses in Redis.
    pub fn key(&self, name: impl std::fmt::Display) -> String {
        format!("{}{name}", self.0.prefix)
    }

    pub fn client(&self) -> &redis::Client {
        &self.0.client
    }

    /// True while Redis is unreachable (calls are answered by local fallbacks) or the wake-up
    /// subscription is down.
    pub fn is_degraded(&self) -> bool {
        self.0.degraded.load(Ordering::Relaxed)
    }

    /// Whether a wake-up subscription was started and is not (yet, or any more) live: other
    /// replicas' wake-ups may be missed.
    pub fn is_unsubscribed(&self) -> bool {
        self.0.subscribing.load(Ordering::Relaxed) && !self.0.subscribed.load(Ordering::Relaxed)
    }

    /// Marks that wake-ups will be subscribed to (until the subscription is live, they may be
    /// missed).
    pub(super) fn expect_subscription(&self) {
        self.0.subscribing.store(true, Ordering::Relaxed);
    }

    /// Runs one call on the shared connection, bounded by [`CALL_TIMEOUT`], and records whether
    /// Redis answered. An `Err` means: use the local fallback.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let answer = match self.connection().await {
            Ok(connection) => tokio::time::timeout(CALL_TIMEOUT, call(connection))
                .await
                .map_err(|_| RedisError::Timeout)
                .and_then(|answer| answer.map_err(RedisError::from)),
            Err(error) => Err(error),
        };
        match &answer {
            Ok(_) => self.reached(),
            Err(error) => self.unreachable(error),
        }
        answer
    }

    /// One command (`redis::Cmd::get(…)`, …) through [`RedisLink::call`].
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, RedisError> {
        self.call(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// A Lua script, prepared with its keys and arguments, through [`RedisLink::call`] (sent by
    /// hash, and loaded first if Redis does not know it yet).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.call(|mut connection| async move { script.invoke_async(&mut connection).await })
            .await
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut guard = self.0.connection.lock().await;
        let (connection, tried) = &mut *guard;
        if let Some(connection) = connection {
            return Ok(connection.clone());
        }
        if tried.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return Err(RedisError::NotConnected);
        }
        *tried = Some(Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.0.client.clone(), config),
        )
        .await
        .map_err(|_| RedisError::Timeout)??;
        *connection = Some(connected.clone());
        Ok(connected)
    }

    /// The wake-up subscription's state (see [`super::Wakeups`]): while it is down, other
    /// replicas' decisions are only seen by polling, so the link counts as degraded.
    pub(super) fn set_subscribed(&self, live: bool) {
        self.0.subscribed.store(live, Ordering::Relaxed);
        if live {
            self.reached();
        } else {
            self.unreachable(&RedisError::NotConnected);
        }
    }

    fn reached(&self) {
        if self.is_unsubscribed() {
            return;
        }
        if self.0.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "Redis is back: rate limits, the Slack budget, dedup keys and wake-ups are shared again"
            );
            self.gauge(0.0);
        }
    }

    fn unreachable(&self, error: &RedisError) {
        if !self.0.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis unreachable: rate limits, the Slack budget, dedup keys and caches fall back to this process's own until it is back; other replicas' decisions are seen by polling");
            self.gauge(1.0);
        }
    }

    fn gauge(&self, value: f64) {
        metrics::gauge!("countersign_redis_degraded", "prefix" => self.0.prefix.clone()).set(value);
    }
}
