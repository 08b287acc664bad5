//! An agent reports what became of an approved proposal, proving it with the execution token
//! (compared in constant time, accepted once) and naming the digest of what it executed (which
//! must be the approved one: else the report is refused and the token stays unspent).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::buffer::Batch;
use super::{owned_by, refusal_of, refused};
use crate::audit::{AuditDraft, kinds};
use crate::domain::{ActionDigest, Actor, AgentId, ExecutionOutcome, ProposalId, Status};
use crate::store::{CommandResult, StoreError};

/// What the agent reports, with its proofs.
pub(super) struct Report {
    pub outcome: ExecutionOutcome,
    pub token: String,
    pub digest: String,
}

pub(super) async fn record_outcome(
    tx: &mut Batch<'_>,
    id: ProposalId,
    agent: AgentId,
    report: Report,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let Report {
        outcome,
        token,
        digest,
    } = report;
    let mut proposal = match owned_by(tx, &id, &agent, "outcome").await? {
        Ok(proposal) => proposal,
        Err(refusal) => return Ok(refusal),
    };
    let actor = Actor::agent(&agent).audit_name();
    if proposal.status != Status::Approved {
        return Ok(refused(
            &proposal,
            actor,
            "outcome",
            "proposal is not approved",
        ));
    }
    let issued = proposal
        .decision
        .as_ref()
        .and_then(|d| d.execution_token.as_deref());
    let token_matches = issued.is_some_and(|issued| {
        subtle::ConstantTimeEq::ct_eq(issued.as_bytes(), token.as_bytes()).into()
    });
    if !token_matches {
        return Ok(refusal_of(
            &proposal,
            actor,
            "outcome",
            "wrong execution token",
            CommandResult::WrongToken,
        ));
    }
    if proposal.outcome.is_some() {
        return Ok(refused(
            &proposal,
            actor,
            "outcome",
            "execution token already used",
        ));
    }
    // Approvals decided before digests were recorded are bound to their content, unchanged
    // since.
    let approved = (proposal.decision.as_ref())
        .and_then(|d| d.digest.clone())
        .unwrap_or_else(|| ActionDigest::of(&proposal.content));
    if !approved.matches(&digest) {
        return Ok(refusal_of(
            &proposal,
            actor,
            "outcome",
            "digest mismatch: not what was approved",
            CommandResult::DigestMismatch(approved),
        ));
    }
    proposal.outcome = Some(outcome);
    proposal.updated_at = at;
    if !tx.update_lifecycle(&proposal, Status::Approved).await? {
        return Ok((CommandResult::WrongState(proposal.status), vec![]));
    }
    let event = AuditDraft::new(
        kinds::OUTCOME_RECORDED,
        Some(&proposal.id),
        actor,
        json!({"outcome": proposal.outcome}),
    );
    Ok((CommandResult::Updated(Box::new(proposal)), vec![event]))
}
