//! The logic of a command batch, shared by both backends. Each backend supplies a transaction
//! with a handful of primitive reads and writes ([`BatchTx`]); what a command means lives here
//! once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Command, CommandResult, StoreError};
use crate::audit::{AuditDraft, AuditEvent, ChainTip, kinds};
use crate::domain::{Actor, AgentId, Decision, Proposal, ProposalId, Status};

/// Primitive operations inside one open transaction. The transaction already holds whatever
/// lock makes it the only writer of the audit chain.
#[async_trait]
pub(super) trait BatchTx: Send {
    async fn chain_tip(&mut self) -> Result<ChainTip, StoreError>;
    async fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError>;
    async fn load_proposal(&mut self, id: &ProposalId) -> Result<Option<Proposal>, StoreError>;
    async fn insert_proposal(&mut self, proposal: &Proposal) -> Result<(), StoreError>;
    /// Writes `proposal`'s lifecycle columns if its stored status is still `from`.
    async fn update_lifecycle(
        &mut self,
        proposal: &Proposal,
        from: Status,
    ) -> Result<bool, StoreError>;
    /// (request_hash, response) stored for this agent's key.
    async fn find_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    async fn insert_idempotency(
        &mut self,
        agent: &AgentId,
        key: &str,
        request_hash: &str,
        proposal_id: &ProposalId,
        response: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// Runs every command against `tx`, appending audit events as it goes.
pub(super) async fn run(
    tx: &mut dyn BatchTx,
    commands: Vec<Command>,
    at: DateTime<Utc>,
) -> Result<Vec<CommandResult>, StoreError> {
    let mut tip = tx.chain_tip().await?;
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        let (result, events) = run_one(tx, command, at).await?;
        for draft in events {
            let event = draft.seal(&mut tip, at);
            tx.append_audit(&event).await?;
        }
        results.push(result);
    }
    Ok(results)
}

async fn run_one(
    tx: &mut dyn BatchTx,
    command: Command,
    at: DateTime<Utc>,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    match command {
        Command::Submit {
            proposal,
            idempotency,
        } => {
            if let Some(key) = &idempotency
                && let Some((hash, response)) =
                    tx.find_idempotency(&proposal.agent, &key.key).await?
            {
                return Ok(if hash == key.request_hash {
                    (CommandResult::Replayed { response }, vec![])
                } else {
                    (CommandResult::IdempotencyConflict, vec![])
                });
            }
            tx.insert_proposal(&proposal).await?;
            if let Some(key) = &idempotency {
                // What a replay answers: the proposal as it was created.
                let response = serde_json::to_string(&proposal)?;
                tx.insert_idempotency(
                    &proposal.agent,
                    &key.key,
                    &key.request_hash,
                    &proposal.id,
                    &response,
                    at,
                )
                .await?;
            }
            let event = AuditDraft::new(
                kinds::SUBMITTED,
                Some(&proposal.id),
                Actor::agent(&proposal.agent).audit_name(),
                json!({
                    "action": proposal.content.action,
                    "summary": proposal.content.summary,
                    "changes": proposal.content.changes.len(),
                    "verdict": proposal.content.verdict,
                    "idempotency_key": idempotency.as_ref().map(|k| &k.key),
                }),
            );
            Ok((CommandResult::Submitted(proposal), vec![event]))
        }
        Command::Cancel { id, agent, reason } => {
            let decision = Decision {
                by: Actor::agent(&agent),
                at,
                reason,
            };
            let owned = match owned_by(tx, &id, &agent, "cancel").await? {
                Ok(proposal) => proposal,
                Err(refusal) => return Ok(refusal),
            };
            transition(
                tx,
                owned,
                Status::Cancelled,
                decision,
                kinds::CANCELLED,
                "cancel",
            )
            .await
        }
        Command::Decide {
            id,
            status,
            decision,
        } => match tx.load_proposal(&id).await? {
            None => Ok((CommandResult::NotFound, vec![])),
            Some(proposal) => {
                transition(tx, proposal, status, decision, kinds::DECIDED, "decide").await
            }
        },
        Command::RecordOutcome { id, agent, outcome } => {
            let mut proposal = match owned_by(tx, &id, &agent, "outcome").await? {
                Ok(proposal) => proposal,
                Err(refusal) => return Ok(refusal),
            };
            let actor = Actor::agent(&agent).audit_name();
            if proposal.status != Status::Approved || proposal.outcome.is_some() {
                let reason = if proposal.outcome.is_some() {
                    "outcome already recorded"
                } else {
                    "proposal is not approved"
                };
                return Ok(refused(&proposal, actor, "outcome", reason));
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
        Command::Audit(draft) => Ok((CommandResult::Audited, vec![draft])),
    }
}

/// Loads `id` if `agent` owns it. Another agent's proposal is refused as if it did not exist,
/// but the attempt is audited: it names a real proposal.
async fn owned_by(
    tx: &mut dyn BatchTx,
    id: &ProposalId,
    agent: &AgentId,
    request: &str,
) -> Result<Result<Proposal, (CommandResult, Vec<AuditDraft>)>, StoreError> {
    Ok(match tx.load_proposal(id).await? {
        Some(proposal) if &proposal.agent == agent => Ok(proposal),
        Some(proposal) => Err(refusal_of(
            &proposal,
            Actor::agent(agent).audit_name(),
            request,
            "proposal belongs to another agent",
            CommandResult::NotFound,
        )),
        None => Err((CommandResult::NotFound, vec![])),
    })
}

/// Moves a pending proposal to `to`, or refuses (audited) when it is no longer pending.
async fn transition(
    tx: &mut dyn BatchTx,
    mut proposal: Proposal,
    to: Status,
    decision: Decision,
    kind: &'static str,
    request: &str,
) -> Result<(CommandResult, Vec<AuditDraft>), StoreError> {
    let actor = decision.by.audit_name();
    if proposal.status != Status::Pending {
        return Ok(refused(
            &proposal,
            actor,
            request,
            "proposal is no longer pending",
        ));
    }
    proposal.status = to;
    proposal.updated_at = decision.at;
    proposal.decision = Some(decision);
    // The conditional update is the guard of record: of two racing transitions exactly one wins.
    if !tx.update_lifecycle(&proposal, Status::Pending).await? {
        let current = tx
            .load_proposal(&proposal.id)
            .await?
            .map_or(Status::Pending, |p| p.status);
        return Ok((CommandResult::WrongState(current), vec![]));
    }
    let event = AuditDraft::new(
        kind,
        Some(&proposal.id),
        actor,
        json!({"status": to, "reason": proposal.decision.as_ref().and_then(|d| d.reason.clone())}),
    );
    Ok((CommandResult::Updated(Box::new(proposal)), vec![event]))
}

fn refused(
    proposal: &Proposal,
    actor: String,
    request: &str,
    reason: &str,
) -> (CommandResult, Vec<AuditDraft>) {
    refusal_of(
        proposal,
        actor,
        request,
        reason,
        CommandResult::WrongState(proposal.status),
    )
}

fn refusal_of(
    proposal: &Proposal,
    actor: String,
    request: &str,
    reason: &str,
    result: CommandResult,
) -> (CommandResult, Vec<AuditDraft>) {
    let event = AuditDraft::new(
        kinds::REQUEST_REFUSED,
        Some(&proposal.id),
        actor,
        json!({"request": request, "reason": reason, "status": proposal.status}),
    );
    (result, vec![event])
}
