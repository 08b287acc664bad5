//! Agent callbacks: events claimed under a lease by the callback worker, their attempts, and
//! endpoints disabled by a 410.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::lease::WEBHOOKS;
use super::{Timestamp, optional_timestamp, timestamp};
use crate::domain::{ProposalId, WebhookDelivery};
use crate::store::rows::webhook_delivery;
use crate::store::{StoreError, WebhookAttempt, WebhookNext, WebhookQueue, WebhookRecord};

backends! {
    #[async_trait]
    impl WebhookQueue for Backend {
        async fn claim_webhooks(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<WebhookDelivery>, StoreError> {
            static CLAIM: LazyLock<String> = LazyLock::new(|| WEBHOOKS.claim(dialect::ROW_LOCK));
            let rows = sqlx::query(CLAIM.as_str())
                .bind(Timestamp(lease_until))
                .bind(Timestamp(now))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            let mut due = rows
                .iter()
                .map(|row| Ok((timestamp(row, "next_attempt_at")?, webhook_delivery(row)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            due.sort_by_key(|(at, _)| *at);
            Ok(due.into_iter().map(|(_, d)| d).collect())
        }

        async fn endpoint_disabled(&self, url: &str) -> Result<bool, StoreError> {
            let row = sqlx::query("SELECT 1 FROM webhook_disabled_endpoints WHERE url = $1")
                .bind(url)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.is_some())
        }

        async fn webhook_events(
            &self,
            id: &ProposalId,
        ) -> Result<Vec<WebhookRecord>, StoreError> {
            // One snapshot for the events and their attempts, so an attempt recorded meanwhile is
            // seen with its event's new state or not at all.
            let mut tx = self.pool.begin_with(dialect::BEGIN_SNAPSHOT).await?;
            let events = sqlx::query(
                "SELECT id, url, status, created_at, next_attempt_at, finished_at, last_error \
                 FROM webhook_events WHERE proposal_id = $1 ORDER BY created_at, id",
            )
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
            let mut records = Vec::with_capacity(events.len());
            for event in &events {
                let event_id: String = event.try_get("id")?;
                let attempts = sqlx::query(
                    "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
                     WHERE event_id = $1 ORDER BY attempt",
                )
                .bind(&event_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    Ok(WebhookAttempt {
                        attempt: row.try_get("attempt")?,
                        at: timestamp(row, "at")?,
                        status_code: row.try_get("status_code")?,
                        error: row.try_get("error")?,
                        duration_ms: row.try_get("duration_ms")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
                let status: String = event.try_get("status")?;
                records.push(WebhookRecord {
                    id: event_id,
                    url: event.try_get("url")?,
                    next_attempt_at: (status == "pending")
                        .then(|| timestamp(event, "next_attempt_at"))
                        .transpose()?,
                    status,
                    created_at: timestamp(event, "created_at")?,
                    finished_at: optional_timestamp(event, "finished_at")?,
                    last_error: event.try_get("last_error")?,
                    attempts,
                });
            }
            tx.commit().await?;
            Ok(records)
        }
    }

    /// Records one delivery attempt and what follows from it (delivered, a retry time, or
    /// failed — disabling the endpoint on a 410), inside a command batch's transaction so the
    /// attempt and its audit event are committed together; releases the worker's lease.
    pub(in crate::store) async fn record_attempt(
        conn: &mut Conn,
        delivery: &WebhookDelivery,
        attempt: &WebhookAttempt,
        next: &WebhookNext,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(attempt.attempt)
        .bind(Timestamp(attempt.at))
        .bind(attempt.status_code)
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *conn)
        .await?;
        let (status, next_at, error) = match next {
            WebhookNext::Delivered => ("delivered", attempt.at, None),
            WebhookNext::Retry { at } => ("pending", *at, attempt.error.clone()),
            WebhookNext::Failed { error, .. } => ("failed", attempt.at, Some(error.clone())),
        };
        let finished = (status != "pending").then_some(Timestamp(attempt.at));
        sqlx::query(
            "UPDATE webhook_events SET status = $1, attempts = $2, next_attempt_at = $3, \
             leased_until = NULL, finished_at = $4, last_error = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(attempt.attempt)
        .bind(Timestamp(next_at))
        .bind(finished)
        .bind(error)
        .bind(&delivery.id)
        .execute(&mut *conn)
        .await?;
        if let WebhookNext::Failed { disable: true, .. } = next {
            sqlx::query(
                "INSERT INTO webhook_disabled_endpoints (url, disabled_at, event_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (url) DO NOTHING",
            )
            .bind(&delivery.url)
            .bind(Timestamp(attempt.at))
            .bind(&delivery.id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Starts a delivered or failed event over (same webhook id, a fresh schedule) and lifts a 410
    /// block on its endpoint, inside a command batch's transaction, unless a worker's lease on it is
    /// live; answers the event's proposal, or why not.
    pub(in crate::store) async fn redeliver_webhook(
        conn: &mut Conn,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<String, crate::store::Redelivery>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             leased_until = NULL, finished_at = NULL \
             WHERE id = $2 AND (leased_until IS NULL OR leased_until <= $1) \
             RETURNING url, proposal_id",
        )
        .bind(Timestamp(now))
        .bind(event)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((url, proposal)) = row else {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM webhook_events WHERE id = $1")
                    .bind(event)
                    .fetch_optional(&mut *conn)
                    .await?;
            return Ok(Err(match exists {
                Some(_) => crate::store::Redelivery::InFlight,
                None => crate::store::Redelivery::NoSuchEvent,
            }));
        };
        sqlx::query("DELETE FROM webhook_attempts WHERE event_id = $1")
            .bind(event)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM webhook_disabled_endpoints WHERE url = $1")
            .bind(&url)
            .execute(&mut *conn)
            .await?;
        Ok(Ok(proposal))
    }
}
