//! How far behind the background queues are (for `/metrics`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::PostgresStore;
use crate::store::{QueueBacklog, StoreError};

impl PostgresStore {
    pub(super) async fn backlog(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueBacklog>, StoreError> {
        let rows = sqlx::query(
            "SELECT 'slack' AS queue, COUNT(*) AS due, MIN(due_at) AS oldest FROM slack_outbox \
             WHERE done_at IS NULL AND due_at <= $1 \
             UNION ALL SELECT 'timers', COUNT(*), MIN(due_at) FROM timers \
             WHERE fired_at IS NULL AND due_at <= $1 \
             UNION ALL SELECT 'callbacks', COUNT(*), MIN(next_attempt_at) FROM webhook_events \
             WHERE status = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueBacklog {
                    queue: row.try_get("queue")?,
                    due: row.try_get("due")?,
                    oldest_due: row.try_get("oldest")?,
                })
            })
            .collect()
    }
}
