//! SLA timers, claimed under a lease by the SLA worker (firing them is a command: see `tx`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use async_trait::async_trait;

use super::PostgresStore;
use crate::domain::DueTimer;
use crate::store::StoreError;
use crate::store::TimerQueue;
use crate::store::rows::{due_timer, fired_nudge};

#[async_trait]
impl TimerQueue for PostgresStore {
    async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let rows = sqlx::query(
            "UPDATE timers SET leased_until = $1 WHERE id IN (\
               SELECT id FROM timers WHERE fired_at IS NULL AND due_at <= $2 \
               AND (leased_until IS NULL OR leased_until <= $2) ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, proposal_id, timer, due_at",
        )
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut timers = rows
            .iter()
            .map(|row| {
                due_timer(
                    row.try_get("id")?,
                    row.try_get("proposal_id")?,
                    row.try_get("timer")?,
                    row.try_get("due_at")?,
                )
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        timers.sort_by_key(|t| (t.due_at, t.id));
        Ok(timers)
    }

    async fn fired_nudges(
        &self,
        id: &crate::domain::ProposalId,
    ) -> Result<Vec<(crate::domain::Timer, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, timer, fired_at FROM timers WHERE proposal_id = $1 AND outcome = 'fired' \
             ORDER BY fired_at, id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut nudges = Vec::new();
        for row in &rows {
            let nudge = fired_nudge(row.try_get("id")?, &row.try_get::<String, _>("timer")?);
            if let Some(timer) = nudge? {
                nudges.push((timer, row.try_get("fired_at")?));
            }
        }
        Ok(nudges)
    }
}
