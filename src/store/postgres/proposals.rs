//! Reads of proposals, their votes and the audit chain; the purge of old idempotency keys.

use chrono::{DateTime, Utc};
use sqlx::Row;

use async_trait::async_trait;

use super::{PostgresStore, SELECT_PROPOSAL, SELECT_VOTES, audit_row, proposal_row, vote_row};
use crate::audit::{AuditEvent, AuditFilter};
use crate::domain::{Proposal, ProposalId, Status, Vote};
use crate::store::StoreError;
use crate::store::rows::status_count;
use crate::store::{AuditReads, ProposalReads};

/// Whether an escalation granted a person approval of a proposal.
pub(super) const SELECT_GRANT: &str =
    "SELECT 1 FROM approval_grants WHERE proposal_id = $1 AND user_id = $2";

#[async_trait]
impl ProposalReads for PostgresStore {
    async fn proposal(&self, id: &ProposalId) -> Result<Option<Proposal>, StoreError> {
        sqlx::query(SELECT_PROPOSAL)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(proposal_row)
            .transpose()
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM proposals GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| status_count(row.try_get("status")?, row.try_get("n")?))
            .collect()
    }

    async fn votes(&self, id: &ProposalId) -> Result<Vec<Vote>, StoreError> {
        let rows = sqlx::query(SELECT_VOTES)
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| vote_row(row).map(|(vote, _)| vote))
            .collect()
    }

    async fn approval_granted(&self, id: &ProposalId, user: &str) -> Result<bool, StoreError> {
        let granted =
            sqlx::query("SELECT 1 FROM approval_grants WHERE proposal_id = $1 AND user_id = $2")
                .bind(id.as_str())
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(granted.is_some())
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row =
            sqlx::query("SELECT MIN(created_at) AS oldest FROM proposals WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("oldest")?)
    }
}

#[async_trait]
impl AuditReads for PostgresStore {
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // One proposal's events come from its index; the optional filter written as
        // `(x IS NULL OR proposal_id = x)` would walk the whole chain instead.
        let sql = if filter.proposal_id.is_some() {
            "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE proposal_id = $3 AND seq > $1 AND ($2::timestamptz IS NULL OR at >= $2) \
                 ORDER BY seq LIMIT $4"
        } else {
            "SELECT seq, at, kind, proposal_id, actor, data, prev_hash, hash FROM audit_events \
                 WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2) \
                 AND ($3::text IS NULL OR proposal_id = $3) ORDER BY seq LIMIT $4"
        };
        let rows = sqlx::query(sql)
            .bind(after_seq)
            .bind(filter.since)
            .bind(filter.proposal_id.as_deref())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }
}
