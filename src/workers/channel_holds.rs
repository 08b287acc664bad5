//! Keeping a channel's messages in order when Slack makes one wait. The outbox claims rows
//! oldest first (`due_at`, then id) and does them one after another; when a post to a channel
//! is put off (its budget spent, or Slack's 429 pausing it), every later job of the pass that
//! posts there must be put off to the same instant, not to a slightly different one its own
//! budget check would give, or the rows, due again in a new order, would go out of order.
//! Held to the same `due_at`, they come back together and in id order.
//!
//! Per process: across replicas the shared pause in the Slack budget keeps the channel quiet,
//! but which replica's row goes first after it is up to the claim (see the README's note on
//! ordering).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Channel → the time before which this worker posts nothing more there.
#[derive(Clone, Default)]
pub struct ChannelHolds(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl ChannelHolds {
    /// Until when `channel` is held, if beyond `now`.
    pub fn until(&self, channel: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.holds()
            .get(channel)
            .copied()
            .filter(|until| *until > now)
    }

    /// A job posting in `channel` was put off until `due`: holds the channel until then, or
    /// until an existing later hold. Answers when the job is due: the hold's end, so that the
    /// jobs held behind one another are due at one instant.
    pub fn hold(&self, channel: &str, due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut holds = self.holds();
        holds.retain(|_, until| *until > now);
        let until = holds.entry(channel.to_owned()).or_insert(due);
        *until = (*until).max(due);
        *until
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.0.lock().expect("channel holds poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_behind_a_held_channel_are_due_with_the_first() {
        let holds = ChannelHolds::default();
        let now = Utc::now();
        let first = now + chrono::Duration::seconds(30);
        assert_eq!(holds.hold("C1", first, now), first);
        assert_eq!(holds.until("C1", now), Some(first));
        assert_eq!(holds.until("C2", now), None);
        // A later job measured a shorter wait: it is due with the first all the same.
        let shorter = now + chrono::Duration::seconds(29);
        assert_eq!(holds.hold("C1", shorter, now), first);
        // A longer one extends the hold.
        let longer = now + chrono::Duration::seconds(40);
        assert_eq!(holds.hold("C1", longer, now), longer);
        // Past its end a hold is forgotten.
        let later = now + chrono::Duration::minutes(1);
        assert_eq!(holds.until("C1", later), None);
        let fresh = later + chrono::Duration::seconds(1);
        assert_eq!(holds.hold("C1", fresh, later), fresh);
    }
}
