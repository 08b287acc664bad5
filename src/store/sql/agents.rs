//! Per-agent queries: autonomy's recent verdicts, budget usage, reports' and controls' views of
//! an agent, and the overrides of agents' modes in force.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Timestamp, timestamp};
use crate::domain::{Proposal, ProposalId, Status};
use crate::store::rows::{ControlRow, control, proposal_row};
use crate::store::{AgentReads, StoreError};

backends! {
    #[async_trait]
    impl AgentReads for Backend {
        async fn latest_verdicts_of(
            &self,
            agent: &str,
            n: i64,
        ) -> Result<Vec<Status>, StoreError> {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT status FROM proposals WHERE agent_id = $1 AND status IN ('approved', 'rejected') \
                 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(agent)
            .bind(n)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|s| {
                    Status::parse(s)
                        .ok_or_else(|| StoreError::Corrupt(format!("proposal status {s:?}")))
                })
                .collect()
        }

        async fn auto_approved_usage(
            &self,
            agent: &str,
            day: DateTime<Utc>,
            month: DateTime<Utc>,
        ) -> Result<crate::budgets::Usage, StoreError> {
            let row = sqlx::query(dialect::AUTO_APPROVED_USAGE)
                .bind(agent)
                .bind(Timestamp(day))
                .bind(Timestamp(month))
                .fetch_one(&self.pool)
                .await?;
            Ok(crate::budgets::Usage {
                day_amount: row.try_get("day_amount")?,
                day_count: row.try_get::<i64, _>("day_count")? as u64,
                month_amount: row.try_get("month_amount")?,
                month_count: row.try_get::<i64, _>("month_count")? as u64,
            })
        }

        async fn proposals_of(
            &self,
            agent: &str,
            since: DateTime<Utc>,
        ) -> Result<Vec<Proposal>, StoreError> {
            let rows = sqlx::query(
                "SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at \
                 FROM proposals WHERE agent_id = $1 AND created_at >= $2 ORDER BY created_at",
            )
            .bind(agent)
            .bind(Timestamp(since))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(proposal_row).collect()
        }

        async fn pending_of(
            &self,
            agent: &str,
        ) -> Result<Vec<(ProposalId, String)>, StoreError> {
            let rows = sqlx::query(
                "SELECT id, content FROM proposals WHERE agent_id = $1 AND status = 'pending' ORDER BY created_at",
            )
            .bind(agent)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get("id")?;
                    let content: String = row.try_get("content")?;
                    let action = serde_json::from_str::<serde_json::Value>(&content)?["action"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let id = ProposalId::parse(&id)
                        .map_err(|e| StoreError::Corrupt(format!("proposals {id}: {}", e.0)))?;
                    Ok((id, action))
                })
                .collect()
        }

        async fn card_roles_of(&self, agent: &str) -> Result<Vec<String>, StoreError> {
            let roles = sqlx::query_scalar(
                "SELECT DISTINCT m.role FROM slack_messages m JOIN proposals p ON p.id = m.proposal_id \
                 WHERE p.agent_id = $1 ORDER BY m.role",
            )
            .bind(agent)
            .fetch_all(&self.pool)
            .await?;
            Ok(roles)
        }

        async fn overrides_since(
            &self,
            agent: &str,
            since: DateTime<Utc>,
        ) -> Result<Vec<(Option<String>, DateTime<Utc>)>, StoreError> {
            let rows = sqlx::query(
                "SELECT action, set_at FROM control_history \
                 WHERE agent_id = $1 AND set_at >= $2 ORDER BY set_at",
            )
            .bind(agent)
            .bind(Timestamp(since))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let action: String = row.try_get("action")?;
                    let at = timestamp(row, "set_at")?;
                    Ok(((!action.is_empty()).then_some(action), at))
                })
                .collect()
        }

        async fn controls(&self) -> Result<Vec<crate::domain::Control>, StoreError> {
            let rows = sqlx::query(
                "SELECT agent_id, action, mode, reason, set_by, set_at FROM agent_controls \
                 ORDER BY agent_id, action",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    control(ControlRow {
                        agent: row.try_get("agent_id")?,
                        action: row.try_get("action")?,
                        mode: row.try_get("mode")?,
                        reason: row.try_get("reason")?,
                        set_by: row.try_get("set_by")?,
                        set_at: timestamp(row, "set_at")?,
                    })
                })
                .collect()
        }
    }
}
