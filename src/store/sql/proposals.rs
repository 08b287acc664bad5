//! Reads of proposals and their votes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::optional_timestamp;
use crate::domain::{Proposal, ProposalId, Status, Vote};
use crate::store::rows::{proposal_row, status_count, vote_row};
use crate::store::{ProposalReads, StoreError};

/// A proposal by id.
pub(in crate::store) const SELECT_PROPOSAL: &str = "SELECT id, agent_id, status, content, decision, \
     outcome, created_at, updated_at FROM proposals WHERE id = $1";

/// A proposal's votes, oldest first.
pub(in crate::store) const SELECT_VOTES: &str = "SELECT voter, eligible, ballot, reason, dedupe, at \
     FROM votes WHERE proposal_id = $1 ORDER BY at, voter";

/// Whether an escalation granted a person approval of a proposal.
pub(in crate::store) const SELECT_GRANT: &str =
    "SELECT 1 FROM approval_grants WHERE proposal_id = $1 AND user_id = $2";

backends! {
    #[async_trait]
    impl ProposalReads for Backend {
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

        async fn approval_granted(
            &self,
            id: &ProposalId,
            user: &str,
        ) -> Result<bool, StoreError> {
            let granted = sqlx::query(SELECT_GRANT)
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
            optional_timestamp(&row, "oldest")
        }
    }
}
