//! The Slack outbox (jobs claimed under a lease by the Slack worker) and the cards it posted.

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::PostgresStore;
use crate::domain::{PostedCard, ProposalId, SlackJob};
use crate::store::SlackOutbox;
use crate::store::StoreError;
use crate::store::rows::{posted_cards, slack_jobs};

/// Claims the due rows: the unordered ones by due time, and of the card posts only each
/// channel's oldest undone row (migration 0010), so a post put off holds back its channel's
/// later cards on every replica. The channels' heads are found by a skip scan over
/// `slack_outbox_channel_queue` (one index probe per channel), so a long queue in one channel
/// costs nothing per claim. Rows are re-checked under the row lock: a head finished by another
/// replica since this statement's snapshot is skipped, and the next head waits for the next
/// claim. The unordered rows are locked as they are picked (`SKIP LOCKED` before the `LIMIT`),
/// so replicas claiming at once take different ones instead of competing for the same first
/// few. The candidates are looked up by key (`= ANY (ARRAY …)`): joined instead, the
/// planner may walk every due row to meet them.
pub(super) const CLAIM_SLACK_JOBS: &str = "\
    WITH RECURSIVE heads (channel, id) AS ( \
      (SELECT channel, id FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
       ORDER BY channel, id LIMIT 1) \
      UNION ALL \
      SELECT next.channel, next.id FROM heads CROSS JOIN LATERAL ( \
        SELECT channel, id FROM slack_outbox WHERE done_at IS NULL AND channel IS NOT NULL \
        AND channel > heads.channel ORDER BY channel, id LIMIT 1) AS next \
    ), unordered (id) AS ( \
      SELECT id FROM slack_outbox WHERE done_at IS NULL AND channel IS NULL AND due_at <= $2 \
      AND (leased_until IS NULL OR leased_until <= $2) ORDER BY due_at, id LIMIT $3 \
      FOR UPDATE SKIP LOCKED \
    ), candidates (id) AS ( \
      SELECT id FROM unordered UNION ALL SELECT id FROM heads \
    ) \
    UPDATE slack_outbox SET leased_until = $1 WHERE id IN ( \
      SELECT id FROM slack_outbox WHERE id = ANY (ARRAY (SELECT id FROM candidates)) \
      AND done_at IS NULL AND due_at <= $2 AND (leased_until IS NULL OR leased_until <= $2) \
      ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
    RETURNING id, proposal_id, task, attempts";

#[async_trait]
impl SlackOutbox for PostgresStore {
    async fn claim_slack_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlackJob>, StoreError> {
        // SKIP LOCKED: replicas claiming at the same moment take different rows, never wait.
        let rows = sqlx::query(CLAIM_SLACK_JOBS)
            .bind(lease_until)
            .bind(now)
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
        let renewed = sqlx::query(
            "UPDATE slack_outbox SET leased_until = $1 WHERE id = ANY($2) \
             AND done_at IS NULL AND leased_until IS NOT NULL",
        )
        .bind(lease_until)
        .bind(ids)
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
        let mut tx = self.pool.begin().await?;
        if let Some(card) = posted {
            sqlx::query(
                "INSERT INTO slack_messages (proposal_id, role, channel, ts, posted_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id, role) DO NOTHING",
            )
            .bind(job.proposal_id.as_ref().map_or("", |id| id.as_str()))
            .bind(&card.role)
            .bind(&card.channel)
            .bind(&card.ts)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE slack_outbox SET done_at = $1, leased_until = NULL WHERE id = $2")
            .bind(at)
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
        .bind(due_at)
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
        .bind(at)
        .bind(format!("gave up: {error}"))
        .bind(job.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn posted_cards(&self, id: &ProposalId) -> Result<Vec<PostedCard>, StoreError> {
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
        .bind(now)
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
        .bind(now)
        .bind(format!("coalesced into job {}", job.id))
        .bind(job.proposal_id.as_ref().map_or("", |id| id.as_str()))
        .bind(serde_json::to_string(&job.task)?)
        .bind(job.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
