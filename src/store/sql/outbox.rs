//! The Slack outbox (jobs claimed under a lease by the Slack worker) and the cards it posted.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Timestamp;
use crate::domain::{PostedCard, ProposalId, SlackJob};
use crate::store::rows::{posted_cards, slack_jobs};
use crate::store::{SlackOutbox, StoreError};

backends! {
    #[async_trait]
    impl SlackOutbox for Backend {
        async fn claim_slack_jobs(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<SlackJob>, StoreError> {
            // Each dialect's claim keeps the channels' cards in order its own way (see there).
            let rows = sqlx::query(dialect::CLAIM_SLACK_JOBS)
                .bind(Timestamp(lease_until))
                .bind(Timestamp(now))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            slack_jobs(&rows)
        }

        async fn renew_slack_leases(
            &self,
            ids: &[i64],
            lease_until: DateTime<Utc>,
        ) -> Result<u64, StoreError> {
            let renewed = sqlx::query(dialect::RENEW_SLACK_LEASES)
                .bind(Timestamp(lease_until))
                .bind(dialect::id_list(ids))
                .execute(&self.pool)
                .await?;
            Ok(renewed.rows_affected())
        }

        async fn finish_slack_job(
            &self,
            job: &SlackJob,
            posted: Option<&PostedCard>,
            at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            let mut tx = self.pool.begin_with(dialect::BEGIN_WRITE).await?;
            if let Some(card) = posted {
                sqlx::query(
                    "INSERT INTO slack_messages (proposal_id, role, channel, ts, posted_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id, role) DO NOTHING",
                )
                .bind(job.proposal_id.as_ref().map_or("", |id| id.as_str()))
                .bind(&card.role)
                .bind(&card.channel)
                .bind(&card.ts)
                .bind(Timestamp(at))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE slack_outbox SET done_at = $1, leased_until = NULL WHERE id = $2")
                .bind(Timestamp(at))
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn retry_slack_job(
            &self,
            job: &SlackJob,
            due_at: DateTime<Utc>,
            error: &str,
            counted: bool,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE slack_outbox SET due_at = $1, attempts = attempts + $2, leased_until = NULL, \
                 last_error = $3 WHERE id = $4",
            )
            .bind(Timestamp(due_at))
            .bind(i32::from(counted))
            .bind(error)
            .bind(job.id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn fail_slack_job(
            &self,
            job: &SlackJob,
            at: DateTime<Utc>,
            error: &str,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE slack_outbox SET done_at = $1, attempts = attempts + 1, leased_until = NULL, \
                 last_error = $2 WHERE id = $3",
            )
            .bind(Timestamp(at))
            .bind(format!("gave up: {error}"))
            .bind(job.id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn posted_cards(
            &self,
            id: &ProposalId,
        ) -> Result<Vec<PostedCard>, StoreError> {
            let rows = sqlx::query(
                "SELECT role, channel, ts FROM slack_messages WHERE proposal_id = $1 ORDER BY role",
            )
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
            posted_cards(&rows)
        }

        async fn card_posts_outstanding(&self, id: &ProposalId) -> Result<bool, StoreError> {
            let outstanding: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM slack_outbox WHERE proposal_id = $1 AND done_at IS NULL \
                 AND task LIKE '%\"kind\":\"post_card\"%'",
            )
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?;
            Ok(outstanding > 0)
        }

        async fn card_posts_in_flight(
            &self,
            id: &ProposalId,
            now: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            let in_flight: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM slack_outbox WHERE proposal_id = $1 AND done_at IS NULL \
                 AND leased_until > $2 AND task LIKE '%\"kind\":\"post_card\"%'",
            )
            .bind(id.as_str())
            .bind(Timestamp(now))
            .fetch_one(&self.pool)
            .await?;
            Ok(in_flight > 0)
        }

        async fn coalesce_slack_jobs(
            &self,
            job: &SlackJob,
            now: DateTime<Utc>,
        ) -> Result<u64, StoreError> {
            let done = sqlx::query(
                "UPDATE slack_outbox SET done_at = $1, last_error = $2 \
                 WHERE proposal_id = $3 AND task = $4 AND id <> $5 AND done_at IS NULL \
                 AND due_at <= $1 AND (leased_until IS NULL OR leased_until <= $1)",
            )
            .bind(Timestamp(now))
            .bind(format!("coalesced into job {}", job.id))
            .bind(job.proposal_id.as_ref().map_or("", |id| id.as_str()))
            .bind(serde_json::to_string(&job.task)?)
            .bind(job.id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        }
    }
}
