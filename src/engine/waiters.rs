//! Long-poll waiters: `GET /v1/proposals/{id}?wait=…` parks on its proposal's entry here and the
//! engine wakes it when that proposal is decided — no polling. One entry per waited-on proposal
//! (shared by all its waiters), removed when the last waiter leaves, so idle waiters cost a
//! parked task each and a decision wakes only its own waiters.
//!
//! Decisions made by another replica reach this one as wake-ups ([`crate::cluster::Wakeups`],
//! over Redis); a woken waiter re-reads its proposal, so a spurious wake costs one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::ProposalId;

#[derive(Default)]
pub struct DecisionWaiters {
    waiting: Mutex<HashMap<ProposalId, Arc<Notify>>>,
}

/// A place in the queue for one proposal's decision; leaving it (drop) cleans up.
pub struct Waiter<'a> {
    waiters: &'a DecisionWaiters,
    id: ProposalId,
    notify: Arc<Notify>,
}

impl DecisionWaiters {
    /// Joins the waiters for `id`. Subscribe before reading the proposal's state, then await
    /// [`Waiter::decided`]: a decision between the read and the wait is not missed.
    pub fn join(&self, id: &ProposalId) -> Waiter<'_> {
        let notify = self
            .waiting
            .lock()
            .expect("waiters lock")
            .entry(id.clone())
            .or_default()
            .clone();
        Waiter {
            waiters: self,
            id: id.clone(),
            notify,
        }
    }

    /// Wakes everyone waiting for `id`.
    pub fn decided(&self, id: &ProposalId) {
        let notify = self.waiting.lock().expect("waiters lock").remove(id);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (they re-read their proposal and wait on if it is still pending):
    /// after a gap in which other replicas' decisions may have gone unannounced.
    pub fn wake_all(&self) {
        let all: Vec<_> = self
            .waiting
            .lock()
            .expect("waiters lock")
            .drain()
            .map(|(_, notify)| notify)
            .collect();
        for notify in all {
            notify.notify_waiters();
        }
    }

    /// Proposals someone is waiting on (metrics, tests).
    pub fn len(&self) -> usize {
        self.waiting.lock().expect("waiters lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Waiter<'_> {
    /// A future that completes when the proposal is decided. Create it (it registers at once)
    /// before reading the state it waits to change.
    pub fn decided(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiters.waiting.lock().expect("waiters lock");
        // The map's handle and ours: we are the last waiter; forget the entry.
        if Arc::strong_count(&self.notify) == 2
            && waiting
                .get(&self.id)
                .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProposalId {
        ProposalId::generate()
    }

    #[tokio::test]
    async fn a_decision_wakes_its_waiters_only() {
        let waiters = DecisionWaiters::default();
        let (a, b) = (id(), id());
        let on_a = waiters.join(&a);
        let on_b = waiters.join(&b);
        let woken = on_a.decided();
        let not_woken = on_b.decided();
        waiters.decided(&a);
        woken.await;
        let still = tokio::time::timeout(std::time::Duration::from_millis(20), not_woken).await;
        assert!(still.is_err(), "b was not decided");
    }

    #[tokio::test]
    async fn a_decision_between_subscribing_and_waiting_is_not_missed() {
        let waiters = DecisionWaiters::default();
        let p = id();
        let waiter = waiters.join(&p);
        let decided = waiter.decided();
        waiters.decided(&p); // before anyone awaits
        decided.await;
    }

    #[test]
    fn the_last_waiter_leaving_forgets_the_entry() {
        let waiters = DecisionWaiters::default();
        let p = id();
        let first = waiters.join(&p);
        let second = waiters.join(&p);
        assert_eq!(waiters.len(), 1);
        drop(first);
        assert_eq!(waiters.len(), 1);
        drop(second);
        assert!(waiters.is_empty());
    }
}
