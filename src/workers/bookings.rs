//! Booking the Slack budget's coming tokens for the jobs it turned away.
//!
//! When a bucket of the budget (a channel's posts, a method such as `chat.update`) is empty, the
//! budget says when its next token is due. Were every job turned away put off to that instant,
//! they would all come back together, one would get the token and the rest would be claimed,
//! read, rendered and put off again: the whole backlog churned for every token. Instead each is
//! booked its own slot, one token's refill time after the previous one, so a job comes back
//! when a token is there for it, and a bucket's backlog costs a claim per token, not per job
//! per token. A job arriving while its bucket is booked goes straight to the next free slot
//! without asking Slack (nor the budget), behind the ones already waiting, in order.
//!
//! Per process: replicas share the budget (through Redis), not the bookings; a replica whose
//! booked job meets another's spending is turned away again and books again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub use crate::slack::BudgetBucket as Bucket;

/// A bucket's bookings: the first free slot, and the slot each job waiting on it holds.
#[derive(Default)]
struct Slots {
    next: Option<DateTime<Utc>>,
    held: HashMap<i64, DateTime<Utc>>,
}

/// Forgotten this long after its slot: the job was done by another replica, or given up.
const FORGET_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// Bucket key → its bookings.
#[derive(Clone, Default)]
pub struct Bookings(Arc<Mutex<HashMap<String, Slots>>>);

impl Bookings {
    /// Whether `job` must wait for `key`: answers the slot it must come back at when others
    /// are booked ahead of it (its own slot if it holds one not yet come, else the next free
    /// one), `None` when it may ask the budget now (nothing booked ahead, or its slot has
    /// come). Changes nothing: a job keeps its slot until it is booked again or forgotten.
    pub fn wait_for(&self, key: &str, job: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let buckets = self.buckets();
        let slots = buckets.get(key)?;
        match slots.held.get(&job) {
            Some(slot) => (*slot > now).then_some(*slot),
            None => slots.next.filter(|next| *next > now),
        }
    }

    /// `job`, turned away by `bucket` whose next token the budget expects at `due`: books it
    /// the first free slot at or after `due`, and answers when the job is due again. A job
    /// that already held a slot (it came, and the budget turned it away all the same: another
    /// replica spent the token) keeps its place at the front, due with the next token.
    pub fn book(
        &self,
        bucket: &Bucket,
        job: i64,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let refill = chrono::Duration::from_std(bucket.refill).unwrap_or(chrono::Duration::MAX);
        let mut buckets = self.buckets();
        buckets.retain(|_, slots| {
            slots.held.retain(|_, slot| *slot + FORGET_AFTER > now);
            !slots.held.is_empty() || slots.next.is_some_and(|next| next > now)
        });
        let slots = buckets.entry(bucket.key.clone()).or_default();
        if let Some(held) = slots.held.get_mut(&job) {
            *held = (*held).max(due);
            return *held;
        }
        let slot = slots.next.map_or(due, |next| due.max(next));
        slots.next = Some(slot + refill);
        slots.held.insert(job, slot);
        slot
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slots>> {
        // A panic while holding it leaves the map usable (slots are only ever a hint).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bucket(key: &str) -> Bucket {
        Bucket {
            key: key.into(),
            refill: Duration::from_millis(1200),
        }
    }

    #[test]
    fn jobs_turned_away_together_are_booked_a_token_apart() {
        let bookings = Bookings::default();
        let now = Utc::now();
        let token = now + chrono::Duration::seconds(2);
        let update = bucket("method:chat.update");
        let slots: Vec<_> = (1..=3)
            .map(|job| bookings.book(&update, job, token, now))
            .collect();
        let apart = chrono::Duration::milliseconds(1200);
        assert_eq!(slots, [token, token + apart, token + apart * 2]);
        // A newcomer waits behind them all, without asking.
        assert_eq!(
            bookings.wait_for(&update.key, 9, now),
            Some(token + apart * 3)
        );
        // A booked job waits for its own slot, then may ask; the next is still held back.
        assert_eq!(bookings.wait_for(&update.key, 2, now), Some(token + apart));
        assert_eq!(bookings.wait_for(&update.key, 1, token), None);
        assert_eq!(
            bookings.wait_for(&update.key, 2, token),
            Some(token + apart)
        );
        assert_eq!(bookings.wait_for(&update.key, 2, token + apart), None);
        // Turned away all the same at its slot (another replica took the token): it keeps the
        // front, due with the next token, not behind everyone booked since.
        let next_token = token + chrono::Duration::milliseconds(1100);
        assert_eq!(bookings.book(&update, 1, next_token, token), next_token);
        // Another bucket is not held up by this one.
        assert_eq!(bookings.wait_for("channel:C1", 9, now), None);
        assert_eq!(bookings.book(&bucket("channel:C1"), 9, token, now), token);
    }

    #[test]
    fn a_longer_wait_is_kept_and_a_past_booking_forgotten() {
        let bookings = Bookings::default();
        let now = Utc::now();
        let update = bucket("method:chat.update");
        let first = bookings.book(&update, 1, now + chrono::Duration::seconds(1), now);
        // A 429's Retry-After beyond the booked slots: the job waits for it.
        let paused = now + chrono::Duration::seconds(30);
        assert_eq!(bookings.book(&update, 2, paused, now), paused);
        assert!(first < paused);
        // Long after the slots, the bucket is free again and the bookings gone.
        let later = now + chrono::Duration::minutes(5);
        assert_eq!(bookings.wait_for(&update.key, 3, later), None);
        assert_eq!(bookings.book(&update, 3, later, later), later);
        assert_eq!(bookings.buckets()[&update.key].held.len(), 1);
    }
}
