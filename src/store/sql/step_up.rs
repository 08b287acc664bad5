//! Step-up authentication: reviewers' TOTP enrollments, wrong answers and lockouts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Timestamp, timestamp};
use crate::store::{StepUpReads, StoreError, TotpEnrollment};

backends! {
    #[async_trait]
    impl StepUpReads for Backend {
        async fn totp_enrollment(
            &self,
            user: &str,
        ) -> Result<Option<TotpEnrollment>, StoreError> {
            let row = sqlx::query(
                "SELECT secret, active, last_step FROM totp_enrollments WHERE user_id = $1",
            )
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|row| {
                Ok(TotpEnrollment {
                    sealed_secret: row.try_get("secret")?,
                    active: row.try_get("active")?,
                    last_step: row.try_get("last_step")?,
                })
            })
            .transpose()
        }

        async fn step_up_locked_until(
            &self,
            user: &str,
            now: DateTime<Utc>,
        ) -> Result<Option<DateTime<Utc>>, StoreError> {
            let row = sqlx::query("SELECT until FROM step_up_locks WHERE user_id = $1 AND until > $2")
                .bind(user)
                .bind(Timestamp(now))
                .fetch_optional(&self.pool)
                .await?;
            row.map(|row| timestamp(&row, "until")).transpose()
        }
    }

    // The changes: run inside a command batch's transaction (`Command::StepUp`), with their
    // audit events.

    pub(in crate::store) async fn begin_totp_enrollment(
        conn: &mut Conn,
        user: &str,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO totp_enrollments (user_id, secret, active, created_at) VALUES ($1, $2, FALSE, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, last_step = NULL \
             WHERE totp_enrollments.active = FALSE",
        )
        .bind(user)
        .bind(sealed_secret)
        .bind(Timestamp(at))
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn activate_totp(
        conn: &mut Conn,
        user: &str,
        step: i64,
        sealed_secret: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE totp_enrollments SET active = TRUE, last_step = $1, activated_at = $2 \
             WHERE user_id = $3 AND active = FALSE AND secret = $4",
        )
        .bind(step)
        .bind(Timestamp(at))
        .bind(user)
        .bind(sealed_secret)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn use_totp_step(
        conn: &mut Conn,
        user: &str,
        step: i64,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // The conditional update is the guard: of two submissions of one code, one wins; and a
        // lock set since the reviewer was found not locked (a racing fifth wrong code) holds.
        let done = sqlx::query(
            "UPDATE totp_enrollments SET last_step = $1 \
             WHERE user_id = $2 AND active = TRUE AND (last_step IS NULL OR last_step < $1) \
             AND NOT EXISTS (SELECT 1 FROM step_up_locks WHERE user_id = $2 AND until > $3)",
        )
        .bind(step)
        .bind(user)
        .bind(Timestamp(at))
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn delete_totp(
        conn: &mut Conn,
        user: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn step_up_failure(
        conn: &mut Conn,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query("INSERT INTO step_up_failures (user_id, at) VALUES ($1, $2)")
            .bind(user)
            .bind(Timestamp(at))
            .execute(&mut *conn)
            .await?;
        let recent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM step_up_failures WHERE user_id = $1 AND at > $2")
                .bind(user)
                .bind(Timestamp(at - crate::stepup::FAILURE_WINDOW))
                .fetch_one(&mut *conn)
                .await?;
        let locked = if recent >= crate::stepup::MAX_FAILURES {
            let until = at + crate::stepup::LOCKOUT;
            sqlx::query(
                "INSERT INTO step_up_locks (user_id, until) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET until = excluded.until",
            )
            .bind(user)
            .bind(Timestamp(until))
            .execute(&mut *conn)
            .await?;
            // The lock has counted them: a fresh start once it ends.
            sqlx::query("DELETE FROM step_up_failures WHERE user_id = $1")
                .bind(user)
                .execute(&mut *conn)
                .await?;
            Some(until)
        } else {
            None
        };
        Ok(locked)
    }
}
