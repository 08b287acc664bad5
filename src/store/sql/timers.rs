//! SLA timers, claimed under a lease by the SLA worker (firing them is a command: see
//! `store/batch/timers.rs`).

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::lease::TIMERS;
use super::{Timestamp, timestamp};
use crate::domain::DueTimer;
use crate::store::rows::{due_timer, fired_nudge};
use crate::store::{StoreError, TimerQueue};

backends! {
    #[async_trait]
    impl TimerQueue for Backend {
        async fn claim_timers(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<DueTimer>, StoreError> {
            static CLAIM: LazyLock<String> = LazyLock::new(|| TIMERS.claim(dialect::ROW_LOCK));
            let rows = sqlx::query(CLAIM.as_str())
                .bind(Timestamp(lease_until))
                .bind(Timestamp(now))
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
                        timestamp(row, "due_at")?,
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
                    nudges.push((timer, timestamp(row, "fired_at")?));
                }
            }
            Ok(nudges)
        }
    }
}
