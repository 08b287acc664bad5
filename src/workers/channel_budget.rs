//! countersign's own posting budget per Slack channel: Slack allows about one message a second
//! per channel with short bursts, and answers more with 429. Spending from a local bucket first
//! keeps the worker under that line instead of bouncing off it; a 429 that happens anyway (other
//! posters in the channel, other replicas) is still honoured through `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Messages a channel may receive at once, and per second after that: a little under Slack's.
pub const BURST: f64 = 3.0;
pub const PER_SECOND: f64 = 1.0;

/// Tokens left in a channel's bucket, and when they were counted.
type Bucket = (f64, DateTime<Utc>);

#[derive(Clone, Default)]
pub struct ChannelBudget {
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl ChannelBudget {
    /// Takes one message's worth for `channel`, or says how long until there is one.
    pub fn take(&self, channel: &str, now: DateTime<Utc>) -> Result<(), Duration> {
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

    #[test]
    fn a_burst_then_one_a_second_per_channel() {
        let budget = ChannelBudget::default();
        let now = Utc::now();
        for _ in 0..3 {
            assert_eq!(budget.take("C1", now), Ok(()));
        }
        assert_eq!(budget.take("C1", now), Err(Duration::from_secs(1)));
        assert_eq!(budget.take("C2", now), Ok(()));
        let later = now + chrono::Duration::milliseconds(500);
        assert_eq!(budget.take("C1", later), Err(Duration::from_millis(500)));
        assert_eq!(
            budget.take("C1", now + chrono::Duration::seconds(1)),
            Ok(())
        );
    }
}
