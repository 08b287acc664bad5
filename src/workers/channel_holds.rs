//! Keeping a channel quiet in this worker when Slack makes one post there wait. Card posts are
//! ordered by the store (a worker claims only each channel's oldest undone card, on every
//! replica); the other rows that post into a channel (an escalation, an announcement) are
//! claimed by due time, and when a post to the channel was put off earlier in the pass they
//! must be put off to the same instant rather than ask Slack again and meet another 429.
//!
//! Per process: across replicas the shared pause in the Slack budget keeps the channel quiet.

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
