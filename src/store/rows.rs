//! Conversions between a [`Proposal`] and the columns both backends store it in.

use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{AgentId, Proposal, ProposalId, Status};

/// A proposal's text columns.
pub(super) struct EncodedProposal {
    pub content: String,
    pub decision: Option<String>,
    pub outcome: Option<String>,
}

pub(super) fn encode(proposal: &Proposal) -> Result<EncodedProposal, StoreError> {
    Ok(EncodedProposal {
        content: serde_json::to_string(&proposal.content)?,
        decision: proposal
            .decision
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
        outcome: proposal
            .outcome
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
    })
}

/// A proposal row, with timestamps already decoded by the backend.
pub(super) struct ProposalRow {
    pub id: String,
    pub agent_id: String,
    pub status: String,
    pub content: String,
    pub decision: Option<String>,
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProposalRow {
    pub fn decode(self) -> Result<Proposal, StoreError> {
        let corrupt = |what: &str, detail: String| {
            StoreError::Corrupt(format!("proposal {}: {what}: {detail}", self.id))
        };
        Ok(Proposal {
            id: ProposalId::parse(&self.id).map_err(|e| corrupt("id", e.0))?,
            agent: AgentId::parse(&self.agent_id).map_err(|e| corrupt("agent_id", e.0))?,
            status: Status::parse(&self.status)
                .ok_or_else(|| corrupt("status", self.status.clone()))?,
            content: serde_json::from_str(&self.content)
                .map_err(|e| corrupt("content", e.to_string()))?,
            decision: self
                .decision
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("decision", e.to_string()))?,
            outcome: self
                .outcome
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt("outcome", e.to_string()))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
