//! The lease claim the leased queues share (timers, callbacks, report posts): rows that are
//! due and that no live lease holds get a lease until `$1`; `$2` is now, `$3` the most to take.
//! A worker that dies mid-job loses only its lease; the row comes back when the lease ends.
//! The Slack outbox's claim is its own (it keeps each channel's cards in order): see the
//! dialects' `CLAIM_SLACK_JOBS`.

/// One leased queue: what "due" means and in which order rows are taken.
pub(super) struct LeasedQueue {
    pub table: &'static str,
    /// The condition a row must meet besides a lapsed lease.
    pub due: &'static str,
    pub order: &'static str,
    /// The columns a claim answers with.
    pub returning: &'static str,
}

impl LeasedQueue {
    /// The claim statement; `row_lock` is the dialect's `ROW_LOCK`, appended where the rows
    /// are picked (before the `LIMIT` takes effect on PostgreSQL's `SKIP LOCKED`).
    pub fn claim(&self, row_lock: &str) -> String {
        let Self {
            table,
            due,
            order,
            returning,
        } = self;
        format!(
            "UPDATE {table} SET leased_until = $1 WHERE id IN (\
               SELECT id FROM {table} WHERE {due} \
               AND (leased_until IS NULL OR leased_until <= $2) ORDER BY {order} LIMIT $3{row_lock}) \
             RETURNING {returning}"
        )
    }
}

/// SLA timers not fired yet, by due time.
pub(super) const TIMERS: LeasedQueue = LeasedQueue {
    table: "timers",
    due: "fired_at IS NULL AND due_at <= $2",
    order: "due_at, id",
    returning: "id, proposal_id, timer, due_at",
};

/// Callback events pending delivery, by when the next attempt is due.
pub(super) const WEBHOOKS: LeasedQueue = LeasedQueue {
    table: "webhook_events",
    due: "status = 'pending' AND next_attempt_at <= $2",
    order: "next_attempt_at",
    returning: "id, proposal_id, agent_id, url, body, attempts, next_attempt_at",
};

/// Reports not posted yet that have failed fewer than `$4` times, oldest first.
pub(super) const REPORT_POSTS: LeasedQueue = LeasedQueue {
    table: "report_posts",
    due: "posted_at IS NULL AND attempts < $4",
    order: "id",
    returning: "id, dedupe, role, channel, period, as_of, requested_by, attempts",
};
