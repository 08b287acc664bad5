//! Reports owed to channels, claimed under a lease by the report worker.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::lease::REPORT_POSTS;
use super::{Timestamp, timestamp};
use crate::domain::report::ReportPost;
use crate::store::rows::{ReportPostRow, report_post};
use crate::store::{ReportPosts, StoreError};

backends! {
    #[async_trait]
    impl ReportPosts for Backend {
        async fn enqueue_report(&self, post: &ReportPost) -> Result<bool, StoreError> {
            let done = sqlx::query(
                "INSERT INTO report_posts (dedupe, role, channel, period, as_of, requested_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe) DO NOTHING",
            )
            .bind(&post.dedupe)
            .bind(&post.role)
            .bind(&post.channel)
            .bind(post.period.to_string())
            .bind(Timestamp(post.as_of))
            .bind(post.requested_by.as_deref())
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn claim_report_posts(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<ReportPost>, StoreError> {
            static CLAIM: LazyLock<String> =
                LazyLock::new(|| REPORT_POSTS.claim(dialect::ROW_LOCK));
            let rows = sqlx::query(CLAIM.as_str())
                .bind(Timestamp(lease_until))
                .bind(Timestamp(now))
                .bind(limit)
                .bind(crate::store::REPORT_ATTEMPTS)
                .fetch_all(&self.pool)
                .await?;
            let mut posts = rows
                .iter()
                .map(|row| {
                    report_post(ReportPostRow {
                        id: row.try_get("id")?,
                        dedupe: row.try_get("dedupe")?,
                        role: row.try_get("role")?,
                        channel: row.try_get("channel")?,
                        period: row.try_get("period")?,
                        as_of: timestamp(row, "as_of")?,
                        requested_by: row.try_get("requested_by")?,
                        attempts: row.try_get("attempts")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            posts.sort_by_key(|p| p.id);
            Ok(posts)
        }

        async fn retry_report_post(&self, id: i64, error: &str) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE report_posts SET attempts = attempts + 1, last_error = $1 WHERE id = $2",
            )
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    }

    /// Marks a report posted (releasing its lease), inside a command batch's transaction so
    /// it is committed with its `report.posted` event.
    pub(in crate::store) async fn finish_post(
        conn: &mut Conn,
        id: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE report_posts SET posted_at = $1, leased_until = NULL WHERE id = $2")
            .bind(Timestamp(at))
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
