//! Rate-limit state in this process: the fallback when no Redis is configured or it cannot be
//! reached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::manifest::RateLimit;

#[derive(Default)]
pub struct LocalLimiter {
    /// Per agent: the theoretical arrival time of its next request.
    next: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Per agent: when requests were refused in the last minute (the circuit breaker's flood).
    refused: Mutex<HashMap<String, std::collections::VecDeque<DateTime<Utc>>>>,
}

impl LocalLimiter {
    /// Lets a request from `agent` through, or says how long until one would be.
    pub fn admit(&self, agent: &str, limit: RateLimit, now: DateTime<Utc>) -> Result<(), Duration> {
        let (interval, tolerance) = super::gcra(limit);
        let mut next = self.next.lock().expect("rate limiter lock");
        let tat = next.get(agent).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            let wait = tat - now - tolerance;
            return Err(wait.to_std().unwrap_or(Duration::from_secs(1)));
        }
        next.insert(agent.to_owned(), tat + interval);
        Ok(())
    }

    /// Counts a refusal of `agent`; answers how many it had within the last minute.
    pub fn refused(&self, agent: &str, now: DateTime<Utc>) -> u32 {
        let mut refused = self.refused.lock().expect("rate limiter lock");
        let times = refused.entry(agent.to_owned()).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now - *t >= chrono::Duration::minutes(1))
        {
            times.pop_front();
        }
        times.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        "2026-11-21T09:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = LocalLimiter::default();
        let limit = RateLimit {
            per_minute: 60,
            burst: 3,
        };
        for _ in 0..3 {
            assert_eq!(limiter.admit("a", limit, t(0)), Ok(()));
        }
        assert_eq!(limiter.admit("a", limit, t(0)), Err(Duration::from_secs(1)));
        assert_eq!(
            limiter.admit("a", limit, t(400)),
            Err(Duration::from_millis(600))
        );
        assert_eq!(limiter.admit("a", limit, t(1000)), Ok(()));
        // Another agent has its own bucket.
        assert_eq!(limiter.admit("b", limit, t(1000)), Ok(()));
        // A quiet spell refills the burst, never beyond it.
        for _ in 0..3 {
            assert_eq!(limiter.admit("a", limit, t(60_000)), Ok(()));
        }
        assert!(limiter.admit("a", limit, t(60_000)).is_err());
    }
}
