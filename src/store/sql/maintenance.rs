//! Upkeep: the schema, health, housekeeping and how far behind the background queues are (for
//! `/metrics`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Timestamp, optional_timestamp};
use crate::store::{Maintenance, QueueBacklog, StoreError};

backends! {
    #[async_trait]
    impl Maintenance for Backend {
        async fn migrate(&self) -> Result<(), StoreError> {
            dialect::MIGRATOR
                .run(&self.pool)
                .await
                .map_err(|e| StoreError::Migration(e.to_string()))
        }

        async fn ping(&self) -> Result<(), StoreError> {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }

        async fn purge_idempotency_keys(
            &self,
            before: DateTime<Utc>,
        ) -> Result<u64, StoreError> {
            let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(Timestamp(before))
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }

        async fn backlog(
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
            .bind(Timestamp(now))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(QueueBacklog {
                        queue: row.try_get("queue")?,
                        due: row.try_get("due")?,
                        oldest_due: optional_timestamp(row, "oldest")?,
                    })
                })
                .collect()
        }

        async fn close(&self) {
            self.pool.close().await;
        }
    }
}
